//! The restore side of the pipeline: a [`ChunkSource`] that reads packs from a
//! repository, checks each pack against its name, decrypts chunks with a recipient's
//! secret key, decompresses them and checks each against its keyed hash. It keeps the
//! last few packs in memory (tree order follows pack order), shared with its twins,
//! so memory stays bounded and each pack is read once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Scope;

use crate::crypto::SecretKeys;
use crate::crypto::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::pipeline::pool::{Pool, Pooled};
use crate::repo::format::pack_path;
use crate::repo::store::{Index, Repo};

/// How many whole packs are kept in memory.
const PACK_CACHE: usize = 6;
/// How many a fetcher and its twins keep between them: lanes take alternate chunks
/// of the same packs, so they need the pack at hand and the next ones.
const SHARED_PACK_CACHE: usize = 4;

/// Pack buffers kept for the next packs read: as many as can be in use at once (the
/// cache's packs and one per lane), so a restore allocates them once (see
/// [`crate::pipeline::pool`]).
const SPARE_PACKS: usize = PACK_CACHE + MAX_LANES;

type Loaded = Result<Arc<Pooled>, Failure>;
/// A pack's slot: filled once, by whichever lane wants it first.
type Slot = (Arc<str>, Arc<OnceLock<Loaded>>);

/// The last packs read, shared by a fetcher and its twins, so that each pack is read
/// and checked once however many lanes take chunks of it. A pack being read by one
/// lane is waited for by the others, not read again.
struct PackCache {
    slots: Mutex<VecDeque<Slot>>,
    size: AtomicUsize,
    spares: Arc<Pool>,
}

impl PackCache {
    fn new(size: usize) -> PackCache {
        PackCache {
            slots: Mutex::new(VecDeque::new()),
            size: AtomicUsize::new(size),
            spares: Pool::new(SPARE_PACKS),
        }
    }

    /// The pack `id`, read with `load` unless it is at hand or being read.
    fn get(&self, id: &Arc<str>, load: impl FnOnce() -> Loaded) -> Loaded {
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.iter().find(|(p, _)| p == id) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceLock::new());
                    while slots.len() >= self.size.load(Ordering::Relaxed).max(1) {
                        slots.pop_front();
                    }
                    slots.push_back((id.clone(), cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_init(load).clone()
    }
}

/// Reads, decrypts and checks chunks of one repository.
pub struct RepoFetcher {
    repo: Repo,
    index: Arc<Index>,
    hasher: ChunkHasher,
    secret: Arc<SecretKeys>,
    runtime: tokio::runtime::Handle,
    /// Shared with the twins.
    cache: Arc<PackCache>,
    /// One decompression context for every chunk.
    decompressor: zstd::bulk::Decompressor<'static>,
    /// The buffer chunks are decrypted into, chunk after chunk.
    opened: Vec<u8>,
    /// Encrypted bytes read from storage, by this fetcher and its twins.
    fetched: Arc<AtomicU64>,
    /// Whether a pack is checked whole against its name when it is read.
    check_packs: bool,
}

impl std::fmt::Debug for RepoFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoFetcher")
            .field("repo", &self.repo.name)
            .field("bytes_fetched", &self.bytes_fetched())
            .finish_non_exhaustive()
    }
}

impl RepoFetcher {
    /// `runtime` runs the storage reads; the fetcher itself runs on a blocking thread.
    pub fn new(
        repo: Repo,
        index: Arc<Index>,
        key: &RepoKey,
        secret: Arc<SecretKeys>,
        runtime: tokio::runtime::Handle,
    ) -> RepoFetcher {
        RepoFetcher {
            repo,
            index,
            hasher: key.chunk_id(),
            secret,
            runtime,
            cache: Arc::new(PackCache::new(PACK_CACHE)),
            decompressor: zstd::bulk::Decompressor::new().expect("a zstd context"),
            opened: Vec::new(),
            fetched: Arc::new(AtomicU64::new(0)),
            check_packs: true,
        }
    }

