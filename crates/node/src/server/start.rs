//! `grove start`: a coordinator, a broker and one or more historicals in one process
//! ([`LocalCluster`]), on the embedded metadata store of a data directory and local
//! deep storage, served over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;
use grove_sql::local::{LocalCluster, LocalOptions};

use super::frontends::{FrontEndFile, FrontEndSettings, FrontEnds, Serving};
use super::http;
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
}

/// The HTTP endpoints of `grove start`: a broker's and a coordinator's, and a status
/// covering every role.
fn router(cluster: &LocalCluster, front: &FrontEndSettings, serving: &Serving) -> axum::Router {
    let coordinator = cluster.coordinator.clone();
    let historicals = cluster.historicals.clone();
    let running_fragments = cluster.running_fragments.clone();
    let view = cluster.view.clone();
    let front_ends = serving.status();
    let protected = super::druid_sql::routes(cluster.engine.clone(), front.query_timeout).merge(
        http::coordinator_routes(cluster.store.clone(), cluster.coordinator.clone()),
    );
    http::require_users(protected, front.users.clone()).merge(http::status_routes(move || {
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
    };
    let cluster = LocalCluster::start(store, deep, &data_dir, options).await?;
    super::announce("start", "local", "HTTP", addr);
    eprintln!(
        "grove start: data in {}; query with POST http://{addr}/druid/v2/sql",
        data_dir.display()
    );
    let shutdown = super::shutdown_signal();
    let settings = front.settings();
    let http_tls = front.http_tls();
    let serving = front.serve(cluster.engine.clone(), "start", "local", shutdown.clone());
    let router = router(&cluster, &settings, &serving);
    super::serve_with_front_ends(listener, router, http_tls, shutdown, serving).await?;
    cluster.stop().await;
    Ok(())
}
