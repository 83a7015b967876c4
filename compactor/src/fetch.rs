//! Records of the assigned partitions read a chunk at a time, through librdkafka's batched
//! consume (`rd_kafka_consume_batch_queue`), which rdkafka does not offer.
//!
//! rdkafka reads a record per call: an event popped from the consumer's queue under its lock,
//! the clock read, the event wrapped and later freed. For the compactor's small records that
//! was most of the Kafka read (the throughput bench's 2M Avro records of ~280 B on 4
//! partitions, read without decoding: 3.7-3.8 CPU-s one record at a time, 1.3-1.4 CPU-s in
//! chunks; see docs/BENCHMARKS.md).
//!
//! ```text
//!   partition fetch queues ──forward──▶ FetchQueue ──consume_batch──▶ the loop (chunks)
//!   consumer queue (rebalances, errors, statistics) ──▶ StreamConsumer (rdkafka, as before)
//! ```
//!
//! A partition's records go to the [`FetchQueue`] once [`Forward::route`] has forwarded its
//! fetch queue there, which the rebalance callback does before librdkafka starts fetching it.
//! Everything else stays on the consumer's queue, where rdkafka serves it: the batched consume
//! never sees a rebalance (it would answer one without the compactor's callback). A partition
//! that could not be forwarded keeps its records on the consumer's queue too; the loop reads
//! them from there as before, so each partition's records still come in order.
//!
//! This is the compactor's only `unsafe` code. Its rules:
//! - a [`FetchQueue`] borrows the consumer, so it is destroyed before the client;
//! - the [`Forward`] slot the rebalance callback reads holds the queue only while the
//!   [`FetchQueue`] lives (it clears the slot, under the slot's lock, before destroying the
//!   queue);
//! - a [`Fetched`] chunk owns its messages and frees each once: the records lent out of it
//!   borrow it, so none outlives its message. A chunk must be dropped before the consumer
//!   (the loop holds chunks in its state, which is dropped first).

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::warn;

use crate::decode::RawRecord;

/// A librdkafka queue handle that may move between threads (librdkafka's queues are
/// thread-safe).
struct QueuePtr(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka queue handles may be used from any thread.
unsafe impl Send for QueuePtr {}

/// Where the rebalance callback forwards newly assigned partitions: the live [`FetchQueue`], or
/// nothing (their records stay on the consumer's queue).
#[derive(Default)]
pub(crate) struct Forward {
    queue: Mutex<Option<QueuePtr>>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward").finish_non_exhaustive()
    }
}

impl Forward {
    /// Forwards each partition's fetch queue to the fetch queue, if one lives. Call before
    /// librdkafka starts fetching the partitions (in the rebalance callback, before the
    /// assignment): records fetched earlier would sit on the consumer's queue, and a later
    /// forward would put the partition's next records on another queue than its earlier ones.
    /// Returns how many partitions were not forwarded (their records come through the
    /// consumer's queue).
    pub(crate) fn route<'p, C: ClientContext>(
        &self,
        client: &Client<C>,
        partitions: impl IntoIterator<Item = (&'p str, i32)>,
    ) -> usize {
        let slot = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(destination) = slot.as_ref() else {
            return partitions.into_iter().count();
        };
        let rk = client.native_ptr();
        let mut missed = 0;
        for (topic, partition) in partitions {
            let Ok(name) = CString::new(topic) else {
                missed += 1;
                continue;
            };
            // SAFETY: `rk` is a live client (borrowed for the call); `name` is a C string
            // that outlives the call. The returned handle is ours to destroy.
            let source = unsafe { rd::rd_kafka_queue_get_partition(rk, name.as_ptr(), partition) };
            let Some(source) = NonNull::new(source) else {
                warn!(
                    topic,
                    partition, "no fetch queue for the partition; reading it unbatched"
                );
                missed += 1;
                continue;
            };
            // SAFETY: both handles are live (the destination while the slot holds it, and the
            // slot is locked). The forward is kept by the partition's queue itself, past the
            // handle destroyed here, until librdkafka stops fetching the partition.
            unsafe {
                rd::rd_kafka_queue_forward(source.as_ptr(), destination.0.as_ptr());
                rd::rd_kafka_queue_destroy(source.as_ptr());
            }
        }
        missed
    }
}

/// The queue the assigned partitions' records come to, read a chunk at a time.
pub(crate) struct FetchQueue<'c> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Notified when the queue turns non-empty (librdkafka calls back from its threads).
    wake: Arc<Notify>,
    /// The reference lent to librdkafka as the callback's opaque (from `Arc::into_raw`).
    lent: *const Notify,
    forward: &'c Forward,
}

// SAFETY: the queue handle is thread-safe in librdkafka; `lent` is only turned back into its
// `Arc` on drop.
unsafe impl Send for FetchQueue<'_> {}
// SAFETY: as above; `take` and `ready` only call thread-safe librdkafka functions.
unsafe impl Sync for FetchQueue<'_> {}

impl std::fmt::Debug for FetchQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchQueue").finish_non_exhaustive()
    }
}

