//! The findings of `backplan verify`, per destination.

use crate::sources::kind::Checked;
use crate::verify::{DatabaseCheck, Findings};

/// A database check: what it read, then what differed, each on its line.
fn database_check(c: &DatabaseCheck, out: &mut String) {
    let (source, id) = (&c.source, &c.snapshot);
    match &c.checked {
        Ok(Checked::Archives {
            restored,
            differences,
        }) => {
            out.push_str(&format!(
                "    database check: {source} ({id}): {}\n",
                if *restored {
                    "archive listed, restored into a scratch database and counted"
                } else {
                    "archive listed by pg_restore"
                }
            ));
            for d in differences {
                let rows = &d.rows;
                let what = match rows.restored {
                    Some(got) => format!("{got} rows restored, {} at backup time", rows.recorded),
                    None => "missing after the restore".to_string(),
                };
                out.push_str(&format!(
                    "    snapshot {id}: {}: {}: {what}\n",
                    d.database, rows.table
                ));
            }
        }
        Ok(Checked::Rdb { keys, differences }) => {
            out.push_str(&format!(
                "    database check: {source} ({id}): RDB read whole, checksum right, {keys} keys\n"
            ));
            for d in differences {
                out.push_str(&format!(
                    "    snapshot {id}: db {}: the RDB holds {} keys, {} were recorded at backup\n",
                    d.db, d.found, d.recorded
                ));
            }
        }
        Err(e) => out.push_str(&format!(
            "    snapshot {id}: database check: {}\n",
            e.message
        )),
    }
}

/// One line per destination, then its problems.
pub fn human(all: &[Findings]) -> String {
    let mut out = String::new();
    for f in all {
        if let Some(why) = &f.not_verified {
            out.push_str(&format!("✗ {}: not verified: {why}\n", f.destination));
            continue;
        }
        let n = f.problem_count();
        out.push_str(&format!(
            "{} {}: {} snapshots, {} packs{}{}{}\n",
            if n == 0 { "✓" } else { "✗" },
            f.destination,
            f.snapshots,
            f.packs,
            if f.packs_read > 0 {
                format!(", {} read back", f.packs_read)
            } else {
                String::new()
            },
            match (f.key_copies, f.key_copies_opened) {
                (0, _) => String::new(),
                (n, 0) => format!(", {n} key cop{}", if n == 1 { "y" } else { "ies" }),
                (n, o) => format!(
                    ", {n} key cop{} ({o} opened)",
                    if n == 1 { "y" } else { "ies" }
                ),
            },
            if n == 0 {
                String::new()
            } else {
                format!(", {n} problem{}", crate::plan::plural(n))
            },
        ));
        for c in &f.database_checks {
            database_check(c, &mut out);
        }
        for (snapshot, problems) in &f.problems {
            for p in problems {
                let (code, message) = (p.code.id(), &p.message);
                if snapshot.is_empty() {
                    out.push_str(&format!("    {code} {message}\n"));
                } else {
                    out.push_str(&format!("    snapshot {snapshot}: {code} {message}\n"));
                }
            }
        }
        if let Some(last) = f.short_locks.iter().max_by_key(|l| l.needed_until) {
            out.push_str(&format!(
                "    ! warning {} {} pack{} locked for less time than the snapshots using them: the lock of {} ends {} ({}), a snapshot using it is kept locked until {}\n",
                crate::error::Code::ShortObjectLock,
                f.short_locks.len(),
                if f.short_locks.len() == 1 { "" } else { "s" },
                last.pack,
                last.locked_until.format("%Y-%m-%d %H:%M UTC"),
                match last.read {
                    true => "read from the object",
                    false => "its write time plus retain_for",
                },
                last.needed_until.format("%Y-%m-%d %H:%M UTC"),
            ));
        }
        if let Some(bucket) = &f.bucket_lock
            && bucket.differs
        {
            let has = match &bucket.default {
                Some(d) => format!(
                    "a default retention of {} day{} ({})",
                    d.days,
                    crate::plan::plural(d.days as usize),
                    match d.mode {
                        crate::repo::s3lock::LockMode::Governance => "governance",
                        crate::repo::s3lock::LockMode::Compliance => "compliance",
                    }
                ),
                None => "no default retention".to_string(),
            };
            out.push_str(&format!(
                "    ! warning {} the bucket has {has}, but object_lock.retain_for is {} day{}: new objects are locked for what the bucket says\n",
                crate::error::Code::BucketLockDiffers,
                bucket.retain_for_days,
                crate::plan::plural(bucket.retain_for_days as usize),
            ));
        }
        if let Some(why) = f.bucket_lock.as_ref().and_then(|b| b.unreadable.as_ref()) {
            out.push_str(&format!(
                "    (the bucket's default retention was not compared with retain_for: {why})\n"
            ));
        }
        if let Some(recorded) = &f.recorded {
            out.push_str(&format!("    {recorded}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kind::TableDifference;
    use crate::sources::postgres::RowCountDifference;

    fn check(differences: Vec<TableDifference>) -> DatabaseCheck {
        DatabaseCheck {
            source: "app".into(),
            snapshot: "0123abcd".into(),
            checked: Ok(Checked::Archives {
                restored: true,
                differences,
            }),
        }
    }

    #[test]
    fn a_restore_test_names_each_table_whose_rows_differ_and_the_json_keeps_the_numbers() {
        let c = check(vec![
            TableDifference {
                database: "shop".into(),
                rows: RowCountDifference {
                    table: "public.orders".into(),
                    restored: Some(9),
                    recorded: 10,
                },
            },
            TableDifference {
                database: "shop".into(),
                rows: RowCountDifference {
                    table: "public.gone".into(),
                    restored: None,
                    recorded: 3,
                },
            },
        ]);
        let mut out = String::new();
        database_check(&c, &mut out);
        assert_eq!(
            out,
            "    database check: app (0123abcd): archive listed, restored into a scratch database and counted\n\
             \x20   snapshot 0123abcd: shop: public.orders: 9 rows restored, 10 at backup time\n\
             \x20   snapshot 0123abcd: shop: public.gone: missing after the restore\n"
        );
        let json = serde_json::to_value(&c).expect("JSON");
        assert_eq!(
            json["checked"]["differences"][1],
            serde_json::json!({"database": "shop", "table": "public.gone", "restored": null, "recorded": 3})
        );
    }
}
