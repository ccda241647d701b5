//! What `backplan verify` checks in one repository, and what it records of it.
//!
//! [`check`]: every snapshot's chunks are in the index, every indexed pack exists
//! with its size; with a fraction to read back, those packs are read, checked against
//! their names, and every chunk decrypted and re-hashed. Packs found missing or
//! damaged, and the snapshots that need their chunks, are gathered as [`Lost`];
//! [`record`] stores that in the repository (`lost/`), where `plan` finds it with no
//! key and offers a repair from another destination. [`check_keys`]: every copy of
//! the repository key is whole, to the policy's recipients, and (with a secret key)
//! opens to the key it is named after. [`check_databases`]: the newest good snapshot
//! of each source whose kind reads its snapshots as its server would (postgres,
//! redis), checked through the kind's seam. [`record_run`] records each run and its
//! result (`verifies/`) for `status`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::keys::{ChunkId, RepoKey};
use crate::crypto::{Recipients, SecretKeys};
use crate::error::{Code, Failure};
use crate::inventory::{CheckResult, Lost, LostPack, PackState, SnapshotStatus, VerifyRecord};
use crate::pipeline::ChunkSource;
use crate::pipeline::fetch::RepoFetcher;
use crate::repo::format::pack_path;
use crate::repo::key_for;
use crate::repo::s3lock::{DefaultRetention, ObjectLockApi};
use crate::repo::store::{Index, PackRead, Repo};
use crate::restore::execute::SnapshotData;
use crate::sources::kind::{Checked, Kind};

/// The findings for one destination.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub destination: String,
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    /// Repository key copies (`keys/<id>`) checked ([`check_keys`]), and how many of
    /// them were opened with the secret key.
    pub key_copies: usize,
    pub key_copies_opened: usize,
    /// The database sources' newest snapshots, read as their servers would read
    /// them (`--read-data`, `--restore-test`).
    pub database_checks: Vec<DatabaseCheck>,
    /// Problems per snapshot id ("" for problems of no single snapshot), each with
    /// its code (`{code, message, help}` in JSON).
    pub problems: BTreeMap<String, Vec<Failure>>,
    /// Packs found missing or damaged, and the snapshots that need chunks the
    /// destination cannot give: what [`record`] stores for a repair.
    #[serde(skip_serializing_if = "Lost::is_empty")]
    pub lost: Lost,
    /// On a destination with S3 Object Lock: packs whose lock (their write time plus
    /// the lock period) ends before a snapshot using them stops being protected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub short_locks: Vec<ShortLock>,
    /// On a destination with S3 Object Lock: how many packs' retention was read from
    /// the objects themselves (a HEAD); the others' is derived from their
    /// Last-Modified plus the lock period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locks_read: Option<usize>,
    /// On a destination with S3 Object Lock: the bucket's default retention, read
    /// back and compared with `object_lock.retain_for`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_lock: Option<BucketLock>,
    /// What [`record`] did, when it did something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// Why the destination was not verified at all (its lock could not be taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_verified: Option<String>,
    /// Whether every index and the pack listing could be read: only then is `lost`
    /// the whole truth, and may replace what was recorded before.
    #[serde(skip)]
    complete: bool,
    /// What `lost/` held when the check began, and its objects (`readable` of them).
    #[serde(skip)]
    reported: Lost,
    #[serde(skip)]
    reports: Vec<String>,
    #[serde(skip)]
    readable_reports: usize,
    /// The repository key ids the snapshots name: each needs its copy in `keys/`.
    #[serde(skip)]
    key_ids: BTreeSet<String>,
}

impl Findings {
    /// The findings for a destination that could not be verified at all, and why.
    pub fn not_verified(destination: &str, why: &str) -> Findings {
        Findings {
            destination: destination.to_string(),
            not_verified: Some(why.to_string()),
            ..Findings::default()
        }
    }

    /// The problems found: those of the repository and of its database checks.
    pub fn problem_count(&self) -> usize {
        let checks: usize = self
            .database_checks
            .iter()
            .map(|c| match &c.checked {
                Ok(checked) => checked.differences(),
                Err(_) => 1,
            })
            .sum();
        self.problems.values().map(Vec::len).sum::<usize>() + checks
    }

