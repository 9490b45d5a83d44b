//! Opening a segment file: memory-mapped, columns viewed in place as Arrow arrays.
//!
//! Every byte of the file is untrusted. Opening checks the header, trailer and footer
//! (its own checksum, and that every buffer lies inside the file, aligned). A column
//! is checked the first time it is used: its CRC-32, then its structure (lengths,
//! offsets, dictionary keys, time order). Only then are its buffers handed to Arrow.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, DictionaryArray, PrimitiveArray, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef,
    TimestampMillisecondType,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use roaring::RoaringBitmap;

use super::footer::{
    BufferRef, ColumnKind, ColumnLayout, ColumnMeta, Footer, Stat, primitive_bounds,
};
use super::{ALIGNMENT, FORMAT_VERSION, HEADER_LEN, MAGIC, TAIL_MAGIC, TIME_COLUMN, TRAILER_LEN};
use crate::error::{Error, Result};
use crate::id::{Interval, SegmentId};

/// An open, memory-mapped segment. Cheap to share; columns are decoded once.
pub struct Segment {
    path: PathBuf,
    footer: Footer,
    schema: SchemaRef,
    /// The whole file, as one Arrow buffer over the memory map.
    file: Buffer,
    columns: Vec<OnceLock<Result<LoadedColumn, String>>>,
}

#[derive(Clone)]
struct LoadedColumn {
    array: ArrayRef,
    index: Option<Arc<StringIndex>>,
}

/// The bitmap index of a string column: its sorted dictionary and, per value, the
/// rows holding it.
pub struct StringIndex {
    dictionary: StringArray,
    bitmap_offsets: ScalarBuffer<u64>,
    bitmaps: Buffer,
    path: PathBuf,
    column: String,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("id", &self.footer.id)
            .finish()
    }
}

