//! Redis RDB files as a stream of `DUMP` payloads, and back.
//!
//! This module owns the RDB wire format for backplan: it reads an RDB file
//! (from a `dump.rdb` or straight off a replication socket) record by record
//! and turns every key into the payload that Redis's own `DUMP` would give for
//! it, so the restore side can replay it with
//! `RESTORE key ttl payload REPLACE ABSTTL`. Values are never decoded on that
//! path: their bytes are captured exactly as the file holds them (LZF
//! compression included), because `RESTORE` re-parses them on the target and
//! decoding would only cost time and risk changing them. The reader still has
//! to walk each value's structure to know where it ends, and that walk follows
//! `rdbLoadObject()` in Redis's `src/rdb.c` (7.0, 7.2 and 7.4, RDB versions 10
//! to 12) field by field.
//!
//! It also owns the opposite direction, [`Writer`], which assembles an RDB
//! file from DUMP payloads (for a cold start from a `dump.rdb`), and
//! [`split_commands`], which decodes a value into plain commands for the rare
//! key whose payload is too large for one `RESTORE`.
//!
//! Memory stays bounded by the largest single value: the reader keeps one
//! value plus a fixed read buffer, never the file.
//!
//! The parts, by responsibility:
//!
//! - `mod.rs`: the format's numbers and names, [`RdbError`], the records
//!   ([`Item`], [`KeyEntry`]), DUMP payload footers, and the bounds-checked
//!   in-memory `Cursor` with LZF that the reader and the splitter share;
//! - `crc.rs`: [`Crc64`], the checksum of RDB files and DUMP payloads;
//! - `reader.rs`: [`Reader`], an RDB stream to DUMP payloads, record by record;
//! - `writer.rs`: [`Writer`], DUMP payloads to an RDB file;
//! - `split.rs`: [`split_commands`], a value too large for one `RESTORE` as
//!   ordinary commands;
//! - `testdata.rs` (tests only): hand-made RDB bytes the tests of every part share.

use std::fmt;
use std::io;

mod crc;
mod reader;
mod split;
#[cfg(test)]
mod testdata;
mod writer;

pub use crc::Crc64;
pub use reader::Reader;
pub use split::split_commands;
pub use writer::Writer;

/// Newest RDB format version this module reads and writes (Redis 7.4 writes 12).
pub const MAX_RDB_VERSION: u16 = 12;

/// Length of the footer of a DUMP payload: the RDB version (2 bytes) and the CRC-64 (8 bytes).
pub const DUMP_FOOTER_LEN: usize = 10;

