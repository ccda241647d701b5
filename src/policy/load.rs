//! Reading a policy: YAML → sections deserialised one by one (so that every problem is
//! found, not only the first) → semantic checks → a resolved [`Policy`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use miette::{NamedSource, SourceSpan};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::model::{
    Defaults, Destination, DrillSettings, Encryption, Objectives, PolicyFile, Source, SourceCommon,
    SourceKind,
};
use super::notify::Notifier;
use super::spans::{SpanIndex, join};
use super::validate;
use super::{Policy, prescan, spans};
use crate::error::{Code, Located, PolicyReport, Problem};

const TOP_LEVEL: &[&str] = &[
    "version",
    "defaults",
    "encryption",
    "destinations",
    "sources",
    "notify",
    "objectives",
    "drill",
];

/// The outcome of reading a policy that has no errors: the policy and its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Located>,
}

/// Reads and validates the policy at `path`.
pub fn load_file(path: &Path) -> Result<Loaded, PolicyReport> {
    let unreadable = |e: std::io::Error| PolicyReport {
        path: path.display().to_string(),
        problems: vec![Located {
            problem: Problem::error(
                Code::PolicyUnreadable,
                format!("cannot read policy {}: {e}", path.display()),
            ),
            source: None,
        }],
    };
    // One byte past the limit is enough to know it is passed: a huge file is never
    // read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(prescan::MAX_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(unreadable)?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    load_bytes(&bytes, path, &dir)
}

/// Validates policy `bytes`: they must be UTF-8 text.
pub fn load_bytes(bytes: &[u8], path: &Path, dir: &Path) -> Result<Loaded, PolicyReport> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(text, path, dir),
        Err(e) => {
            // The text up to the bad byte is shown as is; the rest with U+FFFD for
            // each bad sequence. The span covers the first replacement character.
            let at = e.valid_up_to();
            let shown = String::from_utf8_lossy(bytes).into_owned();
            let len = shown[at..].chars().next().map_or(0, char::len_utf8);
            let (line, column) = spans::line_col(&shown, at);
            let problem = Problem::error(
                Code::NotUtf8,
                format!(
                    "the policy is not UTF-8 text: byte {at} (line {line}, column {column}) is 0x{:02x}",
                    bytes[at]
                ),
            )
            .at(Some(SourceSpan::new(at.into(), len)), "not UTF-8");
            Err(report_of(vec![problem], &shown, path))
        }
    }
}

/// Validates policy `text`, read from `path`, whose relative paths start at `dir`.
pub fn load_str(text: &str, path: &Path, dir: &Path) -> Result<Loaded, PolicyReport> {
    if let Some(problem) = limits(text) {
        return Err(report_of(vec![problem], text, path));
    }
    let spans = SpanIndex::new(text);
    let mut problems = Vec::new();
    let parsed = parse(text, &spans, &mut problems);
    let policy = parsed.and_then(|parsed| {
        validate::validate(parsed, text, path, dir, spans.clone(), &mut problems)
    });
    let report = report_of(problems, text, path);
    match policy {
        Some(policy) if report.errors() == 0 => Ok(Loaded {
            policy,
            warnings: report.problems,
        }),
        _ => Err(report),
    }
}

/// The size and depth limits, checked before a YAML parser sees the text.
fn limits(text: &str) -> Option<Problem> {
    if text.len() > prescan::MAX_BYTES {
        let mut at = prescan::MAX_BYTES;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        return Some(
            Problem::error(
                Code::PolicyTooLarge,
                format!(
                    "the policy is larger than {} MiB, the most backplan reads",
                    prescan::MAX_BYTES / (1024 * 1024)
                ),
            )
            .at(
                Some(SourceSpan::new(at.into(), 0)),
                "the limit is passed here",
            ),
        );
    }
    prescan::too_deep(text).map(|at| {
        Problem::error(
            Code::NestingTooDeep,
            format!(
                "the policy nests more than {} levels deep",
                prescan::MAX_DEPTH
            ),
        )
        .at(Some(SourceSpan::new(at.into(), 1)), "too deep here")
    })
}

/// Binds problems to the text they point into.
fn report_of(problems: Vec<Problem>, text: &str, path: &Path) -> PolicyReport {
    // Shown without the secrets a problem points at (BP134), so that a report in a CI
    // log does not carry them.
    let shown = validate::mask_inline_secrets(text, &problems);
    let source =
        Arc::new(NamedSource::new(path.display().to_string(), shown).with_language("yaml"));
    PolicyReport {
        path: path.display().to_string(),
        problems: problems
            .into_iter()
            .map(|problem| Located {
                source: problem.span.as_ref().map(|_| source.clone()),
                problem,
            })
            .collect(),
    }
}

