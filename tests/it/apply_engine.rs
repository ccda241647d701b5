//! The apply engine against a recording executor: order, bounded parallelism, and what
//! a failure skips. The executor sleeps a little in every action so that overlapping
//! actions are observable.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backplan::apply::{Done, Event, Executor, Report, Status, apply};
use backplan::error::{Code, Failure};
use backplan::inventory::Inventory;
use backplan::plan::{
    Action, Backup, BackupReason, Configure, Copy, Drill, DrillReason, FORMAT_VERSION, Plan,
    PolicyRef, Prune, PruneReason, Repair, SettingChange, Settings, SnapshotRef, Summary,
};
use chrono::{DateTime, TimeZone, Utc};

/// How long every action takes.
const WORK: Duration = Duration::from_millis(40);

/// One executor call: what it was for, and the ticks at which it started and finished
/// (ticks come from one counter, so they order every start and finish of the apply).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    kind: &'static str,
    source: String,
    started: usize,
    finished: usize,
}

/// An executor that records its calls, fails the backups of chosen sources and tracks
/// how many actions overlap.
#[derive(Debug, Default)]
struct Recorder {
    fail: BTreeSet<String>,
    tick: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn failing(sources: &[&str]) -> Recorder {
        Recorder {
            fail: sources.iter().map(|s| s.to_string()).collect(),
            ..Recorder::default()
        }
    }

    async fn work(&self, kind: &'static str, source: &str) -> Result<Done, Failure> {
        let started = self.tick.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(WORK).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let finished = self.tick.fetch_add(1, Ordering::SeqCst);
        self.calls.lock().expect("calls lock").push(Call {
            kind,
            source: source.to_string(),
            started,
            finished,
        });
        if matches!(kind, "backup" | "configure") && self.fail.contains(source) {
            Err(Failure::new(
                Code::SourceFailed,
                format!("{source} exploded"),
            ))
        } else {
            Ok(Done::default())
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn call(&self, kind: &str, source: &str) -> Call {
        self.calls()
            .into_iter()
            .find(|c| c.kind == kind && c.source == source)
            .unwrap_or_else(|| panic!("no {kind} of {source} in {:?}", self.calls()))
    }

    fn called(&self, kind: &str, source: &str) -> bool {
        self.calls()
            .iter()
            .any(|c| c.kind == kind && c.source == source)
    }

    fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }
}

impl Executor for Recorder {
    async fn backup(&self, action: &Backup) -> Result<Done, Failure> {
        self.work("backup", &action.source).await
    }

    async fn configure(&self, action: &Configure) -> Result<Done, Failure> {
        self.work("configure", &action.source).await
    }

    async fn copy(&self, action: &Copy) -> Result<Done, Failure> {
        self.work("copy", &action.source).await
    }

    async fn repair(&self, action: &Repair) -> Result<Done, Failure> {
        self.work("repair", &action.destination).await
    }

    async fn prune(&self, action: &Prune) -> Result<Done, Failure> {
        self.work("prune", &action.source).await
    }
}

fn t(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 3, 0, 0)
        .single()
        .expect("valid time")
}

fn backup(source: &str, level: usize, depends_on: &[&str]) -> Action {
    Action::Backup(Backup {
        source: source.into(),
        source_type: "files".into(),
        destinations: vec!["local".into()],
        level,
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        reason: BackupReason::NeverBackedUp,
        estimated_bytes: None,
        mode: None,
        extend_locks: Vec::new(),
    })
}

fn configure(source: &str) -> Action {
    Action::Configure(Configure {
        source: source.into(),
        source_type: "redis".into(),
        changes: vec![SettingChange {
            name: "appendonly".into(),
            from: "no".into(),
            to: "yes".into(),
        }],
    })
}

fn snapshot(source: &str, day: u32) -> SnapshotRef {
    SnapshotRef {
        id: format!("{source}-{day}"),
        time: t(day),
        bytes_stored: None,
        retain_until: None,
    }
}

fn prune(source: &str, held: bool) -> Action {
    Action::Prune(Prune {
        source: source.into(),
        destination: "local".into(),
        snapshots: vec![snapshot(source, 1), snapshot(source, 2)],
        reason: PruneReason::OutsideRetention {
            rules: "keep_daily 7, min_keep 3".into(),
        },
        held,
        append_only: false,
        locked_until: None,
    })
}

fn copy(source: &str) -> Action {
    Action::Copy(Copy {
        source: source.into(),
        snapshot: snapshot(source, 20),
        from: "local".into(),
        to: "offsite".into(),
        extend_locks: false,
    })
}

fn repair(destination: &str) -> Action {
    Action::Repair(Repair {
        destination: destination.into(),
        found: t(24),
        packs: Vec::new(),
        snapshots: vec![snapshot("db", 20)],
        sources: vec!["db".into()],
        from: vec!["local".into()],
    })
}

