//! End-to-end tests of `backplan status` and the metrics, with the real binary on a
//! real `fs` destination: a fresh backup is healthy, an old one late, a failed source
//! shows its code, a size change beyond the factor is reported, lock holders are shown
//! and a stale lock is a warning; the metrics text and
//! the file `apply --metrics-file` writes are parsed back and compared with the
//! inventory, and checked by Prometheus's `promtool` with the shipped alert rules,
//! whose behaviour `promtool test rules` checks too.
//! Without `promtool` (Debian: the `prometheus` package) those checks fail under CI
//! and are skipped, loudly, elsewhere.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{POLICY, Sandbox, with_repository_key};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// A sandbox whose repository holds one good snapshot of each source.
fn backed_up() -> Sandbox {
    let sandbox = Sandbox::with_example_data();
    sandbox.run(&["init"]).check();
    sandbox.run(&["apply"]).check();
    sandbox
}

fn json(sandbox: &Sandbox, args: &[&str], status: i32) -> Value {
    let mut all = vec!["status", "--format", "json"];
    all.extend(args);
    let run = sandbox.run(&all).status(status).check();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}

fn entry<'a>(report: &'a Value, source: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .expect("sources is a list")
        .iter()
        .find(|s| s["source"] == source && s["destination"] == "local")
        .unwrap_or_else(|| panic!("no entry for {source} on local: {report:#}"))
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// The snapshots the destination holds, as `snapshots --format json` lists them.
fn snapshots(sandbox: &Sandbox) -> Vec<Value> {
    let run = sandbox.run(&["snapshots", "--format", "json"]).check();
    let inventory: Value = serde_json::from_str(&run.stdout).expect("JSON");
    inventory["destinations"]["local"]["snapshots"]
        .as_array()
        .expect("a list")
        .clone()
}

