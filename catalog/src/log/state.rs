//! [`CatalogState`]: the fold of every commit up to one version, and the read-side queries
//! on it.
//!
//! Folding ([`CatalogState::apply`]) is deterministic and never fails: whatever won a version
//! in the log is the truth. The rules a commit must satisfy to win are checked before it is
//! written ([`CatalogState::check`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::actions::{
    Action, CatalogVersion, OffsetRange, QuarantineEntry, QuarantinedObject, SchemaVersion,
    Segment, Snapshot,
};
use crate::error::ConflictKind;
use crate::table::TableId;

/// The catalog at one version: per table its segments, snapshots, schemas and watermark;
/// the next Kafka offset per (group, topic, partition); the quarantine list.
///
/// Cheap to share: [`Catalog::state`](crate::Catalog::state) hands out `Arc<CatalogState>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogState {
    pub(crate) version: CatalogVersion,
    pub(crate) tables: BTreeMap<TableId, TableState>,
    /// group -> topic -> partition -> next offset.
    pub(crate) offsets: BTreeMap<String, BTreeMap<String, BTreeMap<i32, i64>>>,
    pub(crate) quarantine: Vec<QuarantineEntry>,
}

/// What the catalog knows about one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    /// Live segments in the order they were committed.
    pub(crate) segments: Vec<SegmentEntry>,
    /// Snapshots ordered by `as_of_ts` (ties: commit order).
    pub(crate) snapshots: Vec<Snapshot>,
    /// Schemas ordered by `effective_from_ts` (ties: commit order).
    pub(crate) schemas: Vec<SchemaVersion>,
    pub(crate) watermark: Option<i64>,
    /// Paths of `segments`, for O(1) duplicate checks.
    pub(crate) live_paths: HashSet<String>,
}

/// A live segment and the version that added it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// The catalog version whose commit added the segment.
    pub added_in: CatalogVersion,
    /// The segment.
    #[serde(flatten)]
    pub segment: Segment,
}

impl SegmentEntry {
    /// The version by which every change the segment holds was in the catalog: the
    /// version that added it or, for a segment that replaces others, the newest version
    /// among theirs ([`Segment::content_version`], never later than `added_in`). A snapshot
    /// built from version `v` holds the changes of every segment whose content version is
    /// `<= v`.
    pub fn content_version(&self) -> CatalogVersion {
        self.segment
            .content_version
            .map_or(self.added_in, |v| v.min(self.added_in))
    }
}

impl TableState {
    /// Live segments, in commit order.
    pub fn segments(&self) -> &[SegmentEntry] {
        &self.segments
    }

    /// Snapshots, ordered by `as_of_ts`.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// Schema versions, ordered by `effective_from_ts`.
    pub fn schemas(&self) -> &[SchemaVersion] {
        &self.schemas
    }

    /// Every change with commit time <= this is in the catalog.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    fn push_segment(&mut self, added_in: CatalogVersion, segment: &Segment) {
        self.live_paths.insert(segment.path.clone());
        self.segments.push(SegmentEntry {
            added_in,
            segment: segment.clone(),
        });
    }
}

impl CatalogState {
    /// The version this state is the fold of (0: nothing committed).
    pub fn version(&self) -> CatalogVersion {
        self.version
    }

    /// Every table the catalog knows, in order.
    pub fn tables(&self) -> impl Iterator<Item = &TableId> {
        self.tables.keys()
    }

    /// Everything about one table.
    pub fn table(&self, table: &TableId) -> Option<&TableState> {
        self.tables.get(table)
    }

    /// A table's live segments, in commit order (empty for an unknown table).
    pub fn segments(&self, table: &TableId) -> &[SegmentEntry] {
        self.tables.get(table).map_or(&[], |t| &t.segments)
    }

    /// The segments of `table` that may hold changes committed in `[t1, t2]` (both
    /// inclusive): those whose `[min_commit_ts, max_commit_ts]` overlaps it. Commit order.
    pub fn segments_between(
        &self,
        table: &TableId,
        t1: i64,
        t2: i64,
    ) -> impl Iterator<Item = &SegmentEntry> {
        self.segments(table)
            .iter()
            .filter(move |e| e.segment.min_commit_ts <= t2 && e.segment.max_commit_ts >= t1)
    }

