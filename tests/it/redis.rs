//! End-to-end tests of the `redis` source through the binary, against throwaway Redis
//! servers each test starts itself (see `crate::common::redis`): round trips in both modes
//! compared by `DEBUG DIGEST` and TTLs, both replication transfer forms, the scan
//! fallback for a user that may not SYNC, refusals and `--flush`, a cold-start
//! `dump.rdb`, TLS, damaged transfers from a fake master, persistence drift, and an
//! unreachable server that fails only its own source.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::common::redis::{self, Options, RedisServer, populate_fixture};
use crate::common::{LOCAL_POLICY_HEAD, Run, Sandbox, secret_key};

// --- helpers ------------------------------------------------------------------------

/// A policy with one `local` destination and the source `cache` backing up the server
/// at `url`; `extra` is appended under `cache` (indented four spaces) and `sources`
/// under `sources:` (indented two).
fn policy(url: &str, extra: &str, sources: &str) -> String {
    format!(
        r#"{LOCAL_POLICY_HEAD}  cache:
    type: redis
    url: "{url}"
{extra}{sources}"#
    )
}

fn restore_into(sandbox: &Sandbox, target: &RedisServer, extra: &[&str]) -> Run {
    let secret = secret_key().display().to_string();
    let target_arg = format!("cache={}", target.url());
    let mut args = vec!["restore", "--secret-key", &secret, "--target", &target_arg];
    args.extend_from_slice(extra);
    sandbox.run(&args).check()
}

/// Every TTL of `a` is within `tolerance_ms` of `b`'s, and both expire the same keys.
fn assert_ttls_close(a: &RedisServer, b: &RedisServer, tolerance_ms: i64) {
    let (ta, tb) = (a.ttls(), b.ttls());
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "the same keys expire"
    );
    for (key, ttl) in &ta {
        let other = tb[key];
        assert!(
            (ttl - other).abs() <= tolerance_ms,
            "{key:?}: TTL {ttl} ms at the source, {other} ms restored"
        );
    }
    assert!(ta.len() >= 4, "the fixture has keys with TTLs: {ta:?}");
}

fn functions(server: &RedisServer) -> String {
    server.connect().cmd(&["FUNCTION", "LIST", "WITHCODE"])
}

/// Backs `source` up with `extra` policy lines, restores into a fresh server, and
/// checks that both hold the same data. Returns the sandbox for more checks.
fn round_trip(source: &RedisServer, extra: &str, mode_line: &str) -> Sandbox {
    let sandbox = Sandbox::initialised(&policy(&source.url(), extra, ""));
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("+ backup  cache")
        .stdout(mode_line)
        .check();
    sandbox
        .run(&["apply"])
        .stdout("keys in 3 databases")
        .check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(0)
        .check();
    let target = RedisServer::start();
    restore_into(&sandbox, &target, &[]);
    assert_eq!(source.keys(), target.keys());
    assert_eq!(source.digest(), target.digest(), "DEBUG DIGEST differs");
    assert_ttls_close(source, &target, 5_000);
    assert_eq!(functions(source), functions(&target));
    sandbox
        .run(&[
            "verify",
            "--read-data",
            "--secret-key",
            &secret_key().display().to_string(),
        ])
        .stdout("RDB read whole, checksum right")
        .check();
    sandbox
}

// --- round trips --------------------------------------------------------------------

#[test]
fn a_sync_snapshot_over_a_diskless_transfer_restores_digest_identical() {
    let source = RedisServer::start();
    populate_fixture(&source, true);
    round_trip(&source, "", "sync, point in time");
}

#[test]
fn a_sync_snapshot_over_a_disk_based_transfer_restores_digest_identical() {
    let source = RedisServer::with(Options {
        diskless: false,
        ..Options::default()
    });
    populate_fixture(&source, false);
    round_trip(&source, "", "sync, point in time");
}

#[test]
fn the_scan_mode_restores_digest_identical() {
    let source = RedisServer::start();
    populate_fixture(&source, true);
    round_trip(&source, "    mode: scan\n", "scan, not point in time");
}

