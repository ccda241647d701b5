//! End-to-end tests of the `postgres` source through the binary, against throwaway
//! PostgreSQL servers that each test starts itself (see `crate::common::pg`): the round trip
//! (also onto another server), refusals and `--clean`, partial restores, tool-version
//! matching, uncovered databases in `plan`, dumps that fail (killed, far smaller, not an
//! archive, an unreachable server), `verify --restore-test`, and the database's own
//! properties (owner, settings, role settings, privileges, comment) restored into a
//! new cluster under the same name or another, by every path.

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pg::{self, PgServer};
use crate::common::{LOCAL_POLICY_HEAD, Run, Sandbox, secret_key};
use chrono::{SecondsFormat, Utc};
use serde_json::Value;

// --- helpers ------------------------------------------------------------------------

/// A policy with one `local` destination and the source `db` backing up `app` of the
/// server at `url`; `extra_db` is appended under `db` (indented four spaces) and
/// `sources` under `sources:` (indented two).
fn policy(url: &str, extra_db: &str, sources: &str) -> String {
    format!(
        r#"{LOCAL_POLICY_HEAD}  db:
    type: postgres
    url: "{url}"
    databases: [app]
{extra_db}{sources}"#
    )
}

/// A server whose database `app` holds the fixture.
fn server_with_fixture() -> PgServer {
    let server = PgServer::start();
    server.createdb("app");
    pg::populate_fixture(&server, "app");
    server
}

/// A diagnostic as one line: miette wraps its message in a gutter (`│`).
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sandbox backing up `app` of `server`, after one successful apply.
fn backed_up(server: &PgServer) -> Sandbox {
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "", ""));
    sandbox
        .run(&["apply"])
        .stdout("✓ backup db → local")
        .check();
    sandbox
}

fn secret() -> String {
    secret_key().display().to_string()
}

/// `backplan restore --only db --secret-key KEY` followed by `args`.
fn restore_args(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ["restore", "--only", "db", "--secret-key", &secret()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

fn restore<'a>(sandbox: &'a Sandbox, args: &[&str]) -> crate::common::Cmd<'a> {
    let all = restore_args(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    sandbox.run(&all)
}

/// `--target db=URL` for database `db` of `server`.
fn target(server: &PgServer, db: &str) -> String {
    format!("db={}", server.url(db))
}

/// An RFC 3339 time `hours` from now: `--now` for a backup that is due again.
fn hours_from_now(hours: i64) -> String {
    (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The snapshots of `local`, as `snapshots --format json` lists them.
fn snapshots(sandbox: &Sandbox) -> Vec<Value> {
    let run = sandbox.run(&["snapshots", "--format", "json"]).check();
    let json: Value = serde_json::from_str(&run.stdout).expect("snapshots prints JSON");
    json["destinations"]["local"]["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The snapshots of `source` with `status`.
fn snapshots_of(sandbox: &Sandbox, source: &str, status: &str) -> Vec<Value> {
    snapshots(sandbox)
        .into_iter()
        .filter(|s| s["source"] == source && s["status"] == status)
        .collect()
}

/// The entries (path → size) of a snapshot's tree, read through the library with the
/// sandbox's repository key.
fn tree_entries(sandbox: &Sandbox, id: &str) -> BTreeMap<String, u64> {
    let loaded = backplan::policy::load_file(&sandbox.path("backplan.yaml"))
        .unwrap_or_else(|e| panic!("load the policy: {e:?}"));
    let key = backplan::repo::repository_key(&loaded.policy)
        .expect("read the repository key")
        .expect("the policy names a repository key");
    let repos = backplan::repo::open_all(&loaded.policy).expect("open the destinations");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (_, tree) = runtime
        .block_on(repos[0].read_snapshot(&key, id))
        .unwrap_or_else(|e| panic!("read snapshot {id}: {e:?}"));
    tree.entries
        .iter()
        .map(|e| (e.path.clone(), e.size))
        .collect()
}

fn role_exists(server: &PgServer, role: &str) -> bool {
    server
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}';"),
        )
        .trim()
        == "1"
}

fn databases(server: &PgServer) -> Vec<String> {
    server
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;",
        )
        .lines()
        .map(str::to_string)
        .collect()
}

/// The server's major version (`15`).
fn server_major(server: &PgServer) -> u32 {
    let num: u32 = server
        .psql("postgres", "SHOW server_version_num;")
        .trim()
        .parse()
        .expect("a version number");
    num / 10_000
}

/// Writes an executable script.
fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A folder `name` in the sandbox with the real client tools of `server` symlinked
/// into it, except those in `except` (the test writes its own).
fn tool_folder(sandbox: &Sandbox, server: &PgServer, name: &str, except: &[&str]) {
    let dir = sandbox.path(name);
    std::fs::create_dir_all(&dir).expect("create the tool folder");
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql", "vacuumdb"] {
        if !except.contains(&tool) {
            symlink(server.bin_dir().join(tool), dir.join(tool)).expect("symlink a tool");
        }
    }
}

fn assert_identical(a: (&PgServer, &str), b: (&PgServer, &str)) {
    assert_eq!(
        pg::table_row_counts(a.0, a.1),
        pg::table_row_counts(b.0, b.1),
        "row counts of {} and {}",
        a.1,
        b.1
    );
    let (left, right) = (
        pg::dump_schema_and_data(a.0, a.1),
        pg::dump_schema_and_data(b.0, b.1),
    );
    if left != right {
        let only_right: Vec<&str> = right.lines().filter(|l| !left.contains(l)).collect();
        let only_left: Vec<&str> = left.lines().filter(|l| !right.contains(l)).collect();
        panic!(
            "the dumps of {} and {} differ\n--- only in {}:\n{}\n--- only in {}:\n{}",
            a.1,
            b.1,
            a.1,
            only_left.join("\n"),
            b.1,
            only_right.join("\n")
        );
    }
}

/// Runs backplan like [`Sandbox::run`], but kills it (this child only) when it runs
/// past `limit`, so that a hang fails the test instead of stalling the suite.
fn run_within(sandbox: &Sandbox, args: &[&str], limit: Duration) -> Run {
    let mut child = sandbox
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run backplan");
    let started = Instant::now();
    while child.try_wait().expect("poll backplan").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("wait for backplan"));
            panic!("backplan {args:?} still ran after {limit:?}\n{}", run.all());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().expect("wait for backplan"))
}

/// Lines of `text` holding `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

// --- round trips --------------------------------------------------------------------

#[test]
fn a_backup_restores_identically_on_the_same_server_and_on_another_with_its_roles() {
    let (server, other) = std::thread::scope(|scope| {
        let server = scope.spawn(server_with_fixture);
        let other = scope.spawn(PgServer::start);
        (server.join().expect("server"), other.join().expect("other"))
    });
    let sandbox = backed_up(&server);

    // The snapshot holds the globals, the dump, its layout and the row counts.
    let complete = snapshots_of(&sandbox, "db", "complete");
    assert_eq!(complete.len(), 1, "{complete:?}");
    let id = complete[0]["id"].as_str().expect("an id");
    let entries = tree_entries(&sandbox, id);
    assert_eq!(
        entries.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "app.counts.json",
            "app.dump",
            "app.layout.json",
            "globals.sql"
        ]
    );
    assert!(entries["app.dump"] > 100_000, "{entries:?}");
    assert!(entries["globals.sql"] > 0, "{entries:?}");
    assert_eq!(
        complete[0]["bytes_read"].as_u64(),
        Some(entries["app.dump"] + entries["globals.sql"]),
        "bytes_read counts the dump and the globals"
    );

    // The restore plan says what will happen, and changes nothing.
    let plan = restore(
        &sandbox,
        &[
            "--plan",
            "--format",
            "json",
            "--target",
            &target(&server, "app_restored"),
        ],
    )
    .check();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the restore plan is JSON");
    let preview = &plan["steps"][0]["preview"];
    assert_eq!(preview["entries"], 4, "{plan:#}");
    assert_eq!(
        preview["notes"][0],
        serde_json::json!({"note": "database", "archive": "app.dump", "database": "app_restored", "state": "created"}),
        "{plan:#}"
    );
    assert!(!databases(&server).contains(&"app_restored".to_string()));

    // Into a new database of the same server.
    restore(&sandbox, &["--target", &target(&server, "app_restored")])
        .stdout("database app_restored restored")
        .check();
    assert_identical((&server, "app"), (&server, "app_restored"));

    // Onto another server: the role the grants name comes with the globals.
    assert!(!role_exists(&other, "media_reader"));
    restore(&sandbox, &["--target", &target(&other, "app")])
        .stdout("database app restored")
        .check();
    assert!(role_exists(&other, "media_reader"));
    assert_identical((&server, "app"), (&other, "app"));
    // ANALYZE ran afterwards.
    assert_eq!(
        other
            .psql(
                "app",
                "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NULL \
                 AND last_autoanalyze IS NULL;"
            )
            .trim(),
        "0"
    );
}

