//! The statement that records commands: their events, the jobs they open, and their VMs' rows in
//! the list, written by one `INSERT` with the events and the jobs in data-modifying `WITH`s.
//! Either all of it is written or none. (The `jobs` trigger closes a job, from the event that
//! ends it, in the same statement.)
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

use super::metadata::EventMetadata;
use super::repository::Commit;
use super::StoreError;
use crate::vm::VmStatus;

/// When a VM's row was made and last changed, as the commit left it.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One command's rows, serialised once, ready to bind: its events, the job they open, and its
/// VM's row after them.
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
    job: Option<JobRow>,
}

/// The job a command's events open, read from the metadata they carry (the same on each of
/// them): a new job, queued, whose parameters are the command's first event. Before migration
/// 0020 the `jobs` trigger inserted it from each event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobRow {
    id: String,
    kind: &'static str,
    actor_id: Option<String>,
}

impl JobRow {
    /// The job the metadata opens, if any (metadata that also names an outcome opens it all the
    /// same, as the trigger did; the trigger closes a job only from metadata that opens none).
    fn of(metadata: &EventMetadata) -> Option<JobRow> {
        Some(JobRow {
            id: metadata.job_id.clone()?,
            kind: metadata.job_kind?.as_str(),
            actor_id: metadata.actor_id.clone(),
        })
    }
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
            // Without events, no job: the trigger ran on events.
            job: if n == 0 {
                None
            } else {
                JobRow::of(commit.metadata)
            },
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
            job: None,
        }
    }
}

/// Events in the order given get positions in that order: with `$20` (the statement is its
/// transaction, see [`Positions`]) the statement computes them, as the transaction's id shifted
/// left 16 bits plus the event's order in it; without, the events' position trigger counts rows
/// as they are inserted. The jobs the commands open are inserted (`$15`..`$19`; one
/// already there is left as it is; a data-modifying `WITH` runs once, whether read or not). A
/// VM's row is written unless it holds a later version already. With a lock key (`$14`), the
/// transaction takes that advisory lock shared before it writes the rows (see `super::solo`: a
/// node that does not write alone takes it in every commit).
const RECORD: &str = "
WITH recorded AS (
    INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type,
                        event_version, payload, metadata)
    SELECT CASE WHEN $20 THEN (pg_current_xact_id()::text::bigint << 16) + e.n - 1 END,
           'vm', e.vm_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[])
         WITH ORDINALITY AS e(vm_id, sequence, event_type, event_version, payload, metadata, n)
    ORDER BY e.n
    RETURNING 1
), opened AS (
    INSERT INTO jobs (id, vm_id, stream_type, kind, params, actor_id, created_at, updated_at)
    SELECT o.id, o.vm_id, 'vm', o.kind, o.params, o.actor_id, now(), now()
    FROM unnest($15::text[], $16::text[], $17::text[], $18::jsonb[], $19::text[])
         AS o(id, vm_id, kind, params, actor_id)
    ON CONFLICT (id) DO NOTHING
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

/// Who gives the statement's events their positions (migration 0021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// The statement is a transaction of its own (sent on a plain connection): its events are
    /// the transaction's, in the statement's order, and it computes their positions.
    Statement,
    /// The statement is one of its transaction's (which may write other events before or after
    /// it): the position trigger counts the transaction's events.
    Trigger,
}

/// The most events one transaction may record (positions keep 16 bits for their order).
const EVENTS_PER_TRANSACTION: usize = 1 << 16;

/// Records the commands' rows, in the order given, on `conn` (a transaction, or a plain
/// connection when this is the whole commit: see [`Positions`]), taking the solo-writer lock
/// shared when given its key. Each command's stamps, in the same order. At most one command per
/// VM: a VM's row cannot be written twice by one statement.
pub async fn record<'c, E>(
    conn: E,
    commands: &[&Rows],
    solo_lock: Option<i64>,
    positions: Positions,
) -> Result<Vec<Stamps>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    record_or_refusal(conn, commands, solo_lock, positions)
        .await
        .map_err(super::repository::conflict_on_duplicate)
}

/// [`record`] for one command.
pub async fn record_one<'c, E>(
    conn: E,
    command: &Rows,
    solo_lock: Option<i64>,
    positions: Positions,
) -> Result<Stamps, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    record(conn, &[command], solo_lock, positions)
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
    positions: Positions,
) -> Result<Vec<Stamps>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let events = commands.iter().map(|c| c.sequences.len()).sum();
    // Over the limit, the trigger counts, and refuses the transaction.
    let by_statement = positions == Positions::Statement && events <= EVENTS_PER_TRANSACTION;
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
    let jobs = Jobs::of(commands);
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
        .bind(&jobs.open_ids)
        .bind(&jobs.open_vm_ids)
        .bind(&jobs.open_kinds)
        .bind(&jobs.open_params)
        .bind(&jobs.open_actors)
        .bind(by_statement)
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

/// The columns of the jobs a statement's commands open, ready to bind.
#[derive(Default)]
struct Jobs<'r> {
    open_ids: Vec<&'r str>,
    open_vm_ids: Vec<&'r str>,
    open_kinds: Vec<&'static str>,
    open_params: Vec<Json<&'r RawValue>>,
    open_actors: Vec<Option<&'r str>>,
}

impl<'r> Jobs<'r> {
    fn of(commands: &[&'r Rows]) -> Jobs<'r> {
        let mut jobs = Jobs::default();
        for c in commands {
            if let (Some(job), Some(params)) = (&c.job, c.payloads.first()) {
                jobs.open_ids.push(&job.id);
                jobs.open_vm_ids.push(&c.vm_id);
                jobs.open_kinds.push(job.kind);
                jobs.open_params.push(Json(params));
                jobs.open_actors.push(job.actor_id.as_deref());
            }
        }
        jobs
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jobs::JobKind;
    use crate::vm::{JobOutcome, Operation};

    fn metadata(job_id: Option<&str>) -> EventMetadata {
        EventMetadata {
            actor_id: Some("user-1".into()),
            job_id: job_id.map(str::to_string),
            ..EventMetadata::default()
        }
    }

    #[test]
    fn an_event_that_opens_a_job_opens_it_with_its_kind_and_actor() {
        let m = EventMetadata {
            job_kind: Some(JobKind::Vm(Operation::Start)),
            ..metadata(Some("job-1"))
        };
        assert_eq!(
            JobRow::of(&m),
            Some(JobRow {
                id: "job-1".into(),
                kind: "start",
                actor_id: Some("user-1".into()),
            })
        );
    }

    #[test]
    fn an_event_that_closes_a_job_opens_none() {
        let m = EventMetadata {
            job_outcome: Some(JobOutcome::Failed),
            job_error: Some("no disk".into()),
            ..metadata(Some("job-1"))
        };
        assert_eq!(JobRow::of(&m), None);
    }

    #[test]
    fn metadata_that_both_opens_and_closes_opens_as_the_trigger_did() {
        let m = EventMetadata {
            job_kind: Some(JobKind::Vm(Operation::Stop)),
            job_outcome: Some(JobOutcome::Succeeded),
            ..metadata(Some("job-1"))
        };
        assert!(matches!(JobRow::of(&m), Some(JobRow { kind: "stop", .. })));
    }

    #[test]
    fn an_event_that_only_concerns_a_job_or_names_none_writes_no_job() {
        assert_eq!(JobRow::of(&metadata(Some("job-1"))), None);
        let without_id = EventMetadata {
            job_kind: Some(JobKind::Vm(Operation::Start)),
            ..metadata(None)
        };
        assert_eq!(JobRow::of(&without_id), None);
    }
}
