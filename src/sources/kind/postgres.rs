//! The postgres kind: pg_dump on backup, pg_restore on restore, `pg_restore --list`
//! and a scratch database on check, the server's databases and sizes on probe.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    Backed, BackupJob, Checked, CurrentSize, DatabaseLocalePlan, DatabaseProperties, DatabaseState,
    Note, OpenSnapshot, Preview, Probed, PropertiesRead, RestoreContext, Restored, Seam,
    ServerDatabases, SpoolFit, SpoolLayout, Stored, TableDifference, TargetLocale, stopped,
};
use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::pipeline::fetch::RepoFetcher;
use crate::plan::{SourceProbe, Warning};
use crate::policy::model::PostgresSource;
use crate::policy::{Policy, ResolvedSource};
use crate::repo::format::Tree;
use crate::repo::tree::PackedTree;
use crate::sources::postgres as pg;

#[derive(Debug, Clone, Copy)]
pub struct Postgres<'a> {
    pub(super) source: &'a ResolvedSource,
    pub(super) pg: &'a PostgresSource,
}

impl Postgres<'_> {
    /// The databases the source covers: those it names, else its URL's.
    fn covered(&self, conn: &pg::Connection) -> Vec<String> {
        if self.pg.databases.is_empty() {
            vec![conn.database().unwrap_or("postgres").to_string()]
        } else {
            self.pg.databases.clone()
        }
    }

    /// The pg_dump and pg_restore the source names, or the newest installed.
    fn tools(&self, policy: &Policy) -> Result<pg::Tools, Failure> {
        let bin_dir = self.pg.bin_dir.as_ref().map(|d| policy.resolve_path(d));
        pg::find_tools(bin_dir.as_deref(), 0)
    }

    /// The database restores of a snapshot: each database's archive (`DB.dump` or
    /// `DB.dir/…`) with where it goes (the same database on the source's server, or
    /// `--target NAME=URL`).
    fn targets(
        &self,
        cx: &RestoreContext<'_>,
        tree: &Tree,
    ) -> Result<Vec<(pg::Archive, pg::RestoreTarget)>, Failure> {
        let dumps = pg::archives(tree);
        let options = cx.options;
        // pg_restore matches --table by name alone: `media.files` would restore
        // nothing, and succeed.
        if let Some((schema, table)) = options.tables.iter().find_map(|t| t.split_once('.')) {
            return Err(Failure::new(
                Code::InvalidValue,
                format!(
                    "--table {schema}.{table}: pg_restore takes a table name without its schema"
                ),
            )
            .with_help(format!("write --schema {schema} --table {table}")));
        }
        let source = pg::Connection::new(self.pg, cx.policy)?;
        let given = cx.targets.get(&self.source.name);
        if given.is_some() && dumps.len() > 1 {
            return Err(Failure::new(
                Code::InvalidValue,
                "this snapshot holds several databases; --target restores one: use --snapshot with a one-database source",
            ));
        }
        let mut out = Vec::new();
        for archive in dumps {
            let db = archive.database.clone();
            let (conn, database) = match given {
                Some(url) => {
                    let conn = pg::Connection::from_url(url, None)?;
                    let database = conn.database().map(str::to_string).unwrap_or(db.clone());
                    (conn, database)
                }
                None => match &options.database_prefix {
                    Some(prefix) => (
                        options
                            .database_server
                            .as_ref()
                            .map_or_else(|| source.clone(), |s| s.0.clone()),
                        format!("{prefix}{db}"),
                    ),
                    None => (source.clone(), db),
                },
            };
            out.push((
                archive,
                pg::RestoreTarget {
                    conn,
                    database,
                    clean: options.clean,
                    tables: options.tables.clone(),
                    schemas: options.schemas.clone(),
                },
            ));
        }
        Ok(out)
    }
}

/// How pg_restore reads `archive`: streamed, or from a spool (`--jobs`, `--spool`,
/// or a directory-format archive).
fn feed(cx: &RestoreContext<'_>, archive: &pg::Archive) -> pg::Feed {
    pg::Feed::choose(archive, cx.options.jobs, cx.options.spool.as_deref())
}

