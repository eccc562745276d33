//! Turns what the hypervisor's watchers see (a guest powering off, QEMU killed, a pause nobody
//! asked for) into commands to the VM's actor, which decides what, if anything, to record.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::registry::VmRegistry;
use crate::hypervisor::{MachineEvent, Observation};
use crate::store::CommandMeta;
use crate::vm::{Observed, VmCommand};

/// Records observations until the hypervisor goes away or `shutdown` is cancelled.
pub async fn observe(
    registry: VmRegistry,
    mut events: mpsc::UnboundedReceiver<MachineEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let observed = match event.observation {
            // The exit that follows is what changes the VM.
            Observation::Shutdown { .. } => continue,
            // Every boot resets a few times (firmware, kernel) and a reset never changes a VM's
            // status; recording them would only bury the log in noise.
            Observation::Reset { .. } => continue,
            Observation::Paused => Observed::Paused,
            Observation::Resumed => Observed::Resumed,
            Observation::Exited { clean, reason } => Observed::Exited { clean, reason },
        };
        let span =
            tracing::info_span!("observation", vm_id = %event.vm_id, pid = event.process.pid);
        let _guard = span.enter();
        let meta = CommandMeta::system("machine watcher");
        match registry
            .execute(
                &event.vm_id,
                VmCommand::Observe {
                    process: Some(event.process),
                    observed,
                },
                meta,
            )
            .await
        {
            Ok(c) if !c.events.is_empty() => {
                tracing::info!(events = ?c.events.iter().map(|e| e.type_name()).collect::<Vec<_>>(), "recorded what the machine did");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "an observation could not be recorded")
            }
        }
    }
}
