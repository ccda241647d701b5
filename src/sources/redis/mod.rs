//! The `redis` source. A snapshot is one `dump.rdb` entry plus `redis.json` (mode,
//! server version, keys per database):
//!
//! - `sync` mode takes a point-in-time RDB over the replication protocol ([`sync`]),
//!   as a replica would, checked (header, CRC-64) as it streams into the sink;
//! - `scan` mode, for servers that refuse `SYNC` (managed Redis, an ACL user without
//!   `@admin`), walks every database with `SCAN` and pipelined `DUMP` + `PTTL` and
//!   writes the payloads as an RDB file of the same shape ([`rdb::Writer`]), so both
//!   modes restore the same way; it is not point in time, and says so;
//! - `auto` tries `sync` and falls back to `scan` when the server refuses.
//!
//! Restore replays the RDB into a running server with `RESTORE … REPLACE ABSTTL`
//! (expired keys skipped, functions with `FUNCTION RESTORE`), or writes `dump.rdb`
//! into a folder for a cold start. The policy's declared persistence (`save`,
//! `appendonly`) is compared with `CONFIG GET` for the plan and set with `CONFIG SET`
//! and `CONFIG REWRITE` by apply.

pub mod client;
pub mod rdb;
pub mod sync;

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::EntryReader;
use crate::error::{Code, Failure};
use crate::pipeline::{ChunkSink, ChunkSource, Stored};
use crate::policy::Policy;
use crate::policy::model::{RedisMode, RedisSource};
use crate::repo::format::{Entry, Tree};
use crate::repo::tree::PackedTree;
use crate::sources::ScanReport;
use client::{Conn, Endpoint, Value};

/// The entry holding the RDB.
pub const DUMP: &str = "dump.rdb";
/// The entry describing it.
pub const META: &str = "redis.json";

/// Keys fetched per `SCAN` page and `DUMP` pipeline in scan mode.
const SCAN_BATCH: usize = 200;
/// Replies in flight per `RESTORE` pipeline, and its byte bound.
const RESTORE_BATCH: usize = 512;
const RESTORE_BATCH_BYTES: usize = 8 << 20;
/// Redis's default `proto-max-bulk-len`: the largest argument a server accepts.
const DEFAULT_MAX_BULK: u64 = 512 << 20;

/// How a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Taken {
    /// Over the replication protocol: one point in time.
    Sync,
    /// `SCAN` + `DUMP`: each key as it was when it was read.
    Scan,
}

/// `redis.json`: what the snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: Taken,
    pub redis_version: String,
    /// Keys per database, counted in the RDB as it was stored (or, where it could not
    /// be read key by key, as the server counted them when the snapshot began).
    pub keys: BTreeMap<u32, u64>,
    /// Why the RDB could not be read key by key at backup (its keys are then the
    /// server's count, and only `restore --as-file` can restore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// The server had RDB checksums off: the RDB's CRC could not be checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
    /// Why `auto` fell back to scan mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Meta {
    pub fn total_keys(&self) -> u64 {
        self.keys.values().sum()
    }
}

fn failed(message: impl Into<String>) -> Failure {
    Failure::new(Code::SourceFailed, message)
}

/// The server of a source, from its URL, user, password reference and CA file.
pub fn endpoint(r: &RedisSource, policy: &Policy) -> Result<Endpoint, Failure> {
    let url = r
        .url
        .resolve()
        .map_err(|e| Failure::new(Code::SecretUnresolved, format!("redis url: {e}")))?;
    let password = super::password(
        r.password.as_ref(),
        r.password_file.as_ref(),
        policy,
        "redis password",
    )?;
    let ca = r.tls_ca_file.as_ref().map(|p| policy.resolve_path(p));
    Endpoint::parse(url.expose(), r.username.as_deref(), password, ca.as_deref())
}

/// A `--target redis://…`: its own credentials only, in the URL.
pub fn target_endpoint(url: &str, r: &RedisSource, policy: &Policy) -> Result<Endpoint, Failure> {
    let ca = r.tls_ca_file.as_ref().map(|p| policy.resolve_path(p));
    Endpoint::parse(url, None, None, ca.as_deref())
}

