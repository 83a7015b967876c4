//! The unflushed batch (pure, no I/O): per-partition offset ranges and dedup, per-table
//! buffered events grouped by schema, quarantined records.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use strata_catalog::{
    DigestHasher, QuarantineEntry, SchemaError, SegmentBuilder, SegmentRow, TableId, TableSchema,
};

/// A Kafka partition.
pub(crate) type TopicPartition = (String, i32);

/// A set of event ids.
pub(crate) type IdSet = HashSet<[u8; 32], DigestHasher>;

/// Event ids already committed, remembered up to a bound, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct RecentIds {
    order: VecDeque<[u8; 32]>,
    set: IdSet,
}

impl RecentIds {
    pub(crate) fn contains(&self, id: &[u8; 32]) -> bool {
        self.set.contains(id)
    }

    pub(crate) fn insert(&mut self, id: [u8; 32], capacity: usize) {
        if capacity == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// Where one assigned partition stands.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    /// First offset of the unflushed range: the catalog's next offset, or the first record
    /// seen when the catalog has none.
    pub(crate) from: Option<i64>,
    /// One past the last record consumed.
    pub(crate) next: Option<i64>,
    /// A seek to this offset (None: the beginning) must succeed before records count.
    pub(crate) seek_pending: Option<Option<i64>>,
    /// Committed event ids.
    pub(crate) recent: RecentIds,
    /// Ids of events in the unflushed batch.
    pub(crate) batch_ids: IdSet,
    /// The part of this partition in the flush being committed, if any.
    pub(crate) flushing: Option<Flushing>,
    /// The number of the compactor's last reset that sent this partition back with a seek.
    pub(crate) rewound_at: u64,
    /// Records before this offset were committed before this compactor took the partition:
    /// they are read only to remember their ids.
    pub(crate) warm_until: Option<i64>,
    /// Latest source commit time consumed from this partition (any table), for watermarks.
    pub(crate) read_ts: Option<i64>,
    /// `read_ts` as of the last commit: where a replay starts from.
    pub(crate) committed_ts: Option<i64>,
}

/// What a partition has in a flush that is being written and committed.
#[derive(Debug, Default)]
pub(crate) struct Flushing {
    /// The ids of its events.
    pub(crate) ids: IdSet,
    /// `read_ts` when the flush began.
    pub(crate) read_ts: Option<i64>,
}

impl PartitionState {
    /// Starting at the catalog's next offset (`None`: never committed).
    pub(crate) fn starting_at(next: Option<i64>) -> Self {
        Self {
            from: next,
            next,
            ..Self::default()
        }
    }

    /// True if records were consumed since the last commit.
    pub(crate) fn has_unflushed(&self) -> bool {
        matches!((self.from, self.next), (Some(f), Some(n)) if n > f)
    }

    /// True if the event was committed, is in the flush being committed, or is in the batch.
    pub(crate) fn has_seen(&self, id: &[u8; 32]) -> bool {
        self.recent.contains(id)
            || self.flushing.as_ref().is_some_and(|f| f.ids.contains(id))
            || self.batch_ids.contains(id)
    }

    /// Forgets the unflushed part (and any flush in progress) and restarts at `next` (after
    /// a conflict or a failed commit), keeping the committed ids.
    /// Seeks only if the consumer is not already there; returns true if it must.
    pub(crate) fn restart_at(&mut self, next: Option<i64>) -> bool {
        let seek = self.from != next || self.next != next || self.flushing.is_some();
        if seek {
            self.seek_pending = Some(next);
        }
        self.from = next;
        self.next = next;
        self.batch_ids.clear();
        self.flushing = None;
        self.read_ts = self.committed_ts;
        seek
    }

    /// A consumed event's source commit time.
    pub(crate) fn saw(&mut self, commit_ts: i64) {
        self.read_ts = self.read_ts.max(Some(commit_ts));
    }

    /// A flush takes the unflushed range: the next batch starts where it ends.
    pub(crate) fn begin_flush(&mut self) {
        self.from = self.next;
        self.flushing = Some(Flushing {
            ids: std::mem::take(&mut self.batch_ids),
            read_ts: self.read_ts,
        });
    }

    /// After the flush's commit succeeded: its ids are committed ones.
    pub(crate) fn flush_committed(&mut self, dedup_window: usize) {
        if let Some(flushing) = self.flushing.take() {
            for id in flushing.ids {
                self.recent.insert(id, dedup_window);
            }
            self.committed_ts = flushing.read_ts;
        }
    }
}

/// Rows of one table under one schema: one segment when flushed.
#[derive(Debug)]
pub(crate) struct PendingSegment {
    pub(crate) builder: SegmentBuilder,
}

impl PendingSegment {
    pub(crate) fn schema(&self) -> &Arc<TableSchema> {
        self.builder.schema()
    }
}

/// Everything consumed since the last commit.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Per table, its segments in arrival order (a new one starts when the schema changes).
    pub(crate) tables: BTreeMap<TableId, Vec<PendingSegment>>,
    /// Quarantined records, their raw bytes already stored.
    pub(crate) quarantine: Vec<QuarantineEntry>,
    /// Records consumed into this batch (events, skips, duplicates, quarantined).
    pub(crate) records: u64,
    /// The rows' bytes in all segments (see `SegmentRow::size`).
    pub(crate) bytes: u64,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends a row to its table's segment under `schema`; returns the size of that
    /// segment. Fails only if the row does not fit the schema (the decoder makes rows that
    /// do) or the schema has no segment schema (checked by the decoder too).
    pub(crate) fn push(
        &mut self,
        row: SegmentRow<'_>,
        schema: &Arc<TableSchema>,
    ) -> Result<u64, SchemaError> {
        let segments = match self.tables.get_mut(&schema.table) {
            Some(segments) => segments,
            None => self.tables.entry(schema.table.clone()).or_default(),
        };
        let current = match segments.last_mut() {
            Some(segment)
                if Arc::ptr_eq(segment.schema(), schema) || **segment.schema() == **schema =>
            {
                segment
            }
            _ => {
                segments.push(PendingSegment {
                    builder: SegmentBuilder::new(Arc::clone(schema))?,
                });
                // Just pushed: `last_mut` is Some.
                let Some(segment) = segments.last_mut() else {
                    return Ok(0);
                };
                segment
            }
        };
        let before = current.builder.bytes();
        current.builder.push(row)?;
        self.bytes += current.builder.bytes() - before;
        Ok(current.builder.bytes())
    }

