//! HTTP endpoints, in Druid's shapes where Druid has them:
//!
//! - every role: `GET /status`;
//! - coordinator: `GET /druid/coordinator/v1/rules`, `GET|POST
//!   /druid/coordinator/v1/rules/{datasource}`, `GET /druid/coordinator/v1/leader`,
//!   `GET /druid/coordinator/v1/loadqueue`, `GET /grove/v1/coordinator` (all status);
//! - broker: `POST /druid/v2/sql` with `{"query": ...}`, answering an array of
//!   row objects. Each request runs in a session of its own; a query may hold several
//!   statements separated by `;` (a view, a query over it, dropping the view), and the
//!   answer is the last query's result. The context's `useCache` and `populateCache`
//!   set the session's `grove.use_cache` and `grove.populate_cache`.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::error::DataFusionError;
use grove_cluster::coordinator::CoordinatorStatus;
use grove_cluster::metastore::MetaStore;
use grove_cluster::rules;
use grove_sql::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /status`: the role's own report, from `status`.
pub fn status_routes(status: impl Fn() -> Value + Clone + Send + Sync + 'static) -> Router {
    Router::new().route(
        "/status",
        get(move || {
            let status = status.clone();
            async move {
                let mut body = status();
                if let Value::Object(map) = &mut body {
                    map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
                }
                Json(body)
            }
        }),
    )
}

fn error(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Response {
    let body = json!({ "error": error, "errorMessage": message.to_string() });
    (status, Json(body)).into_response()
}

#[derive(Clone)]
struct CoordinatorState {
    store: Arc<dyn MetaStore>,
    status: Arc<RwLock<CoordinatorStatus>>,
}

impl CoordinatorState {
    fn status(&self) -> CoordinatorStatus {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }
}

pub fn coordinator_routes(
    store: Arc<dyn MetaStore>,
    status: Arc<RwLock<CoordinatorStatus>>,
) -> Router {
    Router::new()
        .route("/druid/coordinator/v1/rules", get(all_rules))
        .route(
            "/druid/coordinator/v1/rules/{datasource}",
            get(get_rules).post(set_rules),
        )
        .route("/druid/coordinator/v1/leader", get(leader))
        .route("/druid/coordinator/v1/loadqueue", get(load_queue))
        .route("/grove/v1/coordinator", get(coordinator_status))
        .with_state(CoordinatorState { store, status })
}

async fn all_rules(State(s): State<CoordinatorState>) -> Response {
    match rules::all(s.store.as_ref()).await {
        Ok(all) => Json(all).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metadata store unavailable",
            e,
        ),
    }
}

async fn get_rules(State(s): State<CoordinatorState>, Path(ds): Path<String>) -> Response {
    match rules::get(s.store.as_ref(), &ds).await {
        Ok(list) => Json(list).into_response(),
        Err(grove_cluster::Error::Invalid(m)) => error(StatusCode::BAD_REQUEST, "Invalid input", m),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metadata store unavailable",
            e,
        ),
    }
}

async fn set_rules(
    State(s): State<CoordinatorState>,
    Path(ds): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = match rules::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Invalid input", e),
    };
    match rules::set(s.store.as_ref(), &ds, &parsed).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(grove_cluster::Error::Invalid(m)) => error(StatusCode::BAD_REQUEST, "Invalid input", m),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metadata store unavailable",
            e,
        ),
    }
}

async fn leader(State(s): State<CoordinatorState>) -> Response {
    match s.status().leader {
        Some(leader) => leader.into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "No leader",
            "no coordinator leads yet",
        ),
    }
}

async fn load_queue(State(s): State<CoordinatorState>) -> Response {
    Json(s.status().report.load_queues).into_response()
}

async fn coordinator_status(State(s): State<CoordinatorState>) -> Response {
    Json(s.status()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqlRequest {
    query: String,
    #[serde(default)]
    result_format: Option<String>,
    /// Druid's query context. Keys Grove has no use for are ignored, as Druid does.
    #[serde(default)]
    context: serde_json::Map<String, Value>,
}

/// Druid query context keys and the session settings they set.
const CONTEXT_SETTINGS: [(&str, &str); 2] = [
    ("useCache", "grove.use_cache"),
    ("populateCache", "grove.populate_cache"),
];

/// Applies the request's context to its session.
fn apply_context(
    session: &grove_sql::Session,
    context: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    for (key, setting) in CONTEXT_SETTINGS {
        match context.get(key) {
            None => {}
            Some(Value::Bool(on)) => session
                .set(setting, &on.to_string())
                .map_err(|e| format!("context {key}: {e}"))?,
            Some(other) => return Err(format!("context {key} must be true or false, not {other}")),
        }
    }
    Ok(())
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

pub fn broker_routes(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/druid/v2/sql", post(sql))
        .with_state(engine)
}

async fn sql(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Invalid input", e),
    };
    if let Some(format) = request.result_format.as_deref()
        && format != "object"
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid input",
            format!("resultFormat {format:?} is not supported; use \"object\""),
        );
    }
    let session = engine.session();
    if let Err(e) = apply_context(&session, &request.context) {
        return error(StatusCode::BAD_REQUEST, "Invalid input", e);
    }
    let batches = match session.script(&request.query).await {
        Ok((_, batches)) => batches,
        Err(e) if is_users_fault(&e) => {
            return error(StatusCode::BAD_REQUEST, "Plan validation failed", e);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "Query failed", e),
    };
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut out);
    let written = batches
        .iter()
        .try_for_each(|b| writer.write(b))
        .and_then(|()| writer.finish());
    drop(writer);
    if let Err(e) = written {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Query failed", e);
    }
    if out.is_empty() {
        out = b"[]".to_vec();
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}
