//! The task API from the command line: `grove ingest SPEC --url` (submit, follow with
//! a progress bar, wait until the rows are queryable) and `grove tasks
//! list|status|log|shutdown`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::CliResult;
use crate::client::{Answer, Client, base_url};

/// How long `grove ingest --url` lets a task wait for its segments to be served,
/// unless the spec says (`awaitSegmentAvailabilityTimeoutMillis`).
pub const DEFAULT_AVAILABILITY_WAIT: Duration = Duration::from_secs(600);

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// The overlord's or `grove start`'s HTTP address.
    #[arg(
        long,
        global = true,
        env = "GROVE_URL",
        default_value = "http://127.0.0.1:8888"
    )]
    pub url: String,
    #[command(subcommand)]
    pub command: TasksCommand,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Tasks, newest first: running, pending and waiting ones, then complete ones.
    List {
        /// Only tasks in this state: running, pending, waiting or complete.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        datasource: Option<String>,
        /// At most this many complete tasks.
        #[arg(long)]
        max: Option<usize>,
    },
    /// A task's status, as JSON.
    Status { id: String },
    /// A task's log.
    Log { id: String },
    /// Stops a task that has not ended; it publishes nothing.
    Shutdown { id: String },
}

pub async fn run(args: TasksArgs) -> CliResult<()> {
    let base = base_url(&args.url);
    tokio::task::spawn_blocking(move || run_blocking(&base, args.command)).await?
}

fn run_blocking(base: &str, command: TasksCommand) -> CliResult<()> {
    let client = Client::for_cluster(REQUEST_TIMEOUT)?;
    match command {
        TasksCommand::List {
            state,
            datasource,
            max,
        } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(format!("state={s}"));
            }
            if let Some(d) = datasource {
                query.push(format!("datasource={d}"));
            }
            if let Some(m) = max {
                query.push(format!("max={m}"));
            }
            let url = format!("{base}/druid/indexer/v1/tasks?{}", query.join("&"));
            let tasks = ok(client.get(&url)?)?.json()?;
            print_tasks(tasks.as_array().map(Vec::as_slice).unwrap_or_default());
        }
        TasksCommand::Status { id } => {
            let url = format!("{base}/druid/indexer/v1/task/{}/status", encode(&id));
            let status = ok(client.get(&url)?)?.json()?;
            println!("{}", serde_json::to_string_pretty(&status["status"])?);
        }
        TasksCommand::Log { id } => {
            let url = format!("{base}/druid/indexer/v1/task/{}/log", encode(&id));
            print!("{}", ok(client.get(&url)?)?.body);
        }
        TasksCommand::Shutdown { id } => {
            let url = format!("{base}/druid/indexer/v1/task/{}/shutdown", encode(&id));
            ok(client.post(&url, &json!({}))?)?;
            println!("task {id}: shutdown requested");
        }
    }
    Ok(())
}

fn print_tasks(tasks: &[Value]) {
    println!(
        "{:<64} {:<8} {:<8} {:>10}  {:<24} ERROR",
        "TASK", "STATUS", "RUNNER", "DURATION", "CREATED"
    );
    for t in tasks {
        let text = |field: &str| t[field].as_str().unwrap_or("").to_string();
        println!(
            "{:<64} {:<8} {:<8} {:>10}  {:<24} {}",
            text("id"),
            text("statusCode"),
            text("runnerStatusCode"),
            t["duration"].as_i64().unwrap_or(-1),
            text("createdTime"),
            text("errorMsg")
        );
    }
}

/// Path segments are task ids: letters, digits and `-_.:+`; `+` and `:` are escaped.
fn encode(id: &str) -> String {
    id.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

fn ok(answer: Answer) -> CliResult<Answer> {
    if answer.status == 200 {
        Ok(answer)
    } else {
        Err(format!("HTTP {}: {}", answer.status, answer.reason()).into())
    }
}

/// `grove ingest SPEC --url URL`: submits the spec as a task and follows it to its end.
pub async fn ingest(spec: PathBuf, url: String) -> CliResult<()> {
    tokio::task::spawn_blocking(move || ingest_blocking(&spec, &base_url(&url))).await?
}

fn ingest_blocking(spec_path: &Path, base: &str) -> CliResult<()> {
    let (text, base_dir) = if spec_path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        (text, std::env::current_dir()?)
    } else {
        let text = std::fs::read_to_string(spec_path)
            .map_err(|e| format!("cannot read ingestion spec {}: {e}", spec_path.display()))?;
        let dir = spec_path.parent().unwrap_or(Path::new("")).to_path_buf();
        (text, std::path::absolute(dir)?)
    };
    let mut task: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the ingestion spec is not valid JSON: {e}"))?;
    prepare(&mut task, &base_dir);
    let client = Client::for_cluster(REQUEST_TIMEOUT)?;
    let answer = ok(client.post(&format!("{base}/druid/indexer/v1/task"), &task)?)?;
    let id = answer.json()?["task"]
        .as_str()
        .ok_or("the server answered without a task id")?
        .to_string();
    eprintln!("task {id} submitted");
    follow(&client, base, &id)
}