/// `INFO SECTION` as field → value.
pub fn info(conn: &mut Conn, section: &str) -> Result<BTreeMap<String, String>, Failure> {
    let text = conn
        .ok(&[b"INFO", section.as_bytes()])?
        .as_text()
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Keys per database, from `INFO keyspace` (`db0:keys=12,expires=1,avg_ttl=0`).
pub fn keyspace(conn: &mut Conn) -> Result<BTreeMap<u32, u64>, Failure> {
    Ok(info(conn, "keyspace")?
        .into_iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect())
}

/// What `plan` learns from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub redis_version: String,
    pub keys: BTreeMap<u32, u64>,
    /// Bytes of the dataset in memory, as the size hint.
    pub dataset_bytes: Option<u64>,
    /// `None`: the backup will run in sync mode; `Some(why)`: in scan mode.
    pub scan_because: Option<String>,
    /// `save` and `appendonly` as `CONFIG GET` reports them, or why it could not.
    pub persistence: Result<BTreeMap<String, String>, String>,
    /// `INFO persistence` problems: a failed background save or AOF write.
    pub unhealthy: Vec<String>,
}

/// Asks the server what `plan` shows: version, keys, the mode a backup will run
/// in, persistence and its health. Blocking.
pub fn probe(r: &RedisSource, policy: &Policy) -> Result<Probe, Failure> {
    let endpoint = endpoint(r, policy)?;
    let mut conn = endpoint.connect()?;
    let server = info(&mut conn, "server")?;
    let keys = keyspace(&mut conn)?;
    let memory = info(&mut conn, "memory")?;
    let scan_because = match r.mode {
        RedisMode::Scan => Some("the policy sets mode: scan".to_string()),
        RedisMode::Sync | RedisMode::Auto => sync_refusal(&mut conn)?,
    };
    let persistence = read_persistence(&mut conn);
    let state = info(&mut conn, "persistence")?;
    let mut unhealthy = Vec::new();
    if state
        .get("rdb_last_bgsave_status")
        .is_some_and(|s| s != "ok")
    {
        unhealthy.push("its last background save failed (rdb_last_bgsave_status:err)".into());
    }
    if state
        .get("aof_last_write_status")
        .is_some_and(|s| s != "ok")
    {
        unhealthy.push("its last AOF write failed (aof_last_write_status:err)".into());
    }
    if state
        .get("aof_last_bgrewrite_status")
        .is_some_and(|s| s != "ok")
    {
        unhealthy.push("its last AOF rewrite failed (aof_last_bgrewrite_status:err)".into());
    }
    if let Ok(config) = &persistence
        && let Some(overdue) = save_overdue(config, &state, Utc::now().timestamp())
    {
        unhealthy.push(overdue);
    }
    Ok(Probe {
        redis_version: server.get("redis_version").cloned().unwrap_or_default(),
        keys,
        dataset_bytes: memory
            .get("used_memory_dataset")
            .and_then(|v| v.parse().ok()),
        scan_because,
        persistence,
        unhealthy,
    })
}

/// Whether the server's save points should have saved long ago: changes are pending
/// and the last save is more than twice the longest save interval old, with no
/// save running. Redis then says nothing itself when the save never starts.
fn save_overdue(
    config: &BTreeMap<String, String>,
    state: &BTreeMap<String, String>,
    now: i64,
) -> Option<String> {
    let points: Vec<u64> = config
        .get("save")?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let longest = points.chunks(2).map(|p| p[0]).max()?;
    let number = |k: &str| state.get(k).and_then(|v| v.parse::<i64>().ok());
    let changes = number("rdb_changes_since_last_save")?;
    let last = number("rdb_last_save_time")?;
    let age = now - last;
    (changes > 0 && number("rdb_bgsave_in_progress") == Some(0) && age > 2 * longest as i64)
        .then(|| {
            format!(
                "its last save was {} ago with {changes} changes since, though its save points are \"{}\"",
                humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64)),
                config.get("save").map(String::as_str).unwrap_or_default()
            )
        })
}