#[test]
fn restore_refuses_a_non_empty_database_without_clean_and_replaces_it_with_clean() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);
    let at_backup = pg::dump_schema_and_data(&server, "app");
    let counts_at_backup = pg::table_row_counts(&server, "app");

    // The database changes after the backup.
    server.psql(
        "app",
        "UPDATE public.accounts SET balance = 0 WHERE id < 50;
         DELETE FROM media.files WHERE id > 2990;
         INSERT INTO public.accounts (email, created_at, updated_at)
             VALUES ('late@example.invalid', now(), now());
         DROP VIEW public.account_usage;
         SELECT setval('media.invoice_number', 99999);",
    );
    let changed = pg::dump_schema_and_data(&server, "app");
    assert_ne!(changed, at_backup);

    // In place, without --clean: refused, nothing touched.
    restore(&sandbox, &["--plan"])
        .stdout("needs --clean")
        .check();
    let refused = restore(&sandbox, &[])
        .status(1)
        .stderr("BP226")
        .stderr("not empty")
        .stderr("--clean")
        .check();
    assert!(!refused.stdout.contains("restored"), "{}", refused.stdout);
    assert_eq!(pg::dump_schema_and_data(&server, "app"), changed);

    // With --clean: the database is as it was at backup time.
    restore(&sandbox, &["--clean"])
        .stdout("database app restored")
        .check();
    assert_eq!(pg::table_row_counts(&server, "app"), counts_at_backup);
    assert_eq!(pg::dump_schema_and_data(&server, "app"), at_backup);
}

#[test]
fn restore_checks_every_database_before_restoring_any() {
    let server = server_with_fixture();
    server.createdb("analytics");
    server.psql(
        "analytics",
        "CREATE TABLE events (id int PRIMARY KEY); INSERT INTO events VALUES (1), (2);",
    );
    let sandbox = Sandbox::initialised(
        &policy(&server.url("app"), "", "").replace("[app]", "[app, analytics]"),
    );
    sandbox.run(&["apply"]).check();
    let app = pg::dump_schema_and_data(&server, "app");
    let analytics = pg::dump_schema_and_data(&server, "analytics");
    server.psql("postgres", "DROP DATABASE app;");
    server.psql("analytics", "INSERT INTO events VALUES (3);");

    // `app` could be restored, `analytics` not: neither is touched.
    restore(&sandbox, &[])
        .status(1)
        .stderr("BP226")
        .stderr("database analytics")
        .check();
    assert!(!databases(&server).contains(&"app".to_string()));

    restore(&sandbox, &["--clean"])
        .stdout("databases app, analytics restored")
        .check();
    assert_eq!(pg::dump_schema_and_data(&server, "app"), app);
    assert_eq!(pg::dump_schema_and_data(&server, "analytics"), analytics);
}

#[test]
fn restore_with_table_restores_only_that_table_into_an_empty_database() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);
    server.createdb("partial");

    restore(
        &sandbox,
        &[
            "--table",
            "accounts",
            "--target",
            &target(&server, "partial"),
        ],
    )
    .stdout("database partial restored")
    .check();
    assert_eq!(
        pg::table_row_counts(&server, "partial"),
        BTreeMap::from([("public.accounts".to_string(), 501)])
    );
    let rows = "SELECT * FROM public.accounts ORDER BY id;";
    assert_eq!(server.psql("partial", rows), server.psql("app", rows));
    // Nothing else came along: no other schema, view or large object.
    assert_eq!(
        server
            .psql(
                "partial",
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'media';"
            )
            .trim(),
        "0"
    );
    assert_eq!(
        server
            .psql("partial", "SELECT count(*) FROM pg_largeobject_metadata;")
            .trim(),
        "0"
    );
}

#[test]
fn restore_refuses_a_schema_qualified_table_that_pg_restore_would_not_match() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);

    // pg_restore matches --table by name alone: `public.accounts` would restore
    // nothing and still succeed.
    restore(
        &sandbox,
        &[
            "--table",
            "public.accounts",
            "--target",
            &target(&server, "partial"),
        ],
    )
    .status(1)
    .stderr("--schema public --table accounts")
    .check();
    assert!(!databases(&server).contains(&"partial".to_string()));
}

#[test]
fn a_failing_pg_restore_is_reported_with_its_own_error() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);
    // No table, so not refused; but the schema the archive creates is there.
    server.createdb("taken");
    server.psql("taken", "CREATE SCHEMA media;");

    let run = restore(&sandbox, &["--target", &target(&server, "taken")])
        .status(1)
        .stderr("pg_restore into taken failed")
        .stderr("already exists")
        .check();
    assert!(!run.stderr.contains("Broken pipe"), "{}", run.stderr);
}

// --- plan and tool versions ---------------------------------------------------------

#[test]
fn a_pg_dump_older_than_the_server_fails_with_the_version_needed_and_plan_warns_first() {
    let server = PgServer::start();
    server.createdb("app");
    let major = server_major(&server);
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "    bin_dir: oldbin\n", ""));
    std::fs::create_dir_all(sandbox.path("oldbin")).expect("mkdir");
    for tool in ["pg_dump", "pg_dumpall"] {
        script(
            &sandbox.path(&format!("oldbin/{tool}")),
            &format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{tool} (PostgreSQL) 9.6.0'; exit 0; fi\nexit 1\n"
            ),
        );
    }

    // Before any apply, plan says so.
    let plan = sandbox.run(&["plan"]).check();
    let warnings = lines_with(&plan.stdout, "BP227");
    assert_eq!(warnings.len(), 1, "{}", plan.stdout);
    assert!(
        warnings[0].contains(&format!("PostgreSQL {major}"))
            && warnings[0].contains(&format!("version {major} or newer")),
        "{}",
        plan.stdout
    );

    let run = sandbox.run(&["apply"]).status(3).check();
    let all = run.all();
    assert!(all.contains("BP227"), "{all}");
    assert!(
        all.contains(&format!("no pg_dump of version {major} or newer")),
        "{all}"
    );
    assert!(all.contains("found: 9"), "{all}");
    assert!(snapshots_of(&sandbox, "db", "complete").is_empty());
}

#[test]
fn plan_warns_about_databases_that_no_source_covers() {
    let server = PgServer::start();
    server.createdb("app");
    server.createdb("analytics");
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "", ""));

    let plan = sandbox.run(&["plan"]).check();
    let warnings = lines_with(&plan.stdout, "BP230");
    assert_eq!(warnings.len(), 1, "{}", plan.stdout);
    assert!(warnings[0].contains("\"analytics\""), "{}", plan.stdout);
    assert!(!plan.stdout.contains("\"postgres\""), "{}", plan.stdout);
    assert!(!plan.stdout.contains("\"app\""), "{}", plan.stdout);

    // Covered by a second source, the warning goes.
    let sandbox = Sandbox::initialised(&policy(
        &server.url("app"),
        "",
        &format!(
            "  analytics:\n    type: postgres\n    url: \"{}\"\n",
            server.url("analytics")
        ),
    ));
    let plan = sandbox.run(&["plan"]).check();
    assert!(!plan.stdout.contains("BP230"), "{}", plan.stdout);
}

