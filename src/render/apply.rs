//! The report of an apply.

use std::fmt::Write as _;

use serde::Serialize;

use crate::apply::{Outcome, REPORT_FORMAT_VERSION, Report, Status};
use crate::plan::Action;

use super::bytes;

fn label(action: &Action) -> String {
    match action {
        Action::Backup(b) => format!("backup {} → {}", b.source, b.destinations.join(", ")),
        Action::Configure(c) => format!("configure {}", c.source),
        Action::Copy(c) => format!(
            "copy {} {} {} → {}",
            c.source,
            c.snapshot.time.format("%Y-%m-%d %H:%M"),
            c.from,
            c.to
        ),
        Action::Repair(r) => match r.from.is_empty() {
            true => format!("repair {}", r.destination),
            false => format!("repair {} from {}", r.destination, r.from.join(", ")),
        },
        Action::Prune(p) => format!(
            "prune {} ({} snapshots) from {}",
            p.source,
            p.snapshots.len(),
            p.destination
        ),
    }
}

/// One line per action, then a closing count.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    for o in &report.outcomes {
        let line = match &o.status {
            Status::Done(done) => {
                let figures: Vec<String> = [
                    done.bytes_read.map(|n| format!("{} read", bytes(n))),
                    done.bytes_stored.map(|n| format!("{} stored", bytes(n))),
                    done.detail.clone(),
                ]
                .into_iter()
                .flatten()
                .collect();
                if figures.is_empty() {
                    format!("  ✓ {}", label(&o.action))
                } else {
                    format!("  ✓ {}   {}", label(&o.action), figures.join(", "))
                }
            }
            Status::Failed { error } => format!(
                "  ✗ {}   failed: {}: {}\n      help: {}",
                label(&o.action),
                error.code.id(),
                error.message,
                error.help_text()
            ),
            Status::Skipped { why } => format!("  - {}   skipped: {why}", label(&o.action)),
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\nApply: {} done, {} failed, {} skipped.",
        report.done(),
        report.failed(),
        report.skipped()
    );
    out.push_str(&super::notify::report_lines(&report.notifications));
    out
}

/// `apply --format json`: the outcomes with the report's `format_version`; a failed
/// action's `error` is `{code, message, help}`.
pub fn json(report: &Report) -> String {
    #[derive(Serialize)]
    struct Versioned<'a> {
        format_version: u32,
        outcomes: &'a [Outcome],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        notifications: &'a [crate::notify::Delivery],
    }
    super::json(&Versioned {
        format_version: REPORT_FORMAT_VERSION,
        outcomes: &report.outcomes,
        notifications: &report.notifications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Code, Failure};
    use crate::plan::Configure;

    fn failed(error: Failure) -> Report {
        Report {
            outcomes: vec![Outcome {
                index: 0,
                action: Action::Configure(Configure {
                    source: "cache".into(),
                    source_type: "redis".into(),
                    changes: Vec::new(),
                }),
                status: Status::Failed { error },
            }],
            ..Report::default()
        }
    }

    #[test]
    fn a_failed_action_is_code_message_and_help_in_json() {
        let own = failed(
            Failure::new(Code::ConfigRefused, "CONFIG SET is refused").with_help("allow it"),
        );
        let value: serde_json::Value = serde_json::from_str(&json(&own)).expect("JSON");
        assert_eq!(value["format_version"], REPORT_FORMAT_VERSION);
        assert_eq!(value["outcomes"][0]["status"], "failed");
        assert_eq!(
            value["outcomes"][0]["error"],
            serde_json::json!({"code": "BP233", "message": "CONFIG SET is refused", "help": "allow it"})
        );
        // Without help of its own, the code's help.
        let generic = failed(Failure::new(Code::ConfigRefused, "refused"));
        let value: serde_json::Value = serde_json::from_str(&json(&generic)).expect("JSON");
        assert_eq!(
            value["outcomes"][0]["error"]["help"],
            Code::ConfigRefused.help()
        );
    }

    #[test]
    fn the_terminal_report_shows_a_failure_with_its_code_and_help() {
        let text = human(&failed(
            Failure::new(Code::ConfigRefused, "CONFIG SET is refused").with_help("allow it"),
        ));
        assert!(
            text.contains(
                "✗ configure cache   failed: BP233: CONFIG SET is refused\n      help: allow it\n"
            ),
            "{text}"
        );
    }
}
