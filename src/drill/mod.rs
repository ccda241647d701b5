//! Restore drills (`backplan drill`): the newest good snapshot of each source
//! restored into a scratch target (its kind's [`Seam::scratch`]) through the restore
//! executor, checked against what the snapshot recorded at backup, the scratch
//! target removed, and the result with each step's wall time recorded in the
//! destinations (`drills/`, public: no key needed to read it), where `status`,
//! metrics and `plan` find it.
//!
//! The drill is held to the policy's `objectives`: taking longer than the `rto`, or
//! finding the newest snapshot older than the `rpo`, is a [`Finding`]. The restore's
//! throughput, scaled to the source's size as it is now (its kind's
//! [`Seam::current_size`]), estimates how long a full restore would take: an
//! extrapolation, and said to be one. A source that cannot be read now (its server
//! down, its folder gone) leaves the drill as it is, without an estimate, and says
//! why ([`NoEstimate`]).
//!
//! [`Seam::scratch`]: crate::sources::kind::Seam::scratch
//! [`Seam::current_size`]: crate::sources::kind::Seam::current_size

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::SecretKeys;
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::graph::SourceGraph;
use crate::inventory::{CheckResult, DrillRecord, DrillStep, Inventory};
use crate::policy::Policy;
use crate::repo::lock;
use crate::repo::store::Repo;
use crate::restore::execute::{self, Restore, RestoreReport};
use crate::restore::{RestorePlan, Selection, restore_plan};
use crate::sources::kind::scratch::{CheckUnit, Checks, Scratch};
use crate::sources::kind::{CurrentSize, Kind, Restored};

/// The version of `drill --format json`.
pub const FORMAT_VERSION: u32 = 1;

/// Every source's drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    pub format_version: u32,
    pub drills: Vec<SourceDrill>,
    /// Sources with no good snapshot to drill.
    pub missing: Vec<String>,
}

impl DrillReport {
    /// Drills that failed (a check differed, or a step failed).
    pub fn failed(&self) -> usize {
        self.drills
            .iter()
            .filter(|d| d.result == CheckResult::Failed)
            .count()
    }

    /// Objectives missed, by any drill.
    pub fn findings(&self) -> usize {
        self.drills.iter().map(|d| d.findings.len()).sum()
    }
}

/// One source's drill: what was restored from where into what, each step's wall
/// time, what the checks found, and how it measured against the objectives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceDrill {
    pub source: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub snapshot: String,
    pub snapshot_time: DateTime<Utc>,
    /// The destination the restore read from (empty when it got that far).
    pub from: String,
    /// The scratch target (no password).
    pub scratch: String,
    pub started: DateTime<Utc>,
    pub steps: Vec<DrillStep>,
    /// The snapshot's size: the bytes restored.
    pub restored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    pub result: CheckResult,
    /// Why the drill failed: a step's failure, or the differences' code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The scratch target could not be removed (it is then left behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<Failure>,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// Why a drill that passed has no estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_estimate: Option<NoEstimate>,
    /// The destinations the drill was recorded in, and those that refused.
    pub recorded: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_recorded: BTreeMap<String, Failure>,
    /// Redis: the keys the restore replayed (those that expired on the way
    /// counted in): the snapshot's, which the estimate scales from.
    #[serde(skip)]
    snapshot_keys: Option<u64>,
}

impl SourceDrill {
    /// The drill's wall time, all steps.
    pub fn seconds(&self) -> f64 {
        self.steps.iter().map(|s| s.seconds).sum()
    }
}

/// An objective the drill missed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// The drill took longer than the recovery time objective.
    OverRto { seconds: f64, rto_seconds: f64 },
    /// The snapshot was older than the recovery point objective.
    OverRpo { age_seconds: f64, rpo_seconds: f64 },
}

impl Finding {
    pub fn code(&self) -> Code {
        match self {
            Finding::OverRto { .. } => Code::DrillOverRto,
            Finding::OverRpo { .. } => Code::DrillOverRpo,
        }
    }
}

