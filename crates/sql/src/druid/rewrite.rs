//! Druid's SQL syntax in DataFusion's terms, rewritten in the parsed statement before
//! it is planned:
//!
//! - `FLOOR(t TO unit)` and `CEIL(t TO unit)` are `TIME_FLOOR` and `TIME_CEIL` of the
//!   unit's period; `DATE_TRUNC` takes Druid's `'milliseconds'`, `'decade'`,
//!   `'century'` and `'millennium'` too;
//! - `TIMESTAMPADD(unit, n, t)` is `TIME_SHIFT(t, unit, n)`, and
//!   `TIMESTAMPDIFF(unit, a, b)` takes its unit as text;
//! - Druid's names of DataFusion's functions: `APPROX_COUNT_DISTINCT`,
//!   `APPROX_QUANTILE` and `APPROX_QUANTILE_DS` (`approx_percentile_cont`),
//!   `EARLIEST` and `LATEST` (the first and last value by `__time`, or by the time
//!   given to `EARLIEST_BY` and `LATEST_BY`), `ANY_VALUE` (its size argument is for
//!   Druid's buffers), `STRLEN`, `TEXTCAT`, `CONTAINS_STRING`, `ICONTAINS_STRING`,
//!   `REGEXP_EXTRACT` (a group of `regexp_match`),
//!   `MOD`, `DIV` and `SAFE_DIVIDE`;
//! - in Druid's HTTP API, a result column without a name is `EXPR$n`, `n` its
//!   position in the select list ([`name_expressions`]);
//! - `EXPLAIN PLAN FOR query` ([`explain_plan_for`]).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::common::{DataFusionError, Result};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CeilFloorKind, DateTimeField, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArgumentList, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, OrderByExpr, OrderByOptions, Query, SelectItem, SetExpr, Value,
    visit_expressions_mut,
};
use grove_segment::period::{Period, Unit};

use super::time::sql_unit;

/// Druid's lookups by name, for `LOOKUP(expr, 'name')`.
pub type Lookups = BTreeMap<String, BTreeMap<String, String>>;

/// Rewrites Druid's syntax in `statement` (and in the statement it explains), its
/// `LOOKUP`s with `lookups`.
pub fn statement(statement: &mut Statement, lookups: &Lookups) -> Result<()> {
    let sql = match statement {
        Statement::Statement(sql) => sql,
        Statement::Explain(explain) => return self::statement(&mut explain.statement, lookups),
        _ => return Ok(()),
    };
    let mut failure = None;
    let _ = visit_expressions_mut(sql.as_mut(), |expr| match rewrite(expr, lookups) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            failure = Some(e);
            ControlFlow::Break(())
        }
    });
    failure.map_or(Ok(()), Err)
}

/// Names the result columns of `statement`'s query that have none (an expression
/// without `AS`) `EXPR$n`, as Druid's SQL does, `n` counting the select list from 0.
pub fn name_expressions(statement: &mut Statement) {
    if let Statement::Statement(sql) = statement
        && let datafusion::sql::sqlparser::ast::Statement::Query(query) = sql.as_mut()
    {
        name_query(query);
    }
}

fn name_query(query: &mut Query) {
    let select = match query.body.as_mut() {
        SetExpr::Select(select) => select,
        SetExpr::Query(inner) => return name_query(inner),
        // Of a UNION, the first branch names the columns.
        SetExpr::SetOperation { left, .. } => match left.as_mut() {
            SetExpr::Select(select) => select,
            _ => return,
        },
        _ => return,
    };
    for (i, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item
            && !is_column(expr)
        {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', format!("EXPR${i}")),
            };
        }
    }
}

/// Whether an expression is a column, which names its result itself.
fn is_column(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_column(inner),
        _ => false,
    }
}

