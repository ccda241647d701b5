//! The repository on OpenDAL's in-memory service, driven through the library (a
//! memory store lives as long as its operator, so not across processes): plan, apply,
//! restore and deduplication end to end.

use std::path::Path;
use std::sync::Arc;

use backplan::apply::Executor;
use backplan::apply::storage::StorageExecutor;
use backplan::crypto::keys::{ChunkId, RepoKey};
use backplan::crypto::{Recipients, SecretKeys};
use backplan::inventory::Inventory;
use backplan::inventory::{Lost, LostPack, PackState};
use backplan::pipeline::fetch::RepoFetcher;
use backplan::plan::{Action, Prune, PruneReason, Settings, SnapshotRef};
use backplan::policy::Policy;
use backplan::repo::format::{ChunkRecord, IndexBody, PackRecord};
use backplan::repo::lock::{self, LockKind};
use backplan::repo::store::Repo;
use backplan::sources::files;

fn policy_text(data: &Path) -> String {
    format!(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
destinations:
  mem: {{ type: memory }}
sources:
  data: {{ type: files, path: "{}" }}
"#,
        data.display()
    )
}

async fn inventory(repos: &[Repo], key: &RepoKey) -> Inventory {
    let mut inv = Inventory::default();
    for r in repos {
        inv.destinations
            .insert(r.name.clone(), r.read_state(Some(key), None).await);
    }
    inv
}

/// A policy over `data`, a fresh repository key, the recipients, and the policy's
/// memory repositories, initialised.
async fn memory_repositories(policy: &str) -> (Arc<Policy>, RepoKey, Recipients, Vec<Repo>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let loaded = backplan::policy::load_str(policy, &dir.join("mem.yaml"), &dir).expect("policy");
    let policy = Arc::new(loaded.policy);
    let key = RepoKey::generate().expect("key");
    let recipients = Recipients::load(&policy.recipients).expect("recipients");
    let repos = backplan::repo::open_all(&policy).expect("repos");
    for r in &repos {
        r.init(&key, &recipients, chrono::Utc::now())
            .await
            .expect("init");
    }
    (policy, key, recipients, repos)
}

/// The plan of `policy` over what `repos` hold at `now`.
async fn plan_now(
    policy: &Policy,
    repos: &[Repo],
    key: &RepoKey,
    now: chrono::DateTime<chrono::Utc>,
) -> backplan::plan::Plan {
    backplan::plan::plan(
        policy,
        &policy.graph,
        &inventory(repos, key).await,
        now,
        Settings::default(),
    )
}

/// The snapshot of the source `data` on `mem` (there is one at a time).
async fn snapshot_of_data(repos: &[Repo], key: &RepoKey) -> backplan::inventory::SnapshotInfo {
    inventory(repos, key).await.destinations["mem"]
        .snapshots
        .iter()
        .find(|s| s.source == "data")
        .expect("a snapshot of data")
        .clone()
}

/// A prune of snapshot `snap` of the source `data` on `mem`.
fn pruning(snap: &backplan::inventory::SnapshotInfo) -> Prune {
    Prune {
        source: "data".into(),
        destination: "mem".into(),
        snapshots: vec![SnapshotRef {
            id: snap.id.clone(),
            time: snap.time,
            bytes_stored: snap.bytes_stored,
            retain_until: None,
        }],
        reason: PruneReason::OutsideRetention {
            rules: "keep_last 0".into(),
        },
        held: false,
        append_only: false,
        locked_until: None,
    }
}