/// The full restore's time, extrapolated from the drill's throughput to the
/// source's size now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Bytes restored per second of the restore step.
    pub bytes_per_second: f64,
    /// The source's size now, in the restore's measure: the databases' or files'
    /// bytes, or for Redis the snapshot's bytes scaled by the keys' growth.
    pub full_bytes: u64,
    /// What the source's size now was read as.
    pub full_from: CurrentSize,
    /// Redis: the snapshot's keys, which the keys now are set against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_keys: Option<u64>,
    pub full_seconds: f64,
}

/// Why a drill that passed has no [`Estimate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoEstimate {
    /// The restore step measured no bytes, or no time.
    NotMeasured,
    /// The source's size now could not be read: its server did not answer, its
    /// folder is missing. The drill stands; only the estimate is missing.
    SourceUnreadable { error: Failure },
    /// Redis: the snapshot held no keys to scale from.
    NoSnapshotKeys,
}

/// The restore's throughput (`restored_bytes` in `restore_seconds`) scaled to the
/// source's size `now`; Redis keys against the `snapshot_keys` the restore replayed.
pub fn extrapolate(
    restored_bytes: u64,
    restore_seconds: f64,
    now: CurrentSize,
    snapshot_keys: Option<u64>,
) -> Result<Estimate, NoEstimate> {
    if restore_seconds <= 0.0 || restored_bytes == 0 {
        return Err(NoEstimate::NotMeasured);
    }
    let bytes_per_second = restored_bytes as f64 / restore_seconds;
    let (full_bytes, snapshot_keys) = match now {
        CurrentSize::Databases { bytes } | CurrentSize::Files { bytes, .. } => (bytes, None),
        CurrentSize::Keys { keys } => match snapshot_keys.filter(|k| *k > 0) {
            Some(then) => (
                (restored_bytes as f64 * keys as f64 / then as f64).round() as u64,
                Some(then),
            ),
            None => return Err(NoEstimate::NoSnapshotKeys),
        },
    };
    Ok(Estimate {
        bytes_per_second,
        full_bytes,
        full_from: now,
        snapshot_keys,
        full_seconds: full_bytes as f64 / bytes_per_second,
    })
}

/// What a drill needs besides the sources to drill.
#[derive(Debug)]
pub struct Drill<'a> {
    pub policy: &'a Policy,
    pub inventory: &'a Inventory,
    /// Every destination of the policy, opened.
    pub repos: &'a BTreeMap<String, Repo>,
    pub host: Option<&'a RepoKey>,
    pub secret: Arc<SecretKeys>,
}

/// Step names, in order.
const PREPARE: &str = "prepare";
const RESTORE: &str = "restore";
const CHECK: &str = "check";
const CLEAN_UP: &str = "clean_up";

/// Drills each source of `only` (every source when empty), one after the other,
/// and records each drill in the destinations. A step that fails fails that
/// source's drill, not the others'.
pub async fn drill(d: &Drill<'_>, only: &[String]) -> Result<DrillReport, Failure> {
    let graph = &d.policy.graph;
    // The plan without scratch targets: which sources have a snapshot, and unknown
    // names refused before anything starts.
    let overview = restore_plan(
        d.policy,
        graph,
        d.inventory,
        &Selection {
            only: only.to_vec(),
            ..Selection::default()
        },
        Vec::new(),
    )?;
    let mut drills = Vec::new();
    for step in &overview.steps {
        let one = drill_source(d, graph, &step.source).await;
        drills.push(record(d, one).await);
    }
    Ok(DrillReport {
        format_version: FORMAT_VERSION,
        drills,
        missing: overview.missing,
    })
}

/// Times one step.
fn timed(steps: &mut Vec<DrillStep>, name: &str, started: Instant) {
    steps.push(DrillStep {
        name: name.to_string(),
        seconds: started.elapsed().as_secs_f64(),
    });
}

