//! A topic in strata's Avro format (`[kafka] format = "avro"`): the compactor learns the writer
//! schemas from the schema topic and stores the same rows, with the same event ids, as from
//! the JSON records; a record naming a schema the topic does not hold is quarantined, named.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use strata_catalog::avro::WriterSchema;

use super::support::*;
use super::{check_rows, quarantined, scenario};

/// `document` (a JSON converter key or value) as strata's capture writes it in Avro, and its
/// writer schema.
fn to_avro(document: &[u8]) -> (Vec<u8>, WriterSchema) {
    let document: serde_json::Value = serde_json::from_slice(document).expect("fixture json");
    let writer = WriterSchema::from_connect(document["schema"].clone()).expect("writer schema");
    let mut out = Vec::new();
    writer
        .encode(&document["payload"], &mut out)
        .expect("fits its schema");
    (out, writer)
}

/// The scenario's JSON records turned into Avro (the malformed one stays as it is), and the
/// schema topic's records of their writer schemas.
fn avro_records(records: &mut [Record]) -> Vec<Record> {
    let mut schemas = std::collections::BTreeMap::new();
    for record in records {
        let Some(value) = record
            .value
            .as_ref()
            .filter(|v| v.starts_with(b"{\"schema\":{"))
        else {
            continue;
        };
        let (value, writer) = to_avro(value);
        schemas.insert(writer.fingerprint(), writer);
        let (key, writer) = to_avro(record.key.as_deref().expect("a key"));
        schemas.insert(writer.fingerprint(), writer);
        record.key = Some(key);
        record.value = Some(value);
    }
    assert_eq!(schemas.len(), 2, "one key schema, one value schema");
    schemas
        .values()
        .map(|w| Record {
            partition: 0,
            key: Some(w.topic_key().into_bytes()),
            value: Some(w.topic_value().as_bytes().to_vec()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_are_stored_as_their_json_records_are() {
    let server = unique("strata.itavro");
    let topic = format!("{server}.public.items");
    let schema_topic = unique("_strata_schemas_it");
    create_topic(&topic, 2).await;
    create_topic(&schema_topic, 1).await;
    let mut s = scenario(&server, &topic, 200, true);

    // The same records in Avro, and one naming a schema that was never published.
    let published = avro_records(&mut s.records);
    let mut unknown = s.records[0].clone();
    let value = unknown.value.as_mut().expect("a value");
    value[2..10].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_le_bytes());
    // Twice: the second is quarantined without reading the schema topic again.
    let mut unknown_at = Vec::new();
    for _ in 0..2 {
        unknown_at.push((unknown.partition, s.ends[unknown.partition as usize]));
        s.records.push(unknown.clone());
        s.ends[unknown.partition as usize] += 1;
    }
    produce(&schema_topic, &published).await;
    produce(&topic, &s.records).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let root = Path::from("warehouse");
    let group = unique("g");
    let mut config = test_config(&group, &topic);
    config.schema_topic = schema_topic;
    let running = start(config, Arc::clone(&store), &root).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    running.stop().await;

    // The rows and ids of the JSON records (`expected` was computed from them).
    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &s.expected);

    let reason =
        |(partition, offset): (i32, i64)| quarantined(&state, &topic, partition, offset).reason;
    assert!(reason(s.malformed).contains("not JSON"));
    for at in unknown_at {
        let reason = reason(at);
        assert!(
            reason.contains(
                "Avro writer schema 0123456789abcdef is not in schema topic _strata_schemas_it"
            ),
            "{reason}"
        );
    }
}

/// A capture that starts after the compactor: the schema topic read at the compactor's start
/// is empty, so the first records' schemas are read from it when they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_published_after_the_compactor_started_are_read_when_needed() {
    let server = unique("strata.itavrolate");
    let topic = format!("{server}.public.items");
    let schema_topic = unique("_strata_schemas_it");
    create_topic(&topic, 2).await;
    create_topic(&schema_topic, 1).await;
    let mut s = scenario(&server, &topic, 120, false);
    let published = avro_records(&mut s.records);

    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let root = Path::from("warehouse");
    let group = unique("g");
    let mut config = test_config(&group, &topic);
    config.schema_topic = schema_topic.clone();
    let running = start(config, Arc::clone(&store), &root).await;
    // Long enough for the read at start to find the topic empty.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    produce(&schema_topic, &published).await;
    produce(&topic, &s.records).await;
    let state = wait_for_offsets(Arc::clone(&store), &root, &group, &topic, &s.ends).await;
    running.stop().await;

    let rows = read_segments(&store, &root, &state).await;
    check_rows(&rows, &s.expected);
    let reason = quarantined(&state, &topic, s.malformed.0, s.malformed.1).reason;
    assert!(reason.contains("not JSON"), "{reason}");
    assert_eq!(
        state.quarantine().len(),
        1,
        "only the malformed record is quarantined"
    );
}
