//! Fragments end to end: encoded by a broker, sent over Flight or handed over in
//! process, admitted and run by a historical.

use std::collections::HashMap;

use datafusion::arrow::array::{
    AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::segments::SegmentDescriptor;
use grove_segment::SegmentId;
use grove_segment::format::{ColumnRole, TIME_COLUMN, write_segment};

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use grove_segment::Interval;
use grove_segment::format::Segment;
use grove_segment::scan::SegmentScanExec;

use super::codec::{GroveCodec, MissingSegments, SegmentSource};
use crate::catalog::{SegmentCache, datasource};
use crate::table::DatasourceTable;

#[derive(Debug, Default)]
struct Served(HashMap<String, Arc<Segment>>);

impl SegmentSource for Served {
    fn segment(&self, id: &str) -> Option<Vec<Arc<Segment>>> {
        self.0.get(id).map(|s| vec![s.clone()])
    }
}

/// Three one-day segments of 1000 rows, in `deep`, with their descriptors.
fn segments(deep: &std::path::Path) -> Vec<SegmentDescriptor> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            TIME_COLUMN,
            DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Millisecond,
                Some("UTC".into()),
            ),
            false,
        ),
        Field::new("k", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    (0..3i64)
        .map(|day| {
            let id = SegmentId {
                datasource: "t".into(),
                interval: Interval::new(day * 86_400_000, (day + 1) * 86_400_000).unwrap(),
                version: "v1".into(),
                partition: 0,
            };
            let times = (0..1000).map(|i| day * 86_400_000 + i * 60_000);
            let keys = (0..1000).map(|i| ["a", "b", "c", "d"][(i + day as usize) % 4]);
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(
                        TimestampMillisecondArray::from_iter_values(times).with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from_iter_values(keys)),
                    Arc::new(Int64Array::from_iter_values(
                        (0..1000).map(|i| i * (day + 1)),
                    )),
                ],
            )
            .unwrap();
            let path = format!("t/{day}.grove");
            std::fs::create_dir_all(deep.join("t")).unwrap();
            let roles = [ColumnRole::Time, ColumnRole::Dimension, ColumnRole::Metric];
            let written = write_segment(&deep.join(&path), &id, &batch, &roles).unwrap();
            let segment = Segment::open(&deep.join(&path)).unwrap();
            SegmentDescriptor {
                id,
                core_partitions: 1,
                size: written.size,
                num_rows: written.num_rows,
                crc32: written.crc32,
                path,
                columns: SegmentDescriptor::columns_of(&segment),
                created: String::new(),
                used: true,
                commit: None,
            }
        })
        .collect()
}

/// `descriptors` as a broker's scan sees them, segment `i` on `replicas(i)`.
fn remote_segments(
    descriptors: &[SegmentDescriptor],
    replicas: impl Fn(usize) -> Vec<crate::metadata::Replica>,
) -> Vec<super::scan::RemoteSegment> {
    descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| super::scan::RemoteSegment {
            id: d.id.to_string(),
            interval: d.id.interval,
            rows: d.num_rows as usize,
            columns: d.columns.to_vec(),
            intervals: vec![d.id.interval],
            replicas: replicas(i),
            realtime: false,
        })
        .collect()
}

/// A replica on `node`, taking fragments at `address`.
fn replica(node: &str, priority: i32, address: &str) -> crate::metadata::Replica {
    crate::metadata::Replica {
        node: node.into(),
        tier: "t".into(),
        priority,
        flight_address: Some(address.into()),
    }
}

/// A source serving `descriptors`, opened through `cache`.
async fn serving(
    cache: &SegmentCache,
    descriptors: &[SegmentDescriptor],
) -> Arc<dyn SegmentSource> {
    let mut served = Served::default();
    for d in descriptors {
        served
            .0
            .insert(d.id.to_string(), cache.get(d).await.unwrap());
    }
    Arc::new(served)
}

/// The three segments, their cache, and a session with them as table `t`.
fn fixture(dir: &std::path::Path) -> (Vec<SegmentDescriptor>, Arc<SegmentCache>, SessionContext) {
    let descriptors = segments(dir);
    let deep = DeepStorage::local(dir).unwrap();
    let cache = Arc::new(SegmentCache::new(deep));
    let ctx = SessionContext::new();
    register(&ctx, &descriptors, &cache);
    (descriptors, cache, ctx)
}

fn register(ctx: &SessionContext, descriptors: &[SegmentDescriptor], cache: &Arc<SegmentCache>) {
    let table = datasource("t".into(), descriptors.to_vec(), |_| true).unwrap();
    let table = DatasourceTable::new(Arc::new(table), cache.clone());
    ctx.register_table("t", Arc::new(table)).unwrap();
}

