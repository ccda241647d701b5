//! End-to-end tests of the repository through the binary: what `apply` writes, what
//! `restore` gives back, what the storage provider sees, and what survives damage and
//! crashes. Every test runs in its own temporary folder (see `common`), with the
//! debug binary, the demo recipient and its published secret key.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Run, Sandbox, secret_key};
use chrono::{SecondsFormat, Utc};
use filetime::FileTime;
use serde_json::Value;

// --- policies -----------------------------------------------------------------------

/// A policy with a repository key, `retention`, the given destinations and sources
/// (both YAML blocks indented as under their keys).
fn policy_with(retention: &str, destinations: &str, sources: &str) -> String {
    format!(
        r#"version: 1

encryption:
  recipients:
    - keys/demo-recipient.asc
  repository_key_file: repo.key

defaults:
  schedule: "@daily"
  timezone: UTC
  retention:
{retention}
destinations:
{destinations}
sources:
{sources}"#
    )
}

const RETENTION: &str = "    keep_daily: 7\n    min_keep: 3\n";
const LOCAL: &str = "  local:\n    type: fs\n    root: backups\n";

/// One `local` destination and the usual retention.
fn policy(sources: &str) -> String {
    policy_with(RETENTION, LOCAL, sources)
}

/// A `files` source named `name` over the folder `path`.
fn files_source(name: &str, path: &str) -> String {
    format!("  {name}:\n    type: files\n    path: {path}\n")
}

/// A `config` source named `name` over one file.
fn config_source(name: &str, path: &str) -> String {
    format!("  {name}:\n    type: config\n    paths:\n      - {path}\n")
}

fn secret() -> String {
    secret_key().display().to_string()
}

/// An RFC 3339 time `hours` from now: `--now` for a backup that is due again.
fn hours_from_now(hours: i64) -> String {
    (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

// --- data ---------------------------------------------------------------------------

/// `n` random bytes from the kernel: incompressible, and new on every run.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Streams `n` random bytes into `path`.
fn write_random(path: &Path, n: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    let mut out = fs::File::create(path).expect("create file");
    let copied = io::copy(
        &mut fs::File::open("/dev/urandom")
            .expect("open /dev/urandom")
            .take(n),
        &mut out,
    )
    .expect("copy random bytes");
    assert_eq!(copied, n);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("set mode");
}

/// A fixed time in the past, with nanoseconds.
fn past(seconds: i64, nanos: u32) -> FileTime {
    FileTime::from_unix_time(seconds, nanos)
}

/// What a restore must reproduce of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        size: u64,
        blake3: String,
    },
    Symlink {
        target: PathBuf,
        mtime: (i64, i64),
    },
}

/// Every entry under `root` (not `root` itself), by relative path.
fn nodes(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            let mtime = (meta.mtime(), meta.mtime_nsec());
            let mode = meta.mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Symlink {
                    target: fs::read_link(&path).expect("read link"),
                    mtime,
                }
            } else if meta.is_dir() {
                walk(root, &path, out);
                Node::Dir { mode, mtime }
            } else {
                let bytes = fs::read(&path).expect("read file");
                Node::File {
                    mode,
                    mtime,
                    size: bytes.len() as u64,
                    blake3: blake3::hash(&bytes).to_hex().to_string(),
                }
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that `restored` holds exactly what `original` holds, entry by entry.
fn assert_same_tree(original: &Path, restored: &Path) {
    let want = nodes(original);
    let got = nodes(restored);
    assert!(!want.is_empty(), "{} is empty", original.display());
    let want_paths: BTreeSet<&String> = want.keys().collect();
    let got_paths: BTreeSet<&String> = got.keys().collect();
    assert_eq!(
        want_paths, got_paths,
        "the restore holds other entries than the original"
    );
    for (path, node) in &want {
        assert_eq!(
            Some(node),
            got.get(path),
            "{path} differs after the restore"
        );
    }
}

/// Every file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The path of an object relative to its destination folder (`packs/ab/ab…`).
fn object_name(destination: &Path, object: &Path) -> String {
    object
        .strip_prefix(destination)
        .expect("inside the destination")
        .to_string_lossy()
        .into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Flips one bit of the byte in the middle of a file.
fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).expect("read object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).expect("write object");
}

/// The inventory as `snapshots --format json` prints it.
fn inventory(sandbox: &Sandbox) -> Value {
    let run = sandbox.run(&["snapshots", "--format", "json"]).check();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("snapshots is not JSON ({e}):\n{}", run.stdout))
}

/// The snapshots of one destination in the inventory.
fn snapshots_of<'a>(inventory: &'a Value, destination: &str) -> &'a [Value] {
    inventory["destinations"][destination]["snapshots"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// The `(source, status)` of every snapshot of one destination, sorted.
fn sources_and_statuses(inventory: &Value, destination: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = snapshots_of(inventory, destination)
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `text` without whitespace and miette's frame, so that a name the diagnostic
/// renderer wrapped over two lines is found whole.
fn unwrapped(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

/// Whether a command's output names `object`, however the lines were wrapped.
fn names(run: &Run, object: &str) -> bool {
    unwrapped(&run.all()).contains(&unwrapped(object))
}

fn verify_read_data(sandbox: &Sandbox) -> Run {
    sandbox
        .run(&["verify", "--read-data", "--secret-key", &secret()])
        .check()
}

// --- the quick start round trip -----------------------------------------------------

/// A folder with what a restore must keep: nested and empty directories, symlinks
/// with relative and absolute targets, Unicode names, modes, mtimes with
/// nanoseconds, a 5 MiB random file and an empty file.
fn make_rich_folder(root: &Path) {
    let files: &[(&str, &[u8], u32)] = &[
        ("docs/reports/2025/q3-summary.txt", b"revenue up\n", 0o640),
        ("docs/readme.md", b"# readme\n", 0o644),
        ("bin/run-me.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("secrets/private-notes.txt", b"only for me\n", 0o600),
        ("Überraschung 📦.txt", "Überraschung!\n".as_bytes(), 0o644),
        ("日本語/ファイル", "こんにちは\n".as_bytes(), 0o640),
        ("zero-bytes.dat", b"", 0o644),
    ];
    for (rel, bytes, mode) in files {
        let path = root.join(rel);
        write_bytes(&path, bytes);
        set_mode(&path, *mode);
    }
    let big = root.join("media/random-5mib.bin");
    write_bytes(&big, &random_bytes(5 << 20));
    set_mode(&big, 0o600);
    fs::create_dir_all(root.join("docs/reports/empty-folder")).expect("empty folder");
    fs::create_dir_all(root.join("links")).expect("links folder");
    symlink(
        "../docs/reports/2025/q3-summary.txt",
        root.join("links/relative-link"),
    )
    .expect("relative symlink");
    symlink(
        "/nonexistent-backplan-target/absolute/file",
        root.join("links/absolute-link"),
    )
    .expect("absolute symlink");
    set_mode(&root.join("secrets"), 0o700);
    set_mode(&root.join("docs/reports/empty-folder"), 0o750);

    // Fixed past mtimes, each with its own nanoseconds; directories last, deepest
    // first, since writing into a directory changes its mtime.
    let mut all = nodes(root).into_keys().collect::<Vec<_>>();
    all.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, rel) in all.iter().enumerate() {
        let path = root.join(rel);
        let time = past(1_500_000_000 + 86_400 * i as i64, 123_456_789 + i as u32);
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            filetime::set_symlink_file_times(&path, time, time).expect("symlink mtime");
        } else if !meta.is_dir() {
            filetime::set_file_mtime(&path, time).expect("file mtime");
        }
    }
    for (i, rel) in all.iter().enumerate() {
        let path = root.join(rel);
        if fs::symlink_metadata(&path).expect("metadata").is_dir() {
            let time = past(1_400_000_000 + 86_400 * i as i64, 987_654_321 - i as u32);
            filetime::set_file_mtime(&path, time).expect("directory mtime");
        }
    }
}

#[test]
fn quick_start_round_trip_restores_bytes_modes_mtimes_symlinks_and_empty_dirs() {
    let sources = format!(
        "{}{}",
        config_source("config", "config/app.env"),
        files_source("data", "data")
    );
    let sandbox = Sandbox::with_policy(&policy(&sources));
    sandbox.write(
        "config/app.env",
        "APP_URL=https://example.invalid\nSESSION_SECRET=round-trip\n",
    );
    make_rich_folder(&sandbox.path("data"));
    // The config file's recorded mtime is checked too.
    filetime::set_file_mtime(sandbox.path("config/app.env"), past(1_600_000_000, 42))
        .expect("mtime");

    sandbox.run(&["init"]).stdout("Made repository key").check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("never backed up")
        .stdout("Plan: 2 backups")
        .check();
    sandbox
        .run(&["apply"])
        .stdout("✓ backup config → local")
        .stdout("✓ backup data → local")
        .stdout("Apply: 2 done, 0 failed, 0 skipped.")
        .check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("No changes")
        .check();
    let inv = inventory(&sandbox);
    assert_eq!(
        sources_and_statuses(&inv, "local"),
        [
            ("config".to_string(), "complete".to_string()),
            ("data".to_string(), "complete".to_string())
        ]
    );
    sandbox.run(&["verify"]).stdout("✓ local").check();
    verify_read_data(&sandbox);
    sandbox
        .run(&[
            "restore",
            "--plan",
            "--target",
            "data=restored/data",
            "--target",
            "config=restored/config",
        ])
        .stdout("data")
        .stdout("restored/data")
        .check();
    assert!(
        !sandbox.path("restored").exists(),
        "restore --plan wrote something"
    );

    sandbox
        .run(&[
            "restore",
            "--secret-key",
            &secret(),
            "--target",
            "data=restored/data",
            "--target",
            "config=restored/config",
        ])
        .stdout("Restore: 2 steps done.")
        .check();
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored/data"));

    // A config source keeps the absolute path of each file under its target.
    let original = fs::canonicalize(sandbox.path("config/app.env")).expect("config path");
    let restored = sandbox
        .path("restored/config")
        .join(original.strip_prefix("/").expect("absolute"));
    assert_eq!(
        fs::read(&restored).expect("restored config file"),
        fs::read(&original).expect("config file")
    );
    let mtime = FileTime::from_last_modification_time(&fs::metadata(&restored).expect("meta"));
    assert_eq!(mtime, past(1_600_000_000, 42));
}

// --- incremental --------------------------------------------------------------------

#[test]
fn a_second_apply_reads_only_the_changed_file_and_its_restore_has_the_change() {
    let sandbox = Sandbox::initialised(&policy(&files_source("data", "data")));
    for (i, name) in ["one.txt", "two.txt", "three.txt", "four.bin"]
        .iter()
        .enumerate()
    {
        write_bytes(
            &sandbox.path(&format!("data/{name}")),
            &random_bytes(4096 * (i + 1)),
        );
    }
    sandbox
        .run(&["apply"])
        .stdout("4 files, 0 unchanged")
        .check();

    let changed = b"the second file, rewritten after the first apply\n";
    write_bytes(&sandbox.path("data/two.txt"), changed);
    let tomorrow = hours_from_now(25);
    let run = sandbox
        .run(&["apply", "--now", &tomorrow, "--format", "json"])
        .check();
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{}", run.stdout));
    let outcome = &report["outcomes"][0];
    assert_eq!(outcome["status"], "done", "{}", run.stdout);
    assert_eq!(
        outcome["detail"],
        serde_json::json!({"kind": "backup", "stored": "files", "files": 4, "unchanged": 3}),
        "the three others were not read again"
    );
    assert_eq!(
        outcome["bytes_read"].as_u64(),
        Some(changed.len() as u64),
        "only the changed file was read"
    );

    let inv = inventory(&sandbox);
    assert_eq!(snapshots_of(&inv, "local").len(), 2);
    // The plan fetches the whole snapshot, not the little it stored.
    let plan = sandbox
        .run(&[
            "restore",
            "--plan",
            "--format",
            "json",
            "--target",
            "data=restored",
        ])
        .check();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("the plan is JSON");
    let size = 4096 + changed.len() as u64 + 4096 * 3 + 4096 * 4;
    assert_eq!(plan["fetch"]["local"].as_u64(), Some(size), "{plan}");
    sandbox
        .run(&[
            "restore",
            "--secret-key",
            &secret(),
            "--target",
            "data=restored",
        ])
        .check();
    assert_eq!(
        fs::read(sandbox.path("restored/two.txt")).expect("restored file"),
        changed
    );
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
}

// --- what the storage provider sees --------------------------------------------------

#[test]
fn the_repository_holds_no_file_names_no_config_plaintext_and_no_data_path() {
    const SECRET_LINE: &str = "SESSION_SECRET=s3cr3t-7c9e1f42-d00d-4e8a-unique";
    const CONTENT_LINE: &str = "plaintext-marker-b4c0ffee-in-a-data-file";
    let sources = format!(
        "{}{}",
        config_source("settings", "cfg-folder-91ab/production-settings.env"),
        files_source("vault", "confidential-vault-8d1e")
    );
    let sandbox = Sandbox::initialised(&policy(&sources));
    sandbox.write(
        "cfg-folder-91ab/production-settings.env",
        &format!("APP_URL=https://payroll.example.invalid\n{SECRET_LINE}\n"),
    );
    let names = [
        "payroll-2026-Q4-board.xlsx",
        "merger-plans-zeta",
        "Überraschung 📦.txt",
        "日本語",
        "ファイル",
        "employee-reviews.docx",
    ];
    let data = sandbox.path("confidential-vault-8d1e");
    write_bytes(
        &data.join("payroll-2026-Q4-board.xlsx"),
        CONTENT_LINE.as_bytes(),
    );
    write_bytes(
        &data.join("merger-plans-zeta/employee-reviews.docx"),
        &random_bytes(100_000),
    );
    write_bytes(&data.join("Überraschung 📦.txt"), b"surprise\n");
    write_bytes(&data.join("日本語/ファイル"), "中身\n".as_bytes());
    sandbox
        .run(&["apply"])
        .stdout("Apply: 2 done, 0 failed, 0 skipped.")
        .check();

    let data_path = fs::canonicalize(&data).expect("data path");
    let config_path = fs::canonicalize(sandbox.path("cfg-folder-91ab")).expect("config path");
    let mut needles: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (format!("file name {n:?}"), n.as_bytes().to_vec()))
        .collect();
    for (what, text) in [
        ("the config file name", "production-settings.env"),
        ("the config secret", SECRET_LINE),
        (
            "the config secret's value",
            "s3cr3t-7c9e1f42-d00d-4e8a-unique",
        ),
        ("a data file's content", CONTENT_LINE),
        ("the data folder's name", "confidential-vault-8d1e"),
        ("the config folder's name", "cfg-folder-91ab"),
    ] {
        needles.push((what.to_string(), text.as_bytes().to_vec()));
    }
    for (what, path) in [
        ("the data folder's path", &data_path),
        ("the config folder's path", &config_path),
    ] {
        needles.push((what.to_string(), path.to_string_lossy().as_bytes().to_vec()));
    }

    // The search itself works: the data holds what is looked for.
    let plain = fs::read(data.join("payroll-2026-Q4-board.xlsx")).expect("data file");
    assert!(contains(&plain, CONTENT_LINE.as_bytes()));

    let destination = sandbox.path("backups");
    let objects = files_under(&destination);
    assert!(
        objects
            .iter()
            .any(|p| object_name(&destination, p).starts_with("packs/")),
        "the apply wrote packs: {objects:?}"
    );
    for object in &objects {
        let bytes = fs::read(object).expect("read object");
        let name = object_name(&destination, object);
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{name} holds {what} in plain text"
            );
            assert!(
                !contains(name.as_bytes(), needle),
                "the object name {name} holds {what}"
            );
        }
    }
}

