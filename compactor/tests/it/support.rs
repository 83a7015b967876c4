//! Fixtures: service addresses (missing ones fail the test), fresh topics, Debezium
//! envelopes as strata's capture writes them, running a compactor, reading segments back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, UInt64Type};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use strata_catalog::{Catalog, CatalogConfig, Decoded, DecodedEvent, decode_debezium};
use strata_compactor::{Compactor, CompactorConfig, CompactorStats, object_path};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) fn brokers() -> String {
    std::env::var("STRATA_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "STRATA_KAFKA_BROKERS is not set: this test needs Kafka. Run \
             `source ~/.cache/strata/stack/env` (or `eval \"$(dev/stack up)\"`) first"
        )
    })
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The S3 server of `dev/stack`, from `STRATA_S3_*`; missing settings fail the test.
pub(crate) fn s3_store() -> Arc<dyn ObjectStore> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: this test needs the dev stack's S3 server (`source ~/.cache/strata/stack/env`)")
        })
    };
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(var("STRATA_S3_ENDPOINT"))
            .with_bucket_name(var("STRATA_S3_BUCKET"))
            .with_access_key_id(var("STRATA_S3_ACCESS_KEY_ID"))
            .with_secret_access_key(var("STRATA_S3_SECRET_ACCESS_KEY"))
            .with_region(var("STRATA_S3_REGION"))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 store from STRATA_S3_* settings"),
    )
}

/// Creates a topic with `partitions` partitions.
pub(crate) async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) partition: i32,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

pub(crate) async fn produce(topic: &str, records: &[Record]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for r in records {
        let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(topic).partition(r.partition);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
}

/// The key document of row `id`.
pub(crate) fn key_doc(server: &str, id: i32) -> Vec<u8> {
    json!({
        "schema": {"type": "struct", "optional": false, "name": format!("{server}.public.items.Key"),
                   "fields": [{"type": "int32", "optional": false, "field": "id"}]},
        "payload": {"id": id}
    })
    .to_string()
    .into_bytes()
}

/// A change to row `id` as strata's capture writes it (see `capture/src/postgres/envelope.rs`).
pub(crate) fn envelope(server: &str, op: &str, id: i32, note: &str, lsn: u64) -> Vec<u8> {
    let fields = json!([
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "field": "note"},
        {"type": "float64", "optional": true, "field": "amount"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "at"}
    ]);
    let row = |f: &str| {
        json!({"type": "struct", "fields": fields, "optional": true,
                               "name": format!("{server}.public.items.Value"), "field": f})
    };
    let image = json!({"id": id, "note": note, "amount": f64::from(id) * 1.5,
                       "at": "2026-01-02T03:04:05.123456Z"});
    let (before, after) = match op {
        "d" => (
            json!({"id": id, "note": null, "amount": null, "at": null}),
            Value::Null,
        ),
        _ => (Value::Null, image),
    };
    let ts_us = 1_767_000_000_000_000_i64 + lsn as i64;
    let schema = json!({"type": "struct", "optional": false, "name": format!("{server}.public.items.Envelope"), "version": 2,
                   "fields": [row("before"), row("after"),
                      {"type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
                       "fields": [{"type": "string", "optional": false, "field": "name"},
                                  {"type": "int64", "optional": false, "field": "ts_ms"},
                                  {"type": "int64", "optional": true, "field": "ts_us"},
                                  {"type": "string", "optional": false, "field": "schema"},
                                  {"type": "string", "optional": false, "field": "table"},
                                  {"type": "int64", "optional": true, "field": "txId"},
                                  {"type": "int64", "optional": true, "field": "lsn"},
                                  {"type": "int64", "optional": true, "field": "commit_lsn"}]},
                      {"type": "string", "optional": false, "field": "op"},
                      {"type": "int64", "optional": true, "field": "ts_ms"}]});
    let payload = json!({"before": before, "after": after,
                    "source": {"version": "0.1.0", "connector": "postgresql", "name": server,
                               "ts_ms": ts_us / 1000, "ts_us": ts_us, "snapshot": "false", "db": "shop",
                               "schema": "public", "table": "items", "txId": 1000 + lsn,
                               "lsn": lsn, "xmin": null, "commit_lsn": lsn + 1, "unchanged_toast": null},
                    "op": op, "ts_ms": 1_767_000_000_000_i64});
    // In the JSON converter's order, schema first (serde_json would sort the members).
    format!("{{\"schema\":{schema},\"payload\":{payload}}}").into_bytes()
}

/// A record decoded as the compactor decodes it (a fixture that does not decode panics).
pub(crate) fn decode(record: &Record, topic: &str) -> DecodedEvent {
    match decode_debezium(
        record.key.as_deref(),
        record.value.as_deref().unwrap_or_default(),
        topic,
    ) {
        Ok(Decoded::Event(e)) => *e,
        other => panic!("fixture does not decode: {other:?}"),
    }
}

/// The event id of a record, as the compactor computes it for a new table.
pub(crate) fn event_id(record: &Record, topic: &str) -> [u8; 32] {
    let e = decode(record, topic);
    e.event.event_id(e.schema.event_id_version)
}

