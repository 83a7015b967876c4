//! Arbitrary text into the PostgreSQL value parser, for every supported type and its array.
//!
//! The first byte picks the type (low bits: the scalar type; bit 7: its array type); the rest is
//! the column text. Parsed values are also rendered as Debezium JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_capture_fuzz::value::{ScalarType, parse_text_bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let index = usize::from(selector & 0x7F) % ScalarType::ALL.len();
    let Some(&scalar) = ScalarType::ALL.get(index) else {
        return;
    };
    let oid = if selector & 0x80 != 0 {
        scalar.array_oid()
    } else {
        scalar.oid()
    };
    match parse_text_bytes(oid, text) {
        Ok(value) => {
            let _ = value.to_debezium_json();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
