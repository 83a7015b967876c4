//! Records in strata's Avro format ([`crate::avro`]) decoded into segment rows.
//!
//! The usual record (a change with a key, known writer schemas, no unchanged-TOAST list, no
//! variable-scale decimal, a commit position in `source`) is read in one pass over its datum:
//! the envelope's parts are located by the plan compiled once per writer schema, `source` gives
//! the table and position, and the stored image is read straight into cells, each value's JSON
//! converter text written for the event id as the JSON path writes it. Everything else goes
//! through the JSON path: the datum is turned back into the document the JSON converter would
//! have written, so both formats give the same rows, the same ids and the same errors. A test
//! decodes the same events in both formats and compares.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use serde_json::Value;

use super::image::{ImageCells, RowHead, image_row, integer_cell, text_cell};
use super::{
    DecodeError, DecodedRow, DerivedColumns, Operation, SchemaCache, SourcePosition,
    decode_debezium_row, maybe_unavailable,
};
use crate::avro::{
    self, HEADER_LEN, Shape, WriterSchema, float_json, read_bytes, read_datum, read_long, widen_f32,
};
use crate::rows::Cell;
use crate::schema::cell_from_value;

/// A writer schema and what decoding needs of it, compiled once.
#[derive(Debug)]
pub(crate) struct AvroSchema {
    writer: WriterSchema,
    /// `None`: not a Debezium envelope the fast path knows (a key schema, a heartbeat…).
    plan: Option<EnvelopePlan>,
    /// As a key document: its columns (`None`: not a struct of them).
    key: Option<Vec<FieldPlan>>,
}

impl AvroSchema {
    fn new(writer: WriterSchema) -> Self {
        let plan = EnvelopePlan::compile(writer.connect());
        let key = EnvelopePlan::image(writer.connect());
        Self { writer, plan, key }
    }

    /// The JSON converter's document for a message of this schema: `{"schema":…,"payload":…}`.
    fn json_document(&self, message: &[u8]) -> Result<Vec<u8>, avro::AvroError> {
        let payload = self.writer.decode(message)?;
        let mut out = Vec::with_capacity(self.writer.connect_text().len() + 256);
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(self.writer.connect_text().as_bytes());
        out.extend_from_slice(b",\"payload\":");
        // Writing a `Value` to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, &payload);
        out.push(b'}');
        Ok(out)
    }
}

/// The writer schemas a consumer knows, shared by its decoding threads (each also keeps the
/// ones it used in its [`SchemaCache`]). Filled from the schema topic.
#[derive(Debug, Clone, Default)]
pub struct AvroSchemas(Arc<RwLock<HashMap<u64, Arc<AvroSchema>>>>);

impl AvroSchemas {
    /// Adds a writer schema; `false` if it was known.
    pub fn insert(&self, writer: WriterSchema) -> bool {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(&writer.fingerprint()) {
            return false;
        }
        map.insert(writer.fingerprint(), Arc::new(AvroSchema::new(writer)));
        true
    }

    /// How many schemas are known.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, fingerprint: u64) -> Option<Arc<AvroSchema>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fingerprint)
            .cloned()
    }
}

impl SchemaCache {
    /// A cache that resolves Avro writer schemas from `schemas`.
    pub fn with_avro(schemas: AvroSchemas) -> Self {
        Self {
            avro: schemas,
            ..Self::default()
        }
    }

    fn avro_schema(&mut self, fingerprint: u64) -> Option<Arc<AvroSchema>> {
        if let Some(found) = self.avro_used.get(&fingerprint) {
            return Some(Arc::clone(found));
        }
        let found = Arc::new(AvroSchema::new(self.avro.get(fingerprint)?.writer.clone()));
        if self.avro_used.len() >= Self::CAPACITY {
            self.avro_used.clear();
            self.avro_columns.clear();
        }
        self.avro_used.insert(fingerprint, Arc::clone(&found));
        Some(found)
    }
}

