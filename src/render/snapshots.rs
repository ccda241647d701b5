//! `backplan snapshots` as a table.

use std::fmt::Write as _;

use crate::inventory::{Inventory, SnapshotStatus};

use super::{bytes, time};

pub fn table(inventory: &Inventory) -> String {
    let mut out = String::new();
    for (name, state) in &inventory.destinations {
        let _ = writeln!(out, "{name}:");
        if let Some(e) = &state.error {
            let _ = writeln!(out, "  unreadable: {e}");
            continue;
        }
        if state.snapshots.is_empty() {
            let _ = writeln!(out, "  no snapshots");
            continue;
        }
        let mut snaps: Vec<_> = state.snapshots.iter().collect();
        snaps.sort_by(|a, b| (a.time, &a.source).cmp(&(b.time, &b.source)));
        let w = snaps.iter().map(|s| s.id.len()).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:<w$}  {:<10} {:<20} {:<8} {:>10} {:>10}",
            "ID", "SOURCE", "TIME", "STATUS", "READ", "STORED"
        );
        for s in snaps {
            let _ = writeln!(
                out,
                "  {:<w$}  {:<10} {:<20} {:<8} {:>10} {:>10}",
                s.id,
                s.source,
                time(s.time),
                match s.status {
                    SnapshotStatus::Complete => "complete",
                    SnapshotStatus::Failed => "FAILED",
                },
                s.bytes_read.map(bytes).unwrap_or_default(),
                s.bytes_stored.map(bytes).unwrap_or_default(),
            );
        }
        for d in &state.damaged {
            let _ = writeln!(out, "  damaged: {d}");
        }
    }
    out
}
