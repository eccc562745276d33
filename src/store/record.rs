//! The statement that records a command: its events and the VM's row in the list, written by one
//! `INSERT` with the events in a data-modifying `WITH`. Either both are written or neither.
//!
//! It is the whole commit of most commands (a change, a lifecycle verb: nothing to reserve,
//! check or snapshot), which then needs no `BEGIN`/`COMMIT` around it: one statement is one
//! transaction, and one round trip to PostgreSQL. Commands that also reserve a name or ports,
//! take an idempotency key, check a quota or write a snapshot run it inside their transaction
//! (see `super::repository`).

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::repository::Commit;
use super::StoreError;
use crate::vm::VmStatus;

/// When a VM's row was made and last changed, as the commit left it.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Events in the order given get positions in that order (the events' position trigger counts
/// rows as they are inserted). The VM's row is written unless it holds a later version already.
/// With a lock key (`$13`), the transaction takes that advisory lock shared before it writes the
/// row (see `super::solo`: a node that does not write alone takes it in every commit).
const RECORD: &str = "
WITH recorded AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata)
    SELECT 'vm', $1, e.sequence, e.event_type, e.event_version, e.payload, $5
    FROM unnest($2::bigint[], $3::text[], $4::text[], $6::jsonb[])
         WITH ORDINALITY AS e(sequence, event_type, event_version, payload, n)
    ORDER BY e.n
    RETURNING 1
)
INSERT INTO vms (id, owner_id, owner_name, name, status, version, state, created_at, updated_at)
SELECT $1, $7, $8, $9, $10, $11, $12, now(), now()
WHERE $13::bigint IS NULL OR EXISTS (SELECT FROM pg_advisory_xact_lock_shared($13))
ON CONFLICT (id) DO UPDATE
SET owner_id = EXCLUDED.owner_id, owner_name = EXCLUDED.owner_name, name = EXCLUDED.name,
    status = EXCLUDED.status, version = EXCLUDED.version, state = EXCLUDED.state,
    updated_at = now()
WHERE vms.version < EXCLUDED.version
RETURNING created_at, updated_at";

/// Records `commit`'s events and the VM's row after them, on `conn` (a transaction, or a plain
/// connection when this is the whole commit), taking the solo-writer lock shared when given its
/// key.
pub async fn record<'c, E>(
    conn: E,
    commit: &Commit<'_>,
    solo_lock: Option<i64>,
) -> Result<Stamps, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    // Bound as `Json`: each is serialised once, straight into the statement's buffer.
    let mut sequences = Vec::with_capacity(commit.events.len());
    let mut types = Vec::with_capacity(commit.events.len());
    let mut versions = Vec::with_capacity(commit.events.len());
    let mut payloads = Vec::with_capacity(commit.events.len());
    for (sequence, event) in (commit.version + 1..).zip(commit.events) {
        sequences.push(to_i64(sequence)?);
        types.push(event.type_name());
        versions.push(event.version().to_string());
        payloads.push(Json(event));
    }
    let after = commit.after;
    let status = after.status.unwrap_or(VmStatus::Creating);
    let version = to_i64(commit.version + commit.events.len())?;
    let stamps: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(RECORD)
        .bind(commit.vm_id)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(Json(commit.metadata))
        .bind(&payloads)
        .bind(&after.owner.id)
        .bind(&after.owner.name)
        .bind(&after.spec.name)
        .bind(status.as_str())
        .bind(version)
        .bind(Json(after))
        .bind(solo_lock)
        .fetch_optional(conn)
        .await
        .map_err(super::repository::conflict_on_duplicate)?;
    // No row: the list already held a later version (its stamps are not needed to be exact).
    let now = Utc::now();
    let (created_at, updated_at) = stamps.unwrap_or((now, now));
    Ok(Stamps {
        created_at,
        updated_at,
    })
}

fn to_i64(n: usize) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|e| StoreError::Unexpected(anyhow::Error::new(e).context("a sequence overflowed")))
}
