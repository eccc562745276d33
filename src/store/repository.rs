//! The VM event log's persistence over sqlx, in postgres-es's `events`/`snapshots` layout.
//!
//! It reads a stream (the latest snapshot plus later events, upcast to their current shapes, in
//! one statement), and commits one command in one transaction (one statement when it writes only
//! its events and the VM's row, see `super::record`): its events (optimistic concurrency on the
//! stream's sequence), the snapshot when one is due, the VM's name and host port reservations
//! (and, for a creation, a shared lock on its image, which a delete takes exclusively), its
//! cloud-init secrets, the VM's row in the list,
//! the jobs its events open (by the same statement as the events) and close (by the events'
//! trigger, `migrations/0002_jobs.sql` and `0020`), and the idempotency key it was sent with
//! and the answer it got. Either all of it is visible or none of it is.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use super::conditions::{AnswerInput, Conditions, StoredAnswer};
use super::load_batch::{LoadRow, Loads, EVENT_ROW};
use super::metadata::EventMetadata;
use super::record_batch::Recorder;
use super::solo::SoloWriter;
use super::vm_cache::Outcome;
use super::{cloud_init, idempotency, images, jobs, ports, quota, record, vm_view, StoreError};
use crate::vm::{JobEffect, JobOutcome, Vm, VmEvent};

pub(crate) const AGGREGATE_TYPE: &str = <Vm as Aggregate>::TYPE;

