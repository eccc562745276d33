//! The `network` a client may send on create and PATCH, the checks it must pass (each failure
//! names its field, e.g. `network.ports[0].guest`), and how forwards without a host port get one
//! from the configured range, and which bridge a `bridge`-mode VM joins (one of the configured
//! `network.bridges`). The result is a [`NetworkSpec`] the VM's events can record as is.

use std::collections::{BTreeSet, HashSet};

use serde::Deserialize;

use super::error::ApiError;
use crate::actors::ActorError;
use crate::app::AppState;
use crate::config::NetworkSettings;
use crate::store::{ports, StoreError};
use crate::vm::{NetworkMode, NetworkSpec, PortForward, Protocol};

/// Forwards one VM may have.
pub const MAX_PORTS: usize = 16;
/// Times a command is tried when a host port chosen for it is taken by another request first.
pub const CHOOSE_ATTEMPTS: u32 = 8;

/// `user`: QEMU user-mode NAT with a virtio NIC (the default). `bridge`: a virtio NIC on a tap
/// device attached to a host bridge the server's `network.bridges` names (admins only). `none`: no
/// NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeInput {
    User,
    None,
    Bridge,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortInput {
    /// The guest's port, 1 to 65535.
    pub guest: u32,
    /// The host port, within the server's `network.port_range_start..=port_range_end` (the
    /// bounds given here are their defaults; a server configured otherwise checks its own); one
    /// is chosen when left out.
    #[schema(minimum = 20000, maximum = 29999)]
    pub host: Option<u32>,
    /// `tcp` (the default) or `udp`.
    pub protocol: Option<Protocol>,
}

/// A VM's network; on PATCH it replaces the whole network.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInput {
    /// Defaults to `user`.
    pub mode: Option<ModeInput>,
    /// Host ports forwarded to the guest (`user` mode only), at most 16.
    pub ports: Option<Vec<PortInput>>,
    /// The host bridge, for `bridge` mode only: one of the server's `network.bridges`; defaults to
    /// the first of them.
    pub bridge: Option<String>,
}

/// A forward as checked, its host port still to be chosen when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedPort {
    pub guest: u16,
    pub host: Option<u16>,
    pub protocol: Protocol,
}

/// A network as checked: a mode the server supports and forwards within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub mode: NetworkMode,
    pub ports: Vec<RequestedPort>,
    /// The configured bridge a `bridge`-mode VM joins; `None` in the other modes.
    pub bridge: Option<String>,
}

impl NetworkRequest {
    /// Whether a host port is to be chosen for one of the forwards.
    pub fn chooses_ports(&self) -> bool {
        self.ports.iter().any(|p| p.host.is_none())
    }
}

/// Checks `input` against the port range and the bridges in `settings`.
pub fn check_network(
    input: &NetworkInput,
    settings: &NetworkSettings,
) -> Result<NetworkRequest, ApiError> {
    let mode = match input.mode.unwrap_or(ModeInput::User) {
        ModeInput::User => NetworkMode::User,
        ModeInput::None => NetworkMode::None,
        ModeInput::Bridge => NetworkMode::Bridge,
    };
    let bridge = check_bridge(mode, input.bridge.as_deref(), &settings.bridges)?;
    let given = input.ports.as_deref().unwrap_or_default();
    if mode != NetworkMode::User && !given.is_empty() {
        return Err(ApiError::validation(
            "network.ports",
            match mode {
                NetworkMode::Bridge => {
                    "A bridged VM is on the bridge's network itself; it forwards no ports."
                }
                NetworkMode::User | NetworkMode::None => {
                    "A VM without a network ('none') cannot forward ports."
                }
            },
        ));
    }
    if given.len() > MAX_PORTS {
        return Err(ApiError::validation(
            "network.ports",
            format!("A VM may forward at most {MAX_PORTS} ports."),
        ));
    }
    let (start, end) = (settings.port_range_start, settings.port_range_end);
    let mut guests = HashSet::new();
    let mut hosts = HashSet::new();
    let mut ports = Vec::with_capacity(given.len());
    for (i, port) in given.iter().enumerate() {
        let guest = u16::try_from(port.guest)
            .ok()
            .filter(|g| *g > 0)
            .ok_or_else(|| {
                ApiError::validation(
                    &format!("network.ports[{i}].guest"),
                    "The guest port must be between 1 and 65535.",
                )
            })?;
        let host = port
            .host
            .map(|h| {
                u16::try_from(h)
                    .ok()
                    .filter(|h| (start..=end).contains(h))
                    .ok_or_else(|| {
                        ApiError::validation(
                            &format!("network.ports[{i}].host"),
                            format!("The host port must be between {start} and {end}."),
                        )
                    })
            })
            .transpose()?;
        let protocol = port.protocol.unwrap_or_default();
        if !guests.insert((guest, protocol)) {
            return Err(ApiError::validation(
                &format!("network.ports[{i}].guest"),
                format!(
                    "Guest port {guest}/{} is forwarded twice.",
                    protocol.as_str()
                ),
            ));
        }
        if let Some(host) = host {
            if !hosts.insert((host, protocol)) {
                return Err(ApiError::validation(
                    &format!("network.ports[{i}].host"),
                    format!("Host port {host}/{} is given twice.", protocol.as_str()),
                ));
            }
        }
        ports.push(RequestedPort {
            guest,
            host,
            protocol,
        });
    }
    Ok(NetworkRequest {
        mode,
        ports,
        bridge,
    })
}

