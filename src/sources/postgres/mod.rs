//! The `postgres` source: `pg_dump -Fc -Z0` streamed into the sink (compression is the
//! pipeline's), `pg_dumpall --globals-only` as its own entry, a `pg_dump` whose major
//! version is at least the server's; restore with `pg_restore` fed from the
//! repository, globals first, `ANALYZE` afterwards (`vacuumdb`, as parallel as the restore).
//!
//! The password reaches the tools through `PGPASSWORD` in their environment, never on
//! a command line; messages name hosts and databases, never the password. Without one
//! in the policy, the tools read `.pgpass` themselves and backplan's own connections
//! read it the same way (see [`super::pgpass`]).
//!
//! With `jobs` above 1 a database is dumped in directory format (`pg_dump -Fd -j N`)
//! into a fresh folder under the source's `spool_dir`, and each file of it is stored as
//! its own entry (`DB.dir/toc.dat`, `DB.dir/1234.dat`); the folder goes afterwards.
//! A streamed dump's layout (where each table's rows lie in the archive, `custom`) is
//! read as it streams by and stored beside it.
//!
//! A restore writes an archive to a spool when `pg_restore` needs a file or a folder
//! (`--jobs N`, or any directory-format archive), after checking that it fits; a
//! whole restore goes by sections instead when it can (a directory-format archive,
//! or a custom-format one with its layout): only the tables of contents are spooled,
//! and the tables' rows are copied straight into the server (`sections`). A whole
//! restore also gives the database the archive's own properties of it (owner,
//! settings, privileges, comment: `properties`), last. A database that the restore
//! creates gets the archive's encoding and locale, from `template0`
//! ([`create_database`]).

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

mod custom;
mod properties;
mod sections;

pub use custom::LAYOUT_SUFFIX;
pub use properties::{Creation, DatabaseLocale, Properties};

/// The entry that holds roles and tablespaces.
pub const GLOBALS: &str = "globals.sql";
/// The suffix of a database's entry (`medianest.dump`).
pub const DUMP_SUFFIX: &str = ".dump";
/// The suffix of the folder of a database's directory-format archive: its files are
/// the entries `medianest.dir/toc.dat`, `medianest.dir/1234.dat`, ….
pub const DIR_SUFFIX: &str = ".dir";
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

/// Restores an archive into a scratch database on the same server (as `feed` says),
/// compares its row counts with those recorded at backup time, and drops it. Returns
/// the differences (empty when all match).
pub async fn restore_test(
    conn: &Connection,
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
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
    // Made like the source's database: its encoding and locale.
    let props = tokio::task::block_in_place(|| database_properties(tools, archive, feed, source))?;
    ready_target(&target, props.creation()).await?;
    let restored =
        tokio::task::block_in_place(|| restore_database(&target, tools, archive, feed, source));
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

    /// The password libpq would find in `$PGPASSFILE` or `~/.pgpass` for this host,
    /// port, database and user; the tools read the file themselves, tokio-postgres
    /// does not.
    fn pgpass_password(&self) -> Option<String> {
        let file = super::pgpass::default_path()?;
        let wanted = super::pgpass::Wanted {
            host: &self.host,
            port: self.port,
            database: self.config.get_dbname().unwrap_or(&self.user),
            user: &self.user,
        };
        super::pgpass::lookup(&file, &wanted)
    }

    /// A client connection; without a password from the policy or the URL, with the
    /// one `.pgpass` gives, as `pg_dump` would use.
    async fn client(&self) -> Result<tokio_postgres::Client, Failure> {
        let mut config = self.config.clone();
        if self.password.is_none()
            && let Some(p) = self.pgpass_password()
        {
            config.password(p);
        }
        let (client, connection) = config
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

/// The server's `server_version_num` (`170002`); 0 when it does not parse.
async fn server_version_num(
    client: &tokio_postgres::Client,
    conn: &Connection,
) -> Result<u32, Failure> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| db_error(conn, &e))?
        .get(0);
    Ok(version.trim().parse().unwrap_or(0))
}

/// Reads the server version and the databases.
pub async fn probe(conn: &Connection) -> Result<Probe, Failure> {
    let client = conn.client().await?;
    let q = |e: tokio_postgres::Error| db_error(conn, &e);
    let server_version_num = server_version_num(&client, conn).await?;
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
    /// pg_dump workers per database: 1 streams `-Fc`; more dump `-Fd -j N` into a
    /// fresh folder under `spool_dir`.
    pub jobs: u32,
    /// The source's `spool_dir`, resolved against the policy's folder.
    pub spool_dir: Option<PathBuf>,
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
        jobs: pg.jobs.unwrap_or(1).max(1),
        spool_dir: pg.spool_dir.as_ref().map(|d| policy.resolve_path(d)),
    })
}

/// Reads a child's stdout, checking the first bytes against `magic`, and hands a copy
/// of what it reads to `tap`.
struct Checked<R> {
    inner: R,
    magic: &'static [u8],
    seen: Vec<u8>,
    tap: Option<custom::LayoutReader>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(tap) = &mut self.tap {
            tap.push(&buf[..n]);
        }
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

/// A tool started with its stderr read on the side, so a chatty tool cannot block on
/// a full pipe.
struct Tool {
    child: Child,
    errors: std::thread::JoinHandle<String>,
}

impl Tool {
    /// Starts `cmd` with `stdin` and `stdout` as given.
    fn start(mut cmd: Command, what: &str, stdin: Stdio, stdout: Stdio) -> Result<Tool, Failure> {
        let mut child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        Ok(Tool { child, errors })
    }

    /// Waits for it to exit: its status and its stderr.
    fn wait(mut self, what: &str) -> Result<(std::process::ExitStatus, String), Failure> {
        let status = self
            .child
            .wait()
            .map_err(|e| failed(format!("{what}: {e}")))?;
        Ok((status, self.errors.join().unwrap_or_default()))
    }

    /// Waits for it; a non-zero exit fails with the tool's own reason. Returns its
    /// stderr.
    fn finish(self, what: &str) -> Result<String, Failure> {
        let (status, errors) = self.wait(what)?;
        if !status.success() {
            return Err(tool_failed(what, status, &errors));
        }
        Ok(errors)
    }
}

/// The last lines of a tool's stderr, for a message: the lines saying `error:` when
/// there are any (pg_restore ends with the failed command, often many lines), else the
/// last three.
fn stderr_tail(errors: &str) -> String {
    let mut tail: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("error:") || l.contains("ERROR:"))
        .take(3)
        .collect();
    if tail.is_empty() {
        tail = errors.lines().rev().take(3).collect();
        tail.reverse();
    }
    tail.join("; ")
}

