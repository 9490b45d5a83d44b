//! [`DatasourceTable`]: a datasource as a DataFusion table.
//!
//! A scan asks the timeline for the segments visible in the queried time range, and
//! hands them to a `SegmentScanExec` with the filters the scan applies itself: time
//! ranges on `__time` and bitmap-indexable predicates on string dimensions. Those are
//! reported `Exact`; everything else `Unsupported`, so DataFusion applies it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use grove_segment::Interval;
use grove_segment::scan::{IndexFilter, Pushed, ScanSegment, SegmentScanExec, classify};

use crate::catalog::{Datasource, SegmentCache};
use crate::distributed::{DistributedScanExec, FragmentClient, RemoteSegment};

pub struct DatasourceTable {
    datasource: Arc<Datasource>,
    reader: Reader,
}

/// How a table's segments are read.
#[derive(Debug, Clone)]
pub enum Reader {
    /// Mapped by this process.
    Local(Arc<SegmentCache>),
    /// On the historicals serving them, over Flight (a broker).
    Remote(Arc<FragmentClient>),
}

impl fmt::Debug for DatasourceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatasourceTable")
            .field("name", &self.datasource.name)
            .finish()
    }
}

impl DatasourceTable {
    pub fn new(datasource: Arc<Datasource>, segments: Arc<SegmentCache>) -> Self {
        DatasourceTable {
            datasource,
            reader: Reader::Local(segments),
        }
    }

    pub fn with_reader(datasource: Arc<Datasource>, reader: Reader) -> Self {
        DatasourceTable { datasource, reader }
    }

    fn classify(&self, filter: &Expr) -> Pushed {
        let strings = &self.datasource.string_columns;
        classify(filter, &|name| strings.iter().any(|s| s == name))
    }
}

#[async_trait]
impl TableProvider for DatasourceTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.datasource.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.classify(f) {
                Pushed::No => TableProviderFilterPushDown::Unsupported,
                _ => TableProviderFilterPushDown::Exact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut time = Interval::ETERNITY;
        let mut index = Vec::new();
        for filter in filters {
            match self.classify(filter) {
                Pushed::Time(interval) => {
                    time = time
                        .intersect(&interval)
                        .unwrap_or(Interval { start: 0, end: 0 });
                }
                Pushed::Index(f) => index.push(f),
                Pushed::No => {}
            }
        }
        let index = match index.len() {
            0 => None,
            1 => index.pop(),
            _ => Some(IndexFilter::And(index)),
        };
        let projection = match projection {
            Some(p) => p.clone(),
            None => (0..self.datasource.schema.fields().len()).collect(),
        };
        let cache = match &self.reader {
            Reader::Local(cache) => cache,
            Reader::Remote(client) => {
                let segments = if time.is_empty() {
                    Vec::new()
                } else {
                    self.remote(time)
                };
                let exec = DistributedScanExec::new(
                    Arc::clone(&self.datasource.schema),
                    projection,
                    segments,
                    index,
                    limit,
                    Arc::clone(client),
                )?;
                return Ok(Arc::new(exec));
            }
        };
        let segments = if time.is_empty() {
            Vec::new()
        } else {
            self.visible(time, cache).await?
        };
        let exec = SegmentScanExec::new(
            Arc::clone(&self.datasource.schema),
            projection,
            segments,
            index,
            limit,
            state.config().target_partitions(),
        )?;
        Ok(Arc::new(exec))
    }
}

impl DatasourceTable {
    /// The segments visible in `time`, by id, with the intervals where each is visible
    /// and its replicas.
    fn remote(&self, time: Interval) -> Vec<RemoteSegment> {
        let mut by_id: BTreeMap<String, RemoteSegment> = BTreeMap::new();
        for chunk in self.datasource.timeline.lookup(time) {
            for (id, descriptor) in chunk.segments {
                let id = id.to_string();
                let replicas = self
                    .datasource
                    .replicas
                    .get(&id)
                    .cloned()
                    .unwrap_or_default();
                by_id
                    .entry(id.clone())
                    .or_insert_with(|| RemoteSegment {
                        realtime: self.datasource.realtime.contains(&id),
                        interval: descriptor.id.interval,
                        rows: usize::try_from(descriptor.num_rows).unwrap_or(usize::MAX),
                        columns: descriptor.columns,
                        id,
                        intervals: Vec::new(),
                        replicas,
                    })
                    .intervals
                    .push(chunk.interval);
            }
        }
        by_id.into_values().collect()
    }

    /// The segments visible in `time`, each with the intervals where it is visible.
    async fn visible(&self, time: Interval, cache: &SegmentCache) -> Result<Vec<ScanSegment>> {
        let mut by_id: BTreeMap<_, ScanSegment> = BTreeMap::new();
        for chunk in self.datasource.timeline.lookup(time) {
            for (id, descriptor) in chunk.segments {
                let scan = match by_id.entry(id) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let segment = cache
                            .get(&descriptor)
                            .await
                            .map_err(|e| DataFusionError::External(Box::new(e)))?;
                        e.insert(ScanSegment {
                            segment,
                            intervals: Vec::new(),
                        })
                    }
                };
                scan.intervals.push(chunk.interval);
            }
        }
        Ok(by_id.into_values().collect())
    }
}
