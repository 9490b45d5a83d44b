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

    // With grand totals: a last row without a timestamp.
    let got = ok(
        &g,
        &json!({
            "queryType": "timeseries", "dataSource": "events", "granularity": "day",
            "intervals": "2000-01-01/2100-01-01", "descending": "true",
            "filter": { "type": "selector", "dimension": "device", "value": "mobile" },
            "aggregations": [{ "type": "count", "name": "rows" }],
            "context": { "grandTotal": true },
        }),
    );
    let answered = got.as_array().unwrap();
    assert_eq!(answered.len(), days.len() + 1);
    assert_eq!(
        answered[0]["timestamp"],
        json!(days.keys().last().unwrap()),
        "descending"
    );
    assert_eq!(
        answered[days.len()],
        json!({ "timestamp": null, "result": { "rows": mobile.len() } })
    );

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
                    "filter": { "type": "expression", "expression": "any((x) -> x == 'a', device)" } }),
            501,
            "Unsupported operation",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "events", "granularity": "all",
                    "filter": { "type": "expression", "expression": "device ==" } }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "queryType": "timeseries", "dataSource": "events", "granularity": "all",
                    "virtualColumns": [{ "type": "expression", "name": "v", "expression": "nope(device)" }],
                    "aggregations": [{ "type": "longMax", "name": "m", "fieldName": "v" }] }),
            400,
            "Plan validation failed",
        ),
        (
            json!({ "queryType": "groupBy", "dataSource": "events", "granularity": "all",
                    "dimensions": [{ "type": "extraction", "dimension": "device",
                        "extractionFn": { "type": "javascript", "function": "function(x) { return x; }" } }] }),
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
fn expressions_in_virtual_columns_filters_aggregators_and_post_aggregators() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let got = ok(
        &g,
        &json!({
            "queryType": "groupBy", "dataSource": "events", "granularity": "all",
            "intervals": ["2000-01-01/2100-01-01"],
            "virtualColumns": [
                { "type": "expression", "name": "place",
                  "expression": "concat(upper(country), '/', device)", "outputType": "STRING" },
                { "type": "expression", "name": "hour",
                  "expression": "timestamp_extract(__time, 'HOUR')", "outputType": "LONG" },
            ],
            "filter": { "type": "expression", "expression": "latency_ms > 100 && hour < 12" },
            "dimensions": ["place"],
            "aggregations": [
                { "type": "count", "name": "rows" },
                { "type": "longSum", "name": "slow", "expression": "if(latency_ms > 500, 1, 0)" },
                { "type": "doubleSum", "name": "seconds", "expression": "latency_ms / 1000.0" },
            ],
            "postAggregations": [
                { "type": "expression", "name": "share", "expression": "slow * 1.0 / rows" },
                { "type": "expression", "name": "tag", "expression": "concat(place + ':', rows)" },
            ],
        }),
    );
    let mut groups: BTreeMap<String, (i64, i64, f64)> = BTreeMap::new();
    for r in &rows {
        let latency: i64 = r["latency_ms"].parse().unwrap();
        let hour: i64 = r["timestamp"][11..13].parse().unwrap();
        if latency > 100 && hour < 12 {
            let place = format!("{}/{}", r["country"].to_uppercase(), r["device"]);
            let group = groups.entry(place).or_default();
            group.0 += 1;
            group.1 += i64::from(latency > 500);
            group.2 += latency as f64 / 1000.0;
        }
    }
    assert!(groups.len() > 3, "{groups:?}");
    let answered = got.as_array().unwrap();
    assert_eq!(answered.len(), groups.len(), "{got}");
    for (row, (place, (n, slow, seconds))) in answered.iter().zip(&groups) {
        let event = &row["event"];
        assert_eq!(event["place"], json!(place), "{row}");
        assert_eq!(event["rows"], json!(n), "{row}");
        assert_eq!(event["slow"], json!(slow), "{row}");
        assert!(
            grove_e2e::start::close(event["seconds"].as_f64().unwrap(), *seconds),
            "{row}"
        );
        let share = *slow as f64 / *n as f64;
        assert!(
            grove_e2e::start::close(event["share"].as_f64().unwrap(), share),
            "{row}"
        );
        assert_eq!(event["tag"], json!(format!("{place}:{n}")), "{row}");
    }

    // ?pretty: the same answer, indented as Druid's (Jackson's) pretty printer does.
    let url = g.url.replace("/druid/v2/sql", "/druid/v2?pretty");
    let query = json!({ "queryType": "timeBoundary", "dataSource": "events" });
    let text = agent()
        .post(&url)
        .send_json(&query)
        .expect("the broker answers")
        .body_mut()
        .read_to_string()
        .unwrap();
    let sorted = by_time(&rows);
    let (first, last) = (
        &sorted[0]["timestamp"],
        &sorted[sorted.len() - 1]["timestamp"],
    );
    assert_eq!(
        text,
        format!(
            "[ {{\n  \"timestamp\" : \"{first}\",\n  \"result\" : {{\n    \"minTime\" : \"{first}\",\n    \"maxTime\" : \"{last}\"\n  }}\n}} ]"
        )
    );
}

