//! The backup side of the pipeline: a [`ChunkSink`] that cuts a stream into
//! content-defined chunks, names each by its keyed hash, and — for every destination
//! that lacks it — compresses it with zstd, encrypts it once to the recipients and
//! adds it to that destination's pack. Full packs go to an uploader over a bounded
//! channel, so memory stays at a few packs whatever the size of the data.
//!
//! The work is shared: the caller's thread reads, chunks and hashes (and decides, in
//! stream order, which destination needs which chunk); sealer threads, one per core,
//! take chunks from a channel of a few and compress, encrypt and pack them, each
//! into packs of its own (a pack's chunks need not be neighbours in any stream).

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use fastcdc::v2020::{Normalization, StreamCDC};
use tokio::sync::mpsc;

use crate::crypto::KeySet;
use crate::crypto::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::pipeline::{ChunkSink, Stored};
use crate::repo::format::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, PACK_TARGET, PackBuilder, PackRecord};
use crate::repo::store::Index;

/// A finished pack on its way to storage.
pub type PackUpload = (Vec<u8>, PackRecord);

/// Chunks waiting for the sealers: enough to keep them busy while the next is cut.
const SEAL_QUEUE: usize = 4;
/// At most this many sealer threads, whatever the cores.
const MAX_SEALERS: usize = 4;

/// One destination's side of the sink.
#[derive(Debug)]
pub struct Target {
    known: Known,
    tx: mpsc::Sender<PackUpload>,
}

impl Target {
    /// `index`: the destination's index, shared with other backups; the chunks it
    /// lists are not sent.
    pub fn new(index: Arc<Index>, tx: mpsc::Sender<PackUpload>) -> Target {
        Target {
            known: Known {
                index,
                sent: HashSet::new(),
            },
            tx,
        }
    }
}

/// The chunks a destination holds: those its index lists, and those sent to it.
#[derive(Debug)]
struct Known {
    index: Arc<Index>,
    sent: HashSet<ChunkId>,
}

impl Known {
    /// Records `id` as held; whether it was not before.
    fn insert(&mut self, id: ChunkId) -> bool {
        !self.index.contains(&id) && self.sent.insert(id)
    }
}

/// A chunk to seal, and the destinations (by position) that need it.
struct Work {
    id: ChunkId,
    data: Vec<u8>,
    targets: Vec<usize>,
}

/// Chunks, deduplicates, compresses, encrypts and packs for several destinations.
pub struct RepoSink {
    hasher: ChunkHasher,
    seed: u64,
    /// Per destination, the chunks it holds or has been sent: decided here, so the
    /// sealers never see a chunk twice for one destination.
    known: Vec<Known>,
    work: Option<std::sync::mpsc::SyncSender<Work>>,
    sealers: Vec<JoinHandle<io::Result<()>>>,
    /// Set when the sink is dropped unfinished: the sealers then upload nothing more.
    abandoned: Arc<AtomicBool>,
    /// Reused for streams shorter than the smallest chunk.
    short: Vec<u8>,
    pub bytes_read: u64,
}

impl std::fmt::Debug for RepoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSink")
            .field("targets", &self.known.len())
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

/// One sealer's side: a compression context for the whole backup, the shared key
/// set, and its own pack in the making for each destination.
struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
    key_set: Arc<KeySet>,
    packs: Vec<(PackBuilder, mpsc::Sender<PackUpload>)>,
}

/// The sealers' end of the work channel.
type WorkQueue = Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Work>>>;

impl Sealer {
    fn run(mut self, work: WorkQueue, abandoned: &AtomicBool) -> io::Result<()> {
        loop {
            // The lock is held only to take one chunk.
            let next = match work.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return Err(io::Error::other("another sealer panicked")),
            };
            let Ok(w) = next else { break };
            let compressed = self.compressor.compress(&w.data)?;
            let packet = self
                .key_set
                .encrypt(&compressed)
                .map_err(|e| io::Error::other(e.0))?;
            for t in w.targets {
                let (builder, tx) = &mut self.packs[t];
                builder.add(w.id, &self.key_set.packets, &packet, w.data.len() as u32);
                if builder.len() >= PACK_TARGET {
                    flush(builder, tx)?;
                }
            }
        }
        if !abandoned.load(Ordering::SeqCst) {
            for (builder, tx) in &mut self.packs {
                flush(builder, tx)?;
            }
        }
        Ok(())
    }
}

fn flush(builder: &mut PackBuilder, tx: &mpsc::Sender<PackUpload>) -> io::Result<()> {
    if builder.is_empty() {
        return Ok(());
    }
    let (bytes, record) = std::mem::take(builder).finish();
    tx.blocking_send((bytes, record))
        .map_err(|_| io::Error::other("the upload of a pack failed"))
}

