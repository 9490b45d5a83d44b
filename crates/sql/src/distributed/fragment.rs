//! The historical's side of fragments: [`FragmentService`], whose `do_get` decodes a
//! [`Ticket`], executes its fragment over the segments it serves and streams the
//! result back. A broker in the same process (`grove start`) calls
//! [`FragmentService::execute`] instead and takes the batches as they are, with every
//! check the same.
//!
//! A ticket that does not parse is `InvalidArgument`; segments the historical does not
//! serve are `NotFound`, listed in the `grove-missing-segments` metadata (a JSON
//! array) so the broker can retry exactly those elsewhere. A decoded plan runs only
//! if [`admit`] accepts it: Grove's segment scans under the operators brokers push,
//! nothing else; otherwise `PermissionDenied`, before anything executes. Nothing
//! panics on a hostile ticket. When the client goes away the response stream is
//! dropped, and with it the execution.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult,
};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
use futures::{Stream, StreamExt, TryStreamExt};
use grove_segment::scan::SegmentGroupBy;
use tonic::{Request, Response, Status, Streaming};

use super::admit::{MAX_BATCH_SIZE, Refused, admit};
use super::broadcast::compact_dictionaries;
use super::codec::{GroveCodec, MissingSegments, SegmentSource};
use super::peers::PeerClient;
use super::ticket::{MAX_MESSAGE, MISSING_SEGMENTS, Ticket};
use crate::auth::ClusterSecret;

/// A historical's Flight endpoint for plan fragments. Cloning it shares it.
#[derive(Clone)]
pub struct FragmentService {
    source: Arc<dyn SegmentSource>,
    /// Where shuffle stages read other historicals' fragments: none, no stages.
    peers: Option<Arc<dyn PeerClient>>,
    ctx: SessionContext,
    running: Arc<AtomicUsize>,
}

