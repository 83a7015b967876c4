//! `strata gc`: deletes the segment and snapshot files no catalog commit references.
//!
//! A compactor writes a flush's segments, then commits them; a snapshot build writes its files,
//! then commits them. One that stops in between (killed, or a commit whose outcome it never
//! learnt) leaves files the catalog does not know: they are never read, only stored. `gc`
//! finds them and deletes those older than a grace period, so that a flush or snapshot being
//! committed right now keeps its files.
//!
//! The coalescer replaces small segments with a coalesced one, and the snapshotter thins old
//! snapshots; their commits remove segments and snapshots from the table but leave their
//! files, which a query still reading an older catalog version may need. `gc` deletes such a
//! file once the commit that removed it is older than the same grace period (it reads the
//! commits of that period back from the log).
//!
//! ```text
//!  list <root>/<source>/<ns>/<table>/changes/*.parquet and …/snapshots/<version>/*.parquet
//!  then load the catalog (so a file committed before the load counts as referenced)
//!  each file: referenced by a segment or snapshot  -> kept
//!             younger than --older-than (1h)        -> kept (maybe being committed)
//!             removed by a commit of the last 1h    -> kept (replaced; older readers)
//!             otherwise                             -> deleted (or listed, with --dry-run)
//! ```
//!
//! Nothing else under the root is touched: not the catalog (`_catalog/`), not quarantined
//! records (`_quarantine/`), not files of other shapes.
//!
//! The grace period has a floor, [`MIN_OLDER_THAN`]: a shorter one deletes only with
//! `--unsafe-allow-short-grace` (`gc.unsafe_allow_short_grace` for the periodic collection),
//! because gc cannot tell a file whose commit is still to come from an abandoned one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::GcConfig;
use crate::storage::Storage;

/// The shortest grace period (`--older-than`, `gc.older_than`) gc deletes with unless told
/// `--unsafe-allow-short-grace` (`gc.unsafe_allow_short_grace`): 10 minutes.
///
/// Every writer puts its files first and commits the catalog entry naming them afterwards, and
/// until that commit lands a file looks exactly like an abandoned one. A grace period shorter
/// than the time from a file's put to its commit lets gc delete it in between: the commit then
/// names a missing file, and the history it held is lost. That time is
/// - a compactor flush: its segments are written one after another (each table's changes,
///   in segments of up to `max_segment_bytes`), then committed with the Kafka offsets they consumed;
/// - a snapshot build: all parts of a table's folded state (`part_rows` rows each) are encoded
///   and written one after another, then committed as one `AddSnapshot`; for a large table the
///   first part is minutes old when the commit is made;
/// - a coalescing round: its coalesced segments are written, then committed with the removals;
///
/// plus, for each, the slow cases: a store request that object_store retries (up to 3 minutes
/// by default, then one more request of up to 30 s), a commit that loses races (up to 20
/// attempts, each re-reading the winners, with backoff of up to 0.5 s) and the difference
/// between the store's clock (`last_modified`) and this host's. 10 minutes covers a retried
/// put, a retried commit and a snapshot build that writes for a few minutes, with margin. It
/// is a floor against plainly unsafe values (`0s`, `30s`), not a recommendation: the default
/// is 1 hour, and a deployment whose snapshot builds write for longer needs more.
pub(crate) const MIN_OLDER_THAN: Duration = Duration::from_secs(10 * 60);

/// Why `older_than` is too short a grace period to delete with, if it is below
/// [`MIN_OLDER_THAN`]. The text names the value and the minimum; callers add how to override.
pub(crate) fn too_short(older_than: Duration) -> Option<String> {
    (older_than < MIN_OLDER_THAN).then(|| {
        format!(
            "{} is below the minimum of {}: a file that a flush, snapshot build or coalescing \
             round has written but not committed yet looks unreferenced, and gc would delete it \
             (its commit would then name a missing file: data loss)",
            humantime::format_duration(older_than),
            humantime::format_duration(MIN_OLDER_THAN)
        )
    })
}

