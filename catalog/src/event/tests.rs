use proptest::prelude::*;
use serde_json::json;

use super::*;

const TOPIC: &str = "strata.pg.public.orders";

/// A `{"schema","payload"}` document laid out as the JSON converter writes it: schema first
/// (`Value::to_string` would sort the members, payload first).
fn converter_order(document: &Value) -> Vec<u8> {
    format!(
        "{{\"schema\":{},\"payload\":{}}}",
        document["schema"], document["payload"]
    )
    .into_bytes()
}

fn key_doc(id: i64) -> Vec<u8> {
    converter_order(&json!({
        "schema": {"type": "struct", "optional": false, "name": "strata.pg.public.orders.Key",
                   "fields": [{"type": "int32", "optional": false, "field": "id"}]},
        "payload": {"id": id}
    }))
}

fn row_fields() -> Value {
    json!([
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "field": "note"},
        {"type": "string", "optional": true, "field": "total"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp",
         "version": 1, "field": "at"},
        {"type": "array", "items": {"type": "int64", "optional": true}, "optional": true,
         "field": "tags"}
    ])
}

/// A value exactly as strata's capture writes it (`capture/src/postgres/envelope.rs`).
fn strata_value(op: &str, before: Value, after: Value, unchanged: Value) -> Vec<u8> {
    let row = |field: &str| {
        json!({"type": "struct", "fields": row_fields(), "optional": true,
               "name": "strata.pg.public.orders.Value", "field": field})
    };
    let f = |ty: &str, optional: bool, field: &str| json!({"type": ty, "optional": optional, "field": field});
    converter_order(&json!({
        "schema": {
            "type": "struct",
            "fields": [row("before"), row("after"),
                {"type": "struct", "name": "io.debezium.connector.postgresql.Source",
                 "optional": false, "field": "source", "fields": [
                    f("string", false, "version"), f("string", false, "connector"),
                    f("string", false, "name"), f("int64", false, "ts_ms"),
                    {"type": "string", "optional": true, "name": "io.debezium.data.Enum",
                     "version": 1, "default": "false", "field": "snapshot"},
                    f("string", false, "db"), f("string", true, "sequence"),
                    f("int64", true, "ts_us"), f("int64", true, "ts_ns"),
                    f("string", false, "schema"), f("string", false, "table"),
                    f("int64", true, "txId"), f("int64", true, "lsn"), f("int64", true, "xmin"),
                    f("int64", true, "commit_lsn"),
                    {"type": "array", "items": {"type": "string", "optional": false},
                     "optional": true, "field": "unchanged_toast"}]},
                f("string", false, "op"), f("int64", true, "ts_ms"),
                {"type": "struct", "optional": true, "name": "event.block", "version": 1,
                 "field": "transaction", "fields": [f("string", false, "id"),
                    f("int64", false, "total_order"), f("int64", false, "data_collection_order")]}],
            "optional": false,
            "name": "strata.pg.public.orders.Envelope",
            "version": 2
        },
        "payload": {
            "before": before,
            "after": after,
            "source": {"version": "0.1.0", "connector": "postgresql", "name": "strata.pg",
                       "ts_ms": 1_764_064_800_000_i64, "snapshot": "false", "db": "shop",
                       "sequence": "[null,\"4294967312\"]", "ts_us": 1_764_064_800_000_123_i64,
                       "ts_ns": 1_764_064_800_000_123_000_i64, "schema": "public",
                       "table": "orders", "txId": 900, "lsn": 4_294_967_312_u64, "xmin": null,
                       "commit_lsn": 4_294_967_552_u64, "unchanged_toast": unchanged},
            "op": op,
            "ts_ms": 1_764_064_801_000_i64,
            "transaction": {"id": "900:4294967552", "total_order": 2, "data_collection_order": 1}
        }
    }))
}

/// A value as the Debezium PostgreSQL connector (3.x) writes it: no `commit_lsn`, no
/// `unchanged_toast`, transaction metadata off.
fn debezium_value(op: &str, before: Value, after: Value, lsn: u64) -> Vec<u8> {
    debezium_value_with(row_fields(), op, before, after, lsn)
}

/// [`debezium_value`] with the given row fields.
fn debezium_value_with(fields: Value, op: &str, before: Value, after: Value, lsn: u64) -> Vec<u8> {
    let row = |field: &str| {
        json!({"type": "struct", "fields": fields, "optional": true,
               "name": "dbserver1.public.orders.Value", "field": field})
    };
    converter_order(&json!({
        "schema": {
            "type": "struct",
            "fields": [row("before"), row("after"),
                {"type": "struct", "name": "io.debezium.connector.postgresql.Source",
                 "optional": false, "field": "source", "fields": [
                    {"type": "string", "optional": false, "field": "version"},
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "name"},
                    {"type": "int64", "optional": false, "field": "ts_ms"},
                    {"type": "string", "optional": true, "name": "io.debezium.data.Enum",
                     "version": 1, "parameters": {"allowed": "true,last,false,incremental"},
                     "default": "false", "field": "snapshot"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": true, "field": "sequence"},
                    {"type": "int64", "optional": true, "field": "ts_us"},
                    {"type": "int64", "optional": true, "field": "ts_ns"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "int64", "optional": true, "field": "txId"},
                    {"type": "int64", "optional": true, "field": "lsn"},
                    {"type": "int64", "optional": true, "field": "xmin"}]},
                {"type": "struct", "optional": true, "name": "event.block", "version": 1,
                 "field": "transaction", "fields": [
                    {"type": "string", "optional": false, "field": "id"},
                    {"type": "int64", "optional": false, "field": "total_order"},
                    {"type": "int64", "optional": false, "field": "data_collection_order"}]},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
                {"type": "int64", "optional": true, "field": "ts_us"},
                {"type": "int64", "optional": true, "field": "ts_ns"}],
            "optional": false,
            "name": "dbserver1.public.orders.Envelope",
            "version": 2
        },
        "payload": {
            "before": before,
            "after": after,
            "source": {"version": "3.0.7.Final", "connector": "postgresql", "name": "dbserver1",
                       "ts_ms": 1_764_064_800_000_i64, "snapshot": "false", "db": "shop",
                       "sequence": "[\"24023128\",\"24023184\"]", "ts_us": 1_764_064_800_000_000_i64,
                       "ts_ns": 1_764_064_800_000_000_000_i64, "schema": "public",
                       "table": "orders", "txId": 555, "lsn": lsn, "xmin": null},
            "transaction": null,
            "op": op,
            "ts_ms": 1_764_064_801_000_i64,
            "ts_us": 1_764_064_801_000_000_i64,
            "ts_ns": 1_764_064_801_000_000_000_i64
        }
    }))
}

