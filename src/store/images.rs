//! The `images` read model and the `image` streams: each change appends its event and writes its
//! row in the caller's transaction, under a transaction-scoped advisory lock on the image's name.
//! A VM's creation takes the same lock shared (see [`hold_for_vm`]) and a delete takes it
//! exclusively before it looks for VMs using the image, so a creation racing a delete cannot
//! both succeed: whichever commits second sees the other.

use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::append::{append_for_job, stored, JobMark, Stream};
use super::{CommandMeta, StoreError};
use crate::images::{ImageEvent, ImageSource, ImageStatus};

/// An image as the read model holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub name: String,
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub status: ImageStatus,
    #[sqlx(try_from = "String")]
    pub source: ImageSource,
    pub url: Option<String>,
    pub format: Option<String>,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub job_id: Option<String>,
    pub error: Option<String>,
    pub version: i64,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "name, kind, status, source, url, format, sha256, size_bytes, job_id, \
                       error, version, created_by, created_at, updated_at";

pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    name: &str,
) -> Result<Option<ImageRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM images WHERE name = $1"))
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

/// Every image not deleted, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<ImageRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM images WHERE status <> 'deleted' ORDER BY name"
    ))
    .fetch_all(pool)
    .await?)
}

fn lock_key(name: &str) -> String {
    format!("voidvm-image:{name}")
}

/// Takes the name's lock for a change of the image (until the transaction ends) and reads its
/// row and its stream's last sequence.
pub async fn lock(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(Option<ImageRow>, i64), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(name))
        .execute(&mut *conn)
        .await?;
    let row: Option<ImageRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM images WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let version = match &row {
        Some(r) => r.version,
        None => {
            sqlx::query_scalar(
                "SELECT COALESCE(max(sequence), 0) FROM events
             WHERE aggregate_type = 'image' AND aggregate_id = $1",
            )
            .bind(name)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok((row, version))
}

/// In a VM creation's transaction: takes image `name`'s lock shared (a delete holding it
/// exclusively commits first) and checks that its files, which the request found, are still
/// there.
pub async fn hold_for_vm(
    conn: &mut PgConnection,
    images_dir: &Path,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))")
        .bind(lock_key(name))
        .execute(&mut *conn)
        .await?;
    if images_dir.join(name).is_dir() {
        Ok(())
    } else {
        Err(StoreError::ImageGone(name.to_string()))
    }
}

/// The VMs (not deleted) made from image `name` or with it in their CD-ROM, as the transaction
/// sees them.
pub async fn users_of(conn: &mut PgConnection, name: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM vms WHERE status <> 'deleted'
           AND (state -> 'spec' ->> 'os' = $1 OR state ->> 'iso' = $1)
         ORDER BY created_at, id",
    )
    .bind(name)
    .fetch_all(conn)
    .await?)
}

/// Appends `event` to image `name`'s stream after `version`; returns the new version.
pub async fn record(
    conn: &mut PgConnection,
    name: &str,
    version: i64,
    event: &ImageEvent,
    meta: &CommandMeta,
    job: Option<JobMark<'_>>,
) -> Result<i64, StoreError> {
    let events = [stored(event.type_name(), event.version(), event)?];
    append_for_job(conn, Stream::Image, name, version, &events, meta, job).await
}

/// The row's new contents (all but the timestamps).
#[derive(Debug, Clone)]
pub struct RowWrite<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub status: ImageStatus,
    pub source: ImageSource,
    pub url: Option<&'a str>,
    pub format: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub size_bytes: Option<i64>,
    pub job_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub version: i64,
    pub created_by: Option<&'a str>,
}

/// Writes the whole row (a new image under a name replaces what an earlier one left).
pub async fn upsert(conn: &mut PgConnection, w: &RowWrite<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO images (name, kind, status, source, url, format, sha256, size_bytes, job_id,
                             error, version, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (name) DO UPDATE SET
             kind = $2, status = $3, source = $4, url = $5, format = $6, sha256 = $7,
             size_bytes = $8, job_id = $9, error = $10, version = $11, created_by = $12,
             created_at = CASE WHEN images.status IN ('failed', 'deleted') THEN now()
                               ELSE images.created_at END,
             updated_at = now()",
    )
    .bind(w.name)
    .bind(w.kind)
    .bind(w.status.as_str())
    .bind(w.source.as_str())
    .bind(w.url)
    .bind(w.format)
    .bind(w.sha256)
    .bind(w.size_bytes)
    .bind(w.job_id)
    .bind(w.error)
    .bind(w.version)
    .bind(w.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Changes the row's status (and what goes with it) after an event.
pub async fn set_status(
    conn: &mut PgConnection,
    name: &str,
    status: ImageStatus,
    version: i64,
    sha256: Option<&str>,
    size_bytes: Option<i64>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE images SET status = $2, version = $3, sha256 = COALESCE($4, sha256),
                size_bytes = COALESCE($5, size_bytes), error = $6, updated_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .bind(status.as_str())
    .bind(version)
    .bind(sha256)
    .bind(size_bytes)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes only the version (an event that changes nothing else, e.g. progress).
pub async fn set_version(
    conn: &mut PgConnection,
    name: &str,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE images SET version = $2, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records an import job's progress on its row.
pub async fn job_progress(
    conn: &mut PgConnection,
    job_id: &str,
    done: u64,
    total: Option<u64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET bytes_done = $2, bytes_total = $3, updated_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(job_id)
    .bind(i64::try_from(done).unwrap_or(i64::MAX))
    .bind(total.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