// --- failing dumps ------------------------------------------------------------------

#[test]
fn a_pg_dump_killed_midway_leaves_no_snapshot_and_the_next_apply_succeeds() {
    let server = server_with_fixture();
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "    bin_dir: cutbin\n", ""));
    tool_folder(&sandbox, &server, "cutbin", &["pg_dump"]);
    let real = server.bin_dir().join("pg_dump");
    let wrapper = sandbox.path("cutbin/pg_dump");
    script(
        &wrapper,
        &format!(
            "#!/bin/bash\nREAL_BIN='{}'\n\"$REAL_BIN/pg_dump\" \"$@\" | head -c 4096; exit ${{PIPESTATUS[0]}}\n",
            server.bin_dir().display()
        ),
    );
    let version = |tool: &Path| Command::new(tool).arg("--version").output().expect("run");
    let (wrapped, unwrapped) = (version(&wrapper), version(&real));
    assert!(wrapped.status.success());
    assert_eq!(wrapped.stdout, unwrapped.stdout, "--version passes through");

    let run = sandbox.run(&["apply"]).status(3).check();
    assert!(run.stdout.contains("✗ backup db"), "{}", run.stdout);
    assert!(
        run.stdout.contains("pg_dump of app failed"),
        "{}",
        run.stdout
    );
    let failed = snapshots_of(&sandbox, "db", "failed");
    assert_eq!(failed.len(), 1, "{:?}", snapshots(&sandbox));
    assert!(snapshots_of(&sandbox, "db", "complete").is_empty());
    // The failed snapshot holds nothing.
    let id = failed[0]["id"].as_str().expect("an id");
    assert!(tree_entries(&sandbox, id).is_empty());
    let table = sandbox.run(&["snapshots"]).check();
    assert!(
        lines_with(&table.stdout, " db ")
            .iter()
            .all(|l| l.contains("FAILED")),
        "{}",
        table.stdout
    );
    sandbox
        .run(&["plan"])
        .stdout("+ backup  db → local   last backup failed")
        .check();
    // Nothing to restore, and restore says so.
    restore(&sandbox, &["--target", &target(&server, "app_restored")])
        .status(1)
        .stdout("db: no good snapshot to restore")
        .stderr("BP224")
        .check();
    assert!(!databases(&server).contains(&"app_restored".to_string()));

    // With the real tools the next apply succeeds, and restores identically.
    sandbox.write("backplan.yaml", &policy(&server.url("app"), "", ""));
    sandbox
        .run(&["apply"])
        .stdout("✓ backup db → local")
        .check();
    assert_eq!(snapshots_of(&sandbox, "db", "complete").len(), 1);
    restore(&sandbox, &["--target", &target(&server, "app_restored")]).check();
    assert_identical((&server, "app"), (&server, "app_restored"));
}

#[test]
fn a_pg_dump_that_prints_no_archive_fails_without_hanging() {
    let server = PgServer::start();
    server.createdb("app");
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "    bin_dir: junkbin\n", ""));
    tool_folder(&sandbox, &server, "junkbin", &["pg_dump"]);
    // Far more than a pipe holds: the tool blocks unless backplan closes its end.
    script(
        &sandbox.path("junkbin/pg_dump"),
        &format!(
            "#!/bin/bash\nif [ \"$1\" = --version ]; then exec '{}' \"$@\"; fi\nhead -c 50000000 /dev/zero\n",
            server.bin_dir().join("pg_dump").display()
        ),
    );
    let run = run_within(&sandbox, &["apply"], Duration::from_secs(30));
    assert_eq!(run.status, Some(3), "{}", run.all());
    assert!(
        run.stdout.contains("does not start like a pg_dump archive"),
        "{}",
        run.all()
    );
    assert!(snapshots_of(&sandbox, "db", "complete").is_empty());
}

#[test]
fn a_dump_far_smaller_than_the_last_good_one_fails_unless_the_ratio_allows_it() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);
    server.psql(
        "app",
        "DELETE FROM media.audit_log;
         DELETE FROM media.files WHERE id > 20;
         VACUUM FULL;",
    );

    let run = sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .status(3)
        .check();
    assert!(run.stdout.contains("far smaller"), "{}", run.stdout);
    assert!(run.stdout.contains("BP227"), "{}", run.stdout);
    assert_eq!(snapshots_of(&sandbox, "db", "complete").len(), 1);
    assert_eq!(snapshots_of(&sandbox, "db", "failed").len(), 1);

    sandbox.write(
        "backplan.yaml",
        &policy(&server.url("app"), "    min_size_ratio: 0.0\n", ""),
    );
    sandbox
        .run(&["apply", "--now", &hours_from_now(50)])
        .stdout("✓ backup db → local")
        .check();
    assert_eq!(snapshots_of(&sandbox, "db", "complete").len(), 2);
    restore(&sandbox, &["--target", &target(&server, "app_restored")]).check();
    assert_identical((&server, "app"), (&server, "app_restored"));
}

