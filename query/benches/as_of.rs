//! `SELECT count(*), sum(balance) FROM as_of('bench.accounts', T)` over 10M change rows
//! (1M keys x 10 versions, one sorted zstd segment per version, written like the compactor
//! writes them), in strata vs DuckDB's window query over the same Parquet files.
//!
//! `cargo bench -p strata-query --bench as_of`. Sizes: `STRATA_BENCH_KEYS` (1000000),
//! `STRATA_BENCH_VERSIONS` (10). DuckDB comes from PyPI into `~/.cache/strata/bench/venv`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use serde_json::json;
use strata_catalog::{Catalog, CatalogConfig, Row, Segment, TableSchema, encode_key};
use strata_query::{StrataContext, testing};

const T0: i64 = 1_795_600_800_000_000;
const SECOND: i64 = 1_000_000;

use common::{env, schema};

/// Version `v` of every key: inserts at 0, then updates; version 9 deletes every 10th key.
fn version_batch(schema: &TableSchema, keys: usize, v: usize) -> RecordBatch {
    let n = keys;
    let op = |i: usize| match v {
        0 => "c",
        9 if i.is_multiple_of(10) => "d",
        _ => "u",
    };
    let ts = T0 + (v as i64 + 1) * SECOND;
    let mut ids = Vec::with_capacity(n * 32);
    for i in 0..n {
        let mut id = [0_u8; 32];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        id[8..16].copy_from_slice(&(v as u64).to_le_bytes());
        ids.push(id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..n).map(op))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|_| ts)).with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values((0..n).map(|_| v as u64 + 1))),
        Arc::new(UInt64Array::from_iter_values(
            (0..n).map(|i| (v * n + i) as u64),
        )),
        Arc::new(StringArray::from_iter(
            (0..n).map(|_| Some(format!("tx{v}"))),
        )),
        Arc::new(FixedSizeBinaryArray::try_from_iter(ids.into_iter()).unwrap()),
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, false)),
            OffsetBuffer::new_zeroed(n),
            Arc::new(StringArray::from(Vec::<&str>::new())),
            None,
        )),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| encode_key(&Row::from_iter([("id", json!(i as i64))]))),
        )),
        Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64))),
        Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| (i * 7 + v * 13) as i64 % 1000),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("owner-{}", i % 5000)),
        )),
    ];
    RecordBatch::try_new(schema.segment_schema().unwrap(), columns).unwrap()
}

/// DuckDB's window query over the same files (after `common::PYTHON_PRELUDE`).
const DUCKDB: &str = r#"
root, t_us = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
q = f"""SELECT count(*), sum(balance) FROM (
  SELECT *, row_number() OVER (PARTITION BY _key ORDER BY _commit_pos DESC, _seq DESC) rn
  FROM read_parquet('{root}/**/*.parquet') WHERE _commit_ts <= to_timestamp({t_us} / 1e6))
WHERE rn = 1 AND _op <> 'd'"""
best, result = None, None
for _ in range(4):
    start = time.perf_counter()
    result = con.execute(q).fetchone()
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"seconds": best, "rows": result[0], "sum": int(result[1] or 0),
                  "rss_kb": peak_kb()}))
"#;

fn duckdb(root: &FsPath, t: i64) -> Option<serde_json::Value> {
    let warehouse = root.join("warehouse");
    let t = t.to_string();
    common::run_duckdb(root, DUCKDB, &[warehouse.as_os_str(), t.as_ref()])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let keys = env("STRATA_BENCH_KEYS", 1_000_000);
    let versions = env("STRATA_BENCH_VERSIONS", 10);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let catalog = Arc::new(
        Catalog::open(
            Arc::clone(&store),
            Path::from("warehouse"),
            CatalogConfig::default(),
        )
        .await
        .unwrap(),
    );
    let schema = schema();

    let started = Instant::now();
    let mut segments: Vec<Segment> = Vec::new();
    for v in 0..versions {
        let batch = version_batch(&schema, keys, v);
        let bytes = testing::encode_batch(&schema.table, &batch, testing::ROW_GROUP_ROWS).unwrap();
        let ts = T0 + (v as i64 + 1) * SECOND;
        let segment = Segment {
            table: schema.table.clone(),
            path: testing::segment_path(&schema.table),
            rows: keys as u64,
            bytes: bytes.len() as u64,
            min_key: encode_key(&Row::from_iter([("id", json!(0))])),
            max_key: encode_key(&Row::from_iter([("id", json!(keys as i64 - 1))])),
            min_commit_ts: ts,
            max_commit_ts: ts,
            min_position: format!("{:020}/{:020}", v + 1, v * keys),
            max_position: format!("{:020}/{:020}", v + 1, (v + 1) * keys - 1),
            content_version: None,
        };
        testing::put_segment(&store, catalog.root(), &segment, bytes)
            .await
            .unwrap();
        segments.push(segment);
    }
    testing::commit_segments(&catalog, &schema, segments)
        .await
        .unwrap();
    let bytes: u64 = catalog
        .state()
        .segments(&schema.table)
        .iter()
        .map(|e| e.segment.bytes)
        .sum();
    eprintln!(
        "generated {} change rows ({} keys x {versions} versions, {:.1} MiB of Parquet) in {:.1}s",
        keys * versions,
        keys,
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    // All versions but the last: the deletes of version 9 are past T when versions = 10.
    let t = T0 + (versions as i64) * SECOND - SECOND / 2;
    let strata = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    common::reset_peak_rss();
    let (best, result) = common::as_of_count_sum(&strata, t, 4).await;
    let strata_rss = common::peak_rss_kb();
    let rows = keys * versions;

    println!(
        "{:<8} {:>12} {:>10} {:>14} {:>12}  result",
        "engine", "change rows", "seconds", "rows/s", "peak RSS"
    );
    let line = |engine: &str, secs: f64, rss_kb: u64, result: String| {
        println!(
            "{engine:<8} {rows:>12} {secs:>10.3} {:>14.0} {:>9} MiB  {result}",
            rows as f64 / secs,
            rss_kb / 1024
        );
    };
    line(
        "strata",
        best,
        strata_rss,
        format!("count={} sum={}", result.0, result.1),
    );
    match duckdb(dir.path(), t) {
        Some(d) => {
            let secs = d["seconds"].as_f64().unwrap_or(f64::NAN);
            line(
                "duckdb",
                secs,
                d["rss_kb"].as_u64().unwrap_or(0),
                format!("count={} sum={}", d["rows"], d["sum"]),
            );
            if d["rows"].as_i64() != Some(result.0) || d["sum"].as_i64() != Some(result.1) {
                println!("RESULTS DIFFER");
            }
            println!("AS OF vs DuckDB: {:.2}x", best / secs);
        }
        None => println!("AS OF vs DuckDB: n/a (DuckDB could not run)"),
    }
}
