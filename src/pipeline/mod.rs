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
