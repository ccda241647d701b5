//! Where the parts of a custom-format archive (`pg_dump -Fc`) lie, read as the dump
//! streams by, so that a restore can reach each table's rows without reading the
//! archive from the start.
//!
//! pg_dump writing to a pipe cannot go back to fill in the offsets of its table of
//! contents, so the archive says only that each table's data follows, in some order.
//! Its layout is simple all the same (`pg_backup_archiver.c`, `pg_backup_custom.c`):
//!
//! - a header (`PGDMP`, the archive version, the sizes of its integers and offsets,
//!   the compression, the dump's time and versions) and the table of contents, one
//!   entry per object with its dump id and kind (`TABLE DATA`, `BLOBS`, …);
//! - then one data block per entry with data: a block type (1 for a table's rows, 3
//!   for large objects), the entry's dump id, and its bytes as frames (an integer
//!   length, then that many bytes) up to a frame of length 0. Large objects repeat
//!   an OID and frames per object, up to an OID of 0.
//!
//! An integer is a sign byte and `int_size` bytes, least significant first; a string
//! is an integer length (-1 for none) and its bytes.
//!
//! [`read_layout`] walks all of that and records where the table of contents ends and
//! where each block starts and ends ([`Layout`]). Only uncompressed archives
//! (`-Z0`, which backplan always asks for) and the archive versions of pg_dump 11 to
//! 17 (1.13 to 1.16) are read; anything else has no layout, and restores the way it
//! always could, through one pg_restore.

use serde::{Deserialize, Serialize};

/// The side entry of a custom-format archive `DB.dump` that holds its layout.
pub const LAYOUT_SUFFIX: &str = ".layout.json";

/// Block type of a table's rows.
const BLK_DATA: u8 = 1;
/// Block type of large objects.
const BLK_BLOBS: u8 = 3;

/// The oldest and newest archive versions read: pg_dump 11 (1.13) to 17 (1.16).
const OLDEST: (u8, u8) = (1, 13);
const NEWEST: (u8, u8) = (1, 16);

/// Where the table of contents and the data blocks of one archive lie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Bytes of an integer in this archive (4 from every pg_dump in use).
    pub int_size: u8,
    /// Where the table of contents ends and the first block starts.
    pub toc_end: u64,
    /// The data blocks, in archive order, back to back.
    pub blocks: Vec<Block>,
    /// The archive's size.
    pub end: u64,
}

/// One data block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The dump id of its entry in the table of contents.
    pub id: u32,
    /// A table's rows (`TABLE DATA`), which a restore can copy by itself; anything
    /// else (large objects) stays for pg_restore.
    pub table: bool,
    /// Offset of its header (type and dump id).
    pub start: u64,
    /// Offset of its first frame.
    pub data: u64,
    /// Offset just after it.
    pub end: u64,
}

impl Layout {
    /// The header of a table's `block` as the archive holds it: the block type, then
    /// the dump id as an integer.
    pub fn header(&self, block: &Block) -> Vec<u8> {
        let mut out = vec![BLK_DATA, 0];
        let id = u64::from(block.id).to_le_bytes();
        out.extend((0..usize::from(self.int_size)).map(|i| id.get(i).copied().unwrap_or(0)));
        out
    }

    /// A frame of length 0, which ends a block's data.
    pub fn end_of_data(&self) -> Vec<u8> {
        vec![0; 1 + usize::from(self.int_size)]
    }

    /// The size of a copy of the archive with every table's rows left out: its table
    /// of contents, an empty block per table, and every other block whole.
    pub fn skeleton_size(&self) -> u64 {
        let empty = (self.header_len() + self.end_of_data().len()) as u64;
        self.toc_end
            + self
                .blocks
                .iter()
                .map(|b| if b.table { empty } else { b.end - b.start })
                .sum::<u64>()
    }

    fn header_len(&self) -> usize {
        2 + usize::from(self.int_size)
    }

    /// Checks that the blocks lie back to back from the table of contents to the end
    /// of an archive of `size` bytes, each with a header of the right length.
    pub fn check(&self, size: u64) -> Result<(), String> {
        let mut at = self.toc_end;
        for b in &self.blocks {
            if b.start != at || b.data != b.start + self.header_len() as u64 || b.end < b.data {
                return Err(format!("block {} is not where the layout says", b.id));
            }
            at = b.end;
        }
        if at != self.end || self.end != size {
            return Err(format!(
                "the layout ends at byte {at} of {}, the archive has {size}",
                self.end
            ));
        }
        Ok(())
    }
}