pub(crate) fn test_config(group: &str, topic: &str) -> CompactorConfig {
    CompactorConfig {
        group_id: group.into(),
        topics: vec![topic.into()],
        max_segment_bytes: 8 * 1024,
        flush_interval: Duration::from_millis(300),
        ..CompactorConfig::default()
    }
}

pub(crate) struct Running {
    pub(crate) cancel: CancellationToken,
    pub(crate) stats: Arc<CompactorStats>,
    pub(crate) handle: JoinHandle<strata_compactor::Result<()>>,
}

pub(crate) async fn start(
    config: CompactorConfig,
    store: Arc<dyn ObjectStore>,
    root: &Path,
) -> Running {
    let catalog = Arc::new(
        Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
            .await
            .expect("open catalog"),
    );
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", brokers());
    let compactor = Compactor::new(config, kafka, catalog, store).expect("compactor");
    let stats = compactor.stats();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(compactor.run(cancel.clone()));
    Running {
        cancel,
        stats,
        handle,
    }
}

impl Running {
    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        self.handle
            .await
            .expect("compactor task")
            .expect("compactor run");
    }
}

/// Waits until the catalog says every partition of `topic` was consumed up to `ends`.
pub(crate) async fn wait_for_offsets(
    store: Arc<dyn ObjectStore>,
    root: &Path,
    group: &str,
    topic: &str,
    ends: &[i64],
) -> Arc<strata_catalog::CatalogState> {
    let catalog = Catalog::open(store, root.clone(), CatalogConfig::default())
        .await
        .expect("open");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        catalog.refresh().await.expect("refresh");
        let state = catalog.state();
        let done = ends
            .iter()
            .enumerate()
            .all(|(p, end)| state.next_offset(group, topic, p as i32) == Some(*end) || *end == 0);
        if done {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "compactor did not commit offsets {ends:?} in time: {:?}",
            (0..ends.len())
                .map(|p| state.next_offset(group, topic, p as i32))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One row read back from a segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadRow {
    pub(crate) event_id: [u8; 32],
    pub(crate) op: String,
    pub(crate) id: i32,
    pub(crate) note: Option<String>,
    pub(crate) key: String,
    pub(crate) commit_pos: u64,
}

/// Reads every live segment of every table; checks each is sorted and has statistics.
pub(crate) async fn read_segments(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    state: &strata_catalog::CatalogState,
) -> Vec<ReadRow> {
    let mut rows = Vec::new();
    for table in state.tables() {
        for entry in state.segments(table) {
            let path = object_path(root, &entry.segment.path);
            assert!(entry.segment.path.starts_with(&format!(
                "{}/{}/{}/changes/",
                table.source, table.namespace, table.table
            )));
            let bytes = store
                .get(&path)
                .await
                .expect("segment exists")
                .bytes()
                .await
                .expect("bytes");
            assert_eq!(bytes.len() as u64, entry.segment.bytes);
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
            let meta = builder.metadata().clone();
            assert!(meta.num_row_groups() >= 1);
            let key_idx = builder.schema().index_of("_key").expect("_key");
            assert!(
                meta.row_group(0).column(key_idx).statistics().is_some(),
                "row-group statistics"
            );
            let batches: Vec<RecordBatch> = builder
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect();
            let mut file_rows = Vec::new();
            for b in &batches {
                let c = |n: &str| {
                    b.column_by_name(n)
                        .unwrap_or_else(|| panic!("column {n}"))
                        .clone()
                };
                let (ids, notes, keys, ops, eids, pos) = (
                    c("id"),
                    c("note"),
                    c("_key"),
                    c("_op"),
                    c("_event_id"),
                    c("_commit_pos"),
                );
                for i in 0..b.num_rows() {
                    let notes = notes.as_string::<i32>();
                    file_rows.push(ReadRow {
                        event_id: eids
                            .as_fixed_size_binary()
                            .value(i)
                            .try_into()
                            .expect("32 bytes"),
                        op: ops.as_string::<i32>().value(i).to_owned(),
                        id: ids.as_primitive::<Int32Type>().value(i),
                        note: (!notes.is_null(i)).then(|| notes.value(i).to_owned()),
                        key: keys.as_string::<i32>().value(i).to_owned(),
                        commit_pos: pos.as_primitive::<UInt64Type>().value(i),
                    });
                }
            }
            assert_eq!(file_rows.len() as u64, entry.segment.rows);
            for pair in file_rows.windows(2) {
                assert!(
                    (&pair[0].key, pair[0].commit_pos) <= (&pair[1].key, pair[1].commit_pos),
                    "segment is sorted"
                );
            }
            if let (Some(first), Some(last)) = (file_rows.first(), file_rows.last()) {
                assert_eq!(first.key, entry.segment.min_key);
                assert_eq!(last.key, entry.segment.max_key);
            }
            rows.extend(file_rows);
        }
    }
    rows
}

pub(crate) fn ids(rows: &[ReadRow]) -> BTreeSet<[u8; 32]> {
    rows.iter().map(|r| r.event_id).collect()
}
