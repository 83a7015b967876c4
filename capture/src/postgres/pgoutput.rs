//! Decoder for PostgreSQL's `pgoutput` logical replication protocol, versions 1 to 4, and for the
//! streaming-replication messages that carry it.
//!
//! Pure: bytes in, typed messages out, no I/O, so every path is unit-tested and fuzzed
//! (`capture/fuzz`). Malformed input of any shape returns a [`DecodeError`] naming the field and
//! the byte offset; nothing panics and nothing is silently skipped.
//!
//! ```text
//!  server ── CopyData ──► decode_replication_message ─┬─► XLogData { data } ──► PgoutputDecoder::decode
//!                                                     │                          (tracks Stream Start/Stop)
//!                                                     └─► PrimaryKeepalive       ──► PgoutputMessage
//!  server ◄── CopyData ── StandbyStatusUpdate::encode (write / flush / apply LSN)
//! ```
//!
//! Reference: PostgreSQL documentation, "Streaming Replication Protocol" and "Logical Replication
//! Message Formats". All integers are big-endian; strings are NUL-terminated; LSNs are [`Lsn`];
//! timestamps are [`PgTimestamp`] (microseconds since 2000-01-01 00:00:00 UTC).
//!
//! Inside a streamed (in-progress) transaction, between Stream Start and Stream Stop, the
//! Relation, Type, Insert, Update, Delete, Truncate and logical decoding Message messages carry
//! the streamed transaction's xid right after their tag. [`decode`] takes that context as a
//! parameter; [`PgoutputDecoder`] tracks it for you.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL object identifier (relation or type OID).
pub type Oid = u32;

/// A PostgreSQL transaction id.
pub type Xid = u32;

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01 00:00:00 UTC).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A write-ahead log position. Displays and parses as PostgreSQL does: `16/B374D848`, the upper
/// and lower 32 bits in upper-case hexadecimal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, PostgreSQL's `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text given to [`Lsn::from_str`] is not `X/X` with one to eight hex digits on each side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: expected two groups of 1 to 8 hex digits, like 16/B374D848")]
pub struct ParseLsnError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let half = |part: &str| {
            let hex = !part.is_empty() && part.len() <= 8;
            if hex && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                u32::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        s.split_once('/')
            .and_then(|(hi, lo)| Some((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
            .map(Lsn)
            .ok_or_else(|| ParseLsnError {
                input: s.to_owned(),
            })
    }
}

/// A PostgreSQL `TimestampTz` as the replication protocol carries it: microseconds since the
/// PostgreSQL epoch, 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// The timestamp from microseconds since the Unix epoch (saturating at the `i64` range).
    pub fn from_unix_micros(unix_micros: i64) -> Self {
        PgTimestamp(unix_micros.saturating_sub(POSTGRES_EPOCH_UNIX_MICROS))
    }

    /// Microseconds since the Unix epoch, 1970-01-01 00:00:00 UTC. Saturates at the `i64` range,
    /// so PostgreSQL's `infinity` (`i64::MAX`) stays `i64::MAX`.
    pub fn to_unix_micros(self) -> i64 {
        self.0.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
    }
}

/// The pgoutput protocol version negotiated with `START_REPLICATION ... (proto_version 'N')`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// PostgreSQL 10+: transactions are sent at commit.
    V1 = 1,
    /// PostgreSQL 14+: adds streaming of in-progress transactions (`streaming 'on'`).
    V2 = 2,
    /// PostgreSQL 15+: adds two-phase commit messages (`two_phase 'on'`).
    V3 = 3,
    /// PostgreSQL 16+: adds parallel streaming (`streaming 'parallel'`), whose Stream Abort
    /// carries the abort LSN and time.
    V4 = 4,
}

impl ProtocolVersion {
    /// The number PostgreSQL uses for this version.
    pub fn number(self) -> u32 {
        self as u32
    }
}

impl TryFrom<u32> for ProtocolVersion {
    type Error = DecodeError;

    fn try_from(version: u32) -> Result<Self, Self::Error> {
        match version {
            1 => Ok(ProtocolVersion::V1),
            2 => Ok(ProtocolVersion::V2),
            3 => Ok(ProtocolVersion::V3),
            4 => Ok(ProtocolVersion::V4),
            version => Err(DecodeError::UnsupportedProtocolVersion { version }),
        }
    }
}

/// What was wrong with a message, and where. Offsets count bytes from the start of the buffer
/// given to the decoding function (for pgoutput messages: the start of the XLogData payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field was complete.
    #[error("truncated message: {field} at byte {offset} needs {needed} byte(s), {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The first byte is not a pgoutput message tag.
    #[error("unknown pgoutput message tag {} at byte {offset}", ShowByte(*tag))]
    UnknownMessageTag {
        /// The tag byte.
        tag: u8,
        /// Where it was.
        offset: usize,
    },
    /// The message exists only in a newer protocol version than the decoder was given.
    #[error(
        "pgoutput message {} needs protocol version {required}, the stream uses version {version}",
        ShowByte(*tag)
    )]
    NeedsNewerProtocol {
        /// The tag byte.
        tag: u8,
        /// The first version that has the message.
        required: u32,
        /// The version the decoder was given.
        version: u32,
    },
    /// The first byte is not a streaming-replication CopyData tag (`w` or `k`).
    #[error("unknown replication message tag {} at byte {offset}", ShowByte(*tag))]
    UnknownReplicationTag {
        /// The tag byte.
        tag: u8,
        /// Where it was.
        offset: usize,
    },
    /// A TupleData column kind other than `n`, `u`, `t` or `b`.
    #[error("unknown tuple column kind {} at byte {offset}", ShowByte(*kind))]
    UnknownColumnKind {
        /// The kind byte.
        kind: u8,
        /// Where it was.
        offset: usize,
    },
    /// An Insert, Update or Delete without the tuple marker (`N`, `K`, `O`) the protocol requires.
    #[error("expected {expected} at byte {offset}, found {}", ShowByte(*found))]
    UnexpectedTupleMarker {
        /// What was allowed there.
        expected: &'static str,
        /// The byte found.
        found: u8,
        /// Where it was.
        offset: usize,
    },
    /// A Relation message's replica identity is not `d`, `n`, `f` or `i`.
    #[error("unknown replica identity {} at byte {offset}", ShowByte(*value))]
    UnknownReplicaIdentity {
        /// The byte found.
        value: u8,
        /// Where it was.
        offset: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("{field} is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
        /// The first invalid byte.
        offset: usize,
    },
    /// A string field has no NUL terminator before the end of the message.
    #[error("{field} starting at byte {offset} has no NUL terminator")]
    UnterminatedString {
        /// The field being read.
        field: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A length or count field is negative.
    #[error("{field} at byte {offset} is negative ({value})")]
    NegativeLength {
        /// The field being read.
        field: &'static str,
        /// Where it was.
        offset: usize,
        /// The value found.
        value: i32,
    },
    /// The message continues after its last field.
    #[error("{remaining} unexpected trailing byte(s) at byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        remaining: usize,
    },
    /// Stream Start arrived while a stream was already open ([`PgoutputDecoder`] only).
    #[error("Stream Start for xid {xid} while the stream of xid {open_xid} is still open")]
    NestedStreamStart {
        /// The xid of the new stream.
        xid: Xid,
        /// The xid of the stream still open.
        open_xid: Xid,
    },
    /// Stream Stop arrived with no stream open ([`PgoutputDecoder`] only).
    #[error("Stream Stop without a preceding Stream Start")]
    StreamStopOutsideStream,
    /// A protocol version this decoder does not know.
    #[error("unsupported pgoutput protocol version {version} (versions 1 to 4 are known)")]
    UnsupportedProtocolVersion {
        /// The version asked for.
        version: u32,
    },
}

