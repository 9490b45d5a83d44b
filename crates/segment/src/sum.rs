//! [`FloatSum`]: SQL's `SUM` that adds FLOAT (32-bit) values into a DOUBLE as it reads
//! them. DataFusion's `sum` coerces its FLOAT argument to DOUBLE, which casts every row
//! into a new array before adding it up: twice the bytes written as read. This one
//! takes the FLOAT column as it is and widens each value in the adding loop (the same
//! DOUBLE answer, as Druid's `floatSum` and DataFusion give); every other argument type,
//! `SUM(DISTINCT ..)` and window frames go to DataFusion's `sum` unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Float32Type, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature, Volatility,
};
use datafusion::physical_expr::NullState;

/// `sum`, with FLOAT arguments added without a cast (see the module documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FloatSum {
    inner: AggregateUDF,
    signature: Signature,
}

impl FloatSum {
    /// The function, to register in place of DataFusion's `sum`.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(FloatSum {
            inner: datafusion::functions_aggregate::sum::sum_udaf()
                .as_ref()
                .clone(),
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }

    /// Whether the argument is a FLOAT column.
    fn of_floats(args: &AccumulatorArgs) -> bool {
        args.expr_fields
            .first()
            .is_some_and(|f| *f.data_type() == DataType::Float32)
    }

    /// Whether `args` are a FLOAT column added row by row (not distinct).
    fn adds_floats(args: &AccumulatorArgs) -> bool {
        !args.is_distinct && Self::of_floats(args)
    }

    /// `args` as DataFusion's `sum` sees them after its coercion: a DOUBLE argument.
    fn inner_accumulator(
        &self,
        args: AccumulatorArgs,
        make: impl FnOnce(&AggregateUDF, AccumulatorArgs) -> Result<Box<dyn Accumulator>>,
    ) -> Result<Box<dyn Accumulator>> {
        if !Self::of_floats(&args) {
            return make(&self.inner, args);
        }
        let widened: Vec<FieldRef> = args
            .expr_fields
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_data_type(DataType::Float64)))
            .collect();
        let inner = make(
            &self.inner,
            AccumulatorArgs {
                expr_fields: &widened,
                ..args
            },
        )?;
        Ok(Box::new(Widening(inner)))
    }
}

impl AggregateUDFImpl for FloatSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// A FLOAT stays a FLOAT; any other argument is coerced as DataFusion's `sum`
    /// coerces it (small integers to BIGINT, DOUBLE and decimals as they are).
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if let [DataType::Float32] = arg_types {
            return Ok(arg_types.to_vec());
        }
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| {
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "arg",
                    t.clone(),
                    true,
                ))
            })
            .collect();
        let coerced = datafusion::logical_expr::type_coercion::functions::fields_with_udf(
            &fields,
            &self.inner,
        )?;
        Ok(coerced.iter().map(|f| f.data_type().clone()).collect())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Float32] => Ok(DataType::Float64),
            _ => self.inner.return_type(arg_types),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if Self::adds_floats(&args) {
            return Ok(Box::new(FloatSumAccumulator::default()));
        }
        self.inner_accumulator(args, |inner, args| inner.accumulator(args))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        // The state is that of a DOUBLE sum: its return type.
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        Self::adds_floats(&args) || self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if Self::adds_floats(&args) {
            return Ok(Box::new(FloatSumGroups::default()));
        }
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner_accumulator(args, |inner, args| {
            inner.inner().create_sliding_accumulator(args)
        })
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
}

/// Adds FLOAT values into a DOUBLE; NULL until a value is seen.
#[derive(Debug, Default)]
struct FloatSumAccumulator {
    sum: Option<f64>,
}

