//! Disk (and memory) snapshots of a VM, as the aggregate knows them: the typed snapshot name, the
//! record kept per snapshot, and the table saying which snapshot change a VM accepts in which
//! status, and the aggregate's decisions on the snapshot commands. These are qcow2 internal
//! snapshots of the VM's disk (not the event store's snapshots of aggregate state, which are
//! something else entirely). Nothing here touches IO.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::Vm;
use super::error::VmError;
use super::events::VmEvent;
use super::status::{Operation, Rejection, VmStatus};

/// The longest snapshot name.
pub const SNAPSHOT_NAME_MAX: usize = 63;

/// A snapshot's name: 1 to 63 characters of `A-Z a-z 0-9 . _ -`, not starting with `-` (it is
/// a qcow2 snapshot tag and a `qemu-img` argument) and not only digits (QEMU looks a tag up as a
/// snapshot id first, so `2` could name another snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotName(String);

/// Why a string is not a snapshot name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotNameError {
    #[error("A snapshot name has 1 to {SNAPSHOT_NAME_MAX} characters.")]
    Length,
    #[error("A snapshot name may hold only letters, digits, '.', '_' and '-'.")]
    Characters,
    #[error("A snapshot name may not start with '-'.")]
    LeadingDash,
    #[error("A snapshot name may not be only digits (QEMU would take it for a snapshot id).")]
    OnlyDigits,
}

