//! PostgreSQL column values in text format -> typed [`PgValue`]s -> the JSON Debezium's PostgreSQL
//! connector emits for them.
//!
//! pgoutput sends each column as its type's text output (`t` in TupleData). [`parse_text`] turns
//! that text plus the column's type OID into a [`PgValue`]; [`PgValue::to_debezium_json`] renders
//! it as the Debezium JSON converter does, and [`PgType::debezium_schema`] gives the matching
//! Kafka Connect schema, so an envelope with `schema` can be built.
//!
//! The replication session must print values the way this module reads them: `DateStyle=ISO`
//! (PostgreSQL's default; dates like `2026-11-25`, `0044-03-15 BC`) and `bytea_output` `hex` or
//! `escape`. Any `TimeZone` works: `timestamptz` values carry their offset (`+00`, `+05:30`,
//! `-08`, `+01:39:49`) and are normalised to UTC here.
//!
//! # Debezium mapping (default connector settings, except numeric)
//!
//! | PostgreSQL | [`PgValue`] | Connect type | Debezium name | JSON |
//! |---|---|---|---|---|
//! | bool | `Bool` | boolean | | `true` |
//! | int2, int4, int8 | `Int2`, `Int4`, `Int8` | int16, int32, int64 | | `42` |
//! | float4, float8 | `Float4`, `Float8` | float32, float64 (JSON schema: `float`, `double`) | | `1.5`; `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | numeric | `Numeric` (exact text) | string | | `"12.50"`, `"NaN"` |
//! | text, varchar, bpchar, name | `Text` | string | | `"abc"` |
//! | bytea | `Bytea` | bytes | | base64 `"AQI="` |
//! | date | `Date` (days) | int32 | `io.debezium.time.Date` | `20782` |
//! | timestamp | `Timestamp` (µs) | int64 | `io.debezium.time.MicroTimestamp` | `1795600800000000` |
//! | timestamptz | `Timestamptz` (µs, UTC) | string | `io.debezium.time.ZonedTimestamp` | `"2026-11-25T10:00:00.123456Z"` |
//! | time | `Time` (µs since midnight) | int64 | `io.debezium.time.MicroTime` | `36000000000` |
//! | uuid | `Uuid` | string | `io.debezium.data.Uuid` | `"a0ee…"` |
//! | json, jsonb | `Json`, `Jsonb` (text) | string | `io.debezium.data.Json` | `"{\"a\":1}"` |
//! | any of these `[]` | `Array` | array | | `[1, null, 3]` |
//!
//! Deliberate choices, where Debezium's behaviour depends on settings or is not usable:
//! - numeric uses `decimal.handling.mode=string`: the exact decimal text as a JSON string. The
//!   default `precise` mode (base64 of an unscaled big integer plus a scale in the schema, or a
//!   struct for unconstrained numeric) loses readability and cannot carry `NaN`.
//! - timestamptz is rendered like Java's `ISO_OFFSET_DATE_TIME` in UTC: fraction digits only as
//!   needed (`…T10:00:00Z`, `…T10:00:00.5Z`), years beyond 9999 as `+10000`, BC years as negative
//!   astronomical years (`44 BC` = `-0043`); `infinity` / `-infinity` stay those strings, as
//!   Debezium does.
//! - timestamp is always microseconds (Debezium's `adaptive` mode uses milliseconds for
//!   `timestamp(0..3)` columns; the column's precision is not known here). `±infinity` map to
//!   Debezium's values, pgjdbc's `DATE_POSITIVE_INFINITY` / `DATE_NEGATIVE_INFINITY` read as
//!   microseconds.
//! - date `±infinity` map to `i32::MAX` / `i32::MIN` days (Debezium emits a wrapped, meaningless
//!   number for them).
//! - `time` `24:00:00` is 86 400 000 000 µs.
//! - timestamps after 294247-01-10 (the last 30 years of PostgreSQL's range) do not fit `i64`
//!   Unix microseconds and are rejected as out of range.

use std::fmt;

use super::pgoutput::Oid;

/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// What Debezium emits for a `timestamp` of `infinity` (pgjdbc's `DATE_POSITIVE_INFINITY`).
pub const DEBEZIUM_TIMESTAMP_POSITIVE_INFINITY: i64 = 9_223_372_036_825_200_000;

/// What Debezium emits for a `timestamp` of `-infinity` (pgjdbc's `DATE_NEGATIVE_INFINITY`).
pub const DEBEZIUM_TIMESTAMP_NEGATIVE_INFINITY: i64 = -9_223_372_036_832_400_000;

/// Why a column value could not be turned into a [`PgValue`]. The caller adds the table and
/// column names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The type OID is not one this module knows.
    #[error("unsupported PostgreSQL type OID {oid}")]
    UnsupportedType {
        /// The column's type OID.
        oid: Oid,
    },
    /// The text is not what the type's output function prints.
    #[error("invalid {type_name} value {text:?}: {reason}")]
    Invalid {
        /// The PostgreSQL type name, e.g. `timestamptz` or `_int4`.
        type_name: &'static str,
        /// The offending text (the first 128 characters).
        text: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The column bytes are not UTF-8 (the database encoding must be UTF8).
    #[error("{type_name} value is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The PostgreSQL type name.
        type_name: &'static str,
        /// The first invalid byte.
        offset: usize,
    },
}

/// A built-in scalar type this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// `bool`
    Bool,
    /// `int2` / `smallint`
    Int2,
    /// `int4` / `integer`
    Int4,
    /// `int8` / `bigint`
    Int8,
    /// `float4` / `real`
    Float4,
    /// `float8` / `double precision`
    Float8,
    /// `numeric` / `decimal`
    Numeric,
    /// `text`
    Text,
    /// `varchar` / `character varying`
    Varchar,
    /// `bpchar` / `character`
    Bpchar,
    /// `name`
    Name,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `timestamp` / `timestamp without time zone`
    Timestamp,
    /// `timestamptz` / `timestamp with time zone`
    Timestamptz,
    /// `time` / `time without time zone`
    Time,
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
}

/// Per scalar type: its OID, its array type's OID, its name, its array type's name.
const SCALAR_TYPES: [(ScalarType, Oid, Oid, &str, &str); 19] = [
    (ScalarType::Bool, 16, 1000, "bool", "_bool"),
    (ScalarType::Int2, 21, 1005, "int2", "_int2"),
    (ScalarType::Int4, 23, 1007, "int4", "_int4"),
    (ScalarType::Int8, 20, 1016, "int8", "_int8"),
    (ScalarType::Float4, 700, 1021, "float4", "_float4"),
    (ScalarType::Float8, 701, 1022, "float8", "_float8"),
    (ScalarType::Numeric, 1700, 1231, "numeric", "_numeric"),
    (ScalarType::Text, 25, 1009, "text", "_text"),
    (ScalarType::Varchar, 1043, 1015, "varchar", "_varchar"),
    (ScalarType::Bpchar, 1042, 1014, "bpchar", "_bpchar"),
    (ScalarType::Name, 19, 1003, "name", "_name"),
    (ScalarType::Bytea, 17, 1001, "bytea", "_bytea"),
    (ScalarType::Date, 1082, 1182, "date", "_date"),
    (ScalarType::Timestamp, 1114, 1115, "timestamp", "_timestamp"),
    (
        ScalarType::Timestamptz,
        1184,
        1185,
        "timestamptz",
        "_timestamptz",
    ),
    (ScalarType::Time, 1083, 1183, "time", "_time"),
    (ScalarType::Uuid, 2950, 2951, "uuid", "_uuid"),
    (ScalarType::Json, 114, 199, "json", "_json"),
    (ScalarType::Jsonb, 3802, 3807, "jsonb", "_jsonb"),
];

