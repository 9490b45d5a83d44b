//! A historical's Flight port as an outsider sees it: garbage, tickets for segments it
//! does not serve, and fragment tickets forged by hand (the documented ticket format
//! around a plan DataFusion serializes with its own codec) that ask the node to read
//! its local files or to write new ones. Every one is refused before anything runs,
//! and the node goes on serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use grove_e2e::cluster::TestCluster;

use crate::cluster::{count, ingest_and_wait, june};

/// A fragment ticket, version 1, as `docs/architecture.md` describes it.
fn ticket(segments: &[&str], plan: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({ "query_id": "forged", "segments": segments }).to_string();
    let mut ticket = b"GROVEFRG\x01".to_vec();
    ticket.extend_from_slice(&(header.len() as u32).to_le_bytes());
    ticket.extend_from_slice(header.as_bytes());
    ticket.extend_from_slice(plan);
    ticket
}

/// The Flight address of the cluster's (first) historical, once it has registered.
fn historical_flight(c: &TestCluster) -> String {
    let registered = || {
        let nodes = c.block_on(grove_cluster::nodes::live(c.store())).ok()?;
        nodes.iter().find_map(|n| n.flight_address.clone())
    };
    c.wait_until(
        Duration::from_secs(10),
        "the historical registers its Flight address",
        || registered().is_some(),
    );
    registered().expect("registered")
}

/// Sends each ticket to `flight`, with the `Authorization` header `auth` if any; the
/// status each is refused with (labelled as given). A ticket that is accepted fails
/// the test.
async fn refusals(
    flight: &str,
    auth: Option<&str>,
    tickets: Vec<(String, Vec<u8>)>,
) -> Vec<(String, tonic::Status)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = arrow_flight::FlightClient::new(channel);
    if let Some(auth) = auth {
        client.add_header("authorization", auth).unwrap();
    }
    let mut statuses = Vec::new();
    for (what, bytes) in tickets {
        match client.do_get(arrow_flight::Ticket::new(bytes)).await {
            Err(arrow_flight::error::FlightError::Tonic(status)) => statuses.push((what, *status)),
            Err(other) => panic!("{what}: {other:?}"),
            Ok(_) => panic!("{what} was accepted"),
        }
    }
    statuses
}

#[test]
fn a_historical_answers_fragment_tickets_on_its_flight_address() {
    let mut c = TestCluster::new();
    c.historical("h-1", "_default_tier", &[]);
    let flight = historical_flight(&c);
    let unserved = "t_1970-01-01T00:00:00.000Z_1970-01-02T00:00:00.000Z_v1_0";
    // Without the cluster's credential, or with a wrong one, nothing is read.
    let forged = "Basic Z3JvdmVfaW50ZXJuYWw6bm90IHRoZSBzZWNyZXQgYXQgYWxs";
    for auth in [None, Some(forged)] {
        let statuses = c.block_on(refusals(
            &flight,
            auth,
            vec![("a ticket".into(), ticket(&[unserved], b""))],
        ));
        assert_eq!(
            statuses[0].1.code(),
            tonic::Code::Unauthenticated,
            "{auth:?}"
        );
    }
    let auth = grove_e2e::cluster::internal_auth();
    let statuses = c.block_on(refusals(
        &flight,
        Some(&auth),
        vec![
            ("garbage".into(), b"not a ticket".to_vec()),
            ("an unserved segment".into(), ticket(&[unserved], b"")),
        ],
    ));
    assert_eq!(statuses[0].1.code(), tonic::Code::InvalidArgument);
    assert_eq!(statuses[1].1.code(), tonic::Code::NotFound);
    let missing = statuses[1]
        .1
        .metadata()
        .get("grove-missing-segments")
        .unwrap();
    assert!(missing.to_str().unwrap().contains(unserved), "{missing:?}");
}

