//! Against the real S3-compatible server of `dev/stack` (`STRATA_S3_*`). These tests fail,
//! never skip, when the settings are missing.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::concurrency;
use crate::support::{fresh_root, s3_store};

#[tokio::test]
async fn s3_create_refuses_an_existing_object() {
    let store = s3_store();
    let root = fresh_root("s3-create");
    let path = root.clone().join("probe.json");
    store
        .put_opts(&path, PutPayload::from("first"), PutMode::Create.into())
        .await
        .expect("first create");
    let second = store
        .put_opts(&path, PutPayload::from("second"), PutMode::Create.into())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "second Create must be AlreadyExists (If-None-Match: *), got {second:?}"
    );
    let body = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(body.as_ref(), b"first", "the loser must not overwrite");

    // Listing after an offset is exclusive and sees only later keys.
    for name in ["00000000000000000001.json", "00000000000000000002.json"] {
        store
            .put(&root.clone().join(name), PutPayload::from("x"))
            .await
            .expect("put");
    }
    let after: Vec<Path> = store
        .list_with_offset(Some(&root), &root.clone().join("00000000000000000001.json"))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    let names: Vec<&str> = after.iter().filter_map(|p| p.filename()).collect();
    assert!(names.contains(&"00000000000000000002.json"), "{names:?}");
    assert!(!names.contains(&"00000000000000000001.json"), "{names:?}");

    let objects = store.list(Some(&root)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(objects)
        .try_collect::<Vec<_>>()
        .await
        .expect("clean up");
}

#[test]
fn s3_concurrent_writers() {
    concurrency::run_on(s3_store(), 4);
}
