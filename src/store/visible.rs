//! How far the log may be read without ever skipping an event that commits later.
//!
//! Positions are `(transaction id << 16) + n` (see `migrations/0007_positions_and_commands.sql`),
//! and writers take no common lock, so an event with a smaller position can commit after one
//! with a larger position. No event can commit below `voidvm_visible_bound()` (the oldest
//! transaction of this database still in flight, `migrations/0019_visible_bound.sql`), so every
//! reader of "events after position P" first takes a [`Bound`] here, in a statement of its own,
//! and then reads below it with [`push_below`] in a later statement, whose snapshot sees every
//! transaction that ended before the bound was taken. This module is the one place that bound is
//! computed.
//!
//! The bound lags behind a transaction still in flight. So that a read right after a commit sees
//! it, [`bound`] first waits until every event committed so far is below it (in practice the few
//! milliseconds until concurrent commands commit).

use std::time::Duration;

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::StoreError;

/// Every event below this position that will ever exist has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound(i64);

impl Bound {
    /// A bound only for writing a statement's text (its value is a parameter, not in the text).
    pub(super) fn for_text() -> Bound {
        Bound(0)
    }
}

/// How long a reader waits for transactions in flight before answering with what is final.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// Adds the condition every reader of positions applies (events aliased `e`).
pub fn push_below(q: &mut QueryBuilder<'_, Postgres>, bound: Bound) {
    q.push(" AND e.position < ").push_bind(bound.0);
}

/// The bound to read below, once every event committed before the call is below it (waiting up
/// to two seconds for transactions already in flight; a steady stream of new commands never
/// keeps a reader waiting, as the target is fixed at the call). Giving up only makes the answer
/// older, never wrong: what is below the bound stays complete.
pub async fn bound(pool: &PgPool) -> Result<Bound, StoreError> {
    // The newest event is read from the statement's snapshot, the bound after it: one round trip
    // in the common case.
    let (newest, mut bound): (Option<i64>, i64) =
        sqlx::query_as("SELECT max(position), voidvm_visible_bound() FROM events")
            .fetch_one(pool)
            .await?;
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let mut pause = Duration::from_millis(1);
    loop {
        if newest.is_none_or(|newest| newest < bound) {
            return Ok(Bound(bound));
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "a transaction in flight holds back readers of the event log for over 2 s"
            );
            return Ok(Bound(bound));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
        bound = sqlx::query_scalar("SELECT voidvm_visible_bound()")
            .fetch_one(pool)
            .await?;
    }
}

/// Refuses to run on a log whose last position is at or past the positions new events would get.
/// Positions come from transaction ids, which only grow within one PostgreSQL cluster; a database
/// restored into another cluster (a dump loaded elsewhere) can find that cluster's ids behind its
/// log, and new events would then sort before old ones, so readers resuming by position would
/// skip them. Nothing is written in that case; the operator must act first.
pub async fn check_positions_ahead(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context;
    let (last, next): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT max(position) FROM events),
                pg_snapshot_xmax(pg_current_snapshot())::text::bigint << 16",
    )
    .fetch_one(pool)
    .await
    .context("the event log's last position could not be read")?;
    match last {
        Some(last) if last >= next => anyhow::bail!(
            "the event log's last position is {last}, but new events would get positions from \
             {next} (positions are transaction ids << 16): this database was restored into a \
             PostgreSQL cluster whose transaction ids are behind the original's. Nothing is \
             written until the cluster's next transaction id is past {} (for example with \
             `pg_resetwal -x` on the stopped cluster)",
            (last >> 16) + 1
        ),
        _ => Ok(()),
    }
}