/// Reads a whole custom-format archive and returns its layout (see [`LayoutReader`]).
#[cfg(test)]
pub fn read_layout(mut reader: impl std::io::Read) -> Result<Layout, String> {
    let mut layout = LayoutReader::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return layout.finish();
        }
        layout.push(&buf[..n]);
    }
}

/// A table of contents bigger than this is not read: the reader keeps it in memory.
const TOC_LIMIT: usize = 64 << 20;

/// Reads the layout of a custom-format archive from its bytes as they stream by, in
/// pieces of any size. It never fails the stream: it remembers the first thing it
/// cannot read (an archive version, compression, a block type), ignores the rest,
/// and says so at the end.
pub struct LayoutReader {
    phase: Phase,
}

enum Phase {
    /// The first bytes, until they hold the whole table of contents; parsed again
    /// each time they have doubled.
    Toc {
        buf: Vec<u8>,
        next_try: usize,
    },
    Blocks(Walker),
    Failed(String),
}

impl Default for LayoutReader {
    fn default() -> Self {
        LayoutReader::new()
    }
}

impl LayoutReader {
    pub fn new() -> LayoutReader {
        LayoutReader {
            phase: Phase::Toc {
                buf: Vec::new(),
                next_try: 1 << 16,
            },
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let phase = std::mem::replace(&mut self.phase, Phase::Failed(String::new()));
        self.phase = match phase {
            Phase::Toc { mut buf, next_try } => {
                buf.extend_from_slice(bytes);
                if buf.len() < next_try {
                    Phase::Toc { buf, next_try }
                } else {
                    Self::try_toc(buf)
                }
            }
            Phase::Blocks(mut walker) => match walker.push(bytes, None) {
                Ok(()) => Phase::Blocks(walker),
                Err(e) => Phase::Failed(e),
            },
            failed => failed,
        };
    }

    /// Parses the table of contents from `buf` if it is all there, and walks on.
    fn try_toc(buf: Vec<u8>) -> Phase {
        match parse_toc(&buf) {
            Ok(Some((toc, end))) => {
                let mut walker = Walker::new(toc, end as u64);
                match walker.push(&buf[end..], None) {
                    Ok(()) => Phase::Blocks(walker),
                    Err(e) => Phase::Failed(e),
                }
            }
            Ok(None) if buf.len() > TOC_LIMIT => Phase::Failed(format!(
                "its table of contents is larger than {} MiB",
                TOC_LIMIT >> 20
            )),
            Ok(None) => {
                let next_try = buf.len() * 2;
                Phase::Toc { buf, next_try }
            }
            Err(e) => Phase::Failed(e),
        }
    }

    /// The layout of everything pushed.
    pub fn finish(self) -> Result<Layout, String> {
        let phase = match self.phase {
            Phase::Toc { buf, .. } => Self::try_toc(buf),
            other => other,
        };
        match phase {
            Phase::Blocks(walker) => walker.finish(),
            Phase::Toc { buf, .. } => Err(format!("the archive ends early, at byte {}", buf.len())),
            Phase::Failed(e) => Err(e),
        }
    }
}

/// What the table of contents says of the blocks to come.
#[derive(Debug, Clone)]
struct Toc {
    int_size: u8,
    /// Dump id → whether it is a table's rows, for each entry.
    entries: std::collections::HashMap<i64, bool>,
}

/// Parses the header and the table of contents at the start of `buf`: the table and
/// where it ends, or `None` when `buf` holds only part of it.
fn parse_toc(buf: &[u8]) -> Result<Option<(Toc, usize)>, String> {
    let mut r = Cursor {
        buf,
        at: 0,
        int_size: 4,
    };
    match r.toc() {
        Ok(toc) => Ok(Some((toc, r.at))),
        Err(None) => Ok(None),
        Err(Some(e)) => Err(e),
    }
}

/// Reads the front of an archive; an error of `None` means it needs more bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    int_size: u8,
}

type Read<T> = Result<T, Option<String>>;

fn invalid<T>(message: impl Into<String>) -> Read<T> {
    Err(Some(message.into()))
}

impl Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Read<&[u8]> {
        let end = self.at.checked_add(n).ok_or(None)?;
        let out = self.buf.get(self.at..end).ok_or(None)?;
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Read<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Read<i64> {
        let n = 1 + usize::from(self.int_size);
        Ok(int(self.bytes(n)?))
    }

