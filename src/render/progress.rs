//! Progress of an apply on a terminal: one spinner per running action. Quiet when
//! standard error is not a terminal (cron, CI, pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::apply::{Event, Status};
use crate::plan::Action;

/// Spinners for running actions, keyed by their index in the plan.
#[derive(Debug, Default)]
pub struct Progress {
    bars: Option<MultiProgress>,
    running: Mutex<HashMap<usize, ProgressBar>>,
}

fn label(action: &Action) -> String {
    match action {
        Action::Backup(b) => format!("backup {} → {}", b.source, b.destinations.join(", ")),
        Action::Configure(c) => format!("configure {}", c.source),
        Action::Copy(c) => format!("copy {} {} → {}", c.source, c.from, c.to),
        Action::Repair(r) => format!("repair {}", r.destination),
        Action::Prune(p) => format!("prune {} on {}", p.source, p.destination),
        Action::Drill(d) => format!("drill {}", d.source),
    }
}

impl Progress {
    /// Spinners when standard error is a terminal, nothing otherwise.
    pub fn for_terminal() -> Progress {
        Progress {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn event(&self, event: Event<'_>) {
        let Some(bars) = &self.bars else { return };
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        match event {
            Event::Started { index, action } => {
                let bar = bars.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(label(action));
                bar.enable_steady_tick(Duration::from_millis(120));
                running.insert(index, bar);
            }
            Event::Finished { outcome } => {
                if let Some(bar) = running.remove(&outcome.index) {
                    let mark = match outcome.status {
                        Status::Done(_) => "✓",
                        Status::Failed { .. } => "✗",
                        Status::Skipped { .. } => "-",
                    };
                    bar.finish_and_clear();
                    let _ = bars.println(format!("{mark} {}", label(&outcome.action)));
                }
            }
        }
    }
}
