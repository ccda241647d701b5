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
//!
//! A chunk is cut where it lies in the [`Chunker`]'s buffer, copied into a reused
//! buffer for the sealers, and copied once more into its pack, where it is encrypted
//! in place (zstd's output for chunks worth compressing, the chunk itself in a raw
//! zstd frame for the others, see [`crate::pipeline::compress`]). Pack buffers come
//! from a [`Pool`] and go back to it once the destination has written them.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::crypto::KeySet;
use crate::crypto::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::pipeline::chunker::Chunker;
use crate::pipeline::compress::Compressor;
use crate::pipeline::pool::{Pool, Pooled};
use crate::pipeline::{ChunkSink, Stored};
use crate::repo::format::{PACK_TARGET, PackBuilder, PackRecord};
use crate::repo::store::Index;

/// A finished pack on its way to storage; its buffer goes back to the sealers' pool
/// when the storage layer lets go of it.
pub type PackUpload = (Bytes, PackRecord);

/// Chunks waiting for the sealers: enough to keep them busy while the next is cut.
const SEAL_QUEUE: usize = 4;
/// At most this many sealer threads, whatever the cores.
const MAX_SEALERS: usize = 4;
/// Spare pack buffers kept per destination beyond one per sealer: enough for the
/// packs waiting for their upload and the one being written.
const SPARE_PACKS: usize = 4;

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
    chunker: Chunker,
    dispatch: Dispatch,
    pub bytes_read: u64,
}

/// The chunks cut, named and handed to the sealers.
struct Dispatch {
    hasher: ChunkHasher,
    /// Per destination, the chunks it holds or has been sent: decided here, so the
    /// sealers never see a chunk twice for one destination.
    known: Vec<Known>,
    work: Option<std::sync::mpsc::SyncSender<Work>>,
    sealers: Vec<JoinHandle<io::Result<()>>>,
    /// Set when the sink is dropped unfinished: the sealers then upload nothing more.
    abandoned: Arc<AtomicBool>,
    /// Buffers for the chunks on their way to the sealers, which give them back.
    buffers: Arc<Pool>,
}

impl std::fmt::Debug for RepoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSink")
            .field("targets", &self.dispatch.known.len())
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

/// One sealer's side: its compression contexts for the whole backup, the shared key
/// set, and its own pack in the making for each destination.
struct Sealer {
    compressor: Compressor,
    key_set: Arc<KeySet>,
    packs: Vec<(PackBuilder, mpsc::Sender<PackUpload>)>,
    /// Pack buffers, shared with the uploads that give them back.
    pool: Arc<Pool>,
    /// The chunk buffers, given back once sealed.
    buffers: Arc<Pool>,
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
            self.seal(&w)?;
            self.buffers.give(w.data);
            for &t in &w.targets {
                let (builder, tx) = &mut self.packs[t];
                if builder.len() >= PACK_TARGET {
                    flush(builder, tx, &self.pool)?;
                }
            }
        }
        if !abandoned.load(Ordering::SeqCst) {
            for (builder, tx) in &mut self.packs {
                flush(builder, tx, &self.pool)?;
            }
        }
        Ok(())
    }

    /// Compresses and encrypts a chunk into the pack of its first destination, and
    /// copies the packet into the others'.
    fn seal(&mut self, w: &Work) -> io::Result<()> {
        let Some((&first, others)) = w.targets.split_first() else {
            return Ok(());
        };
        let raw_length = w.data.len() as u32;
        let parts = self.compressor.frame(&w.data)?;
        let key_set = &self.key_set;
        let packet = self.packs[first]
            .0
            .add_with(w.id, &key_set.packets, raw_length, |out| {
                key_set.encrypt_into(&parts, out)
            });
        let packet = packet.map_err(|e| io::Error::other(e.0))?;
        if let Some(packet) = (!others.is_empty()).then(|| packet.to_vec()) {
            for &t in others {
                self.packs[t]
                    .0
                    .add(w.id, &key_set.packets, &packet, raw_length);
            }
        }
        Ok(())
    }
}

