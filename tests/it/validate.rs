//! Broken policies: each fixture in `tests/fixtures/broken/` must fail with its own code,
//! pointing at the exact line and column of the mistake, and render that way too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use backplan::error::{Located, PolicyReport};
use backplan::policy::spans::line_col;
use backplan::policy::{load_file, load_str};

/// (fixture, code, line, column): the first error each broken policy reports and where.
const BROKEN: &[(&str, &str, usize, usize)] = &[
    ("yaml-syntax.yaml", "BP101", 9, 4),
    ("unknown-field.yaml", "BP102", 13, 5),
    ("invalid-value.yaml", "BP103", 14, 19),
    ("missing-field.yaml", "BP104", 10, 3),
    ("unsupported-version.yaml", "BP105", 2, 10),
    ("duplicate-name.yaml", "BP106", 13, 3),
    ("invalid-name.yaml", "BP107", 13, 3),
    ("unknown-destination.yaml", "BP110", 16, 27),
    ("unknown-dependency.yaml", "BP111", 17, 9),
    ("dependency-cycle.yaml", "BP112", 13, 5),
    ("bad-schedule.yaml", "BP113", 13, 15),
    ("bad-timezone.yaml", "BP114", 7, 13),
    ("retention-keeps-nothing.yaml", "BP115", 13, 5),
    ("bad-duration.yaml", "BP116", 14, 20),
    ("key-file-unreadable.yaml", "BP117", 6, 7),
    ("not-a-public-key.yaml", "BP118", 5, 7),
    ("no-destinations.yaml", "BP119", 13, 5),
    ("bad-compression.yaml", "BP120", 7, 3),
    ("empty-paths.yaml", "BP121", 12, 5),
    ("malformed-key.yaml", "BP122", 6, 7),
    ("multiple-documents.yaml", "BP123", 10, 1),
    ("not-utf8.yaml", "BP124", 12, 17),
    ("nesting-too-deep.yaml", "BP126", 13, 75),
    ("unknown-placeholder.yaml", "BP136", 18, 15),
    ("bad-notify-state.yaml", "BP139", 17, 23),
];

/// Further broken policies, of codes the table above has already: each still points
/// at its own mistake.
const MORE_BROKEN: &[(&str, &str, usize, usize)] = &[
    ("secret-key-after-public-key.yaml", "BP118", 6, 7),
    ("bad-enum-value.yaml", "BP103", 13, 11),
    ("unclosed-quote.yaml", "BP101", 13, 15),
    ("timezone-abbreviation.yaml", "BP114", 7, 13),
    ("cron-with-seconds-and-year.yaml", "BP113", 13, 15),
    ("cron-with-seconds.yaml", "BP113", 13, 15),
];

/// Every broken fixture with its code and place.
fn all_broken() -> impl Iterator<Item = &'static (&'static str, &'static str, usize, usize)> {
    BROKEN.iter().chain(MORE_BROKEN)
}

/// The text of a fixture as miette shows it (a file that is not UTF-8 with U+FFFD).
fn fixture_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).expect("fixture")).into_owned()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn broken(name: &str) -> PathBuf {
    root().join("tests/fixtures/broken").join(name)
}

fn report(path: &Path) -> PolicyReport {
    match load_file(path) {
        Ok(loaded) => panic!(
            "{} validated, but it is broken (warnings: {:?})",
            path.display(),
            codes(&loaded.warnings)
        ),
        Err(report) => report,
    }
}

fn codes(problems: &[Located]) -> Vec<&'static str> {
    problems.iter().map(|p| p.problem.code.id()).collect()
}

/// The 1-based line and column a problem's primary span points at.
fn position(text: &str, problem: &Located) -> (usize, usize) {
    let (span, _) = problem
        .problem
        .span
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no span", problem.problem.code));
    line_col(text, span.offset())
}

fn find<'a>(report: &'a PolicyReport, code: &str) -> &'a Located {
    report
        .problems
        .iter()
        .find(|p| p.problem.code.id() == code)
        .unwrap_or_else(|| panic!("no {code} in {:?}", codes(&report.problems)))
}

