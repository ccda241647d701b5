//! The shapes stored in a repository (format version 1): packs, index records,
//! snapshot headers and trees. `docs/repository-format.md` describes the same, byte
//! for byte; change both together, and bump [`FORMAT_VERSION`] on any incompatible
//! change.

use serde::{Deserialize, Serialize};

use crate::crypto::keys::ChunkId;
use crate::inventory::SnapshotInfo;

/// The repository format version; every reader checks it before anything else.
pub const FORMAT_VERSION: u32 = 1;

/// Content-defined chunking bounds (FastCDC).
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// A pack is closed once it holds this many bytes of chunks.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
/// Room a pack's buffer keeps for its header (the key sets, a few hundred bytes
/// each), so that putting it in front moves the packets without a new buffer.
const PACK_HEADER_ROOM: usize = 64 * 1024;

pub const PACK_MAGIC: &[u8; 8] = b"BPPACK1\n";

/// `backplan.json`: marks a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub format: String,
    pub version: u32,
    pub created: chrono::DateTime<chrono::Utc>,
    pub chunker: Chunker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunker {
    pub algorithm: String,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Marker {
    pub fn new(now: chrono::DateTime<chrono::Utc>) -> Marker {
        Marker {
            format: "backplan".into(),
            version: FORMAT_VERSION,
            created: now,
            chunker: Chunker {
                algorithm: "fastcdc-2020".into(),
                min: CHUNK_MIN,
                avg: CHUNK_AVG,
                max: CHUNK_MAX,
            },
        }
    }
}

/// Where a chunk is: which pack, which key set of the pack, which bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: ChunkId,
    pub key_set: u16,
    pub offset: u64,
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// One pack as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    /// BLAKE3 of the pack's bytes, hex; the object is `packs/<id[..2]>/<id>`.
    pub id: String,
    pub size: u64,
    /// (offset, length) of each key set in the pack.
    pub key_sets: Vec<(u64, u32)>,
    pub chunks: Vec<ChunkRecord>,
}

impl PackRecord {
    pub fn path(&self) -> String {
        pack_path(&self.id)
    }
}

pub fn pack_path(id: &str) -> String {
    format!("packs/{}/{id}", &id[..2.min(id.len())])
}

/// The sealed body of an `index/<id>` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBody {
    pub packs: Vec<PackRecord>,
    /// Packs this object retires (ids): readers ignore every record of them, in any
    /// index object. A repair retires the lost packs whose chunks it wrote anew.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

/// The public header of `lost/<hash>`, body empty: what `verify` found lost in the
/// repository, for `plan` (which reads it with no key) to offer a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostHeader {
    pub format: u32,
    /// When this record was written.
    pub written: chrono::DateTime<chrono::Utc>,
    /// The host that wrote it.
    pub host: String,
    #[serde(flatten)]
    pub lost: crate::inventory::Lost,
}

/// The public header of the records of what happened in a repository, body empty:
/// a failed backup's code (`failures/<snapshot id>`), a `verify` run
/// (`verifies/<time>-<hash>`), a restore drill (`drills/<source>/<time>-<hash>`).
/// `backplan status` reads them with no key. Later builds may extend a record:
/// unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordHeader<R> {
    pub format: u32,
    /// When this record was written.
    pub written: chrono::DateTime<chrono::Utc>,
    /// The host that wrote it.
    pub host: String,
    #[serde(flatten)]
    pub record: R,
}

/// The public header of sealed objects: which repository key opens them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedHeader {
    pub format: u32,
    pub key_id: String,
}

/// The public header of `snapshots/<id>`: what `plan` reads, with no key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub format: u32,
    pub key_id: String,
    pub snapshot: SnapshotInfo,
    /// BLAKE3 of the `trees/<id>` object, so the pair cannot be mixed up.
    pub tree_hash: String,
    /// The snapshot's [`SnapshotInfo::size`]. Here rather than in `snapshot`,
    /// whose fields earlier readers check strictly: they ignore it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl SnapshotHeader {
    /// The snapshot as the inventory holds it: `snapshot` with the header's `size`.
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            size: self.size,
            ..self.snapshot.clone()
        }
    }
}

