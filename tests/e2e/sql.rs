//! `strata sql` over a catalog and change segments written into a temp directory.

use std::process::{Command, Output};

use serde_json::{Value, json};
use strata_catalog::{
    ChangeEvent, ColumnSchema, ColumnType, ConnectType, Operation, Row, SourcePosition, TableId,
    TableSchema,
};
use strata_query::testing;

/// 2026-11-25T10:00:00Z in µs.
const T0: i64 = 1_795_600_800_000_000;

fn orders() -> TableId {
    TableId::new("pg-main", "public", "orders")
}

fn change(op: Operation, id: i32, status: &str, unchanged: &[&str], second: i64) -> ChangeEvent {
    let key: Row = [("id", json!(id))].into_iter().collect();
    let mut image = key.clone();
    if !unchanged.contains(&"status") {
        image.insert("status", json!(status));
    }
    image.insert("amount", json!(f64::from(id) * 1.5));
    let (before, after) = match op {
        Operation::Delete => (Some(image), None),
        _ => (None, Some(image)),
    };
    ChangeEvent {
        table: orders(),
        op,
        key,
        before,
        after,
        unchanged: unchanged.iter().map(|s| (*s).to_owned()).collect(),
        commit_ts_us: T0 + second * 1_000_000,
        position: SourcePosition {
            commit: second as u64 * 100,
            seq: second as u64 * 100 + id as u64,
        },
        tx_id: Some(format!("{second}")),
        origin: None,
    }
}

/// Two segments under `dir` (the storage root): inserts at +1 s, changes at +2 s and +3 s.
fn write_history(dir: &std::path::Path) {
    let schema = TableSchema {
        table: orders(),
        event_id_version: strata_catalog::EventIdVersion::CURRENT,
        columns: vec![
            column("id", ConnectType::Int32, true),
            column("status", ConnectType::String, false),
            column("amount", ConnectType::Float64, false),
        ],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (store, catalog) = crate::support::open_local(dir).await;
        let first = [
            change(Operation::Create, 1, "new", &[], 1),
            change(Operation::Create, 2, "new", &[], 1),
            change(Operation::Create, 3, "new", &[], 1),
        ];
        testing::add_segment(&catalog, &store, &schema, &first)
            .await
            .unwrap();
        let second = [
            change(Operation::Update, 1, "paid", &[], 2),
            change(Operation::Delete, 2, "", &[], 2),
            change(Operation::Update, 3, "", &["status"], 3),
        ];
        testing::add_segment(&catalog, &store, &schema, &second)
            .await
            .unwrap();
    });
}

fn column(name: &str, connect: ConnectType, key: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        column_type: ColumnType::plain(connect),
        optional: !key,
        key,
    }
}

fn strata_sql(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("sql").args(args).current_dir(dir);
    for (var, _) in std::env::vars() {
        if var.starts_with("STRATA_") || var == "RUST_LOG" {
            cmd.env_remove(var);
        }
    }
    cmd.env("STRATA_STORAGE__URL", dir.to_str().unwrap());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sql_answers_as_of_and_changes_in_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path());

    let out = strata_sql(
        dir.path(),
        &[
            "SELECT * FROM as_of('public.orders', TIMESTAMP '2026-11-25 10:00:02Z') ORDER BY id",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "id,status,amount\n1,paid,1.5\n3,new,4.5\n"
    );

    // Current state: 3's status was not written at +3 s and keeps its value.
    let out = strata_sql(
        dir.path(),
        &[
            "SELECT id, status FROM public.orders ORDER BY id",
            "-f",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "status": "paid"}),
            json!({"id": 3, "status": "new"})
        ]
    );

    let out = strata_sql(
        dir.path(),
        &[
            "SELECT _op, id FROM changes('public.orders', TIMESTAMP '2026-11-25 10:00:01Z', TIMESTAMP '2026-11-25 10:00:03Z') ORDER BY _commit_pos, _seq",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "_op,id\nu,1\nd,2\nu,3\n");

    let out = strata_sql(dir.path(), &["SELECT count(*) AS n FROM public.orders"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "+---+\n| n |\n+---+\n| 2 |\n+---+\n");
}

#[test]
fn sql_names_an_unknown_table_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path());
    let out = strata_sql(dir.path(), &["SELECT * FROM as_of('public.nope', now())"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown table `public.nope`") && stderr.contains("public.orders"),
        "{stderr}"
    );
}
