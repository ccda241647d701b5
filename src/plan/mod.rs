//! The plan engine: `plan(policy, graph, inventory, now, settings)` compares what the
//! policy asks for with what the destinations hold and returns the actions that close
//! the gap, each with its reason. It is pure: no I/O, no clock; the [`Plan`] it returns
//! is what every view renders and what `apply` executes.

pub mod diff;
pub mod due;
pub mod retention;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Code;
use crate::graph::SourceGraph;
use crate::inventory::{
    DestinationState, Holder, Inventory, LockKind, LostPack, SnapshotInfo, SnapshotStatus,
};
use crate::policy::{Policy, ResolvedSource};
pub use diff::PolicyChange;
use retention::Candidate;

/// The version of the plan's JSON shape. Bumped on any incompatible change. Version 2:
/// a backup's `mode` is an object ([`BackupMode`]), not a sentence.
pub const FORMAT_VERSION: u32 = 2;

/// At most this many snapshots are pruned by one plan unless `--max-deletes` says more.
pub const DEFAULT_MAX_DELETES: usize = 10;

/// Settings that shape a plan beyond the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub max_deletes: usize,
    /// The role of the host the plan is for (`--role`).
    #[serde(default, skip_serializing_if = "Role::is_backup")]
    pub role: Role,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_deletes: DEFAULT_MAX_DELETES,
            role: Role::Backup,
        }
    }
}

/// What the host a plan is for may do. An input of the plan, like `now`: the same
/// policy plans differently on a backup host and on the trusted host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Backs up, copies, repairs and prunes; on an append-only destination it only
    /// adds: its prunes are held back, its repairs left to the trusted host.
    #[default]
    Backup,
    /// The trusted host, with credentials that may delete: prunes and repairs on
    /// every destination, append-only ones included; backs nothing up.
    Prune,
}

impl Role {
    pub fn is_backup(&self) -> bool {
        *self == Role::Backup
    }
}

/// What would bring the destinations in line with the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The `now` the plan was made for.
    pub created_at: DateTime<Utc>,
    pub policy: PolicyRef,
    /// Digest of the inventory the plan was made from; apply refuses a stale plan.
    pub inventory_digest: String,
    pub settings: Settings,
    pub destinations: Vec<DestinationSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_change: Option<PolicyChange>,
    pub actions: Vec<Action>,
    pub warnings: Vec<Warning>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub path: String,
    pub digest: String,
    /// The policy file's absolute path when the plan was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The names the policy declared: with `location`, what tells a plan of another
    /// policy from one of this policy, changed.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub destinations: Vec<String>,
}

impl PolicyRef {
    pub fn of(policy: &Policy) -> PolicyRef {
        PolicyRef {
            path: policy.path.display().to_string(),
            digest: policy.digest.clone(),
            location: policy.location.as_ref().map(|l| l.display().to_string()),
            sources: policy.file.sources.keys().cloned().collect(),
            destinations: policy.file.destinations.keys().cloned().collect(),
        }
    }

    /// Whether a plan made from this policy reference was made from another policy
    /// than `policy` (not from `policy` before it changed): another file, or no source
    /// and no destination name in common.
    pub fn is_other_than(&self, policy: &Policy) -> bool {
        if self.digest == policy.digest {
            return false;
        }
        let here = policy.location.as_ref().map(|l| l.display().to_string());
        if let (Some(then), Some(now)) = (&self.location, &here)
            && then != now
        {
            return true;
        }
        let shares_a_name = self
            .sources
            .iter()
            .any(|s| policy.file.sources.contains_key(s))
            || self
                .destinations
                .iter()
                .any(|d| policy.file.destinations.contains_key(d));
        let recorded = !self.sources.is_empty() || !self.destinations.is_empty();
        recorded && !shares_a_name
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationSummary {
    pub name: String,
    pub snapshots: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One step of a plan. The variant is what happens; the reason inside explains it and
/// never changes what apply does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Backup(Backup),
    Configure(Configure),
    Copy(Copy),
    Repair(Repair),
    Prune(Prune),
    Drill(Drill),
}

/// Run a restore drill of a source (`backplan drill`): its schedule
/// (`drill.schedule`) says one is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub source: String,
    pub source_type: String,
    pub reason: DrillReason,
    /// The policy names no `drill.secret_key_file`: apply skips the drill (BP277).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_secret_key: bool,
}

/// Why a drill is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DrillReason {
    NeverDrilled,
    /// The schedule's first tick after the last drill (`last`) has passed.
    Due {
        since: DateTime<Utc>,
        last: DateTime<Utc>,
    },
}

