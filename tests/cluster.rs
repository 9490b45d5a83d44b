//! The cluster end to end: a real etcd and real `grove` processes on loopback.
//! Each test is a scenario of `docs/operations.md`'s table; expected values are
//! computed here from the rows the test writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use grove_e2e::Sandbox;
use grove_e2e::cluster::{TestCluster, internal_auth};
use serde_json::Value;

const DAY: i64 = 86_400_000;

/// Writes `rows_per_day` rows for each day start in `days` (each row's `value` is
/// `value`), and a spec for `datasource`; returns the spec's path.
fn write_data(
    sandbox: &Sandbox,
    name: &str,
    datasource: &str,
    days: &[i64],
    rows_per_day: i64,
    value: i64,
    max_rows_per_segment: i64,
) -> String {
    let dir = sandbox.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("ts,country,value\n");
    for day in days {
        for i in 0..rows_per_day {
            let country = ["nl", "de", "jp"][i as usize % 3];
            csv.push_str(&format!("{},{country},{value}\n", day + i * 1000));
        }
    }
    std::fs::write(dir.join("data.csv"), csv).unwrap();
    let spec = serde_json::json!({
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": datasource,
                "timestampSpec": { "column": "ts", "format": "millis" },
                "dimensionsSpec": { "dimensions": ["country", { "type": "long", "name": "value" }] },
                "granularitySpec": { "segmentGranularity": "day", "queryGranularity": "none", "rollup": false }
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": { "type": "local", "baseDir": ".", "filter": "data.csv" },
                "inputFormat": { "type": "csv", "findColumnsFromHeader": true }
            },
            "tuningConfig": {
                "type": "index_parallel",
                "partitionsSpec": { "type": "dynamic", "maxRowsPerSegment": max_rows_per_segment }
            }
        }
    });
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path.display().to_string()
}

/// Writes and ingests `datasource` (see `write_data`), then waits up to `timeout`
/// seconds, described as `what`, until broker-1 counts every row.
pub(crate) fn ingest_and_wait(
    c: &TestCluster,
    datasource: &str,
    days: &[i64],
    rows_per_day: i64,
    value: i64,
    timeout: u64,
    what: &str,
) {
    let spec = write_data(
        &c.sandbox,
        datasource,
        datasource,
        days,
        rows_per_day,
        value,
        1_000_000,
    );
    c.ingest(&spec);
    let rows = days.len() as i64 * rows_per_day;
    c.wait_until(Duration::from_secs(timeout), what, || {
        count(c, "broker-1", datasource) == Some(rows)
    });
}

pub(crate) fn count(cluster: &TestCluster, broker: &str, datasource: &str) -> Option<i64> {
    let rows = cluster
        .sql(
            broker,
            &format!("SELECT COUNT(*) AS n, SUM(value) AS s FROM {datasource}"),
        )
        .ok()?;
    rows.first()?.get("n")?.as_i64()
}

fn sum(cluster: &TestCluster, broker: &str, datasource: &str) -> Result<Option<i64>, String> {
    let rows = cluster.sql(broker, &format!("SELECT SUM(value) AS s FROM {datasource}"))?;
    Ok(rows
        .first()
        .and_then(|r| r.get("s"))
        .and_then(Value::as_i64))
}

/// The physical plan `EXPLAIN` prints for the last statement of `script`, in one
/// request after the statements before it (`SET ...;`).
fn physical_plan(cluster: &TestCluster, broker: &str, script: &str) -> String {
    let explained = match script.rsplit_once(';') {
        Some((setup, query)) => format!("{setup}; EXPLAIN {query}"),
        None => format!("EXPLAIN {script}"),
    };
    let explain = cluster.sql(broker, &explained).unwrap();
    explain
        .iter()
        .find(|r| r["plan_type"] == "physical_plan")
        .and_then(|r| r["plan"].as_str())
        .expect("a physical plan")
        .to_string()
}

fn tier_of(node: &str) -> &str {
    if node.starts_with("hot") {
        "hot"
    } else {
        "_default_tier"
    }
}

/// Day starts in June 2024.
pub(crate) fn june(days: std::ops::Range<i64>) -> Vec<i64> {
    days.map(|d| 1_717_200_000_000 + d * DAY).collect()
}