/// Where the envelope's parts are, in field order.
#[derive(Debug)]
struct EnvelopePlan {
    /// Each field's part and shape.
    fields: Vec<(Part, Shape)>,
    /// Each field of `source`: its part, whether it is optional, its shape.
    source: Vec<(SourcePart, bool, Shape)>,
    source_optional: bool,
    before: Vec<FieldPlan>,
    after: Vec<FieldPlan>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Before,
    After,
    Source,
    Op,
    Transaction,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SourcePart {
    Name,
    Schema,
    Db,
    Table,
    Collection,
    TsMs,
    TsUs,
    Lsn,
    CommitLsn,
    TxId,
    TxIdText,
    UnchangedToast,
    Other,
}

/// One column of an image.
#[derive(Debug)]
struct FieldPlan {
    name: String,
    optional: bool,
    kind: Kind,
    /// The field's layout, for skipping it.
    shape: Shape,
    /// The field's schema, not optional: the value's own type (for [`Kind::Nested`]).
    value_node: Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Long,
    Float,
    Double,
    Bool,
    Str,
    Bytes,
    /// Read as a JSON value (arrays, maps, structs).
    Nested,
}

fn optional(node: &Value) -> bool {
    node.get("optional").and_then(Value::as_bool) == Some(true)
}

fn type_of(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

impl EnvelopePlan {
    fn compile(connect: &Value) -> Option<Self> {
        let name = connect.get("name").and_then(Value::as_str).unwrap_or("");
        if type_of(connect) != "struct" || name.contains("Heartbeat") {
            return None;
        }
        let mut plan = Self {
            fields: Vec::new(),
            source: Vec::new(),
            source_optional: false,
            before: Vec::new(),
            after: Vec::new(),
        };
        for field in connect.get("fields")?.as_array()? {
            let part = match field.get("field")?.as_str()? {
                "before" => {
                    plan.before = Self::image(field)?;
                    Part::Before
                }
                "after" => {
                    plan.after = Self::image(field)?;
                    Part::After
                }
                "source" => {
                    plan.source_optional = optional(field);
                    plan.source = Self::source(field)?;
                    Part::Source
                }
                "op" if type_of(field) == "string" => Part::Op,
                "transaction" => Part::Transaction,
                _ => Part::Other,
            };
            plan.fields.push((part, Shape::of(field)?));
        }
        let has = |p: Part| plan.fields.iter().any(|(part, _)| *part == p);
        (has(Part::Source) && has(Part::Op) && (has(Part::Before) || has(Part::After)))
            .then_some(plan)
    }

    fn image(node: &Value) -> Option<Vec<FieldPlan>> {
        if type_of(node) != "struct" {
            return None;
        }
        node.get("fields")?
            .as_array()?
            .iter()
            .map(|field| {
                let kind = match type_of(field) {
                    "int8" | "int16" | "int32" | "int64" => Kind::Long,
                    "float" | "float32" => Kind::Float,
                    "double" | "float64" => Kind::Double,
                    "boolean" => Kind::Bool,
                    "string" => Kind::Str,
                    "bytes" => Kind::Bytes,
                    _ => Kind::Nested,
                };
                let mut value_node = field.clone();
                value_node
                    .as_object_mut()?
                    .insert("optional".into(), Value::Bool(false));
                Some(FieldPlan {
                    name: field.get("field")?.as_str()?.to_owned(),
                    optional: optional(field),
                    kind,
                    shape: Shape::of(field)?,
                    value_node,
                })
            })
            .collect()
    }

    fn source(node: &Value) -> Option<Vec<(SourcePart, bool, Shape)>> {
        if type_of(node) != "struct" {
            return None;
        }
        node.get("fields")?
            .as_array()?
            .iter()
            .map(|field| {
                let name = field.get("field")?.as_str()?;
                let ty = type_of(field);
                let part = match (name, ty) {
                    ("name", "string") => SourcePart::Name,
                    ("schema", "string") => SourcePart::Schema,
                    ("db", "string") => SourcePart::Db,
                    ("table", "string") => SourcePart::Table,
                    ("collection", "string") => SourcePart::Collection,
                    ("ts_ms", "int64") => SourcePart::TsMs,
                    ("ts_us", "int64") => SourcePart::TsUs,
                    ("lsn", "int64") => SourcePart::Lsn,
                    ("commit_lsn", "int64") => SourcePart::CommitLsn,
                    ("txId", "int64") => SourcePart::TxId,
                    ("txId", "string") => SourcePart::TxIdText,
                    ("unchanged_toast", _) => SourcePart::UnchangedToast,
                    _ => SourcePart::Other,
                };
                Some((part, optional(field), Shape::of(field)?))
            })
            .collect()
    }
}

/// Reads an optional value's union branch: `Some(true)` when a value follows.
fn present(node_optional: bool, input: &mut &[u8]) -> Option<bool> {
    if !node_optional {
        return Some(true);
    }
    match read_long(input)? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

fn read_str<'a>(input: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(read_bytes(input)?).ok()
}

/// Decodes one record whose value (and key) are strata Avro messages. A writer schema not yet
/// known: [`DecodedRow::MissingSchema`].
pub(crate) fn decode_avro_row<'a>(
    key: Option<&[u8]>,
    value: &'a [u8],
    topic: &str,
    cache: &mut SchemaCache,
) -> Result<DecodedRow<'a>, DecodeError> {
    let err = |reason: String| DecodeError::new(topic, reason);
    let fingerprint = avro::message_fingerprint(value)
        .ok_or_else(|| err("value: an Avro message shorter than its header".into()))?;
    let Some(schema) = cache.avro_schema(fingerprint) else {
        return Ok(DecodedRow::MissingSchema { fingerprint });
    };
    let key = key.filter(|k| !k.iter().all(u8::is_ascii_whitespace));
    let key_schema = match key {
        Some(bytes) => {
            let fingerprint = avro::message_fingerprint(bytes).ok_or_else(|| {
                err("key: not an Avro single-object encoding, but the value is one".into())
            })?;
            match cache.avro_schema(fingerprint) {
                Some(found) => Some(found),
                None => return Ok(DecodedRow::MissingSchema { fingerprint }),
            }
        }
        None => None,
    };
    if let (Some(key), Some(key_schema)) = (key, &key_schema)
        && let Some(row) = fast_row(&schema, key_schema, key, value, cache)
    {
        return Ok(row);
    }
    // The JSON path, on the documents the JSON converter would have written.
    let (key_json, value_json) = json_documents(key, value, topic, cache)?;
    Ok(
        match decode_debezium_row(key_json.as_deref(), &value_json, topic, cache)? {
            DecodedRow::Row { row, schema } => DecodedRow::Row {
                row: row.into_owned(),
                schema,
            },
            DecodedRow::Skip(skip) => DecodedRow::Skip(skip),
            DecodedRow::MissingSchema { fingerprint } => DecodedRow::MissingSchema { fingerprint },
        },
    )
}