fn event(decoded: Decoded) -> DecodedEvent {
    match decoded {
        Decoded::Event(e) => *e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn decodes_a_strata_update_with_unchanged_toast() {
    let after = json!({"id": 7, "note": UNAVAILABLE_VALUE, "total": "12.50",
                       "at": "2026-11-25T10:00:00.5Z", "tags": [1, null, 3]});
    let value = strata_value("u", Value::Null, after, json!(["note"]));
    let decoded = event(decode_debezium(Some(&key_doc(7)), &value, TOPIC).unwrap());
    let e = &decoded.event;
    assert_eq!(e.table, TableId::new("strata.pg", "public", "orders"));
    assert_eq!(e.op, Operation::Update);
    assert_eq!(e.key, Row::from_iter([("id", json!(7))]));
    assert_eq!(e.before, None);
    let after = e.after.as_ref().unwrap();
    assert_eq!(after.get("note"), None, "the placeholder is not a value");
    assert_eq!(after.get("total"), Some(&json!("12.50")));
    let names: Vec<&str> = after.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["id", "total", "at", "tags"], "schema order");
    assert_eq!(e.unchanged, ["note"]);
    assert_eq!(e.commit_ts_us, 1_764_064_800_000_123);
    assert_eq!(
        e.position,
        SourcePosition {
            commit: 4_294_967_552,
            seq: 4_294_967_312
        }
    );
    assert_eq!(e.tx_id.as_deref(), Some("900"));
    assert_eq!(e.origin, None);

    let schema = &decoded.schema;
    assert_eq!(schema.table, e.table);
    let id = schema.column("id").unwrap();
    assert!(id.key && !id.optional);
    assert_eq!(id.column_type, ColumnType::plain(ConnectType::Int32));
    let at = schema.column("at").unwrap();
    assert!(!at.key && at.optional);
    assert_eq!(
        at.column_type,
        ColumnType::named(ConnectType::String, "io.debezium.time.ZonedTimestamp")
    );
    assert_eq!(
        schema.column("tags").unwrap().column_type,
        ColumnType::array(ColumnType::plain(ConnectType::Int64))
    );
}

#[test]
fn decodes_debezium_connector_events() {
    let after = json!({"id": 1, "note": "hello", "total": "3.00", "at": null, "tags": null});
    let value = debezium_value("c", Value::Null, after, 24_023_184);
    let decoded =
        event(decode_debezium(Some(&key_doc(1)), &value, "dbserver1.public.orders").unwrap());
    let e = decoded.event;
    assert_eq!(e.table, TableId::new("dbserver1", "public", "orders"));
    assert_eq!(e.op, Operation::Create);
    assert_eq!(e.commit_ts_us, 1_764_064_800_000_000);
    // No commit_lsn and no transaction metadata: the change's LSN stands in.
    assert_eq!(
        e.position,
        SourcePosition {
            commit: 24_023_184,
            seq: 24_023_184
        }
    );
    assert!(e.unchanged.is_empty());

    // Unchanged TOAST without strata's list: the placeholder itself says it.
    let after =
        json!({"id": 1, "note": UNAVAILABLE_VALUE, "total": "4.00", "at": null, "tags": null});
    let value = debezium_value("u", Value::Null, after, 24_023_300);
    let e =
        event(decode_debezium(Some(&key_doc(1)), &value, "dbserver1.public.orders").unwrap()).event;
    assert_eq!(e.unchanged, ["note"]);
    assert_eq!(e.after.unwrap().get("note"), None);

    // A delete (REPLICA IDENTITY DEFAULT: the before image has the key only).
    let before = json!({"id": 1, "note": null, "total": null, "at": null, "tags": null});
    let value = debezium_value("d", before, Value::Null, 24_023_400);
    let e =
        event(decode_debezium(Some(&key_doc(1)), &value, "dbserver1.public.orders").unwrap()).event;
    assert_eq!(e.op, Operation::Delete);
    assert_eq!(e.image().unwrap().get("id"), Some(&json!(1)));
}

/// Row fields as the Debezium PostgreSQL connector 3.7 (default settings, JsonConverter)
/// declares `score double precision`, `f4 real`, `amount numeric(12,2)` and `ratio numeric`
/// (copied from a record of tests/e2e/debezium.rs).
fn debezium_numeric_fields() -> Value {
    json!([
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "double", "optional": true, "field": "score"},
        {"type": "float", "optional": true, "field": "f4"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
         "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "12"},
         "field": "amount"},
        {"type": "struct", "fields": [
            {"type": "int32", "optional": false, "field": "scale"},
            {"type": "bytes", "optional": false, "field": "value"}],
         "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
         "doc": "Variable scaled decimal", "field": "ratio"}
    ])
}

#[test]
fn debezium_doubles_and_decimals_decode_and_fit_their_arrow_types() {
    let after = json!({"id": 7, "score": 7.7, "f4": 0.5, "amount": "Awk=",
                       "ratio": {"scale": 1, "value": "TQ=="}});
    let value = debezium_value_with(debezium_numeric_fields(), "c", Value::Null, after, 100);
    let decoded = event(decode_debezium(Some(&key_doc(7)), &value, TOPIC).unwrap());
    let column = |name: &str| decoded.schema.column(name).unwrap().column_type.clone();
    assert_eq!(column("score"), ColumnType::plain(ConnectType::Float64));
    assert_eq!(column("f4"), ColumnType::plain(ConnectType::Float32));
    assert_eq!(column("amount").connect, ConnectType::Bytes);
    // The variable-scale struct is a decimal string column now.
    assert_eq!(
        column("ratio"),
        ColumnType::named(ConnectType::String, "io.debezium.data.VariableScaleDecimal")
    );
    let after = decoded.event.after.clone().unwrap();
    assert_eq!(after.get("ratio"), Some(&json!("7.7")));
    assert_eq!(after.get("amount"), Some(&json!("Awk=")));
    // And the segment accepts the event: amount is Decimal128(38, 2) = 7.77.
    decoded.schema.segment_schema().unwrap();
    decoded.schema.check_event(&decoded.event).unwrap();

    // NULL stays NULL.
    let after = json!({"id": 8, "score": null, "f4": null, "amount": null, "ratio": null});
    let value = debezium_value_with(debezium_numeric_fields(), "c", Value::Null, after, 101);
    let e = event(decode_debezium(Some(&key_doc(8)), &value, TOPIC).unwrap()).event;
    assert_eq!(e.after.unwrap().get("ratio"), Some(&Value::Null));

    // A malformed struct is an error naming the column, not a panic.
    let after = json!({"id": 9, "score": 1.0, "f4": 1.0, "amount": "AA==",
                       "ratio": {"scale": 1, "value": "not base64!"}});
    let value = debezium_value_with(debezium_numeric_fields(), "c", Value::Null, after, 102);
    let err = decode_debezium(Some(&key_doc(9)), &value, TOPIC).unwrap_err();
    assert!(err.reason.contains("column ratio"), "{err}");
}

