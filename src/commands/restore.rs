//! `backplan restore [--plan]`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Exit, inventory, load_policy, print, runtime, secret_keys};
use crate::cli::{Format, RestoreArgs, parse_time};
use crate::crypto::Recipients;
use crate::error::{Code, Failure};
use crate::render;
use crate::repo::lock;
use crate::repo::repository_key;
use crate::repo::store::Repo;
use crate::restore::execute::{self, Restore};
use crate::restore::{RestoreOptions, Selection, preview, restore_plan};

fn selection(args: &RestoreArgs) -> Result<Selection, Failure> {
    let mut targets = BTreeMap::new();
    for t in &args.target {
        let (name, place) = t.split_once('=').ok_or_else(|| {
            Failure::new(
                Code::InvalidValue,
                format!("--target {t}: write NAME=PATH or NAME=postgres://…"),
            )
        })?;
        targets.insert(name.to_string(), place.to_string());
    }
    let at = args.at.as_deref().map(parse_time).transpose()?;
    let now = chrono::Utc::now();
    if let (Some(at), Some(text)) = (at, &args.at)
        && at > now
    {
        return Err(Failure::new(
            Code::TimeInFuture,
            format!(
                "--at {text} is in the future (it is {} now): no snapshot is from then",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    Ok(Selection {
        at,
        snapshot: args.snapshot.clone(),
        only: args.only.clone(),
        targets,
        include: args.include.clone(),
        as_file: args.as_file.as_ref().map(|d| d.display().to_string()),
    })
}

/// How the restore writes, from the command line.
fn options(args: &RestoreArgs) -> RestoreOptions {
    RestoreOptions {
        force: args.force,
        flush: args.flush,
        clean: args.clean,
        tables: args.table.clone(),
        schemas: args.schema.clone(),
        jobs: args.jobs,
        spool: args.spool.clone(),
        numeric_owner: args.numeric_owner,
        as_file: args.as_file.clone(),
        database_prefix: None,
        database_server: None,
    }
}

pub fn run(path: &Path, args: &RestoreArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    // The command line is checked before any destination is read.
    let selection = selection(args)?;
    let options = options(args);
    let inventory = inventory(policy, None)?;
    let graph = &policy.graph;
    let fingerprints = Recipients::load(&policy.recipients)
        .map(|r| r.fingerprints())
        .unwrap_or_default();
    let mut plan = restore_plan(policy, graph, &inventory, &selection, fingerprints)?;
    let host_key = repository_key(policy)?;
    let secret = secret_keys(&args.secret)?;
    // Only the destinations the restore reads from: opening a local folder that does
    // not exist would create it.
    let mut repos: BTreeMap<String, Repo> = BTreeMap::new();
    for name in plan.steps.iter().flat_map(|s| &s.from) {
        if let (false, Some(dest)) = (repos.contains_key(name), policy.file.destinations.get(name))
        {
            repos.insert(name.clone(), crate::repo::open(name, dest, policy)?);
        }
    }
    let rt = runtime()?;
    let restore = Restore {
        policy,
        selection: &selection,
        options: &options,
        host: host_key.as_ref(),
        inventory: &inventory,
        repos: &repos,
    };

    if args.plan {
        // A preview only: it takes no lock and writes nothing.
        rt.block_on(preview::preview(&restore, &mut plan, secret.clone()));
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
    let held = if args.no_lock {
        Vec::new()
    } else {
        let locks = rt.block_on(execute::lock(&mut plan, &repos))?;
        for f in locks.refused.into_values() {
            eprintln!("{:?}", miette::Report::new(f));
        }
        locks.held
    };
    let report = rt.block_on(execute::execute(&restore, &mut plan, secret));
    rt.block_on(lock::release_all(held));
    let report = report?;
    eprint!("{}", render::restore::warnings(&report));
    print(&render::restore::report(&report))?;
    match report.failure() {
        Some(f) => Err(f.into()),
        None => Ok(Exit::Ok),
    }
}
