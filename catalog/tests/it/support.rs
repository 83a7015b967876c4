//! Shared fixtures: a counting / fault-injecting `ObjectStore` wrapper, stores for each
//! backend (temp dir, memory, the real S3 of `dev/stack`), and small action builders.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use strata_catalog::{Action, CatalogConfig, OffsetRange, Segment, TableId, Watermark};

pub(crate) const GROUP: &str = "strata-compactor";
pub(crate) const TOPIC: &str = "pg-main.public.orders";

pub(crate) fn orders() -> TableId {
    TableId::new("pg-main", "public", "orders")
}

pub(crate) fn segment(path: &str, min_ts: i64, max_ts: i64) -> Action {
    Action::AddSegment(Segment {
        table: orders(),
        path: path.to_owned(),
        rows: 1,
        bytes: 1,
        min_key: "k0".into(),
        max_key: "k9".into(),
        min_commit_ts: min_ts,
        max_commit_ts: max_ts,
        min_position: "0/0".into(),
        max_position: "0/1".into(),
        content_version: None,
    })
}

pub(crate) fn consume(partition: i32, from: i64, to: i64) -> Action {
    Action::ConsumeOffsets(OffsetRange {
        group: GROUP.into(),
        topic: TOPIC.into(),
        partition,
        from_offset: from,
        to_offset: to,
    })
}

pub(crate) fn watermark(ts: i64) -> Action {
    Action::SetWatermark(Watermark {
        table: orders(),
        ts,
    })
}

/// Small backoff so contended tests stay quick.
pub(crate) fn fast_config(checkpoint_interval: u64) -> CatalogConfig {
    CatalogConfig {
        checkpoint_interval,
        retry_backoff_min_ms: 1,
        retry_backoff_max_ms: 20,
        ..CatalogConfig::default()
    }
}

/// A fresh root per test run, so runs never see each other's catalogs.
pub(crate) fn fresh_root(test: &str) -> Path {
    Path::from(format!("catalog-it/{test}/{}", uuid::Uuid::new_v4()))
}

/// The S3 server of `dev/stack`, from `STRATA_S3_*`. Missing settings fail the test: a
/// skipped integration test would pass CI without testing anything.
pub(crate) fn s3_store() -> Arc<dyn ObjectStore> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set. This test needs the S3 server of the dev stack: run \
                 `eval \"$(dev/stack up)\"` in this shell first"
            )
        })
    };
    let store = AmazonS3Builder::new()
        .with_endpoint(var("STRATA_S3_ENDPOINT"))
        .with_bucket_name(var("STRATA_S3_BUCKET"))
        .with_access_key_id(var("STRATA_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(var("STRATA_S3_SECRET_ACCESS_KEY"))
        .with_region(var("STRATA_S3_REGION"))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("S3 store from STRATA_S3_* settings");
    Arc::new(store)
}

/// Delegates to `inner`, counting reads and listings, and can inject two faults.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicUsize,
    lists: AtomicUsize,
    puts: AtomicUsize,
    commit_puts: AtomicUsize,
    /// The next `Create` put succeeds but reports `AlreadyExists` (a reply lost, then
    /// retried by the client).
    pub(crate) lose_next_create_reply: AtomicBool,
    /// Every `Create` put of a commit fails with `AlreadyExists` without writing.
    pub(crate) refuse_commits: AtomicBool,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            commit_puts: AtomicUsize::new(0),
            lose_next_create_reply: AtomicBool::new(false),
            refuse_commits: AtomicBool::new(false),
        })
    }

    /// (gets, lists) since the last reset.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.gets.load(Ordering::SeqCst),
            self.lists.load(Ordering::SeqCst),
        )
    }

    pub(crate) fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// `Create` puts of commit objects: successful commits plus lost races.
    pub(crate) fn commit_puts(&self) -> usize {
        self.commit_puts.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.gets.store(0, Ordering::SeqCst);
        self.lists.store(0, Ordering::SeqCst);
        self.puts.store(0, Ordering::SeqCst);
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

fn already_exists(location: &Path) -> object_store::Error {
    object_store::Error::AlreadyExists {
        path: location.to_string(),
        source: "injected by CountingStore".into(),
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let create = opts.mode == PutMode::Create;
        let commit = create && location.as_ref().contains("_catalog/log/");
        if commit {
            self.commit_puts.fetch_add(1, Ordering::SeqCst);
        }
        if commit && self.refuse_commits.load(Ordering::SeqCst) {
            return Err(already_exists(location));
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if create && self.lose_next_create_reply.swap(false, Ordering::SeqCst) {
            return Err(already_exists(location));
        }
        Ok(result)
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
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
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

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