/// One sample: the metric's name and labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the text exposition format back: every sample, and which metrics have
/// HELP and TYPE lines (checked to come before their samples).
fn parse_metrics(text: &str) -> BTreeMap<Series, f64> {
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(kind, "gauge", "{line}");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(
            typed.iter().any(|t| t == name),
            "{name} has a sample before its TYPE line"
        );
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            samples.insert((name.to_string(), map), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

fn sample(samples: &BTreeMap<Series, f64>, name: &str, source: &str) -> Option<f64> {
    let labels = BTreeMap::from([
        ("destination".to_string(), "local".to_string()),
        ("source".to_string(), source.to_string()),
    ]);
    samples.get(&(name.to_string(), labels)).copied()
}

/// `promtool`, or `None` after saying loudly that the check is skipped (a failure
/// under CI).
fn promtool() -> Option<std::path::PathBuf> {
    let found = crate::common::on_path("promtool");
    if found.is_none() {
        crate::common::missing(
            "promtool",
            "promtool is not on PATH (Debian: apt-get install prometheus; scripts/install-deps)",
        );
    }
    found
}

/// Runs `promtool check metrics` on `text`; panics with its output when it objects.
fn promtool_check_metrics(promtool: &Path, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics refused the text:\n{}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- status ------------------------------------------------------------------------

#[test]
fn status_after_a_fresh_backup_is_ok_and_exits_0() {
    let sandbox = backed_up();
    sandbox
        .run(&["status"])
        .stdout("Status at")
        .stdout(": ok\n")
        .stdout("uploads  local")
        .stdout("never verified")
        .stderr_lacks("BP")
        .check();
    let report = json(&sandbox, &[], 0);
    assert_eq!(report["health"], "ok");
    assert_eq!(report["findings"], Value::Array(vec![]));
    let snaps = snapshots(&sandbox);
    for source in ["config", "uploads"] {
        let e = entry(&report, source);
        assert_eq!(e["freshness"], "ok", "{e:#}");
        assert_eq!(e["last_run"], "ok");
        assert_eq!(e["expected_interval_seconds"], 86_400);
        let snap = snaps
            .iter()
            .find(|s| s["source"] == source)
            .expect("a snapshot");
        assert_eq!(e["last_good"]["id"], snap["id"]);
        assert_eq!(e["size"]["bytes"], snap["size"]);
        assert!(snap["size"].as_u64().is_some_and(|n| n > 0), "{snap:#}");
        assert_eq!(e["last_attempt"]["snapshot"], snap["id"]);
        // Due at the first @daily tick after it.
        let taken = time(&snap["time"]);
        let due = time(&e["due"]);
        assert!(due > taken && due - taken <= Duration::days(1), "{e:#}");
    }
}

#[test]
fn status_of_a_snapshot_older_than_the_schedule_is_late_and_exits_4() {
    let sandbox = backed_up();
    // Two days on, with nothing run since: due for a day (more than half of one).
    let later = (Utc::now() + Duration::days(2)).to_rfc3339();
    sandbox
        .run(&["status", "--now", &later])
        .status(4)
        .stdout("WARNING")
        .stdout("LATE")
        .stdout("! warning BP261 uploads on local: late")
        .check();
    let report = json(&sandbox, &["--now", &later], 4);
    assert_eq!(report["health"], "warning");
    let e = entry(&report, "uploads");
    assert_eq!(e["freshness"], "late");
    assert_eq!(e["health"], "warning");
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().expect("a code"))
        .collect();
    assert_eq!(codes, ["BP261", "BP261"], "{report:#}");
    assert_eq!(report["findings"][0]["kind"], "late");
    assert_eq!(report["findings"][0]["severity"], "warning");
}

#[test]
fn status_of_a_destination_never_backed_up_is_missing_and_exits_5() {
    let sandbox = Sandbox::with_example_data();
    sandbox
        .run(&["status"])
        .status(5)
        .stdout("CRITICAL")
        .stdout("MISSING")
        .stdout("× critical BP260 config on local: no good snapshot")
        .check();
}

#[test]
fn a_failed_source_shows_its_failure_code_and_the_metric_last_status_0() {
    let policy = format!(
        "{}  cache:\n    type: redis\n    url: redis://127.0.0.1:1\n",
        with_repository_key(POLICY)
    );
    let sandbox = Sandbox::with_policy(&policy).example_data();
    sandbox.run(&["init"]).check();
    sandbox.run(&["apply"]).status(3).check();
    // The failure's code is recorded beside the failed snapshot, in public.
    let failures: Vec<_> = std::fs::read_dir(sandbox.path("backups/failures"))
        .expect("a failures/ folder")
        .collect();
    assert_eq!(failures.len(), 1, "one failure recorded");

    sandbox
        .run(&["status"])
        .status(5)
        .stdout("FAILED")
        .stdout("× critical BP262 cache on local: the last backup failed")
        .stdout("with BP229")
        .check();
    let report = json(&sandbox, &[], 5);
    let cache = entry(&report, "cache");
    assert_eq!(cache["freshness"], "missing");
    assert_eq!(cache["last_run"], "failed");
    assert_eq!(cache["last_failure"]["code"], "BP229");
    assert_eq!(cache["last_failure"]["status"], "failed");
    assert_eq!(cache["last_attempt"], cache["last_failure"]);
    assert_eq!(entry(&report, "config")["last_run"], "ok");

    let run = sandbox
        .run(&["status", "--format", "prometheus"])
        .status(5)
        .check();
    let samples = parse_metrics(&run.stdout);
    assert_eq!(sample(&samples, "backplan_last_status", "cache"), Some(0.0));
    assert_eq!(
        sample(&samples, "backplan_last_status", "config"),
        Some(2.0)
    );
    assert_eq!(
        sample(&samples, "backplan_last_success_timestamp_seconds", "cache"),
        Some(0.0),
        "never succeeded"
    );
    let attempt = time(&cache["last_attempt"]["time"]);
    assert_eq!(
        sample(&samples, "backplan_last_attempt_timestamp_seconds", "cache"),
        Some(attempt.timestamp_millis() as f64 / 1000.0)
    );
}

#[test]
fn a_snapshot_much_smaller_than_the_one_before_is_a_size_anomaly() {
    let sandbox = Sandbox::with_example_data();
    sandbox.write("example-data/uploads/big.bin", &"x".repeat(100_000));
    sandbox.run(&["init"]).check();
    sandbox.run(&["apply"]).check();
    std::fs::remove_file(sandbox.path("example-data/uploads/big.bin")).expect("remove");
    // A plan for tomorrow makes both backups due; they run now.
    let tomorrow = (Utc::now() + Duration::days(1)).to_rfc3339();
    sandbox.run(&["apply", "--now", &tomorrow]).check();

    sandbox
        .run(&["status"])
        .status(4)
        .stdout("! warning BP263 uploads on local: the last snapshot holds 16 B")
        .check();
    let report = json(&sandbox, &[], 4);
    let size = &entry(&report, "uploads")["size"];
    assert_eq!(size["anomaly"], true, "{size:#}");
    assert_eq!(size["bytes"], 16);
    assert_eq!(size["previous_bytes"], 100_016);
    assert_eq!(size["factor"], 2.0);
    assert_eq!(entry(&report, "uploads")["last_run"], "warning");
    assert_eq!(entry(&report, "config")["size"]["anomaly"], false);

    let run = sandbox
        .run(&["status", "--format", "prometheus"])
        .status(4)
        .check();
    let samples = parse_metrics(&run.stdout);
    assert_eq!(
        sample(&samples, "backplan_snapshot_size_anomaly", "uploads"),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "backplan_last_status", "uploads"),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "backplan_snapshot_size_bytes", "uploads"),
        Some(16.0)
    );

    // A factor the policy raises past the change: nothing to report.
    let relaxed = sandbox.read("backplan.yaml").replace(
        "    depends_on: [config]\n",
        "    depends_on: [config]\n    size_change_factor: 10000\n",
    );
    sandbox.write("backplan.yaml", &relaxed);
    sandbox.run(&["status"]).status(0).check();
}