/// The query of Druid's `EXPLAIN PLAN [WITH ...] [EXCLUDING|INCLUDING [ALL] ATTRIBUTES]
/// [AS JSON] FOR query`, if `text` is one.
pub fn explain_plan_for(text: &str) -> Option<&str> {
    let mut rest = text.trim_start();
    let mut words = 0;
    loop {
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let word = &rest[..end];
        let next = rest[end..].trim_start();
        match (words, word.to_ascii_uppercase().as_str()) {
            (0, "EXPLAIN") | (1, "PLAN") => {}
            (0 | 1, _) => return None,
            (_, "FOR") => return (!next.is_empty()).then_some(next),
            (
                _,
                "WITH" | "WITHOUT" | "TYPE" | "IMPLEMENTATION" | "EXCLUDING" | "INCLUDING" | "ALL"
                | "ATTRIBUTES" | "AS" | "JSON" | "XML",
            ) => {}
            _ => return None,
        }
        if next.is_empty() {
            return None;
        }
        rest = next;
        words += 1;
    }
}

/// One expression, rewritten in place if it is Druid's.
fn rewrite(expr: &mut Expr, lookups: &Lookups) -> Result<()> {
    match expr {
        Expr::Floor {
            expr: time,
            field: CeilFloorKind::DateTimeField(field),
        } if *field != DateTimeField::NoDateTime => {
            let period = field_period(field)?;
            *expr = floor(vec![(**time).clone(), period]);
        }
        Expr::Ceil {
            expr: time,
            field: CeilFloorKind::DateTimeField(field),
        } if *field != DateTimeField::NoDateTime => {
            let period = field_period(field)?;
            *expr = call("time_ceil", vec![(**time).clone(), period]);
        }
        Expr::Function(function) => {
            if let Some(new) = lookup(function, lookups)? {
                *expr = new;
            } else if let Some(new) = rewrite_function(function)? {
                *expr = new;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `LOOKUP(expr, 'name'[, 'replaceMissingValueWith'])` as a `CASE` over the lookup's
/// map: a plain expression, so it runs inside fragments and in `GROUP BY` alike. A key
/// the map lacks (or NULL) gives the replacement, else NULL.
fn lookup(function: &Function, lookups: &Lookups) -> Result<Option<Expr>> {
    let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
        return Ok(None);
    };
    if !name.value.eq_ignore_ascii_case("lookup") {
        return Ok(None);
    }
    let FunctionArguments::List(list) = &function.args else {
        return Ok(None);
    };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let (key, name, missing) = match args.as_slice() {
        [key, name] => (*key, literal_text(name), None),
        [key, name, missing] => (*key, literal_text(name), Some((*missing).clone())),
        _ => {
            return Err(DataFusionError::Plan(
                "LOOKUP takes an expression, a lookup's name and optionally a replacement".into(),
            ));
        }
    };
    let name =
        name.ok_or_else(|| DataFusionError::Plan("LOOKUP's lookup name must be a literal".into()))?;
    let map = lookups
        .get(&name)
        .ok_or_else(|| DataFusionError::Plan(format!("no lookup named {name:?}")))?;
    let key_text = Expr::Cast {
        kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
        expr: Box::new(key.clone()),
        data_type: datafusion::sql::sqlparser::ast::DataType::Varchar(None),
        array: false,
        format: None,
    };
    let otherwise = missing.unwrap_or(Expr::value(Value::Null));
    if map.is_empty() {
        return Ok(Some(otherwise));
    }
    Ok(Some(Expr::Case {
        case_token: datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken::empty(
        ),
        end_token: datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        operand: Some(Box::new(key_text)),
        conditions: map
            .iter()
            .map(|(k, v)| datafusion::sql::sqlparser::ast::CaseWhen {
                condition: text(k),
                result: text(v),
            })
            .collect(),
        else_result: Some(Box::new(otherwise)),
    }))
}

/// The Druid function `function` in DataFusion's terms, if it is one of them.
fn rewrite_function(function: &mut Function) -> Result<Option<Expr>> {
    let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
        return Ok(None);
    };
    let name = name.value.to_ascii_lowercase();
    let FunctionArguments::List(list) = &function.args else {
        return Ok(None);
    };
    let args: Option<Vec<Expr>> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let Some(mut args) = args else {
        return Ok(None);
    };
    let wrong =
        |takes: &str| DataFusionError::Plan(format!("{} takes {takes}", name.to_uppercase()));
    const AGGREGATES: [&str; 8] = [
        "approx_count_distinct",
        "approx_quantile",
        "approx_quantile_ds",
        "earliest",
        "latest",
        "earliest_by",
        "latest_by",
        "any_value",
    ];
    let aggregate = AGGREGATES.contains(&name.as_str());
    if aggregate && function.over.is_some() {
        return Err(DataFusionError::Plan(format!(
            "{} is an aggregate, not a window function",
            name.to_uppercase()
        )));
    }
    let mut new = match name.as_str() {
        "timestampadd" => {
            let [unit, count, time] = <[Expr; 3]>::try_from(args)
                .map_err(|_| wrong("a unit, a count and a timestamp"))?;
            let (field, n) = unit_of(&unit, "TIMESTAMPADD")?;
            let period = Period::of(field, n);
            call("time_shift", vec![time, text(&period.to_string()), count])
        }
        "timestampdiff" => {
            let [unit, a, b] =
                <[Expr; 3]>::try_from(args).map_err(|_| wrong("a unit and two timestamps"))?;
            let unit = unit_name(&unit).unwrap_or_else(|| unit.to_string());
            call("timestampdiff", vec![text(&unit), a, b])
        }
        "date_trunc" => match args.first().and_then(literal_text) {
            Some(unit) => match unit.to_ascii_lowercase().as_str() {
                "milliseconds" => {
                    args[0] = text("millisecond");
                    call("date_trunc", args)
                }
                years @ ("decade" | "century" | "millennium") => {
                    let count = match years {
                        "decade" => 10,
                        "century" => 100,
                        _ => 1000,
                    };
                    let [_, time] =
                        <[Expr; 2]>::try_from(args).map_err(|_| wrong("a unit and a timestamp"))?;
                    // Counted from a year that starts a millennium: 2013 is in the
                    // decade 2010, the century and the millennium 2000.
                    let origin = Expr::TypedString(datafusion::sql::sqlparser::ast::TypedString {
                        data_type: datafusion::sql::sqlparser::ast::DataType::Timestamp(
                            None,
                            datafusion::sql::sqlparser::ast::TimezoneInfo::None,
                        ),
                        value: Value::SingleQuotedString("2000-01-01 00:00:00".into()).into(),
                        uses_odbc_syntax: false,
                    });
                    let period = Period::of(Unit::Year, count).to_string();
                    call("time_floor", vec![time, text(&period), origin])
                }
                _ => return Ok(None),
            },
            None => return Ok(None),
        },
        "approx_count_distinct" => {
            let [value] = <[Expr; 1]>::try_from(args).map_err(|_| wrong("one expression"))?;
            // DataFusion's sketch takes strings and numbers, not dictionary strings:
            // every value counts as its text.
            let text = Expr::Cast {
                kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                expr: Box::new(value),
                data_type: datafusion::sql::sqlparser::ast::DataType::Varchar(None),
                array: false,
                format: None,
            };
            call("approx_distinct", vec![text])
        }
        "approx_quantile" | "approx_quantile_ds" => {
            if !(2..=3).contains(&args.len()) {
                return Err(wrong(
                    "an expression, a fraction and optionally a resolution",
                ));
            }
            let value = args.remove(0);
            // Druid's resolution and sketch size are not DataFusion's centroids.
            args.truncate(1);
            let mut new = function_of("approx_percentile_cont", args);
            new.within_group = vec![ascending(value)];
            Expr::Function(new)
        }
        "earliest" | "latest" | "earliest_by" | "latest_by" => {
            let by = name.ends_with("_by");
            let (least, most) = if by { (2, 3) } else { (1, 2) };
            if args.len() < least || args.len() > most {
                return Err(wrong(if by {
                    "an expression, a timestamp and optionally a size"
                } else {
                    "an expression and optionally a size"
                }));
            }
            let time = if by {
                args[1].clone()
            } else {
                Expr::Identifier(Ident::new("__time"))
            };
            let first = if name.starts_with("earliest") {
                "first_value"
            } else {
                "last_value"
            };
            let mut new = function_of(first, vec![args.remove(0)]);
            if let FunctionArguments::List(list) = &mut new.args {
                list.clauses
                    .push(FunctionArgumentClause::OrderBy(vec![ascending(time)]));
            }
            Expr::Function(new)
        }
        "any_value" if args.len() > 1 => {
            args.truncate(1);
            call("any_value", args)
        }
        "time_floor" if args.len() == 2 => floor(args),
        "strlen" => call("character_length", args),
        "regexp_extract" => {
            if !(2..=3).contains(&args.len()) {
                return Err(wrong("a string, a pattern and optionally a group"));
            }
            let Some(pattern) = literal_text(&args[1]) else {
                return Err(wrong("a pattern that is a literal"));
            };
            if !groups_balance(&pattern) {
                return Err(DataFusionError::Plan(format!(
                    "REGEXP_EXTRACT's pattern {pattern:?} has unbalanced parentheses or a comment"
                )));
            }
            let group = match args.get(2) {
                None => 0,
                Some(Expr::Value(v)) => match &v.value {
                    Value::Number(n, _) => n.parse::<u32>().map_err(|_| wrong("a group number"))?,
                    _ => return Err(wrong("a group number")),
                },
                Some(_) => return Err(wrong("a group number that is a literal")),
            };
            // The whole pattern in a group of its own is group 1 of the match, and
            // group n of the pattern is group n + 1.
            let matched = call(
                "regexp_match",
                vec![args.remove(0), text(&format!("({pattern})"))],
            );
            call(
                "array_element",
                vec![matched, number(&(group + 1).to_string())],
            )
        }
        "textcat" => {
            let [a, b] = <[Expr; 2]>::try_from(args).map_err(|_| wrong("two strings"))?;
            binary(a, BinaryOperator::StringConcat, b)
        }
        "contains_string" | "icontains_string" => {
            let [mut haystack, mut needle] =
                <[Expr; 2]>::try_from(args).map_err(|_| wrong("two strings"))?;
            if name == "icontains_string" {
                haystack = call("lower", vec![haystack]);
                needle = call("lower", vec![needle]);
            }
            let position = call("strpos", vec![haystack, needle]);
            binary(position, BinaryOperator::Gt, number("0"))
        }
        "mod" => {
            let [a, b] = <[Expr; 2]>::try_from(args).map_err(|_| wrong("two numbers"))?;
            binary(a, BinaryOperator::Modulo, b)
        }
        "div" => {
            let [a, b] = <[Expr; 2]>::try_from(args).map_err(|_| wrong("two numbers"))?;
            // Druid's DIV is the quotient made whole: DIV(1.5, 0.5) is 3.
            call(
                "arrow_cast",
                vec![binary(a, BinaryOperator::Divide, b), text("Int64")],
            )
        }
        "safe_divide" => {
            let [a, b] = <[Expr; 2]>::try_from(args).map_err(|_| wrong("two numbers"))?;
            // Druid: NULL when the divisor is 0.
            let divisor = call("nullif", vec![b, number("0")]);
            binary(a, BinaryOperator::Divide, divisor)
        }
        _ => return Ok(None),
    };
    // What the call said of its rows holds for the function it became.
    if aggregate && let Expr::Function(f) = &mut new {
        f.filter = function.filter.take();
        f.null_treatment = function.null_treatment.take();
    }
    Ok(Some(new))
}

/// Whether a regular expression's groups close where they open, outside escapes and
/// classes, and it has no `#` (a comment in extended mode would swallow the group
/// REGEXP_EXTRACT wraps it in).
pub(crate) fn groups_balance(pattern: &str) -> bool {
    let mut depth = 0usize;
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '#' => return false,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0 && !in_class
}

/// `TIME_FLOOR(time, period)`, as DataFusion's `date_trunc` when the period is one
/// calendar unit in UTC (which the segment scans compute a batch at a time, or
/// without a calendar per row), else Grove's `time_floor`.
fn floor(args: Vec<Expr>) -> Expr {
    let unit = args
        .get(1)
        .and_then(literal_text)
        .and_then(|text| Period::parse(&text).ok())
        .and_then(|period| match (period.fields.single(), period.months) {
            (Some((Unit::Month, 3)), _) => Some("quarter"),
            (Some((unit, 1)), _) => Some(match unit {
                Unit::Year => "year",
                Unit::Month => "month",
                Unit::Week => "week",
                Unit::Day => "day",
                Unit::Hour => "hour",
                Unit::Minute => "minute",
                Unit::Second => "second",
                Unit::Millisecond => "millisecond",
            }),
            _ => None,
        });
    match (unit, <[Expr; 2]>::try_from(args)) {
        (Some(unit), Ok([time, _])) => call("date_trunc", vec![text(unit), time]),
        (_, Ok(args)) => call("time_floor", args.into()),
        (_, Err(args)) => call("time_floor", args),
    }
}

/// The period of a `FLOOR(... TO unit)` unit, as a text literal.
fn field_period(field: &DateTimeField) -> Result<Expr> {
    let (unit, count) = match field {
        DateTimeField::Year | DateTimeField::Years => (Unit::Year, 1),
        DateTimeField::Quarter => (Unit::Month, 3),
        DateTimeField::Month | DateTimeField::Months => (Unit::Month, 1),
        DateTimeField::Week(None) | DateTimeField::Weeks => (Unit::Week, 1),
        DateTimeField::Day | DateTimeField::Days => (Unit::Day, 1),
        DateTimeField::Hour | DateTimeField::Hours => (Unit::Hour, 1),
        DateTimeField::Minute | DateTimeField::Minutes => (Unit::Minute, 1),
        DateTimeField::Second | DateTimeField::Seconds => (Unit::Second, 1),
        DateTimeField::Millisecond | DateTimeField::Milliseconds => (Unit::Millisecond, 1),
        other => {
            return Err(DataFusionError::Plan(format!(
                "FLOOR and CEIL of a time take SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, \
                 QUARTER or YEAR, not {other}"
            )));
        }
    };
    Ok(text(&Period::of(unit, count).to_string()))
}

/// The unit of `TIMESTAMPADD` or `TIMESTAMPDIFF`, written bare (`HOUR`,
/// `SQL_TSI_HOUR`) or as text.
fn unit_of(expr: &Expr, function: &str) -> Result<(Unit, u32)> {
    unit_name(expr)
        .as_deref()
        .and_then(sql_unit)
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{function} takes SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR, \
                 not {expr}"
            ))
        })
}

