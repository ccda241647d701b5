//! A database's own properties: its owner, its settings (`ALTER DATABASE … SET`), the
//! settings of roles in it (`ALTER ROLE … IN DATABASE … SET`), its connection limit,
//! its privileges (`GRANT`/`REVOKE … ON DATABASE`), its comment and security labels.
//!
//! pg_dump keeps them in the archive as the entries `DATABASE`, `DATABASE PROPERTIES`
//! and the `COMMENT`, `ACL` and `SECURITY LABEL` entries on the database, which
//! pg_restore applies only with `--create`. A restore here makes (or reuses) the
//! database itself, so it reads them the way `pg_restore --create` would print them
//! (`pg_restore --create -L LIST -f -` of those entries alone) and runs them itself,
//! each naming the database restored into rather than the one dumped: the statements
//! are split into tokens (quoted identifiers and string literals kept whole) and the
//! database's name after `ALTER DATABASE`, `ON DATABASE` or `IN DATABASE` is replaced
//! by the target's. A statement of any other shape is refused, so that nothing can
//! reach another database by mistake.
//!
//! The archive's `CREATE DATABASE` is read too ([`Creation`]): its encoding and
//! locale (`ENCODING`, `LOCALE_PROVIDER`, `LOCALE`, `LC_COLLATE`, `LC_CTYPE`,
//! `ICU_LOCALE`, …), with which a restore creates a database that does not exist yet,
//! from `template0`, as `pg_restore --create` would.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Whether a line of `pg_restore --create --list` is one of the database's own
/// entries: `3345; 1262 16386 DATABASE - app owner`, `… DATABASE PROPERTIES - app
/// owner`, and `… COMMENT - DATABASE app owner` (also `ACL`, `SECURITY LABEL`).
pub(super) fn is_database_entry(line: &str) -> bool {
    if line.starts_with(';') {
        return false;
    }
    // `ID; CATALOG OID DESC NAMESPACE TAG OWNER`: the description after the oids.
    let Some((_, rest)) = line.split_once(';') else {
        return false;
    };
    let mut words = rest.trim_start().splitn(3, ' ');
    let (Some(_), Some(_), Some(entry)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    ["DATABASE - ", "DATABASE PROPERTIES - "]
        .iter()
        .any(|p| entry.starts_with(p))
        || ["COMMENT", "ACL", "SECURITY LABEL"]
            .iter()
            .any(|d| entry.starts_with(&format!("{d} - DATABASE ")))
}

/// One statement of the database's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    /// The text before the database's name; all of it when it names none.
    before: String,
    /// The text after the database's name (ending with `;`); `None` when it names none
    /// (`SET SESSION AUTHORIZATION`, pg_restore's session settings).
    after: Option<String>,
}

/// A database's properties, read from an archive, ready to be applied to any database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    statements: Vec<Statement>,
    /// The roles they name: the owner, the grantees, the roles with settings in it
    /// (not `PUBLIC`).
    roles: BTreeSet<String>,
    /// The owner.
    owner: Option<String>,
    /// How the database was made (`CREATE DATABASE`), when the archive says.
    creation: Option<Creation>,
}

/// The encoding and locale of a database: what the `CREATE DATABASE` in an archive
/// gives it, or what a database on a server has. An archive's may leave a part
/// empty (not given: `template0`'s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseLocale {
    /// `UTF8`, `LATIN1`, ….
    pub encoding: String,
    /// `libc`, `icu` or `builtin`.
    pub provider: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// The ICU or builtin provider's locale (`ICU_LOCALE`, `BUILTIN_LOCALE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// `ICU_RULES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
}

impl DatabaseLocale {
    /// Whether a database with `other` sorts, compares and stores text as this one:
    /// every part this one gives is the same there.
    pub fn matches(&self, other: &DatabaseLocale) -> bool {
        let same = |a: &str, b: &str| a.is_empty() || a == b;
        same(&self.encoding, &other.encoding)
            && same(&self.provider, &other.provider)
            && same(&self.collate, &other.collate)
            && same(&self.ctype, &other.ctype)
            && (self.locale.is_none() || self.locale == other.locale)
            && (self.icu_rules.is_none() || self.icu_rules == other.icu_rules)
    }
}

