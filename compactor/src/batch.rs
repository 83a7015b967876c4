//! The unflushed batch (pure, no I/O): per-partition offset ranges and dedup, per-table
//! buffered events grouped by schema, quarantined records.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use strata_catalog::{
    DigestHasher, QuarantineEntry, SchemaError, SegmentBuilder, SegmentRow, TableId, TableSchema,
};

/// A Kafka partition.
pub(crate) type TopicPartition = (String, i32);

/// Event ids as the dedup sets hold them: the first 16 bytes of the 32-byte blake3 id. Two
/// different events among the few hundred thousand a partition remembers share them with a
/// chance of about n² / 2¹²⁹ (below 10⁻²⁸ for a million ids), and half the bytes make the
/// sets faster to probe and to keep.
pub(crate) type IdKey = u128;

/// The dedup key of an event id.
pub(crate) fn id_key(id: &[u8; 32]) -> IdKey {
    let mut half = [0; 16];
    half.copy_from_slice(&id[..16]);
    IdKey::from_le_bytes(half)
}

/// One partition's event ids, in the order they were taken, in one set: the committed ones
/// (the newest `dedup_window` are remembered), then those of the flush being committed, then
/// those of the unflushed batch. An event is new if its id is in none of them, which is one
/// probe of one set.
///
/// ```text
///   order:  [ committed (≤ window) | flushing | batch ]
///             ▲ forgotten first      ▲ committed or   ▲ taken here
///                                      dropped
/// ```
#[derive(Debug, Default)]
pub(crate) struct SeenIds {
    set: HashSet<IdKey, DigestHasher>,
    order: VecDeque<IdKey>,
    /// How many of the newest ids, before the batch's, are the flushing ones.
    flushing: usize,
    /// How many of the newest ids are the batch's.
    batch: usize,
}

impl SeenIds {
    /// True if the id is committed, flushing or in the batch.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: &[u8; 32]) -> bool {
        self.set.contains(&id_key(id))
    }

    /// Committed ids remembered.
    pub(crate) fn committed(&self) -> usize {
        self.order.len() - self.flushing - self.batch
    }

    /// Ids in the batch.
    #[cfg(test)]
    pub(crate) fn in_batch(&self) -> usize {
        self.batch
    }

    /// Takes an event's id into the batch unless it was seen; true if taken.
    pub(crate) fn take(&mut self, id: &[u8; 32]) -> bool {
        let key = id_key(id);
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        self.batch += 1;
        true
    }

    /// Remembers the id of an event committed before (read again after a restart), keeping
    /// at most `window` committed ids.
    pub(crate) fn remember(&mut self, id: &[u8; 32], window: usize) {
        let key = id_key(id);
        if window == 0 || !self.set.insert(key) {
            return;
        }
        // Committed ids are read before any of the partition's batch; should a batch exist,
        // the id still goes before it.
        let at = self.committed();
        self.order.insert(at, key);
        self.forget_oldest(window);
    }

    /// The batch's ids become the flushing ones (no flush may be in flight).
    pub(crate) fn begin_flush(&mut self) {
        debug_assert_eq!(self.flushing, 0, "one flush at a time");
        self.flushing += self.batch;
        self.batch = 0;
    }

    /// The flush committed: its ids are committed ones, and only the newest `window`
    /// committed ids stay.
    pub(crate) fn flush_committed(&mut self, window: usize) {
        self.flushing = 0;
        self.forget_oldest(window);
    }

    /// The flush in flight and the batch are dropped: their ids are forgotten.
    pub(crate) fn drop_uncommitted(&mut self) {
        for _ in 0..self.flushing + self.batch {
            if let Some(key) = self.order.pop_back() {
                self.set.remove(&key);
            }
        }
        self.flushing = 0;
        self.batch = 0;
    }

    fn forget_oldest(&mut self, window: usize) {
        while self.committed() > window {
            if let Some(key) = self.order.pop_front() {
                self.set.remove(&key);
            }
        }
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
    /// The ids of the events committed, flushing and in the batch.
    pub(crate) ids: SeenIds,
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

/// What a partition has in a flush that is being written and committed (its ids are in
/// [`SeenIds`]).
#[derive(Debug, Default)]
pub(crate) struct Flushing {
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

    /// Takes an event into the batch unless it was committed, is in the flush being
    /// committed, or is in the batch; true if taken.
    pub(crate) fn take_event(&mut self, id: &[u8; 32]) -> bool {
        self.ids.take(id)
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
        self.ids.drop_uncommitted();
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
        self.ids.begin_flush();
        self.flushing = Some(Flushing {
            read_ts: self.read_ts,
        });
    }

    /// After the flush's commit succeeded: its ids are committed ones (the newest
    /// `dedup_window` of all are remembered).
    pub(crate) fn flush_committed(&mut self, dedup_window: usize) {
        if let Some(flushing) = self.flushing.take() {
            self.ids.flush_committed(dedup_window);
            self.committed_ts = flushing.read_ts;
        }
    }
}

/// Where a decode thread appended a row: the thread, the segment in its [`Appended`], the
/// row in that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowAt {
    pub(crate) thread: u32,
    pub(crate) segment: u32,
    pub(crate) row: u32,
}

