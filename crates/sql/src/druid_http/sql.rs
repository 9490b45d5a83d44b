//! Druid's SQL API, `/druid/v2/sql`:
//!
//! - `POST /druid/v2/sql` with `query`, `resultFormat` (`object`, `array`,
//!   `objectLines`, `arrayLines`, `csv`), `header`, `typesHeader`, `sqlTypesHeader`
//!   `parameters` (values of the query's `?` placeholders, in order, as
//!   `{"type": "VARCHAR", "value": ...}`) and `context` (`sqlQueryId`, `timeout` in
//!   ms, else the broker's `query_timeout`; `useCache`, `populateCache`; other keys
//!   are ignored, as Druid does). The answer names its query in
//!   `X-Druid-SQL-Query-Id`. Each request runs in a session of its own; the query may
//!   hold several statements separated by `;` (a view, a query over it, dropping the
//!   view), and the answer is the last query's rows.
//! - `DELETE /druid/v2/sql/{sqlQueryId}` cancels a running query: `202 Accepted`, or
//!   `404` when no query of that id runs. The cancelled request answers an error, and
//!   its fragments stop on the historicals (their streams are dropped).
//!
//! Rows stream as they come, rendered a batch at a time. Errors before the first row
//! are Druid's JSON (`error`, `errorMessage`): `400` for the query's fault, `504` for
//! a timeout, `500` otherwise; an error after rows were sent ends the answer early,
//! as Druid's does (no closing empty line, no closing `]`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use futures::StreamExt;
use grove_segment::id::parse_instant;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Api;
use super::running::Registered;
use super::{error, error_of_class, halted};
use crate::Session;
use crate::druid::json::{json_rows, object_text};
use crate::druid::types::{SqlType, native_type};
use crate::guard::{Guard, Halt};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ResultFormat {
    #[default]
    Object,
    Array,
    ObjectLines,
    ArrayLines,
    Csv,
}

/// A request, as Druid takes it: fields it does not know are ignored, and a field set
/// to `null` is as if it were left out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqlRequest {
    query: String,
    #[serde(default, deserialize_with = "null_as_default")]
    result_format: ResultFormat,
    #[serde(default, deserialize_with = "null_as_default")]
    header: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    types_header: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    sql_types_header: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    context: Map<String, Value>,
    /// Values of the query's `?` placeholders, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    parameters: Vec<Parameter>,
}

/// A field's value, or its default when it is `null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A dynamic parameter: `{"type": "VARCHAR", "value": "x"}`.
#[derive(Deserialize)]
struct Parameter {
    #[serde(rename = "type")]
    sql_type: String,
    value: Value,
}

impl Parameter {
    /// The value as the SQL type it names; JSON null is that type's NULL.
    fn scalar(&self) -> Result<ScalarValue, String> {
        let kind = self.sql_type.to_ascii_uppercase();
        let value = &self.value;
        let wrong = || format!("parameter {value} is not a {kind}");
        let text = value.as_str();
        let null = value.is_null();
        Ok(match kind.as_str() {
            "VARCHAR" | "CHAR" => ScalarValue::Utf8(match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }),
            "BIGINT" | "INTEGER" | "SMALLINT" | "TINYINT" => {
                ScalarValue::Int64(parsed(value, Value::as_i64).ok_or_else(wrong)?)
            }
            "DOUBLE" | "FLOAT" | "REAL" | "DECIMAL" => {
                ScalarValue::Float64(parsed(value, Value::as_f64).ok_or_else(wrong)?)
            }
            "BOOLEAN" => ScalarValue::Boolean(parsed(value, Value::as_bool).ok_or_else(wrong)?),
            "TIMESTAMP" => {
                let millis = match (value.as_i64(), text) {
                    _ if null => None,
                    (Some(ms), _) => Some(ms),
                    (None, Some(t)) => Some(parse_instant(t).map_err(|_| wrong())?),
                    (None, None) => return Err(wrong()),
                };
                ScalarValue::TimestampMillisecond(millis, Some("UTC".into()))
            }
            "DATE" => {
                let days = match text {
                    _ if null => None,
                    Some(t) => Some(
                        parse_instant(t)
                            .map_err(|_| wrong())?
                            .div_euclid(86_400_000),
                    ),
                    None => return Err(wrong()),
                };
                ScalarValue::Date32(days.and_then(|d| i32::try_from(d).ok()))
            }
            _ => return Err(format!("parameter type {kind} is not supported")),
        })
    }
}

/// `value` as a `T`: `Some(None)` for JSON null, else the JSON value of that type or
/// text that parses as one; `None` when it is neither.
fn parsed<T: std::str::FromStr>(
    value: &Value,
    from_json: fn(&Value) -> Option<T>,
) -> Option<Option<T>> {
    if value.is_null() {
        return Some(None);
    }
    from_json(value)
        .or_else(|| value.as_str()?.parse().ok())
        .map(Some)
}