fn unit_name(expr: &Expr) -> Option<String> {
    let name = match expr {
        Expr::Identifier(ident) => ident.value.clone(),
        other => literal_text(other)?,
    };
    let upper = name.to_ascii_uppercase();
    Some(upper.strip_prefix("SQL_TSI_").unwrap_or(&upper).to_string())
}

fn literal_text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn text(value: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(value.to_string()))
}

fn number(value: &str) -> Expr {
    Expr::value(Value::Number(value.to_string(), false))
}

fn binary(left: Expr, op: BinaryOperator, right: Expr) -> Expr {
    Expr::Nested(Box::new(Expr::BinaryOp {
        left: Box::new(left),
        op,
        right: Box::new(right),
    }))
}

fn ascending(expr: Expr) -> OrderByExpr {
    OrderByExpr {
        expr,
        options: OrderByOptions {
            asc: None,
            nulls_first: None,
        },
        with_fill: None,
    }
}

fn function_of(name: &str, args: Vec<Expr>) -> Function {
    Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(function_of(name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_patterns_whose_groups_balance_are_wrapped() {
        assert!(groups_balance("([^,]+)"));
        assert!(groups_balance(r"a\)b\("));
        assert!(groups_balance("[()]x"));
        assert!(!groups_balance("a)|(b"));
        assert!(!groups_balance("(a"));
        assert!(!groups_balance("(?x)a # comment"));
    }

    #[test]
    fn explain_plan_for_is_found_with_its_options() {
        assert_eq!(
            explain_plan_for("EXPLAIN PLAN FOR SELECT 1"),
            Some("SELECT 1")
        );
        assert_eq!(
            explain_plan_for("  explain plan\n for\nSELECT 1"),
            Some("SELECT 1")
        );
        assert_eq!(
            explain_plan_for("EXPLAIN PLAN INCLUDING ALL ATTRIBUTES AS JSON FOR SELECT 1"),
            Some("SELECT 1")
        );
        assert_eq!(explain_plan_for("EXPLAIN SELECT 1"), None);
        assert_eq!(explain_plan_for("EXPLAIN PLAN FOR"), None);
        assert_eq!(explain_plan_for("SELECT 'EXPLAIN PLAN FOR'"), None);
    }
}
