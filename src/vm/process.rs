//! Which QEMU process a VM runs, as the domain knows it.
//!
//! A pid alone does not name a process for long: a restart replaces the VM's process within
//! milliseconds, and what the old one did (its exit, seen a little late) must not be taken for
//! the new one's. With the process's start time (clock ticks after the host booted, field 22 of
//! `/proc/<pid>/stat`) the pair names exactly one process for the host's uptime.

use serde::{Deserialize, Serialize};

/// One QEMU process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineProcess {
    pub pid: u32,
    /// When the process started, in clock ticks after the host booted; `None` when it was not
    /// recorded (events written before version 2 of `VmStarted` and `VmRestarted`).
    pub start: Option<u64>,
}

impl MachineProcess {
    /// Whether both name the same process. An unknown start time matches on the pid alone.
    pub fn same_as(&self, other: &MachineProcess) -> bool {
        self.pid == other.pid
            && match (self.start, other.start) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, start: Option<u64>) -> MachineProcess {
        MachineProcess { pid, start }
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_another_process() {
        assert!(process(7, Some(100)).same_as(&process(7, Some(100))));
        assert!(!process(7, Some(100)).same_as(&process(7, Some(200))));
        assert!(!process(7, Some(100)).same_as(&process(8, Some(100))));
    }

    #[test]
    fn an_unknown_start_time_matches_on_the_pid() {
        assert!(process(7, None).same_as(&process(7, Some(100))));
        assert!(process(7, Some(100)).same_as(&process(7, None)));
        assert!(!process(7, None).same_as(&process(8, None)));
    }
}
