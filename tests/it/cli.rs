//! End-to-end tests of the `backplan` binary: exit codes, output formats, saved plans
//! and the checks apply makes before it carries one out. Every test runs in its own
//! temporary folder (see `common`).

use std::io::Read;
use std::process::Stdio;

use crate::common::{Cmd, POLICY, Sandbox};
use serde_json::{Value, json};

/// The `--now` of these tests; the policy's schedule is `@daily` in UTC.
const NOW: &str = "2026-11-25T12:00:00Z";

/// An inventory where `local` holds one complete snapshot of each source at `time`.
fn inventory_at(time: &str) -> String {
    let snapshots: Vec<Value> = ["config", "uploads"]
        .iter()
        .map(|source| {
            json!({
                "id": format!("{source}-{time}"),
                "source": source,
                "run_id": format!("run-{time}"),
                "time": time,
                "status": "complete",
                "bytes_read": 1024,
                "bytes_stored": 512,
            })
        })
        .collect();
    json!({ "destinations": { "local": { "snapshots": snapshots } } }).to_string()
}

/// Taken at today's 00:00 tick: nothing is due until tomorrow.
fn recent_inventory() -> String {
    inventory_at("2026-11-25T00:00:00Z")
}

/// Taken yesterday: both sources are due again.
fn day_old_inventory() -> String {
    inventory_at("2026-11-24T00:00:00Z")
}

fn planning<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--inventory", "inventory.json", "--now", NOW]);
    all
}

// --- plan ---------------------------------------------------------------------------

#[test]
fn plan_detailed_exitcode_is_2_when_the_destination_is_empty() {
    Sandbox::new()
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("never backed up")
        .stdout("Plan: 2 backups")
        .check();
}

#[test]
fn plan_reads_a_missing_destination_folder_without_creating_it() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["plan"])
        .stdout("Inventory: local 0 snapshots")
        .check();
    assert!(!sandbox.path("backups").exists(), "plan created the folder");
}

#[test]
fn plan_detailed_exitcode_is_2_when_backups_are_due() {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &day_old_inventory());
    sandbox
        .run(&planning(&["plan", "--detailed-exitcode"]))
        .status(2)
        .stdout("Plan: 2 backups")
        .check();
}

#[test]
fn plan_detailed_exitcode_is_0_when_nothing_is_to_do() {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &recent_inventory());
    sandbox
        .run(&planning(&["plan", "--detailed-exitcode"]))
        .stdout("No changes")
        .stderr_lacks("BP")
        .check();
}

#[test]
fn plan_without_detailed_exitcode_exits_0_when_there_are_changes() {
    Sandbox::new()
        .run(&["plan"])
        .stdout("Plan: 2 backups")
        .check();
}

#[test]
fn plan_format_json_prints_the_plan_with_format_version_1() {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &day_old_inventory());
    let run = sandbox
        .run(&planning(&["plan", "--format", "json"]))
        .check();
    let plan: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout));
    assert_eq!(plan["format_version"], 2);
    assert_eq!(plan["created_at"], NOW);
    let actions = plan["actions"].as_array().expect("actions is a list");
    let backed_up: Vec<&str> = actions
        .iter()
        .filter(|a| a["action"] == "backup")
        .filter_map(|a| a["source"].as_str())
        .collect();
    assert_eq!(backed_up, ["config", "uploads"]);
    assert_eq!(plan["summary"]["backups"], 2);
}

#[test]
fn plan_format_markdown_prints_a_table() {
    Sandbox::new()
        .run(&["plan", "--format", "markdown"])
        .stdout("| | action | source | what | why |")
        .stdout("|---|---|---|---|---|")
        .stdout("| backup | config |")
        .check();
}

#[test]
fn plan_rejects_a_now_that_is_not_a_time() {
    Sandbox::new()
        .run(&["plan", "--now", "not-a-time"])
        .status(1)
        .stderr("BP200")
        .stderr("not-a-time")
        .check();
}

#[test]
fn apply_rejects_a_now_that_is_not_a_time() {
    Sandbox::new()
        .run(&["apply", "--now", "not-a-time"])
        .status(1)
        .stderr("BP200")
        .check();
}

#[test]
fn plan_out_saves_the_plan_as_json() {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &day_old_inventory());
    sandbox
        .run(&planning(&["plan", "--out", "plan.json"]))
        .stdout("Saved the plan to plan.json")
        .check();
    let saved: Value = serde_json::from_str(&sandbox.read("plan.json")).expect("saved plan");
    assert_eq!(saved["format_version"], 2);
    assert_eq!(saved["summary"]["backups"], 2);
}