/// Lines for `redis.conf`: a `backup` user with every right but replication.
fn no_sync_user() -> Vec<String> {
    vec!["user backup on >backup-pass ~* &* +@all -sync -psync".into()]
}

/// Policy lines that log in as `backup`, its password in `redis.pass`.
const AS_BACKUP: &str = "    username: backup\n    password_file: redis.pass\n";

#[test]
fn the_scan_mode_of_a_server_without_functions_or_keys_in_some_databases_restores_it() {
    let source = RedisServer::start();
    let mut c = source.connect();
    for i in 0..500 {
        c.cmd(&["SET", &format!("plain:{i}"), &format!("v{i}")]);
    }
    c.cmd(&["SELECT", "3"]);
    c.cmd(&["HSET", "in-db-3", "f", "v"]);
    let sandbox = Sandbox::initialised(&policy(&source.url(), "    mode: scan\n", ""));
    sandbox
        .run(&["apply"])
        .stdout("501 keys in 2 databases")
        .check();
    let target = RedisServer::start();
    restore_into(&sandbox, &target, &[]);
    assert_eq!(source.digest(), target.digest());
    assert_eq!(target.keys(), [(0, 500), (3, 1)].into());
}

#[test]
fn a_user_that_may_not_sync_falls_back_to_scan_and_the_plan_says_it_is_not_point_in_time() {
    let source = RedisServer::with(Options {
        config: no_sync_user(),
        ..Options::default()
    });
    populate_fixture(&source, false);
    let sandbox = Sandbox::initialised(&policy(&source.url(), AS_BACKUP, ""));
    sandbox.write("redis.pass", "backup-pass\n");
    sandbox
        .run(&["plan"])
        .stdout("scan, not point in time")
        .stdout("BP231")
        .check();
    let run = sandbox
        .run(&["apply"])
        .stdout("scan (not point in time)")
        .stdout("SYNC refused")
        .check();
    assert!(
        !run.all().contains("backup-pass"),
        "the password leaked: {}",
        run.all()
    );
    let target = RedisServer::start();
    restore_into(&sandbox, &target, &[]);
    assert_eq!(source.digest(), target.digest());
    assert_ttls_close(&source, &target, 5_000);
}

#[test]
fn mode_sync_fails_the_snapshot_when_the_server_refuses_sync() {
    let source = RedisServer::with(Options {
        config: no_sync_user(),
        ..Options::default()
    });
    let sandbox = Sandbox::initialised(&policy(
        &source.url(),
        &format!("{AS_BACKUP}    mode: sync\n"),
        "",
    ));
    sandbox.write("redis.pass", "backup-pass\n");
    sandbox
        .run(&["plan"])
        .stdout("with `mode: sync` its backup will fail")
        .check();
    let run = sandbox.run(&["apply"]).status(3).check();
    assert!(run.stdout.contains("refuses SYNC"), "{}", run.stdout);
    assert!(
        !run.all().contains("backup-pass"),
        "the password leaked: {}",
        run.all()
    );
    sandbox.run(&["snapshots"]).stdout("FAILED").check();
}

// --- restore ------------------------------------------------------------------------

#[test]
fn a_target_that_holds_keys_is_refused_without_flush_and_replaced_with_it() {
    let source = RedisServer::start();
    populate_fixture(&source, false);
    let sandbox = Sandbox::initialised(&policy(&source.url(), "", ""));
    sandbox.run(&["apply"]).check();
    let target = RedisServer::start();
    target.connect().cmd(&["SET", "stale", "value"]);
    let secret = secret_key().display().to_string();
    let target_arg = format!("cache={}", target.url());
    sandbox
        .run(&[
            "restore",
            "--plan",
            "--secret-key",
            &secret,
            "--target",
            &target_arg,
        ])
        .stdout("the target holds 1 keys: needs --flush")
        .check();
    sandbox
        .run(&["restore", "--secret-key", &secret, "--target", &target_arg])
        .fails()
        .stderr("BP226")
        .stderr("not empty (1 keys)")
        .check();
    assert_eq!(
        target.connect().cmd(&["GET", "stale"]),
        "value",
        "nothing was touched"
    );
    restore_into(&sandbox, &target, &["--flush"]);
    assert_eq!(source.digest(), target.digest());
}

