//! Restore: checking a tree, previewing and writing it back under a target.
//!
//! A tree is walked entry by entry in path order (a directory right before its
//! contents), never held whole: one pass checks every entry and decides, from the
//! target, what to do with each (two bytes per entry kept, and the chunks to fetch,
//! 32 bytes each, for the read-ahead); a second writes. What stays in memory besides
//! is the chain of directories above the walk's position and one record per
//! hard-link group. A tree whose stored order is not path order (none this program
//! writes) is sorted whole first.

use std::cmp::Ordering as Order;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Serialize;

use super::meta::{MetaWriter, entry_mtime};
use super::{ScanError, bytes_path, shown};
use crate::crypto::keys::ChunkId;
use crate::pipeline::ChunkSource;
use crate::pipeline::fetch::Prefetch;
use crate::repo::format::{Entry, EntryKind, escape_bytes, path_order};
use crate::repo::tree::{TreeWalk, WalkError, unreadable};

/// How many paths an error lists before it says "and N more".
const LIST_LIMIT: usize = 20;

/// What a restore would do, computed from the tree and the target only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePreview {
    /// How many entries do not exist in the target yet (directories above selected
    /// entries that would be made included).
    pub create: usize,
    /// The first of them, as many as asked for.
    pub create_listed: Vec<String>,
    /// Entries that exist and differ (size, mtime, kind or symlink target): a restore
    /// needs `force` for them. Every one is named.
    pub overwrite: Vec<String>,
    /// How many entries already match and are skipped.
    pub identical: usize,
    /// The first of them, as many as asked for.
    pub identical_listed: Vec<String>,
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

/// Shows what [`restore`] would do; reads nothing but the target's metadata. Names
/// every path it would overwrite, and the first `limit` of those it would create or
/// leave as they are.
pub fn plan_restore(
    tree: &impl TreeWalk,
    target: &Path,
    include: &[String],
    limit: usize,
) -> Result<RestorePreview, ScanError> {
    let mut selection = Selection::new(include)?;
    let decided = sorted_or_not(tree, |t| {
        decide(t, target, &mut selection, Pass::Preview { limit })
    })?;
    Ok(RestorePreview {
        create: decided.create.count,
        create_listed: decided.create.paths,
        overwrite: decided.overwrite.paths,
        identical: decided.identical.count,
        identical_listed: decided.identical.paths,
        bytes_to_write: decided.bytes_to_write,
    })
}

/// [`restore_with`] with owners by name and no other options.
pub fn restore(
    tree: &impl TreeWalk,
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
    tree: &impl TreeWalk,
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
    tree: &impl TreeWalk,
    target: &Path,
    options: &RestoreOptions,
    source: &mut (dyn ChunkSource + Send),
    as_root: bool,
) -> Result<RestoreReport, ScanError> {
    // Unsorted is found in the first pass, before anything is written.
    let mut selection = Selection::new(&options.include)?;
    let mut source = Some(source);
    sorted_or_not(tree, |t| {
        let decided = decide(t, target, &mut selection, Pass::Restore)?;
        let source = source
            .take()
            .unwrap_or_else(|| unreachable!("one pass writes"));
        write(t, target, options, &mut selection, decided, source, as_root).map_err(Stop::Failed)
    })
}

/// Runs `run` over `tree`; over `tree` sorted when its order is not path order.
fn sorted_or_not<T: TreeWalk, R>(
    tree: &T,
    mut run: impl FnMut(&dyn Walkable) -> Result<R, Stop>,
) -> Result<R, ScanError> {
    match run(&Walk(tree)) {
        Err(Stop::Unsorted) => {
            let sorted = tree.sorted().map_err(damaged)?;
            match run(&Walk(&sorted)) {
                Err(Stop::Unsorted) => unreachable!("a sorted tree is in path order"),
                Err(Stop::Failed(e)) => Err(e),
                Ok(r) => Ok(r),
            }
        }
        Err(Stop::Failed(e)) => Err(e),
        Ok(r) => Ok(r),
    }
}