/// A source a drill can restore: it has a good snapshot on one of its destinations.
pub(crate) struct Drillable<'a> {
    pub source: &'a ResolvedSource,
    /// When its newest good snapshot was taken.
    pub newest: DateTime<Utc>,
    /// When its last drill on any of its destinations ended; `None`: never drilled.
    pub last: Option<DateTime<Utc>>,
}

/// The sources a drill can restore, in policy order: what `plan` and the daemon's
/// next due time read drills from.
pub(crate) fn drillable<'a>(policy: &'a Policy, inventory: &Inventory) -> Vec<Drillable<'a>> {
    let mut out = Vec::new();
    for source in policy.sources.values() {
        let states = || {
            inventory
                .destinations
                .iter()
                .filter(|(d, _)| source.destinations.contains(d))
                .map(|(_, s)| s)
        };
        let newest = states()
            .flat_map(|s| &s.snapshots)
            .filter(|x| x.source == source.name && x.status == SnapshotStatus::Complete)
            .map(|x| x.time)
            .max();
        let Some(newest) = newest else {
            continue;
        };
        let last = states()
            .flat_map(|s| &s.drills)
            .filter(|d| d.source == source.name)
            .map(|d| d.finished)
            .max();
        out.push(Drillable {
            source,
            newest,
            last,
        });
    }
    out
}

/// The drills due at `now`: of each source with a good snapshot, when the policy has
/// a drill schedule and the schedule ticked since the source's last drill on any
/// destination.
fn due_drills(policy: &Policy, inventory: &Inventory, now: DateTime<Utc>) -> Vec<Action> {
    let Some(schedule) = &policy.drill_schedule else {
        return Vec::new();
    };
    let needs_secret_key = policy
        .file
        .drill
        .as_ref()
        .is_none_or(|d| d.secret_key_file.is_none());
    let mut out = Vec::new();
    for Drillable { source, last, .. } in drillable(policy, inventory) {
        let reason = match last {
            None => DrillReason::NeverDrilled,
            Some(last) => match schedule.next_after(last) {
                Some(since) if since <= now => DrillReason::Due { since, last },
                _ => continue,
            },
        };
        out.push(Action::Drill(Drill {
            source: source.name.clone(),
            source_type: source.type_name.to_string(),
            reason,
            needs_secret_key,
        }));
    }
    out
}

/// Bring a source's server settings in line with what the policy declares (a Redis
/// server's persistence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configure {
    pub source: String,
    pub source_type: String,
    pub changes: Vec<SettingChange>,
}

/// One setting that differs: as the server has it, and as the policy wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Take a new snapshot of a source and write it to its destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub source: String,
    pub source_type: String,
    pub destinations: Vec<String>,
    /// The graph level: sources of one level may run together.
    pub level: usize,
    /// Sources this one depends on; if one of their backups fails in the same apply,
    /// this backup is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub reason: BackupReason,
    /// Bytes the last good snapshot read, as an estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    /// How the backup will run, where the server decides it (a Redis source's sync or
    /// scan mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BackupMode>,
    /// Destinations (of `destinations`) with `object_lock.extend: true`: once the
    /// snapshot is written there, the packs it uses whose S3 Object Lock ends before
    /// its own are extended to its date.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extend_locks: Vec<String>,
}

