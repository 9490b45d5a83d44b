//! `grove start`: a coordinator, a broker and one or more historicals in one process,
//! on the embedded metadata store of a data directory and local deep storage. Every
//! role runs the same code as in a cluster; they only share the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clap::Args;
use grove_cluster::coordinator::{Coordinator, CoordinatorSettings, CoordinatorStatus};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::historical::{Historical, HistoricalSettings, HistoricalStatus};
use grove_cluster::metastore::MetaStore;
use grove_cluster::nodes::{self, DEFAULT_TIER, NodeInfo, Role};
use grove_cluster::rules::{self, DEFAULT_RULES, Rule};
use grove_cluster::view::ClusterView;
use grove_sql::Engine;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http;
use crate::CliResult;
use crate::config::{self, StartConfig};
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
    /// Deep storage URL; default {data_dir}/deep.
    #[arg(long, env = "GROVE_DEEP_STORAGE")]
    pub deep_storage: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub historicals: usize,
    pub capacity: Option<u64>,
    pub period: Duration,
    /// The address other nodes would reach this process at.
    pub http_address: String,
}

/// Every role, running in this process.
pub struct LocalCluster {
    pub store: Arc<dyn MetaStore>,
    pub view: Arc<ClusterView>,
    pub engine: Arc<Engine>,
    coordinator: Arc<RwLock<CoordinatorStatus>>,
    historicals: Vec<Arc<RwLock<HistoricalStatus>>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

const LEASE_TTL: Duration = Duration::from_secs(10);

impl LocalCluster {
    pub async fn start(
        store: Arc<dyn MetaStore>,
        deep: DeepStorage,
        data_dir: &Path,
        options: LocalOptions,
    ) -> CliResult<LocalCluster> {
        if options.historicals == 0 {
            return Err("grove start needs at least one historical".into());
        }
        // A fresh directory gets one replica per segment on as many historicals as
        // there are (at most two); rules set later are kept.
        if store.get(&rules::key(DEFAULT_RULES)).await?.is_none() {
            let replicas = options.historicals.min(2) as u32;
            let default = vec![Rule::LoadForever {
                tiered_replicants: [(DEFAULT_TIER.to_string(), replicas)].into(),
            }];
            rules::set(store.as_ref(), DEFAULT_RULES, &default).await?;
        }
        let (shutdown, rx) = watch::channel(false);
        let node = |id: &str, role: Role| NodeInfo::new(id, role, &options.http_address);
        let mut tasks = Vec::new();
        let settings = CoordinatorSettings {
            period: options.period,
            lease_ttl: LEASE_TTL,
            ..CoordinatorSettings::default()
        };
        let coordinator = Coordinator::new(
            store.clone(),
            node("coordinator", Role::Coordinator),
            settings,
        );
        let coordinator_status = coordinator.status();
        tasks.push(tokio::spawn(coordinator.run(rx.clone())));
        let mut historicals = Vec::new();
        for i in 1..=options.historicals {
            let id = format!("historical-{i}");
            let settings = HistoricalSettings {
                cache_dir: data_dir.join(&id).join("segment-cache"),
                lease_ttl: LEASE_TTL,
            };
            // Each serves plan fragments on a port of its own, as in a cluster.
            let (flight, flight_addr) = super::bind("127.0.0.1:0", "historical Flight").await?;
            let info = NodeInfo {
                flight_address: Some(flight_addr.to_string()),
                tier: Some(DEFAULT_TIER.to_string()),
                capacity: options.capacity,
                ..node(&id, Role::Historical)
            };
            let historical = Historical::new(store.clone(), deep.clone(), info, settings);
            historicals.push(historical.status());
            let fragments = super::serve_fragments(flight, historical.loaded(), rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok(Err(e)) = fragments.await {
                    tracing::warn!("historical Flight service: {e}");
                }
            }));
            tasks.push(tokio::spawn(historical.run(rx.clone())));
        }
        tasks.push(tokio::spawn(nodes::stay_registered(
            store.clone(),
            node("broker", Role::Broker),
            LEASE_TTL,
            rx,
        )));
        let view = ClusterView::start(store.clone());
        view.wait_synced(Duration::from_secs(30)).await?;
        let engine = Arc::new(Engine::broker(
            view.clone(),
            super::FRAGMENT_DEADLINE,
            super::RESULT_CACHE_BYTES,
        )?);
        Ok(LocalCluster {
            store,
            view,
            engine,
            coordinator: coordinator_status,
            historicals,
            shutdown,
            tasks,
        })
    }

    /// Waits until every used segment is served, or `timeout` passes.
    pub async fn wait_loaded(&self, timeout: Duration) -> CliResult<()> {
        let began = Instant::now();
        loop {
            let segments = self.engine.metadata().segments(None);
            let waiting = segments.iter().filter(|s| !s.available).count();
            if waiting == 0 {
                return Ok(());
            }
            if began.elapsed() > timeout {
                return Err(format!(
                    "{waiting} of {} segments were still not loaded after {}s",
                    segments.len(),
                    timeout.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn router(&self) -> axum::Router {
        let coordinator = self.coordinator.clone();
        let historicals = self.historicals.clone();
        let view = self.view.clone();
        http::broker_routes(self.engine.clone())
            .merge(http::coordinator_routes(
                self.store.clone(),
                self.coordinator.clone(),
            ))
            .merge(http::status_routes(move || {
                let historicals: Vec<serde_json::Value> = historicals
                    .iter()
                    .map(|h| {
                        serde_json::to_value(h.read().map(|s| s.clone()).unwrap_or_default())
                            .unwrap_or_default()
                    })
                    .collect();
                serde_json::json!({
                    "role": "start",
                    "metadata_store_connected": view.is_connected(),
                    "coordinator": super::coordinator::status_json(&coordinator),
                    "historicals": historicals,
                })
            }))
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
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
    };
    let cluster = LocalCluster::start(store, deep, &data_dir, options).await?;
    super::announce("start", "local", "HTTP", addr);
    eprintln!(
        "grove start: data in {}; query with POST http://{addr}/druid/v2/sql",
        data_dir.display()
    );
    let shutdown = super::shutdown_signal();
    super::serve_http(listener, cluster.router(), shutdown).await?;
    cluster.stop().await;
    Ok(())
}
