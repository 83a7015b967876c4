//! Event ids: what [`ChangeEvent::event_id`](super::ChangeEvent::event_id) hashes, in each
//! version of the encoding.
//!
//! Both versions hash the same facts (table, operation, key cells, the written cells of the
//! stored image sorted by name, commit time, position), so two copies of one mutation share
//! an id in either. They differ in the bytes:
//!
//! ```text
//! v1  blake3(  "strata.event.v1" source namespace table op    every string: u64 LE length
//!              n key (name text)* n (name text)*               + bytes; counts: u64 LE
//!              commit_ts commit seq )                          length 8 + u64 LE
//! v2  blake3_keyed(K,  op n key (name text)* n (name text)*    lengths and counts: LEB128
//!              commit_ts commit seq )                          numbers: 8 bytes LE, no length
//!     K = blake3_derive_key("strata 2026-11-26 event id v2", source namespace table)
//! ```
//!
//! A v2 id hashes about half the bytes of a v1 id (a row of nine short columns: ~220 bytes,
//! four blake3 blocks, against ~500 and eight), and the table is hashed once, into the key.
//!
//! Ids are compared across segments (queries drop repeated ids), so a table keeps the version
//! it started with: [`TableSchema::event_id_version`](crate::TableSchema::event_id_version)
//! records it in each schema version the catalog holds, absent (v1) in catalogs written before
//! v2.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::{Operation, Row, SourcePosition};
use crate::table::TableId;

/// How a table's event ids are encoded (see the module doc). Stored as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum EventIdVersion {
    /// Every length 8 bytes; the table's names hashed with each event. What a schema without
    /// a version means.
    #[default]
    V1,
    /// LEB128 lengths; keyed by the table.
    V2,
}

impl EventIdVersion {
    /// The version a table first seen gets.
    pub const CURRENT: Self = Self::V2;

    /// True for [`EventIdVersion::V1`] (not written out: what older catalogs hold).
    pub fn is_v1(&self) -> bool {
        *self == Self::V1
    }
}

impl From<EventIdVersion> for u8 {
    fn from(version: EventIdVersion) -> Self {
        match version {
            EventIdVersion::V1 => 1,
            EventIdVersion::V2 => 2,
        }
    }
}

impl TryFrom<u8> for EventIdVersion {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            _ => Err(format!(
                "event id version {n} is not known to this strata (it knows 1 and 2)"
            )),
        }
    }
}

/// The event id versions of the tables a catalog holds, shared by a consumer's decoders: a
/// table not in it is new and gets [`EventIdVersion::CURRENT`]. Cheap to clone (one map).
#[derive(Debug, Clone, Default)]
pub struct EventIdVersions {
    inner: Arc<VersionsInner>,
}

#[derive(Debug, Default)]
struct VersionsInner {
    tables: RwLock<HashMap<TableId, EventIdVersion>>,
    /// Bumped by every change, so that decoders drop what they derived with the old map.
    generation: AtomicU64,
}

impl EventIdVersions {
    /// The version of `table`'s ids: its recorded one, else the current one.
    pub fn of(&self, table: &TableId) -> EventIdVersion {
        self.inner
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(table)
            .copied()
            .unwrap_or(EventIdVersion::CURRENT)
    }

    /// Records the versions of tables (the catalog's); true if any changed.
    pub fn record(&self, tables: impl IntoIterator<Item = (TableId, EventIdVersion)>) -> bool {
        let mut map = self
            .inner
            .tables
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for (table, version) in tables {
            changed |= map.insert(table, version) != Some(version);
        }
        if changed {
            self.inner.generation.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// Changes so far (see [`EventIdVersions::record`]).
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }
}

/// How one table's event ids are hashed: its version, and for v2 the key derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableIds {
    pub(crate) version: EventIdVersion,
    key: [u8; 32],
}

impl TableIds {
    pub(crate) fn new(table: &TableId, version: EventIdVersion) -> Self {
        let key = match version {
            EventIdVersion::V1 => [0; 32],
            EventIdVersion::V2 => {
                let mut names = Vec::with_capacity(64);
                for part in [&table.source, &table.namespace, &table.table] {
                    put_varint(&mut names, part.len() as u64);
                    names.extend_from_slice(part.as_bytes());
                }
                blake3::derive_key("strata 2026-11-26 event id v2", &names)
            }
        };
        Self { version, key }
    }
}

/// The bytes of one event id, written into one buffer and hashed at once (see the module
/// doc); a cell is its name and its value's JSON text (the bytes `Value::to_string` gives).
pub(crate) struct IdHasher<'t> {
    buf: Vec<u8>,
    ids: &'t TableIds,
}

