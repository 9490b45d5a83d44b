//! Scan rates on one core over mmap'd segments, next to the memory bandwidth of the
//! machine: `cargo bench -p grove-segment --bench scan` (`GROVE_SCAN_ROWS` rows, default
//! 8M, in 8 daily segments written to a temp dir, queried through DataFusion with one
//! partition).
//!
//! - `count_time_filter`: `COUNT(*)` over 2 of the 8 days (time pruning: rows counted
//!   are those in the interval);
//! - `sum_double`, `sum_float`: `SUM` of a DOUBLE and a FLOAT metric over every row;
//! - `group_by_dimension`: `COUNT(*)` and `SUM` of the DOUBLE by a 20-value string
//!   dimension;
//! - `group_by_integer`: `COUNT(*)`, `SUM`, `MIN` and `MAX` of the DOUBLE by a BIGINT
//!   of 200,000 values (as TPC-H's `l_partkey` at scale 1), and
//!   `group_by_integer_hashed` the same through DataFusion's hash aggregation;
//! - `memory_read`: summing a 512 MiB array of integers in memory: what one core reads
//!   per second, the bound for a scan of uncompressed columns.
//!
//! Criterion reports rows per second (elements) for the scans, bytes per second for
//! the memory read.

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use grove_segment::format::{ColumnRole, Segment, write_segment};
use grove_segment::scan::{ScanSegment, SegmentGroupBy, SegmentScanExec};
use grove_segment::sum::FloatSum;
use grove_segment::{Interval, SegmentId};

const DAY: i64 = 86_400_000;
const START: i64 = 1_704_067_200_000; // 2024-01-01
const DAYS: i64 = 8;

/// A table over segments, scanned only within `interval`.
#[derive(Debug)]
struct Segments {
    schema: SchemaRef,
    segments: Vec<Arc<Segment>>,
    interval: Interval,
}

#[async_trait]
impl TableProvider for Segments {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let segments = self
            .segments
            .iter()
            .filter(|s| s.interval().overlaps(&self.interval))
            .map(|s| ScanSegment {
                segment: Arc::clone(s),
                intervals: vec![self.interval],
            })
            .collect();
        Ok(Arc::new(SegmentScanExec::new(
            Arc::clone(&self.schema),
            projection,
            segments,
            None,
            None,
            1,
        )?))
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "__time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "country",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("revenue", DataType::Float64, true),
        Field::new("seconds", DataType::Float32, true),
        Field::new("item", DataType::Int64, true),
    ]))
}

/// One day's rows: evenly spaced times, 20 countries, pseudo-random metrics and items.
fn day(day: i64, rows: usize) -> RecordBatch {
    let step = DAY / rows as i64;
    let times: Vec<i64> = (0..rows as i64)
        .map(|i| START + day * DAY + i * step)
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ day as u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let countries: Vec<String> = (0..20).map(|i| format!("C{i:02}")).collect();
    let keys: Vec<i32> = (0..rows).map(|_| (next() % 20) as i32).collect();
    let revenue: Vec<f64> = (0..rows)
        .map(|_| (next() % 100_000) as f64 / 100.0)
        .collect();
    let seconds: Vec<f32> = (0..rows).map(|_| (next() % 10_000) as f32 / 10.0).collect();
    let items: Vec<i64> = (0..rows).map(|_| 1 + (next() % 200_000) as i64).collect();
    let country = DictionaryArray::<Int32Type>::try_new(
        keys.into(),
        Arc::new(StringArray::from(countries)) as ArrayRef,
    )
    .expect("valid keys");
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")),
            Arc::new(country),
            Arc::new(Float64Array::from(revenue)),
            Arc::new(Float32Array::from(seconds)),
            Arc::new(Int64Array::from(items)),
        ],
    )
    .expect("a batch")
}

fn write(dir: &std::path::Path, rows: usize) -> Vec<Arc<Segment>> {
    let roles = [
        ColumnRole::Time,
        ColumnRole::Dimension,
        ColumnRole::Metric,
        ColumnRole::Metric,
        ColumnRole::Metric,
    ];
    (0..DAYS)
        .map(|d| {
            let start = START + d * DAY;
            let id = SegmentId {
                datasource: "bench".into(),
                interval: Interval::new(start, start + DAY).expect("a day"),
                version: "v1".into(),
                partition: 0,
            };
            let path = dir.join(format!("day-{d}.segment"));
            write_segment(&path, &id, &day(d, rows / DAYS as usize), &roles).expect("written");
            Segment::open(&path).expect("opened")
        })
        .collect()
}

/// A session over `segments`, with the physical optimizer rules Grove's engines use
/// (or DataFusion's alone, `grove_rules` false) and Grove's `sum`.
fn context(segments: &[Arc<Segment>], interval: Interval, grove_rules: bool) -> SessionContext {
    let mut state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(1))
        .with_default_features();
    if grove_rules {
        state = state.with_physical_optimizer_rule(Arc::new(SegmentGroupBy));
    }
    let ctx = SessionContext::new_with_state(state.build());
    if grove_rules {
        ctx.register_udaf(FloatSum::udaf());
    }
    let table = Segments {
        schema: schema(),
        segments: segments.to_vec(),
        interval,
    };
    ctx.register_table("t", Arc::new(table))
        .expect("registered");
    ctx
}

fn scans(c: &mut Criterion) {
    let rows: usize = std::env::var("GROVE_SCAN_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8_000_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let segments = write(dir.path(), rows);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let all = Interval::new(START, START + DAYS * DAY).expect("every day");
    let two_days = Interval::new(START + 3 * DAY, START + 5 * DAY).expect("two days");
    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    let by_item = "SELECT item, COUNT(*), SUM(revenue), MIN(revenue), MAX(revenue) \
                   FROM t GROUP BY item";
    let cases = [
        (
            "count_time_filter",
            "SELECT COUNT(*) FROM t",
            two_days,
            rows / 4,
            true,
        ),
        ("sum_double", "SELECT SUM(revenue) FROM t", all, rows, true),
        ("sum_float", "SELECT SUM(seconds) FROM t", all, rows, true),
        (
            "group_by_dimension",
            "SELECT country, COUNT(*), SUM(revenue) FROM t GROUP BY country",
            all,
            rows,
            true,
        ),
        ("group_by_integer", by_item, all, rows, true),
        ("group_by_integer_hashed", by_item, all, rows, false),
    ];
    for (name, sql, interval, rows_read, grove_rules) in cases {
        let ctx = context(&segments, interval, grove_rules);
        group.throughput(Throughput::Elements(rows_read as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let batches = ctx.sql(sql).await?.collect().await?;
                    Ok::<_, DataFusionError>(black_box(batches))
                })
            })
        });
    }
    // What one core reads from memory per second: integer adds, which the compiler
    // vectorizes, so that the loop waits on memory and not on its additions.
    let values: Vec<u64> = (0..(64u64 << 20)).collect();
    group.throughput(Throughput::Bytes((values.len() * 8) as u64));
    group.bench_function("memory_read", |b| {
        b.iter(|| {
            black_box(&values)
                .iter()
                .fold(0u64, |sum, &v| sum.wrapping_add(v))
        })
    });
    group.finish();
}

criterion_group!(benches, scans);
criterion_main!(benches);
