//! The job table as workers and the API see it. Rows are created and closed by the events trigger
//! (see `migrations/0002_jobs.sql`); this module only claims, retries, re-queues and reads them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub vm_id: String,
    pub kind: String,
    pub status: String,
    pub params: Value,
    pub actor_id: Option<String>,
    pub attempt: i32,
    pub last_error: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub vm_id: String,
    pub kind: String,
    pub status: String,
    pub attempt: i32,
    pub error: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        JobView {
            id: r.id,
            vm_id: r.vm_id,
            kind: r.kind,
            status: r.status,
            attempt: r.attempt,
            error: r.error,
            last_error: r.last_error,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
        }
    }
}

impl JobRow {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

const COLUMNS: &str = "id, vm_id, kind, status, params, actor_id, attempt, last_error, error, \
                       created_at, started_at, finished_at, updated_at";

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<JobRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The job as the transaction on `conn` sees it.
pub async fn get_in(conn: &mut PgConnection, id: &str) -> Result<Option<JobRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs of VMs this user owns.
    pub owner_id: Option<String>,
    pub vm_id: Option<String>,
    pub status: Option<String>,
    pub page: u32,
    pub limit: u32,
}

pub async fn list(pool: &PgPool, f: &JobFilter) -> Result<(Vec<JobRow>, i64), StoreError> {
    let offset = i64::from(f.page.saturating_sub(1)) * i64::from(f.limit);
    let filter = "($1::text IS NULL OR EXISTS (SELECT 1 FROM vms v WHERE v.id = j.vm_id AND v.owner_id = $1))
           AND ($2::text IS NULL OR j.vm_id = $2)
           AND ($3::text IS NULL OR j.status = $3)";
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs j WHERE {filter}
         ORDER BY j.created_at DESC, j.id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(&f.owner_id)
    .bind(&f.vm_id)
    .bind(&f.status)
    .bind(i64::from(f.limit))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT count(*) FROM jobs j WHERE {filter}"))
        .bind(&f.owner_id)
        .bind(&f.vm_id)
        .bind(&f.status)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// Takes the oldest due queued job for `worker`, or none.
pub async fn claim(pool: &PgPool, worker: &str) -> Result<Option<JobRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1,
                started_at = COALESCE(started_at, now()), claimed_by = $1, updated_at = now()
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= now()
                     ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING {COLUMNS}"
    ))
    .bind(worker)
    .fetch_optional(pool)
    .await?)
}

/// Puts a running job back in the queue to be tried again after `delay`.
pub async fn retry_later(
    pool: &PgPool,
    id: &str,
    error: &str,
    delay: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', last_error = $2, claimed_by = NULL,
                run_after = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// When the next queued job becomes due, if any is queued.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT min(run_after) FROM jobs WHERE status = 'queued'")
            .fetch_one(pool)
            .await?,
    )
}

/// At start-up: jobs that a previous run of this server had claimed go back to the queue (their
/// operations are idempotent, so running them again is safe).
pub async fn requeue_abandoned(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'queued', claimed_by = NULL, run_after = now(),
                last_error = COALESCE(last_error, 'The server stopped while the job ran.'),
                updated_at = now()
         WHERE status = 'running' RETURNING id",
    )
    .fetch_all(pool)
    .await?)
}

/// In a cancel's transaction: locks the job's row (so no worker claims it before the cancel
/// commits) and refuses unless it is still queued.
pub async fn lock_queued(conn: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    match status {
        Some(status) if status != "queued" => Err(StoreError::JobNotQueued {
            job_id: id.to_string(),
            status,
        }),
        Some(_) | None => Ok(()),
    }
}
