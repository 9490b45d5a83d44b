//! Druid's SQL HTTP API on `grove start`, as Druid's clients use it: result formats
//! and header rows, query ids, errors with their statuses, timeouts and cancellation.
//! Expected rows are computed here from the sample CSV.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use grove_e2e::start::{GroveStart, agent, post};
use serde_json::{Value, json};

const BY_DEVICE: &str = "SELECT device, COUNT(*) AS n FROM events GROUP BY 1 ORDER BY 1";
/// A sum over every combination of four rows (10^12 of them and more, each computed):
/// runs until it is stopped.
const ENDLESS: &str = "SELECT SUM(a.latency_ms * b.latency_ms + c.latency_ms - d.latency_ms) \
                       FROM events a CROSS JOIN events b CROSS JOIN events c CROSS JOIN events d";

#[test]
fn result_formats_and_header_rows_are_druids() {
    let g = GroveStart::new(3_000);
    let devices = grove_e2e::devices_in_csv(&g.sandbox);
    let ask = |format: &str, header: bool| {
        let request = json!({
            "query": BY_DEVICE, "resultFormat": format, "header": header,
            "typesHeader": header, "sqlTypesHeader": header,
            "context": { "sqlQueryId": format!("q-{format}") },
        });
        let (status, id, body) = g.post(&request);
        assert_eq!(
            (status, id.as_str()),
            (200, format!("q-{format}").as_str()),
            "{body}"
        );
        body
    };

    let array: Value = serde_json::from_str(&ask("array", true)).unwrap();
    let mut expected = vec![
        json!(["device", "n"]),
        json!(["STRING", "LONG"]),
        json!(["VARCHAR", "BIGINT"]),
    ];
    expected.extend(devices.iter().map(|(d, n)| json!([d, n])));
    assert_eq!(array, Value::Array(expected.clone()));

    let lines = ask("arrayLines", true);
    assert!(
        lines.ends_with("\n\n"),
        "a complete answer ends with an empty line"
    );
    let parsed: Vec<Value> = lines
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, expected);

    let objects: Value = serde_json::from_str(&ask("object", true)).unwrap();
    let mut expected_objects = vec![json!({
        "device": { "type": "STRING", "sqlType": "VARCHAR" },
        "n": { "type": "LONG", "sqlType": "BIGINT" },
    })];
    expected_objects.extend(devices.iter().map(|(d, n)| json!({ "device": d, "n": n })));
    assert_eq!(objects, Value::Array(expected_objects.clone()));

    let lines = ask("objectLines", false);
    let parsed: Vec<Value> = lines
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, expected_objects[1..]);

    let csv = ask("csv", true);
    let mut expected_csv = String::from("device,n\nSTRING,LONG\nVARCHAR,BIGINT\n");
    for (d, n) in &devices {
        expected_csv.push_str(&format!("{d},{n}\n"));
    }
    expected_csv.push('\n');
    assert_eq!(csv, expected_csv);

    // An answer without rows, in every format: the header rows alone.
    let none = |format: &str, header: bool| {
        let request = json!({
            "query": "SELECT device FROM events WHERE device = 'none'",
            "resultFormat": format, "header": header,
        });
        let (status, _, body) = g.post(&request);
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(none("object", false), "[]");
    assert_eq!(none("object", true), "[{\"device\":null}]");
    assert_eq!(none("array", true), "[[\"device\"]]");
    assert_eq!(none("objectLines", false), "\n");
    assert_eq!(none("arrayLines", true), "[\"device\"]\n\n");
    assert_eq!(none("csv", false), "\n");

    // Dynamic parameters, bound to the `?` in order.
    let (device, rows) = devices.iter().next().unwrap();
    let request = json!({
        "query": "SELECT COUNT(*) AS n FROM events WHERE device = ? AND __time >= ? AND ? > 0",
        "parameters": [
            { "type": "VARCHAR", "value": device },
            { "type": "TIMESTAMP", "value": "2000-01-01 00:00:00" },
            { "type": "INTEGER", "value": 1 },
        ],
    });
    let (status, _, body) = g.post(&request);
    assert_eq!((status, body), (200, format!("[{{\"n\":{rows}}}]")));
    for parameters in [
        json!([{ "type": "VARCHAR", "value": device }]),
        json!([{ "type": "BIGINT", "value": "many" }, { "type": "VARCHAR", "value": "x" }, { "type": "INTEGER", "value": 1 }]),
    ] {
        let request = json!({ "query": request["query"], "parameters": parameters });
        let (status, _, body) = g.post(&request);
        assert_eq!(status, 400, "{body}");
    }

    // Without an id, the broker names the query itself.
    let (status, id, _) = g.post(&json!({ "query": "SELECT 1" }));
    assert_eq!(status, 200);
    assert!(!id.is_empty());
}