#[test]
fn an_unreachable_server_fails_its_source_with_a_code_and_the_others_succeed() {
    let server = PgServer::start();
    server.createdb("app");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sandbox = Sandbox::with_policy(&policy(
        &server.url("app"),
        "",
        &format!(
            "  down:\n    type: postgres\n    url: \"postgres://postgres@127.0.0.1:{closed}/app\"\n  \
             uploads:\n    type: files\n    path: uploads\n"
        ),
    ));
    sandbox.write("uploads/hello.txt", "hello\n");
    sandbox.run(&["init"]).check();

    let plan = sandbox.run(&["plan"]).check();
    assert!(
        lines_with(&plan.stdout, "BP229")
            .iter()
            .any(|l| l.contains("down")),
        "{}",
        plan.stdout
    );

    let run = sandbox
        .run(&["apply", "--format", "json"])
        .status(3)
        .check();
    let report: Value = serde_json::from_str(&run.stdout).expect("apply prints JSON");
    let outcomes: BTreeMap<&str, &Value> = report["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| (o["action"]["source"].as_str().expect("a source"), o))
        .collect();
    assert_eq!(outcomes["db"]["status"], "done", "{report:#}");
    assert_eq!(outcomes["uploads"]["status"], "done", "{report:#}");
    assert_eq!(outcomes["down"]["status"], "failed", "{report:#}");
    assert_eq!(outcomes["down"]["error"]["code"], "BP229", "{report:#}");
    assert!(
        outcomes["down"]["error"]["help"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{report:#}"
    );
    let error = outcomes["down"]["error"]["message"]
        .as_str()
        .expect("an error message");
    assert!(error.contains(&format!("127.0.0.1:{closed}")), "{error}");
    assert!(error.contains("refused"), "the cause is named: {error}");
    assert_eq!(snapshots_of(&sandbox, "down", "failed").len(), 1);
    assert!(snapshots_of(&sandbox, "down", "complete").is_empty());
    assert_eq!(snapshots_of(&sandbox, "db", "complete").len(), 1);
    assert_eq!(snapshots_of(&sandbox, "uploads", "complete").len(), 1);
}

// --- verify --------------------------------------------------------------------------

#[test]
fn verify_restore_test_restores_into_a_scratch_database_and_drops_it() {
    let server = server_with_fixture();
    let sandbox = backed_up(&server);
    let before = databases(&server);

    sandbox
        .run(&["verify", "--restore-test", "--secret-key", &secret()])
        .stdout("database check: db")
        .stdout("restored into a scratch database and counted")
        .check();
    assert_eq!(databases(&server), before);
    assert!(
        !databases(&server)
            .iter()
            .any(|d| d.starts_with("backplan_verify_"))
    );
}

// --- parallel dumps and restores ----------------------------------------------------

/// What a folder holds (names), for checking that a spool was removed.
fn folder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A `bin_dir` named `name` whose `pg_restore` appends its arguments (and the size of
/// an archive file it reads, as `size N`) to `name/pg_restore.log` and runs the real
/// one.
fn logging_pg_restore(sandbox: &Sandbox, server: &PgServer, name: &str) -> std::path::PathBuf {
    tool_folder(sandbox, server, name, &["pg_restore"]);
    let log = sandbox.path(&format!("{name}/pg_restore.log"));
    script(
        &sandbox.path(&format!("{name}/pg_restore")),
        &format!(
            "#!/bin/sh\nif [ \"$1\" != --version ]; then echo \"$@\" >> '{log}'; fi\n\
             for a; do last=$a; done\n\
             if [ -f \"$last\" ]; then stat -c 'size %s' \"$last\" >> '{log}'; fi\n\
             exec '{}' \"$@\"\n",
            server.bin_dir().join("pg_restore").display(),
            log = log.display(),
        ),
    );
    log
}

/// Restores `db` with `args` (and `env`) into database `into` of `server`, which
/// then equals `app`, and checks that the restore left nothing in `spool`.
fn restores_identically_through(
    sandbox: &Sandbox,
    server: &PgServer,
    into: &str,
    args: &[&str],
    env: &[(&str, &str)],
    spool: &Path,
) {
    let target = target(server, into);
    let mut all = args.to_vec();
    all.extend(["--target", &target]);
    let mut cmd = restore(sandbox, &all).stdout(&format!("database {into} restored"));
    for (name, value) in env {
        cmd = cmd.env(name, value);
    }
    cmd.check();
    assert_identical((server, "app"), (server, into));
    assert_eq!(folder_names(spool), Vec::<String>::new());
}

#[test]
fn a_parallel_dump_stores_each_file_of_a_directory_archive_and_restores_identically() {
    let server = server_with_fixture();
    let sandbox = Sandbox::initialised(&policy(
        &server.url("app"),
        "    jobs: 2\n    spool_dir: spool\n    bin_dir: logbin\n",
        "",
    ));
    let log = logging_pg_restore(&sandbox, &server, "logbin");
    sandbox
        .run(&["apply"])
        .stdout("✓ backup db → local")
        .stdout("pg_dump -j 2 in directory format")
        .check();
    // The dump went through a fresh folder under spool_dir, which is gone.
    assert_eq!(folder_names(&sandbox.path("spool")), Vec::<String>::new());

    // Each file of the folder is an entry of its own; there is no custom archive.
    let complete = snapshots_of(&sandbox, "db", "complete");
    assert_eq!(complete.len(), 1, "{complete:?}");
    let id = complete[0]["id"].as_str().expect("an id");
    let entries = tree_entries(&sandbox, id);
    assert!(entries.contains_key("app.dir/toc.dat"), "{entries:?}");
    assert!(entries.contains_key("app.counts.json"), "{entries:?}");
    assert!(entries.contains_key("globals.sql"), "{entries:?}");
    assert!(!entries.contains_key("app.dump"), "{entries:?}");
    // One data file per table with rows (accounts, files, audit_log, attachments,
    // …) and the large objects.
    let data: Vec<&String> = entries
        .keys()
        .filter(|k| k.starts_with("app.dir/") && k.ends_with(".dat") && *k != "app.dir/toc.dat")
        .collect();
    assert!(data.len() >= 5, "{entries:?}");
    let archive: u64 = entries
        .iter()
        .filter(|(k, _)| k.starts_with("app.dir/"))
        .map(|(_, v)| v)
        .sum();
    assert!(archive > 100_000, "{entries:?}");

    // The restore plan says that a directory-format archive needs a spool, and how
    // much room; it changes nothing.
    restore(
        &sandbox,
        &[
            "--plan",
            "--spool",
            "restore-spool",
            "--target",
            &target(&server, "app_restored"),
        ],
    )
    .stdout("app.dir/: app_restored will be created")
    .stdout("app.dir/: pg_restore -j 1 from a spool in restore-spool (needs ")
    .stdout("a directory-format archive, restored by sections")
    .check();
    assert!(!sandbox.path("restore-spool").exists());

    // Without --jobs, from a spool all the same; the spool goes afterwards.
    restores_identically_through(
        &sandbox,
        &server,
        "app_restored",
        &["--spool", "restore-spool"],
        &[],
        &sandbox.path("restore-spool"),
    );

    // With --jobs 2, spooled in the temporary folder by default.
    std::fs::create_dir_all(sandbox.path("tmp")).expect("mkdir tmp");
    let tmp = sandbox.path("tmp").display().to_string();
    restores_identically_through(
        &sandbox,
        &server,
        "app_jobs",
        &["--jobs", "2"],
        &[("TMPDIR", &tmp)],
        &sandbox.path("tmp"),
    );
    // Each restore went by sections: the schema, the data in batches of whole files
    // (one here: the files are small), the indexes and constraints with the jobs.
    let calls = std::fs::read_to_string(&log).expect("the pg_restore log");
    for (db, jobs, spool) in [("app_restored", 1, "restore-spool"), ("app_jobs", 2, "tmp")] {
        let runs: Vec<&str> = lines_with(&calls, &format!(" -d {db} "));
        assert_eq!(runs.len(), 3, "{calls}");
        assert!(
            runs.iter()
                .all(|r| r.contains(" -Fd ") && r.contains(spool)),
            "{calls}"
        );
        assert!(runs[0].contains("--section=pre-data"), "{calls}");
        assert!(
            runs[1].contains("--section=data") && runs[1].contains(" -L "),
            "{calls}"
        );
        assert!(
            runs[2].contains("--section=post-data") && runs[2].contains(&format!("--jobs={jobs}")),
            "{calls}"
        );
    }

    // A table whose COPY fails (here the server refuses its rows) stops the restore
    // with the server's reason and the table's file; the table holds none of its
    // rows, and the spool goes all the same.
    let failing = sandbox.path("logbin/pg_restore.real");
    std::fs::rename(sandbox.path("logbin/pg_restore"), &failing).expect("move the logger");
    script(
        &sandbox.path("logbin/pg_restore"),
        &format!(
            "#!/bin/sh\n'{real}' \"$@\" || exit $?\n\
             case \"$*\" in *'-d app_failed --section=pre-data'*)\n\
             '{psql}' -X -q -h 127.0.0.1 -p {port} -U postgres -d app_failed \\\n\
             -c 'ALTER TABLE media.files ADD CONSTRAINT refused CHECK (false) NOT VALID';;\nesac\n",
            real = failing.display(),
            psql = server.bin_dir().join("psql").display(),
            port = server.port(),
        ),
    );
    restore(
        &sandbox,
        &[
            "--jobs",
            "2",
            "--spool",
            "restore-spool",
            "--target",
            &target(&server, "app_failed"),
        ],
    )
    .status(1)
    .stderr("BP229")
    .stderr("app.dir/")
    .stderr("violates check constraint")
    .check();
    assert_eq!(
        server
            .psql("app_failed", "SELECT count(*) FROM media.files;")
            .trim(),
        "0"
    );
    assert_eq!(
        folder_names(&sandbox.path("restore-spool")),
        Vec::<String>::new()
    );
    std::fs::rename(&failing, sandbox.path("logbin/pg_restore")).expect("restore the logger");

    // verify reads the archive with pg_restore --list and restores it for a count.
    let before = databases(&server);
    let calls = std::fs::read_to_string(&log).expect("the pg_restore log");
    let lists_before = lines_with(&calls, "--list").len();
    let creates_before = lines_with(&calls, "--create --list").len();
    sandbox
        .run(&[
            "verify",
            "--read-data",
            "--restore-test",
            "--secret-key",
            &secret(),
        ])
        .stdout("restored into a scratch database and counted")
        .check();
    let calls = std::fs::read_to_string(&log).expect("the pg_restore log");
    // Once to check the archive, once for its database's encoding and locale (the
    // scratch database is made with them), once for the restore test's sections.
    assert_eq!(
        lines_with(&calls, "--list").len(),
        lists_before + 3,
        "{calls}"
    );
    assert_eq!(
        lines_with(&calls, "--create --list").len(),
        creates_before + 1,
        "{calls}"
    );
    assert_eq!(databases(&server), before);
    assert_eq!(folder_names(&sandbox.path("spool")), Vec::<String>::new());
}

#[test]
fn restore_with_jobs_restores_a_streamed_dump_by_sections_from_its_layout() {
    let server = server_with_fixture();
    let sandbox = Sandbox::initialised(&policy(&server.url("app"), "    bin_dir: logbin\n", ""));
    let log = logging_pg_restore(&sandbox, &server, "logbin");
    sandbox
        .run(&["apply"])
        .stdout("✓ backup db → local")
        .check();
    let id = snapshots_of(&sandbox, "db", "complete")[0]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let entries = tree_entries(&sandbox, &id);
    let size = entries["app.dump"];
    // The backup recorded where each table's rows lie in the archive.
    assert!(entries.contains_key("app.layout.json"), "{entries:?}");

    // The plan names the jobs, the spool, what it needs at most (the archive: the
    // layout that says how much less is read by the restore) and what is there.
    let plan = restore(
        &sandbox,
        &[
            "--plan",
            "--format",
            "json",
            "--jobs",
            "2",
            "--spool",
            "spool",
            "--target",
            &target(&server, "app_restored"),
        ],
    )
    .check();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the restore plan is JSON");
    let notes = &plan["steps"][0]["preview"]["notes"];
    assert_eq!(
        notes[0],
        serde_json::json!({"note": "database", "archive": "app.dump", "database": "app_restored", "state": "created"}),
        "{plan:#}"
    );
    let spool = &notes[1];
    assert_eq!(
        (
            &spool["note"],
            &spool["archive"],
            &spool["jobs"],
            &spool["dir"],
            &spool["layout"]
        ),
        (
            &Value::from("spool"),
            &Value::from("app.dump"),
            &Value::from(2),
            &Value::from("spool"),
            &Value::from("by_sections")
        ),
        "{spool}"
    );
    assert_eq!(
        spool["needed"].as_u64(),
        Some(size.div_ceil(4096) * 4096),
        "{spool}"
    );
    // The same, in words.
    let needs = backplan::render::bytes(size.div_ceil(4096) * 4096);
    restore(
        &sandbox,
        &[
            "--plan",
            "--jobs",
            "2",
            "--spool",
            "spool",
            "--target",
            &target(&server, "app_restored"),
        ],
    )
    .stdout(&format!(
        "app.dump: pg_restore -j 2 from a spool in spool (needs at most {needs} free, "
    ))
    .stdout(" available, restored by sections")
    .check();
    // Without --jobs the archive streams: no spool, and the plan says what --jobs
    // would do.
    let streamed = restore(
        &sandbox,
        &["--plan", "--target", &target(&server, "app_restored")],
    )
    .stdout("app.dump: streamed into one pg_restore; --jobs N restores it by sections")
    .check();
    assert!(!streamed.stdout.contains("spool"), "{}", streamed.stdout);

    restores_identically_through(
        &sandbox,
        &server,
        "app_restored",
        &["--jobs", "2", "--spool", "spool"],
        &[],
        &sandbox.path("spool"),
    );
    // By sections: the schema, the sequences and large objects, the indexes with
    // the jobs, each from a skeleton of the archive far smaller than the archive;
    // the tables' rows went through COPY.
    let calls = std::fs::read_to_string(&log).expect("the pg_restore log");
    let runs: Vec<&str> = lines_with(&calls, " -d app_restored ");
    assert_eq!(runs.len(), 3, "{calls}");
    assert!(runs[0].contains("--section=pre-data"), "{calls}");
    assert!(
        runs[1].contains("--section=data") && runs[1].contains(" -L "),
        "{calls}"
    );
    assert!(
        runs[2].contains("--section=post-data") && runs[2].contains("--jobs=2"),
        "{calls}"
    );
    assert!(runs.iter().all(|r| r.ends_with("/archive.dump")), "{calls}");
    let sizes: Vec<u64> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("size ")?.parse().ok())
        .collect();
    assert!(!sizes.is_empty(), "{calls}");
    assert!(
        sizes.iter().all(|s| *s < size / 2),
        "{sizes:?} of {size}: {calls}"
    );

    // With --clean the archive is spooled whole and restored by one pg_restore -j.
    server.createdb("taken");
    server.psql("taken", "CREATE SCHEMA media;");
    restores_identically_through(
        &sandbox,
        &server,
        "taken",
        &["--jobs", "2", "--spool", "spool", "--clean"],
        &[],
        &sandbox.path("spool"),
    );
    let calls = std::fs::read_to_string(&log).expect("the pg_restore log");
    let whole = lines_with(&calls, " -d taken ");
    assert_eq!(whole.len(), 1, "{calls}");
    assert!(
        whole[0].contains("--jobs=2") && whole[0].contains("--clean"),
        "{calls}"
    );
    assert!(calls.contains(&format!("size {size}")), "{calls}");

    // A restore that fails still removes its spool.
    server.createdb("clash");
    server.psql("clash", "CREATE SCHEMA media;");
    restore(
        &sandbox,
        &[
            "--jobs",
            "2",
            "--spool",
            "spool",
            "--target",
            &target(&server, "clash"),
        ],
    )
    .status(1)
    .stderr("BP236")
    .stderr("pg_restore --section=pre-data into clash failed")
    .check();
    assert_eq!(folder_names(&sandbox.path("spool")), Vec::<String>::new());
}

// --- .pgpass ------------------------------------------------------------------------

#[test]
fn plan_and_apply_read_the_password_from_pgpass_and_ignore_one_others_may_read() {
    let server = PgServer::start();
    server.createdb("app");
    // A password with the characters .pgpass escapes.
    server.require_password("backup", "s3cr:et\\pw");
    let sandbox = Sandbox::initialised(&policy(&server.url_as("backup", "app"), "", ""));
    let pgpass = sandbox.path("pgpass");
    sandbox.write(
        "pgpass",
        &format!(
            "# backplan's test\n127.0.0.1:{}:*:backup:s3cr\\:et\\\\pw\n",
            server.port()
        ),
    );
    let file = pgpass.display().to_string();
    let plan = |sandbox: &Sandbox| sandbox.run(&["plan"]).env("PGPASSFILE", &file).check();

    // Readable by others, libpq ignores the file, and so does the probe.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let ignored = plan(&sandbox);
    let failures = lines_with(&ignored.stdout, "BP229");
    assert_eq!(failures.len(), 1, "{}", ignored.stdout);
    assert!(failures[0].contains("password"), "{}", ignored.stdout);

    // 0600: the probe logs in with the file's password.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let probed = plan(&sandbox);
    assert!(!probed.stdout.contains("BP229"), "{}", probed.stdout);
    assert!(
        probed.stdout.contains("+ backup  db → local"),
        "{}",
        probed.stdout
    );
    // And apply (the probe, the exported snapshot and pg_dump) backs up with it.
    sandbox
        .run(&["apply"])
        .env("PGPASSFILE", &file)
        .stdout("✓ backup db → local")
        .check();
    assert_eq!(snapshots_of(&sandbox, "db", "complete").len(), 1);
}

// --- the database's own properties --------------------------------------------------

/// A source database whose name needs quoting (upper case, spaces, quotes).
const ODD_DB: &str = "Media \"App\" Ünï";

/// `postgres://postgres@127.0.0.1:PORT/DB` with the database's name percent-encoded.
fn url_of(server: &PgServer, db: &str) -> String {
    let encoded: String = db
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    server.url(&encoded)
}

/// `'text'`, a SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Makes `db` with properties of its own: an owner, a comment, settings (a
/// `search_path` the application's unqualified queries need), a connection limit, a
/// role's settings in it and privileges that keep `PUBLIC` out and let `app_reader`
/// in; then the fixture in it, and a role `outsider` that may not connect.
fn database_with_properties(server: &PgServer, db: &str) {
    let q = pg::quote_ident(db);
    server.psql(
        "postgres",
        &format!(
            r#"CREATE ROLE "App Owner" LOGIN;
               CREATE ROLE app_reader LOGIN;
               CREATE ROLE outsider LOGIN;
               CREATE DATABASE {q} OWNER "App Owner";
               COMMENT ON DATABASE {q} IS 'Media library: don''t drop';
               ALTER DATABASE {q} SET search_path = media, public;
               ALTER DATABASE {q} SET statement_timeout = '45s';
               ALTER DATABASE {q} CONNECTION LIMIT 40;
               ALTER ROLE app_reader IN DATABASE {q} SET work_mem = '8MB';
               REVOKE CONNECT, TEMPORARY ON DATABASE {q} FROM PUBLIC;
               GRANT CONNECT ON DATABASE {q} TO app_reader;"#
        ),
    );
    pg::populate_fixture(server, db);
    server.psql(
        db,
        "GRANT USAGE ON SCHEMA media TO app_reader; \
         GRANT SELECT ON ALL TABLES IN SCHEMA media TO app_reader;",
    );
}

/// The database's own properties as the catalogs hold them, with role names: its
/// owner, comment and connection limit; its settings and those of roles in it
/// (`pg_db_role_setting`); its privileges (`datacl`, exploded).
fn properties_of(server: &PgServer, db: &str) -> Vec<String> {
    server
        .psql(
            "postgres",
            &format!(
                r#"SELECT 'owner ' || pg_get_userbyid(d.datdba) || ', limit ' || d.datconnlimit
                          || ', comment ' || coalesce(shobj_description(d.oid, 'pg_database'), '-')
                   FROM pg_database AS d WHERE d.datname = {name}
                   UNION ALL
                   SELECT 'setting ' || coalesce(r.rolname, '(database)') || ' '
                          || array_to_string(s.setconfig, ',')
                   FROM pg_db_role_setting AS s
                   JOIN pg_database AS d ON d.oid = s.setdatabase
                   LEFT JOIN pg_roles AS r ON r.oid = s.setrole
                   WHERE d.datname = {name}
                   UNION ALL
                   SELECT 'acl ' || coalesce(g.rolname, 'PUBLIC') || ' ' || a.privilege_type
                          || ' by ' || pg_get_userbyid(a.grantor)
                          || CASE WHEN a.is_grantable THEN ' grantable' ELSE '' END
                   FROM pg_database AS d, aclexplode(d.datacl) AS a
                   LEFT JOIN pg_roles AS g ON g.oid = a.grantee
                   WHERE d.datname = {name}
                   ORDER BY 1;"#,
                name = literal(db)
            ),
        )
        .lines()
        .map(str::to_string)
        .collect()
}

/// `db` of `restored` is `ODD_DB` of `source` beyond its rows too: the same
/// `pg_dump --create --schema-only` (names normalised), the same properties, and the
/// application's view: `app_reader` reads `files` unqualified, `outsider` is kept out.
fn assert_same_database(source: &PgServer, restored: &PgServer, db: &str) {
    assert_identical((source, ODD_DB), (restored, db));
    let (want, got) = (
        pg::dump_database_and_schema(source, ODD_DB),
        pg::dump_database_and_schema(restored, db),
    );
    if want != got {
        let only: Vec<&str> = got.lines().filter(|l| !want.contains(l)).collect();
        let lost: Vec<&str> = want.lines().filter(|l| !got.contains(l)).collect();
        panic!(
            "pg_dump --create --schema-only of {db} differs\n--- lost:\n{}\n--- only restored:\n{}",
            lost.join("\n"),
            only.join("\n")
        );
    }
    assert_eq!(properties_of(restored, db), properties_of(source, ODD_DB));
    let count = |role: &str| {
        restored
            .tool("psql")
            .args(["-X", "-q", "-t", "-A", "-U", role, "-d", db])
            .args(["-c", "SELECT count(*) FROM files"])
            .output()
            .expect("run psql")
    };
    let reader = count("app_reader");
    assert!(reader.status.success(), "{reader:?}");
    assert_eq!(String::from_utf8_lossy(&reader.stdout).trim(), "3001");
    let outsider = count("outsider");
    assert!(!outsider.status.success());
    assert!(
        String::from_utf8_lossy(&outsider.stderr).contains("permission denied for database"),
        "{outsider:?}"
    );
}

#[test]
fn a_whole_database_restored_into_a_new_cluster_keeps_its_owner_settings_privileges_and_comment() {
    let (source, other) = std::thread::scope(|scope| {
        let source = scope.spawn(|| {
            let server = PgServer::start();
            database_with_properties(&server, ODD_DB);
            server
        });
        let other = scope.spawn(PgServer::start);
        (source.join().expect("source"), other.join().expect("other"))
    });
    let before = properties_of(&source, ODD_DB);
    for expected in [
        "owner App Owner, limit 40, comment Media library: don't drop",
        "setting (database) search_path=media, public,statement_timeout=45s",
        "setting app_reader work_mem=8MB",
        "acl app_reader CONNECT by App Owner",
    ] {
        assert!(before.iter().any(|p| p == expected), "{before:?}");
    }
    assert!(
        !before.iter().any(|p| p.starts_with("acl PUBLIC")),
        "{before:?}"
    );
    let sandbox = backed_up_database(&source, ODD_DB, "");

    // The plan says that the properties come along, into whatever name.
    let copy = "Restored \"Copy\" Ä";
    let plan = restore(
        &sandbox,
        &[
            "--plan",
            "--format",
            "json",
            "--target",
            &format!("db={}", url_of(&other, copy)),
        ],
    )
    .check();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the restore plan is JSON");
    assert_eq!(
        plan["steps"][0]["preview"]["database_properties"],
        serde_json::json!([{
            "archive": format!("{ODD_DB}.dump"),
            "database": copy,
            "applied": true
        }]),
        "{plan:#}"
    );
    restore(
        &sandbox,
        &[
            "--plan",
            "--target",
            &format!("db={}", url_of(&other, copy)),
        ],
    )
    .stdout(&format!(
        "{ODD_DB}.dump: database properties (owner, settings, role settings, privileges, \
         comment) applied to {copy} after the data, replacing its own"
    ))
    .check();

    // A disaster: the same name on a new cluster, streamed into one pg_restore; the
    // roles come with the globals.
    restore(
        &sandbox,
        &["--target", &format!("db={}", url_of(&other, ODD_DB))],
    )
    .stdout(&format!("database {ODD_DB} restored"))
    .check();
    assert_same_database(&source, &other, ODD_DB);

    // Another name, by sections with two jobs.
    restore(
        &sandbox,
        &[
            "--jobs",
            "2",
            "--spool",
            "spool",
            "--target",
            &format!("db={}", url_of(&other, copy)),
        ],
    )
    .stdout(&format!("database {copy} restored"))
    .check();
    assert_same_database(&source, &other, copy);

    // Over a database whose properties changed since, with --clean: the snapshot's
    // replace them, extra grants and settings included.
    let q = pg::quote_ident(copy);
    other.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {q} OWNER TO outsider; COMMENT ON DATABASE {q} IS 'changed';
             ALTER DATABASE {q} SET work_mem = '1MB'; ALTER DATABASE {q} CONNECTION LIMIT 3;
             ALTER ROLE outsider IN DATABASE {q} SET work_mem = '2MB';
             GRANT ALL ON DATABASE {q} TO outsider WITH GRANT OPTION;
             GRANT CONNECT, TEMPORARY ON DATABASE {q} TO PUBLIC;"
        ),
    );
    assert_ne!(properties_of(&other, copy), before);
    for jobs in ["1", "2"] {
        restore(
            &sandbox,
            &[
                "--clean",
                "--jobs",
                jobs,
                "--spool",
                "spool",
                "--target",
                &format!("db={}", url_of(&other, copy)),
            ],
        )
        .stdout(&format!("database {copy} restored"))
        .check();
        assert_same_database(&source, &other, copy);
    }

    // A partial restore leaves the database's properties alone, and says so.
    other.createdb("partial_copy");
    let partial = format!("db={}", other.url("partial_copy"));
    restore(
        &sandbox,
        &["--plan", "--table", "accounts", "--target", &partial],
    )
    .stdout("a partial restore leaves the database properties of partial_copy")
    .check();
    let untouched = properties_of(&other, "partial_copy");
    restore(&sandbox, &["--table", "accounts", "--target", &partial])
        .stdout("database partial_copy restored")
        .check();
    assert_eq!(
        pg::table_row_counts(&other, "partial_copy"),
        BTreeMap::from([("public.accounts".to_string(), 501)])
    );
    assert_eq!(properties_of(&other, "partial_copy"), untouched);
    assert_eq!(untouched, ["owner postgres, limit -1, comment -"]);
}

#[test]
fn a_directory_format_snapshot_restores_the_database_properties_into_a_new_cluster() {
    let (source, other) = std::thread::scope(|scope| {
        let source = scope.spawn(|| {
            let server = PgServer::start();
            database_with_properties(&server, ODD_DB);
            server
        });
        let other = scope.spawn(PgServer::start);
        (source.join().expect("source"), other.join().expect("other"))
    });
    let sandbox = backed_up_database(&source, ODD_DB, "    jobs: 2\n    spool_dir: spool\n");
    // By sections with one connection, then with two, into another name.
    for (db, jobs) in [(ODD_DB, "1"), ("second copy", "2")] {
        restore(
            &sandbox,
            &[
                "--jobs",
                jobs,
                "--spool",
                "spool",
                "--target",
                &format!("db={}", url_of(&other, db)),
            ],
        )
        .stdout(&format!("database {db} restored"))
        .check();
        assert_same_database(&source, &other, db);
    }
    assert_eq!(folder_names(&sandbox.path("spool")), Vec::<String>::new());
}

#[test]
fn a_database_whose_owner_is_missing_on_the_target_is_refused_before_its_data() {
    let (source, other) = std::thread::scope(|scope| {
        let source = scope.spawn(PgServer::start);
        let other = scope.spawn(PgServer::start);
        (source.join().expect("source"), other.join().expect("other"))
    });
    source.psql(
        "postgres",
        "CREATE ROLE \"Lonely Owner\"; CREATE DATABASE app OWNER \"Lonely Owner\";",
    );
    source.psql(
        "app",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1), (2);",
    );
    // Without the globals, the new cluster lacks the role.
    let sandbox = Sandbox::initialised(&policy(&source.url("app"), "    globals: false\n", ""));
    sandbox.run(&["apply"]).check();
    restore(&sandbox, &["--target", &target(&other, "app")])
        .status(1)
        .stderr("BP240")
        .stderr("role \"Lonely Owner\"")
        .stderr("its data was not restored")
        .stderr("globals: false")
        .check();
    assert_eq!(pg::table_row_counts(&other, "app"), BTreeMap::new());

    // Once the role is there, the database is restored with its owner.
    other.psql("postgres", "CREATE ROLE \"Lonely Owner\";");
    restore(&sandbox, &["--clean", "--target", &target(&other, "app")])
        .stdout("database app restored")
        .check();
    assert_eq!(properties_of(&other, "app"), properties_of(&source, "app"));
    assert_eq!(
        properties_of(&other, "app"),
        ["owner Lonely Owner, limit -1, comment -"]
    );
}