#[test]
fn a_value_over_the_targets_proto_max_bulk_len_is_restored_as_commands() {
    let source = RedisServer::start();
    populate_fixture(&source, false);
    // Two values over 1 MB: a list and a hash of 3 000 elements of 1 KiB each.
    let mut c = source.connect();
    for (kind, key) in [("RPUSH", "list:huge"), ("HSET", "hash:huge")] {
        let mut cmd = vec![kind.as_bytes().to_vec(), key.as_bytes().to_vec()];
        for i in 0..3000u64 {
            if kind == "HSET" {
                cmd.push(format!("field-{i}").into_bytes());
            }
            cmd.push(redis::noise(1024, i + 1));
        }
        c.pipeline(&[cmd]);
    }
    c.cmd(&["PEXPIRE", "hash:huge", "3600000"]);
    let sandbox = Sandbox::initialised(&policy(&source.url(), "", ""));
    sandbox.run(&["apply"]).check();
    let target = RedisServer::with(Options {
        config: vec!["proto-max-bulk-len 1mb".into()],
        ..Options::default()
    });
    let run = restore_into(&sandbox, &target, &[]);
    assert!(
        run.stdout
            .contains("(2 too large for RESTORE, as commands)"),
        "{}",
        run.stdout
    );
    assert_eq!(source.digest(), target.digest());
    assert_ttls_close(&source, &target, 5_000);
}

#[test]
fn a_string_over_the_targets_proto_max_bulk_len_is_refused_with_the_way_out() {
    let source = RedisServer::start();
    source.connect().pipeline(&[vec![
        b"SET".to_vec(),
        b"blob".to_vec(),
        redis::noise(3 << 20, 3),
    ]]);
    let sandbox = Sandbox::initialised(&policy(&source.url(), "", ""));
    sandbox.run(&["apply"]).check();
    let target = RedisServer::with(Options {
        config: vec!["proto-max-bulk-len 1mb".into()],
        ..Options::default()
    });
    let secret = secret_key().display().to_string();
    sandbox
        .run(&[
            "restore",
            "--secret-key",
            &secret,
            "--target",
            &format!("cache={}", target.url()),
        ])
        .fails()
        .stderr("over the target's proto-max-bulk-len")
        .stderr("--as-file")
        .check();
}

#[test]
fn restore_as_file_writes_a_dump_rdb_that_a_fresh_server_starts_from() {
    let source = RedisServer::start();
    populate_fixture(&source, false);
    let sandbox = Sandbox::initialised(&policy(&source.url(), "", ""));
    sandbox.run(&["apply"]).check();
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = secret_key().display().to_string();
    let as_file = dir.path().display().to_string();
    sandbox
        .run(&[
            "restore",
            "--plan",
            "--secret-key",
            &secret,
            "--as-file",
            &as_file,
        ])
        .stdout("dump.rdb for a cold start")
        .check();
    sandbox
        .run(&["restore", "--secret-key", &secret, "--as-file", &as_file])
        .stdout("dump.rdb written")
        .check();
    sandbox
        .run(&["restore", "--secret-key", &secret, "--as-file", &as_file])
        .fails()
        .stderr("exists")
        .check();
    let cold = RedisServer::with(Options {
        config: vec![format!("dir {as_file}"), "dbfilename dump.rdb".into()],
        ..Options::default()
    });
    assert_eq!(source.digest(), cold.digest());
}

