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

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

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

static CRC64_REDIS: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// Incremental CRC-64/REDIS (Jones polynomial, reflected, no final xor), the
/// checksum Redis puts at the end of RDB files and DUMP payloads.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc::Digest<'static, u64, crc::Table<16>>,
}

impl Crc64 {
    /// A fresh checksum over no bytes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            digest: CRC64_REDIS.digest(),
        }
    }

    /// Feeds more bytes into the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The checksum of every byte fed so far.
    #[must_use]
    pub fn value(&self) -> u64 {
        self.digest.clone().finalize()
    }

    /// A checksum that continues from register value `reg` (what `value()` returned).
    fn from_register(reg: u64) -> Self {
        // For this reflected, init-0 algorithm the crate's "initial value" is
        // the bit-reversed register.
        Self {
            digest: CRC64_REDIS.digest_with_initial(reg.reverse_bits()),
        }
    }

    /// The checksum of `bytes` in one go.
    #[must_use]
    pub fn checksum(bytes: &[u8]) -> u64 {
        CRC64_REDIS.checksum(bytes)
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

/// One CRC-64/REDIS slice-by-16 step: register `crc` over the 16 bytes `a`, `b` (LE words).
#[inline(always)]
fn slice16_step(t: &[[u64; 256]; 16], crc: u64, a: u64, b: u64) -> u64 {
    let a = a ^ crc;
    let byte = |w: u64, i: u32| ((w >> (8 * i)) & 0xff) as usize;
    t[15][byte(a, 0)]
        ^ t[14][byte(a, 1)]
        ^ t[13][byte(a, 2)]
        ^ t[12][byte(a, 3)]
        ^ t[11][byte(a, 4)]
        ^ t[10][byte(a, 5)]
        ^ t[9][byte(a, 6)]
        ^ t[8][byte(a, 7)]
        ^ t[7][byte(b, 0)]
        ^ t[6][byte(b, 1)]
        ^ t[5][byte(b, 2)]
        ^ t[4][byte(b, 3)]
        ^ t[3][byte(b, 4)]
        ^ t[2][byte(b, 5)]
        ^ t[1][byte(b, 6)]
        ^ t[0][byte(b, 7)]
}

/// Advances two CRC-64/REDIS registers over the same bytes in one loop.
///
/// A value's bytes belong to two checksums, the file's and the payload's;
/// computing them side by side lets the two independent dependency chains
/// overlap in the CPU, which makes this about twice as fast as two passes
/// (CRC is most of the reader's time). Uses the crc crate's slice-by-16 tables.
fn crc64_dual(mut r1: u64, mut r2: u64, bytes: &[u8]) -> (u64, u64) {
    let t = CRC64_REDIS.table();
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let (lo, hi) = c.split_at(8);
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(lo);
        b.copy_from_slice(hi);
        let (a, b) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
        r1 = slice16_step(t, r1, a, b);
        r2 = slice16_step(t, r2, a, b);
    }
    for &byte in chunks.remainder() {
        r1 = t[0][((r1 ^ u64::from(byte)) & 0xff) as usize] ^ (r1 >> 8);
        r2 = t[0][((r2 ^ u64::from(byte)) & 0xff) as usize] ^ (r2 >> 8);
    }
    (r1, r2)
}

/// Continues a CRC-64/REDIS whose register is `reg` over `bytes`.
fn crc64_resume(reg: u64, bytes: &[u8]) -> u64 {
    let mut c = Crc64::from_register(reg);
    c.update(bytes);
    c.value()
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crc64({:#018x})", self.value())
    }
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

/// What the reader was in the middle of, for truncation messages.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    Header,
    Record,
    Aux,
    SelectDb,
    ResizeDb,
    SlotInfo,
    Expire,
    KeyMeta,
    ModuleAux,
    Function,
    KeyName(u8),
    Value(u8),
    Checksum,
}

impl fmt::Display for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header => f.write_str("in the header"),
            Ctx::Record => f.write_str("before the EOF opcode"),
            Ctx::Aux => f.write_str("in an AUX field"),
            Ctx::SelectDb => f.write_str("in a SELECTDB record"),
            Ctx::ResizeDb => f.write_str("in a RESIZEDB record"),
            Ctx::SlotInfo => f.write_str("in a SLOT_INFO record"),
            Ctx::Expire => f.write_str("in a key's expiry time"),
            Ctx::KeyMeta => f.write_str("in a key's LRU/LFU information"),
            Ctx::ModuleAux => f.write_str("in MODULE_AUX data"),
            Ctx::Function => f.write_str("in a function library"),
            Ctx::KeyName(t) => write!(f, "in the name of a {} key", type_name(*t)),
            Ctx::Value(t) => write!(f, "in the value of a {} key", type_name(*t)),
            Ctx::Checksum => f.write_str("in the 8-byte checksum"),
        }
    }
}

/// A length field: a plain count, or the tag of a specially encoded string.
#[derive(Debug, Clone, Copy)]
enum Len {
    Plain(u64),
    Encoded(u8),
}

const BUF_CAP: usize = 256 * 1024;
// Big strings are read straight into their destination in chunks of this
// size: it avoids a second copy, and growing by chunks means a corrupt length
// of 2^60 fails on the missing bytes instead of on one huge allocation.
const DIRECT_CHUNK: usize = 16 << 20;

