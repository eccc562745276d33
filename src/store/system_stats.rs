//! Counts for `/system/stats` and `/metrics`: VMs by status (the VM list), events of a period by
//! level (the same rule as `/logs`), jobs by kind and status with their durations, and the events
//! the relay has not published yet. Every count is of the whole database, not of one node.

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

/// The jobs of one kind in one status, and the durations (claimed to finished) of those that ran
/// and finished.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobCounts {
    pub kind: String,
    pub status: String,
    pub jobs: i64,
    /// Jobs with a duration (they started and finished).
    pub timed: i64,
    pub seconds: f64,
    /// How many durations are at or below each bound given to [`jobs`] (cumulative).
    pub at_or_below: Vec<i64>,
}

/// Every kind and status of job there is, with durations counted against `bounds` (seconds).
/// One pass over the jobs table.
pub async fn jobs(pool: &PgPool, bounds: &[f64]) -> Result<Vec<JobCounts>, StoreError> {
    // The bounds are numbers (never text), written into the statement as literals.
    let filters: Vec<String> = bounds
        .iter()
        .filter(|b| b.is_finite())
        .map(|b| format!("count(d) FILTER (WHERE d <= {b:?})"))
        .collect();
    let at_or_below = if filters.is_empty() {
        "ARRAY[]::bigint[]".to_string()
    } else {
        format!("ARRAY[{}]", filters.join(", "))
    };
    Ok(sqlx::query_as(&format!(
        "SELECT kind, status, count(*) AS jobs, count(d) AS timed,
                COALESCE(sum(d), 0)::double precision AS seconds,
                {at_or_below} AS at_or_below
         FROM (SELECT kind, status,
                      extract(epoch FROM finished_at - started_at)::double precision AS d
               FROM jobs) j
         GROUP BY kind, status
         ORDER BY kind, status"
    ))
    .fetch_all(pool)
    .await?)
}

/// Events the relay has not confirmed on NATS yet: those after the position it recorded last
/// under `offset_name` (positions are not contiguous, so they are counted, not subtracted).
pub async fn unrelayed_events(pool: &PgPool, offset_name: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events e
         WHERE e.aggregate_type = 'vm'
           AND e.position > COALESCE((SELECT position FROM relay_offsets WHERE name = $1), 0)",
    )
    .bind(offset_name)
    .fetch_one(pool)
    .await?)
}
