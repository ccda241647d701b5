//! Self-test of the PostgreSQL harness (tests/it/common/pg.rs): two throwaway servers, the
//! fixture, and a pg_dump | pg_restore round trip that the comparison helpers must call
//! identical (and a changed row must make different).

use std::process::Stdio;
use std::time::Instant;

use crate::common::pg::{self, PgServer};

#[test]
fn start_and_stop_a_server() {
    let started = Instant::now();
    let server = PgServer::start();
    let up = started.elapsed();
    assert_eq!(server.psql("postgres", "SELECT 40 + 2;").trim(), "42");
    assert!(
        server
            .url("app")
            .ends_with(&format!(":{}/app", server.port()))
    );
    assert!(server.bin_dir().join("pg_dump").is_file());
    let data = server.data_dir();
    let stopping = Instant::now();
    drop(server);
    let down = stopping.elapsed();
    eprintln!("PgServer: start {up:?}, stop and remove {down:?}");
    assert!(!data.exists(), "the cluster folder is removed on drop");
}

#[test]
fn fixture_round_trips_through_pg_dump_and_pg_restore() {
    let started = Instant::now();
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(PgServer::start);
        let target = scope.spawn(PgServer::start);
        (
            source.join().expect("start the first server"),
            target.join().expect("start the second server"),
        )
    });
    assert_ne!(source.port(), target.port());
    eprintln!("two servers started in {:?}", started.elapsed());

    let populating = Instant::now();
    source.createdb("app");
    pg::populate_fixture(&source, "app");
    eprintln!("fixture populated in {:?}", populating.elapsed());

    // The fixture holds what a dump must carry.
    let counts = pg::table_row_counts(&source, "app");
    let expected = [
        ("media.attachments", 2),
        ("media.audit_log", 3001 + 300),
        ("media.files", 3001),
        ("public.accounts", 501),
    ];
    let expected = expected
        .iter()
        .map(|(table, rows)| (table.to_string(), *rows))
        .collect();
    assert_eq!(counts, expected);
    assert_fixture_features(&source, "app");
    assert_eq!(
        source
            .psql(
                "app",
                "SELECT rolname FROM pg_roles WHERE rolname = 'media_reader';"
            )
            .trim(),
        "media_reader"
    );

    // Globals first (the role the grants name), as a restore would, then the database.
    let round_trip = Instant::now();
    let globals = source
        .tool("pg_dumpall")
        .args(["--globals-only", "--no-role-passwords"])
        .output()
        .expect("run pg_dumpall");
    assert!(globals.status.success(), "{globals:?}");
    let globals: String = String::from_utf8(globals.stdout)
        .expect("UTF-8")
        .lines()
        .filter(|line| !line.contains("ROLE postgres"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(globals.contains("CREATE ROLE media_reader"), "{globals}");
    target.psql("postgres", &globals);

    target.createdb("restored");
    let mut dump = source
        .tool("pg_dump")
        .args(["-Fc", "-Z0", "--dbname", "app"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pg_dump");
    let restore = target
        .tool("pg_restore")
        .args(["--exit-on-error", "--dbname", "restored"])
        .stdin(dump.stdout.take().expect("pg_dump's stdout"))
        .output()
        .expect("run pg_restore");
    assert!(dump.wait().expect("wait for pg_dump").success());
    assert!(
        restore.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    eprintln!("pg_dump | pg_restore in {:?}", round_trip.elapsed());

    let original = pg::dump_schema_and_data(&source, "app");
    let restored = pg::dump_schema_and_data(&target, "restored");
    if original != restored {
        let dir = std::env::temp_dir();
        let (a, b) = (
            dir.join("pg_harness.original.sql"),
            dir.join("pg_harness.restored.sql"),
        );
        std::fs::write(&a, &original).expect("write the original dump");
        std::fs::write(&b, &restored).expect("write the restored dump");
        panic!("the dumps differ: diff {} {}", a.display(), b.display());
    }
    assert_eq!(pg::table_row_counts(&target, "restored"), counts);
    assert_fixture_features(&target, "restored");

    // The dump carries all of it, so comparing dumps compares all of it.
    for needle in [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE EXTENSION IF NOT EXISTS hstore",
        "CREATE TRIGGER files_audit",
        "CREATE MATERIALIZED VIEW media.monthly_uploads",
        "REFRESH MATERIALIZED VIEW media.monthly_uploads",
        "SELECT pg_catalog.setval('media.invoice_number', 4242, true);",
        "SELECT pg_catalog.lo_create(",
        "COMMENT ON LARGE OBJECT",
        "GRANT SELECT ON LARGE OBJECT",
        "GRANT SELECT ON TABLE media.files TO media_reader;",
        "COMMENT ON SCHEMA media IS",
        "ALTER DEFAULT PRIVILEGES",
    ] {
        assert!(original.contains(needle), "the dump lacks {needle:?}");
    }
    for line in original.lines() {
        assert!(
            !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"),
            "volatile line kept: {line}"
        );
    }

    // A one-row change shows up in the comparison.
    target.psql(
        "restored",
        "ALTER TABLE media.files DISABLE TRIGGER files_audit;
         UPDATE media.files SET ratio = 0 WHERE id = 17;
         ALTER TABLE media.files ENABLE TRIGGER files_audit;",
    );
    assert_ne!(pg::dump_schema_and_data(&target, "restored"), original);
    eprintln!("whole test body in {:?}", started.elapsed());
}

/// The large objects, extensions, trigger and grants of the fixture are in `db`.
fn assert_fixture_features(server: &PgServer, db: &str) {
    let facts = server.psql(
        db,
        r#"
SELECT count(*) FROM pg_largeobject_metadata;
SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql';
SELECT tgname FROM pg_trigger WHERE NOT tgisinternal;
SELECT has_table_privilege('media_reader', 'media.files', 'SELECT');
SELECT convert_from(lo_get(content), 'UTF8') FROM media.attachments WHERE name = 'terms.txt';
SELECT length(lo_get(content)) FROM media.attachments WHERE name = 'logo.bin';
SELECT last_value FROM media.invoice_number;
SELECT count(*) FROM media.monthly_uploads;
SELECT count(*) FROM media.files WHERE title % 'Holiday foto 12 beach';
SELECT tags -> 'camera' FROM media.files WHERE id = 1;
SELECT display_name FROM public.accounts WHERE email = 'odd@example.invalid';
"#,
    );
    let expected = "3\nhstore,pg_trgm\nfiles_audit\nt\nTerms of service\nVersion 3\n\n\
                    8192\n4242\n";
    assert!(
        facts.starts_with(expected),
        "{db}: unexpected facts:\n{facts}"
    );
    let rest: Vec<&str> = facts[expected.len()..].lines().collect();
    assert!(
        rest[0].parse::<i64>().expect("a count") > 1,
        "materialized view rows: {facts}"
    );
    assert!(
        rest[1].parse::<i64>().expect("a count") > 0,
        "pg_trgm similarity: {facts}"
    );
    assert_eq!(rest[2], "cam-1", "hstore: {facts}");
    assert!(
        rest[3].starts_with("tab\there, newline") && rest.join("\n").contains("🎞️"),
        "{facts}"
    );
}
