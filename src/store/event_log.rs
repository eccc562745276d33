//! Reading the event log as records (for the API), rather than as aggregate state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::StoreError;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct LoggedEvent {
    pub position: i64,
    #[serde(rename = "streamId")]
    pub aggregate_id: String,
    pub sequence: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

pub async fn for_vm(
    pool: &PgPool,
    vm_id: &str,
    after_sequence: i64,
    limit: u32,
) -> Result<Vec<LoggedEvent>, StoreError> {
    let mut rows: Vec<LoggedEvent> = sqlx::query_as(
        "SELECT position, aggregate_id, sequence, event_type, event_version AS version,
                payload AS data, metadata, recorded_at
         FROM events WHERE aggregate_type = 'vm' AND aggregate_id = $1 AND sequence > $2
         ORDER BY sequence LIMIT $3",
    )
    .bind(vm_id)
    .bind(after_sequence)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        row.data = unwrap_variant(std::mem::take(&mut row.data), &row.event_type);
    }
    Ok(rows)
}

/// Events are stored as `{"<Type>": {...}}`; the API shows the inner object as `data`.
fn unwrap_variant(mut payload: Value, event_type: &str) -> Value {
    payload
        .get_mut(event_type)
        .map(Value::take)
        .unwrap_or(payload)
}
