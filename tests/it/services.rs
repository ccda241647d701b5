//! OpenDAL services beyond S3 and a local folder (`type: opendal`): the policy checks
//! of their options (scheme, required options, secrets), and a backup and restore
//! through the binary against real servers started here: OpenSSH's `sshd` for SFTP
//! (tests/it/common/sftp.rs) and Apache's mod_dav for WebDAV (tests/it/common/webdav.rs).
//!
//! Without a server binary the round trips fail under CI and are skipped (loudly)
//! elsewhere.

use std::ffi::OsString;
use std::path::Path;

use crate::common::azurite::{self, AzuriteServer};
use crate::common::sftp::SftpServer;
use crate::common::tree::{Entry, assert_same_tree, noise, put, tree};
use crate::common::webdav::{self, WebdavServer};
use crate::common::{Run, Sandbox};
use backplan::error::{Code, Located, PolicyReport};
use backplan::policy::load_str;
use backplan::policy::spans::line_col;
use backplan::repo::lock::{self, LockKind};
use backplan::repo::store::Repo;

/// A policy with one destination `remote` (YAML at the destination's level, indented
/// four spaces) and a files source `data`.
fn policy(destination: &str) -> String {
    format!(
        r#"version: 1

encryption:
  recipients:
    - keys/demo-recipient.asc
  repository_key_file: repository.key

defaults:
  schedule: "@daily"
  timezone: UTC
  retention:
    keep_daily: 7
    min_keep: 2

destinations:
  remote:
{destination}
sources:
  data:
    type: files
    path: data
"#
    )
}

// --- policy checks -----------------------------------------------------------------

fn report(destination: &str) -> (String, PolicyReport) {
    let text = policy(destination);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    match load_str(&text, Path::new("services.yaml"), &dir) {
        Ok(loaded) => panic!(
            "the policy validated (warnings: {:?}):\n{text}",
            loaded
                .warnings
                .iter()
                .map(|w| &w.problem.message)
                .collect::<Vec<_>>()
        ),
        Err(report) => (text, report),
    }
}

fn only_error(report: &PolicyReport) -> &Located {
    let errors: Vec<&Located> = report
        .problems
        .iter()
        .filter(|p| p.problem.is_error())
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{:?}",
        errors
            .iter()
            .map(|p| (p.problem.code.id(), &p.problem.message))
            .collect::<Vec<_>>()
    );
    errors[0]
}

/// The 1-based line a problem points at, and the text of that line.
fn line_of(text: &str, problem: &Located) -> (usize, String) {
    let (span, _) = problem.problem.span.as_ref().expect("a span");
    let (line, _) = line_col(text, span.offset());
    (line, text.lines().nth(line - 1).unwrap_or("").to_string())
}

#[test]
fn a_scheme_not_built_in_is_bp132_with_a_did_you_mean_and_the_list() {
    let (text, report) = report(
        "    type: opendal\n    scheme: webdev\n    options:\n      endpoint: https://dav.example.org\n",
    );
    let error = only_error(&report);
    assert_eq!(error.problem.code.id(), "BP132");
    assert!(
        error.problem.message.contains("`webdev`"),
        "{}",
        error.problem.message
    );
    let help = error.problem.help.as_deref().unwrap_or("");
    assert!(help.contains("did you mean `webdav`?"), "{help}");
    for scheme in ["azblob", "b2", "gcs", "s3", "sftp", "webdav"] {
        assert!(help.contains(scheme), "{scheme} missing from: {help}");
    }
    assert_eq!(line_of(&text, error).1, "    scheme: webdev");
}

#[test]
fn each_service_names_the_required_option_it_misses_with_bp133() {
    let cases = [
        ("sftp", "      root: /srv/backups\n", "options.endpoint"),
        ("webdav", "      root: /backups\n", "options.endpoint"),
        ("gcs", "      root: /backups\n", "options.bucket"),
        (
            "azblob",
            "      endpoint: https://acct.blob.core.windows.net\n      account_key: ${env:AZ_KEY}\n",
            "options.container",
        ),
        ("azblob", "      container: backups\n", "options.endpoint"),
        (
            "azblob",
            "      container: backups\n      endpoint: http://127.0.0.1:10000/devstoreaccount1\n      account_key: ${env:AZ_KEY}\n",
            "options.account_name",
        ),
        (
            "b2",
            "      bucket: b\n      bucket_id: id\n      application_key_id: kid\n",
            "options.application_key",
        ),
    ];
    for (scheme, options, missing) in cases {
        let (text, report) = report(&format!(
            "    type: opendal\n    scheme: {scheme}\n    options:\n{options}"
        ));
        let error = only_error(&report);
        assert_eq!(error.problem.code.id(), "BP133", "{scheme}");
        assert!(
            error.problem.message.contains(&format!("`{missing}`")),
            "{scheme}: {}",
            error.problem.message
        );
        assert_eq!(line_of(&text, error).1, "    options:", "{scheme}");
    }
}

