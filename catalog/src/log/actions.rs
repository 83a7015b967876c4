//! What a commit says: the [`Action`]s, the [`CommitInfo`] about who wrote it, and the
//! [`Commit`] record stored as one JSON object per version.
//!
//! All times are `i64` microseconds since the Unix epoch, UTC (the unit of Arrow's
//! `Timestamp(Microsecond)`), in fields named `*_ts` or `*_us`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::table::TableId;

/// The newest format number this build reads and writes. A reader refuses a higher one.
///
/// - 1: every action but `RemoveSnapshot`; checkpoints.
/// - 2: a commit with a `RemoveSnapshot`. Only such commits say 2, so a reader of format 1
///   keeps reading every other commit, and refuses one it would misread with an error that
///   says to upgrade.
pub const LOG_FORMAT: u32 = 2;

/// The format of checkpoints and of commits without a `RemoveSnapshot`.
pub(crate) const BASE_FORMAT: u32 = 1;

/// The format a commit of `actions` is written with: the lowest that holds them.
pub(crate) fn commit_format(actions: &[Action]) -> u32 {
    if actions
        .iter()
        .any(|a| matches!(a, Action::RemoveSnapshot(_)))
    {
        LOG_FORMAT
    } else {
        BASE_FORMAT
    }
}

/// A version of the catalog: the number of commits folded into it.
///
/// Version 0 is the empty catalog (nothing committed, no object); the first commit is
/// version 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct CatalogVersion(pub u64);

impl CatalogVersion {
    /// The empty catalog.
    pub const EMPTY: Self = Self(0);

    /// The version after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CatalogVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One change to the catalog. A commit is a list of them, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A Parquet change segment now holds history of a table.
    AddSegment(Segment),
    /// A segment no longer belongs to the table (retention, or replaced by a rewrite).
    RemoveSegment(SegmentRemoval),
    /// A snapshot: the table's full state at one instant.
    AddSnapshot(Snapshot),
    /// A snapshot no longer belongs to the table (thinned: see the query crate's
    /// `snapshot::snapshots_to_thin`). Its files stay until `strata gc` finds the removal
    /// older than its grace period.
    RemoveSnapshot(SnapshotRemoval),
    /// A table's schema from some instant on.
    SetSchema(SchemaVersion),
    /// Every change of a table with commit time <= `ts` is in the catalog.
    SetWatermark(Watermark),
    /// The Kafka records `[from_offset, to_offset)` of a partition are in this commit.
    ConsumeOffsets(OffsetRange),
    /// Input that could not be used; an operator must look at it.
    Quarantine(QuarantineEntry),
}

/// A Parquet file of changes to one table (`AddSegment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The table whose changes it holds.
    pub table: TableId,
    /// Object path relative to the store root.
    pub path: String,
    /// Number of change rows.
    pub rows: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Smallest key in the segment (opaque, order-preserving key encoding).
    pub min_key: String,
    /// Largest key in the segment.
    pub max_key: String,
    /// Earliest source commit time of a change in the segment (µs since epoch).
    pub min_commit_ts: i64,
    /// Latest source commit time of a change in the segment (µs since epoch).
    pub max_commit_ts: i64,
    /// Earliest source position (opaque, e.g. a PostgreSQL LSN).
    pub min_position: String,
    /// Latest source position.
    pub max_position: String,
    /// For a segment that replaces others (coalesced from small segments): the newest
    /// version among the versions that added their changes, i.e. the version by which every
    /// change it holds was in the catalog. `None` (the usual case): the version of the commit
    /// that adds it. See [`SegmentEntry::content_version`](crate::SegmentEntry::content_version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_version: Option<CatalogVersion>,
}

/// `RemoveSegment`: a segment leaves the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRemoval {
    /// The table.
    pub table: TableId,
    /// The segment's path as it was added.
    pub path: String,
}

/// The full state of a table at `as_of_ts` (`AddSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The table.
    pub table: TableId,
    /// Unique per table; committing the same id twice is a conflict.
    pub snapshot_id: String,
    /// The state at this instant, inclusive (µs since epoch).
    pub as_of_ts: i64,
    /// Its Parquet files, relative to the store root.
    pub paths: Vec<String>,
    /// Number of rows (live keys).
    pub rows: u64,
    /// Total size in bytes.
    pub bytes: u64,
    /// The catalog version whose segments were folded into it.
    pub built_from_version: CatalogVersion,
}

