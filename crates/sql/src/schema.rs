//! The schemas a session sees, built on demand from [`Metadata`]: `druid` holds one
//! table per datasource, rebuilt only when that datasource changed; `sys` holds
//! `segments` and `servers`, read fresh by every statement. Nothing is registered or
//! deregistered, so concurrent statements never see a table half-replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result};
use grove_cluster::nodes::{Role, server_names};
use grove_cluster::segments::SegmentDescriptor;
use grove_cluster::supervisors::{SupervisorRecord, SupervisorState};
use grove_cluster::task_status::TaskRecord;
use grove_segment::format::ColumnRole;
use grove_segment::id::format_millis;
use grove_segment::timeline::Timeline;

use crate::catalog::datasource;
use crate::metadata::{Metadata, Replica, SegmentInfo};
use crate::table::{DatasourceTable, Reader};

/// A table and the metadata version it was built from.
type Versioned = (u64, Arc<dyn TableProvider>);

/// One table per datasource.
#[derive(Debug)]
pub struct DatasourceSchema {
    metadata: Arc<dyn Metadata>,
    reader: Reader,
    tables: Mutex<HashMap<String, Versioned>>,
}

impl DatasourceSchema {
    pub fn new(metadata: Arc<dyn Metadata>, reader: Reader) -> Self {
        DatasourceSchema {
            metadata,
            reader,
            tables: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl SchemaProvider for DatasourceSchema {
    fn table_names(&self) -> Vec<String> {
        self.metadata.datasource_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let version = self.metadata.datasource_version(name);
        if let Some((v, table)) = self.tables.lock().ok().and_then(|t| t.get(name).cloned())
            && v == version
        {
            return Ok(Some(table));
        }
        let segments = self.metadata.segments(Some(name));
        if segments.is_empty() {
            return Ok(None);
        }
        let available: std::collections::HashSet<String> = segments
            .iter()
            .filter(|s| s.available)
            .map(|s| s.descriptor.id.to_string())
            .collect();
        let replicas: HashMap<String, Vec<Replica>> = segments
            .iter()
            .map(|s| (s.descriptor.id.to_string(), s.replicas.clone()))
            .collect();
        let realtime = segments
            .iter()
            .filter(|s| s.realtime)
            .map(|s| s.descriptor.id.to_string())
            .collect();
        let descriptors = segments.into_iter().map(|s| s.descriptor).collect();
        let mut ds = datasource(name.to_string(), descriptors, |d| {
            available.contains(&d.id.to_string())
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        ds.replicas = replicas;
        ds.realtime = realtime;
        let table: Arc<dyn TableProvider> = Arc::new(DatasourceTable::with_reader(
            Arc::new(ds),
            self.reader.clone(),
        ));
        if let Ok(mut tables) = self.tables.lock() {
            tables.insert(name.to_string(), (version, Arc::clone(&table)));
        }
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.metadata.datasource_names().iter().any(|n| n == name)
    }
}

/// `sys.segments`, `sys.server_segments`, `sys.servers`, `sys.supervisors` and
/// `sys.tasks`.
#[derive(Debug)]
pub struct SysSchema {
    metadata: Arc<dyn Metadata>,
}

impl SysSchema {
    pub fn new(metadata: Arc<dyn Metadata>) -> Self {
        SysSchema { metadata }
    }
}

const SYS_TABLES: [&str; 5] = [
    "segments",
    "server_segments",
    "servers",
    "supervisors",
    "tasks",
];

#[async_trait]
impl SchemaProvider for SysSchema {
    fn table_names(&self) -> Vec<String> {
        SYS_TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "segments" => sys_segments(self.metadata.as_ref())?,
            "servers" => sys_servers(self.metadata.as_ref())?,
            "server_segments" => sys_server_segments(self.metadata.as_ref())?,
            "tasks" => {
                let tasks = self
                    .metadata
                    .tasks()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                sys_tasks(&tasks)?
            }
            "supervisors" => {
                let supervisors = self
                    .metadata
                    .supervisors()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                sys_supervisors(&supervisors)?
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYS_TABLES.contains(&name)
    }
}

fn field(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

/// A flag as Druid's `sys` tables hold it: BIGINT 1 or 0.
fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// `sys.segments`: one row per used segment, published or being built by a streaming
/// task, with Druid's columns (flags are BIGINT 0 or 1).
fn sys_segments(metadata: &dyn Metadata) -> Result<RecordBatch> {
    let mut segments = metadata.segments(None);
    segments.sort_by(|a, b| a.descriptor.id.cmp(&b.descriptor.id));
    // Overshadowing among all used segments, per datasource.
    let mut timelines: HashMap<String, Timeline<()>> = HashMap::new();
    for s in &segments {
        let d: &SegmentDescriptor = &s.descriptor;
        timelines
            .entry(d.id.datasource.clone())
            .or_default()
            .add(d.id.clone(), d.core_partitions, ())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
    }
    let overshadowed: Vec<bool> = segments
        .iter()
        .map(|s| {
            s.published && timelines[&s.descriptor.id.datasource].is_overshadowed(&s.descriptor.id)
        })
        .collect();
    let text = |f: &dyn Fn(&SegmentInfo) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(segments.iter().map(f)))
    };
    let long = |f: &dyn Fn(usize, &SegmentInfo) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            segments.iter().enumerate().map(|(i, s)| f(i, s)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|s| Some(s.descriptor.id.to_string())),
        text(&|s| Some(s.descriptor.id.datasource.clone())),
        text(&|s| Some(format_millis(s.descriptor.id.interval.start))),
        text(&|s| Some(format_millis(s.descriptor.id.interval.end))),
        long(&|_, s| s.descriptor.size as i64),
        text(&|s| Some(s.descriptor.id.version.clone())),
        long(&|_, s| i64::from(s.descriptor.id.partition)),
        long(&|_, s| s.replicas.len() as i64),
        long(&|_, s| s.descriptor.num_rows as i64),
        long(&|i, s| flag((s.published && !overshadowed[i]) || s.realtime)),
        long(&|_, s| flag(s.published)),
        long(&|_, s| flag(s.available)),
        long(&|_, s| flag(s.realtime)),
        long(&|i, _| flag(overshadowed[i])),
        text(&|s| {
            let d = &s.descriptor;
            Some(
                serde_json::json!({
                    "type": "numbered",
                    "partitionNum": d.id.partition,
                    "partitions": d.core_partitions,
                })
                .to_string(),
            )
        }),
        text(&|s| Some(column_names(&s.descriptor, false))),
        text(&|s| Some(column_names(&s.descriptor, true))),
        text(&|_| None),
        long(&|_, _| -1),
    ];
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        field("segment_id", DataType::Utf8, false),
        field("datasource", DataType::Utf8, false),
        field("start", DataType::Utf8, false),
        field("end", DataType::Utf8, false),
        field("size", DataType::Int64, false),
        field("version", DataType::Utf8, false),
        field("partition_num", DataType::Int64, false),
        field("num_replicas", DataType::Int64, false),
        field("num_rows", DataType::Int64, false),
        field("is_active", DataType::Int64, false),
        field("is_published", DataType::Int64, false),
        field("is_available", DataType::Int64, false),
        field("is_realtime", DataType::Int64, false),
        field("is_overshadowed", DataType::Int64, false),
        field("shard_spec", DataType::Utf8, false),
        field("dimensions", DataType::Utf8, false),
        field("metrics", DataType::Utf8, false),
        field("last_compaction_state", DataType::Utf8, true),
        field("replication_factor", DataType::Int64, false),
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The names of a segment's metrics, or of its dimensions, as a JSON array. A column
/// whose role the descriptor does not record (written before roles were kept) counts
/// as a dimension.
fn column_names(descriptor: &SegmentDescriptor, metrics: bool) -> String {
    let names: Vec<&str> = descriptor
        .columns
        .iter()
        .filter(|c| match c.role {
            Some(ColumnRole::Time) => false,
            Some(ColumnRole::Metric) => metrics,
            Some(ColumnRole::Dimension) => !metrics,
            None => !metrics && c.name != grove_segment::format::TIME_COLUMN,
        })
        .map(|c| c.name.as_str())
        .collect();
    serde_json::json!(names).to_string()
}

/// `sys.server_segments`: which server serves which segment.
fn sys_server_segments(metadata: &dyn Metadata) -> Result<RecordBatch> {
    let servers = metadata.servers();
    let addresses = server_names(servers.iter().map(|s| &s.node));
    let mut pairs: Vec<(String, String)> = metadata
        .segments(None)
        .iter()
        .flat_map(|s| {
            let id = s.descriptor.id.to_string();
            s.replicas
                .iter()
                .map(|r| {
                    let server = addresses.get(&r.node).unwrap_or(&r.node).clone();
                    (server, id.clone())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    pairs.sort();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        field("server", DataType::Utf8, false),
        field("segment_id", DataType::Utf8, false),
    ]));
    let (servers, segments): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(servers)),
            Arc::new(StringArray::from(segments)),
        ],
    )?)
}

/// `sys.servers`: one row per live node, with Druid's columns, then Grove's
/// `flight_host` and `node_id`.
fn sys_servers(metadata: &dyn Metadata) -> Result<RecordBatch> {
    let mut servers = metadata.servers();
    servers.sort_by(|a, b| (a.node.role, &a.node.id).cmp(&(b.node.role, &b.node.id)));
    let names = server_names(servers.iter().map(|s| &s.node));
    let text = |f: &dyn Fn(&crate::metadata::ServerInfo) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(servers.iter().map(f)))
    };
    let long = |f: &dyn Fn(&crate::metadata::ServerInfo) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(servers.iter().map(f)))
    };
    let is_data = |s: &crate::metadata::ServerInfo| s.node.role == Role::Historical;
    let address = |s: &crate::metadata::ServerInfo| -> (String, i64) {
        match s.node.http_address.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse().unwrap_or(-1)),
            None => (s.node.http_address.clone(), -1),
        }
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|s| names.get(&s.node.id).cloned()),
        text(&|s| Some(address(s).0)),
        long(&|s| Some(address(s).1)),
        long(&|_| Some(-1)),
        text(&|s| Some(s.node.role.druid_server_type().to_string())),
        text(&|s| s.node.tier.clone()),
        long(&|s| Some(if is_data(s) { s.current_size as i64 } else { 0 })),
        long(&|s| Some(s.node.capacity.map_or(0, |c| c.min(i64::MAX as u64) as i64))),
        long(&|_| None),
        text(&|s| Some(s.node.started_at.clone())),
        text(&|s| s.node.flight_address.clone()),
        text(&|s| Some(s.node.id.clone())),
    ];
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        field("server", DataType::Utf8, false),
        field("host", DataType::Utf8, false),
        field("plaintext_port", DataType::Int64, false),
        field("tls_port", DataType::Int64, false),
        field("server_type", DataType::Utf8, false),
        field("tier", DataType::Utf8, true),
        field("curr_size", DataType::Int64, false),
        field("max_size", DataType::Int64, false),
        field("is_leader", DataType::Int64, true),
        field("start_time", DataType::Utf8, false),
        field("flight_host", DataType::Utf8, true),
        field("node_id", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `sys.supervisors`: every supervisor that was not terminated, with Druid's columns.
fn sys_supervisors(
    supervisors: &[(SupervisorRecord, Option<SupervisorState>)],
) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&SupervisorRecord, Option<&SupervisorState>) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            supervisors.iter().map(|(r, s)| f(r, s.as_ref())),
        ))
    };
    let state = |r: &SupervisorRecord, s: Option<&SupervisorState>| match s {
        Some(s) => s.state.clone(),
        None if r.suspended => "SUSPENDED".into(),
        None => "PENDING".into(),
    };
    let columns: Vec<ArrayRef> = vec![
        text(&|r, _| r.id.clone()),
        text(&state),
        text(&|r, s| s.map_or_else(|| state(r, s), |s| s.detailed_state.clone())),
        Arc::new(Int64Array::from_iter_values(
            supervisors
                .iter()
                .map(|(_, s)| i64::from(s.as_ref().is_none_or(|s| s.healthy))),
        )),
        text(&|_, _| "kafka".into()),
        text(&|r, _| {
            r.spec
                .pointer("/spec/ioConfig/topic")
                .or_else(|| r.spec.pointer("/ioConfig/topic"))
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string()
        }),
        Arc::new(Int64Array::from_iter_values(
            supervisors.iter().map(|(r, _)| i64::from(r.suspended)),
        )),
        text(&|r, _| r.spec.to_string()),
    ];
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        field("supervisor_id", DataType::Utf8, false),
        field("state", DataType::Utf8, false),
        field("detailed_state", DataType::Utf8, false),
        field("healthy", DataType::Int64, false),
        field("type", DataType::Utf8, false),
        field("source", DataType::Utf8, false),
        field("suspended", DataType::Int64, false),
        field("spec", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `sys.tasks`: every task of the indexing service, with Druid's columns.
fn sys_tasks(tasks: &[TaskRecord]) -> Result<RecordBatch> {
    let plus: Vec<serde_json::Value> = tasks.iter().map(TaskRecord::status_plus).collect();
    let text = |f: &dyn Fn(&serde_json::Value) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(plus.iter().map(f)))
    };
    let field_text =
        |name: &'static str| move |t: &serde_json::Value| t[name].as_str().map(String::from);
    let host = |t: &serde_json::Value| t["location"]["host"].as_str().map(String::from);
    let port = |t: &serde_json::Value, name: &str| t["location"][name].as_i64().unwrap_or(-1);
    let columns: Vec<ArrayRef> = vec![
        text(&field_text("id")),
        text(&field_text("groupId")),
        text(&field_text("type")),
        text(&field_text("dataSource")),
        text(&field_text("createdTime")),
        text(&field_text("queueInsertionTime")),
        text(&field_text("statusCode")),
        text(&field_text("runnerStatusCode")),
        Arc::new(Int64Array::from_iter_values(
            plus.iter().map(|t| t["duration"].as_i64().unwrap_or(-1)),
        )),
        text(&|t| host(t).map(|h| format!("{h}:{}", port(t, "port")))),
        text(&host),
        Arc::new(Int64Array::from_iter_values(
            plus.iter().map(|t| port(t, "port")),
        )),
        Arc::new(Int64Array::from_iter_values(
            plus.iter().map(|t| port(t, "tlsPort")),
        )),
        text(&field_text("errorMsg")),
    ];
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        field("task_id", DataType::Utf8, false),
        field("group_id", DataType::Utf8, false),
        field("type", DataType::Utf8, false),
        field("datasource", DataType::Utf8, false),
        field("created_time", DataType::Utf8, false),
        field("queue_insertion_time", DataType::Utf8, false),
        field("status", DataType::Utf8, false),
        field("runner_status", DataType::Utf8, false),
        field("duration", DataType::Int64, false),
        field("location", DataType::Utf8, true),
        field("host", DataType::Utf8, true),
        field("plaintext_port", DataType::Int64, false),
        field("tls_port", DataType::Int64, false),
        field("error_msg", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}