/// `WHAT failed (STATUS): TAIL`.
fn tool_failed(what: &str, status: std::process::ExitStatus, errors: &str) -> Failure {
    let tail = stderr_tail(errors);
    failed(format!(
        "{what} failed ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Runs a tool that reads and writes files itself (no stdin, stdout discarded);
/// fails on a non-zero exit with the tool's own reason. Returns its stderr.
fn run_tool(cmd: Command, what: &str) -> Result<String, Failure> {
    Tool::start(cmd, what, Stdio::null(), Stdio::null())?.finish(what)
}

/// Runs a tool whose stdout is stored through `sink`; fails on a non-zero exit. With
/// `tap`, the output's layout as a custom-format archive is read on the way.
fn stream(
    cmd: Command,
    what: &str,
    magic: &'static [u8],
    tap: Option<custom::LayoutReader>,
    sink: &mut dyn ChunkSink,
) -> Result<(super::Stored, Option<Result<custom::Layout, String>>), Failure> {
    let mut tool = Tool::start(cmd, what, Stdio::null(), Stdio::piped())?;
    let stdout = tool
        .child
        .stdout
        .take()
        .ok_or_else(|| failed(format!("{what}: no output")))?;
    let mut reader = Checked {
        inner: stdout,
        magic,
        seen: Vec::new(),
        tap,
    };
    let stored = sink.store(&mut reader);
    let seen = reader.seen.len();
    let layout = reader.tap.take().map(custom::LayoutReader::finish);
    // Close our end before waiting: when the store stopped early (not an archive, a
    // storage error), a tool still writing gets SIGPIPE instead of blocking forever.
    drop(reader);
    let (status, errors) = tool.wait(what)?;
    // Our own reason first: a tool killed by the closed pipe only says SIGPIPE.
    let stored = stored.map_err(|e| failed(format!("{what}: {e}")))?;
    if !status.success() {
        return Err(tool_failed(what, status, &errors));
    }
    if magic.len() > seen {
        return Err(failed(format!("{what} produced no archive")));
    }
    Ok((stored, layout))
}

/// The first bytes of every pg_dump archive (custom format, and a directory-format
/// archive's `toc.dat`).
const ARCHIVE_MAGIC: &[u8] = b"PGDMP";

/// Dumps `db` in directory format with `p.jobs` workers into a fresh folder under the
/// spool folder, in the exported `snapshot`, and stores each of its files as an entry
/// `DB.dir/NAME`. The folder is removed whatever happens (also when a store fails).
/// Returns the entries and their bytes.
fn dump_directory(
    p: &Prepared,
    db: &str,
    snapshot: &str,
    sink: &mut dyn ChunkSink,
    now: chrono::DateTime<Utc>,
) -> Result<(Vec<Entry>, u64), Failure> {
    let what = format!("pg_dump -j {} of {db}", p.jobs);
    let dir = p.spool_dir.as_deref().ok_or_else(|| {
        failed(format!(
            "{what}: a parallel dump needs `spool_dir` on the source"
        ))
    })?;
    let spool = Spool::new(dir, "backplan-dump-").map_err(|e| failed(format!("{what}: {e}")))?;
    let out = spool.path().join("archive");
    let mut cmd = p.conn.command(&p.tools.tool("pg_dump"));
    cmd.args(["-Fd", "-Z0", "--no-password"])
        .arg(format!("--jobs={}", p.jobs))
        .arg(format!("--lock-wait-timeout={}", p.lock_wait_timeout))
        .arg(format!("--snapshot={snapshot}"))
        .arg("-f")
        .arg(&out)
        .args(["-d", db]);
    run_tool(cmd, &what)?;
    let mut names = Vec::new();
    for item in std::fs::read_dir(&out).map_err(|e| failed(format!("{what}: {e}")))? {
        let item = item.map_err(|e| failed(format!("{what}: {e}")))?;
        let name = item
            .file_name()
            .into_string()
            .map_err(|n| failed(format!("{what}: a file name that is not UTF-8: {n:?}")))?;
        if !item.file_type().is_ok_and(|t| t.is_file()) || !plain_file_name(&name) {
            return Err(failed(format!(
                "{what}: {name} in the archive folder is not a plain file"
            )));
        }
        names.push(name);
    }
    names.sort();
    let mut toc = [0u8; ARCHIVE_MAGIC.len()];
    let magic_ok = std::fs::File::open(out.join("toc.dat"))
        .and_then(|mut f| f.read_exact(&mut toc))
        .is_ok_and(|()| toc == ARCHIVE_MAGIC);
    if !magic_ok {
        return Err(failed(format!("{what} produced no archive (no toc.dat)")));
    }
    let (mut entries, mut bytes) = (Vec::new(), 0);
    for name in names {
        let path = out.join(&name);
        let mut file = std::fs::File::open(&path)
            .map_err(|e| failed(format!("{what}: {}: {e}", path.display())))?;
        let stored = sink
            .store(&mut file)
            .map_err(|e| failed(format!("{what}: storing {name}: {e}")))?;
        bytes += stored.bytes;
        entries.push(Entry::stream(
            format!("{db}{DIR_SUFFIX}/{name}"),
            stored.bytes,
            stored.chunks,
            now,
        ));
    }
    spool
        .remove()
        .map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))?;
    Ok((entries, bytes))
}

/// Dumps the globals and every database into a tree: `globals.sql`, and per database
/// `DB.dump` (streamed) or, with `jobs` above 1, `DB.dir/…`, plus `DB.counts.json`.
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
        let (stored, _) = stream(cmd, "pg_dumpall --globals-only", b"", None, sink)?;
        report.bytes_read += stored.bytes;
        report.tree.entries.push(entry(GLOBALS.into(), stored));
    }
    let before = parent.map(archives).unwrap_or_default();
    let runtime = tokio::runtime::Handle::current();
    for db in &p.databases {
        // One snapshot for the dump and the row counts: pg_dump (each of its workers,
        // in parallel) imports the snapshot this transaction exports, and the counts
        // are read in it afterwards.
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
        let (dumped, bytes) = if p.jobs > 1 {
            dump_directory(p, db, &snapshot, sink, now)?
        } else {
            let mut cmd = p.conn.command(&p.tools.tool("pg_dump"));
            cmd.args(["-Fc", "-Z0", "--no-password"])
                .arg(format!("--lock-wait-timeout={}", p.lock_wait_timeout))
                .arg(format!("--snapshot={snapshot}"))
                .args(["-d", db]);
            let what = format!("pg_dump of {db}");
            let (stored, layout) = stream(
                cmd,
                &what,
                ARCHIVE_MAGIC,
                Some(custom::LayoutReader::new()),
                sink,
            )?;
            let bytes = stored.bytes;
            let mut entries = vec![entry(format!("{db}{DUMP_SUFFIX}"), stored)];
            // Where each table's rows lie, for a restore by sections. An archive
            // whose layout cannot be read restores through one pg_restore.
            match layout.map(|l| l.and_then(|l| l.check(bytes).map(|()| l))) {
                Some(Ok(layout)) => {
                    let json = serde_json::to_vec(&layout).unwrap_or_default();
                    let stored = sink
                        .store(&mut &json[..])
                        .map_err(|e| failed(format!("storing the layout of {db}: {e}")))?;
                    entries.push(entry(format!("{db}{LAYOUT_SUFFIX}"), stored));
                }
                Some(Err(e)) => report.warnings.push(format!(
                    "{what}: where its tables' rows lie is not recorded ({e}); \
                     a restore with --jobs spools the whole archive"
                )),
                None => {}
            }
            (entries, bytes)
        };
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
        // Either format against either: both are uncompressed archives of one database.
        if let Some(last) = before.iter().find(|a| a.database == *db)
            && (bytes as f64) < last.bytes() as f64 * p.min_size_ratio
        {
            return Err(failed(format!(
                "the dump of {db} is {bytes} bytes, far smaller than the last good one ({} bytes; min_size_ratio {})",
                last.bytes(),
                p.min_size_ratio
            )));
        }
        report.bytes_read += bytes;
        report.files += 1;
        report.tree.entries.extend(dumped);
    }
    Ok(report)
}

