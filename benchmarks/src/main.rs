//! `grove-bench suite`: TPC-H (the 22 queries in their standard text) and the queries
//! of Druid's published benchmark on lineitem, at one scale factor, timed in one run
//! on Grove and on the engines its users would otherwise pick: DataFusion over the
//! same Parquet files, DuckDB and ClickHouse (chDB) over the Parquet files and on
//! their own tables. Every engine's answer is checked against DataFusion's; a
//! mismatch fails the run. Results go to `benchmarks/results/` as JSON, a markdown
//! table and a chart.
//!
//! Grove is `grove start --historicals 2` (a broker and two historicals in one
//! process, fragments over loopback Flight), loaded with the Druid specs of
//! `grove_testkit::tpch` through `grove ingest`, and queried over Flight SQL with the
//! result cache off, so every run reads the segments.

mod answers;
mod engines;
mod load;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use grove_testkit::tpch::{self, QUERIES};

use engines::Engine;

#[derive(Parser)]
#[command(name = "grove-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// TPC-H and Druid's benchmark on Grove and the other engines.
    Suite {
        /// The TPC-H scale factor.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Where data, segments and the other engines' tables go (kept between runs:
        /// each is made once per scale).
        #[arg(long)]
        work: PathBuf,
        /// Timed runs of each query on each engine, after one warm-up run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The engines, comma-separated; default all of them.
        #[arg(long, value_delimiter = ',', default_value = engines::ALL)]
        engines: Vec<String>,
        /// Where the results go; default benchmarks/results/DATE-sfSCALE.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The `grove` binary; default: next to this one.
        #[arg(long)]
        grove: Option<PathBuf>,
        /// The Python with duckdb, chdb and matplotlib (`benchmarks/run.sh` makes it).
        #[arg(long, env = "GROVE_BENCH_PYTHON")]
        python: PathBuf,
    },
    /// Many clients at once against `grove start --historicals 2` on the TPC-H data,
    /// mixing Druid's queries with large TPC-H ones: queries per second, p50 and p99
    /// latency, errors and peak memory per level. Fails when any query failed.
    Load {
        /// The TPC-H scale factor.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// As for `suite`: the data is made once per scale and kept.
        #[arg(long)]
        work: PathBuf,
        /// The numbers of clients, one level each.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        levels: Vec<usize>,
        /// How long each level runs, in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Where `load.json` and `load.md` go; default benchmarks/results/DATE-load-sfSCALE.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The `grove` binary; default: next to this one.
        #[arg(long)]
        grove: Option<PathBuf>,
    },
    /// Writes the rows of a CSV file (with a header) as newline-delimited JSON or as
    /// Parquet, by the output's extension: the inputs of `benchmarks/ingest.sh`.
    Convert { input: PathBuf, output: PathBuf },
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One benchmark query.
pub struct Query {
    /// `q01` ... `q22`, or the name Druid's benchmark gives it.
    pub name: String,
    pub suite: &'static str,
    /// Its statements (Q15 creates a view, queries it and drops it), as the file
    /// holds them: Grove runs these.
    pub statements: Vec<String>,
    /// The statements as the other engines take them (without the standard's
    /// `interval '90' day (3)` precision, which they refuse).
    pub portable: Vec<String>,
    /// Which statement's rows are the answer.
    pub answer: usize,
}

/// Druid's benchmark on lineitem (the SQL of its comparison with MySQL), with
/// `EXTRACT(YEAR ...)` for MySQL's `YEAR()` and the top-100 orders made total.
const DRUID: [(&str, &str); 9] = [
    (
        "count_star_interval",
        include_str!("../druid/queries/count_star_interval.sql"),
    ),
    ("sum_price", include_str!("../druid/queries/sum_price.sql")),
    ("sum_all", include_str!("../druid/queries/sum_all.sql")),
    (
        "sum_all_year",
        include_str!("../druid/queries/sum_all_year.sql"),
    ),
    (
        "sum_all_filter",
        include_str!("../druid/queries/sum_all_filter.sql"),
    ),
    (
        "top_100_parts",
        include_str!("../druid/queries/top_100_parts.sql"),
    ),
    (
        "top_100_parts_details",
        include_str!("../druid/queries/top_100_parts_details.sql"),
    ),
    (
        "top_100_parts_filter",
        include_str!("../druid/queries/top_100_parts_filter.sql"),
    ),
    (
        "top_100_commitdate",
        include_str!("../druid/queries/top_100_commitdate.sql"),
    ),
];