/// `strata gc`'s check of `--older-than`: below [`MIN_OLDER_THAN`] it deletes only with
/// `--unsafe-allow-short-grace`. A dry run deletes nothing, so any grace period will do.
pub(crate) fn check_older_than(
    older_than: Duration,
    dry_run: bool,
    unsafe_allow_short_grace: bool,
) -> anyhow::Result<()> {
    match too_short(older_than) {
        Some(reason) if !dry_run && !unsafe_allow_short_grace => Err(anyhow::anyhow!(
            "--older-than {reason}. Pass --unsafe-allow-short-grace to delete with it anyway \
             (only when no compactor, snapshot build or coalescer writes to this storage), or \
             --dry-run to only list"
        )),
        _ => Ok(()),
    }
}

/// A file of a table's history that the catalog does not reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Orphan {
    /// Relative to strata's root.
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) last_modified: DateTime<Utc>,
}

/// What a collection found and did.
#[derive(Debug, Default)]
pub(crate) struct GcReport {
    /// The catalog version the references were read at.
    pub(crate) catalog_version: u64,
    /// History files the catalog references.
    pub(crate) referenced: usize,
    /// Unreferenced files younger than the grace period, kept.
    pub(crate) young: Vec<Orphan>,
    /// Files of segments and snapshots that a commit within the grace period removed
    /// (replaced by a coalesced segment, thinned), kept.
    pub(crate) replaced: Vec<Orphan>,
    /// Unreferenced files older than the grace period: deleted, unless a dry run.
    pub(crate) orphans: Vec<Orphan>,
    /// Whether `orphans` were deleted.
    pub(crate) deleted: bool,
}

/// A store without catalog commits: nothing is referenced, so `collect` refuses it.
#[derive(Debug, thiserror::Error)]
#[error("{0} holds no catalog commits: refusing to collect (is storage.url right?)")]
pub(crate) struct NoCommits(String);

/// Is `relative` (a path under strata's root) a history file: a change segment
/// (`<source>/<ns>/<table>/changes/<file>.parquet`) or a snapshot file
/// (`<source>/<ns>/<table>/snapshots/<version>/<file>.parquet`)?
fn is_history_file(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    let parquet = parts.last().is_some_and(|f| f.ends_with(".parquet"));
    let starts_plain = parts.first().is_some_and(|p| !p.starts_with('_'));
    parquet
        && starts_plain
        && matches!(
            parts.as_slice(),
            [_, _, _, "changes", _] | [_, _, _, "snapshots", _, _]
        )
}

