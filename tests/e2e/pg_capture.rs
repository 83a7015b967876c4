//! PostgreSQL capture end to end: `strata run` against the stack's PostgreSQL and Kafka, judged by
//! the Debezium events a consumer reads back (exact values, order, transactions, positions).
//!
//! Every test has its own source, slot, publication, tables and topics ([`PgCapture`]), dropped at
//! the end even when the test fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    ChangeEvent, PgCapture, TopicReader, json_eq, parse_lsn, pg_connect, slot_state,
};

/// Columns of the all-types table: name, SQL type, and the PostgreSQL expression that computes the
/// column's Debezium JSON from the stored value, independently of strata's value parser.
const TYPED_COLUMNS: &[(&str, &str, &str)] = &[
    ("b", "bool", "to_jsonb(b)"),
    ("i2", "int2", "to_jsonb(i2)"),
    ("i4", "int4", "to_jsonb(i4)"),
    ("i8", "int8", "to_jsonb(i8)"),
    // to_jsonb writes NaN and ±Infinity as the strings Debezium uses.
    ("f4", "float4", "to_jsonb(f4)"),
    ("f8", "float8", "to_jsonb(f8)"),
    ("n", "numeric", "to_jsonb(n::text)"),
    ("t", "text", "to_jsonb(t)"),
    ("vc", "varchar(40)", "to_jsonb(vc)"),
    ("c", "char(6)", "to_jsonb(c)"),
    // encode() breaks base64 into lines of 76.
    (
        "by",
        "bytea",
        r"to_jsonb(translate(encode(by, 'base64'), E'\n', ''))",
    ),
    ("d", "date", "to_jsonb(d - date '1970-01-01')"),
    (
        "ts",
        "timestamp",
        "to_jsonb((extract(epoch FROM ts) * 1000000)::int8)",
    ),
    // ISO-8601 in UTC with only the fraction digits needed.
    (
        "tz",
        "timestamptz",
        r#"to_jsonb(regexp_replace(to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\.?0+$', '') || 'Z')"#,
    ),
    (
        "tm",
        "time",
        "to_jsonb((extract(epoch FROM tm) * 1000000)::int8)",
    ),
    ("u", "uuid", "to_jsonb(u::text)"),
    ("j", "json", "to_jsonb(j::text)"),
    ("jb", "jsonb", "to_jsonb(jb::text)"),
    ("ai", "int4[]", "to_jsonb(ai)"),
    ("at", "text[]", "to_jsonb(at)"),
];

/// Rows of the all-types table (every column but `id`, in [`TYPED_COLUMNS`] order).
const TYPED_ROWS: &[&str] = &[
    // Ordinary values, awkward text.
    r#"true, -32768, 2147483647, -9223372036854775808, 3.14, -2.718281828459045,
       12345678901234567890.123456789,
       E'unicode: h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F980, quotes: ''single'' "double", backslashes: \\ \\\\, newline:\nand tab:\tend\r\n',
       E'varchar \u2713', 'ab', '\x00ff00017f80'::bytea,
       '2026-11-25', '2026-11-25 10:00:00.123456', '2026-11-25 10:00:00.123456+05:30', '23:59:59.999999',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 2,  "a": [1, "x"]}',
       '{"b": 2, "a": [1, "x"], "nested": {"k": null}}',
       ARRAY[1, NULL, -3], ARRAY['a,b', 'say "hi"', NULL, 'back\slash', '', 'NULL', '{braces}']"#,
    // Limits and special values.
    r#"false, 32767, -2147483648, 9223372036854775807, 'NaN', 'Infinity',
       -0.000000000000000000001, '', '', 'abcdef', '\x'::bytea,
       '0044-03-15 BC', '1969-12-31 23:59:59.999999', '1960-01-01 00:00:00.5-08', '00:00:00',
       '00000000-0000-0000-0000-000000000000', 'null', '[]',
       '{}', '{}'"#,
    r#"true, 0, 0, 0, '-Infinity', 'NaN', 'NaN', 'x', 'x', 'x',
       decode((SELECT string_agg(lpad(to_hex(g), 2, '0'), '') FROM generate_series(0, 255) g), 'hex'),
       '1970-01-01', '2000-02-29 12:00:00', '2000-02-29 12:00:00Z', '12:34:56.5',
       'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', '"string with \"escapes\" and \u2713"',
       '{"a": 1.50, "big": 123456789012345678901234567890}',
       '{NULL}', '{NULL}'"#,
    // Every column NULL.
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     NULL, NULL, NULL, NULL, NULL",
];

async fn insert_typed_rows(client: &tokio_postgres::Client, table: &str, first_id: i32) {
    let columns: Vec<&str> = TYPED_COLUMNS.iter().map(|c| c.0).collect();
    let values: Vec<String> = TYPED_ROWS
        .iter()
        .zip(first_id..)
        .map(|(row, id)| format!("({id}, {row})"))
        .collect();
    client
        .batch_execute(&format!(
            "INSERT INTO {table} (id, {}) VALUES {}",
            columns.join(", "),
            values.join(",\n")
        ))
        .await
        .unwrap_or_else(|e| panic!("inserting the typed rows: {e:?}"));
}

