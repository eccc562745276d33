//! The watcher: one task per running machine that turns what QEMU reports on its event monitor
//! (`events.sock`) into [`Observation`]s.
//!
//! It is the only way VoidVM learns that a machine changed on its own: the guest powered off,
//! rebooted, or QEMU was killed. The watcher keeps a QMP connection open for the machine's whole
//! life; when that connection reaches EOF the process is gone, and whether a `SHUTDOWN` came
//! first tells an orderly exit from a crash. It speaks plain QMP JSON lines rather than typed
//! events so that an event this crate does not know (from a newer QEMU) cannot break the watch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::process;
use super::{MachineEvent, Observation, ObservationSender};
use crate::vm::MachineProcess;

/// How long the watcher tries to (re)connect to a live machine's event monitor.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After EOF, how long the process may take to disappear before the EOF is taken for a dropped
/// connection and the watcher reconnects.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What the watcher needs to know about its machine.
#[derive(Debug, Clone)]
pub struct WatchTarget {
    pub vm_id: String,
    pub process: MachineProcess,
    pub pid_file: PathBuf,
    pub events_socket: PathBuf,
}

struct Entry {
    id: u64,
    process: MachineProcess,
    handle: JoinHandle<()>,
}

/// The set of running watchers, at most one per machine.
#[derive(Default)]
pub struct Watchers {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    next_id: AtomicU64,
}

impl Watchers {
    /// Starts watching the machine's process unless it is already watched. Returns a receiver
    /// that resolves once the watcher is connected (or failed to connect), or `None` when a
    /// watcher was already running. A watcher of the machine's previous process (still waiting
    /// for it to vanish) is left to report that process's exit; it no longer counts as the
    /// machine's watcher.
    pub fn ensure(
        &self,
        target: WatchTarget,
        observations: ObservationSender,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        let Ok(mut entries) = self.entries.lock() else {
            tracing::error!(vm_id = %target.vm_id, "the watcher registry is poisoned");
            return None;
        };
        if let Some(entry) = entries.get(&target.vm_id) {
            if !entry.handle.is_finished() && entry.process == target.process {
                return None;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ready_tx, ready_rx) = oneshot::channel();
        let registry = Arc::clone(&self.entries);
        let vm_id = target.vm_id.clone();
        let process = target.process;
        let span = tracing::info_span!("watch", vm_id = %target.vm_id, pid = process.pid);
        let handle = tokio::spawn(
            async move {
                let vm_id = target.vm_id.clone();
                watch(target, observations, ready_tx).await;
                if let Ok(mut entries) = registry.lock() {
                    if entries.get(&vm_id).is_some_and(|e| e.id == id) {
                        entries.remove(&vm_id);
                    }
                }
            }
            .instrument(span),
        );
        entries.insert(
            vm_id,
            Entry {
                id,
                process,
                handle,
            },
        );
        Some(ready_rx)
    }

    /// Stops watching `process` without reporting anything more about it (a start gave it up).
    pub fn forget(&self, vm_id: &str, process: MachineProcess) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.get(vm_id).is_some_and(|e| e.process == process) {
                if let Some(entry) = entries.remove(vm_id) {
                    entry.handle.abort();
                }
            }
        }
    }

    /// Whether a watcher runs for the machine.
    pub fn is_watched(&self, vm_id: &str) -> bool {
        self.entries
            .lock()
            .map(|e| e.get(vm_id).is_some_and(|e| !e.handle.is_finished()))
            .unwrap_or(false)
    }

    /// Stops every watcher (the hypervisor is going away; the machines keep running).
    pub fn abort_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            for (_, entry) in entries.drain() {
                entry.handle.abort();
            }
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Why the watcher's connection ended.
enum ConnectionEnd {
    /// EOF or a read error: the process is probably exiting.
    Closed,
}

async fn watch(
    target: WatchTarget,
    observations: ObservationSender,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let send = |observation: Observation| {
        let _ = observations.send(MachineEvent {
            vm_id: target.vm_id.clone(),
            process: target.process,
            observation,
        });
    };
    let mut ready = Some(ready);
    // The last SHUTDOWN reason seen, if any: its presence makes the exit clean.
    let mut shutdown: Option<String> = None;

    loop {
        let connection = match connect(&target).await {
            Ok(c) => c,
            Err(why) => {
                if !process::is_machine_process(target.process.pid, &target.pid_file) {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err("the machine exited before it could be watched".into()));
                    }
                    send(exited(shutdown.as_deref()));
                } else {
                    tracing::error!(reason = %why, "the machine's event monitor is unreachable; it is no longer watched");
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(why));
                    }
                }
                return;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        tracing::debug!("watching the machine's events");

        let ConnectionEnd::Closed = read_events(connection, &mut shutdown, &send).await;

        if process::wait_for_exit(target.process.pid, &target.pid_file, EXIT_GRACE).await {
            let observation = exited(shutdown.as_deref());
            tracing::info!(?observation, "the machine's QEMU exited");
            send(observation);
            return;
        }
        tracing::warn!("the event monitor closed but QEMU still runs; reconnecting");
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

