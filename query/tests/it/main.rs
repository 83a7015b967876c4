//! strata-query against a temp local-directory store: a history of inserts, updates with
//! unchanged columns, deletes, a truncate and re-inserts over several segments and
//! transactions, checked against an independent replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, UInt64Type};
use arrow::util::pretty::pretty_format_batches;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde_json::{Value, json};
use strata_catalog::{
    Catalog, CatalogConfig, ChangeEvent, ColumnSchema, ColumnType, ConnectType, Operation, Row,
    SourcePosition, TableId, TableSchema,
};
use strata_query::{Error, StrataContext, testing};

/// 2026-11-25T10:00:00Z in µs.
const T0: i64 = 1_795_600_800_000_000;
const SECOND: i64 = 1_000_000;

fn orders() -> TableId {
    TableId::new("pg-main", "public", "orders")
}

fn schema() -> TableSchema {
    testing::table_schema(
        orders(),
        &[
            ("id", ConnectType::Int32, true),
            ("status", ConnectType::String, false),
            ("body", ConnectType::String, false),
            ("qty", ConnectType::Int64, false),
        ],
    )
}

/// One change: `cells` are the written columns (besides `id`), `unchanged` the kept ones.
#[allow(clippy::too_many_arguments)]
fn change(
    op: Operation,
    id: Option<i32>,
    cells: &[(&str, Value)],
    unchanged: &[&str],
    tx: u32,
    seq: u64,
) -> ChangeEvent {
    let key: Row = id.map(|id| ("id", json!(id))).into_iter().collect();
    let mut image = key.clone();
    for (name, value) in cells {
        image.insert(*name, value.clone());
    }
    let (before, after) = match op {
        Operation::Delete => (Some(image), None),
        Operation::Truncate => (None, None),
        _ => (None, Some(image)),
    };
    ChangeEvent {
        table: orders(),
        op,
        key,
        before,
        after,
        unchanged: unchanged.iter().map(|s| (*s).to_owned()).collect(),
        commit_ts_us: T0 + i64::from(tx) * SECOND,
        position: SourcePosition {
            commit: u64::from(tx) * 100,
            seq,
        },
        tx_id: Some(format!("tx{tx}")),
        origin: None,
    }
}

fn full(status: &str, body: &str, qty: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("status", json!(status)),
        ("body", json!(body)),
        ("qty", json!(qty)),
    ]
}

/// The history, by transaction (tx n commits at T0 + n s, position n*100).
fn history() -> Vec<ChangeEvent> {
    use Operation::{Create, Delete, Read, Truncate, Update};
    vec![
        // tx1: three inserts.
        change(Create, Some(1), &full("new", "b1", 1), &[], 1, 10),
        change(Create, Some(2), &full("new", "b2", 2), &[], 1, 11),
        change(Create, Some(3), &full("new", "b3", 3), &[], 1, 12),
        // tx2: update 1 without writing body; delete 2.
        change(
            Update,
            Some(1),
            &[("status", json!("paid")), ("qty", json!(10))],
            &["body"],
            2,
            150,
        ),
        change(Delete, Some(2), &[], &[], 2, 151),
        // tx3: inserts 4, 5 and a full update of 3 (status set to NULL).
        change(Create, Some(4), &full("new", "b4", 4), &[], 3, 250),
        change(Create, Some(5), &full("new", "b5", 5), &[], 3, 251),
        change(
            Update,
            Some(3),
            &[
                ("status", Value::Null),
                ("body", json!("b3'")),
                ("qty", json!(33)),
            ],
            &[],
            3,
            252,
        ),
        // tx4: truncate.
        change(Truncate, None, &[], &[], 4, 350),
        // tx5: 2 again; 5 inserted then updated keeping body and qty.
        change(Create, Some(2), &full("again", "b2'", 20), &[], 5, 450),
        change(Create, Some(5), &full("new", "b5'", 50), &[], 5, 451),
        change(
            Update,
            Some(5),
            &[("status", json!("paid"))],
            &["body", "qty"],
            5,
            452,
        ),
        // tx6: 5 keeps body; delete 2; insert 6.
        change(
            Update,
            Some(5),
            &[("status", json!("sent")), ("qty", json!(51))],
            &["body"],
            6,
            550,
        ),
        change(Delete, Some(2), &[], &[], 6, 551),
        change(Create, Some(6), &full("new", "b6", 6), &[], 6, 552),
        // tx7: 6 keeps body and qty; a snapshot read of 7.
        change(
            Update,
            Some(6),
            &[("status", json!("paid"))],
            &["body", "qty"],
            7,
            650,
        ),
        change(Read, Some(7), &full("old", "b7", 7), &[], 7, 651),
    ]
}

