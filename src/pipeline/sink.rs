//! The backup side of the pipeline: a [`ChunkSink`] that cuts a stream into
//! content-defined chunks, names each by its keyed hash, and — for every destination
//! that lacks it — compresses it with zstd, encrypts it once to the recipients and
//! adds it to that destination's pack. Full packs go to an uploader over a bounded
//! channel, so memory stays at a few packs whatever the size of the data.

use std::collections::HashSet;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, StreamCDC};
use tokio::sync::mpsc;

use crate::pipeline::crypto::KeySet;
use crate::repo::format::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, PACK_TARGET, PackBuilder, PackRecord};
use crate::repo::keys::{ChunkHasher, ChunkId, RepoKey};
use crate::sources::{ChunkSink, Stored};

/// A finished pack on its way to storage.
pub type PackUpload = (Vec<u8>, PackRecord);

/// One destination's side of the sink.
#[derive(Debug)]
pub struct Target {
    known: HashSet<ChunkId>,
    builder: PackBuilder,
    tx: mpsc::Sender<PackUpload>,
}

impl Target {
    /// `known`: the chunks the destination's index already lists.
    pub fn new(known: HashSet<ChunkId>, tx: mpsc::Sender<PackUpload>) -> Target {
        Target {
            known,
            builder: PackBuilder::default(),
            tx,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let (bytes, record) = std::mem::take(&mut self.builder).finish();
        self.tx
            .blocking_send((bytes, record))
            .map_err(|_| io::Error::other("the upload of a pack failed"))
    }
}

/// Chunks, deduplicates, compresses, encrypts and packs for several destinations.
pub struct RepoSink {
    hasher: ChunkHasher,
    seed: u64,
    /// One compression context for the whole stream, not one per chunk.
    compressor: zstd::bulk::Compressor<'static>,
    key_set: KeySet,
    pub targets: Vec<Target>,
    pub bytes_read: u64,
}

impl std::fmt::Debug for RepoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSink")
            .field("targets", &self.targets.len())
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

impl RepoSink {
    pub fn new(
        key: &RepoKey,
        key_set: KeySet,
        level: i32,
        targets: Vec<Target>,
    ) -> io::Result<RepoSink> {
        Ok(RepoSink {
            hasher: key.chunk_id(),
            seed: key.chunker_seed(),
            compressor: zstd::bulk::Compressor::new(level)?,
            key_set,
            targets,
            bytes_read: 0,
        })
    }

    /// Sends the last partial packs; dropping the sink then closes the channels.
    pub fn finish(&mut self) -> io::Result<()> {
        for t in &mut self.targets {
            t.flush()?;
        }
        Ok(())
    }
}

impl ChunkSink for RepoSink {
    fn store(&mut self, reader: &mut dyn Read) -> io::Result<Stored> {
        let mut stored = Stored::default();
        let chunker = StreamCDC::with_level_and_seed(
            reader,
            CHUNK_MIN as usize,
            CHUNK_AVG as usize,
            CHUNK_MAX as usize,
            Normalization::Level1,
            self.seed,
        );
        for chunk in chunker {
            let chunk = chunk.map_err(io::Error::from)?;
            let id = self.hasher.id(&chunk.data);
            let mut packet = None;
            for t in &mut self.targets {
                if t.known.contains(&id) {
                    continue;
                }
                if packet.is_none() {
                    let compressed = self.compressor.compress(&chunk.data)?;
                    packet = Some(
                        self.key_set
                            .encrypt(&compressed)
                            .map_err(|e| io::Error::other(e.0))?,
                    );
                }
                if let Some(p) = &packet {
                    t.builder
                        .add(id, &self.key_set.packets, p, chunk.length as u32);
                    t.known.insert(id);
                    if t.builder.len() >= PACK_TARGET {
                        t.flush()?;
                    }
                }
            }
            stored.chunks.push(id);
            stored.bytes += chunk.length as u64;
        }
        self.bytes_read += stored.bytes;
        Ok(stored)
    }
}
