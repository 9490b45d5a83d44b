//! Druid's native queries as JSON: what each field may hold. Fields Druid has and
//! Grove does not support are refused by name when planned; fields nobody knows are
//! ignored, as Druid's clients send their own.

use serde::Deserialize;
use serde_json::Value;

/// A native query, by its `queryType`.
#[derive(Debug, Deserialize)]
#[serde(tag = "queryType", rename_all = "camelCase")]
pub enum Query {
    Timeseries(Box<Timeseries>),
    #[serde(rename = "topN")]
    TopN(Box<TopN>),
    GroupBy(Box<GroupBy>),
    Scan(Box<Scan>),
    Search(Box<Search>),
    TimeBoundary(TimeBoundary),
    SegmentMetadata(SegmentMetadata),
    DataSourceMetadata(DataSourceMetadata),
}

impl Query {
    pub fn context(&self) -> &Context {
        match self {
            Query::Timeseries(q) => &q.common.context,
            Query::TopN(q) => &q.common.context,
            Query::GroupBy(q) => &q.common.context,
            Query::Scan(q) => &q.common.context,
            Query::Search(q) => &q.common.context,
            Query::TimeBoundary(q) => &q.context,
            Query::SegmentMetadata(q) => &q.context,
            Query::DataSourceMetadata(q) => &q.context,
        }
    }
}