fn damaged(why: String) -> ScanError {
    let failure = unreadable(why);
    ScanError {
        code: failure.code,
        message: failure.message,
    }
}

/// Why a walk over the items stopped.
#[derive(Debug)]
enum Stop {
    Failed(ScanError),
    /// An entry came before the one it follows: the tree is not in path order.
    Unsorted,
}

impl From<ScanError> for Stop {
    fn from(e: ScanError) -> Stop {
        Stop::Failed(e)
    }
}

/// A tree walked with one callback type, so that the passes take `&dyn Walkable`.
trait Walkable {
    fn each(&self, f: &mut dyn FnMut(&Entry) -> Result<(), Stop>) -> Result<(), Stop>;
    fn root(&self) -> Option<&Entry>;
}

struct Walk<'t, T>(&'t T);

impl<T: TreeWalk> Walkable for Walk<'_, T> {
    fn each(&self, f: &mut dyn FnMut(&Entry) -> Result<(), Stop>) -> Result<(), Stop> {
        self.0.walk(f).map_err(|e| match e {
            WalkError::Stopped(stop) => stop,
            WalkError::Damaged(why) => Stop::Failed(damaged(why)),
        })
    }

    fn root(&self) -> Option<&Entry> {
        self.0.root()
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

/// What the first pass decided for one item: two bytes, kept for the passes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    action: Action,
    existing: Existing,
}

/// One thing a restore handles, in path order: a selected entry, or a directory
/// above one.
#[derive(Debug)]
struct Item<'e> {
    /// The entry path's bytes.
    path: &'e [u8],
    /// `None` for a directory above a selected entry that the tree does not hold.
    entry: Option<&'e Entry>,
    selected: bool,
}

impl Item<'_> {
    fn kind(&self) -> EntryKind {
        self.entry.map_or(EntryKind::Dir, |e| e.kind)
    }

    /// The path for people (escaped where it is not UTF-8).
    fn shown(&self) -> String {
        escape_bytes(self.path)
    }
}

/// An entry above the walk's position (or the last one walked), with what the pass
/// keeps for it once it was handed out as an item.
struct Open<S> {
    path: Vec<u8>,
    kind: EntryKind,
    /// A directory's entry; `None` for a directory the tree does not hold, and for
    /// anything not a directory.
    dir: Option<Entry>,
    state: Option<S>,
}

/// Whether `path` lies below the directory `dir`.
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Which entries a restore takes: those matching the include patterns, or below a
/// directory that does (all when there are none).
struct Selection {
    all: Option<Gitignore>,
    /// Each positive pattern, its own matcher and whether it matched an entry: a typo
    /// must not restore nothing.
    each: Vec<(String, Gitignore, bool)>,
}

impl Selection {
    fn new(include: &[String]) -> Result<Selection, ScanError> {
        if include.is_empty() {
            return Ok(Selection {
                all: None,
                each: Vec::new(),
            });
        }
        let bad = |pattern: &str, e: ignore::Error| {
            ScanError::invalid(format!("bad include pattern {pattern:?}: {e}"))
        };
        let mut builder = GitignoreBuilder::new("/");
        for pattern in include {
            builder
                .add_line(None, pattern)
                .map_err(|e| bad(pattern, e))?;
        }
        let all = builder
            .build()
            .map_err(|e| ScanError::invalid(format!("bad include patterns: {e}")))?;
        let mut each = Vec::new();
        for pattern in include {
            let p = pattern.trim();
            if p.is_empty() || p.starts_with('!') || p.starts_with('#') {
                continue;
            }
            let mut one = GitignoreBuilder::new("/");
            one.add_line(None, pattern).map_err(|e| bad(pattern, e))?;
            let one = one.build().map_err(|e| bad(pattern, e))?;
            each.push((pattern.clone(), one, false));
        }
        Ok(Selection {
            all: Some(all),
            each,
        })
    }

    fn selects(&mut self, entry: &Entry) -> bool {
        let Some(all) = &self.all else { return true };
        let path = bytes_path(entry.path_bytes());
        let dir = entry.kind == EntryKind::Dir;
        for (_, one, matched) in &mut self.each {
            *matched = *matched || one.matched(path, dir).is_ignore();
        }
        all.matched_path_or_any_parents(path, dir).is_ignore()
    }