/// Why `SYNC` would be refused, without starting one: the command is gone (renamed
/// or disabled on managed Redis) or the user may not replicate, as `ACL DRYRUN`
/// tells (or, where the user may not ask that, as `REPLCONF` tells). `None`: it
/// would run.
fn sync_refusal(conn: &mut Conn) -> Result<Option<String>, Failure> {
    if let Value::Array(items) = conn.cmd(&[b"COMMAND", b"INFO", b"sync"])?
        && items.first().is_some_and(|v| *v == Value::Nil)
    {
        return Ok(Some("the server has no SYNC command".into()));
    }
    if let Some(user) = conn
        .cmd(&[b"ACL", b"WHOAMI"])?
        .as_bytes()
        .map(<[u8]>::to_vec)
    {
        match conn.cmd(&[b"ACL", b"DRYRUN", &user, b"SYNC"])? {
            Value::Simple(ok) if ok == "OK" => return Ok(None),
            Value::Bulk(why) => {
                return Ok(Some(format!(
                    "SYNC is not allowed: {}",
                    String::from_utf8_lossy(&why)
                )));
            }
            // The user may not ask: judge by REPLCONF below.
            _ => {}
        }
    }
    Ok(match conn.cmd(&[b"REPLCONF", b"capa", b"eof"])? {
        Value::Error(e) if sync::is_refusal(&e) => Some(format!("SYNC is not allowed: {e}")),
        _ => None,
    })
}

/// The persistence settings backplan manages, as `CONFIG GET` reports them.
pub const PERSISTENCE: &[&str] = &["save", "appendonly"];

fn read_persistence(conn: &mut Conn) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for name in PERSISTENCE {
        match conn.cmd(&[b"CONFIG", b"GET", name.as_bytes()]) {
            Ok(Value::Array(items)) if items.len() == 2 => {
                out.insert(name.to_string(), items[1].as_text().unwrap_or_default());
            }
            Ok(Value::Error(e)) => return Err(format!("CONFIG GET is refused: {e}")),
            Ok(other) => return Err(format!("CONFIG GET {name} answered {other:?}")),
            Err(f) => return Err(f.message),
        }
    }
    Ok(out)
}

/// Sets `settings` with `CONFIG SET` and persists them with `CONFIG REWRITE`. A
/// server without a config file (or that refuses REWRITE) keeps the values until it
/// restarts: that is a failure, so the operator hears of it. Blocking.
pub fn configure(
    r: &RedisSource,
    policy: &Policy,
    settings: &[(String, String)],
) -> Result<(), Failure> {
    let endpoint = endpoint(r, policy)?;
    let mut conn = endpoint.connect()?;
    for (name, value) in settings {
        if let Value::Error(e) =
            conn.cmd(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()])?
        {
            return Err(Failure::new(
                Code::ConfigRefused,
                format!(
                    "Redis at {}: CONFIG SET {name} is refused: {e}",
                    endpoint.describe()
                ),
            ));
        }
    }
    if let Value::Error(e) = conn.cmd(&[b"CONFIG", b"REWRITE"])? {
        return Err(Failure::new(
            Code::ConfigRefused,
            format!(
                "Redis at {}: the settings are in force but CONFIG REWRITE failed ({e}); they are lost when the server restarts",
                endpoint.describe()
            ),
        )
        .with_help("give the server a config file, or put the settings into the one it reads"));
    }
    Ok(())
}

