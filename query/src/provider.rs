//! The DataFusion side: table providers for a table's state (current or as of t) and its
//! change log, the `as_of` / `changes` table functions, and resolving table names.
//!
//! Each `scan` does the merge-on-read itself (read the segments that matter, fold them,
//! see [`crate::merge`]) and hands DataFusion the result as an in-memory source: simple
//! and exact for unchanged-column semantics. Filters are pushed down best effort (time
//! always; equality / IN on a single-column key prunes segments, row groups and rows) and
//! DataFusion re-applies them (`Inexact`).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::{ColumnarValue, ExecutionPlan};
use futures::StreamExt as _;
use object_store::ObjectStore;
use serde_json::Value;
use strata_catalog::schema::{
    COMMIT_POS_COLUMN, COMMIT_TS_COLUMN, EVENT_ID_COLUMN, KEY_COLUMN, OP_COLUMN, SEQ_COLUMN,
    TX_ID_COLUMN, UNCHANGED_COLUMN,
};
use strata_catalog::{Catalog, CatalogState, Row, TableId, TableSchema, encode_key};

use crate::error::{Error, Result};
use crate::merge::{MERGE_SYSTEM_COLUMNS, merge_state, sort_unique};
use crate::read::{FileRef, ReadSpec, mark_copies, read_segment, segment_may_match};
use crate::snapshot::read_state_runs;

/// What every provider shares: the catalog and the store its segments live in.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// The name a table is known by: `namespace.table`.
pub(crate) fn short_name(table: &TableId) -> String {
    format!("{}.{}", table.namespace, table.table)
}

/// The name a table is always known by: `source.namespace.table`.
pub(crate) fn full_name(table: &TableId) -> String {
    format!("{}.{}.{}", table.source, table.namespace, table.table)
}

/// Every name the catalog's tables answer to, sorted.
pub(crate) fn known_names(state: &CatalogState) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for t in state.tables() {
        names.insert(short_name(t));
        names.insert(full_name(t));
    }
    names.into_iter().collect()
}

/// The table `name` means: `namespace.table` (if one source has it),
/// `source.namespace.table` or `source/namespace/table`.
pub(crate) fn resolve(state: &CatalogState, name: &str) -> Result<TableId> {
    let name = name.trim();
    let parts: Vec<&str> = if name.contains('/') {
        name.split('/').collect()
    } else {
        name.split('.').collect()
    };
    let matches: Vec<&TableId> = state
        .tables()
        .filter(|t| match parts.as_slice() {
            [ns, table] => t.namespace == *ns && t.table == *table,
            [source, ns, table] => t.source == *source && t.namespace == *ns && t.table == *table,
            _ => false,
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::UnknownTable {
            name: name.to_owned(),
            known: known_names(state),
        }),
        many => Err(Error::AmbiguousTable {
            name: name.to_owned(),
            candidates: many.iter().map(|t| full_name(t)).collect(),
        }),
    }
}

/// The table's schema in force at `t` (or its first one, before any), as declared.
pub(crate) fn table_schema(state: &CatalogState, table: &TableId, t: i64) -> Result<TableSchema> {
    let version = state
        .schema_at(table, t)
        .or_else(|| state.table(table).and_then(|s| s.schemas().first()))
        .ok_or_else(|| Error::NoSchema {
            table: table.to_string(),
            reason: "no SetSchema was ever committed".into(),
        })?;
    TableSchema::from_catalog_json(&version.schema).map_err(|e| Error::NoSchema {
        table: table.to_string(),
        reason: e.to_string(),
    })
}

/// The table columns of a schema (the change-segment schema without the system columns).
pub(crate) fn table_fields(table: &TableId, schema: &TableSchema) -> Result<Vec<FieldRef>> {
    let segment = schema.segment_schema().map_err(|e| Error::NoSchema {
        table: table.to_string(),
        reason: e.to_string(),
    })?;
    let system = strata_catalog::schema::system_fields().len();
    Ok(segment.fields().iter().skip(system).cloned().collect())
}

