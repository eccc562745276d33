//! The two console WebSockets once upgraded: `/console` between a socket and the VM's serial hub,
//! `/vnc` between a socket and its own connection to QEMU's VNC server, byte for byte both ways.
//! Each pings its client every `ws.ping_interval_secs`, closes when the token expires or is
//! revoked and when the server stops, and records `ConsoleClosed` however it ends (a close
//! frame, a dropped TCP connection, the machine stopping). The socket's place in the user's
//! WebSocket count is given back at the end.

use std::time::Duration;

use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message, Session};

use crate::ws::inbound::Inbound;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sessions::ConsoleSession;
use super::{Link, Output, SerialViewer};
use crate::app::AppState;
use crate::auth::cache::TokenRef;
use crate::auth::AuthUser;
use crate::ws::limits::Slot;

/// Why a console socket ends.
enum End {
    /// The client went away: nothing more to send.
    Gone,
    /// The client sent a close frame: answered with one of the same code (RFC 6455 §5.5.1).
    Answered(Option<CloseReason>),
    Close(CloseCode, String),
}

/// What the client sent, as the bridges need it.
enum FromClient {
    Bytes(bytes::Bytes),
    Nothing,
    End(End),
}

async fn from_client(
    session: &mut Session,
    msg: Option<Result<Message, actix_ws::ProtocolError>>,
) -> FromClient {
    match msg {
        Some(Ok(Message::Binary(bytes))) => FromClient::Bytes(bytes),
        Some(Ok(Message::Text(text))) => FromClient::Bytes(text.into_bytes()),
        Some(Ok(Message::Ping(bytes))) => match session.pong(&bytes).await {
            Ok(()) => FromClient::Nothing,
            Err(_) => FromClient::End(End::Gone),
        },
        Some(Ok(Message::Pong(_) | Message::Nop | Message::Continuation(_))) => FromClient::Nothing,
        Some(Ok(Message::Close(reason))) => FromClient::End(End::Answered(reason)),
        None => FromClient::End(End::Gone),
        Some(Err(actix_ws::ProtocolError::Overflow)) => FromClient::End(End::Close(
            CloseCode::Size,
            format!(
                "a frame may have at most {} bytes",
                crate::ws::MAX_FRAME_BYTES
            ),
        )),
        Some(Err(e)) if crate::ws::inbound::not_utf8(&e) => FromClient::End(End::Close(
            CloseCode::Invalid,
            "a text message is not UTF-8".into(),
        )),
        Some(Err(e)) => FromClient::End(End::Close(
            CloseCode::Protocol,
            format!("protocol error: {e}"),
        )),
    }
}

/// The watch every console socket keeps besides its bytes: pings, the token (and the role and
/// VM it was admitted under), the server.
struct Guard {
    state: web::Data<AppState>,
    user: AuthUser,
    vm_id: String,
    ping: tokio::time::Interval,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    auth_changes: tokio::sync::watch::Receiver<u64>,
}

impl Guard {
    fn new(state: web::Data<AppState>, user: AuthUser, vm_id: &str) -> Guard {
        let mut ping = tokio::time::interval(Duration::from_secs(
            state.settings.ws.ping_interval_secs.max(1),
        ));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expires_in = (user.expires_at - chrono::Utc::now().timestamp()).max(0);
        let expiry = Box::pin(tokio::time::sleep(Duration::from_secs(
            expires_in.unsigned_abs(),
        )));
        let auth_changes = state.auth.changes();
        Guard {
            state,
            user,
            vm_id: vm_id.to_string(),
            ping,
            expiry,
            auth_changes,
        }
    }

    /// Waits for a reason to act on the socket: `Some(end)` ends it, `None` asks for a ping.
    async fn next(&mut self) -> Option<End> {
        tokio::select! {
            _ = self.ping.tick() => self.revoked().await,
            changed = self.auth_changes.changed() => match changed {
                Ok(()) => self.revoked().await,
                Err(_) => Some(End::Close(CloseCode::Restart, "the server is stopping".into())),
            },
            () = &mut self.expiry => Some(End::Close(CloseCode::Policy, "token expired: connect again with a new token".into())),
            () = self.state.stopping.cancelled() => Some(End::Close(CloseCode::Away, "the server is stopping".into())),
        }
    }

