//! [`QemuHypervisor`]: the real [`Hypervisor`], running each machine as a daemonized
//! `qemu-system-x86_64` process driven through QMP.
//!
//! Everything about a machine lives in `<data_dir>/vms/<vm_id>/`: its disk, its two QMP monitors
//! (`qmp.sock` for commands, `events.sock` for the watcher), its serial console (`console.sock`,
//! logged to `serial.log`) and `qemu.pid`. QEMU daemonizes, so machines outlive the server; all
//! state needed to find and control them again is on disk, which makes every operation
//! idempotent and lets a restarted server [`attach`](Hypervisor::attach) to what still runs.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use qapi::qmp;
use tracing::Instrument;

use super::accel::{self, AccelSetting};
use super::process;
use super::qmp::{execute, QmpError};
use super::watch::{WatchTarget, Watchers};
use super::{
    Accel, BootSource, Hypervisor, HypervisorError, Liveness, MachineSpec, ObservationSender,
    PowerButton, RunningMachine, StopOutcome,
};
use crate::vm::MachineProcess;

/// How long one ordinary QMP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a liveness probe waits for QMP before calling the machine unresponsive.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit after `quit` before it is killed, and to vanish after SIGKILL.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// How often a graceful stop presses the power button again.
const POWER_BUTTON_REPEAT: Duration = Duration::from_secs(10);
/// How long a freshly started QEMU gets to bring its monitors up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `qemu-system-x86_64 -daemonize` may take to return.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Where QEMU is and where machines live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, as a path or a name looked up in `PATH`.
    pub qemu_binary: PathBuf,
    /// `qemu-img`, as a path or a name looked up in `PATH`.
    pub qemu_img: PathBuf,
    /// The directory machine directories are created under (`<data_dir>/vms/<vm_id>`).
    pub data_dir: PathBuf,
    /// Which accelerator to use; `auto` probes KVM once, in [`QemuHypervisor::new`].
    pub accel: AccelSetting,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            data_dir: PathBuf::from("/var/lib/voidvm"),
            accel: AccelSetting::Auto,
        }
    }
}

/// Runs machines with QEMU. Dropping it stops watching (the machines keep running).
pub struct QemuHypervisor {
    config: QemuConfig,
    accel: Accel,
    version: String,
    observations: ObservationSender,
    watchers: Watchers,
}

/// The files of one machine.
#[derive(Debug, Clone)]
struct MachinePaths {
    dir: PathBuf,
    disk: PathBuf,
    qmp: PathBuf,
    events: PathBuf,
    console: PathBuf,
    serial_log: PathBuf,
    pid_file: PathBuf,
}

impl MachinePaths {
    fn new(data_dir: &Path, vm_id: &str) -> Self {
        let dir = data_dir.join("vms").join(vm_id);
        MachinePaths {
            disk: dir.join("disk.qcow2"),
            qmp: dir.join("qmp.sock"),
            events: dir.join("events.sock"),
            console: dir.join("console.sock"),
            serial_log: dir.join("serial.log"),
            pid_file: dir.join("qemu.pid"),
            dir,
        }
    }
}

impl QemuHypervisor {
    /// Checks that both binaries run, creates the data dir, and settles the accelerator (probing
    /// KVM for `auto`, which takes up to a few seconds).
    pub async fn new(
        config: QemuConfig,
        observations: ObservationSender,
    ) -> Result<QemuHypervisor, HypervisorError> {
        let version = binary_version(&config.qemu_binary).await?;
        binary_version(&config.qemu_img).await?;

        let vms = config.data_dir.join("vms");
        std::fs::create_dir_all(&vms)
            .with_context(|| format!("could not create {}", vms.display()))?;
        let data_dir = std::fs::canonicalize(&config.data_dir)
            .with_context(|| format!("could not resolve {}", config.data_dir.display()))?;

        let accel = accel::resolve(&config.qemu_binary, config.accel).await?;
        tracing::info!(%version, %accel, data_dir = %data_dir.display(), "QEMU hypervisor ready");
        Ok(QemuHypervisor {
            config: QemuConfig { data_dir, ..config },
            accel,
            version,
            observations,
            watchers: Watchers::default(),
        })
    }

    /// The configuration in use (with `data_dir` made absolute).
    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The directory of machine `vm_id`.
    pub fn machine_dir(&self, vm_id: &str) -> PathBuf {
        self.paths(vm_id).dir
    }

    /// The file the machine's serial console is logged to.
    pub fn serial_log(&self, vm_id: &str) -> PathBuf {
        self.paths(vm_id).serial_log
    }

    /// Whether a watcher currently runs for the machine.
    pub fn is_watched(&self, vm_id: &str) -> bool {
        self.watchers.is_watched(vm_id)
    }

