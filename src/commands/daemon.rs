//! `backplan daemon`: runs forever, applying whenever the policy's schedules make a run
//! due. What is due comes from the destinations (the inventory) and the policy alone
//! ([`crate::plan::due`]): a restarted daemon or a rebuilt container loses nothing, and
//! catches a missed run up once. Every run goes through `apply`'s own path
//! ([`super::apply::apply_policy`]). One run at a time, and none while another
//! backplan on this host or a prune anywhere holds a destination's lock. SIGTERM and
//! SIGINT abandon the running step (its locks released) and end the daemon. `/healthz`
//! and `/metrics` are served on `--listen`.

mod http;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::apply::{Request, apply_policy, report_failures};
use super::{Exit, print, runtime};
use crate::apply::{Stop, StopSender};
use crate::cli::{DaemonArgs, PlanningArgs};
use crate::error::{Code, Failure};
use crate::plan::due::{Busy, NextRun, busy, next_run};
use crate::policy::load_file;
use crate::render;

/// The longest the daemon sleeps before it looks at the clock and the policy file
/// again: a changed policy takes effect within it, and a stepped clock is noticed.
const NAP: Duration = Duration::from_secs(60);
/// How long the daemon waits before it looks again at a run that another process has
/// going, or at a policy it could not read.
const RETRY: Duration = Duration::from_secs(15);

/// What `/healthz` tells: the daemon's state, as the loop last set it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub started_at: DateTime<Utc>,
    /// The run going now, if any: when it started.
    pub running_since: Option<DateTime<Utc>>,
    pub next_run: Option<NextRun>,
    /// A run that another process has going, which the due run waits for.
    pub waiting_for: Option<Busy>,
    pub last_run: Option<LastRun>,
    /// Why the daemon could not plan its next run (an unreadable policy), if so.
    pub problem: Option<Failure>,
}

/// How the daemon's last run ended.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The run could not start (e.g. no repository key): why.
    pub error: Option<Failure>,
}

type Shared = Arc<Mutex<Health>>;

fn update(health: &Shared, f: impl FnOnce(&mut Health)) {
    let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut h);
}

pub fn run(path: &Path, args: &DaemonArgs) -> miette::Result<Exit> {
    let planning = PlanningArgs {
        now: None,
        max_deletes: args.max_deletes,
        inventory: None,
        role: args.role,
    };
    if args.once {
        return once(path, args, &planning);
    }
    // The loop itself is synchronous (each run starts its own runtime, as `apply`
    // does); this runtime serves HTTP and waits for signals and timeouts.
    let rt = runtime()?;
    let (sender, stop) = Stop::new();
    rt.block_on(listen_for_signals(sender))?;
    let health: Shared = Arc::new(Mutex::new(Health {
        started_at: Utc::now(),
        running_since: None,
        next_run: None,
        waiting_for: None,
        last_run: None,
        problem: None,
    }));
    if let Some(addr) = args.listen {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| {
                Failure::new(Code::ListenFailed, format!("cannot listen on {addr}: {e}"))
            })?;
        let local = listener.local_addr().unwrap_or(addr);
        rt.spawn(http::serve(
            listener,
            health.clone(),
            stop.clone(),
            path.to_path_buf(),
        ));
        eprintln!("{}", render::daemon::listening(local));
    }
    // A policy that cannot be read at the start is an error: the daemon would only
    // ever wait.
    load_file(path)?;

    let mut attempted: Option<DateTime<Utc>> = None;
    // The start decided for the next run (its due time and the start with the jitter
    // drawn for it): kept while that due time stays the next one, and once it has
    // come, until the run starts (a source due at once is due "now" at every look).
    let mut planned: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    let mut waited_for: Option<Busy> = None;
    while !stop.requested() {
        let now = Utc::now();
        let (next, busy_now, digest) = match look(path, now, attempted) {
            Ok(found) => found,
            Err(report) => {
                eprintln!("{report:?}");
                update(&health, |h| h.problem = Some(coded(&report)));
                nap(&rt, &stop, RETRY);
                continue;
            }
        };
        update(&health, |h| {
            h.problem = None;
            h.next_run = next.clone();
            h.waiting_for = None;
        });
        let Some(next) = next else {
            eprintln!("{}", render::daemon::nothing_scheduled());
            wait_for_change(&rt, &stop, path, &digest, None);
            continue;
        };
        let start_at = match planned {
            Some((at, start)) if at == next.at || (at <= now && next.at <= now) => start,
            _ => {
                let delay = args.jitter.map(draw).unwrap_or_default();
                let start = next.at + chrono::Duration::from_std(delay).unwrap_or_default();
                planned = Some((next.at, start));
                start
            }
        };
        if start_at > now {
            eprintln!("{}", render::daemon::next_run(&next, start_at));
            wait_for_change(&rt, &stop, path, &digest, Some(start_at));
            continue;
        }
        if let Some(b) = busy_now {
            // Said once per run waited for, not at every look.
            if waited_for.as_ref() != Some(&b) {
                eprintln!("{}", render::daemon::busy(&b));
            }
            waited_for = Some(b.clone());
            update(&health, |h| h.waiting_for = Some(b));
            nap(&rt, &stop, RETRY);
            continue;
        }
        waited_for = None;
        planned = None;
        let started = Utc::now();
        eprintln!("{}", render::daemon::run_started(&next));
        update(&health, |h| h.running_since = Some(started));
        let result = apply_policy(
            path,
            &Request {
                plan_file: None,
                planning: &planning,
                parallel: args.parallel,
                metrics_file: None,
                stop: Some(stop.clone()),
            },
        );
        attempted = Some(started);
        let finished = Utc::now();
        let last = match result {
            Ok((report, _)) => {
                print(&render::apply::human(&report))?;
                report_failures(&report);
                LastRun {
                    started,
                    finished,
                    done: report.done(),
                    failed: report.failed(),
                    skipped: report.skipped(),
                    error: None,
                }
            }
            Err(report) => {
                eprintln!("{report:?}");
                LastRun {
                    started,
                    finished,
                    done: 0,
                    failed: 0,
                    skipped: 0,
                    error: Some(coded(&report)),
                }
            }
        };
        eprintln!(
            "{}",
            render::daemon::run_finished(
                (finished - started).to_std().unwrap_or_default(),
                last.done,
                last.failed,
                last.skipped,
                last.error.as_ref(),
            )
        );
        update(&health, |h| {
            h.running_since = None;
            h.last_run = Some(last);
        });
    }
    eprintln!("{}", render::daemon::stopped());
    // A step abandoned may have left a blocking task (a compressor) finishing its
    // buffer; it holds no lock, and the process ends without waiting for it long.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(Exit::Ok)
}

