//! Request bodies, read under the size limit (`--max-body`; a larger declared `Content-Length`
//! is refused before a byte is read) and the [intake](crate::intake) limits shared with MQTT:
//! the time a body may take to arrive, and the memory of all bodies being received at once.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use bytes::BytesMut;
use http_body_util::BodyExt;

use super::error::ApiError;
use crate::error::Error;
use crate::intake::Intake;

/// The limits on request bodies.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// The largest body, in bytes.
    pub max_body: usize,
    pub intake: Intake,
}

impl BodyLimits {
    /// Reads the body of `request` under the limits.
    pub async fn read(&self, request: Request) -> Result<Bytes, ApiError> {
        let too_large = || {
            ApiError::Domain(Error::PayloadTooLarge {
                limit: self.max_body,
            })
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        let mut body = request.into_body();
        let reading = async {
            let mut held = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
            // Taken as the bytes arrive, so a client that sends slowly holds only what it sent.
            let mut share = self.intake.share();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::BadRequest(format!("the body could not be read: {e}"))
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if held.len() + data.len() > self.max_body {
                    return Err(too_large());
                }
                share
                    .hold(held.len() + data.len())
                    .map_err(|_| ApiError::BodiesInFlight(self.intake.limit()))?;
                held.extend_from_slice(&data);
            }
            Ok(held.freeze())
        };
        tokio::time::timeout(self.intake.timeout(), reading)
            .await
            .map_err(|_| ApiError::BodyTimeout(self.intake.timeout()))?
    }
}
