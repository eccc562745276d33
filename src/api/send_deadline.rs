//! A client that stops reading is let go: every connection's socket gives up a write that has
//! made no progress for [`SEND_TIMEOUT`], and actix-http then drops the connection.
//!
//! actix-http has timeouts for a request's head and for a shutdown, none for a write the client
//! never takes. A WebSocket closed as too slow (its queue stayed full) still had megabytes in the
//! kernel's send buffer and its close frame behind them: its socket stayed open, no longer
//! counted against the user's ten connections, for as long as the client held it (seen for
//! minutes). nginx's `send_timeout` is the same rule (60 s there too): a write is timed from the
//! moment it could not go on, and any progress starts the clock again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a write may wait for the client to read before the connection is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// A socket whose writes give up after `limit` without progress.
pub struct SendDeadline<T> {
    io: T,
    limit: Duration,
    /// Running while a write (or flush, or shutdown) waits on the client; none otherwise.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> SendDeadline<T> {
    pub fn new(io: T) -> SendDeadline<T> {
        SendDeadline::with_limit(io, SEND_TIMEOUT)
    }

    pub fn with_limit(io: T, limit: Duration) -> SendDeadline<T> {
        SendDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// The socket's write went on (or failed): the clock stops.
    fn progressed<R>(&mut self, result: io::Result<R>) -> Poll<io::Result<R>> {
        self.stalled = None;
        Poll::Ready(result)
    }

    /// The socket's write waits on the client: pending until the clock runs out, then an error.
    fn waiting<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} s", limit.as_secs()),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => this.progressed(result),
            Poll::Pending => this.waiting(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => this.progressed(result),
            Poll::Pending => this.waiting(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(result) => this.progressed(result),
            Poll::Pending => this.waiting(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_client_never_takes_gives_up_after_the_limit() {
        let (server, _client) = tokio::io::duplex(64);
        let mut socket = SendDeadline::with_limit(server, Duration::from_millis(100));
        let error = tokio::time::timeout(Duration::from_secs(30), socket.write_all(&[7; 1024]))
            .await
            .expect("the write gave up")
            .expect_err("the client read nothing");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_client_that_keeps_reading_is_never_cut_off() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut socket = SendDeadline::with_limit(server, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 16];
            while got.len() < 4096 {
                let n = client.read(&mut chunk).await.expect("a read");
                got.extend_from_slice(&chunk[..n]);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            got
        });
        // Many writes wait on the reader; none waits anywhere near the limit.
        socket.write_all(&[9; 4096]).await.expect("the write");
        socket.flush().await.expect("the flush");
        assert_eq!(reader.await.expect("the reader"), vec![9; 4096]);
    }
}
