//! `strata status`: where each listener stands at its source.

use anyhow::Context as _;

use crate::config::{Config, redact_url};

/// Prints the PostgreSQL slot's position and lag. Returns false when something is wrong.
pub(crate) async fn status(config: &Config) -> anyhow::Result<bool> {
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
