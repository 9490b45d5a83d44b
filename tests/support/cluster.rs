//! A real cluster for end-to-end tests: a real etcd, and `grove coordinator`,
//! `historical` and `broker` processes on free loopback ports, sharing a deep-storage
//! directory. Every process logs to a file; a failed wait prints them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_cluster::assignments;
use grove_cluster::metastore::{EtcdStore, MetaStore};
use grove_cluster::segments::{self, SegmentDescriptor};
use grove_testkit::{Etcd, free_port};
use serde_json::Value;

use crate::{Run, Sandbox, grove_bin};

/// Lease TTL of every process: a killed node is noticed within about this.
pub const LEASE_TTL: &str = "PT2S";

pub struct Process {
    pub name: String,
    pub http: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// The secret every test cluster's nodes share (in `GROVE_CLUSTER_SECRET`).
pub const CLUSTER_SECRET: &str = "the e2e tests' cluster secret";

/// The `Authorization` header of the cluster's internal calls, as an operator's
/// tools send it.
pub fn internal_auth() -> String {
    use base64::Engine as _;
    let credential = format!("grove_internal:{CLUSTER_SECRET}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credential)
    )
}

impl Process {
    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(grove_bin())
            .args(&self.args)
            .env("GROVE_LOG", "info")
            .env("GROVE_CLUSTER_SECRET", CLUSTER_SECRET)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start grove");
        self.child = Some(child);
    }

    /// SIGKILL: no goodbye, its leases run out on their own.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running process");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct TestCluster {
    pub sandbox: Sandbox,
    pub etcd: Etcd,
    pub processes: BTreeMap<String, Process>,
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn MetaStore>,
}

impl Default for TestCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCluster {
    pub fn new() -> TestCluster {
        let etcd = Etcd::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let store: Arc<dyn MetaStore> = Arc::new(
            runtime
                .block_on(EtcdStore::connect(&[etcd.endpoint()]))
                .expect("etcd"),
        );
        TestCluster {
            sandbox: Sandbox::default(),
            etcd,
            processes: BTreeMap::new(),
            runtime,
            store,
        }
    }

    /// `coordinator-1`, historicals `h-1` and `h-2` on the default tier, `broker-1`,
    /// and a default rule keeping `replicas` of every segment.
    pub fn with_two_historicals(replicas: u32) -> TestCluster {
        let mut c = TestCluster::new();
        c.coordinator("coordinator-1", &[]);
        c.historical("h-1", "_default_tier", &[]);
        c.historical("h-2", "_default_tier", &[]);
        c.broker("broker-1");
        let rules = format!(
            r#"[{{"type":"loadForever","tieredReplicants":{{"_default_tier":{replicas}}}}}]"#
        );
        c.set_rules("coordinator-1", "_default", &rules);
        c
    }

    pub fn deep_storage(&self) -> String {
        format!("file://{}", self.sandbox.arg("deep"))
    }

