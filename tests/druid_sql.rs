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
        (json!({ "query": "SELEC 1" }), 400, "SQL parse failed"),
        (
            json!({ "query": "SELECT nope FROM events" }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "query": "SELECT 1", "resultFormat": "xml" }),
            400,
            "Json parse failed",
        ),
        (
            json!({ "query": "SELECT 1", "context": { "timeout": "soon" } }),
            400,
            "Query context parse failed",
        ),
        (json!({ "queryy": "SELECT 1" }), 400, "Json parse failed"),
    ];
    for (request, status, error) in cases {
        let (got, _, body) = g.post(&request);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (got, body["error"].as_str(), body["category"].as_str()),
            (status, Some(error), Some("INVALID_INPUT")),
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

#[test]
fn druids_dialect_over_http_names_and_renders_as_druid() {
    let g = GroveStart::new(3_000);
    let rows = grove_e2e::start::csv_rows(&g);
    let devices = grove_e2e::devices_in_csv(&g.sandbox);
    let ok = |request: Value| -> Value {
        let (status, _, body) = g.post(&request);
        assert_eq!(status, 200, "{request}: {body}");
        serde_json::from_str(&body).unwrap()
    };

    // Unaliased expressions are EXPR$n by their place in the select list; aliases keep
    // their case, quoted or not; the datasource is also druid.events.
    let query = "SELECT device, COUNT(*), COUNT(*) AS Edits, MAX(latency_ms) + 0 \
                 FROM druid.events GROUP BY 1 ORDER BY Edits DESC, device";
    let got = ok(json!({ "query": query, "resultFormat": "array", "header": true }));
    let mut expected: Vec<(&String, &u64)> = devices.iter().collect();
    expected.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let answered = got.as_array().unwrap();
    assert_eq!(answered[0], json!(["device", "EXPR$1", "Edits", "EXPR$3"]));
    assert_eq!(answered.len(), expected.len() + 1);
    for (row, (device, n)) in answered[1..].iter().zip(expected) {
        assert_eq!(
            row.as_array().unwrap()[..3],
            [json!(device), json!(n), json!(n)]
        );
    }
    // Objects keep the columns' order, as Druid writes them.
    let (status, _, body) = g.post(&json!({ "query": query }));
    assert_eq!(status, 200, "{body}");
    let first = &body[..body.find('}').unwrap()];
    let at = |key: &str| {
        first
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in {first}"))
    };
    assert!(
        at("device") < at("EXPR$1") && at("EXPR$1") < at("Edits") && at("Edits") < at("EXPR$3"),
        "{first}"
    );
    // Identifiers keep their case: there is no column Device.
    let (status, _, body) = g.post(&json!({ "query": "SELECT Device FROM events" }));
    assert_eq!(status, 400, "{body}");

    // Times as Druid writes them, milliseconds and all, as the CSV has them.
    let got = ok(json!({
        "query": "SELECT __time, TIME_FLOOR(__time, 'PT1H') AS hour, CAST(__time AS DATE) AS day \
                  FROM events ORDER BY __time, user_id LIMIT 5",
        "resultFormat": "array",
    }));
    for (row, csv) in got
        .as_array()
        .unwrap()
        .iter()
        .zip(grove_e2e::start::by_time(&rows))
    {
        let time = &csv["timestamp"];
        assert_eq!(row[0], json!(time), "{row}");
        assert_eq!(
            row[1],
            json!(format!("{}:00:00.000Z", &time[..13])),
            "{row}"
        );
        assert_eq!(
            row[2],
            json!(format!("{}T00:00:00.000Z", &time[..10])),
            "{row}"
        );
    }

    // Fields Druid's clients add are ignored; a field set to null is as if left out.
    let got = ok(json!({
        "query": "SELECT COUNT(*) AS n FROM events", "queryType": "sql",
        "resultFormat": null, "header": null, "context": null, "parameters": null,
    }));
    assert_eq!(got, json!([{ "n": rows.len() }]));

    // EXPLAIN PLAN FOR: one row, the plan, the datasources read and the statement type.
    let got = ok(
        json!({ "query": "EXPLAIN PLAN FOR SELECT COUNT(*) FROM events WHERE device = 'mobile'" }),
    );
    let explained = got.as_array().unwrap();
    assert_eq!(explained.len(), 1, "{got}");
    let row = &explained[0];
    assert!(
        row["PLAN"]
            .as_str()
            .is_some_and(|p| p.contains("physical_plan")),
        "{row}"
    );
    let resources: Value = serde_json::from_str(row["RESOURCES"].as_str().unwrap()).unwrap();
    assert_eq!(
        resources,
        json!([{ "name": "events", "type": "DATASOURCE" }])
    );
    let attributes: Value = serde_json::from_str(row["ATTRIBUTES"].as_str().unwrap()).unwrap();
    assert_eq!(attributes, json!({ "statementType": "SELECT" }));

    // Druid's INFORMATION_SCHEMA, as pydruid's dialect reads it.
    let got = ok(json!({
        "query": "SELECT COLUMN_NAME, JDBC_TYPE, IS_NULLABLE, COLUMN_DEFAULT FROM INFORMATION_SCHEMA.COLUMNS \
                  WHERE TABLE_SCHEMA = 'druid' AND TABLE_NAME = 'events' AND COLUMN_NAME IN ('__time', 'device') \
                  ORDER BY ORDINAL_POSITION",
    }));
    assert_eq!(
        got,
        json!([
            { "COLUMN_NAME": "__time", "JDBC_TYPE": 93, "IS_NULLABLE": "NO", "COLUMN_DEFAULT": "" },
            { "COLUMN_NAME": "device", "JDBC_TYPE": 12, "IS_NULLABLE": "YES", "COLUMN_DEFAULT": "" },
        ])
    );
}

#[test]
fn pydruid_db_api_and_sqlalchemy_dialect_work_unchanged() {
    let g = GroveStart::new(2_000);
    let devices = grove_e2e::devices_in_csv(&g.sandbox);
    let port = g.http_port();
    let got = grove_e2e::start::python_client("druid_client.py", &["sql", &port]);

    let dbapi = &got["dbapi"];
    let expected: Vec<Value> = devices.iter().map(|(d, n)| json!([d, n])).collect();
    assert_eq!(dbapi["by_device"], json!(expected));
    assert_eq!(dbapi["description"], json!(["device", "n"]));
    assert_eq!(dbapi["mobile"], json!(devices["mobile"]));
    let error = dbapi["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Plan validation failed (INVALID_INPUT):") && error.contains("nope"),
        "{error}"
    );

    let dialect = &got["dialect"];
    assert_eq!(dialect["tables"], json!(["events"]));
    let schemas: Vec<&str> = dialect["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(schemas.contains(&"druid"), "{schemas:?}");
    assert_eq!(
        (&dialect["has_events"], &dialect["has_nothing"]),
        (&json!(true), &json!(false))
    );
    let columns = dialect["columns"].as_array().unwrap();
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {columns:?}"))
    };
    assert_eq!(column("__time")["type"], "TIMESTAMP");
    assert_eq!(column("__time")["nullable"], false);
    // Mapped from JDBC_TYPE by pydruid's dialect.
    assert_eq!(column("device")["type"], "String");
    assert_eq!(column("latency_ms")["type"], "BigInteger");
    assert_eq!(column("revenue")["type"], "Float");
    assert!(
        columns.iter().all(|c| c["default"].is_null()),
        "{columns:?}"
    );

    // Rows per day, from the CSV.
    let mut by_day: std::collections::BTreeMap<String, u64> = Default::default();
    for row in grove_e2e::start::csv_rows(&g) {
        *by_day
            .entry(format!("{}T00:00:00.000Z", &row["timestamp"][..10]))
            .or_default() += 1;
    }
    let expected: Vec<Value> = by_day.iter().map(|(d, n)| json!([d, n])).collect();
    assert_eq!(dialect["by_day"], json!(expected));
    let error = dialect["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("SQL parse failed (INVALID_INPUT):"),
        "{error}"
    );
}

