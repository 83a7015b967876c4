//! Compactor throughput against the limit: the raw arrow-rs Parquet + zstd write of the same
//! Arrow batches.
//!
//! ```sh
//! source ~/.cache/strata/stack/env          # STRATA_KAFKA_BROKERS (required: no broker fails)
//! CARGO_TARGET_DIR=~/.cache/strata/target-bench cargo bench -p strata-compactor --bench throughput
//! STRATA_BENCH_EVENTS=200000 cargo bench -p strata-compactor --bench throughput   # quick
//! cargo bench -p strata-compactor --bench throughput -- --events 200000 --partitions 4
//! STRATA_BENCH_COMPRESSION=none cargo bench -p strata-compactor --bench throughput  # uncompressed topic
//! STRATA_BENCH_FORMAT=avro cargo bench -p strata-compactor --bench throughput  # `[kafka] format = "avro"`
//! STRATA_BENCH_COMPACTOR_RUNS=3 cargo bench -p strata-compactor --bench throughput  # median of 3
//! ```
//!
//! 1. Not timed: N Debezium change events (the envelope strata's PostgreSQL capture writes:
//!    the JSON converter's with schemas, or with `STRATA_BENCH_FORMAT=avro` strata's Avro
//!    format, its writer schemas published to the schema topic first) of `public.orders` (`id` int8 key + 8 columns: int4, text,
//!    numeric-as-string, int2, text, bool, timestamptz, timestamp), 30% inserts then updates
//!    and 5% deletes of random keys, keyed by `id` into P partitions of a fresh topic.
//! 2. Timed: a `strata_compactor::Compactor` with default settings but a 1 s flush deadline
//!    (fresh group, fresh local-directory catalog) from its start until the catalog's
//!    consumed offsets reach the end of every partition.
//! 3. Timed right after it: the raw write, the limit the compactor is compared to. Each of the
//!    run's segments is read back into the batch the compactor encoded (not timed), then
//!    written again with `encode_segment` (arrow-rs `ArrowWriter`, zstd, the compactor's
//!    settings, one thread) + `put` to a local directory; the bench asserts the bytes are the
//!    compactor's. `STRATA_BENCH_COMPACTOR_RUNS` (1) repeats steps 2 and 3 over the same topic;
//!    the ratio is the median of the pairs' ratios (this VM's speed drifts by 20-30% within
//!    minutes: a pair sees one speed).
//! 4. Timed, single-threaded, one step at a time, over the same events cut into the same
//!    segments (row counts of the median run's segments, in order): Kafka fetch only (in
//!    chunks, as the compactor reads; no decode); JSON decode into segment rows (cells, event id, key); `SegmentBuilder` appends
//!    and the sort; and the raw write of those batches. The same write with each row group's
//!    columns on every core (`encode_segment_parallel`, as the compactor writes its segments)
//!    is timed too and printed beside it.
//!
//! Before each timed part the page cache's dirty pages are written out (`sync`), so that a
//! part does not pay for the writeback of files an earlier part wrote. (Raw writes timed
//! right after a compactor run still often come out slower than the one in the split, with
//! `sync` or without: unexplained, see docs/BENCHMARKS.md; both ratios are printed.)
//!
//! Peak RSS is the process's `VmHWM`, reset (`/proc/self/clear_refs`) before each timed part;
//! the raw part's peak includes the generated and decoded events it holds. CPU is the
//! process's user + system time during the part.

#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};
use strata_catalog::avro::{DEFAULT_SCHEMA_TOPIC, WriterSchema};
use strata_catalog::{
    AvroSchemas, Catalog, CatalogConfig, DecodedRow, SchemaCache, SegmentBuilder,
    decode_debezium_row, encode_segment, encode_segment_parallel,
};
use strata_compactor::{Compactor, CompactorConfig};
use tokio_util::sync::CancellationToken;

const MIB: f64 = 1024.0 * 1024.0;

struct Args {
    events: usize,
    partitions: i32,
    /// Only the steps without Kafka (decode, Arrow, raw write), segments of 100,000 events:
    /// for profiling the pure parts.
    split_only: bool,
}