/// The bridge a VM in `mode` joins: the one `named` (which must be configured), or the first
/// configured; only `bridge` mode names one.
fn check_bridge(
    mode: NetworkMode,
    named: Option<&str>,
    configured: &[String],
) -> Result<Option<String>, ApiError> {
    if mode != NetworkMode::Bridge {
        return match named {
            Some(_) => Err(ApiError::validation(
                "network.bridge",
                "A bridge may be named only with mode 'bridge'.",
            )),
            None => Ok(None),
        };
    }
    let allowed = || match configured {
        [] => "this server allows no bridges (network.bridges is empty)".to_string(),
        list => format!("the server allows {}", list.join(", ")),
    };
    match named {
        Some(name) if configured.iter().any(|b| b == name) => Ok(Some(name.to_string())),
        Some(name) => Err(ApiError::validation(
            "network.bridge",
            format!(
                "The bridge '{name}' is not one VMs may join; {}.",
                allowed()
            ),
        )),
        None => configured.first().cloned().map(Some).ok_or_else(|| {
            ApiError::validation(
                "network.bridge",
                format!("Bridge mode needs a bridge: {}.", allowed()),
            )
        }),
    }
}

/// Refuses `bridge` mode to a caller whose role does not grant everything: a bridged guest is on
/// the host's network, beyond what VoidVM's quotas and NAT keep in check.
pub fn check_bridge_allowed(
    request: &NetworkRequest,
    user: &crate::auth::AuthUser,
) -> Result<(), ApiError> {
    if request.mode == NetworkMode::Bridge && !user.role.unlimited() {
        return Err(ApiError::Forbidden(
            "Bridge networks need a role that grants everything (such as 'admin').".into(),
        ));
    }
    Ok(())
}

/// Runs a command that records `request`'s network (`None`: the command records none), with the
/// host ports [`assign_ports`] chooses; `run` makes and executes the command. A port chosen here
/// that another request reserved first (`PORT_TAKEN` from the command's transaction) is chosen
/// again, up to [`CHOOSE_ATTEMPTS`] times; a port the client named is never retried.
pub async fn with_assigned_ports<T>(
    state: &AppState,
    request: Option<&NetworkRequest>,
    current: Option<(&str, &[PortForward])>,
    mut run: impl AsyncFnMut(Option<NetworkSpec>) -> Result<Result<T, ActorError>, ApiError>,
) -> Result<Result<T, ActorError>, ApiError> {
    let chooses = request.is_some_and(NetworkRequest::chooses_ports);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let network = match request {
            Some(r) => Some(assign_ports(state, r.clone(), current).await?),
            None => None,
        };
        match run(network).await? {
            Err(ActorError::Store(StoreError::PortTaken { .. }))
                if chooses && attempt < CHOOSE_ATTEMPTS => {}
            result => return Ok(result),
        }
    }
}

