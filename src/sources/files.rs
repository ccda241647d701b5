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

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Serialize;

use super::{ChunkSink, ChunkSource};
use crate::error::{Code, Failure};
use crate::pipeline::fetch::Prefetch;
use crate::repo::format::{Entry, EntryKind, Tree, Xattr, escape_bytes};
use crate::repo::keys::ChunkId;

/// How many paths an error lists before it says "and N more".
const LIST_LIMIT: usize = 20;

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

// ---------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------

/// Backs up the folder `root` (the `files` source). `exclude` holds gitignore-style
/// patterns relative to `root`. An unreadable file or directory is a warning, or an
/// error when `fail_on_unreadable`; an unreadable `root` is always an error.
pub fn backup_folder(
    root: &Path,
    exclude: &[String],
    fail_on_unreadable: bool,
    parent: Option<&Tree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, ScanError> {
    let meta = fs::metadata(root).map_err(|e| {
        ScanError::source(format!("cannot read the folder {}: {e}", root.display()))
    })?;
    if !meta.is_dir() {
        return Err(ScanError::source(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let excludes = build_excludes(root, exclude)?;
    let mut scan = Scanner::new(parent, fail_on_unreadable, Some(excludes));
    let root_entry = scan.make_entry(root, Vec::new(), EntryKind::Dir, &meta, true);
    let names = fs::read_dir(root)
        .and_then(|dir| {
            dir.map(|d| d.map(|d| d.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| {
            ScanError::source(format!("cannot list the folder {}: {e}", root.display()))
        })?;
    scan.walk_names(root, b"", names, sink)?;
    let mut report = scan.finish();
    report.tree.root = Some(root_entry);
    Ok(report)
}

/// Backs up named files and folders (the `config` source). Each path is absolute;
/// its entry path is the absolute path without the leading `/`, and every directory
/// above it is recorded as a directory entry too. A missing path is an error, and so
/// is anything unreadable: configuration must be complete.
pub fn backup_paths(
    paths: &[PathBuf],
    parent: Option<&Tree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, ScanError> {
    let mut scan = Scanner::new(parent, true, None);
    for path in paths {
        let parts = config_components(path)?;
        // The directories above the path, followed like the path itself was resolved.
        let mut above = PathBuf::from("/");
        let mut rel: Vec<u8> = Vec::new();
        for part in &parts[..parts.len() - 1] {
            above.push(part);
            push_rel(&mut rel, part.as_bytes());
            if scan.recorded.contains(&rel) {
                continue;
            }
            let meta = fs::metadata(&above).map_err(|e| {
                ScanError::source(format!(
                    "cannot read the directory {}: {e}",
                    above.display()
                ))
            })?;
            if !meta.is_dir() {
                return Err(ScanError::source(format!(
                    "{} is not a directory",
                    above.display()
                )));
            }
            let entry = scan.make_entry(&above, rel.clone(), EntryKind::Dir, &meta, true);
            scan.record(entry);
        }
        let last = parts[parts.len() - 1];
        push_rel(&mut rel, last.as_bytes());
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ScanError::source(format!(
                    "the configuration path {} does not exist",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(ScanError::source(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let ft = meta.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            return Err(ScanError::invalid(format!(
                "the configuration path {} is a {}, not a file or a folder",
                path.display(),
                special_kind(&meta)
            )));
        }
        if ft.is_symlink() {
            let target = fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            scan.warnings.push(format!(
                "{} is a symlink to {target}: the link is backed up, not what it points to \
                 (list the target to back it up)",
                path.display()
            ));
        }
        scan.visit_meta(path, rel, meta, sink)?;
    }
    let mut report = scan.finish();
    report
        .tree
        .entries
        .sort_by(|a, b| bytes_path(a.path_bytes()).cmp(bytes_path(b.path_bytes())));
    Ok(report)
}

/// The `/`-free components of an absolute, normal path.
fn config_components(path: &Path) -> Result<Vec<&OsStr>, ScanError> {
    if !path.is_absolute() {
        return Err(ScanError::invalid(format!(
            "the configuration path {} is not absolute",
            path.display()
        )));
    }
    let mut parts = Vec::new();
    for comp in path.components() {
        match comp {
            Component::RootDir => {}
            Component::Normal(name) => parts.push(name),
            _ => {
                return Err(ScanError::invalid(format!(
                    "the configuration path {} holds '.' or '..' components",
                    path.display()
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(ScanError::invalid(
            "the configuration path / is the whole filesystem; name files or folders",
        ));
    }
    Ok(parts)
}

fn push_rel(rel: &mut Vec<u8>, name: &[u8]) {
    if !rel.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
}

/// A relative entry path as a [`Path`] (Unix paths are bytes).
fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// A path for people: escaped where it is not UTF-8, never lossy.
fn shown(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

fn build_excludes(root: &Path, exclude: &[String]) -> Result<Gitignore, ScanError> {
    let mut builder = GitignoreBuilder::new(root);
    for pattern in exclude {
        builder
            .add_line(None, pattern)
            .map_err(|e| ScanError::invalid(format!("bad exclude pattern {pattern:?}: {e}")))?;
    }
    builder
        .build()
        .map_err(|e| ScanError::invalid(format!("bad exclude patterns: {e}")))
}

fn base_entry(kind: EntryKind, meta: &Metadata) -> Entry {
    Entry {
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_ns: meta.mtime_nsec() as u32,
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_ns: meta.ctime_nsec() as u32,
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
        ..Entry::default()
    }
}

/// User and group names by number, looked up once each.
#[derive(Debug, Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_string))
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid).and_then(|g| g.name().to_str().map(str::to_string))
            })
            .clone()
    }
}

/// The extended attributes of `path` (of the link itself when it is a symlink,
/// unless `follow`), in name order, and what could not be read; none where the
/// filesystem has no support for them.
fn read_xattrs(path: &Path, follow: bool) -> (Vec<Xattr>, Vec<String>) {
    let listed = if follow {
        xattr::list_deref(path)
    } else {
        xattr::list(path)
    };
    let names = match listed {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return (Vec::new(), Vec::new()),
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("cannot list its extended attributes: {e}")],
            );
        }
    };
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for name in names {
        let Some(text) = name.to_str() else {
            problems.push(format!(
                "the extended attribute {} is left out: its name is not UTF-8",
                escape_bytes(name.as_bytes())
            ));
            continue;
        };
        let value = if follow {
            xattr::get_deref(path, &name)
        } else {
            xattr::get(path, &name)
        };
        match value {
            Ok(Some(value)) => out.push(Xattr {
                name: text.to_string(),
                value,
            }),
            Ok(None) => {}
            Err(e) => problems.push(format!("cannot read its extended attribute {text}: {e}")),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, problems)
}

fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}

fn special_kind(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Whether a file is unchanged since the parent snapshot's entry.
fn unchanged(old: &Entry, new: &Entry) -> bool {
    old.kind == EntryKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_ns == new.mtime_ns
        && old.ctime == new.ctime
        && old.ctime_ns == new.ctime_ns
        && old.ino == new.ino
        && (old.size == 0 || !old.chunks.is_empty())
}

/// A reader that remembers whether the file (rather than the sink) failed.
struct Tracked<'a> {
    inner: &'a mut File,
    error: Option<io::ErrorKind>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.error = Some(e.kind());
            }
        })
    }
}

struct Scanner<'p> {
    parent: HashMap<&'p [u8], &'p Entry>,
    fail_on_unreadable: bool,
    excludes: Option<Gitignore>,
    entries: Vec<Entry>,
    /// Paths already recorded: named config paths may overlap.
    recorded: HashSet<Vec<u8>>,
    /// Directories already walked.
    walked: HashSet<Vec<u8>>,
    /// Files with more than one link, by (device, inode): the entry recorded first.
    inodes: HashMap<(u64, u64), usize>,
    /// Hard-link groups numbered so far.
    links: u64,
    names: Names,
    bytes_read: u64,
    files: u64,
    files_reused: u64,
    unreadable: u64,
    warnings: Vec<String>,
}

impl<'p> Scanner<'p> {
    fn new(
        parent: Option<&'p Tree>,
        fail_on_unreadable: bool,
        excludes: Option<Gitignore>,
    ) -> Scanner<'p> {
        let parent = parent
            .map(|t| t.entries.iter().map(|e| (e.path_bytes(), e)).collect())
            .unwrap_or_default();
        Scanner {
            parent,
            fail_on_unreadable,
            excludes,
            entries: Vec::new(),
            recorded: HashSet::new(),
            walked: HashSet::new(),
            inodes: HashMap::new(),
            links: 0,
            names: Names::default(),
            bytes_read: 0,
            files: 0,
            files_reused: 0,
            unreadable: 0,
            warnings: Vec::new(),
        }
    }

    fn finish(self) -> ScanReport {
        ScanReport {
            tree: Tree {
                entries: self.entries,
                root: None,
            },
            bytes_read: self.bytes_read,
            files: self.files,
            files_reused: self.files_reused,
            unreadable: self.unreadable,
            warnings: self.warnings,
        }
    }

    /// An entry for what `full` is (`meta`): its metadata, owner names and extended
    /// attributes (a warning when they cannot be read). `followed` when `meta` was
    /// read through symlinks (the folder of a `files` source, the folders above a
    /// `config` path): the attributes are then read the same way.
    fn make_entry(
        &mut self,
        full: &Path,
        rel: Vec<u8>,
        kind: EntryKind,
        meta: &Metadata,
        followed: bool,
    ) -> Entry {
        let mut entry = self.owned_entry(rel, kind, meta);
        self.add_xattrs(&mut entry, full, followed);
        entry
    }

    /// An entry with its metadata and owner names, without its extended attributes.
    fn owned_entry(&mut self, rel: Vec<u8>, kind: EntryKind, meta: &Metadata) -> Entry {
        let mut entry = base_entry(kind, meta);
        entry.set_path_bytes(rel);
        entry.user = self.names.user(meta.uid());
        entry.group = self.names.group(meta.gid());
        entry
    }

    /// Reads the extended attributes of `full` into `entry`; what cannot be read is
    /// a warning.
    fn add_xattrs(&mut self, entry: &mut Entry, full: &Path, followed: bool) {
        let (xattrs, problems) = read_xattrs(full, followed);
        entry.xattrs = xattrs;
        for problem in problems {
            self.warnings.push(format!("{}: {problem}", shown(full)));
        }
    }

    /// Records an entry once; false when it was there already.
    fn record(&mut self, entry: Entry) -> bool {
        if self.recorded.insert(entry.path_bytes().to_vec()) {
            self.entries.push(entry);
            true
        } else {
            false
        }
    }

    /// A warning, or the error when unreadable things are fatal.
    fn unreadable(&mut self, what: &Path, err: impl fmt::Display) -> Result<(), ScanError> {
        let message = format!("cannot read {}: {err}", shown(what));
        if self.fail_on_unreadable {
            return Err(ScanError::io(message));
        }
        self.unreadable += 1;
        self.warnings.push(message);
        Ok(())
    }

    fn walk_dir(
        &mut self,
        dir: &Path,
        rel: &[u8],
        sink: &mut dyn ChunkSink,
    ) -> Result<(), ScanError> {
        if !self.walked.insert(rel.to_vec()) {
            return Ok(());
        }
        let names = match fs::read_dir(dir).and_then(|d| {
            d.map(|d| d.map(|d| d.file_name()))
                .collect::<io::Result<Vec<_>>>()
        }) {
            Ok(names) => names,
            Err(e) => return self.unreadable(dir, e),
        };
        self.walk_names(dir, rel, names, sink)
    }

    fn walk_names(
        &mut self,
        dir: &Path,
        rel: &[u8],
        mut names: Vec<OsString>,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), ScanError> {
        // Byte order on Unix: the same on every run and every machine.
        names.sort();
        for name in names {
            let full = dir.join(&name);
            let mut child = rel.to_vec();
            push_rel(&mut child, &name.into_vec());
            self.visit(&full, child, sink)?;
        }
        Ok(())
    }

    fn visit(
        &mut self,
        full: &Path,
        rel: Vec<u8>,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), ScanError> {
        let meta = match fs::symlink_metadata(full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warnings
                    .push(format!("{} vanished during the scan", shown(full)));
                return Ok(());
            }
            Err(e) => return self.unreadable(full, e),
        };
        if let Some(excludes) = &self.excludes
            && excludes
                .matched(bytes_path(&rel), meta.is_dir())
                .is_ignore()
        {
            return Ok(());
        }
        self.visit_meta(full, rel, meta, sink)
    }

    fn visit_meta(
        &mut self,
        full: &Path,
        rel: Vec<u8>,
        meta: Metadata,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), ScanError> {
        let ft = meta.file_type();
        if ft.is_dir() {
            let entry = self.make_entry(full, rel.clone(), EntryKind::Dir, &meta, false);
            self.record(entry);
            self.walk_dir(full, &rel, sink)
        } else if ft.is_symlink() {
            let target = match fs::read_link(full) {
                Ok(t) => t,
                Err(e) => return self.unreadable(full, e),
            };
            let mut entry = self.make_entry(full, rel, EntryKind::Symlink, &meta, false);
            entry.set_target_bytes(target.into_os_string().into_vec());
            self.record(entry);
            Ok(())
        } else if ft.is_file() {
            self.file(full, rel, &meta, sink)
        } else {
            self.warnings.push(format!(
                "skipped {}: a {} is not backed up",
                shown(full),
                special_kind(&meta)
            ));
            Ok(())
        }
    }

    fn file(
        &mut self,
        full: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), ScanError> {
        if self.recorded.contains(&rel) {
            return Ok(());
        }
        // The extended attributes are read last: a file that is reused takes them
        // along (they are the inode's; setting one changes the ctime), which keeps
        // the no-change rerun at one `lstat` per file.
        let mut entry = self.owned_entry(rel, EntryKind::File, meta);
        entry.sparse = meta.blocks().saturating_mul(512) < meta.len();
        // A further link to an inode read already: the same chunks, not read again.
        if meta.nlink() > 1
            && let Some(&first) = self.inodes.get(&(meta.dev(), meta.ino()))
        {
            let link = match self.entries[first].link {
                Some(n) => n,
                None => {
                    self.links += 1;
                    self.entries[first].link = Some(self.links);
                    self.links
                }
            };
            let first = &self.entries[first];
            entry.link = Some(link);
            entry.size = first.size;
            entry.chunks = first.chunks.clone();
            entry.sparse = first.sparse;
            entry.xattrs = first.xattrs.clone();
            self.files += 1;
            self.files_reused += 1;
            self.record(entry);
            return Ok(());
        }
        if let Some(old) = self.parent.get(entry.path_bytes())
            && unchanged(old, &entry)
        {
            entry.chunks = old.chunks.clone();
            // A parent written before owners were recorded has no attributes either.
            if old.uid.is_some() {
                entry.xattrs = old.xattrs.clone();
            } else {
                self.add_xattrs(&mut entry, full, false);
            }
            self.files += 1;
            self.files_reused += 1;
            self.record_file(entry, meta);
            return Ok(());
        }
        self.add_xattrs(&mut entry, full, false);
        let mut file = match File::open(full) {
            Ok(f) => f,
            Err(e) => return self.unreadable(full, e),
        };
        // What was opened must be what was looked at (not a swapped-in symlink).
        match file.metadata() {
            Ok(m) if m.is_file() && m.ino() == meta.ino() && m.dev() == meta.dev() => {}
            Ok(_) => {
                self.warnings.push(format!(
                    "skipped {}: it was replaced during the scan",
                    shown(full)
                ));
                return Ok(());
            }
            Err(e) => return self.unreadable(full, e),
        }
        let mut reader = Tracked {
            inner: &mut file,
            error: None,
        };
        match sink.store(&mut reader) {
            Ok(stored) => {
                entry.size = stored.bytes;
                entry.chunks = stored.chunks;
                self.bytes_read += stored.bytes;
            }
            Err(e) if reader.error.is_some() => return self.unreadable(full, e),
            Err(e) => {
                return Err(ScanError::io(format!("storing {}: {e}", shown(full))));
            }
        }
        if let Ok(after) = file.metadata()
            && (after.len() != entry.size
                || after.mtime() != meta.mtime()
                || after.mtime_nsec() != meta.mtime_nsec())
        {
            self.warnings.push(format!(
                "{} changed while it was read; what was read is kept and the next run reads it again",
                shown(full)
            ));
        }
        self.files += 1;
        self.record_file(entry, meta);
        Ok(())
    }

    /// Records a file read or reused, remembering its inode when it has more links.
    fn record_file(&mut self, entry: Entry, meta: &Metadata) {
        let at = self.entries.len();
        if self.record(entry) && meta.nlink() > 1 {
            self.inodes.insert((meta.dev(), meta.ino()), at);
        }
    }
}

// ---------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------

/// What a restore would do, computed from the tree and the target only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePreview {
    /// Entries that do not exist in the target yet (and directories above selected
    /// entries that would be made).
    pub create: Vec<String>,
    /// Entries that exist and differ (size, mtime, kind or symlink target): a restore
    /// needs `force` for them.
    pub overwrite: Vec<String>,
    /// Entries that already match and are skipped.
    pub identical: Vec<String>,
    /// Bytes of file content a restore would write.
    pub bytes_to_write: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub files_written: u64,
    pub bytes_written: u64,
    pub dirs_created: u64,
    pub symlinks_written: u64,
    /// Files made as further links to a file of their hard-link group.
    pub links_written: u64,
    /// Entries that matched already and were left as they were.
    pub unchanged: u64,
    /// What could not be carried over (extended attributes the target refused, owners
    /// that could not be set); the restore goes on.
    pub warnings: Vec<String>,
}

/// How [`restore_with`] writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Gitignore-style patterns selecting entries (all when empty).
    pub include: Vec<String>,
    /// Overwrite existing entries that differ from the snapshot.
    pub force: bool,
    /// Set owners by the recorded numbers only, never by name (as tar's
    /// `--numeric-owner`).
    pub numeric_owner: bool,
}