/// Shows a tag byte as `'B'` when printable, else as `0x00`.
struct ShowByte(u8);

impl fmt::Display for ShowByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgoutputMessage {
    /// `B`: a transaction begins (sent at its commit).
    Begin(Begin),
    /// `M`: a logical decoding message written with `pg_logical_emit_message`.
    Message(LogicalMessage),
    /// `C`: the transaction opened by the last Begin commits.
    Commit(Commit),
    /// `O`: the changes that follow came from a replication origin.
    Origin(Origin),
    /// `R`: the layout of a relation, sent before its first change and after every change of it.
    Relation(Relation),
    /// `Y`: a non-built-in data type used by a following Relation.
    Type(Type),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: relations were truncated.
    Truncate(Truncate),
    /// `S` (v2+): a block of changes of an in-progress transaction starts.
    StreamStart(StreamStart),
    /// `E` (v2+): the current block of streamed changes ends.
    StreamStop,
    /// `c` (v2+): a streamed transaction commits.
    StreamCommit(StreamCommit),
    /// `A` (v2+): a streamed transaction or subtransaction aborts.
    StreamAbort(StreamAbort),
    /// `b` (v3+): a prepared (two-phase) transaction begins.
    BeginPrepare(BeginPrepare),
    /// `P` (v3+): the transaction opened by Begin Prepare is prepared.
    Prepare(Prepare),
    /// `K` (v3+): a prepared transaction is committed.
    CommitPrepared(CommitPrepared),
    /// `r` (v3+): a prepared transaction is rolled back.
    RollbackPrepared(RollbackPrepared),
    /// `p` (v3+): a streamed transaction is prepared.
    StreamPrepare(Prepare),
}

/// Begin (`B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The final LSN of the transaction (its commit record).
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
}

/// Logical decoding message (`M`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The raw flags byte; bit 0 is [`LogicalMessage::transactional`].
    pub flags: u8,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content, as bytes.
    pub content: Vec<u8>,
}

impl LogicalMessage {
    /// Whether the message was emitted as part of a transaction (else it was sent immediately).
    pub fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Commit (`C`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction: the position to confirm once it is durable downstream.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// Origin (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The LSN of the commit on the origin server.
    pub commit_lsn: Lsn,
    /// The origin's name.
    pub name: String,
}

/// A relation's `REPLICA IDENTITY`, which decides what an Update or Delete carries of the old row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key columns, if any.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: the whole old row.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// Relation (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The relation's OID, which Insert/Update/Delete/Truncate refer to.
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    /// The relation's name.
    pub name: String,
    /// Its replica identity.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order TupleData lists them.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// The raw flags byte; bit 0 is [`RelationColumn::is_key`].
    pub flags: u8,
    /// The column name.
    pub name: String,
    /// The OID of the column's type.
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Whether the column is part of the replica identity key.
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Type (`Y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The type's OID.
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    /// The type's name.
    pub name: String,
}

/// One column of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value that did not change; its content is not sent. Never the same as NULL:
    /// the column keeps whatever value it had before.
    UnchangedToast,
    /// `t`: the value in the type's text output format (in the server encoding).
    Text(Vec<u8>),
    /// `b`: the value in the type's binary format (only with `binary 'true'`).
    Binary(Vec<u8>),
}

/// TupleData: a row image, one entry per column of the [`Relation`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuple(pub Vec<ColumnValue>);

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns are meaningful (the rest are NULL).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The row image, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// Insert (`I`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The OID of the [`Relation`].
    pub relation_id: Oid,
    /// The new row.
    pub new: Tuple,
}

/// Update (`U`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The OID of the [`Relation`].
    pub relation_id: Oid,
    /// The old key or row: present with `REPLICA IDENTITY FULL`, or when the key changed.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`ColumnValue::UnchangedToast`].
    pub new: Tuple,
}

/// Delete (`D`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The OID of the [`Relation`].
    pub relation_id: Oid,
    /// The old key or row.
    pub old: OldTuple,
}

/// The options of a Truncate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TruncateOptions {
    /// `TRUNCATE ... CASCADE` (bit 1).
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY` (bit 2).
    pub restart_identity: bool,
}

/// Truncate (`T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed transaction's xid, inside a stream only.
    pub xid: Option<Xid>,
    /// The raw options byte, decoded in [`Truncate::options`].
    pub option_bits: u8,
    /// The truncated relations.
    pub relation_ids: Vec<Oid>,
}

impl Truncate {
    /// The decoded options.
    pub fn options(&self) -> TruncateOptions {
        TruncateOptions {
            cascade: self.option_bits & 1 != 0,
            restart_identity: self.option_bits & 2 != 0,
        }
    }
}

/// Stream Start (`S`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed transaction.
    pub xid: Xid,
    /// Whether this is the transaction's first block of changes.
    pub first_segment: bool,
}

/// Stream Commit (`c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: Xid,
    /// Flags, currently unused (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
}

/// Stream Abort (`A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction.
    pub xid: Xid,
    /// The aborted subtransaction; equal to `xid` when the whole transaction aborts.
    pub subxid: Xid,
    /// The LSN of the abort (v4 with `streaming 'parallel'` only).
    pub abort_lsn: Option<Lsn>,
    /// Abort time (v4 with `streaming 'parallel'` only).
    pub abort_time: Option<PgTimestamp>,
}

/// Begin Prepare (`b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-given global transaction identifier.
    pub gid: String,
}

/// Prepare (`P`) and Stream Prepare (`p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-given global transaction identifier.
    pub gid: String,
}

/// Commit Prepared (`K`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// The LSN of the commit.
    pub commit_lsn: Lsn,
    /// The end LSN of the commit of the prepared transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-given global transaction identifier.
    pub gid: String,
}

/// Rollback Prepared (`r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags, currently unused (0).
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback.
    pub rollback_end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Rollback time.
    pub rollback_time: PgTimestamp,
    /// The transaction id.
    pub xid: Xid,
    /// The user-given global transaction identifier.
    pub gid: String,
}

