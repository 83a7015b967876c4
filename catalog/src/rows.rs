//! Change-segment rows: a change's cells already converted to their columns' Arrow types,
//! and the builder that appends them column by column into a segment's record batch.
//!
//! The compactor decodes each Kafka record into a [`SegmentRow`] (see
//! [`decode_debezium_row`](crate::event::decode_debezium_row)) and appends it to the
//! [`SegmentBuilder`] of its table: no per-cell JSON value, no per-row column names, and a
//! batch that holds a few bytes per cell instead of a decoded document. Sorting by
//! (`_key`, `_commit_pos`, `_seq`) happens once, when the segment is finished.
//!
//! ```text
//!   Kafka record ──decode──► SegmentRow { op, commit time, position, tx, id, _key, cells }
//!                                 │ push (arrival order)
//!                                 ▼
//!   SegmentBuilder: _op _commit_ts _commit_pos _seq _tx_id _event_id _unchanged _key col1 … colN
//!                                 │ finish_sorted: lexsort (_key, _commit_pos, _seq) + take
//!                                 ▼
//!                          RecordBatch (one change segment)
//! ```
//!
//! [`events_to_record_batch`](crate::schema::events_to_record_batch) goes through the same
//! builder, so a segment written from decoded [`ChangeEvent`]s and one written from rows
//! decoded straight from the envelope hold the same values.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int8Builder, Int16Builder,
    Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt32Array, UInt64Array,
};
use arrow::compute::{interleave, take};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use serde_json::Value;

use crate::event::{ChangeEvent, Operation, SourcePosition};
use crate::schema::{
    ColumnType, SchemaError, TableSchema, build_array, cell_from_value, column_types,
};

/// One table cell converted to its column's Arrow type. Equal floats are equal bits (a NaN
/// equals itself).
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    /// NULL: SQL NULL, not in the image, or not written by the change.
    Null,
    /// `Boolean`.
    Bool(bool),
    /// `Int8` … `Int64`, `Date32` (days), `Time64` and `Timestamp` (µs): in range for the
    /// column's type.
    Int(i64),
    /// `Float32`, `Float64`.
    Float(f64),
    /// `Utf8`.
    Text(Cow<'a, str>),
    /// `Binary`.
    Bytes(Vec<u8>),
    /// `Decimal128`: the unscaled value.
    Decimal(i128),
    /// `List`: the JSON array, converted when the batch is built.
    List(Value),
}

impl PartialEq for Cell<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::Text(a), Self::Text(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            (Self::Decimal(a), Self::Decimal(b)) => a == b,
            (Self::List(a), Self::List(b)) => a == b,
            _ => false,
        }
    }
}

/// One change as a segment stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow<'a> {
    /// What happened.
    pub op: Operation,
    /// Source commit time, µs since the Unix epoch, UTC.
    pub commit_ts_us: i64,
    /// Where the change sits in the source's log.
    pub position: SourcePosition,
    /// The source's transaction id, if any.
    pub tx_id: Option<Cow<'a, str>>,
    /// [`ChangeEvent::event_id`].
    pub id: [u8; 32],
    /// The `_key` column: [`encode_key`](crate::event::encode_key) of the key.
    pub key: String,
    /// Columns the change did not write.
    pub unchanged: Vec<String>,
    /// The stored image's cells, in the table schema's column order.
    pub cells: Vec<Cell<'a>>,
}

impl Cell<'_> {
    /// The same cell, owning its text.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Bool(b) => Cell::Bool(b),
            Cell::Int(i) => Cell::Int(i),
            Cell::Float(f) => Cell::Float(f),
            Cell::Text(t) => Cell::Text(Cow::Owned(t.into_owned())),
            Cell::Bytes(b) => Cell::Bytes(b),
            Cell::Decimal(d) => Cell::Decimal(d),
            Cell::List(v) => Cell::List(v),
        }
    }
}

