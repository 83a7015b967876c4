//! # strata-compactor
//!
//! The Kafka consumer group that turns Debezium change topics into history: it decodes
//! each record ([`strata_catalog::decode_debezium`]; chunks of records on several threads,
//! `decode_threads`), drops copies of a mutation already
//! seen in the partition (replica copies and resends share an event id), buffers events per
//! table, writes sorted zstd Parquet change segments under
//! `<root>/<source>/<namespace>/<table>/changes/<uuid>.parquet`, and commits them to the
//! catalog in ONE commit with the Kafka offsets they came from (plus schema changes,
//! watermarks and quarantined records). Nothing is acknowledged before that commit.
//!
//! Positions come from the catalog, never from Kafka's committed offsets: on assignment a
//! partition starts at the catalog's next offset. A crash replays from there, and since
//! segments and offsets commit together nothing is lost or doubled. Two compactors that
//! both hold a partition cannot both commit it: the loser gets a conflict, drops its batch
//! and seeks to the catalog's offsets.
//!
//! Bad input (an undecodable record, a schema or value that cannot be mapped) is stored raw
//! at `<root>/_quarantine/<topic>/<partition>-<offset>.json` and named by a `Quarantine`
//! action in the same commit that advances past it.
//!
//! Snapshots are folded from the segments by `strata_query::Snapshotter`, which `strata run`
//! starts next to the compactor: the fold is the reader's merge-on-read, so a snapshot and a
//! read of the same instant cannot disagree.
//!
//! Segment paths in `AddSegment` are relative to the catalog root; [`object_path`] makes
//! the object path.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use object_store::{local::LocalFileSystem, path::Path};
//! use strata_catalog::{Catalog, CatalogConfig};
//! use strata_compactor::{Compactor, CompactorConfig};
//!
//! let store = Arc::new(LocalFileSystem::new_with_prefix("/var/lib/strata")?);
//! let catalog = Arc::new(Catalog::open(store.clone(), Path::from(""), CatalogConfig::default()).await?);
//! let mut kafka = rdkafka::ClientConfig::new();
//! kafka.set("bootstrap.servers", "127.0.0.1:9092");
//! let compactor = Compactor::new(CompactorConfig::default(), kafka, catalog, store)?;
//! let stats = compactor.stats();
//! let cancel = tokio_util::sync::CancellationToken::new();
//! compactor.run(cancel).await?;
//! println!("{:?}", stats.snapshot());
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! No optional features.

mod batch;
mod compactor;
pub mod config;
mod decode;
pub mod error;
mod fetch;
mod schemas;
mod segment;
pub mod stats;

pub use crate::compactor::{Compactor, quarantine_path};
pub use crate::config::CompactorConfig;
pub use crate::error::{Error, Result};
#[doc(hidden)]
pub use crate::fetch::read_in_chunks;
pub use crate::segment::{object_path, position_string};
pub use crate::stats::{CompactorStats, CompactorStatsSnapshot};
