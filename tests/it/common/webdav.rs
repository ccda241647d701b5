//! A local WebDAV server for tests: Apache's `mod_dav_fs` (Debian's `apache2-bin`) on a
//! free loopback port, serving a temporary folder, with basic authentication. One per
//! [`WebdavServer`], a single foreground process (`-X`) killed when the handle is
//! dropped.
//!
//! WebDAV has no create-if-absent, so backplan's exclusive lock relies on a listing
//! showing every lock that exists while others come and go. Apache lists its folder
//! as it is. `rclone serve webdav` (1.60, Debian 12) was used before and does not: with
//! files created and deleted beside it, an existing file was missing from 32 of 400
//! listings, which let two exclusive holders in.
//!
//! `scripts/install-deps` installs `apache2-bin` and `apache2-utils` (for `htpasswd`);
//! `$BACKPLAN_APACHE` names another `apache2`/`httpd` binary and
//! `$BACKPLAN_APACHE_MODULES` its module folder. Without one, [`WebdavServer::start`]
//! fails the test when `CI` is set and otherwise skips it (returns `None`) loudly.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
const DEBIAN_APACHE: &str = "/usr/sbin/apache2";
const DEBIAN_MODULES: &str = "/usr/lib/apache2/modules";

/// A running Apache with WebDAV on; killed on drop.
#[derive(Debug)]
pub struct WebdavServer {
    daemon: Daemon,
    port: u16,
    dir: tempfile::TempDir,
}

struct Apache {
    binary: PathBuf,
    modules: PathBuf,
    htpasswd: PathBuf,
}

fn apache() -> Option<Apache> {
    let binary = std::env::var_os("BACKPLAN_APACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            Path::new(DEBIAN_APACHE)
                .exists()
                .then(|| DEBIAN_APACHE.into())
        })?;
    let modules = std::env::var_os("BACKPLAN_APACHE_MODULES")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEBIAN_MODULES), PathBuf::from);
    Some(Apache {
        binary,
        modules,
        htpasswd: on_path("htpasswd")?,
    })
}

impl WebdavServer {
    /// Starts a server and waits until it answers; `None` (after a loud message) when
    /// there is no Apache and this is not CI.
    pub fn start() -> Option<WebdavServer> {
        let Some(apache) = apache() else {
            missing(
                "WebDAV",
                "Apache or htpasswd not found (not at $BACKPLAN_APACHE, /usr/sbin/apache2, or on PATH); run scripts/install-deps",
            );
            return None;
        };
        Some(daemon::start(
            &format!("{} (WebDAV)", apache.binary.display()),
            START_ATTEMPTS,
            || WebdavServer::spawn(&apache),
        ))
    }

    fn spawn(apache: &Apache) -> Result<WebdavServer, String> {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let (files, run) = (dir.path().join("files"), dir.path().join("run"));
        for folder in [&files, &run] {
            std::fs::create_dir(folder).expect("create a folder for the server");
        }
        let as_root = std::fs::metadata(&files).expect("stat files/").uid() == 0;
        if as_root {
            // Run as root, Apache serves as `nobody`, who must write both folders.
            for folder in [&files, &run] {
                std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o777))
                    .expect("open the folder to the server's user");
            }
        }
        let passwords = dir.path().join("htpasswd");
        let made = Command::new(&apache.htpasswd)
            .args(["-b", "-c", "-B"])
            .arg(&passwords)
            .args([USER, PASSWORD])
            .output()
            .map_err(|e| format!("cannot run htpasswd: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "htpasswd failed: {}",
                String::from_utf8_lossy(&made.stderr)
            ));
        }
        let port = free_port();
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("authn_file_module", "mod_authn_file.so"),
            ("auth_basic_module", "mod_auth_basic.so"),
            ("dav_module", "mod_dav.so"),
            ("dav_fs_module", "mod_dav_fs.so"),
        ]
        .iter()
        .map(|(name, file)| {
            format!(
                "LoadModule {name} {}\n",
                apache.modules.join(file).display()
            )
        })
        .collect::<String>();
        let config = format!(
            "ServerRoot {run}\n\
             ServerName 127.0.0.1\n\
             Listen 127.0.0.1:{port}\n\
             {modules}\
             {user}\
             PidFile {run}/httpd.pid\n\
             ErrorLog /dev/stderr\n\
             DavLockDB {run}/davlock\n\
             LimitRequestBody 0\n\
             DocumentRoot {files}\n\
             <Directory {files}>\n\
             \x20 Dav On\n\
             \x20 AuthType Basic\n\
             \x20 AuthName backplan\n\
             \x20 AuthUserFile {passwords}\n\
             \x20 Require valid-user\n\
             </Directory>\n",
            run = run.display(),
            files = files.display(),
            passwords = passwords.display(),
            user = if as_root {
                "User nobody\nGroup nogroup\n"
            } else {
                ""
            },
        );
        let config_path = dir.path().join("httpd.conf");
        std::fs::write(&config_path, config).expect("write the server's configuration");
        let mut daemon = Daemon::spawn(
            "apache",
            Command::new(&apache.binary)
                .arg("-X")
                .arg("-f")
                .arg(&config_path),
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
