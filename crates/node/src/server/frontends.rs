//! The SQL front ends of a broker and of `grove start`: Druid's SQL API (served with
//! the role's other HTTP endpoints) and the Postgres wire protocol, with one default
//! query timeout and one list of users for all of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grove_sql::Engine;
use grove_sql::auth::Users;
use grove_sql::postgres::{self, PgOptions};
use grove_sql::tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::CliResult;
use crate::config::{FrontEndFlags, UserConfig};

/// The default Postgres address, 5433 rather than Postgres's own 5432 so that both
/// can run on one machine.
const PG_ADDR: &str = "127.0.0.1:5433";

/// The front ends' settings and bound listeners, before they serve.
pub struct FrontEnds {
    pub query_timeout: Option<Duration>,
    pub users: Option<Arc<Users>>,
    tls: Option<TlsAcceptor>,
    pg: (TcpListener, SocketAddr),
}

/// The front-end keys of a role's config file.
pub struct FrontEndFile<'a> {
    pub pg_addr: Option<String>,
    pub query_timeout: Option<String>,
    pub users: &'a [UserConfig],
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl FrontEnds {
    /// Reads the settings (a flag wins over the file) and binds the listeners, so that
    /// a taken port fails the start-up.
    pub async fn bind(flags: FrontEndFlags, file: FrontEndFile<'_>) -> CliResult<FrontEnds> {
        let FrontEndFile {
            pg_addr,
            query_timeout,
            users,
            tls_cert,
            tls_key,
        } = file;
        let query_timeout = super::query_timeout(flags.query_timeout, query_timeout)?;
        let users = if users.is_empty() {
            None
        } else {
            let entries = users.iter().map(|u| (u.name.as_str(), u.password.as_str()));
            Some(Arc::new(
                Users::new(entries).map_err(|e| format!("users: {e}"))?,
            ))
        };
        let tls = match (flags.tls_cert.or(tls_cert), flags.tls_key.or(tls_key)) {
            (Some(cert), Some(key)) => Some(grove_sql::tls::acceptor(&cert, &key)?),
            (None, None) => None,
            _ => return Err("TLS needs both tls_cert and tls_key".into()),
        };
        let pg_addr = flags.pg_addr.or(pg_addr);
        let pg = super::bind(pg_addr.as_deref().unwrap_or(PG_ADDR), "Postgres").await?;
        Ok(FrontEnds {
            query_timeout,
            users,
            tls,
            pg,
        })
    }

    /// Serves the Postgres protocol until `shutdown`, and tells where.
    pub fn serve(
        self,
        engine: Arc<Engine>,
        role: &str,
        node_id: &str,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<CliResult<()>> {
        let (listener, addr) = self.pg;
        super::announce(role, node_id, "Postgres", addr);
        let options = PgOptions {
            query_timeout: self.query_timeout,
            users: self.users,
            tls: self.tls,
        };
        let stopped = async move { grove_cluster::session::stopped(&mut shutdown).await };
        tokio::spawn(async move { Ok(postgres::serve(listener, engine, options, stopped).await?) })
    }
}