/// Decodes one pgoutput message (the payload of an XLogData).
///
/// `in_stream` says whether the message arrived between Stream Start and Stream Stop, where
/// data messages carry an xid prefix; it is ignored for protocol version 1, which has no
/// streaming. [`PgoutputDecoder`] tracks it for you.
pub fn decode(
    buf: &[u8],
    version: ProtocolVersion,
    in_stream: bool,
) -> Result<PgoutputMessage, DecodeError> {
    let mut c = Cursor::new(buf);
    let tag = c.u8("message tag")?;
    let streamed = in_stream && version >= ProtocolVersion::V2;
    let needs = |required: ProtocolVersion| {
        if version >= required {
            Ok(())
        } else {
            Err(DecodeError::NeedsNewerProtocol {
                tag,
                required: required.number(),
                version: version.number(),
            })
        }
    };
    let message = match tag {
        b'B' => PgoutputMessage::Begin(Begin {
            final_lsn: c.lsn("final LSN")?,
            commit_time: c.timestamp("commit timestamp")?,
            xid: c.u32("xid")?,
        }),
        b'M' => PgoutputMessage::Message(LogicalMessage {
            xid: c.stream_xid(streamed)?,
            flags: c.u8("message flags")?,
            lsn: c.lsn("message LSN")?,
            prefix: c.string("message prefix")?,
            content: c.length_prefixed("message content")?.to_vec(),
        }),
        b'C' => PgoutputMessage::Commit(Commit {
            flags: c.u8("commit flags")?,
            commit_lsn: c.lsn("commit LSN")?,
            end_lsn: c.lsn("end LSN")?,
            commit_time: c.timestamp("commit timestamp")?,
        }),
        b'O' => PgoutputMessage::Origin(Origin {
            commit_lsn: c.lsn("origin commit LSN")?,
            name: c.string("origin name")?,
        }),
        b'R' => PgoutputMessage::Relation(relation(&mut c, streamed)?),
        b'Y' => PgoutputMessage::Type(Type {
            xid: c.stream_xid(streamed)?,
            id: c.u32("type OID")?,
            namespace: c.string("type namespace")?,
            name: c.string("type name")?,
        }),
        b'I' => {
            let xid = c.stream_xid(streamed)?;
            let relation_id = c.u32("relation OID")?;
            c.marker(b'N', "'N' (new tuple)")?;
            PgoutputMessage::Insert(Insert {
                xid,
                relation_id,
                new: tuple(&mut c)?,
            })
        }
        b'U' => {
            let xid = c.stream_xid(streamed)?;
            let relation_id = c.u32("relation OID")?;
            let offset = c.offset();
            let old = match c.u8("tuple marker")? {
                b'K' => Some(OldTuple::Key(tuple(&mut c)?)),
                b'O' => Some(OldTuple::Full(tuple(&mut c)?)),
                b'N' => None,
                found => {
                    return Err(DecodeError::UnexpectedTupleMarker {
                        expected: "'K', 'O' or 'N'",
                        found,
                        offset,
                    });
                }
            };
            if old.is_some() {
                c.marker(b'N', "'N' (new tuple)")?;
            }
            PgoutputMessage::Update(Update {
                xid,
                relation_id,
                old,
                new: tuple(&mut c)?,
            })
        }
        b'D' => {
            let xid = c.stream_xid(streamed)?;
            let relation_id = c.u32("relation OID")?;
            let offset = c.offset();
            let old = match c.u8("tuple marker")? {
                b'K' => OldTuple::Key(tuple(&mut c)?),
                b'O' => OldTuple::Full(tuple(&mut c)?),
                found => {
                    return Err(DecodeError::UnexpectedTupleMarker {
                        expected: "'K' or 'O'",
                        found,
                        offset,
                    });
                }
            };
            PgoutputMessage::Delete(Delete {
                xid,
                relation_id,
                old,
            })
        }
        b'T' => {
            let xid = c.stream_xid(streamed)?;
            let count = c.count_i32("relation count")?;
            let option_bits = c.u8("truncate options")?;
            // Each OID takes four bytes: never reserve more than the message can hold.
            let mut relation_ids = Vec::with_capacity(count.min(c.remaining() / 4));
            for _ in 0..count {
                relation_ids.push(c.u32("truncated relation OID")?);
            }
            PgoutputMessage::Truncate(Truncate {
                xid,
                option_bits,
                relation_ids,
            })
        }
        b'S' => {
            needs(ProtocolVersion::V2)?;
            PgoutputMessage::StreamStart(StreamStart {
                xid: c.u32("xid")?,
                first_segment: c.u8("first segment flag")? == 1,
            })
        }
        b'E' => {
            needs(ProtocolVersion::V2)?;
            PgoutputMessage::StreamStop
        }
        b'c' => {
            needs(ProtocolVersion::V2)?;
            PgoutputMessage::StreamCommit(StreamCommit {
                xid: c.u32("xid")?,
                flags: c.u8("commit flags")?,
                commit_lsn: c.lsn("commit LSN")?,
                end_lsn: c.lsn("end LSN")?,
                commit_time: c.timestamp("commit timestamp")?,
            })
        }
        b'A' => {
            needs(ProtocolVersion::V2)?;
            let xid = c.u32("xid")?;
            let subxid = c.u32("subtransaction xid")?;
            // v4 sends these two fields only with `streaming 'parallel'`; the message length
            // tells which form this is.
            let (abort_lsn, abort_time) = if version >= ProtocolVersion::V4 && c.remaining() > 0 {
                (
                    Some(c.lsn("abort LSN")?),
                    Some(c.timestamp("abort timestamp")?),
                )
            } else {
                (None, None)
            };
            PgoutputMessage::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_time,
            })
        }
        b'b' => {
            needs(ProtocolVersion::V3)?;
            PgoutputMessage::BeginPrepare(BeginPrepare {
                prepare_lsn: c.lsn("prepare LSN")?,
                end_lsn: c.lsn("end LSN")?,
                prepare_time: c.timestamp("prepare timestamp")?,
                xid: c.u32("xid")?,
                gid: c.string("GID")?,
            })
        }
        b'P' | b'p' => {
            needs(ProtocolVersion::V3)?;
            let prepare = Prepare {
                flags: c.u8("prepare flags")?,
                prepare_lsn: c.lsn("prepare LSN")?,
                end_lsn: c.lsn("end LSN")?,
                prepare_time: c.timestamp("prepare timestamp")?,
                xid: c.u32("xid")?,
                gid: c.string("GID")?,
            };
            if tag == b'P' {
                PgoutputMessage::Prepare(prepare)
            } else {
                PgoutputMessage::StreamPrepare(prepare)
            }
        }
        b'K' => {
            needs(ProtocolVersion::V3)?;
            PgoutputMessage::CommitPrepared(CommitPrepared {
                flags: c.u8("commit flags")?,
                commit_lsn: c.lsn("commit LSN")?,
                end_lsn: c.lsn("end LSN")?,
                commit_time: c.timestamp("commit timestamp")?,
                xid: c.u32("xid")?,
                gid: c.string("GID")?,
            })
        }
        b'r' => {
            needs(ProtocolVersion::V3)?;
            PgoutputMessage::RollbackPrepared(RollbackPrepared {
                flags: c.u8("rollback flags")?,
                prepare_end_lsn: c.lsn("prepared transaction end LSN")?,
                rollback_end_lsn: c.lsn("rollback end LSN")?,
                prepare_time: c.timestamp("prepare timestamp")?,
                rollback_time: c.timestamp("rollback timestamp")?,
                xid: c.u32("xid")?,
                gid: c.string("GID")?,
            })
        }
        tag => return Err(DecodeError::UnknownMessageTag { tag, offset: 0 }),
    };
    c.finish()?;
    Ok(message)
}