/// Finds the history files no catalog commit references and, unless `dry_run`, deletes those
/// last modified more than `older_than` before `now`.
pub(crate) async fn collect(
    storage: &Storage,
    older_than: Duration,
    dry_run: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<GcReport> {
    // List first, then read the catalog: a file committed before the catalog is read is
    // referenced in it; one written after the listing is not looked at.
    let root = &storage.root;
    let listed: Vec<object_store::ObjectMeta> = storage
        .store
        .list(Some(root))
        .try_collect()
        .await
        .with_context(|| format!("cannot list {}", storage.display))?;
    let catalog = storage.catalog().await?;
    let state = catalog.state();
    if state.version().get() == 0 {
        // No commit at all: nothing is referenced, so everything would look orphaned. This is
        // a wrong `storage.url` far more likely than a history to collect.
        return Err(NoCommits(storage.display.clone()).into());
    }
    let mut referenced: HashSet<&str> = HashSet::new();
    for table in state.tables() {
        for entry in state.segments(table) {
            referenced.insert(entry.segment.path.as_str());
        }
        for snapshot in state.table(table).map(|t| t.snapshots()).unwrap_or(&[]) {
            referenced.extend(snapshot.paths.iter().map(String::as_str));
        }
    }
    let grace = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let cutoff_us = now
        .checked_sub_signed(grace)
        .map_or(i64::MIN, |t| t.timestamp_micros());
    let recently_removed = recently_removed(&catalog, state.version(), cutoff_us)
        .await
        .with_context(|| format!("cannot read the catalog log of {}", storage.display))?;
    let mut report = GcReport {
        catalog_version: state.version().get(),
        ..GcReport::default()
    };
    for meta in listed {
        let Some(parts) = meta.location.prefix_match(root) else {
            continue;
        };
        let relative = parts
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/");
        if !is_history_file(&relative) {
            continue;
        }
        if referenced.contains(relative.as_str()) {
            report.referenced += 1;
            continue;
        }
        let orphan = Orphan {
            path: relative,
            bytes: meta.size,
            last_modified: meta.last_modified,
        };
        if now.signed_duration_since(orphan.last_modified) < grace {
            report.young.push(orphan);
        } else if recently_removed.contains(&orphan.path) {
            report.replaced.push(orphan);
        } else {
            report.orphans.push(orphan);
        }
    }
    report.orphans.sort_by(|a, b| a.path.cmp(&b.path));
    if !dry_run {
        for orphan in &report.orphans {
            let path = orphan
                .path
                .split('/')
                .fold(root.clone(), |path: Path, part| path.join(part));
            match storage.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {path}"));
                }
            }
        }
        report.deleted = true;
    }
    Ok(report)
}

/// Paths of the segments removed by the commits made at or after `cutoff_us` (writers' wall
/// clocks), read back from `latest` until an older commit.
async fn recently_removed(
    catalog: &strata_catalog::Catalog,
    latest: strata_catalog::CatalogVersion,
    cutoff_us: i64,
) -> anyhow::Result<HashSet<String>> {
    use futures::StreamExt as _;
    use strata_catalog::{Action, CatalogVersion};
    /// Commits read at once.
    const BATCH: u64 = 32;
    let mut removed = HashSet::new();
    let mut top = latest.get();
    while top > 0 {
        let bottom = top.saturating_sub(BATCH - 1).max(1);
        let commits: Vec<_> = futures::stream::iter((bottom..=top).rev())
            .map(|v| catalog.read_commit(CatalogVersion(v)))
            .buffered(16)
            .collect()
            .await;
        for commit in commits {
            let commit = commit?;
            if commit.wall_time_us < cutoff_us {
                return Ok(removed);
            }
            for action in commit.actions {
                match action {
                    Action::RemoveSegment(r) => {
                        removed.insert(r.path);
                    }
                    Action::RemoveSnapshot(r) => removed.extend(r.paths),
                    _ => {}
                }
            }
        }
        top = bottom - 1;
    }
    Ok(removed)
}

/// Counters of the periodic collection in `strata run`.
#[derive(Debug, Default)]
pub(crate) struct GcStats {
    pub(crate) runs: AtomicU64,
    pub(crate) files_deleted: AtomicU64,
    pub(crate) bytes_deleted: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// Collects every `config.interval` (the first time one interval after the start) until
/// `cancel` fires; disabled: only waits for it. A failed collection is logged, counted and
/// tried again next interval. A store without catalog commits yet is left alone.
pub(crate) async fn run_periodically(
    storage: Storage,
    config: GcConfig,
    stats: Arc<GcStats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if !config.enabled {
        tracing::info!("gc disabled");
        cancel.cancelled().await;
        return Ok(());
    }
    tracing::info!(interval = ?config.interval, older_than = ?config.older_than, "gc started");
    strata_query::periodic::every(config.interval, &cancel, || {
        collect_once(&storage, config.older_than, &stats)
    })
    .await;
    Ok(())
}

/// One periodic collection: logged and counted, never failing.
async fn collect_once(storage: &Storage, older_than: Duration, stats: &GcStats) {
    match collect(storage, older_than, false, Utc::now()).await {
        Ok(report) => {
            stats.runs.fetch_add(1, Ordering::Relaxed);
            let bytes: u64 = report.orphans.iter().map(|o| o.bytes).sum();
            stats
                .files_deleted
                .fetch_add(report.orphans.len() as u64, Ordering::Relaxed);
            stats.bytes_deleted.fetch_add(bytes, Ordering::Relaxed);
            if report.orphans.is_empty() {
                tracing::debug!(referenced = report.referenced, "gc: nothing to delete");
            } else {
                tracing::info!(
                    files = report.orphans.len(),
                    bytes,
                    catalog_version = report.catalog_version,
                    replaced_kept = report.replaced.len(),
                    "gc deleted unreferenced history files"
                );
            }
        }
        // Nothing committed yet: nothing to collect.
        Err(e) if e.downcast_ref::<NoCommits>().is_some() => {}
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = format!("{e:#}"),
                "gc failed; retrying next interval"
            );
        }
    }
}