/// Backs a server up into a tree of `dump.rdb` and `redis.json`; returns them with
/// what `redis.json` says. Blocking. A dump far smaller than the last good one
/// (`min_size_ratio`) fails the snapshot.
pub fn backup(
    r: &RedisSource,
    policy: &Policy,
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
) -> Result<(ScanReport, Meta), Failure> {
    let endpoint = endpoint(r, policy)?;
    let mut conn = endpoint.connect()?;
    let redis_version = info(&mut conn, "server")?
        .get("redis_version")
        .cloned()
        .unwrap_or_default();
    let keys = keyspace(&mut conn)?;
    let started = Utc::now();
    let (stored, meta) = match r.mode {
        RedisMode::Scan => scan_backup(conn, &redis_version, sink, None)?,
        RedisMode::Sync | RedisMode::Auto => {
            // The snapshot comes over a connection of its own (see [`sync`]).
            drop(conn);
            match sync::start(&endpoint) {
                Ok(mut stream) => {
                    let (stored, counted) = store_counted(&mut stream, sink);
                    let stored = stored
                        .map_err(|e| failed(format!("snapshot of {}: {e}", endpoint.describe())))?;
                    let (keys, unreadable) = match counted {
                        Ok(counted) => (counted, None),
                        Err(why) => (keys, Some(why)),
                    };
                    let meta = Meta {
                        mode: Taken::Sync,
                        redis_version,
                        keys,
                        unreadable,
                        unchecked: stream.unchecked(),
                        fallback: None,
                    };
                    (stored, meta)
                }
                Err(sync::SyncError::Refused(why)) if r.mode == RedisMode::Auto => {
                    let conn = endpoint.connect()?;
                    scan_backup(conn, &redis_version, sink, Some(why))?
                }
                Err(sync::SyncError::Refused(why)) => {
                    return Err(failed(format!(
                    "Redis at {} refuses SYNC: {why}",
                    endpoint.describe()
                ))
                .with_help("grant the user +sync +replconf, or set `mode: scan` (or `auto`) on the source"));
                }
                Err(sync::SyncError::Failed(f)) => return Err(f),
            }
        }
    };
    let min_ratio = r.min_size_ratio.unwrap_or(0.5);
    let parent = parent.map(PackedTree::unpack).transpose()?;
    if let Some(before) = parent.and_then(|t| t.entries.into_iter().find(|e| e.path == DUMP))
        && (stored.bytes as f64) < before.size as f64 * min_ratio
    {
        return Err(failed(format!(
            "the RDB of {} is {} bytes, far smaller than the last good one ({} bytes; min_size_ratio {min_ratio})",
            endpoint.describe(),
            stored.bytes,
            before.size
        )));
    }
    let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let described = sink
        .store(&mut &json[..])
        .map_err(|e| failed(format!("storing {META}: {e}")))?;
    let mut report = ScanReport {
        bytes_read: stored.bytes,
        files: 1,
        ..ScanReport::default()
    };
    if let Some(why) = &meta.fallback {
        report.warnings.push(format!(
            "SYNC refused ({why}): scan mode, not point in time"
        ));
    }
    if let Some(why) = &meta.unreadable {
        report.warnings.push(format!(
            "the RDB cannot be read key by key ({why}): only `restore --as-file` can restore it"
        ));
    }
    if meta.unchecked {
        report
            .warnings
            .push("the server has rdbchecksum off: the RDB's checksum was not checked".into());
    }
    let tree = Tree {
        entries: vec![
            Entry::stream(DUMP, stored.bytes, stored.chunks, started),
            Entry::stream(META, described.bytes, described.chunks, started),
        ],
        root: None,
    };
    report
        .set_tree(&tree)
        .map_err(|e| failed(format!("writing the snapshot's tree: {e}")))?;
    Ok((report, meta))
}

/// Scan mode: a thread walks the server and writes an RDB into a pipe that the sink
/// reads, so memory stays bounded by one batch of values.
fn scan_backup(
    conn: Conn,
    redis_version: &str,
    sink: &mut dyn ChunkSink,
    fallback: Option<String>,
) -> Result<(Stored, Meta), Failure> {
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| failed(format!("cannot make a pipe: {e}")))?;
    let version = redis_version.to_string();
    let walker = std::thread::spawn(move || {
        let mut conn = conn;
        scan_to_rdb(
            &mut conn,
            &version,
            BufWriter::with_capacity(1 << 20, writer),
        )
    });
    let stored = sink.store(&mut reader);
    drop(reader);
    let walked = walker
        .join()
        .map_err(|_| failed("the scan of the server stopped"))?;
    // A failed walk ends the pipe early, which the sink sees only as a short stream:
    // the walker's reason then. A failed sink breaks the walker's pipe: the sink's.
    let stored = stored.map_err(|e| failed(format!("storing the scan: {e}")))?;
    let keys = walked?;
    Ok((
        stored,
        Meta {
            mode: Taken::Scan,
            redis_version: redis_version.to_string(),
            keys,
            unreadable: None,
            unchecked: false,
            fallback,
        },
    ))
}

/// Stores `stream` through the sink while a second thread reads the same bytes key
/// by key ([`rdb::Reader`]), counting keys per database: the count describes the
/// snapshot exactly, and an RDB this reader could not restore is known at backup.
fn store_counted(
    stream: &mut dyn Read,
    sink: &mut dyn ChunkSink,
) -> (std::io::Result<Stored>, Result<BTreeMap<u32, u64>, String>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let counter = std::thread::spawn(move || {
        let mut reader = rdb::Reader::new(ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        })
        .map_err(|e| e.to_string())?;
        let mut keys = BTreeMap::new();
        while let Some(item) = reader.next_item().map_err(|e| e.to_string())? {
            if let rdb::Item::Key(k) = item {
                *keys.entry(k.db as u32).or_insert(0) += 1;
            }
        }
        Ok(keys)
    });
    let mut tee = Tee {
        inner: stream,
        tx: Some(tx),
    };
    let stored = sink.store(&mut tee);
    // Closing the channel ends the counter's input.
    drop(tee);
    let counted = counter
        .join()
        .unwrap_or_else(|_| Err("the reader stopped".to_string()));
    (stored, counted)
}

