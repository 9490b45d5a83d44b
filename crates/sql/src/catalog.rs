//! What the SQL layer knows of the data: per datasource, a timeline of its used
//! segments, built from descriptors in the metadata store. Segment files are opened
//! (memory-mapped) only when a query touches them, and kept open afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::metastore::MetaStore;
use grove_cluster::segments::{self, SegmentDescriptor};
use grove_segment::format::{ColumnKind, Segment, TIME_COLUMN};
use grove_segment::id::format_millis;
use grove_segment::timeline::Timeline;
use grove_segment::{Result as SegmentResult, SegmentId};

/// One datasource: its timeline and the table schema (the union of its segments').
pub struct Datasource {
    pub name: String,
    pub timeline: Timeline<SegmentDescriptor>,
    pub schema: SchemaRef,
    /// Columns that are strings in every segment holding them: these have bitmap indexes.
    pub string_columns: Vec<String>,
}

/// Opens segment files from deep storage and keeps them open.
#[derive(Debug)]
pub struct SegmentCache {
    deep: DeepStorage,
    open: Mutex<HashMap<SegmentId, Arc<Segment>>>,
}

impl SegmentCache {
    pub fn new(deep: DeepStorage) -> Self {
        SegmentCache {
            deep,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, descriptor: &SegmentDescriptor) -> SegmentResult<Arc<Segment>> {
        if let Some(s) = self
            .open
            .lock()
            .ok()
            .and_then(|m| m.get(&descriptor.id).cloned())
        {
            return Ok(s);
        }
        let segment = Segment::open(&self.deep.local_path(&descriptor.path))?;
        if let Ok(mut open) = self.open.lock() {
            open.insert(descriptor.id.clone(), Arc::clone(&segment));
        }
        Ok(segment)
    }

    /// How many segment files are open: what tests use to see pruning at work.
    pub fn open_count(&self) -> usize {
        self.open.lock().map_or(0, |m| m.len())
    }
}

/// Loads every used segment descriptor and groups them into datasources.
pub async fn load_datasources(store: &dyn MetaStore) -> grove_cluster::Result<Vec<Datasource>> {
    let mut by_name: BTreeMap<String, Vec<SegmentDescriptor>> = BTreeMap::new();
    for d in segments::load(store, None).await? {
        if d.used {
            by_name.entry(d.id.datasource.clone()).or_default().push(d);
        }
    }
    by_name
        .into_iter()
        .map(|(name, descriptors)| datasource(name, descriptors))
        .collect()
}

fn datasource(
    name: String,
    mut descriptors: Vec<SegmentDescriptor>,
) -> grove_cluster::Result<Datasource> {
    // Newest version first, so that when a column changed type the newest type wins.
    descriptors.sort_by(|a, b| b.id.version.cmp(&a.id.version).then(a.id.cmp(&b.id)));
    let mut columns: Vec<(String, ColumnKind)> = vec![(TIME_COLUMN.to_string(), ColumnKind::Time)];
    let mut non_string: Vec<String> = Vec::new();
    for d in &descriptors {
        for c in &d.columns {
            if !columns.iter().any(|(n, _)| *n == c.name) {
                columns.push((c.name.clone(), c.kind));
            }
            if c.kind != ColumnKind::String {
                non_string.push(c.name.clone());
            }
        }
    }
    let string_columns = columns
        .iter()
        .filter(|(n, k)| *k == ColumnKind::String && !non_string.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, k)| Field::new(n, k.data_type(), *k != ColumnKind::Time))
        .collect();
    let mut timeline = Timeline::new();
    for d in descriptors {
        timeline.add(d.id.clone(), d.core_partitions, d)?;
    }
    Ok(Datasource {
        name,
        timeline,
        schema: Arc::new(Schema::new(fields)),
        string_columns,
    })
}

/// `sys.segments`: one row per used segment.
pub fn sys_segments(datasources: &[Datasource]) -> datafusion::error::Result<RecordBatch> {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut versions = Vec::new();
    let mut partitions = Vec::new();
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    let mut overshadowed = Vec::new();
    for ds in datasources {
        for (id, d) in ds.timeline.iter() {
            ids.push(id.to_string());
            names.push(id.datasource.clone());
            starts.push(format_millis(id.interval.start));
            ends.push(format_millis(id.interval.end));
            versions.push(id.version.clone());
            partitions.push(i64::from(id.partition));
            rows.push(d.num_rows as i64);
            sizes.push(d.size as i64);
            overshadowed.push(ds.timeline.is_overshadowed(id));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(starts)),
        Arc::new(StringArray::from(ends)),
        Arc::new(StringArray::from(versions)),
        Arc::new(Int64Array::from(partitions)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(Int64Array::from(sizes)),
        Arc::new(BooleanArray::from(overshadowed)),
    ];
    Ok(RecordBatch::try_new(sys_segments_schema(), columns)?)
}

fn sys_segments_schema() -> SchemaRef {
    let field = |name: &str, t: DataType| Field::new(name, t, false);
    Arc::new(Schema::new(vec![
        field("segment_id", DataType::Utf8),
        field("datasource", DataType::Utf8),
        field("start", DataType::Utf8),
        field("end", DataType::Utf8),
        field("version", DataType::Utf8),
        field("partition_num", DataType::Int64),
        field("num_rows", DataType::Int64),
        field("size", DataType::Int64),
        field("is_overshadowed", DataType::Boolean),
    ]))
}
