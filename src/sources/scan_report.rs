//! What backing up a source found and stored: the tree, the counts, the warnings.
//! What a kind stored beyond files is its seam's business (`sources::kind`).

use crate::repo::format::Tree;
use crate::repo::tree::PackedTree;

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// The snapshot's tree, as its object stores it.
    pub tree: PackedTree,
    /// The sum of the entries' sizes: the snapshot's size.
    pub size: u64,
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

impl ScanReport {
    /// Records `tree`, a kind's few entries built whole, and its size.
    pub fn set_tree(&mut self, tree: &Tree) -> std::io::Result<()> {
        self.size = tree.entries.iter().map(|e| e.size).sum();
        self.tree = PackedTree::pack(tree)?;
        Ok(())
    }
}
