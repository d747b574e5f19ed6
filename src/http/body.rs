//! Request bodies, read under three limits so that no client can hold the server's memory: the
//! size (`--max-body`; a larger declared `Content-Length` is refused before a byte is read), a
//! deadline for the whole body (`--body-timeout`), and the bytes of all the bodies being read at
//! once (`--body-memory`), past which a request is answered 503 rather than kept waiting.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::error::Error;

/// The limits on request bodies, shared by every connection.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// The largest body, in bytes.
    pub max_body: usize,
    /// The longest a body may take to arrive.
    pub timeout: Duration,
    /// Bytes of bodies being read, over all connections: one permit per byte.
    memory: Arc<Semaphore>,
    memory_limit: usize,
}

impl BodyLimits {
    pub fn new(max_body: usize, timeout: Duration, memory: usize) -> BodyLimits {
        BodyLimits {
            max_body,
            timeout,
            memory: Arc::new(Semaphore::new(memory.min(Semaphore::MAX_PERMITS))),
            memory_limit: memory,
        }
    }

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
        let capacity = declared.map_or(0, |n| n as usize);
        let mut body = request.into_body();
        let reading = async {
            let mut held = BytesMut::with_capacity(capacity);
            // Taken as the bytes arrive, so a client that sends slowly holds only what it sent.
            let mut reserved = self.memory.clone().try_acquire_many_owned(0).ok();
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
                let more = u32::try_from(data.len())
                    .ok()
                    .and_then(|n| self.memory.clone().try_acquire_many_owned(n).ok());
                match (more, reserved.as_mut()) {
                    (Some(more), Some(reserved)) => reserved.merge(more),
                    _ => return Err(ApiError::BodiesInFlight(self.memory_limit)),
                }
                held.extend_from_slice(&data);
            }
            Ok(held.freeze())
        };
        tokio::time::timeout(self.timeout, reading)
            .await
            .map_err(|_| ApiError::BodyTimeout(self.timeout))?
    }
}
