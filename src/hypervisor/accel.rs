//! Choosing the accelerator machines run with.
//!
//! KVM is far faster than TCG, but a `/dev/kvm` that exists is no proof that it works: under
//! nested virtualisation QEMU may abort when it programs the vCPU, or guests may hang. So `auto`
//! runs a real throwaway machine with the exact CPU model VoidVM would use (`-cpu host`) and only
//! picks KVM when its firmware gets to talk within a few seconds; otherwise it falls back to TCG
//! and says why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;

use super::{Accel, HypervisorError};

/// How long the KVM probe waits for SeaBIOS to write to its debug console.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which accelerator the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    /// KVM when a probe shows it really works, TCG otherwise.
    #[default]
    Auto,
    /// KVM, and refuse to start when it does not work.
    Kvm,
    /// Pure emulation; always works, slowly.
    Tcg,
}

impl FromStr for AccelSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AccelSetting::Auto),
            "kvm" => Ok(AccelSetting::Kvm),
            "tcg" => Ok(AccelSetting::Tcg),
            other => Err(format!(
                "'{other}' is not an accelerator; use auto, kvm or tcg"
            )),
        }
    }
}

impl fmt::Display for AccelSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelSetting::Auto => "auto",
            AccelSetting::Kvm => "kvm",
            AccelSetting::Tcg => "tcg",
        })
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// The `-cpu` model used with this accelerator.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

/// Turns the setting into the accelerator machines get, probing KVM when needed.
pub async fn resolve(qemu_binary: &Path, setting: AccelSetting) -> Result<Accel, HypervisorError> {
    match setting {
        AccelSetting::Tcg => Ok(Accel::Tcg),
        AccelSetting::Kvm => match probe_kvm(qemu_binary).await {
            Ok(()) => Ok(Accel::Kvm),
            Err(why) => Err(HypervisorError::Permanent(format!(
                "KVM was asked for but does not work here: {why}"
            ))),
        },
        AccelSetting::Auto => match probe_kvm(qemu_binary).await {
            Ok(()) => {
                tracing::info!("KVM works; machines will use it");
                Ok(Accel::Kvm)
            }
            Err(why) => {
                tracing::warn!(reason = %why, "KVM is not usable; machines will run under TCG");
                Ok(Accel::Tcg)
            }
        },
    }
}

/// Boots an empty KVM machine and waits for SeaBIOS to write to the debug console; returns why
/// KVM cannot be used when it does not.
pub async fn probe_kvm(qemu_binary: &Path) -> Result<(), String> {
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return Err("/dev/kvm does not exist".to_string());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        return Err(format!("/dev/kvm cannot be opened ({e})"));
    }

    let log = probe_log_path();
    let result = run_probe(qemu_binary, &log).await;
    let _ = std::fs::remove_file(&log);
    result
}

fn probe_log_path() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "voidvm-kvm-probe-{}-{nanos}.log",
        std::process::id()
    ))
}

async fn run_probe(qemu_binary: &Path, log: &Path) -> Result<(), String> {
    let mut debugcon = std::ffi::OsString::from("file:");
    debugcon.push(log);
    let mut child = tokio::process::Command::new(qemu_binary)
        .args([
            "-accel",
            "kvm",
            "-machine",
            "q35",
            "-cpu",
            "host",
            "-m",
            "64",
            "-nodefaults",
            "-display",
            "none",
            "-global",
            "isa-debugcon.iobase=0x402",
            "-debugcon",
        ])
        .arg(debugcon)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("the probe machine could not be spawned ({e})"))?;

    let deadline = Instant::now() + KVM_PROBE_TIMEOUT;
    let outcome = loop {
        if std::fs::metadata(log).map(|m| m.len() > 0).unwrap_or(false) {
            break Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                let detail = stderr
                    .lines()
                    .find(|l| l.contains("error") || l.contains("failed"))
                    .or_else(|| stderr.lines().next())
                    .unwrap_or("no message")
                    .trim()
                    .to_string();
                break Err(format!("the probe machine exited with {status}: {detail}"));
            }
            Ok(None) => {}
            Err(e) => break Err(format!("the probe machine could not be waited for ({e})")),
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "the firmware wrote nothing within {} s (a hanging nested KVM)",
                KVM_PROBE_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings() {
        assert_eq!("auto".parse::<AccelSetting>(), Ok(AccelSetting::Auto));
        assert_eq!("KVM".parse::<AccelSetting>(), Ok(AccelSetting::Kvm));
        assert_eq!("tcg".parse::<AccelSetting>(), Ok(AccelSetting::Tcg));
        assert!("xen".parse::<AccelSetting>().is_err());
    }

    #[test]
    fn serde_is_lowercase() {
        let json = serde_json::to_string(&AccelSetting::Kvm).unwrap_or_default();
        assert_eq!(json, "\"kvm\"");
        let back: Result<AccelSetting, _> = serde_json::from_str("\"tcg\"");
        assert_eq!(back.ok(), Some(AccelSetting::Tcg));
    }
}
