//! The image commands that answer when they are done, without a job: an upload (the body is
//! streamed to a staging directory, verified and converted, installed under the image name's
//! lock, then `ImageUploaded` commits) and a delete (refused while a VM uses the image; the files
//! are moved aside under the lock and removed after `ImageDeleted` commits). Each commits its
//! answer with the request's idempotency key, when there is one, in the same transaction.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::install::{self, Sink};
use super::service::{ImageService, ImageWriteError};
use super::staging::Staging;
use super::{ImageEvent, ImageKind, ImageName, ImageSource, ImageStatus, Wanted};
use crate::store::conditions::{KeyedRequest, StoredAnswer};
use crate::store::images::{self as rows, ImageRow, RowWrite};
use crate::store::{idempotency, CommandMeta, StoreError};

/// How an upload's answer is built from the image's row, inside its transaction.
pub type UploadAnswer<'a> = &'a (dyn Fn(&ImageRow) -> Result<StoredAnswer, StoreError> + Sync);

impl ImageService {
    /// Streams an upload to disk, verifies and converts it, and installs it as image `name`;
    /// answers what `answer` made of the image's row (recorded with `key`, if any).
    pub async fn upload<S>(
        &self,
        meta: &CommandMeta,
        name: &ImageName,
        wanted: &Wanted,
        mut body: S,
        key: Option<&KeyedRequest>,
        answer: UploadAnswer<'_>,
    ) -> Result<StoredAnswer, ImageWriteError>
    where
        S: Stream<Item = Result<Bytes, String>> + Unpin,
    {
        if self.taken(rows::get(&self.pool, name.as_str()).await?.as_ref(), name) {
            return Err(ImageWriteError::Exists(name.to_string()));
        }
        let images_dir = self.catalog.images_dir();
        let label = format!("upload-{}", uuid::Uuid::new_v4().simple());
        let staging = Staging::fresh(images_dir, &label)
            .await
            .map_err(ImageWriteError::Refused)?;
        let prepared = async {
            let mut sink = Sink::create(staging.download_path(), self.max_bytes)
                .await
                .map_err(ImageWriteError::Refused)?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(ImageWriteError::Body)?;
                sink.write(&chunk).await.map_err(ImageWriteError::Refused)?;
            }
            let received = sink.finish().await.map_err(ImageWriteError::Refused)?;
            let done = (received.sha256.as_str().to_string(), received.size);
            staging
                .prepare(&self.qemu_img, received, wanted)
                .await
                .map_err(ImageWriteError::Refused)?;
            Ok::<_, ImageWriteError>(done)
        }
        .await;
        let (sha, size) = match prepared {
            Ok(done) => done,
            // The body broke off: answer at once (the connection may not wait for a cleanup);
            // the drop removes the directory.
            Err(e @ ImageWriteError::Body(_)) => {
                drop(staging);
                return Err(e);
            }
            Err(e) => {
                staging.discard().await;
                return Err(e);
            }
        };
        let mut tx = crate::store::begin(&self.pool).await?;
        let (row, version) = rows::lock(&mut tx, name.as_str()).await?;
        if self.taken(row.as_ref(), name) {
            staging.discard().await;
            return Err(ImageWriteError::Exists(name.to_string()));
        }
        staging
            .install(images_dir, name)
            .await
            .map_err(ImageWriteError::Refused)?;
        let format = wanted.format.map(|f| f.as_str().to_string());
        let event = ImageEvent::ImageUploaded {
            kind: wanted.kind,
            format: format.clone(),
            sha256: sha.clone(),
            size_bytes: size,
        };
        let committed = async {
            if let Some(key) = key {
                idempotency::take(&mut tx, key).await?;
            }
            let version = rows::record(&mut tx, name.as_str(), version, &event, meta, None).await?;
            rows::upsert(
                &mut tx,
                &RowWrite {
                    name: name.as_str(),
                    kind: wanted.kind.as_str(),
                    status: ImageStatus::Ready,
                    source: ImageSource::Upload,
                    url: None,
                    format: format.as_deref(),
                    sha256: Some(&sha),
                    size_bytes: Some(i64::try_from(size).unwrap_or(i64::MAX)),
                    job_id: None,
                    error: None,
                    version,
                    created_by: Some(&meta.actor_id),
                },
            )
            .await?;
            let row = rows::get(&mut *tx, name.as_str())
                .await?
                .ok_or_else(|| anyhow::anyhow!("an uploaded image has no row"))
                .map_err(StoreError::Unexpected)?;
            let answer = answer(&row)?;
            if let Some(key) = key {
                idempotency::answer(&mut tx, key, &answer).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(answer)
        }
        .await;
        match committed {
            Ok(answer) => Ok(answer),
            Err(e) => {
                // Nothing recorded: the files go too.
                if let Ok(Some(aside)) = install::set_aside(images_dir, name).await {
                    install::remove(&aside).await;
                }
                Err(e.into())
            }
        }
    }