/// One source's drill, its scratch target removed whatever happened (Ctrl-C
/// included: the drill stops, the target goes).
async fn drill_source(d: &Drill<'_>, graph: &SourceGraph, source: &str) -> SourceDrill {
    let started = Utc::now();
    let resolved = &d.policy.sources[source];
    let kind = Kind::of(resolved);
    let mut steps = Vec::new();
    let mut out = SourceDrill {
        source: source.to_string(),
        type_name: resolved.type_name.to_string(),
        snapshot: String::new(),
        snapshot_time: started,
        from: String::new(),
        scratch: String::new(),
        started,
        steps: Vec::new(),
        restored_bytes: 0,
        checks: None,
        result: CheckResult::Failed,
        error: None,
        cleanup_error: None,
        findings: Vec::new(),
        estimate: None,
        no_estimate: None,
        recorded: Vec::new(),
        not_recorded: BTreeMap::new(),
        snapshot_keys: None,
    };

    let clock = Instant::now();
    let scratch = tokio::task::block_in_place(|| kind.scratch(d.policy));
    timed(&mut steps, PREPARE, clock);
    let scratch = match scratch {
        Ok(s) => s,
        Err(f) => {
            out.steps = steps;
            out.error = Some(f);
            return out;
        }
    };
    out.scratch = scratch.describe();

    let work = restore_and_check(d, graph, source, &scratch, &mut steps, &mut out);
    let ended = tokio::select! {
        ended = work => ended,
        _ = tokio::signal::ctrl_c() => Err(Failure::new(
            Code::DrillFailed,
            "interrupted (Ctrl-C): the drill stopped, its scratch target was removed",
        )),
    };

    let clock = Instant::now();
    let removed = scratch.remove().await;
    timed(&mut steps, CLEAN_UP, clock);
    out.cleanup_error = removed.err();
    out.steps = steps;
    match ended {
        Ok(checks) if checks.differences.is_empty() => {
            out.result = CheckResult::Passed;
            out.checks = Some(checks);
        }
        Ok(checks) => {
            out.error = Some(Failure::new(
                Code::DrillFailed,
                format!(
                    "{} of the {} {} checked differ from what the snapshot recorded",
                    checks.differences.len(),
                    checks.checked,
                    match checks.unit {
                        CheckUnit::Tables => "tables",
                        CheckUnit::Databases => "Redis databases",
                        CheckUnit::Files => "files",
                    }
                ),
            ));
            out.checks = Some(checks);
        }
        Err(f) => out.error = Some(f),
    }
    // A scratch target left behind fails the drill: it may hold production data.
    if out.result == CheckResult::Passed && out.cleanup_error.is_some() {
        out.result = CheckResult::Failed;
        out.error = out.cleanup_error.clone();
    }
    out.findings = findings(d.policy, &out);
    if out.result == CheckResult::Passed {
        match estimate(d.policy, kind, &out).await {
            Ok(e) => out.estimate = Some(e),
            Err(why) => out.no_estimate = Some(why),
        }
    }
    out
}

