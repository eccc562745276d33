//! The `qemu-system-x86_64` command line of a machine, as a pure function.
//!
//! What QEMU is told decides how VoidVM finds and controls the machine afterwards (it daemonizes
//! and writes `qemu.pid`, starts paused with `-S` until the start has a watcher, and serves the two
//! QMP monitors, the serial console and the VNC display on the machine's sockets), so it is built here from the
//! spec, the machine's paths and the accelerator alone, with no I/O, and tested as such. The NIC
//! (user-mode NAT, or a tap device for a bridge) and its MAC come from the spec's network and the
//! VM's id.
//! Paths inside an option value (`-drive file=...`) have their commas doubled, so a path can
//! never add options of its own.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::paths::MachinePaths;
use super::{Accel, BootSource, MachineSpec};
use crate::vm::{mac_address, tap_name, NetworkMode, NetworkSpec};

/// The qdev id of the ISO CD-ROM, which QMP changes the medium of.
pub const ISO_DEVICE: &str = "iso-cd";

/// The block node name of the machine's own disk (its qcow2 format node), which QMP takes,
/// restores and deletes disk snapshots on and saves memory snapshots to.
pub const DISK_NODE: &str = "vd0";

/// The arguments (after the binary) that boot `spec` from `paths` with `accel`.
pub fn qemu_args(spec: &MachineSpec, paths: &MachinePaths, accel: Accel) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-daemonize",
        "-nodefaults",
        "-display",
        "none",
        "-vga",
        "std",
        "-S",
        "-pidfile",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(paths.pid_file.clone().into());
    let plain = [
        "-name".to_string(),
        spec.vm_id.clone(),
        "-machine".to_string(),
        format!("q35,accel={accel}"),
        "-cpu".to_string(),
        accel.cpu_model().to_string(),
        "-smp".to_string(),
        spec.cpu.max(1).to_string(),
        "-m".to_string(),
        format!("{}M", spec.memory_mib),
    ];
    args.extend(plain.into_iter().map(OsString::from));
    args.push("-drive".into());
    args.push(joined(&[
        "file=".as_ref(),
        &escape_commas(&paths.disk),
        ",format=qcow2,if=virtio,node-name=".as_ref(),
        DISK_NODE.as_ref(),
    ]));
    for monitor in [&paths.qmp, &paths.events] {
        args.push("-qmp".into());
        args.push(joined(&[
            "unix:".as_ref(),
            &escape_commas(monitor),
            ",server=on,wait=off".as_ref(),
        ]));
    }
    args.push("-chardev".into());
    args.push(joined(&[
        "socket,id=serial0,path=".as_ref(),
        &escape_commas(&paths.console),
        ",server=on,wait=off,logfile=".as_ref(),
        &escape_commas(&paths.serial_log),
    ]));
    args.push("-serial".into());
    args.push("chardev:serial0".into());
    // The graphical console: a VGA framebuffer served by QEMU's VNC server on a unix socket in
    // the machine's directory, never on a TCP port (VoidVM bridges it to `/vnc`).
    args.push("-vnc".into());
    args.push(joined(&["unix:".as_ref(), &escape_commas(&paths.vnc)]));
    args.extend(network_args(&spec.vm_id, &spec.network));
    // CD-ROMs on virtio-scsi (q35's AHCI would need a driver the cloud kernels lack): the ISO
    // drive, always there (empty without an ISO) so a medium can be put in while the machine
    // runs, and the NoCloud seed when there is one.
    args.push("-device".into());
    args.push("virtio-scsi-pci,id=scsi0".into());
    args.push("-drive".into());
    args.push(match &spec.iso {
        Some(iso) => joined(&[
            "if=none,id=iso,media=cdrom,readonly=on,format=raw,file=".as_ref(),
            &escape_commas(iso),
        ]),
        None => "if=none,id=iso,media=cdrom".into(),
    });
    args.push("-device".into());
    args.push(format!("scsi-cd,bus=scsi0.0,drive=iso,id={ISO_DEVICE}").into());
    if spec.seed.is_some() {
        args.push("-drive".into());
        args.push(joined(&[
            "if=none,id=seed,media=cdrom,readonly=on,format=raw,file=".as_ref(),
            &escape_commas(&paths.seed_iso),
        ]));
        args.push("-device".into());
        args.push("scsi-cd,bus=scsi0.0,drive=seed,id=seed-cd".into());
    }
    let order: String = spec.boot_order.iter().map(|d| d.qemu_letter()).collect();
    if !order.is_empty() && !matches!(spec.boot, BootSource::Kernel { .. }) {
        args.push("-boot".into());
        args.push(format!("order={order}").into());
    }
    if let BootSource::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &spec.boot
    {
        args.push("-kernel".into());
        args.push(kernel.clone().into());
        if let Some(initrd) = initrd {
            args.push("-initrd".into());
            args.push(initrd.clone().into());
        }
        args.push("-append".into());
        args.push(cmdline.into());
    }
    args
}

/// The NIC of `network`: a virtio NIC with the VM's stable MAC, on user-mode NAT with a `hostfwd`
/// per forwarded port (QEMU listens on the host port on every host address), or on the VM's tap
/// device (which QEMU opens, creating it when missing; attaching it to the bridge is the caller's
/// part, see `host_network`); nothing for `none`.
fn network_args(vm_id: &str, network: &NetworkSpec) -> Vec<OsString> {
    let netdev = match network.mode {
        NetworkMode::None => return Vec::new(),
        NetworkMode::User => {
            let mut netdev = "user,id=net0".to_string();
            for port in &network.ports {
                netdev.push_str(&format!(
                    ",hostfwd={}::{}-:{}",
                    port.protocol.as_str(),
                    port.host,
                    port.guest
                ));
            }
            netdev
        }
        NetworkMode::Bridge => format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            tap_name(vm_id)
        ),
    };
    let device = format!("virtio-net-pci,netdev=net0,mac={}", mac_address(vm_id));
    ["-netdev".to_string(), netdev, "-device".to_string(), device]
        .into_iter()
        .map(OsString::from)
        .collect()
}

/// The accelerator named in a process's command line (`/proc/<pid>/cmdline`: arguments separated
/// by NUL bytes), if any: how a machine found running was started.
pub fn accel_in(cmdline: &[u8]) -> Option<Accel> {
    let has = |needle: &[u8]| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
    };
    if has(b"accel=kvm") {
        Some(Accel::Kvm)
    } else if has(b"accel=tcg") {
        Some(Accel::Tcg)
    } else {
        None
    }
}

/// QEMU option values separate keys with commas; a literal comma is written twice.
fn escape_commas(path: &Path) -> OsString {
    let bytes = path.as_os_str().as_encoded_bytes();
    if !bytes.contains(&b',') {
        return path.as_os_str().to_owned();
    }
    let s = path.to_string_lossy().replace(',', ",,");
    OsString::from(s)
}

/// Concatenates pieces into one command-line argument.
fn joined(parts: &[&OsStr]) -> OsString {
    let mut arg = OsString::new();
    for part in parts {
        arg.push(part);
    }
    arg
}

#[cfg(test)]
mod tests;
