//! `grove start`: a coordinator, a broker and one or more historicals in one process
//! ([`LocalCluster`]), with an overlord and a worker, on the embedded metadata store of
//! a data directory and local deep storage, served over HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::indexer::overlord::{Overlord, OverlordSettings};
use grove_cluster::indexer::worker::{DEFAULT_POLL, Worker, WorkerSettings};
use grove_cluster::nodes::{NodeInfo, Role};
use grove_sql::local::{LocalCluster, LocalOptions};
use tokio::sync::watch;

use super::frontends::{FrontEndFile, FrontEndSettings, FrontEnds, Serving};
use super::worker::PeonLauncher;
use super::{http, indexer_api};
use crate::CliResult;
use crate::config::{self, FrontEndFlags, StartConfig};
use crate::data_dir::DataDir;

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// The start TOML config file.
    #[arg(long, env = "GROVE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "GROVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address (SQL, rules, status).
    #[arg(long, env = "GROVE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// How many historicals to run in the process.
    #[arg(long, env = "GROVE_HISTORICALS")]
    pub historicals: Option<usize>,
    /// Capacity of each historical (K/M/G/T suffixes).
    #[arg(long, env = "GROVE_CAPACITY")]
    pub capacity: Option<String>,
    /// Time between coordinator runs (e.g. PT1S).
    #[arg(long, env = "GROVE_PERIOD")]
    pub period: Option<String>,
    #[command(flatten)]
    pub front: FrontEndFlags,
    /// Deep storage URL; default {data_dir}/deep.
    #[arg(long, env = "GROVE_DEEP_STORAGE")]
    pub deep_storage: Option<String>,
    /// How many ingestion tasks run at once.
    #[arg(long, env = "GROVE_TASK_SLOTS")]
    pub task_slots: Option<u32>,
}

/// How long `grove start` waits for the segments published before it started to be
/// served before it answers queries anyway (and says so).
const SERVED_BEFORE_QUERIES: Duration = Duration::from_secs(300);

