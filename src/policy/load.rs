//! Reading a policy: YAML → sections deserialised one by one (so that every problem is
//! found, not only the first) → semantic checks → a resolved [`Policy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use miette::{NamedSource, SourceSpan};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::model::{
    Defaults, Destination, Encryption, PolicyFile, Source, SourceCommon, SourceKind,
};
use super::spans::{SpanIndex, join};
use super::validate;
use super::{Policy, spans};
use crate::error::{Code, Located, PolicyReport, Problem};

const TOP_LEVEL: &[&str] = &[
    "version",
    "defaults",
    "encryption",
    "destinations",
    "sources",
];

/// The outcome of reading a policy that has no errors: the policy and its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Located>,
}

/// Reads and validates the policy at `path`.
pub fn load_file(path: &Path) -> Result<Loaded, PolicyReport> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyReport {
        path: path.display().to_string(),
        problems: vec![Located {
            problem: Problem::error(
                Code::PolicyUnreadable,
                format!("cannot read policy {}: {e}", path.display()),
            ),
            source: None,
        }],
    })?;
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
    load_str(&text, path, &dir)
}

/// Validates policy `text`, read from `path`, whose relative paths start at `dir`.
pub fn load_str(text: &str, path: &Path, dir: &Path) -> Result<Loaded, PolicyReport> {
    let spans = SpanIndex::new(text);
    let mut problems = Vec::new();
    let file = parse(text, &spans, &mut problems);
    let policy = file
        .and_then(|file| validate::validate(file, text, path, dir, spans.clone(), &mut problems));
    let source = Arc::new(
        NamedSource::new(path.display().to_string(), text.to_string()).with_language("yaml"),
    );
    let located: Vec<Located> = problems
        .into_iter()
        .map(|problem| Located {
            source: problem.span.as_ref().map(|_| source.clone()),
            problem,
        })
        .collect();
    match policy {
        Some(policy) if located.iter().all(|p| !p.problem.is_error()) => Ok(Loaded {
            policy,
            warnings: located,
        }),
        _ => Err(PolicyReport {
            path: path.display().to_string(),
            problems: located,
        }),
    }
}

/// The structure of a policy, without semantic checks (for an older, applied policy
/// whose key files may be gone). `None` when it does not parse.
pub fn parse_lenient(text: &str) -> Option<PolicyFile> {
    parse(text, &SpanIndex::new(text), &mut Vec::new())
}

/// Deserialises the document section by section, collecting every problem.
fn parse(text: &str, spans: &SpanIndex, problems: &mut Vec<Problem>) -> Option<PolicyFile> {
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let span = e.location().map(|l| SourceSpan::new(l.index().into(), 1));
            let message = strip_location(&e.to_string());
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
    }
    let defaults: Option<Defaults> = section(&mut top, "defaults", spans, problems, false);
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

    let errors_after = problems.iter().filter(|p| p.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    Some(PolicyFile {
        version: version?,
        defaults: defaults.unwrap_or_default(),
        encryption,
        destinations: destinations?,
        sources: sources?,
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

/// Reads a mapping of names to items, each item on its own so one bad item does not
/// hide the problems of the next.
fn named_map<T>(
    top: &mut Mapping,
    key: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
    item: impl Fn(Value, &str, &SpanIndex, &mut Vec<Problem>) -> Option<T>,
) -> Option<IndexMap<String, T>> {
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
    let mut out = IndexMap::new();
    let mut ok = true;
    for (name, value) in map {
        let name = key_name(&name);
        let path = join(key, &name);
        if !valid_name(&name) {
            problems.push(
                Problem::error(Code::InvalidName, format!("`{name}` is not a valid name"))
                    .at(spans.key(&path), "invalid name"),
            );
            ok = false;
        }
        match item(value, &path, spans, problems) {
            Some(v) => {
                out.insert(name, v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
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
        let tag_path = if spans.value(&join(path, "type")).is_some() {
            join(path, "type")
        } else {
            path.to_string()
        };
        let mut problem = Problem::error(
            Code::InvalidValue,
            format!("`{variant}` is not one of {}", expected.join(", ")),
        )
        .at(spans.value(&tag_path), "unknown value");
        if let Some(near) = suggest(variant, expected.iter().map(String::as_str)) {
            problem = problem.with_help(format!("did you mean `{near}`?"));
        }
        return problem;
    }
    Problem::error(Code::InvalidValue, format!("`{path}`: {message}")).at(
        spans.value(path).or_else(|| spans.nearest(path)),
        "invalid value",
    )
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

/// serde_yaml appends " at line L column C"; the span says that better.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