/// A negotiated event-monitor connection.
struct Connection {
    lines: Lines,
    _write: tokio::net::unix::OwnedWriteHalf,
}

/// Connects and negotiates, retrying while the socket is not up yet.
async fn connect(target: &WatchTarget) -> Result<Connection, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match try_connect(target).await {
            Ok(connection) => return Ok(connection),
            Err(why) => {
                if Instant::now() >= deadline
                    || !process::is_machine_process(target.process.pid, &target.pid_file)
                {
                    return Err(why);
                }
                tracing::debug!(reason = %why, "the event monitor is not ready yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn try_connect(target: &WatchTarget) -> Result<Connection, String> {
    let stream = UnixStream::connect(&target.events_socket)
        .await
        .map_err(|e| format!("cannot connect to {} ({e})", target.events_socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let handshake = async {
        let greeting = next_json(&mut lines).await?;
        if greeting.get("QMP").is_none() {
            return Err(format!("the monitor greeted with {greeting}"));
        }
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await
            .map_err(|e| format!("the capabilities request could not be sent ({e})"))?;
        loop {
            let message = next_json(&mut lines).await?;
            if message.get("return").is_some() {
                return Ok(());
            }
            if let Some(error) = message.get("error") {
                return Err(format!(
                    "the monitor refused capabilities negotiation: {error}"
                ));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| "the monitor did not complete the handshake in time".to_string())??;
    // The write half is kept: dropping it would half-close the socket, which QEMU takes for a
    // disconnect.
    Ok(Connection {
        lines,
        _write: write,
    })
}

async fn next_json(lines: &mut Lines) -> Result<Value, String> {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim().is_empty() => continue,
            Ok(Some(line)) => {
                return serde_json::from_str(&line)
                    .map_err(|e| format!("the monitor sent something that is not JSON ({e})"))
            }
            Ok(None) => return Err("the monitor closed the connection".to_string()),
            Err(e) => return Err(format!("the monitor connection failed ({e})")),
        }
    }
}

async fn read_events(
    mut connection: Connection,
    shutdown: &mut Option<String>,
    send: &impl Fn(Observation),
) -> ConnectionEnd {
    loop {
        let message = match next_json(&mut connection.lines).await {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(reason = %why, "the event connection ended");
                return ConnectionEnd::Closed;
            }
        };
        let Some(event) = message.get("event").and_then(Value::as_str) else {
            continue;
        };
        let data = message.get("data");
        let guest = data
            .and_then(|d| d.get("guest"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let reason = data
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let observation = match event {
            "SHUTDOWN" => {
                *shutdown = Some(reason.clone());
                Observation::Shutdown { guest, reason }
            }
            "STOP" => Observation::Paused,
            "RESUME" => Observation::Resumed,
            "RESET" => Observation::Reset { guest },
            _ => continue,
        };
        tracing::debug!(event, ?observation, "machine event");
        send(observation);
    }
}

/// The `Exited` observation for a process that is gone, given the last `SHUTDOWN` reason seen.
fn exited(shutdown: Option<&str>) -> Observation {
    match shutdown {
        Some(reason) => Observation::Exited {
            clean: true,
            reason: match reason {
                "guest-shutdown" => "guest powered off".to_string(),
                "host-qmp-quit" => "QEMU was told to quit".to_string(),
                "host-signal" => "QEMU was stopped by a signal".to_string(),
                "guest-panic" => "the guest panicked".to_string(),
                other => format!("QEMU shut down ({other})"),
            },
        },
        None => Observation::Exited {
            clean: false,
            reason: "QEMU exited without shutting down (killed or crashed)".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_without_shutdown_is_unclean() {
        assert!(matches!(
            exited(None),
            Observation::Exited { clean: false, .. }
        ));
        assert_eq!(
            exited(Some("guest-shutdown")),
            Observation::Exited {
                clean: true,
                reason: "guest powered off".into()
            }
        );
    }
}
