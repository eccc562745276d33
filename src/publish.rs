//! The seam where committed events leave the process. The relay (`bus::relay`) publishes from
//! the log itself, so nothing here is needed for correctness; telling this node's relay at once,
//! and every node's listeners through [`Notifier`], only saves them the wait for their timers.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::notifier::Notifier;
use crate::vm::{Vm, VmEvent};

pub trait EventPublisher: Send + Sync + 'static {
    /// Called after `events` committed, in commit order for each VM.
    fn published(&self, vm: &Vm, events: &[VmEvent]);
}

/// Wakes this node's relay, and notifies every node's listeners.
pub struct AfterCommit {
    pub relay: Arc<Notify>,
    pub notifier: Notifier,
}

impl EventPublisher for AfterCommit {
    fn published(&self, vm: &Vm, events: &[VmEvent]) {
        for event in events {
            tracing::debug!(vm_id = %vm.id, event = event.type_name(), "event committed");
        }
        self.relay.notify_one();
        self.notifier.committed(events);
    }
}
