//! The PostgreSQL listener: publication and slot, initial snapshot, then the pgoutput stream into
//! Kafka, confirming to PostgreSQL only what Kafka has acknowledged.
//!
//! ```text
//!  start ─► publication ok? ─► slot exists and its snapshot is complete?
//!             │                    ├─ yes: START_REPLICATION from the slot's confirmed position
//!             │                    └─ no:  (re)create slot with an exported snapshot, read the
//!             │                            tables (op=r), mark the snapshot complete, stream
//!  stream:  Begin ─► Insert/Update/Delete/Truncate … (op=c/u/d/t, each with txId and commit LSN)
//!           ─► Commit: mark(commit end LSN) ── Kafka acks every event before it ─► durable
//!  every status_interval: standby status update, flush = durable position
//! ```
//!
//! The snapshot's completion is recorded as the comment of strata's publication
//! (`strata: snapshot complete …`), so a listener killed during the snapshot redoes it on restart
//! instead of streaming on from a half-read table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::config::{PostgresSourceConfig, SnapshotMode, redact_url};
use super::envelope::{self, EnvelopeError, EventSource, Op, Row, ServerNaming, TableLayout};
use super::pgoutput::{
    self, Lsn, PgTimestamp, PgoutputMessage, PrimaryKeepalive, ProtocolVersion, ReplicationMessage,
    StandbyStatusUpdate,
};
use super::replication::{
    ReplicationConfig, ReplicationConnection, ReplicationError, ReplicationStream, SlotSnapshot,
    quote_publication_names,
};
use super::snapshot::{self, SnapshotProgress, TableInfo, quote_ident};
use crate::now_micros;
use crate::sink::{EventSink, SinkConfig, SinkError};

/// Prefix of the logical messages strata writes as heartbeats.
const HEARTBEAT_PREFIX: &str = "strata.heartbeat";
/// Prefix of the topic that records each table's shape and the position from which it holds:
/// `__strata_schemas.<server name>` (outside `<server name>.*`, so change-topic patterns skip it).
pub const SCHEMA_HISTORY_PREFIX: &str = "__strata_schemas";
/// Prefix of the publication comment that records a completed snapshot.
const SNAPSHOT_DONE: &str = "strata: snapshot complete";

/// Why the PostgreSQL listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A SQL statement failed.
    #[error("PostgreSQL: {what}: {source}")]
    Sql {
        /// What strata was doing.
        what: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// Could not connect.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The server is not set up for logical decoding.
    #[error("PostgreSQL at {url} has wal_level={wal_level}; strata needs wal_level = logical")]
    WalLevel {
        /// The URL, password hidden.
        url: String,
        /// What it has.
        wal_level: String,
    },
    /// A configured table does not exist.
    #[error("table {table} does not exist (source.postgres.tables)")]
    TableNotFound {
        /// `schema.table`
        table: String,
    },
    /// Nothing to capture.
    #[error("no table to capture: none has a primary key, or source.postgres.tables is empty")]
    NoTables,
    /// The replication connection failed.
    #[error("replication slot {slot}: {source}")]
    Replication {
        /// The slot.
        slot: String,
        /// The transport's error.
        source: Box<ReplicationError>,
    },
    /// The slot was dropped under strata.
    #[error(
        "replication slot {slot} no longer exists (was it dropped?). Changes since its last \
         confirmed position may be gone; restart strata to create a new slot and snapshot"
    )]
    SlotDropped {
        /// The slot.
        slot: String,
    },
    /// A replication message could not be decoded.
    #[error("slot {slot}: undecodable replication message at {lsn}: {source}")]
    Decode {
        /// The slot.
        slot: String,
        /// Position of the message.
        lsn: Lsn,
        /// The decoder's error.
        source: pgoutput::DecodeError,
    },
    /// The server ended the stream.
    #[error("replication slot {slot}: the server ended the replication stream")]
    StreamEnded {
        /// The slot.
        slot: String,
    },
    /// A message that proto_version 1 never sends.
    #[error("slot {slot}: unexpected replication message at {lsn}: {message}")]
    Unexpected {
        /// The slot.
        slot: String,
        /// Position.
        lsn: Lsn,
        /// The message.
        message: String,
    },
    /// A row could not be turned into an event (unknown type, missing key, bad value).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A change referred to a relation pgoutput never described.
    #[error("slot {slot}: change for unknown relation OID {relation_id} at {lsn}")]
    UnknownRelation {
        /// The slot.
        slot: String,
        /// The OID.
        relation_id: u32,
        /// Position.
        lsn: Lsn,
    },
    /// Reading the snapshot failed.
    #[error("snapshot of {table}: {reason}")]
    Snapshot {
        /// `schema.table`
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// Kafka refused events; nothing after the last durable position was confirmed.
    #[error(transparent)]
    Sink(SinkError),
}

