//! Shared fixtures: service addresses from the environment, unique names per test, and for the
//! PostgreSQL capture a `strata run` child with its own slot, publication, tables and topics, and a
//! reader of the events it publishes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

/// Reads a service address the stack exports; a missing one fails the test, loudly.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs the real services. Start them with \
             `eval \"$(dev/stack up)\"` (or run `.ci/run`)."
        ),
    }
}

/// The stack's Kafka bootstrap brokers.
pub fn kafka_brokers() -> String {
    service_env("STRATA_KAFKA_BROKERS")
}

/// The stack's PostgreSQL URL.
pub fn pg_url() -> String {
    service_env("STRATA_PG_URL")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The stack's S3 settings, as `(endpoint, bucket, key id, secret, region)`.
pub fn s3_settings() -> (String, String, String, String, String) {
    (
        service_env("STRATA_S3_ENDPOINT"),
        service_env("STRATA_S3_BUCKET"),
        service_env("STRATA_S3_ACCESS_KEY_ID"),
        service_env("STRATA_S3_SECRET_ACCESS_KEY"),
        service_env("STRATA_S3_REGION"),
    )
}

/// The stack's S3 bucket through object_store, and a fresh prefix in it for this test.
pub fn s3_store() -> (Arc<dyn ObjectStore>, Path) {
    let (endpoint, bucket, key, secret, region) = s3_settings();
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_region(region)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("S3 settings from the stack build a client");
    (Arc::new(store), Path::from(unique("e2e")))
}

// ------------------------------------------------------------------------------------------------
// PostgreSQL capture: `strata run` as a child process, its slot/publication/tables/topics cleaned up
// on drop, and a reader of the Debezium events it publishes.
// ------------------------------------------------------------------------------------------------

/// A plain SQL connection to the stack's PostgreSQL.
/// A local storage directory (strata's root) as an object store, and the catalog in it.
pub async fn open_local(
    dir: &std::path::Path,
) -> (Arc<dyn ObjectStore>, Arc<strata_catalog::Catalog>) {
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap());
    let catalog = strata_catalog::Catalog::open(
        Arc::clone(&store),
        Path::default(),
        strata_catalog::CatalogConfig::default(),
    )
    .await
    .unwrap();
    (store, Arc::new(catalog))
}

pub async fn pg_connect() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// `X/Y` (PostgreSQL's text form of an LSN) as a number.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("odd LSN {text}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// A walsender streams from it.
    pub active: bool,
    /// Its `confirmed_flush_lsn`.
    pub confirmed_flush: Option<u64>,
}

/// The slot's state, or `None` when it does not exist.
pub async fn slot_state(client: &tokio_postgres::Client, slot: &str) -> Option<SlotState> {
    client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .map(|row| SlotState {
            active: row.get(0),
            confirmed_flush: row.get::<_, Option<String>>(1).map(|l| parse_lsn(&l)),
        })
}

/// One test's PostgreSQL capture: a source, slot and publication named for it alone, tables named
/// `<source>_<name>`, a scratch directory. Dropping it drops the slot and any other slot whose name
/// starts with the source's (a leftover slot pins WAL for ever), the publication, the tables and
/// the topics, also when the test panicked.
#[derive(Debug)]
pub struct PgCapture {
    /// `source.postgres.name`; also the slot and the publication name.
    pub source: String,
    dir: tempfile::TempDir,
    runs: AtomicUsize,
}