/// Rows of one table under one schema appended by one decode thread.
#[derive(Debug)]
pub(crate) struct PendingSegment {
    pub(crate) builder: SegmentBuilder,
    /// The arrival number (the consumer's count of records) of the last row appended.
    pub(crate) last: u64,
}

impl PendingSegment {
    pub(crate) fn schema(&self) -> &Arc<TableSchema> {
        self.builder.schema()
    }
}

/// The rows one decode thread appended since the last flush: per table, a segment per run
/// of one schema. Rows are appended before the compactor's loop has seen them; the loop
/// retracts those it does not take (duplicates, replays, records of a rewound partition).
#[derive(Debug, Default)]
pub(crate) struct Appended {
    pub(crate) segments: Vec<PendingSegment>,
    /// Per table, its latest segment in `segments`.
    latest: HashMap<TableId, usize>,
    /// The segment appended to last (most rows are of the same table as the one before).
    last: Option<usize>,
    /// The appended rows' bytes (see `SegmentRow::size`).
    pub(crate) bytes: u64,
}

impl Appended {
    /// Appends a row to its table's segment under `schema` (a new segment when the table's
    /// schema changed); returns the segment's index and the row's. Fails only if the row does
    /// not fit the schema (the decoder makes rows that do) or the schema has no segment schema
    /// (checked by the decoder too).
    pub(crate) fn push(
        &mut self,
        row: SegmentRow<'_>,
        schema: &Arc<TableSchema>,
        arrival: u64,
    ) -> Result<(u32, u32), SchemaError> {
        let index = match self.last {
            Some(i) if Arc::ptr_eq(self.segments[i].schema(), schema) => i,
            _ => self.segment_for(schema)?,
        };
        self.last = Some(index);
        let segment = &mut self.segments[index];
        let before = segment.builder.bytes();
        segment.builder.push(row)?;
        segment.last = arrival;
        self.bytes += segment.builder.bytes() - before;
        let row = u32::try_from(segment.builder.len() - 1).unwrap_or(u32::MAX);
        Ok((u32::try_from(index).unwrap_or(u32::MAX), row))
    }

    /// The table's latest segment if it has `schema`, else a new one.
    fn segment_for(&mut self, schema: &Arc<TableSchema>) -> Result<usize, SchemaError> {
        if let Some(&i) = self.latest.get(&schema.table) {
            let current = self.segments[i].schema();
            if Arc::ptr_eq(current, schema) || **current == **schema {
                return Ok(i);
            }
        }
        self.segments.push(PendingSegment {
            builder: SegmentBuilder::new(Arc::clone(schema))?,
            last: 0,
        });
        let i = self.segments.len() - 1;
        self.latest.insert(schema.table.clone(), i);
        Ok(i)
    }

    /// Takes back a row appended here.
    pub(crate) fn retract(&mut self, segment: u32, row: u32) {
        if let Some(s) = self.segments.get_mut(segment as usize) {
            s.builder.retract(row as usize);
        }
    }

    /// Rows appended (retracted ones too).
    pub(crate) fn len(&self) -> usize {
        self.segments.iter().map(|s| s.builder.len()).sum()
    }
}

/// The rows of one table under one schema, from every decode thread: one segment when
/// flushed.
#[derive(Debug)]
pub(crate) struct SegmentGroup {
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) builders: Vec<SegmentBuilder>,
    /// The arrival number of its last row: a table's groups are flushed in this order, so
    /// that the schema of the last change is the table's latest.
    last: u64,
}

