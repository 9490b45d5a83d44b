//! Druid's expression language (`docs/querying/math-expr.md`), the text of virtual
//! columns, `expression` filters, aggregators' `expression` and `expression`
//! post-aggregators: parsed ([`parse`]) and compiled to a DataFusion expression over a
//! schema, so it runs where the rest of the plan runs.
//!
//! Druid's types are LONG, DOUBLE and STRING, and its semantics are kept:
//! - `__time` (any time column) is a LONG of milliseconds;
//! - comparisons and logical operators answer LONG 1 or 0 (booleans inside an
//!   expression, 1/0 when they are its value);
//! - a number is true when it is positive, a string when it is `'true'` in any case;
//! - `+` of two strings concatenates them; `/` of two LONGs is a LONG;
//! - nulls propagate as in SQL (Druid's SQL-compatible mode), `&&` and `||` with
//!   three-valued logic;
//! - a column that does not exist is null.
//!
//! The functions of Druid's docs are compiled to DataFusion's and Grove's functions;
//! those on arrays, JSON, lambdas, IP addresses and bit patterns are refused by name.

pub mod parse;

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::conditional_expressions::CaseBuilder;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Operator, case, cast, lit, try_cast, when,
};
use datafusion::prelude::{SessionContext, ident};

pub use parse::{Node, Op, parse};

use super::filter::like;
use super::spec::VirtualColumn;
use crate::druid::rewrite::{Lookups, groups_balance};

/// `virtuals` in an order where each comes after those it names, so that each can
/// be added as a column over the table and those before it (a virtual column hides a
/// table's column of its name). Refuses two of one name and a cycle (one naming
/// itself, directly or not).
pub fn in_dependency_order(virtuals: &[VirtualColumn]) -> Result<Vec<&VirtualColumn>> {
    let mut by_name: HashMap<&str, (&VirtualColumn, BTreeSet<String>)> = HashMap::new();
    for column in virtuals {
        let mut names = BTreeSet::new();
        parse(&column.expression)?.columns(&mut names);
        if by_name.insert(&column.name, (column, names)).is_some() {
            return Err(DataFusionError::Plan(format!(
                "two virtual columns are named {:?}",
                column.name
            )));
        }
    }
    // Depth first, without recursion: a column is placed once all it names are.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    for column in virtuals {
        let mut path: Vec<&str> = vec![&column.name];
        while let Some(&name) = path.last() {
            if placed.contains(name) {
                path.pop();
                continue;
            }
            let (virtual_column, names) = &by_name[name];
            let next = names
                .iter()
                .map(String::as_str)
                .find(|n| by_name.contains_key(n) && !placed.contains(n));
            match next {
                Some(n) if path.contains(&n) => {
                    return Err(DataFusionError::Plan(format!(
                        "virtual column {n:?} refers to itself"
                    )));
                }
                Some(n) => path.push(n),
                None => {
                    placed.insert(name);
                    order.push(*virtual_column);
                    path.pop();
                }
            }
        }
    }
    Ok(order)
}

/// Group `group` of `pattern`'s first match in `text` (0: the whole match), or NULL.
/// The pattern is put in a group of its own, so its group n is the match's n + 1.
pub(super) fn regex_group(
    context: &SessionContext,
    text: Expr,
    pattern: &str,
    group: i64,
) -> Result<Expr> {
    if !groups_balance(pattern) {
        return Err(DataFusionError::Plan(format!(
            "pattern {pattern:?} has unbalanced parentheses or a comment"
        )));
    }
    if !(0..i64::from(u16::MAX)).contains(&group) {
        return Err(DataFusionError::Plan(format!(
            "regex group {group} is not a small whole number"
        )));
    }
    let matched = context
        .udf("regexp_match")?
        .call(vec![text, lit(format!("({pattern})"))]);
    Ok(context
        .udf("array_element")?
        .call(vec![matched, lit(group + 1)]))
}

/// What Druid calls the type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Long,
    Double,
    Text,
    Bool,
    Time,
    Null,
}

/// Compiles expressions over the columns of one schema.
pub struct Compiler<'a> {
    context: &'a SessionContext,
    schema: &'a DFSchema,
    lookups: &'a Lookups,
}

impl<'a> Compiler<'a> {
    pub fn new(context: &'a SessionContext, schema: &'a DFSchema, lookups: &'a Lookups) -> Self {
        Compiler {
            context,
            schema,
            lookups,
        }
    }

    /// The value of `text`, as Druid answers it: LONG, DOUBLE or STRING.
    pub fn value(&self, text: &str) -> Result<Expr> {
        let compiled = self.compile(&parse(text)?)?;
        self.output(compiled)
    }

    /// Whether `text` holds for a row, as an `expression` filter.
    pub fn predicate(&self, text: &str) -> Result<Expr> {
        let compiled = self.compile(&parse(text)?)?;
        self.truth(compiled)
    }

    /// A virtual column's value, of its `outputType` when it has one.
    pub fn virtual_column(&self, column: &VirtualColumn) -> Result<Expr> {
        if column.kind != "expression" {
            return Err(DataFusionError::NotImplemented(format!(
                "virtual column {:?}: type {:?} is not supported; use expression",
                column.name, column.kind
            )));
        }
        let value = self.value(&column.expression).map_err(|e| match e {
            DataFusionError::Plan(why) => {
                DataFusionError::Plan(format!("virtual column {:?}: {why}", column.name))
            }
            other => other,
        })?;
        match column.output_type.as_deref() {
            None => Ok(value),
            Some(kind) => self.cast_to(value, kind),
        }
    }

