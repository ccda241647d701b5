//! Restore: the target database, its globals, properties and roles, and `pg_restore`.

use std::path::Path;
use std::process::Command;

use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::repo::format::Entry;

use super::*;

/// How a database restore runs.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub conn: Connection,
    pub database: String,
    pub clean: bool,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
}

impl RestoreTarget {
    /// Whether the whole archive is restored (no `--table`, no `--schema`): only
    /// then do the database's own properties come along.
    pub fn whole(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty()
    }
}

/// Whether the target database exists and has user tables.
pub async fn target_state(conn: &Connection, db: &str) -> Result<(bool, i64), Failure> {
    let probe = probe(&conn.with_database("postgres")).await?;
    if !probe.databases.contains_key(db) {
        return Ok((false, 0));
    }
    let client = conn.with_database(db).client().await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .map_err(|e| db_error(conn, &e))?
        .get(0);
    Ok((true, n))
}

/// Creates the database when missing (see [`create_database`]); refuses a non-empty
/// one without `clean`.
pub async fn ready_target(t: &RestoreTarget, creation: Option<&Creation>) -> Result<(), Failure> {
    if check_target(t).await? {
        return Ok(());
    }
    create_database(t, creation).await
}

/// Creates the target database: with the archive's encoding and locale from
/// `template0` (`creation`, see [`Creation`]), in the archive's tablespace when the
/// server has one of that name (else its default); without `creation` (an archive
/// that has no `CREATE DATABASE`), with the server's defaults. A server that lacks
/// the archive's locale fails with [`Code::DatabaseLocale`].
pub async fn create_database(
    t: &RestoreTarget,
    creation: Option<&Creation>,
) -> Result<(), Failure> {
    let client = t.conn.with_database("postgres").client().await?;
    let statement = match creation {
        Some(c) => {
            let tablespace = match c.tablespace() {
                Some(ts) => client
                    .query_opt("SELECT 1 FROM pg_tablespace WHERE spcname = $1", &[&ts])
                    .await
                    .map_err(|e| db_error(&t.conn, &e))?
                    .is_some(),
                None => false,
            };
            c.statement(&t.database, tablespace)
        }
        None => format!("CREATE DATABASE {}", properties::quote_ident(&t.database)),
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| creation_failed(t, &statement, &db_error(&t.conn, &e).message))
}

/// A failed `CREATE DATABASE`: [`Code::DatabaseLocale`] when the server lacks the
/// archive's locale (or its encoding does not go with it there), else the server's
/// error as it is.
fn creation_failed(t: &RestoreTarget, statement: &str, said: &str) -> Failure {
    let locale = [
        "invalid locale name",
        "could not open collator",
        "does not match locale",
        "is not supported by ICU",
        "invalid LC_COLLATE locale name",
        "invalid LC_CTYPE locale name",
    ]
    .iter()
    .any(|m| said.contains(m));
    if !locale {
        return Failure::new(Code::DatabaseError, said.to_string());
    }
    Failure::new(
        Code::DatabaseLocale,
        format!(
            "database {} was not created with the snapshot's encoding and locale: {said}, at `{statement}`; \
             nothing was restored",
            t.database
        ),
    )
    .with_help(format!(
        "the server lacks the snapshot's locale: create the database by hand with a locale it has \
         (CREATE DATABASE {} TEMPLATE template0 ENCODING … LOCALE …; `locale -a` on the server lists \
         them), then restore into it",
        properties::quote_ident(&t.database)
    ))
}

/// The encoding and locale of database `db` on the server: its `pg_database` row
/// (`datlocprovider` and the provider's locale from PostgreSQL 15 on).
pub async fn database_locale(conn: &Connection, db: &str) -> Result<DatabaseLocale, Failure> {
    let client = conn.with_database("postgres").client().await?;
    let q = |e: tokio_postgres::Error| db_error(conn, &e);
    let major = server_version_num(&client, conn).await? / 10_000;
    let (provider, locale, rules) = match major {
        0..=14 => ("'libc'", "NULL", "NULL"),
        15 => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' ELSE 'libc' END",
            "daticulocale",
            "NULL",
        ),
        16 => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' ELSE 'libc' END",
            "daticulocale",
            "daticurules",
        ),
        _ => (
            "CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END",
            "datlocale",
            "daticurules",
        ),
    };
    let row = client
        .query_one(
            &format!(
                "SELECT pg_encoding_to_char(encoding)::text, {provider}::text, datcollate::text, \
                 datctype::text, {locale}::text, {rules}::text FROM pg_database WHERE datname = $1"
            ),
            &[&db],
        )
        .await
        .map_err(q)?;
    Ok(DatabaseLocale {
        encoding: row.get(0),
        provider: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        locale: row.get(4),
        icu_rules: row.get(5),
    })
}

