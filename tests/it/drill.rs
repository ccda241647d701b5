//! End-to-end tests of `backplan drill` through the binary: a PostgreSQL database, a
//! Redis server and a folder backed up, then restored into scratch targets (a
//! scratch database on the same server, a throwaway redis-server, a temporary
//! folder), checked, removed, and recorded where `status` and its metrics read it;
//! a damaged pack that fails its drill and still leaves no scratch target behind;
//! declared drill servers (PostgreSQL, Redis); the recovery objectives (RTO, RPO) and
//! the full-restore estimate; a due drill that `plan` shows and `apply` runs; and row
//! checksums recorded at backup and compared by the drill.

use std::path::Path;

use crate::common::pg::PgServer;
use crate::common::redis::{self, RedisServer};
use crate::common::{Cmd, LOCAL_POLICY_HEAD, Sandbox, secret_key};
use serde_json::Value;

fn secret() -> String {
    secret_key().display().to_string()
}

/// A small database: two tables in two schemas.
fn small_database(server: &PgServer, db: &str) {
    server.createdb(db);
    server.psql(
        db,
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g;
         CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id int PRIMARY KEY, item int REFERENCES items);
         INSERT INTO shop.orders SELECT g, g % 300 + 1 FROM generate_series(1, 120) g;",
    );
}

/// A sandbox backing up database `app` of `pg`, the Redis server `cache` and the
/// folder `media`, after one apply; `extra` is appended at the top level.
fn backed_up(pg: &PgServer, cache: &RedisServer, extra: &str) -> Sandbox {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: \"{}\"\n    databases: [app]\n  cache:\n    type: redis\n    url: \"{}\"\n  media:\n    type: files\n    path: media\n{extra}",
        pg.url("postgres"),
        cache.url(),
    ));
    sandbox.write("media/a.txt", "alpha\n");
    // Bytes zstd cannot shrink: the folder's pack is the largest.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::create_dir_all(sandbox.path("media/sub")).expect("a folder");
    std::fs::write(sandbox.path("media/sub/b.bin"), noise).expect("a file");
    sandbox.run(&["apply"]).check();
    sandbox
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `backplan drill` with the demo secret key, reporting as JSON.
fn drill_json(sandbox: &Sandbox) -> Cmd<'_> {
    sandbox.run(&["drill", "--secret-key", &secret(), "--format", "json"])
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The drill of `source` in a `drill --format json` report.
fn drill_of<'a>(report: &'a Value, source: &str) -> &'a Value {
    report["drills"]
        .as_array()
        .expect("drills")
        .iter()
        .find(|d| d["source"] == source)
        .unwrap_or_else(|| panic!("no drill of {source}: {report:#}"))
}

/// No scratch target of the report is left: no `backplan_drill_` database on
/// `pg`, no server answering at the scratch Redis URL, no scratch folder.
fn assert_scratch_removed(report: &Value, pg: &PgServer) {
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'backplan_drill_%';"
        )
        .trim(),
        "0",
        "a scratch database is left"
    );
    let url = drill_of(report, "cache")["scratch"]
        .as_str()
        .expect("a URL");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the scratch redis-server on {port} still answers"
    );
    let folder = drill_of(report, "media")["scratch"]
        .as_str()
        .expect("a path");
    assert!(!Path::new(folder).exists(), "{folder} is left");
}