/// The public header of `catalog/<hash>`: copies of snapshot headers, so that reading
/// the inventory takes one object instead of one per snapshot. Only a cache: the
/// `snapshots/` objects stay the truth, and an entry counts only while its snapshot
/// object is listed (a pruned snapshot's entry is ignored until the next rewrite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogHeader {
    pub format: u32,
    /// Snapshot object path (`snapshots/<id>`) → that object's header.
    pub snapshots: std::collections::BTreeMap<String, SnapshotHeader>,
}

/// The public header of `policies/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyHeader {
    pub format: u32,
    pub key_id: String,
    pub digest: String,
    pub applied_at: chrono::DateTime<chrono::Utc>,
    /// The names of the policy's sources (public anyway, in snapshot headers): hosts
    /// or policies sharing a repository each compare their policy with the last one
    /// that backs up the same sources. Absent in records of earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// What one snapshot holds: entries in path order. Paths are relative, `/`-separated,
/// and never hold `..` (a restore refuses any that do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
    /// The backed-up folder itself (a `files` source): its mode, mtime, owner and
    /// extended attributes, restored onto the target. Its `path` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Entry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    #[default]
    File,
    Dir,
    Symlink,
}

/// One extended attribute (POSIX ACLs included: on Linux they are the attributes
/// `system.posix_acl_access` and `system.posix_acl_default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: String,
    /// The value's bytes, hex.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path, `/`-separated. When the path is not valid UTF-8, this is only its
    /// display form (each byte that is not UTF-8 as `\xNN`) and the field `path_bytes`
    /// holds the path itself.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    #[serde(default)]
    pub size: u64,
    /// Inode and ctime: with size and mtime, what tells an unchanged file.
    #[serde(default)]
    pub ino: u64,
    #[serde(default)]
    pub ctime: i64,
    #[serde(default)]
    pub ctime_ns: u32,
    /// A symlink's target; its display form when the target is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
    /// The path's bytes (hex in the tree), only when they are not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
    pub path_bytes: Option<Vec<u8>>,
    /// A symlink target's bytes (hex in the tree), only when they are not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_opt")]
    pub target_bytes: Option<Vec<u8>>,
    /// Owner and group, by number and (when the scanning host knew them) by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Hard-link group: files of one snapshot with the same number are one inode.
    /// Every member lists the same chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u64>,
    /// The file had holes (fewer bytes allocated than its size): a restore leaves
    /// runs of zeros unwritten.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sparse: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Entry {
    /// A regular file entry for a stream that a source produced rather than read from a
    /// file (a database dump, an RDB), private (`0600`) and stamped `at`.
    pub fn stream(
        path: impl Into<String>,
        size: u64,
        chunks: Vec<ChunkId>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o600,
            mtime: at.timestamp(),
            mtime_ns: at.timestamp_subsec_nanos(),
            size,
            chunks,
            ..Entry::default()
        }
    }

    /// The path's bytes.
    pub fn path_bytes(&self) -> &[u8] {
        self.path_bytes.as_deref().unwrap_or(self.path.as_bytes())
    }

    /// Sets the path from its bytes (and its display form).
    pub fn set_path_bytes(&mut self, bytes: Vec<u8>) {
        (self.path, self.path_bytes) = shown_and_raw(bytes);
    }

    /// A symlink target's bytes.
    pub fn target_bytes(&self) -> Option<&[u8]> {
        self.target_bytes
            .as_deref()
            .or(self.target.as_deref().map(str::as_bytes))
    }

    /// Sets a symlink's target from its bytes (and its display form).
    pub fn set_target_bytes(&mut self, bytes: Vec<u8>) {
        let (shown, raw) = shown_and_raw(bytes);
        (self.target, self.target_bytes) = (Some(shown), raw);
    }
}

/// The order of a tree's entries: paths compared component by component, as
/// [`std::path::Path`] orders them, so that a directory comes right before its
/// contents (`a`, `a/b`, `a.b`).
pub fn path_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let path = |p| std::path::Path::new(std::ffi::OsStr::from_bytes(p));
    path(a).cmp(path(b))
}