    /// `ReadStr`: an integer length (negative for no string), then its bytes.
    fn string(&mut self) -> Read<Option<&[u8]>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| Some("a string too long".to_string()))?;
        self.bytes(len).map(Some)
    }

    fn toc(&mut self) -> Read<Toc> {
        // ReadHead.
        if self.bytes(5)? != b"PGDMP" {
            return invalid("not a pg_dump archive");
        }
        let version = (self.byte()?, self.byte()?);
        let _revision = self.byte()?;
        if version < OLDEST || version > NEWEST {
            return invalid(format!(
                "archive version {}.{} is not one this reads",
                version.0, version.1
            ));
        }
        self.int_size = self.byte()?;
        let off_size = self.byte()?;
        if !(1..=8).contains(&self.int_size) || !(1..=8).contains(&off_size) {
            return invalid("integer sizes out of range");
        }
        if self.byte()? != 1 {
            return invalid("not a custom-format archive");
        }
        let compressed = if version >= (1, 15) {
            self.byte()? != 0
        } else {
            self.int()? != 0
        };
        if compressed {
            return invalid("the archive is compressed");
        }
        for _ in 0..7 {
            self.int()?; // the dump's time
        }
        for _ in 0..3 {
            self.string()?; // database name, server and pg_dump versions
        }

        // ReadToc, keeping each entry's dump id and whether it is a table's rows.
        let count = self.int()?;
        let mut entries = std::collections::HashMap::new();
        for _ in 0..count {
            let id = self.int()?;
            self.int()?; // has a data dumper
            self.string()?; // catalog table oid
            self.string()?; // oid
            self.string()?; // tag
            let table = self.string()? == Some(b"TABLE DATA");
            self.int()?; // section
            for _ in 0..5 {
                // definition, drop, copy statement, schema, tablespace
                self.string()?;
            }
            if version >= (1, 14) {
                self.string()?; // table access method
            }
            if version >= (1, 16) {
                self.int()?; // relkind
            }
            self.string()?; // owner
            self.string()?; // "with oids"
            while self.string()?.is_some() {} // dependencies, up to no string
            self.byte()?; // offset flag
            self.bytes(usize::from(off_size))?;
            entries.insert(id, table);
        }
        Ok(Toc {
            int_size: self.int_size,
            entries,
        })
    }
}

/// An integer as the archive holds it: a sign byte, then its bytes, least significant
/// first.
fn int(field: &[u8]) -> i64 {
    let value = field[1..]
        .iter()
        .take(8)
        .enumerate()
        .fold(0u64, |v, (i, b)| v | (u64::from(*b) << (8 * i))) as i64;
    if field[0] != 0 { -value } else { value }
}

/// Walks the data blocks after the table of contents, in pieces of any size.
struct Walker {
    toc: Toc,
    /// Offset of the next byte.
    at: u64,
    state: State,
    /// A field that a piece ended in the middle of.
    field: Vec<u8>,
    /// The block being read.
    open: Option<(Block, u8)>,
    toc_end: u64,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between blocks: the next block's type and dump id.
    Header,
    /// A frame's length.
    Length,
    /// Bytes of a frame still to come.
    Data(u64),
    /// A large object's OID (0 ends the block).
    Oid,
}

impl Walker {
    fn new(toc: Toc, at: u64) -> Walker {
        Walker {
            toc,
            at,
            state: State::Header,
            field: Vec::new(),
            open: None,
            toc_end: at,
            blocks: Vec::new(),
        }
    }

    /// Takes the next bytes; with `rows`, appends the bytes of table rows to it.
    fn push(
        &mut self,
        mut input: &[u8],
        mut rows: Option<&mut bytes::BytesMut>,
    ) -> Result<(), String> {
        let int_len = 1 + usize::from(self.toc.int_size);
        while !input.is_empty() {
            if let State::Data(left) = self.state {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                if let Some(rows) = rows.as_deref_mut() {
                    rows.extend_from_slice(&input[..n]);
                }
                input = &input[n..];
                self.at += n as u64;
                self.state = if left == n as u64 {
                    State::Length
                } else {
                    State::Data(left - n as u64)
                };
                continue;
            }
            let need = if self.state == State::Header {
                1 + int_len
            } else {
                int_len
            };
            if self.field.is_empty() && input.len() >= need {
                // The usual case: the whole field is in this piece.
                let (field, rest) = input.split_at(need);
                input = rest;
                self.at += need as u64;
                self.step(field)?;
                continue;
            }
            let take = (need - self.field.len()).min(input.len());
            self.field.extend_from_slice(&input[..take]);
            input = &input[take..];
            self.at += take as u64;
            if self.field.len() < need {
                break;
            }
            let field = std::mem::take(&mut self.field);
            self.step(&field)?;
            self.field = field;
            self.field.clear();
        }
        Ok(())
    }

