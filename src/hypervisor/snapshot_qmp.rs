//! Snapshots of a running machine, through QMP on its disk's block node ([`DISK_NODE`]).
//!
//! A memory snapshot is QEMU's `snapshot-save` (the disk and the machine's state, written into the
//! qcow2 image) and is put back with `snapshot-load`: the guest goes on from where it was, without
//! a reboot. Both are QEMU *jobs*: the command starts one, which is then polled (`query-jobs`)
//! until it concludes and dismissed (`job-dismiss`). A disk-only snapshot is taken live with
//! `blockdev-snapshot-internal-sync` (`snapshot-save` always saves the memory too); deleting either
//! kind is `blockdev-snapshot-delete-internal-sync`. The read-only CD-ROMs are never named.
//!
//! A job whose worker died is retried: a QEMU job of the same id left behind is waited for and
//! dismissed first, and a snapshot already on the disk counts as taken.

use std::time::{Duration, Instant};

use qapi::qmp;
use serde::{Deserialize, Serialize};

use super::command_line::DISK_NODE;
use super::control;
use super::disk_snapshots::DiskSnapshot;
use super::paths::MachinePaths;
use super::snapshot_img::SnapshotInfo;
use super::HypervisorError;

/// How long a QEMU snapshot job may run before the attempt gives up (a retry waits for it again).
const JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a QEMU job is polled.
const JOB_POLL: Duration = Duration::from_millis(200);

/// `query-named-block-nodes`, reading only what is needed here (QEMU versions add fields).
#[derive(Debug, Clone, Serialize)]
struct QueryNamedBlockNodes {
    flat: bool,
}

impl qapi::Command for QueryNamedBlockNodes {
    type Ok = Vec<BlockNode>;
    const NAME: &'static str = "query-named-block-nodes";
    const ALLOW_OOB: bool = false;
}
impl qmp::QmpCommand for QueryNamedBlockNodes {}

#[derive(Debug, Deserialize)]
struct BlockNode {
    #[serde(rename = "node-name")]
    node_name: Option<String>,
    image: NodeImage,
}

#[derive(Debug, Deserialize)]
struct NodeImage {
    #[serde(default)]
    snapshots: Vec<SnapshotInfo>,
}

/// `query-jobs`, reading only what is needed here.
#[derive(Debug, Clone, Serialize)]
struct QueryJobs {}

impl qapi::Command for QueryJobs {
    type Ok = Vec<JobInfo>;
    const NAME: &'static str = "query-jobs";
    const ALLOW_OOB: bool = false;
}
impl qmp::QmpCommand for QueryJobs {}

#[derive(Debug, Deserialize)]
struct JobInfo {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// Takes snapshot `name` of the running machine, unless its disk already holds it.
pub async fn take(
    paths: &MachinePaths,
    name: &str,
    memory: bool,
) -> Result<DiskSnapshot, HypervisorError> {
    let job_id = format!("snapsave-{name}");
    if memory {
        settle_leftover(paths, &job_id).await?;
    }
    if find(paths, name).await?.is_none() {
        if memory {
            let save = qmp::snapshot_save {
                job_id: job_id.clone(),
                tag: name.to_string(),
                vmstate: DISK_NODE.to_string(),
                devices: vec![DISK_NODE.to_string()],
            };
            run_job(paths, &job_id, save).await?;
        } else {
            let internal = qmp::BlockdevSnapshotInternal {
                device: DISK_NODE.to_string(),
                name: name.to_string(),
            };
            control::command(paths, qmp::blockdev_snapshot_internal_sync(internal)).await?;
        }
    }
    find(paths, name)
        .await?
        .map(|s| s.disk_snapshot())
        .ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "QEMU took snapshot '{name}' but the disk does not list it"
            ))
        })
}

