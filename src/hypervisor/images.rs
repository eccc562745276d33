//! The images a machine can boot from, as found on the host.
//!
//! An image is a directory under the images dir: either `disk.qcow2` (a base disk the machine's
//! disk overlays), `vmlinuz` with an optional `initrd.img` and `cmdline` (direct kernel boot,
//! as the busybox test guest built by `scripts/build-guest.sh`), or `image.iso` (a CD-ROM to
//! attach; it boots nothing by itself). An image that is not there boots a blank disk, so a
//! machine can always be created. Names beginning with `.` are VoidVM's own (images being
//! staged or deleted, see `images::install`), never images.

use std::path::{Path, PathBuf};

use super::BootSource;
use crate::images::ImageKind;

/// The kernel command line used when an image has no `cmdline` file.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

/// Looks up images by name in one directory.
#[derive(Debug, Clone)]
pub struct ImageCatalog {
    images_dir: PathBuf,
}

impl ImageCatalog {
    pub fn new(images_dir: PathBuf) -> Self {
        ImageCatalog { images_dir }
    }

    /// The directory images are looked up in.
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// How a machine made from image `name` boots; `BlankDisk` when the image is missing or the
    /// name is not a plain directory name.
    pub fn resolve(&self, name: &str) -> BootSource {
        let Some(dir) = self.image_dir(name) else {
            return BootSource::BlankDisk;
        };
        let disk = dir.join("disk.qcow2");
        if disk.is_file() {
            return BootSource::BaseDisk { path: disk };
        }
        let kernel = dir.join("vmlinuz");
        if kernel.is_file() {
            let initrd = Some(dir.join("initrd.img")).filter(|p| p.is_file());
            let cmdline = std::fs::read_to_string(dir.join("cmdline"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
            return BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            };
        }
        BootSource::BlankDisk
    }

    /// The ISO file of image `name`, when it has one.
    pub fn iso(&self, name: &str) -> Option<PathBuf> {
        self.image_dir(name)
            .map(|dir| dir.join(ImageKind::Iso.file_name()))
            .filter(|p| p.is_file())
    }

    /// What image `name` is, as its files say; `None` when it has none of them.
    pub fn kind(&self, name: &str) -> Option<ImageKind> {
        match self.resolve(name) {
            BootSource::BaseDisk { .. } => Some(ImageKind::Disk),
            BootSource::Kernel { .. } => Some(ImageKind::Kernel),
            BootSource::BlankDisk => self.iso(name).map(|_| ImageKind::Iso),
        }
    }

    /// Every image on the host (ISOs too) and its kind, by name.
    pub fn entries(&self) -> Vec<(String, ImageKind)> {
        let Ok(entries) = std::fs::read_dir(&self.images_dir) else {
            return Vec::new();
        };
        let mut found: Vec<(String, ImageKind)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| self.kind(&name).map(|k| (name, k)))
            .collect();
        found.sort();
        found
    }

    /// Whether image `name` exists on the host.
    pub fn present(&self, name: &str) -> bool {
        !matches!(self.resolve(name), BootSource::BlankDisk)
    }

    /// The names of the images found, sorted.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.images_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| self.present(name))
            .collect();
        names.sort();
        names
    }

    fn image_dir(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains("..")
            && !name.contains('/')
            && !name.contains('\\')
            && !name.contains('\0');
        plain.then(|| self.images_dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths() {
        let catalog = ImageCatalog::new(PathBuf::from("/"));
        assert_eq!(catalog.resolve("../etc"), BootSource::BlankDisk);
        assert_eq!(catalog.resolve("a/b"), BootSource::BlankDisk);
        assert!(!catalog.present(".."));
        assert!(!catalog.present(""));
        assert!(!catalog.present(".staging-import-job-1"));
    }

    #[test]
    fn finds_iso_images_and_kinds() {
        let dir = std::env::temp_dir().join(format!("voidvm-catalog-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cd")).unwrap();
        std::fs::write(dir.join("cd/image.iso"), b"iso").unwrap();
        std::fs::create_dir_all(dir.join("k")).unwrap();
        std::fs::write(dir.join("k/vmlinuz"), b"kernel").unwrap();
        std::fs::create_dir_all(dir.join(".staging-x")).unwrap();
        std::fs::write(dir.join(".staging-x/vmlinuz"), b"kernel").unwrap();
        let catalog = ImageCatalog::new(dir.clone());
        assert_eq!(catalog.iso("cd"), Some(dir.join("cd/image.iso")));
        assert_eq!(catalog.iso("k"), None);
        assert!(!catalog.present("cd"), "an ISO boots nothing by itself");
        assert_eq!(
            catalog.entries(),
            vec![
                ("cd".to_string(), ImageKind::Iso),
                ("k".to_string(), ImageKind::Kernel)
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_dir_has_no_images() {
        let catalog = ImageCatalog::new(PathBuf::from("/nonexistent/voidvm/images"));
        assert!(catalog.names().is_empty());
        assert_eq!(catalog.resolve("busybox"), BootSource::BlankDisk);
    }
}
