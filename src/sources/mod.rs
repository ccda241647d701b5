//! The sources: what reads the data to back up and writes it back on restore. A
//! source hands its bytes to a [`ChunkSink`](crate::pipeline::ChunkSink) and reads
//! them back from a [`ChunkSource`]; chunking, compression, keys and the repository
//! layout are not its business.

pub mod files;
pub mod pgpass;
pub mod postgres;
pub mod redis;
mod scan_report;

pub use scan_report::{ScanReport, ScanSummary};

use std::io::Read;
use std::path::PathBuf;

use crate::error::{Code, Failure};
use crate::pipeline::ChunkSource;
use crate::policy::Policy;
use crate::policy::secret::Secret;
use crate::repo::format::Entry;

/// A password from a `${env:…}` reference or a file (its trailing newline dropped);
/// `what` names it in messages ("postgres password"), which never quote it.
pub fn password(
    secret: Option<&Secret>,
    file: Option<&PathBuf>,
    policy: &Policy,
    what: &str,
) -> Result<Option<String>, Failure> {
    if let Some(secret) = secret {
        return secret
            .resolve()
            .map(|r| Some(r.expose().to_string()))
            .map_err(|e| Failure::new(Code::SecretUnresolved, format!("{what}: {e}")));
    }
    if let Some(file) = file {
        let path = policy.resolve_path(file);
        return std::fs::read_to_string(&path)
            .map(|t| Some(t.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| {
                Failure::new(
                    Code::SecretUnresolved,
                    format!("{what}: cannot read {}: {e}", path.display()),
                )
            });
    }
    Ok(None)
}

/// An entry's bytes as a stream, chunk by chunk from a [`ChunkSource`] (each chunk
/// checked against its id there); a total that differs from the entry's size is an
/// error at the end.
pub struct EntryReader<'a> {
    entry: &'a Entry,
    source: &'a mut dyn ChunkSource,
    next: usize,
    chunk: Vec<u8>,
    at: usize,
    total: u64,
}

impl std::fmt::Debug for EntryReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryReader({}, {} bytes)", self.entry.path, self.total)
    }
}

impl<'a> EntryReader<'a> {
    pub fn new(entry: &'a Entry, source: &'a mut dyn ChunkSource) -> Self {
        EntryReader {
            entry,
            source,
            next: 0,
            chunk: Vec::new(),
            at: 0,
            total: 0,
        }
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            let Some(id) = self.entry.chunks.get(self.next) else {
                if self.total != self.entry.size {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}: {} bytes restored, the snapshot says {}",
                            self.entry.path, self.total, self.entry.size
                        ),
                    ));
                }
                return Ok(0);
            };
            self.chunk = self
                .source
                .fetch(id)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.next += 1;
            self.at = 0;
            self.total += self.chunk.len() as u64;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Asks every source's server what `plan` should know: sizes, databases no source
