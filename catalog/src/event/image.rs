//! A change's stored image parsed straight into segment cells: one pass over the image's
//! JSON, each value converted to its column's Arrow type as it is read, and its JSON text
//! kept for the event id. No `serde_json::Value` per cell, no column names per row.
//!
//! This is the decoder's fast path, not a second decoder: it takes only what it is sure to
//! read exactly as the general path does ([`super::change_event`] then
//! [`SegmentRow::from_event`]), and answers `None` for everything else (a value that does not
//! fit its column, Debezium's unavailable-value placeholder, unchanged-TOAST lists,
//! variable-scale decimals, an undeclared or repeated column, a record without a key, a
//! truncate), which the general path then decodes, with its precise errors. A test decodes
//! the same records both ways and compares the rows.

use std::borrow::Cow;
use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};
use serde::Deserialize as _;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{
    Change, DerivedColumns, IdHasher, Operation, Row, UNAVAILABLE_BASE64, UNAVAILABLE_VALUE,
    encode_key, maybe_unavailable,
};
use crate::rows::{Cell, SegmentRow};
use crate::schema::{
    ColumnSchema, base64_bytes, cell_from_value, decimal_from_bytes, int_in_range, special_float,
    temporal_from_int, temporal_from_text,
};

/// The change's segment row, or `None` if the general path must decode it.
pub(crate) fn direct_row<'a>(change: &Change<'a>, types: &[DataType]) -> Option<SegmentRow<'a>> {
    let derived = &change.derived;
    let columns = &derived.schema.columns;
    if !derived.variable_scale.is_empty()
        || change
            .source
            .unchanged_toast
            .is_some_and(|raw| raw.get() != "null")
    {
        return None;
    }
    let key = change.key_row.as_ref()?;
    let object_or_null = |raw: Option<&RawValue>| {
        raw.is_none_or(|raw| raw.get() == "null" || raw.get().starts_with('{'))
    };
    if !object_or_null(change.payload.before) || !object_or_null(change.payload.after) {
        return None;
    }
    let given = |raw: Option<&'a RawValue>| raw.filter(|raw| raw.get() != "null");
    let image = match change.op {
        Operation::Create | Operation::Read | Operation::Update => {
            Some(given(change.payload.after)?)
        }
        Operation::Delete => given(change.payload.before).or(given(change.payload.after)),
        Operation::Truncate => return None,
    };

    let mut cells = vec![Cell::Null; columns.len()];
    // The JSON text of each cell in the image, for the event id.
    let mut texts: Vec<u8> = Vec::with_capacity(256);
    let mut spans: Vec<Option<(usize, usize)>> = vec![None; columns.len()];
    if let Some(image) = image {
        let mut de = serde_json::Deserializer::from_str(image.get());
        ImageSeed {
            columns,
            types,
            cells: &mut cells,
            texts: &mut texts,
            spans: &mut spans,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
    }
    image_row(
        derived,
        types,
        ImageCells {
            cells,
            spans: &spans,
            texts: &texts,
        },
        change.row_head(),
        key,
    )
}

/// A change's image read into cells (schema order), with each cell's JSON text in `texts`.
pub(super) struct ImageCells<'t, 'a> {
    pub(super) cells: Vec<Cell<'a>>,
    pub(super) spans: &'t [Option<(usize, usize)>],
    pub(super) texts: &'t [u8],
}

/// What a segment row has besides its cells, key and id.
pub(super) struct RowHead<'a> {
    pub(super) op: Operation,
    pub(super) commit_ts_us: i64,
    pub(super) position: super::SourcePosition,
    pub(super) tx_id: Option<Cow<'a, str>>,
}

impl<'a> Change<'a> {
    fn row_head(&self) -> RowHead<'a> {
        RowHead {
            op: self.op,
            commit_ts_us: self.commit_ts_us,
            position: self.position,
            tx_id: self.tx_id.clone(),
        }
    }
}

/// The segment row of an image read into cells: a delete's missing key columns filled in from
/// the key document, the event id hashed from the cells' JSON texts (both decoders' last step).
pub(super) fn image_row<'a>(
    derived: &DerivedColumns,
    types: &[DataType],
    image: ImageCells<'_, 'a>,
    head: RowHead<'a>,
    key: &Row,
) -> Option<SegmentRow<'a>> {
    let columns = &derived.schema.columns;
    let ImageCells {
        mut cells,
        spans,
        texts,
    } = image;
    if head.op == Operation::Delete {
        // A delete's image may lack key columns the key document has.
        for (index, column) in columns.iter().enumerate() {
            if spans[index].is_none()
                && let Some(value) = key.get(&column.name).filter(|v| !v.is_null())
            {
                cells[index] =
                    cell_from_value(&column.name, &column.column_type, &types[index], value)
                        .ok()?;
            }
        }
    }
    let mut id = IdHasher::new(&derived.ids, &derived.schema.table, head.op, key);
    id.count(spans.iter().flatten().count());
    for &index in &derived.by_name {
        if let Some((start, end)) = spans[index] {
            id.cell(&columns[index].name, |buf| {
                buf.extend_from_slice(&texts[start..end]);
            });
        }
    }
    Some(SegmentRow {
        op: head.op,
        commit_ts_us: head.commit_ts_us,
        position: head.position,
        tx_id: head.tx_id,
        id: id.finish(head.commit_ts_us, head.position),
        key: encode_key(key),
        unchanged: Vec::new(),
        cells,
    })
}

/// Parses an image object into `cells` (schema order), recording each member's JSON text.
struct ImageSeed<'s, 'a> {
    columns: &'s [ColumnSchema],
    types: &'s [DataType],
    cells: &'s mut Vec<Cell<'a>>,
    texts: &'s mut Vec<u8>,
    spans: &'s mut Vec<Option<(usize, usize)>>,
}

