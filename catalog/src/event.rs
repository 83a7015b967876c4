//! The change-event model every part of strata shares, and the decoder of Debezium JSON
//! envelopes (pure: bytes in, typed events out, no I/O).
//!
//! A [`ChangeEvent`] is one committed change to one row: which table, which key, what
//! operation, the row images, when it committed and where in the source's log it sits.
//! [`ChangeEvent::event_id`] names the mutation itself, so the copies of one mutation that
//! replicas (or a capture that restarted and resent its tail) deliver twice hash the same.
//!
//! # Decoding Debezium envelopes
//!
//! [`decode_debezium`] reads what the Kafka Connect JSON converter writes with
//! `schemas.enable=true` (`{"schema": …, "payload": …}`): strata's own PostgreSQL capture and
//! the Debezium PostgreSQL connector (2.x/3.x). What each event field comes from:
//!
//! | field            | from                                                                 |
//! |------------------|----------------------------------------------------------------------|
//! | `table`          | `source.name` / `source.schema` (else `source.db`) / `source.table`   |
//! | `op`             | `payload.op` (`c u d r t`; `m` logical messages are skipped)          |
//! | `key`            | the Kafka key document's payload, in key-schema order; without a key (a table with no primary key), the whole row image |
//! | `before`/`after` | `payload.before` / `payload.after`, in value-schema order             |
//! | `unchanged`      | `source.unchanged_toast` (strata) and every column whose value is Debezium's `__debezium_unavailable_value` placeholder (removed from the image) |
//! | `commit_ts_us`   | `source.ts_us`, else `source.ts_ms * 1000`                            |
//! | `position.seq`   | `source.lsn`                                                          |
//! | `position.commit`| `source.commit_lsn` (strata); else the LSN after the `:` of `transaction.id` (Debezium with `provide.transaction.metadata`); else `source.lsn` |
//! | `tx_id`          | `source.txId`                                                         |
//! | `origin`         | `source.node` when present (multi-node sources); `None` for PostgreSQL |
//!
//! A column of Debezium's `io.debezium.data.VariableScaleDecimal` (unconstrained `numeric` in
//! the default `decimal.handling.mode=precise`: `{"scale": 2, "value": "<base64 of the unscaled
//! two's-complement integer>"}`) is turned into a `string` column holding the exact decimal
//! text (`"-1.50"`), which is how strata's capture sends numerics.
//!
//! Without a commit LSN the change's own LSN is the best available commit position. Per
//! key that order is still right: a second transaction can only change a row after the
//! first one that changed it committed, so its change LSN is past the first's commit.
//!
//! Tombstones (empty or `null` value), transaction-metadata records, heartbeats and logical
//! messages are not changes: they decode to [`Decoded::Skip`], never to an error.
//!
//! [`decode_debezium_row`] gives the same change as the [`SegmentRow`] its change segment
//! stores. For the usual record (a schema already met, no unchanged-TOAST columns, no
//! variable-scale decimals) it reads the image once, straight into cells of the column
//! types, borrowing the record's strings; anything else goes through [`ChangeEvent`] and
//! [`SegmentRow::from_event`], which stays the reference (a property test holds the two
//! equal on every column type).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use arrow::datatypes::DataType;

use crate::rows::SegmentRow;
use crate::schema::{ColumnSchema, ColumnType, ConnectType, SchemaError, TableSchema};
use crate::table::TableId;

/// Debezium's placeholder for a value that was not sent (PostgreSQL unchanged TOAST).
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// `c`: a row was inserted.
    #[serde(rename = "c")]
    Create,
    /// `u`: a row was updated.
    #[serde(rename = "u")]
    Update,
    /// `d`: a row was deleted.
    #[serde(rename = "d")]
    Delete,
    /// `r`: a row was read by the initial snapshot.
    #[serde(rename = "r")]
    Read,
    /// `t`: the table was truncated.
    #[serde(rename = "t")]
    Truncate,
}

impl Operation {
    /// Debezium's one-letter code, as stored in the `_op` column.
    pub fn code(self) -> &'static str {
        match self {
            Self::Create => "c",
            Self::Update => "u",
            Self::Delete => "d",
            Self::Read => "r",
            Self::Truncate => "t",
        }
    }

    /// The operation of a Debezium code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "c" => Self::Create,
            "u" => Self::Update,
            "d" => Self::Delete,
            "r" => Self::Read,
            "t" => Self::Truncate,
            _ => return None,
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a change sits in its source's log. Orders changes: by commit, then within it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct SourcePosition {
    /// The commit position of the change's transaction (PostgreSQL: the commit LSN).
    pub commit: u64,
    /// The position of the change itself (PostgreSQL: its LSN).
    pub seq: u64,
}

/// A row image: column name -> value, in the table's column order.
///
/// Values are kept as the Debezium JSON encoding of the column's Connect type (see
/// [`crate::schema`] for how each maps to Arrow); the declared types live in the
/// [`TableSchema`]. A column absent from a row was not in the image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Row(Vec<(String, Value)>);

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a column (or replaces its value if present).
    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// Makes column `index` (`name`, `value`), keeping the name's allocation when it already
    /// has that name: for refilling a reused row column by column (then [`Row::truncate`]).
    pub(crate) fn set_at(&mut self, index: usize, name: &str, value: Value) {
        match self.0.get_mut(index) {
            Some((n, v)) if n == name => *v = value,
            Some(column) => *column = (name.to_owned(), value),
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Keeps the first `len` columns.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// The value of a column, if the image has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value of a column, looked for first at `index` (where it is when the row is in
    /// its table's column order, as decoded rows are).
    pub fn get_at(&self, index: usize, name: &str) -> Option<&Value> {
        match self.0.get(index) {
            Some((n, v)) if n == name => Some(v),
            _ => self.get(name),
        }
    }

    /// Removes a column, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(index).1)
    }

    /// The columns in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without columns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>> FromIterator<(N, Value)> for Row {
    fn from_iter<T: IntoIterator<Item = (N, Value)>>(iter: T) -> Self {
        let mut row = Row::new();
        for (name, value) in iter {
            row.insert(name, value);
        }
        row
    }
}

