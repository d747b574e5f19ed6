//! The types of a page of a list query: `TConnection` (`totalCount`, `nodes`, `edges`,
//! `pageInfo`), `TEdge` and `PageInfo`.

use async_graphql::dynamic::{FieldFuture, FieldValue, ResolverContext};

use crate::follow::Node;

/// A page of a list query.
pub struct Page {
    /// Each record with its cursor.
    pub edges: Vec<(String, Node)>,
    pub has_next: bool,
    pub total: Option<u64>,
}
pub fn total_count(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let total = ctx
        .parent_value
        .downcast_ref::<Page>()
        .and_then(|page| page.total);
    FieldFuture::Value(total.map(FieldValue::value))
}

pub fn nodes(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let page = ctx.parent_value.downcast_ref::<Page>();
    FieldFuture::Value(page.map(|page| {
        FieldValue::list(
            page.edges
                .iter()
                .map(|(_, node)| FieldValue::borrowed_any(node)),
        )
    }))
}

pub fn edges(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let page = ctx.parent_value.downcast_ref::<Page>();
    FieldFuture::Value(
        page.map(|page| {
            FieldValue::list(page.edges.iter().map(|edge| FieldValue::borrowed_any(edge)))
        }),
    )
}

pub fn page_info(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let page = ctx.parent_value.downcast_ref::<Page>();
    FieldFuture::Value(page.map(|page| FieldValue::borrowed_any(page)))
}

pub fn has_next_page(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let page = ctx.parent_value.downcast_ref::<Page>();
    FieldFuture::Value(page.map(|page| FieldValue::value(page.has_next)))
}

pub fn end_cursor(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let page = ctx.parent_value.downcast_ref::<Page>();
    let last = page.and_then(|page| page.edges.last());
    FieldFuture::Value(last.map(|(cursor, _)| FieldValue::value(cursor.clone())))
}

pub fn cursor(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let edge = ctx.parent_value.downcast_ref::<(String, Node)>();
    FieldFuture::Value(edge.map(|(cursor, _)| FieldValue::value(cursor.clone())))
}

pub fn node(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let edge = ctx.parent_value.downcast_ref::<(String, Node)>();
    FieldFuture::Value(edge.map(|(_, node)| FieldValue::borrowed_any(node)))
}