/// Makes the spec's local paths absolute (the server does not know where it was) and
/// asks the task to wait until its segments are served.
fn prepare(task: &mut Value, base_dir: &Path) {
    if let Some(source) = task.pointer_mut("/spec/ioConfig/inputSource")
        && source["type"] == "local"
    {
        if let Some(dir) = source["baseDir"].as_str() {
            source["baseDir"] = base_dir.join(dir).display().to_string().into();
        }
        if let Some(files) = source["files"].as_array_mut() {
            for file in files {
                if let Some(f) = file.as_str() {
                    *file = base_dir.join(f).display().to_string().into();
                }
            }
        }
    }
    if let Some(spec) = task.get_mut("spec").and_then(Value::as_object_mut) {
        let tuning = spec
            .entry("tuningConfig")
            .or_insert_with(|| json!({ "type": "index_parallel" }));
        if let Some(tuning) = tuning.as_object_mut() {
            tuning
                .entry("awaitSegmentAvailabilityTimeoutMillis")
                .or_insert(json!(DEFAULT_AVAILABILITY_WAIT.as_millis() as u64));
        }
    }
}

/// Polls the task's status and reports until it ends.
fn follow(client: &Client, base: &str, id: &str) -> CliResult<()> {
    let bar = crate::ingest::progress_bar();
    let started = Instant::now();
    let status_url = format!("{base}/druid/indexer/v1/task/{}/status", encode(id));
    let reports_url = format!("{base}/druid/indexer/v1/task/{}/reports", encode(id));
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let status = match client.get(&status_url) {
            Ok(answer) if answer.status == 200 => {
                unreachable_since = None;
                answer.json()?
            }
            // The overlord may be failing over: keep asking for a while.
            other => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > REQUEST_TIMEOUT {
                    bar.finish_and_clear();
                    let why = match other {
                        Ok(answer) => format!("HTTP {}: {}", answer.status, answer.reason()),
                        Err(e) => e.to_string(),
                    };
                    return Err(format!("lost track of task {id}: {why}").into());
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let report = client
            .get(&reports_url)
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| a.json().ok())
            .map(|r| r["ingestionStatsAndErrors"]["payload"].clone())
            .unwrap_or(Value::Null);
        let stats = &report["rowStats"]["buildSegments"];
        let state = status["status"]["statusCode"].as_str().unwrap_or("");
        let runner = status["status"]["runnerStatusCode"].as_str().unwrap_or("");
        bar.set_message(format!(
            "{runner:<8} {} rows processed, {} thrown away, {} unparseable ({})",
            stats["processed"].as_u64().unwrap_or(0),
            stats["thrownAway"].as_u64().unwrap_or(0),
            stats["unparseable"].as_u64().unwrap_or(0),
            report["ingestionState"].as_str().unwrap_or("NOT_STARTED"),
        ));
        match state {
            "SUCCESS" => {
                bar.finish_and_clear();
                println!(
                    "task {id} SUCCESS in {:.1} s: {} rows processed, {} thrown away, {} unparseable",
                    started.elapsed().as_secs_f64(),
                    stats["processed"].as_u64().unwrap_or(0),
                    stats["thrownAway"].as_u64().unwrap_or(0),
                    stats["unparseable"].as_u64().unwrap_or(0),
                );
                if report["segmentAvailabilityConfirmed"] != true {
                    eprintln!(
                        "warning: the published segments were not all served within the wait; \
                         queries may not see every row yet"
                    );
                }
                return Ok(());
            }
            "FAILED" => {
                bar.finish_and_clear();
                let message = status["status"]["errorMsg"]
                    .as_str()
                    .unwrap_or("no reason given");
                return Err(format!("task {id} FAILED: {message}").into());
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_and_the_task_waits_for_its_segments() {
        let mut task = json!({
            "type": "index_parallel",
            "spec": {"ioConfig": {"inputSource": {
                "type": "local", "baseDir": "data", "filter": "*.json",
                "files": ["a.json", "/abs/b.json"]
            }}}
        });
        prepare(&mut task, Path::new("/specs"));
        let source = &task["spec"]["ioConfig"]["inputSource"];
        assert_eq!(source["baseDir"], "/specs/data");
        assert_eq!(source["files"], json!(["/specs/a.json", "/abs/b.json"]));
        assert_eq!(
            task["spec"]["tuningConfig"],
            json!({"type": "index_parallel", "awaitSegmentAvailabilityTimeoutMillis": 600_000})
        );

        // A wait the spec sets is kept.
        let mut task =
            json!({"spec": {"tuningConfig": {"awaitSegmentAvailabilityTimeoutMillis": 5}}});
        prepare(&mut task, Path::new("/"));
        assert_eq!(
            task["spec"]["tuningConfig"]["awaitSegmentAvailabilityTimeoutMillis"],
            5
        );
    }
}
