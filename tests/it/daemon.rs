//! End-to-end tests of `backplan daemon` and `backplan schedule`, with the real binary.
//!
//! The daemon's clock is faked with libfaketime (Debian's `faketime` package): each
//! daemon process starts at the time a test gives and its clock runs on from there, so
//! a daily schedule's tick comes within seconds and a restart "days later" is one
//! process start away. Everything else is real: the repository on disk, the locks,
//! the signals, the HTTP endpoint. Without libfaketime the daemon tests fail when `CI`
//! is set and are skipped loudly otherwise; likewise `systemd-analyze` for the unit
//! tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::daemon::Daemon;
use crate::common::http::HttpServer;
use crate::common::pg::PgServer;
use crate::common::{LOCAL_POLICY_HEAD, POLICY, Sandbox, free_port, with_repository_key};
use serde_json::Value;

/// libfaketime's thread-safe library, in Debian's multiarch folder for this machine.
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// Whether a tool the tests need is here: fails the test under CI when it is not,
/// says loudly that the test is skipped otherwise.
fn have(what: &str, path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} ({path}) is missing: install Debian's `{package}` (scripts/install-deps)"
    );
    eprintln!("SKIPPED: {what} ({path}) is missing; install Debian's `{package}`");
    false
}

fn have_faketime() -> bool {
    let path =
        libfaketime().unwrap_or_else(|| PathBuf::from("/usr/lib/*/faketime/libfaketimeMT.so.1"));
    have("libfaketime", &path.display().to_string(), "faketime")
}

/// The policy of these tests, with a repository key, after `init`, with its data.
fn sandbox() -> Sandbox {
    Sandbox::initialised(&with_repository_key(POLICY)).example_data()
}

/// `backplan daemon ARGS` in `sandbox`, its clock starting at `start`
/// (`2027-01-25 12:00:00`, UTC).
fn daemon(sandbox: &Sandbox, start: &str, args: &[&str]) -> Daemon {
    let mut command = sandbox.command(&[&["daemon"], args].concat());
    command
        .env("LD_PRELOAD", libfaketime().expect("libfaketime"))
        .env("FAKETIME", format!("@{start}"))
        // tokio's timers run on the monotonic clock: only the wall clock is faked.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("TZ", "UTC");
    Daemon::spawn("backplan daemon", &mut command).expect("start the daemon")
}

