//! Flight SQL: ADBC, JDBC and the other Arrow Flight SQL clients query Grove and get
//! Arrow batches back, dictionary columns still dictionary-encoded.
//!
//! - A statement is planned at `GetFlightInfo`, whose schema is the schema of the
//!   physical plan, the one the rows are sent with. Its ticket carries the SQL text
//!   (or the prepared statement's handle) and a random query id; its first `DoGet` by
//!   the same user runs the plan made then (with the session's settings of then), a
//!   later one plans the text again, and each streams the rows. A statement that
//!   returns no rows (`SET`, `CREATE VIEW`) takes effect at `GetFlightInfo`, and its
//!   ticket reads nothing.
//! - Prepared statements take `?` placeholders; their parameters are bound with
//!   `DoPut`, one row of values.
//! - `GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes` and `GetSqlInfo`
//!   describe what can be queried.
//! - Sessions: a call runs in a new session, unless it carries the cookie
//!   `arrow_flight_session_id` of one kept earlier. A session is kept, and the cookie
//!   set, when a statement changes it (a `SET`, a view), so clients that send the
//!   cookie back keep their settings and views. A prepared statement runs in the
//!   session it was prepared in. Unused sessions, prepared statements
//!   and login tokens are forgotten after an hour.
//! - Cancel: `CancelFlightInfo` (and the older `CancelQuery`) stops the query of that
//!   FlightInfo's ticket; a client that drops the stream stops it too. Each query
//!   stops at its timeout: the call's gRPC deadline when it has one, else the
//!   server's `query_timeout`.
//! - With users configured, clients log in with a `Handshake` that carries basic
//!   credentials and get a bearer token for later calls; basic credentials on any
//!   call are accepted too.

pub mod client;
mod registry;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, Command,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Users;
use crate::engine::returns_rows;
use crate::guard::{Guard, Halt};
use crate::{Engine, Session};
use registry::{Cancelled, IDLE, MOST, Planned, Registry, Running, random_id};

/// The cookie that names a kept session, as Arrow Flight clients send it back.
const SESSION_COOKIE: &str = "arrow_flight_session_id";

/// The action that cancels the query of a FlightInfo.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// The largest Flight message accepted (a statement, a ticket, a batch of
/// parameters); the whole message is read before the caller is known.
const MAX_REQUEST: usize = 16 << 20;

/// The largest Flight message sent (the encoder splits batches well below it).
const MAX_MESSAGE: usize = 256 << 20;

/// How the Flight SQL front end serves.
#[derive(Clone, Default)]
pub struct FlightSqlOptions {
    /// Longest a query may run unless its call has a gRPC deadline.
    pub query_timeout: Option<Duration>,
    /// Who may query; `None`: anyone, without a password.
    pub users: Option<Arc<Users>>,
    /// TLS, from a PEM certificate chain and private key.
    pub tls: Option<tonic::transport::Identity>,
}

