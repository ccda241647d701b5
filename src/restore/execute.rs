//! Carrying a restore plan out: shared locks on the destinations it reads (a
//! destination that cannot be locked is dropped from the fallbacks), the checks that
//! must pass before anything is written, then every step through its kind's seam,
//! from the first destination that holds the snapshot whole. Returns a typed
//! [`RestoreReport`] for `render/restore.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use super::{DatabaseLocalePlan, RestorePlan, Selection, Step, TargetLocale};
use crate::crypto::SecretKeys;
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::inventory::{Inventory, PackState};
use crate::pipeline::fetch::RepoFetcher;
use crate::policy::{Policy, ResolvedSource};
use crate::repo::format::{Tree, pack_path};
use crate::repo::key_for;
use crate::repo::lock;
use crate::repo::store::Repo;
use crate::repo::tree::PackedTree;
use crate::sources::kind::{
    Kind, OpenSnapshot, PropertiesRead, RestoreContext, RestoreOptions, Restored,
};

/// Everything a restore needs besides its plan.
#[derive(Debug, Clone, Copy)]
pub struct Restore<'a> {
    pub policy: &'a Policy,
    pub selection: &'a Selection,
    pub options: &'a RestoreOptions,
    /// The repository key of this host, when it has one.
    pub host: Option<&'a RepoKey>,
    /// What `verify` recorded lost, for the help of a failed step.
    pub inventory: &'a Inventory,
    /// The destinations the plan reads from, by name.
    pub repos: &'a BTreeMap<String, Repo>,
}

impl<'a> Restore<'a> {
    pub(super) fn context(&self) -> RestoreContext<'a> {
        RestoreContext {
            policy: self.policy,
            targets: &self.selection.targets,
            include: &self.selection.include,
            options: self.options,
        }
    }

    /// The seam of a step's source; a snapshot of a source the policy no longer
    /// declares has no kind to restore it by.
    pub(super) fn kind(&self, step: &Step) -> Result<Kind<'a>, Failure> {
        let source: &'a ResolvedSource =
            self.policy.sources.get(&step.source).ok_or_else(|| {
                Failure::new(
                    Code::UnknownSource,
                    format!(
                        "snapshot {} is of {}, which the policy {} no longer declares",
                        step.snapshot.id,
                        step.source,
                        self.policy.path.display()
                    ),
                )
                .with_help("restore it with the policy that declared the source")
            })?;
        Ok(Kind::of(source))
    }
}

/// What a restore did, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub steps: Vec<StepDone>,
    /// Selected sources with no good snapshot to restore.
    pub missing: Vec<String>,
    /// Databases that kept an encoding or locale other than their snapshot's.
    pub locale_warnings: Vec<DatabaseLocalePlan>,
}

/// One step done: what was restored where, and from which destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDone {
    pub source: String,
    pub target: String,
    pub from: String,
    #[serde(flatten)]
    pub restored: Restored,
}

impl RestoreReport {
    /// A source asked for and not restored is not a success.
    pub fn failure(&self) -> Option<Failure> {
        (!self.missing.is_empty()).then(|| {
            Failure::new(
                Code::SnapshotNotFound,
                format!(
                    "nothing restored for {}: no good snapshot",
                    self.missing.join(", ")
                ),
            )
        })
    }
}

/// The shared locks a restore holds, and the destinations it could not lock (with
/// why), which it no longer reads from.
#[derive(Debug)]
pub struct Locks {
    pub held: Vec<lock::Held>,
    pub refused: BTreeMap<String, Failure>,
}

