//! CPU and memory of running VMs, sampled by one task for every connection: `vm-status`
//! subscribers get a VM's figures with its events and every `usage_interval_ms` while it runs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::hypervisor::Hypervisor;
use crate::monitor::usage::{UsageSampler, VmUsage};
use crate::store::vm_view;
use crate::vm::VmStatus;

/// One running VM's latest figures.
#[derive(Debug, Clone)]
pub struct Sample {
    pub owner_id: String,
    pub usage: VmUsage,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
pub struct UsageBoard {
    samples: RwLock<Arc<HashMap<String, Sample>>>,
}

impl UsageBoard {
    pub fn get(&self, vm_id: &str) -> Option<Sample> {
        self.snapshot().get(vm_id).cloned()
    }

    /// Every running VM's latest figures.
    pub fn snapshot(&self) -> Arc<HashMap<String, Sample>> {
        self.samples
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn replace(&self, samples: HashMap<String, Sample>) {
        let mut guard = self.samples.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(samples);
    }

    /// Samples running VMs every `every` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        pool: PgPool,
        hypervisor: Arc<dyn Hypervisor>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut sampler = UsageSampler::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let running = match vm_view::owners_with_status(&pool, &[VmStatus::Running]).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %crate::telemetry::chain(&e), "running VMs could not be listed for usage");
                    continue;
                }
            };
            let now = Utc::now();
            let mut samples = HashMap::new();
            let mut pids = Vec::new();
            for (vm_id, owner_id) in running {
                let Some(pid) = hypervisor.pid(&vm_id) else {
                    continue;
                };
                let Ok(pid) = i32::try_from(pid) else {
                    continue;
                };
                pids.push(pid);
                if let Some(usage) = sampler.sample(pid) {
                    samples.insert(
                        vm_id,
                        Sample {
                            owner_id,
                            usage,
                            at: now,
                        },
                    );
                }
            }
            sampler.retain(&pids);
            self.replace(samples);
        }
    }
}