/// Every row's Debezium `after`, as PostgreSQL computes it.
async fn expected_typed_rows(client: &tokio_postgres::Client, table: &str) -> BTreeMap<i64, Value> {
    let fields: Vec<String> = TYPED_COLUMNS
        .iter()
        .map(|(name, _, expr)| format!("'{name}', COALESCE({expr}, 'null'::jsonb)"))
        .collect();
    client
        .query(
            &format!(
                "SELECT id::int8, jsonb_build_object('id', id, {})::text FROM {table}",
                fields.join(", ")
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect()
}

/// Asserts `after` has exactly the expected columns, each with the expected value.
fn assert_row(id: i64, got: &Value, want: &Value) {
    let got = got
        .as_object()
        .unwrap_or_else(|| panic!("row {id}: after is {got}"));
    let want = want.as_object().unwrap();
    let got_columns: BTreeSet<&String> = got.keys().collect();
    let want_columns: BTreeSet<&String> = want.keys().collect();
    assert_eq!(got_columns, want_columns, "row {id}: columns differ");
    for (column, want) in want {
        let got = &got[column];
        assert!(
            json_eq(got, want),
            "row {id}, column {column}: got {got}, want {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_snapshot_and_stream() {
    let capture = PgCapture::new("types");
    let table = capture.table("t");
    let client = pg_connect().await;
    let columns: Vec<String> = TYPED_COLUMNS
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int4 PRIMARY KEY, {})",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let rows = TYPED_ROWS.len() as i64;
    insert_typed_rows(&client, &table, 1).await;

    let _strata = capture.run_streaming(&["t"], &[]).await;
    insert_typed_rows(&client, &table, 101).await;

    let expected = expected_typed_rows(&client, &table).await;
    assert_eq!(expected.len() as i64, 2 * rows);
    let mut reader = TopicReader::open(&capture.topic("t"), Duration::from_secs(30)).await;
    reader
        .read_count(expected.len(), Duration::from_secs(60))
        .await;
    reader.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(reader.events.len(), expected.len(), "one event per row");

    let mut seen = BTreeSet::new();
    for event in &reader.events {
        let id = event.after()["id"].as_i64().unwrap();
        assert!(seen.insert(id), "row {id} captured twice");
        let (op, snapshot) = if id < 100 {
            ("r", "true")
        } else {
            ("c", "false")
        };
        assert_eq!(event.op(), op, "row {id}");
        assert_eq!(event.source()["snapshot"], snapshot, "row {id}");
        assert_eq!(event.source()["table"], table.as_str());
        assert_eq!(event.source()["schema"], "public");
        assert_eq!(event.before(), &Value::Null, "row {id}");
        assert_eq!(event.key, Some(json!({ "id": id })), "row {id}");
        assert_row(id, event.after(), &expected[&id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_column_is_a_placeholder_not_null() {
    let capture = PgCapture::new("toast");
    let table = capture.table("t");
    let client = pg_connect().await;
    // 12,800 random hex characters, stored out of line (EXTERNAL: never compressed inline).
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, big text, counter int);
             ALTER TABLE {table} ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO {table} SELECT 1, string_agg(md5(random()::text), ''), 0
               FROM generate_series(1, 400);"
        ))
        .await
        .unwrap();
    let big: String = client
        .query_one(&format!("SELECT big FROM {table} WHERE id = 1"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big.len(), 12_800);
    let toasted: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_toast.pg_toast_{}",
                client
                    .query_one(&format!("SELECT '{table}'::regclass::oid"), &[])
                    .await
                    .unwrap()
                    .get::<_, u32>(0)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(toasted > 0, "the test value is not TOASTed");

    let _strata = capture.run_streaming(&["t"], &[]).await;
    client
        .batch_execute(&format!(
            "UPDATE {table} SET counter = 1 WHERE id = 1;
             UPDATE {table} SET big = NULL, counter = 2 WHERE id = 1;
             UPDATE {table} SET counter = 3 WHERE id = 1;
             UPDATE {table} SET big = 'small again', counter = 4 WHERE id = 1;"
        ))
        .await
        .unwrap();

    let mut reader = TopicReader::open(&capture.topic("t"), Duration::from_secs(30)).await;
    reader.read_count(5, Duration::from_secs(60)).await;
    reader.read_to_end(Duration::from_secs(30)).await;
    let events: Vec<(&str, &Value, &Value)> = reader
        .events
        .iter()
        .map(|e| (e.op(), e.after(), &e.source()["unchanged_toast"]))
        .collect();
    let placeholder = json!("__debezium_unavailable_value");
    let expected = [
        // The snapshot reads the whole value.
        ("r", json!({"id": 1, "big": big, "counter": 0}), Value::Null),
        // Only counter changed: big was not sent, and is marked unchanged, not NULL.
        (
            "u",
            json!({"id": 1, "big": placeholder, "counter": 1}),
            json!(["big"]),
        ),
        (
            "u",
            json!({"id": 1, "big": null, "counter": 2}),
            Value::Null,
        ),
        // NULL is stored inline: nothing is TOASTed any more, so nothing is unchanged.
        (
            "u",
            json!({"id": 1, "big": null, "counter": 3}),
            Value::Null,
        ),
        (
            "u",
            json!({"id": 1, "big": "small again", "counter": 4}),
            Value::Null,
        ),
    ];
    assert_eq!(events.len(), expected.len(), "{:#?}", reader.events);
    for (i, ((op, after, unchanged), (want_op, want_after, want_unchanged))) in
        events.iter().zip(&expected).enumerate()
    {
        assert_eq!(op, want_op, "event {i}");
        assert_eq!(*after, want_after, "event {i}");
        assert_eq!(
            *unchanged, want_unchanged,
            "event {i}: source.unchanged_toast"
        );
    }
    // Default replica identity: updates carry no old row.
    for event in &reader.events {
        assert_eq!(event.before(), &Value::Null);
    }
}

/// A row change as the writer made it: `(op, before, after)`, rows as `{"id", "v", "n"}`.
type Change = (&'static str, Value, Value);

/// A committed transaction: its id and its changes in statement order, as `(key, change)`.
#[derive(Debug, Default)]
struct Committed {
    xid: u64,
    changes: Vec<(i32, Change)>,
}

/// Runs statements in a transaction and logs what each did to the rows of `{table}`
/// (`id int, v text, n int`), knowing the rows' current values.
struct TxWriter {
    table: String,
    rows: HashMap<i32, Value>,
    log: Vec<Committed>,
}

impl TxWriter {
    fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            rows: HashMap::new(),
            log: Vec::new(),
        }
    }

    async fn begin(&mut self, tx: &tokio_postgres::Transaction<'_>) {
        let xid: i64 = tx
            .query_one("SELECT pg_current_xact_id()::text::int8 % 4294967296", &[])
            .await
            .unwrap()
            .get(0);
        self.log.push(Committed {
            xid: xid as u64,
            changes: Vec::new(),
        });
    }

    fn record(&mut self, id: i32, change: Change) {
        self.log.last_mut().unwrap().changes.push((id, change));
    }

    async fn insert(&mut self, tx: &tokio_postgres::Transaction<'_>, id: i32, v: &str) {
        tx.execute(
            &format!("INSERT INTO {} (id, v, n) VALUES ($1, $2, 0)", self.table),
            &[&id, &v],
        )
        .await
        .unwrap();
        let after = json!({"id": id, "v": v, "n": 0});
        self.rows.insert(id, after.clone());
        self.record(id, ("c", Value::Null, after));
    }

    async fn update(&mut self, tx: &tokio_postgres::Transaction<'_>, id: i32, v: &str) {
        let n: i32 = tx
            .query_one(
                &format!(
                    "UPDATE {} SET v = $2, n = n + 1 WHERE id = $1 RETURNING n",
                    self.table
                ),
                &[&id, &v],
            )
            .await
            .unwrap()
            .get(0);
        let after = json!({"id": id, "v": v, "n": n});
        let before = self.rows.insert(id, after.clone()).unwrap();
        self.record(id, ("u", before, after));
    }

    async fn delete(&mut self, tx: &tokio_postgres::Transaction<'_>, id: i32) {
        let deleted = tx
            .execute(&format!("DELETE FROM {} WHERE id = $1", self.table), &[&id])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let before = self.rows.remove(&id).unwrap();
        self.record(id, ("d", before, Value::Null));
    }

    /// Increments the row `id = 0` that every connection shares; its `n` says who came first.
    async fn bump_shared(&mut self, tx: &tokio_postgres::Transaction<'_>) {
        let n: i32 = tx
            .query_one(
                &format!(
                    "UPDATE {} SET n = n + 1 WHERE id = 0 RETURNING n",
                    self.table
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        self.record(
            0,
            (
                "u",
                json!({"id": 0, "v": "shared", "n": n - 1}),
                json!({"id": 0, "v": "shared", "n": n}),
            ),
        );
    }
}

/// One writer connection's share of a phase: multi-statement transactions on its own keys
/// (insert, update the same row twice, delete and re-insert, …), most also bumping the shared row.
async fn write_phase(
    mut client: tokio_postgres::Client,
    table: String,
    connection: i32,
) -> (tokio_postgres::Client, Vec<Committed>) {
    let mut w = TxWriter::new(&table);
    for round in 0..6 {
        let k = 1000 * (connection + 1) + 10 * round;
        let tx = client.transaction().await.unwrap();
        w.begin(&tx).await;
        w.insert(&tx, k + 1, "a").await;
        w.update(&tx, k + 1, "b").await;
        w.update(&tx, k + 1, "c").await;
        w.insert(&tx, k + 2, "a").await;
        w.bump_shared(&tx).await;
        tx.commit().await.unwrap();

        let tx = client.transaction().await.unwrap();
        w.begin(&tx).await;
        w.delete(&tx, k + 1).await;
        w.insert(&tx, k + 1, "again").await;
        w.update(&tx, k + 2, "b").await;
        tx.commit().await.unwrap();

        let tx = client.transaction().await.unwrap();
        w.begin(&tx).await;
        w.insert(&tx, k + 3, "a").await;
        w.delete(&tx, k + 2).await;
        w.bump_shared(&tx).await;
        tx.commit().await.unwrap();

        let tx = client.transaction().await.unwrap();
        w.begin(&tx).await;
        w.update(&tx, k + 3, "b").await;
        w.update(&tx, k + 1, "d").await;
        w.bump_shared(&tx).await;
        tx.commit().await.unwrap();
    }
    (client, w.log)
}

/// The setup of a phase: the shared row, in a transaction of its own.
async fn insert_shared_row(client: &mut tokio_postgres::Client, table: &str) -> Committed {
    let mut w = TxWriter::new(table);
    let tx = client.transaction().await.unwrap();
    w.begin(&tx).await;
    w.insert(&tx, 0, "shared").await;
    tx.commit().await.unwrap();
    w.log.pop().unwrap()
}

/// Runs both writers of a phase at once; returns every committed transaction.
async fn concurrent_phase(
    writers: &mut Vec<tokio_postgres::Client>,
    table: &str,
) -> Vec<Vec<Committed>> {
    let tasks: Vec<_> = writers
        .drain(..)
        .zip(0..)
        .map(|(client, connection)| tokio::spawn(write_phase(client, table.to_owned(), connection)))
        .collect();
    let mut logs = Vec::new();
    for task in tasks {
        let (client, log) = task.await.unwrap();
        writers.push(client);
        logs.push(log);
    }
    logs
}

fn change_of(event: &ChangeEvent) -> Change {
    let op = match event.op() {
        "c" => "c",
        "u" => "u",
        "d" => "d",
        other => panic!("unexpected op {other}: {:?}", event.value),
    };
    (op, event.before().clone(), event.after().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_arrive_whole_and_in_commit_order_per_key() {
    let capture = PgCapture::new("txn");
    let table = capture.table("t");
    let mut main = pg_connect().await;
    main.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text, n int);
         ALTER TABLE {table} REPLICA IDENTITY FULL;"
    ))
    .await
    .unwrap();
    let _strata = capture.run_streaming(&["t"], &[]).await;

    let mut writers = vec![pg_connect().await, pg_connect().await];
    // Phase 1: the shared row, then two connections at once.
    let mut phases: Vec<Vec<Committed>> = vec![vec![insert_shared_row(&mut main, &table).await]];
    // The transactions of each connection's run, in the order it committed them.
    let mut runs: Vec<Vec<u64>> = Vec::new();
    for log in concurrent_phase(&mut writers, &table).await {
        runs.push(log.iter().map(|tx| tx.xid).collect());
        phases[0].extend(log);
    }
    // The truncate, in its own transaction.
    let truncate_tx = main.transaction().await.unwrap();
    let truncate_xid: i64 = truncate_tx
        .query_one("SELECT pg_current_xact_id()::text::int8 % 4294967296", &[])
        .await
        .unwrap()
        .get(0);
    truncate_tx
        .batch_execute(&format!("TRUNCATE {table}"))
        .await
        .unwrap();
    truncate_tx.commit().await.unwrap();
    // Phase 2: the same keys again, from scratch.
    phases.push(vec![insert_shared_row(&mut main, &table).await]);
    for log in concurrent_phase(&mut writers, &table).await {
        runs.push(log.iter().map(|tx| tx.xid).collect());
        phases[1].extend(log);
    }

    let changes: usize = phases.iter().flatten().map(|tx| tx.changes.len()).sum();
    let mut reader = TopicReader::open(&capture.topic("t"), Duration::from_secs(30)).await;
    reader
        .read_count(changes + 1, Duration::from_secs(60))
        .await;
    reader.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(
        reader.events.len(),
        changes + 1,
        "one event per row change, plus the truncate"
    );
    let events = &reader.events;

    // Each transaction: exactly its changes, in statement order, all with its txId and commit
    // position, numbered 1..n.
    let mut by_xid: BTreeMap<u64, Vec<&ChangeEvent>> = BTreeMap::new();
    for event in events {
        let xid = event
            .tx_id()
            .unwrap_or_else(|| panic!("event without txId: {:?}", event.value));
        by_xid.entry(xid).or_default().push(event);
    }
    let mut commit_lsn_of = HashMap::new();
    for tx in phases.iter().flatten() {
        let mut got = by_xid.remove(&tx.xid).unwrap_or_default();
        got.sort_by_key(|e| e.lsn());
        let got_changes: Vec<(i32, Change)> = got
            .iter()
            .map(|e| {
                let row = if e.op() == "d" { e.before() } else { e.after() };
                // Keyed by the primary key alone, whatever the replica identity.
                assert_eq!(
                    e.key,
                    Some(json!({"id": row["id"]})),
                    "key of {:?}",
                    e.value
                );
                (row["id"].as_i64().unwrap() as i32, change_of(e))
            })
            .collect();
        assert_eq!(got_changes, tx.changes, "transaction {}", tx.xid);
        let commit_lsn = got[0].commit_lsn();
        commit_lsn_of.insert(tx.xid, commit_lsn);
        for (i, event) in got.iter().enumerate() {
            assert_eq!(event.commit_lsn(), commit_lsn, "transaction {}", tx.xid);
            assert!(
                event.lsn() < commit_lsn,
                "change after its commit: {:?}",
                event.value
            );
            let order = &event.value["transaction"];
            assert_eq!(order["id"], format!("{}:{commit_lsn}", tx.xid));
            assert_eq!(order["total_order"], i + 1, "transaction {}", tx.xid);
            assert_eq!(
                order["data_collection_order"],
                i + 1,
                "transaction {}",
                tx.xid
            );
        }
    }
    // What is left is the truncate alone: op t, no rows, no key, between the phases.
    let rest: Vec<(u64, Vec<&ChangeEvent>)> = by_xid.into_iter().collect();
    assert_eq!(rest.len(), 1, "events of unknown transactions: {rest:?}");
    let (xid, truncate) = &rest[0];
    assert_eq!(*xid, truncate_xid as u64);
    assert_eq!(truncate.len(), 1);
    let truncate = truncate[0];
    assert_eq!(truncate.op(), "t");
    assert_eq!(truncate.before(), &Value::Null);
    assert_eq!(truncate.after(), &Value::Null);
    assert_eq!(truncate.key, None);
    assert_eq!(truncate.value["transaction"]["total_order"], 1);
    let truncated_at = truncate.commit_lsn();
    for tx in &phases[0] {
        assert!(
            commit_lsn_of[&tx.xid] < truncated_at,
            "phase 1 after the truncate"
        );
    }
    for tx in &phases[1] {
        assert!(
            commit_lsn_of[&tx.xid] > truncated_at,
            "phase 2 before the truncate"
        );
    }
    // One connection's transactions commit in the order it ran them.
    for run in &runs {
        let lsns: Vec<u64> = run.iter().map(|xid| commit_lsn_of[xid]).collect();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "a connection's commits out of order: {lsns:?}"
        );
    }

    // Per key: the events, ordered by commit position then position, are the key's changes in
    // commit order; Kafka (one partition per key) holds them in that same order. A connection's
    // own keys change in the order it ran its transactions; the shared row in the order of its
    // counter.
    let mut expected: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    for phase in &phases {
        let mut in_phase: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
        for tx in phase {
            for (key, change) in &tx.changes {
                in_phase.entry(*key).or_default().push(change.clone());
            }
        }
        in_phase
            .get_mut(&0)
            .unwrap()
            .sort_by_key(|(_, _, after)| after["n"].as_i64());
        for (key, changes) in in_phase {
            expected.entry(key).or_default().extend(changes);
        }
    }
    let mut by_commit: BTreeMap<i32, Vec<&ChangeEvent>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.op() != "t") {
        let key = event.key.as_ref().unwrap()["id"].as_i64().unwrap() as i32;
        by_commit.entry(key).or_default().push(event);
    }
    assert_eq!(
        by_commit.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, key_events) in &mut by_commit {
        let mut in_kafka = key_events.clone();
        in_kafka.sort_by_key(|e| (e.partition, e.offset));
        assert!(
            in_kafka
                .iter()
                .all(|e| e.partition == in_kafka[0].partition),
            "key {key} spread over partitions"
        );
        key_events.sort_by_key(|e| (e.commit_lsn(), e.lsn()));
        let got: Vec<Change> = key_events.iter().map(|e| change_of(e)).collect();
        assert_eq!(got, expected[key], "key {key}: changes in commit order");
        let kafka: Vec<Change> = in_kafka.iter().map(|e| change_of(e)).collect();
        assert_eq!(kafka, expected[key], "key {key}: changes in Kafka order");
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listener_resumes_without_losing_a_committed_change() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let capture = PgCapture::new("kill");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, seq int NOT NULL)"
        ))
        .await
        .unwrap();
    let mut strata = capture.run_streaming(&["t"], &[]).await;

    // The writer: one transaction per change (insert a row, or set an existing row's seq), each
    // with the next sequence number; it logs what committed. It keeps going until the kills are
    // over and it has made at least 3,000 changes.
    let committed = Arc::new(AtomicUsize::new(0));
    let kills_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (table, committed, kills_done) = (
            table.clone(),
            Arc::clone(&committed),
            Arc::clone(&kills_done),
        );
        tokio::spawn(async move {
            let client = pg_connect().await;
            let insert = client
                .prepare(&format!("INSERT INTO {table} (id, seq) VALUES ($1, $2)"))
                .await
                .unwrap();
            let update = client
                .prepare(&format!("UPDATE {table} SET seq = $2 WHERE id = $1"))
                .await
                .unwrap();
            let mut log: Vec<(i32, i32)> = Vec::new();
            let mut rows = 0;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            for seq in 1.. {
                if seq > 3000 && kills_done.load(Ordering::Relaxed) {
                    break;
                }
                let id = if seq % 3 == 0 {
                    let id = rng.below(rows) as i32 + 1;
                    assert_eq!(client.execute(&update, &[&id, &seq]).await.unwrap(), 1);
                    id
                } else {
                    rows += 1;
                    let id = rows as i32;
                    client.execute(&insert, &[&id, &seq]).await.unwrap();
                    id
                };
                log.push((id, seq));
                committed.fetch_add(1, Ordering::Relaxed);
            }
            log
        })
    };

    let mut rng = Rng(42);
    let mut committed_at_kill = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700 + rng.below(600))).await;
        strata.kill9();
        committed_at_kill.push(committed.load(Ordering::Relaxed));
        capture
            .wait_slot_inactive(&client, Duration::from_secs(30))
            .await;
        strata = capture.run_streaming(&["t"], &[]).await;
    }
    kills_done.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();
    eprintln!(
        "killed at {committed_at_kill:?} committed changes; {} changes in all",
        log.len()
    );

    let want: BTreeSet<(i64, i64)> = log
        .iter()
        .map(|&(id, seq)| (id.into(), seq.into()))
        .collect();
    let pair = |e: &ChangeEvent| {
        (
            e.after()["id"].as_i64().unwrap(),
            e.after()["seq"].as_i64().unwrap(),
        )
    };
    let mut reader = TopicReader::open(&capture.topic("t"), Duration::from_secs(30)).await;
    reader
        .read_until(
            "every committed change",
            Duration::from_secs(120),
            |events| {
                let got: BTreeSet<(i64, i64)> = events.iter().map(pair).collect();
                want.is_subset(&got)
            },
        )
        .await;
    reader.read_to_end(Duration::from_secs(30)).await;

    // Every event is a committed change, keyed by its row; a change seen twice (resent after a
    // kill) is the same event from the same position.
    let mut copies: BTreeMap<(i64, i64), Vec<&ChangeEvent>> = BTreeMap::new();
    for event in &reader.events {
        let (id, seq) = pair(event);
        assert!(
            want.contains(&(id, seq)),
            "never committed: {:?}",
            event.value
        );
        assert_eq!(event.key, Some(json!({ "id": id })));
        let op = if seq % 3 == 0 { "u" } else { "c" };
        assert_eq!(event.op(), op, "{:?}", event.value);
        copies.entry((id, seq)).or_default().push(event);
    }
    let mut duplicates = 0;
    for ((id, seq), events) in &copies {
        let first = events[0];
        for other in &events[1..] {
            duplicates += 1;
            for field in ["lsn", "commit_lsn", "txId"] {
                assert_eq!(
                    other.source()[field],
                    first.source()[field],
                    "row {id} seq {seq}: a resent copy differs in source.{field}"
                );
            }
            assert_eq!(other.after(), first.after());
        }
    }
    eprintln!(
        "{} events for {} changes ({duplicates} resent after kills)",
        reader.events.len(),
        want.len()
    );

    // Once caught up, the slot confirms past the last change.
    let last_commit = reader
        .events
        .iter()
        .map(ChangeEvent::commit_lsn)
        .max()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slot = slot_state(&client, capture.slot()).await.unwrap();
        if slot.confirmed_flush.is_some_and(|c| c >= last_commit) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot stuck at {:?}, last commit at {last_commit}",
            slot.confirmed_flush
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(strata);
}

