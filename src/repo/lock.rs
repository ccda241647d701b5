//! Repository locks: backups, copies, repairs, restores and verifies share, prune is
//! exclusive. A lock names its host, pid, start and expiry. A lock is stale when it
//! expired (its holder crashed somewhere), or at once when it is this host's and its
//! process no longer runs ([`holder`]). `plan` reports stale locks; `backplan unlock`
//! removes them; a lock in the way of another is removed only when its holder is
//! known to be gone, and that is said on standard error.

use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use super::store::Repo;
use crate::error::{Code, Failure};
pub use crate::inventory::{Holder, LockInfo, LockKind};

/// How long a lock lasts unless refreshed; a running holder refreshes it.
pub const TTL_MINUTES: i64 = 30;
/// How often a holder refreshes its lock.
pub const REFRESH_SECONDS: u64 = 300;

const EXCLUSIVE: &str = "locks/exclusive";

/// How much later than its lock a process with the lock's pid may seem to have
/// started and still count as the holder: process start times are known to about a
/// second, and the wall clock may be stepped between the lock and now.
const START_SLACK_SECONDS: i64 = 10;

/// This host's name, as locks record it.
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// What became of a lock's holding process: `None` when the lock is another host's,
/// or when this host cannot tell (no `/proc`). A process with the lock's pid that
/// started after the lock was taken is not its holder (the pid was reused). Reads
/// `/proc` only: cheap, and done when a lock is read, so that `plan` gets it as data.
pub fn holder(lock: &LockInfo) -> Option<Holder> {
    if lock.host != this_host() {
        return None;
    }
    holder_on_this_host(lock.pid, lock.started, Utc::now())
}

fn holder_on_this_host(pid: u32, started: DateTime<Utc>, now: DateTime<Utc>) -> Option<Holder> {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self/stat").is_file() {
        return None;
    }
    let stat = match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Holder::Exited),
        Err(_) => return None,
    };
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so the fields
    // are counted from the last `)`; `state` is field 3 and `starttime` field 22.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        // Dead, only not reaped yet.
        return Some(Holder::Exited);
    }
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    // Both on the boot-time clock: how long ago the process started.
    let uptime: f64 = std::fs::read_to_string(proc.join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let age_ms = (uptime * 1000.0) as i64 - (start_ticks.saturating_mul(1000) / ticks) as i64;
    let process_started = now - Duration::milliseconds(age_ms.max(0));
    if process_started > started + Duration::seconds(START_SLACK_SECONDS) {
        Some(Holder::PidReused)
    } else {
        Some(Holder::Running)
    }
}

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
        host: this_host(),
        pid: std::process::id(),
        started: now,
        expires: now + Duration::minutes(TTL_MINUTES),
        holder: None,
    }
}

/// "a shared lock held by host pid 42 since …", with why it is stale when it is.
pub fn describe(l: &LockInfo, now: DateTime<Utc>) -> String {
    let state = if l.expires < now { "expired" } else { "held" };
    let mut text = format!(
        "{} lock {state} by {} pid {} since {}",
        match l.kind {
            LockKind::Shared => "a shared",
            LockKind::Exclusive => "an exclusive",
        },
        l.host,
        l.pid,
        l.started.format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(gone) = gone(l) {
        text.push_str(&format!(" ({gone})"));
    }
    text
}

/// Why a lock's holder is known to be gone.
pub fn gone(l: &LockInfo) -> Option<&'static str> {
    match l.holder? {
        Holder::Running => None,
        Holder::Exited => Some("its process is gone from this host"),
        Holder::PidReused => {
            Some("its process is gone from this host; its pid now runs a later program")
        }
    }
}

/// Whether two readings name the same lock (the holder's state aside).
fn same_lock(a: &LockInfo, b: &LockInfo) -> bool {
    a.kind == b.kind && a.host == b.host && a.pid == b.pid && a.started == b.started
}

/// Removes the lock at `path` that was read as `stale`, if it still is that lock;
/// says so on standard error. Another process may remove it at the same time:
/// deleting is idempotent, and the lock is read again right before, so that a lock
/// written meanwhile under the same name is left alone.
async fn clear(repo: &Repo, path: &str, stale: &LockInfo) -> Result<(), Failure> {
    let still = repo
        .locks()
        .await?
        .into_iter()
        .any(|(p, l)| p == path && l.is_ok_and(|l| same_lock(&l, stale)));
    if still {
        repo.delete(path).await?;
        crate::error::notice(&format!(
            "destination {}: removed {path}, {}",
            repo.name,
            describe(stale, Utc::now())
        ));
    }
    Ok(())
}

fn locked(repo: &Repo, l: &LockInfo, now: DateTime<Utc>) -> Failure {
    let failure = Failure::new(
        Code::RepositoryLocked,
        format!("destination {} is locked: {}", repo.name, describe(l, now)),
    );
    if l.expires < now {
        failure.with_help("its holder stopped refreshing it; check that no backplan runs there, then remove it with `backplan unlock`")
    } else {
        failure.with_help("wait for it to finish, then run again")
    }
}

/// How often an acquirer that lost a race (a conflicting lock written within
/// [`RACE_SECONDS`] of its own) steps back and tries again. Without it, racers that
/// all write before they look could all see each other and all give up.
const RACE_TRIES: u32 = 4;
/// Locks started this close together are racers, not a holder and a latecomer.
const RACE_SECONDS: i64 = 10;

const LAGGING_LISTING: &str = "its listing does not show what was just written; run again, and if this stays, serve it with a server whose listings are current (docs/policy.md)";