/// Reads the segments of `table` that `spec` wants, several at a time, in commit order.
/// `all_ids`: read every `_event_id` (else only where copies may be, see [`mark_copies`]).
pub(crate) async fn read_runs(
    shared: &Shared,
    state: &CatalogState,
    table: &TableId,
    spec: ReadSpec,
    all_ids: bool,
) -> Result<Vec<Vec<RecordBatch>>> {
    let spec = Arc::new(spec);
    let files = segment_files(state, table, &spec, all_ids)
        .into_iter()
        .map(|file| (file, Arc::clone(&spec)))
        .collect();
    read_files(shared, table, files).await
}

/// The segments of `table` that may hold changes `spec` wants, in commit order; `all_ids`: every
/// one reads `_event_id` (else only where copies may be, see [`mark_copies`]).
pub(crate) fn segment_files(
    state: &CatalogState,
    table: &TableId,
    spec: &ReadSpec,
    all_ids: bool,
) -> Vec<FileRef> {
    let mut files: Vec<FileRef> = state
        .segments_between(table, spec.after.unwrap_or(i64::MIN), spec.until)
        .filter(|e| segment_may_match(&e.segment, spec))
        .map(|e| FileRef::from(&e.segment))
        .collect();
    if !all_ids {
        mark_copies(&mut files);
    }
    files
}

/// Reads `files`, each with its spec, several at a time; one run per file, in order.
pub(crate) async fn read_files(
    shared: &Shared,
    table: &TableId,
    files: Vec<(FileRef, Arc<ReadSpec>)>,
) -> Result<Vec<Vec<RecordBatch>>> {
    let root = shared.catalog.root().clone();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let reads = files.into_iter().map(|(file, spec)| {
        let task = read_segment(
            Arc::clone(&shared.store),
            root.clone(),
            table.clone(),
            file,
            spec,
        );
        async move {
            tokio::spawn(task).await.map_err(|e| Error::Merge {
                table: table.to_string(),
                source: arrow::error::ArrowError::ExternalError(Box::new(e)),
            })?
        }
    });
    futures::stream::iter(reads)
        .buffered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Spreads batches over `n` partitions, round robin.
fn partitions(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let n = n.max(1).min(batches.len().max(1));
    let mut parts = vec![Vec::new(); n];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % n].push(b);
    }
    parts
}

/// The state of a table at one instant (`as_of`) or now (`None`: the catalog's state at scan time).
#[derive(Debug)]
pub(crate) struct StateTable {
    shared: Shared,
    table: TableId,
    as_of: Option<i64>,
    schema: SchemaRef,
    key_columns: Vec<String>,
}

impl StateTable {
    pub(crate) fn new(
        shared: Shared,
        state: &CatalogState,
        table: TableId,
        as_of: Option<i64>,
    ) -> Result<Self> {
        let declared = table_schema(state, &table, as_of.unwrap_or(i64::MAX))?;
        let schema = Arc::new(Schema::new(table_fields(&table, &declared)?));
        Ok(Self {
            shared,
            key_columns: declared.key_columns().map(|c| c.name.clone()).collect(),
            table,
            as_of,
            schema,
        })
    }

    /// The merged state: batches of the projected columns.
    pub(crate) async fn state(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let state = self.shared.catalog.state();
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p).map_err(|e| Error::Merge {
                table: self.table.to_string(),
                source: e,
            })?),
            None => Arc::clone(&self.schema),
        };
        let spec = ReadSpec {
            after: None,
            until: self.as_of.unwrap_or(i64::MAX),
            keys: key_filter(filters, &self.key_columns, &self.schema).map(Arc::new),
            system: MERGE_SYSTEM_COLUMNS.to_vec(),
            columns: projected.fields().iter().cloned().collect(),
        };
        let runs = read_state_runs(&self.shared, &state, &self.table, spec, false).await?;
        let output = Arc::clone(&projected);
        let table = self.table.to_string();
        let merged = tokio::task::spawn_blocking(move || merge_state(&runs, &output))
            .await
            .map_err(|e| Error::Merge {
                table: table.clone(),
                source: arrow::error::ArrowError::ExternalError(Box::new(e)),
            })?
            .map_err(|source| Error::Merge { table, source })?;
        Ok((projected, merged))
    }
}

#[async_trait]
impl TableProvider for StateTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (schema, batches) = self.state(projection, filters).await?;
        let parts = partitions(batches, session.config().target_partitions());
        Ok(MemorySourceConfig::try_new_exec(&parts, schema, None)?)
    }
}

