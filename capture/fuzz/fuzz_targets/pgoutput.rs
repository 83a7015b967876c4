//! Arbitrary bytes into the pgoutput decoder and the replication CopyData decoder.
//!
//! The first byte picks the protocol version (bits 0-1: version 1 to 4) and whether the message
//! is inside a stream (bit 2); the rest is the message. With bit 3 set, the rest is instead split
//! on `0xFF` bytes into a sequence of messages for the stateful decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_capture_fuzz::pgoutput::{
    PgoutputDecoder, ProtocolVersion, ReplicationMessage, StandbyStatusUpdate, decode,
    decode_replication_message,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, message)) = data.split_first() else {
        return;
    };
    let version = match control & 3 {
        0 => ProtocolVersion::V1,
        1 => ProtocolVersion::V2,
        2 => ProtocolVersion::V3,
        _ => ProtocolVersion::V4,
    };
    let in_stream = control & 4 != 0;

    if control & 8 != 0 {
        let mut decoder = PgoutputDecoder::new(version);
        for part in message.split(|&b| b == 0xFF).filter(|part| !part.is_empty()) {
            let _ = decoder.decode(part);
        }
        return;
    }

    let _ = decode(message, version, in_stream);
    let _ = StandbyStatusUpdate::decode(message);
    if let Ok(ReplicationMessage::XLogData(xlog)) = decode_replication_message(message) {
        let _ = decode(xlog.data, version, in_stream);
    }
    // Error messages format every field: make sure that never panics either.
    if let Err(error) = decode(message, version, in_stream) {
        let _ = error.to_string();
    }
});
