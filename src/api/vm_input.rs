//! What a client may send to create or change a VM, and the checks each field must pass. Every
//! failure names its field.

use serde::Deserialize;

use super::cloud_init_input::CloudInitInput;
use super::error::ApiError;
use super::network_input::NetworkInput;
use crate::config::Limits;
use crate::hypervisor::images::ImageCatalog;
use crate::vm::BootDevice;

/// The image a VM gets when the request names none (the seed's SDK example sends no `os`).
pub const DEFAULT_IMAGE: &str = "ubuntu20.04";
const DESCRIPTION_MAX: usize = 1024;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Letters, digits, `-`, `_` and `.`, starting with a letter or digit; unique among the
    /// owner's VMs. The bounds declared here are the defaults of `limits.*` (see the README).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )]
    pub name: String,
    #[schema(minimum = 1, maximum = 64)]
    pub cpu: u32,
    /// MiB.
    #[schema(minimum = 64, maximum = 262144)]
    pub memory: u64,
    /// GiB.
    #[schema(minimum = 1, maximum = 4096)]
    pub disk: u64,
    #[schema(min_length = 1)]
    pub os: Option<String>,
    pub description: Option<String>,
    /// Defaults to user-mode NAT without forwarded ports.
    pub network: Option<NetworkInput>,
    /// Attaches a NoCloud seed (a CD-ROM labelled `cidata`) built at each start.
    #[serde(rename = "cloudInit")]
    pub cloud_init: Option<CloudInitInput>,
    /// Devices the firmware boots from, in order (each at most once); a VM booting a kernel
    /// directly (the `busybox` image) ignores it.
    #[serde(rename = "bootOrder")]
    #[schema(schema_with = boot_order_or_null)]
    pub boot_order: Option<Vec<BootDevice>>,
}

/// An empty object changes nothing: the answer is the resource as it is (`Nothing to change.`).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchVm {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )]
    pub name: Option<String>,
    pub description: Option<String>,
    #[schema(minimum = 1, maximum = 64)]
    pub cpu: Option<u32>,
    /// MiB.
    #[schema(minimum = 64, maximum = 262144)]
    pub memory: Option<u64>,
    /// Replaces the whole network; forwards without `host` keep the host port they had.
    pub network: Option<NetworkInput>,
    /// Replaces the whole cloud-init settings, for the next boot (always a change: the guest gets
    /// a new instance-id).
    #[serde(rename = "cloudInit")]
    pub cloud_init: Option<CloudInitInput>,
    #[serde(rename = "bootOrder")]
    #[schema(schema_with = boot_order_or_null)]
    pub boot_order: Option<Vec<BootDevice>>,
}

/// Devices to boot from, in order, each at most once; `null` is as if absent (the default when
/// creating, unchanged when changing).
fn boot_order_or_null() -> utoipa::openapi::Array {
    super::openapi::or_null(
        utoipa::openapi::ArrayBuilder::new()
            .description(Some(
                "Devices to boot from, in order, each at most once; `null` is as if absent.",
            ))
            .items(utoipa::openapi::Ref::from_schema_name("BootDevice"))
            .min_items(Some(1))
            .unique_items(true),
    )
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopVm {
    pub force: Option<bool>,
    /// Seconds to wait for the guest to power down before forcing it off. At most
    /// `limits.stopTimeoutMaxSecs` of the server's settings (the bound given here is its
    /// default; a server configured otherwise checks its own).
    #[schema(maximum = 3600)]
    pub timeout: Option<u64>,
}

pub fn check_name(name: &str, limits: &Limits) -> Result<(), ApiError> {
    let len = name.chars().count();
    if len == 0 || len > limits.name_max_len {
        return Err(ApiError::validation(
            "name",
            format!(
                "The name must have 1 to {} characters.",
                limits.name_max_len
            ),
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(ApiError::validation(
            "name",
            "The name may hold only letters, digits, '-', '_' and '.', and must start with a letter or digit.",
        ));
    }
    Ok(())
}

pub fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(ApiError::validation(
            "description",
            format!("The description may have at most {DESCRIPTION_MAX} characters."),
        ));
    }
    Ok(())
}

pub fn check_cpu(cpu: u32, limits: &Limits) -> Result<(), ApiError> {
    if cpu == 0 || cpu > limits.cpu_max {
        return Err(ApiError::validation(
            "cpu",
            format!("cpu must be between 1 and {}.", limits.cpu_max),
        ));
    }
    Ok(())
}

pub fn check_memory(memory: u64, limits: &Limits) -> Result<(), ApiError> {
    if memory < limits.memory_min_mib || memory > limits.memory_max_mib {
        return Err(ApiError::validation(
            "memory",
            format!(
                "memory (MiB) must be between {} and {}.",
                limits.memory_min_mib, limits.memory_max_mib
            ),
        ));
    }
    Ok(())
}

pub fn check_disk(disk: u64, limits: &Limits) -> Result<(), ApiError> {
    if disk < limits.disk_min_gib || disk > limits.disk_max_gib {
        return Err(ApiError::validation(
            "disk",
            format!(
                "disk (GiB) must be between {} and {}.",
                limits.disk_min_gib, limits.disk_max_gib
            ),
        ));
    }
    Ok(())
}

/// The image name, defaulted, and whether its files are on the host.
pub fn check_os(
    os: Option<&str>,
    limits: &Limits,
    images: &ImageCatalog,
) -> Result<(String, bool), ApiError> {
    let os = os.unwrap_or(DEFAULT_IMAGE);
    let present = images.present(os);
    if !(present || limits.known_images.iter().any(|k| k == os)) {
        let mut known: Vec<String> = limits.known_images.clone();
        known.extend(images.names());
        known.sort();
        known.dedup();
        return Err(ApiError::validation(
            "os",
            format!(
                "'{os}' is not a known image; known images: {}.",
                known.join(", ")
            ),
        ));
    }
    Ok((os.to_string(), present))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<(), ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_with_path_characters_are_refused() {
        let l = Limits::default();
        assert_eq!(field(check_name("../etc", &l)), "name");
        assert_eq!(field(check_name("a/b", &l)), "name");
        assert_eq!(field(check_name("", &l)), "name");
        assert_eq!(field(check_name(&"a".repeat(64), &l)), "name");
        assert!(check_name("web-1.prod_a", &l).is_ok());
    }

    #[test]
    fn sizes_outside_the_limits_are_refused() {
        let l = Limits::default();
        assert_eq!(field(check_cpu(0, &l)), "cpu");
        assert_eq!(field(check_cpu(65, &l)), "cpu");
        assert_eq!(field(check_memory(1, &l)), "memory");
        assert_eq!(field(check_disk(0, &l)), "disk");
        assert!(check_cpu(2, &l).is_ok() && check_memory(2048, &l).is_ok());
    }

    #[test]
    fn the_seeds_image_is_known_and_a_missing_os_defaults_to_it() {
        let l = Limits::default();
        let images = ImageCatalog::new(std::env::temp_dir().join("voidvm-no-images"));
        assert_eq!(
            check_os(Some("ubuntu20.04"), &l, &images).unwrap(),
            ("ubuntu20.04".to_string(), false)
        );
        assert_eq!(check_os(None, &l, &images).unwrap().0, DEFAULT_IMAGE);
        assert!(matches!(
            check_os(Some("windows95"), &l, &images),
            Err(ApiError::Validation { field, .. }) if field == "os"
        ));
    }
}
