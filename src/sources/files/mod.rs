//! The `files` and `config` sources: scanning a folder (or named paths) into a
//! [`Tree`] whose file contents go through a [`ChunkSink`], and writing a tree back.
//!
//! Everything here is synchronous and meant to run on a blocking thread.
//!
//! Backup:
//! - entries are in path order (components compared one by one, as [`Path`] orders
//!   them), a directory before its contents; paths are relative and `/`-separated;
//! - a regular file whose size, mtime, ctime and inode equal the parent snapshot's
//!   entry is not read again: its chunk list and extended attributes are reused;
//! - names are bytes: any name the filesystem allows is stored (a name that is not
//!   UTF-8 is shown with `\xNN` escapes);
//! - owner and group (numbers and names), extended attributes (POSIX ACLs among them)
//!   and whether a file is sparse are recorded; files of one hard-link group are read
//!   once and share their chunk list;
//! - symlinks are stored, never followed; fifos, sockets and devices are skipped with
//!   a warning.
//!
//! Restore:
//! - every entry path of the snapshot is checked before anything is written (no
//!   absolute paths, no `.`/`..`, no NUL, nothing under a non-directory entry);
//! - nothing is written through a symlink that exists inside the target;
//! - files are written to a temporary file in the same directory, then renamed;
//! - existing files that differ are only overwritten with `force`;
//! - owners are set when running as root (by name where the name exists here, else by
//!   number), then the mode; extended attributes a filesystem refuses are warnings;
//! - hard-link groups are linked again, sparse files get their holes back, and
//!   directories get their metadata deepest first, after their contents.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Code, Failure};
use crate::repo::format::escape_bytes;

mod meta;
mod restore;
mod scan;
#[cfg(test)]
mod tests;

pub use meta::MetaWarning;
pub use restore::{
    RestoreOptions, RestorePreview, RestoreReport, plan_restore, restore, restore_with,
};
pub use scan::{Measured, backup_folder, backup_paths, measure_folder, measure_paths};
// What a backup returns, at the path it had when it was defined here.
pub use crate::sources::ScanReport;

/// Why a scan or a restore failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub code: Code,
    pub message: String,
}

impl ScanError {
    fn io(message: impl Into<String>) -> ScanError {
        ScanError {
            code: Code::Io,
            message: message.into(),
        }
    }

    /// A restore that would be unsafe or lose data: nothing is written.
    fn refused(message: impl Into<String>) -> ScanError {
        ScanError {
            code: Code::RestoreRefused,
            message: message.into(),
        }
    }

    /// The source cannot be read as a whole: the snapshot fails.
    fn source(message: impl Into<String>) -> ScanError {
        ScanError {
            code: Code::SourceFailed,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ScanError {
        ScanError {
            code: Code::InvalidValue,
            message: message.into(),
        }
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScanError {}

impl From<ScanError> for Failure {
    fn from(e: ScanError) -> Failure {
        Failure::new(e.code, e.message)
    }
}

/// A relative entry path as a [`Path`] (Unix paths are bytes).
fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// A path for people: escaped where it is not UTF-8, never lossy.
fn shown(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// Whether the filesystem does not support what was asked (extended attributes).
fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}
