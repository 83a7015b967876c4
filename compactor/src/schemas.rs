//! Learning Avro writer schemas from the schema topic (see `strata_catalog::avro`).
//!
//! A record in strata's Avro format names its writer schema by fingerprint; the capture
//! publishes every schema to the schema topic before its first record. The compactor reads the
//! schema topic from its start to its current end (it holds one small record per schema ever
//! written) once as it starts, beside joining its group, and again whenever a chunk holds a
//! fingerprint the decoders do not know; then it decodes the chunk's records again. A fingerprint still unknown after that is bad input (quarantined, named); a
//! schema topic that cannot be read stops the compactor without consuming anything.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use strata_catalog::AvroSchemas;
use strata_catalog::avro::WriterSchema;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// How long reading the schema topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the schema topic is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaRead {
    /// Ahead of the first records, which may not be Avro at all: a missing topic is no news.
    AtStart,
    /// A record names a writer schema not known.
    Needed,
}

/// Reads `topic` from its start to its current end into `schemas`, with the Kafka connection
/// of `client`. Blocking: run it off the async loop. Returns how many schemas were new.
pub(crate) fn read_schema_topic(
    client: &ClientConfig,
    topic: &str,
    schemas: &AvroSchemas,
    why: SchemaRead,
) -> Result<usize> {
    let kafka = |operation: &'static str| {
        move |source| Error::SchemaTopic {
            topic: topic.to_owned(),
            operation,
            source,
        }
    };
    let mut client = client.clone();
    client
        .set("group.id", "strata-compactor-schemas")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create().map_err(kafka("create consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), READ_TIMEOUT)
        .map_err(kafka("read metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = Vec::with_capacity(partitions.len());
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, READ_TIMEOUT)
            .map_err(kafka("read watermarks"))?;
        if high > low {
            ends.push((partition, high));
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka("assign"))?;
        }
    }
    if ends.is_empty() {
        match why {
            SchemaRead::AtStart => debug!(topic, "the schema topic is missing or empty"),
            SchemaRead::Needed => warn!(topic, "the schema topic is missing or empty"),
        }
        return Ok(0);
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut added = 0;
    while !ends.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(Error::SchemaTopicTimeout {
                topic: topic.to_owned(),
                timeout: READ_TIMEOUT,
            });
        };
        let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let message = message.map_err(kafka("read"))?;
        if let Some(value) = message.payload() {
            match WriterSchema::from_record(value) {
                Ok(schema) => {
                    if schemas.insert(schema) {
                        added += 1;
                    }
                }
                Err(e) => warn!(
                    topic,
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    "not a writer schema record; skipped"
                ),
            }
        }
        let (partition, offset) = (message.partition(), message.offset());
        ends.retain(|&(p, end)| p != partition || offset + 1 < end);
    }
    info!(topic, added, known = schemas.len(), "read the schema topic");
    Ok(added)
}
