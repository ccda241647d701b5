//! `backplan snapshots`.

use std::path::Path;

use super::{Exit, inventory, load_policy, print};
use crate::cli::{Format, SnapshotsArgs};
use crate::render;

pub fn run(path: &Path, args: &SnapshotsArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let inventory = inventory(&loaded.policy, None)?;
    print(&match args.format {
        Format::Json => render::json(&inventory),
        Format::Human | Format::Markdown => render::snapshots::table(&inventory),
    })?;
    Ok(Exit::Ok)
}