/// The buffered input with CRC and offset accounting. The CRC is folded in
/// lazily, a whole consumed stretch of the buffer at a time, which keeps it fast
/// and lets it stop exactly before the trailing checksum.
struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    // buf[crc_from..pos] is consumed but not yet in `crc`.
    crc_from: usize,
    // File offset of buf[0].
    base: u64,
    crc: Crc64,
    // False once the checksum itself is reached.
    crc_open: bool,
    // True while a value is captured: its bytes are checksummed afterwards,
    // together with the payload's checksum (see `Reader::key`).
    crc_paused: bool,
    ctx: Ctx,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0u8; BUF_CAP].into_boxed_slice(),
            pos: 0,
            end: 0,
            crc_from: 0,
            base: 0,
            crc: Crc64::new(),
            crc_open: true,
            crc_paused: false,
            ctx: Ctx::Header,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn truncated(&self) -> RdbError {
        let at = self.offset();
        RdbError::new(
            RdbErrorKind::Truncated,
            at,
            format!("truncated at byte {at} ({})", self.ctx),
        )
    }

    fn io_error(&self, e: io::Error) -> RdbError {
        let at = self.offset();
        RdbError {
            kind: RdbErrorKind::Io,
            offset: at,
            message: format!("read error at byte {at} ({}): {e}", self.ctx),
            source: Some(e),
        }
    }

    /// Empties the fully consumed buffer, folding what was consumed into the CRC.
    fn drain(&mut self) {
        if self.crc_open && !self.crc_paused {
            self.crc.update(&self.buf[self.crc_from..self.pos]);
        }
        self.base += self.end as u64;
        self.pos = 0;
        self.end = 0;
        self.crc_from = 0;
    }

    fn fill(&mut self) -> Result<(), RdbError> {
        self.drain();
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Err(self.truncated()),
                Ok(n) => {
                    self.end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        if self.pos == self.end {
            self.fill()?;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut a = [0u8; N];
        if self.end - self.pos >= N {
            a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
            self.pos += N;
        } else {
            for slot in &mut a {
                *slot = self.u8()?;
            }
        }
        Ok(a)
    }

    /// Appends the next `n` bytes to `out`.
    fn take(&mut self, n: u64, out: &mut Vec<u8>) -> Result<(), RdbError> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.end {
                if left >= BUF_CAP as u64 {
                    self.read_direct(&mut left, out)?;
                    continue;
                }
                self.fill()?;
            }
            let k = left.min((self.end - self.pos) as u64) as usize;
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            left -= k as u64;
        }
        Ok(())
    }

    /// Reads up to one chunk straight from the inner reader into `out`.
    fn read_direct(&mut self, left: &mut u64, out: &mut Vec<u8>) -> Result<(), RdbError> {
        self.drain();
        let chunk = (*left).min(DIRECT_CHUNK as u64) as usize;
        let start = out.len();
        out.resize(start + chunk, 0);
        let mut got = 0;
        while got < chunk {
            match self.inner.read(&mut out[start + got..]) {
                Ok(0) => {
                    out.truncate(start + got);
                    self.base += got as u64;
                    return Err(self.truncated());
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(start + got);
                    self.base += got as u64;
                    return Err(self.io_error(e));
                }
            }
        }
        if self.crc_open && !self.crc_paused {
            self.crc.update(&out[start..]);
        }
        self.base += chunk as u64;
        *left -= chunk as u64;
        Ok(())
    }

    /// Folds everything consumed so far into the CRC, stops checksumming
    /// and returns the register.
    fn pause_crc(&mut self) -> u64 {
        if self.crc_open {
            self.crc.update(&self.buf[self.crc_from..self.pos]);
            self.crc_from = self.pos;
            self.crc_paused = true;
        }
        self.crc.value()
    }

    /// Checksums again from here on, the bytes since `pause_crc` having been
    /// accounted for by the caller in `reg`.
    fn resume_crc(&mut self, reg: u64) {
        if self.crc_open {
            self.crc = Crc64::from_register(reg);
            self.crc_from = self.pos;
            self.crc_paused = false;
        }
    }

    /// Ends the checksummed part of the file here and returns its CRC-64.
    fn close_crc(&mut self) -> u64 {
        if self.crc_open {
            self.crc.update(&self.buf[self.crc_from..self.pos]);
            self.crc_from = self.pos;
            self.crc_open = false;
        }
        self.crc.value()
    }

    // The `cap_*` functions read one RDB element and append its raw bytes to
    // `out`, which is how values are captured without being decoded.

    fn cap_len(&mut self, out: &mut Vec<u8>) -> Result<Len, RdbError> {
        let at = self.offset();
        let b = self.u8()?;
        out.push(b);
        match b >> 6 {
            0 => Ok(Len::Plain(u64::from(b & 0x3f))),
            1 => {
                let b2 = self.u8()?;
                out.push(b2);
                Ok(Len::Plain(u64::from(b & 0x3f) << 8 | u64::from(b2)))
            }
            3 => Ok(Len::Encoded(b & 0x3f)),
            _ => match b {
                0x80 => {
                    let a = self.array::<4>()?;
                    out.extend_from_slice(&a);
                    Ok(Len::Plain(u64::from(u32::from_be_bytes(a))))
                }
                0x81 => {
                    let a = self.array::<8>()?;
                    out.extend_from_slice(&a);
                    Ok(Len::Plain(u64::from_be_bytes(a)))
                }
                _ => Err(RdbError::corrupt(
                    at,
                    format!("unknown length encoding 0x{b:02x} at byte {at}"),
                )),
            },
        }
    }

    /// A length where a count is expected. Like Redis's `rdbLoadLen(rdb, NULL)`,
    /// a special-encoding byte counts as its 6-bit tag.
    fn cap_count(&mut self, out: &mut Vec<u8>) -> Result<u64, RdbError> {
        Ok(match self.cap_len(out)? {
            Len::Plain(n) => n,
            Len::Encoded(e) => u64::from(e),
        })
    }

    fn cap_string(&mut self, out: &mut Vec<u8>) -> Result<(), RdbError> {
        let at = self.offset();
        match self.cap_len(out)? {
            Len::Plain(n) => self.take(n, out),
            Len::Encoded(ENC_INT8) => self.take(1, out),
            Len::Encoded(ENC_INT16) => self.take(2, out),
            Len::Encoded(ENC_INT32) => self.take(4, out),
            Len::Encoded(ENC_LZF) => {
                let compressed = self.cap_count(out)?;
                let _uncompressed = self.cap_count(out)?;
                self.take(compressed, out)
            }
            Len::Encoded(e) => Err(RdbError::corrupt(
                at,
                format!("unknown string encoding {e} at byte {at}"),
            )),
        }
    }

    /// A score of `RDB_TYPE_ZSET`: a length byte (253..=255 meaning NaN, +inf,
    /// -inf) and that many ASCII bytes.
    fn cap_string_double(&mut self, out: &mut Vec<u8>) -> Result<(), RdbError> {
        let len = self.u8()?;
        out.push(len);
        if len < 253 {
            self.take(u64::from(len), out)?;
        }
        Ok(())
    }

    /// The fields of a module value after its id, up to `RDB_MODULE_OPCODE_EOF`
    /// (`rdbLoadCheckModuleValue`). With `keep == false` the bytes are dropped
    /// field by field, so module aux data costs no memory.
    fn cap_module_fields(&mut self, out: &mut Vec<u8>, keep: bool) -> Result<(), RdbError> {
        loop {
            let at = self.offset();
            let opcode = self.cap_count(out)?;
            match opcode {
                MODULE_OPCODE_EOF => return Ok(()),
                MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
                    self.cap_count(out)?;
                }
                MODULE_OPCODE_FLOAT => self.take(4, out)?,
                MODULE_OPCODE_DOUBLE => self.take(8, out)?,
                MODULE_OPCODE_STRING => self.cap_string(out)?,
                other => {
                    return Err(RdbError::corrupt(
                        at,
                        format!("unknown module field opcode {other} at byte {at}"),
                    ));
                }
            }
            if !keep {
                out.clear();
            }
        }
    }

    fn cap_stream(&mut self, type_id: u8, out: &mut Vec<u8>) -> Result<(), RdbError> {
        let v2 = type_id >= TYPE_STREAM_LISTPACKS_2;
        let v3 = type_id >= TYPE_STREAM_LISTPACKS_3;
        // Listpack nodes: master ID (16 raw bytes as a string) and the listpack.
        let nodes = self.cap_count(out)?;
        for _ in 0..nodes {
            self.cap_string(out)?;
            self.cap_string(out)?;
        }
        // Length, last ID (ms, seq); v2+: first ID, max deleted ID, entries added.
        let header_lens = if v2 { 8 } else { 3 };
        for _ in 0..header_lens {
            self.cap_count(out)?;
        }
        let groups = self.cap_count(out)?;
        for _ in 0..groups {
            self.cap_string(out)?; // group name
            self.cap_count(out)?; // last ID ms
            self.cap_count(out)?; // last ID seq
            if v2 {
                self.cap_count(out)?; // entries read
            }
            let pel = self.cap_count(out)?;
            for _ in 0..pel {
                self.take(16, out)?; // raw stream ID, big-endian ms and seq
                self.take(8, out)?; // delivery time, ms LE
                self.cap_count(out)?; // delivery count
            }
            let consumers = self.cap_count(out)?;
            for _ in 0..consumers {
                self.cap_string(out)?; // consumer name
                self.take(8, out)?; // seen time
                if v3 {
                    self.take(8, out)?; // active time
                }
                let pel = self.cap_count(out)?;
                for _ in 0..pel {
                    self.take(16, out)?;
                }
            }
        }
        Ok(())
    }

    /// Captures a whole value of type `type_id`, mirroring `rdbLoadObject()`.
    fn cap_value(&mut self, type_id: u8, at: u64, out: &mut Vec<u8>) -> Result<(), RdbError> {
        match type_id {
            TYPE_STRING
            | TYPE_HASH_ZIPMAP
            | TYPE_LIST_ZIPLIST
            | TYPE_SET_INTSET
            | TYPE_ZSET_ZIPLIST
            | TYPE_HASH_ZIPLIST
            | TYPE_HASH_LISTPACK
            | TYPE_ZSET_LISTPACK
            | TYPE_SET_LISTPACK
            | TYPE_HASH_LISTPACK_EX_PRE_GA => self.cap_string(out),
            TYPE_LIST | TYPE_SET | TYPE_LIST_QUICKLIST => {
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    self.cap_string(out)?;
                }
                Ok(())
            }
            TYPE_ZSET => {
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    self.cap_string(out)?;
                    self.cap_string_double(out)?;
                }
                Ok(())
            }
            TYPE_HASH => {
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    self.cap_string(out)?;
                    self.cap_string(out)?;
                }
                Ok(())
            }
            TYPE_ZSET_2 => {
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    self.cap_string(out)?;
                    self.take(8, out)?;
                }
                Ok(())
            }
            TYPE_MODULE_2 => {
                self.cap_count(out)?; // module id
                self.cap_module_fields(out, true)
            }
            TYPE_LIST_QUICKLIST_2 => {
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    let c_at = self.offset();
                    let container = self.cap_count(out)?;
                    if container != QUICKLIST_PLAIN && container != QUICKLIST_PACKED {
                        return Err(RdbError::corrupt(
                            c_at,
                            format!("unknown quicklist node container {container} at byte {c_at}"),
                        ));
                    }
                    self.cap_string(out)?;
                }
                Ok(())
            }
            TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
                self.cap_stream(type_id, out)
            }
            TYPE_HASH_METADATA_PRE_GA | TYPE_HASH_METADATA => {
                if type_id == TYPE_HASH_METADATA {
                    self.take(8, out)?; // minimum field expiry, ms LE
                }
                let n = self.cap_count(out)?;
                for _ in 0..n {
                    self.cap_count(out)?; // field TTL (absolute pre-GA, relative+1 in GA)
                    self.cap_string(out)?;
                    self.cap_string(out)?;
                }
                Ok(())
            }
            TYPE_HASH_LISTPACK_EX => {
                self.take(8, out)?; // minimum field expiry, ms LE
                self.cap_string(out)
            }
            TYPE_MODULE_PRE_GA => Err(RdbError::unsupported(
                at,
                format!(
                    "module type 6 (pre-module-2 format) at byte {at} cannot be skipped: it \
                     carries no length information"
                ),
            )),
            other => Err(RdbError::corrupt(
                at,
                format!("unknown value type 0x{other:02x} at byte {at}"),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed,
}

/// Key attributes set by opcodes before the key they belong to.
#[derive(Debug, Default)]
struct Pending {
    expire_ms: Option<i64>,
    lru_idle_secs: Option<u64>,
    lfu_freq: Option<u8>,
}

/// Streaming RDB reader over any [`Read`] (a file, a pipe, a socket).
///
/// It buffers internally, so there is no need to wrap the input in a
/// `BufReader`; because of that buffering it may read past the end of the RDB
/// (on a replication socket, into the command stream that follows):
/// [`Reader::into_parts`] hands those bytes back. The input must start at
/// `REDIS`: a replication client strips the `$<len>\r\n` or
/// `$EOF:<mark>\r\n` framing first (and, for the latter, finds the 40-byte
/// mark among the bytes that follow). It accepts RDB versions
/// 1..=[`MAX_RDB_VERSION`] and checks the trailing CRC-64 of files of version 5
/// and later, computed over every byte up to the checksum itself.
pub struct Reader<R: Read> {
    input: Input<R>,
    version: u16,
    db: u64,
    pending: Pending,
    state: State,
    scratch: Vec<u8>,
}

impl<R: Read> fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("version", &self.version)
            .field("db", &self.db)
            .field("bytes_read", &self.input.offset())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header (`REDIS` and four ASCII digits).
    pub fn new(inner: R) -> Result<Self, RdbError> {
        let mut input = Input::new(inner);
        let header = input.array::<9>()?;
        if &header[..5] != b"REDIS" {
            return Err(RdbError::corrupt(
                0,
                format!(
                    "not an RDB file: it starts with {:?}, not \"REDIS\"",
                    String::from_utf8_lossy(&header[..5])
                ),
            ));
        }
        let digits = &header[5..];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(RdbError::corrupt(
                5,
                format!(
                    "not an RDB file: the version {:?} is not four digits",
                    String::from_utf8_lossy(digits)
                ),
            ));
        }
        let version = digits
            .iter()
            .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
        if version == 0 {
            return Err(RdbError::unsupported(
                5,
                "RDB version 0 is not valid".into(),
            ));
        }
        if version > MAX_RDB_VERSION {
            return Err(RdbError::unsupported(
                5,
                format!("RDB version {version} is newer than this reader (1..={MAX_RDB_VERSION})"),
            ));
        }
        Ok(Self {
            input,
            version,
            db: 0,
            pending: Pending::default(),
            state: State::Running,
            scratch: Vec::new(),
        })
    }

    /// The RDB version from the header; it is also the version in every payload.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Bytes of the file consumed so far (not counting read-ahead).
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.input.offset()
    }

    /// The inner reader and the bytes already read from it past what was
    /// consumed (after the checksum: whatever followed the RDB).
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self.input.buf[self.input.pos..self.input.end].to_vec();
        (self.input.inner, rest)
    }

    /// The next item; `Ok(None)` once the EOF opcode was read and the trailing
    /// 8-byte checksum matched (a stored checksum of 0 means the server had
    /// checksums off, and is accepted). After an error every call fails.
    pub fn next_item(&mut self) -> Result<Option<Item>, RdbError> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => {
                let at = self.input.offset();
                return Err(RdbError::new(
                    RdbErrorKind::Corrupt,
                    at,
                    format!("the RDB reader already failed at byte {at}; it cannot go on"),
                ));
            }
            State::Running => {}
        }
        let result = self.next_inner();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn read_count(&mut self) -> Result<u64, RdbError> {
        self.scratch.clear();
        self.input.cap_count(&mut self.scratch)
    }

    fn read_string(&mut self) -> Result<Vec<u8>, RdbError> {
        let at = self.input.offset();
        self.scratch.clear();
        self.input.cap_string(&mut self.scratch)?;
        Cursor::new(&self.scratch, at).string()
    }

    fn next_inner(&mut self) -> Result<Option<Item>, RdbError> {
        loop {
            self.input.ctx = Ctx::Record;
            let at = self.input.offset();
            let opcode = self.input.u8()?;
            match opcode {
                OP_EXPIRETIME => {
                    self.input.ctx = Ctx::Expire;
                    let secs = i32::from_le_bytes(self.input.array::<4>()?);
                    self.pending.expire_ms = Some(i64::from(secs) * 1000);
                }
                OP_EXPIRETIME_MS => {
                    self.input.ctx = Ctx::Expire;
                    // Little-endian on disk since RDB 9; older files hold the
                    // writer's native order, which is little-endian on the
                    // platforms Redis runs on in practice.
                    self.pending.expire_ms = Some(i64::from_le_bytes(self.input.array::<8>()?));
                }
                OP_FREQ => {
                    self.input.ctx = Ctx::KeyMeta;
                    self.pending.lfu_freq = Some(self.input.u8()?);
                }
                OP_IDLE => {
                    self.input.ctx = Ctx::KeyMeta;
                    self.pending.lru_idle_secs = Some(self.read_count()?);
                }
                OP_EOF => {
                    self.finish()?;
                    return Ok(None);
                }
                OP_SELECTDB => {
                    self.input.ctx = Ctx::SelectDb;
                    self.db = self.read_count()?;
                    return Ok(Some(Item::SelectDb(self.db)));
                }
                OP_RESIZEDB => {
                    // Hash table size hints: nothing to carry over.
                    self.input.ctx = Ctx::ResizeDb;
                    self.read_count()?;
                    self.read_count()?;
                }
                OP_SLOT_INFO => {
                    // Cluster slot sizing hint (7.4+): slot id, keys, expires.
                    self.input.ctx = Ctx::SlotInfo;
                    for _ in 0..3 {
                        self.read_count()?;
                    }
                }
                OP_AUX => {
                    self.input.ctx = Ctx::Aux;
                    let key = self.read_string()?;
                    let value = self.read_string()?;
                    return Ok(Some(Item::Aux { key, value }));
                }
                OP_MODULE_AUX => {
                    self.input.ctx = Ctx::ModuleAux;
                    let module_id = self.read_count()?;
                    let when_at = self.input.offset();
                    let when_opcode = self.read_count()?;
                    if when_opcode != MODULE_OPCODE_UINT {
                        return Err(RdbError::corrupt(
                            when_at,
                            format!(
                                "MODULE_AUX data of module {} has a bad 'when' field at byte \
                                 {when_at}",
                                module_type_name(module_id)
                            ),
                        ));
                    }
                    self.read_count()?; // when
                    self.scratch.clear();
                    self.input.cap_module_fields(&mut self.scratch, false)?;
                    return Ok(Some(Item::ModuleAux { module_id }));
                }
                OP_FUNCTION_PRE_GA => {
                    return Err(RdbError::unsupported(
                        at,
                        format!(
                            "function library at byte {at} is in the pre-release format of Redis \
                             7.0 release candidates, which Redis itself no longer loads"
                        ),
                    ));
                }
                OP_FUNCTION2 => {
                    self.input.ctx = Ctx::Function;
                    let mut payload = vec![OP_FUNCTION2];
                    self.input.cap_string(&mut payload)?;
                    push_footer(&mut payload, self.version);
                    return Ok(Some(Item::Function { payload }));
                }
                t if is_value_type(t) => return self.key(t, at).map(|e| Some(Item::Key(e))),
                TYPE_MODULE_PRE_GA => {
                    return Err(RdbError::unsupported(
                        at,
                        format!(
                            "module type 6 (pre-module-2 format) at byte {at} cannot be skipped: \
                             it carries no length information"
                        ),
                    ));
                }
                other => {
                    return Err(RdbError::corrupt(
                        at,
                        format!("unknown value type 0x{other:02x} at byte {at}"),
                    ));
                }
            }
        }
    }

    fn key(&mut self, type_id: u8, at: u64) -> Result<KeyEntry, RdbError> {
        self.input.ctx = Ctx::KeyName(type_id);
        let key = self.read_string()?;
        self.input.ctx = Ctx::Value(type_id);
        let mut payload = Vec::with_capacity(128);
        payload.push(type_id);
        let before = self.input.pause_crc();
        self.input.cap_value(type_id, at, &mut payload)?;
        // One pass over the value bytes serves the file checksum (paused
        // while they were captured) and the payload's, which starts with
        // the type byte.
        let (file_reg, payload_reg) =
            crc64_dual(before, Crc64::checksum(&[type_id]), &payload[1..]);
        self.input.resume_crc(file_reg);
        let version = self.version.to_le_bytes();
        let crc = crc64_resume(payload_reg, &version);
        payload.extend_from_slice(&version);
        payload.extend_from_slice(&crc.to_le_bytes());
        let pending = std::mem::take(&mut self.pending);
        Ok(KeyEntry {
            db: self.db,
            key,
            expire_ms: pending.expire_ms,
            type_id,
            payload,
            lru_idle_secs: pending.lru_idle_secs,
            lfu_freq: pending.lfu_freq,
        })
    }

    fn finish(&mut self) -> Result<(), RdbError> {
        self.input.ctx = Ctx::Checksum;
        // The EOF opcode is part of the checksummed bytes; the checksum is not.
        let computed = self.input.close_crc();
        // RDB versions before 5 end at the EOF opcode, without a checksum.
        if self.version >= 5 {
            let at = self.input.offset();
            let stored = u64::from_le_bytes(self.input.array::<8>()?);
            if stored != 0 && stored != computed {
                return Err(RdbError::new(
                    RdbErrorKind::ChecksumMismatch,
                    at,
                    format!(
                        "checksum mismatch: the file says {stored:#018x}, the bytes give \
                         {computed:#018x}"
                    ),
                ));
            }
        }
        self.state = State::Done;
        Ok(())
    }
}

