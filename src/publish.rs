//! The seam where committed events leave the process. The relay (`bus::relay`) publishes from
//! the log itself, so nothing here is needed for correctness; telling it that something just
//! committed only saves it the wait for PostgreSQL's notification.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::vm::{Vm, VmEvent};

pub trait EventPublisher: Send + Sync + 'static {
    /// Called after `events` committed, in commit order for each VM.
    fn published(&self, vm: &Vm, events: &[VmEvent]);
}

/// Wakes the relay.
pub struct WakeRelay(pub Arc<Notify>);

impl EventPublisher for WakeRelay {
    fn published(&self, vm: &Vm, events: &[VmEvent]) {
        for event in events {
            tracing::debug!(vm_id = %vm.id, event = event.type_name(), "event committed");
        }
        self.0.notify_one();
    }
}
