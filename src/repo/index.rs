//! The repository's index in memory: where every chunk is, in a compact form whose
//! size is a fixed number of bytes per chunk ([`Index::heap_bytes`]).
//!
//! Every chunk record of every listed pack is one 48-byte [`Record`] in one `Vec`,
//! pack after pack, and a second `Vec` of 4-byte positions sorted by chunk id finds a
//! chunk by binary search, within the few positions a directory by the ids' first
//! bits points at: 52 bytes per chunk (and at most half a byte of directory), where a
//! hash map of ids to locations and the packs' own record lists cost about 200. Packs
//! are a small table of their own (id, size, key sets, where their records start), a
//! few hundred bytes per pack of up to 16 MiB. Index objects are added pack by pack
//! ([`Index::read_object`]): no object's record list is ever held whole, and a large
//! object's JSON text neither.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::format::{ChunkRecord, PackRecord};
use crate::crypto::keys::ChunkId;
use crate::inventory::Lost;

/// Where a chunk is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub pack: Arc<str>,
    pub key_set: u16,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
    /// The pack's place in the index's table, for its key sets.
    slot: u32,
}

/// One chunk record: 48 bytes. The offset is split in two (48 bits in all, far beyond
/// any pack) so that the record needs no padding.
#[derive(Debug, Clone, Copy)]
struct Record {
    id: [u8; 32],
    offset_low: u32,
    length: u32,
    raw_length: u32,
    key_set: u16,
    offset_high: u16,
}

/// The bytes one chunk costs in the index: its record and its place in the sorted
/// positions.
pub const BYTES_PER_CHUNK: usize = std::mem::size_of::<Record>() + std::mem::size_of::<u32>();
const _: () = assert!(std::mem::size_of::<Record>() == 48);

/// The largest offset a record holds (2^48 - 1).
const MAX_OFFSET: u64 = (1 << 48) - 1;

impl Record {
    fn new(c: &ChunkRecord) -> Option<Record> {
        (c.offset <= MAX_OFFSET).then_some(Record {
            id: c.id.0,
            offset_low: c.offset as u32,
            length: c.length,
            raw_length: c.raw_length,
            key_set: c.key_set,
            offset_high: (c.offset >> 32) as u16,
        })
    }

    fn offset(&self) -> u64 {
        u64::from(self.offset_high) << 32 | u64::from(self.offset_low)
    }

    fn chunk(&self) -> ChunkRecord {
        ChunkRecord {
            id: ChunkId(self.id),
            key_set: self.key_set,
            offset: self.offset(),
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// One pack the index lists.
#[derive(Debug, Clone)]
struct Pack {
    id: Arc<str>,
    size: u64,
    key_sets: Vec<(u64, u32)>,
    /// Its records are `records[start..start + count]`.
    start: u32,
    count: u32,
    /// `lost/` records it: its chunks are found nowhere.
    lost: bool,
}

/// A pack as the index lists it.
#[derive(Debug, Clone, Copy)]
pub struct PackView<'a> {
    index: &'a Index,
    pack: &'a Pack,
}

impl<'a> PackView<'a> {
    pub fn id(&self) -> &'a Arc<str> {
        &self.pack.id
    }

    pub fn size(&self) -> u64 {
        self.pack.size
    }

    /// Its chunk records, in the order the index object lists them.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkRecord> + 'a {
        let start = self.pack.start as usize;
        self.index.records[start..start + self.pack.count as usize]
            .iter()
            .map(Record::chunk)
    }

    /// The record an index object holds for it.
    pub fn record(&self) -> PackRecord {
        PackRecord {
            id: self.pack.id.to_string(),
            size: self.pack.size,
            key_sets: self.pack.key_sets.clone(),
            chunks: self.chunks().collect(),
        }
    }
}

