//! The initial snapshot: every captured table read inside the snapshot a new replication slot
//! exported, in parallel chunks by primary-key range, published as `op = r` events.
//!
//! ```text
//!  replication conn:  CREATE_REPLICATION_SLOT … (SNAPSHOT 'export') ──► snapshot "0000…-1", point P
//!                       │ (stays open and idle until the snapshot is read)
//!  worker 1..N:        BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT '0000…-1';
//!                      COPY (SELECT … WHERE pk >= a AND pk < b) TO STDOUT   ──► op=r events
//!  replication conn:  START_REPLICATION SLOT … LOGICAL P   ──► every commit after the snapshot
//! ```
//!
//! The snapshot sees exactly the transactions committed before P and streaming returns exactly
//! those committed after it, so the hand-over neither loses nor repeats a change.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::envelope::{self, EventSource, Op, Row, ServerNaming, TableLayout};
use super::pgoutput::{Relation, RelationColumn, ReplicaIdentity};
use super::{CaptureError, connect_sql};
use crate::now_micros;
use crate::sink::EventSink;

/// How far the snapshot is; shared with whoever draws a progress bar.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    /// Rows the tables are estimated to hold (from `pg_class.reltuples`).
    pub rows_estimated: AtomicU64,
    /// Rows read and queued to Kafka.
    pub rows_done: AtomicU64,
    /// Chunks finished / planned.
    pub chunks_done: AtomicU64,
    /// Chunks planned.
    pub chunks_total: AtomicU64,
}

/// A captured table as the catalog describes it now.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its OID.
    pub oid: u32,
    /// Schema.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The relation, built from the catalog the way pgoutput would describe it.
    pub relation: Relation,
    /// Estimated rows (`pg_class.reltuples`); 0 when the table was never analyzed.
    pub estimated_rows: u64,
    /// Whether PostgreSQL has an estimate at all (`reltuples >= 0`).
    pub analyzed: bool,
}

impl TableInfo {
    /// `"schema"."table"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.namespace),
            quote_ident(&self.name)
        )
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Reads a table's columns and key from the catalog, in the shape of a pgoutput Relation.
pub async fn describe_table(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<TableInfo, CaptureError> {
    let table = format!("{namespace}.{name}");
    let sql_err = |e| CaptureError::Sql {
        what: format!("reading the columns of {table}"),
        source: e,
    };
    let row = client
        .query_opt(
            "SELECT c.oid, c.reltuples::float8, c.relreplident::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&namespace, &name],
        )
        .await
        .map_err(sql_err)?
        .ok_or_else(|| CaptureError::TableNotFound {
            table: table.clone(),
        })?;
    let oid: u32 = row.get(0);
    let reltuples: f64 = row.get(1);
    let identity: String = row.get(2);
    // Key columns: the replica identity index if one is set, else the primary key.
    let columns = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                    a.attnum = ANY(COALESCE(( \
                        SELECT i.indkey::int2[] FROM pg_index i \
                        WHERE i.indrelid = a.attrelid \
                          AND (i.indisreplident OR (i.indisprimary AND NOT EXISTS ( \
                                SELECT 1 FROM pg_index j WHERE j.indrelid = a.attrelid AND j.indisreplident))) \
                        LIMIT 1), '{}'::int2[])) \
             FROM pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql_err)?;
    let columns: Vec<RelationColumn> = columns
        .iter()
        .map(|r| RelationColumn {
            flags: u8::from(r.get::<_, bool>(3)),
            name: r.get(0),
            type_oid: r.get(1),
            type_modifier: r.get(2),
        })
        .collect();
    let replica_identity = match identity.as_str() {
        "f" => ReplicaIdentity::Full,
        "n" => ReplicaIdentity::Nothing,
        "i" => ReplicaIdentity::Index,
        _ => ReplicaIdentity::Default,
    };
    Ok(TableInfo {
        oid,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        relation: Relation {
            xid: None,
            id: oid,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            replica_identity,
            columns,
        },
        estimated_rows: if reltuples > 0.0 { reltuples as u64 } else { 0 },
        analyzed: reltuples >= 0.0,
    })
}

/// One unit of snapshot work: a table, or a key range of it.
#[derive(Debug, Clone)]
struct Chunk {
    table: usize,
    /// `WHERE` clause restricting the key range, if the table is split.
    filter: Option<String>,
}

