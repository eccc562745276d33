//! [`QemuHypervisor`]: the real [`Hypervisor`], running each machine as a daemonized
//! `qemu-system-x86_64` process driven through QMP.
//!
//! This file wires the parts together: where a machine's files are (`paths`), its disk (`disk`),
//! starting its process (`launch`, with the command line of `command_line`), acting on it through
//! QMP (`control`), putting a bridged machine's tap on its bridge (`host_network`) and watching
//! it ([`super::watch`]). QEMU daemonizes, so machines outlive the server; all state needed to find
//! and control them again is on disk, which makes every operation idempotent and lets a restarted
//! server [`attach`](Hypervisor::attach) to what still runs.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use qapi::qmp;
use tracing::Instrument;

use super::accel::{self, AccelSetting};
use super::command_line::ISO_DEVICE;
use super::control::{self, STARTUP_TIMEOUT};
use super::host_network::{self, HostNetwork, IpCommand};
use super::paths::MachinePaths;
use super::seed::{GenIsoImage, IsoWriter, SEED_LABEL};
use super::tools::binary_version;
use super::watch::{WatchTarget, Watchers};
use super::{
    disk, launch, process, Accel, Hypervisor, HypervisorError, Liveness, MachineSpec,
    ObservationSender, PowerButton, RunningMachine, StopOutcome,
};
use crate::vm::{tap_name, MachineProcess};

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
    iso_writer: Box<dyn IsoWriter>,
    host_network: Box<dyn HostNetwork>,
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
            iso_writer: Box::new(GenIsoImage),
            host_network: Box::new(IpCommand),
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
        MachinePaths::checked(&self.config.data_dir, vm_id)
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

    async fn start_inner(&self, spec: &MachineSpec) -> Result<RunningMachine, HypervisorError> {
        let paths = self.checked_paths(&spec.vm_id)?;
        let tap = tap_name(&spec.vm_id);

        if let Some(pid) = process::live_pid(&paths.pid_file) {
            tracing::info!(pid, "the machine already runs");
            let running = process::identify(pid).ok_or(HypervisorError::Transient(
                "the machine exited while it was looked at".to_string(),
            ))?;
            // A start that died before the tap was on its bridge left it off.
            if let Some(bridge) = host_network::bridge_of(self.host_network.as_ref(), spec).await? {
                self.host_network.attach_tap(&tap, &bridge).await?;
            }
            self.ensure_watched(&spec.vm_id, running, &paths).await?;
            // A start that died between spawning (paused, `-S`) and `cont` left it waiting.
            let status = control::command_with_retry(&paths, pid, qmp::query_status {}).await?;
            if matches!(status.status, qmp::RunState::prelaunch) {
                control::command_with_retry(&paths, pid, qmp::cont {}).await?;
            }
            return Ok(RunningMachine {
                process: running,
                accel: launch::running_accel(pid, self.accel),
                already_running: true,
            });
        }

        // The disk is the provision job's; a start never makes one (a missing disk is an error).
        launch::check_bootable(spec, &paths)?;
        let bridge = host_network::bridge_of(self.host_network.as_ref(), spec).await?;
        if bridge.is_some() {
            // A persistent device of the same name (left by hand) would outlive QEMU; QEMU makes
            // a fresh one that goes when it exits.
            self.host_network.delete_tap(&tap).await?;
        }
        // The seed is made anew at each start, from the settings the start was asked with.
        match &spec.seed {
            Some(seed) => {
                self.iso_writer
                    .write(SEED_LABEL, &seed.files(), &paths.seed_iso)
                    .await?
            }
            None => {
                let _ = std::fs::remove_file(&paths.seed_iso);
            }
        }
        let running = launch::spawn(&self.config.qemu_binary, self.accel, spec, &paths).await?;
        let pid = running.pid;

        let started = async {
            if let Some(bridge) = &bridge {
                self.host_network.attach_tap(&tap, bridge).await?;
                tracing::info!(%tap, %bridge, "the tap is on the bridge");
            }
            self.ensure_watched(&spec.vm_id, running, &paths).await?;
            control::command_with_retry(&paths, pid, qmp::cont {}).await
        };
        if let Err(e) = started.await {
            tracing::warn!(error = %crate::telemetry::chain(&e), "the new machine could not be started; killing it");
            // The job reports the failure; the exit of a process nobody recorded is not news.
            self.watchers.forget(&spec.vm_id, running);
            let _ = control::quit_or_kill(pid, &paths).await;
            return Err(e);
        }
        Ok(RunningMachine {
            process: running,
            accel: self.accel,
            already_running: false,
        })
    }
}

#[async_trait]
impl Hypervisor for QemuHypervisor {
    async fn provision(&self, spec: &MachineSpec) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("provision", vm_id = %spec.vm_id);
        async {
            let paths = self.checked_paths(&spec.vm_id)?;
            disk::provision(&self.config.qemu_img, spec, &paths).await
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
        async {
            let paths = self.checked_paths(vm_id)?;
            control::stop(&paths, force, timeout).await
        }
        .instrument(span)
        .await
    }

    async fn power_button(&self, vm_id: &str) -> Result<PowerButton, HypervisorError> {
        let span = tracing::info_span!("power_button", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            control::power_button(&paths).await
        }
        .instrument(span)
        .await
    }

    async fn pause(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("pause", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            control::command(&paths, qmp::stop {}).await
        }
        .instrument(span)
        .await?;
        Ok(())
    }

    async fn resume(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("resume", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            control::command(&paths, qmp::cont {}).await
        }
        .instrument(span)
        .await?;
        Ok(())
    }

    async fn reset(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("reset", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            control::command(&paths, qmp::system_reset {}).await
        }
        .instrument(span)
        .await?;
        Ok(())
    }

    #[allow(deprecated)] // qapi's `device` fields: the drives are named by `id` instead.
    async fn change_medium(&self, vm_id: &str, iso: Option<&Path>) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("change_medium", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            // A machine that does not run gets the medium at its next start.
            if process::live_pid(&paths.pid_file).is_none() {
                return Ok(());
            }
            let id = Some(ISO_DEVICE.to_string());
            match iso {
                Some(file) => {
                    control::command(
                        &paths,
                        qmp::blockdev_change_medium {
                            device: None,
                            id,
                            filename: file.to_string_lossy().into_owned(),
                            format: Some("raw".to_string()),
                            force: Some(true),
                            read_only_mode: Some(qmp::BlockdevChangeReadOnlyMode::read_only),
                        },
                    )
                    .await?;
                }
                // One command, so the guest cannot close the tray between its opening and the
                // medium's removal (Linux closes it when a program opens the drive): two
                // commands, `blockdev-open-tray` then `blockdev-remove-medium`, failed so with
                // "Tray ... is not open".
                None => {
                    control::command(
                        &paths,
                        qmp::eject {
                            device: None,
                            id,
                            force: Some(true),
                        },
                    )
                    .await?;
                }
            }
            tracing::info!(iso = ?iso, "the CD-ROM's medium changed");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn destroy(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let span = tracing::info_span!("destroy", vm_id = %vm_id);
        async {
            let paths = self.checked_paths(vm_id)?;
            if let Some(pid) = process::live_pid(&paths.pid_file) {
                control::quit_or_kill(pid, &paths).await?;
            }
            // QEMU's tap goes with it; a persistent one of the same name would not.
            if let Err(e) = self.host_network.delete_tap(&tap_name(vm_id)).await {
                tracing::warn!(error = %e, "the machine's tap device could not be deleted");
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
        Ok(control::probe(vm_id, &paths).await)
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
