//! The command line's unit tests: what QEMU is told for each kind of machine.

use std::path::PathBuf;

use super::*;

fn spec(boot: BootSource) -> MachineSpec {
    MachineSpec {
        vm_id: "vm-1".to_string(),
        cpu: 2,
        memory_mib: 256,
        disk_gib: 1,
        boot,
        network: NetworkSpec {
            mode: NetworkMode::None,
            ports: Vec::new(),
            bridge: None,
        },
        seed: None,
        boot_order: Vec::new(),
        iso: None,
    }
}

fn args_of(spec: &MachineSpec, paths: &MachinePaths, accel: Accel) -> Vec<String> {
    qemu_args(spec, paths, accel)
        .into_iter()
        .map(|a| a.into_string().expect("UTF-8 in, UTF-8 out"))
        .collect()
}

/// The value following `option`, which must appear exactly once.
fn value<'a>(args: &'a [String], option: &str) -> &'a str {
    let at: Vec<usize> = (0..args.len()).filter(|i| args[*i] == option).collect();
    assert_eq!(at.len(), 1, "{option} appears once in {args:?}");
    &args[at[0] + 1]
}

/// Every value following `option`, in order.
fn values<'a>(args: &'a [String], option: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1].as_str())
        .collect()
}

fn paths() -> MachinePaths {
    MachinePaths::new(Path::new("/data"), "vm-1")
}

#[test]
fn qemu_daemonizes_paused_and_writes_its_pid() {
    let args = args_of(&spec(BootSource::BlankDisk), &paths(), Accel::Tcg);
    assert!(args.contains(&"-daemonize".to_string()));
    assert!(args.contains(&"-S".to_string()), "paused until watched");
    assert!(args.contains(&"-nodefaults".to_string()));
    assert_eq!(value(&args, "-pidfile"), "/data/vms/vm-1/qemu.pid");
    assert_eq!(value(&args, "-name"), "vm-1");
    assert_eq!(value(&args, "-display"), "none");
    assert_eq!(value(&args, "-vga"), "std");
}

#[test]
fn both_monitors_and_the_logged_console_are_on_the_machine_sockets() {
    let args = args_of(&spec(BootSource::BlankDisk), &paths(), Accel::Tcg);
    assert_eq!(
        values(&args, "-qmp"),
        [
            "unix:/data/vms/vm-1/qmp.sock,server=on,wait=off",
            "unix:/data/vms/vm-1/events.sock,server=on,wait=off",
        ]
    );
    assert_eq!(
        value(&args, "-chardev"),
        "socket,id=serial0,path=/data/vms/vm-1/console.sock,server=on,wait=off,\
         logfile=/data/vms/vm-1/serial.log"
    );
    assert_eq!(value(&args, "-serial"), "chardev:serial0");
    assert_eq!(value(&args, "-vnc"), "unix:/data/vms/vm-1/vnc.sock");
}

#[test]
fn the_disk_is_the_machine_qcow2_on_virtio() {
    let args = args_of(&spec(BootSource::BlankDisk), &paths(), Accel::Tcg);
    assert_eq!(
        values(&args, "-drive")[0],
        "file=/data/vms/vm-1/disk.qcow2,format=qcow2,if=virtio,node-name=vd0"
    );
    // A base disk is the overlay's backing file, not a second drive.
    let base = spec(BootSource::BaseDisk {
        path: PathBuf::from("/images/base.img"),
    });
    let with_base = args_of(&base, &paths(), Accel::Tcg);
    assert_eq!(values(&with_base, "-drive"), values(&args, "-drive"));
    assert!(!with_base.iter().any(|a| a.contains("base.img")));
}

#[test]
fn size_comes_from_the_spec_with_at_least_one_cpu() {
    let mut machine = spec(BootSource::BlankDisk);
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(value(&args, "-smp"), "2");
    assert_eq!(value(&args, "-m"), "256M");
    machine.cpu = 0;
    machine.memory_mib = 4096;
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(value(&args, "-smp"), "1");
    assert_eq!(value(&args, "-m"), "4096M");
}

