//! The bodies `/system/info` and `/system/stats` answer with, as types: the handlers build them
//! and the OpenAPI document describes them from the same definitions.

use serde::Serialize;
use utoipa::ToSchema;

use crate::system::series::Point;
use crate::vm::VmStatus;

/// `GET /system/info`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// The server's version.
    pub version: String,
    /// When the server was built, RFC 3339 in UTC (`SOURCE_DATE_EPOCH` when the build set it).
    pub build_time: String,
    /// Seconds since this server started.
    pub uptime: u64,
    /// The API's version (also in the `X-API-Version` header).
    pub api_version: String,
    /// This node's id among the nodes sharing the database.
    pub node: String,
    pub system: HostSystem,
    pub resources: Resources,
    pub qemu: QemuInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostSystem {
    /// E.g. `Linux (Debian GNU/Linux 12)`.
    pub os: String,
    /// E.g. `x86_64`.
    pub arch: String,
    pub kernel: String,
    pub hostname: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resources {
    pub cpu: CpuInfo,
    pub memory: Capacity,
    /// The filesystem that holds the data dir.
    pub disk: DiskInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CpuInfo {
    /// Logical cores.
    pub cores: usize,
    pub model: String,
    /// Percent busy over all cores, at the latest sample.
    pub usage: f64,
}

/// Sizes in bytes; `usage` is `used` over `total` in percent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Capacity {
    pub total: u64,
    /// Memory: total less what is available. Disk: blocks in use.
    pub used: u64,
    /// Memory: available. Disk: what an unprivileged process may still write.
    pub free: u64,
    pub usage: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiskInfo {
    #[serde(flatten)]
    pub capacity: Capacity,
    /// The filesystem's mount point.
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QemuInfo {
    /// The configured `qemu-system-x86_64 --version`'s number, e.g. `7.2.22`.
    pub version: String,
    /// Whether KVM really works here (a probe machine runs under it), whatever the machines use.
    pub kvm_support: bool,
    /// The guest architectures of the `qemu-system-*` binaries next to the configured one and on
    /// `PATH`.
    pub supported_archs: Vec<String>,
}

/// `GET /system/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemStats {
    /// `1h`, `24h`, `7d` or `30d`.
    pub period: String,
    /// The node whose host the resource series are of.
    pub node: String,
    pub vms: VmCounts,
    pub resources: ResourceSeries,
    pub events: EventCounts,
}

/// VMs by status now, every status present (0 when no VM has it). `total` leaves deleted VMs out;
/// `deleted` counts them.
#[derive(Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct VmCounts {
    pub total: i64,
    pub creating: i64,
    pub stopped: i64,
    pub starting: i64,
    pub running: i64,
    pub stopping: i64,
    pub pausing: i64,
    pub paused: i64,
    pub resuming: i64,
    pub rebooting: i64,
    pub deleting: i64,
    pub deleted: i64,
    pub error: i64,
    pub crashed: i64,
}

impl VmCounts {
    /// From `(status, VMs)` rows; a status the code does not know is left out.
    pub fn from_rows(rows: &[(String, i64)]) -> VmCounts {
        let mut c = VmCounts::default();
        for (status, n) in rows {
            let Some(status) = VmStatus::parse(status) else {
                continue;
            };
            let field = match status {
                VmStatus::Creating => &mut c.creating,
                VmStatus::Stopped => &mut c.stopped,
                VmStatus::Starting => &mut c.starting,
                VmStatus::Running => &mut c.running,
                VmStatus::Stopping => &mut c.stopping,
                VmStatus::Pausing => &mut c.pausing,
                VmStatus::Paused => &mut c.paused,
                VmStatus::Resuming => &mut c.resuming,
                VmStatus::Rebooting => &mut c.rebooting,
                VmStatus::Deleting => &mut c.deleting,
                VmStatus::Deleted => &mut c.deleted,
                VmStatus::Error => &mut c.error,
                VmStatus::Crashed => &mut c.crashed,
            };
            *field += n;
            if status != VmStatus::Deleted {
                c.total += n;
            }
        }
        c
    }
}

/// The host's CPU and memory over the period, in percent: at most 120 points each, each the
/// average of the samples of its slice of the period, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSeries {
    pub cpu_usage: Vec<Point>,
    pub memory_usage: Vec<Point>,
}

/// VM events recorded in the period; `errors` and `warnings` by the levels of `/logs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventCounts {
    pub total: i64,
    pub errors: i64,
    pub warnings: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_counted_and_deleted_vms_stay_out_of_the_total() {
        let rows: Vec<(String, i64)> = VmStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 1))
            .chain([("unknown".to_string(), 5)])
            .collect();
        let counts = VmCounts::from_rows(&rows);
        assert_eq!(counts.total, VmStatus::ALL.len() as i64 - 1);
        assert_eq!(counts.deleted, 1);
        let json = serde_json::to_value(&counts).unwrap();
        for status in VmStatus::ALL {
            assert_eq!(json[status.as_str()], 1, "{status:?} in {json}");
        }
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(VmStatus::ALL.len() + 1),
            "every status and the total, nothing else: {json}"
        );
    }
}
