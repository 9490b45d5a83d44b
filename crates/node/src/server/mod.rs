//! The server roles: `grove coordinator`, `grove historical`, `grove broker`, `grove
//! overlord`, `grove worker`, and `grove start` (all of them in one process on the
//! embedded metadata store). Each
//! role's process wiring lives in its module; [`http`] has the HTTP endpoints.

pub mod broker;
pub mod coordinator;
pub mod coordinator_api;
pub mod frontends;
pub mod historical;
pub mod http;
pub mod indexer_api;
pub mod lookups_api;
pub mod overlord;
pub mod start;
pub mod supervisor_api;
pub mod tls_listener;
pub mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::{EtcdStore, MetaStore};
use grove_cluster::nodes::{self, NodeInfo, Role};
use grove_sql::auth::ClusterSecret;
use grove_sql::distributed::{self, FragmentService};
use grove_sql::tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::CliResult;
use crate::config::{self, DeepStorageConfig};

/// The longest one fragment may run on a historical before it counts as failed.
pub const FRAGMENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// The broker's per-segment result cache.
pub const RESULT_CACHE_BYTES: usize = 256 << 20;

/// Default lease TTL for every role.
pub const LEASE_TTL: &str = "PT10S";

/// Turns true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        let _ = tx.send(true);
    });
    rx
}

pub async fn connect_etcd(etcd: Option<&str>, role: &str) -> CliResult<Arc<dyn MetaStore>> {
    let etcd = etcd.ok_or_else(|| {
        format!("grove {role} needs etcd: pass --etcd URL (or etcd = \"...\" in its config)")
    })?;
    Ok(Arc::new(EtcdStore::connect(&[etcd.to_string()]).await?))
}

/// Deep storage as configured, or `{data_dir}/deep`.
pub fn deep_storage(
    flag: Option<&str>,
    file: Option<&DeepStorageConfig>,
    data_dir: &Path,
) -> CliResult<DeepStorage> {
    let options = file.map(|f| f.options.clone()).unwrap_or_default();
    match flag
        .map(String::from)
        .or_else(|| file.and_then(|f| f.url.clone()))
    {
        Some(url) => Ok(DeepStorage::from_url(&url, &options)?),
        None => Ok(DeepStorage::local(data_dir.join("deep"))?),
    }
}

/// Binds `addr` (port 0: any free port).
pub async fn bind(addr: &str, what: &str) -> CliResult<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `router` on `listener` until `shutdown`; with `tls`, to clients that
/// start a TLS handshake over TLS, and to the others in plain HTTP.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> CliResult<()> {
    let stopped = async move {
        let _ = grove_cluster::session::stopped(&mut shutdown).await;
    };
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await?
        }
        Some(acceptor) => {
            axum::serve(tls_listener::TlsOrPlain::new(listener, acceptor)?, router)
                .with_graceful_shutdown(stopped)
                .await?
        }
    }
    Ok(())
}

/// Serves `router` (as [`serve_http`]) while the SQL front ends serve, until
/// `shutdown`; a front end that fails ends it with that failure.
pub async fn serve_with_front_ends(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
    serving: frontends::Serving,
) -> CliResult<()> {
    let mut front_ends = serving.done;
    tokio::select! {
        served = serve_http(listener, router, tls, shutdown) => {
            served?;
            front_ends.await?
        }
        failed = &mut front_ends => failed?,
    }
}

/// Binds a role's HTTP address (`address`, else `default`) and describes the node
/// listening there: `node_id`, else one from the host name and port.
pub async fn http_node(
    role: Role,
    address: Option<String>,
    default: &str,
    node_id: Option<String>,
) -> CliResult<(TcpListener, NodeInfo)> {
    let what = format!("{role} HTTP");
    let (listener, addr) = bind(address.as_deref().unwrap_or(default), &what).await?;
    let id = node_id.unwrap_or_else(|| nodes::default_node_id(role, addr.port()));
    let node = NodeInfo::new(id, role, addr.to_string());
    announce(role.as_str(), &node.id, "HTTP", addr);
    Ok((listener, node))
}

/// The cluster secret from the flag (or `GROVE_CLUSTER_SECRET`) or the config file:
/// every cluster role needs one, the same on every node.
pub fn cluster_secret(flag: Option<String>, file: Option<String>) -> CliResult<ClusterSecret> {
    let text = flag.or(file).ok_or(
        "no cluster secret: set GROVE_CLUSTER_SECRET (or --cluster-secret, or cluster_secret \
         in the config), the same on every node of the cluster",
    )?;
    Ok(ClusterSecret::new(&text).map_err(|e| format!("cluster secret: {e}"))?)
}

/// Serves a historical's plan fragments to callers with `secret` until `shutdown`.
pub fn serve_fragments(
    listener: TcpListener,
    service: FragmentService,
    secret: ClusterSecret,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<CliResult<()>> {
    let stopped = async move { grove_cluster::session::stopped(&mut shutdown).await };
    tokio::spawn(async move { Ok(distributed::serve(listener, service, secret, stopped).await?) })
}

pub fn lease_ttl(configured: Option<&str>) -> CliResult<Duration> {
    config::duration(configured.unwrap_or(LEASE_TTL), "lease_ttl")
}

/// The SQL API's default query timeout: flag, then file; none when neither sets it.
pub fn query_timeout(flag: Option<String>, file: Option<String>) -> CliResult<Option<Duration>> {
    flag.or(file)
        .map(|t| config::duration(&t, "query_timeout"))
        .transpose()
}

/// The data directory: flag, then file, then `./grove-data`.
pub fn data_dir(flag: Option<PathBuf>, file: Option<PathBuf>) -> PathBuf {
    flag.or(file)
        .unwrap_or_else(|| PathBuf::from(crate::data_dir::DEFAULT))
}

/// Tells whoever started the process where it listens (port 0 picks one).
pub fn announce(role: &str, node_id: &str, what: &str, addr: SocketAddr) {
    eprintln!("grove {role} {node_id}: {what} listening on {addr}");
}
