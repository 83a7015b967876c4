//! A topic written by the real Debezium PostgreSQL connector (3.7, in Kafka Connect standalone, with
//! the jars `dev/stack install` resolves into `$STRATA_DEBEZIUM_LIBS`) is compacted by strata's
//! compactor and answers the same SQL as strata's own capture: current state, `as_of`, `changes`.
//!
//! The connector is configured from the templates in `dev/debezium/` (the ones bench/capture uses),
//! with Debezium's defaults otherwise: JsonConverter with schemas, `decimal.handling.mode=precise`
//! (numeric as base64 bytes + scale, unconstrained numeric as a `VariableScaleDecimal` struct),
//! `time.precision.mode=adaptive`, tombstones after deletes, no transaction metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::BorrowedMessage;
use serde_json::{Value, json};
use strata_catalog::{Catalog, CatalogConfig};
use strata_compactor::{Compactor, CompactorConfig};
use strata_query::StrataContext;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{PgCapture, TopicReader, kafka_brokers, pg_connect, pg_url, service_env};

/// The table's columns as the test compares them: PostgreSQL renders each as text, strata's
/// answer is formatted by Arrow; both are brought to one canonical string per cell.
const PG_COLUMNS: &str = "id::text, qty::text, big::text, name, amount::text, ratio::text, \
     score::text, flag::text, (extract(epoch FROM at) * 1000000)::bigint::text, day::text, note";
/// The same columns from strata (`at` as µs since the epoch, like the PostgreSQL side).
const STRATA_COLUMNS: &str =
    "id, qty, big, name, amount, ratio, score, flag, CAST(at AS BIGINT) AS at, day, note";
/// Index of the `double precision` column: compared as numbers (`0` vs `0.0`).
const FLOAT_COLUMN: usize = 6;
/// Index of the unconstrained `numeric` column: compared without trailing fraction zeros.
/// Debezium drops them from `VariableScaleDecimal`s (PostgreSQL's `6.000` arrives as scale 0,
/// `6`); the value is exact, its display scale is lost before strata sees it.
const VARIABLE_SCALE_COLUMN: usize = 5;

/// Kafka Connect standalone running the Debezium PostgreSQL connector. Dropping it kills the JVM.
struct Connect {
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Connect {
    /// Renders the worker and connector properties from `dev/debezium/*.in` into `dir` and starts
    /// the worker. `prefix` is Debezium's `topic.prefix` (strata's source name), slot and
    /// publication.
    fn start(dir: &Path, prefix: &str, table: &str) -> Self {
        let libs = PathBuf::from(service_env("STRATA_DEBEZIUM_LIBS"));
        let runtime_jar = std::fs::read_dir(&libs).ok().and_then(|entries| {
            entries.filter_map(Result::ok).find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("connect-runtime-")
            })
        });
        assert!(
            runtime_jar.is_some(),
            "STRATA_DEBEZIUM_LIBS={} holds no Kafka Connect jars: run `dev/stack install`",
            libs.display()
        );
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("dev/debezium");
        let pg = tokio_postgres::Config::from_str(&pg_url()).unwrap();
        let host = match &pg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            other => panic!("STRATA_PG_URL must name a TCP host, not {other:?}"),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
        let password = String::from_utf8(pg.get_password().unwrap_or_default().to_vec()).unwrap();
        let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let work = dir.display().to_string();
        let log = dir.join("connect.log");
        render(
            &templates.join("worker.properties.in"),
            &dir.join("worker.properties"),
            &[
                ("BROKERS", &kafka_brokers()),
                ("REST_PORT", &rest_port),
                ("WORK_DIR", &work),
                ("SCHEMAS_ENABLE", "true"),
                ("PLUGIN_DISCOVERY", "service_load"),
                ("PRODUCER", "# (Kafka Connect producer defaults)"),
            ],
        );
        render(
            &templates.join("connector.properties.in"),
            &dir.join("connector.properties"),
            &[
                ("PGHOST", &host),
                ("PGPORT", &port),
                ("PGUSER", pg.get_user().unwrap()),
                ("PGPASSWORD", &password),
                ("PGDATABASE", pg.get_dbname().unwrap()),
                ("TOPIC_PREFIX", prefix),
                ("SCHEMA", "public"),
                ("TABLE", table),
                ("SLOT", prefix),
                ("PUBLICATION", prefix),
                ("SNAPSHOT_MODE", "initial"),
            ],
        );
        render(
            &templates.join("log4j2.xml.in"),
            &dir.join("log4j2.xml"),
            &[("LOG_FILE", &log.display().to_string())],
        );
        let out = dir.join("connect.out");
        // C1 only and the serial collector: this JVM handles a few dozen events; starting fast
        // matters more than peak throughput.
        let child = Command::new("java")
            .args([
                "-Xmx384m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                dir.join("log4j2.xml").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .arg(dir.join("worker.properties"))
            .arg(dir.join("connector.properties"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&out).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java (the one dev/stack uses, on PATH): {e}"));
        Self { child, log, out }
    }

    /// The worker's log and stdout, for failure messages.
    fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {} (last 40 lines)\n{}\n--- {}\n{}",
            self.log.display(),
            tail(&self.log),
            self.out.display(),
            tail(&self.out)
        )
    }

