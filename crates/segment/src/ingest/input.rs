//! Reading input files (newline-delimited JSON, CSV, Parquet) into Arrow batches that
//! remember where each row came from, so that a bad row can be named by file and line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::reader::{Decoder, ReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::spec::InputFormat;

/// Rows per batch handed on by the readers.
pub const BATCH_ROWS: usize = 16 * 1024;

/// A batch of input rows and where they came from.
pub struct InputBatch {
    /// The requested columns that the input has, by name; types as the input gives them.
    pub batch: RecordBatch,
    pub origin: Origin,
}

/// Where the rows of a batch came from.
#[derive(Clone)]
pub struct Origin {
    pub file: Arc<str>,
    /// 1-based line of each row (text formats), or the 1-based number of the first row.
    pub rows: RowNumbers,
}

#[derive(Clone)]
pub enum RowNumbers {
    Lines(Vec<u64>),
    FirstRow(u64),
}

impl Origin {
    /// "file line N" / "file row N" for row `i` of the batch.
    pub fn describe(&self, i: usize) -> String {
        match &self.rows {
            RowNumbers::Lines(lines) => {
                format!("{} line {}", self.file, lines.get(i).copied().unwrap_or(0))
            }
            RowNumbers::FirstRow(first) => format!("{} row {}", self.file, first + i as u64),
        }
    }
}

/// A row that could not be read at all (malformed JSON, bad UTF-8 in CSV).
pub struct Unreadable {
    pub location: String,
    pub reason: String,
}

/// Receives what a reader reads.
pub trait InputSink {
    fn batch(&mut self, batch: InputBatch) -> Result<()>;
    fn unreadable(&mut self, row: Unreadable) -> Result<()>;
    /// The type to read column `name` as, where the format lets the reader choose.
    fn read_type(&self, name: &str) -> DataType;
}

/// Reads `path`, handing `sink` each batch of rows and each row that cannot be read.
/// `columns` names the input columns wanted.
pub fn read_file(
    path: &Path,
    format: &InputFormat,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let name: Arc<str> = path.display().to_string().into();
    match format {
        InputFormat::Json => read_json(path, name, columns, sink),
        InputFormat::Csv {
            columns: header,
            find_columns_from_header,
            skip_header_rows,
        } => {
            let layout = CsvLayout {
                columns: header.as_deref(),
                find_columns_from_header: *find_columns_from_header,
                skip_header_rows: *skip_header_rows,
            };
            read_csv(path, name, &layout, columns, sink)
        }
        InputFormat::Parquet => read_parquet(path, name, columns, sink),
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(format!("opening input {}", path.display()), e))
}

fn read_json(
    path: &Path,
    name: Arc<str>,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c, sink.read_type(c), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let new_decoder = || -> Result<Decoder> {
        Ok(ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .with_ignore_type_conflicts(true)
            .build_decoder()?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, open(path)?);
    let mut decoder = new_decoder()?;
    let mut lines = Vec::with_capacity(BATCH_ROWS);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Err(e) = decode_line(&mut decoder, &line) {
            sink.unreadable(Unreadable {
                location: format!("{name} line {number}"),
                reason: format!("malformed JSON: {e}"),
            })?;
            // The decoder may hold part of the bad line: start over with the rows of
            // this batch that were fine. They are re-read from the file.
            decoder = new_decoder()?;
            let good = std::mem::take(&mut lines);
            redecode(path, &good, &mut decoder)?;
            lines = good;
            continue;
        }
        lines.push(number);
        if lines.len() == BATCH_ROWS {
            flush_json(&mut decoder, &name, &mut lines, sink)?;
        }
    }
    flush_json(&mut decoder, &name, &mut lines, sink)
}

/// Decodes one complete line; a line holding anything but one JSON object is an error.
fn decode_line(decoder: &mut Decoder, line: &[u8]) -> Result<()> {
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::invalid("expected a JSON object"));
    }
    let before = decoder.len();
    let consumed = decoder.decode(line)?;
    if consumed != line.len() || decoder.has_partial_record() || decoder.len() != before + 1 {
        return Err(Error::invalid(
            "expected exactly one JSON object on the line",
        ));
    }
    Ok(())
}