/// How a Redis source's backup will run, as its server answered the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMode {
    pub method: BackupMethod,
    /// The policy demands `sync` and the server refuses it: the backup will fail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Keys in all databases, and how many databases hold them.
    pub keys: u64,
    pub databases: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupMethod {
    /// The replication stream: a point-in-time copy.
    Sync,
    /// SCAN + DUMP: not point in time.
    Scan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackupReason {
    NeverBackedUp,
    Due {
        since: DateTime<Utc>,
        schedule: String,
        last: DateTime<Utc>,
    },
    LastFailed {
        failed_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_good: Option<DateTime<Utc>>,
    },
    PolicyChanged {
        last: DateTime<Utc>,
    },
}

/// Copy a snapshot that one destination has and another lacks (a repair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Copy {
    pub source: String,
    pub snapshot: SnapshotRef,
    pub from: String,
    pub to: String,
    /// `to` has `object_lock.extend: true`: once the snapshot is copied there, the
    /// packs it uses there whose lock ends before its own are extended to its date.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extend_locks: bool,
}

/// Bring back, from other destinations, the chunks that one destination lost: packs
/// `verify` found missing or damaged there. Their chunks are copied (still encrypted)
/// into new packs, and the lost packs are retired from its index; nothing is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    pub destination: String,
    /// What `verify` found, and when it first found it.
    pub found: DateTime<Utc>,
    pub packs: Vec<LostPack>,
    /// Snapshots on the destination that need the lost chunks and that another
    /// destination holds; their sources.
    pub snapshots: Vec<SnapshotRef>,
    pub sources: Vec<String>,
    /// Where the chunks are copied from, in the order they are tried. Empty when no
    /// snapshot needs them: the lost packs are only retired.
    pub from: Vec<String>,
}

/// Delete snapshots of one source from one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prune {
    pub source: String,
    pub destination: String,
    /// Oldest first.
    pub snapshots: Vec<SnapshotRef>,
    pub reason: PruneReason,
    /// Held back: the plan prunes more than `max_deletes`, or the destination is
    /// append-only. Apply skips held prunes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Held back because the destination is append-only: a host with `--role prune`
    /// runs it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
    /// Held back because the snapshots' objects are under S3 Object Lock until this
    /// time (the latest `retain_until` of them): the first prune after it deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PruneReason {
    /// No rule keeps them; `rules` are the rules in force.
    OutsideRetention { rules: String },
    /// Failed snapshots older than a good one.
    FailedSuperseded { newest_good: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub id: String,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_stored: Option<u64>,
    /// When the snapshot's S3 Object Lock ends, as recorded in its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
}

impl SnapshotRef {
    fn of(s: &SnapshotInfo) -> SnapshotRef {
        SnapshotRef {
            id: s.id.clone(),
            time: s.time,
            bytes_stored: s.bytes_stored,
            retain_until: s.retain_until,
        }
    }
}

/// Something the reviewer should know that is not an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub message: String,
}

impl Warning {
    fn new(code: Code, source: Option<&str>, message: String) -> Warning {
        Warning {
            code: code.id().to_string(),
            source: source.map(str::to_string),
            message,
        }
    }
}

/// Counts for the closing line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub backups: usize,
    /// Servers whose settings will be changed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changes: usize,
    pub copies: usize,
    /// Destinations whose lost chunks will be copied back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repairs: usize,
    /// Snapshots that will be deleted (a snapshot on two destinations counts twice).
    pub prunes: usize,
    /// Snapshots whose deletion is held back by `max_deletes`.
    pub held_prunes: usize,
    /// Restore drills due.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drills: usize,
}

impl Summary {
    fn of(actions: &[Action]) -> Summary {
        let mut s = Summary::default();
        for action in actions {
            match action {
                Action::Backup(_) => s.backups += 1,
                Action::Configure(_) => s.changes += 1,
                Action::Copy(_) => s.copies += 1,
                Action::Repair(_) => s.repairs += 1,
                Action::Prune(p) if p.held => s.held_prunes += p.snapshots.len(),
                Action::Prune(p) => s.prunes += p.snapshots.len(),
                Action::Drill(_) => s.drills += 1,
            }
        }
        s
    }
}

