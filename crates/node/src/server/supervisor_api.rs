//! Druid's Supervisor API (`/druid/indexer/v1/supervisor...`) on the overlord, paths
//! and JSON shapes as Druid's documentation gives them. Answered by the leader, like
//! the task API: [`super::indexer_api`] redirects other requests to it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use grove_cluster::Error;
use grove_cluster::indexer::overlord::{Overlord, SupervisorStatus};
use grove_cluster::stream_offsets::Offsets;
use grove_cluster::supervisors::{self, SupervisorRecord};
use grove_segment::spec::KafkaTopic;
use serde_json::{Value, json};

use super::http::error;

#[derive(Clone)]
struct Api {
    overlord: Arc<Overlord>,
}

/// The supervisor routes; the caller adds the leader redirect.
pub fn routes(overlord: Arc<Overlord>) -> Router {
    let prefix = "/druid/indexer/v1/supervisor";
    Router::new()
        .route(prefix, get(list).post(submit))
        .route(&format!("{prefix}/history"), get(all_history))
        .route(&format!("{prefix}/suspendAll"), post(suspend_all))
        .route(&format!("{prefix}/resumeAll"), post(resume_all))
        .route(&format!("{prefix}/terminateAll"), post(terminate_all))
        .route(&format!("{prefix}/{{id}}"), get(spec))
        .route(&format!("{prefix}/{{id}}/status"), get(status))
        .route(&format!("{prefix}/{{id}}/stats"), get(stats))
        .route(&format!("{prefix}/{{id}}/health"), get(health))
        .route(&format!("{prefix}/{{id}}/history"), get(history))
        .route(&format!("{prefix}/{{id}}/suspend"), post(suspend))
        .route(&format!("{prefix}/{{id}}/resume"), post(resume))
        .route(&format!("{prefix}/{{id}}/reset"), post(reset))
        .route(&format!("{prefix}/{{id}}/terminate"), post(terminate))
        .route(&format!("{prefix}/{{id}}/shutdown"), post(terminate))
        .with_state(Api { overlord })
}

fn refused(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "Invalid input", m),
        Error::Segment(e) => error(StatusCode::BAD_REQUEST, "Invalid input", e),
        Error::Busy(m) => error(StatusCode::CONFLICT, "Conflict", m),
        e => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metadata store unavailable",
            e,
        ),
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("[{id}] does not exist"),
    )
}

/// The supervisor `id` if it runs (it exists and was not terminated).
async fn active(api: &Api, id: &str) -> Result<SupervisorRecord, Response> {
    match supervisors::get(api.overlord.store().as_ref(), id).await {
        Ok(Some(r)) if !r.terminated => Ok(r),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(refused(e)),
    }
}

async fn active_all(api: &Api) -> Result<Vec<SupervisorRecord>, Response> {
    match supervisors::list(api.overlord.store().as_ref()).await {
        Ok(all) => Ok(all.into_iter().filter(|r| !r.terminated).collect()),
        Err(e) => Err(refused(e)),
    }
}

/// The spec as Druid shows it: as submitted, with `suspended`.
fn shown_spec(record: &SupervisorRecord) -> Value {
    let mut spec = record.spec.clone();
    spec["suspended"] = json!(record.suspended);
    spec
}

/// The state the last supervising pass saw (PENDING before the first).
fn state_of(api: &Api, record: &SupervisorRecord) -> (String, bool) {
    match api.overlord.supervisor_status(&record.id) {
        Some(s) if !s.state.is_empty() => (s.state, s.healthy),
        _ if record.suspended => ("SUSPENDED".into(), true),
        _ => ("PENDING".into(), true),
    }
}