#[test]
fn tiered_replicants_place_exactly_the_replicas_the_rules_ask_for() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    for name in ["hot-1", "hot-2", "hot-3", "cold-1", "cold-2"] {
        c.historical(name, tier_of(name), &[]);
    }
    c.broker("broker-1");
    c.set_rules(
        "coordinator-1",
        "clicks",
        r#"[{"type":"loadForever","tieredReplicants":{"hot":2,"_default_tier":1}}]"#,
    );
    let days = june(0..4);
    let spec = write_data(&c.sandbox, "clicks", "clicks", &days, 500, 3, 1_000_000);
    c.ingest(&spec);
    let segments = c.segments("clicks");
    assert_eq!(segments.len(), 4);
    c.wait_until(
        Duration::from_secs(30),
        "every segment has 3 replicas",
        || {
            let served = c.served();
            segments
                .iter()
                .all(|d| served.get(&d.id.to_string()).is_some_and(|n| n.len() == 3))
        },
    );
    // Settled: give the coordinator a few more runs to prove it stops there.
    std::thread::sleep(Duration::from_secs(3));
    let served = c.served();
    for d in &segments {
        let nodes = &served[&d.id.to_string()];
        let hot = nodes.iter().filter(|n| tier_of(n) == "hot").count();
        let cold = nodes
            .iter()
            .filter(|n| tier_of(n) == "_default_tier")
            .count();
        assert_eq!((hot, cold), (2, 1), "{}: {nodes:?}", d.id);
    }
    assert_eq!(count(&c, "broker-1", "clicks"), Some(4 * 500));
    // The grouped query's Partial aggregate runs on the historicals: only partial
    // rows cross the network, and the broker keeps the Final aggregate.
    let grouped = "SELECT country, SUM(value) AS s FROM clicks GROUP BY 1";
    let physical = physical_plan(&c, "broker-1", grouped);
    let (broker_side, remote) = physical.split_once("remote=[").expect(&physical);
    assert!(remote.contains("AggregateExec: mode=Partial"), "{physical}");
    assert!(!broker_side.contains("mode=Partial"), "{physical}");
    assert!(
        broker_side.contains("mode=FinalPartitioned") || broker_side.contains("mode=Final"),
        "{physical}"
    );
    // Measured: the broker receives partial rows (at most 3 countries per historical),
    // never the 2000 raw rows.
    let analyzed = c
        .sql(
            "broker-1",
            "EXPLAIN ANALYZE SELECT country, SUM(value) AS s FROM clicks GROUP BY 1",
        )
        .unwrap();
    let text = analyzed[0]["plan"].as_str().unwrap().to_string();
    let received: usize = text
        .split("rows_received=")
        .nth(1)
        .and_then(|rest| rest.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect(&text);
    assert!(
        (1..=5 * 3).contains(&received),
        "{received} rows received\n{text}"
    );
    // The same query again is answered from the broker's per-segment cache: no
    // fragment is sent. A query may turn the cache off, or leave it as it is.
    let analyze = "EXPLAIN ANALYZE SELECT country, SUM(value) AS s FROM clicks GROUP BY 1";
    let analyzed = |context: Value| {
        let rows = c.sql_in("broker-1", analyze, context).unwrap();
        rows[0]["plan"].as_str().unwrap().to_string()
    };
    let text = analyzed(Value::Null);
    assert!(text.contains("segments_from_cache=4"), "{text}");
    assert!(text.contains("fragments=0"), "{text}");
    let text = analyzed(serde_json::json!({ "useCache": false }));
    assert!(!text.contains("segments_from_cache=4"), "{text}");
    assert!(!text.contains("fragments=0"), "{text}");
    let filtered = "EXPLAIN ANALYZE SELECT country, SUM(value) AS s FROM clicks \
                    WHERE country <> 'none' GROUP BY 1";
    let no_populate = serde_json::json!({ "populateCache": false });
    for _ in 0..2 {
        let rows = c.sql_in("broker-1", filtered, no_populate.clone()).unwrap();
        let text = rows[0]["plan"].as_str().unwrap();
        assert!(!text.contains("segments_from_cache=4"), "{text}");
    }
    let refused = c.sql_in("broker-1", analyze, serde_json::json!({ "useCache": "no" }));
    assert!(refused.unwrap_err().contains("useCache"));
    let no_cache = c.sql(
        "broker-1",
        &format!("SET grove.use_cache = false; {analyze}"),
    );
    let text = no_cache.unwrap()[0]["plan"].as_str().unwrap().to_string();
    assert!(!text.contains("fragments=0"), "{text}");
    let sums = c
        .sql(
            "broker-1",
            "SELECT country, SUM(value) AS s FROM clicks GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    // 4 days x 500 rows, countries in turn (500 * 4 / 3 each, rounded by position), value 3.
    let mut expected: std::collections::BTreeMap<&str, i64> = Default::default();
    for _day in 0..4 {
        for i in 0..500 {
            *expected.entry(["nl", "de", "jp"][i % 3]).or_default() += 3;
        }
    }
    // With one partition DataFusion combines the halves into a Single aggregate; the
    // broker splits it again and the answer is the same.
    let one_partition = "SET datafusion.execution.target_partitions = 1";
    let single = physical_plan(&c, "broker-1", &format!("{one_partition}; {grouped}"));
    let (broker_side, remote) = single.split_once("remote=[").expect(&single);
    assert!(remote.contains("AggregateExec: mode=Partial"), "{single}");
    assert!(
        broker_side.contains("mode=Final")
            && !broker_side.contains("mode=Single")
            && !broker_side.contains("mode=FinalPartitioned"),
        "{single}"
    );
    let again = c
        .sql(
            "broker-1",
            &format!(
                "{one_partition}; SELECT country, SUM(value) AS s FROM clicks GROUP BY 1 ORDER BY 1"
            ),
        )
        .unwrap();
    assert_eq!(again, sums);
    // A top-N runs first on the historicals, each sending at most its best 3 rows.
    let top = "SELECT __time, country FROM clicks ORDER BY __time DESC LIMIT 3";
    let plan = physical_plan(&c, "broker-1", top);
    let (broker_side, remote) = plan.split_once("remote=[").expect(&plan);
    assert!(remote.contains("SortExec: TopK(fetch=3)"), "{plan}");
    assert!(broker_side.contains("fetch=3"), "{plan}");
    let newest = c.sql("broker-1", top).unwrap();
    let last_day = june(3..4)[0];
    let expected_times: Vec<i64> = (497..500).rev().map(|i| last_day + i * 1000).collect();
    let got_times: Vec<String> = newest
        .iter()
        .map(|r| r["__time"].as_str().unwrap().to_string())
        .collect();
    let expected_text: Vec<String> = expected_times
        .iter()
        .map(|ms| {
            let secs = ms / 1000;
            let (days, rest) = (secs / 86_400, secs % 86_400);
            // 2024-06-01 is day 19875 since the epoch.
            format!(
                "2024-06-{:02}T{:02}:{:02}:{:02}",
                days - 19_875 + 1,
                rest / 3600,
                rest % 3600 / 60,
                rest % 60
            )
        })
        .collect();
    for (got, want) in got_times.iter().zip(&expected_text) {
        assert!(got.starts_with(want), "{got} vs {want}");
    }
    assert_eq!(got_times.len(), 3);
    let got: std::collections::BTreeMap<&str, i64> = sums
        .iter()
        .map(|r| (r["country"].as_str().unwrap(), r["s"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    let rows = c
        .sql(
            "broker-1",
            "SELECT num_replicas, is_available FROM sys.segments",
        )
        .unwrap();
    assert!(
        rows.iter()
            .all(|r| r["num_replicas"] == 3 && r["is_available"] == 1),
        "{rows:?}"
    );
    let servers = c
        .sql(
            "broker-1",
            "SELECT server, server_type, tier, curr_size FROM sys.servers WHERE server_type = 'historical'",
        )
        .unwrap();
    assert_eq!(servers.len(), 5);
    let total: u64 = segments.iter().map(|d| d.size * 3).sum();
    let reported: u64 = servers
        .iter()
        .map(|s| s["curr_size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        reported, total,
        "sys.servers sizes add up to the replicas served"
    );
}

#[test]
fn period_rules_drop_old_data_from_historicals_and_keep_recent_data() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    let today = chrono_day_start_now();
    let old = june(0..2);
    let recent = vec![today - 5 * DAY, today];
    let mut days = old.clone();
    days.extend(&recent);
    let spec = write_data(&c.sandbox, "visits", "visits", &days, 100, 1, 1_000_000);
    c.ingest(&spec);
    c.set_rules(
        "coordinator-1",
        "_default",
        r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#,
    );
    c.wait_until(Duration::from_secs(30), "all 4 days are served", || {
        count(&c, "broker-1", "visits") == Some(400)
    });
    // Keep 30 days; drop the rest (Druid's loadByPeriod + dropForever).
    c.set_rules(
        "coordinator-1",
        "visits",
        r#"[{"type":"loadByPeriod","period":"P30D","includeFuture":true,"tieredReplicants":{"_default_tier":1}},
            {"type":"dropForever"}]"#,
    );
    c.wait_until(
        Duration::from_secs(30),
        "only the recent days are served",
        || count(&c, "broker-1", "visits") == Some(200),
    );
    let starts: BTreeSet<i64> = c
        .segments("visits")
        .iter()
        .filter(|d| c.served().contains_key(&d.id.to_string()))
        .map(|d| d.id.interval.start)
        .collect();
    assert_eq!(starts, recent.iter().copied().collect());
    // dropByPeriod drops the most recent day instead (Druid's meaning: data inside
    // the period), and dropBeforeByPeriod everything older than it.
    c.set_rules(
        "coordinator-1",
        "visits",
        r#"[{"type":"dropByPeriod","period":"P2D","includeFuture":true},
            {"type":"dropBeforeByPeriod","period":"P3000D"},
            {"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#,
    );
    c.wait_until(
        Duration::from_secs(30),
        "the old days are back and today is gone",
        || count(&c, "broker-1", "visits") == Some(300),
    );
    let rows = c
        .sql(
            "broker-1",
            "SELECT COUNT(*) AS n FROM visits WHERE __time >= CURRENT_DATE",
        )
        .unwrap();
    assert_eq!(rows[0]["n"], 0, "today's segment is dropped");
}

fn chrono_day_start_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % DAY
}

#[test]
fn a_killed_historicals_segments_come_back_elsewhere_after_the_lifetime_and_not_before() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &["--replicant-lifetime", "PT8S"]);
    for name in ["h-1", "h-2", "h-3"] {
        c.historical(name, "_default_tier", &[]);
    }
    c.broker("broker-1");
    c.set_rules(
        "coordinator-1",
        "_default",
        r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#,
    );
    let spec = write_data(&c.sandbox, "logs", "logs", &june(0..6), 50, 2, 1_000_000);
    c.ingest(&spec);
    c.wait_until(Duration::from_secs(30), "all 6 segments are served", || {
        c.served().len() == 6
    });
    let served = c.served();
    let victim = served
        .values()
        .next()
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .clone();
    let lost: BTreeSet<String> = served
        .iter()
        .filter(|(_, nodes)| nodes.contains(&victim))
        .map(|(id, _)| id.clone())
        .collect();
    c.kill9(&victim);
    // Its lease (2s) runs out and its segments become unavailable...
    c.wait_until(
        Duration::from_secs(10),
        "the victim's segments are unserved",
        || {
            let served = c.served();
            lost.iter().all(|id| !served.contains_key(id))
        },
    );
    // ...but stay assigned to it, not re-created, for the rest of the lifetime.
    std::thread::sleep(Duration::from_secs(3));
    let served = c.served();
    assert!(
        lost.iter().all(|id| !served.contains_key(id)),
        "re-created too early"
    );
    // After the lifetime they are loaded by the survivors.
    c.wait_until(
        Duration::from_secs(20),
        "the lost segments are served again",
        || {
            let served = c.served();
            lost.iter()
                .all(|id| served.get(id).is_some_and(|n| !n.contains(&victim)))
        },
    );
    assert_eq!(count(&c, "broker-1", "logs"), Some(6 * 50));
}

#[test]
fn a_standby_coordinator_takes_over_when_the_leader_dies() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-a", &[]);
    c.coordinator("coordinator-b", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.historical("h-2", "_default_tier", &[]);
    c.broker("broker-1");
    let leader = |c: &TestCluster| leader_of(c, &["coordinator-a", "coordinator-b"]);
    c.wait_until(Duration::from_secs(15), "a leader is elected", || {
        leader(&c).is_some()
    });
    let first = leader(&c).unwrap();
    let standby = if first == "coordinator-a" {
        "coordinator-b"
    } else {
        "coordinator-a"
    };
    ingest_and_wait(&c, "before", &june(0..2), 10, 1, 20, "the leader assigns");
    c.kill9(&first);
    c.wait_until(Duration::from_secs(10), "the standby leads", || {
        leader(&c).as_deref() == Some(standby)
    });
    // The new leader keeps assigning.
    ingest_and_wait(
        &c,
        "after",
        &june(0..3),
        10,
        1,
        20,
        "new data is assigned by the new leader",
    );
}

#[test]
fn the_broker_answers_from_its_last_view_while_etcd_is_down() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    ingest_and_wait(&c, "pages", &june(0..3), 200, 5, 30, "the data is served");
    let by_country = "SELECT country, COUNT(*) AS n FROM pages GROUP BY 1 ORDER BY 1";
    let before = c.sql("broker-1", by_country);
    c.etcd.kill();
    for _ in 0..5 {
        let during = c.sql("broker-1", by_country);
        assert_eq!(during, before, "the broker keeps answering\n{}", c.logs());
        assert_eq!(sum(&c, "broker-1", "pages").unwrap(), Some(3000));
        std::thread::sleep(Duration::from_secs(1));
    }
    c.etcd.restart();
    let spec = write_data(&c.sandbox, "later", "later", &june(0..1), 7, 1, 1_000_000);
    c.wait_until(
        Duration::from_secs(20),
        "etcd is back for ingestion",
        || c.try_ingest(&spec).ok,
    );
    c.wait_until(
        Duration::from_secs(30),
        "the cluster follows etcd again",
        || count(&c, "broker-1", "later") == Some(7),
    );
}