/// Shows what [`restore`] would do; reads nothing but the target's metadata.
pub fn plan_restore(
    tree: &Tree,
    target: &Path,
    include: &[String],
) -> Result<RestorePreview, ScanError> {
    Ok(prepare(tree, target, include)?.preview)
}

/// [`restore_with`] with owners by name and no other options.
pub fn restore(
    tree: &Tree,
    target: &Path,
    include: &[String],
    force: bool,
    source: &mut (dyn ChunkSource + Send),
) -> Result<RestoreReport, ScanError> {
    let options = RestoreOptions {
        include: include.to_vec(),
        force,
        numeric_owner: false,
    };
    restore_with(tree, target, &options, source)
}

/// Writes the selected entries of `tree` under `target`, fetching file contents from
/// `source`. Refuses, before writing anything, an unsafe tree and (without `force`)
/// a restore that would overwrite existing entries that differ.
pub fn restore_with(
    tree: &Tree,
    target: &Path,
    options: &RestoreOptions,
    source: &mut (dyn ChunkSource + Send),
) -> Result<RestoreReport, ScanError> {
    restore_as(
        tree,
        target,
        options,
        source,
        uzers::get_effective_uid() == 0,
    )
}

/// [`restore_with`], setting owners only when `as_root`.
fn restore_as(
    tree: &Tree,
    target: &Path,
    options: &RestoreOptions,
    source: &mut (dyn ChunkSource + Send),
    as_root: bool,
) -> Result<RestoreReport, ScanError> {
    let prepared = prepare(tree, target, &options.include)?;
    let blocked: Vec<&str> = prepared
        .items
        .iter()
        .filter(|i| i.existing == Existing::FullDir && i.kind() != EntryKind::Dir)
        .map(|i| i.shown.as_str())
        .collect();
    if !blocked.is_empty() {
        return Err(ScanError::refused(format!(
            "nothing was restored: the target holds non-empty directories where the \
             snapshot has files or symlinks; move them away first: {}",
            list(&blocked)
        )));
    }
    if !options.force && !prepared.preview.overwrite.is_empty() {
        let paths: Vec<&str> = prepared
            .preview
            .overwrite
            .iter()
            .map(String::as_str)
            .collect();
        return Err(ScanError::refused(format!(
            "nothing was restored: {} existing entr{} in {} differ{} from the snapshot and \
             would be overwritten (use force to overwrite them): {}",
            paths.len(),
            if paths.len() == 1 { "y" } else { "ies" },
            target.display(),
            if paths.len() == 1 { "s" } else { "" },
            list(&paths)
        )));
    }

    fs::create_dir_all(target)
        .map_err(|e| ScanError::io(format!("cannot create {}: {e}", target.display())))?;
    // The chunks in the order the loop below writes them, fetched ahead on a thread
    // of their own. Further links of a hard-link group are linked, not written.
    let order: Vec<ChunkId> = prepared
        .items
        .iter()
        .filter(|i| {
            i.kind() == EntryKind::File && i.action != Action::Identical && i.link_to.is_none()
        })
        .filter_map(|i| i.entry)
        .flat_map(|e| e.chunks.iter().copied())
        .collect();
    // The folder itself gets the snapshot's metadata when the whole tree is restored.
    let root = tree.root.as_ref().filter(|_| options.include.is_empty());
    let mut meta = MetaWriter::new(as_root, options.numeric_owner);
    let mut report = std::thread::scope(|scope| {
        let mut ahead = Prefetch::start(scope, source, order);
        write_items(&prepared, target, root, &mut meta, &mut ahead)
    })?;
    report.warnings = meta.finish();
    Ok(report)
}

