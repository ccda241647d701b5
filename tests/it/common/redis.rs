//! Throwaway Redis servers for integration tests.
//!
//! [`RedisServer::start`] writes a `redis.conf` into a temporary folder (so that
//! `CONFIG REWRITE` has a file to rewrite) and starts `redis-server` on a free port
//! of 127.0.0.1, its data and log in that folder; it is killed when dropped. The
//! binary is `redis-server` on `PATH` or `$BACKPLAN_REDIS_SERVER`, and `redis-cli`
//! beside it (`scripts/install-deps` installs both).
//!
//! [`populate_fixture`] fills a server with every kind of value a snapshot must carry;
//! [`RedisServer::digest`] (`DEBUG DIGEST`) and [`RedisServer::ttls`] describe a
//! server for round-trip comparisons.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How a server is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// `repl-diskless-sync`: the RDB goes to replicas as `$EOF:<mark>` (yes) or as
    /// `$<length>` after a file on disk (no).
    pub diskless: bool,
    /// Extra lines for `redis.conf`.
    pub config: Vec<String>,
    /// Serve TLS too (on a port of its own), with a certificate for `localhost`
    /// signed by a CA made for the server.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            diskless: true,
            config: Vec::new(),
            tls: false,
        }
    }
}

/// A running Redis server that lives as long as this value.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Child,
}