    /// Fails when a positive pattern matched no entry (after a whole walk).
    fn check_matched(&self) -> Result<(), ScanError> {
        match self.each.iter().find(|(_, _, matched)| !matched) {
            Some((pattern, _, _)) => Err(ScanError::invalid(format!(
                "the include pattern {pattern:?} matches nothing in the snapshot"
            ))),
            None => Ok(()),
        }
    }
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

/// Checks one entry on its own: a tree with one unsafe entry, selected or not, is
/// not trusted at all.
fn check_entry(entry: &Entry) -> Result<(), ScanError> {
    // Messages show the bytes that would be used, escaped, not the display form.
    let shown = || escape_bytes(entry.path_bytes());
    if let Some(why) = unsafe_path(entry.path_bytes()) {
        return Err(ScanError::refused(format!(
            "the snapshot holds the unsafe entry path {:?} ({why}); nothing was restored",
            shown()
        )));
    }
    if entry.kind == EntryKind::Symlink {
        match entry.target_bytes() {
            Some(t) if !t.is_empty() && !t.contains(&0) => {}
            _ => {
                return Err(ScanError::refused(format!(
                    "the snapshot's symlink {:?} has no usable target; nothing was restored",
                    shown()
                )));
            }
        }
    }
    Ok(())
}

/// What a pass does with the items [`walk_items`] hands out.
trait Visit {
    /// What the pass keeps for an item while the walk is below it.
    type State;
    /// One item, with the state returned for its parent (`None` at the top).
    fn item(
        &mut self,
        item: &Item<'_>,
        parent: Option<&Self::State>,
    ) -> Result<Self::State, ScanError>;
    /// An item left behind, deepest first, once everything below it was walked;
    /// nothing by default.
    fn leave(&mut self, _open: Open<Self::State>) -> Result<(), ScanError> {
        Ok(())
    }
}

/// Walks `tree` as the items a restore handles, checking every entry on the way
/// (its path, its order, nothing under a non-directory), and hands each item to
/// `visit`. Directories above a selected entry come before it.
fn walk_items<V: Visit>(
    tree: &dyn Walkable,
    selection: &mut Selection,
    visit: &mut V,
) -> Result<(), Stop> {
    let mut chain: Vec<Open<V::State>> = Vec::new();
    tree.each(&mut |entry| {
        check_entry(entry)?;
        let path = entry.path_bytes();
        if let Some(last) = chain.last() {
            match path_order(&last.path, path) {
                Order::Less => {}
                Order::Equal => {
                    return Err(Stop::Failed(ScanError::refused(format!(
                        "the snapshot holds the entry {:?} twice; nothing was restored",
                        escape_bytes(path)
                    ))));
                }
                Order::Greater => return Err(Stop::Unsorted),
            }
        }
        while let Some(open) = chain.pop_if(|o| !is_below(path, &o.path)) {
            if open.state.is_some() {
                visit.leave(open)?;
            }
        }
        // In path order, every entry of the tree above this one is in the chain.
        if let Some(above) = chain.last()
            && above.kind != EntryKind::Dir
        {
            return Err(Stop::Failed(ScanError::refused(format!(
                "the snapshot's entry {:?} lies under {:?}, which is not a directory; \
                 nothing was restored",
                escape_bytes(path),
                escape_bytes(&above.path)
            ))));
        }
        let selected = selection.selects(entry);
        if selected {
            // The directories above it, those the tree does not hold made up.
            for (depth, above) in ancestors(path).enumerate() {
                if chain.get(depth).is_none_or(|o| o.path != above) {
                    let open = Open {
                        path: above.to_vec(),
                        kind: EntryKind::Dir,
                        dir: None,
                        state: None,
                    };
                    chain.insert(depth, open);
                }
                if chain[depth].state.is_none() {
                    let (up, here) = chain.split_at_mut(depth);
                    let item = Item {
                        path: above,
                        entry: here[0].dir.as_ref(),
                        selected: false,
                    };
                    let state = visit.item(&item, up.last().and_then(|o| o.state.as_ref()))?;
                    here[0].state = Some(state);
                }
            }
        }
        let state = if selected {
            let item = Item {
                path,
                entry: Some(entry),
                selected: true,
            };
            Some(visit.item(&item, chain.last().and_then(|o| o.state.as_ref()))?)
        } else {
            None
        };
        chain.push(Open {
            path: path.to_vec(),
            kind: entry.kind,
            dir: (entry.kind == EntryKind::Dir).then(|| entry.clone()),
            state,
        });
        Ok(())
    })?;
    while let Some(open) = chain.pop() {
        if open.state.is_some() {
            visit.leave(open)?;
        }
    }
    selection.check_matched()?;
    Ok(())
}

/// The directories above a relative path, nearest last: `a`, `a/b` for `a/b/c`.
pub(super) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Hard-link groups: the first selected member is written, the others link to it
/// (those whose content the tree records otherwise are written on their own).
#[derive(Default)]
struct Links {
    /// Per group, its first member: path, size and chunks.
    firsts: HashMap<u64, (Vec<u8>, u64, Vec<ChunkId>)>,
}

impl Links {
    /// The path of the file `item` is to be linked to, if it is one.
    fn link_to(&mut self, item: &Item<'_>) -> Option<&[u8]> {
        let entry = item
            .entry
            .filter(|e| item.selected && e.kind == EntryKind::File)?;
        let group = entry.link?;
        match self.firsts.entry(group) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let (path, size, chunks) = first.into_mut();
                (*size == entry.size && *chunks == entry.chunks).then_some(&path[..])
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((item.path.to_vec(), entry.size, entry.chunks.clone()));
                None
            }
        }
    }
}

