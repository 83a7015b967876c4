//! `[source.postgres]`: what to capture from a PostgreSQL database and how.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A PostgreSQL source, read through logical replication (pgoutput).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSourceConfig {
    /// Logical name of this source; it names topics (`<prefix>.<name>.<schema>.<table>`) and the
    /// history folder.
    pub name: String,
    /// libpq-style URL of the database (`postgres://user:pass@host:5432/db`). The user needs the
    /// REPLICATION attribute, and CREATE on the database to create the publication.
    pub url: String,
    /// Tables to capture as `schema.table`; empty captures every table with a primary key.
    pub tables: Vec<String>,
    /// The replication slot strata creates and reads.
    pub slot_name: String,
    /// The publication strata creates and reads.
    pub publication_name: String,
    /// `initial`: when the slot is new, first read every captured table in the slot's snapshot;
    /// `never`: stream changes only.
    pub snapshot_mode: SnapshotMode,
    /// How many connections read the initial snapshot at once.
    pub snapshot_parallelism: usize,
    /// Rows per snapshot chunk (a primary-key range read by one connection).
    pub snapshot_chunk_rows: u64,
    /// How often the durable position is reported to PostgreSQL (so the server can recycle WAL).
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// On a quiet database, write a tiny logical message this often so the slot keeps advancing
    /// and WAL does not pile up. `0s` turns heartbeats off.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Default for PostgresSourceConfig {
    fn default() -> Self {
        Self {
            name: "pg".into(),
            url: "postgres://strata:strata@127.0.0.1:5433/strata".into(),
            tables: Vec::new(),
            slot_name: "strata".into(),
            publication_name: "strata".into(),
            snapshot_mode: SnapshotMode::Initial,
            snapshot_parallelism: 4,
            snapshot_chunk_rows: 100_000,
            status_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
        }
    }
}

/// Whether a new slot starts with a snapshot of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Read every table in the slot's exported snapshot, then stream.
    Initial,
    /// Stream only.
    Never,
}

impl PostgresSourceConfig {
    /// Checks what types alone cannot; the error is `(key, message)` with the key relative to
    /// `[source.postgres]`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err((
                "url",
                format!("`{}` is not a postgres:// URL", redact_url(&self.url)),
            ));
        }
        for (key, value) in [
            ("slot_name", &self.slot_name),
            ("name", &self.name),
            ("publication_name", &self.publication_name),
        ] {
            let ok = !value.is_empty()
                && value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err((
                    key,
                    format!("`{value}` must be 1-63 lowercase letters, digits and _"),
                ));
            }
        }
        for table in &self.tables {
            let parts: Vec<&str> = table.split('.').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(("tables", format!("`{table}` is not schema.table")));
            }
        }
        if self.snapshot_parallelism == 0 {
            return Err(("snapshot_parallelism", "must be at least 1".into()));
        }
        if self.snapshot_chunk_rows == 0 {
            return Err(("snapshot_chunk_rows", "must be at least 1".into()));
        }
        if self.status_interval.is_zero() {
            return Err(("status_interval", "must be more than zero".into()));
        }
        Ok(())
    }
}

/// Hides the password of a URL, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PostgresSourceConfig::default().validate().unwrap();
    }

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn names_the_bad_key() {
        let bad = |f: fn(&mut PostgresSourceConfig)| {
            let mut c = PostgresSourceConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(bad(|c| c.url = "mysql://x".into()), "url");
        assert_eq!(bad(|c| c.slot_name = "Bad-Slot".into()), "slot_name");
        assert_eq!(bad(|c| c.tables = vec!["orders".into()]), "tables");
        assert_eq!(bad(|c| c.snapshot_parallelism = 0), "snapshot_parallelism");
    }
}
