//! `backplan graph`.

use std::path::Path;

use super::{Exit, load_policy, print};
use crate::cli::{GraphArgs, GraphFormat};

pub fn run(path: &Path, args: &GraphArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let graph = &loaded.policy.graph;
    let text = match args.format {
        GraphFormat::Text => crate::render::graph::text(graph),
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Json => crate::render::json(&graph.levels()),
    };
    print(&text)?;
    Ok(Exit::Ok)
}
