//! One home per source kind. Everything `backup`, `apply`, `restore`, `verify` and
//! `plan` do differently for postgres, redis, files and config is a method of
//! [`Seam`], implemented once per kind in this folder ([`postgres`], [`redis`],
//! [`files`], [`config`]), and reached through [`Kind`]: the one place that matches
//! on [`SourceKind`]. Each method returns a typed report (`Serialize`); the English is
//! written by `render/`.
//!
//! [`Kind`] is an enum dispatcher rather than a `dyn Seam`: the methods are `async`
//! and borrow their contexts, which a trait object could only carry as boxed
//! futures, and a `match` over the four kinds lets the compiler check that every
//! kind answers every method. A new operation (a restore drill) is one method per
//! kind and one line here, not another `match` spread over the commands.

mod config;
mod files;
mod postgres;
pub mod preview;
mod redis;
pub mod scratch;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Code, Failure};
use crate::pipeline::ChunkSink;
use crate::pipeline::fetch::RepoFetcher;
use crate::plan::SourceProbe;
use crate::policy::secret::redact_url_password;
use crate::policy::{Policy, ResolvedSource, SourceKind};
use crate::repo::format::Tree;
use crate::repo::tree::PackedTree;
use crate::sources::files::ScanReport;
use crate::sources::redis::Taken;

pub use preview::{
    DatabaseLocalePlan, DatabaseProperties, DatabaseState, DumpFile, Note, Preview, SpoolFit,
    SpoolLayout, TargetLocale,
};

/// What a kind does, one method per operation. Implemented by each kind of this
/// folder; called through [`Kind`].
pub trait Seam {
    /// Where a restore puts a snapshot that no `--target` sends elsewhere: its folder,
    /// or its server's URL (its password redacted). Pure.
    fn home(&self, policy: &Policy) -> String;

    /// Where `restore --as-file DIR` writes a snapshot of this kind, when it does.
    fn as_file(&self, _dir: &str) -> Option<String> {
        None
    }

    /// Readies a backup (a database is probed before anything is read) and returns
    /// the work that reads the data, for a blocking thread.
    fn prepare_backup(
        &self,
        policy: &Arc<Policy>,
    ) -> impl Future<Output = Result<BackupJob, Failure>> + Send;

    /// Changes the server's settings the policy declares.
    fn configure(
        &self,
        _policy: &Arc<Policy>,
        _settings: Vec<(String, String)>,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let name = self.name().to_string();
        async move {
            Err(Failure::new(
                Code::NoExecutor,
                format!("{name} has no settings backplan can change"),
            ))
        }
    }

    /// What `plan` should know from the source's server; `None` for a kind without
    /// one.
    fn probe(&self, _policy: &Policy) -> impl Future<Output = Option<Probed>> {
        async { None }
    }

    /// The source's name in the policy.
    fn name(&self) -> &str;

    /// What restoring `tree` into `target` would do. `data` opens the snapshot's
    /// data, where a secret key is at hand; the database properties a preview reads
    /// go into `read` for the restore that follows.
    fn preview(
        &self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: &PackedTree,
        data: Option<&dyn OpenSnapshot>,
        read: &mut PropertiesRead,
    ) -> impl Future<Output = Result<Preview, Failure>>;

    /// Checks, before any step writes anything, that the target will take the
    /// restore: a refusal leaves every target untouched.
    fn check_target(&self, _cx: &RestoreContext<'_>) -> Result<(), Failure> {
        Ok(())
    }

    /// Restores `tree` into `target`, its chunks from `fetcher`.
    fn restore(
        &self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: PackedTree,
        fetcher: RepoFetcher,
        read: &PropertiesRead,
    ) -> impl Future<Output = Result<Restored, Failure>>;

    /// Reads a snapshot as its server would: whether it would restore, and with
    /// `restore`, restores it into a scratch target and compares. `None` for a kind
    /// whose snapshots `verify` checks whole already (files: every chunk's hash).
    fn check(
        &self,
        policy: &Policy,
        snapshot: &dyn OpenSnapshot,
        restore: bool,
    ) -> impl Future<Output = Result<Option<Checked>, Failure>>;

