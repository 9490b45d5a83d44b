//! Building the segments of one time chunk, and writing a partition whenever
//! `maxRowsPerSegment` rows have gathered.
//!
//! Without rollup every input row is an output row: batches are kept as they come
//! (metric inputs cast to their stored types) and concatenated at flush. With rollup,
//! rows are grouped on (time, dimensions) through Arrow's row format and metrics are
//! aggregated per group.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, PrimitiveArray, RecordBatch,
    TimestampMillisecondArray,
};
use arrow::compute::{cast, concat_batches, interleave, sort_to_indices, take_record_batch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::Result;
use crate::format::{ColumnRole, WrittenSegment, write_segment};
use crate::id::{Interval, SegmentId};
use crate::spec::Aggregator;

/// A segment written to the staging directory, not yet published.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    pub id: SegmentId,
    pub path: PathBuf,
    pub written: WrittenSegment,
}

/// How the rows of a chunk are laid out: the conformed input batches hold `__time`,
/// then `dimensions` columns, then one input column per metric (absent for `count`).
pub struct Layout {
    /// Output schema: `__time`, dimensions, metrics.
    pub schema: SchemaRef,
    pub roles: Vec<ColumnRole>,
    pub dimensions: usize,
    pub metrics: Vec<Aggregator>,
    pub rollup: bool,
    pub max_rows: usize,
}

impl Layout {
    /// The metric input columns of a conformed batch, one per metric (None for count).
    fn metric_inputs(&self, batch: &RecordBatch) -> Vec<Option<ArrayRef>> {
        let mut next = self.dimensions + 1;
        self.metrics
            .iter()
            .map(|a| {
                (*a != Aggregator::Count).then(|| {
                    next += 1;
                    Arc::clone(batch.column(next - 1))
                })
            })
            .collect()
    }
}

/// Where a chunk's segments go: files in `staging`, named by ids from `allocator`,
/// listed in `segments`.
pub struct Output<'a> {
    pub staging: &'a Path,
    pub allocator: &'a mut dyn super::Allocator,
    pub segments: Vec<BuiltSegment>,
}

pub struct ChunkBuilder {
    datasource: String,
    interval: Interval,
    rows: Pending,
}

/// The rows gathered for the next partition.
enum Pending {
    /// Output rows as they came.
    Raw {
        batches: Vec<RecordBatch>,
        len: usize,
    },
    Rollup(Groups),
}

/// Rollup state: one entry per group (output row).
struct Groups {
    converter: RowConverter,
    index: HashMap<Box<[u8]>, u32>,
    times: Vec<i64>,
    /// Input batches that dimension values are taken from, and per group its
    /// (batch, row) there.
    batches: Vec<RecordBatch>,
    origins: Vec<(usize, usize)>,
    metrics: Vec<MetricState>,
}

impl ChunkBuilder {
    /// A builder for the time chunk `interval` of `datasource`.
    pub fn new(datasource: &str, interval: Interval, layout: &Layout) -> Result<Self> {
        let rows = if layout.rollup {
            let key_types = layout.schema.fields()[..=layout.dimensions]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            Pending::Rollup(Groups {
                converter: RowConverter::new(key_types)?,
                index: HashMap::new(),
                times: Vec::new(),
                batches: Vec::new(),
                origins: Vec::new(),
                metrics: layout
                    .metrics
                    .iter()
                    .map(|a| MetricState::new(*a))
                    .collect(),
            })
        } else {
            Pending::Raw {
                batches: Vec::new(),
                len: 0,
            }
        };
        Ok(ChunkBuilder {
            datasource: datasource.to_string(),
            interval,
            rows,
        })
    }

    pub fn is_empty(&self) -> bool {
        match &self.rows {
            Pending::Raw { len, .. } => *len == 0,
            Pending::Rollup(groups) => groups.times.is_empty(),
        }
    }

    /// Adds conformed rows, writing full partitions to `out.staging` as they fill up.
    pub fn add(&mut self, batch: RecordBatch, layout: &Layout, out: &mut Output<'_>) -> Result<()> {
        match &mut self.rows {
            Pending::Raw { .. } => self.add_raw(raw_rows(&batch, layout)?, layout, out),
            Pending::Rollup(_) => self.add_rollup(batch, layout, out),
        }
    }

