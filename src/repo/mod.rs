//! The repository inside one destination, over an `opendal::Operator` only: its
//! format ([`format`], [`object`]), its keys ([`keys`]), reading and writing it
//! ([`store`]) and its locks ([`lock`]). `docs/repository-format.md` is the contract.

pub mod format;
pub mod keys;
pub mod lock;
pub mod object;
pub mod store;

use std::collections::BTreeMap;

use opendal::{Operator, services};

use crate::error::{Code, Failure};
use crate::inventory::{DestinationState, Inventory};
use crate::policy::{Destination, Policy};

/// Builds the OpenDAL operator for a destination, resolving secret references.
pub fn operator(name: &str, dest: &Destination, policy: &Policy) -> Result<Operator, Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(
            Code::DestinationUnreadable,
            format!("destination {name}: {e}"),
        )
    };
    let resolve = |s: &crate::policy::Secret| {
        s.resolve()
            .map(|r| r.expose().to_string())
            .map_err(|e| Failure::new(Code::SecretUnresolved, format!("destination {name}: {e}")))
    };
    match dest {
        Destination::Fs { root } => {
            let root = policy.resolve_path(root);
            let root = std::path::absolute(&root).unwrap_or(root);
            Operator::new(services::Fs::default().root(&root.to_string_lossy()))
                .map_err(|e| fail(&e))
        }
        Destination::Memory { root } => {
            Operator::new(services::Memory::default().root(root.as_deref().unwrap_or("/")))
                .map_err(|e| fail(&e))
        }
        Destination::S3 {
            bucket,
            region,
            endpoint,
            root,
            access_key_id,
            secret_access_key,
        } => {
            let mut b = services::S3::default().bucket(bucket);
            if let Some(region) = region {
                b = b.region(region);
            }
            if let Some(endpoint) = endpoint {
                b = b.endpoint(endpoint);
            }
            if let Some(root) = root {
                b = b.root(root);
            }
            if let Some(id) = access_key_id {
                b = b.access_key_id(&resolve(id)?);
            }
            if let Some(key) = secret_access_key {
                b = b.secret_access_key(&resolve(key)?);
            }
            Operator::new(b).map_err(|e| fail(&e))
        }
        Destination::Opendal { scheme, options } => {
            let mut resolved = BTreeMap::new();
            for (k, v) in options {
                resolved.insert(k.clone(), resolve(v)?);
            }
            Operator::via_iter(scheme, resolved).map_err(|e| fail(&e))
        }
    }
}

/// Whether a destination certainly holds nothing, known without opening it. OpenDAL's
/// fs service creates a missing root when it is opened, and reading must not write.
fn certainly_empty(dest: &Destination, policy: &Policy) -> bool {
    match dest {
        Destination::Fs { root } => !policy.resolve_path(root).exists(),
        _ => false,
    }
}

/// Reads every destination of the policy, concurrently.
pub async fn read_inventory(policy: &Policy, key: Option<&keys::RepoKey>) -> Inventory {
    let reads = policy
        .file
        .destinations
        .iter()
        .map(|(name, dest)| async move {
            let state = if certainly_empty(dest, policy) {
                DestinationState::default()
            } else {
                match operator(name, dest, policy) {
                    Ok(op) => store::Repo::new(name.clone(), op).read_state(key).await,
                    Err(f) => DestinationState {
                        error: Some(f.message),
                        ..DestinationState::default()
                    },
                }
            };

            (name.clone(), state)
        });
    Inventory {
        destinations: futures::future::join_all(reads).await.into_iter().collect(),
    }
}

/// The repository key the policy points at: `Ok(None)` when the policy names none or
/// its file does not exist yet (`backplan init` makes it).
pub fn repository_key(policy: &Policy) -> Result<Option<keys::RepoKey>, Failure> {
    let Some(encryption) = &policy.file.encryption else {
        return Ok(None);
    };
    let text = if let Some(file) = &encryption.repository_key_file {
        let path = policy.resolve_path(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Failure::new(
                    Code::NoRepositoryKey,
                    format!("cannot read repository key file {}: {e}", path.display()),
                ));
            }
        }
    } else if let Some(secret) = &encryption.repository_key {
        match secret.resolve() {
            Ok(r) => r.expose().to_string(),
            Err(_) => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    keys::RepoKey::from_hex(&text).map(Some).map_err(|e| {
        Failure::new(
            Code::NoRepositoryKey,
            format!("the repository key is not valid: {e}"),
        )
    })
}

/// The repository key that opens objects written under `key_id`: the host's own, or
/// recovered from the repository's copy with a recipient's secret key.
pub async fn key_for(
    repo: &store::Repo,
    key_id: &str,
    host: Option<&keys::RepoKey>,
    secret: Option<&crate::pipeline::crypto::SecretKeys>,
) -> Result<keys::RepoKey, Failure> {
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
    keys::RepoKey::unwrap(&copy, secret).map_err(|e| {
        Failure::new(
            Code::SecretKeyUnusable,
            format!(
                "the secret key does not open repository key {key_id} on {}: {e}",
                repo.name
            ),
        )
    })
}

/// Opens every destination of the policy as a repository handle, for writing.
pub fn open_all(policy: &Policy) -> Result<Vec<store::Repo>, Failure> {
    policy
        .file
        .destinations
        .iter()
        .map(|(name, dest)| open(name, dest, policy))
        .collect()
}

/// Opens one destination for writing. A local folder writes its objects through a
/// temporary file in `.tmp/` and a rename, so that a crash never leaves a truncated
/// object under its final name.
pub fn open(name: &str, dest: &Destination, policy: &Policy) -> Result<store::Repo, Failure> {
    let repo = store::Repo::new(name, operator(name, dest, policy)?);
    let Destination::Fs { root } = dest else {
        return Ok(repo);
    };
    let root = policy.resolve_path(root);
    let root = std::path::absolute(&root).unwrap_or(root);
    let data = Operator::new(
        services::Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&root.join(".tmp").to_string_lossy()),
    )
    .map_err(|e| {
        Failure::new(
            Code::DestinationUnreadable,
            format!("destination {name}: {e}"),
        )
    })?;
    Ok(repo.with_data_operator(data))
}