fn args() -> Args {
    let mut args = Args {
        events: std::env::var("STRATA_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000),
        partitions: std::env::var("STRATA_BENCH_PARTITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
        split_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => {
                args.events = it.next().and_then(|v| v.parse().ok()).expect("--events N");
            }
            "--partitions" => {
                args.partitions = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--partitions P");
            }
            "--split-only" => args.split_only = true,
            _ => {} // `--bench` from cargo, filters
        }
    }
    assert!(args.events > 0 && args.partitions > 0, "sizes must be > 0");
    args
}

/// How many times the compactor is timed (`STRATA_BENCH_COMPACTOR_RUNS`, at least 1).
fn compactor_runs() -> usize {
    std::env::var("STRATA_BENCH_COMPACTOR_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_usize)
        .max(1)
}

fn brokers() -> String {
    std::env::var("STRATA_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "STRATA_KAFKA_BROKERS is not set: this bench needs Kafka. Run \
             `source ~/.cache/strata/stack/env` (or `eval \"$(dev/stack up)\"`) first"
        )
    })
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The deterministic workload: record `i` is always the same bytes.
struct Workload {
    topic: String,
    server: String,
    n: usize,
    partitions: i32,
    inserts: usize,
    key_schema: String,
    value_schema: String,
    /// With `STRATA_BENCH_FORMAT=avro`: the key's and value's writer schemas.
    avro: Option<(WriterSchema, WriterSchema)>,
}

/// `STRATA_BENCH_FORMAT`: `json` (the default) or `avro`.
fn format() -> String {
    std::env::var("STRATA_BENCH_FORMAT").unwrap_or_else(|_| "json".to_owned())
}

const STATUS: [&str; 5] = ["new", "paid", "shipped", "delivered", "cancelled"];
const WORDS: [&str; 8] = [
    "express",
    "gift wrap",
    "leave at door",
    "fragile",
    "call first",
    "second floor",
    "weekend",
    "no invoice",
];
const TS0: i64 = 1_795_600_800_000_000;

impl Workload {
    fn new(server: &str, n: usize, partitions: i32) -> Self {
        let topic = format!("{server}.public.orders");
        let column = |ty: &str, name: Option<&str>, field: &str, key: bool| {
            let mut c = json!({"type": ty, "optional": !key, "field": field});
            if let Some(name) = name {
                c["name"] = json!(name);
                c["version"] = json!(1);
            }
            c
        };
        let columns = vec![
            column("int64", None, "id", true),
            column("int32", None, "customer_id", false),
            column("string", None, "status", false),
            column("string", None, "amount", false),
            column("int16", None, "quantity", false),
            column("string", None, "note", false),
            column("boolean", None, "active", false),
            column(
                "string",
                Some("io.debezium.time.ZonedTimestamp"),
                "created_at",
                false,
            ),
            column(
                "int64",
                Some("io.debezium.time.MicroTimestamp"),
                "updated_at",
                false,
            ),
        ];
        let key_schema = json!({"type": "struct", "fields": [columns[0].clone()],
                                "optional": false, "name": format!("{topic}.Key")})
        .to_string();
        let row = |field: &str| {
            json!({"type": "struct", "fields": columns, "optional": true,
                   "name": format!("{topic}.Value"), "field": field})
        };
        let f = |ty: &str, optional: bool, field: &str| json!({"type": ty, "optional": optional, "field": field});
        // As capture/src/postgres/envelope.rs declares it.
        let source = json!({
            "type": "struct",
            "fields": [
                f("string", false, "version"), f("string", false, "connector"),
                f("string", false, "name"), f("int64", false, "ts_ms"),
                {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                 "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                 "default": "false", "field": "snapshot"},
                f("string", false, "db"), f("string", true, "sequence"),
                f("int64", true, "ts_us"), f("int64", true, "ts_ns"),
                f("string", false, "schema"), f("string", false, "table"),
                f("int64", true, "txId"), f("int64", true, "lsn"), f("int64", true, "xmin"),
                f("int64", true, "commit_lsn"),
                {"type": "array", "items": {"type": "string", "optional": false}, "optional": true,
                 "field": "unchanged_toast"},
            ],
            "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
        });
        let transaction = json!({
            "type": "struct",
            "fields": [f("string", false, "id"), f("int64", false, "total_order"),
                       f("int64", false, "data_collection_order")],
            "optional": true, "name": "event.block", "version": 1, "field": "transaction",
        });
        let value_schema = json!({
            "type": "struct",
            "fields": [row("before"), row("after"), source, f("string", false, "op"),
                       f("int64", true, "ts_ms"), transaction],
            "optional": false, "name": format!("{topic}.Envelope"), "version": 2,
        })
        .to_string();
        Self {
            topic,
            server: server.to_owned(),
            n,
            partitions,
            inserts: (n * 3 / 10).max(1),
            avro: match format().as_str() {
                "json" => None,
                "avro" => Some((
                    WriterSchema::from_connect_text(&key_schema).expect("key writer schema"),
                    WriterSchema::from_connect_text(&value_schema).expect("value writer schema"),
                )),
                other => panic!("STRATA_BENCH_FORMAT={other}: json or avro"),
            },
            key_schema,
            value_schema,
        }
    }

    /// The schema cache a decoder of these records needs.
    fn schema_cache(&self) -> SchemaCache {
        let schemas = AvroSchemas::default();
        for writer in self.avro.iter().flat_map(|(k, v)| [k, v]) {
            schemas.insert(writer.clone());
        }
        SchemaCache::with_avro(schemas)
    }

    /// Record `i`: (partition, key, value).
    fn record(&self, i: usize) -> (i32, Vec<u8>, Vec<u8>) {
        let r = splitmix(i as u64);
        let (id, op) = if i < self.inserts {
            (i as i64 + 1, "c")
        } else {
            let id = (r % self.inserts as u64) as i64 + 1;
            (
                id,
                if (r >> 40).is_multiple_of(20) {
                    "d"
                } else {
                    "u"
                },
            )
        };
        let h = splitmix(id as u64);
        let partition = (h % self.partitions as u64) as i32;
        // Transactions of 5 changes; positions as pgoutput gives them.
        let lsn = 0x1_0000_0000_u64 + i as u64 * 160;
        let commit_lsn = 0x1_0000_0000_u64 + ((i as u64 / 5) * 5 + 4) * 160 + 80;
        let tx_id = 10_000 + i as u64 / 5;
        let ts_us = TS0 + (i as i64 / 5) * 100;
        let created = chrono::DateTime::from_timestamp_micros(TS0 - 86_400_000_000 + id * 997)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default();
        let image = json!({
            "id": id,
            "customer_id": (h % 100_000) as i32,
            "status": STATUS[(r % 5) as usize],
            "amount": format!("{}.{:02}", (r >> 8) % 10_000, (r >> 24) % 100),
            "quantity": ((r >> 32) % 20 + 1) as i16,
            "note": format!("order {id}: {}, {}", WORDS[(r % 8) as usize], WORDS[((r >> 3) % 8) as usize]),
            "active": !r.is_multiple_of(7),
            "created_at": created,
            "updated_at": ts_us,
        });
        let (before, after) = match op {
            "d" => (
                json!({"id": id, "customer_id": null, "status": null, "amount": null,
                       "quantity": null, "note": null, "active": null, "created_at": null,
                       "updated_at": null}),
                Value::Null,
            ),
            _ => (Value::Null, image),
        };
        let payload = json!({
            "before": before, "after": after,
            "source": {"version": "0.1.0", "connector": "postgresql", "name": self.server,
                       "ts_ms": ts_us / 1000, "snapshot": "false", "db": "shop",
                       "sequence": format!("[null,\"{lsn}\"]"), "ts_us": ts_us,
                       "ts_ns": ts_us * 1000, "schema": "public", "table": "orders",
                       "txId": tx_id, "lsn": lsn, "xmin": null, "commit_lsn": commit_lsn,
                       "unchanged_toast": null},
            "op": op, "ts_ms": ts_us / 1000 + 3,
            "transaction": {"id": format!("{tx_id}:{commit_lsn}"), "total_order": i % 5 + 1,
                            "data_collection_order": i % 5 + 1},
        });
        if let Some((key_writer, value_writer)) = &self.avro {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            key_writer
                .encode(&json!({ "id": id }), &mut key)
                .expect("avro key");
            value_writer
                .encode(&payload, &mut value)
                .expect("avro value");
            return (partition, key, value);
        }
        let key = format!(
            "{{\"schema\":{},\"payload\":{{\"id\":{id}}}}}",
            self.key_schema
        );
        let value = format!("{{\"schema\":{},\"payload\":{payload}}}", self.value_schema);
        (partition, key.into_bytes(), value.into_bytes())
    }
}

/// Process peak RSS (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("could not reset the peak RSS ({e}); peaks are since process start");
    }
}

