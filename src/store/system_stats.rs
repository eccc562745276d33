//! Counts for `/system/stats`: VMs by status (the VM list) and events of a period by level (the
//! same rule as `/logs`). Every count is of the whole database, not of one node.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::audit::LEVEL_SQL;
use super::StoreError;

/// `(status, VMs)` for each status some VM has, deleted VMs included.
pub async fn vms_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM vms GROUP BY status")
            .fetch_all(pool)
            .await?,
    )
}

/// VM events recorded since a time, and how many of them `/logs` shows as errors and warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct EventCounts {
    pub total: i64,
    pub errors: i64,
    pub warnings: i64,
}

pub async fn events_since(pool: &PgPool, since: DateTime<Utc>) -> Result<EventCounts, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE level = 'error') AS errors,
                count(*) FILTER (WHERE level = 'warn') AS warnings
         FROM (SELECT {LEVEL_SQL} AS level FROM events e
               WHERE e.aggregate_type = 'vm' AND e.recorded_at >= $1) leveled"
    ))
    .bind(since)
    .fetch_one(pool)
    .await?)
}
