//! The `postgres` source: `pg_dump -Fc -Z0` streamed into the sink (compression is the
//! pipeline's), `pg_dumpall --globals-only` as its own entry, a `pg_dump` whose major
//! version is at least the server's; restore with `pg_restore` fed from the
//! repository, globals first, `ANALYZE` afterwards.
//!
//! The password reaches the tools through `PGPASSWORD` in their environment, never on
//! a command line; messages name hosts and databases, never the password.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

use super::{ChunkSink, ChunkSource};
use crate::error::{Code, Failure};
use crate::policy::Policy;
use crate::policy::model::PostgresSource;
use crate::repo::format::{Entry, Tree};
use crate::sources::files::ScanReport;

/// The entry that holds roles and tablespaces.
pub const GLOBALS: &str = "globals.sql";
/// The suffix of a database's entry (`medianest.dump`).
pub const DUMP_SUFFIX: &str = ".dump";
/// The suffix of the entry with a database's row counts at backup time.
pub const COUNTS_SUFFIX: &str = ".counts.json";

/// Exact row counts of every user table (`schema.table` → rows).
pub async fn row_counts(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let tables = client
        .query(
            "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut counts = BTreeMap::new();
    for t in tables {
        let (schema, table, quoted): (String, String, String) = (t.get(0), t.get(1), t.get(2));
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await?
            .get(0);
        counts.insert(format!("{schema}.{table}"), n);
    }
    Ok(counts)
}

/// Restores a dump into a scratch database on the same server, compares its row
/// counts with those recorded at backup time, and drops it. Returns the differences
/// (empty when all match).
pub async fn restore_test(
    conn: &Connection,
    tools: &Tools,
    dump: &Entry,
    recorded: &BTreeMap<String, i64>,
    source: &mut (dyn ChunkSource + Send),
) -> Result<Vec<String>, Failure> {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    let scratch = format!(
        "backplan_verify_{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let target = RestoreTarget {
        conn: conn.clone(),
        database: scratch.clone(),
        clean: false,
        tables: Vec::new(),
        schemas: Vec::new(),
    };
    ready_target(&target).await?;
    let restored = tokio::task::block_in_place(|| restore_database(&target, tools, dump, source));
    let counted = match restored {
        Ok(_) => match conn.with_database(&scratch).client().await {
            Ok(client) => row_counts(&client).await.map_err(|e| db_error(conn, &e)),
            Err(f) => Err(f),
        },
        Err(f) => Err(f),
    };
    // The scratch database goes whatever happened above.
    let maintenance = conn.with_database("postgres").client().await?;
    let _ = maintenance
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{scratch}\""))
        .await;
    match counted {
        Ok(counts) => {
            let mut diffs = Vec::new();
            for (table, want) in recorded {
                match counts.get(table) {
                    Some(got) if got == want => {}
                    Some(got) => diffs.push(format!(
                        "{table}: {got} rows restored, {want} at backup time"
                    )),
                    None => diffs.push(format!("{table}: missing after the restore")),
                }
            }
            Ok(diffs)
        }
        Err(f) => Err(f),
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(message: impl Into<String>) -> Failure {
    Failure::new(Code::SourceFailed, message)
}

/// A server's error, with the server's own message where it gave one.
fn db_error(conn: &Connection, e: &tokio_postgres::Error) -> Failure {
    // tokio-postgres's own text leaves out the cause ("error connecting to server").
    let detail = match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(d), _) => d.message().to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    };
    Failure::new(
        Code::DatabaseError,
        format!("PostgreSQL at {}: {detail}", conn.describe()),
    )
}

/// How to reach a server, resolved from the policy.
#[derive(Clone)]
pub struct Connection {
    config: Config,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.describe())
    }
}

impl Connection {
    /// Resolves the URL and the password reference.
    pub fn new(pg: &PostgresSource, policy: &Policy) -> Result<Connection, Failure> {
        let url = pg
            .url
            .resolve()
            .map_err(|e| Failure::new(Code::SecretUnresolved, format!("postgres url: {e}")))?;
        Connection::from_url(url.expose(), password(pg, policy)?)
    }

