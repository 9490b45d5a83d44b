//! The SQL session over a data directory's (or cluster's) metadata: every statement
//! first refreshes the catalog, so newly published segments are visible at once.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use tokio::sync::Mutex;

use crate::catalog::{self, SegmentCache};
use crate::table::DatasourceTable;

const CATALOG: &str = "datafusion";
const DEFAULT_SCHEMA: &str = "public";
const SYS_SCHEMA: &str = "sys";

pub struct Engine {
    ctx: SessionContext,
    store: Arc<dyn MetaStore>,
    segments: Arc<SegmentCache>,
    /// Datasource tables registered by the last refresh.
    registered: Mutex<Vec<String>>,
}

impl Engine {
    pub fn new(store: Arc<dyn MetaStore>, deep: DeepStorage) -> Result<Self> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA);
        let ctx = SessionContext::new_with_config(config);
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
        catalog.register_schema(SYS_SCHEMA, Arc::new(MemorySchemaProvider::new()))?;
        Ok(Engine {
            ctx,
            store,
            segments: Arc::new(SegmentCache::new(deep)),
            registered: Mutex::new(Vec::new()),
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn segment_cache(&self) -> &SegmentCache {
        &self.segments
    }

    /// Re-reads segment descriptors and re-registers every datasource and
    /// `sys.segments`.
    pub async fn refresh(&self) -> Result<()> {
        let datasources = catalog::load_datasources(self.store.as_ref())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let sys = catalog::sys_segments(&datasources)?;
        let mut registered = self.registered.lock().await;
        for name in registered.drain(..) {
            self.ctx.deregister_table(name.as_str())?;
        }
        for ds in datasources {
            let name = ds.name.clone();
            let table = DatasourceTable::new(Arc::new(ds), Arc::clone(&self.segments));
            self.ctx.register_table(quoted(&name), Arc::new(table))?;
            registered.push(quoted(&name));
        }
        let sys = MemTable::try_new(sys.schema(), vec![vec![sys]])?;
        self.ctx
            .deregister_table(format!("{SYS_SCHEMA}.segments").as_str())?;
        self.ctx
            .register_table(format!("{SYS_SCHEMA}.segments").as_str(), Arc::new(sys))?;
        Ok(())
    }

    /// Plans one statement against fresh metadata.
    pub async fn sql(&self, text: &str) -> Result<DataFrame> {
        self.refresh().await?;
        self.ctx.sql(text).await
    }

    /// Runs one statement to completion.
    pub async fn execute(&self, text: &str) -> Result<Vec<RecordBatch>> {
        self.sql(text).await?.collect().await
    }
}

/// A table name as an identifier DataFusion will not fold to lower case.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
