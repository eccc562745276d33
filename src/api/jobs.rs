//! `/jobs`: list, read, wait for and cancel jobs.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::answers::errors::{Invalid, JobMissing, KeyReused, NotCancellable, Unauthorized};
use super::answers::{Envelope, Page, Pagination, WaitedJob};
use super::envelope;
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use super::vms::page_and_limit;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::conditions::Answer;
use crate::store::jobs::{self, JobFilter, JobRow, JobStatus, JobView};
use crate::store::Via;
use crate::vm::VmCommand;

const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
const WAIT_MAX_SECS: u64 = 120;
/// How often a waiting `/jobs/{id}/wait` reads its job again when no notification came.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// Jobs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only jobs in this status: queued, running, succeeded, failed or cancelled.
    #[param(pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    status: Option<String>,
    /// Only this VM's jobs.
    vm_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs, newest first.", body = Envelope<Page<JobView>>),
        Invalid,
        Unauthorized
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("job:read")))
)]
#[tracing::instrument(name = "list_jobs", skip_all, fields(user_id = %user.id))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: crate::api::body::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::JobRead)?;
    let q = query.into_inner();
    let (page, limit) = page_and_limit(q.page, q.limit)?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::validation(
                "status",
                format!("'{s}' is not a job status."),
            ));
        }
    }
    let filter = JobFilter {
        owner_id: user.owner_filter(),
        vm_id: q.vm_id,
        status: q.status,
        page,
        limit,
    };
    let (rows, total) = jobs::list(&state.pool, &filter).await?;
    let items: Vec<JobView> = rows.into_iter().map(JobView::from).collect();
    Ok(envelope::ok(
        Page {
            items,
            pagination: Pagination::new(page, limit, total),
        },
        "Jobs.",
    ))
}

/// The job, if the user may see its VM.
async fn visible(state: &AppState, user: &AuthUser, job_id: &str) -> Result<JobRow, ApiError> {
    let not_found = || ApiError::JobNotFound(job_id.to_string());
    let job = jobs::get(&state.pool, job_id)
        .await?
        .ok_or_else(not_found)?;
    if user.sees_all() {
        return Ok(job);
    }
    // An image import is its requester's (and the administrators').
    if job.is_image_job() {
        return match job.actor_id.as_deref() {
            Some(actor) if actor == user.id => Ok(job),
            _ => Err(not_found()),
        };
    }
    match crate::app::access::vm_row(state, &job.vm_id).await? {
        Some(vm) if vm.owner_id == user.id => Ok(job),
        Some(_) | None => Err(not_found()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = Envelope<JobView>),
        Unauthorized,
        JobMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("job:read")))
)]
#[tracing::instrument(name = "get_job", skip_all, fields(user_id = %user.id, job_id = %path))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::JobRead)?;
    let job = visible(&state, &user, &path).await?;
    Ok(envelope::ok(JobView::from(job), "Job."))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait at most, up to 120 (default 30).
    #[param(maximum = 120)]
    timeout: Option<u64>,
}

