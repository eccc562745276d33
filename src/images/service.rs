//! The image commands, each one transaction under the image name's lock: asking for an import
//! (its event opens the job) and carrying it out (the worker: download, verify, convert,
//! install, then `ImageImported`, or `ImageImportFailed` with nothing left behind). Uploads and
//! deletes are in `direct`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use super::fetch::{Fetcher, Progress};
use super::install::{self, Sink};
use super::staging::Staging;
use super::{ImageError, ImageEvent, ImageName, ImageSource, ImageStatus, SourceUrl, Wanted};
use crate::hypervisor::images::ImageCatalog;
use crate::store::append::JobMark;
use crate::store::images::{self as rows, ImageRow, RowWrite};
use crate::store::jobs::{self, JobKind, JobRow};
use crate::store::{CommandMeta, StoreError};
use crate::vm::JobOutcome;

/// Progress events are recorded at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a running import looks whether it was cancelled.
const CANCEL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why an image command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageWriteError {
    #[error("An image named '{0}' exists.")]
    Exists(String),
    #[error("Image '{0}' was not found")]
    NotFound(String),
    #[error("Image '{name}' is used by virtual machines {} (made from it, or with it in their CD-ROM); delete them or detach it first.", vms.join(", "))]
    InUse { name: String, vms: Vec<String> },
    #[error("Image '{0}' is being imported; wait for its job to end.")]
    Busy(String),
    #[error("The upload was refused: {0}")]
    Refused(ImageError),
    #[error("The request body could not be read: {0}")]
    Body(String),
    #[error("Job {0} cannot be cancelled: its import has ended.")]
    ImportEnded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ImageWriteError {
    fn from(e: sqlx::Error) -> Self {
        ImageWriteError::Store(e.into())
    }
}

pub struct ImageService {
    pub(super) pool: PgPool,
    pub(super) catalog: ImageCatalog,
    pub(super) qemu_img: PathBuf,
    fetcher: Fetcher,
    pub(super) max_bytes: u64,
}

impl ImageService {
    pub fn new(
        pool: PgPool,
        catalog: ImageCatalog,
        qemu_img: PathBuf,
        fetcher: Fetcher,
        max_bytes: u64,
    ) -> ImageService {
        ImageService {
            pool,
            catalog,
            qemu_img,
            fetcher,
            max_bytes,
        }
    }

    pub fn catalog(&self) -> &ImageCatalog {
        &self.catalog
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    pub(super) fn on_disk(&self, name: &ImageName) -> bool {
        self.catalog.images_dir().join(name.as_str()).exists()
    }

    pub(super) fn taken(&self, row: Option<&ImageRow>, name: &ImageName) -> bool {
        row.is_some_and(|r| matches!(r.status, ImageStatus::Importing | ImageStatus::Ready))
            || self.on_disk(name)
    }

    /// Records the request for an import in the caller's transaction; its event opens the job a
    /// worker carries out.
    pub async fn request_import(
        &self,
        tx: &mut PgConnection,
        meta: &CommandMeta,
        name: &ImageName,
        url: &SourceUrl,
        wanted: &Wanted,
        job_id: &str,
    ) -> Result<(ImageRow, JobRow), ImageWriteError> {
        let (row, version) = rows::lock(tx, name.as_str()).await?;
        if self.taken(row.as_ref(), name) {
            return Err(ImageWriteError::Exists(name.to_string()));
        }
        let format = wanted.format.map(|f| f.as_str().to_string());
        let sha256 = wanted.sha256.as_ref().map(|s| s.as_str().to_string());
        let event = ImageEvent::ImageImportRequested {
            job_id: job_id.to_string(),
            kind: wanted.kind,
            url: url.as_str().to_string(),
            format: format.clone(),
            sha256: sha256.clone(),
        };
        let opens = JobMark::Opens {
            job_id,
            kind: JobKind::ImportImage,
        };
        let version = rows::record(tx, name.as_str(), version, &event, meta, Some(opens)).await?;
        rows::upsert(
            tx,
            &RowWrite {
                name: name.as_str(),
                kind: wanted.kind.as_str(),
                status: ImageStatus::Importing,
                source: ImageSource::Url,
                url: Some(url.as_str()),
                format: format.as_deref(),
                sha256: sha256.as_deref(),
                size_bytes: None,
                job_id: Some(job_id),
                error: None,
                version,
                created_by: Some(&meta.actor_id),
            },
        )
        .await?;
        let job = jobs::get_in(tx, job_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the import's job was not opened by its event"))
            .map_err(StoreError::Unexpected)?;
        let row = rows::get(&mut *tx, name.as_str())
            .await?
            .ok_or_else(|| ImageWriteError::NotFound(name.to_string()))?;
        Ok((row, job))
    }

    /// Carries out import job `job` to its end: `Err` only when its outcome could not be
    /// recorded (the worker then tries again, from the start).
    pub async fn run_import(&self, job: &JobRow, meta: &CommandMeta) -> Result<(), StoreError> {
        let Some((name, url, wanted)) = import_params(job) else {
            let reason = "The job's parameters could not be read.";
            return self
                .finish(job, &job.vm_id, Err(reason.to_string()), meta)
                .await;
        };
        if !self.still_importing(&name, &job.id).await? {
            tracing::info!("the import was already ended");
            return Ok(());
        }
        // A previous attempt may have installed the files and died before its event committed:
        // the name's directory is this import's (the request found none), so it starts over.
        match install::set_aside(self.catalog.images_dir(), &name).await {
            Ok(Some(aside)) => install::remove(&aside).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "an earlier attempt's files could not be moved aside")
            }
        }
        let outcome = tokio::select! {
            outcome = self.import(job, &name, &url, &wanted, meta) => outcome,
            () = self.ended_elsewhere(&name, &job.id) => Err(ImageError::Cancelled),
        };
        let outcome = match outcome {
            Ok(prepared) => Ok(prepared),
            Err(e) => {
                tracing::info!(error = %e, "the import failed");
                Err(e.to_string())
            }
        };
        self.finish(job, name.as_str(), outcome, meta).await
    }

    async fn still_importing(&self, name: &ImageName, job_id: &str) -> Result<bool, StoreError> {
        Ok(rows::get(&self.pool, name.as_str())
            .await?
            .is_some_and(|r| {
                r.status == ImageStatus::Importing && r.job_id.as_deref() == Some(job_id)
            }))
    }

    /// Returns once the image's row no longer says that job `job_id` imports it (a cancel
    /// committed), looking every [`CANCEL_CHECK_EVERY`]; the download then stops. A look that
    /// fails (the database away for a moment) is not an answer: it looks again.
    async fn ended_elsewhere(&self, name: &ImageName, job_id: &str) {
        loop {
            tokio::time::sleep(CANCEL_CHECK_EVERY).await;
            match self.still_importing(name, job_id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("the import was cancelled; stopping the download");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not look whether the import was cancelled")
                }
            }
        }
    }

    /// Downloads, verifies and converts into a staging directory, which is gone on failure.
    async fn import(
        &self,
        job: &JobRow,
        name: &ImageName,
        url: &SourceUrl,
        wanted: &Wanted,
        meta: &CommandMeta,
    ) -> Result<Prepared, ImageError> {
        let images_dir = self.catalog.images_dir();
        let staging = Staging::fresh(images_dir, &format!("import-{}", job.id)).await?;
        let result = async {
            let mut sink = Sink::create(staging.download_path(), self.max_bytes).await?;
            let (tx, rx) = watch::channel(Progress::default());
            let reporter = tokio::spawn(report(
                self.pool.clone(),
                name.clone(),
                job.id.clone(),
                meta.clone(),
                rx,
            ));
            let fetched = self.fetcher.fetch(url.as_str(), &mut sink, &tx).await;
            reporter.abort();
            fetched?;
            let last = *tx.borrow();
            if let Err(e) = record_progress(&self.pool, name, &job.id, last, meta).await {
                tracing::warn!(error = %e, "the import's last progress could not be recorded");
            }
            let received = sink.finish().await?;
            let done = (received.sha256.as_str().to_string(), received.size);
            staging.prepare(&self.qemu_img, received, wanted).await?;
            Ok::<_, ImageError>(done)
        }
        .await;
        match result {
            Ok((sha256, size)) => Ok(Prepared {
                staging,
                sha256,
                size,
            }),
            Err(e) => {
                staging.discard().await;
                Err(e)
            }
        }
    }

    /// Records the import's outcome, closing its job. The prepared files are installed under
    /// the image's lock, in the transaction that records `ImageImported`, so a cancel that
    /// committed first leaves nothing on disk and one that comes later finds the import ended.
    async fn finish(
        &self,
        job: &JobRow,
        name: &str,
        outcome: Result<Prepared, String>,
        meta: &CommandMeta,
    ) -> Result<(), StoreError> {
        let mut tx = crate::store::begin(&self.pool).await?;
        let (row, version) = rows::lock(&mut tx, name).await?;
        let current = row.as_ref().is_some_and(|r| {
            r.status == ImageStatus::Importing && r.job_id.as_deref() == Some(&job.id)
        });
        if !current {
            if let Ok(prepared) = outcome {
                prepared.staging.discard().await;
            }
            tx.commit().await?;
            tracing::info!("the import had already ended (cancelled); nothing recorded");
            return Ok(());
        }
        let outcome = match outcome {
            Ok(prepared) => self.install(prepared, name).await,
            Err(reason) => Err(reason),
        };
        let (event, status, sha, size, error) = match &outcome {
            Ok((sha, size)) => (
                ImageEvent::ImageImported {
                    job_id: job.id.clone(),
                    sha256: sha.clone(),
                    size_bytes: *size,
                },
                ImageStatus::Ready,
                Some(sha.as_str()),
                Some(i64::try_from(*size).unwrap_or(i64::MAX)),
                None,
            ),
            Err(reason) => (
                ImageEvent::ImageImportFailed {
                    job_id: job.id.clone(),
                    reason: reason.clone(),
                },
                ImageStatus::Failed,
                None,
                None,
                Some(reason.as_str()),
            ),
        };
        let closes = JobMark::Closes {
            job_id: &job.id,
            outcome: if outcome.is_ok() {
                JobOutcome::Succeeded
            } else {
                JobOutcome::Failed
            },
            error,
        };
        let version = rows::record(&mut tx, name, version, &event, meta, Some(closes)).await?;
        rows::set_status(&mut tx, name, status, version, sha, size, error).await?;
        // Should the commit fail after the files were installed, the worker runs the job again
        // and its first step moves them aside.
        tx.commit().await?;
        tracing::info!(succeeded = outcome.is_ok(), error = ?error, "the import ended");
        Ok(())
    }
}