/// `RemoveSnapshot`: a snapshot leaves the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRemoval {
    /// The table.
    pub table: TableId,
    /// The snapshot's id as it was added.
    pub snapshot_id: String,
    /// Its files as it was added: gc keeps them while the removal is younger than its grace
    /// period (a query planned before the removal may still read them).
    pub paths: Vec<String>,
}

/// A table's schema from `effective_from_ts` on (`SetSchema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// The table.
    pub table: TableId,
    /// Unique per table; committing the same id twice is a conflict.
    pub schema_id: u64,
    /// First instant this schema applies to (µs since epoch).
    pub effective_from_ts: i64,
    /// An Arrow schema as JSON; the log does not interpret it.
    pub schema: serde_json::Value,
}

/// `SetWatermark`: all changes of `table` with commit time <= `ts` are in the catalog.
///
/// A table's watermark only moves forward: a lower value folds to the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The table.
    pub table: TableId,
    /// The instant (µs since epoch).
    pub ts: i64,
}

/// `ConsumeOffsets`: Kafka records `[from_offset, to_offset)` of one partition were consumed
/// by `group`, and what they held is in this commit. Afterwards the partition's next offset
/// is `to_offset`.
///
/// The conflict rule that keeps two consumers from double-counting: a commit may consume
/// `[from, to)` only if the catalog's next offset for (group, topic, partition) is `from`, or
/// if the catalog has none yet (the partition was never committed, any `from` is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// Consumer group.
    pub group: String,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// First offset consumed.
    pub from_offset: i64,
    /// One past the last offset consumed: the next offset to read.
    pub to_offset: i64,
}

/// `Quarantine`: input that could not be used, kept visible for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// What was quarantined.
    pub object: QuarantinedObject,
    /// Why.
    pub reason: String,
    /// When it was quarantined (µs since epoch).
    pub at_ts: i64,
}

/// What a [`QuarantineEntry`] points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuarantinedObject {
    /// An object in the store, relative to the store root.
    Object {
        /// Object path.
        path: String,
    },
    /// One Kafka record.
    KafkaRecord {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

/// Who made a commit and why; stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The writer (e.g. `compactor-3`), for the operator reading the log.
    pub writer_id: String,
    /// What it did (e.g. `compact`, `snapshot`, `retention`).
    pub operation: String,
    /// Anything else the application wants kept with the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<serde_json::Value>,
}

impl CommitInfo {
    /// Commit info without application metadata.
    pub fn new(writer_id: impl Into<String>, operation: impl Into<String>) -> Self {
        Self {
            writer_id: writer_id.into(),
            operation: operation.into(),
            app_metadata: None,
        }
    }

    /// With application metadata.
    #[must_use]
    pub fn with_app_metadata(mut self, app_metadata: serde_json::Value) -> Self {
        self.app_metadata = Some(app_metadata);
        self
    }
}

/// One commit as stored at `_catalog/log/<version>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// [`LOG_FORMAT`] of the writer.
    pub format: u32,
    /// The version this commit creates; must match the object's name.
    pub version: CatalogVersion,
    /// Random id of the commit attempt, the same across its retries: lets a writer whose
    /// write succeeded but whose reply was lost recognise its own commit.
    pub txn_id: String,
    /// Writer's wall clock when it wrote the commit (µs since epoch).
    pub wall_time_us: i64,
    /// Who and why.
    pub info: CommitInfo,
    /// The changes, applied in order.
    pub actions: Vec<Action>,
}

/// [`Commit`] by reference, to serialize without cloning the actions on every retry.
#[derive(Serialize)]
pub(crate) struct CommitRef<'a> {
    pub(crate) format: u32,
    pub(crate) version: CatalogVersion,
    pub(crate) txn_id: &'a str,
    pub(crate) wall_time_us: i64,
    pub(crate) info: &'a CommitInfo,
    pub(crate) actions: &'a [Action],
}

