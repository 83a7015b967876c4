//! Coalescing on the stack's S3 server, by `strata run`: twelve one-change segments become one,
//! every `as_of` and `changes` answer stays the same, a resent copy is stored once; a
//! `strata gc --dry-run` names the replaced files, and `strata run`'s periodic gc deletes them
//! without changing any answer.

use std::io::Read as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::util::pretty::pretty_format_batches;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::json;
use strata_catalog::{
    Catalog, CatalogConfig, ChangeEvent, ConnectType, Operation, Row, SourcePosition, TableId,
    TableSchema,
};
use strata_query::{StrataContext, testing};

use crate::cli::{command, s3_storage_env, strata, text};
use crate::support::{kafka_brokers, s3_store, unique};

/// 2026-11-25T10:00:00Z in µs.
const T0: i64 = 1_795_600_800_000_000;
const SECOND: i64 = 1_000_000;

fn table() -> TableId {
    TableId::new("pg", "public", "t")
}

fn schema() -> TableSchema {
    testing::table_schema(
        table(),
        &[
            ("id", ConnectType::Int32, true),
            ("name", ConnectType::String, false),
            ("qty", ConnectType::Int64, false),
        ],
    )
}

/// Transaction `tx` (commit time T0 + tx s, position tx * 100): one change of key `id`.
fn change(tx: i64, op: Operation, id: i32, name: Option<&str>, qty: i64) -> ChangeEvent {
    let key: Row = [("id", json!(id))].into_iter().collect();
    let mut image = key.clone();
    let mut unchanged = Vec::new();
    match name {
        Some(name) => {
            image.insert("name", json!(name));
        }
        None => unchanged.push("name".to_owned()),
    }
    image.insert("qty", json!(qty));
    let (before, after) = match op {
        Operation::Delete => (Some(image), None),
        _ => (None, Some(image)),
    };
    let position = u64::try_from(tx).unwrap() * 100;
    ChangeEvent {
        table: table(),
        op,
        key,
        before,
        after,
        unchanged,
        commit_ts_us: T0 + tx * SECOND,
        position: SourcePosition {
            commit: position,
            seq: position,
        },
        tx_id: Some(format!("tx{tx}")),
        origin: None,
    }
}

/// Twelve segments of one change each; the last is a resent copy of the eleventh.
fn history() -> Vec<ChangeEvent> {
    use Operation::{Create, Delete, Update};
    let mut events = vec![
        change(1, Create, 1, Some("a"), 1),
        change(2, Create, 2, Some("b"), 2),
        change(3, Create, 3, Some("c"), 3),
        change(4, Create, 4, Some("d"), 4),
        change(5, Update, 1, Some("a2"), 10),
        change(6, Update, 2, None, 20),
        change(7, Update, 3, Some("c2"), 30),
        change(8, Update, 4, None, 40),
        change(9, Delete, 1, Some("a2"), 10),
        change(10, Update, 2, None, 21),
        change(11, Create, 5, Some("e"), 5),
    ];
    events.push(events[10].clone());
    events
}

