//! The text of a Druid expression as a tree.
//!
//! Operators, from the tightest: `!` and unary `-`; `^` (to the right); `*`, `/`, `%`;
//! `+`, `-`; `<`, `<=`, `>`, `>=`, `==`, `!=`; `&&` and `||`. Numbers with a dot or an
//! exponent are doubles, others longs; strings are in single quotes with Java's
//! escapes; names are letters, digits, `_` and `$` not starting with a digit, or any
//! text in double quotes; `null` is null. Arrays and lambdas are refused by name.

use datafusion::common::{DataFusionError, Result};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Long(i64),
    Double(f64),
    Text(String),
    Null,
    Column(String),
    Not(Box<Node>),
    Negate(Box<Node>),
    Binary(Op, Box<Node>, Box<Node>),
    /// A function's name in lower case, and its arguments.
    Call(String, Vec<Node>),
}

impl Node {
    /// Adds the names of the columns it reads to `names`.
    pub fn columns(&self, names: &mut std::collections::BTreeSet<String>) {
        match self {
            Node::Column(name) => {
                names.insert(name.clone());
            }
            Node::Not(inner) | Node::Negate(inner) => inner.columns(names),
            Node::Binary(_, left, right) => {
                left.columns(names);
                right.columns(names);
            }
            Node::Call(_, args) => args.iter().for_each(|a| a.columns(names)),
            Node::Long(_) | Node::Double(_) | Node::Text(_) | Node::Null => {}
        }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Power,
    Multiply,
    Divide,
    Modulo,
    Plus,
    Minus,
    Less,
    LessEq,
    Greater,
    GreaterEq,
    Equal,
    NotEqual,
    And,
    Or,
}

impl Op {
    fn of(symbol: &str) -> Option<Op> {
        Some(match symbol {
            "^" => Op::Power,
            "*" => Op::Multiply,
            "/" => Op::Divide,
            "%" => Op::Modulo,
            "+" => Op::Plus,
            "-" => Op::Minus,
            "<" => Op::Less,
            "<=" => Op::LessEq,
            ">" => Op::Greater,
            ">=" => Op::GreaterEq,
            "==" => Op::Equal,
            "!=" => Op::NotEqual,
            "&&" => Op::And,
            "||" => Op::Or,
            _ => return None,
        })
    }

    /// How tightly it binds: higher first.
    fn precedence(self) -> u8 {
        match self {
            Op::And | Op::Or => 1,
            Op::Less | Op::LessEq | Op::Greater | Op::GreaterEq | Op::Equal | Op::NotEqual => 2,
            Op::Plus | Op::Minus => 3,
            Op::Multiply | Op::Divide | Op::Modulo => 4,
            Op::Power => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Long(i64),
    Double(f64),
    Text(String),
    /// A bare name: a column, a function, or `null`.
    Name(String),
    /// A name in double quotes: always a column.
    Quoted(String),
    Symbol(&'static str),
}

const SYMBOLS: [&str; 21] = [
    "->", "<=", ">=", "==", "!=", "&&", "||", "^", "*", "/", "%", "+", "-", "<", ">", "!", "(",
    ")", ",", "[", "]",
];

/// Parses `text`; errors name the expression and what is wrong where.
pub fn parse(text: &str) -> Result<Node> {
    let wrong = |why: String| DataFusionError::Plan(format!("expression {}: {why}", shown(text)));
    let tokens = tokens(text).map_err(wrong)?;
    if let Some(what) = tokens.iter().find_map(|t| match t {
        Token::Symbol("->") => Some("lambda expressions"),
        Token::Symbol("[") => Some("array literals"),
        _ => None,
    }) {
        return Err(DataFusionError::NotImplemented(format!(
            "expression {}: {what} are not supported",
            shown(text)
        )));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        nesting: 0,
    };
    let (node, _) = parser.expression(0).map_err(wrong)?;
    match parser.tokens.get(parser.at) {
        None => Ok(node),
        Some(token) => Err(wrong(format!("unexpected {}", describe(token)))),
    }
}

/// An expression as an error quotes it: its start when it is long.
fn shown(text: &str) -> String {
    const SHOWN: usize = 120;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}...", &text[..end]),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Long(n) => format!("number {n}"),
        Token::Double(d) => format!("number {d}"),
        Token::Text(s) => format!("string {s:?}"),
        Token::Name(n) | Token::Quoted(n) => format!("name {n:?}"),
        Token::Symbol(s) => format!("{s:?}"),
    }
}

fn tokens(text: &str) -> std::result::Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut double = false;
            if i < chars.len() && chars[i] == '.' {
                double = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                let mut j = i + 1;
                if j < chars.len() && matches!(chars[j], '-' | '+') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    double = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let number: String = chars[start..i].iter().collect();
            out.push(if double {
                Token::Double(number.parse().map_err(|_| format!("bad number {number}"))?)
            } else {
                Token::Long(
                    number
                        .parse()
                        .map_err(|_| format!("{number} does not fit in a long"))?,
                )
            });
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$')) {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            let (value, next) = quoted(&chars, i)?;
            i = next;
            out.push(if c == '\'' {
                Token::Text(value)
            } else {
                Token::Quoted(value)
            });
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(format!("unexpected character {c:?} at {i}"));
            };
            i += symbol.chars().count();
            out.push(Token::Symbol(symbol));
        }
    }
    Ok(out)
}

