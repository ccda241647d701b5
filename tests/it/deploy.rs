//! The deployment files, checked for what can be checked without a Docker engine:
//! `deploy/compose.yaml`'s structure (the services, backplan as a `daemon` sidecar with
//! its policy mounted, no literal secret), that the policy it mounts validates and gets
//! every variable it refers to, and the `Dockerfile`'s stages, packages, user and
//! entrypoint. The systemd units are checked in the `daemon` module.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("deploy/compose.yaml")).expect("compose.yaml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A service's `volumes:` as (source, target, read-only).
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    strings(&service["volumes"])
        .iter()
        .map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            (
                parts[0].to_string(),
                parts.get(1).copied().unwrap_or_default().to_string(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

/// The variables of the `${PREFIXNAME…}` references outside comments of a text
/// (`prefix` is `env:` in a policy, empty in compose.yaml).
fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let opening = format!("${{{prefix}");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|line| {
            line.match_indices(&opening)
                .map(|(i, _)| {
                    let rest = &line[i + opening.len()..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    rest[..end].to_string()
                })
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn looks_secret(name: &str) -> bool {
    ["PASSWORD", "SECRET", "KEY", "TOKEN"]
        .iter()
        .any(|w| name.to_ascii_uppercase().contains(w))
}

#[test]
fn compose_runs_the_stack_with_backplan_as_a_daemon_sidecar() {
    let compose = compose();
    for name in ["app", "postgres", "redis", "minio", "backplan"] {
        service(&compose, name);
    }
    let backplan = service(&compose, "backplan");
    let command = strings(&backplan["command"]);
    assert_eq!(
        command.first().map(String::as_str),
        Some("daemon"),
        "{command:?}"
    );
    let listen = command
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| command.get(i + 1))
        .expect("the daemon listens");
    let port = listen.rsplit(':').next().expect("a port");
    assert!(
        strings(&backplan["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "the /healthz port is published"
    );
    assert_eq!(
        backplan["environment"]["BACKPLAN_POLICY"].as_str(),
        Some("/etc/backplan/policy.yaml")
    );
    let mounts = mounts(backplan);
    assert!(
        mounts.contains(&(
            "./backplan.yaml".into(),
            "/etc/backplan/policy.yaml".into(),
            true
        )),
        "the policy is mounted read-only: {mounts:?}"
    );
    // The app's uploads volume is what the files source reads, read-only.
    let app_uploads = mounts_of(&compose, "app")
        .into_iter()
        .find(|(_, target, _)| target == "/srv/medianest/uploads")
        .expect("the app writes the uploads volume");
    assert!(
        mounts
            .iter()
            .any(|(source, target, ro)| *source == app_uploads.0
                && target == "/srv/medianest/uploads"
                && *ro),
        "{mounts:?}"
    );
    assert_eq!(
        backplan["init"].as_bool(),
        Some(true),
        "SIGTERM reaches backplan"
    );
}

fn mounts_of(compose: &Value, name: &str) -> Vec<(String, String, bool)> {
    mounts(service(compose, name))
}

#[test]
fn compose_holds_no_literal_secret() {
    let text = read("deploy/compose.yaml");
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let Some(env) = service["environment"].as_mapping() else {
            continue;
        };
        for (key, value) in env {
            let key = key.as_str().unwrap_or_default();
            let value = value.as_str().unwrap_or_default();
            if looks_secret(key) {
                assert!(
                    value.starts_with("${") && value.ends_with('}') && !value[2..].contains("${"),
                    "{name}.environment.{key} is not a reference: {value}"
                );
            }
            // Credentials inside a URL are references too.
            if let Some((_, after)) = value.split_once("://")
                && let Some((credentials, _)) = after.split_once('@')
            {
                assert!(
                    credentials.split(':').all(|c| c.starts_with("${")),
                    "{name}.environment.{key} has literal credentials"
                );
            }
        }
        let command = strings(&service["command"]);
        if let Some(i) = command.iter().position(|a| a == "--requirepass") {
            assert!(
                command[i + 1].starts_with("${"),
                "{name}: a literal password"
            );
        }
    }
    // Every variable compose reads is in env.example, the file to copy to .env.
    let example = read("deploy/env.example");
    for name in references(&text, "") {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{name}="))),
            "deploy/env.example lacks {name}"
        );
    }
    // And the example holds no value for a secret.
    for line in example.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.split_once('=') {
            assert!(
                !looks_secret(name) || value.is_empty(),
                "env.example sets {name}"
            );
        }
    }
}

#[test]
fn the_mounted_policy_validates_and_gets_every_variable_it_refers_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys");
    std::fs::copy(
        root().join("policies/keys/demo-recipient.asc"),
        dir.path().join("keys/demo-recipient.asc"),
    )
    .expect("copy the key");
    let policy = dir.path().join("policy.yaml");
    std::fs::copy(root().join("deploy/backplan.yaml"), &policy).expect("copy the policy");
    let loaded = match backplan::policy::load_file(&policy) {
        Ok(loaded) => loaded,
        Err(report) => panic!(
            "deploy/backplan.yaml does not validate: {:?}",
            report
                .problems
                .iter()
                .map(|p| p.problem.message.clone())
                .collect::<Vec<_>>()
        ),
    };
    assert!(loaded.warnings.iter().all(|w| !w.problem.is_error()));

    let compose = compose();
    let backplan = service(&compose, "backplan");
    let env = backplan["environment"].as_mapping().expect("environment");
    let referred = references(&read("deploy/backplan.yaml"), "env:");
    assert!(referred.contains("BACKPLAN_REPOSITORY_KEY"), "{referred:?}");
    for name in referred {
        assert!(
            env.contains_key(Value::from(name.as_str())),
            "the policy refers to {name}, which the backplan service does not get"
        );
    }
    // The local destination's folder is a volume, the keys are mounted where the
    // policy looks for them.
    let mounts = mounts(backplan);
    assert!(
        mounts
            .iter()
            .any(|(_, t, _)| t == "/var/lib/backplan/backups")
    );
    assert!(mounts.iter().any(|(_, t, _)| t == "/etc/backplan/keys"));
    let policy_text = read("deploy/backplan.yaml");
    assert!(policy_text.contains("root: /var/lib/backplan/backups"));
    assert!(policy_text.contains("endpoint: http://minio:9000"));
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_daemon_as_a_user_in_another() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].contains("bookworm"));
    assert!(froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:bookworm-slim"));
    // The build stage installs what scripts/install-deps installs for a build.
    let install_deps = read("scripts/install-deps");
    for package in ["pkg-config", "libssl-dev", "libclang-dev"] {
        assert!(
            install_deps.contains(package),
            "install-deps names {package}"
        );
        assert!(
            dockerfile.contains(package),
            "the build stage lacks {package}"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("COPY --from=build "));
    // PostgreSQL's client tools of every supported major version.
    let majors = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG PG_MAJORS="))
        .expect("ARG PG_MAJORS")
        .trim_matches('"');
    let majors: Vec<u32> = majors
        .split_whitespace()
        .map(|m| m.parse().expect("a major version"))
        .collect();
    for supported in 14..=18 {
        assert!(majors.contains(&supported), "PostgreSQL {supported}");
    }
    assert!(dockerfile.contains("postgresql-client-$v"));
    assert!(dockerfile.contains("apt.postgresql.org"));
    // A drill restores Redis into a throwaway redis-server.
    assert!(
        dockerfile.contains(" redis-server"),
        "the runtime lacks redis-server"
    );
    // Not root, then the entrypoint and the daemon.
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert_eq!(
        lines.iter().rev().find(|l| l.starts_with("ENTRYPOINT ")),
        Some(&r#"ENTRYPOINT ["backplan"]"#)
    );
    let cmd = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    assert_eq!(cmd.first().map(String::as_str), Some("daemon"));
    let listen = cmd
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| cmd.get(i + 1))
        .expect("CMD listens");
    let port = listen.rsplit(':').next().expect("a port");
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains(&format!("127.0.0.1:{port}/healthz")));
}
