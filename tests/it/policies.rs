//! The example policies and the committed JSON Schema.
//!
//! Every file in `policies/` must validate (warnings allowed), point editors at the
//! schema on its first line, and match that schema. `schemas/policy.schema.json` must be
//! what `backplan schema` prints: run with `BACKPLAN_UPDATE_SCHEMA=1` to rewrite it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MODELINE: &str = "# yaml-language-server: $schema=";
const SCHEMA: &str = "schemas/policy.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_policies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("policies"))
        .expect("policies/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "policies/ holds no policy");
    files
}

fn generated_schema() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .arg("schema")
        .output()
        .expect("run backplan schema");
    assert!(
        out.status.success(),
        "backplan schema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 schema")
}

#[test]
fn every_example_policy_validates() {
    for path in example_policies() {
        match backplan::policy::load_file(&path) {
            Ok(loaded) => {
                // Warnings (an unset ${env:...} on this machine) are fine; none is an error.
                assert!(loaded.warnings.iter().all(|w| !w.problem.is_error()));
            }
            Err(report) => {
                let problems: Vec<String> = report
                    .problems
                    .iter()
                    .map(|p| format!("{} {}", p.problem.code, p.problem.message))
                    .collect();
                panic!(
                    "{} does not validate:\n{}",
                    path.display(),
                    problems.join("\n")
                );
            }
        }
    }
}

#[test]
fn every_example_policy_names_the_schema_on_line_one() {
    for path in example_policies() {
        let text = std::fs::read_to_string(&path).expect("policy");
        let first = text.lines().next().unwrap_or_default();
        let target = first.strip_prefix(MODELINE).unwrap_or_else(|| {
            panic!(
                "{}: line 1 must be `{MODELINE}<path to {SCHEMA}>`, not `{first}`",
                path.display()
            )
        });
        let dir = path.parent().expect("folder");
        let resolved = dir.join(target.trim());
        assert!(
            resolved.ends_with(SCHEMA) || same_file(&resolved, &root().join(SCHEMA)),
            "{}: the modeline points at {}, not {SCHEMA}",
            path.display(),
            resolved.display()
        );
        assert!(
            resolved.exists(),
            "{}: the modeline points at {}, which does not exist",
            path.display(),
            resolved.display()
        );
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Like uv's `generate_json_schema`: fails when the committed schema is stale, or
/// rewrites it when `BACKPLAN_UPDATE_SCHEMA=1`.
#[test]
fn the_committed_schema_is_up_to_date() {
    let generated = generated_schema();
    let path = root().join(SCHEMA);
    if std::env::var("BACKPLAN_UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("schemas/")).expect("mkdir schemas/");
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA} is stale: it is not what `backplan schema` prints.\n\
         Regenerate it with: BACKPLAN_UPDATE_SCHEMA=1 cargo test --test policies"
    );
}

fn committed_schema() -> Value {
    let text = std::fs::read_to_string(root().join(SCHEMA)).expect("the committed schema");
    serde_json::from_str(&text).expect("the schema is JSON")
}

#[test]
fn every_source_type_lists_its_own_and_the_common_fields_and_no_other() {
    let schema = committed_schema();
    let variants = schema["$defs"]["Source"]["oneOf"]
        .as_array()
        .expect("Source is a oneOf of the source types");
    let mut types = Vec::new();
    for variant in variants {
        let props = variant["properties"].as_object().expect("properties");
        let name = props["type"]["const"].as_str().expect("a `type` const");
        types.push(name.to_string());
        for common in [
            "type",
            "depends_on",
            "schedule",
            "timezone",
            "retention",
            "destinations",
        ] {
            assert!(props.contains_key(common), "{name} lacks `{common}`");
        }
        assert_eq!(variant["additionalProperties"], false, "{name}");
        let required = variant["required"].as_array().expect("required");
        assert!(required.contains(&Value::from("type")), "{name}");
    }
    assert_eq!(types, ["postgres", "redis", "files", "config"]);
    // Each type's own fields, spot-checked.
    let own = |t: usize, field: &str| variants[t]["properties"].get(field).is_some();
    assert!(own(0, "url") && own(0, "databases") && !own(0, "paths"));
    assert!(own(1, "persistence") && !own(1, "databases"));
    assert!(own(2, "path") && own(2, "exclude") && !own(2, "url"));
    assert!(own(3, "paths") && !own(3, "path"));
    // Destinations and the nested objects are closed too.
    for variant in schema["$defs"]["Destination"]["oneOf"]
        .as_array()
        .expect("Destination is a oneOf")
    {
        assert_eq!(variant["additionalProperties"], false, "{variant}");
    }
    for def in ["Defaults", "Retention", "Encryption", "RedisPersistence"] {
        assert_eq!(schema["$defs"][def]["additionalProperties"], false, "{def}");
    }
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn every_example_policy_matches_the_schema() {
    let schema = committed_schema();
    for path in example_policies() {
        let text = std::fs::read_to_string(&path).expect("policy");
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        let errors = Validator::new(&schema).errors(&doc);
        assert!(
            errors.is_empty(),
            "{} does not match {SCHEMA}:\n{}",
            path.display(),
            errors.join("\n")
        );
    }
}

#[test]
fn the_schema_rejects_what_validate_rejects_for_shape() {
    // Proof that the checker below checks: structural mistakes fail the schema too.
    let schema = committed_schema();
    for (file, expect) in [
        ("unknown-field.yaml", "/sources/media"),
        ("missing-field.yaml", "/sources/media"),
        ("invalid-value.yaml", "/sources/media"),
    ] {
        let text = std::fs::read_to_string(root().join("tests/fixtures/broken").join(file))
            .expect("fixture");
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        let errors = Validator::new(&schema).errors(&doc);
        assert!(
            errors.iter().any(|e| e.starts_with(expect)),
            "{file}: expected an error at {expect}, got {errors:?}"
        );
    }
}

/// A strict checker for the part of JSON Schema 2020-12 that the generated schema uses.
///
/// A validator crate was weighed and left out: `jsonschema` (even without default
/// features) turns on serde_json's `float_roundtrip` and `boon` turns on idna's
/// `default` feature, so test builds stop sharing opendal and the other heavy crates
/// with `cargo build`. This checker panics on any keyword it does not know, so the
/// schema cannot grow a keyword it silently ignores.
struct Validator<'a> {
    root: &'a Value,
}

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
];

