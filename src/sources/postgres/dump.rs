//! Backup: preparing a dump and streaming `pg_dump` (and `pg_dumpall --globals-only`)
//! into the sink.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chrono::Utc;

use crate::error::{Code, Failure};
use crate::pipeline::{ChunkSink, Stored};
use crate::policy::Policy;
use crate::policy::model::PostgresSource;
use crate::repo::format::{Entry, Tree};
use crate::repo::tree::PackedTree;
use crate::sources::ScanReport;

use super::*;

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
    /// Record each table's row checksum beside its count ([`CHECKSUMS`]).
    pub checksums: bool,
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
        checksums: pg.checksums.unwrap_or(false),
    })
}

/// Runs a tool whose stdout is stored through `sink`; fails on a non-zero exit. With
/// `tap`, the output's layout as a custom-format archive is read on the way.
fn stream(
    cmd: Command,
    what: &str,
    magic: &'static [u8],
    tap: Option<custom::LayoutReader>,
    sink: &mut dyn ChunkSink,
) -> Result<(Stored, Option<Result<custom::Layout, String>>), Failure> {
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
/// `DB.dump` (streamed) or, with `jobs` above 1, `DB.dir/…`, plus `DB.counts.json`;
/// with `checksums`, one `checksums.json` for all the databases, last.
/// A dump far smaller than the same database's in `parent` fails the snapshot.
pub fn backup(
    p: &Prepared,
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, Failure> {
    let mut report = ScanReport::default();
    let mut tree = Tree::default();
    let now = Utc::now();
    let entry =
        |path: String, stored: Stored| Entry::stream(path, stored.bytes, stored.chunks, now);
    if p.globals {
        let mut cmd = p.conn.command(&p.tools.tool("pg_dumpall"));
        cmd.args(["--globals-only", "--no-password", "-l"])
            .arg(p.conn.database().unwrap_or("postgres"));
        let (stored, _) = stream(cmd, "pg_dumpall --globals-only", b"", None, sink)?;
        report.bytes_read += stored.bytes;
        tree.entries.push(entry(GLOBALS.into(), stored));
    }
    let before = match parent {
        Some(parent) => archives(&parent.unpack()?),
        None => Vec::new(),
    };
    let runtime = tokio::runtime::Handle::current();
    let mut checksums = Checksums {
        method: CHECKSUM_METHOD.to_string(),
        databases: Default::default(),
    };
    for db in &p.databases {
        // One snapshot for the dump and the row counts (and checksums): pg_dump (each
        // of its workers, in parallel) imports the snapshot this transaction exports,
        // and the counts are read in it afterwards.
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
        let rows = runtime
            .block_on(table_rows(&client, p.checksums))
            .map_err(|e| db_error(&conn, &e))?;
        let _ = runtime.block_on(client.batch_execute("COMMIT"));
        // As builds before checksums wrote it, which they read.
        let json = serde_json::to_vec_pretty(&rows.counts).unwrap_or_default();
        let counted = sink
            .store(&mut &json[..])
            .map_err(|e| failed(format!("storing the row counts of {db}: {e}")))?;
        tree.entries
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
        tree.entries.extend(dumped);
        if p.checksums {
            checksums.databases.insert(db.clone(), rows.checksums);
        }
    }
    if p.checksums {
        let json = serde_json::to_vec_pretty(&checksums).unwrap_or_default();
        let stored = sink
            .store(&mut &json[..])
            .map_err(|e| failed(format!("storing the row checksums: {e}")))?;
        tree.entries.push(entry(CHECKSUMS.into(), stored));
    }
    report
        .set_tree(&tree)
        .map_err(|e| failed(format!("writing the snapshot's tree: {e}")))?;
    Ok(report)
}