/// Waits until the daemon has logged `text`.
fn wait_for(daemon: &mut Daemon, text: &str) {
    daemon
        .wait_until(&format!("log {text:?}"), Duration::from_secs(60), |d| {
            d.log().contains(text)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// How often `text` occurs in the daemon's log.
fn count(daemon: &Daemon, text: &str) -> usize {
    daemon.log().matches(text).count()
}

/// Stops the daemon with SIGTERM; it must exit 0 and say so.
fn stop(mut daemon: Daemon) -> String {
    let status = daemon
        .terminate(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = daemon.log();
    assert!(status.success(), "the daemon exited with {status}:\n{log}");
    assert!(log.contains("daemon: stopped"), "{log}");
    log
}

/// The snapshots `local` holds, as `snapshots --format json` lists them.
fn snapshots(sandbox: &Sandbox) -> Vec<Value> {
    let run = sandbox.run(&["snapshots", "--format", "json"]).check();
    let json: Value = serde_json::from_str(&run.stdout).expect("snapshots prints JSON");
    json["destinations"]["local"]["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The times of the complete snapshots of `source`, oldest first.
fn times(sandbox: &Sandbox, source: &str) -> Vec<String> {
    let mut times: Vec<String> = snapshots(sandbox)
        .iter()
        .filter(|s| s["source"] == source && s["status"] == "complete")
        .map(|s| s["time"].as_str().unwrap_or_default().to_string())
        .collect();
    times.sort();
    times
}

/// The files under the repository's `locks/`.
fn locks(sandbox: &Sandbox) -> Vec<PathBuf> {
    match std::fs::read_dir(sandbox.path("backups/locks")) {
        Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// `GET path` on loopback `port`: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The first daemon of a sandbox: it backs up the never backed up sources at once.
fn first_run(sandbox: &Sandbox, start: &str) {
    let mut first = daemon(sandbox, start, &[]);
    wait_for(&mut first, "daemon: run finished");
    wait_for(&mut first, "daemon: next run due");
    stop(first);
}

// --- daemon -------------------------------------------------------------------------

#[test]
fn daemon_backs_up_at_once_what_was_never_backed_up_then_waits_for_the_schedule() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &[]);
    wait_for(&mut d, "daemon: run finished");
    wait_for(&mut d, "daemon: next run due 2027-01-26 00:00:00 UTC");
    let log = d.log();
    assert!(log.contains("config (never backed up)"), "{log}");
    assert!(log.contains("✓ backup uploads → local"), "{log}");
    assert!(log.contains("2 done, 0 failed"), "{log}");
    stop(d);
    assert_eq!(times(&sandbox, "config").len(), 1);
    assert_eq!(times(&sandbox, "uploads").len(), 1);
    assert!(
        times(&sandbox, "uploads")[0].starts_with("2027-01-25T12:00"),
        "the snapshot carries the daemon's clock: {:?}",
        times(&sandbox, "uploads")
    );
}

#[test]
fn daemon_with_jitter_runs_a_due_backup_once_within_the_jitter() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    // Due at once (never backed up): "now" at every look, and still one jitter only.
    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &["--jitter", "4s"]);
    wait_for(&mut d, "daemon: run finished");
    wait_for(
        &mut d,
        "daemon: next run due 2027-01-26 00:00:00 UTC, starting",
    );
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 1, "{log}");
    let uploads = times(&sandbox, "uploads");
    assert_eq!(uploads.len(), 1);
    assert!(
        uploads[0].as_str() < "2027-01-25T12:00:05",
        "started within the jitter: {uploads:?}"
    );
}

#[test]
fn daemon_runs_a_due_backup_when_its_tick_comes_and_serves_healthz_and_metrics() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    first_run(&sandbox, "2027-01-25 12:00:00");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = daemon(&sandbox, "2027-01-25 23:59:50", &["--listen", &listen]);
    wait_for(&mut d, "daemon: next run due 2027-01-26 00:00:00 UTC");
    d.wait_for_port(port, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = get(port, "/healthz");
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("/healthz is JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["next_run"]["at"], "2027-01-26T00:00:00Z", "{body}");
    assert_eq!(get(port, "/nothing").0, 404);

    // Nothing runs before the tick; the run comes with it.
    assert_eq!(times(&sandbox, "uploads").len(), 1);
    wait_for(&mut d, "daemon: run finished");
    wait_for(&mut d, "daemon: next run due 2027-01-27 00:00:00 UTC");
    let (_, body) = get(port, "/healthz");
    let health: Value = serde_json::from_str(&body).expect("/healthz is JSON");
    assert_eq!(health["last_run"]["done"], 2, "{body}");
    assert_eq!(health["last_run"]["failed"], 0, "{body}");

    // /metrics: the destinations as the run left them, the new snapshot's time in it.
    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let uploads = times(&sandbox, "uploads");
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert!(uploads[1].starts_with("2027-01-26T00:00"), "{uploads:?}");
    let newest: chrono::DateTime<chrono::Utc> = uploads[1].parse().expect("a time");
    let gauge = |name: &str| -> f64 {
        let series = format!("{name}{{source=\"uploads\",destination=\"local\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
            .parse()
            .expect("a number")
    };
    let success = gauge("backplan_last_success_timestamp_seconds");
    assert!(
        (success - newest.timestamp() as f64).abs() < 1.0,
        "{success} is not {newest}"
    );
    assert_eq!(gauge("backplan_last_status"), 2.0);
    assert_eq!(gauge("backplan_expected_interval_seconds"), 86400.0);
    stop(d);
}

#[test]
fn daemon_catches_up_a_missed_run_once_after_a_restart() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    first_run(&sandbox, "2027-01-25 12:00:00");

    // Down over two ticks (26th and 27th 00:00): one run catches up, at once.
    let mut d = daemon(&sandbox, "2027-01-27 12:00:00", &[]);
    wait_for(&mut d, "daemon: run finished");
    wait_for(&mut d, "daemon: next run due 2027-01-28 00:00:00 UTC");
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 1, "{log}");
    assert!(
        log.contains("uploads (@daily UTC, last 2027-01-25 12:00 UTC)"),
        "{log}"
    );
    assert_eq!(times(&sandbox, "uploads").len(), 2);

    // Restarted again the same day: what was caught up stays caught up.
    let mut again = daemon(&sandbox, "2027-01-27 12:10:00", &[]);
    wait_for(&mut again, "daemon: next run due 2027-01-28 00:00:00 UTC");
    let log = stop(again);
    assert!(!log.contains("daemon: run started"), "{log}");
    assert_eq!(times(&sandbox, "uploads").len(), 2);
    assert_eq!(times(&sandbox, "config").len(), 2);
}

/// When the last drill of `source` on `local` ended, as `status` reads it.
fn last_drill(sandbox: &Sandbox, source: &str) -> Option<String> {
    let run = sandbox.run(&["status", "--format", "json"]).check();
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let entry = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == source)
        .expect("an entry")
        .clone();
    assert!(
        entry["drill"].is_null() || entry["drill"]["result"] == "passed",
        "{entry:#}"
    );
    entry["drill"]["finished"].as_str().map(str::to_string)
}

#[test]
fn daemon_drills_a_new_source_at_once_and_then_at_the_drill_schedules_tick() {
    if !have_faketime() {
        return;
    }
    let policy = format!(
        "{}drill:\n  schedule: \"0 23 * * *\"\n  secret_key_file: {}\n",
        with_repository_key(POLICY),
        crate::common::secret_key().display()
    );
    let sandbox = Sandbox::initialised(&policy).example_data();

    // The first run backs up; the source has never been drilled, so a second run
    // drills it at once. Then the drill schedule's tick (23:00) comes before the
    // backups' (00:00).
    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &[]);
    wait_for(&mut d, "uploads (restore drill, never drilled)");
    wait_for(
        &mut d,
        "daemon: next run due 2027-01-25 23:00:00 UTC: config (restore drill, 0 23 * * * UTC, last 2027-01-25 12:0",
    );
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 2, "{log}");
    let first = last_drill(&sandbox, "uploads").expect("a drill recorded");
    assert!(first.starts_with("2027-01-25T12:0"), "{first}");
    assert_eq!(times(&sandbox, "uploads").len(), 1);

    // At the tick, one run drills both sources and backs nothing up.
    let mut d = daemon(&sandbox, "2027-01-25 22:59:50", &[]);
    wait_for(&mut d, "daemon: run finished");
    wait_for(&mut d, "daemon: next run due 2027-01-26 00:00:00 UTC");
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 1, "{log}");
    let second = last_drill(&sandbox, "uploads").expect("a drill recorded");
    assert!(
        second.starts_with("2027-01-25T23:0"),
        "{second} ({first} before)"
    );
    assert!(
        last_drill(&sandbox, "config").is_some_and(|t| t.starts_with("2027-01-25T23:0")),
        "{log}"
    );
    assert_eq!(times(&sandbox, "uploads").len(), 1, "no backup was due");
}

