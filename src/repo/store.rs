//! One repository over an `opendal::Operator`: reading and writing its objects.
//! Content is immutable and content-addressed; nothing is overwritten in place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use opendal::{Buffer, ErrorKind, Operator};

use super::direct::DirectDir;
use super::format::{
    CatalogHeader, FORMAT_VERSION, IndexBody, LostHeader, Marker, PackRecord, PolicyHeader,
    RecordHeader, SealedHeader, SnapshotHeader, Tree,
};
pub use super::index::{Index, Location};
use super::lock::LockInfo;
use super::object;
use super::tree::PackedTree;
use crate::crypto::Recipients;
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::inventory::{
    AppliedPolicy, DestinationState, DrillRecord, FailureRecord, Lost, SnapshotInfo, VerifyRecord,
};

/// Objects this large or larger (packs) go past the page cache on a local folder (see
/// [`super::direct`]); smaller ones (index objects, trees, headers) are read again soon.
pub const DIRECT_MIN: usize = 1 << 20;

/// The object that marks a repository and carries its format version.
pub const MARKER: &str = "backplan.json";

/// How many objects are read at once when listing snapshots.
const READ_CONCURRENCY: usize = 32;

/// Where the snapshot catalogs live.
const CATALOG_DIR: &str = "catalog/";
/// The catalog is rewritten once this many listed snapshots are missing from it, or
/// this many of its entries name snapshots that are gone.
const CATALOG_SLACK: usize = 64;
/// How many applied-policy records, newest first, are read to find the one a plan
/// compares with.
const POLICY_LOOKBACK: usize = 32;

/// Where `verify` records what it found lost.
const LOST_DIR: &str = "lost/";

/// The most chunk records one index object lists, as a writer splits them. Whoever
/// writes an index object holds its JSON whole (about 115 bytes per record), and a
/// reader holds the objects it has read and not yet added ([`READ_CONCURRENCY`] at
/// most, about 50 bytes per record sealed): this bounds both, about 2 MiB and 26 MiB,
/// however many chunks the repository holds.
pub const INDEX_OBJECT_CHUNKS: usize = 16_384;

/// An index object whose compressed body is at most this large is decompressed whole
/// and parsed from memory (one of [`INDEX_OBJECT_CHUNKS`] records is about 0.8 MiB);
/// a larger one, which earlier builds wrote, is parsed as it is decompressed.
const WHOLE_INDEX_OBJECT: usize = 2 << 20;

/// Where apply records why a backup failed, one object per failed snapshot.
const FAILURES_DIR: &str = "failures/";
/// Where `verify` records each run.
const VERIFIES_DIR: &str = "verifies/";
/// Where restore drills record each run, in a folder per source.
const DRILLS_DIR: &str = "drills/";

/// A pack read whole.
#[derive(Debug)]
pub enum PackRead {
    /// Its bytes, checked against its name.
    Intact(Vec<u8>),
    Missing,
    /// Why it is not what it is named after.
    Damaged(String),
}

/// Every snapshot header, and how the catalogs covered them.
#[derive(Debug, Default)]
pub struct HeaderScan {
    pub headers: Vec<(String, Result<SnapshotHeader, Failure>)>,
    /// The catalog objects read.
    catalogs: Vec<String>,
    /// Catalog objects that could not be read, and why (their snapshots were read
    /// one by one instead).
    pub damaged_catalogs: Vec<(String, String)>,
    /// Listed snapshots no catalog holds.
    uncatalogued: usize,
    /// Catalog entries whose snapshot is no longer listed.
    stale: usize,
}

/// A repository in one destination.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    op: Operator,
    /// For a local folder: the same folder, writing through a temporary file and a
    /// rename, so a crash never leaves a truncated object under its final name.
    data_op: Option<Operator>,
    /// For a local folder: its packs written and read past the page cache.
    direct: Option<Arc<DirectDir>>,
    /// The bucket's S3 Object Lock period (`object_lock.retain_for`): each snapshot
    /// written here records when its lock ends.
    lock_period: Option<chrono::Duration>,
    /// On an S3 destination with `object_lock:`: the requests that read and extend
    /// its objects' retention.
    object_lock: Option<std::sync::Arc<super::s3lock::ObjectLockApi>>,
}

/// A pack object as the listing shows it.
#[derive(Debug, Clone, Copy)]
pub struct PackObject {
    pub size: u64,
    /// When it was written (S3: Last-Modified), when the listing says.
    pub modified: Option<DateTime<Utc>>,
}

fn storage(repo: &str, what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        Code::DestinationUnreadable,
        format!("destination {repo}: {what}: {e}"),
    )
}

pub(super) fn damaged(repo: &str, object: &str, why: &str) -> Failure {
    Failure::new(
        Code::CorruptObject,
        format!("destination {repo}: object {object} is damaged: {why}"),
    )
}

impl Repo {
    pub fn new(name: impl Into<String>, op: Operator) -> Repo {
        Repo {
            name: name.into(),
            op,
            data_op: None,
            direct: None,
            lock_period: None,
            object_lock: None,
        }
    }

    /// The bucket's S3 Object Lock period, when the destination has one.
    pub fn lock_period(&self) -> Option<chrono::Duration> {
        self.lock_period
    }

    /// Records, in each snapshot written here, when the bucket's Object Lock of
    /// `period` releases its objects.
    pub fn with_lock_period(mut self, period: Option<chrono::Duration>) -> Repo {
        self.lock_period = period;
        self
    }

    /// Reads and extends object retention through `api` ([`Repo::object_lock_api`]).
    pub fn with_object_lock_api(mut self, api: super::s3lock::ObjectLockApi) -> Repo {
        self.object_lock = Some(std::sync::Arc::new(api));
        self
    }

