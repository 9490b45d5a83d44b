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
//! - [`ingest`]: `grove ingest`, with terminal progress and a summary.
//! - [`sql`]: `grove sql`, one-shot or interactive.
//! - [`sample`]: the deterministic sample dataset and its ingestion spec.
//! - [`quickstart`]: generate, ingest and query the sample in one go.

mod config;
mod data_dir;
mod ingest;
mod quickstart;
mod rules_cmd;
mod sample;
mod server;
mod sql;

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
    /// Run a Druid native batch ingestion spec into a data directory or a cluster.
    Ingest {
        /// The spec file (`{"type": "index_parallel", "spec": {...}}`).
        spec: PathBuf,
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
        | Command::Broker(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GROVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