/// One committed change to one row (or, for [`Operation::Truncate`], to a whole table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The table.
    pub table: TableId,
    /// What happened.
    pub op: Operation,
    /// The key columns, in key order (empty for a truncate).
    pub key: Row,
    /// The row before the change (deletes; updates when the source sends it).
    pub before: Option<Row>,
    /// The row after the change (creates, updates, reads).
    pub after: Option<Row>,
    /// Columns this change did not write (PostgreSQL unchanged TOAST): not NULL, the
    /// previous value still holds. They are absent from `after`.
    pub unchanged: Vec<String>,
    /// Source commit time, µs since the Unix epoch, UTC.
    pub commit_ts_us: i64,
    /// Where the change sits in the source's log.
    pub position: SourcePosition,
    /// The source's transaction id, if any.
    pub tx_id: Option<String>,
    /// The replica / node that reported the change (multi-node sources); not part of the
    /// event id.
    pub origin: Option<String>,
}

impl ChangeEvent {
    /// The row image a change segment stores: `after`, or `before` for a delete (with the
    /// key columns filled in from `key` when the image lacks them).
    pub fn image(&self) -> Option<&Row> {
        match self.op {
            Operation::Delete => self.before.as_ref().or(self.after.as_ref()),
            _ => self.after.as_ref().or(self.before.as_ref()),
        }
    }

    /// The identity of the mutation: blake3 over the table, key, operation, the written
    /// cells of the stored image (names and values, sorted by name, unchanged columns
    /// left out), commit time and position, encoded as `version` says (see [`id`]). Not the
    /// origin: the copies of one mutation reported by several replicas, or resent after a
    /// capture restart, share it.
    pub fn event_id(&self, version: EventIdVersion) -> [u8; 32] {
        let ids = TableIds::new(&self.table, version);
        let mut id = IdHasher::new(&ids, &self.table, self.op, &self.key);
        let mut cells: Vec<(&str, &Value)> = self
            .image()
            .map(|row| {
                row.iter()
                    .filter(|(n, _)| !self.unchanged.iter().any(|u| u == n))
                    .collect()
            })
            .unwrap_or_default();
        cells.sort_unstable_by(|a, b| a.0.cmp(b.0));
        id.count(cells.len());
        for (name, value) in cells {
            id.cell(name, |buf| {
                // Writing a `Value` to a `Vec` cannot fail.
                let _ = serde_json::to_writer(buf, value);
            });
        }
        id.finish(self.commit_ts_us, self.position)
    }

    /// The order-preserving encoding of the key (the `_key` column); see [`encode_key`].
    pub fn sort_key(&self) -> String {
        encode_key(&self.key)
    }
}

/// JSON text of a value with object members sorted (serde_json's map is ordered by key).
fn canonical_json(value: &Value) -> String {
    value.to_string()
}

/// Encodes a key as a string whose byte order is the order of the key tuples: column by
/// column, nulls first, integers and floats numerically, strings bytewise, booleans false
/// first. Other values (arrays, objects, numbers beyond i64) compare as their JSON text.
///
/// Each component is a tag character and a body, ended by `\0`: null `0`; boolean `b` +
/// `0`/`1`; integer `i` + 16 hex digits of the value with its sign bit flipped; float `f` +
/// 16 hex digits of its total-order bits; string `s` + the text with `\0` written `\x01\x01`
/// and `\x01` written `\x01\x02`; anything else `j` + its JSON text escaped the same way.
pub fn encode_key(key: &Row) -> String {
    let mut out = String::with_capacity(20 * key.len());
    for (_, value) in key.iter() {
        encode_key_component(value, &mut out);
        out.push('\0');
    }
    out
}

/// `n` as 16 lowercase hex digits (what `{:016x}` writes, without the formatter).
fn push_hex16(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend(
        (0..16)
            .rev()
            .map(|i| char::from(DIGITS[((n >> (4 * i)) & 0xf) as usize])),
    );
}

fn encode_key_component(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push('0'),
        Value::Bool(b) => out.push_str(if *b { "b1" } else { "b0" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push('i');
                push_hex16(out, (i as u64) ^ (1 << 63));
            } else if let (None, Some(f)) = (n.as_u64(), n.as_f64()) {
                let bits = f.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits | (1 << 63)
                };
                out.push('f');
                push_hex16(out, ordered);
            } else {
                out.push('j');
                escape_into(&n.to_string(), out);
            }
        }
        Value::String(s) => {
            out.push('s');
            escape_into(s, out);
        }
        other => {
            out.push('j');
            escape_into(&canonical_json(other), out);
        }
    }
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\u{1}\u{1}"),
            '\u{1}' => out.push_str("\u{1}\u{2}"),
            c => out.push(c),
        }
    }
}

/// What [`decode_debezium`] made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A change, with the table schema its envelope declared.
    Event(Box<DecodedEvent>),
    /// A record that is not a change; nothing to store.
    Skip(Skip),
}

/// A decoded change and its table's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// The change.
    pub event: ChangeEvent,
    /// The columns as the envelope's schema declares them (shared by the events decoded
    /// under one envelope schema).
    pub schema: Arc<TableSchema>,
}

