//! Where each key and value of a YAML document sits, by path (`sources.db.retention`,
//! `sources.db.depends_on[0]`), so that every diagnostic can point at its line.
//!
//! serde_yaml gives locations only for its own errors; the semantic checks need the
//! span of any value, so the text is walked once more with yaml-rust2's marked events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use miette::SourceSpan;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Spans of keys and values by path.
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    keys: HashMap<String, SourceSpan>,
    values: HashMap<String, SourceSpan>,
    /// Keys that appear twice in one mapping: (path, first, second).
    pub duplicates: Vec<(String, SourceSpan, SourceSpan)>,
    /// Where a second YAML document starts (its `---`): a policy is one document.
    pub second_document: Option<SourceSpan>,
    /// Paths whose value is a mapping or a list.
    collections: HashSet<String>,
    /// The text indexed, to read a value back.
    text: Arc<str>,
}

impl SpanIndex {
    /// Indexes `text`. A document that does not parse gives an empty index: its syntax
    /// error is reported by serde_yaml, with its own location.
    pub fn new(text: &str) -> SpanIndex {
        let mut builder = Builder {
            text,
            char_offsets: text.char_indices().map(|(i, _)| i).collect(),
            index: SpanIndex {
                text: Arc::from(text),
                ..SpanIndex::default()
            },
            stack: Vec::new(),
            documents: 0,
        };
        let mut parser = Parser::new_from_str(text);
        // Every document is read, so that a second one is found; only the first is
        // indexed.
        if parser.load(&mut builder, true).is_err() {
            return SpanIndex {
                second_document: builder.index.second_document,
                ..SpanIndex::default()
            };
        }
        builder.index
    }