    /// A connection to `url`, with an optional password.
    pub fn from_url(url: &str, password: Option<String>) -> Result<Connection, Failure> {
        let mut config = Config::from_str(url).map_err(|e| {
            Failure::new(
                Code::InvalidValue,
                format!(
                    "`{}` is not a PostgreSQL URL: {e}",
                    crate::policy::secret::redact_url_password(url)
                ),
            )
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_string();
        let password = password.or_else(|| {
            config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        });
        if let Some(p) = &password {
            config.password(p.as_str());
        }
        Ok(Connection {
            config,
            host,
            port,
            user,
            password,
        })
    }

    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The database the URL names.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server, another database.
    pub fn with_database(&self, db: &str) -> Connection {
        let mut c = self.clone();
        c.config.dbname(db);
        c
    }

    fn command(&self, tool: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
        ]);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        match &self.password {
            Some(p) => {
                cmd.env("PGPASSWORD", p);
            }
            None => {
                cmd.env_remove("PGPASSWORD");
            }
        }
        cmd
    }

    async fn client(&self) -> Result<tokio_postgres::Client, Failure> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| db_error(self, &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

fn password(pg: &PostgresSource, policy: &Policy) -> Result<Option<String>, Failure> {
    super::password(
        pg.password.as_ref(),
        pg.password_file.as_ref(),
        policy,
        "postgres password",
    )
}

/// What the server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub server_version_num: u32,
    /// Every database that accepts connections (templates excluded), with its size.
    pub databases: BTreeMap<String, u64>,
    pub in_recovery: bool,
}

impl Probe {
    pub fn major(&self) -> u32 {
        self.server_version_num / 10_000
    }
}

/// Reads the server version and the databases.
pub async fn probe(conn: &Connection) -> Result<Probe, Failure> {
    let client = conn.client().await?;
    let q = |e: tokio_postgres::Error| db_error(conn, &e);
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(q)?
        .get(0);
    let server_version_num = version.trim().parse().unwrap_or(0);
    let rows = client
        .query(
            "SELECT datname, pg_database_size(datname)::bigint FROM pg_database \
             WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .map_err(q)?;
    let databases = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect();
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(q)?
        .get(0);
    Ok(Probe {
        server_version_num,
        databases,
        in_recovery,
    })
}

/// The tools of one PostgreSQL major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub bin_dir: PathBuf,
    pub major: u32,
}

impl Tools {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn tool_major(pg_dump: &Path) -> Option<u32> {
    let out = Command::new(pg_dump).arg("--version").output().ok()?;
    // "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// Finds `pg_dump` and friends whose major version is at least `server_major`: the
/// configured folder, else `/usr/lib/postgresql/*/bin` (newest first), else `PATH`.
pub fn find_tools(bin_dir: Option<&Path>, server_major: u32) -> Result<Tools, Failure> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match bin_dir {
        Some(dir) => candidates.push(dir.to_path_buf()),
        None => {
            if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
                let mut dirs: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect();
                dirs.sort();
                dirs.reverse();
                candidates.extend(dirs);
            }
            if let Some(path) = std::env::var_os("PATH") {
                candidates.extend(std::env::split_paths(&path));
            }
        }
    }
    let mut seen = Vec::new();
    for dir in candidates {
        let dump = dir.join("pg_dump");
        if !dump.is_file() {
            continue;
        }
        if let Some(major) = tool_major(&dump) {
            seen.push(major);
            if major >= server_major {
                return Ok(Tools {
                    bin_dir: dir,
                    major,
                });
            }
        }
    }
    Err(Failure::new(
        Code::SourceFailed,
        format!(
            "the server runs PostgreSQL {server_major}, and no pg_dump of version {server_major} or newer was found (found: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            }
        ),
    )
    .with_help(format!(
        "install postgresql-client-{server_major} (or newer), or set `bin_dir` on the source"
    )))
}

/// Everything a dump needs, found before it starts.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub conn: Connection,
    pub tools: Tools,
    pub databases: Vec<String>,
    pub globals: bool,
    pub lock_wait_timeout: String,
    pub min_size_ratio: f64,
    pub probe: Probe,
}

