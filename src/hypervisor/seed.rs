//! The NoCloud seed: the `meta-data`, `user-data` and `network-config` files cloud-init reads
//! from a volume labelled `cidata`, rendered from a VM's settings (a pure function), and written
//! as an ISO 9660 image by an [`IsoWriter`] (the real one runs `genisoimage`, installed by
//! `scripts/setup.sh`: no maintained Rust crate writes ISO 9660 with Rock Ridge yet).
//!
//! Values are written as JSON strings, which YAML reads as double-quoted scalars, so no value can
//! add keys of its own.

use std::path::Path;
use std::process::Stdio;

use async_trait::async_trait;

use super::tools::stderr_summary;
use super::HypervisorError;
use crate::vm::{CloudInitSecrets, CloudInitSpec};

/// The volume label cloud-init's NoCloud source looks for.
pub const SEED_LABEL: &str = "cidata";

/// The files of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: Option<String>,
}

impl Seed {
    /// The seed of VM `vm_id` at cloud-init revision `revision` (a new revision is a new
    /// `instance-id`, so cloud-init runs again). `userData`, when given, is the user-data
    /// verbatim; otherwise a `#cloud-config` is generated from the hostname and users.
    pub fn render(
        vm_id: &str,
        revision: u32,
        spec: &CloudInitSpec,
        secrets: &CloudInitSecrets,
    ) -> Seed {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut meta_data = format!("instance-id: {}\n", q(&format!("{vm_id}-{revision}")));
        if let Some(hostname) = &spec.hostname {
            meta_data.push_str(&format!("local-hostname: {}\n", q(hostname)));
        }
        let user_data = match &secrets.user_data {
            Some(verbatim) => verbatim.clone(),
            None => {
                let mut out = String::from("#cloud-config\n");
                if let Some(hostname) = &spec.hostname {
                    out.push_str(&format!("hostname: {}\n", q(hostname)));
                }
                if !spec.users.is_empty() {
                    out.push_str("users:\n");
                }
                for user in &spec.users {
                    out.push_str(&format!("  - name: {}\n", q(&user.name)));
                    if !user.ssh_authorized_keys.is_empty() {
                        out.push_str("    ssh_authorized_keys:\n");
                        for key in &user.ssh_authorized_keys {
                            out.push_str(&format!("      - {}\n", q(key)));
                        }
                    }
                    let hash = secrets
                        .password_hashes
                        .iter()
                        .find(|(name, _)| *name == user.name);
                    if let Some((_, hash)) = hash {
                        out.push_str(&format!("    passwd: {}\n", q(hash)));
                        out.push_str("    lock_passwd: false\n");
                    }
                }
                out
            }
        };
        Seed {
            meta_data,
            user_data,
            network_config: spec.network_config.clone(),
        }
    }

    /// The files, by name.
    pub fn files(&self) -> Vec<(&'static str, &[u8])> {
        let mut files = vec![
            ("meta-data", self.meta_data.as_bytes()),
            ("user-data", self.user_data.as_bytes()),
        ];
        if let Some(network) = &self.network_config {
            files.push(("network-config", network.as_bytes()));
        }
        files
    }
}

/// Writes ISO 9660 images.
#[async_trait]
pub trait IsoWriter: Send + Sync {
    /// Writes `files` (flat, by name) into a volume labelled `label` at `out`, replacing it
    /// whole: a crash leaves the old image or the new one, never half of one.
    async fn write(
        &self,
        label: &str,
        files: &[(&str, &[u8])],
        out: &Path,
    ) -> Result<(), HypervisorError>;
}

/// [`IsoWriter`] over `genisoimage` (Joliet and Rock Ridge, so names keep their case and dashes).
#[derive(Debug, Clone, Default)]
pub struct GenIsoImage;

#[async_trait]
impl IsoWriter for GenIsoImage {
    async fn write(
        &self,
        label: &str,
        files: &[(&str, &[u8])],
        out: &Path,
    ) -> Result<(), HypervisorError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = out.with_file_name(format!(".{name}.d"));
        let tmp = out.with_file_name(format!(".{name}.tmp"));
        let unexpected = |e: std::io::Error, what: &str| {
            HypervisorError::Unexpected(anyhow::Error::new(e).context(what.to_string()))
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| unexpected(e, "could not make the seed's directory"))?;
        for (file, content) in files {
            tokio::fs::write(dir.join(file), content)
                .await
                .map_err(|e| unexpected(e, "could not write a seed file"))?;
        }
        let output = tokio::process::Command::new("genisoimage")
            .args([
                "-quiet",
                "-joliet",
                "-rock",
                "-input-charset",
                "utf-8",
                "-volid",
                label,
                "-output",
            ])
            .arg(&tmp)
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let output = output.map_err(|e| {
            HypervisorError::Permanent(format!(
                "genisoimage cannot be run ({e}); run scripts/setup.sh"
            ))
        })?;
        if !output.status.success() {
            return Err(HypervisorError::Permanent(format!(
                "genisoimage failed: {}",
                stderr_summary(&output.stderr)
            )));
        }
        tokio::fs::rename(&tmp, out)
            .await
            .map_err(|e| unexpected(e, "could not put the seed in place"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::CloudUser;

    fn spec() -> CloudInitSpec {
        CloudInitSpec {
            hostname: Some("web-1".into()),
            users: vec![CloudUser {
                name: "alice".into(),
                ssh_authorized_keys: vec!["ssh-ed25519 AAAA alice@laptop".into()],
                password_set: true,
            }],
            user_data_set: false,
            network_config: None,
        }
    }

    #[test]
    fn the_generated_user_data_has_the_hostname_users_keys_and_hash() {
        let secrets = CloudInitSecrets {
            password_hashes: vec![("alice".into(), "$6$salt$hash".into())],
            user_data: None,
        };
        let seed = Seed::render("vm-1", 2, &spec(), &secrets);
        assert_eq!(
            seed.meta_data,
            "instance-id: \"vm-1-2\"\nlocal-hostname: \"web-1\"\n"
        );
        assert_eq!(
            seed.user_data,
            "#cloud-config\nhostname: \"web-1\"\nusers:\n  - name: \"alice\"\n    \
             ssh_authorized_keys:\n      - \"ssh-ed25519 AAAA alice@laptop\"\n    \
             passwd: \"$6$salt$hash\"\n    lock_passwd: false\n"
        );
        assert_eq!(seed.files().len(), 2, "no network-config unless given");
    }

    #[test]
    fn user_data_given_is_used_verbatim_and_network_config_is_a_file() {
        let mut spec = spec();
        spec.users.clear();
        spec.network_config = Some("version: 2\n".into());
        let secrets = CloudInitSecrets {
            password_hashes: vec![],
            user_data: Some("#!/bin/sh\necho hi\n".into()),
        };
        let seed = Seed::render("vm-1", 1, &spec, &secrets);
        assert_eq!(seed.user_data, "#!/bin/sh\necho hi\n");
        let files = seed.files();
        assert_eq!(files[2], ("network-config", b"version: 2\n".as_slice()));
    }

    #[test]
    fn a_value_cannot_add_keys() {
        let mut spec = spec();
        spec.hostname = Some("a\"\nroot: x".into());
        let seed = Seed::render("vm-1", 1, &spec, &CloudInitSecrets::default());
        assert_eq!(seed.meta_data.lines().count(), 2, "{}", seed.meta_data);
    }
}
