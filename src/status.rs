//! `strata status`: where each listener stands at its source, and what the history holds.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use strata_catalog::{CatalogState, QuarantinedObject, TableId};
use strata_query::snapshot::{SnapshotConfig, changes_needed, pending_changes};

use crate::config::{Config, redact_url};
use crate::run::kafka_client;
use crate::storage::Storage;

/// How long `status` waits for a broker's answer about one partition.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints the PostgreSQL slot's position and lag, then the history's tables and quarantine.
/// Returns false when something is wrong.
pub(crate) async fn status(config: &Config) -> anyhow::Result<bool> {
    let source = source_status(config).await?;
    println!();
    history_status(config).await?;
    Ok(source)
}

/// Per topic the compactor group (`compactor.group_id`) has committed: the records the brokers
/// hold past the catalog's offsets, i.e. what is in Kafka but not yet in the history.
async fn compactor_lag(config: &Config, state: &CatalogState) {
    let group = config.compactor.group_id.clone();
    let offsets: Vec<(String, i32, i64)> = state
        .group_offsets(&group)
        .map(|(topic, partition, next)| (topic.to_owned(), partition, next))
        .collect();
    if offsets.is_empty() {
        println!("compactor       group {group}: nothing committed yet");
        return;
    }
    let client = kafka_client(&config.kafka);
    let lags = tokio::task::spawn_blocking(move || -> Result<Vec<(String, i64)>, String> {
        let consumer: BaseConsumer = client.create().map_err(|e| e.to_string())?;
        let mut per_topic: Vec<(String, i64)> = Vec::new();
        for (topic, partition, next) in offsets {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
                .map_err(|e| format!("{topic}/{partition}: {e}"))?;
            let lag = (high - next).max(0);
            match per_topic.last_mut() {
                Some((t, total)) if *t == topic => *total += lag,
                _ => per_topic.push((topic, lag)),
            }
        }
        Ok(per_topic)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match lags {
        Ok(lags) => {
            let total: i64 = lags.iter().map(|(_, lag)| lag).sum();
            println!(
                "compactor       group {group}: lag {total} records (in Kafka, not yet in the history)"
            );
            for (topic, lag) in lags {
                println!("  {topic:<52} lag {lag}");
            }
        }
        Err(e) => println!("compactor       group {group}: lag unknown (Kafka: {e})"),
    }
}

/// Per table: segments, change rows, snapshots, watermark, and the changes since the snapshot
/// reads start from against the changes that make the next one due; then the quarantine list.
/// The changes are the catalog's count: with segments that straddle an end of the range (some
/// of their rows in it, the catalog does not say how many) it is shown as a range, `N..M`.
async fn history_status(config: &Config) -> anyhow::Result<()> {
    let storage = Storage::open(&config.storage)?;
    let catalog = storage.catalog().await?;
    let state = catalog.state();
    println!(
        "history         {} (catalog version {})",
        storage.display,
        state.version()
    );
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us).map_or_else(
            || us.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        )
    };
    println!(
        "{:<40} {:>8} {:>12} {:>9}  {:<27}  {:<27}  changes/next snapshot at",
        "table", "segments", "change rows", "snapshots", "newest snapshot", "watermark"
    );
    for table in state.tables() {
        let Some(t) = state.table(table) else {
            continue;
        };
        let rows: u64 = t.segments().iter().map(|e| e.segment.rows).sum();
        let newest = t
            .snapshots()
            .last()
            .map_or_else(|| "-".to_owned(), |s| time(s.as_of_ts));
        let watermark = t.watermark().map_or_else(|| "-".to_owned(), time);
        let next = next_snapshot(&state, table, &config.snapshots);
        println!(
            "{:<40} {:>8} {:>12} {:>9}  {:<27}  {watermark:<27}  {next}",
            table.to_string(),
            t.segments().len(),
            rows,
            t.snapshots().len(),
            newest
        );
    }
    compactor_lag(config, &state).await;
    let quarantine = state.quarantine();
    if quarantine.is_empty() {
        println!("quarantine      empty");
    } else {
        println!(
            "quarantine      {} entries (see {}/_quarantine/), newest first:",
            quarantine.len(),
            storage.display
        );
        for entry in quarantine.iter().rev().take(20) {
            let what = match &entry.object {
                QuarantinedObject::Object { path } => format!("object {path}"),
                QuarantinedObject::KafkaRecord {
                    topic,
                    partition,
                    offset,
                } => format!("record {topic}/{partition}@{offset}"),
            };
            println!("  {}  {what}: {}", time(entry.at_ts), entry.reason);
        }
    }
    Ok(())
}

/// A table's changes toward its next snapshot: `N/needed`, `N..M/needed` when segments
/// straddle an end of the range, `-` when the newest snapshot reaches the watermark (or there
/// is no watermark), `off` when snapshots are disabled.
fn next_snapshot(state: &CatalogState, table: &TableId, config: &SnapshotConfig) -> String {
    if !config.enabled {
        return "off".to_owned();
    }
    let Some(p) = pending_changes(state, table) else {
        return "-".to_owned();
    };
    let needed = changes_needed(config, p.since_rows);
    if p.straddling.is_empty() {
        format!("{}/{needed}", p.inside)
    } else {
        format!("{}..{}/{needed}", p.inside, p.at_most())
    }
}

