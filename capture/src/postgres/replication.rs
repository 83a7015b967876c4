//! PostgreSQL streaming-replication transport: the wire protocol of a `replication=database`
//! connection, spoken directly over TCP because `tokio-postgres` has no replication API.
//!
//! This module moves bytes only. It logs in, runs replication commands (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`, `START_REPLICATION`, ...), and then hands out the payload of every
//! CopyData message of the replication stream untouched; decoding those payloads (XLogData `w`,
//! primary keepalive `k`, and the pgoutput messages inside XLogData) and building the standby
//! status update `r` are [`super::pgoutput`]'s job.
//!
//! ```text
//!  connect ── StartupMessage (replication=database) ──► auth (trust / password / MD5 / SCRAM)
//!          ◄── ParameterStatus*, BackendKeyData, ReadyForQuery
//!  identify_system / create_logical_slot / simple_query / drop_slot   (simple query protocol)
//!  start_logical ── START_REPLICATION SLOT "s" LOGICAL X/X (...) ──► CopyBothResponse
//!          ReplicationStream::next  ◄── CopyData('w' XLogData | 'k' keepalive) ...
//!          ReplicationStream::send  ── CopyData('r' standby status update) ──►
//!          ReplicationStream::finish ── CopyDone ──► ... ◄── CopyDone, CommandComplete, ReadyForQuery
//! ```
//!
//! # Session settings
//!
//! pgoutput sends column values as their types' text output, which depends on the walsender
//! session's settings. So that [`super::value`] reads them the same way whatever the server,
//! database or role defaults are, every connection sets `client_encoding=UTF8`, `DateStyle=ISO`,
//! `IntervalStyle=postgres`, `TimeZone=UTC`, `extra_float_digits=3` and `bytea_output=hex` in its
//! startup message (startup options take precedence over `ALTER ROLE/DATABASE ... SET`).
//!
//! # Exported snapshots
//!
//! [`ReplicationConnection::create_logical_slot`] with [`SlotSnapshot::Export`] returns a
//! snapshot name that shows the database exactly as of the slot's consistent point. The snapshot
//! stays valid only while this connection stays open *and runs no other command*: import it on
//! other (ordinary) connections with `BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION
//! SNAPSHOT '<name>'`, and only then call [`ReplicationConnection::start_logical`] on this same
//! connection (which ends the snapshot; transactions that already imported it keep it) or drop it.
//!
//! # Safety against the server
//!
//! Every byte from the server is bounds-checked: a malformed or oversized message (over 1 GiB,
//! PostgreSQL's own limit) is a [`ReplicationError::Protocol`], never a panic. After an I/O or
//! protocol error the connection is marked broken and later calls fail fast with
//! [`ReplicationError::Broken`]; after an ordinary server `ERROR` in a command it stays usable.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::{Host, SslMode};
use tracing::{debug, info, instrument, warn};

use super::pgoutput::Lsn;

/// Port used when the URL names none.
const DEFAULT_PORT: u16 = 5432;

/// Bound on TCP connect plus login when the URL has no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `application_name` when the URL sets none; shows in `pg_stat_replication`.
const DEFAULT_APPLICATION_NAME: &str = "strata";

/// Largest message length field accepted (it counts itself). PostgreSQL builds every message in a
/// `StringInfo`, which cannot exceed 1 GiB.
const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Bytes requested from the socket per read when no larger message is pending.
const READ_CHUNK: usize = 64 * 1024;

/// A read is not attempted into less spare capacity than this.
const MIN_READ_SPACE: usize = 8 * 1024;

/// The output plugin of every slot this module creates.
const OUTPUT_PLUGIN: &str = "pgoutput";

/// SQLSTATE `undefined_object`: what PostgreSQL returns for a missing replication slot.
const SQLSTATE_UNDEFINED_OBJECT: &str = "42704";

/// Settings sent in every startup message so pgoutput's text output is the same everywhere (see
/// the module documentation).
const SESSION_PARAMETERS: [(&str, &str); 6] = [
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// `Result` with [`ReplicationError`].
pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// Why a replication connection or command failed. Every variant names the server (`host:port`)
/// and what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection URL or a setting in it cannot be used.
    #[error("invalid PostgreSQL replication connection settings: {reason}")]
    InvalidConfig {
        /// What is wrong (never contains the password).
        reason: String,
    },
    /// A name or value given to a command cannot be sent (it contains a NUL byte).
    #[error("invalid argument for {command}: {reason}")]
    InvalidArgument {
        /// The replication command.
        command: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Reading from or writing to the socket failed.
    #[error("PostgreSQL {addr}: {during}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Connecting and logging in took longer than the connect timeout.
    #[error("PostgreSQL {addr}: {during}: timed out after {timeout:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The server closed the connection without an error message.
    #[error("PostgreSQL {addr}: {during}: the server closed the connection")]
    Closed {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
    },
    /// The server sent bytes that are not valid protocol at this point.
    #[error("PostgreSQL {addr}: {during}: protocol violation: {detail}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
        /// What was wrong with the server's bytes.
        detail: String,
    },
    /// Logging in failed on the client side: an unsupported method, no password, or a SCRAM
    /// exchange that did not verify. (A wrong password is a [`ReplicationError::Server`] with
    /// SQLSTATE `28P01`.)
    #[error("PostgreSQL {addr}: authenticating as user {user:?}: {reason}")]
    Authentication {
        /// `host:port`.
        addr: String,
        /// The user name sent in the startup message.
        user: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with an ErrorResponse.
    #[error("PostgreSQL {addr}: {during}: {error}")]
    Server {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
        /// The server's error fields.
        error: Box<ServerError>,
    },
    /// The replication slot named by `START_REPLICATION` or `DROP_REPLICATION_SLOT` does not
    /// exist (SQLSTATE `42704`).
    #[error("PostgreSQL {addr}: replication slot {slot:?} does not exist ({error})")]
    MissingSlot {
        /// `host:port`.
        addr: String,
        /// The slot name.
        slot: String,
        /// The server's error fields.
        error: Box<ServerError>,
    },
    /// An earlier I/O or protocol error left the connection unusable.
    #[error("PostgreSQL {addr}: {during}: the connection is unusable after an earlier error")]
    Broken {
        /// `host:port`.
        addr: String,
        /// What was being attempted.
        during: String,
    },
}

impl ReplicationError {
    /// Whether the error says the replication slot does not exist.
    pub fn is_missing_slot(&self) -> bool {
        matches!(self, ReplicationError::MissingSlot { .. })
    }

    /// The server's error fields, when the server reported the error.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ReplicationError::Server { error, .. }
            | ReplicationError::MissingSlot { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The SQLSTATE code, when the server reported the error (e.g. `28P01` for a wrong password).
    pub fn sqlstate(&self) -> Option<&str> {
        self.server_error().map(|error| error.code.as_str())
    }
}

/// The fields of a PostgreSQL ErrorResponse (or NoticeResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (or `WARNING`, `NOTICE`, ... for notices); never localized.
    pub severity: String,
    /// The SQLSTATE code, e.g. `42704`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The optional detail message.
    pub detail: Option<String>,
    /// The optional hint.
    pub hint: Option<String>,
}

impl ServerError {
    /// Whether the server ends the session after this error.
    fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " (detail: {detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Where and as whom to open a replication connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Host name or IP address of the server.
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Role to log in as; it needs the `REPLICATION` attribute.
    pub user: String,
    /// Password for cleartext, MD5 or SCRAM-SHA-256 authentication.
    pub password: Option<Vec<u8>>,
    /// Database whose changes are decoded (logical slots belong to one database).
    pub dbname: String,
    /// `application_name` of the session, shown in `pg_stat_replication`.
    pub application_name: String,
    /// Bound on TCP connect plus login.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ReplicationConfig {
    /// Parses a libpq connection URL (`postgres://user:pass@host:port/db?sslmode=disable`) or
    /// key/value string (`host=... user=...`). The database defaults to the user name, the port
    /// to 5432, `application_name` to `strata`, `connect_timeout` to 10 s.
    ///
    /// TLS is not supported yet: `sslmode=require` is refused, `prefer` (libpq's default)
    /// connects without TLS. Unix-domain sockets and multiple hosts are refused too.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| ReplicationError::InvalidConfig { reason };
        let parsed = tokio_postgres::Config::from_str(url)
            .map_err(|e| invalid(format!("cannot parse the connection URL: {e}")))?;
        match parsed.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => {}
            SslMode::Require => {
                return Err(invalid(
                    "sslmode=require: TLS is not supported yet by strata's replication \
                     connection; use sslmode=disable or sslmode=prefer"
                        .to_owned(),
                ));
            }
            mode => {
                return Err(invalid(format!(
                    "sslmode {mode:?}: TLS is not supported yet by strata's replication \
                     connection; use sslmode=disable or sslmode=prefer"
                )));
            }
        }
        let mut host = match parsed.get_hosts() {
            [] => return Err(invalid("the URL names no host".to_owned())),
            [Host::Tcp(host)] => host.clone(),
            #[cfg(unix)]
            [Host::Unix(path)] => {
                return Err(invalid(format!(
                    "host {}: Unix-domain sockets are not supported; use a TCP host",
                    path.display()
                )));
            }
            _ => return Err(invalid("multiple hosts are not supported".to_owned())),
        };
        match parsed.get_hostaddrs() {
            [] => {}
            [addr] => host = addr.to_string(),
            _ => {
                return Err(invalid(
                    "multiple hostaddr values are not supported".to_owned(),
                ));
            }
        }
        let port = match parsed.get_ports() {
            [] => DEFAULT_PORT,
            [port] => *port,
            _ => return Err(invalid("multiple ports are not supported".to_owned())),
        };
        let user = parsed
            .get_user()
            .ok_or_else(|| invalid("the URL names no user".to_owned()))?
            .to_owned();
        let dbname = parsed.get_dbname().unwrap_or(&user).to_owned();
        Ok(ReplicationConfig {
            host,
            port,
            password: parsed.get_password().map(<[u8]>::to_vec),
            dbname,
            application_name: parsed
                .get_application_name()
                .unwrap_or(DEFAULT_APPLICATION_NAME)
                .to_owned(),
            connect_timeout: parsed
                .get_connect_timeout()
                .copied()
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            user,
        })
    }

    /// `host:port` (IPv6 addresses in brackets), as errors and logs name the server.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How the server authenticated the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// No password asked (`trust`).
    Trust,
    /// Password sent in clear text (`password`).
    Cleartext,
    /// `md5` challenge.
    Md5,
    /// SCRAM-SHA-256 without channel binding; the server's signature was verified.
    ScramSha256,
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier (`pg_control_system().system_identifier`).
    pub system_id: u64,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database the connection is bound to.
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot it builds at the consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotSnapshot {
    /// Export it under a name other connections can import (see the module documentation).
    Export,
    /// Do not export it.
    NoExport,
    /// Use it for the current transaction of this connection (which must have run `BEGIN
    /// ISOLATION LEVEL REPEATABLE READ` first).
    Use,
}

