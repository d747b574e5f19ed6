//! Server-Sent Events transport, as a browser's `EventSource` expects it.
//!
//! Each item is an unnamed event (so `onmessage` receives it) whose data is the JSON envelope.
//! Changes carry `id: <change-log sequence>`. Current values carry no id; once a watch's values
//! are all sent, an event with only an `id` (which `EventSource` records without dispatching)
//! marks the position to resume from. A client that reconnects with `Last-Event-ID` is replayed
//! what it missed from the change log, or told to `resync` if the log no longer holds it.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;

use super::{Item, Realtime, Subscription, envelope};

/// How often a comment line is sent on an idle stream, so proxies and clients keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The event stream of `subscription`, ending when the server shuts down; it holds `admitted`
/// (its place among the subscribers) until the client goes.
pub fn stream(
    subscription: Subscription,
    realtime: &Realtime,
    admitted: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + use<>> {
    let closing = realtime.closing().clone();
    let events = futures_util::stream::unfold(
        (subscription, closing, admitted),
        |(mut subscription, closing, admitted)| async move {
            let item = tokio::select! {
                item = subscription.next() => item?,
                () = closing.cancelled() => return None,
            };
            Some((Ok(event(&item)), (subscription, closing, admitted)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT))
}

fn event(item: &Item) -> Event {
    match item {
        Item::Synced { seq, .. } => Event::default().id(seq.to_string()),
        Item::Change(change) => {
            let event = Event::default().data(envelope(item));
            match change.seq {
                Some(seq) => event.id(seq.to_string()),
                None => event,
            }
        }
        Item::Current(_) | Item::Resync => Event::default().data(envelope(item)),
    }
}