/// The structure of a policy, without semantic checks (for an older, applied policy
/// whose key files may be gone). `None` when it does not parse.
pub fn parse_lenient(text: &str) -> Option<PolicyFile> {
    if limits(text).is_some() {
        return None;
    }
    parse(text, &SpanIndex::new(text), &mut Vec::new())
        .filter(|parsed| parsed.complete)
        .map(|parsed| parsed.file)
}

/// What [`parse`] could read. Entries that did not parse are left out of `file` (their
/// problems are recorded), so that the semantic checks still run on the rest: every
/// problem is reported at once, not only the structural ones.
#[derive(Debug)]
pub(super) struct Parsed {
    pub file: PolicyFile,
    /// Whether every part parsed; a policy that did not never resolves.
    pub complete: bool,
    /// Every source name declared, also of entries that did not parse, so that a
    /// reference to one is not reported as unknown.
    pub source_names: Option<Vec<String>>,
    /// Every destination name declared; `None` when `destinations` itself is unusable.
    pub destination_names: Option<Vec<String>>,
    /// `encryption` is there but did not parse (its problem is recorded).
    pub encryption_broken: bool,
}

/// Deserialises the document section by section, collecting every problem. `None` when
/// nothing can be checked further (bad YAML, duplicate keys, an unknown version).
fn parse(text: &str, spans: &SpanIndex, problems: &mut Vec<Problem>) -> Option<Parsed> {
    // Before serde_yaml: it rejects a duplicate key as a syntax error, naming only one place.
    for (path, first, second) in &spans.duplicates {
        problems.push(
            Problem::error(Code::DuplicateName, format!("`{path}` is declared twice"))
                .at(Some(*second), "declared again here")
                .also_at(Some(*first), "first declared here"),
        );
    }
    if !spans.duplicates.is_empty() {
        return None;
    }
    if let Some(second) = spans.second_document {
        problems.push(
            Problem::error(
                Code::MultipleDocuments,
                "the policy holds more than one YAML document",
            )
            .at(Some(second), "a second document starts here"),
        );
        return None;
    }
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let full = e.to_string();
            if full.contains("more than one document") {
                // Found by serde_yaml but not by the span index: no place to show.
                problems.push(Problem::error(
                    Code::MultipleDocuments,
                    "the policy holds more than one YAML document",
                ));
                return None;
            }
            // An unclosed quote is found where the scanner gave up (often the end of
            // the file); the mistake is where the quote began.
            let span = quote_start(&full, text)
                .or_else(|| e.location().map(|l| l.index()))
                .map(|at| SourceSpan::new(at.into(), 1));
            let message = strip_location(&full);
            problems.push(
                Problem::error(
                    Code::YamlSyntax,
                    format!("the policy is not valid YAML: {message}"),
                )
                .at(span, "here"),
            );
            return None;
        }
    };
    let Value::Mapping(mut top) = root else {
        problems.push(
            Problem::error(
                Code::InvalidValue,
                "a policy is a YAML mapping with `version`, `destinations` and `sources`",
            )
            .at(spans.value(""), "not a mapping"),
        );
        return None;
    };
    for key in top.keys() {
        let name = key_name(key);
        if !TOP_LEVEL.contains(&name.as_str()) {
            problems.push(unknown_field(spans, "", &name, TOP_LEVEL));
        }
    }
    let errors_before = problems.iter().filter(|p| p.is_error()).count();

    let version: Option<u32> = section(&mut top, "version", spans, problems, true);
    if let Some(v) = version
        && v != 1
    {
        problems.push(
            Problem::error(
                Code::UnsupportedVersion,
                format!("policy version {v} is not supported"),
            )
            .at(spans.value("version"), "expected 1"),
        );
        // The rest is in a format this backplan does not know: checking it would mislead.
        return None;
    }
    let defaults: Option<Defaults> = section(&mut top, "defaults", spans, problems, false);
    let encryption_given = top.contains_key("encryption");
    let encryption: Option<Encryption> = section(&mut top, "encryption", spans, problems, false);
    let destinations = named_map(
        &mut top,
        "destinations",
        spans,
        problems,
        |value, path, spans, problems| {
            deserialize_at::<Destination>(value, path, spans, problems, &[])
        },
    );
    let sources = named_map(&mut top, "sources", spans, problems, parse_source);
    let objectives: Option<Objectives> = section(&mut top, "objectives", spans, problems, false);
    let drill: Option<DrillSettings> = section(&mut top, "drill", spans, problems, false);
    // Optional: a policy without `notify:` notifies no one.
    let notify = top
        .contains_key("notify")
        .then(|| {
            named_map(
                &mut top,
                "notify",
                spans,
                problems,
                |value, path, spans, problems| {
                    deserialize_at::<Notifier>(value, path, spans, problems, &[])
                },
            )
        })
        .flatten()
        .map(|n| n.entries)
        .unwrap_or_default();

    let errors_after = problems.iter().filter(|p| p.is_error()).count();
    let encryption_broken = encryption_given && encryption.is_none();
    let (destinations, destination_names) = match destinations {
        Some(d) => (d.entries, Some(d.names)),
        None => (IndexMap::new(), None),
    };
    let (sources, source_names) = match sources {
        Some(s) => (s.entries, Some(s.names)),
        None => (IndexMap::new(), None),
    };
    Some(Parsed {
        file: PolicyFile {
            version: version.unwrap_or(1),
            defaults: defaults.unwrap_or_default(),
            encryption,
            destinations,
            sources,
            notify,
            objectives,
            drill,
        },
        complete: errors_after == errors_before,
        source_names,
        destination_names,
        encryption_broken,
    })
}

