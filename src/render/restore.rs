//! The restore plan and the restore report.

use std::fmt::Write as _;

use crate::error::Code;
use crate::restore::execute::RestoreReport;
use crate::restore::{
    DatabaseLocale, DatabaseLocalePlan, DatabaseProperties, DatabaseState, DumpFile, Note, Preview,
    RestorePlan, Restored, SpoolFit, SpoolLayout, TargetLocale,
};
use crate::sources::redis::Taken;

use super::{bytes, time};
use crate::plan::plural;

/// What a database restore does with the database's own properties.
fn properties_text(p: &DatabaseProperties) -> String {
    if p.applied {
        format!(
            "{}: database properties (owner, settings, role settings, privileges, comment) \
             applied to {} after the data, replacing its own",
            p.archive, p.database
        )
    } else {
        format!(
            "{}: a partial restore leaves the database properties of {} (owner, settings, \
             privileges, comment) as they are",
            p.archive, p.database
        )
    }
}

/// `encoding LATIN1, locale C`, `encoding UTF8, LC_COLLATE C, LC_CTYPE C.utf8, icu
/// locale und`: the parts given.
fn locale_text(l: &DatabaseLocale) -> String {
    let mut parts = Vec::new();
    if !l.encoding.is_empty() {
        parts.push(format!("encoding {}", l.encoding));
    }
    if l.collate == l.ctype {
        if !l.collate.is_empty() {
            parts.push(format!("locale {}", l.collate));
        }
    } else {
        for (name, value) in [("LC_COLLATE", &l.collate), ("LC_CTYPE", &l.ctype)] {
            if !value.is_empty() {
                parts.push(format!("{name} {value}"));
            }
        }
    }
    if let Some(locale) = &l.locale {
        parts.push(format!("{} locale {locale}", l.provider));
    } else if !l.provider.is_empty() && l.provider != "libc" {
        parts.push(format!("provider {}", l.provider));
    }
    if let Some(rules) = &l.icu_rules {
        parts.push(format!("ICU rules {rules}"));
    }
    if parts.is_empty() {
        "the server's defaults".to_string()
    } else {
        parts.join(", ")
    }
}

/// What becomes of the snapshot's encoding and locale in the database restored into;
/// `None` when there is nothing to say (it has the same already).
fn locale_plan_text(p: &DatabaseLocalePlan) -> Option<String> {
    let snapshot = p.snapshot.as_ref().map(locale_text);
    let text = match (&p.target, snapshot) {
        (TargetLocale::Same, _) => return None,
        (TargetLocale::Unknown { why }, _) => {
            format!("the snapshot's encoding and locale are not known ({why})")
        }
        (TargetLocale::Created { tablespace }, Some(snapshot)) => format!(
            "{} created from template0 with the snapshot's {snapshot}{}",
            p.database,
            tablespace.as_ref().map_or(String::new(), |ts| format!(
                ", in tablespace {ts} if the server has it (else its default)"
            ))
        ),
        (TargetLocale::Created { .. }, None) => format!(
            "{} created with the server's defaults (the snapshot has no CREATE DATABASE)",
            p.database
        ),
        (TargetLocale::Differs { own }, snapshot) => format!(
            "warning: {} keeps its own {}, not the snapshot's {}: its text sorts, compares and \
             is stored as its own settings say",
            p.database,
            locale_text(own),
            snapshot.unwrap_or_else(|| "(unknown)".into())
        ),
    };
    Some(format!("{}: {text}", p.archive))
}