/// The options of an archive's `CREATE DATABASE`, for a database made anew under any
/// name: `TEMPLATE = template0` and the encoding and locale options as the archive
/// writes them (already quoted); not the archive's `OID` and `COLLATION_VERSION`
/// (those of the server that dumped), and the tablespace apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creation {
    /// `(KEY, value as written)`, in archive order.
    options: Vec<(String, String)>,
    tablespace: Option<String>,
    locale: DatabaseLocale,
}

impl Creation {
    /// The encoding and locale it gives.
    pub fn locale(&self) -> &DatabaseLocale {
        &self.locale
    }

    /// The tablespace the archive's database was in, when not the default.
    pub fn tablespace(&self) -> Option<&str> {
        self.tablespace.as_deref()
    }

    /// `CREATE DATABASE "database" WITH TEMPLATE = template0 ENCODING = … …`, with
    /// the archive's tablespace when `tablespace` (the target has one of that name).
    pub fn statement(&self, database: &str, tablespace: bool) -> String {
        let mut out = format!(
            "CREATE DATABASE {} WITH TEMPLATE = template0",
            quote_ident(database)
        );
        for (key, value) in &self.options {
            out.push_str(&format!(" {key} = {value}"));
        }
        if let (true, Some(ts)) = (tablespace, &self.tablespace) {
            out.push_str(&format!(" TABLESPACE = {}", quote_ident(ts)));
        }
        out
    }
}

impl Properties {
    /// The roles that must exist on the server the properties are applied to.
    pub fn roles(&self) -> &BTreeSet<String> {
        &self.roles
    }

    /// Whether the archive holds none (made by a pg_dump older than 11): then the
    /// database's own are left as they are.
    pub fn is_empty(&self) -> bool {
        self.statements.iter().all(|s| s.after.is_none())
    }

    /// The database's owner in the archive.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// How the archive's database was made; `None` when the archive has no
    /// `CREATE DATABASE`.
    pub fn creation(&self) -> Option<&Creation> {
        self.creation.as_ref()
    }

    /// The statements, each naming `database`, in archive order (owner, comment,
    /// settings, privileges last).
    pub fn statements(&self, database: &str) -> Vec<String> {
        let name = quote_ident(database);
        self.statements
            .iter()
            .map(|s| match &s.after {
                Some(after) => format!("{}{name}{after}", s.before),
                None => s.before.clone(),
            })
            .collect()
    }
}

/// `"name"`, with inner quotes doubled: always quoted, so case, spaces and keywords
/// survive.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a database holds now of the properties that a restore replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Current {
    /// The roles with settings in the database (`pg_db_role_setting`).
    pub role_settings: Vec<String>,
    /// The grantees of its privileges (`None` for `PUBLIC`), when it has any of its
    /// own (`datacl` not null).
    pub grantees: Option<Vec<Option<String>>>,
    /// Its owner now.
    pub owner: String,
    /// Its connection limit (-1: none).
    pub connection_limit: i32,
}

