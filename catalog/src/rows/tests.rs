use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, UInt64Type};

use super::*;
use crate::schema::{ColumnSchema, ColumnType, ConnectType};
use crate::table::TableId;

fn schema() -> Arc<TableSchema> {
    let column = |name: &str, connect| ColumnSchema {
        name: name.into(),
        column_type: ColumnType::plain(connect),
        optional: name != "id",
        key: name == "id",
    };
    Arc::new(TableSchema {
        table: TableId::new("s", "public", "t"),
        event_id_version: crate::EventIdVersion::CURRENT,
        columns: vec![
            column("id", ConnectType::Int64),
            column("note", ConnectType::String),
        ],
    })
}

fn row(id: i64, commit: u64, seq: u64, note: Option<&str>) -> SegmentRow<'_> {
    SegmentRow {
        op: Operation::Update,
        commit_ts_us: 1_000 + seq as i64,
        position: SourcePosition { commit, seq },
        tx_id: Some(Cow::Borrowed("77")),
        id: [seq as u8; 32],
        key: crate::event::encode_key(&std::iter::once(("id", serde_json::json!(id))).collect()),
        unchanged: if note.is_none() {
            vec!["note".into()]
        } else {
            vec![]
        },
        cells: vec![
            Cell::Int(id),
            note.map_or(Cell::Null, |n| Cell::Text(Cow::Borrowed(n))),
        ],
    }
}

#[test]
fn a_finished_segment_is_sorted_by_key_then_position_and_spans_its_rows() {
    let mut builder = SegmentBuilder::new(schema()).unwrap();
    // Arrival order: keys and positions mixed, as partitions interleave them.
    for r in [
        row(2, 50, 40, Some("b2")),
        row(1, 90, 90, None),
        row(-3, 20, 10, Some("c")),
        row(1, 30, 25, Some("a1")),
        row(2, 50, 45, Some("b3")),
    ] {
        builder.push(r).unwrap();
    }
    assert_eq!(builder.len(), 5);
    assert_eq!(builder.min_commit_ts(), Some(1_010));
    let (batch, span) = builder.finish_sorted().unwrap().unwrap();
    let ids: Vec<i64> = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let seqs: Vec<u64> = batch
        .column_by_name("_seq")
        .unwrap()
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec();
    assert_eq!(
        ids,
        [-3, 1, 1, 2, 2],
        "keys sort numerically, negatives first"
    );
    assert_eq!(seqs, [10, 25, 90, 40, 45], "then by position within a key");
    let notes = batch.column_by_name("note").unwrap().as_string::<i32>();
    assert_eq!(
        (0..5)
            .map(|i| notes.is_valid(i).then(|| notes.value(i)))
            .collect::<Vec<_>>(),
        [Some("c"), Some("a1"), None, Some("b2"), Some("b3")]
    );
    let unchanged = batch.column_by_name("_unchanged").unwrap().as_list::<i32>();
    assert_eq!(unchanged.value(2).as_string::<i32>().value(0), "note");
    assert_eq!(unchanged.value(0).len(), 0);
    assert_eq!(span.rows, 5);
    assert_eq!((span.min_commit_ts, span.max_commit_ts), (1_010, 1_090));
    assert_eq!(
        span.min_position,
        SourcePosition {
            commit: 20,
            seq: 10
        }
    );
    assert_eq!(
        span.max_position,
        SourcePosition {
            commit: 90,
            seq: 90
        }
    );
    assert!(span.min_key < span.max_key);
    assert_eq!(batch.schema(), schema().segment_schema().unwrap());
}

#[test]
fn a_row_that_does_not_fit_is_refused_whole() {
    let mut builder = SegmentBuilder::new(schema()).unwrap();
    builder.push(row(1, 1, 1, Some("ok"))).unwrap();
    let mut narrow = row(2, 2, 2, Some("x"));
    narrow.cells.pop();
    assert!(builder.push(narrow).is_err());
    let mut wrong = row(3, 3, 3, Some("x"));
    wrong.cells[1] = Cell::Int(5);
    let err = builder.push(wrong).unwrap_err();
    assert!(err.to_string().contains("note"), "{err}");
    assert_eq!(builder.len(), 1, "nothing of the refused rows was appended");
    let batch = builder.finish().unwrap();
    assert_eq!(batch.num_rows(), 1);
    assert!(
        SegmentBuilder::new(schema())
            .unwrap()
            .finish_sorted()
            .unwrap()
            .is_none(),
        "no rows, no segment"
    );
}