#[test]
fn a_drill_restores_checks_removes_and_records_every_source() {
    let pg = PgServer::start();
    small_database(&pg, "app");
    let cache = RedisServer::start();
    redis::populate_fixture(&cache, false);
    let sandbox = backed_up(&pg, &cache, "objectives:\n  rpo: 24h\n  rto: 1h\n");

    let run = drill_json(&sandbox).check();
    let report = json(&run.stdout);
    assert_eq!(report["format_version"], 1);
    for source in ["db", "cache", "media"] {
        let d = drill_of(&report, source);
        assert_eq!(d["result"], "passed", "{d:#}");
        let steps: Vec<&str> = d["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(steps, ["prepare", "restore", "check", "clean_up"], "{d:#}");
        assert!(
            d["findings"].as_array().expect("findings").is_empty(),
            "{d:#}"
        );
        assert_eq!(d["recorded"], serde_json::json!(["local"]));
        assert!(d["estimate"]["full_seconds"].as_f64().is_some(), "{d:#}");
    }
    // What each check compared: both tables, the fixture's Redis databases, both
    // files.
    assert_eq!(drill_of(&report, "db")["checks"]["checked"], 2);
    assert_eq!(drill_of(&report, "db")["checks"]["unit"], "tables");
    assert!(drill_of(&report, "cache")["checks"]["checked"].as_u64() >= Some(1));
    // The throwaway server allows DEBUG: the replayed keys' digest is the one a
    // server loading the snapshot's RDB gives.
    let digest = drill_of(&report, "cache")["checks"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest: {report:#}"));
    assert_eq!(digest.len(), 40, "{digest}");
    assert_ne!(digest, "0".repeat(40), "an empty server's digest");
    assert_eq!(drill_of(&report, "media")["checks"]["checked"], 2);
    assert!(
        drill_of(&report, "db")["scratch"]
            .as_str()
            .is_some_and(|s| s.contains("backplan_drill_db_")),
        "{report:#}"
    );
    assert_scratch_removed(&report, &pg);

    // status reads the drills back from the destination.
    let status = json(&sandbox.run(&["status", "--format", "json"]).check().stdout);
    for source in ["db", "cache", "media"] {
        let s = status["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["source"] == source)
            .expect("a source");
        assert_eq!(s["drill"]["result"], "passed", "{s:#}");
        assert_eq!(
            s["drill"]["snapshot"],
            drill_of(&report, source)["snapshot"]
        );
        assert_eq!(s["drill"]["steps"].as_array().map(Vec::len), Some(4));
        assert_eq!(s["drill"]["rto_seconds"], 3600.0);
    }
    let metrics = sandbox
        .run(&["status", "--format", "prometheus"])
        .check()
        .stdout;
    for source in ["db", "cache", "media"] {
        for name in [
            "backplan_last_drill_timestamp_seconds",
            "backplan_drill_duration_seconds",
        ] {
            let line = metrics
                .lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("source=\"{source}\"")))
                .unwrap_or_else(|| panic!("no {name} of {source}:\n{metrics}"));
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a value");
            assert!(value > 0.0, "{line}");
        }
    }

    // A flipped bit in the largest pack (the folder's 300 KiB file) fails that drill
    // with the damage's code; the scratch targets go all the same.
    let mut packs = files_under(&sandbox.path("backups/packs"));
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    let pack = &packs[0];
    let mut bytes = std::fs::read(pack).expect("a pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(pack, bytes).expect("write the pack");
    let run = drill_json(&sandbox).status(3).stderr("BP273").check();
    let report = json(&run.stdout);
    let media = drill_of(&report, "media");
    assert_eq!(media["result"], "failed", "{media:#}");
    // BP220: the pack is not what it is named after.
    assert_eq!(media["error"]["code"], "BP220", "{media:#}");
    assert_scratch_removed(&report, &pg);
    let status = sandbox.run(&["status"]).status(5).check();
    assert!(status.stdout.contains("BP264"), "{}", status.stdout);
}

#[test]
fn a_drill_slower_than_the_rto_is_a_finding_and_a_due_drill_is_planned_and_applied() {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  media:\n    type: files\n    path: media\nobjectives:\n  rto: 1ms\ndrill:\n  schedule: \"@weekly\"\n  secret_key_file: {}\n",
        secret()
    ));
    sandbox.write("media/a.txt", "alpha\n");
    sandbox.run(&["apply"]).check();

    // Never drilled: plan shows the drill as due, apply runs it.
    sandbox
        .run(&["plan"])
        .stdout("? drill   media newest snapshot into a scratch target   never drilled")
        .stdout("1 drill.")
        .check();
    sandbox.run(&["apply"]).stdout("drill media").check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(0)
        .check();

    let run = sandbox
        .run(&["drill", "--format", "json"])
        .status(4)
        .check();
    let report = json(&run.stdout);
    let media = drill_of(&report, "media");
    assert_eq!(media["result"], "passed");
    assert_eq!(media["findings"][0]["finding"], "over_rto", "{media:#}");
    sandbox
        .run(&["drill"])
        .status(4)
        .stdout("BP275 the drill took")
        .stdout("longer than the RTO of 1 ms")
        .check();
    let status = sandbox.run(&["status"]).status(4).check();
    assert!(status.stdout.contains("BP275"), "{}", status.stdout);
}

#[test]
fn a_snapshot_older_than_the_rpo_is_a_finding_and_the_estimate_is_the_measured_throughput() {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  media:\n    type: files\n    path: media\nobjectives:\n  rpo: 1s\n  rto: 1h\n"
    ));
    sandbox.write("media/a.txt", &"alpha\n".repeat(20_000));
    sandbox.run(&["apply"]).check();
    // The newest snapshot is now more than the RPO old.
    std::thread::sleep(std::time::Duration::from_millis(2100));

    let run = drill_json(&sandbox).status(4).check();
    let report = json(&run.stdout);
    let media = drill_of(&report, "media");
    assert_eq!(media["result"], "passed", "{media:#}");
    let findings = media["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "only the RPO is missed: {media:#}");
    assert_eq!(findings[0]["finding"], "over_rpo");
    assert_eq!(findings[0]["rpo_seconds"], 1.0);
    let age = findings[0]["age_seconds"].as_f64().expect("an age");
    assert!((2.0..120.0).contains(&age), "{age}");

    // The estimate: the restore step's bytes per second, and the full size (the
    // folder as it is now, unchanged since the backup: the snapshot's) at that rate.
    let restored = media["restored_bytes"].as_f64().expect("restored bytes");
    assert!(restored >= 120_000.0, "{media:#}");
    let restore_seconds = media["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "restore")
        .and_then(|s| s["seconds"].as_f64())
        .expect("a restore step");
    let estimate = &media["estimate"];
    let rate = estimate["bytes_per_second"].as_f64().expect("a rate");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(rate, restored / restore_seconds), "{media:#}");
    assert_eq!(
        estimate["full_from"],
        serde_json::json!({"measure": "files", "files": 1, "bytes": 120_000})
    );
    assert_eq!(estimate["full_bytes"].as_f64(), Some(restored));
    let full = estimate["full_seconds"].as_f64().expect("full seconds");
    assert!(close(full, restored / rate), "{media:#}");

    // The human view says the measured rate and what it extrapolates to, and status
    // keeps the finding (a warning) from the record.
    sandbox
        .run(&["drill", "--secret-key", &secret()])
        .status(4)
        .stdout("BP276")
        .stdout("older than the RPO of 1.0 s")
        .stdout("a full restore would take about ")
        .stdout("/s measured to the 1 file's 117.2 KiB now (sizes read from the source, its excludes honoured)")
        .check();
    let status = sandbox.run(&["status"]).status(4).check();
    assert!(
        status
            .stdout
            .contains("! warning BP276 media on local: the last restore drill"),
        "{}",
        status.stdout
    );
}

#[test]
fn without_a_secret_key_a_due_drill_is_shown_as_needing_one_and_skipped() {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  media:\n    type: files\n    path: media\ndrill:\n  schedule: \"@weekly\"\n"
    ));
    sandbox.write("media/a.txt", "alpha\n");
    sandbox.run(&["apply"]).check();
    sandbox
        .run(&["plan"])
        .stdout("never drilled [skipped: needs a secret key, drill.secret_key_file (BP277)]")
        .check();
    // Skipped, not failed: the run succeeds and says why.
    sandbox
        .run(&["apply"])
        .stdout("BP277: a drill needs a secret key")
        .check();
    sandbox
        .run(&["drill"])
        .env_remove("BACKPLAN_SECRET_KEY_FILE")
        .fails()
        .stderr("BP277")
        .check();
}