/// Counters of a running listener, for metrics and `strata status`.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Change events queued to Kafka (snapshot rows included).
    pub events: AtomicU64,
    /// Transactions seen.
    pub transactions: AtomicU64,
    /// Bytes of event values queued.
    pub bytes: AtomicU64,
    /// Last position received from the server.
    pub received_lsn: AtomicU64,
    /// Last position confirmed to the server (durable in Kafka).
    pub confirmed_lsn: AtomicU64,
    /// Commit time (µs since the epoch) of the last transaction received.
    pub last_commit_micros: AtomicU64,
    /// Snapshot progress.
    pub snapshot: SnapshotProgress,
}

/// A configured PostgreSQL listener.
#[derive(Debug)]
pub struct PostgresCapture {
    config: PostgresSourceConfig,
    naming: ServerNaming,
    sink: Arc<EventSink>,
    stats: Arc<CaptureStats>,
}

impl PostgresCapture {
    /// Connects to Kafka (failing clearly if no broker answers). `topic_prefix` is the Kafka
    /// prefix; topics become `<topic_prefix>.<source name>.<schema>.<table>`.
    pub async fn new(
        config: PostgresSourceConfig,
        sink: SinkConfig,
        topic_prefix: &str,
    ) -> Result<Self, CaptureError> {
        let format = sink.format;
        let sink = EventSink::connect(sink).await.map_err(CaptureError::Sink)?;
        let database = config
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .unwrap_or_default();
        let naming = ServerNaming {
            server_name: format!("{topic_prefix}.{}", config.name),
            database,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            format,
        };
        Ok(Self {
            config,
            naming,
            sink: Arc::new(sink),
            stats: Arc::default(),
        })
    }

    /// The listener's counters.
    pub fn stats(&self) -> Arc<CaptureStats> {
        Arc::clone(&self.stats)
    }

    /// The logical server name (`<prefix>.<source>`), which prefixes every topic.
    pub fn server_name(&self) -> &str {
        &self.naming.server_name
    }