impl ScalarType {
    /// Every supported scalar type.
    pub const ALL: [ScalarType; 19] = {
        let mut all = [ScalarType::Bool; 19];
        let mut i = 0;
        while i < SCALAR_TYPES.len() {
            all[i] = SCALAR_TYPES[i].0;
            i += 1;
        }
        all
    };

    fn entry(self) -> (ScalarType, Oid, Oid, &'static str, &'static str) {
        // The table lists every variant, so the fallback is never taken.
        SCALAR_TYPES
            .iter()
            .copied()
            .find(|entry| entry.0 == self)
            .unwrap_or((self, 0, 0, "unknown", "_unknown"))
    }

    /// The type's OID.
    pub fn oid(self) -> Oid {
        self.entry().1
    }

    /// The OID of the one-dimensional array of this type.
    pub fn array_oid(self) -> Oid {
        self.entry().2
    }

    /// The type's name in `pg_type`, e.g. `int4`.
    pub fn name(self) -> &'static str {
        self.entry().3
    }

    /// The Kafka Connect schema Debezium gives a column of this type.
    pub fn debezium_schema(self) -> DebeziumSchema {
        let plain = |connect_type| DebeziumSchema {
            connect_type,
            name: None,
            version: None,
            items: None,
        };
        let named = |connect_type, name| DebeziumSchema {
            connect_type,
            name: Some(name),
            version: Some(1),
            items: None,
        };
        match self {
            ScalarType::Bool => plain(ConnectType::Boolean),
            ScalarType::Int2 => plain(ConnectType::Int16),
            ScalarType::Int4 => plain(ConnectType::Int32),
            ScalarType::Int8 => plain(ConnectType::Int64),
            ScalarType::Float4 => plain(ConnectType::Float32),
            ScalarType::Float8 => plain(ConnectType::Float64),
            ScalarType::Numeric
            | ScalarType::Text
            | ScalarType::Varchar
            | ScalarType::Bpchar
            | ScalarType::Name => plain(ConnectType::String),
            ScalarType::Bytea => plain(ConnectType::Bytes),
            ScalarType::Date => named(ConnectType::Int32, "io.debezium.time.Date"),
            ScalarType::Timestamp => named(ConnectType::Int64, "io.debezium.time.MicroTimestamp"),
            ScalarType::Timestamptz => {
                named(ConnectType::String, "io.debezium.time.ZonedTimestamp")
            }
            ScalarType::Time => named(ConnectType::Int64, "io.debezium.time.MicroTime"),
            ScalarType::Uuid => named(ConnectType::String, "io.debezium.data.Uuid"),
            ScalarType::Json | ScalarType::Jsonb => {
                named(ConnectType::String, "io.debezium.data.Json")
            }
        }
    }

    /// Parses one value of this type from its text output.
    pub fn parse_text(self, text: &str) -> Result<PgValue, ValueError> {
        let invalid = |reason| ValueError::Invalid {
            type_name: self.name(),
            text: text.chars().take(128).collect(),
            reason,
        };
        parse_scalar(self, text).map_err(invalid)
    }
}

/// A column type this module reads: a scalar or a one-dimensional array of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgType {
    /// A scalar.
    Scalar(ScalarType),
    /// A one-dimensional array (with lower bound 1, PostgreSQL's default) of a scalar.
    Array(ScalarType),
}

impl PgType {
    /// The type of a type OID, or [`ValueError::UnsupportedType`].
    pub fn from_oid(oid: Oid) -> Result<Self, ValueError> {
        SCALAR_TYPES
            .iter()
            .find_map(|&(scalar, scalar_oid, array_oid, _, _)| {
                if oid == scalar_oid {
                    Some(PgType::Scalar(scalar))
                } else if oid == array_oid {
                    Some(PgType::Array(scalar))
                } else {
                    None
                }
            })
            .ok_or(ValueError::UnsupportedType { oid })
    }

    /// The type's OID.
    pub fn oid(self) -> Oid {
        match self {
            PgType::Scalar(scalar) => scalar.oid(),
            PgType::Array(element) => element.array_oid(),
        }
    }

    /// The type's name in `pg_type`, e.g. `int4` or `_int4`.
    pub fn name(self) -> &'static str {
        match self {
            PgType::Scalar(scalar) => scalar.name(),
            PgType::Array(element) => element.entry().4,
        }
    }

    /// The Kafka Connect schema Debezium gives a column of this type.
    pub fn debezium_schema(self) -> DebeziumSchema {
        match self {
            PgType::Scalar(scalar) => scalar.debezium_schema(),
            PgType::Array(element) => DebeziumSchema {
                connect_type: ConnectType::Array,
                name: None,
                version: None,
                items: Some(Box::new(element.debezium_schema())),
            },
        }
    }

    /// Parses a value of this type from its text output.
    pub fn parse_text(self, text: &str) -> Result<PgValue, ValueError> {
        match self {
            PgType::Scalar(scalar) => scalar.parse_text(text),
            PgType::Array(element) => {
                let elements = split_array(text).map_err(|reason| ValueError::Invalid {
                    type_name: self.name(),
                    text: text.chars().take(128).collect(),
                    reason,
                })?;
                let elements = elements
                    .into_iter()
                    .map(|item| item.map(|text| element.parse_text(&text)).transpose())
                    .collect::<Result<_, _>>()?;
                Ok(PgValue::Array { element, elements })
            }
        }
    }
}

/// Parses a column's text output, given its type OID.
pub fn parse_text(type_oid: Oid, text: &str) -> Result<PgValue, ValueError> {
    PgType::from_oid(type_oid)?.parse_text(text)
}

/// Like [`parse_text`], for the raw bytes of a pgoutput text column (checked to be UTF-8).
pub fn parse_text_bytes(type_oid: Oid, bytes: &[u8]) -> Result<PgValue, ValueError> {
    let pg_type = PgType::from_oid(type_oid)?;
    let text = std::str::from_utf8(bytes).map_err(|e| ValueError::NotUtf8 {
        type_name: pg_type.name(),
        offset: e.valid_up_to(),
    })?;
    pg_type.parse_text(text)
}

/// A date or timestamp, which PostgreSQL lets be `infinity` or `-infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaybeInfinite<T> {
    /// An ordinary value.
    Finite(T),
    /// `infinity`: later than every other value.
    Infinity,
    /// `-infinity`: earlier than every other value.
    NegInfinity,
}

