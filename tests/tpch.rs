//! TPC-H through a cluster: tpchgen's tables as Parquet, ingested with Druid specs by
//! `grove ingest`, served by two historicals, and the 22 queries in their standard
//! text asked of a broker over HTTP, then Druid-style queries on `__time`. Every
//! answer is compared with what DataFusion computes over the same Parquet files.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use grove_e2e::cluster::TestCluster;
use grove_segment::id::format_millis;
use grove_testkit::tpch::{self, QUERIES, TABLES};
use serde_json::Value;

/// Small enough for a test, big enough that every query has rows.
const SCALE: f64 = 0.01;

#[test]
fn tpch_and_druid_style_queries_match_datafusion_over_the_same_parquet() {
    let c = TestCluster::with_two_historicals(1);
    let data = c.sandbox.path("tpch");
    std::fs::create_dir_all(&data).unwrap();
    tpch::write_parquet(&data, SCALE).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reference = runtime.block_on(reference(&data));
    for (table, _) in TABLES {
        let spec = c.sandbox.path(&format!("{table}.json"));
        std::fs::write(&spec, tpch::ingestion_spec(table, &data).to_string()).unwrap();
        c.ingest(&spec.display().to_string());
    }
    for (table, _) in TABLES {
        let query = format!("SELECT COUNT(*) AS n FROM {table}");
        let rows = runtime.block_on(answer(&reference, &query));
        c.wait_until(
            Duration::from_secs(60),
            &format!("{table} is served"),
            || c.sql_arrays("broker-1", &query).is_ok_and(|r| r == rows),
        );
    }
    let serving: BTreeSet<String> = c.served().into_values().flatten().collect();
    assert_eq!(
        serving.len(),
        2,
        "both historicals serve segments: {serving:?}"
    );

    let mut failures = Vec::new();
    for (number, text) in QUERIES.iter().enumerate() {
        let number = number + 1;
        let expected = runtime.block_on(answer(&reference, text));
        match c.sql_arrays("broker-1", text) {
            Ok(rows) => {
                assert!(!expected.is_empty(), "Q{number} has rows at scale {SCALE}");
                if let Some(difference) = difference(&rows, &expected) {
                    failures.push(format!("Q{number}: {difference}"));
                }
            }
            Err(e) => failures.push(format!("Q{number} failed: {e}")),
        }
    }
    for (name, grove, datafusion) in DRUID_STYLE {
        let expected = runtime.block_on(answer(&reference, datafusion));
        assert!(!expected.is_empty(), "{name} has rows");
        match c.sql_arrays("broker-1", grove) {
            Ok(rows) => {
                if let Some(difference) = difference(&rows, &expected) {
                    failures.push(format!("{name}: {difference}"));
                }
            }
            Err(e) => failures.push(format!("{name} failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Queries as Druid users write them (on `__time`, which is lineitem's ship date), and
/// the same questions asked of the Parquet files.
const DRUID_STYLE: [(&str, &str, &str); 4] = [
    (
        "monthly buckets of one year",
        "SELECT CAST(date_trunc('month', __time) AS DATE) AS month, COUNT(*) AS n, \
         SUM(l_quantity) AS qty FROM lineitem \
         WHERE __time >= TIMESTAMP '1995-01-01' AND __time < TIMESTAMP '1996-01-01' \
         GROUP BY 1 ORDER BY 1",
        "SELECT CAST(date_trunc('month', l_shipdate) AS DATE) AS month, COUNT(*) AS n, \
         SUM(l_quantity) AS qty FROM lineitem \
         WHERE l_shipdate >= DATE '1995-01-01' AND l_shipdate < DATE '1996-01-01' \
         GROUP BY 1 ORDER BY 1",
    ),
    (
        "top 3 ship modes by revenue in a year",
        "SELECT l_shipmode, SUM(l_extendedprice) AS revenue FROM lineitem \
         WHERE __time >= TIMESTAMP '1994-01-01' AND __time < TIMESTAMP '1995-01-01' \
         GROUP BY l_shipmode ORDER BY revenue DESC LIMIT 3",
        "SELECT l_shipmode, SUM(l_extendedprice) AS revenue FROM lineitem \
         WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
         GROUP BY l_shipmode ORDER BY revenue DESC LIMIT 3",
    ),
    (
        "filtered aggregates",
        "SELECT l_returnflag, COUNT(*) FILTER (WHERE l_shipmode = 'AIR') AS air, \
         SUM(l_quantity) FILTER (WHERE l_discount > 0.05) AS discounted, \
         COUNT(DISTINCT l_suppkey) AS suppliers FROM lineitem GROUP BY 1 ORDER BY 1",
        "SELECT l_returnflag, COUNT(*) FILTER (WHERE l_shipmode = 'AIR') AS air, \
         SUM(l_quantity) FILTER (WHERE l_discount > 0.05) AS discounted, \
         COUNT(DISTINCT l_suppkey) AS suppliers FROM lineitem GROUP BY 1 ORDER BY 1",
    ),
    (
        "top instruction for two modes, by day of the week",
        "SELECT l_shipinstruct, extract(dow FROM __time) AS dow, COUNT(*) AS n \
         FROM lineitem WHERE l_shipmode IN ('MAIL', 'SHIP') \
         GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 5",
        "SELECT l_shipinstruct, extract(dow FROM l_shipdate) AS dow, COUNT(*) AS n \
         FROM lineitem WHERE l_shipmode IN ('MAIL', 'SHIP') \
         GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 5",
    ),
];

/// DataFusion with each table registered from its Parquet file.
async fn reference(data: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    for (table, _) in TABLES {
        let path = tpch::parquet_path(data, table);
        ctx.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    ctx
}

/// The reference's rows for a script, as the broker would write them in Druid's
/// `array` format: the last query's rows, each an array of its values in column
/// order, times and dates as Druid writes them (`1995-03-11T00:00:00.000Z`).
async fn answer(ctx: &SessionContext, script: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for (statement, answers) in tpch::datafusion_statements(script) {
        let batches = ctx.sql(&statement).await.unwrap().collect().await.unwrap();
        if answers {
            rows = json_rows(&batches);
        }
    }
    rows
}

fn json_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(column_json).collect();
        for i in 0..batch.num_rows() {
            rows.push(Value::Array(columns.iter().map(|c| c[i].clone()).collect()));
        }
    }
    rows
}

/// A column's values as JSON: dates and times as Druid's strings, anything else as
/// Arrow's JSON writer renders it.
fn column_json(column: &ArrayRef) -> Vec<Value> {
    if let DataType::Date32 | DataType::Timestamp(..) = column.data_type() {
        let millis = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap();
        return millis
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .map(|t| t.map_or(Value::Null, |t| Value::from(format_millis(t))))
            .collect();
    }
    let single = Schema::new(vec![Field::new("v", column.data_type().clone(), true)]);
    let batch = RecordBatch::try_new(Arc::new(single), vec![column.clone()]).unwrap();
    let mut out = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut out);
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    match serde_json::from_slice(&out).unwrap() {
        Value::Array(objects) => objects.into_iter().map(|mut o| o["v"].take()).collect(),
        other => panic!("not an array: {other}"),
    }
}

/// Where `actual` and `expected` differ, in order: numbers may differ by a relative
/// 1e-6 (DOUBLE against DataFusion's DECIMAL arithmetic, sums in another order).
/// Columns are compared by position: Druid names an unaliased column `EXPR$n`.
fn difference(actual: &[Value], expected: &[Value]) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!(
            "{} rows, expected {}: {actual:?} vs {expected:?}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (Value::Array(a), Value::Array(e)) = (a, e) else {
            return Some(format!("row {i} is not an array"));
        };
        if a.len() != e.len() {
            return Some(format!("row {i} has columns {a:?}, expected {e:?}"));
        }
        for (column, (a, expected)) in a.iter().zip(e).enumerate() {
            if !same(a, expected) {
                return Some(format!("row {i} column {column}: {a} vs {expected}"));
            }
        }
    }
    None
}

fn same(actual: &Value, expected: &Value) -> bool {
    match (number(actual), number(expected)) {
        (Some(a), Some(e)) => (a - e).abs() <= 1e-6 * a.abs().max(e.abs()).max(1.0),
        _ => actual == expected,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
