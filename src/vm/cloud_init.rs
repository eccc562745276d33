//! A VM's cloud-init settings and boot order, as its events record them.
//!
//! The log holds only what may be shown to anyone who can read the VM's events: the hostname, the
//! users with their SSH public keys, the network config, and *whether* a user has a password and
//! whether user-data was given. The secret values (password hashes, the user-data text) are
//! [`CloudInitSecrets`]; they travel beside the command (in its conditions) and are written to
//! `vm_cloud_init_secrets` in the command's transaction, never to the log.

use serde::{Deserialize, Serialize};

/// One user the guest gets, as the log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudUser {
    pub name: String,
    pub ssh_authorized_keys: Vec<String>,
    /// Whether a password was given (its hash is kept outside the event log).
    pub password_set: bool,
}

/// What cloud-init is told at the next boot, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitSpec {
    pub hostname: Option<String>,
    pub users: Vec<CloudUser>,
    /// Whether user-data was given (its text is kept outside the event log).
    pub user_data_set: bool,
    /// NoCloud `network-config` (v1 or v2 YAML), given verbatim.
    pub network_config: Option<String>,
}

/// The secret parts of a VM's cloud-init settings. `Debug` shows no value.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitSecrets {
    /// SHA-512 crypt hashes (`$6$...`) of the users' passwords, by user name.
    pub password_hashes: Vec<(String, String)>,
    /// The user-data, given verbatim.
    pub user_data: Option<String>,
}

impl std::fmt::Debug for CloudInitSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudInitSecrets")
            .field("passwords", &self.password_hashes.len())
            .field("user_data", &self.user_data.is_some())
            .finish()
    }
}

/// A device the firmware may boot from, in a VM's `bootOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Disk,
    Cdrom,
    Network,
}

impl BootDevice {
    /// The letter QEMU's `-boot order=` uses for it.
    pub fn qemu_letter(self) -> char {
        match self {
            BootDevice::Disk => 'c',
            BootDevice::Cdrom => 'd',
            BootDevice::Network => 'n',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secrets = CloudInitSecrets {
            password_hashes: vec![("root".into(), "$6$salt$hash".into())],
            user_data: Some("#cloud-config\npassword: hunter2".into()),
        };
        let shown = format!("{secrets:?}");
        assert!(
            !shown.contains("hash") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