/// A typed column value. SQL NULL is not a `PgValue`: a NULL column is absent, and a NULL array
/// element is `None`.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    /// `bool`
    Bool(bool),
    /// `int2`
    Int2(i16),
    /// `int4`
    Int4(i32),
    /// `int8`
    Int8(i64),
    /// `float4`, including NaN and ±infinity.
    Float4(f32),
    /// `float8`, including NaN and ±infinity.
    Float8(f64),
    /// `numeric`, exact: the decimal text as PostgreSQL printed it (`-12.50`), or `NaN`,
    /// `Infinity`, `-Infinity`.
    Numeric(String),
    /// `text`, `varchar`, `bpchar` (with its blank padding) and `name`.
    Text(String),
    /// `bytea`
    Bytea(Vec<u8>),
    /// `date`: days since 1970-01-01.
    Date(MaybeInfinite<i32>),
    /// `timestamp`: microseconds since 1970-01-01 00:00:00, no time zone.
    Timestamp(MaybeInfinite<i64>),
    /// `timestamptz`: microseconds since 1970-01-01 00:00:00 UTC.
    Timestamptz(MaybeInfinite<i64>),
    /// `time`: microseconds since midnight, `0..=86_400_000_000`.
    Time(i64),
    /// `uuid`
    Uuid([u8; 16]),
    /// `json`: the text exactly as stored (validated JSON).
    Json(String),
    /// `jsonb`: the text as PostgreSQL prints it (validated JSON).
    Jsonb(String),
    /// A one-dimensional array; `None` elements are NULL.
    Array {
        /// The element type (kept so an empty array still has one).
        element: ScalarType,
        /// The elements in order.
        elements: Vec<Option<PgValue>>,
    },
}

impl PgValue {
    /// The JSON value Debezium's PostgreSQL connector emits for this value with the JSON
    /// converter (see the module docs for the mapping).
    pub fn to_debezium_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            PgValue::Bool(b) => Value::Bool(*b),
            PgValue::Int2(i) => Value::from(*i),
            PgValue::Int4(i) => Value::from(*i),
            PgValue::Int8(i) => Value::from(*i),
            // Via the shortest text of the f32, so 1.1f32 is 1.1, not 1.100000023841858.
            PgValue::Float4(f) => float_json(f.to_string().parse().unwrap_or(f64::from(*f))),
            PgValue::Float8(f) => float_json(*f),
            PgValue::Numeric(s) | PgValue::Text(s) | PgValue::Json(s) | PgValue::Jsonb(s) => {
                Value::String(s.clone())
            }
            PgValue::Bytea(bytes) => Value::String(base64(bytes)),
            PgValue::Date(date) => Value::from(match date {
                MaybeInfinite::Finite(days) => *days,
                MaybeInfinite::Infinity => i32::MAX,
                MaybeInfinite::NegInfinity => i32::MIN,
            }),
            PgValue::Timestamp(ts) => Value::from(match ts {
                MaybeInfinite::Finite(micros) => *micros,
                MaybeInfinite::Infinity => DEBEZIUM_TIMESTAMP_POSITIVE_INFINITY,
                MaybeInfinite::NegInfinity => DEBEZIUM_TIMESTAMP_NEGATIVE_INFINITY,
            }),
            PgValue::Timestamptz(ts) => Value::String(match ts {
                MaybeInfinite::Finite(micros) => iso_utc(*micros),
                MaybeInfinite::Infinity => "infinity".to_owned(),
                MaybeInfinite::NegInfinity => "-infinity".to_owned(),
            }),
            PgValue::Time(micros) => Value::from(*micros),
            PgValue::Uuid(bytes) => Value::String(uuid_text(bytes)),
            PgValue::Array { elements, .. } => Value::Array(
                elements
                    .iter()
                    .map(|e| e.as_ref().map_or(Value::Null, PgValue::to_debezium_json))
                    .collect(),
            ),
        }
    }
}

fn float_json(f: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(f) {
        Some(number) => serde_json::Value::Number(number),
        None if f.is_nan() => serde_json::Value::String("NaN".to_owned()),
        None if f > 0.0 => serde_json::Value::String("Infinity".to_owned()),
        None => serde_json::Value::String("-Infinity".to_owned()),
    }
}

/// A Kafka Connect schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectType {
    /// `boolean`
    Boolean,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float32` (`float` in a JSON schema)
    Float32,
    /// `float64` (`double` in a JSON schema)
    Float64,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `array`
    Array,
}

impl ConnectType {
    /// The name in a JSON schema, e.g. `int32`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectType::Boolean => "boolean",
            ConnectType::Int16 => "int16",
            ConnectType::Int32 => "int32",
            ConnectType::Int64 => "int64",
            // Kafka Connect's JsonConverter names FLOAT32/FLOAT64 `float`/`double` in a JSON
            // schema and refuses `float32`/`float64` ("Unknown schema type").
            ConnectType::Float32 => "float",
            ConnectType::Float64 => "double",
            ConnectType::String => "string",
            ConnectType::Bytes => "bytes",
            ConnectType::Array => "array",
        }
    }
}

impl fmt::Display for ConnectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kafka Connect schema of a column as Debezium declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebeziumSchema {
    /// The Connect type.
    pub connect_type: ConnectType,
    /// The semantic type, e.g. `io.debezium.time.Date`.
    pub name: Option<&'static str>,
    /// The semantic type's version (1 for all of Debezium's).
    pub version: Option<i32>,
    /// For arrays, the element schema (always optional).
    pub items: Option<Box<DebeziumSchema>>,
}

impl DebeziumSchema {
    /// The schema as the JSON converter writes it, without the `field` key the caller adds:
    /// `{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1}`.
    pub fn to_json(&self, optional: bool) -> serde_json::Value {
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), self.connect_type.as_str().into());
        schema.insert("optional".into(), optional.into());
        if let Some(name) = self.name {
            schema.insert("name".into(), name.into());
        }
        if let Some(version) = self.version {
            schema.insert("version".into(), version.into());
        }
        if let Some(items) = &self.items {
            schema.insert("items".into(), items.to_json(true));
        }
        serde_json::Value::Object(schema)
    }
}

/// The scalar parsers; errors are reasons, wrapped by [`ScalarType::parse_text`].
fn parse_scalar(scalar: ScalarType, s: &str) -> Result<PgValue, &'static str> {
    Ok(match scalar {
        ScalarType::Bool => match s {
            "t" => PgValue::Bool(true),
            "f" => PgValue::Bool(false),
            _ => return Err("expected t or f"),
        },
        ScalarType::Int2 => PgValue::Int2(s.parse().map_err(|_| "not a 16-bit integer")?),
        ScalarType::Int4 => PgValue::Int4(s.parse().map_err(|_| "not a 32-bit integer")?),
        ScalarType::Int8 => PgValue::Int8(s.parse().map_err(|_| "not a 64-bit integer")?),
        ScalarType::Float4 => PgValue::Float4(parse_float(s)?),
        ScalarType::Float8 => PgValue::Float8(parse_float(s)?),
        ScalarType::Numeric => {
            if !is_numeric_text(s) {
                return Err("expected a plain decimal number, NaN, Infinity or -Infinity");
            }
            PgValue::Numeric(s.to_owned())
        }
        ScalarType::Text | ScalarType::Varchar | ScalarType::Bpchar | ScalarType::Name => {
            PgValue::Text(s.to_owned())
        }
        ScalarType::Bytea => PgValue::Bytea(parse_bytea(s)?),
        ScalarType::Date => PgValue::Date(match s {
            "infinity" => MaybeInfinite::Infinity,
            "-infinity" => MaybeInfinite::NegInfinity,
            _ => {
                let (date, bc) = split_era(s);
                let days = parse_date(date, bc)?;
                MaybeInfinite::Finite(i32::try_from(days).map_err(|_| "date out of range")?)
            }
        }),
        ScalarType::Timestamp => PgValue::Timestamp(parse_timestamp(s, false)?),
        ScalarType::Timestamptz => PgValue::Timestamptz(parse_timestamp(s, true)?),
        ScalarType::Time => PgValue::Time(parse_time_of_day(s, true)?),
        ScalarType::Uuid => PgValue::Uuid(parse_uuid(s)?),
        ScalarType::Json => {
            validate_json(s)?;
            PgValue::Json(s.to_owned())
        }
        ScalarType::Jsonb => {
            validate_json(s)?;
            PgValue::Jsonb(s.to_owned())
        }
    })
}

fn parse_float<F: std::str::FromStr + Float>(s: &str) -> Result<F, &'static str> {
    match s {
        "NaN" => Ok(F::NAN),
        "Infinity" => Ok(F::INFINITY),
        "-Infinity" => Ok(F::NEG_INFINITY),
        _ => {
            // Rust also reads "inf" and "nan"; PostgreSQL never prints those.
            let numeric = s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
            let value: F = if numeric {
                s.parse().map_err(|_| "not a floating-point number")?
            } else {
                return Err("not a floating-point number");
            };
            if value.is_finite() {
                Ok(value)
            } else {
                Err("out of range")
            }
        }
    }
}

/// The float constants [`parse_float`] needs from `f32` and `f64`.
trait Float: Copy {
    const NAN: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn is_finite(self) -> bool;
}

impl Float for f32 {
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Float for f64 {
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

/// `numeric_out` prints `-?digits(.digits)?`, or `NaN`, `Infinity`, `-Infinity`.
fn is_numeric_text(s: &str) -> bool {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return true;
    }
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// `bytea_output = 'hex'` (`\x0a0b`) or `'escape'` (`ab\000\\`).
fn parse_bytea(s: &str) -> Result<Vec<u8>, &'static str> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 {
            return Err("odd number of hex digits");
        }
        return hex
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => Ok((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
                _ => Err("odd number of hex digits"),
            })
            .collect();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(first @ b'0'..=b'3') => {
                let mut value = u32::from(first - b'0');
                for _ in 0..2 {
                    match bytes.next() {
                        Some(d @ b'0'..=b'7') => value = value * 8 + u32::from(d - b'0'),
                        _ => return Err("bad octal escape"),
                    }
                }
                out.push(u8::try_from(value).map_err(|_| "bad octal escape")?);
            }
            _ => return Err("bad escape"),
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Result<u8, &'static str> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err("not a hex digit"),
    }
}

/// Splits off the ` BC` suffix PostgreSQL appends to dates before year 1.
fn split_era(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// An unsigned decimal of 1 to `max_digits` ASCII digits.
fn number(s: &str, max_digits: usize) -> Option<i64> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` (four or more year digits) -> days since 1970-01-01, proleptic Gregorian.
fn parse_date(s: &str, bc: bool) -> Result<i64, &'static str> {
    const FORMAT: &str = "expected YYYY-MM-DD";
    let (year, rest) = s.split_once('-').ok_or(FORMAT)?;
    let (month, day) = rest.split_once('-').ok_or(FORMAT)?;
    if year.len() < 4 || month.len() != 2 || day.len() != 2 {
        return Err(FORMAT);
    }
    let year = number(year, 9).ok_or(FORMAT)?;
    let month = number(month, 2).ok_or(FORMAT)?;
    let day = number(day, 2).ok_or(FORMAT)?;
    if year == 0 {
        return Err("there is no year 0");
    }
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such day");
    }
    Ok(days_from_civil(year, month, day))
}

