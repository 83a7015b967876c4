//! Merge-on-read: the state of a table from its change segments.
//!
//! Each segment is sorted by (`_key`, `_commit_pos`, `_seq`), so the segments are merged
//! k-way (a heap of one cursor per segment) into one stream ordered by key, then position.
//! Per key the changes are folded in position order:
//!
//! - `c`, `u`, `r` write the row; a column listed in `_unchanged` keeps the value of the
//!   previous change of that key (NULL when there is none);
//! - `d` hides the row;
//! - `t` (truncate, empty key) hides every row of the table with an earlier position: the
//!   fold ignores every change positioned before the latest truncate;
//! - copies of one change (same `_event_id`; they share key and position) count once.
//!
//! A segment that turns out not to be sorted is sorted in memory and the merge restarts,
//! so an out-of-order file costs time, never correctness.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, RecordBatch, RecordBatchOptions,
    StringArray, new_null_array,
};
use arrow::compute::interleave;
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::error::ArrowError;
use strata_catalog::schema::{
    COMMIT_POS_COLUMN, COMMIT_TS_COLUMN, EVENT_ID_COLUMN, KEY_COLUMN, OP_COLUMN, SEQ_COLUMN,
    TX_ID_COLUMN, UNCHANGED_COLUMN,
};

/// The system columns the merge reads, in the order it expects them.
pub(crate) const MERGE_SYSTEM_COLUMNS: [&str; 6] = [
    OP_COLUMN,
    COMMIT_POS_COLUMN,
    SEQ_COLUMN,
    EVENT_ID_COLUMN,
    UNCHANGED_COLUMN,
    KEY_COLUMN,
];
const SYSTEM: usize = MERGE_SYSTEM_COLUMNS.len();

/// Rows per output batch.
const OUTPUT_ROWS: usize = 8192;

/// One read batch, its system columns typed.
struct Chunk<'a> {
    op: &'a StringArray,
    pos: &'a [u64],
    seq: &'a [u64],
    id: &'a FixedSizeBinaryArray,
    unchanged: &'a ListArray,
    unchanged_names: &'a StringArray,
    key: &'a StringArray,
}

impl<'a> Chunk<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        let bad = |name: &str| {
            ArrowError::SchemaError(format!("merge: column `{name}` missing or mistyped"))
        };
        let col = |i: usize| batch.column(i);
        let unchanged = col(4)
            .as_list_opt::<i32>()
            .ok_or_else(|| bad(UNCHANGED_COLUMN))?;
        Ok(Self {
            op: col(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(OP_COLUMN))?,
            pos: col(1)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad(COMMIT_POS_COLUMN))?
                .values(),
            seq: col(2)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad(SEQ_COLUMN))?
                .values(),
            id: col(3)
                .as_fixed_size_binary_opt()
                .ok_or_else(|| bad(EVENT_ID_COLUMN))?,
            unchanged,
            unchanged_names: unchanged
                .values()
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(UNCHANGED_COLUMN))?,
            key: col(5)
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(KEY_COLUMN))?,
        })
    }

    fn order(&self, row: usize) -> (&'a str, u64, u64) {
        (self.key.value(row), self.pos[row], self.seq[row])
    }
}

/// A heap entry: the head of one run.
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    key: &'a str,
    pos: u64,
    seq: u64,
    run: usize,
    /// Index into the run's row order.
    at: usize,
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        (other.key, other.pos, other.seq, other.run).cmp(&(self.key, self.pos, self.seq, self.run))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a value comes from: (chunk, row); `(chunks.len(), 0)` is NULL.
type Loc = (usize, usize);

/// A run: its rows in (key, position) order.
struct Run {
    /// (chunk, row) in order; `None` = the chunks' natural order is sorted.
    order: Option<Vec<Loc>>,
    chunks: std::ops::Range<usize>,
    rows: usize,
}

/// Folds `runs` (one per segment; batches of [`MERGE_SYSTEM_COLUMNS`] then the table
/// columns of `output`) into the state: one row per live key, columns of `output`.
pub(crate) fn merge_state(
    runs: &[Vec<RecordBatch>],
    output: &SchemaRef,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let merged = Merged::fold(runs, output)?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(output.fields().len());
    for (j, field) in output.fields().iter().enumerate() {
        columns.push(merged.take(SYSTEM + j, field.data_type(), &merged.out.columns[j])?);
    }
    slice_batches(output, &columns, merged.out.live)
}

