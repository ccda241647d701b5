//! The executor that carries actions out against the destinations' repositories:
//! backups of every source type, server settings, copies between destinations,
//! repairs of lost packs from other destinations, and prunes with garbage
//! collection. Data first, manifest last: a crash at any point leaves unreferenced
//! data for the next prune, never a half snapshot.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{OnceCell, mpsc};

use super::{Detail, Done, Executor, Setting, Stop};
use crate::crypto::Recipients;
use crate::crypto::keys::{ChunkId, RepoKey};
use crate::error::{Code, Failure};
use crate::inventory::{
    CheckResult, FailureRecord, LockKind, Lost, PackState, SnapshotInfo, SnapshotStatus,
};
use crate::pipeline::sink::{PackUpload, RepoSink, Target};
use crate::plan::{Backup, Configure, Copy, Prune, Repair, Role};
use crate::policy::Policy;
use crate::repo::format::IndexBody;
use crate::repo::gc::gc;
use crate::repo::lock;
use crate::repo::mover::ChunkMover;
use crate::repo::store::{Index, IndexBatch, Location, Repo};
use crate::repo::tree::{PackedTree, TreeWalk, WalkError};
use crate::sources::kind::Kind;

/// How many finished packs may wait for upload per destination.
const UPLOAD_QUEUE: usize = 2;

/// Carries out plan actions against real repositories.
#[derive(Debug)]
pub struct StorageExecutor {
    policy: Arc<Policy>,
    key: RepoKey,
    recipients: Recipients,
    repos: HashMap<String, Repo>,
    run_id: String,
    /// Each destination's snapshot headers as this apply found them, read once for
    /// every backup's parent (a source's newest snapshot does not change while its
    /// one backup of this apply runs).
    headers: HashMap<String, OnceCell<Vec<crate::repo::format::SnapshotHeader>>>,
    /// Each destination's index as this apply last read it, shared by its backups
    /// and read again only when it no longer holds ([`Repo::index_still_holds`]):
    /// one copy in memory however many backups run, and no backup reading every
    /// index object again.
    indexes: HashMap<String, tokio::sync::Mutex<Option<Arc<Index>>>>,
    /// The daemon's stop request, if any (see [`Stop`]).
    stop: Option<Stop>,
}

