//! The VM event stream in PostgreSQL: cqrs-es's `Aggregate` decides and applies, and our own
//! repository (`super::repository`) reads and commits, one transaction per command.
//!
//! cqrs-es 0.5's `EventSink` applies events to the aggregate as `handle` writes them, so the
//! aggregate `handle` ran on is the state after the command; the state before is kept for the
//! snapshot and the name reservation.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use sqlx::PgPool;

use super::conditions::{Conditions, StoredAnswer};
use super::metadata::CommandMeta;
use super::repository::{Commit, Repository};
use super::{idempotency, StoreError};
use crate::vm::{Vm, VmCommand, VmError, VmEvent};

#[derive(Clone)]
pub struct VmEventStore {
    repo: std::sync::Arc<Repository>,
}

/// One VM's state as of a known position in its stream.
#[derive(Debug, Clone)]
pub struct VmState {
    pub vm: Vm,
    /// The sequence number of the last event applied (0: no events).
    pub version: usize,
    snapshot: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Refused(#[from] VmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An `If-Match` precondition names another version than the VM's current one.
    #[error("the virtual machine is at version {current}")]
    Stale { current: usize },
    /// The VM does not exist, is deleted, or is not the caller's ([`Conditions::viewer`]).
    #[error("no such virtual machine")]
    NotVisible,
}

/// A command's outcome: its events (possibly none), and the answer built from the state after
/// them (when the command asked for one and committed events).
pub struct Executed {
    pub events: Vec<VmEvent>,
    pub answer: Option<StoredAnswer>,
}

impl VmEventStore {
    pub fn new(pool: PgPool, snapshot_every: usize) -> Self {
        VmEventStore {
            repo: std::sync::Arc::new(Repository::new(
                pool,
                snapshot_every,
                super::upcasters::all(),
            )),
        }
    }

    /// The node's store: [`VmEventStore::new`], checking at each VM creation that its image was
    /// not deleted since the request found it, committing under `solo`'s rules and keeping the
    /// node's VM cache honest.
    pub fn for_node(
        pool: PgPool,
        snapshot_every: usize,
        images_dir: std::path::PathBuf,
        solo: std::sync::Arc<super::solo::SoloWriter>,
    ) -> Self {
        VmEventStore {
            repo: std::sync::Arc::new(
                Repository::new(pool, snapshot_every, super::upcasters::all())
                    .with_images(images_dir)
                    .with_solo(solo),
            ),
        }
    }

    /// The VM's current state: the latest snapshot plus the events after it.
    pub async fn load(&self, vm_id: &str) -> Result<VmState, StoreError> {
        let loaded = self.repo.load(vm_id).await?;
        Ok(VmState {
            vm: loaded.vm,
            version: loaded.version,
            snapshot: loaded.snapshot,
        })
    }

    /// The VM's state as of event `sequence`, rebuilt from its events (upcast to their current
    /// shapes) by the aggregate's own `apply`.
    pub async fn state_at(&self, vm_id: &str, sequence: usize) -> Result<Vm, StoreError> {
        let mut vm = Vm::default();
        for (_, event) in self.repo.events_after(vm_id, 0, Some(sequence)).await? {
            vm.apply(event);
        }
        Ok(vm)
    }

    /// Decides `command` against `state` and, when it yields events, commits them with optimistic
    /// concurrency. On success `state` is the state after the events.
    pub async fn execute(
        &self,
        state: &mut VmState,
        command: VmCommand,
        meta: &CommandMeta,
    ) -> Result<Vec<VmEvent>, CommitError> {
        let executed = self
            .execute_with(state, command, meta, &Conditions::default())
            .await?;
        Ok(executed.events)
    }

    /// [`VmEventStore::execute`] with conditions: an `If-Match` precondition, an idempotency key
    /// and the answer to build (and store with the key) from the state after the command.
    ///
    /// A key already taken (`StoreError::KeyTaken`) and a stale `If-Match` (`CommitError::Stale`)
    /// are decided here, on the state the command is decided on, before anything is written.
    pub async fn execute_with(
        &self,
        state: &mut VmState,
        command: VmCommand,
        meta: &CommandMeta,
        conditions: &Conditions,
    ) -> Result<Executed, CommitError> {
        if let Some(viewer) = &conditions.viewer {
            if !viewer.sees(&state.vm) {
                return Err(CommitError::NotVisible);
            }
        }
        if let Some(keyed) = &conditions.key {
            if idempotency::find(self.repo.pool(), &keyed.user_id, &keyed.key)
                .await?
                .is_some()
            {
                return Err(StoreError::KeyTaken.into());
            }
        }
        if let Some(if_match) = &conditions.if_match {
            if !if_match.admits(state.version) {
                return Err(CommitError::Stale {
                    current: state.version,
                });
            }
        }
        let mut after = state.vm.clone();
        let sink = EventSink::default();
        after.handle(command, &(), &sink).await?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Executed {
                events,
                answer: None,
            });
        }
        // One event per commit carries at most one job effect (see `VmEvent::job_effect`).
        // The feed shows who may see an event and the status it left, without replaying.
        let metadata = meta.event_metadata(
            events.first().and_then(VmEvent::job_effect),
            &after.owner.id,
            after.status,
        );
        let vm_id = state.vm_id_or_new(&after);
        let written = self
            .repo
            .commit(&Commit {
                vm_id: &vm_id,
                before: &state.vm,
                version: state.version,
                snapshot: state.snapshot,
                events: &events,
                after: &after,
                metadata: &metadata,
                conditions,
            })
            .await?;
        state.snapshot = written.snapshot;
        let version = state.version + events.len();
        state.version = version;
        state.vm = after;
        Ok(Executed {
            events,
            answer: written.answer,
        })
    }
}

impl VmState {
    fn vm_id_or_new(&self, after: &Vm) -> String {
        if self.vm.id.is_empty() {
            after.id.clone()
        } else {
            self.vm.id.clone()
        }
    }
}
