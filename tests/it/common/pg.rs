//! Throwaway PostgreSQL servers for integration tests.
//!
//! [`PgServer::start`] makes a fresh cluster in a temporary folder (`initdb`), starts it
//! on a free port of 127.0.0.1 with its socket in that folder (`pg_ctl`), and stops and
//! removes it when dropped. Everything is per instance, so tests may run in parallel.
//!
//! The binaries are the newest `/usr/lib/postgresql/<major>/bin` holding `initdb`, else
//! the folder of an `initdb` on `PATH`, or `$BACKPLAN_PG_BINDIR` when set
//! (`scripts/install-deps` installs them). `initdb` refuses to run as root, so as root
//! the folder is handed to the `postgres` user and the server tools run through
//! `runuser -u postgres --`; clients (`psql`, `pg_dump`, …) run as the current user and
//! connect over TCP with trust authentication as the `postgres` role.
//!
//! [`populate_fixture`] fills a database with what a dump must carry, and
//! [`table_row_counts`] and [`dump_schema_and_data`] describe a database for round-trip
//! comparisons.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The user that owns the cluster when the tests run as root.
const SERVER_USER: &str = "postgres";

/// libpq's environment variables, removed from every command so that the caller's
/// environment cannot point a tool at another server.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
];

/// A running PostgreSQL cluster that lives as long as this value.
#[derive(Debug)]
pub struct PgServer {
    /// Holds `data/` (the cluster), `server.log`, and the server's Unix socket.
    dir: TempDir,
    bin_dir: PathBuf,
    port: u16,
    /// `Some(user)` when the server tools run through `runuser -u user --`.
    run_as: Option<String>,
}

impl PgServer {
    /// Makes and starts a new cluster (`initdb -E UTF8 --locale=C`); panics with the
    /// reason when it cannot.
    pub fn start() -> PgServer {
        PgServer::start_with("C", &[])
    }

    /// Makes and starts a new cluster whose databases default to UTF8 and `locale`
    /// (`initdb -E UTF8 --locale=LOCALE`), its server started with `env` besides the
    /// usual environment (`LOCPATH`, say, for locales of its own).
    pub fn start_with(locale: &str, env: &[(&str, &Path)]) -> PgServer {
        let bin_dir = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("backplan-pg-")
            .tempdir()
            .expect("create a temporary folder for PostgreSQL");
        let run_as = if current_uid() == 0 {
            let (uid, gid) = user_ids(SERVER_USER);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {SERVER_USER}: {e}", dir.path().display()));
            Some(SERVER_USER.to_string())
        } else {
            None
        };
        let mut server = PgServer {
            dir,
            bin_dir,
            port: 0,
            run_as,
        };

        let data = server.data_dir();
        let output = server
            .server_tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .args(["-E", "UTF8", &format!("--locale={locale}"), "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        check(&output, "initdb");

        // Another test (or process) may take the port between our probe and the
        // server's bind; the server then fails to start, and we try another port.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off",
                server.dir.path().display()
            );
            let mut pg_ctl = server.server_tool("pg_ctl");
            for (name, value) in env {
                pg_ctl.env(name, value);
            }
            let output = pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.log_file())
                .args(["-o", &options, "-w", "-t", "60", "start"])
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl start");
            if output.status.success() {
                server.port = port;
                return server;
            }
            failures.push(format!(
                "port {port}: {}\n{}",
                describe(&output),
                std::fs::read_to_string(server.log_file()).unwrap_or_default()
            ));
            // The log is appended to; keep only this attempt's lines in the next one.
            let _ = std::fs::remove_file(server.log_file());
        }
        panic!("PostgreSQL did not start:\n{}", failures.join("\n---\n"));
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (trust authentication, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding this server's `initdb`, `pg_ctl`, `psql`, `pg_dump`, ….
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log, for a failing test to show.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A client tool of [`bin_dir`](Self::bin_dir) (`pg_dump`, `pg_restore`, `psql`, …),
    /// run as the current user, with `PGHOST`, `PGPORT` and `PGUSER` naming this
    /// server and no other libpq variable from the caller's environment.
    pub fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(name));
        for var in LIBPQ_ENV {
            command.env_remove(var);
        }
        command
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGCONNECT_TIMEOUT", "10")
            // Text in UTF-8 whatever the database's encoding (`LATIN1`, say).
            .env("PGCLIENTENCODING", "UTF8")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs `sql` (any number of statements) in `db` with
    /// `psql -X -q -t -A -v ON_ERROR_STOP=1` and returns its output: unaligned rows,
    /// fields separated by `|`, no headers. Panics with psql's stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = self
            .tool("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        let mut stdin = child.stdin.take().expect("psql's stdin");
        // Written from another thread: psql may fill its stdout before it has read all
        // of its input.
        let sql = sql.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
        let output = child.wait_with_output().expect("wait for psql");
        let written = writer.join().expect("psql writer thread");
        check(&output, &format!("psql -d {db}"));
        written.expect("write SQL to psql");
        String::from_utf8(output.stdout).expect("psql prints UTF-8")
    }

