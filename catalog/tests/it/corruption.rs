//! Damaged logs: a corrupt or misnamed commit and a gap are clear errors naming the object;
//! damaged checkpoints and hints only cost a slower open.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_catalog::{Catalog, CatalogConfig, CatalogVersion, CommitInfo, Error};

use crate::support::{consume, fast_config};

async fn catalog_with(commits: i64, interval: u64) -> (Arc<dyn ObjectStore>, Path, Catalog) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let root = Path::from("warehouse");
    let catalog = Catalog::open(Arc::clone(&store), root.clone(), fast_config(interval))
        .await
        .expect("open");
    for i in 0..commits {
        catalog
            .commit(vec![consume(0, i, i + 1)], CommitInfo::new("w", "compact"))
            .await
            .expect("commit");
    }
    (store, root, catalog)
}

async fn put(store: &Arc<dyn ObjectStore>, path: &Path, body: impl Into<PutPayload>) {
    store.put(path, body.into()).await.expect("put");
}

#[tokio::test]
async fn unparseable_commit_is_corrupt_commit_naming_the_path() {
    let (store, root, writer) = catalog_with(3, 100).await;
    let reader = Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default())
        .await
        .expect("open");
    let path = writer.commit_path(CatalogVersion(2));
    put(&store, &path, "{ this is not json").await;

    match Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default()).await {
        Err(Error::CorruptCommit {
            path: p, version, ..
        }) => {
            assert_eq!(p, "warehouse/_catalog/log/00000000000000000002.json");
            assert_eq!(version, CatalogVersion(2));
        }
        other => panic!("expected CorruptCommit, got {other:?}"),
    }

    // A reader that already had version 3 is unaffected until it reads version 2 again.
    assert_eq!(reader.refresh().await.expect("refresh"), CatalogVersion(3));
    match reader.read_commit(CatalogVersion(2)).await {
        Err(e @ Error::CorruptCommit { .. }) => {
            assert!(e.to_string().contains("00000000000000000002.json"), "{e}");
        }
        other => panic!("expected CorruptCommit, got {other:?}"),
    }
}

#[tokio::test]
async fn commit_holding_another_version_is_corrupt() {
    let (store, root, writer) = catalog_with(3, 100).await;
    let body = store
        .get(&writer.commit_path(CatalogVersion(1)))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    put(&store, &writer.commit_path(CatalogVersion(3)), body).await;
    let err = Catalog::open(store, root, CatalogConfig::default())
        .await
        .expect_err("must not open");
    assert!(
        matches!(&err, Error::CorruptCommit { version, reason, .. }
            if *version == CatalogVersion(3) && reason.contains("holds version 1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn newer_format_is_reported_as_unsupported() {
    let (store, root, writer) = catalog_with(1, 100).await;
    put(
        &store,
        &writer.commit_path(CatalogVersion(2)),
        r#"{"format": 99, "version": 2, "whatever": []}"#,
    )
    .await;
    let err = Catalog::open(store, root, CatalogConfig::default())
        .await
        .expect_err("must not open");
    assert!(
        matches!(err, Error::UnsupportedFormat { found: 99, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_gap_in_the_log_is_missing_commit() {
    let (store, root, writer) = catalog_with(4, 100).await;
    store
        .delete(&writer.commit_path(CatalogVersion(2)))
        .await
        .expect("delete");
    match Catalog::open(store, root, CatalogConfig::default()).await {
        Err(Error::MissingCommit { path, version }) => {
            assert_eq!(version, CatalogVersion(2));
            assert!(path.ends_with("00000000000000000002.json"), "{path}");
        }
        other => panic!("expected MissingCommit, got {other:?}"),
    }
}

#[tokio::test]
async fn damaged_checkpoints_and_hints_fall_back() {
    // Checkpoints at 5 and 10; tail 11, 12.
    let (store, root, writer) = catalog_with(12, 5).await;
    let expected = writer.state();
    let open = || Catalog::open(Arc::clone(&store), root.clone(), CatalogConfig::default());

    // Newest checkpoint corrupt: falls back to the one at 5.
    put(
        &store,
        &writer.checkpoint_path(CatalogVersion(10)),
        "garbage",
    )
    .await;
    assert_eq!(*open().await.expect("open").state(), *expected);

    // Hint unreadable, or pointing past every checkpoint.
    let hint = root.clone().join("_catalog").join("_last_checkpoint");
    put(&store, &hint, "not json").await;
    assert_eq!(*open().await.expect("open").state(), *expected);
    put(&store, &hint, r#"{"version": 1000}"#).await;
    assert_eq!(*open().await.expect("open").state(), *expected);

    // Every checkpoint corrupt: replays the whole log.
    put(
        &store,
        &writer.checkpoint_path(CatalogVersion(5)),
        "garbage",
    )
    .await;
    assert_eq!(*open().await.expect("open").state(), *expected);
}