/// Prints the PostgreSQL slot's position and lag. Returns false when something is wrong.
async fn source_status(config: &Config) -> anyhow::Result<bool> {
    let Some(pg) = &config.source.postgres else {
        println!("no source configured");
        return Ok(true);
    };
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(&pg.url)))?;
    tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT s.active, s.confirmed_flush_lsn::text, \
                    (pg_current_wal_lsn() - s.confirmed_flush_lsn)::int8, \
                    (pg_current_wal_lsn() - s.restart_lsn)::int8, \
                    s.wal_status, \
                    EXTRACT(EPOCH FROM r.flush_lag)::float8, \
                    EXTRACT(EPOCH FROM (now() - r.reply_time))::float8 \
             FROM pg_replication_slots s \
             LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&pg.slot_name],
        )
        .await
        .context("cannot read pg_replication_slots")?;
    let Some(row) = row else {
        println!(
            "source.postgres {}: slot {} does not exist yet (strata run creates it)",
            pg.name, pg.slot_name
        );
        return Ok(true);
    };
    let active: bool = row.get(0);
    let confirmed: Option<String> = row.get(1);
    let lag_bytes: Option<i64> = row.get(2);
    let retained: Option<i64> = row.get(3);
    let wal_status: Option<String> = row.get(4);
    let flush_lag: Option<f64> = row.get(5);
    let since_reply: Option<f64> = row.get(6);
    let seconds = match (active, lag_bytes, flush_lag) {
        (_, Some(0), _) => "0.0 s".to_owned(),
        (true, _, Some(lag)) => format!("{lag:.1} s"),
        (true, _, None) => "0.0 s".to_owned(),
        (false, _, _) => "unknown (no listener connected)".to_owned(),
    };
    println!("source          {}", pg.name);
    println!(
        "slot            {} ({})",
        pg.slot_name,
        if active { "active" } else { "inactive" }
    );
    println!("confirmed       {}", confirmed.as_deref().unwrap_or("-"));
    println!(
        "lag             {} bytes, {seconds}",
        lag_bytes.unwrap_or(0)
    );
    println!(
        "WAL retained    {} bytes ({})",
        retained.unwrap_or(0),
        wal_status.as_deref().unwrap_or("-")
    );
    if let Some(since) = since_reply {
        println!("last feedback   {since:.1} s ago");
    }
    Ok(wal_status.as_deref() != Some("lost"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use serde_json::json;
    use strata_catalog::{
        Action, Catalog, CatalogConfig, ChangeEvent, CommitInfo, ConnectType, Row, Watermark,
    };
    use strata_query::snapshot::build_snapshot;
    use strata_query::testing::{add_segment, insert, table_schema};

    use super::*;

    /// 2026-11-25T10:00:00Z in µs.
    const T0: i64 = 1_795_600_800_000_000;
    const SECOND: i64 = 1_000_000;

    fn orders() -> TableId {
        TableId::new("pg-main", "public", "orders")
    }

    /// Inserts of `ids`, committed at T0 + `second` s.
    fn inserts(ids: std::ops::RangeInclusive<i32>, second: i64) -> Vec<ChangeEvent> {
        ids.map(|id| {
            let key: Row = [("id", json!(id))].into_iter().collect();
            let position = (
                u64::try_from(second).expect("second") * 100,
                u64::try_from(id).expect("id"),
            );
            insert(orders(), key.clone(), key, T0 + second * SECOND, position)
        })
        .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_counts_the_changes_toward_the_next_snapshot() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let catalog = Catalog::open(
            Arc::clone(&store),
            Path::from("h"),
            CatalogConfig::default(),
        )
        .await
        .expect("catalog");
        let catalog = Arc::new(catalog);
        let schema = table_schema(orders(), &[("id", ConnectType::Int32, true)]);
        let watermark = |second: i64| {
            let catalog = Arc::clone(&catalog);
            async move {
                let action = Action::SetWatermark(Watermark {
                    table: orders(),
                    ts: T0 + second * SECOND,
                });
                catalog
                    .commit(vec![action], CommitInfo::new("test", "watermark"))
                    .await
                    .expect("watermark");
            }
        };
        let config = SnapshotConfig {
            min_changes: 3,
            min_change_ratio: 0.5,
            ..SnapshotConfig::default()
        };
        let next = || next_snapshot(&catalog.state(), &orders(), &config);
        // One segment: 10 inserts at 1 s, 2 at 20 s; the watermark at 10 s lies inside it.
        let mut events = inserts(1..=10, 1);
        events.extend(inserts(11..=12, 20));
        add_segment(&catalog, &store, &schema, &events)
            .await
            .expect("segment");
        assert_eq!(next(), "-", "no watermark yet");
        watermark(10).await;
        assert_eq!(next(), "0..12/3", "the segment straddles the watermark");
        // A snapshot of the 10 rows up to 10 s; then 4 inserts at 30 s in a segment of their
        // own, and the watermark past them.
        let snapshot = build_snapshot(&catalog, &store, &orders(), T0 + 10 * SECOND - 1, &config)
            .await
            .expect("snapshot");
        assert_eq!(snapshot.rows, 10);
        assert_eq!(next(), "-", "the snapshot reaches the watermark");
        add_segment(&catalog, &store, &schema, &inserts(13..=16, 30))
            .await
            .expect("segment");
        watermark(40).await;
        // Half of the snapshot's 10 rows is needed, more than min_changes; the first segment
        // still straddles (its 2 rows at 20 s count, its 10 at 1 s do not).
        assert_eq!(next(), "4..16/5");
        let off = SnapshotConfig {
            enabled: false,
            ..config.clone()
        };
        assert_eq!(next_snapshot(&catalog.state(), &orders(), &off), "off");
    }
}
