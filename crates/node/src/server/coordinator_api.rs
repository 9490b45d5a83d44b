//! The coordinator's metadata endpoints, in Druid's paths and shapes, as its console,
//! Superset and scripts read them:
//!
//! - `GET /druid/coordinator/v1/datasources`: the served datasources' names; `?simple`
//!   with their size, segment count and time range per tier and in all; `?full` with
//!   their segments; `.../datasources/{ds}` one datasource's summary (204 if unknown);
//! - `GET /druid/coordinator/v1/servers`: the historicals' `host:port`; `?simple` with
//!   tier, type, priority, current and maximum size;
//! - `GET /druid/coordinator/v1/loadstatus`: per datasource, the percentage of its used
//!   segments served; `?simple`, how many are not;
//! - `GET /druid/coordinator/v1/metadata/datasources`: the datasources with used
//!   segments (`?includeUnused`: any segments; `?full`: with them);
//! - `GET /druid/coordinator/v1/isLeader`: `{"leader": true}` (200) or false (404).
//!
//! Every answer is read from the metadata store when asked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grove_cluster::coordinator::CoordinatorStatus;
use grove_cluster::metastore::MetaStore;
use grove_cluster::nodes::{self, NodeInfo, Role};
use grove_cluster::segments::{self, SegmentDescriptor};
use grove_cluster::{assignments, rules};
use grove_segment::format::ColumnRole;
use grove_segment::id::format_millis;
use serde_json::{Value, json};

use super::http::error;

#[derive(Clone)]
struct Api {
    store: Arc<dyn MetaStore>,
    status: Arc<RwLock<CoordinatorStatus>>,
}

pub fn routes(store: Arc<dyn MetaStore>, status: Arc<RwLock<CoordinatorStatus>>) -> Router {
    Router::new()
        .route("/druid/coordinator/v1/datasources", get(datasources))
        .route("/druid/coordinator/v1/datasources/{ds}", get(datasource))
        .route("/druid/coordinator/v1/servers", get(servers))
        .route("/druid/coordinator/v1/loadstatus", get(load_status))
        .route(
            "/druid/coordinator/v1/metadata/datasources",
            get(metadata_datasources),
        )
        .route("/druid/coordinator/v1/isLeader", get(is_leader))
        .with_state(Api { store, status })
}

/// What the store says: used segments, live nodes and who serves what.
struct Inventory {
    used: Vec<SegmentDescriptor>,
    nodes: HashMap<String, NodeInfo>,
    /// Segment id -> the nodes serving it.
    replicas: BTreeMap<String, BTreeSet<String>>,
}

impl Inventory {
    async fn read(store: &dyn MetaStore) -> Result<Inventory, Response> {
        let unavailable = |e: grove_cluster::Error| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Metadata store unavailable",
                e,
            )
        };
        let mut used = segments::load(store, None).await.map_err(unavailable)?;
        used.retain(|d| d.used);
        let nodes = nodes::live(store)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let served = assignments::served(store).await.map_err(unavailable)?;
        Ok(Inventory {
            used,
            nodes,
            replicas: assignments::replicas(&served),
        })
    }

    /// The used segments some node serves, by datasource.
    fn served(&self) -> BTreeMap<&str, Vec<&SegmentDescriptor>> {
        let mut out: BTreeMap<&str, Vec<&SegmentDescriptor>> = BTreeMap::new();
        for d in &self.used {
            if self.replicas.contains_key(&d.id.to_string()) {
                out.entry(d.id.datasource.as_str()).or_default().push(d);
            }
        }
        out
    }

    /// Druid's summary of a datasource's served segments: per tier and in all.
    fn properties(&self, segments: &[&SegmentDescriptor]) -> Value {
        let mut tiers: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut replicated = 0;
        for d in segments {
            let nodes = self.replicas.get(&d.id.to_string());
            let mut in_tier: BTreeMap<String, u64> = BTreeMap::new();
            for node in nodes.into_iter().flatten() {
                let tier = self
                    .nodes
                    .get(node)
                    .and_then(|n| n.tier.clone())
                    .unwrap_or_else(|| "_default_tier".into());
                *in_tier.entry(tier).or_default() += 1;
            }
            for (tier, copies) in in_tier {
                let entry = tiers.entry(tier).or_default();
                entry.0 += d.size;
                entry.1 += 1;
                entry.2 += d.size * copies;
                replicated += d.size * copies;
            }
        }
        let tiers: serde_json::Map<String, Value> = tiers
            .into_iter()
            .map(|(tier, (size, count, replicated))| {
                let summary =
                    json!({"size": size, "segmentCount": count, "replicatedSize": replicated});
                (tier, summary)
            })
            .collect();
        let min = segments.iter().map(|d| d.id.interval.start).min();
        let max = segments.iter().map(|d| d.id.interval.end).max();
        json!({
            "tiers": tiers,
            "segments": {
                "count": segments.len(),
                "size": segments.iter().map(|d| d.size).sum::<u64>(),
                "replicatedSize": replicated,
                "minTime": min.map(format_millis),
                "maxTime": max.map(format_millis),
            },
        })
    }
}

