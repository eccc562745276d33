//! Every error a client can meet, and the one place that decides its HTTP status and stable code.
//! Lower layers have their own error enums; they are turned into `ApiError` here, and anything
//! unexpected is logged with its cause chain and answered as a bare 500.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::envelope::error_body;
use crate::accounts::AccountError;
use crate::actors::ActorError;
use crate::app::lifecycle::LifecycleError;
use crate::auth::permission::Permission;
use crate::store::accounts::AccountWriteError;
use crate::store::{QuotaExceeded, StoreError};
use crate::vm::{Rejection, VmError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("The request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("The request body must be sent as application/json.")]
    UnsupportedMediaType,
    #[error("The request body is larger than the server accepts.")]
    PayloadTooLarge,
    /// The body stopped arriving (`api::body_deadline`); the sentence says how.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("A WebSocket frame may have at most {0} bytes.")]
    FrameTooLarge(usize),
    #[error("No route matches {0}.")]
    RouteNotFound(String),
    #[error("This path does not accept the {method} method; it accepts {allow}.")]
    MethodNotAllowed { method: String, allow: String },
    #[error("The URL is longer than the {0} bytes the server reads.")]
    UriTooLong(usize),
    #[error(
        "The request's headers are more than the server reads: 128 KiB with the request line, and at most 96 header fields."
    )]
    HeadersTooLarge,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("This needs the permission '{permission}', which the role '{role}' does not grant.")]
    PermissionDenied {
        permission: Permission,
        role: String,
    },
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    #[error("More than {limit} requests a minute; try again in {retry_after} seconds.")]
    RateLimited { limit: u32, retry_after: u64 },
    #[error("{failures} failed logins (or password checks) for this name or from this address; try again in {retry_after} seconds.")]
    LoginLocked { failures: u32, retry_after: u64 },
    #[error("Role '{0}' was not found")]
    RoleNotFound(String),
    #[error("Virtual machine with ID '{0}' was not found")]
    VmNotFound(String),
    #[error("Job with ID '{0}' was not found")]
    JobNotFound(String),
    #[error("User '{0}' was not found")]
    UserNotFound(String),
    #[error("Webhook '{0}' was not found")]
    WebhookNotFound(String),
    #[error("Webhook '{webhook}' has no delivery {delivery}")]
    DeliveryNotFound { webhook: String, delivery: i64 },
    #[error("Image '{0}' was not found")]
    ImageNotFound(String),
    #[error("Snapshot '{0}' was not found")]
    SnapshotNotFound(String),
    /// A state conflict: the code says which (`VM_BUSY`, `VM_ALREADY_RUNNING`, ...).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("The virtual machine changed since: it is at version {current} (ETag \"{current}\"), which If-Match does not name.")]
    PreconditionFailed { current: usize },
    #[error("This Idempotency-Key was already used for another request (another method, path or body); use a new key.")]
    IdempotencyKeyReused,
    #[error("At most {0} WebSocket connections per user may be open at once; close one first.")]
    TooManyConnections(usize),
    #[error("The service cannot reach its database; try again shortly.")]
    Unavailable,
    /// This node does not relay: the NATS stream carries another log (the sentence says which).
    #[error("{0}")]
    NotRelaying(String),
    #[error("An internal error occurred.")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The status and the stable code: the only mapping there is.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "INVALID_JSON"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            ApiError::PayloadTooLarge | ApiError::FrameTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
            }
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
            }
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "URI_TOO_LONG"),
            ApiError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HEADERS_TOO_LARGE",
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Forbidden(_) | ApiError::PermissionDenied { .. } => {
                (StatusCode::FORBIDDEN, "FORBIDDEN")
            }
            ApiError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "QUOTA_EXCEEDED"),
            ApiError::RateLimited { .. } | ApiError::LoginLocked { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED")
            }
            ApiError::RoleNotFound(_) => (StatusCode::NOT_FOUND, "ROLE_NOT_FOUND"),
            ApiError::VmNotFound(_) => (StatusCode::NOT_FOUND, "VM_NOT_FOUND"),
            ApiError::JobNotFound(_) => (StatusCode::NOT_FOUND, "JOB_NOT_FOUND"),
            ApiError::UserNotFound(_) => (StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
            ApiError::WebhookNotFound(_) => (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"),
            ApiError::DeliveryNotFound { .. } => (StatusCode::NOT_FOUND, "DELIVERY_NOT_FOUND"),
            ApiError::ImageNotFound(_) => (StatusCode::NOT_FOUND, "IMAGE_NOT_FOUND"),
            ApiError::SnapshotNotFound(_) => (StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
            }
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
            }
            ApiError::TooManyConnections(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::Unavailable | ApiError::NotRelaying(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
            }
            ApiError::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// A short, fixed sentence for the envelope's `message`; `details` carries the specifics.
    pub fn summary(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "The request is not valid.",
            ApiError::BadJson(_) => "The request body could not be read.",
            ApiError::UnsupportedMediaType => "The content type is not supported.",
            ApiError::PayloadTooLarge => "The request body is too large.",
            ApiError::RequestTimeout(_) => "The request body did not arrive in time.",
            ApiError::FrameTooLarge(_) => "The frame is too large.",
            ApiError::RouteNotFound(_) => "Not found.",
            ApiError::MethodNotAllowed { .. } => "Method not allowed.",
            ApiError::UriTooLong(_) => "The URL is too long.",
            ApiError::HeadersTooLarge => "The request headers are too large.",
            ApiError::Unauthorized(_) => "Authentication is required.",
            ApiError::Forbidden(_) | ApiError::PermissionDenied { .. } => "Permission denied.",
            ApiError::QuotaExceeded(_) => "A quota would be exceeded.",
            ApiError::RateLimited { .. } => "Too many requests.",
            ApiError::LoginLocked { .. } => "Too many failed logins.",
            ApiError::RoleNotFound(_) => "Role not found.",
            ApiError::VmNotFound(_) => "Virtual machine not found.",
            ApiError::JobNotFound(_) => "Job not found.",
            ApiError::UserNotFound(_) => "User not found.",
            ApiError::WebhookNotFound(_) => "Webhook not found.",
            ApiError::DeliveryNotFound { .. } => "Delivery not found.",
            ApiError::ImageNotFound(_) => "Image not found.",
            ApiError::SnapshotNotFound(_) => "Snapshot not found.",
            ApiError::Conflict { .. } => "The request conflicts with the current state.",
            ApiError::PreconditionFailed { .. } => "A precondition failed.",
            ApiError::IdempotencyKeyReused => "The idempotency key was used for another request.",
            ApiError::TooManyConnections(_) => "Too many connections.",
            ApiError::Unavailable => "Service unavailable.",
            ApiError::NotRelaying(_) => "The event stream needs an operator.",
            ApiError::Unexpected(_) => "Internal server error.",
        }
    }

    /// The field a validation error is about.
    pub fn field(&self) -> Option<Cow<'_, str>> {
        match self {
            ApiError::Validation { field, .. } => Some(shown(field)),
            _ => None,
        }
    }

    /// The envelope's `details`: the specific sentence, naming the field where there is one.
    pub fn details(&self) -> String {
        let details = match self {
            ApiError::Validation { field, message } => format!("{field}: {message}"),
            other => other.to_string(),
        };
        shown(&details).into_owned()
    }

    /// Maps why an account change was not recorded.
    pub fn from_account(e: AccountWriteError) -> ApiError {
        let conflict = |code, message: String| ApiError::Conflict { code, message };
        match e {
            AccountWriteError::Refused(AccountError::NotFound) => {
                ApiError::UserNotFound("the user".to_string())
            }
            AccountWriteError::Refused(AccountError::AlreadyExists) => {
                conflict("ALREADY_EXISTS", "It already exists.".into())
            }
            AccountWriteError::Refused(AccountError::NothingToChange) => {
                ApiError::validation("body", "The request changes nothing.")
            }
            AccountWriteError::Refused(e @ AccountError::BuiltIn(_)) => {
                conflict("ROLE_BUILT_IN", format!("Refused: {e}."))
            }
            AccountWriteError::UsernameTaken(name) => ApiError::Conflict {
                code: "USERNAME_TAKEN",
                message: format!("The username '{name}' is taken."),
            },
            AccountWriteError::NoSuchRole(role) => {
                ApiError::validation("role", format!("Role '{role}' does not exist."))
            }
            AccountWriteError::UserHasVms(n) => conflict(
                "USER_HAS_VMS",
                format!(
                    "The user owns {}; delete them, or name another user in ?transferTo= to hand them over.",
                    counted(n, "virtual machine", "virtual machines")
                ),
            ),
            AccountWriteError::RoleInUse(n) => conflict(
                "ROLE_IN_USE",
                format!(
                    "{} this role; give them another role first.",
                    counted(n, "user has", "users have")
                ),
            ),
            AccountWriteError::RoleTaken(id) => {
                conflict("ROLE_EXISTS", format!("A role with the id '{id}' exists."))
            }
            AccountWriteError::Store(e) => e.into(),
        }
    }

    /// Maps what a VM's actor answered, for the VM `vm_id`.
    pub fn from_actor(vm_id: &str, e: ActorError) -> ApiError {
        match e {
            ActorError::Refused(e) => ApiError::from_vm(vm_id, e),
            ActorError::Store(e) => e.into(),
            ActorError::Stale { current } => ApiError::PreconditionFailed { current },
            ActorError::NotVisible => ApiError::VmNotFound(vm_id.to_string()),
            ActorError::Mailbox(_) => ApiError::Unavailable,
        }
    }

    fn from_vm(vm_id: &str, e: VmError) -> ApiError {
        let message = e.to_string();
        let conflict = |code| ApiError::Conflict {
            code,
            message: message.clone(),
        };
        match e {
            VmError::NotFound => ApiError::VmNotFound(vm_id.to_string()),
            VmError::AlreadyExists => conflict("VM_ALREADY_EXISTS"),
            VmError::Rejected { rejection, .. }
            | VmError::NotReconfigurable { rejection, .. }
            | VmError::NoConsole { rejection, .. }
            | VmError::SnapshotRefused { rejection, .. } => match rejection {
                Rejection::Gone => ApiError::VmNotFound(vm_id.to_string()),
                Rejection::AlreadyRunning => conflict("VM_ALREADY_RUNNING"),
                Rejection::NotRunning => conflict("VM_NOT_RUNNING"),
                Rejection::AlreadyPaused => conflict("VM_ALREADY_PAUSED"),
                Rejection::NotPaused => conflict("VM_NOT_PAUSED"),
                Rejection::MustBeStopped => conflict("VM_NOT_STOPPED"),
                Rejection::Busy => conflict("VM_BUSY"),
            },
            VmError::NothingToChange => ApiError::validation("body", message.clone()),
            VmError::SnapshotExists { .. } => conflict("SNAPSHOT_EXISTS"),
            VmError::SnapshotNotFound { name } => ApiError::SnapshotNotFound(name.to_string()),
            VmError::NotTheCurrentJob { .. } | VmError::NotCancellable { .. } => {
                conflict("JOB_NOT_CANCELLABLE")
            }
            VmError::ResultDoesNotFit { .. } => ApiError::Unexpected(
                anyhow::Error::new(e).context("a job result did not fit its job"),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable,
            StoreError::Conflict => ApiError::Conflict {
                code: "VM_BUSY",
                message: e.to_string(),
            },
            StoreError::NameTaken { name } => ApiError::Conflict {
                code: "VM_NAME_TAKEN",
                message: format!("The owner already has a virtual machine named '{name}'."),
            },
            StoreError::PortTaken { protocol, port } => ApiError::Conflict {
                code: "PORT_TAKEN",
                message: format!(
                    "Host port {port}/{} is already forwarded to another virtual machine.",
                    protocol.as_str()
                ),
            },
            StoreError::JobNotQueued { job_id, status } => ApiError::Conflict {
                code: "JOB_NOT_CANCELLABLE",
                message: format!("Job {job_id} cannot be cancelled: it is {status}."),
            },
            // The handler answers a taken key from its record (`retry.rs`); this is the rest.
            StoreError::KeyTaken => ApiError::IdempotencyKeyReused,
            StoreError::QuotaExceeded(q) => ApiError::QuotaExceeded(q),
            StoreError::ImageGone(name) => ApiError::validation(
                "os",
                format!(
                    "The image '{name}' was deleted while the virtual machine was being created."
                ),
            ),
            StoreError::OwnerGone(user_id) => ApiError::UserNotFound(user_id),
            StoreError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

/// A lifecycle request refused, as REST answers it (`/ws` names its own fields, see `ws::session`).
impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::TimeoutTooLong { max } => {
                ApiError::validation("timeout", format!("timeout must be at most {max} seconds."))
            }
            LifecycleError::Denied { permission, role } => {
                ApiError::PermissionDenied { permission, role }
            }
            LifecycleError::Actor { vm_id, source } => ApiError::from_actor(&vm_id, source),
        }
    }
}

