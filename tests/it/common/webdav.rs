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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::{self, Daemon};
use super::{free_port, missing, on_path};

/// The user and password the server wants.
pub const USER: &str = "backplan";
pub const PASSWORD: &str = "webdav-test-password";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A running `rclone serve webdav`; killed on drop.
#[derive(Debug)]
pub struct WebdavServer {
    daemon: Daemon,
    port: u16,
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
        Some(daemon::start(
            &format!("{} serve webdav", rclone.display()),
            START_ATTEMPTS,
            || WebdavServer::spawn(&rclone),
        ))
    }

    fn spawn(rclone: &Path) -> Result<WebdavServer, String> {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        std::fs::create_dir(dir.path().join("files")).expect("create files/");
        let port = free_port();
        let mut daemon = Daemon::spawn(
            "rclone",
            Command::new(rclone)
                .arg("--config")
                .arg(dir.path().join("rclone.conf"))
                .arg("serve")
                .arg("webdav")
                .arg(dir.path().join("files"))
                .args(["--addr", &format!("127.0.0.1:{port}")])
                .args(["--user", USER, "--pass", PASSWORD])
                .args(["--dir-cache-time", "0s"])
                .arg("-v"),
        )?;
        daemon.wait_for_port(port, START_TIMEOUT)?;
        Ok(WebdavServer { daemon, port, dir })
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
        self.daemon.log()
    }
}
