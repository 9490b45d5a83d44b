//! The indexing service: Druid's task API on `grove start` and on a cluster of
//! overlords and workers over a real etcd, with tasks whose input is a named pipe the
//! test writes when it chooses, so that a task is caught running for sure.

use std::path::Path;
use std::time::{Duration, Instant};

use grove_cluster::locks;
use grove_e2e::cluster::TestCluster;
use grove_e2e::tasks::{Started, TaskApi, feed, fifo, grove_start, json_task, peons, rows, sql};
use serde_json::{Value, json};

/// The keys of Druid's `TaskStatusPlus`, as its documentation shows them.
const STATUS_PLUS_KEYS: [&str; 13] = [
    "createdTime",
    "dataSource",
    "duration",
    "errorMsg",
    "groupId",
    "id",
    "location",
    "queueInsertionTime",
    "runnerStatusCode",
    "status",
    "statusCode",
    "type",
    "location",
];

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[test]
fn grove_start_runs_tasks_names_their_failures_and_keeps_their_history() {
    let mut grove = Started::new(&[]);
    let (sandbox, port, base) = (&grove.sandbox, grove.port, grove.base.clone());
    let api = TaskApi::new(base.clone());
    let log_path = sandbox.path("start.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Three days of rows: 500 with v = 2, 300 with v = 5, 200 with v = 7.
    let data = [
        rows("2024-01-01", 500, 2),
        rows("2024-01-02", 300, 5),
        rows("2024-01-03", 200, 7),
    ]
    .concat();
    std::fs::write(sandbox.path("events.json"), &data).unwrap();
    let spec = json_task("events", &[Path::new("events.json")], None);
    std::fs::write(sandbox.path("spec.json"), spec.to_string()).unwrap();
    let ingest = sandbox.grove(&["ingest", &sandbox.arg("spec.json"), "--url", &base], "");
    assert!(ingest.ok, "{}\n{}", ingest.stderr, log());
    assert!(
        ingest.stdout.contains("SUCCESS") && ingest.stdout.contains("1000 rows processed"),
        "{}",
        ingest.stdout
    );
    // `grove ingest --url` returns once the rows are queryable.
    let counted = sql(&base, "SELECT COUNT(*) AS n, SUM(v) AS v FROM events");
    assert_eq!(
        counted,
        vec![json!({"n": 1000, "v": 500 * 2 + 300 * 5 + 200 * 7})]
    );

    let complete = api.get_json("/druid/indexer/v1/completeTasks");
    let id = complete[0]["id"].as_str().expect("the task").to_string();
    let mut expected: Vec<String> = STATUS_PLUS_KEYS.iter().map(|k| k.to_string()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(keys(&complete[0]), expected);
    let status = api.status(&id);
    assert_eq!(
        (
            &status["statusCode"],
            &status["runnerStatusCode"],
            &status["type"]
        ),
        (&json!("SUCCESS"), &json!("NONE"), &json!("index_parallel"))
    );
    assert_eq!(status["location"]["port"], port);
    assert_eq!(keys(&status["location"]), vec!["host", "port", "tlsPort"]);
    let report = api.report(&id);
    assert_eq!(report["ingestionState"], "COMPLETED");
    assert_eq!(report["segmentAvailabilityConfirmed"], true);
    assert_eq!(
        report["rowStats"]["buildSegments"],
        json!({"processed": 1000, "processedBytes": 0, "processedWithError": 0,
               "thrownAway": 0, "unparseable": 0})
    );
    let payload = api.get_json(&format!("/druid/indexer/v1/task/{id}"));
    assert_eq!(payload["task"], id.as_str());
    assert_eq!(payload["payload"]["id"], id.as_str());
    assert_eq!(
        payload["payload"]["spec"]["dataSchema"]["dataSource"],
        "events"
    );
    assert_eq!(payload["payload"]["dataSource"], "events");
    assert_eq!(
        payload["payload"]["resource"]["availabilityGroup"],
        id.as_str()
    );
    let created = |interval: &str| {
        api.get_json(&format!(
            "/druid/indexer/v1/tasks?createdTimeInterval={interval}"
        ))
        .as_array()
        .unwrap()
        .len()
    };
    assert_eq!(created("2000-01-01_3000-01-01"), 1);
    assert_eq!(created("2000-01-01_2000-01-02"), 0);
    let statuses = api.post("/druid/indexer/v1/taskStatus", &json!([id, "no-such-task"]));
    let statuses: Value = serde_json::from_str(&statuses.1).unwrap();
    assert_eq!(keys(&statuses), vec![id.clone()]);
    assert_eq!(statuses[&id]["status"], "SUCCESS");
    let tasks_log = sandbox.grove(&["tasks", "log", &id, "--url", &base], "");
    assert!(
        tasks_log.ok
            && tasks_log
                .stdout
                .contains("1000 rows in 3 segment(s) stored"),
        "{}",
        tasks_log.stdout
    );
    assert_eq!(api.get_json("/druid/indexer/v1/runningTasks"), json!([]));
    let capacity = api.get_json("/druid/indexer/v1/totalWorkerCapacity");
    assert_eq!(capacity["currentClusterCapacity"], 2);
    let workers = api.get_json("/druid/indexer/v1/workers");
    assert_eq!(workers[0]["worker"]["capacity"], 2);

    // A broken spec is refused with the field named; nothing is stored.
    let mut broken = spec.clone();
    broken["spec"]["dataSchema"]["metricsSpec"] = json!([{"type": "longSum", "name": "v"}]);
    let (code, body) = api.post("/druid/indexer/v1/task", &broken);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("spec.dataSchema.metricsSpec[0]"), "{body}");
    let (code, body) = api.post(&format!("/druid/indexer/v1/task/{id}/shutdown"), &json!({}));
    assert_eq!((code, body), (200, json!({"task": id}).to_string()));
    assert_eq!(
        api.status(&id)["statusCode"],
        "SUCCESS",
        "an ended task stays so"
    );
    let (code, body) = api.post(
        "/druid/indexer/v1/task",
        &json!({"type": "kill_everything"}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("kill_everything"), "{body}");

    // A missing file and a parse error end the task FAILED, saying which.
    let missing = json_task("events", &[&sandbox.path("absent.json")], None);
    let missing_id = api.submit(&missing);
    let failed = api.wait_end(&missing_id, &log);
    assert_eq!(failed["statusCode"], "FAILED");
    let message = failed["errorMsg"].as_str().unwrap();
    assert!(
        message.contains("absent.json") && message.contains("does not exist"),
        "{message}"
    );
    std::fs::write(
        sandbox.path("bad.json"),
        "{\"ts\":\"2024-01-05T00:00:00Z\",\"k\":\"a\",\"v\":1}\nnot json\n",
    )
    .unwrap();
    // A spec on standard input.
    let bad_spec = json_task("events", &[&sandbox.path("bad.json")], None).to_string();
    let bad = sandbox.grove(&["ingest", "-", "--url", &base], &bad_spec);
    assert!(!bad.ok, "{}", bad.stdout);
    assert!(
        bad.stderr.contains("FAILED") && bad.stderr.contains("bad.json"),
        "{}",
        bad.stderr
    );
    // Nothing of the failed tasks was published.
    assert_eq!(
        sql(&base, "SELECT COUNT(*) AS n FROM events"),
        vec![json!({"n": 1000})]
    );

    // sys.tasks shows them with Druid's columns.
    let by_status = sql(
        &base,
        "SELECT status, runner_status, COUNT(*) AS n, MIN(datasource) AS ds, \
         MIN(plaintext_port) AS port FROM sys.tasks GROUP BY 1, 2 ORDER BY 1",
    );
    assert_eq!(
        by_status,
        vec![
            json!({"status": "FAILED", "runner_status": "NONE", "n": 2, "ds": "events", "port": port}),
            json!({"status": "SUCCESS", "runner_status": "NONE", "n": 1, "ds": "events", "port": port}),
        ]
    );
    let row = sql(
        &base,
        &format!(
            "SELECT group_id, type, location, error_msg FROM sys.tasks WHERE task_id = '{id}'"
        ),
    );
    assert_eq!(
        row,
        vec![json!({"group_id": id, "type": "index_parallel",
                    "location": format!("127.0.0.1:{port}"), "error_msg": null})]
    );

    // After a restart the history is there, and the first query sees every row.
    let history = api.get_json("/druid/indexer/v1/tasks");
    assert_eq!(history.as_array().unwrap().len(), 3);
    let _ = grove.child.kill();
    let _ = grove.child.wait();
    grove.child = grove_start(sandbox, port, &[]);
    assert_eq!(
        sql(&base, "SELECT COUNT(*) AS n FROM events"),
        vec![json!({"n": 1000})]
    );
    let again = api.get_json("/druid/indexer/v1/tasks");
    let states = |list: &Value| -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["statusCode"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        s.sort();
        s
    };
    assert_eq!(states(&again), states(&history));
    let listed = sandbox.grove(
        &["tasks", "list", "--url", &base, "--state", "complete"],
        "",
    );
    assert!(
        listed.ok && listed.stdout.contains(&id),
        "{}",
        listed.stdout
    );
}

#[test]
fn a_shutdown_stops_a_running_task_and_it_publishes_nothing() {
    let grove = Started::new(&[]);
    let (sandbox, base) = (&grove.sandbox, grove.base.clone());
    let api = TaskApi::new(base.clone());
    let log_path = sandbox.path("start.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let pipe = fifo(sandbox.path("rows.pipe"));
    let id = api.submit(&json_task(
        "piped",
        &[&pipe],
        Some(&["2024-01-01/2024-01-02"]),
    ));
    api.wait(&id, Duration::from_secs(30), &log, |s| {
        s["runnerStatusCode"] == "RUNNING"
    });
    let began = Instant::now();
    while peons(&id) == 0 {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no peon for {id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Reports are live: 25 rows in, the pipe still open, the task still running.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&pipe)
        .expect("the peon reads the pipe");
    std::io::Write::write_all(&mut writer, rows("2024-01-01", 25, 1).as_bytes()).unwrap();
    let began = Instant::now();
    loop {
        let report = api.report(&id);
        if report["rowStats"]["buildSegments"]["processed"] == 25 {
            assert_eq!(report["ingestionState"], "BUILD_SEGMENTS");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{report}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(api.status(&id)["runnerStatusCode"], "RUNNING");
    let shutdown = sandbox.grove(&["tasks", "shutdown", &id, "--url", &base], "");
    assert!(shutdown.ok, "{}", shutdown.stderr);
    let ended = api.wait_end(&id, &log);
    assert_eq!(ended["statusCode"], "FAILED");
    assert_eq!(ended["errorMsg"], "Shutdown request from user");
    let began = Instant::now();
    while peons(&id) != 0 {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the peon of {id} lives on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(writer);
    // Nothing published, no lock left.
    let segments = sql(
        &base,
        "SELECT COUNT(*) AS n FROM sys.segments WHERE datasource = 'piped'",
    );
    assert_eq!(segments, vec![json!({"n": 0})]);
    let unknown = api.post("/druid/indexer/v1/task/nobody/shutdown", &json!({}));
    assert_eq!(unknown.0, 404, "{}", unknown.1);
}

/// An overlord and workers on a real etcd, with the cluster's deep storage.
fn indexing_cluster(overlords: &[&str], workers: &[(&str, u32)]) -> TestCluster {
    let mut c = TestCluster::new();
    for o in overlords {
        c.start("overlord", o, &[]);
    }
    for (w, slots) in workers {
        c.worker(w, *slots);
    }
    c
}

fn wait_leader(c: &TestCluster, overlord: &str) {
    let api = TaskApi::new(c.http(overlord));
    c.wait_until(
        Duration::from_secs(30),
        &format!("{overlord} leads"),
        || api.get("/druid/indexer/v1/isLeader").0 == 200,
    );
}

fn wait_running(c: &TestCluster, api: &TaskApi, id: &str) {
    api.wait(id, Duration::from_secs(30), &|| c.logs(), |s| {
        s["runnerStatusCode"] == "RUNNING"
    });
    c.wait_until(
        Duration::from_secs(10),
        &format!("a peon runs {id}"),
        || peons(id) == 1,
    );
}

#[test]
fn a_killed_worker_fails_its_tasks_and_releases_their_locks() {
    let mut c = indexing_cluster(&["o-1"], &[("w-1", 1)]);
    wait_leader(&c, "o-1");
    let api = TaskApi::new(c.http("o-1"));
    let pipe = fifo(c.sandbox.path("rows.pipe"));
    let id = api.submit(&json_task(
        "killed",
        &[&pipe],
        Some(&["2024-01-01/2024-01-03"]),
    ));
    wait_running(&c, &api, &id);
    let held = c.block_on(locks::list(c.store(), Some("killed"))).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");

    c.kill9("w-1");
    let ended = api.wait_end(&id, &|| c.logs());
    assert_eq!(ended["statusCode"], "FAILED");
    let message = ended["errorMsg"].as_str().unwrap();
    assert!(message.contains("worker w-1 went away"), "{message}");
    // Its process went with it, its locks were released, nothing was published.
    c.wait_until(Duration::from_secs(10), "the orphaned peon exits", || {
        peons(&id) == 0
    });
    assert!(
        c.block_on(locks::list(c.store(), Some("killed")))
            .unwrap()
            .is_empty()
    );
    assert!(c.segments("killed").is_empty());
}

#[test]
fn a_standby_overlord_redirects_takes_over_mid_task_and_the_task_finishes() {
    let mut c = indexing_cluster(&["o-1"], &[("w-1", 2)]);
    wait_leader(&c, "o-1");
    c.start("overlord", "o-2", &[]);
    c.coordinator("coordinator-1", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    let leader = TaskApi::new(c.http("o-1"));
    let standby = TaskApi::new(c.http("o-2"));

    // The standby says it does not lead, names the leader, and redirects the rest.
    assert_eq!(
        standby.get("/druid/indexer/v1/isLeader"),
        (404, json!({"leader": false}).to_string())
    );
    assert_eq!(standby.get("/druid/indexer/v1/leader").1, c.http("o-1"));
    let no_redirects = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build(),
    );
    // Every internal port refuses a caller without the cluster's credential, before
    // it does anything: the overlords' task and action APIs, the worker's, the
    // historical's and the coordinator's.
    for (node, path, body) in [
        (
            "o-1",
            "/druid/indexer/v1/task",
            Some(json!({"type": "noop"})),
        ),
        (
            "o-1",
            "/druid/indexer/v1/action",
            Some(json!({"task": "x"})),
        ),
        ("o-2", "/druid/indexer/v1/tasks", None),
        ("w-1", "/druid/worker/v1/tasks", None),
        ("h-1", "/status", None),
        ("coordinator-1", "/druid/coordinator/v1/rules", None),
    ] {
        let url = format!("{}{path}", c.http(node));
        let answer = match &body {
            Some(body) => no_redirects.post(&url).send_json(body),
            None => no_redirects.get(&url).call(),
        };
        assert_eq!(answer.unwrap().status().as_u16(), 401, "{node} {path}");
        // Health stays open, for load balancers.
        let health = no_redirects
            .get(&format!("{}/status/health", c.http(node)))
            .call()
            .unwrap();
        assert_eq!(health.status().as_u16(), 200, "{node}");
    }
    assert!(leader.get_json("/druid/indexer/v1/tasks").is_array());
    let redirected = no_redirects
        .get(&format!(
            "{}/druid/indexer/v1/tasks?state=running",
            c.http("o-2")
        ))
        .header("Authorization", grove_e2e::cluster::internal_auth())
        .call()
        .unwrap();
    assert_eq!(redirected.status().as_u16(), 307);
    assert_eq!(
        redirected.headers()["location"].to_str().unwrap(),
        format!("{}/druid/indexer/v1/tasks?state=running", c.http("o-1"))
    );

    // Submitted through the standby, running when the leader dies.
    let pipe = fifo(c.sandbox.path("rows.pipe"));
    let id = standby.submit(&json_task("failover", &[&pipe], None));
    wait_running(&c, &leader, &id);
    c.kill9("o-1");
    wait_leader(&c, "o-2");
    assert_eq!(standby.status(&id)["runnerStatusCode"], "RUNNING");
    let fed = feed(
        &pipe,
        [rows("2024-01-01", 90, 3), rows("2024-01-02", 60, 4)].concat(),
    );
    let ended = standby.wait_end(&id, &|| c.logs());
    fed.join().unwrap();
    assert_eq!(ended["statusCode"], "SUCCESS", "{ended}");
    assert_eq!(c.segments("failover").len(), 2);
    c.wait_until(
        Duration::from_secs(30),
        "the broker counts the rows",
        || {
            c.sql(
                "broker-1",
                "SELECT COUNT(*) AS n, SUM(v) AS v FROM failover",
            )
            .is_ok_and(|r| r == vec![json!({"n": 150, "v": 90 * 3 + 60 * 4})])
        },
    );
}

#[test]
fn replacing_tasks_take_turns_a_revoked_lock_publishes_nothing_and_appends_share_chunks() {
    let c = indexing_cluster(&["o-1"], &[("w-1", 3)]);
    wait_leader(&c, "o-1");
    let api = TaskApi::new(c.http("o-1"));
    let day = ["2024-01-01/2024-01-02"];
    let logs = || c.logs();

    // A compaction-priority task holds the day; a batch task revokes its lock.
    let low_pipe = fifo(c.sandbox.path("low.pipe"));
    let mut low = json_task("turns", &[&low_pipe], Some(&day));
    low["context"] = json!({"priority": 25});
    let low_id = api.submit(&low);
    wait_running(&c, &api, &low_id);
    std::fs::write(c.sandbox.path("high.json"), rows("2024-01-01", 40, 1)).unwrap();
    let high_id = api.submit(&json_task(
        "turns",
        &[&c.sandbox.path("high.json")],
        Some(&day),
    ));
    assert_eq!(api.wait_end(&high_id, &logs)["statusCode"], "SUCCESS");
    let fed = feed(&low_pipe, rows("2024-01-01", 10, 100));
    let low_end = api.wait_end(&low_id, &logs);
    fed.join().unwrap();
    assert_eq!(low_end["statusCode"], "FAILED");
    let message = low_end["errorMsg"].as_str().unwrap();
    assert!(message.contains("revoked"), "{message}");
    let published = c.segments("turns");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].num_rows, 40);
    assert!(
        published[0].path.contains(&high_id),
        "{}",
        published[0].path
    );

    // A forged action is refused: the task runs, but the token is not its own.
    let first_pipe = fifo(c.sandbox.path("first.pipe"));
    let first_id = api.submit(&json_task("turns", &[&first_pipe], Some(&day)));
    wait_running(&c, &api, &first_id);
    let forged = json!({
        "task": first_id,
        "token": "0123456789abcdef0123456789abcdef",
        "action": {"type": "segmentTransactionalInsert", "segments": []}
    });
    let (code, body) = api.post("/druid/indexer/v1/action", &forged);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("refused"), "{body}");

    // Two batch tasks of one priority on one day: the second waits for the first.
    std::fs::write(c.sandbox.path("second.json"), rows("2024-01-01", 30, 2)).unwrap();
    let second_id = api.submit(&json_task(
        "turns",
        &[&c.sandbox.path("second.json")],
        Some(&day),
    ));
    api.wait(&second_id, Duration::from_secs(10), &logs, |s| {
        s["runnerStatusCode"] == "WAITING"
    });
    let waiting = api.get_json("/druid/indexer/v1/waitingTasks");
    assert_eq!(waiting[0]["id"], second_id.as_str());
    let fed = feed(&first_pipe, rows("2024-01-01", 20, 1));
    assert_eq!(api.wait_end(&first_id, &logs)["statusCode"], "SUCCESS");
    fed.join().unwrap();
    assert_eq!(api.wait_end(&second_id, &logs)["statusCode"], "SUCCESS");
    let first_version = c
        .segments("turns")
        .into_iter()
        .map(|d| (d.id.version, d.path))
        .max()
        .unwrap();
    assert!(
        first_version.1.contains(&second_id),
        "the second task's version is the newest"
    );

    // Two appends to one day at once: both publish, with distinct partitions.
    let pipes = [
        fifo(c.sandbox.path("a1.pipe")),
        fifo(c.sandbox.path("a2.pipe")),
    ];
    let ids: Vec<String> = pipes
        .iter()
        .map(|p| {
            let mut task = json_task("appends", &[p], None);
            task["spec"]["ioConfig"]["appendToExisting"] = json!(true);
            api.submit(&task)
        })
        .collect();
    for id in &ids {
        wait_running(&c, &api, id);
    }
    let feeds: Vec<_> = pipes
        .iter()
        .zip([5, 7])
        .map(|(p, v)| feed(p, rows("2024-01-01", 50, v)))
        .collect();
    for id in &ids {
        assert_eq!(api.wait_end(id, &logs)["statusCode"], "SUCCESS");
    }
    for f in feeds {
        f.join().unwrap();
    }
    let appended = c.segments("appends");
    assert_eq!(appended.len(), 2, "{appended:?}");
    assert_eq!(appended[0].id.version, appended[1].id.version);
    assert_ne!(appended[0].id.partition, appended[1].id.partition);
    assert_eq!(appended.iter().map(|d| d.num_rows).sum::<u64>(), 100);

    // A task asking for a category no worker has stays pending, with free slots.
    let mut picky = json_task("picky", &[&c.sandbox.path("high.json")], None);
    picky["context"] = json!({"category": "gpu"});
    let picky_id = api.submit(&picky);
    api.wait(&picky_id, Duration::from_secs(10), &logs, |s| {
        s["runnerStatusCode"] == "PENDING"
    });
    // Four scheduling passes (one each 250 ms) go by: none may assign it.
    std::thread::sleep(Duration::from_secs(1));
    let pending = api.get_json("/druid/indexer/v1/pendingTasks");
    assert_eq!(pending[0]["id"], picky_id.as_str());
    assert_eq!(api.status(&picky_id)["runnerStatusCode"], "PENDING");
}

#[test]
fn a_parallel_task_runs_sub_tasks_at_once_and_publishes_all_or_nothing() {
    let grove = Started::new(&["--task-slots", "4"]);
    let (sandbox, base) = (&grove.sandbox, grove.base.clone());
    let api = TaskApi::new(base.clone());
    let log_path = sandbox.path("start.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Three sub-tasks, each blocked on a pipe of its own: all run at once.
    let pipes: Vec<_> = (0..3)
        .map(|i| fifo(sandbox.path(&format!("part-{i}.pipe"))))
        .collect();
    let paths: Vec<&Path> = pipes.iter().map(|p| p.as_path()).collect();
    let mut task = json_task("parallel", &paths, None);
    task["spec"]["tuningConfig"]["maxNumConcurrentSubTasks"] = json!(3);
    task["spec"]["tuningConfig"]["awaitSegmentAvailabilityTimeoutMillis"] = json!(60_000);
    let id = api.submit(&task);
    let began = Instant::now();
    let subs = loop {
        let running = api.get_json("/druid/indexer/v1/runningTasks?type=single_phase_sub_task");
        let subs: Vec<String> = running
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["runnerStatusCode"] == "RUNNING")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        if subs.len() == 3 {
            break subs;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "sub-tasks: {running}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for sub in &subs {
        let payload = api.get_json(&format!("/druid/indexer/v1/task/{sub}"))["payload"].clone();
        assert_eq!(payload["groupId"], id.as_str());
        assert_eq!(payload["supervisorTaskId"], id.as_str());
    }

    // Two parts in: their sub-tasks succeed, and still nothing is published.
    let days = ["2024-01-01", "2024-01-02", "2024-01-03"];
    let counts = [70usize, 50, 30];
    let feeds: Vec<_> = (0..2)
        .map(|i| {
            feed(
                &pipes[i],
                [rows(days[i], counts[i], 1), rows("2024-01-04", 10, 2)].concat(),
            )
        })
        .collect();
    for f in feeds {
        f.join().unwrap();
    }
    let began = Instant::now();
    while api
        .get_json("/druid/indexer/v1/completeTasks?type=single_phase_sub_task")
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(began.elapsed() < Duration::from_secs(30), "{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let none = sql(
        &base,
        "SELECT COUNT(*) AS n FROM sys.segments WHERE datasource = 'parallel'",
    );
    assert_eq!(none, vec![json!({"n": 0})]);
    assert_eq!(api.status(&id)["statusCode"], "RUNNING");

    // The last part in: everything appears at once.
    feed(
        &pipes[2],
        [rows(days[2], counts[2], 1), rows("2024-01-04", 10, 2)].concat(),
    )
    .join()
    .unwrap();
    let ended = api.wait_end(&id, &log);
    assert_eq!(ended["statusCode"], "SUCCESS", "{ended}\n{}", log());
    let report = api.report(&id);
    assert_eq!(report["rowStats"]["buildSegments"]["processed"], 180);
    assert_eq!(report["segmentAvailabilityConfirmed"], true);
    let totals = sql(&base, "SELECT COUNT(*) AS n, SUM(v) AS v FROM parallel");
    assert_eq!(totals, vec![json!({"n": 180, "v": 150 + 30 * 2})]);
    // The day all three wrote is one chunk of three core partitions, 0 to 2.
    let shared = sql(
        &base,
        "SELECT partition_num, num_rows FROM sys.segments \
         WHERE datasource = 'parallel' AND \"start\" LIKE '2024-01-04%' ORDER BY 1",
    );
    assert_eq!(
        shared
            .iter()
            .map(|r| r["partition_num"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{shared:?}"
    );
    let subs_done = sql(
        &base,
        &format!(
            "SELECT COUNT(*) AS n FROM sys.tasks WHERE group_id = '{id}' \
             AND type = 'single_phase_sub_task' AND status = 'SUCCESS'"
        ),
    );
    assert_eq!(subs_done, vec![json!({"n": 3})]);

    // One sub-task failing fails the whole task: nothing of the others is published.
    std::fs::write(sandbox.path("good.json"), rows("2024-02-01", 40, 1)).unwrap();
    std::fs::write(
        sandbox.path("bad.json"),
        "{\"ts\": \"2024-02-02T00:00:00Z\", \"k\": \"a\", \"v\": 1}\nnot json\n",
    )
    .unwrap();
    let mut failing = json_task(
        "parallel_failing",
        &[&sandbox.path("good.json"), &sandbox.path("bad.json")],
        None,
    );
    failing["spec"]["tuningConfig"]["maxNumConcurrentSubTasks"] = json!(2);
    let failing_id = api.submit(&failing);
    let ended = api.wait_end(&failing_id, &log);
    assert_eq!(ended["statusCode"], "FAILED");
    let message = ended["errorMsg"].as_str().unwrap();
    assert!(
        message.contains("sub-task") && message.contains("bad.json"),
        "{message}"
    );
    let none = sql(
        &base,
        "SELECT COUNT(*) AS n FROM sys.segments WHERE datasource = 'parallel_failing'",
    );
    assert_eq!(none, vec![json!({"n": 0})]);
}