/// Refuses a non-empty database without `clean`; returns whether it exists. Changes
/// nothing, so that every target of a restore is checked before any is touched.
pub async fn check_target(t: &RestoreTarget) -> Result<bool, Failure> {
    let (exists, tables) = target_state(&t.conn, &t.database).await?;
    if exists && tables > 0 && !t.clean {
        return Err(Failure::new(
            Code::RestoreRefused,
            format!(
                "database {} on {} is not empty ({tables} tables); nothing was restored",
                t.database,
                t.conn.describe()
            ),
        )
        .with_help(
            "restore into another database with --target, or replace its contents with --clean",
        ));
    }
    Ok(exists)
}

/// Restores the globals (roles may exist already: their errors are not fatal) with
/// psql; returns what it said, each error with its statement.
pub fn restore_globals(
    t: &RestoreTarget,
    tools: &Tools,
    entry: &Entry,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let mut cmd = t.conn.command(&tools.tool("psql"));
    cmd.args([
        "-X",
        "-q",
        "--echo-errors",
        "-v",
        "ON_ERROR_STOP=0",
        "-d",
        "postgres",
        "-f",
        "-",
    ]);
    run_fed(cmd, "psql (globals)", entry, source, false)
}

/// Reads the database's own properties from `archive` (see `properties`): its
/// owner, settings, the settings of roles in it, its privileges, comment and
/// security labels, as `pg_restore --create` would apply them. A custom-format
/// archive is fed in twice until pg_restore has read its table of contents (the rest
/// is not fetched); of a directory-format one, its `toc.dat` goes into a fresh folder
/// under the feed's spool folder first. Needs no server.
pub fn database_properties(
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
    source: &mut dyn ChunkSource,
) -> Result<Properties, Failure> {
    let dir = match feed {
        Feed::Spool { dir, .. } => dir.clone(),
        Feed::Stream => std::env::temp_dir(),
    };
    let what = format!("reading the database properties of {}", archive.name());
    let unreadable = |e: String| {
        Failure::new(Code::DatabaseProperties, format!("{what}: {e}")).with_help(
            "create the database by hand (with the source's encoding and locale) and restore into \
             it with --schema or --table, which leave the database's own properties alone; set \
             those by hand",
        )
    };
    let (listing_of, script_of) = (
        format!("pg_restore --create --list of {}", archive.name()),
        format!("pg_restore --create -L … -f - of {}", archive.name()),
    );
    let pg_restore = |args: &[&str]| {
        let mut cmd = Command::new(tools.tool("pg_restore"));
        cmd.args(args);
        cmd
    };
    let (script, spool) = match &archive.format {
        ArchiveFormat::Custom(entry) => {
            let spool = Spool::new(&dir, "backplan-restore-")
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            let listing = fed_output(
                pg_restore(&["--create", "--list"]),
                &listing_of,
                entry,
                source,
            )?;
            let list = database_list(&listing, spool.path())?;
            let script = match list {
                Some(list) => fed_output(
                    pg_restore(&["--create", "-f", "-", "-L", &list]),
                    &script_of,
                    entry,
                    source,
                )?,
                None => String::new(),
            };
            (script, spool)
        }
        ArchiveFormat::Directory(files) => {
            // Its `toc.dat` alone: the database's entries have no data file.
            let toc = files
                .iter()
                .find(|e| file_name(e) == "toc.dat")
                .ok_or_else(|| {
                    Failure::new(
                        Code::CorruptObject,
                        format!("{}: no toc.dat in the snapshot", archive.name()),
                    )
                })?;
            check_room(archive, on_disk(toc.size), &dir)?;
            let spool = Spool::new(&dir, "backplan-restore-")
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            let folder = spool.path().join("archive");
            std::fs::create_dir(&folder)
                .map_err(|e| Failure::new(Code::Io, format!("{what}: {e}")))?;
            write_file(&folder.join("toc.dat"), toc, source, &mut || Ok(()))?;
            let reading = |args: &[&str]| {
                let mut cmd = pg_restore(args);
                cmd.arg("-Fd").arg(&folder);
                cmd
            };
            let listing = sections::output(reading(&["--create", "--list"]), &listing_of)?;
            let script = match database_list(&listing, spool.path())? {
                Some(list) => {
                    sections::output(reading(&["--create", "-f", "-", "-L", &list]), &script_of)?
                }
                None => String::new(),
            };
            (script, spool)
        }
    };
    spool
        .remove()
        .map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))?;
    properties::parse(&script, &archive.database).map_err(unreadable)
}

