//! `/webhooks`: HTTP receivers of the event log. A webhook receives the events of the VMs its
//! owner may read, signed with its secret (see `webhooks::signature`). Adding, changing and
//! removing one are events in the log; the secret is shown once, in the answer that set it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::answers::errors::{
    DeliveryMissing, DeliveryPending, Forbidden, Invalid, Unauthorized, WebhookMissing,
};
use super::answers::{Empty, Envelope, Page, Pagination};
use super::body;
use super::envelope::{self, NOTHING_TO_CHANGE};
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use super::vms::page_and_limit;
use crate::app::ids::new_webhook_id;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::deliveries::{self, DeliveryStatus};
use crate::store::webhooks::{self, RedeliveryRefused, WebhookRow, WebhookWriteError};
use crate::store::Via;
use crate::webhooks::target::is_private;
use crate::webhooks::{
    EventSelection, Secret, TargetUrl, WebhookChange, WebhookCommand, WebhookError,
};

mod views;
pub use views::{DeliveryCounts, DeliveryView, WebhookView};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewWebhook {
    /// An `http` or `https` URL without credentials, at most 2048 bytes; not a private address
    /// unless the server allows them (`webhooks.allow_private`).
    #[schema(
        min_length = 10,
        max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[^/@#?\\s\\u0000]+([/?][^#\\s\\u0000]*)?$"
    )]
    url: String,
    /// VM event types (see `schemas/events/`), or `["*"]`.
    #[schema(schema_with = event_types)]
    events: Vec<String>,
    /// 16 to 256 visible ASCII characters; the server makes one when absent.
    #[schema(min_length = 16, max_length = 256, pattern = "^[!-~]+$")]
    secret: Option<String>,
    /// Default `true`.
    active: Option<bool>,
}

/// An empty object changes nothing: the answer is the resource as it is (`Nothing to change.`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookUpdate {
    #[schema(
        min_length = 10,
        max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[^/@#?\\s\\u0000]+([/?][^#\\s\\u0000]*)?$"
    )]
    url: Option<String>,
    #[schema(schema_with = event_types_or_null)]
    events: Option<Vec<String>>,
    #[schema(min_length = 16, max_length = 256, pattern = "^[!-~]+$")]
    secret: Option<String>,
    /// A webhook made active again receives the events from then on.
    active: Option<bool>,
}

/// `events` in the OpenAPI document: 1 to 64 VM event types, or `"*"`.
fn event_types() -> utoipa::openapi::Array {
    event_types_builder().build()
}

/// [`event_types`] where `null` means "as they are" (an update).
fn event_types_or_null() -> utoipa::openapi::Array {
    crate::api::openapi::or_null(
        event_types_builder().description(Some("`null` or absent leaves them as they are.")),
    )
}

fn event_types_builder() -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let names = std::iter::once("*").chain(crate::vm::VmEvent::TYPE_NAMES);
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .max_items(Some(crate::webhooks::target::MAX_EVENT_TYPES))
}

/// The URL, refused if it names a private address this server may not deliver to.
fn url(state: &AppState, raw: &str) -> Result<TargetUrl, ApiError> {
    let target = TargetUrl::parse(raw).map_err(|m| ApiError::validation("url", m))?;
    match target.literal_address() {
        Some(ip) if is_private(ip) && !state.settings.webhooks.allow_private => {
            Err(ApiError::validation(
                "url",
                format!("url names {ip}, a private address; this server delivers only to public ones (webhooks.allow_private)."),
            ))
        }
        _ => Ok(target),
    }
}

fn selection(types: &[String]) -> Result<EventSelection, ApiError> {
    EventSelection::parse(types).map_err(|m| ApiError::validation("events", m))
}

fn secret(raw: &str) -> Result<Secret, ApiError> {
    Secret::parse(raw).map_err(|m| ApiError::validation("secret", m))
}