    /// A fetcher that checks only the chunks it hands out, not the packs they come
    /// from whole: each chunk still decrypts only if unchanged (the OpenPGP packet's
    /// integrity check) and must match its keyed id, so a restore writes nothing
    /// damaged, and a damaged byte in a part of a pack it does not use no longer
    /// stops it. Hashing every pack whole was a second pass over all the bytes read,
    /// on the lane that loads the pack while the other lanes wait for it. `verify
    /// --read-data` keeps checking packs whole, to name a damaged one.
    pub fn checking_chunks_only(mut self) -> RepoFetcher {
        self.check_packs = false;
        self
    }

    /// Encrypted bytes read from storage, by this fetcher and its twins.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// A whole pack, checked against its name (its BLAKE3).
    fn pack(&self, id: &Arc<str>) -> Loaded {
        self.cache.get(id, || {
            let path = pack_path(id);
            let size = self.index.pack(id).map_or(0, |p| p.size());
            let mut bytes = self.cache.spares.take();
            self.runtime
                .block_on(self.repo.read_whole(&path, size, &mut bytes))?;
            self.fetched
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if self.check_packs && blake3::hash(&bytes).to_hex().as_str() != &**id {
                return Err(Failure::new(
                    Code::CorruptObject,
                    format!(
                        "destination {}: object {path} is damaged: its content does not match its name",
                        self.repo.name
                    ),
                ));
            }
            Ok(Arc::new(Pooled::new(bytes, self.cache.spares.clone())))
        })
    }
}

impl ChunkSource for RepoFetcher {
    /// A fetcher of the same repository sharing this one's packs, which then keep
    /// `SHARED_PACK_CACHE` packs between them.
    fn twin(&mut self) -> Option<Box<dyn ChunkSource + Send>> {
        self.cache.size.store(SHARED_PACK_CACHE, Ordering::Relaxed);
        Some(Box::new(RepoFetcher {
            repo: self.repo.clone(),
            index: self.index.clone(),
            hasher: self.hasher.clone(),
            secret: self.secret.clone(),
            runtime: self.runtime.clone(),
            cache: self.cache.clone(),
            decompressor: zstd::bulk::Decompressor::new().ok()?,
            opened: Vec::new(),
            fetched: self.fetched.clone(),
            check_packs: self.check_packs,
        }))
    }

    /// From the index, which records it; the fetch tells a chunk it lacks.
    fn length(&mut self, id: &ChunkId) -> Result<u64, Failure> {
        match self.index.locate(id) {
            Some(loc) => Ok(u64::from(loc.raw_length)),
            None => self.fetch(id).map(|b| b.len() as u64),
        }
    }

    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, Failure> {
        let index = self.index.clone();
        let loc = index.locate(id).ok_or_else(|| {
            let damaged = if index.damaged.is_empty() {
                String::new()
            } else {
                format!(" (damaged index objects: {})", index.damaged.join("; "))
            };
            Failure::new(
                Code::VerifyFailed,
                format!(
                    "chunk {} is in no pack of {}{damaged}",
                    id.to_hex(),
                    self.repo.name
                ),
            )
        })?;
        let (ks_off, ks_len) = index.key_set(&loc).ok_or_else(|| {
            Failure::new(
                Code::CorruptObject,
                format!("pack {} lists no key set {}", loc.pack, loc.key_set),
            )
        })?;
        let secret = self.secret.clone();
        let name = self.repo.name.clone();
        let pack = self.pack(&loc.pack)?;
        let pack: &[u8] = &pack;
        let slice = |off: u64, len: u32| pack.get(off as usize..off as usize + len as usize);
        let (Some(key_set), Some(packet)) = (slice(ks_off, ks_len), slice(loc.offset, loc.length))
        else {
            return Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "destination {name}: pack {} is shorter than the index says",
                    loc.pack
                ),
            ));
        };
        let range = secret
            .decrypt_into(key_set, packet, &mut self.opened)
            .map_err(|e| {
                Failure::new(
                    Code::CorruptObject,
                    format!(
                        "destination {name}: a chunk of pack {} does not decrypt: {e}",
                        loc.pack
                    ),
                )
            })?;
        let plain = self
            .decompressor
            .decompress(&self.opened[range], loc.raw_length as usize)
            .map_err(|e| {
                Failure::new(
                    Code::CorruptObject,
                    format!(
                        "destination {name}: a chunk of pack {} does not decompress: {e}",
                        loc.pack
                    ),
                )
            })?;
        if self.hasher.id(&plain) != *id {
            return Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "destination {name}: chunk {} of pack {} does not match its id",
                    id.to_hex(),
                    loc.pack
                ),
            ));
        }
        Ok(plain)
    }
}

