//! What happened to a VM, in the past tense. Each event has a stable type name (its variant name)
//! and a version; changing an event's shape means a new version and an upcaster, never an edit in
//! place, because the log keeps every event ever written.
//!
//! Requests and outcomes are separate events (`StartRequested` → `VmStarted` or
//! `OperationFailed`), so the log shows both who asked and what really happened.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::cloud_init::{BootDevice, CloudInitSpec};
use super::commands::ObservationKind;
use super::console::ConsoleKind;
use super::network::NetworkSpec;
use super::snapshots::SnapshotName;
use super::status::Operation;

/// The user a VM belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub id: String,
    pub name: String,
}

/// The machine a VM asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    pub name: String,
    pub description: Option<String>,
    pub cpu: u32,
    /// MiB.
    pub memory: u64,
    /// GiB.
    pub disk: u64,
    /// The image (template) name the VM was created from.
    pub os: String,
    /// Added in `VmCreated` v2; states stored before it read as user-mode NAT without ports.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Added in `VmCreated` v3: what cloud-init is told (without its secrets); `None` attaches
    /// no NoCloud seed.
    #[serde(default)]
    pub cloud_init: Option<CloudInitSpec>,
    /// Added in `VmCreated` v3: the firmware's boot order; empty is QEMU's default (the disk).
    #[serde(default)]
    pub boot_order: Vec<BootDevice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum VmEvent {
    /// Version 2 added `spec.network`; version-1 events read as user-mode NAT with no forwarded
    /// ports. Version 3 added `spec.cloudInit` and `spec.bootOrder`; earlier events read as none
    /// and the default order (see `store::upcasters`). Version 4 added `spec.network.bridge` (and
    /// the mode `bridge`); earlier networks read as naming no bridge.
    VmCreated {
        vm_id: String,
        spec: VmSpec,
        owner: Owner,
        /// Whether the image named by `spec.os` was on the host; without it the VM gets a blank disk.
        image_present: bool,
        job_id: String,
    },
    VmProvisioned {
        job_id: String,
    },
    StartRequested {
        job_id: String,
    },
    /// Version 2 added `process_start`; version-1 events read it as unknown (see
    /// `store::upcasters`).
    VmStarted {
        job_id: String,
        pid: u32,
        /// With `pid`, names the process (see [`super::MachineProcess`]).
        process_start: Option<u64>,
        accel: String,
    },
    StopRequested {
        job_id: String,
        force: bool,
        /// Seconds to wait for the guest to power off before QEMU is told to quit.
        timeout: u64,
    },
    VmStopped {
        /// The stop job, or none when the guest powered itself off.
        job_id: Option<String>,
        reason: String,
    },
    RestartRequested {
        job_id: String,
    },
    /// Version 2 added `process_start`, as for `VmStarted`.
    VmRestarted {
        job_id: String,
        pid: u32,
        process_start: Option<u64>,
    },
    PauseRequested {
        job_id: String,
    },
    VmPaused {
        /// The pause job, or none when the machine paused on its own.
        job_id: Option<String>,
    },
    ResumeRequested {
        job_id: String,
    },
    VmResumed {
        job_id: Option<String>,
    },
    ResetRequested {
        job_id: String,
    },
    VmReset {
        job_id: String,
    },
    /// Version 2 added `network` (the whole new network, with its host ports); version-1 events
    /// read as not changing it. Version 3 added `cloudInit` (the whole new settings, without
    /// secrets: a new one always counts as a change, since its secrets cannot be compared here)
    /// and `bootOrder`; earlier events read as changing neither (see `store::upcasters`). Version 4
    /// added `network.bridge` (and the mode `bridge`); earlier networks read as naming no bridge.
    VmReconfigured {
        name: Option<String>,
        description: Option<String>,
        cpu: Option<u32>,
        memory: Option<u64>,
        network: Option<NetworkSpec>,
        cloud_init: Option<CloudInitSpec>,
        boot_order: Option<Vec<BootDevice>>,
        requires_restart: bool,
    },
    /// The ISO CD-ROM's medium is to change: `image` (an image with an `image.iso`) goes in, or,
    /// for none, the medium comes out. Opens a `media` job.
    IsoChangeRequested {
        job_id: String,
        image: Option<String>,
    },
    /// The ISO CD-ROM holds `image` now (or nothing): changed live on a running machine, or
    /// recorded for its next start.
    VmIsoChanged {
        job_id: String,
        image: Option<String>,
    },
    /// A snapshot of the VM's disk named `name` is to be taken; with `memory`, of its running
    /// state too. Opens a `snapshot` job.
    SnapshotRequested {
        job_id: String,
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
    },
    /// The VM's disk snapshot is on its disk: taken live through QMP, or with `qemu-img` on a
    /// stopped machine. `vm_state_size` is the bytes of saved machine state (0 without memory).
    SnapshotTaken {
        job_id: String,
        name: SnapshotName,
        description: Option<String>,
        memory: bool,
        created_at: chrono::DateTime<chrono::Utc>,
        vm_state_size: u64,
    },
    /// The VM is to be put back as snapshot `name` left it (`memory` says whether that snapshot
    /// holds the machine's running state). Opens a `snapshot` job.
    SnapshotRestoreRequested {
        job_id: String,
        name: SnapshotName,
        memory: bool,
    },
    /// The VM is back as snapshot `name` left it: its disk, and, for a memory snapshot on a
    /// running machine, its running state (the guest goes on from there without a reboot).
    SnapshotRestored {
        job_id: String,
        name: SnapshotName,
    },
    /// Snapshot `name` is to be deleted from the VM's disk. Opens a `snapshot` job.
    SnapshotDeleteRequested {
        job_id: String,
        name: SnapshotName,
    },
    /// Snapshot `name` is no longer on the VM's disk.
    SnapshotDeleted {
        job_id: String,
        name: SnapshotName,
    },
    /// The VM was handed to another user (their former owner's account is being deleted).
    VmOwnerChanged {
        from: Owner,
        to: Owner,
    },
    DeleteRequested {
        job_id: String,
    },
    VmDeleted {
        job_id: String,
    },
    /// QEMU went away without being asked to. `job_id` names a job it cut short, if any.
    VmCrashed {
        reason: String,
        job_id: Option<String>,
    },
    /// A job gave up; the VM is left in `error` with the reason.
    ///
    /// Version 2 added `attempts`; version-1 events are read as one attempt (see
    /// `store::upcasters`). Version 3 added the operation `media`, version 4 the operation
    /// `snapshot`; earlier ones read unchanged.
    OperationFailed {
        job_id: String,
        operation: Operation,
        reason: String,
        /// How many times a worker tried; 0 when the machine ended the job before a worker
        /// reported back.
        attempts: u32,
    },
    /// A job's attempt failed for a reason that may pass; a worker tries again later. The VM's
    /// state does not change: this is for the record. Version 2 added the operation `media`,
    /// version 3 the operation `snapshot`; earlier events read unchanged.
    OperationRetried {
        job_id: String,
        operation: Operation,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        reason: String,
        /// How long until the next attempt, in milliseconds.
        retry_in_ms: u64,
    },
    /// A queued job was cancelled before a worker took it; the VM is back where it was.
    JobCancelled {
        job_id: String,
    },
    /// The watcher saw a process that is no longer the VM's do something (typically the old
    /// process of a restart exiting after the new one started). Nothing changed; this is for the
    /// record.
    StaleObservationIgnored {
        /// The process the observation was about.
        pid: u32,
        process_start: Option<u64>,
        observation: ObservationKind,
        /// Why the process exited, for an exit.
        reason: Option<String>,
        /// The VM's process at the time, if it had one.
        current_pid: Option<u32>,
    },
    /// A user (the event's actor) opened a console of the running VM. `session_id` pairs it with
    /// its `ConsoleClosed`; a server that crashes leaves the open unmatched. Changes nothing.
    ConsoleOpened {
        console: ConsoleKind,
        session_id: String,
    },
    /// The console session `session_id` ended (the viewer left, dropped the connection, or the
    /// machine stopped). Changes nothing.
    ConsoleClosed {
        console: ConsoleKind,
        session_id: String,
    },
}

