//! The results of a run: `results.json` (every time, every engine's median, the
//! machine and the data), `results.md` (the table of medians with ratios to Grove) and
//! `chart.png` (drawn by `engines.py chart`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::answers;
use crate::engines::{Outcome, Timing};
use crate::{Query, Result};

/// The engine the others' answers are checked against.
const REFERENCE: &str = "datafusion";

pub struct Report {
    json: Value,
    mismatches: Vec<String>,
}

pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

impl Report {
    pub fn new(
        scale: f64,
        runs: usize,
        threads: usize,
        load: Value,
        queries: &[Query],
        timings: Vec<Timing>,
    ) -> Report {
        let mut mismatches = Vec::new();
        let reference = timings.iter().find(|t| t.engine == REFERENCE);
        let mut rows = Vec::new();
        for query in queries {
            let tolerance = match query.suite {
                "tpch" => answers::Tolerance::Cents,
                _ => answers::Tolerance::Relative,
            };
            let expected = reference.and_then(|r| match r.queries.get(&query.name) {
                Some(Outcome::Ran { rows, .. }) => Some(rows),
                _ => None,
            });
            let (mut median, mut all, mut errors, mut differs) = (
                BTreeMap::new(),
                BTreeMap::new(),
                BTreeMap::new(),
                BTreeMap::new(),
            );
            for timing in &timings {
                match timing.queries.get(&query.name) {
                    Some(Outcome::Ran { ms, rows }) => {
                        median.insert(timing.engine.clone(), json!(median_of(ms)));
                        all.insert(timing.engine.clone(), json!(ms));
                        if let Some(expected) = expected
                            && let Some(why) = answers::difference(expected, rows, tolerance)
                        {
                            mismatches.push(format!("{} on {}: {why}", query.name, timing.engine));
                            differs.insert(timing.engine.clone(), json!(why));
                        }
                    }
                    Some(Outcome::Failed(why)) => {
                        median.insert(timing.engine.clone(), Value::Null);
                        errors.insert(timing.engine.clone(), json!(why));
                    }
                    None => {}
                }
            }
            rows.push(json!({
                "name": query.name, "suite": query.suite,
                "rows": expected.map(|e| e.len()),
                "median_ms": median, "ms": all, "errors": errors, "mismatches": differs,
            }));
        }
        let engines: Vec<&str> = timings.iter().map(|t| t.engine.as_str()).collect();
        let json = json!({
            "date": today(),
            "scale": scale,
            "runs": runs,
            "threads": threads,
            "machine": machine(),
            "load": load,
            "engines": engines,
            "versions": timings.iter().map(|t| (t.engine.clone(), json!(t.version))).collect::<BTreeMap<_, _>>(),
            "engine_load_seconds": timings.iter().map(|t| (t.engine.clone(), json!(t.load_seconds))).collect::<BTreeMap<_, _>>(),
            "queries": rows,
            "checked_against": REFERENCE,
        });
        Report { json, mismatches }
    }

    pub fn mismatches(&self) -> &[String] {
        &self.mismatches
    }

    pub fn write(&self, dir: &Path, python: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let results = dir.join("results.json");
        std::fs::write(&results, serde_json::to_string_pretty(&self.json)?)?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines.py");
        let status = Command::new(python)
            .arg(script)
            .arg("chart")
            .arg(&results)
            .arg(dir.join("chart.png"))
            .status()?;
        if !status.success() {
            return Err("engines.py chart failed".into());
        }
        Ok(())
    }

    fn markdown(&self) -> String {
        let j = &self.json;
        let engines: Vec<&str> = j["engines"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut md = String::new();
        let machine = &j["machine"];
        let _ = writeln!(
            md,
            "# Benchmark {}: TPC-H SF{} and Druid's benchmark\n\n\
             Machine: {} cores ({}), {:.1} GiB of memory. Every engine uses {} threads. \
             Median of {} runs after a warm-up, in ms; in parentheses, the time as a \
             multiple of Grove's (above 1: slower than Grove). Answers checked against {}.\n",
            j["date"].as_str().unwrap_or(""),
            j["scale"],
            machine["cores"],
            machine["cpu"].as_str().unwrap_or("?"),
            machine["memory_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 30),
            j["threads"],
            j["runs"],
            REFERENCE,
        );
        let load = &j["load"];
        let _ = writeln!(
            md,
            "Data: {} rows; Parquet {:.1} MiB, Grove's segments {:.1} MiB ({:.2}x). \
             Ingestion into Grove: {:.1} s, {:.0} rows/s on one core.\n",
            load["rows"],
            load["parquet_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
            load["segment_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
            load["segment_bytes"].as_f64().unwrap_or(0.0)
                / load["parquet_bytes"].as_f64().unwrap_or(1.0),
            load["ingest_seconds"].as_f64().unwrap_or(0.0),
            load["rows_per_second_per_core"].as_f64().unwrap_or(0.0),
        );
        let _ = writeln!(md, "Versions: {}\n", j["versions"]);
        for suite in ["tpch", "druid"] {
            let _ = writeln!(
                md,
                "## {}\n",
                if suite == "tpch" {
                    "TPC-H"
                } else {
                    "Druid's benchmark (lineitem)"
                }
            );
            let _ = writeln!(md, "| query | {} |", engines.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(engines.len()));
            let mut totals = vec![0.0; engines.len()];
            let mut complete = true;
            for query in j["queries"].as_array().into_iter().flatten() {
                if query["suite"] != suite {
                    continue;
                }
                let grove = query["median_ms"]["grove"].as_f64();
                let cells: Vec<String> = engines
                    .iter()
                    .enumerate()
                    .map(|(i, engine)| match query["median_ms"][*engine].as_f64() {
                        Some(ms) => {
                            totals[i] += ms;
                            let mark = if query["mismatches"][*engine].is_null() {
                                ""
                            } else {
                                " **wrong**"
                            };
                            match grove {
                                Some(g) if *engine != "grove" && g > 0.0 => {
                                    format!("{ms:.1} ({:.2}){mark}", ms / g)
                                }
                                _ => format!("{ms:.1}{mark}"),
                            }
                        }
                        None => {
                            complete = false;
                            "failed".to_string()
                        }
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} |",
                    query["name"].as_str().unwrap_or(""),
                    cells.join(" | ")
                );
            }
            let grove_total = engines
                .iter()
                .position(|e| *e == "grove")
                .map(|i| totals[i]);
            let cells: Vec<String> = totals
                .iter()
                .zip(&engines)
                .map(|(t, engine)| match grove_total {
                    Some(g) if *engine != "grove" && g > 0.0 => format!("{t:.0} ({:.2})", t / g),
                    _ => format!("{t:.0}"),
                })
                .collect();
            let _ = writeln!(md, "| **sum** | {} |", cells.join(" | "));
            if !complete {
                let _ = writeln!(md, "\nA failed query adds nothing to its engine's sum.");
            }
            md.push('\n');
        }
        let errors: Vec<String> = j["queries"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|q| {
                q["errors"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(engine, why)| {
                        format!(
                            "- {} on {engine}: {}",
                            q["name"].as_str().unwrap_or(""),
                            why.as_str().unwrap_or("")
                        )
                    })
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(md, "Failures:\n\n{}\n", errors.join("\n"));
        }
        md
    }
}

fn median_of(ms: &[f64]) -> f64 {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Cores, memory and CPU model, from /proc.
fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("?");
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_bytes": memory_kib * 1024,
        "cpu": cpu,
    })
}