/// [`path_order`] of two entries.
pub fn entry_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    path_order(a.path_bytes(), b.path_bytes())
}

/// Bytes as text and, only when they are not UTF-8, the bytes themselves (the text
/// is then their display form, see [`escape_bytes`]).
fn shown_and_raw(bytes: Vec<u8>) -> (String, Option<Vec<u8>>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let bytes = e.into_bytes();
            (escape_bytes(&bytes), Some(bytes))
        }
    }
}

/// Bytes for people: valid UTF-8 as it is, every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("bad hex digits at {i}"))
        })
        .collect()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&super::to_hex(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| super::from_hex(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Splits a pack into its key sets and the byte range after them.
pub fn parse_pack_header(bytes: &[u8]) -> Result<Vec<(u64, u32)>, String> {
    if bytes.len() < 10 || &bytes[..8] != PACK_MAGIC {
        return Err("not a backplan pack (bad magic)".into());
    }
    let count = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let mut at = 10usize;
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let len_bytes = bytes
            .get(at..at + 4)
            .ok_or("the pack header is truncated")?;
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if at + len as usize > bytes.len() {
            return Err("the pack header is truncated".into());
        }
        sets.push((at as u64, len));
        at += len as usize;
    }
    Ok(sets)
}

/// Builds one pack in memory: key sets first, then chunk packets.
///
/// The header is written in front as soon as a chunk brings a key set the pack does
/// not hold yet (a backup's sealer has one, at its first chunk), so the finished
/// pack is the buffer as it stands: nothing is moved to put the header in front.
#[derive(Debug, Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    /// The key sets' hashes and their places, in the header's order.
    key_sets: Vec<(blake3::Hash, (u64, u32))>,
    /// Each chunk with its offset from the end of the header.
    chunks: Vec<(ChunkId, u16, u64, u32, u32)>,
}

impl PackBuilder {
    /// A builder writing into `bytes` (emptied first), say a spare buffer that still
    /// has a pack's capacity.
    pub fn with_buffer(mut bytes: Vec<u8>) -> PackBuilder {
        bytes.clear();
        PackBuilder {
            bytes,
            ..PackBuilder::default()
        }
    }

    /// Adds one encrypted chunk; `key_set` is the serialised PKESKs it needs.
    pub fn add(&mut self, id: ChunkId, key_set: &[u8], packet: &[u8], raw_length: u32) {
        let added = self.add_with(id, key_set, raw_length, |out| {
            out.extend_from_slice(packet);
            Ok::<(), std::convert::Infallible>(())
        });
        if let Err(never) = added {
            match never {}
        }
    }