impl Segment {
    /// Opens and memory-maps a segment file, checking its header, trailer and footer.
    pub fn open(path: &Path) -> Result<Arc<Segment>> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(corrupt(format!(
                "truncated: {len} bytes is shorter than a header and trailer"
            )));
        }
        // SAFETY: segment files are immutable once written (they are created under a
        // temporary name and renamed into place, and never modified afterwards), so the
        // mapped memory does not change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io(format!("memory-mapping {}", path.display()), e))?;
        let footer = read_footer(&map).map_err(corrupt)?;
        let ptr =
            NonNull::new(map.as_ptr().cast_mut()).ok_or_else(|| corrupt("empty map".into()))?;
        let map_len = map.len();
        // SAFETY: `ptr` points to `map_len` readable bytes owned by `map`, which the
        // buffer keeps alive (as its owner) for as long as any slice of it exists.
        let file = unsafe { Buffer::from_custom_allocation(ptr, map_len, Arc::new(map)) };
        let schema = Arc::new(footer.schema());
        let columns = footer.columns.iter().map(|_| OnceLock::new()).collect();
        Ok(Arc::new(Segment {
            path: path.to_path_buf(),
            footer,
            schema,
            file,
            columns,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> &SegmentId {
        &self.footer.id
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn interval(&self) -> Interval {
        self.footer.id.interval
    }

    pub fn num_rows(&self) -> usize {
        self.footer.num_rows as usize
    }

    pub fn size(&self) -> usize {
        self.file.len()
    }

    /// The segment's own schema: `__time` first, then its columns in file order.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Checks every column (checksum and structure); what a download or a
    /// `verify` command runs.
    pub fn verify(&self) -> Result<()> {
        (0..self.columns.len()).try_for_each(|i| self.load(i).map(|_| ()))
    }

    /// The whole column `index` as an Arrow array, checked on first use.
    pub fn column(&self, index: usize) -> Result<ArrayRef> {
        Ok(self.load(index)?.array)
    }

    /// The bitmap index of column `index`, if it is a string column.
    pub fn string_index(&self, index: usize) -> Result<Option<Arc<StringIndex>>> {
        Ok(self.load(index)?.index)
    }

    /// The rows whose `__time` falls in `interval`: a binary search, as rows are
    /// sorted by time.
    pub fn rows_in(&self, interval: &Interval) -> Result<Range<usize>> {
        let time = self.column(0)?;
        let time = time
            .as_any()
            .downcast_ref::<PrimitiveArray<TimestampMillisecondType>>()
            .ok_or_else(|| self.corrupt("__time is not a timestamp column".into()))?;
        let values = time.values();
        let start = values.partition_point(|t| *t < interval.start);
        let end = values.partition_point(|t| *t < interval.end);
        Ok(start..end.max(start))
    }

    /// Columns `projection` over `rows`, sharing memory with the file.
    pub fn read(&self, projection: &[usize], rows: Range<usize>) -> Result<RecordBatch> {
        let schema = Arc::new(self.schema.project(projection)?);
        let arrays = projection
            .iter()
            .map(|&i| Ok(self.column(i)?.slice(rows.start, rows.len())))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn load(&self, index: usize) -> Result<LoadedColumn> {
        let slot = self
            .columns
            .get(index)
            .ok_or_else(|| Error::invalid(format!("segment has no column {index}")))?;
        slot.get_or_init(|| self.decode(index))
            .clone()
            .map_err(|reason| self.corrupt(reason))
    }

    fn decode(&self, index: usize) -> Result<LoadedColumn, String> {
        let meta = &self.footer.columns[index];
        let region = self.slice(meta.region);
        if crc32fast::hash(region.as_slice()) != meta.crc32 {
            return Err(format!("checksum mismatch in column {:?}", meta.name));
        }
        let loaded = match (&meta.layout, meta.kind) {
            (ColumnLayout::Primitive { .. }, ColumnKind::String) => {
                return Err(format!(
                    "string column {:?} has a primitive layout",
                    meta.name
                ));
            }
            (ColumnLayout::Primitive { values, validity }, _) => {
                self.decode_primitive(meta, *values, *validity)?
            }
            (ColumnLayout::Dictionary { .. }, ColumnKind::String) => {
                self.decode_dictionary(meta)?
            }
            (ColumnLayout::Dictionary { .. }, _) => {
                return Err(format!("column {:?} has a dictionary layout", meta.name));
            }
        };
        if loaded.array.null_count() as u64 != meta.null_count {
            return Err(format!(
                "column {:?} has {} nulls, its footer says {}",
                meta.name,
                loaded.array.null_count(),
                meta.null_count
            ));
        }
        Ok(loaded)
    }

    /// A fixed-width column: values and validity viewed in place, then checked.
    fn decode_primitive(
        &self,
        meta: &ColumnMeta,
        values: BufferRef,
        validity: Option<BufferRef>,
    ) -> Result<LoadedColumn, String> {
        let nulls = self.validity(meta, validity)?;
        let array = match meta.kind {
            ColumnKind::Time => {
                let a = self.primitive::<TimestampMillisecondType>(meta, values, nulls)?;
                self.check_time(&a)?;
                Arc::new(a.with_timezone("UTC")) as ArrayRef
            }
            ColumnKind::Timestamp => Arc::new(
                self.primitive::<TimestampMillisecondType>(meta, values, nulls)?
                    .with_timezone("UTC"),
            ),
            ColumnKind::Long => Arc::new(self.primitive::<Int64Type>(meta, values, nulls)?),
            ColumnKind::Double => Arc::new(self.primitive::<Float64Type>(meta, values, nulls)?),
            ColumnKind::Float => Arc::new(self.primitive::<Float32Type>(meta, values, nulls)?),
            ColumnKind::Date => Arc::new(self.primitive::<Date32Type>(meta, values, nulls)?),
            ColumnKind::String => {
                return Err(format!(
                    "string column {:?} has a primitive layout",
                    meta.name
                ));
            }
        };
        if primitive_bounds(meta.kind, array.as_ref()) != (meta.min.clone(), meta.max.clone()) {
            return Err(format!(
                "column {:?}: its min/max do not match its values",
                meta.name
            ));
        }
        Ok(LoadedColumn { array, index: None })
    }

    /// A string column: its dictionary, keys and bitmap index, each checked against
    /// the others.
    fn decode_dictionary(&self, meta: &ColumnMeta) -> Result<LoadedColumn, String> {
        let ColumnLayout::Dictionary {
            dict_len,
            dict_offsets,
            dict_data,
            keys,
            validity,
            bitmap_offsets,
            bitmaps,
        } = &meta.layout
        else {
            return Err(format!("column {:?} has no dictionary layout", meta.name));
        };
        let n = self.num_rows();
        let dict_len = *dict_len as usize;
        let dictionary = self.dictionary(meta, dict_len, *dict_offsets, *dict_data)?;
        let nulls = self.validity(meta, *validity)?;
        let keys = self.primitive::<Int32Type>(meta, *keys, nulls)?;
        let array = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(dictionary.clone()))
            .map_err(|e| format!("column {:?}: {e}", meta.name))?;
        let bitmap_offsets = self.typed::<u64>(meta, *bitmap_offsets, dict_len + 2)?;
        let bitmaps = self.slice(*bitmaps);
        let in_order = bitmap_offsets.first() == Some(&0)
            && bitmap_offsets.windows(2).all(|w| w[0] <= w[1])
            && bitmap_offsets.last() == Some(&(bitmaps.len() as u64));
        if !in_order {
            return Err(format!(
                "column {:?}: bitmap offsets are out of order",
                meta.name
            ));
        }
        let bounds = |i: Option<usize>| i.map(|i| Stat::Str(dictionary.value(i).to_string()));
        let last = dictionary.len().checked_sub(1);
        if (bounds(last.map(|_| 0)), bounds(last)) != (meta.min.clone(), meta.max.clone()) {
            return Err(format!(
                "column {:?}: its min/max do not match its dictionary",
                meta.name
            ));
        }
        let index = StringIndex {
            dictionary,
            bitmap_offsets,
            bitmaps,
            path: self.path.clone(),
            column: meta.name.clone(),
        };
        check_bitmaps(&index, array.keys(), n)
            .map_err(|e| format!("column {:?}: {e}", meta.name))?;
        Ok(LoadedColumn {
            array: Arc::new(array),
            index: Some(Arc::new(index)),
        })
    }

    /// A buffer the footer points at. Bounds and alignment were checked when the
    /// footer was read.
    fn slice(&self, at: BufferRef) -> Buffer {
        self.file
            .slice_with_length(at.offset as usize, at.len as usize)
    }

    fn typed<T: arrow::datatypes::ArrowNativeType>(
        &self,
        meta: &ColumnMeta,
        at: BufferRef,
        count: usize,
    ) -> Result<ScalarBuffer<T>, String> {
        let want = count.checked_mul(std::mem::size_of::<T>());
        if want != Some(at.len as usize) {
            return Err(format!(
                "column {:?}: a buffer holds {} bytes, {count} values need {}",
                meta.name,
                at.len,
                want.map_or("more".into(), |w| w.to_string())
            ));
        }
        Ok(ScalarBuffer::new(self.slice(at), 0, count))
    }

    fn primitive<T: ArrowPrimitiveType>(
        &self,
        meta: &ColumnMeta,
        values: BufferRef,
        nulls: Option<NullBuffer>,
    ) -> Result<PrimitiveArray<T>, String> {
        let values = self.typed::<T::Native>(meta, values, self.num_rows())?;
        PrimitiveArray::<T>::try_new(values, nulls)
            .map_err(|e| format!("column {:?}: {e}", meta.name))
    }

    fn validity(
        &self,
        meta: &ColumnMeta,
        at: Option<BufferRef>,
    ) -> Result<Option<NullBuffer>, String> {
        let Some(at) = at else { return Ok(None) };
        let n = self.num_rows();
        if (at.len as usize) < n.div_ceil(8) {
            return Err(format!(
                "column {:?}: validity bitmap is too short",
                meta.name
            ));
        }
        Ok(Some(NullBuffer::new(BooleanBuffer::new(
            self.slice(at),
            0,
            n,
        ))))
    }

    fn dictionary(
        &self,
        meta: &ColumnMeta,
        dict_len: usize,
        offsets: BufferRef,
        data: BufferRef,
    ) -> Result<StringArray, String> {
        let offsets = self.typed::<i32>(meta, offsets, dict_len + 1)?;
        let data = self.slice(data);
        let in_order = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets
                .last()
                .is_some_and(|&last| last as usize <= data.len());
        if !in_order {
            return Err(format!(
                "column {:?}: dictionary offsets are out of order",
                meta.name
            ));
        }
        let dictionary = StringArray::try_new(OffsetBuffer::new(offsets), data, None)
            .map_err(|e| format!("column {:?}: {e}", meta.name))?;
        let sorted = (1..dictionary.len()).all(|i| dictionary.value(i - 1) < dictionary.value(i));
        if !sorted {
            return Err(format!("column {:?}: dictionary is not sorted", meta.name));
        }
        Ok(dictionary)
    }

    fn check_time(&self, time: &PrimitiveArray<TimestampMillisecondType>) -> Result<(), String> {
        if time.null_count() > 0 {
            return Err("__time has nulls".into());
        }
        let values = time.values();
        if !values.is_sorted() {
            return Err("__time is not sorted".into());
        }
        let interval = self.interval();
        if let (Some(first), Some(last)) = (values.first(), values.last())
            && !(interval.contains(*first) && interval.contains(*last))
        {
            return Err(format!(
                "__time values fall outside the interval {interval}"
            ));
        }
        Ok(())
    }
}

impl StringIndex {
    /// The sorted distinct values of the column.
    pub fn dictionary(&self) -> &StringArray {
        &self.dictionary
    }

    /// The id of `value` in the dictionary, found by binary search.
    pub fn lookup(&self, value: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.dictionary.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.dictionary.value(mid).cmp(value) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// The rows holding dictionary value `id`.
    pub fn rows_of(&self, id: u32) -> Result<RoaringBitmap> {
        self.bitmap(id as usize)
    }

    /// The rows where the column is null.
    pub fn null_rows(&self) -> Result<RoaringBitmap> {
        self.bitmap(self.dictionary.len())
    }

    fn bitmap(&self, slot: usize) -> Result<RoaringBitmap> {
        let (Some(&start), Some(&end)) = (
            self.bitmap_offsets.get(slot),
            self.bitmap_offsets.get(slot + 1),
        ) else {
            return Err(Error::invalid(format!(
                "no bitmap {slot} in column {:?}",
                self.column
            )));
        };
        let bytes = &self.bitmaps.as_slice()[start as usize..end as usize];
        RoaringBitmap::deserialize_from(bytes).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            reason: format!("bitmap {slot} of column {:?}: {e}", self.column),
        })
    }
}

/// Checks that the bitmap of each dictionary value holds exactly the rows whose key is
/// that value, and the NULL bitmap exactly the NULL rows: filters answered from the
/// index then agree with the column.
fn check_bitmaps(
    index: &StringIndex,
    keys: &PrimitiveArray<Int32Type>,
    rows: usize,
) -> Result<(), String> {
    let mut covered = 0u64;
    for slot in 0..=index.dictionary.len() {
        let bitmap = index.bitmap(slot).map_err(|e| e.to_string())?;
        let is_null_slot = slot == index.dictionary.len();
        let consistent = bitmap.iter().all(|row| {
            let row = row as usize;
            row < rows
                && if is_null_slot {
                    keys.is_null(row)
                } else {
                    keys.is_valid(row) && keys.value(row) as usize == slot
                }
        });
        if !consistent {
            return Err(format!("bitmap {slot} does not match the column's values"));
        }
        covered += bitmap.len();
    }
    if covered != rows as u64 {
        return Err("the bitmaps do not cover every row once".into());
    }
    Ok(())
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

fn read_footer(file: &[u8]) -> Result<Footer, String> {
    let len = file.len();
    if file.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err("wrong magic: not a Grove segment file".into());
    }
    let version = read_u32(file, 8).ok_or("truncated header")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        ));
    }
    if file.get(len - 4..) != Some(TAIL_MAGIC.as_slice()) {
        return Err("truncated: the trailer is missing".into());
    }
    let trailer = len - TRAILER_LEN as usize;
    let footer_len = read_u64(file, trailer).ok_or("truncated trailer")?;
    let footer_crc = read_u32(file, trailer + 8).ok_or("truncated trailer")?;
    let footer_start = (trailer as u64)
        .checked_sub(footer_len)
        .filter(|start| *start >= HEADER_LEN)
        .ok_or_else(|| format!("footer length {footer_len} does not fit in the file"))?
        as usize;
    let footer_bytes = &file[footer_start..trailer];
    if crc32fast::hash(footer_bytes) != footer_crc {
        return Err("footer checksum mismatch".into());
    }
    let footer: Footer =
        serde_json::from_slice(footer_bytes).map_err(|e| format!("unreadable footer: {e}"))?;
    check_footer(&footer, footer_start as u64)?;
    Ok(footer)
}

