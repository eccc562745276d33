//! `GET /vms/{id}/events` and `GET /vms/{id}/history`: a VM's own events, and the VM as it was
//! at a point of its history (rebuilt by the aggregate). A deleted VM's history stays readable.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::super::answers::errors::{Invalid, Unauthorized, VmMissing};
use super::super::answers::{CursorPage, Envelope, History, HistoryPoint};
use super::super::envelope;
use super::super::error::ApiError;
use super::{page_and_limit, readable};
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::audit::{self, AuditEntry, EventFilter};
use crate::store::vm_view;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this sequence number (default 0: from the first).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Events per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// The VM's own events, oldest first; `after` and `next` are sequence numbers. A deleted VM's
/// events stay readable.
#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/events",
    operation_id = "list_vm_events",
    tag = "audit",
    params(("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."), EventsQuery),
    responses(
        (status = 200, description = "The VM's events, oldest first; `next` is a sequence number.", body = Envelope<CursorPage<AuditEntry>>),
        Invalid,
        Unauthorized,
        VmMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:read")))
)]
#[tracing::instrument(name = "vm_events", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn events(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: crate::api::body::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmRead)?;
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
    #[param(schema_with = history_at)]
    at: Option<String>,
}

/// `at` is a sequence number (1 or more) or an RFC 3339 time; a value that is neither is 400
/// naming `at`.
fn history_at() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{KnownFormat, OneOfBuilder, SchemaFormat};
    use utoipa::openapi::{ObjectBuilder, Type};
    // A schema given this way replaces the field's doc comment, so the description goes here.
    OneOfBuilder::new()
        .description(Some(
            "A sequence number of the VM's events (from 1; past the last one reads as the last) \
             or an RFC 3339 time (default: now).",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(i64::MAX)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .build()
        .into()
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
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:read")))
)]
#[tracing::instrument(name = "vm_history", skip_all, fields(user_id = %user.id, vm_id = %path))]
pub async fn history(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: crate::api::body::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::VmRead)?;
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
                let time = super::super::audit::parse_time("at", at)?;
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
