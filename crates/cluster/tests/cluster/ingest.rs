//! Batch ingestion end to end, through `run_batch`: input formats, timestamp formats,
//! parse exceptions, and failures that must leave nothing published. Expected rows are
//! computed here from the generated input, and segments are read back directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int64Array, RecordBatch,
    StringViewArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int64Type, Schema, TimestampMillisecondType,
};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::{EmbeddedStore, MetaStore};
use grove_cluster::segments::{self, SegmentDescriptor};
use grove_cluster::task::{IngestOutcome, run_batch};
use grove_segment::format::Segment;
use grove_segment::spec::IngestionSpec;

/// One generated input row.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
struct Row {
    time: i64,
    country: Option<String>,
    n: i64,
    /// Cents, so that the value is exact in every format.
    price_cents: i64,
    day: i32,
}

const BASE: i64 = 1_704_067_200_000; // 2024-01-01

fn rows(count: usize) -> Vec<Row> {
    let countries = ["nl", "de", "fr", "jp"];
    (0..count)
        .map(|i| Row {
            time: BASE + (i as i64 * 7_919_000) % (5 * 86_400_000),
            country: (i % 7 != 3).then(|| countries[i % 4].to_string()),
            n: (i as i64 * 31) % 1000 - 200,
            price_cents: (i as i64 * 137) % 10_000,
            day: 19_700 + (i % 30) as i32,
        })
        .collect()
}

fn iso(ms: i64) -> String {
    grove_segment::id::format_millis(ms)
}

fn date_text(days: i32) -> String {
    iso(i64::from(days) * 86_400_000)[..10].to_string()
}

fn write_json(path: &Path, rows: &[Row]) {
    let text: String = rows
        .iter()
        .map(|r| {
            let mut line = serde_json::json!({
                "time": iso(r.time), "n": r.n, "price": r.price_cents as f64 / 100.0, "day": date_text(r.day)
            });
            if let Some(c) = &r.country {
                line["country"] = serde_json::json!(c);
            }
            format!("{line}\n")
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn write_csv(path: &Path, rows: &[Row]) {
    let mut text = String::from("time,country,n,price,day\n");
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{}.{:02},{}\n",
            iso(r.time),
            r.country.as_deref().unwrap_or(""),
            r.n,
            r.price_cents / 100,
            r.price_cents % 100,
            date_text(r.day)
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// Parquet as other tools write it: microsecond timestamps, `Utf8View` strings,
/// decimals, dates.
fn write_parquet(path: &Path, rows: &[Row]) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "time",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.time * 1000),
            )),
        ),
        (
            "country",
            Arc::new(StringViewArray::from_iter(
                rows.iter().map(|r| r.country.clone()),
            )),
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n))),
        ),
        (
            "price",
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| i128::from(r.price_cents)))
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.day))),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn spec_text(datasource: &str, file: &str, format: &str, extra_tuning: &str) -> String {
    format!(
        r#"{{"type": "index_parallel", "spec": {{
          "dataSchema": {{
            "dataSource": "{datasource}",
            "timestampSpec": {{"column": "time", "format": "auto"}},
            "dimensionsSpec": {{"dimensions": ["country", {{"type": "long", "name": "n"}}, {{"type": "date", "name": "day"}}]}},
            "metricsSpec": [{{"type": "doubleSum", "name": "price", "fieldName": "price"}}],
            "granularitySpec": {{"segmentGranularity": "day", "queryGranularity": "none", "rollup": false}}
          }},
          "ioConfig": {{"type": "index_parallel", "inputSource": {{"type": "local", "files": ["{file}"]}}, "inputFormat": {format}}},
          "tuningConfig": {{"type": "index_parallel", "partitionsSpec": {{"type": "dynamic", "maxRowsPerSegment": 100}}{extra_tuning}}}
        }}}}"#
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn MetaStore>,
    deep: DeepStorage,
}

