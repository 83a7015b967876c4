//! The decoding stage (pure, no I/O): Kafka records in, change rows appended to Arrow
//! builders and their ids out, on several threads.
//!
//! Decoding and appending are most of the compactor's CPU (Avro or JSON, schema checks,
//! blake3 ids, copying cells into columns) and each record decodes on its own, so a chunk of
//! records is cut into contiguous slices decoded side by side, one [`Decoder`] (with its own
//! caches and its own builders, [`Appended`]) per thread. Each row is appended as soon as it
//! is decoded; the outcomes come back in the records' order with where their rows went, and
//! everything that depends on order (offsets, dedup) stays on the compactor's loop, which
//! retracts the rows it does not take. A flush merges the threads' builders per table and
//! schema ([`crate::batch::group_segments`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use strata_catalog::{
    AvroSchemas, DecodeError, DecodedRow, EventIdVersions, SchemaCache, TableId, TableSchema,
    decode_debezium_row,
};

use crate::batch::{Appended, RowAt};

/// Below this many records per thread, a chunk is decoded on the caller's thread.
const MIN_RECORDS_PER_THREAD: usize = 64;
/// Records a decode thread takes at a time.
const PIECE_RECORDS: usize = 128;

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
pub(crate) enum Outcome {
    /// Not a change (tombstone, transaction metadata, heartbeat, message).
    Skip,
    /// A change that fits its schema, appended at `at`. (No schema here: each decoder's
    /// schemas stay on its thread, see [`DecodePool::take_topic_tables`].)
    Row {
        id: [u8; 32],
        commit_ts_us: i64,
        at: RowAt,
    },
    /// An Avro record whose writer schema is not known yet (read the schema topic, decode
    /// again).
    MissingSchema(u64),
    /// Bad input, to be quarantined.
    Bad(DecodeError),
}

impl Outcome {
    /// Where its row was appended, for a row.
    pub(crate) fn row_at(&self) -> Option<RowAt> {
        match self {
            Outcome::Row { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// One thread's decoding state: the envelope schemas seen, and the rows appended since the
/// last flush.
#[derive(Debug)]
pub(crate) struct Decoder {
    thread: u32,
    schemas: SchemaCache,
    appended: Appended,
    /// The tables seen on each topic, and those not reported yet.
    topic_tables: HashMap<String, HashSet<TableId>>,
    new_topic_tables: Vec<(String, TableId)>,
    /// The schema of the last row and its topic (most rows repeat them).
    last: Option<Arc<TableSchema>>,
    last_topic: String,
}

impl Decoder {
    /// Thread `thread`'s decoder, resolving Avro writer schemas from `avro`, hashing each
    /// table's event ids as `ids` says.
    pub(crate) fn new(thread: u32, avro: AvroSchemas, ids: EventIdVersions) -> Self {
        Self {
            thread,
            schemas: SchemaCache::with_avro(avro).with_event_ids(ids),
            appended: Appended::default(),
            topic_tables: HashMap::new(),
            new_topic_tables: Vec::new(),
            last: None,
            last_topic: String::new(),
        }
    }

    /// Notes that `schema`'s table is on `topic`.
    fn saw_table(&mut self, topic: &str, schema: &Arc<TableSchema>) {
        if self
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, schema))
            && self.last_topic == topic
        {
            return;
        }
        self.last = Some(Arc::clone(schema));
        self.last_topic.clear();
        self.last_topic.push_str(topic);
        // Allocates only for a pair not seen before.
        if self
            .topic_tables
            .get(topic)
            .is_some_and(|tables| tables.contains(&schema.table))
        {
            return;
        }
        self.topic_tables
            .entry(topic.to_owned())
            .or_default()
            .insert(schema.table.clone());
        self.new_topic_tables
            .push((topic.to_owned(), schema.table.clone()));
    }

    /// Decodes, checks and names one record, and appends its row; `arrival` numbers the
    /// record in the consumer's order.
    pub(crate) fn decode(&mut self, record: &RawRecord<'_>, arrival: u64) -> Outcome {
        let value = record.value.unwrap_or_default();
        match decode_debezium_row(record.key, value, record.topic, &mut self.schemas) {
            Ok(DecodedRow::Skip(_)) => Outcome::Skip,
            Ok(DecodedRow::Row { row, schema }) => {
                self.saw_table(record.topic, &schema);
                let (id, commit_ts_us) = (row.id, row.commit_ts_us);
                match self.appended.push(row, &schema, arrival) {
                    Ok((segment, row)) => Outcome::Row {
                        id,
                        commit_ts_us,
                        at: RowAt {
                            thread: self.thread,
                            segment,
                            row,
                        },
                    },
                    // The decoder makes rows that fit their schema; one that does not is
                    // kept aside like bad input rather than stopping the compactor.
                    Err(e) => Outcome::Bad(
                        DecodeError {
                            topic: record.topic.to_owned(),
                            partition: None,
                            offset: None,
                            reason: format!("table {}: {e}", schema.table),
                        }
                        .at(record.partition, record.offset),
                    ),
                }
            }
            Ok(DecodedRow::MissingSchema { fingerprint }) => Outcome::MissingSchema(fingerprint),
            Err(e) => Outcome::Bad(e.at(record.partition, record.offset)),
        }
    }
}

/// Decoders, one per thread, and the threads they run on (kept for the compactor's life:
/// a chunk is a few milliseconds of work, too little to start threads for). The default
/// pool has neither.
#[derive(Debug, Default)]
pub(crate) struct DecodePool {
    decoders: Vec<Decoder>,
    /// None with one thread: chunks decode on the caller's thread.
    pool: Option<rayon::ThreadPool>,
}

impl DecodePool {
    /// A pool of `threads` decoders (at least one), resolving Avro writer schemas from `avro`,
    /// hashing each table's event ids as `ids` says.
    pub(crate) fn new(
        threads: usize,
        avro: &AvroSchemas,
        ids: &EventIdVersions,
    ) -> std::io::Result<Self> {
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
            decoders: (0..threads)
                .map(|i| Decoder::new(i as u32, avro.clone(), ids.clone()))
                .collect(),
            pool,
        })
    }

