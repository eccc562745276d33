//! The `Vm` aggregate: decides whether a command is allowed (through the transition table in
//! [`super::status`]) and which events record it, and folds events back into state.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::{JobResult, Observed, Reconfiguration, VmCommand};
use super::error::VmError;
use super::events::{Owner, VmEvent, VmSpec};
use super::process::MachineProcess;
use super::snapshots::VmSnapshot;
use super::status::{accept, console, reconfigurable, Operation, Rejection, VmStatus};

/// The job a VM is waiting on. A VM has at most one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingJob {
    pub id: String,
    pub operation: Operation,
    /// Where the VM goes back to if the job is cancelled before it runs.
    pub previous: VmStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vm {
    pub id: String,
    pub spec: VmSpec,
    pub owner: Owner,
    pub image_present: bool,
    /// `None` until the VM is created.
    pub status: Option<VmStatus>,
    /// Why the VM is in its status, where that needs saying (error, crash, guest power-off).
    pub status_reason: Option<String>,
    pub pending: Option<PendingJob>,
    pub pid: Option<u32>,
    /// The QEMU process the VM runs (`pid` with its start time), while it has one.
    #[serde(default)]
    pub process: Option<MachineProcess>,
    /// The VM's last process that is gone, so that its exit, seen late, is known for stale.
    #[serde(default)]
    pub ended_process: Option<MachineProcess>,
    pub accel: Option<String>,
    /// A setting changed while the machine ran; it takes effect at the next (re)start.
    pub requires_restart: bool,
    /// How many times the cloud-init settings were set; with the VM id it makes the NoCloud
    /// `instance-id`, so the guest's cloud-init runs again after a change.
    #[serde(default)]
    pub cloud_init_revision: u32,
    /// The image whose ISO is in the VM's CD-ROM, if any.
    #[serde(default)]
    pub iso: Option<String>,
    /// The snapshots on the VM's disk, oldest first.
    #[serde(default)]
    pub snapshots: Vec<VmSnapshot>,
}

/// The status an operation's job holds a VM in while it runs (`from` is where it was).
pub fn transitional(operation: Operation, from: VmStatus) -> VmStatus {
    match operation {
        Operation::Media | Operation::Snapshot => from,
        Operation::Provision => VmStatus::Creating,
        Operation::Start => VmStatus::Starting,
        Operation::Stop => VmStatus::Stopping,
        Operation::Restart | Operation::Reset => VmStatus::Rebooting,
        Operation::Pause => VmStatus::Pausing,
        Operation::Resume => VmStatus::Resuming,
        Operation::Delete => VmStatus::Deleting,
    }
}

impl Vm {
    pub(super) fn existing_status(&self) -> Result<VmStatus, VmError> {
        self.status.ok_or(VmError::NotFound)
    }

    /// Checks `operation` against the transition table and names the event that requests it.
    pub(super) fn request(
        &self,
        operation: Operation,
        event: impl FnOnce() -> VmEvent,
    ) -> Result<Vec<VmEvent>, VmError> {
        let status = self.existing_status()?;
        let busy = |rejection| VmError::Rejected {
            status,
            operation,
            rejection,
        };
        accept(status, operation).map_err(busy)?;
        // A media job leaves the status as it is: the pending job is what makes the VM busy.
        if self.pending.is_some() {
            return Err(busy(Rejection::Busy));
        }
        Ok(vec![event()])
    }

    fn pending_job(&self, job_id: &str) -> Result<&PendingJob, VmError> {
        match &self.pending {
            Some(pending) if pending.id == job_id => Ok(pending),
            Some(_) | None => Err(VmError::NotTheCurrentJob {
                job_id: job_id.to_string(),
            }),
        }
    }

