//! Several writers (each its own `Catalog`, as separate compactor processes would be)
//! commit segments and Kafka offsets of overlapping partitions at the same time. Whatever
//! the interleaving, the log must hold every successful commit exactly once, no refused
//! commit, contiguous versions, and per partition one unbroken chain of offset ranges.
//!
//! `check_concurrent_writers` is the conformance check; it runs against a temp directory
//! here and against the real S3 server in `s3.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use strata_catalog::{
    Action, Catalog, CatalogConfig, CatalogVersion, CommitInfo, ConflictKind, Error,
};
use tokio::sync::Barrier;

use crate::support::{CountingStore, GROUP, TOPIC, consume, fast_config, fresh_root, segment};

/// One commit a writer attempts.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Partition whose records it consumes.
    pub(crate) partition: i32,
    /// Records consumed; 0 = a segment-only commit (never conflicts, must rebase).
    pub(crate) records: i64,
    /// Segments added (at least one if `records` is 0).
    pub(crate) segments: usize,
    /// Refresh before building the commit (otherwise build on a possibly stale state).
    pub(crate) refresh_first: bool,
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    (
        0..3i32,
        prop_oneof![1 => Just(0i64), 3 => 1..50i64],
        0..3usize,
        any::<bool>(),
    )
        .prop_map(|(partition, records, segments, refresh_first)| Step {
            partition,
            records,
            segments,
            refresh_first,
        })
}

/// 2 to 4 writers, each with a few steps.
pub(crate) fn plan() -> impl Strategy<Value = Vec<Vec<Step>>> {
    prop::collection::vec(prop::collection::vec(step(), 1..8), 2..=4)
}

#[derive(Debug)]
enum Outcome {
    Committed(CatalogVersion),
    Conflict,
    GaveUp,
}

#[derive(Debug)]
struct Attempt {
    marker: String,
    segments: Vec<String>,
    outcome: Outcome,
}

async fn run_writer(
    store: Arc<dyn ObjectStore>,
    root: Path,
    config: CatalogConfig,
    start: Arc<Barrier>,
    writer: usize,
    steps: Vec<Step>,
) -> Vec<Attempt> {
    let catalog = Catalog::open(store, root, config).await.expect("open");
    start.wait().await;
    let mut attempts = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        if step.refresh_first {
            catalog.refresh().await.expect("refresh");
        }
        let marker = format!("w{writer}-s{i}");
        let count = if step.records == 0 {
            step.segments.max(1)
        } else {
            step.segments
        };
        let segments: Vec<String> = (0..count)
            .map(|k| format!("pg-main/public/orders/changes/{marker}-{k}.parquet"))
            .collect();
        let mut actions: Vec<Action> = segments.iter().map(|p| segment(p, 0, 10)).collect();
        if step.records > 0 {
            let from = catalog
                .state()
                .next_offset(GROUP, TOPIC, step.partition)
                .unwrap_or(0);
            actions.push(consume(step.partition, from, from + step.records));
        }
        let info = CommitInfo::new(format!("writer-{writer}"), "compact")
            .with_app_metadata(serde_json::json!({ "marker": marker }));
        let outcome = match catalog.commit(actions, info).await {
            Ok(version) => Outcome::Committed(version),
            Err(Error::Conflict { conflict, .. }) => {
                assert!(
                    matches!(conflict, ConflictKind::OffsetMismatch { .. }),
                    "only offsets can conflict here: {conflict}"
                );
                catalog.refresh().await.expect("refresh after conflict");
                Outcome::Conflict
            }
            Err(Error::VersionConflict { .. }) => {
                catalog.refresh().await.expect("refresh after giving up");
                Outcome::GaveUp
            }
            Err(e) => panic!("writer {writer} step {i}: unexpected error {e}"),
        };
        attempts.push(Attempt {
            marker,
            segments,
            outcome,
        });
    }
    attempts
}

