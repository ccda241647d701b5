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
/// At most this many chunks a sealer takes at once (those waiting): their packets are
/// encrypted side by side (see `crypto::seipdv1::encrypt_laid_out`).
const SEAL_BATCH: usize = 4;
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
    /// The chunks laid out in their packs and not yet encrypted or copied to their
    /// other destinations, in the order they were added.
    pending: Vec<Pending>,
    /// Pack buffers, shared with the uploads that give them back.
    pool: Arc<Pool>,
    /// The chunk buffers, given back once sealed.
    buffers: Arc<Pool>,
}

/// A chunk in its first destination's pack, not yet sealed.
struct Pending {
    id: ChunkId,
    raw_length: u32,
    /// Its first destination and its place among that pack's chunks.
    target: usize,
    place: usize,
    /// Whether it lies there in clear, to be encrypted.
    clear: bool,
    /// The destinations that get a copy of its packet.
    others: Vec<usize>,
}

/// The sealers' end of the work channel.
type WorkQueue = Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Work>>>;

impl Sealer {
    fn run(mut self, work: WorkQueue, abandoned: &AtomicBool) -> io::Result<()> {
        let mut batch = Vec::with_capacity(SEAL_BATCH);
        loop {
            // The lock is held only to take the chunks waiting, at least one.
            match work.lock() {
                Ok(rx) => {
                    batch.extend(rx.recv());
                    batch.extend(rx.try_iter().take(SEAL_BATCH - 1));
                }
                Err(_) => return Err(io::Error::other("another sealer panicked")),
            }
            if batch.is_empty() {
                break;
            }
            for w in batch.drain(..) {
                self.lay_out(&w)?;
                self.buffers.give(w.data);
            }
            self.seal()?;
            for t in 0..self.packs.len() {
                if self.packs[t].0.len() >= PACK_TARGET {
                    self.flush(t)?;
                }
            }
        }
        if !abandoned.load(Ordering::SeqCst) {
            for t in 0..self.packs.len() {
                self.flush(t)?;
            }
        }
        Ok(())
    }

    /// Compresses a chunk into the pack of its first destination, laid out there for
    /// [`Sealer::seal`] to encrypt (with the chunks around it).
    fn lay_out(&mut self, w: &Work) -> io::Result<()> {
        let Some((&target, others)) = w.targets.split_first() else {
            return Ok(());
        };
        if self.packs[target].0.len() >= PACK_TARGET {
            self.seal()?;
            self.flush(target)?;
        }
        let raw_length = w.data.len() as u32;
        let parts = self.compressor.frame(&w.data)?;
        let key_set = &self.key_set;
        let mut clear = false;
        let place = self.packs[target]
            .0
            .add_with(w.id, &key_set.packets, raw_length, |out| {
                clear = key_set.lay_out_into(&parts, out)?;
                Ok(())
            })
            .map_err(|e: crate::crypto::CryptoError| io::Error::other(e.0))?;
        self.pending.push(Pending {
            id: w.id,
            raw_length,
            target,
            place,
            clear,
            others: others.to_vec(),
        });
        Ok(())
    }

