//! [`split_commands`]: a key's value decoded into ordinary commands, for the rare
//! key whose payload is over the target's `proto-max-bulk-len`. It decodes the
//! compact encodings (listpack, ziplist, intset, zipmap) that the reader keeps as
//! they are.

use std::collections::BTreeMap;

use super::*;

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
    use crate::sources::redis::rdb::testdata::*;

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
