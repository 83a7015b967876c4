//! [`TableId`]: which table of which source a piece of history belongs to.

use std::fmt;
use std::str::FromStr;

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names one table of one source: `pg-main/public/orders`.
///
/// - `source`: the configured source (one database deployment), e.g. `pg-main`.
/// - `namespace`: the source's own grouping: a PostgreSQL schema, a Cassandra keyspace,
///   a MongoDB database, an HDFS directory.
/// - `table`: the table / collection name inside the namespace.
///
/// No part may be empty or contain `/`; [`TableId::validate`] checks this, and the catalog
/// refuses to commit an action naming an invalid table. `Display` and [`FromStr`] use the
/// `source/namespace/table` form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    /// The configured source, e.g. `pg-main`.
    pub source: String,
    /// Schema, keyspace or database inside the source, e.g. `public`.
    pub namespace: String,
    /// Table or collection name, e.g. `orders`.
    pub table: String,
}

impl TableId {
    /// A table id from its three parts (not validated; see [`TableId::validate`]).
    pub fn new(
        source: impl Into<String>,
        namespace: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        Self {
            source: source.into(),
            namespace: namespace.into(),
            table: table.into(),
        }
    }

    /// Checks that no part is empty or contains `/`.
    pub fn validate(&self) -> Result<()> {
        for part in [&self.source, &self.namespace, &self.table] {
            if part.is_empty() {
                return Err(Error::InvalidTableId {
                    input: self.to_string(),
                    reason: "a part is empty",
                });
            }
            if part.contains('/') {
                return Err(Error::InvalidTableId {
                    input: self.to_string(),
                    reason: "a part contains '/'",
                });
            }
        }
        Ok(())
    }

    /// Where this table's files live under a store root: `<root>/<source>/<namespace>/<table>`.
    pub fn object_prefix(&self, root: &Path) -> Path {
        root.clone()
            .join(self.source.as_str())
            .join(self.namespace.as_str())
            .join(self.table.as_str())
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.namespace, self.table)
    }
}

impl FromStr for TableId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(source), Some(namespace), Some(table), None) => {
                let id = Self::new(source, namespace, table);
                id.validate()?;
                Ok(id)
            }
            _ => Err(Error::InvalidTableId {
                input: s.to_owned(),
                reason: "expected source/namespace/table",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = TableId::new("pg-main", "public", "orders");
        assert_eq!(id.to_string(), "pg-main/public/orders");
        assert_eq!("pg-main/public/orders".parse::<TableId>().unwrap(), id);
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        for bad in ["", "a/b", "a/b/c/d", "a//c", "/b/c"] {
            assert!(
                matches!(bad.parse::<TableId>(), Err(Error::InvalidTableId { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn object_prefix_nests_under_root() {
        let id = TableId::new("pg-main", "public", "orders");
        assert_eq!(
            id.object_prefix(&Path::from("warehouse")).as_ref(),
            "warehouse/pg-main/public/orders"
        );
    }

    #[test]
    fn serde_is_a_plain_object() {
        let id = TableId::new("s", "n", "t");
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"source": "s", "namespace": "n", "table": "t"})
        );
    }
}
