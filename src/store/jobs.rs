//! The job table as workers and the API see it. Rows are created and closed by the events trigger
//! (see `migrations/0002_jobs.sql`); this module only claims, retries, re-queues and reads them.
//!
//! A node claims a job under a lease it renews (`migrations/0008_job_leases.sql`): only jobs
//! whose lease expired go back to the queue for other nodes. A running job may wait for its
//! guest without a worker holding it: it is parked until `wake_at` and claimed again by its node
//! then (or sooner, when the machine's exit wakes it).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::vm::Operation;

/// Where a job is in its life, as the `jobs.status` column holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        match self {
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled => true,
            JobStatus::Queued | JobStatus::Running => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `jobs` column held a value this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("the jobs table holds an unknown {column} '{value}'")]
pub struct UnknownValue {
    column: &'static str,
    value: String,
}

impl TryFrom<String> for JobStatus {
    type Error = UnknownValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        JobStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or(UnknownValue {
                column: "status",
                value,
            })
    }
}

/// A job's kind: the operation it carries out on its VM, or an image import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Vm(Operation),
    ImportImage,
}

impl JobKind {
    /// The stored name of an image import.
    pub const IMPORT_IMAGE: &'static str = "import_image";

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Vm(op) => op.as_str(),
            JobKind::ImportImage => JobKind::IMPORT_IMAGE,
        }
    }
}

impl TryFrom<String> for JobKind {
    type Error = UnknownValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value == JobKind::IMPORT_IMAGE {
            return Ok(JobKind::ImportImage);
        }
        Operation::parse(&value)
            .map(JobKind::Vm)
            .ok_or(UnknownValue {
                column: "kind",
                value,
            })
    }
}

/// Stored as its name (in event metadata as in the `jobs.kind` column).
impl Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for JobKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        JobKind::try_from(name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    /// The id of the job's stream: its VM, or for an image import the image's name.
    pub vm_id: String,
    /// `vm`, or `image` for an import.
    pub stream_type: String,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub params: Value,
    pub actor_id: Option<String>,
    pub attempt: i32,
    pub last_error: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// A wait for the guest gives up at this time (a graceful stop's timeout).
    pub deadline: Option<DateTime<Utc>>,
    pub bytes_done: Option<i64>,
    pub bytes_total: Option<i64>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    /// The job's VM; `null` for an image import.
    pub vm_id: Option<String>,
    /// The image an import job brings in; `null` for VM jobs.
    pub image: Option<String>,
    /// `provision`, `start`, `stop`, ... or `import_image`.
    pub kind: String,
    pub status: String,
    pub attempt: i32,
    pub error: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// How far an image import's download has come; `null` for other jobs.
    pub progress: Option<JobProgress>,
}

/// Bytes downloaded so far, of how many (`null` when the server did not say).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub bytes_done: i64,
    pub bytes_total: Option<i64>,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        let image = r.is_image_job();
        JobView {
            id: r.id,
            vm_id: (!image).then(|| r.vm_id.clone()),
            image: image.then_some(r.vm_id),
            progress: r.bytes_done.map(|done| JobProgress {
                bytes_done: done,
                bytes_total: r.bytes_total,
            }),
            kind: r.kind.to_string(),
            status: r.status.to_string(),
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
        self.status.is_finished()
    }

    /// Whether the job belongs to an image's stream (an import), not to a VM.
    pub fn is_image_job(&self) -> bool {
        self.stream_type == "image"
    }
}

const COLUMNS: &str = "id, vm_id, stream_type, kind, status, params, actor_id, attempt, \
                       last_error, error, created_at, started_at, finished_at, updated_at, \
                       deadline, bytes_done, bytes_total";

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
    let filter = "($1::text IS NULL OR (j.stream_type = 'vm'
                AND EXISTS (SELECT 1 FROM vms v WHERE v.id = j.vm_id AND v.owner_id = $1)))
           AND ($2::text IS NULL OR (j.vm_id = $2 AND j.stream_type = 'vm'))
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

/// The node a job runs on, and how long its claim holds without renewal.
#[derive(Debug, Clone)]
pub struct Lease {
    pub node: String,
    pub duration: Duration,
}

/// Takes, for one of `lease`'s node's workers, the oldest due job: a queued one (a new attempt),
/// or one of the node's own waiting jobs whose wait is over (the same attempt, its next step).
pub async fn claim(
    pool: &PgPool,
    lease: &Lease,
    worker: &str,
) -> Result<Option<JobRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE jobs SET attempt = attempt + CASE WHEN status = 'queued' THEN 1 ELSE 0 END,
                status = 'running', started_at = COALESCE(started_at, now()),
                node_id = $1, claimed_by = $2, lease_until = now() + make_interval(secs => $3),
                wake_at = NULL, updated_at = now()
         WHERE id = (SELECT id FROM jobs
                     WHERE (status = 'queued' AND run_after <= now())
                        OR (status = 'running' AND node_id = $1 AND wake_at <= now())
                     ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING {COLUMNS}"
    ))
    .bind(&lease.node)
    .bind(worker)
    .bind(lease.duration.as_secs_f64())
    .fetch_optional(pool)
    .await?)
}