/// The text quoted from `chars[start]` to its closing quote, unescaped, and the index
/// after it.
fn quoted(chars: &[char], start: usize) -> std::result::Result<(String, usize), String> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!("{quote} at {start} is never closed"));
        };
        i += 1;
        if c == quote {
            return Ok((value, i));
        }
        if c != '\\' {
            value.push(c);
            continue;
        }
        let Some(&escaped) = chars.get(i) else {
            return Err(format!("{quote} at {start} is never closed"));
        };
        i += 1;
        value.push(match escaped {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'b' => '\u{8}',
            'f' => '\u{c}',
            '\\' | '\'' | '"' | '/' => escaped,
            'u' => {
                let (unit, next) = hex_unit(chars, i)?;
                i = next;
                // A surrogate pair, as Java writes characters outside the BMP.
                let pair = (0xD800..0xDC00).contains(&unit)
                    && chars.get(i..i + 2) == Some(&['\\', 'u'][..]);
                let code = match pair.then(|| hex_unit(chars, i + 2)).transpose()? {
                    Some((low, next)) if (0xDC00..0xE000).contains(&low) => {
                        i = next;
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| format!("\\u{unit:04x} is not a character"))?
            }
            other => return Err(format!("unknown escape \\{other}")),
        });
    }
}

/// The four hex digits of a `\\u` escape at `chars[at..]`, and the index after them.
fn hex_unit(chars: &[char], at: usize) -> std::result::Result<(u32, usize), String> {
    let hex: String = chars.get(at..at + 4).unwrap_or_default().iter().collect();
    match u32::from_str_radix(&hex, 16) {
        Ok(unit) if hex.len() == 4 => Ok((unit, at + 4)),
        _ => Err(format!("\\u{hex} is not four hex digits")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// How deep the parser's own calls are.
    nesting: usize,
}

/// How deep an expression may nest: its tree and the parser's calls. Compiling and
/// dropping a tree recurse over it, so it is bounded well within a thread's stack.
pub const MAX_DEPTH: usize = 200;

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn peek_symbol(&self) -> Option<&'static str> {
        match self.tokens.get(self.at) {
            Some(Token::Symbol(s)) => Some(s),
            _ => None,
        }
    }

    fn expect(&mut self, symbol: &str) -> std::result::Result<(), String> {
        match self.next() {
            Some(Token::Symbol(s)) if s == symbol => Ok(()),
            Some(other) => Err(format!("expected {symbol:?}, not {}", describe(&other))),
            None => Err(format!("expected {symbol:?} at the end")),
        }
    }

    /// Counts one more level of recursion, refusing more than [`MAX_DEPTH`]: a
    /// hostile expression must not exhaust the stack.
    fn enter(&mut self) -> std::result::Result<(), String> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    /// Operators binding at least as tightly as `least`, by precedence climbing; the
    /// tree and its depth.
    fn expression(&mut self, least: u8) -> std::result::Result<(Node, usize), String> {
        self.enter()?;
        let (mut left, mut depth) = self.unary()?;
        while let Some(op) = self.peek_symbol().and_then(Op::of) {
            let precedence = op.precedence();
            if precedence < least {
                break;
            }
            self.at += 1;
            // `^` groups to the right, the others to the left.
            let next = if op == Op::Power {
                precedence
            } else {
                precedence + 1
            };
            let (right, right_depth) = self.expression(next)?;
            depth = deeper(depth.max(right_depth))?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        self.nesting -= 1;
        Ok((left, depth))
    }

    fn unary(&mut self) -> std::result::Result<(Node, usize), String> {
        match self.peek_symbol() {
            Some("!") => {
                self.at += 1;
                self.enter()?;
                let (inner, depth) = self.unary()?;
                self.nesting -= 1;
                Ok((Node::Not(Box::new(inner)), deeper(depth)?))
            }
            Some("-") => {
                self.at += 1;
                self.enter()?;
                let (inner, depth) = self.unary()?;
                self.nesting -= 1;
                Ok(match inner {
                    Node::Long(n) => (Node::Long(n.wrapping_neg()), depth),
                    Node::Double(d) => (Node::Double(-d), depth),
                    other => (Node::Negate(Box::new(other)), deeper(depth)?),
                })
            }
            _ => self.operand(),
        }
    }

    fn operand(&mut self) -> std::result::Result<(Node, usize), String> {
        let leaf = |node: Node| Ok((node, 1));
        match self.next() {
            Some(Token::Long(n)) => leaf(Node::Long(n)),
            Some(Token::Double(d)) => leaf(Node::Double(d)),
            Some(Token::Text(s)) => leaf(Node::Text(s)),
            Some(Token::Quoted(name)) => leaf(Node::Column(name)),
            Some(Token::Name(name)) => {
                if self.peek_symbol() == Some("(") {
                    self.at += 1;
                    let (args, depth) = self.arguments()?;
                    return Ok((Node::Call(name.to_ascii_lowercase(), args), deeper(depth)?));
                }
                leaf(match name.as_str() {
                    "null" => Node::Null,
                    "NaN" => Node::Double(f64::NAN),
                    "Infinity" => Node::Double(f64::INFINITY),
                    _ => Node::Column(name),
                })
            }
            Some(Token::Symbol("(")) => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(other) => Err(format!("unexpected {}", describe(&other))),
            None => Err("an operand is missing at the end".into()),
        }
    }

    /// A call's arguments, after its `(`, and the depth of the deepest.
    fn arguments(&mut self) -> std::result::Result<(Vec<Node>, usize), String> {
        let mut args = Vec::new();
        let mut depth = 0;
        if self.peek_symbol() == Some(")") {
            self.at += 1;
            return Ok((args, depth));
        }
        loop {
            let (arg, arg_depth) = self.expression(0)?;
            args.push(arg);
            depth = depth.max(arg_depth);
            match self.next() {
                Some(Token::Symbol(",")) => {}
                Some(Token::Symbol(")")) => return Ok((args, depth)),
                Some(other) => {
                    return Err(format!("expected \",\" or \")\", not {}", describe(&other)));
                }
                None => return Err("a call is never closed".into()),
            }
        }
    }
}

/// The depth of a node over a child `depth` deep, at most [`MAX_DEPTH`].
fn deeper(depth: usize) -> std::result::Result<usize, String> {
    if depth >= MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} deep"));
    }
    Ok(depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> Box<Node> {
        Box::new(Node::Column(name.into()))
    }

    fn bin(op: Op, l: Node, r: Node) -> Node {
        Node::Binary(op, Box::new(l), Box::new(r))
    }

    #[test]
    fn operators_bind_by_druids_precedence() {
        // 1 + 2 * 3 ^ 2 ^ 2 > 4 && !x
        let parsed = parse("1 + 2 * 3 ^ 2 ^ 2 > 4 && !x").unwrap();
        let power = bin(
            Op::Power,
            Node::Long(3),
            bin(Op::Power, Node::Long(2), Node::Long(2)),
        );
        let sum = bin(
            Op::Plus,
            Node::Long(1),
            bin(Op::Multiply, Node::Long(2), power),
        );
        let expected = bin(
            Op::And,
            bin(Op::Greater, sum, Node::Long(4)),
            Node::Not(col("x")),
        );
        assert_eq!(parsed, expected);
        // Left to right within a level: 8 - 2 - 1 is (8 - 2) - 1.
        assert_eq!(
            parse("8-2-1").unwrap(),
            bin(
                Op::Minus,
                bin(Op::Minus, Node::Long(8), Node::Long(2)),
                Node::Long(1)
            )
        );
    }

    #[test]
    fn literals_names_and_calls() {
        assert_eq!(parse("-1").unwrap(), Node::Long(-1));
        assert_eq!(parse("1.").unwrap(), Node::Double(1.0));
        assert_eq!(parse("2e3").unwrap(), Node::Double(2000.0));
        assert_eq!(
            parse(r"'it\'s \u00e9\n'").unwrap(),
            Node::Text("it's é\n".into())
        );
        assert_eq!(parse(r#""a b""#).unwrap(), Node::Column("a b".into()));
        assert_eq!(parse("$x_1").unwrap(), Node::Column("$x_1".into()));
        assert_eq!(parse(r"'\uD83D\uDE00'").unwrap(), Node::Text("😀".into()));
        assert_eq!(parse("null").unwrap(), Node::Null);
        assert_eq!(
            parse("TIMESTAMP_FLOOR(__time, 'P1D')").unwrap(),
            Node::Call(
                "timestamp_floor".into(),
                vec![Node::Column("__time".into()), Node::Text("P1D".into())]
            )
        );
        assert_eq!(parse("pi()").unwrap(), Node::Call("pi".into(), vec![]));
    }

    #[test]
    fn errors_say_what_and_where() {
        let message = |text: &str| parse(text).unwrap_err().to_string();
        assert!(
            message("1 +").contains("missing at the end"),
            "{}",
            message("1 +")
        );
        assert!(message("'open").contains("never closed"));
        assert!(message("a # b").contains("unexpected character '#'"));
        assert!(message("f(1 2)").contains("expected \",\" or \")\""));
        assert!(message("(1").contains("expected \")\" at the end"));
        assert!(message("1 2").contains("unexpected number 2"));
        assert!(message("99999999999999999999").contains("does not fit"));
        assert!(message(r"'\q'").contains("unknown escape"));
        // Deep nesting is refused before it exhausts the stack, however it nests.
        for deep in [
            "(".repeat(100_000) + "1" + &")".repeat(100_000),
            "!".repeat(100_000) + "1",
            "x".to_string() + &" + 1".repeat(100_000),
            "2".to_string() + &" ^ 2".repeat(100_000),
            "abs(".repeat(100_000) + "1" + &")".repeat(100_000),
        ] {
            let refused = parse(&deep).unwrap_err().to_string();
            assert!(
                refused.contains("nested more than 200 deep"),
                "{}",
                &refused[..200.min(refused.len())]
            );
        }
        assert!(parse(&("1".to_string() + &" + 1".repeat(150))).is_ok());
        assert!(matches!(
            parse("map((x) -> x + 1, y)"),
            Err(DataFusionError::NotImplemented(m)) if m.contains("lambda")
        ));
        assert!(matches!(
            parse("array_length([1, 2])"),
            Err(DataFusionError::NotImplemented(m)) if m.contains("array")
        ));
    }
}