impl SegmentRow<'_> {
    /// The same row, owning its strings (no longer borrowing the record it was decoded from).
    pub fn into_owned(self) -> SegmentRow<'static> {
        SegmentRow {
            op: self.op,
            commit_ts_us: self.commit_ts_us,
            position: self.position,
            tx_id: self.tx_id.map(|t| Cow::Owned(t.into_owned())),
            id: self.id,
            key: self.key,
            unchanged: self.unchanged,
            cells: self.cells.into_iter().map(Cell::into_owned).collect(),
        }
    }

    /// The row of a decoded change under `schema` (its table's), with the cells converted
    /// and checked: a value that does not fit its column is a [`SchemaError::BadValue`].
    pub fn from_event(
        event: &ChangeEvent,
        schema: &TableSchema,
        types: &[DataType],
    ) -> Result<SegmentRow<'static>, SchemaError> {
        let image = event.image();
        if let Some(image) = image {
            // Every column of the image must be one of the schema's.
            if let Some((name, _)) = image.iter().find(|(n, _)| schema.column(n).is_none()) {
                return Err(SchemaError::BadValue {
                    column: name.to_owned(),
                    reason: "not declared in the envelope's schema".into(),
                });
            }
        }
        let mut cells = Vec::with_capacity(schema.columns.len());
        for (index, (column, data_type)) in schema.columns.iter().zip(types).enumerate() {
            let value = if event.unchanged.contains(&column.name) {
                None
            } else {
                image
                    .and_then(|row| row.get_at(index, &column.name))
                    .or_else(|| {
                        // A delete's image may lack key columns the key document has.
                        (event.op == Operation::Delete)
                            .then(|| event.key.get(&column.name))
                            .flatten()
                    })
            };
            cells.push(match value.filter(|v| !v.is_null()) {
                None => Cell::Null,
                Some(v) => cell_from_value(&column.name, &column.column_type, data_type, v)?,
            });
        }
        Ok(SegmentRow {
            op: event.op,
            commit_ts_us: event.commit_ts_us,
            position: event.position,
            tx_id: event.tx_id.clone().map(Cow::Owned),
            id: event.event_id(schema.event_id_version),
            key: event.sort_key(),
            unchanged: event.unchanged.clone(),
            cells,
        })
    }

    /// Roughly the bytes the row takes in a batch (what `max_segment_bytes` counts).
    pub fn size(&self) -> u64 {
        let cells: usize = self
            .cells
            .iter()
            .map(|cell| match cell {
                Cell::Null | Cell::Bool(_) => 1,
                Cell::Int(_) | Cell::Float(_) => 8,
                Cell::Decimal(_) => 16,
                Cell::Text(text) => text.len() + 4,
                Cell::Bytes(bytes) => bytes.len() + 4,
                Cell::List(value) => value.to_string().len(),
            })
            .sum();
        let unchanged: usize = self.unchanged.iter().map(|n| n.len() + 4).sum();
        (64 + self.key.len() + self.tx_id.as_deref().map_or(0, str::len) + unchanged + cells) as u64
    }
}

/// The builder of one table column.
#[derive(Debug)]
pub(crate) enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Date32(Date32Builder),
    Time64(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Decimal(Decimal128Builder, u8, i8),
    List(Vec<Option<Value>>),
}