fn count_in(log: &str, text: &str) -> usize {
    log.matches(text).count()
}

#[test]
fn a_run_that_cannot_start_is_logged_and_not_repeated_before_the_next_tick() {
    if !have_faketime() {
        return;
    }
    // No repository key: every run stops before its first action, recording nothing.
    let sandbox = Sandbox::with_policy(&with_repository_key(POLICY)).example_data();
    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &[]);
    wait_for(&mut d, "without applying: BP223");
    wait_for(&mut d, "daemon: next run due 2027-01-26 00:00:00 UTC");
    std::thread::sleep(Duration::from_secs(2));
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 1, "{log}");
}

#[test]
fn a_daemon_run_notifies_as_an_apply_does() {
    if !have_faketime() {
        return;
    }
    let server = HttpServer::start();
    let sandbox = Sandbox::initialised(&format!(
        "{}notify:\n  hc:\n    type: healthchecks\n    url: ${{env:HC_URL}}\n",
        with_repository_key(POLICY)
    ))
    .example_data();
    let mut command = sandbox.command(&["daemon"]);
    command
        .env("LD_PRELOAD", libfaketime().expect("libfaketime"))
        .env("FAKETIME", "@2027-01-25 12:00:00")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("HC_URL", server.url("/ping/daemon"));
    let mut d = Daemon::spawn("backplan daemon", &mut command).expect("start the daemon");
    wait_for(&mut d, "daemon: run finished");
    stop(d);
    let routes: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.route().to_string())
        .collect();
    assert_eq!(routes, ["/ping/daemon/start", "/ping/daemon"], "{routes:?}");
    assert!(
        server.to("/ping/daemon")[0]
            .text()
            .contains("2 done, 0 failed")
    );
}

