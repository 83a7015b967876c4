//! [`Compactor`]: the consume -> buffer -> write -> commit loop.
//!
//! ```text
//!  assign (rebalance) ──► offsets from the catalog (never Kafka's committed offsets); reading
//!        │                starts up to dedup_window records earlier, only to remember their ids;
//!        │                the partitions forwarded to the fetch queue (crate::fetch)
//!  take a chunk of records ──► decode, append rows to the threads' Arrow builders (threads)
//!        │    (the loop meanwhile  │ ──► in order: offsets, dedup (one id set per partition:
//!        │    takes the previous   │      committed, in the flush in flight, in the batch);
//!        │    chunk and receives   │      rows not taken (duplicates, replays) are retracted
//!        │    the next one)        └─ bad input: raw bytes to _quarantine/, Quarantine action
//!  size (checked per chunk), time, or caught up ──► (previous flush finished) ──► flush task, while the
//!                    loop consumes on: merge the threads' builders per table and schema,
//!                    sort, write segments ──► ONE catalog commit:
//!                    AddSegment* SetSchema* ConsumeOffsets* Quarantine* SetWatermark*
//!        ok ──► batch acknowledged (ids remembered; offsets also committed to Kafka, for lag
//!               monitoring only)
//!        Conflict / failure / unknown outcome ──► refresh catalog, drop batch, seek to catalog
//!               offsets (records of the current chunk fetched before the seek are not taken)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures::{FutureExt as _, StreamExt as _};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use strata_catalog::{
    Action, AvroSchemas, Catalog, CatalogState, CommitInfo, DecodeError, EventIdVersion,
    EventIdVersions, OffsetRange, QuarantineEntry, QuarantinedObject, SchemaVersion, TableId,
    TableSchema, Watermark,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::batch::{Batch, PartitionState, RowAt, SegmentGroup, TopicPartition, group_segments};
use crate::config::CompactorConfig;
use crate::decode::{DecodePool, Outcome, RawRecord};
use crate::error::{Error, Result};
use crate::fetch::{FetchQueue, Fetched, Forward};
use crate::schemas::{SchemaRead, read_schema_topic};
use crate::segment;
use crate::stats::CompactorStats;

/// The hasher of the maps looked up per record (not keyed by outside input an attacker picks:
/// topics and tables are the operator's).
type FastHash = foldhash::fast::RandomState;

/// How often the loop wakes without records (seek retries, flush deadlines).
const TICK: Duration = Duration::from_millis(50);
/// Attempts at refreshing the catalog after a failed commit before giving up.
const REFRESH_ATTEMPTS: u32 = 5;
/// How long a writer schema missing from the schema topic is not looked for again.
const MISSING_SCHEMA_MEMORY: Duration = Duration::from_secs(60);
/// The most records taken from the consumer's queue at once, to decode side by side. Each
/// chunk costs a hand-over: the decode threads wait while the loop wakes and starts the next
/// (measured, 2M events: 1.3 s of such waits in 978 chunks of 2,048, 0.56 s in 246 of
/// 8,192). A chunk is about 12 ms of decoding on two threads.
const CHUNK_RECORDS: usize = 8192;
/// How long no record must have come before the tail of a backlog is flushed at once (see
/// [`Run::caught_up`]); in a backlog the consumer's queue runs dry for shorter moments.
const TAIL_IDLE: Duration = Duration::from_millis(50);
/// The most records in a chunk before the compactor knows how large its rows are.
const FIRST_CHUNK_RECORDS: usize = 64;

/// The state of an assigned partition, looked up with `key` (reused: no allocation per record).
fn partition_mut<'p>(
    partitions: &'p mut HashMap<TopicPartition, PartitionState, FastHash>,
    key: &mut TopicPartition,
    topic: &str,
    partition: i32,
) -> Option<&'p mut PartitionState> {
    key.0.clear();
    key.0.push_str(topic);
    key.1 = partition;
    partitions.get_mut(key)
}

/// The error of a record whose Avro writer schema the schema topic does not hold.
fn missing_schema(
    record: &RawRecord<'_>,
    fingerprint: u64,
    config: &CompactorConfig,
) -> DecodeError {
    DecodeError {
        topic: record.topic.to_owned(),
        partition: Some(record.partition),
        offset: Some(record.offset),
        reason: format!(
            "Avro writer schema {fingerprint:016x} is not in schema topic {}",
            config.schema_topic
        ),
    }
}