    fn compile(&self, node: &Node) -> Result<Expr> {
        Ok(match node {
            Node::Long(n) => lit(*n),
            Node::Double(d) => lit(*d),
            Node::Text(s) => lit(s.clone()),
            Node::Null => lit(ScalarValue::Null),
            Node::Column(name) => self.column(name)?,
            Node::Not(inner) => {
                let inner = self.compile(inner)?;
                Expr::Not(Box::new(self.truth(inner)?))
            }
            Node::Negate(inner) => {
                let inner = self.compile(inner)?;
                Expr::Negative(Box::new(self.number(inner)?))
            }
            Node::Binary(op, left, right) => {
                let (left, right) = (self.compile(left)?, self.compile(right)?);
                self.binary(*op, left, right)?
            }
            Node::Call(name, args) => self.call(name, args)?,
        })
    }

    fn column(&self, name: &str) -> Result<Expr> {
        Ok(if self.schema.has_column_with_unqualified_name(name) {
            ident(name)
        } else {
            lit(ScalarValue::Null)
        })
    }

    fn kind(&self, expr: &Expr) -> Result<Kind> {
        let data_type = expr.get_type(self.schema)?;
        kind_of(&data_type).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{expr} is of type {data_type}, which Druid's expressions do not take"
            ))
        })
    }

    fn udf(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        Ok(self.context.udf(name)?.call(args))
    }

    /// A value as an expression answers it: booleans as 1/0, times as milliseconds.
    fn output(&self, expr: Expr) -> Result<Expr> {
        Ok(match self.kind(&expr)? {
            Kind::Bool => cast(expr, DataType::Int64),
            Kind::Time => millis(expr),
            _ => expr,
        })
    }

    /// A value as a number: a LONG or a DOUBLE (strings parsed, NULL when they are not
    /// numbers).
    fn number(&self, expr: Expr) -> Result<Expr> {
        Ok(match self.kind(&expr)? {
            Kind::Long | Kind::Double => expr,
            Kind::Time => millis(expr),
            Kind::Bool | Kind::Null => cast(expr, DataType::Int64),
            Kind::Text => try_cast(expr, DataType::Float64),
        })
    }

    fn long(&self, expr: Expr) -> Result<Expr> {
        Ok(match self.kind(&expr)? {
            // "12" and "12.7" are both 12.
            Kind::Text => self.udf(
                "coalesce",
                vec![
                    try_cast(expr.clone(), DataType::Int64),
                    try_cast(try_cast(expr, DataType::Float64), DataType::Int64),
                ],
            )?,
            _ => cast(self.number(expr)?, DataType::Int64),
        })
    }

    fn double(&self, expr: Expr) -> Result<Expr> {
        Ok(cast(self.number(expr)?, DataType::Float64))
    }

    fn text(&self, expr: Expr) -> Result<Expr> {
        Ok(match self.kind(&expr)? {
            Kind::Text if expr.get_type(self.schema)? == DataType::Utf8 => expr,
            Kind::Text | Kind::Null => cast(expr, DataType::Utf8),
            _ => cast(self.output(expr)?, DataType::Utf8),
        })
    }

    /// A value as a timestamp, for the time functions (numbers are milliseconds).
    fn time(&self, expr: Expr) -> Result<Expr> {
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Ok(match self.kind(&expr)? {
            Kind::Time => cast(expr, time),
            _ => cast(self.long(expr)?, time),
        })
    }

    /// A value as a condition.
    fn truth(&self, expr: Expr) -> Result<Expr> {
        Ok(match self.kind(&expr)? {
            Kind::Bool => expr,
            Kind::Long | Kind::Double => expr.gt(lit(0)),
            Kind::Time => millis(expr).gt(lit(0)),
            Kind::Text => self.udf("lower", vec![self.text(expr)?])?.eq(lit("true")),
            Kind::Null => cast(expr, DataType::Boolean),
        })
    }

    /// Two numbers of one type: LONGs when both are, else DOUBLEs.
    fn numbers(&self, left: Expr, right: Expr) -> Result<(Expr, Expr)> {
        let (left, right) = (self.number(left)?, self.number(right)?);
        let longs = self.kind(&left)? == Kind::Long && self.kind(&right)? == Kind::Long;
        let data_type = if longs {
            DataType::Int64
        } else {
            DataType::Float64
        };
        Ok((cast(left, data_type.clone()), cast(right, data_type)))
    }

    fn binary(&self, op: Op, left: Expr, right: Expr) -> Result<Expr> {
        let (lk, rk) = (self.kind(&left)?, self.kind(&right)?);
        let strings = matches!(
            (lk, rk),
            (Kind::Text, Kind::Text | Kind::Null) | (Kind::Null, Kind::Text)
        );
        let operator = match op {
            Op::And | Op::Or => {
                let (left, right) = (self.truth(left)?, self.truth(right)?);
                return Ok(if op == Op::And {
                    left.and(right)
                } else {
                    left.or(right)
                });
            }
            // Two strings concatenate; a string and a number add as numbers.
            Op::Plus if strings => {
                return Ok(concat(self.text(left)?, self.text(right)?));
            }
            Op::Power => {
                // LONGs as Druid's LongMath.pow, through a DOUBLE: exact up to 2^53.
                let negative =
                    matches!(&right, Expr::Literal(ScalarValue::Int64(Some(n)), _) if *n < 0);
                let (left, right) = self.numbers(left, right)?;
                let longs = self.kind(&left)? == Kind::Long;
                if longs && negative {
                    return Err(DataFusionError::Plan(
                        "a LONG to a negative power: the exponent may not be negative".into(),
                    ));
                }
                let power = self.udf("power", vec![left, right])?;
                return Ok(if longs {
                    cast(power, DataType::Int64)
                } else {
                    power
                });
            }
            Op::Multiply => Operator::Multiply,
            Op::Divide => Operator::Divide,
            Op::Modulo => Operator::Modulo,
            Op::Plus => Operator::Plus,
            Op::Minus => Operator::Minus,
            Op::Less => Operator::Lt,
            Op::LessEq => Operator::LtEq,
            Op::Greater => Operator::Gt,
            Op::GreaterEq => Operator::GtEq,
            Op::Equal => Operator::Eq,
            Op::NotEqual => Operator::NotEq,
        };
        let comparison = matches!(
            op,
            Op::Less | Op::LessEq | Op::Greater | Op::GreaterEq | Op::Equal | Op::NotEqual
        );
        let (left, right) = if comparison && strings {
            (self.text(left)?, self.text(right)?)
        } else {
            self.numbers(left, right)?
        };
        Ok(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(left),
            operator,
            Box::new(right),
        )))
    }

    /// `kind` is Druid's name of a type: `LONG`, `DOUBLE`, `FLOAT` or `STRING`.
    fn cast_to(&self, expr: Expr, kind: &str) -> Result<Expr> {
        match kind.to_ascii_uppercase().as_str() {
            "LONG" => self.long(expr),
            "DOUBLE" | "FLOAT" => self.double(expr),
            "STRING" => self.text(expr),
            array if array.starts_with("ARRAY") => Err(DataFusionError::NotImplemented(format!(
                "arrays ({kind}) are not supported in expressions"
            ))),
            _ => Err(DataFusionError::Plan(format!(
                "type {kind:?} is not one of LONG, DOUBLE, FLOAT, STRING"
            ))),
        }
    }

    fn call(&self, name: &str, nodes: &[Node]) -> Result<Expr> {
        let call = Call {
            compiler: self,
            name,
            nodes,
        };
        call.compile()
    }
}

