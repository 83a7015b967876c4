//! [`CompactorConfig`]: how the compactor consumes, batches and commits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default for [`CompactorConfig::group_id`].
pub const DEFAULT_GROUP_ID: &str = "strata-compactor";
/// Default for [`CompactorConfig::topics`]: every topic strata's capture writes.
pub const DEFAULT_TOPICS: &str = r"^strata\..*";
/// Default for [`CompactorConfig::max_segment_bytes`]: 64 MiB.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default for [`CompactorConfig::max_batch_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;
/// Default for [`CompactorConfig::caught_up_flush_bytes`]: 8 MiB.
pub const DEFAULT_CAUGHT_UP_FLUSH_BYTES: u64 = 8 * 1024 * 1024;
/// Default for [`CompactorConfig::flush_interval`]: 5 s.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Default for [`CompactorConfig::dedup_window`].
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;
/// Default for [`CompactorConfig::row_group_rows`].
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Default for [`CompactorConfig::zstd_level`].
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The most threads [`CompactorConfig::decode_threads`] may ask for.
pub const MAX_DECODE_THREADS: usize = 64;

/// The compactor's settings. Kafka connection settings (brokers, security) come separately,
/// as an `rdkafka::ClientConfig`, from the process's Kafka configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactorConfig {
    /// Kafka consumer group; also the `group` of the catalog's consumed offsets. Default
    /// `strata-compactor`.
    pub group_id: String,
    /// Topics to consume: names, or regular expressions starting with `^` (librdkafka's
    /// convention). Default `^strata\..*`.
    pub topics: Vec<String>,
    /// Roll (flush) when a table's buffered changes reach this many bytes, measured as the
    /// rows take them in memory (values, keys, event ids; about 150 bytes for a row of nine
    /// small columns); the zstd Parquet file is smaller. Checked per chunk of records, which
    /// is cut to the rows that still fit: a segment may pass it by a few rows. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// Also flush when all tables' buffered changes together reach this many bytes (counted
    /// like `max_segment_bytes`): with many busy tables, each under `max_segment_bytes`, this
    /// bounds the compactor's memory. Default 256 MiB.
    pub max_batch_bytes: u64,
    /// Flush at the latest this long after the first unflushed record. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush at once, without waiting for `flush_interval`, when the compactor has read every
    /// record there is (its fetch queue ran dry) and the batch holds at least this many bytes
    /// (counted like `max_segment_bytes`): waiting would not make the segments much larger,
    /// only later. 0: whenever caught up. Default 8 MiB. What is left of a backlog or a
    /// burst (the last flush was of a batch this large or of `max_segment_bytes`, and no
    /// record came for 50 ms) is flushed whatever its size: its records are late already.
    pub caught_up_flush_bytes: u64,
    /// Event ids remembered per partition after they are committed, to drop late copies
    /// (replica copies, resends). A compactor that takes a partition first re-reads up to this
    /// many records before the catalog's offset to remember theirs. Default 100 000.
    pub dedup_window: usize,
    /// Rows per Parquet row group. Default 131 072.
    pub row_group_rows: usize,
    /// zstd level of the segments (1..=22). Default 3.
    pub zstd_level: i32,
    /// Who commits, as recorded in the catalog. Default `strata-compactor`.
    pub writer_id: String,
    /// Threads decoding records side by side (the compactor's main CPU cost), and encoding a
    /// segment's columns side by side; 0: one per core. Default 0.
    pub decode_threads: usize,
    /// The topic Avro writer schemas are read from (`strata_catalog::avro`). Not read from
    /// `[compactor]`: `strata` sets it from `[kafka] schema_topic`, which the capture writes to.
    #[serde(skip)]
    pub schema_topic: String,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            group_id: DEFAULT_GROUP_ID.into(),
            topics: vec![DEFAULT_TOPICS.into()],
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            caught_up_flush_bytes: DEFAULT_CAUGHT_UP_FLUSH_BYTES,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            writer_id: DEFAULT_GROUP_ID.into(),
            decode_threads: 0,
            schema_topic: strata_catalog::avro::DEFAULT_SCHEMA_TOPIC.into(),
        }
    }
}

impl CompactorConfig {
    /// Checks every field; [`Compactor::new`](crate::Compactor::new) calls this.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.group_id.is_empty() {
            return invalid("group_id", "must not be empty");
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return invalid("topics", "needs at least one non-empty topic or pattern");
        }
        if self.max_segment_bytes == 0 {
            return invalid("max_segment_bytes", "must be at least 1");
        }
        if self.max_batch_bytes == 0 {
            return invalid("max_batch_bytes", "must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return invalid("flush_interval", "must be longer than 0");
        }
        if self.row_group_rows == 0 {
            return invalid("row_group_rows", "must be at least 1");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return invalid("zstd_level", "must be in 1..=22");
        }
        if self.writer_id.is_empty() {
            return invalid("writer_id", "must not be empty");
        }
        if self.schema_topic.is_empty() {
            return invalid("schema_topic", "must not be empty");
        }
        if self.decode_threads > MAX_DECODE_THREADS {
            return invalid("decode_threads", "must be at most 64 (0: one per core)");
        }
        Ok(())
    }

    /// How many decoding threads to run: `decode_threads`, or one per core when 0.
    pub fn effective_decode_threads(&self) -> usize {
        match self.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_human_durations() {
        let config: CompactorConfig =
            serde_json::from_str(r#"{"flush_interval": "250ms", "topics": ["a", "^b\\..*"]}"#)
                .unwrap();
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.group_id, "strata-compactor");
        assert_eq!(config.max_segment_bytes, 64 * 1024 * 1024);
        config.validate().unwrap();
        assert!(serde_json::from_str::<CompactorConfig>(r#"{"nope": 1}"#).is_err());
        let bad = CompactorConfig {
            zstd_level: 0,
            ..CompactorConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "zstd_level",
                ..
            })
        ));
    }
}
