//! # grove
//!
//! The one Grove binary.
//!
//! # Layout
//! - `main`: the command line.
//! - [`config`]: the roles' TOML configuration.
//! - [`server`]: the server roles (`coordinator`, `historical`, `broker`, `start`)
//!   and their HTTP endpoints.
//! - [`rules_cmd`]: `grove rules get|set`.
//! - [`data_dir`]: the layout of a local data directory.
//! - [`ingest`]: `grove ingest --data-dir`, with terminal progress and a summary.
//! - [`tasks_cmd`]: `grove ingest --url` and `grove tasks`: the task API from the
//!   command line.
//! - [`client`]: the HTTP client those and the worker use.
//! - [`peon`]: `grove peon`, the process a worker runs one task in.
//! - [`sql`]: `grove sql`, one-shot or interactive.
//! - [`sample`]: the deterministic sample dataset and its ingestion spec.
//! - [`quickstart`]: generate, ingest and query the sample in one go.

/// mimalloc rather than glibc's allocator: queries allocate and free many short-lived
/// buffers across threads, where glibc's arenas cost a fifth of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod config;
mod data_dir;
mod ingest;
mod peon;
mod quickstart;
mod rules_cmd;
mod sample;
mod server;
mod sql;
mod tasks_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grove_sql::output::Format;

/// Grove: a real-time analytics store.
#[derive(Debug, Parser)]
#[command(name = "grove", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Druid native batch ingestion spec: as a task of a running overlord or
    /// `grove start` (--url), or directly into a data directory or a cluster.
    Ingest {
        /// The spec file (`{"type": "index_parallel", "spec": {...}}`); `-` reads it
        /// from standard input.
        spec: PathBuf,
        /// Submit to the overlord (or `grove start`) at this HTTP address, follow the
        /// task, and return once its rows are queryable.
        #[arg(long, value_name = "URL", conflicts_with_all = ["etcd", "deep_storage"])]
        url: Option<String>,
        /// The data directory to ingest into (with --etcd: its scratch space, and
        /// deep storage unless --deep-storage says otherwise).
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
        /// Publish to the cluster at these etcd endpoints instead.
        #[arg(long, env = "GROVE_ETCD")]
        etcd: Option<String>,
        /// Deep storage URL (file:///path or s3://bucket/prefix).
        #[arg(long, env = "GROVE_DEEP_STORAGE")]
        deep_storage: Option<String>,
    },
    /// Every role in one process on a data directory: the single-machine cluster.
    Start(server::start::StartArgs),
    /// A coordinator: places segments on historicals following the rules.
    Coordinator(server::coordinator::CoordinatorArgs),
    /// A historical: serves the segments assigned to it.
    Historical(server::historical::HistoricalArgs),
    /// A broker: answers SQL over the segments the cluster serves.
    Broker(server::broker::BrokerArgs),
    /// An overlord: takes ingestion tasks (Druid's task API), locks, assigns them.
    Overlord(server::overlord::OverlordArgs),
    /// A worker (Druid's MiddleManager): runs ingestion tasks in child processes.
    Worker(server::worker::WorkerArgs),
    /// Run one task for a worker (started by workers, not by hand).
    #[command(hide = true)]
    Peon {
        /// The task's directory, holding task.json.
        dir: PathBuf,
    },
    /// Ingestion tasks of an overlord or `grove start`: list, status, log, shutdown.
    Tasks(tasks_cmd::TasksArgs),
    /// Read or set a datasource's load/drop rules (`_default` for the cluster default).
    Rules(rules_cmd::RulesArgs),
    /// Query a data directory, or a server over Flight SQL: interactively, or run
    /// statements and exit.
    Sql {
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
        /// A broker's or `grove start`'s Flight SQL address instead of a data
        /// directory: grpc://HOST:PORT, grpc+tls://HOST:PORT, with a user as in
        /// grpc://alice@HOST:PORT.
        #[arg(long, value_name = "URL")]
        connect: Option<String>,
        /// The user's password for --connect, unless the URL has it.
        #[arg(long, env = "GROVE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A PEM certificate to trust for grpc+tls:// besides the system's roots.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// A statement to run (repeatable); the shell does not start.
        #[arg(short = 'c', long = "command")]
        commands: Vec<String>,
        /// A file of `;`-terminated statements to run; the shell does not start.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// How to print results.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Write the sample dataset (CSV) and its ingestion spec into a directory.
    SampleData {
        /// Where to write `events.csv` and `events-spec.json`.
        #[arg(long)]
        out: PathBuf,
        /// How many rows to generate.
        #[arg(long, default_value_t = sample::DEFAULT_ROWS)]
        rows: u64,
    },
    /// Print the stored form of a password (read from stdin) for a `[[users]]` entry
    /// of the broker's or `grove start`'s config.
    Passwd,
    /// Generate the sample dataset, ingest it, and open the SQL shell on it.
    Quickstart {
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = sample::DEFAULT_ROWS)]
        rows: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers say what they do; one-shot commands only warn.
    let default_level = match cli.command {
        Command::Start(_)
        | Command::Coordinator(_)
        | Command::Historical(_)
        | Command::Broker(_)
        | Command::Overlord(_)
        | Command::Worker(_)
        | Command::Peon { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GROVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ingest {
                spec,
                url: Some(url),
                ..
            } => tasks_cmd::ingest(spec, url).await,
            Command::Ingest {
                spec,
                url: None,
                data_dir,
                etcd,
                deep_storage,
            } => {
                let target =
                    ingest::Target::open(&data_dir, etcd.as_deref(), deep_storage.as_deref())
                        .await?;
                ingest::run(&spec, &target).await.map(|_| ())
            }
            Command::Start(args) => server::start::run(args).await,
            Command::Coordinator(args) => server::coordinator::run(args).await,
            Command::Historical(args) => server::historical::run(args).await,
            Command::Broker(args) => server::broker::run(args).await,
            Command::Overlord(args) => server::overlord::run(args).await,
            Command::Worker(args) => server::worker::run(args).await,
            Command::Peon { dir } => peon::run(&dir).await,
            Command::Tasks(args) => tasks_cmd::run(args).await,
            Command::Rules(args) => rules_cmd::run(args).await,
            Command::Sql {
                data_dir,
                connect,
                password,
                tls_ca,
                commands,
                file,
                format,
            } => {
                let source = match connect {
                    Some(url) => sql::Source::Remote {
                        url,
                        password,
                        tls_ca,
                    },
                    None => sql::Source::Local(data_dir),
                };
                sql::run(source, &commands, file.as_deref(), format).await
            }
            Command::SampleData { out, rows } => sample::write(&out, rows).map(|_| ()),
            Command::Passwd => passwd(),
            Command::Quickstart { data_dir, rows } => quickstart::run(&data_dir, rows).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `grove passwd`: the first line of stdin, hashed.
fn passwd() -> CliResult<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("grove passwd: give the password on stdin".into());
    }
    println!("{}", grove_sql::auth::hash(password));
    Ok(())
}

/// Errors reaching the command line: each is printed as one message.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
