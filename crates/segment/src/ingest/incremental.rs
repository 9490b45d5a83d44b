//! The incremental index of a streaming task: rows as they arrive, queryable at once.
//!
//! Conformed rows are routed to their time chunk; each chunk is one in-progress
//! segment, whose id the chunk's first row allocates. [`IncrementalIndex::persist`]
//! writes the rows gathered since the last persist as a new *piece* of their segment:
//! a segment file of its own (rolled up within itself), memory-mapped and readable by
//! queries as soon as it exists. Pieces of about the same size are merged four into
//! one as they pile up, so a segment has a few pieces per power of four of its rows
//! however long it has been growing. [`IncrementalIndex::finish`] merges all pieces of
//! each segment into its final file, rolled up across pieces with the metrics'
//! combining aggregators.
//!
//! A query reads a segment's pieces as one list taken at one moment
//! ([`IncrementalIndex::snapshot`]): a merge replaces pieces by one holding the same
//! rows, so every snapshot holds each row exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::compute::cast;

use arrow::datatypes::{DataType, Field};

use super::chunk::{BuiltSegment, ChunkBuilder, Layout, Output};
use super::conform::{self, Conformer};
use super::input::{self, InputBatch, InputSink, Unreadable};
use super::{Allocator, Progress, count_parse_exception};
use crate::error::{Error, Result};
use crate::format::Segment;
use crate::granularity::Granularity;
use crate::id::{Interval, SegmentId};
use crate::spec::{IngestionSpec, InputFormat, KeyFormat, RecordColumns};

/// How many pieces of about one size are merged into one.
const MERGE_FAN_IN: usize = 4;

/// The in-progress segments of one streaming task.
pub struct IncrementalIndex {
    datasource: String,
    granularity: Granularity,
    layout: Layout,
    /// The layout pieces are read back in: every metric is an input column, combined.
    merging: Layout,
    dir: PathBuf,
    chunks: BTreeMap<i64, Chunk>,
    /// Files written so far, for unique piece names.
    written: u64,
}

struct Chunk {
    id: SegmentId,
    /// Conformed rows not persisted yet.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    /// Oldest first.
    pieces: Vec<Arc<Segment>>,
}

impl Chunk {
    fn rows(&self) -> usize {
        self.pieces.iter().map(|p| p.num_rows()).sum::<usize>() + self.pending_rows
    }
}

