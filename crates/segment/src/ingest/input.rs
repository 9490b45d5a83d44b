//! Reading input files (newline-delimited JSON, CSV, Parquet) into Arrow batches that
//! remember where each row came from, so that a bad row can be named by file and line.
//! Text inputs whose name ends in `.gz` or `.zst` are decompressed as they are read.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
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
    /// Messages of a stream: each row's offset in its partition.
    Offsets(Vec<u64>),
    FirstRow(u64),
}

impl RowNumbers {
    /// Numbered rows, `lines` counted in `unit`.
    fn numbered(unit: Unit, numbers: Vec<u64>) -> RowNumbers {
        match unit {
            Unit::Line => RowNumbers::Lines(numbers),
            Unit::Offset => RowNumbers::Offsets(numbers),
        }
    }
}

/// What the numbers of text rows count: lines of a file, or offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Line,
    Offset,
}

impl Unit {
    fn word(self) -> &'static str {
        match self {
            Unit::Line => "line",
            Unit::Offset => "offset",
        }
    }
}

impl Origin {
    /// "file line N" / "partition offset N" / "file row N" for row `i` of the batch.
    pub fn describe(&self, i: usize) -> String {
        match &self.rows {
            RowNumbers::Lines(lines) => {
                format!("{} line {}", self.file, lines.get(i).copied().unwrap_or(0))
            }
            RowNumbers::Offsets(offsets) => {
                format!(
                    "{} offset {}",
                    self.file,
                    offsets.get(i).copied().unwrap_or(0)
                )
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

/// One input to read: a local file, and the name its rows are reported under (its
/// path, or the URI it was fetched from). The name says whether it is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub name: String,
}

impl InputFile {
    /// A local file, named by its path.
    pub fn local(path: &Path) -> InputFile {
        InputFile {
            path: path.to_path_buf(),
            name: path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// As Druid decides: by the name's extension (a URI's query left out).
fn compression(name: &str) -> Compression {
    let name = name.split(['?', '#']).next().unwrap_or(name);
    if name.ends_with(".gz") {
        Compression::Gzip
    } else if name.ends_with(".zst") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The input's bytes, decompressed if its name says so.
fn text_reader(input: &InputFile) -> Result<Box<dyn Read>> {
    let file = open(&input.path)?;
    Ok(match compression(&input.name) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| Error::io(format!("opening {} as zstd", input.name), e))?,
        ),
    })
}

/// Reads `input`, handing `sink` each batch of rows and each row that cannot be read.
/// `columns` names the input columns wanted.
pub fn read_file(
    input: &InputFile,
    format: &InputFormat,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let name: Arc<str> = input.name.as_str().into();
    match format {
        InputFormat::Json => read_json(text_reader(input)?, name, columns, sink),
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
            read_csv(text_reader(input)?, name, &layout, columns, sink)
        }
        InputFormat::Parquet if compression(&input.name) != Compression::None => {
            Err(Error::invalid(format!(
                "{name}: compressed Parquet files are not read; Parquet compresses its own pages"
            )))
        }
        InputFormat::Parquet => read_parquet(&input.path, name, columns, sink),
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(format!("opening input {}", path.display()), e))
}

/// How much of a JSON input is read at once.
const JSON_READ_BYTES: usize = 8 << 20;

/// Reads newline-delimited JSON straight from large reads, a block of up to
/// [`BATCH_ROWS`] lines at a time: a block decodes in one call, and only a block that
/// fails is read again line by line, so that each bad line is named and skipped while
/// the others are kept.
fn read_json(
    mut input: Box<dyn Read>,
    name: Arc<str>,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let schema = json_schema(columns, sink);
    let new_decoder = || json_decoder(&schema);
    let json = JsonBlocks {
        name: &name,
        unit: Unit::Line,
        schema: &schema,
        new_decoder: &new_decoder,
    };
    let mut data: Vec<u8> = Vec::with_capacity(JSON_READ_BYTES);
    let mut number = 0u64;
    loop {
        let kept = data.len();
        data.resize(kept + JSON_READ_BYTES, 0);
        let read = loop {
            match input.read(&mut data[kept..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {name}"), e)),
            }
        };
        data.truncate(kept + read);
        let end = read == 0;
        // The complete lines: up to the last newline, or everything at the end.
        let complete = if end {
            data.len()
        } else {
            match memchr::memrchr(b'\n', &data) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        number = json.decode_lines(&data[..complete], number, sink)?;
        data.drain(..complete);
        if end {
            return Ok(());
        }
    }
}

/// Reads messages of a stream partition named `source` (offset and value), each value
/// one JSON object, as [`read_file`] reads lines: rows are numbered by offset, and a bad
/// message is named by its offset, in offset order. An empty message (a Kafka
/// tombstone) is unreadable too.
pub fn read_json_messages(
    messages: &[(u64, Option<&[u8]>)],
    source: &str,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let name: Arc<str> = source.into();
    let schema = json_schema(columns, sink);
    let new_decoder = || json_decoder(&schema);
    let json = JsonBlocks {
        name: &name,
        unit: Unit::Offset,
        schema: &schema,
        new_decoder: &new_decoder,
    };
    for block in messages.chunks(BATCH_ROWS) {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(block.len());
        let mut offsets = Vec::with_capacity(block.len());
        for (offset, value) in block {
            let value = value.unwrap_or_default();
            // A message is one object; line breaks in it are whitespace to JSON (they
            // cannot stand inside strings), and the blocks are read a line a message.
            bytes.extend(
                value
                    .iter()
                    .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }),
            );
            bytes.push(b'\n');
            ends.push(bytes.len());
            offsets.push(*offset);
        }
        json.decode(&bytes, &ends, offsets, sink)?;
    }
    Ok(())
}

/// The columns JSON rows are read into, typed as the sink asks.
fn json_schema(columns: &[String], sink: &dyn InputSink) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c, sink.read_type(c), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// arrow-json's decoder for `schema`, lenient as Druid is: numbers and booleans read
/// into text columns as text, values of the wrong type as nulls.
fn json_decoder(schema: &SchemaRef) -> Result<Decoder> {
    Ok(ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(BATCH_ROWS)
        .with_coerce_primitive(true)
        .with_ignore_type_conflicts(true)
        .build_decoder()?)
}

/// Decodes newline-delimited JSON of one input in blocks.
struct JsonBlocks<'a> {
    name: &'a Arc<str>,
    unit: Unit,
    schema: &'a SchemaRef,
    new_decoder: &'a dyn Fn() -> Result<Decoder>,
}

impl JsonBlocks<'_> {
    /// Decodes the complete lines in `text`, whose first line follows line `number`;
    /// returns the number of its last line.
    fn decode_lines(&self, text: &[u8], mut number: u64, sink: &mut dyn InputSink) -> Result<u64> {
        let mut block_start = 0;
        let mut ends: Vec<usize> = Vec::with_capacity(BATCH_ROWS);
        let mut lines: Vec<u64> = Vec::with_capacity(BATCH_ROWS);
        let mut line_start = 0;
        while line_start < text.len() {
            let line_end = memchr::memchr(b'\n', &text[line_start..])
                .map_or(text.len(), |i| line_start + i + 1);
            number += 1;
            let line = &text[line_start..line_end];
            let blank = line.first() != Some(&b'{') && line.iter().all(u8::is_ascii_whitespace);
            if !blank {
                ends.push(line_end - block_start);
                lines.push(number);
            }
            line_start = line_end;
            if lines.len() == BATCH_ROWS {
                self.decode(
                    &text[block_start..line_end],
                    &ends,
                    std::mem::take(&mut lines),
                    sink,
                )?;
                ends.clear();
                block_start = line_end;
            }
        }
        self.decode(&text[block_start..], &ends, lines, sink)?;
        Ok(number)
    }

    /// Decodes one block of lines (ending at `ends` in `bytes`, numbered `lines`) into
    /// one batch for `sink`.
    fn decode(
        &self,
        bytes: &[u8],
        ends: &[usize],
        lines: Vec<u64>,
        sink: &mut dyn InputSink,
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let whole = match super::flat_json::decode(bytes, ends, self.schema) {
            Some(batch) => Some(batch),
            None => self.decode_whole(bytes, lines.len()),
        };
        let (batch, lines) = match whole {
            Some(batch) => (Some(batch), lines),
            None => self.decode_one_by_one(bytes, ends, &lines, sink)?,
        };
        if let Some(batch) = batch {
            sink.batch(InputBatch {
                batch,
                origin: Origin {
                    file: Arc::clone(self.name),
                    rows: RowNumbers::numbered(self.unit, lines),
                },
            })?;
        }
        Ok(())
    }

    /// The block decoded by arrow-json in one call, if that gives exactly one row per
    /// line.
    fn decode_whole(&self, bytes: &[u8], lines: usize) -> Option<RecordBatch> {
        let mut decoder = (self.new_decoder)().ok()?;
        let consumed = decoder.decode(bytes).ok()?;
        let one_per_line =
            consumed == bytes.len() && !decoder.has_partial_record() && decoder.len() == lines;
        if one_per_line {
            decoder.flush().ok().flatten()
        } else {
            None
        }
    }

    /// The slow way, for a block that failed: each line is tried alone first; good
    /// lines are decoded together, bad ones reported in the order of the file.
    fn decode_one_by_one(
        &self,
        bytes: &[u8],
        ends: &[usize],
        lines: &[u64],
        sink: &mut dyn InputSink,
    ) -> Result<(Option<RecordBatch>, Vec<u64>)> {
        let mut decoder = (self.new_decoder)()?;
        let mut trial = (self.new_decoder)()?;
        let mut good = Vec::with_capacity(lines.len());
        let mut start = 0;
        for (&end, &number) in ends.iter().zip(lines) {
            // The line, with any blank lines before it (whitespace to the decoder).
            let line = &bytes[start..end];
            start = end;
            match decode_line(&mut trial, line).and_then(|()| Ok(trial.flush()?)) {
                Ok(_) => {
                    decode_line(&mut decoder, line)?;
                    good.push(number);
                }
                Err(e) => {
                    trial = (self.new_decoder)()?;
                    sink.unreadable(Unreadable {
                        location: format!("{} {} {number}", self.name, self.unit.word()),
                        reason: format!("malformed JSON: {e}"),
                    })?;
                }
            }
        }
        Ok((decoder.flush()?, good))
    }
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

struct CsvLayout<'a> {
    columns: Option<&'a [String]>,
    find_columns_from_header: bool,
    skip_header_rows: usize,
}

fn read_csv(
    input: Box<dyn Read>,
    name: Arc<str>,
    layout: &CsvLayout<'_>,
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, input));
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
    let mut rows = CsvRows::new(&name, Unit::Line, &header, columns);
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
        rows.push(&record, record.position().map_or(0, |p| p.line()), sink)?;
    }
    rows.flush(sink)
}

