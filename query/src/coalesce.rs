//! Coalescing: many small change segments of a table rewritten as one, so that history stays
//! a few large files however often the compactor flushes.
//!
//! A compactor flushing every 5 s writes up to 17,280 segments a day per busy table, each
//! read by every query over its time range and each listed in every catalog checkpoint.
//! Every `interval` the coalescer looks at each table:
//!
//! ```text
//!  candidates = live segments with bytes < small_bytes, in the catalog for `settle` or longer
//!  window     = which side of every snapshot's built_from_version a segment's changes are on
//!  tier       = floor(log_min_segments(bytes / TIER_BASE))      (similar sizes together)
//!  groups     = per (window, tier), in commit order, greedily up to target_bytes / max_rows;
//!               kept when >= min_segments segments, or >= 2 holding >= target_bytes / 2
//!  per group  read every file ─► runs of one Arrow schema ─► per run of >= 2 files:
//!             concat ─► sort by (_key, _commit_pos, _seq) ─► drop repeated _event_ids
//!             ─► encode (zstd) ─► PUT <source>/<ns>/<table>/changes/<uuid>.parquet
//!  commit     RemoveSegment × sources + AddSegment { content_version = newest source's }
//! ```
//!
//! What holds:
//!
//! - **The same history.** A coalesced segment holds exactly the changes of its sources,
//!   sorted as the compactor sorts, minus repeated copies of one change (same `_event_id`;
//!   the reader counts copies once anyway). So every `as_of` and `changes` answer is the same
//!   before and after.
//! - **Snapshots stay usable.** A snapshot built from version `v` is used only while no
//!   segment whose changes arrived after `v` holds a change at or before its instant
//!   ([`crate::snapshot::is_complete`]). A coalesced segment carries `content_version`, the
//!   newest version among its sources, and never mixes sources from both sides of any
//!   snapshot's `built_from_version`, so it changes no snapshot's completeness. (A snapshot
//!   being built while a group is rewritten could straddle it: the catalog refuses a
//!   rewrite that straddles a snapshot committed before it (`StraddlesSnapshot`), and the
//!   coalescer only takes segments that have been in the catalog for `settle` (10 min), so a
//!   snapshot committed after it was read from a version newer than all of them unless its
//!   build took longer than that. Such a snapshot would be judged incomplete and not used:
//!   slower, never wrong.)
//! - **Bounded rewriting.** Groups form among segments of similar size (tiers a factor of
//!   `min_segments` apart), so a change is rewritten about `log_min_segments(small_bytes /
//!   64 KiB)` times (3 with the defaults), not once per round.
//! - **Concurrency.** The sources stay in the store; the commit removes them from the table.
//!   If another writer removed one first, the commit is refused (the catalog's rule: only a
//!   live segment can be removed), the new file is deleted and the next round plans again.
//!   `strata gc` deletes the replaced files once their removal is older than its grace period,
//!   so a query still reading an older version finds them.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
// See `read.rs`: the object_store reader datafusion 55 uses.
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use serde::{Deserialize, Serialize};
use strata_catalog::schema::{COMMIT_POS_COLUMN, KEY_COLUMN, SEQ_COLUMN};
use strata_catalog::{
    Action, Catalog, CatalogState, CatalogVersion, CommitInfo, Segment, SegmentEntry,
    SegmentRemoval, TableId, encode_segment,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::merge::sort_unique;
use crate::read::object_path;
use crate::snapshot::quarantine_segment;

/// Segments below this size share the lowest tier.
const TIER_BASE: u64 = 64 * 1024;

/// Source files read at once.
const PARALLEL_READS: usize = 16;

/// When and how small segments are coalesced (`[coalesce]` in strata's configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoalesceConfig {
    /// Coalesce at all. Default `true`.
    pub enabled: bool,
    /// How often tables are looked at. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Segments smaller than this (Parquet bytes) are coalesced. Default 16 MiB.
    pub small_bytes: u64,
    /// A coalesced segment holds at most about this many bytes of sources. Default 64 MiB.
    pub target_bytes: u64,
    /// At most this many change rows per coalesced segment. Default 1 048 576.
    pub max_rows: u64,
    /// A rewrite stops taking sources once the rows it read hold this much memory (Arrow
    /// buffers); the rest waits for the next round. Sorting and encoding need about as much
    /// again. Default 512 MiB.
    pub max_memory_bytes: u64,
    /// A group is rewritten once it has this many segments (or holds half of
    /// `target_bytes`); also the size ratio between tiers. Default 10.
    pub min_segments: usize,
    /// Only segments (their changes) in the catalog for at least this long are coalesced, so
    /// that a snapshot being built meanwhile never sees half of a group. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Rows per row group. Default 131 072.
    pub row_group_rows: usize,
    /// zstd level (1..=22). Default 3.
    pub zstd_level: i32,
    /// Who commits, as recorded in the catalog. Default `strata-coalescer`.
    pub writer_id: String,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            small_bytes: 16 * 1024 * 1024,
            target_bytes: 64 * 1024 * 1024,
            max_rows: 1024 * 1024,
            max_memory_bytes: 512 * 1024 * 1024,
            min_segments: 10,
            settle: Duration::from_secs(600),
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            writer_id: "strata-coalescer".into(),
        }
    }
}