/// Consumes Debezium change topics and turns them into Parquet change segments committed to
/// the catalog together with the offsets they came from.
pub struct Compactor {
    config: CompactorConfig,
    client: ClientConfig,
    catalog: Arc<Catalog>,
    store: Arc<dyn ObjectStore>,
    stats: Arc<CompactorStats>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("config", &self.config)
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Compactor {
    /// A compactor writing to `store` under the catalog's root. `client` carries the Kafka
    /// connection (`bootstrap.servers`, security); the compactor sets the consumer settings
    /// it depends on (`group.id`, `enable.auto.commit=false`, …) itself.
    pub fn new(
        config: CompactorConfig,
        client: ClientConfig,
        catalog: Arc<Catalog>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            client,
            catalog,
            store,
            stats: Arc::default(),
        })
    }

    /// The counters, readable while [`run`](Compactor::run) runs.
    pub fn stats(&self) -> Arc<CompactorStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `cancel` fires (returns `Ok`) or an unrecoverable error. An unflushed
    /// batch is dropped on cancel: it was never acknowledged, the next run replays it.
    #[instrument(skip_all, fields(group = %self.config.group_id))]
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let mut client = self.client.clone();
        client
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        if client.get("topic.metadata.refresh.interval.ms").is_none() {
            client.set("topic.metadata.refresh.interval.ms", "10000");
        }
        // A compactor that died holds its partitions until its session expires (librdkafka's
        // default: 45 s); a restarted one waits that long. 10 s unless configured.
        if client.get("session.timeout.ms").is_none() {
            client.set("session.timeout.ms", "10000");
        }
        // librdkafka prefetches up to this much into its local queue (default 64 MiB). The
        // compactor drains 16 MiB in well under a second; more only holds memory (and made
        // the throughput bench slower: 1M events at 127-131k events/s and 0.8-1.0 GiB peak
        // RSS with 64 MiB, 143k events/s and 661 MiB with 16 MiB).
        if client.get("queued.max.messages.kbytes").is_none() {
            client.set("queued.max.messages.kbytes", "16384");
        }
        // When its local queue is full, librdkafka waits this long before fetching again:
        // 1 s by default, in which a compactor that is slower than the fetch but faster than
        // the queue's size per second drains the queue and then idles.
        if client.get("fetch.queue.backoff.ms").is_none() {
            client.set("fetch.queue.backoff.ms", "10");
        }
        // A fetch returns once 1 MiB is there or 50 ms have passed, not on every record: at a
        // steady 10k rows/s a fetch per produce request woke the broker thread and the loop
        // ~100 times a second. Measured (bench/latency/run, 250ms flushes, 10k rows/s, 60 s):
        // `strata run` CPU 23.5 -> 16.7 s, p99 0.28 -> 0.33 s. A backlog fills 1 MiB at once.
        if client.get("fetch.wait.max.ms").is_none() {
            client.set("fetch.wait.max.ms", "50");
        }
        if client.get("fetch.min.bytes").is_none() {
            client.set("fetch.min.bytes", "1048576");
        }
        // The brokers' high watermarks, for table watermarks (see `topic_watermarks`).
        if client.get("statistics.interval.ms").is_none() {
            client.set("statistics.interval.ms", "1000");
        }
        let context = RebalanceContext {
            catalog: Arc::clone(&self.catalog),
            group: self.config.group_id.clone(),
            replay: i64::try_from(self.config.dedup_window).unwrap_or(i64::MAX),
            notes: Mutex::default(),
            offsets: Mutex::default(),
            forward: Forward::default(),
        };
        let consumer: StreamConsumer<RebalanceContext> = client
            .create_with_context(context)
            .map_err(|source| Error::Kafka {
                operation: "create consumer",
                source,
            })?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|source| Error::Kafka {
            operation: "subscribe",
            source,
        })?;
        info!(topics = ?self.config.topics, "compactor subscribed");
        // Made before any partition is assigned: the rebalance callback forwards every
        // partition to it (see `crate::fetch`).
        let fetch = FetchQueue::new(&consumer, &consumer.context().forward);
        if fetch.is_none() {
            warn!("could not make a fetch queue; reading records one at a time");
        }

        let avro = AvroSchemas::default();
        // The schema topic is read while the group forms, so that the first Avro records
        // find their writer schemas known (read when they come, it held up the first chunk by
        // 140-170 ms, with the decode threads idle).
        let schema_read = {
            let (client, topic, avro) = (
                self.client.clone(),
                self.config.schema_topic.clone(),
                avro.clone(),
            );
            tokio::task::spawn_blocking(move || {
                read_schema_topic(&client, &topic, &avro, SchemaRead::AtStart)
            })
        };
        let id_versions = EventIdVersions::default();
        id_versions.record(table_id_versions(&self.catalog.state()));
        let decoders = DecodePool::new(self.config.effective_decode_threads(), &avro, &id_versions)
            .map_err(|e| Error::Config {
                field: "decode_threads",
                reason: format!("could not start the decode threads: {e}"),
            })?;
        let mut run = Run {
            compactor: &self,
            consumer: &consumer,
            fetch: fetch.as_ref(),
            partitions: HashMap::default(),
            batch: Batch::default(),
            deadline: None,
            topic_tables: HashMap::default(),
            key: TopicPartition::default(),
            avro,
            id_versions,
            decoders,
            arrivals: 0,
            row_bytes: 0,
            drained: false,
            filling: false,
            last_received: Instant::now(),
            in_flight: None,
            pending: None,
            prefetched: None,
            next_idle_watermarks: None,
            missing_schemas: HashMap::default(),
            schema_read: Some(schema_read),
            resets: 0,
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A chunk received while the last one decoded goes first; else the next record.
            let received = match run.prefetched.take() {
                Some(prefetched) if !cancel.is_cancelled() => Some(prefetched),
                Some(_) => break,
                None => tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        run.take_pending().await?;
                        None
                    }
                    () = ready(run.fetch, run.drained) => {
                        let mut messages = Chunk::default();
                        run.receive(&mut messages);
                        (!messages.is_empty()).then_some((messages, run.resets))
                    }
                    // Rebalances and errors, and the records of partitions not forwarded to
                    // the fetch queue.
                    received = consumer.recv() => match received {
                        Ok(message) => {
                            // And whatever else is already waiting, up to a chunk.
                            let mut messages = Chunk { native: vec![message], ..Chunk::default() };
                            run.receive(&mut messages);
                            Some((messages, run.resets))
                        }
                        Err(e) => {
                            warn!(error = %e, "kafka consumer error");
                            None
                        }
                    },
                },
            };
            if let Some((messages, resets)) = received {
                // Rebalance notes first: they say which partitions are ours and from where.
                // A partition rewound to the catalog's offset after the chunk was received (by
                // these notes or by a failed flush) drops the chunk's records of it: they were
                // fetched before its seek and come again.
                run.apply_rebalance_notes().await?;
                run.consume(messages, resets).await?;
            }
            run.apply_rebalance_notes().await?;
            run.retry_seeks();
            run.update_lag();
            if run.flush_done() {
                run.finish_flush().await?;
            }
            let due = run.deadline.is_some_and(|d| Instant::now() >= d);
            let over_size = run.over_size();
            if due || over_size || run.caught_up() {
                let large = over_size || run.large_batch();
                run.flush().await?;
                run.filling = large;
            }
            run.advance_idle_watermarks();
            // The loop seldom waits while records keep coming, so it lets the runtime run
            // other tasks here: a flush task it just spawned sits in this worker's own slot,
            // which other workers do not steal from, and would not start until the loop
            // waited (measured: up to a second later, the encoding then serialised with
            // the decoding).
            tokio::task::yield_now().await;
        }
        // A flush in flight is let finish: it commits, or it leaves nothing behind.
        if let Some(in_flight) = run.in_flight.take() {
            match in_flight.task.await {
                Ok(FlushOutcome::Committed { version, .. }) => {
                    info!(version, "the last flush committed");
                }
                Ok(FlushOutcome::Failed { written, error, .. }) => {
                    warn!(error, "the last flush failed; it will be replayed");
                    run.delete_orphans(&written).await;
                }
                Err(e) => warn!(error = %e, "the last flush task failed"),
            }
        }
        info!(
            unflushed_records = run.batch.records,
            "compactor stopping; the unflushed batch will be replayed"
        );
        Ok(())
    }
}

/// What a rebalance callback saw, for the loop to act on.
#[derive(Debug)]
enum RebalanceNote {
    Assigned(Vec<Assignment>),
    Revoked(Vec<TopicPartition>),
}

/// A partition given to this compactor.
#[derive(Debug)]
struct Assignment {
    tp: TopicPartition,
    /// The catalog's next offset (`None`: never committed).
    next: Option<i64>,
    /// Where reading starts (`None`: the beginning): up to `dedup_window` records before
    /// `next`, whose ids are remembered (not stored again) so that late copies of them are
    /// dropped after a restart too.
    start: Option<i64>,
    /// False if librdkafka refused the start offset: the loop seeks there instead.
    set: bool,
}

/// Starts assigned partitions at the catalog's offsets (set on the assignment itself,
/// before librdkafka starts fetching) and tells the loop what changed.
struct RebalanceContext {
    catalog: Arc<Catalog>,
    group: String,
    /// Records re-read before a partition's committed offset (`dedup_window`).
    replay: i64,
    notes: Mutex<Vec<RebalanceNote>>,
    /// Per partition the broker's (low, high) watermark offsets, from librdkafka's statistics
    /// (`statistics.interval.ms`).
    offsets: Mutex<HashMap<TopicPartition, (i64, i64)>>,
    /// The fetch queue assigned partitions are forwarded to.
    forward: Forward,
}