    /// The Object Lock requests of an S3 destination with `object_lock:`.
    pub fn object_lock_api(&self) -> Option<&std::sync::Arc<super::s3lock::ObjectLockApi>> {
        self.object_lock.as_ref()
    }

    /// Writes data objects through `op` (an fs operator with an atomic write dir),
    /// and packs (objects of [`DIRECT_MIN`] bytes or more) through `direct` where the
    /// file system lets it. Locks keep the plain operator: their exclusive create must
    /// not be a rename.
    pub fn with_data_operator(mut self, op: Operator, direct: DirectDir) -> Repo {
        self.data_op = Some(op);
        self.direct = Some(Arc::new(direct));
        self
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, Failure> {
        self.op
            .read(path)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| storage(&self.name, &format!("reading {path}"), e))
    }

    async fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>, Failure> {
        self.read_sized(path, 0).await
    }

    /// Reads an object whose size a listing gave (0: unknown). A bounded read asks
    /// the backend for exactly that many bytes; an unbounded one makes some (a local
    /// folder) fill a 2 MiB buffer for a 600-byte header.
    async fn read_sized(&self, path: &str, size: u64) -> Result<Option<Vec<u8>>, Failure> {
        let read = if size > 0 {
            self.op.read_with(path).range(0..size).await
        } else {
            self.op.read(path).await
        };
        match read {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage(&self.name, &format!("reading {path}"), e)),
        }
    }

    /// Reads `len` bytes at `offset` of an object.
    pub async fn read_range(&self, path: &str, offset: u64, len: u32) -> Result<Vec<u8>, Failure> {
        let bytes = self
            .op
            .read_with(path)
            .range(offset..offset + u64::from(len))
            .await
            .map_err(|e| storage(&self.name, &format!("reading {path}"), e))?
            .to_vec();
        if bytes.len() != len as usize {
            return Err(damaged(
                &self.name,
                path,
                "it is shorter than the index says",
            ));
        }
        Ok(bytes)
    }

    /// Reads a whole object into `bytes` (emptied first), made room for `size_hint`
    /// bytes (its size as the index records it; it grows if the object is larger). The
    /// backend's pieces (2 MiB on a local folder) are copied into it one by one, so a
    /// 16 MiB pack costs 16 MiB and a piece, not the pieces and a copy of them all,
    /// and a buffer can serve pack after pack.
    pub async fn read_whole(
        &self,
        path: &str,
        size_hint: u64,
        bytes: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let fail = |e| storage(&self.name, &format!("reading {path}"), e);
        if size_hint >= DIRECT_MIN as u64
            && let Some(direct) = self.direct.clone()
        {
            let (at, mut buf) = (path.to_string(), std::mem::take(bytes));
            let (read, buf) = tokio::task::spawn_blocking(move || {
                let hint = usize::try_from(size_hint).unwrap_or(0);
                let read = direct.read_into(&at, hint, &mut buf);
                (read, buf)
            })
            .await
            .map_err(|e| storage(&self.name, &format!("reading {path}"), e))?;
            *bytes = buf;
            // Refused, missing or failed past the page cache: read as any other
            // object, which says what is wrong as every destination does.
            if let Ok(true) = read {
                return Ok(());
            }
        }
        bytes.clear();
        // Exactly: `reserve` would double a reused buffer a little too small.
        bytes.reserve_exact(usize::try_from(size_hint).unwrap_or(0));
        let reader = self.op.reader(path).await.map_err(fail)?;
        reader.read_into(bytes, ..).await.map_err(fail)?;
        Ok(())
    }

    /// Writes an object that must not exist yet (content-addressed or unique name).
    async fn create(&self, path: &str, bytes: impl Into<Buffer>) -> Result<(), Failure> {
        if let Some(data) = &self.data_op {
            // Every data object is content-addressed or uniquely named: replacing
            // one by the same bytes is harmless, and the rename makes it whole.
            let bytes: Buffer = bytes.into();
            if bytes.len() >= DIRECT_MIN
                && let Some(direct) = self.direct.clone()
            {
                let (at, whole) = (path.to_string(), bytes.to_bytes());
                let fail = |e| storage(&self.name, &format!("writing {path}"), e);
                let written = tokio::task::spawn_blocking(move || direct.write(&at, &whole))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|written| written)
                    .map_err(fail)?;
                if written {
                    return Ok(());
                }
            }
            return data
                .write(path, bytes)
                .await
                .map(|_| ())
                .map_err(|e| storage(&self.name, &format!("writing {path}"), e));
        }
        if !self.creates_if_absent() {
            // No create-if-absent (WebDAV, B2): the same name holds the same bytes.
            return self
                .op
                .write(path, bytes)
                .await
                .map(|_| ())
                .map_err(|e| storage(&self.name, &format!("writing {path}"), e));
        }
        match self.op.write_with(path, bytes).if_not_exists(true).await {
            Ok(_) => Ok(()),
            // The same content-addressed object is there already: nothing to do.
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(()),
            Err(e) => Err(storage(&self.name, &format!("writing {path}"), e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, Failure> {
        Ok(self
            .list_sized(dir)
            .await?
            .into_iter()
            .map(|(path, _)| path)
            .collect())
    }

    /// The objects under `dir` with the size the listing gives (0 where it gives none).
    async fn list_sized(&self, dir: &str) -> Result<Vec<(String, u64)>, Failure> {
        match self.op.list_with(dir).recursive(true).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .map(|e| (e.path().to_string(), e.metadata().content_length()))
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(storage(&self.name, &format!("listing {dir}"), e)),
        }
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        self.op
            .delete(path)
            .await
            .map_err(|e| storage(&self.name, &format!("deleting {path}"), e))
    }

    /// The marker, or `None` when the destination holds no repository.
    pub async fn marker(&self) -> Result<Option<Marker>, Failure> {
        let Some(bytes) = self.read_opt(MARKER).await? else {
            return Ok(None);
        };
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(&self.name, MARKER, &e.to_string()))?;
        if marker.format != "backplan" || marker.version != FORMAT_VERSION {
            return Err(Failure::new(
                Code::RepositoryVersion,
                format!(
                    "destination {} holds repository format {} version {}; this backplan reads version {FORMAT_VERSION}",
                    self.name, marker.format, marker.version
                ),
            ));
        }
        Ok(Some(marker))
    }

    /// Creates the repository (idempotent) and stores the key's copy for recipients.
    pub async fn init(
        &self,
        key: &RepoKey,
        recipients: &Recipients,
        now: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let created = match self.marker().await? {
            Some(_) => false,
            None => {
                let marker = serde_json::to_vec_pretty(&Marker::new(now)).unwrap_or_default();
                self.create(MARKER, marker).await?;
                true
            }
        };
        let key_path = format!("keys/{}", key.id());
        if self.read_opt(&key_path).await?.is_none() {
            let copy = key
                .wrap(recipients)
                .map_err(|e| Failure::new(Code::KeyFileUnreadable, e.0))?;
            self.create(&key_path, copy).await?;
        }
        Ok(created)
    }

    /// The repository key's copy, encrypted to the recipients.
    pub async fn key_copy(&self, key_id: &str) -> Result<Vec<u8>, Failure> {
        self.read_opt(&format!("keys/{key_id}"))
            .await?
            .ok_or_else(|| {
                Failure::new(
                    Code::NoRepositoryKey,
                    format!(
                        "destination {} has no copy of repository key {key_id}",
                        self.name
                    ),
                )
            })
    }

    /// Every key copy's path (`keys/<id>`).
    pub async fn key_copies(&self) -> Result<Vec<String>, Failure> {
        self.list("keys/").await
    }

    /// An object's bytes, `None` when it does not exist.
    pub async fn object(&self, path: &str) -> Result<Option<Vec<u8>>, Failure> {
        self.read_opt(path).await
    }

    /// What `plan` needs, with no key; with the repository key the applied policy's
    /// text too. Problems are recorded in the state, never raised.
    /// `sources`, the reading policy's, pick the applied policy it is compared with
    /// (see `applied_policy`); `None` takes the newest.
    pub async fn read_state(
        &self,
        key: Option<&RepoKey>,
        sources: Option<&[String]>,
    ) -> DestinationState {
        match self.try_read_state(key, sources).await {
            Ok(state) => state,
            Err(f) => DestinationState {
                error: Some(f.message),
                ..DestinationState::default()
            },
        }
    }

    async fn try_read_state(
        &self,
        key: Option<&RepoKey>,
        sources: Option<&[String]>,
    ) -> Result<DestinationState, Failure> {
        if self.marker().await?.is_none() {
            return Ok(DestinationState::default());
        }
        let mut state = DestinationState::default();
        let scan = self.scan_headers().await?;
        for (path, result) in scan.headers {
            match result {
                Ok(h) => state.snapshots.push(h.info()),
                Err(f) => state.damaged.push(format!("{path}: {}", f.message)),
            }
        }
        state.damaged.extend(
            scan.damaged_catalogs
                .into_iter()
                .map(|(path, why)| format!("{path}: {why} (its snapshots were read one by one)")),
        );
        let mut lost = Vec::new();
        for (path, record) in self.lost_records().await? {
            match record {
                Ok(h) => lost.push(h.lost),
                Err(why) => state.damaged.push(format!("{path}: {why}")),
            }
        }
        state.lost = Lost::merged(&lost);
        for (path, record) in self.records::<FailureRecord>(FAILURES_DIR).await? {
            match record {
                Ok(r) => state.failures.push(r.record),
                Err(why) => state.damaged.push(format!("{path}: {why}")),
            }
        }
        if let Some((path, record)) = self.newest_records(VERIFIES_DIR).await?.pop() {
            match record {
                Ok(r) => state.verify = Some(r.record),
                Err(why) => state.damaged.push(format!("{path}: {why}")),
            }
        }
        for (path, record) in self.newest_records::<DrillRecord>(DRILLS_DIR).await? {
            match record {
                Ok(r) => state.drills.push(r.record),
                Err(why) => state.damaged.push(format!("{path}: {why}")),
            }
        }
        state.applied_policy = self.applied_policy(key, sources).await?;
        for (path, result) in self.locks().await? {
            match result {
                Ok(lock) => state.locks.push(lock),
                Err(why) => state.damaged.push(format!("{path}: {why}")),
            }
        }
        Ok(state)
    }

    /// Every snapshot header: from the catalogs where they hold it, the rest read
    /// concurrently.
    pub async fn snapshot_headers(
        &self,
    ) -> Result<Vec<(String, Result<SnapshotHeader, Failure>)>, Failure> {
        Ok(self.scan_headers().await?.headers)
    }

    /// [`Repo::snapshot_headers`], with the catalogs that could not be read.
    pub async fn scan_headers(&self) -> Result<HeaderScan, Failure> {
        let listed = self.list_sized("snapshots/").await?;
        let mut scan = HeaderScan::default();
        let mut cached: HashMap<String, SnapshotHeader> = HashMap::new();
        for (path, size) in self.list_sized(CATALOG_DIR).await? {
            // Deleted by a rewrite since the listing: its successor is listed too,
            // or the snapshots are read one by one.
            let Some(bytes) = self.read_sized(&path, size).await? else {
                continue;
            };
            match object::header::<CatalogHeader>(&bytes) {
                Ok(catalog) => {
                    cached.extend(catalog.snapshots);
                    scan.catalogs.push(path);
                }
                Err(d) => scan.damaged_catalogs.push((path, d.0)),
            }
        }
        let mut missing = Vec::new();
        let mut seen = 0;
        for (path, size) in listed {
            match cached.get(&path) {
                Some(header) => {
                    seen += 1;
                    scan.headers.push((path, Ok(header.clone())));
                }
                None => missing.push((path, size)),
            }
        }
        scan.stale = cached.len() - seen;
        scan.uncatalogued = missing.len();
        let read: Vec<(String, Result<SnapshotHeader, Failure>)> = futures::stream::iter(missing)
            .map(|(path, size)| async move {
                let result = match self.read_sized(&path, size).await {
                    Ok(Some(bytes)) => object::header::<SnapshotHeader>(&bytes)
                        .map_err(|d| damaged(&self.name, &path, &d.0)),
                    // Deleted (pruned) between the listing and the read: not damaged.
                    Ok(None) => return None,
                    Err(f) => Err(f),
                };
                Some((path, result))
            })
            .buffer_unordered(READ_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        scan.headers.extend(read);
        Ok(scan)
    }

    /// Rewrites the snapshot catalog when it has fallen behind: one new object with
    /// every readable header, then the old catalogs deleted (write new, then delete
    /// old). Racing rewrites leave two catalogs, which readers merge; the next rewrite
    /// folds them. Returns whether it wrote one.
    pub async fn compact_catalog(&self) -> Result<bool, Failure> {
        let scan = self.scan_headers().await?;
        if scan.uncatalogued < CATALOG_SLACK
            && scan.stale < CATALOG_SLACK
            && scan.catalogs.len() <= 1
            && scan.damaged_catalogs.is_empty()
        {
            return Ok(false);
        }
        let catalog = CatalogHeader {
            format: FORMAT_VERSION,
            snapshots: scan
                .headers
                .into_iter()
                .filter_map(|(path, h)| Some((path, h.ok()?)))
                .collect(),
        };
        let bytes = object::encode(&catalog, &[]);
        let name = format!("{CATALOG_DIR}{}", blake3::hash(&bytes).to_hex());
        self.create(&name, bytes).await?;
        let old = self.list(CATALOG_DIR).await?;
        for path in old.into_iter().filter(|p| *p != name) {
            // Only those this rewrite read, or that were damaged: a catalog another
            // rewrite wrote meanwhile may hold snapshots this one did not see.
            let read = scan.catalogs.contains(&path)
                || scan.damaged_catalogs.iter().any(|(d, _)| *d == path);
            if read {
                self.delete(&path).await?;
            }
        }
        Ok(true)
    }

    /// The applied policy a policy backing up `sources` is compared with: several
    /// hosts or policies may share a repository, each with its own sources, and each
    /// compares with its own last apply, not with another's. Of the newest
    /// [`POLICY_LOOKBACK`] records, the one with the most source names in common
    /// (the newest of those); with none in common (all sources renamed, or records
    /// of earlier builds, which name none), the newest. `None`: the newest.
    async fn applied_policy(
        &self,
        key: Option<&RepoKey>,
        sources: Option<&[String]>,
    ) -> Result<Option<AppliedPolicy>, Failure> {
        let mut paths = self.list("policies/").await?;
        // Names start with the time they were applied: the last is the newest.
        paths.sort();
        let mut best: Option<(usize, PolicyHeader, Vec<u8>)> = None;
        for path in paths.iter().rev().take(POLICY_LOOKBACK) {
            let bytes = self.read(path).await?;
            let (header, body) = object::decode::<PolicyHeader>(&bytes)
                .map_err(|d| damaged(&self.name, path, &d.0))?;
            let Some(ours) = sources else {
                best = Some((0, header, body.to_vec()));
                break;
            };
            let common = header.sources.iter().filter(|s| ours.contains(s)).count();
            let exact = common == ours.len() && header.sources.len() == ours.len();
            if best.as_ref().is_none_or(|(c, _, _)| common > *c) {
                best = Some((common, header, body.to_vec()));
            }
            if exact {
                break;
            }
        }
        let Some((_, header, body)) = best else {
            return Ok(None);
        };
        let text = match key {
            Some(k) if k.id() == header.key_id => k
                .open(&body)
                .ok()
                .map(|t| String::from_utf8_lossy(&t).into_owned()),
            _ => None,
        };
        Ok(Some(AppliedPolicy {
            digest: header.digest,
            applied_at: header.applied_at,
            text,
        }))
    }

    /// Stores the policy an apply ran with.
    pub async fn put_policy(
        &self,
        key: &RepoKey,
        text: &str,
        digest: &str,
        sources: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let header = PolicyHeader {
            format: FORMAT_VERSION,
            key_id: key.id(),
            digest: digest.to_string(),
            applied_at: now,
            sources: sources.to_vec(),
        };
        let body = key
            .seal(text.as_bytes())
            .map_err(|e| Failure::new(Code::Io, e.0))?;
        let name = format!(
            "policies/{}-{}",
            now.format("%Y%m%dT%H%M%S%.6fZ"),
            &digest[..16.min(digest.len())]
        );
        self.create(&name, object::encode(&header, &body)).await
    }

    /// The `lost/` objects, each parsed (or why not).
    pub async fn lost_records(&self) -> Result<Vec<(String, Result<LostHeader, String>)>, Failure> {
        let mut out = Vec::new();
        for (path, size) in self.list_sized(LOST_DIR).await? {
            // Replaced by a verify or a repair since the listing.
            let Some(bytes) = self.read_sized(&path, size).await? else {
                continue;
            };
            out.push((path, object::header::<LostHeader>(&bytes).map_err(|d| d.0)));
        }
        Ok(out)
    }

    /// Records what was found lost (write new; the caller deletes the records this
    /// one replaces). Returns its path.
    pub async fn put_lost(&self, lost: &Lost, now: DateTime<Utc>) -> Result<String, Failure> {
        let header = LostHeader {
            format: FORMAT_VERSION,
            written: now,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            lost: lost.clone(),
        };
        let bytes = object::encode(&header, &[]);
        let path = format!("{LOST_DIR}{}", blake3::hash(&bytes).to_hex());
        self.create(&path, bytes).await?;
        Ok(path)
    }

    /// Records why a backup failed, beside its failed snapshot (written before the
    /// snapshot's header; deleted with it).
    pub async fn put_failure(&self, record: &FailureRecord) -> Result<(), Failure> {
        let path = format!("{FAILURES_DIR}{}", record.snapshot);
        self.put_record(path, record).await.map(|_| ())
    }

    /// Records a `verify` run. Returns its path.
    pub async fn put_verify(&self, record: &VerifyRecord) -> Result<String, Failure> {
        self.put_dated(VERIFIES_DIR.to_string(), record.finished, record)
            .await
    }

    /// Records a restore drill of one source. Returns its path.
    pub async fn put_drill(&self, record: &DrillRecord) -> Result<String, Failure> {
        self.put_dated(
            format!("{DRILLS_DIR}{}/", record.source),
            record.finished,
            record,
        )
        .await
    }

    /// Writes a record named `<dir><time>-<hash>`: listed in name order, the last
    /// one is the newest.
    async fn put_dated<R: serde::Serialize>(
        &self,
        dir: String,
        at: DateTime<Utc>,
        record: &R,
    ) -> Result<String, Failure> {
        let hash = blake3::hash(&serde_json::to_vec(record).unwrap_or_default()).to_hex();
        let path = format!("{dir}{}-{}", at.format("%Y%m%dT%H%M%S%.6fZ"), &hash[..16]);
        self.put_record(path, record).await
    }

    async fn put_record<R: serde::Serialize>(
        &self,
        path: String,
        record: &R,
    ) -> Result<String, Failure> {
        let header = RecordHeader {
            format: FORMAT_VERSION,
            written: Utc::now(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            record,
        };
        self.create(&path, object::encode(&header, &[])).await?;
        Ok(path)
    }

    /// Every record under `dir`, each parsed (or why not).
    async fn records<R: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
    ) -> Result<Vec<(String, Result<RecordHeader<R>, String>)>, Failure> {
        let mut out = Vec::new();
        for (path, size) in self.list_sized(dir).await? {
            out.extend(self.record(path, size).await?);
        }
        Ok(out)
    }

    /// The newest record under `dir` and the newest of each folder in it (records
    /// are named after their time), each parsed (or why not).
    async fn newest_records<R: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
    ) -> Result<Vec<(String, Result<RecordHeader<R>, String>)>, Failure> {
        let mut newest: std::collections::BTreeMap<String, (String, u64)> = Default::default();
        for (path, size) in self.list_sized(dir).await? {
            let folder = path.rsplit_once('/').map_or("", |(f, _)| f).to_string();
            match newest.get(&folder) {
                Some((p, _)) if *p >= path => {}
                _ => {
                    newest.insert(folder, (path, size));
                }
            }
        }
        let mut out = Vec::new();
        for (path, size) in newest.into_values() {
            out.extend(self.record(path, size).await?);
        }
        Ok(out)
    }

    /// One record, `None` when it was deleted since it was listed.
    async fn record<R: serde::de::DeserializeOwned>(
        &self,
        path: String,
        size: u64,
    ) -> Result<Option<(String, Result<RecordHeader<R>, String>)>, Failure> {
        let Some(bytes) = self.read_sized(&path, size).await? else {
            return Ok(None);
        };
        let parsed = object::header::<RecordHeader<R>>(&bytes).map_err(|d| d.0);
        Ok(Some((path, parsed)))
    }

    /// Reads a pack whole and checks it against its name; `Err` only when the
    /// storage cannot be read.
    pub async fn read_pack(&self, id: &str) -> Result<PackRead, Failure> {
        let path = super::format::pack_path(id);
        let Some(bytes) = self.read_opt(&path).await? else {
            return Ok(PackRead::Missing);
        };
        if blake3::hash(&bytes).to_hex().as_str() != id {
            return Ok(PackRead::Damaged(
                "its content does not match its name".into(),
            ));
        }
        Ok(PackRead::Intact(bytes))
    }

    /// Every index object, merged, with what `lost/` records. Each object is added
    /// pack by pack as it arrives, so memory holds the compact index, the objects in
    /// flight and the JSON of one object of at most [`WHOLE_INDEX_OBJECT`] (a larger
    /// one is parsed as it is decompressed), never a record list whole.
    pub async fn load_index(&self, key: &RepoKey) -> Result<Index, Failure> {
        // A damaged record of lost packs hides nothing: `plan` and `verify` name it.
        let records = self.lost_records().await?;
        let lost = Lost::merged(
            records
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().map(|h| &h.lost)),
        );
        let mut index = Index::new(lost, records.into_iter().map(|(path, _)| path).collect());
        let paths = self.list("index/").await?;
        let mut bodies = futures::stream::iter(paths)
            .map(|path| async move {
                let r = self.read(&path).await;
                (path, r)
            })
            .buffer_unordered(READ_CONCURRENCY);
        while let Some((path, bytes)) = bodies.next().await {
            let bytes = bytes?;
            let opened = object::decode::<SealedHeader>(&bytes)
                .map_err(|d| d.0)
                .and_then(|(header, body)| {
                    if header.key_id != key.id() {
                        return Ok(None);
                    }
                    key.open(body).map(Some).map_err(|e| e.0)
                });
            drop(bytes);
            let read = match opened {
                // An object written under the bound (about 0.8 MiB) is read whole,
                // which is quicker; a larger one (an earlier build's) as a stream.
                Ok(Some(plain)) if plain.len() <= WHOLE_INDEX_OBJECT => {
                    zstd::decode_all(&plain[..])
                        .map_err(|e| e.to_string())
                        .and_then(|json| {
                            index.read_object(path.clone(), serde_json::de::SliceRead::new(&json))
                        })
                }
                Ok(Some(plain)) => zstd::Decoder::new(&plain[..])
                    .map_err(|e| e.to_string())
                    .and_then(|json| {
                        let json = std::io::BufReader::with_capacity(1 << 16, json);
                        index.read_object(path.clone(), serde_json::de::IoRead::new(json))
                    }),
                // Written under another repository key: its chunk ids live in
                // another id space and cannot be reused; its packs stay for restores.
                Ok(None) => {
                    index.foreign.push(path);
                    continue;
                }
                Err(why) => Err(why),
            };
            // A damaged index object must not stop backups: its chunks are stored
            // again, `verify` names it, and no prune collects a pack while an index
            // cannot be read.
            if let Err(why) = read {
                index.damaged.push(format!("{path}: {why}"));
            }
        }
        index.finish();
        Ok(index)
    }

    /// Whether `index` still holds for a backup: every index object it was read from
    /// is still there, and the records of lost packs are the ones it read. Then every
    /// chunk it lists is still stored: a prune or a gc that deletes packs replaces the
    /// index objects that list them. Objects written since (by other backups) are not
    /// read; a chunk only they list is stored again, never taken as present.
    pub async fn index_still_holds(&self, index: &Index) -> Result<bool, Failure> {
        let listed: HashSet<String> = self.list("index/").await?.into_iter().collect();
        if !index
            .objects
            .iter()
            .chain(&index.foreign)
            .all(|o| listed.contains(o))
        {
            return Ok(false);
        }
        let mut lost = self.list(LOST_DIR).await?;
        let mut read = index.lost_objects.clone();
        lost.sort();
        read.sort();
        Ok(lost == read)
    }

    /// Writes a pack (data first): a buffer of its own, or shared bytes such as a
    /// backup's pooled pack, which go back to their pool once written.
    pub async fn put_pack(
        &self,
        bytes: impl Into<Buffer>,
        record: &PackRecord,
    ) -> Result<(), Failure> {
        self.create(&record.path(), bytes).await
    }

    /// Writes the index objects listing `packs` (at least one, each with at most
    /// [`INDEX_OBJECT_CHUNKS`] chunk records unless one pack holds more); returns
    /// their paths.
    pub async fn put_index(
        &self,
        key: &RepoKey,
        packs: Vec<PackRecord>,
    ) -> Result<Vec<String>, Failure> {
        let mut paths = Vec::new();
        for packs in index_objects(packs) {
            let body = IndexBody {
                packs,
                retired: Vec::new(),
            };
            paths.push(self.put_index_body(key, &body).await?);
        }
        Ok(paths)
    }

    /// Writes an index object; returns its path.
    pub async fn put_index_body(&self, key: &RepoKey, body: &IndexBody) -> Result<String, Failure> {
        let bytes = seal_json(key, body)?;
        let path = format!("index/{}", blake3::hash(&bytes).to_hex());
        self.create(&path, bytes).await?;
        Ok(path)
    }

    /// Writes a snapshot: its tree, then its header (the manifest is written last).
    /// Returns the date its Object Lock ends, when the destination has one.
    pub async fn put_snapshot(
        &self,
        key: &RepoKey,
        info: &SnapshotInfo,
        tree: &PackedTree,
    ) -> Result<Option<DateTime<Utc>>, Failure> {
        let tree_bytes = seal(key, tree.compressed())?;
        let tree_hash = blake3::hash(&tree_bytes).to_hex().to_string();
        self.put_snapshot_objects(key.id(), info, tree_bytes, tree_hash)
            .await
    }

    /// Writes a snapshot whose tree object is already encoded (a copy from another
    /// destination keeps it byte for byte).
    pub async fn put_snapshot_objects(
        &self,
        key_id: String,
        info: &SnapshotInfo,
        tree_bytes: Vec<u8>,
        tree_hash: String,
    ) -> Result<Option<DateTime<Utc>>, Failure> {
        self.create(&format!("trees/{}", info.id), tree_bytes)
            .await?;
        let mut snapshot = info.clone();
        // Every object of the snapshot (its packs, its tree) is written before this
        // header, so the lock of each ends before this time: once it has passed,
        // the whole snapshot can be deleted. (A copy's record of another
        // destination's lock is replaced.)
        snapshot.retain_until = self.lock_period.map(|p| chrono::Utc::now() + p);
        let size = snapshot.size.take();
        let header = SnapshotHeader {
            format: FORMAT_VERSION,
            key_id,
            snapshot,
            tree_hash,
            size,
        };
        let retain_until = header.snapshot.retain_until;
        self.create(
            &format!("snapshots/{}", info.id),
            object::encode(&header, &[]),
        )
        .await?;
        Ok(retain_until)
    }

    /// A snapshot's header and the raw bytes of its tree object.
    pub async fn snapshot_objects(&self, id: &str) -> Result<(SnapshotHeader, Vec<u8>), Failure> {
        let path = format!("snapshots/{id}");
        let bytes = self.read_opt(&path).await?.ok_or_else(|| {
            Failure::new(
                Code::SnapshotNotFound,
                format!("destination {} has no snapshot {id}", self.name),
            )
        })?;
        let header: SnapshotHeader =
            object::header(&bytes).map_err(|d| damaged(&self.name, &path, &d.0))?;
        let tree_path = format!("trees/{id}");
        let tree = self.read(&tree_path).await?;
        if blake3::hash(&tree).to_hex().as_str() != header.tree_hash {
            return Err(damaged(
                &self.name,
                &tree_path,
                "it does not match its snapshot's checksum",
            ));
        }
        Ok((header, tree))
    }

    /// A snapshot's header and tree, opened with the repository key.
    pub async fn read_snapshot(
        &self,
        key: &RepoKey,
        id: &str,
    ) -> Result<(SnapshotHeader, Tree), Failure> {
        self.read_snapshot_as(key, id, decode_tree).await
    }

    /// [`Repo::read_snapshot`], its tree to be walked entry by entry.
    pub async fn read_snapshot_packed(
        &self,
        key: &RepoKey,
        id: &str,
    ) -> Result<(SnapshotHeader, PackedTree), Failure> {
        self.read_snapshot_as(key, id, open_tree).await
    }

    /// A snapshot's header and its tree object decoded by `decode`.
    async fn read_snapshot_as<T>(
        &self,
        key: &RepoKey,
        id: &str,
        decode: fn(&RepoKey, &[u8]) -> Result<T, String>,
    ) -> Result<(SnapshotHeader, T), Failure> {
        let (header, bytes) = self.snapshot_objects(id).await?;
        if header.key_id != key.id() {
            return Err(Failure::new(
                Code::NoRepositoryKey,
                format!(
                    "snapshot {id} on {} was written under repository key {}, not {}",
                    self.name,
                    header.key_id,
                    key.id()
                ),
            ));
        }
        let tree =
            decode(key, &bytes).map_err(|why| damaged(&self.name, &format!("trees/{id}"), &why))?;
        Ok((header, tree))
    }

    /// Deletes a snapshot: the header first (it stops existing), then its tree and
    /// the record of its failure (if it failed).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Failure> {
        self.delete(&format!("snapshots/{id}")).await?;
        self.delete(&format!("trees/{id}")).await?;
        self.delete(&format!("{FAILURES_DIR}{id}")).await
    }

    /// Every pack object's path and size.
    pub async fn pack_objects(&self) -> Result<HashMap<String, PackObject>, Failure> {
        match self.op.list_with("packs/").recursive(true).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .map(|e| {
                    let m = e.metadata();
                    let object = PackObject {
                        size: m.content_length(),
                        modified: m
                            .last_modified()
                            .map(|t| DateTime::<Utc>::from(std::time::SystemTime::from(t))),
                    };
                    (e.path().to_string(), object)
                })
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(storage(&self.name, "listing packs/", e)),
        }
    }

    /// Every lock, parsed, with what became of its holder as far as this host can
    /// tell ([`super::lock::holder`]).
    pub async fn locks(&self) -> Result<Vec<(String, Result<LockInfo, String>)>, Failure> {
        let paths = self.list("locks/").await?;
        let mut out = Vec::new();
        for path in paths {
            let result = match self.read_opt(&path).await? {
                Some(bytes) => serde_json::from_slice::<LockInfo>(&bytes)
                    .map(|mut lock| {
                        lock.holder = super::lock::holder(&lock);
                        lock
                    })
                    .map_err(|e| e.to_string()),
                // Released between the listing and the read.
                None => continue,
            };
            out.push((path, result));
        }
        Ok(out)
    }

    pub async fn put_lock(&self, path: &str, lock: &LockInfo) -> Result<bool, Failure> {
        let bytes = serde_json::to_vec(lock).unwrap_or_default();
        // A shared lock has a random name of its own: it can go through the atomic
        // rename, so a killed backup never leaves a truncated lock. The exclusive
        // lock needs create-if-absent, which a rename would not give.
        if lock.kind == crate::inventory::LockKind::Shared
            && let Some(data) = &self.data_op
        {
            return data
                .write(path, bytes)
                .await
                .map(|_| true)
                .map_err(|e| storage(&self.name, &format!("writing {path}"), e));
        }
        if !self.creates_if_absent() {
            // Every lock has a name of its own here ([`super::lock::acquire`]).
            return self
                .op
                .write(path, bytes)
                .await
                .map(|_| true)
                .map_err(|e| storage(&self.name, &format!("writing {path}"), e));
        }
        match self.op.write_with(path, bytes).if_not_exists(true).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(storage(&self.name, &format!("writing {path}"), e)),
        }
    }

    /// Whether the service can write an object only if it is absent (S3, GCS, Azure
    /// Blob, SFTP, a local folder can; WebDAV and B2 cannot).
    pub fn creates_if_absent(&self) -> bool {
        self.op.info().capability().write_with_if_not_exists
    }

    /// Rewrites the caller's own lock (to push its expiry out).
    pub async fn refresh_lock(&self, path: &str, lock: &LockInfo) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(lock).unwrap_or_default();
        // Through the atomic rename where there is one: a reader never sees half.
        self.data_op
            .as_ref()
            .unwrap_or(&self.op)
            .write(path, bytes)
            .await
            .map(|_| ())
            .map_err(|e| storage(&self.name, &format!("writing {path}"), e))
    }
}

