//! What Grove's own plan nodes share on the wire: their schemas, each column's type
//! one a fragment may have, and the error a node that does not decode gives.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use serde::{Deserialize, Serialize};

use super::refusal::{Refused, check_type};

#[derive(Debug, Serialize, Deserialize)]
pub struct FieldNode {
    name: String,
    /// Arrow's own text form of the type (`Int64`, `Timestamp(ms, "UTC")`, ...).
    data_type: String,
    nullable: bool,
}

/// A schema as the fields of Grove's nodes.
pub fn encode_schema(schema: &Schema) -> Vec<FieldNode> {
    schema
        .fields()
        .iter()
        .map(|f| FieldNode {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// The schema of a Grove node's fields, each type one a fragment may have.
pub fn decode_schema(fields: &[FieldNode]) -> Result<SchemaRef> {
    let fields = fields
        .iter()
        .map(|f| {
            let data_type: DataType = f
                .data_type
                .parse()
                .map_err(|e| invalid(format!("column {}: {e}", f.name)))?;
            check_type(&data_type).map_err(Refused::into_error)?;
            Ok(Field::new(&f.name, data_type, f.nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// A Grove node that does not decode.
pub fn invalid(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("invalid Grove plan fragment: {what}"))
}