impl IncrementalIndex {
    /// An empty index writing its pieces into `dir` (created if need be).
    pub fn new(
        datasource: &str,
        granularity: Granularity,
        layout: Layout,
        dir: &Path,
    ) -> Result<IncrementalIndex> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let merging = Layout {
            schema: Arc::clone(&layout.schema),
            roles: layout.roles.clone(),
            dimensions: layout.dimensions,
            metrics: layout.metrics.iter().map(|a| a.combining()).collect(),
            rollup: layout.rollup,
            max_rows: usize::MAX,
        };
        let layout = Layout {
            max_rows: usize::MAX,
            ..layout
        };
        Ok(IncrementalIndex {
            datasource: datasource.to_string(),
            granularity,
            layout,
            merging,
            dir: dir.to_path_buf(),
            chunks: BTreeMap::new(),
            written: 0,
        })
    }

    /// Adds conformed rows; `allocator` names the segment of each chunk they open.
    pub fn add(&mut self, batch: RecordBatch, allocator: &mut dyn Allocator) -> Result<()> {
        for (start, part) in conform::split_by_chunk(&batch, self.granularity)? {
            let chunk = match self.chunks.entry(start) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let interval = self.granularity.bucket(start);
                    let (version, partition) = allocator.allocate(interval)?;
                    e.insert(Chunk {
                        id: SegmentId {
                            datasource: self.datasource.clone(),
                            interval,
                            version,
                            partition,
                        },
                        pending: Vec::new(),
                        pending_rows: 0,
                        pieces: Vec::new(),
                    })
                }
            };
            chunk.pending_rows += part.num_rows();
            chunk.pending.push(part);
        }
        Ok(())
    }

    /// Rows of the largest segment (its pieces rolled up each, plus what is pending).
    pub fn largest_segment_rows(&self) -> usize {
        self.chunks.values().map(Chunk::rows).max().unwrap_or(0)
    }

    /// Rows in every segment.
    pub fn total_rows(&self) -> usize {
        self.chunks.values().map(Chunk::rows).sum()
    }

    /// Whether rows wait to be persisted.
    pub fn has_pending(&self) -> bool {
        self.chunks.values().any(|c| c.pending_rows > 0)
    }

    /// Writes what each segment gathered since the last persist as its newest piece,
    /// merging pieces that piled up. Returns whether anything was written.
    pub fn persist(&mut self) -> Result<bool> {
        let mut changed = false;
        let starts: Vec<i64> = self.chunks.keys().copied().collect();
        for start in starts {
            let Some(chunk) = self.chunks.get_mut(&start) else {
                continue;
            };
            if chunk.pending_rows == 0 {
                continue;
            }
            let id = chunk.id.clone();
            let batches = std::mem::take(&mut chunk.pending);
            chunk.pending_rows = 0;
            let piece = self.write(&id, false, &batches)?;
            self.chunk(start).pieces.push(piece);
            self.merge_tail(start)?;
            changed = true;
        }
        Ok(changed)
    }

    fn chunk(&mut self, start: i64) -> &mut Chunk {
        self.chunks
            .get_mut(&start)
            .expect("chunks are never removed while persisting")
    }

    /// Merges the newest pieces while the oldest of the last four is no more than
    /// twice as big as the next: pieces of about one size become one four times as big.
    fn merge_tail(&mut self, start: i64) -> Result<()> {
        loop {
            let chunk = self.chunk(start);
            let n = chunk.pieces.len();
            if n < MERGE_FAN_IN {
                return Ok(());
            }
            let tail = &chunk.pieces[n - MERGE_FAN_IN..];
            if tail[0].num_rows() > 2 * tail[1].num_rows() {
                return Ok(());
            }
            let tail: Vec<Arc<Segment>> = tail.to_vec();
            let id = chunk.id.clone();
            let batches = tail
                .iter()
                .map(|p| self.rows_of(p))
                .collect::<Result<Vec<_>>>()?;
            let merged = self.write(&id, true, &batches)?;
            let chunk = self.chunk(start);
            chunk.pieces.truncate(n - MERGE_FAN_IN);
            chunk.pieces.push(merged);
            for old in tail {
                // Queries that hold the old pieces keep reading their mapping.
                let _ = std::fs::remove_file(old.path());
            }
        }
    }

    /// Builds one piece of segment `id` from `batches`: conformed rows, or (`merging`)
    /// the rows of other pieces.
    fn write(
        &mut self,
        id: &SegmentId,
        merging: bool,
        batches: &[RecordBatch],
    ) -> Result<Arc<Segment>> {
        let layout = if merging { &self.merging } else { &self.layout };
        let built = build(&self.datasource, id, layout, batches, &self.dir)?;
        self.written += 1;
        let path = self
            .dir
            .join(format!("{}.piece-{}.grove", id.file_stem(), self.written));
        std::fs::rename(&built.path, &path)
            .map_err(|e| Error::io(format!("renaming {}", built.path.display()), e))?;
        Segment::open(&path)
    }

    /// A piece's rows as the merging layout reads them: its columns by name, cast to
    /// the layout's types (a column the piece lacks is null).
    fn rows_of(&self, piece: &Segment) -> Result<RecordBatch> {
        let rows = piece.num_rows();
        let all: Vec<usize> = (0..piece.schema().fields().len()).collect();
        let read = piece.read(&all, 0..rows)?;
        let columns = self
            .merging
            .schema
            .fields()
            .iter()
            .map(|field| match read.schema().index_of(field.name()) {
                Ok(i) => Ok(cast(read.column(i), field.data_type())?),
                Err(_) => Ok(new_null_array(field.data_type(), rows)),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.merging.schema),
            columns,
        )?)
    }

    /// Takes in the rows of another task's pieces (persisted before it died, read from
    /// the same offsets) as segment `id`, which must be a chunk this index has not
    /// opened: they are merged into one piece of `id`.
    pub fn adopt(&mut self, id: SegmentId, pieces: &[Arc<Segment>]) -> Result<usize> {
        let start = self.granularity.truncate(id.interval.start);
        if self.granularity.bucket(start) != id.interval || self.chunks.contains_key(&start) {
            return Err(Error::invalid(format!(
                "cannot adopt {id}: not a free time chunk of this index"
            )));
        }
        let batches = pieces
            .iter()
            .map(|p| self.rows_of(p))
            .collect::<Result<Vec<_>>>()?;
        let piece = self.write(&id, true, &batches)?;
        let rows = piece.num_rows();
        self.chunks.insert(
            start,
            Chunk {
                id,
                pending: Vec::new(),
                pending_rows: 0,
                pieces: vec![piece],
            },
        );
        Ok(rows)
    }

    /// Each in-progress segment with its pieces as they are now.
    pub fn snapshot(&self) -> Vec<(SegmentId, Vec<Arc<Segment>>)> {
        self.chunks
            .values()
            .filter(|c| !c.pieces.is_empty())
            .map(|c| (c.id.clone(), c.pieces.clone()))
            .collect()
    }

    /// Persists what is pending and merges every segment's pieces into its final file
    /// in `out` (named `{segment}.grove`).
    pub fn finish(&mut self, out: &Path) -> Result<Vec<BuiltSegment>> {
        self.persist()?;
        std::fs::create_dir_all(out)
            .map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
        let mut built = Vec::new();
        for chunk in self.chunks.values() {
            if chunk.pieces.is_empty() {
                continue;
            }
            let batches = chunk
                .pieces
                .iter()
                .map(|p| self.rows_of(p))
                .collect::<Result<Vec<_>>>()?;
            built.push(build(
                &self.datasource,
                &chunk.id,
                &self.merging,
                &batches,
                out,
            )?);
        }
        Ok(built)
    }
}