/// librdkafka's callback: the queue turned non-empty.
unsafe extern "C" fn queue_not_empty(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` lent by `FetchQueue::new`, alive until the callback is
    // disabled (which takes the queue's lock this is called under).
    let notify = unsafe { &*opaque.cast::<Notify>() };
    notify.notify_one();
}

impl<'c> FetchQueue<'c> {
    /// A queue of `consumer`'s client, made the target of `forward` (the slot the consumer's
    /// rebalance callback reads). `None` if librdkafka would not make one.
    pub(crate) fn new<C: ConsumerContext>(
        consumer: &'c StreamConsumer<C>,
        forward: &'c Forward,
    ) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is the live client; the handle is destroyed in `drop`, before the
        // client (`'c`).
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })?;
        let wake = Arc::new(Notify::new());
        let lent = Arc::into_raw(Arc::clone(&wake));
        // SAFETY: the queue is live; `lent` stays valid until `drop` disables the callback.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(queue_not_empty),
                lent.cast_mut().cast(),
            );
        }
        *forward.queue.lock().unwrap_or_else(PoisonError::into_inner) = Some(QueuePtr(queue));
        Some(Self {
            queue,
            wake,
            lent,
            forward,
        })
    }

    /// Waits until the queue may hold records (a record came since the last [`take`]
    /// found it empty; may wake without one).
    ///
    /// [`take`]: FetchQueue::take
    pub(crate) async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Takes up to `max` records without waiting. Records that carry an error (a partition's
    /// fetch failed) are logged and left out.
    pub(crate) fn take(&self, max: usize) -> Fetched {
        let mut messages: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(max);
        // SAFETY: the queue is live; librdkafka writes at most `max` message pointers into
        // the spare capacity and returns how many (or -1).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, messages.as_mut_ptr(), max)
        };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: the first `n` slots were written by librdkafka.
        unsafe { messages.set_len(n) };
        let mut kept = Vec::with_capacity(n);
        for message in messages {
            let Some(message) = NonNull::new(message) else {
                continue;
            };
            let fetched = FetchedMessage(message);
            if fetched.raw().err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                kept.push(fetched);
            } else {
                let error = RDKafkaErrorCode::from(fetched.raw().err);
                warn!(
                    topic = fetched.topic(),
                    partition = fetched.partition(),
                    %error,
                    "kafka consumer error"
                );
            }
        }
        Fetched { messages: kept }
    }
}

impl Drop for FetchQueue<'_> {
    fn drop(&mut self) {
        *self
            .forward
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        // SAFETY: the queue is live until destroyed here; disabling the callback takes the
        // queue's lock, so no call is running with `lent` afterwards.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
            drop(Arc::from_raw(self.lent));
        }
    }
}

/// One message taken from the fetch queue, freed on drop.
struct FetchedMessage(NonNull<rd::rd_kafka_message_t>);

// SAFETY: a message is freed once, by its owner, from any thread (librdkafka allows it); it is
// only read while owned.
unsafe impl Send for FetchedMessage {}
// SAFETY: reads of a message are reads of memory librdkafka no longer changes.
unsafe impl Sync for FetchedMessage {}

impl FetchedMessage {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the message lives until this owner drops it.
        unsafe { self.0.as_ref() }
    }

    fn topic(&self) -> &str {
        let rkt = self.raw().rkt;
        if rkt.is_null() {
            return "";
        }
        // SAFETY: the message holds a reference on its topic, whose name is a C string.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) };
        name.to_str().unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// The payload or key bytes at `pointer` (`None`: a null pointer).
    fn bytes(&self, pointer: *mut c_void, len: usize) -> Option<&[u8]> {
        if pointer.is_null() {
            return None;
        }
        // SAFETY: librdkafka's payload or key of this message, `len` bytes, alive as long as
        // the message (the borrow of `self`).
        Some(unsafe { std::slice::from_raw_parts(pointer.cast::<u8>(), len) })
    }
}

impl Drop for FetchedMessage {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { rd::rd_kafka_message_destroy(self.0.as_ptr()) };
    }
}

/// Records taken from the fetch queue at once, in the queue's order.
#[derive(Default)]
pub(crate) struct Fetched {
    messages: Vec<FetchedMessage>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("records", &self.messages.len())
            .finish()
    }
}

impl Fetched {
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The records, borrowing the chunk.
    pub(crate) fn records(&self) -> impl Iterator<Item = RawRecord<'_>> {
        // Runs of records share a topic: its name is read once per run.
        let mut last: Option<(*mut rd::rd_kafka_topic_t, &str)> = None;
        self.messages.iter().map(move |m| {
            let raw = m.raw();
            let topic = match last {
                Some((rkt, name)) if rkt == raw.rkt => name,
                _ => {
                    let name = m.topic();
                    last = Some((raw.rkt, name));
                    name
                }
            };
            RawRecord {
                topic,
                partition: raw.partition,
                offset: raw.offset,
                key: m.bytes(raw.key, raw.key_len),
                value: m.bytes(raw.payload, raw.len),
            }
        })
    }
}

/// Reads `records` records from the start of `topic`'s partitions `0..partitions` the way the
/// compactor reads them (each partition's fetch queue forwarded to a [`FetchQueue`], taken
/// 8,192 records at a time), without decoding; returns the key and value bytes read. For the
/// throughput bench's "Kafka fetch only" step, not for use elsewhere.
#[doc(hidden)]
pub async fn read_in_chunks(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    records: usize,
) -> Result<usize, KafkaError> {
    let consumer: StreamConsumer = client.create()?;
    let forward = Forward::default();
    let fetch = FetchQueue::new(&consumer, &forward).ok_or(KafkaError::ClientCreation(
        "librdkafka made no queue".into(),
    ))?;
    // Forwarded before the assignment starts their fetches, as the rebalance callback does.
    let missed = forward.route(consumer.client(), (0..partitions).map(|p| (topic, p)));
    if missed > 0 {
        return Err(KafkaError::ClientCreation(format!(
            "{missed} partitions of {topic} could not be forwarded"
        )));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut left, mut bytes) = (records, 0);
    while left > 0 {
        let chunk = fetch.take(left.min(8192));
        if chunk.is_empty() {
            fetch.ready().await;
            continue;
        }
        left = left.saturating_sub(chunk.len());
        bytes += chunk
            .records()
            .map(|r| r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len))
            .sum::<usize>();
    }
    Ok(bytes)
}