    /// A scratch target for a restore drill of this source, ready for the restore:
    /// never where the source lives. Blocking (a server may be started).
    fn scratch(&self, policy: &Policy) -> Result<scratch::Scratch, Failure>;

    /// The source's size as it is now, which the drill scales its measured restore
    /// to: read from its server or folder, never its data.
    fn current_size(&self, policy: &Policy) -> impl Future<Output = Result<CurrentSize, Failure>>;
}

/// A source's size as it is now ([`Seam::current_size`]), each kind in the measure
/// that it can read without reading its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "measure", rename_all = "snake_case")]
pub enum CurrentSize {
    /// The databases the source covers, as the server sizes them
    /// (`pg_database_size`).
    Databases { bytes: u64 },
    /// The regular files a backup would read now, sized from their metadata (the
    /// source's excludes honoured), as a snapshot's size counts them.
    Files { files: u64, bytes: u64 },
    /// The keys the server holds now, all databases (`INFO keyspace`).
    Keys { keys: u64 },
}

/// Opens a snapshot's data: its tree and a fetcher for its chunks. Only the kinds
/// that read data call it.
pub trait OpenSnapshot: Sync {
    fn open(&self) -> BoxFuture<'_, Result<(Tree, RepoFetcher), Failure>>;
}

/// The work of a backup, run on a blocking thread: reads the source (beside the
/// tree of its last snapshot, when there is one), stores its bytes in the sink,
/// returns what it stored and how it went.
pub type BackupJob =
    Box<dyn FnOnce(Option<&PackedTree>, &mut dyn ChunkSink) -> Result<Backed, Failure> + Send>;

/// A finished backup: the tree to record and its figures.
#[derive(Debug, Clone)]
pub struct Backed {
    pub tree: PackedTree,
    /// The sum of the tree's entry sizes.
    pub size: u64,
    pub bytes_read: u64,
    pub report: BackupReport,
}

/// What a backup stored, by kind, and what it warned of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    #[serde(flatten)]
    pub stored: Stored,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What a backup stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "stored", rename_all = "snake_case")]
pub enum Stored {
    /// Files (a folder, or configuration files): `unchanged` were not read again.
    Files { files: u64, unchanged: u64 },
    /// Database dumps; `jobs` when pg_dump ran in parallel into directory format.
    Databases {
        databases: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        jobs: Option<u32>,
    },
    /// A Redis snapshot.
    Keys {
        keys: u64,
        databases: usize,
        mode: Taken,
    },
}

impl Backed {
    /// A scan's tree and figures, with what it stored.
    fn new(scan: ScanReport, stored: Stored) -> Backed {
        Backed {
            tree: scan.tree,
            size: scan.size,
            bytes_read: scan.bytes_read,
            report: BackupReport {
                stored,
                warnings: scan.warnings,
            },
        }
    }
}

/// What `probe` found for `plan`: the source's figures and warnings, and for a
/// database source the server's databases and those the source covers.
#[derive(Debug, Clone, Default)]
pub struct Probed {
    pub probe: SourceProbe,
    pub server: Option<ServerDatabases>,
}

/// A database server's databases and those one source covers.
#[derive(Debug, Clone, Default)]
pub struct ServerDatabases {
    pub server: String,
    pub all: Vec<String>,
    pub covered: Vec<String>,
}

/// How a restore writes, from the command line.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Overwrite files that differ; write over an existing `dump.rdb`.
    pub force: bool,
    /// Redis: empty a target that holds keys first.
    pub flush: bool,
    /// Databases: replace a non-empty database's contents.
    pub clean: bool,
    /// Databases: only these tables, these schemas.
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    /// Databases: parallel pg_restore jobs from a spool.
    pub jobs: Option<u32>,
    /// Databases: where a spool goes.
    pub spool: Option<PathBuf>,
    /// Files: owners by number only.
    pub numeric_owner: bool,
    /// Databases: each restored as `<prefix><its name>` on the source's server (or
    /// on `database_server`), its roles left as the server has them (a drill's
    /// scratch databases).
    pub database_prefix: Option<String>,
    /// Databases: the server the prefixed databases go to instead of the source's
    /// own (a drill target the policy declares, `drill.targets`).
    pub database_server: Option<DatabaseServer>,
    /// Redis: a `dump.rdb` in this folder instead of a running server.
    pub as_file: Option<PathBuf>,
}

