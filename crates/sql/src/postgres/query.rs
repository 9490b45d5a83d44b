//! One Postgres connection's statements: the simple and the extended query protocol
//! over a Grove [`Session`].
//!
//! A statement is one of three kinds. Transaction control (`BEGIN`, `COMMIT`,
//! `ROLLBACK`) is acknowledged: drivers wrap statements in transactions, and Grove's
//! reads need none. Postgres settings (`SET DateStyle`, `SHOW TimeZone`,
//! `statement_timeout`) belong to the connection and shape how values are written.
//! Everything else, Grove and DataFusion settings (`SET grove.use_cache = false`)
//! among it, is planned and run by the session.
//!
//! The extended protocol plans a statement when it is parsed, to describe its
//! parameters and columns, and plans it again when it is executed, so that it reads
//! the segments published in between.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::iter;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::common::config::ExtensionOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, SinkExt, Stream, StreamExt, stream};
use pgwire::api::auth::ServerParameterProvider;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::startup::ParameterStatus;
use pgwire::types::format::FormatOptions;

use super::Canceller;
use crate::Session;
use crate::engine::returns_rows;
use crate::guard::{Guard, Halt};
use crate::settings::GroveSettings;

/// One connection's session and settings.
pub(super) struct PgSession {
    session: Session,
    parser: PostgresCompatibilityParser,
    /// The server's default when the connection has not set `statement_timeout`.
    default_timeout: Option<Duration>,
    /// `SET statement_timeout`: `Some(None)` is no limit (`0`).
    statement_timeout: Mutex<Option<Option<Duration>>>,
    canceller: Arc<Canceller>,
}

/// A statement of the extended protocol, parsed and (when DataFusion runs it) planned.
#[derive(Debug)]
pub(super) struct Prepared {
    statement: Statement,
    command: Command,
    /// The plan at parse time: parameter types and columns.
    plan: Option<LogicalPlan>,
}

/// What a statement asks for.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Begin,
    Commit,
    Rollback,
    /// A Postgres setting of the connection, named in lower case.
    Set {
        name: String,
        value: String,
    },
    Show(String),
    /// Accepted, changing nothing (`SET TRANSACTION ...`), with its command tag.
    Acknowledge(&'static str),
    /// `DEALLOCATE name`: forgets a prepared statement.
    Deallocate(String),
    /// Planned and run by the session.
    Sql,
}

impl PgSession {
    pub(super) fn new(
        session: Session,
        default_timeout: Option<Duration>,
        canceller: Arc<Canceller>,
    ) -> Self {
        PgSession {
            session,
            parser: PostgresCompatibilityParser::new(),
            default_timeout,
            statement_timeout: Mutex::new(None),
            canceller,
        }
    }

    /// What the statements about to run may not outlive: a cancel request or their
    /// timeout.
    fn guard(&self) -> Guard {
        Guard::new(self.canceller.begin(), self.timeout())
    }

