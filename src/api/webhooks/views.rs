//! What `/webhooks` answers: a webhook (never its secret, except once when it is set) with how its
//! deliveries stand, and one delivery with its last attempt.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::deliveries::{DeliveryRow, DeliveryStatus};
use crate::store::webhooks::WebhookRow;

/// A webhook as the API shows it. The secret is not shown, except once when it is set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub owner: String,
    pub owner_name: Option<String>,
    pub url: String,
    /// VM event types, or `["*"]` for every one.
    pub events: Vec<String>,
    pub active: bool,
    /// Every event up to this log position has been put in the webhook's outbox (or did not
    /// match it).
    pub position: i64,
    pub deliveries: DeliveryCounts,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only in the answer that set it (`POST`, or `PATCH` with a new secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

impl From<WebhookRow> for WebhookView {
    fn from(row: WebhookRow) -> Self {
        WebhookView {
            id: row.id,
            owner: row.owner_id,
            owner_name: row.owner_name,
            url: row.url,
            events: row.events,
            active: row.active,
            position: row.cursor,
            deliveries: DeliveryCounts {
                pending: row.pending,
                delivered: row.delivered,
                failed: row.failed,
            },
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            secret: None,
        }
    }
}

/// One delivery of one event to one webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: i64,
    pub webhook_id: String,
    /// The event's position in the log, its VM and type.
    pub position: i64,
    pub vm_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status from the receiver, if it answered.
    pub response_status: Option<i32>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        let status = row.status;
        DeliveryView {
            id: row.id,
            webhook_id: row.webhook_id,
            position: row.position,
            vm_id: row.vm_id,
            event_type: row.event_type,
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(row.next_attempt_at),
            status,
            attempts: row.attempts,
            response_status: row.response_status,
            error: row.last_error,
            duration_ms: row.duration_ms,
            created_at: row.created_at,
            last_attempt_at: row.last_attempt_at,
            delivered_at: row.delivered_at,
        }
    }
}