/// One function call being compiled.
struct Call<'c, 'a> {
    compiler: &'c Compiler<'a>,
    name: &'c str,
    nodes: &'c [Node],
}

/// Functions of Druid's docs that Grove refuses by name.
const UNSUPPORTED: [&str; 20] = [
    "bloom_filter_test",
    "copysign",
    "getexponent",
    "nextafter",
    "nextup",
    "remainder",
    "rint",
    "scalb",
    "ulp",
    "bitwiseconvertdoubletolongbits",
    "bitwiseconvertlongbitstodouble",
    "string_to_array",
    "scalar_in_array",
    "map",
    "cartesian_map",
    "filter",
    "fold",
    "cartesian_fold",
    "any",
    "all",
];

/// Prefixes of families of Druid's functions Grove refuses by name.
const UNSUPPORTED_FAMILIES: [&str; 7] = [
    "array",
    "mv_",
    "json_",
    "ipv4_",
    "ipv6_",
    "human_readable_",
    "parse_json",
];

impl Call<'_, '_> {
    fn plan(&self, why: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Plan(format!("function {}: {why}", self.name))
    }

    /// Checks the number of arguments.
    fn takes(&self, least: usize, most: usize) -> Result<()> {
        if (least..=most).contains(&self.nodes.len()) {
            return Ok(());
        }
        let takes = match (least, most) {
            (l, m) if l == m => format!("{l}"),
            (l, usize::MAX) => format!("at least {l}"),
            (l, m) => format!("{l} to {m}"),
        };
        Err(self.plan(format!("takes {takes} arguments, not {}", self.nodes.len())))
    }

    fn arg(&self, i: usize) -> Result<Expr> {
        self.compiler.compile(&self.nodes[i])
    }

    fn args(&self) -> Result<Vec<Expr>> {
        (0..self.nodes.len()).map(|i| self.arg(i)).collect()
    }

    fn text(&self, i: usize) -> Result<Expr> {
        self.compiler.text(self.arg(i)?)
    }

    fn long(&self, i: usize) -> Result<Expr> {
        self.compiler.long(self.arg(i)?)
    }

    fn double(&self, i: usize) -> Result<Expr> {
        self.compiler.double(self.arg(i)?)
    }

    fn time(&self, i: usize) -> Result<Expr> {
        self.compiler.time(self.arg(i)?)
    }

    /// The texts of arguments `from..` (pattern, time zone...), each optional.
    fn texts_from(&self, from: usize) -> Result<Vec<Expr>> {
        (from..self.nodes.len()).map(|i| self.text(i)).collect()
    }

    /// Argument `i`, which must be a string literal.
    fn literal(&self, i: usize) -> Result<String> {
        match &self.nodes[i] {
            Node::Text(s) => Ok(s.clone()),
            _ => Err(self.plan(format!("argument {} must be a string literal", i + 1))),
        }
    }

    fn udf(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        self.compiler.udf(name, args)
    }

    fn compile(&self) -> Result<Expr> {
        let c = self.compiler;
        let name = self.name;
        Ok(match name {
            "cast" => {
                self.takes(2, 2)?;
                c.cast_to(self.arg(0)?, &self.literal(1)?)?
            }
            "if" => {
                self.takes(3, 3)?;
                let condition = c.truth(self.arg(0)?)?;
                when(condition, c.output(self.arg(1)?)?).otherwise(c.output(self.arg(2)?)?)?
            }
            "nvl" | "coalesce" => {
                self.takes(if name == "nvl" { 2 } else { 1 }, usize::MAX)?;
                let values = self
                    .args()?
                    .into_iter()
                    .map(|a| c.output(a))
                    .collect::<Result<_>>()?;
                self.udf("coalesce", values)?
            }
            "isnull" => {
                self.takes(1, 1)?;
                self.arg(0)?.is_null()
            }
            "notnull" => {
                self.takes(1, 1)?;
                self.arg(0)?.is_not_null()
            }
            "case_searched" => {
                self.takes(2, usize::MAX)?;
                let args = self.args()?;
                let mut pairs = Vec::new();
                for pair in args.chunks(2) {
                    match pair {
                        [condition, then] => {
                            pairs.push((c.truth(condition.clone())?, then.clone()))
                        }
                        _ => return self.cases(pairs, pair.first().cloned()),
                    }
                }
                return self.cases(pairs, None);
            }
            "case_simple" => {
                self.takes(3, usize::MAX)?;
                let mut args = self.args()?;
                let subject = args.remove(0);
                let mut pairs = Vec::new();
                for pair in args.chunks(2) {
                    match pair {
                        [value, then] => pairs.push((
                            c.binary(Op::Equal, subject.clone(), value.clone())?,
                            then.clone(),
                        )),
                        _ => return self.cases(pairs, pair.first().cloned()),
                    }
                }
                return self.cases(pairs, None);
            }
            "like" => {
                self.takes(2, 3)?;
                let escape = match self.nodes.len() {
                    3 => Some(self.literal(2)?),
                    _ => None,
                };
                like(self.text(0)?, &self.literal(1)?, escape.as_deref())
                    .map_err(|why| self.plan(why))?
            }
            _ => return self.strings(),
        })
    }