/// The statements that put `database`'s properties back to those of a new database,
/// so that the archive's alone hold afterwards: its own settings and those of roles
/// in it reset, no connection limit, no comment, and the default privileges
/// (`CONNECT` and `TEMPORARY` for `PUBLIC`, all for the owner).
pub(super) fn reset(database: &str, current: &Current) -> Vec<String> {
    let db = quote_ident(database);
    let mut out = vec![format!("ALTER DATABASE {db} RESET ALL")];
    for role in &current.role_settings {
        out.push(format!(
            "ALTER ROLE {} IN DATABASE {db} RESET ALL",
            quote_ident(role)
        ));
    }
    if current.connection_limit != -1 {
        out.push(format!("ALTER DATABASE {db} CONNECTION LIMIT -1"));
    }
    out.push(format!("COMMENT ON DATABASE {db} IS NULL"));
    if let Some(grantees) = &current.grantees {
        for grantee in grantees {
            let who = grantee.as_deref().map_or("PUBLIC".to_string(), quote_ident);
            out.push(format!("REVOKE ALL ON DATABASE {db} FROM {who} CASCADE"));
        }
        out.push(format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO PUBLIC"
        ));
        out.push(format!(
            "GRANT ALL ON DATABASE {db} TO {}",
            quote_ident(&current.owner)
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A keyword or an identifier as written (`ALTER`, `app`, `pg_catalog.set_config`).
    Word,
    /// A quoted identifier (`"App Owner"`).
    Quoted,
    /// A string literal (`'…'`, `E'…'`).
    Literal,
    /// Anything else (`=`, `,`, `(`).
    Symbol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    kind: Kind,
    at: usize,
    end: usize,
}

/// One statement of a script, as [`split`] finds it.
struct Tokens {
    /// Where it is, up to and with its `;`.
    range: Range<usize>,
    tokens: Vec<Token>,
}

/// The statements of a script, without comments and psql's meta-commands
/// (`\connect`, `\restrict`).
fn split(script: &str) -> Result<Vec<Tokens>, String> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut tokens: Vec<Token> = Vec::new();
    let (mut i, mut line_start) = (0, true);
    // The end of a quoted run that started at `i` (its opening quote): doubled quotes
    // stay inside, and with `backslash` a backslash escapes the byte after it.
    let closing = |mut i: usize, quote: u8, backslash: bool| -> Result<usize, String> {
        i += 1;
        loop {
            match b.get(i) {
                None => return Err("a quoted name or a string does not end".to_string()),
                Some(b'\\') if backslash => i += 2,
                Some(&c) if c == quote && b.get(i + 1) == Some(&quote) => i += 2,
                Some(&c) if c == quote => return Ok(i + 1),
                Some(_) => i += 1,
            }
        }
    };
    let line_end = |i: usize| {
        b[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |n| i + n)
    };
    let word =
        |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.' || c >= 0x80;
    while let Some(&c) = b.get(i) {
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if (line_start && c == b'\\' && tokens.is_empty())
            || (c == b'-' && b.get(i + 1) == Some(&b'-'))
        {
            i = line_end(i);
            continue;
        }
        line_start = false;
        let at = i;
        let kind = match c {
            b'"' => {
                i = closing(i, b'"', false)?;
                Kind::Quoted
            }
            b'\'' => {
                i = closing(i, b'\'', false)?;
                Kind::Literal
            }
            b';' => {
                i += 1;
                let start = tokens.first().map_or(at, |t| t.at);
                out.push(Tokens {
                    range: start..i,
                    tokens: std::mem::take(&mut tokens),
                });
                continue;
            }
            c if word(c) => {
                while b.get(i).is_some_and(|&c| word(c)) {
                    i += 1;
                }
                if (i - at == 1 && matches!(c, b'E' | b'e')) && b.get(i) == Some(&b'\'') {
                    i = closing(i, b'\'', true)?;
                    Kind::Literal
                } else {
                    Kind::Word
                }
            }
            _ => {
                // One character (a multi-byte one is a word's, above).
                i += 1;
                Kind::Symbol
            }
        };
        tokens.push(Token { kind, at, end: i });
    }
    if !tokens.is_empty() {
        return Err("the script ends inside a statement".to_string());
    }
    Ok(out)
}

/// Reads the statements pg_restore prints for a database's own entries (see the
/// module's documentation); `dumped` is the database's name in the archive. Fails on
/// a statement of a shape it does not know, or one naming another database.
pub(super) fn parse(script: &str, dumped: &str) -> Result<Properties, String> {
    let mut props = Properties::default();
    for Tokens { range, tokens } in split(script)? {
        let text = &script[range.clone()];
        let t = |k: usize| tokens.get(k).map(|t| &script[t.at..t.end]);
        let is = |k: usize, w: &str| {
            tokens.get(k).is_some_and(|t| {
                t.kind == Kind::Word && script[t.at..t.end].eq_ignore_ascii_case(w)
            })
        };
        // The name a token gives (unquoted, or folded to lower case) and whether it is
        // a role's (not `PUBLIC`, not `ALL`).
        let name = |k: usize| -> Option<String> {
            let tok = tokens.get(k)?;
            let s = &script[tok.at..tok.end];
            match tok.kind {
                Kind::Quoted => Some(s[1..s.len() - 1].replace("\"\"", "\"")),
                Kind::Word => Some(s.to_ascii_lowercase()),
                _ => None,
            }
        };
        let role = |k: usize| -> Option<String> {
            if is(k, "PUBLIC") || is(k, "ALL") {
                return None;
            }
            name(k)
        };
        let unknown = || format!("a statement backplan does not apply: {}", one_line(text));
        // The database named by token `k` must be the dumped one.
        let dumped_at = |k: usize| match name(k) {
            Some(db) if db == dumped => Ok(()),
            Some(db) => Err(format!(
                "a statement names database {db}, not {dumped}: {}",
                one_line(text)
            )),
            None => Err(unknown()),
        };

        if is(0, "SET") || is(0, "RESET") {
            if is(1, "SESSION") && is(2, "AUTHORIZATION") && !is(3, "DEFAULT") {
                props.roles.extend(role(3));
            }
            props.statements.push(Statement {
                before: text.to_string(),
                after: None,
            });
            continue;
        }
        if is(0, "SELECT") {
            if t(1).is_some_and(|w| w.eq_ignore_ascii_case("pg_catalog.set_config")) {
                props.statements.push(Statement {
                    before: text.to_string(),
                    after: None,
                });
                continue;
            }
            return Err(unknown());
        }
        if is(0, "CREATE") && is(1, "DATABASE") {
            // The restore makes (or reuses) the database itself: with these options
            // when it makes it.
            dumped_at(2)?;
            let pieces: Vec<(Kind, &str)> = tokens
                .iter()
                .skip(3)
                .map(|t| (t.kind, &script[t.at..t.end]))
                .collect();
            props.creation = Some(creation(&pieces).ok_or_else(unknown)?);
            continue;
        }
        if !["ALTER", "COMMENT", "SECURITY", "GRANT", "REVOKE"]
            .iter()
            .any(|w| is(0, w))
        {
            return Err(unknown());
        }
        // The database's name: after the first `ALTER DATABASE`, `ON DATABASE` or
        // `IN DATABASE` (`ON` and `IN` are reserved words: a role named so is quoted).
        let Some(k) = (1..tokens.len())
            .find(|&k| is(k, "DATABASE") && ["ALTER", "ON", "IN"].iter().any(|w| is(k - 1, w)))
        else {
            return Err(unknown());
        };
        let k = k + 1;
        dumped_at(k)?;
        let after = |w: &str| (k + 1..tokens.len()).find(|&j| is(j, w)).map(|j| j + 1);
        if is(0, "ALTER") && is(1, "DATABASE") && is(k + 1, "OWNER") && is(k + 2, "TO") {
            let owner = role(k + 3);
            props.roles.extend(owner.clone());
            props.owner = owner;
        } else if is(0, "ALTER") && is(1, "ROLE") {
            props.roles.extend(role(2));
        } else if is(0, "GRANT") {
            props.roles.extend(after("TO").and_then(role));
        } else if is(0, "REVOKE") {
            props.roles.extend(after("FROM").and_then(role));
        }
        let token = tokens[k];
        props.statements.push(Statement {
            before: script[range.start..token.at].to_string(),
            after: Some(script[token.end..range.end].to_string()),
        });
    }
    Ok(props)
}

/// The options of a `CREATE DATABASE name …` after its name: `[WITH] KEY [=] VALUE
/// …`, each value one word, quoted name or string; `None` for any other shape.
fn creation(tokens: &[(Kind, &str)]) -> Option<Creation> {
    let mut rest = tokens;
    if let [(Kind::Word, w), more @ ..] = rest
        && w.eq_ignore_ascii_case("WITH")
    {
        rest = more;
    }
    let mut out = Creation::default();
    while let [(Kind::Word, key), more @ ..] = rest {
        rest = more;
        if let [(Kind::Symbol, "="), more @ ..] = rest {
            rest = more;
        }
        let [(kind, value), more @ ..] = rest else {
            return None;
        };
        if *kind == Kind::Symbol {
            return None;
        }
        rest = more;
        let key = key.to_ascii_uppercase();
        let plain = match kind {
            Kind::Literal if value.starts_with('\'') => {
                value[1..value.len() - 1].replace("''", "'")
            }
            Kind::Quoted => value[1..value.len() - 1].replace("\"\"", "\""),
            Kind::Word => value.to_ascii_lowercase(),
            _ => return None,
        };
        let l = &mut out.locale;
        match key.as_str() {
            // Made from template0 always; the dumping server's own identities and
            // library versions are not the target's.
            "TEMPLATE" | "OID" | "COLLATION_VERSION" | "OWNER" | "STRATEGY" => continue,
            "TABLESPACE" => {
                out.tablespace = Some(plain);
                continue;
            }
            "ENCODING" => l.encoding = plain.to_ascii_uppercase(),
            "LOCALE_PROVIDER" => l.provider = plain,
            "LOCALE" => {
                l.collate.clone_from(&plain);
                l.ctype = plain;
            }
            "LC_COLLATE" => l.collate = plain,
            "LC_CTYPE" => l.ctype = plain,
            "ICU_LOCALE" | "BUILTIN_LOCALE" => l.locale = Some(plain),
            "ICU_RULES" => l.icu_rules = Some(plain),
            _ => {}
        }
        out.options.push((key, value.to_string()));
    }
    if !rest.is_empty() {
        return None;
    }
    if out.locale.provider.is_empty() {
        out.locale.provider = "libc".to_string();
    }
    Some(out)
}

/// A statement on one line, for a message.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pg_restore 15 prints for a database's own entries (`--create -L … -f -`).
    const SCRIPT: &str = r#"--
-- PostgreSQL database dump
--

\restrict U7SQDA9y

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: My "DB" x; Type: DATABASE; Schema: -; Owner: App Owner
--

CREATE DATABASE "My ""DB"" x" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';


ALTER DATABASE "My ""DB"" x" OWNER TO "App Owner";

\unrestrict U7SQDA9y
\encoding SQL_ASCII
\connect -reuse-previous=on "dbname='My ""DB"" x'"
\restrict U7SQDA9y

--
-- Name: DATABASE "My ""DB"" x"; Type: COMMENT; Schema: -; Owner: App Owner
--

COMMENT ON DATABASE "My ""DB"" x" IS 'the app''s data;
-- not a comment; ALTER DATABASE other';

ALTER DATABASE "My ""DB"" x" CONNECTION LIMIT = 50;
ALTER DATABASE "My ""DB"" x" SET search_path TO 'app', 'public';
ALTER ROLE database IN DATABASE "My ""DB"" x" SET work_mem TO '8MB';
ALTER ROLE "in DATABASE x" IN DATABASE "My ""DB"" x" SET work_mem TO E'8\'MB';

REVOKE CONNECT,TEMPORARY ON DATABASE "My ""DB"" x" FROM PUBLIC;
GRANT CONNECT ON DATABASE "My ""DB"" x" TO r;
SET SESSION AUTHORIZATION "Grantor";
GRANT TEMPORARY ON DATABASE "My ""DB"" x" TO "Ünïcode";
RESET SESSION AUTHORIZATION;

\unrestrict U7SQDA9y
"#;

    #[test]
    fn the_database_entries_are_picked_from_the_listing_and_nothing_else() {
        for line in [
            "3345; 1262 16386 DATABASE - My \"DB\" x App Owner",
            "3348; 0 0 DATABASE PROPERTIES - app postgres",
            "3346; 0 0 COMMENT - DATABASE \"My \"\"DB\"\" x\" App Owner",
            "3347; 0 0 ACL - DATABASE app postgres",
            "3349; 0 0 SECURITY LABEL - DATABASE app postgres",
        ] {
            assert!(is_database_entry(line), "{line}");
        }
        for line in [
            ";     dbname: app",
            "; 3345; 1262 16386 DATABASE - app postgres",
            "6; 2615 16387 SCHEMA - app postgres",
            "3350; 0 0 COMMENT - SCHEMA DATABASE postgres",
            "3351; 0 0 COMMENT - EXTENSION hstore ",
            "3352; 0 16388 TABLE DATA public DATABASE postgres",
            "3353; 1259 16388 TABLE public DATABASE postgres",
        ] {
            assert!(!is_database_entry(line), "{line}");
        }
    }

    #[test]
    fn every_statement_is_retargeted_at_the_new_name_and_the_roles_are_known() {
        let props = parse(SCRIPT, "My \"DB\" x").expect("parsed");
        let t = "\"New \"\"name\"\"\"";
        assert_eq!(
            props.statements("New \"name\""),
            vec![
                "SET statement_timeout = 0;".to_string(),
                "SET client_encoding = 'UTF8';".into(),
                "SET standard_conforming_strings = on;".into(),
                "SELECT pg_catalog.set_config('search_path', '', false);".into(),
                format!("ALTER DATABASE {t} OWNER TO \"App Owner\";"),
                format!(
                    "COMMENT ON DATABASE {t} IS 'the app''s data;\n-- not a comment; ALTER DATABASE other';"
                ),
                format!("ALTER DATABASE {t} CONNECTION LIMIT = 50;"),
                format!("ALTER DATABASE {t} SET search_path TO 'app', 'public';"),
                format!("ALTER ROLE database IN DATABASE {t} SET work_mem TO '8MB';"),
                format!("ALTER ROLE \"in DATABASE x\" IN DATABASE {t} SET work_mem TO E'8\\'MB';"),
                format!("REVOKE CONNECT,TEMPORARY ON DATABASE {t} FROM PUBLIC;"),
                format!("GRANT CONNECT ON DATABASE {t} TO r;"),
                "SET SESSION AUTHORIZATION \"Grantor\";".into(),
                format!("GRANT TEMPORARY ON DATABASE {t} TO \"Ünïcode\";"),
                "RESET SESSION AUTHORIZATION;".into(),
            ]
        );
        assert_eq!(
            props.roles().iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "App Owner",
                "Grantor",
                "database",
                "in DATABASE x",
                "r",
                "Ünïcode"
            ]
        );
        assert_eq!(props.owner(), Some("App Owner"));
        assert!(!props.is_empty());
        // Session settings alone are no properties.
        let none = parse("SET statement_timeout = 0;\n", "app").expect("parsed");
        assert!(none.is_empty() && none.roles().is_empty());
        // A plain name is quoted all the same.
        let plain = parse("ALTER DATABASE app SET x TO 'app';", "app").expect("parsed");
        assert_eq!(
            plain.statements("app_restored"),
            ["ALTER DATABASE \"app_restored\" SET x TO 'app';"]
        );
    }

    #[test]
    fn the_archives_create_database_gives_the_new_database_its_encoding_and_locale() {
        let props = parse(SCRIPT, "My \"DB\" x").expect("parsed");
        let creation = props.creation().expect("a CREATE DATABASE");
        assert_eq!(
            creation.statement("New \"name\"", true),
            "CREATE DATABASE \"New \"\"name\"\"\" WITH TEMPLATE = template0 ENCODING = 'UTF8' \
             LOCALE_PROVIDER = libc LOCALE = 'C'"
        );
        assert_eq!(
            creation.locale(),
            &DatabaseLocale {
                encoding: "UTF8".into(),
                provider: "libc".into(),
                collate: "C".into(),
                ctype: "C".into(),
                locale: None,
                icu_rules: None,
            }
        );
        // Every option pg_dump writes (binary upgrade's too), and a tablespace, which
        // goes in only when the target has it.
        let script = "CREATE DATABASE app WITH TEMPLATE = template0 OID = 16384 ENCODING = 'LATIN1' \
            LOCALE_PROVIDER = icu LC_COLLATE = 'fr_FR.iso88591' LC_CTYPE = 'C' \
            ICU_LOCALE = 'fr-u-co-''x' ICU_RULES = '&a < b' COLLATION_VERSION = '153.120' \
            TABLESPACE = \"Fast Disk\";\nALTER DATABASE app OWNER TO r;";
        let props = parse(script, "app").expect("parsed");
        let creation = props.creation().expect("a CREATE DATABASE");
        let options = "ENCODING = 'LATIN1' LOCALE_PROVIDER = icu LC_COLLATE = 'fr_FR.iso88591' \
            LC_CTYPE = 'C' ICU_LOCALE = 'fr-u-co-''x' ICU_RULES = '&a < b'";
        assert_eq!(
            creation.statement("other", false),
            format!("CREATE DATABASE \"other\" WITH TEMPLATE = template0 {options}")
        );
        assert_eq!(
            creation.statement("other", true),
            format!(
                "CREATE DATABASE \"other\" WITH TEMPLATE = template0 {options} \
                 TABLESPACE = \"Fast Disk\""
            )
        );
        assert_eq!(creation.tablespace(), Some("Fast Disk"));
        let want = DatabaseLocale {
            encoding: "LATIN1".into(),
            provider: "icu".into(),
            collate: "fr_FR.iso88591".into(),
            ctype: "C".into(),
            locale: Some("fr-u-co-'x".into()),
            icu_rules: Some("&a < b".into()),
        };
        assert_eq!(creation.locale(), &want);
        assert!(want.matches(&want.clone()));
        assert!(!want.matches(&DatabaseLocale {
            encoding: "UTF8".into(),
            ..want.clone()
        }));
        assert!(!want.matches(&DatabaseLocale {
            collate: "C".into(),
            ..want.clone()
        }));
        // A part the archive does not give is template0's: anything matches it.
        assert!(DatabaseLocale::default().matches(&want));
        // Without one, nothing is known of it; another database's is refused.
        assert_eq!(
            parse("ALTER DATABASE app SET x TO 1;", "app")
                .expect("parsed")
                .creation(),
            None
        );
        let err = parse("CREATE DATABASE other WITH ENCODING = 'UTF8';", "app").expect_err("other");
        assert!(err.contains("names database other, not app"), "{err}");
        for odd in [
            "CREATE DATABASE app WITH ENCODING = ;",
            "CREATE DATABASE app WITH ENCODING 'UTF8' (x);",
            "CREATE DATABASE app WITH LOCALE = E'C';",
        ] {
            let err = parse(odd, "app").expect_err(odd);
            assert!(err.contains("does not apply"), "{odd}: {err}");
        }
    }

    #[test]
    fn a_statement_of_another_shape_or_on_another_database_is_refused() {
        for (script, says) in [
            ("DROP DATABASE app;", "does not apply: DROP DATABASE app;"),
            ("SELECT 1;", "does not apply"),
            ("ALTER TABLE t OWNER TO r;", "does not apply"),
            (
                "ALTER DATABASE other SET x TO 1;",
                "names database other, not app",
            ),
            (
                "ALTER DATABASE \"App\" SET x TO 1;",
                "names database App, not app",
            ),
            ("COMMENT ON DATABASE app IS 'open", "does not end"),
            ("ALTER DATABASE app SET x TO 1", "ends inside a statement"),
        ] {
            let err = parse(script, "app").expect_err(script);
            assert!(err.contains(says), "{script}: {err}");
        }
    }

    #[test]
    fn a_reset_puts_back_what_a_new_database_has() {
        let fresh = Current {
            owner: "postgres".into(),
            connection_limit: -1,
            ..Current::default()
        };
        assert_eq!(
            reset("app", &fresh),
            [
                "ALTER DATABASE \"app\" RESET ALL",
                "COMMENT ON DATABASE \"app\" IS NULL"
            ]
        );
        let used = Current {
            role_settings: vec!["r".into()],
            grantees: Some(vec![None, Some("Old Owner".into()), Some("r".into())]),
            owner: "Old Owner".into(),
            connection_limit: 5,
        };
        assert_eq!(
            reset("a b", &used),
            [
                "ALTER DATABASE \"a b\" RESET ALL",
                "ALTER ROLE \"r\" IN DATABASE \"a b\" RESET ALL",
                "ALTER DATABASE \"a b\" CONNECTION LIMIT -1",
                "COMMENT ON DATABASE \"a b\" IS NULL",
                "REVOKE ALL ON DATABASE \"a b\" FROM PUBLIC CASCADE",
                "REVOKE ALL ON DATABASE \"a b\" FROM \"Old Owner\" CASCADE",
                "REVOKE ALL ON DATABASE \"a b\" FROM \"r\" CASCADE",
                "GRANT CONNECT, TEMPORARY ON DATABASE \"a b\" TO PUBLIC",
                "GRANT ALL ON DATABASE \"a b\" TO \"Old Owner\"",
            ]
        );
    }
}