    /// Makes `role` a superuser that logs in with `password` only: scram-sha-256 for
    /// it over TCP, trust for everyone else as before (so the harness's own tools
    /// still connect as `postgres`), and the server reloads its configuration.
    pub fn require_password(&self, role: &str, password: &str) {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE {} LOGIN SUPERUSER PASSWORD '{}';",
                quote_ident(role),
                password.replace('\'', "''")
            ),
        );
        let hba = self.data_dir().join("pg_hba.conf");
        // The first matching line wins. Written in place, the file keeps its owner.
        std::fs::write(
            &hba,
            format!(
                "host all {role} 127.0.0.1/32 scram-sha-256\n\
                 host all all 127.0.0.1/32 trust\n\
                 local all all trust\n"
            ),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", hba.display()));
        assert_eq!(
            self.psql("postgres", "SELECT pg_reload_conf();").trim(),
            "t"
        );
        // The reload is asynchronous: wait until a login without the password fails.
        let started = std::time::Instant::now();
        loop {
            let output = self
                .tool("psql")
                .args(["-X", "-w", "-U", role, "-d", "postgres", "-c", "SELECT 1"])
                .output()
                .expect("run psql");
            if !output.status.success() {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the server still lets {role} in without a password"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `postgres://ROLE@127.0.0.1:PORT/DB`, without a password.
    pub fn url_as(&self, role: &str, db: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{db}", self.port)
    }

    /// `CREATE DATABASE name`.
    pub fn createdb(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};", quote_ident(name)),
        );
    }

    /// An `initdb` or `pg_ctl` command, as the cluster's owner.
    fn server_tool(&self, name: &str) -> Command {
        let program = self.bin_dir.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        for var in LIBPQ_ENV {
            command.env_remove(var);
        }
        // The cluster's owner may not be allowed into the caller's folder.
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self
                .server_tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // TempDir removes the folder (as the current user: root may, the owner may).
    }
}

/// The newest PostgreSQL binaries: `$BACKPLAN_PG_BINDIR`, else the highest
/// `/usr/lib/postgresql/<major>/bin` with an `initdb`, else the folder of `initdb` on
/// `PATH` (symlinks resolved, so `pg_ctl` is found beside it).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BACKPLAN_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "BACKPLAN_PG_BINDIR={} holds no initdb",
            dir.display()
        );
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .expect(
            "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin or on \
             PATH; run scripts/install-deps",
        )
}

