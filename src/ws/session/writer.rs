//! A connection's outgoing side: frames wait in a bounded queue for one writer task, the only
//! one that waits on the socket. A client that leaves the queue full for `slow_after_ms` ends
//! its connection as too slow (with the position to resume from), and nobody else waits for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix_ws::{CloseReason, Session};
use bytestring::ByteString;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{Connection, End};
use crate::app::AppState;

pub(super) enum Out {
    /// A frame, and the log position it carries.
    Text(ByteString, Option<i64>),
    Ping,
    Pong(bytes::Bytes),
    Close(CloseReason),
}

/// The task that writes queued frames to the socket; it is the only one that waits on it.
pub(super) fn start_writer(
    state: &AppState,
    mut session: Session,
) -> (Writer, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Out>(state.settings.ws.send_queue);
    let written = Arc::new(AtomicI64::new(-1));
    let progress = written.clone();
    let writer = actix_web::rt::spawn(async move {
        while let Some(out) = rx.recv().await {
            let sent = match out {
                Out::Text(text, position) => {
                    let sent = session.text(text).await;
                    if let (Ok(()), Some(p)) = (&sent, position) {
                        progress.store(p, Ordering::SeqCst);
                    }
                    sent
                }
                Out::Ping => session.ping(b"").await,
                Out::Pong(bytes) => session.pong(&bytes).await,
                Out::Close(reason) => {
                    let _ = session.close(Some(reason)).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    (Writer { tx, written }, writer)
}

/// The queue to a connection's writer task, and how far the writer got.
pub(super) struct Writer {
    pub(super) tx: mpsc::Sender<Out>,
    pub(super) written: Arc<AtomicI64>,
}

impl Connection {
    /// The position a cut-off client can resume from: the last one it was sent.
    pub(super) fn resume_position(&self) -> Option<i64> {
        Some(self.written.load(Ordering::SeqCst)).filter(|p| *p >= 0)
    }

    /// Queues a frame that does not come from the log.
    pub(super) async fn send(&self, text: impl Into<ByteString>) -> Result<(), End> {
        self.send_at(text.into(), None).await
    }

    /// Queues a frame; waits at most `slow_after` for room.
    pub(super) async fn send_at(&self, text: ByteString, position: Option<i64>) -> Result<(), End> {
        match self.out.try_send(Out::Text(text, position)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(End::Gone),
            Err(TrySendError::Full(out)) => {
                match tokio::time::timeout(self.slow_after, self.out.send(out)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(End::Gone),
                    Err(_) => Err(End::Slow(match self.resume_position() {
                        Some(p) => {
                            format!("too slow: the send queue stayed full; resume with since={p}")
                        }
                        None => "too slow: the send queue stayed full".to_string(),
                    })),
                }
            }
        }
    }
}
