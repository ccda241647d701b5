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

impl Schedule {
    /// The schedule as a systemd `OnCalendar=` expression with the same ticks, or
    /// `None` when systemd cannot say it: day-of-month and day-of-week both restricted
    /// (cron runs on either, systemd on both), `L`, `W`, `#`, a stepped day-of-week or
    /// range, or a tick that falls into a daylight-saving gap of the zone within a year
    /// of `now` (systemd skips it, backplan runs it once that day).
    pub fn on_calendar(&self, now: DateTime<Utc>) -> Option<String> {
        let expr = self.expr.trim();
        let fields: Vec<&str> = match expr {
            "@yearly" | "@annually" => vec!["0", "0", "1", "1", "*"],
            "@monthly" => vec!["0", "0", "1", "*", "*"],
            "@weekly" => vec!["0", "0", "*", "*", "0"],
            "@daily" | "@midnight" => vec!["0", "0", "*", "*", "*"],
            "@hourly" => vec!["0", "*", "*", "*", "*"],
            _ if expr.starts_with('@') => return None,
            _ => expr.split_whitespace().collect(),
        };
        let [minute, hour, dom, month, dow] = fields[..] else {
            return None;
        };
        let unrestricted = |f: &str| f == "*" || f == "?";
        if !unrestricted(dom) && !unrestricted(dow) {
            return None;
        }
        let minute = calendar_field(minute, 0, 59, &[])?;
        let hour = calendar_field(hour, 0, 23, &[])?;
        let dom = calendar_field(dom, 1, 31, &[])?;
        let month = calendar_field(month, 1, 12, &MONTHS)?;
        let weekdays = weekday_field(dow)?;
        if self.timezone != Tz::UTC && self.falls_into_a_gap(now) {
            return None;
        }
        let date = format!("*-{month}-{dom}");
        let time = format!("{hour}:{minute}:00");
        Some(match weekdays {
            Some(days) => format!("{days} {date} {time} {}", self.timezone),
            None => format!("{date} {time} {}", self.timezone),
        })
    }

    /// Whether a tick within a year of `now` names a local time that the zone skips
    /// (a spring-forward gap).
    fn falls_into_a_gap(&self, now: DateTime<Utc>) -> bool {
        use chrono::{Offset, TimeZone};
        let end = now + chrono::Duration::days(366);
        let mut day = now;
        while day < end {
            let next = day + chrono::Duration::days(1);
            let before = self
                .timezone
                .offset_from_utc_datetime(&day.naive_utc())
                .fix();
            let after = self
                .timezone
                .offset_from_utc_datetime(&next.naive_utc())
                .fix();
            if before.local_minus_utc() < after.local_minus_utc() {
                // Clocks go forward within this day: a naive walk over its local
                // minutes finds the skipped ones among the ticks.
                let mut t = self
                    .timezone
                    .from_utc_datetime(&day.naive_utc())
                    .naive_local();
                let stop = self
                    .timezone
                    .from_utc_datetime(&next.naive_utc())
                    .naive_local();
                while t < stop {
                    let skipped = self.timezone.from_local_datetime(&t).earliest().is_none();
                    if skipped && self.cron.is_time_matching(&t.and_utc()).unwrap_or(false) {
                        return true;
                    }
                    t += chrono::Duration::minutes(1);
                }
            }
            day = next;
        }
        false
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// One cron field (minute, hour, day of month, month) in systemd's syntax: `*`, lists,
/// ranges `a-b` as `a..b`, steps `*/n` and `a/n`; `names` are the field's names
/// (months), numbered from `min`.
fn calendar_field(field: &str, min: u32, max: u32, names: &[&str]) -> Option<String> {
    if field == "*" || field == "?" {
        return Some("*".into());
    }
    let value = |v: &str| -> Option<u32> {
        let n = match names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            Some(i) => min + i as u32,
            None => v.parse().ok()?,
        };
        (min..=max).contains(&n).then_some(n)
    };
    let items: Option<Vec<String>> = field
        .split(',')
        .map(|item| match item.split_once('/') {
            Some((start, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0)?;
                let start = if start == "*" { min } else { value(start)? };
                Some(format!("{start:02}/{step}"))
            }
            None => match item.split_once('-') {
                Some((a, b)) => Some(format!("{:02}..{:02}", value(a)?, value(b)?)),
                None => Some(format!("{:02}", value(item)?)),
            },
        })
        .collect();
    Some(items?.join(","))
}

/// A cron day-of-week field as systemd's weekday list (`Mon,Tue,Wed`); `None` inside
/// for every day, `None` outside when systemd cannot say it. Ranges are spelled out:
/// cron's may start on Sunday (0), systemd's weeks start on Monday.
fn weekday_field(field: &str) -> Option<Option<String>> {
    if field == "*" || field == "?" {
        return Some(None);
    }
    // 0 and 7 are Sunday.
    let day = |v: &str| -> Option<usize> {
        match WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(v)) {
            Some(i) => Some(i),
            None => v.parse::<usize>().ok().filter(|n| *n <= 7),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(item)?, day(item)?),
        };
        if a > b {
            return None;
        }
        for d in a..=b {
            days[d % 7] = true;
        }
    }
    // Monday first, as systemd writes them.
    let names: Vec<&str> = (1..=7)
        .map(|d| d % 7)
        .filter(|d| days[*d])
        .map(|d| WEEKDAYS[d])
        .collect();
    Some(Some(names.join(",")))
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
    fn on_calendar_says_what_systemd_can_and_nothing_else() {
        let now = utc("2026-01-10T00:00:00Z");
        let berlin = parse_timezone("Europe/Berlin").expect("tz");
        let on = |expr: &str, tz: Tz| Schedule::parse(expr, tz).expect("cron").on_calendar(now);
        assert_eq!(
            on("0 3 * * *", berlin).as_deref(),
            Some("*-*-* 03:00:00 Europe/Berlin")
        );
        assert_eq!(
            on("*/15 8-18 * * MON-FRI", Tz::UTC).as_deref(),
            Some("Mon,Tue,Wed,Thu,Fri *-*-* 08..18:00/15:00 UTC")
        );
        assert_eq!(
            on("0 0 1 JAN,JUL *", Tz::UTC).as_deref(),
            Some("*-01,07-01 00:00:00 UTC")
        );
        assert_eq!(
            on("@weekly", Tz::UTC).as_deref(),
            Some("Sun *-*-* 00:00:00 UTC")
        );
        // 02:30 does not exist in Berlin on the spring change: systemd would skip it.
        assert_eq!(on("30 2 * * *", berlin), None);
        assert!(on("30 2 * * *", Tz::UTC).is_some());
        // Day of month or day of week (cron) is not day of month and week (systemd).
        assert_eq!(on("0 4 1 * 1", Tz::UTC), None);
        assert_eq!(on("0 4 L * *", Tz::UTC), None);
        assert_eq!(on("0 4 * * 5#2", Tz::UTC), None);
        assert_eq!(on("0 1-10/2 * * *", Tz::UTC), None);
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
