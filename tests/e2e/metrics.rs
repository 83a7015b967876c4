//! `strata run` serves Prometheus metrics (`[metrics]`) that agree with what it did: the
//! capture's and the compactor's counters match the rows committed to PostgreSQL and the rows the
//! catalog holds, and the compactor's lag drops to zero once it has caught up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use strata_catalog::{Catalog, CatalogConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{PgCapture, Strata, pg_connect, unique};

/// Rows inserted, then rows of them updated.
const INSERTS: u64 = 300;
const UPDATES: u64 = 40;

/// The samples of the text exposition at `addr`'s `/metrics`, by metric name (labels ignored,
/// values of one name summed). Counters are named `<name>_total`, as OpenMetrics has it.
async fn scrape(addr: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("status: {head}"));
    }
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("bad sample line {line:?}"))?;
        let name = name.split('{').next().unwrap_or(name);
        let value: f64 = value
            .parse()
            .map_err(|e| format!("bad value in {line:?}: {e}"))?;
        *samples.entry(name.to_owned()).or_default() += value;
    }
    Ok(samples)
}

/// Scrapes until `done` holds for the samples, failing with the last samples and the log.
async fn scrape_until(
    addr: &str,
    strata: &Strata,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = scrape(addr).await;
        if let Ok(samples) = &last
            && done(samples)
        {
            return samples.clone();
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}; last scrape: {last:?}\nstrata log:\n{}",
            strata.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_capture_and_the_compactor_did() {
    let capture = PgCapture::new("metrics");
    let table = capture.table("m");
    let client = pg_connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text NOT NULL)"
        ))
        .await
        .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let listen = format!("\"{addr}\"");
    let topics = format!("['^strata\\.{}\\..*']", capture.source);
    let group = unique("e2e-metrics");
    let env = capture.env(
        &["m"],
        &[
            ("STRATA_RUN__PARTS", r#"["capture", "compactor"]"#),
            ("STRATA_STORAGE__URL", storage.path().to_str().unwrap()),
            ("STRATA_COMPACTOR__TOPICS", &topics),
            ("STRATA_COMPACTOR__GROUP_ID", &group),
            ("STRATA_COMPACTOR__FLUSH_INTERVAL", "\"250ms\""),
            ("STRATA_METRICS__ENABLED", "true"),
            ("STRATA_METRICS__LISTEN", &listen),
        ],
    );
    let mut strata = capture.spawn(&["run"], &env);
    strata
        .wait_for_log("streaming changes", Duration::from_secs(120))
        .await;

    client
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT i, 'n' || i FROM generate_series(1, {INSERTS}) i; \
             UPDATE {table} SET note = 'changed' WHERE id <= {UPDATES}"
        ))
        .await
        .unwrap();
    let changes = INSERTS + UPDATES;

    // Everything captured and committed, and the compactor caught up.
    let samples = scrape_until(&addr, &strata, "every change committed and no lag", |s| {
        s.get("strata_compactor_rows_written_total").copied() == Some(changes as f64)
            && s.get("strata_compactor_lag_records").copied() == Some(0.0)
    })
    .await;
    let value = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name} in {samples:?}"))
    };
    assert_eq!(value("strata_events_captured_total"), changes as f64);
    assert_eq!(value("strata_compactor_events_total"), changes as f64);
    assert_eq!(value("strata_compactor_duplicates_dropped_total"), 0.0);
    assert_eq!(value("strata_compactor_records_quarantined_total"), 0.0);
    assert!(value("strata_catalog_commits_total") >= 1.0);
    assert!(value("strata_compactor_segments_written_total") >= 1.0);
    assert!(value("strata_compactor_bytes_written_total") > 0.0);

    // The counters agree with what the catalog holds.
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(storage.path()).unwrap());
    let catalog = Catalog::open(store, Path::default(), CatalogConfig::default())
        .await
        .unwrap();
    let state = catalog.state();
    let tables: Vec<_> = state.tables().cloned().collect();
    let entries: Vec<_> = tables.iter().flat_map(|t| state.segments(t)).collect();
    let rows: u64 = entries.iter().map(|e| e.segment.rows).sum();
    let bytes: u64 = entries.iter().map(|e| e.segment.bytes).sum();
    assert_eq!(rows, changes, "{tables:?}");
    assert_eq!(
        value("strata_compactor_segments_written_total"),
        entries.len() as f64
    );
    assert_eq!(value("strata_compactor_bytes_written_total"), bytes as f64);

    strata.terminate();
    assert!(strata.wait_exit(Duration::from_secs(30)).await.success());
}
