//! [`MachinePaths`]: where each file of one machine lives.
//!
//! Everything about a machine is in `<data_dir>/vms/<vm_id>/`: its disk, its two QMP monitors
//! (`qmp.sock` for commands, `events.sock` for the watcher), its serial console (`console.sock`,
//! logged to `serial.log`), its graphical console (QEMU's VNC server on `vnc.sock`), `qemu.pid` and the NoCloud seed `seed.iso`. Since the VM id names a directory and the sockets must
//! fit in `sockaddr_un`, both are checked here before any file is touched.

use std::path::{Path, PathBuf};

use super::HypervisorError;

/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// The files of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePaths {
    /// The machine's directory; QEMU runs with it as its working directory.
    pub dir: PathBuf,
    /// The machine's own qcow2 disk.
    pub disk: PathBuf,
    /// The QMP monitor for commands.
    pub qmp: PathBuf,
    /// The QMP monitor the watcher reads events from.
    pub events: PathBuf,
    /// The serial console's socket.
    pub console: PathBuf,
    /// The file the serial console is logged to.
    pub serial_log: PathBuf,
    /// QEMU's VNC server (never a TCP port).
    pub vnc: PathBuf,
    /// Where QEMU writes its pid; its path also identifies the machine's process (see `process`).
    pub pid_file: PathBuf,
    /// The NoCloud seed (ISO 9660, labelled `cidata`), written at each start.
    pub seed_iso: PathBuf,
}

impl MachinePaths {
    /// The paths of machine `vm_id` under `data_dir`, unchecked.
    pub fn new(data_dir: &Path, vm_id: &str) -> Self {
        let dir = data_dir.join("vms").join(vm_id);
        MachinePaths {
            disk: dir.join("disk.qcow2"),
            qmp: dir.join("qmp.sock"),
            events: dir.join("events.sock"),
            console: dir.join("console.sock"),
            serial_log: dir.join("serial.log"),
            vnc: dir.join("vnc.sock"),
            pid_file: dir.join("qemu.pid"),
            seed_iso: dir.join("seed.iso"),
            dir,
        }
    }

    /// The paths of a machine whose id names a plain directory and whose sockets fit in a unix
    /// socket address.
    pub fn checked(data_dir: &Path, vm_id: &str) -> Result<Self, HypervisorError> {
        validate_vm_id(vm_id)?;
        let paths = MachinePaths::new(data_dir, vm_id);
        for socket in [&paths.qmp, &paths.events, &paths.console, &paths.vnc] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(HypervisorError::Permanent(format!(
                    "the socket path {} is too long for a unix socket; use a shorter data dir",
                    socket.display()
                )));
            }
        }
        Ok(paths)
    }
}

/// A VM id names a directory, so it must be a plain, short file name.
fn validate_vm_id(vm_id: &str) -> Result<(), HypervisorError> {
    let ok = !vm_id.is_empty()
        && vm_id.len() <= 64
        && !vm_id.starts_with('.')
        && vm_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HypervisorError::Permanent(format!(
            "'{vm_id}' cannot name a machine directory"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_are_plain_names() {
        assert!(validate_vm_id("vm-abc_123").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(validate_vm_id(bad).is_err(), "{bad} should be refused");
        }
        assert!(validate_vm_id(&"a".repeat(64)).is_ok());
        assert!(validate_vm_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn a_machine_lives_in_its_own_directory() {
        let paths = MachinePaths::checked(Path::new("/data"), "vm-1").expect("a plain id");
        assert_eq!(paths.dir, Path::new("/data/vms/vm-1"));
        assert_eq!(paths.disk, Path::new("/data/vms/vm-1/disk.qcow2"));
        assert_eq!(paths.qmp, Path::new("/data/vms/vm-1/qmp.sock"));
        assert_eq!(paths.events, Path::new("/data/vms/vm-1/events.sock"));
        assert_eq!(paths.console, Path::new("/data/vms/vm-1/console.sock"));
        assert_eq!(paths.serial_log, Path::new("/data/vms/vm-1/serial.log"));
        assert_eq!(paths.vnc, Path::new("/data/vms/vm-1/vnc.sock"));
        assert_eq!(paths.pid_file, Path::new("/data/vms/vm-1/qemu.pid"));
    }

    #[test]
    fn sockets_must_fit_in_a_unix_address() {
        let long = PathBuf::from("/").join("d".repeat(90));
        let Err(HypervisorError::Permanent(why)) = MachinePaths::checked(&long, "vm-1") else {
            panic!("a data dir this long leaves no room for the sockets");
        };
        assert!(why.contains("too long"), "{why}");
        assert!(MachinePaths::checked(&long, "../vm-1").is_err());
    }
}