impl SnapshotName {
    pub fn parse(name: &str) -> Result<SnapshotName, SnapshotNameError> {
        if name.is_empty() || name.len() > SNAPSHOT_NAME_MAX {
            return Err(SnapshotNameError::Length);
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(SnapshotNameError::Characters);
        }
        if name.starts_with('-') {
            return Err(SnapshotNameError::LeadingDash);
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            return Err(SnapshotNameError::OnlyDigits);
        }
        Ok(SnapshotName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotName {
    type Error = SnapshotNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        SnapshotName::parse(&value)
    }
}

impl From<SnapshotName> for String {
    fn from(name: SnapshotName) -> String {
        name.0
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One snapshot of the VM's disk, as `GET /vms/{id}/snapshots` and the VM's history show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmSnapshot {
    #[schema(value_type = String, pattern = "^([A-Za-z._]|[0-9]+[A-Za-z._-])[A-Za-z0-9._-]*$", min_length = 1, max_length = 63)]
    pub name: SnapshotName,
    pub description: Option<String>,
    /// Whether the machine's memory (its running state) was saved too.
    pub memory: bool,
    /// When the snapshot was taken (the worker's clock).
    pub created_at: DateTime<Utc>,
    /// The VM's status when it was taken.
    pub vm_status: VmStatus,
    /// Bytes of saved machine state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
}

/// A change to a VM's snapshots, as the table below tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    Take { memory: bool },
    Restore { memory: bool },
    Delete,
}

/// The snapshot table: may a VM in `status` take, restore or delete a snapshot now? Every pair is
/// spelled out. A running (or paused) machine is changed live through QMP, a stopped one with
/// `qemu-img`; memory is only saved from a running machine, and a disk-only snapshot is only put
/// back on a stopped one (its disk cannot change under a running guest). Restoring a memory
/// snapshot on a stopped VM puts its disk back; the next start boots from that disk.
pub fn snapshot_rule(status: VmStatus, action: SnapshotAction) -> Result<(), Rejection> {
    use SnapshotAction as A;
    use VmStatus as S;
    match (status, action) {
        (
            S::Creating
            | S::Starting
            | S::Stopping
            | S::Pausing
            | S::Resuming
            | S::Rebooting
            | S::Deleting,
            A::Take { .. } | A::Restore { .. } | A::Delete,
        ) => Err(Rejection::Busy),
        (S::Deleted, A::Take { .. } | A::Restore { .. } | A::Delete) => Err(Rejection::Gone),
        (S::Running | S::Paused, A::Take { .. } | A::Restore { memory: true } | A::Delete) => {
            Ok(())
        }
        (S::Running | S::Paused, A::Restore { memory: false }) => Err(Rejection::MustBeStopped),
        (S::Stopped | S::Crashed | S::Error, A::Take { memory: true }) => {
            Err(Rejection::NotRunning)
        }
        (
            S::Stopped | S::Crashed | S::Error,
            A::Take { memory: false } | A::Restore { .. } | A::Delete,
        ) => Ok(()),
    }
}

/// The sentence for a snapshot change the table refused.
pub fn refusal(status: VmStatus, rejection: Rejection) -> String {
    match rejection {
        Rejection::NotRunning => format!(
            "A memory snapshot needs a running virtual machine; this one is {status}."
        ),
        Rejection::MustBeStopped => format!(
            "A disk-only snapshot can only be restored on a stopped virtual machine; this one is {status}: stop it first."
        ),
        Rejection::Busy => format!(
            "The virtual machine is {status}; its snapshots cannot change until that job ends."
        ),
        Rejection::Gone => "The virtual machine was deleted.".to_string(),
        Rejection::AlreadyRunning | Rejection::AlreadyPaused | Rejection::NotPaused => {
            format!("The virtual machine is {status}, so its snapshots cannot change now.")
        }
    }
}

/// The aggregate's part in snapshots: deciding the three snapshot commands and keeping the list.
impl Vm {
    /// Snapshot the VM as `name`: a new name, then the tables.
    pub(super) fn take_snapshot(
        &self,
        job_id: String,
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
    ) -> Result<Vec<VmEvent>, VmError> {
        if self.snapshot(&name).is_some() {
            return Err(VmError::SnapshotExists { name });
        }
        self.snapshot_request(SnapshotAction::Take { memory }, || {
            VmEvent::SnapshotRequested {
                job_id,
                name,
                description,
                memory,
            }
        })
    }

    /// Put the VM back as snapshot `name` left it; the request says whether it holds memory.
    pub(super) fn restore_snapshot(
        &self,
        job_id: String,
        name: SnapshotName,
    ) -> Result<Vec<VmEvent>, VmError> {
        let memory = self.known_snapshot(&name)?.memory;
        self.snapshot_request(SnapshotAction::Restore { memory }, || {
            VmEvent::SnapshotRestoreRequested {
                job_id,
                name,
                memory,
            }
        })
    }

    pub(super) fn delete_snapshot(
        &self,
        job_id: String,
        name: SnapshotName,
    ) -> Result<Vec<VmEvent>, VmError> {
        self.known_snapshot(&name)?;
        self.snapshot_request(SnapshotAction::Delete, || {
            VmEvent::SnapshotDeleteRequested { job_id, name }
        })
    }

    /// Records a snapshot on the disk and ends its job. A snapshot job keeps the status: it is
    /// the status the snapshot was taken in.
    pub(super) fn keep_snapshot(
        &mut self,
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
        created_at: DateTime<Utc>,
        vm_state_size: u64,
    ) {
        let vm_status = self.status.unwrap_or(VmStatus::Stopped);
        self.snapshots.retain(|s| s.name != name);
        self.snapshots.push(VmSnapshot {
            name,
            description,
            memory,
            created_at,
            vm_status,
            vm_state_size,
        });
        self.pending = None;
    }

    /// Forgets a deleted snapshot and ends its job.
    pub(super) fn forget_snapshot(&mut self, name: &SnapshotName) {
        self.snapshots.retain(|s| s.name != *name);
        self.pending = None;
    }

    /// The snapshot named `name`, if the VM has one.
    fn snapshot(&self, name: &SnapshotName) -> Option<&VmSnapshot> {
        self.snapshots.iter().find(|s| s.name == *name)
    }

    /// The snapshot named `name` of an existing VM, or why there is none.
    fn known_snapshot(&self, name: &SnapshotName) -> Result<&VmSnapshot, VmError> {
        let status = self.existing_status()?;
        if status == VmStatus::Deleted {
            return Err(VmError::Rejected {
                status,
                operation: Operation::Snapshot,
                rejection: Rejection::Gone,
            });
        }
        self.snapshot(name)
            .ok_or_else(|| VmError::SnapshotNotFound { name: name.clone() })
    }

    /// A snapshot change: the transition table (one job at a time), then the snapshot table.
    fn snapshot_request(
        &self,
        action: SnapshotAction,
        event: impl FnOnce() -> VmEvent,
    ) -> Result<Vec<VmEvent>, VmError> {
        let events = self.request(Operation::Snapshot, event)?;
        let status = self.existing_status()?;
        snapshot_rule(status, action)
            .map_err(|rejection| VmError::SnapshotRefused { status, rejection })?;
        Ok(events)
    }
}