/// Serves `service` on `listener` until `shutdown`, over TLS when it has a certificate.
pub async fn serve(
    listener: TcpListener,
    service: Arc<FlightSql>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = service.tls.clone() {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let service = FlightServiceServer::from_arc(service)
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_MESSAGE);
    server
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// The Flight SQL service.
pub struct FlightSql {
    engine: Arc<Engine>,
    query_timeout: Option<Duration>,
    users: Option<Arc<Users>>,
    tls: Option<tonic::transport::Identity>,
    /// Bearer tokens, to the user who logged in.
    tokens: Registry<String>,
    sessions: Registry<Owned<Session>>,
    prepared: Registry<Owned<Prepared>>,
    running: Arc<Running>,
    sql_info: SqlInfoData,
}

/// Something kept for a user (`None` with authentication off).
struct Owned<T> {
    user: Option<String>,
    value: Arc<T>,
}

impl<T> Clone for Owned<T> {
    fn clone(&self) -> Self {
        Owned {
            user: self.user.clone(),
            value: Arc::clone(&self.value),
        }
    }
}

/// A prepared statement: its text, the session it was prepared in, and the values
/// bound to its placeholders.
struct Prepared {
    sql: String,
    session: Arc<Session>,
    /// Whether the session is kept (a client's cookie names it).
    kept: AtomicBool,
    parameters: Mutex<Vec<ScalarValue>>,
}

impl Prepared {
    /// The values bound to its placeholders now.
    fn bound(&self) -> Vec<ScalarValue> {
        self.parameters
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// Who calls, in which session, with what time limit.
struct Call {
    user: Option<String>,
    session: Arc<Session>,
    /// Whether the session was kept before this call.
    kept: bool,
    timeout: Option<Duration>,
}

/// What a ticket of this server reads.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    /// The query's id, for cancel requests.
    id: String,
    #[serde(flatten)]
    rows: Rows,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Rows {
    Sql {
        sql: String,
    },
    /// A prepared statement, with the values bound when its FlightInfo was asked for.
    Prepared {
        handle: String,
        parameters: Vec<String>,
    },
    /// A statement that returns no rows, already run.
    Nothing,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

impl FlightSql {
    pub fn new(engine: Arc<Engine>, options: FlightSqlOptions) -> Self {
        FlightSql {
            engine,
            query_timeout: options.query_timeout,
            users: options.users,
            tls: options.tls,
            tokens: Registry::new(IDLE, MOST),
            sessions: Registry::new(IDLE, MOST),
            prepared: Registry::new(IDLE, MOST),
            running: Arc::new(Running::default()),
            sql_info: sql_info(),
        }
    }

    /// The user a call comes from; an error when users are configured and the call
    /// has no valid token or credentials.
    fn user(&self, metadata: &MetadataMap) -> Result<Option<String>, Status> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        let header = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this server asks for a user and password: log in with a handshake \
                     carrying basic credentials",
                )
            })?;
        if let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        {
            return self.tokens.get(token.trim()).map(Some).ok_or_else(|| {
                Status::unauthenticated("the bearer token is unknown or expired: log in again")
            });
        }
        users
            .verify_basic(header)
            .map(Some)
            .ok_or_else(|| Status::unauthenticated("invalid user or password"))
    }

    /// A call's time limit: its gRPC deadline, else the server's `query_timeout`.
    fn timeout(&self, metadata: &MetadataMap) -> Option<Duration> {
        grpc_timeout(metadata).or(self.query_timeout)
    }

    /// The caller, its session (the kept one its cookie names, else a new one) and
    /// its time limit.
    fn call(&self, metadata: &MetadataMap) -> Result<Call, Status> {
        let user = self.user(metadata)?;
        let timeout = self.timeout(metadata);
        let Some(id) = session_cookie(metadata) else {
            return Ok(Call {
                user,
                session: Arc::new(self.engine.session()),
                kept: false,
                timeout,
            });
        };
        match self.sessions.get(&id) {
            Some(session) if session.user == user => Ok(Call {
                user,
                session: session.value,
                kept: true,
                timeout,
            }),
            _ => Err(Status::not_found(format!(
                "session {id} is unknown: it expired, was another user's, or the server \
                 restarted; reconnect"
            ))),
        }
    }

    /// A prepared statement of `user`.
    fn prepared(&self, handle: &[u8], user: &Option<String>) -> Result<Arc<Prepared>, Status> {
        let handle = String::from_utf8_lossy(handle);
        match self.prepared.get(&handle) {
            Some(prepared) if &prepared.user == user => Ok(prepared.value),
            _ => Err(Status::not_found(format!(
                "prepared statement {handle} is unknown: it was closed or expired"
            ))),
        }
    }

    /// The FlightInfo of a planned statement (without the descriptor: its ticket
    /// holds the text already), and whether the statement changed the session. A
    /// statement that returns no rows is run now.
    async fn flight_info(
        &self,
        session: &Session,
        plan: LogicalPlan,
        rows: Rows,
        guard: &Guard,
        user: &Option<String>,
    ) -> Result<(FlightInfo, bool), Status> {
        let (schema, rows, changed, physical) = if !returns_rows(&plan) {
            guard
                .run(async { session.run_plan(plan).await?.collect().await })
                .await
                .map_err(halt)?;
            (Schema::empty(), Rows::Nothing, true, None)
        } else {
            let physical = physical_plan(session, plan, guard).await?;
            let schema = physical.schema().as_ref().clone();
            (schema, rows, false, Some(physical))
        };
        let handle = Handle {
            id: random_id(),
            rows,
        };
        if let Some(plan) = physical {
            // Its DoGet runs this plan rather than planning the statement again.
            let planned = Planned {
                plan,
                task: session.context().task_ctx(),
                user: user.clone(),
            };
            self.running.register(&handle.id, planned);
        }
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&handle)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(arrow_status)?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_ordered(true);
        Ok((info, changed))
    }

    /// Keeps a new session that a statement changed, and sets its cookie.
    fn keep<T>(&self, user: &Option<String>, session: &Arc<Session>, response: &mut Response<T>) {
        let id = self.sessions.insert(Owned {
            user: user.clone(),
            value: Arc::clone(session),
        });
        if let Ok(value) = MetadataValue::try_from(format!("{SESSION_COOKIE}={id}")) {
            response.metadata_mut().insert("set-cookie", value);
        }
    }

    /// Runs a query and streams its rows, until they end, the client goes away, or
    /// the query is cancelled or times out.
    async fn rows(
        &self,
        id: &str,
        session: &Session,
        sql: &str,
        parameters: Vec<ScalarValue>,
        timeout: Option<Duration>,
        user: &Option<String>,
    ) -> Result<DoGetStream, Status> {
        let fetch = self
            .running
            .start(id)
            .ok_or_else(|| Status::cancelled("the query was cancelled"))?;
        let guard = Guard::new(fetch.token.clone(), timeout);
        let (physical, task) = match self.running.take_plan(id, user) {
            Some(planned) => (planned.plan, planned.task),
            None => {
                let plan = guard
                    .run(plan(session, sql, parameters))
                    .await
                    .map_err(halt)?;
                let physical = physical_plan(session, plan, &guard).await?;
                (physical, session.context().task_ctx())
            }
        };
        let schema = physical.schema();
        let batches = datafusion::physical_plan::execute_stream(physical, task).map_err(status)?;
        let batches = guard.batches(batches).map(move |batch| {
            // The fetch is registered for as long as its rows stream.
            let _running = &fetch;
            batch.map_err(|e| FlightError::Tonic(Box::new(halt(e))))
        });
        Ok(encode(schema, batches))
    }

    /// Stops the query of `ticket`.
    fn cancel(&self, info: &FlightInfo) -> Result<CancelStatus, Status> {
        let ticket = info
            .endpoint
            .iter()
            .find_map(|endpoint| endpoint.ticket.as_ref())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo to cancel has no ticket"))?;
        let handle = handle(&ticket.ticket)?;
        Ok(match self.running.cancel(&handle.id) {
            Cancelled::Yes => CancelStatus::Cancelled,
            Cancelled::TooLate => CancelStatus::NotCancellable,
        })
    }

    async fn tables(
        &self,
        session: &Session,
        query: CommandGetTables,
    ) -> Result<RecordBatch, Status> {
        let mut builder = query.into_builder();
        let ctx = session.context();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await.map_err(status)? else {
                        continue;
                    };
                    let kind = table_type(&schema_name, table.table_type());
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            kind,
                            &table.schema(),
                        )
                        .map_err(arrow_status)?;
                }
            }
        }
        builder.build().map_err(arrow_status)
    }

    /// How many queries are sending rows now.
    pub fn running_queries(&self) -> usize {
        self.running.len()
    }
}

