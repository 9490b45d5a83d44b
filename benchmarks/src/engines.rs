//! The engines timed: Grove over Flight SQL, DataFusion in this process, and the
//! Python ones (`benchmarks/engines.py`). Each runs every query once to warm up,
//! then `runs` times; the answer kept is the last run's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use grove_sql::flight_sql::client::Remote;
use grove_sql::repl::Statements;
use grove_testkit::tpch::{self, TABLES};
use serde_json::{Value, json};

use crate::answers::{self, Rows};
use crate::{Query, Result};

/// Every engine, in the order they run.
pub const ALL: &str = "grove,grove-cluster,datafusion,duckdb,duckdb-native,chdb,chdb-mergetree";

/// One engine's times and answers.
pub struct Timing {
    pub engine: String,
    pub version: String,
    /// Seconds to make its tables, when it has tables of its own.
    pub load_seconds: Option<f64>,
    pub queries: BTreeMap<String, Outcome>,
}

pub enum Outcome {
    Ran { ms: Vec<f64>, rows: Rows },
    Failed(String),
}

pub enum Engine {
    Grove {
        name: &'static str,
        _server: Box<Servers>,
        runtime: tokio::runtime::Runtime,
        remote: Remote,
    },
    DataFusion {
        runtime: tokio::runtime::Runtime,
        ctx: SessionContext,
    },
    Python {
        name: String,
        command: Command,
    },
}

impl Engine {
    pub fn start(
        name: &str,
        grove: &Path,
        parquet: &Path,
        data: &Path,
        work: &Path,
        python: &Path,
        threads: usize,
    ) -> Result<Engine> {
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
        };
        match name {
            "grove" | "grove-cluster" => {
                let (name, servers) = if name == "grove" {
                    ("grove", Servers::start(grove, data)?)
                } else {
                    ("grove-cluster", Servers::cluster(grove, parquet, work)?)
                };
                servers.wait_served(Duration::from_secs(600))?;
                let runtime = runtime()?;
                let url = format!("grpc://127.0.0.1:{}", servers.flight_port);
                let remote = runtime.block_on(Remote::connect(&url, None, None))?;
                // Every run reads the segments, and no run fills the result cache
                // (which takes a fragment per segment): the cache is off.
                runtime.block_on(remote.query("SET grove.use_cache = false"))?;
                runtime.block_on(remote.query("SET grove.populate_cache = false"))?;
                Ok(Engine::Grove {
                    name,
                    _server: Box::new(servers),
                    runtime,
                    remote,
                })
            }
            "datafusion" => {
                let runtime = runtime()?;
                let config = SessionConfig::new().with_target_partitions(threads);
                let ctx = SessionContext::new_with_config(config);
                for (table, _) in TABLES {
                    let path = tpch::parquet_path(parquet, table);
                    let path = path.to_str().ok_or("a non-UTF-8 path")?;
                    runtime.block_on(ctx.register_parquet(
                        table,
                        path,
                        ParquetReadOptions::default(),
                    ))?;
                }
                Ok(Engine::DataFusion { runtime, ctx })
            }
            "duckdb" | "duckdb-native" | "chdb" | "chdb-mergetree" => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("engines.py");
                let mut command = Command::new(python);
                command
                    .arg(script)
                    .args(["run", name, "--parquet"])
                    .arg(parquet)
                    .arg("--work")
                    .arg(work.join("engines"))
                    .args(["--threads", &threads.to_string()]);
                Ok(Engine::Python {
                    name: name.to_string(),
                    command,
                })
            }
            other => Err(format!("no engine {other}; the engines are {ALL}").into()),
        }
    }

    pub fn run(self, queries: &[Query], runs: usize) -> Result<Timing> {
        match self {
            Engine::Grove {
                name,
                _server,
                runtime,
                remote,
            } => {
                let mut timing = Timing::new(name, env!("CARGO_PKG_VERSION"), None);
                for query in queries {
                    let outcome = timed(
                        query,
                        runs,
                        |i, statement| {
                            let (_, batches) = runtime.block_on(remote.query(statement))?;
                            Ok((i == query.answer).then_some(batches))
                        },
                        &query.statements,
                    );
                    timing.record(query, outcome);
                }
                Ok(timing)
            }
            Engine::DataFusion { runtime, ctx } => {
                let version = datafusion::DATAFUSION_VERSION;
                let mut timing = Timing::new("datafusion", version, None);
                for query in queries {
                    let outcome = timed(
                        query,
                        runs,
                        |i, statement| {
                            let batches = runtime
                                .block_on(async { ctx.sql(statement).await?.collect().await })?;
                            Ok((i == query.answer).then_some(batches))
                        },
                        &query.portable,
                    );
                    timing.record(query, outcome);
                }
                Ok(timing)
            }
            Engine::Python { name, mut command } => python(&name, &mut command, queries, runs),
        }
    }
}

