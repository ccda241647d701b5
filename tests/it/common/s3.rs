//! A local S3-compatible server for tests: moto's `moto_server`, one per [`S3Server`],
//! on a free loopback port, killed when the handle is dropped.
//!
//! `scripts/install-deps` installs moto into `target/moto-venv`; a `moto_server` on
//! PATH or named by `BACKPLAN_MOTO_SERVER` is used as well. Without one, [`S3Server::start`]
//! fails the test when `CI` is set and otherwise skips it (returns `None`) loudly.
//!
//! moto is patched at start (see [`SITECUSTOMIZE`]) so that conditional writes are
//! atomic, as they are on S3: unpatched, two racing `If-None-Match: *` writers can both
//! win. The same patch can make the server fail on purpose ([`Faults`]), counting what
//! it injected so that a test can show it was not spared.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Credentials the tests hand to backplan; moto accepts any.
pub const ACCESS_KEY_ID: &str = "backplan-test-key";
pub const SECRET_ACCESS_KEY: &str = "backplan-test-secret";
/// moto's default region.
pub const REGION: &str = "us-east-1";

/// How long moto may take to start (it imports a lot of Python; two cores, tests in
/// parallel).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports are tried when moto cannot bind the one picked.
const START_ATTEMPTS: usize = 5;
/// How much of moto's log is kept for failure messages.
const LOG_KEEP: usize = 64 * 1024;

/// Loaded by the server's Python at start (from `PYTHONPATH`). moto checks S3's
/// conditional-write headers (`If-None-Match: *`, `If-Match`) and stores the object in
/// separate steps, in a threaded server, so two racing writers can both pass the check
/// (seen with moto 5.2 under load, even with 8-byte bodies). S3 decides a conditional
/// write atomically and backplan's locks rely on it: here every object request is
/// handled under one lock (the request body is read before, outside it).
///
/// Faults, from the environment: `BACKPLAN_TEST_S3_FAIL_EVERY=N` answers every Nth
/// object request with HTTP 503 `SlowDown` without carrying it out;
/// `BACKPLAN_TEST_S3_LOSE_CONDITIONALS=N` carries out the first N `If-None-Match`
/// writes and then answers each with a 503 (as when S3's answer is lost on the way).
/// `BACKPLAN_TEST_S3_APPEND_ONLY_KEY=ID` treats requests signed with access key ID as an
/// append-only IAM user's (docs/security.md): an object DELETE outside a `locks/`
/// folder, and any multi-object delete, is refused with HTTP 403 `AccessDenied`. The
/// counts of all of these, and of that key's DELETEs let through, are written to
/// `BACKPLAN_TEST_S3_FAULTS_FILE`. `BACKPLAN_TEST_S3_NO_RETENTION_KEY=ID` refuses that
/// key's `PutObjectRetention` with HTTP 403 `AccessDenied`.
const SITECUSTOMIZE: &str = r#"import os
import sys
import threading