// --- archives in a snapshot, and spools ------------------------------------------

/// One database's archive in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub database: String,
    pub format: ArchiveFormat,
    /// Of a custom-format archive: the entry `DB.layout.json`, where its tables' rows
    /// lie ([`custom::Layout`]), when the backup recorded it.
    pub layout: Option<Entry>,
}

/// How an archive was stored.
// One per archive, never in bulk: an `Entry` inline is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `DB.dump`: one `pg_dump -Fc` stream, which pg_restore can read from its stdin.
    Custom(Entry),
    /// `DB.dir/…`: the files of a `pg_dump -Fd` folder, each its own entry; pg_restore
    /// reads it only from a folder.
    Directory(Vec<Entry>),
}

impl Archive {
    /// `DB.dump` or `DB.dir/`, for messages and notes.
    pub fn name(&self) -> String {
        match &self.format {
            ArchiveFormat::Custom(e) => e.path.clone(),
            ArchiveFormat::Directory(_) => format!("{}{DIR_SUFFIX}/", self.database),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.format {
            ArchiveFormat::Custom(e) => std::slice::from_ref(e),
            ArchiveFormat::Directory(files) => files,
        }
    }

    /// The archive's bytes.
    pub fn bytes(&self) -> u64 {
        self.entries().iter().map(|e| e.size).sum()
    }

    /// What a spool of `files` of it takes on disk: each file rounded up to whole
    /// 4 KiB blocks. For a custom-format archive restored by sections this is an upper
    /// bound: what it takes is in its layout ([`check_space`] reads it).
    pub fn spool_bytes(&self, files: Files) -> u64 {
        self.entries()
            .iter()
            .filter(|e| {
                files == Files::All
                    || !self.needs_spool()
                    || sections::data_file_id(file_name(e)).is_none()
            })
            .map(|e| on_disk(e.size))
            .sum()
    }

    /// Whether pg_restore can read it only from disk.
    pub fn needs_spool(&self) -> bool {
        matches!(self.format, ArchiveFormat::Directory(_))
    }
}

/// The database archives of a snapshot's tree, in the order the tree holds them.
pub fn archives(tree: &Tree) -> Vec<Archive> {
    let mut out: Vec<Archive> = Vec::new();
    for e in &tree.entries {
        if let Some(db) = e.path.strip_suffix(DUMP_SUFFIX) {
            out.push(Archive {
                database: db.to_string(),
                format: ArchiveFormat::Custom(e.clone()),
                layout: None,
            });
            continue;
        }
        if e.path.ends_with(LAYOUT_SUFFIX) || e.path.ends_with(COUNTS_SUFFIX) {
            continue;
        }
        // A database name may hold `/`; the archive's own file names never do.
        let Some((db, _)) = e
            .path
            .rsplit_once('/')
            .and_then(|(folder, file)| Some((folder.strip_suffix(DIR_SUFFIX)?, file)))
        else {
            continue;
        };
        match out.iter_mut().find(|a| a.database == db) {
            Some(Archive {
                format: ArchiveFormat::Directory(files),
                ..
            }) => files.push(e.clone()),
            Some(_) => {}
            None => out.push(Archive {
                database: db.to_string(),
                format: ArchiveFormat::Directory(vec![e.clone()]),
                layout: None,
            }),
        }
    }
    for archive in &mut out {
        if matches!(archive.format, ArchiveFormat::Custom(_)) {
            let path = format!("{}{LAYOUT_SUFFIX}", archive.database);
            archive.layout = tree.entries.iter().find(|e| e.path == path).cloned();
        }
    }
    out
}

/// A file name pg_dump writes into a directory-format folder (`toc.dat`, `1234.dat`,
/// `blobs.toc`): no separator, not `.` or `..`, so a spool never writes outside its
/// folder whatever a tree says.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The file name of an entry of a directory-format archive (`toc.dat`, `1234.dat`).
fn file_name(entry: &Entry) -> &str {
    entry.path.rsplit('/').next().unwrap_or_default()
}

/// A fresh folder (mode 0700) under a spool folder, removed when dropped, so that an
/// error or a panic anywhere still removes it: it holds database contents in plain.
/// Its name is unique (`PREFIX` and random characters), so two runs never collide.
#[derive(Debug)]
pub struct Spool {
    dir: tempfile::TempDir,
}

impl Spool {
    /// Creates `parent` when missing, and a fresh folder in it.
    pub fn new(parent: &Path, prefix: &str) -> io::Result<Spool> {
        std::fs::create_dir_all(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        // tempfile leaves the mode to the umask: ask for the owner only.
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        Ok(Spool { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the folder now, reporting a failure (dropping removes it silently).
    pub fn remove(self) -> io::Result<()> {
        self.dir.close()
    }
}

/// Bytes available to this user on the filesystem holding `dir` (or, when it does
/// not exist yet, its nearest existing parent).
pub fn available_space(dir: &Path) -> Result<u64, Failure> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let existing = absolute
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let stat = rustix::fs::statvfs(existing).map_err(|e| {
        Failure::new(
            Code::Io,
            format!("cannot tell the free space of {}: {e}", existing.display()),
        )
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// How pg_restore reads an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// From its standard input, fed chunk by chunk: no disk used.
    Stream,
    /// From a copy in a fresh folder under `dir`, with `jobs` workers.
    Spool { dir: PathBuf, jobs: u32 },
}

impl Feed {
    /// A spool when pg_restore needs a file: more than one job, or an archive that
    /// only a folder holds; the spool goes under `spool` (default: the system's
    /// temporary folder, `$TMPDIR`).
    pub fn choose(archive: &Archive, jobs: Option<u32>, spool: Option<&Path>) -> Feed {
        let jobs = jobs.unwrap_or(1).max(1);
        if jobs > 1 || archive.needs_spool() {
            Feed::Spool {
                dir: spool.map_or_else(std::env::temp_dir, Path::to_path_buf),
                jobs,
            }
        } else {
            Feed::Stream
        }
    }
}

impl Feed {
    /// pg_restore's workers.
    pub fn jobs(&self) -> u32 {
        match self {
            Feed::Stream => 1,
            Feed::Spool { jobs, .. } => *jobs,
        }
    }
}

/// What a spool of `archive` in `dir` needs and what is available there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceCheck {
    pub needed: u64,
    pub available: u64,
}

impl SpaceCheck {
    pub fn fits(&self) -> bool {
        self.needed <= self.available
    }
}

/// Measures the room for a spool of `archive` in `dir` (for a plan: see
/// [`Archive::spool_bytes`]).
pub fn space_for(archive: &Archive, files: Files, dir: &Path) -> Result<SpaceCheck, Failure> {
    Ok(SpaceCheck {
        needed: archive.spool_bytes(files),
        available: available_space(dir)?,
    })
}

/// `bytes` rounded up to whole 4 KiB blocks: what a file of them takes on disk.
fn on_disk(bytes: u64) -> u64 {
    bytes.div_ceil(4096) * 4096
}

/// The layout a spool of `files` of `archive` is written from: a custom-format
/// archive's, whose skeleton it then holds; `None` for any other spool.
fn skeleton_layout(
    archive: &Archive,
    files: Files,
    source: &mut dyn ChunkSource,
) -> Result<Option<custom::Layout>, Failure> {
    match (&archive.format, files) {
        (ArchiveFormat::Custom(_), Files::TablesOfContents) => {
            load_layout(archive, source).map(Some)
        }
        _ => Ok(None),
    }
}

/// What a spool of `files` of `archive` takes on disk: with `layout`, its skeleton.
fn spool_size(archive: &Archive, files: Files, layout: Option<&custom::Layout>) -> u64 {
    layout.map_or_else(
        || archive.spool_bytes(files),
        |l| on_disk(l.skeleton_size()),
    )
}

/// Refuses a spool that would not fit, before anything is written. A custom-format
/// archive restored by sections takes its skeleton: its layout is read for it.
pub fn check_space(
    archive: &Archive,
    files: Files,
    dir: &Path,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    let layout = skeleton_layout(archive, files, source)?;
    check_room(archive, spool_size(archive, files, layout.as_ref()), dir)
}

/// Refuses a spool of `needed` bytes in `dir` that would not fit.
fn check_room(archive: &Archive, needed: u64, dir: &Path) -> Result<(), Failure> {
    let space = SpaceCheck {
        needed,
        available: available_space(dir)?,
    };
    if space.fits() {
        return Ok(());
    }
    Err(Failure::new(
        Code::NoSpace,
        format!(
            "the spool for {} needs {} in {}, which has {} available; nothing was restored",
            archive.name(),
            crate::render::bytes(space.needed),
            dir.display(),
            crate::render::bytes(space.available)
        ),
    ))
}

/// What of an archive a spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    All,
    /// All but the tables' rows: what `pg_restore --list` and a restore by sections
    /// need. Of a directory-format archive, all but its data files (`1234.dat`); of a
    /// custom-format archive with a layout, its skeleton: the archive with each
    /// table's block emptied.
    TablesOfContents,
}

/// An archive written into a fresh spool folder by [`spool_archive`].
struct Spooled {
    /// Removed when dropped.
    spool: Spool,
    /// What to give pg_restore: `archive.dump`, or the folder `archive/`.
    path: PathBuf,
    /// Whether `path` is a directory-format folder.
    directory: bool,
    /// The tables' rows not written out ([`Files::TablesOfContents`]).
    deferred: Vec<Rows>,
}

/// One table's rows, left in the repository by a spool.
struct Rows {
    /// The dump id of its entry in the table of contents.
    id: u32,
    /// Its bytes.
    size: u64,
    from: RowsIn,
}

impl Rows {
    /// Where it is, for messages: `DB.dir/1234.dat`, or `DB.dump, block 1234`.
    fn name(&self) -> String {
        match &self.from {
            RowsIn::File { entry, .. } => entry.path.clone(),
            RowsIn::Block { archive, .. } => format!("{}, block {}", archive.entry.path, self.id),
        }
    }
}

/// Where a table's rows are in a snapshot.
// One per table being restored: an `Entry` inline is fine.
#[allow(clippy::large_enum_variant)]
enum RowsIn {
    /// A directory-format archive's data file; its empty placeholder goes at `path`.
    File { entry: Entry, path: PathBuf },
    /// A block of a custom-format archive.
    Block {
        archive: std::sync::Arc<StoredArchive>,
        block: custom::Block,
    },
}

/// A custom-format archive in the repository, with where each of its chunks starts,
/// so that any range of it can be read.
struct StoredArchive {
    entry: Entry,
    layout: custom::Layout,
    /// The offset of each chunk, then the archive's size.
    offsets: Vec<u64>,
}

impl StoredArchive {
    fn new(
        entry: Entry,
        layout: custom::Layout,
        source: &mut dyn ChunkSource,
    ) -> Result<StoredArchive, Failure> {
        let mut offsets = Vec::with_capacity(entry.chunks.len() + 1);
        let mut at = 0u64;
        for id in &entry.chunks {
            offsets.push(at);
            at += source.length(id)?;
        }
        offsets.push(at);
        if at != entry.size {
            return Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "{}: its chunks hold {at} bytes, the snapshot says {}",
                    entry.path, entry.size
                ),
            ));
        }
        Ok(StoredArchive {
            entry,
            layout,
            offsets,
        })
    }

