//! TaskRouter's expression language: parses workflow filters and `target_workers` expressions and evaluates them
//! against JSON attributes, purely and without panicking on any input.
//!
//! What the sandbox follows, from Twilio's "Using TaskRouter Expressions" page:
//! - Comparisons are `==`, `!=`, `<`, `<=`, `>`, `>=` and `CONTAINS` (substring) on scalars, and `HAS` (array on the
//!   left holds the value), `IN` and `NOT IN` (value on the left is, or is not, in the array on the right).
//!   Scalar operators on an array, and array operators on two scalars, give `false`.
//! - Constants are strings in single or double quotes, integer or decimal numbers, and unquoted `true`/`false`.
//! - Keys use dots for sub-properties and `[n]` for array indices; a key the document lacks resolves to null.
//! - Hyphens are not supported, so a `-` outside a string is refused here rather than accepted by the sandbox and
//!   then refused by the real service.
//!
//! Decisions the docs leave open:
//! - Keywords (`AND`, `OR`, `NOT`, `IN`, `HAS`, `CONTAINS`, `true`, `false`) are case-insensitive, because Twilio's
//!   own examples write both `IN` and `in`. Keys are case-sensitive, like JSON.
//! - A single `=` is an error: the docs list only `==`, and accepting more than Twilio does would let a
//!   configuration pass against the sandbox and fail in production. `&&`, `||` and `!` are errors too.
//! - `NOT` is accepted as a prefix on a comparison or a parenthesized group; it binds tighter than `AND`, which
//!   binds tighter than `OR`.
//! - Any comparison whose operands are missing, null, objects or of different types (a number against a string,
//!   say) is `false`, whatever the operator, `!=` and `NOT IN` included. The docs say such comparisons "should be
//!   avoided", and a uniform `false` matches what they say about arrays. `NOT (a == 1)` asks "a is not 1, or a is
//!   absent".
//! - Numbers compare as `f64`, so `1 == 1.0`; strings compare by bytes and case-sensitively; booleans only support
//!   `==` and `!=`.
//! - Strings have no escapes: a string ends at the next quote of the kind that opened it.

use serde_json::Value;

/// Inputs longer than this are refused, because expressions come from untrusted API requests.
const MAX_LEN: usize = 4096;
/// Nesting of parentheses and `NOT` beyond this is refused, so that parsing and evaluation cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// A parsed expression, ready to be evaluated against many tasks or workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
}

/// Why an expression was refused; every position is a byte offset into the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("the expression is empty")]
    Empty,
    #[error("the expression is {len} bytes long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("the expression nests deeper than {max} levels at {at}")]
    TooDeep { at: usize, max: usize },
    #[error("unterminated string starting at {at}")]
    UnterminatedString { at: usize },
    #[error("unexpected character {ch:?} at {at}")]
    UnexpectedChar { ch: char, at: usize },
    #[error("hyphens are not supported in TaskRouter expressions, found one at {at}")]
    Hyphen { at: usize },
    #[error("invalid number '{text}' at {at}")]
    BadNumber { text: String, at: usize },
    #[error("unknown operator '{op}' at {at}")]
    UnknownOperator { op: String, at: usize },
    #[error("the '(' at {at} is never closed")]
    UnclosedParen { at: usize },
    #[error("expected {expected} at {at}, found {found}")]
    Expected { expected: String, found: String, at: usize },
}

/// What names are resolved against while evaluating.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// What an unprefixed name refers to (task attributes for a workflow filter, worker attributes for
    /// target_workers).
    pub attributes: &'a Value,
    /// What `task.` resolves in, when given.
    pub task: Option<&'a Value>,
    /// What `worker.` resolves in, when given.
    pub worker: Option<&'a Value>,
}

