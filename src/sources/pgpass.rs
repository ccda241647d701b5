//! libpq's password file, read the way libpq reads it, so that the connections
//! backplan makes itself with tokio-postgres (the plan's probe, the exported snapshot,
//! the row counts, restore checks) find the password that `pg_dump` and `pg_restore`
//! find on their own. tokio-postgres does not read the file.
//!
//! The file is `$PGPASSFILE`, else `~/.pgpass`. Each line is
//! `hostname:port:database:username:password`; a field that is exactly `*` matches
//! anything; `\:` and `\\` stand for `:` and `\` (a backslash escapes any character);
//! lines starting with `#` are comments; the first matching line wins. As libpq does, a
//! file that is not a plain file, or that its group or others may read or write
//! (permissions wider than 0600), is not read at all.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// libpq matches a connection over a Unix socket in its default socket folder as host
/// `localhost`: Debian's folder and the upstream default.
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// What a line is matched against: one connection.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// A host name or address, or a Unix socket folder (starting with `/`).
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password file libpq would read: `$PGPASSFILE` when set, else `$HOME/.pgpass`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("PGPASSFILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".pgpass"))
}

/// The password for `wanted` from the file at `path`; `None` when the file is
/// missing, unreadable, not a plain file, readable or writable by group or others, or
/// has no matching line.
pub fn lookup(path: &Path, wanted: &Wanted<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    find(&std::fs::read_to_string(path).ok()?, wanted)
}

/// The password of the first line of `text` that matches `wanted`.
pub fn find(text: &str, wanted: &Wanted<'_>) -> Option<String> {
    let host = if wanted.host.is_empty() || DEFAULT_SOCKET_DIRS.contains(&wanted.host) {
        "localhost"
    } else {
        wanted.host
    };
    let port = wanted.port.to_string();
    let want = [host, port.as_str(), wanted.database, wanted.user];
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|line| {
            let fields = split(line);
            // Four fields to match and a password; libpq ignores anything after it.
            if fields.len() < 5 {
                return None;
            }
            let matches = fields
                .iter()
                .zip(want)
                .all(|(field, value)| field.wildcard || field.text == value);
            matches.then(|| fields[4].text.clone())
        })
}

/// One field of a line, its escapes resolved.
#[derive(Debug)]
struct Field {
    text: String,
    /// Written as a bare `*` (an escaped `\*` is a literal star).
    wildcard: bool,
}

/// Splits a line at its unescaped colons, resolving `\x` to `x`.
fn split(line: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    let (mut text, mut escaped) = (String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    text.push(next);
                    escaped = true;
                }
                // A trailing backslash stays as written.
                None => text.push('\\'),
            },
            ':' => {
                fields.push(Field::new(std::mem::take(&mut text), escaped));
                escaped = false;
            }
            c => text.push(c),
        }
    }
    fields.push(Field::new(text, escaped));
    fields
}

impl Field {
    fn new(text: String, escaped: bool) -> Field {
        Field {
            wildcard: text == "*" && !escaped,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted<'a>(host: &'a str, port: u16, database: &'a str, user: &'a str) -> Wanted<'a> {
        Wanted {
            host,
            port,
            database,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_and_star_matches_any_field() {
        let text = "\
# a comment: this line is no entry
db.internal:5432:medianest:backup:first
db.internal:5432:medianest:backup:second
*:*:*:backup:fallback
db.internal:*:*:*:anyone
";
        let w = wanted("db.internal", 5432, "medianest", "backup");
        assert_eq!(find(text, &w).as_deref(), Some("first"));
        let other_db = wanted("db.internal", 5432, "analytics", "backup");
        assert_eq!(find(text, &other_db).as_deref(), Some("fallback"));
        let other_user = wanted("db.internal", 6543, "x", "reporter");
        assert_eq!(find(text, &other_user).as_deref(), Some("anyone"));
        assert_eq!(
            find(text, &wanted("elsewhere", 5432, "x", "reporter")),
            None
        );
    }

    #[test]
    fn escaped_colons_and_backslashes_are_literal_in_every_field() {
        let text = "h:5432:we\\:ird:u:pa\\:ss\\\\word\\:end:ignored\n";
        let w = wanted("h", 5432, "we:ird", "u");
        assert_eq!(find(text, &w).as_deref(), Some("pa:ss\\word:end"));
        // The escaped colon does not end the field: `we` alone does not match.
        assert_eq!(find(text, &wanted("h", 5432, "we", "u")), None);
        // An escaped star is a star, not a wildcard.
        let star = "h:5432:\\*:u:literal\n";
        assert_eq!(find(star, &wanted("h", 5432, "app", "u")), None);
        assert_eq!(
            find(star, &wanted("h", 5432, "*", "u")).as_deref(),
            Some("literal")
        );
    }

    #[test]
    fn ports_compare_as_text_and_short_lines_and_crlf_are_handled() {
        let text = "h:5433:app:u\nh:5433:app:u:crlf\r\n";
        assert_eq!(
            find(text, &wanted("h", 5433, "app", "u")).as_deref(),
            Some("crlf")
        );
        assert_eq!(find(text, &wanted("h", 5432, "app", "u")), None);
        assert_eq!(
            find("h:5432:app:u:\n", &wanted("h", 5432, "app", "u")).as_deref(),
            Some("")
        );
    }

    #[test]
    fn a_socket_in_the_default_folder_matches_localhost_and_others_match_their_path() {
        let text = "localhost:5432:app:u:local\n/srv/pg:5432:app:u:custom\n";
        assert_eq!(
            find(text, &wanted("/var/run/postgresql", 5432, "app", "u")).as_deref(),
            Some("local")
        );
        assert_eq!(
            find(text, &wanted("/srv/pg", 5432, "app", "u")).as_deref(),
            Some("custom")
        );
        assert_eq!(
            find(text, &wanted("", 5432, "app", "u")).as_deref(),
            Some("local")
        );
    }

    #[test]
    fn a_file_others_may_read_is_ignored_as_libpq_ignores_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").expect("write");
        let w = wanted("h", 5432, "app", "u");
        for (mode, expected) in [
            (0o600, Some("secret")),
            (0o400, Some("secret")),
            (0o640, None),
            (0o604, None),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(lookup(&path, &w).as_deref(), expected, "mode {mode:o}");
        }
        assert_eq!(lookup(dir.path(), &w), None, "a folder is not read");
        assert_eq!(lookup(&dir.path().join("missing"), &w), None);
    }
}
