//! The VM event log's persistence over sqlx, in postgres-es's `events`/`snapshots` layout.
//!
//! It reads a stream (the latest snapshot plus later events, upcast to their current shapes), and
//! commits one command in one transaction: its events (optimistic concurrency on the stream's
//! sequence), the snapshot when one is due, the VM's name and host port reservations, its cloud-init secrets, the VM's row in the list,
//! and, through the events trigger (`migrations/0002_jobs.sql`), the jobs its events open and
//! close, and the idempotency key it was sent with and the answer it got. Either all of it is
//! visible or none of it is.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::conditions::{AnswerInput, Conditions, StoredAnswer};
use super::metadata::EventMetadata;
use super::{cloud_init, idempotency, jobs, ports, quota, vm_view, StoreError};
use crate::vm::{JobEffect, JobOutcome, Vm, VmEvent};

const AGGREGATE_TYPE: &str = <Vm as Aggregate>::TYPE;

pub struct Repository {
    pool: PgPool,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    snapshot_every: usize,
}

/// A stream as read: the state, its last sequence and the number of its latest snapshot.
pub struct Loaded {
    pub vm: Vm,
    pub version: usize,
    pub snapshot: Option<usize>,
}

/// One command's outcome, to be committed.
pub struct Commit<'a> {
    pub vm_id: &'a str,
    /// The state before the events, at sequence `version`, with snapshot number `snapshot`.
    pub before: &'a Vm,
    pub version: usize,
    pub snapshot: Option<usize>,
    pub events: &'a [VmEvent],
    /// The state after the events.
    pub after: &'a Vm,
    pub metadata: &'a EventMetadata,
    /// The idempotency key to take and the answer to build (and store with the key).
    pub conditions: &'a Conditions,
}

/// What a commit wrote: the new snapshot number, and the answer built from the state after it.
pub struct Written {
    pub snapshot: Option<usize>,
    pub answer: Option<StoredAnswer>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

impl Repository {
    pub fn new(
        pool: PgPool,
        snapshot_every: usize,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Repository {
            pool,
            upcasters,
            snapshot_every: snapshot_every.max(1),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The VM's current state: the latest snapshot plus the events after it.
    pub async fn load(&self, vm_id: &str) -> Result<Loaded, StoreError> {
        let snapshot: Option<(i64, i64, Value)> = sqlx::query_as(
            "SELECT last_sequence, current_snapshot, payload FROM snapshots
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await?;
        let (mut vm, mut version, snapshot) = match snapshot {
            Some((last, number, payload)) => {
                let number = Some(to_usize(number)?);
                match serde_json::from_value::<Vm>(payload) {
                    Ok(vm) => (vm, to_usize(last)?, number),
                    // The state's shape changed since: rebuild it from every event.
                    Err(e) => {
                        tracing::info!(vm_id, error = %e, "a snapshot no longer reads; replaying the stream");
                        (Vm::default(), 0, number)
                    }
                }
            }
            None => (Vm::default(), 0, None),
        };
        for (sequence, event) in self.events_after(vm_id, version, None).await? {
            vm.apply(event);
            version = sequence;
        }
        Ok(Loaded {
            vm,
            version,
            snapshot,
        })
    }

    /// The stream's events after `after` (up to `up_to`, if given), in their current shapes.
    pub async fn events_after(
        &self,
        vm_id: &str,
        after: usize,
        up_to: Option<usize>,
    ) -> Result<Vec<(usize, VmEvent)>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload, metadata FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
               AND ($4::bigint IS NULL OR sequence <= $4)
             ORDER BY sequence",
        )
        .bind(AGGREGATE_TYPE)
        .bind(vm_id)
        .bind(to_i64(after)?)
        .bind(up_to.map(to_i64).transpose()?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let sequence = to_usize(row.sequence)?;
                let serialized = SerializedEvent {
                    aggregate_id: vm_id.to_string(),
                    sequence,
                    aggregate_type: AGGREGATE_TYPE.to_string(),
                    event_type: row.event_type,
                    event_version: row.event_version,
                    payload: row.payload,
                    metadata: row.metadata,
                };
                let current = self.upcasters.iter().fold(serialized, |event, upcaster| {
                    if upcaster.can_upcast(&event.event_type, &event.event_version) {
                        upcaster.upcast(event)
                    } else {
                        event
                    }
                });
                let event = serde_json::from_value::<VmEvent>(current.payload).map_err(|e| {
                    StoreError::Unexpected(
                        anyhow::Error::new(e)
                            .context(format!("event {sequence} of {vm_id} could not be read")),
                    )
                })?;
                Ok((sequence, event))
            })
            .collect()
    }

