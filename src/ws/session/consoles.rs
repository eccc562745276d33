//! The consoles a `/ws` connection has open, at most one terminal and one VNC connection per VM:
//! the console frames are answered here (`terminal::` and `vnc::` do the work), and what the
//! consoles send back (serial output, RFB bytes, their end) arrives through one channel the
//! connection's loop waits on. Each console is a session in the VM's log (`ConsoleOpened` and
//! `ConsoleClosed` with this connection's user); the connection's own place in the user's
//! WebSocket count covers its consoles.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::terminal::Terminal;
use super::vnc::VncLink;
use super::{Connection, End};
use crate::api::error::ApiError;
use crate::console::sessions::ConsoleSession;
use crate::vm::ConsoleKind;
use crate::ws::console_frames::ConsoleRequest;
use crate::ws::protocol;

/// What a console's task hands the connection.
pub(super) enum ConsoleEvent {
    Output {
        session_id: String,
        vm_id: String,
        kind: ConsoleKind,
        bytes: Bytes,
    },
    Ended {
        session_id: String,
        vm_id: String,
        kind: ConsoleKind,
        reason: String,
    },
}

pub(super) struct ConsoleLinks {
    pub(super) terminals: HashMap<String, Terminal>,
    pub(super) vncs: HashMap<String, VncLink>,
    pub(super) tx: mpsc::Sender<ConsoleEvent>,
    rx: mpsc::Receiver<ConsoleEvent>,
}

/// Events waiting for the connection; a console's task waits when this many are queued.
const QUEUED_EVENTS: usize = 64;

impl ConsoleLinks {
    pub(super) fn new() -> ConsoleLinks {
        let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
        ConsoleLinks {
            terminals: HashMap::new(),
            vncs: HashMap::new(),
            tx,
            rx,
        }
    }

    /// The next event of any open console (never ends: the links hold a sender).
    pub(super) async fn next(&mut self) -> Option<ConsoleEvent> {
        self.rx.recv().await
    }
}

/// A console that is not open on this connection.
pub(super) fn not_connected(kind: ConsoleKind, vm_id: &str) -> ApiError {
    let (what, connect) = match kind {
        ConsoleKind::Serial => ("terminal", "terminal-connect"),
        ConsoleKind::Vnc => ("VNC console", "vnc-connect"),
    };
    ApiError::validation(
        "data.vmId",
        format!("No {what} of {vm_id} is open on this connection; send {connect} first."),
    )
}

impl Connection {
    /// Answers a console frame.
    pub(super) async fn console(&mut self, request: ConsoleRequest, id: &Value) -> Result<(), End> {
        let answer = match request {
            ConsoleRequest::TerminalConnect { vm_id } => self
                .terminal_connect(&vm_id)
                .await
                .map(|data| Some(("terminal-connected", data))),
            ConsoleRequest::TerminalInput { vm_id, data } => {
                self.terminal_input(&vm_id, data).await.map(|()| None)
            }
            ConsoleRequest::TerminalResize { vm_id, cols, rows } => self
                .terminal_resize(vm_id, cols, rows)
                .map(|data| Some(("terminal-resized", data))),
            ConsoleRequest::TerminalDisconnect { vm_id } => {
                match self.consoles.terminals.remove(&vm_id) {
                    Some(terminal) => {
                        terminal.close().await;
                        Ok(Some((
                            "terminal-disconnected",
                            disconnected(&vm_id, "closed by the client"),
                        )))
                    }
                    None => Err(not_connected(ConsoleKind::Serial, &vm_id)),
                }
            }
            ConsoleRequest::VncConnect { vm_id } => self
                .vnc_connect(&vm_id)
                .await
                .map(|data| Some(("vnc-connected", data))),
            ConsoleRequest::VncData { vm_id, data } => {
                self.vnc_data(&vm_id, &data).await.map(|()| None)
            }
            ConsoleRequest::VncInput { vm_id, input } => {
                self.vnc_input(&vm_id, input).await.map(|()| None)
            }
            ConsoleRequest::VncDisconnect { vm_id } => match self.consoles.vncs.remove(&vm_id) {
                Some(link) => {
                    link.close().await;
                    Ok(Some((
                        "vnc-disconnected",
                        disconnected(&vm_id, "closed by the client"),
                    )))
                }
                None => Err(not_connected(ConsoleKind::Vnc, &vm_id)),
            },
        };
        match answer {
            Ok(Some((kind, data))) => self.send(protocol::frame(kind, data, id)).await,
            Ok(None) => Ok(()),
            Err(e) => self.send(protocol::error_frame(&e, id)).await,
        }
    }

