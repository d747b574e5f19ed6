//! Streaming query answers as JSON arrays, NDJSON or CSV.
//!
//! Records are produced lazily and sent in chunks of about [`CHUNK_BYTES`]: memory stays flat
//! however large the answer. Each chunk is produced on the blocking pool (a filter may scan far to fill
//! one), and only when the socket can take more, so a slow client holds no thread. The first
//! chunk is produced by the caller, already on the blocking pool, so an answer that fits in one
//! chunk costs no further hop between threads.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;
use serde_json::Value;

use crate::access::Reader;
use crate::error::{Cause, Chain, Error, Result};
use crate::query::executor::{Content, ListedRecord, Listing};

const CHUNK_BYTES: usize = 64 * 1024;

/// The representations of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one array.
    Json,
    /// `application/x-ndjson`: one record per line.
    NdJson,
    /// `text/csv` (RFC 4180) with a header row of these columns.
    Csv(Vec<String>),
}

/// What the client accepts, in its order of preference; `None` if we offer none of it.
pub fn negotiate(headers: &HeaderMap, csv_columns: impl FnOnce() -> Vec<String>) -> Option<Format> {
    if !headers.contains_key(header::ACCEPT) {
        return Some(Format::Json);
    }
    let mut ranges = super::headers::accepted(headers);
    let chosen = ranges.find(|media| {
        matches!(
            media.as_str(),
            "application/json"
                | "application/*"
                | "*/*"
                | "application/x-ndjson"
                | "application/ndjson"
                | "text/csv"
                | "text/*"
        )
    })?;
    Some(match chosen.as_str() {
        "application/x-ndjson" | "application/ndjson" => Format::NdJson,
        "text/csv" | "text/*" => Format::Csv(csv_columns()),
        _ => Format::Json,
    })
}

impl Format {
    /// The `Content-Type` of this representation.
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::NdJson => "application/x-ndjson",
            Format::Csv(_) => "text/csv; charset=utf-8; header=present",
        }
    }
}

/// `records` without what `reader` may not see of them (its rows are the query's business).
pub fn shown(records: Listing, reader: Reader) -> Listing {
    if reader.hides_nothing() {
        return records;
    }
    Box::new(records.map(move |record| {
        let mut record = record?;
        let mut value = match record.content {
            Content::Stored(bytes) => {
                serde_json::from_slice(&bytes).map_err(Error::stored_not_json)?
            }
            Content::Value(value) => value,
        };
        reader.strip(&mut value);
        record.content = Content::Value(value);
        Ok(record)
    }))
}

/// The body of an answer of `records` as `format`. Call it on the blocking pool: it produces the
/// first chunk at once, so an error there can still be answered with a status.
pub fn body(records: Listing, format: Format) -> Result<Body> {
    let mut chunks = Chunks::new(records, format);
    let first = chunks.next().transpose()?.unwrap_or_default();
    if chunks.finished {
        return Ok(Body::from(first));
    }
    let rest = futures_util::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        let (next, chunks) =
            match tokio::task::spawn_blocking(move || (chunks.next(), chunks)).await {
                Ok((next, chunks)) => (next, Some(chunks)),
                Err(failed) => {
                    let cause = Cause::of("producing a chunk of a listing panicked", failed);
                    (Some(Err(Error::Internal(cause))), None)
                }
            };
        if let Some(Err(error)) = &next {
            // The status line is long gone: the body is aborted, so the client sees a broken
            // response rather than a well-formed but truncated one.
            tracing::error!(error = %Chain(error), "listing aborted");
        }
        next.map(|chunk| (chunk, chunks))
    });
    Ok(Body::from_stream(
        futures_util::stream::once(async { Ok(first) }).chain(rest),
    ))
}

/// The body chunks of an answer.
struct Chunks {
    records: Listing,
    format: Format,
    opened: bool,
    any_record: bool,
    finished: bool,
}