/// Parks a running job until `wake_at` (no worker holds it meanwhile); `deadline` is when its
/// wait for the guest gives up. False when the job is no longer running (its outcome came first).
pub async fn wait(
    pool: &PgPool,
    id: &str,
    wake_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
) -> Result<bool, StoreError> {
    // The notification makes the dispatcher look again at when the next job falls due.
    Ok(sqlx::query_scalar::<_, String>(
        "WITH parked AS (
             UPDATE jobs SET wake_at = $2, deadline = $3, updated_at = now()
             WHERE id = $1 AND status = 'running' RETURNING id)
         SELECT id FROM parked, pg_notify('voidvm_jobs', parked.id) AS n",
    )
    .bind(id)
    .bind(wake_at)
    .bind(deadline)
    .fetch_optional(pool)
    .await?
    .is_some())
}

/// Ends a parked job's wait now (its machine exited) and wakes the workers. False when the job
/// is not waiting.
pub async fn wake(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar::<_, String>(
        "WITH woken AS (
             UPDATE jobs SET wake_at = now(), updated_at = now()
             WHERE id = $1 AND status = 'running' AND wake_at IS NOT NULL RETURNING id)
         SELECT id FROM woken, pg_notify('voidvm_jobs', woken.id) AS n",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .is_some())
}

/// Extends the lease of every job running on `lease`'s node; returns how many it holds.
pub async fn renew(pool: &PgPool, lease: &Lease) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $2)
         WHERE status = 'running' AND node_id = $1",
    )
    .bind(&lease.node)
    .bind(lease.duration.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// Puts back in the queue the running jobs whose node stopped renewing their lease (it is gone).
/// A job that was waiting for its guest keeps its deadline, so its next node carries on the wait.
pub async fn requeue_expired(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'queued', node_id = NULL, claimed_by = NULL, wake_at = NULL,
                lease_until = NULL, run_after = now(),
                last_error = COALESCE(last_error, 'The node running the job went away.'),
                updated_at = now()
         WHERE status = 'running' AND (lease_until IS NULL OR lease_until < now())
         RETURNING id",
    )
    .fetch_all(pool)
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
        "UPDATE jobs SET status = 'queued', last_error = $2, claimed_by = NULL, node_id = NULL,
                lease_until = NULL, wake_at = NULL,
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

/// Puts a job that could not begin yet back in the queue for `delay`, as if it had not been
/// claimed: the attempt does not count.
pub async fn not_yet(pool: &PgPool, id: &str, delay: Duration) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', attempt = greatest(attempt - 1, 0), claimed_by = NULL,
                node_id = NULL, lease_until = NULL, wake_at = NULL,
                run_after = now() + make_interval(secs => $2), updated_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// When the next job of `node` becomes due: a queued one, or one of its parked ones.
pub async fn next_due(pool: &PgPool, node: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT least((SELECT min(run_after) FROM jobs WHERE status = 'queued'),
                      (SELECT min(wake_at) FROM jobs
                       WHERE status = 'running' AND node_id = $1 AND wake_at IS NOT NULL))",
    )
    .bind(node)
    .fetch_one(pool)
    .await?)
}

/// Hands `node`'s running jobs back to the queue: at start-up (jobs a previous run of this node
/// had claimed; their operations are idempotent, so running them again is safe) and when the node
/// shuts down. Other nodes' jobs are left alone, unless their lease expired.
pub async fn requeue_abandoned(pool: &PgPool, node: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'queued', node_id = NULL, claimed_by = NULL, wake_at = NULL,
                lease_until = NULL, run_after = now(),
                last_error = COALESCE(last_error, 'The server stopped while the job ran.'),
                updated_at = now()
         WHERE status = 'running'
           AND (node_id = $1 OR node_id IS NULL OR lease_until IS NULL OR lease_until < now())
         RETURNING id",
    )
    .bind(node)
    .fetch_all(pool)
    .await?)
}

/// A node shutting down hands its own running jobs (parked ones too) back to the queue.
pub async fn hand_back(pool: &PgPool, node: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE jobs SET status = 'queued', node_id = NULL, claimed_by = NULL, wake_at = NULL,
                lease_until = NULL, run_after = now(),
                last_error = COALESCE(last_error, 'The server stopped while the job ran.'),
                updated_at = now()
         WHERE status = 'running' AND node_id = $1
         RETURNING id",
    )
    .bind(node)
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
        Some(status) if status != JobStatus::Queued.as_str() => Err(StoreError::JobNotQueued {
            job_id: id.to_string(),
            status,
        }),
        Some(_) | None => Ok(()),
    }
}
