//! The plan, three ways: a Terraform-style terminal view, Markdown for a pull-request
//! comment, and JSON. All three render the same [`Plan`] value.

use std::fmt::Write as _;

use crate::plan::{
    Action, BackupReason, DrillReason, Plan, PruneReason, SnapshotRef, Summary, plural,
};

use super::{bytes, time};

/// One rendered action line, shared by the terminal and Markdown views.
struct Line {
    symbol: char,
    verb: &'static str,
    source: String,
    what: String,
    why: String,
}

fn span_of(snaps: &[SnapshotRef]) -> String {
    match (snaps.first(), snaps.last()) {
        // "between", not "from … to": retention may keep snapshots in that range.
        (Some(a), Some(b)) if snaps.len() > 1 => format!(
            "{} snapshots between {} and {}",
            snaps.len(),
            a.time.format("%Y-%m-%d %H:%M"),
            b.time.format("%Y-%m-%d %H:%M"),
        ),

        (Some(a), _) => time(a.time),
        _ => String::new(),
    }
}

fn lines(plan: &Plan) -> Vec<Line> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < plan.actions.len() {
        match &plan.actions[i] {
            Action::Backup(b) => {
                let why = match &b.reason {
                    BackupReason::NeverBackedUp => "never backed up".to_string(),
                    BackupReason::Due {
                        since,
                        schedule,
                        last,
                    } => format!(
                        "due since {} ({schedule}), last {}",
                        time(*since),
                        time(*last)
                    ),
                    BackupReason::LastFailed {
                        failed_at,
                        last_good,
                    } => match last_good {
                        Some(good) => format!(
                            "last backup failed at {}, last good {}",
                            time(*failed_at),
                            time(*good)
                        ),
                        None => {
                            format!("last backup failed at {}, none good yet", time(*failed_at))
                        }
                    },
                    BackupReason::PolicyChanged { last } => {
                        format!("what is backed up changed since {}", time(*last))
                    }
                };
                let est = b
                    .estimated_bytes
                    .map(|n| format!("; est. {} read", bytes(n)))
                    .unwrap_or_default();
                let mode = b
                    .mode
                    .as_ref()
                    .map(|m| format!("; {}", backup_mode(m)))
                    .unwrap_or_default();
                let extend = match b.extend_locks.is_empty() {
                    true => String::new(),
                    false => format!(
                        "; then extends the object locks of its packs on {}",
                        b.extend_locks.join(", ")
                    ),
                };
                out.push(Line {
                    symbol: '+',
                    verb: "backup",
                    source: b.source.clone(),
                    what: format!("→ {}", b.destinations.join(", ")),
                    why: format!("{why}{est}{mode}{extend}"),
                });
                i += 1;
            }
            Action::Configure(c) => {
                out.push(Line {
                    symbol: '~',
                    verb: "config",
                    source: c.source.clone(),
                    what: c
                        .changes
                        .iter()
                        .map(|s| format!("{} {:?} → {:?}", s.name, s.from, s.to))
                        .collect::<Vec<_>>()
                        .join(", "),
                    why: format!(
                        "the server differs from the policy's {}",
                        match c.source_type.as_str() {
                            "redis" => "persistence",
                            _ => "settings",
                        }
                    ),
                });
                i += 1;
            }
            Action::Copy(first) => {
                // Consecutive copies of one source between the same two destinations
                // read as one line.
                let mut snaps = vec![first.snapshot.clone()];
                let mut j = i + 1;
                while let Some(Action::Copy(c)) = plan.actions.get(j) {
                    if c.source != first.source || c.from != first.from || c.to != first.to {
                        break;
                    }
                    snaps.push(c.snapshot.clone());
                    j += 1;
                }
                snaps.sort_by_key(|s| s.time);
                let size: Option<u64> = snaps.iter().map(|s| s.bytes_stored).sum();
                out.push(Line {
                    symbol: '>',
                    verb: "copy",
                    source: first.source.clone(),
                    what: format!(
                        "{} {} → {}{}",
                        span_of(&snaps),
                        first.from,
                        first.to,
                        size.map(|n| format!(", {}", bytes(n))).unwrap_or_default()
                    ),
                    why: match first.extend_locks {
                        false => format!("missing on {}", first.to),
                        true => format!(
                            "missing on {}; then extends the object locks of its packs there",
                            first.to
                        ),
                    },
                });
                i = j;
            }
            Action::Repair(r) => {
                let lost = match r.packs.len() {
                    0 => format!("chunks lost on {}", r.destination),
                    n => format!("{n} pack{} lost on {}", plural(n), r.destination),
                };
                let then = match r.from.is_empty() {
                    true => "retired".to_string(),
                    false => format!("copied from {}", r.from.join(", ")),
                };
                out.push(Line {
                    symbol: '~',
                    verb: "repair",
                    source: match r.sources.is_empty() {
                        true => "-".to_string(),
                        false => r.sources.join(", "),
                    },
                    what: format!("{lost} (found by verify at {}), {then}", time(r.found)),
                    why: match r.snapshots.len() {
                        0 => "no snapshot needs them".to_string(),
                        1 => "1 snapshot needs them".to_string(),
                        n => format!("{n} snapshots need them"),
                    },
                });
                i += 1;
            }
            Action::Prune(p) => {
                let why = match &p.reason {
                    PruneReason::OutsideRetention { rules } => format!("outside {rules}"),
                    PruneReason::FailedSuperseded { newest_good } => {
                        format!("failed, superseded by {}", time(*newest_good))
                    }
                };
                out.push(Line {
                    symbol: '-',
                    verb: "prune",
                    source: p.source.clone(),
                    what: format!("{} from {}", span_of(&p.snapshots), p.destination),
                    why: if let Some(until) = p.locked_until {
                        format!(
                            "{why} [held: object lock until {}]",
                            until.format("%Y-%m-%d %H:%M UTC")
                        )
                    } else if p.append_only {
                        format!("{why} [held: append-only, for --role prune]")
                    } else if p.held {
                        format!("{why} [held: over --max-deletes]")
                    } else {
                        why
                    },
                });
                i += 1;
            }
            Action::Drill(d) => {
                let why = match &d.reason {
                    DrillReason::NeverDrilled => "never drilled".to_string(),
                    DrillReason::Due { since, .. } => format!("due since {}", time(*since)),
                };
                out.push(Line {
                    symbol: '?',
                    verb: "drill",
                    source: d.source.clone(),
                    what: "newest snapshot into a scratch target".to_string(),
                    why: if d.needs_secret_key {
                        format!(
                            "{why} [skipped: needs a secret key, drill.secret_key_file ({})]",
                            crate::error::Code::DrillNeedsSecretKey.id()
                        )
                    } else {
                        why
                    },
                });
                i += 1;
            }
        }
    }
    out
}

