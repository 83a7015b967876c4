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
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, RecordBatch, RecordBatchOptions,
    StringArray, UInt32Array, new_null_array,
};
use arrow::compute::{SortColumn, interleave, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::error::ArrowError;
use strata_catalog::DigestHasher;
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
    /// `None`: not read, this run holds no copies of another's changes.
    id: Option<&'a FixedSizeBinaryArray>,
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
            id: match col(3) {
                ids if ids.null_count() == ids.len() => None,
                ids => Some(
                    ids.as_fixed_size_binary_opt()
                        .ok_or_else(|| bad(EVENT_ID_COLUMN))?,
                ),
            },
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
    in_key_ranges(runs, |part, cut, strict| {
        let Some(merged) = Merged::fold(part, output, cut, strict)? else {
            return Ok(None);
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(output.fields().len());
        for (j, field) in output.fields().iter().enumerate() {
            columns.push(merged.take(SYSTEM + j, field.data_type(), &merged.out.columns[j])?);
        }
        slice_batches(output, &columns, merged.out.live).map(Some)
    })
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
    in_key_ranges(runs, |part, cut, strict| {
        snapshot_rows(part, carried, segment, cut, strict)
    })
}

fn snapshot_rows(
    runs: &[Vec<RecordBatch>],
    carried: &SchemaRef,
    segment: &SchemaRef,
    cut: Option<(u64, u64)>,
    strict: bool,
) -> Result<Option<Vec<RecordBatch>>, ArrowError> {
    let Some(merged) = Merged::fold(runs, carried, cut, strict)? else {
        return Ok(None);
    };
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
    slice_batches(segment, &columns, live).map(Some)
}

/// Below this many rows the fold runs on one thread.
const PARALLEL_MIN_ROWS: usize = 256 * 1024;

/// A fold of one key range: (its runs, the latest truncate's position, strict) -> its rows, or
/// `None` when strict and a run turns out not to be sorted.
trait RangeFold:
    Fn(
        &[Vec<RecordBatch>],
        Option<(u64, u64)>,
        bool,
    ) -> Result<Option<Vec<RecordBatch>>, ArrowError>
    + Sync
{
}

impl<F> RangeFold for F where
    F: Fn(
            &[Vec<RecordBatch>],
            Option<(u64, u64)>,
            bool,
        ) -> Result<Option<Vec<RecordBatch>>, ArrowError>
        + Sync
{
}

/// Runs `fold` over disjoint key ranges of `runs` on all cores and concatenates the results in
/// key order. Every run is sliced at the same boundary keys (binary search: the runs are sorted
/// by key), so each key's whole history lands in one range. `fold` gets the latest truncate's
/// position (it hides earlier changes in every range) and `strict`: when a slice turns out not
/// to be sorted it returns `None`, and everything is folded again on one thread, where an
/// unsorted run is sorted in memory.
fn in_key_ranges<F: RangeFold>(
    runs: &[Vec<RecordBatch>],
    fold: F,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    in_key_ranges_on(runs, threads, PARALLEL_MIN_ROWS, fold)
}

fn in_key_ranges_on<F: RangeFold>(
    runs: &[Vec<RecordBatch>],
    threads: usize,
    min_rows: usize,
    fold: F,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let cut = truncate_cut(runs)?;
    let rows: usize = runs.iter().flatten().map(RecordBatch::num_rows).sum();
    if threads > 1 && rows >= min_rows {
        let ranges = split_by_key(runs, threads)?;
        if ranges.len() > 1 {
            let results: Vec<Result<Option<Vec<RecordBatch>>, ArrowError>> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = ranges
                        .iter()
                        .map(|part| scope.spawn(|| fold(part, cut, true)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(ArrowError::ComputeError("a merge thread panicked".into()))
                            })
                        })
                        .collect()
                });
            let mut out = Vec::new();
            let mut sorted = true;
            for result in results {
                match result? {
                    Some(batches) => out.extend(batches),
                    None => sorted = false,
                }
            }
            if sorted {
                return Ok(out);
            }
        }
    }
    fold(runs, cut, false).map(Option::unwrap_or_default)
}

