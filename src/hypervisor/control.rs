//! Controlling a machine's live QEMU process through its QMP command monitor: one command, a
//! command retried while the monitor comes up, the power button (once, or pressed until the guest
//! is off), `quit` with SIGKILL behind it, and a liveness probe.
//!
//! Every function here is told the machine's files and, where it acts on a process, the pid it
//! means; a failure on a process that has since gone is reported as
//! [`HypervisorError::NotRunning`], which is what it is.

use std::time::{Duration, Instant};

use qapi::qmp;

use super::paths::MachinePaths;
use super::process;
use super::qmp::{execute, QmpError};
use super::{HypervisorError, Liveness, PowerButton, StopOutcome};

/// How long one ordinary QMP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a liveness probe waits for QMP before calling the machine unresponsive.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit after `quit` before it is killed, and to vanish after SIGKILL.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How often a graceful stop presses the power button again.
const POWER_BUTTON_REPEAT: Duration = Duration::from_secs(10);
/// How long a freshly started QEMU gets to bring its monitors up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a QMP command on a live machine, retrying while its monitor is not up yet.
pub async fn command_with_retry<C>(
    paths: &MachinePaths,
    pid: u32,
    command: C,
) -> Result<C::Ok, HypervisorError>
where
    C: qmp::QmpCommand + Clone + 'static,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match execute(&paths.qmp, command.clone(), COMMAND_TIMEOUT).await {
            Ok(ok) => return Ok(ok),
            Err(QmpError::Unavailable(why)) if Instant::now() < deadline => {
                if !process::is_machine_process(pid, &paths.pid_file) {
                    return Err(HypervisorError::NotRunning);
                }
                tracing::debug!(reason = %why, "the QMP monitor is not up yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(command_error(e, pid, paths)),
        }
    }
}

/// Runs a QMP command on a machine that must be running.
pub async fn command<C>(paths: &MachinePaths, command: C) -> Result<C::Ok, HypervisorError>
where
    C: qmp::QmpCommand + 'static,
{
    let pid = process::live_pid(&paths.pid_file).ok_or(HypervisorError::NotRunning)?;
    execute(&paths.qmp, command, COMMAND_TIMEOUT)
        .await
        .map_err(|e| command_error(e, pid, paths))
}

/// A failed command on a process that has since gone means the machine is not running.
fn command_error(e: QmpError, pid: u32, paths: &MachinePaths) -> HypervisorError {
    match e {
        QmpError::Unavailable(_) if !process::is_machine_process(pid, &paths.pid_file) => {
            HypervisorError::NotRunning
        }
        e => e.into(),
    }
}

/// `quit`, then SIGKILL if QEMU lingers; returns once the process is gone.
pub async fn quit_or_kill(pid: u32, paths: &MachinePaths) -> Result<(), HypervisorError> {
    if let Err(e) = execute(&paths.qmp, qmp::quit {}, COMMAND_TIMEOUT).await {
        // `quit` often loses its answer to the exit itself.
        tracing::debug!(error = %crate::telemetry::chain(&e), "quit got no answer");
    }
    if process::wait_for_exit(pid, &paths.pid_file, QUIT_GRACE).await {
        return Ok(());
    }
    tracing::warn!(pid, "QEMU ignored quit; killing it");
    process::kill_machine(pid, &paths.pid_file);
    if process::wait_for_exit(pid, &paths.pid_file, QUIT_GRACE).await {
        Ok(())
    } else {
        Err(HypervisorError::Transient(format!(
            "QEMU (pid {pid}) is still alive after SIGKILL"
        )))
    }
}

/// Presses the power button, again every [`POWER_BUTTON_REPEAT`] (a guest still booting misses
/// a press, as OpenStack's clean shutdown also allows for), until the guest is off or `timeout`
/// has passed. True when the guest powered itself off.
async fn power_down(pid: u32, paths: &MachinePaths, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut presses = 0u32;
    loop {
        if let Err(e) = execute(&paths.qmp, qmp::system_powerdown {}, COMMAND_TIMEOUT).await {
            if !process::is_machine_process(pid, &paths.pid_file) {
                return true;
            }
            tracing::warn!(error = %crate::telemetry::chain(&e), presses, "the power button could not be pressed; quitting");
            return false;
        }
        presses += 1;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if process::wait_for_exit(pid, &paths.pid_file, left.min(POWER_BUTTON_REPEAT)).await {
            tracing::info!(presses, "the guest powered off");
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                timeout_s = timeout.as_secs_f64(),
                presses,
                "the guest ignored the power button; quitting it"
            );
            return false;
        }
    }
}

/// ACPI power-down until `timeout`, then `quit`; `force` (or a paused machine) quits at once.
pub async fn stop(
    paths: &MachinePaths,
    force: bool,
    timeout: Duration,
) -> Result<StopOutcome, HypervisorError> {
    let Some(pid) = process::live_pid(&paths.pid_file) else {
        return Ok(StopOutcome::AlreadyStopped);
    };
    if !force {
        let paused = match execute(&paths.qmp, qmp::query_status {}, COMMAND_TIMEOUT).await {
            Ok(status) => !status.running,
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "the machine's status is unknown; asking it to power off anyway");
                false
            }
        };
        if paused {
            tracing::info!("the machine is paused and cannot answer ACPI; quitting it");
        } else if power_down(pid, paths, timeout).await {
            return Ok(StopOutcome::Graceful);
        }
    }
    quit_or_kill(pid, paths).await?;
    Ok(StopOutcome::Forced)
}

/// One press of the power button, unless nothing runs or the machine is paused.
pub async fn power_button(paths: &MachinePaths) -> Result<PowerButton, HypervisorError> {
    let Some(pid) = process::live_pid(&paths.pid_file) else {
        return Ok(PowerButton::NotRunning);
    };
    match execute(&paths.qmp, qmp::query_status {}, COMMAND_TIMEOUT).await {
        Ok(status) if !status.running => return Ok(PowerButton::Paused),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "the machine's status is unknown; pressing the power button anyway");
        }
    }
    match execute(&paths.qmp, qmp::system_powerdown {}, COMMAND_TIMEOUT).await {
        Ok(_) => Ok(PowerButton::Pressed),
        Err(_) if !process::is_machine_process(pid, &paths.pid_file) => Ok(PowerButton::NotRunning),
        Err(e) => Err(command_error(e, pid, paths)),
    }
}

/// Whether machine `vm_id` runs and its monitor answers within [`PROBE_TIMEOUT`].
pub async fn probe(vm_id: &str, paths: &MachinePaths) -> Liveness {
    let Some(pid) = process::live_pid(&paths.pid_file) else {
        return Liveness::NotRunning;
    };
    match execute(&paths.qmp, qmp::query_status {}, PROBE_TIMEOUT).await {
        Ok(status) => Liveness::Running {
            pid,
            paused: !status.running,
        },
        Err(e) => {
            if process::is_machine_process(pid, &paths.pid_file) {
                tracing::debug!(vm_id, error = %crate::telemetry::chain(&e), "the machine does not answer");
                Liveness::Unresponsive { pid }
            } else {
                Liveness::NotRunning
            }
        }
    }
}
