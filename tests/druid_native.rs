//! Druid's native JSON queries on `grove start`, as pydruid's client and Grafana send
//! them: each answer in the shape Druid's documentation gives, its values computed here
//! from the sample CSV.

use std::collections::BTreeMap;

use grove_e2e::start::{GroveStart, agent, by_time, csv_rows};
use serde_json::{Value, json};

/// `POST /druid/v2`: status and body.
fn native(g: &GroveStart, query: &Value) -> (u16, String) {
    let url = g.url.replace("/druid/v2/sql", "/druid/v2");
    let mut response = agent()
        .post(&url)
        .send_json(query)
        .expect("the broker answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn ok(g: &GroveStart, query: &Value) -> Value {
    let (status, body) = native(g, query);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn timeseries_topn_groupby_scan_and_time_boundary_answer_in_druids_shapes() {
    let g = GroveStart::new(3_000);
    let rows = csv_rows(&g);
    let mobile: Vec<_> = rows.iter().filter(|r| r["device"] == "mobile").collect();

    // timeseries by day, intervals as one string, a selector filter and a division.
    let got = ok(
        &g,
        &json!({
            "queryType": "timeseries", "dataSource": "events", "granularity": "day",
            "intervals": "2000-01-01/2100-01-01",
            "filter": { "type": "selector", "dimension": "device", "value": "mobile" },
            "aggregations": [
                { "type": "count", "name": "rows" },
                { "type": "longSum", "name": "latency", "fieldName": "latency_ms" },
            ],
            "postAggregations": [{
                "type": "arithmetic", "name": "mean", "fn": "/",
                "fields": [
                    { "type": "fieldAccess", "fieldName": "latency" },
                    { "type": "fieldAccess", "fieldName": "rows" },
                ],
            }],
        }),
    );
    let mut days: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &mobile {
        let day = days
            .entry(format!("{}T00:00:00.000Z", &r["timestamp"][..10]))
            .or_default();
        day.0 += 1;
        day.1 += r["latency_ms"].parse::<i64>().unwrap();
    }
    let answered = got.as_array().unwrap();
    assert_eq!(answered.len(), days.len(), "{got}");
    for (row, (day, (n, latency))) in answered.iter().zip(&days) {
        assert_eq!(row["timestamp"], json!(day));
        assert_eq!(row["result"]["rows"], json!(n));
        assert_eq!(row["result"]["latency"], json!(latency));
        let mean = row["result"]["mean"].as_f64().unwrap();
        assert!((mean - *latency as f64 / *n as f64).abs() < 1e-9, "{row}");
    }

    // The same days in Los Angeles' time: the buckets start at local midnight (-07:00
    // in June).
    let got = ok(
        &g,
        &json!({
            "queryType": "timeseries", "dataSource": "events",
            "granularity": { "type": "period", "period": "P1D", "timeZone": "America/Los_Angeles" },
            "intervals": ["2000-01-01/2100-01-01"],
            "aggregations": [{ "type": "count", "name": "rows" }],
        }),
    );
    let mut local: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rows {
        let t = chrono::DateTime::parse_from_rfc3339(&r["timestamp"]).unwrap()
            - chrono::Duration::hours(7);
        *local
            .entry(format!("{}T00:00:00.000-07:00", t.format("%Y-%m-%d")))
            .or_default() += 1;
    }
    let expected: Vec<Value> = local
        .iter()
        .map(|(day, n)| json!({ "timestamp": day, "result": { "rows": n } }))
        .collect();
    assert_eq!(got, json!(expected));

    // topN of all time: the first data time, the devices by count.
    let got = ok(
        &g,
        &json!({
            "queryType": "topN", "dataSource": { "type": "table", "name": "events" },
            "granularity": "all", "intervals": ["2000-01-01/2100-01-01"],
            "dimension": "device", "threshold": 2, "metric": "rows",
            "aggregations": [{ "type": "count", "name": "rows" }],
        }),
    );
    let mut devices: Vec<(i64, String)> = grove_e2e::devices_in_csv(&g.sandbox)
        .into_iter()
        .map(|(d, n)| (n as i64, d))
        .collect();
    devices.sort_by(|a, b| b.cmp(a));
    let first = &by_time(&rows)[0]["timestamp"];
    assert_eq!(
        got,
        json!([{
            "timestamp": first,
            "result": devices[..2].iter().map(|(n, d)| json!({ "device": d, "rows": n })).collect::<Vec<_>>(),
        }])
    );

    // groupBy with having and a limitSpec: the interval's start as the timestamp.
    let got = ok(
        &g,
        &json!({
            "queryType": "groupBy", "dataSource": "events", "granularity": "all",
            "intervals": ["2024-01-01T00:00:00.000Z/2100-01-01T00:00:00.000Z"],
            "dimensions": ["device", { "type": "default", "dimension": "country", "outputName": "land" }],
            "aggregations": [{ "type": "count", "name": "rows" }],
            "having": { "type": "greaterThan", "aggregation": "rows", "value": 10 },
            "limitSpec": { "type": "default", "limit": 3, "columns": [
                { "dimension": "rows", "direction": "descending" }, "device", "land"] },
        }),
    );
    let mut groups: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &rows {
        *groups
            .entry((r["device"].clone(), r["country"].clone()))
            .or_default() += 1;
    }
    let mut groups: Vec<((String, String), i64)> =
        groups.into_iter().filter(|(_, n)| *n > 10).collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected: Vec<Value> = groups[..3]
        .iter()
        .map(|((device, land), n)| {
            json!({
                "version": "v1", "timestamp": "2024-01-01T00:00:00.000Z",
                "event": { "device": device, "land": land, "rows": n },
            })
        })
        .collect();
    assert_eq!(got, json!(expected));

    // scan, ordered by time, as compacted lists: __time in milliseconds.
    let got = ok(
        &g,
        &json!({
            "queryType": "scan", "dataSource": "events", "intervals": ["2000-01-01/2100-01-01"],
            "columns": ["__time", "device"], "order": "ascending", "limit": 3,
            "resultFormat": "compactedList",
        }),
    );
    let batch = &got[0];
    assert_eq!(batch["columns"], json!(["__time", "device"]));
    let events = batch["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    let times: Vec<i64> = by_time(&rows)[..3]
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(&r["timestamp"])
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    for (event, t) in events.iter().zip(times) {
        assert_eq!(event[0], json!(t), "{event}");
    }

    // timeBoundary.
    let got = ok(
        &g,
        &json!({ "queryType": "timeBoundary", "dataSource": "events" }),
    );
    let last = &by_time(&rows).last().unwrap()["timestamp"];
    assert_eq!(
        got,
        json!([{ "timestamp": first, "result": { "minTime": first, "maxTime": last } }])
    );
}

#[test]
fn search_segment_metadata_and_data_source_metadata_describe_the_data() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);

    // search: values of device holding "o", case-insensitively, with their rows.
    let got = ok(
        &g,
        &json!({
            "queryType": "search", "dataSource": "events", "granularity": "all",
            "intervals": ["2000-01-01/2100-01-01"], "searchDimensions": ["device"],
            "query": { "type": "insensitive_contains", "value": "O" },
        }),
    );
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r["device"].to_lowercase().contains('o'))
    {
        *counts.entry(r["device"].clone()).or_default() += 1;
    }
    assert!(!counts.is_empty());
    let first = &by_time(&rows)[0]["timestamp"];
    let expected: Vec<Value> = counts
        .iter()
        .map(|(v, n)| json!({ "dimension": "device", "value": v, "count": n }))
        .collect();
    assert_eq!(got, json!([{ "timestamp": first, "result": expected }]));

    // segmentMetadata, merged: every row, the string columns' cardinalities.
    let got = ok(
        &g,
        &json!({ "queryType": "segmentMetadata", "dataSource": "events", "merge": true }),
    );
    let merged = &got[0];
    assert_eq!(merged["id"], "merged");
    assert_eq!(merged["numRows"], json!(rows.len()));
    assert_eq!(merged["columns"]["__time"]["type"], "LONG");
    assert_eq!(merged["columns"]["device"]["type"], "STRING");
    assert_eq!(merged["columns"]["revenue"]["type"], "DOUBLE");
    let devices = grove_e2e::devices_in_csv(&g.sandbox).len();
    assert_eq!(merged["columns"]["device"]["cardinality"], json!(devices));
    let per_segment = ok(
        &g,
        &json!({ "queryType": "segmentMetadata", "dataSource": "events" }),
    );
    let summed: u64 = per_segment
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["numRows"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, rows.len() as u64);

    // dataSourceMetadata: the latest event.
    let got = ok(
        &g,
        &json!({ "queryType": "dataSourceMetadata", "dataSource": "events" }),
    );
    let last = &by_time(&rows).last().unwrap()["timestamp"];
    assert_eq!(got[0]["result"], json!({ "maxIngestedEventTime": last }));
}

