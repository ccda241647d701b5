//! The redis kind: an RDB over the replication protocol (or SCAN + DUMP) on backup,
//! `RESTORE … ABSTTL` or a `dump.rdb` on restore, the RDB parsed whole on check,
//! mode, keys and persistence on probe, `CONFIG SET` for the declared settings.

use std::sync::Arc;

use super::{
    Backed, BackupJob, Checked, CurrentSize, DumpFile, KeyDifference, Note, OpenSnapshot, Preview,
    Probed, PropertiesRead, RestoreContext, Restored, Seam, Stored, stopped,
};
use crate::error::{Code, Failure};
use crate::pipeline::fetch::RepoFetcher;
use crate::plan::{BackupMethod, BackupMode, SourceProbe, Warning};
use crate::policy::model::{RedisMode, RedisSource};
use crate::policy::{Policy, ResolvedSource};
use crate::repo::tree::PackedTree;
use crate::sources::redis;

#[derive(Debug, Clone, Copy)]
pub struct Redis<'a> {
    pub(super) source: &'a ResolvedSource,
    pub(super) r: &'a RedisSource,
}

impl Redis<'_> {
    /// Where a restore goes: `--target NAME=redis://…` (with its own credentials
    /// only), or the source's own server.
    fn target(&self, cx: &RestoreContext<'_>) -> Result<redis::client::Endpoint, Failure> {
        match cx.targets.get(&self.source.name) {
            Some(url) => redis::target_endpoint(url, self.r, cx.policy),
            None => redis::endpoint(self.r, cx.policy),
        }
    }

    /// What `plan` shows of the server: the mode, key counts, persistence drift and
    /// health.
    fn probed(&self, probe: Result<redis::Probe, Failure>) -> SourceProbe {
        let name = &self.source.name;
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
        let mode = |method, refused| BackupMode {
            method,
            refused,
            keys: probe.keys.values().sum(),
            databases: probe.keys.len(),
        };
        sp.mode = Some(match (&probe.scan_because, self.r.mode) {
            (None, _) => mode(BackupMethod::Sync, false),
            (Some(_), RedisMode::Scan) => mode(BackupMethod::Scan, false),
            (Some(why), RedisMode::Auto) => {
                warn(
                    &mut sp,
                    Code::NotPointInTime,
                    format!(
                        "{name}: {why}; the backup falls back to SCAN + DUMP, which is not point in time"
                    ),
                );
                mode(BackupMethod::Scan, false)
            }
            (Some(why), RedisMode::Sync) => {
                warn(
                    &mut sp,
                    Code::SourceFailed,
                    format!("{name}: {why}; with `mode: sync` its backup will fail"),
                );
                mode(BackupMethod::Sync, true)
            }
        });
        let declared = self.source.kind.declared_settings();
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
                    format!(
                        "{name}: cannot read its persistence settings ({why}); drift is unknown"
                    ),
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
}

