//! Writing one change segment: sort, convert to Arrow, encode Parquet (zstd, row-group and
//! page statistics, sorting columns recorded), put under
//! `<root>/<source>/<namespace>/<table>/changes/<uuid>.parquet`.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_catalog::{
    ChangeEvent, Segment, SourcePosition, TableSchema, encode_segment, events_to_record_batch_with,
};
use tracing::instrument;

use crate::error::{Error, Result};

/// The `Segment` position string: commit and change position, zero-padded so that the
/// text sorts like the positions.
pub fn position_string(position: SourcePosition) -> String {
    format!("{:020}/{:020}", position.commit, position.seq)
}

/// Segment paths relative to the catalog root: `<source>/<namespace>/<table>/changes/<uuid>.parquet`.
pub(crate) fn segment_relative_path(schema: &TableSchema) -> String {
    let t = &schema.table;
    format!(
        "{}/{}/{}/changes/{}.parquet",
        t.source,
        t.namespace,
        t.table,
        uuid::Uuid::new_v4()
    )
}

/// Encodes `events` (one table, one schema; `ids` their event ids) as a sorted Parquet
/// segment; returns the bytes and the segment's catalog entry (path relative to the catalog
/// root).
pub(crate) fn encode(
    schema: &TableSchema,
    events: &[ChangeEvent],
    ids: &[[u8; 32]],
    row_group_rows: usize,
    zstd_level: i32,
) -> Result<(Vec<u8>, Segment)> {
    let fail = |reason: String| Error::Segment {
        table: schema.table.to_string(),
        reason,
    };
    if events.is_empty() {
        return Err(fail("no events".into()));
    }
    let mut keyed: Vec<(String, &ChangeEvent, [u8; 32])> = events
        .iter()
        .zip(ids)
        .map(|(e, id)| (e.sort_key(), e, *id))
        .collect();
    keyed.sort_by(|a, b| (&a.0, a.1.position).cmp(&(&b.0, b.1.position)));
    let refs: Vec<&ChangeEvent> = keyed.iter().map(|(_, e, _)| *e).collect();
    let sorted_ids: Vec<[u8; 32]> = keyed.iter().map(|(_, _, id)| *id).collect();
    let sorted_keys: Vec<&str> = keyed.iter().map(|(key, _, _)| key.as_str()).collect();
    let batch = events_to_record_batch_with(schema, &refs, &sorted_ids, &sorted_keys)
        .map_err(|e| fail(e.to_string()))?;

    let bytes =
        encode_segment(&batch, zstd_level, row_group_rows).map_err(|e| fail(e.to_string()))?;

    let (first, last) = match (keyed.first(), keyed.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(fail("no events".into())),
    };
    let min_ts = refs
        .iter()
        .map(|e| e.commit_ts_us)
        .min()
        .unwrap_or_default();
    let max_ts = refs
        .iter()
        .map(|e| e.commit_ts_us)
        .max()
        .unwrap_or_default();
    let min_pos = refs.iter().map(|e| e.position).min().unwrap_or_default();
    let max_pos = refs.iter().map(|e| e.position).max().unwrap_or_default();
    let segment = Segment {
        table: schema.table.clone(),
        path: segment_relative_path(schema),
        rows: refs.len() as u64,
        bytes: bytes.len() as u64,
        min_key: first.0.clone(),
        max_key: last.0.clone(),
        min_commit_ts: min_ts,
        max_commit_ts: max_ts,
        min_position: position_string(min_pos),
        max_position: position_string(max_pos),
    };
    Ok((bytes, segment))
}

/// Encodes (on a blocking thread) and stores one segment.
#[instrument(skip_all, fields(table = %schema.table, rows = events.len(), path))]
pub(crate) async fn write(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    schema: Arc<TableSchema>,
    events: Vec<ChangeEvent>,
    ids: Vec<[u8; 32]>,
    row_group_rows: usize,
    zstd_level: i32,
) -> Result<Segment> {
    let table = schema.table.to_string();
    let (bytes, segment) = tokio::task::spawn_blocking(move || {
        encode(&schema, &events, &ids, row_group_rows, zstd_level)
    })
    .await
    .map_err(|e| Error::Segment {
        table,
        reason: format!("encoder task failed: {e}"),
    })??;
    let path = object_path(root, &segment.path);
    tracing::Span::current().record("path", path.as_ref());
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|source| Error::Store {
            operation: "put",
            path: path.to_string(),
            source,
        })?;
    Ok(segment)
}

/// The object path of a path relative to the catalog root.
pub fn object_path(root: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .fold(root.clone(), |path, part| path.join(part))
}