// Value types, as numbered in `src/rdb.h` (`RDB_TYPE_*`). They are the first
// byte of a DUMP payload and of every key record in an RDB file.
/// `RDB_TYPE_STRING`.
pub const TYPE_STRING: u8 = 0;
/// `RDB_TYPE_LIST`: a list as a plain sequence of strings (before Redis 3.2).
pub const TYPE_LIST: u8 = 1;
/// `RDB_TYPE_SET`: a set as a plain sequence of strings.
pub const TYPE_SET: u8 = 2;
/// `RDB_TYPE_ZSET`: members with scores as decimal strings (before RDB 8).
pub const TYPE_ZSET: u8 = 3;
/// `RDB_TYPE_HASH`: a hash as field/value string pairs.
pub const TYPE_HASH: u8 = 4;
/// `RDB_TYPE_ZSET_2`: members with binary (little-endian f64) scores.
pub const TYPE_ZSET_2: u8 = 5;
/// `RDB_TYPE_MODULE_PRE_GA`: module value of Redis 4.0 release candidates; cannot be skipped.
pub const TYPE_MODULE_PRE_GA: u8 = 6;
/// `RDB_TYPE_MODULE_2`: module value with self-describing fields.
pub const TYPE_MODULE_2: u8 = 7;
/// `RDB_TYPE_HASH_ZIPMAP` (Redis 2.x).
pub const TYPE_HASH_ZIPMAP: u8 = 9;
/// `RDB_TYPE_LIST_ZIPLIST`.
pub const TYPE_LIST_ZIPLIST: u8 = 10;
/// `RDB_TYPE_SET_INTSET`.
pub const TYPE_SET_INTSET: u8 = 11;
/// `RDB_TYPE_ZSET_ZIPLIST`.
pub const TYPE_ZSET_ZIPLIST: u8 = 12;
/// `RDB_TYPE_HASH_ZIPLIST`.
pub const TYPE_HASH_ZIPLIST: u8 = 13;
/// `RDB_TYPE_LIST_QUICKLIST`: quicklist of ziplists (Redis 3.2 to 6.2).
pub const TYPE_LIST_QUICKLIST: u8 = 14;
/// `RDB_TYPE_STREAM_LISTPACKS` (Redis 5 and 6).
pub const TYPE_STREAM_LISTPACKS: u8 = 15;
/// `RDB_TYPE_HASH_LISTPACK` (Redis 7.0+).
pub const TYPE_HASH_LISTPACK: u8 = 16;
/// `RDB_TYPE_ZSET_LISTPACK` (Redis 7.0+).
pub const TYPE_ZSET_LISTPACK: u8 = 17;
/// `RDB_TYPE_LIST_QUICKLIST_2`: quicklist of listpacks and plain nodes (Redis 7.0+).
pub const TYPE_LIST_QUICKLIST_2: u8 = 18;
/// `RDB_TYPE_STREAM_LISTPACKS_2` (Redis 7.0).
pub const TYPE_STREAM_LISTPACKS_2: u8 = 19;
/// `RDB_TYPE_SET_LISTPACK` (Redis 7.2+).
pub const TYPE_SET_LISTPACK: u8 = 20;
/// `RDB_TYPE_STREAM_LISTPACKS_3` (Redis 7.2+).
pub const TYPE_STREAM_LISTPACKS_3: u8 = 21;
/// `RDB_TYPE_HASH_METADATA_PRE_GA`: hash with field TTLs, 7.4 release candidates.
pub const TYPE_HASH_METADATA_PRE_GA: u8 = 22;
/// `RDB_TYPE_HASH_LISTPACK_EX_PRE_GA`: listpack hash with field TTLs, 7.4 release candidates.
pub const TYPE_HASH_LISTPACK_EX_PRE_GA: u8 = 23;
/// `RDB_TYPE_HASH_METADATA`: hash with field TTLs (Redis 7.4+).
pub const TYPE_HASH_METADATA: u8 = 24;
/// `RDB_TYPE_HASH_LISTPACK_EX`: listpack hash with field TTLs (Redis 7.4+).
pub const TYPE_HASH_LISTPACK_EX: u8 = 25;

// Opcodes (`RDB_OPCODE_*` in `src/rdb.h`).
const OP_SLOT_INFO: u8 = 244;
/// `RDB_OPCODE_FUNCTION2`: the first byte of a function library record and of a
/// `FUNCTION DUMP` payload.
pub const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

// Special string encodings (`RDB_ENC_*`), signalled by a length byte 11xxxxxx.
const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

// Field tags inside a module value (`RDB_MODULE_OPCODE_*`).
const MODULE_OPCODE_EOF: u64 = 0;
const MODULE_OPCODE_SINT: u64 = 1;
const MODULE_OPCODE_UINT: u64 = 2;
const MODULE_OPCODE_FLOAT: u64 = 3;
const MODULE_OPCODE_DOUBLE: u64 = 4;
const MODULE_OPCODE_STRING: u64 = 5;

// Quicklist node containers (`QUICKLIST_NODE_CONTAINER_*`).
const QUICKLIST_PLAIN: u64 = 1;
const QUICKLIST_PACKED: u64 = 2;

/// The family name of an RDB value type, as `TYPE key` would say it
/// (`"string"`, `"list"`, `"set"`, `"zset"`, `"hash"`, `"stream"`, `"module"`),
/// or `"unknown"`.
#[must_use]
pub fn type_name(type_id: u8) -> &'static str {
    match type_id {
        TYPE_STRING => "string",
        TYPE_LIST | TYPE_LIST_ZIPLIST | TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => "list",
        TYPE_SET | TYPE_SET_INTSET | TYPE_SET_LISTPACK => "set",
        TYPE_ZSET | TYPE_ZSET_2 | TYPE_ZSET_ZIPLIST | TYPE_ZSET_LISTPACK => "zset",
        TYPE_HASH
        | TYPE_HASH_ZIPMAP
        | TYPE_HASH_ZIPLIST
        | TYPE_HASH_LISTPACK
        | TYPE_HASH_METADATA_PRE_GA
        | TYPE_HASH_LISTPACK_EX_PRE_GA
        | TYPE_HASH_METADATA
        | TYPE_HASH_LISTPACK_EX => "hash",
        TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => "stream",
        TYPE_MODULE_PRE_GA | TYPE_MODULE_2 => "module",
        _ => "unknown",
    }
}

