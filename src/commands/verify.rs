//! `backplan verify [--read-data[=FRACTION]] [--restore-test]`: each destination
//! checked under its shared lock ([`crate::verify`]), the database sources' newest
//! snapshots read as their servers would read them, and the findings rendered.

use std::path::Path;
use std::sync::Arc;

use super::{Exit, load_policy, print, runtime, secret_keys};
use crate::cli::{Format, VerifyArgs};
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::inventory::SnapshotStatus;
use crate::pipeline::ChunkSource;
use crate::repo::lock;
use crate::repo::store::Repo;
use crate::repo::{open_all, repository_key};
use crate::verify::{Findings, check, check_keys, record};

pub fn run(path: &Path, args: &VerifyArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    let host = repository_key(policy)?;
    let secret = secret_keys(&args.secret)?;
    if (args.read_data.is_some() || args.restore_test) && secret.is_none() {
        return Err(Failure::new(
            Code::SecretKeyUnusable,
            "--read-data and --restore-test decrypt what they read, which needs a recipient's secret key",
        )
        .into());
    }
    let fraction = args.read_data.map(|f| f.clamp(0.0, 1.0));
    // The key copies' recipients are checked against the policy's, when it names any.
    let recipients = if policy.recipients.is_empty() {
        None
    } else {
        Some(super::recipients(policy)?)
    };
    let rt = runtime()?;
    let mut all = Vec::new();
    let mut refused = Vec::new();
    let now = chrono::Utc::now();
    for repo in open_all(policy)? {
        // A destination without a repository has nothing to verify, and gets no lock.
        let holds_one = matches!(rt.block_on(repo.marker()), Ok(Some(_)));
        let locked = holds_one && !args.no_lock;
        let work = async {
            let mut findings = check(&repo, host.as_ref(), secret.clone(), fraction, now).await;
            if holds_one {
                check_keys(
                    &repo,
                    recipients.as_ref(),
                    host.as_ref(),
                    secret.as_deref(),
                    &mut findings,
                )
                .await;
            }
            if (args.restore_test || args.read_data.is_some())
                && let Some(secret) = &secret
            {
                database_checks(
                    policy,
                    &repo,
                    host.as_ref(),
                    secret.clone(),
                    args.restore_test,
                    &mut findings,
                )
                .await;
            }
            // Only under the lock: without one, verify writes nothing.
            if locked && let Err(e) = record(&repo, &mut findings, now).await {
                findings
                    .problems
                    .entry(String::new())
                    .or_default()
                    .push(format!(
                        "what was found could not be recorded for a repair: {}",
                        e.message
                    ));
            }
            findings
        };
        let findings = if !locked {
            rt.block_on(work)
        } else {
            match rt.block_on(lock::reading(&repo, work)) {
                Ok(findings) => findings,
                Err(f) => {
                    all.push(Findings::not_verified(&repo.name, &f.message));
                    refused.push(f);
                    continue;
                }
            }
        };
        all.push(findings);
    }
    let bad: usize = all
        .iter()
        .map(|f| f.problems.values().map(Vec::len).sum::<usize>())
        .sum();
    print(&match args.format {
        Format::Json => crate::render::json(&all),
        Format::Human | Format::Markdown => crate::render::verify::human(&all),
    })?;
    if bad > 0 {
        let mut message = format!("{bad} problem(s) found");
        if !refused.is_empty() {
            message.push_str(&format!("; {} destination(s) not verified", refused.len()));
        }
        return Err(Failure::new(Code::VerifyFailed, message).into());
    }
    if let Some(f) = refused.into_iter().next() {
        return Err(f.into());
    }
    Ok(Exit::Ok)
}

