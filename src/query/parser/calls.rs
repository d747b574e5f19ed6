//! The calls of a query: `select(...)`, `sort(...)`, `limit(...)` and `after(...)`, each at
//! most once, at the top level.

use super::{Parsed, Parser};
use crate::query::{Field, Query, Select, SortKey};

/// The calls seen so far at the top level, to reject duplicates.
#[derive(Default)]
pub(super) struct Calls {
    select: bool,
    sort: bool,
    limit: bool,
    after: bool,
}

impl Calls {
    pub(super) fn any(&self) -> bool {
        self.select || self.sort || self.limit || self.after
    }
}

impl Parser<'_> {
    pub(super) fn call(
        &mut self,
        start: usize,
        name: String,
        query: &mut Query,
        calls: &mut Calls,
    ) -> Parsed<()> {
        self.pos += 1; // (
        let (seen, what) = match name.as_str() {
            "select" => (&mut calls.select, "select"),
            "sort" => (&mut calls.sort, "sort"),
            "limit" => (&mut calls.limit, "limit"),
            "after" => (&mut calls.after, "after"),
            _ => {
                return Err(self.error(
                    start,
                    &name,
                    "a condition, select(...), sort(...), limit(...) or after(...)",
                ));
            }
        };
        if std::mem::replace(seen, true) {
            return Err(self.error(start, &name, format!("at most one {what}()")));
        }
        match what {
            "select" => query.select = Some(self.select()?),
            "sort" => query.sort = self.sort()?,
            "limit" => {
                (query.offset, query.limit) = self.limit()?;
                query.paging.push(start..self.pos);
            }
            _ => {
                query.after = Some(self.after()?);
                query.paging.push(start..self.pos);
            }
        }
        Ok(())
    }

    fn close_call(&mut self) -> Parsed<()> {
        match self.peek() {
            Some(b')') => {
                self.pos += 1;
                Ok(())
            }
            _ => {
                let (at, token) = self.peek_token();
                Err(self.error(at, token, "`)` closing the call"))
            }
        }
    }

    fn select(&mut self) -> Parsed<Select> {
        let start = self.pos;
        let arguments = &self.src[start..];
        let single = arguments
            .find(')')
            .map(|end| &arguments[..end])
            .filter(|a| !a.is_empty() && !a.contains([',', '{', '}']));
        if let Some(single) = single {
            // select(a) and select(a.b): the bare value.
            let path = self.path(start, single)?;
            self.pos += single.len();
            self.close_call()?;
            return Ok(Select::Value(path));
        }
        let (fields, _) = self.fields(b')')?;
        self.close_call()?;
        if fields.is_empty() {
            return Err(self.error(start, "", "a property name in select()"));
        }
        Ok(Select::Fields(fields))
    }

    /// `a,b{c,d},e.f` up to `close` (not consumed); dotted names become nested fields.
    fn fields(&mut self, close: u8) -> Parsed<(Vec<Field>, bool)> {
        let mut fields = Vec::new();
        let mut trailing_comma = false;
        while self.peek() != Some(close) {
            let (at, raw) = self.take_until(b",(){}&|[]");
            if raw.is_empty() {
                let (at, token) = self.peek_token();
                return Err(self.error(at, token, "a property name"));
            }
            let path = self.path(at, raw)?;
            let mut children = Vec::new();
            if self.peek() == Some(b'{') {
                self.pos += 1;
                self.enter(self.pos - 1)?;
                children = self.fields(b'}')?.0;
                self.depth -= 1;
                self.pos += 1; // }
            }
            fields.push(nest(&path, children));
            trailing_comma = false;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                _ => {
                    let (at, token) = self.peek_token();
                    return Err(self.error(at, token, format!("`,` or `{}`", close as char)));
                }
            }
        }
        Ok((fields, trailing_comma))
    }

    fn sort(&mut self) -> Parsed<Vec<SortKey>> {
        let mut keys = Vec::new();
        loop {
            let (at, raw) = self.take_until(b",)&|");
            let text = self.decode(at, raw)?;
            let (descending, name) = match text.as_bytes().first() {
                Some(b'-') => (true, &text[1..]),
                Some(b'+' | b' ') => (false, &text[1..]),
                _ => (false, text.as_str()),
            };
            if name.is_empty() {
                return Err(self.error(
                    at,
                    &text,
                    "an attribute to sort by, optionally after + or -",
                ));
            }
            let path = self.path(at, name)?;
            keys.push(SortKey {
                path,
                descending,
                position: at,
            });
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.close_call()?;
        Ok(keys)
    }

    /// `after(id)`: the primary key a page continues after (percent-decoded, parsed by the table).
    fn after(&mut self) -> Parsed<(String, usize)> {
        let (at, raw) = self.take_until(b")&|");
        if raw.is_empty() {
            return Err(self.error(at, "", "the id of the last record of the previous page"));
        }
        let id = self.decode(at, raw)?;
        self.close_call()?;
        Ok((id, at))
    }

    fn limit(&mut self) -> Parsed<(usize, Option<usize>)> {
        let start = self.pos;
        let mut numbers = Vec::new();
        loop {
            let (at, raw) = self.take_until(b",)&|");
            let number = raw
                .parse::<usize>()
                .ok()
                .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| self.error(at, raw, "a non-negative integer"))?;
            numbers.push((at, number));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.close_call()?;
        match numbers[..] {
            [(_, limit)] => Ok((0, Some(limit))),
            [(_, start), (_, end)] if end >= start => Ok((start, Some(end - start))),
            [(_, start), (at, end)] => Err(self.error(
                at,
                &end.to_string(),
                format!("an end of at least the start ({start})"),
            )),
            _ => Err(self.error(
                start,
                &self.src[start..self.pos - 1],
                "one or two numbers: limit(n) or limit(start,end)",
            )),
        }
    }
}

fn nest(path: &[String], children: Vec<Field>) -> Field {
    match path {
        [name] => Field {
            name: name.clone(),
            children,
        },
        [name, rest @ ..] => Field {
            name: name.clone(),
            children: vec![nest(rest, children)],
        },
        [] => unreachable!("paths have at least one segment"),
    }
}