    /// Decodes one record on the caller's thread.
    pub(crate) fn decode_one(&mut self, record: &RawRecord<'_>, arrival: u64) -> Option<Outcome> {
        self.decoders.first_mut().map(|d| d.decode(record, arrival))
    }

    /// Takes back a row appended by a decoder.
    pub(crate) fn retract(&mut self, at: RowAt) {
        if let Some(decoder) = self.decoders.get_mut(at.thread as usize) {
            decoder.appended.retract(at.segment, at.row);
        }
    }

    /// Every decoder's rows since the last call (or [`DecodePool::clear`]).
    pub(crate) fn take_appended(&mut self) -> Vec<Appended> {
        self.decoders
            .iter_mut()
            .map(|d| std::mem::take(&mut d.appended))
            .collect()
    }

    /// The (topic, table) pairs the decoders saw for the first time since the last call.
    pub(crate) fn take_topic_tables(&mut self) -> Vec<(String, TableId)> {
        self.decoders
            .iter_mut()
            .flat_map(|d| std::mem::take(&mut d.new_topic_tables))
            .collect()
    }

    /// Drops every decoder's rows (the batch is dropped).
    pub(crate) fn clear(&mut self) {
        drop(self.take_appended());
    }

    /// Rows appended (retracted ones too).
    pub(crate) fn appended_rows(&self) -> usize {
        self.decoders.iter().map(|d| d.appended.len()).sum()
    }

    /// The bytes of rows that may still be appended before a table's rows reach
    /// `max_segment_bytes` or all of them together `max_batch_bytes` (0: time to flush).
    /// Retracted rows count: they take memory until the flush.
    pub(crate) fn room(&self, max_segment_bytes: u64, max_batch_bytes: u64) -> u64 {
        let total = self.bytes();
        let batch_room = max_batch_bytes.saturating_sub(total);
        if total < max_segment_bytes {
            return batch_room.min(max_segment_bytes - total);
        }
        let mut tables: HashMap<&TableId, u64> = HashMap::new();
        for segment in self.decoders.iter().flat_map(|d| &d.appended.segments) {
            *tables.entry(&segment.schema().table).or_default() += segment.builder.bytes();
        }
        let largest = tables.values().copied().max().unwrap_or_default();
        batch_room.min(max_segment_bytes.saturating_sub(largest))
    }

    /// The bytes of the rows appended (retracted ones too).
    pub(crate) fn bytes(&self) -> u64 {
        self.decoders.iter().map(|d| d.appended.bytes).sum()
    }

    /// The mean bytes of the rows appended, if any.
    pub(crate) fn row_bytes(&self) -> Option<u64> {
        let rows = self.appended_rows() as u64;
        let bytes = self.bytes();
        bytes.checked_div(rows)
    }

