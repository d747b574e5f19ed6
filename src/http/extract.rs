//! Request extractors that answer their own rejections with problem details.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;

/// Path parameters; a path that cannot be decoded is a 400 problem.
pub struct UrlPath<T>(pub T);

impl<T, S> FromRequestParts<S> for UrlPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| UrlPath(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// A JSON request body: checks the media type (415), reads it under the [body
/// limits](super::body) (413, 408, 503), and checks the syntax (400).
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let Some(content_type) = request.headers().get(header::CONTENT_TYPE) else {
            return Err(ApiError::UnsupportedMediaType(None));
        };
        let text = content_type.to_str().unwrap_or_default();
        if !is_json(text) {
            return Err(ApiError::UnsupportedMediaType(Some(text.to_owned())));
        }
        let bytes = state.bodies.read(request).await?;
        Ok(JsonBody(crate::json::parse(&bytes)?))
    }
}

/// `application/json`, or any `application/*+json` such as `application/merge-patch+json`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
