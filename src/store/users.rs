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
}

const COLUMNS: &str =
    "id, username, password_hash, role, password_changed_at, created_at, token_generation";

pub async fn by_username(pool: &PgPool, username: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn by_id(pool: &PgPool, id: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Creates a user unless the name is taken; returns whether it was created.
pub async fn create(
    pool: &PgPool,
    id: &str,
    username: &str,
    password_hash: &str,
    role: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO users (id, username, password_hash, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(id)
    .bind(username)
    .bind(password_hash)
    .bind(role)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Sets a new password and starts a new token generation, which ends every token issued before.
pub async fn set_password(pool: &PgPool, id: &str, password_hash: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now(),
                          token_generation = token_generation + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(())
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