    /// The newest snapshot of `table` whose `as_of_ts <= t`: where a merge-on-read of the
    /// state at `t` starts.
    pub fn latest_snapshot_at_or_before(&self, table: &TableId, t: i64) -> Option<&Snapshot> {
        let snapshots = &self.tables.get(table)?.snapshots;
        let end = snapshots.partition_point(|s| s.as_of_ts <= t);
        end.checked_sub(1).map(|i| &snapshots[i])
    }

    /// The schema of `table` in force at `t`: the one with the latest `effective_from_ts <= t`.
    pub fn schema_at(&self, table: &TableId, t: i64) -> Option<&SchemaVersion> {
        let schemas = &self.tables.get(table)?.schemas;
        let end = schemas.partition_point(|s| s.effective_from_ts <= t);
        end.checked_sub(1).map(|i| &schemas[i])
    }

    /// Every change of `table` with commit time <= this is in the catalog.
    pub fn watermark(&self, table: &TableId) -> Option<i64> {
        self.tables.get(table)?.watermark
    }

    /// The next offset `group` reads from `topic`/`partition`; `None` if never committed.
    pub fn next_offset(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(group)?
            .get(topic)?
            .get(&partition)
            .copied()
    }

    /// Every (topic, partition, next offset) committed for `group`, in order.
    pub fn group_offsets(&self, group: &str) -> impl Iterator<Item = (&str, i32, i64)> {
        self.offsets.get(group).into_iter().flat_map(|topics| {
            topics.iter().flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |(partition, next)| (topic.as_str(), *partition, *next))
            })
        })
    }

    /// Quarantined input, in commit order.
    pub fn quarantine(&self) -> &[QuarantineEntry] {
        &self.quarantine
    }

    /// The store objects (paths relative to the root) in the quarantine, in commit order.
    pub fn quarantined_objects(&self) -> impl Iterator<Item = &str> {
        self.quarantine.iter().filter_map(|q| match &q.object {
            QuarantinedObject::Object { path } => Some(path.as_str()),
            QuarantinedObject::KafkaRecord { .. } => None,
        })
    }

    /// Checks the state-dependent commit rules for `actions` as if they were committed next,
    /// in order (so two ranges of one partition in one commit must chain).
    pub(crate) fn check(&self, actions: &[Action]) -> Result<(), ConflictKind> {
        let mut next_offsets: HashMap<(&str, &str, i32), i64> = HashMap::new();
        let mut snapshots: HashSet<(&TableId, &str)> = HashSet::new();
        let mut removed_snapshots: HashSet<(&TableId, &str)> = HashSet::new();
        let mut schemas: HashSet<(&TableId, u64)> = HashSet::new();
        let mut added: HashSet<(&TableId, &str)> = HashSet::new();
        let mut removed: HashSet<(&TableId, &str)> = HashSet::new();
        let is_live = |table: &TableId, path: &str| {
            self.tables
                .get(table)
                .is_some_and(|t| t.live_paths.contains(path))
        };

        for action in actions {
            match action {
                Action::ConsumeOffsets(o) => {
                    let key = (o.group.as_str(), o.topic.as_str(), o.partition);
                    let next = next_offsets
                        .get(&key)
                        .copied()
                        .or_else(|| self.next_offset(&o.group, &o.topic, o.partition));
                    if let Some(expected_from) = next
                        && expected_from != o.from_offset
                    {
                        return Err(ConflictKind::OffsetMismatch {
                            group: o.group.clone(),
                            topic: o.topic.clone(),
                            partition: o.partition,
                            expected_from,
                            from_offset: o.from_offset,
                        });
                    }
                    next_offsets.insert(key, o.to_offset);
                }
                Action::AddSnapshot(s) => {
                    let exists = self.tables.get(&s.table).is_some_and(|t| {
                        t.snapshots.iter().any(|x| x.snapshot_id == s.snapshot_id)
                    });
                    if exists || !snapshots.insert((&s.table, &s.snapshot_id)) {
                        return Err(ConflictKind::DuplicateSnapshot {
                            table: s.table.clone(),
                            snapshot_id: s.snapshot_id.clone(),
                        });
                    }
                }
                Action::RemoveSnapshot(r) => {
                    let live = self.tables.get(&r.table).is_some_and(|t| {
                        t.snapshots.iter().any(|x| x.snapshot_id == r.snapshot_id)
                    }) || snapshots.contains(&(&r.table, r.snapshot_id.as_str()));
                    if !live || !removed_snapshots.insert((&r.table, &r.snapshot_id)) {
                        return Err(ConflictKind::MissingSnapshot {
                            table: r.table.clone(),
                            snapshot_id: r.snapshot_id.clone(),
                        });
                    }
                }
                Action::SetSchema(s) => {
                    let exists = self
                        .tables
                        .get(&s.table)
                        .is_some_and(|t| t.schemas.iter().any(|x| x.schema_id == s.schema_id));
                    if exists || !schemas.insert((&s.table, s.schema_id)) {
                        return Err(ConflictKind::DuplicateSchema {
                            table: s.table.clone(),
                            schema_id: s.schema_id,
                        });
                    }
                }
                Action::AddSegment(s) => {
                    let key = (&s.table, s.path.as_str());
                    let live_before = is_live(&s.table, &s.path) && !removed.contains(&key);
                    if live_before || !added.insert(key) {
                        return Err(ConflictKind::DuplicateSegment {
                            table: s.table.clone(),
                            path: s.path.clone(),
                        });
                    }
                    if let Some(content) = s.content_version {
                        self.check_no_straddle(s, content, &removed, actions)?;
                    }
                }
                Action::RemoveSegment(r) => {
                    let key = (&r.table, r.path.as_str());
                    let live = (is_live(&r.table, &r.path) || added.contains(&key))
                        && !removed.contains(&key);
                    if !live {
                        return Err(ConflictKind::MissingSegment {
                            table: r.table.clone(),
                            path: r.path.clone(),
                        });
                    }
                    removed.insert(key);
                    added.remove(&key);
                }
                Action::SetWatermark(_) | Action::Quarantine(_) => {}
            }
        }
        Ok(())
    }

    /// A segment replacing the ones this commit removes (so far) of its table, holding
    /// changes up to `content`: no snapshot of the table, committed or in this commit, may
    /// have been built between the oldest and the newest of them.
    fn check_no_straddle(
        &self,
        segment: &Segment,
        content: CatalogVersion,
        removed: &HashSet<(&TableId, &str)>,
        actions: &[Action],
    ) -> Result<(), ConflictKind> {
        let Some(t) = self.tables.get(&segment.table) else {
            return Ok(());
        };
        let oldest = t
            .segments
            .iter()
            .filter(|e| removed.contains(&(&segment.table, e.segment.path.as_str())))
            .map(SegmentEntry::content_version)
            .min();
        let Some(oldest) = oldest else {
            return Ok(());
        };
        let in_commit = actions.iter().filter_map(|a| match a {
            Action::AddSnapshot(s) if s.table == segment.table => Some(s),
            _ => None,
        });
        match t
            .snapshots
            .iter()
            .chain(in_commit)
            .find(|s| oldest <= s.built_from_version && s.built_from_version < content)
        {
            Some(s) => Err(ConflictKind::StraddlesSnapshot {
                table: segment.table.clone(),
                snapshot_id: s.snapshot_id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Folds the commit that created `version` into this state.
    pub(crate) fn apply(&mut self, version: CatalogVersion, actions: &[Action]) {
        debug_assert_eq!(version, self.version.next(), "commits fold in order");
        self.version = version;
        // Removed segments leave `segments` in one pass per table (a coalescing commit
        // removes many), before an add of the same path and at the end.
        let mut removed: HashMap<TableId, HashSet<&str>> = HashMap::new();
        for action in actions {
            match action {
                Action::AddSegment(s) => {
                    let t = self.table_mut(&s.table);
                    if removed
                        .get(&s.table)
                        .is_some_and(|paths| paths.contains(s.path.as_str()))
                        && let Some(paths) = removed.remove(&s.table)
                    {
                        t.segments
                            .retain(|e| !paths.contains(e.segment.path.as_str()));
                    }
                    t.push_segment(version, s);
                }
                Action::RemoveSegment(r) => {
                    if let Some(t) = self.tables.get_mut(&r.table)
                        && t.live_paths.remove(&r.path)
                    {
                        removed
                            .entry(r.table.clone())
                            .or_default()
                            .insert(r.path.as_str());
                    }
                }
                Action::AddSnapshot(s) => {
                    let snapshots = &mut self.table_mut(&s.table).snapshots;
                    let at = snapshots.partition_point(|x| x.as_of_ts <= s.as_of_ts);
                    snapshots.insert(at, s.clone());
                }
                Action::RemoveSnapshot(r) => {
                    if let Some(t) = self.tables.get_mut(&r.table) {
                        t.snapshots.retain(|x| x.snapshot_id != r.snapshot_id);
                    }
                }
                Action::SetSchema(s) => {
                    let schemas = &mut self.table_mut(&s.table).schemas;
                    let at =
                        schemas.partition_point(|x| x.effective_from_ts <= s.effective_from_ts);
                    schemas.insert(at, s.clone());
                }
                Action::SetWatermark(w) => {
                    let t = self.table_mut(&w.table);
                    t.watermark = Some(t.watermark.map_or(w.ts, |cur| cur.max(w.ts)));
                }
                Action::ConsumeOffsets(o) => self.set_next_offset(o),
                Action::Quarantine(q) => self.quarantine.push(q.clone()),
            }
        }
        for (table, paths) in removed {
            if let Some(t) = self.tables.get_mut(&table) {
                t.segments
                    .retain(|e| !paths.contains(e.segment.path.as_str()));
            }
        }
    }

    fn table_mut(&mut self, table: &TableId) -> &mut TableState {
        // Avoid cloning the id on the hot path where the table exists.
        if !self.tables.contains_key(table) {
            self.tables.insert(table.clone(), TableState::default());
        }
        self.tables
            .get_mut(table)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn set_next_offset(&mut self, o: &OffsetRange) {
        self.offsets
            .entry(o.group.clone())
            .or_default()
            .entry(o.topic.clone())
            .or_default()
            .insert(o.partition, o.to_offset);
    }

    pub(crate) fn insert_offset(
        &mut self,
        group: String,
        topic: String,
        partition: i32,
        next: i64,
    ) {
        self.offsets
            .entry(group)
            .or_default()
            .entry(topic)
            .or_default()
            .insert(partition, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::actions::{SegmentRemoval, Watermark};

    fn orders() -> TableId {
        TableId::new("pg-main", "public", "orders")
    }

    fn segment(path: &str, min_ts: i64, max_ts: i64) -> Action {
        Action::AddSegment(Segment {
            table: orders(),
            path: path.into(),
            rows: 10,
            bytes: 100,
            min_key: "a".into(),
            max_key: "z".into(),
            min_commit_ts: min_ts,
            max_commit_ts: max_ts,
            min_position: "0/10".into(),
            max_position: "0/20".into(),
            content_version: None,
        })
    }

    fn consume(partition: i32, from: i64, to: i64) -> Action {
        Action::ConsumeOffsets(OffsetRange {
            group: "compactor".into(),
            topic: "orders".into(),
            partition,
            from_offset: from,
            to_offset: to,
        })
    }

    fn snapshot(id: &str, as_of_ts: i64) -> Action {
        Action::AddSnapshot(Snapshot {
            table: orders(),
            snapshot_id: id.into(),
            as_of_ts,
            paths: vec![format!("snapshots/{id}/part-0.parquet")],
            rows: 1,
            bytes: 1,
            built_from_version: CatalogVersion(1),
        })
    }

    fn schema(id: u64, from: i64) -> Action {
        Action::SetSchema(SchemaVersion {
            table: orders(),
            schema_id: id,
            effective_from_ts: from,
            schema: serde_json::json!({"fields": [], "id": id}),
        })
    }

    /// Checks then applies, like a commit that wins.
    fn commit(state: &mut CatalogState, actions: &[Action]) -> Result<(), ConflictKind> {
        state.check(actions)?;
        let next = state.version.next();
        state.apply(next, actions);
        Ok(())
    }

    #[test]
    fn folds_segments_and_answers_time_ranges() {
        let mut s = CatalogState::default();
        commit(&mut s, &[segment("a", 10, 20), segment("b", 21, 30)]).unwrap();
        commit(&mut s, &[segment("c", 31, 40)]).unwrap();
        assert_eq!(s.version(), CatalogVersion(2));
        let paths = |t1, t2| {
            s.segments_between(&orders(), t1, t2)
                .map(|e| e.segment.path.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(0, 9), Vec::<&str>::new());
        assert_eq!(paths(0, 10), ["a"]);
        assert_eq!(paths(20, 21), ["a", "b"]);
        assert_eq!(paths(25, 100), ["b", "c"]);
        assert_eq!(paths(41, 50), Vec::<&str>::new());
        assert_eq!(s.segments(&orders())[2].added_in, CatalogVersion(2));
        assert_eq!(s.tables().collect::<Vec<_>>(), [&orders()]);
        let other = TableId::new("x", "y", "z");
        assert_eq!(s.segments_between(&other, 0, 100).count(), 0);
    }

    #[test]
    fn remove_segment_drops_it_and_missing_removal_conflicts() {
        let mut s = CatalogState::default();
        commit(&mut s, &[segment("a", 1, 2), segment("b", 3, 4)]).unwrap();
        let remove = Action::RemoveSegment(SegmentRemoval {
            table: orders(),
            path: "a".into(),
        });
        commit(&mut s, std::slice::from_ref(&remove)).unwrap();
        assert_eq!(s.segments(&orders()).len(), 1);
        assert!(matches!(
            s.check(&[remove]),
            Err(ConflictKind::MissingSegment { .. })
        ));
        // Re-adding a removed path is allowed; adding a live one is not.
        commit(&mut s, &[segment("a", 1, 2)]).unwrap();
        assert!(matches!(
            s.check(&[segment("b", 3, 4)]),
            Err(ConflictKind::DuplicateSegment { .. })
        ));
        assert!(matches!(
            s.check(&[segment("n", 3, 4), segment("n", 3, 4)]),
            Err(ConflictKind::DuplicateSegment { .. })
        ));
    }

    #[test]
    fn a_rewrite_removes_many_segments_and_adds_one_in_one_commit() {
        let mut s = CatalogState::default();
        let paths = ["a", "b", "c", "d"];
        let adds: Vec<Action> = paths.iter().map(|p| segment(p, 1, 2)).collect();
        commit(&mut s, &adds).unwrap();
        commit(&mut s, &[segment("e", 3, 4)]).unwrap();
        let remove = |path: &str| {
            Action::RemoveSegment(SegmentRemoval {
                table: orders(),
                path: path.into(),
            })
        };
        let Action::AddSegment(mut merged) = segment("m", 1, 2) else {
            unreachable!()
        };
        merged.content_version = Some(CatalogVersion(1));
        let mut rewrite: Vec<Action> = ["a", "b", "d"].iter().map(|p| remove(p)).collect();
        rewrite.push(Action::AddSegment(merged));
        // A path removed and added again in the same commit stays, once.
        rewrite.push(remove("c"));
        rewrite.push(segment("c", 1, 2));
        commit(&mut s, &rewrite).unwrap();
        let live: Vec<(&str, CatalogVersion, CatalogVersion)> = s
            .segments(&orders())
            .iter()
            .map(|e| (e.segment.path.as_str(), e.added_in, e.content_version()))
            .collect();
        let v = CatalogVersion;
        assert_eq!(
            live,
            [("e", v(2), v(2)), ("m", v(3), v(1)), ("c", v(3), v(3))]
        );
        assert_eq!(s.table(&orders()).unwrap().live_paths.len(), 3);
    }

    #[test]
    fn a_rewrite_may_not_mix_segments_from_both_sides_of_a_snapshot_build() {
        let mut s = CatalogState::default();
        commit(&mut s, &[segment("a", 1, 2)]).unwrap(); // v1
        commit(&mut s, &[segment("b", 3, 4)]).unwrap(); // v2
        commit(&mut s, &[segment("c", 5, 6)]).unwrap(); // v3
        // A snapshot built from v2: it holds a and b, not c.
        let Action::AddSnapshot(mut snap) = snapshot("s", 4) else {
            unreachable!()
        };
        snap.built_from_version = CatalogVersion(2);
        commit(&mut s, &[Action::AddSnapshot(snap)]).unwrap(); // v4
        let remove = |path: &str| {
            Action::RemoveSegment(SegmentRemoval {
                table: orders(),
                path: path.into(),
            })
        };
        let merged = |content: u64| {
            let Action::AddSegment(mut m) = segment("m", 1, 6) else {
                unreachable!()
            };
            m.content_version = Some(CatalogVersion(content));
            Action::AddSegment(m)
        };
        assert!(matches!(
            s.check(&[remove("b"), remove("c"), merged(3)]),
            Err(ConflictKind::StraddlesSnapshot { snapshot_id, .. }) if snapshot_id == "s"
        ));
        // Both sides on their own are fine.
        s.check(&[remove("a"), remove("b"), merged(2)]).unwrap();
        commit(&mut s, &[remove("a"), remove("b"), merged(2)]).unwrap();
        // The merged segment's own content version counts when it is rewritten again.
        let Action::AddSegment(mut again) = segment("n", 1, 6) else {
            unreachable!()
        };
        again.content_version = Some(CatalogVersion(3));
        assert!(matches!(
            s.check(&[remove("m"), remove("c"), Action::AddSegment(again)]),
            Err(ConflictKind::StraddlesSnapshot { .. })
        ));
    }

    #[test]
    fn offsets_must_chain_and_absent_accepts_any_start() {
        let mut s = CatalogState::default();
        // Never committed: any start is accepted (a consumer may begin mid-topic).
        commit(&mut s, &[consume(0, 500, 510)]).unwrap();
        assert_eq!(s.next_offset("compactor", "orders", 0), Some(510));
        assert_eq!(s.next_offset("compactor", "orders", 1), None);
        assert_eq!(s.next_offset("other-group", "orders", 0), None);

        // A second consumer that also read from 500 is refused.
        let err = s.check(&[consume(0, 500, 520)]).unwrap_err();
        assert_eq!(
            err,
            ConflictKind::OffsetMismatch {
                group: "compactor".into(),
                topic: "orders".into(),
                partition: 0,
                expected_from: 510,
                from_offset: 500,
            }
        );
        // A gap is refused too.
        assert!(s.check(&[consume(0, 511, 520)]).is_err());
        // Chaining inside one commit works; a broken chain inside one commit does not.
        commit(&mut s, &[consume(0, 510, 515), consume(0, 515, 530)]).unwrap();
        assert!(
            s.check(&[consume(0, 530, 540), consume(0, 530, 541)])
                .is_err()
        );
        assert_eq!(s.next_offset("compactor", "orders", 0), Some(530));
        // Other partitions are independent.
        commit(&mut s, &[consume(1, 0, 3)]).unwrap();
        assert_eq!(
            s.group_offsets("compactor").collect::<Vec<_>>(),
            [("orders", 0, 530), ("orders", 1, 3)]
        );
    }

    #[test]
    fn snapshots_and_schemas_by_time_and_unique_ids() {
        let mut s = CatalogState::default();
        commit(&mut s, &[snapshot("s2", 200), snapshot("s1", 100)]).unwrap();
        commit(&mut s, &[schema(1, 0), schema(2, 150)]).unwrap();
        let snap = |t| {
            s.latest_snapshot_at_or_before(&orders(), t)
                .map(|x| x.snapshot_id.as_str())
        };
        assert_eq!(snap(99), None);
        assert_eq!(snap(100), Some("s1"));
        assert_eq!(snap(199), Some("s1"));
        assert_eq!(snap(i64::MAX), Some("s2"));
        let schema_id = |t| s.schema_at(&orders(), t).map(|x| x.schema_id);
        assert_eq!(schema_id(-1), None);
        assert_eq!(schema_id(0), Some(1));
        assert_eq!(schema_id(149), Some(1));
        assert_eq!(schema_id(150), Some(2));

        assert!(matches!(
            s.check(&[snapshot("s1", 300)]),
            Err(ConflictKind::DuplicateSnapshot { .. })
        ));
        assert!(matches!(
            s.check(&[snapshot("s3", 300), snapshot("s3", 301)]),
            Err(ConflictKind::DuplicateSnapshot { .. })
        ));
        assert!(matches!(
            s.check(&[schema(2, 400)]),
            Err(ConflictKind::DuplicateSchema { schema_id: 2, .. })
        ));
        // A failed check changes nothing.
        assert_eq!(s.version(), CatalogVersion(2));
    }

    fn remove_snapshot(id: &str) -> Action {
        Action::RemoveSnapshot(crate::log::actions::SnapshotRemoval {
            table: orders(),
            snapshot_id: id.into(),
            paths: vec![format!("snapshots/{id}/part-0.parquet")],
        })
    }

    #[test]
    fn a_removed_snapshot_is_no_longer_read_from_and_is_removed_once() {
        let mut s = CatalogState::default();
        commit(&mut s, &[snapshot("s1", 100), snapshot("s2", 200)]).unwrap();
        commit(&mut s, &[remove_snapshot("s1")]).unwrap();
        let snap = |s: &CatalogState, t| {
            s.latest_snapshot_at_or_before(&orders(), t)
                .map(|x| x.snapshot_id.clone())
        };
        // A read at 150 now starts from the whole history, one at 200 still from s2.
        assert_eq!(snap(&s, 150), None);
        assert_eq!(snap(&s, 250).as_deref(), Some("s2"));
        assert_eq!(s.table(&orders()).unwrap().snapshots().len(), 1);
        // Someone removed it first: a conflict naming it; so is removing it twice at once.
        for actions in [
            vec![remove_snapshot("s1")],
            vec![remove_snapshot("s2"), remove_snapshot("s2")],
            vec![remove_snapshot("never")],
        ] {
            assert!(
                matches!(
                    s.check(&actions),
                    Err(ConflictKind::MissingSnapshot { ref snapshot_id, .. })
                        if snapshot_id == "s1" || snapshot_id == "s2" || snapshot_id == "never"
                ),
                "{actions:?}"
            );
        }
        // Added and removed in one commit: allowed, and it leaves no snapshot behind.
        commit(&mut s, &[snapshot("s3", 300), remove_snapshot("s3")]).unwrap();
        assert_eq!(snap(&s, i64::MAX).as_deref(), Some("s2"));
    }

    #[test]
    fn watermark_only_moves_forward_and_quarantine_accumulates() {
        let mut s = CatalogState::default();
        let wm = |ts| {
            Action::SetWatermark(Watermark {
                table: orders(),
                ts,
            })
        };
        commit(&mut s, &[wm(100)]).unwrap();
        commit(&mut s, &[wm(50)]).unwrap();
        assert_eq!(s.watermark(&orders()), Some(100));
        commit(&mut s, &[wm(150)]).unwrap();
        assert_eq!(s.watermark(&orders()), Some(150));

        let q = Action::Quarantine(QuarantineEntry {
            object: QuarantinedObject::Object {
                path: "bad.parquet".into(),
            },
            reason: "truncated".into(),
            at_ts: 7,
        });
        commit(&mut s, &[q.clone(), q]).unwrap();
        assert_eq!(s.quarantine().len(), 2);
    }
}
