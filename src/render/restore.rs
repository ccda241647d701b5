//! The restore plan and the restore report.

use std::fmt::Write as _;

use crate::restore::{DatabaseProperties, Preview, RestorePlan};

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

fn preview_text(p: &Preview) -> String {
    if let Some(why) = &p.unknown {
        return format!("contents unknown: {why}");
    }
    if !p.notes.is_empty() || !p.database_properties.is_empty() {
        let notes: Vec<String> = p
            .notes
            .iter()
            .cloned()
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
