//! backplan on real S3: moto's S3 server on loopback (tests/it/common/s3.rs). A round
//! trip through the binary, concurrent applies on one repository, the exclusive
//! lock's reliance on S3's conditional writes (`If-None-Match: *`), and listing
//! snapshots while a prune deletes them, several hosts backing up into one
//! repository while a third prunes, and S3 Object Lock: prunes held until the lock
//! ends, locks extended after backups and copies (`extend`), verify reading real
//! retention and the bucket's default, and the requests backplan signs itself
//! checked by a SigV4 verifier.
//!
//! Each test starts its own server; without `moto_server` they fail under CI and are
//! skipped (loudly) elsewhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::s3::{ACCESS_KEY_ID, Faults, REGION, S3Server, SECRET_ACCESS_KEY};
use crate::common::tree::{Entry, assert_same_tree, noise, put, tree};
use crate::common::{Run, Sandbox};
use backplan::crypto::keys::RepoKey;
use backplan::error::Code;
use backplan::inventory::{SnapshotInfo, SnapshotStatus};
use backplan::repo::lock::{self, LockKind};
use backplan::repo::store::Repo;
use backplan::repo::tree::PackedTree;
use opendal::{ErrorKind, Operator};

/// The variables the policies' `${env:…}` references name.
const KEY_ID_VAR: &str = "BACKPLAN_TEST_S3_ACCESS_KEY_ID";
const SECRET_VAR: &str = "BACKPLAN_TEST_S3_SECRET_ACCESS_KEY";
/// Where repositories sit inside their bucket.
const ROOT: &str = "/backups/repo";

/// A policy whose one destination is `bucket` on `server`, with `sources` (YAML, at
/// the `sources:` level).
fn policy(server: &S3Server, bucket: &str, sources: &str) -> String {
    format!(
        r#"version: 1

encryption:
  recipients:
    - keys/demo-recipient.asc
  repository_key_file: repository.key

defaults:
  schedule: "@daily"
  timezone: UTC
  retention:
    keep_daily: 7
    min_keep: 2

destinations:
  s3:
    type: s3
    bucket: {bucket}
    region: {REGION}
    endpoint: {endpoint}
    root: {ROOT}
    access_key_id: ${{env:{KEY_ID_VAR}}}
    secret_access_key: ${{env:{SECRET_VAR}}}

sources:
{sources}"#,
        endpoint = server.endpoint(),
    )
}

const DATA_SOURCE: &str = "  data:
    type: files
    path: data
";

const CONFIG_SOURCE: &str = "  config:
    type: config
    paths:
      - app.env
";

fn secret_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/demo-recipient.secret.asc")
}

/// The binary in the sandbox, with the S3 credentials the policy refers to and none
/// of the caller's AWS settings.
fn backplan(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut command = sandbox.command(args);
    command
        .env(KEY_ID_VAR, ACCESS_KEY_ID)
        .env(SECRET_VAR, SECRET_ACCESS_KEY);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        command.env_remove(var);
    }
    command
}

