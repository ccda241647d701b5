//! The restore side of the pipeline: a [`ChunkSource`] that reads packs from a
//! repository, checks each pack against its name, decrypts chunks with a recipient's
//! secret key, decompresses them and checks each against its keyed hash. It keeps the
//! last few packs in memory (tree order follows pack order), so memory stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::Scope;

use crate::pipeline::crypto::SecretKeys;
use crate::repo::format::pack_path;
use crate::repo::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::repo::store::{Index, Repo};
use crate::sources::ChunkSource;

/// How many whole packs are kept in memory.
const PACK_CACHE: usize = 6;

/// Reads, decrypts and checks chunks of one repository.
pub struct RepoFetcher {
    repo: Repo,
    index: Arc<Index>,
    hasher: ChunkHasher,
    secret: Arc<SecretKeys>,
    runtime: tokio::runtime::Handle,
    cache: VecDeque<(Arc<str>, Vec<u8>)>,
    /// One decompression context for every chunk.
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Encrypted bytes read from storage.
    pub bytes_fetched: u64,
}

impl std::fmt::Debug for RepoFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoFetcher")
            .field("repo", &self.repo.name)
            .field("bytes_fetched", &self.bytes_fetched)
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
            cache: VecDeque::new(),
            decompressor: zstd::bulk::Decompressor::new().expect("a zstd context"),
            bytes_fetched: 0,
        }
    }

    /// A whole pack, checked against its name (its BLAKE3).
    fn pack(&mut self, id: &Arc<str>) -> Result<&[u8], String> {
        if let Some(pos) = self.cache.iter().position(|(p, _)| p == id) {
            return Ok(&self.cache[pos].1);
        }
        let path = pack_path(id);
        let bytes = self
            .runtime
            .block_on(self.repo.read_whole(&path))
            .map_err(|f| format!("{}: {}", f.code.id(), f.message))?;
        self.bytes_fetched += bytes.len() as u64;
        if blake3::hash(&bytes).to_hex().as_str() != &**id {
            return Err(format!(
                "BP220: destination {}: object {path} is damaged: its content does not match its name",
                self.repo.name
            ));
        }
        if self.cache.len() >= PACK_CACHE {
            self.cache.pop_front();
        }
        self.cache.push_back((id.clone(), bytes));
        Ok(&self.cache.back().map(|(_, b)| b).expect("just pushed")[..])
    }
}

impl ChunkSource for RepoFetcher {
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, String> {
        let index = self.index.clone();
        let loc = index.chunks.get(id).ok_or_else(|| {
            let damaged = if index.damaged.is_empty() {
                String::new()
            } else {
                format!(" (damaged index objects: {})", index.damaged.join("; "))
            };
            format!(
                "BP228: chunk {} is in no pack of {}{damaged}",
                id.to_hex(),
                self.repo.name
            )
        })?;
        let (ks_off, ks_len) = index
            .key_set(loc)
            .ok_or_else(|| format!("BP220: pack {} lists no key set {}", loc.pack, loc.key_set))?;
        let secret = self.secret.clone();
        let name = self.repo.name.clone();
        let pack = self.pack(&loc.pack)?;
        let slice = |off: u64, len: u32| pack.get(off as usize..off as usize + len as usize);
        let (Some(key_set), Some(packet)) = (slice(ks_off, ks_len), slice(loc.offset, loc.length))
        else {
            return Err(format!(
                "BP220: destination {name}: pack {} is shorter than the index says",
                loc.pack
            ));
        };
        let compressed = secret.decrypt(key_set, packet).map_err(|e| {
            format!(
                "BP220: destination {name}: a chunk of pack {} does not decrypt: {e}",
                loc.pack
            )
        })?;
        let plain = self
            .decompressor
            .decompress(&compressed, loc.raw_length as usize)
            .map_err(|e| {
                format!(
                    "BP220: destination {name}: a chunk of pack {} does not decompress: {e}",
                    loc.pack
                )
            })?;
        if self.hasher.id(&plain) != *id {
            return Err(format!(
                "BP220: destination {name}: chunk {} of pack {} does not match its id",
                id.to_hex(),
                loc.pack
            ));
        }
        Ok(plain)
    }
}

/// Chunks fetched ahead of a restore (each up to the largest chunk, 4 MiB).
const AHEAD: usize = 8;

/// Fetches chunks on a thread of its own, in the order a restore will ask for them,
/// so that decrypting, decompressing and checking the next chunks overlaps with
/// writing this one. The restore must ask in exactly that order.
#[derive(Debug)]
pub struct Prefetch {
    rx: Receiver<(ChunkId, Result<Vec<u8>, String>)>,
}

impl Prefetch {
    /// Starts fetching `order` from `source` on a thread of `scope`; the thread stops
    /// at the first error, or when this value is dropped.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        source: &'env mut (dyn ChunkSource + Send),
        order: Vec<ChunkId>,
    ) -> Prefetch {
        let (tx, rx) = sync_channel(AHEAD);
        scope.spawn(move || {
            for id in order {
                let fetched = source.fetch(&id);
                let failed = fetched.is_err();
                if tx.send((id, fetched)).is_err() || failed {
                    return;
                }
            }
        });
        Prefetch { rx }
    }
}

impl ChunkSource for Prefetch {
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, String> {
        match self.rx.recv() {
            Ok((got, fetched)) if got == *id => fetched,
            Ok((got, _)) => Err(format!(
                "the restore asked for chunk {} where {} was fetched ahead",
                id.to_hex(),
                got.to_hex()
            )),
            Err(_) => Err(format!(
                "chunk {} was not among those fetched ahead",
                id.to_hex()
            )),
        }
    }
}