    fn paths(&self, vm_id: &str) -> MachinePaths {
        MachinePaths::new(&self.config.data_dir, vm_id)
    }

    /// The paths of a machine whose id has been checked.
    fn checked_paths(&self, vm_id: &str) -> Result<MachinePaths, HypervisorError> {
        validate_vm_id(vm_id)?;
        let paths = self.paths(vm_id);
        for socket in [&paths.qmp, &paths.events, &paths.console] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(HypervisorError::Permanent(format!(
                    "the socket path {} is too long for a unix socket; use a shorter data dir",
                    socket.display()
                )));
            }
        }
        Ok(paths)
    }

    async fn create_disk(
        &self,
        spec: &MachineSpec,
        paths: &MachinePaths,
    ) -> Result<(), HypervisorError> {
        if spec.disk_gib == 0 {
            return Err(HypervisorError::Permanent(
                "a machine's disk must be at least 1 GiB".to_string(),
            ));
        }
        let tmp = paths.dir.join("disk.qcow2.partial");
        let mut cmd = tokio::process::Command::new(&self.config.qemu_img);
        cmd.args(["create", "-q", "-f", "qcow2"]);
        if let BootSource::BaseDisk { path } = &spec.boot {
            let base = std::fs::canonicalize(path).map_err(|e| {
                HypervisorError::Permanent(format!(
                    "the base image {} cannot be used ({e})",
                    path.display()
                ))
            })?;
            let format = self.image_format(&base).await?;
            cmd.arg("-b").arg(&base).arg("-F").arg(format);
        }
        cmd.arg(&tmp).arg(format!("{}G", spec.disk_gib));
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .context("could not run qemu-img")?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(HypervisorError::Permanent(format!(
                "qemu-img could not create the disk: {}",
                stderr_summary(&output.stderr)
            )));
        }
        std::fs::rename(&tmp, &paths.disk).context("could not move the new disk into place")?;
        Ok(())
    }

    async fn image_format(&self, image: &Path) -> Result<String, HypervisorError> {
        let output = tokio::process::Command::new(&self.config.qemu_img)
            .args(["info", "--output=json", "-U"])
            .arg(image)
            .stdin(Stdio::null())
            .output()
            .await
            .context("could not run qemu-img")?;
        if !output.status.success() {
            return Err(HypervisorError::Permanent(format!(
                "qemu-img cannot read the base image {}: {}",
                image.display(),
                stderr_summary(&output.stderr)
            )));
        }
        let info: serde_json::Value = serde_json::from_slice(&output.stdout)
            .context("qemu-img info printed something that is not JSON")?;
        info.get("format")
            .and_then(|f| f.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                HypervisorError::Permanent(format!(
                    "qemu-img does not know the format of {}",
                    image.display()
                ))
            })
    }

    fn qemu_args(&self, spec: &MachineSpec, paths: &MachinePaths) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "-daemonize",
            "-nodefaults",
            "-display",
            "none",
            "-vga",
            "none",
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
            format!("q35,accel={}", self.accel),
            "-cpu".to_string(),
            self.accel.cpu_model().to_string(),
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
            ",format=qcow2,if=virtio".as_ref(),
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

    /// Makes sure a watcher runs for a live machine and waits until it is connected.
    async fn ensure_watched(
        &self,
        vm_id: &str,
        process: MachineProcess,
        paths: &MachinePaths,
    ) -> Result<(), HypervisorError> {
        let pid = process.pid;
        let target = WatchTarget {
            vm_id: vm_id.to_string(),
            process,
            pid_file: paths.pid_file.clone(),
            events_socket: paths.events.clone(),
        };
        let Some(ready) = self.watchers.ensure(target, self.observations.clone()) else {
            return Ok(());
        };
        match tokio::time::timeout(STARTUP_TIMEOUT + Duration::from_secs(2), ready).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => {
                if process::is_machine_process(pid, &paths.pid_file) {
                    Err(HypervisorError::Transient(format!(
                        "the machine cannot be watched: {why}"
                    )))
                } else {
                    Err(HypervisorError::NotRunning)
                }
            }
            Ok(Err(_)) | Err(_) => Err(HypervisorError::Transient(
                "the watcher did not connect in time".to_string(),
            )),
        }
    }

    /// Runs a QMP command on a live machine, retrying while its monitor is not up yet.
    async fn command_with_retry<C>(
        &self,
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
                Err(e) => return Err(self.command_error(e, pid, paths)),
            }
        }
    }

    /// Runs a QMP command on a machine that must be running.
    async fn command<C>(&self, vm_id: &str, command: C) -> Result<C::Ok, HypervisorError>
    where
        C: qmp::QmpCommand + 'static,
    {
        let paths = self.checked_paths(vm_id)?;
        let pid = process::live_pid(&paths.pid_file).ok_or(HypervisorError::NotRunning)?;
        execute(&paths.qmp, command, COMMAND_TIMEOUT)
            .await
            .map_err(|e| self.command_error(e, pid, &paths))
    }

    /// A failed command on a process that has since gone means the machine is not running.
    fn command_error(&self, e: QmpError, pid: u32, paths: &MachinePaths) -> HypervisorError {
        match e {
            QmpError::Unavailable(_) if !process::is_machine_process(pid, &paths.pid_file) => {
                HypervisorError::NotRunning
            }
            e => e.into(),
        }
    }

    /// `quit`, then SIGKILL if QEMU lingers; returns once the process is gone.
    async fn quit_or_kill(&self, pid: u32, paths: &MachinePaths) -> Result<(), HypervisorError> {
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

    /// The accelerator a running machine was started with, from its command line.
    fn running_accel(&self, pid: u32) -> Accel {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let has = |needle: &[u8]| {
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
        };
        if has(b"accel=kvm") {
            Accel::Kvm
        } else if has(b"accel=tcg") {
            Accel::Tcg
        } else {
            self.accel
        }
    }

    async fn start_inner(&self, spec: &MachineSpec) -> Result<RunningMachine, HypervisorError> {
        let paths = self.checked_paths(&spec.vm_id)?;

        if let Some(pid) = process::live_pid(&paths.pid_file) {
            tracing::info!(pid, "the machine already runs");
            let running = process::identify(pid).ok_or(HypervisorError::Transient(
                "the machine exited while it was looked at".to_string(),
            ))?;
            self.ensure_watched(&spec.vm_id, running, &paths).await?;
            // A start that died between spawning (paused, `-S`) and `cont` left it waiting.
            let status = self
                .command_with_retry(&paths, pid, qmp::query_status {})
                .await?;
            if matches!(status.status, qmp::RunState::prelaunch) {
                self.command_with_retry(&paths, pid, qmp::cont {}).await?;
            }
            return Ok(RunningMachine {
                process: running,
                accel: self.running_accel(pid),
                already_running: true,
            });
        }

        // The disk is the provision job's; a start never makes one (a missing disk is an error).
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
        let _ = std::fs::remove_file(&paths.pid_file);

        let args = self.qemu_args(spec, &paths);
        tracing::debug!(?args, "spawning QEMU");
        let spawn = tokio::process::Command::new(&self.config.qemu_binary)
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
                    self.config.qemu_binary.display()
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
        let pid = process::live_pid(&paths.pid_file).ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "QEMU exited right after starting: {}",
                stderr_summary(&output.stderr)
            ))
        })?;
        let running = process::identify(pid).ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "QEMU exited right after starting: {}",
                stderr_summary(&output.stderr)
            ))
        })?;
        tracing::info!(pid, accel = %self.accel, "QEMU started");

        let started = async {
            self.ensure_watched(&spec.vm_id, running, &paths).await?;
            self.command_with_retry(&paths, pid, qmp::cont {}).await
        };
        if let Err(e) = started.await {
            tracing::warn!(error = %crate::telemetry::chain(&e), "the new machine could not be started; killing it");
            // The job reports the failure; the exit of a process nobody recorded is not news.
            self.watchers.forget(&spec.vm_id, running);
            let _ = self.quit_or_kill(pid, &paths).await;
            return Err(e);
        }
        Ok(RunningMachine {
            process: running,
            accel: self.accel,
            already_running: false,
        })
    }

    /// Presses the power button, again every [`POWER_BUTTON_REPEAT`] (a guest still booting
    /// misses a press, as OpenStack's clean shutdown also allows for), until the guest is off or
    /// `timeout` has passed. True when the guest powered itself off.
    async fn power_down(&self, pid: u32, paths: &MachinePaths, timeout: Duration) -> bool {
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

    async fn stop_inner(
        &self,
        vm_id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<StopOutcome, HypervisorError> {
        let paths = self.checked_paths(vm_id)?;
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
            } else if self.power_down(pid, &paths, timeout).await {
                return Ok(StopOutcome::Graceful);
            }
        }
        self.quit_or_kill(pid, &paths).await?;
        Ok(StopOutcome::Forced)
    }
}