async fn submit(State(api): State<Api>, body: Bytes) -> Response {
    let spec: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid input",
                format!("the supervisor spec is not valid JSON: {e}"),
            );
        }
    };
    match api.overlord.submit_supervisor(spec).await {
        Ok(id) => Json(json!({ "id": id })).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct ListParams {
    full: Option<String>,
    state: Option<String>,
}

/// `GET /supervisor`: ids; `?full`: the supervisors with spec and state; `?state=true`:
/// with state only.
async fn list(State(api): State<Api>, Query(params): Query<ListParams>) -> Response {
    let records = match active_all(&api).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let full = params.full.is_some();
    let with_state = full || params.state.as_deref() == Some("true");
    if !with_state {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        return Json(ids).into_response();
    }
    let listed: Vec<Value> = records
        .iter()
        .map(|r| {
            let (state, healthy) = state_of(&api, r);
            let mut entry = json!({
                "id": r.id,
                "state": state,
                "detailedState": state,
                "healthy": healthy,
                "suspended": r.suspended,
            });
            if full {
                entry["spec"] = shown_spec(r);
            }
            entry
        })
        .collect();
    Json(listed).into_response()
}

async fn spec(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match active(&api, &id).await {
        Ok(r) => Json(shown_spec(&r)).into_response(),
        Err(response) => response,
    }
}

/// Partition-keyed offsets, as Druid writes them: `{"0": 12}` for one topic,
/// `{"topic:0": 12}` for the topics of a pattern.
fn by_partition(offsets: &Offsets, topic: &KafkaTopic) -> Value {
    Value::Object(
        offsets
            .iter()
            .map(|(p, o)| (p.druid_key(topic), json!(o)))
            .collect(),
    )
}

fn task_entries(status: &SupervisorStatus, topic: &KafkaTopic, publishing: bool) -> Vec<Value> {
    let tasks = if publishing {
        &status.publishing_tasks
    } else {
        &status.active_tasks
    };
    tasks
        .iter()
        .map(|t| {
            let lag: Offsets = t
                .current_offsets
                .iter()
                .map(|(p, o)| {
                    let latest = status.latest_offsets.get(p).copied().unwrap_or(*o);
                    (p.clone(), (latest - o).max(0))
                })
                .collect();
            json!({
                "id": t.id,
                "startingOffsets": by_partition(&t.starting_offsets, topic),
                "startTime": t.start_time,
                "remainingSeconds": null,
                "type": if publishing { "PUBLISHING" } else { "ACTIVE" },
                "currentOffsets": by_partition(&t.current_offsets, topic),
                "lag": by_partition(&lag, topic),
            })
        })
        .collect()
}

async fn status(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let record = match active(&api, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let (state, healthy) = state_of(&api, &record);
    let s = api.overlord.supervisor_status(&id).unwrap_or_default();
    let topic = record
        .parsed()
        .map(|p| p.topic)
        .unwrap_or_else(|_| KafkaTopic::Name(String::new()));
    let errors: Vec<Value> = s
        .recent_errors
        .iter()
        .map(|(at, message)| json!({ "timestamp": at, "exceptionClass": "Error", "message": message, "streamException": false }))
        .collect();
    let payload = json!({
        "dataSource": record.id,
        "stream": topic.stream(),
        "topic": topic.stream(),
        "partitions": s.partitions.len(),
        "replicas": s.replicas,
        "durationSeconds": s.duration_seconds,
        "activeTasks": task_entries(&s, &topic, false),
        "publishingTasks": task_entries(&s, &topic, true),
        "latestOffsets": by_partition(&s.latest_offsets, &topic),
        "currentOffsets": by_partition(&s.current_offsets, &topic),
        "minimumLag": by_partition(&s.lag, &topic),
        "aggregateLag": s.aggregate_lag,
        "offsetsLastUpdated": s.offsets_last_updated,
        "suspended": record.suspended,
        "healthy": healthy,
        "state": state,
        "detailedState": state,
        "recentErrors": errors,
    });
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Json(json!({ "id": id, "generationTime": now, "payload": payload })).into_response()
}

/// `{taskGroupId: {taskId: {"movingAverages": {}, "totals": {"buildSegments": ...}}}}`.
async fn stats(State(api): State<Api>, Path(id): Path<String>) -> Response {
    if let Err(response) = active(&api, &id).await {
        return response;
    }
    let s = api.overlord.supervisor_status(&id).unwrap_or_default();
    let groups: serde_json::Map<String, Value> = s
        .stats
        .iter()
        .map(|(group, tasks)| {
            let tasks: serde_json::Map<String, Value> = tasks
                .iter()
                .map(|(task, rows)| {
                    (
                        task.clone(),
                        json!({"movingAverages": {}, "totals": {"buildSegments": rows}}),
                    )
                })
                .collect();
            (group.to_string(), Value::Object(tasks))
        })
        .collect();
    Json(Value::Object(groups)).into_response()
}

async fn health(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let record = match active(&api, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let (_, healthy) = state_of(&api, &record);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "healthy": healthy }))).into_response()
}