/// What the aggregating queries share.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Common {
    pub data_source: DataSource,
    #[serde(default)]
    pub intervals: Intervals,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub virtual_columns: Vec<VirtualColumn>,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeseries {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default)]
    pub aggregations: Vec<Aggregator>,
    #[serde(default)]
    pub post_aggregations: Vec<PostAggregator>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub descending: bool,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopN {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub granularity: Granularity,
    pub dimension: DimensionSpec,
    pub threshold: usize,
    pub metric: TopNMetric,
    #[serde(default)]
    pub aggregations: Vec<Aggregator>,
    #[serde(default)]
    pub post_aggregations: Vec<PostAggregator>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupBy {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default)]
    pub dimensions: Vec<DimensionSpec>,
    #[serde(default)]
    pub aggregations: Vec<Aggregator>,
    #[serde(default)]
    pub post_aggregations: Vec<PostAggregator>,
    #[serde(default)]
    pub having: Option<Having>,
    #[serde(default)]
    pub limit_spec: Option<LimitSpec>,
    #[serde(default)]
    pub subtotals_spec: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scan {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub result_format: ScanFormat,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub order: ScanOrder,
    #[serde(default)]
    pub batch_size: Option<usize>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScanFormat {
    #[default]
    List,
    #[serde(alias = "compactedlist")]
    CompactedList,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScanOrder {
    #[default]
    #[serde(alias = "NONE")]
    None,
    #[serde(alias = "ASCENDING")]
    Ascending,
    #[serde(alias = "DESCENDING")]
    Descending,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Search {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default)]
    pub search_dimensions: Vec<DimensionSpec>,
    pub query: SearchSpec,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub sort: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeBoundary {
    pub data_source: DataSource,
    #[serde(default)]
    pub bound: Option<String>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub intervals: Intervals,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMetadata {
    pub data_source: DataSource,
    #[serde(default)]
    pub intervals: Intervals,
    #[serde(default)]
    pub merge: bool,
    #[serde(default)]
    pub analysis_types: Option<Vec<String>>,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceMetadata {
    pub data_source: DataSource,
    #[serde(default)]
    pub context: Context,
}

/// The context keys Grove reads; the others are accepted and ignored, as Druid does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// Milliseconds; 0 is none.
    #[serde(default)]
    pub timeout: Option<Value>,
    #[serde(default)]
    pub query_id: Option<String>,
    #[serde(default)]
    pub use_cache: Option<Value>,
    #[serde(default)]
    pub populate_cache: Option<Value>,
    #[serde(default)]
    pub priority: Option<Value>,
    #[serde(default)]
    pub skip_empty_buckets: Option<Value>,
    #[serde(default)]
    pub grand_total: Option<Value>,
}

/// `"wikipedia"` or `{"type": "table", "name": "wikipedia"}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DataSource {
    Name(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

/// A list of `start/end` strings, one such string, or `{"type": "intervals",
/// "intervals": [...]}`; none is all of time.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Intervals {
    #[default]
    All,
    One(String),
    List(Vec<String>),
    Object {
        #[serde(rename = "type")]
        kind: String,
        intervals: Vec<String>,
    },
}

/// `"day"`, or `{"type": "period", ...}`, `{"type": "duration", ...}`,
/// `{"type": "all"}`, `{"type": "none"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Granularity {
    Simple(String),
    Object(GranularityObject),
}

impl Default for Granularity {
    fn default() -> Self {
        Granularity::Simple("all".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GranularityObject {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub duration: Option<Value>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

/// A dimension: a column's name, or a spec (`default`, `extraction`, `lookup`, or a
/// filtered one over a `delegate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DimensionSpec {
    Name(String),
    Object(Box<DimensionObject>),
}

/// A dimension spec's fields, by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionObject {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub dimension: Option<String>,
    #[serde(default)]
    pub output_name: Option<String>,
    #[serde(default)]
    pub output_type: Option<String>,
    #[serde(default)]
    pub extraction_fn: Option<Value>,
    /// A filtered spec's: the spec it filters, and the values it keeps.
    #[serde(default)]
    pub delegate: Option<DimensionSpec>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default = "yes", deserialize_with = "flexible_bool")]
    pub is_whitelist: bool,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// A `lookup` spec's: a registered lookup's `name` or an inline `lookup` map, and
    /// what a missing key gives.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lookup: Option<Value>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub retain_missing_value: bool,
    #[serde(default)]
    pub replace_missing_value_with: Option<String>,
}

impl DimensionSpec {
    /// The column it reads.
    pub fn dimension(&self) -> &str {
        match self {
            DimensionSpec::Name(name) => name,
            DimensionSpec::Object(o) => match (&o.dimension, &o.delegate) {
                (Some(dimension), _) => dimension,
                (None, Some(delegate)) => delegate.dimension(),
                (None, None) => "",
            },
        }
    }

    /// The name its values are answered under.
    pub fn output_name(&self) -> &str {
        match self {
            DimensionSpec::Name(name) => name,
            DimensionSpec::Object(o) => match (&o.output_name, &o.delegate) {
                (Some(name), _) => name,
                (None, Some(delegate)) => delegate.output_name(),
                (None, None) => self.dimension(),
            },
        }
    }
}

fn yes() -> bool {
    true
}

/// Filters, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Filter {
    Selector {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        #[serde(default)]
        value: Value,
    },
    #[serde(alias = "equality")]
    Equals {
        column: String,
        #[serde(rename = "matchValueType", default)]
        match_value_type: Option<String>,
        #[serde(rename = "matchValue")]
        match_value: Value,
    },
    Null {
        column: String,
    },
    In {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        values: Vec<Value>,
    },
    Bound {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        #[serde(default)]
        lower: Option<Value>,
        #[serde(default)]
        upper: Option<Value>,
        #[serde(rename = "lowerStrict", default, deserialize_with = "flexible_bool")]
        lower_strict: bool,
        #[serde(rename = "upperStrict", default, deserialize_with = "flexible_bool")]
        upper_strict: bool,
        #[serde(default)]
        ordering: Option<Value>,
    },
    Range {
        column: String,
        #[serde(rename = "matchValueType", default)]
        match_value_type: Option<String>,
        #[serde(default)]
        lower: Option<Value>,
        #[serde(default)]
        upper: Option<Value>,
        #[serde(rename = "lowerOpen", default, deserialize_with = "flexible_bool")]
        lower_open: bool,
        #[serde(rename = "upperOpen", default, deserialize_with = "flexible_bool")]
        upper_open: bool,
    },
    And {
        fields: Vec<Filter>,
    },
    Or {
        fields: Vec<Filter>,
    },
    Not {
        field: Box<Filter>,
    },
    Interval {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        intervals: Vec<String>,
    },
    Like {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        pattern: String,
        #[serde(default)]
        escape: Option<String>,
    },
    Regex {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        pattern: String,
    },
    Search {
        dimension: String,
        #[serde(default, rename = "extractionFn")]
        extraction_fn: Option<Value>,
        query: SearchSpec,
    },
    Expression {
        expression: String,
    },
    True,
    False,
    ColumnComparison {
        dimensions: Vec<DimensionSpec>,
    },
}

/// What a `search` filter or query looks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SearchSpec {
    Contains {
        value: String,
        #[serde(default, alias = "caseSensitive", deserialize_with = "flexible_bool")]
        case_sensitive: bool,
    },
    InsensitiveContains {
        value: String,
    },
    Fragment {
        values: Vec<String>,
        #[serde(default, alias = "caseSensitive", deserialize_with = "flexible_bool")]
        case_sensitive: bool,
    },
    Regex {
        pattern: String,
    },
}

