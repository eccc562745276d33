//! Tells every node's listeners what a VM command changed (new events for the relay and the
//! webhook dispatcher, a job queued for the job dispatchers, a job ended for `/jobs/{id}/wait`),
//! with `NOTIFY` sent after the command committed, outside its transaction.
//!
//! Why not from a trigger, at commit: PostgreSQL serialises the commits of all transactions that
//! sent a notification (at commit such a transaction takes one lock for the whole cluster and
//! holds it through its WAL flush). A `NOTIFY` in every command's transaction was a global commit
//! lock: pgbench inserting one row per transaction at 64 connections committed 4.8x fewer per
//! second once a statement trigger on the table notified (21,891 against 4,578 tps, one run on
//! this project's 2-core machine). Here the notifications of many commits go out together, in a
//! statement of their own that writes nothing (so it has no WAL flush to hold that lock through).
//! The triggers still notify for the other streams (users, roles, configuration, webhooks,
//! images), whose writes are rare (`migrations/0018_notify_after_commit.sql`).
//!
//! A notification is only a hint that saves a wait: if the node dies between a commit and its
//! notification, every listener finds the change on its own timer (the relay within a second,
//! the job dispatchers within [`crate::actors::worker`]'s safety net, a `/jobs/{id}/wait` within a
//! second).

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::vm::{JobEffect, VmEvent};

/// New events are in the log (the relay, the webhook dispatcher).
pub const EVENTS: &str = "voidvm_events";
/// A job was queued; the payload is its id (the job dispatchers).
pub const JOB_QUEUED: &str = "voidvm_jobs";
/// A job ended; the payload is its id (`/jobs/{id}/wait`).
pub const JOB_ENDED: &str = "voidvm_job_done";

/// Notifications waiting to be sent; past this many, new ones are dropped (they are hints).
const QUEUE: usize = 65_536;

/// What one commit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    Events,
    JobQueued(String),
    JobEnded(String),
}

/// The sending side, held by whatever commits VM events.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Signal>,
}

/// The receiving side, run by [`run`].
pub struct Pending(mpsc::Receiver<Signal>);

impl Notifier {
    pub fn new() -> (Notifier, Pending) {
        let (queue, pending) = mpsc::channel(QUEUE);
        (Notifier { queue }, Pending(pending))
    }

    /// Called after `events` committed.
    pub fn committed(&self, events: &[VmEvent]) {
        for signal in signals(events) {
            if self.queue.try_send(signal).is_err() {
                tracing::debug!(
                    "a notification was dropped; listeners find the change on their timers"
                );
            }
        }
    }
}

/// What `events` tell the listeners.
fn signals(events: &[VmEvent]) -> Vec<Signal> {
    let mut signals = Vec::with_capacity(events.len() + 1);
    if !events.is_empty() {
        signals.push(Signal::Events);
    }
    for event in events {
        match event.job_effect() {
            Some(JobEffect::Opens { job_id, .. }) => signals.push(Signal::JobQueued(job_id.into())),
            Some(JobEffect::Closes { job_id, .. }) => signals.push(Signal::JobEnded(job_id.into())),
            Some(JobEffect::Concerns { .. }) | None => {}
        }
    }
    signals
}

/// A batch of signals as the channels and payloads of one statement, "new events" once.
fn batch(signals: Vec<Signal>) -> (Vec<&'static str>, Vec<String>) {
    let mut channels = Vec::with_capacity(signals.len());
    let mut payloads = Vec::with_capacity(signals.len());
    let mut events = false;
    for signal in signals {
        let (channel, payload) = match signal {
            Signal::Events if events => continue,
            Signal::Events => {
                events = true;
                (EVENTS, String::new())
            }
            Signal::JobQueued(id) => (JOB_QUEUED, id),
            Signal::JobEnded(id) => (JOB_ENDED, id),
        };
        channels.push(channel);
        payloads.push(payload);
    }
    (channels, payloads)
}

/// Sends what is pending, everything that came in meanwhile in one statement, until `shutdown`;
/// then sends what is left and ends.
pub async fn run(pool: PgPool, Pending(mut pending): Pending, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            first = pending.recv() => first,
            () = shutdown.cancelled() => None,
        };
        let mut signals: Vec<Signal> = first.into_iter().collect();
        while let Ok(more) = pending.try_recv() {
            signals.push(more);
        }
        if !signals.is_empty() {
            send(&pool, signals).await;
        }
        if shutdown.is_cancelled() || pending.is_closed() && pending.is_empty() {
            return;
        }
    }
}

async fn send(pool: &PgPool, signals: Vec<Signal>) {
    let (channels, payloads) = batch(signals);
    let sent = sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)")
        .bind(&channels)
        .bind(&payloads)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, count = channels.len(), "notifications could not be sent; listeners find the changes on their timers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(job_id: &str) -> VmEvent {
        VmEvent::StartRequested {
            job_id: job_id.into(),
        }
    }

    #[test]
    fn a_command_that_opens_a_job_tells_of_its_events_and_its_job() {
        assert_eq!(
            signals(&[started("j1")]),
            vec![Signal::Events, Signal::JobQueued("j1".into())]
        );
    }

    #[test]
    fn a_command_that_ends_a_job_tells_the_waiters() {
        let ended = VmEvent::VmProvisioned {
            job_id: "j2".into(),
        };
        assert_eq!(
            signals(&[ended]),
            vec![Signal::Events, Signal::JobEnded("j2".into())]
        );
    }

    #[test]
    fn no_events_tell_nothing() {
        assert!(signals(&[]).is_empty());
    }

    #[test]
    fn many_commits_tell_of_new_events_once_and_of_every_job() {
        let mut all = signals(&[started("a")]);
        all.extend(signals(&[started("b")]));
        let (channels, payloads) = batch(all);
        assert_eq!(channels, vec![EVENTS, JOB_QUEUED, JOB_QUEUED]);
        assert_eq!(payloads, vec!["", "a", "b"]);
    }
}