    /// Output of an open console, or its end.
    pub(super) async fn on_console(&mut self, event: ConsoleEvent) -> Result<(), End> {
        match event {
            ConsoleEvent::Output {
                session_id,
                vm_id,
                kind: ConsoleKind::Serial,
                bytes,
            } => match self.consoles.terminals.get_mut(&vm_id) {
                Some(terminal) if terminal.session_id() == session_id => {
                    let text = terminal.decode(&bytes);
                    if text.is_empty() {
                        return Ok(());
                    }
                    let data = json!({"vmId": vm_id, "data": text});
                    self.send(protocol::frame("terminal-output", data, &Value::Null))
                        .await
                }
                // A console closed meanwhile.
                Some(_) | None => Ok(()),
            },
            ConsoleEvent::Output {
                session_id,
                vm_id,
                kind: ConsoleKind::Vnc,
                bytes,
            } => match self.consoles.vncs.get(&vm_id) {
                Some(link) if link.session_id() == session_id => {
                    use base64::Engine;
                    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    let data = json!({"vmId": vm_id, "data": data});
                    self.send(protocol::frame("vnc-data", data, &Value::Null))
                        .await
                }
                Some(_) | None => Ok(()),
            },
            ConsoleEvent::Ended {
                session_id,
                vm_id,
                kind,
                reason,
            } => {
                let frame = match kind {
                    ConsoleKind::Serial => match self.consoles.terminals.get(&vm_id) {
                        Some(t) if t.session_id() == session_id => {
                            if let Some(terminal) = self.consoles.terminals.remove(&vm_id) {
                                terminal.close().await;
                            }
                            "terminal-disconnected"
                        }
                        Some(_) | None => return Ok(()),
                    },
                    ConsoleKind::Vnc => match self.consoles.vncs.get(&vm_id) {
                        Some(l) if l.session_id() == session_id => {
                            if let Some(link) = self.consoles.vncs.remove(&vm_id) {
                                link.close().await;
                            }
                            "vnc-disconnected"
                        }
                        Some(_) | None => return Ok(()),
                    },
                };
                self.send(protocol::frame(
                    frame,
                    disconnected(&vm_id, &reason),
                    &Value::Null,
                ))
                .await
            }
        }
    }

    /// Closes (and records the end of) every console of the connection.
    pub(super) async fn close_consoles(&mut self) {
        for (_, terminal) in self.consoles.terminals.drain() {
            terminal.close().await;
        }
        for (_, link) in self.consoles.vncs.drain() {
            link.close().await;
        }
    }
}

fn disconnected(vm_id: &str, reason: &str) -> Value {
    json!({"vmId": vm_id, "reason": reason})
}

/// Records `ConsoleOpened` for this connection's user (refused unless the VM is theirs to see and
/// running).
pub(super) async fn open_session(
    conn: &Connection,
    vm_id: &str,
    kind: ConsoleKind,
) -> Result<ConsoleSession, ApiError> {
    ConsoleSession::open(
        &conn.state.registry,
        &conn.user,
        vm_id,
        kind,
        crate::store::Via::WebSocket,
    )
    .await
    .map_err(|e| ApiError::from_actor(vm_id, e))
}

/// The checks before a console opens: the permission, the VM visible and running.
pub(super) async fn admit(conn: &Connection, vm_id: &str) -> Result<(), ApiError> {
    conn.user.require(crate::auth::Permission::VmConsole)?;
    let vm = crate::app::access::visible(&conn.state, &conn.user, vm_id)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(vm_id.to_string()))?;
    crate::api::vms::not_running(vm_id, vm.status)
}
