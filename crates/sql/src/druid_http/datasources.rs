//! The broker's view of its datasources, in Druid's shapes:
//!
//! - `GET /druid/v2/datasources`: the names of the datasources queries can read;
//! - `GET /druid/v2/datasources/{ds}`: `{"dimensions": [...], "metrics": [...]}`, over
//!   every segment of it (404 when it has none); `.../dimensions` and `.../metrics` the
//!   lists alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grove_segment::format::{ColumnRole, TIME_COLUMN};
use serde_json::json;

use super::error;
use crate::Engine;

pub fn routes(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/druid/v2/datasources", get(names))
        .route("/druid/v2/datasources/{ds}", get(columns))
        .route("/druid/v2/datasources/{ds}/dimensions", get(dimensions))
        .route("/druid/v2/datasources/{ds}/metrics", get(metrics))
        .with_state(engine)
}

async fn names(State(engine): State<Arc<Engine>>) -> Response {
    let mut names = engine.metadata().datasource_names();
    names.sort();
    Json(names).into_response()
}

/// The dimensions and metrics of `ds`'s segments, or `None` when it has none.
fn dimensions_and_metrics(engine: &Engine, ds: &str) -> Option<(Vec<String>, Vec<String>)> {
    let segments = engine.metadata().segments(Some(ds));
    if segments.is_empty() {
        return None;
    }
    let (mut dimensions, mut metrics) = (BTreeSet::new(), BTreeSet::new());
    for column in segments.iter().flat_map(|s| &s.descriptor.columns) {
        match column.role {
            Some(ColumnRole::Metric) => metrics.insert(column.name.clone()),
            Some(ColumnRole::Time) => false,
            // Descriptors written before roles were kept: their columns are dimensions.
            Some(ColumnRole::Dimension) | None if column.name != TIME_COLUMN => {
                dimensions.insert(column.name.clone())
            }
            _ => false,
        };
    }
    Some((
        dimensions.into_iter().collect(),
        metrics.into_iter().collect(),
    ))
}

fn unknown(ds: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Datasource not found",
        format!("no datasource {ds:?} has segments"),
    )
}

async fn columns(State(engine): State<Arc<Engine>>, Path(ds): Path<String>) -> Response {
    match dimensions_and_metrics(&engine, &ds) {
        Some((dimensions, metrics)) => {
            Json(json!({"dimensions": dimensions, "metrics": metrics})).into_response()
        }
        None => unknown(&ds),
    }
}

async fn dimensions(State(engine): State<Arc<Engine>>, Path(ds): Path<String>) -> Response {
    match dimensions_and_metrics(&engine, &ds) {
        Some((dimensions, _)) => Json(dimensions).into_response(),
        None => unknown(&ds),
    }
}

async fn metrics(State(engine): State<Arc<Engine>>, Path(ds): Path<String>) -> Response {
    match dimensions_and_metrics(&engine, &ds) {
        Some((_, metrics)) => Json(metrics).into_response(),
        None => unknown(&ds),
    }
}
