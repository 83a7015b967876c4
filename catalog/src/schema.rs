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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, RecordBatch};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{ChangeEvent, EventIdVersion};
use crate::rows::{Cell, ColumnBuilder, SegmentBuilder, SegmentRow};
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
    /// How its event ids are hashed: fixed when the table's first schema is committed (ids
    /// are compared across segments; see [`crate::event::id`]). Absent means v1.
    #[serde(default, skip_serializing_if = "EventIdVersion::is_v1")]
    pub event_id_version: EventIdVersion,
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
    /// [`events_to_record_batch`] makes, for one event).
    pub fn check_event(&self, event: &ChangeEvent) -> Result<(), SchemaError> {
        SegmentRow::from_event(event, self, &column_types(self)?).map(drop)
    }
}

/// Each column's Arrow type.
pub(crate) fn column_types(schema: &TableSchema) -> Result<Vec<DataType>, SchemaError> {
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
/// callers sort by (`_key`, position) first. Goes through the [`SegmentBuilder`] the
/// compactor appends to.
pub fn events_to_record_batch(
    schema: &TableSchema,
    events: &[&ChangeEvent],
) -> Result<RecordBatch, SchemaError> {
    let mut builder = SegmentBuilder::new(Arc::new(schema.clone()))?;
    for event in events {
        let row = SegmentRow::from_event(event, schema, builder.types())?;
        builder.push(row)?;
    }
    builder.finish()
}

/// One non-NULL value of a column as a cell of the column's Arrow type, checked: a value
/// that does not fit is a [`SchemaError::BadValue`] naming the column.
pub(crate) fn cell_from_value(
    column: &str,
    ty: &ColumnType,
    data_type: &DataType,
    v: &Value,
) -> Result<Cell<'static>, SchemaError> {
    let bad = |reason: String| SchemaError::BadValue {
        column: column.to_owned(),
        reason,
    };
    let int = |v: &Value| {
        v.as_i64()
            .ok_or_else(|| bad(format!("expected an integer, got {}", preview(v))))
    };
    Ok(match data_type {
        DataType::Boolean => Cell::Bool(
            v.as_bool()
                .ok_or_else(|| bad(format!("expected a boolean, got {}", preview(v))))?,
        ),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Date32 => {
            Cell::Int(int_in_range(int(v)?, data_type).map_err(&bad)?)
        }
        DataType::Float32 | DataType::Float64 => Cell::Float(
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => special_float(s),
                _ => None,
            }
            .ok_or_else(|| bad(format!("expected a number, got {}", preview(v))))?,
        ),
        // A `Utf8` column holds strings, and structs and maps as their JSON.
        DataType::Utf8 => match (v, ty.connect) {
            (Value::String(s), _) => Cell::Text(Cow::Owned(s.clone())),
            (other, ConnectType::Map | ConnectType::Struct) => {
                Cell::Text(Cow::Owned(other.to_string()))
            }
            (other, _) => return Err(bad(format!("expected a string, got {}", preview(other)))),
        },
        DataType::Binary => Cell::Bytes(base64_bytes(base64_text(v).map_err(&bad)?).map_err(&bad)?),
        DataType::Decimal128(..) => Cell::Decimal(
            decimal_from_bytes(&base64_bytes(base64_text(v).map_err(&bad)?).map_err(&bad)?)
                .map_err(&bad)?,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Time64(TimeUnit::Microsecond) => {
            Cell::Int(
                match v {
                    Value::String(s) => temporal_from_text(s),
                    _ => temporal_from_int(ty, int(v)?),
                }
                .map_err(&bad)?,
            )
        }
        DataType::List(item_field) => {
            let Value::Array(elements) = v else {
                return Err(bad(format!("expected an array, got {}", preview(v))));
            };
            let item_type = ty.items.as_deref().ok_or_else(|| SchemaError::Unmappable {
                column: column.to_owned(),
                reason: "array without an element type".into(),
            })?;
            for element in elements.iter().filter(|e| !e.is_null()) {
                cell_from_value(column, item_type, item_field.data_type(), element)?;
            }
            Cell::List(v.clone())
        }
        other => {
            return Err(SchemaError::Unmappable {
                column: column.to_owned(),
                reason: format!("no converter for {other}"),
            });
        }
    })
}

/// An integer checked against the range of an integer (or `Date32`) column.
pub(crate) fn int_in_range(i: i64, data_type: &DataType) -> Result<i64, String> {
    let (min, max) = match data_type {
        DataType::Int8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DataType::Int16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DataType::Int32 | DataType::Date32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    if (min..=max).contains(&i) {
        Ok(i)
    } else {
        Err(format!("{i} is out of range for {data_type}"))
    }
}

/// Debezium's `"NaN"` / `"Infinity"` / `"-Infinity"` for a float column.
pub(crate) fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn base64_text(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected base64 text, got {}", preview(v)))
}

/// A `bytes` value: base64 text (the JSON converter's encoding).
pub(crate) fn base64_bytes(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))
}

/// A Connect `Decimal`: a big-endian two's-complement unscaled integer.
pub(crate) fn decimal_from_bytes(raw: &[u8]) -> Result<i128, String> {
    if raw.is_empty() || raw.len() > 16 {
        return Err(format!(
            "decimal of {} bytes does not fit 128 bits",
            raw.len()
        ));
    }
    let fill = if raw[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - raw.len()..].copy_from_slice(raw);
    Ok(i128::from_be_bytes(buf))
}

