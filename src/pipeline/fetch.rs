//! The restore side of the pipeline: a [`ChunkSource`] that reads packs from a
//! repository, checks each pack against its name, decrypts chunks with a recipient's
//! secret key, decompresses them and checks each against its keyed hash. It keeps the
//! last few packs in memory (a stretch of a tree's chunks lies in a few packs, one per
//! sealer of the backup), shared with its twins, so memory stays bounded and each
//! pack is read once; a restore reads the next pack ahead on a thread of its own, so
//! the lanes seldom wait for storage.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::Scope;

use crate::crypto::SecretKeys;
use crate::crypto::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::error::{Code, Failure};
use crate::pipeline::pool::{Pool, Pooled};
use crate::pipeline::{ChunkSource, ReadAhead};
use crate::repo::format::pack_path;
use crate::repo::store::{Index, Repo};

/// How many whole packs are kept in memory.
const PACK_CACHE: usize = 6;
/// How many a fetcher and its twins keep between them: lanes take alternate chunks
/// of the same packs, so they need the pack at hand and the next ones.
const SHARED_PACK_CACHE: usize = 4;
/// How many packs may have been read ahead of the lanes and not yet asked for,
/// besides those the lanes keep: the next one they will need, read while the lanes
/// open those before. (A second one gained nothing on a local disk, and costs 16 MiB
/// more.)
const READ_AHEAD: usize = 1;
const _: () = assert!(SHARED_PACK_CACHE + READ_AHEAD <= PACK_CACHE);

/// Pack buffers kept for the next packs read: as many as can be in use at once (the
/// cache's packs, those read ahead, and one per lane that a lane still reads after it
/// left the cache), so a restore allocates them once (see [`crate::pipeline::pool`]).
const SPARE_PACKS: usize = PACK_CACHE + MAX_LANES;

type Loaded = Result<Arc<Pooled>, Failure>;

/// A pack's place in the cache: filled once, by whichever thread wants it first.
struct Slot {
    id: Arc<str>,
    pack: Arc<OnceLock<Loaded>>,
    /// Read ahead and not yet asked for.
    ahead: bool,
}

#[derive(Default)]
struct Slots {
    slots: VecDeque<Slot>,
    /// The last pack a fetcher found missing and read itself: where the fetches are
    /// when reading ahead falls behind them.
    missed: Option<Arc<str>>,
    /// The restore stopped: so does reading ahead.
    stopped: bool,
}

impl Slots {
    /// A new slot for `id` at the back.
    fn push(&mut self, id: &Arc<str>, ahead: bool) -> Arc<OnceLock<Loaded>> {
        let pack = Arc::new(OnceLock::new());
        self.slots.push_back(Slot {
            id: id.clone(),
            pack: pack.clone(),
            ahead,
        });
        pack
    }

    /// Drops the oldest packs the fetches asked for until `size` are left. Packs read
    /// ahead and not yet asked for stay: at most [`READ_AHEAD`] of them.
    fn trim(&mut self, size: usize) {
        let mut asked = self.slots.iter().filter(|slot| !slot.ahead).count();
        while asked > size.max(1) {
            let Some(oldest) = self.slots.iter().position(|slot| !slot.ahead) else {
                return;
            };
            self.slots.remove(oldest);
            asked -= 1;
        }
    }

    fn read_ahead(&self) -> usize {
        self.slots.iter().filter(|slot| slot.ahead).count()
    }
}

/// The last packs read, shared by a fetcher and its twins, so that each pack is read
/// and checked once however many lanes take chunks of it. A pack being read by one
/// lane is waited for by the others, not read again. The packs read ahead are kept
/// apart: they count among the last packs read from the moment a fetch first asks
/// for them, as if that fetch had read them.
struct PackCache {
    slots: Mutex<Slots>,
    /// Signalled when a pack read ahead is asked for, and on stopping.
    changed: Condvar,
    size: AtomicUsize,
    spares: Arc<Pool>,
}

