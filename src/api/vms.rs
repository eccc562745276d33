//! `/vms`: list, create, read, change and delete VMs, and the lifecycle verbs. Every mutating
//! call goes to the VM's actor, which records events; the answer carries the job id at once.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::answers::errors::{
    Forbidden, Invalid, KeyReused, Stale, Unauthorized, VmConflict, VmMissing,
};
use super::answers::{
    Accepted, CreatedVm, CursorPage, Envelope, History, HistoryPoint, Page, Pagination, Patched,
};
use super::body;
use super::envelope;
use super::error::ApiError;
use super::retry::{self, envelope_answer, IfMatchHeader, KeyHeader, Retry};
use super::vm_input::{self, CreateVm, PatchVm, StopVm};
use crate::auth::{AuthUser, ID_ALPHABET};
use crate::startup::AppState;
use crate::store::audit::AuditEntry;
use crate::store::audit::{self, EventFilter};
use crate::store::conditions::Answer;
use crate::store::vm_view::VmView;
use crate::store::{vm_view, Via};
use crate::vm::{Owner, Reconfiguration, VmCommand, VmError, VmSpec, VmStatus};

pub fn new_vm_id() -> String {
    format!("vm-{}", nanoid::nanoid!(12, &ID_ALPHABET))
}

pub fn new_job_id() -> String {
    format!("job-{}", nanoid::nanoid!(16, &ID_ALPHABET))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page, from 1 (default 1).
    page: Option<u32>,
    /// VMs per page, 1 to 100 (default 20).
    limit: Option<u32>,
    /// Only VMs in this status, e.g. `running`.
    status: Option<String>,
    /// Only this user's VMs, by username (administrators; others may name only themselves).
    owner: Option<String>,
}

pub fn page_and_limit(page: Option<u32>, limit: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(20);
    if page == 0 {
        return Err(ApiError::validation("page", "page starts at 1."));
    }
    if limit == 0 || limit > 100 {
        return Err(ApiError::validation(
            "limit",
            "limit must be between 1 and 100.",
        ));
    }
    Ok((page, limit))
}

#[utoipa::path(
    get,
    path = "/api/v1/vms",
    tag = "vms",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of VMs.", body = Envelope<Page<VmView>>),
        Invalid,
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "list_vms", skip_all, fields(user_id = %user.id))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (page, limit) = page_and_limit(q.page, q.limit)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            VmStatus::parse(s)
                .ok_or_else(|| ApiError::validation("status", format!("'{s}' is not a VM status.")))
        })
        .transpose()?;
    let owner_id = match (&q.owner, user.is_admin()) {
        (None, true) => None,
        (Some(owner), true) => Some(
            crate::store::users::by_username(&state.pool, owner)
                .await?
                .map(|u| u.id)
                .unwrap_or_else(|| format!("unknown:{owner}")),
        ),
        (None, false) => Some(user.id.clone()),
        (Some(owner), false) if *owner == user.name => Some(user.id.clone()),
        (Some(_), false) => {
            return Err(ApiError::Forbidden(
                "Only administrators may list other users' virtual machines.".into(),
            ))
        }
    };
    let filter = vm_view::ListFilter {
        owner_id,
        status,
        page,
        limit,
    };
    let (vms, total) = vm_view::list(&state.pool, &filter).await?;
    Ok(envelope::ok(
        Page {
            items: vms,
            pagination: Pagination::new(page, limit, total),
        },
        "Virtual machines.",
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms",
    tag = "vms",
    request_body = CreateVm,
    params(KeyHeader),
    responses(
        (status = 201, description = "Created; its provisioning job runs.", body = Envelope<CreatedVm>,
            headers(("Idempotent-Replayed" = bool, description = "`true` when this is the first answer to an earlier request with the same Idempotency-Key."))),
        Invalid,
        Unauthorized,
        VmConflict,
        KeyReused
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "create_vm", skip_all, fields(user_id = %user.id, vm_id, job_id))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // `If-Match` is about an existing VM; a new one has none to match.
    let retry = Retry::read_json(&req, &user, &body)?.without_if_match();
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let input: CreateVm = body::typed(body)?;
    let limits = &state.settings.limits;
    vm_input::check_name(&input.name, limits)?;
    if let Some(d) = &input.description {
        vm_input::check_description(d)?;
    }
    vm_input::check_cpu(input.cpu, limits)?;
    vm_input::check_memory(input.memory, limits)?;
    vm_input::check_disk(input.disk, limits)?;
    let (os, image_present) = vm_input::check_os(input.os.as_deref(), limits, &state.images)?;

    let vm_id = new_vm_id();
    let job_id = new_job_id();
    tracing::Span::current()
        .record("vm_id", vm_id.as_str())
        .record("job_id", job_id.as_str());
    let command = VmCommand::Create {
        vm_id: vm_id.clone(),
        spec: VmSpec {
            name: input.name.clone(),
            description: input.description,
            cpu: input.cpu,
            memory: input.memory,
            disk: input.disk,
            os,
        },
        owner: Owner {
            id: user.id.clone(),
            name: user.name.clone(),
        },
        image_present,
        job_id: job_id.clone(),
    };
    let answer = Answer::new(false, move |done| {
        let data = CreatedVm {
            vm: view_of(done.vm, done.version),
            job_id: job_id.clone(),
        };
        envelope_answer(
            StatusCode::CREATED,
            data,
            "Virtual machine created; it is being provisioned.",
        )
    });
    // The name is reserved in the transaction that records the VM (409 VM_NAME_TAKEN if not).
    retry
        .execute(&state, &vm_id, command, user.meta(Via::Rest), answer)
        .await?
        .map_err(|e| ApiError::from_actor(&vm_id, e))
}

fn view_of(vm: &crate::vm::Vm, version: usize) -> vm_view::VmView {
    let now = chrono::Utc::now();
    vm_view::VmView::new(vm, version as i64, now, now)
}

/// The VM, if it exists, is not deleted, and the user may see it. Anything else is a 404, so
/// other users' VM ids cannot be probed.
async fn visible(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
) -> Result<vm_view::VmView, ApiError> {
    match vm_view::get(&state.pool, vm_id).await? {
        Some(vm) if user.may_access(&vm.owner_id) && vm.status != VmStatus::Deleted => Ok(vm),
        Some(_) | None => Err(ApiError::VmNotFound(vm_id.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`.")),
    responses(
        (status = 200, description = "The VM.", body = Envelope<VmView>,
            headers(("ETag" = String, description = "The VM's version, e.g. `\"7\"` (strong); send it in `If-Match` to change the VM only if it did not change since."))),
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "get_vm", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let vm = visible(&state, &user, &path).await?;
    let etag = retry::etag(vm.version);
    let mut response = envelope::ok(vm, "Virtual machine.");
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&etag) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ETAG, value);
    }
    Ok(response)
}

