//! How far the log may be read without ever skipping an event that commits later.
//!
//! Positions are `(transaction id << 16) + n` (see `migrations/0007_positions_and_commands.sql`),
//! and writers take no common lock, so an event with a smaller position can commit after one
//! with a larger position. Every transaction below the oldest one still in flight has ended, so
//! positions below `voidvm_visible_bound()` are final: every reader of "events after position P"
//! filters with [`BELOW_BOUND`], and nothing else.
//!
//! The bound lags behind a transaction still in flight. So that a read right after a commit sees
//! it, readers first [`settle`]: wait until every event committed so far is below the bound (in
//! practice the few milliseconds until concurrent commands commit).

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// The one condition a reader of positions applies (events aliased `e`). The sub-select makes
/// PostgreSQL compute the bound once per statement (and use it in index scans).
pub const BELOW_BOUND: &str = "e.position < (SELECT voidvm_visible_bound())";

/// How long a reader waits for transactions in flight before answering with what is final.
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// Waits (up to a second) until every event committed before the call is below the bound.
/// Only transactions already in flight are waited for: the target is fixed at the call, so a
/// steady stream of new commands never keeps a reader waiting. Giving up only makes the answer
/// older, never wrong: what is below the bound stays complete.
pub async fn settle(pool: &PgPool) -> Result<(), StoreError> {
    let (newest, mut bound): (Option<i64>, i64) =
        sqlx::query_as("SELECT max(position), voidvm_visible_bound() FROM events")
            .fetch_one(pool)
            .await?;
    let Some(newest) = newest else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let mut pause = Duration::from_millis(1);
    while newest >= bound {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "a transaction in flight on the PostgreSQL cluster holds back readers of the event log"
            );
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
        bound = sqlx::query_scalar("SELECT voidvm_visible_bound()")
            .fetch_one(pool)
            .await?;
    }
    Ok(())
}
