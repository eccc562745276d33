//! `PATCH /vms/{id}` and `DELETE /vms/{id}`: change a VM's name, description, size, network,
//! cloud-init settings or boot order,
//! or delete it (a delete opens a job like the lifecycle verbs, and goes the same way).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::super::answers::errors::{
    Invalid, KeyReused, Stale, Unauthorized, VmConflict, VmMissing,
};
use super::super::answers::{Accepted, Envelope, Patched};
use super::super::body;
use super::super::cloud_init_input;
use super::super::envelope;
use super::super::error::ApiError;
use super::super::network_input;
use super::super::retry::{envelope_answer, IfMatchHeader, KeyHeader, Retry};
use super::super::vm_input::{self, PatchVm};
use super::lifecycle::act;
use super::{view_of, visible};
use crate::actors::ActorError;
use crate::app::lifecycle::Action;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::conditions::Answer;
use crate::store::Via;
use crate::vm::{Reconfiguration, VmCommand, VmError};

#[utoipa::path(
    patch,
    path = "/api/v1/vms/{id}",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`.")),
    request_body = PatchVm,
    params(KeyHeader, IfMatchHeader),
    responses(
        (status = 200, description = "Changed (or nothing to change).", body = Envelope<Patched>),
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
#[tracing::instrument(name = "patch_vm", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn patch(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmUpdate)?;
    let vm_id = path.into_inner();
    let body = body.into_inner().0;
    let retry = Retry::read_json(&req, &user, &body)?
        .within(crate::app::access::quota_defaults(&state, &user))
        .seen_by(&user);
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
    let network = input
        .network
        .as_ref()
        .map(|n| network_input::check_network(n, &state.settings.network))
        .transpose()?;
    if let Some(request) = &network {
        network_input::check_bridge_allowed(request, &user)?;
    }
    if let Some(order) = &input.boot_order {
        cloud_init_input::check_boot_order(order)?;
    }
    let (cloud_init, secrets) = match &input.cloud_init {
        Some(c) => {
            let (spec, secrets) = cloud_init_input::check_cloud_init(c)?;
            (Some(spec), Some(secrets))
        }
        None => (None, None),
    };
    let retry = retry.with_secrets(secrets);
    // The VM's actor decides whether the VM is the caller's; its current ports are read first
    // only when the network changes (to keep the ones it holds).
    let current_ports = match &network {
        Some(_) => Some(visible(&state, &user, &vm_id).await?.network.ports),
        None => None,
    };
    let answer = Answer::new(false, |done| {
        let view = view_of(done);
        let requires_restart = view.requires_restart;
        let data = Patched {
            vm: view,
            requires_restart,
        };
        envelope_answer(StatusCode::OK, data, "Virtual machine updated.")
    });
    // A new name and new host ports are reserved (and the old ones released) in the transaction
    // that records them.
    let held = current_ports
        .as_deref()
        .map(|ports| (vm_id.as_str(), ports));
    let result =
        network_input::with_assigned_ports(&state, network.as_ref(), held, async |chosen| {
            let command = VmCommand::Reconfigure(Reconfiguration {
                name: input.name.clone(),
                description: input.description.clone(),
                cpu: input.cpu,
                memory: input.memory,
                network: chosen,
                cloud_init: cloud_init.clone(),
                boot_order: input.boot_order.clone(),
            });
            retry
                .execute(
                    &state,
                    &vm_id,
                    command,
                    user.meta(Via::Rest),
                    answer.clone(),
                )
                .await
        })
        .await?;
    match result {
        Ok(response) => Ok(response),
        Err(ActorError::Refused(VmError::NothingToChange)) => {
            let current = visible(&state, &user, &vm_id).await?;
            Ok(envelope::ok(
                Patched {
                    requires_restart: current.requires_restart,
                    vm: current,
                },
                crate::api::envelope::NOTHING_TO_CHANGE,
            ))
        }
        Err(e) => Err(ApiError::from_actor(&vm_id, e)),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{id}",
    tag = "vms",
    operation_id = "delete_vm",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), KeyHeader, IfMatchHeader),
    responses(
        (status = 202, description = "Accepted: the VM and its disk go (it must be stopped).", body = Envelope<Accepted>),
        Invalid,
        Unauthorized,
        VmMissing,
        VmConflict,
        Stale,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:delete")))
)]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    act(state, user, path, req, Action::Delete).await
}
