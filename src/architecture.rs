//! The dependency direction between the crate's top-level modules, checked against the
//! source: `docs/architecture.md` describes the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules, lowest layer first: a module may use only modules before
/// it, so the modules form no cycle.
const LAYERS: &[&str] = &[
    "error",
    "crypto",
    "graph",
    "policy",
    "inventory",
    "plan",
    "status",
    "repo",
    "pipeline",
    "sources",
    "restore",
    "verify",
    "drill",
    "apply",
    "render",
    "notify",
    "cli",
    "commands",
];

/// Uses against the layers that are known and still to be removed (none now: the
/// repository's warnings go through `error::notice`, and the notification events
/// live in `apply::event`, below both `render` and `notify`).
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[];

/// Every `.rs` file under `dir` (or `dir` itself when it is a file).
fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("a source folder")
            .map(|e| e.expect("a folder entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules `text` names through `crate::` paths (`use crate::repo::…`,
/// `crate::render::notice(…)`, `use crate::{a, b}`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|part| part.trim().split("::").next().unwrap_or_default())
                .collect(),
            None => vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default(),
            ],
        };
        found.extend(
            names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        );
    }
    found
}

/// Each top-level module and the other top-level modules it uses.
fn module_uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut uses = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("an entry of src/").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 name")
            .to_string();
        if ["lib", "main", "architecture"].contains(&name.as_str()) {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let mut named = BTreeSet::new();
        for file in files {
            named.extend(named_modules(
                &std::fs::read_to_string(&file).expect("a source file"),
            ));
        }
        named.remove(&name);
        uses.insert(name, named);
    }
    uses
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let uses = module_uses();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    let mut back_edges_seen = BTreeSet::new();
    for (module, named) in &uses {
        let Some(mine) = rank(module) else {
            wrong.push(format!(
                "{module} is in no layer: add it to LAYERS and docs/architecture.md"
            ));
            continue;
        };
        for other in named {
            match rank(other) {
                Some(theirs) if theirs < mine => {}
                Some(_) if KNOWN_BACK_EDGES.contains(&(module.as_str(), other.as_str())) => {
                    back_edges_seen.insert((module.as_str(), other.as_str()));
                }
                Some(_) => wrong.push(format!("{module} uses {other}, a module above it")),
                None => wrong.push(format!("{module} uses {other}, which is in no layer")),
            }
        }
    }
    for edge in KNOWN_BACK_EDGES {
        if !back_edges_seen.contains(edge) {
            wrong.push(format!(
                "{} no longer uses {}: drop it from KNOWN_BACK_EDGES",
                edge.0, edge.1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every layer is a module of the crate.
    for layer in LAYERS {
        assert!(
            uses.contains_key(*layer),
            "LAYERS names {layer}, which is not in src/"
        );
    }
}

#[test]
fn the_cycles_that_were_broken_stay_broken() {
    let uses = module_uses();
    let uses_of = |m: &str| uses.get(m).cloned().unwrap_or_default();
    assert!(!uses_of("repo").contains("pipeline"), "repo uses pipeline");
    assert!(
        !uses_of("pipeline").contains("sources"),
        "pipeline uses sources"
    );
    assert!(!uses_of("graph").contains("policy"), "graph uses policy");
    assert!(
        !uses_of("sources").contains("render"),
        "sources uses render"
    );
    let crypto = uses_of("crypto");
    assert!(
        crypto.iter().all(|m| m == "error"),
        "crypto uses {crypto:?}: it is the bottom layer, below pipeline and repo"
    );
}

#[test]
fn crate_paths_are_read_in_all_their_forms() {
    let text = "use crate::repo::format::Entry;\n\
                use crate::{error::Failure, graph};\n\
                let x = crate::render::notice(\"a\");\n\
                // not a path: notcrate";
    let named: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(named, ["error", "graph", "render", "repo"]);
}