/// Records that carry no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A null value: Kafka log compaction's delete marker following a delete.
    Tombstone,
    /// A Debezium transaction BEGIN/END record.
    TransactionMetadata,
    /// A Debezium heartbeat.
    Heartbeat,
    /// A logical decoding message (`op` = `m`).
    Message,
}

/// A record that could not be decoded. Names the record: the decoder knows the topic; the
/// caller adds partition and offset with [`DecodeError::at`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.location())]
pub struct DecodeError {
    /// The topic.
    pub topic: String,
    /// The partition, when the caller said.
    pub partition: Option<i32>,
    /// The offset, when the caller said.
    pub offset: Option<i64>,
    /// What is wrong.
    pub reason: String,
}

impl DecodeError {
    fn new(topic: &str, reason: impl Into<String>) -> Self {
        Self {
            topic: topic.to_owned(),
            partition: None,
            offset: None,
            reason: reason.into(),
        }
    }

    /// The same error, naming the record's partition and offset.
    #[must_use]
    pub fn at(mut self, partition: i32, offset: i64) -> Self {
        self.partition = Some(partition);
        self.offset = Some(offset);
        self
    }

    fn location(&self) -> String {
        match (self.partition, self.offset) {
            (Some(p), Some(o)) => format!("topic {} partition {p} offset {o}", self.topic),
            _ => format!("topic {}", self.topic),
        }
    }
}

/// Hashes an event id (or any blake3 digest) by its first eight bytes: digests are already
/// uniform, so hashing them again (SipHash) would only cost time. For sets and maps keyed by
/// event ids: `HashSet<[u8; 32], DigestHasher>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHash(u64);

impl std::hash::Hasher for DigestHash {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The `BuildHasher` of [`DigestHash`].
pub type DigestHasher = std::hash::BuildHasherDefault<DigestHash>;

/// What the envelope schemas already seen mean. Every record of a topic carries the same few
/// kilobytes of Connect schema; with a cache it is parsed once per distinct schema text, and
/// the table's columns are derived once per (schema, table, key columns). Bounded: cleared
/// when it holds [`SchemaCache::CAPACITY`] schemas.
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// Hash of the schema text -> (text, parsed) pairs with that hash.
    parsed: HashMap<u64, Vec<ParsedSchema>>,
    /// The schemas most recently met, newest first, for [`SchemaCache::split`].
    recent: VecDeque<ParsedSchema>,
    columns: HashMap<ColumnsKey, Arc<DerivedColumns>>,
    /// The columns most recently used, newest first, with the schema they were derived
    /// from: found by comparing names, without building a key.
    recent_columns: VecDeque<(usize, Arc<DerivedColumns>)>,
    len: usize,
    /// Avro writer schemas: the consumer's shared ones, and those this cache used.
    avro: AvroSchemas,
    /// Keyed by fingerprint (already uniform: not hashed again). Each cache compiles its own
    /// copy: decoding threads sharing one `Arc` would contend on its count for every record.
    avro_used: HashMap<u64, Arc<avro::AvroSchema>, DigestHasher>,
    /// Per Avro value schema, the columns its last record had (its next record's likely ones)
    /// and whether its images' fields are those columns in order.
    avro_columns: HashMap<u64, (Arc<DerivedColumns>, bool), DigestHasher>,
    /// Scratch for the JSON texts of a record's cells, where each cell's text is, and its key
    /// (kept between records: no allocation per record).
    avro_texts: Vec<u8>,
    avro_spans: Vec<Option<(usize, usize)>>,
    avro_key: Row,
    /// The event id versions of the catalog's tables (new tables: the current version).
    id_versions: EventIdVersions,
    /// `id_versions`' generation when the derived columns were derived.
    id_generation: u64,
}

type ColumnsKey = (usize, TableId, Vec<String>);
type ParsedSchema = (Box<str>, Arc<Value>);

/// The columns of a table as an envelope schema declares them, and its variable-scale decimals.
#[derive(Debug)]
pub(crate) struct DerivedColumns {
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) variable_scale: Vec<String>,
    /// The columns' Arrow types, or why the schema cannot be a change segment's.
    pub(crate) types: Result<Vec<DataType>, SchemaError>,
    /// Column indices in name order (the order [`ChangeEvent::event_id`] hashes cells in).
    pub(crate) by_name: Vec<usize>,
    /// How the table's event ids are hashed (its version: `schema.event_id_version`).
    pub(crate) ids: TableIds,
    /// The key document's column names it was derived with.
    key_names: Vec<String>,
}

/// How the JSON converter starts a document, and what follows the schema.
const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_INFIX: &[u8] = b",\"payload\":";

impl SchemaCache {
    /// This cache, hashing the event ids of each table as `versions` says (by default every
    /// table gets [`EventIdVersion::CURRENT`]).
    #[must_use]
    pub fn with_event_ids(mut self, versions: EventIdVersions) -> Self {
        self.id_versions = versions;
        self.id_generation = u64::MAX;
        self
    }

    /// Distinct schemas kept before the cache starts over.
    pub const CAPACITY: usize = 1024;
    /// Schemas tried by [`SchemaCache::split`].
    const RECENT: usize = 8;

