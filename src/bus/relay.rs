//! The relay: publishes the event log to NATS in position order, at least once.
//!
//! It reads "everything after the last confirmed position" from PostgreSQL, publishes each event
//! to JetStream and waits for its acknowledgement before the next (so the stream's order is the
//! log's order, even across reconnects), then records the new confirmed position. A crash
//! between commit and publish, or NATS being away, only delays publication: the relay resumes
//! from its confirmed position, and JetStream drops what it already had by message id.
//!
//! One node relays at a time: the relay holds a PostgreSQL session lock while it runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::message::PublishMessage;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::message::FeedEvent;
use super::subjects::POSITION_HEADER;
use super::Bus;
use crate::store::feed;

/// The offset row this relay keeps in `relay_offsets`.
const OFFSET_NAME: &str = "nats";
/// "voidvm-relay" as a lock key.
const LEADER_LOCK: i64 = 0x766f_6964_7265_6c;
/// How long to wait for a wake-up before looking at the log anyway.
const POLL: Duration = Duration::from_secs(1);

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
    Unexpected(#[from] anyhow::Error),
}

pub struct Relay {
    pool: PgPool,
    bus: Bus,
    batch: u32,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(pool: PgPool, bus: Bus, batch: u32, wake: Arc<Notify>) -> Relay {
        Relay {
            pool,
            bus,
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
                    tracing::warn!(error = ?e, "the relay could not take its lock");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            tracing::info!("this node relays the event log to NATS");
            if let Err(e) = self.relay(&mut leader, &mut backoff).await {
                tracing::warn!(error = ?anyhow::Error::new(e), "the relay stopped; it will resume from its last confirmed position");
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
            .listen("voidvm_events")
            .await
            .context("the relay could not LISTEN")?;
        let mut confirmed = feed::offset(&self.pool, OFFSET_NAME).await?;
        let mut stream_ready = false;
        loop {
            if !stream_ready {
                if let Err(e) = self.bus.ensure_stream().await {
                    tracing::warn!(error = ?anyhow::Error::new(e), "NATS is not ready; events wait in the log");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
                stream_ready = true;
            }
            let rows = feed::after(&self.pool, confirmed, self.batch, &feed::Scope::default()).await?;
            if rows.is_empty() {
                // Still the leader? (A lost lock connection means another node may take over.)
                sqlx::query("SELECT 1")
                    .execute(&mut *leader)
                    .await
                    .context("the relay lost its lock connection")?;
                tokio::select! {
                    n = listener.recv() => { n.context("the relay's listener failed")?; }
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let mut published = confirmed;
            for row in &rows {
                let event = FeedEvent::from_row(row);
                match self.publish(&event).await {
                    Ok(()) => published = event.position,
                    Err(e) => {
                        tracing::warn!(error = ?anyhow::Error::new(e), "publishing paused; retrying from the last confirmed position");
                        stream_ready = false;
                        break;
                    }
                }
            }
            if published > confirmed {
                feed::confirm(&self.pool, OFFSET_NAME, published).await?;
                tracing::debug!(from = confirmed, to = published, "events relayed");
                confirmed = published;
                backoff.reset();
            }
            if !stream_ready {
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }

    async fn publish(&self, event: &FeedEvent) -> Result<(), RelayError> {
        let position = event.position;
        let subjects = &self.bus.subjects;
        let fail = |source: async_nats::Error| RelayError::Publish { position, source };
        let message = PublishMessage::build()
            .payload(event.to_bytes())
            .message_id(format!("e{position}"))
            .header(POSITION_HEADER, position.to_string().as_str());
        self.bus
            .jetstream
            .send_publish(subjects.event(&event.vm_id, &event.event_type), message)
            .await
            .map_err(|e| fail(e.into()))?
            .await
            .map_err(|e| fail(e.into()))?;
        if let Some(job) = &event.job {
            let payload = job.to_json(&event.vm_id, position).to_string();
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("j{position}"))
                .header(POSITION_HEADER, position.to_string().as_str());
            self.bus
                .jetstream
                .send_publish(subjects.job(&event.vm_id, &job.job_id), message)
                .await
                .map_err(|e| fail(e.into()))?
                .await
                .map_err(|e| fail(e.into()))?;
        }
        Ok(())
    }
}

/// 100 ms doubling to 5 s.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_millis(100 * 2u64.saturating_pow(self.0)).min(Duration::from_secs(5));
        self.0 = self.0.saturating_add(1);
        d
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}
