//! Coalescing many small change segments into one, and what it buys a reader: the state
//! as of t over N small segments, one coalescer round, the same query over the coalesced
//! segment; DuckDB rewriting the same files into one sorted zstd Parquet file (`COPY … ORDER
//! BY`) beside it.
//!
//! `cargo bench -p strata-query --bench coalesce`. Sizes: `STRATA_BENCH_SEGMENTS` (2000),
//! `STRATA_BENCH_SEGMENT_ROWS` (500), `STRATA_BENCH_KEYS` (100000). DuckDB comes from PyPI
//! into `~/.cache/strata/bench/venv`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, AsArray, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use serde_json::json;
use strata_catalog::{Catalog, CatalogConfig, Row, Segment, TableSchema, encode_key};
use strata_query::coalesce::{CoalesceConfig, Coalescer};
use strata_query::{StrataContext, testing};

const T0: i64 = 1_795_600_800_000_000;
const MIB: f64 = 1024.0 * 1024.0;

use common::{env, schema};

/// Segment `s`: `rows` changes of pseudo-random keys, one transaction per 10 changes, one
/// millisecond per segment; the first changes of a key insert it, 5% of the others delete.
/// Sorted by (`_key`, `_commit_pos`, `_seq`) like a compactor segment; with its catalog entry.
fn segment(schema: &TableSchema, s: usize, rows: usize, keys: usize) -> (RecordBatch, Segment) {
    let first = s * rows;
    let key = |i: usize| ((first + i).wrapping_mul(2_654_435_761) % keys) as i64;
    let op = |i: usize| {
        if first + i < keys {
            "c"
        } else if (first + i).is_multiple_of(20) {
            "d"
        } else {
            "u"
        }
    };
    let seq = |i: usize| (first + i) as u64;
    let pos = |i: usize| ((first + i) / 10 * 10 + 9) as u64;
    let ts = T0 + s as i64 * 1000;
    let mut ids = Vec::with_capacity(rows);
    for i in 0..rows {
        let mut id = [0_u8; 32];
        id[..8].copy_from_slice(&seq(i).to_le_bytes());
        ids.push(id);
    }
    let encoded: Vec<String> = (0..rows)
        .map(|i| encode_key(&Row::from_iter([("id", json!(key(i)))])))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..rows).map(op))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..rows).map(|_| ts)).with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values((0..rows).map(pos))),
        Arc::new(UInt64Array::from_iter_values((0..rows).map(seq))),
        Arc::new(StringArray::from_iter(
            (0..rows).map(|i| Some(format!("tx{}", pos(i)))),
        )),
        Arc::new(FixedSizeBinaryArray::try_from_iter(ids.into_iter()).unwrap()),
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, false)),
            OffsetBuffer::new_zeroed(rows),
            Arc::new(StringArray::from(Vec::<&str>::new())),
            None,
        )),
        Arc::new(StringArray::from_iter_values(encoded.iter())),
        Arc::new(Int64Array::from_iter_values((0..rows).map(key))),
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|i| (seq(i) % 1000) as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("owner-{}", key(i) % 5000)),
        )),
    ];
    let batch = RecordBatch::try_new(schema.segment_schema().unwrap(), columns).unwrap();
    let sort: Vec<SortColumn> = ["_key", "_commit_pos", "_seq"]
        .iter()
        .map(|name| SortColumn {
            values: Arc::clone(batch.column(batch.schema().index_of(name).unwrap())),
            options: None,
        })
        .collect();
    let batch = take_record_batch(&batch, &lexsort_to_indices(&sort, None).unwrap()).unwrap();
    let keys_sorted = batch
        .column(batch.schema().index_of("_key").unwrap())
        .as_string::<i32>();
    let entry = Segment {
        table: schema.table.clone(),
        path: testing::segment_path(&schema.table),
        rows: rows as u64,
        bytes: 0,
        min_key: keys_sorted.value(0).to_owned(),
        max_key: keys_sorted.value(rows - 1).to_owned(),
        min_commit_ts: ts,
        max_commit_ts: ts,
        min_position: format!("{:020}/{:020}", pos(0), seq(0)),
        max_position: format!("{:020}/{:020}", pos(rows - 1), seq(rows - 1)),
        content_version: None,
    };
    (batch, entry)
}

/// DuckDB's rewrite of the files listed in argv[1] into argv[2] (after
/// `common::PYTHON_PRELUDE`).
const DUCKDB: &str = r#"
files, out = json.load(open(sys.argv[1])), sys.argv[2]
con = duckdb.connect()
start = time.perf_counter()
con.execute(f"""COPY (SELECT * FROM read_parquet({files!r}) ORDER BY _key, _commit_pos, _seq)
  TO '{out}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 131072)""")
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rss_kb": peak_kb()}))
"#;

