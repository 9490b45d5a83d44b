//! `grove-bench tpch`: TPC-H at a scale factor, timed in one run on Grove (a broker and
//! two historicals of `grove start`, fragments over loopback Flight) and on DataFusion
//! over the same Parquet files. Data comes from tpchgen; Grove loads it with the Druid
//! specs of `grove_testkit::tpch` through `grove ingest`. Grove's queries go over its
//! HTTP SQL API with the result cache off, so every run reads the segments.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use grove_testkit::tpch::{self, QUERIES, TABLES};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "grove-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The 22 TPC-H queries on Grove and on DataFusion.
    Tpch {
        /// The TPC-H scale factor.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Where data, segments and results go (kept between runs: data is generated
        /// and ingested only once per scale).
        #[arg(long)]
        work: PathBuf,
        /// Timed runs of each query on each engine (after one warm-up run).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The `grove` binary; default: next to this one.
        #[arg(long)]
        grove: Option<PathBuf>,
    },
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let Bench::Tpch {
        scale,
        work,
        runs,
        grove,
    } = Cli::parse().command;
    let grove = match grove {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("grove"),
    };
    let parquet = work.join(format!("sf{scale}/parquet"));
    let data = work.join(format!("sf{scale}/grove"));
    if !parquet.join("done").exists() {
        std::fs::create_dir_all(&parquet)?;
        let began = Instant::now();
        tpch::write_parquet(&parquet, scale)?;
        std::fs::write(parquet.join("done"), "")?;
        eprintln!(
            "generated scale {scale} in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
    if !data.join("done").exists() {
        ingest(&grove, &parquet, &data)?;
        std::fs::write(data.join("done"), "")?;
    }
    let server = GroveStart::run(&grove, &data)?;
    server.wait_served(Duration::from_secs(600))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let ctx = runtime.block_on(datafusion_over(&parquet))?;

    let mut results = Vec::new();
    println!("query   grove ms (best, median)   datafusion ms (best, median)   rows");
    for (i, text) in QUERIES.iter().enumerate() {
        let number = i + 1;
        let mut grove_ms = Vec::new();
        let mut datafusion_ms = Vec::new();
        let mut rows = (0, 0);
        for run in 0..=runs {
            let began = Instant::now();
            rows.0 = server.query(text)?;
            let grove_elapsed = began.elapsed();
            let began = Instant::now();
            rows.1 = runtime.block_on(datafusion_rows(&ctx, text))?;
            let datafusion_elapsed = began.elapsed();
            if run > 0 {
                grove_ms.push(grove_elapsed.as_secs_f64() * 1000.0);
                datafusion_ms.push(datafusion_elapsed.as_secs_f64() * 1000.0);
            }
        }
        if rows.0 != rows.1 {
            return Err(format!(
                "Q{number}: Grove answered {} rows, DataFusion {}",
                rows.0, rows.1
            )
            .into());
        }
        let (g, d) = (summary(&mut grove_ms), summary(&mut datafusion_ms));
        println!(
            "Q{number:<6} {:>10.1} {:>10.1}          {:>10.1} {:>10.1}           {}",
            g.0, g.1, d.0, d.1, rows.0
        );
        results.push(json!({
            "query": number, "rows": rows.0,
            "grove_ms": grove_ms, "datafusion_ms": datafusion_ms,
        }));
    }
    let total = |key: &str| -> f64 {
        results
            .iter()
            .map(|r| {
                let mut times: Vec<f64> = r[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                summary(&mut times).1
            })
            .sum()
    };
    let (grove_total, datafusion_total) = (total("grove_ms"), total("datafusion_ms"));
    println!(
        "total (sum of medians): Grove {grove_total:.0} ms, DataFusion {datafusion_total:.0} ms"
    );
    let report = json!({
        "benchmark": "tpch", "scale": scale, "runs": runs,
        "grove": "grove start --historicals 2 (broker + 2 historicals, loopback Flight), HTTP SQL, useCache=false",
        "datafusion": "SessionContext over the Parquet files, same process as the client",
        "queries": results,
        "total_median_ms": { "grove": grove_total, "datafusion": datafusion_total },
    });
    let out = work.join(format!("tpch-sf{scale}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("results in {}", out.display());
    Ok(())
}

/// (best, median) of `times`.
fn summary(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    match times {
        [] => (0.0, 0.0),
        _ => (times[0], times[times.len() / 2]),
    }
}

fn ingest(grove: &Path, parquet: &Path, data: &Path) -> Result<()> {
    std::fs::create_dir_all(data)?;
    for (table, _) in TABLES {
        let spec = data.join(format!("{table}-spec.json"));
        std::fs::write(&spec, tpch::ingestion_spec(table, parquet).to_string())?;
        let began = Instant::now();
        let status = Command::new(grove)
            .arg("ingest")
            .arg(&spec)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("grove ingest {table} failed").into());
        }
        eprintln!("ingested {table} in {:.1} s", began.elapsed().as_secs_f64());
    }
    Ok(())
}

async fn datafusion_over(parquet: &Path) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    for (table, _) in TABLES {
        let path = tpch::parquet_path(parquet, table);
        let path = path.to_str().ok_or("a non-UTF-8 path")?;
        ctx.register_parquet(table, path, ParquetReadOptions::default())
            .await?;
    }
    Ok(ctx)
}

/// Runs a query file's statements; the rows of its last query.
async fn datafusion_rows(ctx: &SessionContext, script: &str) -> Result<usize> {
    let mut rows = 0;
    for (statement, answers) in tpch::datafusion_statements(script) {
        let batches = ctx.sql(&statement).await?.collect().await?;
        if answers {
            rows = batches.iter().map(|b| b.num_rows()).sum();
        }
    }
    Ok(rows)
}

/// `grove start --historicals 2` on the ingested data, killed when dropped.
struct GroveStart {
    child: Child,
    url: String,
}

impl GroveStart {
    fn run(grove: &Path, data: &Path) -> Result<GroveStart> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(grove)
            .args([
                "start",
                "--historicals",
                "2",
                "--pg-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
                "--http-addr",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(GroveStart {
            child,
            url: format!("http://127.0.0.1:{port}/druid/v2/sql"),
        })
    }

    fn wait_served(&self, timeout: Duration) -> Result<()> {
        let began = Instant::now();
        let query = "SELECT COUNT(*) AS n FROM sys.segments WHERE num_replicas < 2";
        loop {
            if let Ok(rows) = self.post(query)
                && rows.first().and_then(|r| r["n"].as_i64()) == Some(0)
            {
                return Ok(());
            }
            if began.elapsed() > timeout {
                return Err("grove start did not serve every segment twice in time".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a query file on the broker; the number of rows answered.
    fn query(&self, script: &str) -> Result<usize> {
        Ok(self.post(script)?.len())
    }

    fn post(&self, query: &str) -> Result<Vec<Value>> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(3600)))
                .build(),
        );
        let body = json!({ "query": query, "context": { "useCache": false } });
        let mut response = agent.post(&self.url).send_json(body)?;
        let status = response.status();
        match response.body_mut().read_json::<Value>()? {
            Value::Array(rows) if status.is_success() => Ok(rows),
            other => Err(format!("{status}: {other}").into()),
        }
    }
}

impl Drop for GroveStart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
