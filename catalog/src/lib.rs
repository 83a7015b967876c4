//! # strata-catalog
//!
//! The memory of strata: which Parquet files hold which history of which table, committed
//! atomically with the Kafka offsets they were built from, in a transactional log on any
//! object store. A compactor that crashes resumes from the catalog's offsets and neither
//! loses nor doubles a change; two compactors that both think they own a partition cannot
//! both commit it.
//!
//! - [`Catalog`]: open a catalog under a root of an [`object_store::ObjectStore`],
//!   [`commit`](Catalog::commit) actions with optimistic concurrency (`PutMode::Create` per
//!   version, conflict checks, retries), [`refresh`](Catalog::refresh) to catch up.
//! - [`CatalogState`]: the fold of the log at one version, with the read side: segments
//!   between two instants, the snapshot and schema in force at an instant, watermarks,
//!   next offsets, quarantine.
//! - [`ChangeEvent`]: the change-event model every part shares, and
//!   [`decode_debezium`], the decoder of Debezium JSON envelopes ([`event`]);
//!   [`decode_debezium_row`] decodes a record straight into the row its segment stores.
//! - [`TableSchema`]: a table's columns with their Connect types, the Arrow schema of
//!   change segments and [`events_to_record_batch`] ([`schema`]).
//! - [`SegmentBuilder`]: appends [`SegmentRow`]s (cells already of their Arrow types) column
//!   by column and finishes them into a sorted segment batch ([`rows`]).
//! - [`Action`]: what a commit can say (`AddSegment`, `AddSnapshot`, `SetSchema`,
//!   `SetWatermark`, `ConsumeOffsets`, `Quarantine`, `RemoveSegment`, `RemoveSnapshot`).
//!
//! The protocol (object layout, commit and open algorithms) is written down in [`log`].
//! Times are `i64` microseconds since the Unix epoch, UTC.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use object_store::{memory::InMemory, path::Path};
//! use strata_catalog::{
//!     Action, Catalog, CatalogConfig, CommitInfo, Error, OffsetRange, Segment, TableId,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> strata_catalog::Result<()> {
//! let store = Arc::new(InMemory::new());
//! let catalog = Catalog::open(store, Path::from("warehouse"), CatalogConfig::default()).await?;
//!
//! let orders = TableId::new("pg-main", "public", "orders");
//! let consumed = |from, to| {
//!     Action::ConsumeOffsets(OffsetRange {
//!         group: "strata-compactor".into(),
//!         topic: "pg-main.public.orders".into(),
//!         partition: 0,
//!         from_offset: from,
//!         to_offset: to,
//!     })
//! };
//! // A compactor wrote a segment from Kafka offsets [0, 42) and commits both at once.
//! let segment = Action::AddSegment(Segment {
//!     table: orders.clone(),
//!     path: "pg-main/public/orders/changes/000001.parquet".into(),
//!     rows: 42,
//!     bytes: 8_192,
//!     min_key: "0001".into(),
//!     max_key: "0042".into(),
//!     min_commit_ts: 1_700_000_000_000_000,
//!     max_commit_ts: 1_700_000_060_000_000,
//!     min_position: "0/16B3748".into(),
//!     max_position: "0/16B9A10".into(),
//!     content_version: None,
//! });
//! let version = catalog
//!     .commit(vec![segment, consumed(0, 42)], CommitInfo::new("compactor-1", "compact"))
//!     .await?;
//! assert_eq!(version.get(), 1);
//!
//! let state = catalog.state();
//! assert_eq!(state.next_offset("strata-compactor", "pg-main.public.orders", 0), Some(42));
//! let t = 1_700_000_030_000_000;
//! assert_eq!(state.segments_between(&orders, t, t).count(), 1);
//!
//! // A second consumer that also read [0, 42) cannot commit it again.
//! let again = catalog
//!     .commit(vec![consumed(0, 42)], CommitInfo::new("compactor-2", "compact"))
//!     .await;
//! assert!(matches!(again, Err(Error::Conflict { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! No optional features. Any `object_store` backend works; the workspace enables `aws`.

pub mod avro;
pub mod error;
pub mod event;
pub mod log;
mod parallel;
pub mod rows;
pub mod schema;
pub mod table;

pub use crate::error::{ConflictKind, Error, Result};
pub use crate::event::{
    AvroSchemas, ChangeEvent, DecodeError, Decoded, DecodedEvent, DecodedRow, DigestHash,
    DigestHasher, EventIdVersion, EventIdVersions, Operation, Row, SchemaCache, Skip,
    SourcePosition, decode_debezium, decode_debezium_cached, decode_debezium_row, encode_key,
};
pub use crate::log::{
    Action, Catalog, CatalogConfig, CatalogState, CatalogVersion, Commit, CommitInfo, OffsetRange,
    QuarantineEntry, QuarantinedObject, SchemaVersion, Segment, SegmentEntry, SegmentRemoval,
    Snapshot, SnapshotRemoval, TableState, Watermark,
};
pub use crate::rows::{Cell, SegmentBuilder, SegmentRow, SegmentSpan};
pub use crate::schema::{
    ColumnSchema, ColumnType, ConnectType, SchemaError, TableSchema, encode_segment,
    encode_segment_parallel, events_to_record_batch,
};
pub use crate::table::TableId;