/// Every pack and chunk the repository's index objects list.
#[derive(Default, Clone)]
pub struct Index {
    /// Every chunk record, pack after pack (`Pack::start`).
    records: Vec<Record>,
    /// Positions in `records`, sorted by chunk id, then position.
    by_id: Vec<u32>,
    /// Where in `by_id` the ids of each value of their first `bits` bits start (and,
    /// last, the end): a lookup searches about 8 positions, not all of them. Chunk ids
    /// are keyed hashes, spread evenly.
    directory: Vec<u32>,
    bits: u32,
    /// Every pack the index objects list, lost ones included, retired ones not, in
    /// the order their records come.
    packs: Vec<Pack>,
    /// Pack id → its place in `packs`.
    pack_slots: HashMap<Arc<str>, u32>,
    /// What the `lost/` objects record.
    pub lost: Lost,
    /// The `lost/` objects read, so that a repair can replace them.
    pub lost_objects: Vec<String>,
    /// Packs an index object retires.
    pub retired: HashSet<String>,
    /// The ids of `lost.packs`, for lookups.
    lost_ids: HashSet<String>,
    /// The `index/` objects read, so a compaction can delete them afterwards.
    pub objects: Vec<String>,
    /// Index objects written under another repository key.
    pub foreign: Vec<String>,
    /// Index objects that could not be read, with why.
    pub damaged: Vec<String>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("chunks", &self.records.len())
            .field("packs", &self.packs.len())
            .field("lost", &self.lost)
            .field("objects", &self.objects.len())
            .field("foreign", &self.foreign)
            .field("damaged", &self.damaged)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An index that knows what `lost/` records, before any index object is read.
    pub fn new(lost: Lost, lost_objects: Vec<String>) -> Index {
        Index {
            lost_ids: lost.packs.iter().map(|p| p.id.clone()).collect(),
            lost,
            lost_objects,
            ..Index::default()
        }
    }

