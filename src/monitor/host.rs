//! Host-wide resource figures for the `system-monitor` WebSocket topic.
//!
//! A [`HostMonitor`] is kept for the life of the feed and asked for a [`HostSample`] at a regular
//! interval: CPU (percent busy over all cores since the previous sample, core count, load
//! averages), memory, the filesystem that holds the VM disks, and network traffic over every
//! interface but loopback. The figures come from the `sysinfo` crate, except the disk's, which
//! come from `statvfs(3)` on the chosen mount point so that "used" means what `df` means (blocks in
//! use, not total minus what an unprivileged user may still write). Nothing here panics: a figure
//! the host does not give is reported as 0.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, System};

/// One reading of the whole host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSample {
    pub cpu: CpuSample,
    pub memory: MemorySample,
    pub disk: DiskSample,
    pub network: NetworkSample,
}

/// CPU load of the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuSample {
    /// How busy all cores together were since the previous sample, 0-100 (0 on the first).
    pub percent: f32,
    /// Logical cores.
    pub cores: usize,
    /// Load averages over 1, 5 and 15 minutes.
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// Physical memory of the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemorySample {
    pub total_bytes: u64,
    /// `total - available`.
    pub used_bytes: u64,
    /// What can be given to new allocations without swapping (`MemAvailable`).
    pub available_bytes: u64,
}

/// The filesystem that holds the VM disks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskSample {
    /// Mount point of the filesystem.
    pub path: String,
    pub total_bytes: u64,
    /// Blocks in use, as `df` counts them.
    pub used_bytes: u64,
    /// Free space an unprivileged process may still use (excludes blocks reserved for root).
    pub available_bytes: u64,
}

/// Network traffic over all non-loopback interfaces.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSample {
    /// Bytes received since the interfaces came up.
    pub rx_bytes: u64,
    /// Bytes sent since the interfaces came up.
    pub tx_bytes: u64,
    /// Receive rate since the previous sample (0 on the first).
    pub rx_bytes_per_sec: f64,
    /// Send rate since the previous sample (0 on the first).
    pub tx_bytes_per_sec: f64,
}

/// Samples the host; keeps what it needs to turn counters into rates between calls.
pub struct HostMonitor {
    system: System,
    disks: Disks,
    networks: Networks,
    disk_path: PathBuf,
    /// When the previous sample was taken; `None` until the first.
    previous: Option<Instant>,
}

impl HostMonitor {
    /// A monitor whose disk figures are for the filesystem holding `disk_path` (the directory of
    /// the VM disks; it need not exist yet).
    pub fn new(disk_path: PathBuf) -> HostMonitor {
        HostMonitor {
            system: System::new(),
            disks: Disks::new(),
            networks: Networks::new(),
            disk_path,
            previous: None,
        }
    }

    /// Takes a sample; CPU percent and network rates are over the time since the previous call
    /// (the first call primes them and reports 0).
    pub fn sample(&mut self) -> HostSample {
        let now = Instant::now();
        let elapsed = self
            .previous
            .map(|previous| now.duration_since(previous).as_secs_f64());
        self.previous = Some(now);

        HostSample {
            cpu: self.cpu(elapsed.is_some()),
            memory: self.memory(),
            disk: self.disk(),
            network: self.network(elapsed),
        }
    }

    fn cpu(&mut self, primed: bool) -> CpuSample {
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        let percent = if primed {
            sanitize_percent(self.system.global_cpu_usage())
        } else {
            0.0
        };
        let cores = match self.system.cpus().len() {
            0 => std::thread::available_parallelism().map_or(0, |n| n.get()),
            n => n,
        };
        let load = System::load_average();
        CpuSample {
            percent,
            cores,
            load1: finite_or_zero(load.one),
            load5: finite_or_zero(load.five),
            load15: finite_or_zero(load.fifteen),
        }
    }

    fn memory(&mut self) -> MemorySample {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let total_bytes = self.system.total_memory();
        let available_bytes = self.system.available_memory().min(total_bytes);
        MemorySample {
            total_bytes,
            used_bytes: total_bytes - available_bytes,
            available_bytes,
        }
    }

