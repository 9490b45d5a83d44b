//! `grove worker` (Druid's MiddleManager): runs tasks in `grove peon` child processes,
//! serves their logs, and carries their actions to the leading overlord over HTTP.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use grove_cluster::Error;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::election::Election;
use grove_cluster::indexer::Assignment;
use grove_cluster::indexer::actions::{ActionRequest, ActionSink, TaskAction};
use grove_cluster::indexer::worker::{
    DEFAULT_POLL, Launcher, Worker, WorkerSettings, pipe_command,
};
use grove_cluster::metastore::MetaStore;
use grove_cluster::nodes::{self, NodeInfo, Role};
use grove_sql::auth::ClusterSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::Child;

use super::http::{self, error};
use crate::CliResult;
use crate::client::{Client, base_url};
use crate::config::{self, CommonFlags, WorkerConfig};

/// Druid's MiddleManager port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8091";
/// Task slots unless configured.
pub const DEFAULT_CAPACITY: u32 = 2;
/// How long an action may take, lock waits included (Druid's task lock timeout is
/// five minutes).
const ACTION_TIMEOUT: Duration = Duration::from_secs(330);
/// How long a worker keeps trying to reach a leading overlord for one action (a
/// failover takes a lease TTL or so).
const LEADER_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Local directory: tasks work and keep their logs in {data_dir}/tasks.
    #[arg(long, env = "GROVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Deep storage URL (file:///path or s3://bucket/prefix); default {data_dir}/deep.
    #[arg(long, env = "GROVE_DEEP_STORAGE")]
    pub deep_storage: Option<String>,
    /// How many tasks run at once.
    #[arg(long, env = "GROVE_CAPACITY")]
    pub capacity: Option<u32>,
    /// Only tasks whose context names this category run here.
    #[arg(long, env = "GROVE_CATEGORY")]
    pub category: Option<String>,
}

pub async fn run(args: WorkerArgs) -> CliResult<()> {
    let file: WorkerConfig = config::load(args.common.config.as_deref())?;
    let secret = super::cluster_secret(args.common.cluster_secret, file.cluster_secret.clone())?;
    let etcd = args.common.etcd.or(file.etcd);
    let store = super::connect_etcd(etcd.as_deref(), "worker").await?;
    let data_dir = super::data_dir(args.data_dir, file.data_dir);
    let deep = super::deep_storage(
        args.deep_storage.as_deref(),
        file.deep_storage.as_ref(),
        &data_dir,
    )?;
    let (listener, mut node) = super::http_node(
        Role::Worker,
        args.common.http_addr.or(file.http_addr),
        DEFAULT_HTTP,
        args.common.node_id.or(file.node_id),
    )
    .await?;
    node.task_slots = Some(args.capacity.or(file.capacity).unwrap_or(DEFAULT_CAPACITY));
    node.category = args.category.or(file.category);
    let options = file.deep_storage.map(|d| d.options).unwrap_or_default();
    let settings = WorkerSettings {
        lease_ttl: super::lease_ttl(args.common.lease_ttl.or(file.lease_ttl).as_deref())?,
        work_dir: data_dir.join("tasks"),
        poll: DEFAULT_POLL,
    };
    let launcher = PeonLauncher::new(&deep, options, &node.http_address, secret.clone())?;
    let worker = Arc::new(Worker::new(
        store.clone(),
        node,
        settings,
        Arc::new(launcher),
        Arc::new(HttpActions::new(store, secret.clone())),
    ));
    let shutdown = super::shutdown_signal();
    let router = routes(worker.clone()).merge(http::status_routes({
        let worker = worker.clone();
        move || status_json(&worker)
    }));
    let router = http::require(router, http::Access::internal(&secret));
    let running = tokio::spawn(worker.run(shutdown.clone()));
    super::serve_http(listener, router, None, shutdown).await?;
    let _ = running.await;
    Ok(())
}

/// A worker's `/status` (also part of `grove start`'s).
pub fn status_json(worker: &Worker) -> Value {
    json!({
        "role": "worker",
        "node_id": worker.node().id,
        "capacity": worker.node().task_slots,
        "category": worker.node().category,
        "running_tasks": worker.running_tasks(),
    })
}

/// Starts `grove peon DIR` with the task in `DIR/task.json` and deep storage in its
/// environment, and the host a streaming task serves queries on: the worker's.
pub struct PeonLauncher {
    exe: PathBuf,
    deep_url: String,
    deep_options: String,
    host: String,
    /// The cluster secret a streaming task's Flight endpoint asks of brokers.
    secret: ClusterSecret,
}

