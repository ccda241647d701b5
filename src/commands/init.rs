//! `backplan init`: without a policy, writes a starter policy to edit; with one,
//! makes the repository key (when its file does not exist yet) and creates the
//! repository in every destination, with the key's copy for the recipients. With
//! `--secret-key`, a missing key file is recovered from the destinations instead: the
//! key of their newest snapshot, opened from its copy (a rebuilt backup host goes on
//! deduplicating against what it wrote before).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Exit, load_policy, print, runtime, secret_keys, write_file, write_new};
use crate::cli::SecretKeyArgs;
use crate::crypto::SecretKeys;
use crate::crypto::keys::RepoKey;
use crate::error::{Code, Failure};
use crate::policy::Policy;
use crate::repo::{key_for, open_all, repository_key};

/// The starter policy `init` writes.
pub const STARTER: &str = include_str!("starter.yaml");

pub fn run(path: &Path, secret: &SecretKeyArgs) -> miette::Result<Exit> {
    if path.exists() {
        return init_repositories(path, secret);
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

fn init_repositories(path: &Path, secret: &SecretKeyArgs) -> miette::Result<Exit> {
    let loaded = load_policy(path)?;
    let policy = &loaded.policy;
    let recipients = super::recipients(policy)?;
    let rt = runtime()?;
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
            let (key, said) = match secret_keys(secret)? {
                Some(secret) => {
                    let (key, from) = rt.block_on(recover(policy, &secret))?;
                    let said = format!(
                        "Recovered repository key {} from {from} into {}",
                        key.id(),
                        file.display()
                    );
                    (key, said)
                }
                None => {
                    let key = RepoKey::generate().map_err(|e| Failure::new(Code::Io, e.0))?;
                    let said = format!("Made repository key {} in {}", key.id(), file.display());
                    (key, said)
                }
            };
            write_new(&file, &format!("{}\n", key.to_hex()), 0o600)?;
            out.push_str(&format!(
                "{said} (keep it like a database password; a copy encrypted to the recipients goes into every repository).\n"
            ));
            key
        }
    };
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

/// The repository key of the newest snapshot any destination holds, opened from that
/// destination's copy with a recipient's secret key; also names the destination.
async fn recover(policy: &Policy, secret: &SecretKeys) -> Result<(RepoKey, String), Failure> {
    let repos = open_all(policy)?;
    let mut newest: Option<(DateTime<Utc>, String, usize)> = None;
    let mut unread = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        let headers = match repo.snapshot_headers().await {
            Ok(headers) => headers,
            Err(f) => {
                unread.push(format!("{}: {}", repo.name, f.message));
                continue;
            }
        };
        for header in headers.into_iter().filter_map(|(_, h)| h.ok()) {
            if newest
                .as_ref()
                .is_none_or(|(time, ..)| header.snapshot.time > *time)
            {
                newest = Some((header.snapshot.time, header.key_id, i));
            }
        }
    }
    let Some((_, key_id, i)) = newest else {
        let mut message =
            "no destination holds a snapshot whose repository key could be recovered".to_string();
        if !unread.is_empty() {
            message.push_str(&format!(" (unreadable: {})", unread.join("; ")));
        }
        return Err(Failure::new(Code::NoRepositoryKey, message)
            .with_help("without --secret-key, `backplan init` makes a new repository key"));
    };
    let key = key_for(&repos[i], &key_id, None, Some(secret)).await?;
    Ok((key, repos[i].name.clone()))
}
