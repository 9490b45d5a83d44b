//! A local data directory: `meta/` holds the embedded metadata store, `deep/` is deep
//! storage for segment files, `tmp/` is scratch space for ingestion.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::{EmbeddedStore, MetaStore};

use crate::CliResult;

pub const DEFAULT: &str = "grove-data";

pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    /// The metadata store, for writing: fails at once if another process holds it.
    pub fn open_for_writing(&self) -> CliResult<Arc<dyn MetaStore>> {
        Ok(Arc::new(EmbeddedStore::open(&self.root.join("meta"))?))
    }

    /// The metadata store, for reading what its owner has published.
    pub fn open_for_reading(&self) -> CliResult<Arc<dyn MetaStore>> {
        if !self.root.join("meta").is_dir() {
            return Err(format!(
                "{} is not a Grove data directory (no meta/ in it); ingest something first",
                self.root.display()
            )
            .into());
        }
        Ok(Arc::new(EmbeddedStore::open_read_only(
            &self.root.join("meta"),
        )?))
    }

    pub fn deep_storage(&self) -> CliResult<DeepStorage> {
        Ok(DeepStorage::local(self.root.join("deep"))?)
    }

    pub fn staging(&self) -> PathBuf {
        self.root.join("tmp")
    }
}
