//! Subscriptions over HTTP: a WebSocket upgrade, or `Accept: text/event-stream`, on `GET /T/id`
//! (one record), `GET /T/` (the whole table) or `GET /T/?query` (the records that match).

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{BEARER_PROTOCOL, Caller};
use super::error::ApiError;
use super::headers;
use crate::realtime::{Matching, TopicFilter, sse, ws};
use crate::table::Table;

/// The subscription a `GET` asks for, if it asks for one.
pub enum Subscribe {
    WebSocket(WebSocketUpgrade),
    /// Server-Sent Events, resuming after this change-log position if `Last-Event-ID` is given.
    EventStream {
        last_event_id: Option<u64>,
    },
}

/// Extracts the subscription a request asks for; a malformed upgrade or `Last-Event-ID` is a
/// 400 problem.
pub struct Subscription(pub Option<Subscribe>);

impl FromRequestParts<AppState> for Subscription {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let upgrade = parts.headers.get(header::UPGRADE);
        if upgrade.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
            return Ok(Subscription(Some(Subscribe::WebSocket(upgrade))));
        }
        if !headers::accepted(&parts.headers).any(|media| media == "text/event-stream") {
            return Ok(Subscription(None));
        }
        let last_event_id = match parts.headers.get("last-event-id") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "Last-Event-ID {value:?} is not an event id this server sent (a decimal number)"
                        ))
                    })?,
            ),
        };
        Ok(Subscription(Some(Subscribe::EventStream { last_event_id })))
    }
}

/// Starts `caller`'s subscription to `filter` (on `table`), narrowed to the records `matching`
/// a query if given, over the transport asked for.
pub fn start(
    state: &AppState,
    caller: &Caller,
    table: &Table,
    filter: TopicFilter,
    matching: Option<Matching>,
    transport: Subscribe,
) -> Result<Response, ApiError> {
    if caller.reader(table).nothing() {
        return Err(caller
            .refusal(format!("subscribe to table `{}`", table.name()))
            .into());
    }
    let realtime = &state.realtime;
    let admitted = realtime.admit()?;
    let mut subscription = realtime.subscribe(caller.0.clone());
    if let Some(matching) = matching {
        subscription.only_matching(matching);
    }
    match transport {
        Subscribe::WebSocket(upgrade) => {
            subscription.watch(filter);
            let realtime = realtime.clone();
            Ok(ws::configure(upgrade)
                .protocols([BEARER_PROTOCOL])
                .on_upgrade(move |socket| async move {
                    ws::stream(socket, subscription, realtime).await;
                    drop(admitted);
                })
                .into_response())
        }
        Subscribe::EventStream { last_event_id } => {
            match last_event_id {
                Some(after) => subscription.resume(filter, after)?,
                None => subscription.watch(filter),
            }
            Ok(sse::stream(subscription, realtime, admitted).into_response())
        }
    }
}