/// The SQL API's routes.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/druid/v2/sql", post(sql))
        .route("/druid/v2/sql/", post(sql))
        .route("/druid/v2/sql/{id}", delete(cancel))
        .with_state(api)
}

/// Druid query context keys and the session settings they set.
const CONTEXT_SETTINGS: [(&str, &str); 2] = [
    ("useCache", "grove.use_cache"),
    ("populateCache", "grove.populate_cache"),
];

/// Applies the request's context to its session.
pub(super) fn apply_context(session: &Session, context: &Map<String, Value>) -> Result<(), String> {
    for (key, setting) in CONTEXT_SETTINGS {
        match context.get(key) {
            None => {}
            Some(Value::Bool(on)) => session
                .set(setting, &on.to_string())
                .map_err(|e| format!("context {key}: {e}"))?,
            Some(other) => {
                return Err(format!("context {key} must be true or false, not {other}"));
            }
        }
    }
    Ok(())
}

/// The query's `timeout` (ms), or `default` when its context sets none.
pub(super) fn timeout(
    context: &Map<String, Value>,
    default: Option<Duration>,
) -> Result<Option<Duration>, String> {
    match context.get("timeout") {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or_else(|| format!("context timeout must be milliseconds, not {value}")),
    }
}

/// Druid's error for a failed statement: `400` when it is the query's fault (bad SQL,
/// unknown names, refused statements), else the cluster's: `500`.
pub(super) fn failure(e: &DataFusionError) -> Response {
    let (status, code, class) = match e.find_root() {
        DataFusionError::SQL(..) => (StatusCode::BAD_REQUEST, "SQL parse failed", "SQL"),
        DataFusionError::Plan(_) => (StatusCode::BAD_REQUEST, "Plan validation failed", "Plan"),
        DataFusionError::SchemaError(..) => (
            StatusCode::BAD_REQUEST,
            "Plan validation failed",
            "SchemaError",
        ),
        DataFusionError::Configuration(_) => (
            StatusCode::BAD_REQUEST,
            "Plan validation failed",
            "Configuration",
        ),
        DataFusionError::NotImplemented(_) => (
            StatusCode::BAD_REQUEST,
            "SQL query is unsupported",
            "NotImplemented",
        ),
        DataFusionError::ResourcesExhausted(_) => (
            StatusCode::BAD_REQUEST,
            "Resource limit exceeded",
            "ResourcesExhausted",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unknown exception",
            "Execution",
        ),
    };
    error_of_class(status, code, Some(&format!("DataFusionError::{class}")), e)
}

async fn sql(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Json parse failed", e),
    };
    let session = api.engine.session().with_druid_names();
    let limit = match apply_context(&session, &request.context)
        .and_then(|()| timeout(&request.context, api.default_timeout))
    {
        Ok(limit) => limit,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Query context parse failed", e),
    };
    let id = match request.context.get("sqlQueryId") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => {
            let why = format!("context sqlQueryId must be a string, not {other}");
            return error(StatusCode::BAD_REQUEST, "Query context parse failed", why);
        }
        None => api.running.id(None),
    };
    let parameters = match request.parameters.iter().map(Parameter::scalar).collect() {
        Ok(values) => values,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Plan validation failed", e),
    };
    let (registered, token) = match api.running.register(&id) {
        Ok(registered) => registered,
        Err(why) => return error(StatusCode::BAD_REQUEST, "Query context parse failed", why),
    };
    let guard = Guard::new(token, limit);
    let mut response = match answer(&request, &session, parameters, guard, registered).await {
        Ok(response) => response,
        Err(halt) => halted(&id, halt, |e| failure(&e)),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("X-Druid-SQL-Query-Id", value);
    }
    response
}

/// Runs the request's statements under `guard` and answers the rows as they come.
/// What fails before the first row is the answer's error status; what fails after
/// it ends the answer early (as Druid does): the lines formats then lack their
/// closing empty line, and JSON arrays are left open.
async fn answer(
    request: &SqlRequest,
    session: &Session,
    parameters: Vec<ScalarValue>,
    guard: Guard,
    registered: Registered,
) -> Result<Response, Halt> {
    let (schema, rows) = guard
        .run(session.script_stream(&request.query, parameters))
        .await?;
    let mut rows = guard.batches(rows).boxed();
    let first = match rows.next().await {
        Some(Err(halt)) => return Err(halt),
        first => first,
    };
    let mut format = Rendering::new(request, schema);
    let head = Bytes::from(format.head());
    let tail = Bytes::from_static(format.tail().as_bytes());
    let body = futures::stream::once(async move { Ok(head) })
        .chain(futures::stream::iter(first).chain(rows).map(move |batch| {
            let batch = batch.map_err(|halt| std::io::Error::other(halt_text(halt)))?;
            format
                .rows(&batch)
                .map(Bytes::from)
                .map_err(std::io::Error::other)
        }))
        .chain(futures::stream::once(async move {
            // The query is listed (and can be cancelled) until its last row is sent.
            drop(registered);
            Ok::<_, std::io::Error>(tail)
        }));
    let mut response = (
        [(header::CONTENT_TYPE, request.result_format.content_type())],
        Body::from_stream(body),
    )
        .into_response();
    if request.header {
        response.headers_mut().insert(
            "X-Druid-SQL-Header-Included",
            HeaderValue::from_static("yes"),
        );
    }
    Ok(response)
}