/// The documents the JSON converter would have written for an Avro record's key and value.
/// A writer schema not known is an error naming its fingerprint.
pub(crate) fn json_documents(
    key: Option<&[u8]>,
    value: &[u8],
    topic: &str,
    cache: &mut SchemaCache,
) -> Result<(Option<Vec<u8>>, Vec<u8>), DecodeError> {
    let mut document = |what: &str, message: &[u8]| {
        let err = |reason: String| DecodeError::new(topic, format!("{what}: {reason}"));
        let fingerprint = avro::message_fingerprint(message)
            .ok_or_else(|| err("not an Avro single-object encoding".into()))?;
        let schema = cache.avro_schema(fingerprint).ok_or_else(|| {
            err(format!(
                "Avro writer schema {fingerprint:016x} is not known (not in the schema topic)"
            ))
        })?;
        schema
            .json_document(message)
            .map_err(|e| err(e.to_string()))
    };
    let key = key.filter(|k| !k.iter().all(u8::is_ascii_whitespace));
    let key = key.map(|k| document("key", k)).transpose()?;
    Ok((key, document("value", value)?))
}

/// Whether the one-pass path decodes this record (tests check it takes the usual ones).
#[cfg(test)]
pub(super) fn fast_path_takes(key: &[u8], value: &[u8], cache: &mut SchemaCache) -> bool {
    let schemas = avro::message_fingerprint(value)
        .zip(avro::message_fingerprint(key))
        .and_then(|(v, k)| Some((cache.avro_schema(v)?, cache.avro_schema(k)?)));
    schemas.is_some_and(|(schema, key_schema)| {
        fast_row(&schema, &key_schema, key, value, cache).is_some()
    })
}

/// What the fast path reads of `source`.
#[derive(Default)]
struct Source<'a> {
    name: Option<&'a str>,
    schema: Option<&'a str>,
    db: Option<&'a str>,
    table: Option<&'a str>,
    collection: Option<&'a str>,
    ts_ms: Option<i64>,
    ts_us: Option<i64>,
    lsn: Option<i64>,
    commit_lsn: Option<i64>,
    tx_id: Option<Cow<'a, str>>,
}

/// Whether the fields of `plan`'s images are `derived`'s columns, in order (the usual case:
/// both come from the same schema), so that [`read_image`] need not match names.
fn aligned(plan: &EnvelopePlan, derived: &DerivedColumns) -> bool {
    let columns = &derived.schema.columns;
    [&plan.before, &plan.after].into_iter().all(|fields| {
        fields.len() <= columns.len() && fields.iter().zip(columns).all(|(f, c)| f.name == c.name)
    })
}

