//! The status as Prometheus metrics (the text exposition format, version 0.0.4): what
//! `status --format prometheus` prints, `apply --metrics-file` writes for
//! node_exporter's textfile collector, and the daemon serves at `/metrics`.
//!
//! Every metric is a gauge named `backplan_…` in base units (seconds, bytes), with
//! the labels `source` and `destination`. A timestamp of 0 means "never".

use std::fmt::Write as _;

use crate::inventory::CheckResult;
use crate::status::{RunStatus, SourceStatus, StatusReport};

/// The metrics: name, help, and the value for one source on one destination (none:
/// no sample).
type Metric = (&'static str, &'static str, fn(&SourceStatus) -> Option<f64>);

const METRICS: &[Metric] = &[
    (
        "backplan_last_success_timestamp_seconds",
        "When the last good snapshot was taken (Unix time; 0: never).",
        |s| Some(s.last_good.as_ref().map_or(0.0, |g| unix(g.time))),
    ),
    (
        "backplan_last_attempt_timestamp_seconds",
        "When the last backup, good or failed, started (Unix time; 0: never).",
        |s| Some(s.last_attempt.as_ref().map_or(0.0, |a| unix(a.time))),
    ),
    (
        "backplan_last_status",
        "How the last backup ended: 0 failed, 1 succeeded with a warning, 2 ok.",
        |s| {
            s.last_run.map(|r| match r {
                RunStatus::Failed => 0.0,
                RunStatus::Warning => 1.0,
                RunStatus::Ok => 2.0,
            })
        },
    ),
    (
        "backplan_expected_interval_seconds",
        "The interval of the source's schedule.",
        |s| s.expected_interval_seconds.map(|i| i as f64),
    ),
    (
        "backplan_snapshot_size_bytes",
        "Bytes the last good snapshot holds (every entry's size together).",
        |s| s.size.as_ref().map(|z| z.bytes as f64),
    ),
    (
        "backplan_snapshot_size_anomaly",
        "1 when the last good snapshot's size changed beyond size_change_factor against the one before, else 0.",
        |s| s.size.as_ref().map(|z| f64::from(u8::from(z.anomaly))),
    ),
    (
        "backplan_last_verify_timestamp_seconds",
        "When the destination's last verify finished (Unix time; 0: never).",
        |s| Some(s.verify.as_ref().map_or(0.0, |v| unix(v.finished))),
    ),
    (
        "backplan_last_verify_success",
        "1 when the destination's last verify found no problem, else 0.",
        |s| s.verify.as_ref().map(|v| passed(v.result)),
    ),
    (
        "backplan_last_drill_timestamp_seconds",
        "When the source's last restore drill from the destination finished (Unix time; 0: never).",
        |s| Some(s.drill.as_ref().map_or(0.0, |d| unix(d.finished))),
    ),
    (
        "backplan_last_drill_success",
        "1 when the source's last restore drill passed, else 0.",
        |s| s.drill.as_ref().map(|d| passed(d.result)),
    ),
    (
        "backplan_drill_expected_interval_seconds",
        "The interval of the policy's drill schedule (drill.schedule); absent without one.",
        |s| s.drill_interval_seconds.map(|i| i as f64),
    ),
    (
        "backplan_drill_duration_seconds",
        "The wall time of the source's last restore drill, all steps together.",
        |s| s.drill.as_ref().map(|d| d.seconds()),
    ),
];

/// The metrics text of a status report.
pub fn text(report: &StatusReport) -> String {
    let mut out = String::new();
    for (name, help, value) in METRICS {
        let samples: Vec<(&SourceStatus, f64)> = report
            .sources
            .iter()
            .filter_map(|s| Some((s, value(s)?)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (s, v) in samples {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\",destination=\"{}\"}} {v}",
                escape(&s.source),
                escape(&s.destination)
            );
        }
    }
    out
}

/// A label value as the exposition format writes it: `\`, `"` and line feeds
/// escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn unix(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn passed(r: CheckResult) -> f64 {
    match r {
        CheckResult::Passed => 1.0,
        CheckResult::Failed => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslashes_quotes_and_line_feeds() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("one\ntwo"), "one\\ntwo");
        assert_eq!(escape("plain-name_1"), "plain-name_1");
    }
}