/// Writes an RDB file from DUMP payloads, for a cold start from a `dump.rdb`.
///
/// The file's version should be at least the version in every payload (a
/// payload of a newer version may hold encodings an older loader rejects, so
/// [`Writer::key`] refuses it).
pub struct Writer<W: Write> {
    inner: W,
    crc: Crc64,
    version: u16,
}

impl<W: Write> fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("version", &self.version)
            .field("crc", &self.crc)
            .finish_non_exhaustive()
    }
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl<W: Write> Writer<W> {
    /// Writes the header for RDB `version` (5..=[`MAX_RDB_VERSION`]: 5 is the
    /// first with a checksum) and a `backplan-ver` AUX field naming the writer.
    pub fn new(inner: W, version: u16) -> io::Result<Self> {
        if !(5..=MAX_RDB_VERSION).contains(&version) {
            return Err(invalid_input(format!(
                "cannot write RDB version {version}: this writer supports 5..={MAX_RDB_VERSION}"
            )));
        }
        let mut w = Self {
            inner,
            crc: Crc64::new(),
            version,
        };
        w.put(format!("REDIS{version:04}").as_bytes())?;
        w.aux(b"backplan-ver", env!("CARGO_PKG_VERSION").as_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    fn put_len(&mut self, len: u64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(9);
        encode_len(len, &mut buf);
        self.put(&buf)
    }

    fn put_string(&mut self, s: &[u8]) -> io::Result<()> {
        self.put_len(s.len() as u64)?;
        self.put(s)
    }

    /// Writes an AUX field (loaders ignore names they do not know).
    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.put(&[OP_AUX])?;
        self.put_string(key)?;
        self.put_string(value)
    }

    /// Starts the keys of database `db`.
    pub fn select_db(&mut self, db: u64) -> io::Result<()> {
        self.put(&[OP_SELECTDB])?;
        self.put_len(db)
    }

    /// Checks the payload, then writes EXPIRETIME_MS (if any), the type byte,
    /// the key as an RDB string, and the value bytes (the payload without its
    /// 10-byte footer).
    pub fn key(&mut self, key: &[u8], expire_ms: Option<i64>, payload: &[u8]) -> io::Result<()> {
        let (type_id, version) = check_dump_payload(payload)?;
        if !is_value_type(type_id) {
            return Err(invalid_input(format!(
                "the payload for a key starts with 0x{type_id:02x}, which is not a value type \
                 this writer can store"
            )));
        }
        if version > self.version {
            return Err(invalid_input(format!(
                "a payload of RDB version {version} cannot go into an RDB file of version {}",
                self.version
            )));
        }
        if let Some(ms) = expire_ms {
            self.put(&[OP_EXPIRETIME_MS])?;
            self.put(&ms.to_le_bytes())?;
        }
        self.put(&[type_id])?;
        self.put_string(key)?;
        self.put(&payload[1..payload.len() - DUMP_FOOTER_LEN])
    }

    /// Writes the function libraries of a `FUNCTION DUMP` payload (or of an
    /// [`Item::Function`]).
    pub fn function(&mut self, payload: &[u8]) -> io::Result<()> {
        let (first, version) = check_dump_payload(payload)?;
        if first != OP_FUNCTION2 {
            return Err(invalid_input(format!(
                "a function payload starts with 0x{OP_FUNCTION2:02x}, this one with 0x{first:02x}"
            )));
        }
        if version > self.version {
            return Err(invalid_input(format!(
                "a function payload of RDB version {version} cannot go into an RDB file of \
                 version {}",
                self.version
            )));
        }
        // The payload body is a run of FUNCTION2 records, as in the file.
        self.put(&payload[..payload.len() - DUMP_FOOTER_LEN])
    }

    /// Writes the EOF opcode and the CRC-64, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[OP_EOF])?;
        let crc = self.crc.value();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Appends `len` in RDB length encoding (`rdbSaveLen`).
fn encode_len(len: u64, out: &mut Vec<u8>) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if let Ok(l32) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&l32.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
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

// --- Decoding of compact encodings, for split_commands -----------------------

type ElemFn<'f> = dyn FnMut(Vec<u8>) -> Result<(), RdbError> + 'f;

fn blob_err(at: u64, what: &str, detail: &str) -> RdbError {
    RdbError::corrupt(at, format!("{what} at byte {at} is corrupt: {detail}"))
}

/// Calls `f` with every element of a listpack (integers as decimal text).
fn listpack_each(lp: &[u8], at: u64, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    let bad = |d: &str| blob_err(at, "listpack", d);
    if lp.len() < 7 {
        return Err(bad("shorter than its header"));
    }
    let total = u32::from_le_bytes([lp[0], lp[1], lp[2], lp[3]]) as usize;
    if total != lp.len() {
        return Err(bad("its size header does not match its length"));
    }
    let get = |p: usize, n: usize| {
        lp.get(p..p + n)
            .ok_or_else(|| bad("entry runs past the end"))
    };
    let mut p = 6;
    loop {
        let b = *lp.get(p).ok_or_else(|| bad("no end marker"))?;
        if b == 0xff {
            break;
        }
        let (header, data_len, int): (usize, usize, Option<i64>) = if b & 0x80 == 0 {
            (1, 0, Some(i64::from(b & 0x7f)))
        } else if b & 0xc0 == 0x80 {
            (1, usize::from(b & 0x3f), None)
        } else if b & 0xe0 == 0xc0 {
            let raw = i64::from(b & 0x1f) << 8 | i64::from(get(p + 1, 1)?[0]);
            (
                2,
                0,
                Some(if raw >= 1 << 12 { raw - (1 << 13) } else { raw }),
            )
        } else if b & 0xf0 == 0xe0 {
            (
                2,
                usize::from(b & 0x0f) << 8 | usize::from(get(p + 1, 1)?[0]),
                None,
            )
        } else {
            match b {
                0xf0 => {
                    let l = get(p + 1, 4)?;
                    (
                        5,
                        u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize,
                        None,
                    )
                }
                0xf1 => {
                    let d = get(p + 1, 2)?;
                    (3, 0, Some(i64::from(i16::from_le_bytes([d[0], d[1]]))))
                }
                0xf2 => {
                    let d = get(p + 1, 3)?;
                    // Sign-extend 24 bits.
                    let v = i32::from_le_bytes([0, d[0], d[1], d[2]]) >> 8;
                    (4, 0, Some(i64::from(v)))
                }
                0xf3 => {
                    let d = get(p + 1, 4)?;
                    (
                        5,
                        0,
                        Some(i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
                    )
                }
                0xf4 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(get(p + 1, 8)?);
                    (9, 0, Some(i64::from_le_bytes(a)))
                }
                _ => return Err(bad(&format!("unknown entry encoding 0x{b:02x}"))),
            }
        };
        let elem = match int {
            Some(v) => v.to_string().into_bytes(),
            None => get(p + header, data_len)?.to_vec(),
        };
        let entry_len = header + data_len;
        p += entry_len + listpack_backlen_size(entry_len);
        f(elem)?;
    }
    if p + 1 != lp.len() {
        return Err(bad("bytes after the end marker"));
    }
    Ok(())
}

/// Size of the back-length that follows a listpack entry (`lpEncodeBacklen`).
fn listpack_backlen_size(entry_len: usize) -> usize {
    match entry_len {
        0..=127 => 1,
        128..16383 => 2,
        16383..2097151 => 3,
        2097151..268435455 => 4,
        _ => 5,
    }
}

/// Calls `f` with every element of a ziplist (integers as decimal text).
fn ziplist_each(zl: &[u8], at: u64, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    let bad = |d: &str| blob_err(at, "ziplist", d);
    if zl.len() < 11 {
        return Err(bad("shorter than its header"));
    }
    let total = u32::from_le_bytes([zl[0], zl[1], zl[2], zl[3]]) as usize;
    if total != zl.len() {
        return Err(bad("its size header does not match its length"));
    }
    let get = |p: usize, n: usize| {
        zl.get(p..p + n)
            .ok_or_else(|| bad("entry runs past the end"))
    };
    let mut p = 10;
    loop {
        let b = get(p, 1)?[0];
        if b == 0xff {
            break;
        }
        // Length of the previous entry: 1 byte, or 0xfe and 4 bytes.
        p += if b < 254 { 1 } else { 5 };
        let enc = get(p, 1)?[0];
        let elem = match enc >> 6 {
            0 => {
                let len = usize::from(enc & 0x3f);
                p += 1;
                get(p, len)?.to_vec()
            }
            1 => {
                let len = usize::from(enc & 0x3f) << 8 | usize::from(get(p + 1, 1)?[0]);
                p += 2;
                get(p, len)?.to_vec()
            }
            2 => {
                let l = get(p + 1, 4)?;
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                p += 5;
                get(p, len)?.to_vec()
            }
            _ => {
                p += 1;
                let v: i64 = match enc {
                    0xc0 => {
                        let d = get(p, 2)?;
                        i64::from(i16::from_le_bytes([d[0], d[1]]))
                    }
                    0xd0 => {
                        let d = get(p, 4)?;
                        i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))
                    }
                    0xe0 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(get(p, 8)?);
                        i64::from_le_bytes(a)
                    }
                    0xf0 => {
                        let d = get(p, 3)?;
                        i64::from(i32::from_le_bytes([0, d[0], d[1], d[2]]) >> 8)
                    }
                    0xfe => i64::from(get(p, 1)?[0] as i8),
                    0xf1..=0xfd => i64::from(enc & 0x0f) - 1,
                    _ => return Err(bad(&format!("unknown entry encoding 0x{enc:02x}"))),
                };
                let width = match enc {
                    0xc0 => 2,
                    0xd0 => 4,
                    0xe0 => 8,
                    0xf0 => 3,
                    0xfe => 1,
                    _ => 0,
                };
                let elem = v.to_string().into_bytes();
                p += width;
                f(elem)?;
                continue;
            }
        };
        p += elem.len();
        f(elem)?;
    }
    Ok(())
}