    fn add_raw(
        &mut self,
        mut batch: RecordBatch,
        layout: &Layout,
        out: &mut Output<'_>,
    ) -> Result<()> {
        while batch.num_rows() > 0 {
            let Pending::Raw { batches, len } = &mut self.rows else {
                unreachable!("add_raw is only called on raw chunks")
            };
            let take = batch.num_rows().min(layout.max_rows - *len);
            batches.push(batch.slice(0, take));
            *len += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if *len >= layout.max_rows {
                let built = self.flush(layout, out)?;
                out.segments.push(built);
            }
        }
        Ok(())
    }

    fn add_rollup(
        &mut self,
        batch: RecordBatch,
        layout: &Layout,
        out: &mut Output<'_>,
    ) -> Result<()> {
        let groups = self.groups();
        let keys = groups
            .converter
            .convert_columns(&batch.columns()[..=layout.dimensions])?;
        let times = batch
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let inputs = layout.metric_inputs(&batch);
        groups.batches.push(batch.clone());
        let mut start = 0;
        while start < batch.num_rows() {
            let groups = self.groups();
            let (end, assigned) = groups.assign(&keys, &times, start, layout.max_rows);
            for (state, input) in groups.metrics.iter_mut().zip(&inputs) {
                state.aggregate(input.as_deref(), start, &assigned);
            }
            start = end;
            if groups.times.len() >= layout.max_rows {
                let built = self.flush(layout, out)?;
                out.segments.push(built);
                // The rest of the batch starts the next partition and still takes its
                // dimension values from it.
                self.groups().batches.push(batch.clone());
            }
        }
        Ok(())
    }

    fn groups(&mut self) -> &mut Groups {
        match &mut self.rows {
            Pending::Rollup(groups) => groups,
            Pending::Raw { .. } => unreachable!("only rollup chunks have groups"),
        }
    }

    /// Writes what has gathered as the chunk's next segment, its version and partition
    /// from `out.allocator`.
    pub fn flush(&mut self, layout: &Layout, out: &mut Output<'_>) -> Result<BuiltSegment> {
        let batch = match &mut self.rows {
            Pending::Raw { batches, len } => {
                let batch = concat_batches(&layout.schema, batches.iter())?;
                batches.clear();
                *len = 0;
                batch
            }
            Pending::Rollup(groups) => groups.finish(layout)?,
        };
        let time = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let batch = if time.values().is_sorted() {
            batch
        } else {
            let order = sort_to_indices(batch.column(0), None, None)?;
            take_record_batch(&batch, &order)?
        };
        let (version, partition) = out.allocator.allocate(self.interval)?;
        let id = SegmentId {
            datasource: self.datasource.clone(),
            interval: self.interval,
            version,
            partition,
        };
        let path = out.staging.join(format!("{}.grove", id.file_stem()));
        let written = write_segment(&path, &id, &batch, &layout.roles)?;
        Ok(BuiltSegment { id, path, written })
    }
}

/// A conformed batch as output rows: each metric is its input cast to the stored type
/// (count is 1).
fn raw_rows(batch: &RecordBatch, layout: &Layout) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns()[..=layout.dimensions].to_vec();
    for (input, field) in layout
        .metric_inputs(batch)
        .into_iter()
        .zip(&layout.schema.fields()[layout.dimensions + 1..])
    {
        columns.push(match input {
            Some(input) if input.data_type() == field.data_type() => input,
            Some(input) => cast(&input, field.data_type())?,
            None => Arc::new(Int64Array::from_value(1, batch.num_rows())),
        });
    }
    Ok(RecordBatch::try_new(Arc::clone(&layout.schema), columns)?)
}

impl Groups {
    /// Assigns rows from `start` to groups (in the last batch), creating groups as
    /// needed, until the rows run out or `max_groups` groups exist. Returns the end of
    /// the rows assigned and each row's group.
    fn assign(
        &mut self,
        keys: &Rows,
        times: &PrimitiveArray<TimestampMillisecondType>,
        start: usize,
        max_groups: usize,
    ) -> (usize, Vec<u32>) {
        let batch_index = self.batches.len() - 1;
        let mut assigned = Vec::with_capacity(keys.num_rows() - start);
        let mut row = start;
        while row < keys.num_rows() && self.times.len() < max_groups {
            let key = keys.row(row);
            let group = match self.index.get(key.as_ref()) {
                Some(&g) => g,
                None => {
                    let g = self.times.len() as u32;
                    self.index.insert(key.as_ref().into(), g);
                    self.times.push(times.value(row));
                    self.origins.push((batch_index, row));
                    for state in &mut self.metrics {
                        state.push();
                    }
                    g
                }
            };
            assigned.push(group);
            row += 1;
        }
        // Rows of groups that exist already may follow a full partition's last new
        // group: they belong to it.
        while row < keys.num_rows() {
            match self.index.get(keys.row(row).as_ref()) {
                Some(&g) => assigned.push(g),
                None => break,
            }
            row += 1;
        }
        (row, assigned)
    }

