//! The real services answer the way strata relies on: Kafka keeps keyed order, S3 honours
//! put-if-absent, PostgreSQL runs with logical decoding.

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::{kafka_brokers, pg_url, s3_store, unique};

#[tokio::test]
async fn kafka_round_trips_keyed_events_in_order_per_key() {
    let brokers = kafka_brokers();
    let topic = unique("e2e-kafka");

    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .unwrap();
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    // 10 keys, 20 versions each; the value carries the version.
    let mut sent = 0;
    for version in 0..20 {
        for key in 0..10 {
            let key = format!("k{key}");
            let value = format!("{key}:v{version}");
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce to {topic} failed: {e}"));
            sent += 1;
        }
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("e2e-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    let mut received = 0;
    while received < sent {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {sent} events came back from {topic}"))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        let partition = *partition_of_key
            .entry(key.clone())
            .or_insert(message.partition());
        assert_eq!(
            partition,
            message.partition(),
            "key {key} landed in two partitions"
        );
        per_key.entry(key).or_default().push(value);
        received += 1;
    }
    assert_eq!(per_key.len(), 10);
    for (key, values) in &per_key {
        let expected: Vec<String> = (0..20).map(|v| format!("{key}:v{v}")).collect();
        assert_eq!(values, &expected, "events of {key} out of order or missing");
    }
    // Three partitions exist and the keys spread over more than one of them.
    let used: std::collections::BTreeSet<i32> = partition_of_key.values().copied().collect();
    assert!(used.len() > 1, "all keys in one partition: {used:?}");
}

#[tokio::test]
async fn s3_refuses_to_overwrite_with_put_if_absent() {
    let (store, prefix) = s3_store();
    let path = prefix.join("_catalog").join("00000000000000000001.json");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };

    store
        .put_opts(
            &path,
            PutPayload::from_static(b"first writer"),
            create.clone(),
        )
        .await
        .expect("the first put-if-absent succeeds");
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second writer"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "second put-if-absent must fail with AlreadyExists, got {second:?}"
    );
    let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        stored.as_ref(),
        b"first writer",
        "the first writer's bytes must survive"
    );

    store.delete(&path).await.unwrap();
}

#[tokio::test]
async fn postgres_runs_with_logical_decoding_and_its_wal_advances() {
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_level, "logical");

    let lsn = |row: tokio_postgres::Row| -> u64 {
        let text: String = row.get(0);
        let (hi, lo) = text
            .split_once('/')
            .unwrap_or_else(|| panic!("odd LSN {text}"));
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    let before = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());
    let table = unique("e2e_wal").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text);
             INSERT INTO {table} SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g;
             DROP TABLE {table};"
        ))
        .await
        .unwrap();
    let after = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());
    assert!(
        after > before,
        "WAL did not advance: {before:X} -> {after:X}"
    );
}