#[test]
fn variable_scale_decimals_are_exact_text() {
    use base64::Engine as _;
    let vsd = |scale: i64, bytes: &[u8]| {
        let value = base64::engine::general_purpose::STANDARD.encode(bytes);
        variable_scale_decimal(&json!({"scale": scale, "value": value})).unwrap()
    };
    assert_eq!(vsd(1, &[0x4d]), "7.7");
    assert_eq!(vsd(2, &[0xff, 0x6a]), "-1.50");
    assert_eq!(vsd(2, &[0xff]), "-0.01");
    assert_eq!(vsd(6, &[0x01]), "0.000001");
    assert_eq!(vsd(0, &[]), "0");
    assert_eq!(vsd(0, &[0x00]), "0");
    assert_eq!(vsd(3, &[0x00]), "0.000");
    assert_eq!(vsd(0, &[0x80]), "-128");
    assert_eq!(vsd(0, &[0x00, 0x80]), "128");
    assert_eq!(vsd(-2, &[0x05]), "500");
    // 123456789012345678901234567890123 (> i128 is not needed: any length works).
    let big: Vec<u8> = {
        let mut n = 123_456_789_012_345_678_901_234_567_890_123_u128
            .to_be_bytes()
            .to_vec();
        while n.len() > 1 && n[0] == 0 && n[1] & 0x80 == 0 {
            n.remove(0);
        }
        n
    };
    assert_eq!(vsd(3, &big), "123456789012345678901234567890.123");
    let twenty_bytes = [0x7f; 20];
    assert_eq!(
        vsd(0, &twenty_bytes),
        "727885129180488904360266563744972327436484050815"
    );
    assert!(variable_scale_decimal(&json!({"scale": 1})).is_err());
    assert!(variable_scale_decimal(&json!({"scale": 99999999, "value": "AQ=="})).is_err());
    assert!(variable_scale_decimal(&json!({"scale": i64::MIN, "value": "AQ=="})).is_err());
}

#[test]
fn transaction_id_suffix_is_the_commit_position() {
    let after = json!({"id": 1, "note": "x", "total": null, "at": null, "tags": null});
    let mut v: Value =
        serde_json::from_slice(&debezium_value("c", Value::Null, after, 100)).unwrap();
    v["payload"]["transaction"] =
        json!({"id": "555:24023999", "total_order": 1, "data_collection_order": 1});
    let bytes = v.to_string().into_bytes();
    let e = event(decode_debezium(Some(&key_doc(1)), &bytes, "t").unwrap()).event;
    assert_eq!(
        e.position,
        SourcePosition {
            commit: 24_023_999,
            seq: 100
        }
    );
}

#[test]
fn skips_are_typed() {
    assert_eq!(
        decode_debezium(Some(&key_doc(1)), b"", TOPIC).unwrap(),
        Decoded::Skip(Skip::Tombstone)
    );
    assert_eq!(
        decode_debezium(None, b"null", TOPIC).unwrap(),
        Decoded::Skip(Skip::Tombstone)
    );
    let tx = json!({"schema": {"type": "struct", "name": "io.debezium.connector.common.TransactionMetadataValue"},
                    "payload": {"status": "BEGIN", "id": "571:53195832", "event_count": null}});
    assert_eq!(
        decode_debezium(None, tx.to_string().as_bytes(), TOPIC).unwrap(),
        Decoded::Skip(Skip::TransactionMetadata)
    );
    let hb = json!({"schema": {"type": "struct", "name": "io.debezium.connector.common.Heartbeat"},
                    "payload": {"ts_ms": 1}});
    assert_eq!(
        decode_debezium(None, hb.to_string().as_bytes(), TOPIC).unwrap(),
        Decoded::Skip(Skip::Heartbeat)
    );
}

#[test]
fn truncate_has_an_empty_key() {
    let value = strata_value("t", Value::Null, Value::Null, Value::Null);
    let e = event(decode_debezium(None, &value, TOPIC).unwrap()).event;
    assert_eq!(e.op, Operation::Truncate);
    assert!(e.key.is_empty());
    assert_eq!(e.image(), None);
}

#[test]
fn malformed_records_name_the_record() {
    // A strata insert of id 1, its document changed by `edit`.
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&strata_value(
            "c",
            Value::Null,
            json!({"id": 1}),
            Value::Null,
        ))
        .unwrap();
        edit(&mut v);
        v.to_string().into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not JSON"),
        (b"[1,2]".to_vec(), "not a JSON object"),
        (br#"{"id": 1}"#.to_vec(), "schemas.enable"),
        (edited(&|v| v["payload"]["op"] = json!("x")), "payload.op"),
        (
            edited(&|v| {
                v["payload"]["source"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lsn");
            }),
            "lsn",
        ),
        (
            strata_value("c", Value::Null, Value::Null, Value::Null),
            "without an after image",
        ),
        (
            edited(&|v| v["payload"]["source"] = json!(5)),
            "payload.source",
        ),
    ];
    for (value, expected) in cases {
        let err = decode_debezium(Some(&key_doc(1)), &value, TOPIC)
            .unwrap_err()
            .at(3, 42);
        let text = err.to_string();
        assert!(
            text.contains("topic strata.pg.public.orders partition 3 offset 42")
                && text.contains(expected),
            "{text}"
        );
    }
    let err = decode_debezium(
        Some(b"{oops"),
        &strata_value("c", Value::Null, json!({"id": 1}), Value::Null),
        TOPIC,
    )
    .unwrap_err();
    assert!(err.reason.starts_with("key:"), "{err}");
}

fn sample_event() -> ChangeEvent {
    let value = strata_value(
        "u",
        Value::Null,
        json!({"id": 7, "note": "a", "total": "1.00", "at": null, "tags": [1]}),
        Value::Null,
    );
    event(decode_debezium(Some(&key_doc(7)), &value, TOPIC).unwrap()).event
}

