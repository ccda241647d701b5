//! A snapshot's tree written and walked entry by entry, so that a backup, a restore
//! or its preview handles a tree of any size: [`PackedTree`] keeps the tree object's
//! compressed JSON as it is stored (54 bytes per entry on a tree of small files) and
//! decodes one entry at a time, [`TreeWriter`] adds one at a time, where a [`Tree`]
//! holds every entry decoded (several hundred bytes each).

use std::fmt;
use std::io::{self, Write};

use super::format::{Entry, Tree, entry_order};
use crate::error::{Code, Failure};

/// Entries that can be walked in their stored order, any number of times.
pub trait TreeWalk {
    /// Calls `f` on each entry in the order stored; stops at the first error `f`
    /// returns.
    fn walk<E>(&self, f: impl FnMut(&Entry) -> Result<(), E>) -> Result<(), WalkError<E>>;

    /// The backed-up folder itself (see [`Tree::root`]).
    fn root(&self) -> Option<&Entry>;

    /// How many entries there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry decoded, in path order: for a tree whose stored order is not.
    fn sorted(&self) -> Result<Tree, String>;
}

/// Why a walk stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError<E> {
    /// The callback's error.
    Stopped(E),
    /// The tree could not be decoded.
    Damaged(String),
}

impl TreeWalk for Tree {
    fn walk<E>(&self, mut f: impl FnMut(&Entry) -> Result<(), E>) -> Result<(), WalkError<E>> {
        self.entries
            .iter()
            .try_for_each(&mut f)
            .map_err(WalkError::Stopped)
    }

    fn root(&self) -> Option<&Entry> {
        self.root.as_ref()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn sorted(&self) -> Result<Tree, String> {
        let mut tree = self.clone();
        tree.entries.sort_by(entry_order);
        Ok(tree)
    }
}

/// A tree as its object stores it: zstd-compressed JSON, decoded as it is walked.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedTree {
    json_zst: Vec<u8>,
    root: Option<Entry>,
    len: usize,
}

impl fmt::Debug for PackedTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedTree")
            .field("entries", &self.len)
            .field("compressed_bytes", &self.json_zst.len())
            .finish()
    }
}

impl Default for PackedTree {
    /// A tree without entries.
    fn default() -> PackedTree {
        PackedTree::pack(&Tree::default()).expect("an empty tree packs")
    }
}

/// What a snapshot's tree that stops decoding part-way fails with.
pub fn unreadable(why: String) -> Failure {
    Failure::new(
        Code::CorruptObject,
        format!("the snapshot's tree cannot be read: {why}"),
    )
}

impl PackedTree {
    /// Takes a tree object's opened body (zstd-compressed JSON). Reads it through
    /// once, cutting out the entries without decoding them, for their number and the
    /// root; an entry that does not decode fails the first walk, before a restore
    /// writes anything.
    pub fn new(json_zst: Vec<u8>) -> Result<PackedTree, String> {
        let mut tree = PackedTree {
            json_zst,
            root: None,
            len: 0,
        };
        (tree.root, tree.len) = tree.frame()?;
        Ok(tree)
    }

    /// Packs `tree` as a tree object stores it.
    pub fn pack(tree: &Tree) -> io::Result<PackedTree> {
        let mut writer = TreeWriter::new()?;
        for entry in &tree.entries {
            writer.push(entry)?;
        }
        writer.finish(tree.root.clone())
    }

    /// The whole tree, entries in their stored order, for the readers that need it
    /// whole (a database's or a Redis snapshot's few entries).
    pub fn unpack(&self) -> Result<Tree, Failure> {
        self.whole().map_err(unreadable)
    }

    /// [`PackedTree::unpack`], failing with why the tree cannot be read.
    pub(super) fn whole(&self) -> Result<Tree, String> {
        let mut entries = Vec::with_capacity(self.len);
        for entry in self.entries() {
            entries.push(entry?);
        }
        Ok(Tree {
            entries,
            root: self.root.clone(),
        })
    }