impl RebalanceContext {
    fn high_watermark(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: Statistics) {
        let mut offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // -1: the internal UA partition; negative offsets: not known yet.
                if partition >= 0 && p.hi_offset >= 0 && p.lo_offset >= 0 {
                    offsets.insert((topic.clone(), partition), (p.lo_offset, p.hi_offset));
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let note = match rebalance {
            Rebalance::Assign(tpl) => {
                let state = self.catalog.state();
                let mut assigned = Vec::new();
                for mut element in tpl.elements() {
                    let next = state.next_offset(&self.group, element.topic(), element.partition());
                    // Before the broker's low watermark, auto.offset.reset=earliest applies.
                    let start = next.map(|n| n.saturating_sub(self.replay).max(0));
                    let offset = start.map_or(Offset::Beginning, Offset::Offset);
                    let set = match element.set_offset(offset) {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(topic = element.topic(), partition = element.partition(), error = %e,
                                  "could not set the start offset; will seek");
                            false
                        }
                    };
                    assigned.push(Assignment {
                        tp: (element.topic().to_owned(), element.partition()),
                        next,
                        start,
                        set,
                    });
                }
                // Before librdkafka starts fetching them (it does on the assignment that
                // follows this callback).
                let unbatched = self.forward.route(
                    consumer.client(),
                    assigned.iter().map(|a| (a.tp.0.as_str(), a.tp.1)),
                );
                info!(
                    partitions = assigned.len(),
                    unbatched, "partitions assigned"
                );
                RebalanceNote::Assigned(assigned)
            }
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                info!(partitions = revoked.len(), "partitions revoked");
                RebalanceNote::Revoked(revoked)
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                return;
            }
        };
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
    }
}

/// What [`Run::take_all`] did with a record.
enum Taken {
    /// Its row is in the batch.
    Kept,
    /// Nothing of it is in the batch (a duplicate, a skip, already consumed, ...).
    Dropped,
    /// Bad input: counted, to be quarantined.
    Quarantine(DecodeError),
}

/// Records received together: those of partitions read through the consumer's own queue
/// (not forwarded to the fetch queue, see [`crate::fetch`]), then the fetch queue's, each in
/// its queue's order (a partition's records all come through one of them).
#[derive(Default)]
struct Chunk<'c> {
    native: Vec<BorrowedMessage<'c>>,
    fetched: Vec<Fetched>,
}

impl Chunk<'_> {
    fn len(&self) -> usize {
        self.native.len() + self.fetched.iter().map(Fetched::len).sum::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts of Kafka messages the decoders read.
fn raw_records<'m>(chunk: &'m Chunk<'_>) -> Vec<RawRecord<'m>> {
    let mut records = Vec::with_capacity(chunk.len());
    records.extend(chunk.native.iter().map(|m| RawRecord {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        value: m.payload(),
    }));
    for fetched in &chunk.fetched {
        records.extend(fetched.records());
    }
    records
}

/// Waits until the fetch queue may hold records: at once if the last read left records
/// behind (not `drained`: librdkafka calls back only when the queue turns non-empty); never
/// without a fetch queue.
async fn ready(fetch: Option<&FetchQueue<'_>>, drained: bool) {
    match fetch {
        Some(_) if !drained => {}
        Some(fetch) => fetch.ready().await,
        None => std::future::pending().await,
    }
}

/// The state of one [`Compactor::run`].
struct Run<'a> {
    compactor: &'a Compactor,
    consumer: &'a StreamConsumer<RebalanceContext>,
    /// Where the assigned partitions' records come (`None`: librdkafka made no queue; they
    /// come through the consumer's own queue).
    fetch: Option<&'a FetchQueue<'a>>,
    partitions: HashMap<TopicPartition, PartitionState, FastHash>,
    batch: Batch,
    /// When the unflushed batch must be flushed.
    deadline: Option<Instant>,
    /// The tables seen on each topic (for watermarks).
    topic_tables: HashMap<String, BTreeSet<TableId>, FastHash>,
    /// A reused key for looking up [`Run::partitions`] by a record's topic and partition.
    key: TopicPartition,
    /// One per decoding thread.
    decoders: DecodePool,
    /// Records received so far (numbers each record in the consumer's order).
    arrivals: u64,
    /// The mean size of the rows appended lately (0: none yet), to cut chunks by.
    row_bytes: u64,
    /// The last chunk took every record the consumer had fetched.
    drained: bool,
    /// The last flush was of a large batch (for size, or of `caught_up_flush_bytes` or more):
    /// records come in quickly (a backlog, a burst or a busy stream).
    filling: bool,
    /// When the last chunk was received.
    last_received: Instant,
    /// Writer schemas the schema topic did not hold, and when that was found.
    missing_schemas: HashMap<u64, Instant, FastHash>,
    /// The read of the schema topic started with the run, until a record needs it.
    schema_read: Option<tokio::task::JoinHandle<Result<usize>>>,
    /// When [`Run::advance_idle_watermarks`] may look next.
    next_idle_watermarks: Option<Instant>,
    /// The Avro writer schemas learnt from the schema topic (shared with the decoders).
    avro: AvroSchemas,
    /// The event id versions of the catalog's tables (shared with the decoders).
    id_versions: EventIdVersions,
    /// The flush being written and committed, if any.
    in_flight: Option<InFlight>,
    /// A chunk decoded (its rows appended) but not taken yet: it is taken while the next one
    /// decodes ([`Run::consume`]), and before anything that flushes or drops the batch.
    pending: Option<Pending<'a>>,
    /// Records received while the last chunk decoded, not decoded yet, with the reset count
    /// when they were received.
    prefetched: Option<(Chunk<'a>, u64)>,
    /// How many times the partitions were rewound to the catalog's offsets ([`Run::reset`]).
    resets: u64,
}

/// Takes decoded records into the batch (see [`Run::take_all`]): the parts of [`Run`] that
/// taking touches besides the record's partition.
struct Taker<'t> {
    compactor: &'t Compactor,
    batch: &'t mut Batch,
    deadline: &'t mut Option<Instant>,
}

