//! The repository inside one destination, over an `opendal::Operator` only: its
//! format ([`format`], [`object`]), reading and writing it ([`store`]), its index in
//! memory ([`index`]), its locks ([`lock`]), moving packed chunks ([`mover`]) and
//! collecting garbage ([`gc`]); the
//! keys it is written with are [`crate::crypto`]'s. `docs/repository-format.md` is
//! the contract.

pub mod direct;
pub mod format;
pub mod gc;
pub mod index;
pub mod lock;
pub mod mover;
pub mod object;
pub mod s3lock;
pub mod store;
pub mod tree;

use std::collections::BTreeMap;

use std::time::Duration;

use opendal::layers::{RetryEvent, RetryInterceptor, RetryLayer, TimeoutLayer};
use opendal::{Operator, services};

use crate::crypto::keys;
use crate::error::{Code, Failure};
use crate::inventory::{DestinationState, Inventory};
use crate::policy::{Destination, Policy};

/// How many times a failed storage request is tried again (after the first try),
/// when its error is one the storage says is temporary (S3's 500, 503 `SlowDown`,
/// a timeout, a dropped connection).
pub const RETRY_TIMES: usize = 6;
/// The first wait before a retry; each further wait doubles, up to [`RETRY_MAX_DELAY`],
/// plus a random jitter of up to this much, so that parallel requests spread out:
/// about 20 s of waiting in all before an action fails.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(250);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(10);
/// How long a metadata request (stat, delete, rename) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one step of reading or writing an object (a whole pack in one PUT, a
/// read, a listing page) may take: a 20 MiB pack at 70 KB/s, so that a slow uplink
/// still backs up, while a request that hangs is given up and tried again.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Says on standard error that a storage request is tried again, and why; never the
/// request's URL, nor anything else the error's context carries.
#[derive(Debug)]
struct SayRetry {
    destination: String,
}

impl RetryInterceptor for SayRetry {
    fn intercept(&self, event: RetryEvent<'_>) {
        let mut why = format!("{}: {}", event.err.kind(), event.err.message());
        // The causes, innermost last ("error sending request: … Connection refused").
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(event.err);
        while let Some(s) = source {
            causes.push(scrub_urls(&s.to_string()));
            source = s.source();
        }
        if !causes.is_empty() {
            why.push_str(&format!(" ({})", causes.join(": ")));
        }
        crate::error::notice(&format!(
            "destination {}: {} failed, trying again in {:.1} s (retry {} of {RETRY_TIMES}): {why}",
            self.destination,
            event.op.into_static(),
            event.retry_after.as_secs_f64(),
            event.attempt,
        ));
    }
}

/// `text` with every URL's user information and query removed: an error's source
/// may name the URL it failed on, and those can carry credentials.
fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
            .unwrap_or(rest.len());
        let url = &rest[..end];
        let authority_end = url.find('/').unwrap_or(url.len());
        let url = match url[..authority_end].rfind('@') {
            Some(userinfo) => &url[userinfo + 1..],
            None => url,
        };
        out.push_str(url.split(['?', '#']).next().unwrap_or(""));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `op` with timeouts and retries of temporary failures, as every destination's
/// operator has them. The timeout sits under the retry, so a request that hangs is
/// given up and tried again. A retried conditional write (`if_not_exists`) whose first
/// try went through answers "exists" the second time: the lock code checks whether
/// the object is its own ([`lock::acquire`]), and content-addressed objects are equal.
pub fn resilient(name: &str, op: Operator) -> Operator {
    op.layer(
        TimeoutLayer::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_io_timeout(IO_TIMEOUT),
    )
    .layer(
        RetryLayer::new()
            .with_max_times(RETRY_TIMES)
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .with_notify(SayRetry {
                destination: name.to_string(),
            }),
    )
}

/// Builds the OpenDAL operator for a destination, resolving secret references, with
/// retries and timeouts ([`resilient`]).
pub fn operator(name: &str, dest: &Destination, policy: &Policy) -> Result<Operator, Failure> {
    bare_operator(name, dest, policy).map(|op| resilient(name, op))
}

/// A destination's secret, resolved, or `SecretUnresolved` naming the destination.
fn resolve_secret(name: &str, s: &crate::policy::Secret) -> Result<String, Failure> {
    s.resolve()
        .map(|r| r.expose().to_string())
        .map_err(|e| Failure::new(Code::SecretUnresolved, format!("destination {name}: {e}")))
}