#[test]
fn event_id_ignores_origin_and_delivery() {
    for v in [EventIdVersion::V1, EventIdVersion::V2] {
        ids_ignore_origin_and_delivery(v);
    }
}

fn ids_ignore_origin_and_delivery(version: EventIdVersion) {
    let a = sample_event();
    // A replica copy: same mutation, other node.
    let mut replica = a.clone();
    replica.origin = Some("node-2".into());
    assert_eq!(a.event_id(version), replica.event_id(version));
    // A resend after a restart decodes to the same event (the envelope's wall-clock
    // ts_ms differs, and is not part of the id).
    let mut v: Value = serde_json::from_slice(&strata_value(
        "u",
        Value::Null,
        json!({"id": 7, "note": "a", "total": "1.00", "at": null, "tags": [1]}),
        Value::Null,
    ))
    .unwrap();
    v["payload"]["ts_ms"] = json!(1_999_999_999_999_i64);
    let resent =
        event(decode_debezium(Some(&key_doc(7)), v.to_string().as_bytes(), TOPIC).unwrap()).event;
    assert_eq!(a.event_id(version), resent.event_id(version));
    // Column order of the image does not matter.
    let mut reordered = a.clone();
    let after = a.after.clone().unwrap();
    reordered.after = Some(
        after
            .iter()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|(n, v)| (n, v.clone()))
            .collect(),
    );
    assert_eq!(a.event_id(version), reordered.event_id(version));
}

#[test]
fn event_id_differs_for_different_mutations() {
    for v in [EventIdVersion::V1, EventIdVersion::V2] {
        ids_differ_for_different_mutations(v);
    }
}

fn ids_differ_for_different_mutations(v: EventIdVersion) {
    let a = sample_event();
    let id = a.event_id(v);
    let mut cell = a.clone();
    cell.after.as_mut().unwrap().insert("note", json!("b"));
    assert_ne!(id, cell.event_id(v));
    let mut null = a.clone();
    null.after.as_mut().unwrap().insert("note", Value::Null);
    assert_ne!(id, null.event_id(v));
    let mut unchanged = a.clone();
    unchanged.after.as_mut().unwrap().remove("note");
    unchanged.unchanged.push("note".into());
    assert_ne!(id, unchanged.event_id(v), "unchanged is not NULL");
    let mut key = a.clone();
    key.key = Row::from_iter([("id", json!(8))]);
    assert_ne!(id, key.event_id(v));
    let mut pos = a.clone();
    pos.position.seq += 1;
    assert_ne!(id, pos.event_id(v));
    let mut ts = a.clone();
    ts.commit_ts_us += 1;
    assert_ne!(id, ts.event_id(v));
    let mut op = a.clone();
    op.op = Operation::Create;
    assert_ne!(id, op.event_id(v));
    let mut table = a.clone();
    table.table.table = "orders2".into();
    assert_ne!(id, table.event_id(v));
    // A long text (its length takes two LEB128 bytes in v2).
    let mut long = a.clone();
    long.after
        .as_mut()
        .unwrap()
        .insert("note", json!("x".repeat(300)));
    let mut longer = a.clone();
    longer
        .after
        .as_mut()
        .unwrap()
        .insert("note", json!("x".repeat(301)));
    assert_ne!(long.event_id(v), longer.event_id(v));
    assert_ne!(
        a.event_id(EventIdVersion::V1),
        a.event_id(EventIdVersion::V2),
        "the versions hash differently"
    );
}

fn key_of(values: &[Value]) -> String {
    encode_key(
        &values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), v.clone()))
            .collect(),
    )
}

#[test]
fn key_encoding_sorts_like_the_values() {
    let ordered = [
        vec![Value::Null],
        vec![json!(i64::MIN)],
        vec![json!(-2)],
        vec![json!(-1)],
        vec![json!(0)],
        vec![json!(1)],
        vec![json!(10)],
        vec![json!(i64::MAX)],
    ];
    for pair in ordered.windows(2) {
        assert!(key_of(&pair[0]) < key_of(&pair[1]), "{pair:?}");
    }
    let floats = [-1e300, -1.5, -0.0, 0.5, 2.0, 1e300];
    for pair in floats.windows(2) {
        assert!(
            key_of(&[json!(pair[0])]) < key_of(&[json!(pair[1])]),
            "{pair:?}"
        );
    }
    let strings = ["", "\0", "\u{1}", "a", "a\0b", "ab", "b", "é"];
    for pair in strings.windows(2) {
        assert!(
            key_of(&[json!(pair[0])]) < key_of(&[json!(pair[1])]),
            "{pair:?}"
        );
    }
    // Composite keys: the first column decides, then the second.
    assert!(key_of(&[json!("a"), json!(2)]) < key_of(&[json!("ab"), json!(1)]));
    assert!(key_of(&[json!("a"), json!(1)]) < key_of(&[json!("a"), json!(2)]));
    assert!(key_of(&[json!(false)]) < key_of(&[json!(true)]));
}

proptest! {
    #[test]
    fn decoder_never_panics_on_bytes(key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                                     value in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_debezium(key.as_deref(), &value, TOPIC);
    }

    #[test]
    fn decoder_never_panics_on_mangled_envelopes(cut in 0usize..4000, byte in any::<u8>()) {
        let mut value = strata_value("u", Value::Null,
            json!({"id": 7, "note": "a", "total": "1.00", "at": null, "tags": [1]}), json!(["note"]));
        if !value.is_empty() {
            let at = cut % value.len();
            value[at] = byte;
            let _ = decode_debezium(Some(&key_doc(7)), &value, TOPIC);
            value.truncate(at);
            let _ = decode_debezium(Some(&key_doc(7)), &value, TOPIC);
        }
    }

    /// A decoder that knows the schema parses only the payload: whatever the bytes, it must
    /// say exactly what one that parses everything says.
    #[test]
    fn a_warm_cache_decodes_mangled_envelopes_like_a_cold_one(cut in 0usize..4000, byte in any::<u8>(),
                                                             truncate in any::<bool>()) {
        let original = strata_value("u", Value::Null,
            json!({"id": 7, "note": "a", "total": "1.00", "at": null, "tags": [1]}), json!(["note"]));
        let mut cache = SchemaCache::default();
        decode_debezium_cached(Some(&key_doc(7)), &original, TOPIC, &mut cache).unwrap();
        let mut value = original.clone();
        let at = cut % value.len();
        value[at] = byte;
        if truncate {
            value.truncate(at);
        }
        let cold = decode_debezium(Some(&key_doc(7)), &value, TOPIC);
        let warm = decode_debezium_cached(Some(&key_doc(7)), &value, TOPIC, &mut cache);
        prop_assert_eq!(format!("{cold:?}"), format!("{warm:?}"));
    }

    #[test]
    fn int_keys_sort_numerically(a in any::<i64>(), b in any::<i64>()) {
        prop_assert_eq!(a.cmp(&b), key_of(&[json!(a)]).cmp(&key_of(&[json!(b)])));
    }

    #[test]
    fn string_keys_sort_bytewise(a in ".{0,8}", b in ".{0,8}", x in any::<i32>(), y in any::<i32>()) {
        let expected = (a.as_bytes(), x).cmp(&(b.as_bytes(), y));
        prop_assert_eq!(expected, key_of(&[json!(a), json!(x)]).cmp(&key_of(&[json!(b), json!(y)])));
    }
}