/// "Plan: 3 backups, 1 copy, 15 prunes."
pub fn summary_line(s: &Summary) -> String {
    let mut parts = vec![format!("{} backup{}", s.backups, plural(s.backups))];
    if s.changes > 0 {
        parts.push(format!("{} change{}", s.changes, plural(s.changes)));
    }
    if s.repairs > 0 {
        parts.push(format!("{} repair{}", s.repairs, plural(s.repairs)));
    }
    parts.extend([
        format!(
            "{} cop{}",
            s.copies,
            if s.copies == 1 { "y" } else { "ies" }
        ),
        format!("{} prune{}", s.prunes, plural(s.prunes)),
    ]);
    if s.held_prunes > 0 {
        parts.push(format!("{} held", s.held_prunes));
    }
    if s.drills > 0 {
        parts.push(format!("{} drill{}", s.drills, plural(s.drills)));
    }
    format!("Plan: {}.", parts.join(", "))
}

fn inventory_line(plan: &Plan) -> String {
    let parts: Vec<String> = plan
        .destinations
        .iter()
        .map(|d| match &d.error {
            Some(_) => format!("{} unreadable", d.name),
            None => format!("{} {} snapshot{}", d.name, d.snapshots, plural(d.snapshots)),
        })
        .collect();
    format!("Inventory: {}", parts.join(", "))
}