/// Prints a report for `strata gc`.
pub(crate) fn print(report: &GcReport, storage: &Storage, older_than: Duration) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let grace = humantime::format_duration(older_than);
    println!(
        "history         {} (catalog version {})",
        storage.display, report.catalog_version
    );
    println!(
        "referenced      {} files (segments and snapshots in the catalog): kept",
        report.referenced
    );
    if !report.young.is_empty() {
        println!(
            "young           {} unreferenced files newer than {grace} (a flush or snapshot may be \
             committing them): kept",
            report.young.len()
        );
    }
    if !report.replaced.is_empty() {
        println!(
            "replaced        {} files of segments coalesced or snapshots thinned less than {grace} \
             ago (queries of older versions may read them): kept",
            report.replaced.len()
        );
    }
    let total: u64 = report.orphans.iter().map(|o| o.bytes).sum();
    let verdict = if report.orphans.is_empty() {
        "nothing to delete"
    } else if report.deleted {
        "deleted"
    } else {
        "would be deleted (--dry-run)"
    };
    println!(
        "orphaned        {} files, {:.1} MiB, older than {grace}: {verdict}",
        report.orphans.len(),
        mib(total)
    );
    for orphan in &report.orphans {
        println!(
            "  {:<72} {:>10.3} MiB  {}",
            orphan.path,
            mib(orphan.bytes),
            orphan.last_modified.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;
    use object_store::{ObjectStore, PutPayload};
    use strata_catalog::{Action, CommitInfo, Segment, Snapshot, TableId};

    use super::*;

    /// `strata gc`'s default `--older-than`.
    const HOUR: Duration = Duration::from_secs(3600);

    async fn put(store: &dyn ObjectStore, path: &str) {
        store
            .put(
                &Path::from(path),
                PutPayload::from_static(b"PAR1 not really"),
            )
            .await
            .unwrap();
    }

    /// A local directory as strata's storage.
    fn local_storage() -> (tempfile::TempDir, Arc<dyn ObjectStore>, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let storage = Storage {
            store: Arc::clone(&store),
            root: Path::default(),
            display: dir.path().display().to_string(),
        };
        (dir, store, storage)
    }

    /// A one-row segment of `table` at `path`.
    fn segment(table: &TableId, path: &str) -> Segment {
        Segment {
            table: table.clone(),
            path: path.into(),
            rows: 1,
            bytes: 15,
            min_key: "i1".into(),
            max_key: "i1".into(),
            min_commit_ts: 1,
            max_commit_ts: 1,
            min_position: "1".into(),
            max_position: "1".into(),
            content_version: None,
        }
    }

    #[test]
    fn a_grace_below_the_floor_deletes_only_with_the_override() {
        let err = check_older_than(Duration::from_secs(30), false, false).unwrap_err();
        let msg = format!("{err:#}");
        for part in [
            "--older-than 30s",
            "minimum of 10m",
            "--unsafe-allow-short-grace",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        assert!(check_older_than(Duration::ZERO, false, false).is_err());
        let just_below = MIN_OLDER_THAN - Duration::from_millis(1);
        assert!(check_older_than(just_below, false, false).is_err());
        // At the floor and above: as before.
        check_older_than(MIN_OLDER_THAN, false, false).unwrap();
        check_older_than(HOUR, false, false).unwrap();
        // The override, or a dry run (it deletes nothing), accepts any.
        check_older_than(Duration::ZERO, false, true).unwrap();
        check_older_than(Duration::from_secs(1), true, false).unwrap();
    }

    #[test]
    fn history_files_are_segments_and_snapshot_files_only() {
        assert!(is_history_file("pg/public/orders/changes/a.parquet"));
        assert!(is_history_file("pg/public/orders/snapshots/12/a-0.parquet"));
        for other in [
            "_catalog/log/00000000000000000001.json",
            "_quarantine/t/0/1.json",
            "pg/public/orders/changes/a.json",
            "pg/public/orders/changes/x/a.parquet",
            "pg/public/orders/notes/a.parquet",
            "_strata_check/changes/a/b/c.parquet",
            "a.parquet",
        ] {
            assert!(!is_history_file(other), "{other}");
        }
    }

    #[tokio::test]
    async fn deletes_only_old_unreferenced_history_files() {
        let (_dir, store, storage) = local_storage();
        let table = TableId::new("pg", "public", "orders");
        let live = "pg/public/orders/changes/live.parquet";
        let snapshot_file = "pg/public/orders/snapshots/1/snap-0.parquet";
        let orphan_segment = "pg/public/orders/changes/orphan.parquet";
        let orphan_snapshot = "pg/public/orders/snapshots/7/lost-0.parquet";
        for path in [live, snapshot_file, orphan_segment, orphan_snapshot] {
            put(store.as_ref(), path).await;
        }
        put(store.as_ref(), "_quarantine/t/0/1.json").await;
        put(store.as_ref(), "pg/public/orders/README.txt").await;
        let catalog = storage.catalog().await.unwrap();
        let refused = collect(&storage, Duration::ZERO, false, Utc::now())
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("no catalog commits"),
            "{refused}"
        );
        assert!(
            store.head(&Path::from(orphan_segment)).await.is_ok(),
            "an empty catalog collects nothing"
        );
        let segment = segment(&table, live);
        catalog
            .commit(
                vec![Action::AddSegment(segment)],
                CommitInfo::new("test", "compact"),
            )
            .await
            .unwrap();
        let snapshot = Snapshot {
            table: table.clone(),
            snapshot_id: "s1".into(),
            as_of_ts: 1,
            paths: vec![snapshot_file.into()],
            rows: 1,
            bytes: 15,
            built_from_version: catalog.state().version(),
        };
        catalog
            .commit(
                vec![Action::AddSnapshot(snapshot)],
                CommitInfo::new("test", "snapshot"),
            )
            .await
            .unwrap();

        // Everything is young: nothing goes.
        let now = Utc::now();
        let report = collect(&storage, HOUR, false, now).await.unwrap();
        assert_eq!(report.referenced, 2);
        assert_eq!(report.young.len(), 2);
        assert!(report.orphans.is_empty());

        // An hour later, a dry run names the two orphans and deletes nothing.
        let later = now + chrono::Duration::hours(2);
        let report = collect(&storage, HOUR, true, later).await.unwrap();
        let named: Vec<&str> = report.orphans.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(named, [orphan_segment, orphan_snapshot]);
        assert!(!report.deleted);
        assert!(store.head(&Path::from(orphan_segment)).await.is_ok());

        // For real: the orphans go, everything else stays.
        let report = collect(&storage, HOUR, false, later).await.unwrap();
        assert!(report.deleted && report.orphans.len() == 2);
        for gone in [orphan_segment, orphan_snapshot] {
            assert!(store.head(&Path::from(gone)).await.is_err(), "{gone} kept");
        }
        for kept in [
            live,
            snapshot_file,
            "_quarantine/t/0/1.json",
            "pg/public/orders/README.txt",
        ] {
            assert!(
                store.head(&Path::from(kept)).await.is_ok(),
                "{kept} deleted"
            );
        }
        assert_eq!(
            storage
                .catalog()
                .await
                .unwrap()
                .state()
                .segments(&table)
                .len(),
            1,
            "the catalog is untouched"
        );
        let again = collect(&storage, HOUR, false, later).await.unwrap();
        assert!(again.orphans.is_empty(), "nothing left to collect");
    }

    #[tokio::test]
    async fn a_replaced_segment_or_thinned_snapshot_stays_until_its_removal_is_older_than_the_grace()
     {
        let (dir, store, storage) = local_storage();
        let table = TableId::new("pg", "public", "orders");
        let (small, coalesced) = (
            "pg/public/orders/changes/small.parquet",
            "pg/public/orders/changes/coalesced.parquet",
        );
        let thinned = "pg/public/orders/snapshots/1/old-0.parquet";
        put(store.as_ref(), small).await;
        put(store.as_ref(), coalesced).await;
        put(store.as_ref(), thinned).await;
        let catalog = storage.catalog().await.unwrap();
        let snapshot = strata_catalog::Snapshot {
            table: table.clone(),
            snapshot_id: "old".into(),
            as_of_ts: 1,
            paths: vec![thinned.into()],
            rows: 1,
            bytes: 1,
            built_from_version: strata_catalog::CatalogVersion(0),
        };
        catalog
            .commit(
                vec![
                    Action::AddSegment(segment(&table, small)),
                    Action::AddSnapshot(snapshot),
                ],
                CommitInfo::new("test", "compact"),
            )
            .await
            .unwrap();
        let mut replacement = segment(&table, coalesced);
        replacement.content_version = Some(catalog.state().version());
        catalog
            .commit(
                vec![
                    Action::RemoveSegment(strata_catalog::SegmentRemoval {
                        table: table.clone(),
                        path: small.into(),
                    }),
                    Action::AddSegment(replacement),
                    Action::RemoveSnapshot(strata_catalog::SnapshotRemoval {
                        table: table.clone(),
                        snapshot_id: "old".into(),
                        paths: vec![thinned.into()],
                    }),
                ],
                CommitInfo::new("test", "coalesce"),
            )
            .await
            .unwrap();

        // The small file and the snapshot were written three hours ago and removed just now.
        let three_hours_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
        for file in [small, thinned] {
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(file))
                .unwrap()
                .set_modified(three_hours_ago)
                .unwrap();
        }
        let now = Utc::now();
        let report = collect(&storage, HOUR, false, now).await.unwrap();
        let sorted = |orphans: &[Orphan]| {
            let mut paths: Vec<String> = orphans.iter().map(|o| o.path.clone()).collect();
            paths.sort();
            paths
        };
        assert_eq!(
            sorted(&report.replaced),
            [small, thinned],
            "removed less than an hour ago: kept for readers of older versions"
        );
        assert!(report.orphans.is_empty());
        assert!(store.head(&Path::from(small)).await.is_ok());
        assert!(store.head(&Path::from(thinned)).await.is_ok());

        // Two hours on, the removal is older than the grace: the file goes.
        let later = now + chrono::Duration::hours(2);
        let report = collect(&storage, HOUR, false, later).await.unwrap();
        assert!(report.replaced.is_empty());
        assert_eq!(sorted(&report.orphans), [small, thinned]);
        assert!(store.head(&Path::from(small)).await.is_err());
        assert!(store.head(&Path::from(thinned)).await.is_err());
        assert!(store.head(&Path::from(coalesced)).await.is_ok());
    }
}
