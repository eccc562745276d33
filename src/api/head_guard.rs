//! Request heads the HTTP parser refuses still get the error envelope.
//!
//! actix-http answers a head it cannot parse itself, before any of VoidVM's code runs: a bodiless
//! `400` for a URL over the `http` crate's 64 KiB or a malformed line, a bodiless `431` for a head
//! over 128 KiB. `HeadGuard` wraps each connection's socket, recognises that answer as it is
//! written, and writes the API's own in its place: 414 `URI_TOO_LONG` when the request line is
//! longer than the API reads ([`MAX_URI_BYTES`]), 431 `HEADERS_TOO_LARGE` for a head too large
//! otherwise, and 400 `VALIDATION_ERROR` (field `request`) for a malformed head. The parser closes
//! the connection after such an answer, and so does the replacement.
//!
//! The guard reads nothing itself: it counts the length of the first line the client sent since
//! the server last wrote (the request line of the head being read; HTTP/1.1 clients send the
//! next request after the answer), and compares what the server writes with the parser's two
//! answers. Two answers are not the end of a request: `100 Continue` (the body follows, and is
//! not a head), and `101 Switching Protocols` (from then on the connection carries WebSocket
//! frames, which the guard passes untouched both ways).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::body::MessageBody;
use actix_web::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;
use super::input::MAX_URI_BYTES;

/// A connection's socket, with the parser's bare refusals replaced by envelopes.
pub struct HeadGuard<T> {
    io: T,
    lines: LineCount,
    long: LongLines,
    answer: Answer,
    /// The server answered `101 Switching Protocols`: no HTTP is left to guard.
    upgraded: bool,
}

/// What a write of the server's starts with, for the guard: an interim `100 Continue` leaves the
/// request being received as it is; a `101` hands the connection to another protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Continue,
    Upgrade,
    Other,
}

fn written_kind(buf: &[u8]) -> Written {
    if buf.starts_with(b"HTTP/1.1 100 ") {
        Written::Continue
    } else if buf.starts_with(b"HTTP/1.1 101 ") {
        Written::Upgrade
    } else {
        Written::Other
    }
}

/// The longest line a request head may have. actix-http panics on a header name of 64 KiB or
/// more (the `http` crate refuses to make it, and the parser unwraps), after the head passed its
/// size check: a client could write a panic into the log with every request. A head line longer
/// than this is spoiled on its way in (a byte the parser refuses), so the parser answers 400,
/// which goes out as 431 `HEADERS_TOO_LARGE`.
pub const MAX_HEAD_LINE: usize = 60 * 1024;

/// The head being received (from the connection's start, and again after each answer) and its
/// current line's length. What follows the head's blank line is a body, not looked at; so a
/// head pipelined after a body, before the server answered, is not either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LongLines {
    in_head: bool,
    current: usize,
    spoiled: bool,
}

impl Default for LongLines {
    fn default() -> Self {
        LongLines {
            in_head: true,
            current: 0,
            spoiled: false,
        }
    }
}

impl LongLines {
    /// Follows `bytes` as received; spoils the first byte of a head line past [`MAX_HEAD_LINE`].
    fn received(&mut self, bytes: &mut [u8]) {
        let mut start = 0;
        while self.in_head && start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map(|i| start + i);
            let piece = end.unwrap_or(bytes.len()) - start;
            if self.current + piece > MAX_HEAD_LINE {
                // The parser has not seen this line end; a control byte makes it refuse it.
                bytes[start] = 0x01;
                self.spoiled = true;
            }
            match end {
                Some(newline) => {
                    // An empty line ("\r\n" or "\n") ends the head.
                    if self.current + piece <= 1 {
                        self.in_head = false;
                    }
                    self.current = 0;
                    start = newline + 1;
                }
                None => {
                    self.current += piece;
                    start = bytes.len();
                }
            }
        }
    }

    fn answered(&mut self) {
        *self = LongLines::default();
    }
}

/// The length of the first line received since the server last wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LineCount {
    /// Bytes of the line being received, up to its `\n`.
    current: usize,
    /// The first line's length, once its `\n` arrived.
    first: Option<usize>,
}

impl LineCount {
    fn received(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', bytes) {
            let line = self.current + (newline - start);
            self.first.get_or_insert(line);
            self.current = 0;
            start = newline + 1;
        }
        self.current += bytes.len() - start;
    }

    /// The server answered: what it answered was read whole (a body too, even one without a
    /// final newline), so the next byte received starts the next head.
    fn answered(&mut self) {
        self.first = None;
        self.current = 0;
    }

    fn request_line(&self) -> usize {
        self.first.unwrap_or(self.current)
    }
}

