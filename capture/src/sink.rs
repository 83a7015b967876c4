//! Publishing change events to Kafka, and knowing how far they are durable.
//!
//! A listener may move its source position (a PostgreSQL slot's confirmed LSN) only past events that
//! Kafka has acknowledged. Events are delivered out of order across partitions, so the sink numbers
//! every event it sends and tracks which numbers are still in flight; a listener sets *marks*
//! (`mark(position)` after the last event of a transaction) and asks for the latest mark whose events
//! are all acknowledged:
//!
//! ```text
//!  seq:     1  2  3 | 4  5 | (none) | 6
//!  marks:          m1      m2       m3       (m2 comes from a quiet stretch: no events)
//!  acked:   ✓  ✓  ✓   ✓  ·            ✓
//!  durable position = m1   (5 is in flight, so m2 and m3 wait)
//! ```
//!
//! The producer is idempotent with `acks=all`: retries never duplicate or reorder within a
//! partition. A delivery that fails for good (the broker stayed away past `message.timeout.ms`)
//! poisons the sink: [`EventSink::check`] returns the error and the listener stops without moving
//! its position, so nothing is lost; a restart resends from the last durable position.
//!
//! With [`RecordFormat::Avro`] records name their writer schema by fingerprint; before the first
//! record of a schema, [`EventSink::publish_schema`] writes the schema to the compacted schema
//! topic and waits for Kafka's acknowledgement, once per schema and process.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{
    BaseProducer, BaseRecord, Producer as _, ProducerContext, ThreadedProducer,
};
use serde::{Deserialize, Serialize};
use strata_catalog::avro::WriterSchema;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The Kafka client could not be created (bad properties).
    #[error("cannot create the Kafka producer for {brokers}: {source}")]
    Create {
        /// The configured brokers.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// No broker answered.
    #[error("no Kafka broker answered at {brokers} within {timeout:?}: {source}")]
    Unreachable {
        /// The configured brokers.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Kafka refused or lost an event for good; the position was not advanced past it.
    #[error("Kafka did not accept an event for topic {topic}: {reason}")]
    Delivery {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// Creating a topic failed.
    #[error("cannot create Kafka topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's reason.
        reason: String,
    },
    /// A writer schema could not be published; no record naming it was sent.
    #[error("cannot publish writer schema {fingerprint} to schema topic {topic}: {reason}")]
    Schema {
        /// The schema topic (`kafka.schema_topic`).
        topic: String,
        /// The schema's fingerprint, 16 hex digits.
        fingerprint: String,
        /// What went wrong.
        reason: String,
    },
}

/// How change records are written to Kafka (`[kafka] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// The JSON converter's `{"schema","payload"}` envelope, as Debezium writes it.
    #[default]
    Json,
    /// Avro single-object encoding ([`strata_catalog::avro`]); writer schemas go to the schema
    /// topic.
    Avro,
}

/// How events are published.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// librdkafka properties (`bootstrap.servers` and whatever the operator added).
    pub client: ClientConfig,
    /// How long to wait for a broker at start.
    pub connect_timeout: Duration,
    /// Partitions of the topics the sink creates.
    pub partitions: i32,
    /// Replication factor of the topics the sink creates (`-1`: the broker's default).
    pub replication_factor: i32,
    /// How change records are written.
    pub format: RecordFormat,
    /// The compacted topic writer schemas are published to (with [`RecordFormat::Avro`]).
    pub schema_topic: String,
}

/// A position a listener may resume from once every event before it is durable.
pub type Position = u64;

#[derive(Debug, Default)]
struct Tracker {
    next_seq: u64,
    in_flight: BTreeSet<u64>,
    /// `(number of events sent before the mark, position)`, oldest first.
    marks: VecDeque<(u64, Position)>,
    durable: Option<Position>,
    failure: Option<(String, String)>,
    delivered: u64,
}

impl Tracker {
    fn advance(&mut self) {
        let first_pending = self.in_flight.first().copied().unwrap_or(self.next_seq);
        while let Some(&(sent_before, position)) = self.marks.front() {
            if sent_before > first_pending {
                break;
            }
            self.durable = Some(position);
            self.marks.pop_front();
        }
    }
}

