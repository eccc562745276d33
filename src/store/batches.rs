//! The one way this node sends work to PostgreSQL in batches (VM reads, VM loads, one-statement
//! commits): what queued up since the last statement of that kind was sent (while the task
//! waited for its thread, or for one of the statements in flight to answer) goes as one.
//!
//! Under load most of what PostgreSQL spends on a small statement is per statement, not per row
//! (the round trip, parse and executor start, for a write the commit and its WAL flush). Sending
//! what queued up behind the statements in flight as one makes that cost per batch, so
//! PostgreSQL's CPU per request falls as load rises, while a request alone still goes out at once
//! (no timer, no waiting for company).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::StoreError;

/// Requests of one kind, sent in batches by a task that starts with the first request, on the
/// runtime of its caller (where the pool's connections live), and ends with that runtime.
/// (Sending them from a thread of their own was measured slower on 2 cores: README, Benchmarks,
/// "Tried and dropped: the commits and loads sent from a thread of their own".)
pub struct Batches<T> {
    queue: OnceLock<mpsc::UnboundedSender<T>>,
}

impl<T: Send + 'static> Batches<T> {
    pub fn new() -> Batches<T> {
        Batches {
            queue: OnceLock::new(),
        }
    }

    /// Queues `request`, starting the task with `start` if it has not started; the request back
    /// when the task's runtime is stopping (the caller then does it alone).
    pub fn send<S>(&self, request: T, start: S) -> Result<(), T>
    where
        S: FnOnce(mpsc::UnboundedReceiver<T>),
    {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            start(receiver);
            sender
        });
        queue.send(request).map_err(|mpsc::error::SendError(r)| r)
    }
}

/// A request for what `key` names, answered on `reply`.
pub struct Keyed<K, A> {
    pub key: K,
    pub reply: oneshot::Sender<A>,
}

impl<K: Send + 'static, A: Send + 'static> Batches<Keyed<K, A>> {
    /// Asks for `key`, alone or with others (see [`Batches::send`]); `None` when the task's
    /// runtime is stopping or ended before it answered: the caller then asks alone.
    pub async fn ask<S>(&self, key: K, start: S) -> Option<A>
    where
        S: FnOnce(mpsc::UnboundedReceiver<Keyed<K, A>>),
    {
        let (reply, answer) = oneshot::channel();
        self.send(Keyed { key, reply }, start).ok()?;
        answer.await.ok()
    }
}

impl<T: Send + 'static> Default for Batches<T> {
    fn default() -> Self {
        Batches::new()
    }
}

/// What one batch is: the first request and those queued behind it, as `gather` takes them;
/// `gather` may hold one back to go first in the next batch.
pub trait Gather<T>: FnMut(T, &mut mpsc::UnboundedReceiver<T>) -> (Vec<T>, Option<T>) {}
impl<T, F: FnMut(T, &mut mpsc::UnboundedReceiver<T>) -> (Vec<T>, Option<T>)> Gather<T> for F {}

/// Up to `max` requests: the first and those queued behind it.
pub fn up_to<T>(max: usize) -> impl Gather<T> {
    move |first, queue| {
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        (batch, None)
    }
}

/// Takes the requests that queued while the batches in flight ran and sends them with `run`,
/// at most `in_flight` batches at once, until every sender is gone.
pub async fn serve<T, G, R, F>(
    mut queue: mpsc::UnboundedReceiver<T>,
    in_flight: usize,
    mut gather: G,
    run: R,
) where
    T: Send + 'static,
    G: Gather<T>,
    R: Fn(Vec<T>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let mut held: Option<T> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(request) => request,
            None => match queue.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let (batch, next) = gather(first, &mut queue);
        held = next;
        if batch.is_empty() {
            continue;
        }
        let sent = run(batch);
        tokio::spawn(async move {
            sent.await;
            drop(permit);
        });
    }
}

/// Answers every request of a batch whose statement failed with `error`: the first gets the
/// error itself, the others a copy of the same kind.
pub fn fail_all<X>(
    error: StoreError,
    replies: impl IntoIterator<Item = oneshot::Sender<Result<X, StoreError>>>,
) {
    let message = format!("{error:#}");
    let copy = |error: &StoreError| match error {
        StoreError::Unavailable(_) => StoreError::Unavailable(message.clone().into()),
        StoreError::Conflict => StoreError::Conflict,
        _ => StoreError::Unexpected(anyhow::anyhow!("{message}")),
    };
    let mut replies = replies.into_iter();
    let first = replies.next();
    for reply in replies {
        let _ = reply.send(Err(copy(&error)));
    }
    if let Some(reply) = first {
        let _ = reply.send(Err(error));
    }
}
