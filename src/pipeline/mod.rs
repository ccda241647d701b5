//! The stream stages between a source and the repository: content-defined chunking,
//! keyed hashing, zstd and OpenPGP. Nothing here knows where bytes come from or where
//! they are stored.

pub mod crypto;
pub mod fetch;
mod seipdv1;
pub mod sink;
