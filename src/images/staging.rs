//! The directories images are prepared in (`<images dir>/.staging-<label>`), and the sweep that
//! removes those their process left behind.
//!
//! Each is held with an exclusive `flock` on a file beside it (`.staging-<label>.lock`) for as
//! long as it is in use. The kernel lets go of the lock when its process dies, however it dies,
//! so a directory whose lock can be taken belongs to no one: [`sweep`] (at start-up) removes it,
//! even in an images directory several nodes share. A staging directory dropped before it was
//! installed or discarded (an upload whose client went away mid-body) is removed by its drop.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use super::ImageError;

const PREFIX: &str = ".staging-";
const LOCK_SUFFIX: &str = ".lock";

/// A directory an image is prepared in before it is renamed into place.
pub struct Staging {
    dir: PathBuf,
    /// Held until the directory is installed, discarded or dropped.
    lock: Option<(Flock<File>, PathBuf)>,
}

impl Staging {
    /// An empty staging directory labelled `label`, locked (what a crashed attempt with the same
    /// label left there is removed first). Made on a blocking thread as one step: a caller that
    /// goes away meanwhile (a client cutting its upload short) drops a whole `Staging`, whose drop
    /// removes it, never a directory or lock file nothing owns.
    pub async fn fresh(images_dir: &Path, label: &str) -> Result<Staging, ImageError> {
        let dir = images_dir.join(format!("{PREFIX}{label}"));
        tokio::task::spawn_blocking(move || Staging::fresh_now(dir))
            .await
            .map_err(|e| ImageError::Io(anyhow::Error::new(e).context("the staging task failed")))?
    }

    fn fresh_now(dir: PathBuf) -> Result<Staging, ImageError> {
        // A fresh node's images dir is made by its first image.
        if let Some(images_dir) = dir.parent() {
            std::fs::create_dir_all(images_dir)
                .with_context(|| format!("could not create {}", images_dir.display()))?;
        }
        let lock_path = lock_path_of(&dir);
        let Some(lock) = try_lock(&lock_path)? else {
            return Err(ImageError::Io(anyhow::anyhow!(
                "the staging directory {} is in use by another process",
                dir.display()
            )));
        };
        // From here on the drop cleans up.
        let staging = Staging {
            dir,
            lock: Some((lock, lock_path)),
        };
        if staging.dir.exists() {
            std::fs::remove_dir_all(&staging.dir)
                .with_context(|| format!("could not remove {}", staging.dir.display()))?;
        }
        std::fs::create_dir_all(&staging.dir)
            .with_context(|| format!("could not create {}", staging.dir.display()))?;
        Ok(staging)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the bytes are received.
    pub fn download_path(&self) -> PathBuf {
        self.dir.join("download")
    }

    /// Removes the directory and whatever is in it.
    pub async fn discard(mut self) {
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "a staging directory could not be removed");
        }
        self.release();
    }

    /// The directory was renamed into place: only its lock is left to let go of.
    pub(super) fn installed(mut self) {
        self.release();
    }

    /// Removes the lock file, then lets go of the lock.
    fn release(&mut self) {
        if let Some((lock, path)) = self.lock.take() {
            let _ = std::fs::remove_file(&path);
            drop(lock);
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        // Neither installed nor discarded: remove it, still holding its lock, off the runtime's
        // threads when there is one (the download may be large).
        let dir = self.dir.clone();
        let remove = move || {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&lock.1);
            drop(lock);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// [`sweep`] at start-up: what it cannot remove is said in the log and left for the next.
pub async fn sweep_at_start(images_dir: &Path) {
    if let Err(e) = sweep(images_dir).await {
        tracing::warn!(error = %crate::telemetry::chain(&e), "staging directories left by a crash could not be swept");
    }
}

/// Removes the staging directories (and lock files) in `images_dir` that no process holds;
/// returns how many directories it removed.
pub async fn sweep(images_dir: &Path) -> Result<usize, ImageError> {
    let images_dir = images_dir.to_path_buf();
    tokio::task::spawn_blocking(move || sweep_blocking(&images_dir))
        .await
        .context("the staging sweep stopped")?
}

fn sweep_blocking(images_dir: &Path) -> Result<usize, ImageError> {
    let entries = match std::fs::read_dir(images_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("could not list {}", images_dir.display()))
                .into())
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let dir = match rest.strip_suffix(LOCK_SUFFIX) {
            // A lock file: its directory's, whether or not the directory is still there.
            Some(label) => images_dir.join(format!("{PREFIX}{label}")),
            None => entry.path(),
        };
        let lock_path = lock_path_of(&dir);
        let Some(lock) = try_lock(&lock_path)? else {
            continue;
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("could not remove {}", dir.display()))?;
            removed += 1;
            tracing::info!(dir = %dir.display(), "removed a staging directory its process left behind");
        }
        let _ = std::fs::remove_file(&lock_path);
        drop(lock);
    }
    Ok(removed)
}

