//! `grove peon DIR`: runs the one task a worker wrote into `DIR/task.json`, talking
//! with the worker over standard input and output; its log goes to standard error.
//! A streaming task also serves its segments in progress over Flight, on a free port
//! of the worker's host.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::indexer::RunnerReport;
use grove_cluster::indexer::peon::{PeonLink, PeonMessage, StdioLink, run_task};
use grove_cluster::indexer::realtime::{KAFKA_TASK_TYPE, RealtimeSegments, run_stream_task};
use grove_cluster::task_status::IngestionReport;
use grove_sql::distributed::SegmentSource;
use grove_sql::distributed::{self, FragmentService};

use crate::CliResult;

/// The host a streaming task's Flight endpoint listens on.
pub const HOST_ENV: &str = "GROVE_PEON_HOST";

/// The deep storage URL a worker gives its peons.
pub const DEEP_STORAGE_ENV: &str = "GROVE_DEEP_STORAGE";
/// Deep storage options (JSON object of strings) a worker gives its peons.
pub const DEEP_STORAGE_OPTIONS_ENV: &str = "GROVE_DEEP_STORAGE_OPTIONS";

pub async fn run(dir: &Path) -> CliResult<()> {
    let link = StdioLink::start();
    let report = match prepare(dir) {
        Ok((payload, deep)) if payload["type"] == KAFKA_TASK_TYPE => {
            match serve_stream(&payload, &deep, dir, &link).await {
                Ok(report) => report,
                Err(e) => RunnerReport::failed(e.to_string(), IngestionReport::default()),
            }
        }
        Ok((payload, deep)) => run_task(&payload, &deep, dir, &link).await,
        Err(e) => {
            let message = e.to_string();
            tracing::error!("task failed: {message}");
            RunnerReport::failed(message, IngestionReport::default())
        }
    };
    link.send(&PeonMessage::Done(report))?;
    Ok(())
}

fn prepare(dir: &Path) -> CliResult<(serde_json::Value, DeepStorage)> {
    let task = dir.join("task.json");
    let text = std::fs::read_to_string(&task)
        .map_err(|e| format!("reading the task {}: {e}", task.display()))?;
    let payload = serde_json::from_str(&text)
        .map_err(|e| format!("the task {} is not JSON: {e}", task.display()))?;
    let url = std::env::var(DEEP_STORAGE_ENV)
        .map_err(|_| format!("{DEEP_STORAGE_ENV} is not set: run by a worker only"))?;
    let options: BTreeMap<String, String> = match std::env::var(DEEP_STORAGE_OPTIONS_ENV) {
        Ok(json) => {
            serde_json::from_str(&json).map_err(|e| format!("{DEEP_STORAGE_OPTIONS_ENV}: {e}"))?
        }
        Err(_) => BTreeMap::new(),
    };
    Ok((payload, DeepStorage::from_url(&url, &options)?))
}

/// Runs a streaming task with a Flight endpoint serving what it has read.
async fn serve_stream(
    payload: &serde_json::Value,
    deep: &DeepStorage,
    dir: &Path,
    link: &StdioLink,
) -> CliResult<RunnerReport> {
    let host = std::env::var(HOST_ENV).unwrap_or_else(|_| "127.0.0.1".into());
    // Brokers carry the cluster's secret; the worker hands it over.
    let secret = std::env::var(crate::client::SECRET_ENV).map_err(|_| {
        format!(
            "{} is not set: run by a worker only",
            crate::client::SECRET_ENV
        )
    })?;
    let secret = grove_sql::auth::ClusterSecret::new(&secret)?;
    let (listener, address) = crate::server::bind(&format!("{host}:0"), "task Flight").await?;
    let segments = RealtimeSegments::default();
    let service = FragmentService::new(Arc::new(InProgress(segments.clone())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(distributed::serve(listener, service, secret, async {
        let _ = stopped.await;
    }));
    let report = run_stream_task(payload, deep, dir, link, &segments, &address.to_string()).await;
    let _ = stop.send(());
    let _ = serving.await;
    Ok(report)
}

/// A streaming task's segments in progress, as fragments find them: each the pieces
/// persisted so far.
#[derive(Debug)]
struct InProgress(RealtimeSegments);

impl SegmentSource for InProgress {
    fn segment(&self, id: &str) -> Option<Vec<Arc<grove_segment::format::Segment>>> {
        self.0.read().ok()?.get(id).cloned()
    }
}