/// One Arrow array of `values` (None = NULL) of a column.
pub(crate) fn build_array(
    column: &str,
    ty: &ColumnType,
    data_type: &DataType,
    values: &[Option<&Value>],
) -> Result<ArrayRef, SchemaError> {
    if let DataType::List(item_field) = data_type {
        return build_list(column, ty, item_field, values);
    }
    let mut builder = ColumnBuilder::new(column, data_type)?;
    for value in values {
        builder.append(&match value.filter(|v| !v.is_null()) {
            None => Cell::Null,
            Some(v) => cell_from_value(column, ty, data_type, v)?,
        });
    }
    builder.finish(column, ty, data_type)
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

/// A timestamp or time of day in µs from its text: ISO 8601, or `infinity` / `-infinity`.
pub(crate) fn temporal_from_text(text: &str) -> Result<i64, String> {
    match text {
        "infinity" => Ok(i64::MAX),
        "-infinity" => Ok(i64::MIN),
        text => rfc3339_micros(text).map_or_else(
            || {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|t| t.timestamp_micros())
                    .map_err(|e| format!("{text:?} is not an ISO 8601 timestamp: {e}"))
            },
            Ok,
        ),
    }
}

/// The µs since the epoch of the usual timestamp text, `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then
/// `Z` or `±HH:MM` (what Debezium writes for every `timestamptz`); `None` for any other
/// text, valid or not, which chrono then reads (a test checks both agree). chrono's general
/// parser was ~3% of the compactor's decoding samples (~1% of its CPU).
fn rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        b.get(from..from + n)?.iter().try_fold(0_i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (60) is left to chrono.
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0;
    if b[at] == b'.' {
        let n = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&n) {
            return None;
        }
        nanos = digits(at + 1, n)? * 10_i64.pow(9 - n as u32);
        at += 1 + n;
    }
    let offset = match b.get(at..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (proleptic Gregorian; Howard Hinnant's
    // `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + nanos / 1000)
}

/// A timestamp or time of day in µs from an integer in the unit its semantic type says.
pub(crate) fn temporal_from_int(ty: &ColumnType, i: i64) -> Result<i64, String> {
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
/// sort order declared. The compactor and test fixtures both write segments through this (the
/// compactor through [`encode_segment_parallel`], which writes the same bytes).
pub fn encode_segment(
    batch: &RecordBatch,
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use parquet::arrow::ArrowWriter;

    let props = segment_writer_properties(batch, zstd_level, row_group_rows)?;
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(bytes)
}

/// [`encode_segment`] with the columns of each row group encoded and compressed on up to
/// `threads` threads: the same bytes, sooner on a machine with idle cores.
pub fn encode_segment_parallel(
    batch: &RecordBatch,
    zstd_level: i32,
    row_group_rows: usize,
    threads: usize,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use std::sync::Mutex;

    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_writer::compute_leaves;
    use parquet::errors::ParquetError;

    if threads <= 1 || row_group_rows == 0 {
        return encode_segment(batch, zstd_level, row_group_rows);
    }
    let props = segment_writer_properties(batch, zstd_level, row_group_rows)?;
    let mut bytes = Vec::new();
    let writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    let (mut file, columns) = writer.into_serialized_writer()?;
    let rows = batch.num_rows();
    let (mut start, mut row_group) = (0, 0);
    while start < rows {
        let len = row_group_rows.min(rows - start);
        let slice = batch.slice(start, len);
        let mut leaves = Vec::new();
        for (field, column) in slice.schema().fields().iter().zip(slice.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        let writers = columns.create_column_writers(row_group)?;
        if writers.len() != leaves.len() {
            return Err(ParquetError::General(format!(
                "{} column writers for {} leaf columns",
                writers.len(),
                leaves.len()
            )));
        }
        // Each thread takes the next column until none is left.
        let jobs: Vec<Mutex<Option<_>>> = writers
            .into_iter()
            .zip(leaves)
            .map(|job| Mutex::new(Some(job)))
            .collect();
        let chunks = crate::parallel::map_indices(jobs.len(), threads, |i| {
            let taken = jobs[i].lock().unwrap_or_else(|e| e.into_inner()).take();
            let (mut writer, leaf) =
                taken.ok_or_else(|| ParquetError::General("a column was encoded twice".into()))?;
            writer.write(&leaf)?;
            writer.close()
        });
        let mut group = file.next_row_group()?;
        for chunk in chunks {
            chunk?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        start += len;
        row_group += 1;
    }
    file.close()?;
    Ok(bytes)
}

/// The writer settings of segments (see [`encode_segment`]).
fn segment_writer_properties(
    batch: &RecordBatch,
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<parquet::file::properties::WriterProperties, parquet::errors::ParquetError> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::metadata::SortingColumn;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;

    let sorting = ["_key", "_commit_pos", "_seq"]
        .iter()
        .filter_map(|name| batch.schema().index_of(name).ok())
        .map(|column_idx| SortingColumn {
            column_idx: column_idx as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page);
    // (Nearly) a new value every row: an event id, a change's position, its commit's position
    // (shared only within a transaction). A dictionary would cost the interning and fall back
    // or outgrow the plain values (measured: the 2M-event bench's encode ~3-5% faster, its
    // files 2.6% smaller).
    for name in [EVENT_ID_COLUMN, COMMIT_POS_COLUMN, SEQ_COLUMN] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    Ok(builder
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_sorting_columns(Some(sorting))
        .build())
}