/// Scratch for the cells' JSON texts: the texts, and where each column's is (`None`: not in
/// the image).
struct Texts<'s> {
    texts: &'s mut Vec<u8>,
    spans: &'s mut Vec<Option<(usize, usize)>>,
}

/// Reads an image's fields into the cells of `derived`'s columns (schema order), their texts
/// into `out`; `aligned` as [`aligned`] answers.
fn read_image<'a>(
    fields: &[FieldPlan],
    derived: &DerivedColumns,
    aligned: bool,
    input: &mut &'a [u8],
    out: &mut Texts<'_>,
) -> Option<Vec<Cell<'a>>> {
    let columns = &derived.schema.columns;
    let types = derived.types.as_ref().ok()?;
    let mut cells = vec![Cell::Null; columns.len()];
    let Texts { texts, spans } = out;
    texts.clear();
    spans.clear();
    spans.resize(columns.len(), None);
    for (i, field) in fields.iter().enumerate() {
        let index = match columns.get(i) {
            Some(_) if aligned => i,
            Some(column) if column.name == field.name => i,
            _ => columns.iter().position(|c| c.name == field.name)?,
        };
        let start = texts.len();
        cells[index] = read_cell(field, &columns[index], &types[index], input, texts)?;
        spans[index] = Some((start, texts.len()));
    }
    Some(cells)
}

