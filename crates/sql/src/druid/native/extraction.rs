//! Druid's dimension specs and extraction functions (`docs/querying/dimensionspecs.md`)
//! as DataFusion expressions: what a topN or groupBy groups by, and what a filter
//! with an `extractionFn` compares.
//!
//! A dimension's values are strings unless its `outputType` says `LONG`, `FLOAT` or
//! `DOUBLE`, as Druid's. Extraction functions take a string (`__time` written in
//! ISO 8601, as Druid passes it) and give one; `timeFormat` takes `__time` as a time.
//! Supported: `regex`, `partial`, `searchQuery`, `substring`, `strlen`, `timeFormat`,
//! `time`, `upper`, `lower`, `lookup` (an inline map), `registeredLookup`, `cascade`
//! and `stringFormat`; the `default`, `extraction`, `lookup`, `listFiltered`,
//! `regexFiltered` and `prefixFiltered` dimension specs. Others (`javascript`,
//! `bucket`) are refused by name.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable, case, cast, lit, try_cast, when};
use datafusion::prelude::ident;
use serde::Deserialize;
use serde_json::Value;

use super::Planner;
use super::expression::regex_group;
use super::filter::plan;
use super::spec::{DimensionObject, DimensionSpec, Granularity, SearchSpec, flexible_bool};

/// An extraction function, by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ExtractionFn {
    Regex {
        expr: String,
        #[serde(default = "first_group")]
        index: i64,
        #[serde(
            default,
            rename = "replaceMissingValue",
            deserialize_with = "flexible_bool"
        )]
        replace_missing_value: bool,
        #[serde(default, rename = "replaceMissingValueWith")]
        replace_missing_value_with: Option<String>,
    },
    Partial {
        expr: String,
    },
    SearchQuery {
        query: SearchSpec,
    },
    Substring {
        index: i64,
        #[serde(default)]
        length: Option<i64>,
    },
    Strlen {},
    TimeFormat {
        #[serde(default)]
        format: Option<String>,
        #[serde(default, rename = "timeZone")]
        time_zone: Option<String>,
        #[serde(default)]
        locale: Option<String>,
        #[serde(default)]
        granularity: Option<Granularity>,
        #[serde(default, rename = "asMillis", deserialize_with = "flexible_bool")]
        as_millis: bool,
    },
    Time {
        #[serde(rename = "timeFormat")]
        time_format: String,
        #[serde(rename = "resultFormat")]
        result_format: String,
    },
    Upper {},
    Lower {},
    Lookup {
        lookup: InlineLookup,
        #[serde(flatten)]
        missing: Missing,
    },
    RegisteredLookup {
        lookup: String,
        #[serde(flatten)]
        missing: Missing,
    },
    Cascade {
        #[serde(rename = "extractionFns")]
        extraction_fns: Vec<Value>,
    },
    StringFormat {
        format: String,
        #[serde(default, rename = "nullHandling")]
        null_handling: Option<String>,
    },
}

const SUPPORTED: [&str; 13] = [
    "regex",
    "partial",
    "searchQuery",
    "substring",
    "strlen",
    "timeFormat",
    "time",
    "upper",
    "lower",
    "lookup",
    "registeredLookup",
    "cascade",
    "stringFormat",
];

fn first_group() -> i64 {
    1
}

/// What a lookup gives for a key its map lacks: the key itself
/// (`retainMissingValue`), a replacement, or null (`""` is null, as Druid's).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Missing {
    #[serde(default, deserialize_with = "flexible_bool")]
    retain_missing_value: bool,
    #[serde(default)]
    replace_missing_value_with: Option<String>,
}

/// `{"type": "map", "map": {...}}`.
#[derive(Debug, Deserialize)]
struct InlineLookup {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    map: BTreeMap<String, String>,
}