impl SlotSnapshot {
    fn keyword(self) -> &'static str {
        match self {
            SlotSnapshot::Export => "export",
            SlotSnapshot::NoExport => "nothing",
            SlotSnapshot::Use => "use",
        }
    }

    fn legacy_keyword(self) -> &'static str {
        match self {
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            SlotSnapshot::NoExport => "NOEXPORT_SNAPSHOT",
            SlotSnapshot::Use => "USE_SNAPSHOT",
        }
    }
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// The LSN at which the slot became consistent: the stream starts with the first
    /// transaction that commits after it.
    pub consistent_point: Lsn,
    /// The exported snapshot's name, with [`SlotSnapshot::Export`].
    pub snapshot_name: Option<String>,
}

/// `"a","b"`: a `publication_names` option value for pgoutput, each name double-quoted so case
/// and special characters survive pgoutput's identifier-list parsing. [`start_logical`] adds the
/// single quotes.
///
/// [`start_logical`]: ReplicationConnection::start_logical
pub fn quote_publication_names(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| quote_ident(name))
        .collect::<Vec<_>>()
        .join(",")
}

/// An identifier in the replication command grammar: double quotes, `"` doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal in the replication command grammar: single quotes, `'` doubled. The
/// replication scanner has no `E'...'` strings and no backslash escapes, so backslashes are
/// taken literally (unlike `postgres_protocol::escape::escape_literal`, which would emit `E'..'`).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `CREATE_REPLICATION_SLOT`, with the PostgreSQL 15 option list or, for older servers, the
/// PostgreSQL 10 keywords.
fn create_slot_command(
    name: &str,
    snapshot: SlotSnapshot,
    temporary: bool,
    server_major: Option<u32>,
) -> String {
    let temporary = if temporary { " TEMPORARY" } else { "" };
    let name = quote_ident(name);
    if server_major.is_some_and(|major| major < 15) {
        let snapshot = snapshot.legacy_keyword();
        format!("CREATE_REPLICATION_SLOT {name}{temporary} LOGICAL {OUTPUT_PLUGIN} {snapshot}")
    } else {
        let snapshot = snapshot.keyword();
        format!(
            "CREATE_REPLICATION_SLOT {name}{temporary} LOGICAL {OUTPUT_PLUGIN} (SNAPSHOT '{snapshot}')"
        )
    }
}

/// `START_REPLICATION SLOT "slot" LOGICAL X/X ("name" 'value', ...)`.
fn start_replication_command(slot: &str, start: Lsn, options: &[(&str, &str)]) -> String {
    let mut command = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let options = options
            .iter()
            .map(|(name, value)| format!("{} {}", quote_ident(name), quote_literal(value)))
            .collect::<Vec<_>>()
            .join(", ");
        command.push_str(" (");
        command.push_str(&options);
        command.push(')');
    }
    command
}

/// The major version in a `server_version` parameter (`15.18 (Debian ...)`, `16beta1`, `9.6.3`).
fn server_major_version(server_version: &str) -> Option<u32> {
    let digits = server_version
        .find(|c: char| !c.is_ascii_digit())
        .map_or(server_version, |end| &server_version[..end]);
    digits.parse().ok()
}

/// Command text for error messages: at most 120 characters.
fn shorten(sql: &str) -> String {
    match sql.char_indices().nth(120) {
        Some((end, _)) => format!("{}...", &sql[..end]),
        None => sql.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// One backend message: its type byte and its body (the bytes after the length field), sharing
/// the read buffer's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    tag: u8,
    body: Bytes,
}

/// What went wrong below the level of a command; the caller adds the server and the command.
#[derive(Debug)]
enum WireError {
    Io(io::Error),
    Closed,
    Protocol(String),
    Server(ServerError),
}

impl From<io::Error> for WireError {
    fn from(error: io::Error) -> Self {
        WireError::Io(error)
    }
}

/// A message type byte for error messages: `'Z'`, or its value when not printable.
fn describe_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// Bytes still missing from `buf` before [`split_frame`] can return the next message.
fn missing_bytes(buf: &[u8]) -> usize {
    match buf.get(1..5) {
        Some(&[a, b, c, d]) => {
            let total = 1 + u32::from_be_bytes([a, b, c, d]) as usize;
            total.saturating_sub(buf.len())
        }
        _ => 5 - buf.len(),
    }
}

/// Splits the next complete message off the front of `buf`, without copying its body. `None`
/// when more bytes are needed.
fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    let Some(&[tag, a, b, c, d]) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(WireError::Protocol(format!(
            "message {} declares length {len}, outside 4..={MAX_MESSAGE_LEN}",
            describe_tag(tag)
        )));
    }
    let total = 1 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(5);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

