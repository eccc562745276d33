//! Worker actors carry jobs out. A dispatcher listens on PostgreSQL (`LISTEN voidvm_jobs`, sent
//! by the trigger that creates jobs) and wakes the workers; a woken worker claims due jobs with
//! `FOR UPDATE SKIP LOCKED` until none is left. Transient failures are retried with exponential
//! backoff; every outcome goes back to the VM's actor, which records it as an event.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::registry::{ActorError, VmRegistry};
use crate::hypervisor::images::ImageCatalog;
use crate::hypervisor::{Hypervisor, HypervisorError, MachineSpec, StopOutcome};
use crate::store::jobs::{self, JobRow};
use crate::store::{CommandMeta, StoreError, Via};
use crate::vm::{JobResult, Operation, Vm, VmCommand, VmError, VmEvent};

pub struct WorkerDeps {
    pub pool: PgPool,
    pub registry: VmRegistry,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub images: ImageCatalog,
    pub max_attempts: u32,
    pub restart_stop_timeout: Duration,
}

pub struct JobWorker {
    id: String,
    deps: Arc<WorkerDeps>,
    busy: bool,
    wake_again: bool,
}

/// There may be work: claim jobs until none is due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

impl JobWorker {
    pub fn new(id: String, deps: Arc<WorkerDeps>) -> Self {
        JobWorker {
            id,
            deps,
            busy: false,
            wake_again: false,
        }
    }
}

impl Actor for JobWorker {
    type Context = Context<Self>;
}

impl Handler<Wake> for JobWorker {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        if self.busy {
            self.wake_again = true;
            return;
        }
        self.busy = true;
        let deps = self.deps.clone();
        let id = self.id.clone();
        ctx.spawn(
            async move {
                loop {
                    match run_next(&deps, &id).await {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            tracing::error!(worker = %id, error = %crate::telemetry::chain(&e), "a worker could not claim a job");
                            break;
                        }
                    }
                }
            }
            .into_actor(self)
            .map(|_, worker, ctx| {
                worker.busy = false;
                if std::mem::take(&mut worker.wake_again) {
                    ctx.notify(Wake);
                }
            }),
        );
    }
}

/// Claims and carries out one job. False when no job was due.
async fn run_next(deps: &WorkerDeps, worker: &str) -> Result<bool, StoreError> {
    let Some(job) = jobs::claim(&deps.pool, worker).await? else {
        return Ok(false);
    };
    let span = tracing::info_span!("job", job_id = %job.id, vm_id = %job.vm_id, kind = %job.kind, attempt = job.attempt);
    run_job(deps, job).instrument(span).await?;
    Ok(true)
}

async fn run_job(deps: &WorkerDeps, job: JobRow) -> Result<(), StoreError> {
    tracing::info!("job started");
    let result = match perform(deps, &job).await {
        Ok(result) => result,
        Err(e) if e.is_transient() && job.attempt < deps.max_attempts as i32 => {
            let delay = backoff(job.attempt);
            tracing::warn!(error = %crate::telemetry::chain(&e), retry_in = ?delay, "job failed for a reason that may pass; retrying");
            let note = VmCommand::NoteRetry {
                job_id: job.id.clone(),
                attempt: u32::try_from(job.attempt).unwrap_or(0),
                reason: e.to_string(),
                retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            };
            if let Err(err) = deps
                .registry
                .execute(&job.vm_id, note, job_meta(&job))
                .await
            {
                tracing::warn!(error = %crate::telemetry::chain(&err), "the retry could not be recorded");
            }
            jobs::retry_later(&deps.pool, &job.id, &e.to_string(), delay).await?;
            return Ok(());
        }
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(&e), "job failed");
            JobResult::Failed {
                reason: e.to_string(),
                attempts: u32::try_from(job.attempt).unwrap_or(0),
            }
        }
    };
    let meta = job_meta(&job);
    let command = VmCommand::CompleteJob {
        job_id: job.id.clone(),
        result,
    };
    match deps.registry.execute(&job.vm_id, command, meta).await {
        Ok(_) => tracing::info!("job finished"),
        Err(ActorError::Refused(VmError::NotTheCurrentJob { .. })) => {
            // A crash or an exit ended the job first: the event that recorded it closed the job's
            // row in the same transaction (a job's row is open exactly while the VM waits on it).
            tracing::info!("another event ended this job before it finished");
        }
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(&e), "the job's outcome could not be recorded; it will run again");
            jobs::retry_later(
                &deps.pool,
                &job.id,
                "The outcome could not be recorded.",
                backoff(job.attempt),
            )
            .await?;
        }
    }
    Ok(())
}

/// Worker commands act for the user who asked for the job, through the system.
fn job_meta(job: &JobRow) -> CommandMeta {
    CommandMeta {
        actor_id: job.actor_id.clone().unwrap_or_else(|| "system".into()),
        actor_name: "job worker".into(),
        via: Via::System,
        request_id: None,
        client_addr: None,
    }
}

