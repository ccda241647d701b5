//! Owners, extended attributes, modes and mtimes as a restore sets them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

use super::{ScanError, unsupported};
use crate::repo::format::Entry;

/// Sets owners, extended attributes, modes and mtimes; collects what it could not.
#[derive(Debug)]
pub(super) struct MetaWriter {
    /// Owners are only set by root.
    root: bool,
    numeric: bool,
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
    warnings: Vec<String>,
    /// Entries with extended attributes the target's filesystem does not support,
    /// and the names of the first few such attributes.
    xattrs_unsupported: u64,
    unsupported_names: Vec<String>,
    /// Entries whose owner could not be set, and the first few with the reason.
    chown_failures: u64,
    chown_examples: Vec<String>,
}

impl MetaWriter {
    pub(super) fn new(root: bool, numeric: bool) -> MetaWriter {
        MetaWriter {
            root,
            numeric,
            users: HashMap::new(),
            groups: HashMap::new(),
            warnings: Vec::new(),
            xattrs_unsupported: 0,
            unsupported_names: Vec::new(),
            chown_failures: 0,
            chown_examples: Vec::new(),
        }
    }

    /// The owner and group to set for `entry`: by name where this machine knows the
    /// name (unless numeric), else by number; `None` when not root or none recorded.
    pub(super) fn owner(&mut self, entry: &Entry) -> Option<(Option<u32>, Option<u32>)> {
        if !self.root || (entry.uid.is_none() && entry.gid.is_none()) {
            return None;
        }
        let mut uid = entry.uid;
        let mut gid = entry.gid;
        if !self.numeric {
            if let Some(name) = &entry.user
                && let Some(found) = *self
                    .users
                    .entry(name.clone())
                    .or_insert_with(|| uzers::get_user_by_name(name.as_str()).map(|u| u.uid()))
            {
                uid = Some(found);
            }
            if let Some(name) = &entry.group
                && let Some(found) = *self
                    .groups
                    .entry(name.clone())
                    .or_insert_with(|| uzers::get_group_by_name(name.as_str()).map(|g| g.gid()))
            {
                gid = Some(found);
            }
        }
        Some((uid, gid))
    }

    /// Counted, and told once at the end: a target that takes no owners (a FAT disk,
    /// a root-squashed NFS share) refuses every one.
    pub(super) fn chown_failed(&mut self, entry: &Entry, e: io::Error) {
        self.chown_failures += 1;
        if self.chown_examples.len() < 3 {
            self.chown_examples
                .push(format!("{}: {e}", display_or_root(entry)));
        }
    }

    /// Sets the extended attributes through `set`; a refusal is a warning.
    pub(super) fn xattrs(
        &mut self,
        entry: &Entry,
        mut set: impl FnMut(&str, &[u8]) -> io::Result<()>,
    ) {
        let mut unsupported_here = false;
        for x in &entry.xattrs {
            match set(&x.name, &x.value) {
                Ok(()) => {}
                Err(e) if unsupported(&e) => {
                    unsupported_here = true;
                    if self.unsupported_names.len() < 3 && !self.unsupported_names.contains(&x.name)
                    {
                        self.unsupported_names.push(x.name.clone());
                    }
                }
                Err(e) => self.warnings.push(format!(
                    "restoring {}: the target refused the extended attribute {}: {e}",
                    entry.path, x.name
                )),
            }
        }
        if unsupported_here {
            self.xattrs_unsupported += 1;
        }
    }

    /// Owner, extended attributes, mode and mtime of a directory (or the target).
    /// `follow` for the target itself, which may be given as a symlink to a folder;
    /// directories inside it are never symlinks.
    pub(super) fn dir(
        &mut self,
        dest: &Path,
        entry: &Entry,
        follow: bool,
    ) -> Result<(), ScanError> {
        let fail = |what: &str, e: io::Error| {
            ScanError::io(format!("restoring {}: {what}: {e}", display_or_root(entry)))
        };
        if let Some((uid, gid)) = self.owner(entry) {
            let chowned = if follow {
                std::os::unix::fs::chown(dest, uid, gid)
            } else {
                std::os::unix::fs::lchown(dest, uid, gid)
            };
            if let Err(e) = chowned {
                self.chown_failed(entry, e);
            }
        }
        self.xattrs(entry, |name, value| {
            if follow {
                xattr::set_deref(dest, name, value)
            } else {
                xattr::set(dest, name, value)
            }
        });
        fs::set_permissions(dest, fs::Permissions::from_mode(entry.mode & 0o7777))
            .map_err(|e| fail("cannot set its mode", e))?;
        filetime::set_file_mtime(dest, entry_mtime(entry))
            .map_err(|e| fail("cannot set its mtime", e))
    }

    pub(super) fn finish(mut self) -> Vec<String> {
        if self.chown_failures > 0 {
            let w = MetaWarning::OwnersNotSet {
                entries: self.chown_failures,
                examples: self.chown_examples,
            };
            self.warnings.push(w.to_string());
        }
        if self.xattrs_unsupported > 0 {
            let w = MetaWarning::XattrsUnsupported {
                entries: self.xattrs_unsupported,
                names: self.unsupported_names,
            };
            self.warnings.push(w.to_string());
        }
        self.warnings
    }
}

/// What a restore could not set on some entries, counted once for all of them
/// (`render` words it as one warning each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaWarning {
    /// The owner of `entries` entries could not be set; `examples` are the first few
    /// (`path: error`).
    OwnersNotSet { entries: u64, examples: Vec<String> },
    /// The target's filesystem does not support the extended attributes `names`
    /// (the first few), which `entries` entries have.
    XattrsUnsupported { entries: u64, names: Vec<String> },
}

pub(super) fn display_or_root(entry: &Entry) -> &str {
    if entry.path.is_empty() {
        "the folder itself"
    } else {
        &entry.path
    }
}

pub(super) fn entry_mtime(entry: &Entry) -> FileTime {
    FileTime::from_unix_time(entry.mtime, entry.mtime_ns)
}