#[test]
fn the_segment_order_is_arrows_lexicographic_order() {
    use arrow::compute::{SortColumn, lexsort_to_indices};
    // Keys that sort differently as numbers and as text (negative, wide), repeated keys with
    // distinct positions, arriving shuffled.
    let mut rows = Vec::new();
    for i in 0..600_u64 {
        let id = [(-3_i64), 7, 70, -70_000, i64::MAX, 0][(i * 7 % 6) as usize];
        let commit = (i * 7919) % 97;
        rows.push(row(id, commit, i, Some("n")));
    }
    let mut builder = SegmentBuilder::new(schema()).unwrap();
    for r in rows {
        builder.push(r).unwrap();
    }
    let batch = builder.finish().unwrap();
    let columns: Vec<SortColumn> = [
        crate::schema::KEY_COLUMN,
        crate::schema::COMMIT_POS_COLUMN,
        crate::schema::SEQ_COLUMN,
    ]
    .iter()
    .map(|name| SortColumn {
        values: Arc::clone(batch.column_by_name(name).unwrap()),
        options: None,
    })
    .collect();
    let arrow_order = lexsort_to_indices(&columns, None).unwrap();
    let order: Vec<u32> = sort_order(&[(&batch, None)])
        .unwrap()
        .into_iter()
        .map(|(b, i)| {
            assert_eq!(b, 0);
            i as u32
        })
        .collect();
    assert_eq!(order, arrow_order.values().to_vec());
}

/// What a segment batch holds, row by row: (id, commit position, seq, note).
fn contents(batch: &RecordBatch) -> Vec<(i64, u64, u64, Option<String>)> {
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let commit = batch
        .column_by_name(crate::schema::COMMIT_POS_COLUMN)
        .unwrap()
        .as_primitive::<UInt64Type>();
    let seq = batch
        .column_by_name(crate::schema::SEQ_COLUMN)
        .unwrap()
        .as_primitive::<UInt64Type>();
    let notes = batch.column_by_name("note").unwrap().as_string::<i32>();
    (0..batch.num_rows())
        .map(|i| {
            (
                ids.value(i),
                commit.value(i),
                seq.value(i),
                notes.is_valid(i).then(|| notes.value(i).to_owned()),
            )
        })
        .collect()
}

/// Rows dealt to three builders, some retracted, finished with `threads` threads.
fn side_by_side_builders_finish_sorted(threads: usize) {
    // Rows dealt to three builders; some retracted after they were appended.
    let all: Vec<(i64, u64, u64)> = (0..90_u64)
        .map(|i| ([5_i64, -2, 40, 7][(i % 4) as usize], (i * 31) % 53, i))
        .collect();
    let mut builders: Vec<SegmentBuilder> = (0..3)
        .map(|_| SegmentBuilder::new(schema()).unwrap())
        .collect();
    let mut expected = Vec::new();
    for (n, &(id, commit, seq)) in all.iter().enumerate() {
        let b = &mut builders[n % 3];
        b.push(row(id, commit, seq, Some("n"))).unwrap();
        if seq % 5 == 0 {
            b.retract(b.len() - 1);
        } else {
            expected.push((id, commit, seq, Some("n".to_owned())));
        }
    }
    // Retracting twice, or a row that is not there, changes nothing.
    builders[0].retract(0);
    builders[0].retract(10_000);
    assert_eq!(
        builders.iter().map(SegmentBuilder::rows).sum::<usize>(),
        expected.len()
    );
    let key = |id: i64| {
        crate::event::encode_key(&std::iter::once(("id", serde_json::json!(id))).collect())
    };
    expected.sort_by_key(|a| (key(a.0), a.1, a.2));
    let min_ts = builders
        .iter()
        .filter_map(SegmentBuilder::min_commit_ts)
        .min();
    assert_eq!(
        min_ts,
        Some(1_001),
        "seq 0 is retracted: the earliest kept is seq 1"
    );

    let (batch, span) = SegmentBuilder::finish_sorted_many(builders, threads)
        .unwrap()
        .unwrap();
    assert_eq!(contents(&batch), expected);
    assert_eq!(span.rows, expected.len());
    assert_eq!((span.min_commit_ts, span.max_commit_ts), (1_001, 1_089));
    assert_eq!(span.min_key, key(expected[0].0));
    assert_eq!(span.max_key, key(expected[expected.len() - 1].0));
}

