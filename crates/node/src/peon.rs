//! `grove peon DIR`: runs the one task a worker wrote into `DIR/task.json`, talking
//! with the worker over standard input and output; its log goes to standard error.

use std::collections::BTreeMap;
use std::path::Path;

use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::indexer::RunnerReport;
use grove_cluster::indexer::peon::{PeonLink, PeonMessage, StdioLink, run_task};
use grove_cluster::task_status::IngestionReport;

use crate::CliResult;

/// The deep storage URL a worker gives its peons.
pub const DEEP_STORAGE_ENV: &str = "GROVE_DEEP_STORAGE";
/// Deep storage options (JSON object of strings) a worker gives its peons.
pub const DEEP_STORAGE_OPTIONS_ENV: &str = "GROVE_DEEP_STORAGE_OPTIONS";

pub async fn run(dir: &Path) -> CliResult<()> {
    let link = StdioLink::start();
    let report = match prepare(dir) {
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
