//! The scratch targets of a restore drill (`backplan drill`): where a source's
//! snapshot is restored to be checked, never where the source lives. Each kind's
//! [`super::Seam::scratch`] makes one; the drill restores into it through the
//! restore executor, then [`Scratch::check`] compares what arrived with what the
//! snapshot recorded at backup, and [`Scratch::remove`] takes it away, whatever
//! happened before.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::pipeline::fetch::RepoFetcher;
use crate::pipeline::sink::ChunkIds;
use crate::repo::format::{EntryKind, Tree};
use crate::sources::{postgres as pg, redis};

use super::{DatabaseServer, RestoreOptions, Restored};

/// A scratch target, ready for a restore.
#[derive(Debug)]
pub enum Scratch {
    /// Databases named `<prefix><database>` on a PostgreSQL server: the restore
    /// creates them.
    Databases {
        conn: Box<pg::Connection>,
        prefix: String,
    },
    /// A throwaway `redis-server` on a free port of this host, with its folder.
    Redis {
        child: Child,
        dir: tempfile::TempDir,
        url: String,
    },
    /// A Redis server the policy declares for drills (`drill.targets`): empty
    /// before the drill (the restore refuses it otherwise), emptied after.
    Server { url: String },
    /// An empty temporary folder.
    Folder { dir: tempfile::TempDir },
}

/// The drill target the policy declares for `source` (`drill.targets`), resolved.
pub fn declared(policy: &crate::policy::Policy, source: &str) -> Result<Option<String>, Failure> {
    let Some(url) = policy
        .file
        .drill
        .as_ref()
        .and_then(|d| d.targets.get(source))
    else {
        return Ok(None);
    };
    url.resolve()
        .map(|r| Some(r.expose().to_string()))
        .map_err(|e| {
            Failure::new(
                Code::SecretUnresolved,
                format!("drill.targets.{source}: {e}"),
            )
        })
}

/// What the checks of one drill compared, and what differed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// Tables, Redis databases or files compared.
    pub checked: u64,
    pub unit: CheckUnit,
    pub differences: Vec<Difference>,
    /// Redis: the `DEBUG DIGEST` the restored keys and the snapshot's RDB (loaded
    /// by a server of its own) both gave, when both servers allow `DEBUG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// PostgreSQL: the tables whose row checksums were compared too, when the
    /// snapshot recorded them (a source with `checksums: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksums: Option<u64>,
}

/// What [`Checks::checked`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckUnit {
    /// Tables' rows against the counts recorded at backup.
    #[default]
    Tables,
    /// Redis databases' keys against those counted in the RDB at backup.
    Databases,
    /// Files' bytes re-hashed into chunk ids against the snapshot's entries.
    Files,
}

/// One thing restored that is not what the snapshot recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "difference", rename_all = "snake_case")]
pub enum Difference {
    /// A table's rows; `restored` is `None` when the table is missing.
    Rows {
        database: String,
        table: String,
        restored: Option<i64>,
        recorded: i64,
    },
    /// A table's rows are as many as recorded, but their checksum differs: some
    /// value does.
    Checksum {
        database: String,
        table: String,
        restored: String,
        recorded: String,
    },
    /// A Redis database's keys (all databases together as `db` `None`, when keys
    /// expired on the way and are left out of the per-database counts).
    Keys {
        db: Option<u32>,
        restored: u64,
        recorded: u64,
    },
    /// The restored keys' `DEBUG DIGEST` is not the snapshot RDB's: some value or
    /// expiry differs.
    Digest { restored: String, snapshot: String },
    /// A file: missing (`restored_bytes` `None`), of another size, or with other
    /// bytes (the same size, other chunk ids).
    File {
        path: String,
        restored_bytes: Option<u64>,
        recorded_bytes: u64,
    },
}

/// A random suffix for scratch names.
pub fn random_suffix() -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    r.iter().map(|b| format!("{b:02x}")).collect()
}

