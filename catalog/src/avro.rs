//! strata's Avro wire format: the Debezium envelope in Avro binary, for throughput.
//!
//! With the JSON converter every record carries its few kilobytes of Connect schema, and most of
//! a compactor's CPU goes to reading JSON. With `[kafka] format = "avro"` strata's capture writes
//! each Kafka key and value as an Avro *single-object encoding* instead:
//!
//! ```text
//!  C3 01 | fingerprint (8 bytes, little-endian) | Avro binary datum of the envelope
//! ```
//!
//! and publishes each writer schema once, before its first record, to a compacted topic
//! ([`DEFAULT_SCHEMA_TOPIC`]): key = the fingerprint as 16 hex digits, value =
//!
//! ```text
//! {"fingerprint":"<16 hex>","connect":<the Connect schema>,"avro":<the Avro schema>}
//! ```
//!
//! - `connect` is the schema the JSON converter would put in the record (the same document,
//!   keys sorted). It is the source of truth: the datum is laid out by walking it, so a reader
//!   needs nothing else, and the columns derive from it exactly as from a JSON record.
//! - `avro` is the same schema in Avro's terms, as Confluent's `AvroData` maps Connect schemas
//!   (optional = `["null", T]`, int8/int16 = `int` with `connect.type`, logical types kept in
//!   `connect.name` / `connect.parameters`), for other Avro readers.
//! - The fingerprint is CRC-64-AVRO (the Avro specification's Rabin fingerprint) of the compact
//!   `connect` text, not of the Avro schema's Parsing Canonical Form: that form drops the
//!   logical types, so a `bigint` column and a `timestamp` column would share a fingerprint.
//!
//! Values are the JSON converter's values, encoded by their Connect type: integers as zigzag
//! varints, `float32`/`float64` as IEEE little-endian, strings and bytes length-prefixed (the
//! bytes themselves, not the base64 text JSON carries), `array` and `map` in Avro blocks, a
//! struct as its fields in order, an optional value as a union branch (0 = null, 1 = value).
//! [`WriterSchema::decode`] gives back the JSON converter's payload value for value, so an event
//! keeps its event id whichever format carried it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value};

/// The two bytes that start a single-object encoding.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// The bytes before the datum: [`MAGIC`] and the fingerprint.
pub const HEADER_LEN: usize = 10;
/// The default topic the writer schemas are published to (not matched by the compactor's
/// default `^strata\..*`).
pub const DEFAULT_SCHEMA_TOPIC: &str = "_strata_schemas";

/// Why a schema or a value has no Avro form, or bytes are not a datum of their schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AvroError(pub String);

fn error(path: &str, reason: impl std::fmt::Display) -> AvroError {
    if path.is_empty() {
        AvroError(reason.to_string())
    } else {
        AvroError(format!("{path}: {reason}"))
    }
}

