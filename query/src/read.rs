//! Reading one change segment from the object store with the parquet crate's async reader:
//! projection push-down (only the columns a query needs), row-group pruning on the
//! `_commit_ts` statistics (and on `_key` when the query names keys), and a row filter
//! that keeps only the changes in the time range (and of the keys) asked for.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, RecordBatch, StringArray, new_null_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimestampMicrosecondType};
use futures::TryStreamExt as _;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
// `ParquetObjectReader` is deprecated in parquet 59.3 in favour of a hand-written
// `AsyncFileReader`; it is still the object_store reader datafusion 55 uses.
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use strata_catalog::schema::{
    COMMIT_TS_COLUMN, EVENT_ID_COLUMN, KEY_COLUMN, OP_COLUMN, UNCHANGED_COLUMN, system_fields,
};
use strata_catalog::{Segment, TableId};

use crate::error::{Error, Result};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

/// What to read from a segment.
#[derive(Debug, Clone)]
pub(crate) struct ReadSpec {
    /// Keep changes with `_commit_ts > after` (exclusive); `None`: no lower bound.
    pub(crate) after: Option<i64>,
    /// Keep changes with `_commit_ts <= until` (inclusive).
    pub(crate) until: i64,
    /// Keep only these `_key`s (and truncates); `None`: every key.
    pub(crate) keys: Option<Arc<BTreeSet<String>>>,
    /// The system columns to return, in this order.
    pub(crate) system: Vec<&'static str>,
    /// The table columns to return (name and type), after the system columns. A column a
    /// segment lacks (an older schema) reads as NULL; another type is cast.
    pub(crate) columns: Vec<FieldRef>,
}

impl ReadSpec {
    /// The schema of the batches [`read_segment`] returns.
    pub(crate) fn output_schema(&self) -> SchemaRef {
        let system = system_fields();
        let mut fields: Vec<FieldRef> = self
            .system
            .iter()
            .filter_map(|name| system.iter().find(|f| f.name() == name))
            // Not read where no copies can be (`FileRef::ids`): NULL.
            .map(|f| {
                Arc::new(
                    f.clone()
                        .with_nullable(f.is_nullable() || f.name() == EVENT_ID_COLUMN),
                )
            })
            .collect();
        fields.extend(self.columns.iter().cloned());
        Arc::new(Schema::new(fields))
    }
}

/// The object path of a segment path relative to the catalog root.
pub(crate) fn object_path(root: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .fold(root.clone(), |path, part| path.join(part))
}

/// Does the segment as a whole possibly hold a change the spec wants?
pub(crate) fn segment_may_match(segment: &Segment, spec: &ReadSpec) -> bool {
    if segment.min_commit_ts > spec.until {
        return false;
    }
    if let Some(after) = spec.after
        && segment.max_commit_ts <= after
    {
        return false;
    }
    match &spec.keys {
        None => true,
        Some(keys) => key_range_may_match(keys, &segment.min_key, &segment.max_key),
    }
}

/// A truncate has the empty key, the smallest string: a range starting at "" may hold one.
fn key_range_may_match(keys: &BTreeSet<String>, min: &str, max: &str) -> bool {
    min.is_empty() || (min <= max && keys.range(min.to_owned()..=max.to_owned()).next().is_some())
}

/// One Parquet file to read: a change segment or a part of a snapshot (both have the
/// change-segment schema).
#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    /// Path relative to the catalog root.
    pub(crate) path: String,
    /// Size in bytes, when the catalog knows it (saves a HEAD request).
    pub(crate) bytes: Option<u64>,
    /// The file's source positions (min, max), when the catalog knows them.
    pub(crate) positions: Option<(String, String)>,
    /// Read `_event_id` (else it reads as NULL): only needed where another file read with
    /// it may hold copies of the same changes, see [`mark_copies`].
    pub(crate) ids: bool,
}

impl From<&Segment> for FileRef {
    fn from(segment: &Segment) -> Self {
        Self {
            path: segment.path.clone(),
            bytes: (segment.bytes > 0).then_some(segment.bytes),
            positions: Some((segment.min_position.clone(), segment.max_position.clone())),
            ids: true,
        }
    }
}