/// A plan holding exactly `actions`, in that order.
fn plan_of(actions: Vec<Action>) -> Plan {
    Plan {
        format_version: FORMAT_VERSION,
        created_at: t(25),
        policy: PolicyRef {
            path: "test.yaml".into(),
            digest: "policy-digest".into(),
            location: None,
            sources: Vec::new(),
            destinations: Vec::new(),
        },
        inventory_digest: "inventory-digest".into(),
        settings: Settings::default(),
        destinations: Vec::new(),
        policy_change: None,
        summary: Summary::default(),
        actions,
        warnings: Vec::new(),
    }
}

/// A plan made by the plan engine from policy `sources` (YAML under `sources:`) and
/// an empty inventory: every source is backed up.
fn plan_from_policy(sources: &str) -> Plan {
    let text = format!(
        "version: 1\n\
         encryption:\n  recipients: [keys/demo-recipient.asc]\n\
         destinations:\n  local:\n    type: memory\n\
         sources:\n{sources}"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let loaded = backplan::policy::load_str(&text, &dir.join("apply-engine-test.yaml"), &dir)
        .unwrap_or_else(|e| panic!("policy does not load: {:?}", miette::Report::new(e)));
    backplan::plan::plan(
        &loaded.policy,
        &loaded.policy.graph,
        &Inventory::default(),
        t(25),
        Settings::default(),
    )
}

async fn run(plan: &Plan, executor: &Recorder, parallelism: usize) -> Report {
    apply(plan, executor, parallelism, &|_| {}).await
}

fn status_of<'a>(report: &'a Report, kind: &str, source: &str) -> &'a Status {
    report
        .outcomes
        .iter()
        .find(|o| match &o.action {
            Action::Backup(b) => kind == "backup" && b.source == source,
            Action::Configure(c) => kind == "configure" && c.source == source,
            Action::Copy(c) => kind == "copy" && c.source == source,
            Action::Repair(r) => kind == "repair" && r.destination == source,
            Action::Prune(p) => kind == "prune" && p.source == source,
            Action::Drill(d) => kind == "drill" && d.source == source,
        })
        .map(|o| &o.status)
        .unwrap_or_else(|| panic!("no {kind} of {source} in the report"))
}

/// What the recorder reports of an action it carried out.
fn done() -> Status {
    Status::Done(Done::default())
}

