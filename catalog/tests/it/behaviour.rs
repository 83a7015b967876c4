//! Commit behaviour between a few writers, step by step.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use strata_catalog::{Catalog, CatalogConfig, CatalogVersion, CommitInfo, ConflictKind, Error};

use crate::support::{CountingStore, GROUP, TOPIC, consume, fast_config, orders, segment};

fn info() -> CommitInfo {
    CommitInfo::new("test", "compact")
}

async fn open(store: &Arc<dyn ObjectStore>, config: CatalogConfig) -> Catalog {
    Catalog::open(Arc::clone(store), Path::from("root"), config)
        .await
        .expect("open")
}

#[tokio::test]
async fn stale_writer_rebases_segments_but_not_offsets() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = open(&store, fast_config(10)).await;
    let b = open(&store, fast_config(10)).await;

    assert_eq!(
        a.commit(vec![segment("a-1", 0, 1), consume(0, 0, 5)], info())
            .await
            .expect("a"),
        CatalogVersion(1)
    );
    // B has not seen version 1: its segment-only commit rebases onto it.
    assert_eq!(
        b.commit(vec![segment("b-1", 0, 1)], info())
            .await
            .expect("b"),
        CatalogVersion(2)
    );
    assert_eq!(b.state().segments(&orders()).len(), 2);
    assert_eq!(b.state().next_offset(GROUP, TOPIC, 0), Some(5));

    // B now tries to consume partition 0 from where it started: refused, names the partition.
    a.refresh().await.expect("refresh");
    let err = b
        .commit(vec![segment("b-2", 0, 1), consume(0, 0, 7)], info())
        .await
        .expect_err("double consumption");
    match err {
        Error::Conflict {
            version,
            conflict:
                ConflictKind::OffsetMismatch {
                    partition,
                    expected_from,
                    from_offset,
                    ..
                },
        } => {
            assert_eq!(
                (version, partition, expected_from, from_offset),
                (CatalogVersion(2), 0, 5, 0)
            );
        }
        other => panic!("expected an offset conflict, got {other:?}"),
    }
    // Nothing of the refused commit landed.
    let fresh = open(&store, CatalogConfig::default()).await;
    assert_eq!(fresh.version(), CatalogVersion(2));
    assert!(
        fresh
            .state()
            .segments(&orders())
            .iter()
            .all(|e| e.segment.path != "b-2")
    );

    // Replaying from the catalog's offset works.
    assert_eq!(
        b.commit(vec![segment("b-2", 0, 1), consume(0, 5, 7)], info())
            .await
            .expect("replay"),
        CatalogVersion(3)
    );
}

#[tokio::test]
async fn a_conflict_is_judged_against_the_latest_state_not_a_stale_one() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = open(&store, fast_config(10)).await;
    a.commit(vec![consume(0, 0, 5)], info()).await.expect("a");
    let b = open(&store, fast_config(10)).await;
    b.commit(vec![consume(0, 5, 8)], info()).await.expect("b");
    // A still believes the next offset is 5; the caller knows better (8). Not a conflict.
    assert_eq!(a.state().next_offset(GROUP, TOPIC, 0), Some(5));
    assert_eq!(
        a.commit(vec![consume(0, 8, 10)], info())
            .await
            .expect("a again"),
        CatalogVersion(3)
    );
    assert_eq!(a.state().next_offset(GROUP, TOPIC, 0), Some(10));
}

#[tokio::test]
async fn a_lost_reply_is_recognised_as_our_own_commit() {
    let counting = CountingStore::new(Arc::new(InMemory::new()));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let catalog = open(&store, fast_config(10)).await;
    counting
        .lose_next_create_reply
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        catalog
            .commit(vec![consume(0, 0, 3)], info())
            .await
            .expect("commit"),
        CatalogVersion(1)
    );
    let fresh = open(&store, CatalogConfig::default()).await;
    assert_eq!(
        fresh.version(),
        CatalogVersion(1),
        "committed once, not twice"
    );
    assert_eq!(fresh.state().next_offset(GROUP, TOPIC, 0), Some(3));
}

#[tokio::test]
async fn endless_contention_ends_in_version_conflict() {
    let counting = CountingStore::new(Arc::new(InMemory::new()));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let config = CatalogConfig {
        max_commit_attempts: 3,
        ..fast_config(10)
    };
    let catalog = open(&store, config).await;
    counting
        .refuse_commits
        .store(true, std::sync::atomic::Ordering::SeqCst);
    counting.reset();
    let err = catalog
        .commit(vec![consume(0, 0, 3)], info())
        .await
        .expect_err("contention");
    assert!(
        matches!(err, Error::VersionConflict { attempts: 3, version } if version == CatalogVersion(0)),
        "{err:?}"
    );
    assert_eq!(counting.puts(), 3);
}

