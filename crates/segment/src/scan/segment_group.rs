//! `GROUP BY` one string dimension, one integer or date column, or one time bucket of
//! a segment scan, a batch at a time rather than a row at a time.
//!
//! [`SegmentGroupBy`] replaces an aggregate (Partial or Single) over a
//! [`SegmentScanExec`]'s rows (or rows filtered and projected from them) that
//! computes only `COUNT`, `SUM`s of 64-bit numbers and FLOATs, and `MIN`/`MAX` of
//! BIGINT or DOUBLE columns, grouped by one key, with [`SegmentAggregateExec`], whose
//! rows and schema are the aggregate's own:
//!
//! - A string dimension comes as keys into the segment's dictionary, which every
//!   batch of one segment shares: values accumulate into arrays indexed by key while
//!   the dictionary stays the same, and merge by value (one hash lookup per distinct
//!   value, not per row) when it changes.
//! - A BIGINT or DATE column whose values lie in a range of at most [`MAX_RANGE`]
//!   (by the segments' minimum and maximum) groups into arrays indexed by the value's
//!   offset in that range: no hashing at all. The range is only the plan's guess: a
//!   value outside it (or NULL) gets a slot after the range's, found by value.
//! - A time bucket (`date_part`, `date_trunc`, `date_bin`) is one value for a batch
//!   within one bucket (Grove's versions of the functions answer it once, and a
//!   segment's batches mostly are within one): the whole batch adds into that group
//!   with one vectorized sum per column. A batch across buckets goes row by row,
//!   looking each distinct value up once.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch, StringArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef,
};
use datafusion::arrow::util::bit_util;
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
    /// `MIN` and `MAX` of a DOUBLE column, compared as DataFusion's grouped `MIN` and
    /// `MAX` compare ([`min_float`]).
    MinFloat(usize),
    MaxFloat(usize),
    /// `MIN` and `MAX` of a BIGINT column.
    MinInt(usize),
    MaxInt(usize),
}

impl Aggregate {
    /// The input column it reads, if any.
    fn column(self) -> Option<usize> {
        match self {
            Aggregate::Count(column) => column,
            Aggregate::SumFloat(c)
            | Aggregate::SumFloat32(c)
            | Aggregate::SumInt(c)
            | Aggregate::MinFloat(c)
            | Aggregate::MaxFloat(c)
            | Aggregate::MinInt(c)
            | Aggregate::MaxInt(c) => Some(c),
        }
    }

    /// What its slots hold, and what a slot holds before its first value (what the
    /// first value replaces).
    fn slot(self) -> Slot {
        match self {
            Aggregate::Count(_) => Slot::Count,
            Aggregate::SumFloat(_) | Aggregate::SumFloat32(_) => Slot::Float(0.0),
            Aggregate::MinFloat(_) => Slot::Float(f64::MAX),
            Aggregate::MaxFloat(_) => Slot::Float(f64::MIN),
            Aggregate::SumInt(_) => Slot::Int(0),
            Aggregate::MinInt(_) => Slot::Int(i64::MAX),
            Aggregate::MaxInt(_) => Slot::Int(i64::MIN),
        }
    }
}

/// What an aggregate's slots hold: a count, or a DOUBLE or a BIGINT that starts at
/// the value given.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Count,
    Float(f64),
    Int(i64),
}

/// `MIN` of DOUBLEs as DataFusion's grouped `MIN` takes it: a value replaces the
/// slot's when it is smaller or either is NaN (and a slot starts at `f64::MAX`).
fn min_float(slot: &mut f64, value: f64) {
    if matches!(value.partial_cmp(slot), Some(Ordering::Less) | None) {
        *slot = value;
    }
}

/// `MAX` of DOUBLEs, as [`min_float`] the other way (a slot starts at `f64::MIN`).
fn max_float(slot: &mut f64, value: f64) {
    if matches!(value.partial_cmp(slot), Some(Ordering::Greater) | None) {
        *slot = value;
    }
}

fn add_float(slot: &mut f64, value: f64) {
    *slot += value;
}

fn add_int(slot: &mut i64, value: i64) {
    *slot = slot.wrapping_add(value);
}

fn min_int(slot: &mut i64, value: i64) {
    *slot = (*slot).min(value);
}

