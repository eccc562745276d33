//! What a `snapshot` job does: take, restore or delete one of the VM's disk snapshots, as the
//! event that opened the job asks (`SnapshotRequested`, `SnapshotRestoreRequested`,
//! `SnapshotDeleteRequested`), through [`crate::hypervisor::DiskSnapshots`]. Each is idempotent,
//! so a job retried after its worker died ends the same way.

use super::job_steps::JobError;
use super::worker::WorkerDeps;
use crate::store::jobs::JobRow;
use crate::vm::{JobResult, VmEvent};

/// Carries out the snapshot job and says how it ended.
pub async fn perform(deps: &WorkerDeps, job: &JobRow) -> Result<JobResult, JobError> {
    let snapshots = &deps.disk_snapshots;
    let vm_id = job.vm_id.as_str();
    match serde_json::from_value::<VmEvent>(job.params.clone()) {
        Ok(VmEvent::SnapshotRequested {
            name,
            description,
            memory,
            ..
        }) => {
            let taken = snapshots.take(vm_id, &name, memory).await?;
            Ok(JobResult::SnapshotTaken {
                name,
                description,
                memory,
                created_at: taken.created_at,
                vm_state_size: taken.vm_state_size,
            })
        }
        Ok(VmEvent::SnapshotRestoreRequested { name, memory, .. }) => {
            snapshots.restore(vm_id, &name, memory).await?;
            Ok(JobResult::SnapshotRestored { name })
        }
        Ok(VmEvent::SnapshotDeleteRequested { name, .. }) => {
            snapshots.delete(vm_id, &name).await?;
            Ok(JobResult::SnapshotDeleted { name })
        }
        _ => Err(JobError::BadParams),
    }
}