/// Folds `runs` like [`merge_state`] into the rows of a snapshot: the change-segment schema
/// `segment` (system columns, then table columns), one row per live key in key order. A
/// row's system columns are those of the last change that wrote it, with `_op` = `r` and
/// no unchanged columns: a snapshot row is a full image. `runs` carry
/// [`MERGE_SYSTEM_COLUMNS`], then `_commit_ts`, `_tx_id`, then the table columns.
pub(crate) fn merge_snapshot(
    runs: &[Vec<RecordBatch>],
    carried: &SchemaRef,
    segment: &SchemaRef,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let merged = Merged::fold(runs, carried)?;
    let live = merged.out.live;
    let index = |name: &str| MERGE_SYSTEM_COLUMNS.iter().position(|c| *c == name);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(segment.fields().len());
    for field in segment.fields() {
        let name = field.name().as_str();
        let column = if name == OP_COLUMN {
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "r", live,
            ))) as ArrayRef
        } else if name == UNCHANGED_COLUMN {
            let item = match field.data_type() {
                arrow::datatypes::DataType::List(item) => Arc::clone(item),
                other => {
                    return Err(ArrowError::SchemaError(format!(
                        "snapshot: `{UNCHANGED_COLUMN}` is {other}, expected a list"
                    )));
                }
            };
            Arc::new(ListArray::new(
                item,
                arrow::buffer::OffsetBuffer::new_zeroed(live),
                new_null_array(&arrow::datatypes::DataType::Utf8, 0),
                None,
            )) as ArrayRef
        } else if let Some(i) = index(name) {
            merged.take(i, field.data_type(), &merged.out.last)?
        } else {
            let j = carried.index_of(name)?;
            // `_commit_ts`, `_tx_id`: the last write's; table columns: per column.
            let locs = if name == COMMIT_TS_COLUMN || name == TX_ID_COLUMN {
                &merged.out.last
            } else {
                &merged.out.columns[j]
            };
            merged.take(SYSTEM + j, field.data_type(), locs)?
        };
        columns.push(column);
    }
    slice_batches(segment, &columns, live)
}

fn slice_batches(
    schema: &SchemaRef,
    columns: &[ArrayRef],
    live: usize,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut result = Vec::with_capacity(live.div_ceil(OUTPUT_ROWS));
    let mut offset = 0;
    while offset < live {
        let len = OUTPUT_ROWS.min(live - offset);
        let sliced = columns.iter().map(|c| c.slice(offset, len)).collect();
        result.push(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            sliced,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )?);
        offset += len;
    }
    Ok(result)
}

/// The fold of some runs: the read batches and, per live key, where each value comes from.
struct Merged<'a> {
    batches: Vec<&'a RecordBatch>,
    out: Output,
}

impl<'a> Merged<'a> {
    fn fold(runs: &'a [Vec<RecordBatch>], output: &SchemaRef) -> Result<Self, ArrowError> {
        let batches: Vec<&RecordBatch> =
            runs.iter().flatten().filter(|b| b.num_rows() > 0).collect();
        let chunks: Vec<Chunk<'_>> = batches
            .iter()
            .map(|b| Chunk::new(b))
            .collect::<Result<_, _>>()?;
        let mut layout = Vec::new();
        let mut next = 0;
        for run in runs {
            let n = run.iter().filter(|b| b.num_rows() > 0).count();
            let rows = run.iter().map(RecordBatch::num_rows).sum();
            layout.push(Run {
                order: None,
                chunks: next..next + n,
                rows,
            });
            next += n;
        }

        let cut = truncate_cut(&chunks);
        let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
        let out = loop {
            match fold(&chunks, &layout, cut, &names)? {
                Folded::Done(out) => break out,
                Folded::Unsorted(run) => {
                    let r = &mut layout[run];
                    let mut order: Vec<Loc> = r
                        .chunks
                        .clone()
                        .flat_map(|c| (0..chunks[c].key.len()).map(move |row| (c, row)))
                        .collect();
                    order.sort_by(|a, b| chunks[a.0].order(a.1).cmp(&chunks[b.0].order(b.1)));
                    r.order = Some(order);
                }
            }
        };

        drop(chunks);
        Ok(Self { batches, out })
    }

    /// Column `index` of the read batches, gathered at `locs` (the NULL location is NULL).
    fn take(
        &self,
        index: usize,
        data_type: &arrow::datatypes::DataType,
        locs: &[Loc],
    ) -> Result<ArrayRef, ArrowError> {
        let null = new_null_array(data_type, 1);
        let mut sources: Vec<&dyn Array> = self
            .batches
            .iter()
            .map(|b| b.column(index).as_ref())
            .collect();
        sources.push(null.as_ref());
        interleave(&sources, locs)
    }
}