    /// Feeds bytes `start..end` of the archive to `out`, a piece per chunk.
    fn range(
        &self,
        start: u64,
        end: u64,
        source: &mut dyn ChunkSource,
        out: &mut dyn FnMut(bytes::Bytes) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let first = self
            .offsets
            .partition_point(|&o| o <= start)
            .saturating_sub(1);
        for (i, id) in self.entry.chunks.iter().enumerate().skip(first) {
            let (from, to) = (self.offsets[i], self.offsets[i + 1]);
            if from >= end {
                break;
            }
            let bytes = bytes::Bytes::from(source.fetch(id)?);
            if bytes.len() as u64 != to - from {
                return Err(Failure::new(
                    Code::CorruptObject,
                    format!(
                        "{}: a chunk is not the length the index says",
                        self.entry.path
                    ),
                ));
            }
            let lo = start.saturating_sub(from) as usize;
            let hi = (end.min(to) - from) as usize;
            out(bytes.slice(lo..hi))?;
        }
        Ok(())
    }
}

/// The layout of a custom-format archive, read from its side entry and checked
/// against the archive's size.
fn load_layout(archive: &Archive, source: &mut dyn ChunkSource) -> Result<custom::Layout, Failure> {
    let (ArchiveFormat::Custom(dump), Some(entry)) = (&archive.format, &archive.layout) else {
        return Err(failed(format!("{}: no layout recorded", archive.name())));
    };
    let mut json = Vec::new();
    feed(entry, source, &mut json)?;
    let corrupt = |e: String| Failure::new(Code::CorruptObject, format!("{}: {e}", entry.path));
    let layout: custom::Layout =
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
    layout.check(dump.size).map_err(corrupt)?;
    Ok(layout)
}

/// Writes `archive` into a fresh spool folder under `dir` (after checking that it
/// fits): `archive.dump`, or the folder `archive/` with the directory format's files
/// that `files` asks for.
fn spool_archive(
    archive: &Archive,
    dir: &Path,
    files: Files,
    source: &mut dyn ChunkSource,
) -> Result<Spooled, Failure> {
    // Read once: for the room the skeleton takes, then to write it.
    let layout = skeleton_layout(archive, files, source)?;
    check_room(archive, spool_size(archive, files, layout.as_ref()), dir)?;
    let io_failed = |what: &str, e: io::Error| {
        Failure::new(
            Code::Io,
            format!("spooling {} ({what}): {e}", archive.name()),
        )
    };
    let spool = Spool::new(dir, "backplan-restore-").map_err(|e| io_failed("folder", e))?;
    let mut deferred = Vec::new();
    let path = match (&archive.format, layout) {
        (ArchiveFormat::Custom(entry), Some(layout)) => {
            let path = spool.path().join("archive.dump");
            let stored = std::sync::Arc::new(StoredArchive::new(entry.clone(), layout, source)?);
            let layout = &stored.layout;
            let file = std::fs::File::create(&path).map_err(|e| io_failed("skeleton", e))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            let mut write =
                |b: bytes::Bytes| out.write_all(&b).map_err(|e| io_failed("skeleton", e));
            stored.range(0, layout.toc_end, source, &mut write)?;
            for block in &layout.blocks {
                if block.table {
                    write(layout.header(block).into())?;
                    write(layout.end_of_data().into())?;
                    deferred.push(Rows {
                        id: block.id,
                        size: block.end - block.data,
                        from: RowsIn::Block {
                            archive: stored.clone(),
                            block: block.clone(),
                        },
                    });
                } else {
                    stored.range(block.start, block.end, source, &mut write)?;
                }
            }
            out.flush().map_err(|e| io_failed("skeleton", e))?;
            path
        }
        (ArchiveFormat::Custom(entry), None) => {
            let path = spool.path().join("archive.dump");
            write_file(&path, entry, source, &mut || Ok(()))?;
            path
        }
        (ArchiveFormat::Directory(entries), _) => {
            let folder = spool.path().join("archive");
            std::fs::create_dir(&folder).map_err(|e| io_failed("folder", e))?;
            for entry in entries {
                let name = file_name(entry);
                if !plain_file_name(name) {
                    return Err(Failure::new(
                        Code::CorruptObject,
                        format!("{}: not a file name of a pg_dump folder", entry.path),
                    ));
                }
                let path = folder.join(name);
                let table = sections::data_file_id(name);
                if let (Files::TablesOfContents, Some(id)) = (files, table) {
                    deferred.push(Rows {
                        id,
                        size: entry.size,
                        from: RowsIn::File {
                            entry: entry.clone(),
                            path,
                        },
                    });
                } else {
                    write_file(&path, entry, source, &mut || Ok(()))?;
                }
            }
            folder
        }
    };
    Ok(Spooled {
        spool,
        directory: matches!(archive.format, ArchiveFormat::Directory(_)),
        path,
        deferred,
    })
}

/// Writes an entry into a new file at `path`, calling `tick` after each chunk.
fn write_file(
    path: &Path,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    tick: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<(), Failure> {
    let io_failed = |e: io::Error| Failure::new(Code::Io, format!("spooling {}: {e}", entry.path));
    let file = std::fs::File::create(path).map_err(io_failed)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    feed_with(entry, source, &mut out, tick)?;
    out.flush().map_err(io_failed)
}

/// Feeds an entry's chunks into `writer`.
fn feed(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    writer: &mut dyn Write,
) -> Result<u64, Failure> {
    feed_with(entry, source, writer, &mut || Ok(()))
}

/// [`feed`], calling `tick` after each chunk (a failure there stops it).
fn feed_with(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    writer: &mut dyn Write,
    tick: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<u64, Failure> {
    each_chunk(entry, source, &mut |bytes| {
        writer
            .write_all(&bytes)
            .map_err(|e| failed(format!("writing {}: {e}", entry.path)))?;
        tick()
    })
}

/// Fetches an entry's chunks in order and hands each to `out`; checks that they add
/// up to the entry's size. Returns it.
fn each_chunk(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    out: &mut dyn FnMut(Vec<u8>) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let mut n = 0u64;
    for id in &entry.chunks {
        let bytes = source.fetch(id)?;
        n += bytes.len() as u64;
        out(bytes)?;
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

impl RestoreTarget {
    /// Whether the whole archive is restored (no `--table`, no `--schema`): only
    /// then do the database's own properties come along.
    pub fn whole(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty()
    }
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

/// Creates the database when missing (see [`create_database`]); refuses a non-empty
/// one without `clean`.
pub async fn ready_target(t: &RestoreTarget, creation: Option<&Creation>) -> Result<(), Failure> {
    if check_target(t).await? {
        return Ok(());
    }
    create_database(t, creation).await
}

/// Creates the target database: with the archive's encoding and locale from
/// `template0` (`creation`, see [`Creation`]), in the archive's tablespace when the
/// server has one of that name (else its default); without `creation` (an archive
/// that has no `CREATE DATABASE`), with the server's defaults. A server that lacks
/// the archive's locale fails with [`Code::DatabaseLocale`].
pub async fn create_database(
    t: &RestoreTarget,
    creation: Option<&Creation>,
) -> Result<(), Failure> {
    let client = t.conn.with_database("postgres").client().await?;
    let statement = match creation {
        Some(c) => {
            let tablespace = match c.tablespace() {
                Some(ts) => client
                    .query_opt("SELECT 1 FROM pg_tablespace WHERE spcname = $1", &[&ts])
                    .await
                    .map_err(|e| db_error(&t.conn, &e))?
                    .is_some(),
                None => false,
            };
            c.statement(&t.database, tablespace)
        }
        None => format!("CREATE DATABASE {}", properties::quote_ident(&t.database)),
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| creation_failed(t, &statement, &db_error(&t.conn, &e).message))
}

/// A failed `CREATE DATABASE`: [`Code::DatabaseLocale`] when the server lacks the
/// archive's locale (or its encoding does not go with it there), else the server's
/// error as it is.
fn creation_failed(t: &RestoreTarget, statement: &str, said: &str) -> Failure {
    let locale = [
        "invalid locale name",
        "could not open collator",
        "does not match locale",
        "is not supported by ICU",
        "invalid LC_COLLATE locale name",
        "invalid LC_CTYPE locale name",
    ]
    .iter()
    .any(|m| said.contains(m));
    if !locale {
        return Failure::new(Code::DatabaseError, said.to_string());
    }
    Failure::new(
        Code::DatabaseLocale,
        format!(
            "database {} was not created with the snapshot's encoding and locale: {said}, at `{statement}`; \
             nothing was restored",
            t.database
        ),
    )
    .with_help(format!(
        "the server lacks the snapshot's locale: create the database by hand with a locale it has \
         (CREATE DATABASE {} TEMPLATE template0 ENCODING … LOCALE …; `locale -a` on the server lists \
         them), then restore into it",
        properties::quote_ident(&t.database)
    ))
}

/// The encoding and locale of database `db` on the server: its `pg_database` row
/// (`datlocprovider` and the provider's locale from PostgreSQL 15 on).
pub async fn database_locale(conn: &Connection, db: &str) -> Result<DatabaseLocale, Failure> {
    let client = conn.with_database("postgres").client().await?;
    let q = |e: tokio_postgres::Error| db_error(conn, &e);
    let major = server_version_num(&client, conn).await? / 10_000;
    let (provider, locale, rules) = match major {
        0..=14 => ("'libc'", "NULL", "NULL"),
        15 => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' ELSE 'libc' END",
            "daticulocale",
            "NULL",
        ),
        16 => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' ELSE 'libc' END",
            "daticulocale",
            "daticurules",
        ),
        _ => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END",
            "datlocale",
            "daticurules",
        ),
    };
    let row = client
        .query_one(
            &format!(
                "SELECT pg_encoding_to_char(encoding)::text, {provider}::text, datcollate::text, \
                 datctype::text, {locale}::text, {rules}::text FROM pg_database WHERE datname = $1"
            ),
            &[&db],
        )
        .await
        .map_err(q)?;
    Ok(DatabaseLocale {
        encoding: row.get(0),
        provider: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        locale: row.get(4),
        icu_rules: row.get(5),
    })
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

/// Restores the globals (roles may exist already: their errors are not fatal) with
/// psql; returns what it said, each error with its statement.
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
        "--echo-errors",
        "-v",
        "ON_ERROR_STOP=0",
        "-d",
        "postgres",
        "-f",
        "-",
    ]);
    run_fed(cmd, "psql (globals)", entry, source, false)
}

/// Reads the database's own properties from `archive` (see `properties`): its
/// owner, settings, the settings of roles in it, its privileges, comment and
/// security labels, as `pg_restore --create` would apply them. A custom-format
/// archive is fed in twice until pg_restore has read its table of contents (the rest
/// is not fetched); of a directory-format one, its `toc.dat` goes into a fresh folder
/// under the feed's spool folder first. Needs no server.
pub fn database_properties(
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
    source: &mut dyn ChunkSource,
) -> Result<Properties, Failure> {
    let dir = match feed {
        Feed::Spool { dir, .. } => dir.clone(),
        Feed::Stream => std::env::temp_dir(),
    };
    let what = format!("reading the database properties of {}", archive.name());
    let unreadable = |e: String| {
        Failure::new(Code::DatabaseProperties, format!("{what}: {e}")).with_help(
            "create the database by hand (with the source's encoding and locale) and restore into \
             it with --schema or --table, which leave the database's own properties alone; set \
             those by hand",
        )
    };
    let (listing_of, script_of) = (
        format!("pg_restore --create --list of {}", archive.name()),
        format!("pg_restore --create -L … -f - of {}", archive.name()),
    );
    let pg_restore = |args: &[&str]| {
        let mut cmd = Command::new(tools.tool("pg_restore"));
        cmd.args(args);
        cmd
    };
    let (script, spool) = match &archive.format {
        ArchiveFormat::Custom(entry) => {
            let spool = Spool::new(&dir, "backplan-restore-")
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            let listing = fed_output(
                pg_restore(&["--create", "--list"]),
                &listing_of,
                entry,
                source,
            )?;
            let list = database_list(&listing, spool.path())?;
            let script = match list {
                Some(list) => fed_output(
                    pg_restore(&["--create", "-f", "-", "-L", &list]),
                    &script_of,
                    entry,
                    source,
                )?,
                None => String::new(),
            };
            (script, spool)
        }
        ArchiveFormat::Directory(files) => {
            // Its `toc.dat` alone: the database's entries have no data file.
            let toc = files
                .iter()
                .find(|e| file_name(e) == "toc.dat")
                .ok_or_else(|| {
                    Failure::new(
                        Code::CorruptObject,
                        format!("{}: no toc.dat in the snapshot", archive.name()),
                    )
                })?;
            check_room(archive, on_disk(toc.size), &dir)?;
            let spool = Spool::new(&dir, "backplan-restore-")
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            let folder = spool.path().join("archive");
            std::fs::create_dir(&folder)
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            write_file(&folder.join("toc.dat"), toc, source, &mut || Ok(()))?;
            let reading = |args: &[&str]| {
                let mut cmd = pg_restore(args);
                cmd.arg("-Fd").arg(&folder);
                cmd
            };
            let listing = sections::output(reading(&["--create", "--list"]), &listing_of)?;
            let script = match database_list(&listing, spool.path())? {
                Some(list) => {
                    sections::output(reading(&["--create", "-f", "-", "-L", &list]), &script_of)?
                }
                None => String::new(),
            };
            (script, spool)
        }
    };
    spool
        .remove()
        .map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))?;
    properties::parse(&script, &archive.database).map_err(unreadable)
}

