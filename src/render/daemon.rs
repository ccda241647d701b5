//! The daemon's log lines (standard error; journald and Docker add the time).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Failure;
use crate::inventory::LockKind;
use crate::plan::due::{Busy, DueWhy, NextRun};

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn sources(next: &NextRun) -> String {
    next.sources
        .iter()
        .map(|s| match &s.why {
            DueWhy::NeverBackedUp => format!("{} (never backed up)", s.name),
            DueWhy::PolicyChanged => format!("{} (its settings changed)", s.name),
            DueWhy::Scheduled { schedule, after } => {
                format!("{} ({schedule}, last {})", s.name, super::time(*after))
            }
            DueWhy::Drill {
                schedule,
                last: Some(last),
            } => format!(
                "{} (restore drill, {schedule}, last {})",
                s.name,
                super::time(*last)
            ),
            DueWhy::Drill { last: None, .. } => {
                format!("{} (restore drill, never drilled)", s.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn listening(addr: SocketAddr) -> String {
    format!("daemon: serving /healthz and /metrics on http://{addr}")
}

pub fn nothing_scheduled() -> String {
    "daemon: no schedule of the policy has another tick; waiting for the policy to change".into()
}

/// The next run; `start` is later than its due time by the jitter drawn.
pub fn next_run(next: &NextRun, start: DateTime<Utc>) -> String {
    let jitter = if start > next.at {
        format!(", starting {} (jitter)", at(start))
    } else {
        String::new()
    };
    format!(
        "daemon: next run due {}{jitter}: {}",
        at(next.at),
        sources(next)
    )
}

pub fn run_started(next: &NextRun) -> String {
    format!("daemon: run started: {}", sources(next))
}

/// How a run ended: its counts, or why it did not start.
pub fn run_finished(
    took: Duration,
    done: usize,
    failed: usize,
    skipped: usize,
    error: Option<&Failure>,
) -> String {
    let took = humantime::format_duration(Duration::from_secs(took.as_secs()));
    match error {
        Some(e) => format!(
            "daemon: run ended after {took} without applying: {}: {}",
            e.code.id(),
            e.message
        ),
        None => format!(
            "daemon: run finished in {took}: {done} done, {failed} failed, {skipped} skipped"
        ),
    }
}

pub fn busy(b: &Busy) -> String {
    let kind = match b.kind {
        LockKind::Shared => "a shared",
        LockKind::Exclusive => "an exclusive",
    };
    format!(
        "daemon: a run is going ({} holds {kind} lock of {} pid {} since {}); waiting for it",
        b.destination,
        b.host,
        b.pid,
        super::time(b.since)
    )
}

pub fn stopping(signal: &str) -> String {
    format!(
        "daemon: {signal}: stopping; a running step is abandoned and its locks released (again to exit at once)"
    )
}

pub fn forced(signal: &str) -> String {
    format!("daemon: {signal} again: exiting at once; a lock left behind expires on its own")
}

pub fn stopped() -> String {
    "daemon: stopped".into()
}