#[test]
fn a_declared_redis_drill_target_is_used_and_emptied_and_a_files_source_takes_none() {
    let cache = RedisServer::start();
    redis::populate_fixture(&cache, false);
    let target = RedisServer::start();
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  cache:\n    type: redis\n    url: \"{}\"\ndrill:\n  targets:\n    cache: \"{}\"\n",
        cache.url(),
        target.url()
    ));
    sandbox.run(&["apply"]).check();
    let report = json(&drill_json(&sandbox).check().stdout);
    let d = drill_of(&report, "cache");
    assert_eq!(d["result"], "passed", "{d:#}");
    assert_eq!(d["scratch"], target.url().as_str());
    assert!(d["checks"]["checked"].as_u64() >= Some(1), "{d:#}");
    // Emptied after the drill, and so ready for the next one.
    assert_eq!(target.connect().cmd(&["DBSIZE"]).trim(), "0");

    let files = Sandbox::with_policy(&format!(
        "{LOCAL_POLICY_HEAD}  media:\n    type: files\n    path: media\ndrill:\n  targets:\n    media: /tmp/elsewhere\n"
    ));
    files
        .run(&["validate"])
        .fails()
        .stderr("BP140")
        .stderr("drill target `media` is drilled into a temporary folder, not a server")
        .check();
}

