//! The integration tests of `strata-compactor`, against real Kafka (`STRATA_KAFKA_BROKERS`)
//! and a local directory or the dev stack's S3 (`STRATA_S3_*`). Missing settings fail.
//! Run `source ~/.cache/strata/stack/env` first.

mod avro;
mod flush_failures;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_catalog::{
    Action, Catalog, CommitInfo, EventIdVersion, QuarantinedObject, SchemaVersion, TableId,
};
use strata_compactor::{object_path, quarantine_path};

use support::*;

/// What the fixture produced: the records, the distinct events expected, per-partition
/// end offsets and where the malformed record went.
struct Scenario {
    records: Vec<Record>,
    expected: BTreeMap<[u8; 32], (String, i32, Option<String>)>,
    ends: Vec<i64>,
    malformed: (i32, i64),
}

fn scenario(server: &str, topic: &str, n: usize, with_duplicates: bool) -> Scenario {
    let mut records = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        let id = (i % 40) as i32;
        let op = if seen.insert(id) {
            "c"
        } else if i % 13 == 0 {
            "d"
        } else {
            "u"
        };
        let record = Record {
            partition: id % 2,
            key: Some(key_doc(server, id)),
            value: Some(envelope(
                server,
                op,
                id,
                &format!("v{i}"),
                1_000 + 10 * i as u64,
            )),
        };
        records.push(record.clone());
        if with_duplicates && i % 7 == 0 {
            records.push(record.clone()); // a resend right behind
        }
        if op == "d" {
            records.push(Record {
                partition: id % 2,
                key: Some(key_doc(server, id)),
                value: None,
            });
        }
        if i == n / 2 {
            records.push(Record {
                partition: 0,
                key: Some(key_doc(server, 0)),
                value: Some(b"{\"schema\": oops".to_vec()),
            });
        }
    }
    if with_duplicates {
        // Late copies of early events (within the dedup window).
        for r in records.clone().iter().filter(|r| is_change(r)).take(5) {
            records.push(r.clone());
        }
    }
    let mut ends = vec![0_i64; 2];
    let mut malformed = (0, -1);
    let mut expected = BTreeMap::new();
    for r in &records {
        let offset = ends[r.partition as usize];
        ends[r.partition as usize] += 1;
        match &r.value {
            Some(v) if v.starts_with(b"{\"schema\": oops") => malformed = (r.partition, offset),
            Some(v) => {
                let doc: serde_json::Value = serde_json::from_slice(v).expect("fixture json");
                let p = &doc["payload"];
                let image = if p["op"] == "d" {
                    &p["before"]
                } else {
                    &p["after"]
                };
                expected.insert(
                    event_id(r, topic),
                    (
                        p["op"].as_str().unwrap_or_default().to_owned(),
                        image["id"].as_i64().unwrap_or_default() as i32,
                        image["note"].as_str().map(str::to_owned),
                    ),
                );
            }
            None => {}
        }
    }
    Scenario {
        records,
        expected,
        ends,
        malformed,
    }
}

/// The catalog's quarantine entry of a Kafka record.
fn quarantined(
    state: &strata_catalog::CatalogState,
    topic: &str,
    partition: i32,
    offset: i64,
) -> strata_catalog::QuarantineEntry {
    state
        .quarantine()
        .iter()
        .find(|q| {
            q.object
                == QuarantinedObject::KafkaRecord {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                }
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "quarantine entry for {partition}/{offset}: {:?}",
                state.quarantine()
            )
        })
}

fn check_rows(rows: &[ReadRow], expected: &BTreeMap<[u8; 32], (String, i32, Option<String>)>) {
    assert_eq!(
        rows.len(),
        expected.len(),
        "exactly the distinct events, none doubled"
    );
    assert_eq!(
        &ids(rows),
        &expected.keys().copied().collect(),
        "exactly the produced events"
    );
    for row in rows {
        let (op, id, note) = &expected[&row.event_id];
        assert_eq!(
            (&row.op, row.id, &row.note),
            (op, *id, note),
            "values of {row:?}"
        );
    }
}

