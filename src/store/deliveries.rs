//! Each webhook's outbox (`webhook_deliveries`): filled from the event log by position, read by
//! the dispatcher one (webhook, VM) head at a time so each VM's events arrive in order, and
//! listed by `GET /webhooks/{id}/deliveries`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{feed, StoreError};
use crate::webhooks::EventSelection;

/// Where a delivery stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; the next attempt is due at `nextAttemptAt`.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed; the VM's next delivery went on.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// `webhook_deliveries.status` held a value this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("webhook_deliveries holds an unknown status '{0}'")]
pub struct UnknownStatus(String);

impl TryFrom<String> for DeliveryStatus {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or(UnknownStatus(value))
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub position: i64,
    pub vm_id: String,
    pub event_type: String,
    #[sqlx(try_from = "String")]
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The columns of a `DeliveryRow`.
const COLUMNS: &str = "id, webhook_id, position, vm_id, event_type, status, attempts,
    next_attempt_at, response_status, last_error, duration_ms, created_at, last_attempt_at,
    delivered_at";

/// One of a webhook's deliveries, locked until the transaction ends.
pub async fn locked(
    tx: &mut sqlx::PgConnection,
    webhook_id: &str,
    id: i64,
) -> Result<Option<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(webhook_id)
    .fetch_optional(tx)
    .await?)
}

/// Makes a delivery pending again, due now, with a fresh set of attempts; what the last attempt
/// came to stays until the next one.
pub async fn requeue(tx: &mut sqlx::PgConnection, id: i64) -> Result<DeliveryRow, StoreError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE webhook_deliveries
         SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_one(tx)
    .await?)
}

/// A webhook's deliveries, newest first, and how many match.
pub async fn list(
    pool: &PgPool,
    webhook_id: &str,
    status: Option<DeliveryStatus>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<DeliveryRow>, i64), StoreError> {
    let status = status.map(DeliveryStatus::as_str);
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries
         WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY id DESC OFFSET $3 LIMIT $4"
    ))
    .bind(webhook_id)
    .bind(status)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries
         WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)",
    )
    .bind(webhook_id)
    .bind(status)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// Deliveries still pending, over every webhook (for `/metrics`).
pub async fn pending(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?,
    )
}

/// An active webhook whose outbox is filled, and whose VMs' events it receives.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subscriber {
    pub id: String,
    pub owner_id: String,
    pub events: Vec<String>,
    pub cursor: i64,
    /// The owner's role reaches every VM (else only the owner's own).
    pub sees_all: bool,
}

/// Active webhooks of active users.
pub async fn subscribers(pool: &PgPool) -> Result<Vec<Subscriber>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT w.id, w.owner_id, w.events, w.cursor, r.scope = 'all' AS sees_all
         FROM webhooks w JOIN users u ON u.id = w.owner_id JOIN roles r ON r.id = u.role
         WHERE w.active AND u.status = 'active'",
    )
    .fetch_all(pool)
    .await?)
}

/// Reads up to `batch` events after the subscriber's cursor that it may see, and commits a
/// delivery for each matching one together with the new cursor, which it answers with how many
/// events were read (0: the subscriber is up to date). A cursor moved meanwhile (the webhook
/// changed) makes this a no-op answering 0; the next round reads again.
pub async fn fill(pool: &PgPool, sub: &Subscriber, batch: u32) -> Result<(usize, i64), StoreError> {
    // Webhooks carry VM events (their `events` filter names VM event types).
    let scope = feed::Scope {
        streams: feed::Streams::Vms,
        owner_id: (!sub.sees_all).then(|| sub.owner_id.clone()),
    };
    let rows = feed::after(pool, sub.cursor, batch, &scope).await?;
    let Some(last) = rows.last().map(|r| r.row.position) else {
        return Ok((0, sub.cursor));
    };
    let selection = EventSelection::parse(&sub.events).unwrap_or(EventSelection::Every);
    let matching: Vec<_> = rows
        .iter()
        .filter(|r| selection.matches(&r.row.event_type))
        .collect();
    let positions: Vec<i64> = matching.iter().map(|r| r.row.position).collect();
    let vms: Vec<String> = matching
        .iter()
        .map(|r| r.row.aggregate_id.clone())
        .collect();
    let types: Vec<String> = matching.iter().map(|r| r.row.event_type.clone()).collect();
    let mut tx = super::begin(pool).await?;
    let moved =
        sqlx::query("UPDATE webhooks SET cursor = $3 WHERE id = $1 AND cursor = $2 AND active")
            .bind(&sub.id)
            .bind(sub.cursor)
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if moved == 0 {
        return Ok((0, sub.cursor));
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, position, vm_id, event_type)
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])
         ON CONFLICT (webhook_id, position) DO NOTHING",
    )
    .bind(&sub.id)
    .bind(&positions)
    .bind(&vms)
    .bind(&types)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows.len(), last))
}

/// A delivery whose turn it is: the oldest one still pending of its (webhook, VM), due now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub webhook_id: String,
    pub vm_id: String,
    pub position: i64,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
}

/// Up to `limit` deliveries whose turn it is, the longest due first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Due>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT h.id, h.webhook_id, h.vm_id, h.position, h.attempts, w.url, w.secret
         FROM (SELECT DISTINCT ON (webhook_id, vm_id) id, webhook_id, vm_id, position, attempts,
                      next_attempt_at
               FROM webhook_deliveries WHERE status = 'pending'
               ORDER BY webhook_id, vm_id, position) h
         JOIN webhooks w ON w.id = h.webhook_id
         WHERE w.active AND h.next_attempt_at <= now()
         ORDER BY h.next_attempt_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    /// What the delivery becomes, and when it is tried again if it stays pending.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    RetryIn(Duration),
    GaveUp,
}

/// Records an attempt of a delivery still pending.
pub async fn record(pool: &PgPool, id: i64, attempt: &Attempt) -> Result<(), StoreError> {
    let (status, retry_ms) = match attempt.outcome {
        Outcome::Delivered => (DeliveryStatus::Delivered, 0),
        Outcome::RetryIn(after) => (
            DeliveryStatus::Pending,
            i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        ),
        Outcome::GaveUp => (DeliveryStatus::Failed, 0),
    };
    let duration_ms = i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE webhook_deliveries
         SET status = $2, attempts = attempts + 1, response_status = $3, last_error = $4,
             duration_ms = $5, last_attempt_at = now(),
             next_attempt_at = now() + make_interval(secs => $6::double precision / 1000),
             delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(attempt.response_status.map(i32::from))
    .bind(attempt.error.as_deref())
    .bind(duration_ms)
    .bind(retry_ms)
    .execute(pool)
    .await?;
    Ok(())
}