    /// The span of the first scalar at or under `path` whose written text (quotes
    /// aside) is `value`: where a value serde could not place sits.
    pub fn find_scalar(&self, path: &str, value: &str) -> Option<SourceSpan> {
        let text = &*self.text;
        self.values
            .iter()
            .filter(|(p, _)| {
                path.is_empty()
                    || p.strip_prefix(path)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .map(|(_, span)| *span)
            .filter(|span| {
                text.get(span.offset()..span.offset() + span.len())
                    .is_some_and(|t| t.trim_matches(['"', '\'']) == value)
            })
            .min_by_key(|span| span.offset())
    }

    /// The text a span of the indexed document covers.
    pub fn text(&self, span: SourceSpan) -> Option<&str> {
        self.text.get(span.offset()..span.offset() + span.len())
    }

    /// The span of the key at `path` (falling back to its value).
    pub fn key(&self, path: &str) -> Option<SourceSpan> {
        self.keys
            .get(path)
            .or_else(|| self.values.get(path))
            .copied()
    }

    /// The span of the value at `path` (falling back to its key).
    pub fn value(&self, path: &str) -> Option<SourceSpan> {
        self.values
            .get(path)
            .or_else(|| self.keys.get(path))
            .copied()
    }

    /// Whether a scalar value (not a mapping or list) sits at `path`.
    pub fn has_value(&self, path: &str) -> bool {
        self.values.contains_key(path) && !self.collections.contains(path)
    }

    /// The span of the key at `path`, or of its nearest ancestor that has one.
    pub fn nearest(&self, path: &str) -> Option<SourceSpan> {
        let mut path = path;
        loop {
            if let Some(span) = self.key(path) {
                return Some(span);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

impl SpanIndex {
    /// The path of the mapping that holds the key on, or nearest above, 1-based `line`
    /// of `text`: `sources.db.retention` for the line `keep_daily: 7` under it.
    pub fn section_at_line(&self, text: &str, line: usize) -> Option<String> {
        let (path, _) = self
            .keys
            .iter()
            .map(|(path, span)| (path, line_col(text, span.offset()).0))
            .filter(|(_, l)| *l <= line)
            .max_by_key(|(path, l)| (*l, path.len()))?;
        let parent = path.rfind('.').map(|i| &path[..i]);
        Some(parent.unwrap_or(path).to_string())
    }
}

/// Joins a path and a mapping key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a path and a sequence index.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: HashMap<String, SourceSpan>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder<'a> {
    text: &'a str,
    /// The byte offset of each character: yaml-rust2's `Marker::index` counts
    /// characters, not bytes (whatever its documentation says), and spans are bytes.
    char_offsets: Vec<usize>,
    index: SpanIndex,
    stack: Vec<Frame>,
    /// How many documents have started.
    documents: usize,
}

impl Builder<'_> {
    /// The byte offset of a marker.
    fn offset(&self, mark: &Marker) -> usize {
        self.char_offsets
            .get(mark.index())
            .copied()
            .unwrap_or(self.text.len())
    }

    fn scalar_span(&self, mark: &Marker, value: &str, style: TScalarStyle) -> SourceSpan {
        let start = self.offset(mark);
        let len = match style {
            TScalarStyle::Plain => value.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                // The written form may hold escapes: find the closing quote instead.
                let quote = if style == TScalarStyle::SingleQuoted {
                    '\''
                } else {
                    '"'
                };
                self.text[start..]
                    .char_indices()
                    .skip(1)
                    .find(|&(_, c)| c == quote)
                    .map_or(value.len(), |(i, _)| i + 1)
            }
            _ => value.len().min(self.text.len() - start),
        };
        SourceSpan::new(start.into(), len.max(1))
    }

    /// Handles one node: returns the path it sits at, or `None` when it is a key.
    fn place(&mut self, span: SourceSpan, key_text: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let at = join_index(path, *next);
                *next += 1;
                Some(at)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let k = key_text.unwrap_or("?").to_string();
                    let at = join(path, &k);
                    if let Some(first) = seen.get(&k) {
                        self.index.duplicates.push((at.clone(), *first, span));
                    } else {
                        seen.insert(k.clone(), span);
                    }
                    self.index.keys.entry(at).or_insert(span);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if event == Event::DocumentStart {
            self.documents += 1;
            if self.documents == 2 {
                let at = self.offset(&mark);
                let len = if self.text[at..].starts_with("---") {
                    3
                } else {
                    1
                };
                self.index.second_document = Some(SourceSpan::new(at.into(), len));
            }
        }
        if self.documents > 1 {
            return;
        }
        match event {
            Event::Scalar(value, style, _, _) => {
                let span = self.scalar_span(&mark, &value, style);
                if let Some(at) = self.place(span, Some(&value)) {
                    self.index.values.entry(at).or_insert(span);
                }
            }
            Event::Alias(_) => {
                let span = SourceSpan::new(self.offset(&mark).into(), 1);
                if let Some(at) = self.place(span, None) {
                    self.index.values.entry(at).or_insert(span);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let span = SourceSpan::new(self.offset(&mark).into(), 1);
                // A collection as a key is not something a policy has; index it anyway.
                let at = self.place(span, None).unwrap_or_default();
                self.index.values.entry(at.clone()).or_insert(span);
                self.index.collections.insert(at.clone());
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            path: at,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Frame::Seq { path: at, next: 0 }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\nsources:\n  db:\n    type: postgres\n    depends_on: [a, \"b\"]\n  db:\n    x: 1\n";

    #[test]
    fn paths_point_at_their_lines() {
        let index = SpanIndex::new(DOC);
        let at = |p: &str| line_col(DOC, index.value(p).expect(p).offset());
        assert_eq!(at("version"), (1, 10));
        assert_eq!(at("sources.db.type"), (4, 11));
        assert_eq!(at("sources.db.depends_on[1]"), (5, 21));
        assert_eq!(
            line_col(DOC, index.key("sources.db").expect("key").offset()),
            (3, 3)
        );
    }

    #[test]
    fn duplicate_keys_are_recorded_with_both_places() {
        let index = SpanIndex::new(DOC);
        assert_eq!(index.duplicates.len(), 1);
        let (path, first, second) = &index.duplicates[0];
        assert_eq!(path, "sources.db");
        assert_eq!(line_col(DOC, first.offset()).0, 3);
        assert_eq!(line_col(DOC, second.offset()).0, 6);
    }

    #[test]
    fn spans_are_byte_offsets_after_non_ascii_text() {
        let doc = "# a → b → c\nname: \"Zürich\"\nnext: 1\n";
        let index = SpanIndex::new(doc);
        let next = index.key("next").expect("next");
        assert_eq!(line_col(doc, next.offset()), (3, 1));
        assert_eq!(&doc[next.offset()..next.offset() + 4], "next");
        let name = index.value("name").expect("name");
        assert_eq!(
            &doc[name.offset()..name.offset() + name.len()],
            "\"Zürich\""
        );
    }

    #[test]
    fn nearest_falls_back_to_the_closest_ancestor() {
        let index = SpanIndex::new(DOC);
        let span = index
            .nearest("sources.db.retention.keep_daily")
            .expect("ancestor");
        assert_eq!(line_col(DOC, span.offset()).0, 3);
    }
}
