//! An archive restored section by section, its tables' data copied straight from the
//! repository into the server, several tables at once.
//!
//! `pg_restore -j N` needs the whole archive on disk before it starts, and it reads
//! only whole regular files (it refuses named pipes), so writing the archive out and
//! then restoring it makes the two phases add up. Here pg_restore does what it does
//! best, the schema and the indexes, and the tables' data never touch the disk:
//!
//! 1. the tables of contents go into a fresh spool: of a directory-format archive,
//!    `toc.dat` and the large objects' files, with an empty placeholder for each
//!    table's data file; of a custom-format archive, its skeleton (the archive with
//!    each table's block emptied, from the layout the backup recorded);
//! 2. `pg_restore --section=pre-data` makes the schema;
//! 3. `pg_restore --section=data -f -` of the placeholders prints the SQL it would
//!    run for each table: its session settings and its `COPY … FROM stdin`. Up to
//!    `jobs` connections run those statements, largest table first, each fed with
//!    the table's rows chunk by chunk as they are fetched and checked (a custom
//!    archive's frames undone on the way, see `custom::Frames`). A `COPY` is
//!    one statement: a table gets all its rows or none. Beside them one
//!    `pg_restore --section=data` restores the data entries without a data file of
//!    their own (sequence values, large objects);
//! 4. `pg_restore --section=post-data -j N` builds the indexes and constraints.
//!
//! pg_restore's script is read before the database is touched: one that does not
//! match the archive's tables one for one stops the restore there.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::SinkExt;

use super::custom::Frames;
use super::{
    RestoreTarget, Rows, RowsIn, Spooled, Tool, Tools, db_error, each_chunk, failed, run_tool,
    tool_failed,
};
use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;

/// Whether a restore can go by sections: a whole restore. `--clean` (whose drops
/// must run in one pass, in dependency order), `--table` and `--schema` go through
/// one `pg_restore -j` of the whole archive.
pub(super) fn possible(t: &RestoreTarget) -> bool {
    !t.clean && t.tables.is_empty() && t.schemas.is_empty()
}

/// The dump id of a line of `pg_restore --list` (`3545; 0 16390 TABLE DATA …`);
/// `None` for a comment.
fn dump_id(line: &str) -> Option<u32> {
    if line.starts_with(';') {
        return None;
    }
    line.split(';').next()?.trim().parse().ok()
}

/// The dump id of a table's data file (`3545.dat`).
pub(super) fn data_file_id(name: &str) -> Option<u32> {
    name.strip_suffix(".dat")?.parse().ok()
}

/// pg_restore's data script: the session settings it starts with, then a `COPY` per
/// table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    settings: String,
    copies: Vec<Copy>,
}

/// One table's part of pg_restore's data script.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Copy {
    /// The statements between it and the one before (none, as pg_restore 15 writes
    /// the script).
    prelude: String,
    /// `COPY … FROM stdin;`
    statement: String,
}

/// Splits pg_restore's data script into its session settings and its `COPY`
/// statements, each with the SQL before it. Comments and psql's meta-commands
/// (`\restrict`, the `\.` that ends a table's rows) are left out; the placeholders
/// hold no rows.
fn data_script(script: &str) -> Script {
    let mut out = Vec::new();
    let mut prelude = String::new();
    let mut statement: Option<String> = None;
    for line in script.lines() {
        if let Some(s) = &mut statement {
            s.push('\n');
            s.push_str(line);
        } else if line.starts_with("COPY ") {
            statement = Some(line.to_string());
        } else if !(line.is_empty() || line.starts_with("--") || line.starts_with('\\')) {
            prelude.push_str(line);
            prelude.push('\n');
        }
        if statement
            .as_ref()
            .is_some_and(|s| s.ends_with(" FROM stdin;"))
        {
            out.push(Copy {
                prelude: std::mem::take(&mut prelude),
                statement: statement.take().unwrap_or_default(),
            });
        }
    }
    // What comes before the first COPY sets up the session, for every connection.
    let settings = out
        .first_mut()
        .map(|c| std::mem::take(&mut c.prelude))
        .unwrap_or_default();
    Script {
        settings,
        copies: out,
    }
}

/// Runs a tool that reads the spool and prints to its stdout; returns what it printed.
pub(super) fn output(mut cmd: Command, what: &str) -> Result<String, Failure> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        let errors = String::from_utf8_lossy(&out.stderr);
        return Err(tool_failed(what, out.status, &errors));
    }
    String::from_utf8(out.stdout).map_err(|_| failed(format!("{what}: its output is not UTF-8")))
}

/// The restore of one archive into one database.
struct Sections<'a> {
    t: &'a RestoreTarget,
    tools: &'a Tools,
    spooled: &'a Spooled,
}