/// The process's user + system CPU seconds (`/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// One timed part.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    seconds: f64,
    peak_mib: f64,
    cpu: f64,
}

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    for r in admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic")
    {
        r.expect("topic created");
    }
}

async fn delete_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    if let Err(e) = admin.delete_topics(&[name], &AdminOptions::new()).await {
        eprintln!("could not delete topic {name}: {e}");
    }
}

/// The producer's `compression.type`: `STRATA_BENCH_COMPRESSION`, else `lz4` (as strata's
/// capture produces by default).
fn compression() -> String {
    std::env::var("STRATA_BENCH_COMPRESSION").unwrap_or_else(|_| "lz4".to_owned())
}

/// Produces every record; returns (per-partition end offsets, JSON bytes).
async fn produce(w: &Workload) -> (Vec<i64>, u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", compression())
        .create()
        .expect("producer");
    // As the capture does: the writer schemas are in the schema topic before any record.
    for writer in w.avro.iter().flat_map(|(k, v)| [k, v]) {
        let key = writer.topic_key();
        producer
            .send(
                FutureRecord::to(DEFAULT_SCHEMA_TOPIC)
                    .key(&key)
                    .payload(writer.topic_value()),
                Duration::from_secs(30),
            )
            .await
            .expect("schema published");
    }
    let mut ends = vec![0_i64; w.partitions as usize];
    let mut bytes = 0_u64;
    let mut pending = VecDeque::new();
    for i in 0..w.n {
        let (partition, key, value) = w.record(i);
        bytes += (key.len() + value.len()) as u64;
        ends[partition as usize] += 1;
        let mut record = FutureRecord::to(&w.topic)
            .partition(partition)
            .key(&key)
            .payload(&value);
        // `send_result` copies into librdkafka's queue; awaiting the oldest keeps it bounded.
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((e, back)) => {
                    assert!(
                        e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull),
                        "produce: {e}"
                    );
                    record = back;
                    let oldest = pending
                        .pop_front()
                        .expect("a full queue has pending records");
                    oldest.await.expect("delivery").expect("delivered");
                }
            }
        }
        while pending.len() >= 100_000 {
            if let Some(f) = pending.pop_front() {
                f.await.expect("delivery").expect("delivered");
            }
        }
        if i > 0 && i.is_multiple_of(200_000) {
            eprintln!("  produced {i}");
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("delivered");
    }
    (ends, bytes)
}