/// The byte stream under a connection: TCP today, TLS later, an in-memory pipe in tests.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Buffered message I/O over a [`Transport`]: one read buffer that messages are split off
/// without copying, one write buffer that outgoing messages are encoded into.
struct Wire {
    io: Box<dyn Transport>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wire")
            .field("buffered", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

impl Wire {
    fn new(io: Box<dyn Transport>) -> Self {
        Wire {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(256),
        }
    }

    /// The next message. Cancel-safe: bytes read before a cancellation stay buffered.
    async fn read_frame(&mut self) -> Result<Frame, WireError> {
        loop {
            if let Some(frame) = split_frame(&mut self.read_buf)? {
                return Ok(frame);
            }
            let missing = missing_bytes(&self.read_buf);
            let spare = self.read_buf.capacity() - self.read_buf.len();
            if spare < missing.max(MIN_READ_SPACE) {
                self.read_buf.reserve(missing.max(READ_CHUNK));
            }
            if self.io.read_buf(&mut self.read_buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Writes out everything encoded into the write buffer.
    async fn flush(&mut self) -> io::Result<()> {
        let result = async {
            self.io.write_all(&self.write_buf).await?;
            self.io.flush().await
        }
        .await;
        self.write_buf.clear();
        result
    }
}

/// A bounds-checked reader over a message body.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }

    fn truncated(&self, field: &str) -> WireError {
        WireError::Protocol(format!("{} message truncated in {field}", self.what))
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }

    fn i16(&mut self, field: &str) -> Result<i16, WireError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &str) -> Result<i32, WireError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated field as bytes.
    fn cstr_bytes(&mut self, field: &str) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(field))?;
        let bytes = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(bytes)
    }

    /// A NUL-terminated UTF-8 field.
    fn cstr(&mut self, field: &str) -> Result<&'a str, WireError> {
        let bytes = self.cstr_bytes(field)?;
        std::str::from_utf8(bytes).map_err(|_| {
            WireError::Protocol(format!("{} message: {field} is not UTF-8", self.what))
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Protocol(format!(
                "{} message has {} unexpected trailing byte(s)",
                self.what,
                self.buf.len()
            )))
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse body.
fn parse_error_fields(body: &[u8]) -> Result<ServerError, WireError> {
    let mut cursor = Cursor::new(body, "ErrorResponse");
    let mut error = ServerError::default();
    let mut localized_severity = None;
    loop {
        let field = cursor.u8("field type")?;
        if field == 0 {
            break;
        }
        // Lossy: an error raised before `client_encoding` applies may be in another encoding.
        let value = String::from_utf8_lossy(cursor.cstr_bytes("field value")?).into_owned();
        match field {
            b'V' => error.severity = value,
            b'S' => localized_severity = Some(value),
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    cursor.finish()?;
    if error.severity.is_empty() {
        error.severity = localized_severity.unwrap_or_default();
    }
    Ok(error)
}

/// The values of a DataRow body, as text.
fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
    let mut cursor = Cursor::new(body, "DataRow");
    let count = cursor.i16("column count")?;
    let count = usize::try_from(count)
        .map_err(|_| WireError::Protocol(format!("DataRow has {count} columns")))?;
    let mut row = Vec::with_capacity(count);
    for _ in 0..count {
        let len = cursor.i32("value length")?;
        if len == -1 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len)
            .map_err(|_| WireError::Protocol(format!("DataRow value length {len}")))?;
        let value = cursor.take(len, "value")?;
        let text = std::str::from_utf8(value)
            .map_err(|_| WireError::Protocol("DataRow value is not UTF-8".to_owned()))?;
        row.push(Some(text.to_owned()));
    }
    cursor.finish()?;
    Ok(row)
}

/// The mechanisms of an AuthenticationSASL body (after the auth code).
fn parse_sasl_mechanisms(body: &[u8]) -> Result<Vec<&str>, WireError> {
    let mut cursor = Cursor::new(body, "AuthenticationSASL");
    let mut mechanisms = Vec::new();
    loop {
        let mechanism = cursor.cstr("mechanism")?;
        if mechanism.is_empty() {
            break;
        }
        mechanisms.push(mechanism);
    }
    cursor.finish()?;
    Ok(mechanisms)
}

/// Logs a NoticeResponse.
fn log_notice(addr: &str, body: &[u8]) {
    match parse_error_fields(body) {
        Ok(notice) if notice.severity == "WARNING" => {
            warn!(addr, code = %notice.code, "PostgreSQL: {}", notice.message);
        }
        Ok(notice) => debug!(addr, code = %notice.code, "PostgreSQL: {}", notice.message),
        Err(error) => warn!(addr, ?error, "PostgreSQL sent a malformed NoticeResponse"),
    }
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/// A logged-in `replication=database` connection in command mode.
pub struct ReplicationConnection {
    wire: Wire,
    addr: String,
    user: String,
    parameters: BTreeMap<String, String>,
    backend_pid: Option<i32>,
    authentication: AuthMethod,
    broken: bool,
}

impl fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("backend_pid", &self.backend_pid)
            .field("authentication", &self.authentication)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ReplicationConnection {
    /// Connects over TCP and logs in (trust, cleartext, MD5 or SCRAM-SHA-256), all within
    /// `config.connect_timeout`.
    #[instrument(name = "pg_replication_connect", skip_all,
        fields(addr = %config.addr(), user = %config.user, dbname = %config.dbname))]
    pub async fn connect(config: &ReplicationConfig) -> Result<Self> {
        let addr = config.addr();
        let login = async {
            let stream = TcpStream::connect((config.host.as_str(), config.port))
                .await
                .map_err(|source| ReplicationError::Io {
                    addr: addr.clone(),
                    during: "opening the TCP connection".to_owned(),
                    source,
                })?;
            stream
                .set_nodelay(true)
                .map_err(|source| ReplicationError::Io {
                    addr: addr.clone(),
                    during: "setting TCP_NODELAY".to_owned(),
                    source,
                })?;
            Self::handshake(Box::new(stream), config, addr.clone()).await
        };
        let conn = tokio::time::timeout(config.connect_timeout, login)
            .await
            .map_err(|_| ReplicationError::Timeout {
                addr: addr.clone(),
                during: format!("connecting as user {:?}", config.user),
                timeout: config.connect_timeout,
            })??;
        info!(
            server_version = conn.parameter("server_version").unwrap_or("?"),
            authentication = ?conn.authentication,
            backend_pid = conn.backend_pid,
            "replication connection open"
        );
        Ok(conn)
    }

    /// Startup message, authentication, then parameters up to ReadyForQuery.
    async fn handshake(
        io: Box<dyn Transport>,
        config: &ReplicationConfig,
        addr: String,
    ) -> Result<Self> {
        let mut conn = ReplicationConnection {
            wire: Wire::new(io),
            addr,
            user: config.user.clone(),
            parameters: BTreeMap::new(),
            backend_pid: None,
            authentication: AuthMethod::Trust,
            broken: false,
        };
        let mut parameters = vec![
            ("user", config.user.as_str()),
            ("database", config.dbname.as_str()),
            ("replication", "database"),
            ("application_name", config.application_name.as_str()),
        ];
        parameters.extend(SESSION_PARAMETERS);
        frontend::startup_message(parameters, &mut conn.wire.write_buf).map_err(|_| {
            ReplicationError::InvalidConfig {
                reason: "user, dbname and application_name must not contain NUL bytes".to_owned(),
            }
        })?;
        conn.flush("sending the startup message").await?;
        conn.authenticate(config.password.as_deref()).await?;
        conn.await_ready().await?;
        Ok(conn)
    }

    fn auth_error(&self, reason: impl Into<String>) -> ReplicationError {
        ReplicationError::Authentication {
            addr: self.addr.clone(),
            user: self.user.clone(),
            reason: reason.into(),
        }
    }

    /// Answers the server's authentication requests until AuthenticationOk.
    async fn authenticate(&mut self, password: Option<&[u8]>) -> Result<()> {
        let user = self.user.clone();
        let during = || format!("authenticating as user {user:?}");
        let need_password =
            || "the server asks for a password and the connection URL has none".to_owned();
        // Set once SCRAM starts; `scram_verified` once the server's signature checked out.
        let mut scram: Option<ScramSha256> = None;
        let mut scram_verified = false;
        loop {
            let frame = self.read(during).await?;
            match frame.tag {
                b'R' => {}
                b'E' => return Err(self.server_error(&frame.body, during)),
                b'N' => {
                    log_notice(&self.addr, &frame.body);
                    continue;
                }
                b'v' => {
                    return Err(self.protocol_error(
                        "the server does not support protocol 3.0 as sent (NegotiateProtocolVersion)",
                        during,
                    ));
                }
                tag => {
                    return Err(self.protocol_error(
                        format!(
                            "unexpected message {} during authentication",
                            describe_tag(tag)
                        ),
                        during,
                    ));
                }
            }
            let mut body = Cursor::new(&frame.body, "Authentication");
            let code = body
                .i32("authentication code")
                .map_err(|e| self.fail(e, during))?;
            match code {
                0 => {
                    body.finish().map_err(|e| self.fail(e, during))?;
                    if scram.is_some() && !scram_verified {
                        return Err(self.auth_error(
                            "the server accepted the login without proving it knows the \
                             password (SCRAM final message missing)",
                        ));
                    }
                    return Ok(());
                }
                3 => {
                    let password = password.ok_or_else(|| self.auth_error(need_password()))?;
                    self.authentication = AuthMethod::Cleartext;
                    frontend::password_message(password, &mut self.wire.write_buf)
                        .map_err(|_| self.auth_error("the password contains a NUL byte"))?;
                }
                5 => {
                    let salt = body.take(4, "salt").map_err(|e| self.fail(e, during))?;
                    let salt = [salt[0], salt[1], salt[2], salt[3]];
                    let password = password.ok_or_else(|| self.auth_error(need_password()))?;
                    self.authentication = AuthMethod::Md5;
                    let hash = md5_hash(self.user.as_bytes(), password, salt);
                    frontend::password_message(hash.as_bytes(), &mut self.wire.write_buf)
                        .map_err(|_| self.auth_error("the MD5 hash contains a NUL byte"))?;
                }
                10 => {
                    if scram.is_some() {
                        return Err(self.protocol_error("AuthenticationSASL sent twice", during));
                    }
                    let mechanisms =
                        parse_sasl_mechanisms(body.rest()).map_err(|e| self.fail(e, during))?;
                    if !mechanisms.contains(&sasl::SCRAM_SHA_256) {
                        return Err(self.auth_error(format!(
                            "the server offers SASL mechanisms {mechanisms:?}; strata supports \
                             SCRAM-SHA-256 without channel binding (no TLS yet)"
                        )));
                    }
                    let password = password.ok_or_else(|| self.auth_error(need_password()))?;
                    self.authentication = AuthMethod::ScramSha256;
                    let client = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        client.message(),
                        &mut self.wire.write_buf,
                    )
                    .map_err(|e| self.auth_error(format!("encoding SCRAM message: {e}")))?;
                    scram = Some(client);
                }
                11 => {
                    let Some(client) = scram.as_mut() else {
                        return Err(self.protocol_error(
                            "AuthenticationSASLContinue without AuthenticationSASL",
                            during,
                        ));
                    };
                    // `update` errors (and leaves `client` unusable) unless called exactly
                    // once, so `message` below cannot hit its panicking state.
                    if let Err(e) = client.update(body.rest()) {
                        return Err(self.auth_error(format!("SCRAM server-first message: {e}")));
                    }
                    let message = client.message();
                    frontend::sasl_response(message, &mut self.wire.write_buf)
                        .map_err(|e| self.auth_error(format!("encoding SCRAM message: {e}")))?;
                }
                12 => {
                    let Some(client) = scram.as_mut() else {
                        return Err(self.protocol_error(
                            "AuthenticationSASLFinal without AuthenticationSASL",
                            during,
                        ));
                    };
                    if let Err(e) = client.finish(body.rest()) {
                        return Err(self.auth_error(format!(
                            "SCRAM server-final message did not verify: {e}"
                        )));
                    }
                    scram_verified = true;
                    continue;
                }
                2 | 6 | 7 | 8 | 9 => {
                    let method = match code {
                        2 => "Kerberos V5",
                        6 => "SCM credentials",
                        9 => "SSPI",
                        _ => "GSSAPI",
                    };
                    return Err(self.auth_error(format!(
                        "the server asks for {method} authentication, which strata does not \
                         support (use scram-sha-256, md5 or password in pg_hba.conf)"
                    )));
                }
                code => {
                    return Err(self.protocol_error(
                        format!("unknown authentication request code {code}"),
                        during,
                    ));
                }
            }
            self.flush(&during()).await?;
        }
    }

    /// Collects ParameterStatus and BackendKeyData up to the first ReadyForQuery.
    async fn await_ready(&mut self) -> Result<()> {
        let during = || "waiting for the server to be ready".to_owned();
        loop {
            let frame = self.read(during).await?;
            match frame.tag {
                b'S' => self
                    .record_parameter(&frame.body)
                    .map_err(|e| self.fail(e, during))?,
                b'K' => {
                    let mut body = Cursor::new(&frame.body, "BackendKeyData");
                    let pid = body.i32("process id").map_err(|e| self.fail(e, during))?;
                    self.backend_pid = Some(pid);
                }
                b'N' => log_notice(&self.addr, &frame.body),
                b'Z' => return Ok(()),
                b'E' => return Err(self.server_error(&frame.body, during)),
                tag => {
                    return Err(self.protocol_error(
                        format!(
                            "unexpected message {} before ReadyForQuery",
                            describe_tag(tag)
                        ),
                        during,
                    ));
                }
            }
        }
    }

    fn record_parameter(&mut self, body: &[u8]) -> Result<(), WireError> {
        let mut cursor = Cursor::new(body, "ParameterStatus");
        let name = cursor.cstr("name")?.to_owned();
        let value = cursor.cstr("value")?.to_owned();
        cursor.finish()?;
        self.parameters.insert(name, value);
        Ok(())
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A parameter the server reported (`server_version`, `DateStyle`, `TimeZone`,
    /// `client_encoding`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The server process id of this session (`pg_stat_replication.pid`).
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// How the server authenticated this connection.
    pub fn authentication(&self) -> AuthMethod {
        self.authentication
    }

    /// Runs a command with the simple query protocol and returns its rows as text (`None` for
    /// NULL); for replication commands such as `READ_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`
    /// or `SHOW`, and plain SQL. Rows of several statements are concatenated. A server `ERROR`
    /// is returned as [`ReplicationError::Server`] and leaves the connection usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.query(sql, || format!("running {:?}", shorten(sql)))
            .await
    }

    /// `IDENTIFY_SYSTEM`: the cluster id, timeline and current WAL position.
    #[instrument(skip_all, fields(addr = %self.addr))]
    pub async fn identify_system(&mut self) -> Result<SystemInfo> {
        let during = || "running IDENTIFY_SYSTEM".to_owned();
        let rows = self.query("IDENTIFY_SYSTEM", during).await?;
        let row = self.single_row(rows, 4, during)?;
        let bad = |what: &str, value: &Option<String>| {
            let detail = format!("IDENTIFY_SYSTEM returned {what} {value:?}");
            self.wrap(WireError::Protocol(detail), during)
        };
        let system_id = row[0]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("systemid", &row[0]))?;
        let timeline = row[1]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("timeline", &row[1]))?;
        let xlogpos = row[2]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("xlogpos", &row[2]))?;
        Ok(SystemInfo {
            system_id,
            timeline,
            xlogpos,
            dbname: row[3].clone(),
        })
    }

    /// Creates a logical replication slot for `pgoutput`. A `temporary` slot is dropped when
    /// this connection ends. With [`SlotSnapshot::Export`], read the module documentation: the
    /// snapshot lives only until this connection runs its next command.
    #[instrument(skip_all, fields(addr = %self.addr, slot = name, snapshot = ?snapshot, temporary = temporary))]
    pub async fn create_logical_slot(
        &mut self,
        name: &str,
        snapshot: SlotSnapshot,
        temporary: bool,
    ) -> Result<CreatedSlot> {
        let major = self
            .parameter("server_version")
            .and_then(server_major_version);
        let command = create_slot_command(name, snapshot, temporary, major);
        let during = || format!("creating replication slot {name:?}");
        let rows = self.query(&command, during).await?;
        let row = self.single_row(rows, 4, during)?;
        let consistent_point = row[1]
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                let detail = format!(
                    "CREATE_REPLICATION_SLOT returned consistent_point {:?}",
                    row[1]
                );
                self.wrap(WireError::Protocol(detail), during)
            })?;
        let mut row = row.into_iter();
        let slot_name = row.next().flatten().unwrap_or_else(|| name.to_owned());
        let snapshot_name = row.nth(1).flatten();
        info!(%consistent_point, ?snapshot_name, "replication slot created");
        Ok(CreatedSlot {
            slot_name,
            consistent_point,
            snapshot_name,
        })
    }

    /// `DROP_REPLICATION_SLOT "name"`. A missing slot is [`ReplicationError::MissingSlot`]; a
    /// slot in use by another connection is a [`ReplicationError::Server`] with SQLSTATE
    /// `55006`.
    #[instrument(skip_all, fields(addr = %self.addr, slot = name))]
    pub async fn drop_slot(&mut self, name: &str) -> Result<()> {
        let command = format!("DROP_REPLICATION_SLOT {}", quote_ident(name));
        let during = || format!("dropping replication slot {name:?}");
        match self.query(&command, during).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.missing_slot(error, name)),
        }
    }

    /// Starts streaming changes from logical slot `slot` at `start` (`Lsn::INVALID`, `0/0`,
    /// means the slot's `confirmed_flush_lsn`) with pgoutput `options`, e.g.
    /// `[("proto_version", "1"), ("publication_names", &quote_publication_names(&["p"]))]`.
    /// Option names and values are quoted here; pass them raw.
    #[instrument(skip_all, fields(addr = %self.addr, slot = slot, start = %start))]
    pub async fn start_logical(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream> {
        let command = start_replication_command(slot, start, options);
        let during = || format!("starting replication from slot {slot:?} at {start}");
        self.send_query(&command, during).await?;
        let mut error: Option<ServerError> = None;
        loop {
            let frame = self.read(during).await?;
            match frame.tag {
                b'W' if error.is_none() => {
                    let mut body = Cursor::new(&frame.body, "CopyBothResponse");
                    let parsed = body.u8("format").and_then(|_| body.i16("column count"));
                    parsed.map_err(|e| self.fail(e, during))?;
                    info!("replication streaming started");
                    return Ok(ReplicationStream {
                        conn: self,
                        slot: slot.to_owned(),
                        state: StreamState::Streaming,
                    });
                }
                b'E' => {
                    let server =
                        parse_error_fields(&frame.body).map_err(|e| self.fail(e, during))?;
                    if server.is_fatal() {
                        self.broken = true;
                        return Err(
                            self.missing_slot(self.wrap(WireError::Server(server), during), slot)
                        );
                    }
                    error = Some(server);
                }
                b'N' => log_notice(&self.addr, &frame.body),
                b'S' => self
                    .record_parameter(&frame.body)
                    .map_err(|e| self.fail(e, during))?,
                b'Z' => {
                    let wire = match error {
                        Some(server) => WireError::Server(server),
                        None => {
                            WireError::Protocol("ReadyForQuery without CopyBothResponse".to_owned())
                        }
                    };
                    let error = self.fail(wire, during);
                    return Err(self.missing_slot(error, slot));
                }
                tag => {
                    return Err(self.protocol_error(
                        format!(
                            "unexpected message {} instead of CopyBothResponse",
                            describe_tag(tag)
                        ),
                        during,
                    ));
                }
            }
        }
    }

    /// Ends the session politely (Terminate). Dropping the connection also closes it.
    pub async fn close(mut self) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        frontend::terminate(&mut self.wire.write_buf);
        self.flush("closing the connection").await?;
        let _ = self.wire.io.shutdown().await;
        Ok(())
    }

    // -- plumbing ---------------------------------------------------------------------------

    /// Turns a 42704 server error for `slot` into [`ReplicationError::MissingSlot`].
    fn missing_slot(&self, error: ReplicationError, slot: &str) -> ReplicationError {
        match error {
            ReplicationError::Server { addr, error, .. }
                if error.code == SQLSTATE_UNDEFINED_OBJECT =>
            {
                ReplicationError::MissingSlot {
                    addr,
                    slot: slot.to_owned(),
                    error,
                }
            }
            other => other,
        }
    }

    fn wrap(&self, error: WireError, during: impl FnOnce() -> String) -> ReplicationError {
        let addr = self.addr.clone();
        let during = during();
        match error {
            WireError::Io(source) => ReplicationError::Io {
                addr,
                during,
                source,
            },
            WireError::Closed => ReplicationError::Closed { addr, during },
            WireError::Protocol(detail) => ReplicationError::Protocol {
                addr,
                during,
                detail,
            },
            WireError::Server(error) => ReplicationError::Server {
                addr,
                during,
                error: Box::new(error),
            },
        }
    }

    /// Builds the error for `error`, marking the connection broken unless the server is still
    /// in a known state (an ordinary `ERROR` answered by ReadyForQuery).
    fn fail(&mut self, error: WireError, during: impl FnOnce() -> String) -> ReplicationError {
        match &error {
            WireError::Server(server) if !server.is_fatal() => {}
            _ => self.broken = true,
        }
        self.wrap(error, during)
    }

    fn protocol_error(
        &mut self,
        detail: impl Into<String>,
        during: impl FnOnce() -> String,
    ) -> ReplicationError {
        self.fail(WireError::Protocol(detail.into()), during)
    }

    /// The error for an ErrorResponse body received outside a command (login, streaming).
    fn server_error(&mut self, body: &[u8], during: impl FnOnce() -> String) -> ReplicationError {
        let error = match parse_error_fields(body) {
            Ok(server) => WireError::Server(server),
            Err(e) => e,
        };
        // Outside a command nothing brings the session back: treat every error as final.
        self.broken = true;
        self.wrap(error, during)
    }

    async fn read(&mut self, during: impl FnOnce() -> String) -> Result<Frame> {
        if self.broken {
            return Err(ReplicationError::Broken {
                addr: self.addr.clone(),
                during: during(),
            });
        }
        match self.wire.read_frame().await {
            Ok(frame) => Ok(frame),
            Err(e) => Err(self.fail(e, during)),
        }
    }

    async fn flush(&mut self, during: &str) -> Result<()> {
        if let Err(e) = self.wire.flush().await {
            return Err(self.fail(WireError::Io(e), || during.to_owned()));
        }
        Ok(())
    }

    async fn send_query(&mut self, sql: &str, during: impl FnOnce() -> String) -> Result<()> {
        if self.broken {
            return Err(ReplicationError::Broken {
                addr: self.addr.clone(),
                during: during(),
            });
        }
        if frontend::query(sql, &mut self.wire.write_buf).is_err() {
            self.wire.write_buf.clear();
            return Err(ReplicationError::InvalidArgument {
                command: "simple query",
                reason: format!("{:?} contains a NUL byte", shorten(sql)),
            });
        }
        if let Err(e) = self.wire.flush().await {
            return Err(self.fail(WireError::Io(e), during));
        }
        Ok(())
    }

    /// Runs `sql` with the simple query protocol up to ReadyForQuery.
    async fn query(
        &mut self,
        sql: &str,
        during: impl Fn() -> String,
    ) -> Result<Vec<Vec<Option<String>>>> {
        self.send_query(sql, &during).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read(&during).await?;
            match frame.tag {
                b'T' | b'C' | b'I' => {}
                b'D' => {
                    let row = parse_data_row(&frame.body).map_err(|e| self.fail(e, &during))?;
                    rows.push(row);
                }
                b'E' => {
                    let server =
                        parse_error_fields(&frame.body).map_err(|e| self.fail(e, &during))?;
                    if server.is_fatal() {
                        return Err(self.fail(WireError::Server(server), &during));
                    }
                    error = Some(server);
                }
                b'N' => log_notice(&self.addr, &frame.body),
                b'S' => self
                    .record_parameter(&frame.body)
                    .map_err(|e| self.fail(e, &during))?,
                b'Z' => {
                    return match error {
                        Some(server) => Err(self.fail(WireError::Server(server), &during)),
                        None => Ok(rows),
                    };
                }
                b'G' | b'H' | b'W' => {
                    return Err(self.protocol_error(
                        "the command started a COPY; use start_logical for START_REPLICATION",
                        &during,
                    ));
                }
                tag => {
                    return Err(self.protocol_error(
                        format!(
                            "unexpected message {} in a query response",
                            describe_tag(tag)
                        ),
                        &during,
                    ));
                }
            }
        }
    }

    /// The only row of `rows`, which must have `columns` columns.
    fn single_row(
        &self,
        mut rows: Vec<Vec<Option<String>>>,
        columns: usize,
        during: impl FnOnce() -> String,
    ) -> Result<Vec<Option<String>>> {
        match rows.pop() {
            Some(row) if rows.is_empty() && row.len() == columns => Ok(row),
            _ => {
                let detail = format!("expected one row of {columns} columns");
                Err(self.wrap(WireError::Protocol(detail), during))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Streaming,
    /// The server sent CopyDone.
    ServerDone,
    /// An error ended the stream.
    Failed,
}

/// The CopyBoth phase of `START_REPLICATION`: CopyData payloads in, CopyData payloads out.
///
/// The caller must answer keepalives that request a reply and send standby status updates at
/// least every `wal_sender_timeout` (60 s by default), or the server ends the stream.
#[derive(Debug)]
pub struct ReplicationStream {
    conn: ReplicationConnection,
    slot: String,
    state: StreamState,
}

impl ReplicationStream {
    /// The next CopyData payload (starting with `w` for XLogData or `k` for a keepalive), sharing
    /// the read buffer's memory; `None` once the server has ended the stream with CopyDone.
    ///
    /// Cancel-safe: it can be used in `tokio::select!` (e.g. against a status-update timer)
    /// without losing data.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let slot = &self.slot;
        let during = || format!("streaming from replication slot {slot:?}");
        match self.state {
            StreamState::Streaming => {}
            StreamState::ServerDone => return Ok(None),
            StreamState::Failed => {
                return Err(ReplicationError::Broken {
                    addr: self.conn.addr.clone(),
                    during: during(),
                });
            }
        }
        loop {
            let frame = match self.conn.wire.read_frame().await {
                Ok(frame) => frame,
                Err(e) => {
                    self.state = StreamState::Failed;
                    return Err(self.conn.fail(e, during));
                }
            };
            match frame.tag {
                b'd' => return Ok(Some(frame.body)),
                b'c' => {
                    self.state = StreamState::ServerDone;
                    return Ok(None);
                }
                b'E' => {
                    self.state = StreamState::Failed;
                    let error = match parse_error_fields(&frame.body) {
                        Ok(server) => WireError::Server(server),
                        Err(e) => e,
                    };
                    return Err(self.conn.fail(error, during));
                }
                b'N' => log_notice(&self.conn.addr, &frame.body),
                b'S' => {
                    if let Err(e) = self.conn.record_parameter(&frame.body) {
                        self.state = StreamState::Failed;
                        return Err(self.conn.fail(e, during));
                    }
                }
                b'A' => {}
                tag => {
                    self.state = StreamState::Failed;
                    return Err(self.conn.protocol_error(
                        format!(
                            "unexpected message {} in the replication stream",
                            describe_tag(tag)
                        ),
                        during,
                    ));
                }
            }
        }
    }

    /// Sends one CopyData message with `payload` (e.g. a standby status update, `r`...) and
    /// flushes it. Not cancel-safe: a cancelled send may leave a partial message on the wire.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        let slot = &self.slot;
        let during = || format!("sending to replication slot {slot:?}");
        if self.state == StreamState::Failed || self.conn.broken {
            return Err(ReplicationError::Broken {
                addr: self.conn.addr.clone(),
                during: during(),
            });
        }
        let message =
            frontend::CopyData::new(payload).map_err(|e| ReplicationError::InvalidArgument {
                command: "CopyData",
                reason: e.to_string(),
            })?;
        message.write(&mut self.conn.wire.write_buf);
        if let Err(e) = self.conn.wire.flush().await {
            self.state = StreamState::Failed;
            return Err(self.conn.fail(WireError::Io(e), during));
        }
        Ok(())
    }

    /// Ends streaming: sends CopyDone, discards the CopyData still in flight (nothing is lost:
    /// the slot resends everything after its confirmed position), and returns the connection in
    /// command mode. Also returns the connection after the server ended the stream with an
    /// `ERROR` (not `FATAL`). Bound it with a timeout if the server may be unresponsive.
    #[instrument(skip_all, fields(addr = %self.conn.addr, slot = %self.slot))]
    pub async fn finish(mut self) -> Result<ReplicationConnection> {
        let slot = self.slot;
        let during = || format!("ending replication from slot {slot:?}");
        let conn = &mut self.conn;
        if self.state != StreamState::Failed {
            frontend::copy_done(&mut conn.wire.write_buf);
            conn.flush(&during()).await?;
        } else if conn.broken {
            return Err(ReplicationError::Broken {
                addr: conn.addr.clone(),
                during: during(),
            });
        }
        let mut discarded = 0_u64;
        let mut error = None;
        loop {
            let frame = conn.read(during).await?;
            match frame.tag {
                b'd' => discarded += 1,
                b'c' | b'C' | b'A' => {}
                b'N' => log_notice(&conn.addr, &frame.body),
                b'S' => conn
                    .record_parameter(&frame.body)
                    .map_err(|e| conn.fail(e, during))?,
                b'E' => {
                    let server =
                        parse_error_fields(&frame.body).map_err(|e| conn.fail(e, during))?;
                    if server.is_fatal() {
                        return Err(conn.fail(WireError::Server(server), during));
                    }
                    error = Some(server);
                }
                b'Z' => break,
                tag => {
                    return Err(conn.protocol_error(
                        format!("unexpected message {} after CopyDone", describe_tag(tag)),
                        during,
                    ));
                }
            }
        }
        if let Some(server) = error {
            return Err(conn.fail(WireError::Server(server), during));
        }
        debug!(discarded, "replication stream finished");
        Ok(self.conn)
    }

    /// The connection's server parameters and identity.
    pub fn connection(&self) -> &ReplicationConnection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{DuplexStream, ReadBuf};

    use super::*;

    // -- backend message builders -------------------------------------------------------------

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(extra);
        msg(b'R', &body)
    }

    fn cstrs(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
        out
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    fn parameter(name: &str, value: &str) -> Vec<u8> {
        msg(b'S', &cstrs(&[name, value]))
    }

    fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        msg(b'E', &body)
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = i16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
        for value in values {
            match value {
                Some(v) => {
                    body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1_i32).to_be_bytes()),
            }
        }
        msg(b'D', &body)
    }

    fn complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cstrs(&[tag]))
    }

    fn copy_both() -> Vec<u8> {
        msg(b'W', &[0, 0, 0])
    }

    fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    // -- framing ------------------------------------------------------------------------------

    #[test]
    fn split_frame_waits_for_complete_messages() {
        let bytes = msg(b'd', b"wpayload");
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            assert_eq!(split_frame(&mut buf).unwrap(), None, "after {i} bytes");
            // Until the header is complete only the header's missing bytes are known.
            let expected = if i < 5 { 5 - i } else { bytes.len() - i };
            assert_eq!(missing_bytes(&buf), expected, "after {i} bytes");
            buf.extend_from_slice(&[*byte]);
        }
        let frame = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(frame.tag, b'd');
        assert_eq!(&frame.body[..], b"wpayload");
        assert!(buf.is_empty());
    }

    #[test]
    fn split_frame_splits_several_messages_without_copying() {
        let mut buf = BytesMut::from(
            &concat(&[msg(b'd', b"k123"), msg(b'd', b"w4567"), msg(b'Z', b"I")])[..],
        );
        buf.extend_from_slice(&msg(b'd', b"partial")[..6]);
        let first = split_frame(&mut buf).unwrap().unwrap();
        let second = split_frame(&mut buf).unwrap().unwrap();
        let third = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(
            (&first.body[..], &second.body[..]),
            (&b"k123"[..], &b"w4567"[..])
        );
        assert_eq!((third.tag, &third.body[..]), (b'Z', &b"I"[..]));
        // The bodies are views into one allocation: the second starts right after the first
        // body and the second header.
        let gap = second.body.as_ptr() as usize - first.body.as_ptr() as usize;
        assert_eq!(gap, first.body.len() + 5);
        assert_eq!(split_frame(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 6);
    }

    #[test]
    fn split_frame_rejects_bad_lengths() {
        for len in [0_u32, 3, (MAX_MESSAGE_LEN as u32) + 1, u32::MAX] {
            let mut buf = BytesMut::from(&[b'd'][..]);
            buf.extend_from_slice(&len.to_be_bytes());
            let Err(WireError::Protocol(detail)) = split_frame(&mut buf) else {
                panic!("length {len} accepted");
            };
            assert!(detail.contains(&format!("length {len}")), "{detail}");
        }
        let mut empty_body = BytesMut::from(&msg(b'c', b"")[..]);
        let frame = split_frame(&mut empty_body).unwrap().unwrap();
        assert_eq!((frame.tag, frame.body.len()), (b'c', 0));
    }

    /// Delivers scripted chunks, one per read, then end of file; swallows writes.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Chunks {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn wire_reassembles_messages_across_reads() {
        let big = vec![b'x'; 3 * READ_CHUNK];
        let stream = concat(&[
            msg(b'd', b"w1"),
            msg(b'd', &big),
            msg(b'd', b"k2"),
            msg(b'c', b""),
        ]);
        // Cut the byte stream at awkward places: inside a header, inside a body, and a chunk that
        // holds the end of one message and several whole ones.
        let cuts = [
            1,
            3,
            9,
            20,
            100,
            2 * READ_CHUNK,
            stream.len() - 12,
            stream.len(),
        ];
        let mut chunks = VecDeque::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push_back(stream[start..cut].to_vec());
            start = cut;
        }
        let mut wire = Wire::new(Box::new(Chunks(chunks)));
        let bodies: Vec<Bytes> = [
            wire.read_frame().await.unwrap(),
            wire.read_frame().await.unwrap(),
            wire.read_frame().await.unwrap(),
        ]
        .into_iter()
        .map(|f| f.body)
        .collect();
        assert_eq!(&bodies[0][..], b"w1");
        assert_eq!(bodies[1], big);
        assert_eq!(&bodies[2][..], b"k2");
        assert_eq!(wire.read_frame().await.unwrap().tag, b'c');
        assert!(matches!(wire.read_frame().await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn wire_reports_eof_inside_a_message_as_closed() {
        let cut = msg(b'd', b"wxyz")[..7].to_vec();
        let mut wire = Wire::new(Box::new(Chunks(VecDeque::from([cut]))));
        assert!(matches!(wire.read_frame().await, Err(WireError::Closed)));
    }

    // -- message bodies -----------------------------------------------------------------------

    #[test]
    fn error_fields_are_parsed_and_malformed_ones_rejected() {
        let frame = error("ERROR", "42704", "replication slot \"x\" does not exist");
        let parsed = parse_error_fields(&frame[5..]).unwrap();
        assert_eq!(parsed.severity, "ERROR");
        assert_eq!(parsed.code, "42704");
        assert_eq!(
            parsed.to_string(),
            "ERROR 42704: replication slot \"x\" does not exist"
        );
        // Missing terminator, missing NUL, trailing bytes.
        for bad in [&b"CX\0"[..], b"Mabc", b"\0junk"] {
            assert!(
                matches!(parse_error_fields(bad), Err(WireError::Protocol(_))),
                "{bad:?}"
            );
        }
        // Only the localized severity: used as is.
        let parsed = parse_error_fields(b"SFEHLER\0C28P01\0\0").unwrap();
        assert_eq!(
            (parsed.severity.as_str(), parsed.code.as_str()),
            ("FEHLER", "28P01")
        );
    }

    #[test]
    fn data_rows_are_parsed_and_malformed_ones_rejected() {
        let frame = data_row(&[Some("6981"), None, Some("")]);
        let row = parse_data_row(&frame[5..]).unwrap();
        assert_eq!(
            row,
            vec![Some("6981".to_owned()), None, Some(String::new())]
        );
        let truncated = &frame[5..frame.len() - 3];
        for bad in [
            truncated,
            &[0xff, 0xff],
            &[0, 1, 0xff, 0xff, 0xff, 0xfe],
            &[0, 1, 0, 0, 0, 9, b'a'],
        ] {
            assert!(
                matches!(parse_data_row(bad), Err(WireError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sasl_mechanisms_are_parsed() {
        let body = cstrs(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", ""]);
        assert_eq!(
            parse_sasl_mechanisms(&body).unwrap(),
            ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
        );
        assert!(parse_sasl_mechanisms(b"SCRAM-SHA-256\0").is_err());
    }

    // -- commands and quoting -----------------------------------------------------------------

    #[test]
    fn option_values_and_names_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"C:\x"), r"'C:\x'");
        assert_eq!(quote_ident("My \"slot\""), "\"My \"\"slot\"\"\"");
        assert_eq!(quote_publication_names(&["pub"]), "\"pub\"");
        assert_eq!(
            quote_publication_names(&["Orders", "it's", "a\"b"]),
            "\"Orders\",\"it's\",\"a\"\"b\""
        );
        let publications = quote_publication_names(&["strata", "it's"]);
        assert_eq!(
            start_replication_command(
                "s1",
                Lsn(0x16_B374_D848),
                &[
                    ("proto_version", "1"),
                    ("publication_names", &publications),
                    ("messages", "true")
                ]
            ),
            "START_REPLICATION SLOT \"s1\" LOGICAL 16/B374D848 (\"proto_version\" '1', \
             \"publication_names\" '\"strata\",\"it''s\"', \"messages\" 'true')"
        );
        assert_eq!(
            start_replication_command("s1", Lsn::INVALID, &[]),
            "START_REPLICATION SLOT \"s1\" LOGICAL 0/0"
        );
    }

    #[test]
    fn create_slot_uses_the_servers_syntax() {
        assert_eq!(
            create_slot_command("s", SlotSnapshot::Export, true, Some(15)),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", SlotSnapshot::NoExport, false, None),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
        assert_eq!(
            create_slot_command("s", SlotSnapshot::Use, false, Some(14)),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput USE_SNAPSHOT"
        );
        assert_eq!(
            server_major_version("15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(server_major_version("16beta1"), Some(16));
        assert_eq!(server_major_version("9.6.3"), Some(9));
        assert_eq!(server_major_version("devel"), None);
    }

    // -- configuration ------------------------------------------------------------------------

    #[test]
    fn config_from_url() {
        let config = ReplicationConfig::from_url(
            "postgres://strata:s3cret@127.0.0.1:5433/orders?sslmode=disable",
        )
        .unwrap();
        assert_eq!(config.addr(), "127.0.0.1:5433");
        assert_eq!(
            (config.user.as_str(), config.dbname.as_str()),
            ("strata", "orders")
        );
        assert_eq!(config.password.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(config.application_name, "strata");
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(!format!("{config:?}").contains("s3cret"));

        let config = ReplicationConfig::from_url(
            "postgresql://u@db.example?connect_timeout=3&application_name=cdc",
        )
        .unwrap();
        assert_eq!(config.addr(), "db.example:5432");
        assert_eq!(config.dbname, "u");
        assert_eq!(config.password, None);
        assert_eq!(config.application_name, "cdc");
        assert_eq!(config.connect_timeout, Duration::from_secs(3));

        let config = ReplicationConfig::from_url("host=::1 port=6000 user=u").unwrap();
        assert_eq!(config.addr(), "[::1]:6000");
    }

    #[test]
    fn config_refuses_what_it_cannot_do() {
        let reason = |url: &str| match ReplicationConfig::from_url(url) {
            Err(ReplicationError::InvalidConfig { reason }) => reason,
            other => panic!("{url}: {other:?}"),
        };
        assert!(reason("postgres://u:p@h/db?sslmode=require").contains("TLS is not supported yet"));
        assert!(reason("postgres://u:p@%2Fvar%2Frun%2Fpostgresql/db").contains("Unix-domain"));
        assert!(reason("postgres://u@a,b/db").contains("multiple hosts"));
        assert!(reason("postgres://h/db").contains("no user"));
        let unparsable = reason("postgres://u:secretpw@h/db?nonsense=1");
        assert!(!unparsable.contains("secretpw"), "{unparsable}");
    }

    // -- against a scripted server ------------------------------------------------------------

    /// The server side of an in-memory connection.
    struct FakeServer(DuplexStream);

    impl FakeServer {
        async fn send(&mut self, bytes: &[u8]) {
            self.0.write_all(bytes).await.unwrap();
        }

        /// The startup message's parameters.
        async fn startup(&mut self) -> BTreeMap<String, String> {
            let len = self.0.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            self.0.read_exact(&mut body).await.unwrap();
            assert_eq!(&body[..4], &[0, 3, 0, 0], "protocol 3.0");
            let fields: Vec<String> = body[4..]
                .split(|&b| b == 0)
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect();
            fields
                .chunks(2)
                .filter(|pair| pair.len() == 2 && !pair[0].is_empty())
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect()
        }

        async fn message(&mut self) -> (u8, Vec<u8>) {
            let tag = self.0.read_u8().await.unwrap();
            let len = self.0.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            self.0.read_exact(&mut body).await.unwrap();
            (tag, body)
        }
    }

    fn test_config(password: Option<&str>) -> ReplicationConfig {
        ReplicationConfig {
            host: "fake".to_owned(),
            port: 5432,
            user: "alice".to_owned(),
            password: password.map(|p| p.as_bytes().to_vec()),
            dbname: "shop".to_owned(),
            application_name: "strata".to_owned(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Runs the handshake against `server`, a script for the server side.
    async fn handshake_with<F, Fut>(
        password: Option<&str>,
        server: F,
    ) -> Result<ReplicationConnection>
    where
        F: FnOnce(FakeServer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = FakeServer> + Send,
    {
        let (client, server_io) = tokio::io::duplex(64 * 1024);
        let script = tokio::spawn(async move { server(FakeServer(server_io)).await });
        let config = test_config(password);
        let result =
            ReplicationConnection::handshake(Box::new(client), &config, config.addr()).await;
        // Keep the server end open until the client is done, then check the script ran through.
        let _server = script.await.unwrap();
        result
    }

    /// A connection that already logged in with trust, and the server end.
    async fn logged_in() -> (ReplicationConnection, FakeServer) {
        let (client, server_io) = tokio::io::duplex(64 * 1024);
        let mut server = FakeServer(server_io);
        server
            .send(&concat(&[
                auth(0, b""),
                parameter("server_version", "15.18"),
                ready(),
            ]))
            .await;
        let config = test_config(None);
        let conn = ReplicationConnection::handshake(Box::new(client), &config, config.addr())
            .await
            .unwrap();
        server.startup().await;
        (conn, server)
    }

    #[tokio::test]
    async fn trust_login_collects_parameters() {
        let conn = handshake_with(None, |mut server| async move {
            let startup = server.startup().await;
            assert_eq!(startup["user"], "alice");
            assert_eq!(startup["database"], "shop");
            assert_eq!(startup["replication"], "database");
            assert_eq!(startup["application_name"], "strata");
            assert_eq!(startup["DateStyle"], "ISO");
            assert_eq!(startup["client_encoding"], "UTF8");
            let mut key_data = 4242_i32.to_be_bytes().to_vec();
            key_data.extend_from_slice(&7_i32.to_be_bytes());
            server
                .send(&concat(&[
                    auth(0, b""),
                    parameter("server_version", "15.18"),
                    msg(b'K', &key_data),
                    parameter("DateStyle", "ISO, MDY"),
                    ready(),
                ]))
                .await;
            server
        })
        .await
        .unwrap();
        assert_eq!(conn.authentication(), AuthMethod::Trust);
        assert_eq!(conn.parameter("server_version"), Some("15.18"));
        assert_eq!(conn.parameter("DateStyle"), Some("ISO, MDY"));
        assert_eq!(conn.backend_pid(), Some(4242));
    }

    #[tokio::test]
    async fn cleartext_and_md5_passwords() {
        let conn = handshake_with(Some("pw"), |mut server| async move {
            server.startup().await;
            server.send(&auth(3, b"")).await;
            assert_eq!(server.message().await, (b'p', b"pw\0".to_vec()));
            server.send(&concat(&[auth(0, b""), ready()])).await;
            server
        })
        .await
        .unwrap();
        assert_eq!(conn.authentication(), AuthMethod::Cleartext);

        let conn = handshake_with(Some("pw"), |mut server| async move {
            server.startup().await;
            server.send(&auth(5, &[1, 2, 3, 4])).await;
            let expected = md5_hash(b"alice", b"pw", [1, 2, 3, 4]);
            assert_eq!(
                server.message().await,
                (b'p', format!("{expected}\0").into_bytes())
            );
            server.send(&concat(&[auth(0, b""), ready()])).await;
            server
        })
        .await
        .unwrap();
        assert_eq!(conn.authentication(), AuthMethod::Md5);
    }

    #[tokio::test]
    async fn login_failures_name_the_user() {
        let err = handshake_with(Some("wrong"), |mut server| async move {
            server.startup().await;
            server.send(&auth(3, b"")).await;
            server.message().await;
            server
                .send(&error(
                    "FATAL",
                    "28P01",
                    "password authentication failed for user \"alice\"",
                ))
                .await;
            server
        })
        .await
        .unwrap_err();
        assert_eq!(err.sqlstate(), Some("28P01"));
        assert!(
            err.to_string().contains("authenticating as user \"alice\""),
            "{err}"
        );

        let err = handshake_with(None, |mut server| async move {
            server.startup().await;
            server.send(&auth(5, &[1, 2, 3, 4])).await;
            server
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, ReplicationError::Authentication { ref reason, .. } if reason.contains("none")),
            "{err}"
        );

        let err = handshake_with(Some("pw"), |mut server| async move {
            server.startup().await;
            server.send(&auth(7, b"")).await;
            server
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("GSSAPI"), "{err}");

        let err = handshake_with(Some("pw"), |mut server| async move {
            server.startup().await;
            server
                .send(&auth(10, &cstrs(&["SCRAM-SHA-256-PLUS", ""])))
                .await;
            server
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("SCRAM-SHA-256-PLUS"), "{err}");
    }

    #[tokio::test]
    async fn malformed_login_bytes_are_protocol_errors() {
        let scripts: Vec<Vec<u8>> = vec![
            auth(99, b""),
            msg(b'R', b"\0\0"),
            auth(5, &[1, 2]),
            auth(11, b"r=abc"),
            auth(0, b"extra"),
            msg(b'Q', b""),
            concat(&[auth(0, b""), msg(b'S', b"no-nul")]),
            concat(&[auth(0, b""), msg(b'K', b"\0")]),
            vec![b'R', 0xff, 0xff, 0xff, 0xff],
        ];
        for script in scripts {
            let bytes = script.clone();
            let err = handshake_with(Some("pw"), |mut server| async move {
                server.startup().await;
                server.send(&bytes).await;
                server
            })
            .await
            .unwrap_err();
            assert!(
                matches!(err, ReplicationError::Protocol { .. }),
                "{script:?}: {err}"
            );
        }
        // The server hangs up.
        let err = handshake_with(Some("pw"), |mut server| async move {
            server.startup().await;
            server.0.shutdown().await.unwrap();
            server
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ReplicationError::Closed { .. }), "{err}");
    }

    #[tokio::test]
    async fn simple_query_rows_and_recoverable_errors() {
        let (mut conn, mut server) = logged_in().await;
        server
            .send(&concat(&[
                msg(b'T', b"ignored"),
                data_row(&[Some("1"), None]),
                data_row(&[Some("2"), Some("b")]),
                complete("SELECT 2"),
                ready(),
            ]))
            .await;
        let rows = conn.simple_query("SELECT a, b FROM t").await.unwrap();
        assert_eq!(
            server.message().await,
            (b'Q', b"SELECT a, b FROM t\0".to_vec())
        );
        assert_eq!(
            rows,
            vec![
                vec![Some("1".to_owned()), None],
                vec![Some("2".to_owned()), Some("b".to_owned())]
            ]
        );

        server
            .send(&concat(&[error("ERROR", "42601", "syntax error"), ready()]))
            .await;
        let err = conn.simple_query("NONSENSE").await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("42601"));
        assert!(err.to_string().contains("running \"NONSENSE\""), "{err}");

        server.send(&concat(&[complete("SHOW"), ready()])).await;
        assert_eq!(
            conn.simple_query("SHOW x").await.unwrap(),
            Vec::<Vec<Option<String>>>::new()
        );

        let err = conn.simple_query("a\0b").await.unwrap_err();
        assert!(
            matches!(err, ReplicationError::InvalidArgument { .. }),
            "{err}"
        );

        // A malformed row breaks the connection for good.
        server.send(&msg(b'D', b"\0\x05")).await;
        assert!(matches!(
            conn.simple_query("SELECT").await,
            Err(ReplicationError::Protocol { .. })
        ));
        assert!(matches!(
            conn.simple_query("SELECT").await,
            Err(ReplicationError::Broken { .. })
        ));
    }

    #[tokio::test]
    async fn missing_slot_is_its_own_error() {
        let (conn, mut server) = logged_in().await;
        server
            .send(&concat(&[
                error("ERROR", "42704", "replication slot \"gone\" does not exist"),
                ready(),
            ]))
            .await;
        let err = conn
            .start_logical("gone", Lsn::INVALID, &[])
            .await
            .unwrap_err();
        assert!(err.is_missing_slot(), "{err}");
        assert_eq!(err.sqlstate(), Some("42704"));
        assert!(err.to_string().contains("\"gone\" does not exist"), "{err}");

        let (mut conn, mut server) = logged_in().await;
        server
            .send(&concat(&[
                error("ERROR", "42704", "replication slot \"gone\" does not exist"),
                ready(),
            ]))
            .await;
        assert!(conn.drop_slot("gone").await.unwrap_err().is_missing_slot());
        server
            .send(&concat(&[
                error("ERROR", "55006", "replication slot \"s\" is active"),
                ready(),
            ]))
            .await;
        let err = conn.drop_slot("s").await.unwrap_err();
        assert!(!err.is_missing_slot());
        assert_eq!(err.sqlstate(), Some("55006"));
    }

    #[tokio::test]
    async fn stream_hands_out_copy_data_and_finishes() {
        let (conn, mut server) = logged_in().await;
        server
            .send(&concat(&[
                copy_both(),
                msg(b'd', b"w-first"),
                msg(b'N', b"VWARNING\0C01000\0Mheads up\0\0"),
                parameter("TimeZone", "UTC"),
                msg(b'd', b"k-second"),
            ]))
            .await;
        let mut stream = conn
            .start_logical("s", Lsn(0x1_0000_0010), &[("proto_version", "1")])
            .await
            .unwrap();
        let (tag, body) = server.message().await;
        assert_eq!(tag, b'Q');
        assert_eq!(
            body,
            b"START_REPLICATION SLOT \"s\" LOGICAL 1/10 (\"proto_version\" '1')\0"
        );
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"w-first");
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"k-second");
        assert_eq!(stream.connection().parameter("TimeZone"), Some("UTC"));

        stream.send(b"r-status").await.unwrap();
        assert_eq!(server.message().await, (b'd', b"r-status".to_vec()));

        // finish: CopyDone out; in-flight data, CopyDone, CommandComplete, ReadyForQuery in.
        server
            .send(&concat(&[
                msg(b'd', b"w-late"),
                msg(b'c', b""),
                complete("COPY 0"),
                ready(),
            ]))
            .await;
        let mut conn = stream.finish().await.unwrap();
        assert_eq!(server.message().await, (b'c', Vec::new()));
        server
            .send(&concat(&[complete("DROP_REPLICATION_SLOT"), ready()]))
            .await;
        conn.drop_slot("s").await.unwrap();
    }

    #[tokio::test]
    async fn stream_errors_and_server_end() {
        // A mid-stream ERROR fails the stream; finish then finds the connection usable again.
        let (conn, mut server) = logged_in().await;
        server
            .send(&concat(&[
                copy_both(),
                error("ERROR", "42704", "publication \"p\" does not exist"),
                ready(),
            ]))
            .await;
        let mut stream = conn.start_logical("s", Lsn::INVALID, &[]).await.unwrap();
        let err = stream.next().await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("42704"));
        assert!(
            !err.is_missing_slot(),
            "a missing publication is not a missing slot"
        );
        assert!(matches!(
            stream.next().await,
            Err(ReplicationError::Broken { .. })
        ));
        let conn = stream.finish().await.unwrap();
        assert!(!conn.broken);

        // Server-side CopyDone ends the stream cleanly.
        let (conn, mut server) = logged_in().await;
        server.send(&concat(&[copy_both(), msg(b'c', b"")])).await;
        let mut stream = conn.start_logical("s", Lsn::INVALID, &[]).await.unwrap();
        assert_eq!(stream.next().await.unwrap(), None);
        assert_eq!(stream.next().await.unwrap(), None);

        // Garbage mid-stream is a protocol error, never a panic.
        let (conn, mut server) = logged_in().await;
        server.send(&concat(&[copy_both(), msg(b'?', b"")])).await;
        let mut stream = conn.start_logical("s", Lsn::INVALID, &[]).await.unwrap();
        assert!(matches!(
            stream.next().await,
            Err(ReplicationError::Protocol { .. })
        ));
        assert!(matches!(
            stream.send(b"r").await,
            Err(ReplicationError::Broken { .. })
        ));
        assert!(matches!(
            stream.finish().await,
            Err(ReplicationError::Broken { .. })
        ));

        // The connection drops.
        let (conn, mut server) = logged_in().await;
        server.send(&copy_both()).await;
        let mut stream = conn.start_logical("s", Lsn::INVALID, &[]).await.unwrap();
        drop(server);
        assert!(matches!(
            stream.next().await,
            Err(ReplicationError::Closed { .. })
        ));
    }
}
