//! A flush whose segment writes fail is dropped and replayed from the catalog's offsets: the
//! compactor keeps running, and once the store works again every event is committed exactly
//! once and no segment file is left that the catalog does not name.
//!
//! The fault is injected around a real store ([`FlakyStore`] over a `LocalFileSystem`): the
//! first few segment `put`s fail, everything else (catalog, quarantine) goes through.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt as _;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use strata_compactor::object_path;

use super::support::*;
use super::{check_rows, scenario};

/// Segment `put`s refused before the store works again.
const FAILURES: usize = 3;

/// Fails `put_opts` of segment files (paths with `/changes/`) while `failures_left` is above
/// zero, one failure per call, before anything reaches `inner`; forwards everything else.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    failures_left: AtomicUsize,
    /// Segment `put`s refused so far.
    refused: AtomicUsize,
}

impl FlakyStore {
    fn new(inner: Arc<dyn ObjectStore>, failures: usize) -> Self {
        Self {
            inner,
            failures_left: AtomicUsize::new(failures),
            refused: AtomicUsize::new(0),
        }
    }

    /// Takes one failure if any are left.
    fn take_failure(&self) -> bool {
        self.failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().contains("/changes/") && self.take_failure() {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: format!("injected failure writing {location}").into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_segment_writes_are_replayed_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let flaky = Arc::new(FlakyStore::new(Arc::clone(&local), FAILURES));
    let store: Arc<dyn ObjectStore> = Arc::clone(&flaky) as Arc<dyn ObjectStore>;
    let root = Path::from("warehouse");
    let server = unique("strata.it");
    let topic = format!("{server}.public.items");
    create_topic(&topic, 2).await;
    let s = scenario(&server, &topic, 300, true);
    let group = unique("g");

    // The first half is there from the start: its first flushes fail and are replayed.
    let (early, late) = s.records.split_at(s.records.len() / 2);
    produce(&topic, early).await;
    let mut running = start(test_config(&group, &topic), Arc::clone(&store), &root).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while flaky.failures_left.load(Ordering::SeqCst) > 0 {
        if running.handle.is_finished() {
            panic!(
                "the compactor stopped during the store failures: {:?}",
                (&mut running.handle).await
            );
        }
        assert!(
            Instant::now() < deadline,
            "the faults did not happen in time: {} of {FAILURES} injected ({:?})",
            flaky.refused.load(Ordering::SeqCst),
            running.stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_faults = running.stats.snapshot();

    // The second half is produced after the last fault: only a later commit can hold it.
    produce(&topic, late).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    let rows = read_segments(&store, &root, &state).await;
    // The loop counts a commit when it takes the flush's outcome, just after the catalog
    // shows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.stats.snapshot().rows_written < rows.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = running.stats.snapshot();
    assert!(
        !running.handle.is_finished(),
        "the compactor kept running: {:?}",
        (&mut running.handle).await
    );
    running.stop().await;

    // Every event exactly once, none lost, none doubled.
    check_rows(&rows, &s.expected);

    // The faults happened, and the compactor committed after them.
    assert_eq!(flaky.failures_left.load(Ordering::SeqCst), 0);
    assert_eq!(flaky.refused.load(Ordering::SeqCst), FAILURES);
    assert!(
        stats.commits > after_faults.commits,
        "commits after the faults: {after_faults:?} then {stats:?}"
    );
    assert_eq!(stats.conflicts, 0, "{stats:?}");
    let live: BTreeSet<String> = state
        .tables()
        .flat_map(|table| state.segments(table))
        .map(|entry| object_path(&root, &entry.segment.path).to_string())
        .collect();
    assert_eq!(
        (stats.segments_written, stats.rows_written),
        (live.len() as u64, rows.len() as u64),
        "the stats count what the catalog holds: {stats:?}"
    );

    // No segment file the catalog does not name.
    let files: BTreeSet<String> = local
        .list(Some(&root))
        .map_ok(|meta| meta.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .filter(|path| path.contains("/changes/") && path.ends_with(".parquet"))
        .collect();
    assert_eq!(
        files.difference(&live).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "orphaned segment files"
    );
    assert_eq!(files, live, "every live segment is stored");
}