/// The newest good snapshot of each database source, read as its server would read
/// it: a postgres archive listed by `pg_restore --list` (and with `--restore-test`
/// restored into a scratch database and compared by row counts), a Redis RDB parsed
/// whole, its checksum checked and its keys counted against those recorded.
async fn database_checks(
    policy: &crate::policy::Policy,
    repo: &Repo,
    host: Option<&RepoKey>,
    secret: Arc<crate::crypto::SecretKeys>,
    restore: bool,
    f: &mut Findings,
) {
    use crate::policy::SourceKind;
    use crate::sources::postgres;

    let Ok(headers) = repo.snapshot_headers().await else {
        return;
    };
    for (name, source) in &policy.sources {
        let pg = match &source.kind {
            SourceKind::Postgres(pg) => pg,
            SourceKind::Redis(_) => {
                redis_check(repo, &headers, name, host, secret.clone(), f).await;
                continue;
            }
            _ => continue,
        };
        let newest = headers
            .iter()
            .filter_map(|(_, h)| h.as_ref().ok())
            .filter(|h| h.snapshot.source == *name && h.snapshot.status == SnapshotStatus::Complete)
            .max_by_key(|h| h.snapshot.time);
        let Some(header) = newest else { continue };
        let id = header.snapshot.id.clone();
        let result: Result<Vec<String>, Failure> = async {
            let (tree, mut fetcher) =
                super::restore::open_snapshot(repo, &id, host, secret.clone()).await?;
            let conn = postgres::Connection::new(pg, policy)?;
            let tools = postgres::find_tools(
                pg.bin_dir
                    .as_ref()
                    .map(|d| policy.resolve_path(d))
                    .as_deref(),
                0,
            )?;
            // A directory-format archive is read from a spool: under the source's
            // `spool_dir`, which has room for its dumps, else the temporary folder.
            let spool = pg
                .spool_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, |d| policy.resolve_path(d));
            let mut diffs = Vec::new();
            for archive in postgres::archives(&tree) {
                let db = archive.database.as_str();
                tokio::task::block_in_place(|| {
                    postgres::list_archive(&tools, &archive, &spool, &mut fetcher)
                })?;
                if !restore {
                    continue;
                }
                let counts_entry = tree
                    .entries
                    .iter()
                    .find(|e| e.path == format!("{db}{}", postgres::COUNTS_SUFFIX));
                let recorded: std::collections::BTreeMap<String, i64> = match counts_entry {
                    Some(e) => {
                        let mut bytes = Vec::new();
                        for c in &e.chunks {
                            bytes.extend(tokio::task::block_in_place(|| fetcher.fetch(c))?);
                        }
                        serde_json::from_slice(&bytes).unwrap_or_default()
                    }
                    None => Default::default(),
                };
                // A custom-format archive streams in; a directory-format one is
                // restored from a spool, with the source's own parallelism.
                let feed = match archive.needs_spool() {
                    true => postgres::Feed::choose(&archive, pg.jobs, Some(&spool)),
                    false => postgres::Feed::Stream,
                };
                for d in
                    postgres::restore_test(&conn, &tools, &archive, &feed, &recorded, &mut fetcher)
                        .await?
                {
                    diffs.push(format!("{db}: {d}"));
                }
            }
            Ok(diffs)
        }
        .await;
        match result {
            Ok(diffs) => {
                for d in diffs {
                    f.problems.entry(id.clone()).or_default().push(d);
                }
                f.restore_tests.push(if restore {
                    format!("{name} ({id}): archive listed, restored into a scratch database and counted")
                } else {
                    format!("{name} ({id}): archive listed by pg_restore")
                });
            }
            Err(e) => f
                .problems
                .entry(id.clone())
                .or_default()
                .push(format!("database check: {}", e.message)),
        }
    }
}

/// The newest good snapshot of a redis source: its RDB parsed whole (structure and
/// checksum) and its keys per database compared with those recorded at backup.
async fn redis_check(
    repo: &Repo,
    headers: &[(String, Result<crate::repo::format::SnapshotHeader, Failure>)],
    name: &str,
    host: Option<&RepoKey>,
    secret: Arc<crate::crypto::SecretKeys>,
    f: &mut Findings,
) {
    use crate::sources::redis;

    let newest = headers
        .iter()
        .filter_map(|(_, h)| h.as_ref().ok())
        .filter(|h| h.snapshot.source == name && h.snapshot.status == SnapshotStatus::Complete)
        .max_by_key(|h| h.snapshot.time);
    let Some(header) = newest else { return };
    let id = header.snapshot.id.clone();
    let result: Result<(u64, Vec<String>), Failure> = async {
        let (tree, mut fetcher) = super::restore::open_snapshot(repo, &id, host, secret).await?;
        tokio::task::block_in_place(|| {
            let meta = redis::read_meta(&tree, &mut fetcher)?;
            let found = redis::check_rdb(&tree, &mut fetcher)?;
            let mut diffs = Vec::new();
            let dbs: std::collections::BTreeSet<u64> = found
                .keys()
                .copied()
                .chain(meta.keys.keys().map(|d| u64::from(*d)))
                .collect();
            for db in dbs {
                let got = found.get(&db).copied().unwrap_or(0);
                let want = u32::try_from(db)
                    .ok()
                    .and_then(|d| meta.keys.get(&d))
                    .copied()
                    .unwrap_or(0);
                if got != want {
                    diffs.push(format!(
                        "db {db}: the RDB holds {got} keys, {want} were recorded at backup"
                    ));
                }
            }
            Ok((found.values().sum(), diffs))
        })
    }
    .await;
    match result {
        Ok((keys, diffs)) => {
            for d in diffs {
                f.problems.entry(id.clone()).or_default().push(d);
            }
            f.restore_tests.push(format!(
                "{name} ({id}): RDB read whole, checksum right, {keys} keys"
            ));
        }
        Err(e) => f
            .problems
            .entry(id.clone())
            .or_default()
            .push(format!("RDB check: {}", e.message)),
    }
}