/// What the restore plan says of a spool: the jobs, where, what it needs and what is
/// there. For a streamed restore, whether `--jobs` would restore it by sections;
/// else `None`.
fn spool_note(archive: &pg::Archive, target: &pg::RestoreTarget, feed: &pg::Feed) -> Option<Note> {
    let by_sections = pg::by_sections(archive, target);
    let pg::Feed::Spool { dir, jobs } = feed else {
        return by_sections.then(|| Note::BySections {
            archive: archive.name(),
        });
    };
    let layout = match (by_sections, archive.needs_spool()) {
        (true, true) => SpoolLayout::DirectoryBySections,
        (true, false) => SpoolLayout::BySections,
        (false, true) => SpoolLayout::Directory,
        (false, false) => SpoolLayout::Archive,
    };
    let files = pg::spool_files(archive, target);
    // Of a custom-format archive by sections the plan knows only the archive's size:
    // its layout, which says what the skeleton takes, is read by the restore.
    let (needed, fit) = match pg::space_for(archive, files, dir) {
        Ok(space) => (
            space.needed,
            match (space.fits(), layout == SpoolLayout::BySections) {
                (true, _) => SpoolFit::Fits {
                    available: space.available,
                },
                (false, true) => SpoolFit::MayNotFit {
                    available: space.available,
                },
                (false, false) => SpoolFit::DoesNotFit {
                    available: space.available,
                },
            },
        ),
        Err(f) => (
            archive.spool_bytes(files),
            SpoolFit::Unknown { why: f.message },
        ),
    };
    Some(Note::Spool {
        archive: archive.name(),
        jobs: *jobs,
        dir: dir.clone(),
        needed,
        layout,
        fit,
    })
}