    /// `CASE WHEN condition THEN value ... ELSE otherwise END`, the values as answers.
    fn cases(&self, pairs: Vec<(Expr, Expr)>, otherwise: Option<Expr>) -> Result<Expr> {
        let c = self.compiler;
        let otherwise = match otherwise {
            Some(e) => c.output(e)?,
            None => lit(ScalarValue::Null),
        };
        let mut builder = None::<CaseBuilder>;
        for (condition, then) in pairs {
            let then = c.output(then)?;
            builder = Some(match builder {
                None => when(condition, then),
                Some(mut b) => b.when(condition, then),
            });
        }
        match builder {
            Some(mut b) => b.otherwise(otherwise),
            None => Ok(otherwise),
        }
    }

    fn strings(&self) -> Result<Expr> {
        let c = self.compiler;
        let name = self.name;
        Ok(match name {
            "concat" => {
                self.takes(1, usize::MAX)?;
                let texts: Vec<Expr> = (0..self.nodes.len())
                    .map(|i| self.text(i))
                    .collect::<Result<_>>()?;
                texts
                    .into_iter()
                    .reduce(concat)
                    .unwrap_or(lit(ScalarValue::Utf8(None)))
            }
            "format" => {
                self.takes(1, usize::MAX)?;
                let mut args = vec![self.text(0)?];
                for i in 1..self.nodes.len() {
                    args.push(c.output(self.arg(i)?)?);
                }
                self.udf("string_format", args)?
            }
            "lookup" => {
                self.takes(2, 3)?;
                let lookup = self.literal(1)?;
                let map = c
                    .lookups
                    .get(&lookup)
                    .ok_or_else(|| self.plan(format!("no lookup named {lookup:?}")))?;
                let otherwise = match self.nodes.len() {
                    3 => lit(self.literal(2)?),
                    _ => lit(ScalarValue::Utf8(None)),
                };
                if map.is_empty() {
                    return Ok(otherwise);
                }
                let mut builder = case(self.text(0)?);
                for (key, value) in map {
                    builder = builder.when(lit(key.clone()), lit(value.clone()));
                }
                builder.otherwise(otherwise)?
            }
            "parse_long" => {
                self.takes(1, 2)?;
                let mut args = vec![self.text(0)?];
                if self.nodes.len() == 2 {
                    args.push(self.long(1)?);
                }
                self.udf("parse_long", args)?
            }
            "regexp_extract" => {
                self.takes(2, 3)?;
                let pattern = self.literal(1)?;
                let group = match self.nodes.get(2) {
                    None => 0,
                    Some(Node::Long(n)) => *n,
                    Some(_) => return Err(self.plan("the group must be a whole number")),
                };
                regex_group(c.context, self.text(0)?, &pattern, group)?
            }
            "regexp_like" => {
                self.takes(2, 2)?;
                self.udf("regexp_like", vec![self.text(0)?, self.text(1)?])?
            }
            "regexp_replace" => {
                self.takes(3, 3)?;
                let args = vec![self.text(0)?, self.text(1)?, self.text(2)?, lit("g")];
                self.udf("regexp_replace", args)?
            }
            "contains_string" | "icontains_string" => {
                self.takes(2, 2)?;
                let (mut haystack, mut needle) = (self.text(0)?, self.text(1)?);
                if name == "icontains_string" {
                    haystack = self.udf("lower", vec![haystack])?;
                    needle = self.udf("lower", vec![needle])?;
                }
                self.udf("strpos", vec![haystack, needle])?.gt(lit(0))
            }
            "replace" => {
                self.takes(3, 3)?;
                self.udf("replace", vec![self.text(0)?, self.text(1)?, self.text(2)?])?
            }
            "substring" => {
                // Java's substring from a 0-based index; a negative length is the rest,
                // an index past the end NULL.
                self.takes(3, 3)?;
                let (text, index, length) = (self.text(0)?, self.long(1)?, self.long(2)?);
                let start = index.clone() + lit(1i64);
                let rest = self.udf("substr", vec![text.clone(), start.clone()])?;
                let part = self.udf("substr", vec![text.clone(), start, length.clone()])?;
                let within = index.lt(self.udf("character_length", vec![text])?);
                when(within, when(length.lt(lit(0i64)), rest).otherwise(part)?)
                    .otherwise(lit(ScalarValue::Utf8(None)))?
            }
            "left" | "right" | "repeat" => {
                self.takes(2, 2)?;
                self.udf(name, vec![self.text(0)?, self.long(1)?])?
            }
            "lpad" | "rpad" => {
                self.takes(3, 3)?;
                self.udf(name, vec![self.text(0)?, self.long(1)?, self.text(2)?])?
            }
            "strlen" => {
                self.takes(1, 1)?;
                cast(
                    self.udf("character_length", vec![self.text(0)?])?,
                    DataType::Int64,
                )
            }
            "strpos" => {
                // 0-based, -1 when not found, searching from an index (none below 0);
                // NULL when either string is.
                self.takes(2, 3)?;
                let (haystack, needle) = (self.text(0)?, self.text(1)?);
                let from = match self.nodes.len() {
                    3 => self.udf("greatest", vec![self.long(2)?, lit(0i64)])?,
                    _ => lit(0i64),
                };
                let either_null = haystack.clone().is_null().or(needle.clone().is_null());
                let rest = self.udf("substr", vec![haystack, from.clone() + lit(1i64)])?;
                let found = cast(self.udf("strpos", vec![rest, needle])?, DataType::Int64);
                when(either_null, lit(ScalarValue::Int64(None)))
                    .when(found.clone().gt(lit(0i64)), found - lit(1i64) + from)
                    .otherwise(lit(-1i64))?
            }
            "trim" | "ltrim" | "rtrim" => {
                self.takes(1, 2)?;
                let function = if name == "trim" { "btrim" } else { name };
                let mut args = vec![self.text(0)?];
                if self.nodes.len() == 2 {
                    args.push(self.text(1)?);
                }
                self.udf(function, args)?
            }
            "lower" | "upper" | "reverse" => {
                self.takes(1, 1)?;
                self.udf(name, vec![self.text(0)?])?
            }
            _ => return self.times(),
        })
    }

