//! Integration tests of the QEMU hypervisor against real QEMU (TCG) booting the busybox guest
//! built by `scripts/setup.sh`.
//!
//! Nothing is faked: each test gets its own data dir, starts real machines, and a guard kills
//! whatever QEMU it left behind, even when the test fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use voidvm::hypervisor::{
    process, Accel, AccelSetting, BootSource, Hypervisor, ImageCatalog, Liveness, MachineEvent,
    MachineSpec, Observation, QemuConfig, QemuHypervisor, RunningMachine, StopOutcome,
};

const READY: &str = "VOIDVM-GUEST-READY";
const DEADLINE: Duration = Duration::from_secs(30);

/// A data dir that kills its machines and removes itself when dropped.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "voidvm-test-{}hv-{}-{}-{name}",
            crate::processes::test_run(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the test data dir can be created");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(vms) = std::fs::read_dir(self.path.join("vms")) {
            for vm in vms.flatten() {
                let pid_file = vm.path().join("qemu.pid");
                if let Some(pid) = process::live_pid(&pid_file) {
                    process::kill_machine(pid, &pid_file);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The busybox guest; fails the test when it has not been built.
fn guest() -> BootSource {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/images");
    let catalog = ImageCatalog::new(images.clone());
    assert!(
        catalog.present("busybox"),
        "the test guest is missing from {}: run scripts/setup.sh first",
        images.display()
    );
    let boot = catalog.resolve("busybox");
    assert!(
        matches!(boot, BootSource::Kernel { .. }),
        "busybox boots a kernel"
    );
    boot
}

fn spec(vm_id: &str, boot: BootSource) -> MachineSpec {
    MachineSpec {
        vm_id: vm_id.to_string(),
        cpu: 1,
        memory_mib: 256,
        disk_gib: 1,
        boot,
        network: Default::default(),
        seed: None,
        boot_order: Vec::new(),
        iso: None,
    }
}

async fn hypervisor(dir: &TestDir) -> (QemuHypervisor, mpsc::UnboundedReceiver<MachineEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = QemuConfig {
        qemu_binary: "qemu-system-x86_64".into(),
        qemu_img: "qemu-img".into(),
        data_dir: dir.path.clone(),
        accel: AccelSetting::Tcg,
    };
    let hv = QemuHypervisor::new(config, tx)
        .await
        .expect("the hypervisor starts (is QEMU installed? run scripts/setup.sh)");
    assert_eq!(hv.accel(), Accel::Tcg);
    assert!(hv.version().contains("QEMU"), "version: {}", hv.version());
    (hv, rx)
}

/// Provisions (the disk) and boots a machine, as a provision job and then a start job would.
async fn provision_and_start(hv: &QemuHypervisor, spec: &MachineSpec) -> RunningMachine {
    hv.provision(spec).await.expect("provision");
    hv.start(spec).await.expect("start")
}

/// Waits until the serial log holds `marker` at least `count` times.
async fn wait_for_serial(hv: &QemuHypervisor, vm_id: &str, marker: &str, count: usize) {
    let log = hv.serial_log(vm_id);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches(marker).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{marker} did not appear {count} time(s) in {}; it holds:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for an observation about `vm_id` that `want` accepts; returns it.
async fn wait_for_observation(
    rx: &mut mpsc::UnboundedReceiver<MachineEvent>,
    vm_id: &str,
    within: Duration,
    want: impl Fn(&Observation) -> bool,
) -> Observation {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(event)) => {
                if event.vm_id == vm_id && want(&event.observation) {
                    return event.observation;
                }
                seen.push(event);
            }
            Ok(None) => panic!("the observation channel closed; saw {seen:?}"),
            Err(_) => panic!("no matching observation within {within:?}; saw {seen:?}"),
        }
    }
}

/// Polls `probe` until it returns what `want` accepts.
async fn wait_for_liveness(
    hv: &QemuHypervisor,
    vm_id: &str,
    want: impl Fn(&Liveness) -> bool,
) -> Liveness {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let liveness = hv.probe(vm_id).await.expect("probe works");
        if want(&liveness) {
            return liveness;
        }
        assert!(Instant::now() < deadline, "probe stayed at {liveness:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn boots_pauses_resumes_resets_and_force_stops() {
    let boot = guest();
    let dir = TestDir::new("lifecycle");
    let (hv, mut rx) = hypervisor(&dir).await;
    let vm = "vm-lifecycle";
    let spec = spec(vm, boot);

    hv.provision(&spec).await.expect("provision");
    hv.provision(&spec)
        .await
        .expect("provision again keeps the disk");
    assert!(hv.machine_dir(vm).join("disk.qcow2").is_file());

    let running = hv.start(&spec).await.expect("start");
    assert!(!running.already_running);
    assert_eq!(running.accel, Accel::Tcg);
    assert!(hv.is_watched(vm));
    let liveness = hv.probe(vm).await.expect("probe");
    assert_eq!(
        liveness,
        Liveness::Running {
            pid: running.process.pid,
            paused: false
        }
    );
    wait_for_serial(&hv, vm, READY, 1).await;

    hv.pause(vm).await.expect("pause");
    assert_eq!(
        hv.probe(vm).await.expect("probe"),
        Liveness::Running {
            pid: running.process.pid,
            paused: true
        }
    );
    wait_for_observation(&mut rx, vm, DEADLINE, |o| *o == Observation::Paused).await;

    hv.resume(vm).await.expect("resume");
    assert_eq!(
        hv.probe(vm).await.expect("probe"),
        Liveness::Running {
            pid: running.process.pid,
            paused: false
        }
    );
    wait_for_observation(&mut rx, vm, DEADLINE, |o| *o == Observation::Resumed).await;

    hv.reset(vm).await.expect("reset");
    wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Reset { guest: false })
    })
    .await;
    wait_for_serial(&hv, vm, READY, 2).await;

    let outcome = hv
        .stop(vm, true, Duration::from_secs(30))
        .await
        .expect("force stop");
    assert_eq!(outcome, StopOutcome::Forced);
    let exited = wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Exited { .. })
    })
    .await;
    assert!(
        matches!(exited, Observation::Exited { clean: true, .. }),
        "{exited:?}"
    );
    assert_eq!(hv.probe(vm).await.expect("probe"), Liveness::NotRunning);
    assert!(matches!(
        hv.pause(vm).await,
        Err(voidvm::hypervisor::HypervisorError::NotRunning)
    ));
    assert_eq!(
        hv.stop(vm, true, Duration::from_secs(1))
            .await
            .expect("stop again"),
        StopOutcome::AlreadyStopped
    );
}

