//! `GET /mqtt`: the upgrade to MQTT over WebSocket (subprotocol `mqtt`), for web pages and
//! MQTT.js; the connection then speaks MQTT as on the MQTT port.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{Peer, own_or_listed};
use super::error::ApiError;
use crate::error::Error;
use crate::realtime::mqtt::SUBPROTOCOL;

/// The path MQTT over WebSocket is served on.
pub const PATH: &str = "/mqtt";

pub async fn upgrade(State(state): State<AppState>, request: Request) -> Response {
    let Some(mqtt) = state.mqtt.clone() else {
        return ApiError::NoRoute.into_response();
    };
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip());
    // A page of another site could otherwise use a visitor's browser to write records
    // (cross-site WebSocket hijacking): browsers send their page's Origin, other clients none.
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("?"));
    if let Some(origin) = origin {
        let any = state.cors_origins.iter().any(|o| o == "*");
        if !any && !own_or_listed(origin, request.headers(), &state.cors_origins) {
            return ApiError::Domain(Error::Forbidden(format!(
                "MQTT over WebSocket from a page of `{origin}` needs that origin in --cors-origins"
            )))
            .into_response();
        }
    }
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade.protocols([SUBPROTOCOL]),
        Err(rejection) => {
            let why = format!(
                "{PATH} serves MQTT over WebSocket: {}",
                rejection.body_text()
            );
            return ApiError::BadRequest(why).into_response();
        }
    };
    if upgrade.selected_protocol().is_none() {
        let why = format!(
            "MQTT over WebSocket needs the subprotocol `{SUBPROTOCOL}` (Sec-WebSocket-Protocol: {SUBPROTOCOL})"
        );
        return ApiError::BadRequest(why).into_response();
    }
    let place = match mqtt.websocket_place() {
        Ok(place) => place,
        Err(limit) => return ApiError::TooManyConnections(limit).into_response(),
    };
    let largest = mqtt.websocket_max_message();
    upgrade
        .max_message_size(largest)
        .max_frame_size(largest)
        .on_upgrade(move |socket| async move { mqtt.serve_websocket(socket, peer, place).await })
}