/// Sends a destination's pack in the making to its uploader, and starts the next one
/// in a spare buffer.
fn flush(
    builder: &mut PackBuilder,
    tx: &mpsc::Sender<PackUpload>,
    pool: &Arc<Pool>,
) -> io::Result<()> {
    if builder.is_empty() {
        return Ok(());
    }
    let full = std::mem::replace(builder, PackBuilder::with_buffer(pool.take()));
    let (bytes, record) = full.finish();
    let bytes = Bytes::from_owner(Pooled::new(bytes, pool.clone()));
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
        let pool = Pool::new((count + SPARE_PACKS) * senders.len());
        // The chunks queued, one per sealer, and the one being cut.
        let buffers = Pool::new(SEAL_QUEUE + count + 1);
        let mut sealers = Vec::new();
        for i in 0..count {
            let sealer = Sealer {
                compressor: Compressor::new(level)?,
                key_set: key_set.clone(),
                packs: senders
                    .iter()
                    .map(|s| (PackBuilder::default(), s.clone()))
                    .collect(),
                pool: pool.clone(),
                buffers: buffers.clone(),
            };
            let (queue, flag) = (queue.clone(), abandoned.clone());
            sealers.push(
                std::thread::Builder::new()
                    .name(format!("backplan-sealer-{i}"))
                    .spawn(move || sealer.run(queue, &flag))?,
            );
        }
        Ok(RepoSink {
            chunker: Chunker::new(key.chunker_seed()),
            dispatch: Dispatch {
                hasher: key.chunk_id(),
                known,
                work: Some(tx),
                sealers,
                abandoned,
                buffers,
            },
            bytes_read: 0,
        })
    }

    /// Seals what is queued and sends the last partial packs; the upload channels
    /// close when this returns.
    pub fn finish(&mut self) -> io::Result<()> {
        self.dispatch.work = None;
        self.dispatch.join()
    }
}

impl Dispatch {
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

    /// Names a chunk and hands a copy of it to the sealers for the destinations that
    /// lack it.
    fn chunk(&mut self, data: &[u8], stored: &mut Stored) -> io::Result<()> {
        let id = self.hasher.id(data);
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
        let mut buffer = self.buffers.take();
        buffer.extend_from_slice(data);
        let sent = match &self.work {
            Some(tx) => tx
                .send(Work {
                    id,
                    data: buffer,
                    targets,
                })
                .is_ok(),
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

/// Names streams as a backup with a key would, without storing anything: how a
/// restore drill checks restored files against their snapshot entries without
/// fetching anything again. Cuts exactly as [`RepoSink`] cuts a stream, with one
/// buffer for all the streams it names.
#[derive(Debug)]
pub struct ChunkIds {
    chunker: Chunker,
    hasher: ChunkHasher,
}

impl ChunkIds {
    pub fn new(key: &RepoKey) -> ChunkIds {
        ChunkIds {
            chunker: Chunker::new(key.chunker_seed()),
            hasher: key.chunk_id(),
        }
    }

    /// The chunk ids of the bytes of `reader`, and their length.
    pub fn of(&mut self, reader: &mut dyn Read) -> io::Result<(Vec<ChunkId>, u64)> {
        let (mut ids, mut bytes) = (Vec::new(), 0);
        let hasher = &self.hasher;
        self.chunker.chunks(reader, |chunk| {
            bytes += chunk.len() as u64;
            ids.push(hasher.id(chunk));
            Ok(())
        })?;
        Ok((ids, bytes))
    }
}

impl Drop for Dispatch {
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
        let dispatch = &mut self.dispatch;
        self.chunker
            .chunks(reader, |chunk| dispatch.chunk(chunk, &mut stored))?;
        self.bytes_read += stored.bytes;
        Ok(stored)
    }
}