impl Chunks {
    /// Formats `records` as `format`.
    fn new(records: Listing, format: Format) -> Chunks {
        Chunks {
            records,
            format,
            opened: false,
            any_record: false,
            finished: false,
        }
    }

    fn open(&self, chunk: &mut Vec<u8>) {
        match &self.format {
            Format::Json => chunk.push(b'['),
            Format::NdJson => {}
            Format::Csv(columns) => {
                let header: Vec<Value> = columns.iter().map(|c| Value::from(c.as_str())).collect();
                csv_line(chunk, header.iter().map(Some));
            }
        }
    }

    fn record(&mut self, chunk: &mut Vec<u8>, record: ListedRecord) -> Result<()> {
        let first = !std::mem::replace(&mut self.any_record, true);
        match &self.format {
            Format::Json | Format::NdJson => {
                if !first && self.format == Format::Json {
                    chunk.push(b',');
                }
                match record.content {
                    Content::Stored(bytes) => chunk.extend_from_slice(&bytes),
                    Content::Value(value) => serde_json::to_writer(&mut *chunk, &value)
                        .map_err(|e| Error::Internal(Cause::of("a value did not format", e)))?,
                }
                if self.format == Format::NdJson {
                    chunk.push(b'\n');
                }
            }
            Format::Csv(columns) => {
                let value = match record.content {
                    Content::Stored(bytes) => {
                        serde_json::from_slice(&bytes).map_err(Error::stored_not_json)?
                    }
                    Content::Value(value) => value,
                };
                match &value {
                    Value::Object(fields) => csv_line(chunk, columns.iter().map(|c| fields.get(c))),
                    single => csv_line(chunk, std::iter::once(Some(single))),
                }
            }
        }
        Ok(())
    }
}

impl Iterator for Chunks {
    type Item = Result<Bytes>;

    fn next(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
        if !std::mem::replace(&mut self.opened, true) {
            self.open(&mut chunk);
        }
        while chunk.len() < CHUNK_BYTES {
            let record = match self.records.next() {
                Some(Ok(record)) => record,
                Some(Err(error)) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                None => {
                    self.finished = true;
                    if self.format == Format::Json {
                        chunk.push(b']');
                    }
                    break;
                }
            };
            if let Err(error) = self.record(&mut chunk, record) {
                self.finished = true;
                return Some(Err(error));
            }
        }
        Some(Ok(chunk.into()))
    }
}

/// One CSV record (RFC 4180): strings as they are, numbers and booleans as text, null and
/// missing as empty cells, objects and arrays as JSON.
fn csv_line<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = Option<&'a Value>>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let text = match cell {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
            out.push(b'"');
            out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::storage::Key;

    /// A listing of `count` records that fails with a panic after `panic_after`.
    fn listing(count: i64, panic_after: i64) -> Listing {
        Box::new((0..count).map(move |n| {
            assert!(n < panic_after, "a bug while listing");
            Ok(ListedRecord {
                key: Key::Int(n),
                version: 1,
                content: Content::Stored(Bytes::from(format!(
                    "{{\"n\":{n},\"pad\":\"{}\"}}",
                    "x".repeat(100)
                ))),
            })
        }))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_after_the_first_chunk_aborts_the_body() {
        for format in [Format::Json, Format::NdJson] {
            let body = tokio::task::spawn_blocking(move || body(listing(10_000, 5_000), format))
                .await
                .expect("first chunk")
                .expect("the first chunk is whole");
            assert!(
                body.collect().await.is_err(),
                "the body ends in an error, not a clean end"
            );
        }
        let whole = body(listing(2_000, 2_000), Format::Json).expect("body");
        let bytes = whole.collect().await.expect("whole").to_bytes();
        let parsed: Vec<Value> = serde_json::from_slice(&bytes).expect("one JSON array");
        assert_eq!(parsed.len(), 2_000);
    }
}
