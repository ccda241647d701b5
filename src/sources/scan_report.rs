//! What backing up a source found and stored: the tree, the counts, the warnings, and
//! a typed summary where files are not the measure. `render` words it.

use crate::repo::format::Tree;
use crate::sources::redis::Taken;

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub tree: Tree,
    /// Bytes read from files (reused files are not read).
    pub bytes_read: u64,
    /// Regular files in the tree, read or reused.
    pub files: u64,
    /// Regular files whose chunk list came from the parent snapshot unread.
    pub files_reused: u64,
    /// Files and directories that could not be read (each has a warning).
    pub unreadable: u64,
    pub warnings: Vec<String>,
    /// What the source says it stored, where files are not the measure.
    pub summary: Option<ScanSummary>,
}

/// What a source stored, where the files of [`ScanReport`] are not the measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanSummary {
    /// A Redis snapshot: its keys, in how many databases, and how it was taken.
    Redis {
        keys: u64,
        databases: usize,
        mode: Taken,
    },
    /// PostgreSQL databases dumped in parallel, in `pg_dump`'s directory format.
    PostgresParallel { databases: usize, jobs: u32 },
}
