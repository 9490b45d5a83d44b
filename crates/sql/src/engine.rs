//! The SQL session: DataFusion over Grove's schemas. Before each statement the
//! [`Metadata`] is brought up to date (a no-op for a broker, whose view follows the
//! cluster by itself), so newly published segments are visible at once.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::DataFrame;
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use grove_cluster::view::ClusterView;

use crate::catalog::SegmentCache;
use crate::distributed::PushPartialAggregate;
use crate::metadata::{DirectMetadata, Metadata, ViewMetadata};
use crate::remote::FragmentClient;
use crate::schema::{DatasourceSchema, SysSchema};
use crate::table::Reader;

const CATALOG: &str = "datafusion";
const DEFAULT_SCHEMA: &str = "public";
const SYS_SCHEMA: &str = "sys";

pub struct Engine {
    ctx: SessionContext,
    metadata: Arc<dyn Metadata>,
    reader: Reader,
}

impl Engine {
    /// An engine that reads every used segment itself, from local deep storage.
    pub fn direct(store: Arc<dyn MetaStore>, deep: DeepStorage) -> Result<Self> {
        let reader = Reader::Local(Arc::new(SegmentCache::new(deep)));
        Self::new(Arc::new(DirectMetadata::new(store)), reader)
    }

    /// A broker's engine: queries see the segments the cluster serves, and read
    /// them on the historicals that serve them, over Flight. Per-segment results of
    /// up to `cache_bytes` are kept (0: no cache).
    pub fn broker(
        view: Arc<ClusterView>,
        fragment_deadline: Duration,
        cache_bytes: usize,
    ) -> Result<Self> {
        let mut client = FragmentClient::new(fragment_deadline);
        if cache_bytes > 0 {
            client = client.with_cache(cache_bytes);
        }
        let reader = Reader::Remote(Arc::new(client));
        Self::new(Arc::new(ViewMetadata::new(view)), reader)
    }

    pub fn new(metadata: Arc<dyn Metadata>, reader: Reader) -> Result<Self> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if matches!(reader, Reader::Remote(_)) {
            state = state.with_physical_optimizer_rule(Arc::new(PushPartialAggregate));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
        catalog.register_schema(
            DEFAULT_SCHEMA,
            Arc::new(DatasourceSchema::new(metadata.clone(), reader.clone())),
        )?;
        catalog.register_schema(SYS_SCHEMA, Arc::new(SysSchema::new(metadata.clone())))?;
        Ok(Engine {
            ctx,
            metadata,
            reader,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The segments this process has mapped, when it reads them itself.
    pub fn segment_cache(&self) -> Option<&SegmentCache> {
        match &self.reader {
            Reader::Local(cache) => Some(cache),
            Reader::Remote(_) => None,
        }
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