/// A PostgreSQL server a restore writes its scratch databases to; shown without its
/// password.
#[derive(Clone)]
pub struct DatabaseServer(pub crate::sources::postgres::Connection);

impl std::fmt::Debug for DatabaseServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe())
    }
}

/// What every kind's preview and restore read besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct RestoreContext<'a> {
    pub policy: &'a Policy,
    /// `--target NAME=PLACE`, by source.
    pub targets: &'a BTreeMap<String, String>,
    /// Only entries matching these patterns (files and config).
    pub include: &'a [String],
    pub options: &'a RestoreOptions,
}

/// The database properties a preview read, by source and archive name: the restore
/// that follows applies them without reading the archive's table of contents again.
pub type PropertiesRead = BTreeMap<(String, String), crate::sources::postgres::Properties>;

/// What one step restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "restored", rename_all = "snake_case")]
pub enum Restored {
    /// Databases restored, by name.
    Databases { databases: Vec<String> },
    /// A `dump.rdb` written for a cold start.
    DumpFile { path: PathBuf, bytes: u64 },
    /// Keys restored into a running server.
    Keys {
        keys: u64,
        /// Too large for one `RESTORE`: restored as ordinary commands.
        split: u64,
        /// Already expired: skipped.
        expired: u64,
        functions: u64,
    },
    /// Entries of a files or config snapshot, and the bytes fetched for them.
    Files {
        entries: usize,
        fetched: u64,
        /// What could not be carried over (an owner, an extended attribute).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
}

/// What reading a snapshot as its server would found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "checked", rename_all = "snake_case")]
pub enum Checked {
    /// Every archive listed by `pg_restore --list`; with `restored`, also restored
    /// into a scratch database and its row counts compared.
    Archives {
        restored: bool,
        differences: Vec<TableDifference>,
    },
    /// The RDB parsed whole, its checksum right; its keys per database compared
    /// with those recorded at backup.
    Rdb {
        keys: u64,
        differences: Vec<KeyDifference>,
    },
}

impl Checked {
    /// How many differences the check found.
    pub fn differences(&self) -> usize {
        match self {
            Checked::Archives { differences, .. } => differences.len(),
            Checked::Rdb { differences, .. } => differences.len(),
        }
    }
}

/// A table whose restored rows differ from those counted at backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDifference {
    pub database: String,
    #[serde(flatten)]
    pub rows: crate::sources::postgres::RowCountDifference,
}

/// A Redis database whose keys in the RDB differ from those recorded at backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDifference {
    pub db: u64,
    pub found: u64,
    pub recorded: u64,
}

