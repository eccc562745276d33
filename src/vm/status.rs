//! The VM lifecycle in one place: which statuses exist, which operation each status accepts, and
//! where an accepted operation leads. Every `(status, operation)` pair is spelled out — there is
//! no catch-all arm — so adding a status or an operation does not compile until each rule for it
//! has been decided.

use serde::{Deserialize, Serialize};

/// Where a VM is in its life. Serialised lower-case, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Creating,
    Stopped,
    Starting,
    Running,
    Stopping,
    Pausing,
    Paused,
    Resuming,
    Rebooting,
    Deleting,
    Deleted,
    Error,
    Crashed,
}

impl VmStatus {
    pub const ALL: [VmStatus; 13] = [
        VmStatus::Creating,
        VmStatus::Stopped,
        VmStatus::Starting,
        VmStatus::Running,
        VmStatus::Stopping,
        VmStatus::Pausing,
        VmStatus::Paused,
        VmStatus::Resuming,
        VmStatus::Rebooting,
        VmStatus::Deleting,
        VmStatus::Deleted,
        VmStatus::Error,
        VmStatus::Crashed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Creating => "creating",
            VmStatus::Stopped => "stopped",
            VmStatus::Starting => "starting",
            VmStatus::Running => "running",
            VmStatus::Stopping => "stopping",
            VmStatus::Pausing => "pausing",
            VmStatus::Paused => "paused",
            VmStatus::Resuming => "resuming",
            VmStatus::Rebooting => "rebooting",
            VmStatus::Deleting => "deleting",
            VmStatus::Deleted => "deleted",
            VmStatus::Error => "error",
            VmStatus::Crashed => "crashed",
        }
    }

    pub fn parse(s: &str) -> Option<VmStatus> {
        VmStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a QEMU process is expected to exist in this status. The reconciler re-attaches
    /// these after a restart and records the rest as they are.
    pub fn expects_process(self) -> bool {
        match self {
            VmStatus::Running
            | VmStatus::Paused
            | VmStatus::Pausing
            | VmStatus::Resuming
            | VmStatus::Stopping
            | VmStatus::Rebooting => true,
            VmStatus::Creating
            | VmStatus::Stopped
            | VmStatus::Starting
            | VmStatus::Deleting
            | VmStatus::Deleted
            | VmStatus::Error
            | VmStatus::Crashed => false,
        }
    }
}

impl std::fmt::Display for VmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a job does to a VM. Each accepted command yields exactly one job of one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Provision,
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Reset,
    Delete,
    /// A change of the VM's ISO CD-ROM medium: live on a running machine, recorded for the next
    /// start otherwise. The VM keeps its status while it runs.
    Media,
    /// A change of the VM's disk snapshots (take, restore, delete): live through QMP on a running
    /// machine, with `qemu-img` otherwise. The VM keeps its status while it runs.
    Snapshot,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Provision => "provision",
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Reset => "reset",
            Operation::Delete => "delete",
            Operation::Media => "media",
            Operation::Snapshot => "snapshot",
        }
    }

    /// What the operation does, to finish "so it cannot ...".
    pub fn phrase(self) -> &'static str {
        match self {
            Operation::Provision => "be provisioned",
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Reset => "reset",
            Operation::Delete => "be deleted",
            Operation::Media => "change its CD-ROM",
            Operation::Snapshot => "change its disk snapshots",
        }
    }

    pub const ALL: [Operation; 10] = [
        Operation::Provision,
        Operation::Start,
        Operation::Stop,
        Operation::Restart,
        Operation::Pause,
        Operation::Resume,
        Operation::Reset,
        Operation::Delete,
        Operation::Media,
        Operation::Snapshot,
    ];

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status refuses an operation. Each maps to one stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Start asked of a VM that runs (or is paused).
    AlreadyRunning,
    /// An operation that needs a running VM, asked of one that is not.
    NotRunning,
    /// Pause asked of a paused VM.
    AlreadyPaused,
    /// Resume asked of a VM that is not paused.
    NotPaused,
    /// Delete asked of a VM that still runs.
    MustBeStopped,
    /// Another job is still working on this VM.
    Busy,
    /// The VM has been deleted.
    Gone,
}