    /// Adds the packs of one index object's body, read from `json` pack by pack: the
    /// whole text ([`SliceRead`]) or a stream of it ([`IoRead`]), for an object too
    /// large to hold. `Err(why)`: nothing of it was added (it does not parse, or lists
    /// a chunk that no record can hold).
    ///
    /// [`SliceRead`]: serde_json::de::SliceRead
    /// [`IoRead`]: serde_json::de::IoRead
    pub fn read_object<'de>(
        &mut self,
        path: String,
        json: impl serde_json::de::Read<'de>,
    ) -> Result<(), String> {
        let (records, packs) = (self.records.len(), self.packs.len());
        let mut retired = Vec::new();
        let mut de = serde_json::Deserializer::new(json);
        let read = BodySeed {
            index: self,
            retired: &mut retired,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        match read {
            Ok(()) => {
                self.retired.extend(retired);
                self.objects.push(path);
                Ok(())
            }
            Err(e) => {
                // Nothing of a damaged object counts.
                for p in self.packs.drain(packs..) {
                    self.pack_slots.remove(&p.id);
                }
                self.records.truncate(records);
                Err(e.to_string())
            }
        }
    }

    /// Adds a pack's record; its chunks are found in it unless the pack is lost (or
    /// another pack gave them first: equal chunks are equal wherever they are).
    fn add(&mut self, record: PackRecord) -> Result<(), String> {
        if self.pack_slots.contains_key(record.id.as_str()) {
            // Listed by another index object too (a compaction's new object beside
            // the old ones): the same pack, the same records.
            return Ok(());
        }
        let start = u32::try_from(self.records.len())
            .ok()
            .filter(|s| s.checked_add(record.chunks.len() as u32).is_some())
            .ok_or("the index lists more than 4 294 967 295 chunks")?;
        for c in &record.chunks {
            let r = Record::new(c).ok_or_else(|| {
                format!("pack {} lists a chunk at offset {}", record.id, c.offset)
            })?;
            self.records.push(r);
        }
        let id: Arc<str> = Arc::from(record.id.as_str());
        self.pack_slots.insert(id.clone(), self.packs.len() as u32);
        self.packs.push(Pack {
            lost: self.is_lost(&id),
            id,
            size: record.size,
            key_sets: record.key_sets,
            start,
            count: record.chunks.len() as u32,
        });
        Ok(())
    }

    /// Drops the packs an index object retires, and sorts the chunks for lookups:
    /// once every index object is read.
    pub fn finish(&mut self) {
        if self.packs.iter().any(|p| self.retired.contains(&*p.id)) {
            let mut next = 0usize;
            let mut kept = Vec::with_capacity(self.packs.len());
            for mut p in std::mem::take(&mut self.packs) {
                if self.retired.contains(&*p.id) {
                    continue;
                }
                let start = p.start as usize;
                self.records
                    .copy_within(start..start + p.count as usize, next);
                p.start = next as u32;
                next += p.count as usize;
                kept.push(p);
            }
            self.records.truncate(next);
            self.packs = kept;
            self.pack_slots = self
                .packs
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.clone(), i as u32))
                .collect();
        }
        self.records.shrink_to_fit();
        self.packs.shrink_to_fit();
        let records = &self.records;
        let mut by_id: Vec<u32> = (0..records.len() as u32).collect();
        by_id.sort_unstable_by(|a, b| {
            (&records[*a as usize].id, a).cmp(&(&records[*b as usize].id, b))
        });
        // About 8 ids a bucket: at most half a byte per chunk.
        self.bits = (records.len() / 8).max(1).ilog2().min(24);
        let buckets = 1usize << self.bits;
        let mut directory = Vec::with_capacity(buckets + 1);
        let mut next = 0;
        for bucket in 0..buckets {
            while next < by_id.len() && self.bucket(&records[by_id[next] as usize].id) < bucket {
                next += 1;
            }
            directory.push(next as u32);
        }
        directory.push(by_id.len() as u32);
        self.by_id = by_id;
        self.directory = directory;
    }

    /// The directory's bucket of an id: its first `bits` bits.
    fn bucket(&self, id: &[u8; 32]) -> usize {
        let top = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        top.checked_shr(32 - self.bits).unwrap_or(0) as usize
    }

    /// The heap bytes that grow with the number of chunks: the records, their sorted
    /// positions and the directory into them, by capacity ([`BYTES_PER_CHUNK`] per
    /// chunk, and at most half a byte more for the directory, once read). The pack
    /// table and the lost and retired lists are left out: they grow with packs (each
    /// up to 16 MiB of chunks), not chunks.
    pub fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + (self.by_id.capacity() + self.directory.capacity()) * std::mem::size_of::<u32>()
    }

    /// How many chunk records the index holds (a chunk in two packs counts twice).
    pub fn chunk_records(&self) -> usize {
        self.records.len()
    }

    /// The pack a record position is in.
    fn slot_of(&self, position: u32) -> u32 {
        (self.packs.partition_point(|p| p.start <= position) - 1) as u32
    }

    /// The positions of every record of `id`, in the order the packs were read.
    fn records_of<'a>(&'a self, id: &'a ChunkId) -> impl Iterator<Item = u32> + 'a {
        let bucket = self.bucket(&id.0);
        // Empty until `finish`.
        let (start, end) = match self.directory.get(bucket..bucket + 2) {
            Some([start, end]) => (*start as usize, *end as usize),
            _ => (0, 0),
        };
        let candidates = &self.by_id[start..end];
        let first = candidates.partition_point(|p| self.records[*p as usize].id < id.0);
        candidates[first..]
            .iter()
            .copied()
            .take_while(move |p| self.records[*p as usize].id == id.0)
    }

    /// Where a chunk is read from: never from a pack `lost/` records or an index
    /// object retires, so that a chunk a repair wrote anew is found in its new pack,
    /// and a backup stores again what it would otherwise take as present.
    pub fn locate(&self, id: &ChunkId) -> Option<Location> {
        self.records_of(id).find_map(|position| {
            let slot = self.slot_of(position);
            let pack = &self.packs[slot as usize];
            if pack.lost {
                return None;
            }
            let r = &self.records[position as usize];
            Some(Location {
                pack: pack.id.clone(),
                key_set: r.key_set,
                offset: r.offset(),
                length: r.length,
                raw_length: r.raw_length,
                slot,
            })
        })
    }

    /// Whether a chunk is stored in a pack that is not lost: a backup sends it no more.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.records_of(id)
            .any(|position| !self.packs[self.slot_of(position) as usize].lost)
    }

    /// The lost pack a chunk is in, when no other pack holds it: what verify and a
    /// repair need to tell which lost packs a snapshot uses.
    pub fn lost_pack_of(&self, id: &ChunkId) -> Option<&Arc<str>> {
        if self.contains(id) {
            return None;
        }
        self.records_of(id)
            .map(|position| &self.packs[self.slot_of(position) as usize])
            .find(|p| p.lost)
            .map(|p| &p.id)
    }

    /// Whether `lost/` records pack `id` as missing or damaged.
    pub fn is_lost(&self, id: &str) -> bool {
        self.lost_ids.contains(id)
    }

    /// The key set's byte range of a chunk's pack.
    pub fn key_set(&self, loc: &Location) -> Option<(u64, u32)> {
        self.packs
            .get(loc.slot as usize)
            .filter(|p| p.id == loc.pack)
            .and_then(|p| p.key_sets.get(loc.key_set as usize).copied())
    }

    /// Every pack the index lists, lost ones included, in the order they were read.
    pub fn packs(&self) -> impl Iterator<Item = PackView<'_>> {
        self.packs.iter().map(|pack| PackView { index: self, pack })
    }

    /// The pack `id`, when the index lists it.
    pub fn pack(&self, id: &str) -> Option<PackView<'_>> {
        self.pack_slots.get(id).map(|slot| PackView {
            index: self,
            pack: &self.packs[*slot as usize],
        })
    }

    /// How many packs the index lists.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
}