fn show(args: &[&str], run: &Run, server: &S3Server) -> String {
    let log = server.log();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "backplan {}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- moto (last lines):\n{}",
        args.join(" "),
        run.status,
        run.stdout,
        run.stderr,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Runs the binary and expects success.
fn ok(sandbox: &Sandbox, server: &S3Server, args: &[&str]) -> Run {
    let run = Run::from(backplan(sandbox, args).output().expect("run backplan"));
    assert_eq!(run.status, Some(0), "{}", show(args, &run, server));
    assert!(
        !run.stderr.contains("panicked"),
        "{}",
        show(args, &run, server)
    );
    run
}

/// Object keys under the repository's root, via OpenDAL.
fn objects(server: &S3Server, bucket: &str, under: &str) -> Vec<String> {
    let op = server.operator(bucket, ROOT);
    runtime().block_on(async {
        op.list_with(under)
            .recursive(true)
            .await
            .unwrap_or_else(|e| panic!("list {under}: {e}"))
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_string())
            .collect()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn s3_round_trip_init_apply_snapshots_restore_verify() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("round-trip");
    let sources = format!("{CONFIG_SOURCE}{DATA_SOURCE}");
    let sandbox = Sandbox::with_policy(&policy(&server, &bucket, &sources));
    sandbox.write("app.env", "DATABASE_URL=postgres://app:hunter2@db/app\n");
    put(&sandbox, "data/big.bin", &noise(1, 2_500_000));
    put(&sandbox, "data/nested/deeper/small.txt", b"hello S3\n");
    put(&sandbox, "data/nested/empty-file", b"");
    put(&sandbox, "data/photos/a.jpg", &noise(2, 300_000));
    // The same content twice: stored once.
    put(&sandbox, "data/photos/a-copy.jpg", &noise(2, 300_000));
    std::fs::create_dir_all(sandbox.path("data/empty-dir")).expect("create folder");
    std::os::unix::fs::symlink("nested/deeper/small.txt", sandbox.path("data/link"))
        .expect("symlink");

    let init = ok(&sandbox, &server, &["init"]);
    assert!(
        init.stdout.contains("s3: repository created"),
        "{}",
        init.stdout
    );
    assert!(
        objects(&server, &bucket, "").contains(&"backplan.json".to_string()),
        "the repository's marker is not in the bucket under {ROOT}"
    );

    let apply = ok(&sandbox, &server, &["apply"]);
    for expected in ["✓ backup config → s3", "✓ backup data → s3", "0 failed"] {
        assert!(apply.stdout.contains(expected), "apply: {}", apply.stdout);
    }

    let snapshots = ok(&sandbox, &server, &["snapshots", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&snapshots.stdout).expect("JSON");
    let list = json["destinations"]["s3"]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots for s3: {json}"));
    let mut sources: Vec<&str> = list.iter().filter_map(|s| s["source"].as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["config", "data"], "{json}");
    assert!(list.iter().all(|s| s["status"] == "complete"), "{json}");

    // The storage provider sees neither file names nor contents.
    let stored = objects(&server, &bucket, "");
    for name in ["big.bin", "small.txt", "app.env", "photos"] {
        assert!(
            !stored.iter().any(|o| o.contains(name)),
            "an object key names {name}: {stored:?}"
        );
    }

    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    ok(
        &sandbox,
        &server,
        &[
            "restore",
            "--target",
            "data=restored/data",
            "--target",
            "config=restored/config",
            "--secret-key",
            key,
        ],
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored/data"));
    // A config source restores its files under their absolute paths.
    let config = tree(&sandbox.path("restored/config"));
    let env: Vec<_> = config
        .iter()
        .filter(|(p, _)| p.file_name().is_some_and(|n| n == "app.env"))
        .collect();
    assert_eq!(env.len(), 1, "restored config: {:?}", config.keys());
    assert_eq!(
        env[0].1,
        &Entry::File(b"DATABASE_URL=postgres://app:hunter2@db/app\n".to_vec())
    );

    let verify = ok(
        &sandbox,
        &server,
        &["verify", "--read-data", "--secret-key", key],
    );
    assert!(verify.stdout.contains("✓ s3"), "verify: {}", verify.stdout);
}

/// The action lines of an apply that failed, and every error code it printed.
fn failures_and_codes(run: &Run) -> (Vec<String>, Vec<String>) {
    let failed = run
        .stdout
        .lines()
        .filter(|l| l.contains("failed:"))
        .map(str::to_string)
        .collect();
    let text = format!("{}\n{}", run.stdout, run.stderr);
    let mut codes = Vec::new();
    for (i, _) in text.match_indices("BP") {
        let code = &text[i..(i + 5).min(text.len())];
        if code.len() == 5 && code[2..].bytes().all(|b| b.is_ascii_digit()) {
            codes.push(code.to_string());
        }
    }
    codes.sort();
    codes.dedup();
    (failed, codes)
}

#[test]
fn concurrent_applies_on_one_s3_repository_never_corrupt_it() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("concurrent");
    let sandbox = Sandbox::with_policy(&policy(&server, &bucket, DATA_SOURCE));
    put(&sandbox, "data/base.bin", &noise(10, 2_000_000));
    put(&sandbox, "data/docs/readme.txt", b"concurrent applies\n");
    ok(&sandbox, &server, &["init"]);
    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");

    let mut contended = 0;
    // The second apply starts a little later in some rounds, to vary the overlap.
    let delays = [0, 0, 40, 120];
    for (round, delay) in (1i64..).zip(delays) {
        // New and changed data each round, so both applies really upload.
        put(
            &sandbox,
            &format!("data/round-{round}.bin"),
            &noise(100 + round as u64, 1_500_000),
        );
        put(
            &sandbox,
            "data/docs/readme.txt",
            format!("round {round}\n").as_bytes(),
        );
        // A later day each round: backups are due, and retention prunes the same
        // day's extra snapshots, so an exclusive lock meets shared ones.
        let now = (chrono::Utc::now() + chrono::Duration::days(round))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let args = ["apply", "--now", now.as_str()];
        let children: Vec<_> = (0..2)
            .map(|i| {
                if i == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(delay));
                }
                backplan(&sandbox, &args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start backplan apply")
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| {
                let output: Output = c.wait_with_output().expect("wait for backplan apply");
                Run::from(output)
            })
            .collect();
        let mut backed_up = 0;
        for run in &runs {
            let context = || format!("round {round}:\n{}", show(&args, run, &server));
            assert!(!run.stderr.contains("panicked"), "{}", context());
            let (failed, codes) = failures_and_codes(run);
            // Failing cleanly: only because the repository was locked.
            for line in &failed {
                assert!(line.contains("BP222"), "{}", context());
            }
            for code in &codes {
                assert!(
                    code == "BP222" || code == "BP205",
                    "unexpected {code}\n{}",
                    context()
                );
            }
            if run.status != Some(0) {
                assert!(!failed.is_empty(), "{}", context());
                contended += 1;
            }
            if run.stdout.contains("✓ backup data") {
                backed_up += 1;
            }
        }
        assert!(
            backed_up >= 1,
            "round {round}: neither apply backed up\n{}\n{}",
            show(&args, &runs[0], &server),
            show(&args, &runs[1], &server)
        );

        let locks = objects(&server, &bucket, "locks/");
        assert!(locks.is_empty(), "round {round}: locks left: {locks:?}");
        let verify = ok(
            &sandbox,
            &server,
            &["verify", "--read-data", "--secret-key", key],
        );
        assert!(
            verify.stdout.contains("✓ s3"),
            "round {round}: {}",
            verify.stdout
        );
        let target = format!("data=restored-{round}");
        ok(
            &sandbox,
            &server,
            &[
                "restore",
                "--only",
                "data",
                "--target",
                &target,
                "--secret-key",
                key,
            ],
        );
        assert_same_tree(
            &sandbox.path("data"),
            &sandbox.path(&format!("restored-{round}")),
        );
    }
    eprintln!(
        "concurrent applies: {contended} of {} failed cleanly on a lock",
        2 * delays.len()
    );
}

/// A repository handle with its own operator (its own connections), like another
/// process's.
fn repo(server: &S3Server, bucket: &str) -> Repo {
    Repo::new("s3", server.operator(bucket, ROOT))
}

#[test]
fn moto_honours_opendal_conditional_writes() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("conditional");
    let op = server.operator(&bucket, ROOT);
    assert!(op.info().capability().write_with_if_not_exists);
    runtime().block_on(async {
        op.write_with("probe", b"first".to_vec())
            .if_not_exists(true)
            .await
            .expect("the first conditional write");
        let err = op
            .write_with("probe", b"second".to_vec())
            .if_not_exists(true)
            .await
            .expect_err("a conditional write over an existing object must fail");
        assert_eq!(err.kind(), ErrorKind::ConditionNotMatch, "{err}");
        let kept = op.read("probe").await.expect("read").to_vec();
        assert_eq!(kept, b"first", "the losing write replaced the object");

        // Racing writers, each with its own connections: exactly one wins each key.
        // (moto alone lets several win now and then: the harness makes its check and
        // store atomic, as on S3.)
        let ops: Vec<Operator> = (0..6).map(|_| server.operator(&bucket, ROOT)).collect();
        for round in 0..20 {
            let path = format!("race/{round}");
            let results = futures::future::join_all(ops.iter().enumerate().map(|(i, op)| {
                op.write_with(&path, format!("writer {i}").into_bytes())
                    .if_not_exists(true)
                    .into_future()
            }))
            .await;
            let wins = results.iter().filter(|r| r.is_ok()).count();
            for r in &results {
                if let Err(e) = r {
                    assert_eq!(e.kind(), ErrorKind::ConditionNotMatch, "{e}");
                }
            }
            assert_eq!(wins, 1, "round {round}: {results:?}");
        }
    });
}

#[test]
fn the_exclusive_s3_lock_has_at_most_one_holder() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("locks");
    let repos: Vec<Repo> = (0..4).map(|_| repo(&server, &bucket)).collect();
    runtime().block_on(async {
        // Several exclusive acquirers at once: exactly one wins, the others are told
        // the repository is locked.
        for round in 0..15 {
            let results = futures::future::join_all(
                repos.iter().map(|r| lock::acquire(r, LockKind::Exclusive)),
            )
            .await;
            let mut held = Vec::new();
            for result in results {
                match result {
                    Ok(h) => held.push(h),
                    Err(f) => assert_eq!(f.code, Code::RepositoryLocked, "{}", f.message),
                }
            }
            assert_eq!(
                held.len(),
                1,
                "round {round}: {} exclusive holders",
                held.len()
            );
            for h in held {
                h.release().await.expect("release");
            }
            let left = repos[0].locks().await.expect("list locks");
            assert!(left.is_empty(), "round {round}: locks left: {left:?}");
        }

        // A shared and an exclusive acquirer at once, each first in turn: never both.
        for round in 0..16 {
            let shared = lock::acquire(&repos[0], LockKind::Shared);
            let exclusive = lock::acquire(&repos[1], LockKind::Exclusive);
            let (shared, exclusive) = if round % 2 == 0 {
                futures::join!(shared, exclusive)
            } else {
                let (exclusive, shared) = futures::join!(exclusive, shared);
                (shared, exclusive)
            };
            assert!(
                !(shared.is_ok() && exclusive.is_ok()),
                "round {round}: a shared and an exclusive lock were both granted"
            );
            for f in [shared.as_ref().err(), exclusive.as_ref().err()]
                .into_iter()
                .flatten()
            {
                assert_eq!(f.code, Code::RepositoryLocked, "{}", f.message);
            }
            for h in [shared.ok(), exclusive.ok()].into_iter().flatten() {
                h.release().await.expect("release");
            }
            let left = repos[0].locks().await.expect("list locks");
            assert!(left.is_empty(), "round {round}: locks left: {left:?}");
        }

        // Held exclusively: everyone else is refused and told by whom, until released.
        let held = lock::acquire(&repos[0], LockKind::Exclusive)
            .await
            .expect("an exclusive lock on a free repository");
        for kind in [LockKind::Shared, LockKind::Exclusive] {
            let f = lock::acquire(&repos[1], kind)
                .await
                .expect_err("a second lock while an exclusive one is held");
            assert_eq!(f.code, Code::RepositoryLocked);
            assert!(
                f.message.contains("an exclusive lock held by"),
                "{}",
                f.message
            );
        }
        held.release().await.expect("release");
        let shared = lock::acquire(&repos[1], LockKind::Shared)
            .await
            .expect("a shared lock once the exclusive one is gone");
        shared.release().await.expect("release");
    });
}

#[test]
fn restore_and_verify_on_s3_refuse_an_exclusive_lock_with_bp222_and_leave_no_lock() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("reader-locks");
    let sandbox = Sandbox::with_policy(&policy(&server, &bucket, DATA_SOURCE));
    put(&sandbox, "data/file.bin", &noise(7, 600_000));
    ok(&sandbox, &server, &["init"]);
    ok(&sandbox, &server, &["apply"]);
    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    let restore = ["restore", "--target", "data=restored", "--secret-key", key];

    let prune = repo(&server, &bucket);
    let rt = runtime();
    let held = rt
        .block_on(lock::acquire(&prune, LockKind::Exclusive))
        .expect("an exclusive lock on a free repository");
    for args in [&restore[..], &["verify"]] {
        let run = Run::from(backplan(&sandbox, args).output().expect("run backplan"));
        let context = show(args, &run, &server);
        assert_ne!(run.status, Some(0), "{context}");
        assert!(run.stderr.contains("BP222"), "{context}");
        assert!(
            run.stderr.contains("an exclusive lock held by"),
            "{context}"
        );
        assert_eq!(
            objects(&server, &bucket, "locks/"),
            ["locks/exclusive"],
            "{context}"
        );
    }
    assert!(!sandbox.path("restored").exists());
    rt.block_on(held.release()).expect("release");

    ok(&sandbox, &server, &restore);
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
    ok(
        &sandbox,
        &server,
        &["verify", "--read-data", "--secret-key", key],
    );
    assert!(objects(&server, &bucket, "locks/").is_empty());
}

