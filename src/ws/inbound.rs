//! What a WebSocket client sends, bounded before it is buffered, and whole messages out of
//! fragments.
//!
//! actix-ws checks a frame's size only once the whole frame has arrived: a client that declares a
//! 1.5 GB frame and streams it made the server buffer all of it (no token needed on `/ws`). And
//! its plain message stream hands a fragmented message over as loose continuations, which the
//! sessions dropped. So every socket reads through two layers:
//! - [`LimitedPayload`], an extractor that replaces the request's payload with a [`FrameLimit`]
//!   stream: it follows the frame headers as the bytes go by (it buffers nothing but a header)
//!   and fails with `PayloadError::Overflow` as soon as a frame, or a message made of fragments,
//!   declares more than [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES);
//! - [`Inbound`], actix-ws's aggregating stream (fragments joined into one message), whose size
//!   refusals, like the limit's, come out as `ProtocolError::Overflow`: the sessions answer that
//!   with a `PAYLOAD_TOO_LARGE` error frame and close 1009.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::{web, FromRequest, HttpRequest};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Message, MessageStream, ProtocolError};
use bytes::Bytes;
use futures::Stream;

use super::MAX_FRAME_BYTES;

/// The request's payload behind a [`FrameLimit`] of [`MAX_FRAME_BYTES`]; hand it to
/// `actix_ws::handle`.
pub struct LimitedPayload(pub web::Payload);

impl FromRequest for LimitedPayload {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limited = FrameLimit::new(payload.take(), MAX_FRAME_BYTES as u64);
        let mut limited = Payload::from(
            Box::pin(limited) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        );
        let inner = web::Payload::from_request(req, &mut limited);
        Box::pin(async move { inner.await.map(LimitedPayload) })
    }
}

/// Where the reader is in the stream of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Reading a frame header: these bytes of it so far.
    Header { buf: [u8; 14], have: usize },
    /// Passing a frame's payload: this many bytes are left.
    Payload(u64),
}

/// Follows client frames (RFC 6455 §5.2) and fails as soon as one declares too much.
pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    at: At,
    /// Bytes of the fragmented data message being received (none: between messages).
    message: Option<u64>,
    failed: bool,
}

const HEADER_START: At = At::Header {
    buf: [0; 14],
    have: 0,
};

impl<S> FrameLimit<S> {
    pub fn new(inner: S, max: u64) -> Self {
        FrameLimit {
            inner,
            max,
            at: HEADER_START,
            message: None,
            failed: false,
        }
    }

    /// Reads `bytes` through the frame headers; `Err` once a frame or message is too large.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), PayloadError> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Payload(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.at = HEADER_START;
                    }
                }
                At::Header { buf, have } => {
                    buf[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    let Some(needed) = header_len(&buf[..*have]) else {
                        continue;
                    };
                    if *have < needed {
                        continue;
                    }
                    let (fin, opcode, length) = decode(&buf[..needed]);
                    self.check(fin, opcode, length)?;
                    self.at = if length == 0 {
                        HEADER_START
                    } else {
                        At::Payload(length)
                    };
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, fin: bool, opcode: u8, length: u64) -> Result<(), PayloadError> {
        if length > self.max {
            return Err(PayloadError::Overflow);
        }
        // Control frames (8 and up) may come between fragments and count for nothing.
        if opcode >= 8 {
            return Ok(());
        }
        let total = match (opcode, self.message) {
            (0, Some(so_far)) => so_far.saturating_add(length),
            _ => length,
        };
        if total > self.max {
            return Err(PayloadError::Overflow);
        }
        self.message = (!fin).then_some(total);
        Ok(())
    }
}

/// A header's length once its first bytes tell it (`None`: not yet).
fn header_len(head: &[u8]) -> Option<usize> {
    let second = *head.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// FIN, the opcode and the payload length of a complete header.
fn decode(head: &[u8]) -> (bool, u8, u64) {
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    let length = match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(eight)
        }
        n => u64::from(n),
    };
    (fin, opcode, length)
}

impl<S> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => match this.follow(&bytes) {
                Ok(()) => Poll::Ready(Some(Ok(bytes))),
                Err(e) => {
                    this.failed = true;
                    Poll::Ready(Some(Err(e)))
                }
            },
            other => other,
        }
    }
}

/// A socket's messages, fragments joined, any size refusal as `ProtocolError::Overflow`.
pub struct Inbound(AggregatedMessageStream);

