//! Start-up reconciliation: after a crash the log is the truth. What is derived from it in the
//! same transaction (the VM list, name reservations, jobs) needs nothing; what it describes (QEMU
//! processes) and jobs a previous run had taken are brought back in line with it before the
//! server takes requests.

use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;

use crate::actors::VmRegistry;
use crate::hypervisor::{Hypervisor, Liveness};
use crate::store::{jobs, vm_view, CommandMeta};
use crate::vm::{Observed, VmCommand, VmStatus};

pub async fn on_startup(
    pool: &PgPool,
    node: &str,
    registry: &VmRegistry,
    hypervisor: &Arc<dyn Hypervisor>,
) -> anyhow::Result<()> {
    let meta = CommandMeta::system("reconciler");

    // Only this node's jobs (and those of nodes whose lease expired): another node's running
    // jobs are its own.
    let requeued = jobs::requeue_abandoned(pool, node).await?;
    if !requeued.is_empty() {
        tracing::warn!(jobs = ?requeued, "jobs the previous run had started are queued again");
    }

    let live: Vec<VmStatus> = VmStatus::ALL
        .into_iter()
        .filter(|s| s.expects_process())
        .collect();
    for vm_id in vm_view::ids_with_status(pool, &live).await? {
        let observed = match hypervisor.probe(&vm_id).await {
            Ok(Liveness::Running { paused, .. }) => {
                if let Err(e) = hypervisor.attach(&vm_id).await {
                    tracing::error!(vm_id, error = %crate::telemetry::chain(&e), "a running machine could not be re-attached");
                }
                tracing::info!(vm_id, "re-attached a running machine");
                let status = registry.inspect(&vm_id).await?.vm.status;
                match (status, paused) {
                    (Some(VmStatus::Running), true) => Some(Observed::Paused),
                    (Some(VmStatus::Paused), false) => Some(Observed::Resumed),
                    _ => None,
                }
            }
            Ok(Liveness::Unresponsive { pid }) => {
                tracing::warn!(vm_id, pid, "a machine runs but its monitor does not answer");
                if let Err(e) = hypervisor.attach(&vm_id).await {
                    tracing::error!(vm_id, error = %crate::telemetry::chain(&e), "an unresponsive machine could not be watched");
                }
                None
            }
            Ok(Liveness::NotRunning) => Some(Observed::Exited {
                clean: false,
                reason: "QEMU was not running when VoidVM started.".to_string(),
            }),
            Err(e) => {
                tracing::error!(vm_id, error = %crate::telemetry::chain(&e), "a machine could not be probed");
                None
            }
        };
        if let Some(observed) = observed {
            registry
                .execute(
                    &vm_id,
                    // What the reconciler probed is the machine as it is now, whichever process.
                    VmCommand::Observe {
                        process: None,
                        observed,
                    },
                    meta.clone(),
                )
                .await
                .with_context(|| format!("what VM {vm_id} did could not be recorded"))?;
        }
    }
    Ok(())
}