/// Feeds the given (already validated) lines of the file to a fresh decoder.
fn redecode(path: &Path, wanted: &[u64], decoder: &mut Decoder) -> Result<()> {
    let reader = BufReader::new(open(path)?);
    let mut wanted = wanted.iter().peekable();
    for (i, line) in reader.split(b'\n').enumerate() {
        let Some(&&next) = wanted.peek() else { break };
        if next != i as u64 + 1 {
            continue;
        }
        wanted.next();
        let mut line = line.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        line.push(b'\n');
        decode_line(decoder, &line)?;
    }
    Ok(())
}

fn flush_json(
    decoder: &mut Decoder,
    name: &Arc<str>,
    lines: &mut Vec<u64>,
    sink: &mut dyn InputSink,
) -> Result<()> {
    if let Some(batch) = decoder.flush()? {
        let rows = RowNumbers::Lines(std::mem::take(lines));
        sink.batch(InputBatch {
            batch,
            origin: Origin {
                file: Arc::clone(name),
                rows,
            },
        })?;
    }
    lines.clear();
    Ok(())
}

struct CsvLayout<'a> {
    columns: Option<&'a [String]>,
    find_columns_from_header: bool,
    skip_header_rows: usize,
}

fn read_csv(
    path: &Path,
    name: Arc<str>,
    layout: &CsvLayout<'_>,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, open(path)?));
    let csv_error = |e: csv::Error| Error::invalid(format!("{name}: {e}"));
    let mut first = csv::ByteRecord::new();
    for _ in 0..layout.skip_header_rows {
        if !reader.read_byte_record(&mut first).map_err(csv_error)? {
            return Ok(());
        }
    }
    let header: Vec<String> = if layout.find_columns_from_header {
        if !reader.read_byte_record(&mut first).map_err(csv_error)? {
            return Ok(());
        }
        first
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect()
    } else {
        layout.columns.map(<[String]>::to_vec).unwrap_or_default()
    };
    // Positions in the record of the wanted columns the file has.
    let present: Vec<(usize, &String)> = columns
        .iter()
        .filter_map(|c| header.iter().position(|h| h == c).map(|i| (i, c)))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(
        present
            .iter()
            .map(|(_, c)| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let new_builders =
        || -> Vec<StringBuilder> { present.iter().map(|_| StringBuilder::new()).collect() };
    let mut builders = new_builders();
    let mut lines = Vec::with_capacity(BATCH_ROWS);
    // One record, reused: reading it checks its UTF-8 once, and no row allocates.
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                let line = e.position().map_or(0, |p| p.line());
                sink.unreadable(Unreadable {
                    location: format!("{name} line {line}"),
                    reason: "invalid UTF-8".into(),
                })?;
                continue;
            }
            Err(e) => return Err(csv_error(e)),
        }
        for (builder, (i, _)) in builders.iter_mut().zip(&present) {
            builder.append_option(record.get(*i).filter(|v| !v.is_empty()));
        }
        lines.push(record.position().map_or(0, |p| p.line()));
        if lines.len() == BATCH_ROWS {
            emit_csv(&schema, &mut builders, &name, &mut lines, sink)?;
        }
    }
    if !lines.is_empty() {
        emit_csv(&schema, &mut builders, &name, &mut lines, sink)?;
    }
    Ok(())
}

fn emit_csv(
    schema: &SchemaRef,
    builders: &mut [StringBuilder],
    name: &Arc<str>,
    lines: &mut Vec<u64>,
    sink: &mut dyn InputSink,
) -> Result<()> {
    let arrays: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(lines.len()));
    let batch = RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &options)?;
    sink.batch(InputBatch {
        batch,
        origin: Origin {
            file: Arc::clone(name),
            rows: RowNumbers::Lines(std::mem::take(lines)),
        },
    })
}

fn read_parquet(
    path: &Path,
    name: Arc<str>,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| Error::invalid(format!("{name} is not a readable Parquet file: {e}")))?;
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()?;
    let mut first = 1u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::invalid(format!("reading {name}: {e}")))?;
        let rows = batch.num_rows() as u64;
        sink.batch(InputBatch {
            batch,
            origin: Origin {
                file: Arc::clone(&name),
                rows: RowNumbers::FirstRow(first),
            },
        })?;
        first += rows;
    }
    Ok(())
}
