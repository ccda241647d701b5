//! When the next run is due, for `backplan daemon` and the host schedulers it feeds:
//! computed from the policy's schedules and the inventory alone (no local state), so a
//! restarted daemon or a rebuilt container knows exactly what it missed. Pure, like
//! the plan: `now` and the inventory are inputs.
//!
//! A source is due at the first tick of its schedule after its newest attempt, good or
//! failed; at once when it was never backed up or its settings changed since its last
//! good snapshot. A missed tick is therefore caught up once: the run it causes is the
//! newest attempt, and the next tick after it lies in the future. A failed backup is
//! tried again at the next tick, not in a loop (`backplan apply` by hand retries it at
//! once).
//!
//! With a drill schedule (`drill.schedule`) and a secret key for drills
//! (`drill.secret_key_file`), a source's restore drill is due the same way: at the
//! first tick of the drill schedule after its last drill, at once when it was never
//! drilled. Without the secret key `apply` skips drills, so they wake nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::SourceView;
use crate::inventory::{DestinationState, Holder, Inventory, LockKind};
use crate::policy::Policy;

/// The next run: when, and which sources make it due then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextRun {
    pub at: DateTime<Utc>,
    pub sources: Vec<DueSource>,
}

/// One source due at [`NextRun::at`], and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueSource {
    pub name: String,
    #[serde(flatten)]
    pub why: DueWhy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DueWhy {
    /// No snapshot of it on any readable destination.
    NeverBackedUp,
    /// Its settings changed since its last good snapshot.
    PolicyChanged,
    /// The first tick of its schedule after its newest attempt.
    Scheduled {
        schedule: String,
        /// Its newest attempt (a snapshot, good or failed, or a run of this process).
        after: DateTime<Utc>,
    },
    /// A restore drill of it: the first tick of the drill schedule after its last
    /// drill (or a run of this process), or at once when it was never drilled.
    Drill {
        schedule: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<DateTime<Utc>>,
    },
}

/// The next run. `attempted` is when this process last started a run, if it did: a
/// run that could not record anything (every destination unreachable) is not
/// repeated before the next tick. `None` only for a policy without sources.
pub fn next_run(
    policy: &Policy,
    inventory: &Inventory,
    now: DateTime<Utc>,
    attempted: Option<DateTime<Utc>>,
) -> Option<NextRun> {
    let empty = DestinationState::default();
    let mut due: Vec<(DateTime<Utc>, DueSource)> = Vec::new();
    for source in policy.sources.values() {
        let view = SourceView::new(source, inventory, &empty);
        let newest = view.newest().map(|s| s.time).max(attempted);
        let changed = view
            .last_good()
            .and_then(|s| s.source_digest.as_ref())
            .is_some_and(|d| *d != source.digest);
        let (at, why) = match newest {
            None => (now, DueWhy::NeverBackedUp),
            Some(_) if changed && attempted.is_none() => (now, DueWhy::PolicyChanged),
            Some(after) => match source.schedule.next_after(after) {
                Some(at) => (
                    at,
                    DueWhy::Scheduled {
                        schedule: source.schedule.describe(),
                        after,
                    },
                ),
                // A schedule without another tick: nothing more is due.
                None => continue,
            },
        };
        due.push((
            at,
            DueSource {
                name: source.name.clone(),
                why,
            },
        ));
    }
    due.extend(due_drills(policy, inventory, now, attempted));
    let at = due.iter().map(|(at, _)| *at).min()?;
    // Everything due by then runs together: one run, one recovery point.
    let at_or_now = at.max(now);
    Some(NextRun {
        at,
        sources: due
            .into_iter()
            .filter(|(t, _)| *t <= at_or_now)
            .map(|(_, s)| s)
            .collect(),
    })
}

/// When each source's restore drill is due, where `apply` would run it: the policy
/// has a drill schedule and names the secret key drills decrypt with.
fn due_drills(
    policy: &Policy,
    inventory: &Inventory,
    now: DateTime<Utc>,
    attempted: Option<DateTime<Utc>>,
) -> Vec<(DateTime<Utc>, DueSource)> {
    let Some(schedule) = &policy.drill_schedule else {
        return Vec::new();
    };
    if !drills_run(policy) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for super::Drillable {
        source,
        newest,
        last,
    } in super::drillable(policy, inventory)
    {
        // A run of this process since the last drill, when the snapshot was there
        // already, ran the drill due then: one it could not record is not repeated
        // before the next tick. (The run that took the first snapshot could not drill.)
        let ran = attempted.filter(|a| *a >= newest);
        let at = match last.max(ran) {
            None => now,
            Some(after) => match schedule.next_after(after) {
                Some(at) => at,
                None => continue,
            },
        };
        out.push((
            at,
            DueSource {
                name: source.name.clone(),
                why: DueWhy::Drill {
                    schedule: schedule.describe(),
                    last,
                },
            },
        ));
    }
    out
}