#[test]
fn a_secret_option_written_inline_is_bp134_and_its_value_is_not_shown() {
    let (text, report) = report(
        "    type: opendal\n    scheme: webdav\n    options:\n      endpoint: https://dav.example.org\n      username: backup\n      password: hunter2-inline\n",
    );
    let error = only_error(&report);
    assert_eq!(error.problem.code.id(), "BP134");
    assert_eq!(line_of(&text, error).1, "      password: hunter2-inline");
    let shown = format!(
        "{} {}",
        error.problem.message,
        error.problem.help.as_deref().unwrap_or("")
    );
    assert!(shown.contains("password_file"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    // Nor in the policy's lines the report quotes.
    let quoted = error.source.as_ref().expect("the policy's text").inner();
    assert!(
        quoted.contains("      password: **************\n"),
        "{quoted}"
    );
    assert!(!quoted.contains("hunter2"), "{quoted}");
}

#[test]
fn a_misspelt_option_is_bp102_with_a_did_you_mean() {
    let (text, report) = report(
        "    type: opendal\n    scheme: webdav\n    options:\n      endpoint: https://dav.example.org\n      passwrod_file: /etc/backplan/dav.pw\n",
    );
    let error = only_error(&report);
    assert_eq!(error.problem.code.id(), "BP102");
    assert!(
        error
            .problem
            .help
            .as_deref()
            .is_some_and(|h| h.contains("`password_file`")),
        "{:?}",
        error.problem.help
    );
    assert_eq!(
        line_of(&text, error).1,
        "      passwrod_file: /etc/backplan/dav.pw"
    );
}

#[test]
fn services_with_their_options_and_secret_references_validate() {
    let text = policy(
        "    type: opendal\n    scheme: azblob\n    options:\n      container: backups\n      endpoint: https://acct.blob.core.windows.net\n      sas_token_file: /etc/backplan/sas\n",
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let loaded =
        load_str(&text, Path::new("ok.yaml"), &dir).unwrap_or_else(|e| panic!("{:?}", e.problems));
    assert!(loaded.warnings.is_empty());
}

// --- round trips through the binary ------------------------------------------------

/// A sandbox whose `data/` holds a large file, nested and empty files, an empty
/// folder and a symbolic link.
fn sandbox_with_data(destination: &str) -> Sandbox {
    let sandbox = Sandbox::with_policy(&policy(destination));
    put(&sandbox, "data/big.bin", &noise(7, 2_500_000));
    put(&sandbox, "data/nested/deeper/small.txt", b"hello remote\n");
    put(&sandbox, "data/nested/empty-file", b"");
    put(&sandbox, "data/photos/a.jpg", &noise(8, 300_000));
    put(&sandbox, "data/photos/a-copy.jpg", &noise(8, 300_000));
    std::fs::create_dir_all(sandbox.path("data/empty-dir")).expect("create folder");
    std::os::unix::fs::symlink("nested/deeper/small.txt", sandbox.path("data/link"))
        .expect("symlink");
    sandbox
}

/// Runs the binary with `env` and expects success; `log` is the server's, for failures.
fn ok(sandbox: &Sandbox, env: &[(&str, OsString)], log: &dyn Fn() -> String, args: &[&str]) -> Run {
    let mut command = sandbox.command(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let run = Run::from(command.output().expect("run backplan"));
    let show = || {
        format!(
            "backplan {}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- server:\n{}",
            args.join(" "),
            run.status,
            run.stdout,
            run.stderr,
            log()
        )
    };
    assert_eq!(run.status, Some(0), "{}", show());
    assert!(!run.stderr.contains("panicked"), "{}", show());
    run
}

/// init, apply, snapshots, restore and verify through the binary; the restored tree
/// must equal `data/` byte for byte.
fn round_trip(sandbox: &Sandbox, env: &[(&str, OsString)], log: &dyn Fn() -> String) {
    let init = ok(sandbox, env, log, &["init"]);
    assert!(
        init.stdout.contains("remote: repository created"),
        "{}",
        init.stdout
    );
    let apply = ok(sandbox, env, log, &["apply"]);
    for expected in ["✓ backup data → remote", "0 failed"] {
        assert!(apply.stdout.contains(expected), "apply: {}", apply.stdout);
    }
    let snapshots = ok(sandbox, env, log, &["snapshots", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&snapshots.stdout).expect("JSON");
    let list = json["destinations"]["remote"]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots for remote: {json}"));
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["status"], "complete", "{json}");

    let key = crate::common::secret_key();
    let key = key.to_str().expect("a UTF-8 path");
    ok(
        sandbox,
        env,
        log,
        &["restore", "--target", "data=restored", "--secret-key", key],
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
    let verify = ok(
        sandbox,
        env,
        log,
        &["verify", "--read-data", "--secret-key", key],
    );
    assert!(
        verify.stdout.contains("✓ remote"),
        "verify: {}",
        verify.stdout
    );
}

/// The names of the files under `dir`, recursively, relative to it.
fn stored(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File(_)))
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sftp_round_trip_backs_up_and_restores_through_sshd() {
    let Some(server) = SftpServer::start() else {
        return;
    };
    // A folder that does not exist yet: init makes it.
    let root = server.files().join("backups/repo");
    let sandbox = sandbox_with_data(&format!(
        "    type: opendal\n    scheme: sftp\n    options:\n      endpoint: {}\n      key: {}\n      root: {}\n",
        server.endpoint(),
        server.key().display(),
        root.display(),
    ));
    let env = [("PATH", server.path_env())];
    round_trip(&sandbox, &env, &|| server.log());
    // It went through the server into the folder it serves, names and contents hidden.
    let files = stored(&root);
    assert!(files.contains(&"backplan.json".to_string()), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("packs/")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("big.bin")), "{files:?}");
    // The host key was checked: the session used the test's known_hosts strictly.
    assert!(
        server.log().contains("Accepted publickey"),
        "{}",
        server.log()
    );
}

#[test]
fn sftp_without_the_ssh_client_fails_with_bp250() {
    let sandbox = Sandbox::with_policy(&policy(
        "    type: opendal\n    scheme: sftp\n    options:\n      endpoint: backup@127.0.0.1\n",
    ));
    let empty = tempfile::tempdir().expect("a temporary folder");
    let run = Run::from(
        sandbox
            .command(&["init"])
            .env("PATH", empty.path())
            .output()
            .expect("run backplan"),
    );
    assert_ne!(run.status, Some(0), "{}", run.all());
    assert!(run.all().contains("BP250"), "{}", run.all());
    assert!(run.all().contains("`ssh`"), "{}", run.all());
}

const DAV_PASSWORD_VAR: &str = "BACKPLAN_TEST_DAV_PASSWORD";

#[test]
fn webdav_round_trip_backs_up_and_restores_with_the_password_from_a_file() {
    let Some(server) = WebdavServer::start() else {
        return;
    };
    let sandbox = sandbox_with_data(&format!(
        "    type: opendal\n    scheme: webdav\n    options:\n      endpoint: {}\n      root: /backups/repo\n      username: {}\n      password_file: dav.password\n",
        server.endpoint(),
        webdav::USER,
    ));
    sandbox.write("dav.password", &format!("{}\n", webdav::PASSWORD));
    round_trip(&sandbox, &[], &|| server.log());
    let files = stored(&server.files().join("backups/repo"));
    assert!(files.contains(&"backplan.json".to_string()), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("packs/")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("big.bin")), "{files:?}");
}

#[test]
fn webdav_with_a_wrong_password_fails_with_a_code_and_never_shows_it() {
    let Some(server) = WebdavServer::start() else {
        return;
    };
    let sandbox = Sandbox::with_policy(&policy(&format!(
        "    type: opendal\n    scheme: webdav\n    options:\n      endpoint: {}\n      username: {}\n      password: ${{env:{DAV_PASSWORD_VAR}}}\n",
        server.endpoint(),
        webdav::USER,
    )));
    let wrong = "not-the-webdav-password-42";
    let run = Run::from(
        sandbox
            .command(&["init"])
            .env(DAV_PASSWORD_VAR, wrong)
            .output()
            .expect("run backplan"),
    );
    assert_ne!(run.status, Some(0), "{}", run.all());
    assert!(run.all().contains("BP2"), "{}", run.all());
    assert!(!run.all().contains(wrong), "{}", run.all());
    // Nothing was written.
    assert!(stored(&server.files()).is_empty());
}

const AZURE_KEY_VAR: &str = "BACKPLAN_TEST_AZURE_ACCOUNT_KEY";

#[test]
fn azblob_round_trip_backs_up_and_restores_through_azurite() {
    let Some(server) = AzuriteServer::start() else {
        return;
    };
    server.create_container("backups");
    let sandbox = sandbox_with_data(&format!(
        "    type: opendal\n    scheme: azblob\n    options:\n      container: backups\n      endpoint: {}\n      account_name: {}\n      account_key: ${{env:{AZURE_KEY_VAR}}}\n      root: /hosts/app\n",
        server.endpoint(),
        azurite::ACCOUNT,
    ));
    let env = [(AZURE_KEY_VAR, OsString::from(azurite::ACCOUNT_KEY))];
    round_trip(&sandbox, &env, &|| server.log());
    // The objects are in the container, under the root, names hidden.
    let op = opendal::Operator::new(
        opendal::services::Azblob::default()
            .container("backups")
            .endpoint(&server.endpoint())
            .account_name(azurite::ACCOUNT)
            .account_key(azurite::ACCOUNT_KEY)
            .root("/hosts/app"),
    )
    .expect("an azblob operator");
    let files: Vec<String> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { op.list_with("").recursive(true).await })
        .expect("list the container")
        .into_iter()
        .filter(|e| e.metadata().is_file())
        .map(|e| e.path().to_string())
        .collect();
    assert!(files.contains(&"backplan.json".to_string()), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("packs/")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("big.bin")), "{files:?}");
}

