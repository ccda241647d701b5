//! The inventory: every snapshot in every destination, as read from the destinations
//! themselves. This module defines the model that `plan` reads; the repository fills
//! it from storage. It holds only the public part of each manifest (no paths, no
//! chunk lists), so it can be read, saved and diffed without any key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every destination's state, by destination name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub destinations: BTreeMap<String, DestinationState>,
}

/// What one destination holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationState {
    /// Snapshots, in any order.
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
    /// The policy that the last `apply` on this destination ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_policy: Option<AppliedPolicy>,
    /// Set when the destination could not be read: nothing is pruned on it, nothing
    /// is copied from or to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Locks held on the repository (expired ones included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockInfo>,
    /// Objects that could not be read, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
    /// What `verify` found lost here and recorded (`lost/`): packs missing or damaged,
    /// and the snapshots that need chunks this destination cannot give.
    #[serde(default, skip_serializing_if = "Lost::is_empty")]
    pub lost: Lost,
    /// Why backups failed here: one record per failed snapshot that apply could
    /// record it for (`failures/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailureRecord>,
    /// The newest `verify` of this destination (`verifies/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRecord>,
    /// The newest restore drill of each source from this destination (`drills/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<DrillRecord>,
}

/// Why one backup failed: the public record apply writes beside the failed snapshot
/// (its header says only that it failed). The code is the failure's diagnostic code;
/// its message stays out, as it may name paths and hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The failed snapshot's id.
    pub snapshot: String,
    pub source: String,
    /// When the backup started, as the failed snapshot's `time`.
    pub time: DateTime<Utc>,
    /// The diagnostic code, e.g. `BP236`.
    pub code: String,
}

/// How a check (a `verify`, a restore drill) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Passed,
    Failed,
}

/// One run of `backplan verify` on one destination, as it recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub result: CheckResult,
    /// How many snapshots it checked, and how many problems it found.
    pub snapshots: usize,
    pub problems: usize,
    /// The fraction of packs read back and decrypted (`--read-data`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data: Option<f64>,
}

/// One restore drill of one source's snapshot, restored from one destination into
/// scratch targets: how it ended, how long each step took, how much it restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub source: String,
    /// The snapshot restored.
    pub snapshot: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub result: CheckResult,
    /// The diagnostic code of what failed, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Each step's wall time, in order (e.g. fetch, restore, check, clean up).
    #[serde(default)]
    pub steps: Vec<DrillStep>,
    pub restored_bytes: u64,
    /// What the checks compared (tables, Redis databases, files) and how many of
    /// them differed from what the snapshot recorded. Absent in records of builds
    /// before `backplan drill`.
    #[serde(default)]
    pub checked: u64,
    #[serde(default)]
    pub differences: u64,
    /// The tables whose row checksums the drill compared too, when the snapshot
    /// recorded them (a postgres source with `checksums: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<u64>,
    /// The objectives the drill was held to, when the policy declares them: the
    /// recovery time (`rto`) against the drill's wall time, the recovery point
    /// (`rpo`) against the snapshot's age when the drill started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_age_seconds: Option<f64>,
    /// The restore time of the source at its full size, extrapolated from this
    /// drill's throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_full_seconds: Option<f64>,
}

/// One step of a drill and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillStep {
    pub name: String,
    pub seconds: f64,
}

impl DrillRecord {
    /// The drill's wall time: its steps' together.
    pub fn seconds(&self) -> f64 {
        self.steps.iter().map(|s| s.seconds).sum()
    }

    /// Whether the drill took longer than the recovery time objective.
    pub fn over_rto(&self) -> bool {
        self.rto_seconds.is_some_and(|rto| self.seconds() > rto)
    }

    /// Whether the snapshot drilled was older than the recovery point objective.
    pub fn over_rpo(&self) -> bool {
        matches!((self.snapshot_age_seconds, self.rpo_seconds), (Some(age), Some(rpo)) if age > rpo)
    }
}

/// Data `verify` found lost on one destination. Pack names are content hashes and
/// snapshot ids are public: this holds no secret. It is also the body of the `lost/`
/// objects' header, which later builds may extend: unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// When `verify` first found what this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<DateTime<Utc>>,
    /// Packs the index lists that are missing or damaged, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<LostPack>,
    /// Snapshots (ids) that need chunks found in no intact pack of the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// One pack found missing or damaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostPack {
    /// The pack's id (the BLAKE3 of its bytes).
    pub id: String,
    pub state: PackState,
    /// What was wrong with it.
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackState {
    /// The index lists it, the storage does not hold it.
    Missing,
    /// Its bytes are not the ones it is named after (a wrong size, a changed byte).
    Damaged,
}

impl Lost {
    pub fn is_empty(&self) -> bool {
        self.packs.is_empty() && self.snapshots.is_empty()
    }

    /// Whether `id` is among the lost packs.
    pub fn has_pack(&self, id: &str) -> bool {
        self.packs.iter().any(|p| p.id == id)
    }

    /// Several records as one: packs by id, snapshots once each, the earliest time;
    /// in a stable order.
    pub fn merged<'a>(records: impl IntoIterator<Item = &'a Lost>) -> Lost {
        let mut packs: BTreeMap<&str, &LostPack> = BTreeMap::new();
        let mut snapshots = std::collections::BTreeSet::new();
        let mut found: Option<DateTime<Utc>> = None;
        for r in records {
            for p in &r.packs {
                packs.entry(&p.id).or_insert(p);
            }
            snapshots.extend(r.snapshots.iter().cloned());
            found = match (found, r.found) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Lost {
            found,
            packs: packs.into_values().cloned().collect(),
            snapshots: snapshots.into_iter().collect(),
        }
    }
}

