//! `backplan status`: the health of every source on every destination, computed from
//! the policy and the inventory alone (no local state), for a given `now`. Pure: no
//! I/O, no clock. The [`StatusReport`] it returns is what the human view, the JSON
//! output and the Prometheus metrics render.
//!
//! Per source and destination: the last good snapshot and its age against the
//! schedule (ok, late, missing), the last attempt and the last failure with its code,
//! the size of the last good snapshot against the one before, the destination's last
//! `verify` and the source's last restore drill there. Each problem is a [`Finding`]
//! with a code and a severity; the worst severity is the report's [`Health`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Code;
use crate::inventory::{
    CheckResult, DestinationState, DrillRecord, Inventory, LockInfo, SnapshotInfo, SnapshotStatus,
    VerifyRecord,
};
use crate::policy::schedule::Schedule;
use crate::policy::{Policy, ResolvedSource};

/// The version of the report's JSON shape. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// How healthy something is; ordered from good to bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

/// The health of every source on every destination the policy writes it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub format_version: u32,
    /// The `now` the report was made for.
    pub now: DateTime<Utc>,
    /// The worst severity of the findings; `ok` without any.
    pub health: Health,
    /// Per source and destination, in policy order.
    pub sources: Vec<SourceStatus>,
    pub destinations: Vec<DestinationStatus>,
    pub findings: Vec<Finding>,
}

/// One destination: whether it could be read, its locks, its last `verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub snapshots: usize,
    /// Who holds locks on it.
    pub locks: Vec<LockStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRecord>,
}

/// A lock and whether nobody holds it any more (it expired, or its process is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    #[serde(flatten)]
    pub lock: LockInfo,
    pub stale: bool,
}

/// One source on one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub destination: String,
    /// The schedule, e.g. `@daily UTC`.
    pub schedule: String,
    /// The schedule's interval around `now` (between the tick before and the one
    /// after); `None` for a schedule with no tick left.
    pub expected_interval_seconds: Option<i64>,
    pub freshness: Freshness,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<SnapshotSummary>,
    /// Seconds from the last good snapshot to `now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// When the next backup is due: the schedule's first tick after the last good
    /// snapshot (what `plan` compares `now` with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    /// The newest snapshot, good or failed: the last backup that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Attempt>,
    /// The newest failed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Attempt>,
    /// How the last backup ended: failed, succeeded with a warning (its size
    /// changed beyond the factor), or ok; `None` before the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeChange>,
    /// The destination's last `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRecord>,
    /// The source's last restore drill from this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRecord>,
    /// The drill schedule's interval around `now` (`drill.schedule`); `None` without
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_interval_seconds: Option<i64>,
    /// The worst severity of the findings about it.
    pub health: Health,
}

/// How old the last good snapshot is against the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Not due yet, or due for less than half the schedule's interval.
    Ok,
    /// Due for more than half the schedule's interval: about one and a half
    /// intervals without a good snapshot.
    Late,
    /// No good snapshot at all.
    Missing,
    /// The destination could not be read.
    Unknown,
}

/// How a source's last backup ended, as the metric `backplan_last_status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Failed,
    Warning,
    Ok,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub id: String,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
}

/// One backup that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub status: SnapshotStatus,
    /// Why it failed (the diagnostic code), when apply could record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The last good snapshot's size (the bytes it holds) against the good one before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeChange {
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_bytes: Option<u64>,
    /// `bytes / previous_bytes`, when both are known and the previous is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The policy's `size_change_factor` for the source.
    pub factor: f64,
    /// Whether the change is beyond the factor, either way.
    pub anomaly: bool,
}

/// Something wrong, with its code and severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub code: String,
    pub severity: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub destination: String,
    #[serde(flatten)]
    pub kind: FindingKind,
}

