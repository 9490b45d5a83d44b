//! Druid's SQL dialect on DataFusion.
//!
//! # Layout
//! - [`time`]: Druid's time functions (`TIME_FLOOR`, `TIME_PARSE`, ...), with Druid's
//!   calendar semantics.
//! - [`strings`]: `STRING_FORMAT` and `PARSE_LONG`.
//! - [`joda`]: Joda-Time patterns, as `TIME_FORMAT` and `TIME_PARSE` take them.
//! - [`rewrite`]: Druid's syntax (`FLOOR(t TO HOUR)`, `TIMESTAMPADD(DAY, 1, t)`,
//!   `EXPLAIN PLAN FOR`, `EXPR$0`) and names of functions DataFusion has under other
//!   names, rewritten in the parsed statement.
//! - [`information_schema`]: Druid's `INFORMATION_SCHEMA`, beside DataFusion's
//!   lower-case `information_schema` that Postgres tools read.
//! - [`types`]: Druid's names of column types, SQL and native.
//! - [`json`]: values as Druid's JSON answers write them.
//! - [`lookups`]: Druid's `lookup` schema, a table per lookup.
//! - [`native`]: Druid's native JSON queries, planned as DataFusion plans.
//!
//! Identifiers keep their case (`countryName`), and the datasources are in catalog
//! and schema `druid`. The functions are registered wherever a plan runs (brokers,
//! historicals, single processes), so a fragment that calls them runs next to its
//! data.

pub mod information_schema;
pub mod joda;
pub mod json;
pub mod lookups;
pub mod native;
pub mod rewrite;
pub mod strings;
pub mod time;
pub mod types;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ColumnarValue;

/// Registers Druid's functions.
pub fn register(registry: &mut dyn FunctionRegistry) {
    for function in time::functions().into_iter().chain(strings::functions()) {
        let name = function.name().to_string();
        if let Err(e) = registry.register_udf(Arc::new(function)) {
            tracing::error!("registering {name}: {e}");
        }
    }
}

/// The answer as one value when every argument was one value (and the answer has
/// one row), else as the column it is.
pub(crate) fn scalar_or_array(args: &[ColumnarValue], answer: ArrayRef) -> Result<ColumnarValue> {
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    Ok(if scalar && answer.len() == 1 {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&answer, 0)?)
    } else {
        ColumnarValue::Array(answer)
    })
}
