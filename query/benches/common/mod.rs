//! What the query benches share: peak RSS of this process, and DuckDB (PyPI) in a venv under
//! `~/.cache/strata/bench/venv` for the peer runs.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use strata_catalog::{ColumnSchema, ColumnType, ConnectType, TableId, TableSchema};
use strata_query::StrataContext;

/// A size from the environment, or `default`.
pub(crate) fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benches' table: `bench.bench.accounts` (`id` int8 key, `balance` int8, `owner` text).
pub(crate) fn schema() -> TableSchema {
    let column = |name: &str, connect, key: bool| ColumnSchema {
        name: name.into(),
        column_type: ColumnType::plain(connect),
        optional: !key,
        key,
    };
    TableSchema {
        table: TableId::new("bench", "bench", "accounts"),
        event_id_version: strata_catalog::EventIdVersion::CURRENT,
        columns: vec![
            column("id", ConnectType::Int64, true),
            column("balance", ConnectType::Int64, false),
            column("owner", ConnectType::String, false),
        ],
    }
}

/// `SELECT count(*), sum(balance) FROM as_of('bench.accounts', t)`, `runs` times: the best
/// time in seconds and the (count, sum) it returned.
pub(crate) async fn as_of_count_sum(
    strata: &StrataContext,
    t: i64,
    runs: usize,
) -> (f64, (i64, i64)) {
    let sql = format!("SELECT count(*), sum(balance) FROM as_of('bench.accounts', {t})");
    let mut best = f64::MAX;
    let mut result = (0, 0);
    for _ in 0..runs {
        let start = std::time::Instant::now();
        let batches = strata.query(&sql).await.unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        let b = &batches[0];
        result = (
            b.column(0).as_primitive::<Int64Type>().value(0),
            b.column(1).as_primitive::<Int64Type>().value(0),
        );
    }
    (best, result)
}

/// This process's peak RSS in kB (`VmHWM`).
pub(crate) fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts the peak RSS over from the current RSS.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The head of every DuckDB script: imports and `peak_kb()`, the script's own peak RSS.
pub(crate) const PYTHON_PRELUDE: &str = r#"
import json, sys, time
import duckdb
def peak_kb():
    # VmHWM: this process's own peak. (getrusage's ru_maxrss would include the bench's peak
    # before the fork + exec that started this script.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
"#;

/// Runs `script` (after [`PYTHON_PRELUDE`]) with `args` in the venv, installing DuckDB there
/// the first time; its stdout as JSON. `None` (said on stderr) when it cannot run.
pub(crate) fn run_duckdb(
    dir: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Option<serde_json::Value> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/strata/bench/venv");
    let python = venv.join("bin/python");
    let run = |program: &Path, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !python.exists() && !run(Path::new("python3"), &["-m", "venv", venv.to_str()?]) {
        return None;
    }
    if !run(&python, &["-c", "import duckdb"])
        && !run(&venv.join("bin/pip"), &["install", "-q", "duckdb"])
    {
        return None;
    }
    let path = dir.join("duckdb_script.py");
    std::fs::write(&path, format!("{PYTHON_PRELUDE}{script}")).ok()?;
    let out = std::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