/// The position of the latest truncate: changes before it are gone.
fn truncate_cut(chunks: &[Chunk<'_>]) -> Option<(u64, u64)> {
    let mut cut = None;
    for c in chunks {
        for (row, op) in c.op.iter().enumerate() {
            if op == Some("t") {
                let at = (c.pos[row], c.seq[row]);
                cut = cut.max(Some(at));
            }
        }
    }
    cut
}

struct Output {
    live: usize,
    /// Per output column, the source of each live row's value.
    columns: Vec<Vec<Loc>>,
    /// Per live row, the last change that wrote it.
    last: Vec<Loc>,
}

enum Folded {
    Done(Output),
    Unsorted(usize),
}

fn fold(
    chunks: &[Chunk<'_>],
    runs: &[Run],
    cut: Option<(u64, u64)>,
    names: &[&str],
) -> Result<Folded, ArrowError> {
    let null: Loc = (chunks.len(), 0);
    let loc_of = |run: &Run, at: usize| -> Loc {
        match &run.order {
            Some(order) => order[at],
            None => {
                // Natural order: walk the chunks.
                let mut at = at;
                for c in run.chunks.clone() {
                    let n = chunks[c].key.len();
                    if at < n {
                        return (c, at);
                    }
                    at -= n;
                }
                null
            }
        }
    };
    // Cursors over naturally ordered runs: (chunk, row) advanced incrementally.
    let mut cursors: Vec<Loc> = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let loc = if run.rows > 0 { loc_of(run, 0) } else { null };
        cursors.push(loc);
        if run.rows > 0 {
            let (key, pos, seq) = chunks[loc.0].order(loc.1);
            heap.push(Head {
                key,
                pos,
                seq,
                run: i,
                at: 0,
            });
        }
    }

    let width = names.len();
    let mut out = Output {
        live: 0,
        columns: vec![Vec::new(); width],
        last: Vec::new(),
    };
    let mut writer: Loc = null;
    let mut current: Option<&str> = None;
    let mut live = false;
    let mut cols: Vec<Loc> = vec![null; width];
    let mut last_at: Option<(u64, u64)> = None;
    let mut seen: Vec<&[u8]> = Vec::new();

    while let Some(head) = heap.pop() {
        let run = &runs[head.run];
        let (c, row) = cursors[head.run];
        // Advance this run.
        let next_at = head.at + 1;
        if next_at < run.rows {
            let loc = match &run.order {
                Some(order) => order[next_at],
                None if row + 1 < chunks[c].key.len() => (c, row + 1),
                None => (c + 1..run.chunks.end)
                    .find(|&c| chunks[c].key.len() > 0)
                    .map_or(null, |c| (c, 0)),
            };
            cursors[head.run] = loc;
            let (key, pos, seq) = chunks[loc.0].order(loc.1);
            if (key, pos, seq) < (head.key, head.pos, head.seq) {
                return Ok(Folded::Unsorted(head.run));
            }
            heap.push(Head {
                key,
                pos,
                seq,
                run: head.run,
                at: next_at,
            });
        }

        let chunk = &chunks[c];
        if current != Some(head.key) {
            if live {
                emit(&mut out, &cols, writer);
            }
            current = Some(head.key);
            live = false;
            cols.fill(null);
            last_at = None;
            seen.clear();
        }
        let op = chunk.op.value(row);
        let at = (head.pos, head.seq);
        if op == "t" || cut.is_some_and(|cut| at < cut) {
            continue;
        }
        // Copies of one change share key and position: dedup by event id among them.
        let id = chunk.id.value(row);
        if last_at == Some(at) {
            if seen.contains(&id) {
                continue;
            }
        } else {
            last_at = Some(at);
            seen.clear();
        }
        seen.push(id);
        match op {
            "d" => live = false,
            "c" | "u" | "r" => {
                let offsets = chunk.unchanged.value_offsets();
                let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                if from == to {
                    cols.fill((c, row));
                } else {
                    for (j, name) in names.iter().enumerate() {
                        let kept = (from..to).any(|u| chunk.unchanged_names.value(u) == *name);
                        if !kept {
                            cols[j] = (c, row);
                        } else if !live {
                            cols[j] = null;
                        }
                    }
                }
                live = true;
                writer = (c, row);
            }
            other => {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "unknown operation `{other}` for key {:?} at position {}/{}",
                    head.key, head.pos, head.seq
                )));
            }
        }
    }
    if live {
        emit(&mut out, &cols, writer);
    }
    Ok(Folded::Done(out))
}

fn emit(out: &mut Output, cols: &[Loc], writer: Loc) {
    out.live += 1;
    out.last.push(writer);
    for (column, loc) in out.columns.iter_mut().zip(cols) {
        column.push(*loc);
    }
}
