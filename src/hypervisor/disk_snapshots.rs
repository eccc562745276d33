//! Disk (and memory) snapshots of a machine: qcow2 internal snapshots of its own disk, behind the
//! small [`DiskSnapshots`] trait the snapshot jobs use.
//!
//! A machine whose QEMU runs is changed live through QMP (see [`super::snapshot_qmp`]); one that
//! does not, with `qemu-img snapshot` on its disk file (see [`super::snapshot_img`]), which QEMU's
//! image locking keeps off a disk in use. Every operation is idempotent, since a job may be retried
//! after its worker died: taking a snapshot that is already on the disk reports it, deleting one
//! that is gone succeeds, and restoring one again leaves the same result.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::paths::MachinePaths;
use super::{process, snapshot_img, snapshot_qmp, HypervisorError, QemuConfig};
use crate::vm::SnapshotName;

/// A snapshot as the disk holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSnapshot {
    pub name: String,
    /// Bytes of saved machine state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// When QEMU took it (its own record, so a retried job reports the same time).
    pub created_at: DateTime<Utc>,
}

/// What the snapshot jobs do to a machine's disk.
#[async_trait]
pub trait DiskSnapshots: Send + Sync + 'static {
    /// Takes snapshot `name` (with the machine's memory when `memory`; that needs a running
    /// machine). A snapshot of that name already on the disk is reported as taken.
    async fn take(
        &self,
        vm_id: &str,
        name: &SnapshotName,
        memory: bool,
    ) -> Result<DiskSnapshot, HypervisorError>;
    /// Puts the machine back as snapshot `name` left it: a memory snapshot on a running machine
    /// with its running state (the guest goes on from there), otherwise the disk of a machine
    /// that does not run.
    async fn restore(
        &self,
        vm_id: &str,
        name: &SnapshotName,
        memory: bool,
    ) -> Result<(), HypervisorError>;
    /// Deletes snapshot `name` from the disk; one that is not there is already deleted.
    async fn delete(&self, vm_id: &str, name: &SnapshotName) -> Result<(), HypervisorError>;
}

/// [`DiskSnapshots`] of the machines QEMU runs under a data dir.
pub struct QemuDiskSnapshots {
    qemu_img: PathBuf,
    data_dir: PathBuf,
}

impl QemuDiskSnapshots {
    /// The snapshots of the machines of `config` (its data dir as the hypervisor resolved it).
    pub fn new(config: &QemuConfig) -> QemuDiskSnapshots {
        QemuDiskSnapshots {
            qemu_img: config.qemu_img.clone(),
            data_dir: config.data_dir.clone(),
        }
    }

    /// The machine's paths, and whether its QEMU runs.
    fn machine(&self, vm_id: &str) -> Result<(MachinePaths, bool), HypervisorError> {
        let paths = MachinePaths::checked(&self.data_dir, vm_id)?;
        if !paths.disk.exists() {
            return Err(HypervisorError::Permanent(format!(
                "the machine has no disk ({})",
                paths.disk.display()
            )));
        }
        let live = process::live_pid(&paths.pid_file).is_some();
        Ok((paths, live))
    }
}

#[async_trait]
impl DiskSnapshots for QemuDiskSnapshots {
    async fn take(
        &self,
        vm_id: &str,
        name: &SnapshotName,
        memory: bool,
    ) -> Result<DiskSnapshot, HypervisorError> {
        let span = tracing::info_span!("take_snapshot", vm_id = %vm_id, snapshot = %name, memory);
        async {
            let (paths, live) = self.machine(vm_id)?;
            let taken = if live {
                snapshot_qmp::take(&paths, name.as_str(), memory).await?
            } else if memory {
                return Err(HypervisorError::Permanent(
                    "the machine is not running, and a memory snapshot needs it running"
                        .to_string(),
                ));
            } else {
                snapshot_img::take(&self.qemu_img, &paths, name.as_str()).await?
            };
            tracing::info!(live, vm_state_size = taken.vm_state_size, "snapshot taken");
            Ok(taken)
        }
        .instrument(span)
        .await
    }

    async fn restore(
        &self,
        vm_id: &str,
        name: &SnapshotName,
        memory: bool,
    ) -> Result<(), HypervisorError> {
        let span =
            tracing::info_span!("restore_snapshot", vm_id = %vm_id, snapshot = %name, memory);
        async {
            let (paths, live) = self.machine(vm_id)?;
            match (live, memory) {
                (true, true) => snapshot_qmp::restore(&paths, name.as_str()).await?,
                (true, false) => return Err(HypervisorError::Permanent(
                    "a disk-only snapshot cannot be restored while the machine runs; stop it first"
                        .to_string(),
                )),
                (false, _) => snapshot_img::restore(&self.qemu_img, &paths, name.as_str()).await?,
            }
            tracing::info!(live, "snapshot restored");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn delete(&self, vm_id: &str, name: &SnapshotName) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("delete_snapshot", vm_id = %vm_id, snapshot = %name);
        async {
            let (paths, live) = self.machine(vm_id)?;
            if live {
                snapshot_qmp::delete(&paths, name.as_str()).await?;
            } else {
                snapshot_img::delete(&self.qemu_img, &paths, name.as_str()).await?;
            }
            tracing::info!(live, "snapshot deleted");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// A snapshot's time as QEMU records it (seconds and nanoseconds since the epoch).
pub(super) fn snapshot_time(secs: i64, nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0)).unwrap_or_default()
}