impl Seam for Redis<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    fn home(&self, _policy: &Policy) -> String {
        self.r.url.to_string()
    }

    fn as_file(&self, dir: &str) -> Option<String> {
        Some(format!("{}/{}", dir.trim_end_matches('/'), redis::DUMP))
    }

    async fn prepare_backup(&self, policy: &Arc<Policy>) -> Result<BackupJob, Failure> {
        let (r, policy) = (self.r.clone(), policy.clone());
        Ok(Box::new(move |parent, sink| {
            let (scan, meta) = redis::backup(&r, &policy, parent, sink)?;
            let stored = Stored::Keys {
                keys: meta.total_keys(),
                databases: meta.keys.len(),
                mode: meta.mode,
            };
            Ok(Backed::new(scan, stored))
        }))
    }

    async fn configure(
        &self,
        policy: &Arc<Policy>,
        settings: Vec<(String, String)>,
    ) -> Result<(), Failure> {
        let (r, policy) = (self.r.clone(), policy.clone());
        tokio::task::spawn_blocking(move || redis::configure(&r, &policy, &settings))
            .await
            .map_err(|e| {
                Failure::new(
                    Code::SourceFailed,
                    format!("the settings task stopped: {e}"),
                )
            })?
    }

    async fn probe(&self, policy: &Policy) -> Option<Probed> {
        let probe = tokio::task::block_in_place(|| redis::probe(self.r, policy));
        Some(Probed {
            probe: self.probed(probe),
            server: None,
        })
    }

    /// What the snapshot holds, and what the target holds now.
    async fn preview(
        &self,
        cx: &RestoreContext<'_>,
        _target: &str,
        tree: &PackedTree,
        data: Option<&dyn OpenSnapshot>,
        _read: &mut PropertiesRead,
    ) -> Result<Preview, Failure> {
        let tree = tree.unpack()?;
        let mut notes = Vec::new();
        if let Some(data) = data {
            let (tree, mut fetcher) = data.open().await?;
            notes.push(
                match tokio::task::block_in_place(|| redis::read_meta(&tree, &mut fetcher)) {
                    Ok(meta) => Note::RedisSnapshot {
                        keys: meta.total_keys(),
                        databases: meta.keys.len(),
                        redis_version: meta.redis_version,
                        mode: meta.mode,
                    },
                    Err(f) => Note::Unknown { why: f.message },
                },
            );
        }
        if let Some(dir) = &cx.options.as_file {
            let path = dir.join(redis::DUMP);
            let state = match (path.exists(), cx.options.force) {
                (false, _) => DumpFile::New,
                (true, true) => DumpFile::Overwritten,
                (true, false) => DumpFile::NeedsForce,
            };
            notes.push(Note::DumpFile { path, state });
        } else {
            let state = self
                .target(cx)
                .and_then(|e| tokio::task::block_in_place(|| redis::target_keys(&e)));
            notes.push(match state {
                Ok(keys) => Note::TargetKeys {
                    keys,
                    flush: cx.options.flush,
                },
                Err(f) => Note::Unknown { why: f.message },
            });
        }
        Ok(Preview {
            entries: tree.entries.len(),
            bytes: tree.entries.iter().map(|e| e.size).sum(),
            notes,
            ..Preview::default()
        })
    }

    /// A server that holds keys is refused without `--flush`; a `dump.rdb` is
    /// checked as it is written.
    fn check_target(&self, cx: &RestoreContext<'_>) -> Result<(), Failure> {
        if cx.options.as_file.is_some() {
            return Ok(());
        }
        redis::check_target(&self.target(cx)?, cx.options.flush).map(drop)
    }

    async fn restore(
        &self,
        cx: &RestoreContext<'_>,
        _target: &str,
        tree: PackedTree,
        mut fetcher: RepoFetcher,
        _read: &PropertiesRead,
    ) -> Result<Restored, Failure> {
        let tree = tree.unpack()?;
        let (force, flush) = (cx.options.force, cx.options.flush);
        match cx.options.as_file.clone() {
            Some(dir) => tokio::task::spawn_blocking(move || {
                let (path, bytes) = redis::restore_file(&dir, force, &tree, &mut fetcher)?;
                Ok(Restored::DumpFile { path, bytes })
            })
            .await
            .map_err(stopped("the restore"))?,
            None => {
                let endpoint = self.target(cx)?;
                tokio::task::spawn_blocking(move || {
                    let done = redis::restore(&endpoint, flush, &tree, &mut fetcher)?;
                    Ok(Restored::Keys {
                        keys: done.keys,
                        split: done.split,
                        expired: done.expired,
                        functions: done.functions,
                    })
                })
                .await
                .map_err(stopped("the restore"))?
            }
        }
    }

    /// The RDB parsed whole (structure and checksum) and its keys per database
    /// compared with those recorded at backup.
    async fn check(
        &self,
        _policy: &Policy,
        snapshot: &dyn OpenSnapshot,
        _restore: bool,
    ) -> Result<Option<Checked>, Failure> {
        let (tree, mut fetcher) = snapshot.open().await?;
        tokio::task::block_in_place(|| {
            let meta = redis::read_meta(&tree, &mut fetcher)?;
            let found = redis::check_rdb(&tree, &mut fetcher)?;
            let dbs: std::collections::BTreeSet<u64> = found
                .keys()
                .copied()
                .chain(meta.keys.keys().map(|d| u64::from(*d)))
                .collect();
            let mut differences = Vec::new();
            for db in dbs {
                let got = found.get(&db).copied().unwrap_or(0);
                let want = u32::try_from(db)
                    .ok()
                    .and_then(|d| meta.keys.get(&d))
                    .copied()
                    .unwrap_or(0);
                if got != want {
                    differences.push(KeyDifference {
                        db,
                        found: got,
                        recorded: want,
                    });
                }
            }
            Ok(Some(Checked::Rdb {
                keys: found.values().sum(),
                differences,
            }))
        })
    }

    /// The server `drill.targets` declares for the source, else a throwaway
    /// `redis-server` of this host.
    fn scratch(&self, policy: &Policy) -> Result<super::scratch::Scratch, Failure> {
        match super::scratch::declared(policy, &self.source.name)? {
            Some(url) => Ok(super::scratch::Scratch::Server { url }),
            None => super::scratch::Scratch::redis(&self.source.name),
        }
    }

    /// The keys the server holds now. Keys rather than `used_memory`: the drill
    /// measures its throughput in the snapshot's RDB bytes, and memory is another
    /// measure (allocator overhead, a baseline of about a megabyte on an empty
    /// server, encodings that an RDB stores otherwise), which would overstate a
    /// small server many times; the snapshot does not record the server's memory
    /// either. The snapshot does record its keys, and the live server counts them
    /// exactly, so the drill scales the RDB it restored by the keys' growth, and the
    /// restore replays key by key (`RESTORE` pipelines), so its time follows the
    /// keys. What this misses: values that grow while the keys do not.
    async fn current_size(&self, policy: &Policy) -> Result<CurrentSize, Failure> {
        tokio::task::block_in_place(|| {
            let mut conn = redis::endpoint(self.r, policy)?.connect()?;
            let keys = redis::keyspace(&mut conn)?.values().sum();
            Ok(CurrentSize::Keys { keys })
        })
    }
}
