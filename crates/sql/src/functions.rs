//! Grove's versions of DataFusion functions, registered under the same names on
//! brokers, historicals and single processes alike, so that a fragment's functions
//! decode to the same implementations everywhere.
//!
//! - `date_part` (and `EXTRACT`): a batch whose times all fall in one year (or
//!   quarter, month, day) gets that one value without a calendar computation per row.
//! - `date_trunc` and `date_bin`: a batch whose least and greatest times fall in one
//!   bucket gets that bucket once (both never decrease as the time grows, so every
//!   time between falls in it too). Otherwise `date_trunc` of UTC times to a second,
//!   minute, hour, day or week is integer arithmetic, not a calendar per row.
//!
//! A segment spans one time chunk, so a batch of it mostly does: `EXTRACT(YEAR FROM
//! __time)` over a year's segment, or `date_trunc('day', __time)` over a day's, costs
//! a min and a max per batch. Anything else is DataFusion's own function.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, FieldRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::logical_expr::{Expr, ExpressionPlacement};

/// Registers Grove's functions in place of DataFusion's of the same names.
pub fn register(registry: &mut dyn FunctionRegistry) {
    use datafusion::functions::datetime::{date_bin, date_part, date_trunc};
    for inner in [date_part(), date_trunc(), date_bin()] {
        let name = inner.name().to_string();
        let ours = ScalarUDF::new_from_impl(RangeTimeFunction {
            inner: inner.as_ref().clone(),
        });
        // A session state's registry takes any function; DataFusion's stays otherwise.
        if let Err(e) = registry.register_udf(Arc::new(ours)) {
            tracing::error!("registering {name}: {e}");
        }
    }
    // The slices of a shuffle, which stages compute on the historicals.
    if let Err(e) = registry.register_udf(Arc::new(crate::distributed::slice::HashSlice::udf())) {
        tracing::error!("registering {}: {e}", crate::distributed::slice::HASH_SLICE);
    }
    crate::druid::register(registry);
    // `SUM` of FLOAT columns without a cast of every row.
    if let Err(e) = registry.register_udaf(Arc::new(grove_segment::sum::FloatSum::udaf())) {
        tracing::error!("registering sum: {e}");
    }
}

/// DataFusion's `date_part`, `date_trunc` or `date_bin`, answering a batch whose
/// times share the value with that value once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RangeTimeFunction {
    inner: ScalarUDF,
}

/// The parts a value over a range of times is constant in when it is at both ends,
/// with the coarser parts that must agree too: the calendar fields in order.
fn agreeing(part: &str) -> Option<&'static [&'static str]> {
    Some(match part.to_ascii_lowercase().as_str() {
        "year" => &["year"],
        "quarter" | "qtr" => &["year", "quarter"],
        "month" => &["year", "month"],
        "day" => &["year", "month", "day"],
        _ => return None,
    })
}

/// The least and greatest of a time array without NULLs, as an array of two.
fn ends(array: &ArrayRef) -> Option<ArrayRef> {
    fn of<T: ArrowPrimitiveType>(array: &ArrayRef) -> Option<ArrayRef> {
        let values = array.as_primitive_opt::<T>()?;
        let (lo, hi) = (min(values)?, max(values)?);
        let two = PrimitiveArray::<T>::from_iter_values([lo, hi])
            .with_data_type(array.data_type().clone());
        Some(Arc::new(two))
    }
    if array.is_empty() || array.null_count() > 0 {
        return None;
    }
    match array.data_type() {
        DataType::Date32 => of::<Date32Type>(array),
        DataType::Date64 => of::<Date64Type>(array),
        DataType::Timestamp(TimeUnit::Second, _) => of::<TimestampSecondType>(array),
        DataType::Timestamp(TimeUnit::Millisecond, _) => of::<TimestampMillisecondType>(array),
        DataType::Timestamp(TimeUnit::Microsecond, _) => of::<TimestampMicrosecondType>(array),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => of::<TimestampNanosecondType>(array),
        _ => None,
    }
}

impl RangeTimeFunction {
    /// The one value of the batch, if there is one.
    fn constant(&self, args: &ScalarFunctionArgs) -> Result<Option<ScalarValue>> {
        if self.inner.name() == "date_part" {
            self.constant_part(args)
        } else {
            self.constant_bucket(args)
        }
    }

    /// `date_trunc(unit, time)` or `date_bin(stride, time[, origin])`: the bucket of
    /// the least time, if the greatest is in it too. Every argument but the time must
    /// be one value.
    fn constant_bucket(&self, args: &ScalarFunctionArgs) -> Result<Option<ScalarValue>> {
        let Some(ColumnarValue::Array(times)) = args.args.get(1) else {
            return Ok(None);
        };
        let scalars = args
            .args
            .iter()
            .enumerate()
            .all(|(i, a)| i == 1 || matches!(a, ColumnarValue::Scalar(_)));
        let Some(ends) = ends(times).filter(|_| scalars) else {
            return Ok(None);
        };
        let mut at_ends = args.args.clone();
        at_ends[1] = ColumnarValue::Array(ends);
        self.same_at_ends(args, at_ends)
    }