fn relation(c: &mut Cursor<'_>, streamed: bool) -> Result<Relation, DecodeError> {
    let xid = c.stream_xid(streamed)?;
    let id = c.u32("relation OID")?;
    let namespace = c.string("relation namespace")?;
    let name = c.string("relation name")?;
    let offset = c.offset();
    let replica_identity = match c.u8("replica identity")? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        value => return Err(DecodeError::UnknownReplicaIdentity { value, offset }),
    };
    let count = c.count_i16("relation column count")?;
    // A column takes at least 10 bytes (flags, empty name, type OID, typmod).
    let mut columns = Vec::with_capacity(count.min(c.remaining() / 10));
    for _ in 0..count {
        columns.push(RelationColumn {
            flags: c.u8("column flags")?,
            name: c.string("column name")?,
            type_oid: c.u32("column type OID")?,
            type_modifier: c.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        xid,
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(c: &mut Cursor<'_>) -> Result<Tuple, DecodeError> {
    let count = c.count_i16("tuple column count")?;
    // A column takes at least one byte.
    let mut columns = Vec::with_capacity(count.min(c.remaining()));
    for _ in 0..count {
        let offset = c.offset();
        let column = match c.u8("tuple column kind")? {
            b'n' => ColumnValue::Null,
            b'u' => ColumnValue::UnchangedToast,
            b't' => ColumnValue::Text(c.length_prefixed("text column value")?.to_vec()),
            b'b' => ColumnValue::Binary(c.length_prefixed("binary column value")?.to_vec()),
            kind => return Err(DecodeError::UnknownColumnKind { kind, offset }),
        };
        columns.push(column);
    }
    Ok(Tuple(columns))
}

/// Decodes pgoutput messages in order, tracking whether they are inside a stream (between
/// Stream Start and Stream Stop) so the xid prefix of streamed changes is read.
#[derive(Debug, Clone)]
pub struct PgoutputDecoder {
    version: ProtocolVersion,
    open_stream: Option<Xid>,
}

impl PgoutputDecoder {
    /// A decoder for a replication stream started with `proto_version` = `version`.
    pub fn new(version: ProtocolVersion) -> Self {
        PgoutputDecoder {
            version,
            open_stream: None,
        }
    }

    /// The protocol version given at construction.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The xid of the streamed transaction whose block of changes is open, if any.
    pub fn open_stream(&self) -> Option<Xid> {
        self.open_stream
    }

    /// Decodes the next message. A Stream Start inside an open stream, or a Stream Stop outside
    /// one, is an error and leaves the state as it was.
    pub fn decode(&mut self, buf: &[u8]) -> Result<PgoutputMessage, DecodeError> {
        let message = decode(buf, self.version, self.open_stream.is_some())?;
        match (&message, self.open_stream) {
            (PgoutputMessage::StreamStart(start), Some(open_xid)) => {
                return Err(DecodeError::NestedStreamStart {
                    xid: start.xid,
                    open_xid,
                });
            }
            (PgoutputMessage::StreamStart(start), None) => self.open_stream = Some(start.xid),
            (PgoutputMessage::StreamStop, None) => {
                return Err(DecodeError::StreamStopOutsideStream);
            }
            (PgoutputMessage::StreamStop, Some(_)) => self.open_stream = None,
            _ => {}
        }
        Ok(message)
    }
}

/// A message the server sends inside CopyData on a replication connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage<'a> {
    /// `w`: WAL data; for logical replication, one pgoutput message.
    XLogData(XLogData<'a>),
    /// `k`: a keepalive, possibly asking for a [`StandbyStatusUpdate`] at once.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// XLogData (`w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData<'a> {
    /// The WAL position where this data starts.
    pub wal_start: Lsn,
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: PgTimestamp,
    /// The payload: a pgoutput message for [`decode`] / [`PgoutputDecoder::decode`].
    pub data: &'a [u8],
}

/// Primary keepalive (`k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: PgTimestamp,
    /// The server asks for a reply as soon as possible, to avoid a timeout disconnect.
    pub reply_requested: bool,
}

/// Decodes the content of one CopyData message received on a replication connection.
pub fn decode_replication_message(buf: &[u8]) -> Result<ReplicationMessage<'_>, DecodeError> {
    let mut c = Cursor::new(buf);
    let message = match c.u8("replication message tag")? {
        b'w' => {
            let wal_start = c.lsn("WAL start")?;
            let wal_end = c.lsn("WAL end")?;
            let send_time = c.timestamp("send time")?;
            let data = c.rest();
            ReplicationMessage::XLogData(XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            })
        }
        b'k' => ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
            wal_end: c.lsn("WAL end")?,
            send_time: c.timestamp("send time")?,
            reply_requested: c.u8("reply requested flag")? != 0,
        }),
        tag => return Err(DecodeError::UnknownReplicationTag { tag, offset: 0 }),
    };
    c.finish()?;
    Ok(message)
}

/// Standby status update (`r`): the client reports how far it has written, flushed and applied
/// the stream. The server may recycle WAL up to `flush_lsn`, so report there only what is durable
/// downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// The last WAL byte + 1 received and written.
    pub write_lsn: Lsn,
    /// The last WAL byte + 1 made durable: what the slot may be advanced to.
    pub flush_lsn: Lsn,
    /// The last WAL byte + 1 applied.
    pub apply_lsn: Lsn,
    /// The client's clock when sending.
    pub client_time: PgTimestamp,
    /// Asks the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// The size of the encoded message.
    pub const ENCODED_LEN: usize = 34;

    /// The bytes to send as the content of a CopyData message.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let fields = [
            self.write_lsn.0.to_be_bytes(),
            self.flush_lsn.0.to_be_bytes(),
            self.apply_lsn.0.to_be_bytes(),
            self.client_time.0.to_be_bytes(),
        ];
        out[0] = b'r';
        for (chunk, field) in out[1..33].chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field);
        }
        out[33] = u8::from(self.reply_requested);
        out
    }

    /// Decodes an encoded update (what a server, or a test double of one, receives).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        match c.u8("status update tag")? {
            b'r' => {}
            tag => return Err(DecodeError::UnknownReplicationTag { tag, offset: 0 }),
        }
        let update = StandbyStatusUpdate {
            write_lsn: c.lsn("write LSN")?,
            flush_lsn: c.lsn("flush LSN")?,
            apply_lsn: c.lsn("apply LSN")?,
            client_time: c.timestamp("client time")?,
            reply_requested: c.u8("reply requested flag")? != 0,
        };
        c.finish()?;
        Ok(update)
    }
}

