//! The Postgres wire protocol of `grove start`, driven by the real `psql` and by
//! psycopg (`tests/clients/pg_client.py`, in the virtual environment
//! `scripts/deps.sh` makes). Expected values are computed here from the sample CSV.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use grove_e2e::start::{
    ENDLESS, GroveStart, basic, by_time, check_parameter_queries, csv_rows, int, post_as,
    python_client, self_signed,
};
use serde_json::{Value, json};

/// `psql` on `port` running `commands` (`-c` each) with unaligned, tuples-only
/// output: whether it succeeded, its stdout and its stderr.
fn psql(
    port: u16,
    user: &str,
    password: Option<&str>,
    commands: &[&str],
) -> (bool, String, String) {
    let args: Vec<&str> = commands.iter().flat_map(|c| ["-c", *c]).collect();
    psql_with(port, user, password, &args)
}

/// `psql` with `args` after the connection and output options.
fn psql_with(
    port: u16,
    user: &str,
    password: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut psql = Command::new("psql");
    psql.arg(format!(
        "host=127.0.0.1 port={port} dbname=datafusion user={user} connect_timeout=10"
    ))
    .args(["-X", "-q", "-A", "-t", "-w", "-F", ","])
    .env_remove("PGPASSWORD")
    .env_remove("PGSERVICE");
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
    psql.args(args);
    let out = psql
        .output()
        .expect("psql runs (scripts/deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Python client (`pg_client.py COMMAND PORT ARGS...`)'s JSON answer.
fn pg_client(args: &[&str]) -> Value {
    python_client("pg_client.py", args)
}

/// The CSV's `2024-06-03T00:00:12.345Z` as Python's `isoformat(timespec="milliseconds")`
/// writes it.
fn iso(timestamp: &str) -> String {
    format!("{}+00:00", timestamp.trim_end_matches('Z'))
}

#[test]
fn psql_lists_describes_and_queries_the_datasources() {
    let g = GroveStart::new(2_000);
    let port = g.pg_port;
    let devices = grove_e2e::devices_in_csv(&g.sandbox);

    let (ok, out, err) = psql(
        port,
        "grove",
        None,
        &[
            "SELECT COUNT(*) FROM events",
            "SELECT device, COUNT(*) FROM events GROUP BY device ORDER BY device",
        ],
    );
    assert!(ok, "{err}");
    let mut expected = vec!["2000".to_string()];
    expected.extend(devices.iter().map(|(d, n)| format!("{d},{n}")));
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    // psql's own catalogue commands, answered from pg_catalog.
    let (ok, out, err) = psql(port, "grove", None, &["\\dt"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("druid,events,table")),
        "\\dt:\n{out}"
    );
    let (ok, out, err) = psql(port, "grove", None, &["\\d events"]);
    assert!(ok, "{err}");
    for column in [
        "__time,timestamp with time zone",
        "country,text",
        "status,bigint",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(column)),
            "\\d events has no {column}:\n{out}"
        );
    }
    let (ok, out, err) = psql(port, "grove", None, &["\\d"]);
    assert!(ok, "{err}");
    assert!(out.contains("events"), "\\d:\n{out}");

    // A statement that fails is reported with its reason, and the next one runs.
    let (ok, out, err) = psql(
        port,
        "grove",
        None,
        &["SELECT * FROM nope", "SELECT 1 + 1", "SELEC 1"],
    );
    assert!(!ok, "the failures fail psql");
    assert!(err.contains("nope"), "{err}");
    assert!(err.contains("SELEC"), "{err}");
    assert_eq!(out.trim(), "2");

    // Views are the connection's own; settings are the connection's too.
    let (ok, out, err) = psql(
        port,
        "grove",
        None,
        &[
            "CREATE VIEW mobile AS SELECT * FROM events WHERE device = 'mobile'; \
             SELECT COUNT(*) FROM mobile",
            "SET DateStyle = 'ISO, MDY'",
            "SHOW DateStyle",
            "SET grove.use_cache = false",
            "SHOW grove.use_cache",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], devices["mobile"].to_string());
    assert_eq!(lines[1], "ISO, MDY");
    assert!(lines[2].ends_with("false"), "{out}");
    let (ok, _, err) = psql(port, "grove", None, &["SELECT COUNT(*) FROM mobile"]);
    assert!(
        !ok && err.contains("mobile"),
        "another connection sees no view: {err}"
    );
    // What a session refuses, psql is refused too.
    let (ok, _, err) = psql(
        port,
        "grove",
        None,
        &["COPY (SELECT 1) TO '/tmp/grove-pg-copy.csv'"],
    );
    assert!(!ok, "COPY is refused: {err}");
    assert!(!Path::new("/tmp/grove-pg-copy.csv").exists());
}