/// The little of an event of the narrow table `(id int8, v int4)` the snapshot test keeps, so a
/// million of them fit in memory.
#[derive(Debug)]
struct NarrowEvent {
    id: i64,
    op: u8,
    v: Option<i32>,
    lsn: u64,
    commit_lsn: u64,
}

fn decode_narrow(message: &rdkafka::message::BorrowedMessage<'_>) -> NarrowEvent {
    use rdkafka::Message as _;
    #[derive(serde::Deserialize)]
    struct Key {
        id: i64,
    }
    #[derive(serde::Deserialize)]
    struct Row {
        v: Option<i32>,
    }
    #[derive(serde::Deserialize)]
    struct Source {
        lsn: u64,
        commit_lsn: u64,
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        op: String,
        after: Option<Row>,
        source: Source,
    }
    // A million envelopes: skip their `schema` (the same on every event, and most of the bytes)
    // instead of parsing it. `payload` is the envelope's last member, and this table's payloads
    // hold no member of that name.
    fn payload_of(envelope: &[u8]) -> &[u8] {
        const MARK: &[u8] = b",\"payload\":";
        let at = envelope
            .windows(MARK.len())
            .rposition(|w| w == MARK)
            .unwrap_or_else(|| panic!("no payload in {}", String::from_utf8_lossy(envelope)));
        &envelope[at + MARK.len()..envelope.len() - 1]
    }
    let key: Key = serde_json::from_slice(payload_of(message.key().unwrap())).unwrap();
    let value: Payload = serde_json::from_slice(payload_of(message.payload().unwrap())).unwrap();
    NarrowEvent {
        id: key.id,
        op: value.op.as_bytes()[0],
        v: value.after.and_then(|a| a.v),
        lsn: value.source.lsn,
        commit_lsn: value.source.commit_lsn,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_parallel_snapshot_loses_no_write_made_during_it() {
    const ROWS: i64 = 1_000_000;
    let started = Instant::now();
    let capture = PgCapture::new("snap");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int8 PRIMARY KEY, v int4);
             INSERT INTO {table} SELECT g, (g % 1000)::int4 FROM generate_series(1, {ROWS}) g;
             ANALYZE {table};"
        ))
        .await
        .unwrap();
    let loaded = started.elapsed();

    let strata = capture.run(
        &["t"],
        &[
            ("STRATA_SOURCE__POSTGRES__SNAPSHOT_PARALLELISM", "4"),
            ("STRATA_SOURCE__POSTGRES__SNAPSHOT_CHUNK_ROWS", "100000"),
        ],
    );
    // Writes start as soon as the slot exists, so they land after its snapshot point, while the
    // snapshot is being read.
    strata
        .wait_for_log("replication slot created", Duration::from_secs(60))
        .await;
    let snapshot_started = Instant::now();
    let mut rng = Rng(7);
    let mut changes = 0usize;
    let mut first_write_during_snapshot = None;
    for i in 0..2000 {
        let n = match rng.below(3) {
            0 => client
                .execute(
                    &format!("UPDATE {table} SET v = $2 WHERE id = $1"),
                    &[&(1 + rng.below(ROWS as u64) as i64), &(-i)],
                )
                .await
                .unwrap(),
            1 => client
                .execute(
                    &format!("INSERT INTO {table} (id, v) VALUES ($1, $2)"),
                    &[&(ROWS + 1 + i64::from(i)), &i],
                )
                .await
                .unwrap(),
            _ => client
                .execute(
                    &format!("DELETE FROM {table} WHERE id = $1"),
                    &[&(1 + rng.below(ROWS as u64) as i64)],
                )
                .await
                .unwrap(),
        };
        changes += n as usize;
        first_write_during_snapshot
            .get_or_insert_with(|| !strata.log().contains("streaming changes"));
    }
    let writes_done = snapshot_started.elapsed();
    let writes_during_snapshot = !strata.log().contains("streaming changes");
    assert_eq!(
        first_write_during_snapshot,
        Some(true),
        "the writes began after the snapshot"
    );

    let expected_events = ROWS as usize + changes;
    let mut reader =
        TopicReader::open_with(&capture.topic("t"), Duration::from_secs(60), decode_narrow).await;
    reader
        .read_count(expected_events, Duration::from_secs(900))
        .await;
    let caught_up = snapshot_started.elapsed();
    reader.read_to_end(Duration::from_secs(60)).await;
    assert_eq!(
        reader.events.len(),
        expected_events,
        "one event per row and change"
    );
    // The table was split for the four readers (into about ROWS / chunk_rows key ranges, as
    // many as ANALYZE's row estimate says).
    let log = strata.log();
    let chunks: u64 = log
        .split_once("chunks=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in the log:\n{log}"));
    assert!((9..=12).contains(&chunks), "{chunks} chunks");

    // Exactly the table's rows at the snapshot point, each once.
    let mut read = vec![false; ROWS as usize + 1];
    let mut reads = 0;
    for event in reader.events.iter().filter(|e| e.op == b'r') {
        assert!(
            (1..=ROWS).contains(&event.id),
            "snapshot row {} never existed",
            event.id
        );
        assert!(!read[event.id as usize], "row {} read twice", event.id);
        read[event.id as usize] = true;
        reads += 1;
    }
    assert_eq!(reads, ROWS, "snapshot rows");

    // Folded per key (snapshot first, then changes by commit position), the events give the table.
    let mut events: Vec<&NarrowEvent> = reader.events.iter().collect();
    events.sort_by_key(|e| (e.commit_lsn, e.op != b'r', e.lsn));
    let mut state: HashMap<i64, i32> = HashMap::with_capacity(ROWS as usize + 2000);
    for event in events {
        match event.op {
            b'r' | b'c' | b'u' => {
                state.insert(event.id, event.v.unwrap());
            }
            b'd' => {
                assert!(
                    state.remove(&event.id).is_some(),
                    "delete of absent row {}",
                    event.id
                );
            }
            other => panic!("unexpected op {}", other as char),
        }
    }
    let rows = client
        .query(&format!("SELECT id, v FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(state.len(), rows.len(), "row count");
    for row in &rows {
        let (id, v): (i64, i32) = (row.get(0), row.get(1));
        assert_eq!(state.get(&id), Some(&v), "row {id}");
    }
    eprintln!(
        "1M snapshot: load {loaded:?}; {changes} writes done {writes_done:?} after the slot \
         (still during the snapshot: {writes_during_snapshot}); all {expected_events} events \
         read {caught_up:?} after the slot; test total {:?}",
        started.elapsed()
    );
    for line in strata
        .log()
        .lines()
        .filter(|l| l.contains("snapshot") || l.contains("streaming"))
    {
        eprintln!("  {line}");
    }
    drop(strata);
}

/// Runs `strata run` until it exits on its own (it must, within `timeout`, and with a failure);
/// returns its stderr.
async fn run_to_failure(
    capture: &PgCapture,
    tables: &[&str],
    extra: &[(&str, &str)],
    timeout: Duration,
) -> String {
    let mut strata = capture.run(tables, extra);
    let status = strata.wait_exit(timeout).await;
    let stderr = strata.log();
    assert!(!status.success(), "strata run succeeded:\n{stderr}");
    stderr
}

/// The last line of strata's stderr: the error it exited with.
fn error_line(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    eprintln!("strata said: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_column_type_names_table_and_column() {
    let capture = PgCapture::new("badtype");
    let table = capture.table("t");
    pg_connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text, location point);
             INSERT INTO {table} VALUES (1, 'a', '(1,2)');"
        ))
        .await
        .unwrap();
    let stderr = run_to_failure(&capture, &["t"], &[], Duration::from_secs(60)).await;
    let error = error_line(&stderr);
    assert!(error.contains(&format!("public.{table}")), "{error}");
    assert!(error.contains("column location"), "{error}");
    assert!(error.contains("unsupported"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_primary_key_is_named() {
    let capture = PgCapture::new("nopk");
    let table = capture.table("t");
    pg_connect()
        .await
        .batch_execute(&format!("CREATE TABLE {table} (id int, name text)"))
        .await
        .unwrap();
    let stderr = run_to_failure(&capture, &["t"], &[], Duration::from_secs(60)).await;
    let error = error_line(&stderr);
    assert!(error.contains(&format!("public.{table}")), "{error}");
    assert!(error.contains("primary key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_named_and_the_slot_stays_put() {
    let capture = PgCapture::new("nobroker");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text);
             INSERT INTO {table} VALUES (1, 'a');"
        ))
        .await
        .unwrap();
    // A first run creates the slot and streams; then it stops cleanly.
    let mut strata = capture.run_streaming(&["t"], &[]).await;
    strata.terminate();
    let status = strata.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "SIGTERM is a clean stop:\n{}",
        strata.log()
    );
    let before = slot_state(&client, capture.slot()).await.unwrap();

    // Changes pile up while Kafka is away; the failed run must not confirm past them.
    client
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT g, 'b' FROM generate_series(2, 100) g"
        ))
        .await
        .unwrap();
    let stderr = run_to_failure(
        &capture,
        &["t"],
        &[
            ("STRATA_KAFKA__BROKERS", "127.0.0.1:1"),
            ("STRATA_KAFKA__CONNECT_TIMEOUT", "2s"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let error = error_line(&stderr);
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(error.contains("Kafka"), "{error}");
    let after = slot_state(&client, capture.slot()).await.unwrap();
    assert_eq!(after, before, "the slot moved without Kafka");
    drop(strata);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_slot_under_a_running_capture_stops_it_naming_the_slot() {
    let capture = PgCapture::new("slotgone");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let mut strata = capture.run_streaming(&["t"], &[]).await;
    // End the walsender, then drop the slot as soon as it is free.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&capture.slot()],
            )
            .await
            .unwrap();
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&capture.slot()])
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cannot drop slot {}: {e}",
                capture.slot()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = strata.wait_exit(Duration::from_secs(60)).await;
    let stderr = strata.log();
    assert!(!status.success(), "strata kept running:\n{stderr}");
    let error = error_line(&stderr);
    assert!(error.contains(capture.slot()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_active_slot_and_its_lag() {
    let capture = PgCapture::new("status");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    let mut strata = capture.run_streaming(&["t"], &[]).await;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 100) g"
        ))
        .await
        .unwrap();

    let mut status = capture.spawn(&["status"], &capture.env(&["t"], &[]));
    let exit = status.wait_exit(Duration::from_secs(60)).await;
    let out = status.stdout();
    assert!(exit.success(), "{out}\n{}", status.log());
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{out}"))
            .to_owned()
    };
    assert_eq!(
        line("slot").split_whitespace().collect::<Vec<_>>(),
        ["slot", capture.slot(), "(active)"],
        "{out}"
    );
    // `lag             <n> bytes, <x> s`
    let lag = line("lag");
    let words: Vec<&str> = lag.split_whitespace().collect();
    assert!(
        matches!(words.as_slice(), ["lag", bytes, "bytes,", seconds, "s"]
            if bytes.parse::<u64>().is_ok() && seconds.parse::<f64>().is_ok()),
        "{lag}"
    );
    let confirmed = line("confirmed");
    let confirmed = confirmed.split_whitespace().nth(1).unwrap();
    assert!(parse_lsn(confirmed) > 0, "{out}");

    strata.terminate();
    let exit = strata.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "{}", strata.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_slot_moving_when_captured_tables_are_quiet() {
    let capture = PgCapture::new("beat");
    let quiet = capture.table("quiet");
    let busy = capture.table("busy");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {quiet} (id int PRIMARY KEY);
             CREATE TABLE {busy} (id serial PRIMARY KEY, pad text);"
        ))
        .await
        .unwrap();
    // A second slot, decoded by PostgreSQL's own test_decoding, to see the heartbeats.
    let observer = format!("{}_observer", capture.slot());
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&observer],
        )
        .await
        .unwrap();
    let _strata = capture
        .run_streaming(
            &["quiet"],
            &[
                ("STRATA_SOURCE__POSTGRES__HEARTBEAT_INTERVAL", "1s"),
                ("STRATA_SOURCE__POSTGRES__STATUS_INTERVAL", "200ms"),
            ],
        )
        .await;

    // Another table, not captured, keeps writing WAL.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (busy, stop) = (busy.clone(), stop.clone());
        tokio::spawn(async move {
            let client = pg_connect().await;
            while !stop.is_cancelled() {
                client
                    .execute(
                        &format!("INSERT INTO {busy} (pad) SELECT repeat('x', 2000)"),
                        &[],
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let current_wal = || async {
        let text: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        parse_lsn(&text)
    };
    // Sample the slot for 8 s: its confirmed position keeps moving, and keeps up with the WAL
    // written a few seconds earlier.
    let mut confirmed = Vec::new();
    let mut written = Vec::new();
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let slot = slot_state(&client, capture.slot()).await.unwrap();
        confirmed.push(slot.confirmed_flush.unwrap());
        written.push(current_wal().await);
    }
    stop.cancel();
    writer.await.unwrap();
    let advances = confirmed.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        advances >= 5,
        "the slot advanced only {advances} times in 8 s: {confirmed:?}"
    );
    assert!(
        confirmed.windows(2).all(|w| w[1] >= w[0]),
        "the slot went backwards: {confirmed:?}"
    );
    // 3 s (6 samples) behind at most.
    let last = confirmed.len() - 1;
    assert!(
        confirmed[last] >= written[last - 6],
        "the slot lags: confirmed {} but WAL was at {} 3 s earlier",
        confirmed[last],
        written[last - 6]
    );
    // About one heartbeat a second went into the WAL.
    let heartbeats: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_changes($1, NULL, NULL) \
             WHERE data LIKE 'message: transactional: 0 prefix: strata.heartbeat,%'",
            &[&observer],
        )
        .await
        .unwrap()
        .get(0);
    assert!(heartbeats >= 5, "{heartbeats} heartbeats in 8 s");
}

