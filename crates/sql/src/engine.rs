//! The SQL session: DataFusion over Grove's schemas. Before each statement the
//! [`Metadata`] is brought up to date (a no-op for a broker, whose view follows the
//! cluster by itself), so newly published segments are visible at once.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use grove_cluster::view::ClusterView;

use crate::catalog::SegmentCache;
use crate::metadata::{DirectMetadata, Metadata, ViewMetadata};
use crate::schema::{DatasourceSchema, SysSchema};

const CATALOG: &str = "datafusion";
const DEFAULT_SCHEMA: &str = "public";
const SYS_SCHEMA: &str = "sys";

pub struct Engine {
    ctx: SessionContext,
    metadata: Arc<dyn Metadata>,
    segments: Arc<SegmentCache>,
}

impl Engine {
    /// An engine that reads every used segment itself, from local deep storage.
    pub fn direct(store: Arc<dyn MetaStore>, deep: DeepStorage) -> Result<Self> {
        Self::new(Arc::new(DirectMetadata::new(store)), deep, None)
    }

    /// A broker's engine: queries see the segments the cluster serves. Segments in
    /// remote deep storage are copied into `cache_dir` to be read.
    pub fn broker(view: Arc<ClusterView>, deep: DeepStorage, cache_dir: PathBuf) -> Result<Self> {
        Self::new(Arc::new(ViewMetadata::new(view)), deep, Some(cache_dir))
    }

    pub fn new(
        metadata: Arc<dyn Metadata>,
        deep: DeepStorage,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA);
        let ctx = SessionContext::new_with_config(config);
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
        let segments = Arc::new(SegmentCache::new(deep, cache_dir));
        catalog.register_schema(
            DEFAULT_SCHEMA,
            Arc::new(DatasourceSchema::new(metadata.clone(), segments.clone())),
        )?;
        catalog.register_schema(SYS_SCHEMA, Arc::new(SysSchema::new(metadata.clone())))?;
        Ok(Engine {
            ctx,
            metadata,
            segments,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn segment_cache(&self) -> &SegmentCache {
        &self.segments
    }

    pub fn metadata(&self) -> &Arc<dyn Metadata> {
        &self.metadata
    }

    /// Plans one statement against fresh metadata.
    pub async fn sql(&self, text: &str) -> Result<DataFrame> {
        self.metadata
            .refresh()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        self.ctx.sql(text).await
    }

    /// Runs one statement to completion.
    pub async fn execute(&self, text: &str) -> Result<Vec<RecordBatch>> {
        self.sql(text).await?.collect().await
    }
}
