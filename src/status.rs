//! `strata status`: where each listener stands at its source, and what the history holds.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use strata_catalog::{CatalogState, QuarantinedObject};

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

/// Per table: segments, change rows, snapshots, watermark; then the quarantine list.
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
        "{:<40} {:>8} {:>12} {:>9}  {:<27}  watermark",
        "table", "segments", "change rows", "snapshots", "newest snapshot"
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
        println!(
            "{:<40} {:>8} {:>12} {:>9}  {:<27}  {watermark}",
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