enum Answer {
    /// What the server writes goes out as written.
    Passing,
    /// The envelope standing for the parser's refusal, partly written.
    Replacing { bytes: Vec<u8>, written: usize },
    /// The envelope went out; the connection only closes now.
    Replaced,
}

/// The parser's refusals, exactly as actix-http writes them (a status line, `content-length: 0`,
/// `connection: close` and `date`, no body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Malformed,
    TooLarge,
    /// The head did not arrive in time (actix-http's `client_request_timeout`).
    TimedOut,
}

fn refusal_in(written: &[u8]) -> Option<Refusal> {
    let refusal = if written.starts_with(b"HTTP/1.1 400 Bad Request\r\n") {
        Refusal::Malformed
    } else if written.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") {
        Refusal::TooLarge
    } else if written.starts_with(b"HTTP/1.1 408 Request Timeout\r\n") {
        Refusal::TimedOut
    } else {
        return None;
    };
    // A whole bodiless head and nothing else: none of the API's answers looks like that (its
    // errors always carry the envelope).
    let head_only = written.len() < 512
        && written.ends_with(b"\r\n\r\n")
        && memchr::memmem::find(written, b"\r\n\r\n") == Some(written.len() - 4)
        && memchr::memmem::find(written, b"\r\ncontent-length: 0\r\n").is_some();
    head_only.then_some(refusal)
}

/// The API's error for what the parser refused.
fn error_for(refusal: Refusal, request_line: usize) -> ApiError {
    if request_line > MAX_URI_BYTES {
        return ApiError::UriTooLong(MAX_URI_BYTES);
    }
    match refusal {
        Refusal::TooLarge => ApiError::HeadersTooLarge,
        Refusal::TimedOut => {
            ApiError::RequestTimeout("The request head did not arrive in time.".into())
        }
        Refusal::Malformed => ApiError::validation(
            "request",
            "The request line or a header is not valid HTTP/1.1.",
        ),
    }
}

