//! Snapshot tests of the pure plan engine: policies from YAML text, inventories built
//! in code, a fixed `now`, and the plan checked three ways: explicit asserts on the
//! actions, the human view and (for several cases) the JSON.
//!
//! Snapshots live in `tests/snapshots/`; a change in them is a change in what an
//! operator sees and must be reviewed as such.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use backplan::inventory::{
    AppliedPolicy, DestinationState, Inventory, Lost, LostPack, PackState, SnapshotInfo,
    SnapshotStatus,
};
use backplan::plan::{
    self, Action, Backup, BackupReason, Copy, Plan, Prune, PruneReason, Repair, Role, Settings,
};
use backplan::policy::{Policy, load_str};
use backplan::render;
use chrono::{DateTime, Days, Duration, NaiveDate, Utc};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------
// Building inputs
// ---------------------------------------------------------------------------------

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Loads a policy from text; its key file is `policies/keys/demo-recipient.asc`.
fn policy(text: &str) -> Policy {
    match load_str(text, Path::new("policy.yaml"), &policies_dir()) {
        Ok(loaded) => loaded.policy,
        Err(report) => panic!("the test policy does not load: {report:?}"),
    }
}

/// `sources` (YAML indented as under `sources:`) on one destination `local`, daily at
/// 03:00 UTC.
fn daily_policy(sources: &str) -> Policy {
    policy(&format!(
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
{sources}"#
    ))
}