#[test]
fn verify_records_its_run_and_status_shows_it() {
    let sandbox = backed_up();
    sandbox.run(&["verify"]).check();
    sandbox
        .run(&["status"])
        .stdout("local: verify passed")
        .check();
    let report = json(&sandbox, &[], 0);
    let verify = &report["destinations"][0]["verify"];
    assert_eq!(verify["result"], "passed", "{report:#}");
    assert_eq!(verify["snapshots"], 2);
    assert_eq!(verify["problems"], 0);
    assert_eq!(entry(&report, "uploads")["verify"], *verify);

    let run = sandbox.run(&["status", "--format", "prometheus"]).check();
    let samples = parse_metrics(&run.stdout);
    assert_eq!(
        sample(&samples, "backplan_last_verify_success", "uploads"),
        Some(1.0)
    );
    let finished = time(&verify["finished"]).timestamp_millis() as f64 / 1000.0;
    assert_eq!(
        sample(&samples, "backplan_last_verify_timestamp_seconds", "config"),
        Some(finished)
    );
}

/// Writes the lock `locks/<name>` as backplan writes it.
fn write_lock(
    sandbox: &Sandbox,
    name: &str,
    kind: &str,
    host: &str,
    pid: u32,
    started: DateTime<Utc>,
    expires: DateTime<Utc>,
) {
    let lock = serde_json::json!({
        "kind": kind,
        "host": host,
        "pid": pid,
        "started": started.to_rfc3339(),
        "expires": expires.to_rfc3339(),
    });
    sandbox.write(&format!("backups/locks/{name}"), &lock.to_string());
}