impl SegmentGroup {
    /// Rows it will hold (retracted ones left out).
    pub(crate) fn rows(&self) -> usize {
        self.builders.iter().map(SegmentBuilder::rows).sum()
    }

    /// The earliest commit time of its rows.
    pub(crate) fn min_commit_ts(&self) -> Option<i64> {
        self.builders
            .iter()
            .filter_map(SegmentBuilder::min_commit_ts)
            .min()
    }
}

/// The segments every decode thread appended, per table, grouped by schema: a table's
/// groups in the order of their last rows.
pub(crate) fn group_segments(appended: Vec<Appended>) -> BTreeMap<TableId, Vec<SegmentGroup>> {
    let mut tables: BTreeMap<TableId, Vec<SegmentGroup>> = BTreeMap::new();
    for segment in appended.into_iter().flat_map(|a| a.segments) {
        let groups = tables.entry(segment.schema().table.clone()).or_default();
        let schema = segment.schema();
        match groups
            .iter_mut()
            .find(|g| Arc::ptr_eq(&g.schema, schema) || *g.schema == **schema)
        {
            Some(group) => {
                group.last = group.last.max(segment.last);
                group.builders.push(segment.builder);
            }
            None => groups.push(SegmentGroup {
                schema: Arc::clone(schema),
                last: segment.last,
                builders: vec![segment.builder],
            }),
        }
    }
    for groups in tables.values_mut() {
        groups.sort_by_key(|g| g.last);
    }
    tables
}

