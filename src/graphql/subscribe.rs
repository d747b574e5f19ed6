//! Subscriptions: `T(id:)` to one record's changes, `TList(filter:)` to a table's or to the
//! records that match a query, fed by the same change bus and lag policy as WebSocket, SSE and
//! MQTT subscribers (a subscriber that falls behind gets `RESYNC`, the current records, then
//! `SYNCED`).

use std::sync::Arc;

use async_graphql::dynamic::{FieldFuture, FieldValue, ResolverContext, SubscriptionFieldFuture};

use super::failure;
use super::resolve::{Scope, parse_id};
use crate::events::ChangeKind;
use crate::follow::Node;
use crate::query;
use crate::realtime::{Item, Matching, Realtime, TopicFilter};

/// The values of the `ChangeType` enum.
pub const CHANGE_TYPES: [&str; 6] = ["PUT", "DELETE", "LEAVE", "CURRENT", "RESYNC", "SYNCED"];

/// One item of a subscription, as the `TChange` type shows it.
pub struct Change {
    pub kind: &'static str,
    pub id: Option<String>,
    pub version: Option<String>,
    pub node: Option<Node>,
}

impl Change {
    /// The change an item of the subscription is; `None` for what GraphQL does not carry (an
    /// MQTT message to the record's topic).
    fn of(item: Item) -> Option<Change> {
        let (kind, event) = match &item {
            Item::Change(event) => match event.kind {
                ChangeKind::Put => ("PUT", event.as_ref()),
                ChangeKind::Delete => ("DELETE", event.as_ref()),
                ChangeKind::Leave => ("LEAVE", event.as_ref()),
                ChangeKind::Message => return None,
            },
            Item::Current(event) => ("CURRENT", event),
            Item::Resync => return Some(Change::bare("RESYNC")),
            Item::Synced { .. } => return Some(Change::bare("SYNCED")),
        };
        // Visibility already applied: the value is what the subscriber may see.
        let node = match (&event.value, event.kind) {
            (Some(value), ChangeKind::Put) => serde_json::from_slice(value)
                .ok()
                .map(|value| Node::read(&event.table, event.id.clone(), event.version, value)),
            _ => None,
        };
        Some(Change {
            kind,
            id: Some(event.id.to_string()),
            version: Some(format!("{:x}", event.version)),
            node,
        })
    }

    fn bare(kind: &'static str) -> Change {
        Change {
            kind,
            id: None,
            version: None,
            node: None,
        }
    }
}

/// What a subscription field watches.
#[derive(Clone, Copy)]
pub enum Watch {
    /// `T(id:)`.
    Record,
    /// `TList(filter:)`.
    Table,
}

/// The stream of a subscription field of `table`.
pub fn subscribe(
    table: Arc<str>,
    watch: Watch,
) -> impl for<'a> Fn(ResolverContext<'a>) -> SubscriptionFieldFuture<'a> + Send + Sync {
    move |ctx| {
        let table = table.clone();
        SubscriptionFieldFuture::new(async move {
            let scope = ctx.data::<Arc<Scope>>()?;
            let realtime = ctx.data::<Realtime>()?;
            let records = scope.catalog.resource(&table).map_err(failure)?.table();
            let reader = scope.identity.reader(records);
            if reader.nothing() {
                return Err(super::resolve::refused(&scope.identity, &table));
            }
            let admitted = realtime.admit().map_err(failure)?;
            let mut subscription = realtime.subscribe(scope.identity.clone());
            match watch {
                Watch::Record => {
                    let key = parse_id(scope, &table, &ctx.args)?;
                    subscription.watch_changes(TopicFilter::record(&table, &key));
                }
                Watch::Table => {
                    let filter = match ctx.args.get("filter").filter(|v| !v.is_null()) {
                        Some(text) => Some(text.string()?.to_owned()),
                        None => None,
                    };
                    if let Some(filter) = filter.filter(|f| !f.is_empty()) {
                        let parsed = query::parse(&filter)
                            .and_then(|q| query::bind(q, &records.schema().document()))
                            .map_err(|e| failure(crate::error::Error::BadQuery(e)))?;
                        reader.check_query(&parsed).map_err(failure)?;
                        if let Some(filter) = parsed.filter {
                            subscription.only_matching(Matching::new(table.clone(), filter));
                        }
                    }
                    subscription.watch_changes(TopicFilter::table(&table));
                }
            }
            let state = (subscription, admitted);
            Ok(futures_util::stream::unfold(
                state,
                |(mut subscription, admitted)| async move {
                    loop {
                        let item = subscription.next().await?;
                        if let Some(change) = Change::of(item) {
                            let value = FieldValue::owned_any(change);
                            return Some((
                                Ok::<_, async_graphql::Error>(value),
                                (subscription, admitted),
                            ));
                        }
                    }
                },
            ))
        })
    }
}

/// `TChange.type`, `.id`, `.version`.
pub fn change_field(
    field: &'static str,
) -> impl for<'a> Fn(ResolverContext<'a>) -> FieldFuture<'a> + Send + Sync {
    move |ctx| {
        let Some(change) = ctx.parent_value.downcast_ref::<Change>() else {
            return FieldFuture::Value(None);
        };
        FieldFuture::Value(match field {
            "type" => Some(FieldValue::value(async_graphql::Value::Enum(
                async_graphql::Name::new(change.kind),
            ))),
            "id" => change.id.clone().map(FieldValue::value),
            _ => change.version.clone().map(FieldValue::value),
        })
    }
}
