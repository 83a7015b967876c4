//! The integration tests of `strata-capture`, in one binary.
//!
//! They talk to the real services of the dev stack and fail when those are missing: run
//! `eval "$(dev/stack up)"` first (PostgreSQL alone: `eval "$(dev/stack up --only postgres)"`).

mod replication;
mod support;