/// `runs` cut into up to `n` key ranges: boundary keys at even quantiles of the largest run;
/// each range holds, per run, the batch slices with keys in `[lower, upper)`. A run whose
/// slices are not sorted is caught by the strict fold.
fn split_by_key(
    runs: &[Vec<RecordBatch>],
    n: usize,
) -> Result<Vec<Vec<Vec<RecordBatch>>>, ArrowError> {
    let keys = |b: &RecordBatch| -> Result<StringArray, ArrowError> {
        b.column(SYSTEM - 1)
            .as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| {
                ArrowError::SchemaError(format!("merge: `{KEY_COLUMN}` is not a string"))
            })
    };
    let Some(largest) = runs
        .iter()
        .max_by_key(|r| r.iter().map(RecordBatch::num_rows).sum::<usize>())
    else {
        return Ok(Vec::new());
    };
    let total: usize = largest.iter().map(RecordBatch::num_rows).sum();
    let mut bounds: Vec<String> = Vec::new();
    for i in 1..n {
        let mut at = total * i / n;
        for b in largest {
            if at < b.num_rows() {
                let key = keys(b)?.value(at).to_owned();
                if bounds.last().is_none_or(|last| *last < key) {
                    bounds.push(key);
                }
                break;
            }
            at -= b.num_rows();
        }
    }
    let mut ranges: Vec<Vec<Vec<RecordBatch>>> =
        vec![vec![Vec::new(); runs.len()]; bounds.len() + 1];
    for (r, run) in runs.iter().enumerate() {
        for batch in run.iter().filter(|b| b.num_rows() > 0) {
            let k = keys(batch)?;
            let mut start = 0;
            for (p, range) in ranges.iter_mut().enumerate() {
                let end = match bounds.get(p) {
                    Some(bound) => {
                        // First row at or after `start` whose key is >= bound.
                        let (mut lo, mut hi) = (start, batch.num_rows());
                        while lo < hi {
                            let mid = lo + (hi - lo) / 2;
                            if k.value(mid) < bound.as_str() {
                                lo = mid + 1;
                            } else {
                                hi = mid;
                            }
                        }
                        lo
                    }
                    None => batch.num_rows(),
                };
                if end > start {
                    range[r].push(batch.slice(start, end - start));
                }
                start = end;
            }
        }
    }
    Ok(ranges)
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
    /// `None` when `strict` and a run is not sorted.
    fn fold(
        runs: &'a [Vec<RecordBatch>],
        output: &SchemaRef,
        cut: Option<(u64, u64)>,
        strict: bool,
    ) -> Result<Option<Self>, ArrowError> {
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

        let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
        let out = loop {
            match fold(&chunks, &layout, cut, &names)? {
                Folded::Done(out) => break out,
                Folded::Unsorted(_) if strict => return Ok(None),
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
        Ok(Some(Self { batches, out }))
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
fn truncate_cut(runs: &[Vec<RecordBatch>]) -> Result<Option<(u64, u64)>, ArrowError> {
    let mut cut = None;
    for batch in runs.iter().flatten().filter(|b| b.num_rows() > 0) {
        let c = Chunk::new(batch)?;
        for (row, op) in c.op.iter().enumerate() {
            if op == Some("t") {
                cut = cut.max(Some((c.pos[row], c.seq[row])));
            }
        }
    }
    Ok(cut)
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
        let id = chunk.id.map(|ids| ids.value(row));
        if last_at == Some(at) {
            if id.is_some_and(|id| seen.contains(&id)) {
                continue;
            }
        } else {
            last_at = Some(at);
            seen.clear();
        }
        if let Some(id) = id {
            seen.push(id);
        }
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

/// The rows of `all` sorted by the columns `by` (ascending), each `_event_id` once (its first
/// row in that order); and how many repeated copies were dropped.
pub(crate) fn sort_unique(
    all: &RecordBatch,
    by: &[&str],
) -> Result<(RecordBatch, u64), ArrowError> {
    let schema = all.schema();
    let column = |name: &str| -> Result<ArrayRef, ArrowError> {
        Ok(Arc::clone(all.column(schema.index_of(name)?)))
    };
    let sort = by
        .iter()
        .map(|name| {
            Ok(SortColumn {
                values: column(name)?,
                options: None,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let order = lexsort_to_indices(&sort, None)?;
    let ids = column(EVENT_ID_COLUMN)?;
    let ids = ids
        .as_fixed_size_binary_opt()
        .ok_or_else(|| ArrowError::SchemaError(format!("`{EVENT_ID_COLUMN}` is not binary(32)")))?;
    let mut seen: HashSet<&[u8], DigestHasher> =
        HashSet::with_capacity_and_hasher(all.num_rows(), DigestHasher::default());
    let keep: UInt32Array = order
        .values()
        .iter()
        .copied()
        .filter(|&i| seen.insert(ids.value(i as usize)))
        .map(Some)
        .collect();
    let dropped = (all.num_rows() - keep.len()) as u64;
    Ok((take_record_batch(all, &keep)?, dropped))
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        FixedSizeBinaryBuilder, Int64Array, ListBuilder, StringBuilder, UInt64Array,
    };
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// (key, pos, op, value, unchanged value?)
    type Change = (String, u64, &'static str, i64, bool);

    fn batch(changes: &[Change]) -> RecordBatch {
        let mut ids = FixedSizeBinaryBuilder::new(32);
        let mut unchanged = ListBuilder::new(StringBuilder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, false)));
        for (key, pos, _, _, kept) in changes {
            let mut id = [0_u8; 32];
            id[..8].copy_from_slice(&pos.to_le_bytes());
            id[8..8 + key.len().min(24)].copy_from_slice(&key.as_bytes()[..key.len().min(24)]);
            ids.append_value(id).unwrap();
            if *kept {
                unchanged.values().append_value("v");
            }
            unchanged.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.2))),
            Arc::new(UInt64Array::from_iter_values(changes.iter().map(|c| c.1))),
            Arc::new(UInt64Array::from_iter_values(changes.iter().map(|_| 0))),
            Arc::new(ids.finish()),
            Arc::new(unchanged.finish()),
            Arc::new(StringArray::from_iter_values(
                changes.iter().map(|c| c.0.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.3))),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(input_fields())), columns).unwrap()
    }

    fn input_fields() -> Vec<Field> {
        let system = strata_catalog::schema::system_fields();
        let mut fields: Vec<Field> = MERGE_SYSTEM_COLUMNS
            .iter()
            .map(|name| system.iter().find(|f| f.name() == name).unwrap().clone())
            .collect();
        fields.push(Field::new("v", DataType::Int64, true));
        fields
    }

    /// A run: sorted by (key, pos), cut into batches of `chunk` rows.
    fn run(mut changes: Vec<Change>, chunk: usize) -> Vec<RecordBatch> {
        changes.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        changes.chunks(chunk).map(batch).collect()
    }

    fn history(seed: u64) -> Vec<Vec<RecordBatch>> {
        let mut x = seed;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut runs = Vec::new();
        for r in 0..6_u64 {
            let mut changes = Vec::new();
            for i in 0..3000_u64 {
                let key = format!("k{:05}", next(2000));
                let op = match next(10) {
                    0 => "d",
                    1 => "c",
                    _ => "u",
                };
                changes.push((
                    key,
                    r * 10_000 + i,
                    op,
                    (r * 10_000 + i) as i64,
                    next(4) == 0,
                ));
            }
            if r == 2 {
                changes.push((String::new(), r * 10_000 + 1500, "t", 0, false));
            }
            runs.push(run(changes, 700));
        }
        runs
    }

    fn state_on(runs: &[Vec<RecordBatch>], threads: usize) -> Vec<(String, Option<i64>)> {
        let output = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let batches = in_key_ranges_on(runs, threads, 0, |part, cut, strict| {
            let Some(merged) = Merged::fold(part, &output, cut, strict)? else {
                return Ok(None);
            };
            let keys = merged.take(SYSTEM - 1, &DataType::Utf8, &merged.out.last)?;
            let values = merged.take(SYSTEM, &DataType::Int64, &merged.out.columns[0])?;
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("v", DataType::Int64, true),
            ]));
            Ok(Some(vec![RecordBatch::try_new(
                schema,
                vec![keys, values],
            )?]))
        })
        .unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            let k = b.column(0).as_string::<i32>();
            let v = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                rows.push((k.value(i).to_owned(), (!v.is_null(i)).then(|| v.value(i))));
            }
        }
        rows
    }

    #[test]
    fn key_ranges_on_many_threads_fold_like_one() {
        for seed in [7, 99, 12345] {
            let runs = history(seed);
            let one = state_on(&runs, 1);
            assert!(one.len() > 100, "a live state");
            assert!(
                one.windows(2).all(|w| w[0].0 < w[1].0),
                "key order, each key once"
            );
            for threads in [2, 3, 8] {
                assert_eq!(
                    state_on(&runs, threads),
                    one,
                    "seed {seed}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn an_unsorted_run_falls_back_to_one_thread() {
        let mut runs = history(42);
        let expected = state_on(&runs, 1);
        // Reverse one run's batches: each batch stays sorted, the run does not.
        runs[3].reverse();
        assert_eq!(state_on(&runs, 4), expected);
    }
}
