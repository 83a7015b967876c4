//! Building history by hand, for tests and benchmarks: write change segments the way the
//! compactor does (sorted by key and position, zstd Parquet with statistics) and commit them
//! to a catalog with their table's schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use strata_catalog::{
    Action, Catalog, ChangeEvent, ColumnSchema, ColumnType, CommitInfo, ConnectType, Operation,
    Row, SchemaVersion, Segment, SourcePosition, TableId, TableSchema, events_to_record_batch,
};

use crate::error::{Error, Result};
use crate::read::object_path;

/// A table schema of plain columns (name, Connect type, part of the key); key columns are
/// required, the others optional.
pub fn table_schema(table: TableId, columns: &[(&str, ConnectType, bool)]) -> TableSchema {
    TableSchema {
        table,
        event_id_version: strata_catalog::EventIdVersion::CURRENT,
        columns: columns
            .iter()
            .map(|&(name, connect, key)| ColumnSchema {
                name: name.into(),
                column_type: ColumnType::plain(connect),
                optional: !key,
                key,
            })
            .collect(),
    }
}

/// Rows per row group, as the compactor's default.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

fn fail(table: &TableId, path: &str, reason: impl ToString) -> Error {
    Error::Segment {
        table: table.to_string(),
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// A fresh segment path relative to the catalog root.
pub fn segment_path(table: &TableId) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}/{}/{}/changes/{nanos:x}-{}.parquet",
        table.source,
        table.namespace,
        table.table,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Encodes one change-segment batch (already sorted by `_key`, `_commit_pos`, `_seq`) as
/// Parquet with the compactor's settings.
pub fn encode_batch(
    table: &TableId,
    batch: &RecordBatch,
    row_group_rows: usize,
) -> Result<Vec<u8>> {
    strata_catalog::encode_segment(batch, 3, row_group_rows).map_err(|e| fail(table, "", e))
}

/// Sorts `events` like the compactor and encodes them; returns the bytes and the catalog
/// entry (with a fresh path).
pub fn encode_segment(
    schema: &TableSchema,
    events: &[ChangeEvent],
    row_group_rows: usize,
) -> Result<(Vec<u8>, Segment)> {
    let table = &schema.table;
    let mut sorted: Vec<(String, &ChangeEvent)> =
        events.iter().map(|e| (e.sort_key(), e)).collect();
    sorted.sort_by(|a, b| (&a.0, a.1.position).cmp(&(&b.0, b.1.position)));
    let refs: Vec<&ChangeEvent> = sorted.iter().map(|(_, e)| *e).collect();
    let batch = events_to_record_batch(schema, &refs).map_err(|e| fail(table, "", e))?;
    let bytes = encode_batch(table, &batch, row_group_rows)?;
    let ts = || refs.iter().map(|e| e.commit_ts_us);
    let pos = || refs.iter().map(|e| e.position);
    let position = |p: Option<SourcePosition>| {
        let p = p.unwrap_or_default();
        format!("{:020}/{:020}", p.commit, p.seq)
    };
    let segment = Segment {
        table: table.clone(),
        path: segment_path(table),
        rows: refs.len() as u64,
        bytes: bytes.len() as u64,
        min_key: sorted.first().map(|s| s.0.clone()).unwrap_or_default(),
        max_key: sorted.last().map(|s| s.0.clone()).unwrap_or_default(),
        min_commit_ts: ts().min().unwrap_or_default(),
        max_commit_ts: ts().max().unwrap_or_default(),
        min_position: position(pos().min()),
        max_position: position(pos().max()),
        content_version: None,
    };
    Ok((bytes, segment))
}

/// Stores a segment's bytes at its path under `root`.
pub async fn put_segment(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
    segment: &Segment,
    bytes: Vec<u8>,
) -> Result<()> {
    let path = object_path(root, &segment.path);
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| fail(&segment.table, path.as_ref(), e))?;
    Ok(())
}

/// Commits `segments` of `schema`'s table, with a `SetSchema` first when the catalog's
/// latest schema of the table differs (effective from the segments' earliest change).
pub async fn commit_segments(
    catalog: &Catalog,
    schema: &TableSchema,
    segments: Vec<Segment>,
) -> Result<()> {
    let state = catalog.state();
    let schemas = state
        .table(&schema.table)
        .map(|t| t.schemas())
        .unwrap_or(&[]);
    let latest = schemas.iter().max_by_key(|s| s.schema_id);
    let mut actions = Vec::new();
    let same = latest
        .is_some_and(|s| TableSchema::from_catalog_json(&s.schema).ok().as_ref() == Some(schema));
    if !same {
        actions.push(Action::SetSchema(SchemaVersion {
            table: schema.table.clone(),
            schema_id: latest.map_or(1, |s| s.schema_id + 1),
            effective_from_ts: segments
                .iter()
                .map(|s| s.min_commit_ts)
                .min()
                .unwrap_or_default(),
            schema: schema.to_catalog_json(),
        }));
    }
    actions.extend(segments.into_iter().map(Action::AddSegment));
    catalog
        .commit(
            actions,
            CommitInfo::new("strata-query-testing", "add-segments"),
        )
        .await?;
    Ok(())
}

/// Encodes, stores and commits one segment of `events`; returns its catalog entry.
pub async fn add_segment(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    schema: &TableSchema,
    events: &[ChangeEvent],
) -> Result<Segment> {
    let (bytes, segment) = encode_segment(schema, events, ROW_GROUP_ROWS)?;
    put_segment(store, catalog.root(), &segment, bytes).await?;
    commit_segments(catalog, schema, vec![segment.clone()]).await?;
    Ok(segment)
}

/// An insert of `after` (whose `key` columns are the key) into `table`, committed at
/// `commit_ts_us`, the `seq`th change of the source transaction at `commit`.
pub fn insert(
    table: TableId,
    key: Row,
    after: Row,
    commit_ts_us: i64,
    (commit, seq): (u64, u64),
) -> ChangeEvent {
    ChangeEvent {
        table,
        op: Operation::Create,
        key,
        before: None,
        after: Some(after),
        unchanged: Vec::new(),
        commit_ts_us,
        position: SourcePosition { commit, seq },
        tx_id: None,
        origin: None,
    }
}