    /// The parsed schema of `text`.
    fn parse(&mut self, text: &str) -> Result<Arc<Value>, serde_json::Error> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        let found = self
            .parsed
            .get(&hash)
            .and_then(|v| v.iter().find(|(t, _)| **t == *text))
            .cloned();
        let parsed = match found {
            Some(parsed) => parsed,
            None => {
                let value = Arc::new(serde_json::from_str::<Value>(text)?);
                if self.len >= Self::CAPACITY {
                    self.parsed.clear();
                    self.recent.clear();
                    self.columns.clear();
                    self.recent_columns.clear();
                    self.len = 0;
                }
                self.len += 1;
                let parsed: ParsedSchema = (text.into(), value);
                self.parsed.entry(hash).or_default().push(parsed.clone());
                parsed
            }
        };
        if !self.recent.iter().any(|(t, _)| **t == *text) {
            self.recent.push_front(parsed.clone());
            self.recent.truncate(Self::RECENT);
        }
        Ok(parsed.1)
    }

    /// A document laid out as the JSON converter writes it, `{"schema":S,"payload":P}` with a
    /// schema text S met recently: S parsed, and the bytes of P. Anything else: `None` (the
    /// caller parses the document in full).
    fn split<'a>(&self, document: &'a [u8]) -> Option<(Arc<Value>, &'a [u8])> {
        let rest = document.strip_prefix(SCHEMA_PREFIX)?;
        self.recent.iter().find_map(|(text, schema)| {
            let payload = rest
                .strip_prefix(text.as_bytes())?
                .strip_prefix(PAYLOAD_INFIX)?
                .trim_ascii_end()
                .strip_suffix(b"}")?;
            Some((Arc::clone(schema), payload))
        })
    }
}

impl SchemaCache {
    /// The columns of `names`' table as envelope schema `schema` declares them, with the key
    /// document's columns as the key; derived once per (schema, table, key columns).
    pub(crate) fn derived_columns(
        &mut self,
        schema: &Value,
        names: &TableNames<'_>,
        key_row: Option<&Row>,
    ) -> Result<Arc<DerivedColumns>, String> {
        let generation = self.id_versions.generation();
        if generation != self.id_generation {
            // A table's recorded version changed: what was derived with the old one goes.
            self.columns.clear();
            self.recent_columns.clear();
            self.avro_columns.clear();
            self.id_generation = generation;
        }
        let schema_at = std::ptr::from_ref(schema) as usize;
        let key_names = || key_row.into_iter().flat_map(|k| k.iter().map(|(n, _)| n));
        let recent = self.recent_columns.iter().find(|(at, derived)| {
            let t = &derived.schema.table;
            *at == schema_at
                && (t.source.as_str(), t.namespace.as_str(), t.table.as_str())
                    == (&*names.0, &*names.1, &*names.2)
                && key_names().eq(derived.key_names.iter().map(String::as_str))
        });
        if let Some((_, derived)) = recent {
            return Ok(Arc::clone(derived));
        }
        let table = TableId::new(names.0.as_ref(), names.1.as_ref(), names.2.as_ref());
        table.validate().map_err(|e| e.to_string())?;
        let columns_key: ColumnsKey = (schema_at, table, key_names().map(str::to_owned).collect());
        let derived = match self.columns.get(&columns_key) {
            Some(derived) => Arc::clone(derived),
            None => {
                let version = self.id_versions.of(&columns_key.1);
                let derived = Arc::new(derive_columns(
                    schema,
                    &columns_key.1,
                    &columns_key.2,
                    version,
                )?);
                self.columns.insert(columns_key, Arc::clone(&derived));
                derived
            }
        };
        self.recent_columns
            .push_front((schema_at, Arc::clone(&derived)));
        self.recent_columns.truncate(Self::RECENT);
        Ok(derived)
    }
}

/// Decodes one Kafka record holding a Debezium envelope written by the JSON converter with
/// schemas (`{"schema":…,"payload":…}`). `value` empty means a tombstone. Never panics; a
/// record that is not a readable envelope is a [`DecodeError`] naming `topic`.
///
/// A consumer decoding many records should use [`decode_debezium_cached`].
pub fn decode_debezium(
    key: Option<&[u8]>,
    value: &[u8],
    topic: &str,
) -> Result<Decoded, DecodeError> {
    decode_debezium_cached(key, value, topic, &mut SchemaCache::default())
}

/// [`decode_debezium`] with a [`SchemaCache`]: the same result, the schema parsed once.
pub fn decode_debezium_cached(
    key: Option<&[u8]>,
    value: &[u8],
    topic: &str,
    cache: &mut SchemaCache,
) -> Result<Decoded, DecodeError> {
    if value.starts_with(&crate::avro::MAGIC) {
        let (key, value) = avro::json_documents(key, value, topic, cache)?;
        return decode_debezium_cached(key.as_deref(), &value, topic, cache);
    }
    match envelope(key, value, topic, cache)? {
        Envelope::Skip(skip) => Ok(Decoded::Skip(skip)),
        Envelope::Change(change) => {
            change_event(change, topic).map(|d| Decoded::Event(Box::new(d)))
        }
    }
}

/// What [`decode_debezium_row`] made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedRow<'a> {
    /// A change as its segment stores it, with its table's schema.
    Row {
        /// The change.
        row: SegmentRow<'a>,
        /// The columns as the envelope's schema declares them (the same `Arc` for the rows
        /// of one envelope schema and table).
        schema: Arc<TableSchema>,
    },
    /// A record that is not a change; nothing to store.
    Skip(Skip),
    /// An Avro record whose writer schema is not known yet: read the schema topic, add it to
    /// the cache's [`AvroSchemas`], and decode the record again.
    MissingSchema {
        /// The fingerprint the record names.
        fingerprint: u64,
    },
}