/// The system columns of a change log, before the table's columns.
const CHANGE_COLUMNS: [&str; 6] = [
    OP_COLUMN,
    COMMIT_TS_COLUMN,
    COMMIT_POS_COLUMN,
    SEQ_COLUMN,
    TX_ID_COLUMN,
    UNCHANGED_COLUMN,
];

/// The changes of a table with `after < _commit_ts <= until`, in source order.
#[derive(Debug)]
pub(crate) struct ChangesTable {
    shared: Shared,
    table: TableId,
    after: i64,
    until: i64,
    columns: Vec<FieldRef>,
    key_columns: Vec<String>,
    schema: SchemaRef,
}

impl ChangesTable {
    pub(crate) fn new(
        shared: Shared,
        state: &CatalogState,
        table: TableId,
        after: i64,
        until: i64,
    ) -> Result<Self> {
        let declared = table_schema(state, &table, until)?;
        let columns = table_fields(&table, &declared)?;
        let read = ReadSpec {
            after: Some(after),
            until,
            keys: None,
            system: CHANGE_COLUMNS.to_vec(),
            columns: columns.clone(),
        };
        Ok(Self {
            shared,
            key_columns: declared.key_columns().map(|c| c.name.clone()).collect(),
            table,
            after,
            until,
            schema: read.output_schema(),
            columns,
        })
    }
}

#[async_trait]
impl TableProvider for ChangesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let state = self.shared.catalog.state();
        let mut system = CHANGE_COLUMNS.to_vec();
        system.extend([EVENT_ID_COLUMN, KEY_COLUMN]);
        let spec = ReadSpec {
            after: Some(self.after),
            until: self.until,
            keys: key_filter(filters, &self.key_columns, &self.schema).map(Arc::new),
            system,
            columns: self.columns.clone(),
        };
        let read_schema = spec.output_schema();
        // Every id: the change log drops copies by them.
        let runs = read_runs(&self.shared, &state, &self.table, spec, true).await?;
        let batches: Vec<RecordBatch> = runs.into_iter().flatten().collect();
        let table = self.table.to_string();
        let merged = tokio::task::spawn_blocking(move || change_log(&batches, &read_schema))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|source| Error::Merge { table, source })?;
        let parts = partitions(merged, session.config().target_partitions());
        let exec = MemorySourceConfig::try_new_exec(
            &parts,
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// All read changes in source order (position, then key), each event once, without the
/// `_event_id` and `_key` columns.
fn change_log(
    batches: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let (sorted, _) = sort_unique(&all, &[COMMIT_POS_COLUMN, SEQ_COLUMN, KEY_COLUMN])?;
    let drop = [
        schema.index_of(EVENT_ID_COLUMN)?,
        schema.index_of(KEY_COLUMN)?,
    ];
    let kept: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !drop.contains(i))
        .collect();
    let projected = sorted.project(&kept)?;
    let rows = projected.num_rows();
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < rows {
        let len = 8192.min(rows - offset);
        out.push(projected.slice(offset, len));
        offset += len;
    }
    Ok(out)
}

/// The encoded `_key`s a filter pins a single-column key to (`key = v`, `key IN (…)`),
/// when the literal's type matches the column's; `None`: no pruning.
fn key_filter(
    filters: &[Expr],
    key_columns: &[String],
    schema: &SchemaRef,
) -> Option<BTreeSet<String>> {
    let [key] = key_columns else {
        return None;
    };
    let data_type = schema.field_with_name(key).ok()?.data_type().clone();
    let is_key = |e: &Expr| match strip_casts(e) {
        Expr::Column(c) => c.name == *key,
        _ => false,
    };
    let encode = |e: &Expr| -> Option<String> {
        let Expr::Literal(value, _) = strip_casts(e) else {
            return None;
        };
        let json = literal_json(value, &data_type)?;
        Some(encode_key(&Row::from_iter([(key.as_str(), json)])))
    };
    for filter in filters {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => {
                let literal = if is_key(left) {
                    right
                } else if is_key(right) {
                    left
                } else {
                    continue;
                };
                if let Some(k) = encode(literal) {
                    return Some([k].into());
                }
            }
            Expr::InList(list) if !list.negated && is_key(&list.expr) => {
                let keys: Option<BTreeSet<String>> = list.list.iter().map(encode).collect();
                if keys.is_some() {
                    return keys;
                }
            }
            _ => {}
        }
    }
    None
}