/// What a [`Finding`] is about; the renderers word it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// The source has no good snapshot on the destination.
    Missing,
    /// The last good snapshot is older than the schedule allows.
    Late {
        last: DateTime<Utc>,
        due: DateTime<Utc>,
    },
    /// The last backup failed.
    LastFailed {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_code: Option<String>,
    },
    /// The last good snapshot's size changed beyond the factor.
    SizeChanged {
        bytes: u64,
        previous_bytes: u64,
        factor: f64,
    },
    /// The destination's last `verify` found problems.
    VerifyFailed { at: DateTime<Utc>, problems: usize },
    /// The source's last restore drill from the destination failed.
    DrillFailed {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_code: Option<String>,
    },
    /// The source's last restore drill took longer than its recovery time
    /// objective.
    DrillOverRto {
        at: DateTime<Utc>,
        seconds: f64,
        rto_seconds: f64,
    },
    /// The snapshot the source's last restore drill found newest was older than the
    /// recovery point objective.
    DrillOverRpo {
        at: DateTime<Utc>,
        age_seconds: f64,
        rpo_seconds: f64,
    },
    /// The destination could not be read.
    Unreadable { error: String },
    /// A lock that nobody holds any more.
    StaleLock {
        host: String,
        pid: u32,
        since: DateTime<Utc>,
    },
    /// Objects that could not be read.
    Damaged { objects: usize },
}

impl FindingKind {
    fn code_and_severity(&self) -> (Code, Health) {
        match self {
            FindingKind::Missing => (Code::BackupMissing, Health::Critical),
            FindingKind::Late { .. } => (Code::BackupLate, Health::Warning),
            FindingKind::LastFailed { .. } => (Code::BackupFailed, Health::Critical),
            FindingKind::SizeChanged { .. } => (Code::SizeAnomaly, Health::Warning),
            FindingKind::VerifyFailed { .. } | FindingKind::DrillFailed { .. } => {
                (Code::CheckFailed, Health::Critical)
            }
            FindingKind::DrillOverRto { .. } => (Code::DrillOverRto, Health::Warning),
            FindingKind::DrillOverRpo { .. } => (Code::DrillOverRpo, Health::Warning),
            FindingKind::Unreadable { .. } => (Code::DestinationUnreadable, Health::Critical),
            FindingKind::StaleLock { .. } => (Code::StaleLock, Health::Warning),
            FindingKind::Damaged { .. } => (Code::CorruptObject, Health::Warning),
        }
    }
}

impl Finding {
    fn new(source: Option<&str>, destination: &str, kind: FindingKind) -> Finding {
        let (code, severity) = kind.code_and_severity();
        Finding {
            code: code.id().to_string(),
            severity,
            source: source.map(str::to_string),
            destination: destination.to_string(),
            kind,
        }
    }
}

/// Computes the status of every source of `policy` on each of its destinations.
pub fn status(policy: &Policy, inventory: &Inventory, now: DateTime<Utc>) -> StatusReport {
    let empty = DestinationState::default();
    let mut findings = Vec::new();
    let mut destinations = Vec::new();
    for name in policy.file.destinations.keys() {
        let state = inventory.destinations.get(name).unwrap_or(&empty);
        if let Some(error) = &state.error {
            findings.push(Finding::new(
                None,
                name,
                FindingKind::Unreadable {
                    error: error.clone(),
                },
            ));
        }
        let locks: Vec<LockStatus> = state
            .locks
            .iter()
            .map(|lock| LockStatus {
                lock: lock.clone(),
                stale: lock.is_stale(now),
            })
            .collect();
        for l in locks.iter().filter(|l| l.stale) {
            findings.push(Finding::new(
                None,
                name,
                FindingKind::StaleLock {
                    host: l.lock.host.clone(),
                    pid: l.lock.pid,
                    since: l.lock.started,
                },
            ));
        }
        if !state.damaged.is_empty() {
            findings.push(Finding::new(
                None,
                name,
                FindingKind::Damaged {
                    objects: state.damaged.len(),
                },
            ));
        }
        if let Some(v) = state
            .verify
            .as_ref()
            .filter(|v| v.result == CheckResult::Failed)
        {
            findings.push(Finding::new(
                None,
                name,
                FindingKind::VerifyFailed {
                    at: v.finished,
                    problems: v.problems,
                },
            ));
        }
        destinations.push(DestinationStatus {
            name: name.clone(),
            error: state.error.clone(),
            snapshots: state.snapshots.len(),
            locks,
            verify: state.verify.clone(),
        });
    }

    let mut sources = Vec::new();
    for source in policy.sources.values() {
        let factor = policy.file.size_change_factor_for(&source.name);
        let drill_interval = policy
            .drill_schedule
            .as_ref()
            .and_then(|s| interval_around(s, now));
        for dest in &source.destinations {
            let state = inventory.destinations.get(dest).unwrap_or(&empty);
            let (mut status, found) = source_status(source, dest, state, factor, now);
            status.drill_interval_seconds = drill_interval;
            // The destination's own findings (unreadable, verify failed) count for
            // each of its sources.
            let of_destination = findings
                .iter()
                .filter(|f| f.source.is_none() && f.destination == *dest)
                .map(|f| f.severity);
            status.health = found
                .iter()
                .map(|f| f.severity)
                .chain(of_destination)
                .max()
                .unwrap_or(Health::Ok);
            findings.extend(found);
            sources.push(status);
        }
    }
    StatusReport {
        format_version: FORMAT_VERSION,
        now,
        health: findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Health::Ok),
        sources,
        destinations,
        findings,
    }
}