#[test]
fn a_schema_cache_changes_no_result_and_follows_schema_changes() {
    let mut cache = SchemaCache::default();
    let records = [
        debezium_value("c", Value::Null, json!({"id": 1, "note": "a"}), 10),
        debezium_value(
            "u",
            json!({"id": 1, "note": "a"}),
            json!({"id": 1, "note": "b"}),
            11,
        ),
        // The table gains columns: a new schema text, new columns.
        debezium_value_with(
            debezium_numeric_fields(),
            "c",
            Value::Null,
            json!({"id": 2, "score": 1.5, "f4": 0.5, "amount": "Awk=",
                   "ratio": {"scale": 1, "value": "TQ=="}}),
            12,
        ),
        debezium_value("d", json!({"id": 1, "note": "b"}), Value::Null, 13),
        b"{\"schema\": oops".to_vec(),
        b"[1]".to_vec(),
        b"null".to_vec(),
    ];
    for (i, value) in records.iter().enumerate() {
        for key in [Some(key_doc(1)), None] {
            let plain = decode_debezium(key.as_deref(), value, TOPIC);
            let cached = decode_debezium_cached(key.as_deref(), value, TOPIC, &mut cache);
            assert_eq!(format!("{plain:?}"), format!("{cached:?}"), "record {i}");
        }
    }
    let wide =
        event(decode_debezium_cached(Some(&key_doc(2)), &records[2], TOPIC, &mut cache).unwrap());
    assert!(wide.schema.column("score").is_some());
    let narrow =
        event(decode_debezium_cached(Some(&key_doc(1)), &records[0], TOPIC, &mut cache).unwrap());
    assert!(narrow.schema.column("score").is_none());
    assert!(narrow.schema.column("id").is_some_and(|c| c.key));
}

/// Event ids are stored in every segment and compared across versions of strata (a copy
/// written by an older capture must still be recognised): the bytes each id version hashes
/// must not change.
#[test]
fn event_id_is_stable_across_versions() {
    let hex = |id: [u8; 32]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(sample_event().event_id(EventIdVersion::V1)),
        "2001d3e258b44ddeec0a48aebc1accac04c4063115e85f0e158a1587c0576252"
    );
    assert_eq!(
        hex(sample_event().event_id(EventIdVersion::V2)),
        // Also what the `id` module doc's layout gives in Python's `blake3` package.
        "e3b51f31e1937cbeca2b5b4c6a3dc82942b971488f90498d822d7de34029831e"
    );
}

/// Every column type the decoder maps (see the `schema` module doc).
fn wide_fields() -> Value {
    let f = |ty: &str, name: Option<&str>, field: &str| {
        let mut c = json!({"type": ty, "optional": field != "id", "field": field});
        if let Some(name) = name {
            c["name"] = json!(name);
        }
        c
    };
    json!([
        f("int32", None, "id"),
        f("int8", None, "i8"),
        f("int16", None, "i16"),
        f("int64", None, "i64"),
        f("float", None, "f32"),
        f("double", None, "f64"),
        f("boolean", None, "flag"),
        f("string", None, "text"),
        f("bytes", None, "blob"),
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "2"}, "field": "price"},
        f("int32", Some("io.debezium.time.Date"), "day"),
        f("int64", Some("io.debezium.time.MicroTimestamp"), "micro_ts"),
        f("int64", Some("io.debezium.time.Timestamp"), "milli_ts"),
        f("int64", Some("io.debezium.time.NanoTimestamp"), "nano_ts"),
        f("string", Some("io.debezium.time.ZonedTimestamp"), "zoned"),
        f("int64", Some("io.debezium.time.MicroTime"), "tod"),
        {"type": "array", "items": {"type": "int64", "optional": true}, "optional": true,
         "field": "tags"},
        {"type": "struct", "optional": true, "field": "extra",
         "fields": [{"type": "int32", "optional": true, "field": "a"}]},
    ])
}

/// `decode_debezium_row` and the general path (the event, then `SegmentRow::from_event`)
/// on one record, with whether the direct path took it.
fn rows_both_ways(
    key: Option<&[u8]>,
    value: &[u8],
) -> (
    Result<DecodedRow<'static>, DecodeError>,
    Result<DecodedRow<'static>, DecodeError>,
    bool,
) {
    let mut cache = SchemaCache::default();
    let direct = match envelope(key, value, TOPIC, &mut cache) {
        Ok(Envelope::Change(change)) => change
            .derived
            .types
            .as_ref()
            .ok()
            .is_some_and(|types| image::direct_row(&change, types).is_some()),
        _ => false,
    };
    let fast = owned_row(decode_debezium_row(key, value, TOPIC, &mut cache));
    let general = decode_debezium(key, value, TOPIC).and_then(|d| match d {
        Decoded::Skip(s) => Ok(DecodedRow::Skip(s)),
        Decoded::Event(d) => {
            let types = crate::schema::column_types(&d.schema)
                .map_err(|e| DecodeError::new(TOPIC, format!("table {}: {e}", d.event.table)))?;
            d.schema
                .segment_schema()
                .map_err(|e| DecodeError::new(TOPIC, format!("table {}: {e}", d.event.table)))?;
            SegmentRow::from_event(&d.event, &d.schema, &types)
                .map(|row| DecodedRow::Row {
                    row,
                    schema: d.schema.clone(),
                })
                .map_err(|e| DecodeError::new(TOPIC, format!("table {}: {e}", d.event.table)))
        }
    });
    (fast, general, direct)
}