/// Writes the database's own entries of a `pg_restore --create --list` listing into
/// a list file in `dir`, for `-L`; `None` when there are none.
fn database_list(listing: &str, dir: &Path) -> Result<Option<String>, Failure> {
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| properties::is_database_entry(l))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    sections::list_file(dir, "database.list", &lines).map(Some)
}

/// Checks that the roles the database's properties name (its owner, grantees, roles
/// with settings in it) exist on the target server, once the snapshot's globals are
/// restored (`globals`: what psql said of them, `None` without globals): a missing
/// one stops the restore before its data. Blocks on the current runtime.
pub fn check_roles(
    t: &RestoreTarget,
    props: &Properties,
    globals: Option<&str>,
) -> Result<(), Failure> {
    if props.roles().is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::current();
    let client = runtime.block_on(t.conn.with_database(&t.database).client())?;
    let wanted: Vec<&str> = props.roles().iter().map(String::as_str).collect();
    let found: Vec<String> = runtime
        .block_on(client.query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&wanted],
        ))
        .map_err(|e| db_error(&t.conn, &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let absent: Vec<&str> = wanted
        .iter()
        .filter(|w| !found.iter().any(|f| f == *w))
        .copied()
        .collect();
    let missing: Vec<String> = absent.iter().map(|w| properties::quote_ident(w)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let help = match globals {
        None => "this snapshot holds no globals (the source has `globals: false`): create the \
                 roles on the target (CREATE ROLE …) and restore again, with --clean"
            .to_string(),
        Some(said) => {
            let refused = globals_refused(said, &absent);
            if refused.is_empty() {
                "the snapshot's globals (globals.sql) do not create them: create the roles on \
                 the target (CREATE ROLE …) and restore again, with --clean"
                    .to_string()
            } else {
                format!(
                    "psql could not create them from the snapshot's globals ({}): restore as a \
                     superuser, or create the roles on the target (CREATE ROLE …), and restore \
                     again, with --clean",
                    refused.join("; ")
                )
            }
        }
    };
    Err(Failure::new(
        Code::DatabaseRolesMissing,
        format!(
            "database {}: its owner, privileges or settings name role{} {} that {} not on {}; \
             its data was not restored",
            t.database,
            crate::plan::plural(missing.len()),
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            t.conn.describe()
        ),
    )
    .with_help(help))
}

/// What psql said (with `--echo-errors`) when a `CREATE ROLE` of one of `roles`
/// failed: `CREATE ROLE "x": permission denied to create role`.
fn globals_refused(said: &str, roles: &[&str]) -> Vec<String> {
    let lines: Vec<&str> = said.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((_, statement)) = line.split_once("STATEMENT:") else {
            continue;
        };
        let statement = statement.trim().trim_end_matches(';');
        let creates = roles.iter().any(|r| {
            [properties::quote_ident(r), r.to_string()]
                .iter()
                .any(|name| statement == format!("CREATE ROLE {name}"))
        });
        let error = i
            .checked_sub(1)
            .and_then(|j| lines[j].split_once("ERROR:"))
            .map(|(_, e)| e.trim());
        if let (true, Some(error)) = (creates, error) {
            out.push(format!("{statement}: {error}"));
        }
    }
    out
}

/// Gives the target database the properties read from the archive, in one
/// transaction, once its data is restored and analyzed (a revoked `CONNECT` or a
/// setting such as `default_transaction_read_only` cannot get in the restore's way):
/// what it has of its own is reset first (settings, the settings of roles in it,
/// connection limit, comment, privileges), so that the snapshot's alone hold, as in
/// a database `pg_restore --create` makes. An archive that holds none changes
/// nothing. Blocks on the current runtime.
pub fn apply_properties(t: &RestoreTarget, props: &Properties) -> Result<(), Failure> {
    if props.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::current();
    runtime.block_on(async {
        let mut client = t.conn.with_database(&t.database).client().await?;
        let server = |e: tokio_postgres::Error| db_error(&t.conn, &e);
        let row = client
            .query_one(
                "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, d.datacl IS NOT NULL, \
                 ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL \
                       ELSE pg_get_userbyid(a.grantee)::text END \
                       FROM aclexplode(d.datacl) AS a ORDER BY 1), \
                 ARRAY(SELECT pg_get_userbyid(s.setrole)::text FROM pg_db_role_setting AS s \
                       WHERE s.setdatabase = d.oid AND s.setrole <> 0 ORDER BY 1) \
                 FROM pg_database AS d WHERE d.datname = $1",
                &[&t.database],
            )
            .await
            .map_err(server)?;
        let current = properties::Current {
            owner: row.get(0),
            connection_limit: row.get(1),
            grantees: row.get::<_, bool>(2).then(|| row.get(3)),
            role_settings: row.get(4),
        };
        let tx = client.transaction().await.map_err(server)?;
        let statements = properties::reset(&t.database, &current)
            .into_iter()
            .chain(props.statements(&t.database));
        for statement in statements {
            if let Err(e) = tx.batch_execute(&statement).await {
                let said = db_error(&t.conn, &e).message;
                return Err(Failure::new(
                    Code::DatabaseProperties,
                    format!(
                        "database {}: its data is restored, but its properties from the snapshot \
                         were not applied (none of them): {said}, at `{}`",
                        t.database,
                        statement.trim()
                    ),
                )
                .with_help(
                    "the owner, privileges and settings of a database are set by a superuser \
                     (or its owner, a member of the new owner's role): restore again as one, \
                     with --clean",
                ));
            }
        }
        tx.commit().await.map_err(server)
    })
}

/// Reads an archive's table of contents with `pg_restore --list`: it is a whole,
/// readable pg_dump archive. Needs no server. A custom-format archive streams in; a
/// directory-format one is spooled into a fresh folder under `spool` first.
pub fn list_archive(
    tools: &Tools,
    archive: &Archive,
    spool: &Path,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    let mut cmd = Command::new(tools.tool("pg_restore"));
    cmd.arg("--list");
    let what = format!("pg_restore --list of {}", archive.name());
    match &archive.format {
        ArchiveFormat::Custom(entry) => run_fed(cmd, &what, entry, source, true).map(|_| ()),
        ArchiveFormat::Directory(_) => {
            let spooled = spool_archive(archive, spool, Files::TablesOfContents, source)?;
            cmd.arg("-Fd").arg(&spooled.path);
            run_tool(cmd, &what)?;
            spooled
                .spool
                .remove()
                .map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))
        }
    }
}