#[test]
fn a_declared_postgres_drill_server_gets_the_scratch_databases_and_loses_them_again() {
    let source = PgServer::start();
    small_database(&source, "app");
    let drills = PgServer::start();
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: \"{}\"\n    databases: [app]\ndrill:\n  targets:\n    db: \"{}\"\n",
        source.url("postgres"),
        drills.url("postgres"),
    ));
    sandbox.run(&["apply"]).check();
    let report = json(&drill_json(&sandbox).check().stdout);
    let d = drill_of(&report, "db");
    assert_eq!(d["result"], "passed", "{d:#}");
    assert_eq!(d["checks"]["checked"], 2, "{d:#}");
    let scratch = d["scratch"].as_str().expect("a scratch target");
    assert!(
        scratch.contains(&format!(":{}/backplan_drill_db_", drills.port())),
        "{scratch} is not on the drill server"
    );
    for server in [&source, &drills] {
        assert_eq!(
            server
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'backplan_drill_%';"
                )
                .trim(),
            "0",
            "a scratch database is left on port {}",
            server.port()
        );
    }
}

/// A table of values whose text depends on the session: timestamps with a time
/// zone, dates, intervals, floats, bytea.
fn session_dependent_table(server: &PgServer, db: &str) {
    server.psql(
        db,
        "CREATE TABLE readings (id int PRIMARY KEY, at timestamptz, day date, took interval,
                                value float8, raw bytea, note text);
         INSERT INTO readings SELECT g,
             timestamptz '2026-01-02 03:04:05.678+00' + g * interval '97 minutes',
             date '2026-03-04' + g, g * interval '90 minutes 1.5 seconds', g / 7.0 + 1e-12,
             decode(md5(g::text), 'hex'), CASE WHEN g % 5 = 0 THEN NULL ELSE 'n,\"' || g END
         FROM generate_series(1, 400) g;",
    );
}

#[test]
fn a_drill_of_a_source_with_checksums_compares_them_and_passes() {
    let pg = PgServer::start();
    small_database(&pg, "app");
    session_dependent_table(&pg, "app");
    // The source's sessions and the scratch database's (which gets the database's
    // settings) would print timestamps in Tokyo time, dates the SQL way.
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET TimeZone = 'Asia/Tokyo'; ALTER DATABASE app SET DateStyle = 'SQL, DMY';",
    );
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: \"{}\"\n    databases: [app]\n    checksums: true\n",
        pg.url("postgres"),
    ));
    sandbox.run(&["apply"]).check();

    let run = drill_json(&sandbox).check();
    let report = json(&run.stdout);
    let d = drill_of(&report, "db");
    assert_eq!(d["result"], "passed", "{d:#}");
    assert_eq!(d["checks"]["checked"], 3, "{d:#}");
    assert_eq!(d["checks"]["checksums"], 3, "{d:#}");
    // The record says so too.
    let status = json(&sandbox.run(&["status", "--format", "json"]).check().stdout);
    let s = &status["sources"][0];
    assert_eq!(s["drill"]["checksums"], 3, "{s:#}");

    let run = sandbox.run(&["drill", "--secret-key", &secret()]).check();
    assert!(
        run.stdout.contains("row checksums compared for 3 tables"),
        "{}",
        run.stdout
    );
}

