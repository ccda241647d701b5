//! The envelope of every metadata object (index, snapshot, applied policy):
//!
//! ```text
//! magic "BPOBJ1\n\0" | u32 LE header length | header (JSON, public)
//!                    | u64 LE body length   | body (sealed with the repository key)
//!                    | BLAKE3 of everything before (32 bytes)
//! ```
//!
//! The trailing hash lets anyone, with no key, tell an intact object from a damaged
//! one; the seal on the body tells a changed body apart even from a recomputed hash.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const MAGIC: &[u8; 8] = b"BPOBJ1\n\0";

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged(pub String);

/// Serialises an object.
pub fn encode<H: Serialize>(header: &H, body: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + 4 + header.len() + 8 + body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// Checks an object and splits it into its header and its body.
pub fn decode<H: DeserializeOwned>(bytes: &[u8]) -> Result<(H, &[u8]), Damaged> {
    if bytes.len() < 8 + 4 + 8 + 32 || &bytes[..8] != MAGIC {
        return Err(Damaged(
            "not a backplan object (bad magic or too short)".into(),
        ));
    }
    let (content, hash) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(content).as_bytes() != hash {
        return Err(Damaged("its checksum does not match its content".into()));
    }
    let header_len =
        u32::from_le_bytes([content[8], content[9], content[10], content[11]]) as usize;
    let rest = &content[12..];
    if rest.len() < header_len + 8 {
        return Err(Damaged("its header length is out of range".into()));
    }
    let (header, rest) = rest.split_at(header_len);
    let mut len = [0u8; 8];
    len.copy_from_slice(&rest[..8]);
    let body = &rest[8..];
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(Damaged("its body length does not match".into()));
    }
    let header = serde_json::from_slice(header)
        .map_err(|e| Damaged(format!("its header is not valid: {e}")))?;
    Ok((header, body))
}

/// Reads only the public header (for `plan`, which has no key).
pub fn header<H: DeserializeOwned>(bytes: &[u8]) -> Result<H, Damaged> {
    decode(bytes).map(|(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_flipped_byte_is_detected() {
        let obj = encode(&serde_json::json!({"a": 1}), b"body bytes");
        let (h, b): (serde_json::Value, &[u8]) = decode(&obj).expect("intact");
        assert_eq!(h["a"], 1);
        assert_eq!(b, b"body bytes");
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x10;
            assert!(
                decode::<serde_json::Value>(&bad).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        assert!(decode::<serde_json::Value>(&obj[..obj.len() - 1]).is_err());
    }
}
