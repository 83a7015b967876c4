//! PostgreSQL source: logical replication with the `pgoutput` plugin.

pub mod config;
pub mod envelope;
pub mod pgoutput;
pub mod replication;
pub mod snapshot;
pub mod source;
pub mod value;

pub use config::{PostgresSourceConfig, SnapshotMode};
pub(crate) use source::connect_sql;
pub use source::{CaptureError, CaptureStats, PostgresCapture};