    /// Adds one chunk whose packet `write` appends to the pack's bytes (a sealer
    /// lays it out there, see `KeySet::lay_out_into`); returns its place among the
    /// pack's chunks. Should `write` fail, the pack is as it was.
    pub fn add_with<E>(
        &mut self,
        id: ChunkId,
        key_set: &[u8],
        raw_length: u32,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E> {
        if self.bytes.capacity() == 0 {
            // Room for a full pack and its header at once: grown by doubling, the
            // buffer was copied four times over and, while it grew from 16 to 32 MiB,
            // held both (a backup's sealers peaked there).
            self.bytes
                .reserve_exact(PACK_TARGET + CHUNK_MAX as usize + PACK_HEADER_ROOM);
        }
        let key_set = self.key_set(key_set);
        let start = self.bytes.len();
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let header_len = self.header_len();
        self.chunks.push((
            id,
            key_set,
            (start - header_len) as u64,
            (self.bytes.len() - start) as u32,
            raw_length,
        ));
        Ok(self.chunks.len() - 1)
    }

    /// The packet of the chunk at `place`.
    pub fn packet(&self, place: usize) -> &[u8] {
        let (_, _, offset, length, _) = self.chunks[place];
        let at = self.header_len() + offset as usize;
        &self.bytes[at..at + length as usize]
    }

    /// The packets of the last `n` chunks, to be changed in place (encrypted where a
    /// sealer laid them out).
    pub fn last_packets_mut(&mut self, n: usize) -> Vec<&mut [u8]> {
        let header_len = self.header_len();
        let last = &self.chunks[self.chunks.len() - n..];
        let Some(&(_, _, first, _, _)) = last.first() else {
            return Vec::new();
        };
        let mut rest = &mut self.bytes[header_len + first as usize..];
        let mut packets = Vec::with_capacity(n);
        for &(_, _, _, length, _) in last {
            let (packet, after) = std::mem::take(&mut rest).split_at_mut(length as usize);
            packets.push(packet);
            rest = after;
        }
        packets
    }

    /// The place of `key_set` in the header, added there if it is new.
    fn key_set(&mut self, key_set: &[u8]) -> u16 {
        let hash = blake3::hash(key_set);
        if let Some(i) = self.key_sets.iter().position(|(h, _)| *h == hash) {
            return i as u16;
        }
        if self.bytes.is_empty() {
            self.bytes.extend_from_slice(PACK_MAGIC);
            self.bytes.extend_from_slice(&[0, 0]);
        }
        // A new key set goes at the header's end; the packets after it (if any: only
        // a copy mixes key sets) move along.
        let at = self.header_len();
        let mut entry = Vec::with_capacity(4 + key_set.len());
        entry.extend_from_slice(&(key_set.len() as u32).to_le_bytes());
        entry.extend_from_slice(key_set);
        self.bytes.splice(at..at, entry);
        self.key_sets
            .push((hash, ((at + 4) as u64, key_set.len() as u32)));
        let count = self.key_sets.len() as u16;
        self.bytes[8..10].copy_from_slice(&count.to_le_bytes());
        count - 1
    }

    /// The header's length: the magic, the count (10 bytes) and each key set with
    /// its length.
    fn header_len(&self) -> usize {
        self.key_sets
            .last()
            .map_or(10, |(_, (at, len))| *at as usize + *len as usize)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The pack's bytes and its index record.
    pub fn finish(self) -> (Vec<u8>, PackRecord) {
        let header_len = self.header_len() as u64;
        let chunks = self
            .chunks
            .into_iter()
            .map(|(id, key_set, offset, length, raw_length)| ChunkRecord {
                id,
                key_set,
                offset: header_len + offset,
                length,
                raw_length,
            })
            .collect();
        let record = PackRecord {
            id: blake3::hash(&self.bytes).to_hex().to_string(),
            size: self.bytes.len() as u64,
            key_sets: self.key_sets.into_iter().map(|(_, place)| place).collect(),
            chunks,
        };
        (self.bytes, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_records_point_at_their_packets_and_key_sets() {
        let mut b = PackBuilder::default();
        b.add(ChunkId([1; 32]), b"KEYSET-A", b"packet-one", 3);
        b.add(ChunkId([2; 32]), b"KEYSET-B", b"packet-two!", 4);
        b.add(ChunkId([3; 32]), b"KEYSET-A", b"thre?", 5);
        assert_eq!(b.packet(1), b"packet-two!");
        let mut last = b.last_packets_mut(2);
        assert_eq!(last.iter().map(|p| p.len()).collect::<Vec<_>>(), [11, 5]);
        last[1][4] = b'e';
        let (bytes, rec) = b.finish();
        assert_eq!(rec.size as usize, bytes.len());
        assert_eq!(rec.id, blake3::hash(&bytes).to_hex().to_string());
        assert_eq!(parse_pack_header(&bytes).expect("header"), rec.key_sets);
        let slice = |o: u64, l: u32| &bytes[o as usize..o as usize + l as usize];
        assert_eq!(slice(rec.key_sets[0].0, rec.key_sets[0].1), b"KEYSET-A");
        assert_eq!(slice(rec.key_sets[1].0, rec.key_sets[1].1), b"KEYSET-B");
        let c = rec.chunks[1];
        assert_eq!(slice(c.offset, c.length), b"packet-two!");
        assert_eq!(slice(rec.chunks[2].offset, rec.chunks[2].length), b"three");
        assert_eq!(c.key_set, 1);
        assert_eq!(rec.chunks[2].key_set, 0);
    }
}
