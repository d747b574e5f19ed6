//! The arguments of list and relation fields: `filter` and `sort` in the URL query language,
//! typed `where` conditions, `first`, and the cursors of `after`; errors name the argument.

use async_graphql::dynamic::ObjectAccessor;
use async_graphql::{ErrorExtensions, Value as GqlValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::failure;
use crate::catalog::Catalog;
use crate::error::QueryError;
use crate::query::{self, Condition, Filter, Literal, Op, Query};

/// Records a page holds when `first` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// The most records one page (`first`) or one relation may hold.
pub const MAX_PAGE: usize = 1_000;

/// The query of a relation field's arguments.
pub(super) fn related_query(
    catalog: &Catalog,
    table: &str,
    filter: Option<&GqlValue>,
    sort: Option<&GqlValue>,
    first: Option<&GqlValue>,
) -> async_graphql::Result<Query> {
    let text = |value: Option<&GqlValue>| match value {
        Some(GqlValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let document = catalog
        .resource(table)
        .map_err(failure)?
        .table()
        .schema()
        .document();
    let mut query = bound(
        &document,
        text(filter).as_deref(),
        Vec::new(),
        text(sort).as_deref(),
    )?;
    query.limit = Some(page_size(match first {
        Some(GqlValue::Number(n)) => n.as_i64(),
        _ => None,
    })?);
    Ok(query)
}

/// The query of `filter`, typed `where` conditions and `sort` arguments, bound to the table of
/// `document`; an error names the argument it is in.
pub(super) fn bound(
    document: &Value,
    filter: Option<&str>,
    wheres: Vec<Filter>,
    sort: Option<&str>,
) -> async_graphql::Result<Query> {
    let bind = |query: Query, argument: &'static str| {
        query::bind(query, document).map_err(|e| argument_error(argument, e))
    };
    let filter = Query {
        filter: conditions(filter)?,
        ..Query::default()
    };
    let wheres = Query {
        filter: all_of(None, wheres),
        ..Query::default()
    };
    let sort = Query {
        sort: sort_keys(sort)?,
        ..Query::default()
    };
    let filter = bind(filter, "filter")?.filter;
    let wheres = bind(wheres, "where")?.filter;
    Ok(Query {
        filter: all_of(filter, wheres.into_iter().collect()),
        sort: bind(sort, "sort")?.sort,
        ..Query::default()
    })
}

/// `first`, checked: at least 0, at most [`MAX_PAGE`].
pub(super) fn page_size(first: Option<i64>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (0..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(async_graphql::Error::new(format!(
            "`first` is {n}: give 0 to {MAX_PAGE} (records per page)"
        ))
        .extend_with(|_, e| e.set("code", "bad-request"))),
    }
}

/// The conditions of a `filter` argument, in the URL query language.
pub(super) fn conditions(filter: Option<&str>) -> async_graphql::Result<Option<Filter>> {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let parsed = query::parse(filter).map_err(|e| argument_error("filter", e))?;
    if parsed.select.is_some()
        || !parsed.sort.is_empty()
        || parsed.limit.is_some()
        || parsed.after.is_some()
    {
        return Err(async_graphql::Error::new(
            "`filter` takes conditions only (`category=lighting&price=lt=50`): order with `sort`, page with `first` and `after`",
        )
        .extend_with(|_, e| e.set("code", "bad-query")));
    }
    Ok(parsed.filter)
}

/// The keys of a `sort` argument: `-price,+name`.
pub(super) fn sort_keys(sort: Option<&str>) -> async_graphql::Result<Vec<query::SortKey>> {
    let Some(sort) = sort.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    const OPEN: &str = "sort(";
    let parsed = query::parse(&format!("{OPEN}{sort})")).map_err(|mut e| {
        e.position = e.position.saturating_sub(OPEN.len());
        argument_error("sort", e)
    })?;
    let mut keys = parsed.sort;
    for key in &mut keys {
        key.position -= OPEN.len();
    }
    Ok(keys)
}

/// A query language error in argument `name`, with its position in the argument.
pub(super) fn argument_error(name: &'static str, error: QueryError) -> async_graphql::Error {
    let QueryError {
        position,
        token,
        expected,
    } = &error;
    let (position, token) = (*position, token.clone());
    async_graphql::Error::new(format!("argument `{name}`: {error}"))
        .extend_with(move |_, e| {
            e.set("code", "bad-query");
            e.set("argument", name);
            e.set("position", position as u64);
            e.set("token", token.clone());
        })
        .extend_with({
            let expected = expected.clone();
            move |_, e| e.set("expected", expected.clone())
        })
}

pub(super) fn all_of(filter: Option<Filter>, more: Vec<Filter>) -> Option<Filter> {
    let mut parts = match filter {
        None => Vec::new(),
        Some(Filter::All(parts)) => parts,
        Some(other) => vec![other],
    };
    parts.extend(more);
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Filter::All(parts)),
    }
}

/// The conditions of a typed `where` argument: `{price: {gt: 10, lt: 20}}`.
pub(super) fn where_conditions(
    wanted: &ObjectAccessor<'_>,
    wheres: &[(String, Vec<String>)],
) -> async_graphql::Result<Vec<Filter>> {
    let mut conditions = Vec::new();
    for (field, range) in wanted.iter() {
        let Some((_, path)) = wheres.iter().find(|(name, _)| name == field.as_str()) else {
            continue;
        };
        for (op, value) in range.object()?.iter() {
            let op = match op.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "lt" => Op::Lt,
                "le" => Op::Le,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                _ => Op::StartsWith,
            };
            let value = match value.as_value() {
                GqlValue::Null => Literal::Null,
                GqlValue::Number(n) => Literal::Number(n.as_f64().unwrap_or(f64::NAN)),
                GqlValue::Boolean(b) => Literal::Bool(*b),
                GqlValue::String(s) => Literal::Text(s.clone()),
                GqlValue::Enum(name) => Literal::Text(name.to_string()),
                other => Literal::Text(other.to_string()),
            };
            conditions.push(Filter::Condition(Condition {
                path: path.clone(),
                op,
                value,
                position: 0,
                value_position: 0,
            }));
        }
    }
    Ok(conditions)
}

pub(super) enum Cursor {
    /// Key order: the page starts after this key.
    After(String),
    /// Another order: the page starts after this many records.
    Offset(usize),
}

pub(super) fn encode_cursor(cursor: &Cursor) -> String {
    let text = match cursor {
        Cursor::After(id) => format!("k{id}"),
        Cursor::Offset(n) => format!("o{n}"),
    };
    URL_SAFE_NO_PAD.encode(text)
}

pub(super) fn decode_cursor(cursor: &str) -> Option<Cursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    match text.split_at_checked(1)? {
        ("k", id) => Some(Cursor::After(id.to_owned())),
        ("o", n) => n.parse().ok().map(Cursor::Offset),
        _ => None,
    }
}