/// Rejects malformed actions before anything is written. State-dependent rules (offsets,
/// duplicates) are checked by [`CatalogState::check`](super::CatalogState).
pub(crate) fn validate_actions(actions: &[Action]) -> Result<()> {
    if actions.is_empty() {
        return Err(Error::EmptyCommit);
    }
    for (index, action) in actions.iter().enumerate() {
        validate_action(action).map_err(|reason| Error::InvalidAction { index, reason })?;
    }
    Ok(())
}

fn validate_action(action: &Action) -> Result<(), String> {
    let table_ok = |table: &TableId| table.validate().map_err(|e| e.to_string());
    match action {
        Action::AddSegment(s) => {
            table_ok(&s.table)?;
            if s.path.is_empty() {
                return Err("segment path is empty".into());
            }
            if s.min_commit_ts > s.max_commit_ts {
                return Err(format!(
                    "segment {}: min_commit_ts {} > max_commit_ts {}",
                    s.path, s.min_commit_ts, s.max_commit_ts
                ));
            }
        }
        Action::RemoveSegment(r) => {
            table_ok(&r.table)?;
            if r.path.is_empty() {
                return Err("segment path is empty".into());
            }
        }
        Action::AddSnapshot(s) => {
            table_ok(&s.table)?;
            if s.snapshot_id.is_empty() {
                return Err("snapshot_id is empty".into());
            }
            if s.paths.iter().any(String::is_empty) {
                return Err(format!("snapshot {} has an empty path", s.snapshot_id));
            }
        }
        Action::RemoveSnapshot(r) => {
            table_ok(&r.table)?;
            if r.snapshot_id.is_empty() {
                return Err("snapshot_id is empty".into());
            }
        }
        Action::SetSchema(s) => table_ok(&s.table)?,
        Action::SetWatermark(w) => table_ok(&w.table)?,
        Action::ConsumeOffsets(o) => {
            if o.group.is_empty() || o.topic.is_empty() {
                return Err("consumer group and topic must not be empty".into());
            }
            if o.partition < 0 {
                return Err(format!("partition {} is negative", o.partition));
            }
            if o.from_offset < 0 || o.from_offset > o.to_offset {
                return Err(format!(
                    "offset range [{}, {}) of {}/{} is not 0 <= from <= to",
                    o.from_offset, o.to_offset, o.topic, o.partition
                ));
            }
        }
        Action::Quarantine(q) => {
            if q.reason.is_empty() {
                return Err("quarantine needs a reason".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> TableId {
        TableId::new("pg-main", "public", "orders")
    }

    #[test]
    fn actions_are_tagged_snake_case_json() {
        let action = Action::ConsumeOffsets(OffsetRange {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
            from_offset: 5,
            to_offset: 9,
        });
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "consume_offsets", "group": "g", "topic": "t",
                "partition": 2, "from_offset": 5, "to_offset": 9
            })
        );
        let back: Action = serde_json::from_value(json).unwrap();
        assert_eq!(back, action);

        let q = Action::Quarantine(QuarantineEntry {
            object: QuarantinedObject::KafkaRecord {
                topic: "t".into(),
                partition: 0,
                offset: 7,
            },
            reason: "undecodable".into(),
            at_ts: 1,
        });
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["type"], "quarantine");
        assert_eq!(json["object"]["kind"], "kafka_record");
        assert_eq!(serde_json::from_value::<Action>(json).unwrap(), q);
    }

    #[test]
    fn validation_names_the_bad_action() {
        let good = Action::SetWatermark(Watermark {
            table: orders(),
            ts: 1,
        });
        let bad = Action::ConsumeOffsets(OffsetRange {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            from_offset: 10,
            to_offset: 3,
        });
        assert!(matches!(validate_actions(&[]), Err(Error::EmptyCommit)));
        assert!(validate_actions(std::slice::from_ref(&good)).is_ok());
        match validate_actions(&[good, bad]) {
            Err(Error::InvalidAction { index: 1, reason }) => assert!(reason.contains("[10, 3)")),
            other => panic!("unexpected {other:?}"),
        }
        let bad_table = Action::SetWatermark(Watermark {
            table: TableId::new("a", "", "c"),
            ts: 1,
        });
        assert!(matches!(
            validate_actions(&[bad_table]),
            Err(Error::InvalidAction { index: 0, .. })
        ));
    }
}