#[test]
fn a_restoring_role_that_may_not_create_the_owner_or_give_the_database_away_fails_clearly() {
    let (source, other) = std::thread::scope(|scope| {
        let source = scope.spawn(PgServer::start);
        let other = scope.spawn(PgServer::start);
        (source.join().expect("source"), other.join().expect("other"))
    });
    source.psql(
        "postgres",
        "CREATE ROLE restorer LOGIN CREATEDB; CREATE ROLE \"App Owner\";
         CREATE DATABASE app OWNER \"App Owner\"; COMMENT ON DATABASE app IS 'kept';",
    );
    source.psql(
        "app",
        "CREATE SCHEMA s AUTHORIZATION restorer; SET ROLE restorer;
         CREATE TABLE s.t (i int); INSERT INTO s.t VALUES (1), (2);",
    );
    let sandbox = backed_up(&source);

    // A role that may create databases, not roles: the globals cannot make the owner,
    // which stops the restore before the data, with psql's reason.
    other.psql("postgres", "CREATE ROLE restorer LOGIN CREATEDB;");
    let as_restorer = format!("db={}", other.url_as("restorer", "app"));
    let run = restore(&sandbox, &["--target", &as_restorer])
        .status(1)
        .stderr("BP240")
        .check();
    let said = one_line(&run.stderr);
    assert!(
        said.contains("role \"App Owner\" that is not on restorer@")
            && said.contains(
                "psql could not create them from the snapshot's globals (CREATE ROLE \"App Owner\": \
                 permission denied to create role)"
            ),
        "{}",
        run.stderr
    );
    assert_eq!(pg::table_row_counts(&other, "app"), BTreeMap::new());

    // Nor give databases away: the data goes in, the owner cannot be set, and nothing
    // of the properties is applied.
    other.psql("postgres", "CREATE ROLE \"App Owner\";");
    let run = restore(&sandbox, &["--target", &as_restorer])
        .status(1)
        .stderr("BP241")
        .stderr("its data is restored")
        .check();
    let said = one_line(&run.stderr);
    for part in [
        "its properties from the snapshot were not applied (none of them)",
        "must be member of role \"App Owner\"",
        "at `ALTER DATABASE \"app\" OWNER TO \"App Owner\";`",
    ] {
        assert!(said.contains(part), "{part}: {}", run.stderr);
    }
    assert_eq!(
        pg::table_row_counts(&other, "app"),
        BTreeMap::from([("s.t".to_string(), 2)])
    );
    assert_eq!(
        properties_of(&other, "app"),
        ["owner restorer, limit -1, comment -"]
    );
}