#[test]
fn a_tls_server_is_backed_up_over_rediss_with_its_ca_and_refused_without_it() {
    let source = RedisServer::with(Options {
        tls: true,
        ..Options::default()
    });
    populate_fixture(&source, false);
    let ca = source.ca_file().display().to_string();
    let sandbox = Sandbox::initialised(&policy(
        &source.tls_url(),
        &format!("    tls_ca_file: \"{ca}\"\n"),
        "",
    ));
    sandbox.run(&["plan"]).stdout("sync, point in time").check();
    sandbox
        .run(&["apply"])
        .stdout("keys in 3 databases")
        .check();
    let target = RedisServer::start();
    restore_into(&sandbox, &target, &[]);
    assert_eq!(source.digest(), target.digest());
    // Without the CA the server's certificate is not trusted.
    let untrusted = Sandbox::initialised(&policy(&source.tls_url(), "", ""));
    untrusted.run(&["apply"]).status(3).stdout("TLS").check();
}

// --- damaged transfers --------------------------------------------------------------

/// The RDB of a small real server, as `redis-cli --rdb` fetches it.
fn real_rdb() -> Vec<u8> {
    let server = RedisServer::start();
    let mut c = server.connect();
    for i in 0..200 {
        c.cmd(&[
            "SET",
            &format!("key:{i}"),
            &format!("value {i} {}", "v".repeat(i)),
        ]);
    }
    let file = server.dir().join("fetched.rdb");
    server.cli(&["--rdb", &file.display().to_string()]);
    std::fs::read(&file).expect("read the fetched RDB")
}

/// A fake master on a free port that answers the handshake and sends `body` as a
/// diskless transfer (with its end mark when `complete`), then closes.
fn fake_master(body: Vec<u8>, complete: bool) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        // The plan's probe and the backup each connect; serve a few connections.
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line == "SYNC" {
                    let mark = "0123456789abcdef0123456789abcdef01234567";
                    let _ = stream.write_all(format!("\n\n$EOF:{mark}\r\n").as_bytes());
                    let _ = stream.write_all(&body);
                    if complete {
                        let _ = stream.write_all(mark.as_bytes());
                    }
                    break;
                }
                let Some(n) = line.strip_prefix('*') else {
                    continue;
                };
                let n: usize = n.parse().unwrap_or(0);
                let mut args = Vec::new();
                for _ in 0..n {
                    let mut len = String::new();
                    reader.read_line(&mut len).expect("len");
                    let len: usize = len.trim_end()[1..].parse().expect("len");
                    let mut arg = vec![0u8; len + 2];
                    reader.read_exact(&mut arg).expect("arg");
                    arg.truncate(len);
                    args.push(String::from_utf8_lossy(&arg).to_uppercase());
                }
                let reply = match args.first().map(String::as_str) {
                    Some("INFO") => {
                        let text = match args.get(1).map(String::as_str) {
                            Some("SERVER") => "redis_version:7.0.15\r\n",
                            Some("KEYSPACE") => "db0:keys=200,expires=0,avg_ttl=0\r\n",
                            _ => "",
                        };
                        format!("${}\r\n{text}\r\n", text.len())
                    }
                    Some("COMMAND") => "*1\r\n*0\r\n".to_string(),
                    Some("CONFIG") => "*0\r\n".to_string(),
                    _ => "+OK\r\n".to_string(),
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        }
    });
    (port, handle)
}

fn apply_from_fake_master(body: Vec<u8>, complete: bool) -> (Sandbox, Run) {
    let (port, _master) = fake_master(body, complete);
    let sandbox = Sandbox::initialised(&policy(&format!("redis://127.0.0.1:{port}"), "", ""));
    let run = sandbox.run(&["apply"]).status(3).check();
    (sandbox, run)
}

#[test]
fn a_transfer_with_a_flipped_byte_fails_the_snapshot_and_commits_nothing() {
    let mut rdb = real_rdb();
    let at = rdb.len() / 2;
    rdb[at] ^= 0x20;
    let (sandbox, run) = apply_from_fake_master(rdb, true);
    assert!(run.stdout.contains("checksum"), "{}", run.stdout);
    let list = sandbox.run(&["snapshots", "--format", "json"]).check();
    assert!(!list.stdout.contains("\"complete\""), "{}", list.stdout);
    assert!(list.stdout.contains("\"failed\""), "{}", list.stdout);
}