impl Scratch {
    /// Scratch databases on the server of `conn`, named after the source and a
    /// random suffix.
    pub fn databases(conn: pg::Connection, source: &str) -> Scratch {
        Scratch::Databases {
            conn: Box::new(conn),
            prefix: format!("backplan_drill_{source}_{}_", random_suffix()),
        }
    }

    /// An empty folder under the temporary folder.
    pub fn folder(source: &str) -> Result<Scratch, Failure> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("backplan-drill-{source}-"))
            .tempdir()
            .map_err(|e| scratch_failed(format!("cannot make a temporary folder: {e}")))?;
        Ok(Scratch::Folder { dir })
    }

    /// Starts a throwaway `redis-server` ([`start_server`]) in a temporary folder.
    pub fn redis(source: &str) -> Result<Scratch, Failure> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("backplan-drill-{source}-"))
            .tempdir()
            .map_err(|e| scratch_failed(format!("cannot make a temporary folder: {e}")))?;
        let (child, url) = start_server(dir.path())?;
        Ok(Scratch::Redis { child, dir, url })
    }

    /// Where the restore goes, as `--target` would say it: `None` for databases,
    /// which [`Scratch::options`] renames instead.
    pub fn target(&self) -> Option<String> {
        match self {
            Scratch::Databases { .. } => None,
            Scratch::Redis { url, .. } | Scratch::Server { url } => Some(url.clone()),
            Scratch::Folder { dir } => Some(dir.path().display().to_string()),
        }
    }

    /// How the drill's restore writes: into empty targets, databases renamed and
    /// made on the scratch server (the source's own, or the one the policy declares),
    /// where the checks and the clean-up look for them.
    pub fn options(&self) -> RestoreOptions {
        match self {
            Scratch::Databases { conn, prefix } => RestoreOptions {
                database_prefix: Some(prefix.clone()),
                database_server: Some(DatabaseServer((**conn).clone())),
                ..RestoreOptions::default()
            },
            _ => RestoreOptions::default(),
        }
    }

    /// The scratch target, for the report: its databases' names, its server, its
    /// folder.
    pub fn describe(&self) -> String {
        match self {
            Scratch::Databases { conn, prefix } => format!("{}/{prefix}*", conn.describe()),
            Scratch::Redis { url, .. } => url.clone(),
            Scratch::Server { url } => crate::policy::secret::redact_url_password(url),
            Scratch::Folder { dir } => dir.path().display().to_string(),
        }
    }

    /// Compares what the restore put into the scratch target with what the
    /// snapshot recorded: row counts (and checksums) per table (at backup), keys per Redis
    /// database (counted in the RDB at backup), every file's size and chunk ids
    /// (its bytes re-hashed with the repository key).
    pub async fn check(
        &self,
        tree: &Tree,
        key: &RepoKey,
        fetcher: &mut RepoFetcher,
        restored: &Restored,
    ) -> Result<Checks, Failure> {
        match self {
            Scratch::Databases { conn, prefix } => check_rows(conn, prefix, tree, fetcher).await,
            Scratch::Redis { url, .. } | Scratch::Server { url } => {
                let expired = match restored {
                    Restored::Keys { expired, .. } => *expired,
                    _ => 0,
                };
                let endpoint = redis::client::Endpoint::parse(url, None, None, None)?;
                tokio::task::block_in_place(|| {
                    let mut checks = check_keys(&endpoint, tree, fetcher, expired)?;
                    // The values too, on a throwaway server that allows DEBUG, when no
                    // key expired on the way (the RDB loaded at start would hold
                    // those the replay skipped, or drop them later: not comparable).
                    if let (Scratch::Redis { dir, .. }, 0) = (self, expired)
                        && let Some(restored) = digest(url)?
                        && let Some(snapshot) = snapshot_digest(dir.path(), tree, fetcher)?
                    {
                        if restored == snapshot {
                            checks.digest = Some(restored);
                        } else {
                            checks
                                .differences
                                .push(Difference::Digest { restored, snapshot });
                        }
                    }
                    Ok(checks)
                })
            }
            Scratch::Folder { dir } => {
                tokio::task::block_in_place(|| check_files(dir.path(), tree, key))
            }
        }
    }

    /// Removes the scratch target: drops the databases the restore made (any with
    /// the prefix, so a restore that failed half way leaves none), stops the
    /// server, deletes the folder.
    pub async fn remove(self) -> Result<(), Failure> {
        match self {
            Scratch::Databases { conn, prefix } => {
                let client = conn.with_database("postgres").client().await?;
                let rows = client
                    .query(
                        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                        &[&prefix],
                    )
                    .await
                    .map_err(|e| {
                        scratch_failed(format!("cannot list the scratch databases: {e}"))
                    })?;
                for row in rows {
                    let name: String = row.get(0);
                    client
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                            name.replace('"', "\"\"")
                        ))
                        .await
                        .map_err(|e| {
                            scratch_failed(format!("cannot drop the scratch database {name}: {e}"))
                        })?;
                }
                Ok(())
            }
            Scratch::Redis { mut child, dir, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                dir.close()
                    .map_err(|e| scratch_failed(format!("cannot remove the scratch folder: {e}")))
            }
            Scratch::Server { url } => tokio::task::block_in_place(|| {
                redis::client::Endpoint::parse(&url, None, None, None)?
                    .connect()?
                    .ok(&[b"FLUSHALL"])
                    .map(drop)
            })
            .map_err(|f| scratch_failed(format!("cannot empty the drill target: {}", f.message))),
            Scratch::Folder { dir } => dir
                .close()
                .map_err(|e| scratch_failed(format!("cannot remove the scratch folder: {e}"))),
        }
    }
}