/// Plans chunks: a table with a single integer key and more than `chunk_rows` rows is split into
/// key ranges of about `chunk_rows` rows each.
async fn plan_chunks(
    client: &Client,
    tables: &[TableInfo],
    chunk_rows: u64,
) -> Result<Vec<Chunk>, CaptureError> {
    let mut chunks = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let keys: Vec<&RelationColumn> = table
            .relation
            .columns
            .iter()
            .filter(|c| c.is_key())
            .collect();
        let integer_key = matches!(keys.as_slice(), [k] if matches!(k.type_oid, 20 | 21 | 23));
        // A never-analyzed table has no estimate: split it by its key span instead.
        if !integer_key || (table.analyzed && table.estimated_rows <= chunk_rows) {
            chunks.push(Chunk {
                table: index,
                filter: None,
            });
            continue;
        }
        let key = quote_ident(&keys[0].name);
        let row = client
            .query_one(
                &format!(
                    "SELECT min({key})::int8, max({key})::int8 FROM {}",
                    table.quoted()
                ),
                &[],
            )
            .await
            .map_err(|e| CaptureError::Sql {
                what: format!(
                    "planning the snapshot of {}.{}",
                    table.namespace, table.name
                ),
                source: e,
            })?;
        let (Some(min), Some(max)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
        else {
            chunks.push(Chunk {
                table: index,
                filter: None,
            });
            continue;
        };
        let span = (i128::from(max) - i128::from(min) + 1).max(1);
        let rows = if table.analyzed {
            table.estimated_rows
        } else {
            u64::try_from(span).unwrap_or(u64::MAX)
        };
        let pieces = rows.div_ceil(chunk_rows).max(1);
        let step = (span / i128::from(pieces)).max(1);
        let mut low = i128::from(min);
        // First chunk is open below and last open above, so rows inserted outside [min, max]
        // before the snapshot point cannot be missed.
        let mut first = true;
        while low <= i128::from(max) {
            let high = low + step;
            let filter = if first && high > i128::from(max) {
                None
            } else if first {
                Some(format!("{key} < {high}"))
            } else if high > i128::from(max) {
                Some(format!("{key} >= {low}"))
            } else {
                Some(format!("{key} >= {low} AND {key} < {high}"))
            };
            chunks.push(Chunk {
                table: index,
                filter,
            });
            first = false;
            low = high;
        }
    }
    Ok(chunks)
}

/// What to read, and where from.
#[derive(Debug)]
pub struct SnapshotPlan<'a> {
    /// The database.
    pub url: &'a str,
    /// The snapshot the slot exported.
    pub snapshot_name: &'a str,
    /// The slot's consistent point: the snapshot's position.
    pub consistent_point: u64,
    /// The tables.
    pub tables: &'a [TableInfo],
    /// Topic and envelope naming.
    pub naming: &'a ServerNaming,
    /// Connections reading at once.
    pub parallelism: usize,
    /// Rows per key-range chunk.
    pub chunk_rows: u64,
}