impl Fixture {
    /// The spec of `spec_text` for the newline-delimited JSON file `file` here.
    fn json_spec(&self, datasource: &str, file: &str, extra_tuning: &str) -> String {
        let path = self.path(file).display().to_string();
        spec_text(datasource, &path, r#"{"type": "json"}"#, extra_tuning)
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("meta")).unwrap());
        let deep = DeepStorage::local(dir.path().join("deep")).unwrap();
        Fixture { dir, store, deep }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn ingest(&self, spec: &str, version: &str) -> grove_cluster::Result<IngestOutcome> {
        let spec_path = self.path("spec.json");
        std::fs::write(&spec_path, spec).unwrap();
        let spec = IngestionSpec::from_file(&spec_path)?;
        run_batch(
            &spec,
            self.store.as_ref(),
            &self.deep,
            &self.path("tmp"),
            version,
            &mut |_| {},
        )
        .await
    }

    /// Runs a spec that must fail; returns the error message.
    async fn failure(&self, spec: &str, version: &str) -> String {
        match self.ingest(spec, version).await {
            Ok(_) => panic!("the task must fail"),
            Err(e) => e.to_string(),
        }
    }

    async fn descriptors(&self) -> Vec<SegmentDescriptor> {
        segments::load(self.store.as_ref(), None).await.unwrap()
    }