    /// Runs until `cancel` fires or an error stops it. On cancel it confirms what is durable
    /// and returns `Ok`.
    #[tracing::instrument(skip_all, fields(source = %self.config.name, slot = %self.config.slot_name))]
    pub async fn run(self, cancel: CancellationToken) -> Result<(), CaptureError> {
        let config = &self.config;
        let (client, _conn) = connect_sql(&config.url).await?;
        check_wal_level(&client, &config.url).await?;
        let tables = resolve_tables(&client, config).await?;
        ensure_publication(&client, config, &tables).await?;

        let slot_exists = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&config.slot_name],
            )
            .await
            .map_err(|e| sql("looking up the replication slot", e))?
            .is_some();
        let snapshot_done = publication_comment(&client, config)
            .await?
            .is_some_and(|c| c.starts_with(SNAPSHOT_DONE));
        let wants_snapshot = config.snapshot_mode == SnapshotMode::Initial;

        let repl_err = |source| CaptureError::Replication {
            slot: config.slot_name.clone(),
            source: Box::new(source),
        };
        let repl_config = ReplicationConfig::from_url(&config.url).map_err(repl_err)?;
        let mut replication = ReplicationConnection::connect(&repl_config)
            .await
            .map_err(repl_err)?;

        let start_lsn = if slot_exists && (snapshot_done || !wants_snapshot) {
            tracing::info!("resuming from the slot's confirmed position");
            0
        } else {
            if slot_exists {
                tracing::warn!("the slot's initial snapshot never completed: redoing it");
                replication
                    .drop_slot(&config.slot_name)
                    .await
                    .map_err(repl_err)?;
            }
            set_publication_comment(&client, config, "strata: snapshot pending").await?;
            let mode = if wants_snapshot {
                SlotSnapshot::Export
            } else {
                SlotSnapshot::NoExport
            };
            let created = replication
                .create_logical_slot(&config.slot_name, mode, false)
                .await
                .map_err(repl_err)?;
            tracing::info!(
                consistent_point = %created.consistent_point,
                "replication slot created"
            );
            if let (true, Some(snapshot_name)) = (wants_snapshot, &created.snapshot_name) {
                let plan = snapshot::SnapshotPlan {
                    url: &config.url,
                    snapshot_name,
                    consistent_point: created.consistent_point.0,
                    tables: &tables,
                    naming: &self.naming,
                    parallelism: config.snapshot_parallelism,
                    chunk_rows: config.snapshot_chunk_rows,
                };
                let rows = snapshot::run_snapshot(&plan, &self.sink, &self.stats.snapshot).await?;
                self.stats.events.fetch_add(rows, Ordering::Relaxed);
                self.sink
                    .flush(Duration::from_secs(300))
                    .await
                    .map_err(CaptureError::Sink)?;
            }
            set_publication_comment(
                &client,
                config,
                &format!("{SNAPSHOT_DONE} at {}", created.consistent_point),
            )
            .await?;
            created.consistent_point.0
        };

        let options = [
            ("proto_version", "1".to_owned()),
            (
                "publication_names",
                quote_publication_names(&[&config.publication_name]),
            ),
            ("messages", "true".to_owned()),
        ];
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stream = replication
            .start_logical(&config.slot_name, Lsn(start_lsn), &options)
            .await
            .map_err(|source| map_replication_error(&config.slot_name, source))?;
        tracing::info!(from = %Lsn(start_lsn), "streaming changes");

        let mut streamer = Streamer {
            capture: &self,
            client: &client,
            primary_keys: tables
                .iter()
                .map(|t| (t.oid, key_column_names(&t.relation)))
                .collect(),
            layouts: HashMap::new(),
            ensured_topics: HashSet::new(),
            txn: None,
            last_commit_lsn: None,
            received: Lsn(start_lsn),
            reported: Lsn(0),
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(8192),
        };
        streamer.stream(stream, cancel).await
    }
}

/// The transaction being received.
#[derive(Debug)]
struct Txn {
    xid: Option<u32>,
    commit_lsn: u64,
    commit_micros: i64,
    events: u64,
    per_table: HashMap<u32, u64>,
}