#[test]
fn bad_requests_timeouts_and_cancellation_answer_with_druids_errors() {
    let g = GroveStart::new(3_000);
    let cases = [
        (json!({ "query": "SELEC 1" }), 400, "Plan validation failed"),
        (
            json!({ "query": "SELECT nope FROM events" }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "query": "SELECT 1", "resultFormat": "xml" }),
            400,
            "Invalid input",
        ),
        (
            json!({ "query": "SELECT 1", "context": { "timeout": "soon" } }),
            400,
            "Invalid input",
        ),
        (json!({ "queryy": "SELECT 1" }), 400, "Invalid input"),
    ];
    for (request, status, error) in cases {
        let (got, _, body) = g.post(&request);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{request}: {body}"
        );
        assert!(
            body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    let began = Instant::now();
    let (status, _, body) = g.post(&json!({ "query": ENDLESS, "context": { "timeout": 300 } }));
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("Query timeout"), "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "the timeout stopped it"
    );

    let url = g.url.clone();
    let running = std::thread::spawn(move || {
        post(
            &url,
            &json!({ "query": ENDLESS, "context": { "sqlQueryId": "endless-1" } }),
        )
    });
    let cancel = format!("{}/endless-1", g.url);
    let began = Instant::now();
    loop {
        let status = agent()
            .delete(&cancel)
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 202 {
            break;
        }
        assert_eq!(status, 404, "before it runs, the query is not found");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the query never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, id, body) = running.join().unwrap();
    assert_eq!((status, id.as_str()), (500, "endless-1"), "{body}");
    assert!(body.contains("Query cancelled"), "{body}");
    let again = agent()
        .delete(&cancel)
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(again, 404, "a finished query is not running");

    // A query cancelled while its rows stream: the answer stops short, without the
    // empty line that ends a complete one.
    let request = json!({
        "query": "SELECT a.device, b.country FROM events a CROSS JOIN events b",
        "resultFormat": "arrayLines",
        "context": { "sqlQueryId": "streaming-1" },
    });
    let mut response = agent().post(&g.url).send_json(&request).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("[\""), "{first}");
    let cancel = format!("{}/streaming-1", g.url);
    let status = agent().delete(&cancel).call().unwrap().status().as_u16();
    assert_eq!(
        status, 202,
        "a streaming query is running until its last row"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        (rest.len() as u64) < 3000 * 3000 - 1,
        "the answer stopped short"
    );
    assert_ne!(
        rest.last().map(String::as_str),
        Some(""),
        "and is not complete"
    );
    let again = agent().delete(&cancel).call().unwrap().status().as_u16();
    assert_eq!(again, 404, "a stopped query is not running");

    // The server goes on serving.
    let (status, _, body) = g.post(&json!({ "query": "SELECT COUNT(*) AS n FROM events" }));
    assert_eq!((status, body.as_str()), (200, "[{\"n\":3000}]"));
}

#[test]
fn the_configured_query_timeout_applies_when_the_context_sets_none() {
    let g = GroveStart::with(1_000, &["--query-timeout", "PT1S"]);
    let began = Instant::now();
    let (status, _, body) = g.post(&json!({ "query": ENDLESS }));
    assert_eq!(status, 504, "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "stopped by the default"
    );
    let (status, _, body) = g.post(&json!({ "query": "SELECT COUNT(*) AS n FROM events" }));
    assert_eq!((status, body.as_str()), (200, "[{\"n\":1000}]"));
}

#[test]
fn garbage_half_sent_and_huge_requests_fail_alone() {
    use std::io::{Read, Write};
    let g = GroveStart::new(1_000);
    let address = g
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let garbage = agent()
        .post(&g.url)
        .header("Content-Type", "application/json")
        .send(&b"\x00\xff{not json"[..])
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(garbage, 400);

    // A body one byte over the 2 MiB limit. Sent by hand and whole, then read: the
    // server has read every byte when it refuses, so it closes cleanly and the answer
    // arrives (a larger body, left partly unread, can make it reset the connection
    // before the client reads the answer).
    let limit = 2 << 20;
    let body = format!("{{\"query\": \"SELECT '{}'\"}}", "x".repeat(limit));
    let body = &body[..limit + 1];
    let mut huge = std::net::TcpStream::connect(&address).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        huge,
        "POST /druid/v2/sql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut status_line = [0u8; 12];
    huge.read_exact(&mut status_line).unwrap();
    assert_eq!(
        &status_line, b"HTTP/1.1 413",
        "a request over the body limit is refused"
    );

    // Headers promising 1000 bytes, 10 sent, then the client goes away.
    let mut half = std::net::TcpStream::connect(&address).unwrap();
    write!(
        half,
        "POST /druid/v2/sql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"query\": "
    )
    .unwrap();
    drop(half);

    // Another client, still talking, gets nothing back and holds no one up.
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stalled,
        "POST /druid/v2/sql HTTP/1.1\r\nHost: {address}\r\n"
    )
    .unwrap();
    let (status, _, body) = g.post(&json!({ "query": "SELECT COUNT(*) AS n FROM events" }));
    assert_eq!((status, body.as_str()), (200, "[{\"n\":1000}]"));
    stalled
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 16];
    assert!(
        stalled.read(&mut buffer).is_err(),
        "nothing is answered to half a request"
    );
}
