//! Values as Druid's JSON answers hold them: times as `2015-09-12T00:46:58.771Z` (a
//! DATE at its midnight), numbers and strings as Arrow's JSON writer renders them,
//! and objects with their keys in the order of the columns (a `serde_json::Map`
//! would sort them).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
use grove_segment::id::format_millis;
use serde_json::Value;

/// A JSON object with its keys in the order given: the columns' order, as Druid
/// writes them (a JSON map would sort them).
pub fn object_text(pairs: &[(&str, Value)]) -> String {
    let mut text = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&Value::from(*name).to_string());
        text.push(':');
        text.push_str(&value.to_string());
    }
    text.push('}');
    text
}

/// Each row's values as JSON, in column order.
pub fn json_rows(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<Vec<Value>>, String> {
    let mut rows = Vec::new();
    {
        let columns: Vec<Vec<Value>> = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| column_json(column, field))
            .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| c.get(i).cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// One column's values as JSON: times as Druid writes them (`2015-09-12T00:46:58.771Z`,
/// a date at its midnight), anything else as Arrow's JSON writer renders it.
pub fn column_json(column: &ArrayRef, field: &Field) -> Result<Vec<Value>, String> {
    if matches!(
        field.data_type(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) {
        let millis = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| e.to_string())?;
        return Ok(millis
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .map(|t| t.map_or(Value::Null, |t| Value::from(format_millis(t))))
            .collect());
    }
    let single = Field::new("v", field.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![single])), vec![column.clone()])
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut out);
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    if out.is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_slice(&out).map_err(|e| e.to_string())? {
        Value::Array(objects) => Ok(objects
            .into_iter()
            .map(|mut o| o.get_mut("v").map(Value::take).unwrap_or(Value::Null))
            .collect()),
        _ => Err("the JSON writer did not write an array".into()),
    }
}