/// One message of a stream partition, as a streaming task reads it.
#[derive(Debug, Clone, Copy)]
pub struct StreamRecord<'a> {
    pub offset: u64,
    pub value: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub headers: &'a BTreeMap<String, Vec<u8>>,
}

/// Reads a stream's messages into an incremental index: what a streaming task does
/// with each fetch. Rows are conformed as in batch ingestion (transforms, filter,
/// intervals, rollup), and parse exceptions counted against `maxParseExceptions`.
pub struct StreamIngest {
    spec: IngestionSpec,
    conformer: Conformer,
    columns: Vec<String>,
    record_columns: Option<RecordColumns>,
    pub index: IncrementalIndex,
    pub progress: Progress,
}

impl StreamIngest {
    /// Reads as `spec` says (its input source is not used), into pieces under `dir`;
    /// with `record_columns` (Druid's `kafka` format), rows also get their record's.
    pub fn new(
        spec: &IngestionSpec,
        record_columns: Option<RecordColumns>,
        dir: &Path,
    ) -> Result<StreamIngest> {
        if let InputFormat::Csv { columns: None, .. } = spec.format {
            return Err(Error::invalid(
                "a stream's csv messages have no header: give inputFormat.columns",
            ));
        }
        let conformer = Conformer::new(spec);
        let index = IncrementalIndex::new(
            &spec.datasource,
            spec.segment_granularity,
            conformer.layout(),
            dir,
        )?;
        Ok(StreamIngest {
            spec: spec.clone(),
            columns: spec.input_columns(),
            record_columns,
            conformer,
            index,
            progress: Progress::default(),
        })
    }

