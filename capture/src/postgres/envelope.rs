//! Debezium change-event envelopes for PostgreSQL rows (pure: layouts and tuples in, JSON bytes out).
//!
//! strata writes what Debezium's PostgreSQL connector writes with the JSON converter and
//! `schemas.enable=true`, so every tool that reads Debezium topics reads strata's:
//!
//! ```text
//! key:   {"schema":{…"name":"<topic>.Key"},"payload":{"id":1}}
//! value: {"schema":{…"name":"<topic>.Envelope"},
//!         "payload":{"before":{…}|null,"after":{…}|null,
//!                    "source":{"version","connector":"postgresql","name","ts_ms","snapshot","db",
//!                              "sequence","ts_us","ts_ns","schema","table","txId","lsn","xmin",
//!                              "commit_lsn","unchanged_toast"},
//!                    "op":"c|u|d|r|t","ts_ms":…,
//!                    "transaction":{"id":"<txId>:<commit lsn>","total_order","data_collection_order"}}}
//! ```
//!
//! Two fields are strata's own, declared in the source schema so converters accept them:
//! `commit_lsn` (the commit position of the event's transaction, the same on all its events: a
//! consumer applies a transaction all or nothing) and `unchanged_toast` (columns whose TOASTed value
//! did not change: their value is Debezium's placeholder `__debezium_unavailable_value`, and they
//! are *not* NULL; the previous value still holds).
//!
//! Value columns are declared optional (pgoutput does not say which columns are NOT NULL); key
//! columns are required. Types map as in [`super::value`].
//!
//! With [`RecordFormat::Avro`] the key and the value are instead the Avro single-object encoding
//! ([`strata_catalog::avro`]) of the very `payload` above, laid out by the writer schema built
//! from the same Connect schema: decoded, an Avro record is the JSON record's payload, value for
//! value.

use std::io::Write as _;

use strata_catalog::avro::{AvroError, WriterSchema};

use super::pgoutput::{ColumnValue, Oid, Relation, Tuple};
use super::value::{self, PgType, ValueError};
use crate::now_micros;
use crate::sink::RecordFormat;

/// Debezium's default placeholder for a TOASTed value that was not sent.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// The connector name in `source.connector`.
const CONNECTOR: &str = "postgresql";

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// A column's type has no mapping.
    #[error("table {table}, column {column}: {source}")]
    UnsupportedType {
        /// `schema.table`
        table: String,
        /// The column.
        column: String,
        /// What the value parser said.
        source: ValueError,
    },
    /// A column's value did not parse as its type.
    #[error("table {table}, column {column}: {source}")]
    BadValue {
        /// `schema.table`
        table: String,
        /// The column.
        column: String,
        /// What the value parser said.
        source: ValueError,
    },
    /// The table has no primary key / replica identity key: its events could not be keyed.
    #[error(
        "table {table} has no primary key (and no REPLICA IDENTITY USING INDEX): strata keys \
         events by primary key; add one, or leave the table out of source.postgres.tables"
    )]
    MissingKey {
        /// `schema.table`
        table: String,
    },
    /// A tuple does not have the relation's column count.
    #[error("table {table}: a row has {got} columns but the relation has {expected}")]
    ColumnCount {
        /// `schema.table`
        table: String,
        /// Columns in the relation.
        expected: usize,
        /// Columns in the row.
        got: usize,
    },
    /// pgoutput sent binary values (strata asks for text).
    #[error("table {table}, column {column}: binary values are not supported")]
    Binary {
        /// `schema.table`
        table: String,
        /// The column.
        column: String,
    },
    /// A schema or an event has no Avro form (`kafka.format = "avro"`).
    #[error("table {table}: Avro {part}: {source}")]
    Avro {
        /// `schema.table`
        table: String,
        /// `key schema`, `value schema`, `key` or `value`.
        part: &'static str,
        /// What the Avro writer said.
        source: AvroError,
    },
}

/// One column of a captured table.
#[derive(Debug, Clone)]
pub struct ColumnLayout {
    /// The name.
    pub name: String,
    /// The type.
    pub pg_type: PgType,
    /// Part of the key.
    pub is_key: bool,
    /// The name as a JSON string, quotes included, ready to write.
    json_name: String,
}

