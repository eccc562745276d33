//! The bodies the REST API answers with, as types. Handlers build these, serde writes them, and
//! the OpenAPI document (`openapi.rs`) describes them from the same definitions, so the document
//! cannot drift from what the server sends.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::hypervisor::Accel;
use crate::store::jobs::JobView;
use crate::store::vm_view::VmView;
use crate::vm::VmStatus;

/// Every successful answer: `data` holds the answer itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` here.
    pub success: bool,
    pub data: T,
    /// One sentence for people.
    pub message: String,
    /// When the server answered, RFC 3339 in UTC.
    pub timestamp: String,
}

/// Every failed answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false` here.
    pub success: bool,
    pub error: ErrorBody,
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code, e.g. `VM_NOT_FOUND`, `VALIDATION_ERROR`, `VM_BUSY`, `METHOD_NOT_ALLOWED`,
    /// `PAYLOAD_TOO_LARGE`, `URI_TOO_LONG`, `HEADERS_TOO_LARGE` (the README lists them all).
    pub code: String,
    /// What went wrong, in general.
    pub message: String,
    /// What went wrong with this request.
    pub details: String,
    /// The offending request field, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The login answer: the envelope, with the token at the top level as well (the seed's snippet
/// reads `const { token } = await response.json()`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginEnvelope {
    pub success: bool,
    pub data: Session,
    pub message: String,
    pub timestamp: String,
    /// The same token as `data.token`.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// A JWT for `Authorization: Bearer <token>` and for `/ws?token=`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    /// A role id: `admin`, `user`, `viewer` or a custom one (`GET /roles`).
    pub role: String,
}

/// `GET /auth/me`: the caller, what their role grants, and their quota and usage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: String,
    pub username: String,
    pub role: String,
    /// Permission ids, or `["*"]`.
    pub permissions: Vec<String>,
    pub scope: crate::auth::permission::Scope,
    /// What the user may own; `null` figures are unlimited.
    pub quota: crate::accounts::Quota,
    /// What the user owns now (VMs that are not deleted).
    pub usage: crate::accounts::Usage,
    /// Requests a minute on each node.
    pub rate_limit: u32,
}

/// An answer with nothing more to say than its message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// `ok`.
    pub database: String,
    /// The accelerator new VMs get.
    pub accel: Accel,
}

/// One page of a list, by page number.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub pagination: Pagination,
}

/// The pagination block of list answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: i64,
    pub total_pages: i64,
}

impl Pagination {
    pub fn new(page: u32, limit: u32, total: i64) -> Self {
        let limit_i = i64::from(limit.max(1));
        Pagination {
            page,
            limit,
            total,
            total_pages: (total + limit_i - 1) / limit_i,
        }
    }
}

/// One page of a log, by cursor: ask again with `after=next` for the following page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CursorPage<T> {
    pub items: Vec<T>,
    /// The cursor for the next page (it only moves forward).
    pub next: i64,
    /// Whether this page was full, so more may follow.
    pub has_more: bool,
}

/// A VM just created, with its provisioning job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedVm {
    #[serde(flatten)]
    pub vm: VmView,
    pub job_id: String,
}

/// A lifecycle command accepted: the job carries it out.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub job_id: String,
    pub vm_id: String,
    /// The VM's status once the command was recorded (e.g. `starting`).
    pub status: Option<VmStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Patched {
    pub vm: VmView,
    /// Whether a change waits for the next restart (CPU or memory of a running VM).
    pub requires_restart: bool,
}

/// A VM as it was at a point of its history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub vm_id: String,
    pub at: HistoryPoint,
    pub latest_sequence: i64,
    pub state: VmView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
}

/// A job after waiting for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitedJob {
    #[serde(flatten)]
    pub job: JobView,
    /// Whether the job ended (else the wait timed out).
    pub finished: bool,
}

/// One line of `/logs`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The VM, for a VM's event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// `vm`, `user`, `role` or `config`; `streamId` is the VM, user or role id.
    pub stream_type: String,
    pub stream_id: String,
    pub actor: Option<String>,
    pub job_id: Option<String>,
}

/// The error answers operations share, for the OpenAPI document: each is an [`ErrorEnvelope`]
/// with the status and description given here (`ApiError` makes them).
pub mod errors {
    use super::ErrorEnvelope;
    use utoipa::IntoResponses;

