//! `backplan schema`: the policy's JSON Schema, generated from the policy types.

use super::{Exit, print, write_file};
use crate::cli::SchemaArgs;

/// The JSON Schema of a policy, as committed in `schemas/policy.schema.json`.
pub fn policy_schema() -> String {
    crate::render::json(&schemars::schema_for!(crate::policy::PolicyFile))
}

pub fn run(args: &SchemaArgs) -> miette::Result<Exit> {
    let schema = policy_schema();
    match &args.out {
        Some(path) => write_file(path, &schema)?,
        None => print(&schema)?,
    }
    Ok(Exit::Ok)
}