/// Connects, checks versions and picks the databases.
pub async fn prepare(pg: &PostgresSource, policy: &Policy) -> Result<Prepared, Failure> {
    let conn = Connection::new(pg, policy)?;
    let probe = probe(&conn).await?;
    let bin_dir = pg.bin_dir.as_ref().map(|d| policy.resolve_path(d));
    let tools = find_tools(bin_dir.as_deref(), probe.major())?;
    let databases = if pg.databases.is_empty() {
        vec![conn.database().unwrap_or(&conn.user).to_string()]
    } else {
        pg.databases.clone()
    };
    for db in &databases {
        if !probe.databases.contains_key(db) {
            return Err(failed(format!(
                "database {db} does not exist on {}",
                conn.describe()
            )));
        }
    }
    let lock_wait_timeout = pg
        .lock_wait_timeout
        .as_deref()
        .map(crate::policy::parse_duration)
        .transpose()
        .map_err(|e| Failure::new(Code::BadDuration, e))?
        .map_or(60_000, |d| d.num_milliseconds());
    Ok(Prepared {
        conn,
        tools,
        databases,
        globals: pg.globals.unwrap_or(true),
        lock_wait_timeout: format!("{lock_wait_timeout}ms"),
        min_size_ratio: pg.min_size_ratio.unwrap_or(0.5),
        probe,
    })
}

/// Reads a child's stdout, checking the first bytes against `magic`.
struct Checked<R> {
    inner: R,
    magic: &'static [u8],
    seen: Vec<u8>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.seen.len() < self.magic.len() {
            let take = (self.magic.len() - self.seen.len()).min(n);
            self.seen.extend_from_slice(&buf[..take]);
            if !self.magic.starts_with(&self.seen) {
                return Err(io::Error::other(
                    "the dump does not start like a pg_dump archive",
                ));
            }
        }
        Ok(n)
    }
}

/// Reads a child's stderr on the side, so a chatty tool cannot block on a full pipe.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    })
}