/// One postgres source `db` on one destination `local`, daily at 03:00 UTC, with the
/// given retention (a YAML flow mapping).
fn db_policy(retention: &str) -> Policy {
    daily_policy(&format!(
        "  db:\n    type: postgres\n    url: postgres://backup@db:5432/app\n    retention: {retention}\n"
    ))
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

/// A good snapshot of `source` taken at `time`.
fn snap_at(source: &str, time: DateTime<Utc>) -> SnapshotInfo {
    let stamp = time.format("%Y%m%dT%H%MZ");
    SnapshotInfo {
        id: format!("{source}-{stamp}"),
        source: source.to_string(),
        run_id: format!("run-{stamp}"),
        time,
        finished: Some(time + Duration::minutes(4)),
        status: SnapshotStatus::Complete,
        bytes_read: Some(50 * MIB),
        bytes_stored: Some(20 * MIB),
        size: None,
        source_digest: None,
        policy_digest: None,
        retain_until: None,
    }
}

fn snap(source: &str, time: &str) -> SnapshotInfo {
    snap_at(source, t(time))
}

/// A snapshot whose source failed.
fn failed(mut s: SnapshotInfo) -> SnapshotInfo {
    s.status = SnapshotStatus::Failed;
    s.bytes_stored = Some(MIB);
    s
}

/// `n` good daily snapshots of `source`, from the day `from` (`2026-11-01`) on, each
/// at `hour`:00 UTC.
fn daily(source: &str, from: &str, n: usize, hour: u32) -> Vec<SnapshotInfo> {
    let first = NaiveDate::parse_from_str(from, "%Y-%m-%d").expect("a date");
    (0..n)
        .map(|i| {
            let day = first + Days::new(i as u64);
            let time = day.and_hms_opt(hour, 0, 0).expect("a valid hour").and_utc();
            snap_at(source, time)
        })
        .collect()
}

fn inventory(destinations: Vec<(&str, Vec<SnapshotInfo>)>) -> Inventory {
    Inventory {
        destinations: destinations
            .into_iter()
            .map(|(name, snapshots)| {
                (
                    name.to_string(),
                    DestinationState {
                        snapshots,
                        ..DestinationState::default()
                    },
                )
            })
            .collect(),
    }
}

fn run(policy: &Policy, inventory: &Inventory, now: &str, max_deletes: usize) -> Plan {
    plan::plan(
        policy,
        &policy.graph,
        inventory,
        t(now),
        Settings {
            max_deletes,
            ..Settings::default()
        },
    )
}

// ---------------------------------------------------------------------------------
// Reading plans
// ---------------------------------------------------------------------------------

fn backups(plan: &Plan) -> Vec<&Backup> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Backup(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn copies(plan: &Plan) -> Vec<&Copy> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Copy(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn prunes(plan: &Plan) -> Vec<&Prune> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Prune(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// The times (`2026-11-25 03:00`) of the snapshots pruned from `destination`, oldest
/// first, whatever the reason.
fn pruned_times(plan: &Plan, destination: &str) -> Vec<String> {
    let mut times: Vec<DateTime<Utc>> = prunes(plan)
        .into_iter()
        .filter(|p| p.destination == destination)
        .flat_map(|p| p.snapshots.iter().map(|s| s.time))
        .collect();
    times.sort();
    times
        .into_iter()
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .collect()
}

/// The ids of every pruned snapshot, as (destination, id).
fn pruned_set(plan: &Plan) -> BTreeSet<(String, String)> {
    prunes(plan)
        .into_iter()
        .flat_map(|p| {
            p.snapshots
                .iter()
                .map(|s| (p.destination.clone(), s.id.clone()))
        })
        .collect()
}

fn backup_of<'a>(plan: &'a Plan, source: &str) -> &'a Backup {
    backups(plan)
        .into_iter()
        .find(|b| b.source == source)
        .unwrap_or_else(|| {
            panic!(
                "no backup of {source} in the plan:\n{}",
                render::plan::human(plan)
            )
        })
}

fn warning_codes(plan: &Plan) -> Vec<&str> {
    plan.warnings.iter().map(|w| w.code.as_str()).collect()
}

// ---------------------------------------------------------------------------------
// 1. Never backed up
// ---------------------------------------------------------------------------------

#[test]
fn never_backed_up_sources_are_backed_up_in_graph_order() {
    let policy = policy(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: Europe/Berlin
destinations:
  local:
    type: memory
  offsite:
    type: memory
    root: offsite
sources:
  media:
    type: files
    path: /srv/app/uploads
    depends_on: [db]
  db:
    type: postgres
    url: postgres://backup@db:5432/app
"#,
    );
    let plan = run(&policy, &Inventory::default(), "2026-11-25T12:00:00Z", 10);

    let order: Vec<(&str, usize)> = backups(&plan)
        .iter()
        .map(|b| (b.source.as_str(), b.level))
        .collect();
    assert_eq!(order, [("db", 0), ("media", 1)]);
    for b in backups(&plan) {
        assert_eq!(b.reason, BackupReason::NeverBackedUp);
        assert_eq!(b.destinations, ["local", "offsite"]);
        assert_eq!(b.estimated_bytes, None);
    }
    assert_eq!(backup_of(&plan, "media").depends_on, ["db"]);
    assert!(prunes(&plan).is_empty() && copies(&plan).is_empty());
    assert_eq!(plan.summary.backups, 2);

    insta::assert_snapshot!("never_backed_up_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("never_backed_up_json", plan);
}

// ---------------------------------------------------------------------------------
// 2. Due and not due
// ---------------------------------------------------------------------------------

#[test]
fn due_when_last_good_snapshot_is_older_than_the_last_tick() {
    let policy = db_policy("{ keep_daily: 30 }");
    // Daily at 03:00 up to 24 Nov; now is 25 Nov 12:00, after the 25 Nov 03:00 tick.
    let inv = inventory(vec![("local", daily("db", "2026-11-15", 10, 3))]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 10);

    assert_eq!(backups(&plan).len(), 1);
    assert_eq!(
        backup_of(&plan, "db").reason,
        BackupReason::Due {
            since: t("2026-11-25T03:00:00Z"),
            schedule: "0 3 * * * UTC".into(),
            last: t("2026-11-24T03:00:00Z"),
        }
    );
    assert_eq!(backup_of(&plan, "db").estimated_bytes, Some(50 * MIB));
    assert!(prunes(&plan).is_empty());

    insta::assert_snapshot!("due_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("due_json", plan);
}

#[test]
fn not_due_when_a_snapshot_was_taken_after_the_last_tick() {
    let policy = db_policy("{ keep_daily: 30 }");
    // The 25 Nov 03:00 snapshot is taken exactly at the last tick: nothing is due
    // until 26 Nov 03:00.
    let inv = inventory(vec![("local", daily("db", "2026-11-16", 10, 3))]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 10);

    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(!plan.has_changes());
    assert!(plan.warnings.is_empty());
    let human = render::plan::human(&plan);
    assert!(human.contains("No changes."), "{human}");

    insta::assert_snapshot!("not_due_human", human);
}

// ---------------------------------------------------------------------------------
// 3. Each retention rule on its own (min_keep 1, so only the rule decides)
// ---------------------------------------------------------------------------------

#[test]
fn keep_last_keeps_the_newest_n_snapshots() {
    let policy = db_policy("{ keep_last: 3, min_keep: 1 }");
    let inv = inventory(vec![("local", daily("db", "2026-11-16", 10, 3))]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned_times(&plan, "local"),
        [
            "2026-11-16 03:00",
            "2026-11-17 03:00",
            "2026-11-18 03:00",
            "2026-11-19 03:00",
            "2026-11-20 03:00",
            "2026-11-21 03:00",
            "2026-11-22 03:00",
        ]
    );
    assert_eq!(
        prunes(&plan)[0].reason,
        PruneReason::OutsideRetention {
            rules: "keep_last 3".into()
        }
    );
    insta::assert_snapshot!("keep_last_human", render::plan::human(&plan));
}

#[test]
fn keep_hourly_keeps_the_newest_of_each_hour_that_has_a_snapshot() {
    let policy = db_policy("{ keep_hourly: 3, min_keep: 1 }");
    // Hour 02 has no snapshot, so the three hours are 04, 03 and 01.
    let snaps = [
        "2026-11-25T00:00:00Z",
        "2026-11-25T00:30:00Z",
        "2026-11-25T01:00:00Z",
        "2026-11-25T01:30:00Z",
        "2026-11-25T03:00:00Z",
        "2026-11-25T03:30:00Z",
        "2026-11-25T04:00:00Z",
        "2026-11-25T04:30:00Z",
    ]
    .into_iter()
    .map(|time| snap("db", time))
    .collect();
    let inv = inventory(vec![("local", snaps)]);
    let plan = run(&policy, &inv, "2026-11-25T05:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned_times(&plan, "local"),
        [
            "2026-11-25 00:00",
            "2026-11-25 00:30",
            "2026-11-25 01:00",
            "2026-11-25 03:00",
            "2026-11-25 04:00",
        ]
    );
    insta::assert_snapshot!("keep_hourly_human", render::plan::human(&plan));
}

#[test]
fn keep_daily_keeps_the_newest_of_each_day() {
    let policy = db_policy("{ keep_daily: 3, min_keep: 1 }");
    // Two snapshots a day, 03:00 and 15:00, 21 to 25 Nov.
    let mut snaps = daily("db", "2026-11-21", 5, 3);
    snaps.extend(daily("db", "2026-11-21", 5, 15));
    let inv = inventory(vec![("local", snaps)]);
    let plan = run(&policy, &inv, "2026-11-25T16:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned_times(&plan, "local"),
        [
            "2026-11-21 03:00",
            "2026-11-21 15:00",
            "2026-11-22 03:00",
            "2026-11-22 15:00",
            "2026-11-23 03:00",
            "2026-11-24 03:00",
            "2026-11-25 03:00",
        ]
    );
    insta::assert_snapshot!("keep_daily_human", render::plan::human(&plan));
}

#[test]
fn keep_weekly_keeps_the_newest_of_each_iso_week() {
    let policy = db_policy("{ keep_weekly: 2, min_keep: 1 }");
    // Fri 13 Nov … Wed 25 Nov: ISO weeks 46 (13–15), 47 (16–22), 48 (23–25).
    let inv = inventory(vec![("local", daily("db", "2026-11-13", 13, 3))]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    let kept_would_be = ["2026-11-22 03:00", "2026-11-25 03:00"];
    let pruned = pruned_times(&plan, "local");
    assert_eq!(pruned.len(), 11);
    for day in 13..=24 {
        let time = format!("2026-11-{day} 03:00");
        assert_eq!(
            pruned.contains(&time),
            !kept_would_be.contains(&time.as_str()),
            "{time}"
        );
    }
    insta::assert_snapshot!("keep_weekly_human", render::plan::human(&plan));
}

#[test]
fn keep_monthly_keeps_the_newest_of_each_month() {
    let policy = db_policy("{ keep_monthly: 2, min_keep: 1 }");
    let snaps = [
        "2026-08-01T03:00:00Z",
        "2026-08-15T03:00:00Z",
        "2026-09-01T03:00:00Z",
        "2026-09-15T03:00:00Z",
        "2026-10-01T03:00:00Z",
        "2026-10-15T03:00:00Z",
        "2026-11-01T03:00:00Z",
        "2026-11-15T03:00:00Z",
    ]
    .into_iter()
    .map(|time| snap("db", time))
    .collect();
    let inv = inventory(vec![("local", snaps)]);
    let plan = run(&policy, &inv, "2026-11-15T12:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned_times(&plan, "local"),
        [
            "2026-08-01 03:00",
            "2026-08-15 03:00",
            "2026-09-01 03:00",
            "2026-09-15 03:00",
            "2026-10-01 03:00",
            "2026-11-01 03:00",
        ]
    );
    insta::assert_snapshot!("keep_monthly_human", render::plan::human(&plan));
}

#[test]
fn keep_yearly_keeps_the_newest_of_each_year() {
    let policy = db_policy("{ keep_yearly: 2, min_keep: 1 }");
    let snaps = [
        "2023-06-01T03:00:00Z",
        "2023-12-01T03:00:00Z",
        "2024-06-01T03:00:00Z",
        "2024-12-31T23:30:00Z",
        "2025-06-01T03:00:00Z",
        "2025-12-01T03:00:00Z",
    ]
    .into_iter()
    .map(|time| snap("db", time))
    .collect();
    let inv = inventory(vec![("local", snaps)]);
    let plan = run(&policy, &inv, "2025-12-01T12:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    assert_eq!(
        pruned_times(&plan, "local"),
        [
            "2023-06-01 03:00",
            "2023-12-01 03:00",
            "2024-06-01 03:00",
            "2025-06-01 03:00",
        ]
    );
    insta::assert_snapshot!("keep_yearly_human", render::plan::human(&plan));
}

#[test]
fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
    let policy = db_policy("{ keep_within: 10d, min_keep: 1 }");
    // 1 … 20 Nov, then nothing for 30 days: counted from now, every snapshot would be
    // older than 10 days; counted from the newest (20 Nov), 10 … 20 Nov are kept.
    let inv = inventory(vec![("local", daily("db", "2026-11-01", 20, 3))]);
    let plan = run(&policy, &inv, "2026-12-20T12:00:00Z", 100);

    let expected: Vec<String> = (1..=9)
        .map(|day| format!("2026-11-{day:02} 03:00"))
        .collect();
    assert_eq!(pruned_times(&plan, "local"), expected);
    assert_eq!(
        prunes(&plan)[0].reason,
        PruneReason::OutsideRetention {
            rules: "keep_within 10d".into()
        }
    );
    assert!(matches!(
        backup_of(&plan, "db").reason,
        BackupReason::Due { since, .. } if since == t("2026-11-21T03:00:00Z")
    ));
    insta::assert_snapshot!("keep_within_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 4. min_keep
// ---------------------------------------------------------------------------------

#[test]
fn min_keep_keeps_more_than_the_rules_would() {
    let policy = db_policy("{ keep_last: 2, min_keep: 5 }");
    let inv = inventory(vec![("local", daily("db", "2026-11-18", 8, 3))]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    // keep_last 2 alone would prune six; min_keep 5 keeps the five newest.
    assert_eq!(
        pruned_times(&plan, "local"),
        ["2026-11-18 03:00", "2026-11-19 03:00", "2026-11-20 03:00"]
    );
    insta::assert_snapshot!("min_keep_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 5. Failed snapshots
// ---------------------------------------------------------------------------------

fn failed_newest_case() -> (Policy, Inventory) {
    let policy = db_policy("{ keep_daily: 3, min_keep: 3 }");
    let mut snaps = daily("db", "2026-11-15", 10, 3);
    snaps[2] = failed(snaps[2].clone()); // 17 Nov: an old failure
    snaps.push(failed(snap("db", "2026-11-25T03:00:00Z")));
    (policy, inventory(vec![("local", snaps)]))
}

#[test]
fn prune_keeps_everything_when_the_newest_snapshot_failed() {
    let (policy, inv) = failed_newest_case();
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    // Without the guard, keep_daily 3 would prune six good and one failed snapshot.
    assert!(prunes(&plan).is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.summary.prunes + plan.summary.held_prunes, 0);
    assert_eq!(
        backup_of(&plan, "db").reason,
        BackupReason::LastFailed {
            failed_at: t("2026-11-25T03:00:00Z"),
            last_good: Some(t("2026-11-24T03:00:00Z")),
        }
    );
    assert_eq!(warning_codes(&plan), ["BP210"]);
    assert_eq!(plan.warnings[0].source.as_deref(), Some("db"));
    assert!(
        plan.warnings[0]
            .message
            .contains("nothing is pruned for db"),
        "{}",
        plan.warnings[0].message
    );

    insta::assert_snapshot!("failed_newest_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("failed_newest_json", plan);
}

#[test]
fn failed_snapshots_older_than_a_good_one_are_pruned_as_superseded() {
    let policy = db_policy("{ keep_daily: 7, min_keep: 3 }");
    let mut snaps = daily("db", "2026-11-20", 6, 3);
    snaps[2] = failed(snaps[2].clone()); // 22 Nov failed; 23–25 Nov are good
    let inv = inventory(vec![("local", snaps)]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    assert!(backups(&plan).is_empty());
    let prunes = prunes(&plan);
    assert_eq!(prunes.len(), 1, "{prunes:?}");
    assert_eq!(
        prunes[0].reason,
        PruneReason::FailedSuperseded {
            newest_good: t("2026-11-25T03:00:00Z")
        }
    );
    assert_eq!(pruned_times(&plan, "local"), ["2026-11-22 03:00"]);
    assert!(plan.warnings.is_empty());

    insta::assert_snapshot!("failed_superseded_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 6. --max-deletes
// ---------------------------------------------------------------------------------

fn many_prunes_case() -> (Policy, Inventory) {
    // 15 daily snapshots, keep_daily 3: twelve prunes.
    let policy = db_policy("{ keep_daily: 3, min_keep: 3 }");
    let inv = inventory(vec![("local", daily("db", "2026-11-11", 15, 3))]);
    (policy, inv)
}

#[test]
fn prunes_over_max_deletes_are_all_held() {
    let (policy, inv) = many_prunes_case();
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 10);

    let prunes = prunes(&plan);
    assert!(!prunes.is_empty());
    assert!(prunes.iter().all(|p| p.held), "{prunes:?}");
    assert_eq!(plan.summary.held_prunes, 12);
    assert_eq!(plan.summary.prunes, 0);
    assert!(plan.has_changes());
    assert_eq!(warning_codes(&plan), ["BP204"]);

    insta::assert_snapshot!("max_deletes_held_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("max_deletes_held_json", plan);
}

#[test]
fn prunes_within_max_deletes_are_not_held() {
    let (policy, inv) = many_prunes_case();
    let held = run(&policy, &inv, "2026-11-25T12:00:00Z", 10);
    // Exactly twelve deletions are allowed by --max-deletes 12.
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 12);

    assert!(prunes(&plan).iter().all(|p| !p.held));
    assert_eq!(plan.summary.prunes, 12);
    assert_eq!(plan.summary.held_prunes, 0);
    assert!(plan.warnings.is_empty());
    assert_eq!(pruned_set(&plan), pruned_set(&held));

    insta::assert_snapshot!("max_deletes_raised_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 6b. Append-only destinations and --role
// ---------------------------------------------------------------------------------

/// Source `db` (keep_daily 3) on `local` and on `vault`, which hosts write to with
/// credentials that cannot delete; six daily snapshots on each, the last two days ago:
/// a backup is due, and three snapshots are outside retention on each destination.
fn append_only_case() -> (Policy, Inventory) {
    let policy = policy(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
destinations:
  local:
    type: memory
  vault:
    type: memory
    append_only: true
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
    retention: { keep_daily: 3, min_keep: 3 }
"#,
    );
    let snaps = daily("db", "2026-11-18", 6, 3);
    let inv = inventory(vec![("local", snaps.clone()), ("vault", snaps)]);
    (policy, inv)
}

fn run_as(policy: &Policy, inventory: &Inventory, role: Role, max_deletes: usize) -> Plan {
    plan::plan(
        policy,
        &policy.graph,
        inventory,
        t("2026-11-25T12:00:00Z"),
        Settings { max_deletes, role },
    )
}

#[test]
fn a_backup_host_holds_prunes_of_an_append_only_destination_for_the_trusted_host() {
    let (policy, inv) = append_only_case();
    let plan = run_as(&policy, &inv, Role::Backup, 10);

    assert_eq!(backups(&plan).len(), 1, "the backup still runs");
    let prunes = prunes(&plan);
    let local: Vec<_> = prunes.iter().filter(|p| p.destination == "local").collect();
    let vault: Vec<_> = prunes.iter().filter(|p| p.destination == "vault").collect();
    assert!(!local.is_empty() && local.iter().all(|p| !p.held && !p.append_only));
    // Shown, with their reason, not dropped.
    assert!(!vault.is_empty() && vault.iter().all(|p| p.held && p.append_only));
    assert_eq!(pruned_times(&plan, "vault"), pruned_times(&plan, "local"));
    assert_eq!(plan.summary.prunes, 3);
    assert_eq!(plan.summary.held_prunes, 3);
    assert_eq!(warning_codes(&plan), ["BP216"]);

    insta::assert_snapshot!("append_only_backup_role_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("append_only_backup_role_json", plan);
}

#[test]
fn prunes_held_for_the_trusted_host_do_not_count_against_max_deletes() {
    let (policy, inv) = append_only_case();
    // Six deletions in all, three of them on the append-only destination.
    let plan = run_as(&policy, &inv, Role::Backup, 3);
    assert!(
        prunes(&plan)
            .iter()
            .all(|p| p.held == (p.destination == "vault")),
        "{:?}",
        prunes(&plan)
    );
    assert_eq!(warning_codes(&plan), ["BP216"]);
}

#[test]
fn the_prune_role_prunes_every_destination_and_backs_nothing_up() {
    let (policy, inv) = append_only_case();
    let plan = run_as(&policy, &inv, Role::Prune, 10);

    assert!(backups(&plan).is_empty(), "{:?}", plan.actions);
    assert!(prunes(&plan).iter().all(|p| !p.held && !p.append_only));
    assert_eq!(pruned_set(&plan).len(), 6);
    assert_eq!(plan.summary.prunes, 6);
    assert_eq!(plan.summary.held_prunes, 0);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    // The same snapshots the backup host held back.
    let backup_host = run_as(&policy, &inv, Role::Backup, 10);
    assert_eq!(pruned_set(&plan), pruned_set(&backup_host));

    insta::assert_snapshot!("append_only_prune_role_human", render::plan::human(&plan));
    assert!(
        render::plan::markdown(&plan).contains("Role: prune"),
        "{}",
        render::plan::markdown(&plan)
    );
    insta::assert_json_snapshot!("append_only_prune_role_json", plan);
}

// ---------------------------------------------------------------------------------
// 7. A host that was off for three weeks
// ---------------------------------------------------------------------------------

#[test]
fn three_weeks_off_prunes_the_same_snapshots_as_on_the_day_it_went_off() {
    let policy = db_policy("{ keep_daily: 30 }");
    // 60 daily snapshots, 1 Sep … 30 Oct; then the host is off for 21 days.
    let inv = inventory(vec![("local", daily("db", "2026-09-01", 60, 3))]);
    let went_off = run(&policy, &inv, "2026-10-30T12:00:00Z", 100);
    let back = run(&policy, &inv, "2026-11-20T12:00:00Z", 100);

    assert_eq!(pruned_set(&back), pruned_set(&went_off));
    assert_eq!(pruned_set(&back).len(), 30);
    let pruned = pruned_times(&back, "local");
    assert_eq!(pruned.first().map(String::as_str), Some("2026-09-01 03:00"));
    assert_eq!(pruned.last().map(String::as_str), Some("2026-09-30 03:00"));

    assert!(backups(&went_off).is_empty());
    assert_eq!(
        backup_of(&back, "db").reason,
        BackupReason::Due {
            since: t("2026-10-31T03:00:00Z"),
            schedule: "0 3 * * * UTC".into(),
            last: t("2026-10-30T03:00:00Z"),
        }
    );

    insta::assert_snapshot!("three_weeks_off_human", render::plan::human(&back));
}

// ---------------------------------------------------------------------------------
// 8. Daylight saving time (Europe/Berlin)
// ---------------------------------------------------------------------------------

fn berlin_policy(retention: &str) -> Policy {
    policy(&format!(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: Europe/Berlin
destinations:
  local:
    type: memory
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
    retention: {retention}
"#
    ))
}

#[test]
fn due_since_is_03_00_berlin_in_utc_across_spring_forward() {
    let policy = berlin_policy("{ keep_daily: 30 }");
    // 28 Mar 03:00 CET = 02:00 UTC. Clocks go forward on 29 Mar: 03:00 CEST = 01:00 UTC.
    let inv = inventory(vec![("local", daily("db", "2026-03-25", 4, 2))]);
    let plan = run(&policy, &inv, "2026-03-29T12:00:00Z", 10);

    assert_eq!(
        backup_of(&plan, "db").reason,
        BackupReason::Due {
            since: t("2026-03-29T01:00:00Z"),
            schedule: "0 3 * * * Europe/Berlin".into(),
            last: t("2026-03-28T02:00:00Z"),
        }
    );
    // At 00:59 UTC on 29 Mar the 03:00 CEST tick has not come yet.
    let before = run(&policy, &inv, "2026-03-29T00:59:00Z", 10);
    assert!(backups(&before).is_empty());

    insta::assert_snapshot!("dst_spring_due_human", render::plan::human(&plan));
}

#[test]
fn due_since_is_03_00_berlin_in_utc_across_fall_back() {
    let policy = berlin_policy("{ keep_daily: 30 }");
    // 24 Oct 03:00 CEST = 01:00 UTC. Clocks go back on 25 Oct: 03:00 CET = 02:00 UTC.
    let inv = inventory(vec![("local", daily("db", "2026-10-21", 4, 1))]);
    let plan = run(&policy, &inv, "2026-10-25T12:00:00Z", 10);

    assert_eq!(
        backup_of(&plan, "db").reason,
        BackupReason::Due {
            since: t("2026-10-25T02:00:00Z"),
            schedule: "0 3 * * * Europe/Berlin".into(),
            last: t("2026-10-24T01:00:00Z"),
        }
    );
    // At 01:30 UTC on 25 Oct it is 02:30 CET: the tick has not come yet.
    let before = run(&policy, &inv, "2026-10-25T01:30:00Z", 10);
    assert!(backups(&before).is_empty());

    insta::assert_snapshot!("dst_fall_due_human", render::plan::human(&plan));
}

#[test]
fn keep_daily_buckets_by_local_day_around_spring_forward_midnight() {
    let policy = berlin_policy("{ keep_daily: 2, min_keep: 1 }");
    // Local midnight 28→29 Mar is 23:00 UTC (CET). 22:45 UTC is 23:45 on 28 Mar,
    // 23:15 UTC is 00:15 on 29 Mar: two local days, though one UTC day.
    let inv = inventory(vec![(
        "local",
        vec![
            snap("db", "2026-03-27T02:00:00Z"),
            snap("db", "2026-03-28T22:45:00Z"),
            snap("db", "2026-03-28T23:15:00Z"),
        ],
    )]);
    let plan = run(&policy, &inv, "2026-03-29T00:30:00Z", 10);

    // Bucketed in UTC, 28 Mar 22:45 would be pruned and 27 Mar kept.
    assert_eq!(pruned_times(&plan, "local"), ["2026-03-27 02:00"]);
    insta::assert_snapshot!("dst_spring_keep_daily_human", render::plan::human(&plan));
}

#[test]
fn keep_daily_buckets_by_local_day_around_fall_back_midnight() {
    let policy = berlin_policy("{ keep_daily: 2, min_keep: 1 }");
    // Local midnight 24→25 Oct is 22:00 UTC (CEST). 21:45 UTC is 23:45 on 24 Oct,
    // 22:15 UTC is 00:15 on 25 Oct: two local days, though one UTC day.
    let inv = inventory(vec![(
        "local",
        vec![
            snap("db", "2026-10-23T01:00:00Z"),
            snap("db", "2026-10-24T21:45:00Z"),
            snap("db", "2026-10-24T22:15:00Z"),
        ],
    )]);
    let plan = run(&policy, &inv, "2026-10-24T23:00:00Z", 10);

    // Bucketed in UTC, 24 Oct 21:45 would be pruned and 23 Oct kept.
    assert_eq!(pruned_times(&plan, "local"), ["2026-10-23 01:00"]);

    // The 25-hour day: 00:15 CEST and 23:45 CET (22:45 UTC) are the same local day.
    let inv = inventory(vec![(
        "local",
        vec![
            snap("db", "2026-10-24T21:45:00Z"),
            snap("db", "2026-10-24T22:15:00Z"),
            snap("db", "2026-10-25T22:45:00Z"),
        ],
    )]);
    let long_day = run(&policy, &inv, "2026-10-25T23:00:00Z", 10);
    assert_eq!(pruned_times(&long_day, "local"), ["2026-10-24 22:15"]);

    insta::assert_snapshot!("dst_fall_keep_daily_human", render::plan::human(&plan));
    insta::assert_snapshot!(
        "dst_fall_keep_daily_long_day_human",
        render::plan::human(&long_day)
    );
}

// ---------------------------------------------------------------------------------
// 9. Repair, and an unreadable destination
// ---------------------------------------------------------------------------------

/// The policy of [`repair_case`].
const REPAIR_POLICY: &str = r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
  retention: { keep_daily: 5, min_keep: 3 }
destinations:
  local:
    type: memory
    root: local
  offsite:
    type: memory
    root: offsite
  archive:
    type: memory
    root: archive
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
"#;

fn repair_case() -> (Policy, Inventory) {
    let policy = policy(REPAIR_POLICY);
    // local lacks 22 Nov; offsite lacks 25 Nov; archive cannot be read.
    let all = daily("db", "2026-11-18", 8, 3);
    let local: Vec<SnapshotInfo> = all
        .iter()
        .filter(|s| s.time != t("2026-11-22T03:00:00Z"))
        .cloned()
        .collect();
    let offsite: Vec<SnapshotInfo> = all
        .iter()
        .filter(|s| s.time != t("2026-11-25T03:00:00Z"))
        .cloned()
        .collect();
    let mut inv = inventory(vec![("local", local), ("offsite", offsite)]);
    inv.destinations.insert(
        "archive".into(),
        DestinationState {
            error: Some("403 Forbidden: access denied".into()),
            ..DestinationState::default()
        },
    );
    (policy, inv)
}

#[test]
fn repair_copies_missing_snapshots_and_leaves_an_unreadable_destination_alone() {
    let (policy, inv) = repair_case();
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    let copies: Vec<(&str, &str, String)> = copies(&plan)
        .iter()
        .map(|c| {
            (
                c.from.as_str(),
                c.to.as_str(),
                c.snapshot.time.format("%Y-%m-%d").to_string(),
            )
        })
        .collect();
    assert_eq!(
        copies,
        [
            ("offsite", "local", "2026-11-22".to_string()),
            ("local", "offsite", "2026-11-25".to_string()),
        ]
    );
    let expected = ["2026-11-18 03:00", "2026-11-19 03:00", "2026-11-20 03:00"];
    assert_eq!(pruned_times(&plan, "local"), expected);
    assert_eq!(pruned_times(&plan, "offsite"), expected);
    assert!(pruned_times(&plan, "archive").is_empty());
    assert!(
        copies_touching(&plan, "archive") == 0,
        "nothing is copied from or to an unreadable destination"
    );
    assert_eq!(warning_codes(&plan), ["BP209"]);
    assert!(backups(&plan).is_empty());

    insta::assert_snapshot!("repair_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("repair_json", plan);
}

fn copies_touching(plan: &Plan, destination: &str) -> usize {
    copies(plan)
        .iter()
        .filter(|c| c.from == destination || c.to == destination)
        .count()
}

// ---------------------------------------------------------------------------------
// 9b. Repair of lost packs
// ---------------------------------------------------------------------------------

/// `repair_case`'s destinations with every snapshot on both readable ones, and what
/// verify recorded lost on local: one pack, needed by the 24 Nov snapshot.
fn lost_case() -> (Policy, Inventory) {
    let (policy, _) = repair_case();
    let all = daily("db", "2026-11-18", 8, 3);
    let mut inv = inventory(vec![("local", all.clone()), ("offsite", all)]);
    inv.destinations.insert(
        "archive".into(),
        DestinationState {
            error: Some("403 Forbidden: access denied".into()),
            ..DestinationState::default()
        },
    );
    let local = inv.destinations.get_mut("local").expect("local");
    local.lost = Lost {
        found: Some(t("2026-11-25T04:10:00Z")),
        packs: vec![LostPack {
            id: "3f9c".repeat(16),
            state: PackState::Missing,
            why: "it is missing".into(),
        }],
        snapshots: vec!["db-20261124T0300Z".into()],
    };
    (policy, inv)
}

fn repairs(plan: &Plan) -> Vec<&Repair> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Repair(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn packs_lost_on_one_destination_are_repaired_from_another_that_holds_their_snapshots() {
    let (policy, inv) = lost_case();
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    let repairs = repairs(&plan);
    assert_eq!(repairs.len(), 1, "{plan:?}");
    let r = repairs[0];
    assert_eq!(r.destination, "local");
    assert_eq!(r.from, ["offsite"], "never the unreadable archive");
    assert_eq!(r.found, t("2026-11-25T04:10:00Z"));
    assert_eq!(r.sources, ["db"]);
    let ids: Vec<&str> = r.snapshots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["db-20261124T0300Z"]);
    assert_eq!(plan.summary.repairs, 1);
    assert!(plan.has_changes());
    assert_eq!(warning_codes(&plan), ["BP209"]);

    insta::assert_snapshot!("lost_packs_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("lost_packs_json", plan);
}

#[test]
fn a_repair_of_an_append_only_destination_is_left_to_the_trusted_host() {
    let (_, inv) = lost_case();
    let policy = policy(&REPAIR_POLICY.replace(
        "    root: local\n",
        "    root: local\n    append_only: true\n",
    ));
    let backup_host = run_as(&policy, &inv, Role::Backup, 100);
    assert!(repairs(&backup_host).is_empty(), "{backup_host:?}");
    assert_eq!(warning_codes(&backup_host), ["BP209", "BP216"]);
    let text = render::plan::human(&backup_host);
    assert!(
        text.contains("local is append-only: 3 snapshot deletions held back, its repair left out"),
        "{text}"
    );
    let trusted = run_as(&policy, &inv, Role::Prune, 100);
    let repaired: Vec<&str> = repairs(&trusted)
        .iter()
        .map(|r| r.destination.as_str())
        .collect();
    assert_eq!(repaired, ["local"], "{trusted:?}");
    assert_eq!(warning_codes(&trusted), ["BP209"]);
}

#[test]
fn lost_chunks_no_other_destination_holds_are_a_warning_and_no_action() {
    let (policy, mut inv) = lost_case();
    // offsite lost the same snapshot: no destination holds it whole.
    let offsite = inv.destinations.get_mut("offsite").expect("offsite");
    offsite.lost = Lost {
        found: Some(t("2026-11-25T04:12:00Z")),
        packs: Vec::new(),
        snapshots: vec!["db-20261124T0300Z".into()],
    };
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    assert!(repairs(&plan).is_empty(), "{plan:?}");
    assert_eq!(warning_codes(&plan), ["BP209", "BP235", "BP235"]);
    let text = render::plan::human(&plan);
    assert!(
        text.contains(
            "local: snapshot db-20261124T0300Z needs lost chunks that no other destination holds; it is kept as it is, and nothing is deleted"
        ),
        "{text}"
    );
    assert!(
        prunes(&plan)
            .iter()
            .all(|p| p.snapshots.iter().all(|s| s.id != "db-20261124T0300Z"))
    );
}

#[test]
fn lost_packs_no_snapshot_needs_are_retired_with_nothing_copied() {
    let (policy, mut inv) = lost_case();
    let local = inv.destinations.get_mut("local").expect("local");
    // The snapshot that needed them was pruned since.
    local.snapshots.retain(|s| s.id != "db-20261124T0300Z");
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    let repairs = repairs(&plan);
    assert_eq!(repairs.len(), 1, "{plan:?}");
    assert!(repairs[0].from.is_empty() && repairs[0].snapshots.is_empty());
    let text = render::plan::human(&plan);
    assert!(
        text.contains("~ repair  -  1 pack lost on local (found by verify at 2026-11-25 04:10 UTC), retired   no snapshot needs them"),
        "{text}"
    );
}

#[test]
fn a_copy_is_never_made_from_a_destination_that_lost_chunks_of_the_snapshot() {
    let (policy, mut inv) = lost_case();
    // offsite lacks the snapshot local lost chunks of: nothing whole to copy from.
    let offsite = inv.destinations.get_mut("offsite").expect("offsite");
    offsite.snapshots.retain(|s| s.id != "db-20261124T0300Z");
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    assert!(
        copies(&plan)
            .iter()
            .all(|c| c.snapshot.id != "db-20261124T0300Z"),
        "{plan:?}"
    );
    assert!(repairs(&plan).is_empty());
    assert!(warning_codes(&plan).contains(&"BP235"));
}

// ---------------------------------------------------------------------------------
// 10. The policy changed since the last apply
// ---------------------------------------------------------------------------------

fn policy_change_case() -> (Policy, Inventory) {
    let applied = std::fs::read_to_string(policies_dir().join("medianest.yaml"))
        .expect("policies/medianest.yaml");
    assert_eq!(applied.matches("keep_daily: 30").count(), 1);
    let current = applied.replace("keep_daily: 30", "keep_daily: 7");
    let policy = policy(&current);

    // 30 daily snapshots of db at 03:00 Berlin (02:00 UTC in winter), on both
    // destinations; the last apply was the 25 Nov run.
    let snaps = daily("db", "2026-10-27", 30, 2);
    let applied_policy = AppliedPolicy {
        digest: backplan::policy::digest(applied.as_bytes()),
        applied_at: t("2026-11-25T02:00:00Z"),
        text: Some(applied),
    };
    let mut inv = inventory(vec![("local", snaps.clone()), ("offsite", snaps)]);
    for state in inv.destinations.values_mut() {
        state.applied_policy = Some(applied_policy.clone());
    }
    (policy, inv)
}

#[test]
fn policy_change_shows_the_diff_and_how_many_snapshots_it_prunes() {
    let (policy, inv) = policy_change_case();
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 1000);

    let change = plan.policy_change.as_ref().expect("a policy change");
    let diff = change.diff.as_deref().expect("the applied text is at hand");
    assert!(diff.contains("-    keep_daily: 30\n"), "{diff}");
    assert!(diff.contains("+    keep_daily: 7\n"), "{diff}");
    assert_eq!(change.applied_at, t("2026-11-25T02:00:00Z"));

    // keep_daily 7 with min_keep 7 keeps 19–25 Nov; the 23 before go, on both
    // destinations.
    let pruned_ids: BTreeSet<&str> = prunes(&plan)
        .iter()
        .filter(|p| p.source == "db")
        .flat_map(|p| p.snapshots.iter().map(|s| s.id.as_str()))
        .collect();
    assert_eq!(pruned_ids.len(), 23);
    assert!(prunes(&plan).iter().all(|p| !p.held));
    assert_eq!(plan.summary.prunes, 46);
    let pruned = pruned_times(&plan, "local");
    assert_eq!(pruned.first().map(String::as_str), Some("2026-10-27 02:00"));
    assert_eq!(pruned.last().map(String::as_str), Some("2026-11-18 02:00"));
    assert_eq!(pruned_times(&plan, "offsite"), pruned);
    // The change is in `defaults`: every source that inherits it says what it does.
    assert_eq!(
        change.consequences,
        [
            "keep_daily 30 → 7: no snapshot of config is pruned now",
            "keep_daily 30 → 7: 23 snapshots of db will be pruned",
            "keep_daily 30 → 7: no snapshot of media is pruned now",
        ]
    );

    // db is up to date; the other sources have never been backed up.
    let reasons: Vec<(&str, &BackupReason)> = backups(&plan)
        .iter()
        .map(|b| (b.source.as_str(), &b.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("config", &BackupReason::NeverBackedUp),
            ("cache", &BackupReason::NeverBackedUp),
            ("media", &BackupReason::NeverBackedUp),
        ]
    );

    insta::assert_snapshot!("policy_change_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 11. What a source backs up changed
// ---------------------------------------------------------------------------------

fn media_policy(path: &str) -> Policy {
    policy(&format!(
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
  media:
    type: files
    path: {path}
    exclude: ["*.part"]
"#
    ))
}

#[test]
fn source_whose_settings_changed_is_backed_up_again_with_reason_policy_changed() {
    let before = media_policy("/srv/app/uploads");
    let policy = media_policy("/srv/app/media");
    let old_media = before.sources["media"].digest.clone();
    assert_ne!(old_media, policy.sources["media"].digest);
    assert_eq!(before.sources["db"].digest, policy.sources["db"].digest);

    let mut snaps = Vec::new();
    for mut s in daily("db", "2026-11-21", 5, 3) {
        s.source_digest = Some(policy.sources["db"].digest.clone());
        snaps.push(s);
    }
    for mut s in daily("media", "2026-11-21", 5, 3) {
        s.source_digest = Some(old_media.clone());
        snaps.push(s);
    }
    let mut inv = inventory(vec![("local", snaps)]);
    if let Some(local) = inv.destinations.get_mut("local") {
        local.applied_policy = Some(AppliedPolicy {
            digest: before.digest.clone(),
            applied_at: t("2026-11-25T03:00:00Z"),
            text: Some(before.text.clone()),
        });
    }
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 10);

    assert_eq!(backups(&plan).len(), 1, "db is up to date");
    assert_eq!(
        backup_of(&plan, "media").reason,
        BackupReason::PolicyChanged {
            last: t("2026-11-25T03:00:00Z")
        }
    );
    let change = plan.policy_change.as_ref().expect("a policy change");
    assert_eq!(
        change.consequences,
        ["what media backs up changed: it will be backed up again"]
    );

    insta::assert_snapshot!("source_changed_human", render::plan::human(&plan));
    insta::assert_json_snapshot!("source_changed_json", plan);
}

// ---------------------------------------------------------------------------------
// 12. Snapshots the policy no longer covers
// ---------------------------------------------------------------------------------

#[test]
fn snapshots_of_a_source_no_longer_in_the_policy_are_kept_with_a_warning() {
    let policy = policy(
        r#"version: 1
encryption:
  recipients: [keys/demo-recipient.asc]
defaults:
  schedule: "0 3 * * *"
  timezone: UTC
  retention: { keep_daily: 3, min_keep: 3 }
destinations:
  local:
    type: memory
  offsite:
    type: memory
    root: offsite
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
    destinations: [local]
"#,
    );
    // oldcache is gone from the policy; db no longer writes to offsite.
    let mut local = daily("db", "2026-11-21", 5, 3);
    local.extend(daily("oldcache", "2026-10-01", 6, 4));
    let inv = inventory(vec![
        ("local", local),
        ("offsite", daily("db", "2026-10-01", 4, 3)),
    ]);
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);

    // db's own retention still runs on local, and only there.
    assert_eq!(
        pruned_times(&plan, "local"),
        ["2026-11-21 03:00", "2026-11-22 03:00"]
    );
    assert!(prunes(&plan).iter().all(|p| p.source == "db"));
    assert!(pruned_times(&plan, "offsite").is_empty());
    assert_eq!(warning_codes(&plan), ["BP208", "BP208"]);
    let messages: Vec<&str> = plan.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "offsite holds 4 snapshots of db but db no longer writes to offsite; they are kept",
            "local holds 6 snapshots of oldcache but the policy has no source oldcache; they are kept",
        ]
    );

    insta::assert_snapshot!("uncovered_human", render::plan::human(&plan));
}

// ---------------------------------------------------------------------------------
// 13. JSON and human views render the same value
// ---------------------------------------------------------------------------------

#[test]
fn json_round_trips_to_the_same_plan_and_the_same_human_view() {
    let mut plans = Vec::new();
    let (p, i) = policy_change_case();
    plans.push(run(&p, &i, "2026-11-25T12:00:00Z", 10)); // held prunes, diff
    let (p, i) = repair_case();
    plans.push(run(&p, &i, "2026-11-25T12:00:00Z", 100)); // copies, unreadable
    let (p, i) = lost_case();
    plans.push(run(&p, &i, "2026-11-25T12:00:00Z", 100)); // a repair of lost packs
    let (p, i) = failed_newest_case();
    plans.push(run(&p, &i, "2026-11-25T12:00:00Z", 100)); // last_failed
    let p = db_policy("{ keep_daily: 7, min_keep: 3 }");
    let mut snaps = daily("db", "2026-11-10", 12, 3);
    snaps[5] = failed(snaps[5].clone());
    let i = inventory(vec![("local", snaps)]);
    plans.push(run(&p, &i, "2026-11-25T12:00:00Z", 100)); // due, failed_superseded

    for plan in plans {
        let json = render::json(&plan);
        let back: Plan = serde_json::from_str(&json).expect("the plan's JSON reads back");
        assert_eq!(back, plan);
        assert_eq!(render::plan::human(&back), render::plan::human(&plan));
        assert_eq!(render::json(&back), json);
    }
}

// ---------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------

#[test]
fn plan_is_deterministic_and_inventory_order_does_not_matter() {
    let (policy, inv) = repair_case();
    let a = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    let b = run(&policy, &inv, "2026-11-25T12:00:00Z", 100);
    assert_eq!(a, b);

    let mut shuffled = inv.clone();
    for state in shuffled.destinations.values_mut() {
        state.snapshots.reverse();
        let n = state.snapshots.len();
        if n > 2 {
            state.snapshots.swap(0, n / 2);
        }
    }
    assert_ne!(shuffled, inv);
    let digest = |i: &Inventory| i.digest_for(policy.file.sources.keys());
    assert_eq!(digest(&shuffled), digest(&inv));
    let c = run(&policy, &shuffled, "2026-11-25T12:00:00Z", 100);
    assert_eq!(c, a);

    // A different inventory has a different digest.
    let mut fewer = inv.clone();
    if let Some(local) = fewer.destinations.get_mut("local") {
        local.snapshots.pop();
    }
    assert_ne!(digest(&fewer), digest(&inv));

    // Another host sharing the repository backs up a source this policy does not
    // name and records its own policy: nothing this plan reads changed.
    let mut shared = inv.clone();
    if let Some(local) = shared.destinations.get_mut("local") {
        local
            .snapshots
            .push(snap("another-hosts-source", "2026-11-25T11:00:00Z"));
        local.applied_policy = Some(AppliedPolicy {
            digest: "another-hosts-policy".into(),
            applied_at: t("2026-11-25T11:05:00Z"),
            text: None,
        });
    }
    assert_eq!(digest(&shared), digest(&inv));
}

// ---------------------------------------------------------------------------------
// Server settings
// ---------------------------------------------------------------------------------

/// One redis source `cache` declaring persistence, and what its probe found.
fn redis_case(current_save: &str, current_aof: &str) -> (Policy, plan::Probes) {
    let policy = daily_policy(
        r#"  cache:
    type: redis
    url: redis://cache:6379
    persistence:
      save: "3600 1  300 100"
      appendonly: true
"#,
    );
    let mut probes = plan::Probes::default();
    probes.sources.insert(
        "cache".into(),
        plan::SourceProbe {
            mode: Some(plan::BackupMode {
                method: plan::BackupMethod::Sync,
                refused: false,
                keys: 1200,
                databases: 2,
            }),
            settings: [
                ("save".to_string(), current_save.to_string()),
                ("appendonly".to_string(), current_aof.to_string()),
            ]
            .into(),
            ..plan::SourceProbe::default()
        },
    );
    (policy, probes)
}

fn run_probed(policy: &Policy, probes: &plan::Probes, inventory: &Inventory) -> Plan {
    plan::plan_with(
        policy,
        &policy.graph,
        inventory,
        probes,
        t("2026-11-25T12:00:00Z"),
        Settings::default(),
    )
}

#[test]
fn persistence_that_differs_from_the_policy_is_a_change_before_the_backups() {
    let (policy, probes) = redis_case("", "no");
    let plan = run_probed(&policy, &probes, &Inventory::default());
    let Some(Action::Configure(change)) = plan.actions.first() else {
        panic!("the first action is the change: {:?}", plan.actions);
    };
    assert_eq!(change.source, "cache");
    let changes: Vec<(&str, &str, &str)> = change
        .changes
        .iter()
        .map(|c| (c.name.as_str(), c.from.as_str(), c.to.as_str()))
        .collect();
    // Save points as the server writes them: single spaces.
    assert_eq!(
        changes,
        [("appendonly", "no", "yes"), ("save", "", "3600 1 300 100")]
    );
    assert_eq!(plan.summary.changes, 1);
    let mode = backup_of(&plan, "cache").mode.as_ref().expect("a mode");
    assert_eq!((mode.method, mode.keys), (plan::BackupMethod::Sync, 1200));
    insta::assert_snapshot!("redis_drift_human", render::plan::human(&plan));
    let json: serde_json::Value =
        serde_json::from_str(&render::json(&plan)).expect("the plan's JSON");
    assert_eq!(json["format_version"], 2);
    let backup = json["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["source"] == "cache" && a["action"] == "backup")
        .expect("the backup in the JSON");
    assert_eq!(
        backup["mode"],
        serde_json::json!({"method": "sync", "keys": 1200, "databases": 2})
    );
}

#[test]
fn persistence_that_matches_the_policy_is_no_change() {
    let (policy, probes) = redis_case("3600 1 300 100", "yes");
    let inv = inventory(vec![("local", daily("cache", "2026-11-16", 10, 3))]);
    let plan = run_probed(&policy, &probes, &inv);
    assert!(!plan.has_changes(), "{:?}", plan.actions);
    assert_eq!(plan.summary.changes, 0);
    // A plan without changes says nothing about them in JSON either.
    assert!(!render::json(&plan).contains("\"changes\""));
}

#[test]
fn persistence_the_server_did_not_report_is_not_guessed() {
    let (policy, mut probes) = redis_case("", "no");
    if let Some(p) = probes.sources.get_mut("cache") {
        p.settings.clear();
    }
    let plan = run_probed(&policy, &probes, &Inventory::default());
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Configure(_))),
        "{:?}",
        plan.actions
    );
}

// ---------------------------------------------------------------------------------
// S3 Object Lock
// ---------------------------------------------------------------------------------

#[test]
fn prunes_of_snapshots_still_under_object_lock_are_held_until_the_recorded_date() {
    let policy = db_policy("{ keep_daily: 3, min_keep: 3 }");
    // Six daily snapshots, each recording a lock of 6 days from its time.
    let snaps: Vec<SnapshotInfo> = daily("db", "2026-11-18", 6, 3)
        .into_iter()
        .map(|mut s| {
            s.retain_until = Some(s.time + Duration::days(6));
            s
        })
        .collect();
    let inv = inventory(vec![("local", snaps)]);
    // 11-18 and 11-19 are unlocked by now (11-24 and 11-25 03:00); 11-20 is locked
    // until 11-26 03:00.
    let plan = run(&policy, &inv, "2026-11-25T12:00:00Z", 2);
    let prunes = prunes(&plan);
    let free: Vec<_> = prunes.iter().filter(|p| !p.held).collect();
    let held: Vec<_> = prunes.iter().filter(|p| p.held).collect();
    assert_eq!(free.len(), 1, "{prunes:?}");
    assert_eq!(free[0].snapshots.len(), 2);
    assert_eq!(free[0].locked_until, None);
    assert_eq!(held.len(), 1, "{prunes:?}");
    assert_eq!(held[0].snapshots.len(), 1);
    assert_eq!(held[0].snapshots[0].time, t("2026-11-20T03:00:00Z"));
    assert_eq!(held[0].locked_until, Some(t("2026-11-26T03:00:00Z")));
    // The held one does not count against --max-deletes 2.
    assert_eq!(plan.summary.prunes, 2);
    assert_eq!(plan.summary.held_prunes, 1);
    assert_eq!(warning_codes(&plan), ["BP255"]);
    let human = render::plan::human(&plan);
    assert!(
        human.contains("[held: object lock until 2026-11-26 03:00 UTC]"),
        "{human}"
    );

    // After the date, the same inventory prunes all three.
    let later = run(&policy, &inv, "2026-11-26T03:01:00Z", 10);
    assert!(prunes_all_free(&later, 3), "{:?}", later.actions);
    assert!(!warning_codes(&later).contains(&"BP255"));
}

fn prunes_all_free(plan: &Plan, n: usize) -> bool {
    let prunes = prunes(plan);
    prunes.iter().all(|p| !p.held && p.locked_until.is_none())
        && prunes.iter().map(|p| p.snapshots.len()).sum::<usize>() == n
}

// ---------------------------------------------------------------------------------
// Restore drills
// ---------------------------------------------------------------------------------

/// A passed drill record of `source`, finished at `finished`.
fn drill_record(source: &str, finished: &str) -> backplan::inventory::DrillRecord {
    backplan::inventory::DrillRecord {
        source: source.into(),
        snapshot: format!("{source}-x"),
        started: t(finished) - Duration::minutes(5),
        finished: t(finished),
        result: backplan::inventory::CheckResult::Passed,
        code: None,
        steps: Vec::new(),
        restored_bytes: MIB,
        checked: 3,
        differences: 0,
        checksums: None,
        rto_seconds: None,
        rpo_seconds: None,
        snapshot_age_seconds: None,
        estimated_full_seconds: None,
    }
}

fn drills(plan: &Plan) -> Vec<&plan::Drill> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Drill(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn a_drill_is_due_at_the_first_tick_of_its_schedule_after_the_last_drill() {
    // Sundays at 05:00; the sources were backed up today (Tuesday) at 03:00.
    let policy = daily_policy(
        "  db:\n    type: postgres\n    url: postgres://backup@db:5432/app\n  media:\n    type: files\n    path: /srv/media\n  cache:\n    type: files\n    path: /srv/cache\ndrill:\n  schedule: \"0 5 * * 0\"\n  secret_key_file: /secure/drill.asc\n",
    );
    let mut inv = inventory(vec![(
        "local",
        vec![
            snap("db", "2026-11-24T03:00:00Z"),
            snap("media", "2026-11-24T03:00:00Z"),
        ],
    )]);
    let local = inv.destinations.get_mut("local").expect("local");
    // db: drilled last Sunday after 05:00, so the next tick (next Sunday) is ahead.
    local
        .drills
        .push(drill_record("db", "2026-11-22T05:10:00Z"));
    // media: drilled the Sunday before; last Sunday's tick has passed.
    local
        .drills
        .push(drill_record("media", "2026-11-15T05:10:00Z"));
    // cache has no snapshot: nothing to drill.
    let plan = run(&policy, &inv, "2026-11-24T12:00:00Z", 10);
    let due = drills(&plan);
    assert_eq!(due.len(), 1, "{:#?}", plan.actions);
    assert_eq!(due[0].source, "media");
    assert_eq!(
        due[0].reason,
        plan::DrillReason::Due {
            since: t("2026-11-22T05:00:00Z"),
            last: t("2026-11-15T05:10:00Z"),
        }
    );
    assert!(!due[0].needs_secret_key);
    assert_eq!(plan.summary.drills, 1);
    let human = render::plan::human(&plan);
    assert!(
        human.contains(
            "? drill   media newest snapshot into a scratch target   due since 2026-11-22 05:00 UTC"
        ),
        "{human}"
    );

    // Without a drill schedule nothing is proposed.
    let plain = daily_policy("  media:\n    type: files\n    path: /srv/media\n");
    assert!(drills(&run(&plain, &inv, "2026-11-24T12:00:00Z", 10)).is_empty());
}
