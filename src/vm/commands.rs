//! What can be asked of a VM, in the imperative. Commands carry everything the decision needs
//! (ids are made by the caller), so the aggregate stays deterministic and free of IO.

use serde::{Deserialize, Serialize};

use super::cloud_init::{BootDevice, CloudInitSpec};
use super::console::ConsoleKind;
use super::events::{Owner, VmSpec};
use super::network::NetworkSpec;
use super::process::MachineProcess;
use super::snapshots::SnapshotName;

#[derive(Debug, Clone, PartialEq)]
pub enum VmCommand {
    Create {
        vm_id: String,
        spec: VmSpec,
        owner: Owner,
        image_present: bool,
        job_id: String,
    },
    Start {
        job_id: String,
    },
    Stop {
        job_id: String,
        force: bool,
        timeout: u64,
    },
    Restart {
        job_id: String,
    },
    Pause {
        job_id: String,
    },
    Resume {
        job_id: String,
    },
    Reset {
        job_id: String,
    },
    Reconfigure(Reconfiguration),
    Delete {
        job_id: String,
    },
    /// Put image `image`'s ISO in the VM's CD-ROM, or (`None`) take the medium out.
    ChangeIso {
        job_id: String,
        image: Option<String>,
    },
    /// A viewer opens a console (the VM must be running); `session_id` names the session.
    OpenConsole {
        console: ConsoleKind,
        session_id: String,
    },
    /// A console session ended; recorded whatever the VM's status is by then.
    CloseConsole {
        console: ConsoleKind,
        session_id: String,
    },
    /// Snapshot the VM's disk (and, with `memory`, its running state) as `name`.
    TakeSnapshot {
        job_id: String,
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
    },
    /// Put the VM back as snapshot `name` left it.
    RestoreSnapshot {
        job_id: String,
        name: SnapshotName,
    },
    /// Delete snapshot `name` from the VM's disk.
    DeleteSnapshot {
        job_id: String,
        name: SnapshotName,
    },
    /// Hand the VM to another user.
    ChangeOwner {
        owner: Owner,
    },
    /// A worker reports how a job ended.
    CompleteJob {
        job_id: String,
        result: JobResult,
    },
    /// A worker reports a failed attempt it will retry.
    NoteRetry {
        job_id: String,
        attempt: u32,
        reason: String,
        retry_in_ms: u64,
    },
    /// Cancel a job no worker has taken yet.
    CancelJob {
        job_id: String,
    },
    /// The machine did something on its own (seen by the hypervisor's watcher or the reconciler).
    /// `process` names the QEMU process it is about; an observation about a process that is no
    /// longer the VM's changes nothing. `None` is about whichever process the VM has (the
    /// reconciler probing the machine's directory at start-up).
    Observe {
        process: Option<MachineProcess>,
        observed: Observed,
    },
}

/// A settings change. `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconfiguration {
    pub name: Option<String>,
    pub description: Option<String>,
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
    /// The whole new network, host ports already chosen.
    pub network: Option<NetworkSpec>,
    /// The whole new cloud-init settings (their secrets travel in the command's conditions).
    pub cloud_init: Option<CloudInitSpec>,
    pub boot_order: Option<Vec<BootDevice>>,
}

/// How a job ended, as its worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Provisioned,
    Started {
        process: MachineProcess,
        accel: String,
    },
    Stopped {
        reason: String,
    },
    Restarted {
        process: MachineProcess,
    },
    Paused,
    Resumed,
    Reset,
    Deleted,
    IsoChanged {
        image: Option<String>,
    },
    /// The snapshot is on the disk (taken now, or found there by a retried job).
    SnapshotTaken {
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
        created_at: chrono::DateTime<chrono::Utc>,
        vm_state_size: u64,
    },
    SnapshotRestored {
        name: SnapshotName,
    },
    SnapshotDeleted {
        name: SnapshotName,
    },
    /// The job gave up after `attempts` tries.
    Failed {
        reason: String,
        attempts: u32,
    },
}

/// Something a machine did that no job asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The QEMU process is gone; `clean` when it shut down in an orderly way.
    Exited {
        clean: bool,
        reason: String,
    },
    Paused,
    Resumed,
}

impl Observed {
    pub fn kind(&self) -> ObservationKind {
        match self {
            Observed::Exited { .. } => ObservationKind::Exited,
            Observed::Paused => ObservationKind::Paused,
            Observed::Resumed => ObservationKind::Resumed,
        }
    }
}

/// What kind of thing a machine was seen doing, as the log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservationKind {
    Exited,
    Paused,
    Resumed,
}