/// Reads big-endian fields from a byte slice; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn offset(&self) -> usize {
        self.pos
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..len))
            .ok_or(DecodeError::Truncated {
                field,
                offset: self.pos,
                needed: len,
                available: self.remaining(),
            })?;
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let truncated = DecodeError::Truncated {
            field,
            offset: self.pos,
            needed: N,
            available: self.remaining(),
        };
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
            .ok_or(truncated)?;
        self.pos += N;
        Ok(*bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field).map(u64::from_be_bytes).map(Lsn)
    }

    fn timestamp(&mut self, field: &'static str) -> Result<PgTimestamp, DecodeError> {
        self.array(field).map(i64::from_be_bytes).map(PgTimestamp)
    }

    /// The xid that prefixes data messages inside a stream.
    fn stream_xid(&mut self, streamed: bool) -> Result<Option<Xid>, DecodeError> {
        if streamed {
            self.u32("streamed transaction xid").map(Some)
        } else {
            Ok(None)
        }
    }

    fn count_i16(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i16(field)?;
        usize::try_from(value).map_err(|_| DecodeError::NegativeLength {
            field,
            offset,
            value: value.into(),
        })
    }

    fn count_i32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| DecodeError::NegativeLength {
            field,
            offset,
            value,
        })
    }

    /// An Int32 length followed by that many bytes.
    fn length_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.count_i32(field)?;
        self.take(len, field)
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                field,
                offset: start,
            })?;
        let bytes = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
            field,
            offset: start + e.valid_up_to(),
        })?;
        self.pos = start + len + 1;
        Ok(text.to_owned())
    }

    fn marker(&mut self, expected_byte: u8, expected: &'static str) -> Result<(), DecodeError> {
        let offset = self.pos;
        match self.u8("tuple marker")? {
            found if found == expected_byte => Ok(()),
            found => Err(DecodeError::UnexpectedTupleMarker {
                expected,
                found,
                offset,
            }),
        }
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes {
                offset: self.pos,
                remaining,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_VERSIONS: [ProtocolVersion; 4] = [
        ProtocolVersion::V1,
        ProtocolVersion::V2,
        ProtocolVersion::V3,
        ProtocolVersion::V4,
    ];

    /// Builds messages field by field, as the server writes them.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn tag(t: u8) -> Self {
            W(vec![t])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        /// TupleData from column values.
        fn tuple(self, columns: &[ColumnValue]) -> Self {
            let mut w = self.i16(i16::try_from(columns.len()).unwrap());
            for column in columns {
                w = match column {
                    ColumnValue::Null => w.u8(b'n'),
                    ColumnValue::UnchangedToast => w.u8(b'u'),
                    ColumnValue::Text(b) => w.u8(b't').i32(b.len() as i32).raw(b),
                    ColumnValue::Binary(b) => w.u8(b'b').i32(b.len() as i32).raw(b),
                };
            }
            w
        }
        fn xid_if(self, xid: Option<u32>) -> Self {
            match xid {
                Some(x) => self.u32(x),
                None => self,
            }
        }
        fn done(self) -> Vec<u8> {
            self.0
        }
    }

    fn text(s: &str) -> ColumnValue {
        ColumnValue::Text(s.as_bytes().to_vec())
    }

    /// Every strict prefix of a valid message is an error, never a panic; the whole decodes.
    fn assert_prefixes_fail(buf: &[u8], version: ProtocolVersion, in_stream: bool) {
        decode(buf, version, in_stream).expect("the whole message decodes");
        for len in 0..buf.len() {
            let prefix = buf.get(..len).unwrap();
            assert!(
                decode(prefix, version, in_stream).is_err(),
                "prefix of {len} bytes of {buf:?} decoded"
            );
        }
        let mut longer = buf.to_vec();
        longer.push(0);
        assert!(matches!(
            decode(&longer, version, in_stream),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    fn check(buf: Vec<u8>, version: ProtocolVersion, in_stream: bool, expected: PgoutputMessage) {
        assert_eq!(decode(&buf, version, in_stream).unwrap(), expected);
        assert_prefixes_fail(&buf, version, in_stream);
    }

    #[test]
    fn begin() {
        let buf = W::tag(b'B')
            .u64(0x16_B374_D848)
            .i64(817_000_000_123)
            .u32(742)
            .done();
        let expected = PgoutputMessage::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time: PgTimestamp(817_000_000_123),
            xid: 742,
        });
        for version in ALL_VERSIONS {
            check(buf.clone(), version, false, expected.clone());
        }
    }

    #[test]
    fn commit() {
        let buf = W::tag(b'C').u8(0).u64(100).u64(108).i64(5).done();
        check(
            buf,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(100),
                end_lsn: Lsn(108),
                commit_time: PgTimestamp(5),
            }),
        );
    }

    #[test]
    fn logical_message_transactional_and_not() {
        for (flags, transactional) in [(0u8, false), (1, true)] {
            let buf = W::tag(b'M')
                .u8(flags)
                .u64(77)
                .str("strata.marker")
                .i32(3)
                .raw(&[1, 0, 2])
                .done();
            let message = decode(&buf, ProtocolVersion::V1, false).unwrap();
            let PgoutputMessage::Message(m) = &message else {
                panic!("not a message: {message:?}")
            };
            assert_eq!(m.transactional(), transactional);
            assert_eq!(m.prefix, "strata.marker");
            assert_eq!(m.content, vec![1, 0, 2]);
            assert_eq!(m.xid, None);
            assert_eq!(m.lsn, Lsn(77));
            assert_prefixes_fail(&buf, ProtocolVersion::V1, false);
        }
    }

    #[test]
    fn logical_message_in_stream_has_xid() {
        let buf = W::tag(b'M').u32(900).u8(1).u64(77).str("p").i32(0).done();
        check(
            buf,
            ProtocolVersion::V2,
            true,
            PgoutputMessage::Message(LogicalMessage {
                xid: Some(900),
                flags: 1,
                lsn: Lsn(77),
                prefix: "p".into(),
                content: vec![],
            }),
        );
    }

    #[test]
    fn origin() {
        let buf = W::tag(b'O').u64(55).str("node_a").done();
        check(
            buf,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Origin(Origin {
                commit_lsn: Lsn(55),
                name: "node_a".into(),
            }),
        );
    }

    fn relation_bytes(xid: Option<u32>) -> Vec<u8> {
        W::tag(b'R')
            .xid_if(xid)
            .u32(16_384)
            .str("public")
            .str("orders")
            .u8(b'd')
            .i16(3)
            .u8(1)
            .str("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .str("note")
            .u32(25)
            .i32(-1)
            .u8(0)
            .str("price")
            .u32(1700)
            .i32(655_366)
            .done()
    }

    fn relation_message(xid: Option<u32>) -> PgoutputMessage {
        let column = |flags, name: &str, type_oid, type_modifier| RelationColumn {
            flags,
            name: name.into(),
            type_oid,
            type_modifier,
        };
        PgoutputMessage::Relation(Relation {
            xid,
            id: 16_384,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                column(1, "id", 23, -1),
                column(0, "note", 25, -1),
                column(0, "price", 1700, 655_366),
            ],
        })
    }

    #[test]
    fn relation() {
        check(
            relation_bytes(None),
            ProtocolVersion::V1,
            false,
            relation_message(None),
        );
        let PgoutputMessage::Relation(r) = relation_message(None) else {
            unreachable!()
        };
        assert!(r.columns[0].is_key());
        assert!(!r.columns[1].is_key());
    }

    #[test]
    fn relation_in_stream_has_xid() {
        check(
            relation_bytes(Some(31)),
            ProtocolVersion::V2,
            true,
            relation_message(Some(31)),
        );
        // Version 1 has no streaming: in_stream is ignored.
        check(
            relation_bytes(None),
            ProtocolVersion::V1,
            true,
            relation_message(None),
        );
    }

    #[test]
    fn relation_replica_identities() {
        for (byte, identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            let buf = W::tag(b'R').u32(1).str("").str("t").u8(byte).i16(0).done();
            let Ok(PgoutputMessage::Relation(r)) = decode(&buf, ProtocolVersion::V1, false) else {
                panic!("{byte}")
            };
            assert_eq!(r.replica_identity, identity);
        }
        let buf = W::tag(b'R').u32(1).str("").str("t").u8(b'x').i16(0).done();
        assert_eq!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::UnknownReplicaIdentity {
                value: b'x',
                offset: 8
            })
        );
    }

    #[test]
    fn relation_invalid_utf8_name() {
        let buf = W::tag(b'R')
            .u32(1)
            .str("public")
            .raw(&[b'o', 0xff, 0])
            .u8(b'd')
            .i16(0)
            .done();
        assert_eq!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::InvalidUtf8 {
                field: "relation name",
                offset: 13
            })
        );
    }

    #[test]
    fn relation_negative_column_count() {
        let buf = W::tag(b'R').u32(1).str("").str("t").u8(b'd').i16(-1).done();
        assert!(matches!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::NegativeLength { value: -1, .. })
        ));
    }

    #[test]
    fn type_message() {
        let buf = W::tag(b'Y').u32(70_000).str("public").str("mood").done();
        check(
            buf,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Type(Type {
                xid: None,
                id: 70_000,
                namespace: "public".into(),
                name: "mood".into(),
            }),
        );
        let buf = W::tag(b'Y').u32(8).u32(70_000).str("").str("mood").done();
        let Ok(PgoutputMessage::Type(t)) = decode(&buf, ProtocolVersion::V3, true) else {
            panic!()
        };
        assert_eq!(t.xid, Some(8));
    }

    #[test]
    fn insert_with_every_column_kind() {
        let columns = [
            text("42"),
            ColumnValue::Null,
            ColumnValue::UnchangedToast,
            ColumnValue::Binary(vec![0, 0, 0, 7]),
            text(""),
        ];
        let buf = W::tag(b'I').u32(16_384).u8(b'N').tuple(&columns).done();
        check(
            buf,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Insert(Insert {
                xid: None,
                relation_id: 16_384,
                new: Tuple(columns.to_vec()),
            }),
        );
    }

    #[test]
    fn unchanged_toast_is_not_null() {
        let buf = W::tag(b'U')
            .u32(1)
            .u8(b'N')
            .tuple(&[ColumnValue::UnchangedToast, ColumnValue::Null])
            .done();
        let Ok(PgoutputMessage::Update(u)) = decode(&buf, ProtocolVersion::V1, false) else {
            panic!()
        };
        assert_eq!(u.new.0[0], ColumnValue::UnchangedToast);
        assert_eq!(u.new.0[1], ColumnValue::Null);
        assert_ne!(u.new.0[0], u.new.0[1]);
    }

    #[test]
    fn insert_requires_new_marker() {
        let buf = W::tag(b'I').u32(1).u8(b'K').tuple(&[]).done();
        assert_eq!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::UnexpectedTupleMarker {
                expected: "'N' (new tuple)",
                found: b'K',
                offset: 5
            })
        );
    }

    #[test]
    fn unknown_column_kind() {
        let buf = W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'x').done();
        assert_eq!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::UnknownColumnKind {
                kind: b'x',
                offset: 8
            })
        );
    }

    #[test]
    fn negative_value_length() {
        let buf = W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-5).done();
        assert!(matches!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::NegativeLength {
                value: -5,
                offset: 9,
                ..
            })
        ));
    }

    #[test]
    fn huge_value_length_is_truncation_not_allocation() {
        let buf = W::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(i32::MAX)
            .done();
        assert!(matches!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::Truncated {
                needed: 2_147_483_647,
                available: 0,
                ..
            })
        ));
    }

    #[test]
    fn update_forms() {
        let new = [text("1"), text("b")];
        let old = [text("1"), text("a")];
        let key = [text("0"), ColumnValue::Null];
        let plain = W::tag(b'U').u32(9).u8(b'N').tuple(&new).done();
        check(
            plain,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Update(Update {
                xid: None,
                relation_id: 9,
                old: None,
                new: Tuple(new.to_vec()),
            }),
        );
        let with_key = W::tag(b'U')
            .u32(9)
            .u8(b'K')
            .tuple(&key)
            .u8(b'N')
            .tuple(&new)
            .done();
        check(
            with_key,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Update(Update {
                xid: None,
                relation_id: 9,
                old: Some(OldTuple::Key(Tuple(key.to_vec()))),
                new: Tuple(new.to_vec()),
            }),
        );
        let with_old = W::tag(b'U')
            .u32(9)
            .u8(b'O')
            .tuple(&old)
            .u8(b'N')
            .tuple(&new)
            .done();
        check(
            with_old,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Update(Update {
                xid: None,
                relation_id: 9,
                old: Some(OldTuple::Full(Tuple(old.to_vec()))),
                new: Tuple(new.to_vec()),
            }),
        );
        let streamed = W::tag(b'U')
            .u32(4242)
            .u32(9)
            .u8(b'O')
            .tuple(&old)
            .u8(b'N')
            .tuple(&new)
            .done();
        check(
            streamed,
            ProtocolVersion::V4,
            true,
            PgoutputMessage::Update(Update {
                xid: Some(4242),
                relation_id: 9,
                old: Some(OldTuple::Full(Tuple(old.to_vec()))),
                new: Tuple(new.to_vec()),
            }),
        );
        let bad = W::tag(b'U').u32(9).u8(b'Z').tuple(&new).done();
        assert!(matches!(
            decode(&bad, ProtocolVersion::V1, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'Z', .. })
        ));
        let old_then_old = W::tag(b'U')
            .u32(9)
            .u8(b'K')
            .tuple(&key)
            .u8(b'O')
            .tuple(&old)
            .done();
        assert!(matches!(
            decode(&old_then_old, ProtocolVersion::V1, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'O', .. })
        ));
    }

    #[test]
    fn delete_forms() {
        let key = [text("7")];
        for (marker, old) in [
            (b'K', OldTuple::Key(Tuple(key.to_vec()))),
            (b'O', OldTuple::Full(Tuple(key.to_vec()))),
        ] {
            let buf = W::tag(b'D').u32(3).u8(marker).tuple(&key).done();
            check(
                buf,
                ProtocolVersion::V1,
                false,
                PgoutputMessage::Delete(Delete {
                    xid: None,
                    relation_id: 3,
                    old: old.clone(),
                }),
            );
            let streamed = W::tag(b'D').u32(12).u32(3).u8(marker).tuple(&key).done();
            check(
                streamed,
                ProtocolVersion::V2,
                true,
                PgoutputMessage::Delete(Delete {
                    xid: Some(12),
                    relation_id: 3,
                    old,
                }),
            );
        }
        let no_old = W::tag(b'D').u32(3).u8(b'N').tuple(&key).done();
        assert!(matches!(
            decode(&no_old, ProtocolVersion::V1, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'N', .. })
        ));
    }

    #[test]
    fn truncate() {
        let buf = W::tag(b'T').i32(2).u8(3).u32(16_384).u32(16_390).done();
        let expected = Truncate {
            xid: None,
            option_bits: 3,
            relation_ids: vec![16_384, 16_390],
        };
        assert_eq!(
            expected.options(),
            TruncateOptions {
                cascade: true,
                restart_identity: true
            }
        );
        check(
            buf,
            ProtocolVersion::V1,
            false,
            PgoutputMessage::Truncate(expected),
        );
        let streamed = W::tag(b'T').u32(5).i32(1).u8(2).u32(16_384).done();
        let Ok(PgoutputMessage::Truncate(t)) = decode(&streamed, ProtocolVersion::V2, true) else {
            panic!()
        };
        assert_eq!(t.xid, Some(5));
        assert_eq!(
            t.options(),
            TruncateOptions {
                cascade: false,
                restart_identity: true
            }
        );
        let huge = W::tag(b'T').i32(i32::MAX).u8(0).u32(1).done();
        assert!(matches!(
            decode(&huge, ProtocolVersion::V1, false),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn stream_messages() {
        check(
            W::tag(b'S').u32(900).u8(1).done(),
            ProtocolVersion::V2,
            false,
            PgoutputMessage::StreamStart(StreamStart {
                xid: 900,
                first_segment: true,
            }),
        );
        check(
            W::tag(b'E').done(),
            ProtocolVersion::V2,
            true,
            PgoutputMessage::StreamStop,
        );
        check(
            W::tag(b'c').u32(900).u8(0).u64(10).u64(20).i64(30).done(),
            ProtocolVersion::V2,
            false,
            PgoutputMessage::StreamCommit(StreamCommit {
                xid: 900,
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                commit_time: PgTimestamp(30),
            }),
        );
        let abort = W::tag(b'A').u32(900).u32(901).done();
        let expected = PgoutputMessage::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: None,
            abort_time: None,
        });
        for version in [
            ProtocolVersion::V2,
            ProtocolVersion::V3,
            ProtocolVersion::V4,
        ] {
            assert_eq!(decode(&abort, version, false).unwrap(), expected);
        }
        // Version 4 with parallel streaming: abort LSN and time follow.
        let parallel = W::tag(b'A').u32(900).u32(901).u64(40).i64(50).done();
        assert_eq!(
            decode(&parallel, ProtocolVersion::V4, false).unwrap(),
            PgoutputMessage::StreamAbort(StreamAbort {
                xid: 900,
                subxid: 901,
                abort_lsn: Some(Lsn(40)),
                abort_time: Some(PgTimestamp(50)),
            })
        );
        assert!(matches!(
            decode(&parallel, ProtocolVersion::V3, false),
            Err(DecodeError::TrailingBytes {
                offset: 9,
                remaining: 16
            })
        ));
        // A half-present v4 tail is truncation.
        let half = W::tag(b'A').u32(900).u32(901).u64(40).done();
        assert!(matches!(
            decode(&half, ProtocolVersion::V4, false),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn stream_messages_need_version_2() {
        for buf in [
            W::tag(b'S').u32(1).u8(0).done(),
            W::tag(b'E').done(),
            W::tag(b'c').u32(1).u8(0).u64(1).u64(2).i64(3).done(),
            W::tag(b'A').u32(1).u32(1).done(),
        ] {
            assert!(matches!(
                decode(&buf, ProtocolVersion::V1, false),
                Err(DecodeError::NeedsNewerProtocol {
                    required: 2,
                    version: 1,
                    ..
                })
            ));
        }
    }

    #[test]
    fn two_phase_messages() {
        let v3 = ProtocolVersion::V3;
        check(
            W::tag(b'b').u64(1).u64(2).i64(3).u32(4).str("gid-1").done(),
            v3,
            false,
            PgoutputMessage::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn(1),
                end_lsn: Lsn(2),
                prepare_time: PgTimestamp(3),
                xid: 4,
                gid: "gid-1".into(),
            }),
        );
        let prepare = Prepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_time: PgTimestamp(3),
            xid: 4,
            gid: "gid-1".into(),
        };
        let prepare_bytes = |tag| {
            W::tag(tag)
                .u8(0)
                .u64(1)
                .u64(2)
                .i64(3)
                .u32(4)
                .str("gid-1")
                .done()
        };
        check(
            prepare_bytes(b'P'),
            v3,
            false,
            PgoutputMessage::Prepare(prepare.clone()),
        );
        check(
            prepare_bytes(b'p'),
            v3,
            false,
            PgoutputMessage::StreamPrepare(prepare),
        );
        check(
            W::tag(b'K')
                .u8(0)
                .u64(5)
                .u64(6)
                .i64(7)
                .u32(4)
                .str("gid-1")
                .done(),
            v3,
            false,
            PgoutputMessage::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: Lsn(5),
                end_lsn: Lsn(6),
                commit_time: PgTimestamp(7),
                xid: 4,
                gid: "gid-1".into(),
            }),
        );
        check(
            W::tag(b'r')
                .u8(0)
                .u64(2)
                .u64(9)
                .i64(3)
                .i64(10)
                .u32(4)
                .str("gid-1")
                .done(),
            v3,
            false,
            PgoutputMessage::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: Lsn(2),
                rollback_end_lsn: Lsn(9),
                prepare_time: PgTimestamp(3),
                rollback_time: PgTimestamp(10),
                xid: 4,
                gid: "gid-1".into(),
            }),
        );
        assert!(matches!(
            decode(&prepare_bytes(b'P'), ProtocolVersion::V2, false),
            Err(DecodeError::NeedsNewerProtocol { required: 3, .. })
        ));
    }

    #[test]
    fn unknown_tag_and_empty_input() {
        assert_eq!(
            decode(b"Z", ProtocolVersion::V4, false),
            Err(DecodeError::UnknownMessageTag {
                tag: b'Z',
                offset: 0
            })
        );
        assert!(matches!(
            decode(&[], ProtocolVersion::V1, false),
            Err(DecodeError::Truncated {
                field: "message tag",
                ..
            })
        ));
    }

    #[test]
    fn unterminated_string() {
        let buf = W::tag(b'O').u64(1).raw(b"abc").done();
        assert_eq!(
            decode(&buf, ProtocolVersion::V1, false),
            Err(DecodeError::UnterminatedString {
                field: "origin name",
                offset: 9
            })
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = decode(&[0x01], ProtocolVersion::V1, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown pgoutput message tag 0x01 at byte 0"
        );
        let err = decode(b"B\0", ProtocolVersion::V1, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated message: final LSN at byte 1 needs 8 byte(s), 1 left"
        );
    }

    #[test]
    fn stateful_decoder_tracks_streams() {
        let mut decoder = PgoutputDecoder::new(ProtocolVersion::V2);
        let insert_plain = W::tag(b'I').u32(7).u8(b'N').tuple(&[text("1")]).done();
        let insert_streamed = W::tag(b'I')
            .u32(900)
            .u32(7)
            .u8(b'N')
            .tuple(&[text("1")])
            .done();

        assert!(matches!(
            decoder.decode(&insert_plain),
            Ok(PgoutputMessage::Insert(Insert { xid: None, .. }))
        ));
        decoder.decode(&W::tag(b'S').u32(900).u8(1).done()).unwrap();
        assert_eq!(decoder.open_stream(), Some(900));
        assert!(matches!(
            decoder.decode(&insert_streamed),
            Ok(PgoutputMessage::Insert(Insert {
                xid: Some(900),
                relation_id: 7,
                ..
            }))
        ));
        assert_eq!(
            decoder.decode(&W::tag(b'S').u32(901).u8(1).done()),
            Err(DecodeError::NestedStreamStart {
                xid: 901,
                open_xid: 900
            })
        );
        decoder.decode(&W::tag(b'E').done()).unwrap();
        assert_eq!(decoder.open_stream(), None);
        assert_eq!(
            decoder.decode(&W::tag(b'E').done()),
            Err(DecodeError::StreamStopOutsideStream)
        );
        decoder
            .decode(&W::tag(b'c').u32(900).u8(0).u64(1).u64(2).i64(3).done())
            .unwrap();
        assert!(matches!(
            decoder.decode(&insert_plain),
            Ok(PgoutputMessage::Insert(Insert { xid: None, .. }))
        ));
    }

    #[test]
    fn protocol_version_from_number() {
        for version in ALL_VERSIONS {
            assert_eq!(ProtocolVersion::try_from(version.number()), Ok(version));
        }
        assert_eq!(
            ProtocolVersion::try_from(5),
            Err(DecodeError::UnsupportedProtocolVersion { version: 5 })
        );
    }

    #[test]
    fn xlogdata_wrapper() {
        let payload = W::tag(b'B').u64(1).i64(2).u32(3).done();
        let buf = W::tag(b'w')
            .u64(0x1_0000_0000)
            .u64(0x1_0000_0100)
            .i64(99)
            .raw(&payload)
            .done();
        let message = decode_replication_message(&buf).unwrap();
        let ReplicationMessage::XLogData(x) = message else {
            panic!("not XLogData")
        };
        assert_eq!(x.wal_start, Lsn(0x1_0000_0000));
        assert_eq!(x.wal_end, Lsn(0x1_0000_0100));
        assert_eq!(x.send_time, PgTimestamp(99));
        assert_eq!(x.data, payload.as_slice());
        assert!(matches!(
            decode(x.data, ProtocolVersion::V1, false),
            Ok(PgoutputMessage::Begin(_))
        ));
        // An empty payload is still a complete XLogData; anything shorter than the header is not.
        let header = W::tag(b'w').u64(1).u64(2).i64(3).done();
        assert!(decode_replication_message(&header).is_ok());
        for len in 0..header.len() {
            assert!(decode_replication_message(&header[..len]).is_err());
        }
    }

    #[test]
    fn keepalive_wrapper() {
        for (flag, reply_requested) in [(0u8, false), (1, true)] {
            let buf = W::tag(b'k').u64(0xAB_0000_0001).i64(-5).u8(flag).done();
            assert_eq!(
                decode_replication_message(&buf).unwrap(),
                ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn(0xAB_0000_0001),
                    send_time: PgTimestamp(-5),
                    reply_requested,
                })
            );
            for len in 0..buf.len() {
                assert!(decode_replication_message(&buf[..len]).is_err());
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(matches!(
                decode_replication_message(&longer),
                Err(DecodeError::TrailingBytes { .. })
            ));
        }
        assert_eq!(
            decode_replication_message(b"x"),
            Err(DecodeError::UnknownReplicationTag {
                tag: b'x',
                offset: 0
            })
        );
    }

    #[test]
    fn standby_status_update_encoding() {
        let update = StandbyStatusUpdate {
            write_lsn: Lsn(0x0102_0304_0506_0708),
            flush_lsn: Lsn(2),
            apply_lsn: Lsn(3),
            client_time: PgTimestamp(-1),
            reply_requested: true,
        };
        let bytes = update.encode();
        let expected = W::tag(b'r')
            .u64(0x0102_0304_0506_0708)
            .u64(2)
            .u64(3)
            .i64(-1)
            .u8(1)
            .done();
        assert_eq!(bytes.as_slice(), expected.as_slice());
        assert_eq!(StandbyStatusUpdate::decode(&bytes), Ok(update));
        for len in 0..bytes.len() {
            assert!(StandbyStatusUpdate::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn lsn_display_and_parse() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!("16/B374D848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("16/b374d848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("0/0".parse(), Ok(Lsn::INVALID));
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "16B374D848",
            "1/2/3",
            "+1/2",
            "1/-2",
            "123456789/0",
            "g/0",
            " 1/2",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn timestamps_convert_between_epochs() {
        assert_eq!(PgTimestamp(0).to_unix_micros(), 946_684_800_000_000);
        assert_eq!(
            PgTimestamp::from_unix_micros(946_684_800_000_000),
            PgTimestamp(0)
        );
        assert_eq!(PgTimestamp(i64::MAX).to_unix_micros(), i64::MAX);
        assert_eq!(
            PgTimestamp::from_unix_micros(i64::MIN),
            PgTimestamp(i64::MIN)
        );
        // 2026-11-25 10:00:00 UTC
        let unix = 1_795_600_800_000_000;
        assert_eq!(PgTimestamp::from_unix_micros(unix).to_unix_micros(), unix);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                               version in 1u32..=4, in_stream: bool) {
            let version = ProtocolVersion::try_from(version).unwrap();
            let _ = decode(&bytes, version, in_stream);
            let _ = decode_replication_message(&bytes);
            let _ = StandbyStatusUpdate::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_after_a_valid_tag(
            tag in proptest::sample::select(b"BMCORYIUDTSEcAbPKrp".to_vec()),
            rest in proptest::collection::vec(any::<u8>(), 0..128),
            version in 1u32..=4, in_stream: bool,
        ) {
            let version = ProtocolVersion::try_from(version).unwrap();
            let mut bytes = vec![tag];
            bytes.extend(rest);
            let _ = decode(&bytes, version, in_stream);
        }

        #[test]
        fn lsn_round_trips(value: u64) {
            prop_assert_eq!(Lsn(value).to_string().parse::<Lsn>(), Ok(Lsn(value)));
        }

        #[test]
        fn standby_status_update_round_trips(w: u64, f: u64, a: u64, t: i64, r: bool) {
            let update = StandbyStatusUpdate {
                write_lsn: Lsn(w), flush_lsn: Lsn(f), apply_lsn: Lsn(a),
                client_time: PgTimestamp(t), reply_requested: r,
            };
            prop_assert_eq!(StandbyStatusUpdate::decode(&update.encode()), Ok(update));
        }

        #[test]
        fn tuples_round_trip(columns in proptest::collection::vec(prop_oneof![
            Just(ColumnValue::Null),
            Just(ColumnValue::UnchangedToast),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(ColumnValue::Text),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(ColumnValue::Binary),
        ], 0..20)) {
            let buf = W::tag(b'I').u32(1).u8(b'N').tuple(&columns).done();
            let decoded = decode(&buf, ProtocolVersion::V1, false);
            prop_assert_eq!(decoded, Ok(PgoutputMessage::Insert(Insert {
                xid: None, relation_id: 1, new: Tuple(columns),
            })));
        }
    }
}