fn bare_operator(name: &str, dest: &Destination, policy: &Policy) -> Result<Operator, Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(
            Code::DestinationUnreadable,
            format!("destination {name}: {e}"),
        )
    };
    let resolve = |s: &crate::policy::Secret| resolve_secret(name, s);
    match dest {
        Destination::Fs { root, .. } => {
            let root = policy.resolve_path(root);
            let root = std::path::absolute(&root).unwrap_or(root);
            Operator::new(services::Fs::default().root(&root.to_string_lossy()))
                .map_err(|e| fail(&e))
        }
        Destination::Memory { root, .. } => {
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
            object_lock,
            ..
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
            // S3 refuses a PUT into a bucket with a default Object Lock retention
            // unless it carries Content-MD5 (or an SDK checksum header). backplan
            // writes every object with one PUT (OpenDAL refuses MD5 only for
            // multipart uploads, which backplan does not make).
            if object_lock.is_some() {
                b = b.checksum_algorithm("md5");
            }
            Operator::new(b).map_err(|e| fail(&e))
        }
        Destination::Opendal {
            scheme, options, ..
        } => {
            let service = crate::policy::services::service(scheme);
            let mut resolved = BTreeMap::new();
            for (k, v) in options {
                // `password_file: /path` hands the service `password`, read from the file.
                match service.and_then(|s| s.secret_of_file_option(k)) {
                    Some(secret) => {
                        let path = policy.resolve_path(std::path::Path::new(&resolve(v)?));
                        resolved.insert(secret.to_string(), read_secret_file(name, k, &path)?);
                    }
                    // A key or credentials file: relative to the policy, as every path
                    // in it (`~/…` is left to the service: ssh expands it).
                    None if service.is_some_and(|s| s.paths.contains(&k.as_str()))
                        && !v.template().starts_with('~') =>
                    {
                        let path = policy.resolve_path(std::path::Path::new(&resolve(v)?));
                        let path = std::path::absolute(&path).unwrap_or(path);
                        resolved.insert(k.clone(), path.to_string_lossy().into_owned());
                    }
                    None => {
                        resolved.insert(k.clone(), resolve(v)?);
                    }
                }
            }
            if scheme == "sftp" && !on_path("ssh") {
                return Err(Failure::new(
                    Code::SshMissing,
                    format!(
                        "destination {name}: the sftp service runs OpenSSH's `ssh` client, which is not on PATH"
                    ),
                ));
            }
            opendal::init_default_registry();
            Operator::via_iter(scheme, resolved).map_err(|e| fail(&e))
        }
    }
}

/// A secret from the file an `<option>_file` option names: its first line, without
/// the line end. The message names the file, never what it holds.
fn read_secret_file(name: &str, key: &str, path: &std::path::Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Code::SecretUnresolved,
            format!(
                "destination {name}: cannot read options.{key} ({}): {e}",
                path.display()
            ),
        )
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Whether an executable named `program` is in one of PATH's folders.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether a destination certainly holds nothing, known without opening it. OpenDAL's
/// fs service creates a missing root when it is opened, and reading must not write.
fn certainly_empty(dest: &Destination, policy: &Policy) -> bool {
    match dest {
        Destination::Fs { root, .. } => !policy.resolve_path(root).exists(),
        _ => false,
    }
}

/// Reads every destination of the policy, concurrently.
pub async fn read_inventory(policy: &Policy, key: Option<&keys::RepoKey>) -> Inventory {
    let sources: Vec<String> = policy.file.sources.keys().cloned().collect();
    let sources = sources.as_slice();
    let reads = policy
        .file
        .destinations
        .iter()
        .map(|(name, dest)| async move {
            let state = if certainly_empty(dest, policy) {
                DestinationState::default()
            } else {
                match operator(name, dest, policy) {
                    Ok(op) => {
                        store::Repo::new(name.clone(), op)
                            .read_state(key, Some(sources))
                            .await
                    }
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
    secret: Option<&crate::crypto::SecretKeys>,
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

/// The signed requests on an S3 destination's bucket that OpenDAL does not make
/// (reading and extending object retention, reading the bucket's default), for a
/// destination with `object_lock:`.
fn object_lock_api(name: &str, dest: &Destination) -> Result<s3lock::ObjectLockApi, Failure> {
    let Destination::S3 {
        bucket,
        region,
        endpoint,
        root,
        access_key_id,
        secret_access_key,
        ..
    } = dest
    else {
        return Err(Failure::new(
            Code::DestinationUnreadable,
            format!("destination {name}: object_lock is for S3 destinations"),
        ));
    };
    let resolve = |s: &crate::policy::Secret| resolve_secret(name, s);
    let keys = match (access_key_id, secret_access_key) {
        (Some(id), Some(key)) => Some((resolve(id)?, resolve(key)?)),
        _ => None,
    };
    s3lock::ObjectLockApi::new(
        name,
        s3lock::S3Target {
            bucket,
            region: region.as_deref(),
            endpoint: endpoint.as_deref(),
            root: root.as_deref(),
            keys,
        },
    )
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
/// object under its final name, and its packs past the page cache (`direct`).
pub fn open(name: &str, dest: &Destination, policy: &Policy) -> Result<store::Repo, Failure> {
    let lock_period = dest
        .object_lock()
        .and_then(|l| crate::policy::parse_duration(&l.retain_for).ok());
    let mut repo =
        store::Repo::new(name, operator(name, dest, policy)?).with_lock_period(lock_period);
    if dest.object_lock().is_some() {
        repo = repo.with_object_lock_api(object_lock_api(name, dest)?);
    }
    let Destination::Fs { root, .. } = dest else {
        return Ok(repo);
    };
    let root = policy.resolve_path(root);
    let root = std::path::absolute(&root).unwrap_or(root);
    let data = Operator::new(
        services::Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&root.join(".tmp").to_string_lossy()),
    )
    .map(|op| resilient(name, op))
    .map_err(|e| {
        Failure::new(
            Code::DestinationUnreadable,
            format!("destination {name}: {e}"),
        )
    })?;
    let direct = direct::DirectDir::new(root.clone(), root.join(".tmp"));
    Ok(repo.with_data_operator(data, direct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_queries_in_retry_messages() {
        assert_eq!(
            scrub_urls(
                "error sending request for url (https://AKIA:s3cr3t@s3.example.com/b/k?X-Amz-Signature=abc): timed out"
            ),
            "error sending request for url (https://s3.example.com/b/k): timed out"
        );
        assert_eq!(
            scrub_urls("connect to http://127.0.0.1:9000/x failed"),
            "connect to http://127.0.0.1:9000/x failed"
        );
        assert_eq!(scrub_urls("no url here"), "no url here");
        assert_eq!(
            scrub_urls("a 'webdav://u:p@h/p' and https://h2/q?token=1"),
            "a 'webdav://h/p' and https://h2/q"
        );
    }
}
