//! The lifecycle verbs over REST: `POST /vms/{id}/<verb>` (and `DELETE /vms/{id}`, which opens a
//! job the same way). The verb and its parameters are parsed, and the command sent, by the use
//! case `app::lifecycle` that `/ws` `vm-control` shares; this file adds what is REST's own: the
//! `Idempotency-Key` and `If-Match` conditions, and the 202 envelope with the job id.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::super::answers::errors::{
    Invalid, KeyReused, Stale, Unauthorized, VmConflict, VmMissing,
};
use super::super::answers::{Accepted, Envelope};
use super::super::body;
use super::super::error::ApiError;
use super::super::retry::{envelope_answer, IfMatchHeader, KeyHeader, Retry};
use super::super::vm_input::StopVm;
use crate::app::lifecycle::{self, Action, LifecycleError, Params, Ticket, Verb};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::store::conditions::Answer;
use crate::store::Via;

const ACCEPTED: &str = "Accepted; the job is queued.";

/// Sends `action` through the lifecycle use case with the request's `Idempotency-Key` and
/// `If-Match`, and answers 202 with the job id (or the first answer to the same request).
pub(super) async fn submit(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    retry: &Retry,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let answer = |ticket: &Ticket| {
        let (job_id, vm_id) = (ticket.job_id.clone(), ticket.vm_id.clone());
        Answer::new(false, move |done| {
            let data = Accepted {
                job_id: job_id.clone(),
                vm_id: vm_id.clone(),
                status: done.vm.status,
            };
            envelope_answer(StatusCode::ACCEPTED, data, ACCEPTED)
        })
    };
    let recorded = match lifecycle::request(state, user, vm_id, action, Via::Rest, |ticket| {
        retry.conditions(answer(ticket))
    })
    .await
    {
        Ok(accepted) => Ok(accepted.answer),
        Err(LifecycleError::Actor { source, .. }) => Err(source),
        Err(e) => return Err(e.into()),
    };
    retry
        .answered(state, recorded)
        .await?
        .map_err(|e| ApiError::from_actor(vm_id, e))
}

/// A lifecycle action without a body (a verb, or a delete).
#[tracing::instrument(name = "vm_verb", skip_all, fields(user_id = %user.id, vm_id = %path, verb = ?action, job_id))]
pub(super) async fn act(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    submit(&state, &user, &path, &retry, action).await
}

async fn verb(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    verb: Verb,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse(verb, Params::default(), &state.settings)?;
    act(state, user, path, req, action).await
}

/// A lifecycle verb without a body: its handler and its place in the OpenAPI document.
macro_rules! verb_handler {
    ($name:ident, $method:ident, $path:tt, $op:tt, $verb:ident, $perm:tt, $accepted:tt) => {
        #[utoipa::path(
            $method,
            path = $path,
            tag = "vms",
            operation_id = $op,
            params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
            responses(
                (status = 202, description = $accepted, body = Envelope<Accepted>),
                Invalid,
                Unauthorized,
                VmMissing,
                VmConflict,
                Stale,
                KeyReused
            ),
            security(("bearer" = [])),
            extensions(("x-permission" = json!($perm)))
        )]
        pub async fn $name(
            state: web::Data<AppState>,
            user: AuthUser,
            path: web::Path<String>,
            req: HttpRequest,
            _body: crate::api::body::NoBody,
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
    "vm:start",
    "Accepted: the VM boots."
);
verb_handler!(
    restart,
    post,
    "/api/v1/vms/{id}/restart",
    "restart_vm",
    Restart,
    "vm:restart",
    "Accepted: the guest reboots."
);
verb_handler!(
    pause,
    post,
    "/api/v1/vms/{id}/pause",
    "pause_vm",
    Pause,
    "vm:pause",
    "Accepted: the vCPUs stop."
);
verb_handler!(
    resume,
    post,
    "/api/v1/vms/{id}/resume",
    "resume_vm",
    Resume,
    "vm:resume",
    "Accepted: the vCPUs run again."
);
verb_handler!(
    reset,
    post,
    "/api/v1/vms/{id}/reset",
    "reset_vm",
    Reset,
    "vm:reset",
    "Accepted: a hard reset, like the reset button."
);
#[utoipa::path(
    post,
    path = "/api/v1/vms/{id}/stop",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    request_body = Option<StopVm>,
    responses(
        (status = 202, description = "Accepted: ACPI power-down, then forced after `timeout` seconds (or at once with `force`).", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        VmMissing,
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:stop")))
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
    let params = Params {
        force: input.force,
        timeout: input.timeout,
    };
    let action = Action::parse(Verb::Stop, params, &state.settings)?;
    submit(&state, &user, &path, &retry, action).await
}
