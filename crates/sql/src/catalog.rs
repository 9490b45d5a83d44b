//! What the SQL layer knows of a datasource: a timeline of the segments a query may
//! read, and the schema of all its used segments. Segment files are opened
//! (memory-mapped) only when a query touches them, and kept open afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
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
}

/// Opens segment files and keeps them open: straight from deep storage when it is a
/// local (or shared) directory, else from verified copies downloaded into a local
/// cache directory.
#[derive(Debug)]
pub struct SegmentCache {
    deep: DeepStorage,
    cache_dir: Option<PathBuf>,
    open: Mutex<HashMap<SegmentId, Arc<Segment>>>,
    /// One download at a time, so that two queries never write one file.
    downloading: tokio::sync::Mutex<()>,
}

impl SegmentCache {
    /// `cache_dir` is where copies of remote segments go; without one, only local
    /// deep storage can be read.
    pub fn new(deep: DeepStorage, cache_dir: Option<PathBuf>) -> Self {
        SegmentCache {
            deep,
            cache_dir,
            open: Mutex::new(HashMap::new()),
            downloading: tokio::sync::Mutex::new(()),
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
        let path = match (self.deep.local_path(&descriptor.path), &self.cache_dir) {
            (Some(path), _) => path,
            (None, Some(dir)) => {
                let path = dir.join(format!("{}.grove", descriptor.id.file_stem()));
                let _one = self.downloading.lock().await;
                self.deep
                    .copy_verified(&descriptor.path, &path, descriptor.crc32)
                    .await?;
                path
            }
            (None, None) => {
                return Err(grove_cluster::Error::Invalid(format!(
                    "{} is in deep storage {}, and this process has no local cache for it",
                    descriptor.id,
                    self.deep.url()
                )));
            }
        };
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use grove_segment::Interval;
    use grove_segment::format::{ColumnRole, write_segment};

    /// A one-day segment of `rows` rows, written to `dir`, with its descriptor.
    fn segment(dir: &std::path::Path, rows: i64) -> (PathBuf, SegmentDescriptor) {
        let id = SegmentId {
            datasource: "t".into(),
            interval: Interval::new(0, 86_400_000).unwrap(),
            version: "v1".into(),
            partition: 0,
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(0..rows).with_timezone("UTC")),
                Arc::new(Int64Array::from_iter_values(0..rows)),
            ],
        )
        .unwrap();
        let path = dir.join("s.grove");
        let written =
            write_segment(&path, &id, &batch, &[ColumnRole::Time, ColumnRole::Metric]).unwrap();
        let descriptor = SegmentDescriptor {
            id,
            core_partitions: 1,
            size: written.size,
            num_rows: written.num_rows,
            crc32: written.crc32,
            path: "t/s.grove".into(),
            columns: Vec::new(),
            created: String::new(),
            used: true,
            commit: None,
        };
        (path, descriptor)
    }

    #[tokio::test]
    async fn remote_segments_are_copied_verified_and_recopied_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let (file, descriptor) = segment(dir.path(), 100);
        let deep = DeepStorage::in_memory();
        deep.store(&file, &descriptor.path).await.unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = SegmentCache::new(deep.clone(), Some(cache_dir.clone()));
        let segment = cache.get(&descriptor).await.unwrap();
        assert_eq!(segment.num_rows(), 100);
        let copy = cache_dir.join(format!("{}.grove", descriptor.id.file_stem()));
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&file).unwrap());

        // A damaged copy is fetched again by the next process that opens it.
        let mut bytes = std::fs::read(&copy).unwrap();
        bytes[10] ^= 0x55;
        std::fs::write(&copy, bytes).unwrap();
        let fresh = SegmentCache::new(deep.clone(), Some(cache_dir.clone()));
        assert_eq!(fresh.get(&descriptor).await.unwrap().num_rows(), 100);
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&file).unwrap());

        // A descriptor that does not match what is stored is an error, not a segment.
        let wrong = SegmentDescriptor {
            crc32: descriptor.crc32 ^ 1,
            ..descriptor.clone()
        };
        let err = SegmentCache::new(deep.clone(), Some(dir.path().join("other")))
            .get(&wrong)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");
        let other = dir.path().join("other");
        let left: Vec<_> = std::fs::read_dir(&other).unwrap().collect();
        assert!(left.is_empty(), "no bad copy is left behind: {left:?}");
        // Without a cache directory, remote deep storage cannot be read at all.
        let err = SegmentCache::new(deep, None)
            .get(&descriptor)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no local cache"), "{err}");
    }
}