/// CRC-64-AVRO, the Avro specification's 64-bit Rabin fingerprint, of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// The fingerprint a single-object encoded message names, or `None` if it is not one.
pub fn message_fingerprint(message: &[u8]) -> Option<u64> {
    let rest = message.strip_prefix(&MAGIC)?;
    let bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A writer schema: the Connect schema records are laid out by, its fingerprint, and the
/// schema-topic record that publishes it.
#[derive(Debug, Clone)]
pub struct WriterSchema {
    fingerprint: u64,
    connect: Arc<Value>,
    connect_text: Arc<str>,
    record: String,
}

impl WriterSchema {
    /// The writer schema of a Connect schema document (a `struct`, as the JSON converter
    /// writes it in `"schema"`).
    pub fn from_connect_text(text: &str) -> Result<Self, AvroError> {
        let connect: Value = serde_json::from_str(text)
            .map_err(|e| error("", format!("the Connect schema is not JSON: {e}")))?;
        Self::from_connect(connect)
    }

    /// The writer schema of a parsed Connect schema.
    pub fn from_connect(connect: Value) -> Result<Self, AvroError> {
        let avro = avro_schema(&connect)?;
        let connect_text = connect.to_string();
        let fingerprint = fingerprint(connect_text.as_bytes());
        let record = format!(
            "{{\"fingerprint\":\"{fingerprint:016x}\",\"connect\":{connect_text},\"avro\":{avro}}}"
        );
        Ok(Self {
            fingerprint,
            connect: Arc::new(connect),
            connect_text: connect_text.into(),
            record,
        })
    }

    /// A writer schema as its schema-topic record publishes it. The record's fingerprint must
    /// be its Connect schema's.
    pub fn from_record(record: &[u8]) -> Result<Self, AvroError> {
        let document: Value = serde_json::from_slice(record)
            .map_err(|e| error("", format!("schema record is not JSON: {e}")))?;
        let declared = document
            .get("fingerprint")
            .and_then(Value::as_str)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| error("", "schema record has no hex \"fingerprint\""))?;
        let connect = document
            .get("connect")
            .cloned()
            .ok_or_else(|| error("", "schema record has no \"connect\" schema"))?;
        let schema = Self::from_connect(connect)?;
        if schema.fingerprint != declared {
            return Err(error(
                "",
                format!(
                    "schema record says fingerprint {declared:016x} but its Connect schema's \
                     is {:016x}",
                    schema.fingerprint
                ),
            ));
        }
        Ok(schema)
    }

    /// The fingerprint records name.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The Connect schema.
    pub fn connect(&self) -> &Arc<Value> {
        &self.connect
    }

    /// The Connect schema's compact JSON text (what the fingerprint is of).
    pub fn connect_text(&self) -> &Arc<str> {
        &self.connect_text
    }

    /// The schema topic's key for this schema: the fingerprint as 16 hex digits.
    pub fn topic_key(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// The schema topic's value for this schema.
    pub fn topic_value(&self) -> &str {
        &self.record
    }

    /// Writes `payload` (a JSON converter payload of this schema) into `out` as a
    /// single-object encoding. `out` is cleared first.
    pub fn encode(&self, payload: &Value, out: &mut Vec<u8>) -> Result<(), AvroError> {
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        write_datum(&self.connect, payload, out, "")
    }

    /// [`WriterSchema::encode`] of a payload given as JSON text, read once without building a
    /// `Value` (a struct's members must come in schema order, as the JSON converter writes
    /// them; absent optional members are null). The same bytes as `encode` of the parsed
    /// text. `out` is cleared first.
    pub fn encode_json(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), AvroError> {
        use serde::de::DeserializeSeed as _;
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        let mut de = serde_json::Deserializer::from_slice(payload);
        Transcode {
            node: &self.connect,
            out,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| error("", e))
    }

    /// The JSON converter payload a single-object encoded `message` of this schema holds.
    pub fn decode(&self, message: &[u8]) -> Result<Value, AvroError> {
        match message_fingerprint(message) {
            Some(fp) if fp == self.fingerprint => {}
            Some(fp) => {
                return Err(error(
                    "",
                    format!(
                        "message names schema {fp:016x}, not {:016x}",
                        self.fingerprint
                    ),
                ));
            }
            None => return Err(error("", "not an Avro single-object encoding")),
        }
        let mut input = &message[HEADER_LEN..];
        let value = read_datum(&self.connect, &mut input, "")?;
        if !input.is_empty() {
            return Err(error("", format!("{} bytes after the datum", input.len())));
        }
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Connect schema -> Avro schema (for other readers).

/// The Avro schema of a Connect schema, as Confluent's `AvroData` maps it.
pub fn avro_schema(connect: &Value) -> Result<Value, AvroError> {
    avro_type(connect, &mut HashSet::new(), "")
}

fn connect_type<'s>(node: &'s Value, path: &str) -> Result<&'s str, AvroError> {
    node.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| error(path, "schema has no \"type\""))
}

pub(crate) fn is_optional(node: &Value) -> bool {
    node.get("optional").and_then(Value::as_bool) == Some(true)
}