impl Sections<'_> {
    /// `pg_restore` reading the spool, with `args` before it.
    fn reading(&self, mut cmd: Command, args: &[&str]) -> Command {
        cmd.args(args);
        if self.spooled.directory {
            cmd.arg("-Fd");
        }
        cmd.arg(&self.spooled.path);
        cmd
    }

    /// `pg_restore` of `section` of the spool into the database, with `args`.
    fn pg_restore(&self, section: &str, args: &[&str]) -> Command {
        let mut cmd = self.t.conn.command(&self.tools.tool("pg_restore"));
        cmd.args(["--no-password", "--exit-on-error", "-d", &self.t.database])
            .arg(format!("--section={section}"));
        self.reading(cmd, args)
    }

    fn what(&self, section: &str) -> String {
        format!("pg_restore --section={section} into {}", self.t.database)
    }

    /// Writes `lines` of the archive's listing into a list file for `-L`.
    fn list_file(&self, name: &str, lines: &[&str]) -> Result<String, Failure> {
        list_file(self.spooled.spool.path(), name, lines)
    }
}

/// Writes `lines` of an archive's listing into the list file `dir/name`, for
/// `pg_restore -L`; returns its path.
pub(super) fn list_file(dir: &Path, name: &str, lines: &[&str]) -> Result<String, Failure> {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n")
        .map_err(|e| Failure::new(Code::Io, format!("{}: {e}", path.display())))?;
    Ok(path.display().to_string())
}

/// One table to copy: where its rows are and its statements.
struct Table<'e> {
    rows: &'e Rows,
    copy: Copy,
}

/// Restores an archive whose tables of contents `spooled` holds (its tables' rows
/// deferred) into `t` by sections (see the module's documentation).
pub(super) fn restore(
    t: &RestoreTarget,
    tools: &Tools,
    spooled: &Spooled,
    jobs: u32,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let jobs = jobs.max(1);
    let s = Sections { t, tools, spooled };
    for rows in &spooled.deferred {
        if let RowsIn::File { path, .. } = &rows.from {
            std::fs::File::create(path)
                .map_err(|e| Failure::new(Code::Io, format!("{}: {e}", path.display())))?;
        }
    }

    let list = s.reading(Command::new(tools.tool("pg_restore")), &["--list"]);
    let listing = output(list, "pg_restore --list")?;
    let listing: Vec<(Option<u32>, &str)> = listing
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (dump_id(l), l))
        .collect();
    // The tables' rows in archive order, and every other entry (the data section
    // keeps its sequence values and large objects).
    let deferred: HashMap<u32, &Rows> = spooled.deferred.iter().map(|r| (r.id, r)).collect();
    let tables: Vec<(&Rows, &str)> = listing
        .iter()
        .filter_map(|(id, line)| Some((*deferred.get(&(*id)?)?, *line)))
        .collect();
    let rest: Vec<&str> = listing
        .iter()
        .filter(|(id, _)| !id.is_some_and(|id| deferred.contains_key(&id)))
        .map(|(_, l)| *l)
        .collect();

    // The data script first: a script that does not match the tables stops the
    // restore before it touches the database.
    let lines: Vec<&str> = tables.iter().map(|(_, l)| *l).collect();
    let tables_list = s.list_file("tables.list", &lines)?;
    let script = s.reading(
        Command::new(tools.tool("pg_restore")),
        &["--section=data", "-f", "-", "-L", &tables_list],
    );
    let script = data_script(&output(script, "pg_restore --section=data -f -")?);
    if script.copies.len() != tables.len() || tables.len() != spooled.deferred.len() {
        return Err(Failure::new(
            Code::RestoreFailed,
            format!(
                "pg_restore's data script holds {} COPY statements for {} tables; nothing was restored",
                script.copies.len(),
                spooled.deferred.len()
            ),
        )
        .with_help("restore with --clean, which goes through one pg_restore of the whole archive"));
    }
    let mut tables: Vec<Table<'_>> = tables
        .into_iter()
        .zip(script.copies)
        .map(|((rows, _), copy)| Table { rows, copy })
        .collect();
    // Largest first, as pg_restore -j would: the longest load starts first.
    tables.sort_by_key(|t| std::cmp::Reverse(t.rows.size));

    run_tool(s.pg_restore("pre-data", &[]), &s.what("pre-data"))?;

    let rest_list = s.list_file("rest.list", &rest)?;
    let others = s.pg_restore("data", &["-L", &rest_list]);
    let mut others = Tool::start(others, &s.what("data"), Stdio::null(), Stdio::null())?;
    let loaded = copy_tables(t, &script.settings, tables, jobs as usize, source);
    if loaded.is_err() {
        let _ = others.child.kill();
    }
    let others = others.finish(&s.what("data"));
    loaded?;
    others?;

    let post = s.pg_restore("post-data", &[&format!("--jobs={jobs}")]);
    run_tool(post, &s.what("post-data"))
}

