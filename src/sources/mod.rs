//! The sources: what reads the data to back up and writes it back on restore. A
//! source hands its bytes to a [`ChunkSink`] and reads them back from a
//! [`ChunkSource`]; chunking, compression, keys and the repository layout are not its
//! business.

pub mod files;
pub mod postgres;

use std::io::Read;

use crate::repo::keys::ChunkId;

/// Where a source's bytes go: chunked, deduplicated, compressed, encrypted, packed.
pub trait ChunkSink {
    /// Stores everything `reader` yields; returns the chunk ids in order and the
    /// number of bytes read.
    fn store(&mut self, reader: &mut dyn Read) -> std::io::Result<Stored>;
}

/// What [`ChunkSink::store`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub chunks: Vec<ChunkId>,
    pub bytes: u64,
}

/// Where a restore reads chunks from: decrypted, decompressed and checked against
/// their id.
pub trait ChunkSource {
    fn fetch(&mut self, id: &ChunkId) -> Result<Vec<u8>, String>;
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