impl Expr {
    /// Parses `src`, refusing anything TaskRouter's grammar does not allow.
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        if src.len() > MAX_LEN {
            return Err(ExprError::TooLong { len: src.len(), max: MAX_LEN });
        }
        let tokens = lex(src)?;
        if tokens.is_empty() {
            return Err(ExprError::Empty);
        }
        let mut parser = Parser { src, tokens, pos: 0, depth: 0 };
        let node = parser.or()?;
        if parser.pos < parser.tokens.len() {
            return Err(parser.expected("AND, OR or the end of the expression"));
        }
        Ok(Expr { node })
    }

    /// Evaluates the expression; missing or mistyped attributes make their comparison false, never an error.
    pub fn eval(&self, ctx: &Context<'_>) -> bool {
        self.node.eval(ctx)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    // AND and OR chains are kept flat so that a long chain does not make a deep tree.
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Cmp { left: Operand, op: Op, right: Operand },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Has,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Lit(Lit),
    Array(Vec<Lit>),
    Path(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(Lit),
    Path(Vec<Segment>),
    Op(Op),
    And,
    Or,
    Not,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

/// A token with its byte span, kept so that errors can point at it and quote it.
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits the source into tokens. Slicing only ever happens at offsets taken from `char_indices` (or at the end),
/// so multi-byte characters cannot cause a panic.
fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let offset = |i: usize| chars.get(i).map_or(src.len(), |&(o, _)| o);
    let is = |i: usize, f: &dyn Fn(char) -> bool| chars.get(i).is_some_and(|&(_, c)| f(c));
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&(start, c)) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        let tok = if let Some(tok) = single {
            i += 1;
            tok
        } else if c == '"' || c == '\'' {
            let close = (i + 1..chars.len()).find(|&j| chars[j].1 == c);
            let close = close.ok_or(ExprError::UnterminatedString { at: start })?;
            i = close + 1;
            Tok::Lit(Lit::Str(src[start + 1..chars[close].0].to_owned()))
        } else if c.is_ascii_digit() {
            while is(i, &|c| c.is_ascii_digit()) {
                i += 1;
            }
            if is(i, &|c| c == '.') && is(i + 1, &|c| c.is_ascii_digit()) {
                i += 1;
                while is(i, &|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            // A number running straight into letters or another dot (`12abc`, `1.2.3`, `1.`) is a typo, not two
            // tokens.
            let mut bad = false;
            while is(i, &|c| c == '.' || is_ident_char(c)) {
                bad = true;
                i += 1;
            }
            let text = &src[start..offset(i)];
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() && !bad => Tok::Lit(Lit::Num(n)),
                _ => {
                    return Err(ExprError::BadNumber { text: text.to_owned(), at: start });
                }
            }
        } else if is_ident_start(c) {
            let (tok, next) = lex_word(src, &chars, i)?;
            i = next;
            tok
        } else if "=!<>&|".contains(c) {
            while is(i, &|c| "=!<>&|".contains(c)) {
                i += 1;
            }
            let op = match &src[start..offset(i)] {
                "==" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => {
                    return Err(ExprError::UnknownOperator { op: other.to_owned(), at: start });
                }
            };
            Tok::Op(op)
        } else if c == '-' {
            return Err(ExprError::Hyphen { at: start });
        } else {
            return Err(ExprError::UnexpectedChar { ch: c, at: start });
        };
        tokens.push(Token { tok, start, end: offset(i) });
    }
    Ok(tokens)
}