/// One note of a preview.
fn note_text(note: &Note) -> String {
    match note {
        Note::OwnersLeftToUser => {
            "owners are left to the restoring user: only a restore run as root sets them".into()
        }
        Note::RedisSnapshot {
            keys,
            databases,
            redis_version,
            mode,
        } => format!(
            "{keys} keys in {databases} database{} from Redis {redis_version}, {}",
            plural(*databases),
            match mode {
                Taken::Sync => "one point in time (sync)",
                Taken::Scan => "not one point in time (scan)",
            }
        ),
        Note::DumpFile { path, state } => match state {
            DumpFile::New => format!("writes {} for a cold start", path.display()),
            DumpFile::Overwritten => format!("overwrites {} (--force)", path.display()),
            DumpFile::NeedsForce => format!("{} exists: needs --force", path.display()),
        },
        Note::TargetKeys { keys: 0, .. } => {
            "the target holds no keys; RESTORE … REPLACE ABSTTL per key".into()
        }
        Note::TargetKeys { keys, flush: true } => {
            format!("the target holds {keys} keys: --flush empties it first")
        }
        Note::TargetKeys { keys, flush: false } => {
            format!("the target holds {keys} keys: needs --flush")
        }
        Note::Database {
            archive,
            database,
            state,
        } => {
            let state = match state {
                DatabaseState::Created => format!("{database} will be created"),
                DatabaseState::Empty => format!("{database} exists and is empty"),
                DatabaseState::Tables {
                    tables,
                    clean: true,
                } => {
                    format!("{database} holds {tables} tables: --clean replaces them")
                }
                DatabaseState::Tables {
                    tables,
                    clean: false,
                } => format!("{database} holds {tables} tables: needs --clean"),
                DatabaseState::Unknown { why } => format!("{database}: {why}"),
            };
            format!("{archive}: {state}")
        }
        Note::BySections { archive } => format!(
            "{archive}: streamed into one pg_restore; --jobs N restores it by sections, N tables at once"
        ),
        Note::Spool {
            archive,
            jobs,
            dir,
            needed,
            layout,
            fit,
        } => {
            let why = match layout {
                SpoolLayout::Archive => "",
                SpoolLayout::Directory => ", a directory-format archive",
                SpoolLayout::BySections => {
                    ", restored by sections: the spool holds the table of contents and large \
                     objects, its tables' data copied straight from the repository"
                }
                SpoolLayout::DirectoryBySections => {
                    ", a directory-format archive, restored by sections: its tables' data \
                     copied straight from the repository"
                }
            };
            let spool = format!("pg_restore -j {jobs} from a spool in {}", dir.display());
            // Of a custom-format archive by sections the plan knows only the
            // archive's size, the most its skeleton can take.
            let at_most = if *layout == SpoolLayout::BySections {
                "at most "
            } else {
                ""
            };
            let room = |available: &u64, tail: String| {
                format!(
                    "{archive}: {spool} (needs {at_most}{} free, {} available{why}){tail}",
                    bytes(*needed),
                    bytes(*available)
                )
            };
            let code = Code::NoSpace.id();
            match fit {
                SpoolFit::Fits { available } => room(available, String::new()),
                SpoolFit::MayNotFit { available } => room(
                    available,
                    format!(": it may not fit, the restore checks before it starts ({code})"),
                ),
                SpoolFit::DoesNotFit { available } => room(
                    available,
                    format!(": not enough space, the restore would stop ({code})"),
                ),
                SpoolFit::Unknown { why: unknown } => format!(
                    "{archive}: {spool} (needs {} free{why}): {unknown}",
                    bytes(*needed)
                ),
            }
        }
        Note::Unknown { why } => why.clone(),
    }
}