impl ColumnBuilder {
    pub(crate) fn new(column: &str, data_type: &DataType) -> Result<Self, SchemaError> {
        Ok(match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Int8 => Self::Int8(Int8Builder::new()),
            DataType::Int16 => Self::Int16(Int16Builder::new()),
            DataType::Int32 => Self::Int32(Int32Builder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::Date32 => Self::Date32(Date32Builder::new()),
            DataType::Time64(TimeUnit::Microsecond) => {
                Self::Time64(Time64MicrosecondBuilder::new())
            }
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::new(), tz.clone())
            }
            DataType::Float32 => Self::Float32(Float32Builder::new()),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::Utf8 => Self::Utf8(StringBuilder::new()),
            DataType::Binary => Self::Binary(BinaryBuilder::new()),
            DataType::Decimal128(precision, scale) => {
                Self::Decimal(Decimal128Builder::new(), *precision, *scale)
            }
            DataType::List(_) => Self::List(Vec::new()),
            other => {
                return Err(SchemaError::Unmappable {
                    column: column.to_owned(),
                    reason: format!("no converter for {other}"),
                });
            }
        })
    }

    /// True if `cell` is of this column's kind (NULL fits every column).
    fn fits(&self, cell: &Cell<'_>) -> bool {
        matches!(
            (self, cell),
            (_, Cell::Null)
                | (Self::Bool(_), Cell::Bool(_))
                | (
                    Self::Int8(_)
                        | Self::Int16(_)
                        | Self::Int32(_)
                        | Self::Int64(_)
                        | Self::Date32(_)
                        | Self::Time64(_)
                        | Self::Timestamp(..),
                    Cell::Int(_)
                )
                | (Self::Float32(_) | Self::Float64(_), Cell::Float(_))
                | (Self::Utf8(_), Cell::Text(_))
                | (Self::Binary(_), Cell::Bytes(_))
                | (Self::Decimal(..), Cell::Decimal(_))
                | (Self::List(_), Cell::List(_))
        )
    }

    /// Appends a cell that [`ColumnBuilder::fits`]. Integers were range-checked when the
    /// cell was made, so the narrowing casts keep their value.
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (Self::List(values), Cell::List(value)) => values.push(Some(value.clone())),
            (Self::List(values), _) => values.push(None),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Self::Int8(b), Cell::Int(v)) => b.append_value(*v as i8),
            (Self::Int16(b), Cell::Int(v)) => b.append_value(*v as i16),
            (Self::Int32(b), Cell::Int(v)) => b.append_value(*v as i32),
            (Self::Int64(b), Cell::Int(v)) => b.append_value(*v),
            (Self::Date32(b), Cell::Int(v)) => b.append_value(*v as i32),
            (Self::Time64(b), Cell::Int(v)) => b.append_value(*v),
            (Self::Timestamp(b, _), Cell::Int(v)) => b.append_value(*v),
            (Self::Float32(b), Cell::Float(v)) => b.append_value(*v as f32),
            (Self::Float64(b), Cell::Float(v)) => b.append_value(*v),
            (Self::Utf8(b), Cell::Text(v)) => b.append_value(v),
            (Self::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (Self::Decimal(b, ..), Cell::Decimal(v)) => b.append_value(*v),
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Date32(b) => b.append_null(),
            Self::Time64(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::List(values) => values.push(None),
        }
    }

    pub(crate) fn finish(
        self,
        column: &str,
        ty: &ColumnType,
        data_type: &DataType,
    ) -> Result<ArrayRef, SchemaError> {
        Ok(match self {
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Int8(mut b) => Arc::new(b.finish()),
            Self::Int16(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::Date32(mut b) => Arc::new(b.finish()),
            Self::Time64(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b, tz) => Arc::new(b.finish().with_timezone_opt(tz)),
            Self::Float32(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::Binary(mut b) => Arc::new(b.finish()),
            Self::Decimal(mut b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| SchemaError::BadValue {
                        column: column.to_owned(),
                        reason: e.to_string(),
                    })?,
            ),
            Self::List(values) => {
                let values: Vec<Option<&Value>> = values.iter().map(Option::as_ref).collect();
                build_array(column, ty, data_type, &values)?
            }
        })
    }
}

/// Appends [`SegmentRow`]s of one table schema and finishes them into a change-segment
/// batch (see [`crate::schema`] for the columns).
#[derive(Debug)]
pub struct SegmentBuilder {
    schema: Arc<TableSchema>,
    arrow_schema: SchemaRef,
    types: Vec<DataType>,
    op: StringBuilder,
    commit_ts: Vec<i64>,
    commit_pos: Vec<u64>,
    seq: Vec<u64>,
    tx_id: StringBuilder,
    ids: FixedSizeBinaryBuilder,
    unchanged: ListBuilder<StringBuilder>,
    keys: StringBuilder,
    columns: Vec<ColumnBuilder>,
    bytes: u64,
    /// Rows appended and then taken back (see [`SegmentBuilder::retract`]).
    retracted: Vec<u32>,
}

