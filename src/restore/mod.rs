//! Restores: `restore_plan` (pure) picks the snapshots, their order, where to fetch
//! them and where they go; [`preview`] adds what only I/O can tell (which files would
//! change, what a database or server holds) and [`execute`] carries the plan out,
//! returning a [`execute::RestoreReport`]. The executor never re-decides.

pub mod execute;
pub mod preview;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Code, Failure};
use crate::graph::SourceGraph;
use crate::inventory::{Inventory, SnapshotInfo, SnapshotStatus};
use crate::policy::Policy;
use crate::sources::kind::Kind;
pub use crate::sources::kind::{
    DatabaseLocalePlan, DatabaseProperties, DatabaseState, DumpFile, Note, Preview, RestoreOptions,
    Restored, SpoolFit, SpoolLayout, TargetLocale,
};
pub use crate::sources::postgres::DatabaseLocale;

/// The version of the restore plan's JSON shape. Version 2: a preview's `notes` are
/// typed objects (`{"note": "database", …}`), not sentences.
pub const FORMAT_VERSION: u32 = 2;

/// What to restore, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The newest snapshot of each source at or before this time (default: newest).
    pub at: Option<DateTime<Utc>>,
    /// One snapshot by id.
    pub snapshot: Option<String>,
    /// Only these sources (default: every source of the policy).
    pub only: Vec<String>,
    /// Restore a source somewhere else than where it came from: a folder, or for a
    /// database source a PostgreSQL URL.
    pub targets: BTreeMap<String, String>,
    /// Only entries matching these patterns (files and config sources).
    pub include: Vec<String>,
    /// Redis sources go into `DIR/dump.rdb` instead of a running server.
    pub as_file: Option<String>,
}

/// A restore, step by step, in graph order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub format_version: u32,
    pub at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    /// Selected sources with no good snapshot at that time.
    pub missing: Vec<String>,
    /// Bytes to fetch per destination: the snapshots' size, what their entries hold
    /// before compression (what they stored, for snapshots of builds that did not
    /// record their size).
    pub fetch: BTreeMap<String, u64>,
    /// Any one of these recipients' secret keys can open the data.
    pub secret_keys: Vec<String>,
    pub include: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub order: usize,
    pub source: String,
    pub source_type: String,
    pub snapshot: SnapshotInfo,
    /// Destinations holding it, in the order they are tried.
    pub from: Vec<String>,
    /// A folder, or a database URL (its password, if any, redacted).
    pub target: String,
    /// Filled in by [`preview`] from the target and the snapshot's tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// Chooses what to restore. Pure.
pub fn restore_plan(
    policy: &Policy,
    graph: &SourceGraph,
    inventory: &Inventory,
    selection: &Selection,
    secret_keys: Vec<String>,
) -> Result<RestorePlan, Failure> {
    for (flag, name) in selection
        .only
        .iter()
        .map(|n| ("--only", n))
        .chain(selection.targets.keys().map(|n| ("--target", n)))
    {
        if !policy.sources.contains_key(name) {
            let declared: Vec<&str> = policy.sources.keys().map(String::as_str).collect();
            let mut help = format!("the policy declares: {}", declared.join(", "));
            if let Some(near) = crate::policy::load::suggest(name, declared.iter().copied()) {
                help = format!("did you mean `{near}`? {help}");
            }
            return Err(Failure::new(
                Code::UnknownSource,
                format!(
                    "{flag} {name}: the policy {} declares no source `{name}`",
                    policy.path.display()
                ),
            )
            .with_help(help));
        }
    }
    // Every good snapshot, with the readable destinations that hold it.
    let mut holders: BTreeMap<&str, (&SnapshotInfo, Vec<String>)> = BTreeMap::new();
    for (dest, state) in &inventory.destinations {
        if state.error.is_some() {
            continue;
        }
        for s in &state.snapshots {
            if s.status == SnapshotStatus::Complete {
                holders
                    .entry(&s.id)
                    .or_insert((s, Vec::new()))
                    .1
                    .push(dest.clone());
            }
        }
    }
    let chosen: Vec<(&SnapshotInfo, Vec<String>)> = match &selection.snapshot {
        Some(id) => {
            let (s, d) = holders.get(id.as_str()).ok_or_else(|| {
                Failure::new(
                    Code::SnapshotNotFound,
                    format!("no destination holds a good snapshot {id}"),
                )
            })?;
            vec![(*s, d.clone())]
        }
        None => {
            let mut out = Vec::new();
            for name in graph.order() {
                if !selection.only.is_empty() && !selection.only.contains(&name) {
                    continue;
                }
                let best = holders
                    .values()
                    .filter(|(s, _)| s.source == name && selection.at.is_none_or(|at| s.time <= at))
                    .max_by_key(|(s, _)| s.time);
                if let Some((s, d)) = best {
                    out.push((*s, d.clone()));
                }
            }
            out
        }
    };
    let wanted: Vec<String> = match &selection.snapshot {
        Some(_) => chosen.iter().map(|(s, _)| s.source.clone()).collect(),
        None if selection.only.is_empty() => graph.order(),
        None => graph
            .order()
            .into_iter()
            .filter(|n| selection.only.contains(n))
            .collect(),
    };
    let missing = wanted
        .iter()
        .filter(|n| !chosen.iter().any(|(s, _)| s.source == **n))
        .cloned()
        .collect();

    let mut steps = Vec::new();
    let mut fetch: BTreeMap<String, u64> = BTreeMap::new();
    for (i, (snapshot, mut from)) in chosen.into_iter().enumerate() {
        let source = policy.sources.get(&snapshot.source);
        // Destinations in policy order: the first is fetched from, the rest are
        // fallbacks.
        let order: Vec<&String> = policy.file.destinations.keys().collect();
        from.sort_by_key(|d| order.iter().position(|o| *o == d).unwrap_or(usize::MAX));
        // What the snapshot holds, not what it stored: an incremental snapshot
        // stored only what was new, and a restore reads the rest from older packs.
        if let (Some(first), Some(bytes)) = (from.first(), snapshot.size.or(snapshot.bytes_stored))
        {
            *fetch.entry(first.clone()).or_default() += bytes;
        }
        let target = match source {
            Some(source) => Kind::of(source).restore_target(
                policy,
                selection.targets.get(&snapshot.source).map(String::as_str),
                selection.as_file.as_deref(),
            ),
            // A snapshot of a source the policy no longer names: its entries are
            // absolute paths without their leading `/`, as a config source's.
            None => "/".to_string(),
        };
        steps.push(Step {
            order: i + 1,
            source: snapshot.source.clone(),
            source_type: source.map_or("unknown", |s| s.type_name).to_string(),
            snapshot: snapshot.clone(),
            from,
            target,
            preview: None,
        });
    }
    Ok(RestorePlan {
        format_version: FORMAT_VERSION,
        at: selection.at,
        steps,
        missing,
        fetch,
        secret_keys,
        include: selection.include.clone(),
    })
}