// --- damage -------------------------------------------------------------------------

/// A backed-up sandbox with a config source and a data folder of a few files.
fn backed_up() -> Sandbox {
    let sources = format!(
        "{}{}",
        config_source("config", "config/app.env"),
        files_source("data", "data")
    );
    let sandbox = Sandbox::initialised(&policy(&sources));
    sandbox.write("config/app.env", "SESSION_SECRET=damage-tests\n");
    write_bytes(&sandbox.path("data/big.bin"), &random_bytes(1 << 20));
    write_bytes(&sandbox.path("data/small.txt"), b"small\n");
    sandbox.run(&["apply"]).check();
    verify_read_data(&sandbox);
    sandbox
}

/// The objects of one kind (`packs`, `snapshots`, `trees`, `index`), largest first.
fn objects(sandbox: &Sandbox, kind: &str) -> Vec<PathBuf> {
    let mut found = files_under(&sandbox.path("backups").join(kind));
    found.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    assert!(!found.is_empty(), "no {kind} objects");
    found
}

/// The data source's object of a per-snapshot kind (`snapshots`, `trees`).
fn data_object(sandbox: &Sandbox, kind: &str) -> PathBuf {
    objects(sandbox, kind)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-data-"))
        .unwrap_or_else(|| panic!("no {kind} object of the data source"))
}

/// `verify --read-data` fails and names `object`.
fn verify_names(sandbox: &Sandbox, object: &str) {
    let run = sandbox
        .run(&["verify", "--read-data", "--secret-key", &secret()])
        .fails()
        .stderr("BP228")
        .check();
    assert!(
        names(&run, object),
        "verify does not name {object}:\n{}",
        run.all()
    );
}

/// A restore of everything into scratch targets fails and names `object`.
fn restore_names(sandbox: &Sandbox, object: &str) {
    let run = sandbox
        .run(&[
            "restore",
            "--secret-key",
            &secret(),
            "--target",
            "data=restored/data",
            "--target",
            "config=restored/config",
        ])
        .fails()
        .check();
    assert!(
        names(&run, object),
        "restore does not name {object}:\n{}",
        run.all()
    );
}

#[test]
fn a_flipped_byte_in_a_pack_is_named_by_verify_and_restore() {
    let sandbox = backed_up();
    // The largest pack holds the 1 MiB file.
    let pack = objects(&sandbox, "packs").remove(0);
    let name = object_name(&sandbox.path("backups"), &pack);
    flip_a_byte(&pack);
    verify_names(&sandbox, &name);
    restore_names(&sandbox, &name);
}

#[test]
fn a_restore_uses_a_pack_damaged_only_where_it_reads_nothing_and_verify_still_names_it() {
    let sandbox = backed_up();
    let pack = objects(&sandbox, "packs").remove(0);
    let name = object_name(&sandbox.path("backups"), &pack);
    // The pack's leading magic: no chunk and no key set lies there.
    let mut bytes = fs::read(&pack).expect("read the pack");
    assert!(bytes.starts_with(b"BPPACK1\n"));
    bytes[0] ^= 0x01;
    fs::write(&pack, bytes).expect("damage the pack");
    restore_identically(&sandbox, "data", &secret());
    verify_names(&sandbox, &name);
}

#[test]
fn a_flipped_byte_in_a_snapshot_header_is_named_by_verify_and_plan() {
    let sandbox = backed_up();
    let header = data_object(&sandbox, "snapshots");
    let name = object_name(&sandbox.path("backups"), &header);
    flip_a_byte(&header);
    verify_names(&sandbox, &name);
    let run = sandbox.run(&["plan"]).check();
    assert!(
        names(&run, &name) && run.all().contains("BP220"),
        "plan does not warn about {name}:\n{}",
        run.all()
    );
}

#[test]
fn a_flipped_byte_in_a_tree_is_named_by_verify_and_restore() {
    let sandbox = backed_up();
    let tree = data_object(&sandbox, "trees");
    let name = object_name(&sandbox.path("backups"), &tree);
    flip_a_byte(&tree);
    verify_names(&sandbox, &name);
    restore_names(&sandbox, &name);
}

#[test]
fn a_flipped_byte_in_an_index_object_is_named_by_verify_and_restore() {
    let sandbox = backed_up();
    let index = objects(&sandbox, "index").remove(0);
    let name = object_name(&sandbox.path("backups"), &index);
    flip_a_byte(&index);
    verify_names(&sandbox, &name);
    restore_names(&sandbox, &name);
}

// --- crashes ------------------------------------------------------------------------

/// When a kill lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// This long after the start.
    After(Duration),
    /// Once the run has started writing this many packs.
    Packs(usize),
}

fn count_files(dir: &Path) -> usize {
    files_under(dir).len()
}

