//! # grove
//!
//! The one Grove binary.
//!
//! # Layout
//! - `main`: the command line.
//! - [`data_dir`]: the layout of a local data directory.
//! - [`ingest`]: `grove ingest`, with terminal progress and a summary.
//! - [`sql`]: `grove sql`, one-shot or interactive.
//! - [`sample`]: the deterministic sample dataset and its ingestion spec.
//! - [`quickstart`]: generate, ingest and query the sample in one go.

mod data_dir;
mod ingest;
mod quickstart;
mod sample;
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
    /// Run a Druid native batch ingestion spec into a data directory.
    Ingest {
        /// The spec file (`{"type": "index_parallel", "spec": {...}}`).
        spec: PathBuf,
        /// The data directory to ingest into.
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
    },
    /// Query a data directory: interactively, or run statements and exit.
    Sql {
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
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
    /// Generate the sample dataset, ingest it, and open the SQL shell on it.
    Quickstart {
        #[arg(long, env = "GROVE_DATA_DIR", default_value = data_dir::DEFAULT)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = sample::DEFAULT_ROWS)]
        rows: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("GROVE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ingest { spec, data_dir } => ingest::run(&spec, &data_dir).await.map(|_| ()),
            Command::Sql {
                data_dir,
                commands,
                file,
                format,
            } => sql::run(&data_dir, &commands, file.as_deref(), format).await,
            Command::SampleData { out, rows } => sample::write(&out, rows).map(|_| ()),
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

/// Errors reaching the command line: each is printed as one message.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