/// The physical plan of a statement's logical plan, under `guard`.
async fn physical_plan(
    session: &Session,
    plan: LogicalPlan,
    guard: &Guard,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, Status> {
    let frame = guard.run(session.run_plan(plan)).await.map_err(halt)?;
    guard.run(frame.create_physical_plan()).await.map_err(halt)
}

/// Parses and plans `sql`, with `parameters` bound to its placeholders, each cast to
/// the type the statement expects there.
async fn plan(
    session: &Session,
    sql: &str,
    parameters: Vec<ScalarValue>,
) -> datafusion::error::Result<LogicalPlan> {
    let statement = session.parse_one(sql)?;
    let plan = session.plan(statement).await?;
    if parameters.is_empty() {
        return Ok(plan);
    }
    let types = plan.get_parameter_types()?;
    let mut values = Vec::with_capacity(parameters.len());
    for (i, value) in parameters.into_iter().enumerate() {
        let name = format!("${}", i + 1);
        let value = match types.get(&name) {
            Some(Some(expected)) if value.data_type() != *expected => {
                value.cast_to(expected).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "parameter {name}: cannot use {value:?} as {expected}: {e}"
                    ))
                })?
            }
            _ => value,
        };
        values.push(value);
    }
    plan.with_param_values(values)
}

