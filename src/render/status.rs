//! `backplan status` for people: a table of every source on every destination, the
//! destinations' checks and locks, then the findings with their codes.

use std::fmt::Write as _;

use crate::inventory::CheckResult;
use crate::status::{Finding, FindingKind, Freshness, Health, RunStatus, StatusReport};

use super::{bytes, time};

pub fn human(r: &StatusReport) -> String {
    let mut out = String::new();
    let count = |h: Health| r.findings.iter().filter(|f| f.severity == h).count();
    let (critical, warnings) = (count(Health::Critical), count(Health::Warning));
    let _ = write!(out, "Status at {}: {}", time(r.now), health(r.health));
    if critical + warnings > 0 {
        let mut parts = Vec::new();
        if critical > 0 {
            parts.push(format!("{critical} critical"));
        }
        if warnings > 0 {
            parts.push(format!("{warnings} warning{}", plural(warnings)));
        }
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out.push_str("\n\n");

    let rows: Vec<[String; 7]> = r
        .sources
        .iter()
        .map(|s| {
            [
                s.source.clone(),
                s.destination.clone(),
                match s.freshness {
                    Freshness::Ok => "ok",
                    Freshness::Late => "LATE",
                    Freshness::Missing => "MISSING",
                    Freshness::Unknown => "unknown",
                }
                .to_string(),
                s.last_good
                    .as_ref()
                    .map_or_else(|| "never".to_string(), |g| time(g.time)),
                s.age_seconds.map(age).unwrap_or_default(),
                s.size
                    .as_ref()
                    .map(|z| match (z.anomaly, z.ratio) {
                        (true, Some(ratio)) => format!("{} (×{ratio:.2}!)", bytes(z.bytes)),
                        _ => bytes(z.bytes),
                    })
                    .unwrap_or_default(),
                match (&s.last_run, &s.last_attempt) {
                    (Some(RunStatus::Failed), Some(a)) => format!(
                        "FAILED {}{}",
                        time(a.time),
                        a.code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
                    ),
                    (Some(RunStatus::Warning), Some(a)) => format!("warning {}", time(a.time)),
                    (Some(RunStatus::Ok), Some(a)) => format!("ok {}", time(a.time)),
                    _ => "never".to_string(),
                },
            ]
        })
        .collect();
    let header = [
        "SOURCE",
        "DESTINATION",
        "STATE",
        "LAST GOOD",
        "AGE",
        "SIZE",
        "LAST RUN",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }

    out.push_str("\nChecks:\n");
    for d in &r.destinations {
        let verify = match &d.verify {
            Some(v) => format!(
                "verify {} {} ({} snapshot{}{}{})",
                match v.result {
                    CheckResult::Passed => "passed",
                    CheckResult::Failed => "FAILED",
                },
                time(v.finished),
                v.snapshots,
                plural(v.snapshots),
                match v.problems {
                    0 => String::new(),
                    n => format!(", {n} problem{}", plural(n)),
                },
                v.read_data
                    .map(|f| format!(", {:.0}% of the data read back", f * 100.0))
                    .unwrap_or_default(),
            ),
            None => "never verified".to_string(),
        };
        let _ = writeln!(out, "  {}: {verify}", d.name);
        for s in r.sources.iter().filter(|s| s.destination == d.name) {
            let Some(drill) = &s.drill else { continue };
            let _ = writeln!(
                out,
                "    drill {} {} {} (snapshot {}, {} restored in {})",
                s.source,
                match drill.result {
                    CheckResult::Passed => "passed",
                    CheckResult::Failed => "FAILED",
                },
                time(drill.finished),
                drill.snapshot,
                bytes(drill.restored_bytes),
                age(drill.seconds().round() as i64),
            );
        }
        let never: Vec<&str> = r
            .sources
            .iter()
            .filter(|s| s.destination == d.name && s.drill.is_none())
            .map(|s| s.source.as_str())
            .collect();
        if !never.is_empty() {
            let _ = writeln!(out, "    never drilled: {}", never.join(", "));
        }
    }

    let locks: Vec<String> = r
        .destinations
        .iter()
        .flat_map(|d| {
            d.locks.iter().map(move |l| {
                format!(
                    "  {}: {} lock of {} pid {} since {}, expires {}{}",
                    d.name,
                    match l.lock.kind {
                        crate::inventory::LockKind::Shared => "shared",
                        crate::inventory::LockKind::Exclusive => "exclusive",
                    },
                    l.lock.host,
                    l.lock.pid,
                    time(l.lock.started),
                    time(l.lock.expires),
                    if l.stale { " (stale)" } else { "" },
                )
            })
        })
        .collect();
    if !locks.is_empty() {
        out.push_str("\nLocks:\n");
        for l in locks {
            out.push_str(&l);
            out.push('\n');
        }
    }

    if !r.findings.is_empty() {
        out.push_str("\nFindings:\n");
        for f in &r.findings {
            let _ = writeln!(out, "  {}", finding(f));
        }
    }
    out
}

/// One finding on one line: `× critical BP262 db on local: …`.
pub fn finding(f: &Finding) -> String {
    let mark = match f.severity {
        Health::Critical => "× critical",
        Health::Warning | Health::Ok => "! warning",
    };
    let subject = match &f.source {
        Some(source) => format!("{source} on {}", f.destination),
        None => f.destination.clone(),
    };
    let what = match &f.kind {
        FindingKind::Missing => "no good snapshot".to_string(),
        FindingKind::Late { last, due } => format!(
            "late: the last good snapshot is of {}, a backup has been due since {}",
            time(*last),
            time(*due)
        ),
        FindingKind::LastFailed { at, failure_code } => format!(
            "the last backup failed ({}){}",
            time(*at),
            failure_code
                .as_ref()
                .map(|c| format!(" with {c}"))
                .unwrap_or_default()
        ),
        FindingKind::SizeChanged {
            bytes: now,
            previous_bytes,
            factor,
        } => format!(
            "the last snapshot holds {}, the one before {}: a change beyond the factor {factor}",
            bytes(*now),
            bytes(*previous_bytes)
        ),
        FindingKind::VerifyFailed { at, problems } => format!(
            "the last verify ({}) found {problems} problem{}",
            time(*at),
            plural(*problems)
        ),
        FindingKind::DrillFailed { at, failure_code } => format!(
            "the last restore drill ({}) failed{}",
            time(*at),
            failure_code
                .as_ref()
                .map(|c| format!(" with {c}"))
                .unwrap_or_default()
        ),
        FindingKind::DrillOverRto {
            at,
            seconds,
            rto_seconds,
        } => format!(
            "the last restore drill ({}) took {}, longer than the RTO of {}",
            time(*at),
            crate::render::drill::duration(*seconds),
            crate::render::drill::duration(*rto_seconds)
        ),
        FindingKind::DrillOverRpo {
            at,
            age_seconds,
            rpo_seconds,
        } => format!(
            "the last restore drill ({}) found the newest snapshot {} old, older than the RPO of {}",
            time(*at),
            crate::render::drill::duration(*age_seconds),
            crate::render::drill::duration(*rpo_seconds)
        ),
        FindingKind::Unreadable { error } => format!("could not be read: {error}"),
        FindingKind::StaleLock { host, pid, since } => format!(
            "a stale lock of {host} pid {pid} since {}; `backplan unlock` removes it",
            time(*since)
        ),
        FindingKind::Damaged { objects } => format!(
            "{objects} object{} could not be read (`backplan plan` lists them)",
            plural(*objects)
        ),
    };
    format!("{mark} {} {subject}: {what}", f.code)
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Warning => "WARNING",
        Health::Critical => "CRITICAL",
    }
}

/// `2d 9h`, `9h 5m`, `45m`, `30s`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn plural(n: usize) -> &'static str {
    crate::plan::plural(n)
}
