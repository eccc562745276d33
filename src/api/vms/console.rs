//! `GET /vms/{id}/console` and `GET /vms/{id}/vnc`: a VM's serial and graphical consoles as
//! WebSockets of binary frames. The token comes in `?token=` (browsers cannot set headers on a
//! WebSocket) or the `Authorization` header. Before the upgrade: `vm:console` (403), the VM is
//! the caller's to see (404 `VM_NOT_FOUND`) and running (409 `VM_NOT_RUNNING`), the socket
//! counts against the user's WebSocket limit (429), and the console is reached; then the VM's
//! actor records `ConsoleOpened` (deciding visibility and status again, on its own state), and
//! only then is the connection upgraded. `console::bridge` carries the bytes and records
//! `ConsoleClosed`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tracing::Instrument;

use super::super::answers::errors::{TooManyConnections, Unauthorized, VmConflict, VmMissing};
use super::super::error::ApiError;
use super::visible;
use crate::app::AppState;
use crate::auth::{self, AuthUser, Permission};
use crate::console::bridge;
use crate::console::sessions::ConsoleSession;
use crate::store::Via;
use crate::vm::{ConsoleKind, VmError, VmStatus};
use crate::ws::inbound::{Inbound, LimitedPayload};
use crate::ws::limits::Slot;

/// The WebSocket subprotocol noVNC asks for (binary frames).
const VNC_SUBPROTOCOL: &str = "binary";

#[derive(Deserialize)]
pub struct ConsoleQuery {
    token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/console",
    tag = "consoles",
    operation_id = "serial_console",
    params(
        ("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."),
        ("token" = Option<String>, Query, description = "A JWT, for clients that cannot send the `Authorization` header (browsers)."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: binary frames both ways, bridged to the VM's serial port. The first frame holds the last 64 KiB of output (when there is any); then every viewer gets the same live output. Recorded as `ConsoleOpened` and `ConsoleClosed` (`console: serial`)."),
        (status = 400, description = "Not a WebSocket upgrade request (`VALIDATION_ERROR` naming `upgrade`).", body = super::super::answers::ErrorEnvelope),
        Unauthorized,
        VmMissing,
        VmConflict,
        TooManyConnections
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:console")))
)]
#[tracing::instrument(name = "serial_console", skip_all, fields(vm_id = %path, user_id))]
pub async fn serial_console(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: crate::api::body::Query<ConsoleQuery>,
    req: HttpRequest,
    body: LimitedPayload,
) -> Result<HttpResponse, ApiError> {
    let vm_id = path.into_inner();
    let (user, slot) = admit(&state, &req, query.into_inner(), &vm_id).await?;
    // Nothing is sent until the response is returned: a refusal below drops the upgrade.
    let (response, session, stream) = upgrade(&req, body.0, &[])?;
    let viewer = state
        .consoles
        .serial
        .attach(&vm_id)
        .await
        .map_err(|e| unreachable_console(&vm_id, &e))?;
    let console = open(&state, &user, &vm_id, ConsoleKind::Serial).await?;
    let span = tracing::info_span!("serial_console_session", vm_id = %vm_id, session_id = %console.id, user_id = %user.id);
    actix_web::rt::spawn(
        bridge::serial(state.clone(), user, session, stream, viewer, console, slot)
            .instrument(span),
    );
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{id}/vnc",
    tag = "consoles",
    operation_id = "vnc_console",
    params(
        ("id" = String, Path, description = "The VM's id, e.g. `vm-abc123def456`."),
        ("token" = Option<String>, Query, description = "A JWT, for clients that cannot send the `Authorization` header (browsers)."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (subprotocol `binary` when asked for, as noVNC does): binary frames both ways, bridged byte for byte to a new connection to the VM's VNC server, so an RFB client (`@novnc/novnc`) uses it directly. Recorded as `ConsoleOpened` and `ConsoleClosed` (`console: vnc`)."),
        (status = 400, description = "Not a WebSocket upgrade request (`VALIDATION_ERROR` naming `upgrade`).", body = super::super::answers::ErrorEnvelope),
        Unauthorized,
        VmMissing,
        VmConflict,
        TooManyConnections
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("vm:console")))
)]
#[tracing::instrument(name = "vnc_console", skip_all, fields(vm_id = %path, user_id))]
pub async fn vnc_console(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: crate::api::body::Query<ConsoleQuery>,
    req: HttpRequest,
    body: LimitedPayload,
) -> Result<HttpResponse, ApiError> {
    let vm_id = path.into_inner();
    let (user, slot) = admit(&state, &req, query.into_inner(), &vm_id).await?;
    let (response, session, stream) = upgrade(&req, body.0, &[VNC_SUBPROTOCOL])?;
    let link = state
        .consoles
        .ports
        .vnc(&vm_id)
        .await
        .map_err(|e| unreachable_console(&vm_id, &e))?;
    let console = open(&state, &user, &vm_id, ConsoleKind::Vnc).await?;
    let span = tracing::info_span!("vnc_console_session", vm_id = %vm_id, session_id = %console.id, user_id = %user.id);
    actix_web::rt::spawn(
        bridge::vnc(state.clone(), user, session, stream, link, console, slot).instrument(span),
    );
    Ok(response)
}