/// DuckDB's rewrite of `files` into one sorted zstd file: (seconds, peak RSS kB).
fn duckdb_rewrite(dir: &FsPath, files: &[PathBuf]) -> Option<(f64, u64)> {
    let list = dir.join("files.json");
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(&list, serde_json::to_vec(&names).ok()?).ok()?;
    let out = dir.join("duckdb-rewrite.parquet");
    let v = common::run_duckdb(dir, DUCKDB, &[list.as_os_str(), out.as_os_str()])?;
    Some((v["seconds"].as_f64()?, v["rss_kb"].as_u64()?))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let segments = env("STRATA_BENCH_SEGMENTS", 2000);
    let rows = env("STRATA_BENCH_SEGMENT_ROWS", 500);
    let keys = env("STRATA_BENCH_KEYS", 100_000);
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
    let mut entries = Vec::with_capacity(segments);
    for s in 0..segments {
        let (batch, mut entry) = segment(&schema, s, rows, keys);
        let bytes = testing::encode_batch(&schema.table, &batch, testing::ROW_GROUP_ROWS).unwrap();
        entry.bytes = bytes.len() as u64;
        testing::put_segment(&store, catalog.root(), &entry, bytes)
            .await
            .unwrap();
        entries.push(entry);
    }
    let files: Vec<PathBuf> = entries
        .iter()
        .map(|e| dir.path().join("warehouse").join(&e.path))
        .collect();
    let source_bytes: u64 = entries.iter().map(|e| e.bytes).sum();
    testing::commit_segments(&catalog, &schema, entries)
        .await
        .unwrap();
    let total = segments * rows;
    eprintln!(
        "generated {segments} segments of {rows} change rows ({total} rows, {keys} keys, {:.1} MiB \
         of Parquet) in {:.1}s",
        source_bytes as f64 / MIB,
        started.elapsed().as_secs_f64()
    );

    let t = T0 + segments as i64 * 1000;
    let strata = StrataContext::new(Arc::clone(&catalog), Arc::clone(&store)).unwrap();
    let (before_secs, before) = common::as_of_count_sum(&strata, t, 3).await;

    // The defaults, but segments count as settled at once (the bench's are all committed).
    let config = CoalesceConfig {
        settle: std::time::Duration::ZERO,
        ..CoalesceConfig::default()
    };
    let coalescer =
        Coalescer::new(Arc::clone(&catalog), Arc::clone(&store), config.clone()).unwrap();
    common::reset_peak_rss();
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        if coalescer.round().await.unwrap().is_empty() {
            break;
        }
    }
    let coalesce_secs = start.elapsed().as_secs_f64();
    let coalesce_rss = common::peak_rss_kb();
    let state = catalog.state();
    let after_segments = state.segments(&schema.table).len();
    let after_bytes: u64 = state
        .segments(&schema.table)
        .iter()
        .map(|e| e.segment.bytes)
        .sum();
    let (after_secs, after) = common::as_of_count_sum(&strata, t, 3).await;
    assert_eq!(before, after, "coalescing changed the state");

    println!(
        "{segments} segments x {rows} change rows ({total} rows, {:.1} MiB Parquet) -> {after_segments} \
         segment(s) ({:.1} MiB) in {} round(s); coalesce settings: small_bytes={} target_bytes={} \
         max_rows={} min_segments={} zstd_level={}",
        source_bytes as f64 / MIB,
        after_bytes as f64 / MIB,
        rounds - 1,
        config.small_bytes,
        config.target_bytes,
        config.max_rows,
        config.min_segments,
        config.zstd_level
    );
    println!();
    println!("| step | files read | seconds | rows/s | MB/s (Parquet in) | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let line = |step: &str, files: usize, secs: f64, rss_kb: Option<u64>| {
        println!(
            "| {step} | {files} | {secs:.3} | {:.0} | {:.1} | {} |",
            total as f64 / secs,
            source_bytes as f64 / MIB / secs,
            rss_kb.map_or("-".to_owned(), |kb| (kb / 1024).to_string())
        );
    };
    line(
        "strata as_of (count, sum) over the small segments",
        segments,
        before_secs,
        None,
    );
    line(
        "strata coalesce (read, sort, drop copies, write, commit)",
        segments,
        coalesce_secs,
        Some(coalesce_rss),
    );
    let duck = duckdb_rewrite(dir.path(), &files);
    if let Some((secs, rss)) = duck {
        line(
            "DuckDB COPY (read_parquet ORDER BY _key, _commit_pos, _seq) TO zstd Parquet",
            segments,
            secs,
            Some(rss),
        );
    }
    line(
        "strata as_of (count, sum) over the coalesced segment(s)",
        after_segments,
        after_secs,
        None,
    );
    println!();
    println!(
        "as_of after / before coalescing: {:.2}x (result count={} sum={} both times)",
        after_secs / before_secs,
        after.0,
        after.1
    );
    match duck {
        Some((secs, _)) => println!("coalesce vs DuckDB rewrite: {:.2}x", coalesce_secs / secs),
        None => println!("coalesce vs DuckDB rewrite: n/a (DuckDB could not run)"),
    }
}