    fn times(&self) -> Result<Expr> {
        let c = self.compiler;
        let name = self.name;
        Ok(match name {
            "timestamp" | "timestamp_parse" | "unix_timestamp" => {
                self.takes(1, if name == "timestamp_parse" { 3 } else { 2 })?;
                let parsed = self.udf("time_parse", self.texts_from(0)?)?;
                let ms = millis(parsed);
                if name == "unix_timestamp" {
                    ms / lit(1000i64)
                } else {
                    ms
                }
            }
            "timestamp_floor" | "timestamp_ceil" => {
                self.takes(2, 4)?;
                let mut args = vec![self.time(0)?, self.text(1)?];
                if self.nodes.len() > 2 {
                    // An origin in milliseconds or ISO 8601.
                    let origin = self.arg(2)?;
                    args.push(match c.kind(&origin)? {
                        Kind::Text => self.udf("time_parse", vec![origin])?,
                        _ => c.time(origin)?,
                    });
                }
                if self.nodes.len() > 3 {
                    args.push(self.text(3)?);
                }
                let function = if name == "timestamp_floor" {
                    "time_floor"
                } else {
                    "time_ceil"
                };
                millis(self.udf(function, args)?)
            }
            "timestamp_shift" => {
                self.takes(3, 4)?;
                let mut args = vec![self.time(0)?, self.text(1)?, self.long(2)?];
                args.extend(self.texts_from(3)?);
                millis(self.udf("time_shift", args)?)
            }
            "timestamp_extract" => {
                self.takes(2, 3)?;
                let mut args = vec![self.time(0)?];
                args.extend(self.texts_from(1)?);
                self.udf("time_extract", args)?
            }
            "timestamp_format" => {
                self.takes(1, 3)?;
                let mut args = vec![self.time(0)?];
                args.extend(self.texts_from(1)?);
                self.udf("time_format", args)?
            }
            _ => return self.math(),
        })
    }
}

