//! The `cloudInit` and `bootOrder` a client may send on create and PATCH, the checks they must
//! pass (each failure names its field, e.g. `cloudInit.users[0].name`), and their split into what
//! the event log may record ([`CloudInitSpec`]) and the secrets kept outside it
//! ([`CloudInitSecrets`]). Passwords are hashed here (SHA-512 crypt, as `passwd:` in cloud-config
//! takes them), so their plain text is never stored anywhere.

use std::collections::HashSet;

use rand::Rng;
use serde::Deserialize;

use super::error::ApiError;
use crate::vm::{BootDevice, CloudInitSecrets, CloudInitSpec, CloudUser};

/// Users one VM's cloud-init may create.
pub const MAX_USERS: usize = 16;
/// SSH keys one user may have.
pub const MAX_KEYS: usize = 32;
/// The longest SSH public key line (an RSA 16384-bit key fits).
pub const MAX_KEY_LEN: usize = 8192;
/// The longest password.
pub const MAX_PASSWORD_LEN: usize = 256;
/// The most user-data, in bytes.
pub const MAX_USER_DATA: usize = 32 * 1024;
/// The most network-config, in bytes.
pub const MAX_NETWORK_CONFIG: usize = 16 * 1024;

/// One user the guest gets.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudUserInput {
    /// A Linux user name: a lower-case letter or `_`, then up to 31 lower-case letters, digits,
    /// `_` or `-`. `root` writes root's keys.
    #[schema(pattern = "^[a-z_][a-z0-9_-]{0,31}$")]
    pub name: String,
    /// Public keys for `~/.ssh/authorized_keys`, one line each (at most 32).
    pub ssh_authorized_keys: Option<Vec<String>>,
    /// Stored and written to the seed only as a SHA-512 crypt hash; never in the event log.
    pub password: Option<String>,
}

/// What cloud-init (NoCloud) is told at the next boot; on PATCH it replaces the whole settings.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudInitInput {
    /// The guest's hostname (RFC 1123), as `local-hostname` in meta-data and `hostname` in the
    /// generated user-data.
    #[schema(
        max_length = 253,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub hostname: Option<String>,
    /// Users the generated user-data creates (at most 16). Not together with `userData`.
    pub users: Option<Vec<CloudUserInput>>,
    /// User-data given verbatim (at most 32 KiB), instead of the generated `#cloud-config`.
    /// Treated as a secret: never in the event log or in `GET /vms/{id}`.
    pub user_data: Option<String>,
    /// NoCloud `network-config` (at most 16 KiB), written verbatim.
    pub network_config: Option<String>,
}

/// Checks `input` and splits it into what the log records and the secrets.
pub fn check_cloud_init(
    input: &CloudInitInput,
) -> Result<(CloudInitSpec, CloudInitSecrets), ApiError> {
    if let Some(hostname) = &input.hostname {
        check_hostname(hostname)?;
    }
    let users = input.users.as_deref().unwrap_or_default();
    if input.user_data.is_some() && !users.is_empty() {
        return Err(ApiError::validation(
            "cloudInit.userData",
            "Give either userData (used verbatim) or users (in the generated cloud-config), not both.",
        ));
    }
    if users.len() > MAX_USERS {
        return Err(ApiError::validation(
            "cloudInit.users",
            format!("At most {MAX_USERS} users."),
        ));
    }
    let mut names = HashSet::new();
    let mut spec_users = Vec::with_capacity(users.len());
    let mut password_hashes = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let field = format!("cloudInit.users[{i}]");
        check_user_name(&user.name, &format!("{field}.name"))?;
        if !names.insert(user.name.as_str()) {
            return Err(ApiError::validation(
                &format!("{field}.name"),
                format!("The user '{}' is given twice.", user.name),
            ));
        }
        let keys = user.ssh_authorized_keys.clone().unwrap_or_default();
        if keys.len() > MAX_KEYS {
            return Err(ApiError::validation(
                &format!("{field}.sshAuthorizedKeys"),
                format!("At most {MAX_KEYS} keys per user."),
            ));
        }
        for (j, key) in keys.iter().enumerate() {
            check_key(key, &format!("{field}.sshAuthorizedKeys[{j}]"))?;
        }
        if let Some(password) = &user.password {
            let field = format!("{field}.password");
            if password.is_empty() || password.chars().count() > MAX_PASSWORD_LEN {
                return Err(ApiError::validation(
                    &field,
                    format!("A password has 1 to {MAX_PASSWORD_LEN} characters."),
                ));
            }
            password_hashes.push((user.name.clone(), hash_password(password, &field)?));
        }
        spec_users.push(CloudUser {
            name: user.name.clone(),
            ssh_authorized_keys: keys,
            password_set: user.password.is_some(),
        });
    }
    if let Some(user_data) = &input.user_data {
        check_size(user_data, MAX_USER_DATA, "cloudInit.userData")?;
    }
    if let Some(network_config) = &input.network_config {
        check_size(
            network_config,
            MAX_NETWORK_CONFIG,
            "cloudInit.networkConfig",
        )?;
    }
    let spec = CloudInitSpec {
        hostname: input.hostname.clone(),
        users: spec_users,
        user_data_set: input.user_data.is_some(),
        network_config: input.network_config.clone(),
    };
    let secrets = CloudInitSecrets {
        password_hashes,
        user_data: input.user_data.clone(),
    };
    Ok((spec, secrets))
}

/// A boot order names each device at most once.
pub fn check_boot_order(order: &[BootDevice]) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for (i, device) in order.iter().enumerate() {
        if !seen.insert(*device) {
            return Err(ApiError::validation(
                &format!("bootOrder[{i}]"),
                "A device may appear only once in bootOrder.",
            ));
        }
    }
    Ok(())
}

