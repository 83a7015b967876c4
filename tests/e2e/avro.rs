//! `[kafka] format = "avro"` end to end: `strata run` captures PostgreSQL into Avro
//! single-object records (`C3 01`, the writer schema's fingerprint, the datum) and publishes each
//! writer schema to the schema topic before the first record naming it. A consumer finds every
//! record's schema there by fingerprint and decodes the records to the expected events.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{BorrowedMessage, Message as _};
use serde_json::{Value, json};
use strata_catalog::avro::{WriterSchema, message_fingerprint};

use crate::support::{PgCapture, TopicReader, json_eq, kafka_brokers, pg_connect};

/// A Kafka record as it is on the wire.
#[derive(Debug, Clone)]
struct RawRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// The producer's timestamp (CreateTime), ms.
    timestamp: i64,
}

fn raw(message: &BorrowedMessage<'_>) -> RawRecord {
    RawRecord {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
        timestamp: message.timestamp().to_millis().unwrap_or(i64::MAX),
    }
}

/// The writer schema an Avro record names, from the schema topic's records.
fn schema_of<'s>(
    schemas: &'s HashMap<u64, (WriterSchema, i64)>,
    bytes: &[u8],
    timestamp: i64,
) -> &'s WriterSchema {
    assert_eq!(
        bytes.get(..2),
        Some(&[0xC3, 0x01][..]),
        "not an Avro single-object encoding: {:02x?}",
        &bytes[..bytes.len().min(16)]
    );
    let fingerprint = message_fingerprint(bytes).unwrap();
    let (schema, published) = schemas
        .get(&fingerprint)
        .unwrap_or_else(|| panic!("schema {fingerprint:016x} is not in the schema topic"));
    assert!(
        *published <= timestamp,
        "schema {fingerprint:016x} was produced after a record naming it"
    );
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_capture_writes_records_whose_schemas_are_in_the_schema_topic() {
    let capture = PgCapture::new("avro");
    let table = capture.table("t");
    let schema_topic = capture.schema_topic();
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int4 PRIMARY KEY, name text, amount numeric(12, 2),
                                   score float8, ratio float4, tags int4[], at timestamptz,
                                   data bytea);
             INSERT INTO {table} VALUES
               (1, 'one', 12.50, 1.5, 0.25, ARRAY[1, NULL, 3], '2026-11-25 10:00:00+00', '\\x00ff'),
               (2, 'two', NULL, NULL, NULL, NULL, NULL, NULL);"
        ))
        .await
        .unwrap();

    let _strata = capture
        .run_streaming(
            &["t"],
            &[
                ("STRATA_KAFKA__FORMAT", "avro"),
                ("STRATA_KAFKA__SCHEMA_TOPIC", &schema_topic),
            ],
        )
        .await;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (3, 'three', -0.01, 'NaN', 1.1, '{{}}', \
                                         '2026-11-25 10:00:00.5+05:30', '');
             BEGIN;
             UPDATE {table} SET name = 'uno', tags = ARRAY[7] WHERE id = 1;
             DELETE FROM {table} WHERE id = 2;
             COMMIT;"
        ))
        .await
        .unwrap();

    // The change records: r(1), r(2), c(3), u(1), d(2).
    let mut records =
        TopicReader::open_with(&capture.topic("t"), Duration::from_secs(30), raw).await;
    records.read_count(5, Duration::from_secs(60)).await;
    records.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(records.events.len(), 5, "one record per change");

    // The schema topic: compacted, one partition, the writer schemas keyed by fingerprint.
    let mut published = TopicReader::open_with(&schema_topic, Duration::from_secs(30), raw).await;
    published.read_to_end(Duration::from_secs(30)).await;
    let mut schemas = HashMap::new();
    for record in &published.events {
        let schema = WriterSchema::from_record(&record.value).unwrap();
        assert_eq!(record.key.as_deref(), Some(schema.topic_key().as_bytes()));
        schemas.insert(schema.fingerprint(), (schema, record.timestamp));
    }
    assert_eq!(schemas.len(), 2, "one key schema, one value schema");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let configs = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&schema_topic)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let config = configs[0].as_ref().unwrap();
    assert_eq!(
        config
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref()),
        Some("compact")
    );
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&schema_topic), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 1);

    // Every record decodes, with the schema it names, to the event expected.
    let mut by_id: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for record in &records.events {
        let key_bytes = record.key.as_deref().expect("change records are keyed");
        let key = schema_of(&schemas, key_bytes, record.timestamp)
            .decode(key_bytes)
            .unwrap();
        let value = schema_of(&schemas, &record.value, record.timestamp)
            .decode(&record.value)
            .unwrap();
        let id = key["id"].as_i64().unwrap();
        assert_eq!(value["source"]["table"], table.as_str());
        by_id.entry(id).or_default().push(value);
    }
    let ops = |id: i64| -> Vec<&str> {
        by_id[&id]
            .iter()
            .map(|v| v["op"].as_str().unwrap())
            .collect()
    };
    assert_eq!(ops(1), ["r", "u"]);
    assert_eq!(ops(2), ["r", "d"]);
    assert_eq!(ops(3), ["c"]);
    let expect = |got: &Value, want: Value| {
        assert!(json_eq(got, &want), "got {got}, want {want}");
    };
    expect(
        &by_id[&1][0]["after"],
        json!({"id": 1, "name": "one", "amount": "12.50", "score": 1.5, "ratio": 0.25,
               "tags": [1, null, 3], "at": "2026-11-25T10:00:00Z", "data": "AP8="}),
    );
    expect(
        &by_id[&2][0]["after"],
        json!({"id": 2, "name": "two", "amount": null, "score": null, "ratio": null,
               "tags": null, "at": null, "data": null}),
    );
    expect(
        &by_id[&3][0]["after"],
        json!({"id": 3, "name": "three", "amount": "-0.01", "score": "NaN", "ratio": 1.1,
               "tags": [], "at": "2026-11-25T04:30:00.5Z", "data": ""}),
    );
    expect(
        &by_id[&1][1]["after"],
        json!({"id": 1, "name": "uno", "amount": "12.50", "score": 1.5, "ratio": 0.25,
               "tags": [7], "at": "2026-11-25T10:00:00Z", "data": "AP8="}),
    );
    assert_eq!(by_id[&2][1]["after"], Value::Null);
    assert_eq!(by_id[&2][1]["before"]["id"], 2);
    // The update and the delete are one transaction.
    assert_eq!(
        by_id[&1][1]["source"]["commit_lsn"],
        by_id[&2][1]["source"]["commit_lsn"]
    );

    // The history over an Avro capture (compactor, snapshots, `as_of`, `changes`, `strata
    // status`) is checked by `history::as_of_equals_postgres_at_five_instants_over_avro`.
}

