//! The decoding stage (pure, no I/O): Kafka records in, checked change events with their
//! ids out, on several threads.
//!
//! Decoding is most of the compactor's CPU (JSON, schema checks, blake3 ids) and each record
//! decodes on its own, so a chunk of records is cut into contiguous slices decoded side by
//! side, one [`Decoder`] (with its own caches) per thread. The outcomes come back in the
//! records' order; everything that depends on order (offsets, dedup, batching) stays on the
//! compactor's loop.

use std::sync::Arc;

use strata_catalog::{
    AvroSchemas, DecodeError, DecodedRow, SchemaCache, SegmentRow, TableSchema, decode_debezium_row,
};

/// Below this many records per thread, a chunk is decoded on the caller's thread.
const MIN_RECORDS_PER_THREAD: usize = 64;

/// The parts of a Kafka record the decoder reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
}

/// What became of one record.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    /// Not a change (tombstone, transaction metadata, heartbeat, message).
    Skip,
    /// A change that fits its schema, as its segment stores it (strings borrowed from the
    /// record).
    Row {
        row: SegmentRow<'a>,
        schema: Arc<TableSchema>,
    },
    /// An Avro record whose writer schema is not known yet (read the schema topic, decode
    /// again).
    MissingSchema(u64),
    /// Bad input, to be quarantined.
    Bad(DecodeError),
}

/// One thread's decoding state: the envelope schemas seen.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    schemas: SchemaCache,
}

impl Decoder {
    /// A decoder resolving Avro writer schemas from `avro`.
    pub(crate) fn new(avro: AvroSchemas) -> Self {
        Self {
            schemas: SchemaCache::with_avro(avro),
        }
    }
}

impl Decoder {
    /// Decodes, checks and names one record.
    pub(crate) fn decode<'a>(&mut self, record: &RawRecord<'a>) -> Outcome<'a> {
        let value = record.value.unwrap_or_default();
        match decode_debezium_row(record.key, value, record.topic, &mut self.schemas) {
            Ok(DecodedRow::Skip(_)) => Outcome::Skip,
            Ok(DecodedRow::Row { row, schema }) => Outcome::Row { row, schema },
            Ok(DecodedRow::MissingSchema { fingerprint }) => Outcome::MissingSchema(fingerprint),
            Err(e) => Outcome::Bad(e.at(record.partition, record.offset)),
        }
    }
}

/// Decoders, one per thread, and the threads they run on (kept for the compactor's life:
/// a chunk is a few milliseconds of work, too little to start threads for).
#[derive(Debug)]
pub(crate) struct DecodePool {
    decoders: Vec<Decoder>,
    /// None with one thread: chunks decode on the caller's thread.
    pool: Option<rayon::ThreadPool>,
}

impl DecodePool {
    /// A pool of `threads` decoders (at least one), resolving Avro writer schemas from `avro`.
    pub(crate) fn new(threads: usize, avro: &AvroSchemas) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("strata-decode-{i}"))
                    .build()
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        Ok(Self {
            decoders: (0..threads).map(|_| Decoder::new(avro.clone())).collect(),
            pool,
        })
    }

    /// Decodes one record on the caller's thread.
    pub(crate) fn decode_one<'a>(&mut self, record: &RawRecord<'a>) -> Option<Outcome<'a>> {
        self.decoders.first_mut().map(|d| d.decode(record))
    }

    /// Decodes `records`, in their order, cut into contiguous slices decoded side by side.
    pub(crate) fn decode_all<'a>(&mut self, records: &[RawRecord<'a>]) -> Vec<Outcome<'a>> {
        use rayon::prelude::*;
        let threads = self
            .decoders
            .len()
            .min(records.len() / MIN_RECORDS_PER_THREAD)
            .max(1);
        let (Some(pool), true) = (&self.pool, threads > 1) else {
            let Some(first) = self.decoders.first_mut() else {
                return Vec::new();
            };
            return records.iter().map(|r| first.decode(r)).collect();
        };
        let per_thread = records.len().div_ceil(threads);
        let decoders = &mut self.decoders;
        let parts: Vec<Vec<Outcome<'a>>> = pool.install(|| {
            records
                .par_chunks(per_thread)
                .zip(decoders.par_iter_mut())
                .map(|(slice, decoder)| slice.iter().map(|r| decoder.decode(r)).collect())
                .collect()
        });
        parts.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> (Vec<u8>, Vec<u8>) {
        let key = format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"id"}}]}},"payload":{{"id":{i}}}}}"#
        );
        let row = r#"{"type":"struct","optional":true,"fields":[{"type":"int64","optional":false,"field":"id"},{"type":"int32","optional":true,"field":"n"}]}"#;
        let schema = format!(
            r#"{{"type":"struct","fields":[{},{},{{"type":"struct","field":"source","fields":[]}},{{"type":"string","field":"op"}}]}}"#,
            row.replacen('{', r#"{"field":"before","#, 1),
            row.replacen('{', r#"{"field":"after","#, 1)
        );
        // Every 7th record's `n` does not fit int32: quarantined, not a failure.
        let n = if i % 7 == 3 { 1_i64 << 40 } else { i };
        let value = format!(
            r#"{{"schema":{schema},"payload":{{"before":null,"after":{{"id":{i},"n":{n}}},"op":"c","source":{{"name":"s","schema":"public","table":"t","ts_us":{ts},"lsn":{lsn}}}}}}}"#,
            ts = 1_000 + i,
            lsn = 100 + i
        );
        (key.into_bytes(), value.into_bytes())
    }

    #[test]
    fn threads_give_the_outcomes_of_one_thread_in_order() {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = (0..1000).map(record).collect();
        let records: Vec<RawRecord<'_>> = raw
            .iter()
            .enumerate()
            .map(|(i, (key, value))| RawRecord {
                topic: "s.public.t",
                partition: 0,
                offset: i as i64,
                key: Some(key),
                value: if i == 500 { None } else { Some(value) },
            })
            .collect();
        let summary = |outcomes: Vec<Outcome<'_>>| -> Vec<String> {
            outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Skip => "skip".to_owned(),
                    Outcome::Row { row, .. } => format!("{} {:?}", row.position.seq, &row.id[..4]),
                    Outcome::MissingSchema(f) => format!("missing {f:016x}"),
                    Outcome::Bad(e) => e.to_string(),
                })
                .collect()
        };
        let one = summary(
            DecodePool::new(1, &AvroSchemas::default())
                .expect("pool")
                .decode_all(&records),
        );
        let many = summary(
            DecodePool::new(4, &AvroSchemas::default())
                .expect("pool")
                .decode_all(&records),
        );
        assert_eq!(one, many);
        assert_eq!(one[500], "skip", "a null value is a tombstone");
        assert!(one[1].starts_with("101 "), "{}", one[1]);
        assert!(
            one[3]
                .starts_with("topic s.public.t partition 0 offset 3: table s/public/t: column n:"),
            "{}",
            one[3]
        );
        let bad = one.iter().filter(|o| o.contains("out of range")).count();
        assert_eq!(bad, (0..1000).filter(|i| i % 7 == 3 && *i != 500).count());
    }
}
