//! `GET /vms` and `GET /vms/{id}`: the VM list a user may see, and one VM with its `ETag`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::super::answers::errors::{Forbidden, Invalid, Unauthorized, VmMissing};
use super::super::answers::{Envelope, Page, Pagination};
use super::super::envelope;
use super::super::error::ApiError;
use super::super::retry;
use super::{page_and_limit, visible};
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::vm_view::{self, VmView};
use crate::vm::VmStatus;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// VMs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only VMs in this status, e.g. `running`.
    #[param(
        pattern = "^(creating|stopped|starting|running|stopping|pausing|paused|resuming|rebooting|deleting|deleted|error|crashed)$"
    )]
    status: Option<String>,
    /// Only this user's VMs, by username (administrators; others may name only themselves).
    owner: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/vms",
    operation_id = "list_vms",
    tag = "vms",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of VMs.", body = Envelope<Page<VmView>>),
        Invalid,
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:read")))
)]
#[tracing::instrument(name = "list_vms", skip_all, fields(user_id = %user.id))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: crate::api::body::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmRead)?;
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
    let owner_id = match (&q.owner, user.sees_all()) {
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
    get,
    path = "/api/v1/vms/{id}",
    operation_id = "get_vm",
    tag = "vms",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`.")),
    responses(
        (status = 200, description = "The VM.", body = Envelope<VmView>,
            headers(("ETag" = String, description = "The VM's version, e.g. `\"7\"` (strong); send it in `If-Match` to change the VM only if it did not change since."))),
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:read")))
)]
#[tracing::instrument(name = "get_vm", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmRead)?;
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