/// An event with the envelope's schema kept: `(op, after, [(field, connect type)] of after)`.
fn decode_with_schema(
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> (String, Value, Vec<(String, String)>) {
    use rdkafka::Message as _;
    let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    let after_fields = value["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "after")
        .unwrap()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let payload = &value["payload"];
    (
        payload["op"].as_str().unwrap().to_owned(),
        payload["after"].clone(),
        after_fields,
    )
}

fn decode_json(message: &rdkafka::message::BorrowedMessage<'_>) -> Value {
    use rdkafka::Message as _;
    serde_json::from_slice(message.payload().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_flow_through_and_are_recorded() {
    let capture = PgCapture::new("ddl");
    let table = capture.table("t");
    let client = pg_connect().await;
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, a int)"))
        .await
        .unwrap();
    let _strata = capture.run_streaming(&["t"], &[]).await;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (1, 10);
             ALTER TABLE {table} ADD COLUMN b text;
             INSERT INTO {table} VALUES (2, 20, 'x');
             ALTER TABLE {table} ALTER COLUMN a TYPE bigint;
             INSERT INTO {table} VALUES (3, 5000000000, 'y');
             ALTER TABLE {table} DROP COLUMN b;
             INSERT INTO {table} VALUES (4, 40);"
        ))
        .await
        .unwrap();

    let mut reader = TopicReader::open_with(
        &capture.topic("t"),
        Duration::from_secs(30),
        decode_with_schema,
    )
    .await;
    reader.read_count(4, Duration::from_secs(60)).await;
    let mut events = reader.events.clone();
    events.sort_by_key(|(_, after, _)| after["id"].as_i64().unwrap());
    let shapes: Vec<(Value, Vec<(String, String)>)> = events
        .into_iter()
        .map(|(op, after, fields)| {
            assert_eq!(op, "c");
            (after, fields)
        })
        .collect();
    let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    };
    assert_eq!(shapes[0].0, json!({"id": 1, "a": 10}));
    assert_eq!(shapes[0].1, f(&[("id", "int32"), ("a", "int32")]));
    assert_eq!(shapes[1].0, json!({"id": 2, "a": 20, "b": "x"}));
    assert_eq!(
        shapes[1].1,
        f(&[("id", "int32"), ("a", "int32"), ("b", "string")])
    );
    assert_eq!(
        shapes[2].0,
        json!({"id": 3, "a": 5_000_000_000_i64, "b": "y"})
    );
    assert_eq!(
        shapes[2].1,
        f(&[("id", "int32"), ("a", "int64"), ("b", "string")])
    );
    assert_eq!(shapes[3].0, json!({"id": 4, "a": 40}));
    assert_eq!(shapes[3].1, f(&[("id", "int32"), ("a", "int64")]));

    // The schema history holds each shape with the position it holds from, in order.
    let history_topic = format!("__strata_schemas.strata.{}", capture.source);
    let mut history =
        TopicReader::open_with(&history_topic, Duration::from_secs(30), decode_json).await;
    history
        .read_until(
            "4 shapes of the table",
            Duration::from_secs(60),
            |entries| {
                entries
                    .iter()
                    .filter(|e| e["table"] == format!("public.{table}"))
                    .count()
                    >= 4
            },
        )
        .await;
    let mut entries: Vec<&Value> = history
        .events
        .iter()
        .filter(|e| e["table"] == format!("public.{table}"))
        .collect();
    entries.sort_by_key(|e| e["lsn"].as_u64().unwrap());
    let columns: Vec<Vec<(String, String)>> = entries
        .iter()
        .map(|e| {
            e["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(
        columns,
        vec![
            f(&[("id", "int4"), ("a", "int4")]),
            f(&[("id", "int4"), ("a", "int4"), ("b", "text")]),
            f(&[("id", "int4"), ("a", "int8"), ("b", "text")]),
            f(&[("id", "int4"), ("a", "int8")]),
        ]
    );
}