/// Aggregators, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregator {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub fields: Option<Vec<DimensionSpec>>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub by_row: bool,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub round: bool,
    #[serde(default)]
    pub time_column: Option<String>,
    /// `filtered`'s filter and aggregator.
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub aggregator: Option<Box<Aggregator>>,
}

/// Post-aggregators, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostAggregator {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "fn")]
    pub function: Option<String>,
    #[serde(default)]
    pub fields: Vec<PostAggregator>,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub ordering: Option<String>,
}

/// A topN's ordering: a metric's name, or a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TopNMetric {
    Name(String),
    Spec(TopNMetricSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TopNMetricSpec {
    Numeric {
        metric: String,
    },
    Inverted {
        metric: Box<TopNMetric>,
    },
    Dimension {
        #[serde(default)]
        ordering: Option<String>,
        #[serde(default, rename = "previousStop")]
        previous_stop: Option<String>,
    },
    Lexicographic {
        #[serde(default, rename = "previousStop")]
        previous_stop: Option<String>,
    },
    Alphanumeric {
        #[serde(default, rename = "previousStop")]
        previous_stop: Option<String>,
    },
}

/// A groupBy's `having`, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Having {
    GreaterThan {
        aggregation: String,
        value: Value,
    },
    LessThan {
        aggregation: String,
        value: Value,
    },
    EqualTo {
        aggregation: String,
        value: Value,
    },
    And {
        #[serde(rename = "havingSpecs")]
        having_specs: Vec<Having>,
    },
    Or {
        #[serde(rename = "havingSpecs")]
        having_specs: Vec<Having>,
    },
    Not {
        #[serde(rename = "havingSpec")]
        having_spec: Box<Having>,
    },
    Filter {
        filter: Filter,
    },
    DimSelector {
        dimension: String,
        value: Value,
    },
}

/// A groupBy's `limitSpec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitSpec {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub columns: Vec<OrderByColumn>,
}

/// `"name"` or `{"dimension", "direction", "dimensionOrder"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OrderByColumn {
    Name(String),
    Spec {
        dimension: String,
        #[serde(default)]
        direction: Option<String>,
        #[serde(default, rename = "dimensionOrder")]
        dimension_order: Option<Value>,
    },
}

/// `{"type": "expression", "name", "expression", "outputType"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualColumn {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub expression: String,
    #[serde(default)]
    pub output_type: Option<String>,
}

/// `true`, `false`, or the strings `"true"` and `"false"`, as Druid takes them.
pub(super) fn flexible_bool<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected true or false, not {other}"
        ))),
    }
}