impl Plan {
    /// Whether the plan would change anything (held prunes count: they are pending).
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// Computes the plan. Pure: everything it needs is in its arguments.
pub fn plan(
    policy: &Policy,
    graph: &SourceGraph,
    inventory: &Inventory,
    now: DateTime<Utc>,
    settings: Settings,
) -> Plan {
    plan_with(policy, graph, inventory, &Probes::default(), now, settings)
}

/// What the sources' servers said when asked before planning (sizes, databases no
/// source covers, problems). Gathered by the command; the plan stays pure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probes {
    pub sources: BTreeMap<String, SourceProbe>,
    /// Warnings about servers rather than one source (e.g. uncovered databases).
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProbe {
    /// What a backup would read now, as the server reports it.
    pub estimated_bytes: Option<u64>,
    pub warnings: Vec<Warning>,
    /// How a backup would run, where the server decides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BackupMode>,
    /// The server's current values of the settings the policy declares.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Warning {
    /// A warning about `source`, for probes.
    pub fn about(code: Code, source: Option<&str>, message: String) -> Warning {
        Warning::new(code, source, message)
    }
}

/// [`plan`] with what the probes found.
pub fn plan_with(
    policy: &Policy,
    graph: &SourceGraph,
    inventory: &Inventory,
    probes: &Probes,
    now: DateTime<Utc>,
    settings: Settings,
) -> Plan {
    let empty = DestinationState::default();
    let mut warnings = Vec::new();
    let mut backups = Vec::new();
    let mut configures = Vec::new();
    let mut copies = Vec::new();
    let mut prunes = Vec::new();

    let destinations: Vec<DestinationSummary> = policy
        .file
        .destinations
        .keys()
        .map(|name| {
            let state = inventory.destinations.get(name).unwrap_or(&empty);
            DestinationSummary {
                name: name.clone(),
                snapshots: state.snapshots.len(),
                error: state.error.clone(),
            }
        })
        .collect();
    for d in &destinations {
        if let Some(error) = &d.error {
            warnings.push(Warning::new(
                Code::DestinationUnreadable,
                None,
                format!("destination {} could not be read: {error}", d.name),
            ));
        }
        let state = inventory.destinations.get(&d.name).unwrap_or(&empty);
        for lock in state.locks.iter().filter(|l| l.is_stale(now)) {
            let kind = match lock.kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            };
            let since = lock.started.format("%Y-%m-%d %H:%M UTC");
            let text = match lock.holder {
                Some(holder @ (Holder::Exited | Holder::PidReused)) => format!(
                    "{} holds a stale {kind} lock of {} pid {} since {since}: that process is gone \
                     from this host{}; apply removes it when it is in the way, `backplan unlock` now",
                    d.name,
                    lock.host,
                    lock.pid,
                    if holder == Holder::PidReused {
                        " (the pid now runs a later program)"
                    } else {
                        ""
                    }
                ),
                _ => format!(
                    "{} holds an expired {kind} lock of {} pid {} since {since}; check, then `backplan unlock`",
                    d.name, lock.host, lock.pid
                ),
            };
            warnings.push(Warning::new(Code::StaleLock, None, text));
        }
        for object in &state.damaged {
            warnings.push(Warning::new(
                Code::CorruptObject,
                None,
                format!("{}: {object}", d.name),
            ));
        }
    }

    for level in graph.levels() {
        for name in &level.sources {
            let Some(source) = policy.sources.get(name) else {
                continue;
            };
            let view = SourceView::new(source, inventory, &empty);
            if let Some(reason) = backup_reason(source, &view, now) {
                backups.push(Action::Backup(Backup {
                    source: name.clone(),
                    source_type: source.type_name.to_string(),
                    destinations: source.destinations.clone(),
                    level: level.level,
                    depends_on: source.depends_on.clone(),
                    reason,
                    estimated_bytes: probes
                        .sources
                        .get(name)
                        .and_then(|p| p.estimated_bytes)
                        .or_else(|| view.last_good().and_then(|s| s.bytes_read)),
                    mode: probes.sources.get(name).and_then(|p| p.mode.clone()),
                    extend_locks: source
                        .destinations
                        .iter()
                        .filter(|d| extends_locks(policy, d))
                        .cloned()
                        .collect(),
                }));
            }
            if let Some(probe) = probes.sources.get(name) {
                let changes: Vec<SettingChange> = source
                    .kind
                    .declared_settings()
                    .into_iter()
                    .filter_map(|(setting, to)| {
                        let from = probe.settings.get(&setting)?;
                        (*from != to).then(|| SettingChange {
                            name: setting,
                            from: from.clone(),
                            to,
                        })
                    })
                    .collect();
                if !changes.is_empty() {
                    configures.push(Action::Configure(Configure {
                        source: name.clone(),
                        source_type: source.type_name.to_string(),
                        changes,
                    }));
                }
            }
            retain(source, &view, &mut copies, &mut prunes, &mut warnings);
        }
    }
    for action in &mut copies {
        if let Action::Copy(c) = action {
            c.extend_locks = extends_locks(policy, &c.to);
        }
    }
    let mut repairs = repairs(policy, inventory, &mut warnings);
    uncovered(policy, inventory, &mut warnings);
    hold_locked(policy, &mut prunes, now, &mut warnings);
    if settings.role == Role::Backup {
        hold_for_trusted_host(policy, &mut prunes, &mut repairs, &mut warnings);
    }
    for probe in probes.sources.values() {
        warnings.extend(probe.warnings.iter().cloned());
    }
    warnings.extend(probes.warnings.iter().cloned());