/// Fills `db` with what a dump must carry: two schemas, text, jsonb, bytea, hstore,
/// timestamptz and numeric columns (NULLs, tabs, newlines, backslashes, non-ASCII, a
/// TOASTed value), a foreign key, a sequence moved off its start, a view and a
/// materialized view, a plpgsql trigger function and its trigger, large objects, the
/// `pg_trgm` and `hstore` extensions with indexes using them, the `media_reader` role
/// with grants (also on a large object), default privileges, comments, and a few
/// thousand rows. The role is global: populating a second database of the same server
/// reuses it.
pub fn populate_fixture(server: &PgServer, db: &str) {
    server.psql(db, FIXTURE_SQL);
}

const FIXTURE_SQL: &str = r#"
BEGIN;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'media_reader') THEN
    CREATE ROLE media_reader NOLOGIN;
  END IF;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS hstore;

CREATE SCHEMA media;
COMMENT ON SCHEMA media IS 'Uploaded media and what is known about them';

CREATE TABLE public.accounts (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text,
    settings jsonb NOT NULL DEFAULT '{}',
    balance numeric(12, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
COMMENT ON TABLE public.accounts IS 'People who upload media';
COMMENT ON COLUMN public.accounts.balance IS 'Prepaid credit, in euros';

CREATE TABLE media.files (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES public.accounts (id),
    path text NOT NULL,
    title text NOT NULL,
    tags hstore,
    meta jsonb,
    thumbnail bytea,
    size_bytes numeric(20, 0) NOT NULL,
    ratio numeric,
    uploaded_at timestamptz NOT NULL,
    updated_at timestamptz
);
CREATE INDEX files_title_trgm ON media.files USING gin (title gin_trgm_ops);
CREATE INDEX files_tags ON media.files USING gin (tags);
CREATE INDEX files_account ON media.files (account_id, uploaded_at DESC);
COMMENT ON INDEX media.files_title_trgm IS 'Fuzzy title search';

CREATE TABLE media.audit_log (
    id bigserial PRIMARY KEY,
    file_id bigint NOT NULL,
    action text NOT NULL CHECK (action IN ('insert', 'update')),
    title text NOT NULL
);

CREATE TABLE media.attachments (
    id serial PRIMARY KEY,
    name text NOT NULL,
    content oid NOT NULL
);

CREATE SEQUENCE media.invoice_number START 1000 INCREMENT 7;
SELECT setval('media.invoice_number', 4242, true);
COMMENT ON SEQUENCE media.invoice_number IS 'Next invoice number (gaps allowed)';

CREATE FUNCTION media.log_file_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := NEW.uploaded_at + interval '1 day';
    END IF;
    INSERT INTO media.audit_log (file_id, action, title)
    VALUES (NEW.id, lower(TG_OP), NEW.title);
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION media.log_file_change() IS 'Records every new or changed file';

CREATE TRIGGER files_audit
    BEFORE INSERT OR UPDATE ON media.files
    FOR EACH ROW EXECUTE FUNCTION media.log_file_change();

INSERT INTO public.accounts (email, display_name, settings, balance, created_at, updated_at)
SELECT
    format('user%s@example.invalid', g),
    CASE WHEN g % 7 = 0 THEN NULL ELSE format('User %s', g) END,
    jsonb_build_object('theme', CASE WHEN g % 2 = 0 THEN 'dark' ELSE 'light' END,
                       'quota_mb', g * 10, 'beta', g % 5 = 0),
    round((g * 13.37)::numeric % 1000, 2),
    timestamptz '2025-01-01 00:00:00+00' + g * interval '37 minutes',
    timestamptz '2025-06-01 00:00:00+00' + g * interval '11 minutes'
FROM generate_series(1, 500) AS g;

INSERT INTO public.accounts (email, display_name, settings, balance, created_at, updated_at)
VALUES (
    'odd@example.invalid',
    E'tab\there, newline\nhere, backslash \\ and quote '' — Zoë, 日本語, 🎞️',
    '{"nested": {"list": [1, 2.5, null, "x"], "empty": {}}}',
    -0.01,
    timestamptz '1999-12-31 23:59:59.999999+00',
    timestamptz 'infinity'
);

INSERT INTO media.files (account_id, path, title, tags, meta, thumbnail, size_bytes, ratio,
                         uploaded_at)
SELECT
    1 + g % 500,
    format('/uploads/%s/%s/file-%s.jpg', 2025 + g % 2, 1 + g % 12, g),
    format('Holiday photo %s %s', g, (ARRAY['beach', 'mountain', 'city', 'forest'])[1 + g % 4]),
    CASE WHEN g % 3 = 0 THEN NULL
         ELSE hstore(ARRAY['camera', 'iso'], ARRAY['cam-' || g % 9, (100 * (1 + g % 8))::text])
    END,
    jsonb_build_object('width', 640 + g % 1000, 'height', 480 + g % 700,
                       'exif', jsonb_build_object('f', 1.8 + (g % 10) / 10.0)),
    decode(md5(g::text) || md5((g * 7)::text), 'hex'),
    1000000 + g * 12345,
    CASE WHEN g % 11 = 0 THEN NULL ELSE round(g / 3.0, 10) END,
    timestamptz '2025-01-01 00:00:00+00' + g * interval '1 hour 3 minutes'
FROM generate_series(1, 3000) AS g;

-- A value large enough to be TOASTed.
INSERT INTO media.files (account_id, path, title, meta, thumbnail, size_bytes, uploaded_at)
SELECT 501, '/uploads/big.bin', 'A large description',
       jsonb_build_object('description', string_agg(md5(g::text), ' ')),
       decode(string_agg(md5((g * 3)::text), ''), 'hex'),
       1e15, timestamptz '2026-02-03 04:05:06.789+01'
FROM generate_series(1, 4000) AS g;

-- Updates fire the trigger again and leave the heap out of insertion order.
UPDATE media.files SET title = title || ' (edited)' WHERE id % 10 = 0;

INSERT INTO media.attachments (name, content) VALUES
    ('terms.txt', lo_from_bytea(0, convert_to(E'Terms of service\nVersion 3\n', 'UTF8'))),
    ('logo.bin', lo_from_bytea(0, decode(repeat(md5('logo'), 512), 'hex')));
SELECT lo_from_bytea(0, '\x00ff00ff'::bytea) AS orphan_large_object \gset
COMMENT ON LARGE OBJECT :orphan_large_object IS 'A large object that no row names';

CREATE VIEW public.account_usage AS
SELECT a.id, a.email, count(f.id) AS files, coalesce(sum(f.size_bytes), 0) AS bytes
FROM public.accounts AS a
LEFT JOIN media.files AS f ON f.account_id = a.id
GROUP BY a.id, a.email;
COMMENT ON VIEW public.account_usage IS 'Files and bytes per account';

CREATE MATERIALIZED VIEW media.monthly_uploads AS
SELECT date_trunc('month', uploaded_at AT TIME ZONE 'UTC') AS month,
       count(*) AS files,
       sum(size_bytes) AS bytes
FROM media.files
GROUP BY 1;
CREATE UNIQUE INDEX monthly_uploads_month ON media.monthly_uploads (month);

GRANT USAGE ON SCHEMA media TO media_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA media TO media_reader;
GRANT SELECT ON public.account_usage TO media_reader;
GRANT SELECT (id, email) ON public.accounts TO media_reader;
GRANT USAGE ON SEQUENCE media.invoice_number TO media_reader;
GRANT SELECT ON LARGE OBJECT :orphan_large_object TO media_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA media GRANT SELECT ON TABLES TO media_reader;

COMMIT;
ANALYZE;
"#;

/// The number of rows of every user table (plain and partitioned, not views or
/// materialized views), keyed `schema.table`.
pub fn table_row_counts(server: &PgServer, db: &str) -> BTreeMap<String, i64> {
    let output = server.psql(
        db,
        r#"
SELECT format('%s.%s', n.nspname, c.relname),
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                           false, true, '')))[1]::text::bigint
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
ORDER BY 1;
"#,
    );
    output
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (table, count) = line
                .rsplit_once('|')
                .unwrap_or_else(|| panic!("unexpected psql row {line:?}"));
            let count = count
                .parse()
                .unwrap_or_else(|e| panic!("row count of {table}: {count:?}: {e}"));
            (table.to_string(), count)
        })
        .collect()
}

