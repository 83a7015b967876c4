//! Coalescing small segments changes no answer, drops repeated copies, keeps snapshots
//! usable, respects schema changes and skips (and quarantines) a corrupt segment.

use strata_catalog::{Action, CatalogVersion, CommitInfo, Segment};
use strata_query::coalesce::{CoalesceConfig, Coalescer, coalesce_group, plan};
use strata_query::snapshot::usable_snapshot;

use super::*;

/// Groups of two or more segments of any size, as soon as they are committed.
fn eager() -> CoalesceConfig {
    CoalesceConfig {
        min_segments: 2,
        settle: std::time::Duration::ZERO,
        ..CoalesceConfig::default()
    }
}

/// Every segment counts as settled.
const ALL: CatalogVersion = CatalogVersion(u64::MAX);

const INSTANTS: [i64; 9] = [
    T0 - SECOND,
    T0 + SECOND,
    T0 + 2 * SECOND,
    T0 + 3 * SECOND,
    T0 + 4 * SECOND,
    T0 + 5 * SECOND,
    T0 + 6 * SECOND,
    T0 + 7 * SECOND,
    T0 + 100 * SECOND,
];

/// `changes(t1, t2)` as (op, position, seq, id) rows, in the order returned.
async fn changes(f: &Fixture, t1: i64, t2: i64) -> Vec<(String, u64, u64, Option<i32>)> {
    let sql = format!(
        "SELECT _op, _commit_pos, _seq, id FROM changes('public.orders', {}, {})",
        timestamp(t1),
        timestamp(t2)
    );
    let mut got = Vec::new();
    for b in &f.strata.query(&sql).await.expect("changes") {
        let op = b.column(0).as_string::<i32>();
        let pos = b.column(1).as_primitive::<UInt64Type>();
        let seq = b.column(2).as_primitive::<UInt64Type>();
        let id = b.column(3).as_primitive::<Int32Type>();
        for i in 0..b.num_rows() {
            got.push((
                op.value(i).to_owned(),
                pos.value(i),
                seq.value(i),
                (!id.is_null(i)).then(|| id.value(i)),
            ));
        }
    }
    got
}

fn expected_changes(
    events: &[ChangeEvent],
    t1: i64,
    t2: i64,
) -> Vec<(String, u64, u64, Option<i32>)> {
    let mut in_range: Vec<&ChangeEvent> = events
        .iter()
        .filter(|e| e.commit_ts_us > t1 && e.commit_ts_us <= t2)
        .collect();
    in_range.sort_by_key(|e| e.position);
    in_range
        .iter()
        .map(|e| {
            (
                e.op.code().to_owned(),
                e.position.commit,
                e.position.seq,
                e.key.get("id").and_then(Value::as_i64).map(|i| i as i32),
            )
        })
        .collect()
}

async fn check_history(f: &Fixture) {
    for t in INSTANTS {
        assert_eq!(as_of(f, t).await, replay(&f.events, t), "as of {t}");
    }
    for (t1, t2) in [
        (T0 - SECOND, T0 + 100 * SECOND),
        (T0 + SECOND, T0 + 3 * SECOND),
        (T0 + 4 * SECOND, T0 + 6 * SECOND),
    ] {
        assert_eq!(
            changes(f, t1, t2).await,
            expected_changes(&f.events, t1, t2),
            "changes in ({t1}, {t2}]"
        );
    }
}

