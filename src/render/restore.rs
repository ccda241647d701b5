//! The restore plan and the restore report.

use std::fmt::Write as _;

use crate::restore::{
    DatabaseLocale, DatabaseLocalePlan, DatabaseProperties, Preview, RestorePlan, TargetLocale,
};

use super::{bytes, time};

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

/// The warnings of a restore plan about databases that keep an encoding or locale
/// other than their snapshot's, for the restore's report.
pub fn locale_warnings(plan: &RestorePlan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| s.preview.as_ref())
        .flat_map(|p| &p.database_locales)
        .filter(|l| matches!(l.target, TargetLocale::Differs { .. }))
        .filter_map(locale_plan_text)
        .collect()
}

fn preview_text(p: &Preview) -> String {
    if let Some(why) = &p.unknown {
        return format!("contents unknown: {why}");
    }
    if !p.notes.is_empty() || !p.database_properties.is_empty() || !p.database_locales.is_empty() {
        let notes: Vec<String> = p
            .notes
            .iter()
            .cloned()
            .chain(p.database_locales.iter().filter_map(locale_plan_text))
            .chain(p.database_properties.iter().map(properties_text))
            .collect();
        return format!(
            "{} entries, {}; {}",
            p.entries,
            bytes(p.bytes),
            notes.join("; ")
        );
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
    parts.join("; ")
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
        if let Some(p) = &step.preview {
            let _ = writeln!(out, "    {:<w$}   {}", "", preview_text(p));
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
}
