//! [`SegmentScanExec`]: the leaf operator that reads memory-mapped segments.
//!
//! Invariants:
//! - Output rows are exactly the rows of the listed segments that lie inside both the
//!   segment's *visible* intervals (what the timeline left it after overshadowing) and
//!   the pushed-down time intervals, and for which the [`IndexFilter`] (if any) is TRUE.
//! - Output schema is the table schema projected; a column a segment lacks reads as
//!   NULL, and a column stored with another type is cast to the table's type.
//! - With a `limit`, at most `limit` rows come out of each partition (DataFusion keeps
//!   the global limit above).
//! - Segments are spread over partitions round-robin; no ordering is promised.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Int32Array, RecordBatch, RecordBatchOptions,
    new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{Field, Int32Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, DataFusionError, Result, Statistics, stats::Precision};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, StatisticsArgs,
};
use roaring::RoaringBitmap;

use super::filter::IndexFilter;
use super::stats::{ColumnFacts, column_statistics};
use crate::format::Segment;
use crate::id::Interval;

/// One segment to scan and the parts of its interval to read.
#[derive(Debug, Clone)]
pub struct ScanSegment {
    pub segment: Arc<Segment>,
    /// Sorted, disjoint intervals; rows outside them are not read.
    pub intervals: Vec<Interval>,
}

