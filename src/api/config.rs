//! `GET /config` and `PUT /config`: the configuration as the system page shows it, in sections
//! (`system`, `limits`, `network`, `storage`). The live settings change with a PUT, validated
//! field by field, recorded as `ConfigChanged`, and in force on every node at once; the others
//! only change with the server's own settings and a restart, which `restartRequired` names.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::answers::errors::{Forbidden, Invalid, Unauthorized};
use super::answers::Envelope;
use super::body;
use super::envelope;
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use crate::accounts::live::{LiveSettings, RESTART_REQUIRED};
use crate::accounts::ConfigOverrides;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::{accounts, Via};

/// `system`: quotas of users whose role does not grant everything, and this node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemSection {
    /// Live.
    pub max_vms_per_user: u64,
    /// Live.
    pub max_vcpus_per_user: u64,
    /// MiB. Live.
    pub max_memory_per_user: u64,
    /// GiB. Live.
    pub max_disk_per_user: u64,
    pub node_id: String,
    pub workers: usize,
    pub version: &'static str,
}

/// `limits`: request rates (live) and what one VM may ask for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSection {
    /// Per user (per address before login), per node. Live.
    pub requests_per_minute: u32,
    /// Live.
    pub login_failures: u32,
    /// Live.
    pub login_lockout_seconds: u64,
    pub ws_connections_per_user: usize,
    pub vm_cpu_max: u32,
    pub vm_memory_max_mib: u64,
    pub vm_disk_max_gib: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSection {
    pub listen: String,
    pub nats_url: String,
    pub nats_stream: String,
    /// The host ports VMs' port forwards are given (`network.port_range_start`).
    pub vm_port_range_start: u16,
    /// Included.
    pub vm_port_range_end: u16,
    /// The host bridges `bridge`-mode VMs may join (`network.bridges`); the first is the default.
    pub vm_bridges: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSection {
    pub data_dir: String,
    pub images_dir: String,
    pub snapshot_every: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub system: SystemSection,
    pub limits: LimitsSection,
    pub network: NetworkSection,
    pub storage: StorageSection,
    /// The fields (`section.field`) a PUT cannot change: they take effect at start-up, from the
    /// server's settings file or `VOIDVM_*` variables.
    pub restart_required: Vec<&'static str>,
    /// The config stream's version (0 before the first change).
    pub version: i64,
}

fn view(state: &AppState) -> ConfigView {
    let (_, version) = state.live.overrides();
    view_with(state, state.live.get(), version)
}

/// The configuration with `live` in force at config `version`.
fn view_with(state: &AppState, live: LiveSettings, version: i64) -> ConfigView {
    let s = &state.settings;
    ConfigView {
        system: SystemSection {
            max_vms_per_user: live.quota.vms.unwrap_or(0),
            max_vcpus_per_user: live.quota.vcpus.unwrap_or(0),
            max_memory_per_user: live.quota.memory.unwrap_or(0),
            max_disk_per_user: live.quota.disk.unwrap_or(0),
            node_id: state.node_id.clone(),
            workers: s.workers,
            version: env!("CARGO_PKG_VERSION"),
        },
        limits: LimitsSection {
            requests_per_minute: live.requests_per_minute,
            login_failures: live.login_failures,
            login_lockout_seconds: live.login_lockout_seconds,
            ws_connections_per_user: s.ws.max_connections_per_user,
            vm_cpu_max: s.limits.cpu_max,
            vm_memory_max_mib: s.limits.memory_max_mib,
            vm_disk_max_gib: s.limits.disk_max_gib,
        },
        network: NetworkSection {
            listen: s.listen.to_string(),
            nats_url: s.nats_url.clone(),
            nats_stream: s.nats.stream.clone(),
            vm_port_range_start: s.network.port_range_start,
            vm_port_range_end: s.network.port_range_end,
            vm_bridges: s.network.bridges.clone(),
        },
        storage: StorageSection {
            data_dir: s.data_dir.display().to_string(),
            images_dir: s.images_dir().display().to_string(),
            snapshot_every: s.snapshot_every,
        },
        restart_required: RESTART_REQUIRED.to_vec(),
        version,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/config",
    operation_id = "get_config",
    tag = "system",
    responses(
        (status = 200, description = "The configuration in force on this node.", body = Envelope<ConfigView>),
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("config:read")))
)]
pub async fn get(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ConfigRead)?;
    Ok(envelope::ok(view(&state), "The configuration."))
}

