//! Streaming ingestion from a real Kafka-API broker (tansu), produced to with a real
//! Kafka client (kafka-python): Druid's supervisor API on `grove start`, rows
//! queryable while their task reads, hand-offs under a running query loop, bad
//! messages and a broker that stops answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grove_e2e::cluster::TestCluster;
use grove_e2e::start::{agent, python_client};
use grove_e2e::tasks::{Started, TaskApi, grove_start, peon_pids};
use grove_testkit::Tansu;
use serde_json::{Value, json};

/// A Kafka-API broker with one topic, and `grove start`.
struct Streaming {
    tansu: Tansu,
    grove: Started,
    /// `grove start`'s HTTP base URL.
    base: String,
    api: TaskApi,
}

impl Streaming {
    /// tansu with `topic` of `partitions` partitions, and `grove start` with `extra`
    /// flags.
    fn start(topic: &str, partitions: u32, extra: &[&str]) -> Streaming {
        let tansu = Tansu::start();
        create_topic(&tansu, topic, partitions);
        let grove = Started::new(extra);
        let base = grove.base.clone();
        let api = TaskApi::new(base.clone());
        Streaming {
            tansu,
            grove,
            base,
            api,
        }
    }
}

/// A supervisor spec for `datasource` reading `topic` from the start, handing off
/// every `duration`.
fn spec(bootstrap: &str, topic: &str, datasource: &str, duration: &str) -> Value {
    json!({
        "type": "kafka",
        "spec": {
            "dataSchema": {
                "dataSource": datasource,
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["k", {"type": "long", "name": "v"}]},
                "granularitySpec": {"segmentGranularity": "hour", "queryGranularity": "none", "rollup": false}
            },
            "ioConfig": {
                "topic": topic,
                "inputFormat": {"type": "json"},
                "consumerProperties": {"bootstrap.servers": bootstrap},
                "taskCount": 1,
                "replicas": 1,
                "taskDuration": duration,
                "useEarliestOffset": true
            },
            "tuningConfig": {"type": "kafka"}
        }
    })
}

/// Creates `topic` with `partitions` partitions.
fn create_topic(tansu: &Tansu, topic: &str, partitions: u32) {
    let sent = python_client(
        "kafka_client.py",
        &[&tansu.bootstrap(), topic, &partitions.to_string(), "0"],
    );
    assert_eq!(sent, json!({"sent": 0}));
}

/// Produces messages `first..first + n` (values `v = i`), or as many unparseable ones.
fn produce(tansu: &Tansu, topic: &str, partitions: u32, n: u64, first: u64, garbage: bool) {
    let mut args = vec![
        tansu.bootstrap(),
        topic.to_string(),
        partitions.to_string(),
        n.to_string(),
        first.to_string(),
    ];
    if garbage {
        args.push("garbage".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(python_client("kafka_client.py", &args), json!({"sent": n}));
}

/// `(COUNT(*), COUNT(DISTINCT v), SUM(v))` of `datasource`; zeros before it exists.
fn totals(base: &str, datasource: &str) -> (u64, u64, u64) {
    let query =
        format!("SELECT COUNT(*) AS n, COUNT(DISTINCT v) AS d, SUM(v) AS s FROM {datasource}");
    let Ok(mut response) = agent()
        .post(&format!("{base}/druid/v2/sql"))
        .send_json(json!({ "query": query }))
    else {
        return (0, 0, 0);
    };
    let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    let Some(row) = body.get(0) else {
        let message = body.to_string();
        assert!(
            message.contains("not found"),
            "a query failed while streaming: {message}"
        );
        return (0, 0, 0);
    };
    let n = |k: &str| row[k].as_u64().unwrap_or(0);
    (n("n"), n("d"), n("s"))
}

/// The rows of a query.
fn rows(base: &str, query: &str) -> Vec<Value> {
    grove_e2e::tasks::sql(base, query)
}

/// How many streaming tasks have ended with `status` (SUCCESS, FAILED).
fn kafka_tasks(base: &str, status: &str) -> u64 {
    let query = format!(
        "SELECT COUNT(*) AS n FROM sys.tasks WHERE type = 'index_kafka' AND status = '{status}'"
    );
    rows(base, &query)
        .first()
        .and_then(|r| r["n"].as_u64())
        .unwrap_or(0)
}

/// Rows in published segments historicals serve (handed off).
fn handed_off(base: &str) -> Option<u64> {
    let published = rows(
        base,
        "SELECT SUM(num_rows) AS n FROM sys.segments WHERE is_published = 1 AND is_realtime = 0",
    );
    published.first().and_then(|r| r["n"].as_u64())
}

/// Waits up to `timeout` for `holds`; the panic says `what` and shows `log`.
fn wait_for(
    what: &str,
    timeout: Duration,
    log: &dyn Fn() -> String,
    mut holds: impl FnMut() -> bool,
) {
    let began = Instant::now();
    while !holds() {
        assert!(
            began.elapsed() < timeout,
            "{what}: not within {timeout:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A query loop on another thread: `COUNT(*)` never goes down, never exceeds what was
/// produced (as `produced` says before each batch is sent), and no row is ever counted
/// twice; every query answers.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<usize, String>>,
}

impl Watcher {
    fn start(base: &str, datasource: &str, produced: Arc<AtomicU64>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, base, datasource) = (stop.clone(), base.to_string(), datasource.to_string());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut queries = 0;
                while !stop.load(Ordering::SeqCst) {
                    let bound = produced.load(Ordering::SeqCst);
                    let (n, distinct, _) = totals(&base, &datasource);
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64() % 86_400.0);
                    if n < last {
                        return Err(format!(
                            "COUNT(*) went down from {last} to {n} at {at:.3} s of the day (UTC)"
                        ));
                    }
                    if n != distinct {
                        return Err(format!(
                            "{n} rows but {distinct} distinct at {at:.3} s of the day (UTC)"
                        ));
                    }
                    if n > bound {
                        return Err(format!("{n} rows, but only {bound} were produced"));
                    }
                    last = n;
                    queries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(queries)
            })
        };
        Watcher { stop, thread }
    }

    /// Stops the loop; a violation it saw fails the test, with `log`.
    fn stop(self, log: &dyn Fn() -> String) {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.join().expect("the query loop ran") {
            Ok(queries) => assert!(queries > 20, "only {queries} queries ran"),
            Err(violation) => panic!("{violation}\n{}", log()),
        }
    }
}