/// Paths of one kind the first pass found: how many, and the first `limit`.
#[derive(Debug, Default)]
struct Listing {
    count: usize,
    paths: Vec<String>,
    limit: usize,
}

impl Listing {
    fn new(limit: usize) -> Listing {
        Listing {
            limit,
            ..Listing::default()
        }
    }

    fn push(&mut self, shown: impl FnOnce() -> String) {
        self.count += 1;
        if self.paths.len() < self.limit {
            self.paths.push(shown());
        }
    }

    /// The paths, and how many more there are.
    fn list(&self) -> String {
        let mut out = self.paths.join(", ");
        if self.count > self.paths.len() {
            out.push_str(&format!(" and {} more", self.count - self.paths.len()));
        }
        out
    }
}

/// What the first pass found.
#[derive(Debug)]
struct Decided {
    /// One per item, in walk order (kept for a restore only, as `order` is).
    decisions: Vec<Decision>,
    /// The chunks of the files to write, in the order the writing pass asks for
    /// them (further links of a hard-link group are linked, not written): for the
    /// read-ahead, 32 bytes each.
    order: Vec<ChunkId>,
    create: Listing,
    overwrite: Listing,
    identical: Listing,
    /// Non-empty directories where the snapshot has files or symlinks.
    blocked: Listing,
    bytes_to_write: u64,
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

/// What the first pass is for.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// Counts, names every path it would overwrite and up to `limit` of each other
    /// kind; keeps nothing per item.
    Preview { limit: usize },
    /// Names up to [`LIST_LIMIT`] paths of each kind (for its errors), and keeps each
    /// item's decision and the chunks to fetch, for the writing pass.
    Restore,
}