impl Call<'_, '_> {
    fn math(&self) -> Result<Expr> {
        let (c, call, name) = (self.compiler, self, self.name);
        // One DOUBLE in, one DOUBLE out, under DataFusion's name.
        let unary = match name {
            "acos" | "asin" | "atan" | "cbrt" | "ceil" | "cos" | "cosh" | "cot" | "exp"
            | "floor" | "log10" | "sin" | "sinh" | "sqrt" | "tan" | "tanh" | "signum" => Some(name),
            "log" => Some("ln"),
            "todegrees" => Some("degrees"),
            "toradians" => Some("radians"),
            _ => None,
        };
        if let Some(function) = unary {
            call.takes(1, 1)?;
            return self.udf(function, vec![call.double(0)?]);
        }
        Ok(match name {
            "abs" => {
                call.takes(1, 1)?;
                self.udf("abs", vec![c.number(call.arg(0)?)?])?
            }
            "expm1" => {
                call.takes(1, 1)?;
                self.udf("exp", vec![call.double(0)?])? - lit(1.0)
            }
            "log1p" => {
                call.takes(1, 1)?;
                self.udf("ln", vec![call.double(0)? + lit(1.0)])?
            }
            "atan2" | "pow" => {
                call.takes(2, 2)?;
                let function = if name == "pow" { "power" } else { name };
                self.udf(function, vec![call.double(0)?, call.double(1)?])?
            }
            "hypot" => {
                call.takes(2, 2)?;
                let (x, y) = (call.double(0)?, call.double(1)?);
                self.udf("sqrt", vec![x.clone() * x + y.clone() * y])?
            }
            "pi" => {
                call.takes(0, 0)?;
                lit(std::f64::consts::PI)
            }
            "div" => {
                // The quotient made whole: div(7.5, 2) is 3.
                call.takes(2, 2)?;
                cast(
                    c.binary(Op::Divide, call.arg(0)?, call.arg(1)?)?,
                    DataType::Int64,
                )
            }
            "safe_divide" => {
                // NULL when the divisor is 0.
                call.takes(2, 2)?;
                let divisor = c.number(call.arg(1)?)?;
                let divisor = self.udf("nullif", vec![divisor, lit(0)])?;
                c.binary(Op::Divide, call.arg(0)?, divisor)?
            }
            "round" => {
                call.takes(1, 2)?;
                let value = c.number(call.arg(0)?)?;
                let places = match call.nodes.len() {
                    2 => call.long(1)?,
                    _ => lit(0i64),
                };
                let long = c.kind(&value)? == Kind::Long;
                let rounded = self.udf("round", vec![cast(value, DataType::Float64), places])?;
                if long {
                    cast(rounded, DataType::Int64)
                } else {
                    rounded
                }
            }
            "max" | "min" => {
                // NULL when either is (Druid's SQL-compatible mode).
                call.takes(2, 2)?;
                let (x, y) = c.numbers(call.arg(0)?, call.arg(1)?)?;
                let function = if name == "max" { "greatest" } else { "least" };
                let either_null = x.clone().is_null().or(y.clone().is_null());
                when(either_null, lit(ScalarValue::Null))
                    .otherwise(self.udf(function, vec![x, y])?)?
            }
            "greatest" | "least" => self.reduction()?,
            "bitwiseand" | "bitwiseor" | "bitwisexor" | "bitwiseshiftleft"
            | "bitwiseshiftright" => {
                call.takes(2, 2)?;
                let operator = match name {
                    "bitwiseand" => Operator::BitwiseAnd,
                    "bitwiseor" => Operator::BitwiseOr,
                    "bitwisexor" => Operator::BitwiseXor,
                    "bitwiseshiftleft" => Operator::BitwiseShiftLeft,
                    _ => Operator::BitwiseShiftRight,
                };
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(call.long(0)?),
                    operator,
                    Box::new(call.long(1)?),
                ))
            }
            "bitwisecomplement" => {
                // Two's complement: ~x is -x - 1.
                call.takes(1, 1)?;
                Expr::Negative(Box::new(call.long(0)?)) - lit(1i64)
            }
            _ if UNSUPPORTED.contains(&name)
                || UNSUPPORTED_FAMILIES.iter().any(|f| name.starts_with(f)) =>
            {
                return Err(DataFusionError::NotImplemented(format!(
                    "function {name} is not supported in expressions"
                )));
            }
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "no function named {name} in Druid's expressions"
                )));
            }
        })
    }

    /// `greatest` and `least`: strings when any argument is one, LONGs when all are,
    /// else DOUBLEs; NULLs ignored, and NULL when there is nothing else.
    fn reduction(&self) -> Result<Expr> {
        let (c, args) = (self.compiler, self.args()?);
        let mut kinds = Vec::new();
        for arg in &args {
            kinds.push(c.kind(arg)?);
        }
        let values: Vec<Expr> = if kinds.contains(&Kind::Text) {
            args.into_iter().map(|a| c.text(a)).collect::<Result<_>>()?
        } else {
            let longs = kinds
                .iter()
                .all(|k| matches!(k, Kind::Long | Kind::Bool | Kind::Null | Kind::Time));
            let data_type = if longs {
                DataType::Int64
            } else {
                DataType::Float64
            };
            args.into_iter()
                .map(|a| Ok(cast(c.number(a)?, data_type.clone())))
                .collect::<Result<_>>()?
        };
        Ok(match values.len() {
            0 => lit(ScalarValue::Null),
            1 => values.into_iter().next().unwrap_or(lit(ScalarValue::Null)),
            _ => self.udf(self.name, values)?,
        })
    }
}

fn kind_of(data_type: &DataType) -> Option<Kind> {
    use DataType::*;
    Some(match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Kind::Long,
        Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => Kind::Double,
        Utf8 | LargeUtf8 | Utf8View => Kind::Text,
        Boolean => Kind::Bool,
        Timestamp(..) | Date32 | Date64 => Kind::Time,
        Null => Kind::Null,
        Dictionary(_, value) => return kind_of(value),
        _ => return None,
    })
}

/// A time as milliseconds since 1970.
fn millis(time: Expr) -> Expr {
    cast(
        cast(time, DataType::Timestamp(TimeUnit::Millisecond, None)),
        DataType::Int64,
    )
}