/// Lexes a keyword, a boolean or a key path such as `task.languages[0].name`, starting at `chars[i]`.
fn lex_word(src: &str, chars: &[(usize, char)], mut i: usize) -> Result<(Tok, usize), ExprError> {
    let offset = |i: usize| chars.get(i).map_or(src.len(), |&(o, _)| o);
    let char_at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut segments = Vec::new();
    loop {
        let start = i;
        while char_at(i).is_some_and(is_ident_char) {
            i += 1;
        }
        segments.push(Segment::Key(src[offset(start)..offset(i)].to_owned()));
        while char_at(i) == Some('[') {
            let mut j = i + 1;
            while char_at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            match (src[offset(i + 1)..offset(j)].parse::<usize>(), char_at(j)) {
                (Ok(n), Some(']')) => segments.push(Segment::Index(n)),
                _ => {
                    let expected = "an array index such as [0]".to_owned();
                    return Err(ExprError::Expected { expected, found: describe_char(char_at(j)), at: offset(j) });
                }
            }
            i = j + 1;
        }
        match (char_at(i), char_at(i + 1)) {
            (Some('.'), Some(c)) if is_ident_start(c) => i += 1,
            (Some('.'), next) => {
                let expected = "a key name after '.'".to_owned();
                return Err(ExprError::Expected { expected, found: describe_char(next), at: offset(i + 1) });
            }
            _ => break,
        }
    }
    let tok = match segments.as_slice() {
        [Segment::Key(word)] => match word.to_ascii_uppercase().as_str() {
            "AND" => Tok::And,
            "OR" => Tok::Or,
            "NOT" => Tok::Not,
            "IN" => Tok::Op(Op::In),
            "HAS" => Tok::Op(Op::Has),
            "CONTAINS" => Tok::Op(Op::Contains),
            "TRUE" => Tok::Lit(Lit::Bool(true)),
            "FALSE" => Tok::Lit(Lit::Bool(false)),
            _ => Tok::Path(segments),
        },
        _ => Tok::Path(segments),
    };
    Ok((tok, i))
}

fn describe_char(c: Option<char>) -> String {
    c.map_or_else(|| "the end of the expression".to_owned(), |c| format!("{c:?}"))
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.src.len(), |t| t.start)
    }

    /// Quotes the current token for an error message, shortening long ones.
    fn found(&self) -> String {
        match self.tokens.get(self.pos) {
            None => "the end of the expression".to_owned(),
            Some(Token { tok: Tok::Lit(Lit::Str(_)), .. }) => "a string".to_owned(),
            Some(t) => format!("'{}'", self.src[t.start..t.end].chars().take(24).collect::<String>()),
        }
    }

    fn expected(&self, expected: &str) -> ExprError {
        ExprError::Expected { expected: expected.to_owned(), found: self.found(), at: self.at() }
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Or(items) })
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut items = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::And(items) })
    }

    /// Parses `NOT`, a parenthesized group or a comparison; only the first two nest, so only they count towards
    /// the depth limit.
    fn unary(&mut self) -> Result<Node, ExprError> {
        let open = self.at();
        if !matches!(self.peek(), Some(Tok::Not | Tok::LParen)) {
            return self.comparison();
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::TooDeep { at: open, max: MAX_DEPTH });
        }
        let node = if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            Node::Not(Box::new(self.unary()?))
        } else {
            self.pos += 1;
            let inner = self.or()?;
            match self.peek() {
                Some(Tok::RParen) => self.pos += 1,
                None => return Err(ExprError::UnclosedParen { at: open }),
                Some(_) => return Err(self.expected("')', AND or OR")),
            }
            inner
        };
        self.depth -= 1;
        Ok(node)
    }

    fn comparison(&mut self) -> Result<Node, ExprError> {
        let left = self.operand("a comparison, NOT or '('")?;
        let op_start = self.at();
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            Some(Tok::Not) if self.tokens.get(self.pos + 1).map(|t| &t.tok) == Some(&Tok::Op(Op::In)) => {
                self.pos += 1;
                Op::NotIn
            }
            // A word where an operator belongs (`a LIKE 'x'`) reads as an operator Twilio does not have.
            Some(Tok::Path(_)) => {
                let t = &self.tokens[self.pos];
                return Err(ExprError::UnknownOperator { op: self.src[t.start..t.end].to_owned(), at: t.start });
            }
            _ => return Err(self.expected("a comparison operator")),
        };
        let op_text = &self.src[op_start..self.tokens[self.pos].end];
        let expected = format!("a value after '{op_text}'");
        self.pos += 1;
        let right = self.operand(&expected)?;
        Ok(Node::Cmp { left, op, right })
    }

    fn operand(&mut self, expected: &str) -> Result<Operand, ExprError> {
        let operand = match self.peek() {
            Some(Tok::LBracket) => return self.array(),
            Some(Tok::Path(segments)) => Operand::Path(segments.clone()),
            _ => Operand::Lit(self.literal(expected)?),
        };
        self.pos += 1;
        Ok(operand)
    }

    /// Reads a literal without consuming it, so that the caller decides when to advance.
    fn literal(&self, expected: &str) -> Result<Lit, ExprError> {
        match self.peek() {
            Some(Tok::Lit(lit)) => Ok(lit.clone()),
            _ => Err(self.expected(expected)),
        }
    }

    fn array(&mut self) -> Result<Operand, ExprError> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(&Tok::RBracket) {
            self.pos += 1;
            return Ok(Operand::Array(items));
        }
        loop {
            items.push(self.literal("a string, number or boolean in the array")?);
            self.pos += 1;
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::RBracket) => {
                    self.pos += 1;
                    return Ok(Operand::Array(items));
                }
                _ => return Err(self.expected("',' or ']'")),
            }
        }
    }
}

