//! `grove historical`: serves the segments the coordinator assigns it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use grove_cluster::historical::{Historical, HistoricalSettings};
use grove_cluster::nodes::{NodeInfo, Role};
use grove_cluster::view::ClusterView;
use grove_sql::distributed::{FragmentClient, FragmentService, LoadedSource, Peers};

use super::http;
use crate::CliResult;
use crate::config::{self, CommonFlags, HistoricalConfig, StorageFlags};

#[derive(Debug, Clone, Args)]
pub struct HistoricalArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub storage: StorageFlags,
    /// The tier this historical belongs to.
    #[arg(long, env = "GROVE_TIER")]
    pub tier: Option<String>,
    /// Most bytes of segments it holds (K/M/G/T suffixes).
    #[arg(long, env = "GROVE_CAPACITY")]
    pub capacity: Option<String>,
    /// Brokers query replicas on higher-priority historicals first (default 0).
    #[arg(long, env = "GROVE_PRIORITY", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Arrow Flight address for plan fragments (port 0 picks a free port).
    #[arg(long, env = "GROVE_FLIGHT_ADDR")]
    pub flight_addr: Option<String>,
}

pub async fn run(args: HistoricalArgs) -> CliResult<()> {
    let file: HistoricalConfig = config::load(args.common.config.as_deref())?;
    let secret = super::cluster_secret(args.common.cluster_secret, file.cluster_secret.clone())?;
    let data_dir = super::data_dir(args.storage.data_dir, file.data_dir.clone());
    let deep = super::deep_storage(
        args.storage.deep_storage.as_deref(),
        file.deep_storage.as_ref(),
        &data_dir,
    )?;
    let capacity = args
        .capacity
        .or(file.capacity)
        .map(|c| config::bytes(&c, "capacity"))
        .transpose()?;
    let lease_ttl = super::lease_ttl(
        args.common
            .lease_ttl
            .as_deref()
            .or(file.lease_ttl.as_deref()),
    )?;
    let store =
        super::connect_etcd(args.common.etcd.or(file.etcd).as_deref(), "historical").await?;
    let (listener, node) = super::http_node(
        Role::Historical,
        args.common.http_addr.or(file.http_addr),
        "127.0.0.1:8084",
        args.common.node_id.or(file.node_id),
    )
    .await?;
    let flight_addr = args
        .flight_addr
        .or(file.flight_addr)
        .unwrap_or_else(|| "127.0.0.1:8083".into());
    let (flight_listener, flight) = super::bind(&flight_addr, "historical Flight").await?;
    let node = NodeInfo {
        flight_address: Some(flight.to_string()),
        tier: Some(
            args.tier
                .or(file.tier)
                .unwrap_or_else(|| grove_cluster::nodes::DEFAULT_TIER.into()),
        ),
        capacity,
        priority: args.priority.or(file.priority).unwrap_or(0),
        ..node
    };
    super::announce("historical", &node.id, "Flight", flight);
    let settings = HistoricalSettings {
        cache_dir: data_dir.join("segment-cache"),
        lease_ttl,
    };
    // Shuffle stages here read the fragments of the historicals `view` lists, and
    // their own without Flight.
    let view = ClusterView::start(store.clone());
    let peers_client = Arc::new(FragmentClient::new(
        super::FRAGMENT_DEADLINE,
        secret.clone(),
    ));
    let historical = Historical::new(store, deep, node, settings);
    let status = historical.status();
    let service = FragmentService::new(Arc::new(LoadedSource(historical.loaded())))
        .with_peers(Peers::new(&peers_client, Some(view)));
    peers_client.in_process(&flight.to_string(), service.clone());
    let running_fragments = service.running();
    let status_routes = http::status_routes(move || {
        let mut v = serde_json::to_value(status.read().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default();
        v["role"] = "historical".into();
        v["running_fragments"] = running_fragments.load(Ordering::Relaxed).into();
        v
    });
    let router = http::require(status_routes, http::Access::internal(&secret));
    let shutdown = super::shutdown_signal();
    let fragments = super::serve_fragments(flight_listener, service, secret, shutdown.clone());
    let running = tokio::spawn(historical.run(shutdown.clone()));
    super::serve_http(listener, router, None, shutdown).await?;
    let _ = running.await;
    fragments.await??;
    Ok(())
}
