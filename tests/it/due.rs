//! The daemon's pure scheduling rules (`plan::due`): when the next run is due, for
//! which sources and why, and when a run of another process holds it back. Policies
//! from YAML text, inventories from JSON, a fixed `now`.

use std::path::Path;

use backplan::inventory::{Inventory, LockKind};
use backplan::plan::due::{DueWhy, busy, host_schedule, next_run};
use backplan::policy::{Policy, load_str};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// `db` daily at 03:00 UTC and `media` hourly, both on `local`.
fn policy() -> Policy {
    let text = r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
destinations:
  local:
    type: memory
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
  media:
    type: files
    path: /srv/media
    schedule: "@hourly"
"#;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    match load_str(text, Path::new("policy.yaml"), &dir) {
        Ok(loaded) => loaded.policy,
        Err(report) => panic!("the test policy does not load: {report:?}"),
    }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 time")
}

fn snapshot(source: &str, time: &str, status: &str) -> Value {
    json!({"id": format!("{source}-{time}"), "source": source, "run_id": format!("run-{time}"),
           "time": time, "status": status})
}

fn inventory(snapshots: Vec<Value>, locks: Vec<Value>) -> Inventory {
    serde_json::from_value(json!({
        "destinations": {"local": {"snapshots": snapshots, "locks": locks}}
    }))
    .expect("an inventory")
}

const NOW: &str = "2026-11-25T12:30:00Z";

#[test]
fn a_source_never_backed_up_is_due_now() {
    let next = next_run(&policy(), &inventory(vec![], vec![]), t(NOW), None).expect("a run");
    assert_eq!(next.at, t(NOW));
    let names: Vec<&str> = next.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "media"]);
    assert!(next.sources.iter().all(|s| s.why == DueWhy::NeverBackedUp));
}

#[test]
fn the_next_run_is_the_first_tick_after_the_newest_attempt_with_what_is_due_then() {
    let inv = inventory(
        vec![
            snapshot("db", "2026-11-25T03:00:05Z", "complete"),
            snapshot("media", "2026-11-25T12:00:02Z", "complete"),
        ],
        vec![],
    );
    let next = next_run(&policy(), &inv, t(NOW), None).expect("a run");
    assert_eq!(next.at, t("2026-11-25T13:00:00Z"));
    assert_eq!(next.sources.len(), 1);
    assert_eq!(next.sources[0].name, "media");
    assert_eq!(
        next.sources[0].why,
        DueWhy::Scheduled {
            schedule: "@hourly UTC".into(),
            after: t("2026-11-25T12:00:02Z"),
        }
    );
}

#[test]
fn a_missed_tick_is_due_once_at_the_tick_after_the_last_attempt() {
    // Down for two days: due since the first tick missed, and then only again after
    // the run that catches up.
    let inv = inventory(
        vec![
            snapshot("db", "2026-11-23T03:00:05Z", "complete"),
            snapshot("media", "2026-11-25T12:10:00Z", "complete"),
        ],
        vec![],
    );
    let next = next_run(&policy(), &inv, t(NOW), None).expect("a run");
    assert_eq!(next.at, t("2026-11-24T03:00:00Z"));
    let names: Vec<&str> = next.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db"]);

    let caught_up = inventory(
        vec![
            snapshot("db", "2026-11-23T03:00:05Z", "complete"),
            snapshot("db", "2026-11-25T12:00:01Z", "complete"),
            snapshot("media", "2026-11-25T12:00:01Z", "complete"),
        ],
        vec![],
    );
    let next = next_run(&policy(), &caught_up, t("2026-11-25T12:00:30Z"), None).expect("a run");
    assert_eq!(next.at, t("2026-11-25T13:00:00Z"));
}