impl PgCapture {
    /// A fresh capture; `tag` (a few lowercase letters) says which test it belongs to.
    pub fn new(tag: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            source: format!("e2e_{tag}_{}", &id[..12]),
            dir: tempfile::tempdir().unwrap(),
            runs: AtomicUsize::new(0),
        }
    }

    /// The replication slot strata creates.
    pub fn slot(&self) -> &str {
        &self.source
    }

    /// The publication strata creates.
    pub fn publication(&self) -> &str {
        &self.source
    }

    /// The name of this test's table `name` (in schema `public`).
    pub fn table(&self, name: &str) -> String {
        format!("{}_{name}", self.source)
    }

    /// The topic of table `name`: `strata.<source>.public.<source>_<name>`.
    pub fn topic(&self, name: &str) -> String {
        format!("strata.{}.public.{}", self.source, self.table(name))
    }

    /// This test's schema topic for `kafka.format = "avro"` (`kafka.schema_topic`), dropped with
    /// its other topics.
    pub fn schema_topic(&self) -> String {
        format!("_strata_schemas.{}", self.source)
    }

    /// The environment of a `strata` child capturing `tables` (short names): only these STRATA_*
    /// variables, the capture alone (no compactor), metrics off, storage in memory. `extra` adds or
    /// overrides variables.
    pub fn env(&self, tables: &[&str], extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let tables: Vec<String> = tables
            .iter()
            .map(|t| format!("\"public.{}\"", self.table(t)))
            .collect();
        let mut env: Vec<(String, String)> = vec![
            ("STRATA_KAFKA__BROKERS".into(), kafka_brokers()),
            ("STRATA_RUN__PARTS".into(), r#"["capture"]"#.into()),
            ("STRATA_STORAGE__URL".into(), "memory://".into()),
            ("STRATA_METRICS__ENABLED".into(), "false".into()),
            ("STRATA_SOURCE__POSTGRES__URL".into(), pg_url()),
            ("STRATA_SOURCE__POSTGRES__NAME".into(), self.source.clone()),
            (
                "STRATA_SOURCE__POSTGRES__SLOT_NAME".into(),
                self.slot().to_owned(),
            ),
            (
                "STRATA_SOURCE__POSTGRES__PUBLICATION_NAME".into(),
                self.publication().to_owned(),
            ),
            (
                "STRATA_SOURCE__POSTGRES__TABLES".into(),
                format!("[{}]", tables.join(", ")),
            ),
            ("NO_COLOR".into(), "1".into()),
        ];
        for (var, value) in extra {
            env.retain(|(v, _)| v != var);
            env.push(((*var).to_owned(), (*value).to_owned()));
        }
        env
    }

    /// Starts `strata <args>` with exactly `env` (no STRATA_* variable of the caller leaks in);
    /// stdout and stderr go to files in the scratch directory.
    pub fn spawn(&self, args: &[&str], env: &[(String, String)]) -> Strata {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let stdout = self.dir.path().join(format!("strata-{run}.out"));
        let stderr = self.dir.path().join(format!("strata-{run}.err"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (var, _) in std::env::vars() {
            if var.starts_with("STRATA_") || var == "RUST_LOG" {
                cmd.env_remove(var);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().unwrap();
        Strata {
            child,
            stdout,
            stderr,
        }
    }

    /// `strata run` capturing `tables`, with `extra` environment.
    pub fn run(&self, tables: &[&str], extra: &[(&str, &str)]) -> Strata {
        self.spawn(&["run"], &self.env(tables, extra))
    }

    /// `strata run` capturing `tables`, once it streams changes (snapshot done).
    pub async fn run_streaming(&self, tables: &[&str], extra: &[(&str, &str)]) -> Strata {
        let strata = self.run(tables, extra);
        strata
            .wait_for_log("streaming changes", Duration::from_secs(120))
            .await;
        strata
    }

    /// Waits until no walsender streams from the slot (after a listener died).
    pub async fn wait_slot_inactive(&self, client: &tokio_postgres::Client, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match slot_state(client, self.slot()).await {
                Some(SlotState { active: true, .. }) => {}
                _ => return,
            }
            assert!(
                Instant::now() < deadline,
                "slot {} still active {timeout:?} after its listener died",
                self.slot()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgCapture {
    fn drop(&mut self) {
        let source = self.source.clone();
        // Runs on a thread of its own: the test's runtime may be gone or busy.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(cleanup(&source))
        })
        .join();
        match cleaned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of {}: {e}", self.source),
            Err(_) => eprintln!("cleanup of {} panicked", self.source),
        }
    }
}

/// Drops the slots named after a capture (ending their walsenders first), its publication, its
/// tables and its topics.
async fn cleanup(source: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = client
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                   WHERE starts_with(slot_name, '{source}') AND active_pid IS NOT NULL;
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                   WHERE starts_with(slot_name, '{source}');"
            ))
            .await;
        match dropped {
            Ok(()) => break,
            // "is active for PID …": the walsender has not exited yet.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot drop slot {source}: {e}")),
        }
    }
    let tables: Vec<String> = client
        .query(
            "SELECT quote_ident(tablename) FROM pg_tables \
             WHERE schemaname = 'public' AND starts_with(tablename, $1)",
            &[&format!("{source}_")],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sql = format!("DROP PUBLICATION IF EXISTS {source};");
    for table in tables {
        sql.push_str(&format!("DROP TABLE IF EXISTS public.{table};"));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| e.to_string())?;

    let brokers = kafka_brokers();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let prefix = format!("strata.{source}.");
    let schema_topic = format!("_strata_schemas.{source}");
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with(&prefix) || *t == schema_topic)
        .collect();
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        admin
            .delete_topics(&names, &AdminOptions::new())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A running `strata` child. Dropping it kills it (SIGKILL).
#[derive(Debug)]
pub struct Strata {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Strata {
    /// What it wrote to stderr (its log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until its log contains `needle`; fails if it exits first or `timeout` passes.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            let exited = std::process::Command::new("kill")
                .args(["-0", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| !s.success());
            assert!(
                !exited,
                "strata exited before logging {needle:?}:\n{}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "strata did not log {needle:?} within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: asks it to stop gracefully.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for it to exit; fails after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "strata still running after {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A change event as a consumer reads it: the `payload` of the Kafka key and value.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The key's payload (`{"id": 1}`); `None` for events without a key (truncate).
    pub key: Option<Value>,
    /// The value's payload (`{"before", "after", "source", "op", "ts_ms", "transaction"}`).
    pub value: Value,
}

#[derive(Deserialize)]
struct Wire<P> {
    payload: P,
}

impl ChangeEvent {
    /// Decodes a Kafka message of a strata topic, failing on anything else.
    pub fn decode(message: &BorrowedMessage<'_>) -> Self {
        let value = message.payload().unwrap_or_else(|| {
            panic!(
                "message without a value at {}/{}",
                message.partition(),
                message.offset()
            )
        });
        let value: Wire<Value> = serde_json::from_slice(value).unwrap_or_else(|e| {
            panic!(
                "value is not a JSON envelope ({e}): {}",
                String::from_utf8_lossy(value)
            )
        });
        let key = message.key().map(|k| {
            serde_json::from_slice::<Wire<Value>>(k)
                .unwrap_or_else(|e| panic!("key is not a JSON envelope ({e})"))
                .payload
        });
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key,
            value: value.payload,
        }
    }

    /// `c`, `u`, `d`, `r` or `t`.
    pub fn op(&self) -> &str {
        self.value["op"].as_str().unwrap()
    }

    /// The row before the change (`null` when there is none).
    pub fn before(&self) -> &Value {
        &self.value["before"]
    }

    /// The row after the change (`null` when there is none).
    pub fn after(&self) -> &Value {
        &self.value["after"]
    }

    /// `payload.source`.
    pub fn source(&self) -> &Value {
        &self.value["source"]
    }

    /// `source.lsn`.
    pub fn lsn(&self) -> u64 {
        self.source()["lsn"].as_u64().unwrap()
    }

    /// `source.commit_lsn`.
    pub fn commit_lsn(&self) -> u64 {
        self.source()["commit_lsn"].as_u64().unwrap()
    }

    /// `source.txId`.
    pub fn tx_id(&self) -> Option<u64> {
        self.source()["txId"].as_u64()
    }
}

/// Reads every message of one topic from the beginning, decoding each with `decode`.
pub struct TopicReader<E = ChangeEvent> {
    consumer: StreamConsumer,
    topic: String,
    decode: fn(&BorrowedMessage<'_>) -> E,
    next_offset: HashMap<i32, i64>,
    /// Everything read so far, in the order it arrived.
    pub events: Vec<E>,
}

impl TopicReader<ChangeEvent> {
    /// A reader of `topic` into [`ChangeEvent`]s; waits up to `timeout` for the topic to exist.
    pub async fn open(topic: &str, timeout: Duration) -> Self {
        Self::open_with(topic, timeout, ChangeEvent::decode).await
    }
}

impl<E> TopicReader<E> {
    /// A reader of `topic` that decodes messages with `decode`.
    pub async fn open_with(
        topic: &str,
        timeout: Duration,
        decode: fn(&BorrowedMessage<'_>) -> E,
    ) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .set("group.id", unique("e2e-reader"))
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let partitions: Vec<i32> = loop {
            let metadata = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
            });
            if let Ok(metadata) = metadata
                && let Some(t) = metadata.topics().first()
                && t.error().is_none()
                && !t.partitions().is_empty()
            {
                break t.partitions().iter().map(|p| p.id()).collect();
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not appear within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        Self {
            consumer,
            topic: topic.to_owned(),
            decode,
            next_offset: partitions.iter().map(|&p| (p, 0)).collect(),
            events: Vec::new(),
        }
    }

    /// Reads until `done(all events so far)` holds (checked after every 1,000 events and whenever
    /// the topic is quiet); fails after `timeout`, saying `what` was awaited.
    pub async fn read_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[E]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.events) {
            // Read a batch: 1,000 events, or until the topic is quiet for 300 ms.
            for _ in 0..1000 {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "{what}: not there after {timeout:?} ({} events read from {})",
                    self.events.len(),
                    self.topic
                );
                let quiet = left.min(Duration::from_millis(300));
                match tokio::time::timeout(quiet, self.consumer.recv()).await {
                    Ok(Ok(message)) => {
                        self.next_offset
                            .insert(message.partition(), message.offset() + 1);
                        self.events.push((self.decode)(&message));
                    }
                    Ok(Err(e)) => panic!("reading {}: {e}", self.topic),
                    Err(_) => break,
                }
            }
        }
    }

    /// Reads until at least `n` events are in.
    pub async fn read_count(&mut self, n: usize, timeout: Duration) {
        self.read_until(&format!("{n} events"), timeout, |events| events.len() >= n)
            .await;
    }

    /// Reads every message the topic holds now (up to each partition's high watermark).
    pub async fn read_to_end(&mut self, timeout: Duration) {
        let mut high = HashMap::new();
        for &partition in self.next_offset.keys() {
            let (_, h) = tokio::task::block_in_place(|| {
                self.consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            })
            .unwrap();
            high.insert(partition, h);
        }
        let topic = self.topic.clone();
        let deadline = Instant::now() + timeout;
        while high.iter().any(|(p, h)| self.next_offset[p] < *h) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "could not read {topic} to its end within {timeout:?}"
            );
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    self.next_offset
                        .insert(message.partition(), message.offset() + 1);
                    self.events.push((self.decode)(&message));
                }
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => {}
            }
        }
    }
}

/// Whether two JSON values are equal, numbers compared by value (`1` equals `1.0`; integers
/// exactly, others as f64).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