/// Copies of a change (replica copies, a replayed batch) share its source position, and one
/// change segment never holds two copies (the compactor drops them within a batch). So a
/// segment's event ids only matter when its position range overlaps another segment's: the
/// others skip decoding 32 bytes a row. A file without known positions keeps its ids.
pub(crate) fn mark_copies(files: &mut [FileRef]) {
    let mut ranged: Vec<(usize, &str, &str)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            f.positions
                .as_ref()
                .map(|(lo, hi)| (i, lo.as_str(), hi.as_str()))
        })
        .collect();
    ranged.sort_by(|a, b| a.1.cmp(b.1));
    let mut overlapping = vec![false; files.len()];
    // Sweep by start: a range overlaps an earlier one iff it starts at or before the
    // furthest end seen so far.
    let mut furthest: Option<(&str, usize)> = None;
    for &(i, lo, hi) in &ranged {
        if let Some((end, owner)) = furthest
            && lo <= end
        {
            overlapping[i] = true;
            overlapping[owner] = true;
        }
        if furthest.is_none_or(|(end, _)| hi > end) {
            furthest = Some((hi, i));
        }
    }
    for (i, file) in files.iter_mut().enumerate() {
        if file.positions.is_some() {
            file.ids = overlapping[i];
        }
    }
}

/// Reads the changes of one segment (or snapshot part) that `spec` asks for, as batches of
/// [`ReadSpec::output_schema`].
pub(crate) async fn read_segment(
    store: Arc<dyn ObjectStore>,
    root: Path,
    table: TableId,
    file: FileRef,
    spec: Arc<ReadSpec>,
) -> Result<Vec<RecordBatch>> {
    let path = object_path(&root, &file.path);
    let fail = |reason: String| Error::Segment {
        table: table.to_string(),
        path: path.to_string(),
        reason,
    };
    #[allow(deprecated)]
    let mut reader = ParquetObjectReader::new(store, path.clone());
    if let Some(bytes) = file.bytes {
        reader = reader.with_file_size(bytes);
    }
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let file_schema = Arc::clone(builder.schema());
    let parquet_schema = builder.parquet_schema().clone();
    let metadata = Arc::clone(builder.metadata());

    let root_index = |name: &str| file_schema.index_of(name).ok();
    let (row_groups, all_inside) = prune_row_groups(&metadata, &spec);
    let mut roots = Vec::new();
    for name in &spec.system {
        let index = root_index(name)
            .ok_or_else(|| fail(format!("not a change segment: no `{name}` column")))?;
        let skip = match *name {
            EVENT_ID_COLUMN => !file.ids,
            UNCHANGED_COLUMN => no_unchanged(&metadata, &row_groups),
            _ => false,
        };
        if !skip {
            roots.push(index);
        }
    }
    for field in &spec.columns {
        if let Some(i) = root_index(field.name()) {
            roots.push(i);
        }
    }
    roots.sort_unstable();
    roots.dedup();

    let mut builder = builder
        .with_projection(ProjectionMask::roots(&parquet_schema, roots))
        .with_row_groups(row_groups)
        .with_batch_size(BATCH_ROWS);
    if !all_inside || spec.keys.is_some() {
        let mut filter_roots = vec![root_index(COMMIT_TS_COLUMN).ok_or_else(|| {
            fail(format!(
                "not a change segment: no `{COMMIT_TS_COLUMN}` column"
            ))
        })?];
        if spec.keys.is_some() {
            for name in [KEY_COLUMN, OP_COLUMN] {
                filter_roots
                    .push(root_index(name).ok_or_else(|| {
                        fail(format!("not a change segment: no `{name}` column"))
                    })?);
            }
        }
        let mask = ProjectionMask::roots(&parquet_schema, filter_roots);
        let spec = Arc::clone(&spec);
        let predicate =
            ArrowPredicateFn::new(mask, move |batch: RecordBatch| row_filter(&batch, &spec));
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
    }
    let stream = builder.build().map_err(|e| fail(e.to_string()))?;
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| fail(e.to_string()))?;

    let output = spec.output_schema();
    batches
        .iter()
        .map(|batch| adapt(batch, &output).map_err(&fail))
        .collect()
}

/// Do the statistics show that no row of `row_groups` lists an unchanged column? (The
/// list's leaf then holds no value at all.)
fn no_unchanged(metadata: &ParquetMetaData, row_groups: &[usize]) -> bool {
    let descr = metadata.file_metadata().schema_descr();
    let Some(leaf) = descr
        .columns()
        .iter()
        .position(|c| c.path().parts().first().map(String::as_str) == Some(UNCHANGED_COLUMN))
    else {
        return false;
    };
    row_groups.iter().all(|&i| {
        metadata.row_groups()[i]
            .column(leaf)
            .statistics()
            .is_some_and(|s| s.min_bytes_opt().is_none() && s.max_bytes_opt().is_none())
    })
}

