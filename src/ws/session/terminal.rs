//! `terminal-*` on `/ws`: the connection joins the VM's serial hub like any `/console` viewer.
//! Output goes out as `terminal-output` text: bytes are decoded as UTF-8, a character split
//! between two reads waits for its end, and invalid bytes become U+FFFD (a serial line carries
//! text; a client that needs the exact bytes uses `/console`). Input is sent as typed.
//! `terminal-resize` is checked and acknowledged, but a serial line has no way to tell the guest
//! its window size, so it changes nothing in the guest (`stty rows/cols` there does).

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::consoles::{admit, not_connected, open_session, ConsoleEvent};
use super::Connection;
use crate::api::error::ApiError;
use crate::console::sessions::ConsoleSession;
use crate::console::Output;
use crate::vm::ConsoleKind;

/// An open terminal: where its input goes, the task that forwards its output, its session.
pub(crate) struct Terminal {
    input: mpsc::Sender<Bytes>,
    pump: tokio::task::JoinHandle<()>,
    session: ConsoleSession,
    /// The start of a character whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Terminal {
    pub(super) fn session_id(&self) -> &str {
        &self.session.id
    }

    /// The text of `bytes`, keeping an unfinished character for the next call.
    pub(super) fn decode(&mut self, bytes: &[u8]) -> String {
        self.partial.extend_from_slice(bytes);
        let complete = complete_prefix(&self.partial);
        let text = String::from_utf8_lossy(&self.partial[..complete]).into_owned();
        self.partial.drain(..complete);
        text
    }

    /// Leaves the hub and records the session's end.
    pub(super) async fn close(self) {
        self.pump.abort();
        self.session.close().await;
    }
}

/// How much of `bytes` ends on a character boundary: all of it, unless it ends inside a UTF-8
/// sequence (at most 3 bytes of it are held back).
fn complete_prefix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(3) {
        let b = bytes[n - back];
        if b & 0xc0 == 0x80 {
            continue;
        }
        let needs = match b {
            0xf0..=0xff => 4,
            0xe0..=0xef => 3,
            0xc0..=0xdf => 2,
            _ => 1,
        };
        return if needs > back { n - back } else { n };
    }
    n
}

impl Connection {
    pub(super) async fn terminal_connect(&mut self, vm_id: &str) -> Result<Value, ApiError> {
        admit(self, vm_id).await?;
        if let Some(terminal) = self.consoles.terminals.get(vm_id) {
            return Ok(json!({"vmId": vm_id, "sessionId": terminal.session_id()}));
        }
        let mut viewer = self
            .state
            .consoles
            .serial
            .attach(vm_id)
            .await
            .map_err(|e| crate::api::vms::unreachable_console(vm_id, &e))?;
        let session = open_session(self, vm_id, ConsoleKind::Serial).await?;
        let recent = std::mem::take(&mut viewer.recent);
        let input = viewer.input();
        let tx = self.consoles.tx.clone();
        let (session_id, vm) = (session.id.clone(), vm_id.to_string());
        let pump = actix_web::rt::spawn(async move {
            let output = |bytes| ConsoleEvent::Output {
                session_id: session_id.clone(),
                vm_id: vm.clone(),
                kind: ConsoleKind::Serial,
                bytes,
            };
            if !recent.is_empty() && tx.send(output(Bytes::from(recent))).await.is_err() {
                return;
            }
            let reason = loop {
                match viewer.next().await {
                    Output::Bytes(bytes) => {
                        if tx.send(output(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Output::Lagged(_) => {
                        break "too slow: the console's output went on without this connection"
                    }
                    Output::Ended => break "the machine's serial port closed (it stopped)",
                }
            };
            let _ = tx
                .send(ConsoleEvent::Ended {
                    session_id,
                    vm_id: vm,
                    kind: ConsoleKind::Serial,
                    reason: reason.to_string(),
                })
                .await;
        });
        let answer = json!({"vmId": vm_id, "sessionId": session.id});
        self.consoles.terminals.insert(
            vm_id.to_string(),
            Terminal {
                input,
                pump,
                session,
                partial: Vec::new(),
            },
        );
        Ok(answer)
    }

    pub(super) async fn terminal_input(
        &mut self,
        vm_id: &str,
        data: String,
    ) -> Result<(), ApiError> {
        let terminal = self
            .consoles
            .terminals
            .get(vm_id)
            .ok_or_else(|| not_connected(ConsoleKind::Serial, vm_id))?;
        terminal
            .input
            .send(Bytes::from(data))
            .await
            .map_err(|_| not_connected(ConsoleKind::Serial, vm_id))
    }

    /// Checks and acknowledges a window size; see the module docs for why it changes nothing.
    pub(super) fn terminal_resize(
        &self,
        vm_id: Option<String>,
        cols: u16,
        rows: u16,
    ) -> Result<Value, ApiError> {
        match &vm_id {
            Some(vm_id) if !self.consoles.terminals.contains_key(vm_id) => {
                Err(not_connected(ConsoleKind::Serial, vm_id))
            }
            None if self.consoles.terminals.is_empty() => Err(ApiError::validation(
                "data.vmId",
                "No terminal is open on this connection; send terminal-connect first.",
            )),
            Some(_) | None => Ok(json!({
                "vmId": vm_id,
                "cols": cols,
                "rows": rows,
                "applied": false,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::complete_prefix;

    #[test]
    fn a_split_character_waits_for_its_end() {
        let euro = "€".as_bytes();
        assert_eq!(complete_prefix(b"abc"), 3);
        assert_eq!(complete_prefix(&[b'a', euro[0]]), 1);
        assert_eq!(complete_prefix(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(complete_prefix(&[b'a', euro[0], euro[1], euro[2]]), 4);
        assert_eq!(
            complete_prefix(&[0x80, 0x80, 0x80, 0x80]),
            4,
            "invalid bytes pass"
        );
    }
}