// --- apply --------------------------------------------------------------------------

#[test]
fn apply_carries_out_a_saved_plan_and_then_refuses_it_as_stale() {
    let sandbox = Sandbox::with_example_data();
    sandbox.run(&["init"]).check();
    sandbox.run(&["plan", "--out", "plan.json"]).check();
    sandbox
        .run(&["apply", "plan.json"])
        .stdout("✓ backup config → local")
        .stdout("✓ backup uploads → local")
        .stdout("Apply: 2 done, 0 failed, 0 skipped.")
        .stderr_lacks("BP")
        .check();
    // The destination holds the snapshots now: the saved plan is out of date.
    sandbox
        .run(&["apply", "plan.json"])
        .status(1)
        .stderr("BP203")
        .stderr("destinations changed")
        .check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("No changes")
        .check();
}

#[test]
fn apply_without_a_repository_key_fails_with_bp223_and_writes_nothing() {
    let sandbox = Sandbox::new().example_data();
    sandbox
        .run(&["apply"])
        .status(1)
        .stderr("BP223")
        .stderr("repository key")
        .stderr("backplan init")
        .check();
    assert!(
        !sandbox.path("backups").exists(),
        "apply wrote a repository"
    );
}

/// [`POLICY`] with a repository key and a redis source whose server cannot be reached
/// (nothing listens on port 1); `uploads` depends on it.
fn policy_with_redis() -> String {
    let policy = crate::common::with_repository_key(POLICY)
        .replace("    depends_on: [config]\n", "    depends_on: [cache]\n");
    format!("{policy}  cache:\n    type: redis\n    url: redis://127.0.0.1:1\n")
}

#[test]
fn apply_of_a_saved_plan_exits_3_when_a_source_cannot_be_reached() {
    let sandbox = Sandbox::with_policy(&policy_with_redis()).example_data();
    sandbox.run(&["init"]).check();
    sandbox.run(&["plan", "--out", "plan.json"]).check();
    sandbox
        .run(&["apply", "plan.json"])
        .status(3)
        .stdout("✓ backup config → local")
        .stdout("✗ backup cache → local")
        .stdout("BP229")
        .stdout("cannot connect")
        .stderr("BP205")
        .check();
}

#[test]
fn apply_exits_3_when_actions_fail_and_the_report_says_why() {
    let sandbox = Sandbox::with_policy(&policy_with_redis()).example_data();
    sandbox.run(&["init"]).check();
    let run = sandbox.run(&["apply"]).status(3).check();
    // cache fails (its server is not there); uploads depends on it; config succeeds.
    assert!(
        run.stdout.contains("failed: BP229"),
        "the report names the code:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("skipped: its dependency cache was not backed up"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Apply: 1 done, 1 failed, 1 skipped."),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 of 3 actions failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn apply_format_json_reports_every_outcome() {
    let sandbox = Sandbox::with_policy(&policy_with_redis()).example_data();
    sandbox.run(&["init"]).check();
    let run = sandbox
        .run(&["apply", "--format", "json"])
        .status(3)
        .check();
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout));
    let outcomes = report["outcomes"].as_array().expect("outcomes is a list");
    let mut by_source: Vec<(&str, &str)> = outcomes
        .iter()
        .filter_map(|o| Some((o["action"]["source"].as_str()?, o["status"].as_str()?)))
        .collect();
    by_source.sort();
    assert_eq!(
        by_source,
        [
            ("cache", "failed"),
            ("config", "done"),
            ("uploads", "skipped")
        ],
        "{}",
        run.stdout
    );
    let outcome = |source: &str| {
        outcomes
            .iter()
            .find(|o| o["action"]["source"] == source)
            .unwrap_or_else(|| panic!("no outcome for {source}"))
    };
    assert_eq!(report["format_version"], 3, "{}", run.stdout);
    // A failed action is coded: {code, message, help}, the help being the code's.
    let error = &outcome("cache")["error"];
    assert_eq!(error["code"], "BP229", "{}", run.stdout);
    let message = error["message"].as_str().expect("a message");
    assert!(
        !message.starts_with("BP"),
        "the code is not repeated: {message}"
    );
    assert!(
        message.contains("127.0.0.1:1") && message.contains("refused"),
        "the message names the server and the cause: {message}"
    );
    assert_eq!(
        error["help"].as_str(),
        Some(backplan::error::Code::DatabaseError.help()),
        "{}",
        run.stdout
    );
    assert!(
        outcome("uploads")["error"].is_null(),
        "only a failed action carries an error"
    );
    assert!(
        outcome("config")["bytes_read"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        run.stdout
    );
    // What a done action did is typed, named by its kind.
    let detail = &outcome("config")["detail"];
    assert_eq!(
        (&detail["kind"], &detail["stored"]),
        (&Value::from("backup"), &Value::from("files")),
        "{}",
        run.stdout
    );
    assert!(detail["files"].as_u64().is_some_and(|n| n > 0), "{detail}");
}

