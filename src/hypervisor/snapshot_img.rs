//! Snapshots of a machine that does not run, with `qemu-img` on its disk file: `qemu-img info`
//! lists them, `qemu-img snapshot -c/-a/-d` takes, applies and deletes one. `qemu-img` takes the
//! image's write lock, so it refuses a disk a QEMU still has open rather than corrupt it.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use serde::Deserialize;

use super::disk_snapshots::{snapshot_time, DiskSnapshot};
use super::paths::MachinePaths;
use super::tools::stderr_summary;
use super::HypervisorError;

/// The part of `qemu-img info --output=json` read here.
#[derive(Debug, Deserialize)]
struct ImageInfo {
    #[serde(default)]
    snapshots: Vec<SnapshotInfo>,
}

/// One snapshot as `qemu-img info` (and QMP) describes it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct SnapshotInfo {
    pub name: String,
    #[serde(rename = "vm-state-size")]
    pub vm_state_size: u64,
    #[serde(rename = "date-sec")]
    pub date_sec: i64,
    #[serde(rename = "date-nsec")]
    pub date_nsec: i64,
}

impl SnapshotInfo {
    pub(super) fn disk_snapshot(&self) -> DiskSnapshot {
        DiskSnapshot {
            name: self.name.clone(),
            vm_state_size: self.vm_state_size,
            created_at: snapshot_time(self.date_sec, self.date_nsec),
        }
    }
}

/// The snapshots on the disk.
pub async fn list(
    qemu_img: &Path,
    paths: &MachinePaths,
) -> Result<Vec<SnapshotInfo>, HypervisorError> {
    let stdout = run(
        qemu_img,
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            paths.disk.as_os_str(),
        ],
        "read the disk",
    )
    .await?;
    let info: ImageInfo = serde_json::from_slice(&stdout)
        .context("qemu-img info printed something that is not its JSON")?;
    Ok(info.snapshots)
}

/// `qemu-img snapshot -c`, unless the disk already holds snapshot `name`.
pub async fn take(
    qemu_img: &Path,
    paths: &MachinePaths,
    name: &str,
) -> Result<DiskSnapshot, HypervisorError> {
    if find(qemu_img, paths, name).await?.is_none() {
        snapshot(qemu_img, paths, "-c", name).await?;
    }
    find(qemu_img, paths, name)
        .await?
        .map(|s| s.disk_snapshot())
        .ok_or_else(|| {
            HypervisorError::Permanent(format!(
                "qemu-img took snapshot '{name}' but the disk does not list it"
            ))
        })
}

/// `qemu-img snapshot -a`: the disk as snapshot `name` left it.
pub async fn restore(
    qemu_img: &Path,
    paths: &MachinePaths,
    name: &str,
) -> Result<(), HypervisorError> {
    if find(qemu_img, paths, name).await?.is_none() {
        return Err(HypervisorError::Permanent(format!(
            "the disk holds no snapshot named '{name}'"
        )));
    }
    snapshot(qemu_img, paths, "-a", name).await?;
    Ok(())
}

/// `qemu-img snapshot -d`, unless snapshot `name` is already gone.
pub async fn delete(
    qemu_img: &Path,
    paths: &MachinePaths,
    name: &str,
) -> Result<(), HypervisorError> {
    if find(qemu_img, paths, name).await?.is_some() {
        snapshot(qemu_img, paths, "-d", name).await?;
    }
    Ok(())
}

async fn find(
    qemu_img: &Path,
    paths: &MachinePaths,
    name: &str,
) -> Result<Option<SnapshotInfo>, HypervisorError> {
    Ok(list(qemu_img, paths)
        .await?
        .into_iter()
        .find(|s| s.name == name))
}

async fn snapshot(
    qemu_img: &Path,
    paths: &MachinePaths,
    flag: &str,
    name: &str,
) -> Result<(), HypervisorError> {
    run(
        qemu_img,
        &[
            "snapshot".as_ref(),
            flag.as_ref(),
            name.as_ref(),
            paths.disk.as_os_str(),
        ],
        "change the disk's snapshots",
    )
    .await?;
    Ok(())
}

/// Runs `qemu-img` with `args` and returns what it printed; a failure says what it could not do.
async fn run(
    qemu_img: &Path,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> Result<Vec<u8>, HypervisorError> {
    let output = tokio::process::Command::new(qemu_img)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not run qemu-img")?;
    if !output.status.success() {
        return Err(HypervisorError::Permanent(format!(
            "qemu-img could not {what}: {}",
            stderr_summary(&output.stderr)
        )));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_info_lists_the_snapshots_with_their_time_and_state_size() {
        // `qemu-img info --output=json` of QEMU 7.2, shortened.
        let json = br#"{"snapshots": [{"icount": 0, "vm-clock-nsec": 0, "name": "s1",
            "date-sec": 1795664361, "date-nsec": 241514000, "vm-clock-sec": 0, "id": "1",
            "vm-state-size": 4096}], "virtual-size": 1048576, "format": "qcow2"}"#;
        let info: ImageInfo = serde_json::from_slice(json).expect("it reads");
        let snapshot = info.snapshots[0].disk_snapshot();
        assert_eq!(snapshot.name, "s1");
        assert_eq!(snapshot.vm_state_size, 4096);
        assert_eq!(
            snapshot.created_at.to_rfc3339(),
            "2026-11-26T03:39:21.241514+00:00"
        );
        let none: ImageInfo =
            serde_json::from_slice(br#"{"format": "qcow2"}"#).expect("no snapshots key");
        assert!(none.snapshots.is_empty());
    }
}