/// Answers when the job ends or `timeout` seconds pass, whichever is first; `data.finished` says
/// which.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/wait",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id."), WaitQuery),
    responses(
        (status = 200, description = "The job when it ended or the timeout passed; `finished` says which.", body = Envelope<WaitedJob>),
        Invalid,
        Unauthorized,
        JobMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("job:read")))
)]
#[tracing::instrument(name = "wait_job", skip_all, fields(user_id = %user.id, job_id = %path))]
pub async fn wait(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: crate::api::body::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::JobRead)?;
    let timeout = query.timeout.unwrap_or(30);
    if timeout > WAIT_MAX_SECS {
        return Err(ApiError::validation(
            "timeout",
            format!("timeout must be at most {WAIT_MAX_SECS} seconds."),
        ));
    }
    let job_id = path.into_inner();
    // Subscribe before reading, so an end between the read and the wait is not missed.
    let mut done = state.job_events.subscribe();
    let mut job = visible(&state, &user, &job_id).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    // A notification is a hint that can be lost with the node that sent it (`crate::notifier`):
    // without one, the job is read again every `RECHECK`, however many other jobs end meanwhile.
    let mut recheck = tokio::time::Instant::now() + RECHECK;
    while !job.is_finished() {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        match tokio::time::timeout_at(deadline.min(recheck), done.recv()).await {
            Err(_) => {}
            Ok(Ok(id)) if id != job_id => continue,
            // Our job, or we lagged behind and may have missed it: read it again.
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(ApiError::Unavailable)
            }
        }
        job = visible(&state, &user, &job_id).await?;
        recheck = tokio::time::Instant::now() + RECHECK;
    }
    // The job's end committed with its event and the VM's row: a read of the VM now sees it.
    let finished = job.is_finished();
    let data = WaitedJob {
        job: JobView::from(job),
        finished,
    };
    Ok(envelope::ok(
        data,
        if finished {
            "The job has ended."
        } else {
            "The job is still in progress."
        },
    ))
}

/// Cancels a queued job, or an image import that is queued or running.
///
/// A VM's job is recorded as `JobCancelled`; an import as `ImageImportCancelled`: its download
/// stops within a second, nothing of it stays on disk, and the image is `failed`, its name free
/// again. A job that ended, or a VM job a worker has begun, is 409 `JOB_NOT_CANCELLABLE`.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id."), KeyHeader),
    responses(
        (status = 200, description = "Cancelled.", body = Envelope<JobView>),
        Invalid,
        Unauthorized,
        JobMissing,
        NotCancellable,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("job:cancel")))
)]
#[tracing::instrument(name = "cancel_job", skip_all, fields(user_id = %user.id, job_id = %path))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::JobCancel)?;
    let job_id = path.into_inner();
    // `If-Match` is about VMs, not jobs.
    let retry = Retry::read(&req, &user, &[])?.without_if_match();
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let job = visible(&state, &user, &job_id).await?;
    let not_cancellable = |why: &str| ApiError::Conflict {
        code: "JOB_NOT_CANCELLABLE",
        message: format!("Job {job_id} cannot be cancelled: {why}"),
    };
    if job.is_image_job() {
        return cancel_import(&state, &user, &retry, &job).await;
    }
    if job.status != JobStatus::Queued {
        return Err(not_cancellable(&format!("it is {}.", job.status)));
    }
    // The cancel's transaction locks the job's row and checks again that no worker took it.
    let command = VmCommand::CancelJob {
        job_id: job_id.clone(),
    };
    // The answer shows the job as the cancel's own transaction left it.
    let answer = Answer::new(true, |done| {
        let job = done
            .job
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a cancelled job was not found in its transaction"))?;
        envelope_answer(StatusCode::OK, JobView::from(job), "Job cancelled.")
    });
    retry
        .execute(&state, &job.vm_id, command, user.meta(Via::Rest), answer)
        .await?
        .map_err(|e| ApiError::from_actor(&job.vm_id, e))
}

/// An image import is cancelled while queued or running: one transaction under the image's lock
/// (`images::cancel`); the worker downloading it stops within a second.
async fn cancel_import(
    state: &AppState,
    user: &AuthUser,
    retry: &Retry,
    job: &JobRow,
) -> Result<HttpResponse, ApiError> {
    let meta = user.meta(Via::Rest);
    let done = retry
        .transaction(state, async |tx| {
            let job = state
                .image_service
                .cancel_import(tx, &meta, job)
                .await
                .map_err(super::images::write_error)?;
            Ok(envelope_answer(
                StatusCode::OK,
                JobView::from(job),
                "Import cancelled.",
            )?)
        })
        .await;
    match done {
        Ok(response) => Ok(response),
        Err(e) => retry.or_earlier(state, e).await,
    }
}