    /// The compressed JSON, as the tree object's body stores it.
    pub fn compressed(&self) -> &[u8] {
        &self.json_zst
    }

    /// The entries in their stored order, decoded one at a time as they are pulled
    /// (a walk beside another one, such as a backup's scan beside its parent).
    pub fn entries(&self) -> Entries<'_> {
        match Elements::new(&self.json_zst) {
            Ok(elements) => Entries {
                elements: Some(elements),
                failed: None,
            },
            Err(why) => Entries {
                elements: None,
                failed: Some(why),
            },
        }
    }

    /// Cuts the entries out without decoding them: the root and their number.
    fn frame(&self) -> Result<(Option<Entry>, usize), String> {
        let mut elements = Elements::new(&self.json_zst)?;
        while elements.next()?.is_some() {}
        let len = elements.taken;
        Ok((elements.root()?, len))
    }
}

/// The entries of a [`PackedTree`] in their stored order, decoded as they are
/// pulled. After an error, nothing more.
pub struct Entries<'a> {
    elements: Option<Elements<'a>>,
    failed: Option<String>,
}

impl fmt::Debug for Entries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entries")
            .field("taken", &self.elements.as_ref().map(|e| e.taken))
            .finish_non_exhaustive()
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(why) = self.failed.take() {
            return Some(Err(why));
        }
        let next = match self.elements.as_mut()?.next() {
            Ok(Some(element)) => Some(serde_json::from_slice(element).map_err(|e| e.to_string())),
            Ok(None) => None,
            Err(why) => Some(Err(why)),
        };
        if !matches!(next, Some(Ok(_))) {
            self.elements = None;
        }
        next
    }
}

/// A tree written entry by entry into the compressed JSON its object stores: what
/// it holds is tens of bytes per entry, not the entries decoded. Entries are pushed
/// in path order (the writer does not sort them).
pub struct TreeWriter {
    encoder: zstd::Encoder<'static, Vec<u8>>,
    /// One entry's JSON, handed to the encoder in one piece.
    scratch: Vec<u8>,
    len: usize,
}

impl fmt::Debug for TreeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeWriter")
            .field("entries", &self.len)
            .finish_non_exhaustive()
    }
}

impl TreeWriter {
    pub fn new() -> io::Result<TreeWriter> {
        let mut encoder = zstd::Encoder::new(Vec::new(), TREE_LEVEL)?;
        encoder.write_all(b"{\"entries\":[")?;
        Ok(TreeWriter {
            encoder,
            scratch: Vec::new(),
            len: 0,
        })
    }

    /// Adds an entry after the ones pushed so far.
    pub fn push(&mut self, entry: &Entry) -> io::Result<()> {
        self.scratch.clear();
        if self.len > 0 {
            self.scratch.push(b',');
        }
        serde_json::to_writer(&mut self.scratch, entry)?;
        self.encoder.write_all(&self.scratch)?;
        self.len += 1;
        Ok(())
    }

    /// How many entries were pushed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tree, with `root` after its entries as `serde_json` writes a [`Tree`].
    pub fn finish(mut self, root: Option<Entry>) -> io::Result<PackedTree> {
        self.encoder.write_all(b"]")?;
        if let Some(root) = &root {
            self.encoder.write_all(b",\"root\":")?;
            serde_json::to_writer(&mut self.encoder, root)?;
        }
        self.encoder.write_all(b"}")?;
        Ok(PackedTree {
            json_zst: self.encoder.finish()?,
            root,
            len: self.len,
        })
    }
}

/// The zstd level of a tree object's JSON.
const TREE_LEVEL: i32 = 3;

/// The list of entries in a tree's JSON, as `serde_json` writes a [`Tree`]
/// (`{"entries":[…]` first), cut out one entry at a time by its braces.
struct Elements<'a> {
    json: JsonStream<'a>,
    /// Entries cut out so far.
    taken: usize,
    ended: bool,
}