impl StorageExecutor {
    pub fn new(
        policy: Arc<Policy>,
        key: RepoKey,
        recipients: Recipients,
        repos: Vec<Repo>,
        now: DateTime<Utc>,
    ) -> StorageExecutor {
        StorageExecutor {
            policy,
            key,
            recipients,
            headers: repos
                .iter()
                .map(|r| (r.name.clone(), OnceCell::new()))
                .collect(),
            indexes: repos
                .iter()
                .map(|r| (r.name.clone(), tokio::sync::Mutex::new(None)))
                .collect(),
            repos: repos.into_iter().map(|r| (r.name.clone(), r)).collect(),
            run_id: format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), random_hex(2)),
            stop: None,
        }
    }

    /// Starts no action once `stop` is requested, and abandons the running ones.
    pub fn with_stop(mut self, stop: Stop) -> StorageExecutor {
        self.stop = Some(stop);
        self
    }

    /// Fails when a stop was requested, before an action takes its locks.
    fn not_stopping(&self) -> Result<(), Failure> {
        match &self.stop {
            Some(stop) if stop.requested() => Err(stopped("not started")),
            _ => Ok(()),
        }
    }

    /// Runs `work` (which holds its locks) unless a stop is requested first: then it
    /// is dropped where it waits, and the caller releases its locks. A backup dropped
    /// so records no failed snapshot: it did not fail, and the next run takes it.
    async fn abandonable<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let Some(stop) = &self.stop else {
            return work.await;
        };
        tokio::select! {
            out = work => out,
            () = stop.wait() => Err(stopped("abandoned")),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn repo(&self, name: &str) -> Result<&Repo, Failure> {
        self.repos.get(name).ok_or_else(|| {
            Failure::new(
                Code::DestinationUnreadable,
                format!("destination {name} is not in the policy"),
            )
        })
    }

    /// Stores the policy this apply ran with in every destination.
    pub async fn record_policy(&self, now: DateTime<Utc>) -> Result<(), Failure> {
        let sources: Vec<String> = self.policy.file.sources.keys().cloned().collect();
        for repo in self.repos.values() {
            if repo.marker().await?.is_some() {
                repo.put_policy(
                    &self.key,
                    &self.policy.text,
                    &self.policy.digest,
                    &sources,
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Rewrites each destination's snapshot catalog where it has fallen behind, so
    /// that the next inventory reads one object rather than one per snapshot. A
    /// failure costs only speed; it is returned for the operator to see. A rewrite
    /// deletes the catalogs it replaces: on an append-only destination only the
    /// trusted host (`role` prune) does it.
    pub async fn compact_catalogs(&self, role: Role) -> Vec<Failure> {
        let mut problems = Vec::new();
        for repo in self.repos.values() {
            let append_only = self
                .policy
                .file
                .destinations
                .get(&repo.name)
                .is_some_and(|d| d.append_only());
            if append_only && role != Role::Prune {
                continue;
            }
            if let Err(f) = repo.compact_catalog().await {
                problems.push(f);
            }
        }
        problems
    }

    /// The index of `repo` for a backup, which holds its lock: the one this apply
    /// read, while it holds, else read now.
    async fn index(&self, repo: &Repo) -> Result<Arc<Index>, Failure> {
        let Some(slot) = self.indexes.get(&repo.name) else {
            return Ok(Arc::new(repo.load_index(&self.key).await?));
        };
        // Held while reading, so that backups starting together read it once.
        let mut slot = slot.lock().await;
        if let Some(index) = slot.as_ref()
            && repo.index_still_holds(index).await?
        {
            return Ok(index.clone());
        }
        let index = Arc::new(repo.load_index(&self.key).await?);
        *slot = Some(index.clone());
        Ok(index)
    }

    /// Backs a source up; whatever goes wrong, a failed snapshot records it, so that
    /// `plan` knows and retention keeps the last good ones.
    async fn backup_recorded(&self, action: &Backup, repos: &[Repo]) -> Result<Done, Failure> {
        let source = self.policy.sources.get(&action.source).ok_or_else(|| {
            Failure::new(Code::SourceFailed, format!("no source {}", action.source))
        })?;
        let started = Utc::now();
        let result = self.backup_locked(action, source, repos, started).await;
        if let Err(failure) = &result {
            // Its own id: a destination may hold this run's complete snapshot already.
            let id = snapshot_id(started, &action.source);
            let mut info = self.snapshot_info(action, source, &id, started);
            info.status = SnapshotStatus::Failed;
            // Why it failed, for `status`: written before the snapshot's header.
            let why = FailureRecord {
                snapshot: id,
                source: action.source.clone(),
                time: started,
                code: failure.code.id().to_string(),
            };
            for repo in repos {
                let _ = repo.put_failure(&why).await;
                let _ = repo
                    .put_snapshot(&self.key, &info, &PackedTree::default())
                    .await;
            }
        }
        result
    }

    async fn backup_locked(
        &self,
        action: &Backup,
        source: &crate::policy::ResolvedSource,
        repos: &[Repo],
        started: DateTime<Utc>,
    ) -> Result<Done, Failure> {
        let id = snapshot_id(started, &action.source);
        let mut indexes = Vec::new();
        for repo in repos {
            indexes.push(self.index(repo).await?);
        }
        let parent = self.parent_tree(&action.source, repos).await?;
        let kind = Kind::of(source);

        let mut uploads = Vec::new();
        let mut targets = Vec::new();
        for (repo, index) in repos.iter().zip(&indexes) {
            let (tx, rx) = mpsc::channel::<PackUpload>(UPLOAD_QUEUE);
            targets.push(Target::new(index.clone(), tx));
            uploads.push(tokio::spawn(upload(repo.clone(), self.key.clone(), rx)));
        }
        let key_set = self
            .recipients
            .key_set()
            .map_err(|e| Failure::new(Code::KeyFileUnreadable, e.0))?;
        let sink = RepoSink::new(&self.key, key_set, self.policy.compression, targets)
            .map_err(|e| Failure::new(Code::Io, format!("zstd: {e}")))?;
        let job = match kind.prepare_backup(&self.policy).await {
            Ok(job) => job,
            Err(f) => {
                drop(sink);
                for u in uploads {
                    let _ = u.await;
                }
                return Err(f);
            }
        };
        let scan = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let report = job(parent.as_ref(), &mut sink);
            let flushed = sink.finish();
            // Dropping the sink closes the upload channels.
            drop(sink);
            match (report, flushed) {
                (Ok(r), Ok(())) => Ok(r),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(Failure::new(Code::SourceFailed, e.to_string())),
            }
        });
        let report = scan
            .await
            .map_err(|e| Failure::new(Code::SourceFailed, format!("the scan stopped: {e}")))?;
        let mut stored = Vec::new();
        let mut written = Vec::new();
        let mut upload_error = None;
        for u in uploads {
            match u.await {
                Ok(Ok((bytes, packs))) => {
                    stored.push(bytes);
                    written.push(packs);
                }
                Ok(Err(f)) => {
                    upload_error.get_or_insert(f);
                    stored.push(0);
                    written.push(Vec::new());
                }
                Err(e) => {
                    upload_error.get_or_insert(Failure::new(Code::Io, e.to_string()));
                    stored.push(0);
                    written.push(Vec::new());
                }
            }
        }
        let mut info = self.snapshot_info(action, source, &id, started);
        let report = match (report, upload_error) {
            (Ok(r), None) => r,
            (Err(f), _) | (Ok(_), Some(f)) => return Err(f),
        };
        info.bytes_read = Some(report.bytes_read);
        info.size = Some(report.size);
        let mut stored_first = None;
        let mut locks = Vec::new();
        for (((repo, stored), written), index) in
            repos.iter().zip(stored).zip(written).zip(&indexes)
        {
            stored_first.get_or_insert(stored);
            let mut info = info.clone();
            info.bytes_stored = Some(stored);
            let retain_until = repo.put_snapshot(&self.key, &info, &report.tree).await?;
            if let (Some(until), Some(api), true) = (
                retain_until,
                repo.object_lock_api(),
                action.extend_locks.contains(&repo.name),
            ) {
                let packs = packs_used(&report.tree, index, written)?;
                locks.push(api.extend(packs, until, None).await);
            }
        }
        Ok(Done {
            locks,
            bytes_read: Some(report.bytes_read),
            bytes_stored: stored_first,
            detail: Some(Detail::Backup(report.report)),
        })
    }

    fn snapshot_info(
        &self,
        action: &Backup,
        source: &crate::policy::ResolvedSource,
        id: &str,
        started: DateTime<Utc>,
    ) -> SnapshotInfo {
        SnapshotInfo {
            id: id.to_string(),
            source: action.source.clone(),
            run_id: self.run_id.clone(),
            time: started,
            finished: Some(Utc::now()),
            status: SnapshotStatus::Complete,
            bytes_read: None,
            bytes_stored: None,
            size: None,
            source_digest: Some(source.digest.clone()),
            policy_digest: Some(self.policy.digest.clone()),
            retain_until: None,
        }
    }

    /// The newest complete snapshot of `source` written under this key: its tree
    /// tells which files are unchanged. None when there is none, or when another
    /// process pruned it since this apply read the headers.
    async fn parent_tree(
        &self,
        source: &str,
        repos: &[Repo],
    ) -> Result<Option<PackedTree>, Failure> {
        for repo in repos {
            let mut best: Option<SnapshotInfo> = None;
            let headers = match self.headers.get(&repo.name) {
                Some(cell) => {
                    cell.get_or_try_init(|| async {
                        Ok::<_, Failure>(
                            repo.snapshot_headers()
                                .await?
                                .into_iter()
                                .filter_map(|(_, h)| h.ok())
                                .collect(),
                        )
                    })
                    .await?
                }
                None => continue,
            };
            for h in headers {
                if h.snapshot.source == source
                    && h.snapshot.status == SnapshotStatus::Complete
                    && h.key_id == self.key.id()
                    && best.as_ref().is_none_or(|b| h.snapshot.time > b.time)
                {
                    best = Some(h.snapshot.clone());
                }
            }
            if let Some(best) = best {
                return match repo.read_snapshot_packed(&self.key, &best.id).await {
                    Ok((_, tree)) => Ok(Some(tree)),
                    // Pruned by another process since this apply listed the headers:
                    // every file is read again.
                    Err(f) if f.code == Code::SnapshotNotFound => Ok(None),
                    Err(f) => Err(f),
                };
            }
        }
        Ok(None)
    }

    async fn copy_locked(&self, action: &Copy, from: &Repo, to: &Repo) -> Result<Done, Failure> {
        let (header, tree_bytes) = from.snapshot_objects(&action.snapshot.id).await?;
        let tree = crate::repo::store::decode_tree(&self.key, &tree_bytes).map_err(|why| {
            Failure::new(
                Code::NoRepositoryKey,
                format!(
                    "cannot open snapshot {} with this repository key: {why}",
                    action.snapshot.id
                ),
            )
        })?;
        let source_index = from.load_index(&self.key).await?;
        let target_index = to.load_index(&self.key).await?;
        let mut copied = HashSet::new();
        let mut moves = Vec::new();
        for entry in &tree.entries {
            for id in &entry.chunks {
                if target_index.contains(id) || !copied.insert(*id) {
                    continue;
                }
                let loc = source_index.locate(id).ok_or_else(|| {
                    Failure::new(
                        Code::VerifyFailed,
                        format!(
                            "{}: chunk {} of snapshot {} is in no pack",
                            from.name,
                            id.to_hex(),
                            action.snapshot.id
                        ),
                    )
                })?;
                moves.push((*id, loc));
            }
        }
        // Pack by pack: each source pack is read once, whole, and checked.
        by_pack(&mut moves);
        let mut mover = ChunkMover::checked(HashSet::new());
        for (id, loc) in moves {
            mover.add(from, &source_index, id, &loc, to).await?;
        }
        let packs = mover.finish(to).await?;
        let stored: u64 = packs.iter().map(|p| p.size).sum();
        let written: Vec<String> = packs.iter().map(|p| p.id.clone()).collect();
        if !packs.is_empty() {
            to.put_index(&self.key, packs).await?;
        }
        let tree_hash = blake3::hash(&tree_bytes).to_hex().to_string();
        let retain_until = to
            .put_snapshot_objects(header.key_id.clone(), &header.info(), tree_bytes, tree_hash)
            .await?;
        let mut locks = Vec::new();
        if let (Some(until), Some(api), true) =
            (retain_until, to.object_lock_api(), action.extend_locks)
        {
            let packs = packs_used(&tree, &target_index, written)?;
            locks.push(api.extend(packs, until, None).await);
        }
        Ok(Done {
            locks,
            bytes_read: None,
            bytes_stored: Some(stored),
            detail: Some(Detail::Copied {
                chunks: copied.len(),
            }),
        })
    }

    /// Copies back into `to` the chunks its snapshots need and its index cannot give
    /// (they were in packs `verify` found missing or damaged), each from the first of
    /// `from` that holds it intact; then retires the lost packs nothing needs any
    /// more, and replaces the `lost/` records with what is still lost. Data first:
    /// the new packs, then the index that lists them and retires the old, then the
    /// records. Nothing is deleted but a damaged pack that a new one of the same name
    /// (the bytes it should have had) replaces.
    async fn repair_locked(&self, to: &Repo, from: &[Repo]) -> Result<Done, Failure> {
        let index = to.load_index(&self.key).await?;
        // What each snapshot needs that the index cannot give.
        let mut needed: HashSet<ChunkId> = HashSet::new();
        let mut needers: Vec<(String, Vec<ChunkId>)> = Vec::new();
        for (_, header) in to.snapshot_headers().await? {
            let Ok(header) = header else { continue };
            if header.key_id != self.key.id() || header.snapshot.status != SnapshotStatus::Complete
            {
                continue;
            }
            // A tree that cannot be read is verify's to report; no chunk copy mends it.
            let Ok((_, tree)) = to.read_snapshot(&self.key, &header.snapshot.id).await else {
                continue;
            };
            let mine: Vec<ChunkId> = tree
                .entries
                .iter()
                .flat_map(|e| e.chunks.iter().copied())
                .filter(|c| !index.contains(c))
                .collect();
            if !mine.is_empty() {
                needed.extend(mine.iter().copied());
                needers.push((header.snapshot.id, mine));
            }
        }

        let damaged: HashSet<String> = index
            .lost
            .packs
            .iter()
            .filter(|p| p.state == PackState::Damaged)
            .map(|p| p.id.clone())
            .collect();
        let mut mover = ChunkMover::checked(damaged);
        let mut copied: HashSet<ChunkId> = HashSet::new();
        let mut notes: Vec<String> = Vec::new();
        for source in from {
            let wanted: Vec<ChunkId> = needed.difference(&copied).copied().collect();
            if wanted.is_empty() {
                break;
            }
            let source_index = match source.load_index(&self.key).await {
                Ok(i) => i,
                Err(f) => {
                    notes.push(f.message);
                    continue;
                }
            };
            let mut moves: Vec<(ChunkId, Location)> = wanted
                .iter()
                .filter_map(|c| source_index.locate(c).map(|l| (*c, l)))
                .collect();
            by_pack(&mut moves);
            // A source pack that is itself lost is skipped; the next source may have it.
            let mut unreadable: HashSet<Arc<str>> = HashSet::new();
            for (id, loc) in moves {
                if unreadable.contains(&loc.pack) {
                    continue;
                }
                match mover.take(source, &source_index, id, &loc).await {
                    Ok(()) => {
                        copied.insert(id);
                        mover.flush_full(to).await?;
                    }
                    Err(f) => {
                        unreadable.insert(loc.pack.clone());
                        notes.push(f.message);
                    }
                }
            }
        }
        let packs = mover.finish(to).await?;
        let stored: u64 = packs.iter().map(|p| p.size).sum();
        let still: HashSet<ChunkId> = needed.difference(&copied).copied().collect();
        // A lost pack whose very bytes were written anew is whole again, not retired.
        let rewritten: HashSet<String> = packs.iter().map(|p| p.id.clone()).collect();
        let retired: Vec<String> = index
            .lost
            .packs
            .iter()
            .filter(|p| !rewritten.contains(&p.id))
            .filter(|p| {
                index
                    .pack(&p.id)
                    .is_some_and(|r| r.chunks().all(|c| !still.contains(&c.id)))
            })
            .map(|p| p.id.clone())
            .collect();
        if !packs.is_empty() || !retired.is_empty() {
            let body = IndexBody {
                packs,
                retired: retired.clone(),
            };
            to.put_index_body(&self.key, &body).await?;
        }

        // What is still lost replaces the records: the new one first.
        let mut left_snapshots: Vec<String> = needers
            .into_iter()
            .filter(|(_, chunks)| chunks.iter().any(|c| still.contains(c)))
            .map(|(id, _)| id)
            .collect();
        left_snapshots.sort();
        let left = Lost {
            found: index.lost.found,
            packs: index
                .lost
                .packs
                .iter()
                .filter(|p| index.pack(&p.id).is_some())
                .filter(|p| !retired.contains(&p.id) && !rewritten.contains(&p.id))
                .cloned()
                .collect(),
            snapshots: left_snapshots,
        };
        let record = match left.is_empty() {
            true => None,
            false => Some(to.put_lost(&left, Utc::now()).await?),
        };
        for old in &index.lost_objects {
            if Some(old) != record.as_ref() {
                to.delete(old).await?;
            }
        }
        if still.is_empty() {
            return Ok(Done {
                locks: Vec::new(),
                bytes_read: None,
                bytes_stored: Some(stored),
                detail: Some(Detail::Repaired {
                    chunks: copied.len(),
                    packs_written: rewritten.len(),
                    packs_retired: retired.len(),
                }),
            });
        }
        let detail = format!(
            "{} chunk{} copied into {} pack{}, {} lost pack{} retired",
            copied.len(),
            crate::plan::plural(copied.len()),
            rewritten.len(),
            crate::plan::plural(rewritten.len()),
            retired.len(),
            crate::plan::plural(retired.len())
        );
        let mut message = format!(
            "{}: {} chunk{} of {} are on no other destination intact; {detail}",
            to.name,
            still.len(),
            crate::plan::plural(still.len()),
            left.snapshots.join(", "),
        );
        for n in notes {
            message.push_str(&format!("; {n}"));
        }
        Err(Failure::new(Code::Unrepairable, message))
    }

    async fn prune_locked(&self, action: &Prune, repo: &Repo) -> Result<Done, Failure> {
        for s in &action.snapshots {
            repo.delete_snapshot(&s.id).await?;
        }
        let freed = gc(repo, &self.key).await?;
        Ok(Done {
            locks: Vec::new(),
            bytes_read: None,
            bytes_stored: None,
            detail: Some(Detail::Pruned {
                snapshots: action.snapshots.len(),
                packs_removed: freed.removed,
                packs_repacked: freed.repacked,
                packs_written: freed.written,
            }),
        })
    }
}

/// Orders chunk moves pack by pack, in each pack by offset: a mover that reads whole
/// packs then reads each once.
fn by_pack(moves: &mut [(ChunkId, Location)]) {
    moves.sort_by(|a, b| (&a.1.pack, a.1.offset).cmp(&(&b.1.pack, b.1.offset)));
}

/// Stores a backup's packs as they come, and lists them in an index object as soon as
/// the next pack would not fit in it ([`IndexBatch`]; the rest when the packs end): a
/// backup holds the records of at most [`INDEX_OBJECT_CHUNKS`] new chunks and a pack,
/// however many it stores. Returns the bytes stored and the packs written. Packs
/// listed by a backup that then fails are referred to by no snapshot, and the next
/// prune deletes them.
async fn upload(
    repo: Repo,
    key: RepoKey,
    mut rx: mpsc::Receiver<PackUpload>,
) -> Result<(u64, Vec<String>), Failure> {
    let mut batch = IndexBatch::default();
    let mut stored = 0;
    let mut written = Vec::new();
    while let Some((bytes, record)) = rx.recv().await {
        repo.put_pack(bytes, &record).await?;
        stored += record.size;
        written.push(record.id.clone());
        if let Some(full) = batch.push(record) {
            repo.put_index(&key, full).await?;
        }
    }
    let rest = batch.rest();
    if !rest.is_empty() {
        repo.put_index(&key, rest).await?;
    }
    Ok((stored, written))
}

/// The pack objects a snapshot's `tree` uses: those of its chunks the index read
/// before the backup holds (written by earlier snapshots), and the packs the backup
/// wrote (`written`), each once, sorted.
fn packs_used(
    tree: &impl TreeWalk,
    index: &Index,
    written: Vec<String>,
) -> Result<Vec<String>, Failure> {
    let mut packs: std::collections::BTreeSet<String> = written.into_iter().collect();
    tree.walk(|e| {
        for chunk in &e.chunks {
            if let Some(location) = index.locate(chunk)
                && !packs.contains(&*location.pack)
            {
                packs.insert(location.pack.to_string());
            }
        }
        Ok::<(), Infallible>(())
    })
    .map_err(|e| match e {
        WalkError::Damaged(why) => Failure::new(
            Code::Io,
            format!("the new snapshot's tree cannot be read: {why}"),
        ),
        WalkError::Stopped(never) => match never {},
    })?;
    Ok(packs
        .into_iter()
        .map(|p| crate::repo::format::pack_path(&p))
        .collect())
}

fn snapshot_id(started: DateTime<Utc>, source: &str) -> String {
    // Four random bytes: two applies starting in the same second never collide in
    // practice, and a snapshot's objects are never shared by two runs.
    format!(
        "{}-{source}-{}",
        started.format("%Y%m%dT%H%M%SZ"),
        random_hex(4)
    )
}

/// An action that a stop request kept from running or cut short.
fn stopped(what: &str) -> Failure {
    Failure::new(
        Code::Stopped,
        format!("{what}: backplan was asked to stop (SIGTERM or SIGINT)"),
    )
}

fn random_hex(bytes: usize) -> String {
    let mut r = vec![0u8; bytes];
    let _ = getrandom::fill(&mut r);
    r.iter().map(|b| format!("{b:02x}")).collect()
}

impl StorageExecutor {
    /// One source's restore drill ([`crate::drill`]) with the policy's
    /// `drill.secret_key_file`, the inventory read as it is now (after this apply's
    /// backups). Runs on a blocking thread of its own: the restore's futures are
    /// not `Send`.
    async fn drill_source(&self, source: String) -> Result<Done, Failure> {
        let policy = self.policy.clone();
        let key = self.key.clone();
        let repos: std::collections::BTreeMap<String, Repo> = self
            .repos
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let handle = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                let file = crate::drill::secret_key_file(&policy).ok_or_else(|| {
                    Failure::new(
                        Code::DrillNeedsSecretKey,
                        "the policy names no drill.secret_key_file",
                    )
                })?;
                let bytes = std::fs::read(&file).map_err(|e| {
                    Failure::new(
                        Code::SecretKeyUnusable,
                        format!("cannot read secret key {}: {e}", file.display()),
                    )
                })?;
                let secret = crate::crypto::SecretKeys::from_bytes(&bytes).map_err(|e| {
                    Failure::new(Code::SecretKeyUnusable, format!("{}: {e}", file.display()))
                })?;
                let inventory = crate::repo::read_inventory(&policy, Some(&key)).await;
                let d = crate::drill::Drill {
                    policy: &policy,
                    inventory: &inventory,
                    repos: &repos,
                    host: Some(&key),
                    secret: Arc::new(secret),
                };
                crate::drill::drill(&d, &[source]).await
            })
        })
        .await
        .map_err(|e| Failure::new(Code::Io, format!("the drill stopped: {e}")))??;
        let Some(drill) = report.drills.into_iter().next() else {
            return Err(Failure::new(
                Code::SnapshotNotFound,
                format!("no good snapshot of {} to drill", report.missing.join(", ")),
            ));
        };
        if let Some(error) = drill.error.filter(|_| drill.result == CheckResult::Failed) {
            return Err(error);
        }
        Ok(Done {
            locks: Vec::new(),
            bytes_read: Some(drill.restored_bytes),
            bytes_stored: None,
            detail: Some(Detail::Drilled {
                milliseconds: drill
                    .steps
                    .iter()
                    .map(|s| (s.seconds * 1000.0) as u64)
                    .sum(),
                checked: drill.checks.map_or(0, |c| c.checked),
                findings: drill
                    .findings
                    .iter()
                    .map(|f| f.code().id().to_string())
                    .collect(),
            }),
        })
    }
}

