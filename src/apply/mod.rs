//! Executing a plan. Apply never re-decides: it carries out the plan's actions through
//! an [`Executor`] (the repository and the sources plug in there): server settings
//! first, then backups in graph order, the backups of one level in parallel up to a
//! bound, then repairs, copies and prunes. A failing action does not stop the
//! independent ones; what depends on it is skipped, and so are the prunes of a source
//! whose backup failed.

pub mod event;
pub mod storage;

use std::collections::BTreeSet;

use std::future::Future;

use futures::StreamExt;
use serde::Serialize;

use crate::error::Failure;
use crate::plan::{Action, Backup, Configure, Copy, Drill, Plan, Prune, Repair};
use crate::sources::kind::BackupReport;

/// What carries out each kind of action.
pub trait Executor: Sync {
    fn backup(&self, action: &Backup) -> impl Future<Output = Result<Done, Failure>> + Send;
    fn configure(&self, action: &Configure) -> impl Future<Output = Result<Done, Failure>> + Send;
    fn copy(&self, action: &Copy) -> impl Future<Output = Result<Done, Failure>> + Send;
    fn repair(&self, action: &Repair) -> impl Future<Output = Result<Done, Failure>> + Send;
    fn prune(&self, action: &Prune) -> impl Future<Output = Result<Done, Failure>> + Send;
    /// Runs a restore drill; an executor that cannot says so.
    fn drill(&self, action: &Drill) -> impl Future<Output = Result<Done, Failure>> + Send {
        let source = action.source.clone();
        async move {
            Err(Failure::new(
                crate::error::Code::NoExecutor,
                format!("this executor cannot drill {source}"),
            ))
        }
    }
}

/// A finished action's figures, as far as the executor knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Done {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_stored: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    /// After a backup to destinations with `object_lock.extend: true`: each one's
    /// packs checked and extended, or what stopped it (BP257).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<crate::repo::s3lock::LockExtension>,
}

/// What a finished action did, by kind of action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    /// What a backup stored (files, databases, keys) and what it warned of.
    Backup(BackupReport),
    /// Server settings set and written to the server's config file.
    Configured { settings: Vec<Setting> },
    /// Chunks copied to the other destination.
    Copied { chunks: usize },
    /// Chunks copied back into new packs; lost packs retired.
    Repaired {
        chunks: usize,
        packs_written: usize,
        packs_retired: usize,
    },
    /// Snapshots deleted, packs removed (some repacked into new ones first).
    Pruned {
        snapshots: usize,
        packs_removed: usize,
        packs_repacked: usize,
        packs_written: usize,
    },
    /// A restore drill that passed: its wall time, what it checked, the objectives
    /// it missed (codes).
    Drilled {
        milliseconds: u64,
        checked: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        findings: Vec<String>,
    },
}

/// One server setting and the value it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// The `format_version` of `apply --format json`. Version 2: a failed action's
/// `error` is `{code, message, help}` (version 1 had no `format_version` and a
/// string). Version 3: a done action's `detail` is an object tagged by `kind`
/// (`backup`, `configured`, `copied`, `repaired`, `pruned`), not a sentence.
pub const REPORT_FORMAT_VERSION: u32 = 3;

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Done(Done),
    Failed { error: Failure },
    Skipped { why: String },
}

/// One notification of the run (`notify:`) sent, or not: part of the apply report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The entry's name under `notify:`.
    pub notifier: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: crate::policy::notify::NotifyState,
    /// Why it was not sent; absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// One action's outcome; `index` is its position in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub index: usize,
    pub action: Action,
    #[serde(flatten)]
    pub status: Status,
}

/// Progress, for a progress display.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started { index: usize, action: &'a Action },
    Finished { outcome: &'a Outcome },
}

/// Every action's outcome, in plan order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// The run's notifications (`notify:`), sent or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, Status::Failed { .. }))
    }

    pub fn skipped(&self) -> usize {
        self.count(|s| matches!(s, Status::Skipped { .. }))
    }

    pub fn done(&self) -> usize {
        self.count(|s| matches!(s, Status::Done(_)))
    }

    fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.status)).count()
    }
}

/// A request to stop, as the daemon's signal handler makes it: an executor given one
/// starts no further action, and abandons a running one at its current await point
/// after which its locks are released. Abandoning is no worse than a crash, which the
/// repository survives by design (data first, manifest last: no half snapshot), and
/// unlike a crash it leaves no lock behind.
#[derive(Debug, Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// What requests a [`Stop`].
#[derive(Debug)]
pub struct StopSender(tokio::sync::watch::Sender<bool>);

