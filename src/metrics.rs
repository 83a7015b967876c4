//! Prometheus metrics of `strata run`, served as `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use strata_capture::postgres::CaptureStats;
use strata_compactor::CompactorStats;
use strata_query::{CoalesceStats, SnapshotStats};

use crate::gc::GcStats;
use tokio_util::sync::CancellationToken;

/// Reads a PostgreSQL listener's counters at scrape time.
#[derive(Debug)]
pub(crate) struct CaptureCollector {
    pub(crate) source: String,
    pub(crate) stats: Arc<CaptureStats>,
}

impl Collector for CaptureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let labels = [("source", self.source.as_str())];
        let counters = [
            (
                "strata_events_captured",
                "Change events queued to Kafka",
                s.events.load(Ordering::Relaxed),
            ),
            (
                "strata_transactions_captured",
                "Source transactions captured",
                s.transactions.load(Ordering::Relaxed),
            ),
            (
                "strata_event_bytes_captured",
                "Bytes of event values queued to Kafka",
                s.bytes.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshot_rows_read",
                "Rows read by the initial snapshot",
                s.snapshot.rows_done.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        let received = s.received_lsn.load(Ordering::Relaxed);
        let confirmed = s.confirmed_lsn.load(Ordering::Relaxed);
        let gauges = [
            (
                "strata_source_received_position",
                "Last WAL position received from the source",
                received as i64,
            ),
            (
                "strata_source_confirmed_position",
                "Last WAL position confirmed to the source (durable in Kafka)",
                confirmed as i64,
            ),
            (
                "strata_source_unconfirmed_bytes",
                "WAL bytes received but not yet durable in Kafka",
                received.saturating_sub(confirmed) as i64,
            ),
            (
                "strata_source_last_commit_timestamp_seconds",
                "Commit time of the last transaction captured",
                (s.last_commit_micros.load(Ordering::Relaxed) / 1_000_000) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Reads the compactor's counters at scrape time.
#[derive(Debug)]
pub(crate) struct CompactorCollector {
    pub(crate) stats: Arc<CompactorStats>,
    pub(crate) snapshots: Arc<SnapshotStats>,
    pub(crate) coalesce: Arc<CoalesceStats>,
    pub(crate) gc: Arc<GcStats>,
}

impl Collector for CompactorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        let counters = [
            (
                "strata_compactor_records",
                "Kafka records read",
                s.records_in,
            ),
            (
                "strata_compactor_events",
                "Change events decoded",
                s.events_in,
            ),
            (
                "strata_compactor_duplicates_dropped",
                "Copies of an event already kept (replicas, resends)",
                s.duplicates_dropped,
            ),
            (
                "strata_compactor_records_skipped",
                "Records that carry no change (tombstones, transaction markers)",
                s.records_skipped,
            ),
            (
                "strata_compactor_records_quarantined",
                "Records that could not be decoded, kept under _quarantine/",
                s.records_quarantined,
            ),
            (
                "strata_compactor_segments_written",
                "Parquet change segments written",
                s.segments_written,
            ),
            (
                "strata_compactor_rows_written",
                "Rows written to change segments",
                s.rows_written,
            ),
            (
                "strata_compactor_bytes_written",
                "Bytes of change segments written",
                s.bytes_written,
            ),
            (
                "strata_compactor_records_replayed",
                "Committed records re-read on taking a partition, for their ids (dedup)",
                s.records_replayed,
            ),
            (
                "strata_compactor_records_unbatched",
                "Kafka records read one at a time, not in chunks (partitions without a fetch queue; normally 0)",
                s.records_unbatched,
            ),
            ("strata_catalog_commits", "Catalog commits", s.commits),
            (
                "strata_catalog_commit_conflicts",
                "Catalog commits lost to another writer",
                s.conflicts,
            ),
            (
                "strata_snapshots",
                "Snapshots committed",
                self.snapshots.snapshots.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshot_rows",
                "Rows written into snapshots",
                self.snapshots.rows.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshot_bytes",
                "Bytes of snapshot files written",
                self.snapshots.bytes.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshot_failures",
                "Snapshot builds, counts or thinning commits that failed (retried next round)",
                self.snapshots.failures.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshots_removed",
                "Old snapshots removed by thinning (their files go with gc)",
                self.snapshots.removed.load(Ordering::Relaxed),
            ),
            (
                "strata_snapshot_bytes_removed",
                "Bytes of the snapshots removed by thinning",
                self.snapshots.removed_bytes.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_segments_replaced",
                "Small change segments replaced by coalesced ones",
                self.coalesce.segments_replaced.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_segments_written",
                "Coalesced change segments committed",
                self.coalesce.segments_written.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_rows",
                "Change rows written into coalesced segments",
                self.coalesce.rows.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_bytes",
                "Bytes of coalesced segments written",
                self.coalesce.bytes.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_copies_dropped",
                "Repeated copies of a change dropped while coalescing",
                self.coalesce.copies_dropped.load(Ordering::Relaxed),
            ),
            (
                "strata_coalesce_failures",
                "Coalescing groups that failed (planned again next round)",
                self.coalesce.failures.load(Ordering::Relaxed),
            ),
            (
                "strata_gc_runs",
                "Periodic garbage collections completed",
                self.gc.runs.load(Ordering::Relaxed),
            ),
            (
                "strata_gc_files_deleted",
                "History files no catalog commit references, deleted by the periodic gc",
                self.gc.files_deleted.load(Ordering::Relaxed),
            ),
            (
                "strata_gc_bytes_deleted",
                "Bytes of the files the periodic gc deleted",
                self.gc.bytes_deleted.load(Ordering::Relaxed),
            ),
            (
                "strata_gc_failures",
                "Periodic garbage collections that failed (retried next interval)",
                self.gc.failures.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            "strata_compactor_lag_records",
            "Records in the compactor's partitions not yet consumed",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.lag_records).encode(metric)?;
        Ok(())
    }
}

/// Serves `registry` on `listen` until `cancel` fires.
pub(crate) async fn serve(
    listen: SocketAddr,
    registry: Registry,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => ([(CONTENT_TYPE, "text/plain")], "encoding failed".to_owned()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on metrics.listen = {listen}"))?;
    tracing::info!(%listen, "metrics at /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .context("metrics server failed")
}