/// The overlord and worker of `grove start`.
struct Indexing {
    overlord: Arc<Overlord>,
    worker: Arc<Worker>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Indexing {
    fn start(
        cluster: &LocalCluster,
        deep: &DeepStorage,
        data_dir: &std::path::Path,
        http_address: &str,
        slots: u32,
        shutdown: &watch::Receiver<bool>,
    ) -> CliResult<Indexing> {
        let settings = OverlordSettings::default();
        let lease_ttl = settings.lease_ttl;
        let node = NodeInfo::new("overlord", Role::Overlord, http_address);
        let overlord = Arc::new(Overlord::new(cluster.store.clone(), node, settings));
        let node = NodeInfo {
            task_slots: Some(slots),
            ..NodeInfo::new("worker", Role::Worker, http_address)
        };
        let worker = Arc::new(Worker::new(
            cluster.store.clone(),
            node,
            WorkerSettings {
                lease_ttl,
                work_dir: data_dir.join("tasks"),
                poll: DEFAULT_POLL,
            },
            Arc::new(PeonLauncher::new(
                deep,
                BTreeMap::new(),
                http_address,
                cluster.secret.clone(),
            )?),
            overlord.clone(),
        ));
        let tasks = vec![
            tokio::spawn(overlord.clone().run(shutdown.clone())),
            tokio::spawn(worker.clone().run(shutdown.clone())),
        ];
        Ok(Indexing {
            overlord,
            worker,
            tasks,
        })
    }

    async fn stop(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The HTTP endpoints of `grove start`: a broker's, a coordinator's, an overlord's and
/// a worker's, and a status covering every role.
fn router(
    cluster: &LocalCluster,
    indexing: &Indexing,
    front: &FrontEndSettings,
    serving: &Serving,
) -> axum::Router {
    let coordinator = cluster.coordinator.clone();
    let historicals = cluster.historicals.clone();
    let running_fragments = cluster.running_fragments.clone();
    let view = cluster.view.clone();
    let front_ends = serving.status();
    let overlord = indexing.overlord.clone();
    let worker = indexing.worker.clone();
    let protected = grove_sql::druid_http::routes(cluster.engine.clone(), front.query_timeout)
        .merge(http::coordinator_routes(
            cluster.store.clone(),
            cluster.coordinator.clone(),
        ))
        .merge(indexer_api::routes(overlord.clone(), None))
        .merge(super::worker::routes(worker.clone()));
    http::require(
        protected,
        http::Access {
            users: front.users.clone(),
            secret: None,
        },
    )
    .merge(http::status_routes(move || {
        let historicals: Vec<serde_json::Value> = historicals
            .iter()
            .zip(&running_fragments)
            .map(|(h, running)| {
                let mut status =
                    serde_json::to_value(h.read().map(|s| s.clone()).unwrap_or_default())
                        .unwrap_or_default();
                status["running_fragments"] = running.load(Ordering::Relaxed).into();
                status
            })
            .collect();
        serde_json::json!({
            "role": "start",
            "metadata_store_connected": view.is_connected(),
            "coordinator": super::coordinator::status_json(&coordinator),
            "overlord": super::overlord::status_json(&overlord),
            "worker": super::worker::status_json(&worker),
            "historicals": historicals,
            "front_ends": front_ends(),
        })
    }))
}

pub async fn run(args: StartArgs) -> CliResult<()> {
    let file: StartConfig = config::load(args.config.as_deref())?;
    let data_dir = super::data_dir(args.data_dir, file.data_dir.clone());
    let dir = DataDir::new(&data_dir);
    let store = dir.open_for_writing()?;
    let deep = super::deep_storage(
        args.deep_storage.as_deref(),
        file.deep_storage.as_ref(),
        &data_dir,
    )?;
    let http_addr = args
        .http_addr
        .or(file.http_addr)
        .unwrap_or_else(|| "127.0.0.1:8888".into());
    let (listener, addr): (_, SocketAddr) = super::bind(&http_addr, "HTTP").await?;
    let front = FrontEnds::bind(
        args.front,
        FrontEndFile {
            pg_addr: file.pg_addr.clone(),
            flight_addr: file.flight_addr.clone(),
            query_timeout: file.query_timeout.clone(),
            users: &file.users,
            tls_cert: file.tls_cert.clone(),
            tls_key: file.tls_key.clone(),
        },
    )
    .await?;
    let options = LocalOptions {
        historicals: args.historicals.or(file.historicals).unwrap_or(1),
        capacity: args
            .capacity
            .or(file.capacity)
            .map(|c| config::bytes(&c, "capacity"))
            .transpose()?,
        period: config::duration(
            args.period.or(file.period).as_deref().unwrap_or("PT1S"),
            "period",
        )?,
        http_address: addr.to_string(),
        fragment_deadline: super::FRAGMENT_DEADLINE,
        cache_bytes: super::RESULT_CACHE_BYTES,
        fragments_in_process: true,
        secret: grove_sql::auth::ClusterSecret::generate(),
    };
    let task_slots = args.task_slots.or(file.task_slots).unwrap_or(2);
    let cluster = LocalCluster::start(store, deep.clone(), &data_dir, options).await?;
    let shutdown = super::shutdown_signal();
    let indexing = Indexing::start(
        &cluster,
        &deep,
        &data_dir,
        &addr.to_string(),
        task_slots,
        &shutdown,
    )?;
    // The first query must see everything published before the start.
    if let Err(e) = cluster.wait_served(1, SERVED_BEFORE_QUERIES).await {
        tracing::warn!("answering queries before every segment is served: {e}");
    }
    super::announce("start", "local", "HTTP", addr);
    eprintln!(
        "grove start: data in {}; query with POST http://{addr}/druid/v2/sql, \
         submit tasks to http://{addr}/druid/indexer/v1/task",
        data_dir.display()
    );
    let settings = front.settings();
    let http_tls = front.http_tls();
    let serving = front.serve(cluster.engine.clone(), "start", "local", shutdown.clone());
    let router = router(&cluster, &indexing, &settings, &serving);
    super::serve_with_front_ends(listener, router, http_tls, shutdown, serving).await?;
    indexing.stop().await;
    cluster.stop().await;
    Ok(())
}