/// `packs` in groups of at most [`INDEX_OBJECT_CHUNKS`] chunk records (a pack with
/// more alone), in order; always at least one group.
pub fn index_objects(packs: Vec<PackRecord>) -> Vec<Vec<PackRecord>> {
    let mut batch = IndexBatch::default();
    let mut groups: Vec<Vec<PackRecord>> =
        packs.into_iter().filter_map(|p| batch.push(p)).collect();
    groups.push(batch.rest());
    groups
}

/// Packs gathered into the groups index objects list: at most
/// [`INDEX_OBJECT_CHUNKS`] chunk records each (a pack with more alone).
#[derive(Debug, Default)]
pub struct IndexBatch {
    packs: Vec<PackRecord>,
    records: usize,
}

impl IndexBatch {
    /// Adds a pack; returns the group it does not fit in, which is full.
    pub fn push(&mut self, pack: PackRecord) -> Option<Vec<PackRecord>> {
        let full = (self.records + pack.chunks.len() > INDEX_OBJECT_CHUNKS
            && !self.packs.is_empty())
        .then(|| self.rest());
        self.records += pack.chunks.len();
        self.packs.push(pack);
        full
    }

    /// The group being gathered, which may be empty.
    pub fn rest(&mut self) -> Vec<PackRecord> {
        self.records = 0;
        std::mem::take(&mut self.packs)
    }
}

