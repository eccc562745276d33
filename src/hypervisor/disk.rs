//! A machine's disk: made once by the provision job with `qemu-img`, a blank qcow2 or an overlay
//! backed by a base image (whose format `qemu-img info` tells). A disk that exists is kept, so a
//! retried provision never wipes a machine; a new disk is written aside and moved into place, so
//! a crash never leaves a half-made one under the real name.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;

use super::paths::MachinePaths;
use super::tools::stderr_summary;
use super::{BootSource, HypervisorError, MachineSpec};

/// Creates the machine's directory and, unless it already has one, its disk.
pub async fn provision(
    qemu_img: &Path,
    spec: &MachineSpec,
    paths: &MachinePaths,
) -> Result<(), HypervisorError> {
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("could not create {}", paths.dir.display()))?;
    if paths.disk.exists() {
        return Ok(());
    }
    create_disk(qemu_img, spec, paths).await?;
    tracing::info!(disk = %paths.disk.display(), "disk created");
    Ok(())
}

async fn create_disk(
    qemu_img: &Path,
    spec: &MachineSpec,
    paths: &MachinePaths,
) -> Result<(), HypervisorError> {
    if spec.disk_gib == 0 {
        return Err(HypervisorError::Permanent(
            "a machine's disk must be at least 1 GiB".to_string(),
        ));
    }
    let tmp = paths.dir.join("disk.qcow2.partial");
    let mut cmd = tokio::process::Command::new(qemu_img);
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let BootSource::BaseDisk { path } = &spec.boot {
        let base = std::fs::canonicalize(path).map_err(|e| {
            HypervisorError::Permanent(format!(
                "the base image {} cannot be used ({e})",
                path.display()
            ))
        })?;
        let format = image_format(qemu_img, &base).await?;
        cmd.arg("-b").arg(&base).arg("-F").arg(format);
    }
    cmd.arg(&tmp).arg(format!("{}G", spec.disk_gib));
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not run qemu-img")?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(HypervisorError::Permanent(format!(
            "qemu-img could not create the disk: {}",
            stderr_summary(&output.stderr)
        )));
    }
    std::fs::rename(&tmp, &paths.disk).context("could not move the new disk into place")?;
    Ok(())
}

/// The format of a base image (`raw`, `qcow2`, ...), as `qemu-img info` reads it.
async fn image_format(qemu_img: &Path, image: &Path) -> Result<String, HypervisorError> {
    let output = tokio::process::Command::new(qemu_img)
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not run qemu-img")?;
    if !output.status.success() {
        return Err(HypervisorError::Permanent(format!(
            "qemu-img cannot read the base image {}: {}",
            image.display(),
            stderr_summary(&output.stderr)
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("qemu-img info printed something that is not JSON")?;
    info.get("format")
        .and_then(|f| f.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "qemu-img does not know the format of {}",
                image.display()
            ))
        })
}
