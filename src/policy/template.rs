//! A notification's message template: text with `{name}` placeholders; `{{` and `}}`
//! write literal braces. Parsing is pure, so the policy checks it; the values come from
//! `render/notify.rs`.

/// Every placeholder a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "state",
    "status",
    "policy",
    "host",
    "summary",
    "done",
    "failed",
    "skipped",
    "failures",
    "exit_status",
    "time",
    "duration",
    "run_id",
];

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(&'static str),
}

/// What is wrong with a template, and where in it (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `{name}` names no placeholder.
    Unknown { name: String, at: usize },
    /// A `{` that is never closed, or a lone `}`.
    Unbalanced { at: usize },
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' if rest.peek().is_some_and(|(_, n)| *n == '{') => {
                    rest.next();
                    literal.push('{');
                }
                '}' if rest.peek().is_some_and(|(_, n)| *n == '}') => {
                    rest.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Unbalanced { at }),
                '{' => {
                    let Some(len) = text[at + 1..].find('}') else {
                        return Err(TemplateError::Unbalanced { at });
                    };
                    let name = &text[at + 1..at + 1 + len];
                    let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name.trim()) else {
                        return Err(TemplateError::Unknown {
                            name: name.to_string(),
                            at,
                        });
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(known));
                    // Skip the name and its `}`.
                    while rest.next_if(|(i, _)| *i <= at + 1 + len).is_some() {}
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text with every placeholder replaced by `value(name)`.
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Placeholder(name) => value(name),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        Template::parse(text)
            .expect("parses")
            .render(|name| format!("<{name}>"))
    }

    #[test]
    fn placeholders_are_replaced_and_double_braces_are_literal() {
        assert_eq!(
            shown("backup {status} on {host}: {failures}"),
            "backup <status> on <host>: <failures>"
        );
        assert_eq!(shown("{{\"a\": {done}}}"), "{\"a\": <done>}");
        assert_eq!(shown("{ policy }!"), "<policy>!");
        assert_eq!(shown("no placeholder é"), "no placeholder é");
        assert_eq!(shown(""), "");
    }

    #[test]
    fn an_unknown_placeholder_is_named_with_its_offset() {
        assert_eq!(
            Template::parse("ok {statsu} done"),
            Err(TemplateError::Unknown {
                name: "statsu".into(),
                at: 3
            })
        );
    }

    #[test]
    fn an_unclosed_or_lone_brace_is_refused_where_it_stands() {
        assert_eq!(
            Template::parse("a {status"),
            Err(TemplateError::Unbalanced { at: 2 })
        );
        assert_eq!(
            Template::parse("a } b"),
            Err(TemplateError::Unbalanced { at: 2 })
        );
    }
}