impl RepoSink {
    pub fn new(
        key: &RepoKey,
        key_set: KeySet,
        level: i32,
        targets: Vec<Target>,
    ) -> io::Result<RepoSink> {
        let mut known = Vec::new();
        let mut senders = Vec::new();
        for t in targets {
            known.push(t.known);
            senders.push(t.tx);
        }
        let key_set = Arc::new(key_set);
        let (tx, rx) = std::sync::mpsc::sync_channel(SEAL_QUEUE);
        let queue: WorkQueue = Arc::new(std::sync::Mutex::new(rx));
        let abandoned = Arc::new(AtomicBool::new(false));
        let count = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_SEALERS);
        let mut sealers = Vec::new();
        for i in 0..count {
            let sealer = Sealer {
                compressor: zstd::bulk::Compressor::new(level)?,
                key_set: key_set.clone(),
                packs: senders
                    .iter()
                    .map(|s| (PackBuilder::default(), s.clone()))
                    .collect(),
            };
            let (queue, flag) = (queue.clone(), abandoned.clone());
            sealers.push(
                std::thread::Builder::new()
                    .name(format!("backplan-sealer-{i}"))
                    .spawn(move || sealer.run(queue, &flag))?,
            );
        }
        Ok(RepoSink {
            hasher: key.chunk_id(),
            seed: key.chunker_seed(),
            known,
            work: Some(tx),
            sealers,
            abandoned,
            short: Vec::new(),
            bytes_read: 0,
        })
    }

    /// Seals what is queued and sends the last partial packs; the upload channels
    /// close when this returns.
    pub fn finish(&mut self) -> io::Result<()> {
        self.work = None;
        self.join()
    }

    /// Waits for the sealers and returns how they ended (the first error).
    fn join(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for h in self.sealers.drain(..) {
            let ended = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a sealer thread panicked")));
            if result.is_ok() {
                result = ended;
            }
        }
        result
    }

    /// Names a chunk and hands it to the sealers for the destinations that lack it.
    fn chunk(&mut self, data: Vec<u8>, stored: &mut Stored) -> io::Result<()> {
        let id = self.hasher.id(&data);
        stored.chunks.push(id);
        stored.bytes += data.len() as u64;
        let targets: Vec<usize> = self
            .known
            .iter_mut()
            .enumerate()
            .filter_map(|(i, k)| k.insert(id).then_some(i))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let sent = match &self.work {
            Some(tx) => tx.send(Work { id, data, targets }).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The sealers stopped: their own error says why.
        self.work = None;
        Err(match self.join() {
            Err(e) => e,
            Ok(()) => io::Error::other("the sink is finished"),
        })
    }
}

/// The content-defined chunker of a stream at least [`CHUNK_MIN`] long: the cut
/// points depend on the repository key's seed.
fn chunker<R: Read>(reader: R, seed: u64) -> StreamCDC<R> {
    StreamCDC::with_level_and_seed(
        reader,
        CHUNK_MIN as usize,
        CHUNK_AVG as usize,
        CHUNK_MAX as usize,
        Normalization::Level1,
        seed,
    )
}

/// The chunk ids a backup with `key` would give the bytes of `reader`, and their
/// length: how a restore drill checks a restored file against its snapshot entry
/// without fetching anything again. Cut exactly as [`RepoSink`] cuts a stream.
pub fn chunk_ids(key: &RepoKey, reader: &mut dyn Read) -> io::Result<(Vec<ChunkId>, u64)> {
    let hasher = key.chunk_id();
    let mut short = Vec::new();
    reader.take(u64::from(CHUNK_MIN)).read_to_end(&mut short)?;
    let len = short.len() as u64;
    if short.len() < CHUNK_MIN as usize {
        let ids = if short.is_empty() {
            Vec::new()
        } else {
            vec![hasher.id(&short)]
        };
        return Ok((ids, len));
    }
    let mut ids = Vec::new();
    let mut bytes = 0;
    for chunk in chunker((&short[..]).chain(reader), key.chunker_seed()) {
        let chunk = chunk.map_err(io::Error::from)?;
        bytes += chunk.data.len() as u64;
        ids.push(hasher.id(&chunk.data));
    }
    Ok((ids, bytes))
}

impl Drop for RepoSink {
    fn drop(&mut self) {
        if !self.sealers.is_empty() {
            self.abandoned.store(true, Ordering::SeqCst);
            self.work = None;
            let _ = self.join();
        }
    }
}

impl ChunkSink for RepoSink {
    fn store(&mut self, reader: &mut dyn Read) -> io::Result<Stored> {
        let mut stored = Stored::default();
        // A stream shorter than the smallest chunk is one chunk, exactly as the
        // chunker would cut it, without the chunker's buffer of the largest chunk
        // (4 MiB, zeroed for every small file).
        let mut short = std::mem::take(&mut self.short);
        short.clear();
        (&mut *reader)
            .take(u64::from(CHUNK_MIN))
            .read_to_end(&mut short)?;
        if short.len() < CHUNK_MIN as usize {
            if !short.is_empty() {
                self.chunk(short.clone(), &mut stored)?;
            }
            self.short = short;
            self.bytes_read += stored.bytes;
            return Ok(stored);
        }
        for chunk in chunker((&short[..]).chain(reader), self.seed) {
            let chunk = chunk.map_err(io::Error::from)?;
            self.chunk(chunk.data, &mut stored)?;
        }
        self.short = short;
        self.bytes_read += stored.bytes;
        Ok(stored)
    }
}
