//! `vnc-*` on `/ws`: `vnc-connect` opens a connection of this `/ws` connection's own to the VM's
//! VNC server; what QEMU sends goes out as `vnc-data` (base64), `vnc-data` from the client goes
//! in as raw RFB bytes (the client does the handshake, as a noVNC client would), and `vnc-input`
//! becomes a PointerEvent or KeyEvent the server writes itself. That is only done where QEMU
//! expects a new client message (after the client's ClientInit, between its messages:
//! `console::rfb::ClientStream` follows them); anywhere else it is refused with
//! `CONSOLE_NOT_READY`.

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::consoles::{admit, not_connected, open_session, ConsoleEvent};
use super::Connection;
use crate::api::error::ApiError;
use crate::console::rfb::{self, ClientStream};
use crate::console::sessions::ConsoleSession;
use crate::vm::ConsoleKind;
use crate::ws::console_frames::VncInput;

/// An open VNC connection: its write half, the client's stream so far, the reading task.
pub(crate) struct VncLink {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    client: ClientStream,
    pump: tokio::task::JoinHandle<()>,
    session: ConsoleSession,
}

impl VncLink {
    pub(super) fn session_id(&self) -> &str {
        &self.session.id
    }

    /// Closes the VNC connection and records the session's end.
    pub(super) async fn close(mut self) {
        self.pump.abort();
        let _ = self.writer.shutdown().await;
        self.session.close().await;
    }
}

/// The chunks read from QEMU at a time (a `vnc-data` frame each).
const READ_CHUNK: usize = 32 * 1024;

impl Connection {
    pub(super) async fn vnc_connect(&mut self, vm_id: &str) -> Result<Value, ApiError> {
        admit(self, vm_id).await?;
        if let Some(link) = self.consoles.vncs.get(vm_id) {
            return Ok(json!({"vmId": vm_id, "sessionId": link.session_id()}));
        }
        let link = self
            .state
            .consoles
            .ports
            .vnc(vm_id)
            .await
            .map_err(|e| crate::api::vms::unreachable_console(vm_id, &e))?;
        let session = open_session(self, vm_id, ConsoleKind::Vnc).await?;
        let mut reader = link.reader;
        let tx = self.consoles.tx.clone();
        let (session_id, vm) = (session.id.clone(), vm_id.to_string());
        let pump = actix_web::rt::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            let reason = loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break "the VNC server closed the connection",
                    Ok(n) => {
                        let event = ConsoleEvent::Output {
                            session_id: session_id.clone(),
                            vm_id: vm.clone(),
                            kind: ConsoleKind::Vnc,
                            bytes: Bytes::copy_from_slice(&buf[..n]),
                        };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let _ = tx
                .send(ConsoleEvent::Ended {
                    session_id,
                    vm_id: vm,
                    kind: ConsoleKind::Vnc,
                    reason: reason.to_string(),
                })
                .await;
        });
        let answer = json!({"vmId": vm_id, "sessionId": session.id});
        self.consoles.vncs.insert(
            vm_id.to_string(),
            VncLink {
                writer: link.writer,
                client: ClientStream::default(),
                pump,
                session,
            },
        );
        Ok(answer)
    }

    pub(super) async fn vnc_data(&mut self, vm_id: &str, data: &[u8]) -> Result<(), ApiError> {
        let link = self
            .consoles
            .vncs
            .get_mut(vm_id)
            .ok_or_else(|| not_connected(ConsoleKind::Vnc, vm_id))?;
        link.client.feed(data);
        link.writer
            .write_all(data)
            .await
            .map_err(|_| not_connected(ConsoleKind::Vnc, vm_id))
    }

    pub(super) async fn vnc_input(&mut self, vm_id: &str, input: VncInput) -> Result<(), ApiError> {
        let link = self
            .consoles
            .vncs
            .get_mut(vm_id)
            .ok_or_else(|| not_connected(ConsoleKind::Vnc, vm_id))?;
        if !link.client.between_messages() {
            return Err(ApiError::Conflict {
                code: "CONSOLE_NOT_READY",
                message: "vnc-input is taken once the client's RFB handshake is done (its ClientInit sent through vnc-data) and between its messages.".into(),
            });
        }
        let message: Vec<u8> = match input {
            VncInput::Mouse { x, y, buttons } => rfb::pointer_event(x, y, buttons).to_vec(),
            VncInput::Keyboard { keysym, down } => rfb::key_event(down, keysym).to_vec(),
        };
        link.writer
            .write_all(&message)
            .await
            .map_err(|_| not_connected(ConsoleKind::Vnc, vm_id))
    }
}