/// Takes a lock of `kind`, or explains who holds the one in the way.
pub async fn acquire(repo: &Repo, kind: LockKind) -> Result<Held, Failure> {
    let mut tries = 1;
    loop {
        match attempt(repo, kind).await? {
            Attempt::Held(held) => return Ok(*held),
            Attempt::Lost(_) if tries < RACE_TRIES => {
                // Step back for a random while, so that one racer gets ahead.
                let mut r = [0u8; 2];
                getrandom::fill(&mut r).map_err(|e| Failure::new(Code::Io, e.to_string()))?;
                let millis = 50 + u64::from(u16::from_le_bytes(r)) % 450;
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                tries += 1;
            }
            Attempt::Lost(failure) => return Err(failure),
        }
    }
}

enum Attempt {
    Held(Box<Held>),
    /// A racer's lock was in the way; ours is removed again.
    Lost(Failure),
}

async fn attempt(repo: &Repo, kind: LockKind) -> Result<Attempt, Failure> {
    let now = Utc::now();
    let mine = info(kind, now);
    let unique = |prefix: &str| -> Result<String, Failure> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| Failure::new(Code::Io, e.to_string()))?;
        Ok(format!(
            "{prefix}-{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
    };
    let path = match kind {
        // Where the storage cannot create-if-absent (WebDAV, B2), the exclusive lock
        // has a name of its own too, and only the look after the write below (of two
        // racers at least one sees the other) keeps it exclusive.
        LockKind::Exclusive if repo.creates_if_absent() => EXCLUSIVE.to_string(),
        LockKind::Exclusive => unique(EXCLUSIVE)?,
        LockKind::Shared => unique("locks/shared")?,
    };
    let mut attempts = 0;
    while !repo.put_lock(&path, &mine).await? {
        // Something is there under our lock's name: another holder's exclusive lock,
        // or our own (a write that went through, whose answer was lost, and whose
        // retry found the object there).
        attempts += 1;
        let others = repo.locks().await?;
        let Some((_, Ok(l))) = others.iter().find(|(p, _)| *p == path) else {
            if attempts < 3 {
                // Released between the write and the look: try again.
                continue;
            }
            return Err(Failure::new(
                Code::RepositoryLocked,
                format!("destination {} is locked", repo.name),
            ));
        };
        if same_lock(l, &mine) {
            break;
        }
        if l.holder_gone() && attempts < 3 {
            clear(repo, &path, l).await?;
            continue;
        }
        return Err(locked(repo, l, now));
    }
    // Both sides write first and look second: of two racing writers at least one
    // sees the other, and neither proceeds past a conflicting lock. A look that does
    // not show our own lock is behind the writes (`rclone serve webdav` has been seen
    // to leave existing files out while others were deleted) and proves nothing.
    let seen = repo.locks().await?;
    if !seen.iter().any(|(other, _)| *other == path) {
        let _ = repo.delete(&path).await;
        let failure = Failure::new(
            Code::RepositoryLocked,
            format!("destination {} did not list its new lock {path}", repo.name),
        )
        .with_help(LAGGING_LISTING);
        return Ok(Attempt::Lost(failure));
    }
    for (other, lock) in seen {
        if other == path {
            continue;
        }
        let lock = match lock {
            Ok(lock) => lock,
            // A lock being written (WebDAV shows a file while its upload runs) or
            // left broken: it may be anyone's, so it is in the way.
            Err(why) => {
                let _ = repo.delete(&path).await;
                let failure = Failure::new(
                    Code::RepositoryLocked,
                    format!("destination {} is locked: {other} is unreadable ({why})", repo.name),
                )
                .with_help("if it stays, check that no backplan runs there, then remove it with `backplan unlock`");
                return Ok(Attempt::Lost(failure));
            }
        };
        let conflicts = match kind {
            LockKind::Exclusive => true,
            LockKind::Shared => lock.kind == LockKind::Exclusive,
        };
        if conflicts {
            if lock.holder_gone() {
                clear(repo, &other, &lock).await?;
                continue;
            }
            let _ = repo.delete(&path).await;
            let failure = locked(repo, &lock, now);
            if (lock.started - now).num_seconds().abs() <= RACE_SECONDS {
                return Ok(Attempt::Lost(failure));
            }
            return Err(failure);
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
    Ok(Attempt::Held(Box::new(Held {
        repo: repo.clone(),
        path,
        mine,
        refresher,
    })))
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

/// Removes stale locks: expired ones, and this host's whose process is gone (all
/// locks with `all`); returns what was removed.
pub async fn unlock(repo: &Repo, all: bool) -> Result<Vec<String>, Failure> {
    let now = Utc::now();
    let mut removed = Vec::new();
    for (path, lock) in repo.locks().await? {
        let remove = match &lock {
            Ok(l) => all || l.is_stale(now),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_running_gone_or_a_reused_pid_by_its_process_and_start_time() {
        let now = Utc::now();
        let me = std::process::id();
        // This process, which started before a lock taken now.
        assert_eq!(holder_on_this_host(me, now, now), Some(Holder::Running));
        // A lock taken an hour before this process started: its pid was reused.
        assert_eq!(
            holder_on_this_host(me, now - Duration::hours(1), now),
            Some(Holder::PidReused)
        );
        // A process that exited and was reaped.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("run true");
        let pid = child.id();
        child.wait().expect("reap");
        assert_eq!(holder_on_this_host(pid, now, now), Some(Holder::Exited));
        // Another host's lock: this host cannot tell.
        let mut lock = info(LockKind::Shared, now);
        assert_eq!(holder(&lock), Some(Holder::Running));
        lock.host = format!("{}-elsewhere", lock.host);
        assert_eq!(holder(&lock), None);
    }
}