/// The row of a usual record, or `None` for the JSON path to decode.
///
/// One pass: the `after` image comes before `source` (which names the table), so it is read
/// with the columns the previous record of this writer schema had, and read again only if
/// `source` names another table or key.
fn fast_row<'a>(
    schema: &AvroSchema,
    key_schema: &AvroSchema,
    key: &[u8],
    value: &'a [u8],
    cache: &mut SchemaCache,
) -> Option<DecodedRow<'a>> {
    let plan = schema.plan.as_ref()?;
    let fingerprint = schema.writer.fingerprint();
    let guess = cache
        .avro_columns
        .get(&fingerprint)
        .filter(|(d, _)| d.types.is_ok() && d.variable_scale.is_empty())
        .cloned();
    let mut texts = std::mem::take(&mut cache.avro_texts);
    let mut spans = std::mem::take(&mut cache.avro_spans);
    let mut scratch = Texts {
        texts: &mut texts,
        spans: &mut spans,
    };
    let mut input = value.get(HEADER_LEN..)?;
    let mut before: Option<&'a [u8]> = None;
    let mut after: Option<&'a [u8]> = None;
    let mut read_after: Option<Vec<Cell<'a>>> = None;
    let mut op = None;
    let mut transaction = false;
    let mut source = Source::default();
    for (part, shape) in &plan.fields {
        match part {
            Part::Before | Part::After => {
                if present(matches!(shape, Shape::Optional(_)), &mut input)? {
                    let image = input;
                    if let (Part::After, Some((guess, aligned))) = (part, &guess) {
                        read_after =
                            read_image(&plan.after, guess, *aligned, &mut input, &mut scratch);
                        if read_after.is_none() {
                            input = image;
                            for field in &plan.after {
                                field.shape.skip(&mut input)?;
                            }
                        }
                    } else {
                        let fields = if *part == Part::Before {
                            &plan.before
                        } else {
                            &plan.after
                        };
                        for field in fields {
                            field.shape.skip(&mut input)?;
                        }
                    }
                    let image = &image[..image.len() - input.len()];
                    if *part == Part::Before {
                        before = Some(image);
                    } else {
                        after = Some(image);
                    }
                }
            }
            Part::Source => {
                if !present(plan.source_optional, &mut input)? {
                    return None;
                }
                read_source(&plan.source, &mut input, &mut source)?;
            }
            Part::Op => op = Some(read_str(&mut input)?),
            Part::Transaction => {
                let start = input;
                shape.skip(&mut input)?;
                // Not null: it may carry the commit position (the JSON path reads it).
                transaction = !matches!(shape, Shape::Optional(_)) || start.first() != Some(&0);
            }
            Part::Other => shape.skip(&mut input)?,
        }
    }
    if !input.is_empty() {
        return None;
    }
    let op = match op? {
        "c" => Operation::Create,
        "u" => Operation::Update,
        "d" => Operation::Delete,
        "r" => Operation::Read,
        _ => return None,
    };
    let names = (
        Cow::Borrowed(source.name?),
        Cow::Borrowed(source.schema.or(source.db)?),
        Cow::Borrowed(source.table.or(source.collection)?),
    );
    let commit_ts_us = match (source.ts_us, source.ts_ms) {
        (Some(us), _) => us,
        (None, Some(ms)) => ms.checked_mul(1000)?,
        (None, None) => return None,
    };
    let seq = u64::try_from(source.lsn?).ok()?;
    let commit = match source.commit_lsn {
        Some(lsn) => u64::try_from(lsn).ok()?,
        None if !transaction => seq,
        None => return None,
    };
    let position = SourcePosition { commit, seq };

    // The key document, in its schema's column order.
    let mut key_input = key.get(HEADER_LEN..)?;
    let mut key_row = std::mem::take(&mut cache.avro_key);
    let key_fields = key_schema.key.as_ref()?;
    for (i, field) in key_fields.iter().enumerate() {
        key_row.set_at(i, &field.name, read_value(field, &mut key_input)?);
    }
    key_row.truncate(key_fields.len());
    if !key_input.is_empty() {
        return None;
    }

    let derived = cache
        .derived_columns(schema.writer.connect(), &names, Some(&key_row))
        .ok()?;
    let types = derived.types.as_ref().ok()?;
    if !derived.variable_scale.is_empty() {
        return None;
    }
    let aligned = match &guess {
        Some((g, aligned)) if Arc::ptr_eq(g, &derived) => *aligned,
        _ => {
            let aligned = aligned(plan, &derived);
            cache
                .avro_columns
                .insert(fingerprint, (Arc::clone(&derived), aligned));
            read_after = None;
            aligned
        }
    };
    let image = match op {
        Operation::Delete => match (before, after) {
            (Some(mut image), _) => Some(read_image(
                &plan.before,
                &derived,
                aligned,
                &mut image,
                &mut scratch,
            )?),
            (None, Some(mut image)) => Some(read_image(
                &plan.after,
                &derived,
                aligned,
                &mut image,
                &mut scratch,
            )?),
            (None, None) => None,
        },
        _ => match read_after {
            Some(image) => Some(image),
            None => Some(read_image(
                &plan.after,
                &derived,
                aligned,
                &mut after?,
                &mut scratch,
            )?),
        },
    };
    let cells = image.unwrap_or_else(|| {
        let columns = derived.schema.columns.len();
        texts.clear();
        spans.clear();
        spans.resize(columns, None);
        vec![Cell::Null; columns]
    });
    let head = RowHead {
        op,
        commit_ts_us,
        position,
        tx_id: source.tx_id,
    };
    let image = ImageCells {
        cells,
        spans: &spans,
        texts: &texts,
    };
    let row = image_row(&derived, types, image, head, &key_row)?;
    cache.avro_texts = texts;
    cache.avro_spans = spans;
    cache.avro_key = key_row;
    Some(DecodedRow::Row {
        row,
        schema: Arc::clone(&derived.schema),
    })
}

fn read_source<'a>(
    plan: &[(SourcePart, bool, Shape)],
    input: &mut &'a [u8],
    source: &mut Source<'a>,
) -> Option<()> {
    for (part, optional, shape) in plan {
        if *part == SourcePart::Other {
            shape.skip(input)?;
            continue;
        }
        if !present(*optional, input)? {
            continue;
        }
        match part {
            SourcePart::Name => source.name = Some(read_str(input)?),
            SourcePart::Schema => source.schema = Some(read_str(input)?),
            SourcePart::Db => source.db = Some(read_str(input)?),
            SourcePart::Table => source.table = Some(read_str(input)?),
            SourcePart::Collection => source.collection = Some(read_str(input)?),
            SourcePart::TsMs => source.ts_ms = Some(read_long(input)?),
            SourcePart::TsUs => source.ts_us = Some(read_long(input)?),
            SourcePart::Lsn => source.lsn = Some(read_long(input)?),
            SourcePart::CommitLsn => source.commit_lsn = Some(read_long(input)?),
            SourcePart::TxId => source.tx_id = Some(Cow::Owned(read_long(input)?.to_string())),
            SourcePart::TxIdText => source.tx_id = Some(Cow::Borrowed(read_str(input)?)),
            // A list of unchanged TOASTed columns: the JSON path reads those.
            SourcePart::UnchangedToast => return None,
            SourcePart::Other => {}
        }
    }
    Some(())
}