/// How an event changes the job table, which a database trigger maintains from event metadata in
/// the same transaction as the event (see `migrations/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEffect<'a> {
    Opens {
        job_id: &'a str,
        operation: Operation,
    },
    Closes {
        job_id: &'a str,
        outcome: JobOutcome,
        error: Option<&'a str>,
    },
    /// Says something about a job without opening or closing it.
    Concerns { job_id: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

impl VmEvent {
    /// The stable name stored in the log's `event_type` column.
    pub fn type_name(&self) -> &'static str {
        match self {
            VmEvent::VmCreated { .. } => "VmCreated",
            VmEvent::VmProvisioned { .. } => "VmProvisioned",
            VmEvent::StartRequested { .. } => "StartRequested",
            VmEvent::VmStarted { .. } => "VmStarted",
            VmEvent::StopRequested { .. } => "StopRequested",
            VmEvent::VmStopped { .. } => "VmStopped",
            VmEvent::RestartRequested { .. } => "RestartRequested",
            VmEvent::VmRestarted { .. } => "VmRestarted",
            VmEvent::PauseRequested { .. } => "PauseRequested",
            VmEvent::VmPaused { .. } => "VmPaused",
            VmEvent::ResumeRequested { .. } => "ResumeRequested",
            VmEvent::VmResumed { .. } => "VmResumed",
            VmEvent::ResetRequested { .. } => "ResetRequested",
            VmEvent::VmReset { .. } => "VmReset",
            VmEvent::VmReconfigured { .. } => "VmReconfigured",
            VmEvent::IsoChangeRequested { .. } => "IsoChangeRequested",
            VmEvent::VmIsoChanged { .. } => "VmIsoChanged",
            VmEvent::SnapshotRequested { .. } => "SnapshotRequested",
            VmEvent::SnapshotTaken { .. } => "SnapshotTaken",
            VmEvent::SnapshotRestoreRequested { .. } => "SnapshotRestoreRequested",
            VmEvent::SnapshotRestored { .. } => "SnapshotRestored",
            VmEvent::SnapshotDeleteRequested { .. } => "SnapshotDeleteRequested",
            VmEvent::SnapshotDeleted { .. } => "SnapshotDeleted",
            VmEvent::VmOwnerChanged { .. } => "VmOwnerChanged",
            VmEvent::DeleteRequested { .. } => "DeleteRequested",
            VmEvent::VmDeleted { .. } => "VmDeleted",
            VmEvent::VmCrashed { .. } => "VmCrashed",
            VmEvent::OperationFailed { .. } => "OperationFailed",
            VmEvent::OperationRetried { .. } => "OperationRetried",
            VmEvent::JobCancelled { .. } => "JobCancelled",
            VmEvent::StaleObservationIgnored { .. } => "StaleObservationIgnored",
            VmEvent::ConsoleOpened { .. } => "ConsoleOpened",
            VmEvent::ConsoleClosed { .. } => "ConsoleClosed",
        }
    }

    /// The current version of this event's shape.
    pub fn version(&self) -> u32 {
        match self {
            VmEvent::VmCreated { .. }
            | VmEvent::VmReconfigured { .. }
            | VmEvent::OperationFailed { .. } => 4,
            VmEvent::OperationRetried { .. } => 3,
            VmEvent::VmStarted { .. } | VmEvent::VmRestarted { .. } => 2,
            VmEvent::VmProvisioned { .. }
            | VmEvent::StartRequested { .. }
            | VmEvent::StopRequested { .. }
            | VmEvent::VmStopped { .. }
            | VmEvent::RestartRequested { .. }
            | VmEvent::PauseRequested { .. }
            | VmEvent::VmPaused { .. }
            | VmEvent::ResumeRequested { .. }
            | VmEvent::VmResumed { .. }
            | VmEvent::ResetRequested { .. }
            | VmEvent::VmReset { .. }
            | VmEvent::VmOwnerChanged { .. }
            | VmEvent::IsoChangeRequested { .. }
            | VmEvent::VmIsoChanged { .. }
            | VmEvent::SnapshotRequested { .. }
            | VmEvent::SnapshotTaken { .. }
            | VmEvent::SnapshotRestoreRequested { .. }
            | VmEvent::SnapshotRestored { .. }
            | VmEvent::SnapshotDeleteRequested { .. }
            | VmEvent::SnapshotDeleted { .. }
            | VmEvent::DeleteRequested { .. }
            | VmEvent::VmDeleted { .. }
            | VmEvent::VmCrashed { .. }
            | VmEvent::JobCancelled { .. }
            | VmEvent::StaleObservationIgnored { .. }
            | VmEvent::ConsoleOpened { .. }
            | VmEvent::ConsoleClosed { .. } => 1,
        }
    }

    /// Every event type name, for schema checks and filters.
    pub const TYPE_NAMES: [&'static str; 33] = [
        "VmCreated",
        "VmProvisioned",
        "StartRequested",
        "VmStarted",
        "StopRequested",
        "VmStopped",
        "RestartRequested",
        "VmRestarted",
        "PauseRequested",
        "VmPaused",
        "ResumeRequested",
        "VmResumed",
        "ResetRequested",
        "VmReset",
        "VmReconfigured",
        "VmOwnerChanged",
        "IsoChangeRequested",
        "VmIsoChanged",
        "SnapshotRequested",
        "SnapshotTaken",
        "SnapshotRestoreRequested",
        "SnapshotRestored",
        "SnapshotDeleteRequested",
        "SnapshotDeleted",
        "DeleteRequested",
        "VmDeleted",
        "VmCrashed",
        "OperationFailed",
        "OperationRetried",
        "JobCancelled",
        "StaleObservationIgnored",
        "ConsoleOpened",
        "ConsoleClosed",
    ];

    /// The job this event opens or closes, if any.
    pub fn job_effect(&self) -> Option<JobEffect<'_>> {
        fn opens(job_id: &str, operation: Operation) -> Option<JobEffect<'_>> {
            Some(JobEffect::Opens { job_id, operation })
        }
        fn succeeds(job_id: &str) -> Option<JobEffect<'_>> {
            Some(JobEffect::Closes {
                job_id,
                outcome: JobOutcome::Succeeded,
                error: None,
            })
        }
        match self {
            VmEvent::VmCreated { job_id, .. } => opens(job_id, Operation::Provision),
            VmEvent::StartRequested { job_id } => opens(job_id, Operation::Start),
            VmEvent::StopRequested { job_id, .. } => opens(job_id, Operation::Stop),
            VmEvent::RestartRequested { job_id } => opens(job_id, Operation::Restart),
            VmEvent::PauseRequested { job_id } => opens(job_id, Operation::Pause),
            VmEvent::ResumeRequested { job_id } => opens(job_id, Operation::Resume),
            VmEvent::ResetRequested { job_id } => opens(job_id, Operation::Reset),
            VmEvent::DeleteRequested { job_id } => opens(job_id, Operation::Delete),
            VmEvent::IsoChangeRequested { job_id, .. } => opens(job_id, Operation::Media),
            VmEvent::SnapshotRequested { job_id, .. }
            | VmEvent::SnapshotRestoreRequested { job_id, .. }
            | VmEvent::SnapshotDeleteRequested { job_id, .. } => opens(job_id, Operation::Snapshot),
            VmEvent::VmProvisioned { job_id }
            | VmEvent::VmStarted { job_id, .. }
            | VmEvent::VmRestarted { job_id, .. }
            | VmEvent::VmReset { job_id }
            | VmEvent::VmIsoChanged { job_id, .. }
            | VmEvent::SnapshotTaken { job_id, .. }
            | VmEvent::SnapshotRestored { job_id, .. }
            | VmEvent::SnapshotDeleted { job_id, .. }
            | VmEvent::VmDeleted { job_id } => succeeds(job_id),
            VmEvent::VmStopped { job_id, .. }
            | VmEvent::VmPaused { job_id }
            | VmEvent::VmResumed { job_id } => job_id.as_deref().and_then(succeeds),
            VmEvent::VmCrashed { job_id, reason } => {
                job_id.as_deref().map(|job_id| JobEffect::Closes {
                    job_id,
                    outcome: JobOutcome::Failed,
                    error: Some(reason),
                })
            }
            VmEvent::OperationFailed { job_id, reason, .. } => Some(JobEffect::Closes {
                job_id,
                outcome: JobOutcome::Failed,
                error: Some(reason),
            }),
            VmEvent::JobCancelled { job_id } => Some(JobEffect::Closes {
                job_id,
                outcome: JobOutcome::Cancelled,
                error: None,
            }),
            VmEvent::OperationRetried { job_id, .. } => Some(JobEffect::Concerns { job_id }),
            VmEvent::VmReconfigured { .. }
            | VmEvent::VmOwnerChanged { .. }
            | VmEvent::StaleObservationIgnored { .. }
            | VmEvent::ConsoleOpened { .. }
            | VmEvent::ConsoleClosed { .. } => None,
        }
    }
}

impl DomainEvent for VmEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        self.version().to_string()
    }
}
