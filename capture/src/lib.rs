//! strata's change listeners: one module per source, each reading the source's own change log
//! and publishing Debezium envelopes to Kafka.

pub mod postgres;
pub mod sink;

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
