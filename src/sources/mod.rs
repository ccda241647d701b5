//! The sources: what reads the data to back up and writes it back on restore. A
//! source hands its bytes to a [`ChunkSink`] and reads them back from a
//! [`ChunkSource`]; chunking, compression, keys and the repository layout are not its
//! business.

pub mod files;
pub mod postgres;

use std::io::Read;

use crate::repo::keys::ChunkId;

/// Where a source's bytes go: chunked, deduplicated, compressed, encrypted, packed.
pub trait ChunkSink {
    /// Stores everything `reader` yields; returns the chunk ids in order and the
    /// number of bytes read.
    fn store(&mut self, reader: &mut dyn Read) -> std::io::Result<Stored>;
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
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, String>;
}
