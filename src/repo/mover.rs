//! Moving encrypted chunks between packs, within one repository (a prune's repack)
//! or from one destination's repository to another's (a copy, a repair).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::format::{PackBuilder, PackRecord};
use super::store::{Index, Location, PackRead, Repo};
use crate::crypto::keys::ChunkId;
use crate::error::{Code, Failure};

/// Moves encrypted chunks from the packs of one repository into new packs of another
/// (or the same), without decrypting: a chunk's SEIPD packet and the key set it needs
/// are copied as they are.
#[derive(Debug, Default)]
pub struct ChunkMover {
    builder: PackBuilder,
    written: Vec<PackRecord>,
    key_sets: HashMap<(Arc<str>, u16), Vec<u8>>,
    /// Read source packs whole, each checked against its name, rather than byte
    /// ranges: what goes to another destination is then known to be intact. Chunks
    /// should come pack by pack: one pack is kept at a time.
    whole: bool,
    /// The source pack read last, when reading whole.
    pack: Option<(Arc<str>, Vec<u8>)>,
    /// Packs damaged on the target: a new pack of the same name (the same bytes as
    /// the pack should have had) replaces them.
    replace: HashSet<String>,
}

impl ChunkMover {
    /// A mover between destinations: source packs read whole and checked.
    pub fn checked(replace: HashSet<String>) -> ChunkMover {
        ChunkMover {
            whole: true,
            replace,
            ..ChunkMover::default()
        }
    }

    pub async fn add(
        &mut self,
        from: &Repo,
        index: &Index,
        id: ChunkId,
        loc: &Location,
        to: &Repo,
    ) -> Result<(), Failure> {
        self.take(from, index, id, loc).await?;
        self.flush_full(to).await
    }

    /// Reads a chunk's packet and key set into the pack in the making. A source pack
    /// that cannot be read fails here, before anything of it is added.
    pub async fn take(
        &mut self,
        from: &Repo,
        index: &Index,
        id: ChunkId,
        loc: &Location,
    ) -> Result<(), Failure> {
        let path = super::format::pack_path(&loc.pack);
        let (off, len) = index.key_set(loc).ok_or_else(|| {
            Failure::new(
                Code::CorruptObject,
                format!(
                    "{}: pack {} has no key set {}",
                    from.name, loc.pack, loc.key_set
                ),
            )
        })?;
        if !self.whole {
            let set_key = (loc.pack.clone(), loc.key_set);
            if !self.key_sets.contains_key(&set_key) {
                let bytes = from.read_range(&path, off, len).await?;
                self.key_sets.insert(set_key.clone(), bytes);
            }
            let packet = from.read_range(&path, loc.offset, loc.length).await?;
            self.builder
                .add(id, &self.key_sets[&set_key], &packet, loc.raw_length);
            return Ok(());
        }
        if self.pack.as_ref().is_none_or(|(p, _)| *p != loc.pack) {
            let why = match from.read_pack(&loc.pack).await? {
                PackRead::Intact(bytes) => {
                    self.pack = Some((loc.pack.clone(), bytes));
                    None
                }
                PackRead::Missing => Some("it is missing".to_string()),
                PackRead::Damaged(why) => Some(why),
            };
            if let Some(why) = why {
                return Err(Failure::new(
                    Code::CorruptObject,
                    format!(
                        "destination {}: pack {path} cannot be copied: {why}",
                        from.name
                    ),
                ));
            }
        }
        let bytes = self
            .pack
            .as_ref()
            .map(|(_, b)| b.as_slice())
            .unwrap_or_default();
        let slice = |o: u64, l: u32| bytes.get(o as usize..o as usize + l as usize);
        let (Some(key_set), Some(packet)) = (slice(off, len), slice(loc.offset, loc.length)) else {
            return Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "destination {}: object {path} is damaged: it is shorter than the index says",
                    from.name
                ),
            ));
        };
        self.builder.add(id, key_set, packet, loc.raw_length);
        Ok(())
    }

    /// Writes the pack in the making once it is full.
    pub async fn flush_full(&mut self, to: &Repo) -> Result<(), Failure> {
        if self.builder.len() >= super::format::PACK_TARGET {
            let (bytes, record) = std::mem::take(&mut self.builder).finish();
            self.write(to, bytes, record).await?;
        }
        Ok(())
    }

    async fn write(
        &mut self,
        to: &Repo,
        bytes: Vec<u8>,
        record: PackRecord,
    ) -> Result<(), Failure> {
        if self.replace.contains(&record.id) {
            // Its bytes are not what it is named after: no reader can use them, and
            // a write that must not overwrite would keep them.
            to.delete(&record.path()).await?;
        }
        to.put_pack(bytes, &record).await?;
        self.written.push(record);
        Ok(())
    }

    /// Writes the last pack; returns every pack written.
    pub async fn finish(mut self, to: &Repo) -> Result<Vec<PackRecord>, Failure> {
        if !self.builder.is_empty() {
            let (bytes, record) = std::mem::take(&mut self.builder).finish();
            self.write(to, bytes, record).await?;
        }
        Ok(self.written)
    }
}
