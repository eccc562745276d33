//! Worker actors carry jobs out. A dispatcher listens on PostgreSQL (`LISTEN voidvm_jobs`, sent
//! after a job is queued: see `crate::notifier`) and looks at the queue every few seconds anyway
//! (a notification is a hint that can be lost with the node that sent it), and wakes the
//! workers; a woken worker claims due jobs with `FOR UPDATE SKIP LOCKED` until none is left,
//! under its node's lease (which the dispatcher renews, re-queueing the jobs of nodes whose lease
//! expired). A job that waits for its guest is parked and claimed again when its wait ends, so
//! the wait holds no worker (see `job_steps`).
//! Transient failures are retried with exponential backoff; every outcome goes back to the VM's
//! actor, which records it as an event: the only time a job asks the actor anything.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::job_steps::{self, JobError, Step};
use super::registry::{ActorError, VmRegistry};
use crate::hypervisor::images::ImageCatalog;
use crate::hypervisor::{DiskSnapshots, Hypervisor};
use crate::images::service::SharedImages;
use crate::store::jobs::{self, JobRow, Lease};
use crate::store::{CommandMeta, StoreError, Via};
use crate::vm::{JobResult, VmCommand, VmError};

/// How soon a job that found the VM list behind it is tried again.
const NOT_CAUGHT_UP_DELAY: Duration = Duration::from_millis(20);

pub struct WorkerDeps {
    pub pool: PgPool,
    pub registry: VmRegistry,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Takes, restores and deletes the machines' disk snapshots (`snapshot` jobs).
    pub disk_snapshots: Arc<dyn DiskSnapshots>,
    pub images: ImageCatalog,
    pub max_attempts: u32,
    pub restart_stop_timeout: Duration,
    /// This node and the lease its claims hold under.
    pub lease: Lease,
    /// Carries out image imports (jobs of `image` streams).
    pub image_service: SharedImages,
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
    let Some(job) = jobs::claim(&deps.pool, &deps.lease, worker).await? else {
        return Ok(false);
    };
    if job.is_image_job() {
        let span = tracing::info_span!("job", job_id = %job.id, image = %job.vm_id, kind = %job.kind, attempt = job.attempt);
        run_import(deps, job).instrument(span).await?;
        return Ok(true);
    }
    let span = tracing::info_span!("job", job_id = %job.id, vm_id = %job.vm_id, kind = %job.kind, attempt = job.attempt);
    run_job(deps, job).instrument(span).await?;
    Ok(true)
}

/// An image import runs to its end in one step; only a failure to record its outcome is retried
/// (the next attempt starts over from an empty staging directory).
async fn run_import(deps: &WorkerDeps, job: JobRow) -> Result<(), StoreError> {
    tracing::info!("image import started");
    if let Err(e) = deps.image_service.run_import(&job, &job_meta(&job)).await {
        tracing::warn!(error = %crate::telemetry::chain(&e), "the import's outcome could not be recorded; it will run again");
        jobs::retry_later(
            &deps.pool,
            &job.id,
            "The outcome could not be recorded.",
            backoff(job.attempt),
        )
        .await?;
    }
    Ok(())
}

