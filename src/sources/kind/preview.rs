//! What a restore would do to a step's target, as each kind's preview finds it:
//! figures and typed notes, which `render/restore.rs` puts into words.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sources::postgres::DatabaseLocale;
use crate::sources::redis::Taken;

/// What a step would do to its target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub entries: usize,
    pub bytes: u64,
    pub create: usize,
    pub unchanged: usize,
    /// Existing files that differ and would be overwritten (names only).
    pub overwrite: Vec<String>,
    /// What else the restore would do or needs (a database created, `--clean`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// Of a database source: whether each database's own properties come along.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_properties: Vec<DatabaseProperties>,
    /// Of a database source: the encoding and locale each database gets or keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_locales: Vec<DatabaseLocalePlan>,
    /// Set when the preview could not be made (no key at hand, unreadable tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// One thing a restore would do or needs, beyond the figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// Files: owners are set only by a restore run as root.
    OwnersLeftToUser,
    /// Redis: what the snapshot holds.
    RedisSnapshot {
        keys: u64,
        databases: usize,
        redis_version: String,
        mode: Taken,
    },
    /// Redis `--as-file`: the `dump.rdb` written.
    DumpFile { path: PathBuf, state: DumpFile },
    /// Redis: the keys the target server holds now; `flush` when `--flush` empties it.
    TargetKeys { keys: u64, flush: bool },
    /// A database restored into.
    Database {
        archive: String,
        database: String,
        #[serde(flatten)]
        state: DatabaseState,
    },
    /// A database archive streamed into one pg_restore that `--jobs N` would restore
    /// by sections.
    BySections { archive: String },
    /// A database archive restored from a spool.
    Spool {
        archive: String,
        jobs: u32,
        dir: PathBuf,
        /// Bytes the spool needs (of a custom-format archive by sections: at most).
        needed: u64,
        layout: SpoolLayout,
        #[serde(flatten)]
        fit: SpoolFit,
    },
    /// Something the preview could not find out, and why.
    Unknown { why: String },
}

/// Of a `dump.rdb` a restore `--as-file` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFile {
    /// Written new.
    New,
    /// Written over (`--force`).
    Overwritten,
    /// There already: the restore needs `--force`.
    NeedsForce,
}

/// The state of a database a restore goes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DatabaseState {
    /// Made by the restore.
    Created,
    /// There, without tables.
    Empty,
    /// There with `tables` tables: `--clean` replaces them (`clean`), else needed.
    Tables { tables: i64, clean: bool },
    /// Not known: why (a server not reached).
    Unknown { why: String },
}

/// What a spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolLayout {
    /// The whole custom-format archive.
    Archive,
    /// A directory-format archive, restored whole.
    Directory,
    /// A custom-format archive restored by sections: the spool holds its table of
    /// contents and large objects, its tables' data copied from the repository.
    BySections,
    /// A directory-format archive restored by sections.
    DirectoryBySections,
}

/// Whether a spool fits where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fit", rename_all = "snake_case")]
pub enum SpoolFit {
    /// Room enough.
    Fits { available: u64 },
    /// Perhaps not: the restore measures before it starts (`needed` is at most).
    MayNotFit { available: u64 },
    /// Not enough room: the restore would stop.
    DoesNotFit { available: u64 },
    /// The room could not be measured.
    Unknown { why: String },
}

/// What a database restore does with the database's own properties: its owner, its
/// settings (`ALTER DATABASE … SET`), the settings of roles in it (`ALTER ROLE … IN
/// DATABASE … SET`), its privileges (`GRANT`/`REVOKE … ON DATABASE`) and its comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    /// The archive (`app.dump`, `app.dir/`).
    pub archive: String,
    /// The database restored into.
    pub database: String,
    /// `true`: replaced by the snapshot's, after the data (a whole restore); `false`:
    /// left as they are (`--table`, `--schema`).
    pub applied: bool,
}

/// The encoding and locale of a database a restore goes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseLocalePlan {
    /// The archive (`app.dump`, `app.dir/`).
    pub archive: String,
    /// The database restored into.
    pub database: String,
    /// The snapshot's (its `CREATE DATABASE`), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<DatabaseLocale>,
    pub target: TargetLocale,
}

/// What becomes of the snapshot's encoding and locale in the target database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TargetLocale {
    /// The database is created with them, from `template0`; in the snapshot's
    /// `tablespace` when the server has it then (after the globals), else its default.
    Created { tablespace: Option<String> },
    /// The database exists with the same.
    Same,
    /// The database exists with others, which it keeps.
    Differs { own: DatabaseLocale },
    /// Not known: why (no secret key to read the snapshot, a server not reached).
    Unknown { why: String },
}
