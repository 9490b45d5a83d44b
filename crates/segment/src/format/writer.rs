//! Writing a segment file from an Arrow batch sorted by `__time`.

use std::collections::HashMap;

use ahash::RandomState;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use roaring::RoaringBitmap;

use super::footer::{
    BufferRef, ColumnKind, ColumnLayout, ColumnMeta, ColumnRole, Footer, Stat, primitive_bounds,
};
use super::{ALIGNMENT, FORMAT_VERSION, HEADER_LEN, MAGIC, TAIL_MAGIC, TIME_COLUMN};
use crate::error::{Error, Result};
use crate::id::SegmentId;

/// What was written: enough for a segment descriptor.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub size: u64,
    pub num_rows: u64,
    /// CRC-32 of the whole file, for verifying copies.
    pub crc32: u32,
}

/// Writes `batch` as segment `id` to `path`, atomically (a temporary file renamed into
/// place after it is synced).
///
/// The batch must have a non-null `__time` column of millisecond timestamps, sorted
/// ascending and inside `id.interval`; `roles[i]` gives the role of column `i`. String
/// columns may be `Utf8`, `LargeUtf8`, `Utf8View` or dictionaries of those.
pub fn write_segment(
    path: &Path,
    id: &SegmentId,
    batch: &RecordBatch,
    roles: &[ColumnRole],
) -> Result<WrittenSegment> {
    if roles.len() != batch.num_columns() {
        return Err(Error::invalid(format!(
            "{} roles given for {} columns",
            roles.len(),
            batch.num_columns()
        )));
    }
    check_time_column(id, batch)?;
    let tmp = path.with_extension("tmp");
    let file =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut out = Output {
        inner: BufWriter::with_capacity(1 << 20, file),
        pos: 0,
        crc: crc32fast::Hasher::new(),
    };
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    out.write(MAGIC).map_err(io)?;
    out.write(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    out.write(&[0; 4]).map_err(io)?;
    debug_assert_eq!(out.pos, HEADER_LEN);

    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for ((field, array), role) in schema.fields().iter().zip(batch.columns()).zip(roles) {
        let kind = if field.name() == TIME_COLUMN {
            ColumnKind::Time
        } else {
            ColumnKind::for_data_type(field.data_type()).ok_or_else(|| {
                Error::invalid(format!(
                    "column {:?} has type {}, which segments cannot store",
                    field.name(),
                    field.data_type()
                ))
            })?
        };
        let meta = write_column(&mut out, field.name(), kind, *role, array).map_err(io)?;
        columns.push(meta);
    }

    let footer = Footer {
        format_version: FORMAT_VERSION,
        id: id.clone(),
        num_rows: batch.num_rows() as u64,
        columns,
    };
    let footer_bytes = serde_json::to_vec(&footer).map_err(|e| Error::invalid(e.to_string()))?;
    out.write(&footer_bytes).map_err(io)?;
    out.write(&(footer_bytes.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write(&crc32fast::hash(&footer_bytes).to_le_bytes())
        .map_err(io)?;
    out.write(TAIL_MAGIC).map_err(io)?;

    let size = out.pos;
    let crc32 = out.crc.clone().finalize();
    let file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("renaming {} into place", tmp.display()), e))?;
    Ok(WrittenSegment {
        size,
        num_rows: footer.num_rows,
        crc32,
    })
}

fn check_time_column(id: &SegmentId, batch: &RecordBatch) -> Result<()> {
    if batch.schema().fields().first().map(|f| f.name().as_str()) != Some(TIME_COLUMN) {
        return Err(Error::invalid("a segment's first column must be __time"));
    }
    let time = batch.column(0);
    let DataType::Timestamp(TimeUnit::Millisecond, _) = time.data_type() else {
        return Err(Error::invalid(format!(
            "__time must be a millisecond timestamp, not {}",
            time.data_type()
        )));
    };
    if time.null_count() > 0 {
        return Err(Error::invalid("__time may not be null"));
    }
    let values = time.as_primitive::<TimestampMillisecondType>().values();
    if !values.is_sorted() {
        return Err(Error::invalid("rows must be sorted by __time"));
    }
    if let (Some(first), Some(last)) = (values.first(), values.last())
        && !(id.interval.contains(*first) && id.interval.contains(*last))
    {
        return Err(Error::invalid(format!(
            "rows of segment {id} fall outside its interval {}",
            id.interval
        )));
    }
    Ok(())
}

/// A writer that knows its position and checksums everything it writes.
struct Output {
    inner: BufWriter<File>,
    pos: u64,
    crc: crc32fast::Hasher,
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc.update(bytes);
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let padding = (ALIGNMENT - self.pos % ALIGNMENT) % ALIGNMENT;
        self.write(&[0; ALIGNMENT as usize][..padding as usize])
    }

    /// Writes one aligned buffer, also feeding the column's checksum.
    fn buffer(
        &mut self,
        column_crc: &mut crc32fast::Hasher,
        bytes: &[u8],
    ) -> std::io::Result<BufferRef> {
        let start = self.pos;
        self.pad()?;
        let offset = self.pos;
        column_crc.update(&vec![0; (offset - start) as usize]);
        self.write(bytes)?;
        column_crc.update(bytes);
        Ok(BufferRef {
            offset,
            len: bytes.len() as u64,
        })
    }
}