impl PackCache {
    fn new(size: usize) -> PackCache {
        PackCache {
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
            size: AtomicUsize::new(size),
            spares: Pool::new(SPARE_PACKS),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pack `id`, read with `load` unless it is at hand or being read.
    fn get(&self, id: &Arc<str>, load: impl FnOnce() -> Loaded) -> Loaded {
        let pack = {
            let mut slots = self.lock();
            let pack = match slots.slots.iter().position(|slot| slot.id == *id) {
                Some(at) if slots.slots[at].ahead => {
                    // First asked for: now the newest of the packs asked for.
                    let mut slot = slots.slots.remove(at).expect("a slot found");
                    slot.ahead = false;
                    let pack = slot.pack.clone();
                    slots.slots.push_back(slot);
                    self.changed.notify_all();
                    pack
                }
                Some(at) => slots.slots[at].pack.clone(),
                None => {
                    slots.missed = Some(id.clone());
                    slots.push(id, false)
                }
            };
            slots.trim(self.size.load(Ordering::Relaxed));
            pack
        };
        pack.get_or_init(load).clone()
    }

    /// Reads the packs of `order` with `load`, in that order, while fewer than
    /// [`READ_AHEAD`] packs read ahead wait to be asked for; skips those at hand, and
    /// jumps past a pack the fetches had to read themselves. Returns at the end of
    /// `order` or once [`PackCache::stop`] is called.
    fn read_ahead(&self, order: &[Arc<str>], load: impl Fn(&Arc<str>) -> Loaded) {
        let mut next = 0;
        loop {
            let (id, pack) = {
                let mut slots = self.lock();
                loop {
                    if slots.stopped {
                        return;
                    }
                    if let Some(missed) = slots.missed.take()
                        && let Some(at) = order[next.min(order.len())..]
                            .iter()
                            .position(|p| *p == missed)
                    {
                        next += at + 1;
                    }
                    if slots.read_ahead() < READ_AHEAD {
                        break;
                    }
                    slots = self.changed.wait(slots).unwrap_or_else(|e| e.into_inner());
                }
                let Some(id) = order.get(next) else {
                    return;
                };
                next += 1;
                if slots.slots.iter().any(|slot| slot.id == *id) {
                    continue;
                }
                (id, slots.push(id, true))
            };
            pack.get_or_init(|| load(id));
        }
    }

    /// Makes [`PackCache::read_ahead`] return.
    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

/// Reads packs of one repository into the cache a fetcher shares with its twins.
#[derive(Clone)]
struct PackReader {
    repo: Repo,
    index: Arc<Index>,
    runtime: tokio::runtime::Handle,
    cache: Arc<PackCache>,
    /// Encrypted bytes read from storage, by this fetcher and its twins.
    fetched: Arc<AtomicU64>,
    /// Whether a pack is checked whole against its name when it is read.
    check_packs: bool,
}

impl PackReader {
    /// A whole pack, checked against its name (its BLAKE3) if so asked, from the
    /// cache unless it is not there.
    fn get(&self, id: &Arc<str>) -> Loaded {
        self.cache.get(id, || self.load(id))
    }

    fn load(&self, id: &Arc<str>) -> Loaded {
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
    }
}

/// The packs a restore's fetches will need, read ahead of them.
struct Ahead {
    reader: PackReader,
    /// The packs in the order the fetches need them.
    order: Vec<Arc<str>>,
}

impl ReadAhead for Ahead {
    fn run(&self) {
        self.reader
            .cache
            .read_ahead(&self.order, |id| self.reader.load(id));
    }

    fn stop(&self) {
        self.reader.cache.stop();
    }
}

/// Reads, decrypts and checks chunks of one repository.
pub struct RepoFetcher {
    /// Shared with the twins.
    packs: PackReader,
    hasher: ChunkHasher,
    secret: Arc<SecretKeys>,
    /// One decompression context for every chunk.
    decompressor: zstd::bulk::Decompressor<'static>,
    /// The buffer chunks are decrypted into, chunk after chunk.
    opened: Vec<u8>,
}

impl std::fmt::Debug for RepoFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoFetcher")
            .field("repo", &self.packs.repo.name)
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
            packs: PackReader {
                repo,
                index,
                runtime,
                cache: Arc::new(PackCache::new(PACK_CACHE)),
                fetched: Arc::new(AtomicU64::new(0)),
                check_packs: true,
            },
            hasher: key.chunk_id(),
            secret,
            decompressor: zstd::bulk::Decompressor::new().expect("a zstd context"),
            opened: Vec::new(),
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
        self.packs.check_packs = false;
        self
    }

    /// Encrypted bytes read from storage, by this fetcher and its twins.
    pub fn bytes_fetched(&self) -> u64 {
        self.packs.fetched.load(Ordering::Relaxed)
    }
}

impl ChunkSource for RepoFetcher {
    /// A fetcher of the same repository sharing this one's packs, which then keep
    /// `SHARED_PACK_CACHE` packs between them.
    fn twin(&mut self) -> Option<Box<dyn ChunkSource + Send>> {
        self.packs
            .cache
            .size
            .store(SHARED_PACK_CACHE, Ordering::Relaxed);
        Some(Box::new(RepoFetcher {
            packs: self.packs.clone(),
            hasher: self.hasher.clone(),
            secret: self.secret.clone(),
            decompressor: zstd::bulk::Decompressor::new().ok()?,
            opened: Vec::new(),
        }))
    }

