//! What each kind of job does to the machine, one step at a time.
//!
//! Most jobs are one short step. A graceful stop (and the stop half of a restart) waits for the
//! guest to power off, which may take the whole stop timeout: that wait holds no worker. A step
//! presses the power button and parks the job ([`Step::Wait`]) until the next press or the
//! deadline; the machine's exit wakes it at once (see `observer`), and a step after the deadline
//! tells QEMU to quit. So N graceful stops at once end in about one timeout, whatever the number
//! of workers.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::registry::ActorError;
use super::worker::WorkerDeps;
use crate::hypervisor::{HypervisorError, MachineSpec, PowerButton, StopOutcome};
use crate::store::jobs::JobRow;
use crate::store::{vm_view, StoreError};
use crate::vm::{JobResult, Operation, Vm, VmEvent};

/// How often a waiting graceful stop presses the power button again (a guest still booting
/// misses a press, as OpenStack's clean shutdown also allows for).
const POWER_BUTTON_REPEAT: Duration = Duration::from_secs(10);

/// What a step of a job came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The job is over; its outcome goes to the VM's actor.
    Done(JobResult),
    /// The job waits for its guest: park it until `wake_at`; the wait gives up at `deadline`.
    Wait {
        wake_at: DateTime<Utc>,
        deadline: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error("The job's virtual machine could not be read.")]
    Vm(#[from] ActorError),
    #[error("The job's virtual machine could not be read.")]
    Store(#[from] StoreError),
    /// The VM list has not yet caught up with the event that opened the job.
    #[error("The virtual machine's state is not up to date yet.")]
    NotCaughtUp,
    #[error("The stop job's parameters could not be read.")]
    BadParams,
}

impl JobError {
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Hypervisor(e) => e.is_transient(),
            JobError::Vm(ActorError::Store(_) | ActorError::Mailbox(_))
            | JobError::Store(_)
            | JobError::NotCaughtUp => true,
            JobError::Vm(ActorError::Refused(_)) | JobError::BadParams => false,
        }
    }
}

/// Carries out the job's next step.
pub async fn perform(deps: &WorkerDeps, job: &JobRow) -> Result<Step, JobError> {
    let hv = &deps.hypervisor;
    let vm_id = job.vm_id.as_str();
    Ok(match job.kind.0 {
        Operation::Provision => {
            hv.provision(&machine_spec(deps, job).await?).await?;
            Step::Done(JobResult::Provisioned)
        }
        Operation::Start => {
            let machine = hv.start(&machine_spec(deps, job).await?).await?;
            Step::Done(JobResult::Started {
                process: machine.process,
                accel: machine.accel.to_string(),
            })
        }
        Operation::Stop => {
            let (force, timeout) = match serde_json::from_value::<VmEvent>(job.params.clone()) {
                Ok(VmEvent::StopRequested { force, timeout, .. }) => (force, timeout),
                _ => return Err(JobError::BadParams),
            };
            let outcome = if force {
                hv.stop(vm_id, true, Duration::ZERO).await?
            } else {
                match power_off(deps, job, Duration::from_secs(timeout)).await? {
                    PowerOff::Off(outcome) => outcome,
                    PowerOff::Waiting(step) => return Ok(step),
                }
            };
            Step::Done(JobResult::Stopped {
                reason: stop_reason(outcome).to_string(),
            })
        }
        Operation::Restart => match power_off(deps, job, deps.restart_stop_timeout).await? {
            PowerOff::Off(_) => {
                let machine = hv.start(&machine_spec(deps, job).await?).await?;
                Step::Done(JobResult::Restarted {
                    process: machine.process,
                })
            }
            PowerOff::Waiting(step) => step,
        },
        Operation::Pause => {
            hv.pause(vm_id).await?;
            Step::Done(JobResult::Paused)
        }
        Operation::Resume => {
            hv.resume(vm_id).await?;
            Step::Done(JobResult::Resumed)
        }
        Operation::Reset => {
            hv.reset(vm_id).await?;
            Step::Done(JobResult::Reset)
        }
        Operation::Delete => {
            hv.destroy(vm_id).await?;
            Step::Done(JobResult::Deleted)
        }
    })
}

/// The machine the job's VM asks for, read from the VM list (not from the VM's actor, which the
/// worker asks only once per job, to record the outcome). The list must already hold the event
/// that opened this job; until it does, the job is tried again shortly.
async fn machine_spec(deps: &WorkerDeps, job: &JobRow) -> Result<MachineSpec, JobError> {
    let vm: Vm = vm_view::state(&deps.pool, &job.vm_id)
        .await?
        .ok_or(JobError::NotCaughtUp)?;
    if vm.pending.as_ref().map(|p| p.id.as_str()) != Some(job.id.as_str()) {
        return Err(JobError::NotCaughtUp);
    }
    Ok(MachineSpec {
        vm_id: vm.id.clone(),
        cpu: vm.spec.cpu,
        memory_mib: vm.spec.memory,
        disk_gib: vm.spec.disk,
        boot: deps.images.resolve(&vm.spec.os),
    })
}

/// Where a graceful power-off stands after one step.
enum PowerOff {
    /// The machine is down.
    Off(StopOutcome),
    /// The guest was asked to power off; the job waits.
    Waiting(Step),
}

/// One step of a graceful power-off. The first presses the power button and starts the clock
/// (`timeout`); each later one (woken by the machine's exit, the next press or the deadline)
/// finds the machine gone, presses again, or, past the deadline, tells QEMU to quit.
async fn power_off(
    deps: &WorkerDeps,
    job: &JobRow,
    timeout: Duration,
) -> Result<PowerOff, JobError> {
    let hv = &deps.hypervisor;
    let vm_id = job.vm_id.as_str();
    let now = Utc::now();
    let deadline = match job.deadline {
        None => later(now, timeout),
        Some(deadline) => {
            if hv.pid(vm_id).is_none() {
                tracing::info!("the guest powered off");
                return Ok(PowerOff::Off(StopOutcome::Graceful));
            }
            deadline
        }
    };
    if now >= deadline {
        tracing::info!(
            timeout_s = timeout.as_secs_f64(),
            "the guest ignored the power button; quitting it"
        );
        return Ok(PowerOff::Off(
            match hv.stop(vm_id, true, Duration::ZERO).await? {
                StopOutcome::AlreadyStopped => StopOutcome::Graceful,
                outcome => outcome,
            },
        ));
    }
    match hv.power_button(vm_id).await? {
        PowerButton::NotRunning if job.deadline.is_some() => {
            Ok(PowerOff::Off(StopOutcome::Graceful))
        }
        PowerButton::NotRunning => Ok(PowerOff::Off(StopOutcome::AlreadyStopped)),
        PowerButton::Paused => {
            tracing::info!("the machine is paused and cannot answer ACPI; quitting it");
            Ok(PowerOff::Off(hv.stop(vm_id, true, Duration::ZERO).await?))
        }
        PowerButton::Pressed => Ok(PowerOff::Waiting(Step::Wait {
            wake_at: later(now, POWER_BUTTON_REPEAT).min(deadline),
            deadline,
        })),
    }
}

/// `now` plus `wait`, or the end of time when that does not fit.
fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn stop_reason(outcome: StopOutcome) -> &'static str {
    match outcome {
        StopOutcome::Graceful => "The guest powered off.",
        StopOutcome::Forced => "QEMU was told to quit.",
        StopOutcome::AlreadyStopped => "The machine was not running.",
    }
}
