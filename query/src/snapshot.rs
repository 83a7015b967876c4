//! Snapshots: a table's full state at one instant, folded from its history so that reading
//! a point in time never replays unbounded history.
//!
//! ```text
//!  every `interval`:  for each table
//!     as_of = watermark - 1µs          (every change with commit time <= as_of is committed)
//!     due   when >= max(`min_changes`, `min_change_ratio` x its rows) change rows lie after
//!             its newest complete snapshot, up to as_of (counted exactly, also in segments
//!             that straddle it: snapshot_due)
//!     runs  = newest complete snapshot <= as_of  +  the changes after it up to as_of
//!     fold  = merge-on-read (crate::merge), one full row per live key, in key order
//!     write   <root>/<source>/<ns>/<table>/snapshots/<version>/<uuid>-<part>.parquet
//!     commit  AddSnapshot { as_of_ts, paths, rows, bytes, built_from_version = version }
//!  then, per table:  RemoveSnapshot × the old ones the policy does not keep (snapshots_to_thin)
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
use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use strata_catalog::schema::{COMMIT_TS_COLUMN, TX_ID_COLUMN, system_fields};
use strata_catalog::{
    Action, Catalog, CatalogState, CommitInfo, QuarantineEntry, QuarantinedObject, Segment,
    Snapshot, SnapshotRemoval, TableId, encode_segment,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::merge::{MERGE_SYSTEM_COLUMNS, merge_snapshot};
use crate::provider::{Shared, read_files, read_runs, segment_files, table_fields, table_schema};
use crate::read::{FileRef, ReadSpec, object_path, read_segment};

/// Straddling segments read at once to count their changes ([`snapshot_due`]).
const PARALLEL_COUNTS: usize = 4;

/// When and how snapshots are built (`[snapshots]` in strata's configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Build snapshots at all. Default `true`.
    pub enabled: bool,
    /// How often tables are looked at. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A table gets a new snapshot once this many change rows with a commit time after its
    /// newest complete snapshot, up to its watermark, are in the catalog (see
    /// [`snapshot_due`]) ... Default 1 000 000.
    pub min_changes: u64,
    /// ... and at least this share of that snapshot's rows. A snapshot rewrites the whole
    /// table, so with `min_changes` alone a table of 100M rows would be rewritten for every
    /// 1M changes (100 rows written per change). With a share, a change costs at most
    /// 1 / share snapshot rows, and a read at any instant replays at most
    /// max(`min_changes`, share x rows) changes on top of its snapshot, plus those of one
    /// `interval`. 0: `min_changes` alone. Default 0.1.
    pub min_change_ratio: f64,
    /// Remove old snapshots ([`snapshots_to_thin`]): every snapshot within `keep_all_for`
    /// of a table's newest one is kept, then the newest of each UTC day up to
    /// `keep_daily_for`, then the newest of each week (Monday to Sunday, UTC). Without
    /// thinning, a table's snapshots add up to about 1 / `min_change_ratio` rows per change
    /// (10 by default), for ever. Default `true`.
    pub thin: bool,
    /// Default `1d`.
    #[serde(with = "humantime_serde")]
    pub keep_all_for: Duration,
    /// At least `keep_all_for`. Default `30d`.
    #[serde(with = "humantime_serde")]
    pub keep_daily_for: Duration,
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
            min_change_ratio: 0.1,
            thin: true,
            keep_all_for: Duration::from_secs(86_400),
            keep_daily_for: Duration::from_secs(30 * 86_400),
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
        if !(self.min_change_ratio.is_finite() && self.min_change_ratio >= 0.0) {
            return bad("min_change_ratio", "must be a number of 0 or more");
        }
        if self.keep_daily_for < self.keep_all_for {
            return bad("keep_daily_for", "must be at least keep_all_for");
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
    /// Snapshot builds, or the counts deciding whether one is due, that failed (logged;
    /// retried on the next round).
    pub failures: AtomicU64,
    /// Microseconds the last successful build took.
    pub last_build_us: AtomicU64,
    /// Snapshots removed by thinning.
    pub removed: AtomicU64,
    /// Bytes of the snapshots removed by thinning (their files go with `strata gc`).
    pub removed_bytes: AtomicU64,
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

/// The change rows a new snapshot of a table would fold: those with commit time in
/// (`since`, `as_of`], as far as the catalog's segment entries tell (see [`snapshot_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChanges {
    /// The instant the new snapshot would be taken at: the watermark minus 1 µs.
    pub as_of: i64,
    /// The instant of the snapshot a read at `as_of` starts from ([`usable_snapshot`]);
    /// `None`: there is none, a read replays every change.
    pub since: Option<i64>,
    /// The rows of that snapshot (0 without one).
    pub since_rows: u64,
    /// Rows of the segments whose changes all lie in (`since`, `as_of`]: counted exactly.
    pub inside: u64,
    /// The segments holding changes both in (`since`, `as_of`] and outside it (at or before
    /// `since`, or after `as_of`): only some of their rows count, and the catalog does not
    /// record how many.
    pub straddling: Vec<Segment>,
}

impl PendingChanges {
    /// The most rows there can be: `inside` plus every row of the straddling segments.
    pub fn at_most(&self) -> u64 {
        self.straddling
            .iter()
            .fold(self.inside, |sum, s| sum.saturating_add(s.rows))
    }
}

/// What the catalog alone says about the changes a new snapshot of `table` would fold;
/// `None` when no snapshot can be taken (no watermark, or none newer than the newest
/// snapshot).
pub fn pending_changes(state: &CatalogState, table: &TableId) -> Option<PendingChanges> {
    let as_of = state.watermark(table)?.checked_sub(1)?;
    let newest = state.table(table)?.snapshots().last().map(|s| s.as_of_ts);
    if newest.is_some_and(|newest| as_of <= newest) {
        return None;
    }
    // Reads start from the newest *complete* snapshot: one they skip saves them nothing.
    let usable = usable_snapshot(state, table, as_of);
    let since = usable.map(|s| s.as_of_ts);
    let since_rows = usable.map_or(0, |s| s.rows);
    let after_since = |ts: i64| since.is_none_or(|since| ts > since);
    let mut inside = 0_u64;
    let mut straddling = Vec::new();
    let first = since.map_or(i64::MIN, |since| since.saturating_add(1));
    for entry in state.segments_between(table, first, as_of) {
        let s = &entry.segment;
        if after_since(s.min_commit_ts) && s.max_commit_ts <= as_of {
            inside = inside.saturating_add(s.rows);
        } else {
            straddling.push(s.clone());
        }
    }
    Some(PendingChanges {
        as_of,
        since,
        since_rows,
        inside,
        straddling,
    })
}

/// The instant a new snapshot of `table` would be taken at, if one is due: the watermark
/// minus 1 µs, when at least `min_changes` change rows, and at least `min_change_ratio` of
/// the rows of the snapshot reads start from ([`usable_snapshot`]), have a commit time after
/// that snapshot and at or before that instant ([`changes_needed`]).
///
/// **Counting.** A segment whose changes all lie in that range counts its `rows`. A segment
/// that straddles an end of it (a coalesced segment whose sources lay on both sides of the
/// snapshot's instant, or a partition ahead of the watermark) holds only some rows that
/// count, and the catalog cannot say how many: it records a segment's total rows and
/// commit-time span, and a coalesced segment does not record what it replaced. Counting all
/// its rows took snapshots too often (a segment that keeps straddling made every round take
/// one); a share proportional to its time span under-counts when its rows cluster after the
/// snapshot. So when the exact rows of the other segments and the upper bound (every row of
/// the straddling ones) do not decide, this reads the straddling segments' `_commit_ts`
/// column (only that column, row groups pruned on their statistics) and counts exactly.
/// That costs a read of the few segments that cross an instant, only while a table's count
/// lies between the bounds; in exchange the count never falls below the rows a read would
/// replay, so replay stays bounded by the rows needed (copies of one change in several
/// segments count more than once: an over-count, safe). A straddling segment that cannot be
/// read is an error: the build would need it too.
pub async fn snapshot_due(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    state: &CatalogState,
    table: &TableId,
    config: &SnapshotConfig,
) -> Result<Option<i64>> {
    let Some(pending) = pending_changes(state, table) else {
        return Ok(None);
    };
    let min = changes_needed(config, pending.since_rows);
    let due = Some(pending.as_of);
    let mut rows = pending.inside;
    if rows >= min {
        return Ok(due);
    }
    if pending.at_most() < min {
        return Ok(None);
    }
    let spec = Arc::new(ReadSpec {
        after: pending.since,
        until: pending.as_of,
        keys: None,
        system: vec![COMMIT_TS_COLUMN],
        columns: Vec::new(),
    });
    // Built up front from owned `FileRef`s: a lazy map over `&Segment` inside the stream
    // fails rustc's higher-ranked check when the round's future must be `Send` (spawned).
    let reads: Vec<_> = pending
        .straddling
        .iter()
        .map(FileRef::from)
        .map(|file| {
            let root = catalog.root().clone();
            read_segment(
                Arc::clone(store),
                root,
                table.clone(),
                file,
                Arc::clone(&spec),
            )
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(PARALLEL_COUNTS);
    while let Some(batches) = reads.next().await {
        let counted: usize = batches?.iter().map(RecordBatch::num_rows).sum();
        rows = rows.saturating_add(counted as u64);
        if rows >= min {
            return Ok(due);
        }
    }
    debug!(%table, rows, needed = min, "no snapshot due yet");
    Ok(None)
}

/// The change rows that make a new snapshot due after one of `since_rows` rows (0: none):
/// `min_changes`, or `min_change_ratio` of `since_rows` if more; at least 1.
pub fn changes_needed(config: &SnapshotConfig, since_rows: u64) -> u64 {
    // `as` saturates: a share beyond u64 needs u64::MAX changes, that is never.
    let share = (config.min_change_ratio * since_rows as f64).ceil() as u64;
    config.min_changes.max(share).max(1)
}

/// The snapshots of `table` that thinning removes, oldest first, when `config.thin`: every
/// snapshot but the newest that a read can never use (incomplete, see [`is_complete`]), and
/// of the complete ones those the policy does not keep. Ages count back from the newest
/// snapshot's instant, not from the clock, so a table whose capture stopped keeps its last
/// snapshots.
///
/// ```text
///   age (newest.as_of_ts - as_of_ts)   kept
///   <= keep_all_for                    every one
///   <= keep_daily_for                  the newest of its UTC day
///   older                              the newest of its week (Monday to Sunday, UTC)
/// ```
///
/// Removing only ever drops what a read would not start from, or trades one for an older
/// start: `as_of(t)` then replays the changes since the kept snapshot before `t` (at most a
/// day's, then a week's), and every answer stays the same.
pub fn snapshots_to_thin<'a>(
    state: &'a CatalogState,
    table: &TableId,
    config: &SnapshotConfig,
) -> Vec<&'a Snapshot> {
    const DAY_US: i64 = 86_400_000_000;
    let Some(snapshots) = state.table(table).map(|t| t.snapshots()) else {
        return Vec::new();
    };
    let Some((newest, older)) = snapshots.split_last().filter(|_| config.thin) else {
        return Vec::new();
    };
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let (all_for, daily_for) = (micros(config.keep_all_for), micros(config.keep_daily_for));
    // (weekly, bucket) pairs already holding a kept snapshot, walked newest first.
    let mut kept = std::collections::HashSet::new();
    let mut removed: Vec<&Snapshot> = older
        .iter()
        .rev()
        .filter(|s| {
            if !is_complete(state, table, s) {
                return true;
            }
            let age = newest.as_of_ts.saturating_sub(s.as_of_ts);
            if age <= all_for {
                return false;
            }
            let day = s.as_of_ts.div_euclid(DAY_US);
            // 1970-01-01 was a Thursday: days + 3 count weeks from Mondays.
            let bucket = if age <= daily_for {
                (false, day)
            } else {
                (true, (day + 3).div_euclid(7))
            };
            !kept.insert(bucket)
        })
        .collect();
    removed.reverse();
    removed
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
            let due = snapshot_due(&self.catalog, &self.store, &state, table, &self.config).await;
            let as_of = match due {
                Ok(Some(as_of)) => as_of,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%table, error = %e, "counting changes failed; retrying next round");
                    self.failed(&state, table, &e).await;
                    continue;
                }
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
                    warn!(%table, as_of_ts = as_of, error = %e, "snapshot failed; retrying next round");
                    self.failed(&state, table, &e).await;
                }
            }
        }
        if let Err(e) = self.thin().await {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "thinning snapshots failed; retrying next round");
        }
        Ok(built)
    }

    /// Removes the snapshots [`snapshots_to_thin`] names, one commit per table (a table whose
    /// commit fails is logged, counted and tried again next round). Their files stay until
    /// `strata gc` finds the removal older than its grace period.
    async fn thin(&self) -> Result<()> {
        if !self.config.thin {
            return Ok(());
        }
        self.catalog.refresh().await?;
        let state = self.catalog.state();
        for table in state.tables() {
            let removed = snapshots_to_thin(&state, table, &self.config);
            if removed.is_empty() {
                continue;
            }
            let bytes: u64 = removed.iter().map(|s| s.bytes).sum();
            let actions = removed
                .iter()
                .map(|s| {
                    Action::RemoveSnapshot(SnapshotRemoval {
                        table: table.clone(),
                        snapshot_id: s.snapshot_id.clone(),
                        paths: s.paths.clone(),
                    })
                })
                .collect();
            let info = CommitInfo::new(&self.config.writer_id, "thin snapshots").with_app_metadata(
                serde_json::json!({
                    "table": table.to_string(),
                    "removed": removed.len(),
                }),
            );
            if let Err(e) = self.catalog.commit(actions, info).await {
                // Another snapshotter removed one first, or the store failed: next round.
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(%table, error = %e, "removing old snapshots failed; retrying next round");
                continue;
            }
            info!(%table, removed = removed.len(), bytes,
                  left = state.table(table).map_or(0, |t| t.snapshots().len()) - removed.len(),
                  "old snapshots removed (their files go with gc)");
            self.stats
                .removed
                .fetch_add(removed.len() as u64, Ordering::Relaxed);
            self.stats.removed_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts a failure for `table`; quarantines the segment it names, if unreadable.
    async fn failed(&self, state: &CatalogState, table: &TableId, e: &Error) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Error::Segment { path, reason, .. } = e {
            quarantine_segment(
                &self.catalog,
                &self.config.writer_id,
                state,
                table,
                path,
                reason,
            )
            .await;
        }
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
              min_change_ratio = self.config.min_change_ratio, "snapshotter started");
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

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use serde_json::json;
    use strata_catalog::{CatalogConfig, ChangeEvent, ConnectType, Row, TableSchema, Watermark};

    use super::*;
    use crate::coalesce::{CoalesceConfig, coalesce_group};
    use crate::testing::{self, add_segment, table_schema};

    /// 2026-11-25T10:00:00Z in µs.
    const T0: i64 = 1_795_600_800_000_000;
    const SECOND: i64 = 1_000_000;

    fn orders() -> TableId {
        TableId::new("pg-main", "public", "orders")
    }

    fn schema() -> TableSchema {
        table_schema(
            orders(),
            &[
                ("id", ConnectType::Int32, true),
                ("qty", ConnectType::Int64, false),
            ],
        )
    }

    /// An insert of `id`, committed at T0 + `second` s.
    fn insert(id: i32, second: i64) -> ChangeEvent {
        let key: Row = [("id", json!(id))].into_iter().collect();
        let mut after = key.clone();
        after.insert("qty", json!(1));
        let position = (
            u64::try_from(second).expect("second") * 100,
            u64::try_from(id).expect("id"),
        );
        testing::insert(orders(), key, after, T0 + second * SECOND, position)
    }

    struct Fixture {
        store: Arc<dyn ObjectStore>,
        catalog: Arc<Catalog>,
    }

    impl Fixture {
        async fn new() -> Self {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let catalog = Catalog::open(
                Arc::clone(&store),
                Path::from("w"),
                CatalogConfig::default(),
            )
            .await
            .expect("catalog");
            Self {
                store,
                catalog: Arc::new(catalog),
            }
        }

        async fn add(&self, events: &[ChangeEvent]) {
            add_segment(&self.catalog, &self.store, &schema(), events)
                .await
                .expect("segment");
        }

        async fn watermark(&self, second: i64) {
            let action = Action::SetWatermark(Watermark {
                table: orders(),
                ts: T0 + second * SECOND,
            });
            self.catalog
                .commit(vec![action], CommitInfo::new("test", "watermark"))
                .await
                .expect("watermark");
        }

        /// A snapshot of the table as of T0 + `second` s - 1 µs.
        async fn snapshot(&self, second: i64) -> Snapshot {
            build_snapshot(
                &self.catalog,
                &self.store,
                &orders(),
                T0 + second * SECOND - 1,
                &SnapshotConfig::default(),
            )
            .await
            .expect("snapshot")
        }

        async fn due(&self, min_changes: u64) -> Option<i64> {
            self.due_with(min_changes, 0.0).await
        }

        async fn due_with(&self, min_changes: u64, min_change_ratio: f64) -> Option<i64> {
            let state = self.catalog.state();
            let config = SnapshotConfig {
                min_changes,
                min_change_ratio,
                ..SnapshotConfig::default()
            };
            snapshot_due(&self.catalog, &self.store, &state, &orders(), &config)
                .await
                .expect("snapshot_due")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coalesced_segment_straddling_the_snapshot_counts_only_its_newer_rows() {
        let f = Fixture::new().await;
        // Ten inserts before the snapshot's instant; a partition ahead of the watermark has
        // two after it in the catalog already when the snapshot is built.
        f.add(&(1..=10).map(|id| insert(id, 1)).collect::<Vec<_>>())
            .await;
        f.add(&[insert(11, 15), insert(12, 20)]).await;
        f.watermark(10).await;
        let snapshot = f.snapshot(10).await;
        assert_eq!(snapshot.rows, 10);
        // Both sides of the snapshot's instant in one segment (both were folded into it).
        let group = f.catalog.state().segments(&orders()).to_vec();
        let coalesced = coalesce_group(
            &f.catalog,
            &f.store,
            &orders(),
            &group,
            &CoalesceConfig::default(),
        )
        .await
        .expect("coalesce");
        assert_eq!(coalesced.len(), 1);
        f.watermark(30).await;
        let state = f.catalog.state();
        let [entry] = state.segments(&orders()) else {
            panic!("one segment: {:?}", state.segments(&orders()));
        };
        let s = &entry.segment;
        assert!(s.min_commit_ts <= snapshot.as_of_ts && snapshot.as_of_ts < s.max_commit_ts);
        assert_eq!(s.rows, 12);
        assert!(is_complete(&state, &orders(), &snapshot));

        // Two rows are newer than the snapshot, not twelve.
        let as_of = T0 + 30 * SECOND - 1;
        assert_eq!(f.due(3).await, None);
        assert_eq!(f.due(2).await, Some(as_of));
        // A third, in a segment of its own after the snapshot.
        f.add(&[insert(13, 25)]).await;
        assert_eq!(f.due(4).await, None);
        assert_eq!(f.due(3).await, Some(as_of));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_count_from_the_newest_complete_snapshot() {
        let f = Fixture::new().await;
        f.add(&[insert(1, 1), insert(2, 1), insert(3, 1)]).await;
        f.watermark(10).await;
        let snapshot = f.snapshot(10).await;
        // Late changes before its instant: reads skip it and replay the whole history.
        f.add(&[insert(4, 5), insert(5, 5)]).await;
        f.add(&[insert(6, 15)]).await;
        f.watermark(20).await;
        let state = f.catalog.state();
        assert!(!is_complete(&state, &orders(), &snapshot));
        let pending = pending_changes(&state, &orders()).expect("pending");
        assert_eq!((pending.since, pending.inside), (None, 6));
        assert_eq!(f.due(6).await, Some(T0 + 20 * SECOND - 1));
        assert_eq!(f.due(7).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_table_needs_a_share_of_its_rows_changed() {
        let f = Fixture::new().await;
        f.add(&(1..=40).map(|id| insert(id, 1)).collect::<Vec<_>>())
            .await;
        f.watermark(10).await;
        let snapshot = f.snapshot(10).await;
        assert_eq!(snapshot.rows, 40);
        // Five changes after the 40-row snapshot.
        f.add(&(41..=45).map(|id| insert(id, 15)).collect::<Vec<_>>())
            .await;
        f.watermark(20).await;
        let pending = pending_changes(&f.catalog.state(), &orders()).expect("pending");
        assert_eq!(
            (pending.since, pending.since_rows, pending.inside),
            (Some(snapshot.as_of_ts), 40, 5)
        );
        let as_of = Some(T0 + 20 * SECOND - 1);
        // min_changes alone: due.
        assert_eq!(f.due_with(5, 0.0).await, as_of);
        // A quarter of 40 rows is 10 changes: not yet; an eighth is 5: due.
        assert_eq!(f.due_with(5, 0.25).await, None);
        assert_eq!(f.due_with(5, 0.125).await, as_of);
        // The larger of the two counts.
        assert_eq!(f.due_with(6, 0.125).await, None);
        // Five more make ten.
        f.add(&(46..=50).map(|id| insert(id, 16)).collect::<Vec<_>>())
            .await;
        assert_eq!(f.due_with(5, 0.25).await, as_of);
    }

    /// Weeks run Monday to Sunday (UTC); days are UTC days; `thin = false` removes nothing.
    #[tokio::test]
    async fn thinning_buckets_are_utc_days_and_monday_weeks() {
        const DAY: i64 = 86_400 * SECOND;
        // 2026-11-30 00:00 UTC, a Monday.
        let monday = T0 + 5 * DAY - 10 * 3_600 * SECOND;
        let f = Fixture::new().await;
        let at = [
            monday - 2 * SECOND, // Sunday 23:59:58: the week before
            monday - SECOND,     // Sunday 23:59:59: newest of that week
            monday,              // Monday 00:00: a week of its own
            monday + 60 * DAY - 1,
        ];
        let actions = at
            .iter()
            .map(|&as_of_ts| {
                Action::AddSnapshot(Snapshot {
                    table: orders(),
                    snapshot_id: format!("s{as_of_ts}"),
                    as_of_ts,
                    paths: vec![format!("snapshots/{as_of_ts}.parquet")],
                    rows: 1,
                    bytes: 10,
                    built_from_version: strata_catalog::CatalogVersion(1),
                })
            })
            .collect();
        f.catalog
            .commit(actions, CommitInfo::new("test", "snapshot"))
            .await
            .expect("commit");
        let state = f.catalog.state();
        let thinned = |config: &SnapshotConfig| -> Vec<i64> {
            snapshots_to_thin(&state, &orders(), config)
                .iter()
                .map(|s| s.as_of_ts)
                .collect()
        };
        assert_eq!(thinned(&SnapshotConfig::default()), [at[0]]);
        // Sunday 23:59:58 and 23:59:59 are one UTC day: the daily tier removes the same one.
        let daily = SnapshotConfig {
            keep_daily_for: Duration::from_secs(90 * 86_400),
            ..SnapshotConfig::default()
        };
        assert_eq!(thinned(&daily), [at[0]]);
        let off = SnapshotConfig {
            thin: false,
            ..SnapshotConfig::default()
        };
        assert!(thinned(&off).is_empty());
        let keep_all = SnapshotConfig {
            keep_all_for: Duration::from_secs(90 * 86_400),
            keep_daily_for: Duration::from_secs(90 * 86_400),
            ..SnapshotConfig::default()
        };
        assert!(thinned(&keep_all).is_empty());
    }

    #[test]
    fn changes_needed_is_the_larger_of_the_count_and_the_share() {
        let config = |min_changes, min_change_ratio| SnapshotConfig {
            min_changes,
            min_change_ratio,
            ..SnapshotConfig::default()
        };
        // No snapshot yet: the count alone.
        assert_eq!(changes_needed(&config(1_000_000, 0.1), 0), 1_000_000);
        assert_eq!(
            changes_needed(&config(1_000_000, 0.1), 5_000_000),
            1_000_000
        );
        assert_eq!(
            changes_needed(&config(1_000_000, 0.1), 100_000_000),
            10_000_000
        );
        // Rounded up: 0.1 of 15 rows is 2 changes.
        assert_eq!(changes_needed(&config(1, 0.1), 15), 2);
        assert_eq!(changes_needed(&config(0, 0.0), 15), 1);
        assert_eq!(changes_needed(&config(1, 1e300), 2), u64::MAX);
    }

    #[test]
    fn a_negative_or_unbounded_change_ratio_is_refused() {
        for ratio in [-0.1, f64::NAN, f64::INFINITY] {
            let config = SnapshotConfig {
                min_change_ratio: ratio,
                ..SnapshotConfig::default()
            };
            let e = config.validate().expect_err("refused");
            assert!(e.to_string().contains("snapshots.min_change_ratio"), "{e}");
        }
        assert!(SnapshotConfig::default().validate().is_ok());
    }
}