#[async_trait]
impl Hypervisor for QemuHypervisor {
    async fn provision(&self, spec: &MachineSpec) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("provision", vm_id = %spec.vm_id);
        async {
            let paths = self.checked_paths(&spec.vm_id)?;
            std::fs::create_dir_all(&paths.dir)
                .with_context(|| format!("could not create {}", paths.dir.display()))?;
            if paths.disk.exists() {
                return Ok(());
            }
            self.create_disk(spec, &paths).await?;
            tracing::info!(disk = %paths.disk.display(), "disk created");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn start(&self, spec: &MachineSpec) -> Result<RunningMachine, HypervisorError> {
        let span = tracing::info_span!("start", vm_id = %spec.vm_id);
        self.start_inner(spec).instrument(span).await
    }

    async fn stop(
        &self,
        vm_id: &str,
        force: bool,
        timeout: Duration,
    ) -> Result<StopOutcome, HypervisorError> {
        let span = tracing::info_span!("stop", vm_id = %vm_id, force);
        self.stop_inner(vm_id, force, timeout)
            .instrument(span)
            .await
    }

    async fn power_button(&self, vm_id: &str) -> Result<PowerButton, HypervisorError> {
        let span = tracing::info_span!("power_button", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
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
                Err(_) if !process::is_machine_process(pid, &paths.pid_file) => {
                    Ok(PowerButton::NotRunning)
                }
                Err(e) => Err(self.command_error(e, pid, &paths)),
            }
        }
        .instrument(span)
        .await
    }