/// Loads memory snapshot `name` into the running machine: its disk and its running state.
pub async fn restore(paths: &MachinePaths, name: &str) -> Result<(), HypervisorError> {
    let job_id = format!("snapload-{name}");
    settle_leftover(paths, &job_id).await?;
    match find(paths, name).await? {
        None => Err(HypervisorError::Permanent(format!(
            "the disk holds no snapshot named '{name}'"
        ))),
        Some(s) if s.vm_state_size == 0 => Err(HypervisorError::Permanent(format!(
            "snapshot '{name}' holds no machine state; restore it on a stopped machine"
        ))),
        Some(_) => {
            let load = qmp::snapshot_load {
                job_id: job_id.clone(),
                tag: name.to_string(),
                vmstate: DISK_NODE.to_string(),
                devices: vec![DISK_NODE.to_string()],
            };
            run_job(paths, &job_id, load).await
        }
    }
}

/// Deletes snapshot `name` from the running machine's disk, unless it is already gone.
pub async fn delete(paths: &MachinePaths, name: &str) -> Result<(), HypervisorError> {
    if find(paths, name).await?.is_some() {
        control::command(
            paths,
            qmp::blockdev_snapshot_delete_internal_sync {
                device: DISK_NODE.to_string(),
                id: None,
                name: Some(name.to_string()),
            },
        )
        .await?;
    }
    Ok(())
}

/// Snapshot `name` on the machine's disk node, if there.
async fn find(paths: &MachinePaths, name: &str) -> Result<Option<SnapshotInfo>, HypervisorError> {
    let nodes = control::command(paths, QueryNamedBlockNodes { flat: true }).await?;
    let disk = nodes
        .into_iter()
        .find(|n| n.node_name.as_deref() == Some(DISK_NODE))
        .ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "the machine's disk has no block node '{DISK_NODE}' (it was started by an older \
                 VoidVM); restart it to snapshot it live"
            ))
        })?;
    Ok(disk.image.snapshots.into_iter().find(|s| s.name == name))
}

/// Starts a QEMU job with `command`, waits for it to conclude and dismisses it.
async fn run_job<C>(paths: &MachinePaths, job_id: &str, command: C) -> Result<(), HypervisorError>
where
    C: qmp::QmpCommand + 'static,
{
    control::command(paths, command).await?;
    let error = wait_concluded(paths, job_id).await?;
    control::command(
        paths,
        qmp::job_dismiss {
            id: job_id.to_string(),
        },
    )
    .await?;
    match error {
        None => Ok(()),
        Some(why) => Err(HypervisorError::Permanent(format!(
            "QEMU's job {job_id} failed: {why}"
        ))),
    }
}

/// A job of this id left by an earlier attempt is waited for and dismissed; what it did is read
/// from the disk afterwards.
async fn settle_leftover(paths: &MachinePaths, job_id: &str) -> Result<(), HypervisorError> {
    let jobs = control::command(paths, QueryJobs {}).await?;
    if !jobs.iter().any(|j| j.id == job_id) {
        return Ok(());
    }
    tracing::info!(
        qemu_job = job_id,
        "an earlier attempt's QEMU job is still there"
    );
    let error = wait_concluded(paths, job_id).await?;
    if let Some(why) = error {
        tracing::info!(qemu_job = job_id, reason = %why, "the earlier attempt's QEMU job had failed");
    }
    control::command(
        paths,
        qmp::job_dismiss {
            id: job_id.to_string(),
        },
    )
    .await?;
    Ok(())
}

/// Polls the job until it concludes; its error, if it failed.
async fn wait_concluded(
    paths: &MachinePaths,
    job_id: &str,
) -> Result<Option<String>, HypervisorError> {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let jobs = control::command(paths, QueryJobs {}).await?;
        let job = jobs.into_iter().find(|j| j.id == job_id).ok_or_else(|| {
            HypervisorError::Permanent(format!("QEMU's job {job_id} went away before it ended"))
        })?;
        if job.status == "concluded" {
            return Ok(job.error);
        }
        if Instant::now() >= deadline {
            return Err(HypervisorError::Transient(format!(
                "QEMU's job {job_id} is still {} after {} s",
                job.status,
                JOB_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(JOB_POLL).await;
    }
}
