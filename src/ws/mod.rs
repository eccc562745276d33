//! `/ws`: the real-time feed. Authenticates (token in the query, or an `auth` first frame),
//! enforces the per-user connection limit, and hands the connection to `session`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api::answers::errors::{TooManyConnections, Unauthorized};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth;

pub mod console_frames;
pub mod inbound;
pub mod limits;
pub mod protocol;
pub mod session;
pub mod usage;

/// The largest frame a client may send; a larger one gets a `PAYLOAD_TOO_LARGE` error frame and
/// close 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// `GET /ws`. A bad token in the query, or one connection too many, is refused before the
/// upgrade with the API's error envelope.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "feed",
    operation_id = "ws_connect",
    params(("token" = Option<String>, Query, description = "A JWT; without it, the first frame must be `auth`.")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; the frames are described in `schemas/feed/` and the README."),
        Unauthorized,
        TooManyConnections
    )
)]
#[tracing::instrument(name = "ws_connect", skip_all, fields(user_id))]
pub async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: inbound::LimitedPayload,
    query: crate::api::body::Query<WsQuery>,
) -> Result<HttpResponse, ApiError> {
    let client_addr = req.peer_addr().map(|a| a.ip().to_string());
    let token = query
        .into_inner()
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| auth::user::bearer(&req).map(str::to_string));
    let Some(token) = token else {
        let (response, session, stream) = upgrade(&req, body.0)?;
        actix_web::rt::spawn(session::run_unauthenticated(
            state,
            session,
            stream,
            client_addr,
        ));
        return Ok(response);
    };
    let user = auth::user::authenticate(&state, &token, None, client_addr).await?;
    tracing::Span::current().record("user_id", user.id.as_str());
    let slot = state
        .ws_limits
        .acquire(&user.id)
        .ok_or(ApiError::TooManyConnections(state.ws_limits.max()))?;
    let (response, session, stream) = upgrade(&req, body.0)?;
    actix_web::rt::spawn(session::run(state, session, stream, user, slot));
    Ok(response)
}

fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, actix_ws::Session, inbound::Inbound), ApiError> {
    actix_ws::handle(req, body)
        .map(|(response, session, stream)| (response, session, inbound::Inbound::new(stream)))
        .map_err(|e| {
            ApiError::validation(
                "upgrade",
                format!("This endpoint speaks WebSocket only: {e}"),
            )
        })
}