/// Hands what it reads to a channel too; stops sending once the receiver is gone.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0
            && let Some(tx) = &self.tx
            && tx.send(buf[..n].to_vec()).is_err()
        {
            self.tx = None;
        }
        Ok(n)
    }
}

/// The other end of a [`Tee`].
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The RDB version a server of `redis_version` writes (for an empty scan, whose
/// header no payload dictates).
fn rdb_version_for(redis_version: &str) -> u16 {
    let mut parts = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) {
        (8.., _) | (7, 4..) => 12,
        (7, 2..) => 11,
        (7, _) => 10,
        _ => 9,
    }
}

/// Walks every database with `SCAN`, `DUMP` and `PTTL`, and writes what it finds as
/// an RDB. Returns the keys written per database.
fn scan_to_rdb(
    conn: &mut Conn,
    redis_version: &str,
    out: impl Write,
) -> Result<BTreeMap<u32, u64>, Failure> {
    let io = |e: std::io::Error| failed(format!("writing the scan: {e}"));
    let mut writer: Option<rdb::Writer<_>> = None;
    let mut out = Some(out);
    let mut open = |writer: &mut Option<rdb::Writer<_>>, version: u16| -> Result<(), Failure> {
        if writer.is_none()
            && let Some(o) = out.take()
        {
            *writer = Some(rdb::Writer::new(o, version).map_err(io)?);
        }
        Ok(())
    };
    // Functions first, as a server writes them. A server without any answers with
    // the footer alone.
    if let Value::Bulk(payload) = conn.cmd(&[b"FUNCTION", b"DUMP"])?
        && payload.len() > rdb::DUMP_FOOTER_LEN
    {
        let (_, version) =
            rdb::check_dump_payload(&payload).map_err(|e| failed(format!("FUNCTION DUMP: {e}")))?;
        open(&mut writer, version)?;
        if let Some(w) = writer.as_mut() {
            w.function(&payload).map_err(io)?;
        }
    }
    let mut counts = BTreeMap::new();
    for db in keyspace(conn)?.into_keys() {
        conn.ok(&[b"SELECT", db.to_string().as_bytes()])?;
        let mut selected = false;
        let mut cursor = b"0".to_vec();
        loop {
            let page = conn.ok(&[
                b"SCAN",
                &cursor,
                b"COUNT",
                SCAN_BATCH.to_string().as_bytes(),
            ])?;
            let Value::Array(mut parts) = page else {
                return Err(failed(format!("SCAN answered {page:?}")));
            };
            let (Some(Value::Array(keys)), Some(next)) = (parts.pop(), parts.pop()) else {
                return Err(failed("SCAN answered something else than [cursor, keys]"));
            };
            cursor = next.as_bytes().unwrap_or(b"0").to_vec();
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
                .collect();
            let mut pipeline = redis::pipe();
            for k in &keys {
                pipeline.add_command(client::command(&[b"DUMP", k]));
                pipeline.add_command(client::command(&[b"PTTL", k]));
            }
            conn.send(&pipeline)?;
            let now = Utc::now().timestamp_millis();
            for k in &keys {
                let dump = conn.reply()?;
                let ttl = conn.reply()?;
                let payload = match dump {
                    Value::Bulk(p) => p,
                    // Gone since SCAN saw it.
                    Value::Nil => continue,
                    Value::Error(e) => {
                        return Err(failed(format!("DUMP {}: {e}", printable(k))));
                    }
                    other => return Err(failed(format!("DUMP answered {other:?}"))),
                };
                let expire = match ttl {
                    Value::Int(-2) => continue,
                    Value::Int(ms) if ms >= 0 => Some(now + ms),
                    _ => None,
                };
                let (_, version) = rdb::check_dump_payload(&payload)
                    .map_err(|e| failed(format!("DUMP {}: {e}", printable(k))))?;
                open(&mut writer, version)?;
                let w = writer.as_mut().ok_or_else(|| failed("no RDB writer"))?;
                if !selected {
                    w.select_db(u64::from(db)).map_err(io)?;
                    selected = true;
                }
                w.key(k, expire, &payload).map_err(io)?;
                *counts.entry(db).or_insert(0) += 1;
            }
            if cursor == b"0" {
                break;
            }
        }
    }
    open(&mut writer, rdb_version_for(redis_version))?;
    if let Some(w) = writer {
        w.finish().and_then(|mut o| o.flush()).map_err(io)?;
    }
    Ok(counts)
}

