//! `grove overlord`: one overlord process (leader or standby) serving Druid's task API.

use std::sync::Arc;

use clap::Args;
use grove_cluster::indexer::overlord::{Overlord, OverlordSettings};
use grove_cluster::nodes::Role;

use super::{http, indexer_api};
use crate::CliResult;
use crate::config::{self, CommonFlags, OverlordConfig};

/// Druid's overlord port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8090";

#[derive(Debug, Clone, Args)]
pub struct OverlordArgs {
    #[command(flatten)]
    pub common: CommonFlags,
}

pub async fn run(args: OverlordArgs) -> CliResult<()> {
    let file: OverlordConfig = config::load(args.common.config.as_deref())?;
    let secret = super::cluster_secret(args.common.cluster_secret, file.cluster_secret.clone())?;
    let etcd = args.common.etcd.or(file.etcd);
    let store = super::connect_etcd(etcd.as_deref(), "overlord").await?;
    let (listener, node) = super::http_node(
        Role::Overlord,
        args.common.http_addr.or(file.http_addr),
        DEFAULT_HTTP,
        args.common.node_id.or(file.node_id),
    )
    .await?;
    let mut settings = OverlordSettings::default();
    if let Some(ttl) = args.common.lease_ttl.or(file.lease_ttl) {
        settings.lease_ttl = config::duration(&ttl, "lease_ttl")?;
    }
    let shutdown = super::shutdown_signal();
    let overlord = Arc::new(Overlord::new(store, node, settings));
    let router =
        indexer_api::routes(overlord.clone(), Some(secret.clone())).merge(http::status_routes({
            let overlord = overlord.clone();
            move || status_json(&overlord)
        }));
    let router = http::require(router, http::Access::internal(&secret));
    let running = tokio::spawn(overlord.run(shutdown.clone()));
    super::serve_http(listener, router, None, shutdown).await?;
    let _ = running.await;
    Ok(())
}

/// An overlord's `/status` (also part of `grove start`'s).
pub fn status_json(overlord: &Overlord) -> serde_json::Value {
    let mut status = serde_json::to_value(overlord.status()).unwrap_or_default();
    status["role"] = "overlord".into();
    status
}