    /// Acts on a whole field of the current state.
    fn step(&mut self, field: &[u8]) -> Result<(), String> {
        match self.state {
            State::Header => {
                let (kind, id) = (field[0], int(&field[1..]));
                let Some(&table) = self.toc.entries.get(&id) else {
                    return Err(format!(
                        "a block for dump id {id}, which the table of contents does not hold"
                    ));
                };
                if kind != BLK_DATA && kind != BLK_BLOBS {
                    return Err(format!("a block of unknown type {kind}"));
                }
                let id = u32::try_from(id).map_err(|_| format!("dump id {id}"))?;
                let block = Block {
                    id,
                    table: table && kind == BLK_DATA,
                    start: self.at - field.len() as u64,
                    data: self.at,
                    end: 0,
                };
                self.open = Some((block, kind));
                self.state = if kind == BLK_DATA {
                    State::Length
                } else {
                    State::Oid
                };
            }
            State::Length => match int(field) {
                0 if self.open.as_ref().is_some_and(|(_, k)| *k == BLK_BLOBS) => {
                    self.state = State::Oid;
                }
                0 => self.close(),
                n if n < 0 => return Err(format!("a frame of length {n}")),
                n => self.state = State::Data(n as u64),
            },
            State::Oid => {
                if int(field) == 0 {
                    self.close();
                } else {
                    self.state = State::Length;
                }
            }
            State::Data(_) => unreachable!("data is not read by fields"),
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some((mut block, _)) = self.open.take() {
            block.end = self.at;
            self.blocks.push(block);
        }
        self.state = State::Header;
    }

    fn finish(self) -> Result<Layout, String> {
        if self.state != State::Header || !self.field.is_empty() {
            return Err(format!("the archive ends early, at byte {}", self.at));
        }
        Ok(Layout {
            int_size: self.toc.int_size,
            toc_end: self.toc_end,
            blocks: self.blocks,
            end: self.at,
        })
    }
}

/// Undoes the framing of one table's data block, fed piece by piece: checks that it
/// is the block the layout says, and gives back its rows.
pub struct Frames {
    walker: Walker,
    expected: Block,
}

impl Frames {
    pub fn new(layout: &Layout, block: &Block) -> Frames {
        let toc = Toc {
            int_size: layout.int_size,
            entries: [(i64::from(block.id), true)].into(),
        };
        Frames {
            walker: Walker::new(toc, block.start),
            expected: block.clone(),
        }
    }

    /// Takes the next bytes of the block; appends its rows to `rows`.
    pub fn push(&mut self, input: &[u8], rows: &mut bytes::BytesMut) -> Result<(), String> {
        if !self.walker.blocks.is_empty() {
            return Err("bytes after the end of the block".into());
        }
        self.walker.push(input, Some(rows))
    }