/// A key for messages: printable bytes as they are, others escaped, long ones cut.
pub fn printable(key: &[u8]) -> String {
    let text: String = key
        .iter()
        .take(80)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > 80 {
        format!("{text}…")
    } else {
        text
    }
}

/// Reads `redis.json` of a snapshot.
pub fn read_meta(tree: &Tree, source: &mut dyn ChunkSource) -> Result<Meta, Failure> {
    let entry = tree
        .entries
        .iter()
        .find(|e| e.path == META)
        .ok_or_else(|| Failure::new(Code::CorruptObject, format!("the snapshot has no {META}")))?;
    let mut bytes = Vec::new();
    EntryReader::new(entry, source)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{META}: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{META}: {e}")))
}

/// The `dump.rdb` entry of a snapshot.
pub fn dump_entry(tree: &Tree) -> Result<&Entry, Failure> {
    tree.entries
        .iter()
        .find(|e| e.path == DUMP)
        .ok_or_else(|| Failure::new(Code::CorruptObject, format!("the snapshot has no {DUMP}")))
}

/// Keys a server holds across its databases.
pub fn target_keys(endpoint: &Endpoint) -> Result<u64, Failure> {
    Ok(keyspace(&mut endpoint.connect()?)?.values().sum())
}

/// Refuses a target that holds keys, unless `flush`. Changes nothing.
pub fn check_target(endpoint: &Endpoint, flush: bool) -> Result<u64, Failure> {
    let keys = target_keys(endpoint)?;
    if keys > 0 && !flush {
        return Err(Failure::new(
            Code::RestoreRefused,
            format!(
                "Redis at {} is not empty ({keys} keys); nothing was restored",
                endpoint.describe()
            ),
        )
        .with_help(
            "restore into another server with --target, or empty this one first with --flush",
        ));
    }
    Ok(keys)
}

/// What a restore into a server did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub keys: u64,
    /// Keys whose expiry had passed: not restored.
    pub expired: u64,
    /// Keys too large for one `RESTORE`, restored as ordinary commands.
    pub split: u64,
    pub functions: u64,
}

