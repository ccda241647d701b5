//! The report of an apply.

use std::fmt::Write as _;

use serde::Serialize;

use crate::apply::{Detail, Outcome, REPORT_FORMAT_VERSION, Report, Status};
use crate::plan::{Action, plural};
use crate::sources::kind::Stored;
use crate::sources::redis::Taken;

use super::bytes;

/// What a done action did, after its figures.
fn detail_text(detail: &Detail) -> String {
    match detail {
        Detail::Backup(report) => {
            let mut text = match &report.stored {
                Stored::Files { files, unchanged } => format!(
                    "{files} file{}, {unchanged} unchanged",
                    plural(*files as usize)
                ),
                Stored::Databases {
                    databases,
                    jobs: None,
                } => format!("{databases} database{}", plural(*databases as usize)),
                Stored::Databases {
                    databases,
                    jobs: Some(jobs),
                } => format!(
                    "{databases} database{}, pg_dump -j {jobs} in directory format",
                    plural(*databases as usize)
                ),
                Stored::Keys {
                    keys,
                    databases,
                    mode,
                } => format!(
                    "{keys} keys in {databases} database{}, {}",
                    plural(*databases),
                    match mode {
                        Taken::Sync => "sync (point in time)",
                        Taken::Scan => "scan (not point in time)",
                    }
                ),
            };
            if !report.warnings.is_empty() {
                text.push_str(&format!(
                    ", {} warnings: {}",
                    report.warnings.len(),
                    report.warnings.join("; ")
                ));
            }
            text
        }
        Detail::Configured { settings } => format!(
            "{} set and written to the config file",
            settings
                .iter()
                .map(|s| format!("{} {:?}", s.name, s.value))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Detail::Copied { chunks } => format!("{chunks} chunks copied"),
        Detail::Repaired {
            chunks,
            packs_written,
            packs_retired,
        } => format!(
            "{chunks} chunk{} copied into {packs_written} pack{}, {packs_retired} lost pack{} retired",
            plural(*chunks),
            plural(*packs_written),
            plural(*packs_retired)
        ),
        Detail::Pruned {
            snapshots,
            packs_removed,
            packs_repacked,
            packs_written,
        } => format!(
            "{snapshots} snapshots deleted, {packs_removed} packs removed ({packs_repacked} of them repacked into {packs_written})"
        ),
        Detail::Drilled {
            milliseconds,
            checked,
            findings,
        } => format!(
            "passed in {}, {checked} checked{}",
            super::drill::duration(*milliseconds as f64 / 1000.0),
            match findings.is_empty() {
                true => String::new(),
                false => format!("; objectives missed: {}", findings.join(", ")),
            }
        ),
    }
}

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
        Action::Drill(d) => format!("drill {}", d.source),
    }
}

/// What a backup did to the object locks of its packs on one destination.
fn lock_extension(lock: &crate::repo::s3lock::LockExtension) -> String {
    let mut text = format!(
        "      object lock on {}: {} pack{} checked, {} extended until {}",
        lock.destination,
        lock.checked,
        plural(lock.checked),
        lock.extended,
        lock.until.format("%Y-%m-%d %H:%M:%S UTC"),
    );
    if let Some(error) = &lock.error {
        let _ = write!(
            text,
            "\n      ! warning {}: {}\n        help: {}",
            error.code.id(),
            error.message,
            error.help_text()
        );
    }
    text
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
                    done.detail.as_ref().map(detail_text),
                ]
                .into_iter()
                .flatten()
                .collect();
                let mut line = if figures.is_empty() {
                    format!("  ✓ {}", label(&o.action))
                } else {
                    format!("  ✓ {}   {}", label(&o.action), figures.join(", "))
                };
                for lock in &done.locks {
                    line.push('\n');
                    line.push_str(&lock_extension(lock));
                }
                line
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
        notifications: &'a [crate::apply::Delivery],
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

    #[test]
    fn a_done_actions_detail_is_typed_in_json_and_a_sentence_on_the_terminal() {
        use crate::apply::{Detail, Done};
        use crate::sources::kind::BackupReport;

        let backup = |stored, warnings: Vec<String>| Done {
            locks: Vec::new(),
            bytes_read: Some(2048),
            bytes_stored: None,
            detail: Some(Detail::Backup(BackupReport { stored, warnings })),
        };
        let report = Report {
            outcomes: vec![
                Outcome {
                    index: 0,
                    action: Action::Configure(Configure {
                        source: "cache".into(),
                        source_type: "redis".into(),
                        changes: Vec::new(),
                    }),
                    status: Status::Done(backup(
                        Stored::Files {
                            files: 4,
                            unchanged: 3,
                        },
                        vec!["a.txt: unreadable".into()],
                    )),
                },
                Outcome {
                    index: 1,
                    action: Action::Configure(Configure {
                        source: "db".into(),
                        source_type: "postgres".into(),
                        changes: Vec::new(),
                    }),
                    status: Status::Done(backup(
                        Stored::Databases {
                            databases: 2,
                            jobs: Some(4),
                        },
                        Vec::new(),
                    )),
                },
            ],
            notifications: Vec::new(),
        };
        let value: serde_json::Value = serde_json::from_str(&json(&report)).expect("JSON");
        assert_eq!(value["format_version"], 3);
        assert_eq!(
            value["outcomes"][0]["detail"],
            serde_json::json!({"kind": "backup", "stored": "files", "files": 4, "unchanged": 3,
                "warnings": ["a.txt: unreadable"]})
        );
        assert_eq!(
            value["outcomes"][1]["detail"],
            serde_json::json!({"kind": "backup", "stored": "databases", "databases": 2, "jobs": 4})
        );
        let text = human(&report);
        assert!(
            text.contains(
                "✓ configure cache   2.0 KiB read, 4 files, 3 unchanged, 1 warnings: a.txt: unreadable\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "✓ configure db   2.0 KiB read, 2 databases, pg_dump -j 4 in directory format\n"
            ),
            "{text}"
        );
        let pruned = Detail::Pruned {
            snapshots: 1,
            packs_removed: 3,
            packs_repacked: 1,
            packs_written: 1,
        };
        assert_eq!(
            detail_text(&pruned),
            "1 snapshots deleted, 3 packs removed (1 of them repacked into 1)"
        );
        assert_eq!(
            detail_text(&Detail::Repaired {
                chunks: 1,
                packs_written: 2,
                packs_retired: 1
            }),
            "1 chunk copied into 2 packs, 1 lost pack retired"
        );
    }
}
