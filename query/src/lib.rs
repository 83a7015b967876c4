//! # strata-query
//!
//! strata's SQL: DataFusion over the catalog's change segments. A [`StrataContext`] is a
//! DataFusion `SessionContext` where
//!
//! - every catalog table is registered as its **current state** under `namespace.table`
//!   (e.g. `public.orders`) and always under `source.namespace.table` too (quote a source
//!   with dashes: `"pg-main".public.orders`). When two sources share a `namespace.table`,
//!   only the three-part names are registered;
//! - `as_of('public.orders', TIMESTAMP '2026-11-25 10:00:00Z')` is the state **as of t,
//!   inclusive**: every change with `_commit_ts <= t`;
//! - `changes('public.orders', t1, t2)` is the change log with **`t1 < _commit_ts <= t2`**
//!   (exclusive, inclusive: consecutive ranges never overlap nor leave gaps), in source
//!   order, each change once, with the columns `_op`, `_commit_ts`, `_commit_pos`, `_seq`,
//!   `_tx_id`, `_unchanged` and the table's columns (the row image: `after`, or `before`
//!   for a delete; a column listed in `_unchanged` was not written, its NULL is not a value).
//!
//! Times are `TIMESTAMP` values (no zone = UTC), RFC 3339 strings, or µs since the epoch.
//!
//! ## Merge-on-read
//!
//! The state at t starts from the newest complete snapshot at or before t (see [`snapshot`]:
//! written by the compactor part of `strata run`) and folds in the change segments after it
//! (or every change segment with `min_commit_ts <= t`, when there is none), read with
//! the parquet crate's async reader over `object_store` (projection push-down, row groups
//! pruned on `_commit_ts` statistics, and on `_key` for `key = v` / `key IN (…)` filters on a
//! single-column key). Per key the latest change by (`_commit_pos`, `_seq`) wins, **per
//! column**: a column in `_unchanged` keeps the previous change's value. A delete hides the
//! row; a truncate hides every row with an earlier position; snapshot reads (`r`) are
//! writes; copies of one change (same `_event_id`) count once. See `merge`.
//!
//! **Transactions are all or nothing**: the cut is by commit time, and every event of a
//! transaction carries the same commit time and commit position, so a transaction is
//! entirely in the state at t or entirely out.
//!
//! The merge runs inside each `scan` and hands DataFusion an in-memory source: chosen over
//! a `ROW_NUMBER()` window plan because per-column "unchanged" values need the key's whole
//! ordered history, which a k-way merge of the (already sorted) segments gives in one pass.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use object_store::{ObjectStore, memory::InMemory, path::Path};
//! use strata_catalog::{Catalog, CatalogConfig};
//! use strata_query::StrataContext;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
//! let catalog = Arc::new(Catalog::open(Arc::clone(&store), Path::from("w"), CatalogConfig::default()).await?);
//! let strata = StrataContext::new(catalog, store)?;
//! let err = strata.sql("SELECT * FROM as_of('public.orders', now())").await.unwrap_err();
//! assert!(err.to_string().contains("unknown table `public.orders`"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! No optional features. `testing` builds history by hand (tests, benchmarks).

pub mod coalesce;
pub mod error;
mod merge;
pub mod periodic;
mod provider;
mod read;
pub mod snapshot;
pub mod testing;

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use object_store::ObjectStore;
use strata_catalog::Catalog;

pub use crate::coalesce::{CoalesceConfig, CoalesceStats, Coalescer};
pub use crate::error::{Error, Result};
use crate::provider::{
    AsOfFunction, ChangesFunction, Shared, StateTable, full_name, known_names, short_name,
};
pub use crate::snapshot::{SnapshotConfig, SnapshotStats, Snapshotter, build_snapshot};

/// A DataFusion session over a strata catalog: current-state tables, `as_of`, `changes`.
pub struct StrataContext {
    ctx: SessionContext,
    shared: Shared,
}

impl fmt::Debug for StrataContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrataContext")
            .field("catalog", &self.shared.catalog)
            .finish_non_exhaustive()
    }
}