/// Everything needed to encode events of one relation, computed once per Relation message.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// The relation's OID.
    pub relation_id: Oid,
    /// The schema.
    pub namespace: String,
    /// The table.
    pub name: String,
    /// The Kafka topic: `<server name>.<schema>.<table>`.
    pub topic: String,
    /// The columns in pgoutput order.
    pub columns: Vec<ColumnLayout>,
    key_schema: String,
    value_schema: String,
    /// The Avro writer schemas, with [`RecordFormat::Avro`].
    avro: Option<WriterSchemas>,
}

/// A relation's Avro writer schemas, built from its Connect key and value schemas.
#[derive(Debug, Clone)]
struct WriterSchemas {
    key: WriterSchema,
    value: WriterSchema,
}

/// Naming shared by every event of a source.
#[derive(Debug, Clone)]
pub struct ServerNaming {
    /// Debezium's `topic.prefix` / logical server name (`strata.pg`); topics are
    /// `<server_name>.<schema>.<table>`.
    pub server_name: String,
    /// The database name, for `source.db`.
    pub database: String,
    /// strata's version, for `source.version`.
    pub version: String,
    /// How keys and values are written.
    pub format: RecordFormat,
}

impl TableLayout {
    /// Builds the layout of a relation. Fails on a column type strata cannot map or a table
    /// without a key.
    pub fn new(relation: &Relation, naming: &ServerNaming) -> Result<Self, EnvelopeError> {
        let table = format!("{}.{}", relation.namespace, relation.name);
        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let pg_type = PgType::from_oid(column.type_oid).map_err(|source| {
                EnvelopeError::UnsupportedType {
                    table: table.clone(),
                    column: column.name.clone(),
                    source,
                }
            })?;
            columns.push(ColumnLayout {
                name: column.name.clone(),
                pg_type,
                is_key: column.is_key(),
                json_name: json_string(&column.name),
            });
        }
        if !columns.iter().any(|c| c.is_key) {
            return Err(EnvelopeError::MissingKey { table });
        }
        let topic = format!(
            "{}.{}.{}",
            naming.server_name, relation.namespace, relation.name
        );
        let key_schema = key_schema(&topic, &columns);
        let value_schema = value_schema(&topic, &columns);
        let avro = match naming.format {
            RecordFormat::Json => None,
            RecordFormat::Avro => {
                let writer = |text: &str, part| {
                    WriterSchema::from_connect_text(text).map_err(|source| EnvelopeError::Avro {
                        table: table.clone(),
                        part,
                        source,
                    })
                };
                Some(WriterSchemas {
                    key: writer(&key_schema, "key schema")?,
                    value: writer(&value_schema, "value schema")?,
                })
            }
        };
        Ok(Self {
            relation_id: relation.id,
            namespace: relation.namespace.clone(),
            name: relation.name.clone(),
            topic,
            columns,
            key_schema,
            value_schema,
            avro,
        })
    }

    /// The Avro writer schemas of its keys and values (none with [`RecordFormat::Json`]): each
    /// must be published before the first record that names it.
    pub fn writer_schemas(&self) -> impl Iterator<Item = &WriterSchema> {
        self.avro.iter().flat_map(|w| [&w.key, &w.value])
    }

    /// `schema.table`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The Arrow-independent description of the columns, for the schema history.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "table": self.qualified_name(),
            "columns": self.columns.iter().map(|c| serde_json::json!({
                "name": c.name,
                "type": c.pg_type.name(),
                "key": c.is_key,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The operation of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`
    Create,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// `r`: read in the initial snapshot.
    Read,
    /// `t`
    Truncate,
}

impl Op {
    /// Debezium's code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Where and when an event happened.
#[derive(Debug, Clone, Copy)]
pub struct EventSource {
    /// Commit time, microseconds since the Unix epoch.
    pub commit_ts_micros: i64,
    /// `source.snapshot`: `"false"` while streaming, `"true"` / `"last"` in the snapshot.
    pub snapshot: &'static str,
    /// The transaction id, when known.
    pub tx_id: Option<u32>,
    /// The WAL position of this change.
    pub lsn: u64,
    /// The WAL position of its transaction's commit (the snapshot's consistent point in a snapshot).
    pub commit_lsn: u64,
    /// The previous commit LSN (for Debezium's `sequence`).
    pub last_commit_lsn: Option<u64>,
    /// Position of this event in its transaction, and in its transaction and table (1-based).
    pub order: Option<(u64, u64)>,
}

/// One row image: either a pgoutput tuple (text values) or a snapshot row (text values from COPY).
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// From the replication stream.
    Tuple(&'a Tuple),
    /// From the snapshot: one text value or NULL per column, in layout order.
    Text(&'a [Option<&'a [u8]>]),
}

impl Row<'_> {
    fn len(&self) -> usize {
        match self {
            Row::Tuple(t) => t.0.len(),
            Row::Text(v) => v.len(),
        }
    }
    fn get(&self, i: usize) -> Cell<'_> {
        match self {
            Row::Tuple(t) => match t.0.get(i) {
                Some(ColumnValue::Text(bytes)) => Cell::Text(bytes),
                Some(ColumnValue::UnchangedToast) => Cell::Unchanged,
                Some(ColumnValue::Binary(_)) => Cell::Binary,
                Some(ColumnValue::Null) | None => Cell::Null,
            },
            Row::Text(v) => match v.get(i) {
                Some(Some(bytes)) => Cell::Text(bytes),
                _ => Cell::Null,
            },
        }
    }
}

enum Cell<'a> {
    Null,
    Unchanged,
    Binary,
    Text(&'a [u8]),
}

/// Writes the Kafka key of a row (its key columns) into `out`.
pub fn encode_key(
    layout: &TableLayout,
    row: Row<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    match &layout.avro {
        None => {
            out.clear();
            out.extend_from_slice(b"{\"schema\":");
            out.extend_from_slice(layout.key_schema.as_bytes());
            out.extend_from_slice(b",\"payload\":");
            write_row(layout, row, true, out, &mut Vec::new())?;
            out.push(b'}');
            Ok(())
        }
        Some(avro) => {
            let mut payload = Vec::new();
            write_row(layout, row, true, &mut payload, &mut Vec::new())?;
            encode_avro(layout, &avro.key, "key", &payload, out)
        }
    }
}

/// Writes the Kafka value of a change into `out`.
pub fn encode_value(
    layout: &TableLayout,
    naming: &ServerNaming,
    op: Op,
    before: Option<Row<'_>>,
    after: Option<Row<'_>>,
    source: &EventSource,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    match &layout.avro {
        None => {
            out.clear();
            out.extend_from_slice(b"{\"schema\":");
            out.extend_from_slice(layout.value_schema.as_bytes());
            out.extend_from_slice(b",\"payload\":");
            write_payload(layout, naming, op, before, after, source, out)?;
            out.push(b'}');
            Ok(())
        }
        Some(avro) => {
            let mut payload = Vec::new();
            write_payload(layout, naming, op, before, after, source, &mut payload)?;
            encode_avro(layout, &avro.value, "value", &payload, out)
        }
    }
}

/// Encodes `payload`, the JSON text the JSON format writes as `"payload"`, with `schema`: read
/// once, straight into Avro (its members come in schema order, as this module writes them).
fn encode_avro(
    layout: &TableLayout,
    schema: &WriterSchema,
    part: &'static str,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    schema
        .encode_json(payload, out)
        .map_err(|source| EnvelopeError::Avro {
            table: layout.qualified_name(),
            part,
            source,
        })
}

/// Appends a change's `{"before",…,"transaction"}` payload to `out`.
fn write_payload(
    layout: &TableLayout,
    naming: &ServerNaming,
    op: Op,
    before: Option<Row<'_>>,
    after: Option<Row<'_>>,
    source: &EventSource,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    out.extend_from_slice(b"{\"before\":");
    let mut unchanged = Vec::new();
    match before {
        Some(row) => write_row(layout, row, false, out, &mut Vec::new())?,
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"after\":");
    match after {
        Some(row) => write_row(layout, row, false, out, &mut unchanged)?,
        None => out.extend_from_slice(b"null"),
    }
    let ts_ms = source.commit_ts_micros.div_euclid(1000);
    let now_ms = now_micros().div_euclid(1000);
    // `write!` into a Vec cannot fail.
    let _ = write!(
        out,
        ",\"source\":{{\"version\":{},\"connector\":\"{CONNECTOR}\",\"name\":{},\"ts_ms\":{ts_ms},\
         \"snapshot\":\"{}\",\"db\":{},\"sequence\":",
        json_string(&naming.version),
        json_string(&naming.server_name),
        source.snapshot,
        json_string(&naming.database),
    );
    let sequence = format!(
        "[{},\"{}\"]",
        source
            .last_commit_lsn
            .map_or("null".to_owned(), |l| format!("\"{l}\"")),
        source.lsn
    );
    let _ = write!(
        out,
        "{},\"ts_us\":{},\"ts_ns\":{},\"schema\":{},\"table\":{},\"txId\":{},\"lsn\":{},\
         \"xmin\":null,\"commit_lsn\":{},\"unchanged_toast\":",
        json_string(&sequence),
        source.commit_ts_micros,
        i128::from(source.commit_ts_micros) * 1000,
        json_string(&layout.namespace),
        json_string(&layout.name),
        source.tx_id.map_or("null".to_owned(), |t| t.to_string()),
        source.lsn,
        source.commit_lsn,
    );
    if unchanged.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'[');
        for (i, idx) in unchanged.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(c) = layout.columns.get(*idx) {
                out.extend_from_slice(c.json_name.as_bytes());
            }
        }
        out.push(b']');
    }
    let _ = write!(
        out,
        "}},\"op\":\"{}\",\"ts_ms\":{now_ms},\"transaction\":",
        op.code()
    );
    match (source.tx_id, source.order) {
        (Some(tx), Some((total, in_table))) => {
            let _ = write!(
                out,
                "{{\"id\":\"{tx}:{}\",\"total_order\":{total},\"data_collection_order\":{in_table}}}",
                source.commit_lsn
            );
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(())
}

/// Writes `{"col":value,…}`; `keys_only` writes only key columns. Indices of unchanged TOASTed
/// columns go to `unchanged`.
fn write_row(
    layout: &TableLayout,
    row: Row<'_>,
    keys_only: bool,
    out: &mut Vec<u8>,
    unchanged: &mut Vec<usize>,
) -> Result<(), EnvelopeError> {
    if row.len() != layout.columns.len() {
        return Err(EnvelopeError::ColumnCount {
            table: layout.qualified_name(),
            expected: layout.columns.len(),
            got: row.len(),
        });
    }
    out.push(b'{');
    let mut first = true;
    for (i, column) in layout.columns.iter().enumerate() {
        if keys_only && !column.is_key {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(column.json_name.as_bytes());
        out.push(b':');
        match row.get(i) {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Unchanged => {
                unchanged.push(i);
                out.extend_from_slice(json_string(UNAVAILABLE_VALUE).as_bytes());
            }
            Cell::Binary => {
                return Err(EnvelopeError::Binary {
                    table: layout.qualified_name(),
                    column: column.name.clone(),
                });
            }
            Cell::Text(bytes) => write_value(layout, column, bytes, out)?,
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_value(
    layout: &TableLayout,
    column: &ColumnLayout,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    let bad = |source| EnvelopeError::BadValue {
        table: layout.qualified_name(),
        column: column.name.clone(),
        source,
    };
    // Fast paths for the commonest types: the text form is already the JSON form.
    if let PgType::Scalar(scalar) = column.pg_type {
        use value::ScalarType as S;
        match scalar {
            S::Int2 | S::Int4 | S::Int8 if is_plain_integer(text) => {
                out.extend_from_slice(text);
                return Ok(());
            }
            S::Text | S::Varchar | S::Bpchar | S::Name | S::Numeric => {
                let s = std::str::from_utf8(text).map_err(|e| {
                    bad(ValueError::NotUtf8 {
                        type_name: scalar.name(),
                        offset: e.valid_up_to(),
                    })
                })?;
                if scalar == S::Numeric {
                    // Validate like the parser does, but keep the text.
                    scalar.parse_text(s).map_err(bad)?;
                }
                out.extend_from_slice(json_string(s).as_bytes());
                return Ok(());
            }
            _ => {}
        }
    }
    let parsed = value::parse_text_bytes(column.pg_type.oid(), text).map_err(bad)?;
    // Serializing a serde_json::Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &parsed.to_debezium_json());
    Ok(())
}

fn is_plain_integer(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn field_schemas(columns: &[ColumnLayout], keys_only: bool) -> Vec<serde_json::Value> {
    columns
        .iter()
        .filter(|c| !keys_only || c.is_key)
        .map(|c| {
            let mut schema = c.pg_type.debezium_schema().to_json(!c.is_key);
            if let Some(map) = schema.as_object_mut() {
                map.insert("field".into(), c.name.clone().into());
            }
            schema
        })
        .collect()
}

fn key_schema(topic: &str, columns: &[ColumnLayout]) -> String {
    serde_json::json!({
        "type": "struct",
        "fields": field_schemas(columns, true),
        "optional": false,
        "name": format!("{topic}.Key"),
    })
    .to_string()
}

fn value_schema(topic: &str, columns: &[ColumnLayout]) -> String {
    let row = |field: &str| {
        serde_json::json!({
            "type": "struct",
            "fields": field_schemas(columns, false),
            "optional": true,
            "name": format!("{topic}.Value"),
            "field": field,
        })
    };
    let f = |ty: &str, optional: bool, field: &str| serde_json::json!({"type": ty, "optional": optional, "field": field});
    let source = serde_json::json!({
        "type": "struct",
        "fields": [
            f("string", false, "version"),
            f("string", false, "connector"),
            f("string", false, "name"),
            f("int64", false, "ts_ms"),
            {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
             "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
             "default": "false", "field": "snapshot"},
            f("string", false, "db"),
            f("string", true, "sequence"),
            f("int64", true, "ts_us"),
            f("int64", true, "ts_ns"),
            f("string", false, "schema"),
            f("string", false, "table"),
            f("int64", true, "txId"),
            f("int64", true, "lsn"),
            f("int64", true, "xmin"),
            f("int64", true, "commit_lsn"),
            {"type": "array", "items": {"type": "string", "optional": false}, "optional": true,
             "field": "unchanged_toast"},
        ],
        "optional": false,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
    });
    let transaction = serde_json::json!({
        "type": "struct",
        "fields": [
            f("string", false, "id"),
            f("int64", false, "total_order"),
            f("int64", false, "data_collection_order"),
        ],
        "optional": true,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    });
    serde_json::json!({
        "type": "struct",
        "fields": [row("before"), row("after"), source, f("string", false, "op"),
                   f("int64", true, "ts_ms"), transaction],
        "optional": false,
        "name": format!("{topic}.Envelope"),
        "version": 2,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::{RelationColumn, ReplicaIdentity};
    use super::*;

    /// A relation of `(key flag, name, type OID)` columns.
    fn relation_of(id: u32, name: &str, columns: &[(u8, &str, u32)]) -> Relation {
        Relation {
            xid: None,
            id,
            namespace: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|&(flags, name, type_oid)| RelationColumn {
                    flags,
                    name: name.into(),
                    type_oid,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn relation() -> Relation {
        relation_of(
            16400,
            "orders",
            &[
                (1, "id", 23),
                (0, "note", 25),
                (0, "total", 1700),
                (0, "at", 1184),
            ],
        )
    }

    fn naming() -> ServerNaming {
        ServerNaming {
            server_name: "strata.pg".into(),
            database: "shop".into(),
            version: "0.1.0".into(),
            format: RecordFormat::Json,
        }
    }

    fn text(s: &str) -> ColumnValue {
        ColumnValue::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn encodes_an_update_as_debezium_does() {
        let layout = TableLayout::new(&relation(), &naming()).unwrap();
        assert_eq!(layout.topic, "strata.pg.public.orders");
        let after = Tuple(vec![
            text("7"),
            ColumnValue::UnchangedToast,
            text("12.50"),
            text("2026-11-25 10:00:00.5+00"),
        ]);
        let source = EventSource {
            commit_ts_micros: 1_764_064_800_000_000,
            snapshot: "false",
            tx_id: Some(900),
            lsn: 0x1_0000_0010,
            commit_lsn: 0x1_0000_0100,
            last_commit_lsn: None,
            order: Some((2, 1)),
        };
        let mut key = Vec::new();
        encode_key(&layout, Row::Tuple(&after), &mut key).unwrap();
        let key: serde_json::Value = serde_json::from_slice(&key).unwrap();
        assert_eq!(key["payload"], serde_json::json!({"id": 7}));
        assert_eq!(key["schema"]["name"], "strata.pg.public.orders.Key");

        let mut value = Vec::new();
        encode_value(
            &layout,
            &naming(),
            Op::Update,
            None,
            Some(Row::Tuple(&after)),
            &source,
            &mut value,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let p = &v["payload"];
        assert_eq!(p["op"], "u");
        assert_eq!(p["before"], serde_json::Value::Null);
        assert_eq!(p["after"]["id"], 7);
        assert_eq!(p["after"]["note"], UNAVAILABLE_VALUE);
        assert_eq!(p["after"]["total"], "12.50");
        assert_eq!(p["after"]["at"], "2026-11-25T10:00:00.5Z");
        assert_eq!(p["source"]["unchanged_toast"], serde_json::json!(["note"]));
        assert_eq!(p["source"]["lsn"], 0x1_0000_0010_u64);
        assert_eq!(p["source"]["commit_lsn"], 0x1_0000_0100_u64);
        assert_eq!(p["source"]["txId"], 900);
        assert_eq!(p["source"]["ts_ms"], 1_764_064_800_000_i64);
        assert_eq!(p["source"]["table"], "orders");
        assert_eq!(p["source"]["db"], "shop");
        assert_eq!(p["transaction"]["id"], format!("900:{}", 0x1_0000_0100_u64));
        assert_eq!(v["schema"]["name"], "strata.pg.public.orders.Envelope");
        // Every payload field of the source is declared in the schema.
        let declared: Vec<&str> = v["schema"]["fields"][2]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        for field in p["source"].as_object().unwrap().keys() {
            assert!(
                declared.contains(&field.as_str()),
                "{field} not in the schema"
            );
        }
    }

    #[test]
    fn null_is_not_unchanged() {
        let layout = TableLayout::new(&relation(), &naming()).unwrap();
        let row = Tuple(vec![
            text("1"),
            ColumnValue::Null,
            ColumnValue::Null,
            ColumnValue::Null,
        ]);
        let source = EventSource {
            commit_ts_micros: 0,
            snapshot: "false",
            tx_id: None,
            lsn: 1,
            commit_lsn: 1,
            last_commit_lsn: None,
            order: None,
        };
        let mut value = Vec::new();
        encode_value(
            &layout,
            &naming(),
            Op::Create,
            None,
            Some(Row::Tuple(&row)),
            &source,
            &mut value,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["payload"]["after"]["note"], serde_json::Value::Null);
        assert_eq!(
            v["payload"]["source"]["unchanged_toast"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn unknown_type_and_missing_key_name_the_table_and_column() {
        let mut rel = relation();
        rel.columns[1].type_oid = 600; // point
        let err = TableLayout::new(&rel, &naming()).unwrap_err().to_string();
        assert!(
            err.contains("public.orders") && err.contains("note"),
            "{err}"
        );

        let mut rel = relation();
        rel.columns[0].flags = 0;
        let err = TableLayout::new(&rel, &naming()).unwrap_err().to_string();
        assert!(
            err.contains("public.orders") && err.contains("primary key"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_the_column() {
        let layout = TableLayout::new(&relation(), &naming()).unwrap();
        let row = Tuple(vec![
            text("1"),
            text("x"),
            text("not-a-number"),
            ColumnValue::Null,
        ]);
        let mut value = Vec::new();
        let source = EventSource {
            commit_ts_micros: 0,
            snapshot: "false",
            tx_id: None,
            lsn: 1,
            commit_lsn: 1,
            last_commit_lsn: None,
            order: None,
        };
        let err = encode_value(
            &layout,
            &naming(),
            Op::Create,
            None,
            Some(Row::Tuple(&row)),
            &source,
            &mut value,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("total"), "{err}");
    }

    // --- kafka.format = "avro": the same payloads, as Avro single-object encodings. ---

    /// A table with a column of each type the Avro tests cover.
    fn typed_relation() -> Relation {
        relation_of(
            16500,
            "typed",
            &[
                (1, "id", 23),
                (1, "region", 21),
                (0, "i8", 20),
                (0, "t", 25),
                (0, "n", 1700),
                (0, "b", 16),
                (0, "f4", 700),
                (0, "f8", 701),
                (0, "by", 17),
                (0, "tz", 1184),
                (0, "ts", 1114),
                (0, "d", 1082),
                (0, "u", 2950),
                (0, "jb", 3802),
                (0, "ai", 1007),
            ],
        )
    }

    /// One row of [`typed_relation`] in PostgreSQL's text output, `None` for NULL.
    const TYPED_ROW: [Option<&str>; 15] = [
        Some("7"),
        Some("-32768"),
        Some("-9223372036854775808"),
        Some("h\u{e9}llo \"w\u{f6}rld\" \\ \u{1F980}\nnext line"),
        Some("-12345678901234567890.123456789"),
        Some("t"),
        Some("1.1"),
        Some("-2.718281828459045"),
        Some("\\x00ff7f80"),
        Some("2026-11-25 10:00:00.5+05:30"),
        Some("2026-11-25 10:00:00.123456"),
        Some("2026-11-25"),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        Some("{\"a\": [1, \"x\"], \"b\": null}"),
        Some("{1,NULL,-3}"),
    ];

    fn tuple(row: &[Option<&str>]) -> Tuple {
        Tuple(
            row.iter()
                .map(|v| v.map_or(ColumnValue::Null, text))
                .collect(),
        )
    }

    fn streamed(order: u64) -> EventSource {
        EventSource {
            commit_ts_micros: 1_764_064_800_000_000,
            snapshot: "false",
            tx_id: Some(901),
            lsn: 0x1_0000_0010 + order,
            commit_lsn: 0x1_0000_0100,
            last_commit_lsn: Some(0x1_0000_0001),
            order: Some((order, order)),
        }
    }

    /// Encodes one event as JSON and as Avro and checks that the Avro key and value decode to
    /// exactly the JSON ones' payloads. Returns the value's payload.
    fn same_payload_in_avro(
        op: Op,
        before: Option<Row<'_>>,
        after: Option<Row<'_>>,
        source: &EventSource,
    ) -> serde_json::Value {
        let json_naming = naming();
        let avro_naming = ServerNaming {
            format: RecordFormat::Avro,
            ..naming()
        };
        let json_layout = TableLayout::new(&typed_relation(), &json_naming).unwrap();
        let avro_layout = TableLayout::new(&typed_relation(), &avro_naming).unwrap();
        assert_eq!(json_layout.writer_schemas().count(), 0);
        let schemas = avro_layout.avro.as_ref().unwrap();
        let payload = |json: &[u8]| -> serde_json::Value {
            let mut record: serde_json::Value = serde_json::from_slice(json).unwrap();
            record["payload"].take()
        };

        if let Some(row) = after.or(before) {
            let (mut json, mut avro) = (Vec::new(), Vec::new());
            encode_key(&json_layout, row, &mut json).unwrap();
            encode_key(&avro_layout, row, &mut avro).unwrap();
            assert_eq!(avro[..2], [0xC3, 0x01]);
            assert_eq!(
                strata_catalog::avro::message_fingerprint(&avro),
                Some(schemas.key.fingerprint())
            );
            assert_eq!(schemas.key.decode(&avro).unwrap(), payload(&json));
        }

        let (mut json, mut avro) = (Vec::new(), Vec::new());
        encode_value(
            &json_layout,
            &json_naming,
            op,
            before,
            after,
            source,
            &mut json,
        )
        .unwrap();
        encode_value(
            &avro_layout,
            &avro_naming,
            op,
            before,
            after,
            source,
            &mut avro,
        )
        .unwrap();
        assert_eq!(
            strata_catalog::avro::message_fingerprint(&avro),
            Some(schemas.value.fingerprint())
        );
        let want = payload(&json);
        let mut got = schemas.value.decode(&avro).unwrap();
        // The envelope's ts_ms is the wall clock when each was encoded.
        let (got_ms, want_ms) = (
            got["ts_ms"].as_i64().unwrap(),
            want["ts_ms"].as_i64().unwrap(),
        );
        assert!((got_ms - want_ms).abs() < 60_000, "{got_ms} vs {want_ms}");
        got["ts_ms"] = want["ts_ms"].clone();
        assert_eq!(got, want);
        // Much smaller: no schema, and binary values (an update of this wide table with before
        // and after images is ~8x smaller).
        assert!(
            avro.len() * 5 < json.len() && avro.len() < want.to_string().len(),
            "Avro {} bytes, JSON {} bytes (payload {})",
            avro.len(),
            json.len(),
            want.to_string().len()
        );
        want
    }

    #[test]
    fn avro_insert_is_the_json_payload() {
        let row = tuple(&TYPED_ROW);
        let p = same_payload_in_avro(Op::Create, None, Some(Row::Tuple(&row)), &streamed(1));
        assert_eq!(p["op"], "c");
        assert_eq!(p["after"]["region"], -32768);
        assert_eq!(p["after"]["f4"], 1.1);
        assert_eq!(p["after"]["by"], "AP9/gA==");
        assert_eq!(p["after"]["ai"], serde_json::json!([1, null, -3]));

        // NULLs, and the floats JSON writes as strings.
        let mut nulls = [None; 15];
        nulls[..2].copy_from_slice(&TYPED_ROW[..2]);
        nulls[6] = Some("NaN");
        nulls[7] = Some("-Infinity");
        nulls[14] = Some("{}");
        let row = tuple(&nulls);
        let p = same_payload_in_avro(Op::Create, None, Some(Row::Tuple(&row)), &streamed(2));
        assert_eq!(p["after"]["t"], serde_json::Value::Null);
        assert_eq!(p["after"]["f4"], "NaN");
        assert_eq!(p["after"]["f8"], "-Infinity");
        assert_eq!(p["after"]["ai"], serde_json::json!([]));
    }

    #[test]
    fn avro_update_with_an_unchanged_toasted_column_is_the_json_payload() {
        let mut after = tuple(&TYPED_ROW);
        after.0[3] = ColumnValue::UnchangedToast;
        let p = same_payload_in_avro(Op::Update, None, Some(Row::Tuple(&after)), &streamed(3));
        assert_eq!(p["after"]["t"], UNAVAILABLE_VALUE);
        assert_eq!(p["source"]["unchanged_toast"], serde_json::json!(["t"]));

        // With the old row (REPLICA IDENTITY FULL), before and after both.
        let before = tuple(&TYPED_ROW);
        let p = same_payload_in_avro(
            Op::Update,
            Some(Row::Tuple(&before)),
            Some(Row::Tuple(&after)),
            &streamed(4),
        );
        assert_eq!(p["before"]["t"], TYPED_ROW[3].unwrap());
    }

    #[test]
    fn avro_delete_and_truncate_are_the_json_payload() {
        // pgoutput sends the old key: the other columns are NULL.
        let mut key_only = [None; 15];
        key_only[..2].copy_from_slice(&TYPED_ROW[..2]);
        let old = tuple(&key_only);
        let p = same_payload_in_avro(Op::Delete, Some(Row::Tuple(&old)), None, &streamed(5));
        assert_eq!(p["after"], serde_json::Value::Null);
        assert_eq!(p["before"]["id"], 7);

        // No key, no rows, no transaction.
        let source = EventSource {
            tx_id: None,
            order: None,
            last_commit_lsn: None,
            ..streamed(6)
        };
        let p = same_payload_in_avro(Op::Truncate, None, None, &source);
        assert_eq!(p["op"], "t");
        assert_eq!(p["transaction"], serde_json::Value::Null);
    }

    #[test]
    fn avro_snapshot_read_is_the_json_payload() {
        let cells: Vec<Option<&[u8]>> = TYPED_ROW.iter().map(|v| v.map(str::as_bytes)).collect();
        let source = EventSource {
            commit_ts_micros: 1_764_064_800_000_000,
            snapshot: "true",
            tx_id: None,
            lsn: 0x1_0000_0000,
            commit_lsn: 0x1_0000_0000,
            last_commit_lsn: None,
            order: None,
        };
        let p = same_payload_in_avro(Op::Read, None, Some(Row::Text(&cells)), &source);
        assert_eq!(p["op"], "r");
        assert_eq!(p["source"]["snapshot"], "true");
        assert_eq!(p["after"]["tz"], "2026-11-25T04:30:00.5Z");
    }

    #[test]
    fn avro_schemas_are_built_once_per_relation_and_named_by_records() {
        let avro = ServerNaming {
            format: RecordFormat::Avro,
            ..naming()
        };
        let layout = TableLayout::new(&typed_relation(), &avro).unwrap();
        let fingerprints: Vec<u64> = layout
            .writer_schemas()
            .map(WriterSchema::fingerprint)
            .collect();
        assert_eq!(fingerprints.len(), 2);
        assert_ne!(fingerprints[0], fingerprints[1]);
        // Rebuilt from the same relation: the same schemas, so the same fingerprints.
        let again = TableLayout::new(&typed_relation(), &avro).unwrap();
        assert!(
            again
                .writer_schemas()
                .map(WriterSchema::fingerprint)
                .eq(fingerprints)
        );
        // The published record carries the JSON converter's schema, as JSON records do.
        let value = layout.writer_schemas().nth(1).unwrap();
        let record: serde_json::Value = serde_json::from_str(value.topic_value()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&layout.value_schema).unwrap();
        assert_eq!(record["connect"], json);
    }
}