impl CoalesceConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(Error::Config {
                field: format!("coalesce.{field}"),
                reason: reason.to_owned(),
            })
        };
        if self.interval.is_zero() {
            return bad("interval", "must be more than 0");
        }
        if self.small_bytes == 0 {
            return bad("small_bytes", "must be more than 0");
        }
        if self.target_bytes < self.small_bytes {
            return bad("target_bytes", "must be at least small_bytes");
        }
        if self.max_rows == 0 {
            return bad("max_rows", "must be more than 0");
        }
        if self.max_memory_bytes == 0 {
            return bad("max_memory_bytes", "must be more than 0");
        }
        if self.min_segments < 2 {
            return bad("min_segments", "must be at least 2");
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

/// Counters of a [`Coalescer`], readable while it runs.
#[derive(Debug, Default)]
pub struct CoalesceStats {
    /// Segments replaced by coalesced ones.
    pub segments_replaced: AtomicU64,
    /// Coalesced segments committed.
    pub segments_written: AtomicU64,
    /// Change rows written into coalesced segments.
    pub rows: AtomicU64,
    /// Repeated copies of a change dropped while coalescing.
    pub copies_dropped: AtomicU64,
    /// Bytes of coalesced segments written.
    pub bytes: AtomicU64,
    /// Groups that failed (logged; planned again on the next round).
    pub failures: AtomicU64,
}

/// The groups of `table`'s segments worth coalescing now, each in commit order, among the
/// segments whose changes were all in the catalog by version `settled`. Pure: what
/// [`Coalescer::round`] would rewrite, given the catalog `state`.
pub fn plan(
    state: &CatalogState,
    table: &TableId,
    config: &CoalesceConfig,
    settled: CatalogVersion,
) -> Vec<Vec<SegmentEntry>> {
    let Some(t) = state.table(table) else {
        return Vec::new();
    };
    let mut bounds: Vec<CatalogVersion> =
        t.snapshots().iter().map(|s| s.built_from_version).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let window = |e: &SegmentEntry| bounds.partition_point(|b| *b < e.content_version());
    let ratio = config.min_segments.max(2) as u64;
    let tier = |bytes: u64| {
        let mut tier = 0_u32;
        let mut limit = TIER_BASE;
        while bytes >= limit && tier < 64 {
            tier += 1;
            limit = limit.saturating_mul(ratio);
        }
        tier
    };
    // A quarantined segment is unreadable: it stays as it is.
    let quarantined: HashSet<&str> = state.quarantined_objects().collect();
    let mut candidates: Vec<(usize, u32, usize, &SegmentEntry)> = t
        .segments()
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.segment.bytes < config.small_bytes
                && e.content_version() <= settled
                && !quarantined.contains(e.segment.path.as_str())
        })
        .map(|(i, e)| (window(e), tier(e.segment.bytes), i, e))
        .collect();
    candidates.sort_by_key(|&(window, tier, i, _)| (window, tier, i));

    let mut groups = Vec::new();
    let mut group: Vec<SegmentEntry> = Vec::new();
    let (mut bytes, mut rows) = (0_u64, 0_u64);
    let mut class = None;
    let close = |group: &mut Vec<SegmentEntry>, bytes: u64, groups: &mut Vec<Vec<SegmentEntry>>| {
        let worth = group.len() >= config.min_segments
            || (group.len() >= 2 && bytes.saturating_mul(2) >= config.target_bytes);
        let taken = std::mem::take(group);
        if worth {
            groups.push(taken);
        }
    };
    for (window, tier, _, entry) in candidates {
        let s = &entry.segment;
        let full = bytes.saturating_add(s.bytes) > config.target_bytes
            || rows.saturating_add(s.rows) > config.max_rows;
        if class != Some((window, tier)) || (full && !group.is_empty()) {
            close(&mut group, bytes, &mut groups);
            (bytes, rows) = (0, 0);
            class = Some((window, tier));
        }
        bytes = bytes.saturating_add(s.bytes);
        rows = rows.saturating_add(s.rows);
        group.push(entry.clone());
    }
    close(&mut group, bytes, &mut groups);
    groups
}

