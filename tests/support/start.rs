//! `grove start` on the sample data, as the front-end tests use it.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use grove_testkit::free_port;
use serde_json::{Value, json};

use crate::Sandbox;

/// `grove start` on `rows` ingested sample rows, its HTTP, Postgres and Flight SQL
/// ports on loopback; killed when dropped.
pub struct GroveStart {
    pub sandbox: Sandbox,
    child: Child,
    /// `POST` here for Druid's SQL API.
    pub url: String,
    pub pg_port: u16,
    pub flight_port: u16,
    /// The `Authorization` header this process's own requests send.
    basic: Option<String>,
}

impl GroveStart {
    pub fn new(rows: u64) -> GroveStart {
        GroveStart::with(rows, &[])
    }

    /// `grove start` with `extra` flags; returns once it answers with every row.
    pub fn with(rows: u64, extra: &[&str]) -> GroveStart {
        GroveStart::start(rows, extra, None)
    }

    /// [`GroveStart::with`] a config that requires users: this process's requests
    /// log in as `user`.
    pub fn with_user(rows: u64, extra: &[&str], user: &str, password: &str) -> GroveStart {
        GroveStart::start(rows, extra, Some(basic(user, password)))
    }

    fn start(rows: u64, extra: &[&str], basic: Option<String>) -> GroveStart {
        let sandbox = Sandbox::default();
        let sample = sandbox.arg("sample");
        let made = sandbox.grove(
            &["sample-data", "--out", &sample, "--rows", &rows.to_string()],
            "",
        );
        assert!(made.ok, "{}", made.stderr);
        let spec = sandbox.arg("sample/events-spec.json");
        let data = sandbox.arg("data");
        let ingest = sandbox.grove(&["ingest", &spec, "--data-dir", &data], "");
        assert!(ingest.ok, "{}", ingest.stderr);
        let (http, pg_port, flight_port) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(sandbox.path("start.log")).expect("log file");
        let child = Command::new(crate::grove_bin())
            .args(["start", "--data-dir", &data])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--pg-addr")
            .arg(format!("127.0.0.1:{pg_port}"))
            .arg("--flight-addr")
            .arg(format!("127.0.0.1:{flight_port}"))
            .args(extra)
            .env("HOME", sandbox.path(""))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start grove");
        let started = GroveStart {
            sandbox,
            child,
            url: format!("http://127.0.0.1:{http}/druid/v2/sql"),
            pg_port,
            flight_port,
            basic,
        };
        started.wait_for_rows(rows);
        started
    }

    fn wait_for_rows(&self, rows: u64) {
        let began = Instant::now();
        let count = json!({ "query": "SELECT COUNT(*) AS n FROM events" });
        while self.post(&count).2 != format!("[{{\"n\":{rows}}}]") {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "grove start never served the rows:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Status, the `X-Druid-SQL-Query-Id` header, and the body.
    pub fn post(&self, request: &Value) -> (u16, String, String) {
        post_as(&self.url, request, self.basic.as_deref())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path("start.log")).unwrap_or_default()
    }
}

impl Drop for GroveStart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// The `Authorization` header of HTTP basic auth.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// POSTs `request` to Druid's SQL API at `url`: the status, the
/// `X-Druid-SQL-Query-Id` header and the body (status 0: no answer).
pub fn post(url: &str, request: &Value) -> (u16, String, String) {
    post_as(url, request, None)
}

/// [`post`] with an `Authorization` header.
pub fn post_as(url: &str, request: &Value, authorization: Option<&str>) -> (u16, String, String) {
    let mut call = agent().post(url);
    if let Some(authorization) = authorization {
        call = call.header("Authorization", authorization);
    }
    let Ok(mut response) = call.send_json(request) else {
        return (0, String::new(), String::new());
    };
    let id = response
        .headers()
        .get("X-Druid-SQL-Query-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), id, body)
}