impl FragmentService {
    pub fn new(source: Arc<dyn SegmentSource>) -> Self {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        crate::functions::register(&mut state);
        FragmentService {
            source,
            peers: None,
            ctx: SessionContext::new_with_state(state),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The service, running shuffle stages that read from `peers`.
    pub fn with_peers(mut self, peers: Arc<dyn PeerClient>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// How many fragments are executing right now: each counts from its `do_get`
    /// until its stream ends or is dropped (the client finished or went away).
    pub fn running(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.running)
    }

    /// Decodes, admits and starts a fragment: its batches as they come, counted in
    /// [`running`](Self::running) while the stream lives. Flight's `do_get` serves
    /// this, and a broker in the same process reads it directly, without encoding
    /// the batches; the checks are the same.
    pub fn execute(&self, ticket: &Ticket) -> Result<SendableRecordBatchStream, Status> {
        let absent: Vec<String> = ticket
            .segments
            .iter()
            .filter(|id| self.source.segment(id).is_none())
            .cloned()
            .collect();
        if !absent.is_empty() {
            return Err(missing(absent));
        }
        let mut codec = GroveCodec::new(self.source.clone());
        if ticket.stage {
            let refused = match &self.peers {
                None => Some("a shuffle stage, which this node does not run"),
                Some(_) if !ticket.segments.is_empty() => {
                    Some("a shuffle stage that lists segments of its own")
                }
                Some(peers) => {
                    codec = codec.for_stage(peers.clone());
                    None
                }
            };
            if let Some(why) = refused {
                return Err(permission_denied(ticket, &Refused(why.into())));
            }
        }
        let mut task = self.ctx.task_ctx();
        if let Some(rows) = ticket.batch_size {
            if !(1..=MAX_BATCH_SIZE).contains(&rows) {
                let refused = Refused(format!(
                    "a batch size of {rows} rows (at most {MAX_BATCH_SIZE})"
                ));
                return Err(permission_denied(ticket, &refused));
            }
            task = Arc::new(TaskContext::new(
                task.task_id(),
                task.session_id(),
                task.session_config().clone().with_batch_size(rows),
                task.scalar_functions().clone(),
                task.higher_order_functions().clone(),
                task.aggregate_functions().clone(),
                task.window_functions().clone(),
                task.runtime_env(),
            ));
        }
        // A hostile plan must not take the process down.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            physical_plan_from_bytes_with_extension_codec(&ticket.plan, &task, &codec)
        }))
        .map_err(|_| Status::invalid_argument("invalid ticket: the plan does not decode"))?;
        let plan = match decoded {
            Ok(plan) => plan,
            Err(e) => {
                return Err(if let Some(m) = MissingSegments::find(&e) {
                    missing(m.0.clone())
                } else if let Some(refused) = Refused::find(&e) {
                    permission_denied(ticket, refused)
                } else {
                    Status::invalid_argument(format!("invalid ticket: {e}"))
                });
            }
        };
        admit(&plan, &ticket.segments, task.as_ref(), ticket.stage)
            .map_err(|refused| permission_denied(ticket, &refused))?;
        // What the broker planned, computed the historical's way (the same rows).
        let plan = SegmentGroupBy
            .optimize(plan, task.session_config().options())
            .map_err(|e| Status::internal(format!("query {}: {e}", ticket.query_id)))?;
        let schema = plan.schema();
        // An operator may still assert on what a hostile plan set up; that must not
        // take the process down either.
        let stream =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute_stream(plan, task)))
                .map_err(|_| Status::invalid_argument("invalid ticket: the plan does not start"))?
                .map_err(|e| Status::internal(format!("query {}: {e}", ticket.query_id)))?;
        let running = Running::start(&self.running);
        let counted = stream.map(move |batch| {
            let _running = &running;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}

/// One executing fragment, counted in [`FragmentService::running`] while it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Running {
        count.fetch_add(1, Ordering::SeqCst);
        Running(Arc::clone(count))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn missing(ids: Vec<String>) -> Status {
    let mut status = Status::not_found(MissingSegments(ids.clone()).to_string());
    if let Ok(value) = serde_json::to_string(&ids)
        .unwrap_or_default()
        .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
    {
        status.metadata_mut().insert(MISSING_SEGMENTS, value);
    }
    status
}

/// A refused fragment: logged here, where it is handled, since it is either a
/// broker of another version or someone probing the port.
fn permission_denied(ticket: &Ticket, refused: &Refused) -> Status {
    tracing::warn!(query_id = %ticket.query_id, "{refused}");
    Status::permission_denied(refused.to_string())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for FragmentService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = Ticket::decode(&request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("invalid ticket: {e}")))?;
        let stream = self.execute(&ticket)?;
        let schema = stream.schema();
        let batches = stream
            .map(|batch| batch.and_then(compact_dictionaries))
            .map_err(|e: DataFusionError| FlightError::ExternalError(Box::new(e)));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(flight.boxed()))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented(
            "historicals take fragment tickets only",
        ))
    }
}

/// A historical's loaded segments, as fragments find them.
#[derive(Debug)]
pub struct LoadedSource(pub grove_cluster::historical::LoadedSegments);

impl SegmentSource for LoadedSource {
    fn segment(&self, id: &str) -> Option<Vec<Arc<grove_segment::format::Segment>>> {
        self.0.read().ok()?.get(id).map(|s| vec![s.segment.clone()])
    }
}

/// Serves fragments on `listener` until `shutdown` resolves, to callers that carry
/// `secret` only: any other call is refused `Unauthenticated` before it is read.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: FragmentService,
    secret: ClusterSecret,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = arrow_flight::flight_service_server::FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        move |request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if secret.admits(header) {
                Ok(request)
            } else {
                Err(Status::unauthenticated(
                    "fragments are taken from the cluster's nodes only: the cluster secret is missing or wrong",
                ))
            }
        },
    );
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Small answers must not wait for delayed ACKs (Nagle): ~40 ms each.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
