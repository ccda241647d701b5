//! Every byte of human, Markdown and JSON output. Renderers take computed values and
//! compute nothing themselves.

pub mod apply;
pub mod daemon;
pub mod drill;
pub mod graph;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod schedule;
pub mod snapshots;
pub mod sources;
pub mod status;
pub mod verify;

use chrono::{DateTime, Utc};

pub use crate::error::notice;

/// `2026-11-24 03:00 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `1.8 GiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Pretty JSON of any serialisable value, with a trailing newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Serialising our own plain data types cannot fail; say so if it ever does.
        Err(e) => format!("{{\"error\": \"cannot serialise: {e}\"}}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1_932_735_283), "1.8 GiB");
    }
}
