//! [`Reader`]: an RDB file or replication stream, record by record, every key as
//! the DUMP payload `RESTORE` takes. Its walk of each value follows
//! `rdbLoadObject()` in Redis's `src/rdb.c`.

use std::fmt;
use std::io::{self, Read};

use super::crc::{crc64_dual, crc64_resume};
use super::*;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sources::redis::rdb::testdata::*;

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
}
