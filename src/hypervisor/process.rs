//! Finding a machine's QEMU process and telling whether it is still alive.
//!
//! QEMU daemonizes, so VoidVM is never its parent and cannot `wait` for it: the only handle is
//! the pid QEMU writes to `qemu.pid`. A pid alone lies (the process may be a zombie nobody reaps,
//! or the number may have been reused by another program), so a pid counts as this machine's
//! QEMU only when `/proc` shows a live process whose command line names this machine's pid file.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::vm::MachineProcess;

/// How often exit waits look at `/proc`.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Reads the pid QEMU wrote, if any.
pub fn read_pid_file(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 0)
}

/// Whether `pid` is a live (non-zombie) process whose command line contains `pid_file` as an
/// argument, i.e. the QEMU started for this machine.
pub fn is_machine_process(pid: u32, pid_file: &Path) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last `)`.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X") | Some("x")) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let wanted = pid_file.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

/// When process `pid` started, in clock ticks after the host booted (field 22 of its `stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm's closing parenthesis start at field 3 (the state).
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Names the live process `pid` (its pid and start time), or none when it is gone.
pub fn identify(pid: u32) -> Option<MachineProcess> {
    start_time(pid).map(|start| MachineProcess {
        pid,
        start: Some(start),
    })
}

/// The pid of this machine's live QEMU, if there is one.
pub fn live_pid(pid_file: &Path) -> Option<u32> {
    read_pid_file(pid_file).filter(|pid| is_machine_process(*pid, pid_file))
}

/// Waits until the process is gone (or a zombie); true when it went within `timeout`.
pub async fn wait_for_exit(pid: u32, pid_file: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_machine_process(pid, pid_file) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Sends SIGKILL to the machine's QEMU, after checking once more that the pid is still ours.
pub fn kill_machine(pid: u32, pid_file: &Path) {
    if !is_machine_process(pid, pid_file) {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGKILL) {
        tracing::warn!(pid, error = %crate::telemetry::chain(&e), "QEMU could not be killed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_not_a_machine() {
        let me = std::process::id();
        assert!(!is_machine_process(me, Path::new("/nonexistent/qemu.pid")));
    }

    #[test]
    fn a_process_is_named_by_its_pid_and_start_time() {
        let me = std::process::id();
        let named = identify(me).expect("this process is alive");
        assert_eq!(named.pid, me);
        assert_eq!(identify(me), Some(named), "the start time does not change");
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn missing_pid_file_has_no_pid() {
        assert_eq!(read_pid_file(Path::new("/nonexistent/qemu.pid")), None);
    }
}