    /// Decodes `records`, in their order, side by side on the decode threads;
    /// `first_arrival` numbers the first record in the consumer's order.
    #[cfg(test)]
    pub(crate) fn decode_all(
        &mut self,
        records: &[RawRecord<'_>],
        first_arrival: u64,
    ) -> Vec<Outcome> {
        self.decode_beside(records, first_arrival, || ()).0
    }

    /// Decodes `records`, in their order, side by side on the decode threads, while `beside`
    /// runs on the caller's thread; `first_arrival` numbers the first record in the
    /// consumer's order. `beside` must not touch the decoders: it is how the loop takes one
    /// chunk while the next decodes.
    ///
    /// A chunk too small for two threads ([`MIN_RECORDS_PER_THREAD`]), or any chunk without
    /// decode threads, is decoded on the caller's thread after `beside`: handing a few
    /// records to a pool thread and waiting for it costs more than decoding them. At a steady
    /// 10,000 rows/s a chunk is about one transaction's rows; handing each over took 28.0 and
    /// 28.8 CPU-s of `strata run` in a minute against 24.0 and 25.9 without (alternated).
    pub(crate) fn decode_beside<R>(
        &mut self,
        records: &[RawRecord<'_>],
        first_arrival: u64,
        beside: impl FnOnce() -> R,
    ) -> (Vec<Outcome>, R) {
        let decoders = &mut self.decoders;
        let threads = decode_threads(decoders.len(), records.len());
        match &self.pool {
            Some(pool) if threads > 1 => {
                let mut outcomes = Vec::new();
                let besides = pool.in_place_scope(|scope| {
                    scope.spawn(|_| {
                        outcomes = decode_slices(decoders, records, first_arrival);
                    });
                    beside()
                });
                (outcomes, besides)
            }
            _ => {
                let besides = beside();
                (decode_slices(decoders, records, first_arrival), besides)
            }
        }
    }
}

/// How many of `decoders` threads decode `records` records: one below
/// [`MIN_RECORDS_PER_THREAD`] records per thread.
fn decode_threads(decoders: usize, records: usize) -> usize {
    decoders.min(records / MIN_RECORDS_PER_THREAD).max(1)
}

/// Decodes `records` with `decoders`, side by side on the current rayon pool, each worker
/// thread with its own decoder (on the caller's thread below [`MIN_RECORDS_PER_THREAD`]
/// records per decoder). Records go out in pieces of [`PIECE_RECORDS`], taken by whichever
/// worker is free: a worker the OS stops for a while (the cores are shared with the loop and
/// the segment encoder) holds up one piece, not half of the chunk.
fn decode_slices(
    decoders: &mut [Decoder],
    records: &[RawRecord<'_>],
    first_arrival: u64,
) -> Vec<Outcome> {
    use rayon::prelude::*;
    let threads = decode_threads(decoders.len(), records.len());
    let in_pool =
        rayon::current_thread_index().is_some() && rayon::current_num_threads() <= decoders.len();
    if threads == 1 || !in_pool {
        let Some(first) = decoders.first_mut() else {
            return Vec::new();
        };
        return (first_arrival..)
            .zip(records)
            .map(|(arrival, r)| first.decode(r, arrival))
            .collect();
    }
    // Worker i uses decoder i (a pool has no more workers than decoders): the locks are
    // never contended.
    let decoders: Vec<Mutex<&mut Decoder>> = decoders.iter_mut().map(Mutex::new).collect();
    let pieces: Vec<Vec<Outcome>> = records
        .par_chunks(PIECE_RECORDS)
        .enumerate()
        .map(|(i, piece)| {
            let worker = rayon::current_thread_index().unwrap_or_default();
            let mut decoder = decoders[worker % decoders.len()]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = first_arrival + (i * PIECE_RECORDS) as u64;
            (first..)
                .zip(piece)
                .map(|(arrival, r)| decoder.decode(r, arrival))
                .collect()
        })
        .collect();
    pieces.into_iter().flatten().collect()
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
        let summary = |outcomes: Vec<Outcome>| -> Vec<String> {
            outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Skip => "skip".to_owned(),
                    Outcome::Row {
                        id, commit_ts_us, ..
                    } => format!("{commit_ts_us} {:?}", &id[..4]),
                    Outcome::MissingSchema(f) => format!("missing {f:016x}"),
                    Outcome::Bad(e) => e.to_string(),
                })
                .collect()
        };
        let mut pool_one =
            DecodePool::new(1, &AvroSchemas::default(), &EventIdVersions::default()).expect("pool");
        let mut pool_many =
            DecodePool::new(4, &AvroSchemas::default(), &EventIdVersions::default()).expect("pool");
        let outcomes = pool_many.decode_all(&records, 0);
        // Every row was appended once, where its outcome says; a retracted one is left out.
        let ats: Vec<RowAt> = outcomes.iter().filter_map(Outcome::row_at).collect();
        assert!(
            ats.iter()
                .map(|at| at.thread)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1,
            "appended by several threads"
        );
        assert_eq!(pool_many.appended_rows(), ats.len());
        // The table seen on the topic, reported once per decoder that saw it.
        let pairs: HashSet<(String, TableId)> = pool_many.take_topic_tables().into_iter().collect();
        assert_eq!(
            pairs,
            HashSet::from([("s.public.t".to_owned(), TableId::new("s", "public", "t"))])
        );
        assert!(pool_many.take_topic_tables().is_empty(), "reported once");
        pool_many.retract(ats[0]);
        let groups = crate::batch::group_segments(pool_many.take_appended());
        let rows: usize = groups.values().flatten().map(|g| g.rows()).sum();
        assert_eq!(rows, ats.len() - 1);
        assert_eq!(pool_many.appended_rows(), 0, "taken");

        let one = summary(pool_one.decode_all(&records, 0));
        let many = summary(outcomes);
        assert_eq!(one, many);
        assert_eq!(one[500], "skip", "a null value is a tombstone");
        assert!(one[1].starts_with("1001 "), "{}", one[1]);
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
