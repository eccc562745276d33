//! Cancelling an image import, queued or running: one transaction under the image name's lock
//! records `ImageImportCancelled` (closing the job as `cancelled`) and marks the image `failed`,
//! so its name may be used again. A worker downloading it notices within a second, stops and
//! removes its staging directory; one that was about to install finds the import ended under
//! the same lock and installs nothing (`service::finish`).

use sqlx::PgConnection;

use super::service::{ImageService, ImageWriteError};
use super::{ImageEvent, ImageStatus};
use crate::store::append::JobMark;
use crate::store::images as rows;
use crate::store::jobs::{self, JobRow};
use crate::store::{CommandMeta, StoreError};
use crate::vm::JobOutcome;

/// The image's `error` once its import was cancelled.
const CANCELLED: &str = "The import was cancelled.";

impl ImageService {
    /// Cancels import job `job` in the caller's transaction; returns the job as it left it.
    /// Refused once the import has ended (installed, failed or already cancelled).
    pub async fn cancel_import(
        &self,
        tx: &mut PgConnection,
        meta: &CommandMeta,
        job: &JobRow,
    ) -> Result<JobRow, ImageWriteError> {
        let name = job.vm_id.as_str();
        let (row, version) = rows::lock(tx, name).await?;
        let importing = row.is_some_and(|r| {
            r.status == ImageStatus::Importing && r.job_id.as_deref() == Some(job.id.as_str())
        });
        if !importing {
            return Err(ImageWriteError::ImportEnded(job.id.clone()));
        }
        let event = ImageEvent::ImageImportCancelled {
            job_id: job.id.clone(),
        };
        let closes = JobMark::Closes {
            job_id: &job.id,
            outcome: JobOutcome::Cancelled,
            error: None,
        };
        let version = rows::record(tx, name, version, &event, meta, Some(closes)).await?;
        rows::set_status(
            tx,
            name,
            ImageStatus::Failed,
            version,
            None,
            None,
            Some(CANCELLED),
        )
        .await?;
        jobs::get_in(tx, &job.id).await?.ok_or_else(|| {
            ImageWriteError::Store(StoreError::Unexpected(anyhow::anyhow!(
                "a cancelled import's job was not found in its transaction"
            )))
        })
    }
}
