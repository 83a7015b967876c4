//! Table schemas (columns with their Kafka Connect types) and the Arrow schema of change
//! segments, with the conversion of [`ChangeEvent`]s into Arrow record batches.
//!
//! # Change segment columns
//!
//! Every segment starts with the system columns, then the table's columns:
//!
//! | column        | Arrow type                      | holds                                              |
//! |---------------|---------------------------------|----------------------------------------------------|
//! | `_op`         | `Utf8`                          | `c u d r t` (Parquet dictionary-encodes it)        |
//! | `_commit_ts`  | `Timestamp(µs, "UTC")`          | source commit time                                 |
//! | `_commit_pos` | `UInt64`                        | commit position (commit LSN)                       |
//! | `_seq`        | `UInt64`                        | position of the change (its LSN)                   |
//! | `_tx_id`      | `Utf8`, nullable                | source transaction id                              |
//! | `_event_id`   | `FixedSizeBinary(32)`           | [`ChangeEvent::event_id`]                          |
//! | `_unchanged`  | `List<Utf8>`                    | columns the change did not write (not NULL: keep)  |
//! | `_key`        | `Utf8`                          | [`encode_key`](crate::event::encode_key): sorts like the key |
//!
//! Rows are sorted by (`_key`, `_commit_pos`, `_seq`). The table columns hold the image
//! [`ChangeEvent::image`] returns: `after`, or `before` for a delete (at least the key
//! columns). Every table column is nullable: a NULL is either SQL NULL or, when the column
//! is listed in `_unchanged`, "not written by this change".
//!
//! # Connect type -> Arrow type
//!
//! | Connect type (semantic name)                                  | Arrow                   |
//! |---------------------------------------------------------------|-------------------------|
//! | `int8` / `int16` / `int32` / `int64`                          | `Int8` … `Int64`        |
//! | `float32` / `float64`, as JSON `float` / `double` (`"NaN"`, `"Infinity"` strings accepted) | `Float32` / `Float64` |
//! | `boolean`                                                     | `Boolean`               |
//! | `string` (also `io.debezium.data.Uuid`, `…Json`, `…Enum`, numeric as text) | `Utf8`     |
//! | `bytes` (base64 in JSON)                                      | `Binary`                |
//! | `bytes` `org.apache.kafka.connect.data.Decimal` (`scale` parameter) | `Decimal128(38, scale)` |
//! | `int32` `io.debezium.time.Date` / `org.apache.kafka.connect.data.Date` | `Date32`       |
//! | `int64` `io.debezium.time.MicroTimestamp`                     | `Timestamp(µs)`         |
//! | `int64` `io.debezium.time.Timestamp` / `…connect.data.Timestamp` (ms) | `Timestamp(µs)` |
//! | `int64` `io.debezium.time.NanoTimestamp` (ns, floored to µs)  | `Timestamp(µs)`         |
//! | `string` `io.debezium.time.ZonedTimestamp` (ISO 8601, parsed; `infinity`/`-infinity` -> i64 max/min) | `Timestamp(µs, "UTC")` |
//! | `int64` `io.debezium.time.MicroTime`                          | `Time64(µs)`            |
//! | `int32` `io.debezium.time.Time` (ms) / `int64` `…NanoTime` (ns) | `Time64(µs)`          |
//! | `array` of T                                                  | `List<T>`               |
//! | `struct`, `map`                                               | `Utf8` holding the JSON |
//!
//! `io.debezium.data.VariableScaleDecimal` (Debezium's unconstrained `numeric`, a struct of
//! `scale` and base64 `value`) never reaches this table: the decoder turns it into a `string`
//! column holding the exact decimal text (`"-1.50"`), as strata's capture writes numerics.
//!
//! A semantic name not listed falls back to its Connect type's row. A value that does not
//! fit its column's type is a [`SchemaError::BadValue`] naming the column.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, StringBuilder, Time64MicrosecondArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{ChangeEvent, Operation};
use crate::table::TableId;

/// `_op`
pub const OP_COLUMN: &str = "_op";
/// `_commit_ts`
pub const COMMIT_TS_COLUMN: &str = "_commit_ts";
/// `_commit_pos`
pub const COMMIT_POS_COLUMN: &str = "_commit_pos";
/// `_seq`
pub const SEQ_COLUMN: &str = "_seq";
/// `_tx_id`
pub const TX_ID_COLUMN: &str = "_tx_id";
/// `_event_id`
pub const EVENT_ID_COLUMN: &str = "_event_id";
/// `_unchanged`
pub const UNCHANGED_COLUMN: &str = "_unchanged";
/// `_key`
pub const KEY_COLUMN: &str = "_key";