/// Local files a historical's user can read: the same secret as CSV, JSON and
/// Parquet (written here by DataFusion from the CSV), registered in `ctx` as
/// `secret_csv`, `secret_json` and `secret_parquet`.
async fn secrets(dir: &Path, ctx: &SessionContext) {
    std::fs::create_dir_all(dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(path("secret.csv"), "user,password\nroot,hunter2\n").unwrap();
    std::fs::write(
        path("secret.json"),
        "{\"user\":\"root\",\"password\":\"hunter2\"}\n",
    )
    .unwrap();
    ctx.register_csv("secret_csv", &path("secret.csv"), CsvReadOptions::new())
        .await
        .unwrap();
    let parquet = path("secret.parquet");
    ctx.sql(&format!("COPY secret_csv TO '{parquet}' STORED AS PARQUET"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    ctx.register_json(
        "secret_json",
        &path("secret.json"),
        JsonReadOptions::default(),
    )
    .await
    .unwrap();
    ctx.register_parquet("secret_parquet", &parquet, ParquetReadOptions::default())
        .await
        .unwrap();
}

/// The physical plan of `sql` in `ctx`, serialized by DataFusion's own codec.
async fn serialized(ctx: &SessionContext, sql: &str) -> Vec<u8> {
    let plan: Arc<dyn ExecutionPlan> = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    datafusion_proto::bytes::physical_plan_to_bytes(plan)
        .expect("an encodable plan")
        .to_vec()
}

#[test]
fn forged_fragments_that_read_or_write_files_are_refused_and_the_historical_keeps_serving() {
    let mut c = TestCluster::new();
    c.coordinator("coordinator-1", &[]);
    c.historical("h-1", "_default_tier", &[]);
    c.broker("broker-1");
    c.set_rules(
        "coordinator-1",
        "_default",
        r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#,
    );
    ingest_and_wait(
        &c,
        "events",
        &june(0..2),
        300,
        1,
        60,
        "broker-1 counts every row",
    );
    let flight = historical_flight(&c);
    let secrets_dir = c.sandbox.path("secrets");
    let planted = c.sandbox.path("planted");
    std::fs::create_dir_all(&planted).unwrap();

    let statuses = c.block_on(async {
        let ctx = SessionContext::new();
        secrets(&secrets_dir, &ctx).await;
        let mut forged = Vec::new();
        for format in ["csv", "json", "parquet"] {
            let scan = format!("SELECT * FROM secret_{format}");
            let sink = format!(
                "COPY (SELECT 'planted' AS x) TO '{}' STORED AS {format}",
                planted.join(format!("file.{format}")).display()
            );
            forged.push((format!("a {format} file scan"), scan));
            forged.push((format!("a {format} file sink"), sink));
        }
        let above = "SELECT COUNT(*) FROM secret_csv".to_string();
        forged.push(("an aggregate over a csv file scan".into(), above));
        let mut tickets = Vec::new();
        for (what, sql) in forged {
            // As the attack was first seen: a ticket that lists no segments.
            tickets.push((what, ticket(&[], &serialized(&ctx, &sql).await)));
        }
        // Even with the cluster's credential (a hostile node, or a leaked secret):
        // a plan that reads or writes files is refused.
        let auth = grove_e2e::cluster::internal_auth();
        refusals(&flight, Some(&auth), tickets).await
    });
    assert_eq!(statuses.len(), 7);
    for (what, status) in &statuses {
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status}"
        );
        let operator = if what.contains("sink") {
            "DataSinkExec"
        } else {
            "DataSourceExec"
        };
        assert!(
            status.message().contains(operator),
            "{what} must be refused naming {operator}: {status}"
        );
    }
    let written: Vec<_> = std::fs::read_dir(&planted).unwrap().collect();
    assert!(written.is_empty(), "files were planted: {written:?}");

    // The historical is still up and serving its segments.
    c.wait_until(
        Duration::from_secs(10),
        "broker-1 counts every row after the forged tickets",
        || count(&c, "broker-1", "events") == Some(600),
    );
}