#[test]
fn the_exclusive_lock_on_webdav_without_create_if_absent_has_at_most_one_holder() {
    let Some(server) = WebdavServer::start() else {
        return;
    };
    // As backplan builds it: with retries of temporary failures (a lock deleted while
    // a racer reads it can end the response early).
    let operator = || {
        backplan::repo::resilient(
            "dav",
            opendal::Operator::new(
                opendal::services::Webdav::default()
                    .endpoint(&server.endpoint())
                    .username(webdav::USER)
                    .password(webdav::PASSWORD)
                    .root("/locks"),
            )
            .expect("a webdav operator"),
        )
    };
    // The fallback (look, write, read back) is what runs here.
    assert!(!operator().info().capability().write_with_if_not_exists);
    let (first, second) = (Repo::new("dav", operator()), Repo::new("dav", operator()));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let held = lock::acquire(&first, LockKind::Exclusive)
                .await
                .expect("an exclusive lock on a free repository");
            for kind in [LockKind::Exclusive, LockKind::Shared] {
                let f = lock::acquire(&second, kind)
                    .await
                    .expect_err("a second lock while an exclusive one is held");
                assert_eq!(f.code, Code::RepositoryLocked, "{}", f.message);
            }
            held.release().await.expect("release");
            assert!(first.locks().await.expect("list locks").is_empty());
            let again = lock::acquire(&second, LockKind::Exclusive)
                .await
                .expect("the exclusive lock once released");
            again.release().await.expect("release");

            // Racing exclusive acquirers: never two holders (each lock has its own
            // name, and each racer looks after it writes).
            let repos: Vec<Repo> = (0..4).map(|_| Repo::new("dav", operator())).collect();
            let mut granted = 0;
            for round in 0..10 {
                let results = futures::future::join_all(
                    repos.iter().map(|r| lock::acquire(r, LockKind::Exclusive)),
                )
                .await;
                let mut held = Vec::new();
                for result in results {
                    match result {
                        Ok(h) => held.push(h),
                        Err(f) => assert_eq!(f.code, Code::RepositoryLocked, "{}", f.message),
                    }
                }
                assert!(held.len() <= 1, "round {round}: {} holders", held.len());
                granted += held.len();
                for h in held {
                    h.release().await.expect("release");
                }
                let left = first.locks().await.expect("list locks");
                assert!(left.is_empty(), "round {round}: locks left: {left:?}");
            }
            assert!(granted > 0, "no racer ever got the lock");
        });
}

#[test]
fn an_unknown_known_hosts_strategy_is_bp103_with_the_choices() {
    let (text, report) = report(
        "    type: opendal\n    scheme: sftp\n    options:\n      endpoint: backup@nas\n      known_hosts_strategy: yes\n",
    );
    let error = only_error(&report);
    assert_eq!(error.problem.code.id(), "BP103");
    assert_eq!(line_of(&text, error).1, "      known_hosts_strategy: yes");
    assert_eq!(
        error.problem.help.as_deref(),
        Some("one of: strict, add, accept")
    );
}