/// Locks, restores into the scratch target through the restore executor, checks.
async fn restore_and_check(
    d: &Drill<'_>,
    graph: &SourceGraph,
    source: &str,
    scratch: &Scratch,
    steps: &mut Vec<DrillStep>,
    out: &mut SourceDrill,
) -> Result<Checks, Failure> {
    let selection = Selection {
        only: vec![source.to_string()],
        targets: scratch
            .target()
            .map(|t| BTreeMap::from([(source.to_string(), t)]))
            .unwrap_or_default(),
        ..Selection::default()
    };
    let options = scratch.options();
    let mut plan: RestorePlan = restore_plan(d.policy, graph, d.inventory, &selection, Vec::new())?;
    let Some(step) = plan.steps.first() else {
        return Err(Failure::new(
            Code::SnapshotNotFound,
            format!("{source} has no good snapshot"),
        ));
    };
    out.snapshot = step.snapshot.id.clone();
    out.snapshot_time = step.snapshot.time;
    out.restored_bytes = step.snapshot.size.or(step.snapshot.bytes_read).unwrap_or(0);

    let clock = Instant::now();
    let restore = Restore {
        policy: d.policy,
        selection: &selection,
        options: &options,
        host: d.host,
        inventory: d.inventory,
        repos: d.repos,
    };
    let locks = execute::lock(&mut plan, d.repos).await?;
    let restored = execute::execute(&restore, &mut plan, d.secret.clone()).await;
    let checked = match restored {
        Ok(report) => {
            timed(steps, RESTORE, clock);
            if let Some(Restored::Keys { keys, expired, .. }) =
                report.steps.first().map(|s| &s.restored)
            {
                out.snapshot_keys = Some(keys + expired);
            }
            let clock = Instant::now();
            let checked = check(d, scratch, &report, &out.snapshot).await;
            timed(steps, CHECK, clock);
            out.from = report
                .steps
                .first()
                .map(|s| s.from.clone())
                .unwrap_or_default();
            checked
        }
        Err(f) => {
            timed(steps, RESTORE, clock);
            Err(f)
        }
    };
    lock::release_all(locks.held).await;
    checked
}

/// The scratch target against the snapshot, read again from the destination the
/// restore read.
async fn check(
    d: &Drill<'_>,
    scratch: &Scratch,
    report: &RestoreReport,
    snapshot: &str,
) -> Result<Checks, Failure> {
    let step = report
        .steps
        .first()
        .ok_or_else(|| Failure::new(Code::SnapshotNotFound, "nothing was restored"))?;
    let repo = &d.repos[&step.from];
    let (tree, mut fetcher, key) =
        execute::open_snapshot_with_key(repo, snapshot, d.host, d.secret.clone()).await?;
    scratch
        .check(&tree.unpack()?, &key, &mut fetcher, &step.restored)
        .await
}

/// The objectives the drill missed.
fn findings(policy: &Policy, drill: &SourceDrill) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(rto) = policy.objectives.rto {
        let rto_seconds = rto.as_seconds_f64();
        let seconds = drill.seconds();
        if seconds > rto_seconds {
            out.push(Finding::OverRto {
                seconds,
                rto_seconds,
            });
        }
    }
    if let Some(rpo) = policy.objectives.rpo
        && !drill.snapshot.is_empty()
    {
        let age_seconds = (drill.started - drill.snapshot_time).as_seconds_f64();
        let rpo_seconds = rpo.as_seconds_f64();
        if age_seconds > rpo_seconds {
            out.push(Finding::OverRpo {
                age_seconds,
                rpo_seconds,
            });
        }
    }
    out
}

/// The restore step's throughput, scaled to the source's size now as its kind reads
/// it from its server or folder; why not, when it cannot.
async fn estimate(
    policy: &Policy,
    kind: Kind<'_>,
    drill: &SourceDrill,
) -> Result<Estimate, NoEstimate> {
    let seconds = drill
        .steps
        .iter()
        .find(|s| s.name == RESTORE)
        .ok_or(NoEstimate::NotMeasured)?
        .seconds;
    if seconds <= 0.0 || drill.restored_bytes == 0 {
        return Err(NoEstimate::NotMeasured);
    }
    let now = kind
        .current_size(policy)
        .await
        .map_err(|error| NoEstimate::SourceUnreadable { error })?;
    extrapolate(drill.restored_bytes, seconds, now, drill.snapshot_keys)
}

/// The secret key file the policy names for drills, resolved.
pub fn secret_key_file(policy: &Policy) -> Option<std::path::PathBuf> {
    policy
        .file
        .drill
        .as_ref()
        .and_then(|d| d.secret_key_file.as_deref())
        .map(|p| policy.resolve_path(p))
}

