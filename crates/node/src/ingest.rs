//! `grove ingest SPEC`: runs a batch ingestion with a progress line on a terminal and
//! a summary at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use grove_cluster::task::{IngestOutcome, run_batch};
use grove_segment::ingest::Progress;
use grove_segment::spec::IngestionSpec;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data_dir::DataDir;
use crate::{CliResult, server};

/// Where an ingestion publishes: a data directory's embedded store, or a cluster.
pub struct Target {
    pub store: Arc<dyn MetaStore>,
    pub deep: DeepStorage,
    pub staging: PathBuf,
}

impl Target {
    /// A cluster's etcd when `etcd` is given, else the data directory's own store.
    pub async fn open(
        data_dir: &Path,
        etcd: Option<&str>,
        deep: Option<&str>,
    ) -> CliResult<Target> {
        let dir = DataDir::new(data_dir);
        let store = match etcd {
            Some(etcd) => server::connect_etcd(Some(etcd), "ingest").await?,
            None => dir.open_for_writing()?,
        };
        Ok(Target {
            store,
            deep: server::deep_storage(deep, None, data_dir)?,
            staging: dir.staging(),
        })
    }
}

pub async fn run(spec_path: &Path, target: &Target) -> CliResult<IngestOutcome> {
    let spec = IngestionSpec::from_file(spec_path)?;
    let version = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let bar = progress_bar();
    let started = Instant::now();
    let mut on_progress = |p: &Progress| {
        bar.set_message(format!(
            "files {}/{}, rows read {}, segments written {}",
            p.files_done, p.files_total, p.rows_read, p.segments_written
        ));
    };
    let outcome = run_batch(
        &spec,
        target.store.as_ref(),
        &target.deep,
        &target.staging,
        &version,
        &mut on_progress,
    )
    .await;
    bar.finish_and_clear();
    let outcome = outcome?;
    print_summary(&spec, &outcome, started.elapsed());
    Ok(outcome)
}

/// A spinner with a message on a terminal; nothing elsewhere.
pub fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn print_summary(spec: &IngestionSpec, outcome: &IngestOutcome, elapsed: Duration) {
    let p = &outcome.progress;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let bytes: u64 = outcome.published.iter().map(|d| d.size).sum();
    println!(
        "Ingested {} into datasource {:?} in {:.2} s",
        spec_files(spec),
        spec.datasource,
        seconds
    );
    println!(
        "  rows read {}, filtered {}, outside intervals {}, parse exceptions {}",
        p.rows_read, p.rows_filtered, p.rows_thrown_away, p.parse_exceptions
    );
    println!(
        "  rows stored {} in {} segment(s), {:.1} MiB; {:.0} rows/s",
        p.rows_written,
        outcome.published.len(),
        bytes as f64 / (1024.0 * 1024.0),
        p.rows_read as f64 / seconds
    );
}

fn spec_files(spec: &IngestionSpec) -> String {
    use grove_segment::spec::InputSource;
    let count = match &spec.input {
        InputSource::Local { files } => files.len(),
        InputSource::Inline { .. } => return "inline data".to_string(),
        InputSource::Http { uris, .. } => uris.len(),
        InputSource::S3 { uris, prefixes, .. } => uris.len() + prefixes.len(),
    };
    match count {
        1 => "1 input".to_string(),
        n => format!("{n} inputs"),
    }
}