    let deletes: usize = prunes
        .iter()
        .map(|p| match p {
            Action::Prune(p) if !p.held => p.snapshots.len(),
            _ => 0,
        })
        .sum();
    if deletes > settings.max_deletes {
        for p in prunes.iter_mut() {
            if let Action::Prune(p) = p {
                p.held = true;
            }
        }
        warnings.push(Warning::new(
            Code::MaxDeletesExceeded,
            None,
            format!(
                "{deletes} snapshot deletions held back: more than --max-deletes {}; review them, then run with --max-deletes {deletes}",
                settings.max_deletes
            ),
        ));
    }

    let mut actions = Vec::new();
    if settings.role == Role::Backup {
        actions.extend(configures);
        actions.extend(backups);
    }
    actions.extend(repairs);
    if settings.role == Role::Backup {
        actions.extend(copies);
        actions.extend(due_drills(policy, inventory, now));
    }
    actions.extend(prunes);
    let policy_change = diff::policy_change(policy, inventory, &actions);
    Plan {
        format_version: FORMAT_VERSION,
        created_at: now,
        policy: PolicyRef::of(policy),
        inventory_digest: inventory.digest_for(policy.file.sources.keys()),
        settings,
        destinations,
        policy_change,
        summary: Summary::of(&actions),
        actions,
        warnings,
    }
}

/// One source's snapshots across its readable destinations.
struct SourceView<'a> {
    /// Readable destinations of the source, in policy order, with their snapshots of it.
    readable: Vec<(&'a str, Vec<&'a SnapshotInfo>)>,
    /// Every distinct snapshot (by id), newest first.
    all: Vec<&'a SnapshotInfo>,
    inventory: &'a Inventory,
}

impl<'a> SourceView<'a> {
    fn new(
        source: &'a ResolvedSource,
        inventory: &'a Inventory,
        empty: &'a DestinationState,
    ) -> Self {
        let mut readable = Vec::new();
        let mut seen = BTreeSet::new();
        let mut all = Vec::new();
        for dest in &source.destinations {
            let state = inventory.destinations.get(dest).unwrap_or(empty);
            if state.error.is_some() {
                continue;
            }
            let snaps: Vec<&SnapshotInfo> = state
                .snapshots
                .iter()
                .filter(|s| s.source == source.name)
                .collect();
            for s in &snaps {
                if seen.insert(s.id.as_str()) {
                    all.push(*s);
                }
            }
            readable.push((dest.as_str(), snaps));
        }
        all.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        SourceView {
            readable,
            all,
            inventory,
        }
    }

    /// Whether `verify` found chunks of snapshot `id` lost on `dest`.
    fn lost(&self, dest: &str, id: &str) -> bool {
        lost_on(self.inventory, dest, id)
    }

    fn newest(&self) -> Option<&'a SnapshotInfo> {
        self.all.first().copied()
    }

    fn last_good(&self) -> Option<&'a SnapshotInfo> {
        self.all
            .iter()
            .copied()
            .find(|s| s.status == SnapshotStatus::Complete)
    }
}