impl Stop {
    /// A stop request and what sends it.
    pub fn new() -> (StopSender, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (StopSender(tx), Stop(rx))
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once a stop is requested (never, when the sender is gone first).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl StopSender {
    /// Requests the stop; every [`Stop`] sees it.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// Carries out `plan` with at most `parallelism` actions at once.
pub async fn apply<E: Executor>(
    plan: &Plan,
    executor: &E,
    parallelism: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Report {
    let parallelism = parallelism.max(1);
    let mut outcomes: Vec<Outcome> = Vec::new();
    // Sources whose backup did not succeed in this apply.
    let mut unhealthy: BTreeSet<String> = BTreeSet::new();

    // Settings first and one at a time: a failed one fails only itself.
    for (index, action) in plan.actions.iter().enumerate() {
        let Action::Configure(configure) = action else {
            continue;
        };
        outcomes.push(carry_out(index, action, on_event, executor.configure(configure)).await);
    }

    let backups: Vec<(usize, &Backup)> = plan
        .actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            Action::Backup(b) => Some((i, b)),
            _ => None,
        })
        .collect();
    let mut levels: Vec<usize> = backups.iter().map(|(_, b)| b.level).collect();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        let mut runnable = Vec::new();
        for (index, backup) in backups.iter().filter(|(_, b)| b.level == level) {
            match backup.depends_on.iter().find(|d| unhealthy.contains(*d)) {
                Some(dep) => {
                    unhealthy.insert(backup.source.clone());
                    outcomes.push(skipped(
                        *index,
                        &plan.actions[*index],
                        on_event,
                        format!("its dependency {dep} was not backed up"),
                    ));
                }
                None => runnable.push((*index, *backup)),
            }
        }
        let finished: Vec<Outcome> = futures::stream::iter(runnable)
            .map(|(index, backup)| {
                carry_out(
                    index,
                    &plan.actions[index],
                    on_event,
                    executor.backup(backup),
                )
            })
            .buffer_unordered(parallelism)
            .collect()
            .await;
        for outcome in finished {
            if let (Action::Backup(b), false) =
                (&outcome.action, matches!(outcome.status, Status::Done(_)))
            {
                unhealthy.insert(b.source.clone());
            }
            outcomes.push(outcome);
        }
    }

    // Repairs before copies: a copy may read from a destination a repair completes.
    let repairs = plan.actions.iter().map(|a| match a {
        Action::Repair(r) => Some(executor.repair(r)),
        _ => None,
    });
    outcomes.extend(in_parallel(plan, repairs, parallelism, on_event).await);
    let copies = plan.actions.iter().map(|a| match a {
        Action::Copy(c) => Some(executor.copy(c)),
        _ => None,
    });
    outcomes.extend(in_parallel(plan, copies, parallelism, on_event).await);

    // Drills after the backups and copies (they restore the newest snapshot), one
    // at a time: each restores a whole source.
    for (index, action) in plan.actions.iter().enumerate() {
        let Action::Drill(drill) = action else {
            continue;
        };
        let outcome = if drill.needs_secret_key {
            let why = format!(
                "{}: a drill needs a secret key; name drill.secret_key_file in the policy",
                crate::error::Code::DrillNeedsSecretKey.id()
            );
            skipped(index, action, on_event, why)
        } else {
            carry_out(index, action, on_event, executor.drill(drill)).await
        };
        outcomes.push(outcome);
    }

    // Prunes take the destination's exclusive lock: one at a time.
    for (index, action) in plan.actions.iter().enumerate() {
        let Action::Prune(prune) = action else {
            continue;
        };
        let outcome = if let Some(until) = prune.locked_until {
            skipped(
                index,
                action,
                on_event,
                format!(
                    "held back: under S3 Object Lock until {}",
                    until.format("%Y-%m-%d %H:%M UTC")
                ),
            )
        } else if prune.append_only {
            let why = format!(
                "held back: {} is append-only; a host with --role prune prunes it",
                prune.destination
            );
            skipped(index, action, on_event, why)
        } else if prune.held {
            skipped(index, action, on_event, "held back by --max-deletes".into())
        } else if unhealthy.contains(&prune.source) {
            let why = format!("the backup of {} failed in this apply", prune.source);
            skipped(index, action, on_event, why)
        } else {
            carry_out(index, action, on_event, executor.prune(prune)).await
        };
        outcomes.push(outcome);
    }

    outcomes.sort_by_key(|o| o.index);
    Report {
        outcomes,
        ..Report::default()
    }
}

/// Carries out, `parallelism` at a time, the work given for some of the plan's
/// actions (`works` has one item per action, `None` for the others).
async fn in_parallel<F: Future<Output = Result<Done, Failure>>>(
    plan: &Plan,
    works: impl Iterator<Item = Option<F>>,
    parallelism: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Vec<Outcome> {
    let runnable: Vec<(usize, F)> = works
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| (i, w)))
        .collect();
    futures::stream::iter(runnable)
        .map(|(index, work)| carry_out(index, &plan.actions[index], on_event, work))
        .buffer_unordered(parallelism)
        .collect()
        .await
}

/// Runs one action between its `Started` and `Finished` events.
async fn carry_out<'a>(
    index: usize,
    action: &'a Action,
    on_event: &(dyn Fn(Event<'_>) + Sync),
    work: impl Future<Output = Result<Done, Failure>>,
) -> Outcome {
    on_event(Event::Started { index, action });
    let outcome = Outcome {
        index,
        action: action.clone(),
        status: status_of(work.await),
    };
    on_event(Event::Finished { outcome: &outcome });
    outcome
}

/// An action not run, and why; announced as finished.
fn skipped(
    index: usize,
    action: &Action,
    on_event: &(dyn Fn(Event<'_>) + Sync),
    why: String,
) -> Outcome {
    let outcome = Outcome {
        index,
        action: action.clone(),
        status: Status::Skipped { why },
    };
    on_event(Event::Finished { outcome: &outcome });
    outcome
}

fn status_of(result: Result<Done, Failure>) -> Status {
    match result {
        Ok(done) => Status::Done(done),
        Err(error) => Status::Failed { error },
    }
}
