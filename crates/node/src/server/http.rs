//! HTTP endpoints, in Druid's shapes where Druid has them:
//!
//! - every role: `GET /status`;
//! - coordinator: `GET /druid/coordinator/v1/rules`, `GET|POST
//!   /druid/coordinator/v1/rules/{datasource}`, `GET /druid/coordinator/v1/leader`,
//!   `GET /druid/coordinator/v1/loadqueue`, `GET /grove/v1/coordinator` (all status);
//! - broker: Druid's SQL API (`druid_sql`).
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
use grove_sql::auth::Users;
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

/// `router`, answering only requests with a configured user's basic credentials
/// when `users` are configured.
pub fn require_users(router: Router, users: Option<Arc<Users>>) -> Router {
    match users {
        None => router,
        Some(users) => router.route_layer(middleware::from_fn_with_state(users, authenticated)),
    }
}

async fn authenticated(State(users): State<Arc<Users>>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| users.verify_basic(value).is_some());
    if allowed {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "a user name and password are required (HTTP basic auth)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"grove\""),
    );
    response
}

/// Druid's error JSON.
pub fn error(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Response {
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