/// The placeholders of a plan, `$1`, `$2`, ..., as a schema; a type the statement
/// does not fix is `Null`.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(status)?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let number = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (number, name, ty.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    ))
}

/// The one row of parameter values a `DoPut` sends (none: no values), read batch by
/// batch so that a client sending more is refused before it has sent them all.
async fn read_parameters(stream: PeekableFlightDataStream) -> Result<Vec<ScalarValue>, Status> {
    let data = stream.map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut values = Vec::new();
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        let batch =
            batch.map_err(|e| Status::invalid_argument(format!("reading the parameters: {e}")))?;
        rows += batch.num_rows();
        if rows > 1 {
            return Err(Status::invalid_argument(
                "bind one row of parameters to a statement, not more",
            ));
        }
        if batch.num_rows() == 1 {
            values = row_values(&batch)?;
        }
    }
    Ok(values)
}

/// The values of a one-row batch.
fn row_values(batch: &RecordBatch) -> Result<Vec<ScalarValue>, Status> {
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0).map_err(status))
        .collect()
}

/// Parameter values as a ticket carries them: each one's protobuf form, in base64.
fn encode_parameters(values: &[ScalarValue]) -> Result<Vec<String>, Status> {
    values
        .iter()
        .map(|value| {
            let proto = datafusion_proto::protobuf::ScalarValue::try_from(value)
                .map_err(|e| Status::invalid_argument(format!("parameter {value:?}: {e}")))?;
            Ok(STANDARD.encode(proto.encode_to_vec()))
        })
        .collect()
}

fn decode_parameters(encoded: &[String]) -> Result<Vec<ScalarValue>, Status> {
    let not_ours = |why: String| {
        Status::invalid_argument(format!("not a ticket of this server: a parameter: {why}"))
    };
    encoded
        .iter()
        .map(|text| {
            let bytes = STANDARD.decode(text).map_err(|e| not_ours(e.to_string()))?;
            let proto = datafusion_proto::protobuf::ScalarValue::decode(bytes.as_slice())
                .map_err(|e| not_ours(e.to_string()))?;
            ScalarValue::try_from(&proto).map_err(|e| not_ours(e.to_string()))
        })
        .collect()
}

/// The handle in a ticket of this server.
fn handle(ticket: &[u8]) -> Result<Handle, Status> {
    let not_ours =
        |why: String| Status::invalid_argument(format!("not a ticket of this server: {why}"));
    let any = Any::decode(ticket).map_err(|e| not_ours(e.to_string()))?;
    let query = match Command::try_from(any).map_err(|e| not_ours(e.to_string()))? {
        Command::TicketStatementQuery(query) => query,
        other => return Err(not_ours(format!("it holds a {}", other.type_url()))),
    };
    serde_json::from_slice(&query.statement_handle).map_err(|e| not_ours(e.to_string()))
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(batches)
        .map_err(Status::from);
    Box::pin(encoded)
}

