//! `grove coordinator`: one coordinator process (leader or standby) with its HTTP
//! endpoints for rules and status.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use grove_cluster::coordinator::{Coordinator, CoordinatorSettings};
use grove_cluster::nodes::Role;

use super::http;
use crate::CliResult;
use crate::config::{self, CommonFlags, CoordinatorConfig};

#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Time between duty runs (ISO-8601 period, e.g. PT5S).
    #[arg(long, env = "GROVE_PERIOD")]
    pub period: Option<String>,
    /// How long a vanished historical keeps its segments (e.g. PT15M).
    #[arg(long, env = "GROVE_REPLICANT_LIFETIME")]
    pub replicant_lifetime: Option<String>,
    /// Most segments the balancer starts moving per run.
    #[arg(long, env = "GROVE_MAX_SEGMENTS_TO_MOVE")]
    pub max_segments_to_move: Option<usize>,
}

/// Settings from flags over the file over defaults.
pub fn settings(
    period: Option<&str>,
    lifetime: Option<&str>,
    moves: Option<usize>,
    ttl: Option<&str>,
) -> CliResult<CoordinatorSettings> {
    let defaults = CoordinatorSettings::default();
    let duration = |v: Option<&str>, what: &str, default: Duration| -> CliResult<Duration> {
        v.map_or(Ok(default), |v| config::duration(v, what))
    };
    Ok(CoordinatorSettings {
        period: duration(period, "period", defaults.period)?,
        replicant_lifetime: duration(lifetime, "replicant_lifetime", defaults.replicant_lifetime)?,
        max_segments_to_move: moves.unwrap_or(defaults.max_segments_to_move),
        lease_ttl: duration(ttl, "lease_ttl", defaults.lease_ttl)?,
    })
}

pub async fn run(args: CoordinatorArgs) -> CliResult<()> {
    let file: CoordinatorConfig = config::load(args.common.config.as_deref())?;
    let secret = super::cluster_secret(args.common.cluster_secret, file.cluster_secret.clone())?;
    let settings = settings(
        args.period.as_deref().or(file.period.as_deref()),
        args.replicant_lifetime
            .as_deref()
            .or(file.replicant_lifetime.as_deref()),
        args.max_segments_to_move.or(file.max_segments_to_move),
        args.common
            .lease_ttl
            .as_deref()
            .or(file.lease_ttl.as_deref()),
    )?;
    let etcd = args.common.etcd.or(file.etcd);
    let store = super::connect_etcd(etcd.as_deref(), "coordinator").await?;
    let (listener, node) = super::http_node(
        Role::Coordinator,
        args.common.http_addr.or(file.http_addr),
        "127.0.0.1:8081",
        args.common.node_id.or(file.node_id),
    )
    .await?;
    let shutdown = super::shutdown_signal();
    let coordinator = Coordinator::new(store.clone(), node, settings);
    let status = coordinator.status();
    let router = http::coordinator_routes(store, status.clone()).merge(http::status_routes({
        let status = status.clone();
        move || {
            let s = status.read().map(|s| s.clone()).unwrap_or_default();
            serde_json::json!({ "role": "coordinator", "node_id": s.node_id, "is_leader": s.is_leader, "leader": s.leader })
        }
    }));
    let router = http::require(router, http::Access::internal(&secret));
    let running = tokio::spawn(coordinator.run(shutdown.clone()));
    super::serve_http(listener, router, None, shutdown).await?;
    let _ = running.await;
    Ok(())
}

/// The status of an in-process coordinator, for `grove start`'s `/status`.
pub fn status_json(
    status: &Arc<std::sync::RwLock<grove_cluster::coordinator::CoordinatorStatus>>,
) -> serde_json::Value {
    let s = status.read().map(|s| s.clone()).unwrap_or_default();
    serde_json::to_value(s).unwrap_or_default()
}
