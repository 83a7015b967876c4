//! Checkpoints: the whole [`CatalogState`] at one version, as zstd-compressed JSON, so that
//! opening the catalog reads one checkpoint plus a short tail of commits instead of the
//! whole log.
//!
//! A checkpoint is derived data: it can always be rebuilt from the log, and a corrupt one
//! is skipped in favour of an older one (or a full replay).

use serde::{Deserialize, Serialize};

use super::actions::{
    BASE_FORMAT, CatalogVersion, LOG_FORMAT, QuarantineEntry, SchemaVersion, Snapshot,
};
use super::state::{CatalogState, SegmentEntry, TableState};
use crate::error::{Error, Result};
use crate::table::TableId;

/// zstd level for checkpoints: fast, and JSON compresses well at any level.
const ZSTD_LEVEL: i32 = 3;

/// The hint object `_catalog/_last_checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastCheckpoint {
    pub(crate) version: CatalogVersion,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    format: u32,
    version: CatalogVersion,
    tables: Vec<CheckpointTable>,
    offsets: Vec<CheckpointOffset>,
    quarantine: Vec<QuarantineEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointTable {
    table: TableId,
    segments: Vec<SegmentEntry>,
    snapshots: Vec<Snapshot>,
    schemas: Vec<SchemaVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watermark: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointOffset {
    group: String,
    topic: String,
    partition: i32,
    next_offset: i64,
}

/// Serializes and compresses `state`.
pub(crate) fn encode(state: &CatalogState) -> Result<Vec<u8>> {
    let file = CheckpointFile {
        format: BASE_FORMAT,
        version: state.version,
        tables: state
            .tables
            .iter()
            .map(|(table, t)| CheckpointTable {
                table: table.clone(),
                segments: t.segments.clone(),
                snapshots: t.snapshots.clone(),
                schemas: t.schemas.clone(),
                watermark: t.watermark,
            })
            .collect(),
        offsets: state
            .offsets
            .iter()
            .flat_map(|(group, topics)| {
                topics.iter().flat_map(move |(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |(partition, next)| CheckpointOffset {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            next_offset: *next,
                        })
                })
            })
            .collect(),
        quarantine: state.quarantine.clone(),
    };
    let json = serde_json::to_vec(&file).map_err(|e| Error::Encode {
        what: "checkpoint",
        reason: e.to_string(),
    })?;
    zstd::encode_all(json.as_slice(), ZSTD_LEVEL).map_err(|e| Error::Encode {
        what: "checkpoint",
        reason: e.to_string(),
    })
}

/// Decompresses and parses a checkpoint that claims to be `version`, stored at `path`.
pub(crate) fn decode(bytes: &[u8], version: CatalogVersion, path: &str) -> Result<CatalogState> {
    let corrupt = |reason: String| Error::CorruptCheckpoint {
        path: path.to_owned(),
        version,
        reason,
    };
    let json = zstd::decode_all(bytes).map_err(|e| corrupt(format!("zstd: {e}")))?;
    // Read the format first so a newer writer's file says "upgrade", not "corrupt".
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let Format { format } =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("json: {e}")))?;
    if format > LOG_FORMAT {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found: format,
            supported: LOG_FORMAT,
        });
    }
    let file: CheckpointFile =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("json: {e}")))?;
    if file.version != version {
        return Err(corrupt(format!("holds version {}", file.version)));
    }

    let mut state = CatalogState {
        version,
        ..CatalogState::default()
    };
    for t in file.tables {
        let live_paths = t.segments.iter().map(|e| e.segment.path.clone()).collect();
        let table = TableState {
            segments: t.segments,
            snapshots: t.snapshots,
            schemas: t.schemas,
            watermark: t.watermark,
            live_paths,
        };
        if state.tables.insert(t.table.clone(), table).is_some() {
            return Err(corrupt(format!("table {} appears twice", t.table)));
        }
    }
    for o in file.offsets {
        state.insert_offset(o.group, o.topic, o.partition, o.next_offset);
    }
    state.quarantine = file.quarantine;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::actions::{Action, OffsetRange, QuarantinedObject, Segment, Watermark};

    #[test]
    fn round_trips_a_state() {
        let table = TableId::new("pg-main", "public", "orders");
        let mut state = CatalogState::default();
        state.apply(
            CatalogVersion(1),
            &[
                Action::AddSegment(Segment {
                    table: table.clone(),
                    path: "p/1.parquet".into(),
                    rows: 3,
                    bytes: 300,
                    min_key: "a".into(),
                    max_key: "c".into(),
                    min_commit_ts: 1,
                    max_commit_ts: 2,
                    min_position: "0/1".into(),
                    max_position: "0/2".into(),
                    content_version: None,
                }),
                Action::SetWatermark(Watermark {
                    table: table.clone(),
                    ts: 2,
                }),
                Action::ConsumeOffsets(OffsetRange {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 3,
                    from_offset: 0,
                    to_offset: 9,
                }),
                Action::Quarantine(QuarantineEntry {
                    object: QuarantinedObject::Object { path: "x".into() },
                    reason: "bad".into(),
                    at_ts: 1,
                }),
            ],
        );
        let bytes = encode(&state).unwrap();
        let back = decode(&bytes, CatalogVersion(1), "cp").unwrap();
        assert_eq!(back, state);

        assert!(matches!(
            decode(&bytes, CatalogVersion(2), "cp"),
            Err(Error::CorruptCheckpoint { .. })
        ));
        assert!(matches!(
            decode(b"garbage", CatalogVersion(1), "cp"),
            Err(Error::CorruptCheckpoint { .. })
        ));
    }

    #[test]
    fn newer_format_says_unsupported() {
        let json = serde_json::json!({"format": LOG_FORMAT + 1, "whatever": true});
        let bytes = zstd::encode_all(json.to_string().as_bytes(), 1).unwrap();
        assert!(matches!(
            decode(&bytes, CatalogVersion(1), "cp"),
            Err(Error::UnsupportedFormat { .. })
        ));
    }
}
