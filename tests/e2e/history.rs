//! History end to end: PostgreSQL -> capture -> Kafka -> compactor -> Parquet + catalog -> query,
//! judged against PostgreSQL itself.
//!
//! - `as_of` at five instants equals what PostgreSQL held then, row for row and cell for cell;
//!   `changes` between consecutive instants is exactly what was committed in between.
//! - A compactor killed (SIGKILL) ten times while changes stream in loses nothing and doubles
//!   nothing: every change is in exactly one committed segment row.
//! - Old snapshots thinned by `strata run` change no `as_of` answer, before or after `strata gc`
//!   deletes their files.
//!
//! The capture and the compactor run as separate `strata run` children over a fresh local storage
//! directory, with their own consumer group and topic pattern; the test reads that storage
//! in-process with [`StrataContext`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_catalog::{Catalog, TableId};
use strata_query::StrataContext;
use strata_query::snapshot::usable_snapshot;

use crate::support::{PgCapture, Strata, pg_connect, unique};

/// How long the compactor may take to catch up with everything committed.
const CATCH_UP: Duration = Duration::from_secs(60);

/// One test's history pipeline: the capture, a storage directory, and the compactor's settings.
struct Pipeline {
    capture: PgCapture,
    storage: tempfile::TempDir,
    group: String,
    instance: String,
    /// `[kafka] format`, with the capture's own schema topic when it is `avro`.
    kafka: Vec<(&'static str, String)>,
}

impl Pipeline {
    fn new(tag: &str) -> Self {
        Self::with_format(tag, "json")
    }

    /// A pipeline whose capture writes (and compactor reads) `[kafka] format`.
    fn with_format(tag: &str, format: &str) -> Self {
        let capture = PgCapture::new(tag);
        let kafka = vec![
            ("STRATA_KAFKA__FORMAT", format.to_owned()),
            ("STRATA_KAFKA__SCHEMA_TOPIC", capture.schema_topic()),
        ];
        Self {
            capture,
            storage: tempfile::tempdir().unwrap(),
            group: unique("e2e-history"),
            instance: unique("e2e-history-member"),
            kafka,
        }
    }

    /// The Kafka format settings, as environment pairs.
    fn kafka_env(&self) -> Vec<(&str, &str)> {
        self.kafka.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// `strata run` with the capture alone, once it streams (tables empty: no snapshot rows).
    async fn start_capture(&self, tables: &[&str]) -> Strata {
        self.capture.run_streaming(tables, &self.kafka_env()).await
    }

    /// `strata run` with the compactor alone, over this pipeline's storage, topics and group,
    /// once it has subscribed. Static group membership (`group.instance.id`): a restarted
    /// compactor takes over its dead predecessor's partitions at once instead of waiting out
    /// the session timeout.
    async fn start_compactor(&self, tables: &[&str]) -> Strata {
        let topics = format!("['^strata\\.{}\\..*']", self.capture.source);
        let storage = self.storage.path().to_str().unwrap().to_owned();
        let mut extra = self.kafka_env();
        extra.extend([
            ("STRATA_RUN__PARTS", r#"["compactor"]"#),
            ("STRATA_STORAGE__URL", &storage),
            ("STRATA_COMPACTOR__TOPICS", &topics),
            ("STRATA_COMPACTOR__GROUP_ID", &self.group),
            ("STRATA_COMPACTOR__FLUSH_INTERVAL", "\"500ms\""),
            // Snapshots every second once anything changed: reads go through them.
            ("STRATA_SNAPSHOTS__INTERVAL", "\"1s\""),
            ("STRATA_SNAPSHOTS__MIN_CHANGES", "1"),
            ("STRATA_SNAPSHOTS__MIN_CHANGE_RATIO", "0"),
            // Coalescing every second, two segments of a window are enough: reads and
            // kills meet coalesced segments too.
            ("STRATA_COALESCE__INTERVAL", "\"1s\""),
            ("STRATA_COALESCE__MIN_SEGMENTS", "2"),
            ("STRATA_COALESCE__SETTLE", "\"0s\""),
            (
                "STRATA_KAFKA__PROPERTIES__GROUP.INSTANCE.ID",
                &self.instance,
            ),
        ]);
        let env = self.capture.env(tables, &extra);
        let strata = self.capture.spawn(&["run"], &env);
        strata
            .wait_for_log("compactor subscribed", Duration::from_secs(30))
            .await;
        strata
    }

    /// Where the files of table `id` are kept: `<storage>/<source>/<namespace>/<table>`.
    fn table_dir(&self, id: &TableId) -> std::path::PathBuf {
        self.storage
            .path()
            .join(&id.source)
            .join(&id.namespace)
            .join(&id.table)
    }

    /// Runs `strata gc --older-than <older_than> --unsafe-allow-short-grace` over this
    /// pipeline's storage (nothing else may write to it then); its standard output.
    async fn gc(&self, older_than: &str) -> String {
        let storage = self.storage.path().to_str().unwrap().to_owned();
        let env = self
            .capture
            .env(&["t"], &[("STRATA_STORAGE__URL", storage.as_str())]);
        let mut gc = self.capture.spawn(
            &[
                "gc",
                "--older-than",
                older_than,
                "--unsafe-allow-short-grace",
            ],
            &env,
        );
        let exit = gc.wait_exit(Duration::from_secs(60)).await;
        let out = gc.stdout();
        assert!(exit.success(), "{out}\n{}", gc.log());
        out
    }

    /// The storage directory as an object store, and the catalog in it.
    async fn open(&self) -> (Arc<dyn ObjectStore>, Arc<Catalog>) {
        crate::support::open_local(self.storage.path()).await
    }

    /// The catalog's id of table `name` (short name), as the compactor recorded it.
    fn table_id(&self, catalog: &Catalog, name: &str) -> TableId {
        let table = self.capture.table(name);
        let state = catalog.state();
        let found = state.tables().find(|t| t.table == table).cloned();
        found.unwrap_or_else(|| {
            panic!(
                "the catalog has no table {table}; it has {:?}",
                state.tables().map(ToString::to_string).collect::<Vec<_>>()
            )
        })
    }
}

/// Runs `sql` and returns its rows, each cell in canonical text (see [`cell`]), with the column
/// names.
async fn query(strata: &StrataContext, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let batches = strata
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows_of(&batches)
}

fn rows_of(batches: &[RecordBatch]) -> (Vec<String>, Vec<Vec<String>>) {
    let names = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), row))
                    .collect(),
            );
        }
    }
    (names, rows)
}