/// Reads one value as the JSON converter's value.
fn read_value(field: &FieldPlan, input: &mut &[u8]) -> Option<Value> {
    if !present(field.optional, input)? {
        return Some(Value::Null);
    }
    Some(match field.kind {
        Kind::Long => Value::from(read_long(input)?),
        Kind::Str => Value::String(read_str(input)?.to_owned()),
        _ => read_datum(&field.value_node, input, "").ok()?,
    })
}

/// Whether serde_json writes `s` as it stands between quotes: no `"`, `\\` or control
/// character. Eight bytes at a time: a word has a byte below `n` (`n` <= 128) if
/// `(x - n·0x01..01) & !x & 0x80..80` is not zero, and a byte equal to `c` if `x ^ c·0x01..01`
/// has a zero byte (a byte below 1); a borrow only marks bytes above a true mark.
fn plain(s: &str) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut words = s.as_bytes().chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes);
        if below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return false;
        }
    }
    !words
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Reads one image value into its cell, appending the JSON converter's text of it to `texts`.
fn read_cell<'a>(
    field: &FieldPlan,
    column: &crate::schema::ColumnSchema,
    data_type: &arrow::datatypes::DataType,
    input: &mut &'a [u8],
    texts: &mut Vec<u8>,
) -> Option<Cell<'a>> {
    use arrow::datatypes::DataType;
    if !present(field.optional, input)? {
        texts.extend_from_slice(b"null");
        return Some(Cell::Null);
    }
    let float = |f: f64, texts: &mut Vec<u8>| -> Option<Cell<'a>> {
        match float_json(f) {
            Value::Number(_) => {
                let _ = serde_json::to_writer(&mut *texts, &f);
                matches!(data_type, DataType::Float32 | DataType::Float64).then_some(Cell::Float(f))
            }
            Value::String(s) => {
                let _ = serde_json::to_writer(&mut *texts, &s);
                text_cell::<serde_json::Error>(data_type, Cow::Owned(s)).ok()
            }
            _ => None,
        }
    };
    match field.kind {
        Kind::Long => {
            let n = read_long(input)?;
            let _ = serde_json::to_writer(&mut *texts, &n);
            integer_cell(column, data_type, n).ok()
        }
        Kind::Float => {
            let raw = f32::from_le_bytes(input.get(..4)?.try_into().ok()?);
            *input = &input[4..];
            float(
                if raw.is_finite() {
                    widen_f32(raw)
                } else {
                    f64::from(raw)
                },
                texts,
            )
        }
        Kind::Double => {
            let raw = f64::from_le_bytes(input.get(..8)?.try_into().ok()?);
            *input = &input[8..];
            float(raw, texts)
        }
        Kind::Bool => {
            let b = match *input.first()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            *input = &input[1..];
            texts.extend_from_slice(if b { b"true" } else { b"false" });
            (*data_type == DataType::Boolean).then_some(Cell::Bool(b))
        }
        Kind::Str => {
            let s = read_str(input)?;
            if plain(s) {
                texts.push(b'"');
                texts.extend_from_slice(s.as_bytes());
                texts.push(b'"');
            } else {
                let _ = serde_json::to_writer(&mut *texts, s);
            }
            text_cell::<serde_json::Error>(data_type, Cow::Borrowed(s)).ok()
        }
        Kind::Bytes => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(read_bytes(input)?);
            texts.push(b'"');
            texts.extend_from_slice(b64.as_bytes());
            texts.push(b'"');
            text_cell::<serde_json::Error>(data_type, Cow::Owned(b64)).ok()
        }
        Kind::Nested => {
            let value = read_datum(&field.value_node, input, "").ok()?;
            let _ = serde_json::to_writer(&mut *texts, &value);
            if maybe_unavailable(&value) {
                return None;
            }
            cell_from_value(&column.name, &column.column_type, data_type, &value).ok()
        }
    }
}

#[cfg(test)]
mod plain_tests {
    proptest::proptest! {
        /// A string is plain exactly when serde_json writes it as it stands between quotes.
        #[test]
        fn plain_is_what_serde_json_leaves_alone(s in "(\\PC|[\"\\\\\u{0}-\u{1f}\u{7f}-\u{a0}]){0,40}") {
            let quoted = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(super::plain(&s), quoted[1..quoted.len() - 1] == s);
        }
    }
}
