//! Subscription rule filters: correlation filters (complete) and a subset of SQL filters.
//!
//! Supported SQL: `AND`, `OR`, `NOT`, parentheses, comparisons `= <> != < > <= >=`,
//! `IS [NOT] NULL`, `[NOT] IN (...)`, `EXISTS(prop)`, literals (strings, numbers, TRUE/FALSE/NULL)
//! and identifiers naming application properties (`prop`, `user.prop`) or system properties
//! (`sys.Label`, `sys.CorrelationId`, `sys.MessageId`, `sys.To`, `sys.ReplyTo`, `sys.SessionId`,
//! `sys.ReplyToSessionId`, `sys.ContentType`). `LIKE`, arithmetic and functions are rejected when the
//! rule is created, so an unsupported filter fails loudly instead of silently matching nothing.
//!
//! A filter's text comes from clients (`add-rule`) and configuration files. Service Bus accepts at
//! most 1024 characters ([`MAX_SQL_LENGTH`]); nesting by parentheses and `NOT` is bounded as well
//! ([`MAX_SQL_DEPTH`]), so parsing, evaluating and dropping an expression tree cannot exhaust the
//! stack whatever the text.

use fe2o3_amqp_types::primitives::SimpleValue;

use crate::{
    config::{CorrelationFilter, RuleFilter},
    entity::message::{AmqpMessage, message_id_string},
};

/// Longest SQL filter expression Service Bus accepts, in characters.
pub(crate) const MAX_SQL_LENGTH: usize = 1024;
/// Deepest nesting of parentheses and `NOT` accepted in a SQL filter.
pub(crate) const MAX_SQL_DEPTH: usize = 32;

/// A filter ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) enum CompiledFilter {
    Correlation(CorrelationFilter),
    Sql(Expr),
}

impl CompiledFilter {
    /// Compiles a rule filter; SQL outside the supported subset is an error.
    pub fn compile(filter: &RuleFilter) -> Result<Self, String> {
        match filter {
            RuleFilter::Correlation(c) => Ok(Self::Correlation(c.clone())),
            RuleFilter::Sql(text) => {
                if text.chars().count() > MAX_SQL_LENGTH {
                    return Err(format!(
                        "a SQL filter may not be longer than {MAX_SQL_LENGTH} characters"
                    ));
                }
                Parser::new(text)?.parse().map(Self::Sql)
            }
        }
    }

    /// Whether a message passes the filter.
    pub fn matches(&self, message: &AmqpMessage) -> bool {
        match self {
            Self::Correlation(c) => correlation_matches(c, message),
            Self::Sql(expr) => expr.eval(message) == Tri::True,
        }
    }
}

fn correlation_matches(filter: &CorrelationFilter, message: &AmqpMessage) -> bool {
    let system = |name: &str| system_property(message, name);
    let pairs = [
        (&filter.correlation_id, "correlationid"),
        (&filter.message_id, "messageid"),
        (&filter.to, "to"),
        (&filter.reply_to, "replyto"),
        (&filter.label, "label"),
        (&filter.session_id, "sessionid"),
        (&filter.reply_to_session_id, "replytosessionid"),
        (&filter.content_type, "contenttype"),
    ];
    for (expected, name) in pairs {
        if let Some(expected) = expected
            && system(name).as_deref() != Some(expected.as_str())
        {
            return false;
        }
    }
    filter.properties.iter().all(|(key, expected)| {
        let actual = user_property(message, key);
        match (actual, expected) {
            (Some(V::Str(a)), serde_json::Value::String(e)) => a == *e,
            (Some(V::Num(a)), serde_json::Value::Number(e)) => e.as_f64() == Some(a),
            (Some(V::Bool(a)), serde_json::Value::Bool(e)) => a == *e,
            (Some(actual), expected) => actual.to_text() == format!("{expected}"),
            (None, _) => false,
        }
    })
}

fn system_property(message: &AmqpMessage, name: &str) -> Option<String> {
    let p = message.properties.as_ref()?;
    match name {
        "correlationid" => p.correlation_id.as_ref().map(message_id_string),
        "messageid" => p.message_id.as_ref().map(message_id_string),
        "to" => p.to.clone(),
        "replyto" => p.reply_to.clone(),
        "label" => p.subject.clone(),
        "sessionid" => p.group_id.clone(),
        "replytosessionid" => p.reply_to_group_id.clone(),
        "contenttype" => p.content_type.as_ref().map(|s| s.0.clone()),
        _ => None,
    }
}