// --- the database's encoding and locale ---------------------------------------------

/// Words beyond ASCII that LATIN1 holds, in a table with an index on them.
const LATIN1_WORDS: &str = "CREATE TABLE words (w text PRIMARY KEY, n int);
     INSERT INTO words VALUES ('zèbre', 1), ('été', 2), ('Straße', 3), ('façade', 4),
         ('über', 5), ('ÿ', 6), ('e', 7), ('f', 8), ('z', 9), ('é', 10);";

/// A sandbox backing up database `db` of `server`, with `extra` under the source,
/// after one successful apply.
fn backed_up_database(server: &PgServer, db: &str, extra: &str) -> Sandbox {
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: \"{}\"\n    databases: [{}]\n{extra}",
        server.url("postgres"),
        serde_json::to_string(db).expect("a YAML string")
    ));
    sandbox
        .run(&["apply"])
        .stdout("✓ backup db → local")
        .check();
    sandbox
}

/// `ENCODING COLLATE CTYPE` of database `db`, as `pg_database` holds them.
fn encoding_of(server: &PgServer, db: &str) -> String {
    server
        .psql(
            "postgres",
            &format!(
                "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype \
                 FROM pg_database WHERE datname = {};",
                literal(db)
            ),
        )
        .trim()
        .to_string()
}