    /// The pure decision: which events a command produces in the current state.
    pub fn decide(&self, command: VmCommand) -> Result<Vec<VmEvent>, VmError> {
        match command {
            VmCommand::Create {
                vm_id,
                spec,
                owner,
                image_present,
                job_id,
            } => match self.status {
                Some(_) => Err(VmError::AlreadyExists),
                None => Ok(vec![VmEvent::VmCreated {
                    vm_id,
                    spec,
                    owner,
                    image_present,
                    job_id,
                }]),
            },
            VmCommand::Start { job_id } => {
                self.request(Operation::Start, || VmEvent::StartRequested { job_id })
            }
            VmCommand::Stop {
                job_id,
                force,
                timeout,
            } => self.request(Operation::Stop, || VmEvent::StopRequested {
                job_id,
                force,
                timeout,
            }),
            VmCommand::Restart { job_id } => {
                self.request(Operation::Restart, || VmEvent::RestartRequested { job_id })
            }
            VmCommand::Pause { job_id } => {
                self.request(Operation::Pause, || VmEvent::PauseRequested { job_id })
            }
            VmCommand::Resume { job_id } => {
                self.request(Operation::Resume, || VmEvent::ResumeRequested { job_id })
            }
            VmCommand::Reset { job_id } => {
                self.request(Operation::Reset, || VmEvent::ResetRequested { job_id })
            }
            VmCommand::Delete { job_id } => {
                self.request(Operation::Delete, || VmEvent::DeleteRequested { job_id })
            }
            VmCommand::ChangeIso { job_id, image } => self.request(Operation::Media, || {
                VmEvent::IsoChangeRequested { job_id, image }
            }),
            VmCommand::TakeSnapshot {
                job_id,
                name,
                description,
                memory,
            } => self.take_snapshot(job_id, name, description, memory),
            VmCommand::RestoreSnapshot { job_id, name } => self.restore_snapshot(job_id, name),
            VmCommand::DeleteSnapshot { job_id, name } => self.delete_snapshot(job_id, name),
            VmCommand::Reconfigure(change) => self.reconfigure(change),
            VmCommand::OpenConsole {
                console: kind,
                session_id,
            } => {
                let status = self.existing_status()?;
                console(status).map_err(|rejection| VmError::NoConsole { status, rejection })?;
                Ok(vec![VmEvent::ConsoleOpened {
                    console: kind,
                    session_id,
                }])
            }
            VmCommand::CloseConsole {
                console: kind,
                session_id,
            } => {
                self.existing_status()?;
                Ok(vec![VmEvent::ConsoleClosed {
                    console: kind,
                    session_id,
                }])
            }
            VmCommand::ChangeOwner { owner } => match self.existing_status()? {
                VmStatus::Deleted => Err(VmError::Rejected {
                    status: VmStatus::Deleted,
                    operation: Operation::Delete,
                    rejection: Rejection::Gone,
                }),
                _ if owner == self.owner => Err(VmError::NothingToChange),
                _ => Ok(vec![VmEvent::VmOwnerChanged {
                    from: self.owner.clone(),
                    to: owner,
                }]),
            },
            VmCommand::CompleteJob { job_id, result } => self.complete(job_id, result),
            VmCommand::NoteRetry {
                job_id,
                attempt,
                reason,
                retry_in_ms,
            } => {
                self.existing_status()?;
                let operation = self.pending_job(&job_id)?.operation;
                Ok(vec![VmEvent::OperationRetried {
                    job_id,
                    operation,
                    attempt,
                    reason,
                    retry_in_ms,
                }])
            }
            VmCommand::CancelJob { job_id } => {
                self.existing_status()?;
                let pending = self.pending_job(&job_id)?;
                match pending.operation {
                    // A VM without its disk has nowhere to go back to.
                    Operation::Provision => Err(VmError::NotCancellable { job_id }),
                    Operation::Start
                    | Operation::Stop
                    | Operation::Restart
                    | Operation::Pause
                    | Operation::Resume
                    | Operation::Reset
                    | Operation::Delete
                    | Operation::Media
                    | Operation::Snapshot => Ok(vec![VmEvent::JobCancelled { job_id }]),
                }
            }
            VmCommand::Observe { process, observed } => self.observe(process, observed),
        }
    }