    fn note(&mut self, snapshot: &str, problem: Failure) {
        self.problems
            .entry(snapshot.to_string())
            .or_default()
            .push(problem);
    }
}

/// One source's newest good snapshot read as its server would read it: what was
/// found, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseCheck {
    pub source: String,
    pub snapshot: String,
    #[serde(with = "checked_or_error")]
    pub checked: Result<Checked, Failure>,
}

/// `checked` in JSON: what was found, or `{"error": {code, message, help}}`.
mod checked_or_error {
    use serde::{Serialize, Serializer};

    use crate::error::Failure;
    use crate::sources::kind::Checked;

    pub fn serialize<S: Serializer>(
        value: &Result<Checked, Failure>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Error<'a> {
            error: &'a Failure,
        }
        match value {
            Ok(checked) => checked.serialize(s),
            Err(error) => Error { error }.serialize(s),
        }
    }
}

/// Reads the newest good snapshot of each source whose kind checks its snapshots
/// (a postgres archive listed by `pg_restore --list`, and with `restore` restored
/// into a scratch database and compared by row counts; a Redis RDB parsed whole and
/// its keys counted against those recorded).
pub async fn check_databases(
    policy: &crate::policy::Policy,
    repo: &Repo,
    host: Option<&RepoKey>,
    secret: Arc<SecretKeys>,
    restore: bool,
    f: &mut Findings,
) {
    let Ok(headers) = repo.snapshot_headers().await else {
        return;
    };
    for (name, source) in &policy.sources {
        let newest = headers
            .iter()
            .filter_map(|(_, h)| h.as_ref().ok())
            .filter(|h| h.snapshot.source == *name && h.snapshot.status == SnapshotStatus::Complete)
            .max_by_key(|h| h.snapshot.time);
        let Some(header) = newest else { continue };
        let snapshot = SnapshotData {
            repo,
            id: &header.snapshot.id,
            host,
            secret: secret.clone(),
        };
        let checked = Kind::of(source).check(policy, &snapshot, restore).await;
        let checked = match checked {
            Ok(None) => continue,
            Ok(Some(checked)) => Ok(checked),
            Err(e) => Err(e),
        };
        f.database_checks.push(DatabaseCheck {
            source: name.clone(),
            snapshot: header.snapshot.id.clone(),
            checked,
        });
    }
}

/// The bucket's default retention as `verify` read it (`GetObjectLockConfiguration`),
/// against `object_lock.retain_for`.
#[derive(Debug, Clone, Serialize)]
pub struct BucketLock {
    /// `retain_for`, in days (rounded up).
    pub retain_for_days: i64,
    /// The bucket's default, when it has one and it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultRetention>,
    /// Why it could not be read (credentials without
    /// `s3:GetBucketObjectLockConfiguration`, a bucket without Object Lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// The bucket has no default retention, or one of another period (BP258).
    pub differs: bool,
}

/// A pack whose Object Lock ends before the snapshots that use it are unlocked.
#[derive(Debug, Clone, Serialize)]
pub struct ShortLock {
    pub pack: String,
    /// When its lock ends: read from the object when `read`, else its Last-Modified
    /// plus the bucket's period.
    pub locked_until: DateTime<Utc>,
    /// Whether `locked_until` is the object's own retention (read with a HEAD).
    pub read: bool,
    /// When the lock of the latest snapshot using it should end (its time plus the
    /// period).
    pub needed_until: DateTime<Utc>,
    /// How many snapshots use it past its lock.
    pub snapshots: usize,
}

/// Which packs one snapshot's chunks are in, as far as the index knows.
struct Uses {
    snapshot: String,
    /// When the snapshot was taken, if it was written under an Object Lock (its
    /// header records `retain_until`).
    locked_at: Option<DateTime<Utc>>,
    /// Chunks per pack (a lost pack's too).
    packs: HashMap<Arc<str>, usize>,
    /// Chunks that no pack holds.
    nowhere: usize,
}

/// One repository key and what it opens.
struct Opened {
    key: RepoKey,
    index: Arc<Index>,
}

