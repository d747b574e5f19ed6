//! Who each request is: credentials read from `Authorization` (Basic, Bearer), the session
//! cookie, or a WebSocket subprotocol; the identity checked against its rate; and the
//! response marked private when it depended on the identity. `/_session` trades credentials
//! for the cookie, for browsers, whose `EventSource` cannot send headers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::access::{Allowed, Credentials, Identity};
use crate::error::Error;

/// The session cookie's name.
const COOKIE: &str = "tablecast_session";
/// The WebSocket subprotocol that carries a bearer token as the next protocol in the list
/// (browsers' `new WebSocket(url, ["tablecast.bearer", token])`).
pub const BEARER_PROTOCOL: &str = "tablecast.bearer";

/// The client's address, set on every request by the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The identity of the request.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Identity>);

impl std::ops::Deref for Caller {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Domain(Error::Internal(crate::error::Cause::new(
                "a request reached a handler without an identity",
            )))
        })
    }
}

/// Authenticates the request, counts it against its rate, and marks the answer private when it
/// depended on who asked.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip());
    let access = &state.access;
    let presented = credentials(request.headers()).and_then(|(credentials, by_cookie)| {
        if by_cookie {
            same_origin(request.method(), request.headers(), &state.cors_origins)?;
        }
        Ok(credentials)
    });
    let verified = async {
        let identity = access.authenticate(presented?, address).await?;
        let allowed = access.limit(&identity, address)?;
        Ok::<_, Error>((identity, allowed))
    };
    let (identity, allowed) = match verified.await {
        Ok(verified) => verified,
        Err(error) => {
            tracing::info!(%address, "refused a request: {error}");
            let mut response = ApiError::from(error).into_response();
            challenge(&mut response, from_script(request.headers()));
            return response;
        }
    };
    let private = identity.authenticated;
    // Only a request without credentials can be refused for the want of them.
    let scripted = !private && from_script(request.headers());
    request.extensions_mut().insert(Caller(identity));
    let mut response = next.run(request).await;
    challenge(&mut response, scripted);
    if access.is_guarded() {
        mark(response.headers_mut(), private, allowed.as_ref());
    }
    response
}

/// Whether a page's script sent the request (`fetch`, `EventSource`): browsers then send
/// `Sec-Fetch-Mode` other than `navigate`, or an `Origin`.
fn from_script(headers: &HeaderMap) -> bool {
    let mode = headers.get("sec-fetch-mode").and_then(|m| m.to_str().ok());
    mode.is_some_and(|m| m != "navigate")
        || (mode.is_none() && headers.contains_key(header::ORIGIN))
}

/// A 401 to a page's script challenges for a token only: a `Basic` challenge would make the
/// browser stop the request to ask its user for a password in a dialog of its own.
fn challenge(response: &mut Response, scripted: bool) {
    if scripted && response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="tablecast""#),
        );
    }
}

/// What the request presents, and whether it came in the cookie.
fn credentials(headers: &HeaderMap) -> Result<(Credentials, bool), Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default().trim();
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("basic") {
            Ok((Credentials::Basic(rest.to_owned()), false))
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok((Credentials::Token(rest.to_owned()), false))
        } else {
            Err(Error::Unauthenticated(
                "the Authorization header must be `Basic <base64 of user:password>` or `Bearer <token>`"
                    .to_owned(),
            ))
        };
    }
    if let Some(token) = subprotocol_token(headers) {
        return Ok((Credentials::Token(token), false));
    }
    if let Some(session) = cookie(headers, COOKIE) {
        return Ok((Credentials::Session(session), true));
    }
    Ok((Credentials::None, false))
}

/// `Sec-WebSocket-Protocol: tablecast.bearer, <token>`.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let mut protocols = offered.split(',').map(str::trim);
    protocols.find(|p| *p == BEARER_PROTOCOL)?;
    protocols
        .next()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A request that a cookie authenticates and that changes something (or opens a WebSocket)
/// must come from a page of this server or of an allowed origin: another site's page could
/// otherwise make the browser send it (CSRF, cross-site WebSocket hijacking).
fn same_origin(method: &Method, headers: &HeaderMap, allowed: &[String]) -> Result<(), Error> {
    let upgrade = headers.contains_key(header::UPGRADE);
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !upgrade {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if origin.is_some_and(|origin| own_or_listed(origin, headers, allowed)) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "a request authenticated by the session cookie that changes something must carry an Origin of this server (or of --cors-origins)".to_owned(),
        ))
    }
}

/// Whether `origin` is this server's (its authority is the request's `Host`) or one of
/// `listed`.
pub fn own_or_listed(origin: &str, headers: &HeaderMap, listed: &[String]) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = host.is_some_and(|host| {
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host)
    });
    own || listed.iter().any(|l| l == origin)
}

/// Answers that depend on the identity must not be stored for others by a shared cache.
fn mark(headers: &mut HeaderMap, private: bool, allowed: Option<&Allowed>) {
    headers.append(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    if private {
        let control = match headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
        {
            Some(control) if control.contains("no-store") => control.to_owned(),
            Some(control) => format!("private, {control}"),
            None => "private".to_owned(),
        };
        if let Ok(value) = HeaderValue::from_str(&control) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
    if let Some(allowed) = allowed {
        let window = allowed.window.as_secs();
        let policy = format!("{};w={window}", allowed.limit);
        let state = format!(
            "limit={}, remaining={}, reset={window}",
            allowed.limit, allowed.remaining
        );
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
}

/// `GET /_session`: who the request is.
pub async fn session_show(caller: Caller) -> Response {
    axum::Json(describe(&caller)).into_response()
}

/// `POST /_session`: credentials (in `Authorization`, or a JSON body `{"user", "password"}` or
/// `{"token"}`) for a session cookie.
pub async fn session_open(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let address = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip());
    let mut identity = caller.0.clone();
    if !identity.authenticated {
        let bytes = state.bodies.read(request).await?;
        let body: Value = crate::json::parse(&bytes)?;
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let credentials = match (text("user"), text("password"), text("token")) {
            (Some(user), Some(password), None) => Credentials::Password { user, password },
            (None, None, Some(token)) => Credentials::Token(token),
            _ => {
                return Err(ApiError::BadRequest(
                    "send credentials in Authorization, or a body {\"user\": ..., \"password\": ...} or {\"token\": ...}".to_owned(),
                ));
            }
        };
        identity = state.access.authenticate(credentials, address).await?;
    }
    let Some(token) = state.access.open_session(&identity) else {
        return Err(ApiError::BadRequest(
            "this server has no access file, so there are no sessions".to_owned(),
        ));
    };
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = (StatusCode::OK, axum::Json(describe(&identity))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex and ASCII"),
    );
    Ok(response)
}

/// `DELETE /_session`: ends the session of the cookie.
pub async fn session_close(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, COOKIE) {
        state.access.close_session(&token);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&expired).expect("ASCII"),
    );
    response
}

fn describe(identity: &Identity) -> Value {
    json!({
        "user": identity.user,
        "roles": identity.roles(),
        "authenticated": identity.authenticated,
        "admin": identity.is_admin(),
    })
}
