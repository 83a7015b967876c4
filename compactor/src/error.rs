//! The crate's one [`Error`] type.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the compactor. Bad input never does: it is quarantined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`CompactorConfig`](crate::CompactorConfig) value is out of range.
    #[error("invalid compactor config: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Kafka refused an operation.
    #[error("kafka {operation}: {source}")]
    Kafka {
        /// `create consumer`, `subscribe`, …
        operation: &'static str,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The schema topic (Avro writer schemas) could not be read.
    #[error("kafka {operation} of schema topic {topic}: {source}")]
    SchemaTopic {
        /// The schema topic.
        topic: String,
        /// `read metadata`, `read`, …
        operation: &'static str,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Reading the schema topic to its end took too long.
    #[error("schema topic {topic} was not read to its end within {timeout:?}")]
    SchemaTopicTimeout {
        /// The schema topic.
        topic: String,
        /// How long it was given.
        timeout: std::time::Duration,
    },
    /// The catalog failed (after the compactor's own retries).
    #[error(transparent)]
    Catalog(#[from] strata_catalog::Error),
    /// The object store failed writing a segment or a quarantined record.
    #[error("object store {operation} {path}: {source}")]
    Store {
        /// `put`, `delete`.
        operation: &'static str,
        /// The object.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Encoding a segment failed (a bug, not bad input: events are checked on arrival).
    #[error("writing a segment of {table}: {reason}")]
    Segment {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
}