    /// True once a segment reaches `max_segment_bytes` or all of them together
    /// `max_batch_bytes`: time to flush.
    pub(crate) fn is_full(&self, max_segment_bytes: u64, max_batch_bytes: u64) -> bool {
        self.bytes >= max_batch_bytes
            || self
                .tables
                .values()
                .flatten()
                .any(|segment| segment.builder.bytes() >= max_segment_bytes)
    }

    pub(crate) fn events(&self) -> usize {
        self.tables
            .values()
            .flatten()
            .map(|segment| segment.builder.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_change_starts_a_new_segment() {
        use strata_catalog::{
            Cell, ColumnSchema, ColumnType, ConnectType, Operation, SourcePosition,
        };
        let table = TableId::new("s", "n", "t");
        let column = |name: &str| ColumnSchema {
            name: name.into(),
            column_type: ColumnType::plain(ConnectType::Int64),
            optional: false,
            key: name == "id",
        };
        let v1 = Arc::new(TableSchema {
            table: table.clone(),
            columns: vec![column("id")],
        });
        let mut v2 = (*v1).clone();
        v2.columns.push(column("extra"));
        let v2 = Arc::new(v2);
        let row = |seq: u64, columns: usize| SegmentRow {
            op: Operation::Create,
            commit_ts_us: 0,
            position: SourcePosition { commit: seq, seq },
            tx_id: None,
            id: [seq as u8; 32],
            key: "i1".into(),
            unchanged: vec![],
            cells: vec![Cell::Int(1); columns],
        };
        let mut batch = Batch::default();
        let first = batch.push(row(1, 1), &v1).unwrap();
        assert!(batch.push(row(2, 1), &v1).unwrap() > first, "sizes add up");
        batch.push(row(3, 2), &v2).unwrap();
        batch.push(row(4, 2), &v2).unwrap();
        assert!(
            batch.push(row(5, 1), &v2).is_err(),
            "a row of the wrong width"
        );
        let segments = &batch.tables[&table];
        assert_eq!(segments.len(), 2);
        assert_eq!(
            (segments[0].builder.len(), segments[1].builder.len()),
            (2, 2)
        );
        assert_eq!(*segments[1].schema(), v2);
        assert_eq!(batch.events(), 4);
        let sizes: Vec<u64> = segments.iter().map(|s| s.builder.bytes()).collect();
        assert_eq!(batch.bytes, sizes.iter().sum::<u64>());
        // Full when one segment reaches its bound, or all of them theirs.
        let largest = sizes.iter().copied().max().unwrap();
        assert!(!batch.is_full(largest + 1, batch.bytes + 1));
        assert!(batch.is_full(largest, u64::MAX));
        assert!(batch.is_full(u64::MAX, batch.bytes));
        // Another table: no segment is full on its own, the batch is.
        let mut other = (*v1).clone();
        other.table = TableId::new("s", "n", "u");
        batch.push(row(6, 1), &Arc::new(other)).unwrap();
        assert!(batch.is_full(largest + 1, batch.bytes));
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut recent = RecentIds::default();
        for i in 0..5_u8 {
            recent.insert([i; 32], 3);
        }
        assert_eq!(recent.len(), 3);
        assert!(!recent.contains(&[0; 32]) && !recent.contains(&[1; 32]));
        assert!(recent.contains(&[4; 32]));
        recent.insert([4; 32], 3);
        assert_eq!(recent.len(), 3);
    }

    #[test]
    fn partition_ranges_commit_and_restart() {
        let mut p = PartitionState::starting_at(Some(10));
        assert!(!p.has_unflushed());
        p.next = Some(15);
        p.batch_ids.insert([1; 32]);
        assert!(p.has_unflushed());
        p.begin_flush();
        assert_eq!((p.from, p.next), (Some(15), Some(15)));
        assert!(
            !p.has_unflushed() && p.has_seen(&[1; 32]),
            "in flight, still a duplicate"
        );
        p.next = Some(17);
        p.batch_ids.insert([5; 32]);
        p.flush_committed(10);
        assert!(p.recent.contains(&[1; 32]) && p.flushing.is_none());
        assert!(
            p.has_unflushed() && p.batch_ids.contains(&[5; 32]),
            "the next batch stays"
        );
        p.begin_flush();
        p.flush_committed(10);
        p.next = Some(20);
        p.batch_ids.insert([2; 32]);
        p.begin_flush();
        p.next = Some(22);
        assert!(p.restart_at(Some(15)), "a seek back");
        assert!(
            p.flushing.is_none() && !p.has_seen(&[2; 32]),
            "a failed flush is forgotten"
        );
        assert_eq!(
            (p.from, p.next, p.seek_pending),
            (Some(15), Some(15), Some(Some(15)))
        );
        let mut fresh = PartitionState::starting_at(Some(3));
        assert!(!fresh.restart_at(Some(3)));
        assert_eq!(fresh.seek_pending, None, "already there: no seek");
        assert!(p.batch_ids.is_empty() && p.recent.contains(&[1; 32]));
    }
}