/// `error` as a whole HTTP/1.1 response that closes the connection.
fn raw_answer(error: &ApiError) -> Vec<u8> {
    let response = error.error_response();
    let status = response.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = response.into_body().try_into_bytes().unwrap_or_default();
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\nx-api-version: {}\r\n{}: {}\r\n\r\n",
            body.len(),
            super::API_VERSION,
            super::request_id::HEADER,
            uuid::Uuid::new_v4()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

impl<T> HeadGuard<T> {
    pub fn new(io: T) -> HeadGuard<T> {
        HeadGuard {
            io,
            lines: LineCount::default(),
            long: LongLines::default(),
            answer: Answer::Passing,
            upgraded: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> HeadGuard<T> {
    /// Writes the rest of a replacement, if there is one.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Answer::Replacing { bytes, written } = &mut self.answer {
            if *written == bytes.len() {
                self.answer = Answer::Replaced;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if !this.upgraded {
            this.long.received(&mut buf.filled_mut()[before..]);
            this.lines.received(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.upgraded {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        if let Answer::Passing = this.answer {
            match refusal_in(buf) {
                Some(refusal) => {
                    let refusal = if this.long.spoiled {
                        Refusal::TooLarge
                    } else {
                        refusal
                    };
                    let error = error_for(refusal, this.lines.request_line());
                    tracing::debug!(error = %error, "the HTTP parser refused a request head");
                    this.answer = Answer::Replacing {
                        bytes: raw_answer(&error),
                        written: 0,
                    };
                }
                None => {
                    let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
                    match written_kind(buf) {
                        // The request's body comes next, not a head.
                        Written::Continue => {}
                        Written::Upgrade => this.upgraded = true,
                        Written::Other => {
                            this.lines.answered();
                            this.long.answered();
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
            }
        }
        ready!(this.poll_replacement(cx))?;
        // The parser's own answer is dropped whole: the envelope stands for it.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n";
    const BARE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n";

    #[test]
    fn a_head_line_past_the_limit_is_spoiled_and_a_body_is_not_looked_at() {
        let mut long = LongLines::default();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        long.received(&mut head);
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: x\r\n");
        // A name arriving in pieces: the piece that crosses the limit is spoiled.
        let mut first = vec![b'X'; MAX_HEAD_LINE - 10];
        long.received(&mut first);
        assert!(first.iter().all(|b| *b == b'X') && !long.spoiled);
        let mut second = vec![b'X'; 20];
        long.received(&mut second);
        assert_eq!(second[0], 0x01);
        assert!(long.spoiled);

        // After the blank line, a body without newlines is passed as it is.
        let mut long = LongLines::default();
        let mut bytes = b"PUT /u HTTP/1.1\r\nContent-Length: 99999\r\n\r\n".to_vec();
        bytes.extend(vec![b'a'; MAX_HEAD_LINE * 2]);
        let copy = bytes.clone();
        long.received(&mut bytes);
        assert_eq!(bytes, copy);
        assert!(!long.spoiled && !long.in_head);
        // The next head is looked at again once the server answered.
        long.answered();
        let mut again = vec![b'Y'; MAX_HEAD_LINE + 1];
        long.received(&mut again);
        assert!(long.spoiled);
    }

    #[test]
    fn the_first_line_since_the_last_answer_is_the_request_line() {
        let mut lines = LineCount::default();
        lines.received(b"GET /a");
        assert_eq!(lines.request_line(), 6);
        lines.received(b"bc HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(lines.request_line(), "GET /abc HTTP/1.1\r".len());
        lines.received(&[b'x'; 100_000]);
        assert_eq!(lines.request_line(), "GET /abc HTTP/1.1\r".len());
        // A body without a final newline does not lengthen the next request line.
        lines.answered();
        lines.received(b"GET /b HTTP/1.1\r\n");
        assert_eq!(lines.request_line(), "GET /b HTTP/1.1\r".len());
        lines.answered();
        lines.received(&[b'y'; 70_000]);
        assert_eq!(lines.request_line(), 70_000);
    }

    #[test]
    fn only_the_parsers_bodiless_refusals_are_recognised() {
        assert_eq!(refusal_in(BARE_400), Some(Refusal::Malformed));
        assert_eq!(refusal_in(BARE_431), Some(Refusal::TooLarge));
        let enveloped = raw_answer(&ApiError::validation("name", "no"));
        assert!(enveloped.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(refusal_in(&enveloped), None);
        let mut with_more = BARE_400.to_vec();
        with_more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(refusal_in(&with_more), None);
        assert_eq!(
            refusal_in(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn a_long_request_line_is_a_url_too_long_whatever_the_parser_said() {
        for refusal in [Refusal::Malformed, Refusal::TooLarge] {
            let error = error_for(refusal, MAX_URI_BYTES + 1);
            assert_eq!(error.status_and_code().1, "URI_TOO_LONG");
        }
        let error = error_for(Refusal::TooLarge, 40);
        assert_eq!(error.status_and_code().1, "HEADERS_TOO_LARGE");
        let error = error_for(Refusal::Malformed, 40);
        assert_eq!(error.status_and_code().1, "VALIDATION_ERROR");
        assert_eq!(error.field().as_deref(), Some("request"));
    }

    #[test]
    fn the_replacement_is_a_whole_response_with_the_envelope() {
        let raw = raw_answer(&ApiError::UriTooLong(MAX_URI_BYTES));
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "URI_TOO_LONG");
    }

    /// Writes `answer` through a guard, then sends `bytes` from the client; what the server reads.
    async fn received_after(answer: &[u8], head: &[u8], bytes: &[u8]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut guard = HeadGuard::new(server);
        client.write_all(head).await.unwrap();
        let mut read = vec![0; head.len()];
        guard.read_exact(&mut read).await.unwrap();
        guard.write_all(answer).await.unwrap();
        guard.flush().await.unwrap();
        client.write_all(bytes).await.unwrap();
        let mut read = vec![0; bytes.len()];
        guard.read_exact(&mut read).await.unwrap();
        read
    }

    #[actix_rt::test]
    async fn a_body_after_100_continue_and_frames_after_101_pass_untouched() {
        // A body of one long line (a disk image, a padded JSON document) after the interim answer.
        let body = vec![b'z'; MAX_HEAD_LINE * 3];
        let head = b"PUT /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 184320\r\n\r\n";
        let got = received_after(b"HTTP/1.1 100 Continue\r\n\r\n", head, &body).await;
        assert!(got == body, "the body was changed");
        // WebSocket frames after the upgrade, in both directions.
        let frames = vec![b'w'; MAX_HEAD_LINE * 2];
        let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        let upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        let got = received_after(upgrade, head, &frames).await;
        assert!(got == frames, "a frame was changed");
        // After a final answer, the next head is guarded again.
        let got = received_after(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            head,
            &frames,
        )
        .await;
        assert!(got.contains(&0x01), "the next head's long line is spoiled");
    }

    #[actix_rt::test]
    async fn a_refusal_written_through_the_guard_goes_out_as_the_envelope() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut guard = HeadGuard::new(server);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(70_000));
        client.write_all(long.as_bytes()).await.unwrap();
        let mut read = vec![0; 1 << 17];
        let mut got = 0;
        while got < long.len() {
            got += guard.read(&mut read[got..]).await.unwrap();
        }
        guard.write_all(BARE_400).await.unwrap();
        guard.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\"URI_TOO_LONG\""), "{answer}");
    }
}
