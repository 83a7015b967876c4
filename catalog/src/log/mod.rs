//! The commit log: strata's memory of which Parquet files hold which history, committed
//! atomically with the Kafka offsets they were built from.
//!
//! # Layout
//!
//! Everything lives under `<root>/_catalog/` in any [`ObjectStore`]:
//!
//! ```text
//! <root>/_catalog/log/00000000000000000001.json         one JSON object per commit (version 1, 2, ...)
//! <root>/_catalog/checkpoints/00000000000000000010.json.zst   full state at version 10, zstd JSON
//! <root>/_catalog/_last_checkpoint                      {"version": 10}: a hint, may be stale or missing
//! ```
//!
//! Version 0 is the empty catalog and has no object. Names are zero-padded to 20 digits so
//! that they sort like versions, which lets a reader list "everything after version v" with
//! one `list_with_offset` (S3 `start-after`).
//!
//! # Committing
//!
//! A writer builds its actions against the state it read at version `v` and writes version
//! `v+1` with [`PutMode::Create`](object_store::PutMode::Create): the store lets exactly one
//! writer create an object, so exactly one writer wins each version. (On S3 `object_store`
//! sends `If-None-Match: *`, which AWS S3 honours since 2024; the integration tests check
//! it against the dev stack's S3 server.)
//!
//! ```text
//!   state at v ──► check rules ──► PUT log/v+1 (Create) ──ok──► fold into state ──► v+1 % interval == 0?
//!        ▲          │ broken                      │                                  └─► PUT checkpoint (Create),
//!        │          ▼                             │ AlreadyExists                             PUT _last_checkpoint
//!        │    catch up; still broken              ▼
//!        │    at latest: Error::Conflict  read winners v+1..latest (LIST after v, GET each)
//!        │                                        │ one of them is our own txn_id ─► done (reply was lost)
//!        └── backoff + jitter ◄───────────────────┘ otherwise: attempts left? else Error::VersionConflict
//! ```
//!
//! The rules, checked against the state the commit will follow (see [`CatalogState`] and
//! [`ConflictKind`](crate::ConflictKind)); a commit is refused only if it breaks them
//! against the latest committed state, never because the writer's copy was stale:
//! - `ConsumeOffsets [from, to)` needs the partition's next offset to be `from`, or to be
//!   absent (never committed: any `from`). Two compactors that both believe they own a
//!   partition cannot both commit the same records: the second one gets
//!   [`Error::Conflict`], reloads, and drops or replays its batch.
//! - a (`table`, `schema_id`) is committed at most once, and a `snapshot_id` is live at
//!   most once;
//! - a segment path is live at most once, and only a live segment or snapshot can be
//!   removed (`MissingSegment`, `MissingSnapshot`: someone removed it first);
//! - a segment that replaces others (`content_version` set, its sources removed in the same
//!   commit) may not mix sources from both sides of a snapshot's `built_from_version`
//!   (`StraddlesSnapshot`): the snapshot would look incomplete.
//!
//! Every commit carries a random `txn_id` kept across its retries: if a PUT succeeded but
//! its reply was lost, the retry finds its own commit among the "winners" and reports
//! success instead of a conflict. After any other store error the outcome is unknown; the
//! caller refreshes and looks at its offsets.
//!
//! # Opening
//!
//! ```text
//!   GET _last_checkpoint (hint h, optional)
//!   LIST checkpoints/ after h-ε  ──► newest readable checkpoint c (none: start empty at 0)
//!   LIST log/ after c            ──► c+1 ..= latest, must be contiguous (gap: Error::MissingCommit)
//!   GET each tail commit, fold   ──► state at latest
//! ```
//!
//! With a checkpoint every `checkpoint_interval` commits, opening reads the hint, one
//! checkpoint and fewer than `interval` commits, plus two listings, however long the log.
//! The hint is never trusted alone: it is only where the listing starts, and a missing or
//! stale hint (or a corrupt checkpoint) falls back to listing every checkpoint, then to
//! replaying the whole log. [`Catalog::refresh`] catches up from the current version the
//! same way (LIST log after v, GET each new commit).
//!
//! A commit that cannot be parsed as the version its name says is
//! [`Error::CorruptCommit`] naming the path; nothing panics.
//!
//! Checkpoints are written with `Create` too: two writers racing to write the checkpoint of
//! one version write the same state, so `AlreadyExists` counts as success. A failed
//! checkpoint write never fails the commit it follows (the next open just reads a longer
//! tail).