/// Everything consumed since the last commit, but the rows (in the decode threads'
/// [`Appended`]).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Quarantined records, their raw bytes already stored.
    pub(crate) quarantine: Vec<QuarantineEntry>,
    /// Records consumed into this batch (events, skips, duplicates, quarantined).
    pub(crate) records: u64,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_change_starts_a_new_segment_and_groups_follow_the_last_rows() {
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
            event_id_version: strata_catalog::EventIdVersion::CURRENT,
            columns: vec![column("id")],
        });
        let mut v2 = (*v1).clone();
        v2.columns.push(column("extra"));
        let v2 = Arc::new(v2);
        let row = |seq: u64, columns: usize| SegmentRow {
            op: Operation::Create,
            commit_ts_us: seq as i64,
            position: SourcePosition { commit: seq, seq },
            tx_id: None,
            id: [seq as u8; 32],
            key: "i1".into(),
            unchanged: vec![],
            cells: vec![Cell::Int(1); columns],
        };
        // Two threads: the first sees v1 then v2, the second only v1, and later.
        let (mut a, mut b) = (Appended::default(), Appended::default());
        assert_eq!(a.push(row(1, 1), &v1, 1).unwrap(), (0, 0));
        assert_eq!(a.push(row(2, 1), &v1, 2).unwrap(), (0, 1));
        assert_eq!(a.push(row(3, 2), &v2, 3).unwrap(), (1, 0));
        // An equal schema in another Arc is the same schema.
        assert_eq!(
            a.push(row(4, 2), &Arc::new((*v2).clone()), 4).unwrap(),
            (1, 1)
        );
        assert!(
            a.push(row(5, 1), &v2, 5).is_err(),
            "a row of the wrong width"
        );
        assert_eq!(a.len(), 4);
        assert_eq!(b.push(row(9, 1), &v1, 9).unwrap(), (0, 0));
        assert_eq!(b.push(row(10, 1), &v1, 10).unwrap(), (0, 1));
        b.retract(0, 0);
        let sizes: u64 = a.segments.iter().map(|s| s.builder.bytes()).sum();
        assert_eq!(a.bytes, sizes, "sizes add up");
        // Another table.
        let mut other = (*v1).clone();
        other.table = TableId::new("s", "n", "u");
        a.push(row(11, 1), &Arc::new(other), 11).unwrap();

        let tables = group_segments(vec![a, b]);
        assert_eq!(tables.len(), 2);
        let groups = &tables[&table];
        // v1's last row (arrival 10, thread b) came after v2's (4): v1 is the latest schema.
        assert_eq!(groups.len(), 2);
        assert_eq!((*groups[0].schema).clone(), *v2);
        assert_eq!((*groups[1].schema).clone(), *v1);
        assert_eq!((groups[0].rows(), groups[1].rows()), (2, 3));
        assert_eq!(groups[1].builders.len(), 2);
        assert_eq!(groups[1].min_commit_ts(), Some(1));
        assert_eq!(groups[0].min_commit_ts(), Some(3));
    }

    #[test]
    fn a_flush_of_more_ids_than_the_window_remembers_its_newest() {
        let mut p = PartitionState::starting_at(Some(0));
        for i in 0..5_u8 {
            assert!(p.take_event(&[i; 32]));
        }
        p.begin_flush();
        p.flush_committed(3);
        assert_eq!(p.ids.committed(), 3);
        assert!((2..5_u8).all(|i| p.ids.contains(&[i; 32])));
        assert!(!p.ids.contains(&[0; 32]) && !p.ids.contains(&[1; 32]));
        // A smaller flush pushes out the oldest.
        assert!(p.take_event(&[9; 32]));
        p.begin_flush();
        p.flush_committed(3);
        assert!(p.ids.contains(&[9; 32]) && !p.ids.contains(&[2; 32]));
        assert_eq!(p.ids.committed(), 3);
    }

    #[test]
    fn remembered_ids_forget_the_oldest_and_stay_before_the_batch() {
        let mut ids = SeenIds::default();
        for i in 0..5_u8 {
            ids.remember(&[i; 32], 3);
        }
        assert_eq!(ids.committed(), 3);
        assert!(!ids.contains(&[0; 32]) && !ids.contains(&[1; 32]));
        assert!(ids.contains(&[4; 32]));
        ids.remember(&[4; 32], 3);
        assert_eq!(ids.committed(), 3);
        assert!(!ids.take(&[4; 32]), "remembered: a duplicate");
        assert!(ids.take(&[7; 32]));
        // One remembered while a batch exists goes before the batch's ids.
        ids.remember(&[8; 32], 3);
        assert_eq!((ids.committed(), ids.in_batch()), (3, 1));
        assert!(!ids.contains(&[2; 32]), "the oldest committed id went");
        ids.drop_uncommitted();
        assert!(!ids.contains(&[7; 32]) && ids.contains(&[8; 32]));
        assert_eq!(ids.committed(), 3);
    }

    #[test]
    fn only_the_first_half_of_an_id_is_its_key() {
        let mut a = [1; 32];
        let b = a;
        a[31] = 2;
        assert_eq!(id_key(&a), id_key(&b));
        let mut c = b;
        c[15] = 2;
        assert_ne!(id_key(&c), id_key(&b));
    }

    #[test]
    fn partition_ranges_commit_and_restart() {
        let mut p = PartitionState::starting_at(Some(10));
        assert!(!p.has_unflushed());
        p.next = Some(15);
        assert!(p.take_event(&[1; 32]) && !p.take_event(&[1; 32]));
        assert!(p.has_unflushed());
        p.begin_flush();
        assert_eq!((p.from, p.next), (Some(15), Some(15)));
        assert!(
            !p.has_unflushed() && p.ids.contains(&[1; 32]) && !p.take_event(&[1; 32]),
            "in flight, still a duplicate"
        );
        p.next = Some(17);
        assert!(p.take_event(&[5; 32]));
        p.flush_committed(10);
        assert!(p.ids.contains(&[1; 32]) && p.flushing.is_none());
        assert!(!p.take_event(&[1; 32]), "committed: a duplicate");
        assert!(
            p.has_unflushed() && p.ids.in_batch() == 1 && p.ids.contains(&[5; 32]),
            "the next batch stays"
        );
        p.begin_flush();
        p.flush_committed(10);
        p.next = Some(20);
        assert!(p.take_event(&[2; 32]));
        p.begin_flush();
        p.next = Some(22);
        assert!(p.take_event(&[3; 32]));
        assert!(p.restart_at(Some(15)), "a seek back");
        assert!(
            p.flushing.is_none() && !p.ids.contains(&[2; 32]) && !p.ids.contains(&[3; 32]),
            "a failed flush and the batch after it are forgotten"
        );
        assert_eq!(
            (p.from, p.next, p.seek_pending),
            (Some(15), Some(15), Some(Some(15)))
        );
        let mut fresh = PartitionState::starting_at(Some(3));
        assert!(!fresh.restart_at(Some(3)));
        assert_eq!(fresh.seek_pending, None, "already there: no seek");
        assert!(p.ids.in_batch() == 0 && p.ids.contains(&[1; 32]) && p.ids.contains(&[5; 32]));
        assert_eq!(p.ids.committed(), 2);
    }
}
