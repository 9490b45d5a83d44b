//! Why a historical will not run a fragment ([`Refused`]), and the limit on the types
//! of the values it makes, checked while a plan decodes as well as after.

use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;

/// A fragment, or a part of one, that a historical will not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fragment refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The refusal behind `error`, if that is what it is (decoding wraps the
    /// codec's errors in context).
    pub fn find(error: &DataFusionError) -> Option<&Refused> {
        find_external(error)
    }

    /// The refusal as a DataFusion error, for the codec to return while decoding.
    pub fn into_error(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

/// The error of type `T` that a codec returned inside `error`, through the context
/// decoding adds around it.
pub(crate) fn find_external<T: std::error::Error + 'static>(error: &DataFusionError) -> Option<&T> {
    match error {
        DataFusionError::External(e) => e.downcast_ref::<T>(),
        DataFusionError::Context(_, inner) => find_external(inner),
        _ => None,
    }
}

/// The widest value of a fixed-size type a fragment may make (bytes of a
/// `FixedSizeBinary`, elements of a `FixedSizeList`, nested sizes multiplied): a null
/// of such a type is allocated at its full width for every row.
pub const MAX_FIXED_WIDTH: usize = 1 << 16;

/// Refuses types whose values are wider than [`MAX_FIXED_WIDTH`].
pub fn check_type(data_type: &DataType) -> Result<(), Refused> {
    let width = fixed_width(data_type);
    if width > MAX_FIXED_WIDTH {
        return Err(Refused(format!(
            "type {data_type} is {width} wide (at most {MAX_FIXED_WIDTH})"
        )));
    }
    Ok(())
}

fn fixed_width(data_type: &DataType) -> usize {
    let size = |n: i32| usize::try_from(n).unwrap_or(0);
    match data_type {
        DataType::FixedSizeBinary(n) => size(*n),
        DataType::FixedSizeList(item, n) => size(*n).saturating_mul(fixed_width(item.data_type())),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::Map(item, _) => fixed_width(item.data_type()),
        DataType::Struct(fields) => fields
            .iter()
            .map(|f| fixed_width(f.data_type()))
            .fold(1, usize::saturating_add),
        DataType::Union(fields, _) => fields
            .iter()
            .map(|(_, f)| fixed_width(f.data_type()))
            .fold(1, usize::saturating_add),
        DataType::Dictionary(_, value) => fixed_width(value),
        DataType::RunEndEncoded(_, value) => fixed_width(value.data_type()),
        _ => 1,
    }
}