impl ImageService {
    /// Moves prepared files under the image's name; what went wrong is the import's failure.
    async fn install(&self, prepared: Prepared, name: &str) -> Result<(String, u64), String> {
        let name =
            ImageName::parse(name).map_err(|m| format!("The image's name is invalid: {m}"))?;
        prepared
            .staging
            .install(self.catalog.images_dir(), &name)
            .await
            .map_err(|e| e.to_string())?;
        Ok((prepared.sha256, prepared.size))
    }
}

/// An import's files, verified and converted, waiting in their staging directory to be
/// installed by the transaction that records them.
struct Prepared {
    staging: Staging,
    sha256: String,
    size: u64,
}

/// What an import job was asked for, from the event that opened it.
fn import_params(job: &JobRow) -> Option<(ImageName, SourceUrl, Wanted)> {
    let ImageEvent::ImageImportRequested {
        kind,
        url,
        format,
        sha256,
        ..
    } = serde_json::from_value(job.params.clone()).ok()?
    else {
        return None;
    };
    let name = ImageName::parse(&job.vm_id).ok()?;
    let url = SourceUrl::parse(&url).ok()?;
    let wanted = Wanted::parse(kind.as_str(), format.as_deref(), sha256.as_deref()).ok()?;
    Some((name, url, wanted))
}