/// Takes a shared lock on every destination the restore may read, as a backup does,
/// so that no prune deletes what it reads. A destination that cannot be locked is
/// dropped from the steps' fallbacks and returned with why; a step left with no
/// destination fails the restore before anything is read or written.
pub async fn lock(
    plan: &mut RestorePlan,
    repos: &BTreeMap<String, Repo>,
) -> Result<Locks, Failure> {
    let wanted: BTreeSet<String> = plan.steps.iter().flat_map(|s| s.from.clone()).collect();
    let mut held = Vec::new();
    let mut refused = BTreeMap::new();
    for dest in wanted {
        let Some(repo) = repos.get(&dest) else {
            continue;
        };
        match lock::acquire_for_reading(repo).await {
            Ok(h) => held.push(h),
            Err(f) => {
                refused.insert(dest, f);
            }
        }
    }
    for step in &mut plan.steps {
        let first = step.from.first().cloned();
        step.from.retain(|d| !refused.contains_key(d));
        if step.from.is_empty()
            && let Some(f) = first.and_then(|d| refused.remove(&d))
        {
            lock::release_all(held).await;
            return Err(f);
        }
    }
    let reading: BTreeSet<&String> = plan.steps.iter().flat_map(|s| &s.from).collect();
    let reading: Vec<&str> = reading.into_iter().map(String::as_str).collect();
    let refused = refused
        .into_iter()
        .map(|(dest, f)| {
            let help = format!(
                "nothing is read from {dest}; the restore reads from {}",
                reading.join(", ")
            );
            (dest, f.with_help(help))
        })
        .collect();
    Ok(Locks { held, refused })
}

/// Whether a step that failed with `code` would fail just the same from another
/// destination: a refusal or a failed step is about the target, and a spool without
/// room about this machine, not the copy (a damaged copy fails with its own code
/// before any tool sees its bytes).
fn fails_everywhere(code: Code) -> bool {
    matches!(
        code,
        Code::RestoreRefused
            | Code::RestoreFailed
            | Code::DatabaseRolesMissing
            | Code::DatabaseProperties
            | Code::DatabaseError
            | Code::NoSpace
    )
}