/// Restores snapshot `id` of `repo` into `target` with the recipient's secret key.
async fn restore(repo: &Repo, key: &RepoKey, id: &str, target: &Path) {
    let (_, tree) = repo.read_snapshot(key, id).await.expect("tree");
    let secret = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/demo-recipient.secret.asc"),
    )
    .expect("secret key");
    let secret = Arc::new(SecretKeys::from_bytes(&secret).expect("secret"));
    let index = Arc::new(repo.load_index(key).await.expect("index"));
    let mut fetcher = RepoFetcher::new(
        repo.clone(),
        index,
        key,
        secret,
        tokio::runtime::Handle::current(),
    );
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || files::restore(&tree, &target, &[], false, &mut fetcher))
        .await
        .expect("join")
        .expect("restore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_destination_backs_up_deduplicates_and_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("big.bin"), &big).expect("write");
    std::fs::write(data.join("sub/copy.bin"), &big).expect("write");
    std::fs::write(data.join("small.txt"), "hello").expect("write");

    let (policy, key, recipients, repos) = memory_repositories(&policy_text(&data)).await;

    let graph = policy.graph.clone();
    let now = chrono::Utc::now();
    let plan = backplan::plan::plan(
        &policy,
        &graph,
        &inventory(&repos, &key).await,
        now,
        Settings::default(),
    );
    assert!(
        matches!(plan.actions.as_slice(), [Action::Backup(_)]),
        "{plan:?}"
    );

    let executor =
        StorageExecutor::new(policy.clone(), key.clone(), recipients, repos.clone(), now);
    let report = backplan::apply::apply(&plan, &executor, 2, &|_| {}).await;
    assert_eq!(report.done(), 1, "{report:?}");

    // The same 3 MB twice is stored once: well under two copies' worth.
    let inv = inventory(&repos, &key).await;
    let snap = &inv.destinations["mem"].snapshots[0];
    assert_eq!(snap.bytes_read, Some(2 * big.len() as u64 + 5));
    let stored = snap.bytes_stored.expect("stored");
    assert!(stored < big.len() as u64 + 100_000, "stored {stored} bytes");

    // Nothing is due any more.
    let again = backplan::plan::plan(&policy, &graph, &inv, now, Settings::default());
    assert!(!again.has_changes(), "{again:?}");

    // Restore with the recipient's secret key and compare bytes.
    let target = tmp.path().join("restored");
    restore(&repos[0], &key, &snap.id, &target).await;
    assert_eq!(std::fs::read(target.join("big.bin")).expect("read"), big);
    assert_eq!(
        std::fs::read(target.join("sub/copy.bin")).expect("read"),
        big
    );
    assert_eq!(
        std::fs::read_to_string(target.join("small.txt")).expect("read"),
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_shared_lock_on_memory_makes_a_prune_fail_until_it_is_released() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("a.txt"), "read me while I am pruned").expect("write");
    let (policy, key, recipients, repos) = memory_repositories(&policy_text(&data)).await;
    let now = chrono::Utc::now();
    let plan = plan_now(&policy, &repos, &key, now).await;
    let executor =
        StorageExecutor::new(policy.clone(), key.clone(), recipients, repos.clone(), now);
    assert_eq!(
        backplan::apply::apply(&plan, &executor, 1, &|_| {})
            .await
            .done(),
        1
    );
    let repo = &repos[0];
    let snap = inventory(&repos, &key).await.destinations["mem"].snapshots[0].clone();
    let prune = pruning(&snap);

    // While a reader (a restore, a verify) holds its lock, the prune is refused.
    let refused = lock::reading(repo, executor.prune(&prune))
        .await
        .expect("a shared lock on a free repository");
    let why = refused.expect_err("a prune under a reader's lock");
    assert_eq!(
        why.code,
        backplan::error::Code::RepositoryLocked,
        "{}",
        why.message
    );
    assert!(
        why.message.contains("a shared lock held by"),
        "{}",
        why.message
    );
    assert!(
        repo.locks().await.expect("locks").is_empty(),
        "the reader's lock stayed"
    );
    assert_eq!(
        inventory(&repos, &key).await.destinations["mem"]
            .snapshots
            .len(),
        1
    );

    // And a reader is refused while a prune holds the repository.
    let reader = lock::holding(&[repo], LockKind::Exclusive, lock::reading(repo, async {}))
        .await
        .expect("an exclusive lock on a free repository");
    let f = reader.expect_err("a reader under an exclusive lock");
    assert_eq!(
        f.code,
        backplan::error::Code::RepositoryLocked,
        "{}",
        f.message
    );
    assert!(
        repo.locks().await.expect("locks").is_empty(),
        "a lock stayed"
    );

    // Alone, the prune runs.
    executor.prune(&prune).await.expect("the prune");
    assert!(
        inventory(&repos, &key).await.destinations["mem"]
            .snapshots
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_reads_the_index_again_after_another_process_pruned_the_packs_it_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, other) = (tmp.path().join("data"), tmp.path().join("other"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&other).expect("mkdir");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join("a.bin"), &body).expect("write");
    std::fs::write(other.join("b.txt"), "another source").expect("write");
    let policy = format!(
        "{}  other: {{ type: files, path: \"{}\" }}\n",
        policy_text(&data),
        other.display()
    );
    let (policy, key, recipients, repos) = memory_repositories(&policy).await;
    let repo = &repos[0];
    let now = chrono::Utc::now();
    let plan = plan_now(&policy, &repos, &key, now).await;
    let backup = |source: &str| {
        plan.actions
            .iter()
            .find_map(|a| match a {
                Action::Backup(b) if b.source == source => Some(b.clone()),
                _ => None,
            })
            .expect("a backup")
    };
    let (of_data, of_other) = (backup("data"), backup("other"));
    // Another process backs `data` up; then this apply backs `other` up, reading the
    // index, which lists the chunks of `data`.
    let process = || {
        StorageExecutor::new(
            policy.clone(),
            key.clone(),
            recipients.clone(),
            repos.clone(),
            now,
        )
    };
    let (apply, another) = (process(), process());
    another
        .backup(&of_data)
        .await
        .expect("the other process's backup");
    apply
        .backup(&of_other)
        .await
        .expect("this apply's first backup");
    let index = repo.load_index(&key).await.expect("index");
    assert!(repo.index_still_holds(&index).await.expect("list"));

    // The other process prunes its snapshot of `data`: the packs with its chunks go,
    // and the index objects that listed them are replaced.
    let snap = snapshot_of_data(&repos, &key).await;
    let prune = pruning(&snap);
    another.prune(&prune).await.expect("the prune");
    assert!(!repo.index_still_holds(&index).await.expect("list"));

    // This apply's backup of `data` stores its bytes again rather than taking them as
    // present, and its snapshot restores.
    apply
        .backup(&of_data)
        .await
        .expect("this apply's backup of data");
    let snap = snapshot_of_data(&repos, &key).await;
    assert!(snap.bytes_stored.unwrap_or(0) > 0, "{snap:?}");
    let target = tmp.path().join("restored");
    restore(repo, &key, &snap.id, &target).await;
    assert_eq!(std::fs::read(target.join("a.bin")).expect("read"), body);

    // An index object added since (by another backup) does not make an index stale.
    let index = repo.load_index(&key).await.expect("index");
    repo.put_index(&key, Vec::new())
        .await
        .expect("an index object");
    assert!(repo.index_still_holds(&index).await.expect("list"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_pack_is_lost_or_retired_is_read_from_its_new_pack() {
    let op = opendal::Operator::new(opendal::services::Memory::default()).expect("memory");
    let repo = Repo::new("mem", op);
    let key = RepoKey::generate().expect("key");
    let now = chrono::Utc::now();
    let chunk = ChunkId([7; 32]);
    let record = |id: &str, offset: u64| PackRecord {
        id: id.to_string(),
        size: offset + 5,
        key_sets: vec![(10, 4)],
        chunks: vec![ChunkRecord {
            id: chunk,
            key_set: 0,
            offset,
            length: 5,
            raw_length: 5,
        }],
    };
    let (old, new) = ("aa".repeat(32), "bb".repeat(32));
    // The old pack, and the new one a repair wrote, each in an index object of its own.
    repo.put_index(&key, vec![record(&old, 14)])
        .await
        .expect("index");
    repo.put_index(&key, vec![record(&new, 20)])
        .await
        .expect("index");

    // Recorded lost: the chunk is found in the new pack, the old one stays listed.
    let lost = Lost {
        found: Some(now),
        packs: vec![LostPack {
            id: old.clone(),
            state: PackState::Missing,
            why: "it is missing".into(),
        }],
        snapshots: Vec::new(),
    };
    let path = repo.put_lost(&lost, now).await.expect("a lost record");
    let index = repo.load_index(&key).await.expect("load");
    let found = index.locate(&chunk).expect("the chunk");
    assert_eq!(&*found.pack, new.as_str());
    assert_eq!(found.offset, 20);
    assert!(index.pack(&old).is_some());
    assert_eq!(index.lost, lost);
    assert_eq!(index.lost_objects, std::slice::from_ref(&path));
    // Found in the new pack, so in no lost one.
    assert_eq!(index.lost_pack_of(&chunk), None);

    // Retired by the repair's index, with the record gone: the old pack is ignored.
    repo.delete(&path).await.expect("remove the record");
    let retiring = IndexBody {
        packs: Vec::new(),
        retired: vec![old.clone()],
    };
    repo.put_index_body(&key, &retiring).await.expect("index");
    let index = repo.load_index(&key).await.expect("load");
    assert_eq!(
        &*index.locate(&chunk).expect("the chunk").pack,
        new.as_str()
    );
    assert!(index.pack(&old).is_none());
    assert!(index.lost.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_lost_on_a_memory_destination_is_repaired_from_the_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let big: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(data.join("big.bin"), &big).expect("write");
    std::fs::write(data.join("small.txt"), "small").expect("write");
    let text = format!(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
destinations:
  a: {{ type: memory, root: /a }}
  b: {{ type: memory, root: /b }}
sources:
  data: {{ type: files, path: "{}" }}
"#,
        data.display()
    );
    let (policy, key, recipients, repos) = memory_repositories(&text).await;
    let graph = policy.graph.clone();
    let now = chrono::Utc::now();
    let executor =
        StorageExecutor::new(policy.clone(), key.clone(), recipients, repos.clone(), now);
    let plan_now =
        |inv: &Inventory| backplan::plan::plan(&policy, &graph, inv, now, Settings::default());
    let first = plan_now(&inventory(&repos, &key).await);
    assert_eq!(
        backplan::apply::apply(&first, &executor, 2, &|_| {})
            .await
            .done(),
        1
    );
    let a = &repos[0];
    assert_eq!(a.name, "a");

    let packs = a.pack_objects().await.expect("packs");
    let (largest, _) = packs.iter().max_by_key(|(_, o)| o.size).expect("a pack");
    a.delete(largest).await.expect("lose a pack");
    let mut found = backplan::verify::check(a, Some(&key), None, None, now).await;
    assert_eq!(found.lost.packs.len(), 1, "{found:?}");
    assert_eq!(found.lost.packs[0].state, PackState::Missing);
    assert_eq!(found.lost.snapshots.len(), 1);
    backplan::verify::record(a, &mut found, now)
        .await
        .expect("record");
    assert!(found.recorded.is_some());

    let inv = inventory(&repos, &key).await;
    assert_eq!(inv.destinations["a"].lost, found.lost);
    let repair = plan_now(&inv);
    match repair.actions.as_slice() {
        [Action::Repair(r)] => {
            assert_eq!(r.destination, "a");
            assert_eq!(r.from, ["b"]);
            assert_eq!(r.snapshots.len(), 1);
        }
        other => panic!("not one repair: {other:?}"),
    }
    let report = backplan::apply::apply(&repair, &executor, 2, &|_| {}).await;
    assert_eq!(report.done(), 1, "{report:?}");

    let mut clean = backplan::verify::check(a, Some(&key), None, None, now).await;
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    backplan::verify::record(a, &mut clean, now)
        .await
        .expect("record");
    assert!(
        inventory(&repos, &key).await.destinations["a"]
            .lost
            .is_empty()
    );
    assert!(!plan_now(&inventory(&repos, &key).await).has_changes());

    // From a alone, the same bytes.
    let target = tmp.path().join("restored");
    restore(a, &key, &inv.destinations["a"].snapshots[0].id, &target).await;
    assert_eq!(std::fs::read(target.join("big.bin")).expect("read"), big);
    assert_eq!(
        std::fs::read_to_string(target.join("small.txt")).expect("read"),
        "small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_sharing_a_repository_is_compared_with_its_own_last_apply() {
    let (_, key, _, repos) = memory_repositories(&policy_text(Path::new("/nonexistent"))).await;
    let repo = &repos[0];
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t0 = chrono::Utc::now();
    // Host A backs up alpha, host B beta, the trusted host names both; B applied last.
    for (i, (text, sources)) in [
        ("trusted", names(&["alpha", "beta"])),
        ("host a", names(&["alpha"])),
        ("host b", names(&["beta"])),
    ]
    .into_iter()
    .enumerate()
    {
        let at = t0 + chrono::Duration::seconds(i as i64);
        repo.put_policy(&key, text, text, &sources, at)
            .await
            .expect("record a policy");
    }
    let key = &key;
    let compared = |sources: Option<Vec<String>>| async move {
        repo.read_state(Some(key), sources.as_deref())
            .await
            .applied_policy
            .and_then(|p| p.text)
    };
    assert_eq!(
        compared(Some(names(&["alpha"]))).await.as_deref(),
        Some("host a")
    );
    assert_eq!(
        compared(Some(names(&["beta"]))).await.as_deref(),
        Some("host b")
    );
    assert_eq!(
        compared(Some(names(&["alpha", "beta"]))).await.as_deref(),
        Some("trusted")
    );
    // A policy that renamed every source, or a reader that does not say: the newest.
    assert_eq!(
        compared(Some(names(&["gamma"]))).await.as_deref(),
        Some("host b")
    );
    assert_eq!(compared(None).await.as_deref(), Some("host b"));
    // A's policy gained a source: its own record still has the most in common.
    assert_eq!(
        compared(Some(names(&["alpha", "delta"]))).await.as_deref(),
        Some("host a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_index_is_written_as_objects_of_bounded_size_and_read_whole() {
    use backplan::repo::store::INDEX_OBJECT_CHUNKS;
    let op = opendal::Operator::new(opendal::services::Memory::default()).expect("memory");
    let repo = Repo::new("mem", op);
    let key = RepoKey::generate().expect("key");
    let hasher = key.chunk_id();
    // Three packs of 3/7 of the bound: the first two fill one object, the third its own.
    let per_pack = (INDEX_OBJECT_CHUNKS * 3 / 7) as u64;
    let packs: Vec<PackRecord> = (0..3u64)
        .map(|p| PackRecord {
            id: blake3::hash(&p.to_le_bytes()).to_hex().to_string(),
            size: 1 << 24,
            key_sets: vec![(10, 4)],
            chunks: (p * per_pack..(p + 1) * per_pack)
                .map(|n| ChunkRecord {
                    id: hasher.id(&n.to_le_bytes()),
                    key_set: 0,
                    offset: 14 + (n % per_pack) * 100,
                    length: 100,
                    raw_length: 90,
                })
                .collect(),
        })
        .collect();
    assert!(
        2 * per_pack as usize <= INDEX_OBJECT_CHUNKS && 3 * per_pack as usize > INDEX_OBJECT_CHUNKS
    );
    let paths = repo.put_index(&key, packs.clone()).await.expect("index");
    assert_eq!(paths.len(), 2);

    let index = repo.load_index(&key).await.expect("load");
    let mut objects = index.objects.clone();
    objects.sort();
    let mut written = paths.clone();
    written.sort();
    assert_eq!(objects, written);
    assert_eq!(index.chunk_records(), 3 * per_pack as usize);
    for pack in &packs {
        for c in pack.chunks.iter().step_by(97) {
            let found = index.locate(&c.id).expect("listed");
            assert_eq!((&*found.pack, found.offset), (pack.id.as_str(), c.offset));
        }
    }

    // One object as an earlier build's prune wrote it, every pack in it (too large to
    // read whole: it is read as a stream), in a repository of its own.
    let op = opendal::Operator::new(opendal::services::Memory::default()).expect("memory");
    let earlier = Repo::new("mem", op);
    let mut many = packs.clone();
    for round in 1..4u8 {
        for (i, p) in packs.iter().enumerate() {
            let mut copy = p.clone();
            copy.id = format!("{round}{i:063x}");
            for c in &mut copy.chunks {
                c.id = hasher.id(&[c.id.0.as_slice(), &[round]].concat());
            }
            many.push(copy);
        }
    }
    let body = IndexBody {
        packs: many.clone(),
        retired: Vec::new(),
    };
    let path = earlier.put_index_body(&key, &body).await.expect("index");
    let size = earlier
        .object(&path)
        .await
        .expect("read")
        .expect("object")
        .len();
    assert!(size > 2 << 20, "{size} bytes");
    let index = earlier.load_index(&key).await.expect("load");
    assert_eq!(index.objects, [path]);
    assert_eq!(index.chunk_records(), 12 * per_pack as usize);
    for pack in &many {
        assert_eq!(index.pack(&pack.id).expect("listed").record(), *pack);
    }
}
