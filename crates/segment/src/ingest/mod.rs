//! Batch ingestion, up to written segment files: input rows are read
//! ([`input`]), given their time, filtered and typed ([`conform`]), routed to their
//! time chunk and built into segments ([`chunk`]). Publishing them is the caller's job.

pub mod chunk;
pub mod conform;
mod flat_json;
pub mod incremental;
pub mod input;

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;

pub use chunk::BuiltSegment;
use chunk::{ChunkBuilder, Layout, Output};
use conform::Conformer;
pub use input::InputFile;

use crate::error::{Error, Result};
use crate::id::Interval;
use crate::spec::{IngestionSpec, InputSource};

/// Counts shown while ingesting and in the final summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub files_total: usize,
    pub files_done: usize,
    /// Rows read from the input, including those later dropped.
    pub rows_read: u64,
    /// Rows dropped by `transformSpec.filter`.
    pub rows_filtered: u64,
    /// Rows outside `granularitySpec.intervals`.
    pub rows_thrown_away: u64,
    pub parse_exceptions: u64,
    /// Rows in written segments (after rollup).
    pub rows_written: u64,
    pub segments_written: usize,
}

/// Names the segments an ingestion writes: the version and partition number of the
/// next segment of time chunk `chunk`. Asked once per segment, just before it is
/// written.
pub trait Allocator {
    fn allocate(&mut self, chunk: Interval) -> Result<(String, u32)>;
}

pub struct BuildReport {
    pub segments: Vec<BuiltSegment>,
    pub progress: Progress,
}

/// The inputs of a local or inline source (inline data is written into `staging` as a
/// file first); `None` for a remote source (HTTP, S3), which the caller fetches.
pub fn local_inputs(spec: &IngestionSpec, staging: &Path) -> Result<Option<Vec<InputFile>>> {
    match &spec.input {
        InputSource::Local { files } => {
            Ok(Some(files.iter().map(|f| InputFile::local(f)).collect()))
        }
        InputSource::Inline { data } => {
            let path = staging.join("inline-data");
            std::fs::write(&path, data)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(Some(vec![InputFile {
                path,
                name: "inline data".into(),
            }]))
        }
        InputSource::Http { .. } | InputSource::S3 { .. } => Ok(None),
    }
}

/// Reads `inputs` as the spec says and writes its segments into `staging`. Fails,
/// leaving only files in `staging`, when input cannot be read or parse exceptions
/// exceed `maxParseExceptions`.
pub fn build_segments(
    spec: &IngestionSpec,
    inputs: &[InputFile],
    staging: &Path,
    allocator: &mut dyn Allocator,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<BuildReport> {
    let conformer = Conformer::new(spec);
    let mut build = Build {
        spec,
        layout: conformer.layout(),
        conformer,
        out: Output {
            staging,
            allocator,
            segments: Vec::new(),
        },
        on_progress,
        progress: Progress {
            files_total: inputs.len(),
            ..Progress::default()
        },
        chunks: BTreeMap::new(),
    };
    let columns = spec.input_columns();
    for file in inputs {
        input::read_file(file, &spec.format, &columns, &mut build)?;
        build.progress.files_done += 1;
        (build.on_progress)(&build.progress);
    }
    build.finish()
}

/// Counts a parse exception; an error once there are more than `maxParseExceptions`.
fn count_parse_exception(
    progress: &mut Progress,
    spec: &IngestionSpec,
    location: &str,
    reason: &str,
) -> Result<()> {
    progress.parse_exceptions += 1;
    let count = progress.parse_exceptions;
    if count > spec.max_parse_exceptions {
        return Err(Error::invalid(format!(
            "{location}: {reason} (parse exception {count}; maxParseExceptions is {})",
            spec.max_parse_exceptions
        )));
    }
    Ok(())
}

/// The state of one ingestion run: open chunks and what has been written.
struct Build<'a> {
    spec: &'a IngestionSpec,
    conformer: Conformer,
    layout: Layout,
    out: Output<'a>,
    on_progress: &'a mut (dyn FnMut(&Progress) + Send),
    progress: Progress,
    chunks: BTreeMap<i64, ChunkBuilder>,
}

impl input::InputSink for Build<'_> {
    fn batch(&mut self, batch: input::InputBatch) -> Result<()> {
        self.progress.rows_read += batch.batch.num_rows() as u64;
        let conformed = self.conformer.conform(&batch, &mut self.progress)?;
        for (location, reason) in &conformed.exceptions {
            self.parse_exception(location, reason)?;
        }
        self.route(conformed.batch)?;
        self.progress.segments_written = self.out.segments.len();
        (self.on_progress)(&self.progress);
        Ok(())
    }

    fn unreadable(&mut self, row: input::Unreadable) -> Result<()> {
        self.progress.rows_read += 1;
        self.parse_exception(&row.location, &row.reason)
    }

    fn read_type(&self, name: &str) -> arrow::datatypes::DataType {
        self.conformer.read_type(name)
    }
}

impl Build<'_> {
    fn parse_exception(&mut self, location: &str, reason: &str) -> Result<()> {
        count_parse_exception(&mut self.progress, self.spec, location, reason)
    }

    /// Sends each row of a conformed batch to the builder of its time chunk.
    fn route(&mut self, batch: RecordBatch) -> Result<()> {
        let granularity = self.spec.segment_granularity;
        for (start, part) in conform::split_by_chunk(&batch, granularity)? {
            if !self.chunks.contains_key(&start) {
                let interval = granularity.bucket(start);
                let chunk = ChunkBuilder::new(&self.spec.datasource, interval, &self.layout)?;
                self.chunks.insert(start, chunk);
            }
            if let Some(chunk) = self.chunks.get_mut(&start) {
                chunk.add(part, &self.layout, &mut self.out)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<BuildReport> {
        for chunk in self.chunks.values_mut() {
            if !chunk.is_empty() {
                let built = chunk.flush(&self.layout, &mut self.out)?;
                self.out.segments.push(built);
            }
        }
        let segments = self.out.segments;
        self.progress.segments_written = segments.len();
        self.progress.rows_written = segments.iter().map(|s| s.written.num_rows).sum();
        (self.on_progress)(&self.progress);
        Ok(BuildReport {
            segments,
            progress: self.progress,
        })
    }
}