#[test]
fn status_shows_who_holds_locks_and_a_stale_one_is_a_warning() {
    let sandbox = backed_up();
    let now = Utc::now();
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let this_host = this_host.trim();
    // A backup of this host that runs (the test process itself, which started before
    // the lock), one of another host that has not expired, and a prune of a third host
    // that expired an hour ago.
    let running = (now, now + Duration::minutes(30));
    let other = (now - Duration::minutes(5), now + Duration::minutes(25));
    let expired = (now - Duration::hours(2), now - Duration::hours(1));
    write_lock(
        &sandbox,
        "shared-00000000000000aa",
        "shared",
        this_host,
        std::process::id(),
        running.0,
        running.1,
    );
    write_lock(
        &sandbox,
        "shared-00000000000000bb",
        "shared",
        "app-host-2",
        4242,
        other.0,
        other.1,
    );
    write_lock(
        &sandbox,
        "exclusive",
        "exclusive",
        "prune-host",
        77,
        expired.0,
        expired.1,
    );

    // Only the expired lock is a finding: a warning, exit 4.
    let report = json(&sandbox, &[], 4);
    let mut locks: Vec<(String, u64, String, bool, Option<String>)> =
        report["destinations"][0]["locks"]
            .as_array()
            .expect("locks")
            .iter()
            .map(|l| {
                (
                    l["host"].as_str().expect("a host").to_string(),
                    l["pid"].as_u64().expect("a pid"),
                    l["kind"].as_str().expect("a kind").to_string(),
                    l["stale"].as_bool().expect("stale"),
                    l["holder"].as_str().map(str::to_string),
                )
            })
            .collect();
    locks.sort();
    let mut expected = vec![
        (
            this_host.to_string(),
            u64::from(std::process::id()),
            "shared".to_string(),
            false,
            Some("running".to_string()),
        ),
        ("app-host-2".into(), 4242, "shared".into(), false, None),
        ("prune-host".into(), 77, "exclusive".into(), true, None),
    ];
    expected.sort();
    assert_eq!(locks, expected, "{report:#}");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["code"], "BP211");
    assert_eq!(findings[0]["severity"], "warning");
    assert_eq!(findings[0]["kind"], "stale_lock");
    assert_eq!(findings[0]["host"], "prune-host");
    assert_eq!(findings[0]["pid"], 77);
    assert_eq!(report["health"], "warning");

    let t = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    sandbox
        .run(&["status"])
        .status(4)
        .stdout("\nLocks:\n")
        .stdout(&format!(
            "  local: shared lock of app-host-2 pid 4242 since {}, expires {}\n",
            t(other.0),
            t(other.1)
        ))
        .stdout(&format!(
            "  local: shared lock of {this_host} pid {} since {}, expires {}\n",
            std::process::id(),
            t(running.0),
            t(running.1)
        ))
        .stdout(&format!(
            "  local: exclusive lock of prune-host pid 77 since {}, expires {} (stale)\n",
            t(expired.0),
            t(expired.1)
        ))
        .stdout(&format!(
            "! warning BP211 local: a stale lock of prune-host pid 77 since {}; `backplan unlock` removes it",
            t(expired.0)
        ))
        .check();

    // Once `unlock` removed the stale one, the held locks are still shown, and nothing
    // is wrong.
    sandbox.run(&["unlock"]).check();
    let report = json(&sandbox, &[], 0);
    let hosts: Vec<&str> = report["destinations"][0]["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .map(|l| l["host"].as_str().expect("a host"))
        .collect();
    assert_eq!(hosts.len(), 2, "{report:#}");
    assert!(!hosts.contains(&"prune-host"), "{report:#}");
}

