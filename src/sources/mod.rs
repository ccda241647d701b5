//! The sources: what reads the data to back up and writes it back on restore. A
//! source hands its bytes to a [`ChunkSink`](crate::pipeline::ChunkSink) and reads
//! them back from a [`ChunkSource`]; chunking, compression, keys and the repository
//! layout are not its business.

pub mod files;
pub mod kind;
pub mod pgpass;
pub mod postgres;
pub mod redis;
mod scan_report;

pub use scan_report::ScanReport;

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

    use crate::plan::{Probes, Warning};

    let mut probes = Probes::default();
    // Per server: every database it has, and the ones some source covers.
    let mut servers: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (name, source) in &policy.sources {
        let Some(probed) = kind::Kind::of(source).probe(policy).await else {
            continue;
        };
        if let Some(s) = probed.server {
            let server = servers.entry(s.server).or_default();
            server.0.extend(s.all);
            server.1.extend(s.covered);
        }
        probes.sources.insert(name.clone(), probed.probe);
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