struct Streamer<'a> {
    capture: &'a PostgresCapture,
    client: &'a Client,
    /// Key columns per relation OID, from the catalog (see [`Streamer::key_by_primary_key`]).
    primary_keys: HashMap<u32, HashSet<String>>,
    layouts: HashMap<u32, TableLayout>,
    ensured_topics: HashSet<String>,
    txn: Option<Txn>,
    last_commit_lsn: Option<u64>,
    received: Lsn,
    reported: Lsn,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Streamer<'_> {
    async fn stream(
        &mut self,
        mut stream: ReplicationStream,
        cancel: CancellationToken,
    ) -> Result<(), CaptureError> {
        let config = &self.capture.config;
        let slot = config.slot_name.clone();
        let mut status_tick = tokio::time::interval(config.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_data = Instant::now();
        let heartbeat = config.heartbeat_interval;
        let mut decoder = pgoutput::PgoutputDecoder::new(ProtocolVersion::V1);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // Give Kafka a moment, then confirm what is durable.
                    let _ = self.capture.sink.flush(Duration::from_secs(10)).await;
                    self.report(&mut stream, false).await?;
                    tracing::info!(confirmed = %self.reported, "stopped");
                    return Ok(());
                }
                _ = status_tick.tick() => {
                    self.capture.sink.check().map_err(CaptureError::Sink)?;
                    self.report(&mut stream, false).await?;
                    if !heartbeat.is_zero() && last_data.elapsed() >= heartbeat {
                        self.heartbeat().await?;
                        last_data = Instant::now();
                    }
                }
                frame = stream.next() => {
                    let frame = frame.map_err(|e| map_replication_error(&slot, e))?;
                    let Some(frame) = frame else {
                        return Err(CaptureError::StreamEnded { slot: slot.clone() });
                    };
                    match pgoutput::decode_replication_message(&frame)
                        .map_err(|source| CaptureError::Decode { slot: slot.clone(), lsn: self.received, source })?
                    {
                        ReplicationMessage::PrimaryKeepalive(k) => self.keepalive(&mut stream, &k).await?,
                        ReplicationMessage::XLogData(x) => {
                            last_data = Instant::now();
                            let lsn = x.wal_start;
                            if lsn > self.received {
                                self.received = lsn;
                                self.capture.stats.received_lsn.store(lsn.0, Ordering::Relaxed);
                            }
                            let message = decoder.decode(x.data).map_err(|source| {
                                CaptureError::Decode { slot: slot.clone(), lsn, source }
                            })?;
                            self.handle(message, lsn).await?;
                        }
                    }
                }
            }
        }
    }

    async fn keepalive(
        &mut self,
        stream: &mut ReplicationStream,
        k: &PrimaryKeepalive,
    ) -> Result<(), CaptureError> {
        if self.txn.is_none() {
            // Everything the server decoded up to here is either sent to us or not ours:
            // once the events before it are durable, the slot may move here.
            self.capture.sink.mark(k.wal_end.0);
            if k.wal_end > self.received {
                self.received = k.wal_end;
            }
        }
        if k.reply_requested {
            self.report(stream, false).await?;
        }
        Ok(())
    }

    async fn report(
        &mut self,
        stream: &mut ReplicationStream,
        reply: bool,
    ) -> Result<(), CaptureError> {
        let durable = self
            .capture
            .sink
            .durable_position()
            .map(Lsn)
            .unwrap_or(self.reported);
        let update = StandbyStatusUpdate {
            write_lsn: self.received.max(durable),
            flush_lsn: durable,
            apply_lsn: durable,
            client_time: PgTimestamp::from_unix_micros(now_micros()),
            reply_requested: reply,
        };
        stream
            .send(&update.encode())
            .await
            .map_err(|e| map_replication_error(&self.capture.config.slot_name, e))?;
        if durable > self.reported {
            tracing::debug!(confirmed = %durable, "position confirmed");
        }
        self.reported = durable;
        self.capture
            .stats
            .confirmed_lsn
            .store(durable.0, Ordering::Relaxed);
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), CaptureError> {
        self.client
            .execute(
                "SELECT pg_logical_emit_message(false, $1, '')",
                &[&HEARTBEAT_PREFIX],
            )
            .await
            .map_err(|e| sql("writing a heartbeat message", e))?;
        Ok(())
    }

    /// Appends the table's shape, in force from `lsn` on, to the source's schema history topic
    /// (`__strata_schemas.<server name>`, keyed by `schema.table`). A restart records it again: readers
    /// keep the latest entry per (table, position).
    async fn record_schema(&mut self, layout: &TableLayout, lsn: Lsn) -> Result<(), CaptureError> {
        let topic = format!(
            "{SCHEMA_HISTORY_PREFIX}.{}",
            self.capture.naming.server_name
        );
        self.ensure_topic(&topic).await?;
        let mut entry = layout.describe();
        if let Some(map) = entry.as_object_mut() {
            map.insert("lsn".into(), lsn.0.into());
            map.insert("lsn_text".into(), lsn.to_string().into());
            if let Some(txn) = &self.txn {
                map.insert("commit_lsn".into(), txn.commit_lsn.into());
                map.insert("commit_ts_us".into(), txn.commit_micros.into());
            }
        }
        let value = entry.to_string();
        self.capture
            .sink
            .send(
                &topic,
                Some(layout.qualified_name().as_bytes()),
                value.as_bytes(),
            )
            .await
            .map_err(CaptureError::Sink)
    }

    /// Under `REPLICA IDENTITY FULL` pgoutput flags every column as part of the identity; events
    /// of such a table are keyed by its primary key all the same, as in the snapshot (and as
    /// Debezium does), so that one row's events share one Kafka key.
    async fn key_by_primary_key(
        &mut self,
        relation: &mut pgoutput::Relation,
    ) -> Result<(), CaptureError> {
        if relation.replica_identity != pgoutput::ReplicaIdentity::Full {
            return Ok(());
        }
        if !self.primary_keys.contains_key(&relation.id) {
            let table =
                snapshot::describe_table(self.client, &relation.namespace, &relation.name).await?;
            self.primary_keys
                .insert(relation.id, key_column_names(&table.relation));
        }
        let keys = &self.primary_keys[&relation.id];
        for column in &mut relation.columns {
            column.flags = u8::from(keys.contains(&column.name));
        }
        Ok(())
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), CaptureError> {
        if !self.ensured_topics.contains(topic) {
            self.capture
                .sink
                .ensure_topics(&[topic.to_owned()])
                .await
                .map_err(CaptureError::Sink)?;
            self.ensured_topics.insert(topic.to_owned());
        }
        Ok(())
    }

    async fn handle(&mut self, message: PgoutputMessage, lsn: Lsn) -> Result<(), CaptureError> {
        let slot = &self.capture.config.slot_name;
        match message {
            PgoutputMessage::Begin(begin) => {
                self.txn = Some(Txn {
                    xid: Some(begin.xid),
                    commit_lsn: begin.final_lsn.0,
                    commit_micros: begin.commit_time.to_unix_micros(),
                    events: 0,
                    per_table: HashMap::new(),
                });
            }
            PgoutputMessage::Commit(commit) => {
                let txn = self.txn.take();
                self.capture.sink.mark(commit.end_lsn.0);
                self.last_commit_lsn = Some(commit.commit_lsn.0);
                self.capture
                    .stats
                    .transactions
                    .fetch_add(1, Ordering::Relaxed);
                let commit_micros = commit.commit_time.to_unix_micros();
                self.capture.stats.last_commit_micros.store(
                    u64::try_from(commit_micros).unwrap_or_default(),
                    Ordering::Relaxed,
                );
                if let Some(txn) = txn {
                    tracing::trace!(xid = ?txn.xid, events = txn.events, "transaction captured");
                }
            }
            PgoutputMessage::Relation(mut relation) => {
                self.key_by_primary_key(&mut relation).await?;
                let layout = TableLayout::new(&relation, &self.capture.naming)?;
                let changed = self
                    .layouts
                    .get(&relation.id)
                    .is_some_and(|old| old.describe() != layout.describe());
                if changed {
                    tracing::info!(
                        table = %layout.qualified_name(),
                        at = %lsn,
                        schema = %layout.describe(),
                        "table schema changed"
                    );
                }
                let is_new = changed || !self.layouts.contains_key(&relation.id);
                self.ensure_topic(&layout.topic.clone()).await?;
                for schema in layout.writer_schemas() {
                    self.capture
                        .sink
                        .publish_schema(schema)
                        .await
                        .map_err(CaptureError::Sink)?;
                }
                if is_new {
                    self.record_schema(&layout, lsn).await?;
                }
                self.layouts.insert(relation.id, layout);
            }
            PgoutputMessage::Insert(insert) => {
                self.change(insert.relation_id, Op::Create, None, Some(&insert.new), lsn)
                    .await?;
            }
            PgoutputMessage::Update(update) => {
                let old = update.old.as_ref().map(|o| o.tuple());
                self.change(update.relation_id, Op::Update, old, Some(&update.new), lsn)
                    .await?;
            }
            PgoutputMessage::Delete(delete) => {
                self.change(
                    delete.relation_id,
                    Op::Delete,
                    Some(delete.old.tuple()),
                    None,
                    lsn,
                )
                .await?;
            }
            PgoutputMessage::Truncate(truncate) => {
                for relation_id in truncate.relation_ids {
                    // A truncate event has neither key nor row images.
                    self.change(relation_id, Op::Truncate, None, None, lsn)
                        .await?;
                }
            }
            PgoutputMessage::Message(message) => {
                if message.prefix != HEARTBEAT_PREFIX {
                    tracing::debug!(prefix = %message.prefix, at = %message.lsn, "logical message");
                }
                if !message.transactional() && self.txn.is_none() {
                    // Nothing to publish; the slot may move past it once earlier events are in.
                    self.capture.sink.mark(message.lsn.0);
                }
            }
            PgoutputMessage::Origin(_) | PgoutputMessage::Type(_) => {}
            other => {
                // proto_version 1 never sends streaming or two-phase messages.
                return Err(CaptureError::Unexpected {
                    slot: slot.clone(),
                    lsn,
                    message: format!("{other:?}"),
                });
            }
        }
        Ok(())
    }

    async fn change(
        &mut self,
        relation_id: u32,
        op: Op,
        before: Option<&pgoutput::Tuple>,
        after: Option<&pgoutput::Tuple>,
        lsn: Lsn,
    ) -> Result<(), CaptureError> {
        let Some(layout) = self.layouts.get(&relation_id) else {
            return Err(CaptureError::UnknownRelation {
                slot: self.capture.config.slot_name.clone(),
                relation_id,
                lsn,
            });
        };
        let (xid, commit_lsn, commit_micros, order) = match &mut self.txn {
            Some(txn) => {
                txn.events += 1;
                let in_table = txn.per_table.entry(relation_id).or_default();
                *in_table += 1;
                (
                    txn.xid,
                    txn.commit_lsn,
                    txn.commit_micros,
                    Some((txn.events, *in_table)),
                )
            }
            None => (None, lsn.0, now_micros(), None),
        };
        let source = EventSource {
            commit_ts_micros: commit_micros,
            snapshot: "false",
            tx_id: xid,
            lsn: lsn.0,
            commit_lsn,
            last_commit_lsn: self.last_commit_lsn,
            order,
        };
        let key_row = after.or(before).map(Row::Tuple);
        match key_row {
            Some(row) => envelope::encode_key(layout, row, &mut self.key)?,
            None => self.key.clear(),
        }
        envelope::encode_value(
            layout,
            &self.capture.naming,
            op,
            before.map(Row::Tuple),
            after.map(Row::Tuple),
            &source,
            &mut self.value,
        )?;
        let key = (!self.key.is_empty()).then_some(self.key.as_slice());
        self.capture
            .sink
            .send(&layout.topic, key, &self.value)
            .await
            .map_err(CaptureError::Sink)?;
        self.capture.stats.events.fetch_add(1, Ordering::Relaxed);
        self.capture
            .stats
            .bytes
            .fetch_add(self.value.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A plain SQL connection; the connection task ends with the returned handle.
pub(crate) async fn connect_sql(
    url: &str,
) -> Result<(Client, tokio::task::JoinHandle<()>), CaptureError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|source| CaptureError::Connect {
            url: redact_url(url),
            source,
        })?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok((client, task))
}