    /// The function of `at_ends` (its arguments with the least and greatest times in
    /// place of the times), when it is one value at both ends, not NULL.
    fn same_at_ends(
        &self,
        args: &ScalarFunctionArgs,
        at_ends: Vec<ColumnarValue>,
    ) -> Result<Option<ScalarValue>> {
        let answer = self.inner.invoke_with_args(ScalarFunctionArgs {
            args: at_ends,
            arg_fields: args.arg_fields.clone(),
            number_rows: 2,
            return_field: args.return_field.clone(),
            config_options: args.config_options.clone(),
        })?;
        let ColumnarValue::Array(answer) = answer else {
            return Ok(None);
        };
        let (lo, hi) = (
            ScalarValue::try_from_array(&answer, 0)?,
            ScalarValue::try_from_array(&answer, 1)?,
        );
        Ok((lo == hi && !lo.is_null()).then_some(lo))
    }

    /// `date_part(part, time)`: the part, if the times agree on it and on every
    /// coarser one.
    fn constant_part(&self, args: &ScalarFunctionArgs) -> Result<Option<ScalarValue>> {
        let (Some(ColumnarValue::Scalar(part)), Some(ColumnarValue::Array(times))) =
            (args.args.first(), args.args.get(1))
        else {
            return Ok(None);
        };
        let part = match part {
            ScalarValue::Utf8(Some(p)) | ScalarValue::Utf8View(Some(p)) => p,
            _ => return Ok(None),
        };
        let (Some(chain), Some(ends)) = (agreeing(part), ends(times)) else {
            return Ok(None);
        };
        let mut value = None;
        for field in chain {
            let at_ends = vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(field.to_string()))),
                ColumnarValue::Array(ends.clone()),
            ];
            match self.same_at_ends(args, at_ends)? {
                Some(part) => value = Some(part),
                None => return Ok(None),
            }
        }
        Ok(value)
    }
}

/// `date_trunc(unit, time)` of UTC times (or times without a zone) to a unit of
/// fixed length (second, minute, hour, day, week): arithmetic on the integers, where
/// DataFusion goes through a calendar per row. Weeks start on Monday, as in
/// DataFusion; the epoch fell on a Thursday.
fn truncate_utc(function: &str, args: &ScalarFunctionArgs) -> Option<ArrayRef> {
    use datafusion::arrow::compute::kernels::arity::unary;
    if function != "date_trunc" {
        return None;
    }
    let (Some(ColumnarValue::Scalar(unit)), Some(ColumnarValue::Array(times))) =
        (args.args.first(), args.args.get(1))
    else {
        return None;
    };
    let unit = match unit {
        ScalarValue::Utf8(Some(u)) | ScalarValue::Utf8View(Some(u)) => u.to_ascii_lowercase(),
        _ => return None,
    };
    let seconds: i64 = match unit.as_str() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        _ => return None,
    };
    // Monday 1970-01-05 starts the week the epoch is in.
    let offset_seconds: i64 = if unit == "week" { 4 * 86_400 } else { 0 };
    let DataType::Timestamp(time_unit, zone) = times.data_type() else {
        return None;
    };
    if !zone
        .as_deref()
        .is_none_or(|z| matches!(z, "UTC" | "+00:00" | "Z" | "utc"))
    {
        return None;
    }
    let per_second: i64 = match time_unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let (length, offset) = (seconds * per_second, offset_seconds * per_second);
    let floor = move |t: i64| t - (t - offset).rem_euclid(length);
    fn apply<T: ArrowPrimitiveType<Native = i64>>(
        times: &ArrayRef,
        floor: impl Fn(i64) -> i64,
    ) -> Option<ArrayRef> {
        let values = times.as_primitive_opt::<T>()?;
        let out: PrimitiveArray<T> = unary(values, floor);
        Some(Arc::new(out.with_data_type(times.data_type().clone())))
    }
    match time_unit {
        TimeUnit::Second => apply::<TimestampSecondType>(times, floor),
        TimeUnit::Millisecond => apply::<TimestampMillisecondType>(times, floor),
        TimeUnit::Microsecond => apply::<TimestampMicrosecondType>(times, floor),
        TimeUnit::Nanosecond => apply::<TimestampNanosecondType>(times, floor),
    }
}

