//! A small harness for end-to-end tests of the `backplan` binary.
//!
//! A [`Sandbox`] is a temporary folder holding a policy (`backplan.yaml`, the default
//! `--policy`) and the demo recipient key, so nothing is written into the repository.
//! [`Sandbox::run`] starts one fluent command: arguments in, expected status, stdout
//! and stderr out, checked by [`Cmd::check`], which returns the output for more checks.

#![allow(dead_code)] // each test file uses its own part of the harness

pub mod pg;
pub mod redis;

pub mod azurite;
pub mod daemon;
pub mod http;
pub mod s3;
pub mod sftp;
pub mod tree;
pub mod webdav;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Like `policies/quickstart.yaml`, with the destination inside the sandbox.
pub const POLICY: &str = r#"version: 1

encryption:
  recipients:
    - keys/demo-recipient.asc

defaults:
  schedule: "@daily"
  timezone: UTC
  retention:
    keep_daily: 7
    keep_weekly: 4
    min_keep: 3

destinations:
  local:
    type: fs
    root: backups

sources:
  config:
    type: config
    paths:
      - example-data/config/app.env
  uploads:
    type: files
    path: example-data/uploads
    exclude:
      - "*.tmp"
    depends_on: [config]
"#;

/// The head of a policy with the demo recipient, a repository key file and one `fs`
/// destination `local`: sources follow, indented two spaces.
pub const LOCAL_POLICY_HEAD: &str = r#"version: 1
encryption:
  recipients:
    - keys/demo-recipient.asc
  repository_key_file: repo.key
destinations:
  local:
    type: fs
    root: backups
sources:
"#;

/// The secret key of the demo recipient, for restores and `verify --read-data`.
pub fn secret_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/demo-recipient.secret.asc")
}

/// `policy` with `repository_key_file: repo.key` under its recipients, so that
/// `init` makes the key and `apply` can back up.
pub fn with_repository_key(policy: &str) -> String {
    let recipients = "    - keys/demo-recipient.asc\n";
    assert!(policy.contains(recipients), "the policy names the demo key");
    policy.replacen(
        recipients,
        &format!("{recipients}  repository_key_file: repo.key\n"),
        1,
    )
}

/// A temporary working folder for the binary.
#[derive(Debug)]
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    /// A sandbox with [`POLICY`] and the demo key.
    pub fn new() -> Sandbox {
        Sandbox::with_policy(POLICY)
    }

    /// A sandbox whose `backplan.yaml` is `policy`, with the demo key beside it.
    pub fn with_policy(policy: &str) -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        };
        let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/keys/demo-recipient.asc");
        let key = std::fs::read_to_string(&key).expect("read the demo recipient key");
        sandbox.write("keys/demo-recipient.asc", &key);
        sandbox.write("backplan.yaml", policy);
        sandbox
    }

    /// A sandbox with `policy` whose repository `init` has made.
    pub fn initialised(policy: &str) -> Sandbox {
        let sandbox = Sandbox::with_policy(policy);
        sandbox.run(&["init"]).stdout("repository created").check();
        sandbox
    }

    /// [`POLICY`] with a repository key file and the files its sources name.
    pub fn with_example_data() -> Sandbox {
        Sandbox::with_policy(&with_repository_key(POLICY)).example_data()
    }

    /// Writes the files [`POLICY`]'s sources back up (one of them excluded).
    pub fn example_data(self) -> Sandbox {
        self.write(
            "example-data/config/app.env",
            "APP_URL=https://media.example.invalid\nSESSION_SECRET=demo-not-a-secret\n",
        )
        .write(
            "example-data/uploads/2026/11/hello.txt",
            "hello, backplan\n",
        )
        .write("example-data/uploads/upload.tmp", "half an upload\n");
        self
    }

    /// The sandbox folder itself.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `text` to `relative`, creating folders as needed.
    pub fn write(&self, relative: &str, text: &str) -> &Sandbox {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    pub fn read(&self, relative: &str) -> String {
        let path = self.path(relative);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The binary, run in the sandbox with a clean, colourless environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_backplan"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("BACKPLAN_POLICY")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("FORCE_COLOR")
            .stdin(Stdio::null());
        command
    }

    /// Starts a fluent command; it expects exit status 0 unless told otherwise.
    pub fn run<'a>(&'a self, args: &[&str]) -> Cmd<'a> {
        Cmd {
            sandbox: self,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            env_remove: Vec::new(),
            status: Some(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stderr_lacks: Vec::new(),
        }
    }
}

/// One command and what it must produce.
#[derive(Debug)]
#[must_use = "a command does nothing until `check` runs it"]
pub struct Cmd<'a> {
    sandbox: &'a Sandbox,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    /// `None`: any status but 0.
    status: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    stderr_lacks: Vec<String>,
}

impl Cmd<'_> {
    pub fn status(mut self, status: i32) -> Self {
        self.status = Some(status);
        self
    }

    /// The command must fail, with any non-zero status.
    pub fn fails(mut self) -> Self {
        self.status = None;
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn env_remove(mut self, name: &str) -> Self {
        self.env_remove.push(name.into());
        self
    }

    /// Standard output must contain `text`.
    pub fn stdout(mut self, text: &str) -> Self {
        self.stdout.push(text.into());
        self
    }

    /// Standard error must contain `text`.
    pub fn stderr(mut self, text: &str) -> Self {
        self.stderr.push(text.into());
        self
    }

    /// Standard error must not contain `text`.
    pub fn stderr_lacks(mut self, text: &str) -> Self {
        self.stderr_lacks.push(text.into());
        self
    }

    /// Runs the command and checks every expectation; panics with both streams if one
    /// does not hold.
    pub fn check(self) -> Run {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut command = self.sandbox.command(&args);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let output = command.output().expect("run backplan");
        let run = Run::from(output);
        let show = || {
            format!(
                "backplan {}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.args.join(" "),
                run.status,
                run.stdout,
                run.stderr
            )
        };
        match self.status {
            Some(status) => assert_eq!(
                run.status,
                Some(status),
                "unexpected exit status\n{}",
                show()
            ),
            None => assert!(
                run.status.is_some_and(|s| s != 0),
                "expected a failure\n{}",
                show()
            ),
        }
        for text in &self.stdout {
            assert!(
                run.stdout.contains(text.as_str()),
                "stdout lacks {text:?}\n{}",
                show()
            );
        }
        for text in &self.stderr {
            assert!(
                run.stderr.contains(text.as_str()),
                "stderr lacks {text:?}\n{}",
                show()
            );
        }
        for text in &self.stderr_lacks {
            assert!(
                !run.stderr.contains(text.as_str()),
                "stderr holds {text:?}\n{}",
                show()
            );
        }
        if self.status != Some(101) {
            assert!(!run.stderr.contains("panicked"), "{}", show());
        }
        run
    }
}

/// What a command produced.
#[derive(Debug)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for checks that do not care where a message went.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

// --- shared by the server harnesses (sftp, webdav, azurite) ---

/// The first executable `name` in PATH's folders.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Fails the test under CI, else says loudly that it is skipped.
pub fn missing(what: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what} tests need their server under CI: {why}");
    }
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("\n!!! SKIPPING a {what} test: {why} !!!\n\n"),
    );
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