fn key_column_names(relation: &pgoutput::Relation) -> HashSet<String> {
    relation
        .columns
        .iter()
        .filter(|c| c.is_key())
        .map(|c| c.name.clone())
        .collect()
}

fn sql(what: &str, source: tokio_postgres::Error) -> CaptureError {
    CaptureError::Sql {
        what: what.to_owned(),
        source,
    }
}

fn map_replication_error(slot: &str, source: ReplicationError) -> CaptureError {
    if source.is_missing_slot() {
        CaptureError::SlotDropped {
            slot: slot.to_owned(),
        }
    } else {
        CaptureError::Replication {
            slot: slot.to_owned(),
            source: Box::new(source),
        }
    }
}

async fn check_wal_level(client: &Client, url: &str) -> Result<(), CaptureError> {
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| sql("reading wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        return Err(CaptureError::WalLevel {
            url: redact_url(url),
            wal_level,
        });
    }
    Ok(())
}

/// The tables to capture: the configured ones (each must exist and have a key), or every table
/// with a primary key.
async fn resolve_tables(
    client: &Client,
    config: &PostgresSourceConfig,
) -> Result<Vec<TableInfo>, CaptureError> {
    let names: Vec<(String, String)> = if config.tables.is_empty() {
        client
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
                   AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| sql("listing tables with a primary key", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        config
            .tables
            .iter()
            .filter_map(|t| t.split_once('.'))
            .map(|(s, t)| (s.to_owned(), t.to_owned()))
            .collect()
    };
    if names.is_empty() {
        return Err(CaptureError::NoTables);
    }
    let mut tables = Vec::with_capacity(names.len());
    for (namespace, name) in names {
        let table = snapshot::describe_table(client, &namespace, &name).await?;
        if !table.relation.columns.iter().any(|c| c.is_key()) {
            return Err(EnvelopeError::MissingKey {
                table: format!("{namespace}.{name}"),
            }
            .into());
        }
        tables.push(table);
    }
    Ok(tables)
}

/// Creates the publication for the tables, or adds tables missing from an existing one.
async fn ensure_publication(
    client: &Client,
    config: &PostgresSourceConfig,
    tables: &[TableInfo],
) -> Result<(), CaptureError> {
    let publication = quote_ident(&config.publication_name);
    let existing = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&config.publication_name],
        )
        .await
        .map_err(|e| sql("reading the publication", e))?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication_name],
        )
        .await
        .map_err(|e| sql("reading the publication", e))?
        .is_some();
    let have: HashSet<(String, String)> = existing.iter().map(|r| (r.get(0), r.get(1))).collect();
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !have.contains(&(t.namespace.clone(), t.name.clone())))
        .map(TableInfo::quoted)
        .collect();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {publication} FOR TABLE {}",
                missing.join(", ")
            ))
            .await
            .map_err(|e| {
                sql(
                    &format!("creating publication {}", config.publication_name),
                    e,
                )
            })?;
        tracing::info!(publication = %config.publication_name, tables = tables.len(), "publication created");
    } else if !missing.is_empty() {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {publication} ADD TABLE {}",
                missing.join(", ")
            ))
            .await
            .map_err(|e| {
                sql(
                    &format!("adding tables to publication {}", config.publication_name),
                    e,
                )
            })?;
        tracing::info!(publication = %config.publication_name, added = missing.len(), "publication extended");
    }
    Ok(())
}

async fn publication_comment(
    client: &Client,
    config: &PostgresSourceConfig,
) -> Result<Option<String>, CaptureError> {
    let row = client
        .query_opt(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&config.publication_name],
        )
        .await
        .map_err(|e| sql("reading the publication comment", e))?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

async fn set_publication_comment(
    client: &Client,
    config: &PostgresSourceConfig,
    comment: &str,
) -> Result<(), CaptureError> {
    client
        .batch_execute(&format!(
            "COMMENT ON PUBLICATION {} IS '{}'",
            quote_ident(&config.publication_name),
            comment.replace('\'', "''")
        ))
        .await
        .map_err(|e| sql("recording the snapshot state on the publication", e))
}