#[test]
fn a_failed_backup_is_retried_at_the_next_tick_not_at_once() {
    let inv = inventory(
        vec![
            snapshot("db", "2026-11-24T03:00:05Z", "complete"),
            snapshot("db", "2026-11-25T03:00:05Z", "failed"),
            snapshot("media", "2026-11-25T12:10:00Z", "complete"),
        ],
        vec![],
    );
    let next = next_run(&policy(), &inv, t(NOW), None).expect("a run");
    assert_eq!(
        next.at,
        t("2026-11-25T13:00:00Z"),
        "media's tick comes first"
    );
    assert!(next.sources.iter().all(|s| s.name == "media"));
}

#[test]
fn a_run_of_this_process_that_recorded_nothing_is_not_repeated_before_the_next_tick() {
    let empty = inventory(vec![], vec![]);
    let next = next_run(&policy(), &empty, t(NOW), Some(t("2026-11-25T12:29:50Z"))).expect("a run");
    assert_eq!(next.at, t("2026-11-25T13:00:00Z"));
}

#[test]
fn another_process_of_this_host_or_a_prune_holds_a_run_back_others_do_not() {
    let lock = |kind: &str, host: &str, pid: u32, holder: Option<&str>, expires: &str| {
        let mut l = json!({"kind": kind, "host": host, "pid": pid,
                           "started": "2026-11-25T11:50:00Z", "expires": expires});
        if let Some(h) = holder {
            l["holder"] = json!(h);
        }
        l
    };
    let policy = policy();
    let check = |locks: Vec<Value>| busy(&policy, &inventory(vec![], locks), t(NOW), "here", 7);
    let live = "2026-11-25T12:50:00Z";

    let b = check(vec![lock("shared", "here", 42, Some("running"), live)]).expect("busy");
    assert_eq!(
        (b.destination.as_str(), b.pid, b.kind),
        ("local", 42, LockKind::Shared)
    );
    assert!(check(vec![lock("exclusive", "elsewhere", 9, None, live)]).is_some());
    // Another host's backup shares the repository; our own lock is left over.
    assert!(check(vec![lock("shared", "elsewhere", 9, None, live)]).is_none());
    assert!(check(vec![lock("shared", "here", 7, Some("running"), live)]).is_none());
    // Stale: expired, or its process gone.
    assert!(
        check(vec![lock(
            "exclusive",
            "elsewhere",
            9,
            None,
            "2026-11-25T12:25:00Z"
        )])
        .is_none()
    );
    assert!(check(vec![lock("shared", "here", 42, Some("exited"), live)]).is_none());
}

#[test]
fn the_host_schedule_groups_sources_by_schedule() {
    let schedule = host_schedule(&policy(), t(NOW));
    assert_eq!(schedule.schedules.len(), 2);
    assert_eq!(schedule.schedules[0].schedule, "0 3 * * * UTC");
    assert_eq!(schedule.schedules[0].sources, ["db"]);
    assert_eq!(
        schedule.schedules[0].on_calendar.as_deref(),
        Some("*-*-* 03:00:00 UTC")
    );
    assert_eq!(
        schedule.schedules[1].on_calendar.as_deref(),
        Some("*-*-* *:00:00 UTC")
    );
    assert!(schedule.expressible());
}

