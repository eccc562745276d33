//! Putting an image's files in place so that a crash never leaves a half-written image under its
//! real name. Bytes go to a staging directory beside the images (`.staging-<label>`, a name no
//! image can have), hashed and counted as they are written; then the checksum is verified, a
//! disk that is not qcow2 is converted (`qemu-img convert -O qcow2`), the files and the directory
//! are fsynced, and the staging directory is renamed to the image's name in one step. A deleted
//! image's directory is renamed aside (`.deleted-<name>-<id>`) inside the deleting transaction and
//! removed after it commits.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::staging::Staging;
use super::{DiskFormat, ImageError, ImageKind, ImageName, Sha256Hex, Wanted};
use crate::hypervisor::tools::stderr_summary;

/// The bytes of an image as they arrive: written to a file, hashed and counted, bounded.
pub struct Sink {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    done: u64,
    max: u64,
}

/// What a [`Sink`] received.
pub struct Received {
    pub path: PathBuf,
    pub sha256: Sha256Hex,
    pub size: u64,
}

impl Sink {
    pub async fn create(path: PathBuf, max: u64) -> Result<Sink, ImageError> {
        let file = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(Sink {
            file,
            path,
            hasher: Sha256::new(),
            done: 0,
            max,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        if self.done.saturating_add(len) > self.max {
            return Err(ImageError::TooLarge { max: self.max });
        }
        self.file
            .write_all(chunk)
            .await
            .with_context(|| format!("could not write {}", self.path.display()))?;
        self.hasher.update(chunk);
        self.done += len;
        Ok(())
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Flushes the file to disk.
    pub async fn finish(mut self) -> Result<Received, ImageError> {
        self.file
            .flush()
            .await
            .context("could not flush the image")?;
        self.file
            .sync_all()
            .await
            .context("could not sync the image")?;
        Ok(Received {
            path: self.path,
            sha256: Sha256Hex::of_digest(&self.hasher.finalize()),
            size: self.done,
        })
    }
}

impl Staging {
    /// Checks what was received against what was asked and turns it into the image's file:
    /// the checksum, then for ISOs and kernels their first bytes (`magic`), for disks the format (converted to qcow2 unless it is qcow2 already; a
    /// disk naming a backing file is refused). Everything is fsynced.
    pub async fn prepare(
        &self,
        qemu_img: &Path,
        received: Received,
        wanted: &Wanted,
    ) -> Result<(), ImageError> {
        if let Some(expected) = &wanted.sha256 {
            if *expected != received.sha256 {
                return Err(ImageError::ChecksumMismatch {
                    expected: expected.as_str().to_string(),
                    actual: received.sha256.as_str().to_string(),
                });
            }
        }
        let target = self.dir().join(wanted.kind.file_name());
        match wanted.kind {
            ImageKind::Iso | ImageKind::Kernel => {
                super::magic::check_file(wanted.kind, &received.path).await?;
                tokio::fs::rename(&received.path, &target)
                    .await
                    .context("could not rename the image")?;
            }
            ImageKind::Disk => {
                let format = disk_format(qemu_img, &received.path, wanted.format).await?;
                if format == DiskFormat::Qcow2 {
                    tokio::fs::rename(&received.path, &target)
                        .await
                        .context("could not rename the image")?;
                } else {
                    convert(qemu_img, &received.path, format, &target).await?;
                    tokio::fs::remove_file(&received.path)
                        .await
                        .context("could not remove the downloaded file")?;
                }
                let file = tokio::fs::File::open(&target)
                    .await
                    .context("could not open the disk")?;
                file.sync_all().await.context("could not sync the disk")?;
            }
        }
        sync_dir(self.dir()).await
    }

    /// Renames the prepared directory to `<images_dir>/<name>`, in one step.
    pub async fn install(self, images_dir: &Path, name: &ImageName) -> Result<(), ImageError> {
        let dest = images_dir.join(name.as_str());
        if dest.exists() {
            return Err(ImageError::AlreadyOnDisk(name.to_string()));
        }
        tokio::fs::rename(self.dir(), &dest)
            .await
            .with_context(|| format!("could not move the image to {}", dest.display()))?;
        self.installed();
        sync_dir(images_dir).await
    }
}

/// Moves image `name`'s directory aside, so that it is gone from the catalog at once; `None`
/// when it has none.
pub async fn set_aside(images_dir: &Path, name: &ImageName) -> Result<Option<PathBuf>, ImageError> {
    let dir = images_dir.join(name.as_str());
    if !dir.exists() {
        return Ok(None);
    }
    let aside = images_dir.join(format!(".deleted-{name}-{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::rename(&dir, &aside)
        .await
        .with_context(|| format!("could not move {} aside", dir.display()))?;
    Ok(Some(aside))
}

/// Puts a directory set aside back (its deletion did not commit).
pub async fn put_back(images_dir: &Path, name: &ImageName, aside: &Path) {
    if let Err(e) = tokio::fs::rename(aside, images_dir.join(name.as_str())).await {
        tracing::error!(image = %name, aside = %aside.display(), error = %e, "an image set aside could not be put back");
    }
}

/// Removes a directory set aside.
pub async fn remove(aside: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(aside).await {
        tracing::warn!(dir = %aside.display(), error = %e, "a deleted image's files could not be removed");
    }
}

async fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    let handle = tokio::fs::File::open(dir)
        .await
        .with_context(|| format!("could not open {}", dir.display()))?;
    handle
        .sync_all()
        .await
        .with_context(|| format!("could not sync {}", dir.display()))?;
    Ok(())
}

/// The disk's format: the one asked for, or the one `qemu-img` finds. A disk that names a
/// backing file is refused (it would read a file of the host's).
async fn disk_format(
    qemu_img: &Path,
    path: &Path,
    asked: Option<DiskFormat>,
) -> Result<DiskFormat, ImageError> {
    let mut cmd = tokio::process::Command::new(qemu_img);
    cmd.args(["info", "--output=json"]);
    if let Some(f) = asked {
        cmd.args(["-f", f.as_str()]);
    }
    let output = cmd
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not run qemu-img")?;
    if !output.status.success() {
        return Err(ImageError::Unusable(format!(
            "qemu-img cannot read it: {}",
            without_path(&stderr_summary(&output.stderr), path)
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("qemu-img info printed something that is not JSON")?;
    if info.get("backing-filename").is_some() {
        return Err(ImageError::Unusable(
            "the disk names a backing file; upload a standalone image.".to_string(),
        ));
    }
    let found = info
        .get("format")
        .and_then(|f| f.as_str())
        .unwrap_or_default();
    DiskFormat::parse(found).map_err(|_| {
        ImageError::Unusable(format!(
            "qemu-img reads it as '{found}', which is not a disk format accepted here."
        ))
    })
}

/// `text` with `path` (a file of the host's, which a client has no business knowing) replaced by
/// what it stands for.
fn without_path(text: &str, path: &Path) -> String {
    text.replace(&*path.to_string_lossy(), "the image")
}

async fn convert(
    qemu_img: &Path,
    from: &Path,
    format: DiskFormat,
    to: &Path,
) -> Result<(), ImageError> {
    let output = tokio::process::Command::new(qemu_img)
        .args(["convert", "-q", "-f", format.as_str(), "-O", "qcow2"])
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not run qemu-img")?;
    if !output.status.success() {
        return Err(ImageError::Unusable(format!(
            "qemu-img could not convert it to qcow2: {}",
            without_path(&without_path(&stderr_summary(&output.stderr), from), to)
        )));
    }
    Ok(())
}