/// Sets owners, extended attributes, modes and mtimes; collects what it could not.
#[derive(Debug)]
struct MetaWriter {
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
    fn new(root: bool, numeric: bool) -> MetaWriter {
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
    fn owner(&mut self, entry: &Entry) -> Option<(Option<u32>, Option<u32>)> {
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
    fn chown_failed(&mut self, entry: &Entry, e: io::Error) {
        self.chown_failures += 1;
        if self.chown_examples.len() < 3 {
            self.chown_examples
                .push(format!("{}: {e}", display_or_root(entry)));
        }
    }

    /// Sets the extended attributes through `set`; a refusal is a warning.
    fn xattrs(&mut self, entry: &Entry, mut set: impl FnMut(&str, &[u8]) -> io::Result<()>) {
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
    fn dir(&mut self, dest: &Path, entry: &Entry, follow: bool) -> Result<(), ScanError> {
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

    fn finish(mut self) -> Vec<String> {
        if self.chown_failures > 0 {
            self.warnings.push(format!(
                "the owner of {} entr{} could not be set ({}{})",
                self.chown_failures,
                if self.chown_failures == 1 { "y" } else { "ies" },
                self.chown_examples.join("; "),
                if self.chown_failures > self.chown_examples.len() as u64 {
                    "; …"
                } else {
                    ""
                }
            ));
        }
        if self.xattrs_unsupported > 0 {
            self.warnings.push(format!(
                "the target's filesystem does not support these extended attributes ({}): \
                 they were not restored on {} entr{}",
                self.unsupported_names.join(", "),
                self.xattrs_unsupported,
                if self.xattrs_unsupported == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
        }
        self.warnings
    }
}

fn display_or_root(entry: &Entry) -> &str {
    if entry.path.is_empty() {
        "the folder itself"
    } else {
        &entry.path
    }
}

/// Writes the prepared items, then sets the directories' metadata.
fn write_items(
    prepared: &Prepared<'_>,
    target: &Path,
    root: Option<&Entry>,
    meta: &mut MetaWriter,
    source: &mut dyn ChunkSource,
) -> Result<RestoreReport, ScanError> {
    let mut report = RestoreReport::default();
    // Directories whose metadata is set once their contents are written.
    let mut finish_dirs: Vec<(PathBuf, &Entry)> = Vec::new();
    for item in &prepared.items {
        let dest = target.join(OsStr::from_bytes(item.path));
        check_parents(target, item.path, &item.shown)?;
        let io_err = |what: &str, e: io::Error| {
            ScanError::io(format!("restoring {}: {what}: {e}", item.shown))
        };
        match item.kind() {
            EntryKind::Dir => {
                match item.action {
                    Action::Create => {
                        make_dir(&dest, item.entry.is_some())
                            .map_err(|e| io_err("cannot create the directory", e))?;
                        report.dirs_created += 1;
                    }
                    Action::Overwrite => {
                        // A file or symlink where the snapshot has a directory: the
                        // link itself is removed, never followed.
                        fs::remove_file(&dest).map_err(|e| io_err("cannot remove it", e))?;
                        make_dir(&dest, item.entry.is_some())
                            .map_err(|e| io_err("cannot create the directory", e))?;
                        report.dirs_created += 1;
                    }
                    Action::Identical => report.unchanged += 1,
                    Action::Keep => {}
                }
                if let Some(entry) = item.entry
                    && (item.selected || item.action != Action::Keep)
                {
                    finish_dirs.push((dest, entry));
                }
            }
            EntryKind::File => {
                let Some(entry) = item.entry else { continue };
                if let Some(first) = item.link_to {
                    let first = target.join(OsStr::from_bytes(prepared.items[first].path));
                    if same_inode(&first, &dest) {
                        report.unchanged += 1;
                        continue;
                    }
                    if item.existing == Existing::EmptyDir {
                        fs::remove_dir(&dest)
                            .map_err(|e| io_err("cannot remove the directory", e))?;
                    }
                    write_link(&first, &dest, entry)?;
                    report.links_written += 1;
                    continue;
                }
                if item.action == Action::Identical {
                    // The same bytes: only the owner and the mode are put right.
                    report.unchanged += 1;
                    let Ok(m) = fs::symlink_metadata(&dest) else {
                        continue;
                    };
                    let mut chowned = false;
                    if let Some((uid, gid)) = meta.owner(entry)
                        && (uid.is_some_and(|u| u != m.uid()) || gid.is_some_and(|g| g != m.gid()))
                    {
                        match std::os::unix::fs::lchown(&dest, uid, gid) {
                            Ok(()) => chowned = true,
                            Err(e) => meta.chown_failed(entry, e),
                        }
                    }
                    let mode = entry.mode & 0o7777;
                    if chowned || m.mode() & 0o7777 != mode {
                        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                            .map_err(|e| io_err("cannot set its mode", e))?;
                    }
                    continue;
                }
                if item.existing == Existing::EmptyDir {
                    fs::remove_dir(&dest).map_err(|e| io_err("cannot remove the directory", e))?;
                }
                let written = write_file(&dest, entry, meta, source)?;
                report.files_written += 1;
                report.bytes_written += written;
            }
            EntryKind::Symlink => {
                let Some(entry) = item.entry else { continue };
                if item.action == Action::Identical {
                    report.unchanged += 1;
                    continue;
                }
                if item.existing == Existing::EmptyDir {
                    fs::remove_dir(&dest).map_err(|e| io_err("cannot remove the directory", e))?;
                }
                write_symlink(&dest, entry, meta)?;
                report.symlinks_written += 1;
            }
        }
    }
    // Deepest first: a directory's metadata is set after everything inside it.
    finish_dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (dest, entry) in finish_dirs {
        meta.dir(&dest, entry, false)?;
    }
    if let Some(root) = root {
        meta.dir(target, root, true)?;
    }
    Ok(report)
}

/// Whether two paths are one inode (neither followed if a symlink).
fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Overwrite,
    Identical,
    /// A directory above a selected entry that exists already: left alone.
    Keep,
}

/// What the target holds at an item's path (never looked at through a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Nothing,
    EmptyDir,
    FullDir,
    File,
    Symlink,
    Other,
}

#[derive(Debug)]
struct Item<'t> {
    /// The entry path's bytes.
    path: &'t [u8],
    /// The path for people (escaped where it is not UTF-8).
    shown: String,
    /// `None` for a directory above a selected entry that the tree does not hold.
    entry: Option<&'t Entry>,
    selected: bool,
    action: Action,
    existing: Existing,
    /// A further selected member of a hard-link group: the item it is linked to.
    link_to: Option<usize>,
}

impl Item<'_> {
    fn kind(&self) -> EntryKind {
        self.entry.map_or(EntryKind::Dir, |e| e.kind)
    }
}

#[derive(Debug)]
struct Prepared<'t> {
    /// In path order: a directory before its contents.
    items: Vec<Item<'t>>,
    preview: RestorePreview,
}

fn list(paths: &[&str]) -> String {
    let mut out = paths
        .iter()
        .take(LIST_LIMIT)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > LIST_LIMIT {
        out.push_str(&format!(" and {} more", paths.len() - LIST_LIMIT));
    }
    out
}

/// Why an entry path is unsafe to restore, if it is.
fn unsafe_path(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.contains(&0) {
        return Some("it holds a NUL byte");
    }
    if path.starts_with(b"/") || path.starts_with(b"\\") {
        return Some("it is absolute");
    }
    for comp in path.split(|&b| b == b'/') {
        if comp.is_empty() {
            return Some("it holds an empty component");
        }
        if comp == b"." || comp == b".." {
            return Some("it holds a '.' or '..' component");
        }
        if comp
            .split(|&b| b == b'\\')
            .any(|part| part == b"." || part == b"..")
        {
            return Some("it holds a backslash-separated '.' or '..'");
        }
    }
    None
}

/// Checks every entry of the tree, selected or not: a tree with one unsafe entry is
/// not trusted at all.
fn check_tree(tree: &Tree) -> Result<HashMap<&[u8], &Entry>, ScanError> {
    let mut by_path: HashMap<&[u8], &Entry> = HashMap::with_capacity(tree.entries.len());
    for entry in &tree.entries {
        // Messages show the bytes that would be used, escaped, not the display form.
        let shown = escape_bytes(entry.path_bytes());
        if let Some(why) = unsafe_path(entry.path_bytes()) {
            return Err(ScanError::refused(format!(
                "the snapshot holds the unsafe entry path {shown:?} ({why}); nothing was restored"
            )));
        }
        if entry.kind == EntryKind::Symlink {
            match entry.target_bytes() {
                Some(t) if !t.is_empty() && !t.contains(&0) => {}
                _ => {
                    return Err(ScanError::refused(format!(
                        "the snapshot's symlink {shown:?} has no usable target; nothing was restored"
                    )));
                }
            }
        }
        if by_path.insert(entry.path_bytes(), entry).is_some() {
            return Err(ScanError::refused(format!(
                "the snapshot holds the entry {shown:?} twice; nothing was restored"
            )));
        }
    }
    for entry in &tree.entries {
        for above in ancestors(entry.path_bytes()) {
            if let Some(a) = by_path.get(above)
                && a.kind != EntryKind::Dir
            {
                return Err(ScanError::refused(format!(
                    "the snapshot's entry {:?} lies under {:?}, which is not a directory; \
                     nothing was restored",
                    escape_bytes(entry.path_bytes()),
                    escape_bytes(above)
                )));
            }
        }
    }
    Ok(by_path)
}

/// The directories above a relative path, nearest last: `a`, `a/b` for `a/b/c`.
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// The entries selected by `include` (all when empty).
fn select<'t>(tree: &'t Tree, include: &[String]) -> Result<Vec<&'t Entry>, ScanError> {
    if include.is_empty() {
        return Ok(tree.entries.iter().collect());
    }
    let mut builder = GitignoreBuilder::new("/");
    for pattern in include {
        builder
            .add_line(None, pattern)
            .map_err(|e| ScanError::invalid(format!("bad include pattern {pattern:?}: {e}")))?;
    }
    let matcher = builder
        .build()
        .map_err(|e| ScanError::invalid(format!("bad include patterns: {e}")))?;
    // Each positive pattern must select something: a typo must not restore nothing.
    for pattern in include {
        let p = pattern.trim();
        if p.is_empty() || p.starts_with('!') || p.starts_with('#') {
            continue;
        }
        let mut one = GitignoreBuilder::new("/");
        one.add_line(None, pattern)
            .map_err(|e| ScanError::invalid(format!("bad include pattern {pattern:?}: {e}")))?;
        let one = one
            .build()
            .map_err(|e| ScanError::invalid(format!("bad include pattern {pattern:?}: {e}")))?;
        if !tree.entries.iter().any(|e| {
            one.matched(bytes_path(e.path_bytes()), e.kind == EntryKind::Dir)
                .is_ignore()
        }) {
            return Err(ScanError::invalid(format!(
                "the include pattern {pattern:?} matches nothing in the snapshot"
            )));
        }
    }
    Ok(tree
        .entries
        .iter()
        .filter(|e| {
            matcher
                .matched_path_or_any_parents(bytes_path(e.path_bytes()), e.kind == EntryKind::Dir)
                .is_ignore()
        })
        .collect())
}

/// What the target holds at `path`; whether a directory is empty is only looked at
/// when `check_empty`.
fn existing_at(path: &Path, check_empty: bool) -> Result<(Existing, Option<Metadata>), ScanError> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            let existing = if ft.is_symlink() {
                Existing::Symlink
            } else if ft.is_dir() {
                let empty = check_empty
                    && fs::read_dir(path)
                        .map(|mut d| d.next().is_none())
                        .map_err(|e| ScanError::io(format!("cannot list {}: {e}", shown(path))))?;
                if empty {
                    Existing::EmptyDir
                } else {
                    Existing::FullDir
                }
            } else if ft.is_file() {
                Existing::File
            } else {
                Existing::Other
            };
            Ok((existing, Some(m)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Existing::Nothing, None)),
        Err(e) => Err(ScanError::io(format!("cannot read {}: {e}", shown(path)))),
    }
}