#[test]
fn the_accelerator_picks_the_machine_and_cpu_model() {
    let machine = spec(BootSource::BlankDisk);
    let tcg = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(value(&tcg, "-machine"), "q35,accel=tcg");
    assert_eq!(value(&tcg, "-cpu"), "max");
    let kvm = args_of(&machine, &paths(), Accel::Kvm);
    assert_eq!(value(&kvm, "-machine"), "q35,accel=kvm");
    assert_eq!(value(&kvm, "-cpu"), "host");
}

#[test]
fn the_accelerator_is_read_back_from_the_command_line() {
    let machine = spec(BootSource::BlankDisk);
    for accel in [Accel::Kvm, Accel::Tcg] {
        let mut cmdline = Vec::new();
        for arg in qemu_args(&machine, &paths(), accel) {
            cmdline.extend_from_slice(arg.as_encoded_bytes());
            cmdline.push(0);
        }
        assert_eq!(accel_in(&cmdline), Some(accel));
    }
    assert_eq!(accel_in(b"qemu-system-x86_64\0-machine\0q35\0"), None);
}

#[test]
fn a_kernel_boots_with_its_initrd_and_cmdline() {
    let boot = BootSource::Kernel {
        kernel: PathBuf::from("/boot/vmlinuz"),
        initrd: Some(PathBuf::from("/boot/initrd")),
        cmdline: "console=ttyS0 quiet".to_string(),
    };
    let args = args_of(&spec(boot), &paths(), Accel::Tcg);
    assert_eq!(value(&args, "-kernel"), "/boot/vmlinuz");
    assert_eq!(value(&args, "-initrd"), "/boot/initrd");
    assert_eq!(value(&args, "-append"), "console=ttyS0 quiet");
}

#[test]
fn a_kernel_boots_without_an_initrd() {
    let boot = BootSource::Kernel {
        kernel: PathBuf::from("/boot/vmlinuz"),
        initrd: None,
        cmdline: String::new(),
    };
    let args = args_of(&spec(boot), &paths(), Accel::Tcg);
    assert_eq!(value(&args, "-kernel"), "/boot/vmlinuz");
    assert!(!args.contains(&"-initrd".to_string()));
    assert_eq!(value(&args, "-append"), "");
}

#[test]
fn a_disk_boots_without_kernel_options() {
    for boot in [
        BootSource::BlankDisk,
        BootSource::BaseDisk {
            path: PathBuf::from("/images/base.img"),
        },
    ] {
        let args = args_of(&spec(boot), &paths(), Accel::Tcg);
        for option in ["-kernel", "-initrd", "-append"] {
            assert!(!args.contains(&option.to_string()), "{option} in {args:?}");
        }
    }
}

#[test]
fn user_mode_gets_a_virtio_nic_with_a_stable_mac_and_its_forwards() {
    let mut machine = spec(BootSource::BlankDisk);
    machine.network = NetworkSpec {
        mode: NetworkMode::User,
        ports: vec![
            crate::vm::PortForward {
                guest: 80,
                host: 20080,
                protocol: crate::vm::Protocol::Tcp,
            },
            crate::vm::PortForward {
                guest: 53,
                host: 20053,
                protocol: crate::vm::Protocol::Udp,
            },
        ],
        bridge: None,
    };
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(
        value(&args, "-netdev"),
        "user,id=net0,hostfwd=tcp::20080-:80,hostfwd=udp::20053-:53"
    );
    let device = values(&args, "-device")[0];
    assert_eq!(
        device,
        format!("virtio-net-pci,netdev=net0,mac={}", mac_address("vm-1"))
    );
    assert_eq!(args_of(&machine, &paths(), Accel::Tcg), args, "stable");
    assert!(args.contains(&"-nodefaults".to_string()));
}

#[test]
fn bridge_mode_gets_a_virtio_nic_on_the_vms_own_tap() {
    let mut machine = spec(BootSource::BlankDisk);
    machine.network = NetworkSpec {
        mode: NetworkMode::Bridge,
        ports: Vec::new(),
        bridge: Some("br-test".into()),
    };
    let args = args_of(&machine, &paths(), Accel::Tcg);
    let tap = crate::vm::tap_name("vm-1");
    assert_eq!(
        value(&args, "-netdev"),
        format!("tap,id=net0,ifname={tap},script=no,downscript=no")
    );
    assert_eq!(
        values(&args, "-device")[0],
        format!("virtio-net-pci,netdev=net0,mac={}", mac_address("vm-1"))
    );
}

