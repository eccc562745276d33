//! `/system`: the host and this node (`GET /system/info`), and what happened over a period
//! (`GET /system/stats`). Both need the permission `system:read`.

pub mod answers;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoResponses;

use self::answers::{
    Capacity, CpuInfo, DiskInfo, EventCounts, HostSystem, QemuInfo, ResourceSeries, Resources,
    SystemInfo, SystemStats, VmCounts,
};
use super::answers::errors::{Invalid, Unauthorized, Unavailable};
use super::answers::{Envelope, ErrorEnvelope};
use super::error::ApiError;
use super::{body, envelope, API_VERSION};
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::{system_samples, system_stats};
use crate::system::info;
use crate::system::series::{self, Period};

/// The role does not grant `system:read`; `error.details` names it (`FORBIDDEN`).
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct NoSystemRead(pub ErrorEnvelope);

/// When the binary was built (`build.rs`).
pub const BUILD_TIME: &str = env!("BUILD_TIME_UTC");

#[utoipa::path(
    get,
    path = "/api/v1/system/info",
    tag = "system",
    responses(
        (status = 200, description = "The server, this node and its host.", body = Envelope<SystemInfo>),
        Unauthorized,
        NoSystemRead
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("system:read")))
)]
#[tracing::instrument(name = "system_info", skip_all, fields(user_id = %user.id))]
pub async fn info(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::SystemRead)?;
    let system = &state.system;
    let host = info::host_now(system).await;
    let os = info::os();
    let kvm_support = system.kvm_support(state.hypervisor.accel()).await;
    let percent = |part: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            round2(part as f64 / total as f64 * 100.0)
        }
    };
    let memory = &host.memory;
    let disk = &host.disk;
    let answer = SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        build_time: BUILD_TIME.to_string(),
        uptime: system.started.elapsed().as_secs(),
        api_version: API_VERSION.to_string(),
        node: system.node.clone(),
        system: HostSystem {
            os: os.os,
            arch: os.arch,
            kernel: os.kernel,
            hostname: os.hostname,
        },
        resources: Resources {
            cpu: CpuInfo {
                cores: host.cpu.cores,
                model: info::cpu_model(),
                usage: round2(f64::from(host.cpu.percent)),
            },
            memory: Capacity {
                total: memory.total_bytes,
                used: memory.used_bytes,
                free: memory.available_bytes,
                usage: percent(memory.used_bytes, memory.total_bytes),
            },
            disk: DiskInfo {
                capacity: Capacity {
                    total: disk.total_bytes,
                    used: disk.used_bytes,
                    free: disk.available_bytes,
                    usage: percent(disk.used_bytes, disk.total_bytes),
                },
                path: disk.path.clone(),
            },
        },
        qemu: QemuInfo {
            version: info::qemu_version(&state.hypervisor.version()),
            kvm_support,
            supported_archs: info::supported_archs(&system.qemu),
        },
    };
    Ok(envelope::ok(answer, "System information."))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back: 1h, 24h, 7d or 30d (default 24h).
    #[param(pattern = "^(1h|24h|7d|30d)$")]
    period: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/system/stats",
    tag = "system",
    params(StatsQuery),
    responses(
        (status = 200, description = "VMs by status now; the host's CPU and memory over the period (this node's, at most 120 points each); the VM events of the period.", body = Envelope<SystemStats>),
        Invalid,
        Unauthorized,
        NoSystemRead,
        Unavailable
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("system:read")))
)]
#[tracing::instrument(name = "system_stats", skip_all, fields(user_id = %user.id))]
pub async fn stats(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::SystemRead)?;
    let query: StatsQuery = body::query(&req)?;
    let period = match query.period.as_deref() {
        None => Period::Day,
        Some(p) => Period::parse(p).map_err(|e| ApiError::validation("period", e.to_string()))?,
    };
    let from = period.start(Utc::now());
    let pool = &state.pool;
    let node = &state.system.node;
    let (vms, events, buckets) = futures::try_join!(
        system_stats::vms_by_status(pool),
        system_stats::events_since(pool, from),
        system_samples::series(pool, node, from, period.bucket_secs()),
    )?;
    let (cpu_usage, memory_usage) = series::series(buckets);
    let answer = SystemStats {
        period: period.as_str().to_string(),
        node: node.clone(),
        vms: VmCounts::from_rows(&vms),
        resources: ResourceSeries {
            cpu_usage,
            memory_usage,
        },
        events: EventCounts {
            total: events.total,
            errors: events.errors,
            warnings: events.warnings,
        },
    };
    Ok(envelope::ok(answer, "System statistics."))
}

fn round2(value: f64) -> f64 {
    if value.is_finite() {
        (value * 100.0).round() / 100.0
    } else {
        0.0
    }
}