fn user_property(message: &AmqpMessage, name: &str) -> Option<V> {
    let props = message.application_properties.as_ref()?;
    let value = props
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)?;
    Some(match value {
        SimpleValue::Null => V::Null,
        SimpleValue::Bool(b) => V::Bool(*b),
        SimpleValue::String(s) => V::Str(s.clone()),
        SimpleValue::Symbol(s) => V::Str(s.0.clone()),
        SimpleValue::Ubyte(n) => V::Num(f64::from(*n)),
        SimpleValue::Ushort(n) => V::Num(f64::from(*n)),
        SimpleValue::Uint(n) => V::Num(f64::from(*n)),
        SimpleValue::Ulong(n) => V::Num(*n as f64),
        SimpleValue::Byte(n) => V::Num(f64::from(*n)),
        SimpleValue::Short(n) => V::Num(f64::from(*n)),
        SimpleValue::Int(n) => V::Num(f64::from(*n)),
        SimpleValue::Long(n) => V::Num(*n as f64),
        SimpleValue::Float(n) => V::Num(f64::from(n.into_inner())),
        SimpleValue::Double(n) => V::Num(n.into_inner()),
        other => V::Str(format!("{other:?}")),
    })
}

/// A runtime value in SQL evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl V {
    fn to_text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => b.to_string(),
            V::Num(n) => n.to_string(),
            V::Str(s) => s.clone(),
        }
    }
}

/// SQL three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Self {
        if b { Tri::True } else { Tri::False }
    }
    fn not(self) -> Self {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// SQL expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, CmpOp, Operand),
    IsNull(Operand, bool),
    In(Operand, Vec<V>, bool),
    Exists(String),
    Const(Operand),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Literal(V),
    Property(String),
}

impl Operand {
    fn value(&self, message: &AmqpMessage) -> V {
        match self {
            Operand::Literal(v) => v.clone(),
            Operand::Property(name) => {
                let lower = name.to_ascii_lowercase();
                if let Some(sys) = lower.strip_prefix("sys.") {
                    system_property(message, sys).map_or(V::Null, V::Str)
                } else {
                    let user = name
                        .strip_prefix("user.")
                        .or_else(|| name.strip_prefix("USER."))
                        .unwrap_or(name);
                    user_property(message, user).unwrap_or(V::Null)
                }
            }
        }
    }
}

impl Expr {
    fn eval(&self, message: &AmqpMessage) -> Tri {
        match self {
            Expr::Or(a, b) => match (a.eval(message), b.eval(message)) {
                (Tri::True, _) | (_, Tri::True) => Tri::True,
                (Tri::False, Tri::False) => Tri::False,
                _ => Tri::Unknown,
            },
            Expr::And(a, b) => match (a.eval(message), b.eval(message)) {
                (Tri::False, _) | (_, Tri::False) => Tri::False,
                (Tri::True, Tri::True) => Tri::True,
                _ => Tri::Unknown,
            },
            Expr::Not(e) => e.eval(message).not(),
            Expr::Compare(a, op, b) => compare(&a.value(message), *op, &b.value(message)),
            Expr::IsNull(a, negated) => {
                let is_null = a.value(message) == V::Null;
                Tri::from_bool(is_null != *negated)
            }
            Expr::In(a, list, negated) => {
                let value = a.value(message);
                if value == V::Null {
                    return Tri::Unknown;
                }
                let found = list
                    .iter()
                    .any(|item| compare(&value, CmpOp::Eq, item) == Tri::True);
                Tri::from_bool(found != *negated)
            }
            Expr::Exists(name) => {
                Tri::from_bool(Operand::Property(name.clone()).value(message) != V::Null)
            }
            Expr::Const(operand) => match operand.value(message) {
                V::Bool(b) => Tri::from_bool(b),
                V::Null => Tri::Unknown,
                _ => Tri::False,
            },
        }
    }
}