    /// Fails with the worker's log if the JVM has exited.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("Kafka Connect exited ({status}):\n{}", self.logs());
        }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `template` to `out` with every `@KEY@` replaced; fails on a placeholder left over.
fn render(template: &Path, out: &Path, values: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    // (Comments mention `@NAME@` placeholders; only settings count.)
    let left: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split('@').skip(1).step_by(2))
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(left.is_empty(), "{}: unfilled {left:?}", template.display());
    std::fs::write(out, text).unwrap();
}

/// Deletes the topics whose names start with `prefix.` when dropped (also after a panic).
struct Topics(String);

impl Drop for Topics {
    fn drop(&mut self) {
        let prefix = format!("{}.", self.0);
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", kafka_brokers())
                    .create()
                    .map_err(|e| e.to_string())?;
                let metadata = admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let topics: Vec<String> = metadata
                    .topics()
                    .iter()
                    .map(|t| t.name().to_owned())
                    .filter(|t| t.starts_with(&prefix))
                    .collect();
                if !topics.is_empty() {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    admin
                        .delete_topics(&names, &AdminOptions::new())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the topics of {}: {deleted:?}", self.0);
        }
    }
}

/// A record of the Debezium topic: key payload, value payload (`None`: a tombstone).
#[derive(Debug, Clone)]
struct Record {
    key: Option<Value>,
    value: Option<Value>,
}

fn decode_record(message: &BorrowedMessage<'_>) -> Record {
    let payload = |bytes: Option<&[u8]>| -> Option<Value> {
        let bytes = bytes?;
        let doc: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes));
        });
        Some(doc["payload"].clone())
    };
    Record {
        key: payload(message.key()),
        value: payload(message.payload()),
    }
}

/// One canonical string per cell (`NULL` for a null); floats as Rust prints the f64.
fn canonical(mut row: Vec<Option<String>>) -> Vec<String> {
    if let Some(Some(f)) = row.get_mut(FLOAT_COLUMN) {
        *f = f
            .parse::<f64>()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| f.clone());
    }
    if let Some(Some(d)) = row.get_mut(VARIABLE_SCALE_COLUMN)
        && d.contains('.')
    {
        *d = d.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    row.into_iter()
        .map(|c| c.unwrap_or_else(|| "NULL".into()))
        .collect()
}

/// PostgreSQL's rows of `table`, ordered by id.
async fn pg_rows(client: &tokio_postgres::Client, table: &str) -> Vec<Vec<String>> {
    client
        .query(
            &format!("SELECT {PG_COLUMNS} FROM public.{table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            canonical(
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect(),
            )
        })
        .collect()
}

/// Every row of `batches` as strings (Arrow's display).
fn batch_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    rows
}

/// strata's answer to `SELECT <columns> FROM <from> ORDER BY id`, canonical.
async fn strata_rows(strata: &StrataContext, from: &str) -> Vec<Vec<String>> {
    let batches = strata
        .query(&format!("SELECT {STRATA_COLUMNS} FROM {from} ORDER BY id"))
        .await
        .unwrap_or_else(|e| panic!("SELECT … FROM {from}: {e}"));
    batch_rows(&batches).into_iter().map(canonical).collect()
}