#[test]
fn rows_decoded_directly_equal_rows_of_decoded_events() {
    let full = json!({
        "id": 7, "i8": -5, "i16": 300, "i64": -9_000_000_000_i64, "f32": 0.5, "f64": 1e300,
        "flag": true, "text": "tab\there \"quoted\" ünïcode", "blob": "AAEC", "price": "Awk=",
        "day": 20_000, "micro_ts": 1_764_064_800_000_123_i64, "milli_ts": 1_764_064_800_000_i64,
        "nano_ts": 1_764_064_800_000_123_456_i64, "zoned": "2026-11-25T10:00:00.5+01:00",
        "tod": 36_000_000_000_i64, "tags": [1, null, 3], "extra": {"a": 1}
    });
    let key = key_doc(7);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "insert",
            debezium_value_with(wide_fields(), "c", Value::Null, full.clone(), 10),
            true,
        ),
        (
            "update, some columns absent",
            debezium_value_with(
                wide_fields(),
                "u",
                Value::Null,
                json!({"id": 7, "text": null, "f64": 3, "f32": "NaN", "zoned": "infinity"}),
                11,
            ),
            true,
        ),
        (
            "delete, key-only before",
            debezium_value_with(wide_fields(), "d", json!({"id": 7}), Value::Null, 12),
            true,
        ),
        (
            "delete, no image",
            debezium_value_with(wide_fields(), "d", Value::Null, Value::Null, 13),
            true,
        ),
        (
            "a snapshot read",
            debezium_value_with(wide_fields(), "r", Value::Null, full.clone(), 14),
            true,
        ),
        (
            "placeholder",
            debezium_value_with(
                wide_fields(),
                "u",
                Value::Null,
                json!({"id": 7, "text": UNAVAILABLE_VALUE}),
                15,
            ),
            false,
        ),
        (
            "unchanged toast",
            strata_value(
                "u",
                Value::Null,
                json!({"id": 7, "note": "a", "total": "1.00", "at": null, "tags": [1]}),
                json!(["note"]),
            ),
            false,
        ),
        (
            "out of range",
            debezium_value_with(
                wide_fields(),
                "c",
                Value::Null,
                json!({"id": 7, "i8": 300}),
                16,
            ),
            false,
        ),
        (
            "undeclared column",
            debezium_value_with(
                wide_fields(),
                "c",
                Value::Null,
                json!({"id": 7, "nope": 1}),
                17,
            ),
            false,
        ),
        (
            "truncate",
            debezium_value_with(wide_fields(), "t", Value::Null, Value::Null, 18),
            false,
        ),
        (
            "variable-scale decimal",
            debezium_value_with(
                debezium_numeric_fields(),
                "c",
                Value::Null,
                json!({"id": 7, "score": 1.5, "ratio": {"scale": 1, "value": "TQ=="}}),
                19,
            ),
            false,
        ),
    ];
    for (what, value, direct) in cases {
        let (fast, general, took) = rows_both_ways(Some(&key), &value);
        assert_eq!(fast, general, "{what}");
        assert_eq!(took, direct, "{what}: direct path taken");
    }
    // The row holds converted cells: spot-check the insert.
    let value = debezium_value_with(wide_fields(), "c", Value::Null, full, 10);
    let Ok(DecodedRow::Row { row, schema }) =
        decode_debezium_row(Some(&key), &value, TOPIC, &mut SchemaCache::default())
    else {
        panic!("a row");
    };
    let cell = |name: &str| &row.cells[schema.columns.iter().position(|c| c.name == name).unwrap()];
    use crate::rows::Cell;
    assert_eq!(cell("price"), &Cell::Decimal(777));
    assert_eq!(cell("milli_ts"), &Cell::Int(1_764_064_800_000_000));
    assert_eq!(cell("nano_ts"), &Cell::Int(1_764_064_800_000_123));
    assert_eq!(cell("zoned"), &Cell::Int(1_795_597_200_500_000));
    assert_eq!(cell("blob"), &Cell::Bytes(vec![0, 1, 2]));
    assert_eq!(cell("extra"), &Cell::Text(Cow::Borrowed("{\"a\":1}")));
}

/// One column's value for the proptest below: mostly fitting, sometimes not.
fn wide_value(column: usize) -> BoxedStrategy<Option<Value>> {
    let fitting: BoxedStrategy<Value> = match column {
        1 => (-200_i64..200).prop_map(Value::from).boxed(),
        2 => any::<i32>().prop_map(Value::from).boxed(),
        3 | 11 | 13 | 15 => any::<i64>().prop_map(Value::from).boxed(),
        4 | 5 => prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            Just(json!("NaN")),
            Just(json!("-Infinity")),
        ]
        .boxed(),
        6 => any::<bool>().prop_map(Value::from).boxed(),
        7 => ".{0,12}".prop_map(Value::from).boxed(),
        8 | 9 => proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|b| {
                use base64::Engine as _;
                Value::from(base64::engine::general_purpose::STANDARD.encode(b))
            })
            .boxed(),
        10 => any::<i32>().prop_map(Value::from).boxed(),
        12 => (-1_i64 << 53..1_i64 << 53).prop_map(Value::from).boxed(),
        14 => prop_oneof![
            (0_i64..4_000_000_000_000_000).prop_map(|us| {
                Value::from(
                    chrono::DateTime::from_timestamp_micros(us)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                )
            }),
            Just(json!("infinity")),
            Just(json!("yesterday")),
        ]
        .boxed(),
        16 => proptest::collection::vec(proptest::option::of(any::<i64>()), 0..4)
            .prop_map(|v| json!(v))
            .boxed(),
        _ => (any::<i32>(), ".{0,4}")
            .prop_map(|(a, b)| json!({"a": a, "b": b}))
            .boxed(),
    };
    prop_oneof![
        20 => fitting.prop_map(Some),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
        1 => prop_oneof![
            Just(json!(UNAVAILABLE_VALUE)),
            Just(json!("x")),
            Just(json!(1.5)),
            Just(json!(true)),
            Just(json!([UNAVAILABLE_VALUE])),
            Just(json!(u64::MAX)),
        ]
        .prop_map(Some),
    ]
    .boxed()
}