/// The sum of the non-null values of a FLOAT array, each widened as it is added;
/// `None` when all are NULL. Added in independent lanes, 64 values at a time, so
/// the loop widens and adds whole vectors (a single running sum waits on each add).
pub(crate) fn add_floats(values: &dyn Array) -> Option<f64> {
    const LANES: usize = 16;
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() == values.len() {
        return None;
    }
    let raw: &[f32] = values.values();
    let mut lanes = [0f64; LANES];
    let mut tail = 0f64;
    match values.nulls() {
        None => {
            let chunks = raw.chunks_exact(LANES);
            tail = chunks.remainder().iter().map(|v| f64::from(*v)).sum();
            for chunk in chunks {
                for (lane, value) in lanes.iter_mut().zip(chunk) {
                    *lane += f64::from(*value);
                }
            }
        }
        Some(nulls) => {
            // A NULL slot adds 0, whatever it holds; the validity bits 64 at a time.
            let bits = nulls.inner().bit_chunks();
            let chunks = raw.chunks_exact(64);
            let remainder = chunks.remainder();
            for (chunk, mask) in chunks.zip(bits.iter()) {
                for (i, value) in chunk.iter().enumerate() {
                    let valid = (mask >> i) & 1 == 1;
                    lanes[i % LANES] += if valid { f64::from(*value) } else { 0.0 };
                }
            }
            let mask = bits.remainder_bits();
            for (i, value) in remainder.iter().enumerate() {
                if (mask >> i) & 1 == 1 {
                    tail += f64::from(*value);
                }
            }
        }
    }
    Some(lanes.iter().sum::<f64>() + tail)
}

impl Accumulator for FloatSumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(sum) = add_floats(values[0].as_ref()) {
            *self.sum.get_or_insert(0.0) += sum;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_primitive::<Float64Type>();
        if sums.null_count() < sums.len() {
            *self.sum.get_or_insert(0.0) += sums.iter().flatten().sum::<f64>();
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.sum))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }
}

/// Per group: adds FLOAT values into DOUBLEs; a group that saw no value is NULL.
#[derive(Debug, Default)]
struct FloatSumGroups {
    sums: Vec<f64>,
    seen: NullState,
}

impl GroupsAccumulator for FloatSumGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0.0);
        let sums = &mut self.sums;
        self.seen.accumulate(
            group_indices,
            values[0].as_primitive::<Float32Type>(),
            opt_filter,
            total_num_groups,
            |group, value| sums[group] += f64::from(value),
        );
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0.0);
        let sums = &mut self.sums;
        self.seen.accumulate(
            group_indices,
            values[0].as_primitive::<Float64Type>(),
            None,
            total_num_groups,
            |group, value| sums[group] += value,
        );
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let nulls = self.seen.build(emit_to);
        Ok(Arc::new(Float64Array::new(sums.into(), nulls)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: its value as a DOUBLE, NULL where filtered out.
        let widened = cast(values[0].as_ref(), &DataType::Float64)?;
        let state = match opt_filter {
            None => widened,
            Some(filter) => {
                let keep = datafusion::arrow::compute::prep_null_mask_filter(filter);
                datafusion::arrow::compute::nullif(
                    widened.as_ref(),
                    &datafusion::arrow::compute::not(&keep)?,
                )?
            }
        };
        Ok(vec![state])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<f64>() + self.seen.size()
    }
}

/// DataFusion's DOUBLE accumulator, fed FLOAT batches widened first (distinct sums
/// and window frames: not the hot path).
#[derive(Debug)]
struct Widening(Box<dyn Accumulator>);

fn widened(values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    values
        .iter()
        .map(|v| Ok(cast(v.as_ref(), &DataType::Float64)?))
        .collect()
}