    /// Reads `records` of `topic`'s partition named `source`; a new time chunk takes
    /// its segment's name from `allocator`.
    pub fn read(
        &mut self,
        records: &[StreamRecord<'_>],
        topic: &str,
        source: &str,
        allocator: &mut dyn Allocator,
    ) -> Result<()> {
        let mut sink = StreamSink {
            spec: &self.spec,
            conformer: &self.conformer,
            index: &mut self.index,
            progress: &mut self.progress,
            allocator,
        };
        let mut with_records;
        let sink: &mut dyn InputSink = match &self.record_columns {
            None => &mut sink,
            Some(columns) => {
                with_records = RecordSink {
                    inner: &mut sink,
                    columns,
                    topic,
                    records: records.iter().map(|r| (r.offset, *r)).collect(),
                };
                &mut with_records
            }
        };
        let values: Vec<(u64, Option<&[u8]>)> =
            records.iter().map(|r| (r.offset, r.value)).collect();
        match &self.spec.format {
            InputFormat::Json => input::read_json_messages(&values, source, &self.columns, sink),
            InputFormat::Csv { columns, .. } => {
                let header = columns.as_deref().unwrap_or_default();
                input::read_csv_messages(&values, source, header, &self.columns, sink)
            }
            InputFormat::Parquet => Err(Error::invalid("a stream's messages cannot be parquet")),
        }
    }
}

struct StreamSink<'a> {
    spec: &'a IngestionSpec,
    conformer: &'a Conformer,
    index: &'a mut IncrementalIndex,
    progress: &'a mut Progress,
    allocator: &'a mut dyn Allocator,
}

impl InputSink for StreamSink<'_> {
    fn batch(&mut self, batch: InputBatch) -> Result<()> {
        self.progress.rows_read += batch.batch.num_rows() as u64;
        let conformed = self.conformer.conform(&batch, self.progress)?;
        for (location, reason) in &conformed.exceptions {
            count_parse_exception(self.progress, self.spec, location, reason)?;
        }
        self.progress.rows_written += conformed.batch.num_rows() as u64;
        self.index.add(conformed.batch, self.allocator)
    }

    fn unreadable(&mut self, row: Unreadable) -> Result<()> {
        self.progress.rows_read += 1;
        count_parse_exception(self.progress, self.spec, &row.location, &row.reason)
    }

    fn read_type(&self, name: &str) -> DataType {
        self.conformer.read_type(name)
    }
}

/// Gives each row the columns of its Kafka record (Druid's `kafka` input format),
/// found by the offset the row was read from.
struct RecordSink<'a, 'r> {
    inner: &'a mut dyn InputSink,
    columns: &'a RecordColumns,
    topic: &'a str,
    records: BTreeMap<u64, StreamRecord<'r>>,
}

impl RecordSink<'_, '_> {
    /// What column `name` holds for `record`, if the record supplies that column.
    fn supplies(&self, name: &str) -> bool {
        let c = self.columns;
        name == c.timestamp
            || name == c.topic
            || c.key.as_ref().is_some_and(|(key, _)| key == name)
            || name.starts_with(&c.header_prefix)
    }