/// One cell as canonical text, to compare with PostgreSQL's: `NULL`, a float in Rust's shortest
/// form, a timestamp as µs since the epoch, anything else as Arrow displays it (integers, exact
/// decimal text, strings, `true`/`false`).
fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    match array.data_type() {
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        _ => arrow::util::display::array_value_to_string(array, row).unwrap(),
    }
}

/// PostgreSQL's text of a nullable value, `NULL` for none.
fn pg_text(value: Option<String>) -> String {
    value.unwrap_or_else(|| "NULL".into())
}

/// PostgreSQL's current time, as `(TIMESTAMP literal in UTC, µs since the epoch)`; a few ms of
/// sleep on both sides keep commit times of neighbouring phases apart from it.
async fn pg_now(client: &tokio_postgres::Client) -> (String, i64) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let row = client
        .query_one(
            "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                    (extract(epoch FROM t) * 1000000)::int8 \
             FROM (SELECT clock_timestamp() AS t) s",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    (row.get(0), row.get(1))
}

// ------------------------------------------------------------------------------------------------
// as_of at five instants
// ------------------------------------------------------------------------------------------------

/// The columns of the typed table, in the order both sides select them.
const COLUMNS: &str = "id, name, amount, score, at, active, note";

/// The table as PostgreSQL holds it now, in canonical text per cell ([`cell`]'s forms).
async fn pg_rows(client: &tokio_postgres::Client, table: &str) -> Vec<Vec<String>> {
    client
        .query(
            &format!(
                "SELECT id::text, name, amount::text, score, \
                        ((extract(epoch FROM at) * 1000000)::int8)::text, active::text, note \
                 FROM {table} ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                r.get(0),
                r.get(1),
                pg_text(r.get(2)),
                r.get::<_, Option<f64>>(3)
                    .map_or_else(|| "NULL".into(), |f| f.to_string()),
                pg_text(r.get(4)),
                r.get(5),
                pg_text(r.get(6)),
            ]
        })
        .collect()
}

/// Runs `sql` (which ends in `RETURNING id`) and records one `op` change per returned row.
async fn change(
    tx: &tokio_postgres::Transaction<'_>,
    changes: &mut Vec<(String, i32)>,
    op: &str,
    sql: &str,
) {
    let rows = tx
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(!rows.is_empty(), "{sql} changed nothing");
    changes.extend(rows.iter().map(|r| (op.to_owned(), r.get::<_, i32>(0))));
}