/// Reads messages of a stream partition named `source`, each value one or more CSV
/// records of `header`'s columns, rows numbered by the offset of their message.
pub fn read_csv_messages(
    messages: &[(u64, Option<&[u8]>)],
    source: &str,
    header: &[String],
    columns: &[String],
    sink: &mut dyn InputSink,
) -> Result<()> {
    let name: Arc<str> = source.into();
    let mut rows = CsvRows::new(&name, Unit::Offset, header, columns);
    let mut record = csv::StringRecord::new();
    for (offset, value) in messages {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(value.unwrap_or_default());
        let mut any = false;
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    any = true;
                    rows.push(&record, *offset, sink)?;
                }
                Err(e) => {
                    any = true;
                    sink.unreadable(Unreadable {
                        location: format!("{name} offset {offset}"),
                        reason: format!("malformed CSV: {e}"),
                    })?;
                    break;
                }
            }
        }
        if !any {
            sink.unreadable(Unreadable {
                location: format!("{name} offset {offset}"),
                reason: "empty message".into(),
            })?;
        }
    }
    rows.flush(sink)
}

/// CSV records gathered into batches of the wanted columns, as text.
struct CsvRows {
    name: Arc<str>,
    unit: Unit,
    schema: SchemaRef,
    /// Where each wanted column the input has stands in a record.
    present: Vec<usize>,
    builders: Vec<StringBuilder>,
    numbers: Vec<u64>,
}

