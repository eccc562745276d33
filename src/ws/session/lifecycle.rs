//! A connection's life: authentication (token in the query, or an `auth` first frame), the loop
//! that waits on the client, the hub, the heartbeat and the timers, the closes for an idle
//! client, an expired or revoked token and a stopping server, and the close itself.

use std::time::{Duration, Instant};

use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError, Session};

use crate::ws::inbound::Inbound;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

use super::fanout::monitor_tick;
use super::requests::bounds;
use super::writer::{start_writer, Out};
use super::{Connection, End};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth;
use crate::auth::cache::{self, TokenRef};
use crate::auth::AuthUser;
use crate::ws::limits::Slot;
use crate::ws::protocol::{self, ClientFrame, ClientKind};

/// Runs a connection whose user is already known (token in the query).
pub async fn run(
    state: web::Data<AppState>,
    session: Session,
    mut stream: Inbound,
    user: AuthUser,
    slot: Slot,
) {
    let (out, writer) = start_writer(&state, session.clone());
    let mut conn = Connection::new(state, user, out, slot);
    if conn
        .send(protocol::frame("authenticated", conn.who(), &Value::Null))
        .await
        .is_ok()
    {
        let end = conn.serve(&mut stream).await;
        conn.close_consoles().await;
        conn.finish(end, session, writer).await;
    }
}

/// Runs a connection that must authenticate with an `auth` frame first.
pub async fn run_unauthenticated(
    state: web::Data<AppState>,
    mut session: Session,
    mut stream: Inbound,
    client_addr: Option<String>,
) {
    let timeout = Duration::from_secs(state.settings.ws.auth_timeout_secs);
    let first = tokio::time::timeout(timeout, next_text(&mut stream)).await;
    let refuse = |e: &ApiError, id: &Value| protocol::error_frame(e, id);
    let (user, id) = match first {
        Err(_) => {
            let _ = session
                .close(Some(reason(
                    CloseCode::Policy,
                    "no auth frame arrived in time",
                )))
                .await;
            return;
        }
        Ok(Err(ProtocolError::Overflow)) => {
            let e = ApiError::FrameTooLarge(crate::ws::MAX_FRAME_BYTES);
            let _ = session.text(refuse(&e, &Value::Null)).await;
            let _ = session
                .close(Some(reason(CloseCode::Size, &e.to_string())))
                .await;
            return;
        }
        Ok(Err(_)) | Ok(Ok(First::Gone)) => return,
        Ok(Ok(First::Closed(reason))) => {
            let _ = session.close(reason).await;
            return;
        }
        Ok(Ok(First::Binary)) => {
            let e = ApiError::Unauthorized("Send an auth frame (JSON text) first.".into());
            let _ = session.text(refuse(&e, &Value::Null)).await;
            let _ = session
                .close(Some(reason(CloseCode::Policy, "authentication required")))
                .await;
            return;
        }
        Ok(Ok(First::Text(text))) => match protocol::parse(&text, bounds(&state)) {
            Ok(ClientFrame {
                kind: ClientKind::Auth { token },
                id,
            }) => match auth::user::authenticate(&state, &token, None, client_addr).await {
                Ok(user) => (user, id),
                Err(e) => {
                    let _ = session.text(refuse(&e, &id)).await;
                    let _ = session
                        .close(Some(reason(CloseCode::Policy, "authentication failed")))
                        .await;
                    return;
                }
            },
            Ok(other) => {
                let e = ApiError::Unauthorized("Send an auth frame first.".into());
                let _ = session.text(refuse(&e, &other.id)).await;
                let _ = session
                    .close(Some(reason(CloseCode::Policy, "authentication required")))
                    .await;
                return;
            }
            Err((id, e)) => {
                let _ = session.text(refuse(&e, &id)).await;
                let _ = session
                    .close(Some(reason(CloseCode::Policy, "authentication required")))
                    .await;
                return;
            }
        },
    };
    let Some(slot) = state.ws_limits.acquire(&user.id) else {
        let e = ApiError::TooManyConnections(state.ws_limits.max());
        let _ = session.text(refuse(&e, &id)).await;
        let _ = session
            .close(Some(reason(CloseCode::Policy, &e.to_string())))
            .await;
        return;
    };
    let (out, writer) = start_writer(&state, session.clone());
    let mut conn = Connection::new(state, user, out, slot);
    if conn
        .send(protocol::frame("authenticated", conn.who(), &id))
        .await
        .is_ok()
    {
        let end = conn.serve(&mut stream).await;
        conn.close_consoles().await;
        conn.finish(end, session, writer).await;
    }
}

/// A close reason; the protocol allows 123 bytes.
fn reason(code: CloseCode, text: &str) -> CloseReason {
    let mut text = text.to_string();
    while text.len() > 123 {
        text.pop();
    }
    CloseReason {
        code,
        description: Some(text),
    }
}

/// What a connection's first message was.
enum First {
    Text(String),
    /// A binary message, where the auth frame (text) belongs.
    Binary,
    /// The client closed first (answered with a close frame of the same code).
    Closed(Option<actix_ws::CloseReason>),
    /// The connection ended without a close frame.
    Gone,
}

/// The first data message, skipping control frames.
async fn next_text(stream: &mut Inbound) -> Result<First, ProtocolError> {
    while let Some(msg) = stream.next().await {
        match msg? {
            Message::Text(text) => return Ok(First::Text(text.to_string())),
            Message::Binary(_) => return Ok(First::Binary),
            Message::Close(reason) => return Ok(First::Closed(reason)),
            Message::Ping(_) | Message::Pong(_) | Message::Continuation(_) | Message::Nop => {
                continue
            }
        }
    }
    Ok(First::Gone)
}