thread_local! {
    /// The buffer of the last id hashed on this thread, for the next one (a decoder hashes an
    /// id per record: no allocation each time).
    static ID_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Appends `n` as LEB128: 7 bits a byte, low first, the high bit set on all but the last.
fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

impl<'t> IdHasher<'t> {
    /// Starts with the table (v1), the operation and the key.
    pub(crate) fn new(ids: &'t TableIds, table: &TableId, op: Operation, key: &Row) -> Self {
        let mut buf = ID_BUFFER.take();
        buf.clear();
        buf.reserve(512);
        let mut id = Self { buf, ids };
        if ids.version == EventIdVersion::V1 {
            id.put(b"strata.event.v1");
            id.put(table.source.as_bytes());
            id.put(table.namespace.as_bytes());
            id.put(table.table.as_bytes());
        }
        id.put(op.code().as_bytes());
        id.count(key.len());
        for (name, value) in key.iter() {
            id.cell(name, |buf| {
                // Writing a `Value` to a `Vec` cannot fail.
                let _ = serde_json::to_writer(buf, value);
            });
        }
        id
    }

    fn put(&mut self, bytes: &[u8]) {
        match self.ids.version {
            EventIdVersion::V1 => self
                .buf
                .extend_from_slice(&(bytes.len() as u64).to_le_bytes()),
            EventIdVersion::V2 => put_varint(&mut self.buf, bytes.len() as u64),
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many cells follow.
    pub(crate) fn count(&mut self, n: usize) {
        match self.ids.version {
            EventIdVersion::V1 => self.put(&(n as u64).to_le_bytes()),
            EventIdVersion::V2 => put_varint(&mut self.buf, n as u64),
        }
    }

    /// One cell: its name, and the JSON text `write` appends.
    pub(crate) fn cell(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.put(name.as_bytes());
        let at = self.buf.len();
        match self.ids.version {
            EventIdVersion::V1 => {
                self.buf.extend_from_slice(&[0; 8]);
                write(&mut self.buf);
                let len = (self.buf.len() - at - 8) as u64;
                self.buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
            }
            EventIdVersion::V2 => {
                // One byte for the length, which fits it below 128; else the text moves up.
                self.buf.push(0);
                write(&mut self.buf);
                let len = (self.buf.len() - at - 1) as u64;
                if len < 0x80 {
                    self.buf[at] = len as u8;
                } else {
                    let mut prefix = Vec::with_capacity(10);
                    put_varint(&mut prefix, len);
                    self.buf.splice(at..=at, prefix);
                }
            }
        }
    }

    /// Ends with the commit time and position; the id.
    pub(crate) fn finish(mut self, commit_ts_us: i64, position: SourcePosition) -> [u8; 32] {
        let numbers = [
            commit_ts_us.to_le_bytes(),
            position.commit.to_le_bytes(),
            position.seq.to_le_bytes(),
        ];
        let id = match self.ids.version {
            EventIdVersion::V1 => {
                for number in numbers {
                    self.put(&number);
                }
                *blake3::hash(&self.buf).as_bytes()
            }
            EventIdVersion::V2 => {
                for number in numbers {
                    self.buf.extend_from_slice(&number);
                }
                *blake3::keyed_hash(&self.ids.key, &self.buf).as_bytes()
            }
        };
        ID_BUFFER.set(std::mem::take(&mut self.buf));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        let encode = |n| {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            buf
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(127), [127]);
        assert_eq!(encode(128), [0x80, 1]);
        assert_eq!(encode(300), [0xac, 2]);
        assert_eq!(encode(u64::MAX).len(), 10);
    }

    #[test]
    fn versions_are_numbers_and_unknown_ones_are_refused() {
        assert_eq!(serde_json::to_string(&EventIdVersion::V2).unwrap(), "2");
        assert_eq!(
            serde_json::from_str::<EventIdVersion>("1").unwrap(),
            EventIdVersion::V1
        );
        let err = serde_json::from_str::<EventIdVersion>("3").unwrap_err();
        assert!(err.to_string().contains("event id version 3"), "{err}");
    }

    #[test]
    fn recorded_versions_win_and_bump_the_generation() {
        let versions = EventIdVersions::default();
        let t = TableId::new("s", "n", "t");
        assert_eq!(versions.of(&t), EventIdVersion::CURRENT);
        let g = versions.generation();
        assert!(versions.record([(t.clone(), EventIdVersion::V1)]));
        assert_eq!(versions.of(&t), EventIdVersion::V1);
        assert!(versions.generation() > g);
        let g = versions.generation();
        assert!(!versions.record([(t, EventIdVersion::V1)]), "no change");
        assert_eq!(versions.generation(), g);
    }
}