impl<'a> Validator<'a> {
    fn new(root: &'a Value) -> Self {
        Validator { root }
    }

    fn errors(&self, doc: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(self.root, doc, "", &mut errors);
        errors
    }

    fn matches(&self, schema: &Value, value: &Value, at: &str) -> bool {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        errors.is_empty()
    }

    fn resolve(&self, reference: &str) -> &'a Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported: {reference}"));
        self.root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: not allowed here"));
                return;
            }
            Value::Object(map) => map,
            other => panic!("a schema is an object or a boolean, not {other}"),
        };
        for (keyword, arg) in schema {
            match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "format" => {
                    let format = arg.as_str().expect("format is a string");
                    assert!(
                        [
                            "uint32", "int32", "uint64", "int64", "double", "float", "uint"
                        ]
                        .contains(&format),
                        "unknown format {format}"
                    );
                }
                "$ref" => self.check(
                    self.resolve(arg.as_str().expect("$ref is a string")),
                    value,
                    at,
                    errors,
                ),
                "type" => {
                    let types: Vec<&str> = match arg {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        other => panic!("bad type {other}"),
                    };
                    if !types.iter().any(|t| has_type(value, t)) {
                        errors.push(format!(
                            "{at}: expected {}, got {value}",
                            types.join(" or ")
                        ));
                    }
                }
                "const" => {
                    if value != arg {
                        errors.push(format!("{at}: expected {arg}, got {value}"));
                    }
                }
                "enum" => {
                    if !arg.as_array().expect("enum").contains(value) {
                        errors.push(format!("{at}: {value} is not one of {arg}"));
                    }
                }
                "minimum" => {
                    if let (Some(v), Some(min)) = (value.as_f64(), arg.as_f64())
                        && v < min
                    {
                        errors.push(format!("{at}: {v} is below {min}"));
                    }
                }
                "maximum" => {
                    if let (Some(v), Some(max)) = (value.as_f64(), arg.as_f64())
                        && v > max
                    {
                        errors.push(format!("{at}: {v} is above {max}"));
                    }
                }
                "required" => {
                    if let Value::Object(obj) = value {
                        for field in arg.as_array().expect("required") {
                            let field = field.as_str().expect("a field name");
                            if !obj.contains_key(field) {
                                errors.push(format!("{at}: lacks required `{field}`"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Value::Object(obj) = value {
                        for (field, sub) in arg.as_object().expect("properties") {
                            if let Some(v) = obj.get(field) {
                                self.check(sub, v, &format!("{at}/{field}"), errors);
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Value::Object(obj) = value {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (field, v) in obj {
                            if known.is_none_or(|k| !k.contains_key(field)) {
                                self.check(arg, v, &format!("{at}/{field}"), errors);
                            }
                        }
                    }
                }
                "items" => {
                    if let Value::Array(items) = value {
                        for (i, v) in items.iter().enumerate() {
                            self.check(arg, v, &format!("{at}/{i}"), errors);
                        }
                    }
                }
                "anyOf" | "oneOf" => {
                    let options = arg.as_array().expect("a list of schemas");
                    let n = options
                        .iter()
                        .filter(|s| self.matches(s, value, at))
                        .count();
                    if n == 0 || (keyword == "oneOf" && n > 1) {
                        errors.push(format!("{at}: matches {n} of the {keyword} schemas"));
                    }
                }
                "allOf" => {
                    for s in arg.as_array().expect("allOf") {
                        self.check(s, value, at, errors);
                    }
                }
                other => panic!("the schema uses `{other}`, which this checker does not know"),
            }
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        other => panic!("unknown type {other}"),
    }
}
