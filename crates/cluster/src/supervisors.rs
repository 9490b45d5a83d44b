//! Streaming supervisors as stored: one per datasource at
//! `/grove/supervisors/{datasource}`, holding the spec as submitted, whether it is
//! suspended, and whether it was terminated (kept, as Druid keeps it, for its
//! history). Submitting a spec for a datasource replaces its supervisor's spec; every
//! spec a datasource had stays in its history at
//! `/grove/supervisors-history/{datasource}/{version}`.
//!
//! Every write is a compare-and-swap on the record inside the caller's guard (an
//! overlord's election fence), as task records are.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use grove_segment::spec::KafkaSupervisorSpec;

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn, compare_and_swap};

const PREFIX: &str = "/grove/supervisors/";
const HISTORY_PREFIX: &str = "/grove/supervisors-history/";
const STATES_PREFIX: &str = "/grove/supervisor-states/";

/// A supervisor's state as the leading overlord last wrote it, for readers that are not
/// the overlord (`sys.supervisors` on brokers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorState {
    pub state: String,
    pub detailed_state: String,
    pub healthy: bool,
}

/// Writes a supervisor's state (inside the overlord's guard).
pub async fn set_state(
    store: &dyn MetaStore,
    guard: &Txn,
    id: &str,
    state: &SupervisorState,
) -> Result<()> {
    let txn = guard
        .compares_only()
        .put(format!("{STATES_PREFIX}{id}"), encode(state)?);
    store.txn(txn).await?;
    Ok(())
}

/// Every supervisor's last written state, by id.
pub async fn states(
    store: &dyn MetaStore,
) -> Result<std::collections::BTreeMap<String, SupervisorState>> {
    store
        .range(STATES_PREFIX)
        .await?
        .iter()
        .map(|kv| {
            let id = kv.key[STATES_PREFIX.len()..].to_string();
            Ok((id, decode(&kv.key, &kv.value)?))
        })
        .collect()
}

/// A supervisor as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorRecord {
    /// The datasource, which is also the supervisor's id.
    pub id: String,
    /// The spec as submitted.
    pub spec: Value,
    pub suspended: bool,
    pub terminated: bool,
    /// When this spec was submitted (ISO-8601): its version in the history.
    pub version: String,
}

impl SupervisorRecord {
    /// The typed spec; stored specs were checked when submitted.
    pub fn parsed(&self) -> Result<KafkaSupervisorSpec> {
        Ok(KafkaSupervisorSpec::from_json(&self.spec.to_string())?)
    }
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn history_key(id: &str, version: &str) -> String {
    format!("{HISTORY_PREFIX}{id}/{version}")
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| Error::Store(format!("{key} is unreadable: {e}")))
}

/// Checks and stores a submitted spec: a new supervisor, or a new spec for the
/// datasource's supervisor (which then runs again if it was terminated). Returns its
/// id, the datasource. `now` is the submission time (ISO-8601).
pub async fn submit(store: &dyn MetaStore, guard: &Txn, spec: Value, now: &str) -> Result<String> {
    let parsed = KafkaSupervisorSpec::from_json(&spec.to_string())?;
    let id = parsed.datasource.clone();
    let record = SupervisorRecord {
        id: id.clone(),
        spec: spec.clone(),
        suspended: parsed.suspended,
        terminated: false,
        version: now.to_string(),
    };
    let ops = Txn::default()
        .put(key(&id), encode(&record)?)
        .put(history_key(&id, now), encode(&spec)?)
        .ops;
    let what = format!("supervisor {id}");
    compare_and_swap(store, guard, &key(&id), &what, |_| Ok((ops.clone(), ()))).await?;
    Ok(id)
}

/// The stored supervisor of `id`, terminated or not.
pub async fn get(store: &dyn MetaStore, id: &str) -> Result<Option<SupervisorRecord>> {
    let key = key(id);
    match store.get(&key).await? {
        Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
        None => Ok(None),
    }
}

/// Every stored supervisor, in id order, terminated ones included.
pub async fn list(store: &dyn MetaStore) -> Result<Vec<SupervisorRecord>> {
    store
        .range(PREFIX)
        .await?
        .iter()
        .map(|kv| decode(&kv.key, &kv.value))
        .collect()
}

/// The specs `id` has had, oldest first: `(version, spec)`.
pub async fn history(store: &dyn MetaStore, id: &str) -> Result<Vec<(String, Value)>> {
    let prefix = format!("{HISTORY_PREFIX}{id}/");
    store
        .range(&prefix)
        .await?
        .iter()
        .map(|kv| {
            let version = kv.key[prefix.len()..].to_string();
            Ok((version, decode(&kv.key, &kv.value)?))
        })
        .collect()
}

