//! The footer: everything needed to find and check a segment's columns.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int64Type, Schema, TimeUnit,
    TimestampMillisecondType,
};
use serde::{Deserialize, Serialize};

use crate::id::SegmentId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Footer {
    pub format_version: u32,
    pub id: SegmentId,
    pub num_rows: u64,
    pub columns: Vec<ColumnMeta>,
}

/// How a column is stored and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// `__time`: milliseconds, sorted ascending, never null.
    Time,
    /// Dictionary-encoded string with a bitmap index per value.
    String,
    Long,
    Double,
    Float,
    /// Days since the epoch.
    Date,
    /// Milliseconds since the epoch, UTC.
    Timestamp,
}

impl ColumnKind {
    /// The Arrow type this column is read as.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Time | ColumnKind::Timestamp => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
            ColumnKind::String => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            ColumnKind::Long => DataType::Int64,
            ColumnKind::Double => DataType::Float64,
            ColumnKind::Float => DataType::Float32,
            ColumnKind::Date => DataType::Date32,
        }
    }

    /// The column kind stored for an Arrow type, if Grove stores that type.
    pub fn for_data_type(data_type: &DataType) -> Option<ColumnKind> {
        Some(match data_type {
            DataType::Timestamp(TimeUnit::Millisecond, _) => ColumnKind::Timestamp,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::String,
            DataType::Dictionary(_, value) if value.is_string() => ColumnKind::String,
            DataType::Int64 => ColumnKind::Long,
            DataType::Float64 => ColumnKind::Double,
            DataType::Float32 => ColumnKind::Float,
            DataType::Date32 => ColumnKind::Date,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    Time,
    Dimension,
    Metric,
}

/// Where a buffer lives in the file: absolute offset (a multiple of
/// [`super::ALIGNMENT`]) and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferRef {
    pub offset: u64,
    pub len: u64,
}

/// A min or max statistic. Floats that are not finite are not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnLayout {
    /// Values of a fixed width and an optional Arrow validity bitmap (absent: no nulls).
    Primitive {
        values: BufferRef,
        validity: Option<BufferRef>,
    },
    /// A sorted dictionary (`dict_offsets`: `dict_len + 1` little-endian i32 into
    /// `dict_data`), one i32 key per row (0 for null rows), an Arrow validity bitmap,
    /// and one portable Roaring bitmap per dictionary value followed by one for the
    /// null rows (`bitmap_offsets`: `dict_len + 2` little-endian u64 into `bitmaps`).
    Dictionary {
        dict_len: u32,
        dict_offsets: BufferRef,
        dict_data: BufferRef,
        keys: BufferRef,
        validity: Option<BufferRef>,
        bitmap_offsets: BufferRef,
        bitmaps: BufferRef,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMeta {
    pub name: String,
    pub kind: ColumnKind,
    pub role: ColumnRole,
    /// The byte range holding all of this column's buffers; `crc32` covers exactly it.
    pub region: BufferRef,
    pub crc32: u32,
    pub null_count: u64,
    pub min: Option<Stat>,
    pub max: Option<Stat>,
    pub layout: ColumnLayout,
}

impl Footer {
    /// The Arrow schema segments are read with: every column nullable except `__time`.
    pub fn schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.kind.data_type(), c.kind != ColumnKind::Time))
                .collect::<Vec<_>>(),
        )
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// The min and max statistics of a fixed-width column, as the footer records them.
/// Floats get none when any value is NaN or infinite: a bound that left those out
/// would be wrong.
pub(crate) fn primitive_bounds(
    kind: ColumnKind,
    array: &dyn Array,
) -> (Option<Stat>, Option<Stat>) {
    match kind {
        ColumnKind::Time | ColumnKind::Timestamp => int_bounds(
            array
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .flatten(),
        ),
        ColumnKind::Long => int_bounds(array.as_primitive::<Int64Type>().iter().flatten()),
        ColumnKind::Date => int_bounds(
            array
                .as_primitive::<Date32Type>()
                .iter()
                .flatten()
                .map(i64::from),
        ),
        ColumnKind::Double => float_bounds(array.as_primitive::<Float64Type>().iter().flatten()),
        ColumnKind::Float => float_bounds(
            array
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .map(f64::from),
        ),
        ColumnKind::String => (None, None),
    }
}

fn int_bounds(values: impl Iterator<Item = i64>) -> (Option<Stat>, Option<Stat>) {
    let (min, max) = values.fold((None, None), |(lo, hi): (Option<i64>, Option<i64>), v| {
        (
            Some(lo.map_or(v, |l| l.min(v))),
            Some(hi.map_or(v, |h| h.max(v))),
        )
    });
    (min.map(Stat::Int), max.map(Stat::Int))
}

fn float_bounds(values: impl Iterator<Item = f64>) -> (Option<Stat>, Option<Stat>) {
    let mut bounds: Option<(f64, f64)> = None;
    for v in values {
        if !v.is_finite() {
            return (None, None);
        }
        bounds = Some(bounds.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
    match bounds {
        Some((lo, hi)) => (Some(Stat::Float(lo)), Some(Stat::Float(hi))),
        None => (None, None),
    }
}