/// Reads segments with projection, time-range pruning, bitmap-index filtering and
/// limit applied in the scan.
#[derive(Debug)]
pub struct SegmentScanExec {
    table_schema: SchemaRef,
    projection: Vec<usize>,
    segments: Vec<ScanSegment>,
    filter: Option<IndexFilter>,
    limit: Option<usize>,
    /// Segment indexes per output partition.
    partitions: Vec<Vec<usize>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SegmentScanExec {
    /// `projection` indexes `table_schema`; `target_partitions` bounds parallelism.
    pub fn new(
        table_schema: SchemaRef,
        projection: Vec<usize>,
        segments: Vec<ScanSegment>,
        filter: Option<IndexFilter>,
        limit: Option<usize>,
        target_partitions: usize,
    ) -> Result<Self> {
        let schema = Arc::new(table_schema.project(&projection)?);
        let count = segments.len().clamp(1, target_partitions.max(1));
        let mut partitions = vec![Vec::new(); count];
        for i in 0..segments.len() {
            partitions[i % count].push(i);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(count),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(SegmentScanExec {
            table_schema,
            projection,
            segments,
            filter,
            limit,
            partitions,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn segments(&self) -> &[ScanSegment] {
        &self.segments
    }

    /// The schema `projection` indexes: the datasource's.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    /// How many output partitions the scan has.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    pub fn filter(&self) -> Option<&IndexFilter> {
        self.filter.as_ref()
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl DisplayAs for SegmentScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<_> = self
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows: usize = self.segments.iter().map(|s| s.segment.num_rows()).sum();
        write!(
            f,
            "SegmentScanExec: segments={}, rows={rows}, projection=[{}]",
            self.segments.len(),
            columns.join(", ")
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", index_filter={filter:?}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if matches!(t, DisplayFormatType::Verbose) {
            let ids: Vec<_> = self
                .segments
                .iter()
                .map(|s| s.segment.id().to_string())
                .collect();
            write!(f, ", segment_ids=[{}]", ids.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SegmentScanExec {
    fn name(&self) -> &str {
        "SegmentScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SegmentScanExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let indexes = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("SegmentScanExec has no partition {partition}"))
        })?;
        let batch_size = context.session_config().batch_size();
        let counters = ScanCounters {
            segments: MetricBuilder::new(&self.metrics).counter("segments_scanned", partition),
            rows: MetricBuilder::new(&self.metrics).counter("rows_scanned", partition),
            output: MetricBuilder::new(&self.metrics).output_rows(partition),
        };
        let reader = PartitionReader {
            table_schema: Arc::clone(&self.table_schema),
            schema: self.schema(),
            projection: self.projection.clone(),
            segments: indexes
                .into_iter()
                .rev()
                .map(|i| self.segments[i].clone())
                .collect(),
            filter: self.filter.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_size: batch_size.max(1),
            pending: Vec::new(),
            counters,
        };
        let schema = self.schema();
        // Reading never waits: each batch spends a unit of the task's scheduling budget,
        // so that whatever runs on the task yields now and then (a cancel is seen, an
        // abort takes effect), wherever the plan runs.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(reader),
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        _inputs: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let indexes: Vec<usize> = match args.partition() {
            Some(p) => self.partitions.get(p).cloned().unwrap_or_default(),
            None => (0..self.segments.len()).collect(),
        };
        Ok(Arc::new(self.statistics_of(&indexes)))
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        Some(Arc::new(SegmentScanExec {
            table_schema: Arc::clone(&self.table_schema),
            projection: self.projection.clone(),
            segments: self.segments.clone(),
            filter: self.filter.clone(),
            limit,
            partitions: self.partitions.clone(),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn fetch(&self) -> Option<usize> {
        self.limit
    }
}

impl SegmentScanExec {
    /// Row counts and per-column min/max/null counts from segment footers: exact when
    /// whole segments are read unfiltered and unlimited, estimates otherwise.
    fn statistics_of(&self, indexes: &[usize]) -> Statistics {
        let schema = self.schema();
        let whole = self.filter.is_none()
            && self.limit.is_none()
            && indexes.iter().all(|&i| {
                let s = &self.segments[i];
                s.intervals
                    .iter()
                    .any(|iv| iv.covers(&s.segment.interval()))
            });
        let rows: usize = indexes
            .iter()
            .map(|&i| self.segments[i].segment.num_rows())
            .sum::<usize>()
            .min(self.limit.unwrap_or(usize::MAX));
        let mut stats = Statistics::new_unknown(&schema);
        stats.num_rows = if whole {
            Precision::Exact(rows)
        } else {
            Precision::Inexact(rows)
        };
        for (out, field) in stats.column_statistics.iter_mut().zip(schema.fields()) {
            *out = self.column_statistics(indexes, field, whole);
        }
        stats
    }

    fn column_statistics(&self, indexes: &[usize], field: &Field, whole: bool) -> ColumnStatistics {
        let facts = indexes.iter().map(|&i| {
            let segment = &self.segments[i].segment;
            let footer = segment.footer();
            let column = footer
                .column_index(field.name())
                .map(|c| ColumnFacts::of(&footer.columns[c]));
            (segment.num_rows(), column)
        });
        column_statistics(field, whole, facts)
    }
}

struct ScanCounters {
    segments: Count,
    rows: Count,
    output: Count,
}

/// Produces one partition's batches, segment by segment.
struct PartitionReader {
    table_schema: SchemaRef,
    schema: SchemaRef,
    projection: Vec<usize>,
    /// Segments still to read, in reverse order (popped from the end).
    segments: Vec<ScanSegment>,
    filter: Option<IndexFilter>,
    remaining: usize,
    batch_size: usize,
    /// Batches of the current segment not yet returned, in reverse order.
    pending: Vec<RecordBatch>,
    counters: ScanCounters,
}

impl Iterator for PartitionReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.remaining == 0 {
                return None;
            }
            if let Some(batch) = self.pending.pop() {
                let batch = if batch.num_rows() > self.remaining {
                    batch.slice(0, self.remaining)
                } else {
                    batch
                };
                self.remaining -= batch.num_rows();
                self.counters.output.add(batch.num_rows());
                return Some(Ok(batch));
            }
            let scan = self.segments.pop()?;
            match self.read_segment(&scan) {
                Ok(mut batches) => {
                    batches.reverse();
                    self.pending = batches;
                }
                Err(e) => {
                    self.segments.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl PartitionReader {
    fn read_segment(&self, scan: &ScanSegment) -> Result<Vec<RecordBatch>> {
        let segment = &scan.segment;
        self.counters.segments.add(1);
        let ranges = scan
            .intervals
            .iter()
            .map(|iv| segment.rows_in(iv))
            .collect::<crate::Result<Vec<Range<usize>>>>()
            .map_err(to_df)?;
        let selected = match &self.filter {
            Some(filter) => Some(filter.evaluate(segment).map_err(to_df)?),
            None => None,
        };
        let mut batches = Vec::new();
        let mut produced = 0;
        for range in ranges {
            let mut start = range.start;
            while start < range.end && produced < self.remaining {
                let end = (start + self.batch_size).min(range.end);
                self.counters.rows.add(end - start);
                let batch = self.read_rows(segment, start..end, selected.as_ref())?;
                produced += batch.num_rows();
                if batch.num_rows() > 0 {
                    batches.push(batch);
                }
                start = end;
            }
        }
        Ok(batches)
    }

    /// Rows `rows` of the projected columns, keeping only `selected` rows if given.
    fn read_rows(
        &self,
        segment: &Segment,
        rows: Range<usize>,
        selected: Option<&RoaringBitmap>,
    ) -> Result<RecordBatch> {
        let mask = selected.map(|bitmap| {
            let (start, end) = (rows.start as u32, rows.end as u32);
            let mut bits = vec![false; rows.len()];
            for row in bitmap.range(start..end) {
                bits[(row - start) as usize] = true;
            }
            BooleanArray::from(bits)
        });
        if let Some(mask) = &mask
            && mask.true_count() == 0
        {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let columns = self
            .projection
            .iter()
            .map(|&i| self.read_column(segment, i, rows.clone()))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        match mask {
            Some(mask) => Ok(filter_record_batch(&batch, &mask)?),
            None => Ok(batch),
        }
    }

    fn read_column(
        &self,
        segment: &Segment,
        table_index: usize,
        rows: Range<usize>,
    ) -> Result<ArrayRef> {
        let field = self.table_schema.field(table_index);
        let Some(index) = segment.footer().column_index(field.name()) else {
            return Ok(new_null_array(field.data_type(), rows.len()));
        };
        let mut array = segment
            .column(index)
            .map_err(to_df)?
            .slice(rows.start, rows.len());
        if let Some(dictionary) = array.as_any().downcast_ref::<DictionaryArray<Int32Type>>()
            && dictionary.values().len() > rows.len()
        {
            array = compact_dictionary(dictionary)?;
        }
        if array.data_type() == field.data_type() {
            Ok(array)
        } else {
            Ok(cast(&array, field.data_type())?)
        }
    }
}

/// The rows of a dictionary column with a dictionary of only the values they use,
/// still sorted, the keys remapped. A segment's dictionary may hold a value per row
/// (comments, ids), and operators above the scan that work on a dictionary (`LIKE`,
/// string functions) go over all of its values for every batch: for a batch of 8K
/// rows of a 200K-value column, 25 times the work. The work is the batch's: its keys
/// sorted, not a pass over the whole dictionary (as arrow's
/// `garbage_collect_dictionary` makes, with a map of every value).
pub fn compact_dictionary(array: &DictionaryArray<Int32Type>) -> Result<ArrayRef> {
    let keys = array.keys();
    let mut used: Vec<i32> = keys.iter().flatten().collect();
    if used.is_empty() {
        return Ok(Arc::new(array.clone()));
    }
    used.sort_unstable();
    used.dedup();
    let values = take(
        array.values().as_ref(),
        &Int32Array::from(used.clone()),
        None,
    )?;
    // A NULL row keeps some in-range key: its value is never read.
    let remapped = keys.unary::<_, Int32Type>(|k| used.binary_search(&k).unwrap_or(0) as i32);
    Ok(Arc::new(DictionaryArray::try_new(remapped, values)?))
}

fn to_df(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    #[test]
    fn a_compacted_dictionary_keeps_the_values_its_rows_use_in_order() {
        let values = StringArray::from(vec!["a", "b", "c", "d", "e"]);
        let keys = Int32Array::from(vec![Some(3), None, Some(1), Some(3), Some(4)]);
        let all = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        // Rows 1 to 3 (NULL, "b", "d") of the five.
        let rows = all.slice(1, 3);
        let compacted = compact_dictionary(&rows).unwrap();
        let compacted = compacted.as_dictionary::<Int32Type>();
        let kept: Vec<&str> = compacted
            .values()
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(kept, ["b", "d"]);
        let read: Vec<Option<String>> = cast(compacted, &DataType::Utf8)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect();
        assert_eq!(read, [None, Some("b".into()), Some("d".into())]);
        // Only NULLs: nothing to keep, the rows as they are.
        let nulls = all.slice(1, 1);
        assert_eq!(compact_dictionary(&nulls).unwrap().len(), 1);
    }
}