fn max_int(slot: &mut i64, value: i64) {
    *slot = (*slot).max(value);
}

/// The fewest rows per run, on average, for a batch's runs of one bucket to be added
/// a run at a time rather than row by row.
const RUN_ROWS: usize = 64;

/// The most values a segment's dictionary may have for grouping on its keys. A
/// larger one is compacted per batch by the scan (when larger than the batch), and
/// merging a batch's values by value then costs more than hashing its rows.
const MAX_DICTIONARY: usize = 1024;

/// The most slots a BIGINT or DATE key's range may take for grouping by offset in
/// it: per aggregate, 9 bytes a slot in each partition.
const MAX_RANGE: i64 = 1 << 20;

/// The most words a range key's slots may take in all partitions together: 128 MiB.
const MAX_RANGE_WORDS: usize = 1 << 24;

/// What rows are grouped by.
#[derive(Debug, Clone)]
enum Key {
    /// An input column of dictionary-encoded strings.
    Dictionary(usize),
    /// An input column of BIGINTs or DATEs, expected from `base` to `base + len - 1`.
    Range {
        column: usize,
        base: i64,
        len: usize,
    },
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
        let key = match group.downcast_ref::<Column>() {
            Some(column) => column_key(&input, column.index())?,
            None => {
                let function = group.downcast_ref::<ScalarFunctionExpr>()?;
                if !matches!(function.name(), "date_part" | "date_trunc" | "date_bin") {
                    return None;
                }
                Key::Bucket(group.clone())
            }
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
                (name, [arg]) => match (name, column(arg)?) {
                    ("sum", (index, DataType::Float64)) => Aggregate::SumFloat(index),
                    ("sum", (index, DataType::Float32)) => Aggregate::SumFloat32(index),
                    ("sum", (index, DataType::Int64)) => Aggregate::SumInt(index),
                    ("min", (index, DataType::Float64)) => Aggregate::MinFloat(index),
                    ("max", (index, DataType::Float64)) => Aggregate::MaxFloat(index),
                    ("min", (index, DataType::Int64)) => Aggregate::MinInt(index),
                    ("max", (index, DataType::Int64)) => Aggregate::MaxInt(index),
                    _ => return None,
                },
                _ => return None,
            });
        }
        // Every partition holds a row of words per slot of the range.
        if let Key::Range { len, .. } = key {
            let partitions = input.properties().partitioning.partition_count();
            let words = len * (1 + aggregates.len()) * partitions;
            if words > MAX_RANGE_WORDS {
                return None;
            }
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

/// How rows group by `column` of `input`'s rows: by dictionary key when it is a string
/// dimension known to be small in every segment, by offset in its range when it is a
/// BIGINT or DATE column known to lie in a small one.
fn column_key(input: &Arc<dyn ExecutionPlan>, column: usize) -> Option<Key> {
    let statistics = StatisticsContext::new()
        .compute(input.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let facts = statistics.column_statistics.get(column)?;
    let integer = |value: &ScalarValue| match value {
        ScalarValue::Int64(Some(v)) => Some(*v),
        ScalarValue::Date32(Some(v)) => Some(i64::from(*v)),
        _ => None,
    };
    match input.schema().field(column).data_type() {
        DataType::Dictionary(key, value)
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            let values = facts.distinct_count.get_value().copied()?;
            (values <= MAX_DICTIONARY).then_some(Key::Dictionary(column))
        }
        DataType::Int64 | DataType::Date32 => {
            let low = integer(facts.min_value.get_value()?)?;
            let high = integer(facts.max_value.get_value()?)?;
            let len = high.checked_sub(low)?.checked_add(1)?;
            // More slots than rows would cost more to set up and read than hashing.
            let rows = statistics
                .num_rows
                .get_value()
                .copied()
                .unwrap_or(usize::MAX);
            let worth = len > 0 && len <= MAX_RANGE && len as u64 <= (rows as u64).max(1024);
            worth.then_some(Key::Range {
                column,
                base: low,
                len: len as usize,
            })
        }
        _ => None,
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
            Key::Range { column, base, len } => {
                format!("column {column} in [{base}, {}]", base + (*len as i64 - 1))
            }
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
        let batch_size = context.session_config().batch_size().max(1);
        let mut input = self.input.execute(partition, context)?;
        let (key, aggregates) = (self.key.clone(), self.aggregates.clone());
        let schema = self.schema.clone();
        let answer = futures::stream::once(async move {
            let mut groups = Groups::new(&aggregates);
            match key {
                Key::Range { column, base, len } => {
                    let mut groups = RangeGroups::new(&aggregates, base, len);
                    while let Some(batch) = input.next().await {
                        groups.add(&batch?, column)?;
                    }
                    return groups.finish(&schema);
                }
                Key::Dictionary(column) => {
                    while let Some(batch) = input.next().await {
                        groups.add(&batch?, column)?;
                    }
                }
                Key::Bucket(expr) => {
                    while let Some(batch) = input.next().await {
                        groups.add_bucket(&batch?, &expr)?;
                    }
                }
            }
            groups.finish(&schema)
        })
        // The answer in batches of the session's size, as DataFusion's aggregate emits.
        .map(move |answer: Result<RecordBatch>| {
            let batches = match answer {
                Ok(all) => (0..all.num_rows())
                    .step_by(batch_size)
                    .map(|at| Ok(all.slice(at, batch_size.min(all.num_rows() - at))))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(batches)
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            answer,
        )))
    }
}

/// Per aggregate, its values per group (or per key of the current dictionary), whether
/// each slot saw a value, and what a new slot starts at.
#[derive(Debug, Clone)]
enum Values {
    Count(Vec<i64>),
    Float(Vec<f64>, Vec<bool>, f64),
    Int(Vec<i64>, Vec<bool>, i64),
}

impl Values {
    fn new(aggregate: Aggregate, len: usize) -> Values {
        match aggregate.slot() {
            Slot::Count => Values::Count(vec![0; len]),
            Slot::Float(start) => Values::Float(vec![start; len], vec![false; len], start),
            Slot::Int(start) => Values::Int(vec![start; len], vec![false; len], start),
        }
    }

    fn grow(&mut self, len: usize) {
        match self {
            Values::Count(v) => v.resize(len, 0),
            Values::Float(v, seen, start) => {
                v.resize(len, *start);
                seen.resize(len, false);
            }
            Values::Int(v, seen, start) => {
                v.resize(len, *start);
                seen.resize(len, false);
            }
        }
    }

    /// Adds slot `from` of `other` (the same aggregate) into slot `to`.
    fn merge(&mut self, aggregate: Aggregate, to: usize, other: &Values, from: usize) {
        match (self, other) {
            (Values::Count(v), Values::Count(o)) => v[to] += o[from],
            (Values::Float(v, seen, _), Values::Float(o, o_seen, _)) if o_seen[from] => {
                match aggregate {
                    Aggregate::MinFloat(_) => min_float(&mut v[to], o[from]),
                    Aggregate::MaxFloat(_) => max_float(&mut v[to], o[from]),
                    _ => add_float(&mut v[to], o[from]),
                }
                seen[to] = true;
            }
            (Values::Int(v, seen, _), Values::Int(o, o_seen, _)) if o_seen[from] => {
                match aggregate {
                    Aggregate::MinInt(_) => min_int(&mut v[to], o[from]),
                    Aggregate::MaxInt(_) => max_int(&mut v[to], o[from]),
                    _ => add_int(&mut v[to], o[from]),
                }
                seen[to] = true;
            }
            _ => {}
        }
    }

    /// Adds all of `batch` into slot `to`.
    fn add_batch(&mut self, to: usize, aggregate: Aggregate, batch: &RecordBatch) {
        use datafusion::arrow::compute::sum;
        let floats = |c: usize| batch.column(c).as_primitive::<Float64Type>();
        let ints = |c: usize| batch.column(c).as_primitive::<Int64Type>();
        match (aggregate, self) {
            (Aggregate::Count(None), Values::Count(v)) => v[to] += batch.num_rows() as i64,
            (Aggregate::Count(Some(c)), Values::Count(v)) => {
                let column = batch.column(c);
                v[to] += (column.len() - column.logical_null_count()) as i64;
            }
            (Aggregate::SumFloat(c), Values::Float(v, seen, _)) => {
                if let Some(total) = sum(floats(c)) {
                    v[to] += total;
                    seen[to] = true;
                }
            }
            (Aggregate::SumFloat32(c), Values::Float(v, seen, _)) => {
                if let Some(total) = crate::sum::add_floats(batch.column(c).as_ref()) {
                    v[to] += total;
                    seen[to] = true;
                }
            }
            (Aggregate::SumInt(c), Values::Int(v, seen, _)) => {
                if let Some(total) = sum(ints(c)) {
                    v[to] = v[to].wrapping_add(total);
                    seen[to] = true;
                }
            }
            (Aggregate::MinFloat(c), Values::Float(v, seen, _)) => {
                fold(floats(c), &mut v[to], &mut seen[to], min_float)
            }
            (Aggregate::MaxFloat(c), Values::Float(v, seen, _)) => {
                fold(floats(c), &mut v[to], &mut seen[to], max_float)
            }
            (Aggregate::MinInt(c), Values::Int(v, seen, _)) => {
                fold(ints(c), &mut v[to], &mut seen[to], min_int)
            }
            (Aggregate::MaxInt(c), Values::Int(v, seen, _)) => {
                fold(ints(c), &mut v[to], &mut seen[to], max_int)
            }
            _ => {}
        }
    }

    fn array(self) -> ArrayRef {
        let with_nulls = |seen: Vec<bool>| Some(seen.into());
        match self {
            Values::Count(v) => Arc::new(Int64Array::from(v)),
            Values::Float(v, seen, _) => Arc::new(Float64Array::new(v.into(), with_nulls(seen))),
            Values::Int(v, seen, _) => Arc::new(Int64Array::new(v.into(), with_nulls(seen))),
        }
    }
}

/// Folds the non-NULL values of `column` into `slot` with `combine`.
fn fold<T: ArrowPrimitiveType>(
    column: &PrimitiveArray<T>,
    slot: &mut T::Native,
    seen: &mut bool,
    combine: impl Fn(&mut T::Native, T::Native),
) {
    for value in column.iter().flatten() {
        combine(slot, value);
        *seen = true;
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
            let aggregates = self.aggregates.iter().zip(&mut self.merged).zip(&keyed);
            for ((aggregate, merged), keyed) in aggregates {
                merged.merge(*aggregate, group, keyed, slot);
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

/// Groups by a BIGINT or DATE key expected within a range: a key's slot is its
/// offset from `base`; a key outside the range, or NULL, gets a slot after the
/// range's, found by value.
///
/// A slot's state is one row of `width` words: its rows, then each aggregate's value
/// (a DOUBLE's bits, or a BIGINT). Aggregates add a batch a column at a time, and the
/// slots of [`CACHED_ROWS`] rows stay in the cache between columns, so a row costs one
/// miss however many aggregates there are.
struct RangeGroups {
    aggregates: Vec<Aggregate>,
    base: i64,
    len: usize,
    width: usize,
    /// What a slot's row starts as.
    start: Vec<u64>,
    state: Vec<u64>,
    /// Per aggregate, a bit per slot that saw a value, kept from its column's first
    /// NULL on. Until then every row had a value, and a slot saw one when it has rows.
    seen: Vec<Option<Vec<u8>>>,
    /// The keys of the slots after the range's, and their slots.
    others: Vec<Option<i64>>,
    other_slots: HashMap<Option<i64>, u32>,
}

/// How many rows [`RangeGroups`] adds a column at a time: their slots' rows (a cache
/// line or two each) stay in a core's L2 cache from one column to the next.
const CACHED_ROWS: usize = 1024;

/// The word of a slot's row that counts its rows, and the first of its aggregates'.
const ROWS: usize = 0;
const VALUES: usize = 1;

impl RangeGroups {
    fn new(aggregates: &[Aggregate], base: i64, len: usize) -> RangeGroups {
        let mut start = vec![0];
        start.extend(aggregates.iter().map(|a| match a.slot() {
            Slot::Count => 0,
            Slot::Float(start) => start.to_bits(),
            Slot::Int(start) => start as u64,
        }));
        RangeGroups {
            aggregates: aggregates.to_vec(),
            base,
            len,
            width: start.len(),
            state: start.repeat(len),
            start,
            seen: vec![None; aggregates.len()],
            others: Vec::new(),
            other_slots: HashMap::new(),
        }
    }

    fn add(&mut self, batch: &RecordBatch, column: usize) -> Result<()> {
        let slots = self.slots(batch.column(column))?;
        for start in (0..batch.num_rows()).step_by(CACHED_ROWS) {
            let len = CACHED_ROWS.min(batch.num_rows() - start);
            self.add_rows(&batch.slice(start, len), &slots[start..start + len]);
        }
        Ok(())
    }

    /// Adds rows in `slots` (few enough that their slots stay in the cache).
    fn add_rows(&mut self, batch: &RecordBatch, slots: &[u32]) {
        let width = self.width;
        for (index, aggregate) in self.aggregates.iter().enumerate() {
            let nulls = aggregate
                .column()
                .map_or(0, |c| batch.column(c).logical_null_count());
            if nulls > 0 && self.seen[index].is_none() {
                // The slots with rows so far saw values.
                let slots = self.state.len() / width;
                let mut bits = vec![0; slots.div_ceil(8)];
                for (slot, row) in self.state.chunks_exact(width).enumerate() {
                    if row[ROWS] > 0 {
                        bit_util::set_bit(&mut bits, slot);
                    }
                }
                self.seen[index] = Some(bits);
            }
        }
        for slot in slots {
            self.state[*slot as usize * width + ROWS] += 1;
        }
        let floats = |c: usize| {
            let column = batch.column(c).as_primitive::<Float64Type>();
            (&column.values()[..], column.nulls())
        };
        let ints = |c: usize| {
            let column = batch.column(c).as_primitive::<Int64Type>();
            (&column.values()[..], column.nulls())
        };
        let aggregates = self.aggregates.iter().zip(&mut self.seen).enumerate();
        for (index, (aggregate, seen)) in aggregates {
            let into = SlotWords {
                state: &mut self.state,
                width,
                word: VALUES + index,
                seen: seen.as_deref_mut(),
                slots,
            };
            match *aggregate {
                // The slot's rows.
                Aggregate::Count(None) => {}
                Aggregate::Count(Some(c)) => {
                    let nulls = batch.column(c).logical_nulls();
                    into.add(slots, nulls.as_ref(), |w, _| *w += 1)
                }
                Aggregate::SumFloat(c) => into.add_values(floats(c), on_float(add_float)),
                Aggregate::MinFloat(c) => into.add_values(floats(c), on_float(min_float)),
                Aggregate::MaxFloat(c) => into.add_values(floats(c), on_float(max_float)),
                Aggregate::SumFloat32(c) => {
                    let column = batch.column(c).as_primitive::<Float32Type>();
                    let add = on_float(add_float);
                    into.add_values((&column.values()[..], column.nulls()), |w, v: f32| {
                        add(w, f64::from(v))
                    })
                }
                Aggregate::SumInt(c) => into.add_values(ints(c), on_int(add_int)),
                Aggregate::MinInt(c) => into.add_values(ints(c), on_int(min_int)),
                Aggregate::MaxInt(c) => into.add_values(ints(c), on_int(max_int)),
            }
        }
    }

    /// Each row's slot by its key.
    fn slots(&mut self, keys: &ArrayRef) -> Result<Vec<u32>> {
        let keys = cast(keys, &DataType::Int64)?;
        let keys = keys.as_primitive::<Int64Type>();
        let mut slots = Vec::with_capacity(keys.len());
        let (base, len) = (self.base, self.len as u64);
        if keys.null_count() == 0 {
            for key in keys.values() {
                let offset = key.wrapping_sub(base) as u64;
                slots.push(if offset < len {
                    offset as u32
                } else {
                    self.other(Some(*key))
                });
            }
        } else {
            for key in keys {
                let offset = key.map_or(u64::MAX, |k| k.wrapping_sub(base) as u64);
                slots.push(if offset < len {
                    offset as u32
                } else {
                    self.other(key)
                });
            }
        }
        Ok(slots)
    }

    /// The slot of a key outside the range, made if new.
    fn other(&mut self, key: Option<i64>) -> u32 {
        if let Some(slot) = self.other_slots.get(&key) {
            return *slot;
        }
        let slot = self.state.len() / self.width;
        self.others.push(key);
        self.other_slots.insert(key, slot as u32);
        self.state.extend_from_slice(&self.start);
        for bits in self.seen.iter_mut().flatten() {
            bits.resize((slot + 1).div_ceil(8), 0);
        }
        slot as u32
    }

    /// The groups (slots with rows), in slot order.
    fn finish(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let (slots, rows): (Vec<usize>, Vec<&[u64]>) = self
            .state
            .chunks_exact(self.width)
            .enumerate()
            .filter(|(_, row)| row[ROWS] > 0)
            .unzip();
        let keys: Int64Array = slots
            .iter()
            .map(|slot| match slot.checked_sub(self.len) {
                None => Some(self.base + *slot as i64),
                Some(other) => self.others[other],
            })
            .collect();
        let mut columns = vec![cast(&keys, schema.field(0).data_type())?];
        for (index, aggregate) in self.aggregates.iter().enumerate() {
            let word = |row: &&[u64]| row[VALUES + index];
            let seen = || -> Option<NullBuffer> {
                let bits = self.seen[index].as_ref()?;
                Some(
                    slots
                        .iter()
                        .map(|slot| bit_util::get_bit(bits, *slot))
                        .collect(),
                )
            };
            // `COUNT(*)` is the slot's rows (see `add_rows`).
            let count = match aggregate {
                Aggregate::Count(None) => ROWS,
                _ => VALUES + index,
            };
            columns.push(match aggregate.slot() {
                Slot::Count => Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|row| row[count] as i64),
                )) as ArrayRef,
                Slot::Float(_) => Arc::new(Float64Array::new(
                    rows.iter().map(|row| f64::from_bits(word(row))).collect(),
                    seen(),
                )),
                Slot::Int(_) => Arc::new(Int64Array::new(
                    rows.iter().map(|row| word(row) as i64).collect(),
                    seen(),
                )),
            });
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Where one aggregate of [`RangeGroups`] adds a batch: word `word` of each row's
/// slot, and the slot's bit in `seen` when the aggregate keeps them.
struct SlotWords<'a> {
    state: &'a mut [u64],
    width: usize,
    word: usize,
    seen: Option<&'a mut [u8]>,
    slots: &'a [u32],
}

impl SlotWords<'_> {
    /// Adds each non-NULL row's value into its slot's word with `add`.
    fn add_values<T: Copy>(
        self,
        (values, nulls): (&[T], Option<&NullBuffer>),
        add: impl Fn(&mut u64, T),
    ) {
        let slots = self.slots;
        self.add_rows(slots.iter().zip(values), nulls, add);
    }

    /// Calls `add` for each non-NULL row (by `nulls`) with the row's slot's word.
    fn add(self, slots: &[u32], nulls: Option<&NullBuffer>, add: impl Fn(&mut u64, ())) {
        self.add_rows(slots.iter().map(|slot| (slot, &())), nulls, add);
    }

    fn add_rows<'v, T: Copy + 'v>(
        self,
        rows: impl Iterator<Item = (&'v u32, &'v T)>,
        nulls: Option<&NullBuffer>,
        add: impl Fn(&mut u64, T),
    ) {
        let (state, width, word) = (self.state, self.width, self.word);
        match (nulls, self.seen) {
            (None, None) => rows.for_each(|(slot, value)| {
                add(&mut state[*slot as usize * width + word], *value);
            }),
            (None, Some(seen)) => rows.for_each(|(slot, value)| {
                add(&mut state[*slot as usize * width + word], *value);
                bit_util::set_bit(seen, *slot as usize);
            }),
            (Some(nulls), seen) => {
                // A NULL in the column made its seen bits before this batch.
                let mut seen = seen;
                for (row, (slot, value)) in rows.enumerate() {
                    if nulls.is_valid(row) {
                        add(&mut state[*slot as usize * width + word], *value);
                        if let Some(seen) = seen.as_deref_mut() {
                            bit_util::set_bit(seen, *slot as usize);
                        }
                    }
                }
            }
        }
    }
}

/// `op` on a DOUBLE kept as its bits in a slot's word.
fn on_float(op: impl Fn(&mut f64, f64)) -> impl Fn(&mut u64, f64) {
    move |word, value| {
        let mut slot = f64::from_bits(*word);
        op(&mut slot, value);
        *word = slot.to_bits();
    }
}

/// `op` on a BIGINT kept in a slot's word.
fn on_int(op: impl Fn(&mut i64, i64)) -> impl Fn(&mut u64, i64) {
    move |word, value| {
        let mut slot = *word as i64;
        op(&mut slot, value);
        *word = slot as u64;
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
    let floats = |c: usize| {
        let column = batch.column(c).as_primitive::<Float64Type>();
        (&column.values()[..], column.nulls())
    };
    let ints = |c: usize| {
        let column = batch.column(c).as_primitive::<Int64Type>();
        (&column.values()[..], column.nulls())
    };
    match (aggregate, values) {
        (Aggregate::Count(None), Values::Count(counts)) => {
            for (count, batch) in counts.iter_mut().zip(rows) {
                *count += batch;
            }
        }
        (Aggregate::Count(Some(c)), Values::Count(counts)) => {
            // A NULL of a NULL column or of a dictionary's values counts as one.
            let nulls = batch.column(c).logical_nulls();
            for (row, slot) in slots.iter().enumerate() {
                counts[*slot as usize] += i64::from(nulls.as_ref().is_none_or(|n| n.is_valid(row)));
            }
        }
        (Aggregate::SumFloat(c), Values::Float(sums, seen, _)) => {
            add_all(slots, floats(c), rows, sums, seen, add_float)
        }
        (Aggregate::MinFloat(c), Values::Float(sums, seen, _)) => {
            add_all(slots, floats(c), rows, sums, seen, min_float)
        }
        (Aggregate::MaxFloat(c), Values::Float(sums, seen, _)) => {
            add_all(slots, floats(c), rows, sums, seen, max_float)
        }
        (Aggregate::SumFloat32(c), Values::Float(sums, seen, _)) => {
            let column = batch.column(c).as_primitive::<Float32Type>();
            let values = (&column.values()[..], column.nulls());
            add_all(slots, values, rows, sums, seen, |s, v| *s += f64::from(v));
        }
        (Aggregate::SumInt(c), Values::Int(sums, seen, _)) => {
            add_all(slots, ints(c), rows, sums, seen, add_int)
        }
        (Aggregate::MinInt(c), Values::Int(sums, seen, _)) => {
            add_all(slots, ints(c), rows, sums, seen, min_int)
        }
        (Aggregate::MaxInt(c), Values::Int(sums, seen, _)) => {
            add_all(slots, ints(c), rows, sums, seen, max_int)
        }
        _ => return Err(DataFusionError::Internal("mismatched aggregate".into())),
    }
    Ok(())
}

/// Adds each row's value into its slot with `add`, skipping NULLs; `rows` are the
/// batch's rows per slot.
fn add_all<T: Copy, S>(
    slots: &[u32],
    (values, nulls): (&[T], Option<&NullBuffer>),
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
            // BIGINT keys (NULL among them), by offset in their range.
            "SELECT n, COUNT(*) AS c, COUNT(revenue) AS r, SUM(revenue) AS s, \
             MIN(revenue) AS lo, MAX(revenue) AS hi, MIN(n) AS a, MAX(n) AS b, \
             SUM(weight) AS w FROM t GROUP BY n ORDER BY n",
            "SELECT n, SUM(revenue) AS s FROM t WHERE n > 30 GROUP BY n ORDER BY n",
            // A column of NULLs has no null buffer: every row is NULL all the same.
            "SELECT n, COUNT(z) AS c, COUNT(*) AS r FROM (SELECT n, NULL AS z FROM t) \
             GROUP BY n ORDER BY n",
            // MIN and MAX by dictionary key and by bucket.
            "SELECT country, MIN(revenue) AS lo, MAX(revenue) AS hi, MIN(n) AS a, \
             MAX(n) AS b FROM t GROUP BY country ORDER BY country",
            "SELECT date_trunc('day', __time) AS d, MIN(revenue) AS lo, MAX(n) AS b \
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
            "SELECT revenue, COUNT(*) FROM t GROUP BY revenue",
            "SELECT n, MIN(weight) FROM t GROUP BY n",
        ] {
            let (_, plan) = answer(&segments, 1, true, sql).await;
            assert!(!plan.contains("SegmentAggregateExec"), "{plan}");
        }
        // Nor does a dimension with more values per segment than it groups by key, or a
        // BIGINT whose range is wider than the rows read.
        let many: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let wide = [segment(dir.path(), 3, &many, &keys(2000, 2000))];
        for sql in [
            "SELECT country, COUNT(*) FROM t GROUP BY country",
            "SELECT n, COUNT(*) FROM t GROUP BY n",
        ] {
            let (_, plan) = answer(&wide, 1, true, sql).await;
            assert!(!plan.contains("SegmentAggregateExec"), "{plan}");
        }
    }

    /// Keys outside the expected range (and NULL) group by value after the range's,
    /// and DOUBLE extremes (NaN, infinities, negative zero) compare as DataFusion's
    /// grouped `MIN` and `MAX` do.
    #[tokio::test]
    async fn grouping_by_range_answers_keys_outside_it_as_datafusion_does() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
            Field::new("i", DataType::Int64, true),
        ]));
        let keys = [
            Some(3),
            Some(4),
            None,
            Some(-9),
            Some(3),
            Some(100),
            None,
            Some(4),
        ];
        let values = [
            Some(1.5),
            Some(f64::NEG_INFINITY),
            Some(-0.0),
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(0.0),
            Some(2.5),
        ];
        let ints = [
            Some(7),
            None,
            Some(-1),
            Some(i64::MIN),
            Some(9),
            Some(2),
            None,
            Some(-4),
        ];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(Float64Array::from(values.to_vec())),
                Arc::new(Int64Array::from(ints.to_vec())),
            ],
        )
        .unwrap();
        // The range holds 3 and 4 only; -9, 100 and NULL are outside it.
        assert_range_groups_as_datafusion(&batch, 3, 2, 5).await;
        // More rows than are added a column at a time, keys in and out of the range.
        let rows = 3 * CACHED_ROWS as i64 + 17;
        // Keys 10 to 29 only in the first rows, before any NULL value.
        let keys: Int64Array = (0..rows)
            .map(|i| match i {
                0..20 => Some(10 + i),
                _ => (i % 11 != 5).then_some((i * 37) % 50 - 40),
            })
            .collect();
        // Halves: their sums are exact in a DOUBLE, however they are added. NULLs from
        // the second batch on (and among the first one's rows for the BIGINTs).
        let values: Float64Array = (0..rows)
            .map(|i| (i < 2500 || i % 7 != 3).then_some((i % 101) as f64 * 0.5 - 20.0))
            .collect();
        let ints: Int64Array = (0..rows)
            .map(|i| (i < 1500 || i % 5 != 1).then_some(i * 3 - 4000))
            .collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(keys), Arc::new(values), Arc::new(ints)];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        assert_range_groups_as_datafusion(&batch, 0, 30, 2 * CACHED_ROWS + 3).await;
    }

    /// [`RangeGroups`] over `batch` (keys in column 0, in two batches split at `split`)
    /// answers as DataFusion's grouping does.
    async fn assert_range_groups_as_datafusion(
        batch: &RecordBatch,
        base: i64,
        len: usize,
        split: usize,
    ) {
        use datafusion::arrow::compute::{concat_batches, sort_to_indices, take};
        use datafusion::datasource::MemTable;
        let sql = "SELECT k, COUNT(*) AS c, COUNT(v) AS n, SUM(v) AS s, MIN(v) AS lo, \
                   MAX(v) AS hi, SUM(i) AS t, MIN(i) AS a, MAX(i) AS b FROM t GROUP BY k";
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let output: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let theirs = frame.collect().await.unwrap();
        let aggregates = [
            Aggregate::Count(None),
            Aggregate::Count(Some(1)),
            Aggregate::SumFloat(1),
            Aggregate::MinFloat(1),
            Aggregate::MaxFloat(1),
            Aggregate::SumInt(2),
            Aggregate::MinInt(2),
            Aggregate::MaxInt(2),
        ];
        let mut groups = RangeGroups::new(&aggregates, base, len);
        groups.add(&batch.slice(0, split), 0).unwrap();
        groups
            .add(&batch.slice(split, batch.num_rows() - split), 0)
            .unwrap();
        let ours = groups.finish(&output).unwrap();
        let sorted = |batches: &[RecordBatch]| {
            let all = concat_batches(&output, batches).unwrap();
            let order = sort_to_indices(all.column(0), None, None).unwrap();
            let columns = all
                .columns()
                .iter()
                .map(|c| take(c, &order, None).unwrap())
                .collect();
            let sorted = RecordBatch::try_new(output.clone(), columns).unwrap();
            pretty_format_batches(&[sorted]).unwrap().to_string()
        };
        assert_eq!(sorted(&[ours]), sorted(&theirs));
    }
}
