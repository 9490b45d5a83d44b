//! Building the segments of one time chunk: rows are grouped (rollup) or kept as they
//! are, metrics aggregated, and a partition written whenever `maxRowsPerSegment` rows
//! have gathered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, RecordBatch,
    TimestampMillisecondArray,
};
use arrow::compute::{interleave, sort_to_indices, take_record_batch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};

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

pub struct ChunkBuilder {
    id: SegmentId,
    batches: Vec<RecordBatch>,
    /// Per output row (group): its time and the (batch, row) its dimensions come from.
    times: Vec<i64>,
    origins: Vec<(usize, usize)>,
    groups: HashMap<Box<[u8]>, u32>,
    metrics: Vec<MetricState>,
}

impl ChunkBuilder {
    /// A builder for `interval` whose first partition is `id.partition`.
    pub fn new(id: SegmentId, layout: &Layout) -> Self {
        let metrics = layout
            .metrics
            .iter()
            .map(|a| MetricState::new(*a))
            .collect();
        ChunkBuilder {
            id,
            batches: Vec::new(),
            times: Vec::new(),
            origins: Vec::new(),
            groups: HashMap::new(),
            metrics,
        }
    }

    pub fn interval(&self) -> Interval {
        self.id.interval
    }

    /// Adds conformed rows, writing full partitions to `staging` as they fill up.
    pub fn add(
        &mut self,
        batch: RecordBatch,
        layout: &Layout,
        staging: &Path,
        out: &mut Vec<BuiltSegment>,
    ) -> Result<()> {
        let keys = if layout.rollup {
            let key_columns = batch.columns()[..=layout.dimensions].to_vec();
            let converter = RowConverter::new(
                key_columns
                    .iter()
                    .map(|c| SortField::new(c.data_type().clone()))
                    .collect(),
            )?;
            Some(converter.convert_columns(&key_columns)?)
        } else {
            None
        };
        let times = batch
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .clone();
        let inputs: Vec<Option<ArrayRef>> = {
            let mut next = layout.dimensions + 1;
            layout
                .metrics
                .iter()
                .map(|a| {
                    (*a != Aggregator::Count).then(|| {
                        next += 1;
                        Arc::clone(batch.column(next - 1))
                    })
                })
                .collect()
        };
        let mut batch_index = self.batches.len();
        self.batches.push(batch.clone());
        for row in 0..times.len() {
            let group = match &keys {
                Some(keys) => {
                    let key = keys.row(row);
                    match self.groups.get(key.as_ref()) {
                        Some(&g) => g as usize,
                        None => {
                            self.groups
                                .insert(key.as_ref().into(), self.times.len() as u32);
                            self.new_group(times.value(row), batch_index, row)
                        }
                    }
                }
                None => self.new_group(times.value(row), batch_index, row),
            };
            for (state, input) in self.metrics.iter_mut().zip(&inputs) {
                state.update(group, input.as_deref(), row);
            }
            if self.times.len() >= layout.max_rows {
                out.push(self.flush(layout, staging)?);
                // The rest of this batch starts the next partition and still needs the
                // batch as the source of its dimension values.
                self.batches.push(batch.clone());
                batch_index = 0;
            }
        }
        Ok(())
    }

    fn new_group(&mut self, time: i64, batch: usize, row: usize) -> usize {
        self.times.push(time);
        self.origins.push((batch, row));
        for state in &mut self.metrics {
            state.push();
        }
        self.times.len() - 1
    }

    /// Writes what has gathered as the next partition (if anything has) and starts
    /// the partition after it.
    pub fn flush(&mut self, layout: &Layout, staging: &Path) -> Result<BuiltSegment> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.schema.fields().len());
        columns.push(Arc::new(
            TimestampMillisecondArray::from(std::mem::take(&mut self.times)).with_timezone("UTC"),
        ));
        for d in 1..=layout.dimensions {
            let sources: Vec<&dyn Array> =
                self.batches.iter().map(|b| b.column(d).as_ref()).collect();
            columns.push(interleave(&sources, &self.origins)?);
        }
        for state in &mut self.metrics {
            columns.push(state.finish());
        }
        let batch = RecordBatch::try_new(Arc::clone(&layout.schema), columns)?;
        let order = sort_to_indices(batch.column(0), None, None)?;
        let batch = take_record_batch(&batch, &order)?;

        let id = self.id.clone();
        let path = staging.join(format!("{}.grove", id.file_stem()));
        let written = write_segment(&path, &id, &batch, &layout.roles)?;
        self.id.partition += 1;
        self.batches.clear();
        self.origins.clear();
        self.groups.clear();
        Ok(BuiltSegment { id, path, written })
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// The running value of one metric per output row. Inputs that are NULL are skipped;
/// a row whose inputs were all NULL has a NULL metric (SQL semantics).
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

    fn push(&mut self) {
        match self {
            MetricState::Long { aggregator, values } => {
                values.push((*aggregator == Aggregator::Count).then_some(0))
            }
            MetricState::Double { values, .. } => values.push(None),
        }
    }

    fn update(&mut self, group: usize, input: Option<&dyn Array>, row: usize) {
        use Aggregator::*;
        match self {
            MetricState::Long { aggregator, values } => {
                let slot = &mut values[group];
                let Some(input) = input else {
                    *slot = Some(slot.unwrap_or(0) + 1);
                    return;
                };
                if input.is_null(row) {
                    return;
                }
                let v = input.as_primitive::<Int64Type>().value(row);
                *slot = Some(match (slot.take(), *aggregator) {
                    (None, _) => v,
                    (Some(acc), LongMin) => acc.min(v),
                    (Some(acc), LongMax) => acc.max(v),
                    (Some(acc), _) => acc.wrapping_add(v),
                });
            }
            MetricState::Double {
                aggregator, values, ..
            } => {
                let Some(input) = input.filter(|i| !i.is_null(row)) else {
                    return;
                };
                let v = input.as_primitive::<Float64Type>().value(row);
                let slot = &mut values[group];
                *slot = Some(match (slot.take(), *aggregator) {
                    (None, _) => v,
                    (Some(acc), DoubleMin | FloatMin) => acc.min(v),
                    (Some(acc), DoubleMax | FloatMax) => acc.max(v),
                    (Some(acc), _) => acc + v,
                });
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
            } => Arc::new(Float32Array::from(
                std::mem::take(values)
                    .into_iter()
                    .map(|v| v.map(|v| v as f32))
                    .collect::<Vec<_>>(),
            )),
        }
    }
}
