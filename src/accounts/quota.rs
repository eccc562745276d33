//! Quotas: how much a user may own at once (VMs, vCPUs, memory, disk). The defaults come from the
//! configuration; a user may have overrides. A role that grants everything has none. They are
//! checked in the transaction that creates or grows a VM (`store::quota`), so concurrent creates
//! can never pass one together.

use serde::{Deserialize, Serialize};

/// One thing a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuotaResource {
    Vms,
    Vcpus,
    Memory,
    Disk,
}

impl QuotaResource {
    pub const ALL: [QuotaResource; 4] = [
        QuotaResource::Vms,
        QuotaResource::Vcpus,
        QuotaResource::Memory,
        QuotaResource::Disk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaResource::Vms => "vms",
            QuotaResource::Vcpus => "vcpus",
            QuotaResource::Memory => "memory",
            QuotaResource::Disk => "disk",
        }
    }

    /// The unit figures of this resource are given in, as a suffix.
    pub fn unit(self) -> &'static str {
        match self {
            QuotaResource::Vms | QuotaResource::Vcpus => "",
            QuotaResource::Memory => " MiB",
            QuotaResource::Disk => " GiB",
        }
    }
}

impl std::fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's overrides of the configured quota; an absent figure takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

/// Figures per resource: a quota (`None`: unlimited) or a usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub vms: Option<u64>,
    pub vcpus: Option<u64>,
    /// MiB.
    pub memory: Option<u64>,
    /// GiB.
    pub disk: Option<u64>,
}

/// What a user owns now (VMs that are not deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub vms: u64,
    pub vcpus: u64,
    /// MiB.
    pub memory: u64,
    /// GiB.
    pub disk: u64,
}

impl Usage {
    pub fn get(&self, resource: QuotaResource) -> u64 {
        match resource {
            QuotaResource::Vms => self.vms,
            QuotaResource::Vcpus => self.vcpus,
            QuotaResource::Memory => self.memory,
            QuotaResource::Disk => self.disk,
        }
    }
}

impl Quota {
    pub fn unlimited() -> Quota {
        Quota::default()
    }

    pub fn get(&self, resource: QuotaResource) -> Option<u64> {
        match resource {
            QuotaResource::Vms => self.vms,
            QuotaResource::Vcpus => self.vcpus,
            QuotaResource::Memory => self.memory,
            QuotaResource::Disk => self.disk,
        }
    }

    /// The defaults with a user's overrides on top.
    pub fn with(defaults: Quota, overrides: &QuotaOverrides) -> Quota {
        Quota {
            vms: overrides.vms.or(defaults.vms),
            vcpus: overrides.vcpus.or(defaults.vcpus),
            memory: overrides.memory.or(defaults.memory),
            disk: overrides.disk.or(defaults.disk),
        }
    }

    /// The first resource that `used` plus `adding` would take past this quota.
    pub fn exceeded_by(&self, used: &Usage, adding: &Usage) -> Option<(QuotaResource, u64)> {
        QuotaResource::ALL.into_iter().find_map(|r| {
            let limit = self.get(r)?;
            let add = adding.get(r);
            (add > 0 && used.get(r).saturating_add(add) > limit).then_some((r, limit))
        })
    }
}