/// Calls `f` with every member of an intset, as decimal text.
fn intset_each(is: &[u8], at: u64, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    let bad = |d: &str| blob_err(at, "intset", d);
    if is.len() < 8 {
        return Err(bad("shorter than its header"));
    }
    let width = u32::from_le_bytes([is[0], is[1], is[2], is[3]]) as usize;
    let count = u32::from_le_bytes([is[4], is[5], is[6], is[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) || count.checked_mul(width) != Some(is.len() - 8) {
        return Err(bad("its header does not match its length"));
    }
    for chunk in is[8..].chunks_exact(width) {
        let v = match width {
            2 => i64::from(i16::from_le_bytes([chunk[0], chunk[1]])),
            4 => i64::from(i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
            _ => {
                let mut a = [0u8; 8];
                a.copy_from_slice(chunk);
                i64::from_le_bytes(a)
            }
        };
        f(v.to_string().into_bytes())?;
    }
    Ok(())
}

/// Calls `f` with every field and value of a zipmap (Redis 2.x hashes), in order.
fn zipmap_each(zm: &[u8], at: u64, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    let bad = |d: &str| blob_err(at, "zipmap", d);
    let get = |p: usize, n: usize| {
        zm.get(p..p + n)
            .ok_or_else(|| bad("entry runs past the end"))
    };
    // A length: one byte below 254, or 254 and a 4-byte (host order) length.
    let read_len = |p: &mut usize| -> Result<usize, RdbError> {
        let b = get(*p, 1)?[0];
        if b < 254 {
            *p += 1;
            Ok(usize::from(b))
        } else if b == 254 {
            let l = get(*p + 1, 4)?;
            *p += 5;
            Ok(u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
        } else {
            Err(bad("a length where the end marker should be"))
        }
    };
    let mut p = 1; // zmlen
    loop {
        if get(p, 1)?[0] == 0xff {
            break;
        }
        let klen = read_len(&mut p)?;
        let field = get(p, klen)?.to_vec();
        p += klen;
        let vlen = read_len(&mut p)?;
        let free = usize::from(get(p, 1)?[0]);
        p += 1;
        let value = get(p, vlen)?.to_vec();
        p += vlen + free;
        f(field)?;
        f(value)?;
    }
    Ok(())
}

/// Pairs up a flat run of elements (`field value field value ...`).
struct Pairs<'f> {
    first: Option<Vec<u8>>,
    f: &'f mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), RdbError>,
}

impl Pairs<'_> {
    fn push(&mut self, e: Vec<u8>) -> Result<(), RdbError> {
        match self.first.take() {
            None => {
                self.first = Some(e);
                Ok(())
            }
            Some(a) => (self.f)(a, e),
        }
    }

    fn finish(self, at: u64) -> Result<(), RdbError> {
        match self.first {
            None => Ok(()),
            Some(_) => Err(RdbError::corrupt(
                at,
                format!("the value at byte {at} has an odd number of elements"),
            )),
        }
    }
}

/// Text for a score from a binary double, that `ZADD` parses back exactly.
fn format_score(v: f64) -> Vec<u8> {
    // `{}` prints the shortest text that round-trips; very large or small
    // magnitudes are shorter in exponent form, which strtod reads too.
    let plain = format!("{v}");
    if plain.len() > 24 {
        format!("{v:e}").into_bytes()
    } else {
        plain.into_bytes()
    }
}

// Each argument also costs its RESP framing (`$<len>\r\n ... \r\n`).
const ARG_OVERHEAD: usize = 16;

/// Packs elements into commands of at most `max` bytes.
struct Batcher<'k> {
    key: &'k [u8],
    max: usize,
    cmd: &'static [u8],
    cur: Vec<Vec<u8>>,
    cur_size: usize,
    done: Vec<Vec<Vec<u8>>>,
}

impl<'k> Batcher<'k> {
    fn new(key: &'k [u8], max: usize) -> Self {
        Self {
            key,
            max,
            cmd: b"",
            cur: Vec::new(),
            cur_size: 0,
            done: Vec::new(),
        }
    }

    fn head_size(&self, cmd: &[u8]) -> usize {
        ARG_OVERHEAD + cmd.len() + ARG_OVERHEAD + self.key.len() + ARG_OVERHEAD
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            self.done.push(std::mem::take(&mut self.cur));
        }
    }

    /// Adds one group of arguments (a member, a score and member, a field and
    /// value), which always stays in one command.
    fn push(&mut self, cmd: &'static [u8], group: &[&[u8]]) -> Result<(), RdbError> {
        let size: usize = group.iter().map(|a| a.len() + ARG_OVERHEAD).sum();
        if self.head_size(cmd) + size > self.max {
            return Err(RdbError::unsupported(
                0,
                format!(
                    "an element of {size} bytes does not fit in a {} command of at most {} bytes",
                    String::from_utf8_lossy(cmd),
                    self.max
                ),
            ));
        }
        if !self.cur.is_empty() && (self.cmd != cmd || self.cur_size + size > self.max) {
            self.flush();
        }
        if self.cur.is_empty() {
            self.cmd = cmd;
            self.cur = vec![cmd.to_vec(), self.key.to_vec()];
            self.cur_size = self.head_size(cmd);
        }
        self.cur.extend(group.iter().map(|a| a.to_vec()));
        self.cur_size += size;
        Ok(())
    }

    fn whole(&mut self, command: Vec<Vec<u8>>) {
        self.flush();
        self.done.push(command);
    }

    fn finish(mut self) -> Vec<Vec<Vec<u8>>> {
        self.flush();
        self.done
    }
}

/// Decodes a key's value into ordinary commands for a key too large for one
/// `RESTORE` (over `proto-max-bulk-len`): `DEL` then `RPUSH`/`SADD`/`ZADD`/`HSET`
/// batches (or `SET` then `APPEND` chunks for a string), each at most
/// `max_bytes` including RESP framing, then `HPEXPIREAT` for hash fields with a
/// TTL and `PEXPIREAT` if the key expires. The `DEL` makes the sequence
/// replace the key as `RESTORE ... REPLACE` does. Streams and module values
/// have no such command form and give an error.
pub fn split_commands(entry: &KeyEntry, max_bytes: usize) -> Result<Vec<Vec<Vec<u8>>>, RdbError> {
    let (type_id, _) = check_dump_payload(&entry.payload)?;
    let body = &entry.payload[1..entry.payload.len() - DUMP_FOOTER_LEN];
    let mut c = Cursor::new(body, 1);
    let key = entry.key.as_slice();
    let mut b = Batcher::new(key, max_bytes);
    let del = || vec![b"DEL".to_vec(), key.to_vec()];
    // Hash fields with a TTL, by expiry time.
    let mut field_ttls: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();

    match type_name(type_id) {
        "string" => {
            let value = c.string()?;
            split_string(&mut b, &value)?;
        }
        "list" => {
            b.whole(del());
            let mut push = |e: Vec<u8>| b.push(b"RPUSH", &[&e]);
            decode_list(type_id, &mut c, &mut push)?;
        }
        "set" => {
            b.whole(del());
            let mut push = |e: Vec<u8>| b.push(b"SADD", &[&e]);
            decode_set(type_id, &mut c, &mut push)?;
        }
        "zset" => {
            b.whole(del());
            let mut push = |member: Vec<u8>, score: Vec<u8>| b.push(b"ZADD", &[&score, &member]);
            decode_zset(type_id, &mut c, &mut push)?;
        }
        "hash" => {
            b.whole(del());
            let mut push = |field: Vec<u8>, value: Vec<u8>, ttl: Option<i64>| {
                b.push(b"HSET", &[&field, &value])?;
                if let Some(ms) = ttl {
                    field_ttls.entry(ms).or_default().push(field);
                }
                Ok(())
            };
            decode_hash(type_id, &mut c, &mut push)?;
        }
        family => {
            return Err(RdbError::unsupported(
                0,
                format!(
                    "cannot split a {family} value (RDB type {type_id}) into commands: only \
                     strings, lists, sets, sorted sets and hashes can be"
                ),
            ));
        }
    }
    c.finish()?;

    for (ms, fields) in field_ttls {
        push_field_expiries(&mut b, ms, &fields)?;
    }
    if let Some(ms) = entry.expire_ms {
        b.whole(vec![
            b"PEXPIREAT".to_vec(),
            key.to_vec(),
            ms.to_string().into_bytes(),
        ]);
    }
    Ok(b.finish())
}

fn split_string(b: &mut Batcher<'_>, value: &[u8]) -> Result<(), RdbError> {
    let head = b.head_size(b"APPEND") + ARG_OVERHEAD;
    let chunk = b.max.saturating_sub(head);
    if chunk == 0 {
        return Err(RdbError::unsupported(
            0,
            format!("max_bytes {} leaves no room for the value of a SET", b.max),
        ));
    }
    let mut chunks = value.chunks(chunk);
    let first = chunks.next().unwrap_or_default();
    b.whole(vec![b"SET".to_vec(), b.key.to_vec(), first.to_vec()]);
    for rest in chunks {
        b.whole(vec![b"APPEND".to_vec(), b.key.to_vec(), rest.to_vec()]);
    }
    Ok(())
}

fn push_field_expiries(b: &mut Batcher<'_>, ms: i64, fields: &[Vec<u8>]) -> Result<(), RdbError> {
    let ts = ms.to_string().into_bytes();
    let head = b.head_size(b"HPEXPIREAT") + 3 * ARG_OVERHEAD + ts.len() + 6 + 20;
    let mut start = 0;
    while start < fields.len() {
        let mut size = head;
        let mut end = start;
        while end < fields.len()
            && (end == start || size + fields[end].len() + ARG_OVERHEAD <= b.max)
        {
            size += fields[end].len() + ARG_OVERHEAD;
            end += 1;
        }
        if size > b.max {
            return Err(RdbError::unsupported(
                0,
                format!("a hash field TTL command does not fit in {} bytes", b.max),
            ));
        }
        let mut cmd = vec![
            b"HPEXPIREAT".to_vec(),
            b.key.to_vec(),
            ts.clone(),
            b"FIELDS".to_vec(),
            (end - start).to_string().into_bytes(),
        ];
        cmd.extend(fields[start..end].iter().cloned());
        b.whole(cmd);
        start = end;
    }
    Ok(())
}

fn decode_list(type_id: u8, c: &mut Cursor<'_>, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    match type_id {
        TYPE_LIST => {
            for _ in 0..c.count()? {
                f(c.string()?)?;
            }
        }
        TYPE_LIST_ZIPLIST => {
            let at = c.at();
            ziplist_each(&c.string()?, at, f)?;
        }
        TYPE_LIST_QUICKLIST => {
            for _ in 0..c.count()? {
                let at = c.at();
                ziplist_each(&c.string()?, at, f)?;
            }
        }
        _ => {
            // TYPE_LIST_QUICKLIST_2
            for _ in 0..c.count()? {
                let container = c.count()?;
                let at = c.at();
                let node = c.string()?;
                match container {
                    QUICKLIST_PLAIN => f(node)?,
                    QUICKLIST_PACKED => listpack_each(&node, at, f)?,
                    _ => return Err(c.err(&format!("unknown quicklist container {container}"))),
                }
            }
        }
    }
    Ok(())
}

fn decode_set(type_id: u8, c: &mut Cursor<'_>, f: &mut ElemFn<'_>) -> Result<(), RdbError> {
    let at = c.at();
    match type_id {
        TYPE_SET => {
            for _ in 0..c.count()? {
                f(c.string()?)?;
            }
            Ok(())
        }
        TYPE_SET_INTSET => intset_each(&c.string()?, at, f),
        _ => listpack_each(&c.string()?, at, f), // TYPE_SET_LISTPACK
    }
}

fn decode_zset(
    type_id: u8,
    c: &mut Cursor<'_>,
    f: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), RdbError>,
) -> Result<(), RdbError> {
    let at = c.at();
    match type_id {
        TYPE_ZSET => {
            for _ in 0..c.count()? {
                let member = c.string()?;
                let len = c.u8()?;
                let score = match len {
                    253 => return Err(c.err("a NaN score")),
                    254 => b"inf".to_vec(),
                    255 => b"-inf".to_vec(),
                    n => c.bytes(u64::from(n))?.to_vec(),
                };
                f(member, score)?;
            }
            Ok(())
        }
        TYPE_ZSET_2 => {
            for _ in 0..c.count()? {
                let member = c.string()?;
                let score = f64::from_le_bytes(c.array()?);
                if score.is_nan() {
                    return Err(c.err("a NaN score"));
                }
                f(member, format_score(score))?;
            }
            Ok(())
        }
        _ => {
            // ZSET_ZIPLIST / ZSET_LISTPACK: member, score, member, score, ...
            let blob = c.string()?;
            let mut pairs = Pairs { first: None, f };
            let mut push = |e: Vec<u8>| pairs.push(e);
            if type_id == TYPE_ZSET_ZIPLIST {
                ziplist_each(&blob, at, &mut push)?;
            } else {
                listpack_each(&blob, at, &mut push)?;
            }
            pairs.finish(at)
        }
    }
}

type HashFn<'f> = dyn FnMut(Vec<u8>, Vec<u8>, Option<i64>) -> Result<(), RdbError> + 'f;