/// A one-batch answer (the catalogue commands).
fn one_batch(batch: RecordBatch) -> Response<DoGetStream> {
    Response::new(encode(batch.schema(), stream::once(async { Ok(batch) })))
}

/// The FlightInfo of a catalogue command: its ticket is the command itself.
fn command_info(
    command: &impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(arrow_status)?
        .with_endpoint(
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())),
        )
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(arrow_status)?;
    Ok(bytes)
}

/// How Flight SQL names a table's kind.
fn table_type(schema: &str, kind: TableType) -> &'static str {
    match kind {
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
        TableType::Base if schema == "sys" || schema == "information_schema" => "SYSTEM TABLE",
        TableType::Base => "TABLE",
    }
}

const TABLE_TYPES: [&str; 4] = ["LOCAL TEMPORARY", "SYSTEM TABLE", "TABLE", "VIEW"];

fn sql_info() -> SqlInfoData {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "Grove");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, true);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // Building from the fixed values above cannot fail.
    info.build().unwrap_or_else(|_| {
        SqlInfoDataBuilder::new()
            .build()
            .expect("an empty SqlInfo builds")
    })
}

/// The call's gRPC deadline (`grpc-timeout: 1500m`).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    // At most 8 digits, as gRPC's specification says.
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The id in the call's `arrow_flight_session_id` cookie.
fn session_cookie(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.trim().to_string())
        })
}

/// A stopped or failed query, as gRPC says it.
fn halt(halt: Halt) -> Status {
    match halt {
        Halt::Cancelled => Status::cancelled("the query was cancelled"),
        Halt::TimedOut => Status::deadline_exceeded("the query did not finish within its timeout"),
        Halt::Failed(e) => status(e),
    }
}

