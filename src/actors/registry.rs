//! Finds the actor of a VM, starting it when there is none. Actors live on one arbiter of their
//! own, apart from the HTTP workers, and remove themselves from the registry when they stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use sqlx::PgPool;

use super::vm_actor::{Committed, Execute, Inspect, VmActor};
use crate::publish::EventPublisher;
use crate::store::conditions::Conditions;
use crate::store::{CommandMeta, StoreError, VmEventStore};
use crate::vm::{Vm, VmCommand, VmError, VmEvent};

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The aggregate refused the command.
    #[error(transparent)]
    Refused(#[from] VmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An `If-Match` precondition names another version; nothing was recorded.
    #[error("the virtual machine is at version {current}")]
    Stale { current: usize },
    /// The VM does not exist, is deleted, or is not the caller's; nothing was recorded.
    #[error("no such virtual machine")]
    NotVisible,
    /// The actor could not be reached (it stopped, or the system is shutting down).
    #[error("the virtual machine's actor did not answer")]
    Mailbox(#[from] MailboxError),
}

/// What every VM actor shares.
pub struct Shared {
    pub store: VmEventStore,
    pub pool: PgPool,
    pub idle_secs: u64,
    pub publisher: Arc<dyn EventPublisher>,
    actors: Mutex<HashMap<String, Addr<VmActor>>>,
}

impl Shared {
    pub fn forget(&self, vm_id: &str) {
        if let Ok(mut actors) = self.actors.lock() {
            if actors.get(vm_id).is_some_and(|a| !a.connected()) {
                actors.remove(vm_id);
            }
        }
    }

    pub fn publish(&self, vm: &Vm, events: &[VmEvent]) {
        self.publisher.published(vm, events);
    }
}

#[derive(Clone)]
pub struct VmRegistry {
    shared: Arc<Shared>,
    arbiter: ArbiterHandle,
}

impl VmRegistry {
    pub fn new(
        store: VmEventStore,
        pool: PgPool,
        idle_secs: u64,
        publisher: Arc<dyn EventPublisher>,
        arbiter: ArbiterHandle,
    ) -> Self {
        VmRegistry {
            shared: Arc::new(Shared {
                store,
                pool,
                idle_secs,
                publisher,
                actors: Mutex::new(HashMap::new()),
            }),
            arbiter,
        }
    }

    fn actor(&self, vm_id: &str) -> Addr<VmActor> {
        let mut actors = match self.shared.actors.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(addr) = actors.get(vm_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let shared = self.shared.clone();
        let id = vm_id.to_string();
        let addr = VmActor::start_in_arbiter(&self.arbiter, move |_| VmActor::new(id, shared));
        actors.insert(vm_id.to_string(), addr.clone());
        addr
    }

    /// Sends a command to the VM's actor. An actor that stopped between lookup and send is
    /// started again once.
    pub async fn execute(
        &self,
        vm_id: &str,
        command: VmCommand,
        meta: CommandMeta,
    ) -> Result<Committed, ActorError> {
        self.execute_with(vm_id, command, meta, Conditions::default())
            .await
    }

    /// Sends a command with its conditions (`If-Match`, idempotency key, answer) to the VM's
    /// actor, which checks them in the same decision as the command.
    pub async fn execute_with(
        &self,
        vm_id: &str,
        command: VmCommand,
        meta: CommandMeta,
        conditions: Conditions,
    ) -> Result<Committed, ActorError> {
        for _ in 0..2 {
            let msg = Execute {
                command: command.clone(),
                meta: meta.clone(),
                conditions: conditions.clone(),
            };
            match self.actor(vm_id).send(msg).await {
                Err(MailboxError::Closed) => continue,
                other => return other?,
            }
        }
        Err(ActorError::Mailbox(MailboxError::Closed))
    }

    /// The event store, for reads that need no actor (history).
    pub fn store(&self) -> &VmEventStore {
        &self.shared.store
    }

    /// The VM's current state as its actor holds it.
    pub async fn inspect(&self, vm_id: &str) -> Result<Committed, ActorError> {
        for _ in 0..2 {
            match self.actor(vm_id).send(Inspect).await {
                Err(MailboxError::Closed) => continue,
                other => return other?,
            }
        }
        Err(ActorError::Mailbox(MailboxError::Closed))
    }
}
