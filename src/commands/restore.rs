//! `backplan restore [--plan]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Exit, inventory, load_policy, print, runtime, secret_keys};
use crate::cli::{Format, RestoreArgs, parse_time};
use crate::error::{Code, Failure};
use crate::graph::SourceGraph;
use crate::pipeline::crypto::{Recipients, SecretKeys};
use crate::pipeline::fetch::RepoFetcher;
use crate::policy::SourceKind;
use crate::render;
use crate::repo::keys::RepoKey;
use crate::repo::store::Repo;
use crate::repo::{open_all, repository_key};
use crate::restore::{Preview, RestorePlan, Selection, restore_plan};
use crate::sources::files;

/// The repository key that opens objects written under `key_id`: the host's own, or
/// recovered from the repository's copy with a recipient's secret key.
pub(crate) async fn key_for(
    repo: &Repo,
    key_id: &str,
    host: Option<&RepoKey>,
    secret: Option<&SecretKeys>,
) -> Result<RepoKey, Failure> {
    if let Some(k) = host.filter(|k| k.id() == key_id) {
        return Ok(k.clone());
    }
    let Some(secret) = secret else {
        return Err(Failure::new(
            Code::SecretKeyUnusable,
            format!(
                "opening data written under repository key {key_id} needs a recipient's secret key"
            ),
        ));
    };
    let copy = repo.key_copy(key_id).await?;
    RepoKey::unwrap(&copy, secret).map_err(|e| {
        Failure::new(
            Code::SecretKeyUnusable,
            format!(
                "the secret key does not open repository key {key_id} on {}: {e}",
                repo.name
            ),
        )
    })
}

fn selection(args: &RestoreArgs) -> Result<Selection, Failure> {
    let mut targets = BTreeMap::new();
    for t in &args.target {
        let (name, path) = t.split_once('=').ok_or_else(|| {
            Failure::new(Code::InvalidValue, format!("--target {t}: write NAME=PATH"))
        })?;
        targets.insert(name.to_string(), PathBuf::from(path));
    }
    Ok(Selection {
        at: args.at.as_deref().map(parse_time).transpose()?,
        snapshot: args.snapshot.clone(),
        only: args.only.clone(),
        targets,
        include: args.include.clone(),
    })
}