/// A coalesced segment committed in place of its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalesced {
    /// The new segment.
    pub segment: Segment,
    /// The paths it replaced.
    pub replaced: Vec<String>,
    /// Repeated copies of a change dropped.
    pub copies_dropped: u64,
}

/// Rewrites `group` (segments of `table`, in commit order) as coalesced segments and commits
/// them in place of their sources, in one commit. Sources are grouped into runs of one
/// Arrow schema (a schema change splits the group); a run of one file stays as it is.
/// Returns what was committed (empty: nothing to do).
pub async fn coalesce_group(
    catalog: &Arc<Catalog>,
    store: &Arc<dyn ObjectStore>,
    table: &TableId,
    group: &[SegmentEntry],
    config: &CoalesceConfig,
) -> Result<Vec<Coalesced>> {
    // Several files at a time (small segments cost a request and a footer each), until the
    // rows read hold `max_memory_bytes`: the rest of the group waits for the next round.
    let reads: Vec<_> = group
        .iter()
        .map(|segment| async move {
            let batches = read_whole(catalog, store, table, &segment.segment).await;
            (segment, batches)
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(PARALLEL_READS);
    let mut read: Vec<(&SegmentEntry, Vec<RecordBatch>)> = Vec::new();
    let mut held = 0_u64;
    while let Some((segment, batches)) = reads.next().await {
        let batches = batches?;
        held += batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum::<u64>();
        read.push((segment, batches));
        // Two sources at least, so that every rewrite makes progress.
        if held >= config.max_memory_bytes && read.len() >= 2 {
            break;
        }
    }
    drop(reads);
    let mut runs: Vec<(Vec<&SegmentEntry>, Vec<RecordBatch>)> = Vec::new();
    for (segment, batches) in read {
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            continue;
        };
        match runs.last_mut() {
            Some((sources, run)) if run.first().is_some_and(|b| b.schema() == schema) => {
                sources.push(segment);
                run.extend(batches);
            }
            _ => runs.push((vec![segment], batches)),
        }
    }
    let mut written: Vec<(Coalesced, Vec<u8>)> = Vec::new();
    for (sources, batches) in runs.into_iter().filter(|(s, _)| s.len() >= 2) {
        let (zstd, row_group) = (config.zstd_level, config.row_group_rows);
        let table_name = table.to_string();
        let (merged, copies_dropped, bytes) = tokio::task::spawn_blocking(move || {
            let (merged, copies) = sort_and_dedup(batches)?;
            let bytes = encode_segment(&merged, zstd, row_group)
                .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
            Ok::<_, arrow::error::ArrowError>((merged.num_rows(), copies, bytes))
        })
        .await
        .map_err(|e| Error::Merge {
            table: table_name.clone(),
            source: arrow::error::ArrowError::ExternalError(Box::new(e)),
        })?
        .map_err(|source| Error::Merge {
            table: table_name,
            source,
        })?;
        let segment = coalesced_segment(table, &sources, merged as u64, bytes.len() as u64);
        let replaced = sources.iter().map(|s| s.segment.path.clone()).collect();
        written.push((
            Coalesced {
                segment,
                replaced,
                copies_dropped,
            },
            bytes,
        ));
    }
    if written.is_empty() {
        return Ok(Vec::new());
    }

    let mut stored: Vec<String> = Vec::new();
    for (coalesced, bytes) in &mut written {
        let path = object_path(catalog.root(), &coalesced.segment.path);
        if let Err(e) = store
            .put(&path, PutPayload::from(std::mem::take(bytes)))
            .await
        {
            delete(store, catalog, &stored).await;
            return Err(Error::Segment {
                table: table.to_string(),
                path: path.to_string(),
                reason: format!("writing the coalesced segment: {e}"),
            });
        }
        stored.push(coalesced.segment.path.clone());
    }
    let mut actions = Vec::new();
    for (coalesced, _) in &written {
        actions.extend(coalesced.replaced.iter().map(|path| {
            Action::RemoveSegment(SegmentRemoval {
                table: table.clone(),
                path: path.clone(),
            })
        }));
        actions.push(Action::AddSegment(coalesced.segment.clone()));
    }
    let sources: usize = written.iter().map(|(c, _)| c.replaced.len()).sum();
    let rows: u64 = written.iter().map(|(c, _)| c.segment.rows).sum();
    let info = CommitInfo::new(&config.writer_id, "coalesce").with_app_metadata(
        serde_json::json!({"table": table.to_string(), "sources": sources, "rows": rows}),
    );
    if let Err(e) = catalog.commit(actions, info).await {
        // Keep the files only if the commit did land (its reply was lost).
        let landed = catalog.refresh().await.ok().is_none_or(|_| {
            let state = catalog.state();
            let live: HashSet<&str> = state
                .segments(table)
                .iter()
                .map(|e| e.segment.path.as_str())
                .collect();
            stored.iter().any(|p| live.contains(p.as_str()))
        });
        if !landed {
            delete(store, catalog, &stored).await;
        }
        return Err(e.into());
    }
    Ok(written.into_iter().map(|(c, _)| c).collect())
}

/// The catalog entry of a coalesced segment: the sources' span (dropping copies of a change
/// never moves it: the copy kept has the same key, time and position), and the newest of
/// their content versions.
fn coalesced_segment(table: &TableId, entries: &[&SegmentEntry], rows: u64, bytes: u64) -> Segment {
    let sources = || entries.iter().map(|e| &e.segment);
    let min = |f: fn(&Segment) -> &str| sources().map(f).min().unwrap_or_default();
    let max = |f: fn(&Segment) -> &str| sources().map(f).max().unwrap_or_default();
    Segment {
        table: table.clone(),
        path: format!(
            "{}/{}/{}/changes/{}.parquet",
            table.source,
            table.namespace,
            table.table,
            uuid::Uuid::new_v4()
        ),
        rows,
        bytes,
        min_key: min(|s| &s.min_key).to_owned(),
        max_key: max(|s| &s.max_key).to_owned(),
        min_commit_ts: sources().map(|s| s.min_commit_ts).min().unwrap_or_default(),
        max_commit_ts: sources().map(|s| s.max_commit_ts).max().unwrap_or_default(),
        min_position: min(|s| &s.min_position).to_owned(),
        max_position: max(|s| &s.max_position).to_owned(),
        content_version: entries.iter().map(|e| e.content_version()).max(),
    }
}

/// Every row of one segment, as stored.
async fn read_whole(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    table: &TableId,
    segment: &Segment,
) -> Result<Vec<RecordBatch>> {
    let path = object_path(catalog.root(), &segment.path);
    let fail = |reason: String| Error::Segment {
        table: table.to_string(),
        path: path.to_string(),
        reason,
    };
    #[allow(deprecated)]
    let mut reader = ParquetObjectReader::new(Arc::clone(store), path.clone());
    if segment.bytes > 0 {
        reader = reader.with_file_size(segment.bytes);
    }
    let stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| fail(e.to_string()))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows as u64 != segment.rows {
        return Err(fail(format!(
            "holds {rows} rows, the catalog says {}",
            segment.rows
        )));
    }
    Ok(batches)
}

