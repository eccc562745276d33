//! The live configuration: the settings `PUT /config` may change while the server runs, as
//! overrides over the server's own settings (file and `VOIDVM_*`). A change is a `ConfigChanged`
//! event (the config aggregate) committed with the `config` row; every node hears of it through
//! the auth cache's listener and reloads, so it takes effect everywhere without a restart.
//! Settings that only take effect at start-up are shown by `GET /config` and named in its
//! `restartRequired` list; a PUT that touches one is refused, naming it.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::quota::Quota;
use crate::config::Settings;

/// What the live settings are now: the server's settings with the overrides on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveSettings {
    /// What a user (of a role that does not grant everything) may own, unless overridden.
    pub quota: Quota,
    /// Requests a minute per user (per client address before login), unless the role or the
    /// user says otherwise.
    pub requests_per_minute: u32,
    /// Failed logins per username and per address before logins are refused for a while.
    pub login_failures: u32,
    /// How long logins stay refused after too many failures, in seconds.
    pub login_lockout_seconds: u64,
}

/// A change to the `system` section: a number sets an override, `null` clears it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemPatch {
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_vms_per_user: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_vcpus_per_user: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_per_user: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_disk_per_user: Option<Option<u64>>,
}

/// A change to the `limits` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub requests_per_minute: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub login_failures: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "super::present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub login_lockout_seconds: Option<Option<u64>>,
}

/// A change of the live settings (the body of a `ConfigChanged` event), and also the overrides
/// in force (where every present field is `Some(value)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigOverrides {
    #[serde(default)]
    pub system: SystemPatch,
    #[serde(default)]
    pub limits: LimitsPatch,
}

fn merge<T: Copy>(old: Option<Option<T>>, new: Option<Option<T>>) -> Option<Option<T>> {
    match new {
        None => old,
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
    }
}

fn value<T: Copy>(set: Option<Option<T>>, default: T) -> T {
    set.flatten().unwrap_or(default)
}

impl ConfigOverrides {
    /// These overrides with `patch` applied (a `null` in it removes an override).
    pub fn patched(&self, patch: &ConfigOverrides) -> ConfigOverrides {
        let (s, p) = (&self.system, &patch.system);
        let (l, q) = (&self.limits, &patch.limits);
        ConfigOverrides {
            system: SystemPatch {
                max_vms_per_user: merge(s.max_vms_per_user, p.max_vms_per_user),
                max_vcpus_per_user: merge(s.max_vcpus_per_user, p.max_vcpus_per_user),
                max_memory_per_user: merge(s.max_memory_per_user, p.max_memory_per_user),
                max_disk_per_user: merge(s.max_disk_per_user, p.max_disk_per_user),
            },
            limits: LimitsPatch {
                requests_per_minute: merge(l.requests_per_minute, q.requests_per_minute),
                login_failures: merge(l.login_failures, q.login_failures),
                login_lockout_seconds: merge(l.login_lockout_seconds, q.login_lockout_seconds),
            },
        }
    }

    /// The first value out of its range, as (field, sentence).
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        let s = &self.system;
        let l = &self.limits;
        let checks: [(&'static str, Option<u64>, u64, u64); 7] = [
            (
                "system.maxVmsPerUser",
                s.max_vms_per_user.flatten(),
                0,
                1_000_000,
            ),
            (
                "system.maxVcpusPerUser",
                s.max_vcpus_per_user.flatten(),
                0,
                1_000_000,
            ),
            (
                "system.maxMemoryPerUser",
                s.max_memory_per_user.flatten(),
                0,
                1 << 40,
            ),
            (
                "system.maxDiskPerUser",
                s.max_disk_per_user.flatten(),
                0,
                1 << 30,
            ),
            (
                "limits.requestsPerMinute",
                l.requests_per_minute.flatten().map(u64::from),
                1,
                100_000_000,
            ),
            (
                "limits.loginFailures",
                l.login_failures.flatten().map(u64::from),
                1,
                1_000_000,
            ),
            (
                "limits.loginLockoutSeconds",
                l.login_lockout_seconds.flatten(),
                1,
                7 * 86_400,
            ),
        ];
        checks.into_iter().find_map(|(field, v, min, max)| {
            let v = v?;
            (v < min || v > max).then(|| (field, format!("must be from {min} to {max}")))
        })
    }
}

