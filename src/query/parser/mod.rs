//! The query string parser. Positions in errors are byte offsets into the raw query string.
//!
//! Structure (`& | ( ) [ ] = ! ,` and the call syntax) is read from the raw string, so a
//! percent-encoded `%26` inside a value is a literal `&`; names and values are percent-decoded.
//! This file reads conditions and their grouping; `calls.rs` reads `select()`, `sort()`,
//! `limit()` and `after()`, and `values.rs` the value of a condition.

mod calls;
mod values;

use percent_encoding::percent_decode_str;

use super::{Condition, Filter, Op, Query};
use crate::error::QueryError;
use calls::Calls;

type Parsed<T> = Result<T, QueryError>;

const OPERATORS: [(&str, Op); 9] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("lt", Op::Lt),
    ("le", Op::Le),
    ("gt", Op::Gt),
    ("ge", Op::Ge),
    ("sw", Op::StartsWith),
    ("ct", Op::Contains),
    ("ew", Op::EndsWith),
];
const EXPECTED_OPERATOR: &str =
    "an operator: =, ==, !=, =eq=, =ne=, =lt=, =le=, =gt=, =ge=, =sw=, =ct= or =ew=";
/// Characters that end a name.
const NAME_END: &[u8] = b"=!&|()[]<>,{}";
/// Characters that end a value.
const VALUE_END: &[u8] = b"&|)]";

/// Parses a raw (percent-encoded) query string.
pub fn parse(raw: &str) -> Parsed<Query> {
    let mut parser = Parser {
        src: raw,
        pos: 0,
        depth: 0,
    };
    let mut query = Query::default();
    query.filter = parser.sequence(None, Some(&mut query))?;
    Ok(query)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// How many groups (or nested `select` braces) enclose the current position.
    depth: usize,
}

