//! Fixtures shared by the integration tests: service addresses and unique names.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `STRATA_PG_URL`, the dev stack's PostgreSQL; panics when it is not set.
pub(crate) fn pg_url() -> String {
    std::env::var("STRATA_PG_URL").unwrap_or_else(|_| {
        panic!(
            "STRATA_PG_URL is not set: start PostgreSQL with `eval \"$(dev/stack up)\"` \
             (or `eval \"$(dev/stack up --only postgres)\"`)"
        )
    })
}

/// A name no other test (in this or a concurrent run) uses: `prefix_<pid>_<n>_<time>`, lower
/// case, short enough for a replication slot (63 bytes).
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    format!("{prefix}_{}_{n}_{micros}", std::process::id())
}

/// An ordinary SQL connection to the dev stack's PostgreSQL.
pub(crate) async fn pg_client() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("PostgreSQL connection ended: {e}");
        }
    });
    client
}