/// The transition table: may a VM in `status` accept `operation`, and if so, which transitional
/// status does it enter while the job runs? `Provision` is only ever requested by `Create`, so
/// every existing status refuses it as busy or gone.
pub fn accept(status: VmStatus, operation: Operation) -> Result<VmStatus, Rejection> {
    use Operation as Op;
    use Rejection as R;
    use VmStatus as S;
    match (status, operation) {
        // A job is in flight: one at a time per VM.
        (
            S::Creating
            | S::Starting
            | S::Stopping
            | S::Pausing
            | S::Resuming
            | S::Rebooting
            | S::Deleting,
            Op::Provision
            | Op::Start
            | Op::Stop
            | Op::Restart
            | Op::Pause
            | Op::Resume
            | Op::Reset
            | Op::Delete
            | Op::Media
            | Op::Snapshot,
        ) => Err(R::Busy),

        (
            S::Deleted,
            Op::Provision
            | Op::Start
            | Op::Stop
            | Op::Restart
            | Op::Pause
            | Op::Resume
            | Op::Reset
            | Op::Delete
            | Op::Media
            | Op::Snapshot,
        ) => Err(R::Gone),

        // The ISO medium changes wherever the VM is: live while it runs, for its next start
        // otherwise. The VM keeps its status (the job is what makes it busy). So do its disk
        // snapshots, within the finer rules of `snapshots::snapshot_rule`.
        (S::Stopped | S::Crashed | S::Error | S::Running | S::Paused, Op::Media | Op::Snapshot) => {
            Ok(status)
        }

        // Powered off, whether cleanly, after a crash, or after a failed job.
        (S::Stopped | S::Crashed | S::Error, Op::Start) => Ok(S::Starting),
        (S::Stopped | S::Crashed | S::Error, Op::Delete) => Ok(S::Deleting),
        (S::Stopped | S::Crashed, Op::Stop) => Err(R::NotRunning),
        // A failed job may have left QEMU behind: stopping an errored VM cleans it up.
        (S::Error, Op::Stop) => Ok(S::Stopping),
        (S::Stopped | S::Crashed | S::Error, Op::Restart | Op::Pause | Op::Reset | Op::Resume) => {
            Err(R::NotRunning)
        }
        (S::Stopped | S::Crashed | S::Error, Op::Provision) => Err(R::Busy),

        (S::Running, Op::Start) => Err(R::AlreadyRunning),
        (S::Running, Op::Stop) => Ok(S::Stopping),
        (S::Running, Op::Restart | Op::Reset) => Ok(S::Rebooting),
        (S::Running, Op::Pause) => Ok(S::Pausing),
        (S::Running, Op::Resume) => Err(R::NotPaused),
        (S::Running, Op::Delete) => Err(R::MustBeStopped),
        (S::Running, Op::Provision) => Err(R::Busy),

        (S::Paused, Op::Start) => Err(R::AlreadyRunning),
        (S::Paused, Op::Stop) => Ok(S::Stopping),
        (S::Paused, Op::Restart) => Ok(S::Rebooting),
        (S::Paused, Op::Reset) => Err(R::AlreadyPaused),
        (S::Paused, Op::Pause) => Err(R::AlreadyPaused),
        (S::Paused, Op::Resume) => Ok(S::Resuming),
        (S::Paused, Op::Delete) => Err(R::MustBeStopped),
        (S::Paused, Op::Provision) => Err(R::Busy),
    }
}

/// Whether a VM in `status` may have its settings changed, and whether the change needs a
/// restart to reach the running machine.
pub fn reconfigurable(status: VmStatus) -> Result<bool, Rejection> {
    use VmStatus as S;
    match status {
        S::Stopped | S::Crashed | S::Error => Ok(false),
        S::Running | S::Paused => Ok(true),
        S::Creating
        | S::Starting
        | S::Stopping
        | S::Pausing
        | S::Resuming
        | S::Rebooting
        | S::Deleting => Err(Rejection::Busy),
        S::Deleted => Err(Rejection::Gone),
    }
}

/// Whether a console of a VM in `status` may be opened: only while it runs. (A paused machine's
/// sockets are there too, but it is refused like any VM that is not running; a console opened
/// before a pause stays open.) Closing a console is always recorded.
pub fn console(status: VmStatus) -> Result<(), Rejection> {
    use VmStatus as S;
    match status {
        S::Running => Ok(()),
        S::Paused => Err(Rejection::NotRunning),
        S::Creating
        | S::Starting
        | S::Stopping
        | S::Pausing
        | S::Resuming
        | S::Rebooting
        | S::Deleting => Err(Rejection::Busy),
        S::Stopped | S::Error | S::Crashed => Err(Rejection::NotRunning),
        S::Deleted => Err(Rejection::Gone),
    }
}
