//! `GROUP BY` one string dimension or one time bucket of a segment scan, a batch at a
//! time rather than a row at a time.
//!
//! [`SegmentGroupBy`] replaces an aggregate (Partial or Single) over a
//! [`SegmentScanExec`]'s rows (or rows filtered and projected from them) that
//! computes only `COUNT` and `SUM`s of 64-bit numbers, grouped by one key, with
//! [`SegmentAggregateExec`], whose rows and schema are the aggregate's own:
//!
//! - A string dimension comes as keys into the segment's dictionary, which every
//!   batch of one segment shares: values accumulate into arrays indexed by key while
//!   the dictionary stays the same, and merge by value (one hash lookup per distinct
//!   value, not per row) when it changes.
//! - A time bucket (`date_part`, `date_trunc`, `date_bin`) is one value for a batch
//!   within one bucket (Grove's versions of the functions answer it once, and a
//!   segment's batches mostly are within one): the whole batch adds into that group
//!   with one vectorized sum per column. A batch across buckets goes row by row,
//!   looking each distinct value up once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef,
};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use super::SegmentScanExec;

/// One aggregate the exec computes, over input column indices.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    /// `COUNT(*)`, or `COUNT(column)` of its non-NULL values.
    Count(Option<usize>),
    /// `SUM` of a DOUBLE column: NULL when it saw no value.
    SumFloat(usize),
    /// `SUM` of a FLOAT column into a DOUBLE ([`FloatSum`](crate::sum::FloatSum)).
    SumFloat32(usize),
    /// `SUM` of a BIGINT column, wrapping as DataFusion's does.
    SumInt(usize),
}

/// The fewest rows per run, on average, for a batch's runs of one bucket to be added
/// a run at a time rather than row by row.
const RUN_ROWS: usize = 64;

/// The most values a segment's dictionary may have for grouping on its keys. A
/// larger one is compacted per batch by the scan (when larger than the batch), and
/// merging a batch's values by value then costs more than hashing its rows.
const MAX_DICTIONARY: usize = 1024;

/// What rows are grouped by.
#[derive(Debug, Clone)]
enum Key {
    /// An input column of dictionary-encoded strings.
    Dictionary(usize),
    /// A time bucket (`date_part`, `date_trunc`, `date_bin`), which Grove's versions
    /// answer once for a batch within one bucket: a segment's batches mostly are.
    Bucket(Arc<dyn PhysicalExpr>),
}

/// The physical optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct SegmentGroupBy;