/// The rows of `batches` (one schema) sorted by (`_key`, `_commit_pos`, `_seq`), each
/// `_event_id` once; and how many repeated copies were dropped.
fn sort_and_dedup(
    batches: Vec<RecordBatch>,
) -> Result<(RecordBatch, u64), arrow::error::ArrowError> {
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| arrow::error::ArrowError::InvalidArgumentError("no rows".into()))?;
    let all = concat_batches(&schema, &batches)?;
    // The rows are held once, not twice, while they are sorted.
    drop(batches);
    sort_unique(&all, &[KEY_COLUMN, COMMIT_POS_COLUMN, SEQ_COLUMN])
}

async fn delete(store: &Arc<dyn ObjectStore>, catalog: &Catalog, paths: &[String]) {
    for relative in paths {
        let path = object_path(catalog.root(), relative);
        if let Err(e) = store.delete(&path).await {
            debug!(%path, error = %e, "could not delete an uncommitted coalesced segment");
        }
    }
}

/// Coalesces the small segments of every table, every `interval`, until cancelled.
pub struct Coalescer {
    catalog: Arc<Catalog>,
    store: Arc<dyn ObjectStore>,
    config: CoalesceConfig,
    stats: Arc<CoalesceStats>,
    /// Catalog versions and when this coalescer first saw them, oldest first: a segment
    /// added by version v was in the catalog no later than the first sight of v or later.
    seen: Mutex<VecDeque<(CatalogVersion, Instant)>>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Coalescer {
    /// A coalescer over `catalog`, whose files live in `store`.
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn ObjectStore>,
        config: CoalesceConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            catalog,
            store,
            config,
            stats: Arc::default(),
            seen: Mutex::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<CoalesceStats> {
        Arc::clone(&self.stats)
    }

    /// Notes that `version` is the catalog's now; returns the newest version seen at least
    /// `settle` ago (0 when none).
    fn settled(&self, version: CatalogVersion) -> CatalogVersion {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.back().is_none_or(|(v, _)| *v < version) {
            seen.push_back((version, now));
        }
        let old_enough = |at: &Instant| now.duration_since(*at) >= self.config.settle;
        // Keep the newest old-enough entry (the answer) and everything after it.
        while seen.len() > 1 && seen.get(1).is_some_and(|(_, at)| old_enough(at)) {
            seen.pop_front();
        }
        match seen.front() {
            Some((v, at)) if old_enough(at) => *v,
            _ => CatalogVersion::EMPTY,
        }
    }

    /// Looks at every table once and rewrites the groups [`plan`] finds. A failed group is
    /// logged and counted; the others go on. Returns what was committed.
    pub async fn round(&self) -> Result<Vec<Coalesced>> {
        self.catalog.refresh().await?;
        let state = self.catalog.state();
        let settled = self.settled(state.version());
        let mut done = Vec::new();
        for table in state.tables() {
            for group in plan(&state, table, &self.config, settled) {
                let started = Instant::now();
                match coalesce_group(&self.catalog, &self.store, table, &group, &self.config).await
                {
                    Ok(coalesced) => {
                        for c in &coalesced {
                            info!(%table, path = %c.segment.path, sources = c.replaced.len(),
                                  rows = c.segment.rows, bytes = c.segment.bytes,
                                  copies_dropped = c.copies_dropped,
                                  took_ms = started.elapsed().as_millis() as u64,
                                  "segments coalesced");
                            let s = &self.stats;
                            s.segments_replaced
                                .fetch_add(c.replaced.len() as u64, Ordering::Relaxed);
                            s.segments_written.fetch_add(1, Ordering::Relaxed);
                            s.rows.fetch_add(c.segment.rows, Ordering::Relaxed);
                            s.copies_dropped
                                .fetch_add(c.copies_dropped, Ordering::Relaxed);
                            s.bytes.fetch_add(c.segment.bytes, Ordering::Relaxed);
                        }
                        done.extend(coalesced);
                    }
                    Err(e) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        warn!(%table, segments = group.len(), error = %e,
                              "coalescing failed; planning again next round");
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
                        // The state this round planned on is stale now.
                        break;
                    }
                }
            }
        }
        Ok(done)
    }

    /// Runs [`round`](Coalescer::round) every `interval` until `cancel` fires (disabled:
    /// only waits for it). A failed round is logged and retried.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        if !self.config.enabled {
            info!("coalescing disabled");
            cancel.cancelled().await;
            return Ok(());
        }
        info!(interval = ?self.config.interval, small_bytes = self.config.small_bytes,
              "coalescer started");
        crate::periodic::every(self.config.interval, &cancel, || async {
            if let Err(e) = self.round().await {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "coalesce round failed");
            }
        })
        .await;
        Ok(())
    }
}
