//! Errors as GraphQL answers them: a domain error's code and what it concerns in
//! `extensions`, and a failed field's `null` in its place.

use async_graphql::{ErrorExtensionValues, ServerError};

use crate::error::Error;

/// A domain error as a GraphQL error: its safe message, and in `extensions` its stable `code`,
/// and what it concerns (the JSON pointers of a record's violations, a query's position).
pub(crate) fn failure(error: Error) -> async_graphql::Error {
    let message = error.public_detail();
    let code = error.code().as_str();
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    match &error {
        Error::SchemaViolation { violations, .. } | Error::OriginInvalid { violations, .. } => {
            let listed: Vec<async_graphql::Value> = violations
                .iter()
                .map(|v| {
                    let mut fields = async_graphql::indexmap::IndexMap::new();
                    fields.insert(
                        async_graphql::Name::new("pointer"),
                        v.pointer.clone().into(),
                    );
                    fields.insert(
                        async_graphql::Name::new("message"),
                        v.message.clone().into(),
                    );
                    async_graphql::Value::Object(fields)
                })
                .collect();
            if let Some(first) = violations.first() {
                extensions.set("pointer", first.pointer.clone());
            }
            extensions.set("violations", async_graphql::Value::List(listed));
        }
        Error::BadQuery(query) => {
            extensions.set("position", query.position as u64);
            extensions.set("token", query.token.clone());
            extensions.set("expected", query.expected.clone());
        }
        _ => {}
    }
    async_graphql::Error {
        message,
        source: None,
        extensions: Some(extensions),
    }
}

/// `error` with `extensions.code`, unless it has one.
pub(super) fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// Puts `null` where a field failed (async-graphql leaves the field out), so the answer has
/// every field asked for, as the GraphQL specification requires.
pub(super) fn null_at(data: &mut async_graphql::Value, path: &[async_graphql::PathSegment]) {
    use async_graphql::{PathSegment, Value as GqlValue};
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if *data == GqlValue::Null {
        *data = GqlValue::Object(Default::default());
    }
    let mut current = data;
    for segment in parents {
        let next = match (segment, current) {
            (PathSegment::Field(name), GqlValue::Object(fields)) => fields.get_mut(name.as_str()),
            (PathSegment::Index(i), GqlValue::List(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    if let (PathSegment::Field(name), GqlValue::Object(fields)) = (last, current) {
        fields
            .entry(async_graphql::Name::new(name))
            .or_insert(GqlValue::Null);
    }
}
