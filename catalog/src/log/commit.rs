//! The write side of [`Catalog`]: optimistic commits with `PutMode::Create`, and
//! checkpoints. The protocol is described in the [module docs](super).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use object_store::{ObjectStoreExt, PutMode, PutPayload};
use tracing::{Span, debug, field, info, instrument, warn};
use uuid::Uuid;

use super::Catalog;
use super::actions::{
    Action, CatalogVersion, CommitInfo, CommitRef, commit_format, validate_actions,
};
use super::checkpoint::{self, LastCheckpoint};
use super::state::CatalogState;
use crate::error::{Error, Result};

impl Catalog {
    /// Commits `actions` as the next version and returns it.
    ///
    /// The actions are checked against the current state and, after every lost race,
    /// against the state including the winners; a contradiction with the latest state is
    /// [`Error::Conflict`] (nothing written). When other writers keep winning,
    /// [`Error::VersionConflict`] after `max_commit_attempts`. After a successful commit
    /// [`Catalog::state`] includes it. An [`Error::ObjectStore`] leaves the outcome unknown:
    /// refresh and look.
    #[instrument(
        skip_all,
        fields(
            root = %self.layout.root,
            writer = %info.writer_id,
            operation = %info.operation,
            actions = actions.len(),
            version = field::Empty,
            attempts = field::Empty,
        )
    )]
    pub async fn commit(&self, actions: Vec<Action>, info: CommitInfo) -> Result<CatalogVersion> {
        validate_actions(&actions)?;
        let txn_id = Uuid::new_v4().to_string();
        let mut base = self.state();

        for attempt in 1..=self.config.max_commit_attempts {
            if let Err(conflict) = base.check(&actions) {
                // Judge only against the latest state: a stale one may disagree spuriously.
                let (fresh, _) = self.catch_up(Arc::clone(&base), None, false).await?;
                if fresh.version == base.version {
                    return Err(Error::Conflict {
                        version: base.version,
                        conflict,
                    });
                }
                self.install(Arc::clone(&fresh));
                base = fresh;
                base.check(&actions).map_err(|conflict| Error::Conflict {
                    version: base.version,
                    conflict,
                })?;
            }
            let version = base.version.next();
            let path = self.layout.commit_path(version);
            let body = serde_json::to_vec(&CommitRef {
                format: commit_format(&actions),
                version,
                txn_id: &txn_id,
                wall_time_us: chrono::Utc::now().timestamp_micros(),
                info: &info,
                actions: &actions,
            })
            .map_err(|e| Error::Encode {
                what: "commit",
                reason: e.to_string(),
            })?;

            match self
                .store
                .put_opts(&path, PutPayload::from(body), PutMode::Create.into())
                .await
            {
                Ok(_) => {
                    Span::current().record("version", version.get());
                    Span::current().record("attempts", attempt);
                    let state = self.install_commit(base, version, &actions);
                    if version
                        .get()
                        .is_multiple_of(self.config.checkpoint_interval)
                        && let Err(e) = self.write_checkpoint(&state).await
                    {
                        warn!(version = version.get(), error = %e, "checkpoint not written");
                    }
                    return Ok(version);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    debug!(
                        version = version.get(),
                        attempt, "lost the race for this version"
                    );
                    let (caught_up, ours) = self.catch_up(base, Some(&txn_id), false).await?;
                    if let Some(version) = ours {
                        // Our PUT landed but its reply said otherwise (a retried request).
                        info!(
                            version = version.get(),
                            "found own commit after a lost reply"
                        );
                        Span::current().record("version", version.get());
                        Span::current().record("attempts", attempt);
                        self.install(caught_up);
                        return Ok(version);
                    }
                    self.install(Arc::clone(&caught_up));
                    base = caught_up;
                    if attempt < self.config.max_commit_attempts {
                        tokio::time::sleep(self.backoff(attempt)).await;
                    }
                }
                Err(e) => return Err(Error::store("put", &path, e)),
            }
        }
        Err(Error::VersionConflict {
            attempts: self.config.max_commit_attempts,
            version: base.version,
        })
    }

    /// Writes a checkpoint of the current state (if anything is committed) and returns its
    /// version. Commits write checkpoints on their own every `checkpoint_interval`
    /// versions; this is for operators and tests.
    pub async fn checkpoint(&self) -> Result<CatalogVersion> {
        let state = self.state();
        if state.version != CatalogVersion::EMPTY {
            self.write_checkpoint(&state).await?;
        }
        Ok(state.version)
    }

    /// Folds our winning commit into the shared state, in place when no reader holds it.
    fn install_commit(
        &self,
        base: Arc<CatalogState>,
        version: CatalogVersion,
        actions: &[Action],
    ) -> Arc<CatalogState> {
        let mut guard = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&guard, &base) {
            drop(base);
            Arc::make_mut(&mut guard).apply(version, actions);
            Arc::clone(&guard)
        } else {
            // Another task of this process moved the shared state meanwhile.
            let mut state = base;
            Arc::make_mut(&mut state).apply(version, actions);
            if state.version > guard.version {
                *guard = Arc::clone(&state);
            }
            state
        }
    }

    /// Writes the checkpoint of `state` (Create: a concurrent identical write is fine),
    /// then moves the `_last_checkpoint` hint to it.
    #[instrument(skip_all, fields(root = %self.layout.root, version = state.version.get()))]
    async fn write_checkpoint(&self, state: &Arc<CatalogState>) -> Result<()> {
        let version = state.version;
        let path = self.layout.checkpoint_path(version);
        let to_encode = Arc::clone(state);
        let bytes = tokio::task::spawn_blocking(move || checkpoint::encode(&to_encode))
            .await
            .map_err(|e| Error::Encode {
                what: "checkpoint",
                reason: format!("encoder task failed: {e}"),
            })??;
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
            .await
        {
            Ok(_) => debug!(%path, "checkpoint written"),
            Err(object_store::Error::AlreadyExists { .. }) => {
                debug!(%path, "checkpoint already written by another writer");
            }
            Err(e) => return Err(Error::store("put", &path, e)),
        }
        let hint = serde_json::to_vec(&LastCheckpoint { version }).map_err(|e| Error::Encode {
            what: "checkpoint hint",
            reason: e.to_string(),
        })?;
        self.store
            .put(&self.layout.last_checkpoint, PutPayload::from(hint))
            .await
            .map_err(|e| Error::store("put", &self.layout.last_checkpoint, e))?;
        Ok(())
    }

    /// Exponential backoff with jitter: between half and all of
    /// `min(retry_backoff_min_ms * 2^(attempt-1), retry_backoff_max_ms)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .retry_backoff_min_ms
            .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(20))
            .min(self.config.retry_backoff_max_ms);
        let half = exp / 2;
        let jitter = Uuid::new_v4().as_u64_pair().0 % (exp - half + 1);
        Duration::from_millis(half + jitter)
    }
}