#[test]
fn a_replacement_becomes_visible_only_once_every_partition_is_loaded() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    c.broker("broker-1");
    let day = june(0..1);
    // v1: one segment of 300 rows, value 1.
    let v1 = write_data(&c.sandbox, "v1", "orders", &day, 300, 1, 1_000_000);
    c.ingest(&v1);
    let old = c.segments("orders");
    assert_eq!(old.len(), 1);
    // v2: the same day in 3 partitions of 100 rows, value 10. The historical gets
    // room for the old segment and one new partition only, so v2 is published but
    // cannot be loaded in full.
    let v2 = write_data(&c.sandbox, "v2", "orders", &day, 300, 10, 100);
    c.ingest(&v2);
    c.set_rules(
        "coordinator-1",
        "orders",
        r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#,
    );
    let all = c.segments("orders");
    let new: Vec<_> = all
        .iter()
        .filter(|d| d.id.version != old[0].id.version)
        .collect();
    assert_eq!(new.len(), 3);
    let biggest = new.iter().map(|d| d.size).max().unwrap();
    let capacity = (old[0].size + biggest + biggest / 2).to_string();
    c.historical("h-1", "_default_tier", &["--capacity", &capacity]);
    c.wait_until(
        Duration::from_secs(30),
        "one new partition is loaded",
        || {
            let served = c.served();
            new.iter()
                .filter(|d| served.contains_key(&d.id.to_string()))
                .count()
                == 1
                && served.contains_key(&old[0].id.to_string())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sum(&c, "broker-1", "orders").unwrap(),
        Some(300),
        "only v1 is visible"
    );
    let rows = c
        .sql(
            "broker-1",
            "SELECT COUNT(*) AS n FROM sys.segments WHERE is_available = 0",
        )
        .unwrap();
    assert_eq!(rows[0]["n"], 2, "two partitions of v2 wait for room");
    // The coordinator says why, and what is queued.
    let url = format!("{}/grove/v1/coordinator", c.http("coordinator-1"));
    let status: Value = ureq::get(&url)
        .header("Authorization", internal_auth())
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let report = &status["report"];
    assert_eq!(status["is_leader"], true);
    assert_eq!(report["unavailable"]["orders"], 2, "{status}");
    let unplaceable = report["unplaceable"].to_string();
    assert!(unplaceable.contains("1 lack room for its"), "{status}");
    let queue = &report["load_queues"]["h-1"];
    assert_eq!(
        queue["segments_to_load"], 0,
        "nothing is queued that does not fit"
    );
    assert_eq!(queue["capacity"].as_u64(), capacity.parse::<u64>().ok());
    // With room, v2 loads in full, replaces v1, and v1 is dropped.
    c.restart("h-1", &["--capacity", "1G"]);
    c.wait_until(Duration::from_secs(30), "v2 is visible", || {
        sum(&c, "broker-1", "orders") == Ok(Some(3000))
    });
    c.wait_until(Duration::from_secs(30), "v1 is dropped", || {
        !c.served().contains_key(&old[0].id.to_string())
    });
    assert_eq!(sum(&c, "broker-1", "orders").unwrap(), Some(3000));
}