/// Runs a tool whose stdout is stored through `sink`; fails on a non-zero exit.
fn stream(
    mut cmd: Command,
    what: &str,
    magic: &'static [u8],
    sink: &mut dyn ChunkSink,
) -> Result<super::Stored, Failure> {
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed(format!("{what}: no output")))?;
    let errors = collect_stderr(&mut child);
    let mut reader = Checked {
        inner: stdout,
        magic,
        seen: Vec::new(),
    };
    let stored = sink.store(&mut reader);
    let seen = reader.seen.len();
    // Close our end before waiting: when the store stopped early (not an archive, a
    // storage error), a tool still writing gets SIGPIPE instead of blocking forever.
    drop(reader);
    let status = child.wait().map_err(|e| failed(format!("{what}: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    let tail: String = errors
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("; ");
    // Our own reason first: a tool killed by the closed pipe only says SIGPIPE.
    let stored = stored.map_err(|e| failed(format!("{what}: {e}")))?;
    if !status.success() {
        return Err(failed(format!(
            "{what} failed ({status}){}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )));
    }
    if magic.len() > seen {
        return Err(failed(format!("{what} produced no archive")));
    }
    Ok(stored)
}

/// Dumps the globals and every database into a tree: `globals.sql`, `DB.dump`.
/// A dump far smaller than the same database's in `parent` fails the snapshot.
pub fn backup(
    p: &Prepared,
    parent: Option<&Tree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, Failure> {
    let mut report = ScanReport::default();
    let now = Utc::now();
    let entry =
        |path: String, stored: super::Stored| Entry::stream(path, stored.bytes, stored.chunks, now);
    if p.globals {
        let mut cmd = p.conn.command(&p.tools.tool("pg_dumpall"));
        cmd.args(["--globals-only", "--no-password", "-l"])
            .arg(p.conn.database().unwrap_or("postgres"));
        let stored = stream(cmd, "pg_dumpall --globals-only", b"", sink)?;
        report.bytes_read += stored.bytes;
        report.tree.entries.push(entry(GLOBALS.into(), stored));
    }
    let runtime = tokio::runtime::Handle::current();
    for db in &p.databases {
        // One snapshot for the dump and the row counts: pg_dump imports the snapshot
        // this transaction exports, and the counts are read in it afterwards.
        let conn = p.conn.with_database(db);
        let client = runtime.block_on(conn.client())?;
        let snapshot: String = runtime
            .block_on(async {
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                client
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await
                    .map(|r| r.get(0))
            })
            .map_err(|e| db_error(&conn, &e))?;
        let mut cmd = p.conn.command(&p.tools.tool("pg_dump"));
        cmd.args(["-Fc", "-Z0", "--no-password"])
            .arg(format!("--lock-wait-timeout={}", p.lock_wait_timeout))
            .arg(format!("--snapshot={snapshot}"))
            .args(["-d", db]);
        let stored = stream(cmd, &format!("pg_dump of {db}"), b"PGDMP", sink)?;
        let counts = runtime
            .block_on(row_counts(&client))
            .map_err(|e| db_error(&conn, &e))?;
        let _ = runtime.block_on(client.batch_execute("COMMIT"));
        let json = serde_json::to_vec_pretty(&counts).unwrap_or_default();
        let counted = sink
            .store(&mut &json[..])
            .map_err(|e| failed(format!("storing the row counts of {db}: {e}")))?;
        report
            .tree
            .entries
            .push(entry(format!("{db}{COUNTS_SUFFIX}"), counted));
        let name = format!("{db}{DUMP_SUFFIX}");
        if let Some(before) = parent.and_then(|t| t.entries.iter().find(|e| e.path == name))
            && (stored.bytes as f64) < before.size as f64 * p.min_size_ratio
        {
            return Err(failed(format!(
                "the dump of {db} is {} bytes, far smaller than the last good one ({} bytes; min_size_ratio {})",
                stored.bytes, before.size, p.min_size_ratio
            )));
        }
        report.bytes_read += stored.bytes;
        report.files += 1;
        report.tree.entries.push(entry(name, stored));
    }
    Ok(report)
}

/// Feeds an entry's chunks into `writer`.
fn feed(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    writer: &mut dyn Write,
) -> Result<u64, Failure> {
    let mut n = 0u64;
    for id in &entry.chunks {
        let bytes = source
            .fetch(id)
            .map_err(|e| Failure::new(Code::CorruptObject, e))?;
        n += bytes.len() as u64;
        writer
            .write_all(&bytes)
            .map_err(|e| failed(format!("writing {}: {e}", entry.path)))?;
    }
    if n != entry.size {
        return Err(Failure::new(
            Code::CorruptObject,
            format!(
                "{}: {n} bytes restored, the snapshot says {}",
                entry.path, entry.size
            ),
        ));
    }
    Ok(n)
}

/// How a database restore runs.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub conn: Connection,
    pub database: String,
    pub clean: bool,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
}

/// Whether the target database exists and has user tables.
pub async fn target_state(conn: &Connection, db: &str) -> Result<(bool, i64), Failure> {
    let probe = probe(&conn.with_database("postgres")).await?;
    if !probe.databases.contains_key(db) {
        return Ok((false, 0));
    }
    let client = conn.with_database(db).client().await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .map_err(|e| db_error(conn, &e))?
        .get(0);
    Ok((true, n))
}

/// Creates the database when missing; refuses a non-empty one without `clean`.
pub async fn ready_target(t: &RestoreTarget) -> Result<(), Failure> {
    if !check_target(t).await? {
        let client = t.conn.with_database("postgres").client().await?;
        let quoted = format!("\"{}\"", t.database.replace('"', "\"\""));
        client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .map_err(|e| db_error(&t.conn, &e))?;
    }
    Ok(())
}

/// Refuses a non-empty database without `clean`; returns whether it exists. Changes
/// nothing, so that every target of a restore is checked before any is touched.
pub async fn check_target(t: &RestoreTarget) -> Result<bool, Failure> {
    let (exists, tables) = target_state(&t.conn, &t.database).await?;
    if exists && tables > 0 && !t.clean {
        return Err(Failure::new(
            Code::RestoreRefused,
            format!(
                "database {} on {} is not empty ({tables} tables); nothing was restored",
                t.database,
                t.conn.describe()
            ),
        )
        .with_help(
            "restore into another database with --target, or replace its contents with --clean",
        ));
    }
    Ok(exists)
}

/// Restores the globals (roles may exist already: their errors are reported, not
/// fatal) with psql.
pub fn restore_globals(
    t: &RestoreTarget,
    tools: &Tools,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let mut cmd = t.conn.command(&tools.tool("psql"));
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=0",
        "-d",
        "postgres",
        "-f",
        "-",
    ]);
    run_fed(cmd, "psql (globals)", entry, source, false)
}

/// Reads an archive's table of contents with `pg_restore --list`: it is a whole,
/// readable pg_dump archive. Needs no server.
pub fn list_archive(
    tools: &Tools,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    let mut cmd = Command::new(tools.tool("pg_restore"));
    cmd.arg("--list");
    run_fed(
        cmd,
        &format!("pg_restore --list of {}", entry.path),
        entry,
        source,
        true,
    )
    .map(|_| ())
}

/// Restores one database archive with pg_restore reading from its standard input.
pub fn restore_database(
    t: &RestoreTarget,
    tools: &Tools,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let mut cmd = t.conn.command(&tools.tool("pg_restore"));
    cmd.args(["--no-password", "--exit-on-error", "-d", &t.database]);
    if t.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    for table in &t.tables {
        cmd.args(["--table", table]);
    }
    for schema in &t.schemas {
        cmd.args(["--schema", schema]);
    }
    run_fed(
        cmd,
        &format!("pg_restore into {}", t.database),
        entry,
        source,
        true,
    )
}

fn run_fed(
    mut cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    strict: bool,
) -> Result<String, Failure> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
    let errors = collect_stderr(&mut child);
    let mut stdin = Pipe {
        inner: child
            .stdin
            .take()
            .ok_or_else(|| failed(format!("{what}: no input")))?,
        broken: false,
    };
    let fed = feed(entry, source, &mut stdin);
    let broken = stdin.broken;
    drop(stdin);
    let status = child.wait().map_err(|e| failed(format!("{what}: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    // The tool's own reason first: when it stops at an error, feeding it fails with a
    // broken pipe, which says nothing.
    if strict && !status.success() {
        // pg_restore ends with the failed command, often many lines: its error line
        // says more.
        let mut tail: Vec<&str> = errors
            .lines()
            .filter(|l| l.contains("error:") || l.contains("ERROR:"))
            .take(3)
            .collect();
        if tail.is_empty() {
            tail = errors.lines().rev().take(3).collect();
            tail.reverse();
        }
        return Err(failed(format!(
            "{what} failed ({status}): {}",
            tail.join("; ")
        )));
    }
    match fed {
        // A partial restore (`--table`, `--schema`) may finish without reading the
        // rest of the archive.
        Err(_) if broken && status.success() => {}
        other => {
            other?;
        }
    }
    Ok(errors)
}

/// A tool's standard input that remembers whether the tool closed it.
struct Pipe<W> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for Pipe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::BrokenPipe) {
            self.broken = true;
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `ANALYZE` after a restore, so the planner has statistics at once.
pub async fn analyze(t: &RestoreTarget) -> Result<(), Failure> {
    let client = t.conn.with_database(&t.database).client().await?;
    client
        .batch_execute("ANALYZE")
        .await
        .map_err(|e| db_error(&t.conn, &e))
}