/// The deepest nesting of groups or `select` braces accepted: parsing, binding and evaluating
/// recurse once per level, so the bound keeps any query string from exhausting a thread's stack.
const MAX_DEPTH: usize = 32;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    /// Steps into a group or brace at `at`, refusing nesting deeper than [`MAX_DEPTH`].
    fn enter(&mut self, at: usize) -> Parsed<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let token = &self.src[at..=at];
            return Err(self.error(at, token, format!("at most {MAX_DEPTH} nested groups")));
        }
        Ok(())
    }

    fn error(&self, position: usize, token: &str, expected: impl Into<String>) -> QueryError {
        QueryError {
            position,
            token: token.to_owned(),
            expected: expected.into(),
        }
    }

    /// The text from the current position to the next byte in `stop` (or the end).
    fn take_until(&mut self, stop: &[u8]) -> (usize, &'a str) {
        let start = self.pos;
        let len = self.src.as_bytes()[start..]
            .iter()
            .position(|b| stop.contains(b))
            .unwrap_or(self.src.len() - start);
        self.pos += len;
        (start, &self.src[start..start + len])
    }

    fn decode(&self, position: usize, text: &str) -> Parsed<String> {
        percent_decode_str(text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                self.error(
                    position,
                    text,
                    "UTF-8 text (percent-encoded bytes must form UTF-8)",
                )
            })
    }

    /// Terms joined by `&` or `|` up to `close` (or the end); `query` is given at the top level,
    /// where `select()`, `sort()` and `limit()` may appear.
    fn sequence(
        &mut self,
        close: Option<u8>,
        mut query: Option<&mut Query>,
    ) -> Parsed<Option<Filter>> {
        let mut terms: Vec<Filter> = Vec::new();
        let mut joiner: Option<u8> = None;
        let mut calls = Calls::default();
        loop {
            let here = self.pos;
            match self.peek() {
                None => match close {
                    Some(c) => {
                        return Err(self.error(
                            here,
                            "",
                            format!("`{}` closing the group", c as char),
                        ));
                    }
                    None => break,
                },
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    break;
                }
                Some(c @ (b'&' | b'|')) => {
                    if c == b'|' && calls.any() {
                        return Err(self.error(
                            here,
                            "|",
                            "& between conditions and select(), sort() or limit()",
                        ));
                    }
                    if joiner.is_some_and(|j| j != c) {
                        return Err(self.error(
                            here,
                            &(c as char).to_string(),
                            "the same joiner throughout a group: put ( ) or [ ] around a mix of & and |",
                        ));
                    }
                    joiner = Some(c);
                    self.pos += 1;
                    continue;
                }
                Some(c @ (b')' | b']')) => {
                    return Err(self.error(
                        here,
                        &(c as char).to_string(),
                        "a condition (this bracket closes nothing)",
                    ));
                }
                Some(open @ (b'(' | b'[')) => {
                    self.pos += 1;
                    let close = if open == b'(' { b')' } else { b']' };
                    self.enter(here)?;
                    let group = self.sequence(Some(close), None)?;
                    self.depth -= 1;
                    match group {
                        Some(group) => terms.push(group),
                        None => {
                            return Err(self.error(here, "", "a condition inside the brackets"));
                        }
                    }
                }
                Some(_) => {
                    let (start, name) = self.take_until(NAME_END);
                    if self.peek() == Some(b'(') && !name.is_empty() {
                        let Some(query) = query.as_deref_mut() else {
                            return Err(self.error(
                                start,
                                name,
                                "a condition: select(), sort() and limit() belong at the top level",
                            ));
                        };
                        if joiner == Some(b'|') {
                            return Err(self.error(
                                start,
                                name,
                                "a condition: join select(), sort() and limit() with &",
                            ));
                        }
                        self.call(start, name.to_owned(), query, &mut calls)?;
                    } else {
                        let condition = self.condition(start, name)?;
                        terms.push(chain(condition, &terms, joiner));
                    }
                }
            }
            self.expect_joiner_or_end(close)?;
        }
        Ok(match (terms.len(), joiner) {
            (0, _) => None,
            (1, _) => terms.pop(),
            (_, Some(b'|')) => Some(Filter::Any(terms)),
            _ => Some(Filter::All(terms)),
        })
    }

    /// After a term: a joiner, the group's closing bracket, or the end.
    fn expect_joiner_or_end(&self, close: Option<u8>) -> Parsed<()> {
        match self.peek() {
            None | Some(b'&' | b'|') => Ok(()),
            Some(c) if Some(c) == close => Ok(()),
            Some(c) => {
                let expected = match close {
                    Some(close) => format!("&, | or `{}`", close as char),
                    None => "& or |".to_owned(),
                };
                Err(self.error(self.pos, &(c as char).to_string(), expected))
            }
        }
    }

    fn condition(&mut self, start: usize, name: &str) -> Parsed<Condition> {
        if name.is_empty() {
            let (_, token) = self.peek_token();
            return Err(self.error(start, token, "an attribute name"));
        }
        let path = self.path(start, name)?;
        let op_start = self.pos;
        let rest = &self.src[op_start..];
        let op = if rest.starts_with("!=") {
            self.pos += 2;
            Op::Ne
        } else if rest.starts_with("==") {
            self.pos += 2;
            Op::Eq
        } else if rest.starts_with('=') {
            self.pos += 1;
            self.named_operator()?
        } else {
            let (_, token) = self.peek_token();
            return Err(self.error(op_start, token, EXPECTED_OPERATOR));
        };
        let (value_position, raw) = self.take_until(VALUE_END);
        let text = self.decode(value_position, raw)?;
        let (op, value) = self.literal(op, value_position, text)?;
        Ok(Condition {
            path,
            op,
            value,
            position: start,
            value_position,
        })
    }

    /// `gt=` and friends right after the first `=`.
    /// After `attr=`: `gt=` and friends, or nothing (equality). Letters followed by `=` that name
    /// no operator are an error rather than part of a value (write `=` in values as `%3D`).
    fn named_operator(&mut self) -> Parsed<Op> {
        let rest = &self.src[self.pos..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if letters == 0 || rest.as_bytes().get(letters) != Some(&b'=') {
            return Ok(Op::Eq);
        }
        let name = &rest[..letters];
        let (_, op) = OPERATORS
            .iter()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| self.error(self.pos, name, EXPECTED_OPERATOR))?;
        self.pos += letters + 1;
        Ok(*op)
    }

    fn path(&self, at: usize, raw: &str) -> Parsed<Vec<String>> {
        let text = self.decode(at, raw)?;
        let path: Vec<String> = text.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(self.error(at, &text, "an attribute name or dotted path such as dims.w"));
        }
        Ok(path)
    }

    /// The next token, for error messages.
    fn peek_token(&self) -> (usize, &'a str) {
        let rest: &'a str = &self.src[self.pos..];
        let len = rest.char_indices().nth(1).map_or(rest.len(), |(i, _)| i);
        (self.pos, &rest[..len])
    }
}

/// `price=gt=10&lt=20`: a condition named like an operator, right after a condition joined by
/// `&`, continues that condition's attribute.
fn chain(condition: Condition, terms: &[Filter], joiner: Option<u8>) -> Filter {
    let previous = match terms.last() {
        Some(Filter::Condition(previous)) if joiner != Some(b'|') => previous,
        _ => return Filter::Condition(condition),
    };
    let chained = match (&condition.path[..], condition.op) {
        ([name], Op::Eq) => OPERATORS
            .iter()
            .find(|(op, _)| op == name)
            .map(|(_, op)| *op),
        _ => None,
    };
    match chained {
        Some(op) => Filter::Condition(Condition {
            path: previous.path.clone(),
            op,
            ..condition
        }),
        None => Filter::Condition(condition),
    }
}