/// A step's preview: its figures, then one line per note (a database step has
/// several).
fn preview_lines(p: &Preview) -> Vec<String> {
    if let Some(why) = &p.unknown {
        return vec![format!("contents unknown: {why}")];
    }
    if !p.notes.is_empty() || !p.database_properties.is_empty() || !p.database_locales.is_empty() {
        let notes: Vec<String> = p
            .notes
            .iter()
            .map(note_text)
            .chain(p.database_locales.iter().filter_map(locale_plan_text))
            .chain(p.database_properties.iter().map(properties_text))
            .collect();
        let figures = format!("{} entries, {}", p.entries, bytes(p.bytes));
        return std::iter::once(figures)
            .chain(notes.into_iter().map(|n| format!("· {n}")))
            .collect();
    }
    let mut parts = vec![format!("{} entries, {}", p.entries, bytes(p.bytes))];
    parts.push(format!("{} new", p.create));
    if p.unchanged > 0 {
        parts.push(format!("{} unchanged", p.unchanged));
    }
    if !p.overwrite.is_empty() {
        let names: Vec<&str> = p.overwrite.iter().take(3).map(String::as_str).collect();
        let more = if p.overwrite.len() > 3 { ", …" } else { "" };
        parts.push(format!(
            "{} would be overwritten ({}{more}): needs --force",
            p.overwrite.len(),
            names.join(", ")
        ));
    }
    vec![parts.join("; ")]
}

/// The terminal view of a restore plan.
pub fn human(plan: &RestorePlan) -> String {
    let mut out = String::new();
    let _ = match plan.at {
        Some(at) => writeln!(
            out,
            "Restore as of {} (the newest good snapshot of each source):",
            time(at)
        ),
        None => writeln!(out, "Restore the newest good snapshot of each source:"),
    };
    let w = plan.steps.iter().map(|s| s.source.len()).max().unwrap_or(0);
    for step in &plan.steps {
        let _ = writeln!(
            out,
            "  {} {:<w$} → {}   snapshot {} of {} from {}",
            step.order,
            step.source,
            step.target,
            step.snapshot.id,
            time(step.snapshot.time),
            step.from.join(", then "),
        );
        for line in step.preview.iter().flat_map(preview_lines) {
            let _ = writeln!(out, "    {:<w$}   {line}", "");
        }
    }
    if plan.steps.is_empty() {
        let _ = writeln!(out, "  nothing to restore");
    }
    for m in &plan.missing {
        let _ = writeln!(out, "  ! {m}: no good snapshot to restore");
    }
    if !plan.include.is_empty() {
        let _ = writeln!(out, "Only entries matching: {}", plan.include.join(", "));
    }
    let fetch: Vec<String> = plan
        .fetch
        .iter()
        .map(|(d, b)| format!("{} from {d}", bytes(*b)))
        .collect();
    if !fetch.is_empty() {
        let _ = writeln!(out, "Fetch {}.", fetch.join(", "));
    }
    if !plan.secret_keys.is_empty() {
        let _ = writeln!(
            out,
            "Secret key needed: one of {}.",
            plan.secret_keys.join(", ")
        );
    }
    out
}

/// What a step restored, after its arrow.
fn restored_text(restored: &Restored) -> String {
    match restored {
        Restored::Databases { databases } => format!(
            "database{} {} restored",
            plural(databases.len()),
            databases.join(", ")
        ),
        Restored::DumpFile { path, bytes: n } => {
            format!("{} written ({})", path.display(), bytes(*n))
        }
        Restored::Keys {
            keys,
            split,
            expired,
            functions,
        } => format!(
            "{keys} keys restored{}, {expired} already expired and skipped{}",
            if *split > 0 {
                format!(" ({split} too large for RESTORE, as commands)")
            } else {
                String::new()
            },
            if *functions > 0 {
                format!(", {functions} function libraries")
            } else {
                String::new()
            }
        ),
        Restored::Files {
            entries,
            fetched,
            warnings,
        } => format!(
            "{entries} entries, {} fetched{}",
            bytes(*fetched),
            if warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warning{}", warnings.len(), plural(warnings.len()))
            }
        ),
    }
}

