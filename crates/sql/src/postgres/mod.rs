//! The Postgres wire protocol: `psql`, psycopg, JDBC and the other Postgres drivers
//! query Grove as they would query Postgres.
//!
//! pgwire speaks the protocol; arrow-pg turns Arrow values into Postgres values and
//! bound parameters back; datafusion-pg-catalog supplies `pg_catalog` and rewrites the
//! catalogue queries tools send (`'t'::regclass`, `OPERATOR(pg_catalog.~)`) into SQL
//! DataFusion plans. What is Grove's own is the handler ([`query`]): every connection
//! is one Grove [`Session`](crate::Session), so its views and settings are its own and
//! what a session refuses (`COPY`, `INSERT`, external tables) is refused here too, and
//! every statement can be stopped, while it is planned and while its rows stream, by a
//! Postgres cancel request or by its `statement_timeout`. (datafusion-postgres's
//! handler shares one context among all connections and stops nothing once rows
//! stream, so Grove does not use it.)
//!
//! With users configured, a connection authenticates with SCRAM-SHA-256
//! ([`crate::auth`]); without, nothing is asked.

mod query;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};
use pgwire::tokio::{TlsAcceptor, process_socket};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::auth::Users;
use query::{PgSession, Queries};

/// The catalog Grove's tables live in, as `current_database()` reports it.
const DATABASE: &str = crate::engine::CATALOG;

/// How the Postgres front end serves.
#[derive(Clone, Default)]
pub struct PgOptions {
    /// Longest a statement may run unless the connection sets `statement_timeout`.
    pub query_timeout: Option<Duration>,
    /// Who may connect; `None`: anyone, without a password.
    pub users: Option<Arc<Users>>,
    /// Serves TLS to clients that ask for it (`sslmode=require`).
    pub tls: Option<TlsAcceptor>,
}

/// Serves the Postgres protocol on `listener` until `shutdown`; then open connections
/// are closed.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: PgOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = Arc::new(Server {
        engine,
        options,
        cancels: Arc::new(Cancels::default()),
    });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let server = Arc::clone(&server);
                    connections.spawn(async move {
                        let tls = server.options.tls.clone();
                        let connection = match server.connection() {
                            Ok(connection) => connection,
                            Err(e) => {
                                tracing::warn!("postgres connection from {peer}: {e}");
                                return;
                            }
                        };
                        if let Err(e) = process_socket(socket, tls, connection).await {
                            tracing::debug!("postgres connection from {peer}: {e}");
                        }
                    });
                }
                // Out of file descriptors, say: the next accept may succeed.
                Err(e) => {
                    tracing::warn!("postgres: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

struct Server {
    engine: Arc<Engine>,
    options: PgOptions,
    cancels: Arc<Cancels>,
}

impl Server {
    /// A new connection's handlers, over a session of its own.
    fn connection(&self) -> datafusion::error::Result<Connection> {
        let session = self.engine.session();
        datafusion_pg_catalog::setup_pg_catalog(session.context(), DATABASE, EmptyContextProvider)
            .map_err(|e| *e)?;
        let canceller = Arc::new(Canceller::default());
        let keys = Arc::new(KeyIssuer {
            cancels: Arc::clone(&self.cancels),
            canceller: Arc::clone(&canceller),
            issued: Mutex::new(None),
        });
        let startup = match &self.options.users {
            None => Startup::Open(OpenStartup {
                keys: Arc::clone(&keys),
            }),
            Some(users) => Startup::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(server_parameters()))
                    .with_scram(ScramAuth::new(users.scram_source()))
                    .with_pid_secret_key_generator(keys.clone()),
            )),
        };
        let session = PgSession::new(session, self.options.query_timeout, canceller);
        Ok(Connection {
            queries: Arc::new(Queries::new(session)),
            startup: Arc::new(startup),
            cancels: Arc::clone(&self.cancels),
            keys,
        })
    }
}

/// What `SHOW server_version` and the start-up parameters say.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = format!("16.6 (Grove {})", env!("CARGO_PKG_VERSION"));
    parameters.time_zone = "UTC".into();
    parameters
}

/// One connection's handlers. Dropped when the connection closes, which forgets its
/// cancel key.
struct Connection {
    queries: Arc<Queries>,
    startup: Arc<Startup>,
    cancels: Arc<Cancels>,
    keys: Arc<KeyIssuer>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(pid) = self.keys.issued.lock().ok().and_then(|mut p| p.take()) {
            self.cancels.forget(pid);
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancels)
    }
}

/// Start-up: open to all, or SCRAM-SHA-256 against the configured users.
enum Startup {
    Open(OpenStartup),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(open) => open.on_startup(client, message).await,
            Startup::Scram(scram) => scram.on_startup(client, message).await,
        }
    }
}

/// Accepts every client, asking nothing.
struct OpenStartup {
    keys: Arc<KeyIssuer>,
}

impl OpenStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = message {
            protocol_negotiation(client, &startup).await?;
            save_startup_parameters_to_metadata(client, &startup);
            let (pid, key) = self.keys.generate(client);
            client.set_pid_and_secret_key(pid, key);
            finish_authentication(client, &server_parameters()).await?;
            client.set_state(PgWireConnectionState::ReadyForQuery);
        }
        Ok(())
    }
}

/// Process ids, unique in this server; a Postgres cancel request names one.
static NEXT_PID: AtomicI32 = AtomicI32::new(1);

/// Gives a connection its process id and secret key, and files them for cancel
/// requests.
struct KeyIssuer {
    cancels: Arc<Cancels>,
    canceller: Arc<Canceller>,
    issued: Mutex<Option<i32>>,
}

impl PidSecretKeyGenerator for KeyIssuer {
    fn generate(&self, client: &dyn ClientInfo) -> (i32, SecretKey) {
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        let key = match client.protocol_version() {
            ProtocolVersion::PROTOCOL3_0 => SecretKey::I32(rand::random()),
            _ => SecretKey::Bytes(rand::random::<[u8; 32]>().to_vec().into()),
        };
        self.cancels
            .file(pid, key.clone(), Arc::clone(&self.canceller));
        if let Ok(mut issued) = self.issued.lock() {
            *issued = Some(pid);
        }
        (pid, key)
    }
}

/// The running connections' cancel keys.
#[derive(Default)]
struct Cancels {
    connections: Mutex<HashMap<i32, (SecretKey, Arc<Canceller>)>>,
}

impl Cancels {
    fn file(&self, pid: i32, key: SecretKey, canceller: Arc<Canceller>) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(pid, (key, canceller));
        }
    }

    fn forget(&self, pid: i32) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&pid);
        }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let canceller = self.connections.lock().ok().and_then(|connections| {
            connections
                .get(&request.pid)
                .filter(|(key, _)| key.to_bytes() == request.secret_key.to_bytes())
                .map(|(_, canceller)| Arc::clone(canceller))
        });
        match canceller {
            Some(canceller) => canceller.cancel(),
            // As Postgres does, the requester learns nothing either way.
            None => tracing::debug!("postgres: cancel request for no known connection"),
        }
    }
}

/// Stops a connection's running statement.
#[derive(Default)]
pub(crate) struct Canceller {
    current: Mutex<CancellationToken>,
}

impl Canceller {
    /// A token for the statement about to run: cancelled by [`Canceller::cancel`] from
    /// now until the next statement begins.
    fn begin(&self) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut current) = self.current.lock() {
            *current = token.clone();
        }
        token
    }

    fn cancel(&self) {
        if let Ok(current) = self.current.lock() {
            current.cancel();
        }
    }
}
