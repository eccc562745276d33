//! `/vms/{id}/snapshots`: the VM's disk (and memory) snapshots. `GET` lists them from the VM's
//! state; `POST` takes one, `POST .../{name}/restore` puts the VM back as one left it and `DELETE
//! .../{name}` deletes one. Each change goes to the VM's actor, which checks it against the
//! snapshot table and records the request (`SnapshotRequested`, `SnapshotRestoreRequested`,
//! `SnapshotDeleteRequested`), opening a `snapshot` job; the worker records `SnapshotTaken`,
//! `SnapshotRestored` or `SnapshotDeleted`. The answer is 202 with the job, as for ISO changes.
//! (These are qcow2 snapshots of the VM's disk, not the event store's aggregate snapshots.)

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::super::answers::errors::{
    Invalid, KeyReused, Stale, Unauthorized, VmConflict, VmMissing,
};
use super::super::answers::{Accepted, Envelope, ErrorEnvelope};
use super::super::error::ApiError;
use super::super::retry::{envelope_answer, IfMatchHeader, KeyHeader, Retry};
use super::super::{body, envelope};
use super::visible;
use crate::api::vm_input::check_description;
use crate::app::ids::new_job_id;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::conditions::Answer;
use crate::store::Via;
use crate::vm::{SnapshotName, VmCommand, VmSnapshot};

/// A snapshot to take.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeSnapshot {
    /// 1 to 63 characters of `A-Z a-z 0-9 . _ -`, not starting with `-` and not only digits
    /// (QEMU would take those for a snapshot id); unique per VM.
    #[schema(
        pattern = "^([A-Za-z._]|[0-9]+[A-Za-z._-])[A-Za-z0-9._-]*$",
        min_length = 1,
        max_length = 63
    )]
    pub name: String,
    /// Free text, at most 1,024 characters.
    pub description: Option<String>,
    /// Save the machine's memory (its running state) too; needs a running VM (409
    /// `VM_NOT_RUNNING` otherwise). Default `false`: the disk alone.
    #[serde(default)]
    pub memory: bool,
}

