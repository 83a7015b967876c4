//! Opening a long catalog reads the latest checkpoint and a short tail, not the whole log.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use strata_catalog::{Catalog, CatalogVersion, CommitInfo};

use crate::support::{CountingStore, GROUP, TOPIC, consume, fast_config, segment, watermark};

const INTERVAL: u64 = 10;

async fn commit_one(catalog: &Catalog, i: u64) {
    let partition = (i % 4) as i32;
    let from = catalog
        .state()
        .next_offset(GROUP, TOPIC, partition)
        .unwrap_or(0);
    let mut actions = vec![consume(partition, from, from + 5), watermark(i as i64)];
    if i.is_multiple_of(100) {
        let path = format!("pg-main/public/orders/changes/{i:08}.parquet");
        actions.push(segment(&path, i as i64, i as i64 + 1));
    }
    catalog
        .commit(actions, CommitInfo::new("bulk-writer", "compact"))
        .await
        .expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_10k_commit_catalog_reads_a_handful_of_objects() {
    const COMMITS: u64 = 10_007;
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let root = Path::from("warehouse");
    let writer = Catalog::open(Arc::clone(&memory), root.clone(), fast_config(INTERVAL))
        .await
        .expect("open writer");
    for i in 0..COMMITS {
        commit_one(&writer, i).await;
    }
    assert_eq!(writer.version(), CatalogVersion(COMMITS));

    let counting = CountingStore::new(Arc::clone(&memory));
    let reader = Catalog::open(counting.clone(), root, fast_config(INTERVAL))
        .await
        .expect("open reader");
    let (gets, lists) = counting.counts();
    println!("open of {COMMITS} commits: {gets} GETs, {lists} LISTs");
    assert_eq!(reader.version(), CatalogVersion(COMMITS));
    assert_eq!(*reader.state(), *writer.state());
    // hint + checkpoint + 7 tail commits; two listings (checkpoints after the hint, log after
    // the checkpoint).
    assert!(gets <= INTERVAL as usize + 5, "{gets} GETs");
    assert_eq!(gets, 2 + 7);
    assert!(lists <= 3, "{lists} LISTs");

    // Refresh reads only what is new...
    counting.reset();
    for i in COMMITS..COMMITS + 3 {
        commit_one(&writer, i).await;
    }
    assert_eq!(
        reader.refresh().await.expect("refresh"),
        CatalogVersion(COMMITS + 3)
    );
    assert_eq!(counting.counts(), (3, 1));

    // ...and far behind, starts from the newest checkpoint instead of every commit.
    counting.reset();
    for i in COMMITS + 3..COMMITS + 3 + 45 {
        commit_one(&writer, i).await;
    }
    let version = reader.refresh().await.expect("refresh");
    assert_eq!(version, writer.version());
    let (gets, lists) = counting.counts();
    println!("refresh over 45 commits: {gets} GETs, {lists} LISTs");
    assert!(gets <= INTERVAL as usize + 1, "{gets} GETs");
    assert_eq!(*reader.state(), *writer.state());
}