/// Replays a snapshot's RDB into a running server: `FLUSHALL` first when `flush`,
/// then `RESTORE key ttl payload REPLACE ABSTTL` per key (pipelined), functions with
/// `FUNCTION RESTORE … REPLACE`. Keys whose expiry has passed are skipped. Blocking.
pub fn restore(
    endpoint: &Endpoint,
    flush: bool,
    tree: &Tree,
    source: &mut dyn ChunkSource,
) -> Result<Restored, Failure> {
    check_target(endpoint, flush)?;
    let entry = dump_entry(tree)?.clone();
    let mut conn = endpoint.connect()?;
    if flush {
        conn.ok(&[b"FLUSHALL"])?;
    }
    let max_bulk = match conn.cmd(&[b"CONFIG", b"GET", b"proto-max-bulk-len"])? {
        Value::Array(items) if items.len() == 2 => items[1]
            .as_text()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BULK),
        _ => DEFAULT_MAX_BULK,
    };
    let mut reader = rdb::Reader::new(EntryReader::new(&entry, source))
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{DUMP}: {e}")))?;
    let mut done = Restored::default();
    let mut batch = Batch::default();
    let mut selected: Option<u64> = None;
    let now = Utc::now().timestamp_millis();
    while let Some(item) = reader
        .next_item()
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{DUMP}: {e}")))?
    {
        match item {
            rdb::Item::Key(k) => {
                if k.expire_ms.is_some_and(|t| t <= now) {
                    done.expired += 1;
                    continue;
                }
                if selected != Some(k.db) {
                    batch.push(&[b"SELECT", k.db.to_string().as_bytes()], None);
                    selected = Some(k.db);
                }
                if k.payload.len() as u64 > max_bulk {
                    // Over what the server takes in one argument: the value as
                    // ordinary commands, each under the limit. A string cannot be
                    // split: the server refuses any string over the limit.
                    let too_large = |why: String| {
                        failed(format!(
                            "the value of {} is {} bytes, over the target's proto-max-bulk-len ({max_bulk}): {why}",
                            printable(&k.key),
                            k.payload.len()
                        ))
                        .with_help("raise it on the target (CONFIG SET proto-max-bulk-len 2gb), or restore --as-file and start the server from the RDB")
                    };
                    if k.type_id == rdb::TYPE_STRING {
                        return Err(too_large(
                            "no string on that server may be larger".to_string(),
                        ));
                    }
                    let commands = rdb::split_commands(&k, (max_bulk / 2) as usize)
                        .map_err(|e| too_large(format!("it cannot be split: {e}")))?;
                    for command in &commands {
                        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
                        batch.push(&args, Some(&k.key));
                        if batch.full() {
                            batch.flush(&mut conn)?;
                        }
                    }
                    done.keys += 1;
                    done.split += 1;
                    continue;
                }
                let ttl = k.expire_ms.unwrap_or(0).to_string();
                let mut args: Vec<&[u8]> = vec![
                    b"RESTORE",
                    &k.key,
                    ttl.as_bytes(),
                    &k.payload,
                    b"REPLACE",
                    b"ABSTTL",
                ];
                // The key's LRU idle time or LFU counter, as the source had it.
                let idle = k.lru_idle_secs.map(|n| n.to_string());
                let freq = k.lfu_freq.map(|n| n.to_string());
                if let Some(idle) = &idle {
                    args.extend([b"IDLETIME".as_slice(), idle.as_bytes()]);
                } else if let Some(freq) = &freq {
                    args.extend([b"FREQ".as_slice(), freq.as_bytes()]);
                }
                batch.push(&args, Some(&k.key));
                done.keys += 1;
            }
            rdb::Item::Function { payload } => {
                batch.push(
                    &[b"FUNCTION", b"RESTORE", &payload, b"REPLACE"],
                    Some(b"(function library)"),
                );
                done.functions += 1;
            }
            _ => {}
        }
        if batch.full() {
            batch.flush(&mut conn)?;
        }
    }
    batch.flush(&mut conn)?;
    Ok(done)
}

/// A pipeline of commands whose replies must all be OK.
struct Batch {
    pipe: redis::Pipeline,
    /// Bytes of the arguments queued.
    bytes: usize,
    /// For each command, the key it names (for the message if it fails).
    keys: Vec<Option<Vec<u8>>>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            pipe: redis::pipe(),
            bytes: 0,
            keys: Vec::new(),
        }
    }
}

impl Batch {
    fn push(&mut self, args: &[&[u8]], key: Option<&[u8]>) {
        self.pipe.add_command(client::command(args));
        self.bytes += args.iter().map(|a| a.len()).sum::<usize>();
        self.keys.push(key.map(<[u8]>::to_vec));
    }

    fn full(&self) -> bool {
        self.keys.len() >= RESTORE_BATCH || self.bytes >= RESTORE_BATCH_BYTES
    }

    fn flush(&mut self, conn: &mut Conn) -> Result<(), Failure> {
        if self.keys.is_empty() {
            return Ok(());
        }
        conn.send(&self.pipe)?;
        let mut first_error = None;
        // Every reply is read, so the connection stays in step even after an error.
        for key in self.keys.drain(..) {
            if let Value::Error(e) = conn.reply()? {
                first_error.get_or_insert_with(|| match key {
                    Some(k) => format!("restoring {}: {e}", printable(&k)),
                    None => e,
                });
            }
        }
        self.pipe.clear();
        self.bytes = 0;
        match first_error {
            Some(message) => Err(Failure::new(
                Code::DatabaseError,
                format!("Redis at {}: {message}", conn.describe()),
            )),
            None => Ok(()),
        }
    }
}

