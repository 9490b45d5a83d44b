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

pub struct DatasourceTable {
    datasource: Arc<Datasource>,
    segments: Arc<SegmentCache>,
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
            segments,
        }
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
        let segments = if time.is_empty() {
            Vec::new()
        } else {
            self.visible(time).await?
        };
        let projection = match projection {
            Some(p) => p.clone(),
            None => (0..self.datasource.schema.fields().len()).collect(),
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
    /// The segments visible in `time`, each with the intervals where it is visible.
    async fn visible(&self, time: Interval) -> Result<Vec<ScanSegment>> {
        let mut by_id: BTreeMap<_, ScanSegment> = BTreeMap::new();
        for chunk in self.datasource.timeline.lookup(time) {
            for (id, descriptor) in chunk.segments {
                let scan = match by_id.entry(id) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let segment = self
                            .segments
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
