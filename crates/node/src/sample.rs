//! The sample dataset: a week of web analytics events, generated deterministically
//! (the same rows on every machine) so examples and tests can rely on it.
//!
//! Columns mix cardinalities as real event data does: a handful of devices, dozens of
//! countries, thousands of pages, a hundred thousand users; `referrer` and `revenue`
//! are often NULL. Rows come in time order with a daily rhythm.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::CliResult;

pub const DEFAULT_ROWS: u64 = 1_000_000;
pub const DATASOURCE: &str = "events";
/// 2024-06-03T00:00:00Z, a Monday; the data covers seven days from then.
const START_MS: i64 = 1_717_372_800_000;
const DAYS: i64 = 7;
const DAY_MS: i64 = 86_400_000;

const COUNTRIES: [&str; 24] = [
    "US", "IN", "DE", "GB", "BR", "FR", "JP", "CA", "NL", "ES", "IT", "MX", "AU", "PL", "SE", "KR",
    "TR", "ID", "AR", "ZA", "NG", "EG", "VN", "NO",
];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const BROWSERS: [&str; 6] = ["chrome", "safari", "firefox", "edge", "samsung", "opera"];
const OSES: [&str; 5] = ["windows", "macos", "linux", "android", "ios"];
const REFERRERS: [&str; 8] = [
    "google.com",
    "bing.com",
    "duckduckgo.com",
    "news.ycombinator.com",
    "reddit.com",
    "twitter.com",
    "facebook.com",
    "newsletter",
];
const STATUS: [i64; 5] = [200, 200, 200, 304, 404];

/// splitmix64: small, fast and fully determined by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A skewed pick from `0..n`: low indexes are much more likely.
    fn skewed(&mut self, n: usize) -> usize {
        ((self.unit().powi(3)) * n as f64) as usize
    }
}

/// Writes `events.csv` (with a header) and `events-spec.json` into `dir`; returns the
/// spec's path.
pub fn write(dir: &Path, rows: u64) -> CliResult<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let data = dir.join("events.csv");
    write_rows(&data, rows).map_err(|e| format!("writing {}: {e}", data.display()))?;
    let spec = dir.join("events-spec.json");
    std::fs::write(&spec, SPEC).map_err(|e| format!("writing {}: {e}", spec.display()))?;
    Ok(spec)
}

fn write_rows(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        out,
        "timestamp,country,city,device,browser,os,page,user_id,referrer,status,latency_ms,bytes,revenue,session_seconds"
    )?;
    let mut rng = Rng(0x6772_6f76_6521);
    let span = DAYS * DAY_MS;
    for i in 0..rows {
        // Evenly spread, then bent into a daily rhythm that peaks mid-afternoon UTC.
        let base = (i as i128 * span as i128 / rows.max(1) as i128) as i64;
        let day = base / DAY_MS;
        let in_day = (base % DAY_MS) as f64 / DAY_MS as f64;
        let bent = in_day - 0.08 * (2.0 * std::f64::consts::PI * in_day).sin();
        let t = START_MS + day * DAY_MS + (bent * DAY_MS as f64) as i64;
        let country = rng.skewed(COUNTRIES.len());
        let city = rng.below(12);
        let device = rng.skewed(DEVICES.len());
        let page = rng.skewed(5_000);
        let user = rng.below(100_000);
        let referrer = if rng.below(100) < 35 {
            String::new()
        } else {
            REFERRERS[rng.skewed(REFERRERS.len())].to_string()
        };
        let status = STATUS[rng.below(STATUS.len() as u64) as usize];
        let latency = 5 + rng.skewed(2_000) as i64;
        let bytes = 500 + rng.below(200_000) as i64;
        let revenue = if rng.below(100) < 8 {
            format!("{:.2}", 1.0 + rng.unit() * 120.0)
        } else {
            String::new()
        };
        let session = rng.unit() * 1800.0;
        writeln!(
            out,
            "{},{},{}-{city},{},{},{},/p/{page},u{user},{referrer},{status},{latency},{bytes},{revenue},{session:.1}",
            grove_segment::id::format_millis(t),
            COUNTRIES[country],
            COUNTRIES[country],
            DEVICES[device],
            BROWSERS[rng.skewed(BROWSERS.len())],
            OSES[rng.below(OSES.len() as u64) as usize],
        )?;
    }
    out.flush()
}

const SPEC: &str = r#"{
  "type": "index_parallel",
  "spec": {
    "dataSchema": {
      "dataSource": "events",
      "timestampSpec": { "column": "timestamp", "format": "iso" },
      "dimensionsSpec": {
        "dimensions": [
          "country", "city", "device", "browser", "os", "page", "user_id", "referrer",
          { "type": "long", "name": "status" }
        ]
      },
      "metricsSpec": [
        { "type": "count", "name": "count" },
        { "type": "longSum", "name": "latency_ms", "fieldName": "latency_ms" },
        { "type": "longSum", "name": "bytes", "fieldName": "bytes" },
        { "type": "doubleSum", "name": "revenue", "fieldName": "revenue" },
        { "type": "floatSum", "name": "session_seconds", "fieldName": "session_seconds" }
      ],
      "granularitySpec": {
        "segmentGranularity": "day",
        "queryGranularity": "none",
        "rollup": false
      }
    },
    "ioConfig": {
      "type": "index_parallel",
      "inputSource": { "type": "local", "baseDir": ".", "filter": "events.csv" },
      "inputFormat": { "type": "csv", "findColumnsFromHeader": true }
    },
    "tuningConfig": {
      "type": "index_parallel",
      "partitionsSpec": { "type": "dynamic", "maxRowsPerSegment": 5000000 }
    }
  }
}
"#;