impl Executor for StorageExecutor {
    async fn drill(&self, action: &crate::plan::Drill) -> Result<Done, Failure> {
        self.drill_source(action.source.clone()).await
    }

    async fn backup(&self, action: &Backup) -> Result<Done, Failure> {
        let mut repos = Vec::new();
        for d in &action.destinations {
            repos.push(self.repo(d)?.clone());
        }
        let locked: Vec<&Repo> = repos.iter().collect();
        self.not_stopping()?;
        lock::holding(
            &locked,
            LockKind::Shared,
            self.abandonable(self.backup_recorded(action, &repos)),
        )
        .await
        .and_then(|r| r)
    }

    async fn configure(&self, action: &Configure) -> Result<Done, Failure> {
        self.not_stopping()?;
        let source = self.policy.sources.get(&action.source).ok_or_else(|| {
            Failure::new(
                Code::NoExecutor,
                format!("{} has no settings backplan can change", action.source),
            )
        })?;
        let settings: Vec<(String, String)> = action
            .changes
            .iter()
            .map(|c| (c.name.clone(), c.to.clone()))
            .collect();
        Kind::of(source)
            .configure(&self.policy, settings.clone())
            .await?;
        Ok(Done {
            locks: Vec::new(),
            bytes_read: None,
            bytes_stored: None,
            detail: Some(Detail::Configured {
                settings: settings
                    .into_iter()
                    .map(|(name, value)| Setting { name, value })
                    .collect(),
            }),
        })
    }