/// The first pass: checks the tree and decides each item from what the target holds
/// (each directory's state: whether it is a real directory there, below which
/// there is anything to look at).
fn decide(
    tree: &dyn Walkable,
    target: &Path,
    selection: &mut Selection,
    pass: Pass,
) -> Result<Decided, Stop> {
    let (limit, overwrite_limit, keep) = match pass {
        Pass::Preview { limit } => (limit, usize::MAX, false),
        Pass::Restore => (LIST_LIMIT, LIST_LIMIT, true),
    };
    let target_exists = match fs::metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(ScanError::io(format!(
                "the restore target {} is not a directory",
                target.display()
            ))
            .into());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(ScanError::io(format!(
                "cannot read the restore target {}: {e}",
                target.display()
            ))
            .into());
        }
    };
    let mut decider = Decider {
        target,
        target_exists,
        keep,
        links: Links::default(),
        out: Decided {
            decisions: Vec::new(),
            order: Vec::new(),
            create: Listing::new(limit),
            overwrite: Listing::new(overwrite_limit),
            identical: Listing::new(limit),
            blocked: Listing::new(limit),
            bytes_to_write: 0,
        },
    };
    walk_items(tree, selection, &mut decider)?;
    let mut out = decider.out;
    out.decisions.shrink_to_fit();
    out.order.shrink_to_fit();
    Ok(out)
}

/// The first pass's visitor.
struct Decider<'a> {
    target: &'a Path,
    target_exists: bool,
    /// Whether each item's decision and the chunks to fetch are kept.
    keep: bool,
    links: Links,
    out: Decided,
}

impl Visit for Decider<'_> {
    /// Whether the item is a real directory in the target.
    type State = bool;

    fn item(&mut self, item: &Item<'_>, parent: Option<&bool>) -> Result<bool, ScanError> {
        let parent_real = parent.copied().unwrap_or(self.target_exists);
        let (decision, real_dir) = decide_item(item, self.target, parent_real)?;
        let out = &mut self.out;
        if self.keep {
            out.decisions.push(decision);
        }
        let linked = self.links.link_to(item).is_some();
        if item.selected || decision.action == Action::Create {
            match decision.action {
                Action::Create => out.create.push(|| item.shown()),
                Action::Overwrite => out.overwrite.push(|| item.shown()),
                Action::Identical | Action::Keep => out.identical.push(|| item.shown()),
            }
        }
        if decision.existing == Existing::FullDir && item.kind() != EntryKind::Dir {
            out.blocked.push(|| item.shown());
        }
        if let Some(entry) = item.entry.filter(|_| item.selected)
            && entry.kind == EntryKind::File
            && !linked
            && matches!(decision.action, Action::Create | Action::Overwrite)
        {
            out.bytes_to_write += entry.size;
            if self.keep {
                out.order.extend_from_slice(&entry.chunks);
            }
        }
        Ok(real_dir)
    }
}

/// Decides one item; returns the decision and whether the item is a real directory
/// in the target. `parent_real`: whether its parent is one (else nothing is there).
fn decide_item(
    item: &Item<'_>,
    target: &Path,
    parent_real: bool,
) -> Result<(Decision, bool), ScanError> {
    let here = target.join(OsStr::from_bytes(item.path));
    let (existing, meta) = if parent_real {
        existing_at(&here, item.kind() != EntryKind::Dir)?
    } else {
        (Existing::Nothing, None)
    };
    let is_dir_there = matches!(existing, Existing::EmptyDir | Existing::FullDir);
    let real_dir = is_dir_there && item.kind() == EntryKind::Dir;
    let action = match item.entry.filter(|_| item.selected) {
        None => match existing {
            Existing::Nothing => Action::Create,
            Existing::EmptyDir | Existing::FullDir => Action::Keep,
            Existing::Symlink => {
                return Err(ScanError::io(format!(
                    "{} is a symlink inside the restore target; a restore never writes \
                     through symlinks (restore {} too, or remove the link)",
                    shown(&here),
                    item.shown()
                )));
            }
            _ => {
                return Err(ScanError::io(format!(
                    "{} is not a directory, but the snapshot has entries under it",
                    shown(&here)
                )));
            }
        },
        Some(entry) => match (entry.kind, existing) {
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
        },
    };
    Ok((Decision { action, existing }, real_dir))
}

