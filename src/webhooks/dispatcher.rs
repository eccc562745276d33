//! Sends webhook deliveries. One node at a time dispatches (it holds a PostgreSQL session lock,
//! like the relay). Each round it fills every active webhook's outbox from the log
//! ([`deliveries::fill`]), then sends the deliveries whose turn it is: the oldest pending one of
//! each (webhook, VM), so a VM's events arrive in order while other VMs' go on. A failed attempt
//! is tried again after a doubling wait; after `max_attempts` it is marked failed and the VM's
//! next delivery goes. Waiting for a receiver holds no lock and no other VM's delivery.
//!
//! At least once: a delivery is marked delivered only after its receiver answered 2xx, so an
//! attempt cut short by a crash is sent again by whichever node dispatches next.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::FutureExt as _;
use serde_json::json;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::signature::{
    sign, DELIVERY_HEADER, EVENT_HEADER, POSITION_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use super::transport::{Request, Transport};
use crate::config::WebhookSettings;
use crate::store::deliveries::{self, Attempt, Due, Outcome};

/// "voidvm-webhooks" as a lock key.
const LEADER_LOCK: i64 = 0x0076_6f69_6477_6862;
/// Events read into an outbox per webhook per statement.
const FILL_BATCH: u32 = 500;
/// How often due retries are looked for when nothing wakes the dispatcher.
const TICK: Duration = Duration::from_millis(200);
/// The least time between two rounds: under a steady stream of commits (each one wakes the
/// dispatcher) a round reads everything committed since the last, so rounds need not follow
/// every commit; this bounds the dispatcher's queries to a few dozen a second.
const MIN_ROUND: Duration = Duration::from_millis(50);

pub struct Dispatcher {
    pool: PgPool,
    transport: Arc<dyn Transport>,
    settings: WebhookSettings,
}

/// Which (webhook, VM) has an attempt in flight: never two at once.
type Key = (String, String);

impl Dispatcher {
    pub fn new(pool: PgPool, transport: Arc<dyn Transport>, settings: WebhookSettings) -> Self {
        Dispatcher {
            pool,
            transport,
            settings,
        }
    }

    /// A dispatcher sending over HTTP, as the settings say.
    pub fn over_http(pool: PgPool, settings: &WebhookSettings) -> anyhow::Result<Self> {
        let transport = crate::webhooks::transport::HttpTransport::new(
            std::time::Duration::from_millis(settings.timeout_ms),
            settings.allow_private,
        )?;
        Ok(Dispatcher::new(pool, Arc::new(transport), settings.clone()))
    }

    /// Dispatches until `shutdown`; attempts in flight then are sent again later.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = self.run_forever() => {}
            () = shutdown.cancelled() => tracing::debug!("webhook dispatcher stopped"),
        }
    }

    async fn run_forever(&self) {
        loop {
            match self.become_leader().await {
                Ok(Some(mut leader)) => {
                    tracing::info!("this node sends webhook deliveries");
                    if let Err(e) = self.dispatch(&mut leader).await {
                        tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "webhook dispatching stopped; it resumes from the outbox");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "the webhook dispatcher could not take its lock");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn become_leader(&self) -> anyhow::Result<Option<PgConnection>> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options())
            .await
            .context("the webhook dispatcher's lock connection failed")?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .context("the webhook lock could not be asked for")?;
        Ok(got.then_some(conn))
    }

    async fn dispatch(&self, leader: &mut PgConnection) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("the webhook dispatcher's listener could not connect")?;
        listener
            .listen(crate::notifier::EVENTS)
            .await
            .context("the webhook dispatcher could not LISTEN")?;
        let mut in_flight: HashSet<Key> = HashSet::new();
        let mut attempts: JoinSet<Key> = JoinSet::new();
        let mut checked = Instant::now();
        loop {
            let round = Instant::now();
            self.fill().await?;
            self.send_due(&mut in_flight, &mut attempts).await?;
            if checked.elapsed() > Duration::from_secs(1) {
                // Still the leader? A lost lock connection means another node may take over.
                sqlx::query("SELECT 1")
                    .execute(&mut *leader)
                    .await
                    .context("the webhook dispatcher lost its lock connection")?;
                checked = Instant::now();
            }
            tokio::select! {
                n = listener.recv() => { n.context("the webhook dispatcher's listener failed")?; }
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    if let Ok(key) = done {
                        in_flight.remove(&key);
                    } else {
                        // A panicked attempt: forget every key whose task is gone.
                        in_flight.clear();
                        attempts.abort_all();
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
            if let Some(rest) = MIN_ROUND.checked_sub(round.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            // Commits notified meanwhile are read by the next round anyway.
            while let Some(n) = listener.recv().now_or_never() {
                n.context("the webhook dispatcher's listener failed")?;
            }
        }
    }

    /// Brings every active webhook's outbox up to the log's visible end.
    async fn fill(&self) -> anyhow::Result<()> {
        for mut sub in deliveries::subscribers(&self.pool)
            .await
            .context("the webhooks could not be read")?
        {
            loop {
                let (read, cursor) = deliveries::fill(&self.pool, &sub, FILL_BATCH)
                    .await
                    .with_context(|| {
                        format!("the outbox of webhook {} could not be filled", sub.id)
                    })?;
                if read < FILL_BATCH as usize {
                    break;
                }
                sub.cursor = cursor;
            }
        }
        Ok(())
    }

    async fn send_due(
        &self,
        in_flight: &mut HashSet<Key>,
        attempts: &mut JoinSet<Key>,
    ) -> anyhow::Result<()> {
        let room = self.settings.concurrency.saturating_sub(in_flight.len());
        if room == 0 {
            return Ok(());
        }
        let limit = i64::try_from(room + in_flight.len()).unwrap_or(i64::MAX);
        let due = deliveries::due(&self.pool, limit)
            .await
            .context("the deliveries due could not be read")?;
        let mut started = 0;
        for delivery in due {
            let key = (delivery.webhook_id.clone(), delivery.vm_id.clone());
            if started == room || !in_flight.insert(key.clone()) {
                continue;
            }
            started += 1;
            let pool = self.pool.clone();
            let transport = self.transport.clone();
            let settings = self.settings.clone();
            let span = tracing::debug_span!("webhook_delivery", webhook_id = %delivery.webhook_id, vm_id = %delivery.vm_id, delivery_id = delivery.id);
            attempts.spawn(
                async move {
                    if let Err(e) = attempt(&pool, transport.as_ref(), &settings, &delivery).await
                    {
                        tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "a webhook delivery could not be recorded; it is sent again");
                    }
                    key
                }
                .instrument(span),
            );
        }
        Ok(())
    }
}

/// Sends one delivery and records what came of it.
async fn attempt(
    pool: &PgPool,
    transport: &dyn Transport,
    settings: &WebhookSettings,
    delivery: &Due,
) -> anyhow::Result<()> {
    let Some(event) = crate::store::log_identity::event_at(pool, delivery.position).await? else {
        let gone = Attempt {
            response_status: None,
            error: Some(format!(
                "the event at position {} is not in the log",
                delivery.position
            )),
            duration: Duration::ZERO,
            outcome: Outcome::GaveUp,
        };
        deliveries::record(pool, delivery.id, &gone).await?;
        return Ok(());
    };
    let number = delivery.attempts.saturating_add(1);
    let body = json!({
        "id": delivery.id,
        "webhookId": delivery.webhook_id,
        "attempt": number,
        "event": event.entry(),
    })
    .to_string()
    .into_bytes();
    let timestamp = chrono::Utc::now().timestamp();
    let request = Request {
        url: delivery.url.clone(),
        headers: vec![
            (SIGNATURE_HEADER, sign(&delivery.secret, timestamp, &body)),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (EVENT_HEADER, event.event_type.clone()),
            (DELIVERY_HEADER, delivery.id.to_string()),
            (POSITION_HEADER, delivery.position.to_string()),
        ],
        body,
    };
    let started = Instant::now();
    let answer = transport.post(request).await;
    let duration = started.elapsed();
    let number = u32::try_from(number).unwrap_or(u32::MAX);
    let record = judge(answer, number, settings, duration);
    tracing::debug!(status = ?record.response_status, error = ?record.error, outcome = ?record.outcome, "webhook delivery attempted");
    deliveries::record(pool, delivery.id, &record).await?;
    Ok(())
}

/// What an answer makes of attempt `number`: delivered on 2xx; otherwise retried after a
/// doubling wait, until `max_attempts`.
pub fn judge(
    answer: Result<u16, super::transport::TransportError>,
    number: u32,
    settings: &WebhookSettings,
    duration: Duration,
) -> Attempt {
    let (response_status, error) = match answer {
        Ok(status) if (200..300).contains(&status) => {
            return Attempt {
                response_status: Some(status),
                error: None,
                duration,
                outcome: Outcome::Delivered,
            }
        }
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    let outcome = if number >= settings.max_attempts {
        Outcome::GaveUp
    } else {
        Outcome::RetryIn(backoff(number, settings))
    };
    Attempt {
        response_status,
        error,
        duration,
        outcome,
    }
}

/// The wait after failed attempt `number` (1, 2, ...): the base, doubling, at most the maximum.
pub fn backoff(number: u32, settings: &WebhookSettings) -> Duration {
    let doubled = settings
        .backoff_base_ms
        .saturating_mul(2u64.saturating_pow(number.saturating_sub(1)));
    Duration::from_millis(doubled.min(settings.backoff_max_ms))
}
