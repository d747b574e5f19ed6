//! The value of a condition: `null`, typed values (`number:`, `boolean:`, `string:`,
//! `date:`), a trailing `*` wildcard, or untyped text that binding converts later.

use super::{Parsed, Parser};
use crate::query::date::parse_date;
use crate::query::{Literal, Op};

impl Parser<'_> {
    pub(super) fn literal(&self, op: Op, at: usize, text: String) -> Parsed<(Op, Literal)> {
        if text.is_empty() {
            return Err(self.error(at, "", "a value"));
        }
        if text.starts_with('*') {
            return Err(self.error(
                at,
                &text,
                "a value without a leading * (only a trailing * is a wildcard: starts with)",
            ));
        }
        if let Some(prefix) = text.strip_suffix('*') {
            if op != Op::Eq {
                return Err(self.error(
                    at,
                    &text,
                    "a value without * (a trailing * is a wildcard only after = or ==)",
                ));
            }
            return Ok((Op::StartsWith, Literal::String(prefix.to_owned())));
        }
        if text == "null" {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(self.error(
                    at,
                    &text,
                    "a value other than null (null compares only with =, == and !=)",
                ));
            }
            return Ok((op, Literal::Null));
        }
        let typed = |prefix: &str| text.strip_prefix(prefix).map(str::to_owned);
        let literal = if let Some(number) = typed("number:") {
            Literal::Number(
                parse_number(&number)
                    .ok_or_else(|| self.error(at, &text, "a number after number:"))?,
            )
        } else if let Some(flag) = typed("boolean:") {
            Literal::Bool(match flag.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(self.error(at, &text, "true or false after boolean:")),
            })
        } else if let Some(string) = typed("string:") {
            Literal::String(string)
        } else if let Some(date) = typed("date:") {
            Literal::Date(parse_date(&date).ok_or_else(|| {
                self.error(
                    at,
                    &text,
                    "a date after date: (2001-01-01, 2001-01-01T12:00:00Z, ...)",
                )
            })?)
        } else {
            Literal::Text(text)
        };
        if matches!(op, Op::StartsWith | Op::Contains | Op::EndsWith)
            && !matches!(literal, Literal::Text(_) | Literal::String(_))
        {
            return Err(self.error(at, "", "text (=sw=, =ct= and =ew= compare strings)"));
        }
        Ok((op, literal))
    }
}

/// A decimal number, or `$` and base-36 digits (Harper's `number:$1jl`).
fn parse_number(text: &str) -> Option<f64> {
    match text.strip_prefix('$') {
        Some(digits) => u32::from_str_radix(digits, 36).ok().map(f64::from),
        None => text.parse::<f64>().ok().filter(|n| n.is_finite()),
    }
}
