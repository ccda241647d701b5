//! A local Azure Blob Storage for tests: Microsoft's emulator Azurite (`azurite-blob`,
//! from npm) on a free loopback port, storing into a temporary folder, with telemetry
//! off. One per [`AzuriteServer`], killed when the handle is dropped.
//!
//! `scripts/install-deps` installs Azurite into `target/azurite` (it needs node and
//! npm); `$BACKPLAN_AZURITE` names another `azurite-blob`, and one on PATH is used too.
//! Without one, [`AzuriteServer::start`] fails the test when `CI` is set and otherwise
//! skips it (returns `None`) loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::{self, Daemon};
use super::{free_port, missing, on_path};

/// Azurite's well-known development account and key (public, in Azure's docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 3;

/// Creates a container with a request signed by the account key (Shared Key), as
/// Azure's own tools do: OpenDAL does not create containers. Run by node, which
/// Azurite needs anyway. Arguments: endpoint, account, key, container.
const CREATE_CONTAINER: &str = r#"
const http = require("http"), crypto = require("crypto");
const [endpoint, account, key, container] = process.argv.slice(1);
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString(), version = "2021-08-06";
const canonical = `/${account}${url.pathname}\nrestype:container`;
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
  `x-ms-date:${date}\nx-ms-version:${version}\n${canonical}`].join("\n");
const sig = crypto.createHmac("sha256", Buffer.from(key, "base64"))
  .update(toSign, "utf8").digest("base64");
const req = http.request(url, { method: "PUT", headers: {
  "x-ms-date": date, "x-ms-version": version, "Content-Length": 0,
  Authorization: `SharedKey ${account}:${sig}` } }, (res) => {
  let body = "";
  res.on("data", (c) => body += c);
  res.on("end", () => {
    if (res.statusCode === 201) process.exit(0);
    console.error(`HTTP ${res.statusCode}: ${body}`);
    process.exit(1);
  });
});
req.on("error", (e) => { console.error(String(e)); process.exit(1); });
req.end();
"#;

/// A running Azurite blob service; killed on drop.
#[derive(Debug)]
pub struct AzuriteServer {
    daemon: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

fn azurite_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BACKPLAN_AZURITE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/azurite/node_modules/.bin/azurite-blob");
    if local.is_file() {
        return Some(local);
    }
    on_path("azurite-blob")
}

impl AzuriteServer {
    /// Starts the emulator and waits until it answers; `None` (after a loud message)
    /// when there is no Azurite or node and this is not CI.
    pub fn start() -> Option<AzuriteServer> {
        let why = "run scripts/install-deps (it installs Azurite from npm into target/azurite)";
        let Some(azurite) = azurite_path() else {
            missing(
                "Azure Blob",
                &format!(
                    "azurite-blob not found (not at $BACKPLAN_AZURITE, target/azurite or on PATH); {why}"
                ),
            );
            return None;
        };
        if on_path("node").is_none() {
            missing("Azure Blob", &format!("node not found; {why}"));
            return None;
        }
        Some(daemon::start(
            &azurite.display().to_string(),
            START_ATTEMPTS,
            || AzuriteServer::spawn(&azurite),
        ))
    }

    fn spawn(azurite: &Path) -> Result<AzuriteServer, String> {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let port = free_port();
        let mut daemon = Daemon::spawn(
            "azurite",
            Command::new(azurite)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(dir.path())
                .args(["--disableTelemetry", "--skipApiVersionCheck"]),
        )?;
        daemon.wait_for_port(port, START_TIMEOUT)?;
        Ok(AzuriteServer {
            daemon,
            port,
            _dir: dir,
        })
    }

    /// The blob endpoint, for `options.endpoint` (the account is its last segment).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Creates a container.
    pub fn create_container(&self, name: &str) {
        let out = Command::new("node")
            .arg("-e")
            .arg(CREATE_CONTAINER)
            .args([&self.endpoint(), ACCOUNT, ACCOUNT_KEY, name])
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "creating container {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// What the emulator has logged.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