fn queries() -> Vec<Query> {
    let tpch = QUERIES
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("q{:02}", i + 1), "tpch", *text));
    let druid = DRUID
        .iter()
        .map(|(name, text)| (name.to_string(), "druid", *text));
    tpch.chain(druid)
        .map(|(name, suite, text)| {
            let portable = tpch::datafusion_statements(text);
            let answer = portable.iter().position(|(_, a)| *a).unwrap_or(0);
            Query {
                name,
                suite,
                statements: text
                    .split(';')
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
                portable: portable.into_iter().map(|(s, _)| s).collect(),
                answer,
            }
        })
        .collect()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::Suite {
            scale,
            work,
            runs,
            engines,
            out,
            grove,
            python,
        } => suite(scale, work, runs, engines, out, grove, python),
        Bench::Load {
            scale,
            work,
            levels,
            seconds,
            out,
            grove,
        } => load_bench(scale, &work, &levels, seconds, out, grove),
        Bench::Convert { input, output } => convert(&input, &output),
    }
}

/// The CSV's rows in the format `output`'s extension names, with the types DataFusion
/// infers.
fn convert(input: &Path, output: &Path) -> Result<()> {
    use datafusion::dataframe::DataFrameWriteOptions;
    use datafusion::prelude::{CsvReadOptions, SessionContext};
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ctx = SessionContext::new();
        let frame = ctx
            .read_csv(input.display().to_string(), CsvReadOptions::new())
            .await?;
        let target = output.display().to_string();
        let single = DataFrameWriteOptions::new().with_single_file_output(true);
        match output.extension().and_then(|e| e.to_str()) {
            Some("json") => frame.write_json(&target, single, None).await?,
            Some("parquet") => frame.write_parquet(&target, single, None).await?,
            other => {
                return Err(format!("cannot write {other:?} files: use .json or .parquet").into());
            }
        };
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn suite(
    scale: f64,
    work: PathBuf,
    runs: usize,
    engines: Vec<String>,
    out: Option<PathBuf>,
    grove: Option<PathBuf>,
    python: PathBuf,
) -> Result<()> {
    let grove = match grove {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("grove"),
    };
    let threads = std::thread::available_parallelism()?.get();
    let dir = work.join(format!("sf{scale}"));
    let parquet = dir.join("parquet");
    let data = dir.join("grove");
    let load = load(&grove, scale, &parquet, &data)?;
    let queries = queries();

    let mut timings = Vec::new();
    for name in &engines {
        eprintln!("engine {name} ...");
        let began = Instant::now();
        let engine = Engine::start(name, &grove, &parquet, &data, &dir, &python, threads)?;
        let timing = engine.run(&queries, runs)?;
        eprintln!(
            "engine {name}: {:.1} s in all",
            began.elapsed().as_secs_f64()
        );
        timings.push(timing);
    }

    let out = match out {
        Some(out) => out,
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("{}-sf{scale}", report::today())),
    };
    let report = report::Report::new(scale, runs, threads, load, &queries, timings);
    report.write(&out, &python)?;
    eprintln!("results in {}", out.display());
    match report.mismatches() {
        [] => Ok(()),
        mismatches => Err(format!("answers differ:\n{}", mismatches.join("\n")).into()),
    }
}