try:
    from moto.s3.responses import S3Response
    from urllib.parse import urlparse

    _lock = threading.Lock()
    _key_response = S3Response._key_response
    _every = int(os.environ.get("BACKPLAN_TEST_S3_FAIL_EVERY") or 0)
    _lose_conditionals = int(os.environ.get("BACKPLAN_TEST_S3_LOSE_CONDITIONALS") or 0)
    _faults_file = os.environ.get("BACKPLAN_TEST_S3_FAULTS_FILE")
    _append_only_key = os.environ.get("BACKPLAN_TEST_S3_APPEND_ONLY_KEY")
    _no_retention_key = os.environ.get("BACKPLAN_TEST_S3_NO_RETENTION_KEY")

    def _append_only(request):
        auth = request.headers.get("Authorization") or ""
        return bool(_append_only_key) and f"Credential={_append_only_key}/" in auth

    def _no_retention(request, full_url):
        auth = request.headers.get("Authorization") or ""
        return (
            bool(_no_retention_key)
            and f"Credential={_no_retention_key}/" in auth
            and request.method == "PUT"
            and "retention" in urlparse(full_url).query
        )
    _state = {"requests": 0, "refused": 0, "lost": 0, "deletes_refused": 0, "deletes": 0}
    _ACCESS_DENIED = (
        403,
        {"content-type": "application/xml"},
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message>"
        b"<RequestId>backplan-test</RequestId></Error>",
    )
    _SLOW_DOWN = (
        503,
        {"content-type": "application/xml"},
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message>"
        b"<RequestId>backplan-test</RequestId></Error>",
    )

    def _count():
        if _faults_file:
            with open(_faults_file, "w") as f:
                f.write(
                    f"{_state['refused']} {_state['lost']} "
                    f"{_state['deletes_refused']} {_state['deletes']}\n"
                )

    def _serialised(self, request, *args, **kwargs):
        with _lock:
            _state["requests"] += 1
            if _every and _state["requests"] % _every == 0:
                _state["refused"] += 1
                _count()
                return _SLOW_DOWN
            if _no_retention(request, args[0] if args else kwargs.get("full_url", "")):
                return _ACCESS_DENIED
            if request.method == "DELETE" and _append_only(request):
                full_url = args[0] if args else kwargs.get("full_url", "")
                if "/locks/" not in urlparse(full_url).path:
                    _state["deletes_refused"] += 1
                    _count()
                    return _ACCESS_DENIED
                _state["deletes"] += 1
                _count()
            response = _key_response(self, request, *args, **kwargs)
            if (
                _state["lost"] < _lose_conditionals
                and request.method == "PUT"
                and request.headers.get("If-None-Match") == "*"
            ):
                _state["lost"] += 1
                _count()
                return _SLOW_DOWN
            return response

    S3Response._key_response = _serialised

    _bucket_response = S3Response._bucket_response

    def _bucket_guarded(self, request, full_url, *args, **kwargs):
        if (
            _append_only(request)
            and request.method == "POST"
            and "delete" in urlparse(full_url).query
        ):
            with _lock:
                _state["deletes_refused"] += 1
                _count()
            return _ACCESS_DENIED
        return _bucket_response(self, request, full_url, *args, **kwargs)

    S3Response._bucket_response = _bucket_guarded
    print("backplan-tests: moto S3 object requests serialised", file=sys.stderr, flush=True)
except Exception as e:
    print(f"backplan-tests: cannot patch moto: {e!r}", file=sys.stderr, flush=True)
"#;
/// Where the patch counts the faults it injected (in the server's temporary folder).
const FAULTS_FILE: &str = "faults";
/// What the patch prints once it is in place.
const PATCHED: &str = "backplan-tests: moto S3 object requests serialised";

/// Failures a server injects on purpose (see [`SITECUSTOMIZE`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every Nth object request is answered 503 `SlowDown`, not carried out.
    pub fail_every: Option<u32>,
    /// The first this many `If-None-Match: *` writes are carried out, then each is
    /// answered 503.
    pub lose_conditionals: u32,
    /// Requests signed with this access key id may delete only under `locks/`: any
    /// other DELETE of theirs, and any multi-object delete, is refused (403).
    pub append_only_key: Option<&'static str>,
    /// Requests signed with this access key id may not set an object's retention:
    /// `PutObjectRetention` is refused (403), as for credentials without
    /// `s3:PutObjectRetention`.
    pub no_retention_key: Option<&'static str>,
    /// After this many requests, moto authenticates every request as AWS would: its
    /// SigV4 signature (checked with botocore) by a key of an IAM user it knows
    /// (`INITIAL_NO_AUTH_ACTION_COUNT`).
    pub authenticate_after: Option<u32>,
}

/// What a server injected: requests refused, and answers lost after the write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    pub refused: u64,
    pub lost: u64,
    /// DELETEs refused by [`Faults::append_only_key`].
    pub deletes_refused: u64,
    /// DELETEs of that key let through (under `locks/`).
    pub deletes: u64,
}

