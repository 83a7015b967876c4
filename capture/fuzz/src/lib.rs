//! The PostgreSQL decoders of strata-capture, compiled from their source files for fuzzing.

#[path = "../../src/postgres/pgoutput.rs"]
pub mod pgoutput;
#[path = "../../src/postgres/value.rs"]
pub mod value;