/// Reads every table in the exported snapshot and publishes its rows. Returns the row count.
pub async fn run_snapshot(
    plan: &SnapshotPlan<'_>,
    sink: &EventSink,
    progress: &SnapshotProgress,
) -> Result<u64, CaptureError> {
    let SnapshotPlan {
        url,
        snapshot_name,
        consistent_point,
        tables,
        naming,
        parallelism,
        chunk_rows,
    } = *plan;
    let layouts: Vec<TableLayout> = tables
        .iter()
        .map(|t| TableLayout::new(&t.relation, naming))
        .collect::<Result<_, _>>()?;
    sink.ensure_topics(&layouts.iter().map(|l| l.topic.clone()).collect::<Vec<_>>())
        .await
        .map_err(CaptureError::Sink)?;
    for schema in layouts.iter().flat_map(TableLayout::writer_schemas) {
        sink.publish_schema(schema)
            .await
            .map_err(CaptureError::Sink)?;
    }

    let planner = connect_sql(url).await?;
    let chunks = plan_chunks(&planner.0, tables, chunk_rows).await?;
    drop(planner);
    progress.rows_estimated.store(
        tables.iter().map(|t| t.estimated_rows).sum(),
        Ordering::Relaxed,
    );
    progress
        .chunks_total
        .store(chunks.len() as u64, Ordering::Relaxed);
    tracing::info!(
        tables = tables.len(),
        chunks = chunks.len(),
        parallelism,
        snapshot = snapshot_name,
        "snapshot started"
    );

    let queue = Arc::new(Mutex::new(chunks.into_iter().collect::<VecDeque<_>>()));
    let commit_ts = now_micros();
    let workers = (0..parallelism.max(1)).map(|_| {
        let queue = Arc::clone(&queue);
        let layouts = &layouts;
        async move {
            let (client, _conn) = connect_sql(url).await?;
            client
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                     SET TRANSACTION SNAPSHOT '{}'",
                    snapshot_name.replace('\'', "''")
                ))
                .await
                .map_err(|e| CaptureError::Sql {
                    what: format!("importing snapshot {snapshot_name}"),
                    source: e,
                })?;
            let mut rows = 0u64;
            loop {
                let Some(chunk) = queue.lock().await.pop_front() else {
                    break;
                };
                rows += copy_chunk(
                    &client,
                    &tables[chunk.table],
                    &layouts[chunk.table],
                    chunk.filter.as_deref(),
                    naming,
                    consistent_point,
                    commit_ts,
                    sink,
                    progress,
                )
                .await?;
                progress.chunks_done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = client.batch_execute("COMMIT").await;
            Ok::<u64, CaptureError>(rows)
        }
    });
    let results = futures::future::join_all(workers).await;
    let mut total = 0;
    for result in results {
        total += result?;
    }
    tracing::info!(rows = total, "snapshot read");
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
async fn copy_chunk(
    client: &Client,
    table: &TableInfo,
    layout: &TableLayout,
    filter: Option<&str>,
    naming: &ServerNaming,
    consistent_point: u64,
    commit_ts: i64,
    sink: &EventSink,
    progress: &SnapshotProgress,
) -> Result<u64, CaptureError> {
    let columns: Vec<String> = layout
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let sql = format!(
        "COPY (SELECT {} FROM {}{}) TO STDOUT",
        columns.join(", "),
        table.quoted(),
        filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
    );
    let what = || {
        format!(
            "reading {}.{} for the snapshot",
            table.namespace, table.name
        )
    };
    let stream = client
        .copy_out(sql.as_str())
        .await
        .map_err(|e| CaptureError::Sql {
            what: what(),
            source: e,
        })?;
    futures::pin_mut!(stream);
    let source = EventSource {
        commit_ts_micros: commit_ts,
        snapshot: "true",
        tx_id: None,
        lsn: consistent_point,
        commit_lsn: consistent_point,
        last_commit_lsn: None,
        order: None,
    };
    let mut key = Vec::with_capacity(256);
    let mut value = Vec::with_capacity(4096);
    let mut fields: Vec<Option<Vec<u8>>> = Vec::with_capacity(layout.columns.len());
    let mut rows = 0u64;
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CaptureError::Sql {
            what: what(),
            source: e,
        })?;
        // A CopyData message holds whole lines (PostgreSQL sends one row per message).
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            parse_copy_line(&line[..line.len() - 1], &mut fields).map_err(|reason| {
                CaptureError::Snapshot {
                    table: layout.qualified_name(),
                    reason: format!("unreadable COPY row: {reason}"),
                }
            })?;
            let cells: Vec<Option<&[u8]>> = fields.iter().map(|f| f.as_deref()).collect();
            let row = Row::Text(&cells);
            envelope::encode_key(layout, row, &mut key)?;
            envelope::encode_value(
                layout,
                naming,
                Op::Read,
                None,
                Some(row),
                &source,
                &mut value,
            )?;
            sink.send(&layout.topic, Some(&key), &value)
                .await
                .map_err(CaptureError::Sink)?;
            rows += 1;
            progress.rows_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !pending.is_empty() {
        return Err(CaptureError::Snapshot {
            table: layout.qualified_name(),
            reason: "COPY output ended inside a row".into(),
        });
    }
    Ok(rows)
}

/// Splits one line of COPY's text format into fields (`\N` is NULL) and undoes its escapes.
pub fn parse_copy_line(line: &[u8], out: &mut Vec<Option<Vec<u8>>>) -> Result<(), String> {
    out.clear();
    for raw in line.split(|&b| b == b'\t') {
        if raw == b"\\N" {
            out.push(None);
            continue;
        }
        let mut field = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            if b != b'\\' {
                field.push(b);
                i += 1;
                continue;
            }
            let Some(&next) = raw.get(i + 1) else {
                return Err("line ends with a lone backslash".into());
            };
            i += 2;
            match next {
                b'b' => field.push(8),
                b'f' => field.push(12),
                b'n' => field.push(b'\n'),
                b'r' => field.push(b'\r'),
                b't' => field.push(b'\t'),
                b'v' => field.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(next - b'0');
                    let mut digits = 1;
                    while digits < 3 {
                        match raw.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                                digits += 1;
                            }
                            _ => break,
                        }
                    }
                    field.push((v & 0xff) as u8);
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut digits = 0;
                    while digits < 2 {
                        match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                v = v * 16 + d;
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    if digits == 0 {
                        field.push(b'x');
                    } else {
                        field.push(v as u8);
                    }
                }
                other => field.push(other),
            }
        }
        out.push(Some(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        parse_copy_line(line, &mut out).unwrap();
        out
    }

    #[test]
    fn copy_text_fields_nulls_and_escapes() {
        assert_eq!(
            parse(b"1\t\\N\ta\\tb\\nc\\\\d\t"),
            vec![
                Some(b"1".to_vec()),
                None,
                Some(b"a\tb\nc\\d".to_vec()),
                Some(Vec::new())
            ]
        );
        assert_eq!(parse(b"\\101\\x41\\x4"), vec![Some(b"AA\x04".to_vec())]);
        // A bytea in hex output form passes through with its backslash unescaped once.
        assert_eq!(parse(b"\\\\x00ff"), vec![Some(b"\\x00ff".to_vec())]);
    }

    #[test]
    fn a_lone_trailing_backslash_is_an_error() {
        let mut out = Vec::new();
        assert!(parse_copy_line(b"abc\\", &mut out).is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
