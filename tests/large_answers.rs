//! A large answer streams through every front end: while `grove start` sends one
//! (600 MB as JSON lines), through Druid's SQL API, Postgres (psycopg, row by row)
//! or Flight SQL, its memory grows by a small part of the answer's size.

use std::io::{BufRead, BufReader};

use arrow_flight::sql::CommandStatementQuery;
use futures::StreamExt;
use grove_e2e::flight;
use grove_e2e::start::{GroveStart, agent, python_client};
use serde_json::json;

const ROWS: u64 = 20_000;
const COPIES: u64 = 50;

/// Every sample row `COPIES` times, each with 500 bytes more.
fn query() -> String {
    let copies: Vec<String> = (1..=COPIES).map(|c| format!("({c})")).collect();
    format!(
        "SELECT e.*, v.copy, repeat('x', 500) AS pad FROM events e \
         CROSS JOIN (VALUES {}) AS v(copy)",
        copies.join(", ")
    )
}

/// A line of `/proc/PID/status`, in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// How far the process's resident memory rose above where it was while `work` ran.
fn growth(pid: u32, work: impl FnOnce()) -> u64 {
    // Writing 5 resets the peak (VmHWM) to the current resident size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = memory(pid, "VmRSS");
    work();
    memory(pid, "VmHWM").saturating_sub(before)
}

#[test]
fn a_large_answer_streams_through_every_front_end_in_bounded_memory() {
    let g = GroveStart::new(ROWS);
    let pid = g.pid();
    let sql = query();
    let rows = ROWS * COPIES;
    // What each row adds at least: the pad.
    let at_least = rows * 500;

    let mut http = (0, 0);
    let by_http = growth(pid, || {
        let request = json!({ "query": sql, "resultFormat": "arrayLines" });
        let mut response = agent().post(&g.url).send_json(&request).unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let lines = BufReader::new(response.body_mut().as_reader()).lines();
        let mut last = None;
        for line in lines {
            let line = line.unwrap();
            http.1 += line.len() as u64 + 1;
            if !line.is_empty() {
                http.0 += 1;
            }
            last = Some(line);
        }
        assert_eq!(last.as_deref(), Some(""), "the answer ends complete");
    });
    assert_eq!(http.0, rows);
    assert!(http.1 > at_least, "{} bytes", http.1);

    let mut pg = serde_json::Value::Null;
    let by_pg = growth(pid, || {
        pg = python_client("pg_client.py", &["stream", &g.pg_port.to_string(), &sql]);
    });
    assert_eq!(pg["rows"], json!(rows), "{pg}");

    let mut flight_rows = 0;
    let by_flight = growth(pid, || {
        let runtime = flight::runtime();
        flight_rows = runtime.block_on(async {
            let mut client = flight::client(&g).await;
            let command = CommandStatementQuery {
                query: sql.clone(),
                transaction_id: None,
            };
            let info = client
                .get_flight_info(flight::descriptor(&command))
                .await
                .unwrap();
            let mut stream = client.do_get(flight::ticket(&info)).await.unwrap();
            let mut n = 0;
            while let Some(batch) = stream.next().await {
                n += batch.unwrap().num_rows() as u64;
            }
            n
        });
    });
    assert_eq!(flight_rows, rows);

    // Holding the answer whole would take more than its size; streaming it takes a
    // few batches' worth (about 100 MB here, as much for half the rows).
    let bound = http.1 / 4;
    let grown = [
        ("HTTP", by_http),
        ("Postgres", by_pg),
        ("Flight SQL", by_flight),
    ];
    for (front_end, by) in grown {
        assert!(
            by < bound,
            "an answer of {} MB through {front_end} grew grove start by {} MB",
            http.1 >> 20,
            by >> 20
        );
    }
}