#[test]
fn example_configs_start_real_roles() {
    // The config files users copy: each role starts from its own, with the
    // addresses overridden by flags (flags win over the file).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut c = TestCluster::new();
    let coordinator = root.join("coordinator.toml").display().to_string();
    c.start("coordinator", "from-file", &["--config", &coordinator]);
    let status: Value = ureq::get(&format!("{}/status", c.http("from-file")))
        .header("Authorization", internal_auth())
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(
        status["node_id"], "from-file",
        "the flag wins over node_id in the file"
    );
}

#[test]
fn a_restarted_historical_serves_its_cache_and_refetches_a_corrupt_copy() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    ingest_and_wait(
        &c,
        "cached",
        &june(0..2),
        100,
        4,
        30,
        "both days are served",
    );
    let segments = c.segments("cached");
    c.kill9("h-1");
    c.wait_until(Duration::from_secs(10), "its lease runs out", || {
        c.served().is_empty()
    });
    let cache = c.sandbox.path("h-1").join("segment-cache");
    let cached = |d: &grove_cluster::segments::SegmentDescriptor| {
        cache.join(format!("{}.grove", d.id.file_stem()))
    };
    // One copy is corrupted (deep storage still has it); the other's deep-storage
    // file is deleted, so only the local cache can bring it back.
    let corrupt = cached(&segments[0]);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, &bytes).unwrap();
    std::fs::remove_file(c.sandbox.path("deep").join(&segments[1].path)).unwrap();
    c.restart("h-1", &[]);
    c.wait_until(Duration::from_secs(30), "both are served again", || {
        let served = c.served();
        segments
            .iter()
            .all(|d| served.contains_key(&d.id.to_string()))
    });
    let fixed = std::fs::read(&corrupt).unwrap();
    let mut crc = crc32_ieee(&fixed);
    assert_eq!(crc, segments[0].crc32, "the corrupt copy was fetched again");
    crc = crc32_ieee(&std::fs::read(cached(&segments[1])).unwrap());
    assert_eq!(crc, segments[1].crc32);
    assert_eq!(sum(&c, "broker-1", "cached").unwrap(), Some(800));
}