/// Decodes one record straight into the row its change segment stores: the result of
/// [`decode_debezium_cached`] followed by [`SegmentRow::from_event`], without building the
/// event when the record allows (the usual case: a known schema, no unchanged-TOAST columns,
/// no variable-scale decimals). A value that does not fit its column is a [`DecodeError`]
/// naming the table and column. Strings of the record are borrowed, not copied.
pub fn decode_debezium_row<'a>(
    key: Option<&[u8]>,
    value: &'a [u8],
    topic: &str,
    cache: &mut SchemaCache,
) -> Result<DecodedRow<'a>, DecodeError> {
    if value.starts_with(&crate::avro::MAGIC) {
        return avro::decode_avro_row(key, value, topic, cache);
    }
    let change = match envelope(key, value, topic, cache)? {
        Envelope::Skip(skip) => return Ok(DecodedRow::Skip(skip)),
        Envelope::Change(change) => change,
    };
    let unfit =
        |table: &TableId, e: SchemaError| DecodeError::new(topic, format!("table {table}: {e}"));
    let derived = Arc::clone(&change.derived);
    let types = derived
        .types
        .as_ref()
        .map_err(|e| unfit(&derived.schema.table, e.clone()))?;
    if let Some(row) = image::direct_row(&change, types) {
        return Ok(DecodedRow::Row {
            row,
            schema: Arc::clone(&derived.schema),
        });
    }
    let decoded = change_event(change, topic)?;
    let row = SegmentRow::from_event(&decoded.event, &decoded.schema, types)
        .map_err(|e| unfit(&derived.schema.table, e))?;
    Ok(DecodedRow::Row {
        row,
        schema: decoded.schema,
    })
}

/// A record's envelope read up to its images: a skip, or a change's metadata.
// Made and taken apart at once, never stored: boxing the change would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Envelope<'a> {
    Skip(Skip),
    Change(Change<'a>),
}

/// A change's envelope: everything but the row images, which are still unparsed.
pub(crate) struct Change<'a> {
    pub(crate) payload: PayloadView<'a>,
    pub(crate) source: SourceView<'a>,
    pub(crate) op: Operation,
    pub(crate) commit_ts_us: i64,
    pub(crate) position: SourcePosition,
    pub(crate) tx_id: Option<Cow<'a, str>>,
    pub(crate) origin: Option<String>,
    /// The key document's payload, if the record has a key.
    pub(crate) key_row: Option<Row>,
    pub(crate) derived: Arc<DerivedColumns>,
}

fn envelope<'a>(
    key: Option<&[u8]>,
    value: &'a [u8],
    topic: &str,
    cache: &mut SchemaCache,
) -> Result<Envelope<'a>, DecodeError> {
    let err = |reason: String| DecodeError::new(topic, reason);
    if value.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope::Skip(Skip::Tombstone));
    }
    // Known schema text: only the payload is parsed. Otherwise the top level without
    // parsing the schema, which is looked up in the cache by its text.
    let fast = cache.split(value).and_then(|(schema, payload)| {
        let payload = std::str::from_utf8(payload).ok()?;
        Some((schema, PayloadView::parse(payload).ok()?))
    });
    let (schema, mut payload) = match fast {
        Some(found) => found,
        None => {
            let top: HashMap<Cow<'_, str>, &RawValue> = match serde_json::from_slice(value) {
                Ok(top) => top,
                Err(_) => {
                    // Say precisely what is wrong.
                    let document: Value = serde_json::from_slice(value)
                        .map_err(|e| err(format!("value is not JSON: {e}")))?;
                    return match document {
                        Value::Null => Ok(Envelope::Skip(Skip::Tombstone)),
                        _ => Err(err("value is not a JSON object".into())),
                    };
                }
            };
            let (Some(schema), Some(payload)) = (top.get("schema"), top.get("payload")) else {
                return Err(err(
                    "value has no \"schema\" and \"payload\" (expected the JSON converter with \
                     schemas.enable=true)"
                        .into(),
                ));
            };
            let payload = match PayloadView::parse(payload.get()) {
                Ok(view) => view,
                Err(e) => {
                    let document: Value = serde_json::from_str(payload.get())
                        .map_err(|e| err(format!("value is not JSON: {e}")))?;
                    return match document {
                        Value::Null => Ok(Envelope::Skip(Skip::Tombstone)),
                        Value::Object(_) => Err(err(format!("payload: {e}"))),
                        _ => Err(err("payload is not an object".into())),
                    };
                }
            };
            let schema = cache
                .parse(schema.get())
                .map_err(|e| err(format!("value is not JSON: {e}")))?;
            (schema, payload)
        }
    };
    let schema = schema.as_ref();
    let schema_name = schema.get("name").and_then(Value::as_str).unwrap_or("");
    if schema_name.contains("Heartbeat") {
        return Ok(Envelope::Skip(Skip::Heartbeat));
    }
    if payload.op.is_none() && payload.status.is_some() {
        return Ok(Envelope::Skip(Skip::TransactionMetadata));
    }
    let op_code = payload
        .op
        .and_then(raw_str)
        .ok_or_else(|| err("payload.op is missing".into()))?;
    if op_code == "m" {
        return Ok(Envelope::Skip(Skip::Message));
    }
    let op = Operation::from_code(&op_code).ok_or_else(|| {
        err(format!(
            "payload.op {op_code:?} is not one of c, u, d, r, t"
        ))
    })?;

    let Some(source) = payload.source.take() else {
        return Err(err("payload.source is missing".into()));
    };
    let names = source.table_names().map_err(&err)?;

    let commit_ts_us = match (
        source.ts_us.and_then(raw_i64),
        source.ts_ms.and_then(raw_i64),
    ) {
        (Some(us), _) => us,
        (None, Some(ms)) => ms
            .checked_mul(1000)
            .ok_or_else(|| err(format!("source.ts_ms {ms} is out of range")))?,
        (None, None) => return Err(err("source has neither ts_us nor ts_ms".into())),
    };
    let seq = source
        .lsn
        .and_then(raw_u64)
        .ok_or_else(|| err("source.lsn is missing or not a non-negative integer".into()))?;
    let commit = source
        .commit_lsn
        .and_then(raw_u64)
        .or_else(|| {
            let transaction: TransactionView<'_> =
                serde_json::from_str(payload.transaction?.get()).ok()?;
            let id = raw_str(transaction.id?)?;
            id.rsplit_once(':').and_then(|(_, lsn)| lsn.parse().ok())
        })
        .unwrap_or(seq);
    let tx_id = source.tx_id.and_then(|raw| match raw_str(raw) {
        Some(text) => Some(text),
        // A plain integer is its own text.
        None if raw.get().bytes().all(|b| b.is_ascii_digit()) && !raw.get().is_empty() => {
            Some(Cow::Borrowed(raw.get()))
        }
        None if numeric(raw) => serde_json::from_str::<serde_json::Number>(raw.get())
            .ok()
            .map(|n| Cow::Owned(n.to_string())),
        None => None,
    });
    let origin = source.node.and_then(raw_str).map(Cow::into_owned);

    // The key document.
    let key_row = match key {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => {
            Some(decode_key(bytes, cache).map_err(|r| err(format!("key: {r}")))?)
        }
        _ => None,
    };
    let derived = cache
        .derived_columns(schema, &names, key_row.as_ref())
        .map_err(&err)?;
    Ok(Envelope::Change(Change {
        payload,
        source,
        op,
        commit_ts_us,
        position: SourcePosition { commit, seq },
        tx_id,
        origin,
        key_row,
        derived,
    }))
}