    /// The packs holding `order`'s chunks, each once, in the order the fetches first
    /// need them, read into the cache this fetcher shares with its twins. (Each sealer
    /// of a backup fills packs of its own, so a stretch of chunks takes turns between
    /// a few packs.)
    fn read_ahead(&mut self, order: &[ChunkId]) -> Option<Arc<dyn ReadAhead>> {
        let mut seen = HashSet::new();
        let packs: Vec<Arc<str>> = order
            .iter()
            .filter_map(|id| self.packs.index.locate(id))
            .filter(|loc| seen.insert(loc.pack.clone()))
            .map(|loc| loc.pack)
            .collect();
        Some(Arc::new(Ahead {
            reader: self.packs.clone(),
            order: packs,
        }))
    }

    /// From the index, which records it; the fetch tells a chunk it lacks.
    fn length(&mut self, id: &ChunkId) -> Result<u64, Failure> {
        match self.packs.index.locate(id) {
            Some(loc) => Ok(u64::from(loc.raw_length)),
            None => self.fetch(id).map(|b| b.len() as u64),
        }
    }

    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, Failure> {
        let index = self.packs.index.clone();
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
                    self.packs.repo.name
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
        let name = self.packs.repo.name.clone();
        let pack = self.packs.get(&loc.pack)?;
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
/// the writer, at least two) takes every n-th chunk; a source that reads ahead (the
/// next packs) does so on one more thread. The restore must ask in exactly that
/// order.
pub struct Prefetch {
    lanes: Vec<Receiver<Fetched>>,
    next: usize,
    /// Reading ahead for the lanes, stopped when this value is dropped.
    reader: Option<Arc<dyn ReadAhead>>,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("lanes", &self.lanes.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.stop();
        }
    }
}

impl Prefetch {
    /// Starts fetching `order` from `source` (and its twins) on threads of `scope`;
    /// each stops at its first error, or when this value is dropped, as does reading
    /// ahead.
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
        let reader = source.read_ahead(&order);
        if let Some(reader) = reader.clone() {
            scope.spawn(move || reader.run());
        }
        let count = twins.len() + 1;
        // Lane k fetches chunks k, k + count, k + 2·count, …
        let ids =
            |k: usize| -> Vec<ChunkId> { order.iter().skip(k).step_by(count).copied().collect() };
        let mut lanes = vec![lane(scope, move |id| source.fetch(id), ids(0))];
        for (k, mut twin) in twins.into_iter().enumerate() {
            lanes.push(lane(scope, move |id| twin.fetch(id), ids(k + 1)));
        }
        Prefetch {
            lanes,
            next: 0,
            reader,
        }
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
    use std::sync::mpsc::{RecvTimeoutError, channel};
    use std::time::Duration;

    use super::*;

    fn packs(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| format!("pack-{i}").into()).collect()
    }