/// Said in place of the diff when the applied policy could not be opened.
const SEALED: &str =
    "(the applied policy is sealed with the repository key: the diff shows where the key is)";

/// The terminal view.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", inventory_line(plan));
    if let Some(role) = role_line(plan) {
        let _ = writeln!(out, "{role}");
    }
    if let Some(change) = &plan.policy_change {
        let _ = writeln!(
            out,
            "\nPolicy changed since the last apply ({}):",
            time(change.applied_at)
        );
        match &change.diff {
            Some(diff) => {
                for line in diff.lines() {
                    let _ = writeln!(out, "{}", format!("  {line}").trim_end());
                }
            }
            None => {
                let _ = writeln!(out, "  {SEALED}");
            }
        }
        if !change.consequences.is_empty() {
            let _ = writeln!(out, "  Consequences:");
            for c in &change.consequences {
                let _ = writeln!(out, "    {c}");
            }
        }
    }
    let lines = lines(plan);
    if !lines.is_empty() || !plan.warnings.is_empty() {
        out.push('\n');
    }
    let width = lines
        .iter()
        .map(|l| l.source.chars().count())
        .max()
        .unwrap_or(0);
    for l in &lines {
        let _ = writeln!(
            out,
            "  {} {:<7} {:<width$} {}   {}",
            l.symbol, l.verb, l.source, l.what, l.why
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "  ! warning {} {}", w.code, w.message);
    }
    out.push('\n');
    if plan.has_changes() {
        let _ = writeln!(out, "{}", summary_line(&plan.summary));
    } else {
        let _ = writeln!(
            out,
            "No changes. The destinations hold what the policy asks for."
        );
    }
    out
}

/// Markdown, for a pull-request comment.
/// Said when the plan is not a backup host's (`--role`).
fn role_line(plan: &Plan) -> Option<&'static str> {
    (plan.settings.role == crate::plan::Role::Prune).then_some(
        "Role: prune (the trusted host: prunes and repairs, append-only destinations included; no backups)",
    )
}

pub fn markdown(plan: &Plan) -> String {
    let mut out = String::from("### backplan plan\n\n");
    let _ = writeln!(out, "{}\n", inventory_line(plan));
    if let Some(role) = role_line(plan) {
        let _ = writeln!(out, "{role}\n");
    }
    if plan.has_changes() {
        let _ = writeln!(out, "**{}**\n", summary_line(&plan.summary));
    } else {
        out.push_str("**No changes.** The destinations hold what the policy asks for.\n\n");
    }
    let lines = lines(plan);
    if !lines.is_empty() {
        out.push_str("| | action | source | what | why |\n|---|---|---|---|---|\n");
        for l in &lines {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                l.symbol,
                l.verb,
                l.source,
                l.what.replace('|', "\\|"),
                l.why.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    if !plan.warnings.is_empty() {
        out.push_str("Warnings:\n\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "- **{}** {}", w.code, w.message);
        }
        out.push('\n');
    }
    if let Some(change) = &plan.policy_change {
        let _ = writeln!(
            out,
            "<details><summary>Policy changed since the last apply ({})</summary>\n",
            time(change.applied_at)
        );
        match &change.diff {
            Some(diff) => {
                out.push_str("```diff\n");
                out.push_str(diff);
                if !diff.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str("```\n\n");
            }
            None => {
                let _ = writeln!(out, "{SEALED}\n");
            }
        }
        for c in &change.consequences {
            let _ = writeln!(out, "- {c}");
        }
        out.push_str("\n</details>\n");
    }
    out
}

/// "sync, point in time (1200 keys in 2 databases)".
fn backup_mode(m: &crate::plan::BackupMode) -> String {
    let how = match (m.method, m.refused) {
        (crate::plan::BackupMethod::Sync, false) => "sync, point in time",
        (crate::plan::BackupMethod::Sync, true) => "sync, refused",
        (crate::plan::BackupMethod::Scan, _) => "scan, not point in time",
    };
    format!(
        "{how} ({} keys in {} database{})",
        m.keys,
        m.databases,
        plural(m.databases)
    )
}