impl<'a> Elements<'a> {
    fn new(json_zst: &'a [u8]) -> Result<Elements<'a>, String> {
        let mut json = JsonStream::new(json_zst)?;
        if !json.take(b"{\"entries\":[")? {
            return Err("it is not a tree's JSON".into());
        }
        Ok(Elements {
            json,
            taken: 0,
            ended: false,
        })
    }

    /// The next entry's JSON, undecoded; `None` after the last.
    fn next(&mut self) -> Result<Option<&[u8]>, String> {
        if self.ended {
            return Ok(None);
        }
        match self.json.next_byte()? {
            Some(b']') => {
                self.ended = true;
                return Ok(None);
            }
            Some(b',') if self.taken > 0 => {}
            Some(b'{') if self.taken == 0 => self.json.back(),
            _ => return Err("its list of entries is malformed".into()),
        }
        self.taken += 1;
        self.json.value().map(Some)
    }

    /// What follows the entries, taken after the last: `}`, or the root and `}`.
    fn root(mut self) -> Result<Option<Entry>, String> {
        #[derive(serde::Deserialize)]
        struct Rest {
            #[serde(default)]
            root: Option<Entry>,
        }
        let rest = self.json.rest()?;
        let rest = match rest.strip_prefix(b",") {
            Some(fields) => [b"{", fields].concat(),
            None => [b"{", rest].concat(),
        };
        let rest: Rest = serde_json::from_slice(&rest).map_err(|e| e.to_string())?;
        Ok(rest.root)
    }
}

/// A zstd-compressed JSON text read piece by piece, holding what it has not handed
/// out yet and the value being cut out.
struct JsonStream<'a> {
    decoder: zstd::Decoder<'a, &'a [u8]>,
    buf: Vec<u8>,
    at: usize,
    done: bool,
}

/// How much decompressed JSON is read at once.
const JSON_PIECE: usize = 256 * 1024;

