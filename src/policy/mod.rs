//! The policy: its YAML shape ([`model`]), reading it with every problem located
//! ([`load`], [`validate`]), and the resolved [`Policy`] the rest of backplan uses.
//!
//! Nothing here touches storage, the clock or a server.

pub mod load;
pub mod model;
pub mod notify;
pub mod prescan;
pub mod schedule;
pub mod secret;
pub mod services;
pub mod spans;
pub mod template;
mod validate;

use std::path::{Path, PathBuf};

use chrono::Duration;
use indexmap::IndexMap;
use serde::Serialize;

use crate::graph::SourceGraph;

pub use load::{Loaded, load_bytes, load_file, load_str};
pub use model::{Destination, PolicyFile, Retention, SourceKind};
pub use schedule::Schedule;
pub use secret::Secret;
use spans::SpanIndex;

/// Built-in defaults, used where neither the source nor `defaults:` says otherwise.
pub const DEFAULT_SCHEDULE: &str = "@daily";
pub const DEFAULT_TIMEZONE: &str = "UTC";
pub const DEFAULT_KEEP_DAILY: u32 = 30;
pub const DEFAULT_MIN_KEEP: u32 = 3;
pub const DEFAULT_COMPRESSION: i32 = 3;
/// What `status` reports as a size anomaly: a snapshot this many times larger or
/// smaller than the one before.
pub const DEFAULT_SIZE_CHANGE_FACTOR: f64 = 2.0;

/// A validated policy with every inherited setting resolved.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The policy file, as given.
    pub path: PathBuf,
    /// The folder relative paths start at.
    pub dir: PathBuf,
    /// The file's absolute path, when it is a file: what tells a saved plan of
    /// another policy from one of this policy, changed.
    pub location: Option<PathBuf>,
    /// The text as read (the repository stores it for the next plan's diff).
    pub text: String,
    /// BLAKE3 of the text.
    pub digest: String,
    pub file: PolicyFile,
    pub spans: SpanIndex,
    /// Sources in policy order, with inherited settings resolved.
    pub sources: IndexMap<String, ResolvedSource>,
    /// Recipient key files, resolved against `dir`.
    pub recipients: Vec<PathBuf>,
    pub compression: i32,
    /// The dependency graph of the sources, built (and found acyclic) by validation.
    pub graph: SourceGraph,
    /// `objectives:`, parsed.
    pub objectives: ResolvedObjectives,
    /// `drill.schedule`, parsed: when restore drills are due.
    pub drill_schedule: Option<Schedule>,
}

/// The recovery objectives, their durations parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolvedObjectives {
    pub rpo: Option<Duration>,
    pub rto: Option<Duration>,
}

/// A source with what it inherits filled in.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedSource {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: &'static str,
    pub schedule: Schedule,
    pub retention: EffectiveRetention,
    pub destinations: Vec<String>,
    pub depends_on: Vec<String>,
    /// Digest of what is backed up (the type's own fields): when it changes, the
    /// next plan backs the source up again with the reason "policy changed".
    pub digest: String,
    #[serde(skip)]
    pub kind: SourceKind,
}

/// Retention with its durations parsed and `min_keep` filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveRetention {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub keep_within: Option<Duration>,
    pub min_keep: u32,
}

impl EffectiveRetention {
    /// Resolves a written retention; `Err` names the field with a bad duration.
    pub fn from_written(r: &Retention) -> Result<EffectiveRetention, String> {
        let keep_within = match &r.keep_within {
            Some(text) => Some(parse_duration(text)?),
            None => None,
        };
        Ok(EffectiveRetention {
            keep_last: r.keep_last.unwrap_or(0),
            keep_hourly: r.keep_hourly.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
            keep_yearly: r.keep_yearly.unwrap_or(0),
            keep_within,
            min_keep: r.min_keep.unwrap_or(DEFAULT_MIN_KEEP),
        })
    }

    /// Whether any rule keeps a snapshot.
    pub fn keeps_something(&self) -> bool {
        self.keep_last
            + self.keep_hourly
            + self.keep_daily
            + self.keep_weekly
            + self.keep_monthly
            + self.keep_yearly
            > 0
            || self.keep_within.is_some_and(|d| d > Duration::zero())
    }

    /// The longest time the time-based rules keep a snapshot (`keep_within`, and N
    /// hours, days, weeks, months of 31 days, years of 366 days for the `keep_*`
    /// buckets); `None` when only `keep_last` and `min_keep` keep any, which bound a
    /// count, not a time.
    pub fn longest_keep(&self) -> Option<Duration> {
        [
            self.keep_within,
            (self.keep_hourly > 0).then(|| Duration::hours(self.keep_hourly.into())),
            (self.keep_daily > 0).then(|| Duration::days(self.keep_daily.into())),
            (self.keep_weekly > 0).then(|| Duration::weeks(self.keep_weekly.into())),
            (self.keep_monthly > 0).then(|| Duration::days(31 * i64::from(self.keep_monthly))),
            (self.keep_yearly > 0).then(|| Duration::days(366 * i64::from(self.keep_yearly))),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// The rules as `(name, written value)` pairs, for diffs and explanations.
    pub fn rules(&self) -> Vec<(&'static str, String)> {
        let mut rules = Vec::new();
        for (name, n) in [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ] {
            if n > 0 {
                rules.push((name, n.to_string()));
            }
        }
        if let Some(d) = self.keep_within {
            rules.push(("keep_within", format_duration(d)));
        }
        rules.push(("min_keep", self.min_keep.to_string()));
        rules
    }
}

/// Parses `30d`, `12h`, `2w`, `1y` and friends.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let std = humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}`: {e}"))?;
    Duration::from_std(std).map_err(|_| format!("`{text}` is too long"))
}

/// Formats a duration the way a policy writes it (`30d`, `36h`, `90m`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.num_seconds();
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

mod opt_duration {
    use chrono::Duration;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

impl Policy {
    /// Resolves a path from the policy against the policy's folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        resolve_path(&self.dir, path)
    }
}

pub(crate) fn resolve_path(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// BLAKE3 of some bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