impl Planner<'_> {
    /// What a query groups by for `spec` over rows of `schema`.
    pub(super) fn dimension(&self, spec: &DimensionSpec, schema: &DFSchema) -> Result<Expr> {
        let DimensionSpec::Object(o) = spec else {
            return self.as_type(ident(spec.dimension()), None, schema);
        };
        let column = || -> Result<Expr> {
            o.dimension
                .as_deref()
                .map(ident)
                .ok_or_else(|| plan("a dimension spec needs a dimension".into()))
        };
        let value = match o.kind.as_deref().unwrap_or("default") {
            "default" => column()?,
            "extraction" => {
                let function = o.extraction_fn.as_ref().ok_or_else(|| {
                    plan("an extraction dimension spec needs an extractionFn".into())
                })?;
                self.extract(column()?, function, schema)?
            }
            "lookup" => {
                let inline;
                let map = match (&o.name, &o.lookup) {
                    (Some(name), _) => self.registered_lookup(name)?,
                    (None, Some(lookup)) => {
                        let lookup = serde_json::from_value(lookup.clone())
                            .map_err(|e| plan(format!("a lookup dimension spec's lookup: {e}")))?;
                        inline = inline_map(lookup)?;
                        &inline
                    }
                    (None, None) => {
                        return Err(plan(
                            "a lookup dimension spec needs a name or a lookup".into(),
                        ));
                    }
                };
                let missing = Missing {
                    retain_missing_value: o.retain_missing_value,
                    replace_missing_value_with: o.replace_missing_value_with.clone(),
                };
                self.look_up(column()?, map, &missing, schema)?
            }
            kind @ ("listFiltered" | "regexFiltered" | "prefixFiltered") => {
                return self.filtered(kind, o, schema);
            }
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "dimension spec type {other:?} is not supported"
                )));
            }
        };
        self.as_type(value, o.output_type.as_deref(), schema)
    }

    /// A filtered dimension spec: its delegate's value where it passes, else null.
    fn filtered(&self, kind: &str, o: &DimensionObject, schema: &DFSchema) -> Result<Expr> {
        let delegate = o
            .delegate
            .as_ref()
            .ok_or_else(|| plan(format!("a {kind} dimension spec needs a delegate")))?;
        let value = self.dimension(delegate, schema)?;
        let text = self.text(value.clone(), schema)?;
        let keep = match kind {
            "listFiltered" => {
                let listed = text.in_list(o.values.iter().map(|v| lit(v.clone())).collect(), false);
                if o.is_whitelist { listed } else { !listed }
            }
            "regexFiltered" => {
                let pattern = o
                    .pattern
                    .clone()
                    .ok_or_else(|| plan("a regexFiltered dimension spec needs a pattern".into()))?;
                self.function("regexp_like")?.call(vec![text, lit(pattern)])
            }
            _ => {
                let prefix = o
                    .prefix
                    .clone()
                    .ok_or_else(|| plan("a prefixFiltered dimension spec needs a prefix".into()))?;
                self.function("starts_with")?.call(vec![text, lit(prefix)])
            }
        };
        when(keep, value).otherwise(lit(ScalarValue::Null))
    }

    /// `dimension`'s value as a filter compares it: through `extraction` if it has one.
    pub(super) fn filtered_value(
        &self,
        dimension: &str,
        extraction: Option<&Value>,
        schema: &DFSchema,
    ) -> Result<Expr> {
        match extraction {
            None => Ok(ident(dimension)),
            Some(function) => self.extract(ident(dimension), function, schema),
        }
    }

    /// `value` through the extraction function written `function`.
    fn extract(&self, value: Expr, function: &Value, schema: &DFSchema) -> Result<Expr> {
        let kind = function["type"].as_str().unwrap_or_default();
        if !SUPPORTED.contains(&kind) {
            return Err(DataFusionError::NotImplemented(format!(
                "extractionFn type {kind:?} is not supported"
            )));
        }
        let parsed: ExtractionFn = serde_json::from_value(function.clone())
            .map_err(|e| plan(format!("extractionFn {kind:?}: {e}")))?;
        let utf8 = |e: Expr| cast(e, DataType::Utf8);
        Ok(match parsed {
            ExtractionFn::Regex {
                expr,
                index,
                replace_missing_value,
                replace_missing_value_with,
            } => {
                let text = self.text(value, schema)?;
                let group = regex_group(self.session.context(), text.clone(), &expr, index)?;
                let otherwise = match (replace_missing_value, replace_missing_value_with) {
                    (false, _) => text,
                    (true, Some(with)) => lit(with),
                    (true, None) => lit(ScalarValue::Utf8(None)),
                };
                self.function("coalesce")?.call(vec![group, otherwise])
            }
            ExtractionFn::Partial { expr } => {
                let text = self.text(value, schema)?;
                let matches = self
                    .function("regexp_like")?
                    .call(vec![text.clone(), lit(expr)]);
                when(matches, text).otherwise(lit(ScalarValue::Utf8(None)))?
            }
            ExtractionFn::SearchQuery { query } => {
                let text = self.text(value, schema)?;
                let matches = self.matches(text.clone(), &query)?;
                when(matches, text).otherwise(lit(ScalarValue::Utf8(None)))?
            }
            ExtractionFn::Substring { index, length } => {
                if index < 0 || length.is_some_and(|l| l < 0) {
                    return Err(plan(
                        "substring's index and length may not be negative".into(),
                    ));
                }
                let text = self.text(value, schema)?;
                let mut args = vec![text.clone(), lit(index + 1)];
                args.extend(length.map(lit));
                let part = self.function("substr")?.call(args);
                let length = self.function("character_length")?.call(vec![text]);
                when(lit(index).lt(length), part).otherwise(lit(ScalarValue::Utf8(None)))?
            }
            ExtractionFn::Strlen {} => {
                let text = self.text(value, schema)?;
                let length = self.function("character_length")?.call(vec![text]);
                utf8(self.function("coalesce")?.call(vec![length, lit(0)]))
            }
            ExtractionFn::TimeFormat {
                format,
                time_zone,
                locale,
                granularity,
                as_millis,
            } => {
                if locale.as_deref().is_some_and(|l| !l.starts_with("en")) {
                    return Err(DataFusionError::NotImplemented(format!(
                        "timeFormat's locale {locale:?}: only English names are supported"
                    )));
                }
                let mut time = self.time_of(value, as_millis, schema)?;
                if let Some(granularity) = &granularity {
                    time = self.bucket_of(granularity, time)?;
                }
                match (format, as_millis) {
                    (None, true) => utf8(cast(
                        cast(time, DataType::Timestamp(TimeUnit::Millisecond, None)),
                        DataType::Int64,
                    )),
                    (format, _) => {
                        let zone = time_zone.unwrap_or_else(|| "UTC".into());
                        let pattern = lit(ScalarValue::Utf8(format));
                        self.function("time_format")?
                            .call(vec![time, pattern, lit(zone)])
                    }
                }
            }
            ExtractionFn::Time {
                time_format,
                result_format,
            } => {
                // A value that does not parse is kept as it is.
                let text = self.text(value, schema)?;
                let parsed = self
                    .function("time_parse")?
                    .call(vec![text.clone(), lit(time_format)]);
                let formatted = self
                    .function("time_format")?
                    .call(vec![parsed, lit(result_format)]);
                self.function("coalesce")?.call(vec![formatted, text])
            }
            ExtractionFn::Upper {} => self
                .function("upper")?
                .call(vec![self.text(value, schema)?]),
            ExtractionFn::Lower {} => self
                .function("lower")?
                .call(vec![self.text(value, schema)?]),
            ExtractionFn::Lookup { lookup, missing } => {
                self.look_up(value, &inline_map(lookup)?, &missing, schema)?
            }
            ExtractionFn::RegisteredLookup { lookup, missing } => {
                self.look_up(value, self.registered_lookup(&lookup)?, &missing, schema)?
            }
            ExtractionFn::Cascade { extraction_fns } => {
                let mut value = value;
                for function in &extraction_fns {
                    value = self.extract(value, function, schema)?;
                }
                value
            }
            ExtractionFn::StringFormat {
                format,
                null_handling,
            } => {
                let text = self.text(value, schema)?;
                let formatted = |arg: Expr| -> Result<Expr> {
                    Ok(self
                        .function("string_format")?
                        .call(vec![lit(format.clone()), arg]))
                };
                match null_handling.as_deref().unwrap_or("nullString") {
                    "nullString" => formatted(text)?,
                    "emptyString" => {
                        formatted(self.function("coalesce")?.call(vec![text, lit("")]))?
                    }
                    "returnNull" => when(text.clone().is_null(), lit(ScalarValue::Utf8(None)))
                        .otherwise(formatted(text)?)?,
                    other => {
                        return Err(plan(format!(
                            "stringFormat's nullHandling {other:?} is not one of nullString, emptyString, returnNull"
                        )));
                    }
                }
            }
        })
    }

    /// `value` looked up in `map`, `missing` saying what a key it lacks gives.
    fn look_up(
        &self,
        value: Expr,
        map: &BTreeMap<String, String>,
        missing: &Missing,
        schema: &DFSchema,
    ) -> Result<Expr> {
        let key = self.text(value, schema)?;
        let replace = missing.replace_missing_value_with.as_deref();
        let otherwise = match (
            missing.retain_missing_value,
            replace.filter(|r| !r.is_empty()),
        ) {
            (true, Some(_)) => {
                return Err(plan(
                    "a lookup may not both retainMissingValue and replaceMissingValueWith".into(),
                ));
            }
            (true, None) => key.clone(),
            (false, Some(with)) => lit(with),
            (false, None) => lit(ScalarValue::Utf8(None)),
        };
        map_lookup(key, map, otherwise)
    }

    /// A value as a time: itself if it is one, else its text as milliseconds
    /// (`asMillis`) or ISO 8601.
    fn time_of(&self, value: Expr, as_millis: bool, schema: &DFSchema) -> Result<Expr> {
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        if matches!(value.get_type(schema)?, DataType::Timestamp(..)) {
            return Ok(cast(value, time));
        }
        let text = self.text(value, schema)?;
        Ok(if as_millis {
            cast(try_cast(text, DataType::Int64), time)
        } else {
            self.function("time_parse")?.call(vec![text])
        })
    }

    /// A dimension's value as text: times in ISO 8601, as Druid passes `__time`.
    fn text(&self, value: Expr, schema: &DFSchema) -> Result<Expr> {
        Ok(match value.get_type(schema)? {
            DataType::Utf8 => value,
            DataType::Timestamp(..) => {
                let time = cast(
                    value,
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                );
                self.function("time_format")?
                    .call(vec![time, lit("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")])
            }
            _ => cast(value, DataType::Utf8),
        })
    }

    /// A dimension's value of `output_type`: strings unless it names a number type.
    fn as_type(&self, value: Expr, output_type: Option<&str>, schema: &DFSchema) -> Result<Expr> {
        Ok(match output_type.map(str::to_ascii_uppercase).as_deref() {
            None | Some("STRING") => self.text(value, schema)?,
            Some("LONG") => try_cast(value, DataType::Int64),
            Some("FLOAT" | "DOUBLE") => try_cast(value, DataType::Float64),
            Some(other) => {
                return Err(plan(format!(
                    "outputType {other:?} is not one of STRING, LONG, FLOAT, DOUBLE"
                )));
            }
        })
    }

    /// The map of the registered lookup `name`.
    fn registered_lookup(&self, name: &str) -> Result<&BTreeMap<String, String>> {
        self.lookups
            .get(name)
            .ok_or_else(|| plan(format!("no lookup named {name:?}")))
    }
}

/// An inline lookup's map.
fn inline_map(lookup: InlineLookup) -> Result<BTreeMap<String, String>> {
    match lookup.kind.as_deref() {
        None | Some("map") => Ok(lookup.map),
        Some(other) => Err(DataFusionError::NotImplemented(format!(
            "inline lookups of type {other:?} are not supported; use map"
        ))),
    }
}

/// `key` looked up in `map` as a `CASE`, `otherwise` when it is missing; the key `""`
/// stands for null, as in Druid's lookups.
pub(super) fn map_lookup(
    key: Expr,
    map: &BTreeMap<String, String>,
    otherwise: Expr,
) -> Result<Expr> {
    if map.is_empty() {
        return Ok(otherwise);
    }
    let operand = if map.contains_key("") {
        datafusion::functions::expr_fn::coalesce(vec![key, lit("")])
    } else {
        key
    };
    let mut builder = case(operand);
    for (k, v) in map {
        builder = builder.when(lit(k.clone()), lit(v.clone()));
    }
    builder.otherwise(otherwise)
}
