//! Repository locks: backups, copies, repairs, restores and verifies share, prune is
//! exclusive. A lock names its host, pid, start and expiry; a lock that expired (its
//! holder crashed) is reported by `plan` and removed by `backplan unlock`, never
//! silently.

use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use super::store::Repo;
use crate::error::{Code, Failure};
pub use crate::inventory::{LockInfo, LockKind};

/// How long a lock lasts unless refreshed; a running holder refreshes it.
pub const TTL_MINUTES: i64 = 30;
/// How often a holder refreshes its lock.
pub const REFRESH_SECONDS: u64 = 300;

const EXCLUSIVE: &str = "locks/exclusive";

/// A lock this process holds; refreshed in the background until released.
#[derive(Debug)]
pub struct Held {
    repo: Repo,
    path: String,
    mine: LockInfo,
    refresher: tokio::task::JoinHandle<()>,
}

fn info(kind: LockKind, now: DateTime<Utc>) -> LockInfo {
    LockInfo {
        kind,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        started: now,
        expires: now + Duration::minutes(TTL_MINUTES),
    }
}

fn describe(l: &LockInfo, now: DateTime<Utc>) -> String {
    let state = if l.expires < now { "expired" } else { "held" };
    format!(
        "{} lock {state} by {} pid {} since {}",
        match l.kind {
            LockKind::Shared => "a shared",
            LockKind::Exclusive => "an exclusive",
        },
        l.host,
        l.pid,
        l.started.format("%Y-%m-%d %H:%M UTC")
    )
}

fn locked(repo: &Repo, l: &LockInfo, now: DateTime<Utc>) -> Failure {
    let failure = Failure::new(
        Code::RepositoryLocked,
        format!("destination {} is locked: {}", repo.name, describe(l, now)),
    );
    if l.expires < now {
        failure.with_help("its holder is gone; check, then remove it with `backplan unlock`")
    } else {
        failure.with_help("wait for it to finish, then run again")
    }
}

/// Takes a lock of `kind`, or explains who holds the one in the way.
pub async fn acquire(repo: &Repo, kind: LockKind) -> Result<Held, Failure> {
    let now = Utc::now();
    let mine = info(kind, now);
    let path = match kind {
        LockKind::Exclusive => EXCLUSIVE.to_string(),
        LockKind::Shared => {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| Failure::new(Code::Io, e.to_string()))?;
            format!(
                "locks/shared-{}",
                r.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    };
    if !repo.put_lock(&path, &mine).await? {
        // Only the exclusive lock has a fixed name.
        let others = repo.locks().await?;
        if let Some((_, Ok(l))) = others.iter().find(|(p, _)| p == EXCLUSIVE) {
            return Err(locked(repo, l, now));
        }
        return Err(Failure::new(
            Code::RepositoryLocked,
            format!("destination {} is locked", repo.name),
        ));
    }
    // Both sides write first and look second: of two racing writers at least one
    // sees the other, and neither proceeds past a conflicting lock.
    for (other, lock) in repo.locks().await? {
        if other == path {
            continue;
        }
        let Ok(lock) = lock else { continue };
        let conflicts = match kind {
            LockKind::Exclusive => true,
            LockKind::Shared => lock.kind == LockKind::Exclusive,
        };
        if conflicts {
            let _ = repo.delete(&path).await;
            return Err(locked(repo, &lock, now));
        }
    }
    let refresher = {
        let repo = repo.clone();
        let path = path.clone();
        let mine = mine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(REFRESH_SECONDS)).await;
                let now = Utc::now();
                let mut renewed = mine.clone();
                renewed.expires = now + Duration::minutes(TTL_MINUTES);
                let _ = repo.refresh_lock(&path, &renewed).await;
            }
        })
    };
    Ok(Held {
        repo: repo.clone(),
        path,
        mine,
        refresher,
    })
}

/// Runs `work` while holding a lock of `kind` on each of `repos`, taken in order; every
/// lock taken is released when `work` ends, whatever its result, and when a later one
/// cannot be taken (then `work` does not run).
pub async fn holding<T>(
    repos: &[&Repo],
    kind: LockKind,
    work: impl Future<Output = T>,
) -> Result<T, Failure> {
    let mut held = Vec::new();
    for repo in repos {
        match acquire(repo, kind).await {
            Ok(h) => held.push(h),
            Err(f) => {
                release_all(held).await;
                return Err(f);
            }
        }
    }
    let out = work.await;
    release_all(held).await;
    Ok(out)
}

/// Runs `work` while holding a reader's shared lock on `repo` (see
/// [`acquire_for_reading`]), released when `work` ends.
pub async fn reading<T>(repo: &Repo, work: impl Future<Output = T>) -> Result<T, Failure> {
    let held = acquire_for_reading(repo).await?;
    let out = work.await;
    release_all(vec![held]).await;
    Ok(out)
}

/// A reader's shared lock (restore, verify): a backup's, with help for storage that
/// refuses the write.
pub async fn acquire_for_reading(repo: &Repo) -> Result<Held, Failure> {
    acquire(repo, LockKind::Shared).await.map_err(|f| {
        if f.code == Code::DestinationUnreadable {
            f.with_help(
                "a restore or verify writes a shared lock so that no prune deletes what it reads; \
                 with read-only access to the storage, run it with --no-lock (and no prune meanwhile)",
            )
        } else {
            f
        }
    })
}

/// Releases every lock of `held`. A lock that cannot be removed expires on its own and
/// is then reported by `plan`.
pub async fn release_all(held: Vec<Held>) {
    for h in held {
        let _ = h.release().await;
    }
}

impl Held {
    /// The destination this lock is on.
    pub fn destination(&self) -> &str {
        &self.repo.name
    }

    /// Releases the lock.
    pub async fn release(self) -> Result<(), Failure> {
        self.refresher.abort();
        // Only our own lock: if ours expired and was removed, another holder's lock
        // may sit under the same name now.
        let ours = self.repo.locks().await?.into_iter().any(|(p, l)| {
            p == self.path
                && l.is_ok_and(|l| {
                    l.host == self.mine.host
                        && l.pid == self.mine.pid
                        && l.started == self.mine.started
                })
        });
        if ours {
            self.repo.delete(&self.path).await?;
        }
        Ok(())
    }
}

/// Removes expired locks (all locks with `all`); returns what was removed.
pub async fn unlock(repo: &Repo, all: bool) -> Result<Vec<String>, Failure> {
    let now = Utc::now();
    let mut removed = Vec::new();
    for (path, lock) in repo.locks().await? {
        let remove = match &lock {
            Ok(l) => all || l.expires < now,
            // An unreadable lock blocks everyone; it is removed like an expired one.
            Err(_) => true,
        };
        if remove {
            repo.delete(&path).await?;
            removed.push(match lock {
                Ok(l) => format!("{path}: {}", describe(&l, now)),
                Err(why) => format!("{path}: unreadable ({why})"),
            });
        }
    }
    Ok(removed)
}
