//! The repository key: 32 random bytes made by `backplan init`, held by the backup
//! host like a database password, with a copy in every repository encrypted to the
//! recipients. Everything the host must read back is derived from it; content is not.

use std::fmt;

use crate::crypto::{self, CryptoError, Recipients, SecretKeys};

/// The repository key and the keys derived from it.
#[derive(Clone)]
pub struct RepoKey {
    raw: [u8; 32],
}

impl fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoKey({})", self.id())
    }
}

const CONTEXT_ID: &str = "backplan 2026-11 repository key id v1";
const CONTEXT_CHUNK: &str = "backplan 2026-11 chunk id v1";
const CONTEXT_META: &str = "backplan 2026-11 metadata v1";
const CONTEXT_SEED: &str = "backplan 2026-11 chunker seed v1";

impl RepoKey {
    /// A new random key.
    pub fn generate() -> Result<RepoKey, CryptoError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| CryptoError(format!("no randomness: {e}")))?;
        Ok(RepoKey { raw })
    }

    /// Parses the hex form written by `init`.
    pub fn from_hex(text: &str) -> Result<RepoKey, CryptoError> {
        let text = text.trim();
        let bad = || CryptoError("a repository key is 64 hexadecimal digits".into());
        if text.len() != 64 {
            return Err(bad());
        }
        let mut raw = [0u8; 32];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(RepoKey { raw })
    }

    /// The hex form, for the key file. Never log it.
    pub fn to_hex(&self) -> String {
        self.raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A public name for the key (16 hex digits); objects name the key they need.
    pub fn id(&self) -> String {
        let d = blake3::derive_key(CONTEXT_ID, &self.raw);
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id of a chunk: a keyed hash of its plaintext, so the storage provider
    /// cannot confirm that it holds some known content.
    pub fn chunk_id(&self) -> ChunkHasher {
        ChunkHasher {
            key: blake3::derive_key(CONTEXT_CHUNK, &self.raw),
        }
    }

    /// The key of the metadata encryption.
    pub fn meta_key(&self) -> [u8; 32] {
        blake3::derive_key(CONTEXT_META, &self.raw)
    }

    /// The chunker's seed: chunk boundaries do not reveal content either.
    pub fn chunker_seed(&self) -> u64 {
        let d = blake3::derive_key(CONTEXT_SEED, &self.raw);
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The copy stored in the repository, readable by any recipient's secret key.
    pub fn wrap(&self, recipients: &Recipients) -> Result<Vec<u8>, CryptoError> {
        recipients.encrypt(self.to_hex().as_bytes())
    }

    /// Recovers the key from its stored copy with a recipient's secret key.
    pub fn unwrap(copy: &[u8], secret: &SecretKeys) -> Result<RepoKey, CryptoError> {
        let hex = secret.decrypt(&[], copy)?;
        RepoKey::from_hex(&String::from_utf8_lossy(&hex))
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        crypto::seal(&self.meta_key(), plaintext)
    }

    pub fn open(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        crypto::open(&self.meta_key(), ciphertext)
    }
}

/// Computes chunk ids.
#[derive(Clone)]
pub struct ChunkHasher {
    key: [u8; 32],
}

impl fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkHasher")
    }
}

impl ChunkHasher {
    pub fn id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.key, plaintext).as_bytes())
    }
}

/// A chunk's id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..12])
    }
}

impl ChunkId {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<ChunkId> {
        if text.len() != 64 {
            return None;
        }
        let mut raw = [0u8; 32];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ChunkId(raw))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed from the reader's buffer: no string is made for each of the
        // index's chunk records.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = ChunkId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk id, 64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ChunkId, E> {
                ChunkId::from_hex(s).ok_or_else(|| E::custom("a chunk id is 64 hex digits"))
            }
        }
        d.deserialize_str(Hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_derived_keys_differ() {
        let k = RepoKey::generate().expect("random");
        let again = RepoKey::from_hex(&k.to_hex()).expect("hex");
        assert_eq!(k.id(), again.id());
        assert_eq!(k.id().len(), 16);
        assert_ne!(k.meta_key(), blake3::derive_key(CONTEXT_CHUNK, &k.raw));
        assert!(RepoKey::from_hex("abc").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }

    #[test]
    fn chunk_ids_depend_on_the_key() {
        let a = RepoKey::generate().expect("random");
        let b = RepoKey::generate().expect("random");
        assert_eq!(a.chunk_id().id(b"x"), a.chunk_id().id(b"x"));
        assert_ne!(a.chunk_id().id(b"x"), b.chunk_id().id(b"x"));
        let id = a.chunk_id().id(b"x");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
    }
}