/// Records progress as it changes, at most once per [`PROGRESS_EVERY`], until aborted.
async fn report(
    pool: PgPool,
    name: ImageName,
    job_id: String,
    meta: CommandMeta,
    mut rx: watch::Receiver<Progress>,
) {
    while rx.changed().await.is_ok() {
        let now = *rx.borrow_and_update();
        if let Err(e) = record_progress(&pool, &name, &job_id, now, &meta).await {
            tracing::warn!(error = %e, "an import's progress could not be recorded");
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// Writes progress on the job's row and as an `ImageImportProgressed` event, in one transaction.
async fn record_progress(
    pool: &PgPool,
    name: &ImageName,
    job_id: &str,
    p: Progress,
    meta: &CommandMeta,
) -> Result<(), StoreError> {
    let mut tx = crate::store::begin(pool).await?;
    let (row, version) = rows::lock(&mut tx, name.as_str()).await?;
    if !row
        .is_some_and(|r| r.status == ImageStatus::Importing && r.job_id.as_deref() == Some(job_id))
    {
        return Ok(());
    }
    rows::job_progress(&mut tx, job_id, p.done, p.total).await?;
    let event = ImageEvent::ImageImportProgressed {
        job_id: job_id.to_string(),
        bytes_done: p.done,
        bytes_total: p.total,
    };
    let concerns = JobMark::Concerns { job_id };
    let version = rows::record(
        &mut tx,
        name.as_str(),
        version,
        &event,
        meta,
        Some(concerns),
    )
    .await?;
    rows::set_version(&mut tx, name.as_str(), version).await?;
    tx.commit().await?;
    Ok(())
}

/// Shared by the API and the workers.
pub type SharedImages = Arc<ImageService>;