impl PhysicalOptimizerRule for SegmentGroupBy {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match SegmentAggregateExec::replacing(&node) {
                Some(exec) => Transformed::new(Arc::new(exec), true, TreeNodeRecursion::Continue),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "grove_segment_group_by"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An aggregate of a segment scan grouped by one dictionary column or one time
/// bucket (see the module documentation).
#[derive(Debug)]
pub struct SegmentAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    key: Key,
    aggregates: Vec<Aggregate>,
    /// The replaced aggregate's output schema.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SegmentAggregateExec {
    /// The exec that computes `node`, if `node` is an aggregate it can compute.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Option<SegmentAggregateExec> {
        let aggregate = node.downcast_ref::<AggregateExec>()?;
        if !matches!(
            aggregate.mode(),
            AggregateMode::Partial | AggregateMode::Single
        ) || aggregate.limit_options().is_some()
            || aggregate.filter_expr().iter().any(Option::is_some)
            || !aggregate.group_expr().is_single()
        {
            return None;
        }
        let input = aggregate.input().clone();
        if !reads_segments(&input) {
            return None;
        }
        let schema = input.schema();
        let [(group, _)] = aggregate.group_expr().expr() else {
            return None;
        };
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let key = if let Some(column) = group.downcast_ref::<Column>() {
            if schema.field(column.index()).data_type() != &dictionary {
                return None;
            }
            // Only a dictionary known to be small in every segment.
            let statistics = StatisticsContext::new()
                .compute(input.as_ref(), &StatisticsArgs::new())
                .ok()?;
            let values = statistics
                .column_statistics
                .get(column.index())?
                .distinct_count
                .get_value()
                .copied()?;
            if values > MAX_DICTIONARY {
                return None;
            }
            Key::Dictionary(column.index())
        } else {
            let function = group.downcast_ref::<ScalarFunctionExpr>()?;
            if !matches!(function.name(), "date_part" | "date_trunc" | "date_bin") {
                return None;
            }
            Key::Bucket(group.clone())
        };
        if aggregate.schema().fields().len() != 1 + aggregate.aggr_expr().len() {
            return None;
        }
        let mut aggregates = Vec::new();
        for expr in aggregate.aggr_expr() {
            if expr.is_distinct() || !expr.order_bys().is_empty() {
                return None;
            }
            let args = expr.expressions();
            let column = |arg: &Arc<dyn PhysicalExpr>| {
                let index = arg.downcast_ref::<Column>()?.index();
                Some((index, schema.field(index).data_type().clone()))
            };
            aggregates.push(match (expr.fun().name(), args.as_slice()) {
                ("count", [arg])
                    if arg
                        .downcast_ref::<Literal>()
                        .is_some_and(|l| !l.value().is_null()) =>
                {
                    Aggregate::Count(None)
                }
                ("count", [arg]) => Aggregate::Count(Some(column(arg)?.0)),
                ("sum", [arg]) => match column(arg)? {
                    (index, DataType::Float64) => Aggregate::SumFloat(index),
                    (index, DataType::Float32) => Aggregate::SumFloat32(index),
                    (index, DataType::Int64) => Aggregate::SumInt(index),
                    _ => return None,
                },
                _ => return None,
            });
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(aggregate.schema()),
            input.properties().partitioning.clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(SegmentAggregateExec {
            input,
            key,
            aggregates,
            schema: aggregate.schema(),
            properties: Arc::new(properties),
        })
    }
}

/// Whether `plan` is a segment scan, or filters and projections of one: operators
/// whose batches keep the scan's dictionaries.
fn reads_segments(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_plan::coop::CooperativeExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    if plan.downcast_ref::<SegmentScanExec>().is_some() {
        return true;
    }
    let passes = plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some();
    match plan.children().as_slice() {
        [child] if passes => reads_segments(child),
        _ => false,
    }
}

impl DisplayAs for SegmentAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let key = match &self.key {
            Key::Dictionary(column) => format!("column {column}"),
            Key::Bucket(expr) => expr.to_string(),
        };
        write!(
            f,
            "SegmentAggregateExec: key={key}, output=[{}]",
            names.join(", ")
        )
    }
}

impl ExecutionPlan for SegmentAggregateExec {
    fn name(&self) -> &str {
        "SegmentAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) if input.schema() == self.input.schema() => {
                Ok(Arc::new(SegmentAggregateExec {
                    input,
                    key: self.key.clone(),
                    aggregates: self.aggregates.clone(),
                    schema: self.schema.clone(),
                    properties: self.properties.clone(),
                }))
            }
            _ => Err(DataFusionError::Internal(
                "SegmentAggregateExec takes its one input back".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let (key, aggregates) = (self.key.clone(), self.aggregates.clone());
        let schema = self.schema.clone();
        let answer = futures::stream::once(async move {
            let mut groups = Groups::new(&aggregates);
            while let Some(batch) = input.next().await {
                match &key {
                    Key::Dictionary(column) => groups.add(&batch?, *column)?,
                    Key::Bucket(expr) => groups.add_bucket(&batch?, expr)?,
                }
            }
            groups.finish(&schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            answer,
        )))
    }
}

/// Per aggregate, its values per group (or per key of the current dictionary).
#[derive(Debug, Clone)]
enum Values {
    Count(Vec<i64>),
    Float(Vec<f64>, Vec<bool>),
    Int(Vec<i64>, Vec<bool>),
}

impl Values {
    fn new(aggregate: Aggregate, len: usize) -> Values {
        match aggregate {
            Aggregate::Count(_) => Values::Count(vec![0; len]),
            Aggregate::SumFloat(_) | Aggregate::SumFloat32(_) => {
                Values::Float(vec![0.0; len], vec![false; len])
            }
            Aggregate::SumInt(_) => Values::Int(vec![0; len], vec![false; len]),
        }
    }

