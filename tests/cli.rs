//! The `grove` command line, run as a user runs it: sample data, ingestion, one-shot
//! queries, scripts, the interactive shell, and the errors a user can cause.
//! Expected numbers are computed here from the generated CSV.

use std::collections::BTreeMap;

use grove_e2e::{Run, SHELL_SCRIPT, Sandbox, check_shell_session, devices_in_csv};

fn check(run: &Run, what: &str) {
    assert!(
        run.ok,
        "{what} failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
}

/// Runs one statement on the data directory `data` with CSV output.
fn sql_csv(sandbox: &Sandbox, data: &str, statement: &str) -> Run {
    sandbox.grove(
        &[
            "sql",
            "--data-dir",
            data,
            "--format",
            "csv",
            "-c",
            statement,
        ],
        "",
    )
}

/// A sandbox with `rows` sample rows ingested into `data/`.
fn ingested(rows: u64) -> Sandbox {
    let sandbox = Sandbox::default();
    let rows = rows.to_string();
    check(
        &sandbox.grove(
            &[
                "sample-data",
                "--out",
                &sandbox.arg("sample"),
                "--rows",
                &rows,
            ],
            "",
        ),
        "sample-data",
    );
    let spec = sandbox.arg("sample/events-spec.json");
    let ingest = sandbox.grove(&["ingest", &spec, "--data-dir", &sandbox.arg("data")], "");
    check(&ingest, "ingest");
    assert!(
        ingest.stdout.contains(&format!("rows read {rows},")),
        "{}",
        ingest.stdout
    );
    sandbox
}

#[test]
fn ingest_then_query_matches_the_input() {
    let sandbox = ingested(20_000);
    let data = sandbox.arg("data");
    let run = sandbox.grove(
        &[
            "sql",
            "--data-dir",
            &data,
            "--format",
            "json",
            "-c",
            "SELECT device, COUNT(*) AS n FROM events GROUP BY device ORDER BY device",
        ],
        "",
    );
    check(&run, "sql");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(run.stdout.trim()).expect("json output");
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, devices_in_csv(&sandbox));

    let csv = sql_csv(&sandbox, &data, "SELECT COUNT(*) AS n FROM events");
    check(&csv, "csv output");
    assert_eq!(csv.stdout, "n\n20000\n");
}