/// Checks one repository; `fraction` of its packs are read back with `secret`.
/// `now` dates what is found lost for the first time.
pub async fn check(
    repo: &Repo,
    host: Option<&RepoKey>,
    secret: Option<Arc<SecretKeys>>,
    fraction: Option<f64>,
    now: DateTime<Utc>,
) -> Findings {
    let mut f = Findings {
        destination: repo.name.clone(),
        complete: true,
        ..Findings::default()
    };
    match repo.marker().await {
        Ok(Some(_)) => {}
        Ok(None) => return f,
        Err(e) => {
            f.complete = false;
            f.note("", e);
            return f;
        }
    }
    match repo.lost_records().await {
        Ok(records) => {
            let mut readable = Vec::new();
            for (path, record) in records {
                match record {
                    Ok(h) => readable.push(h.lost),
                    Err(why) => f.note(
                        "",
                        Failure::new(
                            Code::CorruptObject,
                            format!("{path} is damaged: {why}; this verify records anew"),
                        ),
                    ),
                }
                f.reports.push(path);
            }
            f.readable_reports = readable.len();
            f.reported = Lost::merged(&readable);
        }
        Err(e) => {
            f.complete = false;
            f.note("", e);
        }
    }
    let headers = match repo.scan_headers().await {
        Ok(scan) => {
            for (path, why) in scan.damaged_catalogs {
                f.note(
                    "",
                    Failure::new(
                        Code::CorruptObject,
                        format!("{path} is damaged: {why}; the next apply rewrites it"),
                    ),
                );
            }
            scan.headers
        }
        Err(e) => {
            f.complete = false;
            f.note("", e);
            return f;
        }
    };
    // One key and one index per repository key id the snapshots name.
    let mut opened: HashMap<String, Opened> = HashMap::new();
    let mut uses = Vec::new();
    for (path, header) in headers {
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                f.note(
                    "",
                    Failure {
                        message: format!("{path}: {}", e.message),
                        ..e
                    },
                );
                continue;
            }
        };
        f.snapshots += 1;
        f.key_ids.insert(header.key_id.clone());
        let id = header.snapshot.id.clone();
        if header.snapshot.status == SnapshotStatus::Failed {
            continue;
        }
        if !opened.contains_key(&header.key_id) {
            let result = async {
                let key = key_for(repo, &header.key_id, host, secret.as_deref()).await?;
                let index = repo.load_index(&key).await?;
                Ok::<_, Failure>(Opened {
                    key,
                    index: Arc::new(index),
                })
            }
            .await;
            match result {
                Ok(o) => {
                    opened.insert(header.key_id.clone(), o);
                }
                Err(e) => {
                    f.complete = false;
                    f.note(&id, e);
                    continue;
                }
            }
        }
        let o = &opened[&header.key_id];
        match repo.read_snapshot(&o.key, &id).await {
            Ok((actual, _)) if actual != header => f.note(
                &id,
                Failure::new(
                    Code::CorruptObject,
                    format!(
                        "the snapshot catalog's copy of snapshots/{id} differs from the object"
                    ),
                ),
            ),
            Ok((_, tree)) => {
                let chunks: HashSet<&ChunkId> =
                    tree.entries.iter().flat_map(|e| e.chunks.iter()).collect();
                let mut u = Uses {
                    snapshot: id.clone(),
                    locked_at: header.snapshot.retain_until.map(|_| header.snapshot.time),
                    packs: HashMap::new(),
                    nowhere: 0,
                };
                for c in chunks {
                    // A lost pack's chunks are found in no pack, but counted in it.
                    let pack = o
                        .index
                        .locate(c)
                        .map(|l| l.pack)
                        .or_else(|| o.index.lost_pack_of(c).cloned());
                    match pack {
                        Some(p) => *u.packs.entry(p).or_default() += 1,
                        None => u.nowhere += 1,
                    }
                }
                uses.push(u);
            }
            Err(e) => f.note(&id, e),
        }
    }
    let stored = match repo.pack_objects().await {
        Ok(s) => s,
        Err(e) => {
            f.complete = false;
            f.note("", e);
            return f;
        }
    };
    if let Some(period) = repo.lock_period() {
        let mut read = HashMap::new();
        if let Some(api) = repo.object_lock_api() {
            f.bucket_lock = Some(bucket_lock(api, period).await);
            let packs: BTreeSet<String> = uses
                .iter()
                .filter(|u| u.locked_at.is_some())
                .flat_map(|u| u.packs.keys())
                .map(|p| pack_path(p))
                .filter(|p| stored.contains_key(p))
                .collect();
            let mut unreadable = None;
            for (path, result) in api.retentions(packs.into_iter().collect()).await {
                match result {
                    Ok(Some(r)) => {
                        read.insert(path, r.until);
                    }
                    // No lock shown: credentials without s3:GetObjectRetention.
                    Ok(None) => {}
                    Err(e) => {
                        unreadable.get_or_insert(e);
                    }
                }
            }
            if let Some(why) = unreadable {
                f.note("", why);
            }
            f.locks_read = Some(read.len());
        }
        f.short_locks = short_locks(&uses, &stored, &read, period);
    }
    let mut bad: BTreeMap<String, LostPack> = BTreeMap::new();
    let lost = |id: &str, state: PackState, why: String| LostPack {
        id: id.to_string(),
        state,
        why,
    };
    for o in opened.values() {
        let index = &o.index;
        for d in &index.damaged {
            f.note(
                "",
                Failure::new(Code::CorruptObject, format!("index object {d}")),
            );
        }
        f.packs += index.pack_count();
        for pack in index.packs() {
            let (id, size) = (pack.id(), pack.size());
            if index.is_lost(id) {
                // Recorded before: read whole, to tell whether it still is lost.
                match repo.read_pack(id).await {
                    Ok(PackRead::Intact(_)) => {}
                    Ok(PackRead::Missing) => {
                        bad.insert(id.to_string(), lost(id, PackState::Missing, missing()));
                    }
                    Ok(PackRead::Damaged(why)) => {
                        bad.insert(id.to_string(), lost(id, PackState::Damaged, why));
                    }
                    Err(e) => {
                        f.complete = false;
                        f.note("", e);
                    }
                }
                continue;
            }
            match stored.get(&pack_path(id)).map(|o| o.size) {
                None => {
                    bad.insert(id.to_string(), lost(id, PackState::Missing, missing()));
                }
                Some(stored) if stored != size => {
                    let why = format!("it has {stored} bytes, the index says {size}");
                    bad.insert(id.to_string(), lost(id, PackState::Damaged, why));
                }
                Some(_) => {}
            }
        }
        let (Some(fraction), Some(secret)) = (fraction, &secret) else {
            continue;
        };
        let mut packs: Vec<&Arc<str>> = index
            .packs()
            .map(|p| p.id())
            .filter(|p| !index.is_lost(p) && !bad.contains_key(&***p))
            .collect();
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
            &o.key,
            secret.clone(),
            tokio::runtime::Handle::current(),
        );
        let index2 = index.clone();
        // Each failure with the pack it was read from.
        let failures = tokio::task::spawn_blocking(move || {
            let mut failures = Vec::new();
            for pack in sample {
                let Some(record) = index2.pack(&pack) else {
                    continue;
                };
                for c in record.chunks() {
                    if let Err(e) = fetcher.fetch(&c.id) {
                        let read = index2.locate(&c.id).map(|l| l.pack);
                        failures.push((read, e));
                        break;
                    }
                }
            }
            failures
        })
        .await
        .unwrap_or_else(|e| vec![(None, Failure::new(Code::VerifyFailed, e.to_string()))]);
        f.packs_read += take.min(packs.len());
        for (pack, error) in failures {
            // A pack that is not what it is named after is recorded; a chunk that
            // does not open in an intact pack is reported only (it may be this
            // secret key that cannot open it).
            let read = match &pack {
                Some(p) => repo.read_pack(p).await,
                None => Ok(PackRead::Intact(Vec::new())),
            };
            match (pack, read) {
                (Some(p), Ok(PackRead::Missing)) => {
                    bad.insert(p.to_string(), lost(&p, PackState::Missing, missing()));
                }
                (Some(p), Ok(PackRead::Damaged(why))) => {
                    bad.insert(p.to_string(), lost(&p, PackState::Damaged, why));
                }
                _ => f.note("", error),
            }
        }
    }
    for p in bad.values() {
        f.note(
            "",
            Failure::new(
                Code::VerifyFailed,
                format!("pack {} {}", pack_path(&p.id), describe(p)),
            ),
        );
    }
    let mut affected = BTreeSet::new();
    for u in &uses {
        let in_bad: usize = u
            .packs
            .iter()
            .filter(|(p, _)| bad.contains_key(&***p))
            .map(|(_, n)| n)
            .sum();
        if in_bad > 0 {
            f.note(
                &u.snapshot,
                Failure::new(
                    Code::VerifyFailed,
                    format!("{in_bad} chunk(s) are in missing or damaged packs"),
                ),
            );
        }
        if u.nowhere > 0 {
            f.note(
                &u.snapshot,
                Failure::new(
                    Code::VerifyFailed,
                    format!("{} chunk(s) are in no pack", u.nowhere),
                ),
            );
        }
        if in_bad > 0 || u.nowhere > 0 {
            affected.insert(u.snapshot.clone());
        }
    }
    f.lost = Lost {
        found: None,
        packs: bad.into_values().collect(),
        snapshots: affected.into_iter().collect(),
    };
    if !f.lost.is_empty() {
        // Still the damage found before: it keeps the time it was first found.
        let known = f.lost.packs.iter().any(|p| f.reported.has_pack(&p.id))
            || f.lost
                .snapshots
                .iter()
                .any(|s| f.reported.snapshots.contains(s));
        f.lost.found = Some(match (known, f.reported.found) {
            (true, Some(t)) => t,
            _ => now,
        });
    }
    f
}