    fn grow(&mut self, len: usize) {
        match self {
            Values::Count(v) => v.resize(len, 0),
            Values::Float(v, seen) => {
                v.resize(len, 0.0);
                seen.resize(len, false);
            }
            Values::Int(v, seen) => {
                v.resize(len, 0);
                seen.resize(len, false);
            }
        }
    }

    /// Adds slot `from` of `other` (the same aggregate) into slot `to`.
    fn merge(&mut self, to: usize, other: &Values, from: usize) {
        match (self, other) {
            (Values::Count(v), Values::Count(o)) => v[to] += o[from],
            (Values::Float(v, seen), Values::Float(o, o_seen)) if o_seen[from] => {
                v[to] += o[from];
                seen[to] = true;
            }
            (Values::Int(v, seen), Values::Int(o, o_seen)) if o_seen[from] => {
                v[to] = v[to].wrapping_add(o[from]);
                seen[to] = true;
            }
            _ => {}
        }
    }

    /// Adds all of `batch` into slot `to`.
    fn add_batch(&mut self, to: usize, aggregate: Aggregate, batch: &RecordBatch) {
        use datafusion::arrow::compute::sum;
        match (aggregate, self) {
            (Aggregate::Count(None), Values::Count(v)) => v[to] += batch.num_rows() as i64,
            (Aggregate::Count(Some(c)), Values::Count(v)) => {
                let column = batch.column(c);
                v[to] += (column.len() - column.null_count()) as i64;
            }
            (Aggregate::SumFloat(c), Values::Float(v, seen)) => {
                if let Some(total) = sum(batch.column(c).as_primitive::<Float64Type>()) {
                    v[to] += total;
                    seen[to] = true;
                }
            }
            (Aggregate::SumFloat32(c), Values::Float(v, seen)) => {
                if let Some(total) = crate::sum::add_floats(batch.column(c).as_ref()) {
                    v[to] += total;
                    seen[to] = true;
                }
            }
            (Aggregate::SumInt(c), Values::Int(v, seen)) => {
                if let Some(total) = sum(batch.column(c).as_primitive::<Int64Type>()) {
                    v[to] = v[to].wrapping_add(total);
                    seen[to] = true;
                }
            }
            _ => {}
        }
    }

    fn array(self) -> ArrayRef {
        let with_nulls = |seen: Vec<bool>| Some(seen.into());
        match self {
            Values::Count(v) => Arc::new(Int64Array::from(v)),
            Values::Float(v, seen) => Arc::new(Float64Array::new(v.into(), with_nulls(seen))),
            Values::Int(v, seen) => Arc::new(Int64Array::new(v.into(), with_nulls(seen))),
        }
    }
}

/// The groups seen so far: by value, and by key of the dictionary being read.
struct Groups {
    aggregates: Vec<Aggregate>,
    /// The dictionary the keyed values refer to.
    dictionary: Option<ArrayRef>,
    /// Per key of `dictionary` (and one slot after them for NULL): rows seen, and
    /// each aggregate's values.
    keyed_rows: Vec<i64>,
    keyed: Vec<Values>,
    /// Merged groups: their values, index by value, aggregates.
    names: Vec<ScalarValue>,
    index: HashMap<ScalarValue, usize>,
    merged: Vec<Values>,
}

impl Groups {
    fn new(aggregates: &[Aggregate]) -> Groups {
        Groups {
            aggregates: aggregates.to_vec(),
            dictionary: None,
            keyed_rows: Vec::new(),
            keyed: Vec::new(),
            names: Vec::new(),
            index: HashMap::new(),
            merged: aggregates.iter().map(|a| Values::new(*a, 0)).collect(),
        }
    }