    /// Deletes image `name`, unless a VM that is not deleted was made from it or has it in its
    /// CD-ROM (recording `answer` with `key`, if any).
    pub async fn delete(
        &self,
        meta: &CommandMeta,
        name: &ImageName,
        key: Option<&KeyedRequest>,
        answer: &StoredAnswer,
    ) -> Result<(), ImageWriteError> {
        let images_dir = self.catalog.images_dir();
        let mut tx = crate::store::begin(&self.pool).await?;
        let (row, version) = rows::lock(&mut tx, name.as_str()).await?;
        let status = row.as_ref().map(|r| r.status);
        if status == Some(ImageStatus::Importing) {
            return Err(ImageWriteError::Busy(name.to_string()));
        }
        let on_disk = self.on_disk(name);
        if !on_disk && matches!(status, None | Some(ImageStatus::Deleted)) {
            return Err(ImageWriteError::NotFound(name.to_string()));
        }
        let vms = rows::users_of(&mut tx, name.as_str()).await?;
        if !vms.is_empty() {
            return Err(ImageWriteError::InUse {
                name: name.to_string(),
                vms,
            });
        }
        let kind = match &row {
            Some(r) if r.status != ImageStatus::Deleted => r.kind.clone(),
            _ => self
                .catalog
                .kind(name.as_str())
                .unwrap_or(ImageKind::Disk)
                .as_str()
                .to_string(),
        };
        let aside = install::set_aside(images_dir, name)
            .await
            .map_err(ImageWriteError::Refused)?;
        let committed = async {
            if let Some(key) = key {
                idempotency::take(&mut tx, key).await?;
                idempotency::answer(&mut tx, key, answer).await?;
            }
            let event = ImageEvent::ImageDeleted {};
            let version = rows::record(&mut tx, name.as_str(), version, &event, meta, None).await?;
            match &row {
                Some(_) => {
                    rows::set_status(
                        &mut tx,
                        name.as_str(),
                        ImageStatus::Deleted,
                        version,
                        None,
                        None,
                        None,
                    )
                    .await?
                }
                None => {
                    rows::upsert(
                        &mut tx,
                        &RowWrite {
                            name: name.as_str(),
                            kind: &kind,
                            status: ImageStatus::Deleted,
                            source: ImageSource::Host,
                            url: None,
                            format: None,
                            sha256: None,
                            size_bytes: None,
                            job_id: None,
                            error: None,
                            version,
                            created_by: None,
                        },
                    )
                    .await?
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        match (committed, aside) {
            (Ok(()), Some(aside)) => install::remove(&aside).await,
            (Ok(()), None) => {}
            (Err(e), aside) => {
                if let Some(aside) = aside {
                    install::put_back(images_dir, name, &aside).await;
                }
                return Err(e.into());
            }
        }
        Ok(())
    }
}