#[test]
fn drill_records_written_to_the_repository_show_in_status_and_metrics() {
    use backplan::inventory::{CheckResult, DrillRecord, DrillStep};

    let sandbox = backed_up();
    let snaps = snapshots(&sandbox);
    let uploads = snaps
        .iter()
        .find(|s| s["source"] == "uploads")
        .expect("a snapshot");
    let at = |s: &str| -> DateTime<Utc> { s.parse().expect("time") };
    let record = |finished: &str, result, seconds: [f64; 3]| DrillRecord {
        source: "uploads".into(),
        snapshot: uploads["id"].as_str().expect("id").into(),
        started: at("2026-11-25T04:00:00Z"),
        finished: at(finished),
        result,
        code: (result == CheckResult::Failed).then(|| "BP236".to_string()),
        steps: ["fetch", "restore", "check"]
            .iter()
            .zip(seconds)
            .map(|(name, seconds)| DrillStep {
                name: name.to_string(),
                seconds,
            })
            .collect(),
        restored_bytes: 16,
        checked: 0,
        differences: 0,
        checksums: None,
        rto_seconds: None,
        rpo_seconds: None,
        snapshot_age_seconds: None,
        estimated_full_seconds: None,
    };
    let op = opendal::Operator::new(
        opendal::services::Fs::default().root(&sandbox.path("backups").to_string_lossy()),
    )
    .expect("an fs operator");
    let repo = backplan::repo::store::Repo::new("local", op);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    // An older failed drill, then a newer one that passed: the newest counts.
    rt.block_on(repo.put_drill(&record(
        "2026-11-25T04:01:00Z",
        CheckResult::Failed,
        [1.0, 2.0, 3.0],
    )))
    .expect("write a drill record");
    rt.block_on(repo.put_drill(&record(
        "2026-11-26T04:01:00Z",
        CheckResult::Passed,
        [1.5, 40.25, 2.0],
    )))
    .expect("write a drill record");

    sandbox
        .run(&["status"])
        .stdout("drill uploads passed 2026-11-26 04:01 UTC")
        .stdout("never drilled: config")
        .check();
    let report = json(&sandbox, &[], 0);
    let drill = &entry(&report, "uploads")["drill"];
    assert_eq!(drill["result"], "passed", "{report:#}");
    assert_eq!(drill["restored_bytes"], 16);
    assert_eq!(drill["steps"][1]["name"], "restore");
    assert_eq!(drill["steps"][1]["seconds"], 40.25);

    let run = sandbox.run(&["status", "--format", "prometheus"]).check();
    let samples = parse_metrics(&run.stdout);
    assert_eq!(
        sample(&samples, "backplan_drill_duration_seconds", "uploads"),
        Some(43.75)
    );
    assert_eq!(
        sample(&samples, "backplan_last_drill_success", "uploads"),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "backplan_last_drill_timestamp_seconds", "uploads"),
        Some(at("2026-11-26T04:01:00Z").timestamp() as f64)
    );
    assert_eq!(
        sample(&samples, "backplan_last_drill_timestamp_seconds", "config"),
        Some(0.0),
        "never drilled"
    );
    assert_eq!(
        sample(&samples, "backplan_last_drill_success", "config"),
        None
    );

    // A failed drill is critical.
    rt.block_on(repo.put_drill(&record(
        "2026-11-27T04:01:00Z",
        CheckResult::Failed,
        [1.0, 1.0, 1.0],
    )))
    .expect("write a drill record");
    sandbox
        .run(&["status"])
        .status(5)
        .stdout("× critical BP264 uploads on local: the last restore drill")
        .stdout("failed with BP236")
        .check();
}

#[test]
fn a_size_change_factor_of_1_or_less_is_refused_where_it_is_written() {
    let policy = with_repository_key(POLICY).replace(
        "    depends_on: [config]\n",
        "    depends_on: [config]\n    size_change_factor: 0.5\n",
    );
    Sandbox::with_policy(&policy)
        .run(&["validate"])
        .status(1)
        .stderr("BP103")
        .stderr("size_change_factor 0.5 is not above 1")
        .check();
    let defaults = with_repository_key(POLICY).replace(
        "  timezone: UTC\n",
        "  timezone: UTC\n  size_change_factor: 1\n",
    );
    Sandbox::with_policy(&defaults)
        .run(&["validate"])
        .status(1)
        .stderr("size_change_factor 1 is not above 1")
        .check();
}

