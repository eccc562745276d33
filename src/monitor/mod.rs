//! Resource figures for the WebSocket feed.
//!
//! The `system-monitor` topic shows how busy the host is (CPU, memory, the disk that holds the
//! VM images, network traffic), and each `vm-status` frame carries how much CPU and memory that
//! VM's QEMU process uses. Both are sampled here, on demand, by whoever publishes those frames:
//! [`HostMonitor`] for the host, [`UsageSampler`] for QEMU processes by pid. Rates (CPU percent,
//! bytes per second) are measured between two calls, so each sampler is kept alive and asked at a
//! regular interval; nothing here runs on its own or panics on missing data.

pub mod host;
pub mod usage;

pub use host::{CpuSample, DiskSample, HostMonitor, HostSample, MemorySample, NetworkSample};
pub use usage::{UsageSampler, VmUsage};