/// `(count, checksum)` of `readings` in `db` by the query of a backup with
/// checksums, in a session of the database's own settings (psql's, none set).
fn unset_session_checksum(server: &PgServer, db: &str) -> String {
    server.psql(
        db,
        "SELECT count(*), coalesce(sum(('x' || substr(md5((r.*)::text), 1, 15))::bit(60)::bigint::numeric), 0)::text FROM public.readings AS r;",
    )
}

/// What [`backplan::sources::postgres::table_rows`] reads of `db`, with checksums.
fn table_rows(server: &PgServer, db: &str) -> backplan::sources::postgres::TableRows {
    let conn =
        backplan::sources::postgres::Connection::from_url(&server.url(db), None).expect("a URL");
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let client = conn.client().await.expect("connected");
            backplan::sources::postgres::table_rows(&client, true)
                .await
                .expect("read")
        })
}

#[test]
fn row_checksums_are_the_same_for_restored_rows_in_any_session_and_differ_for_one_changed_value() {
    let pg = PgServer::start();
    pg.createdb("origin");
    session_dependent_table(&pg, "origin");
    // A copy restored by pg_restore, its sessions in another time zone and date
    // style than the origin's.
    pg.createdb("copy");
    let dump = pg
        .tool("pg_dump")
        .args(["-Fc", "-d", "origin"])
        .output()
        .expect("pg_dump");
    assert!(dump.status.success(), "{dump:?}");
    let archive = pg.data_dir().with_file_name("origin.dump");
    std::fs::write(&archive, &dump.stdout).expect("write the archive");
    let restored = pg
        .tool("pg_restore")
        .args(["--no-owner", "-d", "copy"])
        .arg(&archive)
        .output()
        .expect("pg_restore");
    assert!(restored.status.success(), "{restored:?}");
    pg.psql(
        "postgres",
        "ALTER DATABASE origin SET TimeZone = 'Asia/Tokyo'; ALTER DATABASE origin SET DateStyle = 'SQL, DMY';
         ALTER DATABASE copy SET TimeZone = 'America/Los_Angeles'; ALTER DATABASE copy SET DateStyle = 'German';",
    );

    // Without the settings, the same rows give other checksums: the text differs.
    let (origin, copy) = (
        unset_session_checksum(&pg, "origin"),
        unset_session_checksum(&pg, "copy"),
    );
    assert_ne!(
        origin, copy,
        "the session's settings did not change the text"
    );
    assert!(
        origin.starts_with("400|") && copy.starts_with("400|"),
        "{origin} {copy}"
    );

    // With them, the restored rows give the origin's checksum.
    let (origin, copy) = (table_rows(&pg, "origin"), table_rows(&pg, "copy"));
    assert_eq!(origin.counts.get("public.readings"), Some(&400));
    assert_eq!(origin, copy);
    let sum = &origin.checksums["public.readings"];
    assert!(
        sum.len() > 10 && sum.bytes().all(|b| b.is_ascii_digit()),
        "{sum}"
    );

    // One value changed by the last bit of a float: the same count, another checksum.
    pg.psql(
        "copy",
        "UPDATE readings SET value = value * (1 + 1e-15) WHERE id = 200;",
    );
    let changed = table_rows(&pg, "copy");
    assert_eq!(changed.counts, origin.counts);
    assert_ne!(changed.checksums, origin.checksums);
    // Changed back: the same again (a sum, the order of rows does not count).
    pg.psql(
        "copy",
        "UPDATE readings SET value = 200 / 7.0 + 1e-12 WHERE id = 200;",
    );
    assert_eq!(table_rows(&pg, "copy"), origin);
}