/// Checks every copy of the repository key (`keys/<id>`): always that it is a
/// whole OpenPGP message to recipients, some of them the policy's (`recipients`,
/// when the policy names any); with `secret`, that it opens to the repository key it
/// is named after (and to the host's key, when that is the one). A copy that the
/// snapshots need and the destination lacks is a problem too: without it, this
/// destination cannot be restored with a secret key alone. Problems name the object
/// and carry BP220.
pub async fn check_keys(
    repo: &Repo,
    recipients: Option<&Recipients>,
    host: Option<&RepoKey>,
    secret: Option<&SecretKeys>,
    f: &mut Findings,
) {
    let damaged = |path: &str, why: String| {
        Failure::new(Code::CorruptObject, format!("{path} is damaged: {why}"))
    };
    let listed = match repo.key_copies().await {
        Ok(listed) => listed,
        Err(e) => {
            f.note("", e);
            return;
        }
    };
    for path in &listed {
        let id = path.trim_start_matches("keys/");
        let bytes = match repo.object(path).await {
            Ok(Some(bytes)) => bytes,
            // Deleted between the listing and the read.
            Ok(None) => continue,
            Err(e) => {
                f.note("", e);
                continue;
            }
        };
        f.key_copies += 1;
        let shape = match recipients {
            Some(r) => match r.message_shape(&bytes) {
                Ok(shape) => Some(shape),
                Err(e) => {
                    f.note("", damaged(path, e.0));
                    continue;
                }
            },
            None => None,
        };
        if let Some(shape) = &shape
            && !shape.to_known_key
            && shape.recipients.iter().all(Option::is_some)
        {
            let named: Vec<String> = shape
                .recipients
                .iter()
                .flatten()
                .map(|h| h.to_hex())
                .collect();
            f.note(
                "",
                damaged(
                    path,
                    format!(
                        "it is encrypted to {}, none of them a key of the policy's recipients",
                        named.join(", ")
                    ),
                ),
            );
            continue;
        }
        let Some(secret) = secret else { continue };
        if let Some(shape) = &shape
            && !secret.is_recipient(shape)
        {
            f.note(
                "",
                Failure::new(
                    Code::SecretKeyUnusable,
                    format!(
                        "{path} was not opened: the secret key ({}) is none of its recipients",
                        secret.fingerprints().join(", ")
                    ),
                ),
            );
            continue;
        }
        match RepoKey::unwrap(&bytes, secret) {
            Ok(key) if key.id() != id => f.note(
                "",
                damaged(
                    path,
                    format!("it opens to repository key {}, not {id}", key.id()),
                ),
            ),
            Ok(key) if host.is_some_and(|h| h.id() == id && h.to_hex() != key.to_hex()) => f.note(
                "",
                damaged(path, "it opens to a key other than the host's".to_string()),
            ),
            Ok(_) => f.key_copies_opened += 1,
            Err(e) => f.note(
                "",
                damaged(
                    path,
                    format!(
                        "the secret key, one of its recipients, does not open it ({})",
                        e.0
                    ),
                ),
            ),
        }
    }
    for id in &f.key_ids.clone() {
        let path = format!("keys/{id}");
        if !listed.contains(&path) {
            f.note(
                "",
                Failure::new(
                    Code::CorruptObject,
                    format!(
                        "{path} is missing: the snapshots written under repository key {id} \
                         can be opened only with the host's repository key file"
                    ),
                ),
            );
        }
    }
}