/// A source: the common fields and the type's own fields are split and read apart, so
/// both sides keep `deny_unknown_fields`.
fn parse_source(
    value: Value,
    path: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
) -> Option<Source> {
    let Value::Mapping(mut map) = value else {
        problems.push(
            Problem::error(
                Code::InvalidValue,
                format!("source `{}` must be a mapping", last(path)),
            )
            .at(spans.key(path), "not a mapping"),
        );
        return None;
    };
    let mut common = Mapping::new();
    for key in SourceCommon::KEYS {
        if let Some(v) = map.remove(*key) {
            common.insert(Value::from(*key), v);
        }
    }
    let common = deserialize_at::<SourceCommon>(Value::Mapping(common), path, spans, problems, &[]);
    let kind = deserialize_at::<SourceKind>(
        Value::Mapping(map),
        path,
        spans,
        problems,
        SourceCommon::KEYS,
    );
    Some(Source {
        kind: kind?,
        common: common?,
    })
}

/// Reads `top[key]` as a `T`; a missing required key is a problem.
fn section<T: DeserializeOwned>(
    top: &mut Mapping,
    key: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
    required: bool,
) -> Option<T> {
    match top.remove(key) {
        Some(value) => deserialize_at(value, key, spans, problems, &[]),
        None => {
            if required {
                problems.push(
                    Problem::error(Code::MissingField, format!("the policy has no `{key}`"))
                        .at(spans.value(""), format!("add `{key}:`")),
                );
            }
            None
        }
    }
}

/// The entries of a named map that parsed, and every name it declares.
struct Named<T> {
    entries: IndexMap<String, T>,
    names: Vec<String>,
}

/// Reads a mapping of names to items, each item on its own so one bad item does not
/// hide the problems of the next. `None` when the section is missing or not a mapping.
fn named_map<T>(
    top: &mut Mapping,
    key: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
    item: impl Fn(Value, &str, &SpanIndex, &mut Vec<Problem>) -> Option<T>,
) -> Option<Named<T>> {
    let value = match top.remove(key) {
        Some(Value::Null) | None => {
            problems.push(
                Problem::error(
                    Code::MissingField,
                    format!("the policy declares no `{key}`"),
                )
                .at(
                    spans.key(key).or(spans.value("")),
                    format!("declare at least one entry under `{key}:`"),
                ),
            );
            return None;
        }
        Some(v) => v,
    };
    let Value::Mapping(map) = value else {
        problems.push(
            Problem::error(
                Code::InvalidValue,
                format!("`{key}` must be a mapping of names to entries"),
            )
            .at(spans.value(key), "not a mapping"),
        );
        return None;
    };
    let mut entries = IndexMap::new();
    let mut names = Vec::new();
    for (name, value) in map {
        let name = key_name(&name);
        let path = join(key, &name);
        if !valid_name(&name) {
            problems.push(
                Problem::error(Code::InvalidName, format!("`{name}` is not a valid name"))
                    .at(spans.key(&path), "invalid name"),
            );
        }
        if let Some(v) = item(value, &path, spans, problems) {
            entries.insert(name.clone(), v);
        }
        names.push(name);
    }
    Some(Named { entries, names })
}

/// Source and destination names: used in paths, plans and command lines.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Deserialises `value` found at `base`, turning a serde error into a located problem.
/// `extra_fields` are names that are valid beside the type's own (for suggestions).
fn deserialize_at<T: DeserializeOwned>(
    value: Value,
    base: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
    extra_fields: &[&str],
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(err) => {
            let mut path = base.to_string();
            for segment in err.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        path = spans::join_index(&path, *index)
                    }
                    serde_path_to_error::Segment::Map { key } => path = join(&path, key),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            problems.push(classify(
                &strip_location(&err.inner().to_string()),
                &path,
                spans,
                extra_fields,
            ));
            None
        }
    }
}