/// A scalar seen during evaluation, borrowed from either the expression or the JSON attributes.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

/// An operand's value during evaluation; `Other` covers missing keys, null and objects.
enum Resolved<'a> {
    Scalar(Scalar<'a>),
    JsonArray(&'a [Value]),
    LitArray(&'a [Lit]),
    Other,
}

fn json_scalar(v: &Value) -> Option<Scalar<'_>> {
    match v {
        Value::String(s) => Some(Scalar::Str(s)),
        Value::Number(n) => n.as_f64().map(Scalar::Num),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn lit_scalar(l: &Lit) -> Scalar<'_> {
    match l {
        Lit::Str(s) => Scalar::Str(s),
        Lit::Num(n) => Scalar::Num(*n),
        Lit::Bool(b) => Scalar::Bool(*b),
    }
}

fn scalar_eq(a: Scalar<'_>, b: Scalar<'_>) -> bool {
    match (a, b) {
        (Scalar::Str(a), Scalar::Str(b)) => a == b,
        (Scalar::Num(a), Scalar::Num(b)) => a == b,
        (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
        _ => false,
    }
}

impl Resolved<'_> {
    /// Whether any element of an array equals `x`; `None` when this is not an array.
    fn array_has(&self, x: Scalar<'_>) -> Option<bool> {
        match self {
            Resolved::JsonArray(items) => Some(items.iter().filter_map(json_scalar).any(|i| scalar_eq(i, x))),
            Resolved::LitArray(items) => Some(items.iter().any(|i| scalar_eq(lit_scalar(i), x))),
            _ => None,
        }
    }
}

impl Node {
    fn eval(&self, ctx: &Context<'_>) -> bool {
        match self {
            Node::Or(items) => items.iter().any(|n| n.eval(ctx)),
            Node::And(items) => items.iter().all(|n| n.eval(ctx)),
            Node::Not(inner) => !inner.eval(ctx),
            Node::Cmp { left, op, right } => compare(*op, &resolve(left, ctx), &resolve(right, ctx)),
        }
    }
}

fn resolve<'a>(operand: &'a Operand, ctx: &Context<'a>) -> Resolved<'a> {
    let segments = match operand {
        Operand::Lit(l) => return Resolved::Scalar(lit_scalar(l)),
        Operand::Array(items) => return Resolved::LitArray(items),
        Operand::Path(segments) => segments.as_slice(),
    };
    // `task.` and `worker.` switch documents only when that document was given, so that an attribute really named
    // "task" still resolves in a workflow filter.
    let (mut value, rest) = match segments {
        [Segment::Key(k), rest @ ..] if k == "task" && !rest.is_empty() && ctx.task.is_some() => (ctx.task, rest),
        [Segment::Key(k), rest @ ..] if k == "worker" && !rest.is_empty() && ctx.worker.is_some() => (ctx.worker, rest),
        _ => (Some(ctx.attributes), segments),
    };
    for segment in rest {
        value = match segment {
            Segment::Key(k) => value.and_then(|v| v.get(k.as_str())),
            Segment::Index(i) => value.and_then(|v| v.get(*i)),
        };
    }
    match value {
        Some(Value::Array(items)) => Resolved::JsonArray(items),
        Some(v) => json_scalar(v).map_or(Resolved::Other, Resolved::Scalar),
        None => Resolved::Other,
    }
}

fn compare(op: Op, left: &Resolved<'_>, right: &Resolved<'_>) -> bool {
    use std::cmp::Ordering;
    match (op, left, right) {
        (Op::Has, array, Resolved::Scalar(x)) => array.array_has(*x).unwrap_or(false),
        (Op::In, Resolved::Scalar(x), array) => array.array_has(*x).unwrap_or(false),
        (Op::NotIn, Resolved::Scalar(x), array) => array.array_has(*x).is_some_and(|has| !has),
        (Op::Contains, Resolved::Scalar(Scalar::Str(a)), Resolved::Scalar(Scalar::Str(b))) => a.contains(b),
        (Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge, Resolved::Scalar(a), Resolved::Scalar(b)) => {
            let ordering = match (a, b) {
                (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
                (Scalar::Num(a), Scalar::Num(b)) => a.partial_cmp(b),
                (Scalar::Bool(a), Scalar::Bool(b)) if matches!(op, Op::Eq | Op::Ne) => Some(a.cmp(b)),
                _ => None,
            };
            ordering.is_some_and(|o| match op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn eval(src: &str, task: &Value, worker: Option<&Value>) -> bool {
        let expr = Expr::parse(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e}"));
        // A target_workers expression sees the worker as its unprefixed document; a filter sees the task.
        let attributes = worker.unwrap_or(task);
        expr.eval(&Context { attributes, task: Some(task), worker })
    }

    #[test]
    fn evaluates_the_table_of_cases() {
        let task = json!({
            "location": "north", "type": "Support", "priority": 5, "ratio": 2.5, "vip": true,
            "langs": ["en", "es", 3], "customer": {"tier": {"name": "gold"}}, "agents": ["WK1", "WK2"],
            "note": "call me back", "nothing": null, "task": {"x": 1},
        });
        let worker = json!({"id": "WK2", "location": "north", "skills": ["spanish", "billing"], "level": 3});
        let w = Some(&worker);
        let cases: &[(&str, Option<&Value>, bool)] = &[
            ("1==1", None, true),
            ("1 == 2", None, false),
            ("0 != 1", None, true),
            ("\"apple\" != \"orange\"", None, true),
            ("location == \"north\"", None, true),
            ("location == 'south'", None, false),
            ("location != 'south'", None, true),
            ("location == 'North'", None, false),
            ("priority > 4", None, true),
            ("priority >= 5", None, true),
            ("priority < 5", None, false),
            ("priority <= 5.0", None, true),
            ("priority == 5.0", None, true),
            ("ratio > 2.49 AND ratio < 2.51", None, true),
            ("location < 'south'", None, true),
            ("vip == true", None, true),
            ("vip != FALSE", None, true),
            ("vip > false", None, false),
            ("note CONTAINS 'me b'", None, true),
            ("note contains 'Me'", None, false),
            ("priority CONTAINS 5", None, false),
            ("langs HAS 'es'", None, true),
            ("langs has 3", None, true),
            ("langs HAS 'fr'", None, false),
            ("['a', 'b'] HAS 'b'", None, true),
            ("location IN ['north', \"east\", 1]", None, true),
            ("location in []", None, false),
            ("location NOT IN ['south', 'east']", None, true),
            ("location not in ['north']", None, false),
            ("priority IN [1, 5]", None, true),
            ("priority IN ['5']", None, false),
            ("customer.tier.name == 'gold'", None, true),
            ("langs[1] == 'es'", None, true),
            ("langs[9] == 'es'", None, false),
            // Missing, null, object and mixed-type operands make every comparison false.
            ("missing == 'x'", None, false),
            ("missing != 'x'", None, false),
            ("NOT missing == 'x'", None, true),
            ("missing NOT IN ['x']", None, false),
            ("customer.nope.deeper == 1", None, false),
            ("nothing == nothing", None, false),
            ("customer == customer", None, false),
            ("priority == '5'", None, false),
            ("priority != '5'", None, false),
            ("langs == langs", None, false),
            ("location HAS 'n'", None, false),
            ("langs IN ['en']", None, false),
            ("location == 'north' AND type == 'Support'", None, true),
            ("location == 'north' and type == 'Sales'", None, false),
            ("location == 'south' OR type == 'Support'", None, true),
            ("location == 'south' Or type == 'Sales'", None, false),
            ("NOT location == 'south'", None, true),
            ("not (location == 'north')", None, false),
            ("NOT NOT 1 == 1", None, true),
            // AND binds tighter than OR, and NOT tighter than AND.
            ("1 == 1 OR 1 == 2 AND 1 == 2", None, true),
            ("(1 == 1 OR 1 == 2) AND 1 == 2", None, false),
            ("NOT 1 == 2 AND 1 == 2", None, false),
            ("NOT (1 == 2 AND 1 == 2)", None, true),
            ("((location == 'north'))", None, true),
            ("(type == \"Support\" OR type == 'Sales') AND priority >= 5.0", None, true),
            ("task.location == location", None, true),
            // With a worker, unprefixed names are the worker's and the task is reached with `task.`.
            ("location == task.location", w, true),
            ("level < task.priority", w, true),
            ("worker.skills HAS \"spanish\"", w, true),
            ("skills HAS 'billing' AND task.vip == true", w, true),
            ("worker.id IN task.agents", w, true),
            ("worker.id NOT IN task.agents", w, false),
            ("task.type == 'Sales'", w, false),
            ("priority == 5", w, false),
        ];
        for &(src, worker, expected) in cases {
            assert_eq!(eval(src, &task, worker), expected, "{src}");
        }
    }

    #[test]
    fn prefixes_without_a_document_resolve_as_ordinary_keys() {
        let attributes = json!({"task": {"x": 1}, "worker": {"y": 2}});
        let ctx = Context { attributes: &attributes, task: None, worker: None };
        assert!(Expr::parse("task.x == 1 AND worker.y == 2").unwrap().eval(&ctx));
    }

    #[test]
    fn refuses_invalid_expressions_with_a_located_message() {
        let deep = format!("{}1 == 1{}", "(".repeat(65), ")".repeat(65));
        let long = format!("a == '{}'", "x".repeat(MAX_LEN));
        let cases: &[(&str, &str)] = &[
            ("", "the expression is empty"),
            ("   \n ", "the expression is empty"),
            ("location == 'north", "unterminated string starting at 12"),
            ("a == \"é", "unterminated string starting at 5"),
            ("location ==", "expected a value after '==' at 11, found the end of the expression"),
            ("a == 1 AND", "expected a comparison, NOT or '(' at 10, found the end of the expression"),
            ("a == 1 OR OR b == 2", "expected a comparison, NOT or '(' at 10, found 'OR'"),
            ("a NOT IN", "expected a value after 'NOT IN' at 8, found the end of the expression"),
            ("a == AND", "expected a value after '==' at 5, found 'AND'"),
            ("(a == 1", "the '(' at 0 is never closed"),
            ("(a == 1 b == 2)", "expected ')', AND or OR at 8, found 'b'"),
            ("a == 1)", "expected AND, OR or the end of the expression at 6, found ')'"),
            ("()", "expected a comparison, NOT or '(' at 1, found ')'"),
            ("a = 1", "unknown operator '=' at 2"),
            ("a === 1", "unknown operator '===' at 2"),
            ("a == 1 && b == 2", "unknown operator '&&' at 7"),
            ("!(a == 1)", "unknown operator '!' at 0"),
            ("a LIKE 'x'", "unknown operator 'LIKE' at 2"),
            ("a", "expected a comparison operator at 1, found the end of the expression"),
            ("a NOT 'x'", "expected a comparison operator at 2, found 'NOT'"),
            ("a == [1, 2", "expected ',' or ']' at 10, found the end of the expression"),
            ("a IN [1,]", "expected a string, number or boolean in the array at 8, found ']'"),
            ("a IN [b]", "expected a string, number or boolean in the array at 6, found 'b'"),
            ("a == 1.", "invalid number '1.' at 5"),
            ("a == 12abc", "invalid number '12abc' at 5"),
            ("a == -1", "hyphens are not supported in TaskRouter expressions, found one at 5"),
            ("a.b- == 1", "hyphens are not supported in TaskRouter expressions, found one at 3"),
            ("a. == 1", "expected a key name after '.' at 2, found ' '"),
            ("a[x] == 1", "expected an array index such as [0] at 2, found 'x'"),
            ("é == @", "unexpected character '@' at 6"),
            (&deep, "the expression nests deeper than 64 levels at 64"),
            (&long, "the expression is 4103 bytes long; at most 4096 are allowed"),
        ];
        for &(src, message) in cases {
            let err = Expr::parse(src).expect_err(src);
            assert_eq!(err.to_string(), message, "{src}");
        }
        let not_deep = format!("{}1 == 1{}", "(".repeat(64), ")".repeat(64));
        assert!(Expr::parse(&not_deep).is_ok());
        assert!(Expr::parse(&format!("{}1 == 1", "NOT ".repeat(65))).is_err());
    }

    #[test]
    fn a_long_flat_chain_is_accepted() {
        let chain = vec!["a == 1"; 400].join(" OR ");
        let attributes = json!({"a": 1});
        assert!(Expr::parse(&chain).unwrap().eval(&Context { attributes: &attributes, task: None, worker: None }));
    }

    /// Pieces of the grammar, broken ones included, for building token soups.
    const TOKENS: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        ",",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "=",
        "AND",
        "or",
        "NOT",
        "IN",
        "has",
        "CONTAINS",
        "true",
        "FALSE",
        "a",
        "task.b",
        "worker.c[0]",
        "x.y.z",
        "1",
        "2.5",
        "'s'",
        "\"d\"",
        "'",
        "-",
        "é",
        ".",
        "",
    ];

    /// Well-formed expressions built from the grammar, nested up to six levels.
    fn valid_expr() -> impl Strategy<Value = String> {
        let operand = prop_oneof![
            Just("a".to_owned()),
            Just("task.b".to_owned()),
            Just("worker.c[0]".to_owned()),
            (0u32..100).prop_map(|n| n.to_string()),
            "[a-z ]{0,6}".prop_map(|s| format!("'{s}'")),
            Just("[1, 'x', true]".to_owned()),
        ];
        let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">=", "HAS", "in", "NOT IN", "contains"]);
        let cmp = (operand.clone(), op, operand).prop_map(|(l, op, r)| format!("{l} {op} {r}"));
        cmp.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| format!("NOT {e}")),
                inner.clone().prop_map(|e| format!("({e})")),
                (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} AND {r}")),
                (inner.clone(), inner).prop_map(|(l, r)| format!("{l} or {r}")),
            ]
        })
    }

    fn eval_all(expr: &Expr) -> bool {
        let doc = json!({"a": 1, "b": ["x"], "c": ["y", 2]});
        expr.eval(&Context { attributes: &doc, task: Some(&doc), worker: Some(&doc) })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(src in any::<String>()) {
            if let Ok(expr) = Expr::parse(&src) {
                eval_all(&expr);
            }
        }

        #[test]
        fn grammar_built_expressions_parse_and_evaluate(src in valid_expr()) {
            let expr = Expr::parse(&src).map_err(|e| TestCaseError::fail(format!("{src:?}: {e}")))?;
            // NOT must invert whatever the expression gives, which also checks that NOT wraps the whole thing.
            let negated = Expr::parse(&format!("NOT ({src})")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(eval_all(&negated), !eval_all(&expr));
        }

        #[test]
        fn random_token_sequences_never_panic(
            tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
            spaced in any::<bool>(),
        ) {
            let src = tokens.join(if spaced { " " } else { "" });
            if let Ok(expr) = Expr::parse(&src) {
                eval_all(&expr);
            }
        }
    }
}
