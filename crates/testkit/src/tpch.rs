//! TPC-H data from tpchgen, written as one Parquet file per table, the Druid ingestion
//! specs that load those files into Grove, and the 22 queries in their standard text
//! (`benchmarks/tpch/queries`).
//!
//! Loading follows Grove's rules for such data: `lineitem` and `orders` are
//! time-partitioned by their ship and order dates (a year per segment) and keep those
//! dates as DATE columns under their own names; the other tables have no time column
//! and take `missingValue` (1970-01-01); decimals are stored as DOUBLE.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

/// The eight tables, each with the date column that partitions it, if any.
pub const TABLES: [(&str, Option<&str>); 8] = [
    ("lineitem", Some("l_shipdate")),
    ("orders", Some("o_orderdate")),
    ("customer", None),
    ("part", None),
    ("partsupp", None),
    ("supplier", None),
    ("nation", None),
    ("region", None),
];

/// The time of rows without a time column.
const MISSING_TIME: &str = "1970-01-01T00:00:00Z";

/// The 22 queries, numbered from 1, as the files hold them (Q15 creates, reads and
/// drops a view).
pub const QUERIES: [&str; 22] = [
    include_str!("../../../benchmarks/tpch/queries/q01.sql"),
    include_str!("../../../benchmarks/tpch/queries/q02.sql"),
    include_str!("../../../benchmarks/tpch/queries/q03.sql"),
    include_str!("../../../benchmarks/tpch/queries/q04.sql"),
    include_str!("../../../benchmarks/tpch/queries/q05.sql"),
    include_str!("../../../benchmarks/tpch/queries/q06.sql"),
    include_str!("../../../benchmarks/tpch/queries/q07.sql"),
    include_str!("../../../benchmarks/tpch/queries/q08.sql"),
    include_str!("../../../benchmarks/tpch/queries/q09.sql"),
    include_str!("../../../benchmarks/tpch/queries/q10.sql"),
    include_str!("../../../benchmarks/tpch/queries/q11.sql"),
    include_str!("../../../benchmarks/tpch/queries/q12.sql"),
    include_str!("../../../benchmarks/tpch/queries/q13.sql"),
    include_str!("../../../benchmarks/tpch/queries/q14.sql"),
    include_str!("../../../benchmarks/tpch/queries/q15.sql"),
    include_str!("../../../benchmarks/tpch/queries/q16.sql"),
    include_str!("../../../benchmarks/tpch/queries/q17.sql"),
    include_str!("../../../benchmarks/tpch/queries/q18.sql"),
    include_str!("../../../benchmarks/tpch/queries/q19.sql"),
    include_str!("../../../benchmarks/tpch/queries/q20.sql"),
    include_str!("../../../benchmarks/tpch/queries/q21.sql"),
    include_str!("../../../benchmarks/tpch/queries/q22.sql"),
];

/// A query file's statements as DataFusion takes them, each with whether it is the
/// query whose rows are the answer (Q15 creates and drops a view around its query).
/// DataFusion refuses the standard's leading-field precision (`interval '90' day (3)`),
/// which for a value that fits means nothing; it is left out.
pub fn datafusion_statements(script: &str) -> Vec<(String, bool)> {
    script
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|statement| {
            let text = statement.replace("day (3)", "day");
            let head = text.trim_start();
            let answers = !head.starts_with("create") && !head.starts_with("drop");
            (text, answers)
        })
        .collect()
}

/// The Parquet file of `table` under `dir`.
pub fn parquet_path(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}.parquet"))
}

/// Generates every table at `scale` into `dir`, one Parquet file each.
pub fn write_parquet(dir: &Path, scale: f64) -> Result<(), Box<dyn std::error::Error>> {
    for (table, _) in TABLES {
        let file = File::create(parquet_path(dir, table))?;
        let mut batches = generator(table, scale);
        let mut writer = ArrowWriter::try_new(file, batches.schema().clone(), None)?;
        for batch in batches.by_ref() {
            writer.write(&batch)?;
        }
        writer.close()?;
    }
    Ok(())
}

fn generator(table: &str, scale: f64) -> Box<dyn RecordBatchIterator> {
    match table {
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(scale, 1, 1))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(scale, 1, 1))),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(scale, 1, 1))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(scale, 1, 1))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(scale, 1, 1))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(scale, 1, 1))),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, 1, 1))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, 1, 1))),
        other => panic!("{other} is not a TPC-H table"),
    }
}

/// The Druid batch ingestion spec that loads `table` from its Parquet file in `dir`.
pub fn ingestion_spec(table: &str, dir: &Path) -> Value {
    let time = TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .unwrap_or_else(|| panic!("{table} is not a TPC-H table"))
        .1;
    let timestamp = match time {
        Some(column) => json!({ "column": column, "format": "auto" }),
        None => json!({ "column": "timestamp", "missingValue": MISSING_TIME }),
    };
    json!({
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": table,
                "timestampSpec": timestamp,
                "dimensionsSpec": { "dimensions": dimensions(&generator(table, 0.01).schema().clone()) },
                "granularitySpec": {
                    "segmentGranularity": "year",
                    "queryGranularity": "none",
                    "rollup": false
                }
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": { "type": "local", "files": [parquet_path(dir, table)] },
                "inputFormat": { "type": "parquet" }
            },
            "tuningConfig": { "type": "index_parallel", "partitionsSpec": { "type": "dynamic" } }
        }
    })
}

/// Every column, typed: integers as long, decimals as double, dates as date.
fn dimensions(schema: &SchemaRef) -> Vec<Value> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let kind = match field.data_type() {
                DataType::Int32 | DataType::Int64 => "long",
                DataType::Decimal128(..) | DataType::Float64 => "double",
                DataType::Date32 => "date",
                _ => "string",
            };
            json!({ "type": kind, "name": field.name() })
        })
        .collect()
}