/// Why a schema or a value could not be mapped to Arrow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A column's declared type has no Arrow mapping.
    #[error("column {column}: type cannot be mapped: {reason}")]
    Unmappable {
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
    /// A value does not fit its column's declared type.
    #[error("column {column}: {reason}")]
    BadValue {
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
    /// A table column is named like a system column.
    #[error("column {column} collides with a system column")]
    ReservedName {
        /// The column.
        column: String,
    },
    /// A stored schema could not be read back.
    #[error("stored schema is unreadable: {reason}")]
    Unreadable {
        /// Why.
        reason: String,
    },
    /// Arrow refused to build the batch (a bug, not bad input).
    #[error("building the Arrow batch: {reason}")]
    Arrow {
        /// Arrow's message.
        reason: String,
    },
}

/// A Kafka Connect schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectType {
    /// `int8`
    Int8,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float32`
    Float32,
    /// `float64`
    Float64,
    /// `boolean`
    Boolean,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `array`
    Array,
    /// `map`
    Map,
    /// `struct`
    Struct,
}

impl ConnectType {
    /// The type of a Connect type name. Kafka Connect's JsonConverter writes the float types
    /// as `float` and `double` (its `JsonSchema` names); `float32` / `float64` (the `Schema.Type`
    /// names) are accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "int8" => Self::Int8,
            "int16" => Self::Int16,
            "int32" => Self::Int32,
            "int64" => Self::Int64,
            "float" | "float32" => Self::Float32,
            "double" | "float64" => Self::Float64,
            "boolean" => Self::Boolean,
            "string" => Self::String,
            "bytes" => Self::Bytes,
            "array" => Self::Array,
            "map" => Self::Map,
            "struct" => Self::Struct,
            _ => return None,
        })
    }
}

/// A column's declared type: Connect type, semantic name, parameters, element type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnType {
    /// The Connect type.
    #[serde(rename = "type")]
    pub connect: ConnectType,
    /// The semantic (logical) type name, e.g. `io.debezium.time.MicroTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<String>,
    /// Schema parameters (e.g. a decimal's `scale`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Element type of an `array`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<ColumnType>>,
}

impl ColumnType {
    /// A type without semantic name or parameters.
    pub fn plain(connect: ConnectType) -> Self {
        Self {
            connect,
            semantic: None,
            parameters: BTreeMap::new(),
            items: None,
        }
    }

    /// A type with a semantic name.
    pub fn named(connect: ConnectType, semantic: &str) -> Self {
        Self {
            semantic: Some(semantic.to_owned()),
            ..Self::plain(connect)
        }
    }

    /// An `array` of `items`.
    pub fn array(items: ColumnType) -> Self {
        Self {
            items: Some(Box::new(items)),
            ..Self::plain(ConnectType::Array)
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The name.
    pub name: String,
    /// Its declared type.
    #[serde(flatten)]
    pub column_type: ColumnType,
    /// Declared optional (nullable) by the source.
    pub optional: bool,
    /// Part of the key.
    pub key: bool,
}

/// A table's columns as its change envelopes declare them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: TableId,
    /// Its columns, in order.
    pub columns: Vec<ColumnSchema>,
}

impl TableSchema {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The key columns, in table order.
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnSchema> {
        self.columns.iter().filter(|c| c.key)
    }

