//! The edge between VoidVM and the machines it runs.
//!
//! Workers and the reconciler talk to a [`Hypervisor`]; the domain never does. The only real
//! implementation drives `qemu-system-x86_64` through QMP (see [`qemu`]); unit tests may fake the
//! trait, integration tests never do.
//!
//! Every operation is idempotent with respect to the machine's real state, because a job may be
//! retried after a crash: starting a machine that already runs reports it as started, stopping one
//! that is gone reports it as stopped, destroying one whose files are gone succeeds.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::vm::MachineProcess;

pub mod accel;
mod command_line;
mod control;
mod disk;
pub mod disk_snapshots;
pub mod host_network;
pub mod images;
mod launch;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod seed;
mod snapshot_img;
mod snapshot_qmp;
pub(crate) mod tools;
pub mod watch;

pub use accel::AccelSetting;
pub use disk_snapshots::{DiskSnapshot, DiskSnapshots, QemuDiskSnapshots};
pub use images::ImageCatalog;
pub use qemu::{QemuConfig, QemuHypervisor};

/// What a hypervisor needs to know to create and boot one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// The VM id (`vm-...`); it names the machine's directory under the data dir.
    pub vm_id: String,
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Size of the machine's own disk in GiB.
    pub disk_gib: u64,
    /// How to boot: from an image on the host, or a blank disk when the image is missing.
    pub boot: BootSource,
    /// The NIC (user-mode NAT or a tap on a host bridge, its MAC derived from `vm_id`) and its
    /// host port forwards, or none.
    pub network: crate::vm::NetworkSpec,
    /// The NoCloud seed, written next to the disk at each start and attached as a CD-ROM.
    pub seed: Option<seed::Seed>,
    /// The firmware's boot order; empty is QEMU's default. Ignored by direct kernel boot.
    pub boot_order: Vec<crate::vm::BootDevice>,
    /// The ISO in the machine's CD-ROM; the drive is there, empty, without one.
    pub iso: Option<PathBuf>,
}

