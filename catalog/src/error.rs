//! The crate's one [`Error`] type.
//!
//! Variants carry what an operator needs to find the problem (path, version, table,
//! partition). Outcomes a caller acts on have their own variant: [`Error::Conflict`] (reload
//! the catalog, drop or replay the batch), [`Error::VersionConflict`] (too much contention:
//! retry later).

use std::fmt;

use crate::log::CatalogVersion;
use crate::table::TableId;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The commit contradicts what other writers committed first. It was not written.
    ///
    /// The caller must reload ([`Catalog::refresh`](crate::Catalog::refresh)) and decide
    /// again: a compactor that lost its partition drops its batch; one that still owns it
    /// replays from the catalog's offset.
    #[error("commit conflicts with the catalog at version {version}: {conflict}")]
    Conflict {
        /// The catalog version the commit was checked against.
        version: CatalogVersion,
        /// What conflicted.
        conflict: ConflictKind,
    },

    /// Other writers won the race for the next version every time, `attempts` times in a row.
    /// Nothing was written; retrying later is safe.
    #[error(
        "gave up after {attempts} attempts: other writers kept taking the next version \
         (catalog at version {version})"
    )]
    VersionConflict {
        /// How many versions were tried.
        attempts: u32,
        /// The latest version seen.
        version: CatalogVersion,
    },

    /// A commit object exists but cannot be read as a commit of that version.
    #[error("corrupt commit {path} (version {version}): {reason}")]
    CorruptCommit {
        /// Object path of the commit.
        path: String,
        /// The version its name claims.
        version: CatalogVersion,
        /// What is wrong with it.
        reason: String,
    },

    /// A checkpoint object exists but cannot be read. Opening falls back to an older
    /// checkpoint or to replaying the log; this variant surfaces only where no fallback exists.
    #[error("corrupt checkpoint {path} (version {version}): {reason}")]
    CorruptCheckpoint {
        /// Object path of the checkpoint.
        path: String,
        /// The version its name claims.
        version: CatalogVersion,
        /// What is wrong with it.
        reason: String,
    },

    /// The log has a hole: a later version exists but this one does not.
    #[error("commit log has a gap: version {version} is missing (expected at {path})")]
    MissingCommit {
        /// Where the missing commit should be.
        path: String,
        /// The missing version.
        version: CatalogVersion,
    },

    /// A commit asked for by version does not exist (yet).
    #[error("no commit at version {version} ({path})")]
    CommitNotFound {
        /// Where it would be.
        path: String,
        /// The version asked for.
        version: CatalogVersion,
    },

    /// The object was written by a newer strata with a format this build cannot read.
    #[error("{path} has format {found}; this build reads format {supported}")]
    UnsupportedFormat {
        /// Object path.
        path: String,
        /// Format found in the object.
        found: u32,
        /// Format this build reads and writes.
        supported: u32,
    },

    /// The commit was refused before anything was written: an action is malformed.
    #[error("invalid action #{index} in commit: {reason}")]
    InvalidAction {
        /// Position of the action in the commit (0-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },

    /// A commit with no actions.
    #[error("a commit needs at least one action")]
    EmptyCommit,

    /// A [`CatalogConfig`](crate::CatalogConfig) value is out of range.
    #[error("invalid catalog config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },

    /// A table id that is not `source/namespace/table` with non-empty parts.
    #[error("invalid table id {input:?}: {reason}")]
    InvalidTableId {
        /// The text or id given.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The object store failed.
    #[error("object store {operation} {path}: {source}")]
    ObjectStore {
        /// `get`, `put`, `list`.
        operation: &'static str,
        /// Path or prefix involved.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// Encoding a commit or checkpoint failed (a bug, not bad input).
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    /// True for [`Error::Conflict`]: the catalog moved in a way that contradicts the commit.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    pub(crate) fn store(
        operation: &'static str,
        path: impl fmt::Display,
        source: object_store::Error,
    ) -> Self {
        Self::ObjectStore {
            operation,
            path: path.to_string(),
            source,
        }
    }
}

/// What a refused commit conflicted with; see [`Error::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// `ConsumeOffsets` starts somewhere other than where the catalog says this partition's
    /// next offset is: another consumer committed this partition first.
    OffsetMismatch {
        /// Consumer group.
        group: String,
        /// Kafka topic.
        topic: String,
        /// Kafka partition.
        partition: i32,
        /// The catalog's next offset for the partition.
        expected_from: i64,
        /// The `from_offset` the commit claimed.
        from_offset: i64,
    },
    /// A snapshot with this id is already committed for the table.
    DuplicateSnapshot {
        /// The table.
        table: TableId,
        /// The snapshot id.
        snapshot_id: String,
    },
    /// A schema with this id is already committed for the table.
    DuplicateSchema {
        /// The table.
        table: TableId,
        /// The schema id.
        schema_id: u64,
    },
    /// A segment with this path is already live for the table.
    DuplicateSegment {
        /// The table.
        table: TableId,
        /// The segment path.
        path: String,
    },
    /// `RemoveSegment` of a segment that is not live (someone removed it first).
    MissingSegment {
        /// The table.
        table: TableId,
        /// The segment path.
        path: String,
    },
    /// `RemoveSnapshot` of a snapshot that is not live (someone removed it first).
    MissingSnapshot {
        /// The table.
        table: TableId,
        /// The snapshot.
        snapshot_id: String,
    },
    /// A segment replacing others (`content_version` set) whose sources lie on both sides of
    /// a snapshot's `built_from_version`: it would make that snapshot look incomplete.
    StraddlesSnapshot {
        /// The table.
        table: TableId,
        /// The snapshot.
        snapshot_id: String,
    },
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OffsetMismatch {
                group,
                topic,
                partition,
                expected_from,
                from_offset,
            } => write!(
                f,
                "group {group} topic {topic} partition {partition}: next offset is \
                 {expected_from}, commit consumes from {from_offset}"
            ),
            Self::DuplicateSnapshot { table, snapshot_id } => {
                write!(f, "table {table} already has snapshot {snapshot_id}")
            }
            Self::DuplicateSchema { table, schema_id } => {
                write!(f, "table {table} already has schema {schema_id}")
            }
            Self::DuplicateSegment { table, path } => {
                write!(f, "table {table} already has segment {path}")
            }
            Self::MissingSegment { table, path } => {
                write!(f, "table {table} has no live segment {path}")
            }
            Self::MissingSnapshot { table, snapshot_id } => {
                write!(f, "table {table} has no live snapshot {snapshot_id}")
            }
            Self::StraddlesSnapshot { table, snapshot_id } => write!(
                f,
                "a new segment of table {table} replaces segments from both sides of \
                 snapshot {snapshot_id}'s build"
            ),
        }
    }
}