/// The source kinds, each behind its [`Seam`].
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    Postgres(postgres::Postgres<'a>),
    Redis(redis::Redis<'a>),
    Files(files::Files<'a>),
    Config(config::Config<'a>),
}

/// `each!(kind, k => expr)`: `expr` with `k` bound to the kind's [`Seam`].
macro_rules! each {
    ($kind:expr, $k:ident => $e:expr) => {
        match $kind {
            Kind::Postgres($k) => $e,
            Kind::Redis($k) => $e,
            Kind::Files($k) => $e,
            Kind::Config($k) => $e,
        }
    };
}

impl<'a> Kind<'a> {
    /// The seam of `source`'s kind: the one `match` on [`SourceKind`] for what
    /// sources do.
    pub fn of(source: &'a ResolvedSource) -> Kind<'a> {
        match &source.kind {
            SourceKind::Postgres(pg) => Kind::Postgres(postgres::Postgres { source, pg }),
            SourceKind::Redis(r) => Kind::Redis(redis::Redis { source, r }),
            SourceKind::Files(f) => Kind::Files(files::Files { source, f }),
            SourceKind::Config(c) => Kind::Config(config::Config { source, c }),
        }
    }

    /// Where a restore puts this source's snapshot: `--as-file` for a kind written as
    /// a file, else `--target` (a URL's password redacted), else where it came from.
    pub fn restore_target(
        self,
        policy: &Policy,
        given: Option<&str>,
        as_file: Option<&str>,
    ) -> String {
        if let Some(file) = as_file.and_then(|dir| each!(self, k => k.as_file(dir))) {
            return file;
        }
        match given {
            Some(t) => redact_url_password(t),
            None => each!(self, k => k.home(policy)),
        }
    }

    pub async fn prepare_backup(self, policy: &Arc<Policy>) -> Result<BackupJob, Failure> {
        each!(self, k => k.prepare_backup(policy).await)
    }

    pub async fn configure(
        self,
        policy: &Arc<Policy>,
        settings: Vec<(String, String)>,
    ) -> Result<(), Failure> {
        each!(self, k => k.configure(policy, settings).await)
    }

    pub async fn probe(self, policy: &Policy) -> Option<Probed> {
        each!(self, k => k.probe(policy).await)
    }

    pub async fn preview(
        self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: &PackedTree,
        data: Option<&dyn OpenSnapshot>,
        read: &mut PropertiesRead,
    ) -> Result<Preview, Failure> {
        each!(self, k => k.preview(cx, target, tree, data, read).await)
    }

    pub fn check_target(self, cx: &RestoreContext<'_>) -> Result<(), Failure> {
        each!(self, k => k.check_target(cx))
    }

    pub async fn restore(
        self,
        cx: &RestoreContext<'_>,
        target: &str,
        tree: PackedTree,
        fetcher: RepoFetcher,
        read: &PropertiesRead,
    ) -> Result<Restored, Failure> {
        each!(self, k => k.restore(cx, target, tree, fetcher, read).await)
    }

    pub async fn check(
        self,
        policy: &Policy,
        snapshot: &dyn OpenSnapshot,
        restore: bool,
    ) -> Result<Option<Checked>, Failure> {
        each!(self, k => k.check(policy, snapshot, restore).await)
    }

    pub fn scratch(self, policy: &Policy) -> Result<scratch::Scratch, Failure> {
        each!(self, k => k.scratch(policy))
    }

    pub async fn current_size(self, policy: &Policy) -> Result<CurrentSize, Failure> {
        each!(self, k => k.current_size(policy).await)
    }
}

/// A blocking task's end as a failure when the task itself stopped (panicked).
fn stopped(what: &str) -> impl FnOnce(tokio::task::JoinError) -> Failure + '_ {
    move |e| Failure::new(Code::Io, format!("{what} stopped: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_restore_goes_home_unless_as_file_or_a_target_sends_it_elsewhere() {
        let loaded = crate::policy::load::load_file(Path::new("policies/medianest.yaml"))
            .expect("the example policy");
        let policy = &loaded.policy;
        let target = |name: &str, given, as_file| {
            Kind::of(&policy.sources[name]).restore_target(policy, given, as_file)
        };
        assert_eq!(target("media", None, None), "/srv/medianest/uploads");
        // Config entries are absolute paths.
        assert_eq!(target("config", None, None), "/");
        assert_eq!(
            target("db", None, None),
            "postgres://backup@127.0.0.1:5432/medianest"
        );
        assert_eq!(
            target("db", Some("postgres://app:hunter2@other:5432/app"), None),
            "postgres://app:***@other:5432/app"
        );
        // --as-file sends a redis snapshot to a file whatever --target says, and
        // nothing else.
        assert_eq!(
            target("cache", Some("redis://other:6379"), Some("/tmp/out/")),
            "/tmp/out/dump.rdb"
        );
        assert_eq!(
            target("media", Some("/restore/media"), Some("/tmp/out")),
            "/restore/media"
        );
    }

    #[test]
    fn a_backup_report_is_tagged_by_what_it_stored() {
        let report = BackupReport {
            stored: Stored::Keys {
                keys: 1200,
                databases: 2,
                mode: Taken::Scan,
            },
            warnings: vec!["SYNC refused".into()],
        };
        assert_eq!(
            serde_json::to_value(&report).expect("JSON"),
            serde_json::json!({"stored": "keys", "keys": 1200, "databases": 2, "mode": "scan",
                "warnings": ["SYNC refused"]})
        );
    }
}
