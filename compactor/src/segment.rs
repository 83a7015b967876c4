//! Writing one change segment: sort, convert to Arrow, encode Parquet (zstd, row-group and
//! page statistics, sorting columns recorded), put under
//! `<root>/<source>/<namespace>/<table>/changes/<uuid>.parquet`.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use strata_catalog::{
    Segment, SegmentBuilder, SourcePosition, TableSchema, encode_segment_parallel,
};
use tracing::instrument;

use crate::batch::SegmentGroup;
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

/// Encodes the rows of `group` (one table, one schema, from several builders) as a sorted
/// Parquet segment, its columns on up to `threads` threads; returns the bytes and the
/// segment's catalog entry (path relative to the catalog root).
pub(crate) fn encode(
    group: SegmentGroup,
    row_group_rows: usize,
    zstd_level: i32,
    threads: usize,
) -> Result<(Vec<u8>, Segment)> {
    let schema = group.schema;
    let fail = |reason: String| Error::Segment {
        table: schema.table.to_string(),
        reason,
    };
    let (batch, span) = SegmentBuilder::finish_sorted_many(group.builders, threads)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no events".into()))?;
    let bytes = encode_segment_parallel(&batch, zstd_level, row_group_rows, threads)
        .map_err(|e| fail(e.to_string()))?;
    let segment = Segment {
        table: schema.table.clone(),
        path: segment_relative_path(&schema),
        rows: span.rows as u64,
        bytes: bytes.len() as u64,
        min_key: span.min_key,
        max_key: span.max_key,
        min_commit_ts: span.min_commit_ts,
        max_commit_ts: span.max_commit_ts,
        min_position: position_string(span.min_position),
        max_position: position_string(span.max_position),
        content_version: None,
    };
    Ok((bytes, segment))
}

/// Encodes (on a blocking thread) and stores one segment.
#[instrument(skip_all, fields(table = %group.schema.table, path))]
pub(crate) async fn write(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    group: SegmentGroup,
    row_group_rows: usize,
    zstd_level: i32,
    threads: usize,
) -> Result<Segment> {
    let table = group.schema.table.to_string();
    let (bytes, segment) =
        tokio::task::spawn_blocking(move || encode(group, row_group_rows, zstd_level, threads))
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
