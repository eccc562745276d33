//! The host samples behind `/system/stats` (`migrations/0013_system_samples.sql`): written by each
//! node's sampler, averaged per bucket on read, and deleted once older than the longest period.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::system::series::Bucket;

/// Records one sample of node `node` (a second sample at the same instant is dropped).
pub async fn insert(
    pool: &PgPool,
    node: &str,
    at: DateTime<Utc>,
    cpu_percent: f64,
    memory_percent: f64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO system_samples (node_id, sampled_at, cpu_percent, memory_percent)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(node)
    .bind(at)
    .bind(clamp_percent(cpu_percent))
    .bind(clamp_percent(memory_percent))
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes every node's samples taken before `before`; returns how many.
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM system_samples WHERE sampled_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Node `node`'s samples since `from`, averaged per bucket of `width_secs` seconds aligned on
/// the Unix epoch (`series::bucket_of`), each stamped with the mean time of its samples.
pub async fn series(
    pool: &PgPool,
    node: &str,
    from: DateTime<Utc>,
    width_secs: i64,
) -> Result<Vec<Bucket>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT to_timestamp(avg(extract(epoch FROM sampled_at))::double precision) AS at,
                avg(cpu_percent) AS cpu, avg(memory_percent) AS memory
         FROM system_samples
         WHERE node_id = $1 AND sampled_at >= $2
         GROUP BY floor(extract(epoch FROM sampled_at) / $3::numeric)
         ORDER BY at",
    )
    .bind(node)
    .bind(from)
    .bind(width_secs.max(1))
    .fetch_all(pool)
    .await?)
}

/// What the table's check allows: a percent, and 0 for what is not a number.
fn clamp_percent(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}