/// A sealed object: `value` as zstd-compressed JSON, sealed with the repository key,
/// in the envelope whose public header names the key. The JSON is compressed as it
/// is written, never held whole.
fn seal_json<T: serde::Serialize>(key: &RepoKey, value: &T) -> Result<Vec<u8>, Failure> {
    let io = |e: std::io::Error| Failure::new(Code::Io, e.to_string());
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).map_err(io)?;
    let mut json = std::io::BufWriter::new(&mut encoder);
    serde_json::to_writer(&mut json, value).map_err(|e| io(e.into()))?;
    std::io::Write::flush(&mut json).map_err(io)?;
    drop(json);
    seal(key, &encoder.finish().map_err(io)?)
}

/// A sealed object of compressed JSON.
fn seal(key: &RepoKey, compressed: &[u8]) -> Result<Vec<u8>, Failure> {
    let body = key
        .seal(compressed)
        .map_err(|e| Failure::new(Code::Io, e.0))?;
    let header = SealedHeader {
        format: FORMAT_VERSION,
        key_id: key.id(),
    };
    Ok(object::encode(&header, &body))
}

/// Opens a tree object, to be walked entry by entry (its body stays compressed).
pub fn open_tree(key: &RepoKey, bytes: &[u8]) -> Result<PackedTree, String> {
    PackedTree::new(open_sealed(key, bytes)?)
}

