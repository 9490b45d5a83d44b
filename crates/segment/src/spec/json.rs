//! Paths into the spec's JSON and the helpers every section parser shares: reading a
//! section into its `Raw*` struct, splitting a polymorphic object into its `type` and
//! other fields, and building errors that name the offending field's path.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------
// JSON paths and error helpers
// ---------------------------------------------------------------------------------

/// Where a value sits in the spec (`spec.dataSchema.metricsSpec[2].fieldName`), so that
/// every error can point at the exact field the user has to fix.
#[derive(Debug)]
pub(super) struct JsonPath(String);

impl JsonPath {
    pub(super) fn root() -> Self {
        JsonPath(String::new())
    }

    pub(super) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            JsonPath(name.to_string())
        } else {
            JsonPath(format!("{}.{name}", self.0))
        }
    }

    pub(super) fn index(&self, i: usize) -> Self {
        JsonPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("ingestion spec")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// An invalid-spec error about the value at `path`.
pub(super) fn invalid_at(path: &JsonPath, message: impl fmt::Display) -> Error {
    Error::invalid(format!("{path}: {message}"))
}

/// A field Grove recognises but cannot honour (or does not know at all).
pub(super) fn unsupported_field(path: &JsonPath, why: impl fmt::Display) -> Error {
    Error::invalid(format!("unsupported field \"{path}\": {why}"))
}

/// Adds context (a path, a file name) in front of an invalid-spec message; I/O and
/// other errors already carry their own context and pass through unchanged.
pub(super) fn prefix_error(prefix: impl fmt::Display, error: Error) -> Error {
    match error {
        Error::Invalid(message) => Error::invalid(format!("{prefix}: {message}")),
        other => other,
    }
}

/// Turns serde's `unknown field `foo`, expected one of ...` (which does not say where)
/// into an error naming the field's full path; other serde messages (type mismatches,
/// bad granularities) are prefixed with the section's path.
fn serde_error(path: &JsonPath, error: &serde_json::Error) -> Error {
    let message = error.to_string();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'));
    match unknown {
        Some((field, hint)) => unsupported_field(&path.field(field), hint.trim_start_matches(", ")),
        None => invalid_at(path, message),
    }
}

/// Describes a JSON value's kind for "expected X, found Y" messages.
pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every raw field is an `Option` so that a missing field and an explicit `null` (which
/// Druid treats alike) both end up here, with the field's path in the message.
pub(super) fn required<T>(value: Option<T>, path: &JsonPath) -> Result<T> {
    value.ok_or_else(|| Error::invalid(format!("missing required field \"{path}\"")))
}

/// Column and datasource names become Arrow field names and file names, where an empty
/// name is never what the user meant.
pub(super) fn non_empty(name: String, path: &JsonPath) -> Result<String> {
    if name.is_empty() {
        Err(invalid_at(path, "must not be empty"))
    } else {
        Ok(name)
    }
}

pub(super) fn required_name(name: Option<String>, path: &JsonPath) -> Result<String> {
    non_empty(required(name, path)?, path)
}

/// Looks `name` up in a table of accepted spellings, listing them all when it is unknown.
pub(super) fn lookup<T: Copy>(
    table: &[(&str, T)],
    name: &str,
    what: &str,
    path: &JsonPath,
) -> Result<T> {
    lookup_by(table, name, what, path, |known| known == name)
}

/// [`lookup`] with the comparison given, for the few names Druid treats case-insensitively.
pub(super) fn lookup_by<T: Copy>(
    table: &[(&str, T)],
    name: &str,
    what: &str,
    path: &JsonPath,
    matches: impl Fn(&str) -> bool,
) -> Result<T> {
    let found = table.iter().find(|(known, _)| matches(known));
    found.map(|&(_, value)| value).ok_or_else(|| {
        let known: Vec<&str> = table.iter().map(|(known, _)| *known).collect();
        invalid_at(
            path,
            format!(
                "unknown {what} {name:?}: expected one of {}",
                known.join(", ")
            ),
        )
    })
}

/// Rejects a non-empty list in a field Grove only accepts empty.
pub(super) fn reject_non_empty(list: Option<Vec<Value>>, path: &JsonPath, why: &str) -> Result<()> {
    match list {
        Some(list) if !list.is_empty() => Err(unsupported_field(path, why)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Section deserialization
// ---------------------------------------------------------------------------------

fn into_object(value: Value, path: &JsonPath) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(invalid_at(
            path,
            format!("expected a JSON object, found {}", describe(&other)),
        )),
    }
}

pub(super) fn from_map<T: DeserializeOwned>(map: Map<String, Value>, path: &JsonPath) -> Result<T> {
    T::deserialize(Value::Object(map)).map_err(|e| serde_error(path, &e))
}

pub(super) fn parse_object<T: DeserializeOwned>(value: Value, path: &JsonPath) -> Result<T> {
    from_map(into_object(value, path)?, path)
}

/// Optional sections fall back to their raw struct's default, i.e. every field absent.
pub(super) fn parse_object_or_default<T: DeserializeOwned + Default>(
    value: Option<Value>,
    path: &JsonPath,
) -> Result<T> {
    value.map_or_else(|| Ok(T::default()), |value| parse_object(value, path))
}

/// Splits a polymorphic Druid object into its `type` and its other fields. The type is
/// read first so that an unsupported type (an `s3` input source, a `hyperUnique`
/// aggregator) is reported as such, rather than as an unknown field only that type has.
pub(super) fn typed_object(
    value: Value,
    path: &JsonPath,
) -> Result<(Option<String>, Map<String, Value>)> {
    let mut map = into_object(value, path)?;
    let kind = match map.remove("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(kind)) => Some(kind),
        Some(other) => {
            return Err(invalid_at(
                &path.field("type"),
                format!("expected a string, found {}", describe(&other)),
            ));
        }
    };
    Ok((kind, map))
}