/// The passes that write, once the first has decided: refuses what must not be
/// done, then writes the items in order while the read-ahead fetches their chunks.
fn write(
    tree: &dyn Walkable,
    target: &Path,
    options: &RestoreOptions,
    selection: &mut Selection,
    decided: Decided,
    source: &mut (dyn ChunkSource + Send),
    as_root: bool,
) -> Result<RestoreReport, ScanError> {
    if decided.blocked.count > 0 {
        return Err(ScanError::refused(format!(
            "nothing was restored: the target holds non-empty directories where the \
             snapshot has files or symlinks; move them away first: {}",
            decided.blocked.list()
        )));
    }
    let overwrite = &decided.overwrite;
    if !options.force && overwrite.count > 0 {
        let one = overwrite.count == 1;
        return Err(ScanError::refused(format!(
            "nothing was restored: {} existing entr{} in {} differ{} from the snapshot and \
             would be overwritten (use force to overwrite them): {}",
            overwrite.count,
            if one { "y" } else { "ies" },
            target.display(),
            if one { "s" } else { "" },
            overwrite.list()
        )));
    }
    fs::create_dir_all(target)
        .map_err(|e| ScanError::io(format!("cannot create {}: {e}", target.display())))?;
    // The folder itself gets the snapshot's metadata when the whole tree is restored.
    let root = tree.root().filter(|_| options.include.is_empty());
    let Decided {
        decisions, order, ..
    } = decided;
    std::thread::scope(|scope| {
        // The chunks fetched ahead on threads of their own.
        let mut ahead = Prefetch::start(scope, source, order);
        let mut writer = Writer {
            target,
            decisions: decisions.iter(),
            links: Links::default(),
            meta: MetaWriter::new(as_root, options.numeric_owner),
            source: &mut ahead,
            report: RestoreReport::default(),
            last_dirs: Vec::new(),
            checked: None,
        };
        match walk_items(tree, selection, &mut writer) {
            Ok(()) => {}
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::Unsorted) => unreachable!("the first pass found the order right"),
        }
        writer.finish(root)
    })
}

/// The writing pass's visitor: writes the items as decided, each directory's
/// metadata once everything below it is written.
struct Writer<'a> {
    target: &'a Path,
    /// The first pass's decisions, one per item in walk order.
    decisions: std::slice::Iter<'a, Decision>,
    links: Links,
    meta: MetaWriter,
    source: &'a mut dyn ChunkSource,
    report: RestoreReport,
    /// Directories whose mode leaves their owner no search permission: their
    /// metadata is set last, so that a later hard link can still reach a file in
    /// them. Deepest first.
    last_dirs: Vec<(PathBuf, Entry)>,
    /// The parent last checked: items come in path order, so the files of one folder
    /// are checked once for all of them. Nothing written below a folder (files,
    /// symlinks, links) changes the folders above it.
    checked: Option<Vec<u8>>,
}

impl Visit for Writer<'_> {
    /// Whether the item's metadata is to be set once everything below it is written.
    type State = bool;

    fn item(&mut self, item: &Item<'_>, _: Option<&bool>) -> Result<bool, ScanError> {
        let Some(&decision) = self.decisions.next() else {
            return Err(ScanError::io(
                "the snapshot's tree changed between two readings",
            ));
        };
        let target = self.target;
        let link_to = self
            .links
            .link_to(item)
            .map(|first| target.join(OsStr::from_bytes(first)));
        self.write_item(item, decision, link_to.as_deref())
    }

    fn leave(&mut self, open: Open<bool>) -> Result<(), ScanError> {
        let (Some(true), Some(entry)) = (open.state, open.dir) else {
            return Ok(());
        };
        let dest = self.target.join(OsStr::from_bytes(&open.path));
        if entry.mode & 0o100 == 0 {
            self.last_dirs.push((dest, entry));
            Ok(())
        } else {
            self.meta.dir(&dest, &entry, false)
        }
    }
}