    fn disk(&mut self) -> DiskSample {
        // Only the list of mounts: sysinfo is not asked to statvfs every filesystem.
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing());
        let target = resolve(&self.disk_path);
        let mount = longest_mount(&target, self.disks.list().iter().map(|d| d.mount_point()));
        let (total_bytes, used_bytes, available_bytes) = space(&mount);
        DiskSample {
            path: mount.to_string_lossy().into_owned(),
            total_bytes,
            used_bytes,
            available_bytes,
        }
    }

    fn network(&mut self, elapsed: Option<f64>) -> NetworkSample {
        self.networks.refresh(true);
        let (mut rx_bytes, mut tx_bytes, mut rx_delta, mut tx_delta) = (0u64, 0u64, 0u64, 0u64);
        for (name, data) in self.networks.list() {
            if name == "lo" {
                continue;
            }
            rx_bytes = rx_bytes.saturating_add(data.total_received());
            tx_bytes = tx_bytes.saturating_add(data.total_transmitted());
            // Deltas since the previous refresh; an interface seen for the first time adds 0.
            rx_delta = rx_delta.saturating_add(data.received());
            tx_delta = tx_delta.saturating_add(data.transmitted());
        }
        let rate = |delta: u64| match elapsed {
            Some(secs) if secs > 0.0 => delta as f64 / secs,
            _ => 0.0,
        };
        NetworkSample {
            rx_bytes,
            tx_bytes,
            rx_bytes_per_sec: rate(rx_delta),
            tx_bytes_per_sec: rate(tx_delta),
        }
    }
}

fn sanitize_percent(percent: f32) -> f32 {
    if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() {
        value
    } else {
        0.0
    }
}