/// Refuses what a PUT cannot change, naming the field: an unknown section, or a setting that
/// needs a restart given a value other than the one in force. One given the value in force is
/// dropped, so a client may put back the sections it read with only live fields changed. A
/// section given as `null` is as if absent (the document's sections are optional, and take it).
fn check_sections(body: &mut Value, in_force: &Value) -> Result<(), ApiError> {
    let Some(sections) = body.as_object_mut() else {
        return Err(ApiError::validation(
            "body",
            "The body must be a JSON object.",
        ));
    };
    for (section, fields) in sections.iter_mut() {
        if !matches!(
            section.as_str(),
            "system" | "limits" | "network" | "storage"
        ) {
            return Err(ApiError::validation(
                section,
                "Not a section: system, limits, network or storage.",
            ));
        }
        if fields.is_null() {
            continue;
        }
        let Some(fields) = fields.as_object_mut() else {
            return Err(ApiError::validation(
                section,
                "A section must be a JSON object.",
            ));
        };
        let mut unchanged = Vec::new();
        for (field, value) in fields.iter() {
            let path = format!("{section}.{field}");
            if !RESTART_REQUIRED.contains(&path.as_str()) {
                continue;
            }
            if in_force[section.as_str()].get(field) == Some(value) {
                unchanged.push(field.clone());
                continue;
            }
            return Err(ApiError::validation(
                &path,
                format!("{path} is restartRequired: it takes effect at start-up; change it in the server's settings and restart."),
            ));
        }
        for field in unchanged {
            fields.remove(&field);
        }
    }
    sections.retain(|_, fields| !fields.is_null());
    Ok(())
}

#[utoipa::path(
    put,
    path = "/api/v1/config",
    tag = "system",
    params(KeyHeader),
    request_body(content = super::config_update::ConfigUpdate, description = "Sections with the live fields to change: a number sets one, `null` returns it to the server's setting. A field that needs a restart may be given with the value in force (so the sections of a GET can be put back), and any other value of it is refused. E.g. `{\"system\": {\"maxVmsPerUser\": 10}, \"limits\": {\"requestsPerMinute\": 300}}`."),
    responses(
        (status = 200, description = "Changed; recorded as `ConfigChanged` and in force on every node. A request that changes nothing answers the configuration as it is, with message `Nothing to change.`, and records nothing.", body = Envelope<ConfigView>),
        Invalid,
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("config:update")))
)]
pub async fn put(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ConfigUpdate)?;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let mut body = body.into_inner().0;
    let in_force = serde_json::to_value(view(&state))
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("showing the config")))?;
    // Before the sections are read, so no refusal names a key PostgreSQL could not store.
    super::input::check_json(&body)?;
    check_sections(&mut body, &in_force)?;
    // What is left of `network` and `storage` is empty (their fields all need a restart).
    if let Some(sections) = body.as_object_mut() {
        sections.remove("network");
        sections.remove("storage");
    }
    let patch: ConfigOverrides = body::typed(body)?;
    let (current, _) = state.live.overrides();
    if let Some((field, message)) = current.patched(&patch).invalid() {
        return Err(ApiError::validation(field, format!("{field} {message}.")));
    }
    let mut applied = None;
    let response = retry
        .transaction(&state, async |tx| {
            let written = accounts::change_config(tx, &user.meta(Via::Rest), patch)
                .await
                .map_err(ApiError::from_account)?;
            let view = view_with(
                &state,
                state.live.resolve(&written.overrides),
                written.version,
            );
            let message = if written.changed {
                "Configuration changed."
            } else {
                super::envelope::NOTHING_TO_CHANGE
            };
            applied = Some((written.overrides, written.version));
            Ok(envelope_answer(StatusCode::OK, view, message)?)
        })
        .await?;
    // In force here once committed (other nodes take it from the log's notification).
    if let Some((overrides, version)) = applied {
        state.live.set(overrides, version);
    }
    Ok(response)
}