/// `Retry-After` (seconds) on a refused WebSocket past the per-user cap.
const CONNECTIONS_RETRY: u64 = 5;
/// `Retry-After` (seconds) while the database cannot be reached.
const UNAVAILABLE_RETRY: u64 = 1;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        match self {
            ApiError::Unexpected(e) => {
                tracing::error!(error = %crate::telemetry::chain(&**e), "request failed unexpectedly")
            }
            ApiError::Unavailable => tracing::warn!("request failed: database unavailable"),
            _ => tracing::debug!(code, error = %self, "request refused"),
        }
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
            }
            ApiError::RateLimited { retry_after, .. }
            | ApiError::LoginLocked { retry_after, .. } => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, *retry_after));
            }
            // No time is known: when one of the caller's sockets closes, when the database is
            // back. A hint, so that clients that honour it wait a little rather than hammer.
            ApiError::TooManyConnections(_) => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, CONNECTIONS_RETRY));
            }
            ApiError::Unavailable => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, UNAVAILABLE_RETRY));
            }
            _ => {}
        }
        response.json(error_body(
            code,
            self.summary(),
            &self.details(),
            self.field().as_deref(),
        ))
    }
}

/// `text` as an error may show it: a NUL, which a refused request may carry into a field name
/// or a message, is written `\u0000`, so that no answer (envelope or WebSocket error frame) holds
/// the one character the document's strings refuse (`^[^\u0000]*$`).
fn shown(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `n` and the noun (with its verb) in the number `n` takes: "1 user has", "2 users have".
fn counted(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_never_shows_a_nul_it_was_sent() {
        let e = ApiError::validation("a\0b", "bad");
        assert_eq!(e.details(), "a\\u0000b: bad");
        assert_eq!(e.field().as_deref(), Some("a\\u0000b"));
        assert!(matches!(shown("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn an_unexpected_error_never_shows_its_cause() {
        let e = ApiError::Unexpected(anyhow::anyhow!("SELECT secret FROM users").context("boom"));
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.to_string(), "An internal error occurred.");
    }

    #[test]
    fn a_busy_vm_is_a_conflict() {
        let e = ApiError::from_vm(
            "vm-1",
            VmError::Rejected {
                status: crate::vm::VmStatus::Starting,
                operation: crate::vm::Operation::Stop,
                rejection: Rejection::Busy,
            },
        );
        assert_eq!(e.status_and_code(), (StatusCode::CONFLICT, "VM_BUSY"));
    }

    #[test]
    fn every_429_and_an_unreachable_database_say_when_to_try_again() {
        let retry_after = |e: ApiError| {
            e.error_response()
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(retry_after(ApiError::TooManyConnections(10)), Some(5));
        assert_eq!(retry_after(ApiError::Unavailable), Some(1));
        assert_eq!(
            retry_after(ApiError::RateLimited {
                limit: 100,
                retry_after: 42
            }),
            Some(42)
        );
        assert_eq!(retry_after(ApiError::VmNotFound("vm-1".into())), None);
    }
}
