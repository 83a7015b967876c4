//! Snapshots: a table's full state at one instant, folded from its history so that reading
//! a point in time never replays unbounded history.
//!
//! ```text
//!  every `interval`:  for each table with >= `min_changes` change rows since its newest snapshot
//!     as_of = watermark - 1µs          (every change with commit time <= as_of is committed)
//!     runs  = newest complete snapshot <= as_of  +  the changes after it up to as_of
//!     fold  = merge-on-read (crate::merge), one full row per live key, in key order
//!     write   <root>/<source>/<ns>/<table>/snapshots/<version>/<uuid>-<part>.parquet
//!     commit  AddSnapshot { as_of_ts, paths, rows, bytes, built_from_version = version }
//! ```
//!
//! A snapshot file has the change-segment schema, so the reader reads it like a segment: each
//! row is the last change that wrote its key, as a full image (`_op` = `r`, no unchanged
//! columns), with that change's commit time, position and event id. The merge orders a
//! snapshot row before the later changes of its key by position, exactly as it would order
//! the change it stands for.
//!
//! **Completeness.** A snapshot holds every change with commit time <= `as_of_ts` that the
//! catalog had at `built_from_version`. A change committed to the catalog later with a commit
//! time <= `as_of_ts` (a lagging partition, a second compactor) is not in it; the reader
//! therefore uses a snapshot only while no segment added after `built_from_version` has
//! `min_commit_ts <= as_of_ts` ([`is_complete`]); otherwise it falls back to an older one, or
//! to the whole history. Snapshots are never wrong, at worst unused. Coalescing small
//! segments ([`crate::coalesce`]) keeps them usable: a coalesced segment carries the version
//! of the changes it holds, and never mixes changes from both sides of a snapshot's
//! `built_from_version`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use strata_catalog::schema::{COMMIT_TS_COLUMN, TX_ID_COLUMN, system_fields};
use strata_catalog::{
    Action, Catalog, CatalogState, CommitInfo, QuarantineEntry, QuarantinedObject, Snapshot,
    TableId, encode_segment,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::merge::{MERGE_SYSTEM_COLUMNS, merge_snapshot};
use crate::provider::{Shared, read_files, read_runs, segment_files, table_fields, table_schema};
use crate::read::{FileRef, ReadSpec, object_path};

/// When and how snapshots are built (`[snapshots]` in strata's configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Build snapshots at all. Default `true`.
    pub enabled: bool,
    /// How often tables are looked at. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A table gets a new snapshot once this many change rows were committed after its newest
    /// snapshot. Default 1 000 000.
    pub min_changes: u64,
    /// Rows per Parquet file of a snapshot. Default 4 194 304.
    pub part_rows: usize,
    /// Rows per row group. Default 131 072.
    pub row_group_rows: usize,
    /// zstd level (1..=22). Default 3.
    pub zstd_level: i32,
    /// Who commits, as recorded in the catalog. Default `strata-snapshotter`.
    pub writer_id: String,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            min_changes: 1_000_000,
            part_rows: 4 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            writer_id: "strata-snapshotter".into(),
        }
    }
}

impl SnapshotConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(Error::Config {
                field: format!("snapshots.{field}"),
                reason: reason.to_owned(),
            })
        };
        if self.interval.is_zero() {
            return bad("interval", "must be more than 0");
        }
        if self.part_rows == 0 {
            return bad("part_rows", "must be more than 0");
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows", "must be more than 0");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("zstd_level", "must be within 1..=22");
        }
        Ok(())
    }
}

/// Counters of a [`Snapshotter`], readable while it runs.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Snapshots committed.
    pub snapshots: AtomicU64,
    /// Rows (live keys) written into snapshots.
    pub rows: AtomicU64,
    /// Bytes of snapshot files written.
    pub bytes: AtomicU64,
    /// Snapshot builds that failed (logged; retried on the next round).
    pub failures: AtomicU64,
    /// Microseconds the last successful build took.
    pub last_build_us: AtomicU64,
}

/// Is `snapshot` complete: no segment whose changes reached the catalog after it was built
/// holds a change at or before its instant? (A coalesced segment counts from its
/// [`content_version`](strata_catalog::SegmentEntry::content_version), the version of the
/// changes it holds, not from the version that rewrote them.)
pub fn is_complete(state: &CatalogState, table: &TableId, snapshot: &Snapshot) -> bool {
    !state.segments(table).iter().any(|e| {
        e.content_version() > snapshot.built_from_version
            && e.segment.min_commit_ts <= snapshot.as_of_ts
    })
}