/// An Avro name from a Connect name: each dot-separated part made of letters, digits and `_`,
/// not starting with a digit.
fn avro_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if part.is_empty() || part.starts_with(|c: char| c.is_ascii_digit()) {
            out.push('_');
        }
        out.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    out
}

fn avro_type(node: &Value, named: &mut HashSet<String>, path: &str) -> Result<Value, AvroError> {
    let ty = connect_type(node, path)?;
    let mut schema = match ty {
        "int8" | "int16" => {
            let mut m = Map::new();
            m.insert("type".into(), "int".into());
            m.insert("connect.type".into(), ty.into());
            Value::Object(m)
        }
        "int32" => "int".into(),
        "int64" => "long".into(),
        "float" | "float32" => "float".into(),
        "double" | "float64" => "double".into(),
        "boolean" | "string" | "bytes" => ty.into(),
        "array" => {
            let items = node
                .get("items")
                .ok_or_else(|| error(path, "array schema has no \"items\""))?;
            serde_json::json!({"type": "array", "items": avro_type(items, named, path)?})
        }
        "map" => {
            let keys = node
                .get("keys")
                .ok_or_else(|| error(path, "map schema has no \"keys\""))?;
            if connect_type(keys, path)? != "string" {
                return Err(error(
                    path,
                    "maps with non-string keys have no Avro form here",
                ));
            }
            let values = node
                .get("values")
                .ok_or_else(|| error(path, "map schema has no \"values\""))?;
            serde_json::json!({"type": "map", "values": avro_type(values, named, path)?})
        }
        "struct" => {
            let name = avro_name(
                node.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("io.confluent.connect.avro.ConnectDefault"),
            );
            if named.contains(&name) {
                // Defined once; later uses refer to it by name.
                Value::String(name)
            } else {
                named.insert(name.clone());
                let mut fields = Vec::new();
                for field in fields_of(node, path)? {
                    let field_name = field_name(field, path)?;
                    let at = format!("{path}.{field_name}");
                    let mut f = Map::new();
                    f.insert("name".into(), field_name.into());
                    f.insert("type".into(), avro_type(field, named, &at)?);
                    if is_optional(field) {
                        f.insert("default".into(), Value::Null);
                    }
                    fields.push(Value::Object(f));
                }
                serde_json::json!({"type": "record", "name": name, "fields": fields})
            }
        }
        other => return Err(error(path, format!("Connect type {other:?} is unknown"))),
    };
    // Logical types ride along as AvroData's attributes.
    if ty != "struct" {
        let logical = ["name", "version", "parameters"]
            .iter()
            .filter_map(|k| node.get(*k).map(|v| (format!("connect.{k}"), v.clone())))
            .collect::<Vec<_>>();
        if !logical.is_empty() {
            let mut m = match schema {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("type".into(), other);
                    m
                }
            };
            m.extend(logical);
            if node.get("name").and_then(Value::as_str)
                == Some("org.apache.kafka.connect.data.Decimal")
            {
                let scale = node
                    .pointer("/parameters/scale")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(0);
                m.insert("logicalType".into(), "decimal".into());
                m.insert("scale".into(), scale.into());
                m.insert("precision".into(), 38.into());
            }
            schema = Value::Object(m);
        }
    }
    Ok(if is_optional(node) {
        Value::Array(vec!["null".into(), schema])
    } else {
        schema
    })
}

pub(crate) fn fields_of<'s>(node: &'s Value, path: &str) -> Result<&'s Vec<Value>, AvroError> {
    node.get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| error(path, "struct schema has no \"fields\""))
}

pub(crate) fn field_name<'s>(field: &'s Value, path: &str) -> Result<&'s str, AvroError> {
    field
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| error(path, "struct field has no \"field\" name"))
}

// ---------------------------------------------------------------------------------------------
// Values.

pub(crate) fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads a zigzag varint.
pub(crate) fn read_long(input: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *input = &input[i + 1..];
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Reads a length-prefixed byte string.
pub(crate) fn read_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_long(input)?).ok()?;
    if input.len() < len {
        return None;
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Some(bytes)
}