/// `HH:MM:SS[.ffffff]` -> microseconds since midnight. `24:00:00` only if `allow_24`.
fn parse_time_of_day(s: &str, allow_24: bool) -> Result<i64, &'static str> {
    const FORMAT: &str = "expected HH:MM:SS[.ffffff]";
    let (clock, fraction) = match s.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (s, None),
    };
    let mut parts = clock.split(':');
    let mut field = || parts.next().and_then(|p| (p.len() == 2).then_some(p));
    let hour = field().and_then(|p| number(p, 2)).ok_or(FORMAT)?;
    let minute = field().and_then(|p| number(p, 2)).ok_or(FORMAT)?;
    let second = field().and_then(|p| number(p, 2)).ok_or(FORMAT)?;
    if parts.next().is_some() {
        return Err(FORMAT);
    }
    let micros = match fraction {
        None => 0,
        Some(f) => {
            let value = number(f, 6).ok_or("expected 1 to 6 fraction digits")?;
            let scale = 10i64.pow(6 - u32::try_from(f.len()).unwrap_or(6));
            value * scale
        }
    };
    if minute > 59 || second > 59 || hour > 24 || (hour == 24 && !allow_24) {
        return Err("time out of range");
    }
    if hour == 24 && (minute, second, micros) != (0, 0, 0) {
        return Err("time out of range");
    }
    Ok(((hour * 60 + minute) * 60 + second) * 1_000_000 + micros)
}

