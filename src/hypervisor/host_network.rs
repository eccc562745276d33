//! The host side of `bridge` mode: whether a bridge exists, and putting a VM's tap device on it.
//!
//! QEMU opens the tap itself (`-netdev tap,ifname=...`): as root it creates the device when it is
//! missing, and a device it created is not persistent, so the kernel removes it when QEMU exits
//! for any reason (a stop, a guest power-off, a crash, a kill). VoidVM only checks the bridge
//! before the start, deletes a persistent leftover of the same name (made by hand) before QEMU
//! opens it, and attaches the tap to the bridge while the new machine is still paused. The real
//! implementation runs iproute2's `ip`; unit tests may fake the trait.

use std::path::Path;
use std::process::Stdio;

use async_trait::async_trait;

use super::tools::stderr_summary;
use super::{HypervisorError, MachineSpec};
use crate::vm::NetworkMode;

/// What `bridge` mode needs of the host's network.
#[async_trait]
pub trait HostNetwork: Send + Sync {
    /// Whether a bridge named `bridge` exists on this host.
    async fn bridge_exists(&self, bridge: &str) -> Result<bool, HypervisorError>;
    /// Makes `tap` a port of `bridge` and brings it up (again, if it already is).
    async fn attach_tap(&self, tap: &str, bridge: &str) -> Result<(), HypervisorError>;
    /// Deletes the device `tap`; one that does not exist is already deleted.
    async fn delete_tap(&self, tap: &str) -> Result<(), HypervisorError>;
}

/// The bridge of a machine in `bridge` mode (`None` in the other modes), which must exist on this
/// host: a missing one fails the start at once, naming it.
pub async fn bridge_of(
    net: &dyn HostNetwork,
    spec: &MachineSpec,
) -> Result<Option<String>, HypervisorError> {
    if spec.network.mode != NetworkMode::Bridge {
        return Ok(None);
    }
    let bridge = spec.network.bridge.clone().ok_or_else(|| {
        HypervisorError::Permanent("the machine's bridge network names no bridge".to_string())
    })?;
    if !net.bridge_exists(&bridge).await? {
        return Err(HypervisorError::Permanent(format!(
            "the host bridge '{bridge}' does not exist"
        )));
    }
    Ok(Some(bridge))
}

/// [`HostNetwork`] with iproute2's `ip` and the kernel's `/sys/class/net`.
pub struct IpCommand;

impl IpCommand {
    async fn ip(&self, args: &[&str]) -> Result<(), HypervisorError> {
        let output = tokio::process::Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| HypervisorError::Permanent(format!("`ip` cannot be run ({e})")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(HypervisorError::Permanent(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                stderr_summary(&output.stderr)
            )))
        }
    }
}

fn interface_dir(name: &str) -> std::path::PathBuf {
    Path::new("/sys/class/net").join(name)
}

#[async_trait]
impl HostNetwork for IpCommand {
    async fn bridge_exists(&self, bridge: &str) -> Result<bool, HypervisorError> {
        Ok(interface_dir(bridge).join("bridge").is_dir())
    }

    async fn attach_tap(&self, tap: &str, bridge: &str) -> Result<(), HypervisorError> {
        self.ip(&["link", "set", "dev", tap, "master", bridge, "up"])
            .await
    }

    async fn delete_tap(&self, tap: &str) -> Result<(), HypervisorError> {
        if !interface_dir(tap).exists() {
            return Ok(());
        }
        match self.ip(&["link", "delete", "dev", tap]).await {
            // Gone in between (its QEMU exited): deleted all the same.
            Err(_) if !interface_dir(tap).exists() => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::BootSource;
    use crate::vm::NetworkSpec;

    /// A host with the bridges it is given and no taps.
    struct Bridges(Vec<&'static str>);

    #[async_trait]
    impl HostNetwork for Bridges {
        async fn bridge_exists(&self, bridge: &str) -> Result<bool, HypervisorError> {
            Ok(self.0.contains(&bridge))
        }
        async fn attach_tap(&self, _: &str, _: &str) -> Result<(), HypervisorError> {
            Ok(())
        }
        async fn delete_tap(&self, _: &str) -> Result<(), HypervisorError> {
            Ok(())
        }
    }

    fn spec(mode: NetworkMode, bridge: Option<&str>) -> MachineSpec {
        MachineSpec {
            vm_id: "vm-1".into(),
            cpu: 1,
            memory_mib: 128,
            disk_gib: 1,
            boot: BootSource::BlankDisk,
            network: NetworkSpec {
                mode,
                ports: Vec::new(),
                bridge: bridge.map(String::from),
            },
            seed: None,
            boot_order: Vec::new(),
            iso: None,
        }
    }

    #[tokio::test]
    async fn only_a_bridged_machine_needs_its_bridge_and_a_missing_one_is_named() {
        let host = Bridges(vec!["br-lan"]);
        let user = spec(NetworkMode::User, None);
        assert_eq!(bridge_of(&host, &user).await.unwrap(), None);
        let lan = spec(NetworkMode::Bridge, Some("br-lan"));
        assert_eq!(
            bridge_of(&host, &lan).await.unwrap().as_deref(),
            Some("br-lan")
        );
        let gone = spec(NetworkMode::Bridge, Some("br-gone"));
        match bridge_of(&host, &gone).await {
            Err(HypervisorError::Permanent(why)) => assert!(why.contains("'br-gone'"), "{why}"),
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }
}