/// The five phases of work, each a list of transactions, each a list of `(op, SQL)`; `{t}` stands
/// for the table.
fn phases() -> Vec<Vec<Vec<(&'static str, &'static str)>>> {
    vec![
        // 1: one multi-row insert.
        vec![vec![(
            "c",
            "INSERT INTO {t} (id, name, amount, score, at, active, note) VALUES \
             (1, 'one', 10.50, 1.5, '2026-01-01 10:00:00+00', true, 'first'), \
             (2, 'two', -0.01, -2.25, '2026-01-02 11:30:00.5+02', false, NULL), \
             (3, 'three', 12345678.99, 0.1, '1999-12-31 23:59:59.999999+00', true, 'x'), \
             (4, 'four', 0.00, 1e100, '2026-06-30 00:00:00+05:30', false, 'note 4'), \
             (5, 'five', 5.05, -0.0, '1970-01-01 00:00:00+00', true, NULL), \
             (6, 'six', NULL, NULL, NULL, true, 'nulls'), \
             (7, 'sieben ✓', 7.77, 3.141592653589793, '2030-03-03 03:03:03.03+00', false, ''), \
             (8, 'eight', 8.00, 8, '2026-08-08 08:08:08+00', true, 'eight') \
             RETURNING id",
        )]],
        // 2: single-statement transactions: updates of some columns, a delete.
        vec![
            vec![("u", "UPDATE {t} SET name = 'TWO' WHERE id = 2 RETURNING id")],
            vec![(
                "u",
                "UPDATE {t} SET amount = amount * 2, at = at + interval '1 day' WHERE id = 3 \
                 RETURNING id",
            )],
            vec![("u", "UPDATE {t} SET note = NULL WHERE id = 4 RETURNING id")],
            vec![("d", "DELETE FROM {t} WHERE id = 5 RETURNING id")],
        ],
        // 3: one transaction of mixed work, touching a key twice.
        vec![vec![
            (
                "c",
                "INSERT INTO {t} VALUES (9, 'nine', 9.99, 9.5, now(), false, 'new') RETURNING id",
            ),
            (
                "c",
                "INSERT INTO {t} VALUES (10, 'ten', 1.00, 10, NULL, true, NULL) RETURNING id",
            ),
            (
                "u",
                "UPDATE {t} SET score = score + 1, at = '2026-01-01 10:00:00.000001+00' \
                 WHERE id = 1 RETURNING id",
            ),
            ("d", "DELETE FROM {t} WHERE id = 2 RETURNING id"),
            (
                "u",
                "UPDATE {t} SET note = 'changed in the same tx' WHERE id = 9 RETURNING id",
            ),
        ]],
        // 4: re-insert of a deleted key, a multi-row update, a delete.
        vec![
            vec![(
                "c",
                "INSERT INTO {t} VALUES (5, 'five again', 55.55, 5.5, '2026-05-05 05:05:05+00', \
                 false, 'reborn') RETURNING id",
            )],
            vec![(
                "u",
                "UPDATE {t} SET active = NOT active WHERE id % 2 = 0 RETURNING id",
            )],
            vec![("d", "DELETE FROM {t} WHERE id = 10 RETURNING id")],
        ],
        // 5: a bit of everything in two transactions.
        vec![
            vec![
                (
                    "u",
                    "UPDATE {t} SET name = 'five, third life', amount = NULL WHERE id = 5 RETURNING id",
                ),
                ("d", "DELETE FROM {t} WHERE id = 9 RETURNING id"),
            ],
            vec![
                (
                    "c",
                    "INSERT INTO {t} (id, name, active) VALUES (11, 'eleven', false) RETURNING id",
                ),
                (
                    "u",
                    "UPDATE {t} SET amount = amount + 0.01, note = E'unicode \\u00e9 \\U0001F980' \
                     WHERE id = 3 RETURNING id",
                ),
            ],
        ],
    ]
}

/// Counts per op of a list of `(op, key)` changes, and the sorted changes themselves.
fn summarize(changes: &[(String, i32)]) -> (BTreeMap<String, usize>, Vec<(String, i32)>) {
    let mut counts = BTreeMap::new();
    for (op, _) in changes {
        *counts.entry(op.clone()).or_default() += 1;
    }
    let mut sorted = changes.to_vec();
    sorted.sort();
    (counts, sorted)
}

/// Compares strata's rows with PostgreSQL's, naming the first key and column that differ.
fn assert_same_rows(what: &str, names: &[String], pg: &[Vec<String>], strata: &[Vec<String>]) {
    let by_key = |rows: &[Vec<String>]| -> BTreeMap<i64, Vec<String>> {
        rows.iter()
            .map(|r| (r[0].parse::<i64>().unwrap(), r.clone()))
            .collect()
    };
    let (pg_map, strata_map) = (by_key(pg), by_key(strata));
    for (id, want) in &pg_map {
        let Some(got) = strata_map.get(id) else {
            panic!("{what}: key {id} is missing; PostgreSQL has {want:?}");
        };
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            assert_eq!(
                g,
                w,
                "{what}: key {id}, column {}: strata has {g:?}, PostgreSQL {w:?}\n  \
                 strata:     {got:?}\n  PostgreSQL: {want:?}",
                names.get(i).map_or("?", String::as_str)
            );
        }
    }
    for (id, got) in &strata_map {
        assert!(
            pg_map.contains_key(id),
            "{what}: key {id} should not be there; strata has {got:?}"
        );
    }
    assert_eq!(
        strata.len(),
        pg.len(),
        "{what}: {} rows, PostgreSQL has {} (a key twice?)",
        strata.len(),
        pg.len()
    );
}