fn status(e: DataFusionError) -> Status {
    let message = e.strip_backtrace();
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => Status::invalid_argument(message),
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let Some(users) = &self.users else {
            return Ok(Response::new(Box::pin(stream::empty())));
        };
        let user = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|header| users.verify_basic(header))
            .ok_or_else(|| Status::unauthenticated("invalid user or password"))?;
        let token = self.tokens.insert(user);
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(stream::once(async { Ok(reply) })));
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let call = self.call(request.metadata())?;
        let guard = Guard::new(CancellationToken::new(), call.timeout);
        let plan = guard
            .run(plan(&call.session, &query.query, Vec::new()))
            .await
            .map_err(halt)?;
        let rows = Rows::Sql { sql: query.query };
        let (info, changed) = self
            .flight_info(&call.session, plan, rows, &guard, &call.user)
            .await?;
        let mut response = Response::new(info);
        if changed && !call.kept {
            self.keep(&call.user, &call.session, &mut response);
        }
        Ok(response)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(request.metadata())?;
        let prepared = self.prepared(&query.prepared_statement_handle, &user)?;
        let timeout = self.timeout(request.metadata());
        let guard = Guard::new(CancellationToken::new(), timeout);
        let parameters = prepared.bound();
        let encoded = encode_parameters(&parameters)?;
        let plan = guard
            .run(plan(&prepared.session, &prepared.sql, parameters))
            .await
            .map_err(halt)?;
        let rows = Rows::Prepared {
            handle: String::from_utf8_lossy(&query.prepared_statement_handle).into_owned(),
            parameters: encoded,
        };
        let (info, changed) = self
            .flight_info(&prepared.session, plan, rows, &guard, &user)
            .await?;
        let mut response = Response::new(info);
        if changed && !prepared.kept.swap(true, Ordering::Relaxed) {
            self.keep(&user, &prepared.session, &mut response);
        }
        Ok(response)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata())?;
        let schema = query.into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata())?;
        let schema = query.into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata())?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let Handle { id, rows } = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|e| Status::invalid_argument(format!("not a ticket of this server: {e}")))?;
        let metadata = request.metadata();
        let stream = match rows {
            Rows::Nothing => {
                self.user(metadata)?;
                encode(Arc::new(Schema::empty()), stream::empty())
            }
            Rows::Sql { sql } => {
                let call = self.call(metadata)?;
                self.rows(
                    &id,
                    &call.session,
                    &sql,
                    Vec::new(),
                    call.timeout,
                    &call.user,
                )
                .await?
            }
            Rows::Prepared { handle, parameters } => {
                let user = self.user(metadata)?;
                let prepared = self.prepared(handle.as_bytes(), &user)?;
                let parameters = decode_parameters(&parameters)?;
                let timeout = self.timeout(metadata);
                self.rows(
                    &id,
                    &prepared.session,
                    &prepared.sql,
                    parameters,
                    timeout,
                    &user,
                )
                .await?
            }
        };
        Ok(Response::new(stream))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let call = self.call(request.metadata())?;
        let mut builder = query.into_builder();
        for catalog in call.session.context().catalog_names() {
            builder.append(catalog);
        }
        Ok(one_batch(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let call = self.call(request.metadata())?;
        let mut builder = query.into_builder();
        let ctx = call.session.context();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema in catalog.schema_names() {
                    builder.append(&catalog_name, schema);
                }
            }
        }
        Ok(one_batch(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let call = self.call(request.metadata())?;
        Ok(one_batch(self.tables(&call.session, query).await?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata())?;
        let mut builder = query.into_builder();
        for kind in TABLE_TYPES {
            builder.append(kind);
        }
        Ok(one_batch(builder.build().map_err(arrow_status)?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata())?;
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(arrow_status)?;
        Ok(one_batch(batch))
    }

    async fn do_put_statement_update(
        &self,
        query: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let call = self.call(request.metadata())?;
        if !call.kept {
            // An answer to DoPut cannot set the cookie that would keep the session.
            return Err(Status::failed_precondition(
                "a statement sent as an update changes its session, and this call has \
                 none (no arrow_flight_session_id cookie): run it as a query, which keeps \
                 the session and sets its cookie",
            ));
        }
        let guard = Guard::new(CancellationToken::new(), call.timeout);
        update(&call.session, &query.query, Vec::new(), &guard).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let user = self.user(request.metadata())?;
        let prepared = self.prepared(&query.prepared_statement_handle, &user)?;
        let values = read_parameters(request.into_inner()).await?;
        if let Ok(mut bound) = prepared.parameters.lock() {
            *bound = values;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let user = self.user(request.metadata())?;
        let prepared = self.prepared(&query.prepared_statement_handle, &user)?;
        let timeout = self.timeout(request.metadata());
        let guard = Guard::new(CancellationToken::new(), timeout);
        // The values come with the update, else those bound before.
        let mut parameters = read_parameters(request.into_inner()).await?;
        if parameters.is_empty() {
            parameters = prepared.bound();
        }
        update(&prepared.session, &prepared.sql, parameters, &guard).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let call = self.call(request.metadata())?;
        let guard = Guard::new(CancellationToken::new(), call.timeout);
        let plan = guard
            .run(plan(&call.session, &query.query, Vec::new()))
            .await
            .map_err(halt)?;
        let parameter_schema = parameter_schema(&plan)?;
        let dataset_schema = if !returns_rows(&plan) {
            Schema::empty()
        } else if parameter_schema.fields().is_empty() {
            // The schema the rows will come with; with placeholders, the physical plan
            // waits for their values, and the logical schema is the best guess.
            let frame = guard.run(call.session.run_plan(plan)).await.map_err(halt)?;
            let physical = guard
                .run(frame.create_physical_plan())
                .await
                .map_err(halt)?;
            physical.schema().as_ref().clone()
        } else {
            plan.schema().as_arrow().clone()
        };
        let handle = self.prepared.insert(Owned {
            user: call.user,
            value: Arc::new(Prepared {
                sql: query.query,
                session: call.session,
                kept: AtomicBool::new(call.kept),
                parameters: Mutex::new(Vec::new()),
            }),
        });
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let user = self.user(request.metadata())?;
        self.prepared(&query.prepared_statement_handle, &user)?;
        self.prepared
            .remove(&String::from_utf8_lossy(&query.prepared_statement_handle));
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.user(request.metadata())?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        let result = match self.cancel(&info)? {
            CancelStatus::Cancelled => 1,
            _ => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let kind = request.get_ref().r#type.clone();
        if kind != CANCEL_FLIGHT_INFO {
            return Err(Status::unimplemented(format!("no action {kind:?}")));
        }
        self.user(request.metadata())?;
        let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|e| Status::invalid_argument(format!("not a CancelFlightInfoRequest: {e}")))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("the cancel request has no FlightInfo"))?;
        let result = CancelFlightInfoResult::new(self.cancel(&info)?);
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(stream::once(async { Ok(body) }))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description: "Cancels the query of a FlightInfo.\n
                Request Message: CancelFlightInfoRequest\n
                Response Message: CancelFlightInfoResult"
                .into(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Runs a statement that returns no rows; a query is refused.
async fn update(
    session: &Session,
    sql: &str,
    parameters: Vec<ScalarValue>,
    guard: &Guard,
) -> Result<i64, Status> {
    let plan = guard
        .run(plan(session, sql, parameters))
        .await
        .map_err(halt)?;
    if returns_rows(&plan) {
        return Err(Status::invalid_argument(
            "the statement returns rows: run it as a query",
        ));
    }
    guard
        .run(async { session.run_plan(plan).await?.collect().await })
        .await
        .map_err(halt)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_deadlines_are_read_in_every_unit() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&metadata)
        };
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("7u"), Some(Duration::from_micros(7)));
        assert_eq!(with("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(with("5x"), None);
        assert_eq!(with("S"), None);
        assert_eq!(
            with("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(with("184467440737095516S"), None);
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut metadata = MetadataMap::new();
        metadata.insert("cookie", "a=1".parse().unwrap());
        assert_eq!(session_cookie(&metadata), None);
        metadata.append(
            "cookie",
            "b=2; arrow_flight_session_id=abc ; c=3".parse().unwrap(),
        );
        assert_eq!(session_cookie(&metadata).as_deref(), Some("abc"));
    }

    #[test]
    fn a_ticket_that_is_not_ours_is_refused_with_the_reason() {
        let garbage = handle(b"\x01\x02garbage").unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
        assert!(garbage.message().contains("not a ticket of this server"));
        let other = CommandGetCatalogs {}.as_any().encode_to_vec();
        let message = handle(&other).unwrap_err().message().to_string();
        assert!(message.contains("CommandGetCatalogs"), "{message}");
        let ours = Handle {
            id: "q1".into(),
            rows: Rows::Sql {
                sql: "SELECT 1".into(),
            },
        };
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&ours).unwrap().into(),
        };
        let decoded = handle(&ticket.as_any().encode_to_vec()).unwrap();
        assert_eq!(decoded.id, "q1");
        assert!(matches!(decoded.rows, Rows::Sql { sql } if sql == "SELECT 1"));
    }

    #[test]
    fn parameter_values_survive_a_ticket() {
        let values = vec![
            ScalarValue::Int64(Some(7)),
            ScalarValue::Utf8(Some("x".into())),
            ScalarValue::TimestampMicrosecond(Some(1_717_545_600_000_000), Some("UTC".into())),
            ScalarValue::Float64(None),
        ];
        let encoded = encode_parameters(&values).unwrap();
        assert_eq!(decode_parameters(&encoded).unwrap(), values);
        let forged = decode_parameters(&["!!".to_string()]).unwrap_err();
        assert!(forged.message().contains("not a ticket of this server"));
    }
}
