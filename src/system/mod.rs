//! What `/api/v1/system/*` reports about this node and its host: facts read on demand (`info`),
//! the host's CPU and memory sampled over time by a background task (`sampler`, kept in
//! PostgreSQL by `store::system_samples`), and the periods those samples are charted over
//! (`series`). [`SystemState`] is what the handlers and the sampler share.

pub mod info;
pub mod sampler;
pub mod series;

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Instant;

use tokio::sync::OnceCell;

use crate::hypervisor::accel::probe_kvm;
use crate::hypervisor::Accel;
use crate::monitor::HostSample;

/// This node's identity and its host's latest figures.
pub struct SystemState {
    /// This node's id (`node::load_or_create_id`).
    pub node: String,
    /// When the application was built: the uptime counts from here.
    pub started: Instant,
    /// The data dir, whose filesystem the disk figures are of.
    pub data_dir: PathBuf,
    /// The configured `qemu-system-*` binary.
    pub qemu: PathBuf,
    latest: RwLock<Option<HostSample>>,
    kvm: OnceCell<bool>,
}

impl SystemState {
    pub fn new(node: String, data_dir: PathBuf, qemu: PathBuf) -> SystemState {
        SystemState {
            node,
            started: Instant::now(),
            data_dir,
            qemu,
            latest: RwLock::new(None),
            kvm: OnceCell::new(),
        }
    }

    /// The sampler's latest reading of the host, if it made one yet.
    pub fn latest(&self) -> Option<HostSample> {
        self.latest
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_latest(&self, sample: HostSample) {
        let mut guard = self.latest.write().unwrap_or_else(|p| p.into_inner());
        *guard = Some(sample);
    }

    /// Whether KVM really works on this host: yes when machines already use it; otherwise the
    /// accelerator probe (`hypervisor::accel`) boots a throwaway machine once (up to a few
    /// seconds; a nested KVM that hangs says no) and the answer is kept.
    pub async fn kvm_support(&self, accel: Accel) -> bool {
        if accel == Accel::Kvm {
            return true;
        }
        *self
            .kvm
            .get_or_init(|| async {
                match probe_kvm(&self.qemu).await {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::debug!(reason = %why, "KVM is not usable on this host");
                        false
                    }
                }
            })
            .await
    }
}