#[tokio::test]
async fn a_partial_aggregate_over_segments_round_trips_and_names_missing_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    let plan = ctx
        .sql(
            "SELECT k, COUNT(*) AS c, SUM(n) AS s FROM t \
             WHERE __time >= TIMESTAMP '1970-01-01T12:00:00Z' AND k IN ('a', 'b') \
             GROUP BY k ORDER BY k",
        )
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let codec = GroveCodec::new(serving(&cache, &descriptors).await);
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &codec).unwrap();
    let task = ctx.task_ctx();
    let decoded = physical_plan_from_bytes_with_extension_codec(&bytes, &task, &codec).unwrap();
    let expected = pretty_format_batches(&collect(plan, task.clone()).await.unwrap())
        .unwrap()
        .to_string();
    let got = pretty_format_batches(&collect(decoded, task.clone()).await.unwrap())
        .unwrap()
        .to_string();
    assert_eq!(got, expected);
    // Computed here: day 0 from 12:00 (rows 720..1000), days 1 and 2 whole.
    let (mut count_a, mut sum_a) = (0i64, 0i64);
    for day in 0..3i64 {
        let first = if day == 0 { 720 } else { 0 };
        for i in first..1000i64 {
            if (i + day) % 4 == 0 {
                count_a += 1;
                sum_a += i * (day + 1);
            }
        }
    }
    assert!(
        got.contains(&format!("| a | {count_a} | {sum_a} |")),
        "{got}"
    );

    // A decoder without one of the segments names it.
    let partial = serving(&cache, &descriptors[1..]).await;
    let err =
        physical_plan_from_bytes_with_extension_codec(&bytes, &task, &GroveCodec::new(partial))
            .unwrap_err();
    let missing = MissingSegments::find(&err).expect("a MissingSegments error");
    assert_eq!(missing.0, vec![descriptors[0].id.to_string()]);

    // Garbage is an error, never a panic.
    let err = physical_plan_from_bytes_with_extension_codec(b"\x08\xff\x01garbage", &task, &codec);
    assert!(err.is_err());
    let err = codec.try_decode(
        b"{\"version\":99}",
        &[],
        &task,
        &datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {},
    );
    assert!(err.is_err());
}

/// The cluster secret of the tests' fragment services and clients.
fn secret() -> crate::auth::ClusterSecret {
    crate::auth::ClusterSecret::new("the tests' cluster secret").unwrap()
}

/// Runs `service` on a loopback port until the test ends; its address.
async fn on_loopback(service: super::fragment::FragmentService) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(super::fragment::serve(
        listener,
        service,
        secret(),
        std::future::pending(),
    ));
    addr
}

/// A Flight client connected to `addr`, without the cluster secret.
async fn anonymous_flight_client(addr: std::net::SocketAddr) -> arrow_flight::FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    arrow_flight::FlightClient::new(channel)
}

/// A Flight client connected to `addr` that carries the cluster secret.
async fn flight_client(addr: std::net::SocketAddr) -> arrow_flight::FlightClient {
    let mut client = anonymous_flight_client(addr).await;
    client
        .add_header("authorization", secret().authorization())
        .unwrap();
    client
}

