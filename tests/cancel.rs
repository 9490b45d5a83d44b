//! A cancel stops a query where it runs, on the historicals too: a query whose scans
//! are slow (a costly expression, summed on each historical over many small segments)
//! is cancelled from each front end in turn, and the historicals' running fragments
//! (`running_fragments` in `/status`) must drop to none, long before the scans could
//! have finished on their own.

use std::process::{Command, Stdio};

use arrow_flight::CancelStatus;
use futures::StreamExt;
use grove_e2e::flight::{cancel, client, runtime, statement, status, ticket};
use grove_e2e::start::{GroveStart, agent, post};
use serde_json::{Value, json};
use tonic::Code;

/// About 25 ms of work per row, each historical's partial sum over a batch of about
/// 24 rows (an hour's segment): minutes for the whole table, a second per batch.
fn slow(tag: &str) -> String {
    format!(
        "SELECT SUM(levenshtein(repeat(user_id, 1000), repeat(city, 1000))) AS d \
         FROM events -- {tag}"
    )
}

fn running_fragments(status: &Value) -> u64 {
    status["historicals"]
        .as_array()
        .expect("the historicals' status")
        .iter()
        .map(|h| {
            h["running_fragments"]
                .as_u64()
                .expect("a count of fragments")
        })
        .sum()
}

#[test]
fn a_cancel_from_any_front_end_stops_the_fragments_on_the_historicals() {
    let g = GroveStart::hourly(4_000);
    let busy = |g: &GroveStart| g.wait_status(|s| running_fragments(s) > 0);
    let idle = |g: &GroveStart| g.wait_status(|s| running_fragments(s) == 0);
    assert!(idle(&g));

    // Druid's SQL API: DELETE /druid/v2/sql/{sqlQueryId}.
    let url = g.url.clone();
    let request = json!({ "query": slow("http"), "context": { "sqlQueryId": "slow-http" } });
    let posted = std::thread::spawn(move || post(&url, &request));
    assert!(busy(&g), "the query never reached the historicals");
    let deleted = agent()
        .delete(&format!("{}/slow-http", g.url))
        .call()
        .expect("DELETE answers");
    assert_eq!(deleted.status().as_u16(), 202);
    assert!(
        idle(&g),
        "the fragments still run after DELETE: {}",
        g.status()
    );
    let (code, _, body) = posted.join().unwrap();
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("Query cancelled"), "{body}");

    // Postgres: psql sends a cancel request on SIGINT.
    let psql = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=datafusion user=grove",
            g.pg_port
        ))
        .args(["-X", "-q", "-A", "-t", "-c", &slow("postgres")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    assert!(busy(&g), "the query never reached the historicals");
    let interrupted = Command::new("kill")
        .args(["-INT", &psql.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert!(
        idle(&g),
        "the fragments still run after a cancel request: {}",
        g.status()
    );
    let out = psql.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );

    // Flight SQL: CancelFlightInfo.
    let runtime = runtime();
    let (mut client, info) = runtime.block_on(async {
        let mut client = client(&g).await;
        let info = client
            .get_flight_info(statement(&slow("flight")))
            .await
            .unwrap();
        (client, info)
    });
    let mut rows = runtime.block_on(client.do_get(ticket(&info))).unwrap();
    let reading = runtime.spawn(async move { rows.next().await });
    assert!(busy(&g), "the query never reached the historicals");
    assert_eq!(
        runtime.block_on(cancel(&mut client, &info)),
        CancelStatus::Cancelled
    );
    assert!(
        idle(&g),
        "the fragments still run after CancelFlightInfo: {}",
        g.status()
    );
    let stopped = runtime.block_on(reading).unwrap().expect("an answer");
    assert_eq!(status(stopped.unwrap_err()).code(), Code::Cancelled);
}