fn backoff(attempt: i32) -> Duration {
    let exp = attempt.clamp(1, 6) as u32;
    Duration::from_millis(500 * 2u64.pow(exp - 1))
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error("The job's virtual machine could not be read.")]
    Vm(#[from] ActorError),
    #[error("The job is of an unknown kind '{0}'.")]
    UnknownKind(String),
    #[error("The stop job's parameters could not be read.")]
    BadParams,
}

impl JobError {
    fn is_transient(&self) -> bool {
        match self {
            JobError::Hypervisor(e) => e.is_transient(),
            JobError::Vm(ActorError::Store(_) | ActorError::Mailbox(_)) => true,
            JobError::Vm(ActorError::Refused(_) | ActorError::Stale { .. })
            | JobError::UnknownKind(_)
            | JobError::BadParams => false,
        }
    }
}

fn machine_spec(vm: &Vm, images: &ImageCatalog) -> MachineSpec {
    MachineSpec {
        vm_id: vm.id.clone(),
        cpu: vm.spec.cpu,
        memory_mib: vm.spec.memory,
        disk_gib: vm.spec.disk,
        boot: images.resolve(&vm.spec.os),
    }
}

async fn perform(deps: &WorkerDeps, job: &JobRow) -> Result<JobResult, JobError> {
    let operation =
        Operation::parse(&job.kind).ok_or_else(|| JobError::UnknownKind(job.kind.clone()))?;
    let hv = &deps.hypervisor;
    let vm_id = job.vm_id.as_str();
    let vm = || async {
        deps.registry
            .inspect(vm_id)
            .await
            .map(|c| machine_spec(&c.vm, &deps.images))
    };
    Ok(match operation {
        Operation::Provision => {
            hv.provision(&vm().await?).await?;
            JobResult::Provisioned
        }
        Operation::Start => {
            let spec = vm().await?;
            hv.provision(&spec).await?;
            let machine = hv.start(&spec).await?;
            JobResult::Started {
                pid: machine.pid,
                accel: machine.accel.to_string(),
            }
        }
        Operation::Stop => {
            let (force, timeout) = match serde_json::from_value::<VmEvent>(job.params.clone()) {
                Ok(VmEvent::StopRequested { force, timeout, .. }) => (force, timeout),
                _ => return Err(JobError::BadParams),
            };
            let outcome = hv.stop(vm_id, force, Duration::from_secs(timeout)).await?;
            JobResult::Stopped {
                reason: stop_reason(outcome).to_string(),
            }
        }
        Operation::Restart => {
            let spec = vm().await?;
            hv.stop(vm_id, false, deps.restart_stop_timeout).await?;
            let machine = hv.start(&spec).await?;
            JobResult::Restarted { pid: machine.pid }
        }
        Operation::Pause => {
            hv.pause(vm_id).await?;
            JobResult::Paused
        }
        Operation::Resume => {
            hv.resume(vm_id).await?;
            JobResult::Resumed
        }
        Operation::Reset => {
            hv.reset(vm_id).await?;
            JobResult::Reset
        }
        Operation::Delete => {
            hv.destroy(vm_id).await?;
            JobResult::Deleted
        }
    })
}

fn stop_reason(outcome: StopOutcome) -> &'static str {
    match outcome {
        StopOutcome::Graceful => "The guest powered off.",
        StopOutcome::Forced => "QEMU was told to quit.",
        StopOutcome::AlreadyStopped => "The machine was not running.",
    }
}

/// Wakes the workers whenever a job is created (NOTIFY) and when a delayed retry falls due, until
/// `shutdown` is cancelled.
pub async fn dispatch(pool: PgPool, workers: Vec<Addr<JobWorker>>, shutdown: CancellationToken) {
    tokio::select! {
        () = dispatch_until_error(pool, workers) => {}
        () = shutdown.cancelled() => tracing::debug!("job dispatcher stopped"),
    }
}

async fn dispatch_until_error(pool: PgPool, workers: Vec<Addr<JobWorker>>) {
    const SAFETY_NET: Duration = Duration::from_secs(30);
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen("voidvm_jobs").await {
                Ok(()) => break l,
                Err(e) => {
                    tracing::error!(error = %crate::telemetry::chain(&e), "the job dispatcher could not LISTEN")
                }
            },
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "the job dispatcher could not connect")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    loop {
        for w in &workers {
            w.do_send(Wake);
        }
        let wait = match jobs::next_due(&pool).await {
            Ok(Some(due)) => (due - chrono::Utc::now())
                .to_std()
                .unwrap_or(SAFETY_NET)
                .min(SAFETY_NET),
            Ok(None) => SAFETY_NET,
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "the job dispatcher could not read the queue");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            n = listener.recv() => {
                if let Err(e) = n {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "the job dispatcher lost its connection; reconnecting");
                }
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
        }
    }
}