impl CsvRows {
    fn new(name: &Arc<str>, unit: Unit, header: &[String], columns: &[String]) -> CsvRows {
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
        CsvRows {
            name: Arc::clone(name),
            unit,
            schema,
            builders: present.iter().map(|_| StringBuilder::new()).collect(),
            present: present.into_iter().map(|(i, _)| i).collect(),
            numbers: Vec::with_capacity(BATCH_ROWS),
        }
    }

    fn push(
        &mut self,
        record: &csv::StringRecord,
        number: u64,
        sink: &mut dyn InputSink,
    ) -> Result<()> {
        for (builder, i) in self.builders.iter_mut().zip(&self.present) {
            builder.append_option(record.get(*i).filter(|v| !v.is_empty()));
        }
        self.numbers.push(number);
        if self.numbers.len() == BATCH_ROWS {
            self.flush(sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut dyn InputSink) -> Result<()> {
        if self.numbers.is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(self.numbers.len()));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options)?;
        let numbers = std::mem::take(&mut self.numbers);
        sink.batch(InputBatch {
            batch,
            origin: Origin {
                file: Arc::clone(&self.name),
                rows: RowNumbers::numbered(self.unit, numbers),
            },
        })
    }
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

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    use super::*;

    /// Keeps what a reader hands on: each row's place, `k`, and `v` as a number.
    #[derive(Default)]
    struct Collected {
        rows: Vec<(String, Option<String>, Option<i64>)>,
        unreadable: Vec<(String, String)>,
    }