impl Inbound {
    pub fn new(stream: MessageStream) -> Inbound {
        Inbound(
            stream
                .max_frame_size(MAX_FRAME_BYTES)
                .aggregate_continuations()
                .max_continuation_size(MAX_FRAME_BYTES),
        )
    }
}

/// Whether `e` is a text message that is not UTF-8 (closed with 1007, not 1002).
pub fn not_utf8(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData)
}

/// Whether `e` refuses something too large: the codec's own check, the frame limit's (through
/// the payload), or the aggregation's.
fn too_large(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => {
            let inner = io.get_ref();
            inner
                .and_then(|i| i.downcast_ref::<PayloadError>())
                .is_some_and(|p| matches!(p, PayloadError::Overflow))
                || inner.is_some_and(|i| i.to_string().contains("maximum continuation size"))
        }
        _ => false,
    }
}

impl Stream for Inbound {
    type Item = Result<Message, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().0).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(AggregatedMessage::Text(text)) => Ok(Message::Text(text)),
                Ok(AggregatedMessage::Binary(bytes)) => Ok(Message::Binary(bytes)),
                Ok(AggregatedMessage::Ping(bytes)) => Ok(Message::Ping(bytes)),
                Ok(AggregatedMessage::Pong(bytes)) => Ok(Message::Pong(bytes)),
                Ok(AggregatedMessage::Close(reason)) => Ok(Message::Close(reason)),
                Err(e) if too_large(&e) => Err(ProtocolError::Overflow),
                Err(e) => Err(e),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// A masked client frame header declaring `length` bytes.
    fn header(fin: bool, opcode: u8, length: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        match length {
            0..=125 => h.push(0x80 | length as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&length.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(fin: bool, opcode: u8, length: usize) -> Vec<u8> {
        let mut f = header(fin, opcode, length as u64);
        f.extend(std::iter::repeat_n(b'a', length));
        f
    }

    /// Feeds `bytes` in chunks of `size`; answers the chunks passed and whether it failed.
    async fn feed(bytes: Vec<u8>, size: usize, max: u64) -> (usize, bool) {
        let chunks: Vec<Result<Bytes, PayloadError>> = bytes
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut limit = FrameLimit::new(futures::stream::iter(chunks), max);
        let mut passed = 0;
        while let Some(item) = limit.next().await {
            match item {
                Ok(bytes) => passed += bytes.len(),
                Err(_) => return (passed, true),
            }
        }
        (passed, false)
    }

    #[actix_rt::test]
    async fn frames_within_the_limit_pass_whole_in_any_chunking() {
        let mut bytes = frame(true, 1, 10);
        bytes.extend(frame(true, 2, 1000));
        bytes.extend(frame(true, 9, 0));
        bytes.extend(frame(true, 1, 70_000));
        for size in [1, 3, 7, 4096, bytes.len()] {
            assert_eq!(
                feed(bytes.clone(), size, 70_000).await,
                (bytes.len(), false)
            );
        }
    }

    #[actix_rt::test]
    async fn a_frame_declaring_too_much_fails_at_its_header() {
        // Only the header arrives: nothing of the declared 1.5 GB needs to.
        let bytes = header(true, 2, 1_500_000_000);
        let (passed, failed) = feed(bytes.clone(), 1, 65_536).await;
        assert!(failed && passed < bytes.len(), "{passed} bytes passed");
        let mut bytes = frame(true, 1, 5);
        bytes.extend(header(true, 1, 65_537));
        let first = frame(true, 1, 5).len();
        let (passed, failed) = feed(bytes, first, 65_536).await;
        assert!(failed && passed < first + 14, "{passed} bytes passed");
        assert!(!feed(frame(true, 1, 65_536), 512, 65_536).await.1);
    }

    #[actix_rt::test]
    async fn fragments_count_together_and_control_frames_between_them_do_not() {
        let mut fits = frame(false, 1, 30_000);
        fits.extend(frame(true, 9, 100));
        fits.extend(frame(true, 0, 30_000));
        fits.extend(frame(false, 1, 60_000));
        fits.extend(frame(true, 0, 5_000));
        assert_eq!(feed(fits.clone(), 999, 65_536).await, (fits.len(), false));
        let mut over = frame(false, 1, 30_000);
        over.extend(frame(false, 0, 30_000));
        over.extend(frame(true, 0, 30_000));
        assert!(feed(over, 999, 65_536).await.1);
    }
}