fn write_column(
    out: &mut Output,
    name: &str,
    kind: ColumnKind,
    role: ColumnRole,
    array: &ArrayRef,
) -> std::io::Result<ColumnMeta> {
    out.pad()?;
    let start = out.pos;
    let mut crc = crc32fast::Hasher::new();
    let (layout, min, max) = match kind {
        ColumnKind::String => write_strings(out, &mut crc, array)?,
        _ => write_primitive(out, &mut crc, kind, array)?,
    };
    Ok(ColumnMeta {
        name: name.to_string(),
        kind,
        role,
        region: BufferRef {
            offset: start,
            len: out.pos - start,
        },
        crc32: crc.finalize(),
        null_count: array.logical_null_count() as u64,
        min,
        max,
        layout,
    })
}

type Written = (ColumnLayout, Option<Stat>, Option<Stat>);

fn write_validity(
    out: &mut Output,
    crc: &mut crc32fast::Hasher,
    array: &dyn Array,
) -> std::io::Result<Option<BufferRef>> {
    match array.logical_nulls() {
        Some(nulls) if nulls.null_count() > 0 => {
            // Re-pack from bit 0: the source may be a slice with a bit offset.
            let mut bits = BooleanBufferBuilder::new(nulls.len());
            bits.append_buffer(nulls.inner());
            out.buffer(crc, bits.as_slice()).map(Some)
        }
        _ => Ok(None),
    }
}

fn write_primitive(
    out: &mut Output,
    crc: &mut crc32fast::Hasher,
    kind: ColumnKind,
    array: &ArrayRef,
) -> std::io::Result<Written> {
    let bytes: &[u8] = match kind {
        ColumnKind::Time | ColumnKind::Timestamp => {
            as_bytes(array.as_primitive::<TimestampMillisecondType>().values())
        }
        ColumnKind::Long => as_bytes(array.as_primitive::<Int64Type>().values()),
        ColumnKind::Date => as_bytes(array.as_primitive::<Date32Type>().values()),
        ColumnKind::Double => as_bytes(array.as_primitive::<Float64Type>().values()),
        ColumnKind::Float => as_bytes(array.as_primitive::<Float32Type>().values()),
        ColumnKind::String => unreachable!("strings are written by write_strings"),
    };
    let (min, max) = primitive_bounds(kind, array.as_ref());
    let values = out.buffer(crc, bytes)?;
    let validity = write_validity(out, crc, array)?;
    Ok((ColumnLayout::Primitive { values, validity }, min, max))
}

fn as_bytes<T: arrow::datatypes::ArrowNativeType>(values: &[T]) -> &[u8] {
    // Native types are plain little-endian numbers on every platform Grove supports.
    let len = std::mem::size_of_val(values);
    // SAFETY: `values` is a valid, initialised slice of plain-old-data numbers; viewing
    // its memory as `len` bytes reads exactly the same allocation.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), len) }
}

fn write_strings(
    out: &mut Output,
    crc: &mut crc32fast::Hasher,
    array: &ArrayRef,
) -> std::io::Result<Written> {
    let strings = cast(array, &DataType::Utf8).map_err(std::io::Error::other)?;
    let strings: &StringArray = strings.as_string::<i32>();

    // Sorted dictionary of the distinct values.
    let mut ids: HashMap<&str, u32, RandomState> = HashMap::default();
    for value in strings.iter().flatten() {
        let next = ids.len() as u32;
        ids.entry(value).or_insert(next);
    }
    let mut dict: Vec<&str> = ids.keys().copied().collect();
    dict.sort_unstable();
    for (sorted_id, value) in dict.iter().enumerate() {
        ids.insert(value, sorted_id as u32);
    }

    // Keys (0 for nulls), and for the bitmaps each value's rows, grouped by value with
    // a counting sort: slot `dict.len()` collects the null rows.
    let null_slot = dict.len();
    let slots: Vec<usize> = strings
        .iter()
        .map(|v| v.map_or(null_slot, |v| ids[v] as usize))
        .collect();
    let keys: Vec<i32> = slots
        .iter()
        .map(|&slot| if slot == null_slot { 0 } else { slot as i32 })
        .collect();
    let mut starts = vec![0usize; null_slot + 2];
    for &slot in &slots {
        starts[slot + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut rows = vec![0u32; slots.len()];
    for (row, &slot) in slots.iter().enumerate() {
        rows[next[slot]] = row as u32;
        next[slot] += 1;
    }

    let mut dict_offsets = Vec::with_capacity(dict.len() + 1);
    let mut dict_data = Vec::new();
    dict_offsets.push(0i32);
    for value in &dict {
        dict_data.extend_from_slice(value.as_bytes());
        dict_offsets.push(i32::try_from(dict_data.len()).map_err(std::io::Error::other)?);
    }

    let mut bitmap_offsets = Vec::with_capacity(null_slot + 2);
    let mut bitmaps = Vec::new();
    bitmap_offsets.push(0u64);
    for slot in 0..=null_slot {
        let of_slot = rows[starts[slot]..starts[slot + 1]].iter().copied();
        let bitmap = RoaringBitmap::from_sorted_iter(of_slot).map_err(std::io::Error::other)?;
        bitmap.serialize_into(&mut bitmaps)?;
        bitmap_offsets.push(bitmaps.len() as u64);
    }

    let min = dict.first().map(|v| Stat::Str(v.to_string()));
    let max = dict.last().map(|v| Stat::Str(v.to_string()));
    let layout = ColumnLayout::Dictionary {
        dict_len: dict.len() as u32,
        dict_offsets: out.buffer(crc, as_bytes(&dict_offsets))?,
        dict_data: out.buffer(crc, &dict_data)?,
        keys: out.buffer(crc, as_bytes(&keys))?,
        validity: write_validity(out, crc, strings)?,
        bitmap_offsets: out.buffer(crc, as_bytes(&bitmap_offsets))?,
        bitmaps: out.buffer(crc, &bitmaps)?,
    };
    Ok((layout, min, max))
}