/// Whether `archive` is restored into `t` section by section from a spool, its
/// tables' data copied straight from the repository (see `sections`): a
/// directory-format archive, or a custom-format one whose layout the backup recorded,
/// restored whole (not `--clean`, `--table` or `--schema`).
pub fn by_sections(archive: &Archive, t: &RestoreTarget) -> bool {
    let layout = match archive.format {
        ArchiveFormat::Directory(_) => true,
        ArchiveFormat::Custom(_) => archive.layout.is_some(),
    };
    layout && sections::possible(t)
}

/// What a restore of `archive` into `t` writes into its spool.
pub fn spool_files(archive: &Archive, t: &RestoreTarget) -> Files {
    if by_sections(archive, t) {
        Files::TablesOfContents
    } else {
        Files::All
    }
}

/// Restores one database archive with pg_restore: fed through its standard input, or
/// from a spool (`-j N`, `-Fd` for a directory-format archive) that is removed
/// afterwards whatever happens.
pub fn restore_database(
    t: &RestoreTarget,
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
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
    let what = format!("pg_restore into {}", t.database);
    match (feed, &archive.format) {
        (Feed::Stream, ArchiveFormat::Custom(entry)) => run_fed(cmd, &what, entry, source, true),
        (Feed::Stream, ArchiveFormat::Directory(_)) => Err(failed(format!(
            "{what}: {} is a directory-format archive, which pg_restore reads only from a spool",
            archive.name()
        ))),
        (Feed::Spool { dir, jobs }, format) => {
            let by_sections = by_sections(archive, t);
            let spooled = spool_archive(archive, dir, spool_files(archive, t), source)?;
            let done = if by_sections {
                sections::restore(t, tools, &spooled, *jobs, source)
            } else {
                cmd.arg(format!("--jobs={jobs}"));
                if matches!(format, ArchiveFormat::Directory(_)) {
                    cmd.arg("-Fd");
                }
                cmd.arg(&spooled.path);
                run_tool(cmd, &format!("pg_restore -j {jobs} into {}", t.database))
            };
            // The restore's own failure first; a spool that cannot be removed after a
            // good restore is a failure too: it holds the database in plain.
            let removed = spooled.spool.remove();
            let errors = done?;
            removed.map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))?;
            Ok(errors)
        }
    }
}