/// Writes the database's own entries of a `pg_restore --create --list` listing into
/// a list file in `dir`, for `-L`; `None` when there are none.
fn database_list(listing: &str, dir: &Path) -> Result<Option<String>, Failure> {
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| properties::is_database_entry(l))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    sections::list_file(dir, "database.list", &lines).map(Some)
}

/// Checks that the roles the database's properties name (its owner, grantees, roles
/// with settings in it) exist on the target server, once the snapshot's globals are
/// restored (`globals`: what psql said of them, `None` without globals): a missing
/// one stops the restore before its data. Blocks on the current runtime.
pub fn check_roles(
    t: &RestoreTarget,
    props: &Properties,
    globals: Option<&str>,
) -> Result<(), Failure> {
    if props.roles().is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::current();
    let client = runtime.block_on(t.conn.with_database(&t.database).client())?;
    let wanted: Vec<&str> = props.roles().iter().map(String::as_str).collect();
    let found: Vec<String> = runtime
        .block_on(client.query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
            &[&wanted],
        ))
        .map_err(|e| db_error(&t.conn, &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let absent: Vec<&str> = wanted
        .iter()
        .filter(|w| !found.iter().any(|f| f == *w))
        .copied()
        .collect();
    let missing: Vec<String> = absent.iter().map(|w| properties::quote_ident(w)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let globals = match globals {
        None => RolesFromGlobals::NoGlobals,
        Some(said) => {
            let refused = globals_refused(said, &absent);
            if refused.is_empty() {
                RolesFromGlobals::NotCreated
            } else {
                RolesFromGlobals::Refused(refused)
            }
        }
    };
    Err(MissingRoles {
        database: t.database.clone(),
        roles: missing,
        server: t.conn.describe(),
        globals,
    }
    .into())
}

/// The roles a database's properties name that are not on the target server: a
/// [`Code::DatabaseRolesMissing`] failure (`render` words it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRoles {
    pub database: String,
    /// The missing roles, quoted as SQL identifiers.
    pub roles: Vec<String>,
    /// The target server, as [`Connection::describe`] names it.
    pub server: String,
    pub globals: RolesFromGlobals,
}

/// Why the snapshot's globals did not make the missing roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolesFromGlobals {
    /// The snapshot holds no globals (`globals: false`).
    NoGlobals,
    /// Its globals do not create them.
    NotCreated,
    /// psql refused to create them: what it said, one line per role.
    Refused(Vec<String>),
}

/// What psql said (with `--echo-errors`) when a `CREATE ROLE` of one of `roles`
/// failed: `CREATE ROLE "x": permission denied to create role`.
fn globals_refused(said: &str, roles: &[&str]) -> Vec<String> {
    let lines: Vec<&str> = said.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((_, statement)) = line.split_once("STATEMENT:") else {
            continue;
        };
        let statement = statement.trim().trim_end_matches(';');
        let creates = roles.iter().any(|r| {
            [properties::quote_ident(r), r.to_string()]
                .iter()
                .any(|name| statement == format!("CREATE ROLE {name}"))
        });
        let error = i
            .checked_sub(1)
            .and_then(|j| lines[j].split_once("ERROR:"))
            .map(|(_, e)| e.trim());
        if let (true, Some(error)) = (creates, error) {
            out.push(format!("{statement}: {error}"));
        }
    }
    out
}

