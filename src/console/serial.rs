//! The serial console hub: one per VM on this node with at least one viewer. QEMU's serial socket
//! serves one client at a time, so the hub holds that single connection while viewers are
//! attached, writes every viewer's input to it (chunks interleave whole), and fans the output out
//! to every viewer. It lets go of the socket when the last viewer leaves, and ends (closing its
//! viewers) when the machine closes it.
//!
//! **Output comes from `serial.log`, not from the socket.** QEMU writes every byte the guest
//! sends to the log whether or not a client is connected, so the log is the one complete record:
//! the hub follows it from where the viewers' backlog ends, waking when the socket has output
//! (QEMU writes the socket first, then the log) and every `poll` in case it woke too early. What
//! the socket itself carries is read only so QEMU never blocks on it, and dropped. A new viewer's
//! backlog (the last 64 KiB) and its place in the broadcast are taken under the same lock the
//! hub publishes under, so between the backlog and the live output there is no gap and no
//! duplicate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ports::{ConsolePorts, Link};

/// How much recent output a new viewer gets first.
pub const RECENT_BYTES: usize = 64 * 1024;
/// Chunks of output a viewer may fall behind by before it is closed as too slow.
const OUTPUT_CHUNKS: usize = 1024;
/// Chunks of input waiting for the socket.
const INPUT_CHUNKS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console socket could not be reached: {0}")]
    Unreachable(#[source] std::io::Error),
    #[error("the console has closed")]
    Closed,
}

/// What a viewer receives next.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Bytes(Bytes),
    /// The viewer fell this many chunks behind; its output has a gap.
    Lagged(u64),
    /// The hub ended: the machine closed its serial port (it stopped).
    Ended,
}

/// The serial hubs of this node, one per VM with viewers.
pub struct SerialHubs {
    ports: Arc<dyn ConsolePorts>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    poll: Duration,
}

struct Hub {
    state: Mutex<HubState>,
    input: mpsc::Sender<Bytes>,
    stop: CancellationToken,
}

struct HubState {
    viewers: usize,
    recent: VecDeque<u8>,
    /// `None` once the hub has ended (or is ending): nobody may join it any more.
    output: Option<broadcast::Sender<Bytes>>,
}

/// One viewer of a VM's serial console. Dropping it leaves the hub.
pub struct SerialViewer {
    /// The last [`RECENT_BYTES`] of output, to show before the live output.
    pub recent: Vec<u8>,
    output: broadcast::Receiver<Bytes>,
    input: mpsc::Sender<Bytes>,
    hub: Arc<Hub>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Adds a viewer, unless the hub has ended.
    fn join(self: &Arc<Self>) -> Option<SerialViewer> {
        let mut state = lock(&self.state);
        let output = state.output.as_ref()?.subscribe();
        state.viewers += 1;
        Some(SerialViewer {
            recent: state.recent.iter().copied().collect(),
            output,
            input: self.input.clone(),
            hub: self.clone(),
        })
    }

    fn publish(&self, bytes: &[u8]) {
        let mut state = lock(&self.state);
        state.recent.extend(bytes);
        let excess = state.recent.len().saturating_sub(RECENT_BYTES);
        state.recent.drain(..excess);
        if let Some(output) = &state.output {
            // No receiver: the last viewer just left.
            let _ = output.send(Bytes::copy_from_slice(bytes));
        }
    }

    fn end(&self) {
        lock(&self.state).output = None;
        self.stop.cancel();
    }
}

impl SerialViewer {
    /// The next output (after [`SerialViewer::recent`]).
    pub async fn next(&mut self) -> Output {
        match self.output.recv().await {
            Ok(bytes) => Output::Bytes(bytes),
            Err(broadcast::error::RecvError::Lagged(n)) => Output::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Output::Ended,
        }
    }

    /// A handle that sends keystrokes like [`SerialViewer::send`], for when a task owns the
    /// viewer's output.
    pub fn input(&self) -> mpsc::Sender<Bytes> {
        self.input.clone()
    }

    /// Sends keystrokes to the guest.
    pub async fn send(&self, bytes: Bytes) -> Result<(), ConsoleError> {
        self.input
            .send(bytes)
            .await
            .map_err(|_| ConsoleError::Closed)
    }
}

impl Drop for SerialViewer {
    fn drop(&mut self) {
        let mut state = lock(&self.hub.state);
        state.viewers = state.viewers.saturating_sub(1);
        if state.viewers == 0 {
            state.output = None;
            self.hub.stop.cancel();
        }
    }
}