    /// Whether the block ended where the layout says.
    pub fn finish(self) -> Result<(), String> {
        let expected = self.expected;
        match self.walker.finish() {
            Ok(l) if l.blocks == [expected] => Ok(()),
            Ok(_) => Err("the block is not where the layout says".into()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive in the shape pg_dump 15 writes (1.14), for the tests.
    struct Writer(Vec<u8>);

    impl Writer {
        fn int(&mut self, v: i64) {
            self.0.push(u8::from(v < 0));
            self.0
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn string(&mut self, s: Option<&str>) {
            match s {
                Some(s) => {
                    self.int(s.len() as i64);
                    self.0.extend_from_slice(s.as_bytes());
                }
                None => self.int(-1),
            }
        }
        fn entry(&mut self, id: i64, desc: &str) {
            self.int(id);
            self.int(1);
            for s in ["0", "0", "t", desc] {
                self.string(Some(s));
            }
            self.int(2); // section
            for s in [
                "",
                "",
                "COPY t FROM stdin;\n",
                "public",
                "",
                "heap",
                "postgres",
                "false",
            ] {
                self.string(Some(s));
            }
            self.string(Some("7"));
            self.string(None);
            self.0.push(1);
            self.0.extend_from_slice(&[0; 8]);
        }
    }

    fn archive(rows: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut w = Writer(b"PGDMP".to_vec());
        w.0.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
        w.int(0);
        for v in [1, 2, 3, 4, 5, 2026, 0] {
            w.int(v);
        }
        for s in ["app", "15.2", "15.2"] {
            w.string(Some(s));
        }
        w.int(3);
        w.entry(10, "TABLE DATA");
        w.entry(11, "BLOBS");
        w.entry(12, "TABLE DATA");
        let mut starts = vec![w.0.len() as u64];
        w.0.push(1);
        w.int(10);
        for r in rows {
            w.int(r.len() as i64);
            w.0.extend_from_slice(r);
        }
        w.int(0);
        starts.push(w.0.len() as u64);
        w.0.push(3);
        w.int(11);
        w.int(16401);
        w.int(3);
        w.0.extend_from_slice(b"abc");
        w.int(0);
        w.int(0);
        starts.push(w.0.len() as u64);
        w.0.push(1);
        w.int(12);
        w.int(0);
        starts.push(w.0.len() as u64);
        (w.0, starts)
    }

    #[test]
    fn the_layout_finds_every_block_back_to_back_and_which_hold_a_tables_rows() {
        let (bytes, starts) = archive(&[b"1\tone\n", b"2\ttwo\n"]);
        let layout = read_layout(&bytes[..]).expect("a layout");
        assert_eq!(layout.toc_end, starts[0]);
        assert_eq!(layout.end, bytes.len() as u64);
        let found: Vec<(u32, bool, u64, u64)> = layout
            .blocks
            .iter()
            .map(|b| (b.id, b.table, b.start, b.end))
            .collect();
        assert_eq!(
            found,
            vec![
                (10, true, starts[0], starts[1]),
                (11, false, starts[1], starts[2]),
                (12, true, starts[2], starts[3]),
            ]
        );
        layout.check(bytes.len() as u64).expect("consistent");
        assert!(layout.check(bytes.len() as u64 + 1).is_err());
        // The skeleton keeps the table of contents and the large objects whole.
        let empty = 6 + 5;
        assert_eq!(
            layout.skeleton_size(),
            starts[0] + empty + (starts[2] - starts[1]) + empty
        );
        assert_eq!(layout.header(&layout.blocks[0]), vec![1, 0, 10, 0, 0, 0]);
    }

    #[test]
    fn a_truncated_or_compressed_archive_has_no_layout() {
        let (bytes, starts) = archive(&[b"1\tone\n"]);
        let cut = read_layout(&bytes[..starts[1] as usize - 3]).unwrap_err();
        assert!(cut.contains("ends early"), "{cut}");
        let mut compressed = bytes.clone();
        compressed[15] = 6; // the compression level's low byte
        let refused = read_layout(&compressed[..]).unwrap_err();
        assert!(refused.contains("compressed"), "{refused}");
        let mut newer = bytes;
        newer[6] = 17;
        assert!(read_layout(&newer[..]).unwrap_err().contains("1.17"));
    }

    #[test]
    fn the_layout_is_the_same_whatever_pieces_the_archive_comes_in() {
        let (bytes, _) = archive(&[b"1\tone\n", b"2\ttwo\n"]);
        let whole = read_layout(&bytes[..]).expect("a layout");
        for piece in [1, 3, 7, 64] {
            let mut reader = LayoutReader::new();
            for part in bytes.chunks(piece) {
                reader.push(part);
            }
            assert_eq!(
                reader.finish().expect("a layout"),
                whole,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn frames_give_back_the_rows_in_pieces_of_any_size_and_check_the_block() {
        let rows: [&[u8]; 3] = [b"1\tone\n", b"2\ttwo\n", b"3\tthree\n"];
        let (bytes, _) = archive(&rows);
        let layout = read_layout(&bytes[..]).expect("a layout");
        let block = &layout.blocks[0];
        let data = &bytes[block.start as usize..block.end as usize];
        for piece in [1, 2, 5, 7, 1000] {
            let mut frames = Frames::new(&layout, block);
            let mut got = bytes::BytesMut::new();
            for part in data.chunks(piece) {
                frames.push(part, &mut got).expect("frames");
            }
            frames.finish().expect("whole");
            assert_eq!(&got[..], &rows.concat()[..], "pieces of {piece}");
        }
        let mut short = Frames::new(&layout, block);
        short
            .push(&data[..data.len() - 2], &mut bytes::BytesMut::new())
            .expect("a prefix");
        assert!(short.finish().is_err());
        // Another table's block is not this one.
        let mut wrong = Frames::new(&layout, &layout.blocks[2]);
        assert!(wrong.push(data, &mut bytes::BytesMut::new()).is_err());
    }
}
