//! Users and revoked tokens (cached per node by `auth::cache`, which a trigger keeps current).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Password changes so far; tokens of an older generation are refused.
    pub token_generation: i64,
    pub email: Option<String>,
    pub status: String,
    pub quota: serde_json::Value,
    pub rate_limit: Option<i32>,
    /// The user stream's last sequence.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, username, password_hash, role, password_changed_at, created_at, \
     token_generation, email, status, quota, rate_limit, version, updated_at";

/// The user's row, locked until the transaction ends.
/// In the transaction of a VM's creation or hand-over: holds its owner's row (`FOR KEY SHARE`),
/// so that a concurrent delete of that user, which locks the row `FOR UPDATE` and then counts the
/// user's VMs, either waits for this commit and sees the VM, or commits first and this finds the
/// user gone and records nothing.
pub async fn hold_owner(conn: &mut sqlx::PgConnection, user_id: &str) -> Result<(), StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::OwnerGone(user_id.to_string()))
}

pub async fn by_id_for_update(
    conn: &mut sqlx::PgConnection,
    id: &str,
) -> Result<Option<UserRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// A page of users, oldest first, with the total that match.
pub async fn list(
    pool: &PgPool,
    role: Option<&str>,
    status: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), StoreError> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users
         WHERE ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at, id OFFSET $3 LIMIT $4"
    ))
    .bind(role)
    .bind(status)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM users
         WHERE ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR status = $2)",
    )
    .bind(role)
    .bind(status)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// What the user owns now: VMs that are not deleted, and their vCPUs, memory and disk.
pub async fn usage(
    conn: impl sqlx::PgExecutor<'_>,
    owner_id: &str,
) -> Result<crate::accounts::Usage, StoreError> {
    let (vms, vcpus, memory, disk): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(sum((state -> 'spec' ->> 'cpu')::bigint), 0)::bigint,
                COALESCE(sum((state -> 'spec' ->> 'memory')::bigint), 0)::bigint,
                COALESCE(sum((state -> 'spec' ->> 'disk')::bigint), 0)::bigint
         FROM vms WHERE owner_id = $1 AND status <> 'deleted'",
    )
    .bind(owner_id)
    .fetch_one(conn)
    .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(crate::accounts::Usage {
        vms: n(vms),
        vcpus: n(vcpus),
        memory: n(memory),
        disk: n(disk),
    })
}

/// A user with their role, as the auth cache needs them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserWithRole {
    pub id: String,
    pub username: String,
    pub status: String,
    pub rate_limit: Option<i32>,
    pub token_generation: i64,
    pub role_id: String,
    pub permissions: Vec<String>,
    pub scope: String,
    pub role_rate_limit: Option<i32>,
}

/// The user with their role (one query).
pub async fn with_role(pool: &PgPool, id: &str) -> Result<Option<UserWithRole>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT u.id, u.username, u.status, u.rate_limit, u.token_generation,
                r.id AS role_id, r.permissions, r.scope, r.rate_limit AS role_rate_limit
         FROM users u JOIN roles r ON r.id = u.role WHERE u.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Whether the log has ever recorded a user (created, even if deleted since): a database that has
/// not is a first start, the only time the default admin is made.
pub async fn any_ever_recorded(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'user')")
            .fetch_one(pool)
            .await?,
    )
}

pub async fn by_username(pool: &PgPool, username: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn by_id<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: &str,
) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn revoke_token(
    pool: &PgPool,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn is_revoked(pool: &PgPool, jti: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)")
            .bind(jti)
            .fetch_one(pool)
            .await?,
    )
}

/// Every revoked token that has not expired yet, with its expiry (seconds since the epoch).
pub async fn revoked_tokens(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT jti, floor(extract(epoch FROM expires_at))::bigint FROM revoked_tokens
         WHERE expires_at > now()",
    )
    .fetch_all(pool)
    .await?)
}
