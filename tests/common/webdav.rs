//! A local WebDAV server for tests: `rclone serve webdav` (Debian's `rclone`) on a
//! free loopback port, serving a temporary folder, with basic authentication. One per
//! [`WebdavServer`], killed when the handle is dropped. Its listing cache is off
//! (`--dir-cache-time 0s`): WebDAV has no create-if-absent, so backplan's exclusive
//! lock relies on a listing showing a lock the moment it is written, as a WebDAV
//! server that lists its folder does (rclone's default 5-minute cache does not).
//!
//! `scripts/install-deps` installs rclone; `$BACKPLAN_RCLONE` names another. Without
//! one, [`WebdavServer::start`] fails the test when `CI` is set and otherwise skips it
//! (returns `None`) loudly.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, missing, on_path};

/// The user and password the server wants.
pub const USER: &str = "backplan";
pub const PASSWORD: &str = "webdav-test-password";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A running `rclone serve webdav`; killed on drop.
#[derive(Debug)]
pub struct WebdavServer {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

fn rclone_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BACKPLAN_RCLONE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    on_path("rclone")
}

impl WebdavServer {
    /// Starts a server and waits until it answers; `None` (after a loud message) when
    /// there is no rclone and this is not CI.
    pub fn start() -> Option<WebdavServer> {
        let Some(rclone) = rclone_path() else {
            missing(
                "WebDAV",
                "rclone not found (not at $BACKPLAN_RCLONE or on PATH); run scripts/install-deps",
            );
            return None;
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match WebdavServer::spawn(&rclone) {
                Ok(server) => return Some(server),
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "{} serve webdav did not start:\n{}",
            rclone.display(),
            failures.join("\n---\n")
        );
    }

    fn spawn(rclone: &Path) -> Result<WebdavServer, String> {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        std::fs::create_dir(dir.path().join("files")).expect("create files/");
        let port = free_port();
        let mut child = Command::new(rclone)
            .arg("--config")
            .arg(dir.path().join("rclone.conf"))
            .arg("serve")
            .arg("webdav")
            .arg(dir.path().join("files"))
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--user", USER, "--pass", PASSWORD])
            .args(["--dir-cache-time", "0s"])
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", rclone.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut server = WebdavServer {
            child,
            port,
            log,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "rclone on port {port} exited with {status}:\n{}",
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "rclone on port {port} did not listen within {START_TIMEOUT:?}:\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The endpoint URL, for `options.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The folder the server serves.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// What the server has logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WebdavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