/// Delivery reports land here, on librdkafka's polling thread.
#[derive(Debug, Clone, Default)]
struct DeliveryContext {
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let mut tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        tracker.in_flight.remove(&seq);
        match result {
            Ok(_) => tracker.delivered += 1,
            Err((e, message)) => {
                if tracker.failure.is_none() {
                    use rdkafka::Message as _;
                    tracker.failure = Some((message.topic().to_owned(), e.to_string()));
                }
            }
        }
        // A failed event stays "in flight" for ever in effect: never pass a mark beyond it.
        if tracker.failure.is_none() {
            tracker.advance();
        }
    }
}

/// Writer schemas this process has published.
#[derive(Debug, Default)]
struct Published {
    /// The schema topic exists (created with `cleanup.policy=compact` if it did not).
    topic_ready: bool,
    /// Fingerprints acknowledged by Kafka.
    fingerprints: HashSet<u64>,
}

/// An idempotent Kafka producer that tracks which positions are durable.
pub struct EventSink {
    producer: ThreadedProducer<DeliveryContext>,
    context: DeliveryContext,
    config: SinkConfig,
    brokers: String,
    /// Held while a schema is published, so concurrent snapshot workers publish it once.
    published: tokio::sync::Mutex<Published>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// Creates the producer and checks that a broker answers.
    pub async fn connect(config: SinkConfig) -> Result<Self, SinkError> {
        let brokers = config
            .client
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned();
        let mut client = config.client.clone();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5");
        if client.get("linger.ms").is_none() {
            client.set("linger.ms", "5");
        }
        if client.get("batch.size").is_none() {
            client.set("batch.size", "1000000");
        }
        // Every record carries its Connect schema: batches compress ~20x, and the capture is
        // faster for it (docs/BENCHMARKS.md). Consumers decompress transparently.
        if client.get("compression.type").is_none() {
            client.set("compression.type", "lz4");
        }
        let context = DeliveryContext::default();
        let producer: ThreadedProducer<DeliveryContext> = client
            .create_with_context(context.clone())
            .map_err(|source| SinkError::Create {
                brokers: brokers.clone(),
                source,
            })?;
        let timeout = config.connect_timeout;
        let probe: BaseProducer = config.client.create().map_err(|source| SinkError::Create {
            brokers: brokers.clone(),
            source,
        })?;
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout).map(drop))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
            .map_err(|source| SinkError::Unreachable {
                brokers: brokers.clone(),
                timeout,
                source,
            })?;
        Ok(Self {
            producer,
            context,
            config,
            brokers,
            published: tokio::sync::Mutex::default(),
        })
    }

    /// Creates topics that do not exist yet (existing ones are left as they are).
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), SinkError> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
            })
            .collect();
        self.create_topics(&new).await
    }

    async fn create_topics(&self, new: &[NewTopic<'_>]) -> Result<(), SinkError> {
        if new.is_empty() {
            return Ok(());
        }
        let names = || new.iter().map(|t| t.name).collect::<Vec<_>>().join(",");
        let admin: AdminClient<_> =
            self.config
                .client
                .create()
                .map_err(|source| SinkError::Create {
                    brokers: self.brokers.clone(),
                    source,
                })?;
        let options = AdminOptions::new().operation_timeout(Some(self.config.connect_timeout));
        let results =
            admin
                .create_topics(new, &options)
                .await
                .map_err(|e| SinkError::CreateTopic {
                    topic: names(),
                    reason: e.to_string(),
                })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(SinkError::CreateTopic {
                        topic,
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Publishes `schema` to the schema topic (key: its fingerprint in hex) and waits until Kafka
    /// acknowledged it, unless this process did so before. Call it before the first record
    /// naming the schema: a record is never in Kafka before its schema. The schema topic is
    /// created on first use, compacted, with one partition.
    pub async fn publish_schema(&self, schema: &WriterSchema) -> Result<(), SinkError> {
        let mut published = self.published.lock().await;
        if published.fingerprints.contains(&schema.fingerprint()) {
            return Ok(());
        }
        let topic = self.config.schema_topic.as_str();
        let failed = |reason: String| SinkError::Schema {
            topic: topic.to_owned(),
            fingerprint: schema.topic_key(),
            reason,
        };
        if !published.topic_ready {
            let new = NewTopic::new(
                topic,
                1,
                TopicReplication::Fixed(self.config.replication_factor),
            )
            .set("cleanup.policy", "compact");
            self.create_topics(&[new])
                .await
                .map_err(|e| failed(e.to_string()))?;
            published.topic_ready = true;
        }
        let key = schema.topic_key();
        let seq = self
            .queue(topic, Some(key.as_bytes()), schema.topic_value().as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
        // librdkafka retries until `message.timeout.ms`, then reports a failure.
        while self.lock().in_flight.contains(&seq) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.check().map_err(|e| failed(e.to_string()))?;
        published.fingerprints.insert(schema.fingerprint());
        tracing::debug!(topic, fingerprint = %key, "writer schema published");
        Ok(())
    }

    /// Queues one event. Waits (asynchronously) while librdkafka's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), SinkError> {
        self.queue(topic, key, value).await.map(drop)
    }

    /// Queues one record and returns its sequence number.
    async fn queue(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<u64, SinkError> {
        self.check()?;
        let seq = {
            let mut tracker = self.lock();
            let seq = tracker.next_seq;
            tracker.next_seq += 1;
            tracker.in_flight.insert(seq);
            seq
        };
        let mut opaque = Box::new(seq);
        loop {
            let mut record = BaseRecord::with_opaque_to(topic, opaque).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(seq),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    opaque = record.delivery_opaque;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    self.check()?;
                }
                Err((e, _)) => {
                    let mut tracker = self.lock();
                    tracker
                        .failure
                        .get_or_insert_with(|| (topic.to_owned(), e.to_string()));
                    drop(tracker);
                    return self.check().map(|()| seq);
                }
            }
        }
    }

    /// Declares that the source may resume after `position` once every event sent so far is
    /// acknowledged.
    pub fn mark(&self, position: Position) {
        let mut tracker = self.lock();
        let sent = tracker.next_seq;
        tracker.marks.push_back((sent, position));
        if tracker.failure.is_none() {
            tracker.advance();
        }
    }

    /// The latest marked position whose events are all acknowledged.
    pub fn durable_position(&self) -> Option<Position> {
        self.lock().durable
    }

    /// Records acknowledged so far (events, and writer schemas).
    pub fn delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// Events queued but not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// The first delivery failure, if any.
    pub fn check(&self) -> Result<(), SinkError> {
        match &self.lock().failure {
            None => Ok(()),
            Some((topic, reason)) => Err(SinkError::Delivery {
                topic: topic.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Waits until every queued event is acknowledged, or `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check()?;
            if self.in_flight() == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SinkError::Delivery {
                    topic: "*".into(),
                    reason: format!(
                        "{} event(s) still unacknowledged after {timeout:?}",
                        self.in_flight()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.context
            .tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        // Give queued events a moment; whatever is not acknowledged was never marked durable.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker_with(in_flight: &[u64], next_seq: u64, marks: &[(u64, u64)]) -> Tracker {
        Tracker {
            next_seq,
            in_flight: in_flight.iter().copied().collect(),
            marks: marks.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn durable_position_waits_for_every_earlier_event() {
        // Events 0..5 sent; marks after 3 events (m=10) and after 5 events (m=20); 4 in flight.
        let mut t = tracker_with(&[4], 5, &[(3, 10), (5, 20)]);
        t.advance();
        assert_eq!(t.durable, Some(10));
        t.in_flight.remove(&4);
        t.advance();
        assert_eq!(t.durable, Some(20));
        assert!(t.marks.is_empty());
    }

    #[test]
    fn a_mark_with_no_events_passes_once_earlier_events_are_in() {
        let mut t = tracker_with(&[0], 1, &[(1, 10), (1, 11)]);
        t.advance();
        assert_eq!(t.durable, None);
        t.in_flight.clear();
        t.advance();
        assert_eq!(t.durable, Some(11));
    }

    #[test]
    fn out_of_order_acknowledgements_do_not_skip_a_pending_event() {
        let mut t = tracker_with(&[1, 2, 3], 4, &[(2, 10), (4, 20)]);
        t.in_flight.remove(&3);
        t.in_flight.remove(&2);
        t.advance();
        assert_eq!(t.durable, None, "event 1 is still in flight");
        t.in_flight.remove(&1);
        t.advance();
        assert_eq!(t.durable, Some(20));
    }
}