/// Chunks fetched ahead of a restore, per lane (each up to the largest chunk, 4 MiB).
const AHEAD: usize = 4;
/// At most this many lanes fetch at once, whatever the cores.
const MAX_LANES: usize = 4;

/// Fetches chunks on threads of their own, in the order a restore will ask for them,
/// so that decrypting, decompressing and checking the next chunks overlaps with
/// writing this one. With a source that has twins, one lane per core (less one for
/// the writer, at least two) takes every n-th chunk. The restore must ask in exactly
/// that order.
#[derive(Debug)]
pub struct Prefetch {
    lanes: Vec<Receiver<Fetched>>,
    next: usize,
}

impl Prefetch {
    /// Starts fetching `order` from `source` (and its twins) on threads of `scope`;
    /// each stops at its first error, or when this value is dropped.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        source: &'env mut (dyn ChunkSource + Send),
        order: Vec<ChunkId>,
    ) -> Prefetch {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = cores.saturating_sub(1).clamp(2, MAX_LANES);
        let mut twins: Vec<Box<dyn ChunkSource + Send>> = Vec::new();
        while twins.len() + 1 < wanted {
            match source.twin() {
                Some(t) => twins.push(t),
                None => break,
            }
        }
        let count = twins.len() + 1;
        // Lane k fetches chunks k, k + count, k + 2·count, …
        let ids =
            |k: usize| -> Vec<ChunkId> { order.iter().skip(k).step_by(count).copied().collect() };
        let mut lanes = vec![lane(scope, move |id| source.fetch(id), ids(0))];
        for (k, mut twin) in twins.into_iter().enumerate() {
            lanes.push(lane(scope, move |id| twin.fetch(id), ids(k + 1)));
        }
        Prefetch { lanes, next: 0 }
    }
}

type Fetched = (ChunkId, Result<Vec<u8>, Failure>);

/// One lane: a thread that fetches `ids` in order into a bounded channel.
fn lane<'scope>(
    scope: &'scope Scope<'scope, '_>,
    mut fetch: impl FnMut(&ChunkId) -> Result<Vec<u8>, Failure> + Send + 'scope,
    ids: Vec<ChunkId>,
) -> Receiver<Fetched> {
    let (tx, rx) = sync_channel(AHEAD);
    scope.spawn(move || {
        for id in ids {
            let fetched = fetch(&id);
            let failed = fetched.is_err();
            if tx.send((id, fetched)).is_err() || failed {
                return;
            }
        }
    });
    rx
}

impl ChunkSource for Prefetch {
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, Failure> {
        let lane = self.next % self.lanes.len();
        self.next += 1;
        match self.lanes[lane].recv() {
            Ok((got, fetched)) if got == *id => fetched,
            Ok((got, _)) => Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "the restore asked for chunk {} where {} was fetched ahead",
                    id.to_hex(),
                    got.to_hex()
                ),
            )),
            Err(_) => Err(Failure::new(
                Code::CorruptObject,
                format!("chunk {} was not among those fetched ahead", id.to_hex()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn pack_buffers_go_back_to_the_spares_and_serve_pack_after_pack() {
        let cache = PackCache::new(2);
        let mut buffers = HashSet::new();
        for i in 0..50u8 {
            let id: Arc<str> = format!("pack-{i}").into();
            let pack = cache
                .get(&id, || {
                    let mut bytes = cache.spares.take();
                    bytes.resize(1 << 16, i);
                    Ok(Arc::new(Pooled::new(bytes, cache.spares.clone())))
                })
                .expect("read");
            assert!(pack.iter().all(|&b| b == i));
            buffers.insert(pack.as_ptr() as usize);
        }
        // The two packs cached and the one in hand: never another buffer.
        assert!(buffers.len() <= 3, "{} buffers", buffers.len());
        let spares = cache.spares.spares();
        assert!(spares <= SPARE_PACKS, "{spares} spares");
    }
}