#[test]
fn a_transfer_cut_short_fails_the_snapshot_and_commits_nothing() {
    let rdb = real_rdb();
    let cut = rdb[..rdb.len() * 2 / 3].to_vec();
    let (sandbox, run) = apply_from_fake_master(cut, false);
    assert!(run.stdout.contains("ended"), "{}", run.stdout);
    let list = sandbox.run(&["snapshots", "--format", "json"]).check();
    assert!(!list.stdout.contains("\"complete\""), "{}", list.stdout);
}

#[test]
fn the_real_rdb_through_the_fake_master_is_accepted() {
    // The control for the two tests above: the same path with intact bytes works.
    let (port, _master) = fake_master(real_rdb(), true);
    let sandbox = Sandbox::initialised(&policy(&format!("redis://127.0.0.1:{port}"), "", ""));
    sandbox
        .run(&["apply"])
        .stdout("200 keys in 1 database")
        .check();
}

// --- persistence --------------------------------------------------------------------

#[test]
fn persistence_drift_shows_in_the_plan_and_apply_fixes_it_in_the_config_file() {
    let source = RedisServer::start();
    let sandbox = Sandbox::initialised(&policy(
        &source.url(),
        "    persistence:\n      save: \"3600 1   300 100\"\n      appendonly: true\n",
        "",
    ));
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("~ config  cache")
        .stdout(r#"save "" → "3600 1 300 100""#)
        .stdout(r#"appendonly "no" → "yes""#)
        .stdout("1 change")
        .check();
    sandbox
        .run(&["apply"])
        .stdout("written to the config file")
        .check();
    let mut c = source.connect();
    assert_eq!(c.cmd(&["CONFIG", "GET", "save"]), "save\n3600 1 300 100");
    assert_eq!(c.cmd(&["CONFIG", "GET", "appendonly"]), "appendonly\nyes");
    let conf = source.config_file();
    assert!(conf.contains("appendonly yes"), "{conf}");
    assert!(conf.contains("save 3600 1"), "{conf}");
    let after = sandbox.run(&["plan"]).check();
    assert!(!after.stdout.contains("~ config"), "{}", after.stdout);
}

#[test]
fn a_refused_config_rewrite_fails_the_change_and_says_it_is_lost_on_restart() {
    let source = RedisServer::start();
    // A config file the server cannot rewrite.
    let conf = source.dir().join("redis.conf");
    let sandbox = Sandbox::initialised(&policy(
        &source.url(),
        "    persistence:\n      appendonly: true\n",
        "",
    ));
    std::fs::remove_file(&conf).expect("remove redis.conf");
    std::fs::create_dir(&conf).expect("a folder where the file was");
    let run = sandbox.run(&["apply"]).status(3).check();
    assert!(run.stdout.contains("BP233"), "{}", run.stdout);
    assert!(
        run.stdout.contains("lost when the server restarts"),
        "{}",
        run.stdout
    );
}

// --- failures stay local --------------------------------------------------------------

#[test]
fn an_unreachable_server_fails_its_source_and_not_the_others() {
    let port = redis::free_port();
    let sandbox = Sandbox::initialised(&policy(
        &format!("redis://127.0.0.1:{port}"),
        "",
        "  notes:\n    type: config\n    paths: [notes.txt]\n",
    ));
    sandbox.write("notes.txt", "kept\n");
    let run = sandbox.run(&["apply"]).status(3).check();
    assert!(run.stdout.contains("cannot connect"), "{}", run.stdout);
    assert!(run.stderr.contains("BP205"), "{}", run.stderr);
    let list = sandbox.run(&["snapshots", "--format", "json"]).check();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    let text = v.to_string();
    assert!(text.contains("\"notes\""), "{text}");
    assert!(text.contains("\"complete\""), "{text}");
    assert!(text.contains("\"failed\""), "{text}");
}
