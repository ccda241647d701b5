//! Archives in a snapshot, and the spools a restore writes them to.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::repo::format::{Entry, Tree};

use super::*;

/// One database's archive in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub database: String,
    pub format: ArchiveFormat,
    /// Of a custom-format archive: the entry `DB.layout.json`, where its tables' rows
    /// lie ([`custom::Layout`]), when the backup recorded it.
    pub layout: Option<Entry>,
}

/// How an archive was stored.
// One per archive, never in bulk: an `Entry` inline is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `DB.dump`: one `pg_dump -Fc` stream, which pg_restore can read from its stdin.
    Custom(Entry),
    /// `DB.dir/…`: the files of a `pg_dump -Fd` folder, each its own entry; pg_restore
    /// reads it only from a folder.
    Directory(Vec<Entry>),
}

impl Archive {
    /// `DB.dump` or `DB.dir/`, for messages and notes.
    pub fn name(&self) -> String {
        match &self.format {
            ArchiveFormat::Custom(e) => e.path.clone(),
            ArchiveFormat::Directory(_) => format!("{}{DIR_SUFFIX}/", self.database),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.format {
            ArchiveFormat::Custom(e) => std::slice::from_ref(e),
            ArchiveFormat::Directory(files) => files,
        }
    }

    /// The archive's bytes.
    pub fn bytes(&self) -> u64 {
        self.entries().iter().map(|e| e.size).sum()
    }

    /// What a spool of `files` of it takes on disk: each file rounded up to whole
    /// 4 KiB blocks. For a custom-format archive restored by sections this is an upper
    /// bound: what it takes is in its layout ([`check_space`] reads it).
    pub fn spool_bytes(&self, files: Files) -> u64 {
        self.entries()
            .iter()
            .filter(|e| {
                files == Files::All
                    || !self.needs_spool()
                    || sections::data_file_id(file_name(e)).is_none()
            })
            .map(|e| on_disk(e.size))
            .sum()
    }

    /// Whether pg_restore can read it only from disk.
    pub fn needs_spool(&self) -> bool {
        matches!(self.format, ArchiveFormat::Directory(_))
    }
}

/// The database archives of a snapshot's tree, in the order the tree holds them.
pub fn archives(tree: &Tree) -> Vec<Archive> {
    let mut out: Vec<Archive> = Vec::new();
    for e in &tree.entries {
        if let Some(db) = e.path.strip_suffix(DUMP_SUFFIX) {
            out.push(Archive {
                database: db.to_string(),
                format: ArchiveFormat::Custom(e.clone()),
                layout: None,
            });
            continue;
        }
        if e.path.ends_with(LAYOUT_SUFFIX) || e.path.ends_with(COUNTS_SUFFIX) {
            continue;
        }
        // A database name may hold `/`; the archive's own file names never do.
        let Some((db, _)) = e
            .path
            .rsplit_once('/')
            .and_then(|(folder, file)| Some((folder.strip_suffix(DIR_SUFFIX)?, file)))
        else {
            continue;
        };
        match out.iter_mut().find(|a| a.database == db) {
            Some(Archive {
                format: ArchiveFormat::Directory(files),
                ..
            }) => files.push(e.clone()),
            Some(_) => {}
            None => out.push(Archive {
                database: db.to_string(),
                format: ArchiveFormat::Directory(vec![e.clone()]),
                layout: None,
            }),
        }
    }
    for archive in &mut out {
        if matches!(archive.format, ArchiveFormat::Custom(_)) {
            let path = format!("{}{LAYOUT_SUFFIX}", archive.database);
            archive.layout = tree.entries.iter().find(|e| e.path == path).cloned();
        }
    }
    out
}

/// A file name pg_dump writes into a directory-format folder (`toc.dat`, `1234.dat`,
/// `blobs.toc`): no separator, not `.` or `..`, so a spool never writes outside its
/// folder whatever a tree says.
pub(super) fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The file name of an entry of a directory-format archive (`toc.dat`, `1234.dat`).
pub(super) fn file_name(entry: &Entry) -> &str {
    entry.path.rsplit('/').next().unwrap_or_default()
}

/// A fresh folder (mode 0700) under a spool folder, removed when dropped, so that an
/// error or a panic anywhere still removes it: it holds database contents in plain.
/// Its name is unique (`PREFIX` and random characters), so two runs never collide.
#[derive(Debug)]
pub struct Spool {
    dir: tempfile::TempDir,
}

impl Spool {
    /// Creates `parent` when missing, and a fresh folder in it.
    pub fn new(parent: &Path, prefix: &str) -> io::Result<Spool> {
        std::fs::create_dir_all(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        // tempfile leaves the mode to the umask: ask for the owner only.
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        Ok(Spool { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the folder now, reporting a failure (dropping removes it silently).
    pub fn remove(self) -> io::Result<()> {
        self.dir.close()
    }
}

/// Bytes available to this user on the filesystem holding `dir` (or, when it does
/// not exist yet, its nearest existing parent).
pub fn available_space(dir: &Path) -> Result<u64, Failure> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let existing = absolute
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let stat = rustix::fs::statvfs(existing).map_err(|e| {
        Failure::new(
            Code::Io,
            format!("cannot tell the free space of {}: {e}", existing.display()),
        )
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// How pg_restore reads an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// From its standard input, fed chunk by chunk: no disk used.
    Stream,
    /// From a copy in a fresh folder under `dir`, with `jobs` workers.
    Spool { dir: PathBuf, jobs: u32 },
}

impl Feed {
    /// A spool when pg_restore needs a file: more than one job, or an archive that
    /// only a folder holds; the spool goes under `spool` (default: the system's
    /// temporary folder, `$TMPDIR`).
    pub fn choose(archive: &Archive, jobs: Option<u32>, spool: Option<&Path>) -> Feed {
        let jobs = jobs.unwrap_or(1).max(1);
        if jobs > 1 || archive.needs_spool() {
            Feed::Spool {
                dir: spool.map_or_else(std::env::temp_dir, Path::to_path_buf),
                jobs,
            }
        } else {
            Feed::Stream
        }
    }
}

impl Feed {
    /// pg_restore's workers.
    pub fn jobs(&self) -> u32 {
        match self {
            Feed::Stream => 1,
            Feed::Spool { jobs, .. } => *jobs,
        }
    }
}

/// What a spool of `archive` in `dir` needs and what is available there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceCheck {
    pub needed: u64,
    pub available: u64,
}

impl SpaceCheck {
    pub fn fits(&self) -> bool {
        self.needed <= self.available
    }
}

/// Measures the room for a spool of `archive` in `dir` (for a plan: see
/// [`Archive::spool_bytes`]).
pub fn space_for(archive: &Archive, files: Files, dir: &Path) -> Result<SpaceCheck, Failure> {
    Ok(SpaceCheck {
        needed: archive.spool_bytes(files),
        available: available_space(dir)?,
    })
}

/// `bytes` rounded up to whole 4 KiB blocks: what a file of them takes on disk.
pub(super) fn on_disk(bytes: u64) -> u64 {
    bytes.div_ceil(4096) * 4096
}

/// The layout a spool of `files` of `archive` is written from: a custom-format
/// archive's, whose skeleton it then holds; `None` for any other spool.
fn skeleton_layout(
    archive: &Archive,
    files: Files,
    source: &mut dyn ChunkSource,
) -> Result<Option<custom::Layout>, Failure> {
    match (&archive.format, files) {
        (ArchiveFormat::Custom(_), Files::TablesOfContents) => {
            load_layout(archive, source).map(Some)
        }
        _ => Ok(None),
    }
}

/// What a spool of `files` of `archive` takes on disk: with `layout`, its skeleton.
fn spool_size(archive: &Archive, files: Files, layout: Option<&custom::Layout>) -> u64 {
    layout.map_or_else(
        || archive.spool_bytes(files),
        |l| on_disk(l.skeleton_size()),
    )
}

/// Refuses a spool that would not fit, before anything is written. A custom-format
/// archive restored by sections takes its skeleton: its layout is read for it.
pub fn check_space(
    archive: &Archive,
    files: Files,
    dir: &Path,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    let layout = skeleton_layout(archive, files, source)?;
    check_room(archive, spool_size(archive, files, layout.as_ref()), dir)
}

/// Refuses a spool of `needed` bytes in `dir` that would not fit.
pub(super) fn check_room(archive: &Archive, needed: u64, dir: &Path) -> Result<(), Failure> {
    let space = SpaceCheck {
        needed,
        available: available_space(dir)?,
    };
    if space.fits() {
        return Ok(());
    }
    Err(NoRoom {
        archive: archive.name(),
        dir: dir.to_path_buf(),
        space,
    }
    .into())
}

/// A spool that would not fit: a [`Code::NoSpace`] failure (`render` words it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// The archive's name, as [`Archive::name`] gives it.
    pub archive: String,
    pub dir: PathBuf,
    pub space: SpaceCheck,
}

/// What of an archive a spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    All,
    /// All but the tables' rows: what `pg_restore --list` and a restore by sections
    /// need. Of a directory-format archive, all but its data files (`1234.dat`); of a
    /// custom-format archive with a layout, its skeleton: the archive with each
    /// table's block emptied.
    TablesOfContents,
}

/// An archive written into a fresh spool folder by [`spool_archive`].
pub(super) struct Spooled {
    /// Removed when dropped.
    pub(super) spool: Spool,
    /// What to give pg_restore: `archive.dump`, or the folder `archive/`.
    pub(super) path: PathBuf,
    /// Whether `path` is a directory-format folder.
    pub(super) directory: bool,
    /// The tables' rows not written out ([`Files::TablesOfContents`]).
    pub(super) deferred: Vec<Rows>,
}

/// One table's rows, left in the repository by a spool.
pub(super) struct Rows {
    /// The dump id of its entry in the table of contents.
    pub(super) id: u32,
    /// Its bytes.
    pub(super) size: u64,
    pub(super) from: RowsIn,
}

impl Rows {
    /// Where it is, for messages: `DB.dir/1234.dat`, or `DB.dump, block 1234`.
    pub(super) fn name(&self) -> String {
        match &self.from {
            RowsIn::File { entry, .. } => entry.path.clone(),
            RowsIn::Block { archive, .. } => format!("{}, block {}", archive.entry.path, self.id),
        }
    }
}

/// Where a table's rows are in a snapshot.
// One per table being restored: an `Entry` inline is fine.
#[allow(clippy::large_enum_variant)]
pub(super) enum RowsIn {
    /// A directory-format archive's data file; its empty placeholder goes at `path`.
    File { entry: Entry, path: PathBuf },
    /// A block of a custom-format archive.
    Block {
        archive: std::sync::Arc<StoredArchive>,
        block: custom::Block,
    },
}

/// A custom-format archive in the repository, with where each of its chunks starts,
/// so that any range of it can be read.
pub(super) struct StoredArchive {
    entry: Entry,
    pub(super) layout: custom::Layout,
    /// The offset of each chunk, then the archive's size.
    offsets: Vec<u64>,
}

impl StoredArchive {
    fn new(
        entry: Entry,
        layout: custom::Layout,
        source: &mut dyn ChunkSource,
    ) -> Result<StoredArchive, Failure> {
        let mut offsets = Vec::with_capacity(entry.chunks.len() + 1);
        let mut at = 0u64;
        for id in &entry.chunks {
            offsets.push(at);
            at += source.length(id)?;
        }
        offsets.push(at);
        if at != entry.size {
            return Err(Failure::new(
                Code::CorruptObject,
                format!(
                    "{}: its chunks hold {at} bytes, the snapshot says {}",
                    entry.path, entry.size
                ),
            ));
        }
        Ok(StoredArchive {
            entry,
            layout,
            offsets,
        })
    }

    /// Feeds bytes `start..end` of the archive to `out`, a piece per chunk.
    pub(super) fn range(
        &self,
        start: u64,
        end: u64,
        source: &mut dyn ChunkSource,
        out: &mut dyn FnMut(bytes::Bytes) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let first = self
            .offsets
            .partition_point(|&o| o <= start)
            .saturating_sub(1);
        for (i, id) in self.entry.chunks.iter().enumerate().skip(first) {
            let (from, to) = (self.offsets[i], self.offsets[i + 1]);
            if from >= end {
                break;
            }
            let bytes = bytes::Bytes::from(source.fetch(id)?);
            if bytes.len() as u64 != to - from {
                return Err(Failure::new(
                    Code::CorruptObject,
                    format!(
                        "{}: a chunk is not the length the index says",
                        self.entry.path
                    ),
                ));
            }
            let lo = start.saturating_sub(from) as usize;
            let hi = (end.min(to) - from) as usize;
            out(bytes.slice(lo..hi))?;
        }
        Ok(())
    }
}

/// The layout of a custom-format archive, read from its side entry and checked
/// against the archive's size.
fn load_layout(archive: &Archive, source: &mut dyn ChunkSource) -> Result<custom::Layout, Failure> {
    let (ArchiveFormat::Custom(dump), Some(entry)) = (&archive.format, &archive.layout) else {
        return Err(failed(format!("{}: no layout recorded", archive.name())));
    };
    let mut json = Vec::new();
    feed(entry, source, &mut json)?;
    let corrupt = |e: String| Failure::new(Code::CorruptObject, format!("{}: {e}", entry.path));
    let layout: custom::Layout =
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
    layout.check(dump.size).map_err(corrupt)?;
    Ok(layout)
}

/// Writes `archive` into a fresh spool folder under `dir` (after checking that it
/// fits): `archive.dump`, or the folder `archive/` with the directory format's files
/// that `files` asks for.
pub(super) fn spool_archive(
    archive: &Archive,
    dir: &Path,
    files: Files,
    source: &mut dyn ChunkSource,
) -> Result<Spooled, Failure> {
    // Read once: for the room the skeleton takes, then to write it.
    let layout = skeleton_layout(archive, files, source)?;
    check_room(archive, spool_size(archive, files, layout.as_ref()), dir)?;
    let io_failed = |what: &str, e: io::Error| {
        Failure::new(
            Code::Io,
            format!("spooling {} ({what}): {e}", archive.name()),
        )
    };
    let spool = Spool::new(dir, "backplan-restore-").map_err(|e| io_failed("folder", e))?;
    let mut deferred = Vec::new();
    let path = match (&archive.format, layout) {
        (ArchiveFormat::Custom(entry), Some(layout)) => {
            let path = spool.path().join("archive.dump");
            let stored = std::sync::Arc::new(StoredArchive::new(entry.clone(), layout, source)?);
            let layout = &stored.layout;
            let file = std::fs::File::create(&path).map_err(|e| io_failed("skeleton", e))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            let mut write =
                |b: bytes::Bytes| out.write_all(&b).map_err(|e| io_failed("skeleton", e));
            stored.range(0, layout.toc_end, source, &mut write)?;
            for block in &layout.blocks {
                if block.table {
                    write(layout.header(block).into())?;
                    write(layout.end_of_data().into())?;
                    deferred.push(Rows {
                        id: block.id,
                        size: block.end - block.data,
                        from: RowsIn::Block {
                            archive: stored.clone(),
                            block: block.clone(),
                        },
                    });
                } else {
                    stored.range(block.start, block.end, source, &mut write)?;
                }
            }
            out.flush().map_err(|e| io_failed("skeleton", e))?;
            path
        }
        (ArchiveFormat::Custom(entry), None) => {
            let path = spool.path().join("archive.dump");
            write_file(&path, entry, source, &mut || Ok(()))?;
            path
        }
        (ArchiveFormat::Directory(entries), _) => {
            let folder = spool.path().join("archive");
            std::fs::create_dir(&folder).map_err(|e| io_failed("folder", e))?;
            for entry in entries {
                let name = file_name(entry);
                if !plain_file_name(name) {
                    return Err(Failure::new(
                        Code::CorruptObject,
                        format!("{}: not a file name of a pg_dump folder", entry.path),
                    ));
                }
                let path = folder.join(name);
                let table = sections::data_file_id(name);
                if let (Files::TablesOfContents, Some(id)) = (files, table) {
                    deferred.push(Rows {
                        id,
                        size: entry.size,
                        from: RowsIn::File {
                            entry: entry.clone(),
                            path,
                        },
                    });
                } else {
                    write_file(&path, entry, source, &mut || Ok(()))?;
                }
            }
            folder
        }
    };
    Ok(Spooled {
        spool,
        directory: matches!(archive.format, ArchiveFormat::Directory(_)),
        path,
        deferred,
    })
}

/// Writes an entry into a new file at `path`, calling `tick` after each chunk.
pub(super) fn write_file(
    path: &Path,
    entry: &Entry,
    source: &mut dyn ChunkSource,
    tick: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<(), Failure> {
    let io_failed = |e: io::Error| Failure::new(Code::Io, format!("spooling {}: {e}", entry.path));
    let file = std::fs::File::create(path).map_err(io_failed)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    feed_with(entry, source, &mut out, tick)?;
    out.flush().map_err(io_failed)
}

/// Feeds an entry's chunks into `writer`.
pub(super) fn feed(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    writer: &mut dyn Write,
) -> Result<u64, Failure> {
    feed_with(entry, source, writer, &mut || Ok(()))
}

/// [`feed`], calling `tick` after each chunk (a failure there stops it).
fn feed_with(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    writer: &mut dyn Write,
    tick: &mut dyn FnMut() -> Result<(), Failure>,
) -> Result<u64, Failure> {
    each_chunk(entry, source, &mut |bytes| {
        writer
            .write_all(&bytes)
            .map_err(|e| failed(format!("writing {}: {e}", entry.path)))?;
        tick()
    })
}

/// Fetches an entry's chunks in order and hands each to `out`; checks that they add
/// up to the entry's size. Returns it.
pub(super) fn each_chunk(
    entry: &Entry,
    source: &mut dyn ChunkSource,
    out: &mut dyn FnMut(Vec<u8>) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let mut n = 0u64;
    for id in &entry.chunks {
        let bytes = source.fetch(id)?;
        n += bytes.len() as u64;
        out(bytes)?;
    }
    if n != entry.size {
        return Err(Failure::new(
            Code::CorruptObject,
            format!(
                "{}: {n} bytes restored, the snapshot says {}",
                entry.path, entry.size
            ),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn entry(path: &str, size: u64) -> Entry {
        Entry::stream(path, size, Vec::new(), Utc::now())
    }

    fn tree(paths: &[(&str, u64)]) -> Tree {
        Tree {
            entries: paths.iter().map(|(p, s)| entry(p, *s)).collect(),
            root: None,
        }
    }

    #[test]
    fn archives_are_found_in_both_formats_in_tree_order_and_names_may_hold_slashes() {
        // `checksums.json` holds no `/` and does not end in `.dump`: no archive, here
        // nor in builds before it.
        let t = tree(&[
            (GLOBALS, 10),
            ("app.counts.json", 5),
            ("app.dump", 1000),
            (CHECKSUMS, 5),
            ("a/b.dir/toc.dat", 100),
            ("a/b.dir/3001.dat", 5000),
            ("a/b.counts.json", 5),
            ("a/b.dir/3002.dat", 1),
        ]);
        let found = archives(&t);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].database, "app");
        assert_eq!(found[0].name(), "app.dump");
        assert!(!found[0].needs_spool());
        assert_eq!(found[1].database, "a/b");
        assert_eq!(found[1].name(), "a/b.dir/");
        assert!(found[1].needs_spool());
        assert_eq!(found[1].entries().len(), 3);
        assert_eq!(found[1].bytes(), 5101);
        // Each file takes whole 4 KiB blocks in a spool.
        assert_eq!(found[1].spool_bytes(Files::All), 4096 + 8192 + 4096);
        // Restored by sections, only the table of contents goes there.
        assert_eq!(found[1].spool_bytes(Files::TablesOfContents), 4096);
    }

    #[test]
    fn a_spool_is_used_for_jobs_or_a_directory_archive_and_goes_where_asked() {
        let custom = archives(&tree(&[("app.dump", 1)])).remove(0);
        let directory = archives(&tree(&[("app.dir/toc.dat", 1)])).remove(0);
        assert_eq!(Feed::choose(&custom, None, None), Feed::Stream);
        assert_eq!(Feed::choose(&custom, Some(1), None), Feed::Stream);
        assert_eq!(
            Feed::choose(&custom, Some(4), Some(Path::new("/srv/spool"))),
            Feed::Spool {
                dir: PathBuf::from("/srv/spool"),
                jobs: 4
            }
        );
        assert_eq!(
            Feed::choose(&directory, None, None),
            Feed::Spool {
                dir: std::env::temp_dir(),
                jobs: 1
            }
        );
    }

    #[test]
    fn a_spool_that_does_not_fit_is_refused_before_anything_is_written() {
        struct NoChunks;
        impl ChunkSource for NoChunks {
            fn fetch(&mut self, _: &crate::crypto::keys::ChunkId) -> Result<Vec<u8>, Failure> {
                Err(Failure::new(Code::VerifyFailed, "nothing may be fetched"))
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let huge = archives(&tree(&[("app.dump", u64::MAX / 2)])).remove(0);
        let spool = dir.path().join("spool");
        let err = spool_archive(&huge, &spool, Files::All, &mut NoChunks)
            .err()
            .expect("it cannot fit");
        assert_eq!(err.code, Code::NoSpace);
        assert!(err.message.contains("app.dump needs "), "{}", err.message);
        assert!(err.message.contains(" available"), "{}", err.message);
        assert!(!spool.exists(), "nothing was created");
        // A small one fits, in a folder that does not exist yet.
        let small = archives(&tree(&[("app.dump", 1)])).remove(0);
        assert!(
            space_for(&small, Files::All, &spool)
                .expect("measured")
                .fits()
        );
    }

    #[test]
    fn only_plain_names_are_written_into_a_spool_folder() {
        for good in ["toc.dat", "3001.dat", "blobs.toc", "blob_16384.dat"] {
            assert!(plain_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_spool_folder_is_private_unique_and_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parent = dir.path().join("missing/spool");
        let (a, b) = (
            Spool::new(&parent, "backplan-test-").expect("a spool"),
            Spool::new(&parent, "backplan-test-").expect("another"),
        );
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        std::fs::write(a.path().join("toc.dat"), b"PGDMP").expect("write");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        b.remove().expect("removed");
        assert_eq!(std::fs::read_dir(&parent).expect("read").count(), 0);
    }
}