    async fn copy(&self, action: &Copy) -> Result<Done, Failure> {
        let from = self.repo(&action.from)?.clone();
        let to = self.repo(&action.to)?.clone();
        // Both ends: no prune may delete the packs being read either.
        self.not_stopping()?;
        lock::holding(
            &[&to, &from],
            LockKind::Shared,
            self.abandonable(self.copy_locked(action, &from, &to)),
        )
        .await
        .and_then(|r| r)
    }

    async fn repair(&self, action: &Repair) -> Result<Done, Failure> {
        let to = self.repo(&action.destination)?.clone();
        let mut from = Vec::new();
        for d in &action.from {
            from.push(self.repo(d)?.clone());
        }
        // The repaired destination and every source: no prune may run under it.
        let locked: Vec<&Repo> = std::iter::once(&to).chain(&from).collect();
        self.not_stopping()?;
        lock::holding(
            &locked,
            LockKind::Shared,
            self.abandonable(self.repair_locked(&to, &from)),
        )
        .await
        .and_then(|r| r)
    }

    async fn prune(&self, action: &Prune) -> Result<Done, Failure> {
        let repo = self.repo(&action.destination)?.clone();
        self.not_stopping()?;
        lock::holding(
            &[&repo],
            LockKind::Exclusive,
            self.abandonable(self.prune_locked(action, &repo)),
        )
        .await
        .and_then(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::{ChunkRecord, PackRecord};
    use crate::repo::store::INDEX_OBJECT_CHUNKS;

    #[tokio::test(flavor = "current_thread")]
    async fn a_backups_uploads_are_listed_in_an_index_object_per_bound_of_chunks() {
        let op = opendal::Operator::new(opendal::services::Memory::default()).expect("memory");
        let repo = Repo::new("mem", op);
        let key = RepoKey::generate().expect("key");
        let hasher = key.chunk_id();
        let (tx, rx) = mpsc::channel::<PackUpload>(UPLOAD_QUEUE);
        let uploader = tokio::spawn(upload(repo.clone(), key.clone(), rx));
        // Four packs of 3/7 of the bound: two in each object.
        let per_pack = (INDEX_OBJECT_CHUNKS * 3 / 7) as u64;
        let mut sent = Vec::new();
        for p in 0..4u64 {
            let bytes = format!("pack {p}").into_bytes();
            let record = PackRecord {
                id: blake3::hash(&bytes).to_hex().to_string(),
                size: bytes.len() as u64,
                key_sets: vec![(0, 1)],
                chunks: (p * per_pack..(p + 1) * per_pack)
                    .map(|n| ChunkRecord {
                        id: hasher.id(&n.to_le_bytes()),
                        key_set: 0,
                        offset: 1,
                        length: 1,
                        raw_length: 1,
                    })
                    .collect(),
            };
            sent.push(record.clone());
            tx.send((bytes.into(), record)).await.expect("sent");
            if p == 2 {
                // The third pack does not fit beside the first two: they are listed.
                let mut index = repo.load_index(&key).await.expect("index");
                for _ in 0..1000 {
                    if !index.objects.is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                    index = repo.load_index(&key).await.expect("index");
                }
                assert_eq!(index.objects.len(), 1);
                assert_eq!(index.chunk_records(), 2 * per_pack as usize);
            }
        }
        drop(tx);
        let (stored, written) = uploader.await.expect("join").expect("upload");
        assert_eq!(stored, sent.iter().map(|p| p.size).sum::<u64>());
        let ids: Vec<String> = sent.iter().map(|p| p.id.clone()).collect();
        assert_eq!(written, ids, "the packs written, in order");
        let index = repo.load_index(&key).await.expect("index");
        assert_eq!(index.objects.len(), 2);
        assert_eq!(index.chunk_records(), 4 * per_pack as usize);
        for pack in &sent {
            assert_eq!(index.pack(&pack.id).expect("listed").record(), *pack);
        }
    }
}