type State = BTreeMap<i32, (Option<String>, Option<String>, Option<i64>)>;

/// The state as of `t` by replaying `events` one by one (independent of the crate).
fn replay(events: &[ChangeEvent], t: i64) -> State {
    let mut sorted: Vec<&ChangeEvent> = events.iter().filter(|e| e.commit_ts_us <= t).collect();
    sorted.sort_by_key(|e| e.position);
    sorted.dedup_by_key(|e| e.event_id(schema().event_id_version));
    let mut state = State::new();
    for e in sorted {
        let id = e.key.get("id").and_then(Value::as_i64).map(|i| i as i32);
        match (e.op, id) {
            (Operation::Truncate, _) => state.clear(),
            (Operation::Delete, Some(id)) => {
                state.remove(&id);
            }
            (_, Some(id)) => {
                let previous = state.get(&id).cloned().unwrap_or_default();
                let image = e.after.as_ref().expect("after image");
                let text = |name: &str| image.get(name).and_then(Value::as_str).map(str::to_owned);
                let kept = |name: &str| e.unchanged.iter().any(|u| u == name);
                let row = (
                    if kept("status") {
                        previous.0
                    } else {
                        text("status")
                    },
                    if kept("body") {
                        previous.1
                    } else {
                        text("body")
                    },
                    if kept("qty") {
                        previous.2
                    } else {
                        image.get("qty").and_then(Value::as_i64)
                    },
                );
                state.insert(id, row);
            }
            (_, None) => panic!("a row change without a key"),
        }
    }
    state
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    catalog: Arc<Catalog>,
    strata: StrataContext,
    events: Vec<ChangeEvent>,
}

/// The history in five segments: time ranges overlap, tx6 spans two segments, and the last
/// segment repeats two tx5 events (a compactor restart).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let catalog = Arc::new(
        Catalog::open(
            Arc::clone(&store),
            Path::from("warehouse"),
            CatalogConfig::default(),
        )
        .await
        .expect("catalog"),
    );
    let events = history();
    let schema = schema();
    let at = |seqs: &[u64]| -> Vec<ChangeEvent> {
        events
            .iter()
            .filter(|e| seqs.contains(&e.position.seq))
            .cloned()
            .collect()
    };
    let segments = [
        at(&[10, 11, 12, 150, 151]),
        at(&[250, 251, 252]),
        at(&[350]),
        at(&[450, 451, 452, 550, 551, 650, 651]),
        at(&[552, 450, 452]),
    ];
    for events in &segments {
        testing::add_segment(&catalog, &store, &schema, events)
            .await
            .expect("segment");
    }
    let strata = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).expect("context");
    Fixture {
        _dir: dir,
        store,
        catalog,
        strata,
        events,
    }
}

fn rows(batches: &[RecordBatch]) -> State {
    let mut state = State::new();
    for b in batches {
        let id = b.column(0).as_primitive::<Int32Type>();
        let status = b.column(1).as_string::<i32>();
        let body = b.column(2).as_string::<i32>();
        let qty = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let text =
                |a: &arrow::array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
            let previous = state.insert(
                id.value(i),
                (
                    text(status),
                    text(body),
                    (!qty.is_null(i)).then(|| qty.value(i)),
                ),
            );
            assert!(previous.is_none(), "key {} twice", id.value(i));
        }
    }
    state
}

