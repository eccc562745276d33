//! Records webhook commands: the webhook's event and its row in `webhooks` in the caller's
//! transaction (which also holds the request's idempotency key and answer), with the row locked
//! while the decision is made. The secret is written to the row only; the
//! event records that one was set or changed. Also the reads `/webhooks` answers from.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::append::{append, stored, Stored, Stream};
use super::deliveries::{self, DeliveryRow, DeliveryStatus};
use super::{feed, CommandMeta, StoreError};
use crate::webhooks::{Secret, Webhook, WebhookChange, WebhookCommand, WebhookError, WebhookEvent};

/// Why a delivery was not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedeliveryRefused {
    #[error("the webhook has no delivery {0}")]
    NoSuchDelivery(i64),
    #[error("the delivery is still pending")]
    StillPending,
}

/// Why a webhook change was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum WebhookWriteError {
    #[error(transparent)]
    Refused(#[from] WebhookError),
    #[error(transparent)]
    Redelivery(#[from] RedeliveryRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WebhookWriteError {
    fn from(e: sqlx::Error) -> Self {
        WebhookWriteError::Store(e.into())
    }
}

/// A webhook as `/webhooks` shows it, with how its deliveries stand.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub cursor: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

const SELECT: &str = "SELECT w.id, w.owner_id, u.username AS owner_name, w.url, w.events, w.active,
        w.cursor, w.version, w.created_at, w.updated_at,
        (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending') AS pending,
        (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'delivered') AS delivered,
        (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'failed') AS failed
     FROM webhooks w LEFT JOIN users u ON u.id = w.owner_id";

pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: &str,
) -> Result<Option<WebhookRow>, StoreError> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE w.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Every webhook, or `owner`'s, oldest first.
pub async fn list(pool: &PgPool, owner: Option<&str>) -> Result<Vec<WebhookRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE $1::text IS NULL OR w.owner_id = $1 ORDER BY w.created_at, w.id"
    ))
    .bind(owner)
    .fetch_all(pool)
    .await?)
}

fn events(events: &[WebhookEvent]) -> Result<Vec<Stored>, StoreError> {
    events
        .iter()
        .map(|e| stored(e.type_name(), e.version(), e))
        .collect()
}

/// Records a new webhook that receives the events committed from now on.
pub async fn create(
    pool: &PgPool,
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    command: WebhookCommand,
    secret: &Secret,
) -> Result<WebhookRow, WebhookWriteError> {
    let decided = Webhook::default().decide(command)?;
    let mut state = Webhook::default();
    for e in &decided {
        state.apply(e.clone());
    }
    // Deliveries start after what is committed now.
    let cursor = feed::head(pool).await?;
    let version = append(tx, Stream::Webhook, id, 0, &events(&decided)?, meta).await?;
    sqlx::query(
        "INSERT INTO webhooks (id, owner_id, url, events, secret, active, cursor, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&state.owner_id)
    .bind(&state.url)
    .bind(&state.events)
    .bind(secret.expose())
    .bind(state.active)
    .bind(cursor)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    get(&mut *tx, id)
        .await?
        .ok_or(WebhookWriteError::Refused(WebhookError::NotFound))
}

/// The webhook's row, locked until the transaction ends.
async fn locked(tx: &mut PgConnection, id: &str) -> Result<Option<(Webhook, i64)>, StoreError> {
    let row: Option<(String, String, Vec<String>, bool, i64)> = sqlx::query_as(
        "SELECT owner_id, url, events, active, version FROM webhooks WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|(owner_id, url, events, active, version)| {
        (
            Webhook {
                owner_id,
                url,
                events,
                active,
                exists: true,
            },
            version,
        )
    }))
}

/// Changes a webhook. A webhook made active again receives the events committed from then on,
/// not those of the time it was inactive.
pub async fn change(
    pool: &PgPool,
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    change: WebhookChange,
    secret: Option<&Secret>,
) -> Result<WebhookRow, WebhookWriteError> {
    let head = feed::head(pool).await?;
    let (mut state, version) = locked(tx, id).await?.ok_or(WebhookError::NotFound)?;
    let was_active = state.active;
    let decided = state.decide(WebhookCommand::Change(change))?;
    let version = append(tx, Stream::Webhook, id, version, &events(&decided)?, meta).await?;
    for e in decided {
        state.apply(e);
    }
    sqlx::query(
        "UPDATE webhooks SET url = $2, events = $3, active = $4, version = $5,
                secret = COALESCE($6, secret),
                cursor = CASE WHEN $7 THEN GREATEST(cursor, $8) ELSE cursor END,
                updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&state.url)
    .bind(&state.events)
    .bind(state.active)
    .bind(version)
    .bind(secret.map(Secret::expose))
    .bind(!was_active && state.active)
    .bind(head)
    .execute(&mut *tx)
    .await?;
    get(&mut *tx, id)
        .await?
        .ok_or(WebhookWriteError::Refused(WebhookError::NotFound))
}

/// Sends one of a webhook's deliveries again: one delivered or failed becomes pending, due now,
/// with a fresh set of attempts, recorded as `WebhookDeliveryRequeued` on the webhook's stream.
/// It keeps its id (receivers drop repeats by it) and its place in its VM's order: while it is
/// pending, that VM's later deliveries wait for it.
pub async fn redeliver(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    delivery_id: i64,
) -> Result<DeliveryRow, WebhookWriteError> {
    let (state, version) = locked(tx, id).await?.ok_or(WebhookError::NotFound)?;
    let delivery = deliveries::locked(tx, id, delivery_id)
        .await?
        .ok_or(RedeliveryRefused::NoSuchDelivery(delivery_id))?;
    match delivery.status {
        DeliveryStatus::Pending => return Err(RedeliveryRefused::StillPending.into()),
        DeliveryStatus::Delivered | DeliveryStatus::Failed => {}
    }
    let decided = state.decide(WebhookCommand::Redeliver {
        delivery_id,
        position: delivery.position,
    })?;
    let version = append(tx, Stream::Webhook, id, version, &events(&decided)?, meta).await?;
    sqlx::query("UPDATE webhooks SET version = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    Ok(deliveries::requeue(tx, delivery_id).await?)
}

/// Deletes a webhook and its deliveries.
pub async fn delete(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
) -> Result<(), WebhookWriteError> {
    let (state, version) = locked(tx, id).await?.ok_or(WebhookError::NotFound)?;
    let decided = state.decide(WebhookCommand::Delete)?;
    append(tx, Stream::Webhook, id, version, &events(&decided)?, meta).await?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Deletes every webhook of a user who is being deleted, inside that user's transaction, each
/// with its `WebhookDeleted` event.
pub async fn delete_owned_by(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    owner_id: &str,
) -> Result<(), StoreError> {
    let owned: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, version FROM webhooks WHERE owner_id = $1 ORDER BY id FOR UPDATE",
    )
    .bind(owner_id)
    .fetch_all(&mut *tx)
    .await?;
    let deleted = events(&[WebhookEvent::WebhookDeleted {}])?;
    for (id, version) in owned {
        append(tx, Stream::Webhook, &id, version, &deleted, meta).await?;
    }
    sqlx::query("DELETE FROM webhooks WHERE owner_id = $1")
        .bind(owner_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
