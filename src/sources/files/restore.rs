//! Restore: checking a tree, previewing and writing it back under a target.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ignore::gitignore::GitignoreBuilder;
use serde::Serialize;

use super::meta::{MetaWriter, entry_mtime};
use super::{ScanError, bytes_path, shown};
use crate::crypto::keys::ChunkId;
use crate::pipeline::ChunkSource;
use crate::pipeline::fetch::Prefetch;
use crate::repo::format::{Entry, EntryKind, Tree, escape_bytes};

/// How many paths an error lists before it says "and N more".
const LIST_LIMIT: usize = 20;

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
pub(super) fn restore_as(
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
    // The parent last checked: items come in path order, so the files of one folder
    // are checked once for all of them. Nothing written below a folder (files,
    // symlinks, links) changes the folders above it.
    let mut checked: Option<&[u8]> = None;
    for item in &prepared.items {
        let dest = target.join(OsStr::from_bytes(item.path));
        let parent = item
            .path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&item.path[..0], |i| &item.path[..i]);
        if checked != Some(parent) {
            check_parents(target, item.path, &item.shown)?;
            checked = Some(parent);
        }
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
pub(super) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
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