impl Taker<'_> {
    /// Takes one decoded record of `state`'s partition into the batch, in the partition's
    /// order; what is left to do (its row retracted, the record quarantined) is for
    /// [`Run::settle`].
    fn take(
        &mut self,
        state: &mut PartitionState,
        record: &RawRecord<'_>,
        outcome: Outcome,
    ) -> Taken {
        let RawRecord {
            topic,
            partition,
            offset,
            ..
        } = *record;
        if state.seek_pending.is_some() {
            // Fetched before the seek we still owe: not ours to count.
            return Taken::Dropped;
        }
        if let Some(until) = state.warm_until {
            if offset < until {
                // Committed before this compactor started: only its id is remembered.
                if let Outcome::Row { id, .. } = &outcome {
                    state.ids.remember(id, self.compactor.config.dedup_window);
                }
                CompactorStats::add(&self.compactor.stats.records_replayed, 1);
                return Taken::Dropped;
            }
            state.warm_until = None;
            info!(
                topic,
                partition,
                remembered = state.ids.committed(),
                "ids of committed records remembered; consuming from the catalog's offset"
            );
        }
        match state.next {
            Some(next) if offset < next => return Taken::Dropped, // already consumed (prefetched before a seek)
            Some(next) if offset > next => {
                debug!(
                    topic,
                    partition, next, offset, "offset gap (compaction or control records)"
                );
            }
            _ => {}
        }
        if state.from.is_none() {
            state.from = Some(offset);
        }
        state.next = Some(offset + 1);
        self.batch.records += 1;
        if self.deadline.is_none() {
            *self.deadline = Some(Instant::now() + self.compactor.config.flush_interval);
        }
        CompactorStats::add(&self.compactor.stats.records_in, 1);

        let (id, commit_ts_us) = match outcome {
            Outcome::Skip => {
                CompactorStats::add(&self.compactor.stats.records_skipped, 1);
                return Taken::Dropped;
            }
            Outcome::Row {
                id, commit_ts_us, ..
            } => (id, commit_ts_us),
            Outcome::MissingSchema(fingerprint) => {
                return Taken::Quarantine(missing_schema(
                    record,
                    fingerprint,
                    &self.compactor.config,
                ));
            }
            Outcome::Bad(e) => return Taken::Quarantine(e),
        };
        CompactorStats::add(&self.compactor.stats.events_in, 1);
        state.saw(commit_ts_us);
        if !state.take_event(&id) {
            CompactorStats::add(&self.compactor.stats.duplicates_dropped, 1);
            return Taken::Dropped;
        }
        Taken::Kept
    }
}

/// A chunk of records decoded but not taken yet.
struct Pending<'a> {
    messages: Chunk<'a>,
    outcomes: Vec<Outcome>,
    /// The reset count when the records were received (see [`Run::take_all`]).
    resets: u64,
}

/// What is left to do for a record taken but not kept (see [`Run::settle`]): where its row
/// went, and what to do.
type Unsettled = (Option<RowAt>, Settle);

/// What is left to do for a record not kept, once the decoders are back.
enum Settle {
    /// Its row (if it has one) is retracted.
    Retract,
    /// Its row (if any) is retracted and the record quarantined.
    Quarantine(Box<BadRecord>),
}

/// A bad record, copied out of its Kafka message (the message is released before the
/// record is quarantined).
struct BadRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    error: DecodeError,
}

/// A flush whose task is running.
struct InFlight {
    task: tokio::task::JoinHandle<FlushOutcome>,
    /// The offsets it commits, to tell Kafka (for lag monitoring) once it has.
    kafka_offsets: TopicPartitionList,
}

/// What a flush commits, in order: schema changes and segments per table, then `tail`
/// (consumed offsets, quarantined records, watermarks).
// A flush plans a handful of these: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Planned {
    Action(Action),
    Segment(SegmentGroup),
}

/// The work of one flush, done by a task of its own.
struct FlushWork {
    store: Arc<dyn ObjectStore>,
    catalog: Arc<Catalog>,
    config: CompactorConfig,
    records: u64,
    plan: Vec<Planned>,
    tail: Vec<Action>,
}

/// How a flush ended.
enum FlushOutcome {
    Committed {
        version: u64,
        written: Vec<strata_catalog::Segment>,
    },
    /// Nothing was committed (or the outcome is unknown); `written` segments may be orphans.
    Failed {
        written: Vec<strata_catalog::Segment>,
        conflict: bool,
        error: String,
    },
}

impl FlushWork {
    async fn run(self) -> FlushOutcome {
        let config = &self.config;
        let mut actions = Vec::with_capacity(self.plan.len() + self.tail.len());
        let mut written = Vec::new();
        for step in self.plan {
            let group = match step {
                Planned::Action(action) => {
                    actions.push(action);
                    continue;
                }
                Planned::Segment(group) => group,
            };
            let result = segment::write(
                &self.store,
                self.catalog.root(),
                group,
                config.row_group_rows,
                config.zstd_level,
                config.effective_decode_threads(),
            )
            .await;
            match result {
                Ok(segment) => {
                    written.push(segment.clone());
                    actions.push(Action::AddSegment(segment));
                }
                Err(e) => {
                    return FlushOutcome::Failed {
                        written,
                        conflict: false,
                        error: format!("writing a segment failed: {e}"),
                    };
                }
            }
        }
        actions.extend(self.tail);
        let info = CommitInfo::new(&config.writer_id, "compact").with_app_metadata(
            serde_json::json!({"records": self.records, "segments": written.len()}),
        );
        match self.catalog.commit(actions, info).await {
            Ok(version) => FlushOutcome::Committed {
                version: version.get(),
                written,
            },
            Err(e) => FlushOutcome::Failed {
                written,
                conflict: e.is_conflict(),
                error: e.to_string(),
            },
        }
    }
}