fn prepare<'t>(
    tree: &'t Tree,
    target: &Path,
    include: &[String],
) -> Result<Prepared<'t>, ScanError> {
    let by_path = check_tree(tree)?;
    let selected = select(tree, include)?;

    let mut items: Vec<Item<'t>> = Vec::with_capacity(selected.len());
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(selected.len());
    for entry in &selected {
        seen.insert(entry.path_bytes());
    }
    for entry in &selected {
        for above in ancestors(entry.path_bytes()) {
            if seen.insert(above) {
                let entry = by_path.get(above).copied();
                items.push(Item {
                    path: above,
                    shown: escape_bytes(above),
                    entry,
                    selected: false,
                    action: Action::Keep,
                    existing: Existing::Nothing,
                    link_to: None,
                });
            }
        }
        items.push(Item {
            path: entry.path_bytes(),
            shown: escape_bytes(entry.path_bytes()),
            entry: Some(entry),
            selected: true,
            action: Action::Create,
            existing: Existing::Nothing,
            link_to: None,
        });
    }
    items.sort_by(|a, b| bytes_path(a.path).cmp(bytes_path(b.path)));

    // Hard-link groups: the first selected member is written, the others link to it
    // (those whose content the tree records otherwise are written on their own).
    let mut firsts: HashMap<u64, usize> = HashMap::new();
    for i in 0..items.len() {
        let Some(entry) = items[i]
            .entry
            .filter(|e| items[i].selected && e.kind == EntryKind::File)
        else {
            continue;
        };
        let Some(group) = entry.link else { continue };
        match firsts.get(&group) {
            Some(&first) => {
                let carrier = items[first].entry.unwrap_or_else(|| unreachable!("a file"));
                if carrier.size == entry.size && carrier.chunks == entry.chunks {
                    items[i].link_to = Some(first);
                }
            }
            None => {
                firsts.insert(group, i);
            }
        }
    }

    let target_exists = match fs::metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(ScanError::io(format!(
                "the restore target {} is not a directory",
                target.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(ScanError::io(format!(
                "cannot read the restore target {}: {e}",
                target.display()
            )));
        }
    };

    let mut preview = RestorePreview::default();
    // Directories that exist in the target as real directories: only below them is
    // there anything to look at.
    let mut real_dirs: HashSet<&[u8]> = HashSet::new();
    for item in &mut items {
        let parent_real = match item.path.iter().rposition(|&b| b == b'/') {
            Some(i) => real_dirs.contains(&item.path[..i]),
            None => target_exists,
        };
        let here = target.join(OsStr::from_bytes(item.path));
        let (existing, meta) = if parent_real {
            existing_at(&here, item.kind() != EntryKind::Dir)?
        } else {
            (Existing::Nothing, None)
        };
        item.existing = existing;
        let is_dir_there = matches!(existing, Existing::EmptyDir | Existing::FullDir);
        if !item.selected {
            item.action = match existing {
                Existing::Nothing => Action::Create,
                Existing::EmptyDir | Existing::FullDir => Action::Keep,
                Existing::Symlink => {
                    return Err(ScanError::io(format!(
                        "{} is a symlink inside the restore target; a restore never writes \
                         through symlinks (restore {} too, or remove the link)",
                        shown(&here),
                        item.shown
                    )));
                }
                _ => {
                    return Err(ScanError::io(format!(
                        "{} is not a directory, but the snapshot has entries under it",
                        shown(&here)
                    )));
                }
            };
            if is_dir_there {
                real_dirs.insert(item.path);
            }
            if item.action == Action::Create {
                preview.create.push(item.shown.clone());
            }
            continue;
        }
        let entry = item
            .entry
            .unwrap_or_else(|| unreachable!("selected items have entries"));
        item.action = match (entry.kind, existing) {
            (_, Existing::Nothing) => Action::Create,
            (EntryKind::Dir, Existing::EmptyDir | Existing::FullDir) => Action::Identical,
            (EntryKind::Dir, _) => Action::Overwrite,
            (EntryKind::File, Existing::File) => {
                let m = meta.as_ref().unwrap_or_else(|| unreachable!("it exists"));
                if m.len() == entry.size
                    && m.mtime() == entry.mtime
                    && m.mtime_nsec() == i64::from(entry.mtime_ns)
                {
                    Action::Identical
                } else {
                    Action::Overwrite
                }
            }
            (EntryKind::Symlink, Existing::Symlink) => {
                let now = fs::read_link(&here).map_err(|e| {
                    ScanError::io(format!("cannot read the symlink {}: {e}", shown(&here)))
                })?;
                if Some(now.as_os_str().as_bytes()) == entry.target_bytes() {
                    Action::Identical
                } else {
                    Action::Overwrite
                }
            }
            _ => Action::Overwrite,
        };
        if entry.kind == EntryKind::Dir && is_dir_there {
            real_dirs.insert(item.path);
        }
        match item.action {
            Action::Create => preview.create.push(item.shown.clone()),
            Action::Overwrite => preview.overwrite.push(item.shown.clone()),
            Action::Identical | Action::Keep => preview.identical.push(item.shown.clone()),
        }
        if entry.kind == EntryKind::File
            && item.link_to.is_none()
            && matches!(item.action, Action::Create | Action::Overwrite)
        {
            preview.bytes_to_write += entry.size;
        }
    }
    Ok(Prepared { items, preview })
}

/// Fails when any directory between `target` and `rel` is a symlink or not a
/// directory: a restore never writes through a link that lives in the target.
fn check_parents(target: &Path, rel: &[u8], shown_rel: &str) -> Result<(), ScanError> {
    let mut at = target.to_path_buf();
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(OsStr::from_bytes(part));
        let meta = fs::symlink_metadata(&at).map_err(|e| {
            ScanError::io(format!(
                "restoring {shown_rel}: cannot read {}: {e}",
                shown(&at)
            ))
        })?;
        if meta.file_type().is_symlink() {
            return Err(ScanError::io(format!(
                "restoring {shown_rel}: {} is a symlink inside the restore target; a restore \
                 never writes through symlinks",
                shown(&at)
            )));
        }
        if !meta.is_dir() {
            return Err(ScanError::io(format!(
                "restoring {shown_rel}: {} is not a directory",
                shown(&at)
            )));
        }
    }
    Ok(())
}

/// Makes a directory. One whose mode the tree records starts out private and gets its
/// mode once its contents are written; one the tree does not hold (above a selected
/// entry) gets the default mode.
fn make_dir(path: &Path, recorded: bool) -> io::Result<()> {
    let mode = if recorded { 0o700 } else { 0o777 };
    fs::DirBuilder::new().mode(mode).create(path)
}

