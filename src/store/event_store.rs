//! The VM event stream in PostgreSQL, through cqrs-es's snapshotting event store.
//!
//! cqrs-es 0.5 applies events to the aggregate as `handle` writes them, and applies them again
//! when it builds a snapshot from the commit context. So a commit is always given the state from
//! *before* the command; the state after it is kept separately (see `VmState::commit`).

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

use super::metadata::CommandMeta;
use super::StoreError;
use crate::vm::{Vm, VmCommand, VmError, VmEvent};

#[derive(Clone)]
pub struct VmEventStore {
    store: std::sync::Arc<PersistedEventStore<PostgresEventRepository, Vm>>,
    snapshot_every: usize,
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
}

impl VmEventStore {
    pub fn new(pool: PgPool, snapshot_every: usize) -> Self {
        let repo = PostgresEventRepository::new(pool);
        VmEventStore {
            store: std::sync::Arc::new(
                PersistedEventStore::new_snapshot_store(repo, snapshot_every)
                    .with_upcasters(super::upcasters::all()),
            ),
            snapshot_every,
        }
    }

    /// The VM's current state: the latest snapshot plus the events after it.
    pub async fn load(&self, vm_id: &str) -> Result<VmState, StoreError> {
        let ctx = self
            .store
            .load_aggregate(vm_id)
            .await
            .map_err(store_error)?;
        Ok(VmState {
            vm: ctx.aggregate,
            version: ctx.current_sequence,
            snapshot: ctx.current_snapshot,
        })
    }

    /// The VM's state as of event `sequence`, rebuilt from its events (upcast to their current
    /// shapes) by the aggregate's own `apply`.
    pub async fn state_at(&self, vm_id: &str, sequence: usize) -> Result<Vm, StoreError> {
        let mut vm = Vm::default();
        for envelope in self
            .store
            .load_events(vm_id)
            .await
            .map_err(store_error)?
            .into_iter()
            .take_while(|e| e.sequence <= sequence)
        {
            vm.apply(envelope.payload);
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
        let mut after = state.vm.clone();
        let sink = EventSink::default();
        after.handle(command, &(), &sink).await?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(events);
        }
        // One event per commit carries at most one job effect (see `VmEvent::job_effect`).
        let mut metadata = meta.to_map(events.first().and_then(VmEvent::job_effect));
        // The feed shows who may see an event and the status it left, without replaying.
        metadata.insert("owner_id".into(), after.owner.id.clone());
        if let Some(status) = after.status {
            metadata.insert("status".into(), status.as_str().to_string());
        }
        let context = EventStoreAggregateContext {
            aggregate_id: state.vm_id_or_new(&after),
            aggregate: state.vm.clone(),
            current_sequence: state.version,
            current_snapshot: state.snapshot,
        };
        self.store
            .commit(events.clone(), context, metadata)
            .await
            .map_err(store_error)?;
        let version = state.version + events.len();
        if version / self.snapshot_every > state.version / self.snapshot_every {
            state.snapshot = Some(state.snapshot.map_or(1, |s| s + 1));
        }
        state.version = version;
        state.vm = after;
        Ok(events)
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

fn store_error(e: AggregateError<VmError>) -> StoreError {
    match e {
        AggregateError::AggregateConflict => StoreError::Conflict,
        AggregateError::DatabaseConnectionError(e) => StoreError::Unavailable(e),
        AggregateError::DeserializationError(e) => {
            StoreError::Unexpected(anyhow::anyhow!(e).context("a stored event could not be read"))
        }
        AggregateError::UnexpectedError(e) => {
            StoreError::Unexpected(anyhow::anyhow!(e).context("the event store failed"))
        }
        AggregateError::UserError(e) => {
            StoreError::Unexpected(anyhow::anyhow!(e).context("the event store reported a refusal"))
        }
    }
}