/// A running `moto_server`; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    /// Holds the patch ([`SITECUSTOMIZE`]); removed after the server is gone.
    _python: tempfile::TempDir,
}

/// Whether this is a CI run (the variable `CI` is set and not empty).
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Where `moto_server` is: `$BACKPLAN_MOTO_SERVER`, the venv `scripts/install-deps`
/// makes, or PATH.
pub fn moto_server_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BACKPLAN_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}

impl S3Server {
    /// Starts a server and waits until it answers. `None` (after a loud message) when
    /// no `moto_server` can be found and this is not CI; the test should then return.
    pub fn start() -> Option<S3Server> {
        S3Server::start_with(Faults::default())
    }

    /// [`S3Server::start`], with `faults` injected.
    pub fn start_with(faults: Faults) -> Option<S3Server> {
        let Some(program) = moto_server_path() else {
            let why = "moto_server not found (not at $BACKPLAN_MOTO_SERVER, target/moto-venv/bin \
                       or on PATH); run scripts/install-deps to install it";
            if in_ci() {
                panic!("S3 tests need a local S3 server: {why}");
            }
            // Straight to stderr: the test harness would swallow an `eprintln!` of a
            // passing test.
            let _ = writeln!(std::io::stderr(), "\n!!! SKIPPING an S3 test: {why} !!!\n");
            return None;
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match S3Server::spawn(&program, faults) {
                Ok(server) => return Some(server),
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "{} did not start:\n{}",
            program.display(),
            failures.join("\n---\n")
        );
    }

    fn spawn(program: &Path, faults: Faults) -> Result<S3Server, String> {
        let port = free_port();
        let python = tempfile::tempdir().expect("create a temporary folder");
        std::fs::write(python.path().join("sitecustomize.py"), SITECUSTOMIZE)
            .expect("write sitecustomize.py");
        let mut python_path = vec![python.path().to_path_buf()];
        if let Some(old) = std::env::var_os("PYTHONPATH") {
            python_path.extend(std::env::split_paths(&old));
        }
        let mut command = Command::new(program);
        if let Some(n) = faults.fail_every {
            command.env("BACKPLAN_TEST_S3_FAIL_EVERY", n.to_string());
        }
        if faults.lose_conditionals > 0 {
            command.env(
                "BACKPLAN_TEST_S3_LOSE_CONDITIONALS",
                faults.lose_conditionals.to_string(),
            );
        }
        if let Some(key) = faults.append_only_key {
            command.env("BACKPLAN_TEST_S3_APPEND_ONLY_KEY", key);
        }
        if let Some(key) = faults.no_retention_key {
            command.env("BACKPLAN_TEST_S3_NO_RETENTION_KEY", key);
        }
        if let Some(n) = faults.authenticate_after {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let mut child = command
            .env(
                "BACKPLAN_TEST_S3_FAULTS_FILE",
                python.path().join(FAULTS_FILE),
            )
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .env(
                "PYTHONPATH",
                std::env::join_paths(python_path).expect("a PYTHONPATH"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        {
            // Drains the log for as long as the server lives (a full pipe would stall
            // it), keeping its tail; says when the server listens on our port.
            let log = log.clone();
            let listening = format!("Running on http://127.0.0.1:{port}");
            std::thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(&listening)
                        && let Some(tx) = ready.take()
                    {
                        let _ = tx.send(());
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                    if log.len() > LOG_KEEP {
                        let cut = log.len() - LOG_KEEP / 2;
                        let cut = (cut..log.len())
                            .find(|&i| log.is_char_boundary(i))
                            .unwrap_or(log.len());
                        log.drain(..cut);
                    }
                }
            });
        }
        let mut server = S3Server {
            child,
            port,
            log,
            _python: python,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The log ended: the server exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "moto_server on port {port} exited:\n{}",
                        server.log()
                    ));
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "moto_server on port {port} exited with {status}:\n{}",
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server on port {port} did not listen within {START_TIMEOUT:?}:\n{}",
                    server.log()
                ));
            }
        }
        if !server.log().contains(PATCHED) {
            panic!(
                "{} could not be made to decide conditional writes atomically (see \
                 SITECUSTOMIZE in tests/it/common/s3.rs); its log:\n{}",
                program.display(),
                server.log()
            );
        }
        // It said it listens; it must also answer.
        while let Err(e) = server.request("GET", "/") {
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server on port {port} does not answer: {e}\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// What the server injected so far ([`Faults`]).
    pub fn injected(&self) -> Injected {
        let text =
            std::fs::read_to_string(self._python.path().join(FAULTS_FILE)).unwrap_or_default();
        let mut counts = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
        Injected {
            refused: counts.next().unwrap_or(0),
            lost: counts.next().unwrap_or(0),
            deletes_refused: counts.next().unwrap_or(0),
            deletes: counts.next().unwrap_or(0),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL, for a policy's `endpoint:` or an OpenDAL builder.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server has logged (its tail).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new bucket with a name unique in this process (`prefix` plus a counter).
    pub fn bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_bucket(&name);
        name
    }

    /// Creates a bucket (moto takes an unsigned `PUT /bucket`).
    pub fn create_bucket(&self, name: &str) {
        match self.request("PUT", &format!("/{name}")) {
            Ok(200) => {}
            Ok(status) => panic!("creating bucket {name}: HTTP {status}\n{}", self.log()),
            Err(e) => panic!("creating bucket {name}: {e}\n{}", self.log()),
        }
    }

    /// An OpenDAL operator on `bucket` (under `root`), as backplan's `s3`
    /// destination makes one.
    pub fn operator(&self, bucket: &str, root: &str) -> opendal::Operator {
        let builder = opendal::services::S3::default()
            .bucket(bucket)
            .root(root)
            .region(REGION)
            .endpoint(&self.endpoint())
            .access_key_id(ACCESS_KEY_ID)
            .secret_access_key(SECRET_ACCESS_KEY);
        opendal::Operator::new(builder).expect("an S3 operator")
    }

    /// A new bucket with S3 Object Lock and a default retention of `days` days in
    /// `mode` (`GOVERNANCE` or `COMPLIANCE`), as an operator sets one up.
    pub fn locked_bucket(&self, prefix: &str, mode: &str, days: u32) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}-locked-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (status, body) = self
            .raw(
                "PUT",
                &format!("/{name}"),
                &[("x-amz-bucket-object-lock-enabled", "true")],
                b"",
            )
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert_eq!(status, 200, "creating bucket {name}: {body}");
        self.set_default_retention(&name, mode, days);
        name
    }

    /// Sets the default retention of a bucket made by [`S3Server::locked_bucket`].
    /// (moto refuses once the bucket holds objects; S3 does not.)
    fn set_default_retention(&self, name: &str, mode: &str, days: u32) {
        let config = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
             <Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule>\
             </ObjectLockConfiguration>"
        );
        let (status, body) = self
            .raw(
                "PUT",
                &format!("/{name}?object-lock"),
                &[("Content-Type", "application/xml")],
                config.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("object lock on {name}: {e}"));
        assert_eq!(status, 200, "object lock on {name}: {body}");
    }

    /// One plain HTTP/1.1 request with an empty body; returns the status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        self.raw(method, path, &[], b"").map(|(status, _)| status)
    }

    /// One plain, unsigned HTTP/1.1 request (moto takes them); returns the status
    /// code and the whole response (head and body).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .filter(|_| text.starts_with("HTTP/"))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an HTTP response: {:?}", text.lines().next()),
                )
            })?;
        Ok((status, text))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now (moto may still lose it to another
/// process; [`S3Server::start`] then tries another).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