/// A sealed object's body, opened with the repository key.
fn open_sealed(key: &RepoKey, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (_, body) = object::decode::<SealedHeader>(bytes).map_err(|d| d.0)?;
    key.open(body).map_err(|e| e.0)
}

/// Decodes a tree object whole.
pub fn decode_tree(key: &RepoKey, bytes: &[u8]) -> Result<Tree, String> {
    open_tree(key, bytes)?.whole()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;
    use crate::crypto::keys::ChunkId;
    use crate::repo::format::ChunkRecord;

    fn pack(name: &str, chunks: usize) -> PackRecord {
        let record = ChunkRecord {
            id: ChunkId([1; 32]),
            key_set: 0,
            offset: 14,
            length: 1,
            raw_length: 1,
        };
        PackRecord {
            id: name.into(),
            size: 15,
            key_sets: vec![(10, 4)],
            chunks: vec![record; chunks],
        }
    }

    fn names(groups: &[Vec<PackRecord>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|p| p.id.as_str()).collect())
            .collect()
    }

    /// How many of a file's pages the page cache holds (util-linux's `fincore`);
    /// `None` without it.
    fn cached_pages(path: &std::path::Path) -> Option<u64> {
        let out = std::process::Command::new("fincore")
            .args(["--raw", "--noheadings", "--output", "PAGES"])
            .arg(path)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// A local folder's packs go to the disk past the page cache and are read back
    /// the same way; smaller objects go through it, and a missing pack is an error as
    /// on any destination.
    #[tokio::test]
    async fn a_local_folder_keeps_packs_out_of_the_page_cache() {
        let dir = tempfile::tempdir().expect("a folder");
        let root = dir.path().to_path_buf();
        let fs = |atomic: bool| {
            let mut builder = opendal::services::Fs::default().root(&root.to_string_lossy());
            if atomic {
                builder = builder.atomic_write_dir(&root.join(".tmp").to_string_lossy());
            }
            Operator::new(builder).expect("fs")
        };
        let direct = DirectDir::new(root.clone(), root.join(".tmp"));
        let repo = Repo::new("local", fs(false)).with_data_operator(fs(true), direct);
        let pack: Vec<u8> = (0..(3 << 20) + 5)
            .map(|i: u32| (i * 7 % 251) as u8)
            .collect();
        repo.create("packs/ab/abc", pack.clone())
            .await
            .expect("a pack");
        repo.create("index/small", vec![1u8; 5000])
            .await
            .expect("an index object");
        let (Some(pack_pages), Some(small_pages)) = (
            cached_pages(&root.join("packs/ab/abc")),
            cached_pages(&root.join("index/small")),
        ) else {
            eprintln!("no fincore: the page cache is not looked at");
            return;
        };
        // tmpfs (before Linux 6.6) refuses O_DIRECT: there packs are cached too.
        let refused = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(root.join("index/small"))
            .is_err();
        if !refused {
            assert_eq!(pack_pages, 0, "the pack is not in the page cache");
        }
        assert!(small_pages > 0, "a small object is");
        let mut back = vec![9u8; 100];
        repo.read_whole("packs/ab/abc", pack.len() as u64, &mut back)
            .await
            .expect("read");
        assert!(back == pack, "the pack reads back whole");
        if !refused {
            assert_eq!(cached_pages(&root.join("packs/ab/abc")), Some(0));
        }
        assert_eq!(
            std::fs::read(root.join("packs/ab/abc")).expect("read"),
            pack
        );
        let missing = repo.read_whole("packs/cd/cde", 1 << 21, &mut back).await;
        let failure = missing.expect_err("no such pack");
        assert_eq!(failure.code, Code::DestinationUnreadable);
        assert!(
            failure.message.contains("packs/cd/cde"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn index_objects_hold_at_most_the_bound_of_chunk_records_and_a_larger_pack_alone() {
        let half = INDEX_OBJECT_CHUNKS / 2;
        let groups = index_objects(vec![
            pack("a", half),
            pack("b", half),
            pack("c", 1),
            pack("d", INDEX_OBJECT_CHUNKS + 1),
            pack("e", 0),
            pack("f", 3),
        ]);
        assert_eq!(
            names(&groups),
            [vec!["a", "b"], vec!["c"], vec!["d"], vec!["e", "f"]]
        );
        assert_eq!(names(&index_objects(Vec::new())), [Vec::<&str>::new()]);
    }
}
