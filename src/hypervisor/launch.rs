//! Bringing a machine's QEMU process into the world: checking that what it boots from is there,
//! running `qemu-system-x86_64` with the machine's [command line](super::command_line) until it
//! has daemonized, and naming the process it left behind (its pid and start time). The new
//! machine is still paused (`-S`): watching it and letting it run is the caller's part.
//!
//! Also tells, for a machine found already running, which accelerator it was started with.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::command_line::{accel_in, qemu_args};
use super::paths::MachinePaths;
use super::process;
use super::tools::stderr_summary;
use super::{Accel, BootSource, HypervisorError, MachineSpec};
use crate::vm::MachineProcess;

/// How long `qemu-system-x86_64 -daemonize` may take to return.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails permanently unless the machine was provisioned (a start never makes a disk) and its
/// kernel and initrd, if it boots one, exist.
pub fn check_bootable(spec: &MachineSpec, paths: &MachinePaths) -> Result<(), HypervisorError> {
    if !paths.disk.is_file() {
        return Err(HypervisorError::Permanent(format!(
            "the machine has no disk ({}); it was never provisioned",
            paths.disk.display()
        )));
    }
    if let BootSource::Kernel { kernel, initrd, .. } = &spec.boot {
        for file in std::iter::once(kernel).chain(initrd.iter()) {
            if !file.is_file() {
                return Err(HypervisorError::Permanent(format!(
                    "the boot file {} does not exist",
                    file.display()
                )));
            }
        }
    }
    Ok(())
}

/// Runs QEMU for `spec` until it daemonizes and returns its (paused) process.
pub async fn spawn(
    qemu_binary: &Path,
    accel: Accel,
    spec: &MachineSpec,
    paths: &MachinePaths,
) -> Result<MachineProcess, HypervisorError> {
    let _ = std::fs::remove_file(&paths.pid_file);

    let args = qemu_args(spec, paths, accel);
    tracing::debug!(?args, "spawning QEMU");
    let spawn = tokio::process::Command::new(qemu_binary)
        .args(&args)
        .current_dir(&paths.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .output();
    let output = match tokio::time::timeout(SPAWN_TIMEOUT, spawn).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
            return Err(HypervisorError::Permanent(format!(
                "{} was not found",
                qemu_binary.display()
            )))
        }
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("could not run QEMU").into()),
        Err(_) => {
            return Err(HypervisorError::Transient(
                "QEMU did not finish daemonizing in time".to_string(),
            ))
        }
    };
    if !output.status.success() {
        return Err(HypervisorError::Permanent(format!(
            "QEMU refused to start the machine: {}",
            stderr_summary(&output.stderr)
        )));
    }
    let exited = || {
        HypervisorError::Permanent(format!(
            "QEMU exited right after starting: {}",
            stderr_summary(&output.stderr)
        ))
    };
    let pid = process::live_pid(&paths.pid_file).ok_or_else(exited)?;
    let running = process::identify(pid).ok_or_else(exited)?;
    tracing::info!(pid, %accel, "QEMU started");
    Ok(running)
}

/// The accelerator a running machine was started with, from its command line; `fallback` when
/// the command line does not say (or cannot be read).
pub fn running_accel(pid: u32, fallback: Accel) -> Accel {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    accel_in(&cmdline).unwrap_or(fallback)
}