fn sum_below(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

fn logs(grove: &Started) -> String {
    let mut out = std::fs::read_to_string(grove.sandbox.path("start.log")).unwrap_or_default();
    if let Ok(tasks) = std::fs::read_dir(grove.sandbox.path("data/tasks")) {
        for task in tasks.flatten() {
            let log = std::fs::read_to_string(task.path().join("log")).unwrap_or_default();
            out.push_str(&format!("\n--- {}\n{log}", task.path().display()));
        }
    }
    out
}

#[test]
fn rows_are_queryable_while_read_and_counted_once_across_hand_offs() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("events", 2, &[]);
    let (code, body) = api.post(
        "/druid/indexer/v1/supervisor",
        &spec(&tansu.bootstrap(), "events", "events", "PT3S"),
    );
    assert_eq!((code, body.as_str()), (200, r#"{"id":"events"}"#));

    // A query loop runs across the hand-offs.
    let produced = Arc::new(AtomicU64::new(0));
    let watcher = Watcher::start(&base, "events", produced.clone());
    let batches = 8;
    for batch in 0..batches {
        produced.fetch_add(250, Ordering::SeqCst);
        produce(&tansu, "events", 2, 250, batch * 250, false);
        std::thread::sleep(Duration::from_millis(600));
    }
    let all = batches * 250;
    let log = || logs(&grove);
    wait_for("every produced row", Duration::from_secs(60), &log, || {
        totals(&base, "events") == (all, all, sum_below(all))
    });
    // Several tasks handed off, each publishing its rows with its offsets.
    wait_for("two hand-offs", Duration::from_secs(60), &log, || {
        kafka_tasks(&base, "SUCCESS") >= 2
    });
    watcher.stop(&log);
    let published = rows(
        &base,
        "SELECT SUM(num_rows) AS n FROM sys.segments WHERE is_published = 1 AND is_realtime = 0",
    );
    let published = published.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
    assert!(
        published > 0 && published <= all,
        "{published} rows handed off"
    );
    assert_eq!(totals(&base, "events"), (all, all, sum_below(all)));

    // The supervisor shows where it reads: caught up with the high watermarks.
    wait_for("no lag", Duration::from_secs(30), &log, || {
        let status = api.get_json("/druid/indexer/v1/supervisor/events/status");
        let payload = &status["payload"];
        payload["state"] == "RUNNING"
            && payload["aggregateLag"] == 0
            && payload["latestOffsets"] == json!({"0": all / 2, "1": all / 2})
    });
}

#[test]
fn the_supervisor_api_suspends_resumes_counts_bad_messages_and_refuses_bad_specs() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("clicks", 1, &[]);
    let log = || logs(&grove);

    // A spec with a field Grove does not know is refused by name; nothing is stored.
    let mut broken = spec(&tansu.bootstrap(), "clicks", "clicks", "PT1H");
    broken["spec"]["ioConfig"]["autoScalerConfig"] = json!({"enableTaskAutoScaler": true});
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &broken);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("spec.ioConfig.autoScalerConfig"), "{body}");
    let (code, body) = api.get("/druid/indexer/v1/supervisor/clicks");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("[clicks] does not exist"), "{body}");
    assert_eq!(api.get_json("/druid/indexer/v1/supervisor"), json!([]));

    let mut good = spec(&tansu.bootstrap(), "clicks", "clicks", "PT1H");
    good["spec"]["tuningConfig"]["maxParseExceptions"] = json!(100);
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &good);
    assert_eq!((code, body.as_str()), (200, r#"{"id":"clicks"}"#));
    assert_eq!(
        api.get_json("/druid/indexer/v1/supervisor"),
        json!(["clicks"])
    );
    let full = api.get_json("/druid/indexer/v1/supervisor?full");
    assert_eq!(full[0]["id"], "clicks");
    assert_eq!(full[0]["spec"]["spec"]["ioConfig"]["topic"], "clicks");
    assert_eq!(full[0]["suspended"], false);

    // Good rows and bad messages: the bad ones are counted and skipped.
    produce(&tansu, "clicks", 1, 300, 0, false);
    produce(&tansu, "clicks", 1, 7, 300, true);
    produce(&tansu, "clicks", 1, 100, 307, false);
    let good_sum = sum_below(407) - (300..307).sum::<u64>();
    wait_for("the good rows", Duration::from_secs(30), &log, || {
        totals(&base, "clicks") == (400, 400, good_sum)
    });
    wait_for(
        "the bad messages counted",
        Duration::from_secs(10),
        &log,
        || {
            let stats = api.get_json("/druid/indexer/v1/supervisor/clicks/stats");
            let tasks = stats["0"].as_object().cloned().unwrap_or_default();
            tasks.values().any(|t| {
                let rows = &t["totals"]["buildSegments"];
                rows["unparseable"] == 7 && rows["processed"] == 400
            })
        },
    );
    let (code, body) = api.get("/druid/indexer/v1/supervisor/clicks/health");
    assert_eq!((code, body.as_str()), (200, r#"{"healthy":true}"#));

    // Druid's kafka input format: a second datasource from the same topic, each row
    // with its record's key, header, topic and timestamp.
    let mut records = spec(&tansu.bootstrap(), "clicks", "clicks_records", "PT1H");
    records["spec"]["dataSchema"]["timestampSpec"] =
        json!({"column": "kafka.timestamp", "format": "millis"});
    records["spec"]["dataSchema"]["dimensionsSpec"]["dimensions"] =
        json!(["kafka.key", "kafka.header.h", "kafka.topic", {"type": "long", "name": "v"}]);
    records["spec"]["ioConfig"]["inputFormat"] = json!({
        "type": "kafka",
        "valueFormat": {"type": "json"},
        "keyFormat": {"type": "csv", "columns": ["key"]},
        "headerFormat": {"type": "string", "encoding": "UTF-8"}
    });
    records["spec"]["tuningConfig"]["maxParseExceptions"] = json!(100);
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &records);
    assert_eq!(code, 200, "{body}");
    wait_for(
        "rows with their records' columns",
        Duration::from_secs(30),
        &log,
        || totals(&base, "clicks_records").0 == 400,
    );
    let row = rows(
        &base,
        "SELECT \"kafka.key\" AS k, \"kafka.header.h\" AS h, \"kafka.topic\" AS t, \
         CAST(EXTRACT(EPOCH FROM __time) AS BIGINT) AS at \
         FROM clicks_records WHERE v = 321",
    );
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(
        (&row[0]["k"], &row[0]["h"], &row[0]["t"]),
        (&json!("key321"), &json!("value321"), &json!("clicks"))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock")
        .as_secs() as i64;
    let age = now - row[0]["at"].as_i64().expect("a time");
    assert!((0..600).contains(&age), "the record's time is {age} s old");
    let (code, _) = api.post(
        "/druid/indexer/v1/supervisor/clicks_records/terminate",
        &json!({}),
    );
    assert_eq!(code, 200);

    // Messages older than lateMessageRejectionPeriod (these are of 2024) are dropped
    // and counted as thrown away.
    let mut late = spec(&tansu.bootstrap(), "clicks", "clicks_late", "PT1H");
    late["spec"]["ioConfig"]["lateMessageRejectionPeriod"] = json!("PT1H");
    late["spec"]["tuningConfig"]["maxParseExceptions"] = json!(100);
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &late);
    assert_eq!(code, 200, "{body}");
    wait_for(
        "late messages thrown away",
        Duration::from_secs(30),
        &log,
        || {
            let stats = api.get_json("/druid/indexer/v1/supervisor/clicks_late/stats");
            let tasks = stats["0"].as_object().cloned().unwrap_or_default();
            tasks.values().any(|t| {
                let rows = &t["totals"]["buildSegments"];
                rows["thrownAway"] == 400 && rows["unparseable"] == 7 && rows["processed"] == 0
            })
        },
    );
    let (code, _) = api.post(
        "/druid/indexer/v1/supervisor/clicks_late/terminate",
        &json!({}),
    );
    assert_eq!(code, 200);
    let listed = rows(
        &base,
        "SELECT supervisor_id, type, source, suspended FROM sys.supervisors",
    );
    assert_eq!(
        listed,
        [json!({"supervisor_id": "clicks", "type": "kafka", "source": "clicks", "suspended": 0})]
    );

    // Suspended, its task publishes what it read and reading stops; resumed, it reads
    // what came meanwhile.
    let (code, body) = api.post("/druid/indexer/v1/supervisor/clicks/suspend", &json!({}));
    assert_eq!(code, 200, "{body}");
    let suspended: Value = serde_json::from_str(&body).expect("a spec");
    assert_eq!(suspended["suspended"], true);
    wait_for("the suspension", Duration::from_secs(30), &log, || {
        let status = api.get_json("/druid/indexer/v1/supervisor/clicks/status");
        status["payload"]["state"] == "SUSPENDED"
            && status["payload"]["activeTasks"] == json!([])
            && status["payload"]["publishingTasks"] == json!([])
    });
    let handed_off = rows(
        &base,
        "SELECT SUM(num_rows) AS n FROM sys.segments WHERE is_published = 1 AND datasource = 'clicks'",
    );
    assert_eq!(handed_off[0]["n"], 400);
    produce(&tansu, "clicks", 1, 50, 407, false);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(totals(&base, "clicks").0, 400, "read while suspended");
    let (code, body) = api.post("/druid/indexer/v1/supervisor/clicks/resume", &json!({}));
    assert_eq!(code, 200, "{body}");
    let all_sum = good_sum + (407..457).sum::<u64>();
    wait_for(
        "the rows produced while suspended",
        Duration::from_secs(30),
        &log,
        || totals(&base, "clicks") == (450, 450, all_sum),
    );

    // Terminated, it is gone from the list and its history stays.
    let (code, body) = api.post("/druid/indexer/v1/supervisor/clicks/terminate", &json!({}));
    assert_eq!((code, body.as_str()), (200, r#"{"id":"clicks"}"#));
    assert_eq!(api.get_json("/druid/indexer/v1/supervisor"), json!([]));
    let history = api.get_json("/druid/indexer/v1/supervisor/clicks/history");
    assert_eq!(history.as_array().map(Vec::len), Some(1));
    wait_for("the last hand-off", Duration::from_secs(30), &log, || {
        let published = rows(
            &base,
            "SELECT SUM(num_rows) AS n FROM sys.segments WHERE is_published = 1 AND datasource = 'clicks'",
        );
        published.first().and_then(|r| r["n"].as_u64()) == Some(450)
    });
    assert_eq!(totals(&base, "clicks"), (450, 450, all_sum));
}

#[test]
fn a_broker_that_stops_answering_makes_the_supervisor_unhealthy_until_it_is_back() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("views", 1, &[]);
    let log = || logs(&grove);
    let (code, _) = api.post(
        "/druid/indexer/v1/supervisor",
        &spec(&tansu.bootstrap(), "views", "views", "PT1H"),
    );
    assert_eq!(code, 200);
    produce(&tansu, "views", 1, 100, 0, false);
    wait_for("the first rows", Duration::from_secs(30), &log, || {
        totals(&base, "views").0 == 100
    });

    tansu.freeze();
    wait_for(
        "an unhealthy supervisor",
        Duration::from_secs(30),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/views/status");
            let errors = status["payload"]["recentErrors"].to_string();
            status["payload"]["state"] == "UNHEALTHY_SUPERVISOR"
                && errors.contains(&tansu.bootstrap())
        },
    );
    let (code, body) = api.get("/druid/indexer/v1/supervisor/views/health");
    assert_eq!((code, body.as_str()), (503, r#"{"healthy":false}"#));
    // What was read stays queryable meanwhile.
    assert_eq!(totals(&base, "views").0, 100);

    tansu.thaw();
    produce(&tansu, "views", 1, 100, 100, false);
    wait_for(
        "a healthy supervisor reading again",
        Duration::from_secs(60),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/views/status");
            status["payload"]["state"] == "RUNNING"
                && totals(&base, "views") == (200, 200, sum_below(200))
        },
    );

    // A topic deleted under it: unhealthy, naming the topic.
    let deleted = python_client("kafka_client.py", &[&tansu.bootstrap(), "views", "delete"]);
    assert_eq!(deleted, json!({"deleted": "views"}));
    wait_for(
        "the deleted topic named",
        Duration::from_secs(30),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/views/status");
            let errors = status["payload"]["recentErrors"].to_string();
            status["payload"]["state"] == "UNHEALTHY_SUPERVISOR"
                && errors.contains("topic \\\"views\\\" does not exist")
        },
    );
    // What was read stays queryable.
    assert_eq!(totals(&base, "views"), (200, 200, sum_below(200)));
}

/// A small random number generator, seeded from the clock; the seed is printed so a
/// failing run can be told apart.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("random seed {seed}");
        Random(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_of_tasks_and_of_grove_start_at_random_moments_loses_and_duplicates_nothing() {
    let tansu = Arc::new(Tansu::start());
    create_topic(&tansu, "orders", 2);
    let mut grove = Started::new(&[]);
    let base = grove.base.clone();
    let api = TaskApi::new(base.clone());
    let (code, _) = api.post(
        "/druid/indexer/v1/supervisor",
        &spec(&tansu.bootstrap(), "orders", "orders", "PT2S"),
    );
    assert_eq!(code, 200);

    // Messages arrive in batches while tasks and the whole process are killed.
    let batches = 16;
    let producer = {
        let tansu = tansu.clone();
        std::thread::spawn(move || {
            for batch in 0..batches {
                produce(&tansu, "orders", 2, 100, batch * 100, false);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut random = Random::new();
    let tasks_dir = grove.sandbox.path("data/tasks");
    let mut kills = Vec::new();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(700 + random.below(1500)));
        if round % 3 == 2 {
            // The whole process: its tasks die with it, and it starts again.
            grove.child.kill().expect("kill -9 grove start");
            let _ = grove.child.wait();
            grove.child = grove_start(&grove.sandbox, grove.port, &[]);
            kills.push("grove start".to_string());
        } else {
            // A task process, once one runs (one may just be starting).
            let dir = tasks_dir.to_string_lossy().into_owned();
            let began = Instant::now();
            let mut pids = Vec::new();
            while pids.is_empty() && began.elapsed() < Duration::from_secs(20) {
                pids = peon_pids(|args| args.iter().any(|a| a.starts_with(&dir)));
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(pid) = pids.get(random.below(pids.len().max(1) as u64) as usize) {
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .expect("kill runs");
                assert!(status.success());
                kills.push(format!("task process {pid}"));
            }
        }
    }
    producer.join().expect("the producer ran");
    assert!(kills.len() >= 5, "only {} kills: {kills:?}", kills.len());
    let all = batches * 100;
    let log = || format!("kills: {kills:?}\n{}", logs(&grove));
    wait_for(
        "every produced row, once",
        Duration::from_secs(120),
        &log,
        || totals(&base, "orders") == (all, all, sum_below(all)),
    );
    // Handed off in the end: the published segments hold every row once.
    wait_for(
        "every row handed off",
        Duration::from_secs(60),
        &log,
        || handed_off(&base) == Some(all),
    );
    assert_eq!(totals(&base, "orders"), (all, all, sum_below(all)));
}

#[test]
fn replicas_serve_the_same_rows_and_one_of_them_publishes() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("pairs", 2, &["--task-slots", "4"]);
    let log = || logs(&grove);
    let mut two = spec(&tansu.bootstrap(), "pairs", "pairs", "PT4S");
    two["spec"]["ioConfig"]["replicas"] = json!(2);
    let (code, _) = api.post("/druid/indexer/v1/supervisor", &two);
    assert_eq!(code, 200);
    let produced = Arc::new(AtomicU64::new(0));
    let watcher = Watcher::start(&base, "pairs", produced.clone());
    let tasks_dir = grove
        .sandbox
        .path("data/tasks")
        .to_string_lossy()
        .into_owned();
    let mut killed = None;
    for batch in 0..8 {
        produced.fetch_add(200, Ordering::SeqCst);
        produce(&tansu, "pairs", 2, 200, batch * 200, false);
        if batch == 1 {
            // Both replicas serve the segment in progress, under one id.
            wait_for(
                "two replicas serving",
                Duration::from_secs(30),
                &log,
                || {
                    let served = rows(
                        &base,
                        "SELECT num_replicas FROM sys.segments WHERE is_realtime = 1",
                    );
                    served.iter().any(|r| r["num_replicas"] == 2)
                },
            );
        }
        if batch == 3 {
            // One replica dies: queries go on with the other, seeing no fewer rows.
            let pids = peon_pids(|args| args.iter().any(|a| a.starts_with(&tasks_dir)));
            let pid = *pids.first().expect("a replica runs");
            let status = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
            killed = Some(pid);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(killed.is_some());
    let all = 1600;
    wait_for("every produced row", Duration::from_secs(60), &log, || {
        totals(&base, "pairs") == (all, all, sum_below(all))
    });
    // Groups whose replicas both lived end with both SUCCESS: one published, the
    // other found its rows published.
    wait_for(
        "a group of two successful replicas",
        Duration::from_secs(60),
        &log,
        || {
            let groups = rows(
                &base,
                "SELECT group_id, COUNT(*) AS n FROM sys.tasks \
             WHERE type = 'index_kafka' AND status = 'SUCCESS' GROUP BY group_id",
            );
            groups.iter().any(|g| g["n"] == 2)
        },
    );
    watcher.stop(&log);
    wait_for(
        "every row handed off",
        Duration::from_secs(60),
        &log,
        || handed_off(&base) == Some(all),
    );
}

#[test]
fn a_cluster_streams_with_two_replicas_while_one_process_at_a_time_is_killed() {
    let tansu = Tansu::start();
    create_topic(&tansu, "stream", 2);
    let mut c = TestCluster::new();
    c.coordinator("c-1", &[]);
    c.coordinator("c-2", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.historical("h-2", "_default_tier", &[]);
    c.broker("b-1");
    c.set_rules(
        "c-1",
        "_default",
        r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":2}}]"#,
    );
    c.start("overlord", "o-1", &[]);
    c.start("overlord", "o-2", &[]);
    c.worker("w-1", 4);
    c.worker("w-2", 4);
    let api = TaskApi::new(c.http("o-1"));
    c.wait_until(Duration::from_secs(30), "an overlord leads", || {
        api.get("/druid/indexer/v1/leader").0 == 200
    });
    let mut two = spec(&tansu.bootstrap(), "stream", "stream", "PT5S");
    two["spec"]["ioConfig"]["replicas"] = json!(2);
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &two);
    assert_eq!(code, 200, "{body}");

    // Every query on the broker answers, sees no row twice, and never fewer rows than
    // before, while one process after another is killed and started again.
    let broker = c.http("b-1");
    let produced = Arc::new(AtomicU64::new(0));
    let watcher = Watcher::start(&broker, "stream", produced.clone());
    let mut batch = 0;
    let mut send = |produced: &AtomicU64| {
        produced.fetch_add(200, Ordering::SeqCst);
        produce(&tansu, "stream", 2, 200, batch * 200, false);
        batch += 1;
    };
    send(&produced);
    c.wait_until(Duration::from_secs(60), "the first rows", || {
        totals(&broker, "stream").0 > 0
    });
    // The two replicas of a group run on different workers.
    c.wait_until(Duration::from_secs(30), "replicas on two workers", || {
        let groups = rows(
            &broker,
            "SELECT group_id, COUNT(DISTINCT location) AS n FROM sys.tasks \
             WHERE type = 'index_kafka' AND status = 'RUNNING' GROUP BY group_id",
        );
        groups.iter().any(|g| g["n"] == 2)
    });
    for victim in ["w-1", "o-1", "h-1", "c-1", "w-2", "o-2", "h-2", "c-2"] {
        send(&produced);
        std::thread::sleep(Duration::from_millis(1000));
        c.kill9(victim);
        send(&produced);
        std::thread::sleep(Duration::from_millis(1500));
        c.restart(victim, &[]);
        std::thread::sleep(Duration::from_millis(1000));
    }
    let all = batch * 200;
    c.wait_until(Duration::from_secs(120), "every produced row once", || {
        totals(&broker, "stream") == (all, all, sum_below(all))
    });
    watcher.stop(&|| c.logs());
    c.wait_until(Duration::from_secs(120), "every row handed off", || {
        handed_off(&broker) == Some(all)
    });
    assert_eq!(totals(&broker, "stream"), (all, all, sum_below(all)));
}

#[test]
fn a_task_after_a_restart_takes_over_what_the_killed_one_persisted() {
    let Streaming {
        tansu,
        mut grove,
        base,
        api,
    } = Streaming::start("resume", 1, &[]);
    let (code, _) = api.post(
        "/druid/indexer/v1/supervisor",
        &spec(&tansu.bootstrap(), "resume", "resume", "PT1H"),
    );
    assert_eq!(code, 200);
    produce(&tansu, "resume", 1, 1000, 0, false);
    wait_for(
        "the first rows",
        Duration::from_secs(30),
        &|| logs(&grove),
        || totals(&base, "resume").0 == 1000,
    );
    // Rows are served once persisted: the pieces on disk hold them all.
    grove.child.kill().expect("kill -9 grove start");
    let _ = grove.child.wait();
    grove.child = grove_start(&grove.sandbox, grove.port, &[]);
    produce(&tansu, "resume", 1, 200, 1000, false);
    let log = || logs(&grove);
    wait_for("every row once", Duration::from_secs(60), &log, || {
        totals(&base, "resume") == (1200, 1200, sum_below(1200))
    });
    // What the segment in progress holds shows in sys.segments as it grows.
    wait_for(
        "the rows in sys.segments",
        Duration::from_secs(30),
        &log,
        || {
            let listed = rows(
                &base,
                "SELECT SUM(num_rows) AS n FROM sys.segments WHERE is_realtime = 1",
            );
            listed.first().is_some_and(|r| r["n"] == 1200)
        },
    );
    // The new task read only the new messages: the rest it took over from disk.
    let running = rows(
        &base,
        "SELECT task_id FROM sys.tasks WHERE type = 'index_kafka' AND status = 'RUNNING'",
    );
    assert_eq!(running.len(), 1, "{running:?}");
    let id = running[0]["task_id"]
        .as_str()
        .expect("a task id")
        .to_string();
    let report = api.report(&id);
    let processed = &report["rowStats"]["buildSegments"]["processed"];
    assert_eq!(processed, 200, "{report}");
    assert!(log().contains("took over 1000 rows"), "{}", log());
}

#[test]
fn a_task_hands_off_when_a_segment_reaches_max_rows_per_segment() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("bulk", 1, &[]);
    let log = || logs(&grove);
    let mut small = spec(&tansu.bootstrap(), "bulk", "bulk", "PT1H");
    small["spec"]["tuningConfig"]["maxRowsPerSegment"] = json!(250);
    let (code, _) = api.post("/druid/indexer/v1/supervisor", &small);
    assert_eq!(code, 200);
    for batch in 0..4 {
        produce(&tansu, "bulk", 1, 250, batch * 250, false);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Long before taskDuration, full segments were handed off by several tasks.
    wait_for(
        "full segments handed off",
        Duration::from_secs(60),
        &log,
        || {
            let published = rows(
                &base,
                "SELECT COUNT(*) AS segments, SUM(num_rows) AS n FROM sys.segments \
             WHERE is_published = 1 AND is_realtime = 0",
            );
            published
                .first()
                .is_some_and(|r| r["segments"].as_u64() >= Some(2) && r["n"].as_u64() >= Some(500))
        },
    );
    wait_for("every row once", Duration::from_secs(60), &log, || {
        totals(&base, "bulk") == (1000, 1000, sum_below(1000))
    });
    wait_for("two tasks done", Duration::from_secs(60), &log, || {
        kafka_tasks(&base, "SUCCESS") >= 2
    });
}

#[test]
fn a_reset_forgets_the_offsets_and_reading_starts_where_use_earliest_offset_says() {
    let tansu = Tansu::start();
    create_topic(&tansu, "again", 1);
    produce(&tansu, "again", 1, 100, 0, false);
    let grove = Started::new(&[]);
    let base = grove.base.clone();
    let api = TaskApi::new(base.clone());
    let log = || logs(&grove);
    // From the latest offset: what was there before is not read.
    let mut latest = spec(&tansu.bootstrap(), "again", "again", "PT1H");
    latest["spec"]["ioConfig"]["useEarliestOffset"] = json!(false);
    let (code, _) = api.post("/druid/indexer/v1/supervisor", &latest);
    assert_eq!(code, 200);
    wait_for(
        "a task reading from the latest offset",
        Duration::from_secs(30),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/again/status");
            status["payload"]["activeTasks"][0]["startingOffsets"] == json!({"0": 100})
        },
    );
    produce(&tansu, "again", 1, 50, 100, false);
    wait_for("the new rows", Duration::from_secs(30), &log, || {
        totals(&base, "again") == (50, 50, (100..150).sum())
    });
    // Reset: its task is stopped (publishing nothing) and the next one starts at the
    // latest offset again.
    let (code, body) = api.post("/druid/indexer/v1/supervisor/again/reset", &json!({}));
    assert_eq!((code, body.as_str()), (200, r#"{"id":"again"}"#));
    let (code, _) = api.post("/druid/indexer/v1/supervisor/nobody/reset", &json!({}));
    assert_eq!(code, 404);
    wait_for(
        "a task reading from the new latest offset",
        Duration::from_secs(30),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/again/status");
            status["payload"]["activeTasks"][0]["startingOffsets"] == json!({"0": 150})
        },
    );
    produce(&tansu, "again", 1, 30, 150, false);
    wait_for(
        "only the rows after the reset",
        Duration::from_secs(30),
        &log,
        || totals(&base, "again") == (30, 30, (150..180).sum()),
    );
}

#[test]
fn a_topic_pattern_reads_every_topic_it_matches_and_those_created_later() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("metrics-eu", 2, &[]);
    create_topic(&tansu, "metrics-us", 3);
    // Matches the pattern only in part: not read.
    create_topic(&tansu, "metrics-eu-old", 1);
    let log = || logs(&grove);
    let mut pattern = spec(&tansu.bootstrap(), "unused", "metrics", "PT3S");
    let io = &mut pattern["spec"]["ioConfig"];
    io.as_object_mut().unwrap().remove("topic");
    io["topicPattern"] = json!("metrics-(eu|us|ap)");
    io["taskCount"] = json!(2);
    io["useEarliestOffset"] = json!(false);
    io["inputFormat"] = json!({"type": "kafka", "valueFormat": {"type": "json"}});
    pattern["spec"]["dataSchema"]["dimensionsSpec"]["dimensions"] =
        json!(["kafka.topic", {"type": "long", "name": "v"}]);
    let (code, body) = api.post("/druid/indexer/v1/supervisor", &pattern);
    assert_eq!((code, body.as_str()), (200, r#"{"id":"metrics"}"#));
    // Both groups read from the latest offsets of the five partitions, named as Druid
    // names the partitions of several topics.
    wait_for(
        "tasks reading every matching partition",
        Duration::from_secs(30),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/metrics/status");
            let tasks = status["payload"]["activeTasks"].as_array().cloned();
            let mut read: Vec<String> = tasks
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t["startingOffsets"].as_object())
                .flat_map(|o| o.keys().cloned())
                .collect();
            read.sort();
            read == [
                "metrics-eu:0",
                "metrics-eu:1",
                "metrics-us:0",
                "metrics-us:1",
                "metrics-us:2",
            ]
        },
    );

    // (topic, partitions, first value, messages) of what is produced.
    let mut produced: Vec<(&str, u32, u64, u64)> = Vec::new();
    produce(&tansu, "metrics-eu-old", 1, 50, 50_000, false);
    for round in 0..3 {
        for (topic, partitions, base_value) in [("metrics-eu", 2, 0), ("metrics-us", 3, 10_000)] {
            // A multiple of the partitions: every partition gets as many.
            let first = base_value + round * 300;
            produce(&tansu, topic, partitions, 300, first, false);
            produced.push((topic, partitions, first, 300));
        }
        if round == 1 {
            // A topic created while it runs is read from its first message on.
            create_topic(&tansu, "metrics-ap", 2);
            produce(&tansu, "metrics-ap", 2, 100, 20_000, false);
            produced.push(("metrics-ap", 2, 20_000, 100));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }

    let all: u64 = produced.iter().map(|p| p.3).sum();
    let sum: u64 = produced.iter().map(|p| (p.2..p.2 + p.3).sum::<u64>()).sum();
    wait_for("every produced row", Duration::from_secs(90), &log, || {
        totals(&base, "metrics") == (all, all, sum)
    });
    let mut by_topic: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for (topic, _, first, n) in &produced {
        let t = by_topic.entry(topic).or_default();
        t.0 += n;
        t.1 += (*first..first + n).sum::<u64>();
    }
    let expected: Vec<Value> = by_topic
        .iter()
        .map(|(t, (n, s))| json!({"t": t, "n": n, "s": s}))
        .collect();
    let found = rows(
        &base,
        "SELECT \"kafka.topic\" AS t, COUNT(*) AS n, SUM(v) AS s FROM metrics \
         GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(found, expected);

    // Task groups handed off, publishing their own partitions' offsets side by side.
    wait_for(
        "hand-offs of both groups",
        Duration::from_secs(60),
        &log,
        || kafka_tasks(&base, "SUCCESS") >= 4,
    );
    assert_eq!(kafka_tasks(&base, "FAILED"), 0, "{}", log());
    let mut latest = serde_json::Map::new();
    for (topic, partitions, _, n) in &produced {
        for p in 0..*partitions {
            let key = format!("{topic}:{p}");
            let at = latest.get(&key).and_then(Value::as_u64).unwrap_or(0);
            latest.insert(key, json!(at + n / u64::from(*partitions)));
        }
    }
    wait_for("no lag", Duration::from_secs(30), &log, || {
        let status = api.get_json("/druid/indexer/v1/supervisor/metrics/status");
        let payload = &status["payload"];
        payload["stream"] == "metrics-(eu|us|ap)"
            && payload["aggregateLag"] == 0
            && payload["latestOffsets"] == Value::Object(latest.clone())
    });
}

/// A process stopped with SIGSTOP; killed when dropped, whatever the test did.
struct Frozen(u32);

impl Frozen {
    fn stop(pid: u32) -> Frozen {
        signal("-STOP", pid);
        Frozen(pid)
    }

    fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.0)).exists()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

fn signal(which: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

#[test]
fn a_task_that_hangs_is_stopped_after_completion_timeout_and_its_messages_read_again() {
    let Streaming {
        tansu,
        grove,
        base,
        api,
    } = Streaming::start("hang", 1, &[]);
    let mut hang = spec(&tansu.bootstrap(), "hang", "hang", "PT3S");
    hang["spec"]["ioConfig"]["completionTimeout"] = json!("PT2S");
    let (code, _) = api.post("/druid/indexer/v1/supervisor", &hang);
    assert_eq!(code, 200);
    produce(&tansu, "hang", 1, 100, 0, false);
    let log = || logs(&grove);
    wait_for("the first rows", Duration::from_secs(30), &log, || {
        totals(&base, "hang").0 == 100
    });
    // Its process stops: the task neither reads on nor asks to end at taskDuration.
    let dir = grove
        .sandbox
        .path("data/tasks")
        .to_string_lossy()
        .into_owned();
    let pids = peon_pids(|args| args.iter().any(|a| a.starts_with(&dir)));
    assert_eq!(pids.len(), 1, "{pids:?}");
    let frozen = Frozen::stop(pids[0]);
    produce(&tansu, "hang", 1, 50, 100, false);
    // The supervisor ends its group at taskDuration; it never pauses, and after
    // completionTimeout it is stopped, having published nothing.
    wait_for(
        "the hung task stopped",
        Duration::from_secs(60),
        &log,
        || {
            let status = api.get_json("/druid/indexer/v1/supervisor/hang/status");
            let errors = status["payload"]["recentErrors"].to_string();
            errors.contains("did not publish within completionTimeout (2000 ms)")
                && kafka_tasks(&base, "FAILED") == 1
        },
    );
    let failed = rows(
        &base,
        "SELECT task_id FROM sys.tasks WHERE type = 'index_kafka' AND status = 'FAILED'",
    );
    let failed = failed[0]["task_id"]
        .as_str()
        .expect("a task id")
        .to_string();
    // Its worker withdraws what it served, then kills it.
    wait_for("the hung task gone", Duration::from_secs(30), &log, || {
        let listed = rows(&base, "SELECT node_id FROM sys.servers");
        !listed.iter().any(|r| r["node_id"] == failed.as_str()) && !frozen.alive()
    });
    // The next task reads its messages again from the stored offsets: every row once.
    wait_for("every row once", Duration::from_secs(60), &log, || {
        totals(&base, "hang") == (150, 150, sum_below(150))
    });
    wait_for("a hand-off", Duration::from_secs(60), &log, || {
        kafka_tasks(&base, "SUCCESS") >= 1 && handed_off(&base).is_some_and(|n| n > 0)
    });
    assert_eq!(totals(&base, "hang"), (150, 150, sum_below(150)));
}