fn backup_reason(
    source: &ResolvedSource,
    view: &SourceView,
    now: DateTime<Utc>,
) -> Option<BackupReason> {
    let Some(newest) = view.newest() else {
        return Some(BackupReason::NeverBackedUp);
    };
    let last_good = view.last_good();
    if newest.status == SnapshotStatus::Failed {
        return Some(BackupReason::LastFailed {
            failed_at: newest.time,
            last_good: last_good.map(|s| s.time),
        });
    }
    let last = last_good?;
    if last
        .source_digest
        .as_ref()
        .is_some_and(|d| *d != source.digest)
    {
        return Some(BackupReason::PolicyChanged { last: last.time });
    }
    let since = source.schedule.next_after(last.time)?;
    (since <= now).then(|| BackupReason::Due {
        since,
        schedule: source.schedule.describe(),
        last: last.time,
    })
}

/// Snapshots whose S3 Object Lock has not ended yet (their header records when it
/// does) cannot be deleted: each prune is split into what can go now and a held prune
/// of the rest, dated, with a warning per destination. The date comes from the
/// inventory, so the plan stays pure.
fn hold_locked(
    policy: &Policy,
    prunes: &mut Vec<Action>,
    now: DateTime<Utc>,
    warnings: &mut Vec<Warning>,
) {
    let mut held: BTreeMap<&str, (usize, DateTime<Utc>)> = BTreeMap::new();
    let mut out = Vec::with_capacity(prunes.len());
    for action in prunes.drain(..) {
        let Action::Prune(mut p) = action else {
            out.push(action);
            continue;
        };
        let (locked, free): (Vec<SnapshotRef>, Vec<SnapshotRef>) = std::mem::take(&mut p.snapshots)
            .into_iter()
            .partition(|s| s.retain_until.is_some_and(|t| t > now));
        let Some(until) = locked.iter().filter_map(|s| s.retain_until).max() else {
            p.snapshots = free;
            out.push(Action::Prune(p));
            continue;
        };
        let entry = held
            .entry(policy_name(policy, &p.destination))
            .or_insert((0, until));
        entry.0 += locked.len();
        entry.1 = entry.1.max(until);
        let locked = Prune {
            snapshots: locked,
            held: true,
            locked_until: Some(until),
            ..p.clone()
        };
        if !free.is_empty() {
            p.snapshots = free;
            out.push(Action::Prune(p));
        }
        out.push(Action::Prune(locked));
    }
    *prunes = out;
    for (dest, (snapshots, until)) in held {
        warnings.push(Warning::new(
            Code::ObjectLocked,
            None,
            format!(
                "{dest} holds {snapshots} snapshot{} to prune under S3 Object Lock, the last until {}: their deletion waits until then",
                plural(snapshots),
                until.format("%Y-%m-%d %H:%M UTC"),
            ),
        ));
    }
}

/// On a backup host, what would delete on an append-only destination waits for the
/// trusted host: its prunes are held back (shown, not dropped), its repairs (which
/// replace damaged objects and records) are left out; a warning per destination says
/// so.
fn hold_for_trusted_host(
    policy: &Policy,
    prunes: &mut [Action],
    repairs: &mut Vec<Action>,
    warnings: &mut Vec<Warning>,
) {
    let append_only = |d: &str| {
        policy
            .file
            .destinations
            .get(d)
            .is_some_and(|d| d.append_only())
    };
    let mut held: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for action in prunes.iter_mut() {
        if let Action::Prune(p) = action
            && append_only(&p.destination)
        {
            p.held = true;
            p.append_only = true;
            held.entry(policy_name(policy, &p.destination))
                .or_default()
                .0 += p.snapshots.len();
        }
    }
    repairs.retain(|action| match action {
        Action::Repair(r) if append_only(&r.destination) => {
            held.entry(policy_name(policy, &r.destination))
                .or_default()
                .1 += 1;
            false
        }
        _ => true,
    });
    for (dest, (snapshots, repairs)) in held {
        let mut what = Vec::new();
        if snapshots > 0 {
            what.push(format!(
                "{snapshots} snapshot deletion{} held back",
                plural(snapshots)
            ));
        }
        if repairs > 0 {
            what.push("its repair left out".to_string());
        }
        warnings.push(Warning::new(
            Code::AppendOnly,
            None,
            format!(
                "{dest} is append-only: {}; a host with `--role prune` runs them",
                what.join(", ")
            ),
        ));
    }
}