/// Writes the snapshot's RDB as `DIR/dump.rdb` for a cold start (through a temporary
/// file and a rename; an existing `dump.rdb` only with `force`). The RDB's checksum
/// is checked on the way. Returns the path and the bytes written.
pub fn restore_file(
    dir: &Path,
    force: bool,
    tree: &Tree,
    source: &mut dyn ChunkSource,
) -> Result<(std::path::PathBuf, u64), Failure> {
    let entry = dump_entry(tree)?;
    let target = dir.join(DUMP);
    if target.exists() && !force {
        return Err(Failure::new(
            Code::RestoreRefused,
            format!("{} exists; nothing was written", target.display()),
        )
        .with_help("move it away first, or overwrite it with --force"));
    }
    let io = |e: std::io::Error| Failure::new(Code::Io, format!("{}: {e}", target.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let temp = dir.join(format!(".{DUMP}.backplan-tmp"));
    let written = (|| -> std::io::Result<u64> {
        let mut file = std::fs::File::create(&temp)?;
        let mut check = sync::TailCheck::default();
        let mut reader = EntryReader::new(entry, source);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let got = reader.read(&mut buf)?;
            if got == 0 {
                break;
            }
            check.update(&buf[..got])?;
            file.write_all(&buf[..got])?;
            n += got as u64;
        }
        check.finish()?;
        file.sync_all()?;
        Ok(n)
    })();
    match written {
        Ok(n) => {
            std::fs::rename(&temp, &target).map_err(io)?;
            Ok((target, n))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(Failure::new(
                Code::CorruptObject,
                format!("{DUMP} of the snapshot: {e}"),
            ))
        }
    }
}

/// Reads the whole RDB of a snapshot, checking its structure and checksum; returns
/// the keys per database it holds. Needs no server.
pub fn check_rdb(tree: &Tree, source: &mut dyn ChunkSource) -> Result<BTreeMap<u64, u64>, Failure> {
    let entry = dump_entry(tree)?;
    let mut reader = rdb::Reader::new(EntryReader::new(entry, source))
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{DUMP}: {e}")))?;
    let mut keys = BTreeMap::new();
    while let Some(item) = reader
        .next_item()
        .map_err(|e| Failure::new(Code::CorruptObject, format!("{DUMP}: {e}")))?
    {
        if let rdb::Item::Key(k) = item {
            *keys.entry(k.db).or_insert(0) += 1;
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_versions_follow_the_server_version() {
        assert_eq!(rdb_version_for("6.2.14"), 9);
        assert_eq!(rdb_version_for("7.0.15"), 10);
        assert_eq!(rdb_version_for("7.2.4"), 11);
        assert_eq!(rdb_version_for("7.4.1"), 12);
        assert_eq!(rdb_version_for("8.0.0"), 12);
    }

    #[test]
    fn a_save_long_overdue_with_pending_changes_is_unhealthy() {
        let config: BTreeMap<String, String> =
            [("save".to_string(), "3600 1 300 100".to_string())].into();
        let state = |changes: &str, last: i64, running: &str| -> BTreeMap<String, String> {
            [
                (
                    "rdb_changes_since_last_save".to_string(),
                    changes.to_string(),
                ),
                ("rdb_last_save_time".to_string(), last.to_string()),
                ("rdb_bgsave_in_progress".to_string(), running.to_string()),
            ]
            .into()
        };
        let now = 1_800_000_000;
        let overdue = save_overdue(&config, &state("12", now - 3 * 3600, "0"), now);
        assert!(overdue.is_some_and(|m| m.contains("3h") && m.contains("12 changes")));
        // Within twice the longest interval, nothing pending, or a save running: fine.
        assert_eq!(
            save_overdue(&config, &state("12", now - 3600, "0"), now),
            None
        );
        assert_eq!(
            save_overdue(&config, &state("0", now - 9 * 3600, "0"), now),
            None
        );
        assert_eq!(
            save_overdue(&config, &state("12", now - 9 * 3600, "1"), now),
            None
        );
        // No save points: the server is not meant to save.
        let none: BTreeMap<String, String> = [("save".to_string(), String::new())].into();
        assert_eq!(
            save_overdue(&none, &state("12", now - 9 * 3600, "0"), now),
            None
        );
    }

    #[test]
    fn keys_in_messages_are_escaped_and_cut() {
        assert_eq!(printable(b"user:1"), "user:1");
        assert_eq!(printable(b"a\nb\xff"), "a\\nb\\xff");
        assert!(printable(&[b'k'; 200]).ends_with('…'));
    }
}
