//! A request body must keep arriving.
//!
//! actix-http times out a request head that stalls, not a body: a client that announced a body
//! and then sent nothing more held its connection (and a file descriptor) for good, so enough of
//! them, without a token, took the server down. Every body now arrives under a deadline: a JSON
//! body (at most 64 KiB) whole within [`BODY_DEADLINE`], an image upload (gigabytes, streamed)
//! with no pause longer than `images.stall_timeout_secs`. Past it the body fails with
//! `io::ErrorKind::TimedOut`, which the readers answer as 408 `REQUEST_TIMEOUT`, and the
//! connection closes.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::app::AppState;

/// How long a body that is not an upload may take to arrive, whole.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// How the deadline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The whole body by then.
    Whole,
    /// Each chunk within this of the one before.
    Between(Duration),
}

/// Where a body that timed out is kept, unread, until its answer is sent.
///
/// actix-http drains a chunked body whose reader dropped it, to keep the connection: with no
/// deadline, so a client that stalled mid-chunk held its connection for good after the 408 that
/// says it closes. A body still held when the answer has been sent is "unread", and the
/// connection closes after the answer (within `client_disconnect_timeout`), as it does for a body
/// with a `Content-Length`. The middleware hands it to the answer's body ([`WithUnread`]), which
/// actix-http keeps until the last byte is out.
type Held = Rc<RefCell<Option<Box<dyn Any>>>>;

/// An answer's body, holding the unread request body of a request answered 408 (see [`Held`]).
pub struct WithUnread {
    body: BoxBody,
    _unread: Box<dyn Any>,
}

impl MessageBody for WithUnread {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// A body stream that fails with `TimedOut` once its deadline passes.
pub struct Deadline<S> {
    /// The body; moved to `held` when the deadline passes (then the stream has ended).
    inner: Option<S>,
    held: Held,
    mode: Mode,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Deadline<S> {
    fn new(inner: S, mode: Mode, held: Held) -> Self {
        let after = match mode {
            Mode::Whole => BODY_DEADLINE,
            Mode::Between(pause) => pause,
        };
        Deadline {
            inner: Some(inner),
            held,
            mode,
            sleep: Box::pin(tokio::time::sleep(after)),
        }
    }
}

/// Whether `e` is this deadline's (for the readers that answer 408).
pub fn timed_out(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == io::ErrorKind::TimedOut)
}

impl<S> Stream for Deadline<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = Pin::new(inner).poll_next(cx) {
            if let (Mode::Between(pause), Some(Ok(_))) = (this.mode, &item) {
                this.sleep.as_mut().reset(Instant::now() + pause);
            }
            return Poll::Ready(item);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if let Some(inner) = this.inner.take() {
                    *this.held.borrow_mut() = Some(Box::new(inner));
                }
                let what = match this.mode {
                    Mode::Whole => format!(
                        "the request body did not arrive within {} s",
                        BODY_DEADLINE.as_secs()
                    ),
                    Mode::Between(pause) => format!(
                        "the request body stopped arriving for {} s",
                        pause.as_secs()
                    ),
                };
                Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    what,
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether the request announces a body (a WebSocket's frames are not one).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers.contains_key(UPGRADE) {
        return false;
    }
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// Puts the request's body, if it has one, under its deadline.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, WithUnread>>, actix_web::Error> {
    if has_body(&req) {
        let upload =
            req.method() == actix_web::http::Method::PUT && req.path().ends_with("/upload");
        let mode = match req.app_data::<web::Data<AppState>>() {
            Some(state) if upload => Mode::Between(Duration::from_secs(
                state.settings.images.stall_timeout_secs.max(1),
            )),
            _ => Mode::Whole,
        };
        let held = Held::default();
        let body = Deadline::new(req.take_payload(), mode, held.clone());
        req.set_payload(Payload::from(
            Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        ));
        let res = next.call(req).await?;
        let unread = held.borrow_mut().take();
        return Ok(match unread {
            Some(unread) => res
                .map_into_boxed_body()
                .map_body(|_, body| WithUnread {
                    body,
                    _unread: unread,
                })
                .map_into_right_body(),
            None => res.map_into_left_body(),
        });
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn chunks_then_silence(n: usize) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        futures::stream::iter((0..n).map(|_| Ok(Bytes::from_static(b"x"))))
            .chain(futures::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_fails_as_timed_out_when_its_deadline_passes() {
        let mut body = Deadline::new(chunks_then_silence(3), Mode::Whole, Held::default());
        for _ in 0..3 {
            assert!(matches!(body.next().await, Some(Ok(_))));
        }
        let started = Instant::now();
        let e = body.next().await.expect("an item").expect_err("an error");
        assert!(timed_out(&e), "{e}");
        assert_eq!(started.elapsed().as_secs(), BODY_DEADLINE.as_secs());
        assert!(body.next().await.is_none());
        assert!(
            body.held.borrow().is_some(),
            "the unread body is kept for the answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_may_take_long_as_long_as_it_never_pauses_too_long() {
        let pause = Duration::from_secs(5);
        let steady = futures::stream::iter(0..20).then(|_| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, PayloadError>(Bytes::from_static(b"x"))
        });
        let mut body = Deadline::new(Box::pin(steady), Mode::Between(pause), Held::default());
        let mut got = 0;
        while let Some(item) = body.next().await {
            item.expect("no timeout while chunks keep coming");
            got += 1;
        }
        assert_eq!(got, 20, "80 s in all, never a 5 s pause");
        let mut body = Deadline::new(
            chunks_then_silence(1),
            Mode::Between(pause),
            Held::default(),
        );
        assert!(matches!(body.next().await, Some(Ok(_))));
        let e = body.next().await.expect("an item").expect_err("an error");
        assert!(timed_out(&e));
    }
}