/// CRC-32 (IEEE), as segment descriptors record it.
fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn an_ingestion_killed_before_publishing_leaves_nothing_behind() {
    let c = TestCluster::new();
    let dir = c.sandbox.path("killed");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = write_data(&c.sandbox, "killed", "killed", &june(0..1), 1, 1, 1_000_000);
    // The input is a pipe the test writes part of and never closes: the task is
    // reading when it dies.
    let fifo = dir.join("data.csv");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::Write;
            // Errors are fine here: the reader is killed while this writes.
            let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                return;
            };
            let _ = pipe.write_all(b"ts,country,value\n");
            for i in 0..1000 {
                let _ = writeln!(pipe, "{},nl,1", 1_717_200_000_000i64 + i);
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    let mut ingest = std::process::Command::new(grove_e2e::grove_bin())
        .args(["ingest", &spec, "--etcd", &c.etcd.endpoint()])
        .arg("--data-dir")
        .arg(c.sandbox.path("ingest"))
        .args(["--deep-storage", &c.deep_storage()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    ingest.kill().unwrap();
    ingest.wait().unwrap();
    // Should the task not have opened the pipe, opening it here releases the writer.
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo);
    }
    writer.join().unwrap();
    assert!(c.segments("killed").is_empty(), "nothing is published");
    let keys = c.block_on(c.store().range("/grove/")).unwrap();
    assert!(keys.is_empty(), "no metadata at all: {keys:?}");
    let deep = c.sandbox.path("deep").join("killed");
    let files = std::fs::read_dir(&deep).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 0, "nothing in deep storage");
}

