//! `grove start` on the sample data, as the front-end tests use it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use grove_testkit::free_port;
use serde_json::{Value, json};

use crate::Sandbox;

/// A sum over every combination of four rows: runs until it is stopped.
pub const ENDLESS: &str = "SELECT SUM(a.latency_ms * b.latency_ms + c.latency_ms - d.latency_ms) \
                           FROM events a CROSS JOIN events b CROSS JOIN events c CROSS JOIN events d";

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
        GroveStart::start(rows, extra, None, &|spec| spec.to_string())
    }

    /// [`GroveStart::new`] on segments of an hour each, not a day: many small
    /// segments, so a scan is many batches.
    pub fn hourly(rows: u64) -> GroveStart {
        GroveStart::start(rows, &[], None, &|spec| {
            let hourly = spec.replace(
                "\"segmentGranularity\": \"day\"",
                "\"segmentGranularity\": \"hour\"",
            );
            assert_ne!(
                hourly, spec,
                "the sample spec names its segment granularity"
            );
            hourly
        })
    }

    /// [`GroveStart::with`] a config that requires users: this process's requests
    /// log in as `user`.
    pub fn with_user(rows: u64, extra: &[&str], user: &str, password: &str) -> GroveStart {
        GroveStart::start(rows, extra, Some(basic(user, password)), &|spec| {
            spec.to_string()
        })
    }

    fn start(
        rows: u64,
        extra: &[&str],
        basic: Option<String>,
        edit_spec: &dyn Fn(&str) -> String,
    ) -> GroveStart {
        let mut sandbox = Sandbox::default();
        let sample = sandbox.arg("sample");
        let made = sandbox.grove(
            &["sample-data", "--out", &sample, "--rows", &rows.to_string()],
            "",
        );
        assert!(made.ok, "{}", made.stderr);
        let spec = sandbox.arg("sample/events-spec.json");
        let text = std::fs::read_to_string(&spec).expect("the sample spec");
        std::fs::write(&spec, edit_spec(&text)).expect("the spec, edited");
        let data = sandbox.arg("data");
        let ingest = sandbox.grove(&["ingest", &spec, "--data-dir", &data], "");
        assert!(ingest.ok, "{}", ingest.stderr);
        // A free port may be taken by another test before grove binds it: then it
        // exits saying so, and starts again on other ports.
        for attempt in 1.. {
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
            let mut started = GroveStart {
                sandbox,
                child,
                url: format!("http://127.0.0.1:{http}/druid/v2/sql"),
                pg_port,
                flight_port,
                basic: basic.clone(),
            };
            if started.serves_rows(rows) {
                return started;
            }
            let log = started.log();
            assert!(
                attempt < 3 && log.contains("Address already in use"),
                "grove start exited:\n{log}"
            );
            sandbox = std::mem::take(&mut started.sandbox);
        }
        unreachable!("the loop returns or fails")
    }

    /// Waits until it serves all `rows`; false when it exited first.
    fn serves_rows(&mut self, rows: u64) -> bool {
        let began = Instant::now();
        let count = json!({ "query": "SELECT COUNT(*) AS n FROM events" });
        while self.post(&count).2 != format!("[{{\"n\":{rows}}}]") {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "grove start never served the rows:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Status, the `X-Druid-SQL-Query-Id` header, and the body.
    pub fn post(&self, request: &Value) -> (u16, String, String) {
        post_as(&self.url, request, self.basic.as_deref())
    }

    /// The port of its HTTP APIs, as the Python clients take it.
    pub fn http_port(&self) -> String {
        let address = self.url.trim_start_matches("http://");
        let port = address.split('/').next().unwrap_or_default();
        port.rsplit(':').next().unwrap_or_default().to_string()
    }

    /// `GET /status`.
    pub fn status_url(&self) -> String {
        self.url.replace("/druid/v2/sql", "/status")
    }

    /// What `/status` answers.
    pub fn status(&self) -> Value {
        let mut response = agent()
            .get(&self.status_url())
            .call()
            .expect("status answers");
        response.body_mut().read_json().expect("status JSON")
    }

    /// Polls `/status` until `holds`; false after 20 s.
    pub fn wait_status(&self, holds: impl Fn(&Value) -> bool) -> bool {
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(20) {
            if holds(&self.status()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path("start.log")).unwrap_or_default()
    }

    /// The process id of `grove start`.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// The Python client `tests/clients/SCRIPT`'s JSON answer to `args`, run in the
/// virtual environment `scripts/deps.sh test` makes (`$GROVE_PYTHON`).
pub fn python_client(script: &str, args: &[&str]) -> Value {
    let python = std::env::var("GROVE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/grove-venv/bin/python")
    });
    assert!(
        Path::new(&python).exists(),
        "{python} is missing: scripts/deps.sh test makes it"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    let out = Command::new(&python)
        .arg(path)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The sample CSV's rows, as column name -> text (empty for NULL).
pub fn csv_rows(g: &GroveStart) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(g.sandbox.path("sample/events.csv")).expect("sample CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

pub fn int(row: &BTreeMap<String, String>, column: &str) -> i64 {
    row[column].parse().expect("an integer")
}

/// Whether two sums agree up to rounding.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A self-signed certificate for `localhost` and `127.0.0.1` and its key, made by
/// `openssl` in `sandbox`: the PEM files' paths.
pub fn self_signed(sandbox: &Sandbox) -> (String, String) {
    let (cert, key) = (sandbox.arg("cert.pem"), sandbox.arg("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // An end-entity certificate, as rustls clients insist.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", &key, "-out", &cert])
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// Checks a client's answers to the parameterized queries against the CSV's `rows`:
/// `by_country`, the rows `[country, n, revenue]` for `device = 'mobile' AND __time >=
/// 2024-06-05` grouped and ordered by country, and `prepared_first` /
/// `prepared_second`, the counts for `status = ? AND latency_ms > ?` with (404, 100)
/// and (200, 1000).
pub fn check_parameter_queries(rows: &[BTreeMap<String, String>], got: &Value) {
    let count = |status: i64, latency: i64| {
        rows.iter()
            .filter(|r| int(r, "status") == status && int(r, "latency_ms") > latency)
            .count()
    };
    assert_eq!(got["prepared_first"], json!(count(404, 100)));
    assert_eq!(got["prepared_second"], json!(count(200, 1000)));
    let mut by_country: BTreeMap<&str, (i64, Option<f64>)> = BTreeMap::new();
    for row in rows {
        if row["device"] == "mobile" && row["timestamp"].as_str() >= "2024-06-05T00:00:00.000Z" {
            let entry = by_country.entry(&row["country"]).or_insert((0, None));
            entry.0 += 1;
            if !row["revenue"].is_empty() {
                let revenue: f64 = row["revenue"].parse().unwrap();
                entry.1 = Some(entry.1.unwrap_or(0.0) + revenue);
            }
        }
    }
    let answered = got["by_country"].as_array().expect("rows");
    assert_eq!(answered.len(), by_country.len(), "{answered:?}");
    for (row, (country, (n, revenue))) in answered.iter().zip(&by_country) {
        assert_eq!(row[0], json!(country));
        assert_eq!(row[1], json!(n));
        match (row[2].as_f64(), revenue) {
            (Some(a), Some(b)) => assert!(close(a, *b), "{country}: {a} != {b}"),
            (None, None) => assert!(row[2].is_null()),
            (a, b) => panic!("{country}: revenue {a:?} != {b:?}"),
        }
    }
}

/// The CSV's rows in `__time` order, ties by `user_id`, as the queries order them.
pub fn by_time(rows: &[BTreeMap<String, String>]) -> Vec<&BTreeMap<String, String>> {
    let mut sorted: Vec<&BTreeMap<String, String>> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a["timestamp"], &a["user_id"]).cmp(&(&b["timestamp"], &b["user_id"])));
    sorted
}