/// Whether `type_id` is a value type this module can capture (`rdbIsObjectType`
/// minus the pre-GA module format, which has no length information).
fn is_value_type(type_id: u8) -> bool {
    matches!(type_id, 0..=5 | 7 | 9..=25)
}

/// The 9-character module type name encoded in a module id (the upper 54
/// bits, 6 bits a character), as Redis prints it in its own errors
/// (`moduleTypeNameByID`). The low 10 bits are the module's encoding version.
#[must_use]
pub fn module_type_name(module_id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = module_id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}
/// What went wrong, for callers that react differently (a truncated
/// replication stream is retried; a corrupt file is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RdbErrorKind {
    /// The input ended before the structure did.
    Truncated,
    /// A stored CRC-64 does not match the bytes.
    ChecksumMismatch,
    /// The bytes do not follow the RDB format.
    Corrupt,
    /// Valid, but a version or encoding this module does not handle.
    Unsupported,
    /// The underlying reader failed.
    Io,
}

/// An RDB parsing error: a kind, the byte offset it concerns, and a plain
/// message that already names that offset.
#[derive(Debug)]
pub struct RdbError {
    kind: RdbErrorKind,
    offset: u64,
    message: String,
    source: Option<io::Error>,
}

impl RdbError {
    fn new(kind: RdbErrorKind, offset: u64, message: String) -> Self {
        Self {
            kind,
            offset,
            message,
            source: None,
        }
    }

    fn corrupt(offset: u64, message: String) -> Self {
        Self::new(RdbErrorKind::Corrupt, offset, message)
    }

    fn unsupported(offset: u64, message: String) -> Self {
        Self::new(RdbErrorKind::Unsupported, offset, message)
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> RdbErrorKind {
        self.kind
    }

    /// The byte offset (in the file, or in the payload for payload errors) the error concerns.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the input simply ended too early (more bytes might have fixed it).
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.kind == RdbErrorKind::Truncated
    }
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RdbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<RdbError> for io::Error {
    fn from(e: RdbError) -> Self {
        let kind = match e.kind {
            RdbErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            RdbErrorKind::Io => e
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, io::Error::kind),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// One record of an RDB file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An AUX field (`redis-ver`, `repl-id`, `ctime`, ...), strings decoded.
    Aux {
        /// Field name.
        key: Vec<u8>,
        /// Field value.
        value: Vec<u8>,
    },
    /// The keys that follow belong to this database.
    SelectDb(u64),
    /// A function library (`RDB_OPCODE_FUNCTION2`), already shaped as a
    /// `FUNCTION DUMP` payload for `FUNCTION RESTORE payload REPLACE`.
    Function {
        /// The payload, footer included.
        payload: Vec<u8>,
    },
    /// A key with its value as a DUMP payload.
    Key(KeyEntry),
    /// Module auxiliary data (`RDB_OPCODE_MODULE_AUX`), skipped: it belongs to
    /// a module's global state, which `RESTORE` cannot carry. See
    /// [`module_type_name`] for a readable name.
    ModuleAux {
        /// The module type id (name and encoding version).
        module_id: u64,
    },
}

/// A key read from an RDB file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Database number (the last SELECTDB before the key; 0 if none).
    pub db: u64,
    /// The key name, decoded.
    pub key: Vec<u8>,
    /// Absolute expiry in unix milliseconds (EXPIRETIME seconds are converted,
    /// EXPIRETIME_MS taken as is), for `RESTORE ... ABSTTL`; `None` when the key
    /// does not expire.
    pub expire_ms: Option<i64>,
    /// The RDB value type (`TYPE_*`), first byte of `payload`.
    pub type_id: u8,
    /// A DUMP payload: the type byte, the value exactly as serialised in the
    /// RDB, the RDB version as u16 little-endian, and the CRC-64 (little-endian)
    /// of all bytes before it.
    pub payload: Vec<u8>,
    /// LRU idle time in seconds (`RDB_OPCODE_IDLE`), for `RESTORE ... IDLETIME`.
    pub lru_idle_secs: Option<u64>,
    /// LFU frequency counter (`RDB_OPCODE_FREQ`), for `RESTORE ... FREQ`.
    pub lfu_freq: Option<u8>,
}

impl fmt::Debug for KeyEntry {
    // The payload can be hundreds of megabytes: show its size, not its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("db", &self.db)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("expire_ms", &self.expire_ms)
            .field("type_id", &self.type_id)
            .field("payload_len", &self.payload.len())
            .field("lru_idle_secs", &self.lru_idle_secs)
            .field("lfu_freq", &self.lfu_freq)
            .finish()
    }
}

