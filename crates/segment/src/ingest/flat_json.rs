//! A fast decoder for the JSON lines nearly every event input consists of: one flat
//! object per line whose values are strings without escapes (in text columns), plain
//! numbers (integers in integer columns), or `null`; keys that are not read may hold
//! any scalar. It decodes a block of lines into a batch of the wanted columns,
//! or declines (`None`) at the first thing outside that shape, and the block is
//! decoded by arrow-json instead, which decides everything else. So it only ever
//! gives what arrow-json would give: its tests compare the two on generated input.
//!
//! Keys usually come in the same order on every line, so each key is first compared
//! with the column the same key position had on the line before.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};

/// A column being built, by the type it is read as.
enum Column {
    Text(StringBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Float(Float32Builder),
}

impl Column {
    fn new(data_type: &DataType, rows: usize) -> Option<Column> {
        Some(match data_type {
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(rows, rows * 8)),
            DataType::Int64 => Column::Long(Int64Builder::with_capacity(rows)),
            DataType::Float64 => Column::Double(Float64Builder::with_capacity(rows)),
            DataType::Float32 => Column::Float(Float32Builder::with_capacity(rows)),
            _ => return None,
        })
    }

    fn append_null(&mut self) {
        match self {
            Column::Text(b) => b.append_null(),
            Column::Long(b) => b.append_null(),
            Column::Double(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
        }
    }

    /// Appends a value; `None` when its type is not the column's plain one.
    fn append(&mut self, value: Value<'_>) -> Option<()> {
        match (self, value) {
            (column, Value::Null) => column.append_null(),
            (Column::Text(b), Value::Text(s)) => b.append_value(std::str::from_utf8(s).ok()?),
            (Column::Long(b), Value::Number(n)) if is_integer(n) => {
                b.append_value(std::str::from_utf8(n).ok()?.parse().ok()?)
            }
            (Column::Double(b), Value::Number(n)) => {
                b.append_value(std::str::from_utf8(n).ok()?.parse().ok()?)
            }
            (Column::Float(b), Value::Number(n)) => {
                b.append_value(std::str::from_utf8(n).ok()?.parse().ok()?)
            }
            _ => return None,
        }
        Some(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Text(b) => Arc::new(b.finish()),
            Column::Long(b) => Arc::new(b.finish()),
            Column::Double(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
        }
    }
}

fn is_integer(number: &[u8]) -> bool {
    !number.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Null,
    /// A string's bytes between its quotes (it has no escapes).
    Text(&'a [u8]),
    /// A number as written.
    Number(&'a [u8]),
    /// `true` or `false`.
    Boolean,
}

/// Decodes the lines of `bytes` (each ending at one of `ends`; blank lines between
/// them are whitespace) into a batch of `schema`'s columns, or `None` if any line is
/// not a flat object of plain values.
pub fn decode(bytes: &[u8], ends: &[usize], schema: &SchemaRef) -> Option<RecordBatch> {
    let names: Vec<&[u8]> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_bytes())
        .collect();
    let mut columns: Vec<Column> = schema
        .fields()
        .iter()
        .map(|f| Column::new(f.data_type(), ends.len()))
        .collect::<Option<_>>()?;
    // The column the key at each position had on the previous line.
    let mut predicted: Vec<Option<usize>> = Vec::new();
    // The line each column was last given a value on.
    let mut set_on: Vec<usize> = vec![usize::MAX; columns.len()];
    let mut start = 0;
    for (line, &end) in ends.iter().enumerate() {
        let mut p = Parser {
            b: &bytes[start..end],
            at: 0,
        };
        start = end;
        p.skip_ws();
        p.expect(b'{')?;
        p.skip_ws();
        let mut position = 0;
        if !p.eat(b'}') {
            loop {
                p.skip_ws();
                let key = p.string()?;
                p.skip_ws();
                p.expect(b':')?;
                p.skip_ws();
                let value = p.value()?;
                let column = match predicted.get(position).copied().flatten() {
                    Some(i) if names[i] == key => Some(i),
                    _ => names.iter().position(|n| *n == key),
                };
                if position == predicted.len() {
                    predicted.push(column);
                } else {
                    predicted[position] = column;
                }
                position += 1;
                // A value for a column not read is skipped, whatever scalar it is.
                if let Some(i) = column {
                    if set_on[i] == line {
                        return None; // a key twice on one line: arrow-json decides
                    }
                    set_on[i] = line;
                    columns[i].append(value)?;
                }
                p.skip_ws();
                if p.eat(b',') {
                    continue;
                }
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.at != p.b.len() {
            return None;
        }
        // Columns the line did not name are null.
        for (column, set) in columns.iter_mut().zip(&set_on) {
            if *set != line {
                column.append_null();
            }
        }
    }
    let arrays: Vec<ArrayRef> = columns.iter_mut().map(Column::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays).ok()
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while self
            .b
            .get(self.at)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    /// A string without escapes or control characters: its bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        let length = memchr::memchr3(b'"', b'\\', b'\n', &self.b[start..])?;
        if self.b[start + length] != b'"' || self.b[start..start + length].iter().any(|c| *c < 0x20)
        {
            return None;
        }
        self.at = start + length + 1;
        Some(&self.b[start..start + length])
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.b.get(self.at)? {
            b'"' => self.string().map(Value::Text),
            b'n' => self.word(b"null").map(|()| Value::Null),
            b't' => self.word(b"true").map(|()| Value::Boolean),
            b'f' => self.word(b"false").map(|()| Value::Boolean),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            _ => None,
        }
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        let fits = self.b[self.at..].starts_with(word);
        fits.then(|| self.at += word.len())
    }

    /// A number in JSON's grammar.
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        self.eat(b'-');
        let digits = |p: &mut Parser<'_>| {
            let from = p.at;
            while p.b.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at - from
        };
        let whole = digits(self);
        if whole == 0 || (whole > 1 && self.b[self.at - whole] == b'0') {
            return None;
        }
        if self.eat(b'.') && digits(self) == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some(&self.b[start..self.at])
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};
    use arrow::json::reader::ReaderBuilder;
    use proptest::prelude::*;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Utf8, true),
            Field::new("page", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("price", DataType::Float64, true),
            Field::new("ratio", DataType::Float32, true),
        ]))
    }

    /// What arrow-json makes of the block, as Grove's reader sets it up.
    fn arrow_json(bytes: &[u8], schema: &SchemaRef) -> Option<RecordBatch> {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(1 << 16)
            .with_coerce_primitive(true)
            .with_ignore_type_conflicts(true)
            .build_decoder()
            .ok()?;
        decoder.decode(bytes).ok()?;
        decoder.flush().ok().flatten()
    }

    fn block(lines: &[String]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn typical_lines_decode_as_arrow_json_decodes_them() {
        let lines = vec![
            r#"{"ts":"2024-06-03T00:00:00","page":"/p/1","n":12,"price":1783.8,"ratio":0.1,"extra":"x"}"#.to_string(),
            r#"{"page":"/p/2","ts":"2024-06-03T00:00:01","n":-3,"price":2,"other":null}"#.to_string(),
            r#" { "ts" : "2024-06-03T00:00:02" , "n" : null , "price" : 1e3 , "ratio" : 3.25E-2 } "#.to_string(),
            "{}".to_string(),
        ];
        let (bytes, ends) = block(&lines);
        let schema = schema();
        let fast = decode(&bytes, &ends, &schema).expect("plain lines are decoded");
        assert_eq!(Some(fast), arrow_json(&bytes, &schema));
    }

    #[test]
    fn anything_else_is_left_to_arrow_json() {
        for line in [
            r#"{"page":"a\"b"}"#,
            r#"{"page":1}"#,
            r#"{"n":"12"}"#,
            r#"{"n":1.5}"#,
            r#"{"n":99999999999999999999}"#,
            r#"{"page":true}"#,
            r#"{"page":"a","page":"b"}"#,
            r#"{"extra":{"nested":1}}"#,
            r#"{"n":01}"#,
            r#"{"ts":"a"} {"ts":"b"}"#,
            r#"{"ts":"a",}"#,
            r#"["ts"]"#,
        ] {
            let (bytes, ends) = block(&[line.to_string()]);
            assert!(decode(&bytes, &ends, &schema()).is_none(), "{line}");
        }
    }

    #[test]
    fn booleans_in_string_columns_are_true_and_false_as_in_druid() {
        let (bytes, _) = block(&[r#"{"page":true}"#.into(), r#"{"page":false}"#.into()]);
        let batch = arrow_json(&bytes, &schema()).expect("arrow-json decodes them");
        let pages = batch.column(1).as_string::<i32>();
        assert_eq!(
            pages.iter().collect::<Vec<_>>(),
            [Some("true"), Some("false")]
        );
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 /:._é-]{0,12}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            (-1000i32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:03}")),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"esc\\\"aped\"".to_string()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let keys =
            prop::sample::subsequence(vec!["ts", "page", "n", "price", "ratio", "extra"], 0..=6);
        (keys, prop::collection::vec(value(), 6), any::<bool>()).prop_map(
            |(keys, values, spaced)| {
                let sep = if spaced { " , " } else { "," };
                let pairs: Vec<String> = keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", pairs.join(sep))
            },
        )
    }

    /// A line of plain values of each column's type, keys in any order, some left out.
    fn plain_line() -> impl Strategy<Value = String> {
        let text = || "[a-zA-Z0-9 /:._é-]{0,12}".prop_map(|s| format!("{s:?}"));
        let float = || {
            prop_oneof![
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| f.to_string()),
                any::<i32>().prop_map(|n| n.to_string()),
                (-1000i32..1000, 0u32..1000, -5i32..5)
                    .prop_map(|(a, b, e)| format!("{a}.{b:03}e{e}")),
            ]
        };
        let pairs = (
            text().prop_map(|v| format!("\"ts\":{v}")),
            text().prop_map(|v| format!("\"page\":{v}")),
            any::<i64>().prop_map(|v| format!("\"n\":{v}")),
            float().prop_map(|v| format!("\"price\":{v}")),
            float().prop_map(|v| format!("\"ratio\":{v}")),
            prop_oneof![Just("null"), Just("true"), Just("12"), Just("\"x\"")]
                .prop_map(|v| format!("\"extra\":{v}")),
        );
        (
            pairs,
            prop::sample::subsequence((0..6).collect::<Vec<usize>>(), 0..=6),
            any::<u64>(),
        )
            .prop_map(|(p, keep, seed)| {
                let all = [p.0, p.1, p.2, p.3, p.4, p.5];
                let mut chosen: Vec<String> = keep.into_iter().map(|i| all[i].clone()).collect();
                // Another order on some lines.
                if seed % 3 == 0 {
                    chosen.reverse();
                }
                format!("{{{}}}", chosen.join(","))
            })
    }

    proptest! {
        #[test]
        fn plain_lines_decode_fast_and_as_arrow_json_decodes_them(
            lines in prop::collection::vec(plain_line(), 1..40),
        ) {
            let (bytes, ends) = block(&lines);
            let schema = schema();
            let fast = decode(&bytes, &ends, &schema);
            prop_assert!(fast.is_some(), "plain lines: {:?}", lines);
            prop_assert_eq!(fast, arrow_json(&bytes, &schema));
        }

        #[test]
        fn whatever_it_decodes_arrow_json_decodes_the_same(
            lines in prop::collection::vec(line(), 1..40),
        ) {
            let (bytes, ends) = block(&lines);
            let schema = schema();
            if let Some(fast) = decode(&bytes, &ends, &schema) {
                prop_assert_eq!(Some(fast), arrow_json(&bytes, &schema));
            }
        }
    }
}