    /// Every row of every segment of `datasource`, sorted.
    async fn read_back(&self, datasource: &str) -> Vec<Row> {
        let mut out = Vec::new();
        for d in segments::load(self.store.as_ref(), Some(datasource))
            .await
            .unwrap()
        {
            let segment = Segment::open(&self.deep.local_path(&d.path).unwrap()).unwrap();
            let column = |name: &str| {
                segment
                    .column(segment.footer().column_index(name).unwrap())
                    .unwrap()
            };
            let (time, country, n, price, day) = (
                column("__time"),
                column("country"),
                column("n"),
                column("price"),
                column("day"),
            );
            let country = arrow::compute::cast(&country, &DataType::Utf8).unwrap();
            for i in 0..segment.num_rows() {
                out.push(Row {
                    time: time.as_primitive::<TimestampMillisecondType>().value(i),
                    country: (!country.is_null(i))
                        .then(|| country.as_string::<i32>().value(i).to_string()),
                    n: n.as_primitive::<Int64Type>().value(i),
                    price_cents: (price.as_primitive::<Float64Type>().value(i) * 100.0).round()
                        as i64,
                    day: day.as_primitive::<Date32Type>().value(i),
                });
            }
        }
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    fn files_in_deep_storage(&self) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&self.path("deep"))
    }
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[tokio::test]
async fn json_csv_and_parquet_load_the_same_rows() {
    let f = Fixture::new();
    let input = rows(500);
    write_json(&f.path("in.json"), &input);
    write_csv(&f.path("in.csv"), &input);
    write_parquet(&f.path("in.parquet"), &input);
    let formats = [
        ("from_json", "in.json", r#"{"type": "json"}"#),
        (
            "from_csv",
            "in.csv",
            r#"{"type": "csv", "findColumnsFromHeader": true}"#,
        ),
        ("from_parquet", "in.parquet", r#"{"type": "parquet"}"#),
    ];
    for (i, (ds, file, format)) in formats.iter().enumerate() {
        let outcome = f
            .ingest(
                &spec_text(ds, &f.path(file).display().to_string(), format, ""),
                &format!("v{i}"),
            )
            .await
            .unwrap();
        assert_eq!(outcome.progress.rows_written, 500, "{ds}");
        assert_eq!(f.read_back(ds).await, sorted(input.clone()), "{ds}");
        // Five days of data, at most 100 rows per segment.
        let per_day = outcome.published.iter().map(|d| d.num_rows).max().unwrap();
        assert!(
            per_day <= 100 && outcome.published.len() >= 5,
            "{ds}: {:?}",
            outcome.published.len()
        );
    }
}

#[tokio::test]
async fn a_bad_timestamp_fails_the_task_naming_file_and_line_and_publishes_nothing() {
    let f = Fixture::new();
    let mut input = rows(20);
    write_json(&f.path("in.json"), &input);
    let mut lines: Vec<String> = std::fs::read_to_string(f.path("in.json"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[6] = lines[6].replace(&iso(input[6].time), "yesterday at noon");
    std::fs::write(f.path("in.json"), lines.join("\n") + "\n").unwrap();
    let spec = f.json_spec("events", "in.json", "");

    let err = f.failure(&spec, "v1").await;
    assert!(
        err.contains("in.json line 7") && err.contains("yesterday at noon"),
        "{err}"
    );
    assert!(f.descriptors().await.is_empty(), "nothing published");
    assert_eq!(f.files_in_deep_storage(), 0, "nothing left in deep storage");

    let tolerant = f.json_spec("events", "in.json", r#", "maxParseExceptions": 1"#);
    let outcome = f.ingest(&tolerant, "v2").await.unwrap();
    assert_eq!(outcome.progress.parse_exceptions, 1);
    input.remove(6);
    assert_eq!(f.read_back("events").await, sorted(input));
}

#[tokio::test]
async fn malformed_json_rows_are_parse_exceptions() {
    let f = Fixture::new();
    let input = rows(10);
    write_json(&f.path("in.json"), &input);
    let mut text = std::fs::read_to_string(f.path("in.json")).unwrap();
    text.insert_str(0, "{\"time\": \"2024-01-01\", oops\n\n");
    std::fs::write(f.path("in.json"), text).unwrap();
    let spec = f.json_spec("events", "in.json", "");
    let err = f.failure(&spec, "v1").await;
    assert!(
        err.contains("in.json line 1") && err.contains("malformed JSON"),
        "{err}"
    );

    let tolerant = f.json_spec("events", "in.json", r#", "maxParseExceptions": 5"#);
    f.ingest(&tolerant, "v2").await.unwrap();
    assert_eq!(
        f.read_back("events").await,
        sorted(input),
        "blank lines are skipped, good rows all kept"
    );
}

/// `spec_text` with `source` as the input source.
fn with_source(datasource: &str, source: serde_json::Value, format: &str) -> String {
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_text(datasource, "unused", format, "")).unwrap();
    spec["spec"]["ioConfig"]["inputSource"] = source;
    spec.to_string()
}

#[tokio::test]
async fn gzip_zstd_inline_and_http_inputs_load_the_same_rows() {
    use std::io::Write;
    let f = Fixture::new();
    let input = rows(300);
    write_json(&f.path("in.json"), &input);
    write_csv(&f.path("in.csv"), &input);
    let json = std::fs::read(f.path("in.json")).unwrap();
    let csv = std::fs::read(f.path("in.csv")).unwrap();
    // Two gzip members back to back, as concatenated .gz files are.
    let (first, second) = json.split_at(json.len() / 2);
    let mut gz = Vec::new();
    for part in [first, second] {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(part).unwrap();
        gz.extend(encoder.finish().unwrap());
    }
    std::fs::write(f.path("in.json.gz"), gz).unwrap();
    std::fs::write(
        f.path("in.csv.zst"),
        zstd::encode_all(csv.as_slice(), 3).unwrap(),
    )
    .unwrap();
    let json_format = r#"{"type": "json"}"#;
    let csv_format = r#"{"type": "csv", "findColumnsFromHeader": true}"#;
    let path = |name: &str| f.path(name).display().to_string();

    // A real HTTP server (Python's) serving the compressed file.
    let port = grove_testkit::free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(f.path(""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let began = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed().as_secs() < 20,
            "the HTTP server never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = |name: &str| format!("http://127.0.0.1:{port}/{name}");

    let cases = [
        (
            "gzip",
            serde_json::json!({"type": "local", "files": [path("in.json.gz")]}),
            json_format,
        ),
        (
            "zstd",
            serde_json::json!({"type": "local", "files": [path("in.csv.zst")]}),
            csv_format,
        ),
        (
            "inline",
            serde_json::json!({"type": "inline", "data": String::from_utf8(json.clone()).unwrap()}),
            json_format,
        ),
        (
            "http",
            serde_json::json!({"type": "http", "uris": [url("in.json.gz")]}),
            json_format,
        ),
    ];
    for (i, (ds, source, format)) in cases.into_iter().enumerate() {
        let outcome = f
            .ingest(&with_source(ds, source, format), &format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("{ds}: {e}"));
        assert_eq!(outcome.progress.rows_written, 300, "{ds}");
        assert_eq!(f.read_back(ds).await, sorted(input.clone()), "{ds}");
    }

    // A missing URI fails the task naming it; a compressed Parquet file is refused.
    let missing = with_source(
        "gone",
        serde_json::json!({"type": "http", "uris": [url("absent.json")]}),
        json_format,
    );
    let err = f.failure(&missing, "v9").await;
    assert!(
        err.contains(&url("absent.json")) && err.contains("404"),
        "{err}"
    );
    std::fs::write(f.path("in.parquet.gz"), b"not really").unwrap();
    let parquet = with_source(
        "pq",
        serde_json::json!({"type": "local", "files": [path("in.parquet.gz")]}),
        r#"{"type": "parquet"}"#,
    );
    let err = f.failure(&parquet, "v10").await;
    assert!(err.contains("compressed Parquet"), "{err}");
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test]
async fn bad_json_lines_in_a_large_block_are_named_and_the_rest_kept() {
    let f = Fixture::new();
    // More rows than one decoding block, with bad lines in the middle of blocks.
    let input = rows(20_000);
    write_json(&f.path("in.json"), &input);
    let mut lines: Vec<String> = std::fs::read_to_string(f.path("in.json"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let bad = [
        (5_000, "{\"time\": 1}{\"time\": 2}"),
        (10_000, "not json at all"),
        (17_000, "{\"time\": \"2024-01-01\", \"country\": "),
    ];
    for (at, line) in bad.iter().rev() {
        lines.insert(*at, line.to_string());
    }
    std::fs::write(f.path("in.json"), lines.join("\n") + "\n").unwrap();

    let strict = f.json_spec("events", "in.json", "");
    let err = f.failure(&strict, "v1").await;
    assert!(
        err.contains("in.json line 5001"),
        "the first bad line is named: {err}"
    );

    let tolerant = f.json_spec(
        "events",
        "in.json",
        r#", "maxParseExceptions": 3,
            "partitionsSpec": {"type": "dynamic", "maxRowsPerSegment": 100000}"#,
    );
    let outcome = f.ingest(&tolerant, "v2").await.unwrap();
    assert_eq!(outcome.progress.parse_exceptions, 3);
    assert_eq!(outcome.progress.rows_written, 20_000);
    assert_eq!(f.read_back("events").await, sorted(input));
}

#[tokio::test]
async fn timestamp_formats_and_missing_value() {
    let f = Fixture::new();
    let lines = [
        r#"{"t": 1704067200, "country": "a", "n": 1, "price": 1, "day": "2024-01-01"}"#,
        r#"{"t": "1704067201", "country": "b", "n": 2, "price": 2, "day": "2024-01-01"}"#,
    ];
    std::fs::write(f.path("posix.json"), lines.join("\n")).unwrap();
    let posix = f.json_spec("posix", "posix.json", "").replace(
        r#""column": "time", "format": "auto""#,
        r#""column": "t", "format": "posix""#,
    );
    f.ingest(&posix, "v1").await.unwrap();
    let times: Vec<i64> = f.read_back("posix").await.iter().map(|r| r.time).collect();
    assert_eq!(times, [BASE, BASE + 1000]);

    let lines = [
        r#"{"time": 1704067200123, "country": "a", "n": 1, "price": 1, "day": "2024-01-01"}"#,
        r#"{"time": "2024-01-01T00:00:01.5Z", "country": "b", "n": 2, "price": 2, "day": "2024-01-01"}"#,
        r#"{"time": "2024-01-01 00:00:02", "country": "c", "n": 3, "price": 3, "day": "2024-01-01"}"#,
    ];
    std::fs::write(f.path("auto.json"), lines.join("\n")).unwrap();
    f.ingest(&f.json_spec("auto", "auto.json", ""), "v1")
        .await
        .unwrap();
    let times: Vec<i64> = f.read_back("auto").await.iter().map(|r| r.time).collect();
    assert_eq!(times, [BASE + 123, BASE + 1500, BASE + 2000]);

    std::fs::write(
        f.path("untimed.json"),
        r#"{"country": "a", "n": 1, "price": 1, "day": "2024-01-01"}"#,
    )
    .unwrap();
    let untimed = f.json_spec("untimed", "untimed.json", "").replace(
        r#""format": "auto""#,
        r#""format": "auto", "missingValue": "1970-01-01T00:00:00Z""#,
    );
    f.ingest(&untimed, "v1").await.unwrap();
    assert_eq!(f.read_back("untimed").await[0].time, 0);
}

#[tokio::test]
async fn replacing_with_an_older_version_is_refused() {
    let f = Fixture::new();
    write_json(&f.path("in.json"), &rows(5));
    let spec = f.json_spec("events", "in.json", "");
    f.ingest(&spec, "v2").await.unwrap();
    let before = f.descriptors().await;
    let err = f.failure(&spec, "v1").await;
    assert!(err.contains("not older than"), "{err}");
    assert_eq!(f.descriptors().await, before);
}

/// A spec over `file` with the given dimensions, metrics, granularity and extra
/// dataSchema fields; `format` is the inputFormat.
fn custom_spec(
    datasource: &str,
    file: &Path,
    dimensions: &str,
    granularity: &str,
    extra: &str,
) -> String {
    format!(
        r#"{{"type": "index_parallel", "spec": {{
          "dataSchema": {{
            "dataSource": "{datasource}",
            "timestampSpec": {{"column": "time", "format": "iso"}},
            "dimensionsSpec": {{"dimensions": {dimensions}}},
            "metricsSpec": [{{"type": "count", "name": "count"}}],
            "granularitySpec": {granularity}{extra}
          }},
          "ioConfig": {{"type": "index_parallel", "inputSource": {{"type": "local", "files": ["{}"]}},
                        "inputFormat": {{"type": "csv", "findColumnsFromHeader": true}}}}
        }}}}"#,
        file.display()
    )
}

#[tokio::test]
async fn typed_dimensions_of_every_kind_keep_their_values() {
    let f = Fixture::new();
    std::fs::write(
        f.path("typed.csv"),
        "time,l,d,fl,dt,ts,s\n\
         2024-01-01T00:00:00Z,-7,2.5,0.25,2024-02-29,2024-03-01T12:34:56.789Z,x\n\
         2024-01-01T00:00:01Z,,,,,,\n\
         2024-01-01T00:00:02Z,9000000000,-1e10,3.5,1969-12-31,1970-01-01T00:00:00Z,y\n",
    )
    .unwrap();
    let dims = r#"[{"type": "long", "name": "l"}, {"type": "double", "name": "d"}, {"type": "float", "name": "fl"},
                   {"type": "date", "name": "dt"}, {"type": "timestamp", "name": "ts"}, "s"]"#;
    let spec = custom_spec(
        "typed",
        &f.path("typed.csv"),
        dims,
        r#"{"segmentGranularity": "day", "rollup": false}"#,
        "",
    );
    f.ingest(&spec, "v1").await.unwrap();
    let d = &f.descriptors().await[0];
    let segment = Segment::open(&f.deep.local_path(&d.path).unwrap()).unwrap();
    let column = |name: &str| {
        segment
            .column(segment.footer().column_index(name).unwrap())
            .unwrap()
    };
    let l = column("l");
    let l = l.as_primitive::<Int64Type>();
    assert_eq!(
        (l.value(0), l.is_null(1), l.value(2)),
        (-7, true, 9_000_000_000)
    );
    let dbl = column("d");
    let dbl = dbl.as_primitive::<Float64Type>();
    assert_eq!(
        (dbl.value(0), dbl.is_null(1), dbl.value(2)),
        (2.5, true, -1e10)
    );
    let fl = column("fl");
    let fl = fl.as_primitive::<arrow::datatypes::Float32Type>();
    assert_eq!((fl.value(0), fl.is_null(1), fl.value(2)), (0.25, true, 3.5));
    let dt = column("dt");
    let dt = dt.as_primitive::<Date32Type>();
    assert_eq!(
        (dt.value(0), dt.is_null(1), dt.value(2)),
        (19_782, true, -1)
    );
    let ts = column("ts");
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    assert_eq!(
        (ts.value(0), ts.is_null(1), ts.value(2)),
        (1_709_296_496_789, true, 0)
    );
    assert_eq!(column("s").null_count(), 1);
}

#[tokio::test]
async fn segment_granularities_cut_time_into_calendar_chunks() {
    let f = Fixture::new();
    let times = [
        "2023-12-31T23:59:59Z",
        "2024-01-01T00:00:00Z",
        "2024-02-15T10:00:00Z",
        "2024-02-29T23:00:00Z",
    ];
    let csv: String = std::iter::once("time,s\n".to_string())
        .chain(times.iter().map(|t| format!("{t},a\n")))
        .collect();
    std::fs::write(f.path("t.csv"), csv).unwrap();
    let expect = [
        (
            "month",
            vec![
                "2023-12-01/2024-01-01",
                "2024-01-01/2024-02-01",
                "2024-02-01/2024-03-01",
            ],
        ),
        (
            "year",
            vec!["2023-01-01/2024-01-01", "2024-01-01/2025-01-01"],
        ),
        (
            "week",
            vec![
                "2023-12-25/2024-01-01",
                "2024-01-01/2024-01-08",
                "2024-02-12/2024-02-19",
                "2024-02-26/2024-03-04",
            ],
        ),
    ];
    for (granularity, intervals) in expect {
        let gran = format!(r#"{{"segmentGranularity": "{granularity}", "rollup": false}}"#);
        f.ingest(
            &custom_spec(granularity, &f.path("t.csv"), r#"["s"]"#, &gran, ""),
            "v1",
        )
        .await
        .unwrap();
        let mut got: Vec<_> = segments::load(f.store.as_ref(), Some(granularity))
            .await
            .unwrap()
            .iter()
            .map(|d| d.id.interval)
            .collect();
        got.sort();
        let want: Vec<_> = intervals
            .iter()
            .map(|i| grove_segment::Interval::parse(i).unwrap())
            .collect();
        assert_eq!(got, want, "{granularity}");
    }
    let all = r#"{"segmentGranularity": "all", "rollup": false}"#;
    let outcome = f
        .ingest(
            &custom_spec("all", &f.path("t.csv"), r#"["s"]"#, all, ""),
            "v1",
        )
        .await
        .unwrap();
    assert_eq!(outcome.published.len(), 1);
    assert_eq!(outcome.published[0].num_rows, 4);
}

#[tokio::test]
async fn transform_filter_and_intervals_drop_rows() {
    let f = Fixture::new();
    std::fs::write(
        f.path("t.csv"),
        "time,s,k\n2024-01-01T01:00:00Z,keep,1\n2024-01-01T02:00:00Z,drop,2\n2024-01-02T03:00:00Z,keep,3\n2024-01-01T04:00:00Z,,4\n",
    )
    .unwrap();
    let granularity =
        r#"{"segmentGranularity": "day", "rollup": false, "intervals": ["2024-01-01/2024-01-02"]}"#;
    let filter = r#", "transformSpec": {"filter": {"type": "or", "fields": [
        {"type": "selector", "dimension": "s", "value": "keep"}, {"type": "null", "column": "s"}]}}"#;
    let outcome = f
        .ingest(
            &custom_spec(
                "filtered",
                &f.path("t.csv"),
                r#"["s", "k"]"#,
                granularity,
                filter,
            ),
            "v1",
        )
        .await
        .unwrap();
    let p = &outcome.progress;
    assert_eq!(
        (
            p.rows_read,
            p.rows_filtered,
            p.rows_thrown_away,
            p.rows_written
        ),
        (4, 1, 1, 2)
    );
    let segment = Segment::open(&f.deep.local_path(&outcome.published[0].path).unwrap()).unwrap();
    let k = segment
        .column(segment.footer().column_index("k").unwrap())
        .unwrap();
    let k = arrow::compute::cast(&k, &DataType::Utf8).unwrap();
    let k: Vec<_> = k.as_string::<i32>().iter().flatten().collect();
    assert_eq!(k, ["1", "4"]);
}

#[tokio::test]
async fn a_csv_row_with_invalid_utf8_is_a_parse_exception_naming_its_line() {
    let f = Fixture::new();
    let input = rows(4);
    write_csv(&f.path("in.csv"), &input);
    let mut bytes = std::fs::read(f.path("in.csv")).unwrap();
    // Line 3 (the second data row) gets a byte that is not UTF-8 in its country.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let comma = line_starts[2]
        + bytes[line_starts[2]..]
            .iter()
            .position(|b| *b == b',')
            .unwrap();
    bytes.insert(comma + 1, 0xff);
    std::fs::write(f.path("in.csv"), bytes).unwrap();
    let csv = r#"{"type": "csv", "findColumnsFromHeader": true}"#;
    let file = f.path("in.csv").display().to_string();

    let err = f.failure(&spec_text("events", &file, csv, ""), "v1").await;
    assert!(
        err.contains("in.csv line 3") && err.contains("UTF-8"),
        "{err}"
    );
    assert!(f.descriptors().await.is_empty());

    f.ingest(
        &spec_text("events", &file, csv, r#", "maxParseExceptions": 1"#),
        "v2",
    )
    .await
    .unwrap();
    let mut expected = input;
    expected.remove(1);
    assert_eq!(f.read_back("events").await, sorted(expected));
}