/// Reads an index object's body (`{"packs":[…],"retired":[…]}`) into the index.
struct BodySeed<'a> {
    index: &'a mut Index,
    retired: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an index body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "packs" => map.next_value_seed(PacksSeed(&mut *self.index))?,
                "retired" => self.retired.extend(map.next_value::<Vec<String>>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `packs` list: each pack is added as it is read, and its record dropped.
struct PacksSeed<'a>(&'a mut Index);

impl<'de> DeserializeSeed<'de> for PacksSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PacksSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of packs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<PackRecord>()? {
            self.0.add(record).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::RepoKey;
    use crate::inventory::{LostPack, PackState};
    use crate::repo::format::IndexBody;
    use serde_json::de::{IoRead, SliceRead};

    /// Packs of `per_pack` chunks with real chunk ids (the keyed hash of `from..to`).
    fn packs(key: &RepoKey, from: u64, to: u64, per_pack: u64) -> Vec<PackRecord> {
        let hasher = key.chunk_id();
        (from..to)
            .step_by(per_pack as usize)
            .map(|first| PackRecord {
                id: blake3::hash(&first.to_le_bytes()).to_hex().to_string(),
                size: 1 << 24,
                key_sets: vec![(10, 500), (510, 500)],
                chunks: (first..to.min(first + per_pack))
                    .map(|n| ChunkRecord {
                        id: hasher.id(&n.to_le_bytes()),
                        key_set: (n % 2) as u16,
                        offset: 1010 + (n - first) * 9000,
                        length: 9000,
                        raw_length: 10_000 + n as u32 % 7,
                    })
                    .collect(),
            })
            .collect()
    }

    fn json(packs: Vec<PackRecord>, retired: Vec<String>) -> Vec<u8> {
        serde_json::to_vec(&IndexBody { packs, retired }).expect("json")
    }

