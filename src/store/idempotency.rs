//! The `idempotency_keys` table (`migrations/0011_idempotency_keys.sql`): the first answer to a
//! request sent with an `Idempotency-Key`, per user, for 24 hours. A key is taken in the
//! transaction that records its command's events, and only then.

use sqlx::{PgConnection, PgPool};

use super::conditions::{KeyedRequest, StoredAnswer};
use super::StoreError;

/// How long a key's answer is given again.
const KEPT_FOR: &str = "24 hours";

/// How many expired keys one insert deletes on its way.
const EXPIRED_PER_INSERT: i64 = 100;

/// An earlier request's hash and the answer it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub request_hash: Vec<u8>,
    pub answer: StoredAnswer,
}

/// The answer recorded for the user's key within the last 24 hours, if any.
pub async fn find(pool: &PgPool, user_id: &str, key: &str) -> Result<Option<Recorded>, StoreError> {
    let row: Option<(Vec<u8>, i16, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT request_hash, status, body FROM idempotency_keys
         WHERE user_id = $1 AND key = $2 AND created_at > now() - interval '{KEPT_FOR}'"
    ))
    .bind(user_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.map(|(request_hash, status, body)| {
        let status = u16::try_from(status).map_err(|e| {
            StoreError::Unexpected(anyhow::Error::new(e).context("a stored status is negative"))
        })?;
        Ok(Recorded {
            request_hash,
            answer: StoredAnswer { status, body },
        })
    })
    .transpose()
}

/// Takes the key in the command's transaction, before anything else it writes: a concurrent
/// request with the same key waits here for this transaction and then finds the key taken
/// (`StoreError::KeyTaken`). An expired record of the same key is replaced; a few other expired
/// ones are deleted.
pub async fn take(conn: &mut PgConnection, keyed: &KeyedRequest) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "DELETE FROM idempotency_keys WHERE ctid IN (
             SELECT ctid FROM idempotency_keys WHERE created_at <= now() - interval '{KEPT_FOR}'
             LIMIT $1 FOR UPDATE SKIP LOCKED)"
    ))
    .bind(EXPIRED_PER_INSERT)
    .execute(&mut *conn)
    .await?;
    let taken = sqlx::query(&format!(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status, body)
         VALUES ($1, $2, $3, 0, 'null')
         ON CONFLICT (user_id, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, status = 0, body = 'null', created_at = now()
             WHERE idempotency_keys.created_at <= now() - interval '{KEPT_FOR}'"
    ))
    .bind(&keyed.user_id)
    .bind(&keyed.key)
    .bind(&keyed.request_hash)
    .execute(&mut *conn)
    .await?;
    if taken.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::KeyTaken)
    }
}

/// Records the answer of the key taken by `take` in the same transaction.
pub async fn answer(
    conn: &mut PgConnection,
    keyed: &KeyedRequest,
    answer: &StoredAnswer,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, body = $4 WHERE user_id = $1 AND key = $2",
    )
    .bind(&keyed.user_id)
    .bind(&keyed.key)
    .bind(i16::try_from(answer.status).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("a status does not fit"))
    })?)
    .bind(&answer.body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