    /// Encrypts the chunks laid out in clear, all together, and copies each packet
    /// into the packs of its other destinations.
    fn seal(&mut self) -> io::Result<()> {
        let mut packets = Vec::new();
        for (t, (builder, _)) in self.packs.iter_mut().enumerate() {
            let n = self
                .pending
                .iter()
                .filter(|p| p.target == t && p.clear)
                .count();
            packets.extend(builder.last_packets_mut(n));
        }
        self.key_set
            .encrypt_laid_out(&mut packets)
            .map_err(|e| io::Error::other(e.0))?;
        // Copied out first: a pack that fills up with copies is sent on, and with it
        // the packets still to be copied from it.
        let copies: Vec<(Pending, Vec<u8>)> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|p| !p.others.is_empty())
            .map(|p| {
                let packet = self.packs[p.target].0.packet(p.place).to_vec();
                (p, packet)
            })
            .collect();
        for (p, packet) in copies {
            for &t in &p.others {
                if self.packs[t].0.len() >= PACK_TARGET {
                    self.flush(t)?;
                }
                let packets = &self.key_set.packets;
                self.packs[t].0.add(p.id, packets, &packet, p.raw_length);
            }
        }
        Ok(())
    }

    /// Sends destination `t`'s pack in the making to its uploader (its chunks all
    /// sealed), and starts the next one in a spare buffer.
    fn flush(&mut self, t: usize) -> io::Result<()> {
        let (builder, tx) = &mut self.packs[t];
        if builder.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(builder, PackBuilder::with_buffer(self.pool.take()));
        let (bytes, record) = full.finish();
        let bytes = Bytes::from_owner(Pooled::new(bytes, self.pool.clone()));
        tx.blocking_send((bytes, record))
            .map_err(|_| io::Error::other("the upload of a pack failed"))
    }
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
        // The chunks queued, a batch per sealer, and the one being cut.
        let buffers = Pool::new(SEAL_QUEUE + count * SEAL_BATCH + 1);
        let mut sealers = Vec::new();
        for i in 0..count {
            let sealer = Sealer {
                compressor: Compressor::new(level)?,
                key_set: key_set.clone(),
                packs: senders
                    .iter()
                    .map(|s| (PackBuilder::default(), s.clone()))
                    .collect(),
                pending: Vec::new(),
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
    fn lost(&self, chunk: &ChunkId) -> bool {
        self.dispatch.known.iter().any(|k| !k.index.contains(chunk))
    }

    fn store(&mut self, reader: &mut dyn Read) -> io::Result<Stored> {
        let mut stored = Stored::default();
        let dispatch = &mut self.dispatch;
        self.chunker
            .chunks(reader, |chunk| dispatch.chunk(chunk, &mut stored))?;
        self.bytes_read += stored.bytes;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::crypto::{Recipients, SecretKeys};
    use crate::pipeline::pseudo_random;

    fn fixture(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// Backs `streams` up to destinations whose indexes are `indexes`: what each
    /// stream stored, and each destination's packs.
    fn back_up(
        key: &RepoKey,
        recipients: &Recipients,
        indexes: Vec<Arc<Index>>,
        streams: &[&[u8]],
    ) -> (Vec<Stored>, Vec<Vec<PackUpload>>) {
        let mut receivers = Vec::new();
        let targets = indexes
            .into_iter()
            .map(|index| {
                let (tx, rx) = mpsc::channel(1024);
                receivers.push(rx);
                Target::new(index, tx)
            })
            .collect();
        let key_set = recipients.key_set().expect("a key set");
        let mut sink = RepoSink::new(key, key_set, 3, targets).expect("a sink");
        let stored = streams
            .iter()
            .map(|s| sink.store(&mut &s[..]).expect("stored"))
            .collect();
        sink.finish().expect("finished");
        let packs = receivers
            .into_iter()
            .map(|mut rx| std::iter::from_fn(|| rx.blocking_recv()).collect())
            .collect();
        (stored, packs)
    }

    /// Every chunk of a destination's packs, decrypted and decompressed, by id; each
    /// pack named by its hash, each chunk's plaintext matching its id, none twice.
    fn open_all(
        key: &RepoKey,
        secret: &SecretKeys,
        packs: &[PackUpload],
    ) -> HashMap<ChunkId, Vec<u8>> {
        let hasher = key.chunk_id();
        let mut chunks = HashMap::new();
        for (bytes, record) in packs {
            assert_eq!(record.id, blake3::hash(bytes).to_hex().to_string());
            for c in &record.chunks {
                let (at, len) = record.key_sets[usize::from(c.key_set)];
                let key_set = &bytes[at as usize..(at + u64::from(len)) as usize];
                let packet = &bytes[c.offset as usize..c.offset as usize + c.length as usize];
                let frame = secret.decrypt(key_set, packet).expect("decrypts");
                let plain = zstd::bulk::decompress(&frame, c.raw_length as usize).expect("zstd");
                assert_eq!(
                    hasher.id(&plain),
                    c.id,
                    "a chunk's plaintext matches its id"
                );
                assert!(chunks.insert(c.id, plain).is_none(), "a chunk sent twice");
            }
        }
        chunks
    }

    /// A stream put together again from its chunks.
    fn joined(stored: &Stored, chunks: &HashMap<ChunkId, Vec<u8>>) -> Vec<u8> {
        stored
            .chunks
            .iter()
            .flat_map(|id| chunks[id].clone())
            .collect()
    }

    fn index_of(packs: &[PackUpload]) -> Arc<Index> {
        let records: Vec<&PackRecord> = packs.iter().map(|(_, r)| r).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "packs": records, "retired": [] }))
            .expect("json");
        let mut index = Index::default();
        index
            .read_object("index/a".into(), serde_json::de::SliceRead::new(&body))
            .expect("an index object");
        index.finish();
        Arc::new(index)
    }

    /// Sealers take the chunks waiting in batches and encrypt them side by side; a
    /// chunk new to two destinations is laid out in the first one's pack and copied
    /// into the other's once sealed, a chunk one destination holds goes to the other
    /// alone, packs fill up and are sent between batches. Every destination gets
    /// exactly the chunks it lacks, each readable with the recipient's secret key
    /// (by sequoia, then by the SEIPDv1 reader), and the streams read back whole.
    #[test]
    fn each_destination_gets_every_chunk_it_lacks_once_and_every_chunk_opens() {
        let recipients =
            Recipients::load(&[fixture("tests/fixtures/keys/gnupg-2.2.asc")]).expect("key");
        let secret = SecretKeys::from_bytes(
            &std::fs::read(fixture("tests/fixtures/keys/gnupg-2.2.secret.asc")).expect("file"),
        )
        .expect("secret key");
        let key = RepoKey::generate().expect("a repository key");
        let text = "a line of text that compresses well\n".repeat(150_000);
        let first = [&pseudo_random(24 << 20, 1)[..], text.as_bytes(), b"tiny"].concat();
        let second = pseudo_random(20 << 20, 2);
        let empty = || Arc::new(Index::default());

        let (stored, packs) = back_up(&key, &recipients, vec![empty(), empty()], &[&first]);
        assert!(packs[0].len() >= 2, "a full pack was sent before the last");
        let ids: HashSet<ChunkId> = stored[0].chunks.iter().copied().collect();
        for dest in &packs {
            let chunks = open_all(&key, &secret, dest);
            assert_eq!(chunks.keys().copied().collect::<HashSet<_>>(), ids);
            assert!(
                joined(&stored[0], &chunks) == first,
                "the stream reads back whole"
            );
        }

        // The first destination holds the first stream now; the second holds nothing.
        let (stored, again) = back_up(
            &key,
            &recipients,
            vec![index_of(&packs[0]), empty()],
            &[&first, &second],
        );
        let to_first = open_all(&key, &secret, &again[0]);
        let to_second = open_all(&key, &secret, &again[1]);
        let new: HashSet<ChunkId> = stored[1]
            .chunks
            .iter()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        assert_eq!(to_first.keys().copied().collect::<HashSet<_>>(), new);
        let all: HashSet<ChunkId> = ids.union(&new).copied().collect();
        assert_eq!(to_second.keys().copied().collect::<HashSet<_>>(), all);
        assert!(
            joined(&stored[1], &to_second) == second,
            "the second stream reads back whole"
        );
    }
}