#[test]
fn mode_none_has_no_nic() {
    let args = args_of(&spec(BootSource::BlankDisk), &paths(), Accel::Tcg);
    assert!(!args.contains(&"-netdev".to_string()), "{args:?}");
    assert!(
        !values(&args, "-device").iter().any(|d| d.contains("net")),
        "{args:?}"
    );
}

#[test]
fn a_seed_is_a_read_only_cdrom_on_virtio_scsi() {
    let mut machine = spec(BootSource::BlankDisk);
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert!(
        !args.iter().any(|a| a.contains("seed")),
        "no seed, no seed CD-ROM"
    );
    machine.seed = Some(crate::hypervisor::seed::Seed {
        meta_data: String::new(),
        user_data: String::new(),
        network_config: None,
    });
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(
        values(&args, "-drive")[2],
        "if=none,id=seed,media=cdrom,readonly=on,format=raw,file=/data/vms/vm-1/seed.iso"
    );
    assert_eq!(
        values(&args, "-device"),
        [
            "virtio-scsi-pci,id=scsi0",
            "scsi-cd,bus=scsi0.0,drive=iso,id=iso-cd",
            "scsi-cd,bus=scsi0.0,drive=seed,id=seed-cd"
        ]
    );
}

#[test]
fn the_iso_drive_is_always_there_and_holds_the_iso_when_given() {
    let mut machine = spec(BootSource::BlankDisk);
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(values(&args, "-drive")[1], "if=none,id=iso,media=cdrom");
    machine.iso = Some(PathBuf::from("/images/tools,x/image.iso"));
    let args = args_of(&machine, &paths(), Accel::Tcg);
    assert_eq!(
        values(&args, "-drive")[1],
        "if=none,id=iso,media=cdrom,readonly=on,format=raw,file=/images/tools,,x/image.iso"
    );
}

#[test]
fn the_boot_order_maps_to_letters_unless_a_kernel_boots() {
    use crate::vm::BootDevice;
    let mut machine = spec(BootSource::BlankDisk);
    assert!(!args_of(&machine, &paths(), Accel::Tcg).contains(&"-boot".to_string()));
    machine.boot_order = vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Network];
    assert_eq!(
        value(&args_of(&machine, &paths(), Accel::Tcg), "-boot"),
        "order=dcn"
    );
    machine.boot = BootSource::Kernel {
        kernel: PathBuf::from("/boot/vmlinuz"),
        initrd: None,
        cmdline: String::new(),
    };
    assert!(!args_of(&machine, &paths(), Accel::Tcg).contains(&"-boot".to_string()));
}

#[test]
fn commas_are_doubled() {
    assert_eq!(
        escape_commas(Path::new("/a,b/c")),
        OsString::from("/a,,b/c")
    );
    assert_eq!(escape_commas(Path::new("/a/b")), OsString::from("/a/b"));
}

/// The keys of an option value, split the way QEMU does (a doubled comma is a literal one).
fn keys(value: &str) -> Vec<String> {
    value
        .replace(",,", "\u{0}")
        .split(',')
        .map(|kv| kv.split('=').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_path_with_commas_cannot_add_options() {
    let evil = MachinePaths::new(Path::new("/data,readonly=on,file=/etc/shadow"), "vm-1");
    let args = args_of(&spec(BootSource::BlankDisk), &evil, Accel::Tcg);
    let drive = values(&args, "-drive")[0];
    assert_eq!(
        drive,
        "file=/data,,readonly=on,,file=/etc/shadow/vms/vm-1/disk.qcow2,format=qcow2,if=virtio,node-name=vd0"
    );
    assert_eq!(keys(drive), ["file", "format", "if", "node-name"]);
    for qmp in values(&args, "-qmp") {
        assert_eq!(keys(qmp)[1..], ["server", "wait"], "{qmp}");
    }
    assert_eq!(
        keys(value(&args, "-chardev")),
        ["socket", "id", "path", "server", "wait", "logfile"]
    );
    // The pid file is an argument of its own, where a comma is just a comma.
    assert_eq!(
        value(&args, "-pidfile"),
        "/data,readonly=on,file=/etc/shadow/vms/vm-1/qemu.pid"
    );
}