/// A column added while strata captures in Avro: the capture publishes the table's new writer
/// schema before its first record, the compactor learns it from the schema topic, and the
/// history holds the rows of both schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_reaches_the_history_over_avro() {
    use strata_query::StrataContext;

    let capture = PgCapture::new("avroddl");
    let table = capture.table("t");
    let schema_topic = capture.schema_topic();
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int4 PRIMARY KEY, name text);
             INSERT INTO {table} VALUES (1, 'one');"
        ))
        .await
        .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let storage_url = storage.path().to_str().unwrap().to_owned();
    let topics = format!("['^strata\\.{}\\..*']", capture.source);
    let group = crate::support::unique("e2e-avro-ddl");
    let _strata = capture
        .run_streaming(
            &["t"],
            &[
                ("STRATA_KAFKA__FORMAT", "avro"),
                ("STRATA_KAFKA__SCHEMA_TOPIC", &schema_topic),
                ("STRATA_RUN__PARTS", r#"["capture", "compactor"]"#),
                ("STRATA_STORAGE__URL", &storage_url),
                ("STRATA_COMPACTOR__TOPICS", &topics),
                ("STRATA_COMPACTOR__GROUP_ID", &group),
                ("STRATA_COMPACTOR__FLUSH_INTERVAL", "\"300ms\""),
            ],
        )
        .await;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (2, 'two');
             ALTER TABLE {table} ADD COLUMN score int4;
             INSERT INTO {table} VALUES (3, 'three', 7);
             UPDATE {table} SET score = 1 WHERE id = 1;"
        ))
        .await
        .unwrap();

    let want = "+----+-------+-------+\n\
                | id | name  | score |\n\
                +----+-------+-------+\n\
                | 1  | one   | 1     |\n\
                | 2  | two   |       |\n\
                | 3  | three | 7     |\n\
                +----+-------+-------+";
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let got = loop {
        let (store, catalog) = crate::support::open_local(storage.path()).await;
        let strata = StrataContext::new(catalog, store).unwrap();
        let got = match strata
            .query(&format!(
                "SELECT id, name, score FROM public.{table} ORDER BY id"
            ))
            .await
        {
            Ok(batches) => arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string(),
            Err(e) => e.to_string(),
        };
        if got == want || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(got, want, "the history over Avro records of two schemas");

    // Two value schemas (before and after the column), published once each, and the key's.
    let mut published = TopicReader::open_with(&schema_topic, Duration::from_secs(30), raw).await;
    published.read_to_end(Duration::from_secs(30)).await;
    let fingerprints: std::collections::BTreeSet<u64> = published
        .events
        .iter()
        .map(|r| WriterSchema::from_record(&r.value).unwrap().fingerprint())
        .collect();
    assert_eq!(
        fingerprints.len(),
        3,
        "key, value before and after the column"
    );
    assert_eq!(published.events.len(), 3, "each schema published once");
}