mod actions;
mod checkpoint;
mod commit;
mod layout;
mod state;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tracing::{Span, debug, instrument, warn};

pub use self::actions::{
    Action, CatalogVersion, Commit, CommitInfo, LOG_FORMAT, OffsetRange, QuarantineEntry,
    QuarantinedObject, SchemaVersion, Segment, SegmentRemoval, Snapshot, SnapshotRemoval,
    Watermark,
};
pub use self::state::{CatalogState, SegmentEntry, TableState};

use self::checkpoint::LastCheckpoint;
use self::layout::{CHECKPOINT_SUFFIX, COMMIT_SUFFIX, Layout, parse_version};
use crate::error::{Error, Result};

/// Default for [`CatalogConfig::checkpoint_interval`].
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 10;
/// Default for [`CatalogConfig::max_commit_attempts`].
pub const DEFAULT_MAX_COMMIT_ATTEMPTS: u32 = 20;
/// Default for [`CatalogConfig::retry_backoff_min_ms`].
pub const DEFAULT_RETRY_BACKOFF_MIN_MS: u64 = 5;
/// Default for [`CatalogConfig::retry_backoff_max_ms`].
pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 500;
/// Default for [`CatalogConfig::read_concurrency`].
pub const DEFAULT_READ_CONCURRENCY: usize = 16;

/// How a [`Catalog`] commits and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Write a checkpoint after each commit whose version is a multiple of this (>= 1).
    pub checkpoint_interval: u64,
    /// How many versions a commit tries before giving up with
    /// [`Error::VersionConflict`] (>= 1).
    pub max_commit_attempts: u32,
    /// Wait after the first lost race; doubles per attempt up to `retry_backoff_max_ms`,
    /// randomised to between half and all of it.
    pub retry_backoff_min_ms: u64,
    /// Longest wait between two attempts.
    pub retry_backoff_max_ms: u64,
    /// How many commit objects are fetched at once when catching up (>= 1).
    pub read_concurrency: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_commit_attempts: DEFAULT_MAX_COMMIT_ATTEMPTS,
            retry_backoff_min_ms: DEFAULT_RETRY_BACKOFF_MIN_MS,
            retry_backoff_max_ms: DEFAULT_RETRY_BACKOFF_MAX_MS,
            read_concurrency: DEFAULT_READ_CONCURRENCY,
        }
    }
}

impl CatalogConfig {
    /// Checks every field; [`Catalog::open`] calls this.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.checkpoint_interval == 0 {
            return invalid("checkpoint_interval", "must be at least 1");
        }
        if self.max_commit_attempts == 0 {
            return invalid("max_commit_attempts", "must be at least 1");
        }
        if self.retry_backoff_min_ms > self.retry_backoff_max_ms {
            return invalid(
                "retry_backoff_min_ms",
                "must not exceed retry_backoff_max_ms",
            );
        }
        if self.read_concurrency == 0 {
            return invalid("read_concurrency", "must be at least 1");
        }
        Ok(())
    }
}