/// `name` as the policy spells it (borrowed from the policy).
/// Whether the destination `name` has `object_lock.extend: true`: what it is written
/// with gets the locks of the packs it uses extended.
fn extends_locks(policy: &Policy, name: &str) -> bool {
    policy
        .file
        .destinations
        .get(name)
        .and_then(|d| d.object_lock())
        .is_some_and(|l| l.extend)
}

fn policy_name<'a>(policy: &'a Policy, name: &str) -> &'a str {
    policy
        .file
        .destinations
        .get_key_value(name)
        .map_or("", |(k, _)| k.as_str())
}

/// Retention and repair for one source: prunes per destination, copies of kept
/// snapshots that a destination lacks.
fn retain(
    source: &ResolvedSource,
    view: &SourceView,
    copies: &mut Vec<Action>,
    prunes: &mut Vec<Action>,
    warnings: &mut Vec<Warning>,
) {
    let good: Vec<Candidate> = view
        .all
        .iter()
        .filter(|s| s.status == SnapshotStatus::Complete)
        .map(|s| Candidate {
            id: &s.id,
            time: s.time,
        })
        .collect();
    let decision = retention::decide(&good, &source.retention, source.schedule.timezone());

    // Repairs: every kept snapshot on every readable destination.
    for kept in decision.kept.iter().rev() {
        let Some(snapshot) = view.all.iter().find(|s| s.id == kept.id) else {
            continue;
        };
        // A holder that lost chunks of it is no source: its repair comes first.
        let holder = view.readable.iter().find(|(dest, snaps)| {
            snaps.iter().any(|s| s.id == kept.id) && !view.lost(dest, kept.id)
        });
        for (dest, snaps) in &view.readable {
            if !snaps.iter().any(|s| s.id == kept.id)
                && let Some((from, _)) = holder
            {
                copies.push(Action::Copy(Copy {
                    source: source.name.clone(),
                    snapshot: SnapshotRef::of(snapshot),
                    from: from.to_string(),
                    to: dest.to_string(),
                    extend_locks: false,
                }));
            }
        }
    }

    if let Some(newest) = view.newest()
        && newest.status == SnapshotStatus::Failed
    {
        if view.all.len() > 1 {
            warnings.push(Warning::new(
                Code::NewestFailed,
                Some(&source.name),
                format!(
                    "nothing is pruned for {}: its newest snapshot ({}) failed",
                    source.name,
                    newest.time.format("%Y-%m-%d %H:%M UTC")
                ),
            ));
        }
        return;
    }
    let newest_good = view.last_good().map(|s| s.time);
    let rules = retention::describe_rules(&source.retention);
    for (dest, snaps) in &view.readable {
        let mut outside: Vec<SnapshotRef> = Vec::new();
        let mut failed: Vec<SnapshotRef> = Vec::new();
        for s in snaps {
            match s.status {
                SnapshotStatus::Complete if !decision.keeps(&s.id) => {
                    outside.push(SnapshotRef::of(s))
                }
                SnapshotStatus::Failed => failed.push(SnapshotRef::of(s)),
                SnapshotStatus::Complete => {}
            }
        }
        for (mut list, reason) in [
            (
                outside,
                PruneReason::OutsideRetention {
                    rules: rules.clone(),
                },
            ),
            (
                failed,
                PruneReason::FailedSuperseded {
                    newest_good: newest_good.unwrap_or_default(),
                },
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            list.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
            prunes.push(Action::Prune(Prune {
                source: source.name.clone(),
                destination: dest.to_string(),
                snapshots: list,
                reason,
                held: false,
                append_only: false,
                locked_until: None,
            }));
        }
    }
}

/// Whether `verify` found chunks of snapshot `id` lost on `dest`.
fn lost_on(inventory: &Inventory, dest: &str, id: &str) -> bool {
    inventory
        .destinations
        .get(dest)
        .is_some_and(|d| d.lost.snapshots.iter().any(|s| s == id))
}

/// Repairs: for each readable destination where `verify` recorded lost data, the
/// snapshots there that need it, and the other readable destinations that hold them
/// whole. What no other destination holds is a warning: it stays as it is.
fn repairs(policy: &Policy, inventory: &Inventory, warnings: &mut Vec<Warning>) -> Vec<Action> {
    let order: Vec<&String> = policy.file.destinations.keys().collect();
    let readable = |d: &str| {
        inventory
            .destinations
            .get(d)
            .is_some_and(|s| s.error.is_none())
    };
    let mut actions = Vec::new();
    for dest in order.iter().copied().filter(|d| readable(d)) {
        let state = &inventory.destinations[dest];
        let lost = &state.lost;
        if lost.is_empty() {
            continue;
        }
        // Only snapshots still there: a pruned one needs nothing.
        let mut needing: Vec<&SnapshotInfo> = state
            .snapshots
            .iter()
            .filter(|s| s.status == SnapshotStatus::Complete && lost.snapshots.contains(&s.id))
            .collect();
        needing.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let mut from: Vec<&str> = Vec::new();
        let mut repairable = Vec::new();
        let mut unrepairable = Vec::new();
        for s in needing.iter().copied() {
            let holders: Vec<&str> = order
                .iter()
                .map(|d| d.as_str())
                .filter(|d| *d != dest && readable(d) && !lost_on(inventory, d, &s.id))
                .filter(|d| {
                    inventory.destinations[*d]
                        .snapshots
                        .iter()
                        .any(|o| o.id == s.id && o.status == SnapshotStatus::Complete)
                })
                .collect();
            if holders.is_empty() {
                unrepairable.push(s);
            } else {
                repairable.push(s);
                from.extend(holders);
            }
        }
        // In policy order, each once.
        let from: Vec<String> = order
            .iter()
            .filter(|d| from.contains(&d.as_str()))
            .map(|d| d.to_string())
            .collect();
        if !unrepairable.is_empty() {
            let ids: Vec<&str> = unrepairable.iter().map(|s| s.id.as_str()).collect();
            let message = match ids.as_slice() {
                [one] => format!(
                    "{dest}: snapshot {one} needs lost chunks that no other destination holds; it is kept as it is, and nothing is deleted"
                ),
                many => format!(
                    "{dest}: {} snapshots ({}) need lost chunks that no other destination holds; they are kept as they are, and nothing is deleted",
                    many.len(),
                    many.join(", ")
                ),
            };
            warnings.push(Warning::new(Code::Unrepairable, None, message));
        }
        // With nothing that needs them, the lost packs are retired all the same.
        let retire_only = needing.is_empty() && !lost.packs.is_empty();
        if repairable.is_empty() && !retire_only {
            continue;
        }
        let sources: BTreeSet<String> = repairable.iter().map(|s| s.source.clone()).collect();
        actions.push(Action::Repair(Repair {
            destination: dest.to_string(),
            found: lost.found.unwrap_or_default(),
            packs: lost.packs.clone(),
            snapshots: repairable.into_iter().map(SnapshotRef::of).collect(),
            sources: sources.into_iter().collect(),
            from,
        }));
    }
    actions
}

/// Snapshots that no source of the policy covers: kept, and said so.
fn uncovered(policy: &Policy, inventory: &Inventory, warnings: &mut Vec<Warning>) {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (dest, state) in &inventory.destinations {
        for s in &state.snapshots {
            let covered = policy
                .sources
                .get(&s.source)
                .is_some_and(|src| src.destinations.iter().any(|d| d == dest));
            if !covered {
                *counts
                    .entry((s.source.as_str(), dest.as_str()))
                    .or_default() += 1;
            }
        }
    }
    for ((source, dest), n) in counts {
        let why = if policy.sources.contains_key(source) {
            format!("{source} no longer writes to {dest}")
        } else {
            format!("the policy has no source {source}")
        };
        warnings.push(Warning::new(
            Code::UncoveredSnapshots,
            Some(source),
            format!(
                "{dest} holds {n} snapshot{} of {source} but {why}; they are kept",
                plural(n)
            ),
        ));
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