#[test]
fn apply_exits_0_when_nothing_is_to_do() {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &recent_inventory());
    sandbox
        .run(&planning(&["apply"]))
        .stdout("Apply: 0 done, 0 failed, 0 skipped.")
        .check();
}

/// A sandbox whose day-old inventory was planned into `plan.json`.
fn with_saved_plan() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write("inventory.json", &day_old_inventory());
    sandbox
        .run(&planning(&["plan", "--out", "plan.json"]))
        .check();
    sandbox
}

/// Applies `plan.json` with another policy file, `staging.yaml`: a copy of the policy
/// with the same names and another retention.
fn apply_with_a_staging_copy(sandbox: &Sandbox) -> Cmd<'_> {
    sandbox.write(
        "staging.yaml",
        &POLICY.replace("keep_daily: 7", "keep_daily: 3"),
    );
    sandbox.run(&[
        "apply",
        "-p",
        "staging.yaml",
        "plan.json",
        "--inventory",
        "inventory.json",
    ])
}

#[test]
fn apply_refuses_a_saved_plan_when_the_policy_changed() {
    let sandbox = with_saved_plan();
    sandbox.write(
        "backplan.yaml",
        &POLICY.replace("keep_daily: 7", "keep_daily: 14"),
    );
    sandbox
        .run(&["apply", "plan.json", "--inventory", "inventory.json"])
        .status(1)
        .stderr("BP203")
        .stderr("stale")
        .stderr("policy")
        .check();
}

#[test]
fn apply_refuses_a_saved_plan_of_another_policy_file_as_such() {
    let sandbox = with_saved_plan();
    // Another policy, in another file, with the same names (a staging copy).
    apply_with_a_staging_copy(&sandbox)
        .status(1)
        .stderr("BP215")
        .stderr("another policy")
        .stderr("backplan.yaml")
        .stderr("staging.yaml")
        .stderr_lacks("BP203")
        .check();
}

#[test]
fn a_saved_plan_that_records_no_policy_identity_is_judged_stale_as_before() {
    let sandbox = with_saved_plan();
    let mut plan: Value = serde_json::from_str(&sandbox.read("plan.json")).expect("saved plan");
    let recorded = plan["policy"].as_object_mut().expect("policy");
    assert!(recorded.contains_key("location"), "{recorded:?}");
    for field in ["location", "sources", "destinations"] {
        recorded.remove(field);
    }
    sandbox.write("plan.json", &plan.to_string());
    apply_with_a_staging_copy(&sandbox)
        .status(1)
        .stderr("BP203")
        .check();
}

#[test]
fn apply_refuses_a_saved_plan_of_a_policy_with_none_of_these_names_as_another() {
    let sandbox = with_saved_plan();
    // The same file now holds an unrelated policy: no source or destination in common.
    sandbox.write(
        "backplan.yaml",
        &POLICY
            .replace("local:", "offsite:")
            .replace("config:", "settings:")
            .replace("uploads:", "media:")
            .replace("depends_on: [config]", "depends_on: [settings]"),
    );
    sandbox
        .run(&["apply", "plan.json", "--inventory", "inventory.json"])
        .status(1)
        .stderr("BP215")
        .check();
}

#[test]
fn apply_refuses_a_saved_plan_when_the_inventory_changed() {
    let sandbox = with_saved_plan();
    // Another apply ran in between: the destination now holds today's snapshots.
    sandbox.write("inventory.json", &recent_inventory());
    sandbox
        .run(&["apply", "plan.json", "--inventory", "inventory.json"])
        .status(1)
        .stderr("BP203")
        .stderr("stale")
        .stderr("destinations changed")
        .check();
}

