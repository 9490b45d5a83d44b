//! Leader election on the metadata store: at most one leader per role (coordinator,
//! overlord) at a time.
//!
//! A candidate creates the role's election key under its session's lease, only if the
//! key is absent. The key's revision at creation is the leader's **fence**: every
//! write a leader makes is a transaction that also requires the key to be still at
//! that revision ([`Election::guard`]). When the leader's lease runs out (the process
//! died, hung, or lost the store), the key vanishes with it, the writes of the old
//! leader stop applying, and a standby's next campaign takes the key.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::metastore::{MetaStore, Txn};
use crate::session::Session;

/// The default lease TTL of leaders (coordinator, overlord): a standby takes over
/// about this long after a leader dies, plus at most [`CAMPAIGN_EVERY`]. The lease is
/// renewed every third of it.
pub const LEADER_LEASE_TTL: Duration = Duration::from_secs(3);

/// How often a standby campaigns.
pub const CAMPAIGN_EVERY: Duration = Duration::from_millis(250);

/// The outcome of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// This node's fence, if it leads.
    pub fence: Option<u64>,
    /// Who leads now, as the key says (this node included).
    pub leader: Option<String>,
}

fn election_key(role: &str) -> String {
    format!("/grove/election/{role}")
}

pub struct Election {
    store: Arc<dyn MetaStore>,
    key: String,
    node_id: String,
}

impl Election {
    /// The election of `role` (`/grove/election/{role}`), with this node as candidate.
    pub fn new(store: Arc<dyn MetaStore>, role: &str, node_id: &str) -> Election {
        Election {
            store,
            key: election_key(role),
            node_id: node_id.to_string(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes the key if it is free, under `session`'s lease, and says who leads.
    pub async fn campaign(&self, session: &Session) -> Result<Campaign> {
        let value = self.node_id.clone().into_bytes();
        let txn = Txn::default()
            .when_revision(self.key.clone(), 0)
            .put_leased(self.key.clone(), value.clone(), session.lease());
        self.store.txn(txn).await?;
        let current = self.store.get(&self.key).await?;
        let leader = current
            .as_ref()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let fence = current
            .filter(|kv| kv.value == value && kv.lease == Some(session.lease()))
            .map(|kv| kv.mod_revision);
        Ok(Campaign { fence, leader })
    }

    /// Who leads `role` now, as its key says.
    pub async fn leader_of(store: &dyn MetaStore, role: &str) -> Result<Option<String>> {
        let key = election_key(role);
        Ok(store
            .get(&key)
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// A transaction that applies only while the leader of `fence` still leads; a
    /// leader adds its operations to it.
    pub fn guard(&self, fence: u64) -> Txn {
        Txn::default().when_revision(self.key.clone(), fence)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metastore::EmbeddedStore;

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_lost_lease_fences_the_old_one() {
        let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let ttl = Duration::from_millis(500);
        let a = Election::new(store.clone(), "overlord", "a");
        let b = Election::new(store.clone(), "overlord", "b");
        let a_session = Session::start(store.clone(), ttl).await.unwrap();
        let b_session = Session::start(store.clone(), ttl).await.unwrap();

        let first = a.campaign(&a_session).await.unwrap();
        let fence = first.fence.expect("a leads");
        assert_eq!(first.leader.as_deref(), Some("a"));
        let second = b.campaign(&b_session).await.unwrap();
        assert_eq!(
            second,
            Campaign {
                fence: None,
                leader: Some("a".into())
            }
        );
        // The leader's guarded writes apply; campaigning again keeps its fence.
        assert!(
            store
                .txn(a.guard(fence).put("/x", b"1".to_vec()))
                .await
                .unwrap()
        );
        assert_eq!(a.campaign(&a_session).await.unwrap().fence, Some(fence));

        // a's session ends: its key goes, b takes over, a's writes stop applying.
        a_session.close().await;
        let taken = b.campaign(&b_session).await.unwrap();
        assert_eq!(taken.leader.as_deref(), Some("b"));
        assert!(taken.fence.is_some_and(|f| f != fence));
        assert!(
            !store
                .txn(a.guard(fence).put("/x", b"2".to_vec()))
                .await
                .unwrap()
        );
        assert_eq!(store.get("/x").await.unwrap().unwrap().value, b"1");
    }
}