#[test]
fn a_damaged_s3_pack_is_replaced_by_a_repair_from_a_local_folder() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("repair");
    // The S3 destination first, then a local folder that holds the same snapshots.
    let text = policy(&server, &bucket, DATA_SOURCE).replace(
        "\nsources:\n",
        "  local:\n    type: fs\n    root: local\n\nsources:\n",
    );
    let sandbox = Sandbox::with_policy(&text);
    put(&sandbox, "data/big.bin", &noise(11, 1_500_000));
    put(&sandbox, "data/small.txt", b"repaired on S3\n");
    ok(&sandbox, &server, &["init"]);
    ok(&sandbox, &server, &["apply"]);
    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");

    // One changed byte in the largest pack on S3: its size stays.
    let op = server.operator(&bucket, ROOT);
    let rt = runtime();
    let listed = objects(&server, &bucket, "packs/");
    let pack = rt.block_on(async {
        let mut packs = Vec::new();
        for path in listed {
            let size = op.stat(&path).await.expect("stat").content_length();
            packs.push((size, path));
        }
        packs.sort();
        let (_, path) = packs.pop().expect("a pack on S3");
        let mut bytes = op.read(&path).await.expect("read").to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        op.write(&path, bytes).await.expect("write");
        path
    });
    let found = Run::from(
        backplan(&sandbox, &["verify", "--read-data", "--secret-key", key])
            .output()
            .expect("run backplan"),
    );
    let context = show(&["verify"], &found, &server);
    assert_ne!(found.status, Some(0), "{context}");
    assert!(found.stdout.contains(&pack), "{context}");
    assert!(found.stdout.contains("recorded in lost/"), "{context}");
    let plan = ok(&sandbox, &server, &["plan"]);
    assert!(
        plan.stdout.contains("1 pack lost on s3") && plan.stdout.contains("copied from local"),
        "{}",
        plan.stdout
    );
    let apply = ok(&sandbox, &server, &["apply"]);
    assert!(
        apply.stdout.contains("✓ repair s3 from local"),
        "{}",
        apply.stdout
    );

    // The pack of that name holds the right bytes again, and S3 alone restores.
    let verified = ok(
        &sandbox,
        &server,
        &["verify", "--read-data", "--secret-key", key],
    );
    assert!(verified.stdout.contains("✓ s3: "), "{}", verified.stdout);
    assert!(objects(&server, &bucket, "lost/").is_empty());
    std::fs::remove_dir_all(sandbox.path("local")).expect("remove local");
    ok(
        &sandbox,
        &server,
        &["restore", "--target", "data=restored", "--secret-key", key],
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
}

#[test]
fn listing_snapshots_while_a_prune_deletes_them_reports_nothing_damaged() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("list-prune");
    let repo = repo(&server, &bucket);
    let key = RepoKey::generate().expect("a repository key");
    let now = chrono::Utc::now();
    let ids: Vec<String> = (0..40)
        .map(|i| format!("20260101T000000Z-data-{i:04x}"))
        .collect();
    runtime().block_on(async {
        let writes = ids.iter().map(|id| {
            let info = SnapshotInfo {
                id: id.clone(),
                source: "data".into(),
                run_id: "run".into(),
                time: now,
                finished: Some(now),
                status: SnapshotStatus::Complete,
                bytes_read: Some(0),
                bytes_stored: Some(0),
                size: None,
                source_digest: None,
                policy_digest: None,
                retain_until: None,
            };
            let (repo, key) = (&repo, &key);
            async move { repo.put_snapshot(key, &info, &PackedTree::default()).await }
        });
        for written in futures::future::join_all(writes).await {
            written.expect("write a snapshot");
        }
        // A prune deletes the snapshots one by one while another process lists them:
        // a snapshot gone between the listing and the read was pruned, not damaged.
        let prune = async {
            for id in &ids {
                repo.delete_snapshot(id).await.expect("delete a snapshot");
            }
        };
        let list = async {
            loop {
                let headers = repo.snapshot_headers().await.expect("list snapshots");
                for (path, header) in &headers {
                    if let Err(f) = header {
                        panic!("{path} reported as unreadable: {}", f.message);
                    }
                }
                if headers.is_empty() {
                    break;
                }
            }
        };
        futures::join!(prune, list);
    });
}

