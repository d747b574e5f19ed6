//! WebSocket transport: one subscription per connection, each item a JSON text frame.
//!
//! The server pings a third of the way into `--subscriber-silence`; a peer that sends nothing
//! (not even the pong) for that long is dropped, and so is one that reads nothing for that long
//! (its connection's writes fail: `http/stall.rs`). A peer that stopped reading for less is not silent once it reads
//! again: it then falls under the lag policy instead. Closing: 1000 when the client closes, 1001
//! when the server shuts down, 1008 for a client that sends data (the stream is one-way), 1011
//! on a server fault.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Realtime, Subscription, envelope};

/// A send that takes longer than this waited for the peer to read.
const BLOCKED: Duration = Duration::from_millis(50);

/// Largest frame or message a client may send (it has nothing to send but control frames).
const MAX_INCOMING: usize = 64 << 10;

/// Sizes the connection's buffers for a one-way stream of small frames: tungstenite's defaults
/// (128 KiB each way) would cost every subscriber a quarter of a megabyte.
pub fn configure(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
}

/// Streams `subscription` to `socket` until either side closes.
pub async fn stream(mut socket: WebSocket, mut subscription: Subscription, realtime: Realtime) {
    let closing = realtime.closing().clone();
    let silence = realtime.silence();
    let ping_every = silence / 3;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let close = loop {
        let outgoing = tokio::select! {
            item = subscription.next() => match item {
                Some(item) => Message::Text(envelope(&item).into()),
                None => break Some((close_code::AWAY, "the server is shutting down")),
            },
            incoming = socket.recv() => match incoming {
                // Pongs to our pings and pings from the peer (answered by the library).
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => {
                    heard = Instant::now();
                    continue;
                }
                Some(Ok(Message::Text(_) | Message::Binary(_))) => break Some((
                    close_code::POLICY,
                    "this stream is one-way: send writes over HTTP or MQTT",
                )),
                // The peer closed (the library answers its close frame) or the connection broke.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            },
            _ = ping.tick() => {
                if heard.elapsed() > silence {
                    tracing::debug!("dropping a silent WebSocket peer");
                    break None;
                }
                Message::Ping(Default::default())
            }
            () = closing.cancelled() => break Some((close_code::AWAY, "the server is shutting down")),
        };
        // A peer that stops reading blocks this send; its subscription then falls behind and
        // is resynchronised when it reads again. Shutdown does not wait for it.
        let started = Instant::now();
        // A peer that reads nothing for the silence limit fails the send (`http/stall.rs`).
        let sent = tokio::select! {
            sent = socket.send(outgoing) => sent,
            () = closing.cancelled() => break None,
        };
        if sent.is_err() {
            break None;
        }
        if started.elapsed() > BLOCKED {
            // The send waited for the peer to drain its window: it is alive and reading again.
            heard = Instant::now();
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
