//! The error codes and `docs/errors.md` stay in step: codes are unique, each has its
//! section, and the page names no code that does not exist.

use std::collections::{BTreeMap, BTreeSet};

use backplan::error::Code;

fn errors_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md");
    std::fs::read_to_string(path).expect("docs/errors.md")
}

/// Every `BPnnn` token in `text`.
fn code_tokens(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("BP") {
        let digits = &bytes[i + 2..bytes.len().min(i + 5)];
        let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let after_ok = bytes.get(i + 5).is_none_or(|b| !b.is_ascii_alphanumeric());
        if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) && before_ok && after_ok {
            found.insert(text[i..i + 5].to_string());
        }
    }
    found
}

/// The `## BPnnn name` headings, code → name.
fn headings(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("## ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(code), Some(name), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if code.starts_with("BP") {
            let previous = out.insert(code.to_string(), name.to_string());
            assert!(
                previous.is_none(),
                "docs/errors.md has two sections for {code}"
            );
        }
    }
    out
}

#[test]
fn codes_are_unique_in_id_and_name() {
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut variants = BTreeSet::new();
    for code in Code::ALL {
        assert!(
            variants.insert(*code),
            "{code:?} is listed twice in Code::ALL"
        );
        assert!(ids.insert(code.id()), "{} is used twice", code.id());
        assert!(names.insert(code.name()), "{} is used twice", code.name());
        let id = code.id();
        assert!(
            id.len() == 5 && id.starts_with("BP") && id[2..].bytes().all(|b| b.is_ascii_digit()),
            "{id} is not of the form BPnnn"
        );
        assert!(
            code.name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{} is not kebab-case",
            code.name()
        );
        assert!(!code.help().is_empty(), "{id} has no help");
        assert_eq!(code.to_string(), id);
    }
}

#[test]
fn codes_are_listed_in_documentation_order() {
    let ids: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "Code::ALL is in the order of the numbers");
}

#[test]
fn every_code_has_a_section_in_docs_errors_md() {
    let text = errors_md();
    let sections = headings(&text);
    let mut missing = Vec::new();
    for code in Code::ALL {
        match sections.get(code.id()) {
            Some(name) if name == code.name() => {}
            Some(name) => missing.push(format!(
                "`## {} {}` is headed `{name}`",
                code.id(),
                code.name()
            )),
            None => missing.push(format!("`## {} {}` is missing", code.id(), code.name())),
        }
    }
    assert!(
        missing.is_empty(),
        "docs/errors.md:\n{}",
        missing.join("\n")
    );
    // Sections in the same order as Code::ALL, each with meaning, example and fix.
    let order: Vec<&String> = sections.keys().collect();
    let mut positions: Vec<(usize, &String)> = order
        .iter()
        .map(|code| (text.find(&format!("## {code} ")).expect("heading"), *code))
        .collect();
    positions.sort();
    let in_text: Vec<&str> = positions.iter().map(|(_, c)| c.as_str()).collect();
    let in_code: Vec<&str> = Code::ALL.iter().map(|c| c.id()).collect();
    assert_eq!(in_text, in_code, "sections follow Code::ALL");
    for (i, (start, code)) in positions.iter().enumerate() {
        let end = positions.get(i + 1).map_or(text.len(), |(next, _)| *next);
        let section = &text[*start..end];
        for part in ["### What it means", "### Example", "### Fix"] {
            assert!(section.contains(part), "{code} has no `{part}`");
        }
    }
}

#[test]
fn docs_errors_md_names_no_code_that_does_not_exist() {
    let known: BTreeSet<&str> = Code::ALL.iter().map(|c| c.id()).collect();
    let text = errors_md();
    let unknown: Vec<String> = code_tokens(&text)
        .into_iter()
        .filter(|t| !known.contains(t.as_str()))
        .collect();
    assert!(unknown.is_empty(), "docs/errors.md names {unknown:?}");
    let stray: Vec<String> = headings(&text)
        .into_keys()
        .filter(|c| !known.contains(c.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "docs/errors.md has sections for {stray:?}"
    );
}

#[test]
fn the_token_scanner_finds_codes_and_only_codes() {
    let found = code_tokens("BP102, `BP999` and xBP101 BP1234 BP10 (BP200)");
    let expected: BTreeSet<String> = ["BP102", "BP999", "BP200"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}