/// One source on one destination, and what is wrong with it.
fn source_status(
    source: &ResolvedSource,
    dest: &str,
    state: &DestinationState,
    factor: f64,
    now: DateTime<Utc>,
) -> (SourceStatus, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut snaps: Vec<&SnapshotInfo> = state
        .snapshots
        .iter()
        .filter(|s| s.source == source.name)
        .collect();
    // Newest first.
    snaps.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut good = snaps
        .iter()
        .copied()
        .filter(|s| s.status == SnapshotStatus::Complete);
    let last_good = good.next();
    let before = good.next();
    let interval = interval_around(&source.schedule, now);

    let attempt = |s: &SnapshotInfo| Attempt {
        snapshot: s.id.clone(),
        time: s.time,
        status: s.status,
        code: state
            .failures
            .iter()
            .find(|f| f.snapshot == s.id)
            .map(|f| f.code.clone()),
    };
    let last_attempt = snaps.first().map(|s| attempt(s));
    let last_failure = snaps
        .iter()
        .find(|s| s.status == SnapshotStatus::Failed)
        .map(|s| attempt(s));

    let due = last_good.and_then(|s| source.schedule.next_after(s.time));
    let freshness = if state.error.is_some() {
        Freshness::Unknown
    } else {
        match (last_good, due) {
            (None, _) => Freshness::Missing,
            (Some(_), None) => Freshness::Ok,
            (Some(_), Some(due)) => {
                let grace = chrono::Duration::seconds(interval.unwrap_or(0) / 2);
                if now >= due + grace {
                    Freshness::Late
                } else {
                    Freshness::Ok
                }
            }
        }
    };
    match (freshness, last_good, due) {
        (Freshness::Missing, _, _) => {
            findings.push(Finding::new(Some(&source.name), dest, FindingKind::Missing))
        }
        (Freshness::Late, Some(last), Some(due)) => findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::Late {
                last: last.time,
                due,
            },
        )),
        _ => {}
    }
    if let Some(a) = last_attempt
        .as_ref()
        .filter(|a| a.status == SnapshotStatus::Failed)
    {
        findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::LastFailed {
                at: a.time,
                failure_code: a.code.clone(),
            },
        ));
    }

    // What a snapshot holds; for snapshots of earlier builds, which do not record
    // it, what they read (the same for a database, less for incremental files):
    // only like is compared with like.
    let size = last_good.and_then(|last| {
        let bytes = last.size.or(last.bytes_read)?;
        let previous_bytes = before.and_then(|b| match last.size {
            Some(_) => b.size,
            None => b.bytes_read,
        });
        Some((bytes, previous_bytes))
    });
    let size = size.map(|(bytes, previous_bytes)| {
        let ratio = previous_bytes
            .filter(|p| *p > 0)
            .map(|p| bytes as f64 / p as f64);
        SizeChange {
            bytes,
            previous_bytes,
            ratio,
            factor,
            anomaly: ratio.is_some_and(|r| r > factor || r * factor < 1.0),
        }
    });
    if let Some(s) = size.as_ref().filter(|s| s.anomaly) {
        findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::SizeChanged {
                bytes: s.bytes,
                previous_bytes: s.previous_bytes.unwrap_or_default(),
                factor,
            },
        ));
    }

    let drill = state
        .drills
        .iter()
        .filter(|d| d.source == source.name)
        .max_by_key(|d| d.finished)
        .cloned();
    if let Some(d) = drill.as_ref().filter(|d| d.result == CheckResult::Failed) {
        findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::DrillFailed {
                at: d.finished,
                failure_code: d.code.clone(),
            },
        ));
    }
    if let Some(d) = drill.as_ref().filter(|d| d.over_rto()) {
        findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::DrillOverRto {
                at: d.finished,
                seconds: d.seconds(),
                rto_seconds: d.rto_seconds.unwrap_or_default(),
            },
        ));
    }
    if let Some(d) = drill.as_ref().filter(|d| d.over_rpo()) {
        findings.push(Finding::new(
            Some(&source.name),
            dest,
            FindingKind::DrillOverRpo {
                at: d.finished,
                age_seconds: d.snapshot_age_seconds.unwrap_or_default(),
                rpo_seconds: d.rpo_seconds.unwrap_or_default(),
            },
        ));
    }

    let last_run = last_attempt.as_ref().map(|a| match a.status {
        SnapshotStatus::Failed => RunStatus::Failed,
        SnapshotStatus::Complete if size.as_ref().is_some_and(|s| s.anomaly) => RunStatus::Warning,
        SnapshotStatus::Complete => RunStatus::Ok,
    });
    let status = SourceStatus {
        source: source.name.clone(),
        destination: dest.to_string(),
        schedule: source.schedule.describe(),
        expected_interval_seconds: interval,
        freshness,
        last_good: last_good.map(|s| SnapshotSummary {
            id: s.id.clone(),
            time: s.time,
            bytes_read: s.bytes_read,
        }),
        age_seconds: last_good.map(|s| (now - s.time).num_seconds()),
        due,
        last_attempt,
        last_failure,
        last_run,
        size,
        verify: state.verify.clone(),
        drill,
        drill_interval_seconds: None,
        health: Health::Ok,
    };
    (status, findings)
}