/// What a finished segment spans, for its catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Rows.
    pub rows: usize,
    /// The first and last `_key` (the batch is sorted).
    pub min_key: String,
    /// See `min_key`.
    pub max_key: String,
    /// Commit times, µs.
    pub min_commit_ts: i64,
    /// See `min_commit_ts`.
    pub max_commit_ts: i64,
    /// Source positions.
    pub min_position: SourcePosition,
    /// See `min_position`.
    pub max_position: SourcePosition,
}

impl SegmentBuilder {
    /// An empty segment of `schema`, which must map to a segment schema.
    pub fn new(schema: Arc<TableSchema>) -> Result<Self, SchemaError> {
        let arrow_schema = schema.segment_schema()?;
        let types = column_types(&schema)?;
        let columns = schema
            .columns
            .iter()
            .zip(&types)
            .map(|(c, t)| ColumnBuilder::new(&c.name, t))
            .collect::<Result<_, _>>()?;
        let unchanged = ListBuilder::new(StringBuilder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, false)));
        Ok(Self {
            schema,
            arrow_schema,
            types,
            op: StringBuilder::new(),
            commit_ts: Vec::new(),
            commit_pos: Vec::new(),
            seq: Vec::new(),
            tx_id: StringBuilder::new(),
            ids: FixedSizeBinaryBuilder::new(32),
            unchanged,
            keys: StringBuilder::new(),
            columns,
            bytes: 0,
            retracted: Vec::new(),
        })
    }

    /// The table schema.
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// The Arrow type of each table column, in order.
    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    /// Rows appended (retracted ones too).
    pub fn len(&self) -> usize {
        self.commit_ts.len()
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.commit_ts.is_empty()
    }

    /// Rows appended and not retracted: the rows the segment will hold.
    pub fn rows(&self) -> usize {
        if self.retracted.is_empty() {
            return self.len();
        }
        self.kept().into_iter().filter(|k| *k).count()
    }

    /// The sum of the appended rows' [`SegmentRow::size`] (retracted ones too: they take
    /// memory until the builder is finished).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The earliest commit time of the rows kept.
    pub fn min_commit_ts(&self) -> Option<i64> {
        let keep = self.kept();
        self.commit_ts
            .iter()
            .zip(&keep)
            .filter_map(|(ts, keep)| keep.then_some(*ts))
            .min()
    }

    /// Takes back row `row` (its index in append order): the segment will not hold it. For a
    /// row appended before its caller knew whether to keep it (the compactor's decode threads
    /// append, its loop finds the duplicates). Out of range or retracted twice: no effect.
    pub fn retract(&mut self, row: usize) {
        if let Ok(row) = u32::try_from(row)
            && (row as usize) < self.len()
        {
            self.retracted.push(row);
        }
    }

    /// Per appended row, whether it is kept.
    fn kept(&self) -> Vec<bool> {
        let mut keep = vec![true; self.len()];
        for &row in &self.retracted {
            keep[row as usize] = false;
        }
        keep
    }

    /// Appends a row. A row whose cells do not fit the columns (a caller's bug: decoding
    /// makes cells of the column types) is refused whole.
    pub fn push(&mut self, row: SegmentRow<'_>) -> Result<(), SchemaError> {
        if row.cells.len() != self.columns.len() {
            return Err(SchemaError::Arrow {
                reason: format!(
                    "a row of {} cells for the {} columns of {}",
                    row.cells.len(),
                    self.columns.len(),
                    self.schema.table
                ),
            });
        }
        if let Some(index) = row
            .cells
            .iter()
            .zip(&self.columns)
            .position(|(cell, builder)| !builder.fits(cell))
        {
            let column = &self.schema.columns[index];
            return Err(SchemaError::BadValue {
                column: column.name.clone(),
                reason: format!("a cell of the wrong kind for {}", self.types[index]),
            });
        }
        self.bytes += row.size();
        self.op.append_value(row.op.code());
        self.commit_ts.push(row.commit_ts_us);
        self.commit_pos.push(row.position.commit);
        self.seq.push(row.position.seq);
        self.tx_id.append_option(row.tx_id.as_deref());
        // 32 bytes into a 32-byte column: cannot fail.
        let _ = self.ids.append_value(row.id);
        for name in &row.unchanged {
            self.unchanged.values().append_value(name);
        }
        self.unchanged.append(true);
        self.keys.append_value(&row.key);
        for (builder, cell) in self.columns.iter_mut().zip(&row.cells) {
            builder.append(cell);
        }
        Ok(())
    }

    /// The batch, rows in the order they were appended.
    pub fn finish(self) -> Result<RecordBatch, SchemaError> {
        let Self {
            schema,
            arrow_schema,
            types,
            mut op,
            commit_ts,
            commit_pos,
            seq,
            mut tx_id,
            mut ids,
            mut unchanged,
            mut keys,
            columns,
            bytes: _,
            retracted: _,
        } = self;
        let arrow_err = |e: arrow::error::ArrowError| SchemaError::Arrow {
            reason: e.to_string(),
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(arrow_schema.fields().len());
        arrays.push(Arc::new(op.finish()));
        arrays.push(Arc::new(
            arrow::array::TimestampMicrosecondArray::from(commit_ts).with_timezone("UTC"),
        ));
        arrays.push(Arc::new(UInt64Array::from(commit_pos)));
        arrays.push(Arc::new(UInt64Array::from(seq)));
        arrays.push(Arc::new(tx_id.finish()));
        arrays.push(Arc::new(ids.finish()));
        arrays.push(Arc::new(unchanged.finish()));
        arrays.push(Arc::new(keys.finish()));
        for ((builder, column), data_type) in columns.into_iter().zip(&schema.columns).zip(&types) {
            arrays.push(builder.finish(&column.name, &column.column_type, data_type)?);
        }
        RecordBatch::try_new(arrow_schema, arrays).map_err(arrow_err)
    }

    /// The batch sorted by (`_key`, `_commit_pos`, `_seq`), as segments are stored, and what
    /// it spans; retracted rows are left out. `None` without rows.
    pub fn finish_sorted(self) -> Result<Option<(RecordBatch, SegmentSpan)>, SchemaError> {
        Self::finish_sorted_many(vec![self], 1)
    }

    /// The rows of several builders of one schema (built side by side, e.g. one per thread)
    /// as one segment batch: sorted by (`_key`, `_commit_pos`, `_seq`), retracted rows left
    /// out. `None` without rows; an error if the builders' schemas differ. The sorted columns
    /// are gathered on up to `threads` threads.
    pub fn finish_sorted_many(
        builders: Vec<SegmentBuilder>,
        threads: usize,
    ) -> Result<Option<(RecordBatch, SegmentSpan)>, SchemaError> {
        if let Some(first) = builders.first()
            && let Some(other) = builders
                .iter()
                .find(|b| !Arc::ptr_eq(&b.schema, &first.schema) && b.schema != first.schema)
        {
            return Err(SchemaError::Arrow {
                reason: format!(
                    "one segment from builders of two schemas of {} and {}",
                    first.schema.table, other.schema.table
                ),
            });
        }
        let mut span: Option<SegmentSpan> = None;
        let mut parts = Vec::with_capacity(builders.len());
        for builder in builders {
            let keep = builder.kept();
            for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
                let position = SourcePosition {
                    commit: builder.commit_pos[i],
                    seq: builder.seq[i],
                };
                let ts = builder.commit_ts[i];
                let s = span.get_or_insert_with(|| SegmentSpan {
                    rows: 0,
                    min_key: String::new(),
                    max_key: String::new(),
                    min_commit_ts: ts,
                    max_commit_ts: ts,
                    min_position: position,
                    max_position: position,
                });
                s.rows += 1;
                s.min_commit_ts = s.min_commit_ts.min(ts);
                s.max_commit_ts = s.max_commit_ts.max(ts);
                s.min_position = s.min_position.min(position);
                s.max_position = s.max_position.max(position);
            }
            if !builder.is_empty() {
                let all = builder.retracted.is_empty();
                parts.push((builder.finish()?, if all { None } else { Some(keep) }));
            }
        }
        let Some(mut span) = span else {
            return Ok(None);
        };
        let arrow_err = |e: arrow::error::ArrowError| SchemaError::Arrow {
            reason: e.to_string(),
        };
        let sorted = match parts.as_slice() {
            [(batch, None)] => {
                let order = sort_order(&[(batch, None)])?;
                let indices: UInt32Array = order.into_iter().map(|(_, row)| row as u32).collect();
                let columns = crate::parallel::map_indices(batch.num_columns(), threads, |i| {
                    take(batch.column(i), &indices, None)
                });
                gathered(batch.schema(), columns).map_err(arrow_err)?
            }
            _ => {
                let refs: Vec<(&RecordBatch, Option<&[bool]>)> = parts
                    .iter()
                    .map(|(batch, keep)| (batch, keep.as_deref()))
                    .collect();
                let order = sort_order(&refs)?;
                let schema = parts[0].0.schema();
                let columns = crate::parallel::map_indices(schema.fields().len(), threads, |i| {
                    let sources: Vec<&dyn arrow::array::Array> = parts
                        .iter()
                        .map(|(batch, _)| batch.column(i).as_ref())
                        .collect();
                    gather(&sources, &order)
                });
                gathered(schema, columns).map_err(arrow_err)?
            }
        };
        let key_at = |row: usize| {
            sorted
                .column_by_name(crate::schema::KEY_COLUMN)
                .and_then(|keys| keys.as_any().downcast_ref::<arrow::array::StringArray>())
                .map(|keys| keys.value(row).to_owned())
                .unwrap_or_default()
        };
        span.min_key = key_at(0);
        span.max_key = key_at(span.rows - 1);
        Ok(Some((sorted, span)))
    }
}