impl ScalarUDFImpl for RangeTimeFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(value) = self.constant(&args)? {
            return Ok(ColumnarValue::Scalar(value));
        }
        if let Some(truncated) = truncate_utc(self.inner.name(), &args) {
            return Ok(ColumnarValue::Array(truncated));
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Date32Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    const DAY_MS: i64 = 86_400_000;

    /// Days since the epoch: 2024-03-01 is 19783.
    fn batch(days: Vec<Option<i32>>) -> RecordBatch {
        let millis: Vec<Option<i64>> = days
            .iter()
            .map(|d| d.map(|d| i64::from(d) * DAY_MS + 3_600_000))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(days)),
                Arc::new(TimestampMillisecondArray::from(millis).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    async fn answers(ctx: &SessionContext, batches: &[RecordBatch]) -> Vec<RecordBatch> {
        let table = MemTable::try_new(batches[0].schema(), vec![batches.to_vec()]).unwrap();
        ctx.register_table("times", Arc::new(table)).unwrap();
        let sql = "SELECT EXTRACT(YEAR FROM d) AS y, date_part('quarter', d) AS q, \
                   date_part('month', t) AS m, EXTRACT(DAY FROM t) AS dd, \
                   date_part('dow', d) AS w, datepart('year', t) AS yt, \
                   date_trunc('day', t) AS td, date_trunc('month', t) AS tm, \
                   date_trunc('hour', t) AS th, date_trunc('week', t) AS tw, \
                   date_trunc('minute', t) AS tmi, date_trunc('second', t) AS ts, \
                   date_bin(INTERVAL '1 day', t) AS bd, \
                   date_bin(INTERVAL '7 days', t, TIMESTAMP '2024-01-03T05:00:00Z') AS bw \
                   FROM times";
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test]
    async fn time_functions_answer_as_datafusions_with_batches_in_and_across_one_period() {
        let batches = [
            // All in March 2024, and on one day.
            batch((19783..19790).map(Some).collect()),
            batch(vec![Some(19785); 4]),
            // Across a year's end, with NULLs, and one row.
            batch(vec![Some(19722), Some(19723), None, Some(19724)]),
            batch(vec![Some(0)]),
            // Before the epoch, over a week's start (1969-12-29 was a Monday).
            batch(vec![
                Some(-9),
                Some(-4),
                Some(-3),
                Some(-1),
                Some(2),
                Some(5),
            ]),
        ];
        let mut state = SessionStateBuilder::new().with_default_features().build();
        register(&mut state);
        let ours = answers(&SessionContext::new_with_state(state), &batches).await;
        let theirs = answers(&SessionContext::new(), &batches).await;
        assert_eq!(ours, theirs);
    }

    #[test]
    fn one_value_answers_a_batch_in_one_period_and_only_then() {
        let udf = RangeTimeFunction {
            inner: datafusion::functions::datetime::date_part()
                .as_ref()
                .clone(),
        };
        let call = |part: &str, days: Vec<Option<i32>>| {
            let n = days.len();
            let array: ArrayRef = Arc::new(Date32Array::from(days));
            udf.invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(part.into()))),
                    ColumnarValue::Array(array),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("p", DataType::Utf8, false)),
                    Arc::new(Field::new("d", DataType::Date32, true)),
                ],
                number_rows: n,
                return_field: Arc::new(Field::new("r", DataType::Int32, true)),
                config_options: Default::default(),
            })
            .unwrap()
        };
        let march: Vec<Option<i32>> = (19783..19790).map(Some).collect();
        assert!(matches!(
            call("year", march.clone()),
            ColumnarValue::Scalar(ScalarValue::Int32(Some(2024)))
        ));
        assert!(matches!(
            call("month", march.clone()),
            ColumnarValue::Scalar(ScalarValue::Int32(Some(3)))
        ));
        // Several days, a NULL, a part that is not a calendar field: row by row.
        assert!(matches!(
            call("day", march.clone()),
            ColumnarValue::Array(_)
        ));
        assert!(matches!(
            call("year", vec![Some(19783), None]),
            ColumnarValue::Array(_)
        ));
        assert!(matches!(call("dow", march), ColumnarValue::Array(_)));
    }

    #[test]
    fn one_bucket_answers_a_batch_within_it_and_only_then() {
        let udf = RangeTimeFunction {
            inner: datafusion::functions::datetime::date_trunc()
                .as_ref()
                .clone(),
        };
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let call = |unit: &str, millis: Vec<Option<i64>>| {
            let n = millis.len();
            let array: ArrayRef =
                Arc::new(TimestampMillisecondArray::from(millis).with_timezone("UTC"));
            udf.invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.into()))),
                    ColumnarValue::Array(array),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("u", DataType::Utf8, false)),
                    Arc::new(Field::new("t", utc.clone(), true)),
                ],
                number_rows: n,
                return_field: Arc::new(Field::new("r", utc.clone(), true)),
                config_options: Default::default(),
            })
            .unwrap()
        };
        // Four times within 2024-03-01 (day 19783).
        let day: Vec<Option<i64>> = (1..5)
            .map(|h| Some(19783 * DAY_MS + h * 3_600_000))
            .collect();
        match call("day", day.clone()) {
            ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(ms), _)) => {
                assert_eq!(ms, 19783 * DAY_MS)
            }
            other => panic!("{other:?}"),
        }
        // Several hours, or a NULL: row by row.
        assert!(matches!(call("hour", day.clone()), ColumnarValue::Array(_)));
        let mut with_null = day;
        with_null.push(None);
        assert!(matches!(call("day", with_null), ColumnarValue::Array(_)));
    }
}