fn write_error(id: &str, e: WebhookWriteError) -> ApiError {
    match e {
        WebhookWriteError::Refused(WebhookError::NotFound) => {
            ApiError::WebhookNotFound(id.to_string())
        }
        WebhookWriteError::Refused(WebhookError::AlreadyExists) => ApiError::Conflict {
            code: "ALREADY_EXISTS",
            message: "The webhook already exists.".into(),
        },
        // `update` answers this one itself (a 200); other commands never meet it.
        WebhookWriteError::Refused(WebhookError::NothingToChange) => {
            ApiError::validation("body", "The request changes nothing.")
        }
        WebhookWriteError::Redelivery(RedeliveryRefused::NoSuchDelivery(delivery)) => {
            ApiError::DeliveryNotFound {
                webhook: id.to_string(),
                delivery,
            }
        }
        WebhookWriteError::Redelivery(RedeliveryRefused::StillPending) => ApiError::Conflict {
            code: "DELIVERY_PENDING",
            message: "The delivery is still pending: it is being sent.".into(),
        },
        WebhookWriteError::Store(e) => e.into(),
    }
}

/// The webhook, if it exists and the caller may see it (else a 404, so ids cannot be probed).
async fn visible(state: &AppState, user: &AuthUser, id: &str) -> Result<WebhookRow, ApiError> {
    webhooks::get(&state.pool, id)
        .await?
        .filter(|w| user.may_access(&w.owner_id))
        .ok_or_else(|| ApiError::WebhookNotFound(id.to_string()))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The caller's webhooks (everyone's for a role with scope `all`), oldest first.", body = Envelope<Vec<WebhookView>>),
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:read")))
)]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookRead)?;
    let owner = user.owner_filter();
    let rows = webhooks::list(&state.pool, owner.as_deref()).await?;
    let items: Vec<WebhookView> = rows.into_iter().map(WebhookView::from).collect();
    Ok(envelope::ok(items, "Webhooks."))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = NewWebhook,
    params(KeyHeader),
    responses(
        (status = 201, description = "Added; recorded as `WebhookCreated` (without the secret). It receives the events committed from now on. The answer carries the secret, once.", body = Envelope<WebhookView>),
        Invalid,
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:create")))
)]
#[tracing::instrument(name = "create_webhook", skip_all, fields(user_id = %user.id))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookCreate)?;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let new: NewWebhook = body::typed(body.into_inner().0)?;
    let target = url(&state, &new.url)?;
    let events = selection(&new.events)?;
    let secret = match &new.secret {
        Some(raw) => secret(raw)?,
        None => Secret::generate(),
    };
    let id = new_webhook_id();
    let command = WebhookCommand::Create {
        owner_id: user.id.clone(),
        url: target.into_string(),
        events: events.ids(),
        active: new.active.unwrap_or(true),
    };
    retry
        .transaction(&state, async |tx| {
            let row = webhooks::create(
                &state.pool,
                tx,
                &user.meta(Via::Rest),
                &id,
                command,
                &secret,
            )
            .await
            .map_err(|e| write_error(&id, e))?;
            let mut view = WebhookView::from(row);
            // Shown once (and to a retry with the same Idempotency-Key).
            view.secret = Some(secret.expose().to_string());
            Ok(envelope_answer(
                StatusCode::CREATED,
                view,
                "Webhook added.",
            )?)
        })
        .await
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id.")),
    responses(
        (status = 200, description = "The webhook and how its deliveries stand.", body = Envelope<WebhookView>),
        Unauthorized,
        Forbidden,
        WebhookMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:read")))
)]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookRead)?;
    let row = visible(&state, &user, &path.into_inner()).await?;
    Ok(envelope::ok(WebhookView::from(row), "Webhook."))
}

