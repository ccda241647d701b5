//! What `backplan verify` checks in one repository: every snapshot's chunks are in
//! the index, every indexed pack exists with its size; with a fraction to read back,
//! those packs are read, checked against their names, and every chunk decrypted and
//! re-hashed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Failure;
use crate::inventory::SnapshotStatus;
use crate::pipeline::crypto::SecretKeys;
use crate::pipeline::fetch::RepoFetcher;
use crate::repo::format::pack_path;
use crate::repo::key_for;
use crate::repo::keys::RepoKey;
use crate::repo::store::{Index, Repo};
use crate::sources::ChunkSource;

/// The findings for one destination.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub destination: String,
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    /// Restore tests that ran (`--restore-test`).
    pub restore_tests: Vec<String>,
    /// Problems per snapshot id ("" for problems of no single snapshot).
    pub problems: BTreeMap<String, Vec<String>>,
    /// Why the destination was not verified at all (its lock could not be taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_verified: Option<String>,
}

/// Checks one repository; `fraction` of its packs are read back with `secret`.
pub async fn check(
    repo: &Repo,
    host: Option<&RepoKey>,
    secret: Option<Arc<SecretKeys>>,
    fraction: Option<f64>,
) -> Findings {
    let mut f = Findings {
        destination: repo.name.clone(),
        ..Findings::default()
    };
    let note = |f: &mut Findings, snapshot: &str, p: String| {
        f.problems.entry(snapshot.to_string()).or_default().push(p);
    };
    match repo.marker().await {
        Ok(Some(_)) => {}
        Ok(None) => return f,
        Err(e) => {
            note(&mut f, "", e.message);
            return f;
        }
    }
    let headers = match repo.scan_headers().await {
        Ok(scan) => {
            for (path, why) in scan.damaged_catalogs {
                note(
                    &mut f,
                    "",
                    format!("{path} is damaged: {why}; the next apply rewrites it"),
                );
            }
            scan.headers
        }
        Err(e) => {
            note(&mut f, "", e.message);
            return f;
        }
    };
    // One key and one index per repository key id the snapshots name.
    let mut opened: HashMap<String, (RepoKey, Arc<Index>)> = HashMap::new();
    for (path, header) in headers {
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                note(&mut f, "", format!("{path}: {}", e.message));
                continue;
            }
        };
        f.snapshots += 1;
        let id = header.snapshot.id.clone();
        if header.snapshot.status == SnapshotStatus::Failed {
            continue;
        }
        if !opened.contains_key(&header.key_id) {
            let result = async {
                let key = key_for(repo, &header.key_id, host, secret.as_deref()).await?;
                let index = repo.load_index(&key).await?;
                Ok::<_, Failure>((key, Arc::new(index)))
            }
            .await;
            match result {
                Ok(pair) => {
                    opened.insert(header.key_id.clone(), pair);
                }
                Err(e) => {
                    note(&mut f, &id, e.message);
                    continue;
                }
            }
        }
        let (key, index) = &opened[&header.key_id];
        match repo.read_snapshot(key, &id).await {
            Ok((actual, _)) if actual != header => note(
                &mut f,
                &id,
                format!("the snapshot catalog's copy of snapshots/{id} differs from the object"),
            ),
            Ok((_, tree)) => {
                let chunks: HashSet<_> =
                    tree.entries.iter().flat_map(|e| e.chunks.iter()).collect();
                let missing = chunks
                    .iter()
                    .filter(|c| !index.chunks.contains_key(**c))
                    .count();
                if missing > 0 {
                    note(&mut f, &id, format!("{missing} chunk(s) are in no pack"));
                }
            }
            Err(e) => note(&mut f, &id, e.message),
        }
    }
    let stored = match repo.pack_objects().await {
        Ok(s) => s,
        Err(e) => {
            note(&mut f, "", e.message);
            return f;
        }
    };
    for (key, index) in opened.values() {
        for d in &index.damaged {
            note(&mut f, "", format!("index object {d}"));
        }
        f.packs += index.packs.len();
        for (id, record) in &index.packs {
            match stored.get(&pack_path(id)) {
                None => note(&mut f, "", format!("pack {} is missing", pack_path(id))),
                Some(size) if *size != record.size => note(
                    &mut f,
                    "",
                    format!(
                        "pack {} has {size} bytes, the index says {}",
                        pack_path(id),
                        record.size
                    ),
                ),
                Some(_) => {}
            }
        }
        let (Some(fraction), Some(secret)) = (fraction, &secret) else {
            continue;
        };
        let mut packs: Vec<&Arc<str>> = index.packs.keys().collect();
        packs.sort();
        let take = ((packs.len() as f64) * fraction).ceil() as usize;
        // A random sample, so that repeated partial runs cover everything in time.
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let start = if packs.is_empty() {
            0
        } else {
            u64::from_le_bytes(seed) as usize % packs.len()
        };
        let sample: Vec<Arc<str>> = packs
            .iter()
            .cycle()
            .skip(start)
            .take(take.min(packs.len()))
            .map(|p| (*p).clone())
            .collect();
        let mut fetcher = RepoFetcher::new(
            repo.clone(),
            index.clone(),
            key,
            secret.clone(),
            tokio::runtime::Handle::current(),
        );
        let index2 = index.clone();
        let problems = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            for pack in sample {
                let Some(record) = index2.packs.get(&pack) else {
                    continue;
                };
                for c in &record.chunks {
                    if let Err(e) = fetcher.fetch(&c.id) {
                        problems.push(e);
                        break;
                    }
                }
            }
            problems
        })
        .await
        .unwrap_or_else(|e| vec![e.to_string()]);
        f.packs_read += take.min(packs.len());
        for p in problems {
            note(&mut f, "", p);
        }
    }
    f
}
