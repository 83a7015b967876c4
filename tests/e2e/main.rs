//! strata's end-to-end tests, against the real services that `dev/stack up` starts.
//!
//! The service addresses come from the environment (`eval "$(dev/stack up)"` sets them). A test
//! whose service is not configured fails with a message saying so; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod avro;
mod cli;
mod coalesce;
mod compose;
mod debezium;
mod history;
mod metrics;
mod pg_capture;
mod services;
mod sql;
mod support;