    fn reconfigure(&self, change: Reconfiguration) -> Result<Vec<VmEvent>, VmError> {
        let status = self.existing_status()?;
        let running = reconfigurable(status)
            .map_err(|rejection| VmError::NotReconfigurable { status, rejection })?;
        let name = change.name.filter(|n| *n != self.spec.name);
        let description = change
            .description
            .filter(|d| Some(d) != self.spec.description.as_ref());
        let cpu = change.cpu.filter(|c| *c != self.spec.cpu);
        let memory = change.memory.filter(|m| *m != self.spec.memory);
        let network = change.network.filter(|n| *n != self.spec.network);
        // New cloud-init settings always count: their secrets cannot be compared here.
        let cloud_init = change.cloud_init;
        let boot_order = change.boot_order.filter(|b| *b != self.spec.boot_order);
        if name.is_none()
            && description.is_none()
            && cpu.is_none()
            && memory.is_none()
            && network.is_none()
            && cloud_init.is_none()
            && boot_order.is_none()
        {
            return Err(VmError::NothingToChange);
        }
        // QEMU's NIC and its forwards, the NoCloud seed and the boot order are set when it
        // starts.
        let requires_restart = running
            && (cpu.is_some()
                || memory.is_some()
                || network.is_some()
                || cloud_init.is_some()
                || boot_order.is_some());
        Ok(vec![VmEvent::VmReconfigured {
            name,
            description,
            cpu,
            memory,
            network,
            cloud_init,
            boot_order,
            requires_restart,
        }])
    }

    fn complete(&self, job_id: String, result: JobResult) -> Result<Vec<VmEvent>, VmError> {
        self.existing_status()?;
        let operation = self.pending_job(&job_id)?.operation;
        let event = match (operation, result) {
            (operation, JobResult::Failed { reason, attempts }) => VmEvent::OperationFailed {
                job_id,
                operation,
                reason,
                attempts,
            },
            (Operation::Provision, JobResult::Provisioned) => VmEvent::VmProvisioned { job_id },
            (Operation::Start, JobResult::Started { process, accel }) => VmEvent::VmStarted {
                job_id,
                pid: process.pid,
                process_start: process.start,
                accel,
            },
            (Operation::Stop, JobResult::Stopped { reason }) => VmEvent::VmStopped {
                job_id: Some(job_id),
                reason,
            },
            (Operation::Restart, JobResult::Restarted { process }) => VmEvent::VmRestarted {
                job_id,
                pid: process.pid,
                process_start: process.start,
            },
            (Operation::Pause, JobResult::Paused) => VmEvent::VmPaused {
                job_id: Some(job_id),
            },
            (Operation::Resume, JobResult::Resumed) => VmEvent::VmResumed {
                job_id: Some(job_id),
            },
            (Operation::Reset, JobResult::Reset) => VmEvent::VmReset { job_id },
            (Operation::Delete, JobResult::Deleted) => VmEvent::VmDeleted { job_id },
            (Operation::Media, JobResult::IsoChanged { image }) => {
                VmEvent::VmIsoChanged { job_id, image }
            }
            (
                Operation::Snapshot,
                JobResult::SnapshotTaken {
                    name,
                    description,
                    memory,
                    created_at,
                    vm_state_size,
                },
            ) => VmEvent::SnapshotTaken {
                job_id,
                name,
                description,
                memory,
                created_at,
                vm_state_size,
            },
            (Operation::Snapshot, JobResult::SnapshotRestored { name }) => {
                VmEvent::SnapshotRestored { job_id, name }
            }
            (Operation::Snapshot, JobResult::SnapshotDeleted { name }) => {
                VmEvent::SnapshotDeleted { job_id, name }
            }
            (operation, _) => return Err(VmError::ResultDoesNotFit { operation }),
        };
        Ok(vec![event])
    }

    /// The process the VM runs, if any (from `pid` alone in state rebuilt from old snapshots).
    pub fn current_process(&self) -> Option<MachineProcess> {
        self.process
            .or_else(|| self.pid.map(|pid| MachineProcess { pid, start: None }))
    }

    /// Whether an observation about `process` concerns this VM: its current process, or, while
    /// it has none (a start under way), any process but the one that already ended.
    fn owns(&self, process: &MachineProcess) -> bool {
        match self.current_process() {
            Some(current) => current.same_as(process),
            None => !self
                .ended_process
                .is_some_and(|ended| ended.same_as(process)),
        }
    }