    impl InputSink for Collected {
        fn batch(&mut self, batch: InputBatch) -> Result<()> {
            let k = batch
                .batch
                .column_by_name("k")
                .unwrap()
                .as_string::<i32>()
                .clone();
            // CSV reads every column as text; JSON reads `v` as a number.
            let v =
                arrow::compute::cast(batch.batch.column_by_name("v").unwrap(), &DataType::Int64)?;
            let v: Int64Array = v.as_primitive::<Int64Type>().clone();
            for i in 0..batch.batch.num_rows() {
                let key = (!k.is_null(i)).then(|| k.value(i).to_string());
                let value = (!v.is_null(i)).then(|| v.value(i));
                self.rows.push((batch.origin.describe(i), key, value));
            }
            Ok(())
        }

        fn unreadable(&mut self, row: Unreadable) -> Result<()> {
            self.unreadable.push((row.location, row.reason));
            Ok(())
        }

        fn read_type(&self, name: &str) -> DataType {
            if name == "v" {
                DataType::Int64
            } else {
                DataType::Utf8
            }
        }
    }

    #[test]
    fn json_messages_are_rows_numbered_by_offset_and_bad_ones_are_named() {
        let pretty = b"{\n  \"k\": \"c\",\n  \"v\": 3\n}".as_slice();
        let messages: Vec<(u64, Option<&[u8]>)> = vec![
            (100, Some(br#"{"k":"a","v":1}"#.as_slice())),
            (101, Some(br#"{"k":"b"}"#.as_slice())),
            (102, Some(b"not json".as_slice())),
            (103, Some(pretty)),
            (104, None),
            (105, Some(br#"{"v":5,"other":true}"#.as_slice())),
        ];
        let mut sink = Collected::default();
        let columns = ["k".to_string(), "v".to_string()];
        read_json_messages(&messages, "clicks/0", &columns, &mut sink).unwrap();
        assert_eq!(
            sink.rows,
            vec![
                ("clicks/0 offset 100".into(), Some("a".into()), Some(1)),
                ("clicks/0 offset 101".into(), Some("b".into()), None),
                ("clicks/0 offset 103".into(), Some("c".into()), Some(3)),
                ("clicks/0 offset 105".into(), None, Some(5)),
            ]
        );
        let locations: Vec<&str> = sink.unreadable.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            locations,
            vec!["clicks/0 offset 102", "clicks/0 offset 104"]
        );
        for (_, reason) in &sink.unreadable {
            assert!(reason.contains("malformed JSON"), "{reason}");
        }
    }

    #[test]
    fn csv_messages_are_rows_numbered_by_the_offset_of_their_message() {
        let messages: Vec<(u64, Option<&[u8]>)> = vec![
            (7, Some(b"a,1".as_slice())),
            (8, Some(b"b,2\nc,3".as_slice())),
            (9, None),
            (10, Some(b"\xff,5".as_slice())),
            (11, Some(b",6".as_slice())),
        ];
        let mut sink = Collected::default();
        let header = ["k".to_string(), "v".to_string()];
        read_csv_messages(&messages, "views/3", &header, &header, &mut sink).unwrap();
        assert_eq!(
            sink.rows,
            vec![
                ("views/3 offset 7".into(), Some("a".into()), Some(1)),
                ("views/3 offset 8".into(), Some("b".into()), Some(2)),
                ("views/3 offset 8".into(), Some("c".into()), Some(3)),
                ("views/3 offset 11".into(), None, Some(6)),
            ]
        );
        let unreadable: Vec<(&str, &str)> = sink
            .unreadable
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");
        assert_eq!(unreadable[0], ("views/3 offset 9", "empty message"));
        assert_eq!(unreadable[1].0, "views/3 offset 10");
        assert!(
            unreadable[1].1.starts_with("malformed CSV"),
            "{unreadable:?}"
        );
    }
}