/// The newest complete snapshot of `table` at or before `t`.
pub fn usable_snapshot<'a>(
    state: &'a CatalogState,
    table: &TableId,
    t: i64,
) -> Option<&'a Snapshot> {
    let snapshots = state.table(table)?.snapshots();
    let end = snapshots.partition_point(|s| s.as_of_ts <= t);
    snapshots[..end]
        .iter()
        .rev()
        .find(|s| is_complete(state, table, s))
}

/// The runs a merge-on-read of the state at `spec.until` needs: the newest usable snapshot's
/// files, then the changes after it (or every change, when there is none). `all_ids`: read
/// every `_event_id`, not only where copies may be.
pub(crate) async fn read_state_runs(
    shared: &Shared,
    state: &CatalogState,
    table: &TableId,
    spec: ReadSpec,
    all_ids: bool,
) -> Result<Vec<Vec<RecordBatch>>> {
    let Some(snapshot) = usable_snapshot(state, table, spec.until) else {
        return read_runs(shared, state, table, spec, all_ids).await;
    };
    debug!(%table, snapshot = %snapshot.snapshot_id, as_of_ts = snapshot.as_of_ts,
           "reading from a snapshot");
    let whole = Arc::new(ReadSpec {
        after: None,
        until: i64::MAX,
        ..spec.clone()
    });
    let after = Arc::new(ReadSpec {
        after: Some(snapshot.as_of_ts),
        ..spec
    });
    let mut files: Vec<(FileRef, Arc<ReadSpec>)> = snapshot
        .paths
        .iter()
        .map(|path| {
            // One row per key, each with commit time <= `as_of_ts`; the segments read after
            // it hold only later changes, so no copies of its rows: no ids needed.
            let file = FileRef {
                path: path.clone(),
                bytes: None,
                positions: None,
                ids: all_ids,
            };
            (file, Arc::clone(&whole))
        })
        .collect();
    let segments = segment_files(state, table, &after, all_ids);
    files.extend(segments.into_iter().map(|f| (f, Arc::clone(&after))));
    read_files(shared, table, files).await
}

