//! Druid's task API as a test drives it, and task inputs a test controls: named pipes
//! a task blocks on until the test writes its rows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use grove_testkit::free_port;
use serde_json::{Value, json};

use crate::Sandbox;
use crate::start::agent;

/// An overlord's (or `grove start`'s) task API at `base` (`http://host:port`).
pub struct TaskApi {
    pub base: String,
}

impl TaskApi {
    pub fn new(base: impl Into<String>) -> TaskApi {
        TaskApi { base: base.into() }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.send(path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.send(path, Some(body))
    }

    /// Sends the request, following a standby's redirect with the body, as Python's
    /// `requests` (pydruid's client) does. Status 0: no answer.
    fn send(&self, path: &str, body: Option<&Value>) -> (u16, String) {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        let mut url = format!("{}{path}", self.base);
        for _ in 0..3 {
            // As an operator's tools: with the cluster's credential (ignored by
            // `grove start` without users).
            let auth = crate::cluster::internal_auth();
            let sent = match body {
                Some(body) => agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .send_json(body),
                None => agent.get(&url).header("Authorization", &auth).call(),
            };
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => return (0, e.to_string()),
            };
            let status = response.status().as_u16();
            if status == 307 {
                url = response.headers()["location"]
                    .to_str()
                    .expect("a location")
                    .to_string();
                continue;
            }
            return (
                status,
                response.body_mut().read_to_string().unwrap_or_default(),
            );
        }
        (0, format!("{path}: redirected in circles"))
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Submits `task`; its id.
    pub fn submit(&self, task: &Value) -> String {
        let (status, body) = self.post("/druid/indexer/v1/task", task);
        assert_eq!(status, 200, "submitting: {body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON answer");
        answer["task"].as_str().expect("a task id").to_string()
    }

    /// `TaskStatusPlus` of task `id`.
    pub fn status(&self, id: &str) -> Value {
        self.get_json(&format!("/druid/indexer/v1/task/{id}/status"))["status"].clone()
    }

    /// The `ingestionStatsAndErrors` payload of task `id`.
    pub fn report(&self, id: &str) -> Value {
        self.get_json(&format!("/druid/indexer/v1/task/{id}/reports"))["ingestionStatsAndErrors"]
            ["payload"]
            .clone()
    }

    /// Polls task `id`'s status until `holds`; panics with the last status and
    /// `logs()` after `timeout`.
    pub fn wait(
        &self,
        id: &str,
        timeout: Duration,
        logs: &dyn Fn() -> String,
        holds: impl Fn(&Value) -> bool,
    ) -> Value {
        let began = Instant::now();
        let mut last = Value::Null;
        while began.elapsed() < timeout {
            let (status, body) = self.get(&format!("/druid/indexer/v1/task/{id}/status"));
            if status == 200 {
                last = serde_json::from_str::<Value>(&body).expect("status JSON")["status"].clone();
                if holds(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("task {id} never got there; last status {last}\n{}", logs());
    }

    /// Waits until task `id` ends; returns its status.
    pub fn wait_end(&self, id: &str, logs: &dyn Fn() -> String) -> Value {
        self.wait(id, Duration::from_secs(60), logs, |s| {
            s["statusCode"] != "RUNNING"
        })
    }
}

/// A batch task reading newline-delimited JSON `{"ts", "k", "v"}` rows from `files`
/// into `datasource`, daily segments; `extra` is merged into the task's top level
/// and `spec` sections (e.g. `{"context": {...}}`, `{"granularity": [...]}`).
pub fn json_task(datasource: &str, files: &[&Path], intervals: Option<&[&str]>) -> Value {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut granularity = json!({
        "segmentGranularity": "day",
        "queryGranularity": "none",
        "rollup": false
    });
    if let Some(intervals) = intervals {
        granularity["intervals"] = json!(intervals);
    }
    json!({
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": datasource,
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["k"]},
                "metricsSpec": [{"type": "longSum", "name": "v", "fieldName": "v"}],
                "granularitySpec": granularity
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {"type": "local", "files": files},
                "inputFormat": {"type": "json"},
                "appendToExisting": false
            },
            "tuningConfig": {"type": "index_parallel"}
        }
    })
}

/// `n` rows on `day` (`2024-01-01`), `k` cycling over three keys, `v` = `value`.
pub fn rows(day: &str, n: usize, value: i64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"ts\":\"{day}T{:02}:{:02}:00Z\",\"k\":\"k{}\",\"v\":{value}}}\n",
                (i / 60) % 24,
                i % 60,
                i % 3
            )
        })
        .collect()
}

/// A named pipe: a task reading it blocks until [`feed`] writes to it.
pub fn fifo(path: PathBuf) -> PathBuf {
    let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

/// Writes `text` into the pipe at `path` and closes it, once a reader opens it.
pub fn feed(path: &Path, text: String) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the pipe");
        pipe.write_all(text.as_bytes()).expect("write the pipe");
    })
}

/// How many `grove peon` processes run now for task `id` (read from `/proc`).
pub fn peons(id: &str) -> usize {
    peon_pids(|args| args.iter().any(|a| a.ends_with(id))).len()
}

/// The process ids of running `grove peon` processes whose arguments `pick` accepts.
pub fn peon_pids(pick: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.get(1).is_some_and(|a| a == "peon") && pick(&args)).then_some(pid)
        })
        .collect()
}

/// `grove start` on a data directory of its own, with `extra` flags; killed when
/// dropped.
pub struct Started {
    pub sandbox: Sandbox,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub child: Child,
}

impl Started {
    pub fn new(extra: &[&str]) -> Started {
        let sandbox = Sandbox::default();
        let port = free_port();
        let child = grove_start(&sandbox, port, extra);
        Started {
            sandbox,
            port,
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `grove start` on `data` in `sandbox`, HTTP on `port`, with `extra` flags; waits
/// until its overlord leads.
pub fn grove_start(sandbox: &Sandbox, port: u16, extra: &[&str]) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(sandbox.path("start.log"))
        .expect("log");
    let child = Command::new(crate::grove_bin())
        .args(["start", "--data-dir", &sandbox.arg("data")])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--pg-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"])
        .args(extra)
        .env("HOME", sandbox.path(""))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("grove start");
    let api = TaskApi::new(format!("http://127.0.0.1:{port}"));
    let began = Instant::now();
    while api.get("/druid/indexer/v1/isLeader").0 != 200 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "grove start's overlord never led:\n{}",
            std::fs::read_to_string(sandbox.path("start.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The rows of a Druid SQL query on `base`.
pub fn sql(base: &str, query: &str) -> Vec<Value> {
    let mut response = agent()
        .post(&format!("{base}/druid/v2/sql"))
        .send_json(json!({ "query": query }))
        .expect("SQL answers");
    let body: Value = response.body_mut().read_json().expect("SQL JSON");
    body.as_array()
        .unwrap_or_else(|| panic!("{query}: {body}"))
        .clone()
}