fn strip_casts(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        other => other,
    }
}

/// A literal as the JSON value the key encoding uses, if it can equal a `data_type` column.
fn literal_json(value: &ScalarValue, data_type: &DataType) -> Option<Value> {
    let integer_column = data_type.is_integer();
    let string_column = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    match value {
        ScalarValue::Int8(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::Int16(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::Int32(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::Int64(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::UInt8(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::UInt16(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::UInt32(Some(v)) if integer_column => Some((*v).into()),
        ScalarValue::UInt64(Some(v)) if integer_column && i64::try_from(*v).is_ok() => {
            Some((*v).into())
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
            if string_column =>
        {
            Some(Value::String(s.clone()))
        }
        _ => None,
    }
}

/// Evaluates a constant table-function argument.
fn constant(function: &'static str, session: &dyn Session, expr: &Expr) -> Result<ScalarValue> {
    let bad = |reason: String| Error::BadArgument { function, reason };
    let physical = session
        .create_physical_expr(expr.clone(), &DFSchema::empty())
        .map_err(|e| bad(format!("`{expr}` is not a constant: {e}")))?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| bad(e.to_string()))?;
    match physical
        .evaluate(&one_row)
        .map_err(|e| bad(format!("`{expr}`: {e}")))?
    {
        ColumnarValue::Scalar(s) => Ok(s),
        ColumnarValue::Array(a) => {
            ScalarValue::try_from_array(&a, 0).map_err(|e| bad(format!("`{expr}`: {e}")))
        }
    }
}

fn table_argument(function: &'static str, session: &dyn Session, expr: &Expr) -> Result<String> {
    match constant(function, session, expr)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(s),
        other => Err(Error::BadArgument {
            function,
            reason: format!("the table must be a string like 'public.orders', got {other}"),
        }),
    }
}

/// A time argument in µs since the epoch, UTC: a timestamp, an RFC 3339 string, or µs.
fn time_argument(function: &'static str, session: &dyn Session, expr: &Expr) -> Result<i64> {
    let value = constant(function, session, expr)?;
    let bad = |reason: String| Error::BadArgument { function, reason };
    let micros = value
        .cast_to(&DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))
        .map_err(|e| bad(format!("`{expr}` is not a time: {e}")))?;
    match micros {
        ScalarValue::TimestampMicrosecond(Some(t), _) => Ok(t),
        _ => Err(bad(format!("`{expr}` is NULL, expected a time"))),
    }
}

/// `as_of('namespace.table', t)`: the state as of `t`, inclusive.
#[derive(Debug)]
pub(crate) struct AsOfFunction(pub(crate) Shared);

impl TableFunctionImpl for AsOfFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> DfResult<Arc<dyn TableProvider>> {
        let [table, t] = args.exprs() else {
            return Err(Error::BadArgument {
                function: "as_of",
                reason: "expects (table, time), e.g. as_of('public.orders', TIMESTAMP '2026-11-25 10:00:00Z')".into(),
            }
            .into());
        };
        let name = table_argument("as_of", args.session(), table)?;
        let t = time_argument("as_of", args.session(), t)?;
        let state = self.0.catalog.state();
        let table = resolve(&state, &name)?;
        Ok(Arc::new(StateTable::new(
            self.0.clone(),
            &state,
            table,
            Some(t),
        )?))
    }
}

/// `changes('namespace.table', t1, t2)`: the changes with `t1 < _commit_ts <= t2`.
#[derive(Debug)]
pub(crate) struct ChangesFunction(pub(crate) Shared);

impl TableFunctionImpl for ChangesFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> DfResult<Arc<dyn TableProvider>> {
        let [table, t1, t2] = args.exprs() else {
            return Err(Error::BadArgument {
                function: "changes",
                reason: "expects (table, t1, t2): the changes with t1 < commit time <= t2".into(),
            }
            .into());
        };
        let name = table_argument("changes", args.session(), table)?;
        let t1 = time_argument("changes", args.session(), t1)?;
        let t2 = time_argument("changes", args.session(), t2)?;
        let state = self.0.catalog.state();
        let table = resolve(&state, &name)?;
        Ok(Arc::new(ChangesTable::new(
            self.0.clone(),
            &state,
            table,
            t1,
            t2,
        )?))
    }
}