impl<'a> Run<'a> {
    /// Records whose Avro writer schema was unknown: reads the schema topic and decodes them
    /// again; a fingerprint it does not hold makes the record bad input.
    async fn learn_schemas(
        &mut self,
        records: &[RawRecord<'_>],
        first_arrival: u64,
        outcomes: &mut [Outcome],
    ) -> Result<()> {
        if let Some(read) = self.schema_read.take() {
            // Whatever it learnt may be enough; a failure here is not final (the topic is read
            // again below if a schema is still missing).
            match read.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "reading the schema topic at start failed"),
                Err(e) => warn!(error = %e, "the schema topic reader at start panicked"),
            }
            for ((record, outcome), arrival) in
                records.iter().zip(outcomes.iter_mut()).zip(first_arrival..)
            {
                if matches!(outcome, Outcome::MissingSchema(_))
                    && let Some(decoded) = self.decoders.decode_one(record, arrival)
                {
                    *outcome = decoded;
                }
            }
            if !outcomes
                .iter()
                .any(|o| matches!(o, Outcome::MissingSchema(_)))
            {
                return Ok(());
            }
        }
        // A fingerprint the schema topic did not hold a moment ago is not read for again: a
        // schema is in the topic before any record naming it, so one read after seeing the
        // record settles it (and a stream of such records does not read the topic per chunk).
        let now = Instant::now();
        self.missing_schemas
            .retain(|_, at| now.duration_since(*at) < MISSING_SCHEMA_MEMORY);
        let unknown = outcomes.iter().any(
            |o| matches!(o, Outcome::MissingSchema(fp) if !self.missing_schemas.contains_key(fp)),
        );
        if !unknown {
            for (record, outcome) in records.iter().zip(outcomes.iter_mut()) {
                if let Outcome::MissingSchema(fingerprint) = outcome {
                    *outcome = Outcome::Bad(missing_schema(record, *fingerprint, self.config()));
                }
            }
            return Ok(());
        }
        let client = self.compactor.client.clone();
        let topic = self.config().schema_topic.clone();
        let avro = self.avro.clone();
        tokio::task::spawn_blocking(move || {
            read_schema_topic(&client, &topic, &avro, SchemaRead::Needed)
        })
        .await
        .map_err(|e| Error::Segment {
            table: "(schema topic)".into(),
            reason: format!("the schema topic reader panicked: {e}"),
        })??;
        for ((record, outcome), arrival) in
            records.iter().zip(outcomes.iter_mut()).zip(first_arrival..)
        {
            if let Outcome::MissingSchema(fingerprint) = outcome {
                *outcome = match self.decoders.decode_one(record, arrival) {
                    Some(Outcome::MissingSchema(_)) | None => {
                        self.missing_schemas.insert(*fingerprint, now);
                        Outcome::Bad(missing_schema(record, *fingerprint, self.config()))
                    }
                    Some(other) => other,
                };
            }
        }
        Ok(())
    }

    fn config(&self) -> &CompactorConfig {
        &self.compactor.config
    }

    fn stats(&self) -> &CompactorStats {
        &self.compactor.stats
    }

    async fn apply_rebalance_notes(&mut self) -> Result<()> {
        let notes: Vec<RebalanceNote> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if notes.is_empty() {
            return Ok(());
        }
        // The chunk decoded before these notes is taken under the assignment it was
        // fetched under.
        self.take_pending().await?;
        let mut must_reset = false;
        for note in notes {
            match note {
                RebalanceNote::Revoked(revoked) => {
                    for tp in revoked {
                        if let Some(state) = self.partitions.remove(&tp) {
                            // Its records cannot be committed by us any more; the batch
                            // goes, and the partitions we keep restart from the catalog.
                            must_reset |= state.has_unflushed() || state.flushing.is_some();
                        }
                    }
                }
                RebalanceNote::Assigned(assigned) => {
                    for a in assigned {
                        let mut state = PartitionState::starting_at(a.next);
                        if a.start < a.next {
                            state.warm_until = a.next;
                        }
                        if !a.set {
                            state.seek_pending = Some(a.start);
                        }
                        self.partitions.insert(a.tp, state);
                    }
                    // The offsets were set from the state we had; catch up and correct.
                    must_reset = true;
                }
            }
        }
        if must_reset {
            self.reset().await?;
        }
        Ok(())
    }

    /// Refreshes the catalog, drops the batch, and restarts every partition at the
    /// catalog's offset.
    async fn reset(&mut self) -> Result<()> {
        // Its rows are in the decoders, which are cleared below: taken first, its records
        // move the partitions' offsets, so that the seeks below fetch them again.
        self.take_pending().await?;
        self.resets += 1;
        // A flush in flight may still land; its outcome must be in the catalog we reload.
        if let Some(in_flight) = self.in_flight.take() {
            match in_flight.task.await {
                Ok(FlushOutcome::Committed { version, written }) => {
                    info!(version, "the flush in flight committed before the reset");
                    self.flush_committed(version, &written, &in_flight.kafka_offsets);
                }
                Ok(FlushOutcome::Failed { written, error, .. }) => {
                    warn!(error, "the flush in flight failed");
                    self.delete_orphans(&written).await;
                }
                Err(e) => warn!(error = %e, "the flush task failed"),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.compactor.catalog.refresh().await {
                Ok(_) => break,
                Err(e) if attempt < REFRESH_ATTEMPTS => {
                    warn!(error = %e, attempt, "catalog refresh failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let state = self.compactor.catalog.state();
        if !self.batch.is_empty() {
            info!(
                records = self.batch.records,
                "dropping the unflushed batch; replaying from the catalog's offsets"
            );
        }
        self.batch = Batch::default();
        self.decoders.clear();
        self.deadline = None;
        let group = &self.compactor.config.group_id;
        for ((topic, partition), p) in &mut self.partitions {
            let next = state.next_offset(group, topic, *partition);
            if p.restart_at(next) {
                p.rewound_at = self.resets;
            }
        }
        self.retry_seeks();
        Ok(())
    }

    /// Seeks partitions that must restart somewhere; a failed seek (the partition's fetch
    /// has not started yet) is retried on the next record or tick.
    fn retry_seeks(&mut self) {
        for ((topic, partition), p) in &mut self.partitions {
            let Some(target) = p.seek_pending else {
                continue;
            };
            let offset = target.map_or(Offset::Beginning, Offset::Offset);
            match self
                .consumer
                .seek(topic, *partition, offset, Duration::from_secs(1))
            {
                Ok(()) => {
                    debug!(topic, partition, ?offset, "seeked");
                    p.seek_pending = None;
                }
                Err(e) => debug!(topic, partition, error = %e, "seek not possible yet"),
            }
        }
    }

    /// True if the record's partition was rewound (sent back to the catalog's offset) after
    /// reset number `resets`: a record fetched before then is not taken.
    fn rewound_since(&self, record: &RawRecord<'_>, resets: u64) -> bool {
        // Only a reset rewinds partitions.
        if self.resets == resets {
            return false;
        }
        self.partitions
            .get(&(record.topic.to_owned(), record.partition))
            .is_some_and(|p| p.rewound_at > resets)
    }

    /// Sets the lag gauge: per assigned partition, the broker's high watermark (as of the
    /// last statistics) minus the next offset to consume.
    fn update_lag(&self) {
        let context = self.consumer.context();
        let lag: i64 = self
            .partitions
            .iter()
            .filter_map(|((topic, partition), p)| {
                let (low, high) = context.high_watermark(topic, *partition)?;
                Some((high - p.next.unwrap_or(low)).max(0))
            })
            .sum();
        self.stats().lag_records.store(
            u64::try_from(lag).unwrap_or_default(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn over_size(&self) -> bool {
        let config = self.config();
        self.decoders
            .room(config.max_segment_bytes, config.max_batch_bytes)
            == 0
    }

    /// True when every record fetched was read (see `drained`) and the batch is big enough
    /// to flush without waiting for its deadline (see [`Run::large_batch`]), or is what is
    /// left of a backlog or burst: the last flush was of a large batch, and no record has
    /// come for [`TAIL_IDLE`]. Those records are late already; waiting would only make them
    /// later.
    fn caught_up(&self) -> bool {
        self.drained
            && !self.batch.is_empty()
            && (self.large_batch() || (self.filling && self.last_received.elapsed() >= TAIL_IDLE))
    }

    /// The batch holds `caught_up_flush_bytes` or more.
    fn large_batch(&self) -> bool {
        self.decoders.bytes() >= self.config().caught_up_flush_bytes
    }

    /// The most records to take into the next chunk. The whole chunk goes into the batch
    /// before the loop can flush, so a chunk is cut to about the rows that still fit under
    /// `max_segment_bytes` and `max_batch_bytes` (by the size of the rows so far), less
    /// `decoding` records on their way in.
    fn chunk_limit(&mut self, decoding: usize) -> usize {
        if let Some(bytes) = self.decoders.row_bytes() {
            self.row_bytes = bytes.max(1);
        }
        if self.row_bytes == 0 {
            // Nothing to size the chunk by yet: one small chunk to learn from.
            return if decoding == 0 {
                FIRST_CHUNK_RECORDS
            } else {
                0
            };
        }
        let config = self.config();
        let room = self
            .decoders
            .room(config.max_segment_bytes, config.max_batch_bytes);
        usize::try_from(room / self.row_bytes + 1)
            .unwrap_or(usize::MAX)
            .saturating_sub(decoding)
            .min(CHUNK_RECORDS)
    }

    /// Adds to `messages` whatever else the consumer has fetched, up to a chunk
    /// ([`Run::chunk_limit`]); notes whether that drained its queue.
    fn receive<'c>(&mut self, messages: &mut Chunk<'c>)
    where
        'a: 'c,
    {
        let limit = self.chunk_limit(0);
        self.receive_up_to(messages, limit);
    }

    /// Adds to `messages` whatever else the consumer has fetched, up to `limit` records;
    /// notes whether that drained its queue. Does not touch the decoders.
    fn receive_up_to<'c>(&mut self, messages: &mut Chunk<'c>, limit: usize)
    where
        'a: 'c,
    {
        self.drained = false;
        // The consumer's own queue first: rebalances are served there (their notes come
        // before the records of the partitions they assign), and the records of partitions
        // not forwarded to the fetch queue. One stream for the chunk: each `recv` registers
        // and unregisters a waker slot under a lock.
        let consumer = self.consumer;
        let mut stream = consumer.stream();
        loop {
            if messages.len() >= limit {
                return;
            }
            match stream.next().now_or_never().flatten() {
                Some(Ok(message)) => messages.native.push(message),
                Some(Err(e)) => {
                    warn!(error = %e, "kafka consumer error");
                    return;
                }
                None => break,
            }
        }
        let Some(fetch) = self.fetch else {
            self.drained = true;
            return;
        };
        let want = limit - messages.len();
        let fetched = fetch.take(want);
        self.drained = fetched.len() < want;
        if !fetched.is_empty() {
            messages.fetched.push(fetched);
        }
    }

    /// Decodes a chunk of records on the decode threads while the loop takes the pending
    /// chunk, if any, and receives the next one. If there is a next one, the chunk is then
    /// pending itself (the next one's decoding hides its taking), and the next one is
    /// `prefetched`; else the chunk is taken at once.
    /// `resets` is the reset count when `messages` were received (see [`Run::take_all`]).
    async fn consume(&mut self, messages: Chunk<'a>, resets: u64) -> Result<()> {
        let first = self.arrivals;
        self.arrivals += messages.len() as u64;
        CompactorStats::add(
            &self.compactor.stats.records_unbatched,
            messages.native.len() as u64,
        );
        self.last_received = Instant::now();
        let records = raw_records(&messages);
        // The next chunk is cut to what still fits once this one is in.
        let next_limit = self.chunk_limit(messages.len());
        let (previous_messages, previous) = match self.pending.take() {
            Some(p) => (p.messages, Some((p.outcomes, p.resets))),
            None => (Chunk::default(), None),
        };
        // The decoders are lent to the decode threads; taking and receiving do not touch them.
        // The previous chunk's messages are released there too (librdkafka frees each).
        let mut decoders = std::mem::take(&mut self.decoders);
        let (mut outcomes, (unsettled, next)) = decoders.decode_beside(&records, first, || {
            let unsettled = match previous {
                Some((outcomes, resets)) => {
                    self.take_all(&raw_records(&previous_messages), outcomes, resets)
                }
                None => Vec::new(),
            };
            drop(previous_messages);
            let mut next = Chunk::default();
            if next_limit > 0 {
                self.receive_up_to(&mut next, next_limit);
            }
            (unsettled, next)
        });
        self.decoders = decoders;
        self.settle_all(unsettled).await?;
        self.learn_schemas(&records, first, &mut outcomes).await?;
        for (topic, table) in self.decoders.take_topic_tables() {
            self.topic_tables.entry(topic).or_default().insert(table);
        }
        if next.is_empty() {
            return self.take_chunk(&records, outcomes, resets).await;
        }
        drop(records);
        self.pending = Some(Pending {
            messages,
            outcomes,
            resets,
        });
        self.prefetched = Some((next, self.resets));
        Ok(())
    }

    /// Takes the pending chunk, if any.
    async fn take_pending(&mut self) -> Result<()> {
        if let Some(pending) = self.pending.take() {
            let records = raw_records(&pending.messages);
            self.take_chunk(&records, pending.outcomes, pending.resets)
                .await?;
        }
        Ok(())
    }

    /// Takes a decoded chunk of records, in order (see [`Run::take_all`]).
    async fn take_chunk(
        &mut self,
        records: &[RawRecord<'_>],
        outcomes: Vec<Outcome>,
        resets: u64,
    ) -> Result<()> {
        let unsettled = self.take_all(records, outcomes, resets);
        self.settle_all(unsettled).await
    }

    /// Takes a decoded chunk, in order, without touching the decoders; returns what is left
    /// to do for the records not kept, for [`Run::settle_all`]. Records of a partition rewound
    /// after reset number `resets` are not taken. A partition's state is looked up once per
    /// run of its records (a chunk holds long runs of each partition).
    fn take_all(
        &mut self,
        records: &[RawRecord<'_>],
        outcomes: Vec<Outcome>,
        resets: u64,
    ) -> Vec<Unsettled> {
        let mut unsettled = Vec::new();
        let mut outcomes = outcomes.into_iter();
        let same_partition =
            |a: &RawRecord<'_>, b: &RawRecord<'_>| a.partition == b.partition && a.topic == b.topic;
        for run in records.chunk_by(same_partition) {
            let Some(first) = run.first() else { continue };
            let rewound = self.rewound_since(first, resets);
            let mut state = if rewound {
                None
            } else {
                partition_mut(
                    &mut self.partitions,
                    &mut self.key,
                    first.topic,
                    first.partition,
                )
            };
            if !rewound && state.is_none() {
                debug!(
                    topic = first.topic,
                    partition = first.partition,
                    offset = first.offset,
                    records = run.len(),
                    "records of a partition not assigned here"
                );
            }
            let mut taker = Taker {
                compactor: self.compactor,
                batch: &mut self.batch,
                deadline: &mut self.deadline,
            };
            for (record, outcome) in run.iter().zip(outcomes.by_ref()) {
                let at = outcome.row_at();
                let taken = match state.as_deref_mut() {
                    Some(state) => taker.take(state, record, outcome),
                    None => Taken::Dropped,
                };
                match taken {
                    Taken::Kept => {}
                    Taken::Dropped => unsettled.push((at, Settle::Retract)),
                    Taken::Quarantine(error) => {
                        let bad = BadRecord {
                            topic: record.topic.to_owned(),
                            partition: record.partition,
                            offset: record.offset,
                            key: record.key.map(<[u8]>::to_vec),
                            value: record.value.map(<[u8]>::to_vec),
                            error,
                        };
                        unsettled.push((at, Settle::Quarantine(Box::new(bad))));
                    }
                }
            }
        }
        unsettled
    }

    /// Settles the records of a chunk not kept (see [`Run::settle`]), in order.
    async fn settle_all(&mut self, unsettled: Vec<Unsettled>) -> Result<()> {
        for (at, settle) in unsettled {
            self.settle(at, settle).await?;
        }
        Ok(())
    }

    /// Does what taking a record left to do: retracts the row of a record not kept, stores a
    /// bad record in the quarantine.
    async fn settle(&mut self, at: Option<RowAt>, settle: Settle) -> Result<()> {
        if let Some(at) = at {
            self.decoders.retract(at);
        }
        if let Settle::Quarantine(bad) = settle {
            let BadRecord {
                topic,
                partition,
                offset,
                key,
                value,
                error,
            } = *bad;
            self.quarantine(
                &topic,
                partition,
                offset,
                key.as_deref(),
                value.as_deref(),
                &error,
            )
            .await?;
        }
        Ok(())
    }

    /// Stores the raw record under `_quarantine/` and queues its `Quarantine` action.
    async fn quarantine(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error: &DecodeError,
    ) -> Result<()> {
        let raw = |bytes: Option<&[u8]>| match bytes {
            None => serde_json::Value::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(text) => serde_json::json!({"utf8": text}),
                Err(_) => serde_json::json!({
                    "base64": base64::engine::general_purpose::STANDARD.encode(b)
                }),
            },
        };
        let document = serde_json::json!({
            "topic": topic, "partition": partition, "offset": offset,
            "reason": error.to_string(), "key": raw(key), "value": raw(value),
        });
        let relative = quarantine_path(topic, partition, offset);
        let path = segment::object_path(self.compactor.catalog.root(), &relative);
        warn!(topic, partition, offset, %path, reason = %error, "quarantining a record");
        self.compactor
            .store
            .put(&path, PutPayload::from(document.to_string().into_bytes()))
            .await
            .map_err(|source| Error::Store {
                operation: "put",
                path: path.to_string(),
                source,
            })?;
        self.batch.quarantine.push(QuarantineEntry {
            object: QuarantinedObject::KafkaRecord {
                topic: topic.to_owned(),
                partition,
                offset,
            },
            reason: format!("{} (raw record at {relative})", error.reason),
            at_ts: now_micros(),
        });
        CompactorStats::add(&self.compactor.stats.records_quarantined, 1);
        Ok(())
    }

    /// Starts writing and committing the batch (after the previous flush has finished): the
    /// segments are encoded, stored and committed with the consumed offsets by a task of their
    /// own while the loop goes on consuming into the next batch. At most one flush is in
    /// flight; its outcome is taken by [`Run::finish_flush`].
    #[instrument(skip_all, fields(records = self.batch.records, rows = self.decoders.appended_rows()))]
    async fn flush(&mut self) -> Result<()> {
        self.take_pending().await?;
        self.deadline = None;
        if self.batch.is_empty() {
            // No record was taken: every row appended was retracted (replayed records).
            self.decoders.clear();
            return Ok(());
        }
        if !self.finish_flush().await? {
            return Ok(()); // it failed: the batch was dropped and everything restarts
        }
        let config = self.compactor.config.clone();
        let state = self.compactor.catalog.state();
        let batch = std::mem::take(&mut self.batch);
        let tables = group_segments(self.decoders.take_appended());
        let mut plan = Vec::new();
        let mut known: HashMap<TableId, (u64, Option<TableSchema>)> = HashMap::new();
        for (table, groups) in tables {
            // Groups of rows all retracted (duplicates, replayed records) make no segment.
            for group in groups.into_iter().filter(|g| g.rows() > 0) {
                let (last_id, last_schema) = known.entry(table.clone()).or_insert_with(|| {
                    latest_schema(state.table(&table).map(|t| t.schemas()).unwrap_or(&[]))
                });
                if let Some(last) = last_schema
                    && last.event_id_version != group.schema.event_id_version
                {
                    // Another compactor (an older strata) committed the table's first schema
                    // after these rows were decoded: their ids are of the wrong version.
                    warn!(
                        %table,
                        catalog = u8::from(last.event_id_version),
                        decoded = u8::from(group.schema.event_id_version),
                        "the table's event id version in the catalog is not the one its rows \
                         were hashed with; decoding the batch again"
                    );
                    self.id_versions.record(table_id_versions(&state));
                    return self.reset().await;
                }
                if last_schema.as_ref() != Some(&*group.schema) {
                    *last_id += 1;
                    let effective_from_ts = group.min_commit_ts().unwrap_or_default();
                    plan.push(Planned::Action(Action::SetSchema(SchemaVersion {
                        table: table.clone(),
                        schema_id: *last_id,
                        effective_from_ts,
                        schema: group.schema.to_catalog_json(),
                    })));
                    *last_schema = Some((*group.schema).clone());
                }
                plan.push(Planned::Segment(group));
            }
        }
        let watermarks = self.table_watermarks();
        let mut offsets = Vec::new();
        let mut kafka_offsets = TopicPartitionList::new();
        for ((topic, partition), p) in &mut self.partitions {
            if let (Some(from), Some(to)) = (p.from, p.next)
                && to > from
            {
                offsets.push(Action::ConsumeOffsets(OffsetRange {
                    group: config.group_id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    from_offset: from,
                    to_offset: to,
                }));
                let _ = kafka_offsets.add_partition_offset(topic, *partition, Offset::Offset(to));
                p.begin_flush();
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tail = offsets;
        tail.extend(batch.quarantine.into_iter().map(Action::Quarantine));
        tail.extend(
            watermarks
                .into_iter()
                .filter(|(table, ts)| state.watermark(table).is_none_or(|w| *ts > w))
                .map(|(table, ts)| Action::SetWatermark(Watermark { table, ts })),
        );
        let work = FlushWork {
            store: Arc::clone(&self.compactor.store),
            catalog: Arc::clone(&self.compactor.catalog),
            config,
            records: batch.records,
            plan,
            tail,
        };
        self.in_flight = Some(InFlight {
            task: tokio::spawn(work.run()),
            kafka_offsets,
        });
        Ok(())
    }

    /// After a flush committed: its ids are remembered as committed, the counters count it,
    /// and Kafka hears of its offsets.
    fn flush_committed(
        &mut self,
        version: u64,
        written: &[strata_catalog::Segment],
        kafka_offsets: &TopicPartitionList,
    ) {
        let stats = self.stats();
        CompactorStats::add(&stats.commits, 1);
        CompactorStats::add(&stats.segments_written, written.len() as u64);
        CompactorStats::add(&stats.rows_written, written.iter().map(|s| s.rows).sum());
        CompactorStats::add(&stats.bytes_written, written.iter().map(|s| s.bytes).sum());
        debug!(version, "flush acknowledged");
        let window = self.config().dedup_window;
        for p in self.partitions.values_mut() {
            p.flush_committed(window);
        }
        // For lag monitoring only; positions come from the catalog.
        if kafka_offsets.count() > 0
            && let Err(e) = self.consumer.commit(kafka_offsets, CommitMode::Async)
        {
            debug!(error = %e, "committing offsets to Kafka (monitoring only) failed");
        }
    }

    /// True when a flush is in flight and its task has ended.
    fn flush_done(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished())
    }

    /// Waits for the flush in flight, if any, and takes its outcome. Returns false when it
    /// failed: then its segments were cleaned up, the batch dropped, and every partition
    /// restarts at the catalog's offsets.
    async fn finish_flush(&mut self) -> Result<bool> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(true);
        };
        let outcome = in_flight
            .task
            .await
            .unwrap_or_else(|e| FlushOutcome::Failed {
                written: Vec::new(),
                conflict: false,
                error: format!("flush task failed: {e}"),
            });
        match outcome {
            FlushOutcome::Committed { version, written } => {
                info!(version, segments = written.len(), "committed");
                self.flush_committed(version, &written, &in_flight.kafka_offsets);
                Ok(true)
            }
            FlushOutcome::Failed {
                written,
                conflict,
                error,
            } => {
                if conflict {
                    CompactorStats::add(&self.stats().conflicts, 1);
                    info!(error, "another compactor committed first; replaying");
                } else {
                    warn!(error, "flush failed; replaying from the catalog");
                }
                self.delete_orphans(&written).await;
                self.reset().await?;
                Ok(false)
            }
        }
    }

    /// Per table seen on the assigned topics: the commit time up to which all its changes have
    /// been read (see [`Run::topic_watermarks`]).
    fn table_watermarks(&self) -> BTreeMap<TableId, i64> {
        let mut watermarks: BTreeMap<TableId, i64> = BTreeMap::new();
        for (topic, ts) in self.topic_watermarks() {
            for table in self.topic_tables.get(&topic).into_iter().flatten() {
                let wm = watermarks.entry(table.clone()).or_insert(ts);
                *wm = (*wm).min(ts);
            }
        }
        watermarks
    }

    /// With nothing buffered and no flush in flight (every record read is committed), commits
    /// the table watermarks that moved on since, at most once per `flush_interval`. Without it
    /// a table whose changes stopped would keep the watermark of its last flush, taken before
    /// the broker's statistics said its partitions were caught up, and its last changes would
    /// wait for the next one to be snapshotted.
    fn advance_idle_watermarks(&mut self) {
        if !self.batch.is_empty() || self.in_flight.is_some() {
            return;
        }
        let now = Instant::now();
        if self.next_idle_watermarks.is_some_and(|at| now < at) {
            return;
        }
        self.next_idle_watermarks = Some(now + self.compactor.config.flush_interval);
        let state = self.compactor.catalog.state();
        let tail: Vec<Action> = self
            .table_watermarks()
            .into_iter()
            .filter(|(table, ts)| {
                state.table(table).is_some() && state.watermark(table).is_none_or(|w| *ts > w)
            })
            .map(|(table, ts)| Action::SetWatermark(Watermark { table, ts }))
            .collect();
        if tail.is_empty() {
            return;
        }
        debug!(
            tables = tail.len(),
            "committing watermarks that moved on while idle"
        );
        let work = FlushWork {
            store: Arc::clone(&self.compactor.store),
            catalog: Arc::clone(&self.compactor.catalog),
            config: self.compactor.config.clone(),
            records: 0,
            plan: Vec::new(),
            tail,
        };
        self.in_flight = Some(InFlight {
            task: tokio::spawn(work.run()),
            kafka_offsets: TopicPartitionList::new(),
        });
    }

    /// Per topic whose partitions are all assigned here and understood: the commit time up to
    /// which every change it carries has been consumed. A partition that is caught up (its
    /// next offset is the broker's high watermark as last fetched) holds nothing back; one that
    /// lags holds the watermark at the latest commit time read from it; one that lags and was
    /// never read leaves the topic without a watermark. Events reach a partition in commit
    /// order, so everything up to a partition's latest commit time has been read from it.
    fn topic_watermarks(&self) -> Vec<(String, i64)> {
        let mut topics: BTreeMap<&str, TopicProgress> = BTreeMap::new();
        for ((topic, partition), p) in &self.partitions {
            let progress = topics.entry(topic.as_str()).or_default();
            progress.latest = progress.latest.max(p.read_ts);
            let caught_up = self
                .consumer
                .context()
                .high_watermark(topic, *partition)
                .is_some_and(|(low, high)| p.next.unwrap_or(low) >= high);
            if caught_up {
                continue;
            }
            match p.read_ts {
                Some(ts) => progress.lagging = Some(progress.lagging.map_or(ts, |l| l.min(ts))),
                None => progress.unknown = true,
            }
        }
        topics
            .into_iter()
            .filter(|(_, progress)| !progress.unknown)
            .filter_map(|(topic, progress)| {
                Some((topic.to_owned(), progress.lagging.or(progress.latest)?))
            })
            .collect()
    }

    /// Best effort: removes segments written for a batch that was not committed. (After an
    /// unknown outcome the commit may have landed: then the catalog names them, keep them.)
    async fn delete_orphans(&self, written: &[strata_catalog::Segment]) {
        if let Err(e) = self.compactor.catalog.refresh().await {
            debug!(error = %e, "refresh before orphan cleanup failed; keeping the files");
            return;
        }
        let state = self.compactor.catalog.state();
        for segment in written {
            let live = state
                .segments(&segment.table)
                .iter()
                .any(|entry| entry.segment.path == segment.path);
            if live {
                continue;
            }
            let path = segment::object_path(self.compactor.catalog.root(), &segment.path);
            if let Err(e) = self.compactor.store.delete(&path).await {
                debug!(%path, error = %e, "could not delete an orphaned segment");
            }
        }
    }
}

/// How far a topic's assigned partitions have been read (see `Run::topic_watermarks`).
#[derive(Debug, Default)]
struct TopicProgress {
    /// The lowest latest-read commit time among partitions that lag.
    lagging: Option<i64>,
    /// The latest commit time read from any partition.
    latest: Option<i64>,
    /// A partition lags and nothing was read from it: no watermark.
    unknown: bool,
}

/// The highest schema id of a table and that schema, if readable.
fn latest_schema(schemas: &[SchemaVersion]) -> (u64, Option<TableSchema>) {
    schemas
        .iter()
        .max_by_key(|s| s.schema_id)
        .map_or((0, None), |s| {
            (s.schema_id, TableSchema::from_catalog_json(&s.schema).ok())
        })
}

/// Each table's event id version: its first schema's (see `strata_catalog::event::id`).
fn table_id_versions(state: &CatalogState) -> Vec<(TableId, EventIdVersion)> {
    state
        .tables()
        .filter_map(|table| {
            let first = state
                .table(table)?
                .schemas()
                .iter()
                .min_by_key(|s| s.schema_id)?;
            match TableSchema::from_catalog_json(&first.schema) {
                Ok(schema) => Some((table.clone(), schema.event_id_version)),
                Err(e) => {
                    warn!(%table, error = %e, "the table's first schema is unreadable");
                    None
                }
            }
        })
        .collect()
}

/// Where a quarantined record's raw bytes go, relative to the catalog root.
pub fn quarantine_path(topic: &str, partition: i32, offset: i64) -> String {
    format!("_quarantine/{topic}/{partition}-{offset}.json")
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