#[test]
fn dimension_specs_and_extraction_functions_transform_values_as_druids() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let got = ok(
        &g,
        &json!({
            "queryType": "groupBy", "dataSource": "events", "granularity": "all",
            "intervals": ["2000-01-01/2100-01-01"],
            "dimensions": [
                { "type": "extraction", "dimension": "__time", "outputName": "day",
                  "extractionFn": { "type": "timeFormat", "format": "yyyy-MM-dd", "granularity": "day" } },
                { "type": "extraction", "dimension": "country", "outputName": "initial",
                  "extractionFn": { "type": "cascade", "extractionFns": [
                      { "type": "substring", "index": 0, "length": 1 }, { "type": "lower" }] } },
                { "type": "lookup", "dimension": "device", "outputName": "kind",
                  "lookup": { "type": "map", "map": { "mobile": "handheld", "tablet": "handheld" } },
                  "replaceMissingValueWith": "other" },
                "status",
            ],
            // The referrer's first label, or all of it when it has no dot.
            "filter": { "type": "in", "dimension": "referrer", "values": ["news", "newsletter"],
                        "extractionFn": { "type": "regex", "expr": "^([a-z]+)\\." } },
            "aggregations": [{ "type": "count", "name": "rows" }],
        }),
    );
    let mut groups: BTreeMap<(String, String, String, String), i64> = BTreeMap::new();
    for r in &rows {
        if !["news.ycombinator.com", "newsletter"].contains(&r["referrer"].as_str()) {
            continue;
        }
        let kind = if r["device"] == "desktop" {
            "other"
        } else {
            "handheld"
        };
        let key = (
            r["timestamp"][..10].to_string(),
            r["country"][..1].to_lowercase(),
            kind.to_string(),
            r["status"].clone(),
        );
        *groups.entry(key).or_default() += 1;
    }
    let expected: Vec<Value> = groups
        .iter()
        .map(|((day, initial, kind, status), n)| {
            json!({
                "version": "v1", "timestamp": "2000-01-01T00:00:00.000Z",
                "event": { "day": day, "initial": initial, "kind": kind, "status": status, "rows": n },
            })
        })
        .collect();
    assert!(expected.len() > 10);
    assert_eq!(got, json!(expected));

    // topN over a formatted dimension, filtered through an extraction function.
    let got = ok(
        &g,
        &json!({
            "queryType": "topN", "dataSource": "events", "granularity": "all",
            "intervals": ["2000-01-01/2100-01-01"], "threshold": 3, "metric": "rows",
            "dimension": { "type": "extraction", "dimension": "browser", "outputName": "b",
                           "extractionFn": { "type": "stringFormat", "format": "[%s]" } },
            "filter": { "type": "selector", "dimension": "device", "value": "MOBILE",
                        "extractionFn": { "type": "upper" } },
            "aggregations": [{ "type": "count", "name": "rows" }],
        }),
    );
    let mobile: Vec<_> = rows.iter().filter(|r| r["device"] == "mobile").collect();
    let mut browsers: BTreeMap<String, i64> = BTreeMap::new();
    for r in &mobile {
        *browsers.entry(format!("[{}]", r["browser"])).or_default() += 1;
    }
    let mut counts: Vec<i64> = browsers.values().copied().collect();
    counts.sort_by(|a, b| b.cmp(a));
    let first = mobile.iter().map(|r| &r["timestamp"]).min().unwrap();
    assert_eq!(got[0]["timestamp"], json!(first), "{got}");
    // Ties may come in either order: the counts, and each browser's own.
    let result = got[0]["result"].as_array().unwrap();
    let answered: Vec<i64> = result.iter().map(|r| r["rows"].as_i64().unwrap()).collect();
    assert_eq!(answered, counts[..3], "{got}");
    for r in result {
        assert_eq!(r["rows"], json!(browsers[r["b"].as_str().unwrap()]), "{r}");
    }
}

