//! Test data and comparison of folder trees: what the end-to-end round trips write
//! into a sandbox and compare after a restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Sandbox;

/// Deterministic incompressible bytes (xorshift64*).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn put(sandbox: &Sandbox, relative: &str, bytes: &[u8]) {
    let path = sandbox.path(relative);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folder");
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// What a folder holds, as restore must reproduce it.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

pub fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a folder entry").path();
            let relative = path.strip_prefix(root).expect("inside root").to_path_buf();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("a link target");
                out.insert(relative, Entry::Symlink(target));
            } else if meta.is_dir() {
                out.insert(relative, Entry::Dir);
                walk(root, &path, out);
            } else {
                out.insert(relative, Entry::File(std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that `restored` holds exactly what `original` holds, byte for byte.
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let (a, b) = (tree(original), tree(restored));
    let names = |t: &BTreeMap<PathBuf, Entry>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "{} and {} hold different entries",
        original.display(),
        restored.display()
    );
    for (path, entry) in &a {
        assert!(
            b.get(path) == Some(entry),
            "{} differs after the restore",
            path.display()
        );
    }
}
