use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use filetime::FileTime;

use super::restore::{ancestors, restore_as};
use super::*;
use crate::crypto::keys::ChunkId;
use crate::pipeline::pseudo_random;
use crate::pipeline::{ChunkSink, ChunkSource, Stored};
use crate::repo::format::{Entry, EntryKind, Tree, Xattr};
use crate::repo::tree::{PackedTree, TreeWalk};
use crate::sources::ScanReport;

/// Chunks of at most 64 KiB, kept in memory by their BLAKE3 hash.
#[derive(Default)]
struct MemStore {
    chunks: HashMap<ChunkId, Vec<u8>>,
    store_calls: usize,
}

impl ChunkSink for MemStore {
    /// A chunk it does not hold (removed by a test) is lost.
    fn lost(&self, chunk: &ChunkId) -> bool {
        !self.chunks.contains_key(chunk)
    }

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

/// [`plan_restore`] naming every path.
fn plan_restore_all(
    tree: &impl TreeWalk,
    target: &Path,
    include: &[String],
) -> Result<RestorePreview, ScanError> {
    plan_restore(tree, target, include, usize::MAX)
}

/// A scan's tree, decoded whole.
fn whole(report: &ScanReport) -> Tree {
    report.tree.unpack().expect("the tree unpacks")
}

fn packed(tree: &Tree) -> PackedTree {
    PackedTree::pack(tree).expect("packs")
}

fn paths(report: &ScanReport) -> Vec<String> {
    whole(report).entries.into_iter().map(|e| e.path).collect()
}

fn entry(report: &ScanReport, path: &str) -> Entry {
    whole(report)
        .entries
        .into_iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path}"))
}

