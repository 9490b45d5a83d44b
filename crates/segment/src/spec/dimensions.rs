//! `dataSchema.dimensionsSpec`: the input columns stored as dimensions, and their types.

use serde::Deserialize;
use serde_json::Value;

use super::json::{
    JsonPath, describe, from_map, invalid_at, lookup, non_empty, parse_object, reject_non_empty,
    required, required_name, typed_object, unsupported_field,
};
use crate::error::Result;

/// One entry of `dimensionsSpec.dimensions`.
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionSpec {
    pub name: String,
    pub kind: DimensionKind,
}

/// A dimension's `type`; `String` when the dimension is given as a bare name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimensionKind {
    String,
    Long,
    Double,
    Float,
    Date,
    Timestamp,
}

const DIMENSION_KINDS: [(&str, DimensionKind); 6] = [
    ("string", DimensionKind::String),
    ("long", DimensionKind::Long),
    ("double", DimensionKind::Double),
    ("float", DimensionKind::Float),
    ("date", DimensionKind::Date),
    ("timestamp", DimensionKind::Timestamp),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDimensionsSpec {
    dimensions: Option<Vec<Value>>,
    dimension_exclusions: Option<Vec<Value>>,
    spatial_dimensions: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDimension {
    name: Option<String>,
    create_bitmap_index: Option<bool>,
    multi_value_handling: Option<String>,
}

/// The dimensions list is required and may not be empty: in Druid an empty list means
/// "discover the dimensions from the data", which Grove does not do, and silently
/// ingesting no dimensions instead would lose data.
pub(super) fn parse_dimensions_spec(value: Value, path: &JsonPath) -> Result<Vec<DimensionSpec>> {
    let raw: RawDimensionsSpec = parse_object(value, path)?;
    let discovery = "schemaless dimension discovery is not supported";
    reject_non_empty(
        raw.dimension_exclusions,
        &path.field("dimensionExclusions"),
        format!("exclusions only apply to {discovery}").as_str(),
    )?;
    reject_non_empty(
        raw.spatial_dimensions,
        &path.field("spatialDimensions"),
        "spatial dimensions are not supported",
    )?;
    let list_path = path.field("dimensions");
    let list = required(raw.dimensions, &list_path)?;
    if list.is_empty() {
        return Err(invalid_at(
            &list_path,
            format!("must list the dimensions: {discovery}"),
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, dimension)| parse_dimension(dimension, &list_path.index(i)))
        .collect()
}

/// A dimension is a bare name (a string dimension) or an object with an optional type.
fn parse_dimension(value: Value, path: &JsonPath) -> Result<DimensionSpec> {
    let value = match value {
        Value::String(name) => {
            return Ok(DimensionSpec {
                name: non_empty(name, path)?,
                kind: DimensionKind::String,
            });
        }
        Value::Object(_) => value,
        other => {
            return Err(invalid_at(
                path,
                format!(
                    "expected a dimension name or object, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    let (kind, map) = typed_object(value, path)?;
    let kind = lookup(
        &DIMENSION_KINDS,
        kind.as_deref().unwrap_or("string"),
        "dimension type",
        &path.field("type"),
    )?;
    let raw: RawDimension = from_map(map, path)?;
    check_dimension_defaults(&raw, path)?;
    Ok(DimensionSpec {
        name: required_name(raw.name, &path.field("name"))?,
        kind,
    })
}

/// Grove always indexes string dimensions and stores multi-values sorted, so these
/// options are accepted only when they ask for exactly that (Druid's defaults).
fn check_dimension_defaults(raw: &RawDimension, path: &JsonPath) -> Result<()> {
    if raw.create_bitmap_index == Some(false) {
        return Err(unsupported_field(
            &path.field("createBitmapIndex"),
            "only the default, true, is supported",
        ));
    }
    if let Some(handling) = &raw.multi_value_handling
        && !handling.eq_ignore_ascii_case("SORTED_ARRAY")
    {
        return Err(unsupported_field(
            &path.field("multiValueHandling"),
            format!("{handling:?} is not supported; only the default, \"SORTED_ARRAY\", is"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::fixture::{assert_contains, error_of, parse_edited, remove, set};

    #[test]
    fn parses_typed_dimensions_of_every_kind() {
        let spec = parse_edited(|s| {
            let dimensions = json!([
                "plain",
                {"name": "untyped"},
                {"type": "string", "name": "s", "multiValueHandling": "sorted_array"},
                {"type": "long", "name": "l"},
                {"type": "double", "name": "d"},
                {"type": "float", "name": "f"},
                {"type": "date", "name": "day"},
                {"type": "timestamp", "name": "ts", "createBitmapIndex": true}
            ]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        })
        .unwrap();
        let kinds: Vec<(&str, DimensionKind)> = spec
            .dimensions
            .iter()
            .map(|d| (d.name.as_str(), d.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("plain", DimensionKind::String),
                ("untyped", DimensionKind::String),
                ("s", DimensionKind::String),
                ("l", DimensionKind::Long),
                ("d", DimensionKind::Double),
                ("f", DimensionKind::Float),
                ("day", DimensionKind::Date),
                ("ts", DimensionKind::Timestamp),
            ]
        );
    }

    #[test]
    fn rejects_non_default_dimension_options() {
        let message = error_of(|s| {
            let dimensions = json!(["a", {"name": "b", "createBitmapIndex": false}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensions[1].createBitmapIndex\"",
        );
        let message = error_of(|s| {
            let dimensions = json!([{"name": "b", "multiValueHandling": "ARRAY"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(&message, "dimensions[0].multiValueHandling\"");
        let message = error_of(|s| {
            let dimensions = json!([{"type": "json", "name": "nested"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "dimensions[0].type: unknown dimension type \"json\"",
        );
    }

    #[test]
    fn rejects_schemaless_dimensions() {
        let message = error_of(|s| {
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", json!([]));
        });
        assert_contains(
            &message,
            "spec.dataSchema.dimensionsSpec.dimensions: must list",
        );
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/dimensionsSpec/dimensionExclusions",
                json!(["x"]),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensionExclusions\"",
        );
        let message = error_of(|s| remove(s, "/spec/dataSchema/dimensionsSpec"));
        assert_contains(
            &message,
            "missing required field \"spec.dataSchema.dimensionsSpec\"",
        );
    }

    #[test]
    fn rejects_unknown_dimension_field() {
        let message = error_of(|s| {
            let dimensions = json!(["a", {"type": "long", "name": "b", "format": "x"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensions[1].format\"",
        );
    }
}