/// Checks that the footer describes a well-formed file: a `__time` column first and
/// every buffer aligned and inside its column's region, which lies inside the data
/// section. After this, slicing the file at any buffer cannot go out of bounds.
fn check_footer(footer: &Footer, data_end: u64) -> Result<(), String> {
    if footer.format_version != FORMAT_VERSION {
        return Err(format!("footer format version {}", footer.format_version));
    }
    if usize::try_from(footer.num_rows).is_err() || footer.num_rows > u32::MAX as u64 {
        return Err(format!("row count {} is too large", footer.num_rows));
    }
    match footer.columns.first() {
        Some(c) if c.name == TIME_COLUMN && c.kind == ColumnKind::Time => {}
        _ => return Err("the first column is not __time".into()),
    }
    for (i, column) in footer.columns.iter().enumerate() {
        if footer.columns[..i].iter().any(|c| c.name == column.name) {
            return Err(format!("column {:?} appears twice", column.name));
        }
        let region = column.region;
        let region_ok = region.offset >= HEADER_LEN
            && region
                .offset
                .checked_add(region.len)
                .is_some_and(|end| end <= data_end);
        if !region_ok {
            return Err(format!(
                "column {:?} lies outside the data section",
                column.name
            ));
        }
        for buffer in buffers(&column.layout) {
            let inside = buffer.offset % ALIGNMENT == 0
                && buffer.offset >= region.offset
                && buffer
                    .offset
                    .checked_add(buffer.len)
                    .is_some_and(|end| end <= region.offset + region.len);
            if !inside {
                return Err(format!(
                    "a buffer of column {:?} is misaligned or outside its region",
                    column.name
                ));
            }
        }
    }
    Ok(())
}

fn buffers(layout: &ColumnLayout) -> Vec<BufferRef> {
    match layout {
        ColumnLayout::Primitive { values, validity } => {
            std::iter::once(*values).chain(*validity).collect()
        }
        ColumnLayout::Dictionary {
            dict_offsets,
            dict_data,
            keys,
            validity,
            bitmap_offsets,
            bitmaps,
            ..
        } => [*dict_offsets, *dict_data, *keys, *bitmap_offsets, *bitmaps]
            .into_iter()
            .chain(*validity)
            .collect(),
    }
}
