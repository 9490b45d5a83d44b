//! `grove broker`: SQL over what the cluster serves, from a view kept by watches.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use grove_cluster::nodes::{self, Role};
use grove_cluster::view::ClusterView;
use grove_sql::Engine;

use super::frontends::{FrontEndFile, FrontEnds};
use super::http;
use crate::CliResult;
use crate::config::{self, BrokerConfig, CommonFlags, FrontEndFlags};

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub front: FrontEndFlags,
}

pub async fn run(args: BrokerArgs) -> CliResult<()> {
    let file: BrokerConfig = config::load(args.common.config.as_deref())?;
    let secret = super::cluster_secret(args.common.cluster_secret, file.cluster_secret.clone())?;
    let lease_ttl = super::lease_ttl(
        args.common
            .lease_ttl
            .as_deref()
            .or(file.lease_ttl.as_deref()),
    )?;
    let store = super::connect_etcd(args.common.etcd.or(file.etcd).as_deref(), "broker").await?;
    let (listener, node) = super::http_node(
        Role::Broker,
        args.common.http_addr.or(file.http_addr),
        "127.0.0.1:8888",
        args.common.node_id.or(file.node_id),
    )
    .await?;
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
    let view = ClusterView::start(store.clone());
    view.wait_synced(Duration::from_secs(30)).await?;
    let engine = Arc::new(Engine::broker(
        view.clone(),
        super::FRAGMENT_DEADLINE,
        super::RESULT_CACHE_BYTES,
        secret,
    ));
    let shutdown = super::shutdown_signal();
    let registered = tokio::spawn(nodes::stay_registered(
        store,
        node.clone(),
        lease_ttl,
        shutdown.clone(),
    ));
    let node_id = node.id.clone();
    let settings = front.settings();
    let http_tls = front.http_tls();
    let serving = front.serve(engine.clone(), "broker", &node_id, shutdown.clone());
    let front_ends = serving.status();
    let sql = grove_sql::druid_http::routes(engine, settings.query_timeout);
    let router = http::require(
        sql,
        http::Access {
            users: settings.users,
            secret: None,
        },
    )
    .merge(http::status_routes(move || {
        serde_json::json!({
            "role": "broker",
            "node_id": node.id,
            "metadata_store_connected": view.is_connected(),
            "front_ends": front_ends(),
        })
    }));
    super::serve_with_front_ends(listener, router, http_tls, shutdown, serving).await?;
    let _ = registered.await;
    Ok(())
}
