//! Druid's lookup configuration API on the coordinator (and `grove start`):
//!
//! - `GET /druid/coordinator/v1/lookups/config`: the tiers that have lookups;
//!   `.../config/all`: every tier's lookups and their specs;
//! - `POST /druid/coordinator/v1/lookups/config`: `{tier: {name: spec}}`, each set;
//! - `GET .../config/{tier}`: the tier's lookup names (404 when it has none);
//! - `GET`, `POST`, `DELETE .../config/{tier}/{name}`: one lookup's spec.
//!
//! A spec is `{"version", "lookupExtractorFactory": {"type": "map", "map": {...}}}`;
//! it replaces a lookup only with a greater version. Writes answer `202`, as Druid's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grove_cluster::lookups::{self, LookupSpec};
use grove_cluster::metastore::MetaStore;
use serde_json::{Value, json};

use super::http::error;

pub fn routes(store: Arc<dyn MetaStore>) -> Router {
    Router::new()
        .route(
            "/druid/coordinator/v1/lookups/config",
            get(tiers).post(set_many),
        )
        .route("/druid/coordinator/v1/lookups/config/all", get(everything))
        .route("/druid/coordinator/v1/lookups/config/{tier}", get(names))
        .route(
            "/druid/coordinator/v1/lookups/config/{tier}/{name}",
            get(one).post(set_one).delete(remove),
        )
        .with_state(store)
}

/// The response to a failed store call: the caller's fault, or the store's.
fn failed(e: grove_cluster::Error) -> Response {
    match e {
        grove_cluster::Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "Invalid input", m),
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metadata store unavailable",
            other,
        ),
    }
}

async fn everything(State(store): State<Arc<dyn MetaStore>>) -> Response {
    match lookups::all(store.as_ref()).await {
        Ok(all) => Json(all).into_response(),
        Err(e) => failed(e),
    }
}

async fn tiers(State(store): State<Arc<dyn MetaStore>>) -> Response {
    match lookups::all(store.as_ref()).await {
        Ok(all) => Json(all.into_keys().collect::<Vec<_>>()).into_response(),
        Err(e) => failed(e),
    }
}

async fn names(State(store): State<Arc<dyn MetaStore>>, Path(tier): Path<String>) -> Response {
    match lookups::all(store.as_ref()).await {
        Ok(mut all) => match all.remove(&tier) {
            Some(lookups) => Json(lookups.into_keys().collect::<Vec<_>>()).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no lookups in tier {tier:?}"),
            ),
        },
        Err(e) => failed(e),
    }
}

async fn one(
    State(store): State<Arc<dyn MetaStore>>,
    Path((tier, name)): Path<(String, String)>,
) -> Response {
    match lookups::get(store.as_ref(), &tier, &name).await {
        Ok(Some(spec)) => Json(spec).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no lookup {tier}/{name}"),
        ),
        Err(e) => failed(e),
    }
}

async fn set_one(
    State(store): State<Arc<dyn MetaStore>>,
    Path((tier, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Json parse failed", e),
    };
    let spec = match LookupSpec::parse(&value) {
        Ok(spec) => spec,
        Err(e) => return failed(e),
    };
    match lookups::set(store.as_ref(), &tier, &name, &spec).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        Err(e) => failed(e),
    }
}

async fn set_many(State(store): State<Arc<dyn MetaStore>>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Json parse failed", e),
    };
    let Ok(tiers) = serde_json::from_value::<BTreeMap<String, BTreeMap<String, Value>>>(value)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid input",
            "the body must be {tier: {lookup: spec}}",
        );
    };
    // Every spec is checked before any is written.
    let mut specs = Vec::new();
    for (tier, lookups) in tiers {
        for (name, spec) in lookups {
            match LookupSpec::parse(&spec) {
                Ok(spec) => specs.push((tier.clone(), name, spec)),
                Err(e) => return failed(e),
            }
        }
    }
    for (tier, name, spec) in specs {
        if let Err(e) = lookups::set(store.as_ref(), &tier, &name, &spec).await {
            return failed(e);
        }
    }
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn remove(
    State(store): State<Arc<dyn MetaStore>>,
    Path((tier, name)): Path<(String, String)>,
) -> Response {
    match lookups::delete(store.as_ref(), &tier, &name).await {
        Ok(true) => (StatusCode::ACCEPTED, Json(json!({}))).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no lookup {tier}/{name}"),
        ),
        Err(e) => failed(e),
    }
}