impl<'a> JsonStream<'a> {
    fn new(json_zst: &'a [u8]) -> Result<JsonStream<'a>, String> {
        Ok(JsonStream {
            decoder: zstd::Decoder::with_buffer(json_zst).map_err(|e| e.to_string())?,
            buf: Vec::new(),
            at: 0,
            done: false,
        })
    }

    /// Reads one more piece; false at the end.
    fn fill(&mut self) -> Result<bool, String> {
        use std::io::Read;
        if self.done {
            return Ok(false);
        }
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + JSON_PIECE, 0);
        let n = loop {
            match self.decoder.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read.map_err(|e| e.to_string())?,
            }
        };
        self.buf.truncate(len + n);
        self.done = n == 0;
        Ok(n > 0)
    }

    /// The next byte that is not white space, taken.
    fn next_byte(&mut self) -> Result<Option<u8>, String> {
        loop {
            while let Some(&b) = self.buf.get(self.at) {
                self.at += 1;
                if !b.is_ascii_whitespace() {
                    return Ok(Some(b));
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Gives back the byte [`JsonStream::next_byte`] took.
    fn back(&mut self) {
        self.at -= 1;
    }

    /// Takes `expected` if the text goes on with exactly it.
    fn take(&mut self, expected: &[u8]) -> Result<bool, String> {
        while self.buf.len() - self.at < expected.len() {
            if !self.fill()? {
                return Ok(false);
            }
        }
        let matched = self.buf[self.at..].starts_with(expected);
        if matched {
            self.at += expected.len();
        }
        Ok(matched)
    }

    /// Takes the object or array that starts here (after white space), up to its
    /// closing bracket (brackets inside strings skipped), undecoded.
    fn value(&mut self) -> Result<&[u8], String> {
        let (mut depth, mut in_string) = (0usize, false);
        let mut i = self.at;
        loop {
            while i < self.buf.len() {
                if in_string {
                    // Most of a tree's bytes are in strings (names, chunk ids).
                    match memchr::memchr2(b'"', b'\\', &self.buf[i..]) {
                        None => i = self.buf.len(),
                        // An escape: the byte after it too (perhaps in the next piece).
                        Some(k) if self.buf[i + k] == b'\\' => i += k + 2,
                        Some(k) => (i, in_string) = (i + k + 1, false),
                    }
                    continue;
                }
                let b = self.buf[i];
                i += 1;
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth
                            .checked_sub(1)
                            .ok_or("a bracket closes what was never opened")?;
                        if depth == 0 {
                            let start = std::mem::replace(&mut self.at, i);
                            return Ok(&self.buf[start..i]);
                        }
                    }
                    _ if depth == 0 && !b.is_ascii_whitespace() => {
                        return Err("an entry is not an object".into());
                    }
                    _ => {}
                }
            }
            // `fill` drops what comes before `at`, the value's start.
            let dropped = self.at;
            if !self.fill()? {
                return Err("it ends inside an entry".into());
            }
            i -= dropped;
        }
    }

    /// Everything left, to the end.
    fn rest(&mut self) -> Result<&[u8], String> {
        while self.fill()? {}
        Ok(&self.buf[self.at..])
    }
}

impl TreeWalk for PackedTree {
    fn walk<E>(&self, mut f: impl FnMut(&Entry) -> Result<(), E>) -> Result<(), WalkError<E>> {
        for entry in self.entries() {
            f(&entry.map_err(WalkError::Damaged)?).map_err(WalkError::Stopped)?;
        }
        Ok(())
    }

    fn root(&self) -> Option<&Entry> {
        self.root.as_ref()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn sorted(&self) -> Result<Tree, String> {
        let mut tree = self.whole()?;
        tree.entries.sort_by(entry_order);
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::ChunkId;
    use crate::repo::format::EntryKind;

    fn tree(n: usize) -> Tree {
        Tree {
            entries: (0..n)
                .map(|i| Entry {
                    path: format!("d/f{i:05}"),
                    size: i as u64,
                    chunks: vec![ChunkId([i as u8; 32])],
                    ..Entry::default()
                })
                .collect(),
            root: Some(Entry {
                kind: EntryKind::Dir,
                mode: 0o750,
                ..Entry::default()
            }),
        }
    }

    fn walked(t: &impl TreeWalk) -> Vec<Entry> {
        let mut out = Vec::new();
        t.walk(|e| {
            out.push(e.clone());
            Ok::<(), ()>(())
        })
        .expect("walked");
        out
    }

    #[test]
    fn a_packed_tree_walks_the_entries_and_root_of_the_tree_it_was_made_from() {
        let whole = tree(1000);
        let packed =
            PackedTree::new(PackedTree::pack(&whole).expect("packs").json_zst).expect("decodes");
        assert_eq!(packed.len(), 1000);
        assert_eq!(packed.root(), whole.root.as_ref());
        assert_eq!(walked(&packed), whole.entries);
        assert_eq!(walked(&whole), whole.entries);
        assert_eq!(packed.unpack().expect("unpacks"), whole);
        // What it keeps is the compressed JSON: far less than the entries decoded.
        assert!(
            packed.compressed().len() < 1000 * 80,
            "{}",
            packed.compressed().len()
        );
    }

    #[test]
    fn a_tree_written_entry_by_entry_is_the_json_of_the_tree_and_pulls_back_the_same() {
        let whole = tree(500);
        let mut writer = TreeWriter::new().expect("writer");
        for e in &whole.entries {
            writer.push(e).expect("pushed");
        }
        assert_eq!(writer.len(), 500);
        let packed = writer.finish(whole.root.clone()).expect("finished");
        // The JSON `serde_json` writes for the whole tree: what every reader of a
        // tree object (the whole-tree decoder included) expects.
        let json = zstd::decode_all(packed.compressed()).expect("zstd");
        assert_eq!(json, serde_json::to_vec(&whole).expect("json"));
        let pulled: Vec<Entry> = packed.entries().map(|e| e.expect("entry")).collect();
        assert_eq!(pulled, whole.entries);
        let reopened = PackedTree::new(packed.compressed().to_vec()).expect("opens");
        assert_eq!(
            (reopened.len(), reopened.root()),
            (500, whole.root.as_ref())
        );
    }

    #[test]
    fn pulled_entries_end_at_the_first_that_does_not_decode() {
        let json = br#"{"entries":[{"path":"a","kind":"file","mode":420,"mtime":1,"mtime_ns":0},{"path":1},{"path":"c","kind":"file","mode":420,"mtime":1,"mtime_ns":0}]}"#;
        let packed =
            PackedTree::new(zstd::encode_all(&json[..], 3).expect("zstd")).expect("framed");
        let pulled: Vec<Result<Entry, String>> = packed.entries().collect();
        assert_eq!(pulled.len(), 2, "{pulled:?}");
        assert_eq!(pulled[0].as_ref().map(|e| e.path.as_str()), Ok("a"));
        assert!(
            pulled[1]
                .as_ref()
                .is_err_and(|why| why.contains("invalid type"))
        );
    }

    #[test]
    fn a_walk_stops_at_the_callbacks_first_error() {
        let packed = PackedTree::pack(&tree(10)).expect("packs");
        let mut seen = 0;
        let stopped = packed.walk(|e| {
            seen += 1;
            if e.size == 3 {
                Err(e.path.clone())
            } else {
                Ok(())
            }
        });
        assert_eq!(stopped, Err(WalkError::Stopped("d/f00003".to_string())));
        assert_eq!(seen, 4);
    }

    #[test]
    fn a_damaged_or_truncated_body_is_refused_when_opened() {
        let mut json_zst = PackedTree::pack(&tree(100)).expect("packs").json_zst;
        json_zst.truncate(json_zst.len() / 2);
        assert!(PackedTree::new(json_zst).is_err());
        let not_a_tree = zstd::encode_all(&b"[1,2]"[..], 3).expect("zstd");
        assert!(PackedTree::new(not_a_tree).is_err());
        // Opening only cuts the entries out; the first walk decodes them.
        let bad_entry = zstd::encode_all(&b"{\"entries\":[{\"path\":1}]}"[..], 3).expect("zstd");
        let packed = PackedTree::new(bad_entry).expect("framed");
        assert_eq!(packed.len(), 1);
        match packed.walk(|_| Ok::<(), ()>(())) {
            Err(WalkError::Damaged(why)) => assert!(why.contains("invalid type"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn brackets_quotes_and_backslashes_inside_names_do_not_cut_an_entry_short() {
        let mut whole = tree(3);
        whole.entries[1].path = r#"we}ird/"{[na]me\\"#.to_string();
        whole.entries[1].target = Some("}\\\"]".to_string());
        whole.entries[2].set_path_bytes(b"bytes\xff}".to_vec());
        // Entries larger than the pieces the stream is read in.
        whole.entries[0].chunks = vec![ChunkId([7; 32]); 20_000];
        let packed =
            PackedTree::new(PackedTree::pack(&whole).expect("packs").json_zst).expect("decodes");
        assert_eq!(walked(&packed), whole.entries);
        assert_eq!(packed.root(), whole.root.as_ref());
        let rootless = Tree {
            root: None,
            ..whole.clone()
        };
        let packed =
            PackedTree::new(PackedTree::pack(&rootless).expect("packs").json_zst).expect("decodes");
        assert_eq!((packed.len(), packed.root()), (3, None));
        let empty = PackedTree::new(PackedTree::pack(&Tree::default()).expect("packs").json_zst)
            .expect("decodes");
        assert!(empty.is_empty() && walked(&empty).is_empty());
    }

    #[test]
    fn sorted_puts_the_entries_in_path_order_components_first() {
        let mut whole = tree(0);
        for p in ["a.b", "a/b", "a"] {
            whole.entries.push(Entry {
                path: p.into(),
                ..Entry::default()
            });
        }
        let paths = |t: Tree| t.entries.into_iter().map(|e| e.path).collect::<Vec<_>>();
        assert_eq!(paths(whole.sorted().expect("sorted")), ["a", "a/b", "a.b"]);
        let packed = PackedTree::pack(&whole).expect("packs");
        assert_eq!(paths(packed.sorted().expect("sorted")), ["a", "a/b", "a.b"]);
    }
}