    /// Why the socket may no longer stay open, if it may not: its token was revoked, its role
    /// now allows something else, or the VM is no longer the user's (its owner changed). A
    /// database that is away keeps the socket; the next tick asks again.
    async fn revoked(&self) -> Option<End> {
        let token = TokenRef {
            jti: &self.user.jti,
            user_id: &self.user.id,
            generation: self.user.token_generation,
        };
        let policy = |text: String| Some(End::Close(CloseCode::Policy, text));
        match self.state.auth.check(&self.state.pool, token).await {
            Ok(now) if !now.role.allows_the_same_as(&self.user.role) => {
                return policy(format!(
                    "role changed to '{}': open the console again if it allows it",
                    now.role.id
                ))
            }
            Ok(_) | Err(crate::auth::cache::Refusal::Store(_)) => {}
            Err(refusal) => return policy(format!("token revoked: {refusal}")),
        }
        match crate::app::access::vm_row(&self.state, &self.vm_id).await {
            Ok(Some(vm)) if self.user.may_access(&vm.owner_id) => None,
            Ok(_) => policy("the virtual machine is no longer visible to this user".into()),
            Err(e) => {
                tracing::debug!(error = %crate::telemetry::chain(&e), "the console's VM could not be read");
                None
            }
        }
    }
}

async fn finish(session: Session, end: End) {
    let reason = match end {
        End::Gone => return,
        End::Answered(reason) => reason,
        End::Close(code, text) => {
            let mut description = text;
            while description.len() > 123 {
                description.pop();
            }
            Some(CloseReason {
                code,
                description: Some(description),
            })
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), session.close(reason)).await;
}

/// `/console`: the viewer's backlog first, then live output; the client's frames are keystrokes.
pub async fn serial(
    state: web::Data<AppState>,
    user: AuthUser,
    mut session: Session,
    mut stream: Inbound,
    mut viewer: SerialViewer,
    console: ConsoleSession,
    slot: Slot,
) {
    let mut guard = Guard::new(state, user, &console.vm_id);
    let recent = std::mem::take(&mut viewer.recent);
    let end = if !recent.is_empty() && session.binary(recent).await.is_err() {
        End::Gone
    } else {
        loop {
            let end = tokio::select! {
                out = viewer.next() => match out {
                    Output::Bytes(bytes) => session.binary(bytes).await.err().map(|_| End::Gone),
                    Output::Lagged(_) => Some(End::Close(CloseCode::Again, "too slow: the console's output went on without this viewer".into())),
                    Output::Ended => Some(End::Close(CloseCode::Normal, "the machine's serial port closed (it stopped)".into())),
                },
                msg = stream.next() => match from_client(&mut session, msg).await {
                    FromClient::Bytes(bytes) => viewer.send(bytes).await.err().map(|_| End::Close(CloseCode::Normal, "the console closed".into())),
                    FromClient::Nothing => None,
                    FromClient::End(end) => Some(end),
                },
                end = guard.next() => match end {
                    Some(end) => Some(end),
                    None => session.ping(b"").await.err().map(|_| End::Gone),
                },
            };
            if let Some(end) = end {
                break end;
            }
        }
    };
    drop(viewer);
    finish(session, end).await;
    console.close().await;
    drop(slot);
}

/// `/vnc`: bytes both ways between the client and its own connection to QEMU's VNC server.
pub async fn vnc(
    state: web::Data<AppState>,
    user: AuthUser,
    mut session: Session,
    mut stream: Inbound,
    link: Link,
    console: ConsoleSession,
    slot: Slot,
) {
    let mut guard = Guard::new(state, user, &console.vm_id);
    let Link {
        mut reader,
        mut writer,
    } = link;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let end = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => Some(End::Close(CloseCode::Normal, "the VNC server closed the connection".into())),
                Ok(n) => session.binary(bytes::Bytes::copy_from_slice(&buf[..n])).await.err().map(|_| End::Gone),
            },
            msg = stream.next() => match from_client(&mut session, msg).await {
                FromClient::Bytes(bytes) => writer.write_all(&bytes).await.err().map(|_| End::Close(CloseCode::Normal, "the VNC server closed the connection".into())),
                FromClient::Nothing => None,
                FromClient::End(end) => Some(end),
            },
            end = guard.next() => match end {
                Some(end) => Some(end),
                None => session.ping(b"").await.err().map(|_| End::Gone),
            },
        };
        if let Some(end) = end {
            break end;
        }
    };
    drop((reader, writer));
    finish(session, end).await;
    console.close().await;
    drop(slot);
}