fn decode_hash(type_id: u8, c: &mut Cursor<'_>, f: &mut HashFn<'_>) -> Result<(), RdbError> {
    let at = c.at();
    match type_id {
        TYPE_HASH => {
            for _ in 0..c.count()? {
                let field = c.string()?;
                let value = c.string()?;
                f(field, value, None)?;
            }
            Ok(())
        }
        TYPE_HASH_METADATA_PRE_GA | TYPE_HASH_METADATA => {
            // GA stores TTLs relative to the minimum (+1, 0 meaning none);
            // the release candidates stored them absolute.
            let min = if type_id == TYPE_HASH_METADATA {
                i64::from_le_bytes(c.array()?)
            } else {
                1
            };
            for _ in 0..c.count()? {
                let ttl = c.count()?;
                let field = c.string()?;
                let value = c.string()?;
                let expire = match ttl {
                    0 => None,
                    t => Some(
                        i64::try_from(t)
                            .ok()
                            .and_then(|t| t.checked_add(min - 1))
                            .ok_or_else(|| c.err("a hash field TTL out of range"))?,
                    ),
                };
                f(field, value, expire)?;
            }
            Ok(())
        }
        TYPE_HASH_LISTPACK_EX_PRE_GA | TYPE_HASH_LISTPACK_EX => {
            if type_id == TYPE_HASH_LISTPACK_EX {
                c.array::<8>()?; // minimum expiry: implied by the fields
            }
            let at = c.at();
            let blob = c.string()?;
            // Triples: field, value, absolute expiry in ms (0 = none).
            let mut pending: Vec<Vec<u8>> = Vec::with_capacity(3);
            let mut push = |e: Vec<u8>| {
                pending.push(e);
                if pending.len() == 3 {
                    let ttl = pending.pop().unwrap_or_default();
                    let value = pending.pop().unwrap_or_default();
                    let field = pending.pop().unwrap_or_default();
                    let ms: i64 = std::str::from_utf8(&ttl)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| blob_err(at, "listpack", "a non-integer field TTL"))?;
                    f(field, value, (ms != 0).then_some(ms))?;
                }
                Ok(())
            };
            listpack_each(&blob, at, &mut push)?;
            if pending.is_empty() {
                Ok(())
            } else {
                Err(blob_err(
                    at,
                    "listpack",
                    "not a whole number of field/value/TTL triples",
                ))
            }
        }
        _ => {
            // HASH_ZIPMAP / HASH_ZIPLIST / HASH_LISTPACK: field, value, ...
            let blob = c.string()?;
            let mut g = |field: Vec<u8>, value: Vec<u8>| f(field, value, None);
            let mut pairs = Pairs {
                first: None,
                f: &mut g,
            };
            let mut push = |e: Vec<u8>| pairs.push(e);
            match type_id {
                TYPE_HASH_ZIPMAP => zipmap_each(&blob, at, &mut push)?,
                TYPE_HASH_ZIPLIST => ziplist_each(&blob, at, &mut push)?,
                _ => listpack_each(&blob, at, &mut push)?,
            }
            pairs.finish(at)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // --- Builders for hand-made RDB bytes (independent of the code under test
    // where it matters: lengths, listpacks and ziplists are encoded here from
    // the format description, not with the module's own helpers).

    fn len(n: u64) -> Vec<u8> {
        if n < 64 {
            vec![n as u8]
        } else if n < 16384 {
            vec![0x40 | (n >> 8) as u8, n as u8]
        } else if n <= u64::from(u32::MAX) {
            let mut v = vec![0x80];
            v.extend_from_slice(&(n as u32).to_be_bytes());
            v
        } else {
            let mut v = vec![0x81];
            v.extend_from_slice(&n.to_be_bytes());
            v
        }
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = len(b.len() as u64);
        v.extend_from_slice(b);
        v
    }

    #[derive(Clone, Copy)]
    enum E<'a> {
        S(&'a [u8]),
        I(i64),
    }

    fn lp_backlen(l: usize) -> Vec<u8> {
        if l <= 127 {
            vec![l as u8]
        } else if l < 16383 {
            vec![(l >> 7) as u8, (l & 127) as u8 | 128]
        } else {
            vec![
                (l >> 14) as u8,
                ((l >> 7) & 127) as u8 | 128,
                (l & 127) as u8 | 128,
            ]
        }
    }

    fn lp(entries: &[E]) -> Vec<u8> {
        let mut body = Vec::new();
        for e in entries {
            let enc = match *e {
                E::S(s) if s.len() < 64 => [&[0x80 | s.len() as u8][..], s].concat(),
                E::S(s) if s.len() < 4096 => {
                    [&[0xe0 | (s.len() >> 8) as u8, s.len() as u8][..], s].concat()
                }
                E::S(s) => [&[0xf0][..], &(s.len() as u32).to_le_bytes(), s].concat(),
                E::I(v) if (0..=127).contains(&v) => vec![v as u8],
                E::I(v) if (-4096..=4095).contains(&v) => {
                    let u = if v < 0 { (1 << 13) + v } else { v };
                    vec![0xc0 | (u >> 8) as u8, u as u8]
                }
                E::I(v) if i16::try_from(v).is_ok() => {
                    [&[0xf1][..], &(v as i16).to_le_bytes()].concat()
                }
                E::I(v) if (-(1 << 23)..(1 << 23)).contains(&v) => {
                    [&[0xf2][..], &(v as i32).to_le_bytes()[..3]].concat()
                }
                E::I(v) if i32::try_from(v).is_ok() => {
                    [&[0xf3][..], &(v as i32).to_le_bytes()].concat()
                }
                E::I(v) => [&[0xf4][..], &v.to_le_bytes()].concat(),
            };
            body.extend_from_slice(&enc);
            body.extend(lp_backlen(enc.len()));
        }
        let total = (6 + body.len() + 1) as u32;
        [
            &total.to_le_bytes()[..],
            &(entries.len() as u16).to_le_bytes(),
            &body,
            &[0xff],
        ]
        .concat()
    }

    fn zl(entries: &[E]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prevlen = 0usize;
        let mut tail = 10usize;
        for e in entries {
            let mut ent = if prevlen < 254 {
                vec![prevlen as u8]
            } else {
                [&[0xfe][..], &(prevlen as u32).to_le_bytes()].concat()
            };
            match *e {
                E::S(s) => {
                    let l = s.len();
                    if l < 64 {
                        ent.push(l as u8);
                    } else if l < 16384 {
                        ent.extend([0x40 | (l >> 8) as u8, l as u8]);
                    } else {
                        ent.push(0x80);
                        ent.extend((l as u32).to_be_bytes());
                    }
                    ent.extend_from_slice(s);
                }
                E::I(v) if (0..=12).contains(&v) => ent.push(0xf1 + v as u8),
                E::I(v) if i8::try_from(v).is_ok() => ent.extend([0xfe, v as u8]),
                E::I(v) if i16::try_from(v).is_ok() => {
                    ent.push(0xc0);
                    ent.extend((v as i16).to_le_bytes());
                }
                E::I(v) if (-(1 << 23)..(1 << 23)).contains(&v) => {
                    ent.push(0xf0);
                    ent.extend(&(v as i32).to_le_bytes()[..3]);
                }
                E::I(v) if i32::try_from(v).is_ok() => {
                    ent.push(0xd0);
                    ent.extend((v as i32).to_le_bytes());
                }
                E::I(v) => {
                    ent.push(0xe0);
                    ent.extend(v.to_le_bytes());
                }
            }
            tail = 10 + body.len();
            prevlen = ent.len();
            body.extend(ent);
        }
        [
            &((10 + body.len() + 1) as u32).to_le_bytes()[..],
            &(tail as u32).to_le_bytes(),
            &(entries.len() as u16).to_le_bytes(),
            &body,
            &[0xff],
        ]
        .concat()
    }

    fn intset(width: u32, vals: &[i64]) -> Vec<u8> {
        let mut v = [width.to_le_bytes(), (vals.len() as u32).to_le_bytes()].concat();
        for x in vals {
            v.extend_from_slice(&x.to_le_bytes()[..width as usize]);
        }
        v
    }

    fn zipmap(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut v = vec![pairs.len() as u8];
        for (k, val) in pairs {
            v.push(k.len() as u8);
            v.extend_from_slice(k);
            v.push(val.len() as u8);
            v.push(2); // two free bytes after the value
            v.extend_from_slice(val);
            v.extend([0, 0]);
        }
        v.push(0xff);
        v
    }

    fn header(version: u16) -> Vec<u8> {
        format!("REDIS{version:04}").into_bytes()
    }

    /// A whole file: header, body, EOF, correct checksum.
    fn rdb(version: u16, body: &[u8]) -> Vec<u8> {
        let mut f = [header(version), body.to_vec(), vec![OP_EOF]].concat();
        let crc = Crc64::checksum(&f);
        f.extend(crc.to_le_bytes());
        f
    }

    fn key_record(t: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
        [&[t][..], &s(key), value].concat()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Item>, RdbError> {
        let mut r = Reader::new(bytes)?;
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        // Once done, it stays done.
        assert!(r.next_item()?.is_none());
        assert_eq!(r.bytes_read(), bytes.len() as u64);
        Ok(items)
    }

    fn keys(items: &[Item]) -> Vec<&KeyEntry> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Key(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    /// The value bytes of a payload (without type byte and footer).
    fn body(payload: &[u8]) -> &[u8] {
        &payload[1..payload.len() - DUMP_FOOTER_LEN]
    }

    /// A reader that hands out at most `n` bytes per read, to hit every
    /// buffer boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        n: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let k = self.n.min(buf.len()).min(self.data.len());
            buf[..k].copy_from_slice(&self.data[..k]);
            self.data = &self.data[k..];
            Ok(k)
        }
    }

    // Real payloads from Redis 7.0.15 (`SET foo bar`, `RPUSH mylist a b 12`, `DUMP`).
    const REAL_DUMP_STRING: &[u8] = b"\x00\x03bar\x0a\x00\xe6\xbe\x49\x60\xee\x66\xfd\x17";
    const REAL_DUMP_LIST: &[u8] = b"\x12\x01\x02\x0f\x0f\x00\x00\x00\x03\x00\x81a\x02\x81b\x02\x0c\x01\xff\x0a\x00\x1d\xc9\x37\x3a\xed\xb7\x30\x40";

    /// Value bytes of one key of every type this test suite builds by hand.
    fn sample_values() -> Vec<(u8, &'static str, Vec<u8>)> {
        let stream_v3 = [
            len(1),
            s(&[0u8; 16]),
            s(&lp(&[
                E::I(1),
                E::I(0),
                E::I(1),
                E::S(b"f"),
                E::I(0),
                E::I(0),
                E::I(1),
                E::S(b"v"),
                E::I(3),
            ])),
            len(1),    // length
            len(1000), // last id ms
            len(0),    // last id seq
            len(1000), // first id ms
            len(0),    // first id seq
            len(0),    // max deleted ms
            len(0),    // max deleted seq
            len(1),    // entries added
            len(1),    // groups
            s(b"grp"),
            len(1000),
            len(0),
            len(1), // entries read
            len(1), // PEL
            [&1000u64.to_be_bytes()[..], &0u64.to_be_bytes()].concat(),
            1_700_000_000_000i64.to_le_bytes().to_vec(),
            len(2), // delivery count
            len(1), // consumers
            s(b"alice"),
            1_700_000_000_001i64.to_le_bytes().to_vec(),
            1_700_000_000_002i64.to_le_bytes().to_vec(), // active time (v3)
            len(1),
            [&1000u64.to_be_bytes()[..], &0u64.to_be_bytes()].concat(),
        ]
        .concat();
        // A v2 stream (Redis 7.0): no consumer active time.
        let stream_v2 = [
            len(0),
            len(0),
            len(5),
            len(3),
            len(0),
            len(0),
            len(5),
            len(3),
            len(7),
            len(1),
            s(b"g"),
            len(5),
            len(3),
            len(7),
            len(1),
            [&5u64.to_be_bytes()[..], &3u64.to_be_bytes()].concat(),
            7i64.to_le_bytes().to_vec(),
            len(1),
            len(1),
            s(b"c"),
            8i64.to_le_bytes().to_vec(),
            len(1),
            [&5u64.to_be_bytes()[..], &3u64.to_be_bytes()].concat(),
        ]
        .concat();
        // A v1 stream (Redis 5/6): no first/max-deleted/entries-added, no entries-read.
        let stream_v1 = [
            len(0),
            len(0),
            len(9),
            len(9),
            len(1),
            s(b"g"),
            len(9),
            len(9),
            len(0),
            len(1),
            s(b"c"),
            9i64.to_le_bytes().to_vec(),
            len(0),
        ]
        .concat();
        let module_2 = [
            len(0x1234_5678_9abc_d001), // module id (64-bit length)
            len(MODULE_OPCODE_SINT),
            len(5),
            len(MODULE_OPCODE_UINT),
            len(70000),
            len(MODULE_OPCODE_FLOAT),
            1.5f32.to_le_bytes().to_vec(),
            len(MODULE_OPCODE_DOUBLE),
            2.5f64.to_le_bytes().to_vec(),
            len(MODULE_OPCODE_STRING),
            s(b"module string"),
            len(MODULE_OPCODE_EOF),
        ]
        .concat();
        let big = vec![b'x'; 300];
        vec![
            (TYPE_STRING, "string raw", s(b"hello")),
            (TYPE_STRING, "string int8", vec![0xc0, 0x85]),
            (TYPE_STRING, "string int16", vec![0xc1, 0x39, 0x30]),
            (
                TYPE_STRING,
                "string int32",
                vec![0xc2, 0x15, 0xcd, 0x5b, 0x07],
            ),
            // "a" x 30, compressed by hand: one literal, one back-reference.
            (
                TYPE_STRING,
                "string lzf",
                [
                    &[0xc3][..],
                    &len(5),
                    &len(30),
                    &[0x00, b'a', 0xe0, 20, 0x00],
                ]
                .concat(),
            ),
            (
                TYPE_STRING,
                "string 64-bit length",
                [&[0x81][..], &3u64.to_be_bytes(), b"abc"].concat(),
            ),
            (TYPE_STRING, "string 14-bit length", s(&big)),
            (TYPE_LIST, "list", [len(2), s(b"a"), vec![0xc0, 7]].concat()),
            (TYPE_SET, "set", [len(2), s(b"a"), s(b"b")].concat()),
            (
                TYPE_ZSET,
                "zset",
                [
                    len(3),
                    s(b"a"),
                    vec![3],
                    b"1.5".to_vec(),
                    s(b"b"),
                    vec![254],
                    s(b"c"),
                    vec![255],
                ]
                .concat(),
            ),
            (TYPE_HASH, "hash", [len(1), s(b"f"), s(b"v")].concat()),
            (
                TYPE_ZSET_2,
                "zset_2",
                [len(1), s(b"m"), 2.25f64.to_le_bytes().to_vec()].concat(),
            ),
            (TYPE_MODULE_2, "module_2", module_2),
            (
                TYPE_HASH_ZIPMAP,
                "zipmap",
                s(&zipmap(&[(b"f", b"v"), (b"g", b"w")])),
            ),
            (
                TYPE_LIST_ZIPLIST,
                "list ziplist",
                s(&zl(&[E::S(b"a"), E::I(5), E::I(-300)])),
            ),
            (TYPE_SET_INTSET, "intset", s(&intset(2, &[1, 2, -3]))),
            (
                TYPE_ZSET_ZIPLIST,
                "zset ziplist",
                s(&zl(&[E::S(b"m"), E::I(3)])),
            ),
            (
                TYPE_HASH_ZIPLIST,
                "hash ziplist",
                s(&zl(&[E::S(b"f"), E::S(b"v")])),
            ),
            (
                TYPE_LIST_QUICKLIST,
                "quicklist",
                [len(2), s(&zl(&[E::S(b"a")])), s(&zl(&[E::I(100000)]))].concat(),
            ),
            (TYPE_STREAM_LISTPACKS, "stream v1", stream_v1),
            (
                TYPE_HASH_LISTPACK,
                "hash listpack",
                s(&lp(&[E::S(b"f"), E::S(b"v"), E::S(b"g"), E::I(12)])),
            ),
            (
                TYPE_ZSET_LISTPACK,
                "zset listpack",
                s(&lp(&[E::S(b"m"), E::S(b"1.5"), E::S(b"n"), E::I(-2)])),
            ),
            (
                TYPE_LIST_QUICKLIST_2,
                "quicklist 2",
                [
                    len(2),
                    len(QUICKLIST_PACKED),
                    s(&lp(&[E::S(b"a"), E::I(-5000), E::I(1 << 40)])),
                    len(QUICKLIST_PLAIN),
                    s(&big),
                ]
                .concat(),
            ),
            (TYPE_STREAM_LISTPACKS_2, "stream v2", stream_v2),
            (
                TYPE_SET_LISTPACK,
                "set listpack",
                s(&lp(&[E::S(b"a"), E::I(70000), E::S(&big)])),
            ),
            (TYPE_STREAM_LISTPACKS_3, "stream v3", stream_v3),
            (
                TYPE_HASH_METADATA_PRE_GA,
                "hash metadata pre-GA",
                [
                    len(2),
                    len(0),
                    s(b"f"),
                    s(b"v"),
                    len(1_800_000_000_000),
                    s(b"g"),
                    s(b"w"),
                ]
                .concat(),
            ),
            (
                TYPE_HASH_LISTPACK_EX_PRE_GA,
                "hash listpack-ex pre-GA",
                s(&lp(&[
                    E::S(b"f"),
                    E::S(b"v"),
                    E::I(0),
                    E::S(b"g"),
                    E::S(b"w"),
                    E::I(1_800_000_000_000),
                ])),
            ),
            (
                TYPE_HASH_METADATA,
                "hash metadata",
                [
                    1_800_000_000_000i64.to_le_bytes().to_vec(),
                    len(2),
                    len(0),
                    s(b"f"),
                    s(b"v"),
                    len(1),
                    s(b"g"),
                    s(b"w"),
                ]
                .concat(),
            ),
            (
                TYPE_HASH_LISTPACK_EX,
                "hash listpack-ex",
                [
                    1_800_000_000_000i64.to_le_bytes().to_vec(),
                    s(&lp(&[
                        E::S(b"f"),
                        E::S(b"v"),
                        E::I(0),
                        E::S(b"g"),
                        E::S(b"w"),
                        E::I(1_800_000_000_000),
                    ])),
                ]
                .concat(),
            ),
        ]
    }

    /// A v12 file with every sample value, each followed by a sentinel key
    /// (a wrong skip would misread the sentinel), plus the other record kinds.
    /// (type, key, value bytes) of each sample key.
    type Expected = Vec<(u8, String, Vec<u8>)>;

    fn sample_file() -> (Vec<u8>, Expected) {
        let mut body = Vec::new();
        body.extend([&[OP_AUX][..], &s(b"redis-ver"), &s(b"7.4.0")].concat());
        body.extend([&[OP_AUX][..], &s(b"redis-bits"), &[0xc0, 64]].concat());
        body.extend(
            [
                &[OP_FUNCTION2][..],
                &s(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"),
            ]
            .concat(),
        );
        body.extend(
            [
                &[OP_MODULE_AUX][..],
                &len(0xabc),
                &len(MODULE_OPCODE_UINT),
                &len(2),
                &len(MODULE_OPCODE_STRING),
                &s(b"aux"),
                &len(0),
            ]
            .concat(),
        );
        body.extend([&[OP_SELECTDB][..], &len(0)].concat());
        body.extend([&[OP_RESIZEDB][..], &len(100), &len(3)].concat());
        body.extend([&[OP_SLOT_INFO][..], &len(12), &len(50), &len(1)].concat());
        let mut expected = Vec::new();
        for (i, (t, name, value)) in sample_values().into_iter().enumerate() {
            let key = format!("k{i}:{name}");
            body.extend(key_record(t, key.as_bytes(), &value));
            body.extend(key_record(
                TYPE_STRING,
                format!("sentinel{i}").as_bytes(),
                &s(b"ok"),
            ));
            expected.push((t, key, value));
        }
        body.extend([&[OP_SELECTDB][..], &len(5)].concat());
        body.extend([&[OP_EXPIRETIME_MS][..], &1_700_000_000_123i64.to_le_bytes()].concat());
        body.extend([&[OP_FREQ][..], &[7]].concat());
        body.extend([&[OP_IDLE][..], &len(300)].concat());
        body.extend(key_record(TYPE_STRING, b"ttl-ms", &s(b"x")));
        body.extend([&[OP_EXPIRETIME][..], &1_700_000_000i32.to_le_bytes()].concat());
        body.extend(key_record(TYPE_STRING, b"ttl-s", &s(b"y")));
        (rdb(12, &body), expected)
    }

    #[test]
    fn crc64_matches_the_redis_check_value() {
        assert_eq!(Crc64::checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(Crc64::new().value(), 0);
    }

    #[test]
    fn crc64_dual_and_resume() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for n in (0..40).chain([1000, 65_536, 99_999, 100_000]) {
            let bytes = &data[..n];
            let (x, y) = crc64_dual(0, Crc64::checksum(b"ab"), bytes);
            assert_eq!(x, Crc64::checksum(bytes));
            assert_eq!(y, Crc64::checksum(&[b"ab", bytes].concat()));
            let (a, b) = data.split_at(n);
            assert_eq!(crc64_resume(Crc64::checksum(a), b), Crc64::checksum(&data));
        }
    }

    #[test]
    fn every_value_type_is_captured_byte_for_byte() {
        let (file, expected) = sample_file();
        for chunk in [usize::MAX, 1, 7, 4096] {
            let items = if chunk == usize::MAX {
                read_all(&file).unwrap()
            } else {
                let mut r = Reader::new(Trickle {
                    data: &file,
                    n: chunk,
                })
                .unwrap();
                let mut items = Vec::new();
                while let Some(i) = r.next_item().unwrap() {
                    items.push(i);
                }
                items
            };
            let ks = keys(&items);
            assert_eq!(ks.len(), expected.len() * 2 + 2);
            for (i, (t, name, value)) in expected.iter().enumerate() {
                let k = ks[2 * i];
                assert_eq!(k.key, name.as_bytes(), "key {i}");
                assert_eq!(k.type_id, *t, "{name}");
                assert_eq!(k.db, 0);
                assert_eq!(k.payload[0], *t);
                assert_eq!(body(&k.payload), &value[..], "{name}");
                assert_eq!(check_dump_payload(&k.payload).unwrap(), (*t, 12), "{name}");
                let sentinel = ks[2 * i + 1];
                assert_eq!(
                    sentinel.key,
                    format!("sentinel{i}").as_bytes(),
                    "after {name}"
                );
                assert_eq!(body(&sentinel.payload), &s(b"ok")[..]);
            }
        }
    }

    #[test]
    fn records_other_than_keys() {
        let (file, _) = sample_file();
        let items = read_all(&file).unwrap();
        assert_eq!(
            items[0],
            Item::Aux {
                key: b"redis-ver".to_vec(),
                value: b"7.4.0".to_vec()
            }
        );
        // An int-encoded AUX value is decoded to its text.
        assert_eq!(
            items[1],
            Item::Aux {
                key: b"redis-bits".to_vec(),
                value: b"64".to_vec()
            }
        );
        let Item::Function { payload } = &items[2] else {
            panic!("expected a function, got {:?}", items[2]);
        };
        assert_eq!(check_dump_payload(payload).unwrap(), (OP_FUNCTION2, 12));
        assert_eq!(
            &payload[..payload.len() - DUMP_FOOTER_LEN],
            &[
                &[OP_FUNCTION2][..],
                &s(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)")
            ]
            .concat()[..]
        );
        assert_eq!(items[3], Item::ModuleAux { module_id: 0xabc });
        assert_eq!(items[4], Item::SelectDb(0));
        assert!(items.contains(&Item::SelectDb(5)));
        let ks = keys(&items);
        let ttl_ms = ks[ks.len() - 2];
        assert_eq!(ttl_ms.key, b"ttl-ms");
        assert_eq!(ttl_ms.db, 5);
        assert_eq!(ttl_ms.expire_ms, Some(1_700_000_000_123));
        assert_eq!(ttl_ms.lfu_freq, Some(7));
        assert_eq!(ttl_ms.lru_idle_secs, Some(300));
        let ttl_s = ks[ks.len() - 1];
        assert_eq!(ttl_s.key, b"ttl-s");
        assert_eq!(ttl_s.expire_ms, Some(1_700_000_000_000));
        // Attributes belong to one key only.
        assert_eq!(ttl_s.lfu_freq, None);
        assert_eq!(ttl_s.lru_idle_secs, None);
        assert!(ks[..ks.len() - 2].iter().all(|k| k.expire_ms.is_none()));
    }

    #[test]
    fn length_encodings_and_encoded_keys() {
        let long14 = vec![b'k'; 100];
        let long32 = vec![b'K'; 20000];
        let mut body = Vec::new();
        for db in [5u64, 300, 70000, 1 << 33] {
            body.extend([&[OP_SELECTDB][..], &len(db)].concat());
        }
        body.extend(key_record(TYPE_STRING, &long14, &s(b"a")));
        body.extend(key_record(TYPE_STRING, &long32, &s(b"b")));
        // Keys stored as int8, int16, int32 and LZF strings.
        for key in [
            vec![0xc0, 0xfb],
            vec![0xc1, 0xe8, 0x03],
            vec![0xc2, 0xa0, 0x86, 0x01, 0x00],
            [
                &[0xc3][..],
                &len(5),
                &len(30),
                &[0x00, b'a', 0xe0, 20, 0x00],
            ]
            .concat(),
        ] {
            body.extend([&[TYPE_STRING][..], &key, &s(b"v")].concat());
        }
        let items = read_all(&rdb(10, &body)).unwrap();
        assert_eq!(
            items[..4],
            [
                Item::SelectDb(5),
                Item::SelectDb(300),
                Item::SelectDb(70000),
                Item::SelectDb(1 << 33)
            ]
        );
        let ks = keys(&items);
        assert_eq!(ks[0].key, long14);
        assert_eq!(ks[1].key, long32);
        assert_eq!(ks[0].db, 1 << 33);
        assert_eq!(ks[2].key, b"-5");
        assert_eq!(ks[3].key, b"1000");
        assert_eq!(ks[4].key, b"100000");
        assert_eq!(ks[5].key, vec![b'a'; 30]);
        assert_eq!(ks[5].payload[..2], [TYPE_STRING, 0x01]);
        assert_eq!(
            check_dump_payload(&ks[5].payload).unwrap(),
            (TYPE_STRING, 10)
        );
    }

    #[test]
    fn a_value_larger_than_the_buffer_is_read_whole() {
        // Larger than BUF_CAP, so part of it is read straight into the
        // payload, and values a little under and over 16 KiB.
        let huge: Vec<u8> = (0..BUF_CAP * 3 + 12345).map(|i| (i % 251) as u8).collect();
        let near = 16 * 1024;
        for big in [
            huge,
            vec![7; near - 4],
            vec![8; near - 3],
            vec![9; near + 5000],
        ] {
            let file = rdb(
                9,
                &[
                    key_record(TYPE_STRING, b"big", &s(&big)),
                    key_record(TYPE_LIST, b"list", &[len(2), s(&big), s(b"y")].concat()),
                    key_record(TYPE_STRING, b"after", &s(b"x")),
                ]
                .concat(),
            );
            for n in [usize::MAX, 100_000, 4093, 3] {
                let mut r = Reader::new(Trickle { data: &file, n }).unwrap();
                let Some(Item::Key(k)) = r.next_item().unwrap() else {
                    panic!()
                };
                assert_eq!(body(&k.payload), &s(&big)[..]);
                assert_eq!(check_dump_payload(&k.payload).unwrap(), (TYPE_STRING, 9));
                let Some(Item::Key(k)) = r.next_item().unwrap() else {
                    panic!()
                };
                assert_eq!(body(&k.payload), &[len(2), s(&big), s(b"y")].concat()[..]);
                assert_eq!(check_dump_payload(&k.payload).unwrap(), (TYPE_LIST, 9));
                let Some(Item::Key(k)) = r.next_item().unwrap() else {
                    panic!()
                };
                assert_eq!(k.key, b"after");
                assert!(r.next_item().unwrap().is_none());
            }
        }
    }

    #[test]
    fn checksums() {
        let body = key_record(TYPE_STRING, b"k", &s(b"v"));
        let good = rdb(10, &body);
        assert_eq!(read_all(&good).unwrap().len(), 1);

        // A stored checksum of 0 means checksums were off.
        let mut zero = good.clone();
        let n = zero.len();
        zero[n - 8..].fill(0);
        assert_eq!(read_all(&zero).unwrap().len(), 1);

        let mut bad = good.clone();
        bad[n - 1] ^= 1;
        let e = read_all(&bad).unwrap_err();
        assert_eq!(e.kind(), RdbErrorKind::ChecksumMismatch);
        assert_eq!(e.offset(), (n - 8) as u64);
        assert!(
            e.to_string()
                .starts_with("checksum mismatch: the file says 0x"),
            "{e}"
        );

        // A flipped byte inside a value is caught by the file checksum.
        let mut flipped = good.clone();
        flipped[n - 10] ^= 0x20; // the 'v'
        assert_eq!(
            read_all(&flipped).unwrap_err().kind(),
            RdbErrorKind::ChecksumMismatch
        );

        // Before RDB 5 there is no checksum at all.
        let old = [header(4), body.clone(), vec![OP_EOF]].concat();
        assert_eq!(read_all(&old).unwrap().len(), 1);
    }

    #[test]
    fn every_truncation_is_reported_as_such() {
        let (file, _) = sample_file();
        for cut in 0..file.len() {
            let prefix = &file[..cut];
            let err = match read_all(prefix) {
                Ok(items) => panic!("a prefix of {cut} bytes parsed: {} items", items.len()),
                Err(e) => e,
            };
            assert!(err.is_truncated(), "cut at {cut}: {err}");
            assert_eq!(err.offset(), cut as u64, "cut at {cut}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("truncated at byte {cut} (")),
                "{err}"
            );
        }
    }

    #[test]
    fn truncation_messages_say_where() {
        let value = [
            len(0),
            len(0),
            len(1),
            len(2),
            len(3),
            len(4),
            len(5),
            len(6),
            len(7),
            len(0),
        ]
        .concat();
        let file = rdb(10, &key_record(TYPE_STREAM_LISTPACKS_2, b"s", &value));
        let cut = 9 + 1 + 2 + 3;
        let e = read_all(&file[..cut]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("truncated at byte {cut} (in the value of a stream key)")
        );
        let e = read_all(&file[..file.len() - 3]).unwrap_err();
        assert!(e.to_string().ends_with("(in the 8-byte checksum)"), "{e}");
        let e = read_all(b"REDIS00").unwrap_err();
        assert_eq!(e.to_string(), "truncated at byte 7 (in the header)");
    }

    #[test]
    fn unknown_types_and_versions_are_rejected() {
        let body = [key_record(TYPE_STRING, b"k", &s(b"v")), vec![0x08], s(b"x")].concat();
        let file = rdb(10, &body);
        let at = 9 + body.len() - 3;
        let e = read_all(&file).unwrap_err();
        assert_eq!(e.kind(), RdbErrorKind::Corrupt);
        assert_eq!(e.offset(), at as u64);
        assert_eq!(
            e.to_string(),
            format!("unknown value type 0x08 at byte {at}")
        );

        let e = read_all(&rdb(10, &[0x30])).unwrap_err();
        assert_eq!(e.to_string(), "unknown value type 0x30 at byte 9");

        let e = read_all(&rdb(10, &key_record(TYPE_MODULE_PRE_GA, b"m", &[1, 2, 3]))).unwrap_err();
        assert_eq!(e.kind(), RdbErrorKind::Unsupported);
        assert!(
            e.to_string()
                .starts_with("module type 6 (pre-module-2 format) at byte 9 cannot be skipped"),
            "{e}"
        );

        let e = Reader::new(&rdb(13, &[])[..]).unwrap_err();
        assert_eq!(e.kind(), RdbErrorKind::Unsupported);
        assert_eq!(
            e.to_string(),
            "RDB version 13 is newer than this reader (1..=12)"
        );
        assert_eq!(Reader::new(&rdb(12, &[])[..]).unwrap().version(), 12);
        assert_eq!(Reader::new(&rdb(1, &[])[..]).unwrap().version(), 1);
        assert_eq!(
            Reader::new(&b"REDIT0010"[..]).unwrap_err().kind(),
            RdbErrorKind::Corrupt
        );
        assert_eq!(
            Reader::new(&b"REDIS00x0"[..]).unwrap_err().kind(),
            RdbErrorKind::Corrupt
        );

        // Bad encodings inside values.
        let e = read_all(&rdb(10, &key_record(TYPE_STRING, b"k", &[0x82]))).unwrap_err();
        assert!(
            e.to_string().starts_with("unknown length encoding 0x82"),
            "{e}"
        );
        let e = read_all(&rdb(10, &key_record(TYPE_STRING, b"k", &[0xc4]))).unwrap_err();
        assert!(
            e.to_string().starts_with("unknown string encoding 4"),
            "{e}"
        );
        let e = read_all(&rdb(
            10,
            &key_record(
                TYPE_LIST_QUICKLIST_2,
                b"k",
                &[len(1), len(3), s(b"x")].concat(),
            ),
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown quicklist node container 3"),
            "{e}"
        );
        let e = read_all(&rdb(
            10,
            &key_record(TYPE_MODULE_2, b"k", &[len(1), len(9)].concat()),
        ))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("unknown module field opcode 9"),
            "{e}"
        );
        let e = read_all(&rdb(10, &[OP_FUNCTION_PRE_GA])).unwrap_err();
        assert_eq!(e.kind(), RdbErrorKind::Unsupported);

        // After an error the reader refuses to go on.
        let mut r = Reader::new(&file[..]).unwrap();
        assert!(r.next_item().is_ok());
        assert!(r.next_item().is_err());
        assert!(r.next_item().is_err());
    }

    #[test]
    fn bytes_after_the_file_are_handed_back() {
        let file = [
            rdb(10, &key_record(TYPE_STRING, b"k", &s(b"v"))),
            b"+PING\r\n".to_vec(),
        ]
        .concat();
        let mut r = Reader::new(&file[..]).unwrap();
        while r.next_item().unwrap().is_some() {}
        assert_eq!(r.bytes_read() as usize, file.len() - 7);
        let (_, rest) = r.into_parts();
        assert_eq!(rest, b"+PING\r\n");
    }

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
    fn payloads_built_by_the_reader_equal_real_dump_payloads() {
        // The values Redis 7.0 wrote for these keys, placed in a v10 file.
        let body = [
            key_record(TYPE_STRING, b"foo", body(REAL_DUMP_STRING)),
            key_record(TYPE_LIST_QUICKLIST_2, b"mylist", body(REAL_DUMP_LIST)),
        ]
        .concat();
        let items = read_all(&rdb(10, &body)).unwrap();
        let ks = keys(&items);
        assert_eq!(ks[0].payload, REAL_DUMP_STRING);
        assert_eq!(ks[1].payload, REAL_DUMP_LIST);
    }

    #[test]
    fn writer_output_reads_back_to_the_same_payloads() {
        let (file, _) = sample_file();
        let items = read_all(&file).unwrap();
        let mut w = Writer::new(Vec::new(), 12).unwrap();
        let mut db = None;
        for item in &items {
            match item {
                Item::Key(k) => {
                    if db != Some(k.db) {
                        w.select_db(k.db).unwrap();
                        db = Some(k.db);
                    }
                    w.key(&k.key, k.expire_ms, &k.payload).unwrap();
                }
                Item::Function { payload } => w.function(payload).unwrap(),
                _ => {}
            }
        }
        let out = w.finish().unwrap();
        let again = read_all(&out).unwrap();
        assert_eq!(
            again[0],
            Item::Aux {
                key: b"backplan-ver".to_vec(),
                value: env!("CARGO_PKG_VERSION").as_bytes().to_vec()
            }
        );
        let functions = |items: &[Item]| {
            items
                .iter()
                .filter(|i| matches!(i, Item::Function { .. }))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(functions(&items), functions(&again));
        let (a, b) = (keys(&items), keys(&again));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.db, &x.key, x.expire_ms, x.type_id),
                (y.db, &y.key, y.expire_ms, y.type_id)
            );
            assert_eq!(x.payload, y.payload);
        }

        // What the writer refuses.
        let mut w = Writer::new(Vec::new(), 10).unwrap();
        let v12 = &b[0].payload;
        assert!(
            w.key(b"k", None, v12).is_err(),
            "a v12 payload in a v10 file"
        );
        assert!(w.key(b"k", None, &REAL_DUMP_STRING[..5]).is_err());
        assert!(w.function(REAL_DUMP_STRING).is_err());
        w.key(b"k", Some(-1), REAL_DUMP_STRING).unwrap();
        assert!(Writer::new(Vec::new(), 13).is_err());
        assert!(Writer::new(Vec::new(), 4).is_err());
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

    // --- split_commands

    fn entry(type_id: u8, value: &[u8], expire_ms: Option<i64>) -> KeyEntry {
        let mut payload = [&[type_id][..], value].concat();
        push_footer(&mut payload, 12);
        KeyEntry {
            db: 0,
            key: b"k".to_vec(),
            expire_ms,
            type_id,
            payload,
            lru_idle_secs: None,
            lfu_freq: None,
        }
    }

    fn text(cmds: &[Vec<Vec<u8>>]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn split(type_id: u8, value: &[u8]) -> Vec<String> {
        text(&split_commands(&entry(type_id, value, None), 1 << 20).unwrap())
    }

    #[test]
    fn split_strings() {
        assert_eq!(split(TYPE_STRING, &s(b"hello")), ["SET k hello"]);
        assert_eq!(split(TYPE_STRING, &[0xc0, 0x85]), ["SET k -123"]);
        assert_eq!(
            split(TYPE_STRING, &[0xc2, 0x15, 0xcd, 0x5b, 0x07]),
            ["SET k 123456789"]
        );
        let lzf = [
            &[0xc3][..],
            &len(5),
            &len(30),
            &[0x00, b'a', 0xe0, 20, 0x00],
        ]
        .concat();
        assert_eq!(
            split(TYPE_STRING, &lzf),
            [format!("SET k {}", "a".repeat(30))]
        );
        assert_eq!(split(TYPE_STRING, &s(b"")), ["SET k "]);
        // Too big for one command: SET and APPENDs, then the expiry.
        let value: Vec<u8> = (0..1000).map(|i| b'a' + (i % 26) as u8).collect();
        let cmds = split_commands(&entry(TYPE_STRING, &s(&value), Some(42)), 300).unwrap();
        assert!(cmds.len() > 4);
        assert_eq!(cmds[0][0], b"SET");
        assert!(cmds[1..cmds.len() - 1].iter().all(|c| c[0] == b"APPEND"));
        let joined: Vec<u8> = cmds[..cmds.len() - 1]
            .iter()
            .flat_map(|c| c[2].clone())
            .collect();
        assert_eq!(joined, value);
        assert_eq!(text(&cmds[cmds.len() - 1..]), ["PEXPIREAT k 42"]);
        assert!(
            cmds.iter()
                .all(|c| c.iter().map(|a| a.len() + ARG_OVERHEAD).sum::<usize>() <= 300)
        );
    }

    #[test]
    fn split_lists_in_every_encoding() {
        let want = ["DEL k", "RPUSH k a -5000 1099511627776 12"];
        let plain = [
            len(4),
            s(b"a"),
            s(b"-5000"),
            s(b"1099511627776"),
            vec![0xc0, 12],
        ]
        .concat();
        assert_eq!(split(TYPE_LIST, &plain), want);
        let items = [E::S(b"a"), E::I(-5000), E::I(1 << 40), E::I(12)];
        assert_eq!(split(TYPE_LIST_ZIPLIST, &s(&zl(&items))), want);
        let ql = [len(2), s(&zl(&items[..2])), s(&zl(&items[2..]))].concat();
        assert_eq!(split(TYPE_LIST_QUICKLIST, &ql), want);
        let ql2 = [
            len(3),
            len(2),
            s(&lp(&items[..1])),
            len(1),
            s(b"-5000"),
            len(2),
            s(&lp(&items[2..])),
        ]
        .concat();
        assert_eq!(split(TYPE_LIST_QUICKLIST_2, &ql2), want);
        assert_eq!(
            split(TYPE_LIST_QUICKLIST_2, body(REAL_DUMP_LIST)),
            ["DEL k", "RPUSH k a b 12"]
        );
        // Every integer width of both formats.
        let ints = [
            0,
            12,
            13,
            127,
            128,
            -1,
            4095,
            -4096,
            4096,
            32767,
            -32768,
            32768,
            8_388_607,
            -8_388_608,
            8_388_608,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ];
        let es: Vec<E> = ints.iter().map(|&i| E::I(i)).collect();
        let want = format!("RPUSH k {}", ints.map(|i| i.to_string()).join(" "));
        assert_eq!(split(TYPE_LIST_ZIPLIST, &s(&zl(&es)))[1], want);
        let ql2 = [len(1), len(2), s(&lp(&es))].concat();
        assert_eq!(split(TYPE_LIST_QUICKLIST_2, &ql2)[1], want);
        // Long strings in both formats (14-bit/32-bit and 12-bit/32-bit lengths).
        let (mid, long) = (vec![b'm'; 300], vec![b'l'; 20000]);
        let es = [E::S(&mid), E::S(&long), E::S(b"x")];
        let want = format!("RPUSH k {} {} x", "m".repeat(300), "l".repeat(20000));
        assert_eq!(split(TYPE_LIST_ZIPLIST, &s(&zl(&es)))[1], want);
        assert_eq!(
            split(
                TYPE_LIST_QUICKLIST_2,
                &[len(1), len(2), s(&lp(&es))].concat()
            )[1],
            want
        );
    }

    #[test]
    fn split_batches_respect_max_bytes() {
        let members: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("member-{i:03}").into_bytes())
            .collect();
        let es: Vec<E> = members.iter().map(|m| E::S(m)).collect();
        let e = entry(TYPE_SET_LISTPACK, &s(&lp(&es)), Some(1_800_000_000_000));
        let cmds = split_commands(&e, 200).unwrap();
        assert_eq!(text(&cmds[..1]), ["DEL k"]);
        assert_eq!(text(&cmds[cmds.len() - 1..]), ["PEXPIREAT k 1800000000000"]);
        let sadds = &cmds[1..cmds.len() - 1];
        assert!(sadds.len() > 10);
        for c in sadds {
            assert_eq!(c[0], b"SADD");
            assert_eq!(c[1], b"k");
            assert!(c.iter().map(|a| a.len() + ARG_OVERHEAD).sum::<usize>() <= 200);
        }
        let all: Vec<&Vec<u8>> = sadds.iter().flat_map(|c| &c[2..]).collect();
        assert_eq!(all, members.iter().collect::<Vec<_>>());
        // One element that can never fit is an error, not an oversized command.
        let e = entry(TYPE_SET, &[len(1), s(&[b'x'; 500])].concat(), None);
        assert_eq!(
            split_commands(&e, 200).unwrap_err().kind(),
            RdbErrorKind::Unsupported
        );
    }

    #[test]
    fn split_sets_zsets_and_hashes() {
        assert_eq!(
            split(TYPE_SET, &[len(2), s(b"a"), vec![0xc0, 5]].concat()),
            ["DEL k", "SADD k a 5"]
        );
        assert_eq!(
            split(TYPE_SET_INTSET, &s(&intset(2, &[1, -3]))),
            ["DEL k", "SADD k 1 -3"]
        );
        assert_eq!(
            split(TYPE_SET_INTSET, &s(&intset(4, &[70000]))),
            ["DEL k", "SADD k 70000"]
        );
        assert_eq!(
            split(TYPE_SET_INTSET, &s(&intset(8, &[1 << 40]))),
            ["DEL k", "SADD k 1099511627776"]
        );
        assert_eq!(
            split(TYPE_SET_LISTPACK, &s(&lp(&[E::S(b"a"), E::I(7)]))),
            ["DEL k", "SADD k a 7"]
        );

        let want = ["DEL k", "ZADD k 1.5 a inf b -inf c"];
        let z1 = [
            len(3),
            s(b"a"),
            vec![3],
            b"1.5".to_vec(),
            s(b"b"),
            vec![254],
            s(b"c"),
            vec![255],
        ]
        .concat();
        assert_eq!(split(TYPE_ZSET, &z1), want);
        let z2 = [
            len(3),
            s(b"a"),
            1.5f64.to_le_bytes().to_vec(),
            s(b"b"),
            f64::INFINITY.to_le_bytes().to_vec(),
            s(b"c"),
            f64::NEG_INFINITY.to_le_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(split(TYPE_ZSET_2, &z2), want);
        let pairs = [
            E::S(b"a"),
            E::S(b"1.5"),
            E::S(b"b"),
            E::S(b"inf"),
            E::S(b"c"),
            E::S(b"-inf"),
        ];
        assert_eq!(split(TYPE_ZSET_ZIPLIST, &s(&zl(&pairs))), want);
        assert_eq!(split(TYPE_ZSET_LISTPACK, &s(&lp(&pairs))), want);
        assert_eq!(
            split(TYPE_ZSET_LISTPACK, &s(&lp(&[E::S(b"m"), E::I(-2)]))),
            ["DEL k", "ZADD k -2 m"]
        );
        // Binary doubles come back exactly.
        for v in [
            0.1,
            -1e-300,
            1e300,
            123_456_789.123_456_78,
            f64::MIN_POSITIVE,
            2f64.powi(60),
        ] {
            let text = format_score(v);
            assert_eq!(
                std::str::from_utf8(&text).unwrap().parse::<f64>().unwrap(),
                v
            );
            assert!(text.len() <= 24, "{}", String::from_utf8_lossy(&text));
        }
        let nan = [len(1), s(b"a"), f64::NAN.to_le_bytes().to_vec()].concat();
        assert!(split_commands(&entry(TYPE_ZSET_2, &nan, None), 1000).is_err());

        let want = ["DEL k", "HSET k f v g 12"];
        assert_eq!(
            split(
                TYPE_HASH,
                &[len(2), s(b"f"), s(b"v"), s(b"g"), vec![0xc0, 12]].concat()
            ),
            want
        );
        assert_eq!(
            split(
                TYPE_HASH_ZIPMAP,
                &s(&zipmap(&[(b"f", b"v"), (b"g", b"12")]))
            ),
            want
        );
        let pairs = [E::S(b"f"), E::S(b"v"), E::S(b"g"), E::I(12)];
        assert_eq!(split(TYPE_HASH_ZIPLIST, &s(&zl(&pairs))), want);
        assert_eq!(split(TYPE_HASH_LISTPACK, &s(&lp(&pairs))), want);
        assert!(
            split_commands(&entry(TYPE_HASH_LISTPACK, &s(&lp(&pairs[..3])), None), 1000).is_err()
        );
    }

    #[test]
    fn split_hashes_with_field_ttls() {
        let t = 1_800_000_000_000i64;
        let want = [
            "DEL k".to_string(),
            "HSET k f v g w h x".to_string(),
            format!("HPEXPIREAT k {t} FIELDS 2 g h"),
            format!("HPEXPIREAT k {} FIELDS 1 f", t + 5),
        ];
        let triples = [
            E::S(b"f"),
            E::S(b"v"),
            E::I(t + 5),
            E::S(b"g"),
            E::S(b"w"),
            E::I(t),
            E::S(b"h"),
            E::S(b"x"),
            E::I(t),
        ];
        assert_eq!(split(TYPE_HASH_LISTPACK_EX_PRE_GA, &s(&lp(&triples))), want);
        assert_eq!(
            split(
                TYPE_HASH_LISTPACK_EX,
                &[t.to_le_bytes().to_vec(), s(&lp(&triples))].concat()
            ),
            want
        );
        let meta = [
            len(3),
            len(6),
            s(b"f"),
            s(b"v"),
            len(1),
            s(b"g"),
            s(b"w"),
            len(1),
            s(b"h"),
            s(b"x"),
        ]
        .concat();
        assert_eq!(
            split(
                TYPE_HASH_METADATA,
                &[t.to_le_bytes().to_vec(), meta].concat()
            ),
            want
        );
        let abs = |ms: i64| len(ms as u64);
        let pre = [
            len(3),
            abs(t + 5),
            s(b"f"),
            s(b"v"),
            abs(t),
            s(b"g"),
            s(b"w"),
            abs(t),
            s(b"h"),
            s(b"x"),
        ]
        .concat();
        assert_eq!(split(TYPE_HASH_METADATA_PRE_GA, &pre), want);
        // A field without TTL (0) gets none.
        let none = [E::S(b"f"), E::S(b"v"), E::I(0)];
        assert_eq!(
            split(TYPE_HASH_LISTPACK_EX_PRE_GA, &s(&lp(&none))),
            ["DEL k", "HSET k f v"]
        );
    }

    #[test]
    fn split_refuses_streams_and_modules() {
        for (t, name, value) in sample_values() {
            let e = entry(t, &value, None);
            let r = split_commands(&e, 1 << 20);
            match type_name(t) {
                "stream" | "module" => {
                    let err = r.unwrap_err();
                    assert_eq!(err.kind(), RdbErrorKind::Unsupported, "{name}");
                    assert!(err.to_string().starts_with("cannot split a "), "{err}");
                }
                _ => {
                    r.unwrap_or_else(|err| panic!("{name}: {err}"));
                }
            }
        }
        let mut bad = entry(TYPE_STRING, &s(b"x"), None);
        bad.payload[2] ^= 1;
        assert_eq!(
            split_commands(&bad, 100).unwrap_err().kind(),
            RdbErrorKind::ChecksumMismatch
        );
        let trailing = entry(TYPE_STRING, &[s(b"x"), vec![0]].concat(), None);
        assert!(split_commands(&trailing, 100).is_err());
    }
}