    /// The Arrow schema of this table's change segments: the system columns, then the
    /// table's columns (all nullable).
    pub fn segment_schema(&self) -> Result<SchemaRef, SchemaError> {
        let mut fields = system_fields();
        for column in &self.columns {
            if fields.iter().any(|f| f.name() == &column.name) {
                return Err(SchemaError::ReservedName {
                    column: column.name.clone(),
                });
            }
            let data_type =
                arrow_type(&column.column_type).map_err(|reason| SchemaError::Unmappable {
                    column: column.name.clone(),
                    reason,
                })?;
            fields.push(Field::new(&column.name, data_type, true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// What a `SetSchema` action stores: this schema, plus each column's Arrow type for a
    /// reader that only wants Arrow. [`TableSchema::from_catalog_json`] reads it back.
    pub fn to_catalog_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(columns) = json.get_mut("columns").and_then(Value::as_array_mut) {
            for (column, schema) in columns.iter_mut().zip(&self.columns) {
                if let (Some(map), Ok(data_type)) =
                    (column.as_object_mut(), arrow_type(&schema.column_type))
                {
                    map.insert("arrow_type".into(), data_type.to_string().into());
                }
            }
        }
        json
    }

    /// Reads what [`TableSchema::to_catalog_json`] wrote.
    pub fn from_catalog_json(json: &Value) -> Result<Self, SchemaError> {
        let mut json = json.clone();
        if let Some(columns) = json.get_mut("columns").and_then(Value::as_array_mut) {
            for column in columns {
                if let Some(map) = column.as_object_mut() {
                    map.remove("arrow_type");
                }
            }
        }
        serde_json::from_value(json).map_err(|e| SchemaError::Unreadable {
            reason: e.to_string(),
        })
    }

    /// Checks that the event's stored image converts under this schema (the check
    /// [`events_to_record_batch`] would make, for one event). A consumer checking many events
    /// of one schema should use an [`EventChecker`].
    pub fn check_event(&self, event: &ChangeEvent) -> Result<(), SchemaError> {
        check_image(self, &column_types(self)?, event)
    }
}

/// Checks events against one schema, each column's Arrow type worked out once.
#[derive(Debug, Clone)]
pub struct EventChecker {
    schema: Arc<TableSchema>,
    types: Vec<DataType>,
}

impl EventChecker {
    /// A checker of `schema`, which must map to a segment schema.
    pub fn new(schema: Arc<TableSchema>) -> Result<Self, SchemaError> {
        schema.segment_schema()?;
        let types = column_types(&schema)?;
        Ok(Self { schema, types })
    }

    /// The schema it checks against.
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// [`TableSchema::check_event`], without working out the Arrow types again.
    pub fn check(&self, event: &ChangeEvent) -> Result<(), SchemaError> {
        check_image(&self.schema, &self.types, event)
    }
}

/// Each column's Arrow type.
fn column_types(schema: &TableSchema) -> Result<Vec<DataType>, SchemaError> {
    schema
        .columns
        .iter()
        .map(|c| {
            arrow_type(&c.column_type).map_err(|reason| SchemaError::Unmappable {
                column: c.name.clone(),
                reason,
            })
        })
        .collect()
}

/// Checks every cell of the event's stored image; `types` are the columns' Arrow types.
fn check_image(
    schema: &TableSchema,
    types: &[DataType],
    event: &ChangeEvent,
) -> Result<(), SchemaError> {
    let Some(image) = event.image() else {
        return Ok(());
    };
    for (i, (name, value)) in image.iter().enumerate() {
        // The decoder orders images like the schema: try the same place first.
        let index = match schema.columns.get(i) {
            Some(c) if c.name == name => Some(i),
            _ => schema.columns.iter().position(|c| c.name == name),
        };
        let (Some(column), Some(data_type)) = (
            index.and_then(|i| schema.columns.get(i)),
            index.and_then(|i| types.get(i)),
        ) else {
            return Err(SchemaError::BadValue {
                column: name.to_owned(),
                reason: "not declared in the envelope's schema".into(),
            });
        };
        if !value.is_null() {
            check_value(name, &column.column_type, data_type, value)?;
        }
    }
    Ok(())
}

/// The system columns every change segment starts with.
pub fn system_fields() -> Vec<Field> {
    vec![
        Field::new(OP_COLUMN, DataType::Utf8, false),
        Field::new(
            COMMIT_TS_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(COMMIT_POS_COLUMN, DataType::UInt64, false),
        Field::new(SEQ_COLUMN, DataType::UInt64, false),
        Field::new(TX_ID_COLUMN, DataType::Utf8, true),
        Field::new(EVENT_ID_COLUMN, DataType::FixedSizeBinary(32), false),
        Field::new(
            UNCHANGED_COLUMN,
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
            false,
        ),
        Field::new(KEY_COLUMN, DataType::Utf8, false),
    ]
}

const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";

/// The Arrow type of a Connect type (see the module doc for the table).
pub fn arrow_type(ty: &ColumnType) -> Result<DataType, String> {
    let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
    let time = DataType::Time64(TimeUnit::Microsecond);
    Ok(match (ty.connect, ty.semantic.as_deref()) {
        (
            ConnectType::Int32,
            Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date"),
        ) => DataType::Date32,
        (ConnectType::Int32, Some("io.debezium.time.Time")) => time,
        (
            ConnectType::Int64,
            Some(
                "io.debezium.time.MicroTimestamp"
                | "io.debezium.time.Timestamp"
                | "io.debezium.time.NanoTimestamp"
                | "org.apache.kafka.connect.data.Timestamp",
            ),
        ) => micros,
        (ConnectType::Int64, Some("io.debezium.time.MicroTime" | "io.debezium.time.NanoTime")) => {
            time
        }
        (ConnectType::String, Some("io.debezium.time.ZonedTimestamp")) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        (ConnectType::Bytes, Some(DECIMAL)) => {
            let scale = decimal_scale(ty)?;
            DataType::Decimal128(38, scale)
        }
        (ConnectType::Int8, _) => DataType::Int8,
        (ConnectType::Int16, _) => DataType::Int16,
        (ConnectType::Int32, _) => DataType::Int32,
        (ConnectType::Int64, _) => DataType::Int64,
        (ConnectType::Float32, _) => DataType::Float32,
        (ConnectType::Float64, _) => DataType::Float64,
        (ConnectType::Boolean, _) => DataType::Boolean,
        (ConnectType::String | ConnectType::Map | ConnectType::Struct, _) => DataType::Utf8,
        (ConnectType::Bytes, _) => DataType::Binary,
        (ConnectType::Array, _) => {
            let items = ty.items.as_deref().ok_or("array without an element type")?;
            DataType::List(Arc::new(Field::new_list_field(arrow_type(items)?, true)))
        }
    })
}

fn decimal_scale(ty: &ColumnType) -> Result<i8, String> {
    let scale = ty
        .parameters
        .get("scale")
        .ok_or("decimal without a scale parameter")?;
    match scale.parse::<i8>() {
        Ok(s) if (0..=38).contains(&s) => Ok(s),
        _ => Err(format!("decimal scale {scale:?} is not in 0..=38")),
    }
}

/// The change-segment batch of `events` (all of `schema`'s table), in the order given;
/// callers sort by (`_key`, position) first.
pub fn events_to_record_batch(
    schema: &TableSchema,
    events: &[&ChangeEvent],
) -> Result<RecordBatch, SchemaError> {
    let ids: Vec<[u8; 32]> = events.iter().map(|e| e.event_id()).collect();
    let keys: Vec<String> = events.iter().map(|e| e.sort_key()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    events_to_record_batch_with(schema, events, &ids, &keys)
}

/// [`events_to_record_batch`] with each event's id ([`ChangeEvent::event_id`]) and sort key
/// ([`ChangeEvent::sort_key`]) already worked out, in the events' order.
pub fn events_to_record_batch_with(
    schema: &TableSchema,
    events: &[&ChangeEvent],
    ids: &[[u8; 32]],
    keys: &[&str],
) -> Result<RecordBatch, SchemaError> {
    if ids.len() != events.len() || keys.len() != events.len() {
        return Err(SchemaError::Arrow {
            reason: format!(
                "{} event ids and {} keys for {} events",
                ids.len(),
                keys.len(),
                events.len()
            ),
        });
    }
    let arrow_schema = schema.segment_schema()?;
    let arrow_err = |e: arrow::error::ArrowError| SchemaError::Arrow {
        reason: e.to_string(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(arrow_schema.fields().len());
    columns.push(Arc::new(StringArray::from_iter_values(
        events.iter().map(|e| e.op.code()),
    )));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.commit_ts_us))
            .with_timezone("UTC"),
    ));
    columns.push(Arc::new(UInt64Array::from_iter_values(
        events.iter().map(|e| e.position.commit),
    )));
    columns.push(Arc::new(UInt64Array::from_iter_values(
        events.iter().map(|e| e.position.seq),
    )));
    columns.push(Arc::new(StringArray::from_iter(
        events.iter().map(|e| e.tx_id.as_deref()),
    )));
    columns.push(Arc::new(
        FixedSizeBinaryArray::try_from_iter(ids.iter()).map_err(arrow_err)?,
    ));
    let mut offsets = Vec::with_capacity(events.len() + 1);
    offsets.push(0_i32);
    let mut names = Vec::new();
    for event in events {
        names.extend(event.unchanged.iter().map(String::as_str));
        offsets.push(i32::try_from(names.len()).map_err(|_| SchemaError::Arrow {
            reason: "too many unchanged column names in one batch".into(),
        })?);
    }
    let unchanged_field = Arc::new(Field::new_list_field(DataType::Utf8, false));
    columns.push(Arc::new(
        ListArray::try_new(
            unchanged_field,
            OffsetBuffer::new(offsets.into()),
            Arc::new(StringArray::from_iter_values(names)),
            None,
        )
        .map_err(arrow_err)?,
    ));
    columns.push(Arc::new(StringArray::from_iter_values(keys)));

    for (index, (column, field)) in schema
        .columns
        .iter()
        .zip(arrow_schema.fields().iter().skip(8))
        .enumerate()
    {
        let values: Vec<Option<&Value>> = events
            .iter()
            .map(|e| {
                if e.unchanged.contains(&column.name) {
                    return None;
                }
                let value = e
                    .image()
                    .and_then(|row| row.get_at(index, &column.name))
                    .or_else(|| {
                        // A delete's image may lack key columns the key document has.
                        (e.op == Operation::Delete)
                            .then(|| e.key.get(&column.name))
                            .flatten()
                    });
                value.filter(|v| !v.is_null())
            })
            .collect();
        columns.push(build_array(
            &column.name,
            &column.column_type,
            field.data_type(),
            &values,
        )?);
    }
    RecordBatch::try_new(arrow_schema, columns).map_err(arrow_err)
}

/// Checks one non-NULL value the way [`build_array`] converts it, without building anything.
fn check_value(
    column: &str,
    ty: &ColumnType,
    data_type: &DataType,
    v: &Value,
) -> Result<(), SchemaError> {
    let bad = |reason: String| SchemaError::BadValue {
        column: column.to_owned(),
        reason,
    };
    match data_type {
        DataType::Boolean => to_bool(v, &bad).map(drop),
        DataType::Int8 => {
            to_int_in(v, i64::from(i8::MIN), i64::from(i8::MAX), data_type, &bad).map(drop)
        }
        DataType::Int16 => {
            to_int_in(v, i64::from(i16::MIN), i64::from(i16::MAX), data_type, &bad).map(drop)
        }
        DataType::Int32 | DataType::Date32 => {
            to_int_in(v, i64::from(i32::MIN), i64::from(i32::MAX), data_type, &bad).map(drop)
        }
        DataType::Int64 => to_int(v, &bad).map(drop),
        DataType::Float32 | DataType::Float64 => to_float(v, &bad).map(drop),
        DataType::Utf8 => check_text(v, ty, &bad),
        DataType::Binary => bytes(v, &bad).map(drop),
        DataType::Decimal128(..) => to_decimal(v, &bad).map(drop),
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Time64(TimeUnit::Microsecond) => {
            temporal_micros(ty, v).map(drop).map_err(&bad)
        }
        DataType::List(item_field) => {
            let Value::Array(elements) = v else {
                return Err(bad(format!("expected an array, got {}", preview(v))));
            };
            let item_type = ty.items.as_deref().ok_or_else(|| SchemaError::Unmappable {
                column: column.to_owned(),
                reason: "array without an element type".into(),
            })?;
            elements
                .iter()
                .filter(|e| !e.is_null())
                .try_for_each(|e| check_value(column, item_type, item_field.data_type(), e))
        }
        other => Err(SchemaError::Unmappable {
            column: column.to_owned(),
            reason: format!("no converter for {other}"),
        }),
    }
}

type Bad<'a> = &'a dyn Fn(String) -> SchemaError;

fn to_bool(v: &Value, bad: Bad<'_>) -> Result<bool, SchemaError> {
    v.as_bool()
        .ok_or_else(|| bad(format!("expected a boolean, got {}", preview(v))))
}

fn to_int(v: &Value, bad: Bad<'_>) -> Result<i64, SchemaError> {
    v.as_i64()
        .ok_or_else(|| bad(format!("expected an integer, got {}", preview(v))))
}

fn to_int_in(
    v: &Value,
    min: i64,
    max: i64,
    data_type: &DataType,
    bad: Bad<'_>,
) -> Result<i64, SchemaError> {
    let i = to_int(v, bad)?;
    if (min..=max).contains(&i) {
        Ok(i)
    } else {
        Err(bad(format!("{i} is out of range for {data_type}")))
    }
}

fn to_float(v: &Value, bad: Bad<'_>) -> Result<f64, SchemaError> {
    float(v).ok_or_else(|| bad(format!("expected a number, got {}", preview(v))))
}

/// A `Utf8` column holds strings, and structs and maps as their JSON.
fn check_text(v: &Value, ty: &ColumnType, bad: Bad<'_>) -> Result<(), SchemaError> {
    match (v, ty.connect) {
        (Value::String(_), _) | (_, ConnectType::Map | ConnectType::Struct) => Ok(()),
        (other, _) => Err(bad(format!("expected a string, got {}", preview(other)))),
    }
}

/// A Connect `Decimal`: base64 of a big-endian two's-complement unscaled integer.
fn to_decimal(v: &Value, bad: Bad<'_>) -> Result<i128, SchemaError> {
    let raw = bytes(v, bad)?;
    if raw.is_empty() || raw.len() > 16 {
        return Err(bad(format!(
            "decimal of {} bytes does not fit 128 bits",
            raw.len()
        )));
    }
    let fill = if raw[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - raw.len()..].copy_from_slice(&raw);
    Ok(i128::from_be_bytes(buf))
}

/// One Arrow array of `values` (None = NULL) of a column.
fn build_array(
    column: &str,
    ty: &ColumnType,
    data_type: &DataType,
    values: &[Option<&Value>],
) -> Result<ArrayRef, SchemaError> {
    let bad = |reason: String| SchemaError::BadValue {
        column: column.to_owned(),
        reason,
    };
    macro_rules! collect {
        ($array:ty, $convert:expr) => {{
            let converted: Result<Vec<_>, SchemaError> = values
                .iter()
                .map(|v| v.filter(|v| !v.is_null()).map($convert).transpose())
                .collect();
            Arc::new(<$array>::from(converted?)) as ArrayRef
        }};
    }
    let narrow = |v: &Value, min: i64, max: i64| to_int_in(v, min, max, data_type, &bad);
    Ok(match data_type {
        DataType::Boolean => collect!(BooleanArray, |v: &Value| to_bool(v, &bad)),
        DataType::Int8 => collect!(Int8Array, |v: &Value| narrow(v, -128, 127).map(|i| i as i8)),
        DataType::Int16 => collect!(Int16Array, |v: &Value| narrow(
            v,
            i64::from(i16::MIN),
            i64::from(i16::MAX)
        )
        .map(|i| i as i16)),
        DataType::Int32 => collect!(Int32Array, |v: &Value| narrow(
            v,
            i64::from(i32::MIN),
            i64::from(i32::MAX)
        )
        .map(|i| i as i32)),
        DataType::Int64 => collect!(Int64Array, |v: &Value| to_int(v, &bad)),
        DataType::Float32 => {
            collect!(Float32Array, |v: &Value| to_float(v, &bad)
                .map(|f| f as f32))
        }
        DataType::Float64 => collect!(Float64Array, |v: &Value| to_float(v, &bad)),
        DataType::Utf8 => {
            let mut builder = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match v.filter(|v| !v.is_null()) {
                    None => builder.append_null(),
                    Some(Value::String(s)) => builder.append_value(s),
                    Some(other) => {
                        check_text(other, ty, &bad)?;
                        builder.append_value(other.to_string());
                    }
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }
        DataType::Binary => {
            let converted: Result<Vec<Option<Vec<u8>>>, SchemaError> = values
                .iter()
                .map(|v| {
                    v.filter(|v| !v.is_null())
                        .map(|v| bytes(v, &bad))
                        .transpose()
                })
                .collect();
            let converted = converted?;
            Arc::new(BinaryArray::from_iter(converted)) as ArrayRef
        }
        DataType::Decimal128(precision, scale) => {
            let converted: Result<Vec<Option<i128>>, SchemaError> = values
                .iter()
                .map(|v| {
                    v.filter(|v| !v.is_null())
                        .map(|v| to_decimal(v, &bad))
                        .transpose()
                })
                .collect();
            Arc::new(
                Decimal128Array::from(converted?)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| bad(e.to_string()))?,
            )
        }
        DataType::Date32 => collect!(Date32Array, |v: &Value| narrow(
            v,
            i64::from(i32::MIN),
            i64::from(i32::MAX)
        )
        .map(|i| i as i32)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let converted: Result<Vec<Option<i64>>, SchemaError> = values
                .iter()
                .map(|v| {
                    v.filter(|v| !v.is_null())
                        .map(|v| temporal_micros(ty, v).map_err(&bad))
                        .transpose()
                })
                .collect();
            Arc::new(TimestampMicrosecondArray::from(converted?).with_timezone_opt(tz.clone()))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            collect!(Time64MicrosecondArray, |v: &Value| temporal_micros(ty, v)
                .map_err(&bad))
        }
        DataType::List(item_field) => build_list(column, ty, item_field, values)?,
        other => {
            return Err(SchemaError::Unmappable {
                column: column.to_owned(),
                reason: format!("no converter for {other}"),
            });
        }
    })
}

fn build_list(
    column: &str,
    ty: &ColumnType,
    item_field: &FieldRef,
    values: &[Option<&Value>],
) -> Result<ArrayRef, SchemaError> {
    let item_type = ty.items.as_deref().ok_or_else(|| SchemaError::Unmappable {
        column: column.to_owned(),
        reason: "array without an element type".into(),
    })?;
    let mut offsets = Vec::with_capacity(values.len() + 1);
    offsets.push(0_i32);
    let mut items: Vec<Option<&Value>> = Vec::new();
    let mut valid = Vec::with_capacity(values.len());
    for value in values {
        match value {
            None | Some(Value::Null) => valid.push(false),
            Some(Value::Array(elements)) => {
                valid.push(true);
                items.extend(elements.iter().map(|e| (!e.is_null()).then_some(e)));
            }
            Some(other) => {
                return Err(SchemaError::BadValue {
                    column: column.to_owned(),
                    reason: format!("expected an array, got {}", preview(other)),
                });
            }
        }
        offsets.push(
            i32::try_from(items.len()).map_err(|_| SchemaError::BadValue {
                column: column.to_owned(),
                reason: "too many array elements in one batch".into(),
            })?,
        );
    }
    let child = build_array(column, item_type, item_field.data_type(), &items)?;
    let array = ListArray::try_new(
        Arc::clone(item_field),
        OffsetBuffer::new(offsets.into()),
        child,
        Some(NullBuffer::from(valid)),
    )
    .map_err(|e| SchemaError::Arrow {
        reason: e.to_string(),
    })?;
    Ok(Arc::new(array))
}

/// A JSON number, or Debezium's `"NaN"` / `"Infinity"` / `"-Infinity"`.
fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A `bytes` value: base64 text (the JSON converter's encoding).
fn bytes(v: &Value, bad: Bad<'_>) -> Result<Vec<u8>, SchemaError> {
    let text = v
        .as_str()
        .ok_or_else(|| bad(format!("expected base64 text, got {}", preview(v))))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(format!("not base64: {e}")))
}

/// A timestamp or time of day in µs, from the unit its semantic type says.
fn temporal_micros(ty: &ColumnType, v: &Value) -> Result<i64, String> {
    if let Value::String(s) = v {
        return match s.as_str() {
            "infinity" => Ok(i64::MAX),
            "-infinity" => Ok(i64::MIN),
            text => chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_micros())
                .map_err(|e| format!("{text:?} is not an ISO 8601 timestamp: {e}")),
        };
    }
    let i = v
        .as_i64()
        .ok_or_else(|| format!("expected an integer, got {}", preview(v)))?;
    match ty.semantic.as_deref() {
        Some(
            "io.debezium.time.Timestamp"
            | "org.apache.kafka.connect.data.Timestamp"
            | "io.debezium.time.Time",
        ) => i
            .checked_mul(1000)
            .ok_or_else(|| format!("{i} ms is out of range")),
        Some("io.debezium.time.NanoTimestamp" | "io.debezium.time.NanoTime") => {
            Ok(i.div_euclid(1000))
        }
        _ => Ok(i),
    }
}

fn preview(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests;

/// Writes one change-segment batch (already sorted by `_key`, `_commit_pos`, `_seq`) as the Parquet
/// bytes of a segment: zstd at `zstd_level`, page statistics, row groups of `row_group_rows`, and the
/// sort order declared. The compactor and test fixtures both write segments through this.
pub fn encode_segment(
    batch: &RecordBatch,
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::metadata::SortingColumn;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    let sorting = ["_key", "_commit_pos", "_seq"]
        .iter()
        .filter_map(|name| batch.schema().index_of(name).ok())
        .map(|column_idx| SortingColumn {
            column_idx: column_idx as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_sorting_columns(Some(sorting))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(bytes)
}