    /// Commits `commit` in one transaction.
    pub async fn commit(&self, commit: &Commit<'_>) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        // First, so that a concurrent request with the same key waits for this one.
        if let Some(keyed) = &commit.conditions.key {
            idempotency::take(&mut tx, keyed).await?;
        }
        vm_view::hold_name(&mut tx, commit.before, commit.after).await?;
        ports::hold_ports(&mut tx, commit.before, commit.after).await?;
        cloud_init::hold_secrets(
            &mut tx,
            commit.conditions.secrets.as_ref(),
            commit.before,
            commit.after,
        )
        .await?;
        if let Some(defaults) = commit.conditions.quota {
            quota::check(&mut tx, defaults, commit.before, commit.after).await?;
        }
        for event in commit.events {
            if let Some(JobEffect::Closes {
                job_id,
                outcome: JobOutcome::Cancelled,
                ..
            }) = event.job_effect()
            {
                jobs::lock_queued(&mut tx, job_id).await?;
            }
        }
        insert_events(&mut tx, commit).await?;
        let snapshot = self.snapshot(&mut tx, commit).await?;
        let version = commit.version + commit.events.len();
        vm_view::upsert(&mut tx, commit.after, version).await?;
        let answer = match &commit.conditions.answer {
            Some(answer) => {
                let job = match commit.events.first().and_then(VmEvent::job_effect) {
                    Some(
                        JobEffect::Opens { job_id, .. }
                        | JobEffect::Closes { job_id, .. }
                        | JobEffect::Concerns { job_id },
                    ) if answer.needs_job() => jobs::get_in(&mut tx, job_id).await?,
                    _ => None,
                };
                let built = answer.build(&AnswerInput {
                    vm: commit.after,
                    version,
                    job,
                })?;
                if let Some(keyed) = &commit.conditions.key {
                    idempotency::answer(&mut tx, keyed, &built).await?;
                }
                Some(built)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(Written { snapshot, answer })
    }

    /// Writes the snapshot when the events cross a multiple of `snapshot_every` (as cqrs-es's
    /// snapshot store does: at the last multiple they reach).
    async fn snapshot(
        &self,
        conn: &mut PgConnection,
        commit: &Commit<'_>,
    ) -> Result<Option<usize>, StoreError> {
        let every = self.snapshot_every;
        let reached = (commit.version + commit.events.len()) / every * every;
        if reached <= commit.version {
            return Ok(commit.snapshot);
        }
        let mut vm = commit.before.clone();
        for event in &commit.events[..reached - commit.version] {
            vm.apply(event.clone());
        }
        let payload = serde_json::to_value(&vm).map_err(|e| {
            StoreError::Unexpected(anyhow::Error::new(e).context("a snapshot could not be made"))
        })?;
        let number = commit.snapshot.map_or(1, |n| n + 1);
        let written = match commit.snapshot {
            None => sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                 VALUES ($1, $2, $3, $4, $5)",
            ),
            Some(_) => sqlx::query(
                "UPDATE snapshots SET last_sequence = $3, current_snapshot = $4, payload = $5
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $4 - 1",
            ),
        }
        .bind(AGGREGATE_TYPE)
        .bind(commit.vm_id)
        .bind(to_i64(reached)?)
        .bind(to_i64(number)?)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map_err(conflict_on_duplicate)?;
        if written.rows_affected() != 1 {
            return Err(StoreError::Conflict);
        }
        Ok(Some(number))
    }
}

async fn insert_events(conn: &mut PgConnection, commit: &Commit<'_>) -> Result<(), StoreError> {
    let metadata = serde_json::to_value(commit.metadata).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("metadata could not be serialised"))
    })?;
    for (sequence, event) in (commit.version + 1..).zip(commit.events) {
        let payload = serde_json::to_value(event).map_err(|e| {
            StoreError::Unexpected(
                anyhow::Error::new(e).context("an event could not be serialised"),
            )
        })?;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(AGGREGATE_TYPE)
        .bind(commit.vm_id)
        .bind(to_i64(sequence)?)
        .bind(event.type_name())
        .bind(event.version().to_string())
        .bind(payload)
        .bind(&metadata)
        .execute(&mut *conn)
        .await
        .map_err(conflict_on_duplicate)?;
    }
    Ok(())
}

/// Another writer took the same sequence (or snapshot) first.
fn conflict_on_duplicate(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => e.into(),
    }
}

fn to_i64(n: usize) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|e| StoreError::Unexpected(anyhow::Error::new(e).context("a sequence overflowed")))
}

fn to_usize(n: i64) -> Result<usize, StoreError> {
    usize::try_from(n).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("a stored sequence is negative"))
    })
}