fn read_fixed<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let bytes: [u8; N] = input.get(..N)?.try_into().ok()?;
    *input = &input[N..];
    Some(bytes)
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// A float as the JSON converter writes it: a number, or `"NaN"` / `"Infinity"` /
/// `"-Infinity"`.
pub(crate) fn float_json(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// An `f32` widened as the JSON converter's writer widens it (through its shortest text, so
/// 1.1f32 is 1.1, not 1.100000023841858).
pub(crate) fn widen_f32(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f64::from(f))
}

fn json_float(value: &Value, path: &str) -> Result<f64, AvroError> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| error(path, "not a float")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(error(path, format!("{s:?} is not a float"))),
        },
        _ => Err(error(path, format!("{value} is not a float"))),
    }
}

fn write_datum(
    node: &Value,
    value: &Value,
    out: &mut Vec<u8>,
    path: &str,
) -> Result<(), AvroError> {
    if is_optional(node) {
        if value.is_null() {
            out.push(0);
            return Ok(());
        }
        out.push(2); // branch 1, zigzag
    } else if value.is_null() {
        return Err(error(path, "null for a required value"));
    }
    let ty = connect_type(node, path)?;
    match ty {
        "int8" | "int16" | "int32" | "int64" => {
            let n = value
                .as_i64()
                .ok_or_else(|| error(path, format!("{value} is not an integer")))?;
            write_long(out, n);
        }
        "float" | "float32" => {
            let f = json_float(value, path)? as f32;
            out.extend_from_slice(&f.to_le_bytes());
        }
        "double" | "float64" => out.extend_from_slice(&json_float(value, path)?.to_le_bytes()),
        "boolean" => {
            let b = value
                .as_bool()
                .ok_or_else(|| error(path, format!("{value} is not a boolean")))?;
            out.push(u8::from(b));
        }
        "string" => {
            let s = value
                .as_str()
                .ok_or_else(|| error(path, format!("{value} is not a string")))?;
            write_bytes(out, s.as_bytes());
        }
        "bytes" => {
            let s = value
                .as_str()
                .ok_or_else(|| error(path, format!("{value} is not base64 text")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| error(path, format!("not base64: {e}")))?;
            write_bytes(out, &bytes);
        }
        "array" => {
            let items = value
                .as_array()
                .ok_or_else(|| error(path, format!("{value} is not an array")))?;
            let schema = node
                .get("items")
                .ok_or_else(|| error(path, "array schema has no \"items\""))?;
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    write_datum(schema, item, out, path)?;
                }
            }
            out.push(0);
        }
        "map" => {
            let entries = value
                .as_object()
                .ok_or_else(|| error(path, format!("{value} is not an object")))?;
            let schema = node
                .get("values")
                .ok_or_else(|| error(path, "map schema has no \"values\""))?;
            if !entries.is_empty() {
                write_long(out, entries.len() as i64);
                for (k, v) in entries {
                    write_bytes(out, k.as_bytes());
                    write_datum(schema, v, out, path)?;
                }
            }
            out.push(0);
        }
        "struct" => {
            let object = value
                .as_object()
                .ok_or_else(|| error(path, format!("{value} is not an object")))?;
            for field in fields_of(node, path)? {
                let name = field_name(field, path)?;
                let at = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                write_datum(field, object.get(name).unwrap_or(&Value::Null), out, &at)?;
            }
        }
        other => return Err(error(path, format!("Connect type {other:?} is unknown"))),
    }
    Ok(())
}