    /// A field is invalid; `error.field` names it (`VALIDATION_ERROR`).
    #[derive(IntoResponses)]
    #[response(status = 400)]
    pub struct Invalid(pub ErrorEnvelope);

    /// No token, or one that is expired, forged or revoked (`UNAUTHORIZED`).
    #[derive(IntoResponses)]
    #[response(status = 401)]
    pub struct Unauthorized(pub ErrorEnvelope);

    /// The username or password is wrong (`UNAUTHORIZED`).
    #[derive(IntoResponses)]
    #[response(status = 401)]
    pub struct LoginRefused(pub ErrorEnvelope);

    /// The caller's role lacks the operation's permission (`x-permission`): `FORBIDDEN`, with
    /// `error.details` naming it.
    #[derive(IntoResponses)]
    #[response(status = 403)]
    pub struct Forbidden(pub ErrorEnvelope);

    /// The role lacks the permission (`FORBIDDEN`, `error.details` names it), or the VM would
    /// take its owner past a quota (`QUOTA_EXCEEDED`, `error.details` names which).
    #[derive(IntoResponses)]
    #[response(status = 403)]
    pub struct ForbiddenOrQuota(pub ErrorEnvelope);

    /// No such user (`USER_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct UserMissing(pub ErrorEnvelope);

    /// No such role (`ROLE_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct RoleMissing(pub ErrorEnvelope);

    /// The change conflicts with the accounts as they are: `USERNAME_TAKEN`, `USER_HAS_VMS`,
    /// `ROLE_EXISTS`, `ROLE_IN_USE`, `ROLE_BUILT_IN` or `CANNOT_CHANGE_SELF`.
    #[derive(IntoResponses)]
    #[response(status = 409)]
    pub struct AccountConflict(pub ErrorEnvelope);

    /// No such virtual machine, or not yours (`VM_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct VmMissing(pub ErrorEnvelope);

    /// No such webhook, or not yours (`WEBHOOK_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct WebhookMissing(pub ErrorEnvelope);

    /// No such delivery of this webhook (`DELIVERY_NOT_FOUND`), or no such webhook, or not yours
    /// (`WEBHOOK_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct DeliveryMissing(pub ErrorEnvelope);

    /// The delivery is still pending: it is sent anyway (`DELIVERY_PENDING`).
    #[derive(IntoResponses)]
    #[response(status = 409)]
    pub struct DeliveryPending(pub ErrorEnvelope);

    /// No such job, or not yours (`JOB_NOT_FOUND`).
    #[derive(IntoResponses)]
    #[response(status = 404)]
    pub struct JobMissing(pub ErrorEnvelope);

    /// The VM's state does not allow it (e.g. `VM_ALREADY_RUNNING`), the name is taken
    /// (`VM_NAME_TAKEN`), a host port is forwarded to another VM (`PORT_TAKEN`) or none is left
    /// in the configured range (`NO_FREE_PORT`), or another job is in flight (`VM_BUSY`).
    #[derive(IntoResponses)]
    #[response(status = 409)]
    pub struct VmConflict(pub ErrorEnvelope);

    /// The job is no longer queued (`JOB_NOT_CANCELLABLE`).
    #[derive(IntoResponses)]
    #[response(status = 409)]
    pub struct NotCancellable(pub ErrorEnvelope);

    /// `If-Match` names another version of the VM than its current one; nothing was changed
    /// (`PRECONDITION_FAILED`).
    #[derive(IntoResponses)]
    #[response(status = 412)]
    pub struct Stale(pub ErrorEnvelope);

    /// The `Idempotency-Key` was used for another request (another method, path or body) in the
    /// last 24 hours (`IDEMPOTENCY_KEY_REUSED`).
    #[derive(IntoResponses)]
    #[response(status = 422)]
    pub struct KeyReused(pub ErrorEnvelope);

    /// The user already has the maximum number of WebSocket connections (`RATE_LIMITED`).
    #[derive(IntoResponses)]
    #[response(status = 429)]
    pub struct TooManyConnections(pub ErrorEnvelope);

    /// The database does not answer (`SERVICE_UNAVAILABLE`).
    #[derive(IntoResponses)]
    #[response(status = 503)]
    pub struct Unavailable(pub ErrorEnvelope);
}