    fn value(&self, name: &str, record: &StreamRecord<'_>) -> Option<String> {
        let c = self.columns;
        if name == c.timestamp {
            return Some(record.timestamp.to_string());
        }
        if name == c.topic {
            return Some(self.topic.to_string());
        }
        if let Some((key, format)) = &c.key
            && key == name
        {
            return record.key.and_then(|k| first_key_field(k, *format));
        }
        let header = name.strip_prefix(&c.header_prefix)?;
        record
            .headers
            .get(header)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The first field of a record's key, as `format` reads it.
fn first_key_field(key: &[u8], format: KeyFormat) -> Option<String> {
    match format {
        KeyFormat::Delimited(d) => {
            let end = key.iter().position(|b| *b == d).unwrap_or(key.len());
            Some(String::from_utf8_lossy(&key[..end]).into_owned())
        }
        KeyFormat::Json => {
            let value: serde_json::Value = serde_json::from_slice(key).ok()?;
            let first = value.as_object()?.values().next()?.clone();
            Some(match first {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
        }
    }
}

impl InputSink for RecordSink<'_, '_> {
    fn batch(&mut self, batch: InputBatch) -> Result<()> {
        let offsets = match &batch.origin.rows {
            input::RowNumbers::Offsets(offsets) => offsets.clone(),
            _ => return self.inner.batch(batch),
        };
        let column = |name: &str, data_type: &DataType| -> Result<ArrayRef> {
            let text: StringArray = offsets
                .iter()
                .map(|o| self.records.get(o).and_then(|r| self.value(name, r)))
                .collect();
            Ok(cast(&text, data_type)?)
        };
        let schema = batch.batch.schema();
        let mut fields: Vec<Field> = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (field, array) in schema.fields().iter().zip(batch.batch.columns()) {
            fields.push(field.as_ref().clone().with_nullable(true));
            arrays.push(if self.supplies(field.name()) {
                column(field.name(), field.data_type())?
            } else {
                Arc::clone(array)
            });
        }
        let rows = batch.batch.num_rows();
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        let rebuilt = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(fields)),
            arrays,
            &options,
        )?;
        self.inner.batch(InputBatch {
            batch: rebuilt,
            origin: batch.origin,
        })
    }

    fn unreadable(&mut self, row: Unreadable) -> Result<()> {
        self.inner.unreadable(row)
    }

    fn read_type(&self, name: &str) -> DataType {
        self.inner.read_type(name)
    }
}

/// Writes `batches` as segment `id` into `dir`.
fn build(
    datasource: &str,
    id: &SegmentId,
    layout: &Layout,
    batches: &[RecordBatch],
    dir: &Path,
) -> Result<BuiltSegment> {
    let mut named = Named(id);
    let mut out = Output {
        staging: dir,
        allocator: &mut named,
        segments: Vec::new(),
    };
    let mut builder = ChunkBuilder::new(datasource, id.interval, layout)?;
    for batch in batches {
        builder.add(batch.clone(), layout, &mut out)?;
    }
    builder.flush(layout, &mut out)
}

/// Names every file after one segment.
struct Named<'a>(&'a SegmentId);

impl Allocator for Named<'_> {
    fn allocate(&mut self, chunk: Interval) -> Result<(String, u32)> {
        debug_assert_eq!(chunk, self.0.interval);
        Ok((self.0.version.clone(), self.0.partition))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    use super::*;
    use crate::format::ColumnRole;
    use crate::spec::Aggregator;

    const HOUR: i64 = 3_600_000;

    fn layout(rollup: bool) -> Layout {
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Layout {
            schema: Arc::new(Schema::new(vec![
                Field::new("__time", time, false),
                Field::new("d", DataType::Utf8, true),
                Field::new("count", DataType::Int64, true),
                Field::new("v", DataType::Int64, true),
            ])),
            roles: vec![
                ColumnRole::Time,
                ColumnRole::Dimension,
                ColumnRole::Metric,
                ColumnRole::Metric,
            ],
            dimensions: 1,
            metrics: vec![Aggregator::Count, Aggregator::LongSum],
            rollup,
            max_rows: 10,
        }
    }

    /// Conformed rows: `__time`, `d`, and the input of `v` (count has none).
    fn rows(times: &[i64], d: &[&str], v: &[i64]) -> RecordBatch {
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("__time", time, false),
            Field::new("d", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")),
                Arc::new(StringArray::from(d.to_vec())),
                Arc::new(Int64Array::from(v.to_vec())),
            ],
        )
        .unwrap()
    }

    struct Counter(u32);

    impl Allocator for Counter {
        fn allocate(&mut self, _chunk: Interval) -> Result<(String, u32)> {
            self.0 += 1;
            Ok(("v1".into(), self.0 - 1))
        }
    }