/// The restore step's seconds of a drill in a `drill --format json` report.
fn restore_seconds(d: &Value) -> f64 {
    d["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "restore")
        .and_then(|s| s["seconds"].as_f64())
        .unwrap_or_else(|| panic!("no restore step: {d:#}"))
}

/// Whether `a` is `b` but for floating point rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn a_folder_grown_since_its_backup_is_estimated_at_its_size_now_and_a_missing_one_at_none() {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  media:\n    type: files\n    path: media\n    exclude: [\"*.tmp\"]\n"
    ));
    sandbox.write("media/a.bin", &"a".repeat(100_000));
    sandbox.run(&["apply"]).check();
    // After the backup: three times the bytes, in a new folder too, and an excluded
    // file that a backup would not read (nor a restore write).
    sandbox.write("media/new/b.bin", &"b".repeat(150_000));
    sandbox.write("media/c.bin", &"c".repeat(50_000));
    sandbox.write("media/new/skip.tmp", &"t".repeat(1_000_000));

    let run = drill_json(&sandbox).check();
    let report = json(&run.stdout);
    let media = drill_of(&report, "media");
    assert_eq!(media["result"], "passed", "{media:#}");
    assert_eq!(media["restored_bytes"], 100_000, "{media:#}");
    let estimate = &media["estimate"];
    assert_eq!(
        estimate["full_from"],
        serde_json::json!({"measure": "files", "files": 3, "bytes": 300_000}),
        "{media:#}"
    );
    assert_eq!(estimate["full_bytes"], 300_000);
    // The measured restore's time, three times: the folder's growth.
    let measured = restore_seconds(media);
    let full = estimate["full_seconds"].as_f64().expect("full seconds");
    assert!(full > measured, "{media:#}");
    assert!(
        close(full, 3.0 * measured),
        "{full} vs {measured}: {media:#}"
    );
    sandbox
        .run(&["drill", "--secret-key", &secret()])
        .stdout("a full restore would take about ")
        .stdout(": extrapolated from the ")
        .stdout("/s measured to the 3 files' 293.0 KiB now")
        .check();

    // The folder gone: the drill still passes (it restores the snapshot), without
    // an estimate, and says why.
    std::fs::rename(sandbox.path("media"), sandbox.path("media-away")).expect("rename");
    let report = json(&drill_json(&sandbox).check().stdout);
    let media = drill_of(&report, "media");
    assert_eq!(media["result"], "passed", "{media:#}");
    assert!(media.get("estimate").is_none(), "{media:#}");
    assert_eq!(media["no_estimate"]["reason"], "source_unreadable");
    assert_eq!(media["no_estimate"]["error"]["code"], "BP227", "{media:#}");
    sandbox
        .run(&["drill", "--secret-key", &secret()])
        .stdout("no estimate of a full restore: the source's size now cannot be read (BP227 cannot read the folder")
        .stdout("1 of 1 drill passed")
        .check();
}

/// `count` string keys of one size, from `first` on.
fn session_keys(server: &RedisServer, first: usize, count: usize) {
    let mut c = server.connect();
    let commands: Vec<Vec<Vec<u8>>> = (first..first + count)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("session:{i:06}").into_bytes(),
                format!("{i:0>64}").into_bytes(),
            ]
        })
        .collect();
    c.pipeline(&commands);
}

#[test]
fn a_redis_server_with_more_keys_since_its_backup_is_estimated_by_their_growth() {
    let cache = RedisServer::start();
    session_keys(&cache, 0, 2_000);
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  cache:\n    type: redis\n    url: \"{}\"\n",
        cache.url()
    ));
    sandbox.run(&["apply"]).check();
    // As many keys again, of the same size, after the backup.
    session_keys(&cache, 2_000, 2_000);

    let report = json(&drill_json(&sandbox).check().stdout);
    let d = drill_of(&report, "cache");
    assert_eq!(d["result"], "passed", "{d:#}");
    let estimate = &d["estimate"];
    assert_eq!(
        estimate["full_from"],
        serde_json::json!({"measure": "keys", "keys": 4_000}),
        "{d:#}"
    );
    assert_eq!(estimate["snapshot_keys"], 2_000, "{d:#}");
    // The snapshot's bytes twice, at the measured rate: twice the restore's time.
    let restored = d["restored_bytes"].as_u64().expect("restored bytes");
    assert_eq!(estimate["full_bytes"], 2 * restored, "{d:#}");
    let measured = restore_seconds(d);
    let full = estimate["full_seconds"].as_f64().expect("full seconds");
    assert!(full > measured, "{d:#}");
    assert!(close(full, 2.0 * measured), "{full} vs {measured}: {d:#}");
    sandbox
        .run(&["drill", "--secret-key", &secret()])
        .stdout("a full restore would take about ")
        .stdout("now (4000 keys on the server against 2000 in the snapshot)")
        .check();

    // The server down: the drill (a throwaway server of its own) still passes,
    // without an estimate, and says why.
    drop(cache);
    let report = json(&drill_json(&sandbox).check().stdout);
    let d = drill_of(&report, "cache");
    assert_eq!(d["result"], "passed", "{d:#}");
    assert!(d.get("estimate").is_none(), "{d:#}");
    assert_eq!(d["no_estimate"]["reason"], "source_unreadable", "{d:#}");
    assert!(
        d["no_estimate"]["error"]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("BP")),
        "{d:#}"
    );
}