#[test]
fn a_backup_and_restore_complete_through_s3_answering_every_seventh_object_request_503() {
    let Some(server) = S3Server::start_with(Faults {
        fail_every: Some(7),
        lose_conditionals: 0,
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.bucket("slow-down");
    let sources = format!("{CONFIG_SOURCE}{DATA_SOURCE}");
    let sandbox = Sandbox::with_policy(&policy(&server, &bucket, &sources));
    sandbox.write("app.env", "DATABASE_URL=postgres://app:hunter2@db/app\n");
    put(&sandbox, "data/big.bin", &noise(11, 9_000_000));
    for i in 0..20 {
        put(
            &sandbox,
            &format!("data/small/{i:02}.bin"),
            &noise(100 + i, 40_000),
        );
    }

    ok(&sandbox, &server, &["init"]);
    let apply = ok(&sandbox, &server, &["apply"]);
    for expected in ["✓ backup config → s3", "✓ backup data → s3", "0 failed"] {
        assert!(apply.stdout.contains(expected), "apply: {}", apply.stdout);
    }
    let during_apply = server.injected();
    eprintln!(
        "the apply's requests refused with 503: {}",
        during_apply.refused
    );
    assert!(
        during_apply.refused > 0,
        "no request of the apply was refused: the test proves nothing"
    );
    // Each retry is said on stderr, without the credentials.
    assert!(
        apply.stderr.contains("warning: destination s3:") && apply.stderr.contains("trying again"),
        "{}",
        show(&["apply"], &apply, &server)
    );
    assert!(
        !apply.stderr.contains(SECRET_ACCESS_KEY),
        "{}",
        apply.stderr
    );

    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    ok(
        &sandbox,
        &server,
        &["restore", "--target", "data=restored", "--secret-key", key],
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
    ok(
        &sandbox,
        &server,
        &["verify", "--read-data", "--secret-key", key],
    );
    let in_all = server.injected();
    eprintln!("requests refused with 503 in all: {}", in_all.refused);
    assert!(
        in_all.refused > during_apply.refused,
        "no request of the restore or verify was refused"
    );
    assert!(objects(&server, &bucket, "locks/").is_empty());
}

#[test]
fn a_lock_whose_conditional_write_answer_was_lost_is_taken_not_refused() {
    let Some(server) = S3Server::start_with(Faults {
        fail_every: None,
        // The exclusive lock's, the refused shared lock's, the last shared lock's.
        lose_conditionals: 3,
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.bucket("lost-answer");
    // As backplan opens a destination: with its retries.
    let repo = Repo::new(
        "s3",
        backplan::repo::resilient("s3", server.operator(&bucket, ROOT)),
    );
    runtime().block_on(async {
        let held = lock::acquire(&repo, LockKind::Exclusive)
            .await
            .unwrap_or_else(|f| panic!("the lock this process wrote was refused: {}", f.message));
        assert_eq!(
            server.injected().lost,
            1,
            "the lock's write was not answered 503 after it went through"
        );
        let locks = repo.locks().await.expect("list locks");
        assert_eq!(locks.len(), 1, "{locks:?}");
        let (path, lock) = &locks[0];
        assert_eq!(path, "locks/exclusive");
        assert_eq!(
            lock.as_ref().expect("a readable lock").pid,
            std::process::id()
        );
        // Another holder is still refused while it is held.
        let other = lock::acquire(&repo, LockKind::Shared)
            .await
            .expect_err("a shared lock while the exclusive one is held");
        assert_eq!(other.code, Code::RepositoryLocked);
        held.release().await.expect("release");
        assert!(repo.locks().await.expect("list locks").is_empty());

        // A shared lock's write, its answer lost the same way.
        let held = lock::acquire(&repo, LockKind::Shared)
            .await
            .unwrap_or_else(|f| {
                panic!(
                    "the shared lock this process wrote was refused: {}",
                    f.message
                )
            });
        assert_eq!(
            server.injected().lost,
            3,
            "the shared lock's answer was not lost"
        );
        let locks = repo.locks().await.expect("list locks");
        assert_eq!(locks.len(), 1, "{locks:?}");
        assert!(locks[0].0.starts_with("locks/shared-"), "{locks:?}");
        held.release().await.expect("release");
        assert!(repo.locks().await.expect("list locks").is_empty());
    });
}

/// A host of [`several_hosts_back_up_into_one_s3_repository_while_a_third_prunes`]:
/// its own sandbox, source and data folder.
struct Host {
    sandbox: Sandbox,
    source: &'static str,
    folder: &'static str,
}

impl Host {
    /// New data for `round`: one more file of its own, and `round.txt` naming the
    /// round, so that a restored snapshot says which round it holds.
    fn write_round(&self, round: u64) -> BTreeMap<PathBuf, Entry> {
        let seed = round * 1000 + self.source.len() as u64 + u64::from(self.source.as_bytes()[0]);
        put(
            &self.sandbox,
            &format!("{}/round-{round}.bin", self.folder),
            &noise(seed, 1_200_000),
        );
        put(
            &self.sandbox,
            &format!("{}/round.txt", self.folder),
            format!("round {round}\n").as_bytes(),
        );
        tree(&self.sandbox.path(self.folder))
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        backplan(&self.sandbox, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start backplan")
    }
}

/// Checks an apply of the multi-host test: it either did everything, or failed only
/// actions refused by a lock (BP222), saying so.
fn ok_or_locked(what: &str, run: &Run, args: &[&str], server: &S3Server) -> bool {
    let context = || format!("{what}:\n{}", show(args, run, server));
    assert!(!run.stderr.contains("panicked"), "{}", context());
    let (failed, codes) = failures_and_codes(run);
    for line in &failed {
        assert!(line.contains("BP222"), "{}", context());
    }
    for code in &codes {
        assert!(
            code == "BP222" || code == "BP205",
            "unexpected {code}\n{}",
            context()
        );
    }
    match run.status {
        Some(0) => {
            assert!(failed.is_empty(), "{}", context());
            true
        }
        _ => {
            assert!(!failed.is_empty(), "{}", context());
            false
        }
    }
}

#[test]
fn several_hosts_back_up_into_one_s3_repository_while_a_third_prunes() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("many-hosts");
    // Hosts A and B keep every snapshot of their own source; C, the trusted host,
    // names both sources and keeps only the newest of each.
    let keep_all = "    keep_last: 50\n";
    let keep_newest = "    keep_last: 1\n    min_keep: 1\n";
    let with_retention = |sources: &str, retention: &str| {
        policy(&server, &bucket, sources).replace("    keep_daily: 7\n    min_keep: 2\n", retention)
    };
    let alpha = "  alpha:\n    type: files\n    path: data-a\n";
    let beta = "  beta:\n    type: files\n    path: data-b\n";
    let a = Host {
        sandbox: Sandbox::with_policy(&with_retention(alpha, keep_all)),
        source: "alpha",
        folder: "data-a",
    };
    let b = Host {
        sandbox: Sandbox::with_policy(&with_retention(beta, keep_all)),
        source: "beta",
        folder: "data-b",
    };
    let c = Sandbox::with_policy(&with_retention(&format!("{alpha}{beta}"), keep_newest));
    std::fs::create_dir_all(c.path("data-a")).expect("create folder");
    std::fs::create_dir_all(c.path("data-b")).expect("create folder");
    a.write_round(0);
    ok(&a.sandbox, &server, &["init"]);
    // One repository key, copied to every host like any other secret.
    for other in [b.sandbox.root(), c.root()] {
        std::fs::copy(
            a.sandbox.path("repository.key"),
            other.join("repository.key"),
        )
        .expect("copy the repository key");
    }

    // What each host's data held in each round it backed up.
    let mut expected: BTreeMap<(&str, String), BTreeMap<PathBuf, Entry>> = BTreeMap::new();
    let (mut prunes_done, mut prunes_refused) = (0, 0);
    // Rounds 1–3: A and B together. Rounds 4–6: C prunes while they back up, started
    // a little later each round.
    for round in 1u64..=6 {
        let now = (chrono::Utc::now() + chrono::Duration::days(round as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let args = ["apply", "--now", now.as_str()];
        let trees = [a.write_round(round), b.write_round(round)];
        let children = [a.spawn(&args), b.spawn(&args)];
        let pruner = (round >= 4).then(|| {
            std::thread::sleep(std::time::Duration::from_millis(150 * (round - 4)));
            let mut command = backplan(&c, &["apply", "--max-deletes", "100"]);
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start the pruning apply")
        });
        for ((host, child), tree) in [&a, &b].into_iter().zip(children).zip(trees) {
            let run = Run::from(child.wait_with_output().expect("wait for apply"));
            ok_or_locked(
                &format!("round {round}, {}", host.source),
                &run,
                &args,
                &server,
            );
            if run.stdout.contains(&format!("✓ backup {}", host.source)) {
                expected.insert((host.source, format!("round {round}\n")), tree);
            }
        }
        if let Some(child) = pruner {
            let run = Run::from(child.wait_with_output().expect("wait for the prune"));
            let args = ["apply", "--max-deletes", "100"];
            assert!(
                !run.stdout.contains("✓ backup"),
                "the pruning host backed up: {}",
                show(&args, &run, &server)
            );
            if ok_or_locked(&format!("round {round}, prune"), &run, &args, &server) {
                if run.stdout.contains("✓ prune") {
                    prunes_done += 1;
                }
            } else {
                prunes_refused += 1;
            }
        }
        let locks = objects(&server, &bucket, "locks/");
        assert!(locks.is_empty(), "round {round}: locks left: {locks:?}");
    }
    // A last prune alone, nothing in its way (when the last round's prune left
    // anything to do): below, only the newest snapshot of each source is left.
    ok(&c, &server, &["apply", "--max-deletes", "100"]);
    eprintln!(
        "several hosts: prunes during backups: {prunes_done} done, {prunes_refused} refused on a lock; \
         {} backups succeeded",
        expected.len()
    );

    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    let verify = ok(&c, &server, &["verify", "--read-data", "--secret-key", key]);
    assert!(verify.stdout.contains("✓ s3"), "verify: {}", verify.stdout);
    // Every snapshot left restores to exactly what its host held in its round.
    let listed = ok(&c, &server, &["snapshots", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    let snapshots = json["destinations"]["s3"]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots: {json}"));
    let mut restored = BTreeMap::<&str, usize>::new();
    for s in snapshots {
        assert_eq!(s["status"], "complete", "{s}");
        let id = s["id"].as_str().expect("an id");
        let host = match s["source"].as_str() {
            Some("alpha") => &a,
            Some("beta") => &b,
            other => panic!("a snapshot of {other:?}"),
        };
        let into = format!("restored/{id}");
        let target = format!("{}={into}", host.source);
        ok(
            &host.sandbox,
            &server,
            &[
                "restore",
                "--snapshot",
                id,
                "--target",
                &target,
                "--secret-key",
                key,
            ],
        );
        let round = std::fs::read_to_string(host.sandbox.path(&format!("{into}/round.txt")))
            .expect("round.txt restored");
        let want = expected
            .get(&(host.source, round.clone()))
            .unwrap_or_else(|| {
                panic!(
                    "{id} holds {round:?}, which no backup of {} reported",
                    host.source
                )
            });
        assert!(
            tree(&host.sandbox.path(&into)) == *want,
            "{id} ({} {round:?}) does not restore to what was backed up",
            host.source
        );
        *restored.entry(host.source).or_default() += 1;
    }
    // The final prune kept exactly the newest of each.
    assert_eq!(
        restored,
        BTreeMap::from([("alpha", 1), ("beta", 1)]),
        "{json}"
    );
}

/// The access key id of the append-only host in
/// [`an_append_only_host_never_deletes_outside_locks_and_the_trusted_host_prunes`].
const APPEND_ONLY_KEY: &str = "backplan-append-only";

#[test]
fn an_append_only_host_never_deletes_outside_locks_and_the_trusted_host_prunes() {
    // The server refuses the append-only host's DELETEs outside `locks/`, as the IAM
    // policy in docs/security.md does.
    let Some(server) = S3Server::start_with(Faults {
        append_only_key: Some(APPEND_ONLY_KEY),
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.bucket("append-only");
    let text = policy(&server, &bucket, DATA_SOURCE)
        .replace(
            "    keep_daily: 7\n    min_keep: 2\n",
            "    keep_last: 1\n    min_keep: 1\n",
        )
        .replace(
            "    secret_access_key: ${env:",
            "    append_only: true\n    secret_access_key: ${env:",
        );
    assert!(text.contains("append_only: true") && text.contains("keep_last: 1"));
    let sandbox = Sandbox::with_policy(&text);
    put(&sandbox, "data/base.bin", &noise(7, 800_000));
    // The backup host signs with the append-only key.
    let as_backup_host = |args: &[&str]| {
        let mut command = backplan(&sandbox, args);
        command.env(KEY_ID_VAR, APPEND_ONLY_KEY);
        Run::from(command.output().expect("run backplan"))
    };
    let init = as_backup_host(&["init"]);
    assert_eq!(init.status, Some(0), "{}", show(&["init"], &init, &server));
    // Two snapshot catalogs, as two hosts rewriting it at once leave: an apply
    // would fold them into one and delete both, on a destination it may delete on.
    let catalog = backplan::repo::object::encode(
        &backplan::repo::format::CatalogHeader {
            format: backplan::repo::format::FORMAT_VERSION,
            snapshots: BTreeMap::new(),
        },
        &[],
    );
    let op = server.operator(&bucket, ROOT);
    runtime().block_on(async {
        for name in ["catalog/first", "catalog/second"] {
            op.write(name, catalog.clone())
                .await
                .expect("write a catalog");
        }
    });

    for round in 1..=3i64 {
        put(
            &sandbox,
            "data/round.txt",
            format!("round {round}\n").as_bytes(),
        );
        put(
            &sandbox,
            &format!("data/round-{round}.bin"),
            &noise(20 + round as u64, 400_000),
        );
        let now = (chrono::Utc::now() + chrono::Duration::days(round))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let args = ["apply", "--now", now.as_str()];
        let run = as_backup_host(&args);
        let context = || format!("round {round}: {}", show(&args, &run, &server));
        assert_eq!(run.status, Some(0), "{}", context());
        assert!(run.stdout.contains("✓ backup data → s3"), "{}", context());
        // From the third round on, the plan (made before this round's backup)
        // prunes: shown and skipped with its reason, not carried out.
        if round > 2 {
            assert!(
                run.stdout
                    .contains("s3 is append-only; a host with --role prune prunes it"),
                "{}",
                context()
            );
        }
        let injected = server.injected();
        assert_eq!(injected.deletes_refused, 0, "{}", context());
        // Its locks were released: the one kind of delete it may do.
        assert!(injected.deletes > 0, "{injected:?}");
        assert!(
            objects(&server, &bucket, "locks/").is_empty(),
            "{}",
            context()
        );
    }
    assert_eq!(objects(&server, &bucket, "snapshots/").len(), 3);
    // The plan says who prunes.
    let plan = as_backup_host(&["plan"]);
    assert!(
        plan.stdout
            .contains("[held: append-only, for --role prune]")
            && plan.stdout.contains("BP216"),
        "{}",
        plan.stdout
    );

    // The trusted host, whose credentials may delete, runs retention.
    let pruned = ok(&sandbox, &server, &["apply", "--role", "prune"]);
    assert!(pruned.stdout.contains("✓ prune data"), "{}", pruned.stdout);
    assert!(!pruned.stdout.contains("backup data"), "{}", pruned.stdout);
    assert_eq!(objects(&server, &bucket, "snapshots/").len(), 1);
    assert_eq!(server.injected().deletes_refused, 0);
    // The trusted host folded the catalogs.
    assert_eq!(objects(&server, &bucket, "catalog/").len(), 1);

    let key = secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    let verify = ok(
        &sandbox,
        &server,
        &["verify", "--read-data", "--secret-key", key],
    );
    assert!(verify.stdout.contains("✓ s3"), "verify: {}", verify.stdout);
    ok(
        &sandbox,
        &server,
        &["restore", "--target", "data=restored", "--secret-key", key],
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
}

#[test]
fn the_append_only_test_server_refuses_that_key_s_deletes_outside_locks() {
    // The check above is only as good as this refusal.
    let Some(server) = S3Server::start_with(Faults {
        append_only_key: Some(APPEND_ONLY_KEY),
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.bucket("refusal");
    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket(&bucket)
            .root(ROOT)
            .region(REGION)
            .endpoint(&server.endpoint())
            .access_key_id(APPEND_ONLY_KEY)
            .secret_access_key(SECRET_ACCESS_KEY),
    )
    .expect("an S3 operator");
    runtime().block_on(async {
        op.write("packs/00/p", vec![1u8; 10]).await.expect("write");
        op.write("locks/l", vec![1u8; 10]).await.expect("write");
        let refused = op.delete("packs/00/p").await.expect_err("a refused delete");
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
        op.delete("locks/l").await.expect("a lock may go");
        assert!(op.exists("packs/00/p").await.expect("stat"));
        assert!(!op.exists("locks/l").await.expect("stat"));
    });
    assert_eq!(server.injected().deletes_refused, 1);
    assert_eq!(server.injected().deletes, 1);
}

#[test]
fn another_host_backing_up_neither_stales_a_saved_plan_nor_shows_as_a_policy_change() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.bucket("saved-plan");
    let host = |source: &'static str, folder: &'static str| Host {
        sandbox: Sandbox::with_policy(&policy(
            &server,
            &bucket,
            &format!("  {source}:\n    type: files\n    path: {folder}\n"),
        )),
        source,
        folder,
    };
    let a = host("alpha", "data-a");
    let b = host("beta", "data-b");
    a.write_round(1);
    b.write_round(1);
    ok(&a.sandbox, &server, &["init"]);
    std::fs::copy(
        a.sandbox.path("repository.key"),
        b.sandbox.root().join("repository.key"),
    )
    .expect("copy the repository key");
    ok(&a.sandbox, &server, &["apply"]);
    let later = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // A plans and saves; B backs up (new snapshots, a policy of its own recorded);
    // A's reviewed plan still applies.
    a.write_round(2);
    ok(
        &a.sandbox,
        &server,
        &["plan", "--now", &later, "--out", "plan.json"],
    );
    let run = ok(&b.sandbox, &server, &["apply"]);
    assert!(run.stdout.contains("✓ backup beta"), "{}", run.stdout);
    let run = ok(&a.sandbox, &server, &["apply", "plan.json"]);
    assert!(run.stdout.contains("✓ backup alpha"), "{}", run.stdout);
    // Each host compares its policy with the one it applied last, not with the
    // other host's, which B recorded last.
    let plan = ok(&b.sandbox, &server, &["plan"]);
    assert!(!plan.stdout.contains("Policy changed"), "{}", plan.stdout);
    let plan = ok(&a.sandbox, &server, &["plan"]);
    assert!(!plan.stdout.contains("Policy changed"), "{}", plan.stdout);

    // A change to what A's plan reads (a backup of its own source) still makes it
    // stale.
    ok(
        &a.sandbox,
        &server,
        &["plan", "--now", &later, "--out", "plan.json"],
    );
    ok(&a.sandbox, &server, &["apply", "--now", &later]);
    let run = Run::from(
        backplan(&a.sandbox, &["apply", "plan.json"])
            .output()
            .expect("run backplan"),
    );
    assert_ne!(run.status, Some(0), "{}", run.stdout);
    assert!(run.stderr.contains("BP203"), "{}", run.stderr);

    // A's own change is shown.
    let text = std::fs::read_to_string(a.sandbox.path("backplan.yaml")).expect("read policy");
    a.sandbox.write(
        "backplan.yaml",
        &text.replace("keep_daily: 7", "keep_daily: 8"),
    );
    let plan = ok(&a.sandbox, &server, &["plan"]);
    assert!(
        plan.stdout.contains("Policy changed") && plan.stdout.contains("keep_daily: 8"),
        "{}",
        plan.stdout
    );
}

/// A made-up signature: moto does not check it, but treats a request without one
/// as anonymous (refused on private objects).
const AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=backplan-test-key/20260101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0000",
);

/// Whether `text` holds the XML element `<name>…</name>`; its first value.
fn xml_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(&text[start..end])
}

/// An S3 Object Lock bucket (default retention 7 days, compliance mode) as the
/// destination, `object_lock.retain_for: 7d` in the policy, `keep_last: 1`:
/// backplan's writes carry the checksum such a bucket requires; the prune of an
/// older snapshot is held, with the date its lock ends (read from the snapshot's
/// header, not from the objects), until a later apply runs past that date; and the
/// objects themselves cannot be deleted (their versions), as S3 enforces.
#[test]
fn an_object_lock_bucket_takes_backups_and_prunes_wait_for_the_lock_to_end() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.locked_bucket("object-lock", "COMPLIANCE", 7);
    // The bucket refuses a PUT with no checksum (as S3 does): what backplan must send.
    let (status, body) = server
        .raw(
            "PUT",
            &format!("/{bucket}/probe"),
            &[("Content-Type", "application/octet-stream")],
            b"no checksum",
        )
        .expect("a PUT");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("MissingUploadObjectWithObjectLockHeaders"),
        "{body}"
    );

    let text = policy(&server, &bucket, DATA_SOURCE)
        .replace(
            "    keep_daily: 7\n    min_keep: 2\n",
            "    keep_last: 1\n    min_keep: 1\n",
        )
        .replace(
            "    secret_access_key: ${env:",
            "    object_lock:\n      retain_for: 7d\n    secret_access_key: ${env:",
        );
    assert!(text.contains("retain_for: 7d") && text.contains("keep_last: 1"));
    let sandbox = Sandbox::with_policy(&text);
    let validate = ok(&sandbox, &server, &["validate"]);
    assert!(!validate.stdout.contains("BP135"), "{}", validate.stdout);
    put(&sandbox, "data/base.bin", &noise(9, 600_000));
    ok(&sandbox, &server, &["init"]);

    let started = chrono::Utc::now();
    for round in 1..=3i64 {
        put(
            &sandbox,
            &format!("data/round-{round}.bin"),
            &noise(30 + round as u64, 300_000),
        );
        let now = (chrono::Utc::now() + chrono::Duration::days(round))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let run = ok(&sandbox, &server, &["apply", "--now", now.as_str()]);
        assert!(run.stdout.contains("✓ backup data → s3"), "{}", run.stdout);
        if round == 3 {
            // The plan of this round prunes the first snapshot: held, not tried.
            assert!(
                run.stdout.contains("held back: under S3 Object Lock until"),
                "{}",
                run.stdout
            );
        }
    }
    let finished = chrono::Utc::now();
    let mut snapshots = objects(&server, &bucket, "snapshots/");
    snapshots.sort();
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");

    // Each snapshot records when its lock ends: 7 days after it was written.
    let op = server.operator(&bucket, ROOT);
    let headers: Vec<SnapshotInfo> = runtime().block_on(async {
        let mut out = Vec::new();
        for path in &snapshots {
            let bytes = op.read(path).await.expect("read a snapshot").to_vec();
            let header: backplan::repo::format::SnapshotHeader =
                backplan::repo::object::header(&bytes).expect("a snapshot header");
            out.push(header.snapshot);
        }
        out
    });
    for info in &headers {
        let until = info.retain_until.expect("retain_until recorded");
        assert!(
            until >= started + chrono::Duration::days(7)
                && until <= finished + chrono::Duration::days(7),
            "{info:?}"
        );
    }
    // Every pack's own lock (set by the bucket, read back with a HEAD) ends no
    // later than the time recorded in the newest snapshot: packs are written before
    // the snapshot header.
    let newest = headers
        .iter()
        .filter_map(|i| i.retain_until)
        .max()
        .expect("a date");
    let packs = objects(&server, &bucket, "packs/");
    assert!(!packs.is_empty());
    for pack in &packs {
        let (status, head) = server
            .raw("HEAD", &format!("/{bucket}{ROOT}/{pack}"), &[AUTH], b"")
            .expect("a HEAD");
        assert_eq!(status, 200, "{pack}: {head}");
        let until = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("x-amz-object-lock-retain-until-date:")
                    .then(|| l.split_once(':').map(|(_, v)| v.trim().to_string()))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("{pack} has no lock: {head}"));
        let until =
            chrono::DateTime::parse_from_rfc3339(&until).unwrap_or_else(|e| panic!("{until}: {e}"));
        assert!(
            until <= newest,
            "{pack} locked until {until}, after {newest}"
        );
    }
    let oldest = headers
        .iter()
        .min_by_key(|i| i.time)
        .expect("a snapshot")
        .clone();
    let oldest_until = oldest.retain_until.expect("a date");
    assert!(oldest_until <= newest);

    // The plan shows the held prune with its date, and why.
    let plan = ok(&sandbox, &server, &["plan"]);
    let shown = format!(
        "[held: object lock until {}]",
        oldest_until.format("%Y-%m-%d %H:%M UTC")
    );
    assert!(
        plan.stdout.contains(&shown) && plan.stdout.contains("BP255"),
        "expected {shown}:\n{}",
        plan.stdout
    );
    assert_eq!(objects(&server, &bucket, "snapshots/").len(), 3);

    // The objects cannot be deleted: a DELETE of a pack's version is refused by
    // the bucket (what ransomware with the host's credentials would try).
    let (status, versions) = server
        .raw(
            "GET",
            &format!("/{bucket}?versions&prefix=backups/repo/packs/"),
            &[AUTH],
            b"",
        )
        .expect("list versions");
    assert_eq!(status, 200, "{versions}");
    let key = xml_value(&versions, "Key").expect("a pack version");
    let version = xml_value(&versions, "VersionId").expect("a version id");
    let (status, body) = server
        .raw(
            "DELETE",
            &format!("/{bucket}/{key}?versionId={version}"),
            &[AUTH],
            b"",
        )
        .expect("a DELETE");
    assert_eq!(status, 403, "deleting a locked version: {body}");
    assert!(body.contains("AccessDenied"), "{body}");
    // The same request without a version id succeeds, as on S3: it only hides the
    // object behind a delete marker; the locked version stays. (Shown on an object
    // of its own, written with Content-MD5, so the repository stays whole.)
    let (status, body) = server
        .raw(
            "PUT",
            &format!("/{bucket}/probe"),
            &[
                AUTH,
                ("Content-Type", "application/octet-stream"),
                ("Content-MD5", "v5Ea8QEaAKkr7/KEbArU7g=="),
            ],
            b"locked probe",
        )
        .expect("a PUT");
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .raw("DELETE", &format!("/{bucket}/probe"), &[AUTH], b"")
        .expect("a DELETE");
    assert_eq!(status, 204, "{body}");
    let (_, versions) = server
        .raw(
            "GET",
            &format!("/{bucket}?versions&prefix=probe"),
            &[AUTH],
            b"",
        )
        .expect("list versions");
    assert!(
        versions.contains("<DeleteMarker>") && versions.contains("<Version>"),
        "{versions}"
    );

    // Past the lock's end, the prune runs.
    let later = (oldest_until + chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let plan = ok(&sandbox, &server, &["plan", "--now", later.as_str()]);
    assert!(
        !plan.stdout.contains("object lock until"),
        "{}",
        plan.stdout
    );
    let pruned = ok(
        &sandbox,
        &server,
        &["apply", "--role", "prune", "--now", later.as_str()],
    );
    assert!(pruned.stdout.contains("✓ prune data"), "{}", pruned.stdout);
    let left = objects(&server, &bucket, "snapshots/");
    assert!(
        !left.contains(&format!("snapshots/{}", oldest.id)),
        "{left:?}"
    );
    // The packs the later snapshots reuse were written seconds before them: their
    // locks cover those snapshots, and verify says nothing of them.
    let verify = ok(&sandbox, &server, &["verify"]);
    assert!(verify.stdout.contains("✓ s3"), "{}", verify.stdout);
    assert!(!verify.stdout.contains("BP256"), "{}", verify.stdout);
    // The bucket's default (7 days) is retain_for: no BP258.
    assert!(!verify.stdout.contains("BP258"), "{}", verify.stdout);
    let json = ok(&sandbox, &server, &["verify", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json[0]["bucket_lock"]["differs"], false, "{json}");
    assert_eq!(json[0]["bucket_lock"]["default"]["days"], 7, "{json}");
    assert!(json[0]["locks_read"].as_u64() > Some(0), "{json}");
}

/// A pack's retention as a HEAD shows it: its mode and retain-until date.
fn head_retention(
    server: &S3Server,
    bucket: &str,
    pack: &str,
) -> (String, chrono::DateTime<chrono::Utc>) {
    let (status, head) = server
        .raw("HEAD", &format!("/{bucket}{ROOT}/{pack}"), &[AUTH], b"")
        .expect("a HEAD");
    assert_eq!(status, 200, "{pack}: {head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{pack} has no {name}: {head}"))
    };
    let until = header("x-amz-object-lock-retain-until-date");
    let until = chrono::DateTime::parse_from_rfc3339(&until)
        .unwrap_or_else(|e| panic!("{until}: {e}"))
        .with_timezone(&chrono::Utc);
    (header("x-amz-object-lock-mode"), until)
}

/// The snapshot headers under `snapshots/`, oldest first.
fn snapshot_headers(server: &S3Server, bucket: &str) -> Vec<SnapshotInfo> {
    let op = server.operator(bucket, ROOT);
    let paths = objects(server, bucket, "snapshots/");
    let mut out: Vec<SnapshotInfo> = runtime().block_on(async {
        let mut out = Vec::new();
        for path in &paths {
            let bytes = op.read(path).await.expect("read a snapshot").to_vec();
            let header: backplan::repo::format::SnapshotHeader =
                backplan::repo::object::header(&bytes).expect("a snapshot header");
            out.push(header.snapshot);
        }
        out
    });
    out.sort_by_key(|i| i.time);
    out
}

/// Deletes a pack's version (what ransomware holding the host's keys would try);
/// the status and answer.
fn delete_pack_version(
    server: &S3Server,
    bucket: &str,
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    let (status, versions) = server
        .raw(
            "GET",
            &format!("/{bucket}?versions&prefix=backups/repo/packs/"),
            &[AUTH],
            b"",
        )
        .expect("list versions");
    assert_eq!(status, 200, "{versions}");
    let key = xml_value(&versions, "Key")
        .expect("a pack version")
        .to_string();
    let version = xml_value(&versions, "VersionId").expect("a version id");
    let mut headers = vec![AUTH];
    headers.extend_from_slice(extra);
    let (status, body) = server
        .raw(
            "DELETE",
            &format!("/{bucket}/{key}?versionId={version}"),
            &headers,
            b"",
        )
        .expect("a DELETE");
    (status, body, key)
}

/// A compliance bucket whose default retention (1 day) is shorter than the
/// policy's `retain_for: 7d`: `verify` reads each pack's own retention and reports
/// the short ones (BP256, which the dates derived from Last-Modified would miss) and
/// the bucket's differing default (BP258). With `extend: true`, the plan says the
/// next backup extends its packs' locks, the backup does (every pack it uses now
/// reads back with the snapshot's date), the extended versions still cannot be
/// deleted, and verify finds no short lock; once the bucket's default is 7 days,
/// no BP258 either.
#[test]
fn extend_lengthens_the_locks_of_the_packs_a_backup_uses_and_verify_reads_the_real_ones() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.locked_bucket("extend", "COMPLIANCE", 1);
    let locked = |extend: bool| {
        policy(&server, &bucket, DATA_SOURCE).replace(
            "    secret_access_key: ${env:",
            &format!(
                "    object_lock:\n      retain_for: 7d\n{}    secret_access_key: ${{env:",
                if extend { "      extend: true\n" } else { "" }
            ),
        )
    };
    let sandbox = Sandbox::with_policy(&locked(false));
    put(&sandbox, "data/base.bin", &noise(41, 900_000));
    ok(&sandbox, &server, &["init"]);
    let first = ok(&sandbox, &server, &["apply"]);
    assert!(
        !first.stdout.contains("object lock on"),
        "no extension without extend: true\n{}",
        first.stdout
    );
    let packs = objects(&server, &bucket, "packs/");
    assert!(!packs.is_empty());
    let snapshot = snapshot_headers(&server, &bucket).remove(0);
    let needed = snapshot.retain_until.expect("retain_until recorded");
    for pack in &packs {
        let (mode, until) = head_retention(&server, &bucket, pack);
        assert_eq!(mode, "COMPLIANCE");
        assert!(
            until < needed - chrono::Duration::days(5),
            "{pack}: {until}"
        );
    }

    // verify reads the packs' own retention: each ends 6 days before the snapshot's.
    let verify = ok(&sandbox, &server, &["verify", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&verify.stdout).expect("JSON");
    let found = &json[0];
    assert_eq!(found["locks_read"], packs.len(), "{found}");
    let short = found["short_locks"].as_array().expect("short locks");
    assert_eq!(short.len(), packs.len(), "{found}");
    assert!(short.iter().all(|s| s["read"] == true), "{found}");
    assert_eq!(found["bucket_lock"]["differs"], true, "{found}");
    assert_eq!(found["bucket_lock"]["default"]["days"], 1, "{found}");
    assert_eq!(found["bucket_lock"]["retain_for_days"], 7, "{found}");
    let verify = ok(&sandbox, &server, &["verify"]);
    assert!(
        verify.stdout.contains("BP256") && verify.stdout.contains("read from the object"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains("BP258")
            && verify
                .stdout
                .contains("a default retention of 1 day (compliance)"),
        "{}",
        verify.stdout
    );

    // With extend: the plan says so, and the backup extends every pack it uses.
    sandbox.write("backplan.yaml", &locked(true));
    put(&sandbox, "data/more.bin", &noise(42, 300_000));
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let plan = ok(&sandbox, &server, &["plan", "--now", tomorrow.as_str()]);
    assert!(
        plan.stdout
            .contains("then extends the object locks of its packs on s3"),
        "{}",
        plan.stdout
    );
    let plan = ok(
        &sandbox,
        &server,
        &["plan", "--now", tomorrow.as_str(), "--format", "json"],
    );
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect("JSON");
    let backup = json["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["action"] == "backup"))
        .unwrap_or_else(|| panic!("a backup: {json}"));
    assert_eq!(
        backup["extend_locks"],
        serde_json::json!(["s3"]),
        "{backup}"
    );
    let second = ok(
        &sandbox,
        &server,
        &["apply", "--now", tomorrow.as_str(), "--format", "json"],
    );
    let report: serde_json::Value = serde_json::from_str(&second.stdout).expect("JSON");
    let lock = &report["outcomes"][0]["locks"][0];
    let all = objects(&server, &bucket, "packs/");
    assert!(all.len() > packs.len(), "the new file wrote packs: {all:?}");
    assert_eq!(lock["destination"], "s3", "{report}");
    assert_eq!(lock["checked"], all.len(), "{report}");
    // The earlier packs had 1-day locks, and so do the new ones (the bucket's
    // default): all of them are extended.
    assert_eq!(lock["extended"], all.len(), "{report}");
    assert!(lock.get("error").is_none(), "{report}");

    let newest = snapshot_headers(&server, &bucket)
        .pop()
        .expect("a snapshot")
        .retain_until
        .expect("retain_until recorded");
    assert_eq!(
        lock["until"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>()),
        Some(Ok(newest)),
        "{report}"
    );
    for pack in &all {
        let (mode, until) = head_retention(&server, &bucket, pack);
        assert_eq!(mode, "COMPLIANCE", "{pack}: the mode it had");
        assert!(
            until >= newest && until <= newest + chrono::Duration::seconds(2),
            "{pack} locked until {until}, the snapshot until {newest}"
        );
    }
    // An extended version is as undeletable as before.
    let (status, body, key) = delete_pack_version(&server, &bucket, &[]);
    assert_eq!(status, 403, "deleting {key}: {body}");
    assert!(body.contains("AccessDenied"), "{body}");

    // The next backup, seconds later, extends only what its new file wrote: the
    // packs extended just now already reach (within two minutes) its date.
    put(&sandbox, "data/third.bin", &noise(43, 1000));
    let later = (chrono::Utc::now() + chrono::Duration::days(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let third = ok(
        &sandbox,
        &server,
        &["apply", "--now", later.as_str(), "--format", "json"],
    );
    let report: serde_json::Value = serde_json::from_str(&third.stdout).expect("JSON");
    let lock = &report["outcomes"][0]["locks"][0];
    let now_all = objects(&server, &bucket, "packs/");
    assert_eq!(lock["checked"], now_all.len(), "{report}");
    assert_eq!(lock["extended"], now_all.len() - all.len(), "{report}");

    // verify: no short lock; the bucket's default still differs (moto, unlike S3,
    // refuses to change it once the bucket holds objects; the matching case is in
    // `an_object_lock_bucket_takes_backups_and_prunes_wait_for_the_lock_to_end`).
    let verify = ok(&sandbox, &server, &["verify"]);
    assert!(!verify.stdout.contains("BP256"), "{}", verify.stdout);
    assert!(verify.stdout.contains("BP258"), "{}", verify.stdout);
}

/// Governance mode: the extension keeps the mode, and the extended version cannot
/// be deleted without `x-amz-bypass-governance-retention` (what backplan's
/// credentials must never be allowed, docs/security.md); with it, it can.
#[test]
fn a_governance_lock_is_extended_in_governance_mode_and_refuses_a_delete_without_bypass() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.locked_bucket("governance", "GOVERNANCE", 1);
    let text = policy(&server, &bucket, CONFIG_SOURCE).replace(
        "    secret_access_key: ${env:",
        "    object_lock:\n      retain_for: 3d\n      extend: true\n    secret_access_key: ${env:",
    );
    let sandbox = Sandbox::with_policy(&text);
    put(&sandbox, "app.env", b"SECRET=1\n");
    ok(&sandbox, &server, &["init"]);
    let run = ok(&sandbox, &server, &["apply"]);
    assert!(
        run.stdout.contains("object lock on s3: ") && run.stdout.contains(" extended until "),
        "{}",
        run.stdout
    );
    let until = snapshot_headers(&server, &bucket)
        .pop()
        .and_then(|s| s.retain_until)
        .expect("retain_until recorded");
    for pack in objects(&server, &bucket, "packs/") {
        let (mode, locked) = head_retention(&server, &bucket, &pack);
        assert_eq!(mode, "GOVERNANCE");
        assert!(locked >= until, "{pack}: {locked} before {until}");
    }
    let (status, body, key) = delete_pack_version(&server, &bucket, &[]);
    assert_eq!(status, 403, "deleting {key}: {body}");
    let (status, body, key) = delete_pack_version(
        &server,
        &bucket,
        &[("x-amz-bypass-governance-retention", "true")],
    );
    assert_eq!(status, 204, "deleting {key} with the bypass: {body}");
}

const NO_RETENTION_KEY: &str = "backplan-no-retention";

/// `extend: true` with credentials the bucket refuses `PutObjectRetention`: the
/// backup still succeeds and its snapshot is complete, the report carries warning
/// BP257 with its help (JSON: the `locks` entry's `error`), the pack keeps the
/// bucket's lock, and the secret key appears nowhere in the output.
#[test]
fn a_refused_lock_extension_is_warning_bp257_and_the_backup_still_succeeds() {
    let Some(server) = S3Server::start_with(Faults {
        no_retention_key: Some(NO_RETENTION_KEY),
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.locked_bucket("refused", "COMPLIANCE", 1);
    let text = policy(&server, &bucket, CONFIG_SOURCE).replace(
        "    secret_access_key: ${env:",
        "    object_lock:\n      retain_for: 2d\n      extend: true\n    secret_access_key: ${env:",
    );
    let sandbox = Sandbox::with_policy(&text);
    put(&sandbox, "app.env", b"SECRET=1\n");
    ok(&sandbox, &server, &["init"]);
    let mut command = backplan(&sandbox, &["apply"]);
    command.env(KEY_ID_VAR, NO_RETENTION_KEY);
    let run = Run::from(command.output().expect("run backplan"));
    assert_eq!(run.status, Some(0), "{}", show(&["apply"], &run, &server));
    assert!(
        run.stdout.contains("✓ backup config → s3")
            && run
                .stdout
                .contains("object lock on s3: 0 packs checked, 0 extended")
            && run
                .stdout
                .contains("! warning BP257: destination s3: extending the lock of packs/")
            && run.stdout.contains("HTTP 403 AccessDenied")
            && run.stdout.contains("help: the snapshot is complete"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(SECRET_ACCESS_KEY) && !run.stderr.contains(SECRET_ACCESS_KEY));
    let snapshots = snapshot_headers(&server, &bucket);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].status, SnapshotStatus::Complete);
    let until = snapshots[0].retain_until.expect("retain_until recorded");
    for pack in objects(&server, &bucket, "packs/") {
        let (_, locked) = head_retention(&server, &bucket, &pack);
        assert!(
            locked < until - chrono::Duration::hours(12),
            "{pack}: {locked}"
        );
    }

    // The same in JSON: the error is typed, with its code.
    put(&sandbox, "app.env", b"SECRET=2\n");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let args = ["apply", "--now", tomorrow.as_str(), "--format", "json"];
    let mut command = backplan(&sandbox, &args);
    command.env(KEY_ID_VAR, NO_RETENTION_KEY);
    let run = Run::from(command.output().expect("run backplan"));
    assert_eq!(run.status, Some(0), "{}", show(&args, &run, &server));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let lock = &report["outcomes"][0]["locks"][0];
    assert_eq!(lock["error"]["code"], "BP257", "{report}");
    assert_eq!(report["outcomes"][0]["status"], "done", "{report}");
}

/// Percent-encodes a form value.
fn form(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The Object Lock requests backplan signs itself (a HEAD's retention,
/// PutObjectRetention, GetObjectLockConfiguration) against a server that checks
/// every signature as S3 does (moto's IAM authentication, which recomputes SigV4
/// with botocore) for the key of a user it knows: each goes through and does what
/// it says, and the same requests signed with a wrong secret are refused. (OpenDAL's
/// own requests are not part of it: moto's checker refuses its listings with a
/// `prefix=a/b` query, a quirk of moto's, not of how S3 checks them.)
#[test]
fn the_object_lock_requests_carry_signatures_an_s3_checker_accepts() {
    use backplan::repo::s3lock::{DefaultRetention, LockMode, ObjectLockApi, Retention, S3Target};

    let Some(server) = S3Server::start_with(Faults {
        authenticate_after: Some(16),
        ..Faults::default()
    }) else {
        return;
    };
    let bucket = server.locked_bucket("signed", "COMPLIANCE", 1);
    // A pack-like object, written while requests are not checked yet.
    let body = b"a locked object";
    let md5 = openssl::hash::hash(openssl::hash::MessageDigest::md5(), body).expect("md5");
    let md5 = openssl::base64::encode_block(&md5);
    let (status, answer) = server
        .raw(
            "PUT",
            &format!("/{bucket}{ROOT}/packs/aa/aa01"),
            &[AUTH, ("Content-MD5", md5.as_str())],
            body,
        )
        .expect("a PUT");
    assert_eq!(status, 200, "{answer}");
    // An IAM user allowed everything.
    let iam = |body: String| {
        let (status, answer) = server
            .raw(
                "POST",
                "/",
                &[
                    (
                        "Authorization",
                        "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, \
                         SignedHeaders=host, Signature=0000",
                    ),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .expect("an IAM request");
        assert_eq!(status, 200, "{body}: {answer}");
        answer
    };
    iam("Action=CreateUser&UserName=backplan&Version=2010-05-08".to_string());
    let key = iam("Action=CreateAccessKey&UserName=backplan&Version=2010-05-08".to_string());
    let id = xml_value(&key, "AccessKeyId")
        .expect("a key id")
        .to_string();
    let secret = xml_value(&key, "SecretAccessKey")
        .expect("a secret key")
        .to_string();
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam(format!(
        "Action=PutUserPolicy&UserName=backplan&PolicyName=all&PolicyDocument={}&Version=2010-05-08",
        form(everything)
    ));
    // Use up the unchecked requests: from the first refusal on, every request is
    // checked.
    let refused = (0..20).find_map(|_| {
        let (status, body) = server
            .raw("GET", &format!("/{bucket}?versions"), &[AUTH], b"")
            .expect("a GET");
        (status == 403).then_some(body)
    });
    let refused = refused.expect("a made-up signature is refused once checks begin");
    assert!(
        refused.contains("InvalidAccessKeyId") || refused.contains("SignatureDoesNotMatch"),
        "{refused}"
    );

    let endpoint = server.endpoint();
    let api = |secret: &str| {
        ObjectLockApi::new(
            "s3",
            S3Target {
                bucket: &bucket,
                region: Some(REGION),
                endpoint: Some(&endpoint),
                root: Some(ROOT),
                keys: Some((id.clone(), secret.to_string())),
            },
        )
        .expect("an Object Lock client")
    };
    let (good, bad) = (api(&secret), api("not-the-secret"));
    let path = "packs/aa/aa01";
    runtime().block_on(async {
        let now = chrono::Utc::now();
        let first = good
            .retention(path)
            .await
            .expect("a signed HEAD")
            .expect("a retention");
        assert_eq!(first.mode, LockMode::Compliance);
        assert!(
            first.until > now && first.until <= now + chrono::Duration::days(1),
            "{first:?}"
        );
        let later = now + chrono::Duration::days(3);
        good.put_retention(
            path,
            Retention {
                mode: LockMode::Compliance,
                until: later,
            },
        )
        .await
        .expect("a signed PutObjectRetention");
        let extended = good
            .retention(path)
            .await
            .expect("a signed HEAD")
            .expect("a retention");
        assert!(
            extended.until >= later && extended.until <= later + chrono::Duration::seconds(1),
            "{extended:?}, asked {later}"
        );
        assert_eq!(
            good.bucket_default()
                .await
                .expect("a signed GET ?object-lock"),
            Some(DefaultRetention {
                mode: LockMode::Compliance,
                days: 1
            })
        );
        // A wrong secret: every one of them refused, and no secret in the message.
        for refused in [
            bad.retention(path).await.map(|_| ()),
            bad.put_retention(path, extended).await,
            bad.bucket_default().await.map(|_| ()),
        ] {
            let failure = refused.expect_err("a wrong signature is refused");
            assert!(
                failure.message.contains("HTTP 403 SignatureDoesNotMatch")
                    || failure.message.contains("HTTP 403"),
                "{}",
                failure.message
            );
            assert!(!failure.message.contains(&secret), "{}", failure.message);
        }
    });
}

/// A snapshot missing on a locked destination with `extend: true` is copied back
/// from a local folder, and the copy extends the locks of the packs it uses there
/// (packs the bucket locked for 1 day, under `retain_for: 7d`), as a backup would.
#[test]
fn a_copy_into_an_extending_destination_extends_the_locks_of_the_packs_it_uses() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let bucket = server.locked_bucket("copy", "COMPLIANCE", 1);
    let locked = |extend: bool| {
        policy(&server, &bucket, DATA_SOURCE)
            .replace(
                "\nsources:\n",
                "  local:\n    type: fs\n    root: local\n\nsources:\n",
            )
            .replace(
                "    secret_access_key: ${env:",
                &format!(
                    "    object_lock:\n      retain_for: 7d\n{}    secret_access_key: ${{env:",
                    if extend { "      extend: true\n" } else { "" }
                ),
            )
    };
    let sandbox = Sandbox::with_policy(&locked(false));
    put(&sandbox, "data/base.bin", &noise(61, 400_000));
    ok(&sandbox, &server, &["init"]);
    ok(&sandbox, &server, &["apply"]);
    let snapshot = snapshot_headers(&server, &bucket).remove(0);
    // The snapshot goes missing on S3 (a plain DELETE: a delete marker hides it).
    runtime().block_on(async {
        let op = server.operator(&bucket, ROOT);
        op.delete(&format!("snapshots/{}", snapshot.id))
            .await
            .expect("delete the header");
    });
    assert!(snapshot_headers(&server, &bucket).is_empty());

    sandbox.write("backplan.yaml", &locked(true));
    let plan = ok(&sandbox, &server, &["plan"]);
    assert!(
        plan.stdout
            .contains("missing on s3; then extends the object locks of its packs there")
            && !plan.stdout.contains("backup data"),
        "{}",
        plan.stdout
    );
    let run = ok(&sandbox, &server, &["apply", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let outcome = &report["outcomes"][0];
    assert_eq!(outcome["action"]["action"], "copy", "{report}");
    assert_eq!(outcome["action"]["extend_locks"], true, "{report}");
    let packs = objects(&server, &bucket, "packs/");
    let lock = &outcome["locks"][0];
    assert_eq!(lock["checked"], packs.len(), "{report}");
    assert_eq!(lock["extended"], packs.len(), "{report}");
    let copied = snapshot_headers(&server, &bucket).remove(0);
    let until = copied.retain_until.expect("retain_until recorded");
    for pack in &packs {
        let (_, locked) = head_retention(&server, &bucket, pack);
        assert!(locked >= until, "{pack}: {locked} before {until}");
    }
}