#[tokio::test]
async fn invalid_actions_are_refused_before_any_write() {
    let counting = CountingStore::new(Arc::new(InMemory::new()));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let catalog = open(&store, CatalogConfig::default()).await;
    assert!(matches!(
        catalog.commit(vec![], info()).await,
        Err(Error::EmptyCommit)
    ));
    assert!(matches!(
        catalog.commit(vec![consume(0, 5, 4)], info()).await,
        Err(Error::InvalidAction { index: 0, .. })
    ));
    assert_eq!(counting.puts(), 0);
}

#[tokio::test]
async fn racing_checkpoint_writers_both_succeed() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = open(&store, fast_config(100)).await;
    a.commit(vec![consume(0, 0, 1)], info())
        .await
        .expect("commit");
    let b = open(&store, fast_config(100)).await;
    let (x, y) = tokio::join!(a.checkpoint(), b.checkpoint());
    assert_eq!(x.expect("a"), CatalogVersion(1));
    assert_eq!(y.expect("b"), CatalogVersion(1));
    assert_eq!(
        *open(&store, CatalogConfig::default()).await.state(),
        *a.state()
    );
}

#[tokio::test]
async fn config_is_validated_and_deserialized_strictly() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let bad = CatalogConfig {
        checkpoint_interval: 0,
        ..CatalogConfig::default()
    };
    assert!(matches!(
        Catalog::open(store, Path::from("r"), bad).await,
        Err(Error::InvalidConfig {
            field: "checkpoint_interval",
            ..
        })
    ));
    let parsed: CatalogConfig =
        serde_json::from_str(r#"{"checkpoint_interval": 50}"#).expect("partial config");
    assert_eq!(parsed.checkpoint_interval, 50);
    assert_eq!(
        parsed.max_commit_attempts,
        CatalogConfig::default().max_commit_attempts
    );
    assert!(serde_json::from_str::<CatalogConfig>(r#"{"checkpoint_intervall": 5}"#).is_err());
}

#[tokio::test]
async fn a_snapshot_removal_is_format_2_and_survives_reopening_and_checkpoints() {
    use strata_catalog::{Action, Snapshot, SnapshotRemoval};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // A checkpoint every 2 commits: the removal (commit 2) is folded into one.
    let catalog = open(&store, fast_config(2)).await;
    let snapshot = |id: &str, as_of_ts: i64| Snapshot {
        table: orders(),
        snapshot_id: id.into(),
        as_of_ts,
        paths: vec![format!("snapshots/1/{id}-0.parquet")],
        rows: 5,
        bytes: 50,
        built_from_version: CatalogVersion(0),
    };
    let (old, new) = (snapshot("old", 100), snapshot("new", 200));
    catalog
        .commit(
            vec![
                Action::AddSnapshot(old.clone()),
                Action::AddSnapshot(new.clone()),
            ],
            CommitInfo::new("w", "snapshot"),
        )
        .await
        .unwrap();
    let removal = Action::RemoveSnapshot(SnapshotRemoval {
        table: orders(),
        snapshot_id: old.snapshot_id.clone(),
        paths: old.paths.clone(),
    });
    catalog
        .commit(
            vec![removal.clone()],
            CommitInfo::new("w", "thin snapshots"),
        )
        .await
        .unwrap();
    let first = catalog.read_commit(CatalogVersion(1)).await.unwrap();
    let second = catalog.read_commit(CatalogVersion(2)).await.unwrap();
    assert_eq!((first.format, second.format), (1, 2));
    assert_eq!(second.actions, vec![removal.clone()]);

    let reopened = open(&store, fast_config(2)).await;
    let state = reopened.state();
    assert_eq!(state.table(&orders()).unwrap().snapshots(), [new]);
    assert_eq!(state.latest_snapshot_at_or_before(&orders(), 150), None);
    // Removing it again, from a writer that has not seen the removal: a conflict naming it.
    match catalog
        .commit(vec![removal], CommitInfo::new("w2", "thin snapshots"))
        .await
    {
        Err(e @ Error::Conflict { .. }) => {
            assert!(e.to_string().contains("no live snapshot old"), "{e}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}