impl Accumulator for Widening {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.update_batch(&widened(values)?)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.retract_batch(&widened(values)?)
    }

    fn supports_retract_batch(&self) -> bool {
        self.0.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.evaluate()
    }

    fn size(&self) -> usize {
        self.0.size()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float32Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A session with FLOAT column `f` (NULLs included) grouped by `g`, and `sum` ours.
    fn session() -> (SessionContext, Vec<(i64, Option<f32>)>) {
        let rows: Vec<(i64, Option<f32>)> = (0..10_000i64)
            .map(|i| {
                let value = (i % 7 != 3).then_some((i as f32) * 0.37 - 1000.0);
                (i % 5, value)
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("f", DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        ctx.register_udaf(FloatSum::udaf());
        (ctx, rows)
    }

    async fn doubles(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let column = b.column(b.num_columns() - 1).as_primitive::<Float64Type>();
                column.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[tokio::test]
    async fn float_sums_are_the_doubles_of_their_values_without_a_cast() {
        let (ctx, rows) = session();
        // MIN and MAX are DataFusion's, which take FLOAT as it is too.
        let plan = ctx
            .sql("EXPLAIN SELECT SUM(f), MIN(f), MAX(f) FROM t GROUP BY g")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        assert!(!text.to_uppercase().contains("CAST"), "{text}");
        let extremes = ctx
            .sql("SELECT MIN(f), MAX(f) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let floats = rows.iter().filter_map(|r| r.1);
        let (low, high) = (
            floats.clone().fold(f32::INFINITY, f32::min),
            floats.fold(f32::NEG_INFINITY, f32::max),
        );
        let column = |i: usize| extremes[0].column(i).as_primitive::<Float32Type>().value(0);
        assert_eq!((column(0), column(1)), (low, high));

        let all: f64 = rows.iter().filter_map(|r| r.1).map(f64::from).sum();
        let summed = doubles(&ctx, "SELECT SUM(f) FROM t").await;
        assert!(close(summed[0].unwrap(), all), "{summed:?} vs {all}");

        // Per group (the groups accumulator), with a filter, and a group of NULLs only.
        for g in 0..5 {
            let expected: f64 = rows
                .iter()
                .filter(|r| r.0 == g && r.0 != 4)
                .filter_map(|r| r.1)
                .map(f64::from)
                .sum();
            let sql =
                format!("SELECT g, SUM(f) FILTER (WHERE g <> 4) FROM t WHERE g = {g} GROUP BY g");
            let got = doubles(&ctx, &sql).await;
            if g == 4 {
                assert_eq!(got, vec![None]);
            } else {
                assert!(close(got[0].unwrap(), expected), "group {g}: {got:?}");
            }
        }
        let nulls = doubles(&ctx, "SELECT SUM(f) FROM t WHERE f IS NULL").await;
        assert_eq!(nulls, vec![None]);

        // Distinct sums and window frames: DataFusion's accumulators on widened values.
        let mut distinct: Vec<f64> = rows.iter().filter_map(|r| r.1).map(f64::from).collect();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        let got = doubles(&ctx, "SELECT SUM(DISTINCT f) FROM t").await;
        assert!(close(got[0].unwrap(), distinct.iter().sum()), "{got:?}");
        let windowed = doubles(
            &ctx,
            "SELECT g, SUM(f) OVER (ORDER BY g, f ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
             FROM t ORDER BY g, f LIMIT 4",
        )
        .await;
        let mut ordered: Vec<(i64, Option<f32>)> = rows.clone();
        ordered.sort_by(|a, b| {
            a.0.cmp(&b.0).then(match (a.1, b.1) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, None) => std::cmp::Ordering::Equal,
            })
        });
        for (i, got) in windowed.iter().enumerate() {
            let expected: f64 = ordered[i.saturating_sub(2)..=i]
                .iter()
                .filter_map(|r| r.1)
                .map(f64::from)
                .sum();
            assert!(
                close(got.unwrap(), expected),
                "row {i}: {got:?} vs {expected}"
            );
        }

        // Other types are DataFusion's `sum` as before: small integers into an exact
        // BIGINT (2^24 + 1 is not a FLOAT), NULL as DataFusion takes it.
        let theirs = SessionContext::new();
        theirs
            .register_table("t", ctx.table_provider("t").await.unwrap())
            .unwrap();
        for sql in [
            "SELECT SUM(CAST(g + 16777216 AS INT)) FROM t WHERE f IS NOT NULL",
            "SELECT SUM(CAST(g AS SMALLINT)), SUM(CAST(g AS INT UNSIGNED)) FROM t",
            "SELECT SUM(NULL) FROM t",
        ] {
            let answer = |ctx: SessionContext| async move {
                match ctx.sql(sql).await {
                    Ok(frame) => frame.collect().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            assert_eq!(
                answer(ctx.clone()).await,
                answer(theirs.clone()).await,
                "{sql}"
            );
        }
        let small = ctx
            .sql("SELECT SUM(CAST(g + 16777216 AS INT)) FROM t WHERE f IS NOT NULL")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expected: i64 = rows
            .iter()
            .filter(|r| r.1.is_some())
            .map(|r| r.0 + 16_777_216)
            .sum();
        let small_sum = small[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(small_sum, expected);
        let ints = ctx
            .sql("SELECT SUM(g), SUM(CAST(f AS DOUBLE)) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let total: i64 = rows.iter().map(|r| r.0).sum();
        assert_eq!(
            ints[0]
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            total
        );
    }
}
