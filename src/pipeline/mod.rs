//! The stream stages between a source and the repository: content-defined chunking,
//! keyed hashing, zstd and OpenPGP (the cryptography itself is [`crate::crypto`]'s),
//! behind the two traits a source sees: [`ChunkSink`] to store its bytes and
//! [`ChunkSource`] to read them back. Nothing here knows where bytes come from.

pub mod chunker;
pub mod compress;
pub mod fetch;
pub mod pool;
pub mod sink;

use std::io::Read;
use std::sync::Arc;

use crate::crypto::keys::ChunkId;
use crate::error::Failure;

/// Where a source's bytes go: chunked, deduplicated, compressed, encrypted, packed.
pub trait ChunkSink {
    /// Stores everything `reader` yields; returns the chunk ids in order and the
    /// number of bytes read.
    fn store(&mut self, reader: &mut dyn Read) -> std::io::Result<Stored>;

    /// Whether a destination lost `chunk` (its pack missing or damaged, as `verify`
    /// found): a file listing it is read again rather than its chunk list reused.
    /// A sink with no record of what was stored before lost nothing.
    fn lost(&self, _chunk: &ChunkId) -> bool {
        false
    }
}

/// What [`ChunkSink::store`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub chunks: Vec<ChunkId>,
    pub bytes: u64,
}

/// Where a restore reads chunks from: decrypted, decompressed and checked against
/// their id.
pub trait ChunkSource {
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, Failure>;

    /// The length of a chunk's plaintext. By default the chunk is fetched to tell.
    fn length(&mut self, id: &ChunkId) -> Result<u64, Failure> {
        self.fetch(id).map(|b| b.len() as u64)
    }

    /// Another source reading the same chunks, for a second thread; `None` where the
    /// source cannot be shared (the default). The source may shrink its own caches
    /// to share memory with its twins.
    fn twin(&mut self) -> Option<Box<dyn ChunkSource + Send>> {
        None
    }

    /// What to read ahead of fetching `order` (with this source and its twins, in
    /// that order), to run on a thread of its own; `None` where there is nothing to
    /// read ahead (the default).
    fn read_ahead(&mut self, _order: &[ChunkId]) -> Option<Arc<dyn ReadAhead>> {
        None
    }
}

/// Reading ahead of a restore's fetches, on a thread of its own.
pub trait ReadAhead: Send + Sync {
    /// Reads what the fetches will need next, a little ahead of them, until it has
    /// read everything or [`ReadAhead::stop`] is called.
    fn run(&self);

    /// Makes [`ReadAhead::run`] return at its next wait.
    fn stop(&self);
}

/// Bytes no compressor shrinks and in which FastCDC finds its cut points (xorshift64),
/// the same for the same `len` and `seed`: test data for chunking and packing.
#[cfg(test)]
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