fn entry_mtime(entry: &Entry) -> FileTime {
    FileTime::from_unix_time(entry.mtime, entry.mtime_ns)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a temporary file next to `dest`.
fn temp_name(dest: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(".backplan-restore-{}-{n}.tmp", std::process::id());
    dest.with_file_name(name)
}

/// Makes something at a fresh temporary name next to `dest` with `make`, which fails
/// with `AlreadyExists` when the name is taken (another name is tried then); returns
/// the name and what `make` returned.
fn at_temp_name<T>(
    dest: &Path,
    mut make: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    loop {
        let tmp = temp_name(dest);
        match make(&tmp) {
            Ok(made) => return Ok((tmp, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Runs of zeros at least this long, aligned to it in the file, are left as holes in
/// a file the snapshot records as sparse.
const HOLE_BLOCK: u64 = 4096;

/// Writes `bytes` at `offset`, skipping the aligned blocks that are all zeros (they
/// stay holes; the file's length is set at the end).
fn write_sparse(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = 0usize;
    // The start of the run of non-zero blocks not written yet.
    let mut run: Option<usize> = None;
    while at < bytes.len() {
        let pos = offset + at as u64;
        let block_end = ((pos / HOLE_BLOCK + 1) * HOLE_BLOCK - offset) as usize;
        let end = block_end.min(bytes.len());
        let zero = bytes[at..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (true, Some(start)) => {
                file.write_all_at(&bytes[start..at], offset + start as u64)?;
                run = None;
            }
            (false, None) => run = Some(at),
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        file.write_all_at(&bytes[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Writes one file through a temporary file and a rename; returns its size.
fn write_file(
    dest: &Path,
    entry: &Entry,
    meta: &mut MetaWriter,
    source: &mut dyn ChunkSource,
) -> Result<u64, ScanError> {
    let fail = |what: String| ScanError::io(format!("restoring {}: {what}", entry.path));
    let (tmp, mut file) = at_temp_name(dest, |tmp| {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
    })
    .map_err(|e| fail(format!("cannot create a temporary file: {e}")))?;
    let result = (|| {
        let mut written: u64 = 0;
        for id in &entry.chunks {
            // The fetch's own code (a damaged or missing chunk) is kept.
            let bytes = source.fetch(id).map_err(|f| ScanError {
                code: f.code,
                message: format!(
                    "restoring {}: cannot fetch chunk {}: {}",
                    entry.path,
                    id.to_hex(),
                    f.message
                ),
            })?;
            if written + bytes.len() as u64 > entry.size {
                return Err(fail(format!(
                    "its chunks hold more than the {} bytes the snapshot records",
                    entry.size
                )));
            }
            let wrote = if entry.sparse {
                write_sparse(&file, &bytes, written)
            } else {
                file.write_all(&bytes)
            };
            wrote.map_err(|e| fail(format!("cannot write: {e}")))?;
            written += bytes.len() as u64;
        }
        if written != entry.size {
            return Err(fail(format!(
                "its chunks hold {written} bytes, the snapshot records {}",
                entry.size
            )));
        }
        if entry.sparse {
            // Trailing holes: the length without writing them.
            file.set_len(written)
                .map_err(|e| fail(format!("cannot set its length: {e}")))?;
        }
        set_file_meta(&file, entry, meta).map_err(fail)?;
        drop(file);
        fs::rename(&tmp, dest).map_err(|e| fail(format!("cannot move it into place: {e}")))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Owner, extended attributes, mode (after the owner and the content: both clear
/// setuid/setgid bits) and mtime of an open file.
fn set_file_meta(file: &File, entry: &Entry, meta: &mut MetaWriter) -> Result<(), String> {
    use xattr::FileExt;
    if let Some((uid, gid)) = meta.owner(entry)
        && let Err(e) = std::os::unix::fs::fchown(file, uid, gid)
    {
        meta.chown_failed(entry, e);
    }
    meta.xattrs(entry, |name, value| file.set_xattr(name, value));
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777))
        .map_err(|e| format!("cannot set its mode: {e}"))?;
    filetime::set_file_handle_times(file, None, Some(entry_mtime(entry)))
        .map_err(|e| format!("cannot set its mtime: {e}"))
}

/// Makes `dest` a further link to `first` (a file of its hard-link group written
/// before), under a temporary name and a rename.
fn write_link(first: &Path, dest: &Path, entry: &Entry) -> Result<(), ScanError> {
    let fail = |what: String| ScanError::io(format!("restoring {}: {what}", entry.path));
    let (tmp, ()) = at_temp_name(dest, |tmp| fs::hard_link(first, tmp))
        .map_err(|e| fail(format!("cannot link it to {}: {e}", shown(first))))?;
    fs::rename(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(format!("cannot move it into place: {e}"))
    })
}

/// Creates a symlink under a temporary name and renames it over `dest`.
fn write_symlink(dest: &Path, entry: &Entry, meta: &mut MetaWriter) -> Result<(), ScanError> {
    let fail = |what: String| ScanError::io(format!("restoring {}: {what}", entry.path));
    let target = OsStr::from_bytes(entry.target_bytes().unwrap_or_default());
    let (tmp, ()) = at_temp_name(dest, |tmp| std::os::unix::fs::symlink(target, tmp))
        .map_err(|e| fail(format!("cannot create the symlink: {e}")))?;
    if let Some((uid, gid)) = meta.owner(entry)
        && let Err(e) = std::os::unix::fs::lchown(&tmp, uid, gid)
    {
        meta.chown_failed(entry, e);
    }
    meta.xattrs(entry, |name, value| xattr::set(&tmp, name, value));
    let mtime = entry_mtime(entry);
    let result = filetime::set_symlink_file_times(&tmp, mtime, mtime)
        .map_err(|e| fail(format!("cannot set its mtime: {e}")))
        .and_then(|()| {
            fs::rename(&tmp, dest).map_err(|e| fail(format!("cannot move it into place: {e}")))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::repo::keys::ChunkId;
    use crate::sources::Stored;

    /// Chunks of at most 64 KiB, kept in memory by their BLAKE3 hash.
    #[derive(Default)]
    struct MemStore {
        chunks: HashMap<ChunkId, Vec<u8>>,
        store_calls: usize,
    }

    impl ChunkSink for MemStore {
        fn store(&mut self, reader: &mut dyn Read) -> io::Result<Stored> {
            self.store_calls += 1;
            let mut out = Stored::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let id = ChunkId(*blake3::hash(&buf[..n]).as_bytes());
                self.chunks.insert(id, buf[..n].to_vec());
                out.chunks.push(id);
                out.bytes += n as u64;
            }
            Ok(out)
        }
    }

    impl ChunkSource for MemStore {
        fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, Failure> {
            self.chunks
                .get(id)
                .cloned()
                .ok_or_else(|| Failure::new(Code::VerifyFailed, format!("no chunk {id:?}")))
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("mkdir");
        }
        fs::write(path, bytes).expect("write");
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn paths(report: &ScanReport) -> Vec<&str> {
        report
            .tree
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect()
    }

    fn entry<'a>(report: &'a ScanReport, path: &str) -> &'a Entry {
        report
            .tree
            .entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no entry {path}"))
    }

    /// What must survive a round trip: everything but inode and ctime.
    fn portable(tree: &Tree) -> Vec<Entry> {
        tree.entries
            .iter()
            .map(|e| Entry {
                mode: if e.kind == EntryKind::Symlink {
                    0
                } else {
                    e.mode
                },
                ino: 0,
                ctime: 0,
                ctime_ns: 0,
                ..e.clone()
            })
            .collect()
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A folder with a bit of everything.
    fn sample(root: &Path) {
        write(&root.join("a.txt"), b"alpha");
        write(&root.join("docs/readme.md"), b"# readme\n");
        write(&root.join("docs/deep/er/file.bin"), &[0, 1, 2, 255]);
        write(&root.join("Überraschung 📦.txt"), "überraschung".as_bytes());
        write(
            &root.join("big.bin"),
            &pseudo_random(3 * 1024 * 1024 + 12345, 7),
        );
        write(&root.join("empty-file"), b"");
        fs::create_dir_all(root.join("empty/dir")).expect("mkdir");
        std::os::unix::fs::symlink("docs/readme.md", root.join("link-rel")).expect("symlink");
        std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling"))
            .expect("symlink");
        set_mode(&root.join("a.txt"), 0o640);
        set_mode(&root.join("docs/deep/er/file.bin"), 0o4755);
        set_mode(&root.join("docs/deep"), 0o750);
        set_mode(&root.join("empty/dir"), 0o700);
        filetime::set_file_mtime(
            root.join("a.txt"),
            FileTime::from_unix_time(1_600_000_000, 123_456_789),
        )
        .expect("mtime");
        filetime::set_file_mtime(
            root.join("empty/dir"),
            FileTime::from_unix_time(1_500_000_000, 5),
        )
        .expect("mtime");
        filetime::set_file_mtime(
            root.join("docs"),
            FileTime::from_unix_time(1_400_000_000, 999),
        )
        .expect("mtime");
        filetime::set_symlink_file_times(
            root.join("link-rel"),
            FileTime::from_unix_time(1_300_000_000, 1),
            FileTime::from_unix_time(1_300_000_000, 1),
        )
        .expect("mtime");
    }

    #[test]
    fn folder_round_trip_keeps_bytes_modes_mtimes_links_and_empty_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        sample(&src);
        let mut store = MemStore::default();
        let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(
            paths(&report),
            [
                "a.txt",
                "big.bin",
                "docs",
                "docs/deep",
                "docs/deep/er",
                "docs/deep/er/file.bin",
                "docs/readme.md",
                "empty",
                "empty/dir",
                "empty-file",
                "link-dangling",
                "link-rel",
                "Überraschung 📦.txt",
            ]
        );
        assert_eq!(report.files, 6);
        assert_eq!(report.files_reused, 0);
        assert_eq!(report.bytes_read, 5 + 9 + 4 + 13 + 3 * 1024 * 1024 + 12345);
        let big = entry(&report, "big.bin");
        assert!(
            big.chunks.len() > 40,
            "streamed in pieces: {}",
            big.chunks.len()
        );
        assert_eq!(entry(&report, "docs/deep/er/file.bin").mode, 0o4755);
        assert_eq!(entry(&report, "a.txt").mtime_ns, 123_456_789);
        assert_eq!(
            entry(&report, "link-rel").target.as_deref(),
            Some("docs/readme.md")
        );

        let preview = plan_restore(&report.tree, &tmp.path().join("out"), &[]).expect("plan");
        assert_eq!(preview.create.len(), report.tree.entries.len());
        assert!(preview.overwrite.is_empty() && preview.identical.is_empty());
        assert_eq!(preview.bytes_to_write, report.bytes_read);

        let out = tmp.path().join("out");
        let done = restore(&report.tree, &out, &[], false, &mut store).expect("restore");
        assert_eq!(done.files_written, 6);
        assert_eq!(done.bytes_written, report.bytes_read);
        assert_eq!(done.symlinks_written, 2);
        assert_eq!(done.dirs_created, 5);

        // Scanning the restored folder gives the same tree, chunk for chunk.
        let mut again = MemStore::default();
        let restored = backup_folder(&out, &[], false, None, &mut again).expect("rescan");
        assert_eq!(portable(&restored.tree), portable(&report.tree));
        assert_eq!(
            fs::read(out.join("big.bin")).expect("read"),
            fs::read(src.join("big.bin")).expect("read")
        );
        assert_eq!(
            fs::read_link(out.join("link-dangling")).expect("link"),
            Path::new("/nonexistent/target")
        );
        // No temporary files are left behind.
        assert!(
            !restored
                .tree
                .entries
                .iter()
                .any(|e| e.path.contains(".backplan-restore"))
        );

        // A second restore finds everything identical and needs no force.
        let preview = plan_restore(&report.tree, &out, &[]).expect("plan");
        assert!(
            preview.create.is_empty() && preview.overwrite.is_empty(),
            "{preview:?}"
        );
        assert_eq!(preview.bytes_to_write, 0);
        let done = restore(&report.tree, &out, &[], false, &mut store).expect("restore again");
        assert_eq!(done.files_written, 0);
    }

    #[test]
    fn excludes_follow_gitignore_rules() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for p in [
            "keep.txt",
            "x.tmp",
            "sub/y.tmp",
            "cache/a",
            "sub/cache/b",
            "top-only",
            "sub/top-only",
            "sub/keep.tmp",
        ] {
            write(&root.join(p), b"x");
        }
        write(&root.join("other/cache"), b"a file named cache, not a dir");
        let excludes: Vec<String> = ["*.tmp", "!sub/keep.tmp", "cache/", "/top-only"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let report =
            backup_folder(root, &excludes, false, None, &mut MemStore::default()).expect("backup");
        assert_eq!(
            paths(&report),
            [
                "keep.txt",
                "other",
                "other/cache",
                "sub",
                "sub/keep.tmp",
                "sub/top-only"
            ]
        );
        let bad = backup_folder(
            root,
            &["[z-a]".to_string()],
            false,
            None,
            &mut MemStore::default(),
        );
        assert_eq!(bad.expect_err("bad pattern").code, Code::InvalidValue);
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write(&root.join("one"), b"one");
        write(&root.join("two"), b"two");
        write(&root.join("d/three"), b"three");
        let mut store = MemStore::default();
        let first = backup_folder(root, &[], false, None, &mut store).expect("first");
        assert_eq!(store.store_calls, 3);

        let second =
            backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
        assert_eq!(store.store_calls, 3, "nothing re-read");
        assert_eq!(second.files, 3);
        assert_eq!(second.files_reused, 3);
        assert_eq!(second.bytes_read, 0);
        assert_eq!(second.tree, first.tree);

        // Same size, new content: mtime and ctime tell.
        write(&root.join("two"), b"TWO");
        let third = backup_folder(root, &[], false, Some(&second.tree), &mut store).expect("third");
        assert_eq!(store.store_calls, 4, "only the touched file is read");
        assert_eq!(third.files_reused, 2);
        assert_eq!(third.bytes_read, 3);
        assert_ne!(entry(&third, "two").chunks, entry(&second, "two").chunks);

        // A parent entry with the same path but another kind is no reason to reuse.
        let mut fake = third.tree.clone();
        for e in &mut fake.entries {
            e.kind = EntryKind::Symlink;
        }
        backup_folder(root, &[], false, Some(&fake), &mut store).expect("fourth");
        assert_eq!(store.store_calls, 7);
    }

    #[test]
    fn an_unchanged_file_keeps_its_extended_attributes_without_listing_them_again() {
        // (A changed attribute: `an_owner_or_xattr_change_alone_is_in_the_next_snapshot`.)
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let file = root.join("tagged");
        write(&file, b"tagged");
        if !try_xattr(&file, "user.backplan", b"first") {
            return;
        }
        let mut store = MemStore::default();
        let first = backup_folder(root, &[], false, None, &mut store).expect("first");
        let want = [Xattr {
            name: "user.backplan".into(),
            value: b"first".to_vec(),
        }];
        assert_eq!(entry(&first, "tagged").xattrs, want);

        let second =
            backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
        assert_eq!(second.files_reused, 1);
        assert_eq!(entry(&second, "tagged").xattrs, want);
        // They come from the parent entry, not from another listing.
        let mut marked = second.tree.clone();
        for e in &mut marked.entries {
            for x in &mut e.xattrs {
                x.value = b"from the parent".to_vec();
            }
        }
        let from_parent =
            backup_folder(root, &[], false, Some(&marked), &mut store).expect("marked");
        assert_eq!(
            entry(&from_parent, "tagged").xattrs[0].value,
            b"from the parent"
        );

        // A parent written before owners and attributes were recorded lends none:
        // they are listed.
        let mut old = second.tree.clone();
        for e in &mut old.entries {
            (e.uid, e.gid, e.xattrs) = (None, None, Vec::new());
        }
        let third = backup_folder(root, &[], false, Some(&old), &mut store).expect("third");
        assert_eq!(third.files_reused, 1);
        assert_eq!(entry(&third, "tagged").xattrs, want);
    }

    #[test]
    fn special_files_are_skipped_with_a_warning_and_names_that_are_not_utf8_are_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write(&root.join("normal"), b"n");
        let status = std::process::Command::new("mkfifo")
            .arg(root.join("pipe"))
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let bad = root.join(OsStr::from_bytes(b"bad\xffname"));
        write(&bad, b"b");
        let report =
            backup_folder(root, &[], false, None, &mut MemStore::default()).expect("backup");
        assert_eq!(paths(&report), ["bad\\xffname", "normal"]);
        let kept = entry(&report, "bad\\xffname");
        assert_eq!(kept.path_bytes(), b"bad\xffname");
        assert_eq!(kept.size, 1);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("pipe") && report.warnings[0].contains("fifo"));
    }

    #[test]
    fn unreadable_files_warn_or_fail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write(&root.join("secret"), b"s");
        write(&root.join("fine"), b"f");
        set_mode(&root.join("secret"), 0o000);
        if File::open(root.join("secret")).is_ok() {
            // Running as root: permissions do not stop reading.
            return;
        }
        let report =
            backup_folder(root, &[], false, None, &mut MemStore::default()).expect("backup");
        assert_eq!(paths(&report), ["fine"]);
        assert_eq!(report.unreadable, 1);
        let err =
            backup_folder(root, &[], true, None, &mut MemStore::default()).expect_err("fatal");
        assert_eq!(err.code, Code::Io);
        assert!(err.message.contains("secret"));
    }

    /// A sink that shrinks the file while it reads it.
    struct Shrinking {
        path: PathBuf,
        inner: MemStore,
    }

    impl ChunkSink for Shrinking {
        fn store(&mut self, reader: &mut dyn Read) -> io::Result<Stored> {
            let mut first = [0u8; 10];
            reader.read_exact(&mut first)?;
            fs::OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(20)?;
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            let mut all = first.to_vec();
            all.extend_from_slice(&rest);
            self.inner.store(&mut all.as_slice())
        }
    }

    #[test]
    fn a_file_that_shrinks_while_read_records_what_was_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("log");
        write(&path, &[b'x'; 1000]);
        let mut sink = Shrinking {
            path: path.clone(),
            inner: MemStore::default(),
        };
        let report = backup_folder(tmp.path(), &[], false, None, &mut sink).expect("backup");
        assert_eq!(entry(&report, "log").size, 20);
        assert_eq!(report.bytes_read, 20);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("changed while it was read"))
        );
    }

    #[test]
    fn a_failing_sink_is_fatal_even_when_unreadable_files_are_not() {
        struct Broken;
        impl ChunkSink for Broken {
            fn store(&mut self, _: &mut dyn Read) -> io::Result<Stored> {
                Err(io::Error::other("repository full"))
            }
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("f"), b"f");
        let err = backup_folder(tmp.path(), &[], false, None, &mut Broken).expect_err("fatal");
        assert!(err.message.contains("repository full"), "{err}");
    }

    #[test]
    fn restore_refuses_to_overwrite_changed_files_without_force() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        write(&src.join("conf/app.env"), b"SECRET=original");
        write(&src.join("conf/other"), b"other");
        let mut store = MemStore::default();
        let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
        let out = tmp.path().join("out");
        restore(&report.tree, &out, &[], false, &mut store).expect("restore");

        write(&out.join("conf/app.env"), b"SECRET=changed-locally");
        let preview = plan_restore(&report.tree, &out, &[]).expect("plan");
        assert_eq!(preview.overwrite, ["conf/app.env"]);
        assert_eq!(preview.identical, ["conf", "conf/other"]);
        assert_eq!(preview.bytes_to_write, 15);

        let err = restore(&report.tree, &out, &[], false, &mut store).expect_err("refused");
        assert!(err.message.contains("conf/app.env"), "{err}");
        assert!(
            !err.message.contains("SECRET"),
            "never prints contents: {err}"
        );
        assert_eq!(
            fs::read(out.join("conf/app.env")).expect("read"),
            b"SECRET=changed-locally"
        );

        let done = restore(&report.tree, &out, &[], true, &mut store).expect("forced");
        assert_eq!(done.files_written, 1);
        assert_eq!(done.unchanged, 2);
        assert_eq!(
            fs::read(out.join("conf/app.env")).expect("read"),
            b"SECRET=original"
        );
    }

    #[test]
    fn restore_by_glob_selects_entries_and_their_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        write(&src.join("uploads/2024/a.jpg"), b"a");
        write(&src.join("uploads/2024/b.png"), b"b");
        write(&src.join("uploads/2025/c.jpg"), b"c");
        write(&src.join("notes.txt"), b"n");
        set_mode(&src.join("uploads/2024"), 0o711);
        let mut store = MemStore::default();
        let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");

        let out = tmp.path().join("out");
        let include = vec!["*.jpg".to_string()];
        let preview = plan_restore(&report.tree, &out, &include).expect("plan");
        assert_eq!(
            preview.create,
            [
                "uploads",
                "uploads/2024",
                "uploads/2024/a.jpg",
                "uploads/2025",
                "uploads/2025/c.jpg"
            ]
        );
        restore(&report.tree, &out, &include, false, &mut store).expect("restore");
        assert!(out.join("uploads/2025/c.jpg").exists());
        assert!(!out.join("uploads/2024/b.png").exists());
        assert!(!out.join("notes.txt").exists());
        let mode = fs::metadata(out.join("uploads/2024")).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o711, "created parents get their recorded mode");

        let out2 = tmp.path().join("out2");
        let include = vec!["uploads/2024".to_string()];
        restore(&report.tree, &out2, &include, false, &mut store).expect("restore");
        assert!(out2.join("uploads/2024/b.png").exists());
        assert!(!out2.join("uploads/2025").exists());

        let err = plan_restore(&report.tree, &out, &["*.gif".to_string()]).expect_err("no match");
        assert!(err.message.contains("*.gif"), "{err}");
    }

    fn file_entry(path: &str, store: &mut MemStore, bytes: &[u8]) -> Entry {
        let stored = store.store(&mut &bytes[..]).expect("store");
        Entry {
            path: path.to_string(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime: 1_700_000_000,
            mtime_ns: 0,
            size: stored.bytes,
            ino: 0,
            ctime: 0,
            ctime_ns: 0,
            target: None,
            chunks: stored.chunks,
            ..Entry::default()
        }
    }

    fn listing(dir: &Path) -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .expect("list")
            .map(|d| d.expect("entry").path())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unsafe_entry_paths_fail_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        let before = listing(tmp.path());
        for bad in [
            "../escape",
            "/etc/passwd",
            "",
            "a/../../escape",
            "a/./b",
            "a//b",
            "a/",
            "..\\..\\escape",
            "a/..\\b",
            "\\etc\\passwd",
            "nul\0byte",
        ] {
            let tree = Tree {
                entries: vec![
                    file_entry("fine.txt", &mut store, b"fine"),
                    file_entry(bad, &mut store, b"evil"),
                ],
                root: None,
            };
            let target = tmp.path().join("target");
            let err = plan_restore(&tree, &target, &[]).expect_err(bad);
            assert_eq!(err.code, Code::RestoreRefused, "{bad:?}: {err}");
            let err = restore(&tree, &target, &[], true, &mut store).expect_err(bad);
            assert_eq!(err.code, Code::RestoreRefused);
            assert!(err.message.contains(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(
                !target.exists(),
                "{bad:?}: nothing written, not even the target"
            );
            assert_eq!(listing(tmp.path()), before);
        }
        assert!(!fs::read_to_string("/etc/passwd").is_ok_and(|s| s.contains("evil")));

        // The bytes are what is checked, not the display form beside them.
        for bad in [
            &b"../\xffescape"[..],
            b"/tmp/\xfe",
            b"a/../../\xfd",
            b"nul\0\xfc",
            b"..",
        ] {
            let mut evil = file_entry("innocent.txt", &mut store, b"evil");
            evil.path_bytes = Some(bad.to_vec());
            let tree = Tree {
                entries: vec![file_entry("fine.txt", &mut store, b"fine"), evil],
                root: None,
            };
            let target = tmp.path().join("target");
            let err = restore(&tree, &target, &[], true, &mut store).expect_err("refused");
            assert_eq!(err.code, Code::RestoreRefused, "{err}");
            assert!(
                err.message.contains(&format!("{:?}", escape_bytes(bad))),
                "{err}"
            );
            assert!(!target.exists());
            assert_eq!(listing(tmp.path()), before);
        }
        // A symlink whose target bytes hold a NUL is refused too.
        let mut link = file_entry("l", &mut store, b"");
        link.kind = EntryKind::Symlink;
        link.chunks.clear();
        link.target = Some("fine".into());
        link.target_bytes = Some(b"fi\0ne".to_vec());
        let tree = Tree {
            entries: vec![link],
            root: None,
        };
        let err =
            restore(&tree, &tmp.path().join("target"), &[], true, &mut store).expect_err("refused");
        assert_eq!(err.code, Code::RestoreRefused, "{err}");
    }

    #[test]
    fn entries_under_a_symlink_entry_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        let mut store = MemStore::default();
        let mut link = file_entry("link", &mut store, b"");
        link.kind = EntryKind::Symlink;
        link.target = Some(outside.display().to_string());
        link.chunks.clear();
        let tree = Tree {
            entries: vec![link, file_entry("link/planted", &mut store, b"evil")],
            root: None,
        };
        let target = tmp.path().join("target");
        let err = restore(&tree, &target, &[], true, &mut store).expect_err("refused");
        assert!(err.message.contains("link/planted"), "{err}");
        assert!(!target.exists());
        assert!(listing(&outside).is_empty());
    }

    #[test]
    fn symlinks_inside_the_target_are_never_written_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        let target = tmp.path().join("target");
        fs::create_dir(&target).expect("mkdir");
        std::os::unix::fs::symlink(&outside, target.join("dir")).expect("symlink");
        let mut store = MemStore::default();

        // The tree has no entry for `dir`: the link is in the way.
        let tree = Tree {
            entries: vec![file_entry("dir/file.txt", &mut store, b"data")],
            root: None,
        };
        let err = plan_restore(&tree, &target, &[]).expect_err("refused");
        assert!(err.message.contains("symlink"), "{err}");
        let err = restore(&tree, &target, &[], true, &mut store).expect_err("refused");
        assert!(err.message.contains("symlink"), "{err}");
        assert!(listing(&outside).is_empty());

        // With a directory entry for `dir`, the link is an overwrite: refused without
        // force, and with force the link itself is replaced, not followed.
        let mut dir = file_entry("dir", &mut store, b"");
        dir.kind = EntryKind::Dir;
        dir.mode = 0o755;
        dir.chunks.clear();
        let tree = Tree {
            entries: vec![dir, file_entry("dir/file.txt", &mut store, b"data")],
            root: None,
        };
        let preview = plan_restore(&tree, &target, &[]).expect("plan");
        assert_eq!(preview.overwrite, ["dir"]);
        assert_eq!(preview.create, ["dir/file.txt"]);
        restore(&tree, &target, &[], false, &mut store).expect_err("needs force");
        restore(&tree, &target, &[], true, &mut store).expect("forced");
        assert!(listing(&outside).is_empty());
        assert!(
            fs::symlink_metadata(target.join("dir"))
                .expect("stat")
                .is_dir()
        );
        assert_eq!(
            fs::read(target.join("dir/file.txt")).expect("read"),
            b"data"
        );

        // A symlink entry replaces an existing symlink only with force.
        std::os::unix::fs::symlink("old-target", target.join("l")).expect("symlink");
        let mut l = file_entry("l", &mut store, b"");
        l.kind = EntryKind::Symlink;
        l.target = Some("new-target".into());
        l.chunks.clear();
        let tree = Tree {
            entries: vec![l],
            root: None,
        };
        restore(&tree, &target, &[], false, &mut store).expect_err("needs force");
        assert_eq!(
            fs::read_link(target.join("l")).expect("link"),
            Path::new("old-target")
        );
        restore(&tree, &target, &[], true, &mut store).expect("forced");
        assert_eq!(
            fs::read_link(target.join("l")).expect("link"),
            Path::new("new-target")
        );
    }

    #[test]
    fn a_file_whose_chunks_do_not_add_up_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        let mut short = file_entry("short.bin", &mut store, b"twelve bytes");
        short.size = 100;
        let target = tmp.path().join("t");
        let err = restore(
            &Tree {
                entries: vec![short],
                root: None,
            },
            &target,
            &[],
            false,
            &mut store,
        )
        .expect_err("short");
        assert!(err.message.contains("short.bin"), "{err}");
        assert!(listing(&target).is_empty(), "the temporary file is removed");

        let mut long = file_entry("long.bin", &mut store, b"twelve bytes");
        long.size = 5;
        let err = restore(
            &Tree {
                entries: vec![long],
                root: None,
            },
            &target,
            &[],
            false,
            &mut store,
        )
        .expect_err("long");
        assert!(err.message.contains("long.bin"), "{err}");

        let mut missing = file_entry("missing.bin", &mut store, b"x");
        missing.chunks = vec![ChunkId([9; 32])];
        let err = restore(
            &Tree {
                entries: vec![missing],
                root: None,
            },
            &target,
            &[],
            false,
            &mut store,
        )
        .expect_err("missing");
        assert!(err.message.contains("missing.bin"), "{err}");
        assert!(listing(&target).is_empty());
    }

    #[test]
    fn config_paths_round_trip_into_a_scratch_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let app = tmp.path().join("srv/app");
        write(&app.join(".env"), b"DATABASE_URL=postgres://x");
        write(&app.join("docker-compose.yml"), b"services: {}\n");
        write(&app.join("tls/key.pem"), b"-----BEGIN KEY-----");
        write(&app.join("tls/cert.pem"), b"-----BEGIN CERT-----");
        set_mode(&app.join(".env"), 0o600);
        set_mode(&app.join("tls"), 0o700);
        set_mode(&app, 0o750);
        let paths = vec![app.join(".env"), app.join("tls"), app.join("tls/key.pem")];
        let mut store = MemStore::default();
        let report = backup_paths(&paths, None, &mut store).expect("backup");
        let rel = |p: &Path| {
            p.to_str()
                .expect("utf-8")
                .trim_start_matches('/')
                .to_string()
        };
        let app_rel = rel(&app);
        let got = paths_of(&report);
        assert!(got.contains(&format!("{app_rel}/.env")));
        assert!(got.contains(&format!("{app_rel}/tls/cert.pem")));
        assert!(!got.iter().any(|p| p.ends_with("docker-compose.yml")));
        // Every directory above is an entry, before what it holds; no duplicates.
        for (i, p) in got.iter().enumerate() {
            for above in ancestors(p.as_bytes()) {
                let at = got
                    .iter()
                    .position(|q| q.as_bytes() == above)
                    .unwrap_or_else(|| panic!("{} missing", escape_bytes(above)));
                assert!(at < i);
            }
        }
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len());
        assert_eq!(report.files, 3);
        assert_eq!(entry(&report, &app_rel).mode, 0o750);

        let scratch = tmp.path().join("scratch");
        restore(&report.tree, &scratch, &[], false, &mut store).expect("restore");
        let back = scratch.join(&app_rel);
        assert_eq!(
            fs::read(back.join(".env")).expect("read"),
            b"DATABASE_URL=postgres://x"
        );
        assert_eq!(
            fs::read(back.join("tls/key.pem")).expect("read"),
            b"-----BEGIN KEY-----"
        );
        assert_eq!(
            fs::metadata(back.join(".env")).expect("stat").mode() & 0o7777,
            0o600
        );
        assert_eq!(
            fs::metadata(back.join("tls")).expect("stat").mode() & 0o7777,
            0o700
        );
        assert_eq!(fs::metadata(&back).expect("stat").mode() & 0o7777, 0o750);

        // Incremental like the files source.
        let calls = store.store_calls;
        let again = backup_paths(&paths, Some(&report.tree), &mut store).expect("again");
        assert_eq!(store.store_calls, calls);
        assert_eq!(again.files_reused, 3);

        // A missing path is an error, and so is a relative one.
        let err = backup_paths(&[app.join("missing.env")], None, &mut store).expect_err("missing");
        assert!(err.message.contains("missing.env") && err.message.contains("does not exist"));
        let err = backup_paths(&[PathBuf::from("relative/.env")], None, &mut store)
            .expect_err("relative");
        assert_eq!(err.code, Code::InvalidValue);
    }

    #[test]
    fn kind_changes_need_force_and_never_remove_a_full_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("t");
        write(&target.join("x/keep-me"), b"precious");
        write(
            &target.join("d"),
            b"a file where the snapshot has a directory",
        );
        let mut store = MemStore::default();
        let mut d = file_entry("d", &mut store, b"");
        d.kind = EntryKind::Dir;
        d.chunks.clear();
        let tree = Tree {
            entries: vec![
                d,
                file_entry("d/inner", &mut store, b"inner"),
                file_entry("x", &mut store, b"a file where a full directory is"),
            ],
            root: None,
        };
        let preview = plan_restore(&tree, &target, &[]).expect("plan");
        assert_eq!(preview.overwrite, ["d", "x"]);
        let err = restore(&tree, &target, &[], true, &mut store).expect_err("blocked");
        assert!(err.message.contains('x'), "{err}");
        assert_eq!(
            fs::read(target.join("x/keep-me")).expect("read"),
            b"precious"
        );
        assert!(fs::metadata(target.join("d")).expect("stat").is_file());

        let tree = Tree {
            entries: tree.entries[..2].to_vec(),
            root: None,
        };
        restore(&tree, &target, &[], false, &mut store).expect_err("needs force");
        restore(&tree, &target, &[], true, &mut store).expect("forced");
        assert_eq!(fs::read(target.join("d/inner")).expect("read"), b"inner");
    }

    fn paths_of(report: &ScanReport) -> Vec<String> {
        report.tree.entries.iter().map(|e| e.path.clone()).collect()
    }

    fn is_root() -> bool {
        uzers::get_effective_uid() == 0
    }

    /// Sets an extended attribute; false, with the reason printed, where the
    /// filesystem refuses it (the assertions that need it are then skipped loudly).
    fn try_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
        match xattr::set(path, name, value) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "SKIPPED the {name} assertions: {} refuses it: {e}",
                    path.display()
                );
                false
            }
        }
    }

    /// `setfacl ARGS PATH`; false, with the reason printed, where it cannot run.
    fn try_setfacl(args: &[&str], path: &Path) -> bool {
        match std::process::Command::new("setfacl")
            .args(args)
            .arg(path)
            .output()
        {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                eprintln!(
                    "SKIPPED the ACL assertions: setfacl failed on {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                false
            }
            Err(e) => {
                eprintln!("SKIPPED the ACL assertions: setfacl cannot run ({e}); install `acl`");
                false
            }
        }
    }

    /// Whether two files hold the same bytes, read 1 MiB at a time.
    fn same_bytes(a: &Path, b: &Path) -> bool {
        let (mut a, mut b) = (File::open(a).expect("open"), File::open(b).expect("open"));
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = a.read(&mut x).expect("read");
            if n == 0 {
                return b.read(&mut y).expect("read") == 0;
            }
            if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
                return false;
            }
        }
    }

    fn allocated(path: &Path) -> u64 {
        fs::metadata(path).expect("meta").blocks() * 512
    }

    const SPARSE_SIZE: u64 = 256 * 1024 * 1024;

    #[test]
    fn edge_case_tree_round_trips_names_owners_links_holes_xattrs_acls_and_mtimes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        // Names that are not UTF-8: a file, a directory and what is in it, a symlink
        // whose target is not UTF-8 either.
        write(&src.join(OsStr::from_bytes(b"bad\xff.txt")), b"not utf-8");
        write(
            &src.join(OsStr::from_bytes(b"dir\xfe/inner\xfd")),
            b"inside a bad dir",
        );
        std::os::unix::fs::symlink(
            OsStr::from_bytes(b"target\xfc"),
            src.join(OsStr::from_bytes(b"link\xfb")),
        )
        .expect("symlink");
        // A hard-link group of three, across directories.
        write(&src.join("h1"), b"one inode, three names");
        fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
        fs::hard_link(src.join("h1"), src.join("sub/h2")).expect("link");
        fs::hard_link(src.join("h1"), src.join("sub/deeper/h3")).expect("link");
        // A 256 MiB file with 4 KiB of data in its middle.
        let sparse = src.join("sparse.img");
        let f = File::create(&sparse).expect("create");
        f.set_len(SPARSE_SIZE).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 4096], 100 * 1024 * 1024)
            .expect("write");
        drop(f);
        assert!(allocated(&sparse) < 1024 * 1024, "the source is sparse");
        // Owners: by number, and by a name this machine knows.
        write(&src.join("owned"), b"owned by 4242:4243");
        write(&src.join("daemons"), b"owned by daemon");
        let daemon = uzers::get_user_by_name("daemon").map(|u| (u.uid(), u.primary_group_id()));
        if is_root() {
            std::os::unix::fs::chown(src.join("owned"), Some(4242), Some(4243)).expect("chown");
            let (u, g) = daemon.expect("a daemon user");
            std::os::unix::fs::chown(src.join("daemons"), Some(u), Some(g)).expect("chown");
            std::os::unix::fs::lchown(
                src.join(OsStr::from_bytes(b"link\xfb")),
                Some(4242),
                Some(4243),
            )
            .expect("lchown");
            set_mode(&src.join("owned"), 0o6755);
        } else {
            eprintln!("SKIPPED the owner assertions: not running as root");
        }
        // Extended attributes on a file and a directory; POSIX ACLs.
        let xattrs = try_xattr(&src.join("h1"), "user.note", b"\x00binary\xff")
            && try_xattr(&src.join("sub"), "user.dir", b"on a directory");
        write(&src.join("acl.txt"), b"acl");
        let acls = try_setfacl(&["-m", "u:4242:r--"], &src.join("acl.txt"))
            && try_setfacl(&["-d", "-m", "u:4242:rwx"], &src.join("sub"));
        // Directory mtimes, the folder's own too, set last.
        filetime::set_file_mtime(
            src.join("sub/deeper"),
            FileTime::from_unix_time(1_300_000_000, 3),
        )
        .expect("mtime");
        filetime::set_file_mtime(src.join("sub"), FileTime::from_unix_time(1_400_000_000, 7))
            .expect("mtime");
        set_mode(&src, 0o751);
        filetime::set_file_mtime(&src, FileTime::from_unix_time(1_500_000_000, 9)).expect("mtime");

        let mut store = MemStore::default();
        let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let bad = entry(&report, "bad\\xff.txt");
        assert_eq!(bad.path_bytes(), b"bad\xff.txt");
        let link = entry(&report, "link\\xfb");
        assert_eq!(link.target_bytes(), Some(&b"target\xfc"[..]));
        assert!(entry(&report, "sparse.img").sparse);
        let group = entry(&report, "h1").link.expect("a link group");
        for member in ["sub/h2", "sub/deeper/h3"] {
            assert_eq!(entry(&report, member).link, Some(group));
            assert_eq!(entry(&report, member).chunks, entry(&report, "h1").chunks);
        }
        // The group's content is read once.
        assert_eq!(
            report.bytes_read,
            [9, 16, 22, 18, 15, 3].iter().sum::<u64>() + SPARSE_SIZE
        );

        let out = tmp.path().join("out");
        let done = restore(&report.tree, &out, &[], false, &mut store).expect("restore");
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);
        assert_eq!(done.links_written, 2);

        // Scanning the restored folder gives the same tree, chunk for chunk, owners,
        // attributes, link groups and sparseness included, and the same folder.
        let restored =
            backup_folder(&out, &[], false, None, &mut MemStore::default()).expect("rescan");
        assert_eq!(portable(&restored.tree), portable(&report.tree));
        let root_of = |t: &Tree| {
            let r = t.root.clone().expect("root");
            Entry {
                ino: 0,
                ctime: 0,
                ctime_ns: 0,
                ..r
            }
        };
        assert_eq!(root_of(&restored.tree), root_of(&report.tree));
        assert_eq!(root_of(&restored.tree).mtime, 1_500_000_000);
        assert_eq!(root_of(&restored.tree).mode, 0o751);
        assert_eq!(entry(&restored, "sub").mtime, 1_400_000_000);
        assert_eq!(entry(&restored, "sub/deeper").mtime, 1_300_000_000);

        // What is checked directly, not only through the rescan.
        assert_eq!(
            fs::read(out.join(OsStr::from_bytes(b"dir\xfe/inner\xfd"))).expect("read"),
            b"inside a bad dir"
        );
        assert_eq!(
            fs::read_link(out.join(OsStr::from_bytes(b"link\xfb"))).expect("link"),
            Path::new(OsStr::from_bytes(b"target\xfc"))
        );
        let ino = |p: &str| fs::metadata(out.join(p)).expect("meta").ino();
        assert_eq!(ino("h1"), ino("sub/h2"));
        assert_eq!(ino("h1"), ino("sub/deeper/h3"));
        let restored_sparse = out.join("sparse.img");
        assert_eq!(
            fs::metadata(&restored_sparse).expect("meta").len(),
            SPARSE_SIZE
        );
        eprintln!(
            "a {SPARSE_SIZE}-byte sparse file restored in {} allocated bytes",
            allocated(&restored_sparse)
        );
        assert!(allocated(&restored_sparse) < 1024 * 1024);
        assert!(
            same_bytes(&restored_sparse, &sparse),
            "the sparse file's bytes differ"
        );
        if is_root() {
            let owner = |p: &str| {
                let m =
                    fs::symlink_metadata(out.join(OsStr::from_bytes(p.as_bytes()))).expect("meta");
                (m.uid(), m.gid())
            };
            assert_eq!(owner("owned"), (4242, 4243));
            assert_eq!(Some(owner("daemons")), daemon);
            let l = fs::symlink_metadata(out.join(OsStr::from_bytes(b"link\xfb"))).expect("meta");
            assert_eq!((l.uid(), l.gid()), (4242, 4243));
            // The mode is set after the owner: setuid and setgid survive.
            assert_eq!(
                fs::metadata(out.join("owned")).expect("meta").mode() & 0o7777,
                0o6755
            );
        }
        if xattrs {
            assert_eq!(
                xattr::get(out.join("sub/h2"), "user.note").expect("get"),
                Some(b"\x00binary\xff".to_vec())
            );
            assert_eq!(
                xattr::get(out.join("sub"), "user.dir").expect("get"),
                Some(b"on a directory".to_vec())
            );
        }
        if acls {
            let getfacl = |p: &Path| {
                let out = std::process::Command::new("getfacl")
                    .args(["--omit-header", "--absolute-names"])
                    .arg(p)
                    .output()
                    .expect("getfacl");
                String::from_utf8(out.stdout).expect("utf-8")
            };
            let acl = getfacl(&out.join("acl.txt"));
            assert!(acl.contains("user:4242:r--"), "{acl}");
            assert_eq!(acl, getfacl(&src.join("acl.txt")));
            let dacl = getfacl(&out.join("sub"));
            assert!(dacl.contains("default:user:4242:rwx"), "{dacl}");
            assert_eq!(dacl, getfacl(&src.join("sub")));
        }
        // Restoring again finds everything in place.
        let again = restore(&report.tree, &out, &[], false, &mut store).expect("again");
        assert_eq!((again.files_written, again.links_written), (0, 0));
    }

    #[test]
    fn a_partly_selected_hard_link_group_is_written_once_and_linked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        write(&src.join("a/one"), b"shared content");
        fs::create_dir_all(src.join("b")).expect("mkdir");
        fs::create_dir_all(src.join("c")).expect("mkdir");
        fs::hard_link(src.join("a/one"), src.join("b/two")).expect("link");
        fs::hard_link(src.join("a/one"), src.join("c/three")).expect("link");
        let mut store = MemStore::default();
        let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
        let out = tmp.path().join("out");
        let include = ["b/two".to_string(), "c".to_string()];
        let preview = plan_restore(&report.tree, &out, &include).expect("plan");
        assert_eq!(preview.bytes_to_write, 14);
        let done = restore(&report.tree, &out, &include, false, &mut store).expect("restore");
        assert_eq!((done.files_written, done.links_written), (1, 1));
        assert!(!out.join("a").exists());
        assert_eq!(
            fs::read(out.join("b/two")).expect("read"),
            b"shared content"
        );
        assert_eq!(
            fs::read(out.join("c/three")).expect("read"),
            b"shared content"
        );
        let ino = |p: &str| fs::metadata(out.join(p)).expect("meta").ino();
        assert_eq!(ino("b/two"), ino("c/three"));
        assert_eq!(fs::metadata(out.join("c/three")).expect("meta").nlink(), 2);
    }

    #[test]
    fn owners_are_set_by_name_where_known_unless_numeric_and_only_by_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        // As a snapshot from a machine where `daemon` has another number.
        let mut f = file_entry("f", &mut store, b"data");
        f.uid = Some(4242);
        f.gid = Some(4243);
        f.user = Some("daemon".into());
        f.group = Some("no-such-group-here".into());
        let tree = Tree {
            entries: vec![f],
            root: None,
        };
        let owner = |dir: &Path| {
            let m = fs::metadata(dir.join("f")).expect("meta");
            (m.uid(), m.gid())
        };
        let by_name = tmp.path().join("by-name");
        restore(&tree, &by_name, &[], false, &mut store).expect("restore");
        let numeric = tmp.path().join("numeric");
        let options = RestoreOptions {
            numeric_owner: true,
            ..RestoreOptions::default()
        };
        restore_with(&tree, &numeric, &options, &mut store).expect("restore");
        if !is_root() {
            eprintln!("SKIPPED the owner assertions: not running as root (owners are left)");
            let me = (uzers::get_effective_uid(), uzers::get_effective_gid());
            assert_eq!(owner(&by_name), me);
            return;
        }
        let daemon = uzers::get_user_by_name("daemon")
            .expect("a daemon user")
            .uid();
        assert_ne!(daemon, 4242);
        // The user by name; the group by number, as its name is unknown here.
        assert_eq!(owner(&by_name), (daemon, 4243));
        assert_eq!(owner(&numeric), (4242, 4243));
    }

    #[test]
    fn an_owner_or_xattr_change_alone_is_in_the_next_snapshot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write(&root.join("f"), b"content");
        let mut store = MemStore::default();
        let first = backup_folder(root, &[], false, None, &mut store).expect("first");
        let xattrs = try_xattr(&root.join("f"), "user.tag", b"v2");
        if is_root() {
            std::os::unix::fs::chown(root.join("f"), Some(4242), Some(4243)).expect("chown");
        } else {
            eprintln!("SKIPPED the owner assertion: not running as root");
        }
        let second =
            backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
        let (old, new) = (entry(&first, "f"), entry(&second, "f"));
        // The ctime moved, so the file is read again; either way the new metadata
        // is what the snapshot holds.
        if xattrs || is_root() {
            assert_ne!((old.ctime, old.ctime_ns), (new.ctime, new.ctime_ns));
            assert_eq!(second.files_reused, 0);
        }
        if is_root() {
            assert_eq!((new.uid, new.gid), (Some(4242), Some(4243)));
        }
        if xattrs {
            assert_eq!(
                new.xattrs,
                [Xattr {
                    name: "user.tag".into(),
                    value: b"v2".to_vec()
                }]
            );
        }
    }

    #[test]
    fn not_as_root_owners_are_left_to_the_restoring_user_and_modes_are_still_set() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        let mut f = file_entry("f", &mut store, b"data");
        f.uid = Some(4242);
        f.gid = Some(4243);
        f.user = Some("daemon".into());
        f.mode = 0o640;
        let tree = Tree {
            entries: vec![f],
            root: None,
        };
        let out = tmp.path().join("out");
        let done = restore_as(&tree, &out, &RestoreOptions::default(), &mut store, false)
            .expect("restore");
        assert!(done.warnings.is_empty(), "silently: {:?}", done.warnings);
        let m = fs::metadata(out.join("f")).expect("meta");
        assert_eq!(
            (m.uid(), m.gid()),
            (uzers::get_effective_uid(), uzers::get_effective_gid())
        );
        assert_eq!(m.mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_restore_as_root_puts_the_owner_of_an_identical_file_right_and_keeps_its_setuid_bit() {
        if !is_root() {
            eprintln!("SKIPPED: owners are only set by root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        let mut f = file_entry("f", &mut store, b"data");
        f.uid = Some(4242);
        f.gid = Some(4243);
        f.mode = 0o4755;
        let tree = Tree {
            entries: vec![f],
            root: None,
        };
        let out = tmp.path().join("out");
        restore(&tree, &out, &[], false, &mut store).expect("restore");
        std::os::unix::fs::chown(out.join("f"), Some(0), Some(0)).expect("chown");
        let again = restore(&tree, &out, &[], false, &mut store).expect("again");
        assert_eq!((again.files_written, again.unchanged), (0, 1));
        let m = fs::metadata(out.join("f")).expect("meta");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4243, 0o4755));
    }

    #[test]
    fn attributes_the_target_refuses_are_warnings_and_the_restore_goes_on() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut store = MemStore::default();
        // No filesystem knows the namespace `bogus.`; Linux refuses `user.*` on a
        // symlink.
        let mut f = file_entry("f", &mut store, b"data");
        f.xattrs = vec![Xattr {
            name: "bogus.name".into(),
            value: b"v".to_vec(),
        }];
        let mut link = file_entry("l", &mut store, b"");
        link.kind = EntryKind::Symlink;
        link.chunks.clear();
        link.target = Some("f".into());
        link.xattrs = vec![Xattr {
            name: "user.on-a-link".into(),
            value: b"v".to_vec(),
        }];
        let tree = Tree {
            entries: vec![f, link],
            root: None,
        };
        let out = tmp.path().join("out");
        let done = restore(&tree, &out, &[], false, &mut store).expect("a warning, not a failure");
        assert_eq!((done.files_written, done.symlinks_written), (1, 1));
        assert_eq!(fs::read(out.join("f")).expect("read"), b"data");
        assert_eq!(done.warnings.len(), 2, "{:?}", done.warnings);
        assert!(
            done.warnings
                .iter()
                .any(|w| w.contains("l") && w.contains("user.on-a-link")),
            "{:?}",
            done.warnings
        );
        assert!(
            done.warnings
                .iter()
                .any(|w| w.contains("does not support") && w.contains("bogus.name")),
            "{:?}",
            done.warnings
        );
    }

    #[test]
    fn a_folder_given_as_a_symlink_keeps_and_gets_the_metadata_of_the_folder_it_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        write(&real.join("f"), b"f");
        let xattrs = try_xattr(&real, "user.root", b"of the folder");
        set_mode(&real, 0o711);
        filetime::set_file_mtime(&real, FileTime::from_unix_time(1_234_567_890, 1)).expect("mtime");
        std::os::unix::fs::symlink(&real, tmp.path().join("src")).expect("symlink");
        let mut store = MemStore::default();
        let report =
            backup_folder(&tmp.path().join("src"), &[], false, None, &mut store).expect("backup");
        let root = report.tree.root.clone().expect("root");
        assert_eq!((root.mode, root.mtime), (0o711, 1_234_567_890));

        let out_real = tmp.path().join("out-real");
        fs::create_dir(&out_real).expect("mkdir");
        let out = tmp.path().join("out");
        std::os::unix::fs::symlink(&out_real, &out).expect("symlink");
        restore(&report.tree, &out, &[], false, &mut store).expect("restore");
        assert!(
            fs::symlink_metadata(&out)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        let m = fs::metadata(&out_real).expect("meta");
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o711, 1_234_567_890));
        assert_eq!(fs::read(out_real.join("f")).expect("read"), b"f");
        if xattrs {
            assert_eq!(
                root.xattrs,
                [Xattr {
                    name: "user.root".into(),
                    value: b"of the folder".to_vec()
                }]
            );
            assert_eq!(
                xattr::get(&out_real, "user.root").expect("get"),
                Some(b"of the folder".to_vec())
            );
        }
    }
}