/// `path` made absolute with symlinks resolved. A tail that does not exist yet is kept as given
/// on top of its deepest existing ancestor, so that a data directory not created yet still finds
/// the filesystem it will be on.
fn resolve(path: &Path) -> PathBuf {
    let Ok(absolute) = std::path::absolute(path) else {
        return PathBuf::from("/");
    };
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            resolved.extend(missing.iter().rev());
            return resolved;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The mount point that is the longest (whole-component) prefix of `target`, or `/`. Of equal
/// mount points the last listed wins: it is the one mounted on top.
fn longest_mount<'a>(target: &Path, mounts: impl IntoIterator<Item = &'a Path>) -> PathBuf {
    mounts
        .into_iter()
        .filter(|mount| mount.is_absolute() && target.starts_with(mount))
        .max_by_key(|mount| mount.components().count())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// `(total, used, available)` bytes of the filesystem at `mount`, zeros when it cannot be read.
fn space(mount: &Path) -> (u64, u64, u64) {
    let Ok(stat) = nix::sys::statvfs::statvfs(mount) else {
        return (0, 0, 0);
    };
    let unit = match stat.fragment_size() {
        0 => stat.block_size(),
        unit => unit,
    };
    let blocks = stat.blocks();
    let free = stat.blocks_free().min(blocks);
    let available = stat.blocks_available().min(blocks);
    (
        blocks.saturating_mul(unit),
        (blocks - free).saturating_mul(unit),
        available.saturating_mul(unit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn two_samples_have_sane_figures() {
        let temp = std::env::temp_dir();
        let mut monitor = HostMonitor::new(temp.clone());

        let first = monitor.sample();
        assert_eq!(
            first.cpu.percent, 0.0,
            "the first sample only primes the CPU figure"
        );
        assert_eq!(first.network.rx_bytes_per_sec, 0.0);
        assert_eq!(first.network.tx_bytes_per_sec, 0.0);

        std::thread::sleep(Duration::from_millis(250));
        let second = monitor.sample();

        let cpu = &second.cpu;
        assert!(cpu.cores > 0, "{cpu:?}");
        assert!((0.0..=100.0).contains(&cpu.percent), "{cpu:?}");
        assert!(
            cpu.load1 >= 0.0 && cpu.load5 >= 0.0 && cpu.load15 >= 0.0,
            "{cpu:?}"
        );

        let memory = &second.memory;
        assert!(memory.total_bytes > 0, "{memory:?}");
        assert!(memory.used_bytes > 0, "{memory:?}");
        assert!(memory.used_bytes <= memory.total_bytes, "{memory:?}");
        assert!(memory.available_bytes <= memory.total_bytes, "{memory:?}");
        assert_eq!(
            memory.used_bytes + memory.available_bytes,
            memory.total_bytes
        );

        let disk = &second.disk;
        assert!(disk.total_bytes > 0, "{disk:?}");
        assert!(disk.used_bytes <= disk.total_bytes, "{disk:?}");
        assert!(disk.available_bytes <= disk.total_bytes, "{disk:?}");
        let canonical = temp.canonicalize().expect("temp dir canonicalizes");
        assert!(
            canonical.starts_with(&disk.path),
            "{disk:?} does not hold {canonical:?}"
        );

        let network = &second.network;
        assert!(network.rx_bytes_per_sec.is_finite() && network.rx_bytes_per_sec >= 0.0);
        assert!(network.tx_bytes_per_sec.is_finite() && network.tx_bytes_per_sec >= 0.0);
        assert!(network.rx_bytes >= first.network.rx_bytes, "{network:?}");
        assert!(network.tx_bytes >= first.network.tx_bytes, "{network:?}");
    }

    #[test]
    fn disk_figures_are_those_of_the_root_filesystem_for_root() {
        let mut monitor = HostMonitor::new(PathBuf::from("/"));
        let disk = monitor.sample().disk;
        assert_eq!(disk.path, "/");
        let stat = nix::sys::statvfs::statvfs("/").expect("statvfs /");
        let unit = stat.fragment_size();
        assert_eq!(disk.total_bytes, stat.blocks() * unit);
    }

    #[test]
    fn longest_mount_matches_whole_components() {
        let mounts = [
            Path::new("/"),
            Path::new("/home"),
            Path::new("/home/user"),
            Path::new("/var"),
        ];
        let pick = |target: &str| longest_mount(Path::new(target), mounts);
        assert_eq!(pick("/home/user/vm.qcow2"), PathBuf::from("/home/user"));
        assert_eq!(pick("/home/user2/vm.qcow2"), PathBuf::from("/home"));
        assert_eq!(pick("/home"), PathBuf::from("/home"));
        assert_eq!(pick("/srv/images"), PathBuf::from("/"));
        assert_eq!(
            longest_mount(Path::new("/srv"), [Path::new("/var")]),
            PathBuf::from("/"),
            "falls back to / when nothing matches"
        );
    }

    #[test]
    fn resolve_keeps_a_missing_tail_on_its_existing_ancestor() {
        let temp = std::env::temp_dir()
            .canonicalize()
            .expect("temp dir canonicalizes");
        let missing = temp.join("voidvm-monitor-missing-dir").join("a").join("b");
        assert_eq!(resolve(&missing), missing);
        assert_eq!(resolve(&temp.join(".").join("x")), temp.join("x"));
        assert!(resolve(Path::new("relative/path")).is_absolute());
    }

    #[test]
    fn serializes_with_camel_case_keys() {
        let mut monitor = HostMonitor::new(std::env::temp_dir());
        let value = serde_json::to_value(monitor.sample()).expect("serializes");
        for pointer in [
            "/cpu/percent",
            "/cpu/cores",
            "/cpu/load15",
            "/memory/totalBytes",
            "/memory/usedBytes",
            "/memory/availableBytes",
            "/disk/path",
            "/disk/availableBytes",
            "/network/rxBytes",
            "/network/txBytesPerSec",
        ] {
            assert!(
                value.pointer(pointer).is_some(),
                "{pointer} missing in {value}"
            );
        }
    }

    #[test]
    fn monitor_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<HostMonitor>();
    }
}