#[test]
fn status_and_metadata_endpoints_answer_in_druids_shapes() {
    let g = GroveStart::new(2_000);
    let base = g.url.trim_end_matches("/druid/v2/sql").to_string();
    let get = |path: &str| -> (u16, Value) {
        let mut response = agent()
            .get(&format!("{base}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    };
    let ok = |path: &str| {
        let (status, body) = get(path);
        assert_eq!(status, 200, "{path}: {body}");
        body
    };

    assert!(ok("/status")["version"].is_string());
    assert_eq!(ok("/status/health"), json!(true));
    let properties = ok("/status/properties");
    assert!(
        properties
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string),
        "{properties}"
    );
    assert!(
        properties["druid.service"]
            .as_str()
            .is_some_and(|s| s.starts_with("grove/"))
    );
    assert_eq!(
        ok("/status/selfDiscovered/status"),
        json!({"selfDiscovered": true})
    );

    // What the segments hold, from sys.segments over SQL.
    let (status, _, body) = g.post(&json!({
        "query": "SELECT COUNT(*) AS n, SUM(\"size\") AS bytes, MIN(\"start\") AS first, MAX(\"end\") AS last \
                  FROM sys.segments WHERE datasource = 'events'",
    }));
    assert_eq!(status, 200, "{body}");
    let segments: Value = serde_json::from_str(&body).unwrap();
    let segments = &segments[0];

    assert_eq!(ok("/druid/v2/datasources"), json!(["events"]));
    let columns = ok("/druid/v2/datasources/events");
    assert_eq!(
        columns,
        json!({
            "dimensions": ["browser", "city", "country", "device", "os", "page", "referrer", "status", "user_id"],
            "metrics": ["bytes", "count", "latency_ms", "revenue", "session_seconds"],
        })
    );
    assert_eq!(
        ok("/druid/v2/datasources/events/metrics"),
        columns["metrics"]
    );
    assert_eq!(get("/druid/v2/datasources/nothing").0, 404);

    assert_eq!(ok("/druid/coordinator/v1/datasources"), json!(["events"]));
    let simple = ok("/druid/coordinator/v1/datasources?simple");
    assert_eq!(simple[0]["name"], "events");
    let summary = &simple[0]["properties"]["segments"];
    assert_eq!(summary["count"], segments["n"], "{simple}");
    assert_eq!(summary["size"], segments["bytes"], "{simple}");
    assert_eq!(summary["minTime"], segments["first"], "{simple}");
    assert_eq!(summary["maxTime"], segments["last"], "{simple}");
    assert_eq!(
        ok("/druid/coordinator/v1/datasources/events"),
        simple[0]["properties"]
    );
    assert_eq!(get("/druid/coordinator/v1/datasources/nothing").0, 204);
    let full = ok("/druid/coordinator/v1/datasources?full");
    let listed = full[0]["segments"].as_array().unwrap();
    assert_eq!(json!(listed.len()), segments["n"]);
    assert!(
        listed.iter().all(|s| s["dataSource"] == "events"
            && s["metrics"] == "count,latency_ms,bytes,revenue,session_seconds"),
        "{full}"
    );

    let servers = ok("/druid/coordinator/v1/servers?simple");
    let servers = servers.as_array().unwrap();
    assert!(!servers.is_empty());
    assert!(
        servers
            .iter()
            .all(|s| s["type"] == "historical" && s["tier"] == "_default_tier")
    );
    let served: u64 = servers
        .iter()
        .map(|s| s["currSize"].as_u64().unwrap())
        .sum();
    assert!(served >= segments["bytes"].as_u64().unwrap(), "{servers:?}");

    assert_eq!(
        ok("/druid/coordinator/v1/loadstatus"),
        json!({"events": 100.0})
    );
    assert_eq!(
        ok("/druid/coordinator/v1/loadstatus?simple"),
        json!({"events": 0})
    );
    assert_eq!(
        ok("/druid/coordinator/v1/metadata/datasources"),
        json!(["events"])
    );
    assert_eq!(
        ok("/druid/coordinator/v1/isLeader"),
        json!({"leader": true})
    );
}

#[test]
fn lookups_configured_through_druids_api_answer_lookup_and_the_lookup_schema() {
    let g = GroveStart::new(2_000);
    let rows = grove_e2e::start::csv_rows(&g);
    let base = g.url.trim_end_matches("/druid/v2/sql").to_string();
    let config = format!("{base}/druid/coordinator/v1/lookups/config");
    let send = |method: &str, url: &str, body: Option<Value>| -> (u16, Value) {
        let request = agent();
        let mut response = match (method, body) {
            ("POST", Some(body)) => request.post(url).send_json(body),
            ("DELETE", _) => request.delete(url).call(),
            _ => request.get(url).call(),
        }
        .expect("the coordinator answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let spec = |version: &str, map: Value| json!({ "version": version, "lookupExtractorFactory": { "type": "map", "map": map } });
    let names = json!({ "US": "United States", "DE": "Germany", "FR": "France" });
    let (status, body) = send(
        "POST",
        &config,
        Some(json!({ "__default": { "countries": spec("v1", names.clone()) } })),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(send("GET", &config, None).1, json!(["__default"]));
    assert_eq!(
        send("GET", &format!("{config}/__default"), None).1,
        json!(["countries"])
    );
    assert_eq!(
        send("GET", &format!("{config}/__default/countries"), None).1,
        spec("v1", names.clone())
    );
    // Not a greater version: refused, the lookup unchanged.
    let (status, body) = send(
        "POST",
        &format!("{config}/__default/countries"),
        Some(spec("v1", json!({}))),
    );
    assert_eq!(status, 400, "{body}");
    let cached =
        json!({ "version": "v9", "lookupExtractorFactory": { "type": "cachedNamespace" } });
    let (status, body) = send("POST", &format!("{config}/__default/other"), Some(cached));
    assert_eq!(status, 400, "{body}");

    // LOOKUP in a GROUP BY, with a replacement for the keys the map lacks.
    let ok = |query: &str| -> Value {
        let (status, _, body) = g.post(&json!({ "query": query, "resultFormat": "array" }));
        assert_eq!(status, 200, "{query}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let got = ok(
        "SELECT LOOKUP(country, 'countries', 'elsewhere') AS name, COUNT(*) AS n \
                  FROM events GROUP BY 1 ORDER BY 1",
    );
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for row in &rows {
        let name = names[&row["country"]]
            .as_str()
            .unwrap_or("elsewhere")
            .to_string();
        *expected.entry(name).or_default() += 1;
    }
    let expected: Vec<Value> = expected.iter().map(|(k, n)| json!([k, n])).collect();
    assert_eq!(got, json!(expected));
    assert_eq!(
        ok("SELECT k, v FROM lookup.countries ORDER BY k"),
        json!([["DE", "Germany"], ["FR", "France"], ["US", "United States"]])
    );
    let (status, _, body) =
        g.post(&json!({ "query": "SELECT LOOKUP(country, 'nothing') FROM events" }));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no lookup named"), "{body}");

    let (status, _) = send("DELETE", &format!("{config}/__default/countries"), None);
    assert_eq!(status, 202);
    let (status, _, _) =
        g.post(&json!({ "query": "SELECT LOOKUP(country, 'countries') FROM events" }));
    assert_eq!(status, 400, "a deleted lookup is gone");
}