    fn add(&mut self, batch: &RecordBatch, key: usize) -> Result<()> {
        let column = batch.column(key).as_dictionary::<Int32Type>();
        let values = column.values();
        if !self
            .dictionary
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, values))
        {
            self.flush()?;
            let slots = values.len() + 1;
            self.dictionary = Some(values.clone());
            self.keyed_rows = vec![0; slots];
            self.keyed = self
                .aggregates
                .iter()
                .map(|a| Values::new(*a, slots))
                .collect();
        }
        let null_slot = values.len();
        let keys = column.keys();
        let slots: Vec<u32> = if keys.null_count() == 0 {
            keys.values().iter().map(|k| *k as u32).collect()
        } else {
            keys.iter()
                .map(|k| k.map_or(null_slot as u32, |k| k as u32))
                .collect()
        };
        if slots.iter().any(|s| *s as usize > null_slot) {
            return Err(DataFusionError::Internal(
                "a dictionary key beyond its values".into(),
            ));
        }
        let rows = rows_per_slot(&slots, null_slot + 1);
        for (all, batch) in self.keyed_rows.iter_mut().zip(&rows) {
            *all += batch;
        }
        for (aggregate, values) in self.aggregates.iter().zip(&mut self.keyed) {
            accumulate(*aggregate, values, batch, &slots, &rows)?;
        }
        Ok(())
    }

    /// Merges the keyed values into the groups by value.
    fn flush(&mut self) -> Result<()> {
        let Some(dictionary) = self.dictionary.take() else {
            return Ok(());
        };
        let strings: &StringArray = dictionary.as_string_opt::<i32>().ok_or_else(|| {
            DataFusionError::Internal("a dictionary of other than strings".into())
        })?;
        let keyed_rows = std::mem::take(&mut self.keyed_rows);
        let keyed = std::mem::take(&mut self.keyed);
        for (slot, rows) in keyed_rows.iter().enumerate() {
            if *rows == 0 {
                continue;
            }
            let name = (slot < strings.len() && strings.is_valid(slot))
                .then(|| strings.value(slot).to_string());
            let group = self.group_of(ScalarValue::Utf8(name));
            for (merged, keyed) in self.merged.iter_mut().zip(&keyed) {
                merged.merge(group, keyed, slot);
            }
        }
        Ok(())
    }

    /// The merged group of `value`, made if new.
    fn group_of(&mut self, value: ScalarValue) -> usize {
        if let Some(group) = self.index.get(&value) {
            return *group;
        }
        let group = self.names.len();
        self.names.push(value.clone());
        self.index.insert(value, group);
        for values in &mut self.merged {
            values.grow(group + 1);
        }
        group
    }

    /// Adds all of `batch` into merged group `group`.
    fn add_whole(&mut self, group: usize, batch: &RecordBatch) {
        for (aggregate, values) in self.aggregates.iter().zip(&mut self.merged) {
            values.add_batch(group, *aggregate, batch);
        }
    }

    /// Adds a batch grouped by a time bucket: all of it at once when the bucket is
    /// one value for the batch, else row by row.
    fn add_bucket(&mut self, batch: &RecordBatch, key: &Arc<dyn PhysicalExpr>) -> Result<()> {
        let keys = match key.evaluate(batch)? {
            ColumnarValue::Scalar(value) => {
                let group = self.group_of(value);
                self.add_whole(group, batch);
                return Ok(());
            }
            ColumnarValue::Array(keys) => keys,
        };
        let integers = cast(&keys, &DataType::Int64).ok();
        let integers = integers.as_ref().map(|i| i.as_primitive::<Int64Type>());
        // A segment's rows come in time order, so a bucket of its times is runs of
        // one value: each run adds whole, as a slice of the batch.
        if let Some(integers) = integers.filter(|i| i.null_count() == 0) {
            let values = integers.values();
            let runs = 1 + values.windows(2).filter(|w| w[0] != w[1]).count();
            if runs * RUN_ROWS <= values.len() {
                let mut start = 0;
                while start < values.len() {
                    let value = values[start];
                    let len = values[start..].iter().take_while(|v| **v == value).count();
                    let group = self.group_of(ScalarValue::try_from_array(&keys, start)?);
                    self.add_whole(group, &batch.slice(start, len));
                    start += len;
                }
                return Ok(());
            }
        }
        // Otherwise row by row, each distinct value looked up once (by its integer
        // when it has one), and a row with its predecessor's value not at all.
        let mut seen: HashMap<Option<i64>, u32> = HashMap::new();
        let mut slots = Vec::with_capacity(keys.len());
        let mut last: Option<(Option<i64>, u32)> = None;
        for row in 0..keys.len() {
            let slot = match integers {
                Some(integers) => {
                    let value = integers.is_valid(row).then(|| integers.value(row));
                    match last {
                        Some((previous, slot)) if previous == value => slot,
                        _ => {
                            let slot = match seen.get(&value) {
                                Some(slot) => *slot,
                                None => {
                                    let group =
                                        self.group_of(ScalarValue::try_from_array(&keys, row)?);
                                    seen.insert(value, group as u32);
                                    group as u32
                                }
                            };
                            last = Some((value, slot));
                            slot
                        }
                    }
                }
                None => self.group_of(ScalarValue::try_from_array(&keys, row)?) as u32,
            };
            slots.push(slot);
        }
        let rows = rows_per_slot(&slots, self.names.len());
        for (aggregate, values) in self.aggregates.iter().zip(&mut self.merged) {
            accumulate(*aggregate, values, batch, &slots, &rows)?;
        }
        Ok(())
    }

    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.flush()?;
        let key_type = schema.field(0).data_type();
        let names = if self.names.is_empty() {
            datafusion::arrow::array::new_empty_array(key_type)
        } else {
            ScalarValue::iter_to_array(self.names)?
        };
        let mut columns = vec![cast(&names, key_type)?];
        columns.extend(self.merged.into_iter().map(Values::array));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// How many of a batch's rows are in each of `len` slots: what `COUNT(*)` adds,