/// Polls `count(*)` of `changes(<table>, <from>, <until>)` until it is `want`; fails after
/// [`CATCH_UP`] or as soon as there are more.
async fn wait_for_changes(
    strata: &StrataContext,
    table: &str,
    range: (&str, &str),
    want: usize,
    compactor: &Strata,
) {
    let sql = format!(
        "SELECT count(*) FROM changes('{table}', {}, {})",
        range.0, range.1
    );
    let started = Instant::now();
    let mut last = None;
    loop {
        // Before the first commit the table is unknown: keep waiting.
        let seen = match strata.refresh().await {
            Ok(()) => match strata.query(&sql).await {
                Ok(batches) => Some(rows_of(&batches).1[0][0].parse::<usize>().unwrap()),
                Err(e) => {
                    last = Some(e.to_string());
                    None
                }
            },
            Err(e) => {
                last = Some(e.to_string());
                None
            }
        };
        if let Some(n) = seen {
            assert!(
                n <= want,
                "{n} changes in the catalog, but only {want} were committed to PostgreSQL"
            );
            if n == want {
                return;
            }
            last = Some(format!("{n} of {want} changes"));
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "the compactor did not catch up within {CATCH_UP:?}: {}\ncompactor log:\n{}",
            last.unwrap_or_default(),
            compactor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_equals_postgres_at_five_instants() {
    five_instants(Pipeline::new("hist")).await;
}

/// The same history, carried through Kafka as strata's Avro records (`[kafka] format = "avro"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_equals_postgres_at_five_instants_over_avro() {
    five_instants(Pipeline::with_format("histavro", "avro")).await;
}

/// Creates the typed table `t` and starts the pipeline's capture and compactor on it: the
/// table's name, a PostgreSQL client, the capture, the compactor.
async fn start_typed_table(
    pipeline: &Pipeline,
) -> (String, tokio_postgres::Client, Strata, Strata) {
    let table = pipeline.capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, amount numeric(14, 2), \
             score float8, at timestamptz, active boolean NOT NULL, note text)"
        ))
        .await
        .unwrap();
    let capture = pipeline.start_capture(&["t"]).await;
    let compactor = pipeline.start_compactor(&["t"]).await;
    (table, client, capture, compactor)
}

