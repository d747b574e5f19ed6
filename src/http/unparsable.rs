//! hyper answers a request it cannot parse (a space or a byte that is not UTF-8 in the path:
//! 400; a URI or headers too long: 414, 431) itself, before any handler runs, with an empty body.
//! [`ProblemStream`] wraps a connection's socket and gives those answers the problem+json body
//! every other error has. hyper closes the connection after them, so the answer is the last
//! thing written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ApiError, PROBLEM_JSON};

/// A connection's socket, with hyper's bodiless parse-error answers rewritten.
pub struct ProblemStream<S> {
    inner: S,
    /// A rewritten answer being written: its bytes, how many are out, and the length of the
    /// write it replaces (reported to hyper once all are out).
    rewritten: Option<(Vec<u8>, usize, usize)>,
}

impl<S> ProblemStream<S> {
    pub fn new(inner: S) -> ProblemStream<S> {
        ProblemStream {
            inner,
            rewritten: None,
        }
    }
}

/// The answer to put in place of `written`, if it is one of hyper's parse-error answers: a
/// whole head of status 400, 414 or 431 with no body. Our own answers to those statuses always
/// have a body.
fn rewrite(written: &[u8]) -> Option<Vec<u8>> {
    let status = match written.get(..13)? {
        b"HTTP/1.1 400 " => StatusCode::BAD_REQUEST,
        b"HTTP/1.1 414 " => StatusCode::URI_TOO_LONG,
        b"HTTP/1.1 431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let head = std::str::from_utf8(written).ok()?;
    let bodiless = head.ends_with("\r\n\r\n")
        && head
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
        && !head.to_ascii_lowercase().contains("\r\ncontent-type:");
    if !bodiless {
        return None;
    }
    let (status, body) = ApiError::Unparsable(status).problem();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> ProblemStream<S> {
    /// Writes the rewritten answer; `Ready(Ok(n))` with the length hyper wrote once all is out.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let (bytes, out, replaced) = self.rewritten.as_mut().expect("an answer to write");
        while *out < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*out..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *out += n;
        }
        let replaced = *replaced;
        self.rewritten = None;
        Poll::Ready(Ok(replaced))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none()
            && let Some(answer) = rewrite(buf)
        {
            self.rewritten = Some((answer, 0, buf.len()));
        }
        if self.rewritten.is_some() {
            return self.poll_rewritten(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rewritten.is_none()
            && let [only] = bufs
            && let Some(answer) = rewrite(only)
        {
            self.rewritten = Some((answer, 0, only.len()));
        }
        if self.rewritten.is_some() {
            return self.poll_rewritten(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn only_hypers_bodiless_parse_error_answers_are_rewritten() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(rewrite(hyper).expect("rewritten")).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("application/problem+json") && answer.contains("bad-request"));
        let long = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(rewrite(long).unwrap())
                .unwrap()
                .contains("headers-too-large")
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 90\r\n\r\n";
        assert_eq!(rewrite(ours), None);
        assert_eq!(
            rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }
}