#[test]
fn builders_side_by_side_finish_as_one_segment_without_their_retracted_rows() {
    for threads in [1, 3] {
        side_by_side_builders_finish_sorted(threads);
    }

    // All retracted: no segment.
    let mut b = SegmentBuilder::new(schema()).unwrap();
    b.push(row(1, 1, 1, None)).unwrap();
    b.retract(0);
    assert!(
        SegmentBuilder::finish_sorted_many(vec![b, SegmentBuilder::new(schema()).unwrap()], 2)
            .unwrap()
            .is_none()
    );

    // Builders of two schemas do not make one segment.
    let mut wide = (*schema()).clone();
    wide.columns.push(ColumnSchema {
        name: "extra".into(),
        column_type: ColumnType::plain(ConnectType::Int32),
        optional: true,
        key: false,
    });
    let err = SegmentBuilder::finish_sorted_many(
        vec![
            SegmentBuilder::new(schema()).unwrap(),
            SegmentBuilder::new(Arc::new(wide)).unwrap(),
        ],
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("two schemas"), "{err}");
}

#[test]
fn segments_encoded_on_several_threads_are_the_same_bytes() {
    let mut builder = SegmentBuilder::new(schema()).unwrap();
    for i in 0..1_000_u64 {
        let note = format!("note {}", i % 37);
        let note = (i % 5 != 0).then_some(note.as_str());
        builder
            .push(row((i * 7919 % 211) as i64, i / 3, i, note).into_owned())
            .unwrap();
    }
    let (batch, _) = builder.finish_sorted().unwrap().unwrap();
    let one = crate::schema::encode_segment(&batch, 3, 300).unwrap();
    for threads in [1, 2, 3, 64] {
        let many = crate::schema::encode_segment_parallel(&batch, 3, 300, threads).unwrap();
        assert!(one == many, "{threads} threads wrote other bytes");
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(one),
    )
    .unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 4);
    let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let read = arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
    assert_eq!(read, batch);
}

/// The columns with (nearly) a new value every row (event id, commit position, seq) are written
/// without a dictionary; the others keep theirs (a note repeats, and so does the transaction id).
#[test]
fn distinct_system_columns_are_written_without_a_dictionary() {
    let mut builder = SegmentBuilder::new(schema()).unwrap();
    for i in 0..1_000_u64 {
        let note = format!("note {}", i % 37);
        builder
            .push(row(i as i64, i / 3, i, Some(note.as_str())).into_owned())
            .unwrap();
    }
    let (batch, _) = builder.finish_sorted().unwrap().unwrap();
    let bytes = crate::schema::encode_segment(&batch, 3, 300).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap();
    let group = reader.metadata().row_group(0);
    let with_dictionary: Vec<&str> = group
        .columns()
        .iter()
        .filter(|c| c.dictionary_page_offset().is_some())
        .map(|c| c.column_path().parts()[0].as_str())
        .collect();
    for name in [
        crate::schema::EVENT_ID_COLUMN,
        crate::schema::COMMIT_POS_COLUMN,
        crate::schema::SEQ_COLUMN,
    ] {
        assert!(
            !with_dictionary.contains(&name),
            "{name}: {with_dictionary:?}"
        );
    }
    for name in ["note", crate::schema::TX_ID_COLUMN] {
        assert!(
            with_dictionary.contains(&name),
            "{name}: {with_dictionary:?}"
        );
    }
    let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let read = arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
    assert_eq!(read, batch);
}

