//! Druid's names of column types: the SQL types (`VARCHAR`, `BIGINT`, `TIMESTAMP`)
//! with their JDBC codes, and the native types (`STRING`, `LONG`, `DOUBLE`) of its
//! native queries and `typesHeader`.

use datafusion::arrow::datatypes::DataType;

/// A column's SQL type, as Druid's `INFORMATION_SCHEMA.COLUMNS` and `sqlTypesHeader`
/// report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlType {
    pub name: &'static str,
    /// `java.sql.Types`: what JDBC clients (and pydruid's SQLAlchemy dialect) map.
    pub jdbc: i64,
    /// Decimal digits of a number type.
    pub precision: Option<i64>,
    /// Fractional digits of seconds of a time type.
    pub datetime_precision: Option<i64>,
}

impl SqlType {
    pub fn of(data_type: &DataType) -> SqlType {
        let (name, jdbc, precision, datetime_precision) = match data_type {
            DataType::Dictionary(_, value) => return SqlType::of(value),
            DataType::Int8 => ("TINYINT", -6, Some(3), None),
            DataType::Int16 | DataType::UInt8 => ("SMALLINT", 5, Some(5), None),
            DataType::Int32 | DataType::UInt16 => ("INTEGER", 4, Some(10), None),
            t if t.is_integer() => ("BIGINT", -5, Some(19), None),
            DataType::Float16 | DataType::Float32 => ("FLOAT", 6, Some(15), None),
            DataType::Float64 => ("DOUBLE", 8, Some(15), None),
            DataType::Decimal128(p, _) | DataType::Decimal256(p, _) => {
                ("DECIMAL", 3, Some(i64::from(*p)), None)
            }
            DataType::Boolean => ("BOOLEAN", 16, None, None),
            DataType::Timestamp(..) => ("TIMESTAMP", 93, None, Some(3)),
            DataType::Date32 | DataType::Date64 => ("DATE", 91, None, Some(0)),
            t if t.is_string() => ("VARCHAR", 12, None, None),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                ("ARRAY", 2003, None, None)
            }
            _ => ("OTHER", 1111, None, None),
        };
        SqlType {
            name,
            jdbc,
            precision,
            datetime_precision,
        }
    }
}

/// Druid's native type of a column: what `typesHeader` and native queries name.
pub fn native_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Dictionary(_, value) => native_type(value),
        t if t.is_integer() => "LONG",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Boolean => "LONG",
        DataType::Float32 => "FLOAT",
        DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "DOUBLE",
        t if t.is_string() => "STRING",
        _ => "COMPLEX",
    }
}
