//! The relay: publishes the event log to NATS in position order, at least once.
//!
//! It reads "everything after the last confirmed position" of the VM and image streams from
//! PostgreSQL and publishes a batch
//! to JetStream without waiting between messages. Each message expects the stream's previous
//! sequence, so a message lost in flight (a reconnect, an outage) makes every later one be
//! refused instead of stored out of order: the stream's order is always the log's order. After
//! a failure the relay reads the stream's last message to learn how far it got, and goes on from
//! there. A crash between commit and publish, or NATS being away, only delays publication.
//!
//! One node relays at a time: the relay holds a PostgreSQL session lock while it runs. It relays
//! only to a stream that carries its own log (`ownership`): never to another database's stream,
//! nor to one ahead of its log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::message::PublishMessage;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::message::{FeedStream, Outgoing};
use super::ownership::{CheckError, StreamOwner};
use super::subjects::{LOG_HEADER, POSITION_HEADER};
use super::Bus;
use crate::store::feed;

/// The offset row this relay keeps in `relay_offsets`.
pub const OFFSET_NAME: &str = "nats";
/// "voidvm-relay" as a lock key.
const LEADER_LOCK: i64 = 0x0076_6f69_6472_656c;
/// How long to wait for a wake-up before looking at the log anyway.
const POLL: Duration = Duration::from_secs(1);
/// How often, at most, the relay records its offset (a write and a WAL flush each time), and
/// asks whether its lock connection still stands. Under load the relay catches up many times a
/// second, one commit behind; recording at every catch-up cost a write per round. Once it is
/// idle it records within this time. The offset is only where a relay resumes when the stream's
/// last message has aged out (see `sync`): the stream's last message says exactly how far
/// publication got.
const CONFIRM_EVERY: Duration = Duration::from_millis(250);
/// How often a relay refused by its stream looks again whether an operator acted.
pub const RECHECK: Duration = Duration::from_secs(1);
/// A round that found at least [`BUSY`] events (and not a full batch) makes the next one wait
/// until this long after its own start. Under load the rounds came back to back, each a bound
/// and a read for a few dozen events: at about 4,500 commands a second, some 150 rounds a
/// second and a quarter of PostgreSQL's time on the node's statements
/// (`benches/command_load.rs`). A lone commit, or a few, are still relayed at once.
const PACE: Duration = Duration::from_millis(20);
/// See [`PACE`].
const BUSY: usize = 8;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the event log could not be read or the offset written")]
    Store(#[from] crate::store::StoreError),
    #[error("NATS did not accept the event at position {position}")]
    Publish {
        position: i64,
        #[source]
        source: async_nats::Error,
    },
    #[error(transparent)]
    Stream(#[from] CheckError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub struct Relay {
    pool: PgPool,
    bus: Bus,
    owner: Arc<StreamOwner>,
    batch: u32,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        bus: Bus,
        owner: Arc<StreamOwner>,
        batch: u32,
        wake: Arc<Notify>,
    ) -> Relay {
        Relay {
            pool,
            bus,
            owner,
            batch,
            wake,
        }
    }

    /// Relays until `shutdown`; every failure is logged and retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = self.run_forever() => {}
            () = shutdown.cancelled() => tracing::debug!("relay stopped"),
        }
    }

    async fn run_forever(&self) {
        let mut backoff = Backoff::default();
        loop {
            let mut leader = match self.become_leader().await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "the relay could not take its lock");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            tracing::info!("this node relays the event log to NATS");
            if let Err(e) = self.relay(&mut leader, &mut backoff).await {
                tracing::warn!(error = %crate::telemetry::chain(&e), "the relay stopped; it will resume from its last confirmed position");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }

    async fn become_leader(&self) -> anyhow::Result<Option<PgConnection>> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options())
            .await
            .context("the relay's lock connection failed")?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .context("the relay lock could not be asked for")?;
        Ok(got.then_some(conn))
    }

    async fn relay(
        &self,
        leader: &mut PgConnection,
        backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("the relay's listener could not connect")?;
        listener
            .listen(crate::notifier::EVENTS)
            .await
            .context("the relay could not LISTEN")?;
        let mut synced: Option<Synced> = None;
        // The offset last recorded, and when.
        let mut recorded: Option<(i64, Instant)> = None;
        let mut lock_checked = Instant::now();
        loop {
            let mut at = match synced.take() {
                Some(at) => at,
                None => match self.sync().await {
                    Ok(at) => at,
                    // Said once, plainly, by the owner check; look again until an operator acts.
                    Err(RelayError::Stream(CheckError::Conflict(_))) => {
                        tokio::time::sleep(RECHECK).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "NATS is not ready; events wait in the log");
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    }
                },
            };
            let round = Instant::now();
            let rows = feed::after(
                &self.pool,
                at.confirmed,
                self.batch,
                &feed::Scope::default(),
            )
            .await?;
            if rows.is_empty() {
                // Caught up: record the offset, unless it was recorded a moment ago (then
                // wait at most until it may be recorded again).
                let mut idle = POLL;
                match recorded {
                    Some((offset, _)) if offset >= at.confirmed => {}
                    Some((_, when)) if when.elapsed() < CONFIRM_EVERY => {
                        idle = CONFIRM_EVERY.saturating_sub(when.elapsed());
                    }
                    _ => {
                        feed::confirm(&self.pool, OFFSET_NAME, at.confirmed).await?;
                        recorded = Some((at.confirmed, Instant::now()));
                    }
                }
                // Still the leader? (A lost lock connection means another node may take over.)
                if lock_checked.elapsed() >= CONFIRM_EVERY {
                    sqlx::query("SELECT 1")
                        .execute(&mut *leader)
                        .await
                        .context("the relay lost its lock connection")?;
                    lock_checked = Instant::now();
                }
                synced = Some(at);
                tokio::select! {
                    n = listener.recv() => { n.context("the relay's listener failed")?; }
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                continue;
            }
            let events = rows
                .iter()
                .map(Outgoing::from_row)
                .collect::<Result<Vec<_>, _>>()
                .context("the feed read an event it cannot relay")?;
            let before = at.confirmed;
            match self.publish_batch(&mut at, &events).await {
                Ok(()) => synced = Some(at),
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "publishing paused; resuming from what NATS holds");
                }
            }
            if at.confirmed > before {
                if recorded.is_none_or(|(_, when)| when.elapsed() >= CONFIRM_EVERY) {
                    feed::confirm(&self.pool, OFFSET_NAME, at.confirmed).await?;
                    recorded = Some((at.confirmed, Instant::now()));
                }
                tracing::debug!(from = before, to = at.confirmed, "events relayed");
                backoff.reset();
            }
            if synced.is_none() {
                tokio::time::sleep(backoff.next()).await;
            } else if let Some(rest) = pace(rows.len(), self.batch, round.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }

    /// Where publication stands: the stream's last sequence and the last position it holds
    /// completely. The stream only ever grows in log order (every message expects the stream's
    /// last sequence), so its last message says exactly how far the relay got, whatever was lost
    /// in flight.
    async fn sync(&self) -> Result<Synced, RelayError> {
        let mut stream = self.owner.check().await?;
        let last_sequence = stream
            .info()
            .await
            .map_err(|e| RelayError::Unexpected(anyhow::Error::new(e).context("stream info")))?
            .state
            .last_sequence;
        let mut at = Synced {
            last_sequence,
            confirmed: feed::offset(&self.pool, OFFSET_NAME).await?,
            job_sent_for: None,
        };
        if last_sequence == 0 {
            // A new stream (or one an operator reset) holds none of the log yet.
            at.confirmed = 0;
            return Ok(at);
        }
        // A message that has aged out leaves only the offset in PostgreSQL to go by.
        if let Ok(last) = stream.get_raw_message(last_sequence).await {
            let position = last
                .headers
                .get(POSITION_HEADER)
                .and_then(|v| v.as_str().parse::<i64>().ok());
            if let Some(position) = position {
                if last
                    .subject
                    .as_str()
                    .starts_with(&self.bus.subjects.all_jobs().replace('>', ""))
                {
                    // The job message goes first; its event did not make it.
                    if position > at.confirmed {
                        at.confirmed = position - 1;
                        at.job_sent_for = Some(position);
                    }
                } else if position > at.confirmed {
                    at.confirmed = position;
                }
            }
        }
        Ok(at)
    }

    /// Publishes `events` without waiting between messages; each expects the stream's previous
    /// sequence, so after a lost message every later one is refused rather than stored out of
    /// order.
    async fn publish_batch(&self, at: &mut Synced, events: &[Outgoing]) -> Result<(), RelayError> {
        let subjects = &self.bus.subjects;
        let mut pending = Vec::with_capacity(events.len() * 2);
        let mut sequence = at.last_sequence;
        let mut failure = None;
        let log = self.bus.log.to_string();
        for event in events {
            let position = event.position;
            let mut messages = Vec::with_capacity(2);
            let id = &event.stream_id;
            if at.job_sent_for != Some(position) {
                if let (Some(job), Some(payload)) = (&event.job, event.job_message()) {
                    let subject = match event.stream {
                        FeedStream::Vm => subjects.job(id, &job.job_id),
                        FeedStream::Image => subjects.image_job(id, &job.job_id),
                    };
                    messages.push((false, subject, payload, format!("j{position}")));
                }
            }
            messages.push((
                true,
                match event.stream {
                    FeedStream::Vm => subjects.event(id, &event.event_type),
                    FeedStream::Image => subjects.image_event(id, &event.event_type),
                },
                event.bytes.clone(),
                format!("e{position}"),
            ));
            for (is_event, subject, payload, id) in messages {
                let message = PublishMessage::build()
                    .payload(payload)
                    .message_id(id)
                    .header(POSITION_HEADER, position.to_string().as_str())
                    .header(LOG_HEADER, log.as_str())
                    .expected_last_sequence(sequence);
                match self.bus.jetstream.send_publish(subject, message).await {
                    Ok(ack) => {
                        sequence += 1;
                        pending.push((position, is_event, ack));
                    }
                    Err(e) => {
                        failure = Some(RelayError::Publish {
                            position,
                            source: e.into(),
                        });
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        at.job_sent_for = None;
        for (position, is_event, ack) in pending {
            match ack.await {
                Ok(ack) => {
                    at.last_sequence = ack.sequence;
                    if is_event {
                        at.confirmed = position;
                    }
                }
                Err(e) => {
                    return Err(RelayError::Publish {
                        position,
                        source: e.into(),
                    })
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// How long to wait before the next round, after one that read `read` events of at most
/// `batch` and has taken `took` so far (see [`PACE`]): a full batch means a backlog, read on at
/// once.
fn pace(read: usize, batch: u32, took: Duration) -> Option<Duration> {
    let full = u32::try_from(read).map_or(true, |read| read >= batch);
    if read < BUSY || full {
        return None;
    }
    PACE.checked_sub(took).filter(|rest| !rest.is_zero())
}

/// How far publication got.
#[derive(Debug, Clone, Copy)]
struct Synced {
    last_sequence: u64,
    /// Every event up to here is in the stream, with its job message.
    confirmed: i64,
    /// The job message of this position is in the stream already (its event is not).
    job_sent_for: Option<i64>,
}

/// 100 ms doubling to 5 s.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d =
            Duration::from_millis(100 * 2u64.saturating_pow(self.0)).min(Duration::from_secs(5));
        self.0 = self.0.saturating_add(1);
        d
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_of_a_few_events_is_followed_at_once() {
        assert_eq!(pace(0, 256, Duration::ZERO), None);
        assert_eq!(pace(BUSY - 1, 256, Duration::from_millis(1)), None);
    }

    #[test]
    fn a_busy_round_makes_the_next_wait_for_the_rest_of_the_pace() {
        assert_eq!(
            pace(BUSY, 256, Duration::from_millis(5)),
            Some(PACE - Duration::from_millis(5))
        );
    }

    #[test]
    fn a_full_batch_is_a_backlog_read_on_at_once() {
        assert_eq!(pace(256, 256, Duration::from_millis(1)), None);
    }

    #[test]
    fn a_round_that_took_the_pace_already_is_followed_at_once() {
        assert_eq!(pace(BUSY * 4, 256, PACE), None);
        assert_eq!(pace(BUSY * 4, 256, PACE * 2), None);
    }
}
