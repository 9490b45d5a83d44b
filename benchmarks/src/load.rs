//! The load benchmark: `grove start --historicals 2` (a broker and two historicals)
//! on the TPC-H data, and at each level that many clients at once, each on a Flight
//! SQL connection of its own, running a mix of small queries (Druid's nine) and large
//! ones (TPC-H Q1, Q3, Q6, Q14) in turn for a fixed time. Per level: queries per
//! second, latency percentiles, errors, and the process's peak memory.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_sql::flight_sql::client::Remote;
use grove_sql::repl::Statements;
use serde_json::{Value, json};

use crate::engines::Servers;
use crate::{Query, Result};

/// The large queries of the mix.
const LARGE: [&str; 4] = ["q01", "q03", "q06", "q14"];

/// One level's figures.
pub struct Level {
    pub clients: usize,
    pub seconds: f64,
    pub completed: usize,
    pub errors: Vec<String>,
    /// Latencies of completed queries, sorted, in milliseconds.
    latencies: Vec<f64>,
    /// The largest resident memory of `grove start` during the level (its peak is
    /// reset before each), in bytes; `None` where `/proc` does not tell.
    pub peak_bytes: Option<u64>,
}

impl Level {
    fn percentile(&self, p: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }

    pub fn to_json(&self) -> Value {
        json!({
            "clients": self.clients,
            "seconds": self.seconds,
            "completed": self.completed,
            "queries_per_second": self.completed as f64 / self.seconds,
            "p50_ms": self.percentile(50.0),
            "p99_ms": self.percentile(99.0),
            "errors": self.errors.len(),
            "first_errors": self.errors.iter().take(5).collect::<Vec<_>>(),
            "peak_mib": self.peak_bytes.map(|b| b / (1 << 20)),
        })
    }
}

/// The mix, in the order each client runs it (client `i` starts at the `i`-th).
fn mix(queries: &[Query]) -> Vec<(String, Vec<String>)> {
    queries
        .iter()
        .filter(|q| q.suite == "druid" || LARGE.contains(&q.name.as_str()))
        .map(|q| (q.name.clone(), q.statements.clone()))
        .collect()
}

/// Runs each level in turn for `seconds` against `grove start` on `data`.
pub fn run(
    grove: &Path,
    data: &Path,
    queries: &[Query],
    levels: &[usize],
    seconds: u64,
) -> Result<Vec<Level>> {
    let servers = Servers::start(grove, data)?;
    servers.wait_served(Duration::from_secs(600))?;
    let pid = servers.pid();
    let url = format!("grpc://127.0.0.1:{}", servers.flight_port());
    let mix = Arc::new(mix(queries));
    let runtime = tokio::runtime::Runtime::new()?;
    let mut out = Vec::new();
    for &clients in levels {
        // Writing 5 resets the process's peak resident size to its current one.
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let level = runtime.block_on(level(&url, &mix, clients, Duration::from_secs(seconds)))?;
        let peak_bytes = reset.then(|| peak(pid)).flatten();
        let level = Level {
            peak_bytes,
            ..level
        };
        eprintln!("load {clients} clients: {}", level.to_json());
        out.push(level);
    }
    Ok(out)
}

/// `clients` clients, each running the mix in turn until `length` has passed; the
/// level ends when each has finished its last query.
async fn level(
    url: &str,
    mix: &Arc<Vec<(String, Vec<String>)>>,
    clients: usize,
    length: Duration,
) -> Result<Level> {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let remote = Remote::connect(url, None, None).await?;
        // Every query reads the segments and fills no cache, as in the suite.
        remote.query("SET grove.use_cache = false").await?;
        remote.query("SET grove.populate_cache = false").await?;
        let mix = Arc::clone(mix);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut next = client % mix.len();
            while began.elapsed() < length {
                let (name, statements) = &mix[next];
                next = (next + 1) % mix.len();
                let started = Instant::now();
                let mut failed = None;
                for statement in statements {
                    if let Err(e) = remote.query(statement).await {
                        failed = Some(format!("{name}: {e}"));
                        break;
                    }
                }
                match failed {
                    None => latencies.push(started.elapsed().as_secs_f64() * 1000.0),
                    Some(e) => errors.push(e),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Level {
        clients,
        seconds: began.elapsed().as_secs_f64(),
        completed: latencies.len(),
        errors,
        latencies,
        peak_bytes: None,
    })
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The levels as a Markdown table.
pub fn table(levels: &[Level]) -> String {
    let mut out = String::from(
        "| clients | queries/s | p50 ms | p99 ms | errors | peak memory MiB |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for level in levels {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {} |\n",
            level.clients,
            level.completed as f64 / level.seconds,
            ms(level.percentile(50.0)),
            ms(level.percentile(99.0)),
            level.errors.len(),
            level
                .peak_bytes
                .map_or("-".into(), |b| (b / (1 << 20)).to_string()),
        ));
    }
    out
}