#[tokio::test]
async fn graceful_stop_powers_the_guest_off_through_acpi() {
    let boot = guest();
    let dir = TestDir::new("graceful");
    let (hv, mut rx) = hypervisor(&dir).await;
    let vm = "vm-graceful";
    provision_and_start(&hv, &spec(vm, boot)).await;
    wait_for_serial(&hv, vm, READY, 1).await;

    // `Graceful` means the guest powered itself off before the timeout, without a `quit`.
    let outcome = hv
        .stop(vm, false, Duration::from_secs(60))
        .await
        .expect("stop");
    assert_eq!(outcome, StopOutcome::Graceful);
    let shutdown = wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Shutdown { .. })
    })
    .await;
    assert!(
        matches!(shutdown, Observation::Shutdown { guest: true, .. }),
        "{shutdown:?}"
    );
    let exited = wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Exited { .. })
    })
    .await;
    assert_eq!(
        exited,
        Observation::Exited {
            clean: true,
            reason: "guest powered off".into()
        }
    );
    assert_eq!(hv.probe(vm).await.expect("probe"), Liveness::NotRunning);
}

/// A guest still booting misses the first press; the button is pressed again until it listens.
#[tokio::test]
async fn a_guest_stopped_while_it_boots_still_powers_itself_off() {
    let boot = guest();
    let dir = TestDir::new("early-stop");
    let (hv, _rx) = hypervisor(&dir).await;
    let vm = "vm-early-stop";
    provision_and_start(&hv, &spec(vm, boot)).await;
    assert!(
        !std::fs::read_to_string(hv.serial_log(vm))
            .unwrap_or_default()
            .contains(READY),
        "the guest must still be booting when the button is first pressed"
    );
    let outcome = hv
        .stop(vm, false, Duration::from_secs(60))
        .await
        .expect("stop");
    assert_eq!(outcome, StopOutcome::Graceful);
    assert!(
        std::fs::read_to_string(hv.serial_log(vm))
            .unwrap_or_default()
            .contains("VOIDVM-GUEST-POWERDOWN"),
        "the guest's own power-button handler ran"
    );
}

