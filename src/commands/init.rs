//! `backplan init`: a starter policy to edit.

use std::path::Path;

use super::{Exit, print, write_file};
use crate::error::{Code, Failure};

/// The starter policy `init` writes.
pub const STARTER: &str = include_str!("starter.yaml");

pub fn run(path: &Path) -> miette::Result<Exit> {
    if path.exists() {
        return Err(Failure::new(
            Code::Io,
            format!("{} exists already; init never overwrites", path.display()),
        )
        .with_help("edit the policy, or give another path with -p")
        .into());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Failure::new(Code::Io, format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    write_file(path, STARTER)?;

    // The starter's modeline points editors at this schema, beside the policy.
    let schema = path.with_file_name("backplan.schema.json");
    if !schema.exists() {
        write_file(&schema, &super::schema::policy_schema())?;
    }
    print(&format!(
        "Wrote {path} and its JSON Schema. Next:\n  1. put an OpenPGP public key at keys/recipient.asc beside it\n     (gpg --export --armor you@example.com > keys/recipient.asc)\n  2. edit the sources and destinations\n  3. backplan validate -p {path} && backplan plan -p {path}\n",
        path = path.display()
    ))?;
    Ok(Exit::Ok)
}