/// The restore proper, under the locks [`lock`] took: the preview, the checks that
/// must pass before anything is written, then every step.
pub async fn execute(
    r: &Restore<'_>,
    plan: &mut RestorePlan,
    secret: Arc<SecretKeys>,
) -> Result<RestoreReport, Failure> {
    let read = super::preview::preview(r, plan, Some(secret.clone())).await;
    for step in &plan.steps {
        if let Some(p) = &step.preview
            && !p.overwrite.is_empty()
            && !r.options.force
        {
            return Err(Failure::new(
                Code::RestoreRefused,
                format!(
                    "restoring {} would overwrite {} changed file{}: {}",
                    step.source,
                    p.overwrite.len(),
                    crate::plan::plural(p.overwrite.len()),
                    p.overwrite
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let cx = r.context();
    // Targets are checked before anything is restored: a refusal leaves every target
    // untouched.
    for step in &plan.steps {
        r.kind(step)?.check_target(&cx)?;
    }
    let mut steps = Vec::new();
    for step in &plan.steps {
        steps.push(restore_step(r, step, &secret, &read).await?);
    }
    Ok(RestoreReport {
        steps,
        missing: plan.missing.clone(),
        locale_warnings: plan
            .steps
            .iter()
            .filter_map(|s| s.preview.as_ref())
            .flat_map(|p| &p.database_locales)
            .filter(|l| matches!(l.target, TargetLocale::Differs { .. }))
            .cloned()
            .collect(),
    })
}

/// Restores one step from the first of its destinations that can give it whole.
async fn restore_step(
    r: &Restore<'_>,
    step: &Step,
    secret: &Arc<SecretKeys>,
    read: &PropertiesRead,
) -> Result<StepDone, Failure> {
    let kind = r.kind(step)?;
    let cx = r.context();
    let from: Vec<&str> = step
        .from
        .iter()
        .map(String::as_str)
        .filter(|d| r.repos.contains_key(*d))
        .collect();
    let (dest, restored) = failover(&from, r.inventory, |dest| async move {
        let repo = &r.repos[dest];
        let (tree, fetcher) =
            open_snapshot(repo, &step.snapshot.id, r.host, secret.clone()).await?;
        kind.restore(&cx, &step.target, tree, fetcher, read).await
    })
    .await?;
    Ok(StepDone {
        source: step.source.clone(),
        target: step.target.clone(),
        from: dest.to_string(),
        restored,
    })
}

/// Tries `attempt` on each destination of `from` in turn until one succeeds: a
/// failure that [`fails_everywhere`] stops at once, any other (a chunk in no pack, a
/// damaged pack, a destination not read) moves on to the next destination. The last
/// such failure, with what `verify` recorded lost there, when none succeeds.
async fn failover<'d, T, F, Fut>(
    from: &[&'d str],
    inventory: &Inventory,
    mut attempt: F,
) -> Result<(&'d str, T), Failure>
where
    F: FnMut(&'d str) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut last_error = None;
    for &dest in from {
        // A tool or server that fails a restore step fails the restore, not the
        // source (its "not committed" help would mislead here).
        match attempt(dest).await.map_err(|f| match f.code {
            Code::SourceFailed => Failure {
                code: Code::RestoreFailed,
                ..f
            },
            _ => f,
        }) {
            Ok(done) => return Ok((dest, done)),
            Err(f) if fails_everywhere(f.code) => return Err(f),
            Err(f) => last_error = Some(lost_help(inventory, dest, f)),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        Failure::new(
            Code::SnapshotNotFound,
            "no destination holding the snapshot is open",
        )
    }))
}

/// A failed step's failure, with what `verify` recorded lost on `dest`: the likely
/// cause when a chunk is in no pack there.
fn lost_help(inventory: &Inventory, dest: &str, f: Failure) -> Failure {
    let Some(lost) = inventory.destinations.get(dest).map(|d| &d.lost) else {
        return f;
    };
    if lost.packs.is_empty() {
        return f;
    }
    let packs: Vec<String> = lost
        .packs
        .iter()
        .take(3)
        .map(|p| {
            let state = match p.state {
                PackState::Missing => "missing",
                PackState::Damaged => "damaged",
            };
            format!("{} ({state})", pack_path(&p.id))
        })
        .collect();
    let more = lost.packs.len().saturating_sub(packs.len());
    f.with_help(format!(
        "verify found packs lost on {dest}: {}{}; restore from a destination that holds the snapshot whole, or repair {dest} from one: `backplan plan` shows the repair",
        packs.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    ))
}

/// The snapshot's tree, to be walked entry by entry, and a fetcher for its chunks.
pub async fn open_snapshot(
    repo: &Repo,
    id: &str,
    host: Option<&RepoKey>,
    secret: Arc<SecretKeys>,
) -> Result<(PackedTree, RepoFetcher), Failure> {
    open_snapshot_with_key(repo, id, host, secret)
        .await
        .map(|(tree, fetcher, _)| (tree, fetcher))
}

/// [`open_snapshot`], with the repository key the snapshot was taken with (which
/// names its chunks).
pub async fn open_snapshot_with_key(
    repo: &Repo,
    id: &str,
    host: Option<&RepoKey>,
    secret: Arc<SecretKeys>,
) -> Result<(PackedTree, RepoFetcher, RepoKey), Failure> {
    let (header, _) = repo.snapshot_objects(id).await?;
    let key = key_for(repo, &header.key_id, host, Some(&secret)).await?;
    let (_, tree) = repo.read_snapshot_packed(&key, id).await?;
    let fetcher = RepoFetcher::new(
        repo.clone(),
        Arc::new(repo.load_index(&key).await?),
        &key,
        secret,
        tokio::runtime::Handle::current(),
    )
    .checking_chunks_only();
    Ok((tree, fetcher, key))
}

/// A snapshot in one repository, its data opened when a kind reads it.
#[derive(Debug, Clone)]
pub struct SnapshotData<'a> {
    pub repo: &'a Repo,
    pub id: &'a str,
    pub host: Option<&'a RepoKey>,
    pub secret: Arc<SecretKeys>,
}

impl OpenSnapshot for SnapshotData<'_> {
    fn open(&self) -> BoxFuture<'_, Result<(Tree, RepoFetcher), Failure>> {
        Box::pin(async {
            let (tree, fetcher) =
                open_snapshot(self.repo, self.id, self.host, self.secret.clone()).await?;
            Ok((tree.unpack()?, fetcher))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::inventory::{DestinationState, Lost, LostPack};

    /// An inventory where `verify` found one pack missing on `dest`.
    fn lost_on(dest: &str) -> Inventory {
        let mut inventory = Inventory::default();
        inventory.destinations.insert(
            dest.to_string(),
            DestinationState {
                lost: Lost {
                    packs: vec![LostPack {
                        id: "ab12".into(),
                        state: PackState::Missing,
                        why: "not found".into(),
                    }],
                    ..Lost::default()
                },
                ..DestinationState::default()
            },
        );
        inventory
    }

    /// Runs [`failover`] over `from` where each destination answers as `answers`
    /// says; returns the outcome and the destinations tried, in order.
    fn run(
        from: &[&'static str],
        inventory: &Inventory,
        answers: impl Fn(&str) -> Result<u64, Failure>,
    ) -> (Result<(&'static str, u64), Failure>, Vec<String>) {
        let tried = RefCell::new(Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let result = rt.block_on(failover(from, inventory, |dest| {
            tried.borrow_mut().push(dest.to_string());
            let answer = answers(dest);
            async move { answer }
        }));
        (result, tried.into_inner())
    }

    #[test]
    fn a_chunk_in_no_pack_moves_the_step_on_to_the_next_destination() {
        let (result, tried) = run(
            &["local", "offsite"],
            &lost_on("local"),
            |dest| match dest {
                "local" => Err(Failure::new(Code::VerifyFailed, "chunk 00ff is in no pack")),
                _ => Ok(7),
            },
        );
        assert_eq!(result, Ok(("offsite", 7)));
        assert_eq!(tried, ["local", "offsite"]);
    }

    #[test]
    fn a_refused_target_stops_the_step_without_trying_another_copy() {
        for code in [Code::RestoreRefused, Code::NoSpace, Code::DatabaseError] {
            let (result, tried) = run(&["local", "offsite"], &Inventory::default(), |_| {
                Err(Failure::new(code, "the target says no"))
            });
            assert_eq!(result.map_err(|f| f.code), Err(code));
            assert_eq!(tried, ["local"], "{code:?}");
        }
    }

    #[test]
    fn a_failed_tool_fails_the_restore_not_the_source() {
        let (result, tried) = run(&["local", "offsite"], &Inventory::default(), |_| {
            Err(Failure::new(Code::SourceFailed, "pg_restore exited with 1"))
        });
        let failure = result.expect_err("a failure");
        assert_eq!(failure.code, Code::RestoreFailed);
        assert_eq!(failure.message, "pg_restore exited with 1");
        assert_eq!(tried, ["local"]);
    }

    #[test]
    fn when_every_copy_is_damaged_the_last_failure_names_the_packs_verify_found_lost() {
        let (result, tried) = run(&["local", "offsite"], &lost_on("offsite"), |dest| {
            Err(Failure::new(
                Code::CorruptObject,
                format!("a damaged pack on {dest}"),
            ))
        });
        let failure = result.expect_err("a failure");
        assert_eq!(failure.message, "a damaged pack on offsite");
        let help = failure.help.expect("a help of its own");
        assert!(
            help.starts_with("verify found packs lost on offsite: packs/ab/ab12 (missing);"),
            "{help}"
        );
        assert_eq!(tried, ["local", "offsite"]);
    }

    #[test]
    fn a_report_with_a_source_left_out_is_a_failure() {
        let report = RestoreReport {
            steps: Vec::new(),
            missing: vec!["db".into(), "cache".into()],
            locale_warnings: Vec::new(),
        };
        let failure = report.failure().expect("a failure");
        assert_eq!(failure.code, Code::SnapshotNotFound);
        assert_eq!(
            failure.message,
            "nothing restored for db, cache: no good snapshot"
        );
        let whole = RestoreReport {
            missing: Vec::new(),
            ..report
        };
        assert_eq!(whole.failure(), None);
    }
}