/// Where a machine's first instructions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// No base image on the host: a blank qcow2 disk of the requested size (firmware finds nothing
    /// to boot, but the machine runs and is fully controllable).
    BlankDisk,
    /// A base disk image; the machine's disk is a qcow2 overlay backed by it.
    BaseDisk { path: PathBuf },
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`), as the test guest uses.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

/// The accelerator a machine actually runs with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// A machine that is up: what the event log records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningMachine {
    pub process: MachineProcess,
    pub accel: Accel,
    /// True when the machine was already running before the call (a retried start, a re-attach).
    pub already_running: bool,
}

/// What a liveness probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The process is alive and its QMP monitor answers.
    Running { pid: u32, paused: bool },
    /// No process (or a zombie, or a pid now used by another program).
    NotRunning,
    /// The process is alive but QMP does not answer within the probe's timeout.
    Unresponsive { pid: u32 },
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The guest powered off after the ACPI request.
    Graceful,
    /// The timeout passed (or force was asked for) and QEMU was told to quit.
    Forced,
    /// Nothing was running.
    AlreadyStopped,
}

/// What pressing the power button found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerButton {
    /// The guest was asked to power off; whether it does is seen on its exit.
    Pressed,
    /// The machine's CPUs are paused: it cannot answer ACPI, only be told to quit.
    Paused,
    /// Nothing was running.
    NotRunning,
}

/// Something a running machine did on its own, seen on its QMP event monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// QMP `SHUTDOWN`: `guest` is true when the guest asked for it; `reason` is QEMU's reason.
    Shutdown { guest: bool, reason: String },
    /// QMP `STOP`: the machine's CPUs were paused.
    Paused,
    /// QMP `RESUME`.
    Resumed,
    /// QMP `RESET`: `guest` is true when the guest rebooted itself.
    Reset { guest: bool },
    /// The QEMU process is gone. `clean` is true when a `SHUTDOWN` came before (an orderly exit),
    /// false when it died without one (killed, crashed).
    Exited { clean: bool, reason: String },
}

/// An observation about one machine's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEvent {
    pub vm_id: String,
    /// The QEMU process the observation is about: a VM's process changes at every (re)start, and
    /// what an old one did must not be taken for the new one's.
    pub process: MachineProcess,
    pub observation: Observation,
}

/// Where a hypervisor sends what it observes.
pub type ObservationSender = mpsc::UnboundedSender<MachineEvent>;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// A failure that may pass if tried again (a socket not yet up, a busy monitor).
    #[error("the hypervisor failed for a reason that may pass: {0}")]
    Transient(String),
    /// A failure that retrying will not fix (bad configuration, missing binary, QEMU refused).
    #[error("the hypervisor refused the operation: {0}")]
    Permanent(String),
    /// The machine is not running, for an operation that needs it running.
    #[error("the machine is not running")]
    NotRunning,
    /// The machine's own settings cannot work on this host (more memory than the host has):
    /// retrying will not fix it, changing the machine will. Not a failure of the server.
    #[error("the machine cannot run on this host: {0}")]
    Unfit(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl HypervisorError {
    /// Whether a job that hit this error should be retried with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            HypervisorError::Transient(_) => true,
            HypervisorError::Permanent(_)
            | HypervisorError::NotRunning
            | HypervisorError::Unfit(_)
            | HypervisorError::Unexpected(_) => false,
        }
    }

    /// Whether the cause is the machine's own settings, which its user can change: a job that
    /// fails for it is the user's to fix, logged as a warning rather than as an error.
    pub fn is_the_machines_own(&self) -> bool {
        match self {
            HypervisorError::Unfit(_) => true,
            HypervisorError::Transient(_)
            | HypervisorError::Permanent(_)
            | HypervisorError::NotRunning
            | HypervisorError::Unexpected(_) => false,
        }
    }
}

/// The operations a worker carries out. All are idempotent (see the module docs).
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// Creates the machine's directory and disk. A disk that already exists is kept.
    async fn provision(&self, spec: &MachineSpec) -> Result<(), HypervisorError>;
    /// Boots the machine detached from this process (it outlives a server restart), waits for
    /// QMP, and starts watching it. Already running: returns it with `already_running: true`.
    /// It never creates the disk: a machine that was not provisioned fails permanently.
    async fn start(&self, spec: &MachineSpec) -> Result<RunningMachine, HypervisorError>;
    /// ACPI power-down, then `quit` once `timeout` passes; `force` quits at once. A graceful stop
    /// holds its caller for up to `timeout`: workers use [`Hypervisor::power_button`] instead.
    async fn stop(
        &self,
        vm_id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<StopOutcome, HypervisorError>;
    /// One press of the ACPI power button (`system_powerdown`), without waiting for the guest:
    /// a job that waits for it does so without holding a worker (see `actors::job_steps`).
    async fn power_button(&self, vm_id: &str) -> Result<PowerButton, HypervisorError>;
    /// QMP `stop`.
    async fn pause(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// QMP `cont`.
    async fn resume(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// QMP `system_reset`.
    async fn reset(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// Puts `iso` in the machine's ISO CD-ROM (or, for `None`, takes the medium out), live
    /// through QMP. A machine that does not run gets it at its next start: nothing to do here.
    async fn change_medium(
        &self,
        vm_id: &str,
        iso: Option<&std::path::Path>,
    ) -> Result<(), HypervisorError>;
    /// Kills the machine if it still runs and removes its directory.
    async fn destroy(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// Is the machine up and answering?
    async fn probe(&self, vm_id: &str) -> Result<Liveness, HypervisorError>;
    /// Starts watching a machine that is already running (after a server restart). Watching a
    /// machine that is already watched does nothing.
    async fn attach(&self, vm_id: &str) -> Result<(), HypervisorError>;
    /// The pid of the machine's QEMU while it runs (for resource figures).
    fn pid(&self, vm_id: &str) -> Option<u32>;
    /// The accelerator new machines get (after `auto` detection).
    fn accel(&self) -> Accel;
    /// `qemu-system-x86_64 --version`'s first line, for `/system/info`.
    fn version(&self) -> String;
}
