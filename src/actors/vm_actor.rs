//! One actor per VM. It rebuilds the VM's state from the snapshot plus later events when it
//! starts, handles that VM's commands strictly one at a time (so racing API calls are ordered
//! here, not in the database), commits each in one transaction with optimistic concurrency (the
//! VM's row in the list and its jobs included), and stops when idle.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use super::registry::{ActorError, Shared};
use crate::store::conditions::{Conditions, StoredAnswer};
use crate::store::event_store::CommitError;
use crate::store::{CommandMeta, VmState};
use crate::vm::{Vm, VmCommand, VmEvent};

/// The outcome of a command: the events it recorded (possibly none) and the state after them.
#[derive(Debug, Clone)]
pub struct Committed {
    pub events: Vec<VmEvent>,
    pub vm: Vm,
    pub version: usize,
    /// The answer built in the command's transaction, when it asked for one.
    pub answer: Option<StoredAnswer>,
}

#[derive(Message)]
#[rtype(result = "Result<Committed, ActorError>")]
pub struct Execute {
    pub command: VmCommand,
    pub meta: CommandMeta,
    /// Checked in the same decision as the command (`If-Match`, the idempotency key).
    pub conditions: Conditions,
}

/// Reads the VM's current state (loading it if needed).
#[derive(Message)]
#[rtype(result = "Result<Committed, ActorError>")]
pub struct Inspect;

pub struct VmActor {
    vm_id: String,
    state: Option<VmState>,
    shared: Arc<Shared>,
    idle_timer: Option<SpawnHandle>,
}

/// How often a commit that lost an optimistic-concurrency race is decided again on fresh state.
const CONFLICT_RETRIES: usize = 3;

impl VmActor {
    pub fn new(vm_id: String, shared: Arc<Shared>) -> Self {
        VmActor {
            vm_id,
            state: None,
            shared,
            idle_timer: None,
        }
    }

    fn touch(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle_timer.take() {
            ctx.cancel_future(handle);
        }
        let idle = Duration::from_secs(self.shared.idle_secs);
        self.idle_timer = Some(ctx.run_later(idle, |actor, ctx| {
            tracing::debug!(vm_id = %actor.vm_id, "VM actor idle, stopping");
            ctx.stop();
        }));
    }
}

impl Actor for VmActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.touch(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.forget(&self.vm_id);
    }
}

async fn ensure_loaded(
    shared: &Shared,
    vm_id: &str,
    state: Option<VmState>,
) -> Result<VmState, ActorError> {
    match state {
        Some(state) => Ok(state),
        None => Ok(shared.store.load(vm_id).await?),
    }
}

async fn execute(
    shared: Arc<Shared>,
    vm_id: String,
    state: Option<VmState>,
    msg: Execute,
) -> (Option<VmState>, Result<Committed, ActorError>) {
    let mut state = match ensure_loaded(&shared, &vm_id, state).await {
        Ok(state) => state,
        Err(e) => return (None, Err(e)),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shared
            .store
            .execute_with(&mut state, msg.command.clone(), &msg.meta, &msg.conditions)
            .await
        {
            Ok(crate::store::event_store::Executed { events, answer }) => {
                if !events.is_empty() {
                    shared.publish(&state.vm, &events);
                }
                let committed = Committed {
                    events,
                    vm: state.vm.clone(),
                    version: state.version,
                    answer,
                };
                return (Some(state), Ok(committed));
            }
            Err(crate::store::event_store::CommitError::Store(
                crate::store::StoreError::Conflict,
            )) if attempt <= CONFLICT_RETRIES => {
                tracing::info!(
                    vm_id,
                    attempt,
                    "another writer committed first; deciding again"
                );
                match shared.store.load(&vm_id).await {
                    Ok(fresh) => state = fresh,
                    Err(e) => return (None, Err(e.into())),
                }
            }
            Err(CommitError::Refused(e)) => return (Some(state), Err(ActorError::Refused(e))),
            Err(CommitError::Stale { current }) => {
                return (Some(state), Err(ActorError::Stale { current }))
            }
            Err(CommitError::NotVisible) => return (Some(state), Err(ActorError::NotVisible)),
            // A rule across VMs or jobs refused the commit; the state is unchanged.
            Err(crate::store::event_store::CommitError::Store(
                e @ (crate::store::StoreError::NameTaken { .. }
                | crate::store::StoreError::PortTaken { .. }
                | crate::store::StoreError::JobNotQueued { .. }
                | crate::store::StoreError::KeyTaken),
            )) => return (Some(state), Err(e.into())),
            // The stream may have moved: forget the cached state and reload next time.
            Err(crate::store::event_store::CommitError::Store(e)) => return (None, Err(e.into())),
        }
    }
}

impl Handler<Execute> for VmActor {
    type Result = AtomicResponse<Self, Result<Committed, ActorError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        self.touch(ctx);
        let span = tracing::info_span!("vm_command", vm_id = %self.vm_id, command = command_name(&msg.command));
        let fut = execute(
            self.shared.clone(),
            self.vm_id.clone(),
            self.state.take(),
            msg,
        )
        .instrument(span);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(state, result), actor, ctx| {
                // A VM with no events (an id that names no VM, or a creation refused) keeps no
                // actor: probing ids must not fill the registry.
                if state.as_ref().is_some_and(|s| s.version == 0) {
                    ctx.stop();
                }
                actor.state = state;
                result
            },
        )))
    }
}

impl Handler<Inspect> for VmActor {
    type Result = AtomicResponse<Self, Result<Committed, ActorError>>;

    fn handle(&mut self, _msg: Inspect, ctx: &mut Self::Context) -> Self::Result {
        self.touch(ctx);
        let shared = self.shared.clone();
        let vm_id = self.vm_id.clone();
        let state = self.state.take();
        let fut = async move {
            match ensure_loaded(&shared, &vm_id, state).await {
                Ok(state) => {
                    let committed = Committed {
                        events: vec![],
                        vm: state.vm.clone(),
                        version: state.version,
                        answer: None,
                    };
                    (Some(state), Ok(committed))
                }
                Err(e) => (None, Err(e)),
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(state, result), actor, _ctx| {
                actor.state = state;
                result
            },
        )))
    }
}

fn command_name(command: &VmCommand) -> &'static str {
    match command {
        VmCommand::Create { .. } => "create",
        VmCommand::Start { .. } => "start",
        VmCommand::Stop { .. } => "stop",
        VmCommand::Restart { .. } => "restart",
        VmCommand::Pause { .. } => "pause",
        VmCommand::Resume { .. } => "resume",
        VmCommand::Reset { .. } => "reset",
        VmCommand::Reconfigure(_) => "reconfigure",
        VmCommand::Delete { .. } => "delete",
        VmCommand::ChangeIso { .. } => "change_iso",
        VmCommand::TakeSnapshot { .. } => "take_snapshot",
        VmCommand::RestoreSnapshot { .. } => "restore_snapshot",
        VmCommand::DeleteSnapshot { .. } => "delete_snapshot",
        VmCommand::ChangeOwner { .. } => "change_owner",
        VmCommand::OpenConsole { .. } => "open_console",
        VmCommand::CloseConsole { .. } => "close_console",
        VmCommand::CompleteJob { .. } => "complete_job",
        VmCommand::NoteRetry { .. } => "note_retry",
        VmCommand::CancelJob { .. } => "cancel_job",
        VmCommand::Observe { .. } => "observe",
    }
}
