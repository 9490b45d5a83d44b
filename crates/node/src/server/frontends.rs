//! The SQL front ends of a broker and of `grove start`: Druid's SQL API (served with
//! the role's other HTTP endpoints), the Postgres wire protocol and Flight SQL, with
//! one default query timeout, one list of users and one TLS certificate for all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grove_sql::Engine;
use grove_sql::auth::Users;
use grove_sql::flight_sql::{self, FlightSql, FlightSqlOptions};
use grove_sql::postgres::{self, PgOptions};
use grove_sql::tls::{Certificate, TlsAcceptor};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::CliResult;
use crate::config::{FrontEndFlags, UserConfig};

/// The default Postgres address, 5433 rather than Postgres's own 5432 so that both
/// can run on one machine.
const PG_ADDR: &str = "127.0.0.1:5433";

/// The default Flight SQL address.
const FLIGHT_ADDR: &str = "127.0.0.1:8815";

/// The front ends' settings and bound listeners, before they serve.
pub struct FrontEnds {
    settings: FrontEndSettings,
    tls: Option<Certificate>,
    pg: (TcpListener, SocketAddr),
    flight: (TcpListener, SocketAddr),
}

/// What every SQL front end, HTTP among them, applies.
#[derive(Clone)]
pub struct FrontEndSettings {
    pub query_timeout: Option<Duration>,
    pub users: Option<Arc<Users>>,
}

/// The front-end keys of a role's config file.
pub struct FrontEndFile<'a> {
    pub pg_addr: Option<String>,
    pub flight_addr: Option<String>,
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
            flight_addr,
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
            (Some(cert), Some(key)) => Some(grove_sql::tls::load(&cert, &key)?),
            (None, None) => None,
            _ => return Err("TLS needs both tls_cert and tls_key".into()),
        };
        let pg_addr = flags.pg_addr.or(pg_addr);
        let pg = super::bind(pg_addr.as_deref().unwrap_or(PG_ADDR), "Postgres").await?;
        let flight_addr = flags.flight_addr.or(flight_addr);
        let flight =
            super::bind(flight_addr.as_deref().unwrap_or(FLIGHT_ADDR), "Flight SQL").await?;
        Ok(FrontEnds {
            settings: FrontEndSettings {
                query_timeout,
                users,
            },
            tls,
            pg,
            flight,
        })
    }

    pub fn settings(&self) -> FrontEndSettings {
        self.settings.clone()
    }

    /// TLS for the HTTP port, when a certificate is configured.
    pub fn http_tls(&self) -> Option<TlsAcceptor> {
        self.tls.as_ref().map(|tls| tls.acceptor.clone())
    }

    /// Serves the Postgres protocol and Flight SQL until `shutdown`, and tells where.
    pub fn serve(
        self,
        engine: Arc<Engine>,
        role: &str,
        node_id: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Serving {
        let (pg_listener, pg_addr) = self.pg;
        let (flight_listener, flight_addr) = self.flight;
        super::announce(role, node_id, "Postgres", pg_addr);
        super::announce(role, node_id, "Flight SQL", flight_addr);
        let FrontEndSettings {
            query_timeout,
            users,
        } = self.settings;
        let pg_options = PgOptions {
            query_timeout,
            users: users.clone(),
            tls: self.tls.as_ref().map(|tls| tls.acceptor.clone()),
        };
        let flight_options = FlightSqlOptions {
            query_timeout,
            users,
            tls: self.tls.map(|tls| tls.identity),
        };
        let stopped = |mut shutdown: watch::Receiver<bool>| async move {
            grove_cluster::session::stopped(&mut shutdown).await
        };
        let postgres = postgres::serve(
            pg_listener,
            Arc::clone(&engine),
            pg_options,
            stopped(shutdown.clone()),
        );
        let flight_sql = Arc::new(FlightSql::new(engine, flight_options));
        let flight = flight_sql::serve(flight_listener, Arc::clone(&flight_sql), stopped(shutdown));
        // The first to fail ends the node's serving, with that failure.
        let done = tokio::spawn(async move {
            tokio::try_join!(
                async { postgres.await.map_err(|e| format!("Postgres: {e}")) },
                async { flight.await.map_err(|e| format!("Flight SQL: {e}")) },
            )?;
            Ok(())
        });
        Serving { done, flight_sql }
    }
}

/// The front ends, serving.
pub struct Serving {
    /// Ends when they stop.
    pub done: JoinHandle<CliResult<()>>,
    flight_sql: Arc<FlightSql>,
}

impl Serving {
    /// What `/status` tells of the front ends.
    pub fn status(&self) -> impl Fn() -> serde_json::Value + Clone + Send + Sync + 'static {
        let flight_sql = Arc::clone(&self.flight_sql);
        move || serde_json::json!({ "flight_sql_running_queries": flight_sql.running_queries() })
    }
}