/// Suspends or resumes `id`; an error if it does not exist or was terminated.
pub async fn set_suspended(
    store: &dyn MetaStore,
    guard: &Txn,
    id: &str,
    suspended: bool,
) -> Result<SupervisorRecord> {
    change(store, guard, id, |r| {
        if r.terminated {
            return Err(Error::Invalid(format!("supervisor {id} was terminated")));
        }
        r.suspended = suspended;
        Ok(())
    })
    .await
}

/// Terminates `id`: it stops, and stays stored for its history.
pub async fn terminate(store: &dyn MetaStore, guard: &Txn, id: &str) -> Result<SupervisorRecord> {
    change(store, guard, id, |r| {
        r.terminated = true;
        Ok(())
    })
    .await
}

async fn change(
    store: &dyn MetaStore,
    guard: &Txn,
    id: &str,
    mut edit: impl FnMut(&mut SupervisorRecord) -> Result<()>,
) -> Result<SupervisorRecord> {
    let key = key(id);
    compare_and_swap(store, guard, &key, &format!("supervisor {id}"), |current| {
        let Some(kv) = current else {
            return Err(Error::Invalid(format!("no supervisor {id}")));
        };
        let mut record: SupervisorRecord = decode(&key, &kv.value)?;
        edit(&mut record)?;
        let ops = Txn::default().put(key.clone(), encode(&record)?).ops;
        Ok((ops, record))
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metastore::EmbeddedStore;

    fn spec(topic: &str) -> Value {
        json!({
            "type": "kafka",
            "spec": {
                "dataSchema": {
                    "dataSource": "clicks",
                    "timestampSpec": {"column": "ts", "format": "iso"},
                    "dimensionsSpec": {"dimensions": ["page"]},
                    "granularitySpec": {"segmentGranularity": "hour"}
                },
                "ioConfig": {
                    "topic": topic,
                    "inputFormat": {"type": "json"},
                    "consumerProperties": {"bootstrap.servers": "127.0.0.1:9092"}
                }
            }
        })
    }

    #[tokio::test]
    async fn one_supervisor_per_datasource_with_its_history() {
        let store = EmbeddedStore::in_memory();
        let none = Txn::default();
        let id = submit(&store, &none, spec("clicks-v1"), "2024-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert_eq!(id, "clicks");
        let replaced = submit(&store, &none, spec("clicks-v2"), "2024-01-02T00:00:00.000Z");
        assert_eq!(replaced.await.unwrap(), "clicks");
        let records = list(&store).await.unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            record.parsed().unwrap().topic,
            grove_segment::spec::KafkaTopic::Name("clicks-v2".into())
        );
        assert_eq!(record.version, "2024-01-02T00:00:00.000Z");
        let versions: Vec<String> = history(&store, "clicks")
            .await
            .unwrap()
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(
            versions,
            ["2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z"]
        );

        // Suspend, resume, terminate; a terminated supervisor cannot be resumed, but a
        // new spec brings it back.
        assert!(
            set_suspended(&store, &none, "clicks", true)
                .await
                .unwrap()
                .suspended
        );
        assert!(
            !set_suspended(&store, &none, "clicks", false)
                .await
                .unwrap()
                .suspended
        );
        assert!(terminate(&store, &none, "clicks").await.unwrap().terminated);
        let refused = set_suspended(&store, &none, "clicks", false)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("terminated"), "{refused}");
        submit(&store, &none, spec("clicks-v3"), "2024-01-03T00:00:00.000Z")
            .await
            .unwrap();
        assert!(!get(&store, "clicks").await.unwrap().unwrap().terminated);
        assert!(get(&store, "views").await.unwrap().is_none());
        assert!(set_suspended(&store, &none, "views", true).await.is_err());
    }

    #[tokio::test]
    async fn a_broken_spec_or_a_lost_guard_stores_nothing() {
        let store = EmbeddedStore::in_memory();
        let mut broken = spec("clicks");
        broken["spec"]["ioConfig"]["taskCount"] = json!(0);
        let refused = submit(&store, &Txn::default(), broken, "2024-01-01T00:00:00.000Z")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("spec.ioConfig.taskCount"),
            "{refused}"
        );
        let stale = Txn::default().when_revision("/grove/election/overlord", 7);
        assert!(
            submit(&store, &stale, spec("clicks"), "2024-01-01T00:00:00.000Z")
                .await
                .is_err()
        );
        assert!(list(&store).await.unwrap().is_empty());
    }
}