proptest! {
    /// Whatever the cells, a row decoded directly is the row of the decoded event, and a
    /// record one path refuses the other refuses with the same error.
    #[test]
    fn direct_rows_match_event_rows(
        values in (1..18_usize).map(wide_value).collect::<Vec<_>>(),
        op in prop_oneof![Just("c"), Just("u"), Just("d"), Just("r")],
        key_only in any::<bool>(),
        lsn in 1..u64::MAX / 2,
    ) {
        let mut image = serde_json::Map::new();
        image.insert("id".into(), json!(7));
        let names: Vec<String> = wide_fields().as_array().unwrap().iter()
            .map(|f| f["field"].as_str().unwrap().to_owned()).collect();
        for (name, value) in names.iter().skip(1).zip(values) {
            if let Some(value) = value {
                image.insert(name.clone(), value);
            }
        }
        let image = Value::Object(image);
        let (before, after) = match (op, key_only) {
            ("d", true) => (json!({"id": 7}), Value::Null),
            ("d", false) => (image, Value::Null),
            _ => (Value::Null, image),
        };
        let value = debezium_value_with(wide_fields(), op, before, after, lsn);
        let (fast, general, _) = rows_both_ways(Some(&key_doc(7)), &value);
        prop_assert_eq!(fast, general);
    }

    /// Whatever a byte of the record becomes, the two paths agree (and neither panics).
    #[test]
    fn direct_rows_match_event_rows_on_mangled_records(cut in 0usize..8000, byte in any::<u8>(),
                                                       truncate in any::<bool>()) {
        let image = json!({
            "id": 7, "i8": -5, "i16": 300, "i64": 9, "f32": 0.5, "f64": "NaN", "flag": true,
            "text": "a \"b\"", "blob": "AAEC", "price": "Awk=", "day": 20_000, "micro_ts": 1,
            "milli_ts": 2, "nano_ts": 3, "zoned": "2026-11-25T10:00:00Z", "tod": 4,
            "tags": [1, null], "extra": {"a": 1}
        });
        let mut value = debezium_value_with(wide_fields(), "u", Value::Null, image, 10);
        let at = cut % value.len();
        value[at] = byte;
        if truncate {
            value.truncate(at);
        }
        let (fast, general, _) = rows_both_ways(Some(&key_doc(7)), &value);
        prop_assert_eq!(fast, general);
    }
}

/// The Avro records strata's capture writes (`format = "avro"`) for a JSON converter key and
/// value, and the writer schemas a consumer learns from the schema topic.
fn as_avro(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>, AvroSchemas) {
    let schemas = AvroSchemas::default();
    let encode = |document: &[u8]| {
        let document: Value = serde_json::from_slice(document).unwrap();
        let writer = crate::avro::WriterSchema::from_connect(document["schema"].clone()).unwrap();
        let mut out = Vec::new();
        writer.encode(&document["payload"], &mut out).unwrap();
        schemas.insert(writer);
        out
    };
    (encode(key), encode(value), schemas)
}

fn owned_row(
    decoded: Result<DecodedRow<'_>, DecodeError>,
) -> Result<DecodedRow<'static>, DecodeError> {
    decoded.map(|d| match d {
        DecodedRow::Row { row, schema } => DecodedRow::Row {
            row: row.into_owned(),
            schema,
        },
        DecodedRow::Skip(s) => DecodedRow::Skip(s),
        DecodedRow::MissingSchema { fingerprint } => DecodedRow::MissingSchema { fingerprint },
    })
}