pub fn run(path: &Path, args: &RestoreArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    let inventory = inventory(policy, None)?;
    let graph = SourceGraph::new(policy);
    let fingerprints = Recipients::load(&policy.recipients)
        .map(|r| r.fingerprints())
        .unwrap_or_default();
    let mut plan = restore_plan(policy, &graph, &inventory, &selection(args)?, fingerprints)?;
    let host_key = repository_key(policy)?;
    let secret = secret_keys(&args.secret)?;
    let repos: BTreeMap<String, Repo> = open_all(policy)?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let rt = runtime()?;

    rt.block_on(preview(
        &mut plan,
        &repos,
        host_key.as_ref(),
        secret.as_deref(),
    ));
    if args.plan {
        print(&match args.format {
            Format::Json => render::json(&plan),
            Format::Human | Format::Markdown => render::restore::human(&plan),
        })?;
        return Ok(Exit::Ok);
    }
    let Some(secret) = secret else {
        return Err(Failure::new(
            Code::SecretKeyUnusable,
            "restoring needs a recipient's secret key",
        )
        .into());
    };
    for step in &plan.steps {
        if let Some(p) = &step.preview
            && !p.overwrite.is_empty()
            && !args.force
        {
            return Err(Failure::new(
                Code::RestoreRefused,
                format!(
                    "restoring {} would overwrite {} changed file{}: {}",
                    step.source,
                    p.overwrite.len(),
                    if p.overwrite.len() == 1 { "" } else { "s" },
                    p.overwrite
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        }
    }
    let mut out = String::new();
    for step in &plan.steps {
        if !matches!(
            policy.sources.get(&step.source).map(|s| &s.kind),
            Some(SourceKind::Files(_)) | Some(SourceKind::Config(_)) | None
        ) {
            return Err(Failure::new(
                Code::NoExecutor,
                format!(
                    "restoring {} sources is not part of this build yet",
                    step.source_type
                ),
            )
            .into());
        }
        let mut last_error = None;
        for dest in &step.from {
            let Some(repo) = repos.get(dest) else {
                continue;
            };
            let result = rt.block_on(restore_step(
                repo,
                &step.snapshot.id,
                host_key.as_ref(),
                secret.clone(),
                &step.target,
                &plan.include,
                args.force,
            ));
            match result {
                Ok(report) => {
                    out.push_str(&format!(
                        "  ✓ {} → {}   {} entries, {} from {dest}\n",
                        step.source,
                        step.target.display(),
                        report.0,
                        render::bytes(report.1)
                    ));
                    last_error = None;
                    break;
                }
                // A refusal is about the target, not the copy: another copy would
                // be refused just the same.
                Err(f) if f.code == Code::RestoreRefused => return Err(f.into()),
                Err(f) => last_error = Some(f),
            }
        }
        if let Some(f) = last_error {
            return Err(f.into());
        }
    }
    out.push_str(&format!("\nRestore: {} step(s) done.\n", plan.steps.len()));
    print(&out)?;
    Ok(Exit::Ok)
}

/// Restores one snapshot from one repository. Returns (entries, bytes fetched).
async fn restore_step(
    repo: &Repo,
    snapshot: &str,
    host: Option<&RepoKey>,
    secret: Arc<SecretKeys>,
    target: &Path,
    include: &[String],
    force: bool,
) -> Result<(usize, u64), Failure> {
    let (header, _) = repo.snapshot_objects(snapshot).await?;
    let key = key_for(repo, &header.key_id, host, Some(&secret)).await?;
    let (_, tree) = repo.read_snapshot(&key, snapshot).await?;
    let index = Arc::new(repo.load_index(&key).await?);
    let mut fetcher = RepoFetcher::new(
        repo.clone(),
        index,
        &key,
        secret,
        tokio::runtime::Handle::current(),
    );
    let target = target.to_path_buf();
    let include = include.to_vec();
    tokio::task::spawn_blocking(move || {
        let report = files::restore(&tree, &target, &include, force, &mut fetcher);
        report.map(|_| (tree.entries.len(), fetcher.bytes_fetched))
    })
    .await
    .map_err(|e| Failure::new(Code::Io, format!("the restore stopped: {e}")))?
    .map_err(|e| Failure::new(e.code, e.message))
}

/// Fills each step's preview: what restoring it would do to its target.
async fn preview(
    plan: &mut RestorePlan,
    repos: &BTreeMap<String, Repo>,
    host: Option<&RepoKey>,
    secret: Option<&SecretKeys>,
) {
    for step in &mut plan.steps {
        let Some(repo) = step.from.first().and_then(|d| repos.get(d)) else {
            continue;
        };
        let result: Result<Preview, Failure> = async {
            let (header, _) = repo.snapshot_objects(&step.snapshot.id).await?;
            let key = key_for(repo, &header.key_id, host, secret).await?;
            let (_, tree) = repo.read_snapshot(&key, &step.snapshot.id).await?;
            let p = files::plan_restore(&tree, &step.target, &plan.include)
                .map_err(|e| Failure::new(e.code, e.message))?;
            Ok(Preview {
                entries: p.create.len() + p.overwrite.len() + p.identical.len(),
                bytes: p.bytes_to_write,
                create: p.create.len(),
                unchanged: p.identical.len(),
                overwrite: p.overwrite,
                unknown: None,
            })
        }
        .await;
        step.preview = Some(result.unwrap_or_else(|f| Preview {
            unknown: Some(f.message),
            ..Preview::default()
        }));
    }
}