impl<'a> DeserializeSeed<'a> for ImageSeed<'_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for ImageSeed<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row image object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let mut next = 0;
        while let Some(name) = map.next_key::<&'a str>()? {
            // Images come in schema order: try the next column first.
            let index = match self.columns.get(next) {
                Some(column) if column.name == name => next,
                _ => self
                    .columns
                    .iter()
                    .position(|c| c.name == name)
                    .ok_or_else(|| A::Error::custom("undeclared column"))?,
            };
            if self.spans[index].is_some() {
                return Err(A::Error::custom("column given twice"));
            }
            let start = self.texts.len();
            self.cells[index] = map.next_value_seed(CellSeed {
                column: &self.columns[index],
                data_type: &self.types[index],
                text: &mut *self.texts,
            })?;
            self.spans[index] = Some((start, self.texts.len()));
            next = index + 1;
        }
        Ok(())
    }
}

/// Parses one value into a cell of its column's type, appending its JSON text to `text`.
struct CellSeed<'s> {
    column: &'s ColumnSchema,
    data_type: &'s DataType,
    text: &'s mut Vec<u8>,
}

impl<'a> DeserializeSeed<'a> for CellSeed<'_> {
    type Value = Cell<'a>;

    fn deserialize<D: serde::Deserializer<'a>>(
        self,
        deserializer: D,
    ) -> Result<Cell<'a>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl CellSeed<'_> {
    fn write(&mut self, value: &impl serde::Serialize) {
        // Writing to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *self.text, value);
    }

    fn integer<E: serde::de::Error>(self, i: i64) -> Result<Cell<'static>, E> {
        integer_cell(self.column, self.data_type, i).map_err(E::custom)
    }

    /// A JSON array or object: through a `Value`, as the general path reads it.
    fn nested<'a, E: serde::de::Error>(mut self, value: Value) -> Result<Cell<'a>, E> {
        self.write(&value);
        if maybe_unavailable(&value) {
            return Err(E::custom("placeholder"));
        }
        let column = self.column;
        cell_from_value(&column.name, &column.column_type, self.data_type, &value)
            .map_err(E::custom)
    }
}

impl<'a> Visitor<'a> for CellSeed<'_> {
    type Value = Cell<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of column {}", self.column.name)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Cell<'a>, E> {
        self.text.extend_from_slice(b"null");
        Ok(Cell::Null)
    }

    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<Cell<'a>, E> {
        self.write(&b);
        match self.data_type {
            DataType::Boolean => Ok(Cell::Bool(b)),
            _ => Err(E::custom("not a boolean column")),
        }
    }

    fn visit_i64<E: serde::de::Error>(mut self, i: i64) -> Result<Cell<'a>, E> {
        self.write(&i);
        self.integer(i)
    }

    fn visit_u64<E: serde::de::Error>(mut self, u: u64) -> Result<Cell<'a>, E> {
        self.write(&u);
        match i64::try_from(u) {
            Ok(i) => self.integer(i),
            Err(_) => Err(E::custom("beyond i64")),
        }
    }

    fn visit_f64<E: serde::de::Error>(mut self, f: f64) -> Result<Cell<'a>, E> {
        self.write(&f);
        match self.data_type {
            DataType::Float32 | DataType::Float64 => Ok(Cell::Float(f)),
            _ => Err(E::custom("not a float column")),
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'a str) -> Result<Cell<'a>, E> {
        // No escapes: serde_json writes it back as it stands.
        self.text.push(b'"');
        self.text.extend_from_slice(s.as_bytes());
        self.text.push(b'"');
        text_cell(self.data_type, Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(mut self, s: &str) -> Result<Cell<'a>, E> {
        self.write(&s);
        text_cell(self.data_type, Cow::Owned(s.to_owned()))
    }

    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<Cell<'a>, A::Error> {
        let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.nested(value)
    }

    fn visit_seq<A: SeqAccess<'a>>(self, seq: A) -> Result<Cell<'a>, A::Error> {
        let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.nested(value)
    }
}

/// A JSON string as a cell of its column's type.
pub(super) fn text_cell<'a, E: serde::de::Error>(
    data_type: &DataType,
    s: Cow<'a, str>,
) -> Result<Cell<'a>, E> {
    if s == UNAVAILABLE_VALUE || s == UNAVAILABLE_BASE64 {
        return Err(E::custom("placeholder"));
    }
    match data_type {
        DataType::Utf8 => Ok(Cell::Text(s)),
        DataType::Float32 | DataType::Float64 => special_float(&s)
            .map(Cell::Float)
            .ok_or_else(|| E::custom("not a float")),
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Time64(TimeUnit::Microsecond) => {
            temporal_from_text(&s).map(Cell::Int).map_err(E::custom)
        }
        DataType::Binary => base64_bytes(&s).map(Cell::Bytes).map_err(E::custom),
        DataType::Decimal128(..) => base64_bytes(&s)
            .and_then(|raw| decimal_from_bytes(&raw))
            .map(Cell::Decimal)
            .map_err(E::custom),
        _ => Err(E::custom("not a text column")),
    }
}

/// A JSON integer as a cell of its column's type.
pub(super) fn integer_cell(
    column: &ColumnSchema,
    data_type: &DataType,
    i: i64,
) -> Result<Cell<'static>, String> {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Date32 => {
            int_in_range(i, data_type).map(Cell::Int)
        }
        DataType::Float32 | DataType::Float64 => Ok(Cell::Float(i as f64)),
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Time64(TimeUnit::Microsecond) => {
            temporal_from_int(&column.column_type, i).map(Cell::Int)
        }
        _ => Err(String::new()),
    }
}