    fn text(json: &[u8]) -> SliceRead<'_> {
        SliceRead::new(json)
    }

    #[test]
    fn two_hundred_thousand_chunks_cost_at_most_53_bytes_each_and_are_all_found() {
        const N: u64 = 200_000;
        let key = RepoKey::generate().expect("key");
        let written = packs(&key, 0, N, 1000);
        let mut index = Index::default();
        // Two objects, as two backups write them: one read whole, one as a stream.
        let (first, second) = written.split_at(120);
        index
            .read_object("index/a".into(), text(&json(first.to_vec(), Vec::new())))
            .expect("first object");
        let second = json(second.to_vec(), Vec::new());
        let stream = IoRead::new(&second[..]);
        index
            .read_object("index/b".into(), stream)
            .expect("second object");
        index.finish();

        assert_eq!(index.chunk_records(), N as usize);
        assert_eq!(BYTES_PER_CHUNK, 52);
        // And at most half a byte for the directory.
        assert!(
            index.heap_bytes() <= N as usize * BYTES_PER_CHUNK + N as usize / 2 + 4,
            "{} bytes for {N} chunks",
            index.heap_bytes()
        );
        // The bound docs/benchmarks.md gives: 64 bytes per chunk.
        assert!(index.heap_bytes() <= N as usize * 64);

        assert_eq!(index.pack_count(), written.len());
        for pack in &written {
            for c in &pack.chunks {
                let loc = index.locate(&c.id).expect("an inserted chunk");
                assert_eq!(&*loc.pack, pack.id.as_str());
                assert_eq!(
                    (loc.key_set, loc.offset, loc.length, loc.raw_length),
                    (c.key_set, c.offset, c.length, c.raw_length)
                );
                assert_eq!(index.key_set(&loc), Some(pack.key_sets[c.key_set as usize]));
                assert!(index.contains(&c.id));
            }
            let view = index.pack(&pack.id).expect("the pack");
            assert_eq!(view.record(), *pack);
        }
        let hasher = key.chunk_id();
        for n in N..N + 10_000 {
            let absent = hasher.id(&n.to_le_bytes());
            assert!(!index.contains(&absent));
            assert_eq!(index.locate(&absent), None);
            assert_eq!(index.lost_pack_of(&absent), None);
        }
    }

    #[test]
    fn a_lost_packs_chunks_are_found_only_in_other_packs_and_a_retired_pack_is_gone() {
        let key = RepoKey::generate().expect("key");
        let mut all = packs(&key, 0, 30, 10);
        // The third pack holds the first pack's chunks again (a repair wrote them).
        let mut copy = all[0].clone();
        copy.id = "cc".repeat(32);
        all.push(copy);
        let (lost_pack, other, copy) = (all[0].id.clone(), all[1].id.clone(), all[3].id.clone());
        let lost = Lost {
            found: None,
            packs: vec![
                LostPack {
                    id: lost_pack.clone(),
                    state: PackState::Missing,
                    why: "it is missing".into(),
                },
                LostPack {
                    id: other.clone(),
                    state: PackState::Damaged,
                    why: "its content does not match its name".into(),
                },
            ],
            snapshots: Vec::new(),
        };
        let mut index = Index::new(lost, Vec::new());
        index
            .read_object("index/a".into(), text(&json(all.clone(), Vec::new())))
            .expect("object");
        index.finish();
        let first = all[0].chunks[0].id;
        assert_eq!(
            &*index.locate(&first).expect("in the copy").pack,
            copy.as_str()
        );
        assert_eq!(index.lost_pack_of(&first), None);
        let only_lost = all[1].chunks[0].id;
        assert!(!index.contains(&only_lost));
        assert_eq!(index.locate(&only_lost), None);
        assert_eq!(
            index.lost_pack_of(&only_lost).map(|p| &**p),
            Some(other.as_str())
        );
        assert!(index.pack(&lost_pack).is_some() && index.is_lost(&lost_pack));

        // An object that retires the copy: its chunks are in a lost pack only, and the
        // packs after it are still found where they are.
        let mut index = Index::default();
        index
            .read_object("index/a".into(), text(&json(all.clone(), Vec::new())))
            .expect("object");
        index
            .read_object(
                "index/b".into(),
                text(&json(Vec::new(), vec![all[1].id.clone()])),
            )
            .expect("retiring object");
        index.finish();
        assert!(index.pack(&all[1].id).is_none());
        assert_eq!(index.pack_count(), 3);
        assert_eq!(index.chunk_records(), 30);
        assert_eq!(index.locate(&only_lost), None);
        for pack in [&all[0], &all[2], &all[3]] {
            assert_eq!(index.pack(&pack.id).expect("kept").record(), *pack);
        }
        let last = all[2].chunks[9];
        let loc = index.locate(&last.id).expect("after the retired pack");
        assert_eq!((&*loc.pack, loc.offset), (all[2].id.as_str(), last.offset));
        assert_eq!(index.objects, ["index/a", "index/b"]);
    }

    #[test]
    fn a_damaged_object_adds_nothing_and_a_pack_listed_twice_counts_once() {
        let key = RepoKey::generate().expect("key");
        let all = packs(&key, 0, 20, 10);
        let mut index = Index::default();
        index
            .read_object("index/a".into(), text(&json(all[..1].to_vec(), Vec::new())))
            .expect("object");
        // Both packs, then a cut: the whole object is left out.
        let whole = json(all.clone(), vec!["dd".repeat(32)]);
        let cut = IoRead::new(&whole[..whole.len() - 40]);
        assert!(index.read_object("index/b".into(), cut).is_err());
        // A chunk at an offset no record holds.
        let mut far = all[1].clone();
        far.chunks[3].offset = 1 << 50;
        let err = index
            .read_object("index/c".into(), text(&json(vec![far], Vec::new())))
            .expect_err("refused");
        assert!(err.contains("offset"), "{err}");
        // The first pack again, beside the second.
        index
            .read_object("index/d".into(), text(&json(all.clone(), Vec::new())))
            .expect("object");
        index.finish();
        assert_eq!(index.objects, ["index/a", "index/d"]);
        assert_eq!(index.pack_count(), 2);
        assert_eq!(index.chunk_records(), 20);
        assert!(index.retired.is_empty());
        for pack in &all {
            for c in &pack.chunks {
                assert_eq!(&*index.locate(&c.id).expect("found").pack, pack.id.as_str());
            }
        }
    }
}
