//! Checks of a restored database: its row counts (and checksums) against the
//! backup's, and a restore test into a scratch database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::pipeline::ChunkSource;

use super::*;

/// The entry with the row checksums of every database of a snapshot, when its
/// source has `checksums: true`. One entry for all databases, named after none: a
/// build that does not know it finds no archive in it, whatever the names.
pub const CHECKSUMS: &str = "checksums.json";

/// How [`CHECKSUMS`] computes a table's checksum: the sum, as an exact number, of
/// the first 60 bits of the md5 of each row's text (with [`stable_row_text`]).
/// Order does not count; a reader compares only checksums of a method it knows.
pub const CHECKSUM_METHOD: &str = "sum-md5-60";

/// The [`CHECKSUMS`] entry: per database, per table (`schema.table`), the checksum
/// of its rows in decimal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    pub method: String,
    pub databases: BTreeMap<String, BTreeMap<String, String>>,
}

/// Makes a row's text the same in every session and on every server: time zone,
/// date, interval, float, bytea and money output, and names of objects (`regclass`)
/// always qualified. The backup's session and the drill's both read rows with it.
pub async fn stable_row_text(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; \
             SET search_path = ''",
        )
        .await
}

/// Every user table's rows as read by [`table_rows`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows {
    /// Exact row counts (`schema.table` → rows).
    pub counts: BTreeMap<String, i64>,
    /// The checksum of each table's rows ([`CHECKSUM_METHOD`]), when asked for.
    pub checksums: BTreeMap<String, String>,
}

/// Exact row counts of every user table and, with `checksums`, the checksum of its
/// rows, read in the same pass (each table once), with [`stable_row_text`] set.
pub async fn table_rows(
    client: &tokio_postgres::Client,
    checksums: bool,
) -> Result<TableRows, tokio_postgres::Error> {
    if checksums {
        stable_row_text(client).await?;
    }
    let tables = client
        .query(
            "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut rows = TableRows::default();
    for t in tables {
        let (schema, table, quoted): (String, String, String) = (t.get(0), t.get(1), t.get(2));
        let name = format!("{schema}.{table}");
        // `(r.*)`, the whole row: a bare `r` would be a column of that name.
        let sql = match checksums {
            true => format!(
                "SELECT count(*), coalesce(sum(('x' || substr(md5((r.*)::text), 1, 15))\
                 ::bit(60)::bigint::numeric), 0)::text FROM {quoted} AS r"
            ),
            false => format!("SELECT count(*) FROM {quoted}"),
        };
        let row = client.query_one(&sql, &[]).await?;
        rows.counts.insert(name.clone(), row.get(0));
        if checksums {
            rows.checksums.insert(name, row.get(1));
        }
    }
    Ok(rows)
}

/// A table whose rows in the scratch restore differ from those counted at backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowCountDifference {
    pub table: String,
    /// Rows restored; `None` when the table is missing after the restore.
    pub restored: Option<i64>,
    /// Rows counted at backup time.
    pub recorded: i64,
}

/// Restores an archive into a scratch database on the same server (as `feed` says),
/// compares its row counts with those recorded at backup time, and drops it. Returns
/// the differences (empty when all match).
pub async fn restore_test(
    conn: &Connection,
    tools: &Tools,
    archive: &Archive,
    feed: &Feed,
    recorded: &BTreeMap<String, i64>,
    source: &mut (dyn ChunkSource + Send),
) -> Result<Vec<RowCountDifference>, Failure> {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    let scratch = format!(
        "backplan_verify_{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let target = RestoreTarget {
        conn: conn.clone(),
        database: scratch.clone(),
        clean: false,
        tables: Vec::new(),
        schemas: Vec::new(),
    };
    // Made like the source's database: its encoding and locale.
    let props = tokio::task::block_in_place(|| database_properties(tools, archive, feed, source))?;
    ready_target(&target, props.creation()).await?;
    let restored =
        tokio::task::block_in_place(|| restore_database(&target, tools, archive, feed, source));
    let counted = match restored {
        Ok(_) => match conn.with_database(&scratch).client().await {
            Ok(client) => table_rows(&client, false)
                .await
                .map(|r| r.counts)
                .map_err(|e| db_error(conn, &e)),
            Err(f) => Err(f),
        },
        Err(f) => Err(f),
    };
    // The scratch database goes whatever happened above.
    let maintenance = conn.with_database("postgres").client().await?;
    let _ = maintenance
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{scratch}\""))
        .await;
    match counted {
        Ok(counts) => Ok(recorded
            .iter()
            .filter(|(table, want)| counts.get(*table) != Some(want))
            .map(|(table, want)| RowCountDifference {
                table: table.clone(),
                restored: counts.get(table).copied(),
                recorded: *want,
            })
            .collect()),
        Err(f) => Err(f),
    }
}
