//! The HTTP interface: the axum router, its handlers and the problem+json error mapping.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the router |
//! | `auth.rs` | who each request is, its rate, private answers; `/_session` |
//! | `records.rs` | handlers of `/T`, `/T/` and `/T/id` |
//! | `cached.rs` | cache tables: reads with RFC 9111/9211 headers, pushes, evictions, `/_cache/T/...` |
//! | `response.rs` | response builders the handlers share |
//! | `listing.rs` | listings streamed as JSON, NDJSON or CSV |
//! | `subscribe.rs` | subscriptions over HTTP: WebSocket upgrades and Server-Sent Events |
//! | `mqtt.rs` | `/mqtt`: the upgrade to MQTT over WebSocket |
//! | `graphql.rs` | `/graphql`: GraphQL over HTTP (GET, POST) and its WebSocket upgrade |
//! | `extract.rs`, `headers.rs` | extractors with problem+json rejections; header conventions |
//! | `body.rs` | request bodies read under the size, time and memory limits |
//! | `unparsable.rs` | problem+json bodies for the requests hyper itself refuses |
//! | `stall.rs` | connections whose peer reads nothing are closed |
//! | `error.rs` | problem details: error codes to statuses |
//! | `server.rs`, `cors.rs` | the connection loop and its limits; CORS |

mod auth;
mod body;
mod cached;
pub mod cors;
mod error;
mod extract;
mod graphql;
mod headers;
mod listing;
mod mqtt;
mod records;
mod response;
mod server;
mod stall;
mod subscribe;
mod unparsable;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

pub use auth::Peer;
pub use body::BodyLimits;
pub use error::{ApiError, PROBLEM_JSON};
pub use server::{Limits, serve};

use crate::access::Access;
use crate::catalog::Catalog;
use crate::graphql::GraphQl;
use crate::realtime::Realtime;
use crate::realtime::mqtt::Mqtt;
use crate::replication;

/// What every handler shares, behind one `Arc`: extractors clone it for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The catalog, the real-time hub, the access rules and the limits.
pub struct Shared {
    catalog: Arc<Catalog>,
    realtime: Realtime,
    access: Access,
    bodies: BodyLimits,
    cors_origins: Vec<String>,
    /// Whether requests arrive over TLS (session cookies are then `Secure`).
    tls: bool,
    replication: Option<Arc<replication::Status>>,
    mqtt: Option<Arc<Mqtt>>,
    graphql: Option<GraphQl>,
}

/// How the router serves.
pub struct Settings {
    /// Who may do what.
    pub access: Access,
    /// How request bodies are read.
    pub bodies: BodyLimits,
    /// Origins allowed cross-origin requests (`*` for any).
    pub cors_origins: Vec<String>,
    /// Whether requests arrive over TLS.
    pub tls: bool,
    /// What replication reports; `None` for a node that stands alone.
    pub replication: Option<Arc<replication::Status>>,
    /// The MQTT server, served over WebSocket at `/mqtt` too; `None` with MQTT off.
    pub mqtt: Option<Arc<Mqtt>>,
    /// The GraphQL engine served at `/graphql`; `None` with GraphQL off.
    pub graphql: Option<GraphQl>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The router for the tables of `realtime`, served as `settings` say.
pub fn router(realtime: Realtime, settings: Settings) -> Router {
    let max_body = settings.bodies.max_body;
    let cors = cors::layer(&settings.cors_origins);
    let state = AppState(Arc::new(Shared {
        catalog: realtime.catalog().clone(),
        realtime,
        access: settings.access,
        bodies: settings.bodies,
        cors_origins: settings.cors_origins,
        tls: settings.tls,
        replication: settings.replication,
        mqtt: settings.mqtt,
        graphql: settings.graphql,
    }));
    let mut router = Router::new();
    if state.mqtt.is_some() {
        // A table named `mqtt` keeps its path; its clients use the MQTT port.
        match state.catalog.resource(&mqtt::PATH[1..]) {
            Ok(_) => tracing::warn!(
                "table `mqtt` takes the path {}: MQTT over WebSocket is not served",
                mqtt::PATH
            ),
            Err(_) => {
                router = router.route(mqtt::PATH, get(mqtt::upgrade).fallback(method_not_allowed));
            }
        }
    }
    if state.graphql.is_some() {
        match state.catalog.resource(&graphql::PATH[1..]) {
            Ok(_) => tracing::warn!(
                "table `graphql` takes the path {}: GraphQL is not served",
                graphql::PATH
            ),
            Err(_) => {
                router = router.route(
                    graphql::PATH,
                    get(graphql::get)
                        .post(graphql::post)
                        .fallback(method_not_allowed),
                );
            }
        }
    }
    let router = router
        .route("/_health", get(health))
        .route("/_cluster", get(cluster).fallback(method_not_allowed))
        .route(
            "/_session",
            get(auth::session_show)
                .post(auth::session_open)
                .delete(auth::session_close)
                .fallback(method_not_allowed),
        )
        .route(
            "/_cache/{table}/invalidate",
            post(cached::cache_invalidate).fallback(method_not_allowed),
        )
        .route(
            "/_cache/{table}/warm",
            post(cached::cache_warm).fallback(method_not_allowed),
        )
        .route(
            "/{table}",
            get(records::tables_describe).fallback(method_not_allowed),
        )
        .route(
            "/{table}/",
            get(records::records_list)
                .post(records::records_post)
                .fallback(method_not_allowed),
        )
        .route(
            "/{table}/{id}",
            get(records::records_get)
                .put(records::records_put)
                .patch(records::records_patch)
                .delete(records::records_delete)
                .fallback(method_not_allowed),
        )
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// `GET /_health`: 200 while the server serves and its store writes; 503 once a write failed in
/// the store (a full disk, say), which only a restart clears.
async fn health(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.realtime.store().failed() {
        let failing = serde_json::json!({
            "status": "failing",
            "detail": "a write failed in the store (the log has the cause, a full disk for one); writes fail until the server restarts with room",
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(failing)).into_response();
    }
    if let Some(replication) = state.replication.as_ref().filter(|r| !r.caught_up()) {
        let catching_up = serde_json::json!({
            "status": "catching up",
            "detail": "this node is applying what the cluster wrote before it joined; GET /_cluster says how far it is",
            "cluster": replication.report(state.realtime.store()),
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(catching_up)).into_response();
    }
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /_cluster`: what replication reports (admin only); 404 for a node that stands alone.
async fn cluster(
    State(state): State<AppState>,
    caller: auth::Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require_admin("read the cluster's state")?;
    let replication = state.replication.as_ref().ok_or(ApiError::NoRoute)?;
    Ok(axum::Json(replication.report(state.realtime.store())))
}

/// Any method a route does not support; axum adds the `Allow` header.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}