/// `db` daily at 03:00 UTC, drilled daily at 01:00 UTC; `key` names the secret key
/// drills decrypt with.
fn drilled_policy(key: bool) -> Policy {
    let text = format!(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
destinations:
  local:
    type: memory
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
drill:
  schedule: "0 1 * * *"
{}"#,
        if key {
            "  secret_key_file: drill.secret.asc\n"
        } else {
            ""
        }
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    match load_str(&text, Path::new("policy.yaml"), &dir) {
        Ok(loaded) => loaded.policy,
        Err(report) => panic!("the test policy does not load: {report:?}"),
    }
}

fn drill(source: &str, finished: &str) -> Value {
    json!({"source": source, "snapshot": format!("{source}-x"), "started": finished,
           "finished": finished, "result": "passed", "restored_bytes": 1})
}

fn with_drills(snapshots: Vec<Value>, drills: Vec<Value>) -> Inventory {
    serde_json::from_value(json!({
        "destinations": {"local": {"snapshots": snapshots, "drills": drills}}
    }))
    .expect("an inventory")
}

#[test]
fn a_due_drill_wakes_the_daemon_at_the_drill_schedules_tick() {
    let inv = with_drills(
        vec![snapshot("db", "2026-11-25T03:00:05Z", "complete")],
        vec![drill("db", "2026-11-25T01:02:00Z")],
    );
    // The drill's tick (01:00) comes before the backup's (03:00).
    let next = next_run(&drilled_policy(true), &inv, t(NOW), None).expect("a run");
    assert_eq!(next.at, t("2026-11-26T01:00:00Z"));
    assert_eq!(next.sources.len(), 1);
    assert_eq!(next.sources[0].name, "db");
    assert_eq!(
        next.sources[0].why,
        DueWhy::Drill {
            schedule: "0 1 * * * UTC".into(),
            last: Some(t("2026-11-25T01:02:00Z")),
        }
    );
    // Without a secret key apply skips drills: only the backup's tick wakes it.
    let next = next_run(&drilled_policy(false), &inv, t(NOW), None).expect("a run");
    assert_eq!(next.at, t("2026-11-26T03:00:00Z"));
    assert!(matches!(next.sources[0].why, DueWhy::Scheduled { .. }));
}

#[test]
fn a_source_never_drilled_is_due_for_a_drill_once_it_has_a_snapshot() {
    let policy = drilled_policy(true);
    let backed_up = with_drills(
        vec![snapshot("db", "2026-11-25T03:00:05Z", "complete")],
        vec![],
    );
    let drill_now = DueWhy::Drill {
        schedule: "0 1 * * * UTC".into(),
        last: None,
    };
    let next = next_run(&policy, &backed_up, t(NOW), None).expect("a run");
    assert_eq!(next.at, t(NOW));
    assert_eq!(next.sources[0].why, drill_now);
    // The run of this process that took the snapshot could not drill it: still due.
    let next =
        next_run(&policy, &backed_up, t(NOW), Some(t("2026-11-25T03:00:00Z"))).expect("a run");
    assert_eq!(next.at, t(NOW));
    assert_eq!(next.sources[0].why, drill_now);
    // A run after the snapshot that recorded no drill is not repeated before the next
    // tick of the drill schedule.
    let next =
        next_run(&policy, &backed_up, t(NOW), Some(t("2026-11-25T12:00:00Z"))).expect("a run");
    assert_eq!(next.at, t("2026-11-26T01:00:00Z"));
    // Nothing to drill without a good snapshot.
    let failed = with_drills(
        vec![snapshot("db", "2026-11-25T03:00:05Z", "failed")],
        vec![],
    );
    let next = next_run(&policy, &failed, t(NOW), None).expect("a run");
    assert!(
        next.sources
            .iter()
            .all(|s| !matches!(s.why, DueWhy::Drill { .. })),
        "{next:?}"
    );
}

#[test]
fn the_host_schedule_holds_the_drill_schedule_where_drills_run() {
    let schedule = host_schedule(&drilled_policy(true), t(NOW));
    assert_eq!(schedule.schedules.len(), 2, "{schedule:?}");
    assert!(!schedule.schedules[0].drills);
    let drills = &schedule.schedules[1];
    assert_eq!(drills.schedule, "0 1 * * * UTC");
    assert!(drills.drills);
    assert!(drills.sources.is_empty());
    assert_eq!(drills.on_calendar.as_deref(), Some("*-*-* 01:00:00 UTC"));
    // Without the secret key apply skips drills: no tick for them.
    let schedule = host_schedule(&drilled_policy(false), t(NOW));
    assert_eq!(schedule.schedules.len(), 1);
    assert!(schedule.schedules.iter().all(|t| !t.drills));
}
