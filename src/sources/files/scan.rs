//! Backup: scanning a folder, or named paths, into a tree whose file contents go
//! through a sink.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::{ScanError, bytes_path, shown, unsupported};
use crate::crypto::keys::ChunkId;
use crate::pipeline::ChunkSink;
use crate::repo::format::{Entry, EntryKind, Tree, Xattr, entry_order, escape_bytes, path_order};
use crate::repo::tree::{Entries, PackedTree, TreeWriter};
use crate::sources::ScanReport;

/// Backs up the folder `root` (the `files` source). `exclude` holds gitignore-style
/// patterns relative to `root`. An unreadable file or directory is a warning, or an
/// error when `fail_on_unreadable`; an unreadable `root` is always an error.
pub fn backup_folder(
    root: &Path,
    exclude: &[String],
    fail_on_unreadable: bool,
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, ScanError> {
    backup_folder_with(root, exclude, fail_on_unreadable, parent, sink, false)
}

/// [`backup_folder`], or with `measure` its walk alone ([`measure_folder`]).
fn backup_folder_with(
    root: &Path,
    exclude: &[String],
    fail_on_unreadable: bool,
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
    measure: bool,
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
    // The walk goes in path order: its entries are written as they are found, and
    // the parent's are read beside it.
    let (out, parent) = if measure {
        (Out::Counted, Parent::None)
    } else {
        (
            Out::Written(TreeWriter::new().map_err(tree_error)?),
            Parent::beside(parent),
        )
    };
    let mut scan = Scanner::new(parent, out, fail_on_unreadable, Some(excludes));
    scan.measure = measure;
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
    scan.finish(Some(root_entry))
}

/// Backs up named files and folders (the `config` source). Each path is absolute;
/// its entry path is the absolute path without the leading `/`, and every directory
/// above it is recorded as a directory entry too. A missing path is an error, and so
/// is anything unreadable: configuration must be complete.
pub fn backup_paths(
    paths: &[PathBuf],
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
) -> Result<ScanReport, ScanError> {
    backup_paths_with(paths, parent, sink, false)
}

/// [`backup_paths`], or with `measure` its walk alone ([`measure_paths`]).
fn backup_paths_with(
    paths: &[PathBuf],
    parent: Option<&PackedTree>,
    sink: &mut dyn ChunkSink,
    measure: bool,
) -> Result<ScanReport, ScanError> {
    // Named paths come in any order, and may overlap.
    let out = Out::Kept {
        entries: Vec::new(),
        recorded: HashSet::new(),
    };
    let (parent, damaged) = Parent::by_path(parent);
    let mut scan = Scanner::new(parent, out, true, None);
    scan.measure = measure;
    if let Some(why) = damaged {
        scan.warnings
            .push(damaged_parent(&why, "the files it lists past the damage"));
    }
    for path in paths {
        let parts = config_components(path)?;
        // The directories above the path, followed like the path itself was resolved.
        let mut above = PathBuf::from("/");
        let mut rel: Vec<u8> = Vec::new();
        for part in &parts[..parts.len() - 1] {
            above.push(part);
            push_rel(&mut rel, part.as_bytes());
            if scan.is_recorded(&rel) {
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
            scan.record(entry)?;
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
    scan.finish(None)
}

/// What a metadata-only walk found: the regular files a backup would read now and
/// the sum of their sizes, as a snapshot's size counts them (every link of a
/// hard-link group counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    pub files: u64,
    pub bytes: u64,
}

/// Measures the folder `root` as [`backup_folder`] would walk it, `exclude`
/// honoured, without reading a file's bytes or extended attributes. An unreadable
/// file or directory below `root` is left out (a warning for a backup); an
/// unreadable `root` is an error.
pub fn measure_folder(root: &Path, exclude: &[String]) -> Result<Measured, ScanError> {
    backup_folder_with(root, exclude, false, None, &mut Unread, true).map(Measured::of)
}

/// Measures the named paths as [`backup_paths`] would walk them, without reading a
/// file's bytes; a missing or unreadable path is an error.
pub fn measure_paths(paths: &[PathBuf]) -> Result<Measured, ScanError> {
    backup_paths_with(paths, None, &mut Unread, true).map(Measured::of)
}

impl Measured {
    fn of(report: ScanReport) -> Measured {
        Measured {
            files: report.files,
            bytes: report.bytes_read,
        }
    }
}

/// The sink of a measuring walk, which reads no file: never called.
struct Unread;

impl ChunkSink for Unread {
    fn store(&mut self, _reader: &mut dyn Read) -> io::Result<crate::pipeline::Stored> {
        Err(io::Error::other("a measuring walk reads no file"))
    }
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

/// Where a scan's entries go.
enum Out {
    /// A folder's walk, in path order: each entry is written as it is found.
    Written(TreeWriter),
    /// Named paths, found in any order and perhaps more than once: their entries
    /// are kept (a few), each path once, and sorted at the end.
    Kept {
        entries: Vec<Entry>,
        recorded: HashSet<Vec<u8>>,
    },
    /// A measuring walk of a folder: counted, nothing kept.
    Counted,
}

/// The parent snapshot's entries, for the files that did not change.
#[expect(clippy::large_enum_variant, reason = "one per scan")]
enum Parent<'p> {
    None,
    /// Read beside a folder's walk: both go in path order, so each entry is
    /// decoded once and dropped once the walk is past it.
    Beside {
        entries: Entries<'p>,
        next: Option<Entry>,
    },
    /// A config source's parent, whose named paths come in any order: its few
    /// entries by path.
    ByPath(HashMap<Vec<u8>, Entry>),
}

impl<'p> Parent<'p> {
    fn beside(tree: Option<&'p PackedTree>) -> Parent<'p> {
        match tree {
            Some(tree) => Parent::Beside {
                entries: tree.entries(),
                next: None,
            },
            None => Parent::None,
        }
    }

    /// The parent's entries by path, and why they stop short when its tree cannot
    /// be read to the end.
    fn by_path(tree: Option<&'p PackedTree>) -> (Parent<'p>, Option<String>) {
        let Some(tree) = tree else {
            return (Parent::None, None);
        };
        let (mut entries, mut damaged) = (HashMap::new(), None);
        for entry in tree.entries() {
            match entry {
                Ok(e) => {
                    entries.insert(e.path_bytes().to_vec(), e);
                }
                Err(why) => damaged = Some(why),
            }
        }
        (Parent::ByPath(entries), damaged)
    }

    /// Takes the parent's entry at `path`. Beside a walk, each `path` comes after
    /// the one before. An error when the parent's tree cannot be read on: the
    /// parent is then done with.
    fn take(&mut self, path: &[u8]) -> Result<Option<Entry>, String> {
        let found = match self {
            Parent::None => Ok(None),
            Parent::ByPath(entries) => Ok(entries.remove(path)),
            Parent::Beside { entries, next } => loop {
                if let Some(e) = next {
                    match path_order(e.path_bytes(), path) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => break Ok(next.take()),
                        std::cmp::Ordering::Greater => break Ok(None),
                    }
                }
                match entries.next() {
                    Some(Ok(e)) => *next = Some(e),
                    Some(Err(why)) => break Err(why),
                    None => break Ok(None),
                }
            },
        };
        if found.is_err() {
            *self = Parent::None;
        }
        found
    }
}

/// A hard-linked file's first link: what its other links record.
struct Linked {
    link: u64,
    size: u64,
    chunks: Vec<ChunkId>,
    sparse: bool,
    xattrs: Vec<Xattr>,
}

struct Scanner<'p> {
    parent: Parent<'p>,
    out: Out,
    fail_on_unreadable: bool,
    excludes: Option<Gitignore>,
    /// A measuring walk: each regular file's size from its metadata, no file read,
    /// no extended attribute either.
    measure: bool,
    /// Directories already walked.
    walked: HashSet<Vec<u8>>,
    /// Files with more than one link, by (device, inode): their group, numbered
    /// when the first link is found.
    inodes: HashMap<(u64, u64), Linked>,
    /// Hard-link groups numbered so far.
    links: u64,
    names: Names,
    /// The sum of the entries' sizes.
    size: u64,
    bytes_read: u64,
    files: u64,
    files_reused: u64,
    unreadable: u64,
    warnings: Vec<String>,
}

impl<'p> Scanner<'p> {
    fn new(
        parent: Parent<'p>,
        out: Out,
        fail_on_unreadable: bool,
        excludes: Option<Gitignore>,
    ) -> Scanner<'p> {
        Scanner {
            parent,
            out,
            fail_on_unreadable,
            excludes,
            measure: false,
            walked: HashSet::new(),
            inodes: HashMap::new(),
            links: 0,
            names: Names::default(),
            size: 0,
            bytes_read: 0,
            files: 0,
            files_reused: 0,
            unreadable: 0,
            warnings: Vec::new(),
        }
    }

    fn finish(self, root: Option<Entry>) -> Result<ScanReport, ScanError> {
        let tree = match self.out {
            Out::Written(writer) => writer.finish(root),
            Out::Kept { mut entries, .. } => {
                entries.sort_by(entry_order);
                PackedTree::pack(&Tree { entries, root })
            }
            Out::Counted => Ok(PackedTree::default()),
        }
        .map_err(tree_error)?;
        Ok(ScanReport {
            tree,
            size: self.size,
            bytes_read: self.bytes_read,
            files: self.files,
            files_reused: self.files_reused,
            unreadable: self.unreadable,
            warnings: self.warnings,
        })
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
        if self.measure {
            return;
        }
        let (xattrs, problems) = read_xattrs(full, followed);
        entry.xattrs = xattrs;
        for problem in problems {
            self.warnings.push(format!("{}: {problem}", shown(full)));
        }
    }

    /// Records an entry, once: a path recorded already is not recorded again.
    fn record(&mut self, entry: Entry) -> Result<(), ScanError> {
        let size = entry.size;
        match &mut self.out {
            Out::Written(writer) => writer.push(&entry).map_err(tree_error)?,
            Out::Kept { entries, recorded } => {
                if !recorded.insert(entry.path_bytes().to_vec()) {
                    return Ok(());
                }
                entries.push(entry);
            }
            Out::Counted => {}
        }
        self.size += size;
        Ok(())
    }

    /// Whether `rel` was recorded already (only named paths can come twice).
    fn is_recorded(&self, rel: &[u8]) -> bool {
        match &self.out {
            Out::Kept { recorded, .. } => recorded.contains(rel),
            Out::Written(_) | Out::Counted => false,
        }
    }

    /// The parent's entry for the file at `rel`; when the parent's tree cannot be
    /// read on, a warning, and no parent from there on.
    fn parent_entry(&mut self, rel: &[u8]) -> Option<Entry> {
        self.parent.take(rel).unwrap_or_else(|why| {
            let from = format!("{} and the files after it", escape_bytes(rel));
            self.warnings.push(damaged_parent(&why, &from));
            None
        })
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
            self.record(entry)?;
            self.walk_dir(full, &rel, sink)
        } else if ft.is_symlink() {
            let target = match fs::read_link(full) {
                Ok(t) => t,
                Err(e) => return self.unreadable(full, e),
            };
            let mut entry = self.make_entry(full, rel, EntryKind::Symlink, &meta, false);
            entry.set_target_bytes(target.into_os_string().into_vec());
            self.record(entry)
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
        if self.is_recorded(&rel) {
            return Ok(());
        }
        // The extended attributes are read last: a file that is reused takes them
        // along (they are the inode's; setting one changes the ctime), which keeps
        // the no-change rerun at one `lstat` per file.
        let mut entry = self.owned_entry(rel, EntryKind::File, meta);
        if self.measure {
            self.bytes_read += entry.size;
            self.files += 1;
            return self.record(entry);
        }
        entry.sparse = meta.blocks().saturating_mul(512) < meta.len();
        // A further link to an inode read already: the same chunks, not read again.
        if meta.nlink() > 1
            && let Some(first) = self.inodes.get(&(meta.dev(), meta.ino()))
        {
            entry.link = Some(first.link);
            entry.size = first.size;
            entry.chunks = first.chunks.clone();
            entry.sparse = first.sparse;
            entry.xattrs = first.xattrs.clone();
            self.files += 1;
            self.files_reused += 1;
            return self.record(entry);
        }
        // Unchanged, and every destination still holds its chunks (a destination
        // that lost some, as `verify` found, is sent them again).
        if let Some(old) = self.parent_entry(entry.path_bytes())
            && unchanged(&old, &entry)
            && !old.chunks.iter().any(|c| sink.lost(c))
        {
            entry.chunks = old.chunks;
            // A parent written before owners were recorded has no attributes either.
            if old.uid.is_some() {
                entry.xattrs = old.xattrs;
            } else {
                self.add_xattrs(&mut entry, full, false);
            }
            self.files += 1;
            self.files_reused += 1;
            return self.record_file(entry, meta);
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
        self.record_file(entry, meta)
    }

    /// Records a file read or reused. One with more links starts a hard-link group,
    /// which the links found later join (a group of one when they are not in the
    /// backup).
    fn record_file(&mut self, mut entry: Entry, meta: &Metadata) -> Result<(), ScanError> {
        if meta.nlink() > 1 {
            self.links += 1;
            entry.link = Some(self.links);
            let first = Linked {
                link: self.links,
                size: entry.size,
                chunks: entry.chunks.clone(),
                sparse: entry.sparse,
                xattrs: entry.xattrs.clone(),
            };
            self.inodes.insert((meta.dev(), meta.ino()), first);
        }
        self.record(entry)
    }
}

/// The warning that the parent's tree cannot be read on: `what` is read again.
fn damaged_parent(why: &str, what: &str) -> String {
    format!("the last snapshot's tree is damaged ({why}): {what} are read again")
}

fn tree_error(e: io::Error) -> ScanError {
    ScanError::io(format!("writing the snapshot's tree: {e}"))
}
