//! Druid's Overlord API (`/druid/indexer/v1/...`), paths and JSON shapes as Druid's
//! documentation gives them, and the endpoint workers carry their tasks' actions to.
//!
//! A standby answers `isLeader` and `leader` itself and redirects every other request
//! (307, so clients send a POST's body again) to the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use grove_cluster::Error;
use grove_cluster::indexer::actions::ActionRequest;
use grove_cluster::indexer::overlord::Overlord;
use grove_cluster::indexer::{self, RunnerReport};
use grove_cluster::nodes::{self, Role};
use grove_cluster::task_status::{self, TaskRecord, TaskState};
use grove_sql::auth::ClusterSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::error;
use crate::client::{Client, base_url};

/// How long the overlord waits for a worker's log.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Api {
    overlord: Arc<Overlord>,
    /// What the overlord's own calls to workers carry.
    secret: Option<ClusterSecret>,
}

/// The task API; the overlord's calls to workers (their task logs) carry `secret`.
pub fn routes(overlord: Arc<Overlord>, secret: Option<ClusterSecret>) -> Router {
    let api = Api { overlord, secret };
    let led = Router::new()
        .route("/druid/indexer/v1/task", post(submit))
        .route("/druid/indexer/v1/task/{id}", get(payload))
        .route("/druid/indexer/v1/task/{id}/status", get(status))
        .route("/druid/indexer/v1/task/{id}/reports", get(reports))
        .route("/druid/indexer/v1/task/{id}/log", get(log))
        .route("/druid/indexer/v1/task/{id}/shutdown", post(shutdown))
        .route("/druid/indexer/v1/tasks", get(tasks))
        .route("/druid/indexer/v1/runningTasks", get(running_tasks))
        .route("/druid/indexer/v1/completeTasks", get(complete_tasks))
        .route("/druid/indexer/v1/pendingTasks", get(pending_tasks))
        .route("/druid/indexer/v1/waitingTasks", get(waiting_tasks))
        .route("/druid/indexer/v1/taskStatus", post(task_statuses))
        .route("/druid/indexer/v1/workers", get(workers))
        .route(
            "/druid/indexer/v1/totalWorkerCapacity",
            get(total_worker_capacity),
        )
        .route("/druid/indexer/v1/action", post(action))
        .route_layer(middleware::from_fn_with_state(api.clone(), to_leader));
    let supervisors = super::supervisor_api::routes(api.overlord.clone())
        .route_layer(middleware::from_fn_with_state(api.clone(), to_leader));
    Router::new()
        .route("/druid/indexer/v1/isLeader", get(is_leader))
        .route("/druid/indexer/v1/leader", get(leader))
        .merge(led)
        .with_state(api)
        .merge(supervisors)
}

/// Lets requests through on the leader; elsewhere redirects them to it.
async fn to_leader(State(api): State<Api>, request: Request, next: Next) -> Response {
    if api.overlord.status().is_leader {
        return next.run(request).await;
    }
    match api.overlord.leader_address().await {
        Ok(Some(address)) => {
            let target = format!(
                "{}{}",
                base_url(&address),
                request.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response()
        }
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "No leader",
            "no overlord leads yet; try again shortly",
        ),
        Err(e) => unavailable(e),
    }
}

async fn is_leader(State(api): State<Api>) -> Response {
    let leading = api.overlord.status().is_leader;
    let status = if leading {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Json(json!({ "leader": leading }))).into_response()
}

async fn leader(State(api): State<Api>) -> Response {
    match api.overlord.leader_address().await {
        Ok(Some(address)) => base_url(&address).into_response(),
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "No leader",
            "no overlord leads yet",
        ),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Metadata store unavailable",
        e,
    )
}

/// The answer to an error of the overlord.
fn refused(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "Invalid input", m),
        Error::Segment(e) => error(StatusCode::BAD_REQUEST, "Invalid input", e),
        Error::Busy(m) => error(StatusCode::CONFLICT, "Conflict", m),
        Error::Indeterminate(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "Indeterminate", m),
        e => unavailable(e),
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("Cannot find any task with id: [{id}]"),
    )
}

async fn record(api: &Api, id: &str) -> Result<TaskRecord, Response> {
    match task_status::get(api.overlord.store().as_ref(), id).await {
        Ok(Some((record, _))) => Ok(record),
        Ok(None) => Err(not_found(id)),
        Err(e) => Err(unavailable(e)),
    }
}

async fn submit(State(api): State<Api>, body: Bytes) -> Response {
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid input",
                format!("the task is not valid JSON: {e}"),
            );
        }
    };
    match api.overlord.submit(payload).await {
        Ok(id) => Json(json!({ "task": id })).into_response(),
        Err(e) => refused(e),
    }
}