fn run_fed(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    strict: bool,
) -> Result<String, Failure> {
    run_fed_capturing(cmd, what, entry, source, strict, false).map(|(errors, _)| errors)
}

/// A tool fed with an entry whose output is small (a listing, a few statements):
/// returns what it printed. It may stop reading early (`pg_restore --list` reads a
/// custom-format archive's table of contents only): the rest is not fetched.
fn fed_output(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let (_, out) = run_fed_capturing(cmd, what, entry, source, true, true)?;
    String::from_utf8(out).map_err(|_| failed(format!("{what}: its output is not UTF-8")))
}

/// [`run_fed`], keeping the tool's stdout when `capture` (read on the side).
fn run_fed_capturing(
    cmd: Command,
    what: &str,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    strict: bool,
    capture: bool,
) -> Result<(String, Vec<u8>), Failure> {
    let stdout = if capture {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut tool = Tool::start(cmd, what, Stdio::piped(), stdout)?;
    let output = tool.child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            out.read_to_end(&mut bytes).map(|_| bytes)
        })
    });
    let mut stdin = Pipe {
        inner: tool
            .child
            .stdin
            .take()
            .ok_or_else(|| failed(format!("{what}: no input")))?,
        broken: false,
    };
    // Stops at the first chunk that the tool no longer reads.
    let fed = feed(entry, source, &mut stdin);
    let broken = stdin.broken;
    drop(stdin);
    let output = match output {
        Some(reader) => reader
            .join()
            .map_err(|_| failed(format!("{what}: reading its output stopped")))?
            .map_err(|e| failed(format!("{what}: reading its output: {e}")))?,
        None => Vec::new(),
    };
    let (status, errors) = tool.wait(what)?;
    // The tool's own reason first: when it stops at an error, feeding it fails with a
    // broken pipe, which says nothing.
    if strict && !status.success() {
        return Err(tool_failed(what, status, &errors));
    }
    match fed {
        // A partial restore (`--table`, `--schema`) may finish without reading the
        // rest of the archive.
        Err(_) if broken && status.success() => {}
        other => {
            other?;
        }
    }
    Ok((errors, output))
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

