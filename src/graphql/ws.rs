//! Subscriptions (and queries and mutations) over a WebSocket, in the `graphql-transport-ws`
//! protocol that the `graphql-ws` client speaks: async-graphql runs the protocol, this file
//! carries its messages to and from axum's socket, and closes it when the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocket as Protocol, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use super::GraphQl;
use crate::access::Identity;

/// The subprotocol a client asks for.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// How long a client has to send `connection_init`, and to answer the server's pings.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Serves the protocol on `socket` for `identity` until either side closes.
pub async fn serve(socket: WebSocket, graphql: GraphQl, identity: Arc<Identity>) {
    let (mut sink, stream) = socket.split();
    let incoming = stream
        .take_while(|message| std::future::ready(message.is_ok()))
        .filter_map(|message| {
            std::future::ready(match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        });
    let mut data = Data::default();
    data.insert(graphql.streaming_scope(identity));
    data.insert(graphql.realtime().clone());
    let protocol = Protocol::new(
        graphql.schema().clone(),
        incoming,
        WebSocketProtocols::GraphQLWS,
    )
    .connection_data(data)
    .keepalive_timeout(KEEPALIVE);
    tokio::pin!(protocol);
    let closing = graphql.realtime().closing().clone();
    loop {
        let message = tokio::select! {
            message = protocol.next() => message,
            () = closing.cancelled() => Some(WsMessage::Close(1001, "the server is shutting down".to_owned())),
        };
        let sent = match message {
            Some(WsMessage::Text(text)) => sink.send(Message::Text(text.into())).await,
            Some(WsMessage::Close(code, reason)) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
            None => break,
        };
        if sent.is_err() {
            break;
        }
    }
}