async fn payload(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match record(&api, &id).await {
        Ok(r) => Json(r.payload_response()).into_response(),
        Err(response) => response,
    }
}

async fn status(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match record(&api, &id).await {
        Ok(r) => Json(r.status_response()).into_response(),
        Err(response) => response,
    }
}

/// The runner's report while the task runs (live), the record's once it ended.
async fn live_report(api: &Api, record: &TaskRecord) -> Option<RunnerReport> {
    if record.state != TaskState::Running {
        return None;
    }
    let worker = record.worker.as_deref()?;
    indexer::runner_report(api.overlord.store().as_ref(), worker, &record.id)
        .await
        .ok()
        .flatten()
}

async fn reports(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let record = match record(&api, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let report = match live_report(&api, &record).await {
        Some(live) => live.report,
        None => record.report.clone(),
    };
    Json(report.response(&record.id)).into_response()
}

#[derive(Deserialize)]
struct LogParams {
    offset: Option<i64>,
}

async fn log(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Response {
    let record = match record(&api, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some(worker) = record.worker.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("task {id} has not run on a worker; it has no log"),
        );
    };
    let address = match nodes::live(api.overlord.store().as_ref()).await {
        Ok(nodes) => nodes
            .into_iter()
            .find(|n| n.role == Role::Worker && n.id == worker)
            .map(|n| n.http_address),
        Err(e) => return unavailable(e),
    };
    let Some(address) = address else {
        return error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("the log of task {id} is on worker {worker}, which is not running"),
        );
    };
    let mut url = format!("{}/druid/worker/v1/task/{id}/log", base_url(&address));
    if let Some(offset) = params.offset {
        url.push_str(&format!("?offset={offset}"));
    }
    let authorization = api.secret.as_ref().map(|s| s.authorization().to_string());
    let fetched = tokio::task::spawn_blocking(move || {
        Client::new(LOG_TIMEOUT)
            .with_authorization(authorization.as_deref())
            .get(&url)
    })
    .await;
    match fetched {
        Ok(Ok(answer)) if answer.status == 200 => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            answer.body,
        )
            .into_response(),
        Ok(Ok(answer)) => error(StatusCode::NOT_FOUND, "Not found", answer.reason()),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, "Worker unreachable", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e),
    }
}

async fn shutdown(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.overlord.shutdown(&id).await {
        Ok(()) => Json(json!({ "task": id })).into_response(),
        Err(Error::Invalid(_)) => not_found(&id),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize, Default)]
struct TaskFilter {
    state: Option<String>,
    datasource: Option<String>,
    max: Option<usize>,
    #[serde(rename = "type")]
    task_type: Option<String>,
    /// `2023-06-27_2023-06-28`: an ISO interval with `_` for `/`.
    #[serde(rename = "createdTimeInterval")]
    created_time_interval: Option<String>,
}

/// Druid's task states as `?state=` names them.
fn in_state(state: &str, record: &TaskRecord) -> bool {
    match state {
        "running" => record.state == TaskState::Running,
        "pending" => record.state == TaskState::Pending,
        "waiting" => record.state == TaskState::Waiting,
        "complete" => record.state.is_complete(),
        _ => false,
    }
}