#[test]
fn a_restored_redis_whose_digest_is_not_the_snapshot_rdbs_fails_its_drill() {
    let cache = RedisServer::start();
    session_keys(&cache, 0, 500);
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  cache:\n    type: redis\n    url: \"{}\"\n",
        cache.url()
    ));
    sandbox.run(&["apply"]).check();
    let backed_up = cache.digest();

    // Another RDB with as many keys, one value changed: what the drill's second
    // server loads as "the snapshot's RDB", through a redis-server wrapper (the
    // BACKPLAN_REDIS_SERVER the scratch servers are started with) that puts it in
    // place of the one the drill wrote. The key counts agree; only the digest can
    // tell.
    let other = RedisServer::start();
    session_keys(&other, 0, 500);
    assert_eq!(other.digest(), backed_up);
    other
        .connect()
        .cmd(&["SET", "session:000007", "another value"]);
    let altered = other.digest();
    assert_ne!(altered, backed_up);
    other.connect().cmd(&["SAVE"]);
    let alt = sandbox.path("alt.rdb");
    std::fs::copy(other.dir().join("dump.rdb"), &alt).expect("copy the RDB");
    let real = std::env::var("BACKPLAN_REDIS_SERVER").unwrap_or_else(|_| {
        let out = std::process::Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    assert!(!real.is_empty(), "no redis-server");
    let wrapper = sandbox.path("redis-server-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ndir=\nprev=\nfor a in \"$@\"; do\n  [ \"$prev\" = --dir ] && dir=\"$a\"\n  prev=\"$a\"\ndone\ncase \"$dir\" in\n  */snapshot-rdb) cp '{}' \"$dir/dump.rdb\" ;;\nesac\nexec '{real}' \"$@\"\n",
            alt.display()
        ),
    )
    .expect("write the wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let wrapper = wrapper.display().to_string();

    let run = drill_json(&sandbox)
        .env("BACKPLAN_REDIS_SERVER", &wrapper)
        .status(3)
        .stderr("BP273")
        .check();
    let report = json(&run.stdout);
    let d = drill_of(&report, "cache");
    assert_eq!(d["result"], "failed", "{d:#}");
    assert_eq!(d["error"]["code"], "BP273", "{d:#}");
    // The key counts agreed; the digests did not: the restored one is the data as
    // backed up, the other the altered RDB's.
    let differences = d["checks"]["differences"].as_array().expect("differences");
    assert_eq!(
        differences,
        &[
            serde_json::json!({"difference": "digest", "restored": &backed_up, "snapshot": &altered})
        ],
        "{d:#}"
    );
    assert!(d["checks"].get("digest").is_none(), "{d:#}");
    assert!(d.get("estimate").is_none(), "{d:#}");
    sandbox
        .run(&["drill", "--secret-key", &secret()])
        .env("BACKPLAN_REDIS_SERVER", &wrapper)
        .status(3)
        .stdout("✗ cache (redis)")
        .stdout(&format!(
            "DEBUG DIGEST {backed_up} restored, {altered} of the snapshot's RDB: a value or expiry differs"
        ))
        .stdout("error BP273")
        .stdout("0 of 1 drill passed")
        .check();
    sandbox
        .run(&["status", "--format", "json"])
        .status(5)
        .check();
}