/// How much earlier than a snapshot a pack may have been written and still count
/// as written by it: S3's Last-Modified is whole seconds, from the server's clock.
const LOCK_SLACK: chrono::Duration = crate::repo::s3lock::LOCK_SLACK;

/// The bucket's default retention against `period` (`retain_for`).
async fn bucket_lock(api: &ObjectLockApi, period: chrono::Duration) -> BucketLock {
    let days = (period + chrono::Duration::days(1) - chrono::Duration::nanoseconds(1)).num_days();
    match api.bucket_default().await {
        Ok(default) => BucketLock {
            retain_for_days: days,
            default,
            unreadable: None,
            differs: default.is_none_or(|d| i64::from(d.days) != days),
        },
        Err(e) => BucketLock {
            retain_for_days: days,
            default: None,
            unreadable: Some(e.message),
            differs: false,
        },
    }
}

/// Packs whose lock ends before that of a snapshot using them: the snapshot's time
/// plus `period`, what it would be had it written the pack itself. A pack's lock is
/// its own retention where it was read (`read`, by path), else derived from the
/// listing: Last-Modified plus `period` (the bucket's default retention, assumed to
/// be `retain_for`; an extension does not change Last-Modified).
fn short_locks(
    uses: &[Uses],
    stored: &HashMap<String, crate::repo::store::PackObject>,
    read: &HashMap<String, DateTime<Utc>>,
    period: chrono::Duration,
) -> Vec<ShortLock> {
    let mut short: BTreeMap<&str, ShortLock> = BTreeMap::new();
    for u in uses {
        let Some(taken) = u.locked_at else {
            continue;
        };
        let needed = taken + period;
        for pack in u.packs.keys() {
            let path = pack_path(pack);
            let (locked_until, was_read) = match read.get(&path) {
                Some(until) => (*until, true),
                None => match stored.get(&path).and_then(|o| o.modified) {
                    Some(modified) => (modified + period, false),
                    None => continue,
                },
            };
            if locked_until + LOCK_SLACK >= needed {
                continue;
            }
            let entry = short.entry(pack).or_insert(ShortLock {
                pack: pack.to_string(),
                locked_until,
                read: was_read,
                needed_until: needed,
                snapshots: 0,
            });
            entry.needed_until = entry.needed_until.max(needed);
            entry.snapshots += 1;
        }
    }
    short.into_values().collect()
}

