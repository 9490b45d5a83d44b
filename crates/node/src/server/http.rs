//! HTTP endpoints, in Druid's shapes where Druid has them:
//!
//! - every role: `GET /status`, `/status/health`, `/status/properties`,
//!   `/status/selfDiscovered`;
//! - coordinator: Druid's metadata endpoints ([`super::coordinator_api`]), its lookup
//!   configuration ([`super::lookups_api`]), `GET
//!   /druid/coordinator/v1/rules`, `GET|POST
//!   /druid/coordinator/v1/rules/{datasource}`, `GET /druid/coordinator/v1/leader`,
//!   `GET /druid/coordinator/v1/loadqueue`, `GET /grove/v1/coordinator` (all status);
//! - broker: Druid's query APIs ([`grove_sql::druid_http`]).
//!
//! With users configured, every endpoint but `/status` asks for HTTP basic auth.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use grove_cluster::coordinator::CoordinatorStatus;
use grove_cluster::metastore::MetaStore;
use grove_cluster::rules;
use grove_sql::auth::{ClusterSecret, Users};
pub use grove_sql::druid_http::error;
use serde_json::{Value, json};

/// Druid's status endpoints, on every role: `GET /status` (the role's own report, from
/// `status`, with Grove's `version` and Druid's `modules`), `/status/health` (`true`),
/// `/status/properties` (the report's settings as Druid's flat map of strings) and
/// `/status/selfDiscovered` (200, and `{"selfDiscovered": true}` at `.../status`).
pub fn status_routes(status: impl Fn() -> Value + Clone + Send + Sync + 'static) -> Router {
    let properties = status.clone();
    Router::new()
        .route(
            "/status",
            get(move || {
                let status = status.clone();
                async move {
                    let mut body = status();
                    if let Value::Object(map) = &mut body {
                        map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
                        map.insert("modules".into(), json!([]));
                    }
                    Json(body)
                }
            }),
        )
        .route("/status/health", get(|| async { Json(json!(true)) }))
        .route(
            "/status/properties",
            get(move || {
                let properties = properties.clone();
                async move { Json(flat_properties(&properties())) }
            }),
        )
        .route("/status/selfDiscovered", get(|| async { StatusCode::OK }))
        .route(
            "/status/selfDiscovered/status",
            get(|| async { Json(json!({"selfDiscovered": true})) }),
        )
}

/// A report's plain values as Druid's properties: `grove.`-prefixed dotted keys
/// (`grove.role`, `grove.front_ends.query_timeout`) to strings, with Druid's
/// `druid.service` naming the role.
fn flat_properties(report: &Value) -> serde_json::Map<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut serde_json::Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    walk(&format!("{prefix}.{key}"), value, out);
                }
            }
            Value::Array(_) | Value::Null => {}
            Value::String(text) => {
                out.insert(prefix.to_string(), Value::String(text.clone()));
            }
            other => {
                out.insert(prefix.to_string(), Value::String(other.to_string()));
            }
        }
    }
    let mut out = serde_json::Map::new();
    walk("grove", report, &mut out);
    out.insert("grove.version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(role) = report["role"].as_str() {
        out.insert("druid.service".into(), format!("grove/{role}").into());
    }
    out
}

/// `router`, answering only requests with a configured user's basic credentials
/// when `users` are configured.
/// Who an HTTP port lets in: the configured users (HTTP basic auth), the cluster's
/// own calls (basic auth as the internal user with the cluster secret), or anyone
/// when neither is set. `/status/health` is open to all, for load balancers.
#[derive(Clone, Default)]
pub struct Access {
    pub users: Option<Arc<Users>>,
    pub secret: Option<ClusterSecret>,
}

impl Access {
    /// The cluster's nodes only: an internal port.
    pub fn internal(secret: &ClusterSecret) -> Access {
        Access {
            users: None,
            secret: Some(secret.clone()),
        }
    }
}

/// `router` behind `access`.
pub fn require(router: Router, access: Access) -> Router {
    if access.users.is_none() && access.secret.is_none() {
        return router;
    }
    router.route_layer(middleware::from_fn_with_state(
        Arc::new(access),
        authenticated,
    ))
}

async fn authenticated(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let internal = access.secret.as_ref().is_some_and(|s| s.admits(header));
    let user = access
        .users
        .as_ref()
        .is_some_and(|users| header.is_some_and(|h| users.verify_basic(h).is_some()));
    if internal || user || request.uri().path() == "/status/health" {
        return next.run(request).await;
    }
    let why = match access.users {
        Some(_) => "a user name and password are required (HTTP basic auth)",
        None => {
            "this is a cluster-internal API: the cluster secret is required (HTTP basic auth as grove_internal)"
        }
    };
    let mut response = error(StatusCode::UNAUTHORIZED, "Unauthorized", why);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"grove\""),
    );
    response
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
        .with_state(CoordinatorState {
            store: Arc::clone(&store),
            status: Arc::clone(&status),
        })
        .merge(super::coordinator_api::routes(Arc::clone(&store), status))
        .merge(super::lookups_api::routes(store))
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