/// and the slots a column without NULLs has values in.
fn rows_per_slot(slots: &[u32], len: usize) -> Vec<i64> {
    let mut rows = vec![0i64; len];
    for slot in slots {
        rows[*slot as usize] += 1;
    }
    rows
}

/// Adds each row of `batch` into `values` at its slot; `rows` are the batch's rows
/// per slot.
fn accumulate(
    aggregate: Aggregate,
    values: &mut Values,
    batch: &RecordBatch,
    slots: &[u32],
    rows: &[i64],
) -> Result<()> {
    match (aggregate, values) {
        (Aggregate::Count(None), Values::Count(counts)) => {
            for (count, batch) in counts.iter_mut().zip(rows) {
                *count += batch;
            }
        }
        (Aggregate::Count(Some(c)), Values::Count(counts)) => {
            let column = batch.column(c);
            for (row, slot) in slots.iter().enumerate() {
                counts[*slot as usize] += i64::from(column.is_valid(row));
            }
        }
        (Aggregate::SumFloat(c), Values::Float(sums, seen)) => {
            let column = batch.column(c).as_primitive::<Float64Type>();
            let values = (&column.values()[..], column.nulls());
            add_all(slots, values, rows, sums, seen, |s, v| *s += v);
        }
        (Aggregate::SumFloat32(c), Values::Float(sums, seen)) => {
            let column = batch.column(c).as_primitive::<Float32Type>();
            let values = (&column.values()[..], column.nulls());
            add_all(slots, values, rows, sums, seen, |s, v| *s += f64::from(v));
        }
        (Aggregate::SumInt(c), Values::Int(sums, seen)) => {
            let column = batch.column(c).as_primitive::<Int64Type>();
            let values = (&column.values()[..], column.nulls());
            add_all(slots, values, rows, sums, seen, |s, v| {
                *s = s.wrapping_add(v)
            });
        }
        _ => return Err(DataFusionError::Internal("mismatched aggregate".into())),
    }
    Ok(())
}