#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    operation_id = "update_webhook",
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id."), KeyHeader),
    request_body = WebhookUpdate,
    responses(
        (status = 200, description = "Changed; recorded as `WebhookChanged` (a new secret only as `secretChanged`, and shown once in this answer). A request that changes nothing answers the webhook as it is, with message `Nothing to change.`, and records nothing.", body = Envelope<WebhookView>),
        Invalid,
        Unauthorized,
        Forbidden,
        WebhookMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:update")))
)]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookUpdate)?;
    let id = path.into_inner();
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let update: WebhookUpdate = body::typed(body.into_inner().0)?;
    let change = WebhookChange {
        url: update
            .url
            .as_deref()
            .map(|raw| url(&state, raw))
            .transpose()?
            .map(TargetUrl::into_string),
        events: update
            .events
            .as_deref()
            .map(selection)
            .transpose()?
            .map(|s| s.ids()),
        active: update.active,
        secret_changed: update.secret.is_some(),
    };
    let new_secret = update.secret.as_deref().map(secret).transpose()?;
    visible(&state, &user, &id).await?;
    retry
        .transaction(&state, async |tx| {
            let written = webhooks::change(
                &state.pool,
                tx,
                &user.meta(Via::Rest),
                &id,
                change,
                new_secret.as_ref(),
            )
            .await;
            // A request that changes nothing (an empty body, or the webhook as it is) answers
            // the webhook as it is: a client that sends back what it read, or retries, gets a 200.
            let (row, message) = match written {
                Ok(row) => (row, "Webhook changed."),
                Err(WebhookWriteError::Refused(WebhookError::NothingToChange)) => (
                    webhooks::get(&mut *tx, &id)
                        .await?
                        .ok_or_else(|| ApiError::WebhookNotFound(id.clone()))?,
                    NOTHING_TO_CHANGE,
                ),
                Err(e) => return Err(write_error(&id, e)),
            };
            let mut view = WebhookView::from(row);
            view.secret = new_secret.map(|s| s.expose().to_string());
            Ok(envelope_answer(StatusCode::OK, view, message)?)
        })
        .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id."), KeyHeader),
    responses(
        (status = 200, description = "Deleted with its deliveries; recorded as `WebhookDeleted`.", body = Envelope<Empty>),
        Unauthorized,
        Forbidden,
        WebhookMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:delete")))
)]
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookDelete)?;
    let id = path.into_inner();
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    visible(&state, &user, &id).await?;
    retry
        .transaction(&state, async |tx| {
            webhooks::delete(tx, &user.meta(Via::Rest), &id)
                .await
                .map_err(|e| write_error(&id, e))?;
            Ok(envelope_answer(
                StatusCode::OK,
                Empty {},
                "Webhook deleted.",
            )?)
        })
        .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// Deliveries per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only `pending`, `delivered` or `failed` deliveries.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id."), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of the webhook's deliveries, newest first.", body = Envelope<Page<DeliveryView>>),
        Invalid,
        Unauthorized,
        Forbidden,
        WebhookMissing
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:read")))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: crate::api::body::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookRead)?;
    let q = query.into_inner();
    let (page, limit) = page_and_limit(q.page, q.limit)?;
    let status = match q.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => {
            return Err(ApiError::validation(
                "status",
                "status must be 'pending', 'delivered' or 'failed'.",
            ))
        }
    };
    let webhook = visible(&state, &user, &path.into_inner()).await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
    let (rows, total) =
        deliveries::list(&state.pool, &webhook.id, status, offset, i64::from(limit)).await?;
    Ok(envelope::ok(
        Page {
            items: rows.into_iter().map(DeliveryView::from).collect(),
            pagination: Pagination::new(page, limit, total),
        },
        "Deliveries.",
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver",
    operation_id = "redeliver_webhook_delivery",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The webhook's id."),
        ("deliveryId" = i64, Path, minimum = 1, description = "The delivery's id (`GET /webhooks/{id}/deliveries`)."),
        KeyHeader
    ),
    responses(
        (status = 202, description = "A delivery already delivered or failed is pending again, due now, with a fresh set of attempts; recorded as `WebhookDeliveryRequeued`. It keeps its id (receivers drop repeats by it) and its place in its VM's order: that VM's later deliveries still pending wait for it.", body = Envelope<DeliveryView>),
        Invalid,
        Unauthorized,
        Forbidden,
        DeliveryMissing,
        DeliveryPending
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("webhook:update")))
)]
#[tracing::instrument(name = "redeliver_webhook_delivery", skip_all, fields(user_id = %user.id))]
pub async fn redeliver(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<(String, String)>,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::WebhookUpdate)?;
    let (id, raw_delivery) = path.into_inner();
    let delivery_id = raw_delivery
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::validation("deliveryId", "deliveryId must be a whole number from 1.")
        })?;
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    visible(&state, &user, &id).await?;
    retry
        .transaction(&state, async |tx| {
            let row = webhooks::redeliver(tx, &user.meta(Via::Rest), &id, delivery_id)
                .await
                .map_err(|e| write_error(&id, e))?;
            Ok(envelope_answer(
                StatusCode::ACCEPTED,
                DeliveryView::from(row),
                "The delivery will be sent again.",
            )?)
        })
        .await
}