/// covers, whether the tools fit. A server that does not answer is a warning here;
/// its backup will fail on its own.
pub async fn probe_all(policy: &crate::policy::Policy) -> crate::plan::Probes {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::error::Code;
    use crate::plan::{Probes, SourceProbe, Warning};
    use crate::policy::SourceKind;

    let mut probes = Probes::default();
    // Per server: every database it has, and the ones some source covers.
    let mut servers: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (name, source) in &policy.sources {
        if let SourceKind::Redis(r) = &source.kind {
            let probe = tokio::task::block_in_place(|| redis::probe(r, policy));
            probes
                .sources
                .insert(name.clone(), redis_probe(name, source, r, probe));
            continue;
        }
        let SourceKind::Postgres(pg) = &source.kind else {
            continue;
        };
        let mut sp = SourceProbe::default();
        let warn = |sp: &mut SourceProbe, code: Code, message: String| {
            sp.warnings.push(Warning::about(code, Some(name), message));
        };
        match postgres::Connection::new(pg, policy) {
            Err(f) => warn(&mut sp, f.code, format!("{name}: {}", f.message)),
            Ok(conn) => match postgres::probe(&conn).await {
                Err(f) => warn(
                    &mut sp,
                    f.code,
                    format!(
                        "{name}: {}; its backup will fail unless the server answers",
                        f.message
                    ),
                ),
                Ok(probe) => {
                    let wanted: Vec<String> = if pg.databases.is_empty() {
                        vec![conn.database().unwrap_or("postgres").to_string()]
                    } else {
                        pg.databases.clone()
                    };
                    let mut total = 0;
                    for db in &wanted {
                        match probe.databases.get(db) {
                            Some(size) => total += size,
                            None => warn(
                                &mut sp,
                                Code::DatabaseError,
                                format!(
                                    "{name}: database {db} does not exist on {}",
                                    conn.describe()
                                ),
                            ),
                        }
                    }
                    sp.estimated_bytes = Some(total);
                    let bin_dir = pg.bin_dir.as_ref().map(|d| policy.resolve_path(d));
                    if let Err(f) = postgres::find_tools(bin_dir.as_deref(), probe.major()) {
                        warn(&mut sp, f.code, format!("{name}: {}", f.message));
                    }
                    if probe.in_recovery {
                        warn(
                            &mut sp,
                            Code::DatabaseError,
                            format!(
                                "{name}: {} is a standby; a long dump can be cancelled by max_standby_streaming_delay (raise it, or enable hot_standby_feedback)",
                                conn.describe()
                            ),
                        );
                    }
                    let server = servers.entry(conn.describe()).or_default();
                    server.0.extend(probe.databases.keys().cloned());
                    server.1.extend(wanted);
                }
            },
        }
        probes.sources.insert(name.clone(), sp);
    }
    for (server, (all, covered)) in servers {
        for db in all.difference(&covered) {
            if db != "postgres" {
                probes.warnings.push(Warning::about(
                    Code::UncoveredDatabase,
                    None,
                    format!("database {db:?} on {server} is covered by no source"),
                ));
            }
        }
    }
    probes
}

/// What `plan` shows of a Redis server: the mode, key counts, persistence drift and
/// health.
fn redis_probe(
    name: &str,
    source: &crate::policy::ResolvedSource,
    r: &crate::policy::model::RedisSource,
    probe: Result<redis::Probe, Failure>,
) -> crate::plan::SourceProbe {
    use crate::plan::{SourceProbe, Warning};
    use crate::policy::model::RedisMode;

    let mut sp = SourceProbe::default();
    let warn = |sp: &mut SourceProbe, code: Code, message: String| {
        sp.warnings.push(Warning::about(code, Some(name), message));
    };
    let probe = match probe {
        Ok(p) => p,
        Err(f) => {
            warn(
                &mut sp,
                f.code,
                format!(
                    "{name}: {}; its backup will fail unless the server answers",
                    f.message
                ),
            );
            return sp;
        }
    };
    let keys: u64 = probe.keys.values().sum();
    let counted = format!(
        "{keys} keys in {} database{}",
        probe.keys.len(),
        crate::plan::plural(probe.keys.len())
    );
    sp.mode = Some(match (&probe.scan_because, r.mode) {
        (None, _) => format!("sync, point in time ({counted})"),
        (Some(_), RedisMode::Scan) => format!("scan, not point in time ({counted})"),
        (Some(why), RedisMode::Auto) => {
            warn(
                &mut sp,
                Code::NotPointInTime,
                format!(
                    "{name}: {why}; the backup falls back to SCAN + DUMP, which is not point in time"
                ),
            );
            format!("scan, not point in time ({counted})")
        }
        (Some(why), RedisMode::Sync) => {
            warn(
                &mut sp,
                Code::SourceFailed,
                format!("{name}: {why}; with `mode: sync` its backup will fail"),
            );
            format!("sync, refused ({counted})")
        }
    });
    let declared = source.kind.declared_settings();
    if !declared.is_empty() {
        match probe.persistence {
            Ok(current) => {
                sp.settings = current
                    .into_iter()
                    .filter(|(k, _)| declared.contains_key(k))
                    .collect();
            }
            Err(why) => warn(
                &mut sp,
                Code::ConfigRefused,
                format!("{name}: cannot read its persistence settings ({why}); drift is unknown"),
            ),
        }
    }
    for problem in probe.unhealthy {
        warn(
            &mut sp,
            Code::PersistenceUnhealthy,
            format!(
                "{name}: Redis {} reports that {problem}",
                probe.redis_version
            ),
        );
    }
    sp
}
