//! `strata run`: the configured listeners and the compactor, until SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use strata_capture::postgres::{CaptureStats, PostgresCapture};
use strata_capture::sink::SinkConfig;
use strata_compactor::Compactor;
use strata_query::{Coalescer, Snapshotter};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KafkaConfig, RunPart};
use crate::gc::{self, GcStats};
use crate::metrics::{self, CaptureCollector, CompactorCollector};
use crate::storage::Storage;

/// How long running work gets to finish after a stop signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// librdkafka settings from `[kafka]`.
pub(crate) fn kafka_client(kafka: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &kafka.client_id);
    for (key, value) in &kafka.properties {
        client.set(key, value);
    }
    client
}

/// Runs the configured parts until a stop signal or an error.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let mut registry = Registry::default();
    let mut progress = None;

    if config.run.parts.contains(&RunPart::Capture) {
        let Some(pg) = config.source.postgres.clone() else {
            bail!(
                "run.parts includes \"capture\" but the configuration has no [source.postgres] \
                 section"
            );
        };
        let sink = SinkConfig {
            client: kafka_client(&config.kafka),
            connect_timeout: config.kafka.connect_timeout,
            partitions: config.kafka.partitions,
            replication_factor: config.kafka.replication_factor,
            format: config.kafka.format,
            schema_topic: config.kafka.schema_topic.clone(),
        };
        let source_name = pg.name.clone();
        let capture = PostgresCapture::new(pg, sink, &config.kafka.topic_prefix)
            .await
            .with_context(|| format!("source.postgres ({source_name})"))?;
        let stats = capture.stats();
        tracing::info!(
            source = %source_name,
            topics = %format!("{}.*", capture.server_name()),
            "capture starting"
        );
        registry.register_collector(Box::new(CaptureCollector {
            source: source_name.clone(),
            stats: Arc::clone(&stats),
        }));
        let task_cancel = cancel.clone();
        tasks.spawn(async move {
            capture
                .run(task_cancel)
                .await
                .with_context(|| format!("source.postgres ({source_name})"))?;
            Ok("capture")
        });
        progress = Some(tokio::spawn(show_snapshot_progress(stats, cancel.clone())));
    }

    if config.run.parts.contains(&RunPart::Compactor) {
        let storage = Storage::open(&config.storage)?;
        let catalog = storage.catalog().await?;
        let catalog = Arc::new(catalog);
        let compactor = Compactor::new(
            strata_compactor::CompactorConfig {
                // Avro writer schemas are read where the capture writes them.
                schema_topic: config.kafka.schema_topic.clone(),
                ..config.compactor.clone()
            },
            kafka_client(&config.kafka),
            Arc::clone(&catalog),
            Arc::clone(&storage.store),
        )
        .context("compactor")?;
        let snapshotter = Snapshotter::new(
            Arc::clone(&catalog),
            Arc::clone(&storage.store),
            config.snapshots.clone(),
        )
        .context("snapshots")?;
        let coalescer =
            Coalescer::new(catalog, Arc::clone(&storage.store), config.coalesce.clone())
                .context("coalesce")?;
        let gc_stats = Arc::new(GcStats::default());
        registry.register_collector(Box::new(CompactorCollector {
            stats: compactor.stats(),
            snapshots: snapshotter.stats(),
            coalesce: coalescer.stats(),
            gc: Arc::clone(&gc_stats),
        }));
        tracing::info!(
            storage = %storage.display,
            topics = ?config.compactor.topics,
            group = %config.compactor.group_id,
            "compactor starting"
        );
        let task_cancel = cancel.clone();
        tasks.spawn(async move {
            compactor.run(task_cancel).await.context("compactor")?;
            Ok("compactor")
        });
        let task_cancel = cancel.clone();
        tasks.spawn(async move {
            snapshotter.run(task_cancel).await.context("snapshots")?;
            Ok("snapshots")
        });
        let task_cancel = cancel.clone();
        tasks.spawn(async move {
            coalescer.run(task_cancel).await.context("coalesce")?;
            Ok("coalesce")
        });
        let (gc_storage, gc_config, task_stats, task_cancel) = (
            storage.clone(),
            config.gc.clone(),
            Arc::clone(&gc_stats),
            cancel.clone(),
        );
        tasks.spawn(async move {
            gc::run_periodically(gc_storage, gc_config, task_stats, task_cancel)
                .await
                .context("gc")?;
            Ok("gc")
        });
    }

    if config.metrics.enabled {
        let listen = config.metrics.listen;
        let task_cancel = cancel.clone();
        tasks.spawn(async move {
            metrics::serve(listen, registry, task_cancel).await?;
            Ok("metrics")
        });
    }

    let outcome = tokio::select! {
        () = stop_signal() => {
            tracing::info!("stop requested: draining");
            None
        }
        done = tasks.join_next() => done,
    };
    cancel.cancel();
    let mut result = match outcome {
        Some(Ok(Ok(part))) => {
            tracing::info!(part, "stopped");
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("a task panicked: {e}")),
        None => Ok(()),
    };
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done
                && result.is_ok()
            {
                result = Err(e);
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("work did not stop within {DRAIN_DEADLINE:?}: aborting it");
        tasks.abort_all();
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    result
}

/// Draws the snapshot's progress on stderr (hidden when stderr is not a terminal).
async fn show_snapshot_progress(stats: Arc<CaptureStats>, cancel: CancellationToken) {
    let snapshot = &stats.snapshot;
    let mut bar: Option<ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let total_chunks = snapshot.chunks_total.load(Ordering::Relaxed);
        if total_chunks == 0 {
            continue;
        }
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(snapshot.rows_estimated.load(Ordering::Relaxed).max(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "snapshot {bar:30} {human_pos}/{human_len} rows  {per_sec}  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let done = snapshot.rows_done.load(Ordering::Relaxed);
        if done > bar.length().unwrap_or(0) {
            bar.set_length(done);
        }
        bar.set_position(done);
        let chunks = snapshot.chunks_done.load(Ordering::Relaxed);
        bar.set_message(format!("chunks {chunks}/{total_chunks}"));
        if chunks >= total_chunks {
            bar.finish();
            break;
        }
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