/// A segment as Druid's `DataSegment` JSON.
fn data_segment(d: &SegmentDescriptor) -> Value {
    let names = |role: ColumnRole| {
        d.columns
            .iter()
            .filter(|c| c.role == Some(role))
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    json!({
        "dataSource": d.id.datasource,
        "interval": d.id.interval.to_string(),
        "version": d.id.version,
        "loadSpec": {"type": "grove", "path": d.path},
        "dimensions": names(ColumnRole::Dimension),
        "metrics": names(ColumnRole::Metric),
        "shardSpec": {
            "type": "numbered",
            "partitionNum": d.id.partition,
            "partitions": d.core_partitions,
        },
        "binaryVersion": 1,
        "size": d.size,
        "identifier": d.id.to_string(),
    })
}

/// Which form of a list an endpoint is asked for.
fn form(query: &HashMap<String, String>) -> (bool, bool) {
    (query.contains_key("simple"), query.contains_key("full"))
}

async fn datasources(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let inventory = match Inventory::read(api.store.as_ref()).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let served = inventory.served();
    let answer: Vec<Value> = match form(&query) {
        (_, true) => served
            .iter()
            .map(|(name, segments)| {
                json!({
                    "name": name,
                    "properties": inventory.properties(segments),
                    "segments": segments.iter().map(|d| data_segment(d)).collect::<Vec<_>>(),
                })
            })
            .collect(),
        (true, false) => served
            .iter()
            .map(|(name, segments)| json!({"name": name, "properties": inventory.properties(segments)}))
            .collect(),
        (false, false) => served.keys().map(|name| json!(name)).collect(),
    };
    Json(answer).into_response()
}

async fn datasource(State(api): State<Api>, Path(ds): Path<String>) -> Response {
    let inventory = match Inventory::read(api.store.as_ref()).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    match inventory.served().get(ds.as_str()) {
        Some(segments) => Json(inventory.properties(segments)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn servers(State(api): State<Api>, Query(query): Query<HashMap<String, String>>) -> Response {
    let inventory = match Inventory::read(api.store.as_ref()).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let mut historicals: Vec<&NodeInfo> = inventory
        .nodes
        .values()
        .filter(|n| n.role == Role::Historical)
        .collect();
    let names = nodes::server_names(inventory.nodes.values());
    historicals.sort_by(|a, b| names[&a.id].cmp(&names[&b.id]));
    let sizes: HashMap<&str, u64> = inventory
        .used
        .iter()
        .flat_map(|d| {
            let nodes = inventory.replicas.get(&d.id.to_string());
            nodes
                .into_iter()
                .flatten()
                .map(move |n| (n.as_str(), d.size))
        })
        .fold(HashMap::new(), |mut sizes, (node, size)| {
            *sizes.entry(node).or_default() += size;
            sizes
        });
    let answer: Vec<Value> = if form(&query).0 {
        historicals
            .iter()
            .map(|n| {
                json!({
                    "host": names[&n.id],
                    "tier": n.tier.clone().unwrap_or_else(|| "_default_tier".into()),
                    "type": n.role.druid_server_type(),
                    "priority": n.priority,
                    "currSize": sizes.get(n.id.as_str()).copied().unwrap_or(0),
                    "maxSize": n.capacity.unwrap_or(0),
                })
            })
            .collect()
    } else {
        historicals.iter().map(|n| json!(names[&n.id])).collect()
    };
    Json(answer).into_response()
}

async fn load_status(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let inventory = match Inventory::read(api.store.as_ref()).await {
        Ok(i) => i,
        Err(response) => return response,
    };
    let rules = match rules::all(api.store.as_ref()).await {
        Ok(rules) => rules,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Metadata store unavailable",
                e,
            );
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for d in &inventory.used {
        if !should_load(&rules, d, now) {
            continue;
        }
        let entry = counts.entry(d.id.datasource.as_str()).or_default();
        entry.0 += 1;
        if inventory.replicas.contains_key(&d.id.to_string()) {
            entry.1 += 1;
        }
    }
    let simple = form(&query).0;
    let answer: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(ds, (used, served))| {
            let value = if simple {
                json!(used - served)
            } else {
                json!(100.0 * served as f64 / used.max(1) as f64)
            };
            (ds.to_string(), value)
        })
        .collect();
    Json(answer).into_response()
}

/// Whether the rules in force (the datasource's, then the default) load `d`.
fn should_load(all: &BTreeMap<String, Vec<rules::Rule>>, d: &SegmentDescriptor, now: i64) -> bool {
    rules::effective(all, &d.id.datasource)
        .into_iter()
        .find(|rule| rule.applies(&d.id.interval, now))
        .is_some_and(|rule| rule.decision() != rules::Decision::Drop)
}

async fn metadata_datasources(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut all = match segments::load(api.store.as_ref(), None).await {
        Ok(all) => all,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Metadata store unavailable",
                e,
            );
        }
    };
    if !query.contains_key("includeUnused") {
        all.retain(|d| d.used);
    }
    let mut by_name: BTreeMap<&str, Vec<&SegmentDescriptor>> = BTreeMap::new();
    for d in &all {
        by_name.entry(d.id.datasource.as_str()).or_default().push(d);
    }
    let answer: Vec<Value> = if form(&query).1 {
        by_name
            .iter()
            .map(|(name, segments)| {
                let created = segments.iter().map(|d| d.created.as_str()).min();
                json!({
                    "name": name,
                    "properties": {"created": created},
                    "segments": segments.iter().map(|d| data_segment(d)).collect::<Vec<_>>(),
                })
            })
            .collect()
    } else {
        by_name.keys().map(|name| json!(name)).collect()
    };
    Json(answer).into_response()
}

async fn is_leader(State(api): State<Api>) -> Response {
    let leads = api.status.read().map(|s| s.is_leader).unwrap_or(false);
    let status = if leads {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Json(json!({"leader": leads}))).into_response()
}
