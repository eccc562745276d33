//! Images as the API manages them: what a client may ask for (a name, a kind, a format, a
//! checksum, a URL), parsed into types the rest can trust, and the events of an image's stream.
//!
//! The files under the images dir stay the truth of what a VM boots (see
//! `hypervisor::images::ImageCatalog`); these events record how an image got there (imported from
//! a URL, uploaded) and that it was deleted. An import downloads and installs the files
//! (`fetch`, `install`) before its `ImageImported` event commits.

pub mod aside;
mod cancel;
mod direct;
pub mod fetch;
pub mod install;
mod magic;
pub mod service;
pub mod staging;
pub mod state;

pub use state::{ImageSource, ImageStatus};

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest image name.
pub const NAME_MAX: usize = 63;
/// Longest URL accepted.
pub const URL_MAX: usize = 2048;

/// A plain directory name under the images dir: lowercase letters, digits, `.`, `-` and `_`,
/// beginning with a letter or digit, at most 63 characters, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    pub fn parse(raw: &str) -> Result<ImageName, String> {
        if raw.is_empty() || raw.len() > NAME_MAX {
            return Err(format!("name must have 1 to {NAME_MAX} characters."));
        }
        let allowed = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' || c == '_'
        };
        if !raw.chars().all(allowed) {
            return Err(
                "name may hold only lowercase letters, digits, '.', '-' and '_'.".to_string(),
            );
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err("name must begin with a letter or a digit.".to_string());
        }
        if raw.contains("..") {
            return Err("name must not contain '..'.".to_string());
        }
        Ok(ImageName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an image is for: a base disk the VM's disk overlays, a CD-ROM, or a kernel booted
/// directly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Disk,
    Iso,
    Kernel,
}

impl ImageKind {
    pub const ALL: [ImageKind; 3] = [ImageKind::Disk, ImageKind::Iso, ImageKind::Kernel];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Disk => "disk",
            ImageKind::Iso => "iso",
            ImageKind::Kernel => "kernel",
        }
    }

    pub fn parse(raw: &str) -> Result<ImageKind, String> {
        ImageKind::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| format!("kind must be disk, iso or kernel, not '{raw}'."))
    }

    /// The file the image is stored as in its directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ImageKind::Disk => "disk.qcow2",
            ImageKind::Iso => "image.iso",
            ImageKind::Kernel => "vmlinuz",
        }
    }
}

/// A disk image's format as `qemu-img` names it. Anything but qcow2 is converted to qcow2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Vmdk,
    Vdi,
    Vhdx,
    Vpc,
}

impl DiskFormat {
    pub const ALL: [DiskFormat; 6] = [
        DiskFormat::Qcow2,
        DiskFormat::Raw,
        DiskFormat::Vmdk,
        DiskFormat::Vdi,
        DiskFormat::Vhdx,
        DiskFormat::Vpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vpc => "vpc",
        }
    }

    pub fn parse(raw: &str) -> Result<DiskFormat, String> {
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == raw)
            .ok_or_else(|| {
                format!("format must be one of qcow2, raw, vmdk, vdi, vhdx or vpc, not '{raw}'.")
            })
    }
}