#[test]
fn bad_and_unsupported_native_queries_are_refused_with_druids_errors() {
    let g = GroveStart::new(500);
    for (query, status, code) in [
        (
            json!({ "queryType": "nope", "dataSource": "events" }),
            400,
            "Json parse failed",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "events", "granularity": "fortnight" }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "nothing", "granularity": "all" }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "events", "granularity": "all",
                 "aggregations": [{ "type": "javascript", "name": "x" }] }),
            501,
            "Unsupported operation",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "events", "granularity": "all",
                    "filter": { "type": "expression", "expression": "device == 'mobile'" } }),
            501,
            "Unsupported operation",
        ),
    ] {
        let (got, body) = native(&g, &query);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, body) = native(&g, &json!("not a query"));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn pydruids_native_client_and_export_pandas_work_unchanged() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let port = g
        .url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let got = grove_e2e::start::python_client("druid_client.py", &["native", &port]);

    let mut days: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["device"] == "mobile") {
        let day = days
            .entry(format!("{}T00:00:00.000Z", &r["timestamp"][..10]))
            .or_default();
        day.0 += 1;
        day.1 += r["latency_ms"].parse::<i64>().unwrap();
    }
    let expected: Vec<Value> = days
        .iter()
        .map(|(day, (n, latency))| json!({ "rows": n, "latency": latency, "timestamp": day }))
        .collect();
    assert_eq!(got["days"], json!(expected));

    let mut devices: Vec<(i64, String)> = grove_e2e::devices_in_csv(&g.sandbox)
        .into_iter()
        .map(|(d, n)| (n as i64, d))
        .collect();
    devices.sort_by(|a, b| b.cmp(a));
    let first = &by_time(&rows)[0]["timestamp"];
    let expected: Vec<Value> = devices[..2]
        .iter()
        .map(|(n, d)| json!({ "device": d, "rows": n, "timestamp": first }))
        .collect();
    assert_eq!(got["top"], json!(expected));
    let last = &by_time(&rows).last().unwrap()["timestamp"];
    assert_eq!(
        got["boundary"],
        json!([{ "timestamp": first, "result": { "minTime": first, "maxTime": last } }])
    );
}
