//! What the SQL layer knows of a datasource: a timeline of the segments a query may
//! read, and the schema of all its used segments. Segment files are opened
//! (memory-mapped) only when a query touches them, and kept open afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use grove_cluster::deep_storage::DeepStorage;
use grove_cluster::segments::SegmentDescriptor;
use grove_segment::SegmentId;
use grove_segment::format::{ColumnKind, Segment, TIME_COLUMN};
use grove_segment::timeline::Timeline;

/// One datasource: its timeline and the table schema (the union of its segments').
pub struct Datasource {
    pub name: String,
    pub timeline: Timeline<SegmentDescriptor>,
    pub schema: SchemaRef,
    /// Columns that are strings in every segment holding them: these have bitmap indexes.
    pub string_columns: Vec<String>,
    /// Per segment id, the historicals serving it (a broker's datasources only).
    pub replicas: HashMap<String, Vec<crate::metadata::Replica>>,
    /// Segments only streaming tasks serve: their rows may still change.
    pub realtime: HashSet<String>,
}

/// Opens segment files from local (or shared) deep storage and keeps them open: how
/// `grove sql --data-dir` reads. Brokers read through the historicals instead.
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

    pub async fn get(&self, descriptor: &SegmentDescriptor) -> grove_cluster::Result<Arc<Segment>> {
        if let Some(s) = self
            .open
            .lock()
            .ok()
            .and_then(|m| m.get(&descriptor.id).cloned())
        {
            return Ok(s);
        }
        let path = self.deep.local_path(&descriptor.path).ok_or_else(|| {
            grove_cluster::Error::Invalid(format!(
                "{} is in deep storage {}, which this process cannot map; query it through a broker",
                descriptor.id,
                self.deep.url()
            ))
        })?;
        let segment = Segment::open(&path)?;
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

/// Builds a datasource: its schema from `all` (every used segment), its timeline from
/// `queryable` (those a query may read).
pub fn datasource(
    name: String,
    mut descriptors: Vec<SegmentDescriptor>,
    queryable: impl Fn(&SegmentDescriptor) -> bool,
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
    for d in descriptors.into_iter().filter(|d| queryable(d)) {
        timeline.add(d.id.clone(), d.core_partitions, d)?;
    }
    Ok(Datasource {
        name,
        timeline,
        schema: Arc::new(Schema::new(fields)),
        string_columns,
        replicas: HashMap::new(),
        realtime: HashSet::new(),
    })
}
