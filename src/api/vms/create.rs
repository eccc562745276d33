//! `POST /vms`: a new VM, checked against the limits; its provisioning job runs at once.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::super::answers::errors::{Invalid, KeyReused, Unauthorized, VmConflict};
use super::super::answers::{CreatedVm, Envelope};
use super::super::body;
use super::super::cloud_init_input;
use super::super::error::ApiError;
use super::super::network_input;
use super::super::retry::{envelope_answer, KeyHeader, Retry};
use super::super::vm_input::{self, CreateVm};
use super::view_of;
use crate::app::ids::{new_job_id, new_vm_id};
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::conditions::Answer;
use crate::store::Via;
use crate::vm::{NetworkSpec, Owner, VmCommand, VmSpec};

#[utoipa::path(
    post,
    path = "/api/v1/vms",
    operation_id = "create_vm",
    tag = "vms",
    request_body = CreateVm,
    params(KeyHeader),
    responses(
        (status = 201, description = "Created; its provisioning job runs.", body = Envelope<CreatedVm>),
        Invalid,
        Unauthorized,
        VmConflict,
        KeyReused
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:create")))
)]
#[tracing::instrument(name = "create_vm", skip_all, fields(user_id = %user.id, vm_id, job_id))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmCreate)?;
    let body = body.into_inner().0;
    // `If-Match` is about an existing VM; a new one has none to match.
    let retry = Retry::read_json(&req, &user, &body)?
        .without_if_match()
        .within(crate::app::access::quota_defaults(&state, &user));
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
    let request =
        network_input::check_network(&input.network.unwrap_or_default(), &state.settings.network)?;
    network_input::check_bridge_allowed(&request, &user)?;
    let boot_order = input.boot_order.unwrap_or_default();
    cloud_init_input::check_boot_order(&boot_order)?;
    let (cloud_init, secrets) = match &input.cloud_init {
        Some(c) => {
            let (spec, secrets) = cloud_init_input::check_cloud_init(c)?;
            (Some(spec), Some(secrets))
        }
        None => (None, None),
    };
    // The secrets are written outside the log, in the transaction that records the VM.
    let retry = retry.with_secrets(secrets);

    let vm_id = new_vm_id();
    let job_id = new_job_id();
    tracing::Span::current()
        .record("vm_id", vm_id.as_str())
        .record("job_id", job_id.as_str());
    let spec = VmSpec {
        name: input.name.clone(),
        description: input.description,
        cpu: input.cpu,
        memory: input.memory,
        disk: input.disk,
        os,
        network: NetworkSpec::default(),
        cloud_init,
        boot_order,
    };
    let owner = Owner {
        id: user.id.clone(),
        name: user.name.clone(),
    };
    let answer_job = job_id.clone();
    let answer = Answer::new(false, move |done| {
        let data = CreatedVm {
            vm: view_of(done),
            job_id: answer_job.clone(),
        };
        envelope_answer(
            StatusCode::CREATED,
            data,
            "Virtual machine created; it is being provisioned.",
        )
    });
    // The name and the host ports are reserved in the transaction that records the VM (409
    // VM_NAME_TAKEN or PORT_TAKEN if not).
    let result =
        network_input::with_assigned_ports(&state, Some(&request), None, async |network| {
            let command = VmCommand::Create {
                vm_id: vm_id.clone(),
                spec: VmSpec {
                    // Always chosen: a new VM records a network.
                    network: network.unwrap_or_default(),
                    ..spec.clone()
                },
                owner: owner.clone(),
                image_present,
                job_id: job_id.clone(),
            };
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
    result.map_err(|e| ApiError::from_actor(&vm_id, e))
}
