//! Druid's lookups: named maps from keys to values, configured per tier through the
//! coordinator's lookup API and read by SQL (`LOOKUP(expr, 'name')` and the `lookup`
//! schema). Each lookup is one key, `/grove/lookups/{tier}/{name}`, holding its spec
//! as Druid writes it:
//!
//! ```json
//! {"version": "v1", "lookupExtractorFactory": {"type": "map", "map": {"US": "United States"}}}
//! ```
//!
//! Only `map` lookups exist in Grove; a spec of another type is refused naming it. A
//! lookup is replaced only by a spec of a greater `version` (compared as text, as
//! Druid does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::MetaStore;

const PREFIX: &str = "/grove/lookups/";

/// The tier brokers read lookups from (Druid's default).
pub const DEFAULT_TIER: &str = "__default";

/// A lookup's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupSpec {
    pub version: String,
    pub lookup_extractor_factory: Factory,
}

/// How a lookup's map is made: in Grove, given as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Factory {
    Map {
        map: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        injective: bool,
    },
}

impl LookupSpec {
    /// A spec from Druid's JSON; a factory other than `map` is an error naming it.
    pub fn parse(value: &serde_json::Value) -> Result<LookupSpec> {
        let kind = value
            .pointer("/lookupExtractorFactory/type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if kind != "map" {
            return Err(Error::Invalid(format!(
                "lookupExtractorFactory type {kind:?} is not supported: only \"map\" lookups exist in Grove"
            )));
        }
        serde_json::from_value(value.clone())
            .map_err(|e| Error::Invalid(format!("lookup spec: {e}")))
    }

    pub fn map(&self) -> &BTreeMap<String, String> {
        match &self.lookup_extractor_factory {
            Factory::Map { map, .. } => map,
        }
    }
}

fn key(tier: &str, name: &str) -> String {
    format!("{PREFIX}{tier}/{name}")
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::Invalid(format!("{name:?} is not a {what} name")));
    }
    Ok(())
}

/// Every lookup: tier -> name -> spec.
pub async fn all(store: &dyn MetaStore) -> Result<BTreeMap<String, BTreeMap<String, LookupSpec>>> {
    let mut out: BTreeMap<String, BTreeMap<String, LookupSpec>> = BTreeMap::new();
    for kv in store.range(PREFIX).await? {
        let Some((tier, name)) = kv.key.strip_prefix(PREFIX).and_then(|k| k.split_once('/')) else {
            continue;
        };
        let spec: LookupSpec = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Store(format!("{} is unreadable: {e}", kv.key)))?;
        out.entry(tier.to_string())
            .or_default()
            .insert(name.to_string(), spec);
    }
    Ok(out)
}

/// One lookup's spec, if it is configured.
pub async fn get(store: &dyn MetaStore, tier: &str, name: &str) -> Result<Option<LookupSpec>> {
    check_name("tier", tier)?;
    check_name("lookup", name)?;
    match store.get(&key(tier, name)).await? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| Error::Store(format!("lookup {tier}/{name} is unreadable: {e}"))),
        None => Ok(None),
    }
}

/// Configures a lookup; refused when one of that name has the same or a greater
/// version.
pub async fn set(store: &dyn MetaStore, tier: &str, name: &str, spec: &LookupSpec) -> Result<()> {
    if let Some(current) = get(store, tier, name).await?
        && current.version >= spec.version
    {
        return Err(Error::Invalid(format!(
            "lookup {tier}/{name} has version {:?}: a new spec needs a greater version than that, not {:?}",
            current.version, spec.version
        )));
    }
    let value = serde_json::to_vec(spec).map_err(|e| Error::Store(e.to_string()))?;
    store.put(&key(tier, name), value).await?;
    Ok(())
}

/// Removes a lookup; false when there was none.
pub async fn delete(store: &dyn MetaStore, tier: &str, name: &str) -> Result<bool> {
    check_name("tier", tier)?;
    check_name("lookup", name)?;
    store.delete(&key(tier, name)).await
}

/// The maps of the lookups brokers read: the default tier's.
pub async fn maps(store: &dyn MetaStore) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    Ok(all(store)
        .await?
        .remove(DEFAULT_TIER)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, spec)| (name, spec.map().clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metastore::EmbeddedStore;

    #[tokio::test]
    async fn lookups_are_replaced_only_by_greater_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("meta")).unwrap();
        let spec = |version: &str, value: &str| {
            LookupSpec::parse(&json!({
                "version": version,
                "lookupExtractorFactory": { "type": "map", "map": { "US": value } },
            }))
            .unwrap()
        };
        set(
            &store,
            DEFAULT_TIER,
            "countries",
            &spec("v1", "United States"),
        )
        .await
        .unwrap();
        assert!(
            set(&store, DEFAULT_TIER, "countries", &spec("v1", "USA"))
                .await
                .is_err()
        );
        set(&store, DEFAULT_TIER, "countries", &spec("v2", "USA"))
            .await
            .unwrap();
        let maps = maps(&store).await.unwrap();
        assert_eq!(maps["countries"]["US"], "USA");
        assert!(delete(&store, DEFAULT_TIER, "countries").await.unwrap());
        assert!(maps_empty(&store).await);
        let cached =
            json!({ "version": "v1", "lookupExtractorFactory": { "type": "cachedNamespace" } });
        assert!(
            LookupSpec::parse(&cached)
                .unwrap_err()
                .to_string()
                .contains("cachedNamespace")
        );
        assert!(set(&store, "a/b", "x", &spec("v1", "y")).await.is_err());
    }

    async fn maps_empty(store: &dyn MetaStore) -> bool {
        maps(store).await.unwrap().is_empty()
    }
}
