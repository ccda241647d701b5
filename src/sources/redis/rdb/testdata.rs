//! Builders of hand-made RDB bytes and sample values, shared by the tests of
//! every part of this module.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read};

use super::*;

// --- Builders for hand-made RDB bytes (independent of the code under test
// where it matters: lengths, listpacks and ziplists are encoded here from
// the format description, not with the module's own helpers).

pub(super) fn len(n: u64) -> Vec<u8> {
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

pub(super) fn s(b: &[u8]) -> Vec<u8> {
    let mut v = len(b.len() as u64);
    v.extend_from_slice(b);
    v
}

#[derive(Clone, Copy)]
pub(super) enum E<'a> {
    S(&'a [u8]),
    I(i64),
}

pub(super) fn lp_backlen(l: usize) -> Vec<u8> {
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

pub(super) fn lp(entries: &[E]) -> Vec<u8> {
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

pub(super) fn zl(entries: &[E]) -> Vec<u8> {
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

pub(super) fn intset(width: u32, vals: &[i64]) -> Vec<u8> {
    let mut v = [width.to_le_bytes(), (vals.len() as u32).to_le_bytes()].concat();
    for x in vals {
        v.extend_from_slice(&x.to_le_bytes()[..width as usize]);
    }
    v
}

pub(super) fn zipmap(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
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

pub(super) fn header(version: u16) -> Vec<u8> {
    format!("REDIS{version:04}").into_bytes()
}

/// A whole file: header, body, EOF, correct checksum.
pub(super) fn rdb(version: u16, body: &[u8]) -> Vec<u8> {
    let mut f = [header(version), body.to_vec(), vec![OP_EOF]].concat();
    let crc = Crc64::checksum(&f);
    f.extend(crc.to_le_bytes());
    f
}

pub(super) fn key_record(t: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    [&[t][..], &s(key), value].concat()
}

pub(super) fn read_all(bytes: &[u8]) -> Result<Vec<Item>, RdbError> {
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

pub(super) fn keys(items: &[Item]) -> Vec<&KeyEntry> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Key(k) => Some(k),
            _ => None,
        })
        .collect()
}

/// The value bytes of a payload (without type byte and footer).
pub(super) fn body(payload: &[u8]) -> &[u8] {
    &payload[1..payload.len() - DUMP_FOOTER_LEN]
}

/// A reader that hands out at most `n` bytes per read, to hit every
/// buffer boundary.
pub(super) struct Trickle<'a> {
    pub(super) data: &'a [u8],
    pub(super) n: usize,
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
pub(super) const REAL_DUMP_STRING: &[u8] = b"\x00\x03bar\x0a\x00\xe6\xbe\x49\x60\xee\x66\xfd\x17";
pub(super) const REAL_DUMP_LIST: &[u8] = b"\x12\x01\x02\x0f\x0f\x00\x00\x00\x03\x00\x81a\x02\x81b\x02\x0c\x01\xff\x0a\x00\x1d\xc9\x37\x3a\xed\xb7\x30\x40";

/// Value bytes of one key of every type this test suite builds by hand.
pub(super) fn sample_values() -> Vec<(u8, &'static str, Vec<u8>)> {
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
pub(super) type Expected = Vec<(u8, String, Vec<u8>)>;

pub(super) fn sample_file() -> (Vec<u8>, Expected) {
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
