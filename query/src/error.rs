//! The query crate's errors.

use datafusion::error::DataFusionError;

/// What can go wrong answering a query over strata's history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table name the catalog does not know.
    #[error("unknown table `{name}`; known tables: {}", known_list(.known))]
    UnknownTable {
        /// The name as given.
        name: String,
        /// Every name the catalog knows (`namespace.table`, and `source.namespace.table`).
        known: Vec<String>,
    },
    /// A `namespace.table` name that two sources share.
    #[error("table name `{name}` is ambiguous: use one of {}", known_list(.candidates))]
    AmbiguousTable {
        /// The name as given.
        name: String,
        /// The `source.namespace.table` names it could mean.
        candidates: Vec<String>,
    },
    /// A table with segments but no readable schema in the catalog.
    #[error("table `{table}` has no usable schema in the catalog: {reason}")]
    NoSchema {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// A change segment is missing, unreadable or not a change segment.
    #[error("change segment `{path}` of table `{table}`: {reason}")]
    Segment {
        /// The table.
        table: String,
        /// The segment's object path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A snapshot could not be built or written.
    #[error("snapshot of `{table}`: {reason}")]
    Snapshot {
        /// The table (or the snapshot file).
        table: String,
        /// What failed.
        reason: String,
    },
    /// A setting is invalid.
    #[error("{field}: {reason}")]
    Config {
        /// The dotted setting.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad arguments to a table function (`as_of`, `changes`).
    #[error("{function}(): {reason}")]
    BadArgument {
        /// The function.
        function: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] strata_catalog::Error),
    /// DataFusion failed (planning or execution).
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Arrow failed while merging (a bug, not bad input).
    #[error("merging changes of `{table}`: {source}")]
    Merge {
        /// The table.
        table: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

fn known_list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}