    /// The connection's `statement_timeout`, else the server's default.
    fn timeout(&self) -> Option<Duration> {
        self.statement_timeout
            .lock()
            .ok()
            .and_then(|set| *set)
            .unwrap_or(self.default_timeout)
    }

    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        self.parser
            .parse(sql)
            .map_err(|e| user_error("42601", e.to_string()))
    }

    async fn plan(&self, statement: Statement) -> datafusion::error::Result<LogicalPlan> {
        self.session
            .plan(DfStatement::Statement(Box::new(statement)))
            .await
    }

    /// Runs one statement; `params` are the bound values of its placeholders.
    async fn respond<C>(
        &self,
        client: &mut C,
        statement: Statement,
        command: &Command,
        params: ParamValues,
        format: &Format,
        guard: &Guard,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match command {
            Command::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Command::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Command::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Command::Acknowledge(tag) => Ok(Response::Execution(Tag::new(tag))),
            Command::Deallocate(name) => {
                client.portal_store().rm_statement(name);
                Ok(Response::Execution(Tag::new("DEALLOCATE")))
            }
            Command::Set { name, value } => self.set(client, name, value).await,
            Command::Show(name) => self.show(client, name),
            Command::Sql => self.run(client, statement, params, format, guard).await,
        }
    }

    async fn run<C: ClientInfo>(
        &self,
        client: &C,
        statement: Statement,
        params: ParamValues,
        format: &Format,
        guard: &Guard,
    ) -> PgWireResult<Response> {
        let tag = command_tag(&statement);
        let plan = guarded(guard, self.plan(statement)).await?;
        let plan = plan.with_param_values(params).map_err(error)?;
        if !returns_rows(&plan) {
            guarded(guard, async {
                self.session.run_plan(plan).await?.collect().await
            })
            .await?;
            return Ok(Response::Execution(Tag::new(&tag)));
        }
        let frame = guarded(guard, self.session.run_plan(plan)).await?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            frame.schema().as_arrow(),
            format,
            Some(options),
        )?);
        let batches = guarded(guard, frame.execute_stream()).await?;
        let rows = rows(batches, Arc::clone(&fields), guard.clone());
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// `SET name = value` of a Postgres setting.
    async fn set<C>(&self, client: &mut C, name: &str, value: &str) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match name {
            "statement_timeout" => {
                let timeout = parse_timeout(value).ok_or_else(|| {
                    user_error(
                        "22023",
                        format!("invalid value for parameter \"statement_timeout\": {value:?}"),
                    )
                })?;
                if let Ok(mut set) = self.statement_timeout.lock() {
                    *set = Some(timeout);
                }
            }
            "client_encoding"
                if !matches!(
                    value.to_ascii_uppercase().as_str(),
                    "UTF8" | "UTF-8" | "UNICODE"
                ) =>
            {
                return Err(user_error(
                    "22023",
                    format!("client encoding {value:?} is not supported: Grove speaks UTF8"),
                ));
            }
            _ => {
                client
                    .metadata_mut()
                    .insert(name.to_string(), value.to_string());
                if let Some(reported) = reported_name(name) {
                    let status = ParameterStatus::new(reported.to_string(), value.to_string());
                    client
                        .feed(PgWireBackendMessage::ParameterStatus(status))
                        .await?;
                }
            }
        }
        Ok(Response::Execution(Tag::new("SET")))
    }

    /// `SHOW name`: a Postgres setting, the connection's value else the server's; or a
    /// Grove or DataFusion setting of the session.
    fn show<C: ClientInfo>(&self, client: &C, name: &str) -> PgWireResult<Response> {
        let value = if name.contains('.') {
            // A Grove or DataFusion setting of the session.
            let state = self.session.context().state();
            let options = state.config().options();
            // An extension names its entries without its prefix.
            let (entries, key) = match name.strip_prefix("grove.") {
                Some(key) => (
                    options
                        .extensions
                        .get::<GroveSettings>()
                        .map(ExtensionOptions::entries)
                        .unwrap_or_default(),
                    key,
                ),
                None => (options.entries(), name),
            };
            entries
                .into_iter()
                .find(|entry| entry.key.trim_start_matches('.') == key)
                .map(|entry| entry.value.unwrap_or_default())
        } else if name == "statement_timeout" {
            let timeout = self.timeout();
            Some(timeout.map_or("0".to_string(), |t| format!("{}ms", t.as_millis())))
        } else {
            let server = super::server_parameters().server_parameters(client);
            lookup(client.metadata(), name)
                .or_else(|| server.as_ref().and_then(|s| lookup(s, name)))
                .or_else(|| {
                    FIXED_SETTINGS
                        .iter()
                        .find(|(setting, _)| *setting == name)
                        .map(|(_, value)| value.to_string())
                })
        };
        let value = value.ok_or_else(|| {
            user_error(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        let fields = Arc::new(vec![text_field(name)]);
        let mut row = DataRowEncoder::new(Arc::clone(&fields));
        row.encode_field(&Some(value))?;
        let row = row.take_row();
        Ok(Response::Query(QueryResponse::new(
            fields,
            stream::once(async { Ok(row) }),
        )))
    }

    /// The parameter types of a planned statement, `$1` first.
    fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
        let types = plan.get_parameter_types().map_err(error)?;
        let mut numbered: HashMap<usize, Option<DataType>> = HashMap::new();
        for (id, data_type) in types {
            match id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => {
                    numbered.insert(n, data_type);
                }
                _ => {
                    return Err(user_error(
                        "42P02",
                        format!("parameter {id} is not of the form $1, $2, ..."),
                    ));
                }
            }
        }
        let count = numbered.keys().copied().max().unwrap_or(0);
        Ok((1..=count).map(|n| numbered.remove(&n).flatten()).collect())
    }
}

/// Postgres settings every connection has, beyond the start-up parameters.
const FIXED_SETTINGS: [(&str, &str); 6] = [
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("max_identifier_length", "63"),
    ("server_version_num", "160006"),
    ("lc_collate", "C"),
];

/// Settings Postgres reports to the client when they change (`ParameterStatus`).
fn reported_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "application_name" => "application_name",
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "timezone" => "TimeZone",
        "standard_conforming_strings" => "standard_conforming_strings",
        _ => return None,
    })
}

