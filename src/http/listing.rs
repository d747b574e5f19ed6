//! Streaming a table as a JSON array.
//!
//! Records are read lazily and sent in chunks of about [`CHUNK_BYTES`]: memory stays flat however
//! large the table, and a slow client holds no thread (the stream is only polled when the socket
//! can take more).

use std::io;

use axum::body::Bytes;

use crate::error::Result;
use crate::storage::{Envelope, Key};

const CHUNK_BYTES: usize = 64 * 1024;

/// An iterator of body chunks that together form `[record,record,...]`.
pub struct JsonArray<I> {
    records: I,
    started: bool,
    finished: bool,
}

impl<I> JsonArray<I> {
    /// Wraps an iterator of records.
    pub fn new(records: I) -> JsonArray<I> {
        JsonArray {
            records,
            started: false,
            finished: false,
        }
    }
}

impl<I: Iterator<Item = Result<(Key, Envelope)>>> Iterator for JsonArray<I> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.finished {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
        if !self.started {
            chunk.push(b'[');
        }
        while chunk.len() < CHUNK_BYTES {
            match self.records.next() {
                Some(Ok((_, record))) => {
                    if self.started {
                        chunk.push(b',');
                    }
                    self.started = true;
                    chunk.extend_from_slice(&record.value);
                }
                Some(Err(error)) => {
                    // The status line is long gone: abort the body so the client sees a broken
                    // response rather than a well-formed but truncated array.
                    tracing::error!(%error, "listing aborted");
                    self.finished = true;
                    return Some(Err(io::Error::other(error.to_string())));
                }
                None => {
                    self.started = true;
                    self.finished = true;
                    chunk.push(b']');
                    break;
                }
            }
        }
        Some(Ok(chunk.into()))
    }
}