/// Every answer the test compares: `as_of` at each second around the history, and the
/// whole change log.
async fn answers(strata: &StrataContext) -> Vec<String> {
    let at = |t: i64| {
        let dt = arrow::temporal_conversions::timestamp_us_to_datetime(t).unwrap();
        format!("TIMESTAMP '{}'", dt.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    };
    let mut queries: Vec<String> = (0..=12)
        .map(|s| {
            format!(
                "SELECT id, name, qty FROM as_of('public.t', {}) ORDER BY id",
                at(T0 + s * SECOND)
            )
        })
        .collect();
    queries.push(format!(
        "SELECT _op, _commit_pos, _seq, id, name, qty, _unchanged FROM changes('public.t', {}, {})",
        at(T0),
        at(T0 + 20 * SECOND)
    ));
    let mut out = Vec::new();
    for sql in queries {
        let batches = strata.query(&sql).await.unwrap();
        out.push(format!(
            "{sql}\n{}",
            pretty_format_batches(&batches).unwrap()
        ));
    }
    out
}

/// `strata run` with only the compactor part (subscribed to a topic nobody writes), so that
/// only its coalescer and gc have work.
fn run_compactor_part(env: &[(&str, String)]) -> Child {
    command(&["run"], env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `done` every 200 ms until it holds and `child`'s log holds `logged`; then stops
/// `child` and returns its log. Fails after 60 s, or when `child` exits first, saying `what` it
/// waited for. The log is read while `child` runs: a line is written after the effect it
/// reports (files deleted, then logged), so seeing the effect is not enough.
async fn wait_then_stop<F, Fut>(mut child: Child, what: &str, logged: &str, mut done: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn({
        let log = Arc::clone(&log);
        move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let seen = log.lock().unwrap().contains(logged);
        if seen && done().await {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    child.kill().ok();
    child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(finished, "{what}: not within 60 s\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_run_coalesces_small_segments_on_s3_and_its_gc_deletes_the_replaced_ones() {
    let (store, root) = s3_store();
    let catalog = Arc::new(
        Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
            .await
            .unwrap(),
    );
    let events = history();
    let mut sources = Vec::new();
    for event in &events {
        let segment =
            testing::add_segment(&catalog, &store, &schema(), std::slice::from_ref(event))
                .await
                .unwrap();
        sources.push(segment.path);
    }
    let context = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    let before = answers(&context).await;
    assert!(
        before[12].contains("| 2  | b    | 21  |") && !before[12].contains("| 1  |"),
        "the history as written: 1 deleted, 2 kept its name\n{}",
        before[12]
    );

    let storage_env = s3_storage_env(&root);
    let mut env = storage_env.clone();
    env.extend([
        ("STRATA_KAFKA__BROKERS", kafka_brokers()),
        ("STRATA_METRICS__ENABLED", "false".into()),
        ("STRATA_RUN__PARTS", r#"["compactor"]"#.into()),
        (
            "STRATA_COMPACTOR__TOPICS",
            format!("['^{}$']", unique("strata.nothing")),
        ),
        ("STRATA_COMPACTOR__GROUP_ID", unique("e2e-coalesce")),
        // The defaults but the interval and the settling time: ten or more small segments
        // make a group.
        ("STRATA_COALESCE__INTERVAL", "\"1s\"".into()),
        ("STRATA_COALESCE__SETTLE", "\"0s\"".into()),
        ("STRATA_SNAPSHOTS__ENABLED", "false".into()),
        ("NO_COLOR", "1".into()),
    ]);
    let log = wait_then_stop(
        run_compactor_part(&env),
        "the twelve segments coalesced into one, and logged",
        "segments coalesced",
        || async {
            catalog.refresh().await.unwrap();
            catalog.state().segments(&table()).len() == 1
        },
    )
    .await;
    assert!(
        log.contains("segments coalesced") && log.contains("sources=12"),
        "{log}"
    );

    let state = catalog.state();
    let coalesced = state.segments(&table())[0].clone();
    assert_eq!(coalesced.segment.rows, 11, "the resent copy is stored once");
    assert_eq!(
        coalesced.segment.content_version,
        Some(strata_catalog::CatalogVersion(12))
    );
    assert_eq!(
        answers(&context).await,
        before,
        "coalescing changed an answer"
    );

    // The replaced files are still there for readers of older versions; a gc dry run with a
    // zero grace names them (their removal is older than 0 s).
    let at = |relative: &str| {
        relative
            .split('/')
            .fold(root.clone(), |path: Path, part| path.join(part))
    };
    for path in &sources {
        assert!(store.head(&at(path)).await.is_ok(), "{path} deleted early");
    }
    let out = strata(&["gc", "--older-than", "0s", "--dry-run"], &storage_env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("orphaned        12 files") && stdout.contains("would be deleted"),
        "{stdout}"
    );
    for path in &sources {
        assert!(
            store.head(&at(path)).await.is_ok(),
            "{path} deleted by a dry run"
        );
    }

    // `strata run`'s own periodic gc, every second with a zero grace, deletes them and keeps
    // the coalesced segment.
    let mut with_gc = env.clone();
    with_gc.push(("STRATA_GC__INTERVAL", "\"1s\"".into()));
    with_gc.push(("STRATA_GC__OLDER_THAN", "\"0s\"".into()));
    with_gc.push(("STRATA_GC__UNSAFE_ALLOW_SHORT_GRACE", "true".into()));
    let log = wait_then_stop(
        run_compactor_part(&with_gc),
        "the replaced files deleted by the periodic gc, and logged",
        "gc deleted unreferenced history files",
        || async {
            let mut left = 0;
            for path in &sources {
                left += usize::from(store.head(&at(path)).await.is_ok());
            }
            left == 0
        },
    )
    .await;
    assert!(
        log.contains("gc deleted unreferenced history files") && log.contains("files=12"),
        "{log}"
    );
    assert!(store.head(&at(&coalesced.segment.path)).await.is_ok());
    let context = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    assert_eq!(answers(&context).await, before, "gc changed an answer");
}