impl Timing {
    fn new(engine: &str, version: &str, load_seconds: Option<f64>) -> Timing {
        Timing {
            engine: engine.to_string(),
            version: version.to_string(),
            load_seconds,
            queries: BTreeMap::new(),
        }
    }

    fn record(&mut self, query: &Query, outcome: Outcome) {
        match &outcome {
            Outcome::Ran { ms, .. } => eprintln!("{} {}: {ms:.1?} ms", self.engine, query.name),
            Outcome::Failed(why) => eprintln!("{} {}: failed: {why}", self.engine, query.name),
        }
        self.queries.insert(query.name.clone(), outcome);
    }
}

/// Runs `statements` once, then `runs` times, timing each run whole; `run` answers
/// the batches of the statement whose rows are the answer.
fn timed(
    query: &Query,
    runs: usize,
    mut run: impl FnMut(
        usize,
        &str,
    ) -> std::result::Result<
        Option<Vec<datafusion::arrow::array::RecordBatch>>,
        Box<dyn std::error::Error>,
    >,
    statements: &[String],
) -> Outcome {
    let mut ms = Vec::new();
    let mut answer = Vec::new();
    for round in 0..=runs {
        let began = Instant::now();
        for (i, statement) in statements.iter().enumerate() {
            match run(i, statement) {
                Ok(Some(batches)) => answer = batches,
                Ok(None) => {}
                Err(e) => return Outcome::Failed(format!("{}: {e}", query.name)),
            }
        }
        if round > 0 {
            ms.push(began.elapsed().as_secs_f64() * 1000.0);
        }
    }
    match answers::from_batches(&answer) {
        Ok(rows) => Outcome::Ran { ms, rows },
        Err(e) => Outcome::Failed(e),
    }
}

