//! `backplan plan`.

use std::path::Path;

use super::{Exit, inventory, load_policy, print, write_file};
use crate::cli::{Format, PlanArgs};
use crate::render;

pub fn run(path: &Path, args: &PlanArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let planning = args.planning.resolve()?;
    let inventory = inventory(&loaded.policy, planning.inventory.as_deref())?;
    let probes = super::runtime()?.block_on(crate::sources::probe_all(&loaded.policy));
    let plan = crate::plan::plan_with(
        &loaded.policy,
        &loaded.policy.graph,
        &inventory,
        &probes,
        planning.now,
        planning.settings,
    );
    if let Some(out) = &args.out {
        write_file(out, &render::json(&plan))?;
    }
    print(&match args.format {
        Format::Human => render::plan::human(&plan),
        Format::Json => render::json(&plan),
        Format::Markdown => render::plan::markdown(&plan),
    })?;
    if let Some(out) = &args.out
        && args.format == Format::Human
    {
        print(&format!(
            "\nSaved the plan to {}; `backplan apply {}` carries out exactly this plan.\n",
            out.display(),
            out.display()
        ))?;
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