#[utoipa::path(
    patch,
    path = "/api/v1/vms/{id}",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`.")),
    request_body = PatchVm,
    params(KeyHeader, IfMatchHeader),
    responses(
        (status = 200, description = "Changed (or nothing to change).", body = Envelope<Patched>,
            headers(("Idempotent-Replayed" = bool, description = "`true` when this is the first answer to an earlier request with the same Idempotency-Key."))),
        Invalid,
        Unauthorized,
        VmMissing,
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "patch_vm", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn patch(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let vm_id = path.into_inner();
    let body = body.into_inner();
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let input: PatchVm = body::typed(body)?;
    let limits = &state.settings.limits;
    if let Some(n) = &input.name {
        vm_input::check_name(n, limits)?;
    }
    if let Some(d) = &input.description {
        vm_input::check_description(d)?;
    }
    if let Some(c) = input.cpu {
        vm_input::check_cpu(c, limits)?;
    }
    if let Some(m) = input.memory {
        vm_input::check_memory(m, limits)?;
    }
    let current = visible(&state, &user, &vm_id).await?;
    let command = VmCommand::Reconfigure(Reconfiguration {
        name: input.name,
        description: input.description,
        cpu: input.cpu,
        memory: input.memory,
    });
    let answer = Answer::new(false, |done| {
        let view = view_of(done.vm, done.version);
        let requires_restart = view.requires_restart;
        let data = Patched {
            vm: view,
            requires_restart,
        };
        envelope_answer(StatusCode::OK, data, "Virtual machine updated.")
    });
    // A new name is reserved (and the old one released) in the transaction that records it.
    let result = retry
        .execute(&state, &vm_id, command, user.meta(Via::Rest), answer)
        .await?;
    match result {
        Ok(response) => Ok(response),
        Err(crate::actors::ActorError::Refused(VmError::NothingToChange)) => Ok(envelope::ok(
            Patched {
                requires_restart: current.requires_restart,
                vm: current,
            },
            "Nothing to change.",
        )),
        Err(e) => Err(ApiError::from_actor(&vm_id, e)),
    }
}

/// The lifecycle verbs that take no body (stop has its own handler).
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Start,
    Restart,
    Pause,
    Resume,
    Reset,
    Delete,
}

impl Verb {
    fn command(self, job_id: String) -> VmCommand {
        match self {
            Verb::Start => VmCommand::Start { job_id },
            Verb::Restart => VmCommand::Restart { job_id },
            Verb::Pause => VmCommand::Pause { job_id },
            Verb::Resume => VmCommand::Resume { job_id },
            Verb::Reset => VmCommand::Reset { job_id },
            Verb::Delete => VmCommand::Delete { job_id },
        }
    }
}

/// Sends a lifecycle command and answers 202 with the job id.
pub async fn submit(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    via: Via,
    make: impl FnOnce(String) -> VmCommand,
) -> Result<Accepted, ApiError> {
    visible(state, user, vm_id).await?;
    let job_id = new_job_id();
    tracing::Span::current().record("job_id", job_id.as_str());
    let committed = state
        .registry
        .execute(vm_id, make(job_id.clone()), user.meta(via))
        .await
        .map_err(|e| ApiError::from_actor(vm_id, e))?;
    Ok(Accepted {
        job_id,
        vm_id: vm_id.to_string(),
        status: committed.vm.status,
    })
}

const ACCEPTED: &str = "Accepted; the job is queued.";

/// [`submit`] over REST: with the request's `Idempotency-Key` and `If-Match`.
async fn submit_retryable(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    retry: &Retry,
    make: impl FnOnce(String) -> VmCommand,
) -> Result<HttpResponse, ApiError> {
    if let Some(earlier) = retry.earlier(state).await? {
        return Ok(earlier);
    }
    visible(state, user, vm_id).await?;
    let job_id = new_job_id();
    tracing::Span::current().record("job_id", job_id.as_str());
    let command = make(job_id.clone());
    let vm = vm_id.to_string();
    let answer = Answer::new(false, move |done| {
        let data = Accepted {
            job_id: job_id.clone(),
            vm_id: vm.clone(),
            status: done.vm.status,
        };
        envelope_answer(StatusCode::ACCEPTED, data, ACCEPTED)
    });
    retry
        .execute(state, vm_id, command, user.meta(Via::Rest), answer)
        .await?
        .map_err(|e| ApiError::from_actor(vm_id, e))
}

#[tracing::instrument(name = "vm_verb", skip_all, fields(user_id = %user.id, vm_id = %path, verb = ?verb, job_id))]
async fn verb(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    verb: Verb,
) -> Result<HttpResponse, ApiError> {
    let retry = Retry::read(&req, &user, &[])?;
    submit_retryable(&state, &user, &path, &retry, |job| verb.command(job)).await
}

/// A lifecycle verb without a body: its handler and its place in the OpenAPI document.
macro_rules! verb_handler {
    ($name:ident, $method:ident, $path:tt, $op:tt, $verb:ident, $accepted:tt) => {
        #[utoipa::path(
            $method,
            path = $path,
            tag = "vms",
            operation_id = $op,
            params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
            responses(
                (status = 202, description = $accepted, body = Envelope<Accepted>,
                    headers(("Idempotent-Replayed" = bool, description = "`true` when this is the first answer to an earlier request with the same Idempotency-Key."))),
                Invalid,
                Unauthorized,
                VmMissing,
                VmConflict,
                Stale,
                KeyReused
            ),
            security(("bearer" = []))
        )]
        pub async fn $name(
            state: web::Data<AppState>,
            user: AuthUser,
            path: web::Path<String>,
            req: HttpRequest,
        ) -> Result<HttpResponse, ApiError> {
            verb(state, user, path, req, Verb::$verb).await
        }
    };
}

verb_handler!(
    start,
    post,
    "/api/v1/vms/{id}/start",
    "start_vm",
    Start,
    "Accepted: the VM boots."
);
verb_handler!(
    restart,
    post,
    "/api/v1/vms/{id}/restart",
    "restart_vm",
    Restart,
    "Accepted: the guest reboots."
);
verb_handler!(
    pause,
    post,
    "/api/v1/vms/{id}/pause",
    "pause_vm",
    Pause,
    "Accepted: the vCPUs stop."
);
verb_handler!(
    resume,
    post,
    "/api/v1/vms/{id}/resume",
    "resume_vm",
    Resume,
    "Accepted: the vCPUs run again."
);
verb_handler!(
    reset,
    post,
    "/api/v1/vms/{id}/reset",
    "reset_vm",
    Reset,
    "Accepted: a hard reset, like the reset button."
);
verb_handler!(
    delete,
    delete,
    "/api/v1/vms/{id}",
    "delete_vm",
    Delete,
    "Accepted: the VM and its disk go (it must be stopped)."
);

#[utoipa::path(
    post,
    path = "/api/v1/vms/{id}/stop",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    request_body = Option<StopVm>,
    responses(
        (status = 202, description = "Accepted: ACPI power-down, then forced after `timeout` seconds (or at once with `force`).", body = Envelope<Accepted>,
            headers(("Idempotent-Replayed" = bool, description = "`true` when this is the first answer to an earlier request with the same Idempotency-Key."))),
        Invalid,
        Unauthorized,
        VmMissing,
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "stop_vm", skip_all, fields(user_id = %user.id, vm_id = %path, job_id))]
pub async fn stop(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    bytes: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let retry = Retry::read(&req, &user, &bytes)?;
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let input: StopVm = body::optional(&req, &bytes)?;
    vm_input::check_stop(&input, &state.settings.limits)?;
    let force = input.force.unwrap_or(false);
    let timeout = input
        .timeout
        .unwrap_or(state.settings.default_stop_timeout_secs);
    submit_retryable(&state, &user, &path, &retry, |job_id| VmCommand::Stop {
        job_id,
        force,
        timeout,
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this sequence number (default 0: from the first).
    after: Option<i64>,
    /// Events per page, 1 to 100 (default 20).
    limit: Option<u32>,
}

/// The VM, deleted or not, if the user may read its history.
async fn readable(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
) -> Result<vm_view::VmView, ApiError> {
    match vm_view::get(&state.pool, vm_id).await? {
        Some(vm) if user.may_access(&vm.owner_id) => Ok(vm),
        Some(_) | None => Err(ApiError::VmNotFound(vm_id.to_string())),
    }
}

/// The VM's own events, oldest first; `after` and `next` are sequence numbers. A deleted VM's
/// events stay readable.
#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/events",
    tag = "audit",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), EventsQuery),
    responses(
        (status = 200, description = "The VM's events, oldest first; `next` is a sequence number.", body = Envelope<CursorPage<AuditEntry>>),
        Invalid,
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "vm_events", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn events(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let vm_id = path.into_inner();
    readable(&state, &user, &vm_id).await?;
    let (_, limit) = page_and_limit(None, query.limit)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::validation("after", "after must not be negative."));
    }
    let filter = EventFilter {
        vm_id: Some(vm_id),
        after_sequence: Some(after),
        ..EventFilter::default()
    };
    let rows = audit::page(&state.pool, &filter, limit).await?;
    let next = rows.last().map(|e| e.sequence).unwrap_or(after);
    let items: Vec<_> = rows.iter().map(audit::AuditRow::entry).collect();
    Ok(envelope::ok(
        CursorPage {
            has_more: items.len() == limit as usize,
            items,
            next,
        },
        "The virtual machine's events.",
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A sequence number or an RFC 3339 time (default: now).
    at: Option<String>,
}

/// `GET /vms/{id}/history?at=<sequence | RFC 3339 time>`: the VM as it was then, rebuilt from its
/// own events by the aggregate. Without `at`, as it is now.
#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/history",
    tag = "audit",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), HistoryQuery),
    responses(
        (status = 200, description = "The VM as it was then.", body = Envelope<History>),
        Invalid,
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "vm_history", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn history(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let vm_id = path.into_inner();
    readable(&state, &user, &vm_id).await?;
    // The stream itself, not the VM list, says how far history goes.
    let latest = audit::latest_sequence(&state.pool, &vm_id).await?;
    let sequence = match query.at.as_deref() {
        None => latest,
        Some(at) => match at.parse::<i64>() {
            Ok(n) if n >= 1 => n.min(latest),
            Ok(_) => return Err(ApiError::validation("at", "A sequence starts at 1.")),
            Err(_) => {
                let time = super::audit::parse_time("at", at)?;
                audit::sequence_at(&state.pool, &vm_id, time)
                    .await?
                    .ok_or_else(|| {
                        ApiError::validation("at", "The virtual machine did not exist yet then.")
                    })?
            }
        },
    };
    let (created_at, recorded_at) = audit::recorded_at(&state.pool, &vm_id, sequence)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(vm_id.clone()))?;
    let vm = state
        .registry
        .store()
        .state_at(&vm_id, usize::try_from(sequence).unwrap_or(0))
        .await?;
    let view = vm_view::VmView::new(&vm, sequence, created_at, recorded_at);
    Ok(envelope::ok(
        History {
            vm_id,
            at: HistoryPoint {
                sequence,
                recorded_at,
            },
            latest_sequence: latest,
            state: view,
        },
        "The virtual machine's state at that point.",
    ))
}