/// The words of `words`, in the database's own order.
fn sorted_words(server: &PgServer, db: &str) -> String {
    server
        .psql(db, "SELECT string_agg(w, ',' ORDER BY w) FROM words;")
        .trim()
        .to_string()
}

/// `pg_dump --create --schema-only` of `a` and `b` are the same, names normalised:
/// the `CREATE DATABASE` with its encoding and locale too.
fn assert_same_creation(a: (&PgServer, &str), b: (&PgServer, &str)) {
    let (want, got) = (
        pg::dump_database_and_schema(a.0, a.1),
        pg::dump_database_and_schema(b.0, b.1),
    );
    if want != got {
        let only: Vec<&str> = got.lines().filter(|l| !want.contains(l)).collect();
        let lost: Vec<&str> = want.lines().filter(|l| !got.contains(l)).collect();
        panic!(
            "pg_dump --create --schema-only of {} differs\n--- lost:\n{}\n--- only restored:\n{}",
            b.1,
            lost.join("\n"),
            only.join("\n")
        );
    }
}

#[test]
fn a_database_the_restore_creates_gets_the_snapshots_encoding_and_locale_by_every_path() {
    // The new cluster's databases default to UTF8 and C.UTF-8.
    let (source, other) = std::thread::scope(|scope| {
        let source = scope.spawn(PgServer::start);
        let other = scope.spawn(|| PgServer::start_with("C.UTF-8", &[]));
        (source.join().expect("source"), other.join().expect("other"))
    });
    let db = "legacy app";
    source.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C';",
            pg::quote_ident(db)
        ),
    );
    source.psql(db, LATIN1_WORDS);
    assert_eq!(encoding_of(&source, db), "LATIN1 C C");
    other.createdb("utf8 copy");
    let default = encoding_of(&other, "utf8 copy");
    assert_eq!(default, "UTF8 C.UTF-8 C.UTF-8");
    let sandbox = backed_up_database(&source, db, "");

    // The plan says what the database will be made with.
    let into = |name: &str| format!("db={}", url_of(&other, name));
    restore(&sandbox, &["--plan", "--target", &into(db)])
        .stdout(&format!(
            "{db}.dump: {db} created from template0 with the snapshot's encoding LATIN1, locale C\n"
        ))
        .check();
    let plan = restore(
        &sandbox,
        &["--plan", "--format", "json", "--target", &into(db)],
    )
    .check();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the restore plan is JSON");
    assert_eq!(
        plan["steps"][0]["preview"]["database_locales"],
        serde_json::json!([{
            "archive": format!("{db}.dump"),
            "database": db,
            "snapshot": {"encoding": "LATIN1", "provider": "libc", "collate": "C", "ctype": "C"},
            "target": {"state": "created", "tablespace": null}
        }]),
        "{plan:#}"
    );

    // Streamed into one pg_restore under the same name, and by sections into another.
    restore(&sandbox, &["--target", &into(db)])
        .stdout(&format!("database {db} restored"))
        .check();
    let copy = "legacy \"copy\"";
    restore(
        &sandbox,
        &["--jobs", "2", "--spool", "spool", "--target", &into(copy)],
    )
    .stdout(&format!("database {copy} restored"))
    .check();
    for name in [db, copy] {
        assert_eq!(encoding_of(&other, name), "LATIN1 C C", "{name}");
        assert_same_creation((&source, db), (&other, name));
        assert_identical((&source, db), (&other, name));
        assert_eq!(sorted_words(&other, name), sorted_words(&source, db));
    }

    // Restored again in place, with --clean: the same, nothing to say.
    let again = restore(&sandbox, &["--clean", "--target", &into(db)])
        .stdout(&format!("database {db} restored"))
        .check();
    assert!(!again.stdout.contains("warning"), "{}", again.stdout);

    // An existing database keeps its own, and both the plan and the restore say so.
    let warning = format!(
        "{db}.dump: warning: utf8 copy keeps its own encoding UTF8, locale C.UTF-8, not the \
         snapshot's encoding LATIN1, locale C"
    );
    restore(&sandbox, &["--plan", "--target", &into("utf8 copy")])
        .stdout(&warning)
        .check();
    restore(&sandbox, &["--target", &into("utf8 copy")])
        .stdout("database utf8 copy restored")
        .stdout(&format!("  ! {warning}"))
        .check();
    assert_eq!(encoding_of(&other, "utf8 copy"), default);
    assert_identical((&source, db), (&other, "utf8 copy"));
}