/// An image with every column of `fields`, as the JSON converter writes a struct.
fn complete(image: Value, fields: &Value) -> Value {
    if image.is_null() {
        return image;
    }
    let mut out = serde_json::Map::new();
    for field in fields.as_array().unwrap() {
        let name = field["field"].as_str().unwrap();
        out.insert(name.into(), image.get(name).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// The row of a JSON record and of the same record in Avro, and whether Avro's one-pass path
/// took it.
fn json_and_avro_rows(
    key: &[u8],
    value: &[u8],
) -> (
    Result<DecodedRow<'static>, DecodeError>,
    Result<DecodedRow<'static>, DecodeError>,
    bool,
) {
    let json = owned_row(decode_debezium_row(
        Some(key),
        value,
        TOPIC,
        &mut SchemaCache::default(),
    ));
    let (key, value, schemas) = as_avro(key, value);
    let mut cache = SchemaCache::with_avro(schemas);
    let took = avro::fast_path_takes(&key, &value, &mut cache);
    let avro = owned_row(decode_debezium_row(Some(&key), &value, TOPIC, &mut cache));
    (json, avro, took)
}

#[test]
fn avro_records_decode_to_the_rows_of_their_json_records() {
    let fields = wide_fields();
    let full = json!({
        "id": 7, "i8": -5, "i16": 300, "i64": -9_000_000_000_i64, "f32": 0.5, "f64": 1e300,
        "flag": true, "text": "tab\there \"quoted\" ünïcode", "blob": "AAEC", "price": "Awk=",
        "day": 20_000, "micro_ts": 1_764_064_800_000_123_i64, "milli_ts": 1_764_064_800_000_i64,
        "nano_ts": 1_764_064_800_000_123_456_i64, "zoned": "2026-11-25T10:00:00.5+01:00",
        "tod": 36_000_000_000_i64, "tags": [1, null, 3], "extra": {"a": 1}
    });
    let wide = |op: &str, before: Value, after: Value, lsn: u64| {
        debezium_value_with(
            fields.clone(),
            op,
            complete(before, &fields),
            complete(after, &fields),
            lsn,
        )
    };
    let strata = |op: &str, before: Value, after: Value, unchanged: Value| {
        strata_value(
            op,
            complete(before, &row_fields()),
            complete(after, &row_fields()),
            unchanged,
        )
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("insert", wide("c", Value::Null, full.clone(), 10), true),
        (
            "update with NULLs and special floats",
            wide(
                "u",
                Value::Null,
                json!({"id": 7, "text": null, "f64": 3.25, "f32": "NaN", "zoned": "infinity"}),
                11,
            ),
            true,
        ),
        ("delete", wide("d", json!({"id": 7}), Value::Null, 12), true),
        (
            "delete, no image",
            wide("d", Value::Null, Value::Null, 13),
            true,
        ),
        (
            "snapshot read",
            wide("r", Value::Null, full.clone(), 14),
            true,
        ),
        (
            "strata update",
            strata(
                "u",
                Value::Null,
                json!({"id": 7, "note": "a", "total": "1.00"}),
                Value::Null,
            ),
            true,
        ),
        (
            "placeholder",
            wide(
                "u",
                Value::Null,
                json!({"id": 7, "text": UNAVAILABLE_VALUE}),
                15,
            ),
            false,
        ),
        (
            "unchanged toast",
            strata(
                "u",
                Value::Null,
                json!({"id": 7, "note": UNAVAILABLE_VALUE, "total": "1.00", "tags": [1]}),
                json!(["note"]),
            ),
            false,
        ),
        (
            "out of range",
            wide("c", Value::Null, json!({"id": 7, "i8": 300}), 16),
            false,
        ),
        ("truncate", wide("t", Value::Null, Value::Null, 18), false),
        (
            "variable-scale decimal",
            debezium_value_with(
                debezium_numeric_fields(),
                "c",
                Value::Null,
                complete(
                    json!({"id": 7, "score": 1.5, "ratio": {"scale": 1, "value": "TQ=="}}),
                    &debezium_numeric_fields(),
                ),
                19,
            ),
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, value, fast) in cases {
        let (json, avro, took) = json_and_avro_rows(&key_doc(7), &value);
        assert_eq!(avro, json, "{what}");
        if took != fast {
            wrong.push(what);
        }
    }
    assert!(
        wrong.is_empty(),
        "one-pass path taken or not, unlike expected: {wrong:?}"
    );
}

#[test]
fn avro_records_of_unknown_schemas_ask_for_them() {
    let value = strata_value(
        "c",
        Value::Null,
        complete(json!({"id": 1}), &row_fields()),
        Value::Null,
    );
    let (key, value, schemas) = as_avro(&key_doc(1), &value);
    let fingerprint = crate::avro::message_fingerprint(&value).unwrap();
    // Nothing known: the value's schema is asked for.
    let mut empty = SchemaCache::default();
    assert_eq!(
        decode_debezium_row(Some(&key), &value, TOPIC, &mut empty),
        Ok(DecodedRow::MissingSchema { fingerprint })
    );
    // Learnt later, through the shared set: decoded.
    let shared = AvroSchemas::default();
    let mut cache = SchemaCache::with_avro(shared.clone());
    assert!(matches!(
        decode_debezium_row(Some(&key), &value, TOPIC, &mut cache),
        Ok(DecodedRow::MissingSchema { .. })
    ));
    let (_, _, again) = as_avro(
        &key_doc(1),
        &strata_value(
            "c",
            Value::Null,
            complete(json!({"id": 1}), &row_fields()),
            Value::Null,
        ),
    );
    assert_eq!(again.len(), schemas.len());
    let writer = |doc: Vec<u8>| {
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        crate::avro::WriterSchema::from_connect(doc["schema"].clone()).unwrap()
    };
    assert!(shared.insert(writer(key_doc(1))));
    assert!(shared.insert(writer(strata_value(
        "c",
        Value::Null,
        Value::Null,
        Value::Null
    ))));
    assert!(matches!(
        decode_debezium_row(Some(&key), &value, TOPIC, &mut cache),
        Ok(DecodedRow::Row { .. })
    ));
    // The event path says which schema it lacks.
    let e =
        decode_debezium_cached(Some(&key), &value, TOPIC, &mut SchemaCache::default()).unwrap_err();
    let key_fingerprint = crate::avro::message_fingerprint(&key).unwrap();
    assert!(
        e.reason.contains(&format!(
            "key: Avro writer schema {key_fingerprint:016x} is not known"
        )),
        "{e}"
    );
}

proptest! {
    /// Whatever the cells, the Avro record gives the JSON record's row, or the same error.
    #[test]
    fn avro_rows_match_json_rows(
        values in (1..18_usize).map(wide_value).collect::<Vec<_>>(),
        op in prop_oneof![Just("c"), Just("u"), Just("d"), Just("r")],
        lsn in 1..u64::MAX / 2,
    ) {
        let fields = wide_fields();
        let mut image = serde_json::Map::new();
        image.insert("id".into(), json!(7));
        let names: Vec<String> = fields.as_array().unwrap().iter()
            .map(|f| f["field"].as_str().unwrap().to_owned()).collect();
        for (i, (name, value)) in names.iter().skip(1).zip(values).enumerate() {
            let value = value.unwrap_or(Value::Null);
            // The JSON converter writes a float column's value as a float (`2.0`, not `2`),
            // of the column's width.
            let value = match (i + 1, value.as_f64()) {
                (4, Some(f)) if value.is_number() => json!(crate::avro::widen_f32(f as f32)),
                (5, Some(f)) if value.is_number() => json!(f),
                // A struct has the members its schema declares.
                (17, _) if value.is_object() => json!({"a": value["a"]}),
                _ => value,
            };
            image.insert(name.clone(), value);
        }
        let image = complete(Value::Object(image), &fields);
        let (before, after) = if op == "d" { (image, Value::Null) } else { (Value::Null, image) };
        let value = debezium_value_with(fields, op, before, after, lsn);
        // Values that have no Avro form of their column type are not Avro records.
        let document: Value = serde_json::from_slice(&value).unwrap();
        let writer = crate::avro::WriterSchema::from_connect(document["schema"].clone()).unwrap();
        prop_assume!(writer.encode(&document["payload"], &mut Vec::new()).is_ok());
        let (json, avro, _) = json_and_avro_rows(&key_doc(7), &value);
        prop_assert_eq!(avro, json);
    }

    /// Whatever a byte of an Avro record becomes, decoding never panics, and a record the
    /// JSON path (on the converted documents) reads gives the same row.
    #[test]
    fn mangled_avro_records_decode_as_their_json_documents(
        cut in 0usize..400, byte in any::<u8>(), truncate in any::<bool>()
    ) {
        let value = strata_value(
            "u",
            Value::Null,
            complete(json!({"id": 7, "note": "a", "total": "1.00", "tags": [1, null]}), &row_fields()),
            Value::Null,
        );
        let (key, mut value, schemas) = as_avro(&key_doc(7), &value);
        let at = crate::avro::HEADER_LEN + cut % (value.len() - crate::avro::HEADER_LEN);
        value[at] = byte;
        if truncate {
            value.truncate(at);
        }
        let mut cache = SchemaCache::with_avro(schemas);
        let decoded = owned_row(decode_debezium_row(Some(&key), &value, TOPIC, &mut cache));
        if let Ok((Some(key), value)) = avro::json_documents(Some(&key), &value, TOPIC, &mut cache)
            && let Ok(row) = owned_row(decode_debezium_row(Some(&key), &value, TOPIC, &mut cache))
        {
            prop_assert_eq!(decoded, Ok(row));
        }
    }
}