/// Folds the history of `table` up to `as_of_ts` (inclusive) into a snapshot, writes its
/// files and commits it. Starts from the newest complete snapshot before `as_of_ts`.
/// Returns the committed snapshot.
pub async fn build_snapshot(
    catalog: &Arc<Catalog>,
    store: &Arc<dyn ObjectStore>,
    table: &TableId,
    as_of_ts: i64,
    config: &SnapshotConfig,
) -> Result<Snapshot> {
    let state = catalog.state();
    let version = state.version();
    let declared = table_schema(&state, table, as_of_ts)?;
    let segment_schema = declared.segment_schema().map_err(|e| Error::NoSchema {
        table: table.to_string(),
        reason: e.to_string(),
    })?;
    let system = system_fields();
    let mut carried: Vec<FieldRef> = [COMMIT_TS_COLUMN, TX_ID_COLUMN]
        .iter()
        .filter_map(|name| system.iter().find(|f| f.name() == name))
        .map(|f: &Field| Arc::new(f.clone()))
        .collect();
    carried.extend(table_fields(table, &declared)?);
    let carried: SchemaRef = Arc::new(Schema::new(carried));
    let spec = ReadSpec {
        after: None,
        until: as_of_ts,
        keys: None,
        system: MERGE_SYSTEM_COLUMNS.to_vec(),
        columns: carried.fields().iter().cloned().collect(),
    };
    let shared = Shared {
        catalog: Arc::clone(catalog),
        store: Arc::clone(store),
    };
    // Every id: a snapshot row keeps the id of the change it stands for.
    let runs = read_state_runs(&shared, &state, table, spec, true).await?;
    let fail = |reason: String| Error::Snapshot {
        table: table.to_string(),
        reason,
    };
    let folded = {
        let segment_schema = Arc::clone(&segment_schema);
        tokio::task::spawn_blocking(move || merge_snapshot(&runs, &carried, &segment_schema))
            .await
            .map_err(|e| fail(format!("merge task failed: {e}")))?
            .map_err(|source| Error::Merge {
                table: table.to_string(),
                source,
            })?
    };

    let directory = format!(
        "{}/{}/{}/snapshots/{}",
        table.source, table.namespace, table.table, version
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut paths = Vec::new();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let written = write_parts(
        store,
        catalog,
        &folded,
        &segment_schema,
        &directory,
        &id,
        config,
    )
    .await;
    let parts = match written {
        Ok(parts) => parts,
        Err((e, parts)) => {
            delete(store, catalog, &parts).await;
            return Err(e);
        }
    };
    for (path, part_rows, part_bytes) in &parts {
        paths.push(path.clone());
        rows += part_rows;
        bytes += part_bytes;
    }
    let snapshot = Snapshot {
        table: table.clone(),
        snapshot_id: format!("{as_of_ts}-v{version}"),
        as_of_ts,
        paths,
        rows,
        bytes,
        built_from_version: version,
    };
    let info = CommitInfo::new(&config.writer_id, "snapshot").with_app_metadata(
        serde_json::json!({"table": table.to_string(), "as_of_ts": as_of_ts, "rows": rows}),
    );
    if let Err(e) = catalog
        .commit(vec![Action::AddSnapshot(snapshot.clone())], info)
        .await
    {
        let names_it = catalog
            .refresh()
            .await
            .ok()
            .map(|_| catalog.state())
            .and_then(|s| {
                s.table(table).map(|t| {
                    t.snapshots()
                        .iter()
                        .any(|x| x.paths.first() == snapshot.paths.first())
                })
            })
            .unwrap_or(true);
        if !names_it {
            delete(store, catalog, &parts).await;
        }
        return Err(e.into());
    }
    Ok(snapshot)
}

/// A written part: its path relative to the root, rows and bytes.
type Part = (String, u64, u64);

/// Writes the folded rows as parts of at most `config.part_rows` rows; on failure returns
/// the parts already written too (to delete).
async fn write_parts(
    store: &Arc<dyn ObjectStore>,
    catalog: &Catalog,
    folded: &[RecordBatch],
    schema: &SchemaRef,
    directory: &str,
    id: &str,
    config: &SnapshotConfig,
) -> std::result::Result<Vec<Part>, (Error, Vec<Part>)> {
    let mut parts: Vec<Part> = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut iter = folded.iter().peekable();
    while iter.peek().is_some() || parts.is_empty() {
        if let Some(batch) = iter.next() {
            pending_rows += batch.num_rows();
            pending.push(batch.clone());
            if pending_rows < config.part_rows && iter.peek().is_some() {
                continue;
            }
        }
        let relative = format!("{directory}/{id}-{}.parquet", parts.len());
        let part = write_part(store, catalog, schema, &pending, &relative, config).await;
        match part {
            Ok(bytes) => parts.push((relative, pending_rows as u64, bytes)),
            Err(e) => return Err((e, parts)),
        }
        pending.clear();
        pending_rows = 0;
    }
    Ok(parts)
}

async fn write_part(
    store: &Arc<dyn ObjectStore>,
    catalog: &Catalog,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    relative: &str,
    config: &SnapshotConfig,
) -> Result<u64> {
    let path = object_path(catalog.root(), relative);
    let fail = |reason: String| Error::Snapshot {
        table: relative.to_owned(),
        reason,
    };
    let batch = concat_batches(schema, batches).map_err(|e| fail(e.to_string()))?;
    let (zstd, row_group) = (config.zstd_level, config.row_group_rows);
    let encoded = tokio::task::spawn_blocking(move || encode_segment(&batch, zstd, row_group))
        .await
        .map_err(|e| fail(format!("encoder task failed: {e}")))?
        .map_err(|e| fail(format!("encoding {path}: {e}")))?;
    let size = encoded.len() as u64;
    store
        .put(&path, PutPayload::from(encoded))
        .await
        .map_err(|e| fail(format!("writing {path}: {e}")))?;
    Ok(size)
}

async fn delete(store: &Arc<dyn ObjectStore>, catalog: &Catalog, parts: &[Part]) {
    for (relative, _, _) in parts {
        let path = object_path(catalog.root(), relative);
        if let Err(e) = store.delete(&path).await {
            debug!(%path, error = %e, "could not delete an uncommitted snapshot part");
        }
    }
}

/// The instant a new snapshot of `table` would be taken at, if one is due: the watermark
/// minus 1 µs, when at least `min_changes` change rows lie between the newest snapshot and it.
pub fn snapshot_due(state: &CatalogState, table: &TableId, min_changes: u64) -> Option<i64> {
    let as_of = state.watermark(table)?.checked_sub(1)?;
    let newest = state
        .table(table)?
        .snapshots()
        .last()
        .map_or(i64::MIN, |s| s.as_of_ts);
    if as_of <= newest {
        return None;
    }
    let changes: u64 = state
        .segments_between(table, newest.saturating_add(1), as_of)
        .map(|e| e.segment.rows)
        .sum();
    (changes >= min_changes.max(1)).then_some(as_of)
}

/// Builds snapshots of every table that is due, every `interval`, until cancelled.
pub struct Snapshotter {
    catalog: Arc<Catalog>,
    store: Arc<dyn ObjectStore>,
    config: SnapshotConfig,
    stats: Arc<SnapshotStats>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Snapshotter {
    /// A snapshotter over `catalog`, whose files live in `store`.
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn ObjectStore>,
        config: SnapshotConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            catalog,
            store,
            config,
            stats: Arc::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<SnapshotStats> {
        Arc::clone(&self.stats)
    }

    /// Looks at every table once and builds the snapshots that are due. A failed build is
    /// logged and counted; the others go on. Returns the snapshots committed.
    pub async fn round(&self) -> Result<Vec<Snapshot>> {
        self.catalog.refresh().await?;
        let state = self.catalog.state();
        let mut built = Vec::new();
        for table in state.tables() {
            let Some(as_of) = snapshot_due(&state, table, self.config.min_changes) else {
                continue;
            };
            let started = Instant::now();
            match build_snapshot(&self.catalog, &self.store, table, as_of, &self.config).await {
                Ok(snapshot) => {
                    let took = started.elapsed();
                    info!(%table, as_of_ts = as_of, rows = snapshot.rows, bytes = snapshot.bytes,
                          parts = snapshot.paths.len(), took_ms = took.as_millis() as u64,
                          "snapshot committed");
                    self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    self.stats.rows.fetch_add(snapshot.rows, Ordering::Relaxed);
                    self.stats
                        .bytes
                        .fetch_add(snapshot.bytes, Ordering::Relaxed);
                    self.stats.last_build_us.store(
                        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    built.push(snapshot);
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(%table, as_of_ts = as_of, error = %e, "snapshot failed; retrying next round");
                    if let Error::Segment { path, reason, .. } = &e {
                        quarantine_segment(
                            &self.catalog,
                            &self.config.writer_id,
                            &state,
                            table,
                            path,
                            reason,
                        )
                        .await;
                    }
                }
            }
        }
        Ok(built)
    }

    /// Runs [`round`](Snapshotter::round) every `interval` until `cancel` fires (disabled:
    /// only waits for it). A failed round (the catalog unreadable) is logged and retried.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        if !self.config.enabled {
            // Stay until cancelled: `strata run` stops when any of its parts ends.
            info!("snapshots disabled");
            cancel.cancelled().await;
            return Ok(());
        }
        info!(interval = ?self.config.interval, min_changes = self.config.min_changes,
              "snapshotter started");
        crate::periodic::every(self.config.interval, &cancel, || async {
            if let Err(e) = self.round().await {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "snapshot round failed");
            }
        })
        .await;
        Ok(())
    }
}

/// Records an unreadable change segment (`object`: its object path) in the catalog's
/// quarantine list (once), where `strata status` shows it. The segment stays in the table:
/// nothing is dropped from history, and reads that need it keep failing with an error
/// naming it.
pub(crate) async fn quarantine_segment(
    catalog: &Catalog,
    writer_id: &str,
    state: &CatalogState,
    table: &TableId,
    object: &str,
    reason: &str,
) {
    let root = catalog.root();
    let Some(relative) = state
        .segments(table)
        .iter()
        .map(|e| e.segment.path.as_str())
        .find(|p| object_path(root, p).as_ref() == object)
    else {
        return;
    };
    if state.quarantined_objects().any(|path| path == relative) {
        return;
    }
    let entry = QuarantineEntry {
        object: QuarantinedObject::Object {
            path: relative.to_owned(),
        },
        reason: format!("change segment of {table} unreadable: {reason}"),
        at_ts: now_micros(),
    };
    let info = CommitInfo::new(writer_id, "quarantine");
    match catalog.commit(vec![Action::Quarantine(entry)], info).await {
        Ok(_) => warn!(%table, path = relative, "change segment quarantined"),
        Err(e) => warn!(%table, path = relative, error = %e, "could not quarantine a segment"),
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