/// The change event of an envelope: its images parsed, Debezium's placeholders taken out.
fn change_event(change: Change<'_>, topic: &str) -> Result<DecodedEvent, DecodeError> {
    let err = |reason: String| DecodeError::new(topic, reason);
    let Change {
        payload,
        source,
        op,
        commit_ts_us,
        position,
        tx_id,
        origin,
        key_row,
        derived,
    } = change;
    let variable_scale = &derived.variable_scale;
    let table_schema = Arc::clone(&derived.schema);
    let table = table_schema.table.clone();

    let mut unchanged: Vec<String> = match source
        .unchanged_toast
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        Some(Ok(Value::Array(names))) => names
            .into_iter()
            .filter_map(|n| match n {
                Value::String(name) => Some(name),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let image = |field: &str, raw: Option<&RawValue>| -> Result<Option<Row>, DecodeError> {
        match raw.map(RawValue::get) {
            None | Some("null") => Ok(None),
            Some(text) => match serde_json::from_str::<Fields>(text) {
                Ok(fields) => Ok(Some(ordered_row(fields, table_schema.as_ref()))),
                Err(_) => Err(err(format!("payload.{field} is not an object or null"))),
            },
        }
    };
    let mut before = image("before", payload.before)?;
    let mut after = image("after", payload.after)?;
    for row in [&mut before, &mut after].into_iter().flatten() {
        for name in variable_scale {
            if let Some(value) = row.get(name).filter(|v| !v.is_null()) {
                let text = variable_scale_decimal(value)
                    .map_err(|r| err(format!("column {name}: {r}")))?;
                row.insert(name.clone(), Value::String(text));
            }
        }
    }
    for (row, record) in [(&mut after, true), (&mut before, false)] {
        let Some(row) = row else { continue };
        let listed = record && !unchanged.is_empty();
        if !listed && !row.iter().any(|(_, v)| maybe_unavailable(v)) {
            continue; // nothing to take out (the usual case)
        }
        for column in &table_schema.columns {
            let placeholder = row
                .get(&column.name)
                .is_some_and(|v| is_unavailable(v, &column.column_type));
            let listed = record && unchanged.contains(&column.name);
            if placeholder || listed {
                row.remove(&column.name);
                if record && !unchanged.contains(&column.name) {
                    unchanged.push(column.name.clone());
                }
            }
        }
    }

    match op {
        Operation::Create | Operation::Read | Operation::Update if after.is_none() => {
            return Err(err(format!("op {op} without an after image")));
        }
        Operation::Delete if before.is_none() && key_row.is_none() => {
            return Err(err("delete with neither a before image nor a key".into()));
        }
        _ => {}
    }
    let key = match (key_row, op) {
        (Some(k), _) => k,
        (None, Operation::Truncate) => Row::new(),
        // No key document: a table without a primary key. The whole image is the identity.
        (None, _) => match op {
            Operation::Delete => before.clone().unwrap_or_default(),
            _ => after.clone().unwrap_or_default(),
        },
    };

    Ok(DecodedEvent {
        event: ChangeEvent {
            table,
            op,
            key,
            before,
            after,
            unchanged,
            commit_ts_us,
            position,
            tx_id: tx_id.map(Cow::into_owned),
            origin,
        },
        schema: table_schema,
    })
}

/// The columns an envelope schema declares (from its before/after struct), marking
/// `key_names` as the key.
fn derive_columns(
    schema: &Value,
    table: &TableId,
    key_names: &[String],
    event_id_version: EventIdVersion,
) -> Result<DerivedColumns, String> {
    let row_schema = envelope_row_schema(schema).ok_or_else(|| {
        "value schema has no before/after struct (not a Debezium envelope)".to_owned()
    })?;
    let key_names_list = key_names.to_vec();
    let key_names: HashSet<&str> = key_names.iter().map(String::as_str).collect();
    let mut columns = Vec::with_capacity(row_schema.len());
    for field in row_schema {
        let name = field
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| "a column in the value schema has no name".to_owned())?;
        let column_type =
            column_type(field).map_err(|r| format!("schema of column {name}: {r}"))?;
        columns.push(ColumnSchema {
            name: name.to_owned(),
            key: key_names.contains(&name),
            optional: field
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            column_type,
        });
    }
    // Debezium's variable-scale decimals become decimal text (see the module doc).
    let variable_scale: Vec<String> = columns
        .iter_mut()
        .filter(|c| {
            c.column_type.connect == ConnectType::Struct
                && c.column_type.semantic.as_deref() == Some(VARIABLE_SCALE_DECIMAL)
        })
        .map(|c| {
            c.column_type = ColumnType::named(ConnectType::String, VARIABLE_SCALE_DECIMAL);
            c.name.clone()
        })
        .collect();
    let schema = TableSchema {
        table: table.clone(),
        columns,
        event_id_version,
    };
    let types = schema
        .segment_schema()
        .and_then(|_| crate::schema::column_types(&schema));
    let mut by_name: Vec<usize> = (0..schema.columns.len()).collect();
    by_name.sort_by(|a, b| schema.columns[*a].name.cmp(&schema.columns[*b].name));
    Ok(DerivedColumns {
        schema: Arc::new(schema),
        variable_scale,
        types,
        by_name,
        ids: TableIds::new(table, event_id_version),
        key_names: key_names_list,
    })
}

/// The fields of the `after` (else `before`) struct of an envelope schema.
fn envelope_row_schema(schema: &Value) -> Option<&Vec<Value>> {
    let fields = schema.get("fields")?.as_array()?;
    ["after", "before"].iter().find_map(|wanted| {
        fields
            .iter()
            .find(|f| f.get("field").and_then(Value::as_str) == Some(wanted))
            .and_then(|f| f.get("fields"))
            .and_then(Value::as_array)
    })
}

/// A Connect field schema as a [`ColumnType`].
fn column_type(field: &Value) -> Result<ColumnType, String> {
    let type_name = field.get("type").and_then(Value::as_str).ok_or("no type")?;
    let connect = ConnectType::parse(type_name)
        .ok_or_else(|| format!("unknown Connect type {type_name:?}"))?;
    let semantic = field.get("name").and_then(Value::as_str).map(str::to_owned);
    let parameters = field
        .get("parameters")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let items = match connect {
        ConnectType::Array => {
            let items = field.get("items").ok_or("array without items")?;
            Some(Box::new(column_type(items)?))
        }
        _ => None,
    };
    Ok(ColumnType {
        connect,
        semantic,
        parameters,
        items,
    })
}

/// The key document's payload, in key-schema order.
fn decode_key(bytes: &[u8], cache: &mut SchemaCache) -> Result<Row, String> {
    let fast = cache.split(bytes).and_then(|(schema, payload)| {
        serde_json::from_slice::<Value>(payload)
            .ok()
            .map(|payload| (Some(schema), payload))
    });
    let (schema, payload) = match fast {
        Some(found) => found,
        None => {
            let document: HashMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(bytes)
                .map_err(|e| match serde_json::from_slice::<Value>(bytes) {
                    Err(e) => format!("not JSON: {e}"),
                    Ok(_) => format!("not a JSON object: {e}"),
                })?;
            let payload = document
                .get("payload")
                .ok_or("no \"payload\" (expected the JSON converter with schemas.enable=true)")?;
            let payload: Value =
                serde_json::from_str(payload.get()).map_err(|e| format!("not JSON: {e}"))?;
            let schema = match document.get("schema") {
                Some(schema) => Some(
                    cache
                        .parse(schema.get())
                        .map_err(|e| format!("not JSON: {e}"))?,
                ),
                None => None,
            };
            (schema, payload)
        }
    };
    let Value::Object(payload) = payload else {
        return Err("payload is not an object".into());
    };
    let order: Vec<&str> = schema
        .as_deref()
        .and_then(|s| s.get("fields"))
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.get("field").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let mut row = Row::new();
    for name in &order {
        if let Some(value) = payload.get(*name) {
            row.insert(*name, value.clone());
        }
    }
    for (name, value) in payload {
        if !order.contains(&name.as_str()) {
            row.insert(name, value);
        }
    }
    Ok(row)
}

/// A payload image in the schema's column order (columns the schema does not name last, by
/// name). A column named twice keeps its last value, as a JSON object does.
fn ordered_row(fields: Fields, schema: &TableSchema) -> Row {
    let mut row = Row::new();
    for (name, value) in fields.0 {
        row.insert(name, value);
    }
    let place = |name: &str| {
        schema
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(usize::MAX)
    };
    let in_order = row
        .0
        .iter()
        .enumerate()
        .all(|(i, (name, _))| schema.columns.get(i).is_some_and(|c| c.name == *name));
    if !in_order {
        row.0.sort_by_cached_key(|(name, _)| {
            let index = place(name);
            (index, (index == usize::MAX).then(|| name.clone()))
        });
    }
    row
}

/// A JSON object's members in document order.
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Fields(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// The members of an envelope payload the decoder reads, unparsed. A member that is present
/// is `Some`, even when it is `null` (as `Map::contains_key` would say).
#[derive(Deserialize)]
pub(crate) struct PayloadView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    op: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) before: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) after: Option<&'a RawValue>,
    /// Parsed in the same pass (`null`: `None`).
    #[serde(default, borrow)]
    source: Option<SourceView<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    transaction: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    status: Option<&'a RawValue>,
}