fn lookup(settings: &HashMap<String, String>, name: &str) -> Option<String> {
    settings
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

/// A Postgres duration setting: milliseconds unless a unit says otherwise; `0` is no
/// limit.
fn parse_timeout(value: &str) -> Option<Option<Duration>> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "" | "ms" => number,
        "s" => number.checked_mul(1_000)?,
        "min" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        "d" => number.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some((millis > 0).then(|| Duration::from_millis(millis)))
}

fn command(statement: &Statement) -> Command {
    match statement {
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback { .. } => Command::Rollback,
        // Dotted names (`grove.use_cache`, `datafusion.execution.batch_size`) are the
        // session's.
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) if variable.0.len() == 1 => Command::Set {
            name: variable.to_string().to_lowercase(),
            value: values.iter().map(text).collect::<Vec<_>>().join(", "),
        },
        Statement::Set(Set::SetTimeZone { value, .. }) => Command::Set {
            name: "timezone".into(),
            value: text(value),
        },
        Statement::Set(Set::SetTransaction { .. } | Set::SetNames { .. }) => {
            Command::Acknowledge("SET")
        }
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|w| w.value.to_lowercase()).collect();
            match words.join(" ").as_str() {
                "time zone" => Command::Show("timezone".into()),
                "transaction isolation level" => Command::Show("transaction_isolation".into()),
                "all" => Command::Sql,
                // `grove.use_cache` arrives as two words.
                _ => Command::Show(words.join(".")),
            }
        }
        // Prepared statements are the protocol's (pgwire keeps them), not DataFusion's.
        Statement::Deallocate { name, .. } if name.value.eq_ignore_ascii_case("all") => {
            Command::Acknowledge("DEALLOCATE ALL")
        }
        Statement::Deallocate { name, .. } => Command::Deallocate(name.value.clone()),
        // Nothing of a session outlives its statements but views and settings, which
        // a pooler resetting a connection with `DISCARD ALL` keeps.
        Statement::Discard { .. } => Command::Acknowledge("DISCARD ALL"),
        _ => Command::Sql,
    }
}