fn lock_path_of(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

/// The lock at `path` (made if missing), or `None` when another process (or another staging of
/// this one) holds it.
fn try_lock(path: &Path) -> Result<Option<Flock<File>>, ImageError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::Error::new(e)
            .context(format!("could not lock {}", path.display()))
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "voidvm-staging-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_staging_dropped_before_it_was_installed_leaves_nothing_behind() {
        let images = temp_dir("drop");
        let staging = Staging::fresh(&images, "upload-a").await.unwrap();
        std::fs::write(staging.download_path(), b"half an image").unwrap();
        drop(staging);
        for _ in 0..100 {
            if names(&images).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(names(&images).is_empty(), "{:?}", names(&images));
        std::fs::remove_dir_all(&images).unwrap();
    }

    #[tokio::test]
    async fn an_images_dir_not_made_yet_is_made_by_its_first_staging() {
        let parent = temp_dir("unmade");
        let images = parent.join("images");
        let staging = Staging::fresh(&images, "upload-first").await.unwrap();
        assert!(staging.dir().is_dir());
        staging.discard().await;
        assert!(names(&images).is_empty(), "{:?}", names(&images));
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[tokio::test]
    async fn a_discarded_staging_leaves_nothing_behind() {
        let images = temp_dir("discard");
        let staging = Staging::fresh(&images, "upload-b").await.unwrap();
        staging.discard().await;
        assert!(names(&images).is_empty(), "{:?}", names(&images));
        std::fs::remove_dir_all(&images).unwrap();
    }

    #[tokio::test]
    async fn the_sweep_removes_what_a_dead_process_left_and_keeps_what_is_in_use() {
        let images = temp_dir("sweep");
        // As a process killed mid-upload leaves them: a directory, its lock file, nobody holding
        // it; and a lock file whose directory is gone.
        std::fs::create_dir_all(images.join(".staging-upload-dead")).unwrap();
        std::fs::write(images.join(".staging-upload-dead/download"), b"x").unwrap();
        std::fs::write(images.join(".staging-upload-dead.lock"), b"").unwrap();
        std::fs::write(images.join(".staging-upload-gone.lock"), b"").unwrap();
        std::fs::create_dir_all(images.join("an-image")).unwrap();
        let live = Staging::fresh(&images, "upload-live").await.unwrap();
        assert_eq!(sweep(&images).await.unwrap(), 1);
        assert_eq!(
            names(&images),
            vec![
                ".staging-upload-live".to_string(),
                ".staging-upload-live.lock".to_string(),
                "an-image".to_string()
            ]
        );
        live.discard().await;
        assert_eq!(names(&images), vec!["an-image".to_string()]);
        std::fs::remove_dir_all(&images).unwrap();
    }

    #[tokio::test]
    async fn a_label_in_use_cannot_be_staged_again() {
        let images = temp_dir("busy");
        let first = Staging::fresh(&images, "import-j1").await.unwrap();
        assert!(Staging::fresh(&images, "import-j1").await.is_err());
        first.discard().await;
        let again = Staging::fresh(&images, "import-j1").await.unwrap();
        again.discard().await;
        std::fs::remove_dir_all(&images).unwrap();
    }
}