fn paths(segments: &[strata_catalog::SegmentEntry]) -> Vec<String> {
    segments.iter().map(|e| e.segment.path.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_changes_no_answer_and_drops_repeated_copies() {
    let f = fixture().await;
    let before = f.catalog.state();
    let sources = paths(before.segments(&orders()));
    assert_eq!(sources.len(), 5);
    let rows_before: u64 = before
        .segments(&orders())
        .iter()
        .map(|e| e.segment.rows)
        .sum();
    assert_eq!(rows_before, 19, "17 changes, 2 of them stored twice");

    let groups = plan(&before, &orders(), &eager(), ALL);
    assert_eq!(groups.len(), 1);
    assert_eq!(paths(&groups[0]), sources, "all five, in commit order");
    let done = coalesce_group(&f.catalog, &f.store, &orders(), &groups[0], &eager())
        .await
        .expect("coalesce");
    assert_eq!(done.len(), 1);
    let c = &done[0];
    assert_eq!(c.replaced, sources);
    assert_eq!(c.copies_dropped, 2);
    assert_eq!(c.segment.rows, 17);
    assert_eq!(c.segment.min_commit_ts, T0 + SECOND);
    assert_eq!(c.segment.max_commit_ts, T0 + 7 * SECOND);

    let after = f.catalog.state();
    let live = after.segments(&orders());
    assert_eq!(paths(live), vec![c.segment.path.clone()]);
    assert_eq!(live[0].added_in, before.version().next());
    assert_eq!(
        live[0].content_version(),
        before.version(),
        "the changes were all in by the last source's version"
    );
    // The replaced files stay for readers of older versions (`strata gc` removes them).
    for path in &sources {
        let object = Path::from(format!("warehouse/{path}"));
        f.store.head(&object).await.expect("source kept");
    }
    // The new file holds each change once, sorted like a compactor segment.
    let object = Path::from(format!("warehouse/{}", c.segment.path));
    let bytes = f
        .store
        .get(&object)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.len() as u64, c.segment.bytes);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
        .expect("parquet");
    let mut order = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let key = batch
            .column(batch.schema().index_of("_key").expect("_key"))
            .as_string::<i32>()
            .clone();
        let pos = batch
            .column(batch.schema().index_of("_commit_pos").expect("_commit_pos"))
            .as_primitive::<UInt64Type>()
            .clone();
        order.extend((0..batch.num_rows()).map(|i| (key.value(i).to_owned(), pos.value(i))));
    }
    assert_eq!(order.len(), 17);
    assert!(order.is_sorted(), "{order:?}");

    check_history(&f).await;
    // Nothing left to do.
    assert!(plan(&after, &orders(), &eager(), ALL).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_stay_usable_and_no_group_straddles_one() {
    let mut f = fixture().await;
    let snapshot = strata_query::build_snapshot(
        &f.catalog,
        &f.store,
        &orders(),
        T0 + 7 * SECOND + SECOND / 2,
        &strata_query::SnapshotConfig::default(),
    )
    .await
    .expect("snapshot");
    let old = paths(f.catalog.state().segments(&orders()));
    // Three more segments after the snapshot: tx8..tx10 update 7.
    let mut new = Vec::new();
    for tx in 8..=10_u32 {
        let e = change(
            Operation::Update,
            Some(7),
            &full(&format!("s{tx}"), &format!("b7-{tx}"), i64::from(tx)),
            &[],
            tx,
            u64::from(tx) * 100,
        );
        let s = testing::add_segment(&f.catalog, &f.store, &schema(), std::slice::from_ref(&e))
            .await
            .expect("segment");
        new.push(s.path);
        f.events.push(e);
    }

    let state = f.catalog.state();
    let groups = plan(&state, &orders(), &eager(), ALL);
    assert_eq!(
        groups.iter().map(|g| paths(g)).collect::<Vec<_>>(),
        vec![old, new],
        "one group on each side of the snapshot's version"
    );
    for group in &groups {
        coalesce_group(&f.catalog, &f.store, &orders(), group, &eager())
            .await
            .expect("coalesce");
    }
    let state = f.catalog.state();
    assert_eq!(state.segments(&orders()).len(), 2);
    assert_eq!(
        usable_snapshot(&state, &orders(), T0 + 8 * SECOND).map(|s| s.snapshot_id.clone()),
        Some(snapshot.snapshot_id.clone()),
        "the snapshot is still complete"
    );
    check_history(&f).await;
    assert_eq!(
        as_of(&f, T0 + 100 * SECOND).await[&7],
        (Some("s10".into()), Some("b7-10".into()), Some(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_splits_a_group_into_runs() {
    let mut f = fixture().await;
    // The table gains a column; two segments are written with it.
    let mut wider = schema();
    wider.columns.push(ColumnSchema {
        name: "note".into(),
        column_type: ColumnType::plain(ConnectType::String),
        optional: true,
        key: false,
    });
    for tx in 8..=9_u32 {
        let mut cells = full("wide", &format!("b{tx}"), i64::from(tx));
        cells.push(("note", json!("n")));
        let e = change(
            Operation::Create,
            Some(tx as i32 + 10),
            &cells,
            &[],
            tx,
            u64::from(tx) * 100,
        );
        testing::add_segment(&f.catalog, &f.store, &wider, std::slice::from_ref(&e))
            .await
            .expect("segment");
        f.events.push(e);
    }
    let state = f.catalog.state();
    let groups = plan(&state, &orders(), &eager(), ALL);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 7);
    let done = coalesce_group(&f.catalog, &f.store, &orders(), &groups[0], &eager())
        .await
        .expect("coalesce");
    assert_eq!(
        done.iter().map(|c| c.replaced.len()).collect::<Vec<_>>(),
        vec![5, 2],
        "one coalesced segment per schema"
    );
    assert_eq!(f.catalog.state().segments(&orders()).len(), 2);
    check_history(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_segment_is_quarantined_and_left_out_of_later_rounds() {
    let f = fixture().await;
    let state = f.catalog.state();
    let damaged = state.segments(&orders())[2].segment.path.clone();
    f.store
        .put(
            &Path::from(format!("warehouse/{damaged}")),
            b"not a parquet file".to_vec().into(),
        )
        .await
        .expect("overwrite");
    let coalescer =
        Coalescer::new(Arc::clone(&f.catalog), Arc::clone(&f.store), eager()).expect("coalescer");
    assert!(coalescer.round().await.expect("round").is_empty());
    let state = f.catalog.state();
    assert_eq!(state.segments(&orders()).len(), 5, "nothing replaced");
    let quarantined: Vec<&str> = state.quarantined_objects().collect();
    assert_eq!(quarantined, vec![damaged.as_str()]);

    // The next round coalesces the four readable segments and keeps the damaged one.
    let done = coalescer.round().await.expect("round");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].replaced.len(), 4);
    assert!(!done[0].replaced.contains(&damaged));
    let state = f.catalog.state();
    let live = paths(state.segments(&orders()));
    assert_eq!(live.len(), 2);
    assert!(live.contains(&damaged));
    let stats = coalescer.stats();
    assert_eq!(stats.failures.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        stats
            .segments_replaced
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

/// `plan` alone, over segment entries without files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_group_by_size_tier_and_bound_each_group() {
    let f = fixture().await;
    const KIB: u64 = 1024;
    let segment = |i: usize, bytes: u64, rows: u64| Segment {
        table: orders(),
        path: format!("pg-main/public/orders/changes/p{i:03}.parquet"),
        rows,
        bytes,
        min_key: "a".into(),
        max_key: "z".into(),
        min_commit_ts: T0 + 10 * SECOND,
        max_commit_ts: T0 + 11 * SECOND,
        min_position: format!("{i:020}/0"),
        max_position: format!("{i:020}/9"),
        content_version: None,
    };
    let mut actions = Vec::new();
    // 25 tiny segments (tier 0), 3 of 200 KiB (tier 1: fewer than min_segments and far
    // from target_bytes / 2, so they wait), one of 20 MiB (not small).
    for i in 0..25 {
        actions.push(Action::AddSegment(segment(100 + i, KIB, 10)));
    }
    for i in 0..3 {
        actions.push(Action::AddSegment(segment(200 + i, 200 * KIB, 1000)));
    }
    actions.push(Action::AddSegment(segment(300, 20 * 1024 * KIB, 100_000)));
    f.catalog
        .commit(actions, CommitInfo::new("test", "segments"))
        .await
        .expect("commit");
    let state = f.catalog.state();
    let sizes = |groups: &[Vec<strata_catalog::SegmentEntry>]| -> Vec<Vec<u64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|e| e.segment.bytes).collect())
            .collect()
    };
    let defaults = CoalesceConfig::default();
    // Nothing committed after version 5 has settled: the fixture's five alone are too few.
    assert!(plan(&state, &orders(), &defaults, CatalogVersion(5)).is_empty());
    let groups = plan(&state, &orders(), &defaults, ALL);
    // The fixture's five small segments and the 25 tiny ones are one tier-0 group.
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 30);
    assert!(sizes(&groups)[0][5..].iter().all(|b| *b == KIB));

    // Bounded by rows: at most max_rows per group; a remainder below min_segments waits.
    let by_rows = CoalesceConfig {
        max_rows: 100,
        ..CoalesceConfig::default()
    };
    let groups = plan(&state, &orders(), &by_rows, ALL);
    assert!(
        groups
            .iter()
            .all(|g| g.iter().map(|e| e.segment.rows).sum::<u64>() <= 100)
    );
    assert!(groups.iter().all(|g| g.len() >= 10), "{:?}", sizes(&groups));

    // Bounded by bytes, and half of target_bytes is enough for a short group.
    let by_bytes = CoalesceConfig {
        small_bytes: 256 * KIB,
        target_bytes: 400 * KIB,
        ..CoalesceConfig::default()
    };
    let groups = plan(&state, &orders(), &by_bytes, ALL);
    assert_eq!(
        sizes(&groups).last(),
        Some(&vec![200 * KIB, 200 * KIB]),
        "two tier-1 segments fill target_bytes; the third waits"
    );
    assert_eq!(groups.len(), 2);

    // A snapshot built between two segments splits their group.
    let version = state.version();
    f.catalog
        .commit(
            vec![Action::AddSnapshot(strata_catalog::Snapshot {
                table: orders(),
                snapshot_id: "s".into(),
                as_of_ts: T0,
                paths: vec![],
                rows: 0,
                bytes: 0,
                built_from_version: CatalogVersion(version.get() - 1),
            })],
            CommitInfo::new("test", "snapshot"),
        )
        .await
        .expect("snapshot");
    let groups = plan(&f.catalog.state(), &orders(), &defaults, ALL);
    assert_eq!(
        groups.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![25],
        "the fixture's five (before the snapshot's version) are too few alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_wait_until_they_have_settled() {
    let f = fixture().await;
    let config = CoalesceConfig {
        settle: std::time::Duration::from_millis(300),
        ..eager()
    };
    let coalescer =
        Coalescer::new(Arc::clone(&f.catalog), Arc::clone(&f.store), config).expect("coalescer");
    assert!(
        coalescer.round().await.expect("round").is_empty(),
        "just seen: not settled"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let done = coalescer.round().await.expect("round");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].replaced.len(), 5);
    // A segment committed now waits again.
    let e = change(Operation::Update, Some(7), &full("x", "y", 1), &[], 8, 800);
    testing::add_segment(&f.catalog, &f.store, &schema(), std::slice::from_ref(&e))
        .await
        .expect("segment");
    assert!(coalescer.round().await.expect("round").is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let done = coalescer.round().await.expect("round");
    assert_eq!(done.len(), 1, "the coalesced segment and the new one");
    assert_eq!(done[0].replaced.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_committed_meanwhile_refuses_a_straddling_rewrite_and_its_file_goes() {
    let f = fixture().await;
    let state = f.catalog.state();
    let groups = plan(&state, &orders(), &eager(), ALL);
    assert_eq!(groups[0].len(), 5);
    // While the group is planned, a snapshot built from version 3 (the first three segments)
    // is committed.
    f.catalog
        .commit(
            vec![Action::AddSnapshot(strata_catalog::Snapshot {
                table: orders(),
                snapshot_id: "meanwhile".into(),
                as_of_ts: T0 + 3 * SECOND,
                paths: vec![],
                rows: 0,
                bytes: 0,
                built_from_version: CatalogVersion(3),
            })],
            CommitInfo::new("test", "snapshot"),
        )
        .await
        .expect("snapshot");
    let err = coalesce_group(&f.catalog, &f.store, &orders(), &groups[0], &eager())
        .await
        .expect_err("straddles the snapshot");
    assert!(err.to_string().contains("meanwhile"), "{err}");
    assert_eq!(f.catalog.state().segments(&orders()).len(), 5);
    // No file of the refused rewrite is left behind.
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
        f.store
            .list(Some(&Path::from("warehouse/pg-main/public/orders/changes"))),
    )
    .await
    .expect("list");
    assert_eq!(listed.len(), 5, "{listed:?}");
    // Planned again, the groups respect it.
    let groups = plan(&f.catalog.state(), &orders(), &eager(), ALL);
    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_budget_cuts_a_group_and_the_rest_waits() {
    let f = fixture().await;
    let tight = CoalesceConfig {
        max_memory_bytes: 1,
        ..eager()
    };
    let coalescer =
        Coalescer::new(Arc::clone(&f.catalog), Arc::clone(&f.store), tight).expect("coalescer");
    // Each round reads two sources (the least that makes progress) and rewrites them.
    let done = coalescer.round().await.expect("round");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].replaced.len(), 2);
    assert_eq!(f.catalog.state().segments(&orders()).len(), 4);
    check_history(&f).await;
    for _ in 0..3 {
        coalescer.round().await.expect("round");
    }
    assert_eq!(f.catalog.state().segments(&orders()).len(), 1);
    check_history(&f).await;
}