/// Starts `args` in the background and returns it once `due` holds (given the time
/// since the start); fails when the command ends first, or after two minutes.
fn spawn_until(
    sandbox: &Sandbox,
    args: &[&str],
    what: &str,
    mut due: impl FnMut(Duration) -> bool,
) -> std::process::Child {
    let mut child = sandbox
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backplan");
    let started = Instant::now();
    while !due(started.elapsed()) {
        if let Some(status) = child.try_wait().expect("poll backplan") {
            panic!("`{}` ended ({status}) before {what}", args.join(" "));
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what} never came"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

#[test]
fn kill_9_during_apply_leaves_no_half_snapshot_and_the_next_apply_completes() {
    const BIG_FILES: u64 = 25;
    const BIG_FILE_SIZE: u64 = 8 << 20; // 200 MiB in all
    let sources = format!(
        "{}{}",
        files_source("big", "big"),
        files_source("notes", "notes")
    );
    let sandbox = Sandbox::initialised(&policy(&sources));
    for i in 0..BIG_FILES {
        write_random(
            &sandbox.path(&format!("big/part-{i:02}.bin")),
            BIG_FILE_SIZE,
        );
    }
    sandbox.write("notes/todo.txt", "water the plants\n");
    let packs = sandbox.path("backups/packs");
    let locks = sandbox.path("backups/locks");

    let points = [
        KillPoint::After(Duration::from_millis(50)),
        KillPoint::Packs(1),
        KillPoint::Packs(5),
    ];
    let mut pids = Vec::new();
    for point in points {
        let packs_before = count_files(&packs);
        let mut child = spawn_until(
            &sandbox,
            &["apply"],
            &format!("the kill at {point:?}"),
            |elapsed| match point {
                KillPoint::After(d) => elapsed >= d,
                KillPoint::Packs(n) => count_files(&packs) >= packs_before + n,
            },
        );
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap apply");
        assert_eq!(
            status.signal(),
            Some(9),
            "the apply at {point:?} was killed, not finished: {status}"
        );
        let pid = child.id();
        pids.push(pid);

        // No snapshot of the killed source; whatever else is listed is complete.
        let inv = inventory(&sandbox);
        for (source, status) in sources_and_statuses(&inv, "local") {
            assert_ne!(source, "big", "a killed backup left a snapshot ({point:?})");
            assert_eq!(status, "complete", "{source} after the kill at {point:?}");
        }
        assert!(
            inv["destinations"]["local"]["damaged"].is_null(),
            "damaged objects after the kill at {point:?}: {inv}"
        );
        sandbox.run(&["verify"]).check();
        verify_read_data(&sandbox);

        // The killed process's lock stays, and is stale at once: its process is gone
        // from this host. Plan says so before it expires; unlock removes it.
        let lock_left = count_files(&locks) > 0;
        if let KillPoint::Packs(_) = point {
            assert!(lock_left, "the backup wrote packs without a lock");
        }
        if lock_left {
            sandbox
                .run(&["plan"])
                .stdout("BP211")
                .stdout("stale shared lock")
                .stdout(&format!("pid {pid}"))
                .stdout("that process is gone")
                .check();
            sandbox
                .run(&["unlock"])
                .stdout("removed locks/shared-")
                .stdout(&format!("pid {pid}"))
                .stdout("its process is gone from this host")
                .check();
            assert_eq!(
                count_files(&locks),
                0,
                "unlock left the dead process's lock"
            );
        }
    }
    assert!(
        count_files(&packs) > 0,
        "no kill landed while packs were written"
    );

    sandbox
        .run(&["apply"])
        .stdout("✓ backup big → local")
        .stdout("0 failed")
        .check();
    let inv = inventory(&sandbox);
    assert_eq!(
        sources_and_statuses(&inv, "local"),
        [
            ("big".to_string(), "complete".to_string()),
            ("notes".to_string(), "complete".to_string())
        ]
    );
    assert_eq!(count_files(&locks), 0, "the apply released its lock");
    verify_read_data(&sandbox);
    sandbox
        .run(&[
            "restore",
            "--secret-key",
            &secret(),
            "--target",
            "big=restored/big",
            "--target",
            "notes=restored/notes",
        ])
        .check();
    assert_same_tree(&sandbox.path("big"), &sandbox.path("restored/big"));
    assert_same_tree(&sandbox.path("notes"), &sandbox.path("restored/notes"));
}

/// `verify --read-data` is clean, and restoring source `name` (backed up from the
/// folder of the same name) into `restored` gives the same tree.
fn verify_and_restore_identically(sandbox: &Sandbox, name: &str) {
    verify_read_data(sandbox);
    restore_identically(sandbox, name, &secret());
}

/// Restoring source `name` (backed up from the folder of the same name) with the
/// secret key file `secret` into `restored` gives the same tree.
fn restore_identically(sandbox: &Sandbox, name: &str, secret: &str) {
    sandbox
        .run(&[
            "restore",
            "--secret-key",
            secret,
            "--target",
            &format!("{name}=restored"),
        ])
        .check();
    assert_same_tree(&sandbox.path(name), &sandbox.path("restored"));
}

// --- retention ----------------------------------------------------------------------

#[test]
fn prune_deletes_the_old_snapshot_collects_its_packs_and_keeps_the_new_one_restorable() {
    let sandbox = Sandbox::initialised(&policy_with(
        "    keep_last: 1\n    min_keep: 1\n",
        LOCAL,
        &files_source("data", "data"),
    ));
    write_bytes(&sandbox.path("data/a.bin"), &random_bytes(300_000));
    write_bytes(&sandbox.path("data/b/c.bin"), &random_bytes(200_000));
    sandbox.run(&["apply"]).check();
    let packs = sandbox.path("backups/packs");
    let first = count_files(&packs);
    assert!(first > 0);

    // Everything changes: the first snapshot's packs hold nothing the second needs.
    write_bytes(&sandbox.path("data/a.bin"), &random_bytes(300_000));
    write_bytes(&sandbox.path("data/b/c.bin"), &random_bytes(200_000));
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .stdout("✓ backup data → local")
        .check();
    let both = count_files(&packs);
    assert!(both > first, "the second backup wrote packs");
    let inv = inventory(&sandbox);
    let mut ids: Vec<(String, String)> = snapshots_of(&inv, "local")
        .iter()
        .map(|s| {
            (
                s["time"].as_str().unwrap_or_default().to_string(),
                s["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2);
    let (old, new) = (ids[0].1.clone(), ids[1].1.clone());

    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("- prune   data")
        .stdout("outside keep_last 1")
        .stdout("Plan: 0 backups, 0 copies, 1 prune")
        .check();
    sandbox
        .run(&["apply", "--max-deletes", "1"])
        .stdout("✓ prune data")
        .stdout("1 snapshots deleted")
        .check();
    let after = count_files(&packs);
    assert!(
        after < both,
        "the prune collected no pack ({both} before, {after} after)"
    );
    let inv = inventory(&sandbox);
    let left: Vec<&str> = snapshots_of(&inv, "local")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(left, [new.as_str()], "the old snapshot {old} went");
    assert!(!sandbox.path(&format!("backups/trees/{old}")).exists());
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("No changes")
        .check();
    verify_and_restore_identically(&sandbox, "data");
}

#[test]
fn prune_repacks_packs_whose_chunks_are_mostly_unreferenced_and_loses_nothing() {
    let sandbox = Sandbox::initialised(&policy_with(
        "    keep_last: 1\n    min_keep: 1\n",
        LOCAL,
        &files_source("data", "data"),
    ));
    // Big files the next snapshot replaces, small ones it keeps, interleaved so that
    // every pack of the first backup holds both.
    let bigs = |sandbox: &Sandbox| {
        for i in 0..12 {
            write_bytes(
                &sandbox.path(&format!("data/{i:02}-a.bin")),
                &random_bytes(400_000),
            );
        }
    };
    bigs(&sandbox);
    for i in 0..12 {
        write_bytes(
            &sandbox.path(&format!("data/{i:02}-b.txt")),
            &random_bytes(3_000),
        );
    }
    sandbox.run(&["apply"]).check();
    let packs = sandbox.path("backups/packs");
    let first: BTreeSet<_> = files_under(&packs).into_iter().collect();

    bigs(&sandbox);
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .check();
    let size = |paths: &BTreeSet<PathBuf>| -> u64 {
        paths
            .iter()
            .map(|p| fs::metadata(p).expect("a pack").len())
            .sum()
    };
    let before = size(&files_under(&packs).into_iter().collect());
    let run = sandbox
        .run(&["apply", "--max-deletes", "1"])
        .stdout("1 snapshots deleted")
        .stdout("repacked into 1)")
        .check();
    assert!(
        !run.stdout.contains("(0 of them repacked"),
        "{}",
        run.stdout
    );
    let after: BTreeSet<_> = files_under(&packs).into_iter().collect();
    assert!(
        after.is_disjoint(&first),
        "every pack of the first backup is gone"
    );
    assert!(
        size(&after) + 4_000_000 < before,
        "the replaced files' chunks were freed ({before} before, {} after)",
        size(&after)
    );
    verify_and_restore_identically(&sandbox, "data");
}

// --- repair -------------------------------------------------------------------------

const ONE_AND_TWO: &str =
    "  one:\n    type: fs\n    root: one\n  two:\n    type: fs\n    root: two\n";

/// Config and data backed up to `one` and `two` (the same packs on both).
fn backed_up_twice() -> Sandbox {
    let sources = format!(
        "{}{}",
        config_source("config", "config/app.env"),
        files_source("data", "data")
    );
    let sandbox = Sandbox::initialised(&policy_with(RETENTION, ONE_AND_TWO, &sources));
    sandbox.write("config/app.env", "SESSION_SECRET=lost-packs\n");
    write_bytes(&sandbox.path("data/big.bin"), &random_bytes(3 << 20));
    write_bytes(&sandbox.path("data/notes/small.txt"), b"small\n");
    sandbox
        .run(&["apply"])
        .stdout("✓ backup data → one, two")
        .check();
    sandbox
}

#[test]
fn a_rebuilt_host_recovers_its_repository_key_from_the_surviving_destination() {
    // The host is gone with its repository key file and the destination on its disk.
    let sandbox = backed_up_twice();
    let original = sandbox.read("repo.key");
    fs::remove_file(sandbox.path("repo.key")).expect("lose the key file");
    fs::remove_dir_all(sandbox.path("one")).expect("lose destination one");

    // Another recipient's secret key does not open the copy: nothing is written.
    let foreign = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys/gnupg-2.2.secret.asc")
        .display()
        .to_string();
    sandbox
        .run(&["init", "--secret-key", &foreign])
        .fails()
        .stderr("BP")
        .check();
    assert!(!sandbox.path("repo.key").exists(), "a key file was written");

    sandbox
        .run(&["init", "--secret-key", &secret()])
        .stdout("Recovered repository key ")
        .stdout(" from two into ")
        .stdout("one: repository created")
        .stdout("two: repository exists")
        .check();
    assert_eq!(sandbox.read("repo.key"), original, "not the same key");

    // The next backup deduplicates against what the host wrote before: the 3 MiB
    // file is not stored again on two.
    sandbox
        .run(&["apply", "--now", "2099-01-01T00:00:00Z"])
        .stdout("✓ backup data → one, two")
        .check();
    let stored: u64 = files_under(&sandbox.path("two/packs"))
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        stored < (5 << 20),
        "the data was stored again: {stored} bytes in packs"
    );

    // Without a secret key, init makes a new key (a new chunk-id space).
    fs::remove_file(sandbox.path("repo.key")).expect("lose the key file again");
    sandbox.run(&["init"]).stdout("Made repository key").check();
    assert_ne!(sandbox.read("repo.key"), original);
}

#[test]
fn a_snapshot_missing_on_one_destination_is_copied_back_from_the_other() {
    let sandbox = backed_up_twice();

    let header = files_under(&sandbox.path("two/snapshots"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-data-"))
        .expect("the data snapshot on two");
    let id = header
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    fs::remove_file(&header).expect("delete the header");
    fs::remove_file(sandbox.path(&format!("two/trees/{id}"))).expect("delete the tree");

    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("> copy    data")
        .stdout("one → two")
        .stdout("missing on two")
        .stdout("Plan: 0 backups, 1 copy, 0 prunes.")
        .check();
    sandbox
        .run(&["apply"])
        .stdout("✓ copy data")
        .stdout("Apply: 1 done, 0 failed, 0 skipped.")
        .check();
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("No changes")
        .check();
    assert!(sandbox.path(&format!("two/snapshots/{id}")).is_file());
    let verified = verify_read_data(&sandbox);
    for destination in ["one", "two"] {
        assert!(
            verified
                .stdout
                .contains(&format!("✓ {destination}: 2 snapshots")),
            "{destination} does not verify clean:\n{}",
            verified.stdout
        );
    }

    let inv = inventory(&sandbox);
    let ids = |d: &str| -> BTreeSet<String> {
        snapshots_of(&inv, d)
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ids("one"), ids("two"));
    assert!(ids("two").contains(&id));
}

// --- locks --------------------------------------------------------------------------

/// The lock objects of the `local` destination.
fn lock_files(sandbox: &Sandbox) -> Vec<PathBuf> {
    files_under(&sandbox.path("backups/locks"))
}

/// Every file of the `local` destination with its bytes: what a command that must
/// change nothing leaves as it found it.
fn destination_files(sandbox: &Sandbox) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(&sandbox.path("backups"))
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("read an object");
            (p, bytes)
        })
        .collect()
}

/// Writes the exclusive lock a running prune of another host holds.
fn hold_exclusive_lock(sandbox: &Sandbox) {
    let now = Utc::now();
    let lock = serde_json::json!({
        "kind": "exclusive",
        "host": "prune-host",
        "pid": 4242,
        "started": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        "expires": (now + chrono::Duration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    sandbox.write("backups/locks/exclusive", &lock.to_string());
}

/// `restore` of both sources of [`backed_up`] into `restored/`, with `extra` flags.
fn restore_args<'a>(secret: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "restore",
        "--secret-key",
        secret,
        "--target",
        "data=restored/data",
        "--target",
        "config=restored/config",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn restore_and_verify_leave_no_lock_behind_when_they_succeed_and_when_they_fail() {
    let sandbox = backed_up();
    let secret = secret();
    sandbox.run(&["verify"]).check();
    assert_eq!(lock_files(&sandbox), Vec::<PathBuf>::new(), "after verify");
    sandbox.run(&restore_args(&secret, &[])).check();
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored/data"));
    assert_eq!(lock_files(&sandbox), Vec::<PathBuf>::new(), "after restore");

    // Refused before anything is written: a restored file changed since.
    sandbox.write("restored/data/small.txt", "changed since\n");
    sandbox
        .run(&restore_args(&secret, &[]))
        .fails()
        .stderr("BP226")
        .check();
    assert_eq!(
        lock_files(&sandbox),
        Vec::<PathBuf>::new(),
        "after a refusal"
    );

    // Failing midway: a damaged pack.
    fs::remove_dir_all(sandbox.path("restored")).expect("remove the restore");
    flip_a_byte(&objects(&sandbox, "packs")[0]);
    sandbox
        .run(&restore_args(&secret, &["--force"]))
        .fails()
        .check();
    assert_eq!(
        lock_files(&sandbox),
        Vec::<PathBuf>::new(),
        "after a failed restore"
    );
    sandbox
        .run(&["verify", "--read-data", "--secret-key", &secret])
        .fails()
        .stderr("BP228")
        .check();
    assert_eq!(
        lock_files(&sandbox),
        Vec::<PathBuf>::new(),
        "after a failed verify"
    );
}

#[test]
fn an_exclusive_lock_makes_restore_and_verify_fail_with_bp222_and_change_nothing() {
    let sandbox = backed_up();
    let secret = secret();
    hold_exclusive_lock(&sandbox);
    let before = destination_files(&sandbox);

    for args in [
        restore_args(&secret, &[]),
        vec!["verify"],
        vec!["verify", "--read-data", "--secret-key", &secret],
    ] {
        let run = sandbox
            .run(&args)
            .fails()
            .stderr("BP222")
            .stderr("an exclusive lock held by prune-host pid 4242")
            .stderr("wait for it to finish")
            .check();
        assert_eq!(
            destination_files(&sandbox),
            before,
            "`{}` changed the destination",
            args.join(" ")
        );
        assert!(!run.stdout.contains('✓'), "{}", run.stdout);
    }
    assert!(
        !sandbox.path("restored").exists(),
        "the refused restore wrote its target"
    );

    // The preview reads without a lock, and writes none.
    sandbox
        .run(&["restore", "--plan", "--secret-key", &secret])
        .stdout("data")
        .check();
    assert_eq!(destination_files(&sandbox), before, "restore --plan wrote");

    // Once the prune is gone, both work again.
    fs::remove_file(sandbox.path("backups/locks/exclusive")).expect("remove the lock");
    sandbox.run(&["verify"]).check();
    sandbox.run(&restore_args(&secret, &[])).check();
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored/data"));
}

#[test]
fn restore_plan_of_a_missing_destination_folder_creates_nothing() {
    let sources = files_source("data", "data");
    let two =
        "  local:\n    type: fs\n    root: backups\n  spare:\n    type: fs\n    root: spare\n";
    let sandbox = Sandbox::initialised(&policy_with(RETENTION, two, &sources));
    write_bytes(&sandbox.path("data/a.txt"), b"a\n");
    sandbox.run(&["apply"]).check();
    fs::remove_dir_all(sandbox.path("spare")).expect("remove spare");
    sandbox
        .run(&["restore", "--plan", "--secret-key", &secret()])
        .check();
    assert!(
        !sandbox.path("spare").exists(),
        "restore --plan created spare/"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_running_restore_or_verify_makes_a_prune_fail_with_bp222_as_a_backup_does() {
    let sandbox = Sandbox::initialised(&policy_with(
        "    keep_last: 1\n    min_keep: 1\n",
        LOCAL,
        &files_source("data", "data"),
    ));
    write_random(&sandbox.path("data/old.bin"), 1 << 20);
    sandbox.run(&["apply"]).check();
    // Enough data that the restore is still reading when it is stopped.
    fs::remove_file(sandbox.path("data/old.bin")).expect("remove");
    write_random(&sandbox.path("data/big.bin"), 48 << 20);
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .check();
    let secret = secret();

    for reader in [
        vec![
            "restore",
            "--secret-key",
            &secret,
            "--target",
            "data=restored",
        ],
        vec!["verify", "--read-data", "--secret-key", &secret],
    ] {
        let mut child = spawn_until(&sandbox, &reader, "its lock", |_| {
            !lock_files(&sandbox).is_empty()
        });
        signal(child.id(), "STOP");
        assert!(
            child.try_wait().expect("poll").is_none(),
            "`{}` ended before it could be stopped",
            reader.join(" ")
        );
        sandbox
            .run(&["apply", "--max-deletes", "1"])
            .status(3)
            .stdout("✗ prune data")
            .stdout("BP222")
            .stdout("a shared lock held by")
            .stdout(&format!("pid {}", child.id()))
            .check();
        assert_eq!(snapshots_of(&inventory(&sandbox), "local").len(), 2);
        signal(child.id(), "CONT");
        let status = child.wait().expect("wait for the reader");
        assert!(status.success(), "`{}`: {status}", reader.join(" "));
        assert_eq!(lock_files(&sandbox), Vec::<PathBuf>::new());
    }
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
    fs::remove_dir_all(sandbox.path("restored")).expect("remove the restore");

    // With the readers gone, the prune runs.
    sandbox
        .run(&["apply", "--max-deletes", "1"])
        .stdout("✓ prune data")
        .check();
    verify_and_restore_identically(&sandbox, "data");
}

// --- locks of processes that are gone -----------------------------------------------

/// This host's name, as a lock records it.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").expect("the host name");
    name.trim().to_string()
}

/// Writes the lock `locks/<name>` of `kind`, naming `host` and `pid`, taken at `started`.
fn write_lock(
    sandbox: &Sandbox,
    name: &str,
    kind: &str,
    host: &str,
    pid: u32,
    started: chrono::DateTime<Utc>,
) {
    let lock = serde_json::json!({
        "kind": kind,
        "host": host,
        "pid": pid,
        "started": started.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "expires": (Utc::now() + chrono::Duration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    sandbox.write(&format!("backups/locks/{name}"), &lock.to_string());
}

/// A process that runs until it is killed.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("start sleep")
}

/// Kills a process with SIGKILL and reaps it: its pid names no process any more.
fn kill_9(mut child: std::process::Child) -> u32 {
    let pid = child.id();
    signal(pid, "KILL");
    let status = child.wait().expect("reap");
    assert_eq!(status.signal(), Some(9), "{status}");
    pid
}

/// Names of the lock files of the `local` destination.
fn lock_names(sandbox: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = lock_files(sandbox)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[test]
fn a_lock_of_a_killed_process_on_this_host_is_stale_at_once_and_apply_removes_it() {
    let sandbox = Sandbox::initialised(&policy_with(
        "    keep_last: 1
    min_keep: 1
",
        LOCAL,
        &files_source("data", "data"),
    ));
    write_random(&sandbox.path("data/old.bin"), 1 << 16);
    sandbox.run(&["apply"]).check();
    fs::remove_file(sandbox.path("data/old.bin")).expect("remove");
    write_random(&sandbox.path("data/new.bin"), 1 << 16);
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .check();
    assert_eq!(snapshots_of(&inventory(&sandbox), "local").len(), 2);

    // A backup's shared lock, its process killed with SIGKILL: not expired, but stale.
    let child = sleeper();
    write_lock(
        &sandbox,
        "shared-dead",
        "shared",
        &hostname(),
        child.id(),
        Utc::now(),
    );
    let pid = kill_9(child);
    sandbox
        .run(&["plan"])
        .stdout("BP211")
        .stdout("stale shared lock")
        .stdout(&format!("pid {pid}"))
        .stdout("that process is gone from this host")
        .check();

    // The prune needs the exclusive lock: it removes the dead one, says so, and runs.
    sandbox
        .run(&["apply", "--max-deletes", "1"])
        .stdout("✓ prune data")
        .stderr("removed locks/shared-dead")
        .stderr(&format!("pid {pid}"))
        .check();
    assert_eq!(snapshots_of(&inventory(&sandbox), "local").len(), 1);
    assert_eq!(lock_names(&sandbox), Vec::<String>::new());

    // A dead prune's exclusive lock is removed by the next backup the same way.
    let child = sleeper();
    write_lock(
        &sandbox,
        "exclusive",
        "exclusive",
        &hostname(),
        child.id(),
        Utc::now(),
    );
    let pid = kill_9(child);
    write_random(&sandbox.path("data/newer.bin"), 1 << 16);
    sandbox
        .run(&["apply", "--now", &hours_from_now(50)])
        .stdout("✓ backup data → local")
        .stderr("removed locks/exclusive")
        .stderr(&format!("pid {pid}"))
        .check();
    assert_eq!(lock_names(&sandbox), Vec::<String>::new());
    verify_and_restore_identically(&sandbox, "data");
}

#[test]
fn unlock_removes_dead_and_pid_reused_locks_of_this_host_but_not_live_or_other_hosts_locks() {
    let sandbox = Sandbox::initialised(&policy(&files_source("data", "data")));
    write_random(&sandbox.path("data/a.bin"), 1 << 16);
    sandbox.run(&["apply"]).check();
    let host = hostname();

    let dead = kill_9(sleeper());
    write_lock(&sandbox, "shared-dead", "shared", &host, dead, Utc::now());
    // A live process with the lock's pid, started after the lock: the pid was reused.
    let mut reused = sleeper();
    write_lock(
        &sandbox,
        "shared-reused",
        "shared",
        &host,
        reused.id(),
        Utc::now() - chrono::Duration::hours(1),
    );
    // A live holder on this host, and a holder on another host that this one cannot
    // see: neither is removed.
    let mut live = sleeper();
    write_lock(
        &sandbox,
        "shared-live",
        "shared",
        &host,
        live.id(),
        Utc::now(),
    );
    write_lock(
        &sandbox,
        "shared-elsewhere",
        "shared",
        "another-host",
        dead,
        Utc::now(),
    );

    let plan = sandbox
        .run(&["plan"])
        .stdout(&format!("pid {dead} since"))
        .stdout(&format!("pid {} since", reused.id()))
        .stdout("the pid now runs a later program")
        .check();
    assert_eq!(
        plan.stdout.matches("BP211").count(),
        2,
        "only the dead and the reused lock are stale:\n{}",
        plan.stdout
    );

    // The live lock is in the prune's way: the apply's prune is refused.
    sandbox
        .run(&["unlock"])
        .stdout("removed locks/shared-dead")
        .stdout("removed locks/shared-reused")
        .check();
    assert_eq!(lock_names(&sandbox), ["shared-elsewhere", "shared-live"]);
    let _ = live.kill();
    let _ = live.wait();
    let _ = reused.kill();
    let _ = reused.wait();
    sandbox.run(&["unlock", "--all"]).check();
    assert_eq!(lock_names(&sandbox), Vec::<String>::new());
}

#[test]
fn a_prune_is_refused_by_a_live_process_s_lock_on_this_host_and_by_another_host_s_lock() {
    let sandbox = Sandbox::initialised(&policy_with(
        "    keep_last: 1
    min_keep: 1
",
        LOCAL,
        &files_source("data", "data"),
    ));
    write_random(&sandbox.path("data/old.bin"), 1 << 16);
    sandbox.run(&["apply"]).check();
    write_random(&sandbox.path("data/new.bin"), 1 << 16);
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .check();
    let mut live = sleeper();
    let dead = kill_9(sleeper());
    for (name, host, pid) in [
        ("shared-live", hostname(), live.id()),
        ("shared-elsewhere", "another-host".to_string(), dead),
    ] {
        write_lock(&sandbox, name, "shared", &host, pid, Utc::now());
        sandbox
            .run(&["apply", "--max-deletes", "1"])
            .status(3)
            .stdout("✗ prune data")
            .stdout("BP222")
            .stdout(&format!("{host} pid {pid}"))
            .check();
        assert_eq!(
            lock_names(&sandbox),
            [name],
            "the lock in the way was removed"
        );
        assert_eq!(snapshots_of(&inventory(&sandbox), "local").len(), 2);
        fs::remove_file(sandbox.path(&format!("backups/locks/{name}"))).expect("remove");
    }
    let _ = live.kill();
    let _ = live.wait();
    sandbox
        .run(&["apply", "--max-deletes", "1"])
        .stdout("✓ prune data")
        .check();
}

// --- the repository key's copies ----------------------------------------------------

/// The one key copy (`keys/<id>`) of the `local` destination, and its object name.
fn key_copy(sandbox: &Sandbox) -> (PathBuf, String) {
    let copies = files_under(&sandbox.path("backups/keys"));
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = object_name(&sandbox.path("backups"), &copies[0]);
    (copies[0].clone(), name)
}

/// `verify` (with `args`) fails with BP220 naming `object`.
fn verify_fails_naming(sandbox: &Sandbox, args: &[&str], object: &str, why: &str) {
    let run = sandbox.run(args).fails().stderr("BP228").check();
    assert!(
        names(&run, object) && run.stdout.contains("BP220") && run.stdout.contains(why),
        "`{}` does not name {object} with BP220 and {why:?}:\n{}",
        args.join(" "),
        run.all()
    );
}

#[test]
fn an_intact_repository_s_key_copy_verifies_clean_with_and_without_the_secret_key() {
    let sandbox = backed_up();
    sandbox
        .run(&["verify"])
        .stdout("✓ local")
        .stdout("1 key copy")
        .check();
    sandbox
        .run(&["verify", "--secret-key", &secret()])
        .stdout("1 key copy (1 opened)")
        .check();
}

#[test]
fn a_damaged_key_copy_is_named_by_verify() {
    let sandbox = backed_up();
    let (path, name) = key_copy(&sandbox);
    let intact = fs::read(&path).expect("read the key copy");
    let secret = secret();
    let with_secret = ["verify", "--secret-key", secret.as_str()];

    // A changed byte in the encrypted data (its last byte: the integrity tag), and
    // in the middle: found by opening it.
    let mut bytes = intact.clone();
    *bytes.last_mut().expect("a byte") ^= 0x01;
    fs::write(&path, &bytes).expect("write");
    verify_fails_naming(&sandbox, &with_secret, &name, "does not open");
    fs::write(&path, &intact).expect("write");
    flip_a_byte(&path);
    verify_fails_naming(&sandbox, &with_secret, &name, "does not open");

    // A changed byte in the recipient's fingerprint (the first packet, a PKESK:
    // header, version, length, key version, then the fingerprint from byte 5 or 6):
    // found with public material only.
    let mut bytes = intact.clone();
    bytes[8] ^= 0x40;
    fs::write(&path, &bytes).expect("write");
    verify_fails_naming(&sandbox, &["verify"], &name, "BP220");

    // Cut short.
    fs::write(&path, &intact[..intact.len() - 20]).expect("write");
    verify_fails_naming(&sandbox, &["verify"], &name, "damaged");

    // Encrypted to a key the policy does not name (the same repository key inside).
    let other = backplan::crypto::Recipients::load(&[
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/gnupg-2.2.asc")
    ])
    .expect("another key");
    let hex = fs::read_to_string(sandbox.path("repo.key")).expect("the repository key");
    fs::write(
        &path,
        other.encrypt(hex.trim().as_bytes()).expect("encrypt"),
    )
    .expect("write");
    verify_fails_naming(
        &sandbox,
        &["verify"],
        &name,
        "none of them a key of the policy's recipients",
    );

    // Gone: the destination can no longer be opened with a secret key alone.
    fs::remove_file(&path).expect("remove");
    verify_fails_naming(&sandbox, &["verify"], &name, "is missing");

    fs::write(&path, &intact).expect("put it back");
    sandbox.run(&["verify", "--secret-key", &secret]).check();
}

// --- repair of lost packs ----------------------------------------------------------

/// The packs of destination `dest`, largest first.
fn packs_of(sandbox: &Sandbox, dest: &str) -> Vec<PathBuf> {
    let mut found = files_under(&sandbox.path(dest).join("packs"));
    found.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    found
}

/// `args` (a verify) fails with `BP228`, names `problem` and records what it found.
fn verify_records(sandbox: &Sandbox, args: &[&str], problem: &str) -> Run {
    let run = sandbox
        .run(args)
        .fails()
        .stderr("BP228")
        .stdout("recorded in lost/")
        .check();
    assert!(names(&run, problem), "no {problem:?}:\n{}", run.stdout);
    run
}

/// The `lost/` records of destination `dest`.
fn lost_records(sandbox: &Sandbox, dest: &str) -> Vec<PathBuf> {
    files_under(&sandbox.path(dest).join("lost"))
}

/// After a repair of `two`: the plan has nothing to do, `verify --read-data` is clean
/// and has nothing to record, and with `one` gone a restore of `sources` (each from
/// the folder of its name, into `restored/NAME`) from `two` alone gives the same
/// bytes.
fn repaired_and_restorable_from_two_alone(sandbox: &Sandbox, sources: &[&str]) {
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("No changes")
        .check();
    let verified = verify_read_data(sandbox);
    assert!(verified.stdout.contains("✓ two: "), "{}", verified.stdout);
    assert!(!verified.stdout.contains("recorded"), "{}", verified.stdout);
    assert_eq!(lost_records(sandbox, "two"), Vec::<PathBuf>::new());
    fs::remove_dir_all(sandbox.path("one")).expect("remove one");
    let secret = secret();
    let mut args = vec!["restore", "--secret-key", secret.as_str()];
    let targets: Vec<String> = sources
        .iter()
        .map(|s| format!("{s}=restored/{s}"))
        .collect();
    for (s, t) in sources.iter().zip(&targets) {
        args.extend(["--only", s, "--target", t]);
    }
    let run = sandbox.run(&args).check();
    assert!(!run.stdout.contains("from one"), "{}", run.stdout);
    for s in sources {
        assert_same_tree(&sandbox.path(s), &sandbox.path(&format!("restored/{s}")));
    }
}

/// The plan of [`backed_up_twice`] after verify found one pack of its data lost on
/// `two` is that repair, and apply carries it out: `two` is whole again.
fn the_plan_repairs_two_from_one(sandbox: &Sandbox) {
    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("~ repair  data")
        .stdout("1 pack lost on two (found by verify at ")
        .stdout("copied from one")
        .stdout("need")
        .stdout("Plan: 0 backups, 1 repair, 0 copies, 0 prunes.")
        .check();
    sandbox
        .run(&["apply"])
        .stdout("✓ repair two from one")
        .stdout("Apply: 1 done, 0 failed, 0 skipped.")
        .check();
    repaired_and_restorable_from_two_alone(sandbox, &["data"]);
}

#[test]
fn a_pack_lost_on_one_destination_is_copied_back_from_the_other_and_restores_identically() {
    let sandbox = backed_up_twice();
    let lost = packs_of(&sandbox, "two").remove(0);
    let name = object_name(&sandbox.path("two"), &lost);
    fs::remove_file(&lost).expect("lose a pack");

    let run = verify_records(&sandbox, &["verify"], &format!("pack {name} is missing"));
    assert!(run.stdout.contains("✓ one: ") && run.stdout.contains("✗ two: "));
    assert!(
        run.stdout
            .contains("chunk(s) are in missing or damaged packs")
    );
    assert_eq!(lost_records(&sandbox, "two").len(), 1);
    // The JSON gives each problem its code, message and help.
    let json = sandbox.run(&["verify", "--format", "json"]).fails().check();
    let all: serde_json::Value = serde_json::from_str(&json.stdout).expect("verify's JSON");
    let two = all
        .as_array()
        .and_then(|a| a.iter().find(|f| f["destination"] == "two"))
        .unwrap_or_else(|| panic!("no findings for two: {}", json.stdout));
    let problem = &two["problems"][""][0];
    assert_eq!(problem["code"], "BP228", "{problem}");
    assert_eq!(problem["message"], format!("pack {name} is missing"));
    assert!(problem["help"].as_str().is_some_and(|h| !h.is_empty()));
    the_plan_repairs_two_from_one(&sandbox);
}

#[test]
fn a_damaged_pack_found_by_verify_read_data_is_repaired_the_same_way() {
    let sandbox = backed_up_twice();
    let damaged = packs_of(&sandbox, "two").remove(0);
    let name = object_name(&sandbox.path("two"), &damaged);
    flip_a_byte(&damaged);

    // Its size is right: only reading it tells.
    sandbox.run(&["verify"]).check();
    let read_data = ["verify", "--read-data", "--secret-key", &secret()];
    let damaged = format!("pack {name} is damaged: its content does not match its name");
    let run = verify_records(&sandbox, &read_data, &damaged);
    assert!(run.stdout.contains("✓ one: "), "{}", run.stdout);
    the_plan_repairs_two_from_one(&sandbox);
}

#[test]
fn kill_9_during_a_repair_leaves_the_destination_no_worse_and_the_next_apply_completes_it() {
    // Two sources backed up side by side store their common file twice: the packs
    // the repair writes cannot all be the ones that were lost.
    let sources = format!("{}{}", files_source("a", "a"), files_source("b", "b"));
    let sandbox = Sandbox::initialised(&policy_with(RETENTION, ONE_AND_TWO, &sources));
    write_random(&sandbox.path("a/big.bin"), 40 << 20);
    let common = random_bytes(600_000);
    write_bytes(&sandbox.path("a/common.bin"), &common);
    write_bytes(&sandbox.path("b/common.bin"), &common);
    write_bytes(&sandbox.path("b/own.txt"), b"b alone\n");
    sandbox.run(&["apply"]).check();
    let lost = packs_of(&sandbox, "two").len();
    assert!(lost >= 2, "{lost} packs");
    fs::remove_dir_all(sandbox.path("two/packs")).expect("lose every pack");
    sandbox
        .run(&["verify"])
        .fails()
        .stdout("recorded in lost/")
        .check();
    sandbox
        .run(&["plan"])
        .stdout(&format!("~ repair  a, b {lost} packs lost on two"))
        .stdout("2 snapshots need them")
        .check();

    let mut child = spawn_until(&sandbox, &["apply"], "the repair's first pack", |_| {
        !packs_of(&sandbox, "two").is_empty()
    });
    child.kill().expect("SIGKILL");
    assert_eq!(child.wait().expect("reap").signal(), Some(9));
    sandbox.run(&["unlock", "--all"]).check();

    // No worse: nothing damaged, the same loss recorded, one untouched.
    let inv = inventory(&sandbox);
    assert!(inv["destinations"]["two"]["damaged"].is_null(), "{inv}");
    assert_eq!(
        inv["destinations"]["two"]["lost"]["packs"]
            .as_array()
            .map(Vec::len),
        Some(lost),
        "{inv}"
    );
    sandbox
        .run(&["plan"])
        .stdout(&format!("{lost} packs lost on two"))
        .check();
    let verified = sandbox.run(&["verify"]).fails().check();
    assert!(verified.stdout.contains("✓ one: "), "{}", verified.stdout);

    let run = sandbox
        .run(&["apply"])
        .stdout("✓ repair two from one")
        .stdout("0 failed")
        .check();
    let retired = run
        .stdout
        .split(" lost pack")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(
        retired.is_some_and(|n| n >= 1),
        "no lost pack retired: {}",
        run.stdout
    );
    repaired_and_restorable_from_two_alone(&sandbox, &["a", "b"]);
}

#[test]
fn a_lost_pack_that_no_other_destination_holds_is_reported_and_nothing_is_deleted() {
    let sandbox = backed_up();
    let damaged = objects(&sandbox, "packs").remove(0);
    flip_a_byte(&damaged);
    let bytes = fs::read(&damaged).expect("read the damaged pack");
    verify_names(&sandbox, &object_name(&sandbox.path("backups"), &damaged));
    let inv = inventory(&sandbox);
    let affected = inv["destinations"]["local"]["lost"]["snapshots"].clone();
    assert_eq!(affected.as_array().map(Vec::len), Some(1), "{inv}");
    let snapshot = affected[0].as_str().expect("a snapshot id").to_string();

    let plan = sandbox
        .run(&["plan", "--detailed-exitcode"])
        .stdout("BP235")
        .stdout(&format!(
            "local: snapshot {snapshot} needs lost chunks that no other destination holds"
        ))
        .stdout("nothing is deleted")
        .check();
    assert!(!plan.stdout.contains("repair"), "{}", plan.stdout);
    sandbox.run(&["apply"]).check();
    assert_eq!(fs::read(&damaged).expect("the damaged pack"), bytes);
    assert_eq!(snapshots_of(&inventory(&sandbox), "local").len(), 2);

    // The next backup reads the lost file again and stores its chunks anew: the new
    // snapshot is whole, and so is the old one, whose chunks are the same.
    sandbox
        .run(&["apply", "--now", &hours_from_now(25)])
        .stdout("✓ backup data → local")
        .check();
    let run = sandbox
        .run(&["verify", "--read-data", "--secret-key", &secret()])
        .fails()
        .stdout("is damaged")
        .stdout("recorded in lost/")
        .check();
    assert!(!run.stdout.contains("snapshot "), "{}", run.stdout);
    // The pack no snapshot needs any more is retired; it stays in storage until a
    // prune collects it.
    sandbox
        .run(&["plan"])
        .stdout("~ repair  -")
        .stdout("1 pack lost on local (found by verify at ")
        .stdout("retired   no snapshot needs them")
        .check();
    sandbox
        .run(&["apply"])
        .stdout("✓ repair local")
        .stdout("1 lost pack retired")
        .check();
    assert_eq!(fs::read(&damaged).expect("the damaged pack"), bytes);
    verify_read_data(&sandbox);
    sandbox
        .run(&[
            "restore",
            "--snapshot",
            &snapshot,
            "--secret-key",
            &secret(),
            "--target",
            "data=restored",
        ])
        .check();
    assert_same_tree(&sandbox.path("data"), &sandbox.path("restored"));
}

#[test]
fn verify_records_a_lost_pack_once_and_removes_the_record_when_the_pack_is_back() {
    let sandbox = backed_up();
    let pack = objects(&sandbox, "packs").remove(0);
    let name = object_name(&sandbox.path("backups"), &pack);
    let bytes = fs::read(&pack).expect("read the pack");
    fs::remove_file(&pack).expect("lose the pack");
    let lost = || files_under(&sandbox.path("backups/lost"));

    // Without its lock, verify writes nothing.
    sandbox
        .run(&["verify", "--no-lock"])
        .fails()
        .stdout(&format!("pack {name} is missing"))
        .check();
    assert_eq!(lost(), Vec::<PathBuf>::new());

    verify_records(&sandbox, &["verify"], &format!("pack {name} is missing"));
    let recorded = lost();
    assert_eq!(recorded.len(), 1);
    let inv = inventory(&sandbox);
    let record = &inv["destinations"]["local"]["lost"];
    assert_eq!(record["packs"][0]["state"], "missing", "{inv}");
    assert_eq!(
        record["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{inv}"
    );
    // The same finding is not recorded twice, and keeps the time it was first found.
    let again = sandbox.run(&["verify"]).fails().check();
    assert!(!again.stdout.contains("recorded"), "{}", again.stdout);
    assert_eq!(lost(), recorded);

    // No chunk is read from a lost pack: the restore says which pack is lost.
    let restore = sandbox
        .run(&restore_args(&secret(), &[]))
        .fails()
        .stderr("verify found packs lost on local")
        .check();
    assert!(
        names(&restore, &format!("{name} (missing)")),
        "{}",
        restore.all()
    );

    fs::write(&pack, bytes).expect("put the pack back");
    sandbox
        .run(&["verify"])
        .stdout("nothing is lost any more: the earlier record is removed")
        .check();
    assert_eq!(lost(), Vec::<PathBuf>::new());
    assert!(inventory(&sandbox)["destinations"]["local"]["lost"].is_null());
    verify_read_data(&sandbox);
}

// --- failures -----------------------------------------------------------------------

#[test]
fn a_source_that_fails_is_a_failed_snapshot_and_the_others_succeed() {
    let sources = format!(
        "{}{}{}",
        config_source("config", "config/app.env"),
        files_source("data", "data"),
        files_source("ghost", "no-such-folder")
    );
    let sandbox = Sandbox::initialised(&policy(&sources));
    sandbox.write("config/app.env", "SESSION_SECRET=failures\n");
    sandbox.write("data/file.txt", "here\n");

    let run = sandbox
        .run(&["apply"])
        .status(3)
        .stdout("✓ backup config → local")
        .stdout("✓ backup data → local")
        .stdout("✗ backup ghost → local")
        .stdout("BP227")
        .stdout("no-such-folder")
        // The failure's help is shown under it.
        .stdout(&format!(
            "\n      help: {}\n",
            backplan::error::Code::SourceFailed.help()
        ))
        .stdout("Apply: 2 done, 1 failed, 0 skipped.")
        .stderr("BP205")
        .check();
    assert!(!run.stdout.contains("panicked"));

    let inv = inventory(&sandbox);
    assert_eq!(
        sources_and_statuses(&inv, "local"),
        [
            ("config".to_string(), "complete".to_string()),
            ("data".to_string(), "complete".to_string()),
            ("ghost".to_string(), "failed".to_string())
        ]
    );
    let table = sandbox.run(&["snapshots"]).check();
    let ghost = table
        .stdout
        .lines()
        .find(|l| l.contains("ghost"))
        .unwrap_or_else(|| panic!("no ghost snapshot:\n{}", table.stdout));
    assert!(ghost.contains("FAILED"), "{ghost}");

    sandbox
        .run(&["plan", "--detailed-exitcode"])
        .status(2)
        .stdout("+ backup  ghost")
        .stdout("last backup failed")
        .stdout("Plan: 1 backup")
        .check();
    // The sources that worked are restorable.
    sandbox
        .run(&[
            "restore",
            "--only",
            "data",
            "--secret-key",
            &secret(),
            "--target",
            "data=restored",
        ])
        .check();
    assert_eq!(sandbox.read("restored/file.txt"), "here\n");
}

// --- the snapshot catalog -------------------------------------------------------------

/// Ids of the snapshots `snapshots --format json` lists on `local`.
fn listed_ids(sandbox: &Sandbox) -> BTreeSet<String> {
    let run = sandbox.run(&["snapshots", "--format", "json"]).check();
    let v: Value = serde_json::from_str(&run.stdout).expect("snapshots JSON");
    v["destinations"]["local"]["snapshots"]
        .as_array()
        .expect("a list of snapshots")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_string())
        .collect()
}

fn catalogs(sandbox: &Sandbox) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(sandbox.path("backups/catalog")) {
        Ok(dir) => dir.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn the_catalog_stands_in_for_the_snapshot_headers_and_the_listing_stays_the_truth() {
    // 70 sources: one apply makes enough snapshots to write a catalog.
    let mut sources = String::new();
    for i in 0..70 {
        sources.push_str(&config_source(&format!("c{i:02}"), &format!("c{i:02}.txt")));
    }
    let sandbox = Sandbox::initialised(&policy(&sources));
    for i in 0..70 {
        sandbox.write(&format!("c{i:02}.txt"), &format!("config {i}\n"));
    }
    sandbox.run(&["apply"]).check();
    let first = listed_ids(&sandbox);
    assert_eq!(first.len(), 70);
    assert_eq!(
        catalogs(&sandbox).len(),
        1,
        "one apply of 70 writes a catalog"
    );

    // A snapshot deleted behind the catalog's back is gone from the inventory; the
    // catalog's entry for it does not bring it back.
    let gone = first.iter().next().expect("a snapshot").clone();
    std::fs::remove_file(sandbox.path(&format!("backups/snapshots/{gone}"))).expect("remove");
    let after = listed_ids(&sandbox);
    assert_eq!(after.len(), 69);
    assert!(!after.contains(&gone));

    // Snapshots made after the catalog are read one by one, alongside it.
    let tomorrow =
        (Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    sandbox.run(&["apply", "--now", &tomorrow]).check();
    let both = listed_ids(&sandbox);
    assert_eq!(both.len(), 139);
    assert!(after.is_subset(&both));
    // The second apply folded them into one new catalog.
    let written = catalogs(&sandbox);
    assert_eq!(written.len(), 1, "{written:?}");

    // A damaged catalog is named by plan and ignored: nothing goes missing.
    let path = &written[0];
    let mut bytes = std::fs::read(path).expect("read the catalog");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("damage the catalog");
    assert_eq!(listed_ids(&sandbox), both);
    sandbox
        .run(&["plan"])
        .stdout("BP220")
        .stdout("catalog/")
        .check();
    let secret = secret_key().display().to_string();
    sandbox
        .run(&["verify", "--secret-key", &secret])
        .fails()
        .stdout("catalog/")
        .check();
    // The next apply rewrites it, and verify is clean again.
    let later = (Utc::now() + chrono::Duration::days(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    sandbox.run(&["apply", "--now", &later]).check();
    assert_eq!(listed_ids(&sandbox).len(), 209);
    sandbox
        .run(&["verify", "--read-data", "--secret-key", &secret])
        .check();
}

// --- recipient keys -----------------------------------------------------------------

/// A fresh GnuPG home (mode 0700, as gpg wants it) in the sandbox.
fn gnupg_home(sandbox: &Sandbox) -> PathBuf {
    let home = sandbox.path("gnupg");
    fs::create_dir_all(&home).expect("create the GnuPG home");
    set_mode(&home, 0o700);
    home
}

/// A key made with `gpg --quick-gen-key` in the sandbox's GnuPG home: its public
/// key written to `keys/ops.asc`, its secret key to `ops.secret.asc`. Returns the
/// home and the secret key's path.
fn key_made_by_gpg(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let home = gnupg_home(sandbox);
    gpg(
        &home,
        &[
            "--quick-gen-key",
            "Ops <ops@example.invalid>",
            "default",
            "default",
            "never",
        ],
    );
    fs::write(
        sandbox.path("keys/ops.asc"),
        gpg(&home, &["--armor", "--export"]),
    )
    .expect("write the public key");
    let secret = sandbox.path("ops.secret.asc");
    fs::write(&secret, gpg(&home, &["--armor", "--export-secret-keys"]))
        .expect("write the secret key");
    (home, secret)
}

/// Runs gpg in `home` without any agent prompt; returns its stdout.
fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .output()
        .expect("run gpg (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The versions of the first PKESK and the first SEIPD packet of the repository's
/// first pack: its first key set and its first chunk.
fn first_pack_packet_versions(sandbox: &Sandbox) -> (u8, u8) {
    use sequoia_openpgp::Packet;
    use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};
    let pack = fs::read(files_under(&sandbox.path("backups/packs"))[0].clone()).expect("a pack");
    // "BPPACK1\n", the number of key sets (one here: one backup wrote it), the key
    // set's length, then the key set and the chunk packets.
    assert_eq!(&pack[..8], b"BPPACK1\n");
    assert_eq!(u16::from_le_bytes([pack[8], pack[9]]), 1);
    let mut ppr = PacketParser::from_bytes(&pack[14..]).expect("OpenPGP packets");
    let (mut pkesk, mut seipd) = (None, None);
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                pkesk.get_or_insert(p.version());
            }
            Packet::SEIP(s) => {
                seipd = Some(s.version());
                break;
            }
            _ => {}
        }
        ppr = pp.next().expect("the next packet").1;
    }
    (pkesk.expect("a PKESK"), seipd.expect("a SEIPD"))
}

/// Backs up `data` to the recipient `keys/ops.asc`, then restores it with `secret`
/// into `restored`, which must equal it.
fn round_trip_with_key(sandbox: &Sandbox, secret: &Path) {
    write_bytes(&sandbox.path("data/a.bin"), &random_bytes(300_000));
    write_bytes(&sandbox.path("data/b/notes.txt"), b"plain words\n");
    sandbox.run(&["init"]).stdout("repository created").check();
    sandbox.run(&["apply"]).check();
    restore_identically(sandbox, "data", &secret.display().to_string());
}

fn ops_policy() -> String {
    policy(&files_source("data", "data")).replace("keys/demo-recipient.asc", "keys/ops.asc")
}

#[test]
fn a_key_made_with_gpg_is_a_recipient_its_secret_key_restores_and_gpg_opens_the_key_copy() {
    let sandbox = Sandbox::with_policy(&ops_policy());
    let (home, secret) = key_made_by_gpg(&sandbox);

    round_trip_with_key(&sandbox, &secret);
    // GnuPG 2.2 announces SEIPDv1 only: the chunks are v1 (with an MDC), their key
    // sets v3 PKESKs.
    assert_eq!(first_pack_packet_versions(&sandbox), (3, 1));
    // gpg itself opens what backplan encrypted to it: the repository key's copy.
    let copies = files_under(&sandbox.path("backups/keys"));
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = copies[0].display().to_string();
    let opened = String::from_utf8(gpg(&home, &["--decrypt", &copy])).expect("text");
    let key = sandbox.read("repo.key");
    assert!(!key.trim().is_empty());
    assert!(opened.contains(key.trim()), "gpg opened something else");
}

#[test]
fn a_key_made_by_keygen_gets_aead_chunks_restores_and_is_never_overwritten() {
    let sandbox = Sandbox::with_policy(&ops_policy());
    sandbox
        .run(&[
            "keygen",
            "--user-id",
            "Ops <ops@example.invalid>",
            "--public",
            "keys/ops.asc",
            "--secret",
            "ops.secret.asc",
        ])
        .stdout("Made key ")
        .check();
    let secret = sandbox.path("ops.secret.asc");
    assert_eq!(
        fs::metadata(&secret).expect("the secret key").mode() & 0o777,
        0o600
    );
    let secret_text = fs::read_to_string(&secret).expect("the secret key");
    assert!(secret_text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));

    round_trip_with_key(&sandbox, &secret);
    // It announces SEIPDv2: the chunks are AEAD, their key sets v6 PKESKs.
    assert_eq!(first_pack_packet_versions(&sandbox), (6, 2));
    // GnuPG takes the public key as it is.
    let home = gnupg_home(&sandbox);
    let public = sandbox.path("keys/ops.asc").display().to_string();
    gpg(&home, &["--import", &public]);

    // A second keygen over the same files refuses and changes neither.
    let public_text = sandbox.read("keys/ops.asc");
    sandbox
        .run(&[
            "keygen",
            "--user-id",
            "Other <other@example.invalid>",
            "--public",
            "keys/ops.asc",
            "--secret",
            "ops.secret.asc",
        ])
        .status(1)
        .stderr("exists; keygen never overwrites a key")
        .check();
    assert_eq!(sandbox.read("keys/ops.asc"), public_text);
    assert_eq!(
        fs::read_to_string(&secret).expect("the secret key"),
        secret_text
    );
}

// --- file fidelity --------------------------------------------------------------------

/// Everything a restore must carry over of one entry (and of the folder itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fidelity {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    owner: (u32, u32),
    size: u64,
    blake3: String,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For a file of several links: the first path (bytes, walk order) of its inode.
    linked_to: Option<Vec<u8>>,
}

/// Every entry under `root`, and `root` itself under the empty path, by path bytes.
fn fidelity(root: &Path) -> BTreeMap<Vec<u8>, Fidelity> {
    use std::os::unix::ffi::OsStrExt;
    fn one(
        path: &Path,
        rel: Vec<u8>,
        inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
        out: &mut BTreeMap<Vec<u8>, Fidelity>,
    ) {
        let meta = fs::symlink_metadata(path).expect("metadata");
        let ft = meta.file_type();
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(path)
            .expect("list xattrs")
            .map(|name| {
                let value = xattr::get(path, &name).expect("xattr").unwrap_or_default();
                (name.as_bytes().to_vec(), value)
            })
            .collect();
        xattrs.sort();
        let mut node = Fidelity {
            kind: "dir",
            mode: meta.mode() & 0o7777,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            owner: (meta.uid(), meta.gid()),
            size: 0,
            blake3: String::new(),
            target: None,
            xattrs,
            linked_to: None,
        };
        if ft.is_symlink() {
            node.kind = "symlink";
            node.mode = 0;
            node.target = Some(
                fs::read_link(path)
                    .expect("read link")
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            );
        } else if ft.is_file() {
            node.kind = "file";
            node.size = meta.len();
            let mut hasher = blake3::Hasher::new();
            io::copy(&mut fs::File::open(path).expect("open"), &mut hasher).expect("hash");
            node.blake3 = hasher.finalize().to_hex().to_string();
            if meta.nlink() > 1 {
                let first = inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.clone());
                node.linked_to = Some(first.clone());
            }
        } else if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)
                .expect("list")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            for name in names {
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                one(&path.join(&name), child, inodes, out);
            }
        }
        out.insert(rel, node);
    }
    let mut out = BTreeMap::new();
    one(root, Vec::new(), &mut BTreeMap::new(), &mut out);
    out
}

fn assert_same_fidelity(original: &Path, restored: &Path) {
    let want = fidelity(original);
    let got = fidelity(restored);
    let show = |p: &Vec<u8>| String::from_utf8_lossy(p).into_owned();
    assert_eq!(
        want.keys().map(show).collect::<Vec<_>>(),
        got.keys().map(show).collect::<Vec<_>>()
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, node) in &want {
        assert_eq!(Some(node), got.get(path), "{:?} differs", show(path));
    }
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").blocks() * 512
}

fn is_root() -> bool {
    uzers::get_effective_uid() == 0
}

/// An uploads folder with what file systems allow and naive backups lose: names and
/// a symlink target that are not UTF-8, a hard-link group of three, a sparse file of
/// `sparse_size` bytes with 64 KiB of data, owners by number and by a system user's
/// name (as root), `user.*` attributes on a file and a folder, POSIX ACLs (when
/// setfacl and the filesystem allow), directory mtimes and the folder's own.
fn make_edge_case_tree(root: &Path, sparse_size: u64) {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bytes = |b: &'static [u8]| root.join(OsStr::from_bytes(b));
    write_bytes(&bytes(b"caf\xe9.jpg"), &random_bytes(70_000));
    write_bytes(&bytes(b"\xff\xfe-folder/na\xefve.txt"), b"latin-1 names\n");
    symlink(OsStr::from_bytes(b"caf\xe9.jpg"), bytes(b"link-\xe9")).expect("symlink");
    write_bytes(&root.join("2026/11/a.jpg"), &random_bytes(300_000));
    fs::create_dir_all(root.join("thumbs")).expect("mkdir");
    fs::hard_link(root.join("2026/11/a.jpg"), root.join("thumbs/a.jpg")).expect("link");
    fs::hard_link(root.join("2026/11/a.jpg"), root.join("a-again.jpg")).expect("link");
    let sparse = root.join("disk.img");
    let f = fs::File::create(&sparse).expect("create");
    f.set_len(sparse_size).expect("set_len");
    std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(65_536), sparse_size / 3)
        .expect("write");
    drop(f);
    write_bytes(&root.join("owned-4242"), b"by number\n");
    write_bytes(&root.join("owned-daemon"), b"by name\n");
    if is_root() {
        std::os::unix::fs::chown(root.join("owned-4242"), Some(4242), Some(4243)).expect("chown");
        let daemon = uzers::get_user_by_name("daemon").expect("a daemon user");
        std::os::unix::fs::chown(
            root.join("owned-daemon"),
            Some(daemon.uid()),
            Some(daemon.primary_group_id()),
        )
        .expect("chown");
        std::os::unix::fs::chown(root.join("thumbs"), Some(4242), Some(4243)).expect("chown");
        std::os::unix::fs::lchown(bytes(b"link-\xe9"), Some(4242), Some(4243)).expect("lchown");
        set_mode(&root.join("owned-4242"), 0o4750);
    } else {
        eprintln!("SKIPPED owners: not running as root, so nothing is chowned or compared");
    }
    for (path, name) in [
        (root.join("2026/11/a.jpg"), "user.origin"),
        (root.join("thumbs"), "user.kind"),
    ] {
        if let Err(e) = xattr::set(&path, name, b"value \x00\xff") {
            eprintln!("SKIPPED {name}: {} refuses it: {e}", path.display());
        }
    }
    let setfacl = |args: &[&str], path: &Path| match std::process::Command::new("setfacl")
        .args(args)
        .arg(path)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "SKIPPED an ACL: setfacl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIPPED an ACL: setfacl cannot run ({e}); install `acl`"),
    };
    setfacl(&["-m", "u:4242:rw-"], &root.join("owned-daemon"));
    setfacl(&["-d", "-m", "g:4243:r-x"], &root.join("2026"));
    for (i, dir) in ["2026/11", "2026", "thumbs"].iter().enumerate() {
        filetime::set_file_mtime(root.join(dir), past(1_400_000_000 + i as i64, 11))
            .expect("mtime");
    }
    filetime::set_file_mtime(bytes(b"\xff\xfe-folder"), past(1_300_000_000, 5)).expect("mtime");
    set_mode(root, 0o750);
    filetime::set_file_mtime(root, past(1_200_000_000, 999)).expect("mtime");
}

/// Backs up the edge-case tree, restores it with `secret` into `restored` (and with
/// `--numeric-owner` into `numeric`), and compares everything.
fn edge_case_round_trip(sandbox: &Sandbox, secret: &str, sparse_size: u64) {
    make_edge_case_tree(&sandbox.path("uploads"), sparse_size);
    // What the test tree is meant to hold, so that a failed setup cannot pass.
    let want = fidelity(&sandbox.path("uploads"));
    assert!(want.contains_key(&b"\xff\xfe-folder/na\xefve.txt"[..]));
    assert!(allocated(&sandbox.path("uploads/disk.img")) < sparse_size / 4);
    if is_root() {
        assert_eq!(want[&b"owned-4242"[..]].owner, (4242, 4243));
        let acl = &want[&b"owned-daemon"[..]].xattrs;
        if std::process::Command::new("setfacl")
            .arg("--version")
            .output()
            .is_ok()
        {
            assert!(
                acl.iter().any(|(n, _)| n == b"system.posix_acl_access"),
                "{acl:?}"
            );
        }
    }

    sandbox.run(&["init"]).stdout("repository created").check();
    sandbox
        .run(&["apply"])
        .stdout("✓ backup uploads → local")
        .stderr_lacks("skipped")
        .check();
    sandbox
        .run(&[
            "restore",
            "--secret-key",
            secret,
            "--target",
            "uploads=restored",
        ])
        .stdout("Restore: 1 step done.")
        .stderr_lacks("warning")
        .check();
    assert_same_fidelity(&sandbox.path("uploads"), &sandbox.path("restored"));
    let restored = sandbox.path("restored/disk.img");
    eprintln!(
        "a {sparse_size}-byte sparse file with 64 KiB of data: {} bytes allocated at the \
         source, {} after the restore",
        allocated(&sandbox.path("uploads/disk.img")),
        allocated(&restored)
    );
    assert!(allocated(&restored) < sparse_size / 100);
    let ino = |p: &str| fs::metadata(sandbox.path(p)).expect("metadata").ino();
    assert_eq!(ino("restored/2026/11/a.jpg"), ino("restored/thumbs/a.jpg"));
    assert_eq!(ino("restored/2026/11/a.jpg"), ino("restored/a-again.jpg"));

    sandbox
        .run(&[
            "restore",
            "--secret-key",
            secret,
            "--numeric-owner",
            "--target",
            "uploads=numeric",
        ])
        .stdout("Restore: 1 step done.")
        .check();
    // Here names and numbers agree, so both ways give the same owners (the unit test
    // `owners_are_set_by_name_where_known_unless_numeric_and_only_by_root` has a
    // snapshot where they differ).
    assert_same_fidelity(&sandbox.path("uploads"), &sandbox.path("numeric"));
}

#[test]
fn an_edge_case_tree_round_trips_names_owners_links_holes_xattrs_acls_and_mtimes() {
    let sandbox = Sandbox::with_policy(&policy(&files_source("uploads", "uploads")));
    edge_case_round_trip(&sandbox, &secret(), 256 << 20);
}

#[test]
fn an_edge_case_tree_round_trips_with_a_key_made_by_gpg() {
    let sandbox = Sandbox::with_policy(
        &policy(&files_source("uploads", "uploads"))
            .replace("keys/demo-recipient.asc", "keys/ops.asc"),
    );
    let (_, secret) = key_made_by_gpg(&sandbox);
    edge_case_round_trip(&sandbox, &secret.display().to_string(), 32 << 20);
}

#[test]
fn an_unreadable_lock_is_in_a_backup_s_way_until_unlock_removes_it() {
    let sandbox = Sandbox::initialised(&policy(&files_source("data", "data")));
    write_random(&sandbox.path("data/a.bin"), 1 << 16);
    // A lock cut short (being uploaded to a server without atomic writes, or broken):
    // whose it is and of which kind cannot be told, so it counts as someone's.
    sandbox.write("backups/locks/shared-0123456789abcdef", "{\"kind\":\"sha");
    sandbox
        .run(&["apply"])
        .status(3)
        .stdout("BP222")
        .stdout("locks/shared-0123456789abcdef is unreadable")
        .check();
    assert_eq!(lock_names(&sandbox), ["shared-0123456789abcdef"]);
    sandbox
        .run(&["unlock"])
        .stdout("removed locks/shared-0123456789abcdef")
        .check();
    sandbox.run(&["apply"]).check();
    assert_eq!(lock_names(&sandbox), Vec::<String>::new());
}