/// Writes the JSON value being read as an Avro value of Connect schema `node`.
struct Transcode<'s> {
    node: &'s Value,
    out: &'s mut Vec<u8>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Transcode<'_> {
    fn ty<E: serde::de::Error>(&self) -> Result<&str, E> {
        connect_type(self.node, "").map_err(E::custom)
    }

    /// The union branch of a present value, if the schema is optional.
    fn present(&mut self) {
        if is_optional(self.node) {
            self.out.push(2);
        }
    }

    fn long<E: serde::de::Error>(mut self, n: i64) -> Result<(), E> {
        match self.ty()? {
            "int8" | "int16" | "int32" | "int64" => {
                self.present();
                write_long(self.out, n);
                Ok(())
            }
            _ => self.float(n as f64),
        }
    }

    fn float<E: serde::de::Error>(mut self, f: f64) -> Result<(), E> {
        match self.ty()? {
            "float" | "float32" => {
                self.present();
                self.out.extend_from_slice(&(f as f32).to_le_bytes());
            }
            "double" | "float64" => {
                self.present();
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            other => return Err(E::custom(format!("a number for a {other}"))),
        }
        Ok(())
    }

    /// Items of an array or entries of a map, counted into one block.
    fn block<E>(
        &mut self,
        mut items: impl FnMut(&mut Vec<u8>) -> Result<Option<()>, E>,
    ) -> Result<(), E> {
        let mut body = Vec::new();
        let mut count = 0_i64;
        while items(&mut body)?.is_some() {
            count += 1;
        }
        if count > 0 {
            write_long(self.out, count);
            self.out.extend_from_slice(&body);
        }
        self.out.push(0);
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a value of Connect schema {}", self.node)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        if !is_optional(self.node) {
            return Err(E::custom("null for a required value"));
        }
        self.out.push(0);
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<(), E> {
        if self.ty::<E>()? != "boolean" {
            return Err(E::custom("a boolean for another type"));
        }
        self.present();
        self.out.push(u8::from(b));
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.long(n)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        match i64::try_from(n) {
            Ok(n) => self.long(n),
            Err(_) => self.float(n as f64),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        self.float(f)
    }

    fn visit_str<E: serde::de::Error>(mut self, s: &str) -> Result<(), E> {
        match self.ty()? {
            "string" => {
                self.present();
                write_bytes(self.out, s.as_bytes());
            }
            "bytes" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| E::custom(format!("not base64: {e}")))?;
                self.present();
                write_bytes(self.out, &bytes);
            }
            "float" | "float32" | "double" | "float64" => {
                let f = json_float(&Value::String(s.to_owned()), "").map_err(E::custom)?;
                self.float(f)?;
            }
            other => return Err(E::custom(format!("a string for a {other}"))),
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        if self.ty::<A::Error>()? != "array" {
            return Err(A::Error::custom("an array for another type"));
        }
        let items = self
            .node
            .get("items")
            .ok_or_else(|| A::Error::custom("array schema has no items"))?;
        self.present();
        self.block(|body| {
            seq.next_element_seed(Transcode {
                node: items,
                out: body,
            })
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        match self.ty::<A::Error>()? {
            "struct" => {
                let fields = fields_of(self.node, "").map_err(A::Error::custom)?;
                self.present();
                let mut next = 0;
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    // Members in schema order; fields skipped over are absent, so null.
                    let at = fields[next..]
                        .iter()
                        .position(|f| f.get("field").and_then(Value::as_str) == Some(&*name))
                        .ok_or_else(|| {
                            A::Error::custom(format!("member {name:?} out of schema order"))
                        })?;
                    for skipped in &fields[next..next + at] {
                        Transcode {
                            node: skipped,
                            out: self.out,
                        }
                        .visit_unit::<A::Error>()?;
                    }
                    map.next_value_seed(Transcode {
                        node: &fields[next + at],
                        out: self.out,
                    })?;
                    next += at + 1;
                }
                for skipped in &fields[next..] {
                    Transcode {
                        node: skipped,
                        out: self.out,
                    }
                    .visit_unit::<A::Error>()?;
                }
                Ok(())
            }
            "map" => {
                let values = self
                    .node
                    .get("values")
                    .ok_or_else(|| A::Error::custom("map schema has no values"))?;
                self.present();
                self.block(|body| {
                    let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
                        return Ok(None);
                    };
                    write_bytes(body, key.as_bytes());
                    map.next_value_seed(Transcode {
                        node: values,
                        out: body,
                    })
                    .map(Some)
                })
            }
            other => Err(A::Error::custom(format!("an object for a {other}"))),
        }
    }
}

fn truncated(path: &str) -> AvroError {
    error(path, "the datum ends early")
}

/// Reads one value of Connect schema `node` as the JSON converter writes it.
pub(crate) fn read_datum(node: &Value, input: &mut &[u8], path: &str) -> Result<Value, AvroError> {
    if is_optional(node) {
        match read_long(input) {
            Some(0) => return Ok(Value::Null),
            Some(1) => {}
            Some(n) => {
                return Err(error(
                    path,
                    format!("union branch {n} of an optional value"),
                ));
            }
            None => return Err(truncated(path)),
        }
    }
    let ty = connect_type(node, path)?;
    Ok(match ty {
        "int8" | "int16" | "int32" | "int64" => {
            Value::from(read_long(input).ok_or_else(|| truncated(path))?)
        }
        "float" | "float32" => {
            let f = f32::from_le_bytes(read_fixed(input).ok_or_else(|| truncated(path))?);
            float_json(if f.is_finite() {
                widen_f32(f)
            } else {
                f64::from(f)
            })
        }
        "double" | "float64" => float_json(f64::from_le_bytes(
            read_fixed(input).ok_or_else(|| truncated(path))?,
        )),
        "boolean" => match read_fixed::<1>(input).ok_or_else(|| truncated(path))? {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            [b] => return Err(error(path, format!("boolean byte {b}"))),
        },
        "string" => {
            let bytes = read_bytes(input).ok_or_else(|| truncated(path))?;
            let s = std::str::from_utf8(bytes)
                .map_err(|e| error(path, format!("string is not UTF-8: {e}")))?;
            Value::String(s.to_owned())
        }
        "bytes" => {
            let bytes = read_bytes(input).ok_or_else(|| truncated(path))?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        "array" => {
            let schema = node
                .get("items")
                .ok_or_else(|| error(path, "array schema has no \"items\""))?;
            let mut items = Vec::new();
            for_each_block(input, path, |input| {
                items.push(read_datum(schema, input, path)?);
                Ok(())
            })?;
            Value::Array(items)
        }
        "map" => {
            let schema = node
                .get("values")
                .ok_or_else(|| error(path, "map schema has no \"values\""))?;
            let mut entries = Map::new();
            for_each_block(input, path, |input| {
                let key = read_bytes(input).ok_or_else(|| truncated(path))?;
                let key = std::str::from_utf8(key)
                    .map_err(|e| error(path, format!("map key is not UTF-8: {e}")))?;
                entries.insert(key.to_owned(), read_datum(schema, input, path)?);
                Ok(())
            })?;
            Value::Object(entries)
        }
        "struct" => {
            let mut object = Map::new();
            for field in fields_of(node, path)? {
                let name = field_name(field, path)?;
                let mut at = String::new();
                if !path.is_empty() {
                    let _ = write!(at, "{path}.");
                }
                at.push_str(name);
                object.insert(name.to_owned(), read_datum(field, input, &at)?);
            }
            Value::Object(object)
        }
        other => return Err(error(path, format!("Connect type {other:?} is unknown"))),
    })
}

/// Calls `item` for every item of an Avro array or map's blocks.
fn for_each_block(
    input: &mut &[u8],
    path: &str,
    mut item: impl FnMut(&mut &[u8]) -> Result<(), AvroError>,
) -> Result<(), AvroError> {
    loop {
        let count = read_long(input).ok_or_else(|| truncated(path))?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            read_long(input).ok_or_else(|| truncated(path))?;
        }
        for _ in 0..count.unsigned_abs() {
            item(input)?;
        }
    }
}

/// How a value of a Connect schema is laid out, compiled once per schema, to skip values
/// without looking the schema up again.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// A zigzag varint (every integer type).
    Long,
    /// So many bytes (`float` 4, `double` 8, `boolean` 1).
    Fixed(usize),
    /// A length-prefixed byte string (`string`, `bytes`).
    Bytes,
    /// The fields, in order.
    Struct(Vec<Shape>),
    /// Blocks of items.
    Array(Box<Shape>),
    /// Blocks of (string key, value).
    Map(Box<Shape>),
    /// A union branch (0 = null), then the value.
    Optional(Box<Shape>),
}

