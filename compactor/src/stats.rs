//! [`CompactorStats`]: counters a metrics endpoint can read while the compactor runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals since the compactor started. Shared as `Arc<CompactorStats>`.
#[derive(Debug, Default)]
pub struct CompactorStats {
    /// Kafka records received.
    pub records_in: AtomicU64,
    /// Change events decoded.
    pub events_in: AtomicU64,
    /// Events dropped as copies of one already seen (same event id, same partition).
    pub duplicates_dropped: AtomicU64,
    /// Records that carry no change (tombstones, transaction markers, heartbeats).
    pub records_skipped: AtomicU64,
    /// Records quarantined.
    pub records_quarantined: AtomicU64,
    /// Segments committed.
    pub segments_written: AtomicU64,
    /// Rows in committed segments.
    pub rows_written: AtomicU64,
    /// Bytes of committed segments.
    pub bytes_written: AtomicU64,
    /// Catalog commits made.
    pub commits: AtomicU64,
    /// Commits refused because another compactor got there first.
    pub conflicts: AtomicU64,
    /// Committed records re-read on taking a partition, to remember their ids.
    pub records_replayed: AtomicU64,
    /// Kafka records read one at a time from the consumer's own queue, not in chunks from the
    /// fetch queue (partitions librdkafka gave no fetch queue for; normally 0).
    pub records_unbatched: AtomicU64,
    /// A gauge: records in the assigned partitions not yet consumed (the brokers' high
    /// watermarks, as of librdkafka's last statistics, minus the next offsets).
    pub lag_records: AtomicU64,
}

/// A copy of [`CompactorStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct CompactorStatsSnapshot {
    pub records_in: u64,
    pub events_in: u64,
    pub duplicates_dropped: u64,
    pub records_skipped: u64,
    pub records_quarantined: u64,
    pub segments_written: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub records_replayed: u64,
    pub records_unbatched: u64,
    pub lag_records: u64,
}

impl CompactorStats {
    /// The current values.
    pub fn snapshot(&self) -> CompactorStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CompactorStatsSnapshot {
            records_in: get(&self.records_in),
            events_in: get(&self.events_in),
            duplicates_dropped: get(&self.duplicates_dropped),
            records_skipped: get(&self.records_skipped),
            records_quarantined: get(&self.records_quarantined),
            segments_written: get(&self.segments_written),
            rows_written: get(&self.rows_written),
            bytes_written: get(&self.bytes_written),
            commits: get(&self.commits),
            conflicts: get(&self.conflicts),
            records_replayed: get(&self.records_replayed),
            records_unbatched: get(&self.records_unbatched),
            lag_records: get(&self.lag_records),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