impl Connection {
    pub(super) async fn serve(&mut self, stream: &mut Inbound) -> End {
        let ws = &self.state.settings.ws;
        let idle_timeout = Duration::from_secs(ws.idle_timeout_secs);
        let mut ping = tokio::time::interval(Duration::from_secs(ws.ping_interval_secs));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut usage = tokio::time::interval(Duration::from_millis(ws.usage_interval_ms.max(100)));
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expires_in = (self.user.expires_at - chrono::Utc::now().timestamp()).max(0);
        let expiry = tokio::time::sleep(Duration::from_secs(expires_in.unsigned_abs()));
        tokio::pin!(expiry);
        let mut auth_changes = self.state.auth.changes();
        let mut events = self.state.hub.events();
        let mut system = self.state.hub.system();
        loop {
            let result = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.on_message(msg).await
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        let e = ApiError::FrameTooLarge(crate::ws::MAX_FRAME_BYTES);
                        match self.send(protocol::error_frame(&e, &Value::Null)).await {
                            Ok(()) => Err(End::Close(CloseCode::Size, e.to_string())),
                            Err(end) => Err(end),
                        }
                    }
                    Some(Err(e)) if crate::ws::inbound::not_utf8(&e) => Err(End::Close(CloseCode::Invalid, "a text message is not UTF-8".into())),
                    Some(Err(e)) => Err(End::Close(CloseCode::Protocol, format!("protocol error: {e}"))),
                    None => Err(End::Gone),
                },
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(user_id = %self.user.id, missed, "connection fell behind the hub; catching up from the log");
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                event = system.recv() => match event {
                    Ok(event) => self.on_system(&event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                _ = ping.tick() => self.on_ping_tick(idle_timeout).await,
                changed = auth_changes.changed() => match changed {
                    Ok(()) => self.check_token().await,
                    Err(_) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                _ = usage.tick() => self.on_usage_tick().await,
                _ = monitor_tick(&mut self.monitor) => self.on_monitor_tick().await,
                event = self.consoles.next() => match event {
                    Some(event) => self.on_console(event).await,
                    None => Ok(()),
                },
                () = &mut expiry => Err(End::Close(CloseCode::Policy, "token expired: connect again with a new token".into())),
                () = self.state.stopping.cancelled() => Err(End::Close(CloseCode::Away, match self.resume_position() {
                    Some(p) => format!("the server is stopping; resume with since={p}"),
                    None => "the server is stopping".to_string(),
                })),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Pings, and ends connections that went quiet or whose token was revoked (logout).
    async fn on_ping_tick(&mut self, idle_timeout: Duration) -> Result<(), End> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(End::Close(
                CloseCode::Policy,
                "heartbeat timeout: no pong or message arrived in time".into(),
            ));
        }
        self.check_token().await?;
        // A full queue skips a ping; the slow-client rule deals with that.
        let _ = self.out.try_send(Out::Ping);
        Ok(())
    }

    /// Ends the connection when its token was revoked (logout), its password changed, its user
    /// is gone, or its role now allows something else (the subscriptions, consoles and
    /// `vm-control` of the connection were admitted under the old one: a client connects again,
    /// and the SDKs do so by themselves); checked on every ping and whenever the node's auth
    /// cache hears of a change.
    async fn check_token(&mut self) -> Result<(), End> {
        let token = TokenRef {
            jti: &self.user.jti,
            user_id: &self.user.id,
            generation: self.user.token_generation,
        };
        match self.state.auth.check(&self.state.pool, token).await {
            Ok(now) if !now.role.allows_the_same_as(&self.user.role) => Err(End::Close(
                CloseCode::Policy,
                format!(
                    "role changed to '{}': connect again to go on with its permissions",
                    now.role.id
                ),
            )),
            Ok(now) => {
                self.user.name = now.username;
                self.user.role = now.role;
                self.user.rate_limit = now.rate_limit;
                Ok(())
            }
            // The database is away: keep the connection; the next tick checks again.
            Err(cache::Refusal::Store(e)) => {
                tracing::debug!(error = %crate::telemetry::chain(&e), "the token could not be checked");
                Ok(())
            }
            Err(refusal) => Err(End::Close(
                CloseCode::Policy,
                format!("token revoked: {refusal} Connect again with a new token."),
            )),
        }
    }

    pub(super) async fn finish(
        self,
        end: End,
        session: Session,
        writer: tokio::task::JoinHandle<()>,
    ) {
        let user_id = self.user.id.clone();
        match end {
            End::Gone => {
                drop(self);
                writer.abort();
            }
            End::Answered(reason) => {
                drop(self);
                writer.abort();
                let _ = tokio::time::timeout(Duration::from_secs(5), session.close(reason)).await;
            }
            End::Close(code, text) => {
                tracing::info!(user_id, reason = %text, "closing a WebSocket connection");
                let close = Out::Close(reason(code, &text));
                if tokio::time::timeout(Duration::from_secs(1), self.out.send(close))
                    .await
                    .is_err()
                {
                    writer.abort();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        session.close(Some(reason(code, &text))),
                    )
                    .await;
                }
            }
            End::Slow(text) => {
                tracing::warn!(user_id, reason = %text, "closing a WebSocket connection that does not keep up");
                drop(self);
                writer.abort();
                // The close frame goes out once the client reads what was already sent; the
                // connection's place and queue are released now.
                actix_web::rt::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        session.close(Some(reason(CloseCode::Again, &text))),
                    )
                    .await;
                });
            }
        }
    }
}