/// The network to record: each forward without a host port keeps the one `current` gives the same
/// guest port (on PATCH), or gets the lowest port of the range that no other VM holds. The
/// transaction that records it reserves the ports (409 `PORT_TAKEN` if another VM got one first).
pub async fn assign_ports(
    state: &AppState,
    request: NetworkRequest,
    current: Option<(&str, &[PortForward])>,
) -> Result<NetworkSpec, ApiError> {
    let settings = &state.settings.network;
    let (start, end) = (settings.port_range_start, settings.port_range_end);
    let mut chosen: BTreeSet<(Protocol, u16)> = request
        .ports
        .iter()
        .filter_map(|p| p.host.map(|h| (p.protocol, h)))
        .collect();
    let mut ports = Vec::with_capacity(request.ports.len());
    let mut taken: Option<(Protocol, BTreeSet<u16>)> = None;
    for port in &request.ports {
        let kept = current.and_then(|(_, forwards)| {
            forwards
                .iter()
                .find(|p| p.guest == port.guest && p.protocol == port.protocol)
                .map(|p| p.host)
                .filter(|h| (start..=end).contains(h) && !chosen.contains(&(port.protocol, *h)))
        });
        let host = match port.host.or(kept) {
            Some(host) => host,
            None => {
                let held = match &taken {
                    Some((protocol, held)) if *protocol == port.protocol => held.clone(),
                    Some(_) | None => {
                        let held = ports::taken(
                            &state.pool,
                            port.protocol,
                            start,
                            end,
                            current.map(|(id, _)| id),
                        )
                        .await?;
                        taken = Some((port.protocol, held.clone()));
                        held
                    }
                };
                (start..=end)
                    .find(|h| !held.contains(h) && !chosen.contains(&(port.protocol, *h)))
                    .ok_or_else(|| ApiError::Conflict {
                        code: "NO_FREE_PORT",
                        message: format!(
                            "Every host port from {start} to {end} is forwarded already."
                        ),
                    })?
            }
        };
        chosen.insert((port.protocol, host));
        ports.push(PortForward {
            guest: port.guest,
            host,
            protocol: port.protocol,
        });
    }
    Ok(NetworkSpec {
        mode: request.mode,
        ports,
        bridge: request.bridge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<NetworkRequest, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn input(value: serde_json::Value) -> NetworkInput {
        serde_json::from_value(value).expect("a network input")
    }

    #[test]
    fn the_default_is_user_mode_without_ports() {
        let checked = check_network(&NetworkInput::default(), &NetworkSettings::default()).unwrap();
        assert_eq!(checked.mode, NetworkMode::User);
        assert!(checked.ports.is_empty());
    }

    #[test]
    fn bad_forwards_name_their_field() {
        let s = NetworkSettings::default();
        let check = |v| field(check_network(&input(v), &s));
        assert_eq!(
            check(serde_json::json!({"mode": "bridge"})),
            "network.bridge"
        );
        assert_eq!(
            check(serde_json::json!({"bridge": "br0"})),
            "network.bridge"
        );
        assert_eq!(
            check(serde_json::json!({"ports": [{"guest": 80}, {"guest": 0}]})),
            "network.ports[1].guest"
        );
        assert_eq!(
            check(serde_json::json!({"ports": [{"guest": 70000}]})),
            "network.ports[0].guest"
        );
        assert_eq!(
            check(serde_json::json!({"ports": [{"guest": 80, "host": 80}]})),
            "network.ports[0].host"
        );
        assert_eq!(
            check(serde_json::json!({"ports": [{"guest": 80}, {"guest": 80, "protocol": "tcp"}]})),
            "network.ports[1].guest"
        );
        assert_eq!(
            check(serde_json::json!({"ports": [{"guest": 80, "host": 20001},
                {"guest": 81, "host": 20001}]})),
            "network.ports[1].host"
        );
        assert_eq!(
            check(serde_json::json!({"mode": "none", "ports": [{"guest": 80}]})),
            "network.ports"
        );
        let many: Vec<_> = (1..=17).map(|g| serde_json::json!({"guest": g})).collect();
        assert_eq!(check(serde_json::json!({"ports": many})), "network.ports");
    }

    #[test]
    fn bridge_mode_joins_a_configured_bridge_and_forwards_nothing() {
        let s = NetworkSettings {
            bridges: vec!["br-a".into(), "br-b".into()],
            ..NetworkSettings::default()
        };
        let check = |v| check_network(&input(v), &s);
        let first = check(serde_json::json!({"mode": "bridge"})).unwrap();
        assert_eq!(
            (first.mode, first.bridge.as_deref()),
            (NetworkMode::Bridge, Some("br-a"))
        );
        let named = check(serde_json::json!({"mode": "bridge", "bridge": "br-b"})).unwrap();
        assert_eq!(named.bridge.as_deref(), Some("br-b"));
        assert_eq!(
            field(check(
                serde_json::json!({"mode": "bridge", "bridge": "br-c"})
            )),
            "network.bridge"
        );
        assert_eq!(
            field(check(serde_json::json!({"mode": "user", "bridge": "br-a"}))),
            "network.bridge"
        );
        assert_eq!(
            field(check(
                serde_json::json!({"mode": "bridge", "ports": [{"guest": 80}]})
            )),
            "network.ports"
        );
        assert_eq!(check(serde_json::json!({})).unwrap().bridge, None);
    }

    #[test]
    fn one_guest_port_may_be_forwarded_for_tcp_and_udp() {
        let checked = check_network(
            &input(serde_json::json!({"ports": [{"guest": 53}, {"guest": 53, "protocol": "udp"}]})),
            &NetworkSettings::default(),
        )
        .unwrap();
        assert_eq!(checked.ports.len(), 2);
        assert_eq!(checked.ports[1].protocol, Protocol::Udp);
    }
}
