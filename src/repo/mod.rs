//! The repository inside one destination, over an `opendal::Operator` only.
//!
//! This first step opens destinations and reads what `plan` needs. A destination with
//! no repository yet reads as empty; the repository format itself (packs, index,
//! manifests) is written down in `docs/repository-format.md` as it lands.

use std::collections::BTreeMap;

use opendal::{Operator, services};

use crate::error::{Code, Failure};
use crate::inventory::{DestinationState, Inventory};
use crate::policy::{Destination, Policy};

/// The object that marks a repository and carries its format version.
pub const MARKER: &str = "backplan.json";

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

/// Reads what one destination holds. Errors are recorded in the state, not raised:
/// an unreachable destination must not stop the plan for the others.
pub async fn read_state(op: &Operator) -> DestinationState {
    match op.exists(MARKER).await {
        Ok(false) => DestinationState::default(),
        Ok(true) => DestinationState {
            error: Some(
                "it holds a repository in a format this build of backplan cannot read".into(),
            ),
            ..DestinationState::default()
        },
        Err(e) => DestinationState {
            error: Some(e.to_string()),
            ..DestinationState::default()
        },
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
pub async fn read_inventory(policy: &Policy) -> Inventory {
    let reads = policy
        .file
        .destinations
        .iter()
        .map(|(name, dest)| async move {
            let state = if certainly_empty(dest, policy) {
                DestinationState::default()
            } else {
                match operator(name, dest, policy) {
                    Ok(op) => read_state(&op).await,
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