/// A folder with the locale `fr_FR.iso88591` compiled into it (`localedef`): a server
/// started with it as `LOCPATH` has that locale, any other server of this machine not.
fn french_latin1_locale() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("backplan-locale-")
        .tempdir()
        .expect("a folder for a locale");
    // The server may run as another user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = Command::new("localedef")
        .args(["-i", "fr_FR", "-f", "ISO-8859-1"])
        .arg(dir.path().join("fr_FR.iso88591"))
        .output()
        .expect("run localedef (the libc-bin package)");
    assert!(
        output.status.success(),
        "localedef -i fr_FR -f ISO-8859-1 (needs the locale sources, the `locales` package): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn a_snapshot_whose_locale_the_server_lacks_fails_with_bp245_and_restores_into_a_database_made_by_hand()
 {
    let locales = french_latin1_locale();
    let with_french = [("LOCPATH", locales.path())];
    let (source, bare, french) = std::thread::scope(|scope| {
        let source = scope.spawn(|| PgServer::start_with("C", &with_french));
        let bare = scope.spawn(PgServer::start);
        let french = scope.spawn(|| PgServer::start_with("C", &with_french));
        (
            source.join().expect("source"),
            bare.join().expect("bare"),
            french.join().expect("french"),
        )
    });
    source.psql(
        "postgres",
        "CREATE DATABASE fr TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'fr_FR.iso88591';",
    );
    source.psql("fr", LATIN1_WORDS);
    let (french_order, byte_order) = (
        "e,é,été,f,façade,Straße,über,ÿ,z,zèbre",
        "Straße,e,f,façade,z,zèbre,é,été,über,ÿ",
    );
    assert_eq!(sorted_words(&source, "fr"), french_order);
    let sandbox = backed_up_database(&source, "fr", "");

    // A server without the locale: refused, with what to do, and nothing created.
    let run = restore(&sandbox, &["--target", &target(&bare, "fr")])
        .status(1)
        .stderr("BP245")
        .stderr("invalid locale name")
        .check();
    let said = one_line(&run.stderr);
    for part in [
        "database fr was not created with the snapshot's encoding and locale",
        "LOCALE = 'fr_FR.iso88591'",
        "nothing was restored",
        "create the database by hand with a locale it has",
        "then restore into it",
    ] {
        assert!(said.contains(part), "{part}: {}", run.stderr);
    }
    assert!(!databases(&bare).contains(&"fr".to_string()));

    // Made by hand with a locale the server has: restored into it, with a warning.
    bare.psql(
        "postgres",
        "CREATE DATABASE fr TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C';",
    );
    restore(&sandbox, &["--target", &target(&bare, "fr")])
        .stdout("database fr restored")
        .stdout(
            "  ! fr.dump: warning: fr keeps its own encoding LATIN1, locale C, not the \
             snapshot's encoding LATIN1, locale fr_FR.iso88591",
        )
        .check();
    assert_identical((&source, "fr"), (&bare, "fr"));
    assert_eq!(sorted_words(&bare, "fr"), byte_order);

    // A server with it: the database sorts as the source's did.
    restore(&sandbox, &["--target", &target(&french, "fr")])
        .stdout("database fr restored")
        .check();
    assert_eq!(
        encoding_of(&french, "fr"),
        "LATIN1 fr_FR.iso88591 fr_FR.iso88591"
    );
    assert_same_creation((&source, "fr"), (&french, "fr"));
    assert_identical((&source, "fr"), (&french, "fr"));
    assert_eq!(sorted_words(&french, "fr"), french_order);
}