/// The physical plan of `sql` in `ctx`.
async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// Every batch the Flight server behind `client` answers to `ticket`.
async fn fetched(
    client: &mut arrow_flight::FlightClient,
    ticket: &super::ticket::Ticket,
) -> Vec<RecordBatch> {
    use futures::TryStreamExt;
    client
        .do_get(arrow_flight::Ticket::new(ticket.encode()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The gRPC status of a call that must fail.
fn refused<T>(result: Result<T, arrow_flight::error::FlightError>) -> tonic::Status {
    match result {
        Ok(_) => panic!("the call must be refused"),
        Err(arrow_flight::error::FlightError::Tonic(status)) => *status,
        Err(other) => panic!("not a gRPC status: {other:?}"),
    }
}

#[tokio::test]
async fn a_historical_runs_a_fragment_ticket_over_flight() {
    use super::ticket::{MISSING_SEGMENTS, Ticket};

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    let frame = ctx
        .sql("SELECT k, COUNT(*) AS c FROM t WHERE k <> 'd' GROUP BY k ORDER BY k")
        .await
        .unwrap();
    let plan = frame.create_physical_plan().await.unwrap();
    let expected = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    // The historical serves the first two segments only.
    let served = serving(&cache, &descriptors[..2]).await;
    let addr = on_loopback(super::fragment::FragmentService::new(served.clone())).await;
    let mut client = flight_client(addr).await;
    let codec = GroveCodec::new(served);
    let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();

    // Without the cluster secret, or with another cluster's, a good ticket is refused
    // before it is read.
    let good = Ticket::new("q0", ids[..2].to_vec(), plan.clone(), &codec).unwrap();
    let mut forged = anonymous_flight_client(addr).await;
    let other = crate::auth::ClusterSecret::new("another cluster's secret").unwrap();
    forged
        .add_header("authorization", other.authorization())
        .unwrap();
    for mut stranger in [anonymous_flight_client(addr).await, forged] {
        let status = refused(
            stranger
                .do_get(arrow_flight::Ticket::new(good.encode()))
                .await,
        );
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    }

    // All three segments: the third is reported, nothing is read.
    let ticket = Ticket::new("q1", ids.clone(), plan.clone(), &codec).unwrap();
    let status = refused(
        client
            .do_get(arrow_flight::Ticket::new(ticket.encode()))
            .await,
    );
    assert_eq!(status.code(), tonic::Code::NotFound);
    let listed = status
        .metadata()
        .get(MISSING_SEGMENTS)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<String>>(listed).unwrap(),
        vec![ids[2].clone()]
    );

    // The same query over the two served segments, planned and run remotely,
    // equals the local run restricted to them.
    let two = SessionContext::new();
    register(&two, &descriptors[..2], &cache);
    let plan = physical(
        &two,
        "SELECT k, COUNT(*) AS c FROM t WHERE k <> 'd' GROUP BY k ORDER BY k",
    )
    .await;
    let local = collect(plan.clone(), two.task_ctx()).await.unwrap();
    let ticket = Ticket::new("q2", ids[..2].to_vec(), plan, &codec).unwrap();
    let remote: Vec<RecordBatch> = fetched(&mut client, &ticket).await;
    assert_eq!(
        pretty_format_batches(&remote).unwrap().to_string(),
        pretty_format_batches(&local).unwrap().to_string()
    );
    assert_ne!(
        pretty_format_batches(&remote).unwrap().to_string(),
        pretty_format_batches(&expected).unwrap().to_string(),
        "the third segment is not in the remote answer"
    );

    // Garbage tickets are refused, and the server keeps serving.
    for garbage in [
        b"".to_vec(),
        b"GROVEFRG\x02".to_vec(),
        b"GROVEFRG\x01\xff\xff\xff\x7f{".to_vec(),
    ] {
        let status = refused(client.do_get(arrow_flight::Ticket::new(garbage)).await);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    }
    let mut bad_plan = ticket.clone();
    bad_plan.plan = vec![0x0a, 0xff, 0x13, 0x37];
    let status = refused(
        client
            .do_get(arrow_flight::Ticket::new(bad_plan.encode()))
            .await,
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    let again: Vec<RecordBatch> = fetched(&mut client, &ticket).await;
    assert_eq!(again.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    // Raw rows keep their dictionary-encoded strings across Flight.
    let raw = physical(&two, "SELECT k, n FROM t").await;
    let ticket = Ticket::new("q3", ids[..2].to_vec(), raw, &codec).unwrap();
    let rows: Vec<RecordBatch> = fetched(&mut client, &ticket).await;
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
    // The broker's rows per batch, and no more than a historical allows.
    let small = fetched(&mut client, &ticket.clone().with_batch_size(300)).await;
    assert_eq!(small.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
    assert!(small.iter().all(|b| b.num_rows() <= 300), "batches of 300");
    assert!(
        rows.iter().any(|b| b.num_rows() > 300),
        "by default, larger"
    );
    for rows in [0, super::admit::MAX_BATCH_SIZE + 1] {
        let hostile = ticket.clone().with_batch_size(rows);
        let status = refused(
            client
                .do_get(arrow_flight::Ticket::new(hostile.encode()))
                .await,
        );
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    }
    for batch in &rows {
        let k = batch.schema().field_with_name("k").unwrap().clone();
        assert!(
            matches!(k.data_type(), DataType::Dictionary(..)),
            "{k:?} lost its dictionary"
        );
    }
    // Each batch carries only the dictionary values its rows use: one row, one
    // value, not the segment's four.
    let one = physical(&two, "SELECT k FROM t LIMIT 1").await;
    let ticket = Ticket::new("q4", ids[..2].to_vec(), one, &codec).unwrap();
    let rows: Vec<RecordBatch> = fetched(&mut client, &ticket).await;
    let values: Vec<usize> = rows
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_any_dictionary().values().len())
        .collect();
    assert_eq!(values, [1], "dictionary values per batch");
}

#[tokio::test]
async fn a_broker_built_fragment_runs_through_the_client_and_failures_are_classified() {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

    use super::refs::{ScanRequest, SegmentRefsExec};
    use super::remote::{FragmentClient, FragmentError};
    use super::ticket::Ticket;

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    let plan = physical(&ctx, "SELECT k, SUM(n) AS s FROM t GROUP BY k").await;
    // The fragment: the Partial aggregate, with the scan replaced by references,
    // as a broker has no segments to put in it.
    let mut partial: Option<Arc<dyn ExecutionPlan>> = None;
    plan.apply(|node| {
        if let Some(agg) = node.downcast_ref::<AggregateExec>()
            && *agg.mode() == AggregateMode::Partial
        {
            partial = Some(node.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .unwrap();
    let partial = partial.expect("a partial aggregate");
    let local = collect(partial.clone(), ctx.task_ctx()).await.unwrap();
    let fragment = partial
        .transform_up(|node| {
            Ok(match node.downcast_ref::<SegmentScanExec>() {
                Some(scan) => {
                    Transformed::yes(Arc::new(SegmentRefsExec::new(ScanRequest::of(scan))?)
                        as Arc<dyn ExecutionPlan>)
                }
                None => Transformed::no(node),
            })
        })
        .unwrap()
        .data;

    let served = serving(&cache, &descriptors).await;
    let addr = on_loopback(super::fragment::FragmentService::new(served.clone()))
        .await
        .to_string();
    let codec = GroveCodec::new(served);
    let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();
    let ticket = Ticket::new("q", ids, fragment, &codec).unwrap();
    let client = FragmentClient::new(std::time::Duration::from_secs(10), secret());
    let remote = client.run(&addr, &ticket).await.unwrap();
    let sorted = |batches: &[RecordBatch]| {
        let text = pretty_format_batches(batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&remote),
        sorted(&local),
        "partial aggregate rows match"
    );

    // Unknown segments, a dead address, and a broken plan each say what they are.
    let mut unknown = ticket.clone();
    unknown.segments.push("t_nope".into());
    match client.run(&addr, &unknown).await {
        Err(FragmentError::Missing(ids)) => assert_eq!(ids, vec!["t_nope".to_string()]),
        other => panic!("{other:?}"),
    }
    let dead = format!("127.0.0.1:{}", unused_port());
    assert!(matches!(
        client.run(&dead, &ticket).await,
        Err(FragmentError::Unavailable(_))
    ));
    let mut broken = ticket.clone();
    broken.plan = vec![1, 2, 3];
    assert!(matches!(
        client.run(&addr, &broken).await,
        Err(FragmentError::Rejected(_))
    ));
}

/// A client that reads one batch of a long fragment and goes away: the historical
/// stops executing it.
#[tokio::test]
async fn a_client_that_disconnects_mid_stream_stops_the_fragment() {
    use futures::StreamExt;

    use super::fragment::FragmentService;
    use super::ticket::Ticket;

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    // 3000 rows of 30 KB each: far more than flow control lets through unread.
    let plan = physical(&ctx, "SELECT k, n, repeat(k, 30000) AS wide FROM t").await;
    let served = serving(&cache, &descriptors).await;
    let service = FragmentService::new(served.clone());
    let running = service.running();
    let addr = on_loopback(service).await;
    let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();
    let ticket = Ticket::new("slow", ids, plan, &GroveCodec::new(served)).unwrap();
    let mut client = flight_client(addr).await;
    let mut stream = client
        .do_get(arrow_flight::Ticket::new(ticket.encode()))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    // Not read, the stream waits on flow control: still running, not finished.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(running.load(std::sync::atomic::Ordering::SeqCst), 1);

    drop(stream);
    let began = std::time::Instant::now();
    while running.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "the fragment still runs after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Registers `exfiltrate(n)` in `ctx`: a function a broker's session may have and a
/// historical's does not.
fn register_exfiltrate(ctx: &SessionContext) {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    ctx.register_udf(create_udf(
        "exfiltrate",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| Ok(args[0].clone())),
    ));
}

/// A historical serving the three segments on loopback, a Flight client of it, and
/// what forging tickets for it takes.
struct Forger {
    /// A session with the segments as table `t`, to plan fragments in.
    ctx: SessionContext,
    client: arrow_flight::FlightClient,
    codec: GroveCodec,
    /// The segments' ids.
    ids: Vec<String>,
}

async fn forger(dir: &std::path::Path) -> Forger {
    let (descriptors, cache, ctx) = fixture(dir);
    let served = serving(&cache, &descriptors).await;
    let addr = on_loopback(super::fragment::FragmentService::new(served.clone())).await;
    Forger {
        ctx,
        client: flight_client(addr).await,
        codec: GroveCodec::new(served),
        ids: descriptors.iter().map(|d| d.id.to_string()).collect(),
    }
}

/// Fragments a broker never sends, each refused with `PermissionDenied` naming
/// what it holds, and the historical serving the next good ticket. (File scans
/// and sinks are refused in the end-to-end tests, forged as an outsider would.)
#[tokio::test]
async fn fragments_brokers_do_not_send_are_refused_before_they_run() {
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::repartition::RepartitionExec;

    use super::ticket::Ticket;

    let dir = tempfile::tempdir().unwrap();
    let Forger {
        ctx,
        mut client,
        codec,
        ids,
    } = forger(dir.path()).await;
    let ticket = |plan: Arc<dyn ExecutionPlan>, ids: &[String]| {
        Ticket::new("forged", ids.to_vec(), plan, &codec).unwrap()
    };

    register_exfiltrate(&ctx);
    let udf = physical(&ctx, "SELECT exfiltrate(n) FROM t").await;
    // The scan reads all three segments; the ticket lists two.
    let unlisted = physical(&ctx, "SELECT k FROM t").await;
    // Joins other than hash joins with a broadcast build side are not pushed.
    let join = physical(&ctx, "SELECT a.k FROM t a CROSS JOIN t b").await;
    // A repartition into more partitions than a scan may have.
    let wide: Arc<dyn ExecutionPlan> = Arc::new(
        RepartitionExec::try_new(unlisted.clone(), Partitioning::RoundRobinBatch(100_000)).unwrap(),
    );
    for (plan, listed, named) in [
        (udf, &ids[..], "function exfiltrate is not registered"),
        (
            unlisted.clone(),
            &ids[..2],
            "which the ticket does not list",
        ),
        (join, &ids[..], "CrossJoinExec is not an operator"),
        (wide, &ids[..], "RepartitionExec into 100000 partitions"),
    ] {
        let forged = ticket(plan, listed);
        let status = refused(
            client
                .do_get(arrow_flight::Ticket::new(forged.encode()))
                .await,
        );
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(status.message().contains(named), "{status}");
    }

    let good = ticket(unlisted, &ids);
    let rows: Vec<RecordBatch> = fetched(&mut client, &good).await;
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
}

/// The checks of [`super::admit::admit`] on plans that decoding alone would let
/// through: functions hidden in a dynamic filter or looked up in a registry that
/// lacks them, top-Ns and limited aggregates too large or empty to run, and values
/// too wide to allocate.
#[tokio::test]
async fn admission_checks_what_decoding_does_not() {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, Literal};
    use datafusion::physical_plan::aggregates::{AggregateExec, LimitOptions};
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::sorts::sort::SortExec;

    use super::admit::{MAX_FRAGMENT_FETCH, admit};

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, _cache, ctx) = fixture(dir.path());
    let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();
    let historical = SessionContext::new().task_ctx();
    let refusal =
        |plan: Arc<dyn ExecutionPlan>| match admit(&plan, &ids, historical.as_ref(), false) {
            Ok(()) => panic!("admitted:\n{}", displayable(plan.as_ref()).indent(true)),
            Err(refused) => refused.to_string(),
        };
    let find = |plan: &Arc<dyn ExecutionPlan>, name: &str| {
        let mut found = None;
        plan.apply(|node| {
            if node.name() == name && found.is_none() {
                found = Some(node.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
            .unwrap_or_else(|| panic!("no {name} in:\n{}", displayable(plan.as_ref()).indent(true)))
    };

    register_exfiltrate(&ctx);
    // A plan with the function, judged by a registry without it.
    let filtered = physical(&ctx, "SELECT k FROM t WHERE exfiltrate(n) > 0").await;
    assert!(refusal(filtered.clone()).contains("function exfiltrate is not registered"));
    // The same predicate inside a dynamic filter with no declared children.
    let filter = find(&filtered, "FilterExec");
    let filter = filter.downcast_ref::<FilterExec>().unwrap();
    let hidden = Arc::new(DynamicFilterPhysicalExpr::new(
        vec![],
        filter.predicate().clone(),
    ));
    let scan = filter.input().clone();
    let plan = Arc::new(FilterExec::try_new(hidden, scan.clone()).unwrap());
    assert!(refusal(plan).contains("function exfiltrate is not registered"));

    // Top-Ns and limited aggregates of no rows or of more than historicals keep.
    let top = physical(&ctx, "SELECT n FROM t ORDER BY n DESC LIMIT 3").await;
    let sort = find(&top, "SortExec(TopK)");
    let sort = sort.downcast_ref::<SortExec>().unwrap();
    for fetch in [0, MAX_FRAGMENT_FETCH + 1] {
        let plan = Arc::new(sort.with_fetch(Some(fetch)));
        assert!(refusal(plan).contains(&format!("SortExec keeping {fetch} rows")));
    }
    let grouped = physical(&ctx, "SELECT k, COUNT(*) FROM t GROUP BY k").await;
    let aggregate = find(&grouped, "AggregateExec");
    let aggregate = aggregate.downcast_ref::<AggregateExec>().unwrap().clone();
    let huge = LimitOptions {
        limit: 1 << 40,
        descending: None,
    };
    let plan = Arc::new(aggregate.with_limit_options(Some(huge)));
    assert!(refusal(plan).contains("AggregateExec keeping 1099511627776 rows"));

    // A null 2 GiB wide per row.
    let wide = datafusion::scalar::ScalarValue::FixedSizeBinary(i32::MAX, None);
    let projection = ProjectionExec::try_new(
        vec![(Arc::new(Literal::new(wide)) as _, "w".to_string())],
        scan,
    )
    .unwrap();
    assert!(refusal(Arc::new(projection)).contains("FixedSizeBinary(2147483647)"));

    // Plans of the operators brokers push pass.
    for sql in [
        "SELECT k, COUNT(*) FROM t GROUP BY k",
        "SELECT n FROM t ORDER BY n DESC LIMIT 3",
        "SELECT k, n * 2 FROM t WHERE n > 10 AND k IN ('a', 'b') LIMIT 5",
    ] {
        let plan = physical(&ctx, sql).await;
        assert!(
            admit(&plan, &ids, historical.as_ref(), false).is_ok(),
            "{sql}"
        );
    }

    // A scan whose declared schema has such a type is refused at decode.
    let node = br#"{"version":1,"schema":[{"name":"w","data_type":"FixedSizeBinary(2147483647)","nullable":true}],"projection":[0],"segments":[],"filter":null,"limit":null,"partitions":1}"#;
    let err = GroveCodec::for_encoding()
        .try_decode(
            node,
            &[],
            historical.as_ref(),
            &datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {},
        )
        .unwrap_err();
    assert!(super::admit::Refused::find(&err).is_some(), "{err}");
}

/// A hash join runs in a fragment only as brokers push it: collecting a build side
/// of rows the ticket carries, answering per probe row. Then the historical's answer
/// is the join's.
#[tokio::test]
async fn broadcast_joins_are_admitted_only_as_brokers_send_them() {
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

    use super::broadcast::BroadcastRowsExec;
    use super::ticket::Ticket;

    let dir = tempfile::tempdir().unwrap();
    let Forger {
        ctx,
        mut client,
        codec,
        ids,
    } = forger(dir.path()).await;

    let schema = Arc::new(Schema::new(vec![
        Field::new("dk", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let rows = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "z"])),
            Arc::new(StringArray::from(vec!["first", "second", "last"])),
        ],
    )
    .unwrap();
    let table = MemTable::try_new(schema.clone(), vec![vec![rows.clone()]]).unwrap();
    ctx.register_table("d", Arc::new(table)).unwrap();
    let join_of = |plan: &Arc<dyn ExecutionPlan>| {
        let mut found = None;
        let _ = datafusion::common::tree_node::TreeNode::apply(plan, |node| {
            if node.downcast_ref::<HashJoinExec>().is_some() {
                found.get_or_insert_with(|| node.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        found.expect("a hash join")
    };
    // The join with its build side's rows in place of the build side, as a broker
    // makes it.
    let shipped = async |join: &HashJoinExec| -> Arc<dyn ExecutionPlan> {
        let rows = collect(join.left().clone(), ctx.task_ctx()).await.unwrap();
        let build: Arc<dyn ExecutionPlan> =
            Arc::new(BroadcastRowsExec::new(join.left().schema(), rows));
        join.builder()
            .with_new_children(vec![build, join.right().clone()])
            .unwrap()
            .build_exec()
            .unwrap()
    };
    let send = |plan: Arc<dyn ExecutionPlan>| {
        Ticket::new("forged", ids.clone(), plan, &codec)
            .unwrap()
            .encode()
    };

    let planned = physical(&ctx, "SELECT t.k, d.label FROM d JOIN t ON d.dk = t.k").await;
    let planned = join_of(&planned);
    let inner = planned.downcast_ref::<HashJoinExec>().unwrap();
    assert_eq!(*inner.partition_mode(), PartitionMode::CollectLeft);
    // The build side as a scan the ticket does not carry (here, of the historical's
    // memory; a file scan is refused the same way).
    let status = refused(
        client
            .do_get(arrow_flight::Ticket::new(send(planned.clone())))
            .await,
    );
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status
            .message()
            .contains("build side is not rows the ticket carries"),
        "{status}"
    );
    // Partitioned: each side would be a share of its rows.
    let partitioned = inner
        .builder()
        .with_partition_mode(PartitionMode::Partitioned)
        .build()
        .unwrap();
    // A left join: which build rows never match is known only with every probe row.
    let left = physical(&ctx, "SELECT d.label, t.n FROM d LEFT JOIN t ON d.dk = t.k").await;
    let left = join_of(&left);
    let left = left.downcast_ref::<HashJoinExec>().unwrap();
    for (plan, named) in [
        (shipped(&partitioned).await, "Partitioned mode"),
        (shipped(left).await, "a Left hash join"),
    ] {
        let status = refused(client.do_get(arrow_flight::Ticket::new(send(plan))).await);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(status.message().contains(named), "{status}");
    }

    // Carried rows anywhere but a join's build side (here, under a filter alone).
    let loose: Arc<dyn ExecutionPlan> = Arc::new(
        datafusion::physical_plan::filter::FilterExec::try_new(
            Arc::new(datafusion::physical_expr::expressions::IsNullExpr::new(
                Arc::new(datafusion::physical_expr::expressions::Column::new("dk", 0)),
            )),
            Arc::new(BroadcastRowsExec::new(schema.clone(), vec![rows.clone()])),
        )
        .unwrap(),
    );
    let status = refused(client.do_get(arrow_flight::Ticket::new(send(loose))).await);
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("not a hash join's build side"),
        "{status}"
    );

    // Rows of a type too wide to allocate, refused as they are decoded.
    let wide = Arc::new(Schema::new(vec![Field::new(
        "w",
        DataType::FixedSizeBinary(1 << 20),
        true,
    )]));
    let wide = Arc::new(BroadcastRowsExec::new(wide, vec![]));
    let status = refused(client.do_get(arrow_flight::Ticket::new(send(wide))).await);
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("FixedSizeBinary(1048576)"),
        "{status}"
    );

    // As brokers send it: admitted, and the same rows as the join run here.
    let ticket = Ticket::new("q", ids.clone(), shipped(inner).await, &codec).unwrap();
    let answer = fetched(&mut client, &ticket).await;
    let expected = collect(planned.clone(), ctx.task_ctx()).await.unwrap();
    let sorted = |batches: &[RecordBatch]| {
        let mut lines: Vec<String> = pretty_format_batches(batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&answer), sorted(&expected));
    // Every t row with k 'a' or 'b' (as `segments` writes them), none with 'z'.
    let counted: usize = answer.iter().map(RecordBatch::num_rows).sum();
    let independent = (0..3usize)
        .flat_map(|day| (0..1000usize).map(move |i| (i + day) % 4))
        .filter(|key| *key < 2)
        .count();
    assert_eq!(counted, independent);
}

/// A loopback port nothing listens on.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A top-N the broker sorts in one partition (its scan has one historical) keeps
/// that shape in the fragment, where the scan has several partitions: every one of
/// them is read, not only the first.
#[tokio::test]
async fn a_top_n_over_one_historical_reads_every_partition_of_its_fragment() {
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::prelude::SessionConfig;

    use super::pushdown::PushPartialAggregate;
    use super::remote::FragmentClient;
    use super::scan::DistributedScanExec;

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    let table_schema = ctx.table_provider("t").await.unwrap().schema();
    let served = serving(&cache, &descriptors).await;
    let client = Arc::new(FragmentClient::new(
        std::time::Duration::from_secs(10),
        secret(),
    ));
    client.in_process("h-1", super::fragment::FragmentService::new(served));
    let segments = remote_segments(&descriptors, |_| vec![replica("h-1", 0, "h-1")]);
    let n = table_schema.index_of("n").unwrap();
    let scan = Arc::new(
        DistributedScanExec::new(table_schema, vec![n], segments, None, None, client).unwrap(),
    );
    let order = LexOrdering::new(vec![PhysicalSortExpr::new(
        col("n", &scan.schema()).unwrap(),
        datafusion::arrow::compute::SortOptions {
            descending: true,
            nulls_first: false,
        },
    )])
    .unwrap();
    let sort: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(order, scan).with_fetch(Some(5)));
    let config = SessionConfig::new().with_target_partitions(4);
    let plan = PushPartialAggregate
        .optimize(sort, config.options())
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    assert!(shown.contains("remote=[SortExec"), "{shown}");
    let ctx = SessionContext::new_with_config(config);
    let answer = collect(plan, ctx.task_ctx()).await.unwrap();
    let got: Vec<i64> = answer
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    // `segments` writes n = i * (day + 1) for i below 1000 on days 0, 1 and 2.
    let mut all: Vec<i64> = (0..3i64)
        .flat_map(|day| (0..1000i64).map(move |i| i * (day + 1)))
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, all[..5].to_vec());
}

/// A shuffle stage as brokers send it: a partitioned join whose inputs are fragments
/// of historicals of the cluster, each read over Flight (or in process) by the
/// historical that runs the stage, which answers the join's rows. And what a forged
/// stage may not do: read from an address that is not a historical of the cluster,
/// nest a stage, list segments of its own, run where no stages run, or pass for a
/// plain fragment; nor may a plain fragment join two inputs partition by partition.
#[tokio::test]
async fn shuffle_stages_are_admitted_only_as_brokers_send_them() {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::prelude::SessionConfig;

    use super::fragment::FragmentService;
    use super::peers::{PeerFragment, PeerFragmentsExec};
    use super::remote::{FragmentClient, Peers};
    use super::ticket::Ticket;

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, _) = fixture(dir.path());
    let mut config = SessionConfig::new().with_target_partitions(2);
    config
        .options_mut()
        .optimizer
        .hash_join_single_partition_threshold = 0;
    config
        .options_mut()
        .optimizer
        .hash_join_single_partition_threshold_rows = 0;
    let ctx = SessionContext::new_with_config(config);
    register(&ctx, &descriptors, &cache);
    let served = serving(&cache, &descriptors).await;
    let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();
    let codec = GroveCodec::new(served.clone());

    // A historical that runs stages, reading its own fragments in process; another
    // that serves the same segments but is not one of its peers.
    let client = Arc::new(FragmentClient::new(
        std::time::Duration::from_secs(30),
        secret(),
    ));
    let service = FragmentService::new(served.clone()).with_peers(Peers::new(&client, None));
    let address = on_loopback(service.clone()).await.to_string();
    client.in_process(&address, service);
    let stranger = on_loopback(FragmentService::new(served.clone()))
        .await
        .to_string();
    let mut historical = flight_client(address.parse().unwrap()).await;
    // A node that runs no stages (a streaming task's).
    let mut peon = flight_client(on_loopback(FragmentService::new(served.clone())).await).await;

    let sql = "SELECT a.k, b.n FROM t a JOIN t b ON a.n = b.n";
    let planned = physical(&ctx, sql).await;
    let mut join = None;
    let _ = planned.apply(|node| {
        if node.downcast_ref::<HashJoinExec>().is_some() {
            join.get_or_insert_with(|| node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let join = join.expect("a hash join");
    let partitioned = join.downcast_ref::<HashJoinExec>().unwrap();
    assert_eq!(*partitioned.partition_mode(), PartitionMode::Partitioned);
    // The join with the input of each hash repartition read as a fragment at
    // `at`, its ticket made by `fragment`.
    let stage_of = |at: &str, fragment: &dyn Fn(Arc<dyn ExecutionPlan>) -> Ticket| {
        join.clone()
            .transform_down(|node| {
                let Some(repartition) = node.downcast_ref::<RepartitionExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Partitioning::Hash(..) = repartition.partitioning() else {
                    return Ok(Transformed::no(node));
                };
                let input = repartition.input().clone();
                let leaf = PeerFragmentsExec::new(
                    input.schema(),
                    vec![PeerFragment {
                        node: "historical".into(),
                        address: at.to_string(),
                        ticket: fragment(input),
                    }],
                );
                let node =
                    datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                        node,
                        vec![Arc::new(leaf)],
                    )?;
                Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
            })
            .unwrap()
            .data
    };
    let plain = |plan: Arc<dyn ExecutionPlan>| Ticket::new("", ids.clone(), plan, &codec).unwrap();
    let stage = |plan: Arc<dyn ExecutionPlan>, segments: Vec<String>| {
        Ticket::new("forged", segments, plan, &codec)
            .unwrap()
            .as_stage()
    };

    let good = stage(stage_of(&address, &plain), Vec::new());
    let answer = fetched(&mut historical, &good).await;
    let expected = collect(join.clone(), ctx.task_ctx()).await.unwrap();
    let sorted = |batches: &[RecordBatch]| {
        let mut lines: Vec<String> = pretty_format_batches(batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let rows = expected.iter().map(|b| b.num_rows()).sum::<usize>();
    assert!(rows > 3000, "{rows} rows");
    assert_eq!(sorted(&answer), sorted(&expected));

    // A leaf declaring types its fragment does not answer: an error that says so.
    let rows = physical(&ctx, "SELECT k, n FROM t").await;
    let declared = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let lying = PeerFragmentsExec::new(
        declared,
        vec![PeerFragment {
            node: "historical".into(),
            address: address.clone(),
            ticket: plain(rows),
        }],
    );
    let answer: Result<Vec<RecordBatch>, _> = {
        use futures::TryStreamExt;
        let ticket = stage(Arc::new(lying), Vec::new());
        match historical
            .do_get(arrow_flight::Ticket::new(ticket.encode()))
            .await
        {
            Ok(stream) => stream.try_collect().await,
            Err(e) => Err(e),
        }
    };
    let error = answer.expect_err("types that do not match").to_string();
    assert!(error.contains("answered columns of types"), "{error}");

    let nested = |plan: Arc<dyn ExecutionPlan>| plain(plan).as_stage();
    for (on_peon, ticket, named) in [
        (
            false,
            stage(stage_of(&stranger, &plain), Vec::new()),
            "which is not a historical of this cluster",
        ),
        (
            false,
            stage(stage_of(&address, &nested), Vec::new()),
            "a stage's fragment that is a stage itself",
        ),
        (
            false,
            stage(stage_of(&address, &plain), ids.clone()),
            "a shuffle stage that lists segments of its own",
        ),
        (
            true,
            stage(stage_of(&address, &plain), Vec::new()),
            "a shuffle stage, which this node does not run",
        ),
        (
            false,
            Ticket::new("forged", Vec::new(), stage_of(&address, &plain), &codec).unwrap(),
            "fragments of other historicals in a ticket that is not a shuffle stage",
        ),
        (
            false,
            plain(join.clone()),
            "a hash join whose build side is not rows the ticket carries",
        ),
    ] {
        let client = if on_peon { &mut peon } else { &mut historical };
        let status = refused(
            client
                .do_get(arrow_flight::Ticket::new(ticket.encode()))
                .await,
        );
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(status.message().contains(named), "{named}: {status}");
    }

    // A join in a stage collecting its build side from one slice would miss the
    // others' rows.
    let collect_left = join
        .downcast_ref::<HashJoinExec>()
        .unwrap()
        .builder()
        .with_partition_mode(PartitionMode::CollectLeft)
        .build_exec()
        .unwrap();
    let status = refused(
        historical
            .do_get(arrow_flight::Ticket::new(
                stage(
                    {
                        let stage = stage_of(&address, &plain);
                        let children: Vec<Arc<dyn ExecutionPlan>> =
                            stage.children().into_iter().cloned().collect();
                        datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                            collect_left,
                            children,
                        )
                        .unwrap()
                    },
                    Vec::new(),
                )
                .encode(),
            ))
            .await,
    );
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("only partitioned joins"),
        "{status}"
    );
}

/// A shuffle stage's slices run on the historicals its scans read from, and answer
/// what the join answers in one process. With one of those historicals down, every
/// slice fails before it has sent anything (each reads a fragment of the one down)
/// and runs on the broker instead, its scans failing over to the other replica: the
/// same rows, none twice.
#[tokio::test]
async fn a_shuffle_stage_joins_on_the_historicals_and_a_slice_falls_back_to_the_broker() {
    use datafusion::common::NullEquality;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::prelude::SessionConfig;

    use super::fragment::FragmentService;
    use super::remote::{FragmentClient, Peers};
    use super::scan::DistributedScanExec;
    use super::stage::StageExec;

    let dir = tempfile::tempdir().unwrap();
    let (descriptors, cache, ctx) = fixture(dir.path());
    let table_schema = ctx.table_provider("t").await.unwrap().schema();
    let served = serving(&cache, &descriptors).await;
    // Two historicals serving every segment, in this process; a third, preferred
    // for the first segment, is down.
    let client = Arc::new(FragmentClient::new(
        std::time::Duration::from_secs(10),
        secret(),
    ));
    for node in ["h-1", "h-2"] {
        let peers = Peers::new(&client, None);
        client.in_process(node, FragmentService::new(served.clone()).with_peers(peers));
    }
    let down = format!("127.0.0.1:{}", unused_port());
    let scan = |with_down: bool| {
        let segments = remote_segments(&descriptors, |i| {
            if with_down && i == 0 {
                vec![replica("h-0", 1, &down), replica("h-1", 0, "h-1")]
            } else {
                let node = ["h-1", "h-2"][i % 2];
                vec![replica(node, 0, node)]
            }
        });
        let columns = vec![
            table_schema.index_of("k").unwrap(),
            table_schema.index_of("n").unwrap(),
        ];
        Arc::new(
            DistributedScanExec::new(
                table_schema.clone(),
                columns,
                segments,
                None,
                None,
                client.clone(),
            )
            .unwrap(),
        ) as Arc<dyn ExecutionPlan>
    };
    let join = |with_down: bool| -> Arc<dyn ExecutionPlan> {
        let side = |scan: Arc<dyn ExecutionPlan>| {
            let key = col("n", &scan.schema()).unwrap();
            Arc::new(RepartitionExec::try_new(scan, Partitioning::Hash(vec![key], 2)).unwrap())
                as Arc<dyn ExecutionPlan>
        };
        let (left, right) = (side(scan(with_down)), side(scan(false)));
        let on = vec![(
            col("n", &left.schema()).unwrap(),
            col("n", &right.schema()).unwrap(),
        )];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &datafusion::common::JoinType::Inner,
                None,
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    };
    let config = SessionConfig::new().with_target_partitions(2);
    let ctx = SessionContext::new_with_config(config.clone());
    // `segments` writes k = "abcd"[(i + day) % 4], n = i * (day + 1) for i below
    // 1000 on days 0, 1 and 2: every pair of rows with equal n, as `k n k n`.
    let mut by_n: HashMap<i64, Vec<&str>> = HashMap::new();
    for day in 0..3i64 {
        for i in 0..1000i64 {
            let k = ["a", "b", "c", "d"][((i + day) % 4) as usize];
            by_n.entry(i * (day + 1)).or_default().push(k);
        }
    }
    let mut expected: Vec<String> = by_n
        .iter()
        .flat_map(|(n, ks)| {
            ks.iter()
                .flat_map(move |a| ks.iter().map(move |b| format!("{a} {n} {b} {n}")))
        })
        .collect();
    expected.sort();
    for with_down in [false, true] {
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(StageExec::try_new(join(with_down)).expect("a shuffle stage"));
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .one_line()
            .to_string();
        let answer = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let mut got: Vec<String> = Vec::new();
        for batch in &answer {
            let text = |c: usize, row: usize| {
                datafusion::arrow::util::display::array_value_to_string(batch.column(c), row)
                    .unwrap()
            };
            for row in 0..batch.num_rows() {
                got.push(format!(
                    "{} {} {} {}",
                    text(0, row),
                    text(1, row),
                    text(2, row),
                    text(3, row)
                ));
            }
        }
        got.sort();
        assert!(
            got == expected,
            "{shown}: {} rows, not {}",
            got.len(),
            expected.len()
        );
        let got = got.len();
        let metrics = plan.metrics().unwrap();
        let here = metrics.sum_by_name("slices_run_here").map(|m| m.as_usize());
        let received = metrics.sum_by_name("rows_received").map(|m| m.as_usize());
        if with_down {
            assert!(shown.contains("on=[h-0, h-1, h-2]"), "{shown}");
            assert_eq!(here, Some(3), "{shown}");
        } else {
            assert!(shown.contains("on=[h-1, h-2]"), "{shown}");
            assert_eq!(here, Some(0), "{shown}");
            assert_eq!(received, Some(got), "{shown}");
        }
    }
}
