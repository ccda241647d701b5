//! `backplan drill [--only NAME…] [--secret-key FILE]`: each source's newest good
//! snapshot restored into a scratch target, checked and recorded
//! ([`crate::drill`]), then rendered.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Exit, inventory, load_policy, print, runtime, secret_keys_from};
use crate::cli::{DrillArgs, Format};
use crate::drill::{Drill, drill, secret_key_file};
use crate::error::{Code, Failure};
use crate::render;
use crate::repo::{open_all, repository_key};

pub fn run(path: &Path, args: &DrillArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    // `--secret-key` (or its variable), else the policy's `drill.secret_key_file`.
    let file = args
        .secret
        .secret_key
        .clone()
        .or_else(|| secret_key_file(policy));
    let Some(secret) = secret_keys_from(file.as_deref())? else {
        return Err(Failure::new(
            Code::DrillNeedsSecretKey,
            "a drill restores and checks the data, which needs a recipient's secret key",
        )
        .into());
    };
    let inventory = inventory(policy, None)?;
    let host = repository_key(policy)?;
    let repos = open_all(policy)?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect::<BTreeMap<_, _>>();
    let report = runtime()?.block_on(drill(
        &Drill {
            policy,
            inventory: &inventory,
            repos: &repos,
            host: host.as_ref(),
            secret,
        },
        &args.only,
    ))?;
    print(&match args.format {
        Format::Json => render::drill::json(&report),
        Format::Human | Format::Markdown => render::drill::human(&report),
    })?;
    let failed = report.failed() + report.missing.len();
    if failed > 0 {
        eprintln!(
            "{:?}",
            miette::Report::new(Failure::new(
                Code::DrillFailed,
                format!(
                    "{failed} of {} drills failed",
                    report.drills.len() + report.missing.len()
                ),
            ))
        );
        return Ok(Exit::Partial);
    }
    Ok(if report.findings() > 0 {
        Exit::Warning
    } else {
        Exit::Ok
    })
}
