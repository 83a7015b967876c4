//! The integration tests of `strata-catalog`, in one binary.
//!
//! `s3` needs the S3 server of the dev stack: `eval "$(dev/stack up)"` first.

mod behaviour;
mod concurrency;
mod corruption;
mod open_cost;
mod s3;
mod support;