/// A schedule's interval around `now`: from the tick at or before it to the one
/// after (from the next tick to the one after that, before the first tick).
fn interval_around(schedule: &Schedule, now: DateTime<Utc>) -> Option<i64> {
    let next = schedule.next_after(now)?;
    let previous = match schedule.last_at_or_before(now) {
        Some(t) => t,
        None => return Some((schedule.next_after(next)? - next).num_seconds()),
    };
    Some((next - previous).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{FailureRecord, Holder, LockKind};

    const POLICY: &str = r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
destinations:
  local:
    type: memory
  offsite:
    type: memory
sources:
  db:
    type: config
    paths: [a.env]
  media:
    type: config
    paths: [b.env]
    destinations: [local]
    size_change_factor: 1.5
"#;

    fn policy() -> Policy {
        let path = std::path::Path::new("policy.yaml");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        crate::policy::load_str(POLICY, path, &dir)
            .expect("a valid policy")
            .policy
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    fn snap(source: &str, time: &str, status: SnapshotStatus, bytes: u64) -> SnapshotInfo {
        SnapshotInfo {
            id: format!("{source}-{time}"),
            source: source.to_string(),
            run_id: format!("run-{time}"),
            time: t(time),
            finished: None,
            status,
            bytes_read: Some(bytes),
            bytes_stored: None,
            size: None,
            source_digest: None,
            policy_digest: None,
            retain_until: None,
        }
    }

    fn inventory(local: Vec<SnapshotInfo>, offsite: Vec<SnapshotInfo>) -> Inventory {
        let mut inv = Inventory::default();
        for (name, snapshots) in [("local", local), ("offsite", offsite)] {
            inv.destinations.insert(
                name.to_string(),
                DestinationState {
                    snapshots,
                    ..DestinationState::default()
                },
            );
        }
        inv
    }

    fn entry<'a>(r: &'a StatusReport, source: &str, dest: &str) -> &'a SourceStatus {
        r.sources
            .iter()
            .find(|s| s.source == source && s.destination == dest)
            .expect("an entry")
    }

    fn kinds(r: &StatusReport) -> Vec<(String, Option<String>, String)> {
        r.findings
            .iter()
            .map(|f| (f.code.clone(), f.source.clone(), f.destination.clone()))
            .collect()
    }

    #[test]
    fn a_snapshot_taken_at_the_last_tick_is_ok_and_due_at_the_next() {
        let good = |s| snap(s, "2026-11-25T03:00:00Z", SnapshotStatus::Complete, 100);
        let inv = inventory(vec![good("db"), good("media")], vec![good("db")]);
        let r = status(&policy(), &inv, t("2026-11-25T12:00:00Z"));
        assert_eq!(r.health, Health::Ok, "{:?}", r.findings);
        let db = entry(&r, "db", "offsite");
        assert_eq!(db.freshness, Freshness::Ok);
        assert_eq!(db.due, Some(t("2026-11-26T03:00:00Z")));
        assert_eq!(db.expected_interval_seconds, Some(86_400));
        assert_eq!(db.age_seconds, Some(9 * 3600));
        assert_eq!(db.last_run, Some(RunStatus::Ok));
        assert_eq!(r.sources.len(), 3, "db on both destinations, media on one");
    }

    #[test]
    fn a_due_backup_turns_late_half_an_interval_after_it_was_due() {
        let inv = inventory(
            vec![snap(
                "db",
                "2026-11-24T03:00:00Z",
                SnapshotStatus::Complete,
                1,
            )],
            vec![],
        );
        let p = policy();
        // Due at 2026-11-25 03:00; late from 15:00 (half a day later).
        let before = status(&p, &inv, t("2026-11-25T14:59:00Z"));
        assert_eq!(entry(&before, "db", "local").freshness, Freshness::Ok);
        let after = status(&p, &inv, t("2026-11-25T15:00:00Z"));
        let db = entry(&after, "db", "local");
        assert_eq!(db.freshness, Freshness::Late);
        assert_eq!(db.health, Health::Warning);
        assert!(after.findings.iter().any(|f| f.kind
            == FindingKind::Late {
                last: t("2026-11-24T03:00:00Z"),
                due: t("2026-11-25T03:00:00Z"),
            }
            && f.code == Code::BackupLate.id()));
        // media and db on offsite have nothing at all: critical.
        assert_eq!(entry(&after, "db", "offsite").freshness, Freshness::Missing);
        assert_eq!(after.health, Health::Critical);
    }

    #[test]
    fn a_failed_last_backup_shows_its_recorded_code_and_is_critical() {
        let failed = snap("db", "2026-11-25T03:00:00Z", SnapshotStatus::Failed, 0);
        let mut inv = inventory(
            vec![
                snap("db", "2026-11-24T03:00:00Z", SnapshotStatus::Complete, 1),
                failed.clone(),
            ],
            vec![],
        );
        inv.destinations
            .get_mut("local")
            .expect("local")
            .failures
            .push(FailureRecord {
                snapshot: failed.id.clone(),
                source: "db".into(),
                time: failed.time,
                code: "BP227".into(),
            });
        let r = status(&policy(), &inv, t("2026-11-25T04:00:00Z"));
        let db = entry(&r, "db", "local");
        assert_eq!(db.last_run, Some(RunStatus::Failed));
        assert_eq!(db.health, Health::Critical);
        assert_eq!(
            db.freshness,
            Freshness::Ok,
            "the last good one is not late yet"
        );
        let failure = db.last_failure.as_ref().expect("a failure");
        assert_eq!(failure.code.as_deref(), Some("BP227"));
        assert_eq!(db.last_attempt.as_ref(), Some(failure));
        assert_eq!(
            db.last_good.as_ref().map(|s| s.time),
            Some(t("2026-11-24T03:00:00Z"))
        );
        assert!(r.findings.iter().any(|f| f.kind
            == FindingKind::LastFailed {
                at: failed.time,
                failure_code: Some("BP227".into())
            }));
    }

    #[test]
    fn a_size_change_beyond_the_factor_either_way_is_a_warning() {
        let p = policy();
        let now = t("2026-11-25T04:00:00Z");
        let pair = |source: &str, before: u64, after: u64| {
            vec![
                snap(
                    source,
                    "2026-11-24T03:00:00Z",
                    SnapshotStatus::Complete,
                    before,
                ),
                snap(
                    source,
                    "2026-11-25T03:00:00Z",
                    SnapshotStatus::Complete,
                    after,
                ),
            ]
        };
        // db: the default factor 2; media: 1.5.
        let cases = [
            ("db", 100, 199, false),
            ("db", 100, 201, true),
            ("db", 100, 50, false),
            ("db", 100, 49, true),
            ("media", 100, 149, false),
            ("media", 100, 151, true),
            ("media", 150, 99, true),
        ];
        for (source, before, after, anomaly) in cases {
            let inv = inventory(pair(source, before, after), vec![]);
            let r = status(&p, &inv, now);
            let e = entry(&r, source, "local");
            let size = e.size.as_ref().expect("a size");
            assert_eq!(size.anomaly, anomaly, "{source} {before} → {after}");
            assert_eq!(size.previous_bytes, Some(before));
            assert_eq!(
                e.last_run,
                Some(if anomaly {
                    RunStatus::Warning
                } else {
                    RunStatus::Ok
                })
            );
            let flagged = r.findings.iter().any(|f| f.code == Code::SizeAnomaly.id());
            assert_eq!(flagged, anomaly, "{source} {before} → {after}");
        }
    }

    #[test]
    fn sizes_compare_like_with_like_across_snapshots_of_earlier_builds() {
        let sized = |time, bytes_read, size| SnapshotInfo {
            size,
            ..snap("db", time, SnapshotStatus::Complete, bytes_read)
        };
        let now = t("2026-11-25T04:00:00Z");
        let p = policy();
        // The previous snapshot records no size (an earlier build): what it read is
        // not compared with what the new one holds.
        let inv = inventory(
            vec![
                sized("2026-11-24T03:00:00Z", 1, None),
                sized("2026-11-25T03:00:00Z", 1, Some(1000)),
            ],
            vec![],
        );
        let r = status(&p, &inv, now);
        let size = entry(&r, "db", "local").size.clone().expect("a size");
        assert_eq!(
            (size.bytes, size.previous_bytes, size.anomaly),
            (1000, None, false)
        );
        // Both without a size: what they read.
        let inv = inventory(
            vec![
                sized("2026-11-24T03:00:00Z", 1000, None),
                sized("2026-11-25T03:00:00Z", 10, None),
            ],
            vec![],
        );
        let r = status(&p, &inv, now);
        let size = entry(&r, "db", "local").size.clone().expect("a size");
        assert_eq!(
            (size.bytes, size.previous_bytes, size.anomaly),
            (10, Some(1000), true)
        );
    }

    #[test]
    fn failed_checks_unreadable_destinations_and_stale_locks_are_findings() {
        let now = t("2026-11-25T04:00:00Z");
        let good = |s| snap(s, "2026-11-25T03:00:00Z", SnapshotStatus::Complete, 1);
        let mut inv = inventory(vec![good("db"), good("media")], vec![]);
        let local = inv.destinations.get_mut("local").expect("local");
        local.verify = Some(VerifyRecord {
            started: t("2026-11-25T03:30:00Z"),
            finished: t("2026-11-25T03:40:00Z"),
            result: CheckResult::Failed,
            snapshots: 2,
            problems: 3,
            read_data: None,
        });
        local.drills.push(DrillRecord {
            source: "media".into(),
            snapshot: "media-x".into(),
            started: t("2026-11-25T03:41:00Z"),
            finished: t("2026-11-25T03:50:00Z"),
            result: CheckResult::Passed,
            code: None,
            steps: vec![],
            restored_bytes: 1,
            checked: 0,
            differences: 0,
            checksums: None,
            rto_seconds: None,
            rpo_seconds: None,
            snapshot_age_seconds: None,
            estimated_full_seconds: None,
        });
        local.locks.push(LockInfo {
            kind: LockKind::Shared,
            host: "h".into(),
            pid: 7,
            started: t("2026-11-25T01:00:00Z"),
            expires: t("2026-11-25T02:00:00Z"),
            holder: Some(Holder::Exited),
        });
        inv.destinations.get_mut("offsite").expect("offsite").error = Some("refused".into());
        let r = status(&policy(), &inv, now);
        let expected = [
            (Code::StaleLock, "local"),
            (Code::CheckFailed, "local"),
            (Code::DestinationUnreadable, "offsite"),
        ]
        .map(|(c, d)| (c.id().to_string(), None, d.to_string()));
        assert_eq!(kinds(&r), expected);
        assert!(r.destinations[0].locks[0].stale);
        // The destination's failed verify makes its sources critical.
        assert_eq!(entry(&r, "media", "local").health, Health::Critical);
        assert_eq!(
            entry(&r, "media", "local").drill.as_ref().map(|d| d.result),
            Some(CheckResult::Passed)
        );
        assert_eq!(entry(&r, "db", "offsite").freshness, Freshness::Unknown);
        assert_eq!(r.health, Health::Critical);
    }
}