/// Gives the target database the properties read from the archive, in one
/// transaction, once its data is restored and analyzed (a revoked `CONNECT` or a
/// setting such as `default_transaction_read_only` cannot get in the restore's way):
/// what it has of its own is reset first (settings, the settings of roles in it,
/// connection limit, comment, privileges), so that the snapshot's alone hold, as in
/// a database `pg_restore --create` makes. An archive that holds none changes
/// nothing. Blocks on the current runtime.
pub fn apply_properties(t: &RestoreTarget, props: &Properties) -> Result<(), Failure> {
    if props.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::current();
    runtime.block_on(async {
        let mut client = t.conn.with_database(&t.database).client().await?;
        let server = |e: tokio_postgres::Error| db_error(&t.conn, &e);
        let row = client
            .query_one(
                "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, d.datacl IS NOT NULL, \
                 ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL \
                       ELSE pg_get_userbyid(a.grantee)::text END \
                       FROM aclexplode(d.datacl) AS a ORDER BY 1), \
                 ARRAY(SELECT pg_get_userbyid(s.setrole)::text FROM pg_db_role_setting AS s \
                       WHERE s.setdatabase = d.oid AND s.setrole <> 0 ORDER BY 1) \
                 FROM pg_database AS d WHERE d.datname = $1",
                &[&t.database],
            )
            .await
            .map_err(server)?;
        let current = properties::Current {
            owner: row.get(0),
            connection_limit: row.get(1),
            grantees: row.get::<_, bool>(2).then(|| row.get(3)),
            role_settings: row.get(4),
        };
        let tx = client.transaction().await.map_err(server)?;
        let statements = properties::reset(&t.database, &current)
            .into_iter()
            .chain(props.statements(&t.database));
        for statement in statements {
            if let Err(e) = tx.batch_execute(&statement).await {
                let said = db_error(&t.conn, &e).message;
                return Err(Failure::new(
                    Code::DatabaseProperties,
                    format!(
                        "database {}: its data is restored, but its properties from the snapshot \
                         were not applied (none of them): {said}, at `{}`",
                        t.database,
                        statement.trim()
                    ),
                )
                .with_help(
                    "the owner, privileges and settings of a database are set by a superuser \
                     (or its owner, a member of the new owner's role): restore again as one, \
                     with --clean",
                ));
            }
        }
        tx.commit().await.map_err(server)
    })
}

/// Reads an archive's table of contents with `pg_restore --list`: it is a whole,
/// readable pg_dump archive. Needs no server. A custom-format archive streams in; a
/// directory-format one is spooled into a fresh folder under `spool` first.
pub fn list_archive(
    tools: &Tools,
    archive: &Archive,
    spool: &Path,
    source: &mut dyn ChunkSource,
) -> Result<(), Failure> {
    let mut cmd = Command::new(tools.tool("pg_restore"));
    cmd.arg("--list");
    let what = format!("pg_restore --list of {}", archive.name());
    match &archive.format {
        ArchiveFormat::Custom(entry) => run_fed(cmd, &what, entry, source, true).map(|_| ()),
        ArchiveFormat::Directory(_) => {
            let spooled = spool_archive(archive, spool, Files::TablesOfContents, source)?;
            cmd.arg("-Fd").arg(&spooled.path);
            run_tool(cmd, &what)?;
            spooled
                .spool
                .remove()
                .map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))
        }
    }
}

/// Whether `archive` is restored into `t` section by section from a spool, its
/// tables' data copied straight from the repository (see `sections`): a
/// directory-format archive, or a custom-format one whose layout the backup recorded,
/// restored whole (not `--clean`, `--table` or `--schema`).
pub fn by_sections(archive: &Archive, t: &RestoreTarget) -> bool {
    let layout = match archive.format {
        ArchiveFormat::Directory(_) => true,
        ArchiveFormat::Custom(_) => archive.layout.is_some(),
    };
    layout && sections::possible(t)
}

/// What a restore of `archive` into `t` writes into its spool.
pub fn spool_files(archive: &Archive, t: &RestoreTarget) -> Files {
    if by_sections(archive, t) {
        Files::TablesOfContents
    } else {
        Files::All
    }
}

