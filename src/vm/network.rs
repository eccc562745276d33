//! A VM's network as its events record it: the mode (QEMU user-mode NAT, a tap device on a host
//! bridge, or no NIC at all), the bridge, and the ports forwarded from the host to the guest, each
//! with the host port it was given. The MAC address and the tap device's name are not recorded:
//! they are derived from the VM's id, so they are the same at every boot.

use serde::{Deserialize, Serialize};

/// How a VM is attached to a network.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// QEMU user-mode NAT: a virtio NIC; the guest reaches out through the host, and the host
    /// reaches the guest only through the forwarded ports.
    #[default]
    User,
    /// A virtio NIC on a tap device attached to a host bridge named in the server's
    /// `network.bridges`: the guest is on the bridge's network (no NAT, no forwarded ports).
    Bridge,
    /// No network interface at all.
    None,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::User => "user",
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
        }
    }
}

/// The transport a port forward carries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    pub guest: u16,
    /// The host port; QEMU listens on it on every host address.
    pub host: u16,
    pub protocol: Protocol,
}

/// A VM's network. Events written before networks existed read as user-mode NAT with no
/// forwarded ports (see `store::upcasters`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub ports: Vec<PortForward>,
    /// The host bridge of `bridge` mode; `None` in the other modes. Added in `VmCreated` and
    /// `VmReconfigured` v4; earlier networks read as none.
    #[serde(default)]
    pub bridge: Option<String>,
}

impl NetworkSpec {
    /// The host ports this network holds while its VM exists.
    pub fn held_ports(&self) -> Vec<(Protocol, u16)> {
        match self.mode {
            NetworkMode::User => self.ports.iter().map(|p| (p.protocol, p.host)).collect(),
            NetworkMode::Bridge | NetworkMode::None => Vec::new(),
        }
    }
}

/// The name of the VM's tap device in `bridge` mode: `vv` and the first six bytes of the SHA-256
/// of the VM's id in hex, 14 characters (Linux allows 15), the same at every boot.
pub fn tap_name(vm_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vm_id.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("vv{hex}")
}

/// The VM's MAC address: QEMU's locally administered prefix `52:54:00` and the first three bytes
/// of the SHA-256 of the VM's id, so it is the same at every boot and differs between VMs.
pub fn mac_address(vm_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vm_id.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_stable_per_vm_and_differs_between_vms() {
        let a = mac_address("vm-abc123def456");
        assert_eq!(a, mac_address("vm-abc123def456"));
        assert_ne!(a, mac_address("vm-abc123def457"));
        assert!(a.starts_with("52:54:00:"));
        assert_eq!(a.len(), 17);
    }

    #[test]
    fn the_tap_name_is_stable_per_vm_and_fits_linux() {
        let a = tap_name("vm-abc123def456");
        assert_eq!(a, tap_name("vm-abc123def456"));
        assert_ne!(a, tap_name("vm-abc123def457"));
        assert!(a.starts_with("vv") && a.len() == 14, "{a}");
    }

    #[test]
    fn a_vm_without_a_nic_holds_no_ports() {
        let ports = vec![PortForward {
            guest: 80,
            host: 20000,
            protocol: Protocol::Tcp,
        }];
        let user = NetworkSpec {
            mode: NetworkMode::User,
            ports: ports.clone(),
            bridge: None,
        };
        assert_eq!(user.held_ports(), [(Protocol::Tcp, 20000)]);
        let none = NetworkSpec {
            mode: NetworkMode::None,
            ports: ports.clone(),
            bridge: None,
        };
        assert!(none.held_ports().is_empty());
        let bridge = NetworkSpec {
            mode: NetworkMode::Bridge,
            ports,
            bridge: Some("br0".into()),
        };
        assert!(bridge.held_ports().is_empty());
    }
}