proptest::proptest! {
    /// Over keys that share prefixes, are prefixes of each other and differ only far in: the
    /// order is that of (key bytes, commit position, seq), ties by batch and row.
    #[test]
    fn the_sort_order_is_the_order_of_the_keys_then_the_positions(
        rows in proptest::collection::vec(("pp[ab\u{1}]{0,14}", 0_u64..3, 0_u64..3), 1..80),
        cut in 0_usize..80,
        dropped in proptest::collection::vec(proptest::bool::weighted(0.2), 80),
    ) {
        let batch = |rows: &[(String, u64, u64)]| {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![
                Field::new(crate::schema::KEY_COLUMN, DataType::Utf8, false),
                Field::new(crate::schema::COMMIT_POS_COLUMN, DataType::UInt64, false),
                Field::new(crate::schema::SEQ_COLUMN, DataType::UInt64, false),
            ]));
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(arrow::array::StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                    Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
                ],
            )
            .unwrap()
        };
        let cut = cut.min(rows.len());
        let parts = [&rows[..cut], &rows[cut..]];
        let batches: Vec<RecordBatch> = parts.iter().map(|p| batch(p)).collect();
        let keeps: Vec<Vec<bool>> = parts
            .iter()
            .enumerate()
            .map(|(b, p)| (0..p.len()).map(|i| !dropped[b * cut + i]).collect())
            .collect();
        let refs: Vec<(&RecordBatch, Option<&[bool]>)> = batches
            .iter()
            .zip(&keeps)
            .map(|(b, k)| (b, Some(k.as_slice())))
            .collect();
        let mut expected: Vec<(&[u8], u64, u64, usize, usize)> = Vec::new();
        for (b, p) in parts.iter().enumerate() {
            for (i, r) in p.iter().enumerate() {
                if keeps[b][i] {
                    expected.push((r.0.as_bytes(), r.1, r.2, b, i));
                }
            }
        }
        expected.sort();
        let expected: Vec<(usize, usize)> = expected.into_iter().map(|(.., b, i)| (b, i)).collect();
        proptest::prop_assert_eq!(sort_order(&refs).unwrap(), expected);
    }
}

proptest::proptest! {
    /// The gather of `_event_id`'s fixed-size binary and of booleans, with and without nulls,
    /// from several arrays (one of them sliced), is arrow's `interleave`.
    #[test]
    fn gathering_fixed_size_binary_and_booleans_is_interleaving(
        cells in proptest::collection::vec(proptest::option::weighted(0.8, 0_u8..=255), 3..60),
        picks in proptest::collection::vec((0_usize..3, 0_usize..1000), 0..120),
        nullable in proptest::bool::ANY,
    ) {
        use arrow::array::{BooleanArray, FixedSizeBinaryArray};
        let cells: Vec<Option<u8>> = if nullable {
            cells
        } else {
            cells.into_iter().map(|c| Some(c.unwrap_or(0))).collect()
        };
        let thirds: Vec<&[Option<u8>]> = cells.chunks(cells.len().div_ceil(3)).collect();
        let ids: Vec<ArrayRef> = thirds
            .iter()
            .map(|t| {
                let values = t.iter().map(|c| c.map(|b| [b, b ^ 0x5a, 7, b]));
                Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size(values, 4).unwrap())
                    as ArrayRef
            })
            .collect();
        let flags: Vec<ArrayRef> = thirds
            .iter()
            .map(|t| {
                Arc::new(BooleanArray::from_iter(t.iter().map(|c| c.map(|b| b % 3 == 0))))
                    as ArrayRef
            })
            .collect();
        // One array sliced: its rows start at an offset into its buffers.
        let sliced = |arrays: &[ArrayRef]| -> Vec<ArrayRef> {
            arrays
                .iter()
                .enumerate()
                .map(|(i, a)| if i == 1 && a.len() > 1 { a.slice(1, a.len() - 1) } else { Arc::clone(a) })
                .collect()
        };
        for arrays in [sliced(&ids), sliced(&flags)] {
            let sources: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            let order: Vec<(usize, usize)> = picks
                .iter()
                .filter(|(a, _)| *a < sources.len() && !sources[*a].is_empty())
                .map(|&(a, i)| (a, i % sources[a].len()))
                .collect();
            let ours = gather(&sources, &order).unwrap();
            let arrows = interleave(&sources, &order).unwrap();
            proptest::prop_assert_eq!(ours.as_ref(), arrows.as_ref());
            proptest::prop_assert_eq!(ours.null_count(), arrows.null_count());
        }
    }
}
