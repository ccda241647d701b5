//! Schedules: a cron expression evaluated in a time zone (DST included, by croner).

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Serialize, Serializer};

/// When a source is due: a cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    timezone: Tz,
    /// Shared: a parsed cron holds a bit per possible year (about 10 KB), and the
    /// sources of a policy mostly share a few schedules.
    cron: Arc<Cron>,
}

impl Schedule {
    /// Parses `expr`: five fields (`minute hour day-of-month month day-of-week`) or an
    /// alias such as `@daily`. croner also reads six fields as leading seconds and
    /// seven as seconds and a year; both are refused: a backup schedule has no use for
    /// seconds, and a year makes a schedule that silently stops.
    pub fn parse(expr: &str, timezone: Tz) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && fields != 5 {
            return Err(format!(
                "it has {fields} field{}; a schedule has five: minute hour day-of-month month day-of-week (no seconds, no year)",
                if fields == 1 { "" } else { "s" }
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| e.to_string())?;
        Ok(Schedule {
            expr: expr.to_string(),
            timezone,
            cron: Arc::new(cron),
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

/// Parses a time zone: `UTC` or an IANA `Area/Location` name (`Europe/Berlin`,
/// `America/New_York`, `Etc/GMT+5`). The tz database also holds names without an
/// area: abbreviations (`CET`, `EST`, `PST8PDT`) and old aliases (`GMT`, `Zulu`,
/// `Japan`). They are refused: an abbreviation names a fixed offset or a rule that is
/// not the one a place follows (`EST` never has summer time, New York does).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    let tz = Tz::from_str(name).map_err(|_| format!("`{name}` is not an IANA time zone"))?;
    if is_accepted_zone_name(name) {
        Ok(tz)
    } else {
        Err(format!(
            "`{name}` is an abbreviation or alias, not an IANA `Area/Location` time zone"
        ))
    }
}

/// Whether a tz database name is one [`parse_timezone`] accepts: `UTC` or
/// `Area/Location`.
pub fn is_accepted_zone_name(name: &str) -> bool {
    name == "UTC" || name.contains('/')
}

/// The zone to suggest for a refused abbreviation or alias, if one is clear.
pub fn timezone_for_abbreviation(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_str() {
        "GMT" | "GMT0" | "GMT+0" | "GMT-0" | "UCT" | "UNIVERSAL" | "ZULU" | "GREENWICH" | "Z"
        | "ETC" => "UTC",
        "CET" | "CEST" | "MET" | "MEST" => "Europe/Berlin",
        "EET" | "EEST" => "Europe/Athens",
        "WET" | "WEST" => "Europe/Lisbon",
        "BST" => "Europe/London",
        "EST" | "EDT" | "EST5EDT" => "America/New_York",
        "CST" | "CDT" | "CST6CDT" => "America/Chicago",
        "MST" | "MDT" | "MST7MDT" => "America/Denver",
        "PST" | "PDT" | "PST8PDT" => "America/Los_Angeles",
        "HST" => "Pacific/Honolulu",
        _ => {
            // An alias such as `Singapore` or `Japan`: the zone of the same name.
            return chrono_tz::TZ_VARIANTS
                .iter()
                .map(|tz| tz.name())
                .find(|zone| {
                    zone.rsplit_once('/')
                        .is_some_and(|(_, city)| city.eq_ignore_ascii_case(name))
                });
        }
    })
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
