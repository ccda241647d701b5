//! What backing up a source found and stored: the tree, the counts, the warnings.
//! What a kind stored beyond files is its seam's business (`sources::kind`).

use crate::repo::format::Tree;

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
}
