//! Finishing image deletes a crash cut short. A delete renames the image's directory aside
//! (`.deleted-<name>-<id>`) inside its transaction, then removes it once `ImageDeleted` committed,
//! or puts it back if the commit failed. A process killed in between leaves the directory aside;
//! at start-up each one is decided under the image name's lock (which a delete on another node
//! holds until it ends): the row says `deleted`, so the delete committed and the files go; it says
//! anything else, so the delete never happened and the files go back under their name.

use std::path::{Path, PathBuf};

use sqlx::PgPool;

use super::{install, ImageName, ImageStatus};
use crate::store::images as rows;
use crate::store::StoreError;

/// What became of a directory set aside.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    Removed,
    PutBack,
    /// The name is on disk again (another image): left for an operator, and said in the log.
    Left,
}

/// The image a directory name set aside belongs to: `.deleted-<name>-<32 hex>`.
pub fn image_of(dir_name: &str) -> Option<ImageName> {
    let rest = dir_name.strip_prefix(".deleted-")?;
    let (name, id) = rest.rsplit_once('-')?;
    let is_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_id {
        return None;
    }
    ImageName::parse(name).ok()
}

/// Decides every directory set aside in `images_dir`; what cannot be decided (the database
/// away) is said in the log and left for the next start.
pub async fn finish_at_start(pool: &PgPool, images_dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(images_dir).await else {
        return;
    };
    let mut found: Vec<(PathBuf, ImageName)> = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        if let Some(name) = entry.file_name().to_str().and_then(image_of) {
            found.push((entry.path(), name));
        }
    }
    for (aside, name) in found {
        match finish(pool, images_dir, &aside, &name).await {
            Ok(done) => {
                tracing::info!(image = %name, aside = %aside.display(), outcome = ?done, "finished an image delete a crash cut short")
            }
            Err(e) => {
                tracing::warn!(image = %name, aside = %aside.display(), error = %e, "an image delete a crash cut short could not be finished")
            }
        }
    }
}

/// Decides one directory set aside, under the image name's lock.
pub async fn finish(
    pool: &PgPool,
    images_dir: &Path,
    aside: &Path,
    name: &ImageName,
) -> Result<Finished, StoreError> {
    let mut tx = crate::store::begin(pool).await?;
    let (row, _) = rows::lock(&mut tx, name.as_str()).await?;
    let deleted = row.is_some_and(|r| r.status == ImageStatus::Deleted);
    let done = if deleted {
        install::remove(aside).await;
        Finished::Removed
    } else if images_dir.join(name.as_str()).exists() {
        Finished::Left
    } else {
        install::put_back(images_dir, name, aside).await;
        Finished::PutBack
    };
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_set_aside_names_its_image() {
        let id = "0123456789abcdef0123456789abcdef";
        let got = image_of(&format!(".deleted-debian-12-{id}")).expect("an image");
        assert_eq!(got.as_str(), "debian-12");
        assert!(image_of(&format!(".deleted--{id}")).is_none());
        assert!(image_of(".deleted-debian-12-nothex").is_none());
        assert!(image_of(&format!(".staging-import-{id}")).is_none());
        assert!(image_of("debian").is_none());
    }
}