    async fn pause(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("pause", vm_id = %vm_id);
        self.command(vm_id, qmp::stop {}).instrument(span).await?;
        Ok(())
    }

    async fn resume(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("resume", vm_id = %vm_id);
        self.command(vm_id, qmp::cont {}).instrument(span).await?;
        Ok(())
    }

    async fn reset(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("reset", vm_id = %vm_id);
        self.command(vm_id, qmp::system_reset {})
            .instrument(span)
            .await?;
        Ok(())
    }

    async fn destroy(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("destroy", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            if let Some(pid) = process::live_pid(&paths.pid_file) {
                self.quit_or_kill(pid, &paths).await?;
            }
            match std::fs::remove_dir_all(&paths.dir) {
                Ok(()) => {
                    tracing::info!("machine destroyed");
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(anyhow::Error::new(e)
                    .context(format!("could not remove {}", paths.dir.display()))
                    .into()),
            }
        }
        .instrument(span)
        .await
    }

    async fn probe(&self, vm_id: &str) -> Result<Liveness, HypervisorError> {
        let paths = self.checked_paths(vm_id)?;
        let Some(pid) = process::live_pid(&paths.pid_file) else {
            return Ok(Liveness::NotRunning);
        };
        match execute(&paths.qmp, qmp::query_status {}, PROBE_TIMEOUT).await {
            Ok(status) => Ok(Liveness::Running {
                pid,
                paused: !status.running,
            }),
            Err(e) => {
                if process::is_machine_process(pid, &paths.pid_file) {
                    tracing::debug!(vm_id, error = %crate::telemetry::chain(&e), "the machine does not answer");
                    Ok(Liveness::Unresponsive { pid })
                } else {
                    Ok(Liveness::NotRunning)
                }
            }
        }
    }

    async fn attach(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("attach", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            let pid = process::live_pid(&paths.pid_file).ok_or(HypervisorError::NotRunning)?;
            let running = process::identify(pid).ok_or(HypervisorError::NotRunning)?;
            self.ensure_watched(vm_id, running, &paths).await
        }
        .instrument(span)
        .await
    }

    fn pid(&self, vm_id: &str) -> Option<u32> {
        process::live_pid(&self.paths(vm_id).pid_file)
    }

    fn accel(&self) -> Accel {
        self.accel
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}

/// Runs `<binary> --version` and returns its first line.
async fn binary_version(binary: &Path) -> Result<String, HypervisorError> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            HypervisorError::Permanent(format!("{} cannot be run ({e})", binary.display()))
        })?;
    if !output.status.success() {
        return Err(HypervisorError::Permanent(format!(
            "{} --version failed: {}",
            binary.display(),
            stderr_summary(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
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

/// QEMU option values separate keys with commas; a literal comma is written twice.
fn escape_commas(path: &Path) -> OsString {
    let bytes = path.as_os_str().as_encoded_bytes();
    if !bytes.contains(&b',') {
        return path.as_os_str().to_owned();
    }
    let s = path.to_string_lossy().replace(',', ",,");
    OsString::from(s)
}

/// The last meaningful lines of a tool's stderr, for an error message.
fn stderr_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "it printed no reason".to_string();
    }
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// Concatenates pieces into one command-line argument.
fn joined(parts: &[&std::ffi::OsStr]) -> OsString {
    let mut arg = OsString::new();
    for part in parts {
        arg.push(part);
    }
    arg
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
    }

    #[test]
    fn commas_are_doubled() {
        assert_eq!(
            escape_commas(Path::new("/a,b/c")),
            OsString::from("/a,,b/c")
        );
        assert_eq!(escape_commas(Path::new("/a/b")), OsString::from("/a/b"));
    }
}