fn local_store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local store"))
}

struct CompactorRun {
    part: Part,
    /// When the first record was consumed (group join, assignment, first fetch).
    first_at: f64,
    consumed_at: f64,
    segments: Vec<u64>,
    /// The segments' object paths under the run's directory.
    paths: Vec<String>,
    /// The raw write of these segments, timed right after the run (see [`raw_write`]).
    raw: Part,
    parquet_bytes: u64,
    rows: u64,
    commits: u64,
}

async fn run_compactor(w: &Workload, ends: &[i64], dir: &std::path::Path) -> CompactorRun {
    let store = local_store(dir);
    let root = Path::from("");
    let catalog = Arc::new(
        Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
            .await
            .expect("open catalog"),
    );
    let watcher = Catalog::open(Arc::clone(&store), root, CatalogConfig::default())
        .await
        .expect("open catalog");
    let group = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let config = CompactorConfig {
        group_id: group.clone(),
        topics: vec![w.topic.clone()],
        ..bench_config()
    };
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", brokers());
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let compactor = Compactor::new(config, kafka, catalog, store).expect("compactor");
    let stats = compactor.stats();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(compactor.run(cancel.clone()));
    let mut consumed_at = f64::NAN;
    let mut first_at = f64::NAN;
    let deadline = start + Duration::from_secs(1800);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let records_in = stats.snapshot().records_in;
        if first_at.is_nan() && records_in > 0 {
            first_at = start.elapsed().as_secs_f64();
        }
        if consumed_at.is_nan() && records_in >= w.n as u64 {
            consumed_at = start.elapsed().as_secs_f64();
        }
        watcher.refresh().await.expect("refresh catalog");
        let state = watcher.state();
        let done = ends.iter().enumerate().all(|(p, end)| {
            *end == 0 || state.next_offset(&group, &w.topic, p as i32) == Some(*end)
        });
        if done {
            break;
        }
        assert!(!handle.is_finished(), "compactor stopped early");
        assert!(
            Instant::now() < deadline,
            "compactor did not finish in 30 min"
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    let part = Part {
        seconds,
        peak_mib: peak_rss_mib(),
        cpu: cpu_seconds() - cpu0,
    };
    cancel.cancel();
    handle
        .await
        .expect("compactor task")
        .expect("compactor run");
    let s = stats.snapshot();
    let state = watcher.state();
    let table = state.tables().next().expect("one table").clone();
    let segments: Vec<u64> = state
        .segments(&table)
        .iter()
        .map(|e| e.segment.rows)
        .collect();
    let parquet_bytes = state.segments(&table).iter().map(|e| e.segment.bytes).sum();
    let paths = state
        .segments(&table)
        .iter()
        .map(|e| e.segment.path.clone())
        .collect();
    CompactorRun {
        part,
        raw: Part::default(),
        first_at,
        consumed_at,
        rows: segments.iter().sum(),
        segments,
        paths,
        parquet_bytes,
        commits: s.commits,
    }
}

/// The raw write of one batch, timed: `encode_segment` with the compactor's writer settings
/// (one thread), then `put` under `name`. Returns the seconds, the CPU seconds and the bytes
/// (kept aside untimed).
async fn write_raw(
    store: &Arc<dyn ObjectStore>,
    batch: &arrow::record_batch::RecordBatch,
    name: String,
) -> (f64, f64, bytes::Bytes) {
    let config = CompactorConfig::default();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let bytes = bytes::Bytes::from(
        encode_segment(batch, config.zstd_level, config.row_group_rows).expect("encode"),
    );
    store
        .put(&Path::from(name), PutPayload::from(bytes.clone()))
        .await
        .expect("put");
    (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0, bytes)
}

/// The raw write of one compactor run's segments: each segment of `run` (under `dir`) is read
/// back into the batch the compactor encoded (not timed), then encoded with `encode_segment`
/// (one thread, the compactor's writer settings) and put into `out` (timed). Returns the
/// timing and whether every file came out byte for byte as the compactor's.
async fn raw_write(
    run: &CompactorRun,
    dir: &std::path::Path,
    out: &std::path::Path,
) -> (Part, bool) {
    let store = local_store(out);
    let (mut seconds, mut cpu, mut same) = (0.0, 0.0, true);
    reset_peak_rss();
    for (i, path) in run.paths.iter().enumerate() {
        let written = bytes::Bytes::from(std::fs::read(dir.join(path)).expect("read a segment"));
        let batches: Vec<_> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(written.clone())
                .expect("a Parquet segment")
                .build()
                .expect("a reader")
                .collect::<Result<_, _>>()
                .expect("batches");
        let schema = batches.first().expect("rows").schema();
        let batch = arrow::compute::concat_batches(&schema, &batches).expect("one batch");
        drop(batches);
        let (s, c, bytes) = write_raw(&store, &batch, format!("raw/{i:05}.parquet")).await;
        same &= bytes == written;
        seconds += s;
        cpu += c;
    }
    let part = Part {
        seconds,
        peak_mib: peak_rss_mib(),
        cpu,
    };
    (part, same)
}

/// The bytes of the files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Writes the page cache's dirty pages out (`sync`) before a timed part, so that no part pays
/// for the writeback of the files an earlier part wrote.
fn flush_page_cache() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("could not run sync ({e}); timings may include earlier writeback");
    }
}