impl SerialHubs {
    pub fn new(ports: Arc<dyn ConsolePorts>, poll: Duration) -> Arc<SerialHubs> {
        Arc::new(SerialHubs {
            ports,
            hubs: Mutex::new(HashMap::new()),
            poll,
        })
    }

    /// Joins the VM's hub, starting it (connecting to the serial socket) if there is none.
    pub async fn attach(self: &Arc<Self>, vm_id: &str) -> Result<SerialViewer, ConsoleError> {
        if let Some(viewer) = lock(&self.hubs).get(vm_id).and_then(|hub| hub.join()) {
            return Ok(viewer);
        }
        let link = self
            .ports
            .serial(vm_id)
            .await
            .map_err(ConsoleError::Unreachable)?;
        let (recent, offset) = self.tail(vm_id).await?;
        let (input_tx, input_rx) = mpsc::channel(INPUT_CHUNKS);
        let (output, _) = broadcast::channel(OUTPUT_CHUNKS);
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                viewers: 0,
                recent: recent.into(),
                output: Some(output),
            }),
            input: input_tx,
            stop: CancellationToken::new(),
        });
        let viewer = {
            let mut hubs = lock(&self.hubs);
            // Another viewer may have started one meanwhile: join it, and let ours go.
            if let Some(viewer) = hubs.get(vm_id).and_then(|hub| hub.join()) {
                return Ok(viewer);
            }
            hubs.insert(vm_id.to_string(), hub.clone());
            hub.join().ok_or(ConsoleError::Closed)?
        };
        let span = tracing::info_span!("serial_hub", vm_id);
        tokio::spawn(
            self.clone()
                .run(vm_id.to_string(), hub, link, input_rx, offset)
                .instrument(span),
        );
        Ok(viewer)
    }

    /// How many viewers the VM's console has on this node.
    pub fn viewers(&self, vm_id: &str) -> usize {
        lock(&self.hubs)
            .get(vm_id)
            .map_or(0, |hub| lock(&hub.state).viewers)
    }

    /// The last [`RECENT_BYTES`] of the log and where they end.
    async fn tail(&self, vm_id: &str) -> Result<(Vec<u8>, u64), ConsoleError> {
        let len = self
            .ports
            .read_log(vm_id, 0, 0)
            .await
            .map_err(ConsoleError::Unreachable)?
            .len;
        let from = len.saturating_sub(RECENT_BYTES as u64);
        let read = self
            .ports
            .read_log(vm_id, from, RECENT_BYTES)
            .await
            .map_err(ConsoleError::Unreachable)?;
        let end = from + read.bytes.len() as u64;
        Ok((read.bytes, end))
    }

    async fn run(
        self: Arc<Self>,
        vm_id: String,
        hub: Arc<Hub>,
        link: Link,
        mut input: mpsc::Receiver<Bytes>,
        mut offset: u64,
    ) {
        let Link {
            mut reader,
            mut writer,
        } = link;
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scratch = vec![0u8; 4096];
        tracing::debug!("holding the serial console");
        loop {
            tokio::select! {
                () = hub.stop.cancelled() => break,
                read = reader.read(&mut scratch) => match read {
                    Ok(0) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "the serial socket failed");
                        break;
                    }
                    Ok(_) => {}
                },
                bytes = input.recv() => match bytes {
                    Some(bytes) => {
                        if let Err(e) = writer.write_all(&bytes).await {
                            tracing::debug!(error = %e, "the serial socket refused input");
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            offset = self.pump(&vm_id, &hub, offset).await;
        }
        // What the guest wrote last is in the log already.
        self.pump(&vm_id, &hub, offset).await;
        hub.end();
        let mut hubs = lock(&self.hubs);
        if hubs.get(&vm_id).is_some_and(|h| Arc::ptr_eq(h, &hub)) {
            hubs.remove(&vm_id);
        }
        tracing::debug!("let go of the serial console");
    }

    /// Publishes what the log gained since `offset`; returns the new offset.
    async fn pump(&self, vm_id: &str, hub: &Hub, mut offset: u64) -> u64 {
        loop {
            match self.ports.read_log(vm_id, offset, RECENT_BYTES).await {
                // A new QEMU process started the log anew.
                Ok(read) if read.len < offset => offset = 0,
                Ok(read) if read.bytes.is_empty() => return offset,
                Ok(read) => {
                    offset += read.bytes.len() as u64;
                    hub.publish(&read.bytes);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the serial log could not be read");
                    return offset;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
