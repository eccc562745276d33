//! Start-up reconciliation: after a crash the log is the truth, and everything derived from it
//! (the VM list, name reservations, jobs) and everything it describes (QEMU processes) is brought
//! back in line with it before the server takes requests.

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

    for vm_id in vm_view::stale_ids(pool).await? {
        let c = registry
            .inspect(&vm_id)
            .await
            .with_context(|| format!("VM {vm_id} could not be loaded"))?;
        vm_view::upsert(pool, &c.vm, c.version).await?;
        tracing::info!(vm_id, "caught up the VM list from the log");
    }
    let released = vm_view::release_orphan_names(pool).await?;
    if released > 0 {
        tracing::info!(released, "released name reservations no VM holds");
    }

    // Only this node's jobs (and those of nodes whose lease expired): another node's running
    // jobs are its own.
    let requeued = jobs::requeue_abandoned(pool, node).await?;
    if !requeued.is_empty() {
        tracing::warn!(jobs = ?requeued, "jobs the previous run had started are queued again");
    }
    for job in jobs::cancelling(pool).await? {
        let command = VmCommand::CancelJob {
            job_id: job.id.clone(),
        };
        if registry
            .execute(&job.vm_id, command, meta.clone())
            .await
            .is_err()
        {
            jobs::abort_cancel(pool, &job.id).await?;
        }
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