/// The leader's node id, from the coordinators' own `/status`.
fn leader_of(c: &TestCluster, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        let url = format!("{}/status", c.http(name));
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(1)))
                .build(),
        );
        let status: Value = agent
            .get(&url)
            .header("Authorization", internal_auth())
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()?;
        (status["is_leader"] == true).then(|| name.to_string())
    })
}

#[test]
fn a_leader_that_lost_its_lease_stops_acting() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-a", &[]);
    c.wait_until(Duration::from_secs(15), "a leads", || {
        leader_of(&c, &["coordinator-a"]).is_some()
    });
    c.coordinator("coordinator-b", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    // Frozen past its lease: b takes over while a still believes it leads.
    c.processes["coordinator-a"].signal("STOP");
    c.wait_until(Duration::from_secs(15), "b leads", || {
        leader_of(&c, &["coordinator-b"]).is_some()
    });
    c.kill9("coordinator-b");
    c.processes["coordinator-a"].signal("CONT");
    // a wakes up, finds its writes fenced off, and only acts once it wins again.
    ingest_and_wait(
        &c,
        "fenced",
        &june(0..2),
        10,
        1,
        30,
        "a leads again and assigns",
    );
    let log = c.processes["coordinator-a"].log();
    let stepped_down = log.find("stepped down").expect("a stepped down first");
    let led_again = log.rfind("is the leader").unwrap();
    assert!(stepped_down < led_again, "{log}");
}