#[test]
fn a_bad_statement_exits_non_zero_with_the_error() {
    let sandbox = ingested(1_000);
    let run = sandbox.grove(
        &["sql", "--data-dir", &sandbox.arg("data"), "-c", "SELEC 1"],
        "",
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains("error") && run.stderr.contains("SELEC"),
        "{}",
        run.stderr
    );
    let missing = sandbox.grove(
        &[
            "sql",
            "--data-dir",
            &sandbox.arg("nowhere"),
            "-c",
            "SELECT 1",
        ],
        "",
    );
    assert!(
        !missing.ok && missing.stderr.contains("not a Grove data directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_script_file_runs_every_statement() {
    let sandbox = ingested(1_000);
    std::fs::write(
        sandbox.path("script.sql"),
        "-- two statements; one spans lines\nSELECT COUNT(*) AS total FROM events;\nSELECT\n  COUNT(DISTINCT device) AS devices\nFROM events;\n",
    )
    .unwrap();
    let run = sandbox.grove(
        &[
            "sql",
            "--data-dir",
            &sandbox.arg("data"),
            "--format",
            "csv",
            "-f",
            &sandbox.arg("script.sql"),
        ],
        "",
    );
    check(&run, "script");
    assert_eq!(
        run.stdout,
        format!("total\n1000\ndevices\n{}\n", devices_in_csv(&sandbox).len())
    );
}

#[test]
fn the_shell_runs_multi_line_statements_and_survives_errors() {
    let sandbox = ingested(1_000);
    let run = sandbox.grove(&["sql", "--data-dir", &sandbox.arg("data")], SHELL_SCRIPT);
    check_shell_session(&run, devices_in_csv(&sandbox)["mobile"]);
}

#[test]
fn a_spec_with_an_unknown_field_fails_naming_it() {
    let sandbox = ingested(1_000);
    let spec = std::fs::read_to_string(sandbox.path("sample/events-spec.json")).unwrap();
    let broken = spec.replace("\"rollup\": false", "\"rollup\": false, \"rollupp\": true");
    std::fs::write(sandbox.path("sample/broken.json"), broken).unwrap();
    let run = sandbox.grove(
        &[
            "ingest",
            &sandbox.arg("sample/broken.json"),
            "--data-dir",
            &sandbox.arg("data"),
        ],
        "",
    );
    assert!(!run.ok);
    assert!(run.stderr.contains("rollupp"), "{}", run.stderr);
    let count = sql_csv(
        &sandbox,
        &sandbox.arg("data"),
        "SELECT COUNT(*) AS n FROM sys.segments",
    );
    check(&count, "segments");
    assert_eq!(count.stdout, "n\n7\n", "one segment per day, unchanged");
}

#[test]
fn a_second_writer_is_refused_at_once() {
    let sandbox = ingested(1_000);
    let _held = grove_cluster::metastore::EmbeddedStore::open(&sandbox.path("data/meta"))
        .expect("take the lock");
    let spec = sandbox.arg("sample/events-spec.json");
    let run = sandbox.grove(&["ingest", &spec, "--data-dir", &sandbox.arg("data")], "");
    assert!(!run.ok);
    assert!(
        run.stderr.contains("in use by another Grove process"),
        "{}",
        run.stderr
    );
    let read = sql_csv(
        &sandbox,
        &sandbox.arg("data"),
        "SELECT COUNT(*) AS n FROM events",
    );
    check(&read, "readers still read");
    assert_eq!(read.stdout, "n\n1000\n");
}

#[test]
fn quickstart_ingests_the_sample_and_runs_the_examples() {
    let sandbox = Sandbox::default();
    let data = sandbox.arg("data");
    let run = sandbox.grove(&["quickstart", "--data-dir", &data, "--rows", "5000"], "");
    check(&run, "quickstart");
    assert!(
        run.stdout.contains("rows read 5000,") && run.stdout.contains("| country |"),
        "{}",
        run.stdout
    );
    let again = sandbox.grove(&["quickstart", "--data-dir", &data, "--rows", "5000"], "");
    check(&again, "second quickstart");
    assert!(again.stdout.contains("already in"), "{}", again.stdout);
    let count = sql_csv(&sandbox, &data, "SELECT COUNT(*) AS n FROM events");
    assert_eq!(count.stdout, "n\n5000\n", "ingested once");
}

#[test]
fn grove_start_serves_sql_over_http_and_holds_its_directory() {
    let sandbox = ingested(3_000);
    let data = sandbox.arg("data");
    let port = grove_testkit::free_port();
    let log = std::fs::File::create(sandbox.path("start.log")).unwrap();
    let mut start = std::process::Command::new(grove_e2e::grove_bin())
        .args([
            "start",
            "--data-dir",
            &data,
            "--pg-addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
            "--http-addr",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/druid/v2/sql");
    let query = |sql: &str| -> Option<serde_json::Value> {
        let mut response = ureq::post(&url)
            .send_json(serde_json::json!({ "query": sql }))
            .ok()?;
        response.body_mut().read_json().ok()
    };
    let began = std::time::Instant::now();
    let mut answer = None;
    while began.elapsed() < std::time::Duration::from_secs(30) {
        answer = query("SELECT COUNT(*) AS n FROM events");
        if answer.as_ref().is_some_and(|a| a[0]["n"] == 3000) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let by_device = query("SELECT device, COUNT(*) AS n FROM events GROUP BY 1 ORDER BY 1");
    let flight = query("SELECT flight_host FROM sys.servers WHERE server_type = 'historical'");
    let held = sandbox.grove(
        &[
            "ingest",
            &sandbox.arg("sample/events-spec.json"),
            "--data-dir",
            &data,
        ],
        "",
    );
    let read = sql_csv(&sandbox, &data, "SELECT COUNT(*) AS n FROM events");
    let _ = start.kill();
    let _ = start.wait();
    let log = std::fs::read_to_string(sandbox.path("start.log")).unwrap();
    assert_eq!(
        answer.map(|a| a[0]["n"].clone()),
        Some(3000.into()),
        "{log}"
    );
    let expected: Vec<serde_json::Value> = devices_in_csv(&sandbox)
        .into_iter()
        .map(|(device, n)| serde_json::json!({ "device": device, "n": n }))
        .collect();
    assert_eq!(by_device, Some(serde_json::Value::Array(expected)));
    let flight = flight.expect("sys.servers answers");
    let host = flight[0]["flight_host"].as_str().unwrap_or_default();
    assert!(
        host.starts_with("127.0.0.1:"),
        "the historical serves Flight: {flight}"
    );
    assert!(!held.ok, "a second writer must be refused");
    assert!(
        held.stderr.contains("in use by another Grove process"),
        "{}",
        held.stderr
    );
    check(&read, "reading the directory while it is served");
    assert_eq!(read.stdout, "n\n3000\n");
}
