//! `POST /vms/{id}/iso {image}` and `DELETE /vms/{id}/iso`: put an image's ISO in the VM's
//! CD-ROM, or take it out (the original's `toggleMountIso`). The VM's actor decides and records
//! the request (`IsoChangeRequested`), which opens a `media` job; its worker changes the medium
//! live through QMP on a running machine, or leaves it for the next start, and records
//! `VmIsoChanged`. The answer is 202 with the job, as for the lifecycle verbs.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::super::answers::errors::{
    Invalid, KeyReused, Stale, Unauthorized, VmConflict, VmMissing,
};
use super::super::answers::{Accepted, Envelope};
use super::super::body;
use super::super::error::ApiError;
use super::super::retry::{envelope_answer, IfMatchHeader, KeyHeader, Retry};
use super::visible;
use crate::app::ids::new_job_id;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::conditions::Answer;
use crate::store::Via;
use crate::vm::VmCommand;

/// The image whose `image.iso` goes in the CD-ROM.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachIso {
    /// An image name with an ISO (`<images dir>/<image>/image.iso`).
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9._-]*$")]
    pub image: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{id}/iso",
    tag = "vms",
    operation_id = "attach_iso",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    request_body = AttachIso,
    responses(
        (status = 202, description = "Accepted: a `media` job puts the ISO in the CD-ROM, live on a running VM, for the next start otherwise.", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        (status = 404, description = "No such VM (`VM_NOT_FOUND`), or no image of that name with an ISO (`IMAGE_NOT_FOUND`, naming `image`).", body = super::super::answers::ErrorEnvelope),
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:update")))
)]
#[tracing::instrument(name = "attach_iso", skip_all, fields(user_id = %user.id, vm_id = %path, job_id))]
pub async fn attach_iso(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmUpdate)?;
    let body = body.into_inner().0;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let input: AttachIso = body::typed(body)?;
    crate::images::ImageName::parse(&input.image)
        .map_err(|m| ApiError::validation("image", format!("image {m}")))?;
    let vm_id = path.into_inner();
    visible(&state, &user, &vm_id).await?;
    if state.images.iso(&input.image).is_none() {
        return Err(ApiError::ImageNotFound(input.image));
    }
    change(&state, &user, &vm_id, &retry, Some(input.image)).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{id}/iso",
    tag = "vms",
    operation_id = "detach_iso",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    responses(
        (status = 202, description = "Accepted: a `media` job takes the medium out of the CD-ROM (live on a running VM).", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        VmMissing,
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:update")))
)]
#[tracing::instrument(name = "detach_iso", skip_all, fields(user_id = %user.id, vm_id = %path, job_id))]
pub async fn detach_iso(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmUpdate)?;
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(earlier) = retry.earlier(&state).await? {
        return Ok(earlier);
    }
    let vm_id = path.into_inner();
    visible(&state, &user, &vm_id).await?;
    change(&state, &user, &vm_id, &retry, None).await
}

/// Sends the change to the VM's actor and answers 202 with its job.
async fn change(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    retry: &Retry,
    image: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let job_id = new_job_id();
    tracing::Span::current().record("job_id", job_id.as_str());
    let (answer_job, answer_vm) = (job_id.clone(), vm_id.to_string());
    let answer = Answer::new(false, move |done| {
        let data = Accepted {
            job_id: answer_job.clone(),
            vm_id: answer_vm.clone(),
            status: done.vm.status,
        };
        envelope_answer(StatusCode::ACCEPTED, data, "Accepted; the job is queued.")
    });
    retry
        .clone()
        .seen_by(user)
        .execute(
            state,
            vm_id,
            VmCommand::ChangeIso { job_id, image },
            user.meta(Via::Rest),
            answer,
        )
        .await?
        .map_err(|e| ApiError::from_actor(vm_id, e))
}