fn skipped_why(status: &Status) -> &str {
    match status {
        Status::Skipped { why } => why,
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn files(name: &str, depends_on: &[&str]) -> String {
    let mut s = format!("  {name}:\n    type: files\n    path: example-data/uploads\n");
    if !depends_on.is_empty() {
        s.push_str(&format!("    depends_on: [{}]\n", depends_on.join(", ")));
    }
    s
}

#[tokio::test]
async fn backups_run_in_graph_order_a_dependency_finishes_before_its_dependent_starts() {
    // db ← media ← thumbs, db ← search; config stands alone. Declared out of order so
    // that policy order cannot pass for graph order.
    let sources = [
        files("thumbs", &["media"]),
        files("media", &["db"]),
        files("search", &["db"]),
        files("db", &[]),
        files("config", &[]),
    ]
    .concat();
    let plan = plan_from_policy(&sources);
    assert_eq!(plan.summary.backups, 5, "{plan:#?}");

    let executor = Recorder::default();
    let report = run(&plan, &executor, 4).await;

    assert_eq!(report.done(), 5, "{report:#?}");
    for (dependency, dependent) in [("db", "media"), ("db", "search"), ("media", "thumbs")] {
        let dep = executor.call("backup", dependency);
        let after = executor.call("backup", dependent);
        assert!(
            dep.finished < after.started,
            "{dependency} finished at tick {} but {dependent} started at tick {}",
            dep.finished,
            after.started
        );
    }
    // Independent sources of the first level do not wait for each other.
    let (db, config) = (
        executor.call("backup", "db"),
        executor.call("backup", "config"),
    );
    assert!(db.started < config.finished && config.started < db.finished);
}

#[tokio::test]
async fn report_lists_outcomes_in_plan_order() {
    let plan = plan_of(vec![
        backup("a", 0, &[]),
        backup("b", 0, &[]),
        backup("c", 1, &["a"]),
        copy("a"),
        prune("b", false),
    ]);
    let report = run(&plan, &Recorder::default(), 2).await;
    let indexes: Vec<usize> = report.outcomes.iter().map(|o| o.index).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    for (outcome, action) in report.outcomes.iter().zip(&plan.actions) {
        assert_eq!(&outcome.action, action);
    }
}

#[tokio::test]
async fn backups_of_one_level_run_in_parallel_but_never_more_than_parallelism_at_once() {
    let actions: Vec<Action> = (0..7).map(|i| backup(&format!("s{i}"), 0, &[])).collect();
    let plan = plan_of(actions);
    for parallelism in [1, 3, 7] {
        let executor = Recorder::default();
        let report = run(&plan, &executor, parallelism).await;
        assert_eq!(report.done(), 7);
        assert_eq!(
            executor.max_running(),
            parallelism,
            "with parallelism {parallelism}"
        );
    }
}

#[tokio::test]
async fn parallelism_zero_is_treated_as_one() {
    let plan = plan_of((0..3).map(|i| backup(&format!("s{i}"), 0, &[])).collect());
    let executor = Recorder::default();
    let report = run(&plan, &executor, 0).await;
    assert_eq!(report.done(), 3);
    assert_eq!(executor.max_running(), 1);
}

#[tokio::test]
async fn a_failing_source_does_not_stop_independent_ones_and_its_dependents_are_skipped() {
    let plan = plan_of(vec![
        backup("db", 0, &[]),
        backup("config", 0, &[]),
        backup("media", 1, &["db"]),
        backup("logs", 1, &["config"]),
        backup("thumbs", 2, &["media"]),
    ]);
    let executor = Recorder::failing(&["db"]);
    let report = run(&plan, &executor, 2).await;

    assert_eq!(
        status_of(&report, "backup", "db"),
        &Status::Failed {
            error: Failure::new(Code::SourceFailed, "db exploded")
        }
    );
    assert!(matches!(
        status_of(&report, "backup", "config"),
        Status::Done(_)
    ));
    assert!(matches!(
        status_of(&report, "backup", "logs"),
        Status::Done(_)
    ));
    let media = skipped_why(status_of(&report, "backup", "media"));
    assert!(
        media.contains("db"),
        "the reason names the dependency: {media}"
    );
    // Skips are transitive, and name the dependency that was not backed up.
    let thumbs = skipped_why(status_of(&report, "backup", "thumbs"));
    assert!(thumbs.contains("media"), "{thumbs}");

    assert!(!executor.called("backup", "media"));
    assert!(!executor.called("backup", "thumbs"));
    assert_eq!(report.failed(), 1);
    assert_eq!(report.skipped(), 2);
    assert_eq!(report.done(), 2);
    assert_eq!(report.outcomes.len(), 5);
}

#[tokio::test]
async fn a_failing_source_skips_its_dependents_in_a_plan_made_from_a_policy() {
    let sources = [
        files("config", &[]),
        files("db", &[]),
        files("media", &["db"]),
    ]
    .concat();
    let plan = plan_from_policy(&sources);
    let executor = Recorder::failing(&["db"]);
    let report = run(&plan, &executor, 2).await;
    assert_eq!(
        (report.done(), report.failed(), report.skipped()),
        (1, 1, 1),
        "{report:#?}"
    );
    assert!(skipped_why(status_of(&report, "backup", "media")).contains("db"));
}

#[tokio::test]
async fn held_prunes_are_skipped() {
    let plan = plan_of(vec![prune("db", true), prune("media", true)]);
    let executor = Recorder::default();
    let report = run(&plan, &executor, 2).await;
    assert!(executor.calls().is_empty(), "{:?}", executor.calls());
    assert_eq!(report.skipped(), 2);
    assert!(skipped_why(status_of(&report, "prune", "db")).contains("max-deletes"));
}

#[tokio::test]
async fn prunes_of_a_source_whose_backup_failed_in_the_same_apply_are_skipped() {
    let plan = plan_of(vec![
        backup("db", 0, &[]),
        backup("media", 1, &["db"]),
        prune("db", false),
        prune("media", false),
    ]);
    let executor = Recorder::failing(&["db"]);
    let report = run(&plan, &executor, 2).await;
    assert!(!executor.called("prune", "db"));
    // A backup skipped because of its dependency did not succeed either.
    assert!(!executor.called("prune", "media"));
    let why = skipped_why(status_of(&report, "prune", "db"));
    assert!(why.contains("db") && why.contains("failed"), "{why}");
    skipped_why(status_of(&report, "prune", "media"));
    assert_eq!((report.failed(), report.skipped()), (1, 3));
}

#[tokio::test]
async fn prunes_of_other_sources_still_run() {
    let plan = plan_of(vec![
        backup("db", 0, &[]),
        backup("config", 0, &[]),
        prune("db", false),
        prune("config", false),
        // No backup of media in this plan: its prune does not depend on one.
        prune("media", false),
    ]);
    let executor = Recorder::failing(&["db"]);
    let report = run(&plan, &executor, 2).await;
    assert!(!executor.called("prune", "db"));
    assert!(matches!(
        status_of(&report, "prune", "config"),
        Status::Done(_)
    ));
    assert!(matches!(
        status_of(&report, "prune", "media"),
        Status::Done(_)
    ));
    // Prunes take the destination's exclusive lock, one at a time, after the backups.
    let config = executor.call("prune", "config");
    let media = executor.call("prune", "media");
    assert!(config.finished < media.started || media.finished < config.started);
    assert!(executor.call("backup", "config").finished < config.started);
    assert_eq!(
        (report.done(), report.failed(), report.skipped()),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn copies_run() {
    let plan = plan_of(vec![backup("db", 0, &[]), copy("db"), copy("media")]);
    let executor = Recorder::default();
    let report = run(&plan, &executor, 2).await;
    assert!(executor.called("copy", "db"));
    assert!(executor.called("copy", "media"));
    assert_eq!(status_of(&report, "copy", "media"), &done());
    assert_eq!(report.done(), 3);
}

#[tokio::test]
async fn repairs_run_after_the_backups_and_before_the_copies() {
    let plan = plan_of(vec![copy("db"), repair("offsite"), backup("db", 0, &[])]);
    let executor = Recorder::default();
    let report = run(&plan, &executor, 4).await;
    let repair = executor.call("repair", "offsite");
    assert!(executor.call("backup", "db").finished < repair.started);
    assert!(repair.finished < executor.call("copy", "db").started);
    assert_eq!(status_of(&report, "repair", "offsite"), &done());
    assert_eq!(report.done(), 3);
}

#[tokio::test]
async fn every_action_the_executor_runs_is_announced_and_every_outcome_reported() {
    let plan = plan_of(vec![
        backup("db", 0, &[]),
        backup("media", 1, &["db"]),
        copy("config"),
        prune("config", false),
        prune("old", true),
    ]);
    let started = Mutex::new(Vec::new());
    let finished = Mutex::new(Vec::new());
    let on_event = |event: Event<'_>| match event {
        Event::Started { index, .. } => started.lock().expect("lock").push(index),
        Event::Finished { outcome } => finished.lock().expect("lock").push(outcome.index),
    };
    let executor = Recorder::failing(&["db"]);
    let report = apply(&plan, &executor, 2, &on_event).await;

    let mut started = started.into_inner().expect("lock");
    let mut finished = finished.into_inner().expect("lock");
    started.sort_unstable();
    finished.sort_unstable();
    // Skipped actions (media after db failed, the held prune) finish without starting.
    assert_eq!(started, vec![0, 2, 3]);
    assert_eq!(finished, vec![0, 1, 2, 3, 4]);
    assert_eq!(executor.calls().len(), started.len());
    assert_eq!(report.outcomes.len(), 5);
}

#[tokio::test]
async fn settings_are_changed_before_any_backup_and_a_refused_change_stops_nothing() {
    let plan = plan_of(vec![
        configure("cache"),
        configure("sessions"),
        backup("cache", 0, &[]),
        backup("db", 0, &[]),
    ]);
    let executor = Recorder::failing(&["sessions"]);
    let report = run(&plan, &executor, 2).await;
    let first_backup = executor
        .calls()
        .iter()
        .filter(|c| c.kind == "backup")
        .map(|c| c.started)
        .min()
        .expect("backups ran");
    for source in ["cache", "sessions"] {
        assert!(executor.call("configure", source).finished < first_backup);
    }
    assert!(matches!(
        status_of(&report, "configure", "sessions"),
        Status::Failed { .. }
    ));
    for source in ["cache", "db"] {
        assert!(matches!(
            status_of(&report, "backup", source),
            Status::Done(_)
        ));
    }
    assert_eq!(report.failed(), 1);
}

#[tokio::test]
async fn a_due_drill_without_a_secret_key_is_skipped_with_its_code_and_one_with_a_key_runs() {
    let drill = |source: &str, needs_secret_key| {
        Action::Drill(Drill {
            source: source.into(),
            source_type: "files".into(),
            reason: DrillReason::NeverDrilled,
            needs_secret_key,
        })
    };
    let plan = plan_of(vec![
        backup("media", 0, &[]),
        drill("media", true),
        drill("config", false),
    ]);
    let report = run(&plan, &Recorder::default(), 2).await;
    assert_eq!(status_of(&report, "backup", "media"), &done());
    let why = skipped_why(status_of(&report, "drill", "media"));
    assert!(
        why.starts_with("BP277: a drill needs a secret key"),
        "{why}"
    );
    // The recording executor has no drill of its own: the trait's default refuses,
    // which fails the action rather than passing it silently.
    match status_of(&report, "drill", "config") {
        Status::Failed { error } => assert_eq!(error.code, Code::NoExecutor),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(report.failed(), 1);
}