async fn run_job(deps: &WorkerDeps, job: JobRow) -> Result<(), StoreError> {
    tracing::info!(resumed = job.deadline.is_some(), "job step started");
    let result = match job_steps::perform(deps, &job).await {
        Ok(Step::Done(result)) => result,
        Ok(Step::Wait { wake_at, deadline }) => {
            if jobs::wait(&deps.pool, &job.id, wake_at, deadline).await? {
                tracing::info!(%wake_at, %deadline, "waiting for the guest");
                // The machine may have gone before the job was parked: its exit found nothing
                // to wake.
                if deps.hypervisor.pid(&job.vm_id).is_none() {
                    jobs::wake(&deps.pool, &job.id).await?;
                }
            }
            return Ok(());
        }
        Err(JobError::NotCaughtUp)
            if chrono::Utc::now() - job.created_at < chrono::Duration::seconds(10) =>
        {
            // The VM list lags the commit that opened the job by a moment: not a failure (for
            // long, it is one, retried and counted as any other).
            tracing::debug!("the VM list has not caught up with the job yet; trying again shortly");
            jobs::not_yet(&deps.pool, &job.id, NOT_CAUGHT_UP_DELAY).await?;
            return Ok(());
        }
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
            if e.is_the_machines_own() {
                // The user's to fix (the job's error says how); nothing is wrong with the server.
                tracing::warn!(error = %crate::telemetry::chain(&e), "job failed: the machine's own settings");
            } else {
                tracing::error!(error = %crate::telemetry::chain(&e), "job failed");
            }
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

/// Wakes the workers whenever a job is created or woken (NOTIFY) and when a delayed retry or a
/// parked job falls due, until `shutdown` is cancelled.
pub async fn dispatch(
    pool: PgPool,
    node: String,
    workers: Vec<Addr<JobWorker>>,
    shutdown: CancellationToken,
) {
    // A node without workers (an API node) has no one to wake: it neither listens nor reads the
    // queue.
    if workers.is_empty() {
        return;
    }
    tokio::select! {
        () = dispatch_until_error(pool, node, workers) => {}
        () = shutdown.cancelled() => tracing::debug!("job dispatcher stopped"),
    }
}

/// Renews the lease on this node's running jobs every third of its length, and puts back in the
/// queue the jobs of nodes that stopped renewing theirs (waking the workers to take them), until
/// `shutdown` is cancelled.
pub async fn keep_leases(
    pool: PgPool,
    lease: Lease,
    workers: Vec<Addr<JobWorker>>,
    shutdown: CancellationToken,
) {
    let every = lease.duration / 3;
    loop {
        if let Err(e) = jobs::renew(&pool, &lease).await {
            tracing::error!(error = %crate::telemetry::chain(&e), "the lease on this node's jobs could not be renewed");
        }
        match jobs::requeue_expired(&pool).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(jobs = ?ids, "jobs of a node that went away are queued again");
                for w in &workers {
                    w.do_send(Wake);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "expired leases could not be looked for")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The longest the dispatcher goes without looking at the queue.
const SAFETY_NET: Duration = Duration::from_secs(5);

/// How long the dispatcher sleeps before it wakes the workers again, given when the next job
/// falls `due`. One already due when the workers were just woken fell due between their claim
/// and this read (parked jobs whose waits end a moment apart), or every worker is busy (each
/// claims again when it is done): look again at once, then less and less often
/// (`overdue_rounds` counts the looks), never waiting the whole safety net for a due job.
fn until_due(
    due: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
    overdue_rounds: &mut u32,
) -> Duration {
    let Some(due) = due else {
        *overdue_rounds = 0;
        return SAFETY_NET;
    };
    match (due - now).to_std() {
        Ok(left) => {
            *overdue_rounds = 0;
            left.min(SAFETY_NET)
        }
        Err(_) => {
            let wait = Duration::from_millis(10 << (*overdue_rounds).min(9)).min(SAFETY_NET);
            *overdue_rounds += 1;
            wait
        }
    }
}

async fn dispatch_until_error(pool: PgPool, node: String, workers: Vec<Addr<JobWorker>>) {
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(crate::notifier::JOB_QUEUED).await {
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
    let mut overdue_rounds = 0u32;
    loop {
        for w in &workers {
            w.do_send(Wake);
        }
        let wait = match jobs::next_due(&pool, &node).await {
            Ok(due) => until_due(due, chrono::Utc::now(), &mut overdue_rounds),
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
                // A burst of new jobs wakes the workers once, not once per job.
                while listener.next_buffered().is_some() {}
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(ms: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_job_due_later_is_waited_for_up_to_the_safety_net() {
        let mut rounds = 0;
        assert_eq!(
            until_due(Some(at(1_500)), at(0), &mut rounds),
            Duration::from_millis(1_500)
        );
        assert_eq!(until_due(Some(at(60_000)), at(0), &mut rounds), SAFETY_NET);
        assert_eq!(until_due(None, at(0), &mut rounds), SAFETY_NET);
    }

    /// Three stops parked a moment apart: the first wakes the workers, the others are due by
    /// the time the dispatcher reads the queue again. They must not wait the safety net (the 3
    /// graceful stops of `benches/lifecycle_load.rs` once took 7 s for a 2 s timeout).
    #[test]
    fn a_job_already_due_is_looked_at_again_at_once_then_less_often() {
        let mut rounds = 0;
        let waits: Vec<Duration> = (0..12)
            .map(|_| until_due(Some(at(-1)), at(0), &mut rounds))
            .collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= SAFETY_NET), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), SAFETY_NET);
        // A job due later starts the looks over.
        until_due(Some(at(100)), at(0), &mut rounds);
        assert_eq!(
            until_due(Some(at(-1)), at(0), &mut rounds),
            Duration::from_millis(10)
        );
    }
}