/// What must survive a round trip: everything but inode and ctime.
fn portable(tree: &impl TreeWalk) -> Vec<Entry> {
    let mut entries = Vec::new();
    tree.walk(|e| {
        entries.push(e.clone());
        Ok::<(), ()>(())
    })
    .expect("walked");
    entries
        .into_iter()
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
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).expect("symlink");
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

    let preview = plan_restore_all(&report.tree, &tmp.path().join("out"), &[]).expect("plan");
    assert_eq!(preview.create, report.tree.len());
    assert!(preview.overwrite.is_empty() && preview.identical == 0);
    // The figures do not depend on how many paths are named.
    let short = plan_restore(&report.tree, &tmp.path().join("out"), &[], 2).expect("plan");
    assert_eq!(short.create_listed, preview.create_listed[..2]);
    assert_eq!(
        (short.create, short.bytes_to_write),
        (preview.create, preview.bytes_to_write)
    );
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
        !paths(&restored)
            .iter()
            .any(|p| p.contains(".backplan-restore"))
    );

    // A second restore finds everything identical and needs no force.
    let preview = plan_restore_all(&report.tree, &out, &[]).expect("plan");
    assert!(
        preview.create == 0 && preview.overwrite.is_empty(),
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
fn a_measuring_walk_sizes_what_a_backup_would_read_without_reading_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    write(&root.join("a.bin"), &[1u8; 1000]);
    write(&root.join("sub/b.bin"), &[2u8; 2500]);
    write(&root.join("sub/skip.tmp"), &[3u8; 9000]);
    fs::hard_link(root.join("a.bin"), root.join("sub/a-link.bin")).expect("link");
    std::os::unix::fs::symlink("a.bin", root.join("link")).expect("symlink");
    // A file only root may read: the walk sizes it without opening it.
    write(&root.join("locked.bin"), &[4u8; 300]);
    fs::set_permissions(root.join("locked.bin"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let excludes = vec!["*.tmp".to_string()];

    let measured = measure_folder(root, &excludes).expect("measured");
    // Every regular file not excluded, a hard link counted as a snapshot counts it:
    // as much as the tree of a backup sums, where the backup can read them all.
    assert_eq!(
        measured,
        Measured {
            files: 4,
            bytes: 1000 + 2500 + 1000 + 300
        }
    );
    fs::set_permissions(root.join("locked.bin"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut store = MemStore::default();
    let report = backup_folder(root, &excludes, false, None, &mut store).expect("backup");
    let tree_bytes: u64 = whole(&report).entries.iter().map(|e| e.size).sum();
    assert_eq!(report.size, tree_bytes);
    assert_eq!(
        measure_folder(root, &excludes).expect("measured").bytes,
        tree_bytes
    );
    assert!(store.store_calls > 0);
    // The named paths of a config source, the same way.
    let paths = [root.join("sub"), root.join("a.bin")];
    assert_eq!(
        measure_paths(&paths).expect("measured"),
        Measured {
            files: 4,
            bytes: 1000 + 2500 + 9000 + 1000
        }
    );

    // A folder that is gone is an error, not an empty measure.
    let gone = measure_folder(&root.join("gone"), &excludes).expect_err("no folder");
    assert_eq!(gone.code, Code::SourceFailed);
    let gone = measure_paths(&[root.join("gone")]).expect_err("no path");
    assert_eq!(gone.code, Code::SourceFailed);
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

    let second = backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
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
    let mut fake = whole(&third);
    for e in &mut fake.entries {
        e.kind = EntryKind::Symlink;
    }
    backup_folder(root, &[], false, Some(&packed(&fake)), &mut store).expect("fourth");
    assert_eq!(store.store_calls, 7);
}

#[test]
fn a_backup_beside_its_parent_reuses_what_stayed_while_paths_come_and_go_around_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for p in ["a", "b/x", "b/y", "c", "e/f/g", "z"] {
        write(&root.join(p), p.as_bytes());
    }
    let mut store = MemStore::default();
    let first = backup_folder(root, &[], false, None, &mut store).expect("first");
    // Gone, added before, between and after what stays; a file turned folder.
    fs::remove_file(root.join("b/x")).expect("rm");
    fs::remove_file(root.join("c")).expect("rm");
    write(&root.join("c/inside"), b"new");
    write(&root.join("0first"), b"new");
    write(&root.join("b/w"), b"new");
    write(&root.join("d"), b"new");
    write(&root.join("zz"), b"new");
    let calls = store.store_calls;
    let second = backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
    assert_eq!(store.store_calls - calls, 5, "only the new files are read");
    assert_eq!((second.files, second.files_reused), (9, 4));
    for kept in ["a", "b/y", "e/f/g", "z"] {
        assert_eq!(entry(&second, kept).chunks, entry(&first, kept).chunks);
    }
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
}

#[test]
fn a_file_whose_chunks_a_destination_lost_is_read_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    write(&root.join("kept"), b"kept");
    write(&root.join("lost"), b"lost");
    let mut store = MemStore::default();
    let first = backup_folder(root, &[], false, None, &mut store).expect("first");
    let chunk = entry(&first, "lost").chunks[0];
    store.chunks.remove(&chunk);
    let second = backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
    assert_eq!((second.files_reused, second.bytes_read), (1, 4));
    assert!(store.chunks.contains_key(&chunk), "stored again");
}

/// `tree` with the entry at `path` made undecodable (a number for its path).
fn damaged(tree: &PackedTree, path: &str) -> PackedTree {
    let json = String::from_utf8(zstd::decode_all(tree.compressed()).expect("zstd"))
        .expect("utf-8")
        .replacen(&format!(r#""path":"{path}""#), r#""path":7"#, 1);
    PackedTree::new(zstd::encode_all(json.as_bytes(), 3).expect("zstd")).expect("framed")
}

#[test]
fn a_parent_tree_that_cannot_be_read_on_is_a_warning_and_the_rest_is_read_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for p in ["a", "b", "c"] {
        write(&root.join(p), p.as_bytes());
    }
    let mut store = MemStore::default();
    let first = backup_folder(root, &[], false, None, &mut store).expect("first");
    let parent = damaged(&first.tree, "b");
    let second = backup_folder(root, &[], false, Some(&parent), &mut store).expect("second");
    assert_eq!(entry(&second, "a").chunks, entry(&first, "a").chunks);
    assert_eq!((second.files_reused, second.bytes_read), (1, 2));
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(
        second.warnings[0].contains("last snapshot's tree is damaged"),
        "{:?}",
        second.warnings
    );

    // Named paths too: what the parent lists before the damage is reused.
    let paths: Vec<PathBuf> = ["a", "b", "c"].iter().map(|p| root.join(p)).collect();
    let first = backup_paths(&paths, None, &mut store).expect("first");
    let b = root.join("b");
    let parent = damaged(
        &first.tree,
        b.to_str().expect("utf-8").trim_start_matches('/'),
    );
    let second = backup_paths(&paths, Some(&parent), &mut store).expect("second");
    assert_eq!((second.files_reused, second.bytes_read), (1, 2));
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
}

#[test]
fn a_file_whose_other_links_are_outside_the_folder_is_a_group_of_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write(&src.join("alone"), b"alone");
    write(&src.join("pair/one"), b"pair");
    fs::hard_link(src.join("alone"), tmp.path().join("outside")).expect("link");
    fs::hard_link(src.join("pair/one"), src.join("pair/two")).expect("link");
    let mut store = MemStore::default();
    let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
    let (alone, one, two) = (
        entry(&report, "alone"),
        entry(&report, "pair/one"),
        entry(&report, "pair/two"),
    );
    assert!(alone.link.is_some() && one.link.is_some());
    assert_ne!(alone.link, one.link);
    assert_eq!(one.link, two.link);
    assert_eq!(store.store_calls, 2, "each inode read once");
    let out = tmp.path().join("out");
    let done = restore(&report.tree, &out, &[], false, &mut store).expect("restore");
    assert_eq!((done.files_written, done.links_written), (2, 1));
    assert_eq!(fs::read(out.join("alone")).expect("read"), b"alone");
    let meta = |p: &str| fs::metadata(out.join(p)).expect("meta");
    assert_eq!(meta("alone").nlink(), 1);
    assert_eq!(meta("pair/one").ino(), meta("pair/two").ino());
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

    let second = backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
    assert_eq!(second.files_reused, 1);
    assert_eq!(entry(&second, "tagged").xattrs, want);
    // They come from the parent entry, not from another listing.
    let mut marked = whole(&second);
    for e in &mut marked.entries {
        for x in &mut e.xattrs {
            x.value = b"from the parent".to_vec();
        }
    }
    let from_parent =
        backup_folder(root, &[], false, Some(&packed(&marked)), &mut store).expect("marked");
    assert_eq!(
        entry(&from_parent, "tagged").xattrs[0].value,
        b"from the parent"
    );

    // A parent written before owners and attributes were recorded lends none:
    // they are listed.
    let mut old = whole(&second);
    for e in &mut old.entries {
        (e.uid, e.gid, e.xattrs) = (None, None, Vec::new());
    }
    let third = backup_folder(root, &[], false, Some(&packed(&old)), &mut store).expect("third");
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
    let report = backup_folder(root, &[], false, None, &mut MemStore::default()).expect("backup");
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
    let report = backup_folder(root, &[], false, None, &mut MemStore::default()).expect("backup");
    assert_eq!(paths(&report), ["fine"]);
    assert_eq!(report.unreadable, 1);
    let err = backup_folder(root, &[], true, None, &mut MemStore::default()).expect_err("fatal");
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
    let preview = plan_restore_all(&report.tree, &out, &[]).expect("plan");
    assert_eq!(preview.overwrite, ["conf/app.env"]);
    assert_eq!(preview.identical_listed, ["conf", "conf/other"]);
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
    let preview = plan_restore_all(&report.tree, &out, &include).expect("plan");
    assert_eq!(
        preview.create_listed,
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

    let err = plan_restore_all(&report.tree, &out, &["*.gif".to_string()]).expect_err("no match");
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
        let err = plan_restore_all(&tree, &target, &[]).expect_err(bad);
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
    let err = plan_restore_all(&tree, &target, &[]).expect_err("refused");
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
    let preview = plan_restore_all(&tree, &target, &[]).expect("plan");
    assert_eq!(preview.overwrite, ["dir"]);
    assert_eq!(preview.create_listed, ["dir/file.txt"]);
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
    let err =
        backup_paths(&[PathBuf::from("relative/.env")], None, &mut store).expect_err("relative");
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
    let preview = plan_restore_all(&tree, &target, &[]).expect("plan");
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
    paths(report)
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
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 4096], 100 * 1024 * 1024).expect("write");
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
    let restored = backup_folder(&out, &[], false, None, &mut MemStore::default()).expect("rescan");
    assert_eq!(portable(&restored.tree), portable(&report.tree));
    let root_of = |t: &PackedTree| {
        let r = t.root().cloned().expect("root");
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
            let m = fs::symlink_metadata(out.join(OsStr::from_bytes(p.as_bytes()))).expect("meta");
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
    let preview = plan_restore_all(&report.tree, &out, &include).expect("plan");
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
    let second = backup_folder(root, &[], false, Some(&first.tree), &mut store).expect("second");
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
    let done =
        restore_as(&tree, &out, &RestoreOptions::default(), &mut store, false).expect("restore");
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
    let root = report.tree.root().cloned().expect("root");
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

#[test]
fn a_packed_tree_restores_what_the_tree_unpacked_from_it_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    sample(&src);
    fs::create_dir_all(src.join("docs/more")).expect("mkdir");
    fs::hard_link(src.join("a.txt"), src.join("docs/more/a-again")).expect("link");
    let mut store = MemStore::default();
    let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
    let (packed, unpacked) = (&report.tree, whole(&report));

    let (whole_out, packed_out) = (tmp.path().join("whole"), tmp.path().join("packed"));
    let from_whole = restore(&unpacked, &whole_out, &[], false, &mut store).expect("restore");
    let done = restore(packed, &packed_out, &[], false, &mut store).expect("restore");
    assert_eq!(done, from_whole);
    assert_eq!((done.files_written, done.links_written), (6, 1));
    let rescan = |out: &Path| {
        let mut again = MemStore::default();
        portable(
            &backup_folder(out, &[], false, None, &mut again)
                .expect("rescan")
                .tree,
        )
    };
    assert_eq!(rescan(&packed_out), rescan(&whole_out));
    assert_eq!(rescan(&packed_out), portable(&report.tree));
    let include = ["docs/deep".to_string()];
    assert_eq!(
        plan_restore_all(packed, &tmp.path().join("part"), &include).expect("plan"),
        plan_restore_all(&unpacked, &tmp.path().join("part"), &include).expect("plan")
    );
}

#[test]
fn a_tree_out_of_path_order_is_sorted_before_it_is_restored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    sample(&src);
    let mut store = MemStore::default();
    let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
    let mut reversed = whole(&report);
    reversed.entries.reverse();

    let out = tmp.path().join("out");
    let preview = plan_restore_all(&reversed, &out, &[]).expect("plan");
    assert_eq!(
        preview,
        plan_restore_all(&report.tree, &out, &[]).expect("plan")
    );
    let done = restore(&packed(&reversed), &out, &[], false, &mut store).expect("restore");
    assert_eq!(done.files_written, 6);
    let mut again = MemStore::default();
    let restored = backup_folder(&out, &[], false, None, &mut again).expect("rescan");
    assert_eq!(portable(&restored.tree), portable(&report.tree));

    // Out of order, a path held twice is still found, before anything is written.
    let twice = tmp.path().join("twice");
    let dup = reversed.entries[3].clone();
    reversed.entries.push(dup);
    let err = restore(&reversed, &twice, &[], false, &mut store).expect_err("refused");
    assert!(err.message.contains("twice"), "{}", err.message);
    assert!(!twice.exists());
}

#[test]
fn a_directory_without_search_permission_gets_its_mode_after_later_links_into_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write(&src.join("a/one"), b"shared");
    write(&src.join("z/keep"), b"other");
    fs::hard_link(src.join("a/one"), src.join("z/two")).expect("link");
    let mut store = MemStore::default();
    let report = backup_folder(&src, &[], false, None, &mut store).expect("backup");
    // Recorded without search permission: set while walking, it would keep the
    // restore from reaching `a/one` for the link `z/two` that comes after it.
    let mut tree = whole(&report);
    tree.entries
        .iter_mut()
        .find(|e| e.path == "a")
        .expect("a")
        .mode = 0o600;
    let out = tmp.path().join("out");
    let done = restore(&packed(&tree), &out, &[], false, &mut store).expect("restore");
    assert_eq!((done.files_written, done.links_written), (2, 1));
    let a = fs::metadata(out.join("a")).expect("meta");
    assert_eq!(a.mode() & 0o7777, 0o600);
    set_mode(&out.join("a"), 0o700);
    assert_eq!(
        fs::metadata(out.join("a/one")).expect("meta").ino(),
        fs::metadata(out.join("z/two")).expect("meta").ino()
    );
}