/// Checks a DUMP payload the way `RESTORE` does (`verifyDumpPayload`): the
/// footer's RDB version must be one this module knows and the CRC-64 must match.
/// Returns the first byte (the value type, or [`OP_FUNCTION2`] for a
/// `FUNCTION DUMP` payload) and the RDB version.
pub fn check_dump_payload(payload: &[u8]) -> Result<(u8, u16), RdbError> {
    let len = payload.len();
    if len < DUMP_FOOTER_LEN + 1 {
        return Err(RdbError::corrupt(
            0,
            format!(
                "a DUMP payload of {len} bytes is too short (it needs a type byte and a \
                 {DUMP_FOOTER_LEN}-byte footer)"
            ),
        ));
    }
    let footer = &payload[len - DUMP_FOOTER_LEN..];
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version == 0 || version > MAX_RDB_VERSION {
        return Err(RdbError::unsupported(
            (len - DUMP_FOOTER_LEN) as u64,
            format!(
                "the DUMP payload says RDB version {version}, which is not one this reader \
                 knows (1..={MAX_RDB_VERSION})"
            ),
        ));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&footer[2..]);
    let stored = u64::from_le_bytes(stored);
    let computed = Crc64::checksum(&payload[..len - 8]);
    if stored != computed {
        return Err(RdbError::new(
            RdbErrorKind::ChecksumMismatch,
            (len - 8) as u64,
            format!(
                "checksum mismatch: the DUMP payload says {stored:#018x}, the bytes give \
                 {computed:#018x}"
            ),
        ));
    }
    Ok((payload[0], version))
}

/// Appends the DUMP footer (version, CRC-64 of everything before it).
fn push_footer(payload: &mut Vec<u8>, version: u16) {
    payload.extend_from_slice(&version.to_le_bytes());
    let crc = Crc64::checksum(payload);
    payload.extend_from_slice(&crc.to_le_bytes());
}

/// A length field: a plain count, or the tag of a specially encoded string.
#[derive(Debug, Clone, Copy)]
enum Len {
    Plain(u64),
    Encoded(u8),
}

/// Bounds-checked reading of RDB elements held in memory (a key, an AUX
/// field, a payload being decoded by [`split_commands`]).
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    // Offset of data[0] in the file or payload, for messages.
    base: u64,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], base: u64) -> Self {
        Self { data, pos: 0, base }
    }

    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn err(&self, what: &str) -> RdbError {
        let at = self.at();
        RdbError::corrupt(at, format!("{what} at byte {at}"))
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8], RdbError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(&format!("{n} bytes needed, {left} left")));
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64)?);
        Ok(a)
    }

    fn len(&mut self) -> Result<Len, RdbError> {
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok(Len::Plain(u64::from(b & 0x3f))),
            1 => Ok(Len::Plain(u64::from(b & 0x3f) << 8 | u64::from(self.u8()?))),
            3 => Ok(Len::Encoded(b & 0x3f)),
            _ => match b {
                0x80 => Ok(Len::Plain(u64::from(u32::from_be_bytes(self.array()?)))),
                0x81 => Ok(Len::Plain(u64::from_be_bytes(self.array()?))),
                _ => Err(self.err(&format!("unknown length encoding 0x{b:02x}"))),
            },
        }
    }

    fn count(&mut self) -> Result<u64, RdbError> {
        Ok(match self.len()? {
            Len::Plain(n) => n,
            Len::Encoded(e) => u64::from(e),
        })
    }

    /// A string, decoded: integers become their decimal text, LZF is expanded.
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len()? {
            Len::Plain(n) => Ok(self.bytes(n)?.to_vec()),
            Len::Encoded(ENC_INT8) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Len::Encoded(ENC_INT16) => {
                Ok(i16::from_le_bytes(self.array()?).to_string().into_bytes())
            }
            Len::Encoded(ENC_INT32) => {
                Ok(i32::from_le_bytes(self.array()?).to_string().into_bytes())
            }
            Len::Encoded(ENC_LZF) => {
                let clen = self.count()?;
                let len = self.count()?;
                let at = self.at();
                let compressed = self.bytes(clen)?;
                lzf_decompress(compressed, len).ok_or_else(|| {
                    RdbError::corrupt(at, format!("invalid LZF-compressed string at byte {at}"))
                })
            }
            Len::Encoded(e) => Err(self.err(&format!("unknown string encoding {e}"))),
        }
    }

    fn finish(&self) -> Result<(), RdbError> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(self.err(&format!(
                "{} unexpected bytes after the value",
                self.data.len() - self.pos
            )))
        }
    }
}