/// Copies `tables` into the database on up to `jobs` connections, each set up with
/// `settings` and each table's rows fetched from the repository as they are sent (by
/// a twin of `source` per connection; one connection when the source has no twins).
fn copy_tables(
    t: &RestoreTarget,
    settings: &str,
    tables: Vec<Table<'_>>,
    jobs: usize,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    if tables.is_empty() {
        return Ok(());
    }
    let mut twins = Vec::new();
    while twins.len() + 1 < jobs.min(tables.len()) {
        match source.twin() {
            Some(twin) => twins.push(twin),
            None => break,
        }
    }
    let queue = Mutex::new(tables.into_iter());
    let stop = AtomicBool::new(false);
    // The failure that stopped the others: theirs only say they were stopped.
    let cause: Mutex<Option<Failure>> = Mutex::new(None);
    let runtime = tokio::runtime::Handle::current();
    let connection = |source: &mut dyn ChunkSource| -> Result<(), Failure> {
        let conn = t.conn.with_database(&t.database);
        let client = runtime.block_on(conn.client())?;
        runtime
            .block_on(client.batch_execute(settings))
            .map_err(|e| db_error(&t.conn, &e))?;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some(table) = next else {
                return Ok(());
            };
            let copied = copy_table(&runtime, &t.conn, &client, &table, source, &stop);
            copied.map_err(|f| {
                let f = Failure {
                    message: format!("{}: {}", table.rows.name(), f.message),
                    ..f
                };
                if !stop.swap(true, Ordering::Relaxed) {
                    *cause.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
                }
                f
            })?;
        }
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = twins
            .into_iter()
            .map(|mut twin| scope.spawn(move || connection(twin.as_mut())))
            .collect();
        let mine = connection(source);
        let mut first = mine.err();
        for handle in others {
            let done = handle
                .join()
                .unwrap_or_else(|_| Err(failed("a copying thread stopped")));
            if let Err(f) = done {
                first.get_or_insert(f);
            }
        }
        let cause = cause.lock().unwrap_or_else(|e| e.into_inner()).take();
        cause.or(first).map_or(Ok(()), Err)
    })
}

/// Runs one table's statements and sends its data file's chunks through `COPY`. A
/// `COPY` that is not finished is aborted by the server: nothing of it stays.
fn copy_table(
    runtime: &tokio::runtime::Handle,
    conn: &super::Connection,
    client: &tokio_postgres::Client,
    table: &Table<'_>,
    source: &mut dyn ChunkSource,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let server = |e: tokio_postgres::Error| db_error(conn, &e);
    if !table.copy.prelude.is_empty() {
        runtime
            .block_on(client.batch_execute(&table.copy.prelude))
            .map_err(server)?;
    }
    let sink = runtime
        .block_on(client.copy_in::<_, bytes::Bytes>(&table.copy.statement))
        .map_err(server)?;
    let mut sink = Box::pin(sink);
    let mut send = |bytes: bytes::Bytes| {
        if stop.load(Ordering::Relaxed) {
            return Err(failed("stopped: another table failed"));
        }
        runtime.block_on(sink.send(bytes)).map_err(server)
    };
    match &table.rows.from {
        RowsIn::File { entry, .. } => {
            each_chunk(entry, source, &mut |bytes| send(bytes.into()))?;
        }
        RowsIn::Block { archive, block } => {
            // Rows come in frames of one row each: those of a chunk go as one message.
            let mut frames = Frames::new(&archive.layout, block);
            let corrupt = |e: String| Failure::new(Code::CorruptObject, e);
            archive.range(block.start, block.end, source, &mut |piece| {
                let mut rows = bytes::BytesMut::with_capacity(piece.len());
                frames.push(&piece, &mut rows).map_err(corrupt)?;
                send(rows.freeze())
            })?;
            frames.finish().map_err(corrupt)?;
        }
    }
    runtime.block_on(sink.as_mut().finish()).map_err(server)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_ids_are_read_from_list_lines_and_comments_have_none() {
        assert_eq!(
            dump_id("3545; 0 16390 TABLE DATA public accounts postgres"),
            Some(3545)
        );
        assert_eq!(dump_id(";     Format: DIRECTORY"), None);
        assert_eq!(dump_id("; 3545 is not an entry"), None);
        assert_eq!(data_file_id("3545.dat"), Some(3545));
        assert_eq!(data_file_id("toc.dat"), None);
        assert_eq!(data_file_id("blob_16401.dat"), None);
    }

    #[test]
    fn the_data_script_splits_into_copies_with_their_settings_and_no_meta_commands() {
        let script = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n\
            SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\
            SELECT pg_catalog.set_config('search_path', '', false);\n\n\
            --\n-- Data for Name: accounts; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n\
            COPY public.accounts (id, name) FROM stdin;\n\\.\n\n\n\
            --\n-- Data for Name: a \"b\"; Type: TABLE DATA\n--\n\n\
            COPY public.\"odd\n name\" (id) FROM stdin;\n\\.\n\n\\unrestrict abc\n";
        let found = data_script(script);
        assert_eq!(
            found.settings,
            "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\
             SELECT pg_catalog.set_config('search_path', '', false);\n"
        );
        assert_eq!(
            found.copies,
            vec![
                Copy {
                    prelude: String::new(),
                    statement: "COPY public.accounts (id, name) FROM stdin;".into(),
                },
                Copy {
                    prelude: String::new(),
                    statement: "COPY public.\"odd\n name\" (id) FROM stdin;".into(),
                },
            ]
        );
    }
}