/// The rows `order` names, (array, row) pairs, of one column's arrays: arrow's `interleave`,
/// except for the two kinds of column it has no fast path for, which it would extend a
/// `MutableArrayData` with row by row: `_event_id`'s fixed-size binary and booleans.
fn gather(
    sources: &[&dyn arrow::array::Array],
    order: &[(usize, usize)],
) -> Result<ArrayRef, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, BooleanArray, FixedSizeBinaryArray};
    use arrow::buffer::{BooleanBuffer, NullBuffer};
    let nulls = |valid: &dyn Fn(usize, usize) -> bool, any: bool| {
        any.then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(order.len(), |k| {
                let (a, i) = order[k];
                valid(a, i)
            }))
        })
    };
    let fixed: Option<Vec<&FixedSizeBinaryArray>> = sources
        .iter()
        .map(|a| a.as_fixed_size_binary_opt())
        .collect();
    let booleans: Option<Vec<&BooleanArray>> = sources.iter().map(|a| a.as_boolean_opt()).collect();
    match (sources.first().map(|a| a.data_type()), fixed, booleans) {
        (Some(DataType::FixedSizeBinary(width)), Some(arrays), _) => {
            let size = usize::try_from(*width).unwrap_or(0);
            let mut values = Vec::with_capacity(order.len() * size);
            for &(a, i) in order {
                values.extend_from_slice(arrays[a].value(i));
            }
            let any_null = arrays.iter().any(|a| a.null_count() > 0);
            let nulls = nulls(&|a, i| arrays[a].is_valid(i), any_null);
            Ok(Arc::new(FixedSizeBinaryArray::try_new(
                *width,
                values.into(),
                nulls,
            )?))
        }
        (Some(DataType::Boolean), _, Some(arrays)) => {
            let values = BooleanBuffer::collect_bool(order.len(), |k| {
                let (a, i) = order[k];
                arrays[a].value(i)
            });
            let any_null = arrays.iter().any(|a| a.null_count() > 0);
            let nulls = nulls(&|a, i| arrays[a].is_valid(i), any_null);
            Ok(Arc::new(BooleanArray::new(values, nulls)))
        }
        _ => interleave(sources, order),
    }
}

