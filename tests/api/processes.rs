//! What a test leaves behind, and how it goes: its in-process servers (each on its own thread, so
//! that dropping the test stops it before its database goes), its QEMU processes (found by the
//! data dir on their command line), and whether it logs (`TEST_LOG=1`).

use std::path::Path;
use std::time::Duration;

use voidvm::config::Settings;
use voidvm::startup::Application;

use crate::helpers::{alive, qemu_pid};

/// Logs (of in-process servers and of `voidvm` processes) only with `TEST_LOG=1`.
pub fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// What names this suite run's data dirs (`scripts/test.sh` sets `TEST_RUN` and looks for
/// QEMU processes of the run once the suite has ended).
pub fn test_run() -> String {
    std::env::var("TEST_RUN")
        .ok()
        .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
        .map_or_else(String::new, |r| format!("{r}-"))
}

/// The live processes whose command line names something in `data_dir` (its QEMUs), by pid.
pub fn processes_in(data_dir: &Path) -> Vec<(i32, String)> {
    let needle = format!("{}/", data_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Kills every QEMU of `data_dir` (by its pid file, and any process naming the dir) and waits
/// for them to go.
pub fn kill_machines(data_dir: &Path) {
    let mut pids: Vec<i32> = std::fs::read_dir(data_dir.join("vms"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| qemu_pid(data_dir, &e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    pids.extend(processes_in(data_dir).into_iter().map(|(pid, _)| pid));
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..50 {
        if !pids.iter().any(|p| alive(*p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A VoidVM running in this process, on its own thread and actix system, so that dropping a
/// `TestApp` can stop it (and wait for it) before its database goes.
pub struct InProcess {
    /// Where the app's machine watchers deliver observations (tests deliver some late).
    pub observations: voidvm::hypervisor::ObservationSender,
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub async fn start(settings: Settings) -> (String, InProcess) {
        if test_log() {
            voidvm::telemetry::init();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                match Application::build(settings).await {
                    Ok(app) => {
                        let _ = tx.send(Ok((
                            format!("http://{}", app.addr()),
                            app.stop_token(),
                            app.observations(),
                        )));
                        if let Err(e) = app.run_until_stopped().await {
                            eprintln!("the in-process server failed: {e:#}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            })
        });
        let built = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .expect("the waiter");
        match built {
            Ok(Ok((address, stop, observations))) => (
                address,
                InProcess {
                    observations,
                    stop,
                    thread: Some(thread),
                },
            ),
            Ok(Err(e)) => panic!("the application failed to build: {e}"),
            Err(_) => panic!("the application's thread died while building"),
        }
    }

    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A node nobody stopped (its test panicked before a `TestApp` held it, e.g. in the first
/// login) stops when dropped, rather than running on against a database that is gone.
impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