#[test]
fn the_table_covers_every_fixture_with_a_different_code() {
    let listed: BTreeSet<&str> = all_broken().map(|(file, ..)| *file).collect();
    assert_eq!(
        listed.len(),
        BROKEN.len() + MORE_BROKEN.len(),
        "a fixture is listed twice"
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("tests/fixtures/broken"))
        .expect("fixtures folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(listed, on_disk, "every fixture has one row in BROKEN");
    let distinct: BTreeSet<&str> = BROKEN.iter().map(|(_, code, ..)| *code).collect();
    assert_eq!(
        distinct.len(),
        BROKEN.len(),
        "each fixture has its own code"
    );
    assert!(BROKEN.len() >= 12);
    for code in &distinct {
        assert!(
            backplan::error::Code::ALL.iter().any(|c| c.id() == *code),
            "{code} is not a code"
        );
    }
}

#[test]
fn each_broken_policy_reports_its_code_at_its_line() {
    let mut failures = Vec::new();
    for &(file, code, line, column) in all_broken() {
        let path = broken(file);
        let text = fixture_text(&path);
        let report = report(&path);
        // One mistake per fixture: no follow-up errors, no warnings.
        let got = codes(&report.problems);
        if got != [code] {
            failures.push(format!("{file}: expected exactly [{code}], got {got:?}"));
            continue;
        }
        let problem = &report.problems[0];
        assert!(problem.problem.is_error(), "{file}: {code} is an error");
        let at = position(&text, problem);
        if at != (line, column) {
            failures.push(format!(
                "{file}: {code} points at {}:{}, expected {line}:{column}: {}",
                at.0, at.1, problem.problem.message
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_misspelt_field_gets_a_did_you_mean() {
    let report = report(&broken("unknown-field.yaml"));
    let problem = find(&report, "BP102");
    assert!(problem.problem.message.contains("`schedul`"));
    assert_eq!(
        problem.problem.help.as_deref(),
        Some("did you mean `schedule`?")
    );
}

#[test]
fn a_misspelt_destination_and_dependency_get_a_did_you_mean() {
    let destination = report(&broken("unknown-destination.yaml"));
    assert_eq!(
        find(&destination, "BP110").problem.help.as_deref(),
        Some("did you mean `offsite`?")
    );
    let dependency = report(&broken("unknown-dependency.yaml"));
    assert_eq!(
        find(&dependency, "BP111").problem.help.as_deref(),
        Some("did you mean `database`?")
    );
}

#[test]
fn a_dependency_cycle_names_the_whole_cycle_and_every_edge() {
    let path = broken("dependency-cycle.yaml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let report = report(&path);
    let problem = find(&report, "BP112");
    assert!(
        problem.problem.message.contains("a → b → c → a"),
        "{}",
        problem.problem.message
    );
    // The primary span is a's depends_on; the others are b's and c's.
    let lines: Vec<usize> = problem
        .problem
        .extra_spans
        .iter()
        .map(|(span, _)| line_col(&text, span.offset()).0)
        .collect();
    assert_eq!(position(&text, problem).0, 13);
    assert_eq!(lines, [17, 21]);
}

#[test]
fn a_duplicate_points_at_both_declarations() {
    let path = broken("duplicate-name.yaml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let report = report(&path);
    let problem = find(&report, "BP106");
    let first: Vec<usize> = problem
        .problem
        .extra_spans
        .iter()
        .map(|(span, _)| line_col(&text, span.offset()).0)
        .collect();
    assert_eq!(first, [10]);
}

#[test]
fn an_unclosed_quote_says_and_points_where_the_quote_began() {
    let text = "version: 1\nsources:\n  a:\n    schedule: \"0 3 * * *\n    path: x\n";
    let err = load_str(text, Path::new("q.yaml"), &root())
        .expect_err("an unclosed quote is a syntax error");
    let problem = find(&err, "BP101");
    assert!(
        problem
            .problem
            .message
            .contains("while scanning a quoted scalar at line 4 column 15"),
        "{}",
        problem.problem.message
    );
    // Not the end of the file, where the scanner gave up.
    assert_eq!(position(text, problem), (4, 15));
    let single = "version: 1\nsources:\n  a:\n    path: 'uploads\n";
    let err = load_str(single, Path::new("q.yaml"), &root()).expect_err("unclosed");
    assert_eq!(position(single, find(&err, "BP101")), (4, 11));
}

/// A policy naming `key` (relative to tests/fixtures/keys) as its one recipient.
fn with_recipient(key: &str) -> String {
    format!(
        "version: 1\nencryption:\n  recipients:\n    - {key}\ndestinations:\n  local: {{type: memory}}\nsources:\n  media:\n    type: files\n    path: uploads\n"
    )
}

fn keys_dir() -> PathBuf {
    root().join("tests/fixtures/keys")
}

#[test]
fn every_form_of_secret_key_is_refused_as_a_secret_key_at_its_line() {
    for key in [
        "demo-recipient.secret.asc",
        "gnupg-2.2.secret.asc",
        "gnupg-2.2.secret.gpg",
        "gnupg-2.2.public-then-secret.asc",
    ] {
        let text = with_recipient(key);
        let err =
            load_str(&text, Path::new("k.yaml"), &keys_dir()).expect_err("a secret key is refused");
        assert_eq!(codes(&err.problems), ["BP118"], "{key}");
        let problem = &err.problems[0];
        assert!(
            problem.problem.message.contains("SECRET key") && problem.problem.message.contains(key),
            "{key}: {}",
            problem.problem.message
        );
        assert!(
            problem
                .problem
                .message
                .contains("must never be on the backup host"),
            "{key}"
        );
        assert_eq!(position(&text, problem), (4, 7), "{key}");
    }
}

#[test]
fn a_public_key_armored_or_not_is_accepted() {
    for (dir, key) in [
        (keys_dir(), "gnupg-2.2.asc"),
        (root().join("policies/keys"), "demo-recipient.asc"),
    ] {
        let text = with_recipient(key);
        let loaded = load_str(&text, Path::new("k.yaml"), &dir)
            .unwrap_or_else(|e| panic!("{key}: {:?}", codes(&e.problems)));
        assert_eq!(loaded.policy.recipients, [dir.join(key)]);
    }
}

#[test]
fn a_malformed_or_foreign_key_file_names_the_file_at_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let public = std::fs::read_to_string(keys_dir().join("gnupg-2.2.asc")).expect("key");
    // One base64 character changed: the armor's checksum or the packets break.
    let lines: Vec<&str> = public.lines().collect();
    let mut garbled: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    garbled[5] = garbled[5].replacen(|c: char| c.is_ascii_alphabetic(), "!", 3);
    std::fs::write(dir.path().join("garbled.asc"), garbled.join("\n")).expect("write");
    std::fs::write(
        dir.path().join("empty-armor.asc"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n",
    )
    .expect("write");
    std::fs::copy(
        keys_dir().join("truncated.asc"),
        dir.path().join("truncated.asc"),
    )
    .expect("copy");
    for key in ["truncated.asc", "garbled.asc", "empty-armor.asc"] {
        let text = with_recipient(key);
        let err = load_str(&text, Path::new("k.yaml"), dir.path()).expect_err(key);
        assert_eq!(codes(&err.problems), ["BP122"], "{key}: {:?}", err.problems);
        let problem = &err.problems[0];
        assert!(problem.problem.message.contains(key), "{key}");
        assert_eq!(position(&text, problem), (4, 7), "{key}");
    }
    std::fs::write(
        dir.path().join("ssh.pub"),
        "ssh-ed25519 AAAAC3Nz backup@host\n",
    )
    .expect("write");
    let text = with_recipient("ssh.pub");
    let err = load_str(&text, Path::new("k.yaml"), dir.path()).expect_err("ssh key");
    assert_eq!(codes(&err.problems), ["BP118"]);
    assert!(
        err.problems[0]
            .problem
            .message
            .contains("not an OpenPGP public key")
    );
}

const TZ_BASE: &str = "version: 1\nencryption:\n  recipients: [keys/demo-recipient.asc]\ndestinations:\n  local: {type: memory}\nsources:\n  media:\n    type: files\n    path: uploads\n";

fn with_timezone(tz: &str) -> Result<backplan::policy::Loaded, PolicyReport> {
    let text = format!("{TZ_BASE}    timezone: {tz}\n");
    load_str(&text, Path::new("t.yaml"), &root().join("policies"))
}

#[test]
fn abbreviated_and_alias_time_zones_are_refused_with_the_zone_to_use() {
    for (tz, meant) in [
        ("CET", "Europe/Berlin"),
        ("EST", "America/New_York"),
        ("MST", "America/Denver"),
        ("PST8PDT", "America/Los_Angeles"),
        ("GMT", "UTC"),
        ("Zulu", "UTC"),
        ("Singapore", "Asia/Singapore"),
        ("cet", "Europe/Berlin"),
    ] {
        let err = with_timezone(tz).expect_err(tz);
        assert_eq!(codes(&err.problems), ["BP114"], "{tz}");
        let problem = &err.problems[0];
        let help = problem.problem.help.as_deref().unwrap_or_default();
        assert!(
            help.contains(&format!("did you mean `{meant}`?")),
            "{tz}: {help}"
        );
        let text = format!("{TZ_BASE}    timezone: {tz}\n");
        assert_eq!(position(&text, problem), (10, 15), "{tz}");
    }
    let err = with_timezone("Japan").expect_err("an alias");
    assert!(err.problems[0].problem.message.contains("Area/Location"));
}

#[test]
fn area_location_zones_and_utc_are_accepted() {
    for tz in [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Argentina/Buenos_Aires",
        "Etc/UTC",
        "Etc/GMT+5",
    ] {
        let loaded = with_timezone(tz).unwrap_or_else(|e| panic!("{tz}: {:?}", e.problems));
        assert_eq!(
            loaded.policy.sources["media"].schedule.timezone().name(),
            tz
        );
    }
}

#[test]
fn a_cron_with_seconds_or_a_year_is_refused_and_five_fields_are_asked_for() {
    for (cron, fields) in [("30 0 3 * * *", 6), ("0 0 3 * * * 2026", 7), ("0 3 * *", 4)] {
        let text = format!("{TZ_BASE}    schedule: \"{cron}\"\n");
        let err = load_str(&text, Path::new("c.yaml"), &root().join("policies")).expect_err(cron);
        assert_eq!(codes(&err.problems), ["BP113"], "{cron}");
        let message = &err.problems[0].problem.message;
        assert!(
            message.contains(&format!("has {fields} fields")) && message.contains("five"),
            "{cron}: {message}"
        );
        assert_eq!(position(&text, &err.problems[0]), (10, 15));
    }
    for cron in [
        "0 3 * * *",
        "*/15 * * * *",
        "@daily",
        "@hourly",
        "0 3 * * MON-FRI",
    ] {
        let text = format!("{TZ_BASE}    schedule: \"{cron}\"\n");
        load_str(&text, Path::new("c.yaml"), &root().join("policies"))
            .unwrap_or_else(|e| panic!("{cron}: {:?}", e.problems));
    }
}

#[test]
fn an_enum_error_inside_a_source_points_at_the_value() {
    let text = format!(
        "{}  cache:\n    type: redis\n    url: redis://cache:6379\n    username: backup\n    mode: bogus\n",
        TZ_BASE
    );
    let err = load_str(&text, Path::new("e.yaml"), &root().join("policies")).expect_err("bogus");
    assert_eq!(codes(&err.problems), ["BP103"]);
    assert_eq!(position(&text, &err.problems[0]), (14, 11));
    assert!(err.problems[0].problem.message.contains("`bogus`"));
    // A value of the wrong type inside a source too.
    let text = format!(
        "{TZ_BASE}    exclude: [\"*.tmp\"]\n  db:\n    type: postgres\n    url: postgres://db/app\n    jobs: many\n"
    );
    let err = load_str(&text, Path::new("e.yaml"), &root().join("policies")).expect_err("jobs");
    assert_eq!(codes(&err.problems), ["BP103"]);
    assert_eq!(position(&text, &err.problems[0]), (14, 11));
}

#[test]
fn a_second_document_is_refused_at_its_marker() {
    let text = format!("{TZ_BASE}---\nversion: 1\n");
    let err = load_str(&text, Path::new("m.yaml"), &root().join("policies")).expect_err("two");
    assert_eq!(codes(&err.problems), ["BP123"]);
    assert_eq!(position(&text, &err.problems[0]), (10, 1));
    // One document with explicit markers is fine.
    let text = format!("---\n{TZ_BASE}...\n");
    load_str(&text, Path::new("m.yaml"), &root().join("policies"))
        .unwrap_or_else(|e| panic!("one document: {:?}", e.problems));
}

#[test]
fn a_policy_that_is_not_utf8_is_refused_at_the_first_bad_byte() {
    let mut bytes = TZ_BASE.as_bytes().to_vec();
    bytes.extend_from_slice(b"    exclude: [\"caf\xe9\"]\n");
    let err = backplan::policy::load_bytes(&bytes, Path::new("l.yaml"), &root().join("policies"))
        .expect_err("Latin-1");
    assert_eq!(codes(&err.problems), ["BP124"]);
    let shown = String::from_utf8_lossy(&bytes);
    assert_eq!(position(&shown, &err.problems[0]), (10, 19));
    assert!(err.problems[0].problem.message.contains("0xe9"));
}

#[test]
fn a_deeply_nested_policy_fails_at_once_before_the_parser_sees_it() {
    let started = std::time::Instant::now();
    let text = "[".repeat(100_000);
    let err = load_str(&text, Path::new("d.yaml"), &root()).expect_err("too deep");
    assert_eq!(codes(&err.problems), ["BP126"]);
    assert_eq!(position(&text, &err.problems[0]), (1, 64));
    let text = format!("{TZ_BASE}    exclude: {}\n", "{a: ".repeat(100_000));
    let err = load_str(&text, Path::new("d.yaml"), &root()).expect_err("too deep");
    assert_eq!(codes(&err.problems), ["BP126"]);
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
}

#[test]
fn a_policy_over_one_mib_fails_at_once_before_the_parser_sees_it() {
    let started = std::time::Instant::now();
    let mut text = TZ_BASE.to_string();
    let mut n = 0;
    while text.len() <= 1024 * 1024 {
        text.push_str(&format!("  s{n}: {{type: files, path: p{n}}}\n"));
        n += 1;
    }
    let err = load_str(&text, Path::new("big.yaml"), &root().join("policies")).expect_err("large");
    assert_eq!(codes(&err.problems), ["BP125"]);
    let (span, _) = err.problems[0].problem.span.as_ref().expect("a span");
    assert_eq!(span.offset(), 1024 * 1024);
    // From a file too, which is not read past the limit.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, &text).expect("write");
    let err = load_file(&path).expect_err("large");
    assert_eq!(codes(&err.problems), ["BP125"]);
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
}

#[test]
fn spans_stay_right_after_non_ascii_text() {
    // A comment with multi-byte characters before the mistake must not shift it.
    let text = "# Zürich → Köln: ünïcödé\nversion: 1\nencryption:\n  recipients: [keys/demo-recipient.asc]\ndestinations:\n  local: {type: memory}\nsources:\n  media:\n    type: files\n    path: uploads\n    schedule: \"0 25 * * *\"\n";
    let err = load_str(text, Path::new("u.yaml"), &root().join("policies"))
        .expect_err("hour 25 is a bad schedule");
    assert_eq!(codes(&err.problems), ["BP113"]);
    assert_eq!(position(text, &err.problems[0]), (11, 15));
}

#[test]
fn several_independent_problems_are_all_reported_at_once() {
    let path = root().join("tests/fixtures/several-problems.yaml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let report = report(&path);
    let mut got: Vec<(&str, usize)> = report
        .problems
        .iter()
        .map(|p| (p.problem.code.id(), position(&text, p).0))
        .collect();
    got.sort();
    // An unknown field in `media`, an unknown destination in `db`, a bad cron in `cache`.
    assert_eq!(got, [("BP102", 21), ("BP110", 13), ("BP113", 17)]);
    assert_eq!(report.errors(), 3);
}

#[test]
fn an_entry_that_does_not_parse_is_still_known_by_name() {
    // `media` has an unknown field and `offsite` a bad type; `thumbs` refers to both.
    // Only those two mistakes are reported, not "unknown source/destination".
    let text = "version: 1\nencryption:\n  recipients: [keys/demo-recipient.asc]\ndestinations:\n  local: {type: memory}\n  offsite: {type: floppy}\nsources:\n  media:\n    type: files\n    path: uploads\n    exlude: [\"*.tmp\"]\n  thumbs:\n    type: files\n    path: thumbs\n    depends_on: [media]\n    destinations: [local, offsite]\n";
    let err =
        load_str(text, Path::new("p.yaml"), &root().join("policies")).expect_err("two mistakes");
    let mut got = codes(&err.problems);
    got.sort();
    assert_eq!(got, ["BP102", "BP103"], "{:?}", err.problems);
}

const SECRETS_BASE: &str = "version: 1\nencryption:\n  recipients: [keys/demo-recipient.asc]\ndestinations:\n  local: {type: memory}\nsources:\n  db:\n    type: postgres\n";

#[test]
fn an_unset_env_reference_is_a_warning() {
    let var = "BACKPLAN_TEST_SURELY_UNSET_VARIABLE_7F3A";
    assert!(std::env::var_os(var).is_none());
    let text =
        format!("{SECRETS_BASE}    url: postgres://backup@db/app\n    password: ${{env:{var}}}\n");
    let loaded = load_str(&text, Path::new("w.yaml"), &root().join("policies"))
        .unwrap_or_else(|e| panic!("an unset variable is no error: {:?}", e.problems));
    assert_eq!(codes(&loaded.warnings), ["BP130"]);
    let warning = &loaded.warnings[0];
    assert!(!warning.problem.is_error());
    assert!(warning.problem.message.contains(var));
    assert_eq!(position(&text, warning).0, 10);
}

#[test]
fn an_inline_password_in_a_postgres_url_is_flagged() {
    let text = format!("{SECRETS_BASE}    url: postgres://backup:hunter2@db/app\n");
    let loaded = load_str(&text, Path::new("s.yaml"), &root().join("policies"))
        .unwrap_or_else(|e| panic!("an inline password is a warning: {:?}", e.problems));
    assert_eq!(codes(&loaded.warnings), ["BP131"]);
    let warning = &loaded.warnings[0];
    assert!(!warning.problem.is_error());
    assert_eq!(position(&text, warning).0, 9);
    // The message names the field, never the password.
    assert!(!warning.problem.message.contains("hunter2"));
    // Nor do the policy's lines that the report quotes.
    let quoted = warning.source.as_ref().expect("the policy's text").inner();
    assert!(
        quoted.contains("    url: postgres://backup:*******@db/app\n"),
        "{quoted}"
    );
    assert!(!quoted.contains("hunter2"), "{quoted}");
}

#[test]
fn a_parallel_dump_without_a_spool_dir_and_zero_jobs_point_at_jobs() {
    let base = format!("{SECRETS_BASE}    url: postgres://backup@db/app\n");
    let text = format!("{base}    jobs: 4\n");
    let Err(err) = load_str(&text, Path::new("j.yaml"), &root().join("policies")) else {
        panic!("jobs above 1 without spool_dir is an error");
    };
    assert_eq!(codes(&err.problems), ["BP104"]);
    let problem = &err.problems[0];
    assert!(problem.problem.message.contains("spool_dir"), "{problem:?}");
    assert_eq!(position(&text, problem), (10, 5));

    let text = format!("{base}    jobs: 0\n");
    let Err(err) = load_str(&text, Path::new("j.yaml"), &root().join("policies")) else {
        panic!("jobs 0 is an error");
    };
    assert_eq!(codes(&err.problems), ["BP103"]);
    assert_eq!(position(&text, &err.problems[0]), (10, 11));

    let text = format!("{base}    jobs: 4\n    spool_dir: /var/tmp/backplan\n");
    let loaded = load_str(&text, Path::new("j.yaml"), &root().join("policies"))
        .unwrap_or_else(|e| panic!("jobs with a spool_dir is fine: {:?}", e.problems));
    assert!(loaded.warnings.is_empty(), "{:?}", codes(&loaded.warnings));
}

// --- the binary's rendering ---

fn validate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backplan"))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env("COLUMNS", "200")
        .arg("validate")
        .args(args)
        .output()
        .expect("run backplan")
}

#[test]
fn validate_renders_each_code_at_file_line_column_and_exits_1() {
    let mut failures = Vec::new();
    for &(file, code, line, column) in all_broken() {
        let path = format!("tests/fixtures/broken/{file}");
        let out = validate(&["-p", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let place = format!("{file}:{line}:{column}");
        if out.status.code() != Some(1) || !stderr.contains(code) || !stderr.contains(&place) {
            failures.push(format!(
                "{file}: exit {:?}, expected 1 with {code} at {place}; stderr:\n{stderr}",
                out.status.code()
            ));
        }
        if stderr.contains('\u{1b}') {
            failures.push(format!("{file}: NO_COLOR=1 but stderr has escapes"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn validate_json_prints_code_line_and_column() {
    for &(file, code, line, column) in all_broken() {
        let path = format!("tests/fixtures/broken/{file}");
        let out = validate(&["-p", &path, "--format", "json"]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{file}: stdout is not JSON: {e}"));
        let problems = json.as_array().expect("a JSON array");
        assert_eq!(problems.len(), 1, "{file}: {json}");
        let p = &problems[0];
        assert_eq!(p["code"], code, "{file}");
        assert_eq!(p["severity"], "error", "{file}");
        assert_eq!(p["line"], line, "{file}");
        assert_eq!(p["column"], column, "{file}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(p["help"].as_str().is_some_and(|h| !h.is_empty()));
    }
}

#[test]
fn validate_json_of_several_problems_lists_them_all() {
    let out = validate(&[
        "-p",
        "tests/fixtures/several-problems.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut got: Vec<(String, u64)> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["code"].as_str().expect("code").to_string(),
                p["line"].as_u64().expect("line"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("BP102".to_string(), 21),
            ("BP110".to_string(), 13),
            ("BP113".to_string(), 17)
        ]
    );
}

/// An S3 destination with Object Lock of `retain_for`, written to by one source kept
/// `keep_daily: 30` and another kept `keep_weekly: 6` (42 days).
fn object_lock_policy(retain_for: &str) -> String {
    format!(
        r#"version: 1
encryption:
  recipients: [gnupg-2.2.asc]
destinations:
  vault:
    type: s3
    bucket: backups
    object_lock:
      retain_for: {retain_for}
sources:
  db:
    type: postgres
    url: postgres://backup@db:5432/app
    retention: {{ keep_daily: 30 }}
  files:
    type: files
    path: /srv
    retention: {{ keep_daily: 7, keep_weekly: 6 }}
"#
    )
}

#[test]
fn an_object_lock_shorter_than_the_longest_retention_is_warned_at_its_value() {
    let text = object_lock_policy("35d");
    let loaded = load_str(&text, Path::new("l.yaml"), &keys_dir()).expect("a valid policy");
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.problem.code.id() == "BP135")
        .unwrap_or_else(|| panic!("no BP135 in {:?}", codes(&loaded.warnings)));
    // The longest keep is the weekly rule of `files`: 6 weeks.
    assert!(
        warning
            .problem
            .message
            .contains("source `files` keeps snapshots there up to 42d")
            && warning.problem.message.contains("locks objects for 35d"),
        "{}",
        warning.problem.message
    );
    assert_eq!(position(&text, warning), (9, 19));

    let long_enough = object_lock_policy("45d");
    let loaded = load_str(&long_enough, Path::new("l.yaml"), &keys_dir()).expect("valid");
    assert!(
        !codes(&loaded.warnings).contains(&"BP135"),
        "{:?}",
        codes(&loaded.warnings)
    );
}

#[test]
fn an_object_lock_period_that_is_not_a_duration_is_refused() {
    let text = object_lock_policy("forever");
    let err = load_str(&text, Path::new("l.yaml"), &keys_dir()).expect_err("refused");
    let problem = find(&err, "BP116");
    assert!(
        problem.problem.message.contains("retain_for"),
        "{}",
        problem.problem.message
    );
    assert_eq!(position(&text, problem), (9, 19));
}

/// A valid policy with `notify` appended.
fn with_notify(notify: &str) -> String {
    format!("{TZ_BASE}notify:\n{notify}")
}

fn notify_report(notify: &str) -> Result<backplan::policy::Loaded, PolicyReport> {
    load_str(
        &with_notify(notify),
        Path::new("n.yaml"),
        &root().join("policies"),
    )
}

/// A problem as miette draws it, source lines included.
fn drawn(problem: &Located) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new()
        .render_report(&mut out, problem)
        .expect("render");
    out
}

#[test]
fn an_unknown_placeholder_gets_a_did_you_mean_or_the_list() {
    let err = notify_report(
        "  chat:\n    type: webhook\n    url: https://chat.invalid/${env:PATH}\n    message: \"{status} {hots}\"\n",
    )
    .expect_err("unknown placeholder");
    assert_eq!(codes(&err.problems), ["BP136"]);
    let problem = &err.problems[0];
    assert_eq!(
        problem.problem.help.as_deref(),
        Some("did you mean `{host}`?")
    );
    // The span is the placeholder itself: line 13, after `{status} `.
    assert_eq!(
        position(
            &with_notify(
                "  chat:\n    type: webhook\n    url: https://chat.invalid/${env:PATH}\n    message: \"{status} {hots}\"\n"
            ),
            problem
        ),
        (14, 24)
    );
    let err = notify_report(
        "  chat:\n    type: webhook\n    url: https://chat.invalid/${env:PATH}\n    message: \"{xyzzy} done\"\n",
    )
    .expect_err("unknown placeholder");
    let help = err.problems[0].problem.help.as_deref().unwrap_or_default();
    assert!(
        help.contains("{summary}") && help.contains("{run_id}"),
        "{help}"
    );
    let err = notify_report(
        "  chat:\n    type: webhook\n    url: https://chat.invalid/${env:PATH}\n    message: \"half {status\"\n",
    )
    .expect_err("unbalanced");
    assert_eq!(codes(&err.problems), ["BP136"]);
}

#[test]
fn notification_states_timeouts_and_urls_are_checked_at_their_lines() {
    let text = "  hc:\n    type: healthchecks\n    url: ${env:PATH}\n    states: []\n    timeout: 5m\n  hook:\n    type: webhook\n    url: ftp://files.invalid/${env:PATH}\n    headers:\n      \"bad header\": x\n";
    let err = notify_report(text).expect_err("broken notifications");
    let mut got: Vec<(&str, (usize, usize))> = err
        .problems
        .iter()
        .map(|p| (p.problem.code.id(), position(&with_notify(text), p)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("BP103", (15, 14)), // timeout 5m is over 60s
            ("BP103", (18, 10)), // not an http(s) URL
            ("BP103", (20, 7)),  // not a header name
            ("BP139", (14, 13)), // no state
        ]
    );
}

#[test]
fn an_unset_notification_reference_is_its_own_warning_not_bp130() {
    let loaded = notify_report(
        "  hc:\n    type: healthchecks\n    url: ${env:BACKPLAN_TEST_NEVER_SET_HC}\n",
    )
    .expect("valid with a warning");
    assert_eq!(codes(&loaded.warnings), ["BP137"]);
    assert!(!loaded.warnings[0].problem.is_error());
}

#[test]
fn a_notification_secret_written_inline_is_a_warning_and_never_shown() {
    let secret_url = "https://hc-ping.com/0d338dcc-a054-11ec-b909-0242ac120002";
    let key = "R0c1f9e2d4b84a6f8c3e0a7b5d2f1e9c";
    let loaded = notify_report(&format!(
        "  hc:\n    type: healthchecks\n    url: {secret_url}\n  on-call:\n    type: pagerduty\n    routing_key: {key}\n    url: https://events.pagerduty.com/v2/enqueue\n  hook:\n    type: webhook\n    url: ${{env:PATH}}\n    headers:\n      Authorization: Bearer abcdef123456\n      Title: backups\n"
    ))
    .expect("valid with warnings");
    // The URL, the routing key, the Authorization header; not PagerDuty's endpoint
    // nor a harmless header.
    assert_eq!(codes(&loaded.warnings), ["BP138", "BP138", "BP138"]);
    for warning in &loaded.warnings {
        let shown = drawn(warning);
        for secret in ["0d338dcc", key, "abcdef123456"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("***"), "{shown}");
    }
}
