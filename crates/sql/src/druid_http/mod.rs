//! Druid's query APIs over HTTP, on a broker and `grove start`:
//!
//! - [`sql`]: `POST /druid/v2/sql`, and cancelling a query by its `sqlQueryId`.
//! - [`native`]: `POST /druid/v2`, Druid's native JSON queries, and cancelling one by
//!   its `queryId`.
//! - [`running`]: the queries both are running, by id.
//! - [`datasources`]: `GET /druid/v2/datasources`, and a datasource's dimensions and
//!   metrics.
//!
//! Errors are Druid's JSON ([`error`]).

mod datasources;
mod native;
mod running;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::Engine;

/// The query APIs' routes; queries run at most `default_timeout` unless their context
/// sets a `timeout`.
pub fn routes(engine: Arc<Engine>, default_timeout: Option<Duration>) -> Router {
    let api = Arc::new(Api {
        engine: Arc::clone(&engine),
        default_timeout,
        running: Arc::new(running::Running::default()),
    });
    sql::routes(Arc::clone(&api))
        .merge(native::routes(api))
        .merge(datasources::routes(engine))
}

/// What the SQL and native APIs share: the engine, the time limit of a query whose
/// context sets none, and the queries running, by id.
struct Api {
    engine: Arc<Engine>,
    default_timeout: Option<Duration>,
    running: Arc<running::Running>,
}

/// Druid's error for a query that stopped before its first row: its timeout (`504`),
/// a cancel (`500`), or a failure, which `failed` answers.
fn halted(
    id: &str,
    halt: crate::guard::Halt,
    failed: impl FnOnce(datafusion::error::DataFusionError) -> Response,
) -> Response {
    match halt {
        crate::guard::Halt::TimedOut => error(
            StatusCode::GATEWAY_TIMEOUT,
            "Query timeout",
            format!("query {id} did not finish within its timeout"),
        ),
        crate::guard::Halt::Cancelled => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Query cancelled",
            format!("query {id} was cancelled"),
        ),
        crate::guard::Halt::Failed(e) => failed(e),
    }
}

/// Cancels the query running as `id`: `202`, or `404` when none runs.
fn cancel(running: &running::Running, id: &str) -> Response {
    if running.cancel(id) {
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "Query not found",
            format!("no query with id {id:?} is running"),
        )
    }
}

/// Druid's error JSON: `error` (Druid's code for the kind of failure, such as `Plan
/// validation failed`), `errorMessage`, `category` (from the status: `INVALID_INPUT`
/// for 400, `TIMEOUT` for 504, ...) and `errorClass` (null).
pub fn error(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Response {
    error_of_class(status, error, None, message)
}

/// [`error`], naming the kind of error that failed the request in `errorClass`.
pub fn error_of_class(
    status: StatusCode,
    error: &str,
    class: Option<&str>,
    message: impl std::fmt::Display,
) -> Response {
    let body = json!({
        "error": error,
        "errorMessage": message.to_string(),
        "errorClass": class,
        "category": category(status),
        "host": null,
    });
    (status, Json(body)).into_response()
}

/// Druid's category of an error answered with `status`.
fn category(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 | 422 => "INVALID_INPUT",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        429 => "CAPACITY_EXCEEDED",
        501 => "UNSUPPORTED",
        504 => "TIMEOUT",
        _ => "RUNTIME_FAILURE",
    }
}
