//! The URL query language of `GET /T/?...`.
//!
//! This release understands paging only: `limit(n)` and `limit(start,end)` (offset `start`,
//! `end - start` records). Leading, trailing and doubled `&` are tolerated, as in Harper.

use percent_encoding::percent_decode_str;

use crate::error::QueryError;

/// What a listing asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Records to skip.
    pub offset: usize,
    /// Records to return at most; `None` for all.
    pub limit: Option<usize>,
}

const EXPECTED_TERM: &str =
    "limit(n) or limit(start,end) (filters, sort() and select() are not supported yet)";

/// Parses a raw (percent-encoded) query string.
pub fn parse(raw: &str) -> Result<Query, QueryError> {
    let text = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| QueryError {
            position: 0,
            token: raw.to_owned(),
            expected: "a UTF-8 query string".to_owned(),
        })?;
    let mut query = None;
    let mut position = 0;
    for term in text.split('&') {
        if !term.is_empty() {
            let limit = parse_limit(term, position)?;
            if query.replace(limit).is_some() {
                return Err(error(position, term, "at most one limit()"));
            }
        }
        position += term.chars().count() + 1;
    }
    Ok(query.unwrap_or_default())
}

fn parse_limit(term: &str, at: usize) -> Result<Query, QueryError> {
    let Some(arguments) = term.strip_prefix("limit(") else {
        let token = term.split(['(', '=', '!']).next().unwrap_or(term);
        return Err(error(at, token, EXPECTED_TERM));
    };
    let arguments_at = at + "limit(".len();
    let Some(arguments) = arguments.strip_suffix(')') else {
        return Err(error(at + term.chars().count(), "", "`)` closing limit("));
    };
    let mut numbers = Vec::new();
    let mut position = arguments_at;
    for argument in arguments.split(',') {
        let number = argument
            .parse::<usize>()
            .ok()
            .filter(|_| argument.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| error(position, argument, "a non-negative integer"))?;
        numbers.push(number);
        position += argument.chars().count() + 1;
    }
    match numbers[..] {
        [limit] => Ok(Query {
            offset: 0,
            limit: Some(limit),
        }),
        [start, end] if start <= end => Ok(Query {
            offset: start,
            limit: Some(end - start),
        }),
        [start, _] => Err(error(
            arguments_at,
            arguments,
            &format!("an end of at least the start ({start}) in limit(start,end)"),
        )),
        _ => Err(error(
            arguments_at,
            arguments,
            "one or two numbers: limit(n) or limit(start,end)",
        )),
    }
}

fn error(position: usize, token: &str, expected: &str) -> QueryError {
    QueryError {
        position,
        token: token.to_owned(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(offset: usize, limit: Option<usize>) -> Result<Query, QueryError> {
        Ok(Query { offset, limit })
    }

    #[test]
    fn accepted() {
        assert_eq!(parse(""), ok(0, None));
        assert_eq!(parse("limit(10)"), ok(0, Some(10)));
        assert_eq!(parse("limit(5,15)"), ok(5, Some(10)));
        assert_eq!(parse("limit(3,3)"), ok(3, Some(0)));
        assert_eq!(parse("&limit(2)&"), ok(0, Some(2)));
        assert_eq!(parse("limit%285%2C7%29"), ok(5, Some(2)));
    }

    #[test]
    fn rejected_with_position_and_token() {
        let cases = [
            ("limit(abc)", 6, "abc"),
            ("limit(5,2)", 6, "5,2"),
            ("limit(1,2,3)", 6, "1,2,3"),
            ("limit(-1)", 6, "-1"),
            ("limit()", 6, ""),
            ("limit(+1)", 6, "+1"),
            ("limit(3", 7, ""),
            ("price=gt=3", 0, "price"),
            ("limit(1)&sort(+a)", 9, "sort"),
            ("limit(1)&limit(2)", 9, "limit(2)"),
        ];
        for (query, position, token) in cases {
            let error = parse(query).expect_err(query);
            assert_eq!(
                (error.position, error.token.as_str()),
                (position, token),
                "{query}"
            );
        }
    }
}