/// Adds each row's value into its slot, skipping NULLs; `rows` are the batch's rows
/// per slot.
fn add_all<T: Copy, S>(
    slots: &[u32],
    (values, nulls): (&[T], Option<&datafusion::arrow::buffer::NullBuffer>),
    rows: &[i64],
    sums: &mut [S],
    seen: &mut [bool],
    add: impl Fn(&mut S, T),
) {
    match nulls {
        None => {
            for (slot, value) in slots.iter().zip(values) {
                add(&mut sums[*slot as usize], *value);
            }
            for (seen, rows) in seen.iter_mut().zip(rows) {
                *seen |= *rows > 0;
            }
        }
        Some(nulls) => {
            for (row, (slot, value)) in slots.iter().zip(values).enumerate() {
                if nulls.is_valid(row) {
                    add(&mut sums[*slot as usize], *value);
                    seen[*slot as usize] = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use datafusion::arrow::array::{DictionaryArray, Int32Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::{Session, TableProvider};
    use datafusion::datasource::TableType;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::logical_expr::Expr;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::format::{ColumnRole, Segment, write_segment};
    use crate::scan::ScanSegment;
    use crate::{Interval, SegmentId};

    const DAY: i64 = 86_400_000;

    #[derive(Debug)]
    struct Segments(Vec<Arc<Segment>>);

    #[async_trait]
    impl TableProvider for Segments {
        fn schema(&self) -> SchemaRef {
            schema()
        }

        fn table_type(&self) -> TableType {
            TableType::Base
        }

        async fn scan(
            &self,
            state: &dyn Session,
            projection: Option<&Vec<usize>>,
            _filters: &[Expr],
            _limit: Option<usize>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            let projection = projection.cloned().unwrap_or_else(|| (0..4).collect());
            let segments = self
                .0
                .iter()
                .map(|s| ScanSegment {
                    segment: Arc::clone(s),
                    intervals: vec![s.interval()],
                })
                .collect();
            let partitions = state.config().target_partitions();
            Ok(Arc::new(SegmentScanExec::new(
                schema(),
                projection,
                segments,
                None,
                None,
                partitions,
            )?))
        }
    }

    fn schema() -> SchemaRef {
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        Arc::new(Schema::new(vec![
            Field::new("__time", utc, false),
            Field::new("country", dictionary, true),
            Field::new("revenue", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("weight", DataType::Float32, true),
        ]))
    }

    /// A day's segment: `keys` into `countries` (NULL for no country), with NULL
    /// metrics on every third row.
    fn segment(
        dir: &std::path::Path,
        day: i64,
        countries: &[&str],
        keys: &[Option<i32>],
    ) -> Arc<Segment> {
        let rows = keys.len() as i64;
        let times = (0..rows).map(|i| day * DAY + i * 1000);
        let country = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys.to_vec()),
            Arc::new(StringArray::from(countries.to_vec())) as ArrayRef,
        )
        .unwrap();
        let revenue: Float64Array = (0..rows)
            .map(|i| (i % 3 != 0).then_some(i as f64 * 1.5))
            .collect();
        let n: Int64Array = (0..rows).map(|i| (i % 3 != 1).then_some(i * 7)).collect();
        // Halves: their sums are exact in a DOUBLE, however they are added.
        let weight: datafusion::arrow::array::Float32Array = (0..rows)
            .map(|i| (i % 4 != 2).then_some(i as f32 * 0.5))
            .collect();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(times).with_timezone("UTC")),
                Arc::new(country),
                Arc::new(revenue),
                Arc::new(n),
                Arc::new(weight),
            ],
        )
        .unwrap();
        let id = SegmentId {
            datasource: "t".into(),
            interval: Interval::new(day * DAY, (day + 1) * DAY).unwrap(),
            version: "v1".into(),
            partition: 0,
        };
        let path = dir.join(format!("{day}.segment"));
        let roles = [
            ColumnRole::Time,
            ColumnRole::Dimension,
            ColumnRole::Metric,
            ColumnRole::Metric,
            ColumnRole::Metric,
        ];
        write_segment(&path, &id, &batch, &roles).unwrap();
        Segment::open(&path).unwrap()
    }

    /// The answer, as text, and the physical plan.
    async fn answer(
        segments: &[Arc<Segment>],
        partitions: usize,
        rule: bool,
        sql: &str,
    ) -> (String, String) {
        answer_in(segments, partitions, 4, rule, sql).await
    }

    async fn answer_in(
        segments: &[Arc<Segment>],
        partitions: usize,
        batch_size: usize,
        rule: bool,
        sql: &str,
    ) -> (String, String) {
        let config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(batch_size);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(SegmentGroupBy));
        }
        let ctx = SessionContext::new_with_state(state.build());
        // Grove's engines: FLOAT sums without a cast (the other run: DataFusion's).
        if rule {
            ctx.register_udaf(crate::sum::FloatSum::udaf());
        }
        ctx.register_table("t", Arc::new(Segments(segments.to_vec())))
            .unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let batches = frame.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), shown)
    }

    #[tokio::test]
    async fn grouping_on_dictionary_keys_answers_as_datafusion_does() {
        let dir = tempfile::tempdir().unwrap();
        let keys = |n: i32, of: i32| -> Vec<Option<i32>> {
            (0..n).map(|i| (i % 5 != 4).then_some(i % of)).collect()
        };
        let segments = vec![
            segment(dir.path(), 0, &["de", "fr", "nl"], &keys(23, 3)),
            // Another dictionary, sharing "fr", with a value no row uses.
            segment(dir.path(), 1, &["fr", "jp", "zz"], &keys(17, 2)),
        ];
        let queries = [
            "SELECT country, COUNT(*) AS c, COUNT(revenue) AS r, SUM(revenue) AS s, \
             SUM(n) AS k, SUM(weight) AS w FROM t GROUP BY country ORDER BY country",
            "SELECT country, SUM(n) AS k FROM t WHERE n IS NULL GROUP BY country \
             ORDER BY country",
            // Time buckets: DataFusion's functions answer row by row here (Grove's
            // once per batch in one bucket, as the SQL tests run them).
            "SELECT date_trunc('day', __time) AS d, COUNT(*) AS c, SUM(revenue) AS s, \
             SUM(n) AS k, SUM(weight) AS w FROM t GROUP BY 1 ORDER BY 1",
            "SELECT date_part('second', __time) AS p, COUNT(n) AS c, SUM(revenue) AS s \
             FROM t GROUP BY 1 ORDER BY 1",
        ];
        for sql in queries {
            for partitions in [1, 2] {
                let (theirs, plain) = answer(&segments, partitions, false, sql).await;
                let (ours, plan) = answer(&segments, partitions, true, sql).await;
                assert!(!plain.contains("SegmentAggregateExec"), "{plain}");
                assert!(plan.contains("SegmentAggregateExec"), "{plan}");
                assert_eq!(ours, theirs, "{sql} in {partitions} partitions:\n{plan}");
            }
        }
        // Large batches of one bucket (added a run at a time) and of many (row by row).
        let long = [segment(dir.path(), 2, &["de", "fr"], &keys(300, 2))];
        for sql in [
            "SELECT date_trunc('hour', __time) AS h, COUNT(*) AS c, SUM(revenue) AS s, \
             SUM(n) AS k, SUM(weight) AS w FROM t GROUP BY 1 ORDER BY 1",
            "SELECT date_trunc('minute', __time) AS m, COUNT(*) AS c, SUM(n) AS k \
             FROM t GROUP BY 1 ORDER BY 1",
        ] {
            let (theirs, _) = answer_in(&long, 1, 512, false, sql).await;
            let (ours, plan) = answer_in(&long, 1, 512, true, sql).await;
            assert!(plan.contains("SegmentAggregateExec"), "{plan}");
            assert_eq!(ours, theirs, "{sql}");
        }
        // An aggregate it does not compute, or a key other than a dictionary or a
        // time bucket, stays DataFusion's.
        for sql in [
            "SELECT country, AVG(revenue) FROM t GROUP BY country",
            "SELECT n, COUNT(*) FROM t GROUP BY n",
        ] {
            let (_, plan) = answer(&segments, 1, true, sql).await;
            assert!(!plan.contains("SegmentAggregateExec"), "{plan}");
        }
        // Nor does a dimension with more values per segment than it groups by key.
        let many: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let wide = [segment(dir.path(), 3, &many, &keys(2000, 2000))];
        let sql = "SELECT country, COUNT(*) FROM t GROUP BY country";
        let (_, plan) = answer(&wide, 1, true, sql).await;
        assert!(!plan.contains("SegmentAggregateExec"), "{plan}");
    }
}