/// Reads the topic from the beginning to the ends with one consumer, no decode.
async fn fetch_only(w: &Workload, ends: &[i64]) -> Part {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers())
        .set(
            "group.id",
            format!("bench-fetch-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // The compactor's fetch settings (see `Compactor::run`): librdkafka's defaults wait
        // 1 s whenever the local queue is full, which with small (Avro) records made this
        // read slower than the compactor itself.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", "50")
        .set("fetch.min.bytes", "1048576");
    let records: usize = ends.iter().map(|e| *e as usize).sum();
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    // Read as the compactor reads: partitions forwarded to a queue of its own, taken in chunks.
    let bytes = tokio::time::timeout(
        Duration::from_secs(600),
        strata_compactor::read_in_chunks(&client, &w.topic, w.partitions, records),
    )
    .await
    .expect("the topic read within 10 min")
    .expect("read the topic");
    std::hint::black_box(bytes);
    Part {
        seconds: start.elapsed().as_secs_f64(),
        peak_mib: peak_rss_mib(),
        cpu: cpu_seconds() - cpu0,
    }
}

/// The compactor's settings in the bench: the defaults, but a flush deadline of 1 s (the
/// default is 5 s): the run ends with a partial batch waiting for its deadline, which with
/// 5 s would be a third of a 1M-event run. Sizes, compression and dedup stay the defaults.
fn bench_config() -> CompactorConfig {
    CompactorConfig {
        flush_interval: Duration::from_secs(1),
        // STRATA_BENCH_DECODE_THREADS: the compactor's `decode_threads` (default 0, one per core).
        decode_threads: std::env::var("STRATA_BENCH_DECODE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        ..CompactorConfig::default()
    }
}

/// Decode, Arrow and raw write times over the same segments (row counts) as the compactor.
struct Split {
    decode: f64,
    arrow: f64,
    write: Part,
    /// The same writes with each row group's columns encoded on every core, as the compactor
    /// encodes its segments (`encode_segment_parallel`).
    write_parallel: f64,
}

async fn split(w: &Workload, segments: &[u64], dir: &std::path::Path) -> Split {
    let store = local_store(dir);
    let config = CompactorConfig::default();
    let (mut decode, mut arrow, mut write_parallel) = (0.0, 0.0, 0.0);
    let (mut write, mut write_cpu) = (0.0, 0.0);
    let mut start_index = 0_usize;
    reset_peak_rss();
    let mut cache = w.schema_cache();
    for (s, rows) in segments.iter().enumerate() {
        let records: Vec<_> = (start_index..start_index + *rows as usize)
            .map(|i| w.record(i))
            .collect();
        start_index += *rows as usize;

        let t = Instant::now();
        let mut schema = None;
        let mut rows = Vec::with_capacity(records.len());
        for (_, key, value) in &records {
            match decode_debezium_row(Some(key), value, &w.topic, &mut cache).expect("decodes") {
                DecodedRow::Row { row, schema: s } => {
                    schema.get_or_insert(s);
                    rows.push(row);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        decode += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut builder = SegmentBuilder::new(schema.expect("a schema")).expect("a segment schema");
        for row in rows {
            builder.push(row).expect("fits its schema");
        }
        let (batch, _) = builder
            .finish_sorted()
            .expect("record batch")
            .expect("rows");
        arrow += t.elapsed().as_secs_f64();
        drop(records);

        // The raw write: the same batch, the compactor's writer settings, the same kind of store.
        let (seconds, cpu, _) = write_raw(&store, &batch, format!("raw/{s:05}.parquet")).await;
        write += seconds;
        write_cpu += cpu;

        // The same, the columns of each row group encoded on every core (the compactor's way).
        let t = Instant::now();
        let bytes = encode_segment_parallel(
            &batch,
            config.zstd_level,
            config.row_group_rows,
            config.effective_decode_threads(),
        )
        .expect("encode");
        store
            .put(
                &Path::from(format!("raw/{s:05}.parallel.parquet")),
                PutPayload::from(bytes),
            )
            .await
            .expect("put");
        write_parallel += t.elapsed().as_secs_f64();
    }
    Split {
        decode,
        arrow,
        write: Part {
            seconds: write,
            peak_mib: peak_rss_mib(),
            cpu: write_cpu,
        },
        write_parallel,
    }
}

fn seconds_list(seconds: impl Iterator<Item = f64>) -> String {
    seconds
        .map(|s| format!("{s:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rate(n: f64, seconds: f64) -> String {
    format!("{:.0}", n / seconds)
}

#[tokio::main]
async fn main() {
    let args = args();
    let server = format!(
        "strata.bench{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let w = Workload::new(&server, args.events, args.partitions);
    if args.split_only {
        let work = tempfile::tempdir().expect("temp dir");
        let cuts: Vec<u64> = (0..w.n)
            .step_by(100_000)
            .map(|start| (w.n - start).min(100_000) as u64)
            .collect();
        let s = split(&w, &cuts, work.path()).await;
        let n = w.n as f64;
        println!("| step | events | seconds | events/s |");
        println!("|---|---:|---:|---:|");
        for (name, secs) in [
            (
                format!(
                    "{} decode into segment rows (cells, event id, key)",
                    format()
                ),
                s.decode,
            ),
            ("Arrow builders + sort (SegmentBuilder)".to_owned(), s.arrow),
            (
                "Parquet encode + put (the raw write)".to_owned(),
                s.write.seconds,
            ),
        ] {
            println!("| {name} | {} | {secs:.2} | {} |", w.n, rate(n, secs));
        }
        println!(
            "(Parquet written: {:.1} MiB)",
            dir_bytes(work.path()) as f64 / MIB
        );
        return;
    }
    let (sample_key, sample_value) = {
        let (_, k, v) = w.record(w.inserts);
        (k.len(), v.len())
    };
    eprintln!(
        "producing {} events into {} ({} partitions; one update is {} B key + {} B value)",
        w.n, w.topic, w.partitions, sample_key, sample_value
    );
    create_topic(&w.topic, w.partitions).await;
    let t = Instant::now();
    let (ends, json_bytes) = produce(&w).await;
    eprintln!(
        "produced in {:.1} s ({:.1} MiB of {}); ends {ends:?}",
        t.elapsed().as_secs_f64(),
        json_bytes as f64 / MIB,
        format()
    );

    let work = tempfile::tempdir().expect("temp dir");
    let catalog_dir = work.path().join("catalog");
    let raw_dir = work.path().join("raw");
    std::fs::create_dir_all(&catalog_dir).expect("mkdir");
    std::fs::create_dir_all(&raw_dir).expect("mkdir");

    let mut runs = Vec::new();
    for i in 0..compactor_runs() {
        eprintln!("compactor ...");
        let dir = catalog_dir.join(i.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        flush_page_cache();
        let c = run_compactor(&w, &ends, &dir).await;
        assert_eq!(
            c.rows, w.n as u64,
            "the catalog holds every event exactly once"
        );
        // Right after each compactor run, so that the pair sees the machine at one speed.
        eprintln!("raw write ...");
        let out = raw_dir.join(format!("run-{i}"));
        std::fs::create_dir_all(&out).expect("mkdir");
        flush_page_cache();
        let (raw, same) = raw_write(&c, &dir, &out).await;
        assert!(
            same,
            "the raw write re-encodes the compactor's segments into the same bytes"
        );
        std::fs::remove_dir_all(&out).expect("rm raw");
        runs.push((c, raw));
    }
    let ratios: Vec<f64> = runs
        .iter()
        .map(|(c, raw)| raw.seconds / c.part.seconds)
        .collect();
    let ratio = {
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let runs: Vec<CompactorRun> = runs
        .into_iter()
        .map(|(c, raw)| CompactorRun { raw, ..c })
        .collect();
    let mut by_time: Vec<&CompactorRun> = runs.iter().collect();
    by_time.sort_by(|a, b| a.part.seconds.total_cmp(&b.part.seconds));
    let c = by_time[by_time.len() / 2];
    eprintln!("fetch only ...");
    flush_page_cache();
    let fetch = fetch_only(&w, &ends).await;
    eprintln!("decode / arrow / raw write ...");
    flush_page_cache();
    let s = split(&w, &c.segments, &raw_dir).await;
    delete_topic(&w.topic).await;

    let n = w.n as f64;
    let json_mib = json_bytes as f64 / MIB;
    let d = bench_config();
    println!();
    println!(
        "events={} partitions={} table=public.orders (id int8 key + 8 columns) {}={:.1} MiB ({:.0} B/event) \
         parquet={:.1} MiB",
        w.n,
        w.partitions,
        format(),
        json_mib,
        json_bytes as f64 / n,
        c.parquet_bytes as f64 / MIB
    );
    println!(
        "compactor settings (defaults but flush_interval): max_segment_bytes={} row_group_rows={} \
         zstd_level={} flush_interval={:?} dedup_window={} decode_threads={}; topic written with \
         compression.type={}, format={}",
        d.max_segment_bytes,
        d.row_group_rows,
        d.zstd_level,
        d.flush_interval,
        d.dedup_window,
        d.effective_decode_threads(),
        compression(),
        format()
    );
    for c in &runs {
        println!(
            "compactor: {} segments in {} commits, first record consumed at {:.2} s, all {} at {:.2} s \
             (steady {} events/s), last commit seen at {:.2} s",
            c.segments.len(),
            c.commits,
            c.first_at,
            w.n,
            c.consumed_at,
            rate(n, c.consumed_at - c.first_at),
            c.part.seconds
        );
    }
    println!();
    println!(
        "| path | events | seconds | events/s | MB/s ({} in) | MB/s (Parquet out) | peak RSS MiB | CPU s |",
        format()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, p: &Part, out_bytes: u64| {
        println!(
            "| {name} | {} | {:.2} | {} | {:.1} | {:.1} | {:.0} | {:.1} |",
            w.n,
            p.seconds,
            rate(n, p.seconds),
            json_mib / p.seconds,
            out_bytes as f64 / MIB / p.seconds,
            p.peak_mib,
            p.cpu
        );
    };
    for (i, run) in runs.iter().enumerate() {
        let of = if runs.len() == 1 {
            String::new()
        } else {
            format!(", run {}/{}", i + 1, runs.len())
        };
        row(
            &format!("compactor (Kafka -> catalog){of}"),
            &run.part,
            run.parquet_bytes,
        );
        row(
            &format!("raw arrow-rs Parquet+zstd write (encode_segment, one thread, + put){of}"),
            &run.raw,
            run.parquet_bytes,
        );
    }
    println!();
    println!(
        "compactor vs raw write: {ratio:.2}x ({}each raw write re-encodes the batches of the \
         compactor run before it, read back from its segments, into the same bytes{})",
        if runs.len() == 1 {
            String::new()
        } else {
            format!("median of {} pairs; ", runs.len())
        },
        if runs.len() == 1 {
            String::new()
        } else {
            format!(
                "; ratios {}; compactor {}, raw write {}",
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}x"))
                    .collect::<Vec<_>>()
                    .join(", "),
                seconds_list(runs.iter().map(|r| r.part.seconds)),
                seconds_list(runs.iter().map(|r| r.raw.seconds))
            )
        }
    );
    println!(
        "(the raw write timed once more in the split below, minutes after the compactor runs: \
         {:.2} s; the median compactor run vs it: {:.2}x)",
        s.write.seconds,
        s.write.seconds / c.part.seconds
    );
    println!(
        "(the compactor encodes a row group's columns on {} threads; the same write so: {:.2} s, \
         compactor vs it: {:.2}x)",
        CompactorConfig::default().effective_decode_threads(),
        s.write_parallel,
        s.write_parallel / c.part.seconds
    );
    println!();
    println!("split (one thread each, same events, same segment cuts):");
    println!("| step | seconds | events/s | share of compactor time |");
    println!("|---|---:|---:|---:|");
    let step = |name: &str, secs: f64| {
        println!(
            "| {name} | {secs:.2} | {} | {:.0}% |",
            rate(n, secs),
            100.0 * secs / c.part.seconds
        );
    };
    step(
        "Kafka fetch only (in chunks, as the compactor reads; no decode)",
        fetch.seconds,
    );
    step(
        &format!(
            "{} decode into segment rows (cells, event id, key)",
            format()
        ),
        s.decode,
    );
    step("Arrow builders + sort (SegmentBuilder)", s.arrow);
    step("Parquet encode + put (the raw write)", s.write.seconds);
    step(
        "sum of the steps",
        fetch.seconds + s.decode + s.arrow + s.write.seconds,
    );
    println!(
        "(fetch only: peak RSS {:.0} MiB, CPU {:.1} s)",
        fetch.peak_mib, fetch.cpu
    );
}