/// LibLZF decompression (`lzf_decompress`), to exactly `out_len` bytes.
fn lzf_decompress(input: &[u8], out_len: u64) -> Option<Vec<u8>> {
    let out_len = usize::try_from(out_len).ok()?;
    // LZF expands at most ~100x; do not trust a corrupt length with memory.
    let mut out = Vec::with_capacity(out_len.min(input.len().saturating_mul(128)));
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            if i + run > input.len() || out.len() + run > out_len {
                return None;
            }
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            len += 2;
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            if back > out.len() || out.len() + len > out_len {
                return None;
            }
            // Byte by byte: the source may overlap what is being written.
            let start = out.len() - back;
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sources::redis::rdb::testdata::*;

    #[test]
    fn check_dump_payload_accepts_real_payloads_and_rejects_flipped_bytes() {
        assert_eq!(
            check_dump_payload(REAL_DUMP_STRING).unwrap(),
            (TYPE_STRING, 10)
        );
        assert_eq!(
            check_dump_payload(REAL_DUMP_LIST).unwrap(),
            (TYPE_LIST_QUICKLIST_2, 10)
        );
        for payload in [REAL_DUMP_STRING, REAL_DUMP_LIST] {
            for i in 0..payload.len() {
                for bit in [0x01, 0x80] {
                    let mut p = payload.to_vec();
                    p[i] ^= bit;
                    assert!(check_dump_payload(&p).is_err(), "flip of byte {i} accepted");
                }
            }
        }
        assert!(check_dump_payload(&REAL_DUMP_STRING[..10]).is_err());
        // A future version is refused even with a good checksum.
        let mut future = REAL_DUMP_STRING[..REAL_DUMP_STRING.len() - DUMP_FOOTER_LEN].to_vec();
        push_footer(&mut future, 13);
        assert_eq!(
            check_dump_payload(&future).unwrap_err().kind(),
            RdbErrorKind::Unsupported
        );
    }

    #[test]
    fn names() {
        assert_eq!(type_name(TYPE_STRING), "string");
        assert_eq!(type_name(TYPE_LIST_QUICKLIST_2), "list");
        assert_eq!(type_name(TYPE_SET_LISTPACK), "set");
        assert_eq!(type_name(TYPE_ZSET_2), "zset");
        assert_eq!(type_name(TYPE_HASH_LISTPACK_EX), "hash");
        assert_eq!(type_name(TYPE_STREAM_LISTPACKS_3), "stream");
        assert_eq!(type_name(TYPE_MODULE_2), "module");
        assert_eq!(type_name(8), "unknown");
        // "ReJSON-RL" with encoding version 3, as the RedisJSON module registers it.
        let cset = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let id = b"ReJSON-RL".iter().fold(0u64, |id, c| {
            id << 6 | cset.iter().position(|x| x == c).unwrap() as u64
        }) << 10
            | 3;
        assert_eq!(module_type_name(id), "ReJSON-RL");
    }

    #[test]
    fn lzf_decompression() {
        assert_eq!(
            lzf_decompress(&[0x00, b'a', 0xe0, 20, 0x00], 30),
            Some(vec![b'a'; 30])
        );
        // "abcabcabc": literal "abc", back-reference of 6 bytes at distance 3.
        assert_eq!(
            lzf_decompress(&[0x02, b'a', b'b', b'c', 0x80, 0x02], 9),
            Some(b"abcabcabc".to_vec())
        );
        assert_eq!(lzf_decompress(&[0x00, b'a', 0xe0, 20, 0x00], 31), None);
        assert_eq!(
            lzf_decompress(&[0x00, b'a', 0xe0, 20, 0x05], 30),
            None,
            "reference before the start"
        );
        assert_eq!(
            lzf_decompress(&[0x05, b'a'], 6),
            None,
            "literal past the end"
        );
    }
}
