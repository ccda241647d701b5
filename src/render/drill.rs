//! `backplan drill`: one block per source (its snapshot, scratch target, steps with
//! their wall time, checks, objectives missed, the full restore's estimate), and
//! `--format json`.

use std::fmt::Write;

use super::{bytes, time};
use crate::drill::{DrillReport, Estimate, Finding, NoEstimate, SourceDrill};
use crate::inventory::CheckResult;
use crate::sources::kind::CurrentSize;
use crate::sources::kind::scratch::{CheckUnit, Difference};

/// The JSON report (`format_version` 1).
pub fn json(report: &DrillReport) -> String {
    super::json(report)
}

/// What a check counts: `3 tables`, `1 file`.
fn counted(n: u64, u: CheckUnit) -> String {
    let one = match u {
        CheckUnit::Tables => "table",
        CheckUnit::Databases => "Redis database",
        CheckUnit::Files => "file",
    };
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// `1.2 s`, `850 ms`, `4 min`, `2.5 h`.
pub fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn difference(d: &Difference) -> String {
    match d {
        Difference::Rows {
            database,
            table,
            restored: Some(got),
            recorded,
        } => format!("{database}: {table}: {got} rows restored, {recorded} at backup"),
        Difference::Rows {
            database,
            table,
            restored: None,
            ..
        } => format!("{database}: {table}: missing after the restore"),
        Difference::Checksum {
            database,
            table,
            restored,
            recorded,
        } => format!(
            "{database}: {table}: row checksum {restored} restored, {recorded} at backup: a value differs"
        ),
        Difference::Keys {
            db: Some(db),
            restored,
            recorded,
        } => format!("db{db}: {restored} keys restored, {recorded} in the snapshot"),
        Difference::Keys {
            db: None,
            restored,
            recorded,
        } => format!(
            "all databases: {restored} keys restored (and the expired ones), {recorded} in the snapshot"
        ),
        Difference::Digest { restored, snapshot } => format!(
            "DEBUG DIGEST {restored} restored, {snapshot} of the snapshot's RDB: a value or expiry differs"
        ),
        Difference::File {
            path,
            restored_bytes: None,
            ..
        } => format!("{path}: missing after the restore"),
        Difference::File {
            path,
            restored_bytes: Some(got),
            recorded_bytes,
        } if got != recorded_bytes => format!(
            "{path}: {} restored, {} in the snapshot",
            bytes(*got),
            bytes(*recorded_bytes)
        ),
        Difference::File { path, .. } => {
            format!("{path}: its bytes differ from the snapshot's (the same size)")
        }
    }
}

fn finding(f: &Finding) -> String {
    match f {
        Finding::OverRto {
            seconds,
            rto_seconds,
        } => format!(
            "{} the drill took {}, longer than the RTO of {}",
            f.code().id(),
            duration(*seconds),
            duration(*rto_seconds)
        ),
        Finding::OverRpo {
            age_seconds,
            rpo_seconds,
        } => format!(
            "{} the newest good snapshot was {} old, older than the RPO of {}",
            f.code().id(),
            duration(*age_seconds),
            duration(*rpo_seconds)
        ),
    }
}

/// What the estimate extrapolates to: the source's size now, and where it was read.
fn extrapolated_to(e: &Estimate) -> String {
    match e.full_from {
        CurrentSize::Databases { .. } => format!(
            "the databases' {} now (the server's pg_database_size)",
            bytes(e.full_bytes)
        ),
        CurrentSize::Files { files, .. } => format!(
            "the {files} {} {} now (sizes read from the source, its excludes honoured)",
            if files == 1 { "file's" } else { "files'" },
            bytes(e.full_bytes)
        ),
        CurrentSize::Keys { keys } => format!(
            "{} now ({keys} keys on the server against {} in the snapshot)",
            bytes(e.full_bytes),
            e.snapshot_keys.unwrap_or(0)
        ),
    }
}

/// Why a drill that passed has no estimate.
fn no_estimate(n: &NoEstimate) -> String {
    match n {
        NoEstimate::NotMeasured => "the restore measured no bytes or no time".to_string(),
        NoEstimate::SourceUnreadable { error } => format!(
            "the source's size now cannot be read ({} {})",
            error.code.id(),
            error.message
        ),
        NoEstimate::NoSnapshotKeys => "the snapshot holds no keys to scale from".to_string(),
    }
}

fn source(d: &SourceDrill, out: &mut String) {
    let mark = match d.result {
        CheckResult::Passed => "✓",
        CheckResult::Failed => "✗",
    };
    let _ = write!(out, "{mark} {} ({})", d.source, d.type_name);
    if !d.snapshot.is_empty() {
        let _ = write!(
            out,
            ": snapshot {} of {}, {}",
            d.snapshot,
            time(d.snapshot_time),
            bytes(d.restored_bytes)
        );
        if !d.from.is_empty() {
            let _ = write!(out, " from {}", d.from);
        }
    }
    out.push('\n');
    if !d.scratch.is_empty() {
        let _ = writeln!(out, "    scratch target: {} (removed: {})", d.scratch, {
            if d.cleanup_error.is_none() {
                "yes"
            } else {
                "NO"
            }
        });
    }
    let steps: Vec<String> = d
        .steps
        .iter()
        .map(|s| format!("{} {}", s.name.replace('_', " "), duration(s.seconds)))
        .collect();
    let _ = writeln!(
        out,
        "    took {}: {}",
        duration(d.seconds()),
        steps.join(", ")
    );
    if let Some(c) = &d.checks {
        let _ = writeln!(
            out,
            "    checked {}: {}",
            counted(c.checked, c.unit),
            if c.differences.is_empty() {
                "as recorded at backup".to_string()
            } else {
                format!("{} differ", c.differences.len())
            }
        );
        if let Some(d) = &c.digest {
            let _ = writeln!(out, "      DEBUG DIGEST {d}, as the snapshot's RDB loads");
        }
        if let Some(n) = c.checksums {
            let _ = writeln!(
                out,
                "      row checksums compared for {}",
                counted(n, CheckUnit::Tables)
            );
        }
        for diff in c.differences.iter().take(10) {
            let _ = writeln!(out, "      {}", difference(diff));
        }
        if c.differences.len() > 10 {
            let _ = writeln!(out, "      … and {} more", c.differences.len() - 10);
        }
    }
    if let Some(e) = &d.error {
        let _ = writeln!(out, "    error {}: {}", e.code.id(), e.message);
        let _ = writeln!(out, "      help: {}", e.help_text());
    }
    if let Some(e) = d
        .cleanup_error
        .as_ref()
        .filter(|_| d.error.as_ref() != d.cleanup_error.as_ref())
    {
        let _ = writeln!(out, "    error {}: {}", e.code.id(), e.message);
    }
    for f in &d.findings {
        let _ = writeln!(out, "    ! {}", finding(f));
    }
    if let Some(e) = &d.estimate {
        let _ = writeln!(
            out,
            "    a full restore would take about {}: extrapolated from the {}/s measured to {}",
            duration(e.full_seconds),
            bytes(e.bytes_per_second as u64),
            extrapolated_to(e)
        );
    }
    if let Some(n) = &d.no_estimate {
        let _ = writeln!(out, "    no estimate of a full restore: {}", no_estimate(n));
    }
    if !d.recorded.is_empty() {
        let _ = writeln!(out, "    recorded in {}", d.recorded.join(", "));
    }
    for (dest, f) in &d.not_recorded {
        let _ = writeln!(out, "    not recorded in {dest}: {}", f.message);
    }
}

/// One block per source, then a summary line.
pub fn human(report: &DrillReport) -> String {
    let mut out = String::new();
    for d in &report.drills {
        source(d, &mut out);
    }
    for m in &report.missing {
        let _ = writeln!(out, "✗ {m}: no good snapshot to drill");
    }
    let failed = report.failed();
    let _ = writeln!(
        out,
        "{} of {} drill{} passed{}",
        report.drills.len() - failed,
        report.drills.len(),
        crate::plan::plural(report.drills.len()),
        match report.findings() {
            0 => String::new(),
            n => format!(", {n} objective{} missed", crate::plan::plural(n)),
        }
    );
    out
}