    /// An observation changes the VM only when it is about the VM's own process. One about
    /// another process that would have changed something is recorded as ignored; one that would
    /// have changed nothing anyway (the exit of a process a stop job just ended) leaves no trace.
    fn observe(
        &self,
        process: Option<MachineProcess>,
        observed: Observed,
    ) -> Result<Vec<VmEvent>, VmError> {
        let kind = observed.kind();
        let reason = match &observed {
            Observed::Exited { reason, .. } => Some(reason.clone()),
            Observed::Paused | Observed::Resumed => None,
        };
        let events = self.observe_own(observed)?;
        match process {
            Some(process) if !events.is_empty() && !self.owns(&process) => {
                Ok(vec![VmEvent::StaleObservationIgnored {
                    pid: process.pid,
                    process_start: process.start,
                    observation: kind,
                    reason,
                    current_pid: self.pid,
                }])
            }
            Some(_) | None => Ok(events),
        }
    }

    /// What an observation about the VM's own process records.
    fn observe_own(&self, observed: Observed) -> Result<Vec<VmEvent>, VmError> {
        use VmStatus as S;
        let status = self.existing_status()?;
        let pending = self.pending.as_ref();
        let events = match observed {
            Observed::Exited { clean, reason } => match status {
                // Already down, or a job is taking it down and will record that itself.
                S::Creating | S::Stopped | S::Crashed | S::Deleted | S::Deleting | S::Stopping => {
                    vec![]
                }
                S::Rebooting if pending.map(|p| p.operation) == Some(Operation::Restart) => {
                    vec![]
                }
                S::Starting
                | S::Running
                | S::Pausing
                | S::Paused
                | S::Resuming
                | S::Rebooting
                | S::Error => match (clean, pending) {
                    (true, None) => vec![VmEvent::VmStopped {
                        job_id: None,
                        reason,
                    }],
                    (true, Some(job)) => vec![VmEvent::OperationFailed {
                        job_id: job.id.clone(),
                        operation: job.operation,
                        reason: format!("The machine shut down during the operation: {reason}."),
                        attempts: 0,
                    }],
                    (false, job) => vec![VmEvent::VmCrashed {
                        reason,
                        job_id: job.map(|j| j.id.clone()),
                    }],
                },
            },
            Observed::Paused => match (status, pending) {
                (S::Running, None) => vec![VmEvent::VmPaused { job_id: None }],
                _ => vec![],
            },
            Observed::Resumed => match (status, pending) {
                (S::Paused, None) => vec![VmEvent::VmResumed { job_id: None }],
                _ => vec![],
            },
        };
        Ok(events)
    }

    fn open_job(&mut self, job_id: &str, operation: Operation) {
        let previous = self.status.unwrap_or(VmStatus::Creating);
        self.pending = Some(PendingJob {
            id: job_id.to_string(),
            operation,
            previous,
        });
        self.status = Some(transitional(operation, previous));
    }

    fn run(&mut self, pid: u32, start: Option<u64>) {
        let process = MachineProcess { pid, start };
        if let Some(previous) = self.current_process().filter(|p| !p.same_as(&process)) {
            self.ended_process = Some(previous);
        }
        self.pid = Some(pid);
        self.process = Some(process);
    }

    fn end_process(&mut self) {
        if let Some(process) = self.current_process() {
            self.ended_process = Some(process);
        }
        self.pid = None;
        self.process = None;
    }

    fn settle(&mut self, status: VmStatus, reason: Option<String>) {
        self.status = Some(status);
        self.status_reason = reason;
        self.pending = None;
    }
}