/// The load benchmark (see [`load`]): its levels' figures in `out`.
fn load_bench(
    scale: f64,
    work: &Path,
    levels: &[usize],
    seconds: u64,
    out: Option<PathBuf>,
    grove: Option<PathBuf>,
) -> Result<()> {
    let grove = match grove {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("grove"),
    };
    let dir = work.join(format!("sf{scale}"));
    let data = dir.join("grove");
    load(&grove, scale, &dir.join("parquet"), &data)?;
    let results = load::run(&grove, &data, &queries(), levels, seconds)?;
    let out = match out {
        Some(out) => out,
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("{}-load-sf{scale}", report::today())),
    };
    std::fs::create_dir_all(&out)?;
    let figures: Vec<serde_json::Value> = results.iter().map(load::Level::to_json).collect();
    let summary = serde_json::json!({
        "scale": scale,
        "seconds_per_level": seconds,
        "threads": std::thread::available_parallelism()?.get(),
        "levels": figures,
    });
    std::fs::write(
        out.join("load.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let table = load::table(&results);
    std::fs::write(out.join("load.md"), &table)?;
    println!("{table}");
    eprintln!("results in {}", out.display());
    let errors: usize = results.iter().map(|l| l.errors.len()).sum();
    match errors {
        0 => Ok(()),
        n => Err(format!("{n} queries failed under load").into()),
    }
}

/// What loading the data took, made once per scale and kept in `ingest.json`.
fn load(grove: &Path, scale: f64, parquet: &Path, data: &Path) -> Result<serde_json::Value> {
    let generated = parquet.join("done");
    let mut generate_seconds = None;
    if !generated.exists() {
        std::fs::create_dir_all(parquet)?;
        let began = Instant::now();
        tpch::write_parquet(parquet, scale)?;
        std::fs::write(&generated, "")?;
        generate_seconds = Some(began.elapsed().as_secs_f64());
    }
    let stats = data.join("ingest.json");
    if let Ok(text) = std::fs::read_to_string(&stats) {
        return Ok(serde_json::from_str(&text)?);
    }
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    let began = Instant::now();
    let target = ["--data-dir".to_string(), data.display().to_string()];
    let tables = ingest(grove, parquet, data, &target)?;
    let seconds = began.elapsed().as_secs_f64();
    let rows: u64 = tables.iter().map(|t| t.1).sum();
    let value = serde_json::json!({
        "generate_seconds": generate_seconds,
        "ingest_seconds": seconds,
        "rows": rows,
        // `grove ingest` reads and writes on one thread.
        "rows_per_second_per_core": rows as f64 / seconds,
        "tables": tables.iter().map(|(table, rows, secs)| serde_json::json!({
            "table": table, "rows": rows, "seconds": secs,
        })).collect::<Vec<_>>(),
        "parquet_bytes": bytes_under(parquet)?,
        "segment_bytes": bytes_under(&data.join("deep"))?,
    });
    std::fs::write(&stats, serde_json::to_string_pretty(&value)?)?;
    Ok(value)
}

/// The bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += bytes_under(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Ingests every table from `parquet` with `grove ingest ... TARGET` (`--data-dir
/// DIR`, or `--etcd URL --deep-storage URL`), its specs written to `specs`: each
/// table's name, rows and seconds.
pub fn ingest(
    grove: &Path,
    parquet: &Path,
    specs: &Path,
    target: &[String],
) -> Result<Vec<(String, u64, f64)>> {
    std::fs::create_dir_all(specs)?;
    let mut tables = Vec::new();
    for (table, _) in tpch::TABLES {
        let spec = specs.join(format!("{table}-spec.json"));
        std::fs::write(&spec, tpch::ingestion_spec(table, parquet).to_string())?;
        let began = Instant::now();
        let out = std::process::Command::new(grove)
            .arg("ingest")
            .arg(&spec)
            .args(target)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "grove ingest {table} {} failed: {}",
                target.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let seconds = began.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rows = stdout
            .split("rows read ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("grove ingest {table} did not say how many rows: {stdout}"))?;
        eprintln!("ingested {table}: {rows} rows in {seconds:.1} s");
        tables.push((table.to_string(), rows, seconds));
    }
    Ok(tables)
}
