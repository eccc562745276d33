//! The statement that records commands: their events and their VMs' rows in the list, written by
//! one `INSERT` with the events in a data-modifying `WITH`. Either all of it is written or none.
//!
//! It is the whole commit of most commands (a change, a lifecycle verb: nothing to reserve,
//! check or snapshot), which then needs no `BEGIN`/`COMMIT` around it: one statement is one
//! transaction, and one round trip to PostgreSQL. Such commands of different VMs that queue up
//! on a node share the statement (`super::record_batch`). Commands that also reserve a name or
//! ports, take an idempotency key, check a quota or write a snapshot run it for themselves inside
//! their transaction (see `super::repository`).

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
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

/// One command's rows, serialised once, ready to bind: its events and its VM's row after them.
pub struct Rows {
    vm_id: String,
    sequences: Vec<i64>,
    types: Vec<&'static str>,
    versions: Vec<String>,
    payloads: Vec<Box<RawValue>>,
    metadata: Box<RawValue>,
    owner_id: String,
    owner_name: String,
    name: String,
    status: &'static str,
    version: i64,
    state: Box<RawValue>,
}

impl Rows {
    pub fn of(commit: &Commit<'_>) -> Result<Rows, StoreError> {
        let n = commit.events.len();
        let mut rows = Rows {
            vm_id: commit.vm_id.to_string(),
            sequences: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: raw(commit.metadata)?,
            owner_id: commit.after.owner.id.clone(),
            owner_name: commit.after.owner.name.clone(),
            name: commit.after.spec.name.clone(),
            status: commit.after.status.unwrap_or(VmStatus::Creating).as_str(),
            version: to_i64(commit.version + n)?,
            state: raw(commit.after)?,
        };
        for (sequence, event) in (commit.version + 1..).zip(commit.events) {
            rows.sequences.push(to_i64(sequence)?);
            rows.types.push(event.type_name());
            rows.versions.push(event.version().to_string());
            rows.payloads.push(raw(event)?);
        }
        Ok(rows)
    }

    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// A command of `vm_id` with no events, for tests of what carries rows.
    #[cfg(test)]
    pub fn for_test(vm_id: &str) -> Rows {
        let null = || serde_json::value::RawValue::from_string("null".into());
        Rows {
            vm_id: vm_id.to_string(),
            sequences: Vec::new(),
            types: Vec::new(),
            versions: Vec::new(),
            payloads: Vec::new(),
            metadata: null().unwrap(),
            owner_id: String::new(),
            owner_name: String::new(),
            name: String::new(),
            status: "stopped",
            version: 0,
            state: null().unwrap(),
        }
    }
}

/// Events in the order given get positions in that order (the events' position trigger counts
/// rows as they are inserted). A VM's row is written unless it holds a later version already.
/// With a lock key (`$14`), the transaction takes that advisory lock shared before it writes the
/// rows (see `super::solo`: a node that does not write alone takes it in every commit).
const RECORD: &str = "
WITH recorded AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata)
    SELECT 'vm', e.vm_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[])
         WITH ORDINALITY AS e(vm_id, sequence, event_type, event_version, payload, metadata, n)
    ORDER BY e.n
    RETURNING 1
)
INSERT INTO vms (id, owner_id, owner_name, name, status, version, state, created_at, updated_at)
SELECT v.id, v.owner_id, v.owner_name, v.name, v.status, v.version, v.state, now(), now()
FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[],
            $13::jsonb[]) AS v(id, owner_id, owner_name, name, status, version, state)
WHERE $14::bigint IS NULL OR EXISTS (SELECT FROM pg_advisory_xact_lock_shared($14))
ON CONFLICT (id) DO UPDATE
SET owner_id = EXCLUDED.owner_id, owner_name = EXCLUDED.owner_name, name = EXCLUDED.name,
    status = EXCLUDED.status, version = EXCLUDED.version, state = EXCLUDED.state,
    updated_at = now()
WHERE vms.version < EXCLUDED.version
RETURNING id, created_at, updated_at";

/// Records the commands' rows, in the order given, on `conn` (a transaction, or a plain
/// connection when this is the whole commit), taking the solo-writer lock shared when given its
/// key. Each command's stamps, in the same order. At most one command per VM: a VM's row cannot
/// be written twice by one statement.
pub async fn record<'c, E>(
    conn: E,
    commands: &[&Rows],
    solo_lock: Option<i64>,
) -> Result<Vec<Stamps>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    record_or_refusal(conn, commands, solo_lock)
        .await
        .map_err(super::repository::conflict_on_duplicate)
}

/// [`record`] for one command.
pub async fn record_one<'c, E>(
    conn: E,
    command: &Rows,
    solo_lock: Option<i64>,
) -> Result<Stamps, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    record(conn, &[command], solo_lock)
        .await?
        .pop()
        .ok_or_else(|| {
            StoreError::Unexpected(anyhow::anyhow!(
                "a recorded command came back without stamps"
            ))
        })
}

/// [`record`], with PostgreSQL's own error: a `Database` error means the statement was refused
/// and nothing of it was written; any other may have committed.
pub async fn record_or_refusal<'c, E>(
    conn: E,
    commands: &[&Rows],
    solo_lock: Option<i64>,
) -> Result<Vec<Stamps>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let events = commands.iter().map(|c| c.sequences.len()).sum();
    let mut vm_ids = Vec::with_capacity(events);
    let mut sequences = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut versions = Vec::with_capacity(events);
    let mut payloads = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    for c in commands {
        for (i, sequence) in c.sequences.iter().enumerate() {
            vm_ids.push(c.vm_id.as_str());
            sequences.push(*sequence);
            types.push(c.types[i]);
            versions.push(c.versions[i].as_str());
            payloads.push(Json(&*c.payloads[i]));
            metadata.push(Json(&*c.metadata));
        }
    }
    let column = |f: fn(&Rows) -> &str| commands.iter().map(|c| f(c)).collect::<Vec<_>>();
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(RECORD)
        .bind(&vm_ids)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .bind(column(|c| &c.vm_id))
        .bind(column(|c| &c.owner_id))
        .bind(column(|c| &c.owner_name))
        .bind(column(|c| &c.name))
        .bind(column(|c| c.status))
        .bind(commands.iter().map(|c| c.version).collect::<Vec<_>>())
        .bind(commands.iter().map(|c| Json(&*c.state)).collect::<Vec<_>>())
        .bind(solo_lock)
        .fetch_all(conn)
        .await?;
    // A VM without a row back: the list already held a later version (its stamps are not
    // needed to be exact).
    let now = Utc::now();
    Ok(commands
        .iter()
        .map(|c| {
            let (created_at, updated_at) = rows
                .iter()
                .find(|(id, _, _)| *id == c.vm_id)
                .map_or((now, now), |(_, created, updated)| (*created, *updated));
            Stamps {
                created_at,
                updated_at,
            }
        })
        .collect())
}

fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, StoreError> {
    serde_json::value::to_raw_value(value).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("a command could not be serialised"))
    })
}

fn to_i64(n: usize) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|e| StoreError::Unexpected(anyhow::Error::new(e).context("a sequence overflowed")))
}