/// RFC 1123: dot-separated labels of letters, digits and inner hyphens, 1 to 63 characters each,
/// 253 in all.
fn check_hostname(hostname: &str) -> Result<(), ApiError> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if hostname.is_empty() || hostname.len() > 253 || !hostname.split('.').all(label_ok) {
        return Err(ApiError::validation(
            "cloudInit.hostname",
            "A hostname is dot-separated labels of letters, digits and inner hyphens (1 to 63 characters each, 253 in all).",
        ));
    }
    Ok(())
}

fn check_user_name(name: &str, field: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if !first || !rest || name.len() > 32 {
        return Err(ApiError::validation(
            field,
            "A user name starts with a lower-case letter or '_', then up to 31 lower-case letters, digits, '_' or '-'.",
        ));
    }
    Ok(())
}

/// One line of an `authorized_keys` file: a key type, then base64, then an optional comment.
fn check_key(key: &str, field: &str) -> Result<(), ApiError> {
    let mut parts = key.split_whitespace();
    let kind_ok = parts
        .next()
        .is_some_and(|k| k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-"));
    let body_ok = parts.next().is_some_and(|b| {
        b.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    });
    let printable = key.chars().all(|c| c == ' ' || c.is_ascii_graphic());
    if !kind_ok || !body_ok || !printable || key.len() > MAX_KEY_LEN {
        return Err(ApiError::validation(
            field,
            format!(
                "An SSH public key is one line: its type (e.g. ssh-ed25519), its base64 body and an optional comment, at most {MAX_KEY_LEN} characters."
            ),
        ));
    }
    Ok(())
}

fn check_size(text: &str, max: usize, field: &str) -> Result<(), ApiError> {
    if text.len() > max {
        return Err(ApiError::validation(
            field,
            format!("At most {} KiB.", max / 1024),
        ));
    }
    Ok(())
}

/// The SHA-512 crypt hash (`$6$<salt>$<hash>`, 5000 rounds) of `password`, with a random salt.
fn hash_password(password: &str, field: &str) -> Result<String, ApiError> {
    const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let salt: String = (0..16)
        .map(|_| char::from(SALT_CHARS[rng.random_range(0..SALT_CHARS.len())]))
        .collect();
    let hash = sha_crypt::sha512_crypt_b64(
        password.as_bytes(),
        salt.as_bytes(),
        &sha_crypt::Sha512Params::default(),
    )
    .map_err(|_| ApiError::validation(field, "The password could not be hashed."))?;
    Ok(format!("$6${salt}${hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<(CloudInitSpec, CloudInitSecrets), ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn user(name: &str) -> CloudUserInput {
        CloudUserInput {
            name: name.into(),
            ssh_authorized_keys: Some(vec!["ssh-ed25519 AAAAC3Nza alice@laptop".into()]),
            password: Some("hunter2".into()),
        }
    }

    #[test]
    fn passwords_and_user_data_become_secrets_and_flags() {
        let input = CloudInitInput {
            hostname: Some("web-1.example".into()),
            users: Some(vec![user("alice")]),
            user_data: None,
            network_config: Some("version: 2".into()),
        };
        let (spec, secrets) = check_cloud_init(&input).unwrap();
        assert!(spec.users[0].password_set);
        assert!(!format!("{spec:?}").contains("hunter2"));
        let (name, hash) = &secrets.password_hashes[0];
        assert_eq!(name, "alice");
        assert!(
            hash.starts_with("$6$") && !hash.contains("hunter2"),
            "{hash}"
        );
        let salt = hash.split('$').nth(2).unwrap();
        let again = sha_crypt::sha512_crypt_b64(
            b"hunter2",
            salt.as_bytes(),
            &sha_crypt::Sha512Params::default(),
        )
        .unwrap();
        assert_eq!(*hash, format!("$6${salt}${again}"));
    }

    #[test]
    fn bad_parts_name_their_field() {
        let mut bad_name = CloudInitInput {
            users: Some(vec![user("Alice")]),
            ..Default::default()
        };
        assert_eq!(
            field(check_cloud_init(&bad_name)),
            "cloudInit.users[0].name"
        );
        bad_name.users = Some(vec![user("bob"), user("bob")]);
        assert_eq!(
            field(check_cloud_init(&bad_name)),
            "cloudInit.users[1].name"
        );
        let mut key = user("bob");
        key.ssh_authorized_keys = Some(vec!["ssh-rsa AAAA\nssh-rsa BBBB".into()]);
        bad_name.users = Some(vec![key]);
        assert_eq!(
            field(check_cloud_init(&bad_name)),
            "cloudInit.users[0].sshAuthorizedKeys[0]"
        );
        let big = CloudInitInput {
            user_data: Some("x".repeat(MAX_USER_DATA + 1)),
            ..Default::default()
        };
        assert_eq!(field(check_cloud_init(&big)), "cloudInit.userData");
        let host = CloudInitInput {
            hostname: Some("-bad-".into()),
            ..Default::default()
        };
        assert_eq!(field(check_cloud_init(&host)), "cloudInit.hostname");
    }

    #[test]
    fn a_boot_order_names_each_device_once() {
        assert!(check_boot_order(&[BootDevice::Cdrom, BootDevice::Disk]).is_ok());
        assert!(matches!(
            check_boot_order(&[BootDevice::Disk, BootDevice::Disk]),
            Err(ApiError::Validation { field, .. }) if field == "bootOrder[1]"
        ));
    }
}