/// Runs every query in `benchmarks/engines.py`.
fn python(name: &str, command: &mut Command, queries: &[Query], runs: usize) -> Result<Timing> {
    let input: Vec<Value> = queries
        .iter()
        .map(|q| json!({ "name": q.name, "statements": q.portable, "answer": q.answer }))
        .collect();
    let mut child = command
        .args(["--runs", &runs.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{name}: cannot run Python: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(serde_json::to_string(&input)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("{name}: engines.py failed ({})", out.status).into());
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let mut timing = Timing::new(
        name,
        report["version"].as_str().unwrap_or("?"),
        report["load_seconds"].as_f64(),
    );
    for query in queries {
        let answer = &report["queries"][&query.name];
        let outcome = match answer["error"].as_str() {
            Some(why) => Outcome::Failed(why.to_string()),
            None => Outcome::Ran {
                ms: answer["ms"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default(),
                rows: answers::from_json(&answer["rows"]),
            },
        };
        timing.queries.insert(query.name.clone(), outcome);
    }
    Ok(timing)
}

/// Grove's processes, killed when dropped: `grove start --historicals 2` on the
/// ingested data, or a cluster of its own (etcd, a coordinator, two historicals and a
/// broker, each its own process).
pub struct Servers {
    children: Vec<Child>,
    url: String,
    flight_port: u16,
    _etcd: Option<grove_testkit::Etcd>,
    /// A directory of the run's own, removed with the processes (a cluster's
    /// segments, a few GB at scale 1).
    scratch: Option<std::path::PathBuf>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The secret the benchmark cluster's nodes share: one per run.
fn cluster_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("grove-bench-{}-{nanos}", std::process::id())
    })
}

fn spawn(grove: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    Ok(Command::new(grove)
        .args(args)
        .env("GROVE_CLUSTER_SECRET", cluster_secret())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

impl Servers {
    /// `grove start --historicals 2` on `data`.
    pub fn start(grove: &Path, data: &Path) -> Result<Servers> {
        let (http, flight) = (free_port()?, free_port()?);
        let args: Vec<String> = vec![
            "start".into(),
            "--historicals".into(),
            "2".into(),
            "--pg-addr".into(),
            "127.0.0.1:0".into(),
            "--flight-addr".into(),
            format!("127.0.0.1:{flight}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        let log = data.with_file_name("grove-start.log");
        Ok(Servers {
            children: vec![spawn(grove, &args, &log)?],
            url: format!("http://127.0.0.1:{http}/druid/v2/sql"),
            flight_port: flight,
            _etcd: None,
            scratch: None,
        })
    }

    /// A cluster on a fresh etcd, its segments loaded with `grove ingest --etcd`.
    fn cluster(grove: &Path, parquet: &Path, work: &Path) -> Result<Servers> {
        let dir = work.join("cluster");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let etcd = grove_testkit::Etcd::start();
        let deep = format!("file://{}", dir.join("deep").display());
        let common = |role: &str, name: &str| -> Result<Vec<String>> {
            Ok(vec![
                role.into(),
                "--etcd".into(),
                etcd.endpoint(),
                "--node-id".into(),
                name.into(),
                "--http-addr".into(),
                format!("127.0.0.1:{}", free_port()?),
            ])
        };
        let mut children = Vec::new();
        let mut coordinator = common("coordinator", "coordinator")?;
        coordinator.extend(["--period".into(), "PT1S".into()]);
        children.push(spawn(grove, &coordinator, &dir.join("coordinator.log"))?);
        for name in ["historical-1", "historical-2"] {
            let mut historical = common("historical", name)?;
            historical.extend([
                "--flight-addr".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                dir.join(name).display().to_string(),
                "--deep-storage".into(),
                deep.clone(),
            ]);
            children.push(spawn(grove, &historical, &dir.join(format!("{name}.log")))?);
        }
        let (http, flight) = (free_port()?, free_port()?);
        let broker: Vec<String> = vec![
            "broker".into(),
            "--etcd".into(),
            etcd.endpoint(),
            "--node-id".into(),
            "broker".into(),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
            "--pg-addr".into(),
            "127.0.0.1:0".into(),
            "--flight-addr".into(),
            format!("127.0.0.1:{flight}"),
        ];
        children.push(spawn(grove, &broker, &dir.join("broker.log"))?);
        let servers = Servers {
            children,
            url: format!("http://127.0.0.1:{http}/druid/v2/sql"),
            flight_port: flight,
            _etcd: Some(etcd),
            scratch: Some(dir.clone()),
        };
        let target = [
            "--etcd".to_string(),
            servers.etcd_endpoint()?,
            "--deep-storage".to_string(),
            deep,
        ];
        crate::ingest(grove, parquet, &dir, &target)?;
        Ok(servers)
    }

    fn etcd_endpoint(&self) -> Result<String> {
        Ok(self._etcd.as_ref().ok_or("no etcd")?.endpoint())
    }

    /// The process id of the first process (`grove start`'s only one).
    pub fn pid(&self) -> u32 {
        self.children.first().map_or(0, Child::id)
    }

    /// The port of Flight SQL.
    pub fn flight_port(&self) -> u16 {
        self.flight_port
    }

    /// Waits until two historicals serve every segment.
    pub fn wait_served(&self, timeout: Duration) -> Result<()> {
        let began = Instant::now();
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let body = json!({ "query": "SELECT COUNT(*) AS segments, \
                                     SUM(CASE WHEN num_replicas < 2 THEN 1 ELSE 0 END) AS short \
                                     FROM sys.segments" });
        loop {
            let served = agent
                .post(&self.url)
                .send_json(&body)
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|rows| {
                    rows[0]["segments"].as_i64() > Some(0) && rows[0]["short"] == 0
                });
            if served {
                return Ok(());
            }
            if began.elapsed() > timeout {
                return Err("Grove did not serve every segment twice in time".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
