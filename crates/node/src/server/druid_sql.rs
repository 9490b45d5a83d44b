//! Druid's SQL HTTP API, on a broker and `grove start`:
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
//! Errors are Druid's JSON (`error`, `errorMessage`): `400` for the query's fault,
//! `504` for a timeout, `500` otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use futures::future::{AbortHandle, Abortable};
use grove_segment::id::parse_instant;
use grove_sql::{Engine, Session};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::error;

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqlRequest {
    query: String,
    #[serde(default)]
    result_format: ResultFormat,
    #[serde(default)]
    header: bool,
    #[serde(default)]
    types_header: bool,
    #[serde(default)]
    sql_types_header: bool,
    #[serde(default)]
    context: Map<String, Value>,
    /// Values of the query's `?` placeholders, in order.
    #[serde(default)]
    parameters: Vec<Parameter>,
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

/// The broker's SQL API and the queries it is running.
struct SqlApi {
    engine: Arc<Engine>,
    /// A query's time limit when its context sets none.
    default_timeout: Option<Duration>,
    running: Mutex<HashMap<String, AbortHandle>>,
    next_id: AtomicU64,
}

/// The SQL API's routes; queries run at most `default_timeout` unless their context
/// sets a `timeout`.
pub fn routes(engine: Arc<Engine>, default_timeout: Option<Duration>) -> Router {
    let api = Arc::new(SqlApi {
        engine,
        default_timeout,
        running: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    Router::new()
        .route("/druid/v2/sql", post(sql))
        .route("/druid/v2/sql/{id}", delete(cancel))
        .with_state(api)
}

/// Druid query context keys and the session settings they set.
const CONTEXT_SETTINGS: [(&str, &str); 2] = [
    ("useCache", "grove.use_cache"),
    ("populateCache", "grove.populate_cache"),
];

/// Applies the request's context to its session.
fn apply_context(session: &Session, context: &Map<String, Value>) -> Result<(), String> {
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
fn timeout(
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

/// Whether a failed statement is the query's fault (bad SQL, unknown names, refused
/// statements), as opposed to the cluster's.
fn is_users_fault(e: &DataFusionError) -> bool {
    matches!(
        e.find_root(),
        DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_)
    )
}

async fn sql(State(api): State<Arc<SqlApi>>, body: Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Invalid input", e),
    };
    let session = api.engine.session();
    let limit = match apply_context(&session, &request.context)
        .and_then(|()| timeout(&request.context, api.default_timeout))
    {
        Ok(limit) => limit,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Invalid input", e),
    };
    let id = match request.context.get("sqlQueryId") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => {
            let why = format!("context sqlQueryId must be a string, not {other}");
            return error(StatusCode::BAD_REQUEST, "Invalid input", why);
        }
        None => format!("grove-{}", api.next_id.fetch_add(1, Ordering::Relaxed)),
    };
    let parameters = match request.parameters.iter().map(Parameter::scalar).collect() {
        Ok(values) => values,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Invalid input", e),
    };
    let (abort, registration) = AbortHandle::new_pair();
    {
        let Ok(mut running) = api.running.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Query failed",
                "poisoned",
            );
        };
        if running.contains_key(&id) {
            let why = format!("a query with sqlQueryId {id:?} is already running");
            return error(StatusCode::BAD_REQUEST, "Invalid input", why);
        }
        running.insert(id.clone(), abort);
    }
    let work = Abortable::new(
        session.script_with(&request.query, parameters),
        registration,
    );
    let outcome = match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        None => Some(work.await),
    };
    if let Ok(mut running) = api.running.lock() {
        running.remove(&id);
    }
    let mut response = match outcome {
        None => error(
            StatusCode::GATEWAY_TIMEOUT,
            "Query timeout",
            format!("query {id} did not finish within its timeout"),
        ),
        Some(Err(_aborted)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Query cancelled",
            format!("query {id} was cancelled"),
        ),
        Some(Ok(Err(e))) if is_users_fault(&e) => {
            error(StatusCode::BAD_REQUEST, "Plan validation failed", e)
        }
        Some(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, "Query failed", e),
        Some(Ok(Ok((schema, batches)))) => match render(&request, &schema, &batches) {
            Ok(response) => response,
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "Query failed", e),
        },
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("X-Druid-SQL-Query-Id", value);
    }
    response
}

async fn cancel(State(api): State<Arc<SqlApi>>, Path(id): Path<String>) -> Response {
    let found = api.running.lock().ok().and_then(|mut r| r.remove(&id));
    match found {
        Some(abort) => {
            abort.abort();
            StatusCode::ACCEPTED.into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "Query not found",
            format!("no query with sqlQueryId {id:?} is running"),
        ),
    }
}

