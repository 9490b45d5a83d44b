//! Answers of different engines, made comparable: every cell becomes a number, a
//! text or NULL (dates as `YYYY-MM-DD`, whatever type an engine keeps them in), rows
//! are put in one order, and numbers agree within a relative 1e-6 (Grove keeps TPC-H's
//! decimals as doubles, the other engines as decimals).

use std::cmp::Ordering;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::ArrayWriter;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Number(f64),
    Text(String),
}

pub type Rows = Vec<Vec<Cell>>;

/// Arrow batches as comparable rows.
pub fn from_batches(batches: &[RecordBatch]) -> Result<Rows, String> {
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    // Columns in the batches' order; a NULL is a missing key.
    let names: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    Ok(objects
        .iter()
        .map(|object| {
            names
                .iter()
                .map(|name| cell(object.get(name).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect())
}

/// JSON rows (the Python engines') as comparable rows.
pub fn from_json(rows: &Value) -> Rows {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .map(|cells| cells.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cell(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Number(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => Cell::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => text(s),
        other => Cell::Text(other.to_string()),
    }
}

/// Text, unless it is a number (decimals come as text from some writers) or a
/// midnight timestamp (a date kept as a timestamp).
fn text(s: &str) -> Cell {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Cell::Number(n);
    }
    let bytes = s.as_bytes();
    let is_date = bytes.len() >= 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[..4].iter().all(u8::is_ascii_digit);
    if is_date {
        let rest = s[10..].trim_start_matches(['T', ' ']);
        let midnight = rest.is_empty()
            || rest
                .trim_end_matches('Z')
                .trim_end_matches("+00:00")
                .chars()
                .all(|c| c == '0' || c == ':' || c == '.');
        if midnight {
            return Cell::Text(s[..10].to_string());
        }
    }
    Cell::Text(s.to_string())
}

/// Rows in one order: each cell compared as its rounded number or its text.
fn sorted(mut rows: Rows) -> Rows {
    let key = |cell: &Cell| match cell {
        Cell::Null => (0, 0.0, String::new()),
        Cell::Number(n) => (1, round(*n), String::new()),
        Cell::Text(t) => (2, 0.0, t.clone()),
    };
    rows.sort_by(|a, b| {
        for (x, y) in a.iter().zip(b) {
            let (kx, ky) = (key(x), key(y));
            let order =
                kx.0.cmp(&ky.0)
                    .then(kx.1.total_cmp(&ky.1))
                    .then(kx.2.cmp(&ky.2));
            if order != Ordering::Equal {
                return order;
            }
        }
        a.len().cmp(&b.len())
    });
    rows
}

/// Six significant digits, so that rows whose numbers differ in rounding sort alike.
fn round(n: f64) -> f64 {
    if n == 0.0 || !n.is_finite() {
        return n;
    }
    let scale = 10f64.powi(5 - n.abs().log10().floor() as i32);
    (n * scale).round() / scale
}

/// How close two numbers must be.
#[derive(Clone, Copy)]
pub enum Tolerance {
    /// Within a relative 1e-6.
    Relative,
    /// Also equal when within a cent: TPC-H checks answers rounded to 1/100 (its
    /// clause 2.1.3.5), and engines keep the scale of a decimal quotient differently
    /// (ClickHouse answers Q8's share as 0.0286, DataFusion as 0.02864874).
    Cents,
}

/// Why `answer` differs from `expected` (in any row order), or `None`.
pub fn difference(expected: &Rows, answer: &Rows, tolerance: Tolerance) -> Option<String> {
    if expected.len() != answer.len() {
        return Some(format!(
            "{} rows, expected {}",
            answer.len(),
            expected.len()
        ));
    }
    let (expected, answer) = (sorted(expected.clone()), sorted(answer.clone()));
    for (i, (e, a)) in expected.iter().zip(&answer).enumerate() {
        if e.len() != a.len() {
            return Some(format!(
                "row {i}: {} columns, expected {}",
                a.len(),
                e.len()
            ));
        }
        for (x, y) in e.iter().zip(a) {
            let same = match (x, y) {
                (Cell::Number(x), Cell::Number(y)) => {
                    (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
                        || matches!(tolerance, Tolerance::Cents) && (x - y).abs() < 0.01
                }
                (x, y) => x == y,
            };
            if !same {
                return Some(format!("row {i}: {a:?}, expected {e:?}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_agree_across_types_orders_and_rounding() {
        let expected = from_json(&json!([
            ["1995-03-10", "12.50", 3],
            ["1994-01-01", 0.1, null]
        ]));
        let answer = from_json(&json!([
            ["1994-01-01T00:00:00", 0.10000000001, null],
            ["1995-03-10", 12.5, 3.0]
        ]));
        assert_eq!(difference(&expected, &answer, Tolerance::Relative), None);
        let wrong = from_json(&json!([["1994-01-01", 0.2, null], ["1995-03-10", 12.5, 3]]));
        assert!(difference(&expected, &wrong, Tolerance::Cents).is_some());
        let short = from_json(&json!([["1994-01-01", 0.1, null]]));
        assert_eq!(
            difference(&expected, &short, Tolerance::Relative).as_deref(),
            Some("1 rows, expected 2")
        );
        // Within a cent is TPC-H's rule, not the default.
        let share = |x: f64| from_json(&json!([[x]]));
        assert!(difference(&share(0.02864874), &share(0.0286), Tolerance::Relative).is_some());
        assert_eq!(
            difference(&share(0.02864874), &share(0.0286), Tolerance::Cents),
            None
        );
        // A time of day is not a date.
        assert_eq!(
            text("1995-03-10T12:00:00"),
            Cell::Text("1995-03-10T12:00:00".into())
        );
    }
}