/// For 5 instants at which PostgreSQL's state was recorded, `as_of` equals it row for row and
/// `changes` between them equals the changes committed.
async fn five_instants(pipeline: Pipeline) {
    let started = Instant::now();
    let (table, mut client, _capture, compactor) = start_typed_table(&pipeline).await;

    let (t0, t0_us) = pg_now(&client).await;
    let mut instants = vec![t0];
    let mut micros = vec![t0_us];
    let mut states = Vec::new();
    let mut committed = Vec::new();
    let (store, catalog) = pipeline.open().await;
    for (i, phase) in phases().into_iter().enumerate() {
        if i == 2 || i == 4 {
            // Phases 3 and 5 start after a snapshot of the table up to the phase before:
            // the instants from 2 on are read from a snapshot plus later changes.
            wait_for_snapshot_after(&pipeline, &catalog, micros[i - 1], &compactor).await;
        }
        let mut changes = Vec::new();
        for statements in phase {
            let tx = client.transaction().await.unwrap();
            for (op, sql) in statements {
                change(&tx, &mut changes, op, &sql.replace("{t}", &table)).await;
            }
            tx.commit().await.unwrap();
        }
        let (t, t_us) = pg_now(&client).await;
        instants.push(t);
        micros.push(t_us);
        states.push(pg_rows(&client, &table).await);
        committed.push(changes);
    }

    catalog.refresh().await.unwrap();
    let id = pipeline.table_id(&catalog, "t");
    let state = catalog.state();
    for i in [2, 4] {
        let snapshot = usable_snapshot(&state, &id, micros[i])
            .unwrap_or_else(|| panic!("no usable snapshot at instant {i}"));
        assert!(
            snapshot.as_of_ts > micros[i - 1],
            "instant {i} is read from the snapshot of phase {i}"
        );
    }
    let strata = StrataContext::new(Arc::clone(&catalog), store).unwrap();
    let name = format!("public.{table}");
    let total: usize = committed.iter().map(Vec::len).sum();
    let range = (
        format!("TIMESTAMP '{}'", instants[0]),
        format!("TIMESTAMP '{}'", instants[5]),
    );
    wait_for_changes(&strata, &name, (&range.0, &range.1), total, &compactor).await;
    let caught_up = started.elapsed();

    for i in 1..=5 {
        let (t_prev, t) = (&instants[i - 1], &instants[i]);
        let what = format!("as_of at instant {i} ({t})");
        let (names, rows) = query(
            &strata,
            &format!("SELECT {COLUMNS} FROM as_of('{name}', TIMESTAMP '{t}') ORDER BY id"),
        )
        .await;
        assert_same_rows(&what, &names, &states[i - 1], &rows);

        let (_, rows) = query(
            &strata,
            &format!(
                "SELECT _op, id FROM changes('{name}', TIMESTAMP '{t_prev}', TIMESTAMP '{t}')"
            ),
        )
        .await;
        let got: Vec<(String, i32)> = rows
            .iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect();
        let (got_counts, got_sorted) = summarize(&got);
        let (want_counts, want_sorted) = summarize(&committed[i - 1]);
        assert_eq!(
            got_counts, want_counts,
            "changes in phase {i} ({t_prev} .. {t}): counts per op differ\n  strata:     \
             {got_sorted:?}\n  PostgreSQL: {want_sorted:?}"
        );
        assert_eq!(
            got_sorted, want_sorted,
            "changes in phase {i} ({t_prev} .. {t}): keys differ"
        );
    }

    let (names, rows) = query(
        &strata,
        &format!("SELECT {COLUMNS} FROM {name} ORDER BY id"),
    )
    .await;
    assert_same_rows(
        "current state",
        &names,
        &pg_rows(&client, &table).await,
        &rows,
    );
    // `strata status` shows the table's history: every change once, the snapshots.
    let storage = pipeline.storage.path().to_str().unwrap().to_owned();
    let env = pipeline.capture.env(
        &["t"],
        &[
            ("STRATA_STORAGE__URL", storage.as_str()),
            ("STRATA_COMPACTOR__GROUP_ID", pipeline.group.as_str()),
        ],
    );
    let mut status = pipeline.capture.spawn(&["status"], &env);
    let exit = status.wait_exit(Duration::from_secs(60)).await;
    let out = status.stdout();
    assert!(exit.success(), "{out}\n{}", status.log());
    let line = out
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("no line for {id}:\n{out}"));
    eprintln!("strata status: {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[2], total.to_string(), "change rows: {line}");
    assert!(words[3].parse::<usize>().unwrap() >= 2, "snapshots: {line}");
    // The changes since the newest snapshot against the default rule's 1,000,000 (`status`
    // runs without the test's snapshot settings), or "-" once a snapshot reaches the
    // watermark.
    if words[6] != "-" {
        let (since, needed) = words[6]
            .split_once('/')
            .unwrap_or_else(|| panic!("changes/next snapshot at: {line}"));
        // `N`, or `N..M` when segments straddle the snapshot's instant or the watermark.
        let least = since.split_once("..").map_or(since, |(least, _)| least);
        assert!(least.parse::<usize>().unwrap() < total, "{line}");
        assert_eq!(needed, "1000000", "{line}");
    }
    assert!(out.contains("quarantine      empty"), "{out}");
    assert!(
        out.contains(&format!(
            "compactor       group {}: lag 0 records",
            pipeline.group
        )),
        "caught up, so nothing is in Kafka but not in the history:\n{out}"
    );

    let coalesced = catalog
        .state()
        .segments(&id)
        .iter()
        .filter(|e| e.segment.content_version.is_some())
        .count();
    eprintln!(
        "as_of_equals_postgres_at_five_instants ({:?}): {total} changes in 5 phases, caught up \
         after {caught_up:?}, done after {:?}; {coalesced} coalesced segments read",
        pipeline.kafka[0].1,
        started.elapsed()
    );
}

/// Waits until the catalog holds a snapshot of the pipeline's table `t` taken after `after_us`.
async fn wait_for_snapshot_after(
    pipeline: &Pipeline,
    catalog: &Catalog,
    after_us: i64,
    compactor: &Strata,
) {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        catalog.refresh().await.unwrap();
        let state = catalog.state();
        let table = pipeline.capture.table("t");
        let newest = state
            .tables()
            .find(|t| t.table == table)
            .and_then(|t| state.table(t))
            .and_then(|t| t.snapshots().last())
            .map(|s| s.as_of_ts);
        if newest.is_some_and(|ts| ts > after_us) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot after {after_us} within {CATCH_UP:?} (newest: {newest:?}); compactor \
             log:\n{}",
            compactor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// killed compactor
// ------------------------------------------------------------------------------------------------

/// A small deterministic pseudo-random sequence (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Keys the load writes: `1..=KEYS`.
const KEYS: u64 = 500;

/// A committed change as the load made it: op, key, and the `v` it wrote (`None` for a delete,
/// whose image carries the key only).
type LoadChange = (&'static str, i32, Option<i64>);

/// Writes small transactions (1–3 changes over [`KEYS`] keys; every insert or update writes a
/// fresh `v`) until `stop`, and returns every change that committed.
async fn load(table: String, stop: Arc<AtomicBool>) -> Vec<LoadChange> {
    let mut client = pg_connect().await;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (id, v, note) VALUES ($1, $2, $3)"
        ))
        .await
        .unwrap();
    let update = client
        .prepare(&format!("UPDATE {table} SET v = $2 WHERE id = $1"))
        .await
        .unwrap();
    let delete = client
        .prepare(&format!("DELETE FROM {table} WHERE id = $1"))
        .await
        .unwrap();
    let mut rng = Rng(0x5EED_0F41_570A_7E00);
    let mut live: HashSet<i32> = HashSet::new();
    let mut log = Vec::new();
    let mut v: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let tx = client.transaction().await.unwrap();
        let mut pending = Vec::new();
        for _ in 0..=rng.below(3) {
            let id = rng.below(KEYS) as i32 + 1;
            v += 1;
            if live.contains(&id) {
                if rng.below(4) == 0 {
                    assert_eq!(tx.execute(&delete, &[&id]).await.unwrap(), 1);
                    live.remove(&id);
                    pending.push(("d", id, None));
                } else {
                    assert_eq!(tx.execute(&update, &[&id, &v]).await.unwrap(), 1);
                    pending.push(("u", id, Some(v)));
                }
            } else {
                let note = format!("row {id} written as {v}");
                tx.execute(&insert, &[&id, &v, &note]).await.unwrap();
                live.insert(id);
                pending.push(("c", id, Some(v)));
            }
        }
        tx.commit().await.unwrap();
        log.extend(pending);
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    log
}