/// `ANALYZE` after a restore, so the planner has statistics at once: `vacuumdb
/// --analyze-only` with `jobs` connections, each analyzing its share of the tables.
pub fn analyze(t: &RestoreTarget, tools: &Tools, jobs: u32) -> Result<(), Failure> {
    let mut cmd = t.conn.command(&tools.tool("vacuumdb"));
    cmd.args(["--no-password", "--analyze-only", "--quiet"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .args(["-d", &t.database]);
    run_tool(cmd, &format!("ANALYZE of {} (vacuumdb)", t.database)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> Entry {
        Entry::stream(path, size, Vec::new(), Utc::now())
    }

    fn tree(paths: &[(&str, u64)]) -> Tree {
        Tree {
            entries: paths.iter().map(|(p, s)| entry(p, *s)).collect(),
            root: None,
        }
    }

    #[test]
    fn archives_are_found_in_both_formats_in_tree_order_and_names_may_hold_slashes() {
        let t = tree(&[
            (GLOBALS, 10),
            ("app.counts.json", 5),
            ("app.dump", 1000),
            ("a/b.dir/toc.dat", 100),
            ("a/b.dir/3001.dat", 5000),
            ("a/b.counts.json", 5),
            ("a/b.dir/3002.dat", 1),
        ]);
        let found = archives(&t);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].database, "app");
        assert_eq!(found[0].name(), "app.dump");
        assert!(!found[0].needs_spool());
        assert_eq!(found[1].database, "a/b");
        assert_eq!(found[1].name(), "a/b.dir/");
        assert!(found[1].needs_spool());
        assert_eq!(found[1].entries().len(), 3);
        assert_eq!(found[1].bytes(), 5101);
        // Each file takes whole 4 KiB blocks in a spool.
        assert_eq!(found[1].spool_bytes(Files::All), 4096 + 8192 + 4096);
        // Restored by sections, only the table of contents goes there.
        assert_eq!(found[1].spool_bytes(Files::TablesOfContents), 4096);
    }

    #[test]
    fn a_spool_is_used_for_jobs_or_a_directory_archive_and_goes_where_asked() {
        let custom = archives(&tree(&[("app.dump", 1)])).remove(0);
        let directory = archives(&tree(&[("app.dir/toc.dat", 1)])).remove(0);
        assert_eq!(Feed::choose(&custom, None, None), Feed::Stream);
        assert_eq!(Feed::choose(&custom, Some(1), None), Feed::Stream);
        assert_eq!(
            Feed::choose(&custom, Some(4), Some(Path::new("/srv/spool"))),
            Feed::Spool {
                dir: PathBuf::from("/srv/spool"),
                jobs: 4
            }
        );
        assert_eq!(
            Feed::choose(&directory, None, None),
            Feed::Spool {
                dir: std::env::temp_dir(),
                jobs: 1
            }
        );
    }

    #[test]
    fn a_spool_that_does_not_fit_is_refused_before_anything_is_written() {
        struct NoChunks;
        impl ChunkSource for NoChunks {
            fn fetch(&mut self, _: &crate::repo::keys::ChunkId) -> Result<Vec<u8>, Failure> {
                Err(Failure::new(Code::VerifyFailed, "nothing may be fetched"))
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let huge = archives(&tree(&[("app.dump", u64::MAX / 2)])).remove(0);
        let spool = dir.path().join("spool");
        let err = spool_archive(&huge, &spool, Files::All, &mut NoChunks)
            .err()
            .expect("it cannot fit");
        assert_eq!(err.code, Code::NoSpace);
        assert!(err.message.contains("app.dump needs "), "{}", err.message);
        assert!(err.message.contains(" available"), "{}", err.message);
        assert!(!spool.exists(), "nothing was created");
        // A small one fits, in a folder that does not exist yet.
        let small = archives(&tree(&[("app.dump", 1)])).remove(0);
        assert!(
            space_for(&small, Files::All, &spool)
                .expect("measured")
                .fits()
        );
    }

    #[test]
    fn what_psql_said_of_a_role_it_could_not_create_is_found_among_its_errors() {
        let said = "psql:<stdin>:1: ERROR:  permission denied to create role\n\
            psql:<stdin>:1: STATEMENT:  CREATE ROLE postgres;\n\
            psql:<stdin>:3: ERROR:  permission denied to create role\n\
            psql:<stdin>:3: STATEMENT:  CREATE ROLE \"App Owner\";\n\
            psql:<stdin>:4: ERROR:  must be superuser to alter superuser roles\n\
            psql:<stdin>:4: STATEMENT:  ALTER ROLE \"App Owner\" WITH NOSUPERUSER;\n\
            psql:<stdin>:5: ERROR:  permission denied to create role\n\
            psql:<stdin>:5: STATEMENT:  CREATE ROLE reader;\n";
        assert_eq!(
            globals_refused(said, &["App Owner", "reader", "other"]),
            [
                "CREATE ROLE \"App Owner\": permission denied to create role",
                "CREATE ROLE reader: permission denied to create role"
            ]
        );
        assert!(globals_refused(said, &["other"]).is_empty());
    }

    #[test]
    fn a_server_without_the_snapshots_locale_fails_with_its_own_code_and_what_to_do() {
        let t = RestoreTarget {
            conn: Connection::from_url("postgres://postgres@db.invalid:5432/app", None)
                .expect("a URL"),
            database: "New App".into(),
            clean: false,
            tables: Vec::new(),
            schemas: Vec::new(),
        };
        let statement = "CREATE DATABASE \"New App\" WITH TEMPLATE = template0 LOCALE = 'xx_YY'";
        // What PostgreSQL 15 to 17 say.
        for said in [
            "PostgreSQL at postgres@db.invalid:5432: invalid locale name: \"xx_YY\"",
            "PostgreSQL at postgres@db.invalid:5432: invalid LC_COLLATE locale name: \"xx_YY\"",
            "PostgreSQL at postgres@db.invalid:5432: encoding \"LATIN1\" does not match locale \"C.utf8\"",
        ] {
            let f = creation_failed(&t, statement, said);
            assert_eq!(f.code, Code::DatabaseLocale, "{said}");
            assert!(f.message.contains(said), "{}", f.message);
            assert!(f.message.contains(statement), "{}", f.message);
            assert!(f.message.contains("nothing was restored"), "{}", f.message);
            let help = f.help.expect("help");
            assert!(
                help.contains("create the database by hand with a locale it has")
                    && help.contains("CREATE DATABASE \"New App\" TEMPLATE template0")
                    && help.contains("then restore into it"),
                "{help}"
            );
        }
        let other = creation_failed(&t, statement, "permission denied to create database");
        assert_eq!(other.code, Code::DatabaseError);
        assert_eq!(other.message, "permission denied to create database");
    }

    #[test]
    fn only_plain_names_are_written_into_a_spool_folder() {
        for good in ["toc.dat", "3001.dat", "blobs.toc", "blob_16384.dat"] {
            assert!(plain_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_spool_folder_is_private_unique_and_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parent = dir.path().join("missing/spool");
        let (a, b) = (
            Spool::new(&parent, "backplan-test-").expect("a spool"),
            Spool::new(&parent, "backplan-test-").expect("another"),
        );
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        std::fs::write(a.path().join("toc.dat"), b"PGDMP").expect("write");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        b.remove().expect("removed");
        assert_eq!(std::fs::read_dir(&parent).expect("read").count(), 0);
    }
}