#[test]
fn daemon_starts_no_run_while_another_backplan_of_this_host_holds_a_lock() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    // A shared lock of a running process of this host (the test itself): another
    // backplan's run is going.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let lock = serde_json::json!({
        "kind": "shared",
        "host": host.trim(),
        "pid": std::process::id(),
        "started": "2027-01-25T12:00:00Z",
        "expires": "2027-01-25T12:30:00Z",
    });
    sandbox.write("backups/locks/shared-0123456789abcdef", &lock.to_string());

    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &[]);
    wait_for(
        &mut d,
        "daemon: a run is going (local holds a shared lock of",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&d, "daemon: run started"), 0, "{}", d.log());
    assert!(times(&sandbox, "config").is_empty());

    // The other run ends: the due run starts once.
    std::fs::remove_file(sandbox.path("backups/locks/shared-0123456789abcdef"))
        .expect("release the lock");
    wait_for(&mut d, "daemon: run finished");
    wait_for(&mut d, "daemon: next run due");
    let log = stop(d);
    assert_eq!(count_in(&log, "daemon: run started"), 1, "{log}");
    assert_eq!(times(&sandbox, "config").len(), 1);
}

#[test]
fn daemon_once_runs_only_when_a_run_is_due_and_is_silent_otherwise() {
    if !have_faketime() {
        return;
    }
    let sandbox = sandbox();
    let once = |start: &str| {
        let mut command = sandbox.command(&["daemon", "--once"]);
        command
            .env("LD_PRELOAD", libfaketime().expect("libfaketime"))
            .env("FAKETIME", format!("@{start}"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        command.output().expect("run daemon --once")
    };
    let first = once("2027-01-25 12:00:00");
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("2 done"));

    let later = once("2027-01-25 18:00:00");
    assert!(later.status.success(), "{later:?}");
    assert!(later.stdout.is_empty(), "{later:?}");
    assert!(later.stderr.is_empty(), "{later:?}");
    assert_eq!(times(&sandbox, "uploads").len(), 1);

    let next_day = once("2027-01-26 00:01:00");
    assert!(next_day.status.success(), "{next_day:?}");
    assert_eq!(times(&sandbox, "uploads").len(), 2);
}

#[test]
fn sigterm_abandons_a_running_backup_without_a_lock_or_a_snapshot_left_behind() {
    if !have_faketime() {
        return;
    }
    let server = PgServer::start();
    server.createdb("app");
    server.psql(
        "app",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2);",
    );
    let sandbox = Sandbox::initialised(&format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: \"{}\"\n    databases: [app]\n    lock_wait_timeout: 120s\n",
        server.url("app"),
    ));
    // Another session holds the table: the backup waits for it, mid-step.
    let mut holder = server
        .tool("psql")
        .args([
            "-d",
            "app",
            "-c",
            "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300);",
        ])
        .spawn()
        .expect("start the session that holds the table");

    let mut d = daemon(&sandbox, "2027-01-25 12:00:00", &[]);
    wait_for(&mut d, "daemon: run started");
    d.wait_until("take its lock", Duration::from_secs(60), |_| {
        !locks(&sandbox).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(1));
    let log = stop(d);
    let _ = holder.kill();
    let _ = holder.wait();

    assert!(log.contains("daemon: SIGTERM: stopping"), "{log}");
    assert!(
        log.contains("BP268") && log.contains("abandoned"),
        "the backup was abandoned: {log}"
    );
    assert_eq!(locks(&sandbox), Vec::<PathBuf>::new(), "{log}");
    assert!(
        snapshots(&sandbox).is_empty(),
        "no snapshot, complete or failed: {:?}",
        snapshots(&sandbox)
    );
    // The repository is whole: everything it references is there.
    sandbox.run(&["verify"]).check();
}

