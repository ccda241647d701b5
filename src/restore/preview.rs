//! What restoring each step would do to its target, filled into the plan by each
//! kind's seam: which files would change, what a database or server holds. A preview
//! takes no lock and writes nothing.

use std::sync::Arc;

use super::RestorePlan;
use super::execute::{Restore, SnapshotData};
use crate::crypto::SecretKeys;
use crate::error::Failure;
use crate::repo::key_for;
use crate::restore::Preview;
use crate::sources::kind::{OpenSnapshot, PropertiesRead};

/// Fills each step's preview. Its data (a Redis snapshot's keys, a database's
/// encoding and locale) is read only with a secret key. Returns the database
/// properties it read on the way, for the restore that follows.
pub async fn preview(
    r: &Restore<'_>,
    plan: &mut RestorePlan,
    secret: Option<Arc<SecretKeys>>,
) -> PropertiesRead {
    let mut read = PropertiesRead::new();
    let cx = r.context();
    for step in &mut plan.steps {
        let Some(repo) = step.from.first().and_then(|d| r.repos.get(d)) else {
            continue;
        };
        let result: Result<Preview, Failure> = async {
            let kind = r.kind(step)?;
            let (header, _) = repo.snapshot_objects(&step.snapshot.id).await?;
            let key = key_for(repo, &header.key_id, r.host, secret.as_deref()).await?;
            let (_, tree) = repo.read_snapshot_packed(&key, &step.snapshot.id).await?;
            let data = secret.clone().map(|secret| SnapshotData {
                repo,
                id: &step.snapshot.id,
                host: r.host,
                secret,
            });
            let data = data.as_ref().map(|d| d as &dyn OpenSnapshot);
            kind.preview(&cx, &step.target, &tree, data, &mut read)
                .await
        }
        .await;
        step.preview = Some(result.unwrap_or_else(|f| Preview {
            unknown: Some(f.message),
            ..Preview::default()
        }));
    }
    read
}