/// The public record of a drill.
pub fn to_record(drill: &SourceDrill, finished: DateTime<Utc>, policy: &Policy) -> DrillRecord {
    DrillRecord {
        source: drill.source.clone(),
        snapshot: drill.snapshot.clone(),
        started: drill.started,
        finished,
        result: drill.result,
        code: drill.error.as_ref().map(|f| f.code.id().to_string()),
        steps: drill.steps.clone(),
        restored_bytes: drill.restored_bytes,
        checked: drill.checks.as_ref().map_or(0, |c| c.checked),
        differences: drill
            .checks
            .as_ref()
            .map_or(0, |c| c.differences.len() as u64),
        checksums: drill.checks.as_ref().and_then(|c| c.checksums),
        rto_seconds: policy.objectives.rto.map(|d| d.as_seconds_f64()),
        rpo_seconds: policy.objectives.rpo.map(|d| d.as_seconds_f64()),
        snapshot_age_seconds: (!drill.snapshot.is_empty())
            .then(|| (drill.started - drill.snapshot_time).as_seconds_f64()),
        estimated_full_seconds: drill.estimate.as_ref().map(|e| e.full_seconds),
    }
}

/// Records the drill in every destination of its source that is open.
async fn record(d: &Drill<'_>, mut drill: SourceDrill) -> SourceDrill {
    let record = to_record(&drill, Utc::now(), d.policy);
    for dest in &d.policy.sources[&drill.source].destinations {
        let Some(repo) = d.repos.get(dest) else {
            continue;
        };
        match repo.put_drill(&record).await {
            Ok(_) => drill.recorded.push(dest.clone()),
            Err(f) => {
                drill.not_recorded.insert(dest.clone(), f);
            }
        }
    }
    drill
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_scales_the_measured_throughput_to_the_size_now() {
        // 10 MB restored in 4 s: 2.5 MB/s; the folder has grown to 30 MB.
        let e = extrapolate(
            10_000_000,
            4.0,
            CurrentSize::Files {
                files: 12,
                bytes: 30_000_000,
            },
            None,
        )
        .expect("an estimate");
        assert_eq!(e.bytes_per_second, 2_500_000.0);
        assert_eq!(e.full_bytes, 30_000_000);
        assert_eq!(e.full_seconds, 12.0);
        assert_eq!(e.snapshot_keys, None);

        // Databases that shrank: less than the measured time.
        let e = extrapolate(
            10_000_000,
            4.0,
            CurrentSize::Databases { bytes: 5_000_000 },
            None,
        )
        .expect("an estimate");
        assert_eq!(e.full_seconds, 2.0);

        // Redis: 3 000 keys now against 2 000 in the snapshot: the snapshot's bytes
        // one and a half times, at the measured rate.
        let e = extrapolate(
            1_000_000,
            0.5,
            CurrentSize::Keys { keys: 3_000 },
            Some(2_000),
        )
        .expect("an estimate");
        assert_eq!(e.full_bytes, 1_500_000);
        assert_eq!(e.full_seconds, 0.75);
        assert_eq!(e.snapshot_keys, Some(2_000));
    }

    #[test]
    fn without_a_measure_there_is_no_estimate_and_it_says_why() {
        let now = CurrentSize::Files {
            files: 1,
            bytes: 100,
        };
        assert_eq!(extrapolate(0, 1.0, now, None), Err(NoEstimate::NotMeasured));
        assert_eq!(
            extrapolate(100, 0.0, now, None),
            Err(NoEstimate::NotMeasured)
        );
        let keys = CurrentSize::Keys { keys: 10 };
        assert_eq!(
            extrapolate(100, 1.0, keys, None),
            Err(NoEstimate::NoSnapshotKeys)
        );
        assert_eq!(
            extrapolate(100, 1.0, keys, Some(0)),
            Err(NoEstimate::NoSnapshotKeys)
        );
    }
}