/// `daemon --once`: the run the daemon would start now, if one is due; nothing (and
/// no output) otherwise.
fn once(path: &Path, args: &DaemonArgs, planning: &PlanningArgs) -> miette::Result<Exit> {
    let now = Utc::now();
    let (next, busy_now, _) = look(path, now, None)?;
    let Some(next) = next.filter(|n| n.at <= now) else {
        return Ok(Exit::Ok);
    };
    if let Some(b) = busy_now {
        // The run going does what is due; the next start looks again.
        eprintln!("{}", render::daemon::busy(&b));
        return Ok(Exit::Ok);
    }
    eprintln!("{}", render::daemon::run_started(&next));
    let (report, exit) = apply_policy(
        path,
        &Request {
            plan_file: None,
            planning,
            parallel: args.parallel,
            metrics_file: None,
            stop: None,
        },
    )?;
    print(&render::apply::human(&report))?;
    report_failures(&report);
    Ok(exit)
}

/// Reads the policy and the inventory: the next run, whether a run is going, and the
/// policy's digest (to notice a change while waiting).
fn look(
    path: &Path,
    now: DateTime<Utc>,
    attempted: Option<DateTime<Utc>>,
) -> miette::Result<(Option<NextRun>, Option<Busy>, String)> {
    let policy = load_file(path)?.policy;
    let inventory = super::inventory(&policy, None)?;
    let host = crate::repo::lock::this_host();
    Ok((
        next_run(&policy, &inventory, now, attempted),
        busy(&policy, &inventory, now, &host, std::process::id()),
        policy.digest,
    ))
}

/// Waits until `until` (or without end when `None`), until the policy file changes,
/// or until a stop is requested, whichever comes first; looks every [`NAP`].
fn wait_for_change(
    rt: &tokio::runtime::Runtime,
    stop: &Stop,
    path: &Path,
    digest: &str,
    until: Option<DateTime<Utc>>,
) {
    while !stop.requested() {
        let left = until.map(|t| (t - Utc::now()).to_std().unwrap_or_default());
        if left == Some(Duration::ZERO) {
            return;
        }
        nap(rt, stop, left.map_or(NAP, |l| l.min(NAP)));
        let changed = load_file(path).map_or(true, |l| l.policy.digest != digest);
        if changed {
            return;
        }
    }
}

/// A run's or a look's error as one coded failure, for `/healthz`: the failure itself,
/// or (a policy report with its problems) BP270 with its text.
fn coded(report: &miette::Report) -> Failure {
    report
        .downcast_ref::<Failure>()
        .cloned()
        .unwrap_or_else(|| Failure::new(Code::RunNotStarted, report.to_string()))
}

/// Sleeps `d`, or less when a stop is requested.
fn nap(rt: &tokio::runtime::Runtime, stop: &Stop, d: Duration) {
    rt.block_on(async {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = stop.wait() => {}
        }
    });
}

/// A random delay in `[0, jitter)`.
fn draw(jitter: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let fraction = u64::from_le_bytes(bytes) as f64 / (u64::MAX as f64 + 1.0);
    jitter.mul_f64(fraction)
}

/// SIGTERM (docker stop, systemctl stop) and SIGINT (Ctrl-C) request the stop; a
/// second signal ends the process at once.
async fn listen_for_signals(sender: StopSender) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let cannot = |e: std::io::Error| Failure::new(Code::Io, format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
    let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            signals += 1;
            if signals > 1 {
                eprintln!("{}", render::daemon::forced(name));
                std::process::exit(130);
            }
            eprintln!("{}", render::daemon::stopping(name));
            sender.stop();
        }
    });
    Ok(())
}