/// The row groups that may hold wanted changes, and whether every kept group lies wholly
/// inside the time range (then no per-row time filter is needed).
fn prune_row_groups(metadata: &ParquetMetaData, spec: &ReadSpec) -> (Vec<usize>, bool) {
    let descr = metadata.file_metadata().schema_descr();
    let leaf = |name: &str| {
        descr
            .columns()
            .iter()
            .position(|c| c.path().parts().len() == 1 && c.name() == name)
    };
    let (ts_leaf, key_leaf) = (leaf(COMMIT_TS_COLUMN), leaf(KEY_COLUMN));
    let mut kept = Vec::new();
    let mut all_inside = true;
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let (mut min_ts, mut max_ts) = (None, None);
        if let Some(Statistics::Int64(s)) = ts_leaf.and_then(|l| rg.column(l).statistics()) {
            min_ts = s.min_opt().copied();
            max_ts = s.max_opt().copied();
        }
        if min_ts.is_some_and(|min| min > spec.until) {
            continue;
        }
        if let (Some(after), Some(max)) = (spec.after, max_ts)
            && max <= after
        {
            continue;
        }
        if let Some(keys) = &spec.keys
            && let Some(Statistics::ByteArray(s)) = key_leaf.and_then(|l| rg.column(l).statistics())
            && let (Some(min), Some(max)) = (s.min_opt(), s.max_opt())
            && let (Ok(min), Ok(max)) = (
                std::str::from_utf8(min.data()),
                std::str::from_utf8(max.data()),
            )
            && !key_range_may_match(keys, min, max)
        {
            continue;
        }
        let inside = max_ts.is_some_and(|max| max <= spec.until)
            && spec
                .after
                .is_none_or(|after| min_ts.is_some_and(|min| min > after));
        all_inside &= inside;
        kept.push(i);
    }
    (kept, all_inside)
}

fn row_filter(
    batch: &RecordBatch,
    spec: &ReadSpec,
) -> Result<BooleanArray, arrow::error::ArrowError> {
    let missing = |name: &str| {
        arrow::error::ArrowError::SchemaError(format!("row filter: no `{name}` column"))
    };
    let ts = batch
        .column_by_name(COMMIT_TS_COLUMN)
        .ok_or_else(|| missing(COMMIT_TS_COLUMN))?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| missing(COMMIT_TS_COLUMN))?;
    let after = spec.after;
    let until = spec.until;
    let in_time = |v: i64| v <= until && after.is_none_or(|a| v > a);
    let Some(keys) = &spec.keys else {
        return Ok(ts.values().iter().map(|v| Some(in_time(*v))).collect());
    };
    let key = utf8(batch, KEY_COLUMN).ok_or_else(|| missing(KEY_COLUMN))?;
    let op = utf8(batch, OP_COLUMN).ok_or_else(|| missing(OP_COLUMN))?;
    Ok((0..batch.num_rows())
        .map(|i| Some(in_time(ts.value(i)) && (op.value(i) == "t" || keys.contains(key.value(i)))))
        .collect())
}

fn utf8(batch: &RecordBatch, name: &str) -> Option<StringArray> {
    let column = batch.column_by_name(name)?;
    let column = if column.data_type() == &DataType::Utf8 {
        Arc::clone(column)
    } else {
        cast(column, &DataType::Utf8).ok()?
    };
    column.as_string_opt::<i32>().cloned()
}

/// A batch as read (the file's columns) -> the spec's output schema: system columns cast
/// to their canonical types, table columns by name, cast, or NULL when absent.
fn adapt(batch: &RecordBatch, output: &SchemaRef) -> std::result::Result<RecordBatch, String> {
    let columns: Vec<ArrayRef> = output
        .fields()
        .iter()
        .map(|field| column_as(batch, field))
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(Arc::clone(output), columns).map_err(|e| e.to_string())
}

fn column_as(batch: &RecordBatch, field: &Field) -> std::result::Result<ArrayRef, String> {
    match batch.column_by_name(field.name()) {
        None if field.name() == UNCHANGED_COLUMN => match field.data_type() {
            DataType::List(item) => Ok(Arc::new(ListArray::new(
                Arc::clone(item),
                OffsetBuffer::new_zeroed(batch.num_rows()),
                new_null_array(item.data_type(), 0),
                None,
            ))),
            other => Err(format!("`{UNCHANGED_COLUMN}` is {other}, expected a list")),
        },
        None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
        Some(column) => cast(column, field.data_type()).map_err(|e| {
            format!(
                "column `{}` is {} and cannot be read as {}: {e}",
                field.name(),
                column.data_type(),
                field.data_type()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_ranges_always_match_a_key_filter() {
        let keys: BTreeSet<String> = ["k5".to_owned()].into();
        assert!(key_range_may_match(&keys, "", "a"));
        assert!(key_range_may_match(&keys, "k1", "k9"));
        assert!(!key_range_may_match(&keys, "k6", "k9"));
        assert!(!key_range_may_match(&keys, "a", "b"));
    }

    #[test]
    fn object_paths_join_under_the_root() {
        assert_eq!(
            object_path(&Path::from("w"), "s/n/t/changes/x.parquet").as_ref(),
            "w/s/n/t/changes/x.parquet"
        );
    }
}