impl Seam for Postgres<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    fn home(&self, _policy: &Policy) -> String {
        self.pg.url.to_string()
    }

    async fn prepare_backup(&self, policy: &Arc<Policy>) -> Result<BackupJob, Failure> {
        // A database is probed (version, databases) before anything is read.
        let prepared = pg::prepare(self.pg, policy).await?;
        Ok(Box::new(move |parent, sink| {
            let scan = pg::backup(&prepared, parent, sink)?;
            let stored = Stored::Databases {
                databases: scan.files,
                // More than one worker dumps in directory format.
                jobs: (prepared.jobs > 1).then_some(prepared.jobs),
            };
            Ok(Backed::new(scan, stored))
        }))
    }

    async fn probe(&self, policy: &Policy) -> Option<Probed> {
        let name = &self.source.name;
        let mut sp = SourceProbe::default();
        let warn = |sp: &mut SourceProbe, code: Code, message: String| {
            sp.warnings.push(Warning::about(code, Some(name), message));
        };
        let mut server = None;
        match pg::Connection::new(self.pg, policy) {
            Err(f) => warn(&mut sp, f.code, format!("{name}: {}", f.message)),
            Ok(conn) => match pg::probe(&conn).await {
                Err(f) => warn(
                    &mut sp,
                    f.code,
                    format!(
                        "{name}: {}; its backup will fail unless the server answers",
                        f.message
                    ),
                ),
                Ok(probe) => {
                    let wanted = self.covered(&conn);
                    let mut total = 0;
                    for db in &wanted {
                        match probe.databases.get(db) {
                            Some(size) => total += size,
                            None => warn(
                                &mut sp,
                                Code::DatabaseError,
                                format!(
                                    "{name}: database {db} does not exist on {}",
                                    conn.describe()
                                ),
                            ),
                        }
                    }
                    sp.estimated_bytes = Some(total);
                    let bin_dir = self.pg.bin_dir.as_ref().map(|d| policy.resolve_path(d));
                    if let Err(f) = pg::find_tools(bin_dir.as_deref(), probe.major()) {
                        warn(&mut sp, f.code, format!("{name}: {}", f.message));
                    }
                    if probe.in_recovery {
                        warn(
                            &mut sp,
                            Code::DatabaseError,
                            format!(
                                "{name}: {} is a standby; a long dump can be cancelled by max_standby_streaming_delay (raise it, or enable hot_standby_feedback)",
                                conn.describe()
                            ),
                        );
                    }
                    server = Some(ServerDatabases {
                        server: conn.describe(),
                        all: probe.databases.keys().cloned().collect(),
                        covered: wanted,
                    });
                }
            },
        }
        Some(Probed { probe: sp, server })
    }

    async fn preview(
        &self,
        cx: &RestoreContext<'_>,
        _target: &str,
        tree: &PackedTree,
        data: Option<&dyn OpenSnapshot>,
        read: &mut PropertiesRead,
    ) -> Result<Preview, Failure> {
        let tree = &tree.unpack()?;
        let mut notes = Vec::new();
        let mut database_properties = Vec::new();
        let mut database_locales = Vec::new();
        // The archives' own entries are read for their encoding and locale: with a
        // secret key and the tools.
        let mut reader = match data {
            Some(data) => match data.open().await {
                Ok((_, fetcher)) => self
                    .tools(cx.policy)
                    .map(|tools| (tools, fetcher))
                    .map_err(|f| f.message),
                Err(f) => Err(f.message),
            },
            None => Err("the snapshot is read with --secret-key".to_string()),
        };
        for (archive, target) in self.targets(cx, tree)? {
            database_properties.push(DatabaseProperties {
                archive: archive.name(),
                database: target.database.clone(),
                applied: target.whole(),
            });
            let state = pg::target_state(&target.conn, &target.database).await;
            notes.push(Note::Database {
                archive: archive.name(),
                database: target.database.clone(),
                state: match &state {
                    Ok((false, _)) => DatabaseState::Created,
                    Ok((true, 0)) => DatabaseState::Empty,
                    Ok((true, n)) => DatabaseState::Tables {
                        tables: *n,
                        clean: target.clean,
                    },
                    Err(f) => DatabaseState::Unknown {
                        why: f.message.clone(),
                    },
                },
            });
            notes.extend(spool_note(&archive, &target, &feed(cx, &archive)));
            let properties = match &mut reader {
                Ok((tools, fetcher)) => {
                    // Not into --spool, which a plan leaves alone: a `DB.dir/`'s
                    // toc.dat goes into the temporary folder for a moment.
                    let feed = pg::Feed::Stream;
                    tokio::task::block_in_place(|| {
                        pg::database_properties(tools, &archive, &feed, fetcher)
                    })
                    .map(|p| {
                        let creation = p.creation().cloned();
                        read.insert((self.source.name.clone(), archive.name()), p);
                        creation
                    })
                    .map_err(|f| f.message)
                }
                Err(why) => Err(why.clone()),
            };
            let snapshot = properties
                .as_ref()
                .ok()
                .and_then(|c| c.as_ref().map(|c| c.locale().clone()));
            let locale = match (properties, state) {
                (Err(why), _) => TargetLocale::Unknown { why },
                (_, Err(f)) => TargetLocale::Unknown { why: f.message },
                (Ok(creation), Ok((false, _))) => TargetLocale::Created {
                    tablespace: creation
                        .as_ref()
                        .and_then(|c| c.tablespace().map(str::to_string)),
                },
                (Ok(None), Ok((true, _))) => TargetLocale::Unknown {
                    why: "the snapshot has no CREATE DATABASE".to_string(),
                },
                (Ok(Some(creation)), Ok((true, _))) => {
                    match pg::database_locale(&target.conn, &target.database).await {
                        Ok(own) if creation.locale().matches(&own) => TargetLocale::Same,
                        Ok(own) => TargetLocale::Differs { own },
                        Err(f) => TargetLocale::Unknown { why: f.message },
                    }
                }
            };
            database_locales.push(DatabaseLocalePlan {
                archive: archive.name(),
                database: target.database.clone(),
                snapshot,
                target: locale,
            });
        }
        Ok(Preview {
            entries: tree.entries.len(),
            bytes: tree.entries.iter().map(|e| e.size).sum(),
            notes,
            database_properties,
            database_locales,
            ..Preview::default()
        })
    }

    async fn restore(
        &self,
        cx: &RestoreContext<'_>,
        _target: &str,
        tree: PackedTree,
        mut fetcher: RepoFetcher,
        read: &PropertiesRead,
    ) -> Result<Restored, Failure> {
        let tree = tree.unpack()?;
        let targets = self.targets(cx, &tree)?;
        let tools = self.tools(cx.policy)?;
        // Every target and every spool first: a refusal must leave all of them
        // untouched.
        for (archive, target) in &targets {
            pg::check_target(target).await?;
            if let pg::Feed::Spool { dir, .. } = feed(cx, archive) {
                let files = pg::spool_files(archive, target);
                tokio::task::block_in_place(|| {
                    pg::check_space(archive, files, &dir, &mut fetcher)
                })?;
            }
        }
        let mut restored = Vec::new();
        for (archive, target) in &targets {
            let feed = feed(cx, archive);
            let (archive, target, tools) = (archive.clone(), target.clone(), tools.clone());
            // Scratch databases beside the source's own leave its server's roles be.
            let globals = match cx.options.database_prefix {
                Some(_) => None,
                None => tree.entries.iter().find(|e| e.path == pg::GLOBALS).cloned(),
            };
            let read_before = read
                .get(&(self.source.name.clone(), archive.name()))
                .cloned();
            let moved = tokio::task::spawn_blocking(move || {
                let mut fetcher = fetcher;
                let runtime = tokio::runtime::Handle::current();
                let exists = runtime.block_on(pg::check_target(&target))?;
                // The archive's own entries, before anything changes: how its
                // database was made, for one the restore creates, and (restored
                // whole) the database's properties.
                let read = match read_before {
                    _ if !target.whole() && exists => None,
                    Some(read) => Some(read),
                    None => Some(pg::database_properties(
                        &tools,
                        &archive,
                        &feed,
                        &mut fetcher,
                    )?),
                };
                let said = match &globals {
                    Some(g) => Some(pg::restore_globals(&target, &tools, g, &mut fetcher)?),
                    None => None,
                };
                // After the globals, which may make the archive's tablespace.
                if !exists {
                    let creation = read.as_ref().and_then(pg::Properties::creation);
                    runtime.block_on(pg::create_database(&target, creation))?;
                }
                // A whole database comes with its own properties (owner, settings,
                // privileges, comment), applied last; their roles are checked before
                // its data.
                let properties = read.filter(|_| target.whole());
                if let Some(p) = &properties {
                    pg::check_roles(&target, p, said.as_deref())?;
                }
                pg::restore_database(&target, &tools, &archive, &feed, &mut fetcher)?;
                pg::analyze(&target, &tools, feed.jobs())?;
                if let Some(p) = &properties {
                    pg::apply_properties(&target, p)?;
                }
                Ok::<_, Failure>((fetcher, target))
            })
            .await
            .map_err(stopped("the restore"))??;
            fetcher = moved.0;
            restored.push(moved.1.database.clone());
        }
        Ok(Restored::Databases {
            databases: restored,
        })
    }

    /// Each archive listed by `pg_restore --list`; with `restore`, restored into a
    /// scratch database on the source's server and compared by row counts.
    async fn check(
        &self,
        policy: &Policy,
        snapshot: &dyn OpenSnapshot,
        restore: bool,
    ) -> Result<Option<Checked>, Failure> {
        let (tree, mut fetcher) = snapshot.open().await?;
        let conn = pg::Connection::new(self.pg, policy)?;
        let tools = self.tools(policy)?;
        // A directory-format archive is read from a spool: under the source's
        // `spool_dir`, which has room for its dumps, else the temporary folder.
        let spool: PathBuf = self
            .pg
            .spool_dir
            .as_ref()
            .map_or_else(std::env::temp_dir, |d| policy.resolve_path(d));
        let mut differences = Vec::new();
        for archive in pg::archives(&tree) {
            tokio::task::block_in_place(|| {
                pg::list_archive(&tools, &archive, &spool, &mut fetcher)
            })?;
            if !restore {
                continue;
            }
            let db = archive.database.as_str();
            let counts_entry = tree
                .entries
                .iter()
                .find(|e| e.path == format!("{db}{}", pg::COUNTS_SUFFIX));
            let recorded: BTreeMap<String, i64> = match counts_entry {
                Some(e) => {
                    let mut bytes = Vec::new();
                    for c in &e.chunks {
                        bytes.extend(tokio::task::block_in_place(|| fetcher.fetch(c))?);
                    }
                    serde_json::from_slice(&bytes).unwrap_or_default()
                }
                None => Default::default(),
            };
            // A custom-format archive streams in; a directory-format one is restored
            // from a spool, with the source's own parallelism.
            let feed = match archive.needs_spool() {
                true => pg::Feed::choose(&archive, self.pg.jobs, Some(&spool)),
                false => pg::Feed::Stream,
            };
            for d in
                pg::restore_test(&conn, &tools, &archive, &feed, &recorded, &mut fetcher).await?
            {
                differences.push(TableDifference {
                    database: db.to_string(),
                    rows: d,
                });
            }
        }
        Ok(Some(Checked::Archives {
            restored: restore,
            differences,
        }))
    }

    /// Scratch databases named after the source, on the server `drill.targets`
    /// declares for it, else on the source's own.
    fn scratch(&self, policy: &Policy) -> Result<super::scratch::Scratch, Failure> {
        let conn = match super::scratch::declared(policy, &self.source.name)? {
            Some(url) => pg::Connection::from_url(&url, None)?,
            None => pg::Connection::new(self.pg, policy)?,
        };
        Ok(super::scratch::Scratch::databases(conn, &self.source.name))
    }

    /// The covered databases as the server sizes them (`pg_database_size`); one
    /// the server does not have counts for nothing, as in `plan`.
    async fn current_size(&self, policy: &Policy) -> Result<CurrentSize, Failure> {
        let conn = pg::Connection::new(self.pg, policy)?;
        let probe = pg::probe(&conn).await?;
        let bytes = self
            .covered(&conn)
            .iter()
            .filter_map(|db| probe.databases.get(db))
            .sum();
        Ok(CurrentSize::Databases { bytes })
    }
}