impl Shape {
    /// The shape of Connect schema `node`; `None` if it has no Avro form.
    pub(crate) fn of(node: &Value) -> Option<Self> {
        let shape = match node.get("type")?.as_str()? {
            "int8" | "int16" | "int32" | "int64" => Self::Long,
            "float" | "float32" => Self::Fixed(4),
            "double" | "float64" => Self::Fixed(8),
            "boolean" => Self::Fixed(1),
            "string" | "bytes" => Self::Bytes,
            "struct" => Self::Struct(
                node.get("fields")?
                    .as_array()?
                    .iter()
                    .map(Self::of)
                    .collect::<Option<_>>()?,
            ),
            "array" => Self::Array(Box::new(Self::of(node.get("items")?)?)),
            "map" => Self::Map(Box::new(Self::of(node.get("values")?)?)),
            _ => return None,
        };
        Some(if is_optional(node) {
            Self::Optional(Box::new(shape))
        } else {
            shape
        })
    }

    /// Skips one value.
    pub(crate) fn skip(&self, input: &mut &[u8]) -> Option<()> {
        match self {
            Self::Long => {
                read_long(input)?;
            }
            Self::Fixed(n) => *input = input.get(*n..)?,
            Self::Bytes => {
                read_bytes(input)?;
            }
            Self::Struct(fields) => {
                for field in fields {
                    field.skip(input)?;
                }
            }
            Self::Optional(inner) => match read_long(input)? {
                0 => {}
                1 => inner.skip(input)?,
                _ => return None,
            },
            Self::Array(inner) | Self::Map(inner) => loop {
                let count = read_long(input)?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    // A negative count is followed by the block's size in bytes.
                    let size = usize::try_from(read_long(input)?).ok()?;
                    *input = input.get(size..)?;
                    continue;
                }
                for _ in 0..count {
                    if matches!(self, Self::Map(_)) {
                        read_bytes(input)?;
                    }
                    inner.skip(input)?;
                }
            },
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_the_specification() {
        // Test vectors from the Avro specification's reference implementation.
        assert_eq!(fingerprint(br#""null""#) as i64, 7_195_948_357_588_979_594);
        assert_eq!(
            fingerprint(br#""boolean""#) as i64,
            -6_970_731_678_124_411_036
        );
        assert_eq!(
            fingerprint(br#"{"name":"foo","type":"fixed","size":15}"#) as i64,
            1_756_455_273_707_447_556
        );
    }

    fn envelope() -> Value {
        let row = |field: &str| {
            serde_json::json!({
                "type": "struct", "name": "s.public.t.Value", "optional": true, "field": field,
                "fields": [{"type": "int64", "optional": false, "field": "id"},
                           {"type": "int16", "optional": true, "field": "q"},
                           {"type": "float", "optional": true, "field": "f"},
                           {"type": "double", "optional": true, "field": "d"},
                           {"type": "bytes", "optional": true, "field": "b",
                            "name": "org.apache.kafka.connect.data.Decimal",
                            "parameters": {"scale": "2"}},
                           {"type": "array", "optional": true, "field": "tags",
                            "items": {"type": "string", "optional": true}},
                           {"type": "boolean", "optional": true, "field": "on"},
                           {"type": "string", "optional": true, "field": "note"}]
            })
        };
        serde_json::json!({
            "type": "struct", "name": "s.public.t.Envelope", "optional": false,
            "fields": [
                row("before"),
                row("after"),
                {"type": "string", "optional": false, "field": "op"},
                {"type": "map", "optional": true, "field": "extra",
                 "keys": {"type": "string"}, "values": {"type": "int32"}},
                {"type": "int64", "optional": true, "field": "ts_ms"}
            ]
        })
    }

    #[test]
    fn payloads_come_back_value_for_value() {
        let schema = WriterSchema::from_connect(envelope()).unwrap();
        let payload = serde_json::json!({
            "before": null,
            "after": {"id": -7, "q": 300, "f": 1.1, "d": "NaN", "b": "AeI=",
                      "tags": ["a", null, "ü\"x"], "on": true, "note": null},
            "op": "c", "extra": {"k": -1}, "ts_ms": 1_764_064_800_000_i64,
        });
        let mut out = Vec::new();
        schema.encode(&payload, &mut out).unwrap();
        assert_eq!(out[..2], MAGIC);
        assert_eq!(message_fingerprint(&out), Some(schema.fingerprint()));
        assert!(out.len() < payload.to_string().len());
        assert_eq!(schema.decode(&out).unwrap(), payload);

        // Truncated anywhere: an error, never a panic.
        for cut in HEADER_LEN..out.len() {
            assert!(schema.decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        // A value that does not fit is named.
        let bad = serde_json::json!({"before": null, "after": {"id": "x"}, "op": "c"});
        let e = schema.encode(&bad, &mut out).unwrap_err();
        assert_eq!(e.0, "after.id: \"x\" is not an integer");
    }

    #[test]
    fn json_text_encodes_to_the_same_bytes() {
        let schema = WriterSchema::from_connect(envelope()).unwrap();
        let texts = [
            r#"{"before":null,"after":{"id":-7,"q":300,"f":1.1,"d":"NaN","b":"AeI=","tags":["a",null,"ü\"x"],"on":true,"note":null},"op":"c","extra":{"j":2,"k":-1},"ts_ms":1764064800000}"#,
            r#"{"before":{"id":1},"after":null,"op":"d"}"#,
            r#"{"after":{"id":2,"f":-0.5,"d":1e300,"tags":[]},"op":"u","extra":{}}"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            schema.encode(&value, &mut a).unwrap();
            schema.encode_json(text.as_bytes(), &mut b).unwrap();
            assert_eq!(a, b, "{text}");
            assert_eq!(schema.decode(&b).unwrap()["op"], value["op"]);
        }
        for bad in [
            r#"{"after":{"id":3,"tags":[],"q":1},"op":"u"}"#,
            r#"{"op":"c","before":null}"#,
            r#"{"before":null,"after":{"id":"x"},"op":"c"}"#,
            r#"{"before":null,"after":{"id":null},"op":"c"}"#,
            r#"{"before":null,"op":"c""#,
        ] {
            assert!(
                schema.encode_json(bad.as_bytes(), &mut Vec::new()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn records_round_trip_and_are_checked() {
        let schema = WriterSchema::from_connect(envelope()).unwrap();
        let again = WriterSchema::from_record(schema.topic_value().as_bytes()).unwrap();
        assert_eq!(again.fingerprint(), schema.fingerprint());
        assert_eq!(again.topic_key(), format!("{:016x}", schema.fingerprint()));
        let forged = schema.topic_value().replacen("\"op\"", "\"opx\"", 1);
        let e = WriterSchema::from_record(forged.as_bytes()).unwrap_err();
        assert!(e.0.contains("but its Connect schema's is"), "{e}");
    }

    #[test]
    fn the_avro_schema_is_what_avro_data_writes() {
        let avro = avro_schema(&envelope()).unwrap();
        let fields = avro["fields"].as_array().unwrap();
        assert_eq!(avro["name"], "s.public.t.Envelope");
        // The row record is defined once and then named.
        assert_eq!(fields[0]["type"][0], "null");
        assert_eq!(fields[0]["type"][1]["type"], "record");
        assert_eq!(
            fields[1]["type"],
            serde_json::json!(["null", "s.public.t.Value"])
        );
        let row = fields[0]["type"][1]["fields"].as_array().unwrap();
        assert_eq!(row[0]["type"], "long");
        assert_eq!(
            row[1]["type"],
            serde_json::json!(["null", {"type": "int", "connect.type": "int16"}])
        );
        assert_eq!(row[4]["type"][1]["logicalType"], "decimal");
        assert_eq!(row[4]["type"][1]["scale"], 2);
        assert_eq!(row[4]["default"], Value::Null);
    }
}
