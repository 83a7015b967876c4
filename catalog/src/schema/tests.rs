use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimestampMicrosecondType, UInt64Type,
};
use serde_json::json;

use super::*;
use crate::event::Operation;
use crate::event::{Row, SourcePosition};

fn col(name: &str, column_type: ColumnType, key: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        column_type,
        optional: !key,
        key,
    }
}

fn decimal(scale: &str) -> ColumnType {
    let mut ty = ColumnType::named(ConnectType::Bytes, DECIMAL);
    ty.parameters.insert("scale".into(), scale.into());
    ty
}

fn every_type() -> TableSchema {
    use ConnectType as C;
    TableSchema {
        table: TableId::new("s", "n", "t"),
        event_id_version: crate::EventIdVersion::CURRENT,
        columns: vec![
            col("id", ColumnType::plain(C::Int64), true),
            col("i8", ColumnType::plain(C::Int8), false),
            col("i16", ColumnType::plain(C::Int16), false),
            col("i32", ColumnType::plain(C::Int32), false),
            col("f32", ColumnType::plain(C::Float32), false),
            col("f64", ColumnType::plain(C::Float64), false),
            col("b", ColumnType::plain(C::Boolean), false),
            col("s", ColumnType::plain(C::String), false),
            col("bin", ColumnType::plain(C::Bytes), false),
            col("dec", decimal("2"), false),
            col(
                "d",
                ColumnType::named(C::Int32, "io.debezium.time.Date"),
                false,
            ),
            col(
                "ts",
                ColumnType::named(C::Int64, "io.debezium.time.MicroTimestamp"),
                false,
            ),
            col(
                "ts_ms",
                ColumnType::named(C::Int64, "io.debezium.time.Timestamp"),
                false,
            ),
            col(
                "ts_ns",
                ColumnType::named(C::Int64, "io.debezium.time.NanoTimestamp"),
                false,
            ),
            col(
                "tz",
                ColumnType::named(C::String, "io.debezium.time.ZonedTimestamp"),
                false,
            ),
            col(
                "t",
                ColumnType::named(C::Int64, "io.debezium.time.MicroTime"),
                false,
            ),
            col(
                "t_ms",
                ColumnType::named(C::Int32, "io.debezium.time.Time"),
                false,
            ),
            col(
                "uuid",
                ColumnType::named(C::String, "io.debezium.data.Uuid"),
                false,
            ),
            col("arr", ColumnType::array(ColumnType::plain(C::Int32)), false),
            col(
                "arr_s",
                ColumnType::array(ColumnType::plain(C::String)),
                false,
            ),
            col("st", ColumnType::plain(C::Struct), false),
        ],
    }
}

fn change(op: Operation, id: i64, image: Value, seq: u64) -> ChangeEvent {
    let row: Row = image
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ChangeEvent {
        table: TableId::new("s", "n", "t"),
        op,
        key: Row::from_iter([("id", json!(id))]),
        before: (op == Operation::Delete).then(|| row.clone()),
        after: (op != Operation::Delete).then_some(row),
        unchanged: vec![],
        commit_ts_us: 1_000_000 + seq as i64,
        position: SourcePosition { commit: seq, seq },
        tx_id: Some("9".into()),
        origin: None,
    }
}

