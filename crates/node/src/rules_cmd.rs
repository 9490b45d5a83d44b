//! `grove rules get DATASOURCE` and `grove rules set DATASOURCE FILE`: a datasource's
//! rules (Druid's JSON array), straight in the metadata store of a cluster (`--etcd`)
//! or a data directory.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use grove_cluster::metastore::MetaStore;
use grove_cluster::rules;

use crate::data_dir::{self, DataDir};
use crate::{CliResult, server};

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    action: Action,
    /// The cluster's etcd endpoints.
    #[arg(long, env = "GROVE_ETCD", global = true)]
    etcd: Option<String>,
    /// Or a data directory (not while `grove start` holds it: use its HTTP API).
    #[arg(long, env = "GROVE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
enum Action {
    /// Print a datasource's rules as JSON (`_default`: the cluster default).
    Get { datasource: String },
    /// Set a datasource's rules from a JSON file (`-` reads standard input).
    Set { datasource: String, file: PathBuf },
}

pub async fn run(args: RulesArgs) -> CliResult<()> {
    let store: Arc<dyn MetaStore> = match (&args.etcd, &args.data_dir) {
        (Some(etcd), _) => server::connect_etcd(Some(etcd), "rules").await?,
        (None, dir) => {
            let dir = dir.clone().unwrap_or_else(|| data_dir::DEFAULT.into());
            DataDir::new(&dir).open_for_writing()?
        }
    };
    match args.action {
        Action::Get { datasource } => {
            let list = rules::get(store.as_ref(), &datasource).await?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Action::Set { datasource, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("reading {}: {e}", file.display()))?
            };
            let list = rules::parse(text.as_bytes())?;
            rules::set(store.as_ref(), &datasource, &list).await?;
            println!("Set {} rule(s) for {datasource}.", list.len());
        }
    }
    Ok(())
}
