//! Cross-origin requests (CORS), so web pages served elsewhere can read, write and subscribe
//! (`fetch`, `EventSource`, which sends `Last-Event-ID` on reconnect) from a browser.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer for `origins` (`*` allows any; each checked by `config::parse_origin`); `None` when there are none: then browsers keep
/// pages of other origins out, as they do by default.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            // Pages of the origins named may use the session cookie (`credentials: "include"`,
            // `withCredentials`); browsers never send it to any origin (`*`).
            .allow_credentials(!any)
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::PATCH,
                Method::POST,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::CACHE_CONTROL,
                HeaderName::from_static("prefer"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LAST_MODIFIED,
                header::LOCATION,
                header::LINK,
                header::CONTENT_RANGE,
                header::AGE,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                HeaderName::from_static("cache-status"),
                HeaderName::from_static("server-timing"),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}
