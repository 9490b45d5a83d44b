//! Every role in one process: a coordinator, historicals that serve plan fragments on
//! loopback Flight ports of their own, and a broker's engine, sharing one metadata
//! store. Each runs the same code as in a cluster; the broker may hand its fragments to
//! the historicals' services directly and take their batches as they are, without
//! Flight's encoding ([`LocalOptions::fragments_in_process`], as `grove start` does). `grove start` serves this over HTTP; tests run SQL
//! against it as against a cluster.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use grove_cluster::coordinator::{Coordinator, CoordinatorSettings, CoordinatorStatus};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::historical::{Historical, HistoricalSettings, HistoricalStatus};
use grove_cluster::metastore::MetaStore;
use grove_cluster::nodes::{self, DEFAULT_TIER, NodeInfo, Role};
use grove_cluster::rules::{self, DEFAULT_RULES, Rule};
use grove_cluster::segments;
use grove_cluster::view::ClusterView;
use grove_cluster::{Error, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Engine;
use crate::auth::ClusterSecret;
use crate::distributed::{self, FragmentClient, FragmentService, LoadedSource, Peers};

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub historicals: usize,
    pub capacity: Option<u64>,
    pub period: Duration,
    /// The address other nodes would reach this process at.
    pub http_address: String,
    /// The longest one fragment may run on a historical.
    pub fragment_deadline: Duration,
    /// The broker's result cache (0: none).
    pub cache_bytes: usize,
    /// Whether the broker runs the historicals' fragments in this process, taking
    /// their batches as they are; otherwise over their Flight ports, as in a cluster.
    pub fragments_in_process: bool,
    /// The identity the historicals' Flight ports ask of the broker (and of realtime
    /// tasks' clients): `grove start` makes a fresh one.
    pub secret: ClusterSecret,
}

/// Every role, running in this process.
pub struct LocalCluster {
    pub store: Arc<dyn MetaStore>,
    pub view: Arc<ClusterView>,
    pub engine: Arc<Engine>,
    pub coordinator: Arc<RwLock<CoordinatorStatus>>,
    pub historicals: Vec<Arc<RwLock<HistoricalStatus>>>,
    /// How many plan fragments each historical is running.
    pub running_fragments: Vec<Arc<AtomicUsize>>,
    /// What the historicals' Flight ports ask of callers.
    pub secret: ClusterSecret,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

const LEASE_TTL: Duration = Duration::from_secs(10);

impl LocalCluster {
    /// Starts every role; historicals keep their segment caches under `data_dir`.
    pub async fn start(
        store: Arc<dyn MetaStore>,
        deep: DeepStorage,
        data_dir: &Path,
        options: LocalOptions,
    ) -> Result<LocalCluster> {
        if options.historicals == 0 {
            return Err(Error::Invalid(
                "a local cluster needs at least one historical".into(),
            ));
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
        let mut running_fragments = Vec::new();
        let mut client = FragmentClient::new(options.fragment_deadline, options.secret.clone());
        if options.cache_bytes > 0 {
            client = client.with_cache(options.cache_bytes);
        }
        let client = Arc::new(client);
        let view = ClusterView::start(store.clone());
        // Shuffle stages on a historical read the others' fragments as the broker does.
        let peers = Peers::new(&client, Some(view.clone()));
        for i in 1..=options.historicals {
            let id = format!("historical-{i}");
            let settings = HistoricalSettings {
                cache_dir: data_dir.join(&id).join("segment-cache"),
                lease_ttl: LEASE_TTL,
            };
            // Each serves plan fragments on a port of its own, as in a cluster.
            let flight = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::io("historical Flight: binding a loopback port", e))?;
            let flight_addr = flight
                .local_addr()
                .map_err(|e| Error::io("historical Flight", e))?;
            let info = NodeInfo {
                flight_address: Some(flight_addr.to_string()),
                tier: Some(DEFAULT_TIER.to_string()),
                capacity: options.capacity,
                ..node(&id, Role::Historical)
            };
            let historical = Historical::new(store.clone(), deep.clone(), info, settings);
            historicals.push(historical.status());
            let service = FragmentService::new(Arc::new(LoadedSource(historical.loaded())))
                .with_peers(peers.clone());
            running_fragments.push(service.running());
            // The port serves any other client that carries the secret.
            if options.fragments_in_process {
                client.in_process(&flight_addr.to_string(), service.clone());
            }
            let mut stop = rx.clone();
            let secret = options.secret.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move { grove_cluster::session::stopped(&mut stop).await };
                if let Err(e) = distributed::serve(flight, service, secret, stopped).await {
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
        view.wait_synced(Duration::from_secs(30)).await?;
        let engine = Arc::new(Engine::broker_with(view.clone(), client));
        Ok(LocalCluster {
            secret: options.secret,
            store,
            view,
            engine,
            coordinator: coordinator_status,
            historicals,
            running_fragments,
            shutdown,
            tasks,
        })
    }

    /// Waits until every used segment in the store is served by `replicas`
    /// historicals (or all of them, if fewer) as the broker sees it, or `timeout`
    /// passes. The store is read each time: the broker's view may not have seen a
    /// segment published a moment ago.
    pub async fn wait_served(&self, replicas: usize, timeout: Duration) -> Result<()> {
        let wanted = replicas.min(self.historicals.len()).max(1);
        let began = Instant::now();
        loop {
            let used: Vec<String> = segments::load(self.store.as_ref(), None)
                .await?
                .into_iter()
                .filter(|d| d.used)
                .map(|d| d.id.to_string())
                .collect();
            let seen: HashMap<String, usize> = self
                .engine
                .metadata()
                .segments(None)
                .into_iter()
                .filter(|s| s.available)
                .map(|s| (s.descriptor.id.to_string(), s.replicas.len()))
                .collect();
            let waiting = used
                .iter()
                .filter(|id| seen.get(*id).is_none_or(|n| *n < wanted))
                .count();
            if waiting == 0 {
                return Ok(());
            }
            if began.elapsed() > timeout {
                return Err(Error::Busy(format!(
                    "{waiting} of {} segments were still not served by {wanted} \
                     historical(s) after {}s",
                    used.len(),
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
