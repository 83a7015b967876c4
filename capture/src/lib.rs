//! strata's change listeners: one module per source, each reading the source's own change log
//! and publishing Debezium envelopes to Kafka.

pub mod postgres;
pub mod sink;