#[tokio::test]
async fn a_killed_qemu_is_reported_as_an_unclean_exit() {
    let boot = guest();
    let dir = TestDir::new("sigkill");
    let (hv, mut rx) = hypervisor(&dir).await;
    let vm = "vm-sigkill";
    let running = provision_and_start(&hv, &spec(vm, boot)).await;
    wait_for_serial(&hv, vm, READY, 1).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(running.process.pid).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill QEMU");
    let exited = wait_for_observation(&mut rx, vm, Duration::from_secs(2), |o| {
        matches!(o, Observation::Exited { .. })
    })
    .await;
    assert!(
        matches!(exited, Observation::Exited { clean: false, .. }),
        "{exited:?}"
    );
    assert_eq!(hv.probe(vm).await.expect("probe"), Liveness::NotRunning);
    assert_eq!(
        hv.stop(vm, false, Duration::from_secs(1))
            .await
            .expect("stop"),
        StopOutcome::AlreadyStopped
    );
}

#[tokio::test]
async fn destroy_removes_a_running_blank_disk_machine() {
    let dir = TestDir::new("destroy");
    let (hv, mut rx) = hypervisor(&dir).await;
    let vm = "vm-destroy";
    let running = provision_and_start(&hv, &spec(vm, BootSource::BlankDisk)).await;
    wait_for_liveness(&hv, vm, |l| {
        *l == Liveness::Running {
            pid: running.process.pid,
            paused: false,
        }
    })
    .await;

    hv.destroy(vm).await.expect("destroy");
    assert!(!hv.machine_dir(vm).exists());
    assert!(!process::is_machine_process(
        running.process.pid,
        &hv.machine_dir(vm).join("qemu.pid")
    ));
    wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Exited { .. })
    })
    .await;
    assert_eq!(hv.probe(vm).await.expect("probe"), Liveness::NotRunning);
    hv.destroy(vm).await.expect("destroy again");
}

#[tokio::test]
async fn a_start_never_makes_the_disk() {
    let dir = TestDir::new("nodisk");
    let (hv, _rx) = hypervisor(&dir).await;
    let err = hv
        .start(&spec("vm-nodisk", BootSource::BlankDisk))
        .await
        .expect_err("a machine that was never provisioned cannot start");
    assert!(!err.is_transient(), "{err}");
    assert!(!hv.machine_dir("vm-nodisk").join("disk.qcow2").exists());
}

