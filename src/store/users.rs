//! Users and revoked tokens.

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
}

const COLUMNS: &str = "id, username, password_hash, role, password_changed_at, created_at";

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

pub async fn set_password(pool: &PgPool, id: &str, password_hash: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now()
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
