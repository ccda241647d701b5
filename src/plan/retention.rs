//! Retention: which good snapshots the rules keep. Pure.
//!
//! Buckets count only periods that hold a snapshot and `keep_within` counts back from
//! the newest snapshot, not from now: a host that was off for three weeks keeps what it
//! had, because the rules see the same snapshots they saw before it went off.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use crate::policy::{EffectiveRetention, format_duration};

/// One good snapshot as retention sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub time: DateTime<Utc>,
}

/// Why a snapshot is kept: the rules that keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept<'a> {
    pub id: &'a str,
    pub rules: Vec<String>,
}

/// The outcome for a set of good snapshots.
#[derive(Debug, Clone, Default)]
pub struct Decision<'a> {
    pub kept: Vec<Kept<'a>>,
    pub pruned: Vec<Candidate<'a>>,
}

impl Decision<'_> {
    pub fn keeps(&self, id: &str) -> bool {
        self.kept.iter().any(|k| k.id == id)
    }
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(time: DateTime<Utc>, tz: Tz, period: Period) -> (i32, u32, u32, u32) {
    let local = time.with_timezone(&tz);
    match period {
        Period::Hour => (local.year(), local.ordinal(), local.hour(), 0),
        Period::Day => (local.year(), local.ordinal(), 0, 0),
        Period::Week => {
            let w = local.iso_week();
            (w.year(), w.week(), 0, 0)
        }
        Period::Month => (local.year(), local.month(), 0, 0),
        Period::Year => (local.year(), 0, 0, 0),
    }
}

/// Applies `rules` to good snapshots. Buckets (days, weeks, …) are taken in `tz`.
pub fn decide<'a>(snapshots: &[Candidate<'a>], rules: &EffectiveRetention, tz: Tz) -> Decision<'a> {
    let mut sorted: Vec<Candidate<'a>> = snapshots.to_vec();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(a.id)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];

    for (i, _) in sorted.iter().enumerate().take(rules.keep_last as usize) {
        reasons[i].push(format!("keep_last {}", rules.keep_last));
    }
    for (name, count, period) in [
        ("keep_hourly", rules.keep_hourly, Period::Hour),
        ("keep_daily", rules.keep_daily, Period::Day),
        ("keep_weekly", rules.keep_weekly, Period::Week),
        ("keep_monthly", rules.keep_monthly, Period::Month),
        ("keep_yearly", rules.keep_yearly, Period::Year),
    ] {
        let mut left = count;
        let mut last = None;
        for (i, snap) in sorted.iter().enumerate() {
            if left == 0 {
                break;
            }
            let b = bucket(snap.time, tz, period);
            if last != Some(b) {
                reasons[i].push(format!("{name} {count}"));
                last = Some(b);
                left -= 1;
            }
        }
    }
    if let (Some(within), Some(newest)) = (rules.keep_within, sorted.first()) {
        let newest = newest.time;
        for (i, snap) in sorted.iter().enumerate() {
            if newest - snap.time <= within {
                reasons[i].push(format!("keep_within {}", format_duration(within)));
            }
        }
    }
    let mut kept_count = reasons.iter().filter(|r| !r.is_empty()).count();
    for r in reasons.iter_mut() {
        if kept_count >= rules.min_keep as usize {
            break;
        }
        if r.is_empty() {
            r.push(format!("min_keep {}", rules.min_keep));
            kept_count += 1;
        }
    }

    let mut decision = Decision::default();
    for (snap, rules) in sorted.into_iter().zip(reasons) {
        if rules.is_empty() {
            decision.pruned.push(snap);
        } else {
            decision.kept.push(Kept { id: snap.id, rules });
        }
    }
    decision
}

/// "keep_daily 30, keep_weekly 8": the active rules, for a prune's reason.
pub fn describe_rules(rules: &EffectiveRetention) -> String {
    rules
        .rules()
        .into_iter()
        .filter(|(name, _)| *name != "min_keep")
        .map(|(name, value)| format!("{name} {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}
