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

use super::worker::WorkerDeps;
use crate::hypervisor::seed::Seed;
use crate::hypervisor::{Hypervisor, HypervisorError, MachineSpec, PowerButton, StopOutcome};
use crate::store::jobs::{JobKind, JobRow};
use crate::store::{cloud_init, vm_view, StoreError};
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
    Store(#[from] StoreError),
    /// The VM list has not yet caught up with the event that opened the job.
    #[error("The virtual machine's state is not up to date yet.")]
    NotCaughtUp,
    #[error("The job's parameters could not be read.")]
    BadParams,
}

impl JobError {
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Hypervisor(e) => e.is_transient(),
            JobError::Store(_) | JobError::NotCaughtUp => true,
            JobError::BadParams => false,
        }
    }

    /// Whether the job failed because of its machine's own settings (see
    /// [`HypervisorError::is_the_machines_own`]), not because of the server or the host.
    pub fn is_the_machines_own(&self) -> bool {
        match self {
            JobError::Hypervisor(e) => e.is_the_machines_own(),
            JobError::Store(_) | JobError::NotCaughtUp | JobError::BadParams => false,
        }
    }
}

/// Carries out the job's next step.
pub async fn perform(deps: &WorkerDeps, job: &JobRow) -> Result<Step, JobError> {
    let hv = &deps.hypervisor;
    let vm_id = job.vm_id.as_str();
    let operation = match job.kind {
        JobKind::Vm(operation) => operation,
        // Image imports are carried out by `images::service`, never here.
        JobKind::ImportImage => return Err(JobError::BadParams),
    };
    Ok(match operation {
        Operation::Provision => {
            // The event that opened the job (`VmCreated`) holds the whole machine.
            let spec = match serde_json::from_value::<VmEvent>(job.params.clone()) {
                Ok(VmEvent::VmCreated { vm_id, spec, .. }) => MachineSpec {
                    vm_id,
                    cpu: spec.cpu,
                    memory_mib: spec.memory,
                    disk_gib: spec.disk,
                    boot: deps.images.resolve(&spec.os),
                    network: spec.network,
                    // A provision boots nothing.
                    seed: None,
                    boot_order: spec.boot_order,
                    iso: None,
                },
                _ => return Err(JobError::BadParams),
            };
            hv.provision(&spec).await?;
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
                match power_off(hv.as_ref(), job, Duration::from_secs(timeout), Utc::now()).await? {
                    PowerOff::Off(outcome) => outcome,
                    PowerOff::Waiting(step) => return Ok(step),
                }
            };
            Step::Done(JobResult::Stopped {
                reason: stop_reason(outcome).to_string(),
            })
        }
        Operation::Restart => {
            match power_off(hv.as_ref(), job, deps.restart_stop_timeout, Utc::now()).await? {
                PowerOff::Off(_) => {
                    let machine = hv.start(&machine_spec(deps, job).await?).await?;
                    Step::Done(JobResult::Restarted {
                        process: machine.process,
                    })
                }
                PowerOff::Waiting(step) => step,
            }
        }
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
        Operation::Media => {
            let image = match serde_json::from_value::<VmEvent>(job.params.clone()) {
                Ok(VmEvent::IsoChangeRequested { image, .. }) => image,
                _ => return Err(JobError::BadParams),
            };
            let iso = match &image {
                Some(name) => Some(deps.images.iso(name).ok_or_else(|| {
                    HypervisorError::Permanent(format!("the image '{name}' has no image.iso"))
                })?),
                None => None,
            };
            hv.change_medium(vm_id, iso.as_deref()).await?;
            Step::Done(JobResult::IsoChanged { image })
        }
        Operation::Snapshot => Step::Done(super::snapshot_steps::perform(deps, job).await?),
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
    let seed = match &vm.spec.cloud_init {
        Some(cloud_init) => {
            let secrets = cloud_init::secrets(&deps.pool, &vm.id).await?;
            Some(Seed::render(
                &vm.id,
                vm.cloud_init_revision,
                cloud_init,
                &secrets,
            ))
        }
        None => None,
    };
    Ok(MachineSpec {
        vm_id: vm.id.clone(),
        cpu: vm.spec.cpu,
        memory_mib: vm.spec.memory,
        disk_gib: vm.spec.disk,
        boot: deps.images.resolve(&vm.spec.os),
        network: vm.spec.network.clone(),
        seed,
        boot_order: vm.spec.boot_order.clone(),
        // An image removed since it was attached leaves the drive empty.
        iso: vm.iso.as_deref().and_then(|image| deps.images.iso(image)),
    })
}

/// Where a graceful power-off stands after one step.
#[derive(Debug, PartialEq)]
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
    hv: &dyn Hypervisor,
    job: &JobRow,
    timeout: Duration,
    now: DateTime<Utc>,
) -> Result<PowerOff, JobError> {
    let vm_id = job.vm_id.as_str();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::hypervisor::{Accel, Liveness, RunningMachine};
    use crate::store::jobs::JobStatus;

    /// A machine that runs (maybe paused) until it is told to quit, and ignores the power button.
    struct DeafMachine {
        running: Mutex<bool>,
        paused: bool,
        presses: AtomicU32,
        quits: AtomicU32,
    }

    impl DeafMachine {
        fn new(running: bool, paused: bool) -> DeafMachine {
            DeafMachine {
                running: Mutex::new(running),
                paused,
                presses: AtomicU32::new(0),
                quits: AtomicU32::new(0),
            }
        }

        fn is_running(&self) -> bool {
            *self.running.lock().unwrap()
        }
    }

    #[async_trait]
    impl Hypervisor for DeafMachine {
        async fn provision(&self, _: &MachineSpec) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn start(&self, _: &MachineSpec) -> Result<RunningMachine, HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn stop(
            &self,
            _: &str,
            force: bool,
            _: Duration,
        ) -> Result<StopOutcome, HypervisorError> {
            assert!(force, "a step never waits inside the hypervisor");
            self.quits.fetch_add(1, Ordering::SeqCst);
            let was = std::mem::replace(&mut *self.running.lock().unwrap(), false);
            Ok(if was {
                StopOutcome::Forced
            } else {
                StopOutcome::AlreadyStopped
            })
        }
        async fn power_button(&self, _: &str) -> Result<PowerButton, HypervisorError> {
            if !self.is_running() {
                return Ok(PowerButton::NotRunning);
            }
            if self.paused {
                return Ok(PowerButton::Paused);
            }
            self.presses.fetch_add(1, Ordering::SeqCst);
            Ok(PowerButton::Pressed)
        }
        async fn pause(&self, _: &str) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn resume(&self, _: &str) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn reset(&self, _: &str) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn destroy(&self, _: &str) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn change_medium(
            &self,
            _: &str,
            _: Option<&std::path::Path>,
        ) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn probe(&self, _: &str) -> Result<Liveness, HypervisorError> {
            unimplemented!("not a power-off step")
        }
        async fn attach(&self, _: &str) -> Result<(), HypervisorError> {
            unimplemented!("not a power-off step")
        }
        fn pid(&self, _: &str) -> Option<u32> {
            self.is_running().then_some(42)
        }
        fn accel(&self) -> Accel {
            Accel::Tcg
        }
        fn version(&self) -> String {
            "fake".into()
        }
    }

    fn stop_job(deadline: Option<DateTime<Utc>>) -> JobRow {
        let now = Utc::now();
        JobRow {
            id: "job-1".into(),
            vm_id: "vm-1".into(),
            stream_type: "vm".into(),
            kind: JobKind::Vm(Operation::Stop),
            status: JobStatus::Running,
            params: json!({}),
            actor_id: None,
            attempt: 1,
            last_error: None,
            error: None,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            updated_at: now,
            deadline,
            bytes_done: None,
            bytes_total: None,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[tokio::test]
    async fn the_first_step_presses_the_button_and_parks_until_the_next_press() {
        let hv = DeafMachine::new(true, false);
        let step = power_off(&hv, &stop_job(None), Duration::from_secs(30), at(0)).await;
        assert_eq!(
            step.unwrap(),
            PowerOff::Waiting(Step::Wait {
                wake_at: at(10),
                deadline: at(30)
            })
        );
        assert_eq!(hv.presses.load(Ordering::SeqCst), 1);
        assert_eq!(hv.quits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_short_timeout_parks_until_the_deadline() {
        let hv = DeafMachine::new(true, false);
        let step = power_off(&hv, &stop_job(None), Duration::from_secs(3), at(0)).await;
        assert_eq!(
            step.unwrap(),
            PowerOff::Waiting(Step::Wait {
                wake_at: at(3),
                deadline: at(3)
            })
        );
    }

    #[tokio::test]
    async fn a_later_step_presses_again_until_the_deadline() {
        let hv = DeafMachine::new(true, false);
        let job = stop_job(Some(at(30)));
        let step = power_off(&hv, &job, Duration::from_secs(30), at(25)).await;
        assert_eq!(
            step.unwrap(),
            PowerOff::Waiting(Step::Wait {
                wake_at: at(30),
                deadline: at(30)
            })
        );
    }

    #[tokio::test]
    async fn a_step_after_the_guest_powered_off_ends_the_stop() {
        let hv = DeafMachine::new(false, false);
        let job = stop_job(Some(at(30)));
        let step = power_off(&hv, &job, Duration::from_secs(30), at(12)).await;
        assert_eq!(step.unwrap(), PowerOff::Off(StopOutcome::Graceful));
        assert_eq!(hv.presses.load(Ordering::SeqCst), 0);
        assert_eq!(hv.quits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_step_at_the_deadline_tells_qemu_to_quit() {
        let hv = DeafMachine::new(true, false);
        let job = stop_job(Some(at(30)));
        let step = power_off(&hv, &job, Duration::from_secs(30), at(30)).await;
        assert_eq!(step.unwrap(), PowerOff::Off(StopOutcome::Forced));
        assert_eq!(hv.quits.load(Ordering::SeqCst), 1);
        assert!(!hv.is_running());
    }

    #[tokio::test]
    async fn a_paused_machine_is_told_to_quit_at_once() {
        let hv = DeafMachine::new(true, true);
        let step = power_off(&hv, &stop_job(None), Duration::from_secs(30), at(0)).await;
        assert_eq!(step.unwrap(), PowerOff::Off(StopOutcome::Forced));
    }

    #[tokio::test]
    async fn a_machine_that_is_not_running_is_already_stopped() {
        let hv = DeafMachine::new(false, false);
        let step = power_off(&hv, &stop_job(None), Duration::from_secs(30), at(0)).await;
        assert_eq!(step.unwrap(), PowerOff::Off(StopOutcome::AlreadyStopped));
    }
}