/// Everything checked before the upgrade but the actor's decision: the token, the permission,
/// the VM (visible, running) and the user's WebSocket limit.
async fn admit(
    state: &AppState,
    req: &HttpRequest,
    query: ConsoleQuery,
    vm_id: &str,
) -> Result<(AuthUser, Slot), ApiError> {
    let token = query
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| auth::user::bearer(req).map(str::to_string))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "A console needs a token: `?token=` or the Authorization header.".into(),
            )
        })?;
    let request_id = crate::api::request_id::of(req);
    let client_addr = req.peer_addr().map(|a| a.ip().to_string());
    let user = auth::user::authenticate(state, &token, request_id, client_addr).await?;
    tracing::Span::current().record("user_id", user.id.as_str());
    user.require(Permission::VmConsole)?;
    let vm = visible(state, &user, vm_id).await?;
    not_running(vm_id, vm.status)?;
    let slot = state
        .ws_limits
        .acquire(&user.id)
        .ok_or(ApiError::TooManyConnections(state.ws_limits.max()))?;
    Ok((user, slot))
}

/// 409 unless `status` lets a console open (the aggregate's rule, `vm::status::console`).
pub fn not_running(vm_id: &str, status: VmStatus) -> Result<(), ApiError> {
    crate::vm::status::console(status).map_err(|rejection| {
        ApiError::from_actor(
            vm_id,
            crate::actors::ActorError::Refused(VmError::NoConsole { status, rejection }),
        )
    })
}

/// A console socket that cannot be reached: the machine is going away (or is not there).
pub fn unreachable_console(vm_id: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::debug!(vm_id, error = %e, "the console could not be reached");
    ApiError::Conflict {
        code: "VM_NOT_RUNNING",
        message: "The virtual machine's console cannot be reached: it is not running.".into(),
    }
}

/// Records `ConsoleOpened` through the VM's actor.
async fn open(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    kind: ConsoleKind,
) -> Result<ConsoleSession, ApiError> {
    ConsoleSession::open(&state.registry, user, vm_id, kind, Via::WebSocket)
        .await
        .map_err(|e| ApiError::from_actor(vm_id, e))
}

fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    protocols: &[&str],
) -> Result<(HttpResponse, actix_ws::Session, Inbound), ApiError> {
    actix_ws::handle_with_protocols(req, body, protocols)
        .map(|(response, session, stream)| (response, session, Inbound::new(stream)))
        .map_err(|e| {
            ApiError::validation(
                "upgrade",
                format!("This endpoint speaks WebSocket only: {e}"),
            )
        })
}