fn missing() -> String {
    "it is missing".to_string()
}

/// "is missing", "is damaged: its content does not match its name".
fn describe(p: &LostPack) -> String {
    match p.state {
        PackState::Missing => "is missing".to_string(),
        PackState::Damaged => format!("is damaged: {}", p.why),
    }
}

/// Stores what [`check`] found lost, for `plan` to offer a repair: one new `lost/`
/// object replaces the earlier ones (written first, then they are deleted); none is
/// left once nothing is lost. Nothing is written when nothing changed, nor after a
/// check that could not read everything.
pub async fn record(repo: &Repo, f: &mut Findings, now: DateTime<Utc>) -> Result<(), Failure> {
    if !f.complete {
        return Ok(());
    }
    let unchanged = f.lost == f.reported
        && f.readable_reports == f.reports.len()
        && f.reports.len() <= usize::from(!f.lost.is_empty());
    if unchanged {
        return Ok(());
    }
    let written = match f.lost.is_empty() {
        true => None,
        false => Some(repo.put_lost(&f.lost, now).await?),
    };
    for old in &f.reports {
        if Some(old) != written.as_ref() {
            repo.delete(old).await?;
        }
    }
    f.recorded = Some(match written {
        Some(path) => format!("recorded in {path}: `backplan plan` shows the repair"),
        None => "nothing is lost any more: the earlier record is removed".to_string(),
    });
    Ok(())
}

