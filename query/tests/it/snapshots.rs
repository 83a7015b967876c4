//! Snapshots fold history without changing any answer, are used for later instants, and are
//! set aside when a late segment makes them incomplete.

use strata_catalog::Snapshot;
use strata_query::SnapshotConfig;
use strata_query::snapshot::{is_complete, usable_snapshot};

use super::*;

async fn snapshot_at(f: &Fixture, t: i64) -> Snapshot {
    strata_query::build_snapshot(
        &f.catalog,
        &f.store,
        &orders(),
        t,
        &SnapshotConfig::default(),
    )
    .await
    .expect("snapshot")
}

const INSTANTS: [i64; 8] = [
    T0 - SECOND,
    T0 + SECOND,
    T0 + 2 * SECOND,
    T0 + 3 * SECOND,
    T0 + 4 * SECOND,
    T0 + 5 * SECOND,
    T0 + 6 * SECOND,
    T0 + 100 * SECOND,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_change_no_answer_at_any_instant() {
    let f = fixture().await;
    // Before the truncate (tx4), then after it: the second is built from the first.
    let first = snapshot_at(&f, T0 + 3 * SECOND + SECOND / 2).await;
    assert_eq!(first.rows, replay(&f.events, first.as_of_ts).len() as u64);
    let second = snapshot_at(&f, T0 + 6 * SECOND + SECOND / 2).await;
    assert_eq!(second.rows, replay(&f.events, second.as_of_ts).len() as u64);
    assert_eq!(
        second.rows, 2,
        "the truncate cleared 1, 3 and 4; tx6 deleted 2: keys 5 and 6"
    );

    let state = f.catalog.state();
    for t in INSTANTS {
        let expected_snapshot = [&first, &second]
            .into_iter()
            .rfind(|s| s.as_of_ts <= t)
            .map(|s| s.snapshot_id.clone());
        assert_eq!(
            usable_snapshot(&state, &orders(), t).map(|s| s.snapshot_id.clone()),
            expected_snapshot,
            "snapshot used at {t}"
        );
        assert_eq!(as_of(&f, t).await, replay(&f.events, t), "as of {t}");
    }
    let sql = "SELECT id, status, body, qty FROM public.orders ORDER BY id";
    assert_eq!(
        rows(&f.strata.query(sql).await.expect("current")),
        replay(&f.events, i64::MAX)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_snapshot_do_not_touch_the_history_before_it() {
    let f = fixture().await;
    let snapshot = snapshot_at(&f, T0 + 5 * SECOND + SECOND / 2).await;
    // Remove every segment file wholly before the snapshot: reads at or after it still work.
    let state = f.catalog.state();
    let mut removed = 0;
    for entry in state.segments(&orders()) {
        if entry.segment.max_commit_ts <= snapshot.as_of_ts {
            let path = Path::from(format!("warehouse/{}", entry.segment.path));
            f.store.delete(&path).await.expect("delete");
            removed += 1;
        }
    }
    assert!(removed >= 3, "the fixture has 3+ segments before tx6");
    for t in [snapshot.as_of_ts, T0 + 6 * SECOND, T0 + 7 * SECOND] {
        assert_eq!(as_of(&f, t).await, replay(&f.events, t), "as of {t}");
    }
    // Before the snapshot the history is needed; its absence is an error naming the file.
    let sql = format!(
        "SELECT * FROM as_of('public.orders', {})",
        timestamp(T0 + 2 * SECOND)
    );
    let err = f.strata.query(&sql).await.expect_err("segments are gone");
    let message = err.to_string();
    assert!(
        message.contains("change segment `warehouse/pg-main/public/orders/changes/"),
        "{message}"
    );
}

/// A late change in a segment of its own: an update of key 6 (`late`, body `b6-late`, qty 60)
/// committed at `commit_ts_us`, at position `position`.
async fn add_late_update(f: &mut Fixture, commit_ts_us: i64, position: u64) {
    let mut late = change(
        Operation::Update,
        Some(6),
        &full("late", "b6-late", 60),
        &[],
        6,
        position,
    );
    late.commit_ts_us = commit_ts_us;
    late.position = SourcePosition {
        commit: position,
        seq: position,
    };
    testing::add_segment(&f.catalog, &f.store, &schema(), std::slice::from_ref(&late))
        .await
        .expect("late segment");
    f.events.push(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_segment_sets_the_snapshot_aside() {
    let mut f = fixture().await;
    let snapshot = snapshot_at(&f, T0 + 6 * SECOND + SECOND / 2).await;
    // A change committed at the source before the snapshot's instant arrives afterwards
    // (a lagging partition): tx8 at T0 + 6.2 s, position 620, updates 6.
    add_late_update(&mut f, T0 + 6 * SECOND + SECOND / 5, 620).await;
    let state = f.catalog.state();
    assert!(!is_complete(&state, &orders(), &snapshot));
    assert!(usable_snapshot(&state, &orders(), i64::MAX).is_none());
    for t in INSTANTS {
        assert_eq!(as_of(&f, t).await, replay(&f.events, t), "as of {t}");
    }
    assert_eq!(
        as_of(&f, T0 + 7 * SECOND).await[&6],
        (Some("paid".into()), Some("b6-late".into()), Some(60)),
        "tx7 keeps body and qty of the late change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_segment_is_named_quarantined_and_other_tables_go_on() {
    let f = fixture().await;
    // A second table with one segment.
    let mut other = schema();
    other.table = TableId::new("pg-main", "public", "invoices");
    let mut invoice = history().remove(0);
    invoice.table = other.table.clone();
    testing::add_segment(&f.catalog, &f.store, &other, std::slice::from_ref(&invoice))
        .await
        .expect("invoices segment");
    // Both tables need a watermark for a snapshot to be due.
    for table in [orders(), other.table.clone()] {
        f.catalog
            .commit(
                vec![strata_catalog::Action::SetWatermark(
                    strata_catalog::Watermark {
                        table,
                        ts: T0 + 10 * SECOND,
                    },
                )],
                strata_catalog::CommitInfo::new("test", "watermark"),
            )
            .await
            .expect("watermark");
    }
    // Damage the second segment of orders: its bytes are no Parquet file any more.
    let state = f.catalog.state();
    let damaged = state.segments(&orders())[1].segment.path.clone();
    let object = Path::from(format!("warehouse/{damaged}"));
    f.store
        .put(&object, b"not a parquet file".to_vec().into())
        .await
        .expect("overwrite");

    let err = f
        .strata
        .query("SELECT * FROM public.orders")
        .await
        .expect_err("corrupt segment");
    let text = err.to_string();
    assert!(
        text.contains(object.as_ref()) && text.contains("public/orders"),
        "{text}"
    );

    let config = SnapshotConfig {
        min_changes: 1,
        ..SnapshotConfig::default()
    };
    let snapshotter =
        strata_query::Snapshotter::new(Arc::clone(&f.catalog), Arc::clone(&f.store), config)
            .expect("snapshotter");
    let built = snapshotter.round().await.expect("round");
    assert_eq!(
        built.iter().map(|s| s.table.clone()).collect::<Vec<_>>(),
        vec![other.table.clone()],
        "invoices is snapshotted, orders is not"
    );
    let quarantined = |state: &strata_catalog::CatalogState| -> Vec<String> {
        state
            .quarantine()
            .iter()
            .filter_map(|q| match &q.object {
                strata_catalog::QuarantinedObject::Object { path } => Some(path.clone()),
                strata_catalog::QuarantinedObject::KafkaRecord { .. } => None,
            })
            .collect()
    };
    let state = f.catalog.state();
    assert_eq!(quarantined(&state), vec![damaged.clone()]);
    assert!(state.quarantine()[0].reason.contains("unreadable"));
    // Nothing leaves the history: the segment is still listed; a second round adds no entry.
    assert!(
        state
            .segments(&orders())
            .iter()
            .any(|e| e.segment.path == damaged)
    );
    snapshotter.round().await.expect("round");
    assert_eq!(quarantined(&f.catalog.state()), vec![damaged]);
    assert_eq!(
        snapshotter
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_snapshotter_builds_nothing_and_runs_until_cancelled() {
    let f = fixture().await;
    let config = SnapshotConfig {
        enabled: false,
        interval: std::time::Duration::from_millis(10),
        min_changes: 1,
        ..SnapshotConfig::default()
    };
    let snapshotter =
        strata_query::Snapshotter::new(Arc::clone(&f.catalog), Arc::clone(&f.store), config)
            .expect("snapshotter");
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(snapshotter.run(cancel.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "`strata run` stops when a part ends");
    cancel.cancel();
    task.await.expect("join").expect("run");
    let state = f.catalog.state();
    assert!(
        state
            .table(&orders())
            .expect("orders")
            .snapshots()
            .is_empty()
    );
}

/// Snapshots over seven weeks, thinned by the snapshotter's round: the policy's picks go,
/// an incomplete one goes, and no answer changes at any instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinning_removes_what_the_policy_does_not_keep_and_changes_no_answer() {
    const HOUR: i64 = 3_600 * SECOND;
    const DAY: i64 = 24 * HOUR;
    let mut f = fixture().await;
    // T0 is Wednesday 2026-11-25 10:00 UTC. Two snapshots in the first week (the second
    // after the truncate), two on one day ten days on, one a day before the newest and
    // two within its last day.
    let newest_at = T0 + 50 * DAY;
    let mut built = Vec::new();
    for t in [
        T0 + 3 * SECOND + SECOND / 2, // Wed: the same week as the next, which is newer
        T0 + 6 * SECOND + SECOND / 2, // Wed: newest of its week
        T0 + 40 * DAY,                // Sun 2027-01-03 10:00: same day as the next
        T0 + 40 * DAY + 2 * HOUR,     // newest of its day (age 10 d - 2 h: the daily tier)
        newest_at - 30 * HOUR,        // age 30 h: the newest of its day
        newest_at - 20 * HOUR,        // within a day of the newest
        newest_at,
    ] {
        built.push(snapshot_at(&f, t).await);
    }
    // A change committed an hour before the newest's instant arrives late: that snapshot is
    // incomplete (the six older ones are not).
    add_late_update(&mut f, newest_at - HOUR, 900).await;
    // One more snapshot after it, complete: the incomplete one is no longer the newest (the
    // newest is always kept), and ages count back from this one.
    let last = snapshot_at(&f, newest_at + HOUR).await;
    built.push(last.clone());

    let instants: Vec<i64> = INSTANTS
        .into_iter()
        .chain(
            built
                .iter()
                .flat_map(|s| [s.as_of_ts - 1, s.as_of_ts, s.as_of_ts + HOUR]),
        )
        .collect();
    let mut before = Vec::new();
    for &t in &instants {
        before.push(as_of(&f, t).await);
    }

    let config = SnapshotConfig {
        interval: std::time::Duration::from_secs(3600),
        min_changes: u64::MAX,
        ..SnapshotConfig::default()
    };
    let snapshotter =
        strata_query::Snapshotter::new(Arc::clone(&f.catalog), Arc::clone(&f.store), config)
            .expect("snapshotter");
    let stats = snapshotter.stats();
    assert!(
        snapshotter.round().await.expect("round").is_empty(),
        "none due"
    );
    let state = f.catalog.state();
    let left: Vec<i64> = state
        .table(&orders())
        .expect("orders")
        .snapshots()
        .iter()
        .map(|s| s.as_of_ts)
        .collect();
    let at = |i: usize| built[i].as_of_ts;
    assert_eq!(
        left,
        [at(1), at(3), at(4), at(5), last.as_of_ts],
        "kept: the first week's newest, day 40's newest, the 30 h old one, the 20 h old one \
         and the newest; removed: the first week's older one, day 40's older one, the \
         incomplete one"
    );
    assert_eq!(stats.removed.load(std::sync::atomic::Ordering::Relaxed), 3);
    let removed_bytes: u64 = [0, 2, 6].iter().map(|&i| built[i].bytes).sum();
    assert_eq!(
        stats
            .removed_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        removed_bytes
    );
    for (t, expected) in instants.iter().zip(&before) {
        assert_eq!(&as_of(&f, *t).await, expected, "as of {t} after thinning");
        assert_eq!(expected, &replay(&f.events, *t), "as of {t}");
    }
    // A second round finds nothing more to remove.
    snapshotter.round().await.expect("round");
    assert_eq!(stats.removed.load(std::sync::atomic::Ordering::Relaxed), 3);
}