async fn history(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match supervisors::history(api.overlord.store().as_ref(), &id).await {
        Ok(h) if h.is_empty() => not_found(&id),
        Ok(h) => Json(history_entries(h)).into_response(),
        Err(e) => refused(e),
    }
}

/// Newest first, as Druid lists them.
fn history_entries(mut history: Vec<(String, Value)>) -> Vec<Value> {
    history.reverse();
    history
        .into_iter()
        .map(|(version, spec)| json!({ "spec": spec, "version": version }))
        .collect()
}

async fn all_history(State(api): State<Api>) -> Response {
    let store = api.overlord.store().clone();
    let records = match supervisors::list(store.as_ref()).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let mut out = serde_json::Map::new();
    for r in records {
        match supervisors::history(store.as_ref(), &r.id).await {
            Ok(h) => {
                out.insert(r.id, json!(history_entries(h)));
            }
            Err(e) => return refused(e),
        }
    }
    Json(Value::Object(out)).into_response()
}

async fn set_suspended(api: &Api, id: &str, suspended: bool) -> Response {
    if let Err(response) = active(api, id).await {
        return response;
    }
    match api.overlord.suspend_supervisor(id, suspended).await {
        Ok(r) => Json(shown_spec(&r)).into_response(),
        Err(e) => refused(e),
    }
}

async fn suspend(State(api): State<Api>, Path(id): Path<String>) -> Response {
    set_suspended(&api, &id, true).await
}

async fn resume(State(api): State<Api>, Path(id): Path<String>) -> Response {
    set_suspended(&api, &id, false).await
}

async fn reset(State(api): State<Api>, Path(id): Path<String>) -> Response {
    if let Err(response) = active(&api, &id).await {
        return response;
    }
    match api.overlord.reset_supervisor(&id).await {
        Ok(()) => Json(json!({ "id": id })).into_response(),
        Err(e) => refused(e),
    }
}

async fn terminate(State(api): State<Api>, Path(id): Path<String>) -> Response {
    if let Err(response) = active(&api, &id).await {
        return response;
    }
    match api.overlord.terminate_supervisor(&id).await {
        Ok(_) => Json(json!({ "id": id })).into_response(),
        Err(e) => refused(e),
    }
}

/// Applies `change` to every active supervisor.
async fn for_all(api: &Api, change: &str) -> Response {
    let records = match active_all(api).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    for r in records {
        let done = match change {
            "suspend" => api
                .overlord
                .suspend_supervisor(&r.id, true)
                .await
                .map(|_| ()),
            "resume" => api
                .overlord
                .suspend_supervisor(&r.id, false)
                .await
                .map(|_| ()),
            _ => api.overlord.terminate_supervisor(&r.id).await.map(|_| ()),
        };
        if let Err(e) = done {
            return refused(e);
        }
    }
    Json(json!({ "status": "success" })).into_response()
}

async fn suspend_all(State(api): State<Api>) -> Response {
    for_all(&api, "suspend").await
}

async fn resume_all(State(api): State<Api>) -> Response {
    for_all(&api, "resume").await
}

async fn terminate_all(State(api): State<Api>) -> Response {
    for_all(&api, "terminate").await
}