#[test]
fn segment_schema_maps_every_type() {
    let schema = every_type().segment_schema().unwrap();
    let ty = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
    let list = |dt| DataType::List(Arc::new(Field::new_list_field(dt, true)));
    assert_eq!(ty("_op"), DataType::Utf8);
    assert_eq!(
        ty("_commit_ts"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(ty("_event_id"), DataType::FixedSizeBinary(32));
    assert_eq!(ty("id"), DataType::Int64);
    assert_eq!(ty("i8"), DataType::Int8);
    assert_eq!(ty("i16"), DataType::Int16);
    assert_eq!(ty("i32"), DataType::Int32);
    assert_eq!(ty("f32"), DataType::Float32);
    assert_eq!(ty("f64"), DataType::Float64);
    assert_eq!(ty("b"), DataType::Boolean);
    assert_eq!(ty("s"), DataType::Utf8);
    assert_eq!(ty("bin"), DataType::Binary);
    assert_eq!(ty("dec"), DataType::Decimal128(38, 2));
    assert_eq!(ty("d"), DataType::Date32);
    assert_eq!(ty("ts"), micros);
    assert_eq!(ty("ts_ms"), micros);
    assert_eq!(ty("ts_ns"), micros);
    assert_eq!(
        ty("tz"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(ty("t"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(ty("t_ms"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(ty("uuid"), DataType::Utf8);
    assert_eq!(ty("arr"), list(DataType::Int32));
    assert_eq!(ty("arr_s"), list(DataType::Utf8));
    assert_eq!(ty("st"), DataType::Utf8);
    assert_eq!(schema.fields().len(), 8 + every_type().columns.len());
}

#[test]
fn converts_every_type() {
    let schema = every_type();
    let full = change(
        Operation::Create,
        1,
        json!({
            "id": 1, "i8": -8, "i16": 300, "i32": -70000, "f32": 1.5, "f64": "NaN", "b": true,
            "s": "héllo", "bin": "AAEC/w==", "dec": "/zg=", "d": 20_000,
            "ts": 1_700_000_000_123_456_i64, "ts_ms": 1_700_000_000_123_i64,
            "ts_ns": 1_700_000_000_123_456_789_i64, "tz": "2026-11-25T10:00:00.5+02:00",
            "t": 3_600_000_001_i64, "t_ms": 1_000, "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "arr": [1, null, 3], "arr_s": [], "st": {"scale": 2, "value": "AQ=="}
        }),
        5,
    );
    let mut sparse = change(Operation::Update, 2, json!({"id": 2, "s": null}), 6);
    sparse.unchanged = vec!["bin".into()];
    let deleted = change(Operation::Delete, 3, json!({"id": 3}), 7);
    let batch = events_to_record_batch(&schema, &[&full, &sparse, &deleted]).unwrap();
    assert_eq!(batch.num_rows(), 3);
    let c = |name: &str| batch.column_by_name(name).unwrap();

    assert_eq!(c("_op").as_string::<i32>().value(2), "d");
    assert_eq!(
        c("_commit_pos")
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec(),
        [5, 6, 7]
    );
    assert_eq!(c("_tx_id").as_string::<i32>().value(0), "9");
    assert_eq!(
        c("_event_id").as_fixed_size_binary().value(0),
        full.event_id(schema.event_id_version)
    );
    let unchanged = c("_unchanged").as_list::<i32>();
    assert_eq!(unchanged.value(0).len(), 0);
    assert_eq!(unchanged.value(1).as_string::<i32>().value(0), "bin");
    assert_eq!(c("_key").as_string::<i32>().value(0), full.sort_key());

    assert_eq!(
        c("id").as_primitive::<Int64Type>().values().to_vec(),
        [1, 2, 3]
    );
    assert_eq!(c("i8").as_primitive::<Int8Type>().value(0), -8);
    assert_eq!(c("i16").as_primitive::<Int16Type>().value(0), 300);
    assert_eq!(c("i32").as_primitive::<Int32Type>().value(0), -70000);
    assert_eq!(c("f32").as_primitive::<Float32Type>().value(0), 1.5);
    assert!(c("f64").as_primitive::<Float64Type>().value(0).is_nan());
    assert!(c("b").as_boolean().value(0));
    assert_eq!(c("s").as_string::<i32>().value(0), "héllo");
    assert!(c("s").is_null(1));
    assert_eq!(c("bin").as_binary::<i32>().value(0), [0, 1, 2, 255]);
    assert!(
        c("bin").is_null(1),
        "unchanged cells are NULL, listed in _unchanged"
    );
    assert_eq!(c("dec").as_primitive::<Decimal128Type>().value(0), -200);
    assert_eq!(c("d").as_primitive::<Date32Type>().value(0), 20_000);
    let ts = |name: &str| c(name).as_primitive::<TimestampMicrosecondType>().value(0);
    assert_eq!(ts("ts"), 1_700_000_000_123_456);
    assert_eq!(ts("ts_ms"), 1_700_000_000_123_000);
    assert_eq!(ts("ts_ns"), 1_700_000_000_123_456);
    assert_eq!(ts("tz"), 1_795_593_600_500_000);
    assert_eq!(
        c("t").as_primitive::<Time64MicrosecondType>().value(0),
        3_600_000_001
    );
    assert_eq!(
        c("t_ms").as_primitive::<Time64MicrosecondType>().value(0),
        1_000_000
    );
    assert_eq!(
        c("uuid").as_string::<i32>().value(0),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    let arr = c("arr").as_list::<i32>();
    let first = arr.value(0);
    let first = first.as_primitive::<Int32Type>();
    assert_eq!(first.len(), 3);
    assert!(first.is_null(1));
    assert_eq!(first.value(2), 3);
    assert!(arr.is_null(1));
    assert_eq!(c("arr_s").as_list::<i32>().value(0).len(), 0);
    assert_eq!(
        c("st").as_string::<i32>().value(0),
        r#"{"scale":2,"value":"AQ=="}"#
    );
    // The delete's row holds its before image.
    assert_eq!(c("id").as_primitive::<Int64Type>().value(2), 3);
}

#[test]
fn bad_values_name_the_column() {
    let schema = every_type();
    for (column, value) in [
        ("i8", json!(1000)),
        ("i32", json!("x")),
        ("bin", json!("***")),
        ("tz", json!("yesterday")),
        ("arr", json!(5)),
        ("b", json!(1)),
    ] {
        let event = change(Operation::Create, 1, json!({ "id": 1, column: value }), 1);
        let err = schema.check_event(&event).unwrap_err();
        assert!(err.to_string().contains(column), "{err}");
        assert!(events_to_record_batch(&schema, &[&event]).is_err());
    }
    let undeclared = change(Operation::Create, 1, json!({"id": 1, "nope": 1}), 1);
    assert!(schema.check_event(&undeclared).is_err());
}

#[test]
fn unmappable_and_reserved_schemas_are_errors() {
    let mut schema = every_type();
    schema.columns.push(col("dec2", decimal("x"), false));
    assert!(matches!(
        schema.segment_schema(),
        Err(SchemaError::Unmappable { column, .. }) if column == "dec2"
    ));
    let mut schema = every_type();
    schema
        .columns
        .push(col("_key", ColumnType::plain(ConnectType::String), false));
    assert!(matches!(
        schema.segment_schema(),
        Err(SchemaError::ReservedName { .. })
    ));
}

#[test]
fn catalog_json_round_trips() {
    let schema = every_type();
    let json = schema.to_catalog_json();
    assert_eq!(json["columns"][9]["arrow_type"], "Decimal128(38, 2)");
    assert_eq!(json["columns"][0]["type"], "int64");
    assert_eq!(TableSchema::from_catalog_json(&json).unwrap(), schema);
}

/// The chrono reading of a timestamp text, as `temporal_from_text` gave it before its fast
/// path.
fn chrono_micros(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

#[test]
fn usual_timestamp_texts_take_the_fast_path() {
    for (text, micros) in [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-11-25T10:00:00.5Z", 1_795_600_800_500_000),
        ("2024-02-29T23:59:59.999999999+05:30", 1_709_231_399_999_999),
        ("1969-12-31T23:59:59.999999Z", -1),
        ("0001-01-01T00:00:00-00:01", -62_135_596_740_000_000),
        ("9999-12-31T23:59:59.123456Z", 253_402_300_799_123_456),
    ] {
        assert_eq!(rfc3339_micros(text), Some(micros), "{text}");
        assert_eq!(chrono_micros(text), Some(micros), "{text}");
        assert_eq!(temporal_from_text(text), Ok(micros), "{text}");
    }
    // Left to chrono: valid but unusual, or not timestamps at all.
    for text in [
        "2026-11-25t10:00:00Z",
        "2026-11-25 10:00:00Z",
        "2016-12-31T23:59:60Z",
        "2026-11-25T10:00:00.1234567891Z",
        "2023-02-29T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T10:00:00",
        "2026-11-25T10:00:00+0100",
        "2026-11-25T10:00:00.Z",
        "２026-11-25T10:00:00Z",
    ] {
        assert_eq!(rfc3339_micros(text), None, "{text}");
    }
    assert_eq!(
        temporal_from_text("2016-12-31T23:59:60Z"),
        Ok(1_483_228_800_000_000)
    );
    let err = temporal_from_text("2023-02-29T00:00:00Z").unwrap_err();
    assert!(
        err.contains("\"2023-02-29T00:00:00Z\" is not an ISO 8601 timestamp"),
        "{err}"
    );
}

proptest::proptest! {
    /// Wherever the fast path reads a text, chrono reads the same instant; and it reads every
    /// valid text of the usual shape.
    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono(
        year in 0_u32..=9999,
        month in 0_u32..=13,
        day in 0_u32..=32,
        hour in 0_u32..=24,
        minute in 0_u32..=60,
        second in 0_u32..=60,
        fraction in proptest::option::of("[0-9]{0,11}"),
        offset in proptest::option::of((proptest::bool::ANY, 0_u32..=24, 0_u32..=60)),
        noise in proptest::option::of((0_usize..28, proptest::char::range(' ', '~'))),
    ) {
        let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
        if let Some(fraction) = &fraction {
            text.push('.');
            text.push_str(fraction);
        }
        match offset {
            None => text.push('Z'),
            Some((east, h, m)) => {
                text.push_str(&format!("{}{h:02}:{m:02}", if east { '+' } else { '-' }));
            }
        }
        if let Some((at, c)) = noise {
            let at = (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text.replace_range(at..(at + 1).min(text.len()), &c.to_string());
        }
        let fast = rfc3339_micros(&text);
        let slow = chrono_micros(&text);
        if fast.is_some() {
            proptest::prop_assert_eq!(fast, slow, "{}", text);
        }
        let usual = second < 60 && fraction.as_ref().is_none_or(|f| (1..=9).contains(&f.len()));
        if slow.is_some() && usual && noise.is_none() {
            proptest::prop_assert_eq!(fast, slow, "{}", text);
        }
        proptest::prop_assert_eq!(temporal_from_text(&text).ok(), slow, "{}", text);
    }
}