#[test]
fn psycopg_binds_parameters_reads_every_type_and_browses_the_catalogue() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let got = pg_client(&["queries", &g.pg_port.to_string()]);

    // Parameters: a string and a timestamp.
    check_parameter_queries(&rows, &got);
    assert_eq!(
        got["by_country_columns"],
        json!(["country", "n", "revenue"])
    );

    // Every kind of column, text and binary: timestamps with their zone, dictionary
    // strings, NULLs, longs, doubles and floats.
    let first = by_time(&rows);
    for (i, (text, binary)) in got["first_rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(got["first_rows_binary"].as_array().unwrap())
        .enumerate()
    {
        let csv = first[i];
        let time = json!({ "timestamp": iso(&csv["timestamp"]), "tz": true });
        let referrer = match csv["referrer"].as_str() {
            "" => Value::Null,
            r => json!(r),
        };
        let revenue = match csv["revenue"].as_str() {
            "" => Value::Null,
            r => json!(r.parse::<f64>().unwrap()),
        };
        assert_eq!(text[0], time, "row {i}");
        assert_eq!(text[1], json!(csv["country"]));
        assert_eq!(text[2], referrer);
        assert_eq!(text[3], json!(int(csv, "status")));
        assert_eq!(text[4], json!(int(csv, "latency_ms")));
        assert_eq!(text[5], revenue);
        let session: f64 = csv["session_seconds"].parse().unwrap();
        let float = text[6].as_f64().expect("a float");
        assert!((float - session).abs() < 1e-3, "{float} != {session}");
        let binary_expected = json!([time, csv["country"], referrer, int(csv, "status"), revenue]);
        assert_eq!(*binary, binary_expected, "binary row {i}");
    }
    // timestamptz, text, text, int8, int8, float8, float4
    assert_eq!(
        got["first_rows_types"],
        json!([1184, 25, 25, 20, 20, 701, 700])
    );

    // The catalogue, as JDBC-style tools browse it.
    assert_eq!(got["tables"], json!([["druid", "events"]]));
    let columns: Vec<&str> = got["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c[0].as_str())
        .collect();
    let mut csv_columns: Vec<String> = rows[0].keys().cloned().collect();
    csv_columns.retain(|c| c != "timestamp");
    csv_columns.push("__time".into());
    for column in &csv_columns {
        assert!(
            columns.contains(&column.as_str()),
            "{column} in {columns:?}"
        );
    }
    assert_eq!(got["pg_class"], json!([["druid", "events"]]));
    assert_eq!(got["pg_attribute"], json!(columns));
    assert!(
        got["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("16.6 (Grove")),
        "{}",
        got["server_version"]
    );
    assert_eq!(got["missing_table"]["sqlstate"], json!("42P01"));
    assert!(
        got["missing_table"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_table"))
    );
    assert_eq!(got["after_error"], json!(rows.len()));
}

#[test]
fn a_cancel_request_and_a_statement_timeout_stop_a_slow_query() {
    let g = GroveStart::new(1_000);
    let got = pg_client(&["cancel", &g.pg_port.to_string(), ENDLESS]);
    assert_eq!(
        got["cancelled"],
        json!("canceling statement due to user request"),
        "{got}"
    );
    assert_eq!(got["after_cancel"], json!(1_000));
    assert_eq!(got["statement_timeout"], json!("500ms"));
    assert_eq!(
        got["timed_out"],
        json!("canceling statement due to statement timeout"),
        "{got}"
    );
    assert_eq!(got["after_timeout"], json!(1_000));
}

#[test]
fn the_server_default_timeout_applies_unless_the_connection_sets_its_own() {
    let g = GroveStart::with(1_000, &["--query-timeout", "PT1S"]);
    let (ok, _, err) = psql(g.pg_port, "grove", None, &[ENDLESS]);
    assert!(!ok);
    assert!(err.contains("statement timeout"), "{err}");
    let (ok, out, err) = psql(
        g.pg_port,
        "grove",
        None,
        &["SET statement_timeout = '1min'", "SHOW statement_timeout"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "60000ms");
}

/// Writes `bytes` to a fresh connection and reads what comes back until the server
/// closes it (`true`) or `wait` passes (`false`).
fn raw(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket.set_read_timeout(Some(wait)).unwrap();
    let _ = socket.write_all(bytes);
    let mut answer = Vec::new();
    let closed = socket.read_to_end(&mut answer).is_ok();
    (answer, closed)
}

/// The types of the backend messages in `bytes`.
fn message_types(mut bytes: &[u8]) -> Vec<char> {
    let mut types = Vec::new();
    while bytes.len() >= 5 {
        let length = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        types.push(bytes[0] as char);
        bytes = bytes.get(1 + length..).unwrap_or_default();
    }
    types
}

/// A start-up message for protocol 3.0 as `user`.
fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(196_608_i32.to_be_bytes());
    for part in ["user", user, "database", "druid", ""] {
        body.extend(part.as_bytes());
        body.push(0);
    }
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend(body);
    message
}

#[test]
fn bad_input_on_the_postgres_port_fails_that_client_only() {
    let g = GroveStart::new(1_000);
    let port = g.pg_port;
    // A half-sent start-up message, left hanging while others are served.
    let mut hanging = TcpStream::connect(("127.0.0.1", port)).unwrap();
    hanging.write_all(&startup("grove")[..7]).unwrap();

    // Garbage instead of a start-up message: the connection is closed.
    let wait = Duration::from_secs(20);
    let (_, closed) = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait);
    assert!(closed, "garbage closes the connection");
    // A query message that claims to be 2 GB: the connection is closed at once rather
    // than the server waiting to buffer it.
    let mut huge = startup("grove");
    huge.push(b'Q');
    huge.extend(i32::MAX.to_be_bytes());
    huge.extend(b"SELECT 1");
    let (answer, closed) = raw(port, &huge, wait);
    let answer = message_types(&answer);
    assert!(closed, "{answer:?}");
    assert_eq!(
        answer.last(),
        Some(&'Z'),
        "start-up was answered: {answer:?}"
    );

    // An invalid statement and a query far longer than any real one.
    let long = format!("SELECT 1 AS x{}", " ".repeat(4 << 20));
    let (ok, _, err) = psql(port, "grove", None, &["SELECT FROM WHERE"]);
    assert!(!ok && err.contains("ERROR"), "{err}");
    let file = g.sandbox.arg("long.sql");
    std::fs::write(&file, &long).unwrap();
    let (ok, out, err) = psql_with(port, "grove", None, &["-f", &file]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");

    // Meanwhile everyone else is served.
    let (ok, out, err) = psql(port, "grove", None, &["SELECT COUNT(*) FROM events"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1000");
    drop(hanging);
}

#[test]
fn with_users_configured_postgres_and_http_clients_must_log_in() {
    let keys = grove_e2e::Sandbox::default();
    let hashed = keys.grove(&["passwd"], "s3cret pass\n");
    assert!(hashed.ok, "{}", hashed.stderr);
    let config = keys.path("start.toml");
    let stored = hashed.stdout.trim();
    assert!(!stored.contains("s3cret"), "{stored}");
    std::fs::write(
        &config,
        format!("[[users]]\nname = \"alice\"\npassword = \"{stored}\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let g = GroveStart::with_user(1_000, &["--config", &config], "alice", "s3cret pass");
    let port = g.pg_port;
    let count = ["SELECT COUNT(*) FROM events"];

    let (ok, out, err) = psql(port, "alice", Some("s3cret pass"), &count);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1000");
    let (ok, _, err) = psql(port, "alice", None, &count);
    assert!(!ok && err.contains("password"), "no password: {err}");
    for (user, password) in [("alice", "s3cret"), ("mallory", "s3cret pass")] {
        let (ok, out, err) = psql(port, user, Some(password), &count);
        assert!(!ok && out.is_empty(), "{user}: {out}");
        let err = err.to_lowercase();
        assert!(
            err.contains("password authentication failed"),
            "{user}: {err}"
        );
    }
    let port = port.to_string();
    let ok = pg_client(&["login", &port, "alice", "s3cret pass"]);
    assert_eq!(ok, json!({ "ok": 1000 }));
    let refused = pg_client(&["login", &port, "alice", "wrong"]);
    assert!(refused["refused"].is_string(), "{refused}");

    // Druid's SQL API: HTTP basic auth.
    let query = json!({ "query": "SELECT COUNT(*) AS n FROM events" });
    for authorization in [
        None,
        Some(basic("alice", "s3cret")),
        Some(basic("eve", "x")),
    ] {
        let (status, _, body) = post_as(&g.url, &query, authorization.as_deref());
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert!(body.contains("Unauthorized"), "{body}");
    }
    let right = basic("alice", "s3cret pass");
    let (status, _, body) = post_as(&g.url, &query, Some(&right));
    assert_eq!((status, body.as_str()), (200, r#"[{"n":1000}]"#));
}

#[test]
fn postgres_clients_that_ask_for_tls_get_it() {
    let keys = grove_e2e::Sandbox::default();
    let (cert, key) = self_signed(&keys);
    let g = GroveStart::with(1_000, &["--tls-cert", &cert, "--tls-key", &key]);
    let connect = |sslmode: &str| {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} dbname=datafusion user=grove sslmode={sslmode}",
                g.pg_port
            ))
            .args(["-X", "-q", "-A", "-t", "-w"])
            .args(["-c", "\\conninfo", "-c", "SELECT COUNT(*) FROM events"])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let secure = connect("require");
    assert!(
        secure.contains("SSL connection (protocol: TLSv1.3"),
        "{secure}"
    );
    assert!(secure.trim_end().ends_with("1000"), "{secure}");
    let plain = connect("disable");
    assert!(!plain.contains("SSL"), "{plain}");
    assert!(plain.trim_end().ends_with("1000"), "{plain}");
}
