//! The policy diff: how the policy differs from the one last applied, and what that
//! difference does (the consequences), computed from the plan's own actions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use super::{Action, plural};
use crate::inventory::Inventory;
use crate::policy::model::PolicyFile;
use crate::policy::secret::redact_url_password;
use crate::policy::{EffectiveRetention, Policy, digest, load};

/// The policy differs from the one the last apply ran with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    pub applied_at: DateTime<Utc>,
    pub applied_digest: String,
    /// Unified diff, applied → current (URL passwords redacted).
    /// Unified diff, applied → current (URL passwords redacted); `None` when the
    /// applied text could not be opened (it is sealed with the repository key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub consequences: Vec<String>,
}

pub(super) fn policy_change(
    policy: &Policy,
    inventory: &Inventory,
    actions: &[Action],
) -> Option<PolicyChange> {
    let applied = inventory.last_applied_policy()?;
    if applied.digest == policy.digest {
        return None;
    }
    let (diff, consequences) = match &applied.text {
        Some(text) => {
            let old = redact_url_password(text);
            let new = redact_url_password(&policy.text);
            let consequences = match load::parse_lenient(text) {
                Some(before) => consequences(&before, policy, actions),
                None => {
                    vec!["the applied policy no longer parses; consequences are unknown".into()]
                }
            };
            (Some(unified_diff(&old, &new, policy)), consequences)
        }
        None => (None, Vec::new()),
    };

    Some(PolicyChange {
        applied_at: applied.applied_at,
        applied_digest: applied.digest.clone(),
        diff,
        consequences,
    })
}

/// A unified diff whose hunk headers name the YAML section they change, as in
/// `@@ -13,7 +13,7 @@ sources.db.retention`.
fn unified_diff(old: &str, new: &str, policy: &Policy) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::from("--- applied\n+++ policy\n");
    for hunk in diff.unified_diff().context_radius(2).iter_hunks() {
        let first_change = hunk
            .iter_changes()
            .find(|c| c.tag() != ChangeTag::Equal)
            .and_then(|c| c.new_index().or(c.old_index()));
        let section = first_change.and_then(|i| policy.spans.section_at_line(&policy.text, i + 1));
        match section {
            Some(section) => out.push_str(&format!("{} {section}\n", hunk.header())),
            None => out.push_str(&format!("{}\n", hunk.header())),
        }
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            };
            out.push(sign);
            out.push_str(change.value());
            if !change.value().ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

fn consequences(before: &PolicyFile, policy: &Policy, actions: &[Action]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, source) in &policy.sources {
        let Some(old) = before.sources.get(name) else {
            out.push(format!("{name} is a new source: it will be backed up"));
            continue;
        };
        if let Ok(old_retention) = EffectiveRetention::from_written(&before.retention_for(name)) {
            let changes = retention_changes(&old_retention, &source.retention);
            if !changes.is_empty() {
                let pruned = pruned_snapshots(actions, name);
                let effect = match pruned {
                    0 => format!("no snapshot of {name} is pruned now"),
                    n => format!("{n} snapshot{} of {name} will be pruned", plural(n)),
                };
                out.push(format!("{}: {effect}", changes.join(", ")));
            }
        }
        let old_schedule = before.schedule_for(name);
        if old_schedule != source.schedule.expr() {
            out.push(format!(
                "schedule of {name}: {old_schedule} → {}",
                source.schedule.expr()
            ));
        }
        let old_dests = before.destinations_for(name);
        for dest in &source.destinations {
            if !old_dests.contains(dest) {
                let n = actions
                    .iter()
                    .filter(|a| matches!(a, Action::Copy(c) if c.source == *name && c.to == *dest))
                    .count();
                out.push(format!(
                    "{name} now also writes to {dest}: {n} snapshot{} will be copied there",
                    plural(n)
                ));
            }
        }
        for dest in old_dests {
            if !source.destinations.contains(&dest) {
                out.push(format!(
                    "{name} no longer writes to {dest}: its snapshots there are kept"
                ));
            }
        }
        let old_kind = serde_json::to_vec(&old.kind).unwrap_or_default();
        if digest(&old_kind) != source.digest {
            out.push(format!(
                "what {name} backs up changed: it will be backed up again"
            ));
        }
    }
    for name in before.sources.keys() {
        if !policy.sources.contains_key(name) {
            out.push(format!(
                "{name} was removed from the policy: its snapshots are kept, nothing is deleted"
            ));
        }
    }
    out
}

/// `keep_daily 30 → 7` for every rule whose value changed.
fn retention_changes(old: &EffectiveRetention, new: &EffectiveRetention) -> Vec<String> {
    let old_rules = old.rules();
    let new_rules = new.rules();
    let value = |rules: &[(&str, String)], name: &str| {
        rules
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "—".to_string())
    };
    let mut names: Vec<&str> = old_rules.iter().map(|(n, _)| *n).collect();
    for (n, _) in &new_rules {
        if !names.contains(n) {
            names.push(n);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (value(&old_rules, name), value(&new_rules, name));
            (a != b).then(|| format!("{name} {a} → {b}"))
        })
        .collect()
}

/// Distinct snapshots of `source` that the plan prunes (held or not).
fn pruned_snapshots(actions: &[Action], source: &str) -> usize {
    let mut ids: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Prune(p) if p.source == source => {
                Some(p.snapshots.iter().map(|s| s.id.as_str()))
            }
            _ => None,
        })
        .flatten()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}