/// A run that is going now, so that none may start: a lock held by another live
/// process on this host, or an exclusive (prune) lock of any host that has not
/// expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Busy {
    pub destination: String,
    pub host: String,
    pub pid: u32,
    pub kind: LockKind,
    pub since: DateTime<Utc>,
}

/// Whether a run is going in any of the policy's destinations. `host` and `pid` name
/// this process: its own locks never count (it runs one run at a time, so a lock of
/// its own that is still there is left over, and the run releases it).
pub fn busy(
    policy: &Policy,
    inventory: &Inventory,
    now: DateTime<Utc>,
    host: &str,
    pid: u32,
) -> Option<Busy> {
    policy.file.destinations.keys().find_map(|name| {
        let state = inventory.destinations.get(name)?;
        state
            .locks
            .iter()
            .filter(|l| {
                let own = l.host == host && l.pid == pid;
                !own && !l.is_stale(now)
            })
            .find(|l| {
                l.kind == LockKind::Exclusive
                    || (l.host == host && l.holder == Some(Holder::Running))
            })
            .map(|l| Busy {
                destination: name.clone(),
                host: l.host.clone(),
                pid: l.pid,
                kind: l.kind,
                since: l.started,
            })
    })
}

/// What a host scheduler (a systemd timer, cron) needs to start backplan on time:
/// each distinct schedule of the policy with its `OnCalendar=` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSchedule {
    pub schedules: Vec<HostTick>,
}

/// One distinct schedule, the sources that follow it, and whether restore drills do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostTick {
    /// The schedule as the policy gives it, with its zone (`0 3 * * * Europe/Berlin`).
    pub schedule: String,
    /// Its systemd form; `None` when systemd cannot say it.
    pub on_calendar: Option<String>,
    pub sources: Vec<String>,
    /// It is the drill schedule (`drill.schedule`, where `apply` runs drills: the
    /// policy names `drill.secret_key_file`).
    pub drills: bool,
}

impl HostSchedule {
    /// Every schedule has an `OnCalendar=` form.
    pub fn expressible(&self) -> bool {
        self.schedules.iter().all(|t| t.on_calendar.is_some())
    }
}

/// The policy's distinct schedules, in the order sources declare them, then the drill
/// schedule where drills run (see [`HostTick::drills`]). `now` bounds the
/// daylight-saving check of [`crate::policy::schedule::Schedule::on_calendar`].
pub fn host_schedule(policy: &Policy, now: DateTime<Utc>) -> HostSchedule {
    let mut schedules: Vec<HostTick> = Vec::new();
    for source in policy.sources.values() {
        let schedule = source.schedule.describe();
        match schedules.iter_mut().find(|t| t.schedule == schedule) {
            Some(tick) => tick.sources.push(source.name.clone()),
            None => schedules.push(HostTick {
                on_calendar: source.schedule.on_calendar(now),
                schedule,
                sources: vec![source.name.clone()],
                drills: false,
            }),
        }
    }
    if let Some(drill) = policy
        .drill_schedule
        .as_ref()
        .filter(|_| drills_run(policy))
    {
        let schedule = drill.describe();
        match schedules.iter_mut().find(|t| t.schedule == schedule) {
            Some(tick) => tick.drills = true,
            None => schedules.push(HostTick {
                on_calendar: drill.on_calendar(now),
                schedule,
                sources: Vec::new(),
                drills: true,
            }),
        }
    }
    HostSchedule { schedules }
}

/// Whether `apply` runs the restore drills its plan shows due: it has the secret key
/// they decrypt with (`drill.secret_key_file`).
fn drills_run(policy: &Policy) -> bool {
    policy
        .file
        .drill
        .as_ref()
        .is_some_and(|d| d.secret_key_file.is_some())
}