#[tokio::test]
async fn start_is_idempotent_and_a_new_server_can_attach() {
    let boot = guest();
    let dir = TestDir::new("attach");
    let vm = "vm-attach";
    let spec = spec(vm, boot);

    let first = {
        let (hv, _rx) = hypervisor(&dir).await;
        let first = provision_and_start(&hv, &spec).await;
        let again = hv.start(&spec).await.expect("start again");
        assert!(again.already_running);
        assert_eq!(again.process.pid, first.process.pid);
        assert_eq!(again.accel, Accel::Tcg);
        first
        // The hypervisor is dropped here, as in a server restart; the machine keeps running.
    };

    let (hv, mut rx) = hypervisor(&dir).await;
    assert!(!hv.is_watched(vm));
    assert_eq!(
        hv.probe(vm).await.expect("probe"),
        Liveness::Running {
            pid: first.process.pid,
            paused: false
        }
    );
    hv.attach(vm).await.expect("attach");
    hv.attach(vm).await.expect("attach again");
    assert!(hv.is_watched(vm));
    wait_for_serial(&hv, vm, READY, 1).await;

    hv.pause(vm).await.expect("pause");
    wait_for_observation(&mut rx, vm, DEADLINE, |o| *o == Observation::Paused).await;
    hv.resume(vm).await.expect("resume");
    wait_for_observation(&mut rx, vm, DEADLINE, |o| *o == Observation::Resumed).await;
    // One watcher only: the pause was reported once.
    let extra = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(extra.is_err(), "unexpected extra observation {extra:?}");

    let restarted = hv.start(&spec).await.expect("start after attach");
    assert!(restarted.already_running);
    assert_eq!(restarted.process.pid, first.process.pid);

    assert_eq!(
        hv.stop(vm, false, Duration::from_secs(30))
            .await
            .expect("stop"),
        StopOutcome::Graceful
    );
    wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Exited { clean: true, .. })
    })
    .await;
}

const CHILD_DIR_VAR: &str = "VOIDVM_HV_TEST_CHILD_DIR";

/// Not a test on its own: the "server" process the next test SIGKILLs. It starts a machine in
/// the data dir it is given, reports the pid, and waits to be killed.
#[tokio::test]
#[ignore = "run by machines_survive_a_killed_server as a child process"]
async fn server_child_helper() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let hv = QemuHypervisor::new(
        QemuConfig {
            qemu_binary: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            data_dir: dir.into(),
            accel: AccelSetting::Tcg,
        },
        tx,
    )
    .await
    .expect("the child's hypervisor starts");
    let running = provision_and_start(&hv, &spec("vm-survivor", guest())).await;
    println!("STARTED {}", running.process.pid);
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test]
async fn machines_survive_a_killed_server() {
    let boot = guest();
    let dir = TestDir::new("survive");
    let vm = "vm-survivor";
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "hypervisor::server_child_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR_VAR, &dir.path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child server spawns");
    let stdout = child.stdout.take().expect("the child's stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let pid = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("the child's output") {
            if let Some(pid) = line.strip_prefix("STARTED ") {
                return pid.trim().parse::<u32>().expect("a pid");
            }
        }
        panic!("the child server exited without starting the machine")
    })
    .await
    .expect("the child server started the machine in time");

    let child_pid = child.id().expect("the child runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child_pid).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the child server");
    let _ = child.wait().await;

    let (hv, mut rx) = hypervisor(&dir).await;
    let pid_file = hv.machine_dir(vm).join("qemu.pid");
    assert!(
        process::is_machine_process(pid, &pid_file),
        "QEMU died with its server"
    );
    hv.attach(vm).await.expect("attach");
    let running = provision_and_start(&hv, &spec(vm, boot)).await;
    assert!(running.already_running);
    assert_eq!(running.process.pid, pid);
    wait_for_serial(&hv, vm, READY, 1).await;
    assert_eq!(
        hv.stop(vm, true, Duration::from_secs(5))
            .await
            .expect("stop"),
        StopOutcome::Forced
    );
    let exited = wait_for_observation(&mut rx, vm, DEADLINE, |o| {
        matches!(o, Observation::Exited { .. })
    })
    .await;
    assert_eq!(
        exited,
        Observation::Exited {
            clean: true,
            reason: "QEMU was told to quit".into()
        }
    );
}