/// The events of the config aggregate (one stream, id `config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigEvent {
    /// `changes`: what was set (a number) or cleared back to the server's setting (`null`).
    ConfigChanged { changes: ConfigOverrides },
}

impl ConfigEvent {
    pub const TYPE_NAMES: [&'static str; 1] = ["ConfigChanged"];

    pub fn type_name(&self) -> &'static str {
        match self {
            ConfigEvent::ConfigChanged { .. } => "ConfigChanged",
        }
    }

    pub fn version(&self) -> &'static str {
        "1"
    }
}

/// The fields `GET /config` shows that only take effect at start-up.
pub const RESTART_REQUIRED: [&str; 16] = [
    "system.nodeId",
    "system.workers",
    "system.version",
    "limits.wsConnectionsPerUser",
    "limits.vmCpuMax",
    "limits.vmMemoryMaxMib",
    "limits.vmDiskMaxGib",
    "network.listen",
    "network.natsUrl",
    "network.natsStream",
    "network.vmPortRangeStart",
    "network.vmPortRangeEnd",
    "network.vmBridges",
    "storage.dataDir",
    "storage.imagesDir",
    "storage.snapshotEvery",
];

/// The live settings of this node, kept current by `store::accounts::follow_config`.
pub struct LiveConfig {
    defaults: LiveSettings,
    current: RwLock<(LiveSettings, ConfigOverrides, i64)>,
}

impl LiveConfig {
    pub fn new(settings: &Settings) -> LiveConfig {
        let q = &settings.quotas;
        let r = &settings.rate_limit;
        let defaults = LiveSettings {
            quota: Quota {
                vms: Some(q.vms),
                vcpus: Some(q.vcpus),
                memory: Some(q.memory_mib),
                disk: Some(q.disk_gib),
            },
            requests_per_minute: r.requests_per_minute,
            login_failures: r.login_failures,
            login_lockout_seconds: r.login_lockout_secs,
        };
        LiveConfig {
            defaults,
            current: RwLock::new((defaults, ConfigOverrides::default(), 0)),
        }
    }

    /// [`LiveConfig::new`] with the overrides the database holds now.
    pub async fn load(
        settings: &Settings,
        pool: &sqlx::PgPool,
    ) -> Result<LiveConfig, crate::store::StoreError> {
        let live = LiveConfig::new(settings);
        let (overrides, version) = crate::store::accounts::config(pool).await?;
        live.set(overrides, version);
        Ok(live)
    }

    /// The live settings now.
    pub fn get(&self) -> LiveSettings {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The overrides in force and the config stream's version.
    pub fn overrides(&self) -> (ConfigOverrides, i64) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.1, current.2)
    }

    /// Takes `overrides` (at `version`) unless what is held is newer.
    pub fn set(&self, overrides: ConfigOverrides, version: i64) {
        let settings = self.resolve(&overrides);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if version >= current.2 {
            *current = (settings, overrides, version);
        }
    }

    /// The live settings `o` would give.
    pub fn resolve(&self, o: &ConfigOverrides) -> LiveSettings {
        let d = &self.defaults;
        LiveSettings {
            quota: Quota {
                vms: Some(value(o.system.max_vms_per_user, d.quota.vms.unwrap_or(0))),
                vcpus: Some(value(
                    o.system.max_vcpus_per_user,
                    d.quota.vcpus.unwrap_or(0),
                )),
                memory: Some(value(
                    o.system.max_memory_per_user,
                    d.quota.memory.unwrap_or(0),
                )),
                disk: Some(value(o.system.max_disk_per_user, d.quota.disk.unwrap_or(0))),
            },
            requests_per_minute: value(o.limits.requests_per_minute, d.requests_per_minute),
            login_failures: value(o.limits.login_failures, d.login_failures),
            login_lockout_seconds: value(o.limits.login_lockout_seconds, d.login_lockout_seconds),
        }
    }
}

/// Reloads the overrides whenever the listener says the configuration changed (or may have while
/// it was away), until `shutdown`.
pub async fn follow(
    live: std::sync::Arc<LiveConfig>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    pool: sqlx::PgPool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        match crate::store::accounts::config(&pool).await {
            Ok((overrides, version)) => live.set(overrides, version),
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "the configuration could not be reloaded; keeping the last one")
            }
        }
    }
}