fn server_binary() -> PathBuf {
    std::env::var_os("BACKPLAN_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

fn cli_binary() -> PathBuf {
    let server = server_binary();
    match server.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join("redis-cli"),
        None => PathBuf::from("redis-cli"),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port on 127.0.0.1")
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::with(Options::default())
    }

    /// Starts a server; panics with its log when it does not answer in time.
    pub fn with(options: Options) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("backplan-redis-")
            .tempdir()
            .expect("create a temporary folder for Redis");
        let port = free_port();
        let d = dir.path().display();
        let mut conf = vec![
            "bind 127.0.0.1".to_string(),
            format!("dir {d}"),
            format!("logfile {d}/redis.log"),
            "save \"\"".to_string(),
            "appendonly no".to_string(),
            format!(
                "repl-diskless-sync {}",
                if options.diskless { "yes" } else { "no" }
            ),
            "repl-diskless-sync-delay 0".to_string(),
            "enable-debug-command local".to_string(),
            "daemonize no".to_string(),
        ];
        conf.push(format!("port {port}"));
        let tls_port = options.tls.then(free_port);
        if let Some(tls_port) = tls_port {
            make_certificates(dir.path());
            conf.extend([
                format!("tls-port {tls_port}"),
                format!("tls-cert-file {d}/server.crt"),
                format!("tls-key-file {d}/server.key"),
                format!("tls-ca-cert-file {d}/ca.crt"),
                "tls-auth-clients no".to_string(),
            ]);
        }
        conf.extend(options.config.iter().cloned());
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf.join("\n") + "\n").expect("write redis.conf");
        let child = Command::new(server_binary())
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run scripts/install-deps or set BACKPLAN_REDIS_SERVER",
                    server_binary().display()
                )
            });
        let server = RedisServer {
            dir,
            port,
            tls_port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = server.cli_output(&["PING"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PONG") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:PORT`, the plain port.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://localhost:PORT` of a TLS server (its certificate names localhost).
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://localhost:{}",
            self.tls_port.expect("a server started with tls")
        )
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn config_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.conf")).unwrap_or_default()
    }

    fn cli_output(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(cli_binary());
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli")
    }

    /// `redis-cli ARGS`, its output as redis-cli prints it to a pipe; panics when
    /// redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// `DEBUG DIGEST`: one hash of every database's keys, values and whether each
    /// key expires.
    pub fn digest(&self) -> String {
        self.connect().cmd(&["DEBUG", "DIGEST"])
    }

    /// Keys per database, from `INFO keyspace`.
    pub fn keys(&self) -> BTreeMap<u32, u64> {
        let info = self.connect().cmd(&["INFO", "keyspace"]);
        info.lines()
            .filter_map(|l| {
                let (db, rest) = l.trim().split_once(':')?;
                let db = db.strip_prefix("db")?.parse().ok()?;
                let keys = rest.split(',').find_map(|f| f.strip_prefix("keys="))?;
                Some((db, keys.parse().ok()?))
            })
            .collect()
    }

    /// Every key with an expiry, per database: `(db, key) → PTTL in ms`.
    pub fn ttls(&self) -> BTreeMap<(u32, String), i64> {
        let mut out = BTreeMap::new();
        for db in self.keys().into_keys() {
            let mut conn = self.connect();
            conn.cmd(&["SELECT", &db.to_string()]);
            let keys = conn.cmd(&["KEYS", "*"]);
            for key in keys.lines() {
                let ttl: i64 = conn.cmd(&["PTTL", key]).parse().unwrap_or(-3);
                if ttl >= 0 {
                    out.insert((db, key.to_string()), ttl);
                }
            }
        }
        out
    }

    /// A plain connection as the default user, for fixtures and checks.
    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for `localhost`, made with the openssl command.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=backplan test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

/// A minimal RESP client for fixtures: sends commands, reads replies as text lines.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// Sends many commands at once and reads every reply; panics on an error reply.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) {
        let mut out = Vec::new();
        for c in commands {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream.get_mut().write_all(&out).expect("send");
        for c in commands {
            let reply = self.reply();
            assert!(
                !reply.starts_with("ERR:"),
                "{} failed: {reply}",
                String::from_utf8_lossy(&c[0])
            );
        }
    }

    /// One command with text arguments; its reply flattened to lines.
    pub fn cmd(&mut self, args: &[&str]) -> String {
        let c: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
        for a in &c {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).expect("send");
        let reply = self.reply();
        assert!(!reply.starts_with("ERR:"), "{args:?} failed: {reply}");
        reply
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("read a reply");
        let line = line.trim_end().to_string();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" | ":" => rest.to_string(),
            "-" => format!("ERR:{rest}"),
            "$" => {
                let n: i64 = rest.parse().expect("a bulk length");
                if n < 0 {
                    return String::new();
                }
                let mut data = vec![0u8; n as usize + 2];
                self.stream.read_exact(&mut data).expect("read a bulk");
                data.truncate(n as usize);
                String::from_utf8_lossy(&data).into_owned()
            }
            "*" => {
                let n: i64 = rest.parse().expect("an array length");
                (0..n.max(0))
                    .map(|_| self.reply())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => panic!("unexpected reply {line:?}"),
        }
    }
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// Deterministic bytes that do not compress (an xorshift stream).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fills a server with what a snapshot must carry: strings (text, integers, binary),
/// lists, sets (integers and strings, small and large), sorted sets, hashes (small
/// and large), a stream with a consumer group and pending entries, keys with TTLs, a
/// function library, and keys in databases 0, 1 and 5; with `big_value`, a 50 MB
/// string of random bytes too.
pub fn populate_fixture(server: &RedisServer, big_value: bool) {
    let mut c = server.connect();
    let mut cmds = vec![
        args(&[b"SET", b"str:text", b"hello, backplan"]),
        args(&[b"SET", b"str:int", b"1234567"]),
        args(&[b"SET", b"str:negative", b"-42"]),
        args(&[b"SET", b"str:binary", &(0u8..=255).collect::<Vec<_>>()]),
        args(&[
            b"SET",
            b"str:long-text",
            "the quick brown fox ".repeat(500).as_bytes(),
        ]),
        args(&[b"SET", "str:ünïcode ✓".as_bytes(), "wert ✓".as_bytes()]),
        args(&[b"RPUSH", b"list:small", b"a", b"b", b"c"]),
        args(&[b"SADD", b"set:ints", b"1", b"2", b"3", b"-7"]),
        args(&[b"SADD", b"set:small", b"apple", b"pear"]),
        args(&[
            b"ZADD",
            b"zset:small",
            b"1",
            b"one",
            b"2.5",
            b"two-and-a-half",
        ]),
        args(&[b"HSET", b"hash:small", b"name", b"media", b"size", b"42"]),
        args(&[b"SET", b"ttl:hour", b"soon gone", b"PX", b"3600000"]),
        args(&[b"SET", b"ttl:day", b"later gone", b"EX", b"86400"]),
        args(&[b"HSET", b"ttl:hash", b"f", b"v"]),
        args(&[b"EXPIRE", b"ttl:hash", b"7200"]),
    ];
    let mut list = vec![b"RPUSH".to_vec(), b"list:big".to_vec()];
    let mut set = vec![b"SADD".to_vec(), b"set:big".to_vec()];
    let mut zset = vec![b"ZADD".to_vec(), b"zset:big".to_vec()];
    let mut hash = vec![b"HSET".to_vec(), b"hash:big".to_vec()];
    for i in 0..2000 {
        list.push(format!("element {i} {}", "x".repeat(i % 70)).into_bytes());
        set.push(format!("member-{i}").into_bytes());
        zset.push(format!("{}", i as f64 * 1.25 - 300.0).into_bytes());
        zset.push(format!("player-{i}").into_bytes());
        hash.push(format!("field-{i}").into_bytes());
        hash.push(format!("value {i} {}", "y".repeat(i % 90)).into_bytes());
    }
    cmds.extend([list, set, zset, hash]);
    for i in 0..10 {
        cmds.push(args(&[
            b"XADD",
            b"stream:events",
            format!("{}-{i}", 1_700_000_000_000u64 + i).as_bytes(),
            b"kind",
            b"upload",
            b"n",
            i.to_string().as_bytes(),
        ]));
    }
    cmds.extend([
        args(&[b"XGROUP", b"CREATE", b"stream:events", b"workers", b"0"]),
        args(&[b"XREADGROUP", b"GROUP", b"workers", b"w1", b"COUNT", b"3", b"STREAMS", b"stream:events", b">"]),
        args(&[b"XREADGROUP", b"GROUP", b"workers", b"w2", b"COUNT", b"2", b"STREAMS", b"stream:events", b">"]),
        args(&[b"XACK", b"stream:events", b"workers", b"1700000000000-0"]),
        args(&[b"FUNCTION", b"LOAD", b"#!lua name=medialib\nredis.register_function('media_count', function(keys, args) return #keys end)"]),
    ]);
    // Enough small keys that SCAN takes many pages.
    for i in 0..3000 {
        cmds.push(args(&[
            b"SET",
            format!("session:{i:05}").as_bytes(),
            format!("user-{}", i * 7).as_bytes(),
        ]));
    }
    if big_value {
        cmds.push(args(&[b"SET", b"str:big", &noise(50 << 20, 7)]));
    }
    c.pipeline(&cmds);
    c.pipeline(&[
        args(&[b"SELECT", b"1"]),
        args(&[b"SET", b"db1:counter", b"99"]),
        args(&[b"RPUSH", b"db1:queue", b"job-1", b"job-2"]),
        args(&[b"SELECT", b"5"]),
        args(&[b"HSET", b"db5:settings", b"theme", b"dark", b"lang", b"de"]),
        args(&[b"SET", b"db5:flag", b"on", b"EX", b"5000"]),
        args(&[b"SELECT", b"0"]),
    ]);
}