/// A setting's value as written: `'ISO, MDY'` is `ISO, MDY`.
fn text(expr: &Expr) -> String {
    match expr {
        Expr::Value(value) => value
            .value
            .clone()
            .into_string()
            .unwrap_or_else(|| value.to_string()),
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// The command tag Postgres answers a statement without rows with.
fn command_tag(statement: &Statement) -> String {
    match statement {
        Statement::CreateView(_) => "CREATE VIEW".into(),
        Statement::CreateTable(_) => "CREATE TABLE".into(),
        Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
        Statement::Set(_) => "SET".into(),
        other => other
            .to_string()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_uppercase(),
    }
}

fn text_field(name: &str) -> FieldInfo {
    FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)
}

/// Runs `work` under `guard`, as a Postgres error when it is stopped or fails.
async fn guarded<T>(
    guard: &Guard,
    work: impl Future<Output = datafusion::error::Result<T>>,
) -> PgWireResult<T> {
    guard.run(work).await.map_err(halt)
}

fn halt(halt: Halt) -> PgWireError {
    match halt {
        Halt::Cancelled => user_error("57014", "canceling statement due to user request"),
        Halt::TimedOut => user_error("57014", "canceling statement due to statement timeout"),
        Halt::Failed(e) => error(e),
    }
}

/// A query's rows, as its batches arrive, until it ends, fails, is cancelled or times
/// out.
fn rows(
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    guard: Guard,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send {
    guard.batches(batches).flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> = match batch {
            Ok(batch) => encode_recordbatch(Arc::clone(&fields), batch),
            Err(e) => Box::new(iter::once(Err(halt(e)))),
        };
        stream::iter(rows)
    })
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// A DataFusion error as Postgres would classify it.
fn error(e: DataFusionError) -> PgWireError {
    let code = match e.find_root() {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(message) if message.contains("not found") => "42P01",
        DataFusionError::Plan(_) => "42000",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::Configuration(_) => "22023",
        DataFusionError::ResourcesExhausted(_) => "53200",
        _ => "XX000",
    };
    user_error(code, e.strip_backtrace())
}

/// The simple and extended query protocol handlers of one connection.
pub(super) struct Queries {
    session: Arc<PgSession>,
}

impl Queries {
    pub(super) fn new(session: PgSession) -> Self {
        Queries {
            session: Arc::new(session),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        tracing::debug!("postgres query: {query}");
        let statements = self.session.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let guard = self.session.guard();
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let command = command(&statement);
            let params = ParamValues::List(Vec::new());
            let format = Format::UnifiedText;
            match (
                self.session
                    .respond(client, statement, &command, params, &format, &guard)
                    .await,
                responses.is_empty(),
            ) {
                (Ok(response), _) => responses.push(response),
                (Err(e), true) => return Err(e),
                // Postgres stops at the first failing statement; those before it stand.
                (Err(e), false) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for PgSession {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        tracing::debug!("postgres parse: {sql}");
        let mut statements = self.parse(sql)?;
        let statement = match statements.len() {
            0 => return Ok(None),
            1 => statements.remove(0),
            _ => {
                return Err(user_error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
        };
        let command = command(&statement);
        let plan = match command {
            Command::Sql => Some(self.plan(statement.clone()).await.map_err(error)?),
            _ => None,
        };
        Ok(Some(Arc::new(Prepared {
            statement,
            command,
            plan,
        })))
    }

    fn get_parameter_types(&self, prepared: &Self::Statement) -> PgWireResult<Vec<Type>> {
        let Some(plan) = &prepared.plan else {
            return Ok(Vec::new());
        };
        PgSession::parameter_types(plan)?
            .iter()
            .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
            .collect()
    }

    fn get_result_schema(
        &self,
        prepared: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match (&prepared.command, &prepared.plan) {
            (Command::Show(name), _) => Ok(vec![text_field(name)]),
            (Command::Sql, Some(plan)) if returns_rows(plan) => arrow_schema_to_pg_fields(
                plan.schema().as_arrow(),
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Arc<Prepared>;
    type QueryParser = PgSession;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.session)
    }

    /// pgwire's own handling collects every row of a portal before sending any when
    /// the client asks for all of them (`max_rows` 0, as psycopg, JDBC and SQLAlchemy
    /// do), which would hold a large answer whole in memory. A portal's first
    /// execution that returns rows streams them here instead, as they come; a client
    /// reading a portal a page at a time keeps pgwire's handling, which holds a page.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if message.max_rows == 0 => portal,
            _ => return self._on_execute(client, message).await,
        };
        let prepared = &portal.statement.statement;
        let rows = matches!(prepared.command, Command::Sql)
            && prepared.plan.as_ref().is_some_and(returns_rows);
        let initial = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        if !rows || !initial {
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await? {
            Response::Query(answer) => send_query_response(client, answer, false).await?,
            Response::Execution(tag) => send_execution_response(client, tag).await?,
            other => {
                return Err(PgWireError::ApiError(
                    format!("a query answered {other:?}").into(),
                ));
            }
        }
        *portal.state().lock().await = PortalExecutionState::Finished;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let params = match &prepared.plan {
            Some(plan) => {
                let types = PgSession::parameter_types(plan)?;
                let types: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
                deserialize_parameters(portal, &types)?
            }
            None => ParamValues::List(Vec::new()),
        };
        let guard = self.session.guard();
        self.session
            .respond(
                client,
                prepared.statement.clone(),
                &prepared.command,
                params,
                &portal.result_column_format,
                &guard,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_are_read_as_postgres_reads_them() {
        assert_eq!(parse_timeout("250"), Some(Some(Duration::from_millis(250))));
        assert_eq!(
            parse_timeout("250ms"),
            Some(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_timeout("2s"), Some(Some(Duration::from_secs(2))));
        assert_eq!(parse_timeout("1min"), Some(Some(Duration::from_secs(60))));
        assert_eq!(parse_timeout("0"), Some(None));
        assert_eq!(parse_timeout("soon"), None);
        assert_eq!(parse_timeout("5 fortnights"), None);
        assert_eq!(parse_timeout(""), None);
    }

    #[test]
    fn statements_are_sorted_into_what_the_connection_answers_and_what_the_session_runs() {
        let parser = PostgresCompatibilityParser::new();
        let of = |sql: &str| command(&parser.parse(sql).unwrap().remove(0));
        assert_eq!(of("BEGIN"), Command::Begin);
        assert_eq!(of("COMMIT"), Command::Commit);
        assert_eq!(of("ROLLBACK"), Command::Rollback);
        assert_eq!(
            of("SET DateStyle = 'ISO, MDY'"),
            Command::Set {
                name: "datestyle".into(),
                value: "ISO, MDY".into()
            }
        );
        assert_eq!(
            of("SET TIME ZONE 'Europe/Paris'"),
            Command::Set {
                name: "timezone".into(),
                value: "Europe/Paris".into()
            }
        );
        assert_eq!(of("SHOW TIME ZONE"), Command::Show("timezone".into()));
        assert_eq!(
            of("SHOW server_version"),
            Command::Show("server_version".into())
        );
        assert_eq!(of("SET grove.use_cache = false"), Command::Sql);
        assert_eq!(
            of("SHOW grove.use_cache"),
            Command::Show("grove.use_cache".into())
        );
        assert_eq!(of("SHOW ALL"), Command::Sql);
        assert_eq!(of("SELECT 1"), Command::Sql);
    }
}