/// A SQL timestamp literal of `t` µs (UTC).
fn timestamp(t: i64) -> String {
    let dt = arrow::temporal_conversions::timestamp_us_to_datetime(t).expect("time");
    format!("TIMESTAMP '{}'", dt.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

async fn as_of(f: &Fixture, t: i64) -> State {
    let sql = format!(
        "SELECT id, status, body, qty FROM as_of('public.orders', {}) ORDER BY id",
        timestamp(t)
    );
    rows(&f.strata.query(&sql).await.expect("as_of"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_equals_the_replay_at_every_instant() {
    let f = fixture().await;
    let instants = [
        T0 - SECOND,
        T0 + SECOND,
        T0 + SECOND + SECOND / 2,
        T0 + 2 * SECOND,
        T0 + 3 * SECOND,
        T0 + 4 * SECOND,
        T0 + 5 * SECOND - 1,
        T0 + 5 * SECOND,
        T0 + 6 * SECOND,
        T0 + 7 * SECOND,
        T0 + 100 * SECOND,
    ];
    for t in instants {
        assert_eq!(as_of(&f, t).await, replay(&f.events, t), "as of {t}");
    }
    // Spot checks of the semantics the replay encodes.
    let at2 = as_of(&f, T0 + 2 * SECOND).await;
    assert_eq!(
        at2[&1],
        (Some("paid".into()), Some("b1".into()), Some(10)),
        "unchanged body kept"
    );
    assert!(!at2.contains_key(&2), "deleted");
    assert!(as_of(&f, T0 + 4 * SECOND).await.is_empty(), "truncated");
    let at7 = as_of(&f, T0 + 7 * SECOND).await;
    assert_eq!(at7[&5], (Some("sent".into()), Some("b5'".into()), Some(51)));
    assert_eq!(at7[&6], (Some("paid".into()), Some("b6".into()), Some(6)));
    assert_eq!(at7.keys().copied().collect::<Vec<_>>(), vec![5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_all_or_nothing() {
    let f = fixture().await;
    // tx6 (delete 2, update 5, insert 6) spans two segments; it commits at T0 + 6 s.
    let before = as_of(&f, T0 + 6 * SECOND - 1).await;
    let after = as_of(&f, T0 + 6 * SECOND).await;
    assert!(before.contains_key(&2) && !before.contains_key(&6));
    assert_eq!(before[&5].0.as_deref(), Some("paid"));
    assert!(!after.contains_key(&2) && after.contains_key(&6));
    assert_eq!(after[&5].0.as_deref(), Some("sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_state_is_the_latest_and_duplicates_count_once() {
    let f = fixture().await;
    let latest = replay(&f.events, i64::MAX);
    for name in ["public.orders", "\"pg-main\".public.orders"] {
        let sql = format!("SELECT id, status, body, qty FROM {name} ORDER BY id");
        assert_eq!(
            rows(&f.strata.query(&sql).await.expect("current")),
            latest,
            "{name}"
        );
    }
    let batches = f
        .strata
        .query("SELECT count(*) AS n, sum(qty) AS q FROM public.orders")
        .await
        .expect("count");
    insta_like(
        &batches,
        "+---+----+\n| n | q  |\n+---+----+\n| 3 | 64 |\n+---+----+",
    );
    // tx5's duplicated events appear once in the change log too.
    let sql = format!(
        "SELECT count(*) FROM changes('public.orders', {}, {})",
        timestamp(T0 + 4 * SECOND),
        timestamp(T0 + 5 * SECOND)
    );
    insta_like(
        &f.strata.query(&sql).await.expect("changes"),
        "+----------+\n| count(*) |\n+----------+\n| 3        |\n+----------+",
    );
}

fn insta_like(batches: &[RecordBatch], expected: &str) {
    let text = pretty_format_batches(batches).expect("format").to_string();
    assert_eq!(text, expected, "\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_exactly_the_events_in_the_range() {
    let f = fixture().await;
    let ranges = [
        (T0 - SECOND, T0 + 100 * SECOND),
        (T0 + SECOND, T0 + 3 * SECOND),
        (T0 + 3 * SECOND, T0 + 4 * SECOND),
        (T0 + 4 * SECOND, T0 + 6 * SECOND),
        (T0 + 5 * SECOND, T0 + 5 * SECOND),
    ];
    for (t1, t2) in ranges {
        let sql = format!(
            "SELECT _op, _commit_ts, _commit_pos, _seq, _tx_id, id, qty FROM changes('public.orders', {}, {})",
            timestamp(t1),
            timestamp(t2)
        );
        let batches = f.strata.query(&sql).await.expect("changes");
        let mut got = Vec::new();
        for b in &batches {
            let op = b.column(0).as_string::<i32>();
            let ts = b
                .column(1)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let pos = b.column(2).as_primitive::<UInt64Type>();
            let seq = b.column(3).as_primitive::<UInt64Type>();
            let tx = b.column(4).as_string::<i32>();
            let id = b.column(5).as_primitive::<Int32Type>();
            for i in 0..b.num_rows() {
                got.push((
                    op.value(i).to_owned(),
                    ts.value(i),
                    pos.value(i),
                    seq.value(i),
                    tx.value(i).to_owned(),
                    (!id.is_null(i)).then(|| id.value(i)),
                ));
            }
        }
        let mut expected: Vec<&ChangeEvent> = f
            .events
            .iter()
            .filter(|e| e.commit_ts_us > t1 && e.commit_ts_us <= t2)
            .collect();
        expected.sort_by_key(|e| e.position);
        let expected: Vec<_> = expected
            .iter()
            .map(|e| {
                (
                    e.op.code().to_owned(),
                    e.commit_ts_us,
                    e.position.commit,
                    e.position.seq,
                    e.tx_id.clone().unwrap_or_default(),
                    e.key.get("id").and_then(Value::as_i64).map(|i| i as i32),
                )
            })
            .collect();
        assert_eq!(got, expected, "changes in ({t1}, {t2}]");
    }
    // The row image of a delete is its before image; unchanged columns are listed.
    let sql = format!(
        "SELECT _op, id, status, body, _unchanged FROM changes('public.orders', {}, {}) ORDER BY _seq",
        timestamp(T0 + 5 * SECOND),
        timestamp(T0 + 6 * SECOND)
    );
    insta_like(
        &f.strata.query(&sql).await.expect("changes"),
        "+-----+----+--------+------+------------+
| _op | id | status | body | _unchanged |
+-----+----+--------+------+------------+
| u   | 5  | sent   |      | [body]     |
| d   | 2  |        |      | []         |
| c   | 6  | new    | b6   | []         |
+-----+----+--------+------+------------+",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_return_the_right_rows() {
    let f = fixture().await;
    let t = timestamp(T0 + 7 * SECOND);
    let sql = format!("SELECT id, status, body, qty FROM as_of('public.orders', {t}) WHERE id = 5");
    let got = rows(&f.strata.query(&sql).await.expect("where id = 5"));
    assert_eq!(
        got,
        [(5, (Some("sent".into()), Some("b5'".into()), Some(51)))].into()
    );
    let sql = format!(
        "SELECT id, status, body, qty FROM as_of('public.orders', {t}) WHERE id IN (2, 6, 9)"
    );
    let got = rows(&f.strata.query(&sql).await.expect("where id in"));
    assert_eq!(
        got,
        [(6, (Some("paid".into()), Some("b6".into()), Some(6)))].into()
    );
    // A key the truncate removed stays removed under a key filter.
    let sql = format!(
        "SELECT id FROM as_of('public.orders', {}) WHERE id = 1",
        timestamp(T0 + 4 * SECOND)
    );
    let got = f.strata.query(&sql).await.expect("where id = 1");
    assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    // Microseconds and RFC 3339 strings are times too.
    let sql = format!(
        "SELECT count(*) FROM as_of('public.orders', {})",
        T0 + 3 * SECOND
    );
    insta_like(
        &f.strata.query(&sql).await.expect("µs"),
        "+----------+\n| count(*) |\n+----------+\n| 4        |\n+----------+",
    );
    let sql = "SELECT count(*) FROM as_of('public.orders', '2026-11-25T10:00:03+00:00')";
    insta_like(
        &f.strata.query(sql).await.expect("rfc 3339"),
        "+----------+\n| count(*) |\n+----------+\n| 4        |\n+----------+",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_missing_segments_are_named() {
    let f = fixture().await;
    let err = f
        .strata
        .query("SELECT * FROM as_of('public.nope', now())")
        .await
        .expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("public.nope") && text.contains("public.orders"),
        "{text}"
    );
    let err = f
        .strata
        .query("SELECT * FROM public.nope")
        .await
        .expect_err("unknown table");
    let text = err.to_string();
    assert!(
        text.contains("public.nope") && text.contains("known tables: "),
        "{text}"
    );

    let state = f.catalog.state();
    let segment = &state.segments(&orders())[1].segment;
    let path = Path::from(format!("warehouse/{}", segment.path));
    f.store.delete(&path).await.expect("delete a segment");
    let err = f
        .strata
        .query("SELECT * FROM public.orders")
        .await
        .expect_err("missing segment");
    let text = err.to_string();
    assert!(text.contains(path.as_ref()), "{text}");
}

mod coalesce;
mod snapshots;