    /// (rows, sum of count, sum of v) over pieces.
    fn totals(pieces: &[Arc<Segment>]) -> (usize, i64, i64) {
        let mut out = (0, 0, 0);
        for p in pieces {
            let b = p.read(&[2, 3], 0..p.num_rows()).unwrap();
            out.0 += p.num_rows();
            out.1 += b
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
            out.2 += b
                .column(1)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
        }
        out
    }

    #[test]
    fn pieces_pile_up_merge_and_finish_with_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut index =
            IncrementalIndex::new("ds", Granularity::Hour, layout(false), dir.path()).unwrap();
        let mut allocator = Counter(0);
        let mut expected_v = 0;
        for i in 0..40i64 {
            // Two chunks: hour 0 always, hour 1 every other round.
            let mut times = vec![i * 1000, i * 1000 + 1];
            if i % 2 == 0 {
                times.push(HOUR + i);
            }
            let n = times.len();
            let v: Vec<i64> = (0..n as i64).map(|k| i * 10 + k).collect();
            expected_v += v.iter().sum::<i64>();
            index
                .add(rows(&times, &vec!["a"; n], &v), &mut allocator)
                .unwrap();
            assert!(index.persist().unwrap());
            let snapshot = index.snapshot();
            let all: Vec<Arc<Segment>> = snapshot.iter().flat_map(|(_, p)| p.clone()).collect();
            let seen = totals(&all);
            let rows_so_far = (i as usize + 1) * 2 + (i as usize / 2 + 1);
            assert_eq!(seen.0, rows_so_far);
            assert_eq!(seen.1, rows_so_far as i64);
            assert_eq!(seen.2, expected_v);
            // Merging keeps few pieces: at most three per power of four.
            for (_, pieces) in &snapshot {
                assert!(pieces.len() <= 3 * 4, "{} pieces", pieces.len());
            }
        }
        assert!(!index.persist().unwrap(), "nothing new to persist");
        // Two chunks, two segment ids allocated, once each.
        assert_eq!(allocator.0, 2);
        let out = tempfile::tempdir().unwrap();
        let built = index.finish(out.path()).unwrap();
        assert_eq!(built.len(), 2);
        let finals: Vec<Arc<Segment>> = built
            .iter()
            .map(|b| Segment::open(&b.path).unwrap())
            .collect();
        assert_eq!(totals(&finals), (100, 100, expected_v));
        assert_eq!(finals[0].id().partition, 0);
        assert_eq!(
            finals[1].id().interval,
            Interval::new(HOUR, 2 * HOUR).unwrap()
        );
    }

    #[test]
    fn rollup_across_pieces_sums_the_counts_of_each_piece() {
        let dir = tempfile::tempdir().unwrap();
        let mut index =
            IncrementalIndex::new("ds", Granularity::Hour, layout(true), dir.path()).unwrap();
        let mut allocator = Counter(0);
        for round in 0..9 {
            // Same (time, d) every round: one group per value of d.
            index
                .add(
                    rows(&[5, 5, 5], &["a", "b", "a"], &[1, 2, round]),
                    &mut allocator,
                )
                .unwrap();
            index.persist().unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let built = index.finish(out.path()).unwrap();
        let segment = Segment::open(&built[0].path).unwrap();
        assert_eq!(segment.num_rows(), 2);
        let b = segment.read(&[1, 2, 3], 0..2).unwrap();
        let d = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let d = d.as_string::<i32>();
        let count = b.column(1).as_primitive::<Int64Type>();
        let v = b.column(2).as_primitive::<Int64Type>();
        for i in 0..2 {
            match d.value(i) {
                "a" => assert_eq!((count.value(i), v.value(i)), (18, 9 + 36)),
                "b" => assert_eq!((count.value(i), v.value(i)), (9, 18)),
                other => panic!("unexpected group {other}"),
            }
        }
    }
}
