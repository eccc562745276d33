//! The seam where committed events leave the process: NATS and the WebSocket feed plug in here.
//! Until then events are only logged; the event log itself stays the source of truth.

use crate::vm::{Vm, VmEvent};

pub trait EventPublisher: Send + Sync + 'static {
    /// Called after `events` committed, in commit order for each VM.
    fn published(&self, vm: &Vm, events: &[VmEvent]);
}

/// Logs each committed event at debug level.
pub struct LogPublisher;

impl EventPublisher for LogPublisher {
    fn published(&self, vm: &Vm, events: &[VmEvent]) {
        for event in events {
            tracing::debug!(vm_id = %vm.id, event = event.type_name(), "event committed");
        }
    }
}