/// Restores one database archive with pg_restore: fed through its standard input, or
/// from a spool (`-j N`, `-Fd` for a directory-format archive) that is removed
/// afterwards whatever happens.
pub fn restore_database(
    t: &RestoreTarget,
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
    source: &mut dyn ChunkSource,
) -> Result<String, Failure> {
    let mut cmd = t.conn.command(&tools.tool("pg_restore"));
    cmd.args(["--no-password", "--exit-on-error", "-d", &t.database]);
    if t.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    for table in &t.tables {
        cmd.args(["--table", table]);
    }
    for schema in &t.schemas {
        cmd.args(["--schema", schema]);
    }
    let what = format!("pg_restore into {}", t.database);
    match (feed, &archive.format) {
        (Feed::Stream, ArchiveFormat::Custom(entry)) => run_fed(cmd, &what, entry, source, true),
        (Feed::Stream, ArchiveFormat::Directory(_)) => Err(failed(format!(
            "{what}: {} is a directory-format archive, which pg_restore reads only from a spool",
            archive.name()
        ))),
        (Feed::Spool { dir, jobs }, format) => {
            let by_sections = by_sections(archive, t);
            let spooled = spool_archive(archive, dir, spool_files(archive, t), source)?;
            let done = if by_sections {
                sections::restore(t, tools, &spooled, *jobs, source)
            } else {
                cmd.arg(format!("--jobs={jobs}"));
                if matches!(format, ArchiveFormat::Directory(_)) {
                    cmd.arg("-Fd");
                }
                cmd.arg(&spooled.path);
                run_tool(cmd, &format!("pg_restore -j {jobs} into {}", t.database))
            };
            // The restore's own failure first; a spool that cannot be removed after a
            // good restore is a failure too: it holds the database in plain.
            let removed = spooled.spool.remove();
            let errors = done?;
            removed.map_err(|e| failed(format!("{what}: removing the spool folder: {e}")))?;
            Ok(errors)
        }
    }
}

/// `ANALYZE` after a restore, so the planner has statistics at once: `vacuumdb
/// --analyze-only` with `jobs` connections, each analyzing its share of the tables.
pub fn analyze(t: &RestoreTarget, tools: &Tools, jobs: u32) -> Result<(), Failure> {
    let mut cmd = t.conn.command(&tools.tool("vacuumdb"));
    cmd.args(["--no-password", "--analyze-only", "--quiet"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .args(["-d", &t.database]);
    run_tool(cmd, &format!("ANALYZE of {} (vacuumdb)", t.database)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn what_psql_said_of_a_role_it_could_not_create_is_found_among_its_errors() {
        let said = "psql:<stdin>:1: ERROR:  permission denied to create role\n\
            psql:<stdin>:1: STATEMENT:  CREATE ROLE postgres;\n\
            psql:<stdin>:3: ERROR:  permission denied to create role\n\
            psql:<stdin>:3: STATEMENT:  CREATE ROLE \"App Owner\";\n\
            psql:<stdin>:4: ERROR:  must be superuser to alter superuser roles\n\
            psql:<stdin>:4: STATEMENT:  ALTER ROLE \"App Owner\" WITH NOSUPERUSER;\n\
            psql:<stdin>:5: ERROR:  permission denied to create role\n\
            psql:<stdin>:5: STATEMENT:  CREATE ROLE reader;\n";
        assert_eq!(
            globals_refused(said, &["App Owner", "reader", "other"]),
            [
                "CREATE ROLE \"App Owner\": permission denied to create role",
                "CREATE ROLE reader: permission denied to create role"
            ]
        );
        assert!(globals_refused(said, &["other"]).is_empty());
    }

    #[test]
    fn a_server_without_the_snapshots_locale_fails_with_its_own_code_and_what_to_do() {
        let t = RestoreTarget {
            conn: Connection::from_url("postgres://postgres@db.invalid:5432/app", None)
                .expect("a URL"),
            database: "New App".into(),
            clean: false,
            tables: Vec::new(),
            schemas: Vec::new(),
        };
        let statement = "CREATE DATABASE \"New App\" WITH TEMPLATE = template0 LOCALE = 'xx_YY'";
        // What PostgreSQL 15 to 17 say.
        for said in [
            "PostgreSQL at postgres@db.invalid:5432: invalid locale name: \"xx_YY\"",
            "PostgreSQL at postgres@db.invalid:5432: invalid LC_COLLATE locale name: \"xx_YY\"",
            "PostgreSQL at postgres@db.invalid:5432: encoding \"LATIN1\" does not match locale \"C.utf8\"",
        ] {
            let f = creation_failed(&t, statement, said);
            assert_eq!(f.code, Code::DatabaseLocale, "{said}");
            assert!(f.message.contains(said), "{}", f.message);
            assert!(f.message.contains(statement), "{}", f.message);
            assert!(f.message.contains("nothing was restored"), "{}", f.message);
            let help = f.help.expect("help");
            assert!(
                help.contains("create the database by hand with a locale it has")
                    && help.contains("CREATE DATABASE \"New App\" TEMPLATE template0")
                    && help.contains("then restore into it"),
                "{help}"
            );
        }
        let other = creation_failed(&t, statement, "permission denied to create database");
        assert_eq!(other.code, Code::DatabaseError);
        assert_eq!(other.message, "permission denied to create database");
    }
}