// --- metrics -----------------------------------------------------------------------

#[test]
fn apply_writes_the_metrics_file_atomically_with_the_inventory_after_the_run() {
    let sandbox = Sandbox::with_example_data();
    sandbox.run(&["init"]).check();
    sandbox.write("textfile/other.prom", "# not ours\n");
    sandbox
        .run(&["apply", "--metrics-file", "textfile/backplan.prom"])
        .check();
    let text = sandbox.read("textfile/backplan.prom");
    // Only the file itself and what was there: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(sandbox.path("textfile"))
        .expect("the folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["backplan.prom", "other.prom"]);

    let samples = parse_metrics(&text);
    let snaps = snapshots(&sandbox);
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    for snap in &snaps {
        let source = snap["source"].as_str().expect("source");
        let taken = time(&snap["time"]).timestamp_millis() as f64 / 1000.0;
        assert_eq!(
            sample(&samples, "backplan_last_success_timestamp_seconds", source),
            Some(taken),
            "{source}"
        );
        assert_eq!(
            sample(&samples, "backplan_last_attempt_timestamp_seconds", source),
            Some(taken)
        );
        assert_eq!(
            sample(&samples, "backplan_snapshot_size_bytes", source),
            snap["size"].as_f64()
        );
        assert_eq!(sample(&samples, "backplan_last_status", source), Some(2.0));
        assert_eq!(
            sample(&samples, "backplan_expected_interval_seconds", source),
            Some(86_400.0)
        );
        assert_eq!(
            sample(&samples, "backplan_last_verify_timestamp_seconds", source),
            Some(0.0)
        );
    }
    assert!(text.contains("# HELP backplan_last_status "), "{text}");
    // status --format prometheus prints the same state.
    let printed = sandbox
        .run(&["status", "--format", "prometheus"])
        .check()
        .stdout;
    assert_eq!(parse_metrics(&printed), samples);

    // A run with nothing to do writes it all the same, as a new file renamed over
    // the old one (never rewritten in place: a reader holding the old one keeps it
    // whole).
    let inode = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("the metrics file").ino()
    };
    let path = sandbox.path("textfile/backplan.prom");
    let before = inode(&path);
    let held = std::fs::File::open(&path).expect("open the metrics file");
    sandbox
        .run(&["apply", "--metrics-file", "textfile/backplan.prom"])
        .stdout("Apply: 0 done")
        .check();
    assert_ne!(inode(&path), before, "the file was rewritten in place");
    assert_eq!(
        parse_metrics(&sandbox.read("textfile/backplan.prom")),
        samples
    );
    let mut old = String::new();
    std::io::Read::read_to_string(&mut &held, &mut old).expect("read the old file");
    assert_eq!(old, text, "the old file changed under its reader");

    if let Some(promtool) = promtool() {
        promtool_check_metrics(&promtool, &text);
    }
}

#[test]
fn promtool_accepts_the_metrics_of_failures_size_changes_and_checks() {
    let Some(promtool) = promtool() else { return };
    let policy = format!(
        "{}  cache:\n    type: redis\n    url: redis://127.0.0.1:1\n",
        with_repository_key(POLICY)
    );
    let sandbox = Sandbox::with_policy(&policy).example_data();
    sandbox.run(&["init"]).check();
    sandbox.run(&["apply"]).status(3).check();
    sandbox.run(&["verify"]).check();
    let text = sandbox
        .run(&["status", "--format", "prometheus"])
        .status(5)
        .check()
        .stdout;
    for metric in [
        "backplan_last_status",
        "backplan_last_verify_success",
        "backplan_snapshot_size_anomaly",
    ] {
        assert!(text.contains(&format!("# TYPE {metric} gauge")), "{text}");
    }
    promtool_check_metrics(&promtool, &text);
}