/// `[+-]HH[:MM[:SS]]` -> seconds east of UTC.
fn parse_offset(s: &str) -> Result<i64, &'static str> {
    const FORMAT: &str = "expected a UTC offset like +00, +05:30 or -08";
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, s.get(1..).unwrap_or_default()),
        Some(b'-') => (-1, s.get(1..).unwrap_or_default()),
        _ => return Err(FORMAT),
    };
    let mut seconds = 0;
    let mut count = 0;
    for (i, part) in rest.split(':').enumerate() {
        if part.len() != 2 || i > 2 {
            return Err(FORMAT);
        }
        let value = number(part, 2).ok_or(FORMAT)?;
        if i > 0 && value > 59 {
            return Err(FORMAT);
        }
        seconds = seconds * 60 + value;
        count = i + 1;
    }
    // Scale HH or HH:MM up to seconds.
    for _ in count..3 {
        seconds *= 60;
    }
    Ok(sign * seconds)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][offset][ BC]` -> microseconds since the Unix epoch (UTC when
/// `with_zone`).
fn parse_timestamp(s: &str, with_zone: bool) -> Result<MaybeInfinite<i64>, &'static str> {
    match s {
        "infinity" => return Ok(MaybeInfinite::Infinity),
        "-infinity" => return Ok(MaybeInfinite::NegInfinity),
        _ => {}
    }
    let (body, bc) = split_era(s);
    let (date, time) = body.split_once(' ').ok_or("expected YYYY-MM-DD HH:MM:SS")?;
    let days = parse_date(date, bc)?;
    let (clock, offset_seconds) = if with_zone {
        let at = time
            .find(['+', '-'])
            .ok_or("expected a UTC offset like +00, +05:30 or -08")?;
        let (clock, offset) = time.split_at(at);
        (clock, parse_offset(offset)?)
    } else {
        (time, 0)
    };
    let micros = parse_time_of_day(clock, false)?;
    days.checked_mul(MICROS_PER_DAY)
        .and_then(|day_start| day_start.checked_add(micros))
        .and_then(|local| local.checked_sub(offset_seconds * 1_000_000))
        .map(MaybeInfinite::Finite)
        .ok_or("timestamp out of range")
}

/// `8-4-4-4-12` hex digits.
fn parse_uuid(s: &str) -> Result<[u8; 16], &'static str> {
    const FORMAT: &str = "expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return Err(FORMAT);
    }
    let mut digits = Vec::with_capacity(32);
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return Err(FORMAT);
            }
        } else {
            digits.push(hex_digit(b).map_err(|_| FORMAT)?);
        }
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        if let [hi, lo] = pair {
            *byte = (hi << 4) | lo;
        }
    }
    Ok(out)
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// PostgreSQL's `array_isspace`.
fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0b}' | '\u{0c}')
}

/// Splits the text of a one-dimensional array (`{1,2,NULL}`, `{"a b","c\"d"}`) into its element
/// texts, unquoted and unescaped; `None` is a NULL element.
fn split_array(text: &str) -> Result<Vec<Option<String>>, &'static str> {
    if text.starts_with('[') {
        return Err("arrays with explicit bounds (lower bound other than 1) are not supported");
    }
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("expected {...}")?;
    let mut elements = Vec::new();
    if inner.chars().all(is_array_space) {
        return Ok(elements);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|&c| is_array_space(c)).is_some() {}
        let mut value = String::new();
        let mut literal = false; // quoted or escaped: never NULL
        match chars.peek() {
            Some('"') => {
                chars.next();
                literal = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted element"),
                        Some('"') => break,
                        Some('\\') => value.push(chars.next().ok_or("dangling backslash")?),
                        Some(c) => value.push(c),
                    }
                }
                while chars.next_if(|&c| is_array_space(c)).is_some() {}
            }
            Some('{') => return Err("multidimensional arrays are not supported"),
            _ => {
                // Unescaped trailing whitespace is not part of the element.
                let mut kept = 0;
                loop {
                    match chars.peek() {
                        None | Some(',') => break,
                        Some('"' | '{' | '}') => return Err("unexpected character in element"),
                        Some('\\') => {
                            chars.next();
                            value.push(chars.next().ok_or("dangling backslash")?);
                            literal = true;
                            kept = value.len();
                        }
                        Some(&c) => {
                            chars.next();
                            value.push(c);
                            if !is_array_space(c) {
                                kept = value.len();
                            }
                        }
                    }
                }
                value.truncate(kept);
                if value.is_empty() && !literal {
                    return Err("empty element");
                }
            }
        }
        let null = !literal && value.eq_ignore_ascii_case("NULL");
        elements.push((!null).then_some(value));
        match chars.next() {
            None => return Ok(elements),
            Some(',') => {}
            Some(_) => return Err("expected ',' between elements"),
        }
    }
}

/// Checks that `s` is one JSON value (RFC 8259), iteratively, so any nesting depth PostgreSQL
/// accepts is accepted here without recursion.
fn validate_json(s: &str) -> Result<(), &'static str> {
    const INVALID: &str = "not valid JSON";
    #[derive(Clone, Copy, PartialEq)]
    enum Expect {
        Value,
        ValueOrEnd,
        KeyOrEnd,
        Key,
        Colon,
        CommaOrEnd,
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut open: Vec<u8> = Vec::new();
    let mut expect = Expect::Value;
    loop {
        while b
            .get(i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            i += 1;
        }
        let Some(&c) = b.get(i) else {
            return if open.is_empty() && expect == Expect::CommaOrEnd {
                Ok(())
            } else {
                Err(INVALID)
            };
        };
        if open.is_empty() && expect == Expect::CommaOrEnd {
            return Err("trailing characters after the JSON value");
        }
        let mut close = |i: &mut usize, bracket: u8| {
            if open.pop() == Some(bracket) {
                *i += 1;
                Ok(Expect::CommaOrEnd)
            } else {
                Err(INVALID)
            }
        };
        expect = match (expect, c) {
            (Expect::ValueOrEnd, b']') => close(&mut i, b'[')?,
            (Expect::KeyOrEnd, b'}') => close(&mut i, b'{')?,
            (Expect::CommaOrEnd, b']') => close(&mut i, b'[')?,
            (Expect::CommaOrEnd, b'}') => close(&mut i, b'{')?,
            (Expect::CommaOrEnd, b',') => {
                i += 1;
                if open.last() == Some(&b'{') {
                    Expect::Key
                } else {
                    Expect::Value
                }
            }
            (Expect::KeyOrEnd | Expect::Key, b'"') => {
                i = json_string_end(b, i)?;
                Expect::Colon
            }
            (Expect::Colon, b':') => {
                i += 1;
                Expect::Value
            }
            (Expect::Value | Expect::ValueOrEnd, _) => match c {
                b'{' => {
                    open.push(b'{');
                    i += 1;
                    Expect::KeyOrEnd
                }
                b'[' => {
                    open.push(b'[');
                    i += 1;
                    Expect::ValueOrEnd
                }
                b'"' => {
                    i = json_string_end(b, i)?;
                    Expect::CommaOrEnd
                }
                b't' | b'f' | b'n' => {
                    let word: &[u8] = match c {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    if b.get(i..i + word.len()) != Some(word) {
                        return Err(INVALID);
                    }
                    i += word.len();
                    Expect::CommaOrEnd
                }
                b'-' | b'0'..=b'9' => {
                    i = json_number_end(b, i)?;
                    Expect::CommaOrEnd
                }
                _ => return Err(INVALID),
            },
            _ => return Err(INVALID),
        };
    }
}

/// The index after the JSON string starting with the quote at `start`.
fn json_string_end(b: &[u8], start: usize) -> Result<usize, &'static str> {
    const INVALID: &str = "not valid JSON: bad string";
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return Err(INVALID),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = b.get(i + 2..i + 6).ok_or(INVALID)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(INVALID);
                    }
                    i += 6;
                }
                _ => return Err(INVALID),
            },
            Some(&c) if c < 0x20 => return Err(INVALID),
            Some(_) => i += 1,
        }
    }
}

/// The index after the JSON number starting at `start`: `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`.
fn json_number_end(b: &[u8], start: usize) -> Result<usize, &'static str> {
    const INVALID: &str = "not valid JSON: bad number";
    let digits_from = |i: usize| {
        let n = b
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 { Err(INVALID) } else { Ok(i + n) }
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = if b.get(i) == Some(&b'0') {
        i + 1
    } else {
        digits_from(i)?
    };
    if b.get(i) == Some(&b'.') {
        i = digits_from(i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits_from(i)?;
    }
    Ok(i)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01: (year, month, day), astronomical year numbering.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Microseconds since the Unix epoch as ISO-8601 in UTC, the way Java's `ISO_OFFSET_DATE_TIME`
/// prints it: `2026-11-25T10:00:00.123456Z`, fraction digits only as needed.
fn iso_utc(micros: i64) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (seconds, fraction) = (of_day / 1_000_000, of_day % 1_000_000);
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let year = match year {
        10_000.. => format!("+{year}"),
        0.. => format!("{year:04}"),
        _ => format!("-{:04}", year.unsigned_abs()),
    };
    let fraction = if fraction == 0 {
        String::new()
    } else {
        format!(".{fraction:06}").trim_end_matches('0').to_owned()
    };
    format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// Standard base64 with padding, as Kafka Connect's JSON converter writes `bytes`.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(oid: Oid, text: &str) -> PgValue {
        parse_text(oid, text).unwrap_or_else(|e| panic!("{oid} {text:?}: {e}"))
    }

    fn invalid(oid: Oid, text: &str) {
        assert!(
            matches!(parse_text(oid, text), Err(ValueError::Invalid { .. })),
            "{oid} {text:?} parsed as {:?}",
            parse_text(oid, text)
        );
    }

    fn json_of(oid: Oid, text: &str) -> serde_json::Value {
        parse(oid, text).to_debezium_json()
    }

    #[test]
    fn type_table_is_complete_and_unique() {
        let mut oids = std::collections::HashSet::new();
        for scalar in ScalarType::ALL {
            assert!(oids.insert(scalar.oid()), "{scalar:?}");
            assert!(oids.insert(scalar.array_oid()), "{scalar:?}");
            assert_eq!(PgType::from_oid(scalar.oid()), Ok(PgType::Scalar(scalar)));
            assert_eq!(
                PgType::from_oid(scalar.array_oid()),
                Ok(PgType::Array(scalar))
            );
            assert_eq!(PgType::Array(scalar).name(), format!("_{}", scalar.name()));
            assert_eq!(PgType::Array(scalar).oid(), scalar.array_oid());
        }
        assert_eq!(oids.len(), 38);
        assert_eq!(PgType::from_oid(23), Ok(PgType::Scalar(ScalarType::Int4)));
        assert_eq!(PgType::from_oid(1007), Ok(PgType::Array(ScalarType::Int4)));
    }

    #[test]
    fn unknown_type() {
        assert_eq!(
            parse_text(600, "(1,2)"),
            Err(ValueError::UnsupportedType { oid: 600 })
        );
        assert_eq!(
            parse_text(600, "(1,2)").unwrap_err().to_string(),
            "unsupported PostgreSQL type OID 600"
        );
    }

    #[test]
    fn bool() {
        assert_eq!(parse(16, "t"), PgValue::Bool(true));
        assert_eq!(parse(16, "f"), PgValue::Bool(false));
        assert_eq!(json_of(16, "t"), json!(true));
        invalid(16, "true");
        invalid(16, "");
    }

    #[test]
    fn integers() {
        assert_eq!(parse(21, "-32768"), PgValue::Int2(i16::MIN));
        assert_eq!(parse(23, "2147483647"), PgValue::Int4(i32::MAX));
        assert_eq!(parse(20, "-9223372036854775808"), PgValue::Int8(i64::MIN));
        invalid(21, "32768");
        invalid(23, "1.0");
        invalid(20, "");
        invalid(20, " 1");
        assert_eq!(
            json_of(20, "9007199254740993"),
            json!(9_007_199_254_740_993i64)
        );
        assert_eq!(json_of(21, "-5"), json!(-5));
    }

    #[test]
    fn floats() {
        assert_eq!(parse(701, "1.5e+20"), PgValue::Float8(1.5e20));
        assert_eq!(parse(701, "-0"), PgValue::Float8(-0.0));
        assert_eq!(parse(700, "3.4028235e+38"), PgValue::Float4(f32::MAX));
        let PgValue::Float8(nan) = parse(701, "NaN") else {
            panic!()
        };
        assert!(nan.is_nan());
        assert_eq!(parse(701, "Infinity"), PgValue::Float8(f64::INFINITY));
        assert_eq!(parse(700, "-Infinity"), PgValue::Float4(f32::NEG_INFINITY));
        invalid(701, "inf");
        invalid(701, "nan");
        invalid(700, "1e39");
        invalid(701, "");
        assert_eq!(json_of(700, "1.1"), json!(1.1));
        assert_eq!(json_of(701, "0.1"), json!(0.1));
        assert_eq!(json_of(701, "NaN"), json!("NaN"));
        assert_eq!(json_of(700, "Infinity"), json!("Infinity"));
        assert_eq!(json_of(701, "-Infinity"), json!("-Infinity"));
    }

    #[test]
    fn numeric_is_exact() {
        let huge = "123456789012345678901234567890.000000000000000000001";
        assert_eq!(parse(1700, huge), PgValue::Numeric(huge.into()));
        assert_eq!(json_of(1700, "-12.50"), json!("-12.50"));
        assert_eq!(json_of(1700, "NaN"), json!("NaN"));
        assert_eq!(json_of(1700, "-Infinity"), json!("-Infinity"));
        for bad in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", "nan", "1,5"] {
            invalid(1700, bad);
        }
    }

    #[test]
    fn text_types() {
        for oid in [25, 1043, 1042, 19] {
            assert_eq!(parse(oid, "héllo "), PgValue::Text("héllo ".into()));
            assert_eq!(parse(oid, ""), PgValue::Text(String::new()));
        }
        assert_eq!(json_of(1042, "ab  "), json!("ab  "));
    }

    #[test]
    fn bytea() {
        assert_eq!(parse(17, "\\x"), PgValue::Bytea(vec![]));
        assert_eq!(
            parse(17, "\\x00ff10Ab"),
            PgValue::Bytea(vec![0, 255, 16, 171])
        );
        assert_eq!(
            parse(17, "ab\\000\\\\\\377"),
            PgValue::Bytea(vec![b'a', b'b', 0, b'\\', 255])
        );
        invalid(17, "\\x0");
        invalid(17, "\\xzz");
        invalid(17, "\\8");
        invalid(17, "\\40");
        assert_eq!(json_of(17, "\\x"), json!(""));
        assert_eq!(json_of(17, "\\x666f6f626172"), json!("Zm9vYmFy"));
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse(1082, "1970-01-01"),
            PgValue::Date(MaybeInfinite::Finite(0))
        );
        assert_eq!(
            parse(1082, "2026-11-25"),
            PgValue::Date(MaybeInfinite::Finite(20_782))
        );
        assert_eq!(
            parse(1082, "1969-12-31"),
            PgValue::Date(MaybeInfinite::Finite(-1))
        );
        assert_eq!(
            parse(1082, "2000-02-29"),
            PgValue::Date(MaybeInfinite::Finite(11_016))
        );
        // 1 BC is year 0, a leap year; 4713 BC is PostgreSQL's first day.
        assert_eq!(
            parse(1082, "0001-12-31 BC"),
            PgValue::Date(MaybeInfinite::Finite(-719_163))
        );
        assert_eq!(
            parse(1082, "0001-02-29 BC"),
            PgValue::Date(MaybeInfinite::Finite(-719_469))
        );
        assert_eq!(
            parse(1082, "4714-11-24 BC"),
            PgValue::Date(MaybeInfinite::Finite(-2_440_588))
        );
        assert_eq!(
            parse(1082, "5874897-12-31"),
            PgValue::Date(MaybeInfinite::Finite(2_145_042_905))
        );
        assert_eq!(
            parse(1082, "infinity"),
            PgValue::Date(MaybeInfinite::Infinity)
        );
        assert_eq!(
            parse(1082, "-infinity"),
            PgValue::Date(MaybeInfinite::NegInfinity)
        );
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-01-01",
            "0000-01-01",
            "0000-01-01 BC",
            "2026-01-01 AD",
            "Infinity",
            "",
            "999999999-01-01",
        ] {
            invalid(1082, bad);
        }
        assert_eq!(json_of(1082, "2026-11-25"), json!(20_782));
        assert_eq!(json_of(1082, "infinity"), json!(i32::MAX));
        assert_eq!(json_of(1082, "-infinity"), json!(i32::MIN));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse(1114, "2026-11-25 10:00:00"),
            PgValue::Timestamp(MaybeInfinite::Finite(1_795_600_800_000_000))
        );
        assert_eq!(
            parse(1114, "2026-11-25 10:00:00.5"),
            PgValue::Timestamp(MaybeInfinite::Finite(1_795_600_800_500_000))
        );
        assert_eq!(
            parse(1114, "1969-12-31 23:59:59.999999"),
            PgValue::Timestamp(MaybeInfinite::Finite(-1))
        );
        assert_eq!(
            parse(1114, "0044-03-15 12:00:00 BC"),
            PgValue::Timestamp(MaybeInfinite::Finite(
                days_from_civil(-43, 3, 15) * MICROS_PER_DAY + 12 * 3_600_000_000
            ))
        );
        assert_eq!(
            parse(1114, "infinity"),
            PgValue::Timestamp(MaybeInfinite::Infinity)
        );
        for bad in [
            "2026-11-25",
            "2026-11-25 24:00:00",
            "2026-11-25 10:00",
            "2026-11-25 10:00:00+00",
            "2026-11-25T10:00:00",
            "2026-11-25 10:00:00.1234567",
            "2026-11-25 10:60:00",
            "2026-11-25 10:00:00.",
        ] {
            invalid(1114, bad);
        }
        assert_eq!(
            json_of(1114, "2026-11-25 10:00:00.123456"),
            json!(1_795_600_800_123_456i64)
        );
        assert_eq!(
            json_of(1114, "infinity"),
            json!(DEBEZIUM_TIMESTAMP_POSITIVE_INFINITY)
        );
        assert_eq!(
            json_of(1114, "-infinity"),
            json!(DEBEZIUM_TIMESTAMP_NEGATIVE_INFINITY)
        );
    }

    #[test]
    fn timestamptz_offsets() {
        let utc = 1_795_600_800_123_456;
        for text in [
            "2026-11-25 10:00:00.123456+00",
            "2026-11-25 15:30:00.123456+05:30",
            "2026-11-25 02:00:00.123456-08",
            "2026-11-25 02:00:00.123456-08:00",
            "2026-11-25 11:00:01.123456+01:00:01",
        ] {
            assert_eq!(
                parse(1184, text),
                PgValue::Timestamptz(MaybeInfinite::Finite(utc)),
                "{text}"
            );
            assert_eq!(
                json_of(1184, text),
                json!("2026-11-25T10:00:00.123456Z"),
                "{text}"
            );
        }
        // The offset can move the instant across midnight.
        assert_eq!(
            json_of(1184, "2026-11-25 01:00:00-08"),
            json!("2026-11-25T09:00:00Z")
        );
        assert_eq!(
            json_of(1184, "2026-11-25 01:00:00+05:30"),
            json!("2026-11-24T19:30:00Z")
        );
        assert_eq!(
            json_of(1184, "2026-11-25 10:00:00.5+00"),
            json!("2026-11-25T10:00:00.5Z")
        );
        assert_eq!(
            json_of(1184, "0044-03-15 10:00:00+00 BC"),
            json!("-0043-03-15T10:00:00Z")
        );
        assert_eq!(
            json_of(1184, "10000-01-01 00:00:00+00"),
            json!("+10000-01-01T00:00:00Z")
        );
        assert_eq!(json_of(1184, "infinity"), json!("infinity"));
        assert_eq!(json_of(1184, "-infinity"), json!("-infinity"));
        for bad in [
            "2026-11-25 10:00:00",
            "2026-11-25 10:00:00+5",
            "2026-11-25 10:00:00+05:3",
            "2026-11-25 10:00:00+05:60",
            "2026-11-25 10:00:00+01:02:03:04",
            "2026-11-25 10:00:00Z",
            "2026-11-25 10:00:00 +00",
        ] {
            invalid(1184, bad);
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse(1083, "00:00:00"), PgValue::Time(0));
        assert_eq!(parse(1083, "10:00:00"), PgValue::Time(36_000_000_000));
        assert_eq!(
            parse(1083, "23:59:59.999999"),
            PgValue::Time(86_399_999_999)
        );
        assert_eq!(parse(1083, "12:34:56.78"), PgValue::Time(45_296_780_000));
        assert_eq!(parse(1083, "24:00:00"), PgValue::Time(86_400_000_000));
        for bad in [
            "24:00:00.000001",
            "24:01:00",
            "25:00:00",
            "1:00:00",
            "10:00",
            "",
        ] {
            invalid(1083, bad);
        }
        assert_eq!(json_of(1083, "10:00:00"), json!(36_000_000_000i64));
    }

    #[test]
    fn uuid() {
        let text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let PgValue::Uuid(bytes) = parse(2950, text) else {
            panic!()
        };
        assert_eq!(bytes[0], 0xa0);
        assert_eq!(bytes[15], 0x11);
        assert_eq!(json_of(2950, text), json!(text));
        assert_eq!(
            json_of(2950, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            json!(text)
        );
        for bad in [
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "a0eebc99+9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            invalid(2950, bad);
        }
    }

    #[test]
    fn json_types() {
        for oid in [114, 3802] {
            for good in [
                r#"{"a": [1, 2.5e-3, -0, true, false, null, "x\"y\u00e9"]}"#,
                "  []  ",
                "\"s\"",
                "-12.5E+3",
                "{}",
                r#"{"a":{"b":{}}}"#,
            ] {
                let value = parse(oid, good);
                assert_eq!(value.to_debezium_json(), json!(good));
            }
            for bad in [
                "",
                "{",
                "}",
                "[1,]",
                "{\"a\"}",
                "{\"a\":}",
                "01",
                "1.",
                "-",
                "tru",
                "[1] 2",
                "{1:2}",
                "\"\t\"",
                "\"\\x\"",
                "\"\\u12\"",
                "[}",
                "{]",
                "NaN",
                "1e",
            ] {
                invalid(oid, bad);
            }
        }
        // Deeper than serde_json's default recursion limit: still fine.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_text(3802, &deep).is_ok());
    }

    #[test]
    fn json_validator_agrees_with_serde_json() {
        for text in [
            "1",
            "[1,2]",
            "{\"a\":1,\"b\":[true]}",
            " null ",
            "[[],{}]",
            "\"\\ud83d\\ude00\"",
            "[1 2]",
            "{\"a\" 1}",
            "[,1]",
            ",",
            "{\"a\":1,}",
            "[\"a\",]",
            "0.5e10",
            "-0.0",
        ] {
            assert_eq!(
                validate_json(text).is_ok(),
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(
            parse(1007, "{1,2,NULL}"),
            PgValue::Array {
                element: ScalarType::Int4,
                elements: vec![Some(PgValue::Int4(1)), Some(PgValue::Int4(2)), None],
            }
        );
        assert_eq!(json_of(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(
            parse(1007, "{}"),
            PgValue::Array {
                element: ScalarType::Int4,
                elements: vec![]
            }
        );
        assert_eq!(json_of(1009, "{}"), json!([]));
        assert_eq!(
            json_of(1009, r#"{"a b","c\"d","e\\f",plain,"NULL",null,""}"#),
            json!(["a b", "c\"d", "e\\f", "plain", "NULL", null, ""])
        );
        assert_eq!(
            json_of(1009, r#"{  spaced  , "q" ,x\,y,\NULL}"#),
            json!(["spaced", "q", "x,y", "NULL"])
        );
        assert_eq!(json_of(1000, "{t,f,NULL}"), json!([true, false, null]));
        assert_eq!(json_of(1001, r#"{"\\x0102",NULL}"#), json!(["AQI=", null]));
        assert_eq!(json_of(1231, "{1.50,NaN}"), json!(["1.50", "NaN"]));
        assert_eq!(
            json_of(1185, r#"{"2026-11-25 10:00:00+00",infinity}"#),
            json!(["2026-11-25T10:00:00Z", "infinity"])
        );
        assert_eq!(json_of(1182, "{2026-11-25,NULL}"), json!([20_782, null]));
        assert_eq!(
            json_of(3807, r#"{"{\"a\": 1}","[]"}"#),
            json!(["{\"a\": 1}", "[]"])
        );
        assert_eq!(
            json_of(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])
        );
        assert_eq!(
            json_of(1022, "{1.5,NaN,-Infinity}"),
            json!([1.5, "NaN", "-Infinity"])
        );
        for bad in [
            "",
            "1,2",
            "{1,2",
            "{{1,2},{3,4}}",
            "[0:1]={1,2}",
            "{1,,2}",
            "{1,}",
            "{,}",
            r#"{"a}"#,
            r#"{a"b}"#,
            "{a\\}",
            r#"{"a"b}"#,
        ] {
            invalid(1009, bad);
        }
        // An element of the wrong type is an error naming the element type.
        assert_eq!(
            parse_text(1007, "{1,x}"),
            Err(ValueError::Invalid {
                type_name: "int4",
                text: "x".into(),
                reason: "not a 32-bit integer"
            })
        );
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            parse_text_bytes(25, b"ab\xffc"),
            Err(ValueError::NotUtf8 {
                type_name: "text",
                offset: 2
            })
        );
        assert_eq!(
            parse_text_bytes(25, b"abc"),
            Ok(PgValue::Text("abc".into()))
        );
    }

    #[test]
    fn debezium_schemas() {
        let schema = |oid| {
            PgType::from_oid(oid)
                .unwrap()
                .debezium_schema()
                .to_json(true)
        };
        assert_eq!(schema(16), json!({"type": "boolean", "optional": true}));
        assert_eq!(schema(21), json!({"type": "int16", "optional": true}));
        assert_eq!(schema(23), json!({"type": "int32", "optional": true}));
        assert_eq!(schema(20), json!({"type": "int64", "optional": true}));
        assert_eq!(schema(700), json!({"type": "float", "optional": true}));
        assert_eq!(schema(701), json!({"type": "double", "optional": true}));
        assert_eq!(schema(1700), json!({"type": "string", "optional": true}));
        assert_eq!(schema(17), json!({"type": "bytes", "optional": true}));
        for (oid, connect_type, name) in [
            (1082, "int32", "io.debezium.time.Date"),
            (1114, "int64", "io.debezium.time.MicroTimestamp"),
            (1184, "string", "io.debezium.time.ZonedTimestamp"),
            (1083, "int64", "io.debezium.time.MicroTime"),
            (2950, "string", "io.debezium.data.Uuid"),
            (114, "string", "io.debezium.data.Json"),
            (3802, "string", "io.debezium.data.Json"),
        ] {
            assert_eq!(
                schema(oid),
                json!({"type": connect_type, "optional": true, "name": name, "version": 1})
            );
        }
        assert_eq!(
            PgType::from_oid(1182)
                .unwrap()
                .debezium_schema()
                .to_json(false),
            json!({
                "type": "array",
                "optional": false,
                "items": {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1}
            })
        );
    }

    #[test]
    fn civil_round_trip_over_postgres_range() {
        // PostgreSQL dates run from 4714-11-24 BC to 5874897-12-31.
        let first = days_from_civil(-4713, 11, 24);
        let last = days_from_civil(5_874_897, 12, 31);
        let mut day = first;
        while day <= last {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert!(d >= 1 && d <= days_in_month(y, m));
            day += 9_973;
        }
    }

    /// Formats micros since the Unix epoch the way PostgreSQL prints a timestamptz in a zone
    /// `offset_seconds` east of UTC.
    fn pg_timestamptz_text(micros: i64, offset_seconds: i64) -> String {
        let local = micros + offset_seconds * 1_000_000;
        let (year, month, day) = civil_from_days(local.div_euclid(MICROS_PER_DAY));
        let of_day = local.rem_euclid(MICROS_PER_DAY);
        let seconds = of_day / 1_000_000;
        let fraction = of_day % 1_000_000;
        let (y, era) = if year <= 0 {
            (1 - year, " BC")
        } else {
            (year, "")
        };
        let mut text = format!(
            "{y:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
        if fraction != 0 {
            text.push_str(format!(".{fraction:06}").trim_end_matches('0'));
        }
        let sign = if offset_seconds < 0 { '-' } else { '+' };
        let abs = offset_seconds.abs();
        text.push_str(&format!("{sign}{:02}", abs / 3600));
        if abs % 3600 != 0 {
            text.push_str(&format!(":{:02}", abs / 60 % 60));
        }
        if abs % 60 != 0 {
            text.push_str(&format!(":{:02}", abs % 60));
        }
        text.push_str(era);
        text
    }

    proptest! {
        #[test]
        fn timestamptz_text_round_trips(
            // From 4714-11-24 BC to about 293 000 AD, where Unix microseconds leave i64.
            micros in -210_866_760_000_000_000i64..9_200_000_000_000_000_000i64,
            offset in -15 * 3600i64..=15 * 3600,
        ) {
            let text = pg_timestamptz_text(micros, offset);
            prop_assert_eq!(
                parse_text(1184, &text),
                Ok(PgValue::Timestamptz(MaybeInfinite::Finite(micros))),
                "{}", text
            );
        }

        #[test]
        fn parsers_never_panic(text in ".{0,64}", index in 0usize..38) {
            let scalar = ScalarType::ALL[index % 19];
            let oid = if index < 19 { scalar.oid() } else { scalar.array_oid() };
            if let Ok(value) = parse_text(oid, &text) {
                let _ = value.to_debezium_json();
            }
        }

        #[test]
        fn parsers_never_panic_on_near_valid_text(
            text in r#"[-0-9:. +BCinfty{}",\\NUL\[\]=ex]{0,40}"#,
            index in 0usize..38,
        ) {
            let scalar = ScalarType::ALL[index % 19];
            let oid = if index < 19 { scalar.oid() } else { scalar.array_oid() };
            if let Ok(value) = parse_text(oid, &text) {
                let _ = value.to_debezium_json();
            }
        }

        #[test]
        fn int_arrays_round_trip(values in proptest::collection::vec(proptest::option::of(any::<i32>()), 0..20)) {
            let items: Vec<String> = values
                .iter()
                .map(|v| v.map_or("NULL".to_owned(), |i| i.to_string()))
                .collect();
            let text = format!("{{{}}}", items.join(","));
            let expected = PgValue::Array {
                element: ScalarType::Int4,
                elements: values.iter().map(|v| v.map(PgValue::Int4)).collect(),
            };
            prop_assert_eq!(parse_text(1007, &text), Ok(expected));
        }

        #[test]
        fn text_arrays_round_trip(values in proptest::collection::vec(proptest::option::of(".{0,8}"), 0..10)) {
            // Quote and escape every element, as array_out does for awkward ones.
            let items: Vec<String> = values
                .iter()
                .map(|v| match v {
                    None => "NULL".to_owned(),
                    Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
                })
                .collect();
            let text = format!("{{{}}}", items.join(","));
            let expected = PgValue::Array {
                element: ScalarType::Text,
                elements: values.iter().map(|v| v.clone().map(PgValue::Text)).collect(),
            };
            prop_assert_eq!(parse_text(1009, &text), Ok(expected));
        }
    }
}