impl StrataContext {
    /// A session with every table of `catalog` (as of its current state) registered, and
    /// the `as_of` / `changes` table functions. Segment paths resolve under the catalog's
    /// root in `store`.
    pub fn new(catalog: Arc<Catalog>, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let shared = Shared { catalog, store };
        ctx.register_udtf("as_of", Arc::new(AsOfFunction(shared.clone())));
        ctx.register_udtf("changes", Arc::new(ChangesFunction(shared.clone())));
        let this = Self { ctx, shared };
        this.register_tables()?;
        Ok(this)
    }

    /// The DataFusion session, for anything beyond [`StrataContext::sql`].
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Every name a table answers to (`namespace.table`, `source.namespace.table`), sorted.
    pub fn table_names(&self) -> Vec<String> {
        known_names(&self.shared.catalog.state())
    }

    /// Plans `query`; an unknown table is an [`Error::UnknownTable`] listing the known ones.
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        self.ctx.sql(query).await.map_err(|e| self.explain(e))
    }

    /// Runs `query` and collects its result.
    pub async fn query(&self, query: &str) -> Result<Vec<RecordBatch>> {
        self.sql(query)
            .await?
            .collect()
            .await
            .map_err(|e| self.explain(e))
    }

    /// Reads the catalog's newest version and registers tables that appeared since.
    pub async fn refresh(&self) -> Result<()> {
        self.shared.catalog.refresh().await?;
        self.register_tables()
    }

    fn register_tables(&self) -> Result<()> {
        let state = self.shared.catalog.state();
        let tables: Vec<_> = state.tables().cloned().collect();
        for table in &tables {
            let provider = match StateTable::new(self.shared.clone(), &state, table.clone(), None) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(%table, error = %e, "table not registered");
                    continue;
                }
            };
            let unique = tables
                .iter()
                .filter(|t| t.namespace == table.namespace && t.table == table.table)
                .count()
                == 1;
            if unique {
                self.schema(None, &table.namespace)?;
                let name = TableReference::partial(table.namespace.as_str(), table.table.as_str());
                self.ctx.deregister_table(name.clone())?;
                self.ctx.register_table(name, provider.clone())?;
            }
            self.schema(Some(&table.source), &table.namespace)?;
            let name = TableReference::full(
                table.source.as_str(),
                table.namespace.as_str(),
                table.table.as_str(),
            );
            self.ctx.deregister_table(name.clone())?;
            self.ctx.register_table(name, provider)?;
            tracing::debug!(short = %short_name(table), full = %full_name(table), "table registered");
        }
        Ok(())
    }

    /// Makes sure DataFusion catalog `source` (default: the session's) has schema `namespace`.
    fn schema(&self, source: Option<&str>, namespace: &str) -> Result<()> {
        let default = self
            .ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let name = source.unwrap_or(&default);
        let catalog = match self.ctx.catalog(name) {
            Some(c) => c,
            None => {
                let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
                self.ctx.register_catalog(name, Arc::clone(&c));
                c
            }
        };
        if catalog.schema(namespace).is_none() {
            catalog.register_schema(namespace, Arc::new(MemorySchemaProvider::new()))?;
        }
        Ok(())
    }

    /// Turns DataFusion's "table not found" into an error that lists the known tables;
    /// unwraps strata's own errors.
    fn explain(&self, e: DataFusionError) -> Error {
        let message = e.to_string();
        if let Some(rest) = message.split("table '").nth(1)
            && let Some((name, tail)) = rest.split_once('\'')
            && tail.trim_start().starts_with("not found")
        {
            return Error::UnknownTable {
                name: name.to_owned(),
                known: self.table_names(),
            };
        }
        match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::DataFusion(DataFusionError::External(other)),
            },
            DataFusionError::Context(context, inner) => match *inner {
                DataFusionError::External(x) => match x.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => Error::DataFusion(DataFusionError::Context(
                        context,
                        Box::new(DataFusionError::External(other)),
                    )),
                },
                other => Error::DataFusion(DataFusionError::Context(context, Box::new(other))),
            },
            other => Error::DataFusion(other),
        }
    }
}
