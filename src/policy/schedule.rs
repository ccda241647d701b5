//! Schedules: a cron expression evaluated in a time zone (DST included, by croner).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Serialize, Serializer};

/// When a source is due: a cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    timezone: Tz,
    cron: Cron,
}

impl Schedule {
    /// Parses `expr` (five fields, optional seconds, or `@daily`-style aliases).
    pub fn parse(expr: &str, timezone: Tz) -> Result<Schedule, String> {
        let cron = Cron::from_str(expr).map_err(|e| e.to_string())?;
        Ok(Schedule {
            expr: expr.to_string(),
            timezone,
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// A short human description, e.g. `0 3 * * * Europe/Berlin`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.expr, self.timezone)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.describe())
    }
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| format!("`{name}` is not an IANA time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn daily_schedule_follows_local_time_across_the_spring_dst_change() {
        let tz = parse_timezone("Europe/Berlin").expect("tz");
        let s = Schedule::parse("0 3 * * *", tz).expect("cron");
        // 03:00 CET is 02:00 UTC; after 29 March 2026 03:00 CEST is 01:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-27T12:00:00Z")),
            Some(utc("2026-03-28T02:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_by_dst_still_runs_once_that_day() {
        let tz = parse_timezone("Europe/Berlin").expect("tz");
        let s = Schedule::parse("30 2 * * *", tz).expect("cron");
        let next = s.next_after(utc("2026-03-28T12:00:00Z")).expect("a tick");
        let following = s.next_after(next).expect("another tick");
        assert!(
            next < utc("2026-03-30T00:00:00Z"),
            "ran on the DST day: {next}"
        );
        assert!(
            following > utc("2026-03-30T00:00:00Z"),
            "once only: {following}"
        );
    }

    #[test]
    fn aliases_and_bad_expressions() {
        let s = Schedule::parse("@hourly", Tz::UTC).expect("alias");
        assert_eq!(
            s.next_after(utc("2026-01-01T10:20:00Z")),
            Some(utc("2026-01-01T11:00:00Z"))
        );
        assert!(Schedule::parse("61 * * * *", Tz::UTC).is_err());
        assert!(Schedule::parse("every day", Tz::UTC).is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}
