//! Checks of a restored database: its row counts against the backup's, and a
//! restore test into a scratch database.

use std::collections::BTreeMap;

use crate::error::Failure;
use crate::pipeline::ChunkSource;

use super::*;

/// Exact row counts of every user table (`schema.table` → rows).
pub async fn row_counts(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let tables = client
        .query(
            "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut counts = BTreeMap::new();
    for t in tables {
        let (schema, table, quoted): (String, String, String) = (t.get(0), t.get(1), t.get(2));
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await?
            .get(0);
        counts.insert(format!("{schema}.{table}"), n);
    }
    Ok(counts)
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
) -> Result<Vec<String>, Failure> {
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
            Ok(client) => row_counts(&client).await.map_err(|e| db_error(conn, &e)),
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
        Ok(counts) => {
            let mut diffs = Vec::new();
            for (table, want) in recorded {
                match counts.get(table) {
                    Some(got) if got == want => {}
                    Some(got) => diffs.push(format!(
                        "{table}: {got} rows restored, {want} at backup time"
                    )),
                    None => diffs.push(format!("{table}: missing after the restore")),
                }
            }
            Ok(diffs)
        }
        Err(f) => Err(f),
    }
}