/// Starts `redis-server` (`$BACKPLAN_REDIS_SERVER`, else the one on `PATH`) on a
/// free port of the loopback with `dir` as its folder (a `dump.rdb` there is
/// loaded), persisting nothing, `DEBUG` allowed from the loopback where the server
/// knows that setting (Redis 7; an older one is started without it); waits until it
/// answers.
fn start_server(dir: &Path) -> Result<(Child, String), Failure> {
    let binary = std::env::var_os("BACKPLAN_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"));
    let mut debug = true;
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| scratch_failed(format!("no free port on 127.0.0.1: {e}")))?
            .port();
        let mut command = Command::new(&binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir);
        if debug {
            command.args(["--enable-debug-command", "local"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                scratch_failed(format!(
                    "cannot start {} for a scratch Redis: {e}",
                    binary.display()
                ))
                .with_help("install redis-server (Debian: `apt-get install redis-server`) or set BACKPLAN_REDIS_SERVER to its path")
            })?;
        let url = format!("redis://127.0.0.1:{port}");
        let endpoint = redis::client::Endpoint::parse(&url, None, None, None)?;
        let started = Instant::now();
        loop {
            if endpoint
                .connect()
                .and_then(|mut c| c.ok(&[b"PING"]))
                .is_ok()
            {
                return Ok((child, url));
            }
            if let Ok(Some(status)) = child.try_wait() {
                if debug {
                    break;
                }
                return Err(scratch_failed(format!(
                    "the scratch redis-server on port {port} exited ({status})"
                )));
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(scratch_failed(format!(
                    "the scratch redis-server on port {port} did not answer within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        debug = false;
    }
}

/// `DEBUG DIGEST` of a server: `None` where it refuses `DEBUG`.
fn digest(url: &str) -> Result<Option<String>, Failure> {
    let mut conn = redis::client::Endpoint::parse(url, None, None, None)?.connect()?;
    Ok(conn
        .cmd(&[b"DEBUG", b"DIGEST"])
        .ok()
        .and_then(|v| v.as_text())
        .filter(|d| d.len() == 40 && d.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// The digest of the snapshot's own RDB as a server loads it at start (a second
/// throwaway server, its folder under `dir`), to compare with the digest of the
/// keys the restore replayed: the same keys, values and expiries. `None` when that
/// server refuses `DEBUG` or cannot load the RDB (one written by a newer Redis).
fn snapshot_digest(
    dir: &Path,
    tree: &Tree,
    fetcher: &mut RepoFetcher,
) -> Result<Option<String>, Failure> {
    let rdb = dir.join("snapshot-rdb");
    redis::restore_file(&rdb, true, tree, fetcher)?;
    let Ok((mut child, url)) = start_server(&rdb) else {
        return Ok(None);
    };
    let found = digest(&url);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&rdb);
    found
}

fn scratch_failed(message: String) -> Failure {
    Failure::new(Code::DrillScratch, message)
}

/// Reads a small JSON entry of a snapshot.
fn read_json<T: serde::de::DeserializeOwned>(
    entry: &crate::repo::format::Entry,
    fetcher: &mut RepoFetcher,
) -> Result<T, Failure> {
    let corrupt = |e: &dyn std::fmt::Display| {
        Failure::new(Code::CorruptObject, format!("{}: {e}", entry.path))
    };
    let mut bytes = Vec::new();
    tokio::task::block_in_place(|| {
        crate::sources::EntryReader::new(entry, fetcher).read_to_end(&mut bytes)
    })
    .map_err(|e| corrupt(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| corrupt(&e))
}

/// Each database's tables restored under the prefix, their rows counted and
/// compared with the counts the backup recorded beside its archive; and, when the
/// snapshot recorded row checksums (of a method this build knows), their
/// checksums, read in the same pass.
async fn check_rows(
    conn: &pg::Connection,
    prefix: &str,
    tree: &Tree,
    fetcher: &mut RepoFetcher,
) -> Result<Checks, Failure> {
    let mut checks = Checks {
        unit: CheckUnit::Tables,
        ..Checks::default()
    };
    let checksums = match tree.entries.iter().find(|e| e.path == pg::CHECKSUMS) {
        Some(entry) => Some(read_json::<pg::Checksums>(entry, fetcher)?)
            .filter(|c| c.method == pg::CHECKSUM_METHOD),
        None => None,
    };
    for archive in pg::archives(tree) {
        let db = archive.database.as_str();
        let Some(entry) = tree
            .entries
            .iter()
            .find(|e| e.path == format!("{db}{}", pg::COUNTS_SUFFIX))
        else {
            continue;
        };
        let counts: BTreeMap<String, i64> = read_json(entry, fetcher)?;
        let sums = checksums.as_ref().and_then(|c| c.databases.get(db));
        let client = conn
            .with_database(&format!("{prefix}{db}"))
            .client()
            .await?;
        let found = pg::table_rows(&client, sums.is_some()).await.map_err(|e| {
            Failure::new(
                Code::DatabaseError,
                format!("PostgreSQL at {}: {e}", conn.describe()),
            )
        })?;
        let recorded = pg::TableRows {
            counts,
            checksums: sums.cloned().unwrap_or_default(),
        };
        compare_tables(db, &recorded, &found, &mut checks);
    }
    Ok(checks)
}

/// Compares one database's tables as restored (`found`) with what the backup
/// recorded: each table's row count, then its checksum where one was recorded and
/// the count matches. Counts into `checks`.
fn compare_tables(
    database: &str,
    recorded: &pg::TableRows,
    found: &pg::TableRows,
    checks: &mut Checks,
) {
    for (table, want) in &recorded.counts {
        checks.checked += 1;
        let got = found.counts.get(table).copied();
        if got != Some(*want) {
            checks.differences.push(Difference::Rows {
                database: database.to_string(),
                table: table.clone(),
                restored: got,
                recorded: *want,
            });
            continue;
        }
        let Some(sum) = recorded.checksums.get(table) else {
            continue;
        };
        *checks.checksums.get_or_insert(0) += 1;
        let restored = found.checksums.get(table).cloned().unwrap_or_default();
        if restored != *sum {
            checks.differences.push(Difference::Checksum {
                database: database.to_string(),
                table: table.clone(),
                restored,
                recorded: sum.clone(),
            });
        }
    }
}

/// The scratch server's keys per database against those the backup counted in the
/// RDB. Keys whose expiry passed between backup and drill are not restored: then
/// only the totals are compared, the expired ones counted in.
fn check_keys(
    endpoint: &redis::client::Endpoint,
    tree: &Tree,
    fetcher: &mut RepoFetcher,
    expired: u64,
) -> Result<Checks, Failure> {
    let meta = redis::read_meta(tree, fetcher)?;
    let found = redis::keyspace(&mut endpoint.connect()?)?;
    Ok(compare_keys(&found, &meta.keys, expired))
}

/// The keys per database the scratch server holds (`found`) against those counted at
/// backup (`recorded`); with keys that expired on the way, the totals only.
fn compare_keys(found: &BTreeMap<u32, u64>, recorded: &BTreeMap<u32, u64>, expired: u64) -> Checks {
    let dbs: std::collections::BTreeSet<u32> =
        found.keys().chain(recorded.keys()).copied().collect();
    let mut checks = Checks {
        checked: dbs.len() as u64,
        unit: CheckUnit::Databases,
        ..Checks::default()
    };
    if expired > 0 {
        let restored: u64 = found.values().sum();
        let recorded: u64 = recorded.values().sum();
        if restored + expired != recorded {
            checks.differences.push(Difference::Keys {
                db: None,
                restored,
                recorded,
            });
        }
        return checks;
    }
    for db in dbs {
        let restored = found.get(&db).copied().unwrap_or(0);
        let recorded = recorded.get(&db).copied().unwrap_or(0);
        if restored != recorded {
            checks.differences.push(Difference::Keys {
                db: Some(db),
                restored,
                recorded,
            });
        }
    }
    checks
}

/// Every regular file of the snapshot, read back from the scratch folder and cut
/// and hashed as a backup would: its length and chunk ids must be the entry's.
fn check_files(dir: &Path, tree: &Tree, key: &RepoKey) -> Result<Checks, Failure> {
    let mut checks = Checks {
        unit: CheckUnit::Files,
        ..Checks::default()
    };
    let mut chunk_ids = ChunkIds::new(key);
    for entry in tree.entries.iter().filter(|e| e.kind == EntryKind::File) {
        checks.checked += 1;
        let path = dir.join(std::ffi::OsStr::from_bytes(entry.path_bytes()));
        let differs = |restored_bytes| Difference::File {
            path: entry.path.clone(),
            restored_bytes,
            recorded_bytes: entry.size,
        };
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                checks.differences.push(differs(None));
                continue;
            }
        };
        let (ids, bytes) = chunk_ids
            .of(&mut file)
            .map_err(|e| Failure::new(Code::Io, format!("cannot read {}: {e}", path.display())))?;
        if bytes != entry.size || ids != entry.chunks {
            checks.differences.push(differs(Some(bytes)));
        }
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::Entry;

    /// A file entry for `bytes`, its chunks cut and named as a backup with `key`
    /// would.
    fn entry(key: &RepoKey, path: &str, bytes: &[u8]) -> Entry {
        let (chunks, size) = ChunkIds::new(key).of(&mut &bytes[..]).expect("in memory");
        Entry {
            path: path.into(),
            size,
            chunks,
            ..Entry::default()
        }
    }

    #[test]
    fn redis_keys_differ_per_database_or_in_total_when_keys_expired_on_the_way() {
        let keys = |dbs: &[(u32, u64)]| dbs.iter().copied().collect::<BTreeMap<u32, u64>>();
        let recorded = keys(&[(0, 100), (1, 5)]);
        // As recorded: nothing differs, both databases checked.
        let same = compare_keys(&keys(&[(0, 100), (1, 5)]), &recorded, 0);
        assert_eq!((same.checked, same.differences.len()), (2, 0));
        // A key short in database 0, database 1 missing, an extra database 3.
        let off = compare_keys(&keys(&[(0, 99), (3, 1)]), &recorded, 0);
        assert_eq!(off.checked, 3);
        assert_eq!(
            off.differences,
            [
                Difference::Keys {
                    db: Some(0),
                    restored: 99,
                    recorded: 100
                },
                Difference::Keys {
                    db: Some(1),
                    restored: 0,
                    recorded: 5
                },
                Difference::Keys {
                    db: Some(3),
                    restored: 1,
                    recorded: 0
                },
            ]
        );
        // Two keys expired between backup and drill: the totals with them counted in.
        let expired = compare_keys(&keys(&[(0, 98), (1, 5)]), &recorded, 2);
        assert!(expired.differences.is_empty());
        let short = compare_keys(&keys(&[(0, 97), (1, 5)]), &recorded, 2);
        assert_eq!(
            short.differences,
            [Difference::Keys {
                db: None,
                restored: 102,
                recorded: 105
            }]
        );
    }

    #[test]
    fn a_table_with_its_recorded_count_but_another_checksum_is_a_difference() {
        let rows = |tables: &[(&str, i64, &str)]| pg::TableRows {
            counts: tables.iter().map(|(t, n, _)| (t.to_string(), *n)).collect(),
            checksums: tables
                .iter()
                .filter(|(_, _, s)| !s.is_empty())
                .map(|(t, _, s)| (t.to_string(), s.to_string()))
                .collect(),
        };
        let recorded = rows(&[
            ("public.a", 3, "111"),
            ("public.b", 2, "222"),
            ("public.c", 5, "333"),
        ]);
        let same = rows(&[
            ("public.a", 3, "111"),
            ("public.b", 2, "222"),
            ("public.c", 5, "333"),
        ]);
        let mut checks = Checks::default();
        compare_tables("app", &recorded, &same, &mut checks);
        assert_eq!((checks.checked, checks.checksums), (3, Some(3)));
        assert!(checks.differences.is_empty(), "{checks:?}");

        // One value changed in `b` (same count), a row lost from `c`: the count
        // speaks for `c`, the checksum for `b`.
        let changed = rows(&[
            ("public.a", 3, "111"),
            ("public.b", 2, "223"),
            ("public.c", 4, "300"),
        ]);
        let mut checks = Checks::default();
        compare_tables("app", &recorded, &changed, &mut checks);
        assert_eq!((checks.checked, checks.checksums), (3, Some(2)));
        assert_eq!(
            checks.differences,
            [
                Difference::Checksum {
                    database: "app".into(),
                    table: "public.b".into(),
                    restored: "223".into(),
                    recorded: "222".into(),
                },
                Difference::Rows {
                    database: "app".into(),
                    table: "public.c".into(),
                    restored: Some(4),
                    recorded: 5,
                },
            ]
        );

        // Without recorded checksums, counts alone, as before.
        let mut checks = Checks::default();
        let counts_only = rows(&[("public.a", 3, ""), ("public.b", 2, "")]);
        compare_tables("app", &counts_only, &changed, &mut checks);
        assert_eq!((checks.checked, checks.checksums), (2, None));
        assert!(checks.differences.is_empty(), "{checks:?}");
    }

    #[test]
    fn a_restored_file_is_checked_by_its_bytes_against_the_entrys_chunks() {
        let key = RepoKey::generate().expect("random");
        // Over the smallest chunk, so that the content-defined cut points count too.
        let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let tree = Tree {
            entries: vec![
                entry(&key, "a.txt", b"alpha\n"),
                entry(&key, "big.bin", &big),
                entry(&key, "gone.txt", b"gone\n"),
                entry(&key, "same-size.txt", b"hello\n"),
            ],
            root: None,
        };
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::write(dir.path().join("a.txt"), b"alpha\n").expect("write");
        std::fs::write(dir.path().join("big.bin"), &big).expect("write");
        // One byte changed, the size kept.
        std::fs::write(dir.path().join("same-size.txt"), b"hellO\n").expect("write");

        let checks = check_files(dir.path(), &tree, &key).expect("checked");
        assert_eq!(checks.checked, 4);
        assert_eq!(
            checks.differences,
            [
                Difference::File {
                    path: "gone.txt".into(),
                    restored_bytes: None,
                    recorded_bytes: 5,
                },
                Difference::File {
                    path: "same-size.txt".into(),
                    restored_bytes: Some(6),
                    recorded_bytes: 6,
                },
            ]
        );

        // Another key names the same bytes differently: the check is the backup's.
        let other = RepoKey::generate().expect("random");
        let checks = check_files(dir.path(), &tree, &other).expect("checked");
        assert_eq!(checks.differences.len(), 4);
    }
}