/// Maps serde's message to a code, a span and help.
fn classify(message: &str, path: &str, spans: &SpanIndex, extra_fields: &[&str]) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let mut expected = backticked(rest.split_once("expected").map_or("", |(_, e)| e));
        expected.extend(extra_fields.iter().map(|s| s.to_string()));
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        // serde_path_to_error may or may not have pushed the unknown key itself.
        let parent = path
            .strip_suffix(field)
            .and_then(|p| p.strip_suffix('.'))
            .unwrap_or(path);
        return unknown_field(spans, parent, field, &expected);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let what = if path.is_empty() {
            "the policy".to_string()
        } else {
            format!("`{path}`")
        };
        return Problem::error(
            Code::MissingField,
            format!("{what} lacks the required field `{field}`"),
        )
        .at(spans.nearest(path), format!("add `{field}:` here"));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let variant = rest.split('`').next().unwrap_or_default();
        let expected = backticked(rest.split_once("expected").map_or("", |(_, e)| e));
        // Inside a tagged source serde loses the path below the source: the value is
        // found by its text (the `type` itself, or a field such as `mode`).
        let span = spans
            .find_scalar(&join(path, "type"), variant)
            .or_else(|| spans.find_scalar(path, variant))
            .or_else(|| spans.value(&join(path, "type")))
            .or_else(|| spans.value(path));
        let mut problem = Problem::error(
            Code::InvalidValue,
            format!("`{variant}` is not one of {}", expected.join(", ")),
        )
        .at(span, "unknown value");
        if let Some(near) = suggest(variant, expected.iter().map(String::as_str)) {
            problem = problem.with_help(format!("did you mean `{near}`?"));
        }
        return problem;
    }
    // `invalid type: string "many", expected u32`: serde names the value it refused,
    // which places it when the path stops at a tagged source.
    let written = message
        .split_once(": string \"")
        .and_then(|(_, rest)| rest.split('"').next())
        .or_else(|| message.split('`').nth(1));
    let span = spans
        .value(path)
        .filter(|_| spans.has_value(path))
        .or_else(|| written.and_then(|w| spans.find_scalar(path, w)))
        .or_else(|| spans.value(path))
        .or_else(|| spans.nearest(path));
    Problem::error(Code::InvalidValue, format!("`{path}`: {message}")).at(span, "invalid value")
}

fn unknown_field(spans: &SpanIndex, parent: &str, field: &str, expected: &[&str]) -> Problem {
    let at = join(parent, field);
    let place = if parent.is_empty() {
        "the policy".to_string()
    } else {
        format!("`{parent}`")
    };
    let mut problem = Problem::error(
        Code::UnknownField,
        format!("{place} has no field `{field}`"),
    )
    .at(spans.key(&at), "unknown field");
    problem = match suggest(field, expected.iter().copied()) {
        Some(near) => problem.with_help(format!("did you mean `{near}`?")),
        None if !expected.is_empty() => {
            problem.with_help(format!("expected one of: {}", expected.join(", ")))
        }
        None => problem,
    };
    problem
}

/// The candidate nearest to `word`, if it is near enough to be a likely misspelling.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn last(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// The byte offset of the opening quote of a quoted scalar that never closed, from
/// serde_yaml's "while scanning a quoted scalar at line L column C".
fn quote_start(message: &str, text: &str) -> Option<usize> {
    let rest = message
        .split("while scanning a quoted scalar at line ")
        .nth(1)?;
    let (line, rest) = rest.split_once(" column ")?;
    let line: usize = line.parse().ok()?;
    let column: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2)?.0 + 1
    };
    // libyaml counts columns in characters.
    let offset = text[line_start..]
        .char_indices()
        .nth(column.checked_sub(1)?)
        .map(|(i, _)| line_start + i)?;
    matches!(text[offset..].chars().next(), Some('"' | '\'')).then_some(offset)
}

/// serde_yaml appends " at line L column C"; the span says that better. What follows
/// it is kept: a syntax error's context says where the construct began (`found
/// unexpected end of stream, while scanning a quoted scalar at line 7 column 13`).
fn strip_location(message: &str) -> String {
    let Some(i) = message.find(" at line ") else {
        return message.to_string();
    };
    let rest = &message[i + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest
        .strip_prefix(" column ")
        .map_or(rest, |r| r.trim_start_matches(|c: char| c.is_ascii_digit()));
    format!("{}{rest}", &message[..i])
}