/// Two strings joined; NULL when either is.
fn concat(left: Expr, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left),
        Operator::StringConcat,
        Box::new(right),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::execution::SessionStateBuilder;

    use super::*;

    /// One row: 2015-09-12T00:46:58.771Z, s 'Mobile', n 7, d 2.5, t 'true', z NULL,
    /// e '12.7'.
    fn context() -> SessionContext {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        crate::druid::register(&mut state);
        let context = SessionContext::new_with_state(state);
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("__time", time, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Float64, true),
            Field::new("t", DataType::Utf8, true),
            Field::new("z", DataType::Utf8, true),
            Field::new("e", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(vec![1442018818771]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["Mobile"])),
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(Float64Array::from(vec![2.5])),
            Arc::new(StringArray::from(vec!["true"])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec!["12.7"])),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        context.register_batch("t", batch).unwrap();
        context
    }

    async fn evaluate(context: &SessionContext, text: &str) -> Result<ScalarValue> {
        let frame = context.table("t").await?;
        let lookups = Lookups::from([(
            "country".to_string(),
            [("US".to_string(), "United States".to_string())].into(),
        )]);
        let value = Compiler::new(context, frame.schema(), &lookups).value(text)?;
        let batches = frame.select(vec![value.alias("x")])?.collect().await?;
        ScalarValue::try_from_array(batches[0].column(0), 0)
    }

    fn long(n: i64) -> ScalarValue {
        ScalarValue::Int64(Some(n))
    }

    fn double(d: f64) -> ScalarValue {
        ScalarValue::Float64(Some(d))
    }

    fn text(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.into()))
    }

    async fn check(cases: &[(&str, ScalarValue)]) {
        let context = context();
        for (expression, expected) in cases {
            let got = evaluate(&context, expression)
                .await
                .unwrap_or_else(|e| panic!("{expression}: {e}"));
            let same = match (&got, expected) {
                (ScalarValue::Float64(Some(a)), ScalarValue::Float64(Some(b))) => {
                    (a - b).abs() < 1e-9
                }
                (got, ScalarValue::Null) => got.is_null(),
                (got, expected) => got == expected,
            };
            assert!(same, "{expression}: got {got:?}, expected {expected:?}");
        }
    }

    #[tokio::test]
    async fn operators_keep_druids_types_and_logic() {
        check(&[
            // The logical operators' examples of Druid's docs.
            ("100 && 11", long(1)),
            ("0.7 || 0.3", long(1)),
            ("100 && 0", long(0)),
            ("'troo' && 'true'", long(0)),
            ("'troo' || 'true'", long(1)),
            ("1 || null", long(1)),
            ("0 || null", ScalarValue::Null),
            ("0 && null", long(0)),
            ("!(n > 5)", long(0)),
            ("!0", long(1)),
            // LONGs stay LONGs; a DOUBLE makes a DOUBLE.
            ("n / 2", long(3)),
            ("n / 2.0", double(3.5)),
            ("-7 / 2", long(-3)),
            ("n % 4", long(3)),
            ("2 ^ 3 ^ 2", long(512)),
            ("n + d", double(9.5)),
            ("-n", long(-7)),
            ("1 + 2 * 3", long(7)),
            // `+` with a string concatenates; comparisons answer 1 or 0.
            ("s + '!'", text("Mobile!")),
            ("s + n", ScalarValue::Null),
            ("'5' + 2", double(7.0)),
            ("n > 5", long(1)),
            ("s == 'Mobile'", long(1)),
            ("s != 'Mobile'", long(0)),
            ("e > 12", long(1)),
            ("z == 'x'", ScalarValue::Null),
            ("__time", long(1442018818771)),
            ("__time >= 1442016000000", long(1)),
            ("missing", ScalarValue::Null),
        ])
        .await;
    }

    #[tokio::test]
    async fn general_and_string_functions() {
        check(&[
            ("if(n > 5, 'big', 'small')", text("big")),
            ("if(z, 1, 2)", long(2)),
            ("nvl(z, 'none')", text("none")),
            ("coalesce(z, null, s)", text("Mobile")),
            (
                "case_searched(n == 1, 'one', n == 7, 'seven', 'other')",
                text("seven"),
            ),
            ("case_searched(n == 1, 'one')", ScalarValue::Null),
            ("case_simple(n, 1, 'one', 7, 'seven')", text("seven")),
            ("case_simple(s, 'x', 1, 2)", long(2)),
            ("isnull(z)", long(1)),
            ("notnull(s)", long(1)),
            ("cast(e, 'LONG')", long(12)),
            ("cast(e, 'DOUBLE')", double(12.7)),
            ("cast(n, 'STRING')", text("7")),
            ("cast(d, 'LONG')", long(2)),
            ("like(s, 'Mob%')", long(1)),
            ("like('a_c', 'a!_c', '!')", long(1)),
            ("like('abc', 'a!_c', '!')", long(0)),
            (r"like('a\\c', 'a\\c')", long(1)),
            ("concat(s, '-', n)", text("Mobile-7")),
            ("concat(s, z)", ScalarValue::Null),
            ("format('%s-%d', s, n)", text("Mobile-7")),
            ("lookup('US', 'country')", text("United States")),
            ("lookup('FR', 'country', 'elsewhere')", text("elsewhere")),
            ("parse_long('ff', 16)", long(255)),
            ("parse_long('0xff', 16)", long(255)),
            ("like('abc', 'abc!', '!')", long(1)),
            ("regexp_extract('foo-bar', 'f(o+)', 1)", text("oo")),
            ("regexp_extract('foo-bar', 'b.r')", text("bar")),
            ("regexp_like(s, '^M')", long(1)),
            ("regexp_replace('a1b22', '[0-9]+', '#')", text("a#b#")),
            ("contains_string(s, 'obi')", long(1)),
            ("icontains_string(s, 'MOB')", long(1)),
            ("replace('aXbX', 'X', '-')", text("a-b-")),
            ("substring('abcdef', 2, 3)", text("cde")),
            ("substring('abcdef', 2, -1)", text("cdef")),
            ("substring('abc', 5, 1)", ScalarValue::Null),
            ("left('abcdef', 2)", text("ab")),
            ("right('abcdef', 2)", text("ef")),
            ("strlen(s)", long(6)),
            ("strpos('banana', 'an')", long(1)),
            ("strpos('banana', 'an', 2)", long(3)),
            ("strpos('banana', 'x')", long(-1)),
            ("strpos('banana', 'b', -5)", long(0)),
            ("strpos(z, 'b')", ScalarValue::Null),
            ("trim('  a  ')", text("a")),
            ("ltrim('xxaxx', 'x')", text("axx")),
            ("rtrim('xxaxx', 'x')", text("xxa")),
            ("lower(s)", text("mobile")),
            ("upper(s)", text("MOBILE")),
            ("reverse('abc')", text("cba")),
            ("repeat('ab', 3)", text("ababab")),
            ("lpad('7', 3, '0')", text("007")),
            ("rpad('7', 3, '0')", text("700")),
        ])
        .await;
    }

    #[tokio::test]
    async fn time_functions_take_and_give_milliseconds() {
        check(&[
            ("timestamp_floor(__time, 'P1D')", long(1442016000000)),
            ("timestamp_ceil(__time, 'PT1H')", long(1442019600000)),
            (
                "timestamp_floor(__time, 'P1D', null, 'America/Los_Angeles')",
                long(1441954800000),
            ),
            ("timestamp_floor(1442018818771, 'P1D')", long(1442016000000)),
            (
                "timestamp_floor(__time, 'PT6H', '2015-09-11T03:00:00Z')",
                long(1442016000000 - 3_600_000 * 3),
            ),
            ("timestamp_shift(__time, 'P1M', 1)", long(1444610818771)),
            ("timestamp_extract(__time, 'DOW')", long(6)),
            (
                "timestamp_extract(__time, 'HOUR', 'America/Los_Angeles')",
                long(17),
            ),
            (
                "timestamp_parse('2015-09-12T00:46:58.771Z')",
                long(1442018818771),
            ),
            (
                "timestamp_parse('12/09/2015', 'dd/MM/yyyy')",
                long(1442016000000),
            ),
            ("timestamp_parse('garbage')", ScalarValue::Null),
            (
                "timestamp_format(__time, 'yyyy-MM-dd HH:mm')",
                text("2015-09-12 00:46"),
            ),
            ("timestamp_format(__time)", text("2015-09-12T00:46:58.771Z")),
            ("timestamp('2015-09-12T00:00:00Z')", long(1442016000000)),
            ("unix_timestamp('2015-09-12T00:00:00Z')", long(1442016000)),
        ])
        .await;
    }

    #[tokio::test]
    async fn math_functions() {
        check(&[
            ("abs(-n)", long(7)),
            ("abs(-2.5)", double(2.5)),
            ("ceil(d)", double(3.0)),
            ("floor(d)", double(2.0)),
            ("sqrt(16)", double(4.0)),
            ("pow(2, 10)", double(1024.0)),
            ("log(1)", double(0.0)),
            ("log10(100)", double(2.0)),
            ("exp(0)", double(1.0)),
            ("expm1(0)", double(0.0)),
            ("log1p(0)", double(0.0)),
            ("round(d)", double(3.0)),
            ("round(1234, -2)", long(1200)),
            ("round(2.71828, 2)", double(2.72)),
            ("max(n, d)", double(7.0)),
            ("min(n, 2)", long(2)),
            ("max(n, z)", ScalarValue::Null),
            ("greatest(1, 5, 3)", long(5)),
            ("greatest(1, 2.5)", double(2.5)),
            ("least('b', 'a')", text("a")),
            ("greatest(null, 3)", long(3)),
            ("div(n, 2)", long(3)),
            ("div(7.5, 2)", long(3)),
            ("safe_divide(n, 0)", ScalarValue::Null),
            ("safe_divide(n, 2)", long(3)),
            ("bitwiseAnd(12, 10)", long(8)),
            ("bitwiseOr(12, 10)", long(14)),
            ("bitwiseXor(12, 10)", long(6)),
            ("bitwiseShiftLeft(1, 4)", long(16)),
            ("bitwiseShiftRight(16, 2)", long(4)),
            ("bitwiseComplement(0)", long(-1)),
            ("hypot(3, 4)", double(5.0)),
            ("todegrees(pi())", double(180.0)),
            ("signum(-d)", double(-1.0)),
        ])
        .await;
    }

    #[tokio::test]
    async fn virtual_columns_name_each_other_in_any_order_and_refuse_cycles() {
        let context = context();
        let column = |name: &str, expression: &str, output: Option<&str>| VirtualColumn {
            kind: "expression".into(),
            name: name.into(),
            expression: expression.into(),
            output_type: output.map(str::to_string),
        };
        // Named before they are defined; `n` hides the table's column.
        let virtuals = [
            column("label", "concat(s, '-', twice)", Some("STRING")),
            column("ratio", "twice", Some("DOUBLE")),
            column("twice", "n * 2", None),
            column("n", "d * 4", Some("LONG")),
        ];
        let order: Vec<&str> = in_dependency_order(&virtuals)
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(order, ["n", "twice", "label", "ratio"]);
        let lookups = Lookups::new();
        let mut frame = context.table("t").await.unwrap();
        for v in in_dependency_order(&virtuals).unwrap() {
            let value = Compiler::new(&context, frame.schema(), &lookups)
                .virtual_column(v)
                .unwrap();
            frame = frame.with_column(&v.name, value).unwrap();
        }
        let batches = frame
            .select(vec![ident("label"), ident("ratio")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = |i| ScalarValue::try_from_array(batches[0].column(i), 0).unwrap();
        assert_eq!((row(0), row(1)), (text("Mobile-20"), double(20.0)));

        // A chain of columns each naming the one before twice stays linear.
        let mut chain = vec![column("v0", "n", None)];
        for i in 1..64 {
            chain.push(column(
                &format!("v{i}"),
                &format!("v{0} + v{0}", i - 1),
                None,
            ));
        }
        assert_eq!(in_dependency_order(&chain).unwrap().len(), 64);

        for (virtuals, says) in [
            (vec![column("x", "x * 2", None)], "refers to itself"),
            (
                vec![column("a", "b + 1", None), column("b", "a + 1", None)],
                "refers to itself",
            ),
            (
                vec![column("a", "1", None), column("a", "2", None)],
                "two virtual columns",
            ),
        ] {
            let refused = in_dependency_order(&virtuals).unwrap_err();
            assert!(refused.to_string().contains(says), "{refused}");
        }
    }

    #[tokio::test]
    async fn wrong_and_unsupported_expressions_are_refused_by_name() {
        let context = context();
        for (expression, unsupported, says) in [
            ("nope(1)", false, "no function named nope"),
            ("substring('a')", false, "takes 3 arguments, not 1"),
            ("lookup(s, 'absent')", false, "no lookup named \"absent\""),
            ("cast(n, 'DATE')", false, "not one of LONG"),
            ("cast(n, s)", false, "must be a string literal"),
            ("regexp_extract(s, '(a')", false, "unbalanced"),
            ("array_length(s)", true, "array_length"),
            ("json_value(s, '$.a')", true, "json_value"),
        ] {
            let refused = evaluate(&context, expression).await.unwrap_err();
            assert_eq!(
                matches!(refused, DataFusionError::NotImplemented(_)),
                unsupported,
                "{expression}: {refused}"
            );
            assert!(
                refused.to_string().contains(says),
                "{expression}: {refused}"
            );
        }
    }
}