/// Runs the writers of `plan` concurrently under `root` and checks the log they leave.
pub(crate) async fn check_concurrent_writers(
    store: Arc<dyn ObjectStore>,
    root: Path,
    plan: Vec<Vec<Step>>,
) {
    let config = fast_config(3);
    let counting = CountingStore::new(Arc::clone(&store));
    let start = Arc::new(Barrier::new(plan.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (writer, steps) in plan.into_iter().enumerate() {
        tasks.spawn(run_writer(
            counting.clone(),
            root.clone(),
            config.clone(),
            Arc::clone(&start),
            writer,
            steps,
        ));
    }
    let mut attempts = Vec::new();
    while let Some(done) = tasks.join_next().await {
        attempts.extend(done.expect("writer task"));
    }

    let conflicts = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Conflict))
        .count();
    let gave_up = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::GaveUp))
        .count();
    let committed_count = attempts.len() - conflicts - gave_up;
    println!(
        "{} commits tried: {committed_count} committed, {conflicts} conflicts, {gave_up} \
         gave up; {} lost races for a version",
        attempts.len(),
        counting.commit_puts() - committed_count
    );

    // Reopen from scratch.
    let catalog = Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
        .await
        .expect("reopen");
    let state = catalog.state();
    let committed: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Committed(_)))
        .collect();
    assert_eq!(
        state.version().get(),
        committed.len() as u64,
        "one version per successful commit"
    );

    // Versions 1..=N are all there (contiguous), each with a distinct marker.
    let mut marker_at: HashMap<String, CatalogVersion> = HashMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for v in 1..=state.version().get() {
        let version = CatalogVersion(v);
        let commit = catalog
            .read_commit(version)
            .await
            .expect("every version readable");
        assert_eq!(commit.version, version);
        let marker = commit.info.app_metadata.as_ref().expect("marker")["marker"]
            .as_str()
            .expect("marker string")
            .to_owned();
        assert!(
            marker_at.insert(marker.clone(), version).is_none(),
            "{marker} committed twice"
        );
        // Per partition, ranges chain from 0 without gap or overlap.
        for action in &commit.actions {
            if let Action::ConsumeOffsets(o) = action {
                let expected = next_offset.get(&o.partition).copied().unwrap_or(0);
                assert_eq!(
                    o.from_offset, expected,
                    "partition {} at version {v}: range [{}, {}) does not chain",
                    o.partition, o.from_offset, o.to_offset
                );
                next_offset.insert(o.partition, o.to_offset);
            }
        }
    }
    assert!(
        catalog.read_commit(state.version().next()).await.is_err(),
        "nothing after the last version"
    );

    // Successful commits present exactly once, at the version they were told; refused ones absent.
    for attempt in &attempts {
        match attempt.outcome {
            Outcome::Committed(v) => assert_eq!(
                marker_at.get(&attempt.marker),
                Some(&v),
                "{} reported version {v}",
                attempt.marker
            ),
            Outcome::Conflict | Outcome::GaveUp => assert!(
                !marker_at.contains_key(&attempt.marker),
                "{} was refused but is in the log",
                attempt.marker
            ),
        }
    }

    // The state agrees with the log.
    for (partition, next) in &next_offset {
        assert_eq!(state.next_offset(GROUP, TOPIC, *partition), Some(*next));
    }
    let live: Vec<&str> = state
        .segments(&crate::support::orders())
        .iter()
        .map(|e| e.segment.path.as_str())
        .collect();
    let expected: HashSet<&str> = committed
        .iter()
        .flat_map(|a| a.segments.iter().map(String::as_str))
        .collect();
    assert_eq!(live.len(), expected.len(), "no segment twice");
    assert_eq!(live.into_iter().collect::<HashSet<_>>(), expected);

    // The checkpoints the racing writers left fold to the same state as the bare log.
    let catalog_dir = root.clone().join("_catalog");
    let checkpoints: Vec<Path> = store
        .list(Some(&catalog_dir.clone().join("checkpoints")))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list checkpoints");
    let expected_checkpoints = state.version().get() / 3;
    assert_eq!(checkpoints.len() as u64, expected_checkpoints);
    for path in checkpoints {
        store.delete(&path).await.expect("delete checkpoint");
    }
    if expected_checkpoints > 0 {
        store
            .delete(&catalog_dir.join("_last_checkpoint"))
            .await
            .expect("delete hint");
    }
    let replayed = Catalog::open(store, root, CatalogConfig::default())
        .await
        .expect("replay without checkpoints");
    assert_eq!(*replayed.state(), *state);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_writers_on_local_fs(plan in plan()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local fs"),
        );
        runtime().block_on(check_concurrent_writers(store, fresh_root("concurrency"), plan));
    }
}

/// The property test on any store, `cases` random plans, each under a fresh root that is
/// deleted again when the case passes.
pub(crate) fn run_on(store: Arc<dyn ObjectStore>, cases: u32) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&plan(), |plan| {
            let root = fresh_root("concurrency");
            runtime().block_on(async {
                check_concurrent_writers(Arc::clone(&store), root.clone(), plan).await;
                // Passed: leave the shared bucket as it was.
                let objects = store.list(Some(&root)).map_ok(|m| m.location).boxed();
                store
                    .delete_stream(objects)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("clean up");
            });
            Ok(())
        })
        .expect("concurrent writers");
}