/// A lock on a repository: backups share, prune is exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// Whether the holding process still runs, as far as the host that read the lock
    /// can tell: set when the lock is read (never stored), `None` when the lock is
    /// another host's or this host cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
}

impl LockInfo {
    /// Whether its holder is known to be gone: the lock is this host's and its
    /// process no longer runs.
    pub fn holder_gone(&self) -> bool {
        matches!(self.holder, Some(Holder::Exited | Holder::PidReused))
    }

    /// Whether nobody holds it any more: it expired, or its holder is gone.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.expires < now || self.holder_gone()
    }
}

/// What became of a lock's holding process, on the host that holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// A process with the lock's pid runs, started before the lock was taken.
    Running,
    /// No process with the lock's pid runs (or only its unreaped remains).
    Exited,
    /// A process with the lock's pid runs, but it started after the lock was taken:
    /// the holder is gone and its pid was given to another program.
    PidReused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// The public part of one snapshot's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// Unique across destinations: a copy keeps its id.
    pub id: String,
    pub source: String,
    /// The `apply` run that took it; the snapshots of one run form a recovery point.
    pub run_id: String,
    /// When the backup started: the point in time it represents.
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    pub status: SnapshotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_stored: Option<u64>,
    /// The bytes the snapshot holds, every entry's size together: for an incremental
    /// `files` snapshot more than it read. In the repository it is the header's
    /// `size`, beside `snapshot` (see `SnapshotHeader`); absent in snapshots of
    /// earlier builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Digest of the source's settings when it was taken (see `ResolvedSource::digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Digest of the whole policy when it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    /// On a destination with S3 Object Lock: when the lock of this snapshot's objects
    /// ends (the snapshot object's write time plus the lock period). Prunes wait
    /// until then. Set per destination as the snapshot is written there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStatus {
    /// All data written and verified; counts as a good snapshot.
    Complete,
    /// The source failed (a dump exited non-zero, was truncated or too small). Kept as
    /// a record; never counts as a success.
    Failed,
}

/// The policy an `apply` ran with, stored for the next plan's diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedPolicy {
    pub digest: String,
    pub applied_at: DateTime<Utc>,
    /// The text, when the repository key was at hand to open it (the storage keeps
    /// it encrypted: it names hosts and paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Inventory {
    /// A digest of what a plan of a policy with `sources` reads to decide its actions,
    /// independent of the order snapshots were listed in: their snapshots, what was
    /// found lost or damaged, which destinations could not be read. A saved plan
    /// records it; apply refuses the plan when it moved. Other hosts sharing the
    /// repository add snapshots of their own sources and record their own policies
    /// all the time: that does not make this host's saved plan stale.
    pub fn digest_for<'a>(&self, sources: impl IntoIterator<Item = &'a String>) -> String {
        let sources: std::collections::BTreeSet<&str> =
            sources.into_iter().map(String::as_str).collect();
        let mut canonical = self.clone();
        for state in canonical.destinations.values_mut() {
            // Locks come and go (a running backup refreshes its own): they do not
            // make a plan stale. Nor do the records of checks and failures, which
            // decide no action (a failed backup's snapshot does), nor drills: one
            // recorded since the plan only makes its due drill run once more.
            state.locks.clear();
            state.failures.clear();
            state.verify = None;
            state.drills.clear();
            state
                .snapshots
                .retain(|s| sources.contains(s.source.as_str()));
            // Every apply of every host records its policy: shown as the policy diff,
            // it decides no action.
            state.applied_policy = None;
            state
                .snapshots
                .sort_by(|a, b| (&a.source, a.time, &a.id).cmp(&(&b.source, b.time, &b.id)));
        }
        let json = serde_json::to_vec(&canonical).unwrap_or_default();
        crate::policy::digest(&json)
    }

    /// The newest applied policy across the destinations that could be read.
    pub fn last_applied_policy(&self) -> Option<&AppliedPolicy> {
        self.destinations
            .values()
            .filter(|d| d.error.is_none())
            .filter_map(|d| d.applied_policy.as_ref())
            .max_by_key(|p| p.applied_at)
    }

    pub fn snapshot_count(&self) -> usize {
        self.destinations.values().map(|d| d.snapshots.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_failures_verifies_and_drills_leave_the_digest_alone() {
        let t: DateTime<Utc> = "2026-11-25T03:00:00Z".parse().expect("a time");
        let sources = ["db".to_string()];
        let mut inv = Inventory::default();
        inv.destinations
            .insert("local".into(), DestinationState::default());
        let before = inv.digest_for(&sources);
        let state = inv.destinations.get_mut("local").expect("local");
        state.failures.push(FailureRecord {
            snapshot: "s".into(),
            source: "db".into(),
            time: t,
            code: "BP227".into(),
        });
        state.verify = Some(VerifyRecord {
            started: t,
            finished: t,
            result: CheckResult::Passed,
            snapshots: 0,
            problems: 0,
            read_data: None,
        });
        state.drills.push(DrillRecord {
            source: "db".into(),
            snapshot: "s".into(),
            started: t,
            finished: t,
            result: CheckResult::Passed,
            code: None,
            steps: Vec::new(),
            restored_bytes: 0,
            checked: 0,
            differences: 0,
            checksums: None,
            rto_seconds: None,
            rpo_seconds: None,
            snapshot_age_seconds: None,
            estimated_full_seconds: None,
        });
        assert_eq!(inv.digest_for(&sources), before);
    }
}