/// A plain-text `pg_dump` of `db` (schema, data, large objects, owners, grants,
/// comments) made comparable: the rows of each table's `COPY` block are sorted (a
/// restore may place rows in other heap pages, and pg_dump prints them in heap order;
/// each row is one line, as COPY escapes newlines), and the lines that differ between
/// two dumps of equal databases are dropped: the random `\restrict` / `\unrestrict` keys
/// of newer pg_dump versions and any timestamp line. Two databases restored from one
/// dump give the same text.
pub fn dump_schema_and_data(server: &PgServer, db: &str) -> String {
    let output = server
        .tool("pg_dump")
        .args(["--format=plain", "--no-password", "--dbname", db])
        .output()
        .expect("run pg_dump");
    check(&output, &format!("pg_dump {db}"));
    let text = String::from_utf8(output.stdout).expect("pg_dump prints UTF-8");
    comparable_dump(&text)
}

/// `pg_dump --create --schema-only` of `db`: the database itself (its `CREATE
/// DATABASE`, owner, comment, settings, the settings of roles in it, its privileges)
/// and its schema, made comparable like [`dump_schema_and_data`], with every spelling
/// of its name (quoted, with inner quotes doubled, plain) replaced by `DB`, so that two
/// databases of other names compare.
pub fn dump_database_and_schema(server: &PgServer, db: &str) -> String {
    let output = server
        .tool("pg_dump")
        .args(["--create", "--schema-only", "--no-password", "--dbname", db])
        .output()
        .expect("run pg_dump");
    check(&output, &format!("pg_dump --create --schema-only {db}"));
    let text = String::from_utf8(output.stdout).expect("pg_dump prints UTF-8");
    comparable_dump(&text)
        .replace(&quote_ident(db), "DB")
        .replace(&db.replace('"', "\"\""), "DB")
        .replace(db, "DB")
}

