//! `backplan init`: without a policy, writes a starter policy to edit; with one,
//! makes the repository key (when its file does not exist yet) and creates the
//! repository in every destination, with the key's copy for the recipients.

use std::path::Path;

use super::{Exit, load_policy, print, runtime, write_file, write_new};
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::repo::{open_all, repository_key};

/// The starter policy `init` writes.
pub const STARTER: &str = include_str!("starter.yaml");

pub fn run(path: &Path) -> miette::Result<Exit> {
    if path.exists() {
        return init_repositories(path);
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

fn init_repositories(path: &Path) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    let recipients = super::recipients(policy)?;
    let mut out = String::new();
    let key = match repository_key(policy)? {
        Some(key) => key,
        None => {
            let encryption = policy.file.encryption.as_ref();
            let Some(file) = encryption.and_then(|e| e.repository_key_file.as_ref()) else {
                return Err(Failure::new(
                    Code::NoRepositoryKey,
                    "the policy names no repository key, or its ${env:…} is unset",
                )
                .into());
            };
            let file = policy.resolve_path(file);
            let key = RepoKey::generate().map_err(|e| Failure::new(Code::Io, e.0))?;
            write_new(&file, &format!("{}\n", key.to_hex()), 0o600)?;
            out.push_str(&format!(
                "Made repository key {} in {} (keep it like a database password; a copy encrypted to the recipients goes into every repository).\n",
                key.id(),
                file.display()
            ));
            key
        }
    };
    let rt = runtime()?;
    for repo in open_all(policy)? {
        let created = rt.block_on(repo.init(&key, &recipients, chrono::Utc::now()))?;
        out.push_str(&format!(
            "{}: {}\n",
            repo.name,
            if created {
                "repository created"
            } else {
                "repository exists; key copy checked"
            }
        ));
    }
    print(&out)?;
    Ok(Exit::Ok)
}