/// Records that `verify` ran on the repository and how it ended (`verifies/`), for
/// `status` and the metrics: `started` is when the run began, `read_data` the
/// fraction of packs it read back.
pub async fn record_run(
    repo: &Repo,
    f: &Findings,
    started: DateTime<Utc>,
    read_data: Option<f64>,
) -> Result<(), Failure> {
    let problems: usize = f.problems.values().map(Vec::len).sum();
    let record = VerifyRecord {
        started,
        finished: Utc::now(),
        result: match problems {
            0 => CheckResult::Passed,
            _ => CheckResult::Failed,
        },
        snapshots: f.snapshots,
        problems,
        read_data,
    };
    repo.put_verify(&record).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::store::PackObject;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    fn uses(snapshot: &str, taken: Option<&str>, packs: &[&str]) -> Uses {
        Uses {
            snapshot: snapshot.to_string(),
            locked_at: taken.map(t),
            packs: packs.iter().map(|p| (Arc::from(*p), 1)).collect(),
            nowhere: 0,
        }
    }

    #[test]
    fn a_pack_reused_after_its_lock_period_began_is_reported_with_both_dates() {
        let period = chrono::Duration::days(35);
        let stored: HashMap<String, PackObject> = [
            ("aa01", "2026-11-01T03:00:00Z"),
            ("bb02", "2026-11-20T03:00:30Z"),
        ]
        .into_iter()
        .map(|(id, at)| {
            let object = PackObject {
                size: 1,
                modified: Some(t(at)),
            };
            (pack_path(id), object)
        })
        .collect();
        let found = short_locks(
            &[
                // Wrote aa01; then, 19 days later, reused it and wrote bb02.
                uses("first", Some("2026-11-01T03:00:00Z"), &["aa01"]),
                uses("later", Some("2026-11-20T03:00:00Z"), &["aa01", "bb02"]),
                // Written with no lock: not checked.
                uses("unlocked", None, &["aa01"]),
            ],
            &stored,
            &HashMap::new(),
            period,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pack, "aa01");
        assert_eq!(found[0].locked_until, t("2026-12-06T03:00:00Z"));
        assert_eq!(found[0].needed_until, t("2026-12-25T03:00:00Z"));
        assert_eq!(found[0].snapshots, 1);
        assert!(!found[0].read);
    }

    #[test]
    fn a_pack_s_own_retention_overrides_the_one_derived_from_its_write_time() {
        let period = chrono::Duration::days(35);
        let object = |at: &str| PackObject {
            size: 1,
            modified: Some(t(at)),
        };
        // aa01 was written long ago but its lock was extended; bb02 was written
        // with the snapshot but under a shorter default retention than retain_for.
        let stored: HashMap<String, PackObject> = [
            (pack_path("aa01"), object("2026-11-01T03:00:00Z")),
            (pack_path("bb02"), object("2026-11-20T03:00:10Z")),
        ]
        .into_iter()
        .collect();
        let read: HashMap<String, DateTime<Utc>> = [
            (pack_path("aa01"), t("2026-12-25T03:00:00Z")),
            (pack_path("bb02"), t("2026-11-21T03:00:10Z")),
        ]
        .into_iter()
        .collect();
        let found = short_locks(
            &[uses(
                "later",
                Some("2026-11-20T03:00:00Z"),
                &["aa01", "bb02"],
            )],
            &stored,
            &read,
            period,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pack, "bb02");
        assert!(found[0].read);
        assert_eq!(found[0].locked_until, t("2026-11-21T03:00:10Z"));
        assert_eq!(found[0].needed_until, t("2026-12-25T03:00:00Z"));
    }
}