/// The rows in the requested format, with the requested header rows.
fn render(
    request: &SqlRequest,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Response, String> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut header_rows: Vec<Vec<Value>> = Vec::new();
    if request.header {
        header_rows.push(names.iter().map(|n| Value::from(*n)).collect());
        if request.types_header {
            let types = schema.fields().iter().map(|f| druid_type(f.data_type()));
            header_rows.push(types.map(Value::from).collect());
        }
        if request.sql_types_header {
            let types = schema.fields().iter().map(|f| sql_type(f.data_type()));
            header_rows.push(types.map(Value::from).collect());
        }
    }
    let rows = json_rows(schema, batches)?;
    let object = |row: Vec<Value>| -> Value {
        Value::Object(names.iter().map(|n| n.to_string()).zip(row).collect())
    };
    let object_header = || -> Option<Value> {
        if !request.header {
            return None;
        }
        let columns = schema.fields().iter().map(|f| {
            let mut about = Map::new();
            if request.types_header {
                about.insert("type".into(), druid_type(f.data_type()).into());
            }
            if request.sql_types_header {
                about.insert("sqlType".into(), sql_type(f.data_type()).into());
            }
            let about = if about.is_empty() {
                Value::Null
            } else {
                Value::Object(about)
            };
            (f.name().clone(), about)
        });
        Some(Value::Object(columns.collect()))
    };
    let (content_type, body) = match request.result_format {
        ResultFormat::Object => {
            let all: Vec<Value> = object_header()
                .into_iter()
                .chain(rows.into_iter().map(object))
                .collect();
            ("application/json", Value::Array(all).to_string())
        }
        ResultFormat::Array => {
            let all: Vec<Value> = header_rows
                .into_iter()
                .chain(rows)
                .map(Value::Array)
                .collect();
            ("application/json", Value::Array(all).to_string())
        }
        ResultFormat::ObjectLines => {
            let lines = object_header()
                .into_iter()
                .chain(rows.into_iter().map(object));
            (
                "application/x-ndjson",
                lines_of(lines.map(|v| v.to_string())),
            )
        }
        ResultFormat::ArrayLines => {
            let lines = header_rows.into_iter().chain(rows).map(Value::Array);
            (
                "application/x-ndjson",
                lines_of(lines.map(|v| v.to_string())),
            )
        }
        ResultFormat::Csv => {
            let lines = header_rows
                .into_iter()
                .chain(rows)
                .map(|row| csv_line(&row));
            ("text/csv", lines_of(lines))
        }
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if request.header {
        response.headers_mut().insert(
            "X-Druid-SQL-Header-Included",
            HeaderValue::from_static("yes"),
        );
    }
    Ok(response)
}

/// One line each, and an empty line at the end: Druid's sign of a complete answer.
fn lines_of(lines: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    out
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

/// Each row's values as JSON, in column order.
fn json_rows(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, String> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<Vec<Value>> = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| column_json(column, field))
            .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| c.get(i).cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// One column's values as JSON, as Arrow's JSON writer renders them.
fn column_json(column: &ArrayRef, field: &Field) -> Result<Vec<Value>, String> {
    let single = Field::new("v", field.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![single])), vec![column.clone()])
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut out);
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    if out.is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_slice(&out).map_err(|e| e.to_string())? {
        Value::Array(objects) => Ok(objects
            .into_iter()
            .map(|mut o| o.get_mut("v").map(Value::take).unwrap_or(Value::Null))
            .collect()),
        _ => Err("the JSON writer did not write an array".into()),
    }
}

/// Druid's native type of a column (`typesHeader`).
fn druid_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Dictionary(_, value) => druid_type(value),
        t if t.is_integer() => "LONG",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Boolean => "LONG",
        DataType::Float32 => "FLOAT",
        DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "DOUBLE",
        t if t.is_string() => "STRING",
        _ => "COMPLEX",
    }
}

/// The SQL type of a column (`sqlTypesHeader`).
fn sql_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Dictionary(_, value) => sql_type(value),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "INTEGER",
        t if t.is_integer() => "BIGINT",
        DataType::Float32 => "FLOAT",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "DECIMAL",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(..) => "TIMESTAMP",
        DataType::Date32 | DataType::Date64 => "DATE",
        t if t.is_string() => "VARCHAR",
        _ => "OTHER",
    }
}
