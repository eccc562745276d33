//! The images a machine can boot from, as found on the host.
//!
//! An image is a directory under the images dir: either `disk.qcow2` (a base disk the machine's
//! disk overlays) or `vmlinuz` with an optional `initrd.img` and `cmdline` (direct kernel boot,
//! as the busybox test guest built by `scripts/build-guest.sh`). An image that is not there boots
//! a blank disk, so a machine can always be created.

use std::path::{Path, PathBuf};

use super::BootSource;

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

    /// The ISO file of image `name` (`<images dir>/<name>/image.iso`), if it is there.
    pub fn iso(&self, name: &str) -> Option<PathBuf> {
        self.image_dir(name)
            .map(|dir| dir.join("image.iso"))
            .filter(|p| p.is_file())
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
            && name != "."
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
    }

    #[test]
    fn missing_dir_has_no_images() {
        let catalog = ImageCatalog::new(PathBuf::from("/nonexistent/voidvm/images"));
        assert!(catalog.names().is_empty());
        assert_eq!(catalog.resolve("busybox"), BootSource::BlankDisk);
    }
}
