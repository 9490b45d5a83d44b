//! Slices of a hash shuffle: `grove_hash_slice(slices, key, ...)` is the slice (0 to
//! `slices - 1`) a row's key falls in, by a hash of its values that is the same in
//! every Grove process and independent of the one DataFusion's hash repartitions
//! use. A shuffle stage's historical `i` reads only the rows of slice `i` from every
//! fragment (`FilterExec: grove_hash_slice(n, keys) = i` on top of each), so rows
//! whose keys are equal meet on one historical, and its own repartition by the same
//! keys still spreads them over all its partitions.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;

/// The function's name, as registered in every session.
pub const HASH_SLICE: &str = "grove_hash_slice";

/// The seed of the slices' hash: any other than DataFusion's repartitions' (0).
const SEED: u64 = 0x6772_6f76_655f_736c;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HashSlice {
    signature: Signature,
}

impl HashSlice {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(HashSlice {
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for HashSlice {
    fn name(&self) -> &str {
        HASH_SLICE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some((slices, keys)) = args.args.split_first() else {
            return exec_err!("{HASH_SLICE} takes a number of slices and at least one key");
        };
        let slices = match slices {
            ColumnarValue::Scalar(ScalarValue::UInt64(Some(n))) if *n > 0 => *n,
            ColumnarValue::Scalar(ScalarValue::Int64(Some(n))) if *n > 0 => *n as u64,
            other => return exec_err!("{HASH_SLICE}: the number of slices {other:?}"),
        };
        if keys.is_empty() {
            return exec_err!("{HASH_SLICE} takes at least one key");
        }
        let arrays: Vec<ArrayRef> = keys
            .iter()
            .map(|k| k.to_array(args.number_rows))
            .collect::<Result<_>>()?;
        let mut hashes = vec![0u64; args.number_rows];
        create_hashes(&arrays, &RandomState::with_seed(SEED), &mut hashes)?;
        let slice: UInt64Array = hashes.into_iter().map(|h| h % slices).collect();
        Ok(ColumnarValue::Array(Arc::new(slice) as ArrayRef))
    }
}

/// `input`'s rows of slice `slice` of `slices` by `keys` (expressions over its
/// schema).
pub fn only_slice(
    input: Arc<dyn ExecutionPlan>,
    keys: &[Arc<dyn PhysicalExpr>],
    slice: usize,
    slices: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut args: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Literal::new(ScalarValue::UInt64(
        Some(slices as u64),
    )))];
    args.extend(keys.iter().cloned());
    let call = ScalarFunctionExpr::try_new(
        Arc::new(HashSlice::udf()),
        args,
        &input.schema(),
        Arc::new(ConfigOptions::default()),
    )?;
    let predicate = BinaryExpr::new(
        Arc::new(call),
        Operator::Eq,
        Arc::new(Literal::new(ScalarValue::UInt64(Some(slice as u64)))),
    );
    Ok(Arc::new(FilterExec::try_new(Arc::new(predicate), input)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;
    use datafusion::arrow::array::{DictionaryArray, Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::arrow::datatypes::Int32Type;

    fn slices_of(keys: Vec<ArrayRef>, slices: u64) -> Vec<u64> {
        let rows = keys[0].len();
        let arg_fields = keys
            .iter()
            .map(|k| Arc::new(Field::new("k", k.data_type().clone(), true)))
            .collect();
        let mut args = vec![ColumnarValue::Scalar(ScalarValue::UInt64(Some(slices)))];
        args.extend(keys.into_iter().map(ColumnarValue::Array));
        let out = HashSlice::udf()
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("s", DataType::UInt64, false)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .to_array(rows)
            .unwrap();
        let out = out.as_any().downcast_ref::<UInt64Array>().unwrap();
        out.values().to_vec()
    }

    /// Equal keys fall in one slice whether a string comes plain or as a dictionary
    /// (a join's two sides may read it either way), every slice gets rows, and none
    /// is out of range.
    #[test]
    fn equal_keys_meet_in_one_slice() {
        let words: Vec<String> = (0..1000).map(|i| format!("key-{}", i % 97)).collect();
        let plain: ArrayRef = Arc::new(StringArray::from_iter_values(&words));
        let dictionary: ArrayRef = Arc::new(
            words
                .iter()
                .map(String::as_str)
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let a = slices_of(vec![plain], 3);
        let b = slices_of(vec![dictionary], 3);
        assert_eq!(a, b);
        for (i, word) in words.iter().enumerate() {
            let first = words.iter().position(|w| w == word).unwrap();
            assert_eq!(a[i], a[first]);
        }
        assert!(a.iter().all(|s| *s < 3));
        for slice in 0..3 {
            assert!(a.contains(&slice), "slice {slice} got no key");
        }
    }

    /// Two keys together: the slice depends on both.
    #[test]
    fn compound_keys() {
        let x: ArrayRef = Arc::new(Int64Array::from_iter_values((0..400).map(|i| i % 4)));
        let y: ArrayRef = Arc::new(Int32Array::from_iter_values((0..400).map(|i| i / 100)));
        let s = slices_of(vec![x.clone(), y.clone()], 4);
        let x = x.as_any().downcast_ref::<Int64Array>().unwrap();
        let y = y.as_any().downcast_ref::<Int32Array>().unwrap();
        let mut seen = std::collections::HashMap::new();
        for (i, got) in s.iter().enumerate() {
            let slice = seen.entry((x.value(i), y.value(i))).or_insert(*got);
            assert_eq!(slice, got);
        }
        let distinct: std::collections::HashSet<u64> = s.iter().copied().collect();
        assert!(distinct.len() > 1, "16 keys in one slice: {distinct:?}");
    }
}