impl Aggregate for Vm {
    const TYPE: &'static str = "vm";
    type Command = VmCommand;
    type Event = VmEvent;
    type Error = VmError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VmEvent::VmCreated {
                vm_id,
                spec,
                owner,
                image_present,
                job_id,
            } => {
                self.id = vm_id;
                self.cloud_init_revision = u32::from(spec.cloud_init.is_some());
                self.spec = spec;
                self.owner = owner;
                self.image_present = image_present;
                self.open_job(&job_id, Operation::Provision);
            }
            VmEvent::StartRequested { job_id } => self.open_job(&job_id, Operation::Start),
            VmEvent::StopRequested { job_id, .. } => self.open_job(&job_id, Operation::Stop),
            VmEvent::RestartRequested { job_id } => self.open_job(&job_id, Operation::Restart),
            VmEvent::PauseRequested { job_id } => self.open_job(&job_id, Operation::Pause),
            VmEvent::ResumeRequested { job_id } => self.open_job(&job_id, Operation::Resume),
            VmEvent::ResetRequested { job_id } => self.open_job(&job_id, Operation::Reset),
            VmEvent::DeleteRequested { job_id } => self.open_job(&job_id, Operation::Delete),
            VmEvent::IsoChangeRequested { job_id, .. } => self.open_job(&job_id, Operation::Media),
            VmEvent::VmIsoChanged { image, .. } => {
                // The status stays where it was; only the job ends.
                self.iso = image;
                self.pending = None;
            }
            VmEvent::SnapshotRequested { job_id, .. }
            | VmEvent::SnapshotRestoreRequested { job_id, .. }
            | VmEvent::SnapshotDeleteRequested { job_id, .. } => {
                self.open_job(&job_id, Operation::Snapshot)
            }
            VmEvent::SnapshotTaken {
                name,
                description,
                memory,
                created_at,
                vm_state_size,
                ..
            } => self.keep_snapshot(name, description, memory, created_at, vm_state_size),
            VmEvent::SnapshotRestored { .. } => self.pending = None,
            VmEvent::SnapshotDeleted { name, .. } => self.forget_snapshot(&name),
            VmEvent::VmProvisioned { .. } => self.settle(VmStatus::Stopped, None),
            VmEvent::VmStarted {
                pid,
                process_start,
                accel,
                ..
            } => {
                self.run(pid, process_start);
                self.accel = Some(accel);
                self.requires_restart = false;
                self.settle(VmStatus::Running, None);
            }
            VmEvent::VmRestarted {
                pid, process_start, ..
            } => {
                self.run(pid, process_start);
                self.requires_restart = false;
                self.settle(VmStatus::Running, None);
            }
            VmEvent::VmStopped { reason, .. } => {
                self.end_process();
                self.settle(VmStatus::Stopped, Some(reason));
            }
            VmEvent::VmPaused { .. } => self.settle(VmStatus::Paused, None),
            VmEvent::VmResumed { .. } | VmEvent::VmReset { .. } => {
                self.settle(VmStatus::Running, None)
            }
            VmEvent::VmOwnerChanged { to, .. } => self.owner = to,
            VmEvent::VmReconfigured {
                name,
                description,
                cpu,
                memory,
                network,
                cloud_init,
                boot_order,
                requires_restart,
            } => {
                if cloud_init.is_some() {
                    self.spec.cloud_init = cloud_init;
                    self.cloud_init_revision += 1;
                }
                if let Some(boot_order) = boot_order {
                    self.spec.boot_order = boot_order;
                }
                if let Some(name) = name {
                    self.spec.name = name;
                }
                if description.is_some() {
                    self.spec.description = description;
                }
                if let Some(cpu) = cpu {
                    self.spec.cpu = cpu;
                }
                if let Some(memory) = memory {
                    self.spec.memory = memory;
                }
                if let Some(network) = network {
                    self.spec.network = network;
                }
                self.requires_restart |= requires_restart;
            }
            VmEvent::VmDeleted { .. } => {
                // The disk, and so every snapshot on it, went with the VM.
                self.snapshots.clear();
                self.end_process();
                self.settle(VmStatus::Deleted, None);
            }
            VmEvent::VmCrashed { reason, .. } => {
                self.end_process();
                self.settle(VmStatus::Crashed, Some(reason));
            }
            VmEvent::OperationFailed {
                operation, reason, ..
            } => match operation {
                // A failed medium or snapshot change leaves the machine as it was.
                Operation::Media | Operation::Snapshot => {
                    self.status_reason = Some(reason);
                    self.pending = None;
                }
                _ => self.settle(VmStatus::Error, Some(reason)),
            },
            // For the record only: a console changes nothing about the VM.
            VmEvent::OperationRetried { .. }
            | VmEvent::StaleObservationIgnored { .. }
            | VmEvent::ConsoleOpened { .. }
            | VmEvent::ConsoleClosed { .. } => {}
            VmEvent::JobCancelled { .. } => {
                let previous = self.pending.as_ref().map(|p| p.previous);
                self.pending = None;
                self.status = previous.or(self.status);
            }
        }
    }
}