async fn compact_and_check(store: Arc<dyn ObjectStore>, root: Path) {
    let server = unique("strata.it");
    let topic = format!("{server}.public.items");
    create_topic(&topic, 2).await;
    let s = scenario(&server, &topic, 300, true);
    produce(&topic, &s.records).await;
    let group = unique("g");
    let running = start(test_config(&group, &topic), Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    let stats = running.stats.snapshot();
    running.stop().await;

    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &s.expected);
    assert!(stats.duplicates_dropped >= 40, "{stats:?}");
    assert!(stats.segments_written > 2, "size rolls segments: {stats:?}");
    // Every record came in chunks from the fetch queue, none one at a time.
    assert!(stats.records_in > 0, "{stats:?}");
    assert_eq!(stats.records_unbatched, 0, "{stats:?}");

    // The malformed record: quarantined in the catalog and stored raw.
    let (partition, offset) = s.malformed;
    let entry = quarantined(&state, &topic, partition, offset);
    assert!(entry.reason.contains("not JSON"), "{}", entry.reason);
    let raw = store
        .get(&object_path(
            &root,
            &quarantine_path(&topic, partition, offset),
        ))
        .await
        .expect("raw record stored")
        .bytes()
        .await
        .expect("bytes");
    let raw: serde_json::Value = serde_json::from_slice(&raw).expect("quarantine file is JSON");
    assert_eq!(raw["value"]["utf8"], "{\"schema\": oops");
    assert_eq!(raw["offset"], offset);

    // Schema and watermark.
    let table = state.tables().next().expect("one table").clone();
    assert_eq!(table.source, server);
    assert_eq!(state.table(&table).expect("table").schemas().len(), 1);
    assert!(state.watermark(&table).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacts_dedups_and_quarantines_on_a_local_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    compact_and_check(store, Path::from("warehouse")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacts_dedups_and_quarantines_on_s3() {
    let store = s3_store();
    compact_and_check(
        store,
        Path::from(format!("compactor-it/{}", uuid::Uuid::new_v4())),
    )
    .await;
}

/// A local-directory store (its directory, the store, the catalog root) and a fresh
/// two-partition topic holding a scenario of `n` changes (no duplicates).
async fn local_topic(
    n: usize,
) -> (
    tempfile::TempDir,
    Arc<dyn ObjectStore>,
    Path,
    String,
    Scenario,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let server = unique("strata.it");
    let topic = format!("{server}.public.items");
    create_topic(&topic, 2).await;
    let s = scenario(&server, &topic, n, false);
    produce(&topic, &s.records).await;
    (dir, store, Path::from("warehouse"), topic, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_loses_nor_doubles() {
    let (_dir, store, root, topic, s) = local_topic(2_000).await;
    let group = unique("g");

    // First run: flushes by size only; stopped after a few commits, mid-stream.
    let mut config = test_config(&group, &topic);
    config.flush_interval = Duration::from_secs(3600);
    config.max_segment_bytes = 16 * 1024;
    let first = start(config.clone(), Arc::clone(&store), &root).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.stats.commits.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "first run made no commits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_stats = first.stats.snapshot();
    first.stop().await;
    let total: i64 = s.ends.iter().sum();
    let midway =
        strata_catalog::Catalog::open(Arc::clone(&store), root.clone(), Default::default())
            .await
            .expect("open");
    let state = midway.state();
    let committed: i64 = (0..2)
        .filter_map(|p| state.next_offset(&group, &topic, p))
        .sum();
    assert!(
        committed > 0 && committed < total,
        "stopped midway: {committed} of {total} ({first_stats:?})"
    );

    // Second run picks up from the catalog's offsets and finishes (time flush on).
    config.flush_interval = Duration::from_millis(300);
    let second = start(config, Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    second.stop().await;

    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &s.expected);
    let commits = state.version().get();
    assert!(
        commits >= 3,
        "several commits across the two runs: {commits}"
    );
}

/// Commits `topic`'s table's first schema as a strata before event id v2 did (no version in
/// it: v1), as decoded from the scenario's first change; returns the table.
async fn commit_v1_schema(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    topic: &str,
    s: &Scenario,
) -> TableId {
    let first = s.records.iter().find(|r| is_change(r)).expect("a change");
    let mut schema = (*decode(first, topic).schema).clone();
    assert_eq!(schema.event_id_version, EventIdVersion::CURRENT);
    schema.event_id_version = EventIdVersion::V1;
    let json = schema.to_catalog_json();
    assert!(
        json.get("event_id_version").is_none(),
        "v1 is written as an older strata wrote it: {json}"
    );
    let catalog = Catalog::open(Arc::clone(store), root.clone(), Default::default())
        .await
        .expect("open");
    catalog
        .commit(
            vec![Action::SetSchema(SchemaVersion {
                table: schema.table.clone(),
                schema_id: 1,
                effective_from_ts: 0,
                schema: json,
            })],
            CommitInfo::new("strata-it", "a table of an older strata"),
        )
        .await
        .expect("commit the v1 schema");
    schema.table
}

/// A record holding a change envelope (not a tombstone, not the malformed record).
fn is_change(r: &Record) -> bool {
    r.value
        .as_ref()
        .is_some_and(|v| v.starts_with(b"{\"schema\":{"))
}

/// The scenario's expected events under their v1 ids.
fn expected_v1(s: &Scenario, topic: &str) -> BTreeMap<[u8; 32], (String, i32, Option<String>)> {
    let mut v1_of = BTreeMap::new();
    for r in s.records.iter().filter(|r| is_change(r)) {
        let e = decode(r, topic);
        v1_of.insert(
            e.event.event_id(EventIdVersion::CURRENT),
            e.event.event_id(EventIdVersion::V1),
        );
    }
    s.expected
        .iter()
        .map(|(id, row)| (v1_of[id], row.clone()))
        .collect()
}

/// A table an older strata started (its schema in the catalog has no event id version: v1)
/// keeps v1 ids: the compactor hashes its events as the segments already there were hashed,
/// so that queries still drop a repeated id across segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_started_with_v1_event_ids_keeps_them() {
    let (_dir, store, root, topic, s) = local_topic(300).await;
    let table = commit_v1_schema(&store, &root, &topic, &s).await;
    let group = unique("g");
    let running = start(test_config(&group, &topic), Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    running.stop().await;

    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &expected_v1(&s, &topic));
    // No second schema: the one there, v1, is the rows'.
    let schemas = state.table(&table).expect("table").schemas();
    assert_eq!(schemas.len(), 1, "{schemas:?}");
}

/// Rows hashed for a new table (v2 ids) whose first schema an older strata commits before
/// they are flushed (v1): the compactor decodes them again with v1 ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_hashed_before_an_older_strata_fixed_the_table_as_v1_are_hashed_again() {
    let (_dir, store, root, topic, s) = local_topic(300).await;
    let group = unique("g");
    let mut config = test_config(&group, &topic);
    config.max_segment_bytes = 64 * 1024 * 1024;
    config.caught_up_flush_bytes = 64 * 1024 * 1024;
    config.flush_interval = Duration::from_secs(6);
    let running = start(config, Arc::clone(&store), &root).await;
    let total: i64 = s.ends.iter().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.stats.records_in.load(Ordering::Relaxed) < total as u64 {
        assert!(
            Instant::now() < deadline,
            "the compactor did not read the topic"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let decoded = running.stats.snapshot();
    let table = commit_v1_schema(&store, &root, &topic, &s).await;
    assert_eq!(
        (
            decoded.commits,
            running.stats.commits.load(Ordering::Relaxed)
        ),
        (0, 0),
        "the rows were to be decoded, not flushed, before the v1 schema came"
    );
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    let stats = running.stats.snapshot();
    running.stop().await;

    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &expected_v1(&s, &topic));
    let schemas = state.table(&table).expect("table").schemas();
    assert_eq!(schemas.len(), 1, "{schemas:?}");
    assert!(
        stats.records_in > total as u64,
        "the records were read again: {stats:?}"
    );
}

/// A compactor that has read everything there is flushes a batch of `caught_up_flush_bytes`
/// at once instead of waiting for `flush_interval`; a smaller batch waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_compactor_flushes_without_waiting_for_its_deadline() {
    let (_dir, store, root, topic, s) = local_topic(500).await;
    let group = unique("g");
    let mut config = test_config(&group, &topic);
    config.flush_interval = Duration::from_secs(3600);
    config.max_segment_bytes = 64 * 1024 * 1024;

    // Everything read, but the batch is under the bound: nothing is committed.
    config.caught_up_flush_bytes = 64 * 1024 * 1024;
    let waiting = start(config.clone(), Arc::clone(&store), &root).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting.stats.records_in.load(Ordering::Relaxed) < 500 {
        assert!(Instant::now() < deadline, "the compactor read nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = waiting.stats.snapshot();
    waiting.stop().await;
    assert_eq!(
        stats.commits, 0,
        "a small batch waits for its deadline: {stats:?}"
    );

    // Over the bound: committed without waiting for the hour-long deadline.
    config.caught_up_flush_bytes = 1;
    let started = Instant::now();
    let flushing = start(config, Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    flushing.stop().await;
    assert!(started.elapsed() < Duration::from_secs(60));
    check_rows(&read_segments(&store, &root, &state).await, &s.expected);
}

/// What is left of a backlog after its last full segment is committed as soon as the
/// compactor has read it, however small and however long `flush_interval`: those records are
/// late already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_backlog_is_flushed_once_read() {
    let (_dir, store, root, topic, s) = local_topic(2_000).await;
    let group = unique("g");
    let mut config = test_config(&group, &topic);
    // Segments of 64 KiB: the backlog flushes for size a few times, then leaves a tail.
    config.max_segment_bytes = 64 * 1024;
    config.flush_interval = Duration::from_secs(3600);
    config.caught_up_flush_bytes = 64 * 1024 * 1024;
    let running = start(config, Arc::clone(&store), &root).await;
    // Panics if the offsets are not all committed within 90 s.
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    let stats = running.stats.snapshot();
    running.stop().await;
    assert!(
        stats.commits >= 2,
        "flushes for size, then the tail: {stats:?}"
    );
    check_rows(&read_segments(&store, &root, &state).await, &s.expected);
}

/// A copy of an event committed before a restart (a capture that resent its tail, a replica
/// that reported late) is dropped by the restarted compactor too: on taking a partition it
/// re-reads the records before the catalog's offset to remember their ids.
#[tokio::test]
async fn a_copy_resent_after_a_restart_is_dropped() {
    let (_dir, store, root, topic, s) = local_topic(200).await;
    let group = unique("g");
    let config = test_config(&group, &topic);

    let first = start(config.clone(), Arc::clone(&store), &root).await;
    wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    first.stop().await;

    // Copies of 20 committed changes, produced after the first compactor stopped.
    let copies: Vec<Record> = s
        .records
        .iter()
        .filter(|r| {
            r.value
                .as_ref()
                .is_some_and(|v| v.starts_with(b"{\"schema\":{"))
        })
        .step_by(7)
        .take(20)
        .cloned()
        .collect();
    assert_eq!(copies.len(), 20);
    produce(&topic, &copies).await;
    let mut ends = s.ends.clone();
    for copy in &copies {
        ends[copy.partition as usize] += 1;
    }

    let second = start(config, Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &ends).await;
    let stats = second.stats.snapshot();
    second.stop().await;
    assert_eq!(stats.duplicates_dropped, 20, "{stats:?}");
    let committed: i64 = s.ends.iter().sum();
    assert_eq!(
        stats.records_replayed,
        u64::try_from(committed).unwrap(),
        "every committed record re-read once for its id"
    );
    assert_eq!(
        stats.records_in, 20,
        "only the new records count: {stats:?}"
    );
    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &s.expected);
}