/// The snapshot name in a path, checked as a body's would be.
fn snapshot_name(raw: &str) -> Result<SnapshotName, ApiError> {
    SnapshotName::parse(raw).map_err(|e| ApiError::validation("name", e.to_string()))
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/snapshots",
    tag = "vms",
    operation_id = "list_vm_snapshots",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`.")),
    responses(
        (status = 200, description = "The VM's disk snapshots, oldest first.", body = Envelope<Vec<VmSnapshot>>),
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:read")))
)]
#[tracing::instrument(name = "list_vm_snapshots", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn list_snapshots(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmRead)?;
    let vm = visible(&state, &user, &path).await?;
    Ok(envelope::ok(
        vm.snapshots,
        "The virtual machine's snapshots.",
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{id}/snapshots",
    tag = "vms",
    operation_id = "take_vm_snapshot",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    request_body = TakeSnapshot,
    responses(
        (status = 202, description = "Accepted: a `snapshot` job takes it, live through QMP on a running VM (with its memory when asked), with `qemu-img` on a stopped one.", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        VmMissing,
        (status = 409, description = "A snapshot of that name exists (`SNAPSHOT_EXISTS`), `memory` on a VM that does not run (`VM_NOT_RUNNING`), or the VM is busy or in a transitional status (`VM_BUSY`).", body = ErrorEnvelope),
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:update")))
)]
#[tracing::instrument(name = "take_vm_snapshot", skip_all, fields(user_id = %user.id, vm_id = %path, job_id))]
pub async fn take_snapshot(
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
    let input: TakeSnapshot = body::typed(body)?;
    let name = snapshot_name(&input.name)?;
    if let Some(description) = &input.description {
        check_description(description)?;
    }
    let vm_id = path.into_inner();
    let job_id = new_job_id();
    let command = VmCommand::TakeSnapshot {
        job_id: job_id.clone(),
        name,
        description: input.description,
        memory: input.memory,
    };
    change(&state, &user, &vm_id, &retry, job_id, command).await
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{id}/snapshots/{name}/restore",
    tag = "vms",
    operation_id = "restore_vm_snapshot",
    params(
        ("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."),
        ("name" = String, Path, description = "The snapshot's name.", pattern = "^([A-Za-z._]|[0-9]+[A-Za-z._-])[A-Za-z0-9._-]*$", min_length = 1, max_length = 63),
        KeyHeader,
        IfMatchHeader
    ),
    responses(
        (status = 202, description = "Accepted: a `snapshot` job puts the VM back as the snapshot left it: a memory snapshot on a running VM with its running state (no reboot), otherwise the disk of a stopped VM.", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        (status = 404, description = "No such VM (`VM_NOT_FOUND`) or snapshot (`SNAPSHOT_NOT_FOUND`).", body = ErrorEnvelope),
        (status = 409, description = "A disk-only snapshot on a VM that runs (`VM_NOT_STOPPED`: stop it first), or the VM is busy or in a transitional status (`VM_BUSY`).", body = ErrorEnvelope),
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:update")))
)]
#[tracing::instrument(name = "restore_vm_snapshot", skip_all, fields(user_id = %user.id, vm_id, job_id))]
pub async fn restore_snapshot(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    named_change(&state, &user, path.into_inner(), &req, |job_id, name| {
        VmCommand::RestoreSnapshot { job_id, name }
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{id}/snapshots/{name}",
    tag = "vms",
    operation_id = "delete_vm_snapshot",
    params(
        ("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."),
        ("name" = String, Path, description = "The snapshot's name.", pattern = "^([A-Za-z._]|[0-9]+[A-Za-z._-])[A-Za-z0-9._-]*$", min_length = 1, max_length = 63),
        KeyHeader,
        IfMatchHeader
    ),
    responses(
        (status = 202, description = "Accepted: a `snapshot` job deletes it from the VM's disk (live on a running VM).", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        (status = 404, description = "No such VM (`VM_NOT_FOUND`) or snapshot (`SNAPSHOT_NOT_FOUND`).", body = ErrorEnvelope),
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:update")))
)]
#[tracing::instrument(name = "delete_vm_snapshot", skip_all, fields(user_id = %user.id, vm_id, job_id))]
pub async fn delete_snapshot(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    named_change(&state, &user, path.into_inner(), &req, |job_id, name| {
        VmCommand::DeleteSnapshot { job_id, name }
    })
    .await
}

/// A change to one named snapshot (restore, delete): checks the name and sends the command
/// `make` builds from a new job id and the name. The VM's actor decides whether the VM is the
/// caller's (`VM_NOT_FOUND` otherwise), with no read before it.
async fn named_change(
    state: &AppState,
    user: &AuthUser,
    (vm_id, raw_name): (String, String),
    req: &HttpRequest,
    make: impl FnOnce(String, SnapshotName) -> VmCommand,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmUpdate)?;
    tracing::Span::current().record("vm_id", vm_id.as_str());
    let retry = Retry::read(req, user, &[])?;
    if let Some(earlier) = retry.earlier(state).await? {
        return Ok(earlier);
    }
    let name = snapshot_name(&raw_name)?;
    let job_id = new_job_id();
    let command = make(job_id.clone(), name);
    change(state, user, &vm_id, &retry, job_id, command).await
}

/// Sends the change to the VM's actor and answers 202 with its job.
async fn change(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    retry: &Retry,
    job_id: String,
    command: VmCommand,
) -> Result<HttpResponse, ApiError> {
    tracing::Span::current().record("job_id", job_id.as_str());
    let answer_vm = vm_id.to_string();
    let answer = Answer::new(false, move |done| {
        let data = Accepted {
            job_id: job_id.clone(),
            vm_id: answer_vm.clone(),
            status: done.vm.status,
        };
        envelope_answer(StatusCode::ACCEPTED, data, "Accepted; the job is queued.")
    });
    retry
        .clone()
        .seen_by(user)
        .execute(state, vm_id, command, user.meta(Via::Rest), answer)
        .await?
        .map_err(|e| ApiError::from_actor(vm_id, e))
}
