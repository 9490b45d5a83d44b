//! Round trips and damage: every column type, nulls, and files that were cut short,
//! carry the wrong magic, or have a byte flipped inside any column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{Field, Schema};
use proptest::prelude::*;

use super::*;
use crate::id::{Interval, SegmentId};

fn id() -> SegmentId {
    SegmentId {
        datasource: "events".into(),
        interval: Interval::parse("2024-01-01/2024-01-02").unwrap(),
        version: "v1".into(),
        partition: 0,
    }
}

const DAY_START: i64 = 1_704_067_200_000;

fn utc(values: Vec<Option<i64>>) -> TimestampMillisecondArray {
    TimestampMillisecondArray::from(values).with_timezone("UTC")
}

fn sample_batch() -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "__time",
            Arc::new(utc((0..5).map(|i| Some(DAY_START + i * 1000)).collect())),
        ),
        (
            "country",
            Arc::new(StringArray::from(vec![
                Some("nl"),
                None,
                Some("de"),
                Some("nl"),
                Some(""),
            ])),
        ),
        (
            "clicks",
            Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                Some(-3),
                Some(i64::MAX),
                Some(0),
            ])),
        ),
        (
            "price",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(f64::NAN),
                None,
                Some(-0.0),
                Some(1e300),
            ])),
        ),
        (
            "ratio",
            Arc::new(Float32Array::from(vec![
                None,
                Some(0.25),
                Some(1.0),
                None,
                Some(-2.5),
            ])),
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![
                Some(19723),
                None,
                Some(0),
                Some(-1),
                Some(20000),
            ])),
        ),
        (
            "seen",
            Arc::new(utc(vec![Some(5), Some(-5), None, Some(DAY_START), Some(0)])),
        ),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), *name != "__time"))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn roles(batch: &RecordBatch) -> Vec<ColumnRole> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == TIME_COLUMN {
                ColumnRole::Time
            } else {
                ColumnRole::Dimension
            }
        })
        .collect()
}

fn write(dir: &tempfile::TempDir, batch: &RecordBatch) -> std::path::PathBuf {
    let path = dir.path().join("s.grove");
    write_segment(&path, &id(), batch, &roles(batch)).unwrap();
    path
}

/// Arrays as they read back: strings become dictionaries, timestamps carry UTC.
fn expected(array: &ArrayRef, kind: ColumnKind) -> ArrayRef {
    cast(array, &kind.data_type()).unwrap()
}

fn assert_round_trip(batch: &RecordBatch) {
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::open(&write(&dir, batch)).unwrap();
    assert_eq!(segment.num_rows(), batch.num_rows());
    segment.verify().unwrap();
    for (i, column) in segment.footer().columns.iter().enumerate() {
        let got = segment.column(i).unwrap();
        let want = expected(batch.column(i), column.kind);
        assert_eq!(&got, &want, "column {}", column.name);
    }
}

#[test]
fn every_type_and_null_round_trips() {
    let batch = sample_batch();
    assert_round_trip(&batch);
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::open(&write(&dir, &batch)).unwrap();
    let kinds: Vec<_> = segment.footer().columns.iter().map(|c| c.kind).collect();
    use ColumnKind::*;
    assert_eq!(kinds, [Time, String, Long, Double, Float, Date, Timestamp]);
    let country = &segment.footer().columns[1];
    assert_eq!(country.null_count, 1);
    assert_eq!(country.min, Some(Stat::Str(std::string::String::new())));
    assert_eq!(country.max, Some(Stat::Str("nl".into())));
    assert_eq!(
        segment.footer().columns[3].max,
        None,
        "with a NaN, no bounds are recorded"
    );
    assert_eq!(segment.footer().columns[4].max, Some(Stat::Float(1.0)));
}

#[test]
fn bitmap_index_finds_rows_by_value_and_null() {
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::open(&write(&dir, &sample_batch())).unwrap();
    let index = segment
        .string_index(1)
        .unwrap()
        .expect("string column has an index");
    assert_eq!(
        index.dictionary().iter().flatten().collect::<Vec<_>>(),
        ["", "de", "nl"]
    );
    let nl = index.lookup("nl").unwrap();
    assert_eq!(
        index.rows_of(nl).unwrap().iter().collect::<Vec<_>>(),
        [0, 3]
    );
    assert_eq!(index.null_rows().unwrap().iter().collect::<Vec<_>>(), [1]);
    assert_eq!(index.lookup("fr"), None);
    assert!(segment.string_index(2).unwrap().is_none());
}

#[test]
fn time_range_is_a_binary_search() {
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::open(&write(&dir, &sample_batch())).unwrap();
    let rows = segment
        .rows_in(&Interval {
            start: DAY_START + 1000,
            end: DAY_START + 3000,
        })
        .unwrap();
    assert_eq!(rows, 1..3);
    let batch = segment.read(&[0, 2], rows).unwrap();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(batch.schema().field(1).name(), "clicks");
    let none = segment.rows_in(&Interval { start: 0, end: 10 }).unwrap();
    assert!(none.is_empty());
}

#[test]
fn unsorted_time_is_refused_by_the_writer() {
    let mut columns = sample_batch().columns().to_vec();
    columns[0] = Arc::new(utc(vec![
        Some(DAY_START + 5),
        Some(DAY_START),
        Some(DAY_START),
        Some(DAY_START),
        Some(DAY_START),
    ]));
    let batch = RecordBatch::try_new(sample_batch().schema(), columns).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = write_segment(&dir.path().join("x"), &id(), &batch, &roles(&batch)).unwrap_err();
    assert!(err.to_string().contains("sorted by __time"), "{err}");
}

fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.grove");
    std::fs::write(&path, bytes).unwrap();
    match Segment::open(&path).and_then(|s| s.verify().map(|_| s)) {
        Ok(_) => panic!("a damaged file was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(write(&dir, &sample_batch())).unwrap();
    for len in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = open_err(&bytes[..len]);
        assert!(
            err.contains("corrupt") && (err.contains("truncated") || err.contains("magic")),
            "{len}: {err}"
        );
    }
}

#[test]
fn wrong_magic_and_version_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(write(&dir, &sample_batch())).unwrap();
    bytes[0] = b'X';
    assert!(open_err(&bytes).contains("wrong magic"));
    bytes[0] = MAGIC[0];
    bytes[8] = 9;
    assert!(open_err(&bytes).contains("format version 9"));
}

#[test]
fn a_flipped_byte_in_any_column_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &sample_batch());
    let bytes = std::fs::read(&path).unwrap();
    let footer = Segment::open(&path).unwrap().footer().clone();
    for column in &footer.columns {
        let (start, len) = (column.region.offset as usize, column.region.len as usize);
        for at in [start, start + len / 2, start + len - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("d.grove");
            std::fs::write(&p, &damaged).unwrap();
            let segment = Segment::open(&p).expect("the footer is intact");
            let index = footer.column_index(&column.name).unwrap();
            let err = segment.column(index).unwrap_err().to_string();
            assert!(
                err.contains("checksum mismatch") && err.contains(&column.name),
                "{err}"
            );
            for other in (0..footer.columns.len()).filter(|i| *i != index) {
                segment.column(other).expect("other columns still read");
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_the_footer_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(write(&dir, &sample_batch())).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    assert!(open_err(&bytes).contains("footer"));
}

fn arb_table() -> impl Strategy<Value = RecordBatch> {
    (0usize..300).prop_flat_map(|rows| {
        (
            proptest::collection::vec(0i64..86_400_000, rows),
            proptest::collection::vec(proptest::option::of("[a-c]{0,3}"), rows),
            proptest::collection::vec(proptest::option::of(any::<i64>()), rows),
            proptest::collection::vec(proptest::option::of(any::<f64>()), rows),
            proptest::collection::vec(proptest::option::of(any::<f32>()), rows),
            proptest::collection::vec(proptest::option::of(-100_000i32..100_000), rows),
        )
            .prop_map(|(mut time, s, l, d, f, date)| {
                time.sort_unstable();
                let time: Vec<_> = time.into_iter().map(|t| Some(DAY_START + t)).collect();
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(utc(time)),
                    Arc::new(StringArray::from(s)),
                    Arc::new(Int64Array::from(l)),
                    Arc::new(Float64Array::from(d)),
                    Arc::new(Float32Array::from(f)),
                    Arc::new(Date32Array::from(date)),
                ];
                let names = ["__time", "s", "l", "d", "f", "date"];
                let schema = Schema::new(
                    names
                        .iter()
                        .zip(&columns)
                        .map(|(n, a)| Field::new(*n, a.data_type().clone(), *n != "__time"))
                        .collect::<Vec<_>>(),
                );
                RecordBatch::try_new(Arc::new(schema), columns).unwrap()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_tables_round_trip(batch in arb_table()) {
        assert_round_trip(&batch);
    }
}

/// Rewrites a segment file: `edit` may change data bytes and the footer; column
/// checksums and the footer checksum are then recomputed, so only the structural
/// checks stand between the edit and a reader.
fn forge(bytes: &[u8], edit: impl FnOnce(&mut [u8], &mut Footer)) -> Vec<u8> {
    let len = bytes.len();
    let footer_len = u64::from_le_bytes(bytes[len - 16..len - 8].try_into().unwrap()) as usize;
    let footer_start = len - 16 - footer_len;
    let mut footer: Footer = serde_json::from_slice(&bytes[footer_start..len - 16]).unwrap();
    let mut data = bytes[..footer_start].to_vec();
    edit(&mut data, &mut footer);
    for column in &mut footer.columns {
        let (start, len) = (column.region.offset as usize, column.region.len as usize);
        column.crc32 = crc32fast::hash(&data[start..start + len]);
    }
    let footer_bytes = serde_json::to_vec(&footer).unwrap();
    data.extend_from_slice(&footer_bytes);
    data.extend_from_slice(&(footer_bytes.len() as u64).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&footer_bytes).to_le_bytes());
    data.extend_from_slice(TAIL_MAGIC);
    data
}

#[test]
fn forged_keys_that_disagree_with_the_bitmaps_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(write(&dir, &sample_batch())).unwrap();
    let forged = forge(&bytes, |data, footer| {
        let ColumnLayout::Dictionary { keys, .. } = &footer.columns[1].layout else {
            panic!("country is a dictionary column")
        };
        // Row 0 holds "nl" (key 2) and row 2 "de" (key 1): swap them.
        let at = keys.offset as usize;
        data.swap(at, at + 8);
    });
    let err = open_err(&forged);
    assert!(err.contains("country") && err.contains("bitmap"), "{err}");
}

#[test]
fn forged_statistics_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(write(&dir, &sample_batch())).unwrap();
    let forged = forge(&bytes, |_, footer| {
        footer.columns[2].max = Some(Stat::Int(7))
    });
    let err = open_err(&forged);
    assert!(err.contains("clicks") && err.contains("min/max"), "{err}");
    let unchanged = forge(&bytes, |_, _| {});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("same.grove"), &unchanged).unwrap();
    Segment::open(&dir.path().join("same.grove"))
        .unwrap()
        .verify()
        .expect("an unchanged rewrite reads");
}