// --- schedule -----------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `backplan schedule systemd` for the example policy, as deploy/systemd holds it.
fn example_units(out: &Path, bin: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args([
            "-p",
            "policies/medianest.yaml",
            "schedule",
            "systemd",
            "--policy-path",
            "/etc/backplan/medianest.yaml",
            "--bin",
            bin,
            "--out",
        ])
        .arg(out)
        .current_dir(root())
        .status()
        .expect("run backplan schedule");
    assert!(status.success());
}

#[test]
fn the_committed_systemd_units_are_what_schedule_systemd_prints_for_the_example_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    example_units(dir.path(), "/usr/local/bin/backplan");
    for unit in ["backplan.service", "backplan.timer"] {
        let generated = std::fs::read_to_string(dir.path().join(unit)).expect("generated");
        let committed = root().join("deploy/systemd").join(unit);
        if std::env::var_os("BACKPLAN_UPDATE_UNITS").is_some() {
            std::fs::write(&committed, &generated).expect("rewrite the unit");
            continue;
        }
        let committed = std::fs::read_to_string(&committed).unwrap_or_default();
        assert_eq!(
            committed, generated,
            "deploy/systemd/{unit} is stale: rerun with BACKPLAN_UPDATE_UNITS=1"
        );
    }
    let timer = std::fs::read_to_string(dir.path().join("backplan.timer")).expect("timer");
    assert!(
        timer.contains("OnCalendar=*-*-* 03:00:00 Europe/Berlin\n"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true\n"), "{timer}");
}

#[test]
fn the_generated_systemd_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The units name the binary they run: verify checks that it exists.
    example_units(dir.path(), env!("CARGO_BIN_EXE_backplan"));
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("backplan.service"))
        .arg(dir.path().join("backplan.timer"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only lines about our units count: verify also reports on the host's own units.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("backplan.")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// deploy/systemd/backplan-daemon.service: its command line is one this backplan
/// takes, and systemd accepts the unit.
#[test]
fn the_daemon_service_unit_runs_a_daemon_command_line_and_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/backplan-daemon.service"))
        .expect("the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/backplan", "{exec}");
    assert!(
        words.windows(2).any(|w| w == ["daemon", "--listen"]),
        "{exec}"
    );
    assert!(
        unit.contains("\nType=simple\n") && unit.contains("\nWantedBy=multi-user.target\n"),
        "{unit}"
    );
    // The arguments parse: the same command line with the example policy and
    // `--help` at the end (which stops before anything runs) exits 0.
    let args: Vec<&str> = words[1..]
        .iter()
        .map(|w| match *w {
            "/etc/backplan/medianest.yaml" => "policies/medianest.yaml",
            w => w,
        })
        .chain(["--help"])
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(&args)
        .current_dir(root())
        .output()
        .expect("run backplan");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong flag would not: the check can fail.
    let wrong = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["daemon", "--listen", "nowhere", "--help"])
        .output()
        .expect("run backplan");
    assert!(!wrong.status.success());

    if !have("systemd-analyze", "/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("backplan-daemon.service");
    // verify checks that the binary exists: this build's.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/backplan", env!("CARGO_BIN_EXE_backplan")),
    )
    .expect("write the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("backplan-")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

#[test]
fn a_schedule_systemd_cannot_say_becomes_a_frequent_timer_of_daemon_once() {
    let sandbox = Sandbox::with_policy(
        &POLICY.replace("  schedule: \"@daily\"", "  schedule: \"0 4 1 * 1\""),
    );
    let run = sandbox.run(&["schedule", "systemd"]).check();
    assert!(run.stdout.contains("OnCalendar=*:0/5\n"), "{}", run.stdout);
    assert!(run.stdout.contains("0 4 1 * 1 UTC"), "{}", run.stdout);
    assert!(run.stdout.contains(" daemon --once\n"), "{}", run.stdout);
}

#[test]
fn schedule_cron_prints_a_crontab_line_of_daemon_once() {
    let sandbox = Sandbox::new();
    let run = sandbox
        .run(&[
            "schedule",
            "cron",
            "--policy-path",
            "/etc/backplan/policy.yaml",
        ])
        .check();
    let line = run
        .stdout
        .lines()
        .find(|l| !l.starts_with('#'))
        .expect("a crontab line");
    assert_eq!(
        line,
        "*/5 * * * * /usr/local/bin/backplan --policy /etc/backplan/policy.yaml daemon --once"
    );
}

/// systemd and backplan agree on every tick of the schedules the timer says.
#[test]
fn on_calendar_ticks_are_the_schedules_own() {
    if !have("systemd-analyze", "/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    use backplan::policy::schedule::{Schedule, parse_timezone};
    use chrono::{DateTime, Utc};
    let base: DateTime<Utc> = "2026-03-20T12:00:00Z".parse().expect("time");
    for (expr, zone) in [
        ("0 3 * * *", "Europe/Berlin"),
        ("*/15 * * * *", "UTC"),
        ("30 1 * * MON-FRI", "America/New_York"),
        ("0 0 1 */3 *", "UTC"),
        ("5 4 * * 0,6", "Asia/Tokyo"),
        ("@weekly", "UTC"),
        ("0 12 * * *", "Europe/London"),
    ] {
        let schedule = Schedule::parse(expr, parse_timezone(zone).expect("zone")).expect("cron");
        let calendar = schedule
            .on_calendar(base)
            .unwrap_or_else(|| panic!("{expr} {zone} has an OnCalendar form"));
        let out = Command::new("systemd-analyze")
            .args(["calendar", "--iterations=12", "--base-time"])
            .arg(base.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .arg(&calendar)
            .env("TZ", "UTC")
            .output()
            .expect("systemd-analyze calendar");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{calendar}: {text}");
        let systemd: Vec<String> = text
            .lines()
            .filter_map(|l| {
                l.split_once("Next elapse:")
                    .or_else(|| l.split_once("Iter. #"))
            })
            .map(|(_, rest)| rest.trim().to_string())
            .map(|rest| match rest.split_once(": ") {
                Some((_, t)) => t.to_string(),
                None => rest,
            })
            .collect();
        let mut ours = Vec::new();
        let mut t = base;
        for _ in 0..12 {
            t = schedule.next_after(t).expect("a tick");
            ours.push(t.format("%a %Y-%m-%d %H:%M:%S UTC").to_string());
        }
        assert_eq!(systemd, ours, "{expr} {zone} as {calendar}");
    }
}