impl<'a> PayloadView<'a> {
    /// Members the view does not read are skipped without a look at their bytes, so the
    /// text is checked as UTF-8 first: a payload is refused for a bad byte wherever it is,
    /// as a full parse of the document refuses it.
    fn parse(payload: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// The members of `payload.source` the decoder reads, unparsed.
#[derive(Deserialize)]
#[serde(expecting = "payload.source as an object")]
pub(crate) struct SourceView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    schema: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    db: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    table: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    collection: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ts_us: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    ts_ms: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    lsn: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    commit_lsn: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "txId")]
    tx_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    node: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) unchanged_toast: Option<&'a RawValue>,
}

/// A table's (source, namespace, table) names as a record gives them.
pub(crate) type TableNames<'a> = (Cow<'a, str>, Cow<'a, str>, Cow<'a, str>);

impl SourceView<'_> {
    /// The table's (source, namespace, table) names, not yet validated.
    fn table_names(&self) -> Result<TableNames<'_>, String> {
        let name = self
            .name
            .and_then(raw_str)
            .ok_or("source.name is missing")?;
        let namespace = self
            .schema
            .and_then(raw_str)
            .or_else(|| self.db.and_then(raw_str))
            .ok_or("source has neither schema nor db")?;
        let table = self
            .table
            .and_then(raw_str)
            .or_else(|| self.collection.and_then(raw_str))
            .ok_or("source.table is missing")?;
        Ok((name, namespace, table))
    }
}

