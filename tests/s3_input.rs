//! The `s3` input source against a real S3 server (`s3s-fs`, installed by
//! `scripts/deps.sh`): named objects and prefixes, compressed objects, credentials
//! from the spec, and a wrong key refused.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grove_e2e::Sandbox;
use grove_e2e::tasks::rows;
use grove_testkit::free_port;
use serde_json::{Value, json};

const ACCESS_KEY: &str = "grove-test-key";
const SECRET_KEY: &str = "grove-test-secret";

/// `s3s-fs` serving `root` (each directory a bucket) on a free port; killed when
/// dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start(root: &std::path::Path) -> S3Server {
        let port = free_port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs, an S3 server: scripts/deps.sh installs it");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "s3s-fs never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { child, port }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `grove ingest SPEC --data-dir DIR` with the S3 endpoint in its environment.
fn ingest(sandbox: &Sandbox, s3: &S3Server, spec: &Value, data: &str) -> grove_e2e::Run {
    std::fs::write(sandbox.path("spec.json"), spec.to_string()).unwrap();
    Command::new(grove_e2e::grove_bin())
        .args(["ingest", &sandbox.arg("spec.json"), "--data-dir", data])
        .env("HOME", sandbox.path(""))
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", s3.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("grove ingest")
        .into()
}

fn spec(source: Value) -> Value {
    json!({
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": "from_s3",
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["k"]},
                "metricsSpec": [{"type": "longSum", "name": "v", "fieldName": "v"}],
                "granularitySpec": {"segmentGranularity": "day", "rollup": false}
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": source,
                "inputFormat": {"type": "json"}
            }
        }
    })
}

#[test]
fn s3_objects_and_prefixes_are_ingested_with_the_keys_of_the_spec() {
    let sandbox = Sandbox::default();
    let root = sandbox.path("s3");
    std::fs::create_dir_all(root.join("events/daily")).unwrap();
    std::fs::create_dir_all(root.join("events/other")).unwrap();
    std::fs::write(root.join("events/one.json"), rows("2024-03-01", 40, 1)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(rows("2024-03-02", 30, 2).as_bytes()).unwrap();
    std::fs::write(root.join("events/daily/a.json.gz"), gz.finish().unwrap()).unwrap();
    let zst = zstd::encode_all(rows("2024-03-03", 20, 3).as_bytes(), 3).unwrap();
    std::fs::write(root.join("events/daily/b.json.zst"), zst).unwrap();
    // Outside the prefix: never read.
    std::fs::write(
        root.join("events/other/c.json"),
        rows("2024-03-04", 10, 100),
    )
    .unwrap();
    let s3 = S3Server::start(&root);

    let keys = json!({
        "accessKeyId": ACCESS_KEY,
        "secretAccessKey": {"type": "default", "password": SECRET_KEY}
    });
    let source = json!({
        "type": "s3",
        "uris": ["s3://events/one.json"],
        "prefixes": ["s3://events/daily/"],
        "properties": keys
    });
    let data = sandbox.arg("data");
    let run = ingest(&sandbox, &s3, &spec(source), &data);
    assert!(run.ok, "{}", run.stderr);
    let counted = sandbox.grove(
        &[
            "sql",
            "--data-dir",
            &data,
            "--format",
            "csv",
            "-c",
            "SELECT COUNT(*) AS n, SUM(v) AS v FROM from_s3",
        ],
        "",
    );
    assert!(counted.ok, "{}", counted.stderr);
    assert_eq!(
        counted.stdout.lines().nth(1),
        Some(format!("{},{}", 40 + 30 + 20, 40 + 30 * 2 + 20 * 3).as_str()),
        "{}",
        counted.stdout
    );

    // A wrong secret: refused by the server, and the task names the object.
    let source = json!({
        "type": "s3",
        "objects": [{"bucket": "events", "path": "one.json"}],
        "properties": {"accessKeyId": ACCESS_KEY, "secretAccessKey": "not-the-secret"}
    });
    let refused = ingest(&sandbox, &s3, &spec(source), &sandbox.arg("data2"));
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("s3://events/one.json"),
        "{}",
        refused.stderr
    );
}