/// The report of a restore: one line per step, the sources with nothing to
/// restore, the databases that kept their own locale, and a count.
pub fn report(report: &RestoreReport) -> String {
    let mut out = String::new();
    for step in &report.steps {
        let _ = writeln!(
            out,
            "  ✓ {} → {}   {} from {}",
            step.source,
            step.target,
            restored_text(&step.restored),
            step.from
        );
    }
    for m in &report.missing {
        let _ = writeln!(out, "  ✗ {m}: no good snapshot to restore");
    }
    for warning in report.locale_warnings.iter().filter_map(locale_plan_text) {
        let _ = writeln!(out, "  ! {warning}");
    }
    let n = report.steps.len();
    let _ = writeln!(out, "\nRestore: {n} step{} done.", plural(n));
    out
}

/// What the restored steps could not carry over, for standard error.
pub fn warnings(report: &RestoreReport) -> String {
    let mut out = String::new();
    for step in &report.steps {
        if let Restored::Files { warnings, .. } = &step.restored {
            for warning in warnings {
                let _ = writeln!(out, "warning: {}: {warning}", step.source);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_databases_encoding_and_locale_read_as_the_parts_it_has() {
        let libc = DatabaseLocale {
            encoding: "LATIN1".into(),
            provider: "libc".into(),
            collate: "C".into(),
            ctype: "C".into(),
            locale: None,
            icu_rules: None,
        };
        assert_eq!(locale_text(&libc), "encoding LATIN1, locale C");
        let icu = DatabaseLocale {
            encoding: "UTF8".into(),
            provider: "icu".into(),
            collate: "C".into(),
            ctype: "C.utf8".into(),
            locale: Some("de-DE".into()),
            icu_rules: Some("&a < b".into()),
        };
        assert_eq!(
            locale_text(&icu),
            "encoding UTF8, LC_COLLATE C, LC_CTYPE C.utf8, icu locale de-DE, ICU rules &a < b"
        );
        let plan = |target| DatabaseLocalePlan {
            archive: "app.dump".into(),
            database: "app".into(),
            snapshot: Some(libc.clone()),
            target,
        };
        assert_eq!(
            locale_plan_text(&plan(TargetLocale::Created {
                tablespace: Some("fast".into())
            }))
            .as_deref(),
            Some(
                "app.dump: app created from template0 with the snapshot's encoding LATIN1, \
                 locale C, in tablespace fast if the server has it (else its default)"
            )
        );
        assert_eq!(locale_plan_text(&plan(TargetLocale::Same)), None);
        let differs =
            locale_plan_text(&plan(TargetLocale::Differs { own: icu.clone() })).expect("a warning");
        assert!(
            differs.starts_with(
                "app.dump: warning: app keeps its own encoding UTF8, LC_COLLATE C, LC_CTYPE \
                 C.utf8, icu locale de-DE, ICU rules &a < b, not the snapshot's encoding \
                 LATIN1, locale C:"
            ),
            "{differs}"
        );
    }

    #[test]
    fn a_restore_report_reads_one_line_per_step_then_the_count() {
        use crate::restore::execute::{RestoreReport, StepDone};

        let step = |source: &str, target: &str, restored| StepDone {
            source: source.into(),
            target: target.into(),
            from: "local".into(),
            restored,
        };
        let report = RestoreReport {
            steps: vec![
                step(
                    "db",
                    "postgres://db/app",
                    Restored::Databases {
                        databases: vec!["app".into(), "shop".into()],
                    },
                ),
                step(
                    "cache",
                    "redis://cache:6379",
                    Restored::Keys {
                        keys: 12,
                        split: 1,
                        expired: 2,
                        functions: 0,
                    },
                ),
                step(
                    "cold",
                    "/srv/redis/dump.rdb",
                    Restored::DumpFile {
                        path: "/srv/redis/dump.rdb".into(),
                        bytes: 2048,
                    },
                ),
                step(
                    "media",
                    "/srv/media",
                    Restored::Files {
                        entries: 3,
                        fetched: 1024,
                        warnings: vec!["owner of a.jpg not set".into()],
                    },
                ),
            ],
            missing: vec!["config".into()],
            locale_warnings: Vec::new(),
        };
        assert_eq!(
            super::report(&report),
            "  ✓ db → postgres://db/app   databases app, shop restored from local\n\
             \x20 ✓ cache → redis://cache:6379   12 keys restored (1 too large for RESTORE, as commands), 2 already expired and skipped from local\n\
             \x20 ✓ cold → /srv/redis/dump.rdb   /srv/redis/dump.rdb written (2.0 KiB) from local\n\
             \x20 ✓ media → /srv/media   3 entries, 1.0 KiB fetched, 1 warning from local\n\
             \x20 ✗ config: no good snapshot to restore\n\
             \nRestore: 4 steps done.\n"
        );
        assert_eq!(
            warnings(&report),
            "warning: media: owner of a.jpg not set\n"
        );
    }

    #[test]
    fn a_spool_note_names_the_room_it_needs_and_the_code_when_it_does_not_fit() {
        let note = |layout, fit| Note::Spool {
            archive: "app.dump".into(),
            jobs: 2,
            dir: "/var/tmp".into(),
            needed: 4096,
            layout,
            fit,
        };
        assert_eq!(
            note_text(&note(
                SpoolLayout::BySections,
                SpoolFit::MayNotFit { available: 1024 }
            )),
            "app.dump: pg_restore -j 2 from a spool in /var/tmp (needs at most 4.0 KiB free, \
             1.0 KiB available, restored by sections: the spool holds the table of contents \
             and large objects, its tables' data copied straight from the repository): it may \
             not fit, the restore checks before it starts (BP234)"
        );
        assert_eq!(
            note_text(&note(
                SpoolLayout::Archive,
                SpoolFit::DoesNotFit { available: 1024 }
            )),
            "app.dump: pg_restore -j 2 from a spool in /var/tmp (needs 4.0 KiB free, 1.0 KiB \
             available): not enough space, the restore would stop (BP234)"
        );
        assert_eq!(
            note_text(&note(
                SpoolLayout::Directory,
                SpoolFit::Unknown {
                    why: "no such folder".into()
                }
            )),
            "app.dump: pg_restore -j 2 from a spool in /var/tmp (needs 4.0 KiB free, a \
             directory-format archive): no such folder"
        );
    }

    #[test]
    fn a_database_note_says_what_the_target_needs() {
        let note = |state| Note::Database {
            archive: "app.dump".into(),
            database: "app".into(),
            state,
        };
        assert_eq!(
            note_text(&note(DatabaseState::Tables {
                tables: 3,
                clean: false
            })),
            "app.dump: app holds 3 tables: needs --clean"
        );
        assert_eq!(
            note_text(&note(DatabaseState::Tables {
                tables: 3,
                clean: true
            })),
            "app.dump: app holds 3 tables: --clean replaces them"
        );
        assert_eq!(
            note_text(&note(DatabaseState::Created)),
            "app.dump: app will be created"
        );
        let json = serde_json::to_value(note(DatabaseState::Tables {
            tables: 3,
            clean: false,
        }))
        .expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"note": "database", "archive": "app.dump", "database": "app",
                "state": "tables", "tables": 3, "clean": false})
        );
    }

    #[test]
    fn a_database_steps_notes_read_one_per_line_under_its_figures() {
        let preview = Preview {
            entries: 4,
            bytes: 2048,
            create: 0,
            unchanged: 0,
            overwrite: Vec::new(),
            notes: ["app", "shop"]
                .into_iter()
                .map(|db| Note::Database {
                    archive: format!("{db}.dump"),
                    database: db.into(),
                    state: DatabaseState::Created,
                })
                .collect(),
            database_properties: Vec::new(),
            database_locales: Vec::new(),
            unknown: None,
        };
        assert_eq!(
            preview_lines(&preview),
            [
                "4 entries, 2.0 KiB",
                "· app.dump: app will be created",
                "· shop.dump: shop will be created"
            ]
        );
    }
}