#[test]
fn rules_set_from_the_command_line_are_what_the_http_api_reads() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    let file = c.sandbox.path("rules.json");
    std::fs::write(
        &file,
        r#"[{"type":"loadByInterval","interval":"2024-01-01/2025-01-01","tieredReplicants":{"hot":1}},{"type":"dropForever"}]"#,
    )
    .unwrap();
    let endpoint = c.etcd.endpoint();
    let set = c.sandbox.grove(
        &[
            "rules",
            "set",
            "sales",
            &file.display().to_string(),
            "--etcd",
            &endpoint,
        ],
        "",
    );
    assert!(set.ok, "{}", set.stderr);
    let url = format!(
        "{}/druid/coordinator/v1/rules/sales",
        c.http("coordinator-1")
    );
    let rules: Value = ureq::get(&url)
        .header("Authorization", internal_auth())
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(rules[0]["type"], "loadByInterval");
    assert_eq!(
        rules[0]["interval"],
        "2024-01-01T00:00:00.000Z/2025-01-01T00:00:00.000Z"
    );
    assert_eq!(rules[1], serde_json::json!({ "type": "dropForever" }));
    let got = c
        .sandbox
        .grove(&["rules", "get", "sales", "--etcd", &endpoint], "");
    let printed: Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(printed, rules);
    // A broken rule is refused with the reason, over HTTP and on the command line.
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    // Without the cluster's credential the coordinator refuses before reading the body.
    let rule = serde_json::json!([{ "type": "dropForever" }]);
    let refused = agent.post(&url).send_json(&rule).unwrap();
    assert_eq!(refused.status(), 401);
    let mut bad = agent
        .post(&url)
        .header("Authorization", internal_auth())
        .send_json(serde_json::json!([{ "type": "loadForever", "tieredReplicants": {}, "x": 1 }]))
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.body_mut().read_json().unwrap();
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("unknown field `x`"),
        "{body}"
    );
    std::fs::write(&file, r#"[{"type":"loadSometimes"}]"#).unwrap();
    let refused = c.sandbox.grove(
        &[
            "rules",
            "set",
            "sales",
            &file.display().to_string(),
            "--etcd",
            &endpoint,
        ],
        "",
    );
    assert!(
        !refused.ok && refused.stderr.contains("loadSometimes"),
        "{}",
        refused.stderr
    );
}