#[test]
fn apply_refuses_a_saved_plan_of_another_format_version() {
    let sandbox = with_saved_plan();
    let mut plan: Value = serde_json::from_str(&sandbox.read("plan.json")).expect("saved plan");
    plan["format_version"] = json!(99);
    sandbox.write("plan.json", &plan.to_string());
    sandbox
        .run(&["apply", "plan.json", "--inventory", "inventory.json"])
        .status(1)
        .stderr("BP202")
        .stderr("99")
        .check();
}

#[test]
fn apply_refuses_a_plan_file_that_is_not_json() {
    let sandbox = Sandbox::new();
    sandbox.write("plan.json", "Plan: 2 backups, 0 copies, 0 prunes.\n");
    sandbox
        .run(&["apply", "plan.json"])
        .status(1)
        .stderr("BP202")
        .check();
}

const UNSET: &str = "BACKPLAN_TEST_SURELY_UNSET_PASSWORD";

fn policy_with_unset_env() -> String {
    format!(
        "{POLICY}  db:\n    type: postgres\n    url: postgres://backup@127.0.0.1:5432/app\n    password: ${{env:{UNSET}}}\n"
    )
}

#[test]
fn apply_refuses_a_policy_that_refers_to_an_unset_variable() {
    Sandbox::with_policy(&policy_with_unset_env())
        .run(&["apply"])
        .env_remove(UNSET)
        .status(1)
        .stderr("BP130")
        .stderr(UNSET)
        .check();
}

#[test]
fn apply_reports_an_unset_variable_once() {
    let run = Sandbox::with_policy(&policy_with_unset_env())
        .run(&["apply"])
        .env_remove(UNSET)
        .status(1)
        .check();
    let mentions = run.stderr.matches("which is not set here").count();
    assert_eq!(mentions, 1, "{}", run.stderr);
}

#[test]
fn plan_only_warns_about_an_unset_variable() {
    Sandbox::with_policy(&policy_with_unset_env())
        .run(&["plan", "--detailed-exitcode"])
        .env_remove(UNSET)
        .status(2)
        .stderr("BP130")
        .stdout("Plan: 3 backups")
        .check();
}

// --- the other commands -------------------------------------------------------------

#[test]
fn init_writes_a_starter_policy_and_never_overwrites_it() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["init", "-p", "new.yaml"])
        .stdout("Wrote new.yaml")
        .stdout("\n  1. put an OpenPGP public key at keys/recipient.asc")
        .check();
    let written = sandbox.read("new.yaml");
    assert!(written.contains("version: 1"), "{written}");

    // On an existing file init sets up its repositories; a file that is not a
    // policy is reported, and left as it is.
    sandbox.write("new.yaml", "# edited by hand\n");
    sandbox
        .run(&["init", "-p", "new.yaml"])
        .status(1)
        .stderr("BP103")
        .check();
    assert_eq!(sandbox.read("new.yaml"), "# edited by hand\n");
}

#[test]
fn init_on_a_policy_without_a_repository_key_fails_with_bp223() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["init"])
        .status(1)
        .stderr("BP223")
        .stderr("repository_key_file")
        .check();
    assert_eq!(sandbox.read("backplan.yaml"), POLICY);
    assert!(!sandbox.path("backups").exists(), "init made a repository");
}