/// `clock_timestamp()` as RFC 3339 in UTC with microseconds.
async fn pg_now(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// High watermark per partition of `topic`.
fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            (p.id(), high)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_topic_is_compacted_and_answers_as_of_and_changes() {
    let t_test = Instant::now();
    // PgCapture names the source and drops slot (Debezium creates it), publication and table.
    let capture = PgCapture::new("dbz");
    let source = capture.source.clone();
    let table = capture.table("t");
    let topic = format!("{source}.public.{table}");
    let full_name = format!("{source}.public.{table}");
    let _topics = Topics(source.clone());
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE public.{table} (
               id int PRIMARY KEY, qty int NOT NULL, big bigint, name text, amount numeric(12,2),
               ratio numeric, score double precision, flag boolean, at timestamptz, day date,
               note text);
             CREATE PUBLICATION {source} FOR TABLE public.{table};
             INSERT INTO public.{table} VALUES
               (1, 10, 9000000000, 'alpha', 12.50, 3.14159, 2.5, true,
                '2026-11-25 10:00:00.123456+00', '2026-11-25', 'first'),
               (2, -3, -1, 'grüße ✓', -0.01, 0.000001, -0.125, false,
                '1999-12-31 23:59:59+05:30', '1970-01-01', NULL),
               (3, 0, 0, '', 0, 123456789012345678901234567890.123, 0, NULL,
                '1960-01-01 00:00:00+00', '2000-02-29', 'x'),
               (4, 7, NULL, NULL, 99999.99, -1.50, 1e-3, true, NULL, NULL, 'four');"
        ))
        .await
        .unwrap();
    let snapshot_state = pg_rows(&client, &table).await;

    // Kafka Connect + Debezium: initial snapshot, then streaming from the slot it created.
    let dir = tempfile::tempdir().unwrap();
    let mut connect = Connect::start(dir.path(), &source, &table);
    let t_jvm = Instant::now();
    let mut reader = TopicReader::open_with(&topic, Duration::from_secs(120), decode_record).await;
    reader
        .read_count(snapshot_state.len(), Duration::from_secs(60))
        .await;
    let first_events = t_jvm.elapsed();
    connect.assert_alive();
    assert!(
        reader
            .events
            .iter()
            .all(|r| r.value.as_ref().is_some_and(|v| v["op"] == "r")),
        "the snapshot's events are reads: {:?}",
        reader.events
    );
    let t0 = pg_now(&client).await;

    // Phase A: single-statement transactions.
    client
        .batch_execute(&format!(
            "INSERT INTO public.{table} VALUES (5, 50, 5, 'five', 5.05, 5, 5.5, false,
               '2026-11-25 11:00:00+00', '2026-11-26', 'new');
             UPDATE public.{table} SET qty = 11, note = NULL WHERE id = 1;
             UPDATE public.{table} SET name = 'beta2', flag = true,
               at = '2026-11-25 12:30:00.5+00' WHERE id = 2;"
        ))
        .await
        .unwrap();
    let state_a = pg_rows(&client, &table).await;
    let t1 = pg_now(&client).await;

    // Phase B: a delete, then one transaction over several rows (one of them changed twice).
    client
        .batch_execute(&format!(
            "DELETE FROM public.{table} WHERE id = 3;
             BEGIN;
             INSERT INTO public.{table} VALUES (6, 60, 6, 'six', 6.00, 6.000, 6, true,
               '2026-11-25 13:00:00+00', '2026-11-27', NULL);
             UPDATE public.{table} SET amount = 44.44, ratio = 4.4, score = -4.25 WHERE id = 4;
             UPDATE public.{table} SET note = 'six again', qty = 61 WHERE id = 6;
             DELETE FROM public.{table} WHERE id = 5;
             INSERT INTO public.{table} VALUES (7, 70, 7, 'seven', 7.77, 7.7, 7.7, false,
               '2026-11-25 14:00:00+00', '2026-11-28', 'last');
             COMMIT;"
        ))
        .await
        .unwrap();
    let final_state = pg_rows(&client, &table).await;
    let t2 = pg_now(&client).await;

    // Debezium: 4 reads, 3 + 6 changes, a tombstone after each of the 2 deletes.
    let expected_records = 4 + 3 + 6 + 2;
    reader
        .read_count(expected_records, Duration::from_secs(60))
        .await;
    let debezium_done = t_jvm.elapsed();
    connect.assert_alive();
    assert_eq!(reader.events.len(), expected_records, "{:?}", reader.events);
    let mut tombstones: Vec<String> = reader
        .events
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| format!("{:?}", r.key))
        .collect();
    tombstones.sort();
    assert_eq!(
        tombstones,
        [json!({"id": 3}), json!({"id": 5})].map(|k| format!("{:?}", Some(k))),
        "a tombstone (null value, the row's key) follows each delete"
    );
    let sample = reader.events.iter().rev().find_map(|r| r.value.clone());
    eprintln!(
        "debezium: sample value payload: {}",
        serde_json::to_string(&sample).unwrap()
    );

    // strata's compactor over the Debezium topic, in process, into a local directory.
    let storage = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(storage.path()).unwrap());
    let root = object_store::path::Path::default();
    let group = format!("{source}-compactor");
    let config = CompactorConfig {
        group_id: group.clone(),
        topics: vec![format!("^{}\\..*", regex_escape(&source))],
        flush_interval: Duration::from_millis(300),
        writer_id: group.clone(),
        ..CompactorConfig::default()
    };
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", kafka_brokers());
    let catalog = Arc::new(
        Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
            .await
            .unwrap(),
    );
    let compactor =
        Compactor::new(config, kafka, Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    let stats = compactor.stats();
    let cancel = CancellationToken::new();
    let t_compact = Instant::now();
    let running = tokio::spawn(compactor.run(cancel.clone()));

    let high = tokio::task::block_in_place(|| high_watermarks(&topic));
    let reader_catalog = Arc::new(
        Catalog::open(Arc::clone(&store), root, CatalogConfig::default())
            .await
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        reader_catalog.refresh().await.unwrap();
        let state = reader_catalog.state();
        let caught_up = high
            .iter()
            .all(|(p, h)| state.next_offset(&group, &topic, *p).unwrap_or(0) >= *h);
        if caught_up {
            break;
        }
        assert!(
            !running.is_finished(),
            "the compactor stopped: {:?}",
            running.await
        );
        assert!(
            Instant::now() < deadline,
            "the compactor did not reach {high:?} within 60 s: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let compacted = t_compact.elapsed();
    cancel.cancel();
    running.await.unwrap().unwrap();
    let stats = stats.snapshot();
    let state = reader_catalog.state();
    assert!(
        state.quarantine().is_empty(),
        "nothing of Debezium's is quarantined: {:?}",
        state.quarantine()
    );
    assert_eq!(stats.records_in, expected_records as u64, "{stats:?}");
    assert_eq!(
        stats.records_skipped, 2,
        "the tombstones are skipped: {stats:?}"
    );
    assert_eq!(stats.events_in, expected_records as u64 - 2, "{stats:?}");

    // SQL: the table is `<topic.prefix>.public.<table>`.
    let strata = StrataContext::new(Arc::clone(&reader_catalog), Arc::clone(&store)).unwrap();
    assert!(
        strata.table_names().contains(&full_name),
        "{full_name} not in {:?}",
        strata.table_names()
    );
    assert_eq!(
        strata_rows(&strata, &full_name).await,
        final_state,
        "current state"
    );
    let as_of = |t: &str| format!("as_of('{full_name}', TIMESTAMP '{t}')");
    assert_eq!(
        strata_rows(&strata, &as_of(&t0)).await,
        snapshot_state,
        "as of {t0}"
    );
    assert_eq!(
        strata_rows(&strata, &as_of(&t1)).await,
        state_a,
        "as of {t1}"
    );
    assert_eq!(
        strata_rows(&strata, &as_of(&t2)).await,
        final_state,
        "as of {t2}"
    );

    let changes = |from: &str, to: &str| {
        format!(
            "SELECT _op, CAST(id AS VARCHAR), _tx_id FROM changes('{full_name}', \
             TIMESTAMP '{from}', TIMESTAMP '{to}') ORDER BY _commit_pos, _seq"
        )
    };
    let log = batch_rows(&strata.query(&changes(&t0, &t2)).await.unwrap());
    let ops: Vec<(String, String)> = log
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let want: Vec<(String, String)> = [
        ("c", 5),
        ("u", 1),
        ("u", 2),
        ("d", 3),
        ("c", 6),
        ("u", 4),
        ("u", 6),
        ("d", 5),
        ("c", 7),
    ]
    .iter()
    .map(|(op, id)| ((*op).to_owned(), id.to_string()))
    .collect();
    assert_eq!(ops, want, "changes over the streaming phase");
    let tx_ids: Vec<&Option<String>> = log[4..].iter().map(|r| &r[2]).collect();
    assert!(
        tx_ids[0].is_some() && tx_ids.iter().all(|t| *t == tx_ids[0]),
        "the transaction's changes share one _tx_id: {tx_ids:?}"
    );
    let later = batch_rows(&strata.query(&changes(&t1, &t2)).await.unwrap());
    assert_eq!(
        later.len(),
        6,
        "changes after {t1}: phase B only: {later:?}"
    );
    let reads = batch_rows(
        &strata
            .query(&format!(
                "SELECT _op FROM changes('{full_name}', TIMESTAMP '2000-01-01T00:00:00Z', \
                 TIMESTAMP '{t0}')"
            ))
            .await
            .unwrap(),
    );
    assert_eq!(reads.len(), 4, "the snapshot: {reads:?}");
    assert!(reads.iter().all(|r| r[0].as_deref() == Some("r")));

    eprintln!(
        "timings: connect start -> first snapshot event {:.1}s, -> last event {:.1}s; \
         compactor caught up in {:.1}s; whole test {:.1}s",
        first_events.as_secs_f64(),
        debezium_done.as_secs_f64(),
        compacted.as_secs_f64(),
        t_test.elapsed().as_secs_f64()
    );
    drop(connect);
}

/// `s` with the regex metacharacters of librdkafka's topic patterns escaped.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = ".^$*+?()[]{}|\\".contains(c);
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}