    /// The groups as output rows; the state is then empty.
    fn finish(&mut self, layout: &Layout) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.schema.fields().len());
        let times = TimestampMillisecondArray::from(std::mem::take(&mut self.times));
        columns.push(Arc::new(times.with_timezone("UTC")));
        for d in 1..=layout.dimensions {
            let sources: Vec<&dyn Array> =
                self.batches.iter().map(|b| b.column(d).as_ref()).collect();
            columns.push(interleave(&sources, &self.origins)?);
        }
        for state in &mut self.metrics {
            columns.push(state.finish());
        }
        self.batches.clear();
        self.origins.clear();
        self.index.clear();
        Ok(RecordBatch::try_new(Arc::clone(&layout.schema), columns)?)
    }
}

/// The running value of one metric per group. Inputs that are NULL are skipped; a
/// group whose inputs were all NULL has a NULL metric (SQL semantics).
enum MetricState {
    Long {
        aggregator: Aggregator,
        values: Vec<Option<i64>>,
    },
    Double {
        aggregator: Aggregator,
        values: Vec<Option<f64>>,
        float: bool,
    },
}

impl MetricState {
    fn new(aggregator: Aggregator) -> Self {
        use Aggregator::*;
        match aggregator {
            Count | LongSum | LongMin | LongMax => MetricState::Long {
                aggregator,
                values: Vec::new(),
            },
            DoubleSum | DoubleMin | DoubleMax => MetricState::Double {
                aggregator,
                values: Vec::new(),
                float: false,
            },
            FloatSum | FloatMin | FloatMax => MetricState::Double {
                aggregator,
                values: Vec::new(),
                float: true,
            },
        }
    }

    /// Starts a new group.
    fn push(&mut self) {
        match self {
            MetricState::Long { aggregator, values } => {
                values.push((*aggregator == Aggregator::Count).then_some(0))
            }
            MetricState::Double { values, .. } => values.push(None),
        }
    }

    /// Folds rows `start..` of `input` (None for count) into their groups.
    fn aggregate(&mut self, input: Option<&dyn Array>, start: usize, groups: &[u32]) {
        match self {
            MetricState::Long { aggregator, values } => {
                let Some(input) = input else {
                    for &g in groups {
                        let slot = &mut values[g as usize];
                        *slot = Some(slot.unwrap_or(0) + 1);
                    }
                    return;
                };
                let input = input.as_primitive::<Int64Type>();
                let combine: fn(i64, i64) -> i64 = match aggregator {
                    Aggregator::LongMin => i64::min,
                    Aggregator::LongMax => i64::max,
                    _ => i64::wrapping_add,
                };
                fold(values, input, start, groups, combine);
            }
            MetricState::Double {
                aggregator, values, ..
            } => {
                let Some(input) = input else { return };
                let input = input.as_primitive::<Float64Type>();
                let combine: fn(f64, f64) -> f64 = match aggregator {
                    Aggregator::DoubleMin | Aggregator::FloatMin => f64::min,
                    Aggregator::DoubleMax | Aggregator::FloatMax => f64::max,
                    _ => |a, b| a + b,
                };
                fold(values, input, start, groups, combine);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            MetricState::Long { values, .. } => Arc::new(Int64Array::from(std::mem::take(values))),
            MetricState::Double {
                values,
                float: false,
                ..
            } => Arc::new(Float64Array::from(std::mem::take(values))),
            MetricState::Double {
                values,
                float: true,
                ..
            } => Arc::new(
                std::mem::take(values)
                    .into_iter()
                    .map(|v| v.map(|v| v as f32))
                    .collect::<Float32Array>(),
            ),
        }
    }
}

fn fold<T: arrow::datatypes::ArrowPrimitiveType>(
    values: &mut [Option<T::Native>],
    input: &PrimitiveArray<T>,
    start: usize,
    groups: &[u32],
    combine: fn(T::Native, T::Native) -> T::Native,
) {
    for (i, &g) in groups.iter().enumerate() {
        let row = start + i;
        if input.is_null(row) {
            continue;
        }
        let v = input.value(row);
        let slot = &mut values[g as usize];
        *slot = Some(slot.map_or(v, |acc| combine(acc, v)));
    }
}