pub struct Repository {
    pool: PgPool,
    /// Where images live: a VM's creation checks, under the image's lock, that its image is
    /// still there (see `store::images::hold_for_vm`).
    images_dir: Option<std::path::PathBuf>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    snapshot_every: usize,
    /// Whether commits take the solo-writer lock, and the VM cache they keep honest.
    solo: Arc<SoloWriter>,
    /// The one-statement commits, batched.
    recorder: Recorder,
    /// The loads, batched.
    loads: Loads,
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

impl Repository {
    pub fn new(
        pool: PgPool,
        snapshot_every: usize,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> Self {
        Repository {
            recorder: Recorder::new(pool.clone()),
            loads: Loads::new(pool.clone(), AGGREGATE_TYPE),
            pool,
            images_dir: None,
            upcasters,
            snapshot_every: snapshot_every.max(1),
            solo: Arc::new(SoloWriter::default()),
        }
    }

    /// Commits under `solo`'s rules, keeping its VM cache honest (one per node).
    pub fn with_solo(mut self, solo: Arc<SoloWriter>) -> Self {
        self.solo = solo;
        self
    }

    /// Checks at each VM creation that its image (found by the request) was not deleted since.
    pub fn with_images(mut self, images_dir: std::path::PathBuf) -> Self {
        self.images_dir = Some(images_dir);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The VM's current state, in one statement (with other loads, `super::load_batch`). The
    /// VM's row in the list holds its state after its latest event (both are written by one
    /// transaction, see `record`), so a load reads
    /// that row and finds no event after it; a VM without a row (a database from before the
    /// list held the state) reads its latest snapshot instead. Events after the row or snapshot
    /// (rows written by hand, or by an older version) are applied on top, in their current
    /// shapes. A row or snapshot whose shape no longer reads (the state's type changed since) is
    /// rebuilt from every event.
    pub async fn load(&self, vm_id: &str) -> Result<Loaded, StoreError> {
        let rows = self.loads.rows(vm_id).await?;
        let mut rows = rows.into_iter().peekable();
        let (mut vm, mut version, snapshot, events) = match rows.next_if(|r| r.kind != EVENT_ROW) {
            Some(row) => {
                let number = row.number.map(to_usize).transpose()?;
                match serde_json::from_str::<Vm>(row.payload.get()) {
                    Ok(vm) => (vm, to_usize(row.sequence)?, number, rows.collect()),
                    Err(e) => {
                        tracing::info!(vm_id, error = %e, "a stored state no longer reads; replaying the stream");
                        (
                            Vm::default(),
                            0,
                            number,
                            self.rows_after(vm_id, 0, None).await?,
                        )
                    }
                }
            }
            None => (Vm::default(), 0, None, rows.collect()),
        };
        for (sequence, event) in self.upcast(vm_id, events)? {
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
        let rows = self.rows_after(vm_id, after, up_to).await?;
        self.upcast(vm_id, rows)
    }

    async fn rows_after(
        &self,
        vm_id: &str,
        after: usize,
        up_to: Option<usize>,
    ) -> Result<Vec<LoadRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT 2 AS kind, sequence, NULL::bigint AS number, event_type,
                    event_version, payload, metadata
             FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
               AND ($4::bigint IS NULL OR sequence <= $4)
             ORDER BY sequence",
        )
        .bind(AGGREGATE_TYPE)
        .bind(vm_id)
        .bind(to_i64(after)?)
        .bind(up_to.map(to_i64).transpose()?)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Event rows in their current shapes (upcast), as events.
    fn upcast(&self, vm_id: &str, rows: Vec<LoadRow>) -> Result<Vec<(usize, VmEvent)>, StoreError> {
        rows.into_iter()
            .map(|row| {
                let sequence = to_usize(row.sequence)?;
                let unreadable = |e: serde_json::Error| {
                    StoreError::Unexpected(
                        anyhow::Error::new(e)
                            .context(format!("event {sequence} of {vm_id} could not be read")),
                    )
                };
                let payload = serde_json::from_str::<serde_json::Value>(row.payload.get())
                    .map_err(unreadable)?;
                let serialized = SerializedEvent {
                    aggregate_id: vm_id.to_string(),
                    sequence,
                    aggregate_type: AGGREGATE_TYPE.to_string(),
                    event_type: row.event_type,
                    event_version: row.event_version,
                    payload,
                    metadata: row.metadata,
                };
                let current = self.upcasters.iter().fold(serialized, |event, upcaster| {
                    if upcaster.can_upcast(&event.event_type, &event.event_version) {
                        upcaster.upcast(event)
                    } else {
                        event
                    }
                });
                let event =
                    serde_json::from_value::<VmEvent>(current.payload).map_err(unreadable)?;
                Ok((sequence, event))
            })
            .collect()
    }

    /// Commits `commit` in one transaction: one statement when the events and the VM's row are
    /// all it writes ([`Repository::is_plain`]), else everything in one `BEGIN`/`COMMIT`. The
    /// node's VM cache holds no row of the VM while the commit runs, and takes none read before
    /// it ended (see `super::vm_cache`).
    pub async fn commit(&self, commit: &Commit<'_>) -> Result<Written, StoreError> {
        let writing = self.solo.cache().writing(commit.vm_id);
        let written = self.commit_once(commit, self.solo.commit_lock()).await;
        writing.end(match &written {
            Ok(_) => Outcome::Committed,
            // The connection failed, or something unforeseen: it may have committed.
            Err(StoreError::Unavailable(_) | StoreError::Unexpected(_)) => Outcome::Unknown,
            Err(_) => Outcome::Refused,
        });
        written
    }

    async fn commit_once(
        &self,
        commit: &Commit<'_>,
        solo_lock: Option<i64>,
    ) -> Result<Written, StoreError> {
        if self.is_plain(commit) {
            let stamps = self
                .recorder
                .record(record::Rows::of(commit)?, solo_lock)
                .await?;
            let answer = match &commit.conditions.answer {
                Some(answer) => Some(answer.build(&AnswerInput {
                    vm: commit.after,
                    version: commit.version + commit.events.len(),
                    job: None,
                    stamps,
                })?),
                None => None,
            };
            return Ok(Written {
                snapshot: commit.snapshot,
                answer,
            });
        }
        let mut tx = super::begin(&self.pool).await?;
        // First, so that a concurrent request with the same key waits for this one.
        if let Some(keyed) = &commit.conditions.key {
            idempotency::take(&mut tx, keyed).await?;
        }
        if let Some(images_dir) = self.images_dir.as_deref() {
            if commit.version == 0 && commit.after.image_present {
                images::hold_for_vm(&mut tx, images_dir, &commit.after.spec.os).await?;
            }
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
        // After the quota's check, which may lock the owner's row for update: a share lock taken
        // first and raised later would deadlock two creations of the same owner.
        if commit.version == 0 || commit.before.owner.id != commit.after.owner.id {
            super::users::hold_owner(&mut tx, &commit.after.owner.id).await?;
        }
        for event in commit.events {
            if let Some(job_id) = cancelled_job(event) {
                jobs::lock_queued(&mut tx, job_id).await?;
            }
        }
        let rows = record::Rows::of(commit)?;
        let stamps =
            record::record_one(&mut *tx, &rows, solo_lock, record::Positions::Trigger).await?;
        let snapshot = self.snapshot(&mut tx, commit).await?;
        let version = commit.version + commit.events.len();
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
                    stamps,
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

    /// Whether `commit` writes only its events and the VM's row: not a creation or a hand-over
    /// (they hold the owner's row), no idempotency
    /// key, no name or host port reservation changing, no cloud-init secrets to write or remove, no quota to check, no job to cancel, no
    /// snapshot due, and an answer that does not show a job.
    fn is_plain(&self, commit: &Commit<'_>) -> bool {
        let (before, after) = (commit.before, commit.after);
        let conditions = commit.conditions;
        commit.version > 0
            && before.owner.id == after.owner.id
            && conditions.key.is_none()
            && conditions.answer.as_ref().is_none_or(|a| !a.needs_job())
            && !vm_view::name_changes(before, after)
            && !ports::ports_change(before, after)
            && !cloud_init::secrets_change(conditions.secrets.as_ref(), before, after)
            && (conditions.quota.is_none()
                || quota::growth(before, after) == crate::accounts::Usage::default())
            && !commit.events.iter().any(|e| cancelled_job(e).is_some())
            && !self.snapshot_due(commit)
    }

    fn snapshot_due(&self, commit: &Commit<'_>) -> bool {
        let every = self.snapshot_every;
        (commit.version + commit.events.len()) / every * every > commit.version
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

/// The job an event cancels, if it does.
fn cancelled_job(event: &VmEvent) -> Option<&str> {
    match event.job_effect() {
        Some(JobEffect::Closes {
            job_id,
            outcome: JobOutcome::Cancelled,
            ..
        }) => Some(job_id),
        _ => None,
    }
}

/// Another writer took the same sequence (or snapshot) first.
pub(super) fn conflict_on_duplicate(e: sqlx::Error) -> StoreError {
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
