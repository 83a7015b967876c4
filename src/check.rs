//! `strata check`: are the configured services reachable and set up the way strata needs?

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::config::{Config, KafkaConfig, PostgresSourceConfig, redact_url};
use crate::storage::Storage;

/// The outcome of one check.
#[derive(Debug)]
pub(crate) struct CheckResult {
    /// What was checked (`kafka`, `storage`, `source.postgres`).
    pub(crate) name: &'static str,
    /// Where.
    pub(crate) target: String,
    /// What was found, or why it failed.
    pub(crate) outcome: anyhow::Result<String>,
    /// How long it took.
    pub(crate) elapsed: Duration,
}

/// Runs every check and returns them all, failures included.
pub(crate) async fn run_checks(config: &Config) -> Vec<CheckResult> {
    let mut results = Vec::new();

    let started = Instant::now();
    let outcome = check_kafka(&config.kafka).await;
    results.push(CheckResult {
        name: "kafka",
        target: config.kafka.brokers.clone(),
        outcome,
        elapsed: started.elapsed(),
    });

    let started = Instant::now();
    let (target, outcome) = match Storage::open(&config.storage) {
        Ok(storage) => (storage.display.clone(), check_storage(&storage).await),
        Err(e) => (config.storage.url.clone(), Err(e)),
    };
    results.push(CheckResult {
        name: "storage",
        target,
        outcome,
        elapsed: started.elapsed(),
    });

    if let Some(pg) = &config.source.postgres {
        let started = Instant::now();
        let outcome = check_postgres(pg).await;
        results.push(CheckResult {
            name: "source.postgres",
            target: redact_url(&pg.url),
            outcome,
            elapsed: started.elapsed(),
        });
    }
    results
}

/// Asks the brokers for cluster metadata.
async fn check_kafka(kafka: &KafkaConfig) -> anyhow::Result<String> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &kafka.client_id);
    for (key, value) in &kafka.properties {
        client.set(key, value);
    }
    let consumer: BaseConsumer = client.create().context("cannot create a Kafka client")?;
    let timeout = kafka.connect_timeout;
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, timeout))
        .await
        .context("Kafka metadata task failed")?
        .with_context(|| {
            format!(
                "no Kafka broker answered at {} within {timeout:?}",
                kafka.brokers
            )
        })?;
    Ok(format!(
        "{} broker(s), {} topic(s)",
        metadata.brokers().len(),
        metadata.topics().len()
    ))
}

/// Writes, re-writes with put-if-absent (which must fail), reads and deletes a probe object.
async fn check_storage(storage: &Storage) -> anyhow::Result<String> {
    let probe = storage.root.clone().join("_strata_check").join(format!(
        "probe-{}-{}",
        std::process::id(),
        now_micros()
    ));
    let body = PutPayload::from_static(b"strata check");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    storage
        .store
        .put_opts(&probe, body.clone(), create.clone())
        .await
        .with_context(|| format!("cannot write {probe} in {}", storage.display))?;
    let second = storage.store.put_opts(&probe, body, create).await;
    let conditional = match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e).context("put-if-absent of an existing object failed oddly"),
        Ok(_) => Err(anyhow::anyhow!(
            "the store overwrote an existing object despite put-if-absent: the catalog needs \
             conditional writes (If-None-Match)"
        )),
    };
    let read = storage.store.get(&probe).await;
    let _ = storage.store.delete(&probe).await;
    conditional?;
    let bytes = read
        .with_context(|| format!("cannot read back {probe}"))?
        .bytes()
        .await?;
    if bytes.as_ref() != b"strata check" {
        bail!("read back different bytes from {probe}");
    }
    Ok("read/write ok, put-if-absent honoured".into())
}

/// Connects, and checks `wal_level` and the replication attribute.
async fn check_postgres(pg: &PostgresSourceConfig) -> anyhow::Result<String> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(&pg.url, tokio_postgres::NoTls),
    )
    .await
    .context("timed out connecting")?
    .context("cannot connect")?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), pg_current_wal_lsn()::text, \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
             current_setting('server_version')",
            &[],
        )
        .await
        .context("cannot read wal_level")?;
    drop(client);
    let _ = connection.await;
    let wal_level: String = row.get(0);
    let lsn: String = row.get(1);
    let can_replicate: bool = row.get(2);
    let version: String = row.get(3);
    if wal_level != "logical" {
        bail!("wal_level is `{wal_level}`; logical replication needs wal_level = logical");
    }
    if !can_replicate {
        bail!("the user has no REPLICATION attribute");
    }
    Ok(format!(
        "PostgreSQL {version}, wal_level=logical, WAL at {lsn}"
    ))
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}
