//! A [`Session`]: one lease, renewed in the background, under which a process keeps
//! its ephemeral keys (its registration, what it serves, its leadership). When the
//! lease cannot be renewed in time the session is lost: its keys are gone (or about
//! to be), and whoever relies on them must stop acting on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::metastore::{LeaseId, MetaStore};

pub struct Session {
    store: Arc<dyn MetaStore>,
    lease: LeaseId,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session(lease {})", self.lease)
    }
}

impl Session {
    /// Grants a lease of `ttl` and renews it every third of that.
    pub async fn start(store: Arc<dyn MetaStore>, ttl: Duration) -> Result<Session> {
        let lease = store.grant_lease(ttl).await?;
        let (lost_tx, lost) = watch::channel(false);
        let keeper_store = store.clone();
        let keeper = tokio::spawn(async move {
            // When the last renewal that succeeded was sent: the lease runs at least
            // until `ttl` after that.
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                let sent = Instant::now();
                let left = ttl.saturating_sub(renewed.elapsed());
                match tokio::time::timeout(left, keeper_store.keep_alive(lease)).await {
                    Ok(Ok(true)) => renewed = sent,
                    Ok(Ok(false)) => {
                        tracing::warn!("lease {lease} expired");
                        break;
                    }
                    Ok(Err(e)) if renewed.elapsed() < ttl => {
                        tracing::debug!("renewing lease {lease}: {e}")
                    }
                    // Counted as lost once the lease may have run out, even if the
                    // store still holds it.
                    Ok(Err(_)) | Err(_) => {
                        tracing::warn!("lease {lease} could not be renewed in time");
                        break;
                    }
                }
            }
            let _ = lost_tx.send(true);
        });
        Ok(Session {
            store,
            lease,
            lost,
            keeper,
        })
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Waits until the session is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper is gone, which only happens once it is lost.
        let _ = lost.wait_for(|l| *l).await;
    }

    /// Ends the session now: its keys are deleted at once instead of at expiry.
    pub async fn close(self) {
        self.keeper.abort();
        if let Err(e) = self.store.revoke_lease(self.lease).await {
            tracing::debug!("revoking lease {}: {e}", self.lease);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Waits until `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the caller.
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}

/// What a process does under its session: see [`keep_session`].
#[async_trait::async_trait]
pub trait SessionWork: Send {
    /// Runs first in each new session: registering, announcing again.
    async fn join(&mut self, session: &Session) -> Result<()>;
    /// The work itself; returning ends this session's turn (a new one follows).
    async fn work(&mut self, session: &Session);
    /// After a session's turn, however it ended (the work returned or was dropped
    /// because the session was lost): stop claiming what the session held.
    fn ended(&mut self) {}
}

/// Runs `worker` under a session, and again under a new one whenever the session is
/// lost (the store went away and came back, or the process was frozen past its
/// lease), until `shutdown`. A failed join is retried after a second. `name` is for
/// logs.
pub async fn keep_session(
    store: Arc<dyn MetaStore>,
    ttl: Duration,
    name: &str,
    shutdown: &mut watch::Receiver<bool>,
    worker: &mut dyn SessionWork,
) {
    loop {
        let stopping = *shutdown.borrow();
        if stopping {
            return;
        }
        let joined = async {
            let session = Session::start(store.clone(), ttl).await?;
            worker.join(&session).await?;
            Ok::<_, crate::Error>(session)
        };
        let session = tokio::select! {
            s = joined => s,
            _ = stopped(shutdown) => return,
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{name}: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stopped(shutdown) => return,
                }
            }
        };
        let stop = tokio::select! {
            _ = worker.work(&session) => false,
            _ = session.lost() => {
                tracing::warn!("{name}: session lost");
                false
            }
            _ = stopped(shutdown) => true,
        };
        worker.ended();
        // Ended on purpose or not, the lease goes now: its keys must not linger and
        // block the next session's registration.
        session.close().await;
        if stop {
            return;
        }
    }
}
