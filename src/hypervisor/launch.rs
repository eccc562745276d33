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

/// Fails permanently unless the machine fits the host's memory, was provisioned (a start never
/// makes a disk), and its kernel and initrd, if it boots one, exist.
pub fn check_bootable(spec: &MachineSpec, paths: &MachinePaths) -> Result<(), HypervisorError> {
    check_fits(spec.memory_mib, host_memory_mib())?;
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

/// The host's memory in all, in MiB (`None` when it cannot be read).
fn host_memory_mib() -> Option<u64> {
    let mut system = sysinfo::System::new();
    system.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
    Some(system.total_memory() / (1024 * 1024)).filter(|mib| *mib > 0)
}

/// A machine that asks for more memory than the host has in all can never start: QEMU could not
/// allocate it. Said plainly, before QEMU is spawned, instead of QEMU's allocation error. (Several
/// machines that fit one by one may still overcommit the host together, as with any hypervisor.)
fn check_fits(memory_mib: u64, host_mib: Option<u64>) -> Result<(), HypervisorError> {
    match host_mib {
        Some(host) if memory_mib > host => Err(HypervisorError::Unfit(format!(
            "it asks for {memory_mib} MiB of memory and this host has {host} MiB in \
             all; give it less memory (PATCH its memory while it is stopped)"
        ))),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_larger_than_the_host_is_refused_before_qemu_runs() {
        let refused = check_fits(32 * 1024, Some(16 * 1024)).unwrap_err();
        assert!(
            refused.to_string().contains("32768 MiB") && refused.to_string().contains("16384 MiB"),
            "{refused}"
        );
        assert!(!refused.is_transient());
        assert!(
            refused.is_the_machines_own(),
            "the user's to fix, not the server's"
        );
    }

    #[test]
    fn a_machine_that_fits_or_an_unknown_host_goes_on() {
        assert!(check_fits(16 * 1024, Some(16 * 1024)).is_ok());
        assert!(check_fits(512, Some(16 * 1024)).is_ok());
        assert!(check_fits(1 << 30, None).is_ok());
    }

    #[test]
    fn this_host_has_memory() {
        assert!(host_memory_mib().is_some_and(|mib| mib >= 64));
    }
}