/// Every `_event_id` in the raw segments the catalog lists for `table`, with how many times it
/// occurs, and the number of segments.
async fn segment_event_ids(
    store: &Arc<dyn ObjectStore>,
    catalog: &Catalog,
    table: &TableId,
) -> (HashMap<Vec<u8>, usize>, usize) {
    let state = catalog.state();
    let segments = state.segments(table);
    let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
    for entry in segments {
        let path = Path::from(entry.segment.path.as_str());
        let bytes = store
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("segment {path} listed by the catalog: {e}"))
            .bytes()
            .await
            .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("segment {path} is not Parquet: {e}"))
            .build()
            .unwrap();
        let mut rows = 0;
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch
                .column_by_name("_event_id")
                .unwrap_or_else(|| panic!("segment {path} has no _event_id"));
            let column = column.as_fixed_size_binary();
            for i in 0..column.len() {
                *ids.entry(column.value(i).to_vec()).or_default() += 1;
            }
            rows += batch.num_rows();
        }
        assert_eq!(
            rows as u64, entry.segment.rows,
            "segment {path}: {rows} rows, the catalog says {}",
            entry.segment.rows
        );
    }
    (ids, segments.len())
}

/// Parquet files under the table's `changes/` directory that no committed segment names: what
/// killed compactors wrote but never committed.
fn orphan_files(storage: &std::path::Path, table: &TableId, catalog: &Catalog) -> usize {
    let dir = storage
        .join(&table.source)
        .join(&table.namespace)
        .join(&table.table)
        .join("changes");
    let state = catalog.state();
    let listed: BTreeSet<String> = state
        .segments(table)
        .iter()
        .map(|e| e.segment.path.clone())
        .collect();
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let path = format!(
                        "{}/{}/{}/changes/{}",
                        table.source,
                        table.namespace,
                        table.table,
                        e.file_name().to_string_lossy()
                    );
                    !listed.contains(&path)
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_compactor_loses_and_doubles_nothing() {
    let started = Instant::now();
    let pipeline = Pipeline::new("hkill");
    let table = pipeline.capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v int8 NOT NULL, note text NOT NULL)"
        ))
        .await
        .unwrap();
    let _capture = pipeline.start_capture(&["t"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(table.clone(), Arc::clone(&stop)));

    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let mut compactor = pipeline.start_compactor(&["t"]).await;
    let restarts = 10;
    // Per killed run: how long it ran, and how many catalog commits it logged.
    let mut runs: Vec<(Duration, usize)> = Vec::new();
    for _ in 0..restarts {
        let run = Duration::from_millis(500 + rng.below(2500));
        tokio::time::sleep(run).await;
        compactor.kill9();
        runs.push((run, compactor.log().matches(" committed").count()));
        compactor = pipeline.start_compactor(&["t"]).await;
    }
    stop.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();
    let load_done = started.elapsed();

    let (store, catalog) = pipeline.open().await;
    let strata = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    let name = format!("public.{table}");
    let all = ("0", "TIMESTAMP '2100-01-01 00:00:00'");
    wait_for_changes(&strata, &name, all, log.len(), &compactor).await;
    // One more flush interval: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for_changes(&strata, &name, all, log.len(), &compactor).await;
    let caught_up = started.elapsed();

    // (a) Storage level: each change is one row of one committed segment.
    catalog.refresh().await.unwrap();
    let table_id = pipeline.table_id(&catalog, "t");
    let (ids, segments) = segment_event_ids(&store, &catalog, &table_id).await;
    let doubled: Vec<_> = ids.values().filter(|&&n| n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} change events are in more than one segment row ({} distinct events)",
        doubled.len(),
        ids.len()
    );
    let stored: usize = ids.values().sum();
    assert_eq!(
        stored,
        log.len(),
        "the committed segments hold {stored} change rows, PostgreSQL committed {} changes",
        log.len()
    );

    // (b) Query level: the very changes the load committed, each once.
    let (_, rows) = query(
        &strata,
        &format!(
            "SELECT _op, id, v FROM changes('{name}', {}, {}) ORDER BY _commit_pos, _seq",
            all.0, all.1
        ),
    )
    .await;
    let count = |changes: Vec<(String, i32, String)>| {
        let mut counts: BTreeMap<(String, i32, String), usize> = BTreeMap::new();
        for c in changes {
            *counts.entry(c).or_default() += 1;
        }
        counts
    };
    let got = count(
        rows.into_iter()
            .map(|r| {
                let v = if r[0] == "d" {
                    "NULL".into()
                } else {
                    r[2].clone()
                };
                (r[0].clone(), r[1].parse().unwrap(), v)
            })
            .collect(),
    );
    let want = count(
        log.iter()
            .map(|&(op, id, v)| (op.to_owned(), id, pg_text(v.map(|v| v.to_string()))))
            .collect(),
    );
    let lost: Vec<_> = want
        .iter()
        .filter(|(c, n)| got.get(*c).copied().unwrap_or(0) < **n)
        .take(10)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(c, n)| want.get(*c).copied().unwrap_or(0) < **n)
        .take(10)
        .collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "changes differ from what PostgreSQL committed: lost (op, key, v) {lost:?}, \
         doubled or unknown {extra:?}"
    );

    // (c) State: as of now and the current-state table equal PostgreSQL.
    let pg: Vec<Vec<String>> = client
        .query(
            &format!("SELECT id::text, v::text, note FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1), r.get(2)])
        .collect();
    let (now, _) = pg_now(&client).await;
    let (names, rows) = query(
        &strata,
        &format!("SELECT id, v, note FROM as_of('{name}', TIMESTAMP '{now}') ORDER BY id"),
    )
    .await;
    assert_same_rows(&format!("as_of({now})"), &names, &pg, &rows);
    let (names, rows) = query(
        &strata,
        &format!("SELECT id, v, note FROM {name} ORDER BY id"),
    )
    .await;
    assert_same_rows("current state", &names, &pg, &rows);

    // (d) `strata gc` deletes what the killed compactors wrote but never committed, and
    // nothing the history needs. The last compactor is stopped first: with `--older-than 0s`
    // a flush being committed would lose its files.
    compactor.terminate();
    compactor.wait_exit(Duration::from_secs(60)).await;
    // Its coalescer may have committed since the reads above.
    catalog.refresh().await.unwrap();
    // Kills do not always land between a segment's write and its commit: one orphan is made
    // for sure, a copy of a committed segment under a name no commit knows.
    let changes = pipeline.table_dir(&table_id).join("changes");
    let committed = catalog.state().segments(&table_id)[0].segment.path.clone();
    let planted = changes.join("never-committed.parquet");
    std::fs::copy(pipeline.storage.path().join(&committed), &planted).unwrap();
    let orphans = orphan_files(pipeline.storage.path(), &table_id, &catalog);
    assert!(orphans >= 1);
    let out = pipeline.gc("0s").await;
    let deleted: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("orphaned"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no orphaned line:\n{out}"));
    assert!(
        deleted >= orphans,
        "gc deleted {deleted} files, the changes directory had {orphans} orphans:\n{out}"
    );
    assert_eq!(
        orphan_files(pipeline.storage.path(), &table_id, &catalog),
        0,
        "{out}"
    );
    assert!(!planted.exists() && pipeline.storage.path().join(&committed).exists());
    let (names, rows) = query(
        &strata,
        &format!("SELECT id, v, note FROM {name} ORDER BY id"),
    )
    .await;
    assert_same_rows("current state after gc", &names, &pg, &rows);

    let coalesced = catalog
        .state()
        .segments(&table_id)
        .iter()
        .filter(|e| e.segment.content_version.is_some())
        .count();
    eprintln!(
        "killed runs (ran, commits): {:?}",
        runs.iter()
            .map(|(ran, commits)| (format!("{:.1}s", ran.as_secs_f64()), *commits))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "killed_compactor_loses_and_doubles_nothing ({table_id}): {restarts} restarts, {} changes ({} c, {} u, \
         {} d), {segments} segments in {} catalog versions, {} orphan files; load stopped after \
         {load_done:?}, caught up after {caught_up:?}, done after {:?}; gc deleted {deleted} files; \
         {coalesced} coalesced segments",
        log.len(),
        log.iter().filter(|c| c.0 == "c").count(),
        log.iter().filter(|c| c.0 == "u").count(),
        log.iter().filter(|c| c.0 == "d").count(),
        catalog.version().get(),
        orphans,
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// thinned snapshots
// ------------------------------------------------------------------------------------------------

/// Snapshot files of the pipeline's table `t` on disk, relative to the storage root.
fn snapshot_files(pipeline: &Pipeline, id: &TableId) -> BTreeSet<String> {
    let dir = pipeline.table_dir(id).join("snapshots");
    let mut files = BTreeSet::new();
    for version in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(version.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = file.path();
            let relative = path.strip_prefix(pipeline.storage.path()).unwrap();
            files.insert(relative.to_str().unwrap().to_owned());
        }
    }
    files
}

/// `as_of` at each instant equals PostgreSQL's state recorded then.
async fn as_of_equals(
    strata: &StrataContext,
    table: &str,
    instants: &[String],
    states: &[Vec<Vec<String>>],
) {
    for (i, (t, state)) in instants.iter().zip(states).enumerate() {
        let (names, rows) = query(
            strata,
            &format!("SELECT {COLUMNS} FROM as_of('public.{table}', TIMESTAMP '{t}') ORDER BY id"),
        )
        .await;
        assert_same_rows(&format!("as_of at instant {}", i + 1), &names, state, &rows);
    }
}

/// `strata run` thins a table's old snapshots as it builds new ones (here every snapshot but
/// the newest is past `keep_all_for` and `keep_daily_for`, so only the newest of each week
/// stays): `as_of` still equals PostgreSQL at every instant, before and after `strata gc`
/// deletes the thinned snapshots' files, and gc leaves every file a snapshot still names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinned_snapshots_change_no_answer_and_gc_deletes_their_files() {
    let mut pipeline = Pipeline::new("thin");
    pipeline.kafka.extend([
        ("STRATA_SNAPSHOTS__KEEP_ALL_FOR", "\"0s\"".to_owned()),
        ("STRATA_SNAPSHOTS__KEEP_DAILY_FOR", "\"0s\"".to_owned()),
    ]);
    let (table, mut client, _capture, compactor) = start_typed_table(&pipeline).await;
    let (store, catalog) = pipeline.open().await;

    // Five phases; before each from the third on, a snapshot after the phase two back (the
    // changes of the phase in between moved the watermark past it): three snapshots at least
    // (the snapshotter builds one each second something changed), most of them thinned.
    let (mut instants, mut micros, mut states, mut total) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (i, phase) in phases().into_iter().enumerate() {
        if i >= 2 {
            wait_for_snapshot_after(&pipeline, &catalog, micros[i - 2], &compactor).await;
        }
        for statements in phase {
            let tx = client.transaction().await.unwrap();
            let mut changes = Vec::new();
            for (op, sql) in statements {
                change(&tx, &mut changes, op, &sql.replace("{t}", &table)).await;
            }
            tx.commit().await.unwrap();
            total += changes.len();
        }
        let (t, t_us) = pg_now(&client).await;
        instants.push(t);
        micros.push(t_us);
        states.push(pg_rows(&client, &table).await);
    }
    // The newest snapshot is kept and so is the newest of each older week: two, or three when
    // the test ran across a Monday 00:00 UTC.
    let id = pipeline.table_id(&catalog, "t");
    let deadline = Instant::now() + CATCH_UP;
    let kept = loop {
        catalog.refresh().await.unwrap();
        let kept = catalog.state().table(&id).unwrap().snapshots().to_vec();
        if kept.len() <= 3 && compactor.log().contains("old snapshots removed") {
            break kept;
        }
        assert!(
            Instant::now() < deadline,
            "{} snapshots left, none removed; compactor log:\n{}",
            kept.len(),
            compactor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let removal = catalog
        .read_commit(strata_catalog::CatalogVersion(
            catalog.state().version().get(),
        ))
        .await
        .unwrap();
    eprintln!(
        "snapshots kept: {:?}; newest commit: {} (format {})",
        kept.iter().map(|s| s.as_of_ts).collect::<Vec<_>>(),
        removal.info.operation,
        removal.format
    );

    let strata = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    let name = format!("public.{table}");
    let range = (
        "TIMESTAMP '2000-01-01 00:00:00'".to_owned(),
        format!("TIMESTAMP '{}'", instants[instants.len() - 1]),
    );
    wait_for_changes(&strata, &name, (&range.0, &range.1), total, &compactor).await;
    as_of_equals(&strata, &table, &instants, &states).await;

    // The thinned snapshots' files are still there (a query of an older version may read
    // them) until gc runs with a grace their removal is older than. Nothing else writes now:
    // the snapshots kept are read again once strata has stopped (it may have built and thinned
    // once more since the loop above saw the first removal).
    drop(compactor);
    catalog.refresh().await.unwrap();
    let kept = catalog.state().table(&id).unwrap().snapshots().to_vec();
    assert!(kept.len() <= 3, "{} snapshots left", kept.len());
    let referenced: BTreeSet<String> = kept.iter().flat_map(|s| s.paths.clone()).collect();
    let before = snapshot_files(&pipeline, &id);
    assert!(
        before.len() > referenced.len() && referenced.is_subset(&before),
        "on disk {before:?}, referenced {referenced:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = pipeline.gc("1s").await;
    assert_eq!(
        snapshot_files(&pipeline, &id),
        referenced,
        "gc deleted the thinned snapshots' files and nothing a snapshot names:\n{out}"
    );
    let (store, catalog) = pipeline.open().await;
    let strata = StrataContext::new(catalog, store).unwrap();
    as_of_equals(&strata, &table, &instants, &states).await;
}
