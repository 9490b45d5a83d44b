//! Druid's native query API:
//!
//! - `POST /druid/v2` (and `/druid/v2/`): a native JSON query
//!   ([`crate::druid::native`]); the answer is Druid's JSON for its type, indented with
//!   `?pretty`. The context's
//!   `queryId` names it (else the broker does, in `X-Druid-Query-Id`), `timeout` (ms)
//!   bounds it, `useCache` and `populateCache` set the result cache; `priority` and
//!   other keys are accepted and ignored.
//! - `DELETE /druid/v2/{queryId}` cancels a running query: `202`, or `404`.
//!
//! Errors are Druid's JSON: `400` for the query's fault (`Json parse failed` for a body
//! that is not a query), `501` for what Grove does not support, `504` for a timeout.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use datafusion::error::DataFusionError;
use serde_json::{Map, Value};

use super::sql::{apply_context, failure, timeout};
use super::{Api, cancel, error, halted};
use crate::druid::lookups;
use crate::druid::native::Planner;
use crate::druid::native::spec::Query as NativeQuery;
use crate::guard::Guard;

/// The native API's routes.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/druid/v2", post(native))
        .route("/druid/v2/", post(native))
        .route("/druid/v2/{id}", delete(cancel_native))
        .with_state(api)
}

async fn native(
    State(api): State<Arc<Api>>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Json parse failed", e),
    };
    let context = match value.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            let why = format!("context must be an object, not {other}");
            return error(StatusCode::BAD_REQUEST, "Query context parse failed", why);
        }
    };
    let query: NativeQuery = match serde_json::from_value(value) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Json parse failed", e),
    };
    let session = api.engine.session();
    let limit = match apply_context(&session, &context)
        .and_then(|()| timeout(&context, api.default_timeout))
    {
        Ok(limit) => limit,
        Err(e) => return error(StatusCode::BAD_REQUEST, "Query context parse failed", e),
    };
    let id = api.running.id(query.context().query_id.clone());
    let (registered, token) = match api.running.register(&id) {
        Ok(registered) => registered,
        Err(why) => return error(StatusCode::BAD_REQUEST, "Query context parse failed", why),
    };
    let guard = Guard::new(token, limit);
    let mut planner = Planner::new(&session);
    // Expressions' `lookup` needs the lookups; a query that never says it does not.
    if lookups::mentioned(&String::from_utf8_lossy(&body)) {
        match session.metadata().lookups().await {
            Ok(maps) => planner = planner.with_lookups(maps),
            Err(e) => return failure(&DataFusionError::External(Box::new(e))),
        }
    }
    let answer = guard
        .run(async {
            match &query {
                NativeQuery::Timeseries(q) => planner.timeseries(q).await,
                NativeQuery::TopN(q) => planner.top_n(q).await,
                NativeQuery::GroupBy(q) => planner.group_by(q).await,
                NativeQuery::Scan(q) => planner.scan(q).await,
                NativeQuery::TimeBoundary(q) => planner.time_boundary(q).await,
                NativeQuery::Search(q) => planner.search(q).await,
                NativeQuery::SegmentMetadata(q) => planner.segment_metadata(q).await,
                NativeQuery::DataSourceMetadata(q) => planner.data_source_metadata(q).await,
            }
        })
        .await;
    drop(registered);
    let mut response = match answer {
        Ok(json) => {
            let mut text = String::new();
            if params.contains_key("pretty") {
                json.write_pretty(&mut text, 0);
            } else {
                json.write(&mut text);
            }
            ([(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(halt) => halted(&id, halt, |e| match e.find_root() {
            DataFusionError::NotImplemented(_) => {
                error(StatusCode::NOT_IMPLEMENTED, "Unsupported operation", e)
            }
            _ => failure(&e),
        }),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("X-Druid-Query-Id", value);
    }
    response
}

async fn cancel_native(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    cancel(&api.running, &id)
}
