//! Values that may refer to secrets: `${env:NAME}` is replaced at run time by the
//! variable's value. The policy, plans and logs only ever hold the reference; the
//! resolved value lives in a [`Resolved`] whose `Debug` hides it.

use std::fmt;
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A string from the policy that may contain `${env:NAME}` references.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// `${env:NAME}` names a variable that is not set.
    Unset(String),
    /// `${...}` that is not of the form `${env:NAME}`.
    Malformed(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Unset(name) => write!(f, "environment variable {name} is not set"),
            SecretError::Malformed(text) => {
                write!(
                    f,
                    "`{text}` is not a reference; write `${{env:NAME}}` (or `$${{` for a literal `${{`)"
                )
            }
        }
    }
}

/// One piece of a [`Secret`]: literal text or an environment reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
}

impl Secret {
    pub fn new(template: impl Into<String>) -> Self {
        Secret(template.into())
    }

    /// The text as written in the policy (references, never values).
    pub fn template(&self) -> &str {
        &self.0
    }

    fn pieces(&self) -> Result<Vec<Piece<'_>>, SecretError> {
        let mut pieces = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("${") {
            // `$${` escapes a literal `${`.
            if start > 0 && rest.as_bytes()[start - 1] == b'$' {
                pieces.push(Piece::Text(&rest[..start - 1]));
                pieces.push(Piece::Text("${"));
                rest = &rest[start + 2..];
                continue;
            }
            pieces.push(Piece::Text(&rest[..start]));
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(SecretError::Malformed(rest[start..].to_string()));
            };
            let inner = &after[..end];
            let name = inner
                .strip_prefix("env:")
                .filter(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                .ok_or_else(|| SecretError::Malformed(format!("${{{inner}}}")))?;
            pieces.push(Piece::Env(name));
            rest = &after[end + 1..];
        }
        pieces.push(Piece::Text(rest));
        Ok(pieces)
    }

    /// The environment variables this value refers to.
    pub fn env_names(&self) -> Result<Vec<&str>, SecretError> {
        Ok(self
            .pieces()?
            .into_iter()
            .filter_map(|p| match p {
                Piece::Env(name) => Some(name),
                Piece::Text(_) => None,
            })
            .collect())
    }

    /// Whether the value refers to the environment at all.
    pub fn is_reference(&self) -> bool {
        self.env_names().map(|n| !n.is_empty()).unwrap_or(false)
    }

    /// Replaces every reference with the value `lookup` gives for it.
    pub fn resolve_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, SecretError> {
        let mut out = String::new();
        for piece in self.pieces()? {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Env(name) => {
                    out.push_str(&lookup(name).ok_or_else(|| SecretError::Unset(name.into()))?)
                }
            }
        }
        Ok(Resolved(out))
    }

    /// Resolves against the process environment.
    pub fn resolve(&self) -> Result<Resolved, SecretError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.0)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url_password(&self.0))
    }
}

/// A resolved secret value. It is never printed: `Debug` and `Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved(String);

impl Resolved {
    /// The value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolved(<hidden>)")
    }
}

/// Where the password of every `scheme://user:password@host` in `text` stands (byte
/// ranges, possibly empty for `user:@host`).
fn url_passwords(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("://") {
        let start = from + pos + 3;
        let tail = &text[start..];
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            found.push(start + colon + 1..start + at);
        }
        from = start + authority_end;
    }
    found
}

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`.
pub fn redact_url_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for range in url_passwords(text) {
        out.push_str(&text[done..range.start]);
        out.push_str("***");
        done = range.end;
    }
    out.push_str(&text[done..]);
    out
}

/// `text` with every literal URL password (not a `${env:…}` reference) replaced by
/// as many `*` as it has bytes, so that every byte offset into `text` still holds:
/// for quoting a policy's lines in a report.
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = text.to_string();
    for range in url_passwords(text) {
        if !text[range.clone()].contains("${") {
            let stars = "*".repeat(range.len());
            out.replace_range(range, &stars);
        }
    }
    out
}

/// Whether a URL carries an inline password (a literal, not a reference).
pub fn url_has_inline_password(template: &str) -> bool {
    redact_url_password(template) != template && !template.contains("${env:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_reference_is_replaced_by_the_variables_value() {
        let s = Secret::new("postgres://backup:${env:PGPW}@db/app");
        let r = s
            .resolve_with(|n| (n == "PGPW").then(|| "hunter2".to_string()))
            .expect("resolves");
        assert_eq!(r.expose(), "postgres://backup:hunter2@db/app");
        assert_eq!(format!("{r:?}"), "Resolved(<hidden>)");
    }

    #[test]
    fn url_passwords_are_masked_byte_for_byte_and_references_kept() {
        let text = "a: postgres://u:hunter2@db/app\nb: redis://:pw@r:6379 c: s3://u:${env:PW}@x\n";
        let masked = mask_url_passwords(text);
        assert_eq!(
            masked,
            "a: postgres://u:*******@db/app\nb: redis://:**@r:6379 c: s3://u:${env:PW}@x\n"
        );
        assert_eq!(masked.len(), text.len());
        assert_eq!(
            redact_url_password(text),
            "a: postgres://u:***@db/app\nb: redis://:***@r:6379 c: s3://u:***@x\n"
        );
    }

    #[test]
    fn unset_variable_is_named_in_the_error() {
        let s = Secret::new("${env:NOPE_NOT_SET}");
        assert_eq!(
            s.resolve_with(|_| None),
            Err(SecretError::Unset("NOPE_NOT_SET".into()))
        );
    }

    #[test]
    fn malformed_reference_is_an_error_and_double_dollar_escapes() {
        assert!(matches!(
            Secret::new("${PGPW}").env_names(),
            Err(SecretError::Malformed(_))
        ));
        let s = Secret::new("a$${b}");
        assert_eq!(s.resolve_with(|_| None).expect("literal").expose(), "a${b}");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("url: postgres://u:secret@h:5432/db and redis://h:6379"),
            "url: postgres://u:***@h:5432/db and redis://h:6379"
        );
        assert!(url_has_inline_password("postgres://u:secret@h/db"));
        assert!(!url_has_inline_password("postgres://u@h/db"));
        assert!(!url_has_inline_password("postgres://u:${env:PW}@h/db"));
    }
}