impl PeonLauncher {
    /// `http_address` is the worker's: its tasks listen on its host.
    pub fn new(
        deep: &DeepStorage,
        options: BTreeMap<String, String>,
        http_address: &str,
        secret: ClusterSecret,
    ) -> CliResult<PeonLauncher> {
        let host = http_address
            .rsplit_once(':')
            .map_or(http_address, |(host, _)| host);
        Ok(PeonLauncher {
            exe: std::env::current_exe()
                .map_err(|e| format!("cannot find the grove executable to run tasks: {e}"))?,
            deep_url: deep.url().to_string(),
            deep_options: serde_json::to_string(&options)?,
            host: host.to_string(),
            secret,
        })
    }
}

impl Launcher for PeonLauncher {
    fn launch(
        &self,
        assignment: &Assignment,
        dir: &FsPath,
        log: std::fs::File,
    ) -> grove_cluster::Result<Child> {
        let task = dir.join("task.json");
        let payload = serde_json::to_vec_pretty(&assignment.payload)
            .map_err(|e| Error::Invalid(format!("the task's payload: {e}")))?;
        std::fs::write(&task, payload)
            .map_err(|e| Error::io(format!("writing {}", task.display()), e))?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("peon")
            .arg(dir)
            .env(crate::peon::DEEP_STORAGE_ENV, &self.deep_url)
            .env(crate::peon::DEEP_STORAGE_OPTIONS_ENV, &self.deep_options)
            .env(crate::peon::HOST_ENV, &self.host)
            .env(crate::client::SECRET_ENV, self.secret.reveal())
            .env("GROVE_LOG", "info");
        pipe_command(&mut command, log);
        command
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.exe.display()), e))
    }
}

/// Carries actions to whichever overlord leads, over HTTP, through failovers.
pub struct HttpActions {
    store: Arc<dyn MetaStore>,
    secret: ClusterSecret,
}

impl HttpActions {
    pub fn new(store: Arc<dyn MetaStore>, secret: ClusterSecret) -> HttpActions {
        HttpActions { store, secret }
    }

    async fn leader_address(&self) -> grove_cluster::Result<Option<String>> {
        let Some(leader) = Election::leader_of(self.store.as_ref(), "overlord").await? else {
            return Ok(None);
        };
        Ok(nodes::live(self.store.as_ref())
            .await?
            .into_iter()
            .find(|n: &NodeInfo| n.role == Role::Overlord && n.id == leader)
            .map(|n| n.http_address))
    }
}

#[async_trait::async_trait]
impl ActionSink for HttpActions {
    /// A publication the overlord may have received before the answer was lost is
    /// sent again: the overlord recognises a task's own segments as published.
    async fn perform(&self, request: &ActionRequest) -> grove_cluster::Result<Value> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let body = serde_json::to_value(request).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut last = String::from("no overlord leads");
        while tokio::time::Instant::now() < deadline {
            if let Some(address) = self.leader_address().await.ok().flatten() {
                let url = format!("{}/druid/indexer/v1/action", base_url(&address));
                let body = body.clone();
                let authorization = self.secret.authorization().to_string();
                let sent = tokio::task::spawn_blocking(move || {
                    Client::new(ACTION_TIMEOUT)
                        .with_authorization(Some(&authorization))
                        .post(&url, &body)
                })
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
                match sent {
                    Ok(answer) if answer.status == 200 => {
                        return answer.json().map_err(Error::Invalid);
                    }
                    Ok(answer) if answer.status == 400 => {
                        return Err(Error::Invalid(answer.reason()));
                    }
                    Ok(answer) if answer.status == 409 => {
                        return Err(Error::Busy(answer.reason()));
                    }
                    Ok(answer) if answer.status == 500 => {
                        return Err(Error::Indeterminate(answer.reason()));
                    }
                    Ok(answer) => last = answer.reason(),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let message = format!("no leading overlord answered within {LEADER_WAIT:?}: {last}");
        Err(match request.action {
            TaskAction::SegmentTransactionalInsert { .. } => Error::Indeterminate(message),
            _ => Error::Busy(message),
        })
    }
}

/// A worker's HTTP endpoints (Druid's MiddleManager paths).
pub fn routes(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/druid/worker/v1/tasks", get(running))
        .route("/druid/worker/v1/task/{id}/log", get(task_log))
        .with_state(worker)
}

async fn running(State(worker): State<Arc<Worker>>) -> Response {
    Json(worker.running_tasks()).into_response()
}

#[derive(Deserialize)]
struct LogParams {
    offset: Option<i64>,
}

/// A task's log; `offset` skips that many bytes, or keeps only the last `-offset`.
async fn task_log(
    State(worker): State<Arc<Worker>>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Response {
    let Some(path) = worker.log_path(&id) else {
        return error(StatusCode::BAD_REQUEST, "Invalid input", "not a task id");
    };
    let read =
        tokio::task::spawn_blocking(move || read_log(&path, params.offset.unwrap_or(0))).await;
    match read {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no log of task {id} on this worker"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e),
    }
}

fn read_log(path: &FsPath, offset: i64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = if offset >= 0 {
        (offset as u64).min(length)
    } else {
        length.saturating_sub(offset.unsigned_abs())
    };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