/// Why an answer ended early, for the log of the connection it breaks.
fn halt_text(halt: Halt) -> String {
    match halt {
        Halt::Cancelled => "the query was cancelled".into(),
        Halt::TimedOut => "the query did not finish within its timeout".into(),
        Halt::Failed(e) => e.to_string(),
    }
}

async fn cancel(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    super::cancel(&api.running, &id)
}

impl ResultFormat {
    fn content_type(self) -> &'static str {
        match self {
            ResultFormat::Object | ResultFormat::Array => "application/json",
            ResultFormat::ObjectLines | ResultFormat::ArrayLines => "application/x-ndjson",
            ResultFormat::Csv => "text/csv",
        }
    }
}

/// Writes an answer in the request's result format, a batch of rows at a time.
struct Rendering {
    format: ResultFormat,
    schema: SchemaRef,
    header: bool,
    types_header: bool,
    sql_types_header: bool,
    /// Whether the JSON array has an element yet (the next one needs a comma).
    started: bool,
}

impl Rendering {
    fn new(request: &SqlRequest, schema: SchemaRef) -> Rendering {
        Rendering {
            format: request.result_format,
            schema,
            header: request.header,
            types_header: request.types_header,
            sql_types_header: request.sql_types_header,
            started: false,
        }
    }

    /// What comes before the rows: the array's opening and the header rows asked for.
    fn head(&mut self) -> String {
        let mut out = String::new();
        if matches!(self.format, ResultFormat::Object | ResultFormat::Array) {
            out.push('[');
        }
        if !self.header {
            return out;
        }
        let fields = self.schema.fields().clone();
        if matches!(
            self.format,
            ResultFormat::Object | ResultFormat::ObjectLines
        ) {
            // One object naming the columns, with their types as asked.
            let columns = fields.iter().map(|f| {
                let mut about = Map::new();
                if self.types_header {
                    about.insert("type".into(), native_type(f.data_type()).into());
                }
                if self.sql_types_header {
                    about.insert("sqlType".into(), SqlType::of(f.data_type()).name.into());
                }
                let about = if about.is_empty() {
                    Value::Null
                } else {
                    Value::Object(about)
                };
                (f.name().as_str(), about)
            });
            let header: Vec<(&str, Value)> = columns.collect();
            self.element(&mut out, &object_text(&header));
            return out;
        }
        let mut rows = vec![
            fields
                .iter()
                .map(|f| Value::from(f.name().as_str()))
                .collect(),
        ];
        if self.types_header {
            rows.push(
                fields
                    .iter()
                    .map(|f| native_type(f.data_type()).into())
                    .collect(),
            );
        }
        if self.sql_types_header {
            rows.push(
                fields
                    .iter()
                    .map(|f| SqlType::of(f.data_type()).name.into())
                    .collect(),
            );
        }
        for row in rows {
            self.row(&mut out, row);
        }
        out
    }

    /// The rows of `batch`.
    fn rows(&mut self, batch: &RecordBatch) -> Result<String, String> {
        let mut out = String::new();
        for row in json_rows(&self.schema, batch)? {
            self.row(&mut out, row);
        }
        Ok(out)
    }

    /// What comes after the rows: the array's end, or the empty line that is Druid's
    /// sign of a complete answer.
    fn tail(&self) -> &'static str {
        match self.format {
            ResultFormat::Object | ResultFormat::Array => "]",
            _ => "\n",
        }
    }

    fn row(&mut self, out: &mut String, row: Vec<Value>) {
        match self.format {
            ResultFormat::Object | ResultFormat::ObjectLines => {
                let names = self.schema.fields().iter().map(|f| f.name().as_str());
                let pairs: Vec<(&str, Value)> = names.zip(row).collect();
                let text = object_text(&pairs);
                self.element(out, &text);
            }
            ResultFormat::Array | ResultFormat::ArrayLines => {
                self.element(out, &Value::Array(row).to_string());
            }
            ResultFormat::Csv => {
                out.push_str(&csv_line(&row));
                out.push('\n');
            }
        }
    }

    /// One JSON value, written: an element of the array, or a line.
    fn element(&mut self, out: &mut String, json: &str) {
        match self.format {
            ResultFormat::Object | ResultFormat::Array => {
                if self.started {
                    out.push(',');
                }
                self.started = true;
                out.push_str(json);
            }
            _ => {
                out.push_str(json);
                out.push('\n');
            }
        }
    }
}

fn csv_line(row: &[Value]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|value| {
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if text.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text
            }
        })
        .collect();
    cells.join(",")
}