    /// Stops reading ahead when dropped, so that a failed assertion ends its test
    /// rather than leave the test's scope waiting for the reader.
    struct StopOnDrop<'a>(&'a PackCache);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop();
        }
    }

    /// Reads `order` ahead on a thread of `scope`; the receiver gets each pack read.
    fn reading_ahead<'scope>(
        scope: &'scope Scope<'scope, '_>,
        cache: &'scope PackCache,
        order: &'scope [Arc<str>],
    ) -> Receiver<Arc<str>> {
        let (tx, rx) = channel();
        scope.spawn(move || {
            cache.read_ahead(order, |id| {
                let _ = tx.send(id.clone());
                filled(cache, 0)
            })
        });
        rx
    }

    fn filled(cache: &PackCache, byte: u8) -> Loaded {
        let mut bytes = cache.spares.take();
        bytes.resize(64, byte);
        Ok(Arc::new(Pooled::new(bytes, cache.spares.clone())))
    }

    #[test]
    fn packs_are_read_ahead_in_order_and_never_more_than_read_ahead_before_they_are_asked_for() {
        let cache = PackCache::new(SHARED_PACK_CACHE);
        let order = packs(12);
        let asked = AtomicUsize::new(0);
        let (tx, rx) = channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                cache.read_ahead(&order, |id| {
                    let k = order
                        .iter()
                        .position(|p| p == id)
                        .expect("a pack of the order");
                    tx.send((k, asked.load(Ordering::SeqCst)))
                        .expect("the test listens");
                    filled(&cache, k as u8)
                });
            });
            let _stop = StopOnDrop(&cache);
            let mut read = Vec::new();
            for (k, id) in order.iter().enumerate() {
                // The packs up to READ_AHEAD past those asked for are read …
                while read.len() < (k + READ_AHEAD).min(order.len()) {
                    read.push(rx.recv().expect("read ahead"));
                }
                // … and no more while this one is not asked for.
                if k == 0 {
                    let more = rx.recv_timeout(Duration::from_millis(200));
                    assert!(matches!(more, Err(RecvTimeoutError::Timeout)), "{more:?}");
                }
                asked.fetch_add(1, Ordering::SeqCst);
                let pack = cache
                    .get(id, || panic!("{id} was not read ahead"))
                    .expect("read");
                assert!(pack.iter().all(|&b| usize::from(b) == k));
            }
            let in_order: Vec<usize> = read.iter().map(|&(k, _)| k).collect();
            assert_eq!(in_order, (0..order.len()).collect::<Vec<_>>());
            for (k, asked_then) in read {
                assert!(
                    k < asked_then + READ_AHEAD,
                    "pack {k} read when {asked_then} had been asked for"
                );
            }
        });
    }

    #[test]
    fn reading_ahead_jumps_past_a_pack_the_fetches_had_to_read_themselves() {
        let cache = PackCache::new(SHARED_PACK_CACHE);
        let order = packs(10);
        // The fetches got to pack 5 before any reading ahead.
        cache.get(&order[5], || filled(&cache, 5)).expect("read");
        std::thread::scope(|scope| {
            let rx = reading_ahead(scope, &cache, &order);
            let _stop = StopOnDrop(&cache);
            assert_eq!(rx.recv().expect("read ahead"), order[6]);
        });
    }

    #[test]
    fn packs_read_ahead_never_push_out_those_the_fetches_keep() {
        let cache = PackCache::new(SHARED_PACK_CACHE);
        let order = packs(10);
        // The fetches hold as many packs as they may keep.
        for (k, id) in order[..SHARED_PACK_CACHE].iter().enumerate() {
            cache.get(id, || filled(&cache, k as u8)).expect("read");
        }
        std::thread::scope(|scope| {
            let rx = reading_ahead(scope, &cache, &order);
            let _stop = StopOnDrop(&cache);
            for id in &order[SHARED_PACK_CACHE..SHARED_PACK_CACHE + READ_AHEAD] {
                assert_eq!(rx.recv().expect("read ahead"), *id);
            }
            for (k, id) in order[..SHARED_PACK_CACHE].iter().enumerate() {
                let pack = cache
                    .get(id, || panic!("{id} was pushed out by reading ahead"))
                    .expect("read");
                assert!(pack.iter().all(|&b| usize::from(b) == k));
            }
        });
    }

    #[test]
    fn reading_ahead_returns_once_stopped_though_nothing_is_asked_for() {
        let cache = PackCache::new(SHARED_PACK_CACHE);
        let order = packs(100);
        // The scope ends once the reader returns.
        let rx = std::thread::scope(|scope| {
            let rx = reading_ahead(scope, &cache, &order);
            for id in &order[..READ_AHEAD] {
                assert_eq!(rx.recv().expect("read ahead"), *id);
            }
            cache.stop();
            rx
        });
        // It had read what it may read ahead, and nothing more.
        assert_eq!(rx.try_iter().count(), 0);
    }

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