#[test]
fn init_on_an_existing_policy_makes_the_key_and_the_repository_once() {
    use std::os::unix::fs::PermissionsExt;

    let sandbox = Sandbox::with_example_data();
    let policy = sandbox.read("backplan.yaml");
    sandbox
        .run(&["init"])
        .stdout("Made repository key")
        .stdout("repo.key")
        .stdout("local: repository created")
        .check();
    let key = sandbox.read("repo.key");
    assert_eq!(key.trim().len(), 64, "{key}");
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    let mode = std::fs::metadata(sandbox.path("repo.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    assert!(sandbox.path("backups/backplan.json").is_file());
    let copies: Vec<_> = std::fs::read_dir(sandbox.path("backups/keys"))
        .expect("the key's copy")
        .collect();
    assert_eq!(copies.len(), 1, "one copy of the repository key");

    // Again: nothing new, the key stays, the policy is untouched.
    let run = sandbox
        .run(&["init"])
        .stdout("local: repository exists; key copy checked")
        .check();
    assert!(
        !run.stdout.contains("Made repository key"),
        "{}",
        run.stdout
    );
    assert_eq!(sandbox.read("repo.key"), key);
    assert_eq!(sandbox.read("backplan.yaml"), policy);
}

#[test]
fn the_starter_policy_validates_once_its_key_is_in_place() {
    let sandbox = Sandbox::new();
    // init writes into an existing folder; the key goes in first.
    sandbox.write(
        "starter/keys/recipient.asc",
        &sandbox.read("keys/demo-recipient.asc"),
    );
    sandbox
        .run(&["init", "-p", "starter/backplan.yaml"])
        .check();
    sandbox
        .run(&["validate", "-p", "starter/backplan.yaml"])
        .stdout("is valid")
        .check();
}

#[test]
fn completions_bash_prints_a_completion_script() {
    let run = Sandbox::new().run(&["completions", "bash"]).check();
    assert!(run.stdout.contains("backplan"), "{}", run.stdout);
    assert!(run.stdout.contains("complete"), "{}", run.stdout);
}

#[test]
fn man_writes_backplan_1_into_the_folder() {
    let sandbox = Sandbox::new();
    sandbox.run(&["man", "share/man/man1"]).check();
    let page = sandbox.read("share/man/man1/backplan.1");
    assert!(page.contains(".TH backplan"), "{page}");
}

#[test]
fn help_works_for_every_subcommand() {
    use clap::CommandFactory;

    let sandbox = Sandbox::new();
    sandbox.run(&["--help"]).stdout("Usage: backplan").check();
    let cli = backplan::cli::Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    assert!(
        names.contains(&"plan") && names.contains(&"apply"),
        "{names:?}"
    );
    for name in names {
        sandbox
            .run(&[name, "--help"])
            .stdout(&format!("Usage: backplan {name}"))
            .check();
        sandbox
            .run(&["help", name])
            .stdout(&format!("Usage: backplan {name}"))
            .check();
    }
}

#[test]
fn a_reader_that_closes_the_pipe_early_is_not_an_error() {
    // `backplan plan | head -c 10`: the reader goes away before backplan writes.
    let sandbox = Sandbox::new();
    for args in [&["plan"][..], &["plan", "--format", "json"], &["schema"]] {
        let mut child = sandbox
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backplan");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for backplan");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.to_lowercase().contains("broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_reader_that_takes_a_few_bytes_and_leaves_is_not_an_error() {
    // Like `backplan completions bash | head -c 10`, reading before closing.
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backplan");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).expect("read 10 bytes");
    drop(stdout);
    let output = child.wait_with_output().expect("wait for backplan");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}

// --- exit codes of the command line ---------------------------------------------------

#[test]
fn a_usage_error_exits_64_with_bp212_never_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["paln", "--detailed-exitcode"][..],
        &["plan", "--detailed-exitcod"],
        &["plan", "--format", "yaml"],
        &["plan", "--max-deletes", "many"],
        &["restore", "--at", "2026-01-01T00:00:00Z", "--snapshot", "x"],
        &[],
    ] {
        sandbox.run(args).status(64).stderr("BP212").check();
    }
    sandbox
        .run(&["paln"])
        .status(64)
        .stderr("unrecognized subcommand 'paln'")
        .stderr("plan")
        .check();
}

#[test]
fn help_and_version_exit_0() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["--help"])
        .status(0)
        .stdout("Usage: backplan")
        .stdout("64 usage error")
        .check();
    sandbox
        .run(&["-h"])
        .status(0)
        .stdout("Usage: backplan")
        .check();
    sandbox
        .run(&["help"])
        .status(0)
        .stdout("Usage: backplan")
        .check();
    sandbox
        .run(&["--version"])
        .status(0)
        .stdout(env!("CARGO_PKG_VERSION"))
        .check();
    sandbox
        .run(&["plan", "--version"])
        .status(0)
        .stdout(env!("CARGO_PKG_VERSION"))
        .check();
}

#[test]
fn restore_at_a_future_time_is_refused() {
    Sandbox::new()
        .run(&["restore", "--plan", "--at", "2999-01-01T00:00:00Z"])
        .status(1)
        .stderr("BP213")
        .stderr("in the future")
        .check();
}

#[test]
fn restore_of_an_undeclared_source_lists_the_declared_ones() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["restore", "--plan", "--only", "upload"])
        .status(1)
        .stderr("BP214")
        .stderr("declares no source `upload`")
        .stderr("did you mean `uploads`?")
        .stderr("config, uploads")
        .check();
    sandbox
        .run(&["restore", "--plan", "--target", "db=/tmp/x"])
        .status(1)
        .stderr("BP214")
        .stderr("--target db")
        .stderr("config, uploads")
        .check();
}
