//! Garbage collection: what a prune does after deleting snapshots.

use std::collections::HashSet;

use super::mover::ChunkMover;
use super::store::{Index, Repo, damaged, index_objects};
use crate::crypto::keys::RepoKey;
use crate::error::Failure;

/// What a garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Packs deleted (repacked ones included).
    pub removed: usize,
    /// Packs whose live chunks moved into new packs.
    pub repacked: usize,
    /// New packs those chunks went into.
    pub written: usize,
}

/// A pack whose chunks still in use are less than this share of its bytes is
/// repacked by prune: its live chunks move to a new pack and it goes.
const REPACK_BELOW: f64 = 0.5;

/// Deletes packs no snapshot refers to, repacks those mostly unreferenced, and
/// compacts the index into one object. New packs and the new index are written before
/// anything old is deleted.
pub async fn gc(repo: &Repo, key: &RepoKey) -> Result<Collected, Failure> {
    let index: Index = repo.load_index(key).await?;
    let mut referenced = HashSet::new();
    for (_, header) in repo.snapshot_headers().await? {
        let header = header?;
        if header.key_id != key.id() {
            // A snapshot under another key: its references cannot be read, so no
            // pack may be collected.
            return Ok(Collected::default());
        }
        let id = &header.snapshot.id;
        let (_, tree) = repo.read_snapshot_packed(key, id).await?;
        for entry in tree.entries() {
            let entry = entry.map_err(|why| damaged(&repo.name, &format!("trees/{id}"), &why))?;
            referenced.extend(entry.chunks);
        }
    }
    let mut keep = Vec::new();
    let mut drop_packs = Vec::new();
    let mut mover = ChunkMover::default();
    let mut repacked = 0;
    for pack in index.packs() {
        let id = pack.id();
        let total: u64 = pack.chunks().map(|c| u64::from(c.length)).sum();
        let live: u64 = pack
            .chunks()
            .filter(|c| referenced.contains(&c.id))
            .map(|c| u64::from(c.length))
            .sum();
        if live == 0 {
            drop_packs.push(id.clone());
        } else if index.is_lost(id) {
            // Lost but still needed: it stays for a repair, and for salvage when no
            // other destination has its chunks.
            keep.push(pack.record());
        } else if (live as f64) < total as f64 * REPACK_BELOW {
            for c in pack.chunks().filter(|c| referenced.contains(&c.id)) {
                if let Some(loc) = index.locate(&c.id).filter(|l| l.pack == *id) {
                    mover.add(repo, &index, c.id, &loc, repo).await?;
                }
            }
            drop_packs.push(id.clone());
            repacked += 1;
        } else {
            keep.push(pack.record());
        }
    }
    let written = mover.finish(repo).await?;
    let new_packs = written.len();
    keep.extend(written);
    // Packs that no index lists: left by a crashed backup. Only when every index
    // could be read is it safe to say a pack is listed nowhere.
    let all_read = index.damaged.is_empty() && index.foreign.is_empty();
    let mut orphans = Vec::new();
    if all_read {
        // The packs just repacked into are in no index yet, and no orphans.
        let kept: HashSet<&str> = keep.iter().map(|r| r.id.as_str()).collect();
        for path in repo.pack_objects().await?.into_keys() {
            let id = path.rsplit('/').next().unwrap_or_default();
            if index.pack(id).is_none() && !kept.contains(id) {
                orphans.push(path);
            }
        }
    }
    keep.sort_by(|a, b| a.id.cmp(&b.id));
    let compact = index_objects(keep);
    if drop_packs.is_empty() && orphans.is_empty() && index.objects.len() <= compact.len() {
        return Ok(Collected::default());
    }
    let mut new_index = Vec::new();
    for packs in compact {
        new_index.extend(repo.put_index(key, packs).await?);
    }
    for old in &index.objects {
        if !new_index.contains(old) {
            repo.delete(old).await?;
        }
    }
    for id in &drop_packs {
        repo.delete(&super::format::pack_path(id)).await?;
    }
    for path in &orphans {
        repo.delete(path).await?;
    }
    Ok(Collected {
        removed: drop_packs.len() + orphans.len(),
        repacked,
        written: new_packs,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::error::Code;
    use crate::inventory::{SnapshotInfo, SnapshotStatus};
    use crate::repo::tree::PackedTree;

    fn info(id: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.to_string(),
            source: "data".to_string(),
            run_id: "run".to_string(),
            time: Utc::now(),
            finished: None,
            status: SnapshotStatus::Complete,
            bytes_read: None,
            bytes_stored: None,
            size: None,
            source_digest: None,
            policy_digest: None,
            retain_until: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tree_that_stops_decoding_fails_the_collection_and_names_its_object() {
        let op = opendal::Operator::new(opendal::services::Memory::default()).expect("memory");
        let repo = Repo::new("mem", op);
        let key = RepoKey::generate().expect("key");
        let good = PackedTree::default();
        repo.put_snapshot(&key, &info("s0"), &good)
            .await
            .expect("written");
        assert_eq!(
            gc(&repo, &key).await.expect("collects"),
            Collected::default()
        );
        // Framed, but its second entry is not an entry: found only by decoding it.
        let json = br#"{"entries":[{"path":"a","kind":"file","mode":420,"mtime":1,"mtime_ns":0},{"path":1}]}"#;
        let bad = PackedTree::new(zstd::encode_all(&json[..], 3).expect("zstd")).expect("framed");
        repo.put_snapshot(&key, &info("s1"), &bad)
            .await
            .expect("written");
        let failed = gc(&repo, &key).await.expect_err("a damaged tree");
        assert_eq!(failed.code, Code::CorruptObject);
        assert!(
            failed.message.contains("trees/s1") && failed.message.contains("invalid type"),
            "{}",
            failed.message
        );
    }
}