#[test]
fn pydruids_native_client_and_export_pandas_work_unchanged() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let port = g.http_port();
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

#[test]
fn grafanas_druid_plugin_requests_are_answered_as_it_reads_them() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let sorted = by_time(&rows);
    let (from, to) = (
        &sorted[0]["timestamp"],
        &sorted[sorted.len() - 1]["timestamp"],
    );
    let millis = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let in_range: Vec<_> = rows.iter().filter(|r| r["device"] == "mobile").collect();

    // SQL, as the plugin sends it: its own queryType key, arrays with a header row.
    let (status, _, body) = g.post(&json!({
        "queryType": "sql", "context": { "plop": "plip" }, "resultFormat": "array", "header": true,
        "query": format!(
            "SELECT \"__time\", \"device\" FROM \"events\" WHERE __time >= MILLIS_TO_TIMESTAMP({}) \
             AND __time <= MILLIS_TO_TIMESTAMP({}) ORDER BY 1 LIMIT 5",
            millis(from), millis(to)
        ),
    }));
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got[0], json!(["__time", "device"]));
    // The plugin takes a column for times only when it reads exactly like this.
    assert_eq!(got[1][0], json!(from));

    let intervals = json!({ "type": "intervals", "intervals": [format!("{from}/{to}")] });
    let selector = json!({ "type": "selector", "dimension": "device", "value": "mobile" });
    // Rows strictly before the last time, as the interval's end is excluded.
    let counted = in_range.iter().filter(|r| &r["timestamp"] != to).count() as i64;

    let got = ok(
        &g,
        &json!({
            "queryType": "timeseries", "dataSource": { "type": "table", "name": "events" },
            "intervals": intervals, "context": { "plop": "plep" }, "descending": false,
            "filter": selector, "granularity": "hour",
            "aggregations": [
                { "type": "count", "name": "count" },
                { "type": "longLast", "name": "latency", "fieldName": "latency_ms" },
            ],
        }),
    );
    let total: i64 = got
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, counted);

    let got = ok(
        &g,
        &json!({
            "queryType": "topN", "dataSource": { "type": "table", "name": "events" },
            "intervals": intervals, "context": { "plop": "plep" },
            "dimension": { "type": "default", "dimension": "country", "outputName": "land", "outputType": "STRING" },
            "metric": { "type": "numeric", "metric": "latency" }, "threshold": 50,
            "filter": selector, "granularity": "all",
            "aggregations": [{ "type": "longSum", "name": "latency", "fieldName": "latency_ms" }],
        }),
    );
    let mut by_country: BTreeMap<&str, i64> = BTreeMap::new();
    for r in in_range.iter().filter(|r| &r["timestamp"] != to) {
        *by_country.entry(&r["country"]).or_default() += r["latency_ms"].parse::<i64>().unwrap();
    }
    let listed = got[0]["result"].as_array().unwrap();
    assert_eq!(listed.len(), by_country.len().min(50));
    for row in listed {
        assert_eq!(
            row["latency"],
            json!(by_country[row["land"].as_str().unwrap()]),
            "{row}"
        );
    }

    let got = ok(
        &g,
        &json!({
            "queryType": "groupBy", "dataSource": { "type": "table", "name": "events" },
            "intervals": intervals,
            "dimensions": [{ "type": "default", "dimension": "country", "outputName": "land", "outputType": "STRING" }],
            "filter": selector, "granularity": "day",
            "aggregations": [{ "type": "count", "name": "count" }],
        }),
    );
    let grouped: i64 = got
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["version"], "v1");
            r["event"]["count"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(grouped, counted);

    let got = ok(
        &g,
        &json!({
            "queryType": "scan", "dataSource": { "type": "table", "name": "events" },
            "intervals": { "type": "intervals", "intervals": [format!("{from}/P5D")] },
            "context": { "plop": "plep" }, "resultFormat": "compactedList", "batchSize": 20480,
            "order": "none", "filter": selector, "columns": ["__time", "device", "country"],
        }),
    );
    // Every row in the one batch the plugin reads.
    let five_days = millis(from) + 5 * 86_400_000;
    let expected = in_range
        .iter()
        .filter(|r| millis(&r["timestamp"]) < five_days)
        .count();
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["events"].as_array().unwrap().len(), expected);
}