    /// Starts `grove ROLE` named `name` with `extra` flags, and waits for its HTTP.
    pub fn start(&mut self, role: &str, name: &str, extra: &[&str]) -> &mut Process {
        let http = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            role.into(),
            "--etcd".into(),
            self.etcd.endpoint(),
            "--http-addr".into(),
            http.clone(),
            "--node-id".into(),
            name.into(),
            "--lease-ttl".into(),
            LEASE_TTL.into(),
        ];
        if role == "historical" {
            args.extend([
                "--data-dir".into(),
                self.sandbox.arg(name),
                "--deep-storage".into(),
                self.deep_storage(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = Process {
            name: name.into(),
            http,
            args,
            log: self.sandbox.path(&format!("{name}.log")),
            child: None,
        };
        process.spawn();
        self.processes.insert(name.into(), process);
        self.wait_for_http(name);
        self.processes.get_mut(name).expect("just started")
    }

    pub fn coordinator(&mut self, name: &str, extra: &[&str]) {
        let mut args = vec!["--period", "PT1S"];
        args.extend(extra);
        self.start("coordinator", name, &args);
    }

    pub fn historical(&mut self, name: &str, tier: &str, extra: &[&str]) {
        let mut args = vec!["--tier", tier, "--flight-addr", "127.0.0.1:0"];
        args.extend(extra);
        self.start("historical", name, &args);
    }

    /// A worker with `slots` task slots, a data directory of its own and the cluster's
    /// deep storage.
    pub fn worker(&mut self, name: &str, slots: u32) {
        let dir = self.sandbox.arg(name);
        let deep = self.deep_storage();
        let slots = slots.to_string();
        self.start(
            "worker",
            name,
            &[
                "--data-dir",
                &dir,
                "--deep-storage",
                &deep,
                "--capacity",
                &slots,
            ],
        );
    }

    pub fn broker(&mut self, name: &str) {
        self.start(
            "broker",
            name,
            &["--pg-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"],
        );
    }

    /// Starts a process again (killing it first if it runs) with the same flags,
    /// except those in `changed` (`["--flag", "value", ...]`), which replace theirs.
    pub fn restart(&mut self, name: &str, changed: &[&str]) {
        let process = self.processes.get_mut(name).expect("known process");
        process.kill9();
        for pair in changed.chunks(2) {
            let [flag, value] = pair else {
                panic!("flags come in pairs: {changed:?}")
            };
            match process.args.iter().position(|a| a == flag) {
                Some(i) => process.args[i + 1] = value.to_string(),
                None => process.args.extend([flag.to_string(), value.to_string()]),
            }
        }
        process.spawn();
        self.wait_for_http(name);
    }

    pub fn kill9(&mut self, name: &str) {
        self.processes.get_mut(name).expect("known process").kill9();
    }

    fn wait_for_http(&self, name: &str) {
        let url = format!("http://{}/status/health", self.processes[name].http);
        self.wait_until(Duration::from_secs(30), &format!("{name} answers"), || {
            ureq::get(&url).call().is_ok()
        });
    }

    /// Polls `check` until it holds; on timeout fails with every process's log.
    pub fn wait_until(&self, timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let began = Instant::now();
        while began.elapsed() < timeout {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {timeout:?} waiting until {what}\n{}",
            self.logs()
        );
    }

    pub fn logs(&self) -> String {
        self.processes
            .values()
            .map(|p| {
                let log = p.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}\n", p.name, tail.join("\n"))
            })
            .collect()
    }

    pub fn http(&self, name: &str) -> String {
        format!("http://{}", self.processes[name].http)
    }

    /// `POST /druid/v2/sql` on `broker`: the rows, or the error body.
    pub fn sql(&self, broker: &str, query: &str) -> Result<Vec<Value>, String> {
        self.sql_in(broker, query, Value::Null)
    }

    /// `POST /druid/v2/sql` with a query `context` (null: none).
    pub fn sql_in(&self, broker: &str, query: &str, context: Value) -> Result<Vec<Value>, String> {
        self.post_sql(
            broker,
            match context {
                Value::Null => serde_json::json!({ "query": query }),
                context => serde_json::json!({ "query": query, "context": context }),
            },
        )
    }

    /// [`TestCluster::sql`], each row an array of its values in column order.
    pub fn sql_arrays(&self, broker: &str, query: &str) -> Result<Vec<Value>, String> {
        self.post_sql(
            broker,
            serde_json::json!({ "query": query, "resultFormat": "array" }),
        )
    }

    /// The rows of a `POST /druid/v2/sql` of `request`.
    fn post_sql(&self, broker: &str, request: Value) -> Result<Vec<Value>, String> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        let url = format!("{}/druid/v2/sql", self.http(broker));
        let mut response = agent
            .post(&url)
            .send_json(request)
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.body_mut().read_json().map_err(|e| e.to_string())?;
        match (status.is_success(), body) {
            (true, Value::Array(rows)) => Ok(rows),
            (_, other) => Err(format!("{status}: {other}")),
        }
    }

    /// `grove ingest SPEC --etcd ...` with the cluster's deep storage; must succeed.
    pub fn ingest(&self, spec: &str) -> Run {
        let run = self.try_ingest(spec);
        assert!(run.ok, "ingest failed: {}", run.stderr);
        run
    }

    /// `grove ingest SPEC --etcd ...` with the cluster's deep storage.
    pub fn try_ingest(&self, spec: &str) -> Run {
        let endpoint = self.etcd.endpoint();
        let data_dir = self.sandbox.arg("ingest");
        let deep = self.deep_storage();
        self.sandbox.grove(
            &[
                "ingest",
                spec,
                "--etcd",
                &endpoint,
                "--data-dir",
                &data_dir,
                "--deep-storage",
                &deep,
            ],
            "",
        )
    }

    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    pub fn store(&self) -> &dyn MetaStore {
        self.store.as_ref()
    }

    /// Segment id -> nodes announcing it.
    pub fn served(&self) -> BTreeMap<String, BTreeSet<String>> {
        let served = self
            .block_on(assignments::served(self.store()))
            .expect("reading served segments");
        assignments::replicas(&served)
    }

    /// Used, published descriptors.
    pub fn segments(&self, datasource: &str) -> Vec<SegmentDescriptor> {
        self.block_on(segments::load(self.store(), Some(datasource)))
            .expect("reading descriptors")
            .into_iter()
            .filter(|d| d.used)
            .collect()
    }

    /// Sets rules through the coordinator's HTTP API.
    pub fn set_rules(&self, coordinator: &str, datasource: &str, rules: &str) {
        let url = format!(
            "{}/druid/coordinator/v1/rules/{datasource}",
            self.http(coordinator)
        );
        let rules: Value = serde_json::from_str(rules).expect("rules JSON");
        ureq::post(&url)
            .header("Authorization", internal_auth())
            .send_json(rules)
            .expect("setting rules");
    }
}