async fn list(api: &Api, filter: TaskFilter) -> Response {
    if let Some(state) = &filter.state
        && !["running", "complete", "waiting", "pending"].contains(&state.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid input",
            format!(
                "Invalid state : {state}, valid values are: running, complete, waiting, pending"
            ),
        );
    }
    let created = match filter.created_time_interval.as_deref() {
        None => None,
        Some(text) => match grove_segment::Interval::parse(&text.replacen('_', "/", 1)) {
            Ok(interval) => Some(interval),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid input",
                    format!("createdTimeInterval {text:?}: {e}"),
                );
            }
        },
    };
    let mut records = match task_status::list(api.overlord.store().as_ref()).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    records.retain(|r| {
        filter.state.as_deref().is_none_or(|s| in_state(s, r))
            && filter
                .datasource
                .as_deref()
                .is_none_or(|d| r.datasource == d)
            && filter.task_type.as_deref().is_none_or(|t| r.task_type == t)
            && created.is_none_or(|i| i.contains(r.created_time))
    });
    // Active tasks first, then complete ones, each newest first, as Druid lists them.
    records.sort_by_key(|r| (r.state.is_complete(), std::cmp::Reverse(r.created_time)));
    if let Some(max) = filter.max {
        let active = records.iter().filter(|r| !r.state.is_complete()).count();
        records.truncate(active + max);
    }
    Json(
        records
            .iter()
            .map(TaskRecord::status_plus)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn tasks(State(api): State<Api>, Query(filter): Query<TaskFilter>) -> Response {
    list(&api, filter).await
}

async fn in_one_state(api: Api, state: &str, filter: TaskFilter) -> Response {
    let filter = TaskFilter {
        state: Some(state.into()),
        ..filter
    };
    list(&api, filter).await
}

async fn running_tasks(State(api): State<Api>, Query(f): Query<TaskFilter>) -> Response {
    in_one_state(api, "running", f).await
}

async fn complete_tasks(State(api): State<Api>, Query(f): Query<TaskFilter>) -> Response {
    in_one_state(api, "complete", f).await
}

async fn pending_tasks(State(api): State<Api>, Query(f): Query<TaskFilter>) -> Response {
    in_one_state(api, "pending", f).await
}

async fn waiting_tasks(State(api): State<Api>, Query(f): Query<TaskFilter>) -> Response {
    in_one_state(api, "waiting", f).await
}

/// `POST /taskStatus` with a list of ids: `{id: {id, status, duration, errorMsg,
/// location}}` for the known ones.
async fn task_statuses(State(api): State<Api>, body: Bytes) -> Response {
    let ids: Vec<String> = match serde_json::from_slice(&body) {
        Ok(ids) => ids,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid input",
                format!("expected a JSON list of task ids: {e}"),
            );
        }
    };
    let mut out = serde_json::Map::new();
    for id in ids {
        match task_status::get(api.overlord.store().as_ref(), &id).await {
            Ok(Some((record, _))) => {
                let plus = record.status_plus();
                let status = json!({
                    "id": record.id,
                    "status": plus["statusCode"],
                    "duration": plus["duration"],
                    "errorMsg": plus["errorMsg"],
                    "location": plus["location"],
                });
                out.insert(id, status);
            }
            Ok(None) => {}
            Err(e) => return unavailable(e),
        }
    }
    Json(Value::Object(out)).into_response()
}

/// Live workers and what runs on each: `(worker, used slots, running task ids)`.
async fn worker_use(api: &Api) -> grove_cluster::Result<Vec<(nodes::NodeInfo, Vec<String>)>> {
    let store = api.overlord.store().as_ref();
    let mut running: HashMap<String, Vec<String>> = HashMap::new();
    for (worker, assignment, _) in indexer::assignments(store).await? {
        running.entry(worker).or_default().push(assignment.task_id);
    }
    Ok(nodes::live(store)
        .await?
        .into_iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| {
            let tasks = running.remove(&n.id).unwrap_or_default();
            (n, tasks)
        })
        .collect())
}

async fn workers(State(api): State<Api>) -> Response {
    let used = match worker_use(&api).await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let list: Vec<Value> = used
        .into_iter()
        .map(|(node, tasks)| {
            let host = node.http_address.clone();
            let ip = host
                .rsplit_once(':')
                .map_or(host.as_str(), |(h, _)| h)
                .to_string();
            json!({
                "worker": {
                    "scheme": "http",
                    "host": host,
                    "ip": ip,
                    "capacity": node.task_slots.unwrap_or(0),
                    "version": "0",
                    "category": node.category.as_deref().unwrap_or("_default_worker_category"),
                },
                "currCapacityUsed": tasks.len(),
                "currParallelIndexCapacityUsed": 0,
                "availabilityGroups": tasks,
                "runningTasks": tasks,
                "lastCompletedTaskTime": node.started_at,
                "blacklistedUntil": null,
            })
        })
        .collect();
    Json(list).into_response()
}

async fn total_worker_capacity(State(api): State<Api>) -> Response {
    let used = match worker_use(&api).await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let capacity: u64 = used
        .iter()
        .map(|(n, _)| u64::from(n.task_slots.unwrap_or(0)))
        .sum();
    let in_use: usize = used.iter().map(|(_, t)| t.len()).sum();
    Json(json!({
        "currentClusterCapacity": capacity,
        "maximumCapacityWithAutoScale": capacity,
        "usedClusterCapacity": in_use,
    }))
    .into_response()
}

/// `POST /druid/indexer/v1/action`: a running task's action, carried by its worker.
async fn action(State(api): State<Api>, body: Bytes) -> Response {
    let request: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid input",
                format!("not a task action: {e}"),
            );
        }
    };
    match grove_cluster::indexer::actions::ActionSink::perform(api.overlord.as_ref(), &request)
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => refused(e),
    }
}