/// A handle on the catalog under one root of one object store: the current
/// [`CatalogState`], [`commit`](Catalog::commit) and [`refresh`](Catalog::refresh).
///
/// Each process (each compactor) opens its own; they coordinate only through the store.
/// One handle may be shared between tasks: every method takes `&self`.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    config: CatalogConfig,
    state: RwLock<Arc<CatalogState>>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("store", &self.store.to_string())
            .field("root", &self.layout.root)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens the catalog under `root` (creating nothing: an empty root is the empty catalog
    /// at version 0) and reads it up to its latest version.
    #[instrument(skip_all, fields(root = %root, version))]
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        root: Path,
        config: CatalogConfig,
    ) -> Result<Self> {
        config.validate()?;
        let catalog = Self {
            store,
            layout: Layout::new(root),
            config,
            state: RwLock::new(Arc::default()),
        };
        let hint = catalog.read_hint().await?;
        let base = catalog
            .load_latest_checkpoint(hint, CatalogVersion::EMPTY, true)
            .await?
            .unwrap_or_default();
        let (state, _) = catalog.catch_up(Arc::new(base), None, false).await?;
        Span::current().record("version", state.version.get());
        catalog.install(state);
        Ok(catalog)
    }

    /// The state as of the last open, refresh or commit. Cheap; does no I/O.
    pub fn state(&self) -> Arc<CatalogState> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The version of [`Catalog::state`].
    pub fn version(&self) -> CatalogVersion {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// The root the catalog lives under (`<root>/_catalog/`).
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Object path of the commit that creates `version`.
    pub fn commit_path(&self, version: CatalogVersion) -> Path {
        self.layout.commit_path(version)
    }

    /// Object path of the checkpoint at `version`.
    pub fn checkpoint_path(&self, version: CatalogVersion) -> Path {
        self.layout.checkpoint_path(version)
    }

    /// Reads commits made since the current version (by anyone) and returns the new
    /// version. If far behind, starts from a newer checkpoint instead of reading every
    /// commit.
    #[instrument(skip_all, fields(root = %self.layout.root, from, version))]
    pub async fn refresh(&self) -> Result<CatalogVersion> {
        let base = self.state();
        Span::current().record("from", base.version.get());
        let (state, _) = self.catch_up(base, None, true).await?;
        let version = state.version;
        Span::current().record("version", version.get());
        self.install(state);
        Ok(version)
    }

    /// The commit that created `version`, as stored.
    #[instrument(skip_all, fields(root = %self.layout.root, version = version.get()))]
    pub async fn read_commit(&self, version: CatalogVersion) -> Result<Commit> {
        let path = self.layout.commit_path(version);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(bytes) => decode_commit(&bytes, version, &path),
            Err(object_store::Error::NotFound { .. }) => Err(Error::CommitNotFound {
                path: path.to_string(),
                version,
            }),
            Err(e) => Err(Error::store("get", &path, e)),
        }
    }

    /// Replaces the shared state if `state` is newer.
    fn install(&self, state: Arc<CatalogState>) {
        let mut guard = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.version > guard.version {
            *guard = state;
        }
    }

    /// Reads `_last_checkpoint`. Missing or unreadable: `None` (it is only a hint).
    async fn read_hint(&self) -> Result<Option<CatalogVersion>> {
        let path = &self.layout.last_checkpoint;
        let bytes = match self.store.get(path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(bytes) => match serde_json::from_slice::<LastCheckpoint>(&bytes) {
                Ok(hint) => Ok(Some(hint.version)),
                Err(e) => {
                    warn!(%path, error = %e, "ignoring unreadable checkpoint hint");
                    Ok(None)
                }
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store("get", path, e)),
        }
    }

    /// Checkpoint versions at or after `from` (all of them if `None`), newest first.
    async fn list_checkpoints(&self, from: Option<CatalogVersion>) -> Result<Vec<CatalogVersion>> {
        let dir = &self.layout.checkpoint_dir;
        let listing = match from {
            Some(v) => self
                .store
                .list_with_offset(Some(dir), &self.layout.checkpoint_list_offset(v)),
            None => self.store.list(Some(dir)),
        };
        let mut versions: Vec<CatalogVersion> = listing
            .map_err(|e| Error::store("list", dir, e))
            .try_filter_map(
                |meta| async move { Ok(parse_version(&meta.location, CHECKPOINT_SUFFIX)) },
            )
            .try_collect()
            .await?;
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.dedup();
        Ok(versions)
    }

    /// The newest readable checkpoint at or after `min`, looking first at or after the
    /// hint; with `fallback`, at every checkpoint if none of those can be read.
    async fn load_latest_checkpoint(
        &self,
        hint: Option<CatalogVersion>,
        min: CatalogVersion,
        fallback: bool,
    ) -> Result<Option<CatalogState>> {
        let mut tried = HashSet::new();
        if let Some(hint) = hint {
            for version in self.list_checkpoints(Some(hint.max(min))).await? {
                tried.insert(version);
                if let Some(state) = self.try_read_checkpoint(version).await? {
                    return Ok(Some(state));
                }
            }
        }
        if hint.is_none() || fallback {
            for version in self.list_checkpoints(None).await? {
                if version < min || tried.contains(&version) {
                    continue;
                }
                if let Some(state) = self.try_read_checkpoint(version).await? {
                    return Ok(Some(state));
                }
            }
        }
        Ok(None)
    }

    /// One checkpoint; `None` if it vanished or is corrupt (logged: it can be rebuilt).
    #[instrument(skip_all, fields(version = version.get()))]
    async fn try_read_checkpoint(&self, version: CatalogVersion) -> Result<Option<CatalogState>> {
        let path = self.layout.checkpoint_path(version);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store("get", &path, e)),
        };
        let path_str = path.to_string();
        let decoded =
            tokio::task::spawn_blocking(move || checkpoint::decode(&bytes, version, &path_str))
                .await
                .map_err(|e| Error::CorruptCheckpoint {
                    path: path.to_string(),
                    version,
                    reason: format!("decoder task failed: {e}"),
                })?;
        match decoded {
            Ok(state) => Ok(Some(state)),
            Err(e @ Error::UnsupportedFormat { .. }) => Err(e),
            Err(e) => {
                warn!(%path, error = %e, "skipping unreadable checkpoint");
                Ok(None)
            }
        }
    }

    /// Commits after `after`, in order, checked to be contiguous from `after + 1`.
    async fn list_commits_after(
        &self,
        after: CatalogVersion,
    ) -> Result<Vec<(CatalogVersion, Path)>> {
        let dir = &self.layout.log_dir;
        let mut found: Vec<(CatalogVersion, Path)> = self
            .store
            .list_with_offset(Some(dir), &self.layout.commit_path(after))
            .map_err(|e| Error::store("list", dir, e))
            .try_filter_map(|meta| async move {
                Ok(parse_version(&meta.location, COMMIT_SUFFIX)
                    .filter(|v| *v > after)
                    .map(|v| (v, meta.location)))
            })
            .try_collect()
            .await?;
        found.sort_unstable_by_key(|(v, _)| *v);
        let mut expected = after.next();
        for (version, _) in &found {
            if *version != expected {
                return Err(Error::MissingCommit {
                    path: self.layout.commit_path(expected).to_string(),
                    version: expected,
                });
            }
            expected = expected.next();
        }
        Ok(found)
    }

    /// Folds every commit after `base` into it. Reports the version of the commit whose
    /// `txn_id` is `txn`, if one is found. With `allow_jump`, starts from a newer
    /// checkpoint when more than a checkpoint interval behind.
    async fn catch_up(
        &self,
        base: Arc<CatalogState>,
        txn: Option<&str>,
        allow_jump: bool,
    ) -> Result<(Arc<CatalogState>, Option<CatalogVersion>)> {
        let mut listed = self.list_commits_after(base.version).await?;
        if listed.is_empty() {
            return Ok((base, None));
        }
        let mut state = base;
        if allow_jump && listed.len() as u64 > self.config.checkpoint_interval {
            let after = state.version.next();
            if let Some(cp) = self
                .load_latest_checkpoint(Some(after), after, false)
                .await?
            {
                debug!(
                    checkpoint = cp.version.get(),
                    "jumping to a newer checkpoint"
                );
                listed.retain(|(v, _)| *v > cp.version);
                state = Arc::new(cp);
            }
        }
        debug!(
            from = state.version.get(),
            commits = listed.len(),
            "folding commits"
        );
        let mut ours = None;
        let folding = Arc::make_mut(&mut state);
        let mut commits = stream::iter(listed)
            .map(|(version, path)| async move {
                let commit = self.read_listed_commit(version, &path).await?;
                Ok::<_, Error>((version, commit))
            })
            .buffered(self.config.read_concurrency);
        while let Some((version, commit)) = commits.try_next().await? {
            if txn.is_some_and(|t| t == commit.txn_id) {
                ours = Some(version);
            }
            folding.apply(version, &commit.actions);
        }
        Ok((state, ours))
    }

    /// A commit that a listing showed; gone by now means the log lost it.
    async fn read_listed_commit(&self, version: CatalogVersion, path: &Path) -> Result<Commit> {
        let bytes = match self.store.get(path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(bytes) => decode_commit(&bytes, version, path),
            Err(object_store::Error::NotFound { .. }) => Err(Error::MissingCommit {
                path: path.to_string(),
                version,
            }),
            Err(e) => Err(Error::store("get", path, e)),
        }
    }
}

/// Parses the commit object stored at `path` for `version`.
fn decode_commit(bytes: &[u8], version: CatalogVersion, path: &Path) -> Result<Commit> {
    let corrupt = |reason: String| Error::CorruptCommit {
        path: path.to_string(),
        version,
        reason,
    };
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let Format { format } = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if format > LOG_FORMAT {
        return Err(Error::UnsupportedFormat {
            path: path.to_string(),
            found: format,
            supported: LOG_FORMAT,
        });
    }
    let commit: Commit = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if commit.version != version {
        return Err(corrupt(format!("holds version {}", commit.version)));
    }
    Ok(commit)
}