/// The member of `payload.transaction` the decoder reads.
#[derive(Deserialize)]
struct TransactionView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

// The first byte says what a JSON value is: no parse (and no costly serde error) for a value
// of another kind.

/// A JSON string's text (`None` for anything else).
fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// True if the raw value could be a JSON number.
fn numeric(raw: &RawValue) -> bool {
    raw.get()
        .as_bytes()
        .first()
        .is_some_and(|b| *b == b'-' || b.is_ascii_digit())
}

/// A JSON integer in i64 (`None` for anything else). A raw value is valid JSON, so its
/// text is an integer's exactly when Rust's integer syntax accepts it.
fn raw_i64(raw: &RawValue) -> Option<i64> {
    numeric(raw).then(|| raw.get().parse().ok())?
}

/// A JSON integer in u64 (`None` for anything else).
fn raw_u64(raw: &RawValue) -> Option<u64> {
    numeric(raw).then(|| raw.get().parse().ok())?
}

/// The semantic name of Debezium's unconstrained-numeric struct.
const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";

/// The decimal text of a `VariableScaleDecimal` value: `{"scale": s, "value": base64}`, where
/// the bytes are a big-endian two's-complement unscaled integer (Java's `BigInteger`), of any
/// length. `{"scale": 2, "value": "/6w="}` (-84) is `"-0.84"`.
fn variable_scale_decimal(value: &Value) -> Result<String, String> {
    use base64::Engine as _;
    let scale = value
        .get("scale")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("VariableScaleDecimal without an integer scale: {value}"))?;
    let encoded = value
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("VariableScaleDecimal without a base64 value: {value}"))?;
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("VariableScaleDecimal value {encoded:?} is not base64: {e}"))?;
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if negative {
        // The magnitude: invert and add one.
        for b in bytes.iter_mut() {
            *b = !*b;
        }
        for b in bytes.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    // Base 256 -> base 10, least significant digit first.
    let mut digits: Vec<u8> = Vec::new();
    let mut magnitude: Vec<u8> = bytes.into_iter().skip_while(|b| *b == 0).collect();
    while !magnitude.is_empty() {
        let mut remainder = 0u32;
        for b in magnitude.iter_mut() {
            let current = (remainder << 8) | u32::from(*b);
            *b = (current / 10) as u8;
            remainder = current % 10;
        }
        digits.push(remainder as u8);
        let zeros = magnitude.iter().take_while(|b| **b == 0).count();
        magnitude.drain(..zeros);
    }
    if digits.is_empty() {
        digits.push(0);
    }
    let mut text: String = digits.iter().rev().map(|d| char::from(b'0' + d)).collect();
    // PostgreSQL's numeric scale is at most 16383 (and not below -1000); refuse what no
    // numeric can have rather than allocate for it.
    let shift = usize::try_from(scale.unsigned_abs())
        .ok()
        .filter(|s| *s <= 16_383)
        .ok_or_else(|| format!("VariableScaleDecimal scale {scale} is out of range"))?;
    if scale < 0 {
        text.extend(std::iter::repeat_n('0', shift));
    } else if scale > 0 {
        let scale = shift;
        if text.len() <= scale {
            let pad = scale + 1 - text.len();
            text.insert_str(0, &"0".repeat(pad));
        }
        text.insert(text.len() - scale, '.');
    }
    if negative {
        text.insert(0, '-');
    }
    Ok(text)
}

/// True for Debezium's "value not sent" placeholder in a column of this type.
/// The placeholder as a `bytes` column carries it (base64).
const UNAVAILABLE_BASE64: &str = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==";

/// True if the value could be a placeholder under some column type (see [`is_unavailable`]).
fn maybe_unavailable(value: &Value) -> bool {
    match value {
        Value::String(s) => s == UNAVAILABLE_VALUE || s == UNAVAILABLE_BASE64,
        Value::Array(items) => items.len() == 1 && maybe_unavailable(&items[0]),
        _ => false,
    }
}

fn is_unavailable(value: &Value, ty: &ColumnType) -> bool {
    match value {
        Value::String(s) => {
            s == UNAVAILABLE_VALUE || (ty.connect == ConnectType::Bytes && s == UNAVAILABLE_BASE64)
        }
        Value::Array(items) => {
            items.len() == 1
                && ty
                    .items
                    .as_deref()
                    .is_some_and(|item| is_unavailable(&items[0], item))
        }
        _ => false,
    }
}

mod avro;
pub mod id;
mod image;

pub use avro::AvroSchemas;
pub use id::{EventIdVersion, EventIdVersions};
use id::{IdHasher, TableIds};
#[cfg(test)]
mod tests;