/// See [`dump_schema_and_data`].
fn comparable_dump(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rows: Option<Vec<&str>> = None;
    for line in text.lines() {
        if let Some(block) = rows.as_mut() {
            if line == "\\." {
                block.sort_unstable();
                for row in block.drain(..) {
                    kept.push_str(row);
                    kept.push('\n');
                }
                rows = None;
            } else {
                block.push(line);
                continue;
            }
        }
        let volatile = line.starts_with("\\restrict ")
            || line.starts_with("\\unrestrict ")
            || line.starts_with("-- Started on ")
            || line.starts_with("-- Completed on ")
            || line.starts_with("-- Dump completed on ");
        if !volatile {
            kept.push_str(line);
            kept.push('\n');
        }
        if line.starts_with("COPY ") && line.ends_with(" FROM stdin;") {
            rows = Some(Vec::new());
        }
    }
    assert!(rows.is_none(), "the dump ends inside a COPY block");
    kept
}

/// `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port on 127.0.0.1")
        .port()
}

/// The effective user id of this process (the owner of `/proc/self`).
fn current_uid() -> u32 {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return meta.uid();
    }
    let output = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("id -u prints a number")
}

/// The uid and gid of `user`.
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        assert!(
            output.status.success(),
            "the tests run as root, so PostgreSQL must run as the `{user}` user, which \
             does not exist (the postgresql package makes it; run scripts/install-deps): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("id prints a number")
    };
    (id("-u"), id("-g"))
}

fn check(output: &Output, what: &str) {
    assert!(output.status.success(), "{what}: {}", describe(output));
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