impl Writer<'_> {
    /// Writes one item as decided (a further member of a hard-link group as a link
    /// to `link_to`); returns, for a directory, whether its metadata is to be set
    /// once everything below it is written.
    fn write_item(
        &mut self,
        item: &Item<'_>,
        decision: Decision,
        link_to: Option<&Path>,
    ) -> Result<bool, ScanError> {
        let Decision { action, existing } = decision;
        let dest = self.target.join(OsStr::from_bytes(item.path));
        let parent = item
            .path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&item.path[..0], |i| &item.path[..i]);
        if self.checked.as_deref() != Some(parent) {
            check_parents(self.target, item.path, &item.shown())?;
            self.checked = Some(parent.to_vec());
        }
        let io_err = |what: &str, e: io::Error| {
            ScanError::io(format!("restoring {}: {what}: {e}", item.shown()))
        };
        match item.kind() {
            EntryKind::Dir => {
                match action {
                    Action::Create => {
                        make_dir(&dest, item.entry.is_some())
                            .map_err(|e| io_err("cannot create the directory", e))?;
                        self.report.dirs_created += 1;
                    }
                    Action::Overwrite => {
                        // A file or symlink where the snapshot has a directory: the link
                        // itself is removed, never followed.
                        fs::remove_file(&dest).map_err(|e| io_err("cannot remove it", e))?;
                        make_dir(&dest, item.entry.is_some())
                            .map_err(|e| io_err("cannot create the directory", e))?;
                        self.report.dirs_created += 1;
                    }
                    Action::Identical => self.report.unchanged += 1,
                    Action::Keep => {}
                }
                return Ok(item.entry.is_some() && (item.selected || action != Action::Keep));
            }
            EntryKind::File => {
                let Some(entry) = item.entry else {
                    return Ok(false);
                };
                if let Some(first) = link_to {
                    if same_inode(first, &dest) {
                        self.report.unchanged += 1;
                        return Ok(false);
                    }
                    if existing == Existing::EmptyDir {
                        fs::remove_dir(&dest)
                            .map_err(|e| io_err("cannot remove the directory", e))?;
                    }
                    write_link(first, &dest, entry)?;
                    self.report.links_written += 1;
                    return Ok(false);
                }
                if action == Action::Identical {
                    // The same bytes: only the owner and the mode are put right.
                    self.report.unchanged += 1;
                    let Ok(m) = fs::symlink_metadata(&dest) else {
                        return Ok(false);
                    };
                    let mut chowned = false;
                    if let Some((uid, gid)) = self.meta.owner(entry)
                        && (uid.is_some_and(|u| u != m.uid()) || gid.is_some_and(|g| g != m.gid()))
                    {
                        match std::os::unix::fs::lchown(&dest, uid, gid) {
                            Ok(()) => chowned = true,
                            Err(e) => self.meta.chown_failed(entry, e),
                        }
                    }
                    let mode = entry.mode & 0o7777;
                    if chowned || m.mode() & 0o7777 != mode {
                        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                            .map_err(|e| io_err("cannot set its mode", e))?;
                    }
                    return Ok(false);
                }
                if existing == Existing::EmptyDir {
                    fs::remove_dir(&dest).map_err(|e| io_err("cannot remove the directory", e))?;
                }
                let written = write_file(&dest, entry, &mut self.meta, self.source)?;
                self.report.files_written += 1;
                self.report.bytes_written += written;
            }
            EntryKind::Symlink => {
                let Some(entry) = item.entry else {
                    return Ok(false);
                };
                if action == Action::Identical {
                    self.report.unchanged += 1;
                    return Ok(false);
                }
                if existing == Existing::EmptyDir {
                    fs::remove_dir(&dest).map_err(|e| io_err("cannot remove the directory", e))?;
                }
                write_symlink(&dest, entry, &mut self.meta)?;
                self.report.symlinks_written += 1;
            }
        }
        Ok(false)
    }

    /// Sets the metadata left for last (and the target's own, from `root`).
    fn finish(mut self, root: Option<&Entry>) -> Result<RestoreReport, ScanError> {
        for (dest, entry) in std::mem::take(&mut self.last_dirs) {
            self.meta.dir(&dest, &entry, false)?;
        }
        if let Some(root) = root {
            self.meta.dir(self.target, root, true)?;
        }
        self.report.warnings = self.meta.finish();
        Ok(self.report)
    }
}

/// Whether two paths are one inode (neither followed if a symlink).
fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
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
