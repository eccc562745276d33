//! Turns what the hypervisor's watchers see (a guest powering off, QEMU killed, a pause nobody
//! asked for) into commands to the VM's actor, which decides what, if anything, to record. The
//! exit of a machine whose stop or restart job waits for its guest also wakes that job.

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::registry::VmRegistry;
use super::vm_actor::Committed;
use crate::hypervisor::{MachineEvent, Observation};
use crate::store::{jobs, CommandMeta};
use crate::vm::{MachineProcess, Observed, Operation, VmCommand};

/// Records observations until the hypervisor goes away or `shutdown` is cancelled.
pub async fn observe(
    registry: VmRegistry,
    pool: PgPool,
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
        let exited = matches!(observed, Observed::Exited { .. });
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
            Ok(c) => {
                if !c.events.is_empty() {
                    tracing::info!(events = ?c.events.iter().map(|e| e.type_name()).collect::<Vec<_>>(), "recorded what the machine did");
                }
                if exited {
                    wake_waiting_job(&pool, &c, &event.process).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "an observation could not be recorded")
            }
        }
    }
}

/// A stop or restart job waiting for this machine's guest to power off goes on at once.
async fn wake_waiting_job(pool: &PgPool, c: &Committed, process: &MachineProcess) {
    let Some(pending) = &c.vm.pending else {
        return;
    };
    let waits = match pending.operation {
        Operation::Stop | Operation::Restart => true,
        Operation::Provision
        | Operation::Start
        | Operation::Pause
        | Operation::Resume
        | Operation::Reset
        | Operation::Delete
        | Operation::Media
        | Operation::Snapshot => false,
    };
    if !waits || !c.vm.current_process().is_some_and(|p| p.same_as(process)) {
        return;
    }
    match jobs::wake(pool, &pending.id).await {
        Ok(true) => tracing::debug!(job_id = %pending.id, "woke the job waiting for the guest"),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(&e), "the job waiting for the guest could not be woken; it goes on at its next press")
        }
    }
}
