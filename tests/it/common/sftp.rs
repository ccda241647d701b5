//! A local SFTP server for tests: OpenSSH's `sshd`, one per [`SftpServer`], in the
//! foreground (`-D`) on a free loopback port, with a throwaway host key and user key
//! made by `ssh-keygen` in a temporary folder, serving that folder's `files/`. Killed
//! when the handle is dropped.
//!
//! backplan's sftp service runs the `ssh` client. So that the test neither trusts an
//! unknown host nor writes into `~/.ssh`, [`SftpServer::path_env`] puts a wrapper
//! `ssh` first on PATH that adds `-F` with this server's `known_hosts`: the host key
//! is checked strictly, as in production against `~/.ssh/known_hosts`.
//!
//! `scripts/install-deps` installs `openssh-server`; `$BACKPLAN_SSHD` names another
//! `sshd`. Without one, [`SftpServer::start`] fails the test when `CI` is set and
//! otherwise skips it (returns `None`) loudly.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::daemon::{self, Daemon};
use super::{free_port, missing, on_path};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A running `sshd`; killed on drop.
#[derive(Debug)]
pub struct SftpServer {
    daemon: Daemon,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

/// Where `sshd` is: `$BACKPLAN_SSHD`, /usr/sbin/sshd, or PATH.
fn sshd_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BACKPLAN_SSHD").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let debian = PathBuf::from("/usr/sbin/sshd");
    if debian.is_file() {
        return Some(debian);
    }
    on_path("sshd")
}

fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "backplan-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(
        status.success(),
        "ssh-keygen -f {}: {status}",
        path.display()
    );
}

impl SftpServer {
    /// Starts a server and waits until it answers. `None` (after a loud message) when
    /// `sshd`, `ssh` or `ssh-keygen` cannot be found and this is not CI.
    pub fn start() -> Option<SftpServer> {
        let why = "not found; run scripts/install-deps (Debian: openssh-server, openssh-client)";
        let Some(sshd) = sshd_path() else {
            missing("SFTP", &format!("sshd {why}"));
            return None;
        };
        for tool in ["ssh", "ssh-keygen"] {
            if on_path(tool).is_none() {
                missing("SFTP", &format!("{tool} {why}"));
                return None;
            }
        }
        // sshd run as root wants its privilege separation folder.
        if user_name() == "root" && !Path::new("/run/sshd").is_dir() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        Some(daemon::start(
            &sshd.display().to_string(),
            START_ATTEMPTS,
            || SftpServer::spawn(&sshd),
        ))
    }

    fn spawn(sshd: &Path) -> Result<SftpServer, String> {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let d = dir.path();
        std::fs::create_dir(d.join("files")).expect("create files/");
        std::fs::create_dir(d.join("bin")).expect("create bin/");
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys"))
            .expect("write authorized_keys");
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                d = d.display()
            ),
        )
        .expect("write sshd_config");
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .expect("write known_hosts");
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "UserKnownHostsFile {d}/known_hosts\nGlobalKnownHostsFile /dev/null\n",
                d = d.display()
            ),
        )
        .expect("write ssh_config");
        let ssh = on_path("ssh").expect("ssh on PATH");
        let wrapper = d.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' -F '{}/ssh_config' \"$@\"\n",
                ssh.display(),
                d.display()
            ),
        )
        .expect("write the ssh wrapper");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the ssh wrapper");
        }

        let mut daemon = Daemon::spawn(
            "sshd",
            Command::new(sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config")),
        )?;
        let listening = format!("port {port}");
        daemon.wait_until(&format!("listen on port {port}"), START_TIMEOUT, |d| {
            d.log()
                .lines()
                .any(|l| l.contains("Server listening") && l.contains(&listening))
        })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("sshd on port {port} does not answer: {e}"))?;
        Ok(SftpServer {
            daemon,
            port,
            user: user_name(),
            dir,
        })
    }

    /// The endpoint for a policy's `options.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The user's private key, for `options.key`.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("user_key")
    }

    /// The folder the server serves (an absolute path on the server, for `options.root`).
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// PATH for the backplan process: the `ssh` wrapper first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.dir.path().join("bin")];
        if let Some(old) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(dirs).expect("a PATH")
    }

    /// What the server has logged.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