/// A batch of `schema` from its gathered columns.
fn gathered(
    schema: SchemaRef,
    columns: Vec<Result<ArrayRef, arrow::error::ArrowError>>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    RecordBatch::try_new(schema, columns.into_iter().collect::<Result<_, _>>()?)
}

/// The order of the kept rows of segment batches by (`_key`, `_commit_pos`, `_seq`), ties by
/// batch and then by arrival, as (batch, row) pairs: a plain sort over borrowed keys (arrow's
/// `lexsort_to_indices` gives the same order through a comparator per column, several times
/// slower on a flush's hundreds of thousands of rows).
fn sort_order(
    batches: &[(&RecordBatch, Option<&[bool]>)],
) -> Result<Vec<(usize, usize)>, SchemaError> {
    use arrow::array::StringArray;
    fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> Result<&'b T, SchemaError> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| SchemaError::Arrow {
                reason: format!("segment batch without {name} of its type"),
            })
    }
    let total: usize = batches.iter().map(|(b, _)| b.num_rows()).sum();
    if u32::try_from(total).is_err() {
        return Err(SchemaError::Arrow {
            reason: format!("a segment of {total} rows (at most 2^32)"),
        });
    }
    let mut keys = Vec::with_capacity(batches.len());
    for (batch, _) in batches {
        let k: &StringArray = column(batch, crate::schema::KEY_COLUMN)?;
        keys.push(k);
    }
    // Keys share a long prefix (a type tag, leading hex digits): the 8 bytes after the
    // prefix all keys share, as a number, order most pairs without comparing bytes.
    let all_keys = || keys.iter().flat_map(|k| k.iter().flatten());
    let first = all_keys().next().unwrap_or_default().as_bytes();
    let shared = all_keys().fold(first.len(), |n, key| {
        n.min(
            first
                .iter()
                .zip(key.as_bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        )
    });
    let prefix = |key: &[u8]| {
        let mut word = [0_u8; 8];
        let rest = key.get(shared..).unwrap_or_default();
        let n = rest.len().min(8);
        word[..n].copy_from_slice(&rest[..n]);
        u64::from_be_bytes(word)
    };
    // (key prefix, key, commit position, seq, batch, row)
    type SortKey<'k> = (u64, &'k [u8], u64, u64, u32, u32);
    let mut order: Vec<SortKey<'_>> = Vec::with_capacity(total);
    for (b, ((batch, keep), keys)) in batches.iter().zip(&keys).enumerate() {
        let commit: &UInt64Array = column(batch, crate::schema::COMMIT_POS_COLUMN)?;
        let seq: &UInt64Array = column(batch, crate::schema::SEQ_COLUMN)?;
        let (commit, seq) = (commit.values(), seq.values());
        order.extend(
            (0..batch.num_rows())
                .filter(|&i| keep.is_none_or(|keep| keep[i]))
                .map(|i| {
                    let key = keys.value(i).as_bytes();
                    (prefix(key), key, commit[i], seq[i], b as u32, i as u32)
                }),
        );
    }
    // (prefix, key) orders as the key alone: the prefix is a function of the key that never
    // decreases as the key grows.
    order.sort_unstable();
    Ok(order
        .into_iter()
        .map(|(.., b, i)| (b as usize, i as usize))
        .collect())
}

#[cfg(test)]
mod tests;