#[test]
fn a_drill_schedule_gives_every_source_its_interval_for_the_overdue_alert() {
    // Without a drill schedule: no series, and the alert falls back to 35 days.
    let sandbox = backed_up();
    let text = sandbox
        .run(&["status", "--format", "prometheus"])
        .check()
        .stdout;
    assert!(
        !text.contains("backplan_drill_expected_interval_seconds"),
        "{text}"
    );
    // Weekly drills: a week, for every source on every destination.
    let weekly = format!(
        "{}drill:\n  schedule: \"@weekly\"\n",
        with_repository_key(POLICY)
    );
    sandbox.write("backplan.yaml", &weekly);
    let run = sandbox.run(&["status", "--format", "prometheus"]).check();
    let samples = parse_metrics(&run.stdout);
    for source in ["config", "uploads"] {
        assert_eq!(
            sample(&samples, "backplan_drill_expected_interval_seconds", source),
            Some(604_800.0),
            "{}",
            run.stdout
        );
    }
    let report = json(&sandbox, &[], 0);
    assert_eq!(entry(&report, "uploads")["drill_interval_seconds"], 604_800);
    if let Some(promtool) = promtool() {
        promtool_check_metrics(&promtool, &run.stdout);
    }
}

// --- alerts ------------------------------------------------------------------------

fn alerts_yaml() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.yaml")
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let Some(promtool) = promtool() else { return };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(alerts_yaml())
        .output()
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check rules refused docs/alerts.yaml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alerts' behaviour, not only their syntax: `promtool test rules` feeds the
/// metrics to the rules and checks when each alert fires (a stale backup at 1.5 times
/// its schedule's interval and not before, a failed run, a size anomaly, a failed or
/// overdue verify or drill, absent metrics), with its labels and annotations.
#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let Some(promtool) = promtool() else { return };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let files = ["alerts.test.yaml", "alerts-overdue.test.yaml"].map(|f| fixtures.join(f));
    let out = Command::new(promtool)
        .args(["test", "rules"])
        .args(&files)
        .output()
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every alert of docs/alerts.yaml has a case.
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(alerts_yaml()).expect("docs/alerts.yaml"))
            .expect("YAML");
    let cases: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("the tests"))
        .collect();
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let name = rule["alert"].as_str().expect("an alert name");
        assert!(
            cases.contains(&format!("alertname: {name}\n")),
            "{name} has no case in tests/fixtures/alerts*.test.yaml"
        );
    }
}

#[test]
fn every_alert_has_a_runbook_section_in_operations_md_and_uses_known_metrics() {
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(alerts_yaml()).expect("docs/alerts.yaml"))
            .expect("YAML");
    let operations =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("docs/operations.md");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    // The metric names the binary writes, from a real status.
    let sandbox = Sandbox::with_example_data();
    let text = sandbox
        .run(&["status", "--format", "prometheus"])
        .status(5)
        .check()
        .stdout;
    let known = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .chain([
            // Only written once a check or a backup has run.
            "backplan_last_status".to_string(),
            "backplan_snapshot_size_anomaly".to_string(),
            "backplan_last_verify_success".to_string(),
            "backplan_last_drill_success".to_string(),
            // Only written with a drill schedule.
            "backplan_drill_expected_interval_seconds".to_string(),
        ])
        .collect::<Vec<_>>();
    let rules = rules["groups"][0]["rules"].as_array().expect("rules");
    assert!(rules.len() >= 7, "{rules:#?}");
    for rule in rules {
        let name = rule["alert"].as_str().expect("an alert name");
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: {url} is not into docs/operations.md"));
        assert_eq!(anchor, name.to_lowercase());
        assert!(
            anchors.iter().any(|a| a == anchor),
            "docs/operations.md has no section `### {name}`"
        );
        let expr = rule["expr"].as_str().expect("an expression");
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("backplan_") {
                assert!(
                    known.iter().any(|k| k == word),
                    "{name} uses unknown {word}"
                );
            }
        }
    }
}