fn compare(a: &V, op: CmpOp, b: &V) -> Tri {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (V::Null, _) | (_, V::Null) => return Tri::Unknown,
        (V::Num(x), V::Num(y)) => x.partial_cmp(y),
        (V::Str(x), V::Str(y)) => Some(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        _ => return Tri::False,
    };
    let Some(ordering) = ordering else {
        return Tri::Unknown;
    };
    Tri::from_bool(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current nesting of parentheses and `NOT`.
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '(' {
                tokens.push(Token::LParen);
                i += 1;
            } else if c == ')' {
                tokens.push(Token::RParen);
                i += 1;
            } else if c == ',' {
                tokens.push(Token::Comma);
                i += 1;
            } else if c == '\'' {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                        None => return Err("unterminated string literal".into()),
                    }
                }
                tokens.push(Token::Str(s));
            } else if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '.')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                tokens.push(Token::Num(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            } else if "=<>!".contains(c) {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["<>", "!=", "<=", ">="].contains(&two.as_str()) {
                    tokens.push(Token::Op(two));
                    i += 2;
                } else if c == '!' {
                    return Err("unexpected '!'".into());
                } else {
                    tokens.push(Token::Op(c.to_string()));
                    i += 1;
                }
            } else if c.is_alphanumeric() || c == '_' || c == '[' {
                let start = i;
                if c == '[' {
                    while chars.get(i).is_some_and(|d| *d != ']') {
                        i += 1;
                    }
                    let name: String = chars[start + 1..i.min(chars.len())].iter().collect();
                    i += 1;
                    tokens.push(Token::Ident(name));
                    continue;
                }
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_' || *d == '.' || *d == '-')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            } else {
                return Err(format!("unsupported character {c:?} in SQL filter"));
            }
        }
        Ok(Self {
            tokens,
            pos: 0,
            depth: 0,
        })
    }

    fn parse(mut self) -> Result<Expr, String> {
        let expr = self.or()?;
        if self.pos != self.tokens.len() {
            return Err(format!("unsupported SQL near token {}", self.pos));
        }
        Ok(expr)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Ident(k)) if k.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, token: Token) -> Result<(), String> {
        if self.tokens.get(self.pos) == Some(&token) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {token:?}"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    /// Enters one nesting level, refusing to go deeper than [`MAX_SQL_DEPTH`].
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        if self.depth >= MAX_SQL_DEPTH {
            return Err(format!(
                "a SQL filter may not nest parentheses and NOT deeper than {MAX_SQL_DEPTH} levels"
            ));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_keyword("NOT") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.tokens.get(self.pos) == Some(&Token::LParen) {
            self.pos += 1;
            let e = self.nested(Self::or)?;
            self.expect(Token::RParen)?;
            return Ok(e);
        }
        if self.eat_keyword("EXISTS") {
            self.expect(Token::LParen)?;
            let name = match self.tokens.get(self.pos) {
                Some(Token::Ident(n)) => n.clone(),
                _ => return Err("EXISTS expects a property name".into()),
            };
            self.pos += 1;
            self.expect(Token::RParen)?;
            return Ok(Expr::Exists(name));
        }
        let left = self.operand()?;
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err("expected NULL".into());
            }
            return Ok(Expr::IsNull(left, negated));
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            self.expect(Token::LParen)?;
            let mut list = Vec::new();
            loop {
                match self.operand()? {
                    Operand::Literal(v) => list.push(v),
                    Operand::Property(_) => return Err("IN expects literals".into()),
                }
                if self.tokens.get(self.pos) == Some(&Token::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            self.expect(Token::RParen)?;
            return Ok(Expr::In(left, list, negated));
        }
        if negated {
            return Err("unsupported use of NOT".into());
        }
        let op = match self.tokens.get(self.pos) {
            Some(Token::Op(op)) => match op.as_str() {
                "=" => CmpOp::Eq,
                "<>" | "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                ">" => CmpOp::Gt,
                "<=" => CmpOp::Le,
                ">=" => CmpOp::Ge,
                other => return Err(format!("unsupported operator {other}")),
            },
            _ => return Ok(Expr::Const(left)),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of SQL filter")?;
        self.pos += 1;
        Ok(match token {
            Token::Str(s) => Operand::Literal(V::Str(s)),
            Token::Num(n) => Operand::Literal(V::Num(n)),
            Token::Ident(i) if i.eq_ignore_ascii_case("TRUE") => Operand::Literal(V::Bool(true)),
            Token::Ident(i) if i.eq_ignore_ascii_case("FALSE") => Operand::Literal(V::Bool(false)),
            Token::Ident(i) if i.eq_ignore_ascii_case("NULL") => Operand::Literal(V::Null),
            Token::Ident(i)
                if ["AND", "OR", "NOT", "LIKE", "IS", "IN"]
                    .iter()
                    .any(|k| i.eq_ignore_ascii_case(k)) =>
            {
                return Err(format!("unsupported SQL keyword {i}"));
            }
            Token::Ident(i) => Operand::Property(i),
            other => return Err(format!("unexpected {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use fe2o3_amqp_types::messaging::{ApplicationProperties, Message, Properties};

    use super::*;

    fn message(color: &str, n: i64) -> AmqpMessage {
        Message::builder()
            .properties(Properties {
                subject: Some("orders".into()),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("color", color)
                    .insert("n", n)
                    .build(),
            )
            .body(fe2o3_amqp_types::messaging::Body::Empty)
            .build()
    }

    fn sql(text: &str) -> CompiledFilter {
        CompiledFilter::compile(&RuleFilter::Sql(text.into())).unwrap()
    }

    #[test]
    fn sql_subset() {
        let m = message("red", 5);
        assert!(sql("1=1").matches(&m));
        assert!(!sql("1=0").matches(&m));
        assert!(sql("color = 'red'").matches(&m));
        assert!(!sql("color = 'blue'").matches(&m));
        assert!(sql("color = 'red' AND n > 3").matches(&m));
        assert!(sql("color = 'blue' OR n >= 5").matches(&m));
        assert!(sql("sys.Label = 'orders'").matches(&m));
        assert!(sql("color IN ('green', 'red')").matches(&m));
        assert!(sql("missing IS NULL").matches(&m));
        assert!(!sql("NOT (color = 'red')").matches(&m));
        assert!(sql("EXISTS(color)").matches(&m));
        assert!(CompiledFilter::compile(&RuleFilter::Sql("color LIKE 'r%'".into())).is_err());
    }

    fn compile(text: String) -> Result<CompiledFilter, String> {
        CompiledFilter::compile(&RuleFilter::Sql(text))
    }

    /// Issue #11 item 11: on 1f6f772 these overflowed the stack and aborted the process.
    #[test]
    fn deep_nesting_is_refused_instead_of_overflowing_the_stack() {
        let parens = format!("{}1=1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(compile(parens).is_err());
        let nots = format!("{}1=1", "NOT ".repeat(100_000));
        assert!(compile(nots).is_err());
        // Within the limits nesting still works.
        let ok = format!("{}color = 'red'{}", "(".repeat(31), ")".repeat(31));
        assert!(compile(ok).unwrap().matches(&message("red", 1)));
        let too_deep = format!("{}color = 'red'{}", "(".repeat(33), ")".repeat(33));
        assert!(compile(too_deep).unwrap_err().contains("deeper"));
        assert!(compile(format!("{}1=1", "NOT ".repeat(32))).is_ok());
        assert!(compile(format!("{}1=1", "NOT ".repeat(33))).is_err());
        // Short enough for the length limit, too deep for the parser.
        let short_deep = format!("{}1=1{}", "(".repeat(500), ")".repeat(500));
        assert!(short_deep.len() <= MAX_SQL_LENGTH);
        assert!(compile(short_deep).unwrap_err().contains("deeper"));
    }

    #[test]
    fn long_expressions_are_refused_like_service_bus() {
        let chain = vec!["n = 1"; 300].join(" OR ");
        assert!(chain.len() > MAX_SQL_LENGTH);
        assert!(compile(chain).unwrap_err().contains("1024"));
        // The longest chain that fits evaluates without trouble.
        let fits = vec!["n = 5"; 110].join(" OR ");
        assert!(fits.len() <= MAX_SQL_LENGTH);
        assert!(compile(fits).unwrap().matches(&message("red", 5)));
    }
}