/// A SHA-256 checksum: 64 hexadecimal digits, kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(raw: &str) -> Result<Sha256Hex, String> {
        if raw.len() != 64 || !raw.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("sha256 must be 64 hexadecimal digits.".to_string());
        }
        Ok(Sha256Hex(raw.to_ascii_lowercase()))
    }

    pub fn of_digest(digest: &[u8]) -> Sha256Hex {
        Sha256Hex(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `http` or `https` URL with a host and no credentials (it is recorded in the event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl(String);

impl SourceUrl {
    pub fn parse(raw: &str) -> Result<SourceUrl, String> {
        let url = crate::outbound::user_url(raw, URL_MAX)?;
        Ok(SourceUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an import or upload was asked to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub kind: ImageKind,
    /// Only for disks; `None` lets `qemu-img` tell.
    pub format: Option<DiskFormat>,
    pub sha256: Option<Sha256Hex>,
}

impl Wanted {
    /// Parses the fields shared by imports and uploads; each refusal names its field.
    pub fn parse(
        kind: &str,
        format: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Wanted, (&'static str, String)> {
        let kind = ImageKind::parse(kind).map_err(|m| ("kind", m))?;
        let format = match format {
            None => None,
            Some(_) if kind != ImageKind::Disk => {
                return Err(("format", "format applies to disk images only.".to_string()))
            }
            Some(f) => Some(DiskFormat::parse(f).map_err(|m| ("format", m))?),
        };
        let sha256 = sha256
            .map(Sha256Hex::parse)
            .transpose()
            .map_err(|m| ("sha256", m))?;
        Ok(Wanted {
            kind,
            format,
            sha256,
        })
    }
}

/// The events of an image's stream (keyed by the image's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum ImageEvent {
    /// An import from `url` was asked for; it opens the import job `job_id`.
    ImageImportRequested {
        job_id: String,
        kind: ImageKind,
        url: String,
        format: Option<String>,
        sha256: Option<String>,
    },
    /// How far the download has come (recorded at most about once a second).
    ImageImportProgressed {
        job_id: String,
        bytes_done: u64,
        bytes_total: Option<u64>,
    },
    /// The image is installed and ready; closes the job.
    ImageImported {
        job_id: String,
        sha256: String,
        size_bytes: u64,
    },
    /// The import failed and left nothing behind; closes the job.
    ImageImportFailed { job_id: String, reason: String },
    /// The import was cancelled before it ended; nothing of it stays on disk. Closes the job as
    /// `cancelled`.
    ImageImportCancelled { job_id: String },
    /// The image was uploaded and is ready.
    ImageUploaded {
        kind: ImageKind,
        format: Option<String>,
        sha256: String,
        size_bytes: u64,
    },
    /// The image was deleted (its files removed after the commit).
    ImageDeleted {},
}

impl ImageEvent {
    pub const TYPE_NAMES: [&'static str; 7] = [
        "ImageImportRequested",
        "ImageImportProgressed",
        "ImageImported",
        "ImageImportFailed",
        "ImageImportCancelled",
        "ImageUploaded",
        "ImageDeleted",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            ImageEvent::ImageImportRequested { .. } => "ImageImportRequested",
            ImageEvent::ImageImportProgressed { .. } => "ImageImportProgressed",
            ImageEvent::ImageImported { .. } => "ImageImported",
            ImageEvent::ImageImportFailed { .. } => "ImageImportFailed",
            ImageEvent::ImageImportCancelled { .. } => "ImageImportCancelled",
            ImageEvent::ImageUploaded { .. } => "ImageUploaded",
            ImageEvent::ImageDeleted {} => "ImageDeleted",
        }
    }

    pub fn version(&self) -> &'static str {
        "1"
    }
}

/// Why an image could not be fetched or installed. The sentence is the job's error and the
/// `ImageImportFailed` reason, so it says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("The download failed: {0}")]
    Download(String),
    #[error("The server answered HTTP {0}.")]
    Status(u16),
    #[error("{0} is a private address, and images.allow_private is off.")]
    Private(std::net::IpAddr),
    #[error("The image is larger than the {max} bytes this server accepts (images.max_bytes).")]
    TooLarge { max: u64 },
    #[error("The download ended after {done} of the {total} bytes announced.")]
    Truncated { done: u64, total: u64 },
    #[error("No data arrived for {0} seconds.")]
    Stalled(u64),
    #[error("The checksum does not match: expected sha256 {expected}, got {actual}.")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("The image is not usable: {0}")]
    Unusable(String),
    #[error("An image named '{0}' is already on disk.")]
    AlreadyOnDisk(String),
    #[error("The import was cancelled.")]
    Cancelled,
    #[error("The image could not be written.")]
    Io(#[from] anyhow::Error),
}

impl From<crate::outbound::Unreachable> for ImageError {
    fn from(e: crate::outbound::Unreachable) -> Self {
        use crate::outbound::{PrivateAddress, Unreachable};
        match e {
            Unreachable::Private(PrivateAddress(ip)) => ImageError::Private(ip),
            Unreachable::Unresolved(_) => ImageError::Download(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_directory_names() {
        for ok in ["busybox", "ubuntu20.04", "a", "deb-12_x", "9front"] {
            assert!(ImageName::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(NAME_MAX + 1);
        for bad in [
            "",
            ".hidden",
            "a..b",
            "A",
            "a/b",
            "a b",
            "-x",
            long.as_str(),
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wanted_names_the_field_it_refuses() {
        assert_eq!(Wanted::parse("floppy", None, None).unwrap_err().0, "kind");
        assert_eq!(
            Wanted::parse("iso", Some("raw"), None).unwrap_err().0,
            "format"
        );
        assert_eq!(
            Wanted::parse("disk", Some("qed2"), None).unwrap_err().0,
            "format"
        );
        assert_eq!(
            Wanted::parse("disk", None, Some("abc")).unwrap_err().0,
            "sha256"
        );
        let w = Wanted::parse("disk", Some("raw"), Some(&"A".repeat(64))).unwrap();
        assert_eq!(w.sha256.unwrap().as_str(), "a".repeat(64));
    }

    #[test]
    fn urls_are_http_without_credentials() {
        assert!(SourceUrl::parse("https://example.com/x.img").is_ok());
        assert!(SourceUrl::parse("ftp://example.com/x.img").is_err());
        assert!(SourceUrl::parse("https://u:p@example.com/x.img").is_err());
        assert!(SourceUrl::parse("not a url").is_err());
    }
}
