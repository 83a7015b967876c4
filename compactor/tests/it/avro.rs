//! A topic in strata's Avro format (`[kafka] format = "avro"`): the compactor learns the writer
//! schemas from the schema topic and stores the same rows, with the same event ids, as from
//! the JSON records; a record naming a schema the topic does not hold is quarantined, named.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use strata_catalog::avro::WriterSchema;

use super::support::*;
use super::{Scenario, check_rows, quarantined, scenario};

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

/// A fresh topic and schema topic, the scenario's records in Avro (not produced yet), and a
/// local-directory catalog for a compactor of a fresh group.
struct AvroCase {
    topic: String,
    schema_topic: String,
    s: Scenario,
    /// The schema topic's records.
    published: Vec<Record>,
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    root: Path,
    group: String,
}

impl AvroCase {
    async fn new(server: &str, n: usize, with_duplicates: bool) -> Self {
        let server = unique(server);
        let topic = format!("{server}.public.items");
        let schema_topic = unique("_strata_schemas_it");
        create_topic(&topic, 2).await;
        create_topic(&schema_topic, 1).await;
        let mut s = scenario(&server, &topic, n, with_duplicates);
        let published = avro_records(&mut s.records);
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
        Self {
            topic,
            schema_topic,
            s,
            published,
            _dir: dir,
            store,
            root: Path::from("warehouse"),
            group: unique("g"),
        }
    }

    async fn start(&self) -> Running {
        let mut config = test_config(&self.group, &self.topic);
        config.schema_topic = self.schema_topic.clone();
        start(config, Arc::clone(&self.store), &self.root).await
    }

    async fn produce(&self) {
        produce(&self.schema_topic, &self.published).await;
        produce(&self.topic, &self.s.records).await;
    }

    /// Once the compactor consumed every record: the catalog's state, and the rows and ids of
    /// the JSON records (`expected` was computed from them) checked.
    async fn check(&self, running: Running) -> Arc<strata_catalog::CatalogState> {
        let Self {
            store, root, group, ..
        } = self;
        let ends = &self.s.ends;
        let state = wait_for_offsets(Arc::clone(store), root, group, &self.topic, ends).await;
        running.stop().await;
        let rows = read_segments(store, root, &state).await;
        check_rows(&rows, &self.s.expected);
        let (partition, offset) = self.s.malformed;
        let reason = quarantined(&state, &self.topic, partition, offset).reason;
        assert!(reason.contains("not JSON"), "{reason}");
        state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_are_stored_as_their_json_records_are() {
    let mut case = AvroCase::new("strata.itavro", 200, true).await;

    // And one naming a schema that was never published, twice: the second is quarantined
    // without reading the schema topic again.
    let s = &mut case.s;
    let mut unknown = s.records[0].clone();
    let value = unknown.value.as_mut().expect("a value");
    value[2..10].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_le_bytes());
    let mut unknown_at = Vec::new();
    for _ in 0..2 {
        unknown_at.push((unknown.partition, s.ends[unknown.partition as usize]));
        s.records.push(unknown.clone());
        s.ends[unknown.partition as usize] += 1;
    }
    case.produce().await;
    let running = case.start().await;
    let state = case.check(running).await;

    for (partition, offset) in unknown_at {
        let reason = quarantined(&state, &case.topic, partition, offset).reason;
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
    let case = AvroCase::new("strata.itavrolate", 120, false).await;
    let running = case.start().await;
    // Long enough for the read at start to find the topic empty.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    case.produce().await;
    let state = case.check(running).await;
    assert_eq!(
        state.quarantine().len(),
        1,
        "only the malformed record is quarantined"
    );
}
