//! The host facts `/system/info` reports that are read on demand: the operating system, the CPU's
//! model, the host's memory and the data dir's disk now, the QEMU version, and which guest
//! architectures the installed `qemu-system-*` binaries emulate. Nothing here fails: a fact the
//! host does not give is empty (or 0).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sysinfo::{CpuRefreshKind, System};

use super::SystemState;
use crate::monitor::{HostMonitor, HostSample};

/// The operating system and the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsFacts {
    /// E.g. `Linux (Debian GNU/Linux 12)`.
    pub os: String,
    /// E.g. `x86_64`.
    pub arch: String,
    pub kernel: String,
    pub hostname: String,
}

pub fn os() -> OsFacts {
    OsFacts {
        os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_string()),
        arch: match System::cpu_arch() {
            arch if arch.is_empty() => std::env::consts::ARCH.to_string(),
            arch => arch,
        },
        kernel: System::kernel_version().unwrap_or_default(),
        hostname: System::host_name().unwrap_or_default(),
    }
}

/// The CPU's model name (of its first core), read once.
pub fn cpu_model() -> String {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut system = System::new();
            system.refresh_cpu_list(CpuRefreshKind::nothing());
            system
                .cpus()
                .first()
                .map(|cpu| cpu.brand().trim().to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// The host as it is now: memory and disk read at once, CPU from the sampler's latest reading
/// (or, before its first, measured over a quarter of a second).
pub async fn host_now(state: &SystemState) -> HostSample {
    let mut monitor = HostMonitor::new(state.data_dir.clone());
    let mut now = monitor.sample();
    match state.latest() {
        Some(latest) => now.cpu.percent = latest.cpu.percent,
        None => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = monitor.sample();
        }
    }
    now
}

/// The version number in `qemu-system-x86_64 --version`'s first line (`QEMU emulator version
/// 7.2.22 (Debian ...)` gives `7.2.22`), or the line itself when it has none.
pub fn qemu_version(first_line: &str) -> String {
    let line = first_line.trim();
    line.split_once("version ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(line)
        .to_string()
}

/// The guest architectures of the `qemu-system-<arch>` binaries next to the configured one and
/// on `PATH`, sorted (`qemu-system-x86_64-microvm` is a variant, not an architecture).
pub fn supported_archs(configured: &Path) -> Vec<String> {
    archs_in(&search_dirs(configured, std::env::var_os("PATH")))
}

/// The configured binary's directory (found on `path` when it is a bare name), then `path`.
fn search_dirs(configured: &Path, path: Option<OsString>) -> Vec<PathBuf> {
    let on_path: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut dirs = Vec::new();
    match configured.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => dirs.push(parent.to_path_buf()),
        None => dirs.extend(
            on_path
                .iter()
                .find(|dir| dir.join(configured).is_file())
                .cloned(),
        ),
    }
    dirs.extend(on_path);
    dirs
}

fn archs_in(dirs: &[PathBuf]) -> Vec<String> {
    let mut archs = BTreeSet::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(arch) = name.to_str().and_then(arch_of) else {
                continue;
            };
            if entry.path().is_file() {
                archs.insert(arch.to_string());
            }
        }
    }
    archs.into_iter().collect()
}

/// `qemu-system-aarch64` gives `aarch64`; anything else (a variant such as
/// `qemu-system-x86_64-microvm`, another program) gives nothing.
pub fn arch_of(file_name: &str) -> Option<&str> {
    file_name.strip_prefix("qemu-system-").filter(|arch| {
        !arch.is_empty() && arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_number_is_taken_from_qemus_first_line() {
        assert_eq!(
            qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            "7.2.22"
        );
        assert_eq!(qemu_version("QEMU emulator version 9.1.0"), "9.1.0");
        assert_eq!(qemu_version("something else"), "something else");
    }

    #[test]
    fn only_plain_architectures_count() {
        assert_eq!(arch_of("qemu-system-x86_64"), Some("x86_64"));
        assert_eq!(arch_of("qemu-system-aarch64"), Some("aarch64"));
        assert_eq!(arch_of("qemu-system-x86_64-microvm"), None);
        assert_eq!(arch_of("qemu-img"), None);
        assert_eq!(arch_of("qemu-system-"), None);
    }

    #[test]
    fn architectures_are_found_next_to_the_binary_and_on_the_path() {
        let root = std::env::temp_dir().join(format!("voidvm-archs-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for (dir, file) in [
            (&a, "qemu-system-x86_64"),
            (&a, "qemu-system-x86_64-microvm"),
            (&a, "qemu-img"),
            (&b, "qemu-system-riscv64"),
            (&b, "qemu-system-x86_64"),
        ] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        let path = std::env::join_paths([&b]).ok();
        let dirs = search_dirs(&a.join("qemu-system-x86_64"), path.clone());
        assert_eq!(archs_in(&dirs), vec!["riscv64", "x86_64"]);
        // A bare name is looked for on the path.
        let dirs = search_dirs(Path::new("qemu-system-riscv64"), path);
        assert_eq!(dirs, vec![b.clone(), b.clone()]);
        assert_eq!(archs_in(&[root.join("missing")]), Vec::<String>::new());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