#[test]
fn queries_survive_a_historical_killed_mid_loop_with_two_replicas() {
    let mut c = TestCluster::with_two_historicals(2);
    let spec = write_data(&c.sandbox, "loop", "loop", &june(0..4), 300, 2, 1_000_000);
    c.ingest(&spec);
    // Many small segments, for a large answer in many batches.
    let wide = write_data(&c.sandbox, "wide", "wide", &june(0..8), 160, 2, 20);
    c.ingest(&wide);
    let segments = c.segments("loop");
    c.wait_until(
        Duration::from_secs(30),
        "every segment has 2 replicas",
        || {
            let served = c.served();
            segments
                .iter()
                .all(|d| served.get(&d.id.to_string()).is_some_and(|n| n.len() == 2))
        },
    );
    let query = "SELECT country, COUNT(*) AS n, SUM(value) AS s FROM loop GROUP BY 1 ORDER BY 1";
    let expected = c.sql("broker-1", query).unwrap();
    // Computed here: 4 days x 300 rows, countries in turn, value 2.
    assert_eq!(expected.len(), 3);
    assert!(
        expected.iter().all(|r| r["n"] == 400 && r["s"] == 800),
        "{expected:?}"
    );
    let broker = c.http("broker-1");
    let looping = std::thread::spawn(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        let began = std::time::Instant::now();
        let mut answers = Vec::new();
        while began.elapsed() < Duration::from_secs(8) {
            // A different (always true) index filter each time: no answer comes from
            // the broker's cache, every query asks the historicals.
            let bounded = query.replace(
                "GROUP BY",
                &format!("WHERE country <> 'none-{}' GROUP BY", answers.len()),
            );
            let mut response = agent
                .post(&format!("{broker}/druid/v2/sql"))
                .send_json(serde_json::json!({ "query": bounded }))
                .unwrap();
            let body: Value = response.body_mut().read_json().unwrap();
            answers.push(body);
        }
        answers
    });
    std::thread::sleep(Duration::from_secs(2));
    c.kill9("h-1");
    let answers = looping.join().unwrap();
    assert!(
        answers.len() > 10,
        "the loop ran: {} queries",
        answers.len()
    );
    for answer in &answers {
        assert_eq!(
            answer,
            &Value::Array(expected.clone()),
            "a query failed or differed"
        );
    }

    // h-1 back, then a large answer read one line and paused while h-2 is killed:
    // h-2's fragment had passed rows on, so the broker does not retry it (its rows
    // would count twice) but fails the query: the answer stops short, without its
    // closing empty line.
    c.restart("h-1", &[]);
    let wide_segments = c.segments("wide");
    assert_eq!(wide_segments.len(), 64);
    c.wait_until(Duration::from_secs(30), "h-1 serves again", || {
        let served = c.served();
        wide_segments
            .iter()
            .all(|d| served.get(&d.id.to_string()).is_some_and(|n| n.len() == 2))
    });
    let (first_read, killed) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let broker = c.http("broker-1");
    let streaming = std::thread::spawn(move || {
        // 1280 rows of 200 KB, in batches of 20 rows: 128 MB from each historical,
        // more than the broker holds of an answer.
        let wide = "SELECT country, repeat(country, 100000) AS pad FROM wide";
        let request = serde_json::json!({ "query": wide, "resultFormat": "arrayLines" });
        let mut response = ureq::post(&format!("{broker}/druid/v2/sql"))
            .send_json(request)
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(response.body_mut().as_reader()));
        let mut rows = vec![lines.next().unwrap().unwrap()];
        first_read.0.send(()).unwrap();
        killed.1.recv().unwrap();
        rows.extend(lines.map_while(Result::ok));
        rows
    });
    first_read.1.recv().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    c.kill9("h-2");
    killed.0.send(()).unwrap();
    let rows = streaming.join().unwrap();
    let complete = rows.last().is_some_and(String::is_empty);
    let received = rows.iter().filter(|r| !r.is_empty()).count();
    assert!(
        !complete && received < 1280,
        "h-2 had passed rows on: the answer stops short ({received} rows, complete: {complete})"
    );
    // The next query reads every segment from h-1.
    let count = c.sql("broker-1", "SELECT COUNT(*) AS n FROM wide").unwrap();
    assert_eq!(count, vec![serde_json::json!({ "n": 1280 })]);
}
