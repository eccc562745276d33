//! `/images`: the images VMs are made from. Imports from a URL are jobs (202 with the job, whose
//! progress shows on `GET /jobs/{id}` and as `ImageImportProgressed` events); an upload streams
//! its body to disk and answers when the image is installed (201). Images found on disk that no
//! event brought (the test guest, folders an operator copied) are listed as `source: host`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answers::errors::{Forbidden, Invalid, Unauthorized};
use super::answers::Envelope;
use super::body;
use super::envelope;
use super::error::ApiError;
use super::retry::{envelope_answer, KeyHeader, Retry};
use crate::app::ids::new_job_id;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::images::service::ImageWriteError;
use crate::images::{
    ImageError, ImageKind, ImageName, ImageSource, ImageStatus, SourceUrl, Wanted,
};
use crate::store::conditions::StoredAnswer;
use crate::store::images::{self as rows, ImageRow};
use crate::store::jobs::JobView;
use crate::store::Via;

/// The upload route's pattern: its body is not bounded by the JSON body limit.
pub const UPLOAD_PATTERN: &str = "/api/v1/images/{name}/upload";

/// An image as `/images` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetails {
    pub name: String,
    pub kind: ImageKind,
    /// `importing`, `ready` or `failed` (a failed import left nothing on disk; the name may be
    /// used again). A deleted image is not shown.
    pub status: ImageStatus,
    /// `url` (imported), `upload`, or `host` (found on disk).
    pub source: ImageSource,
    pub url: Option<String>,
    /// The format asked for; disk images are stored as qcow2.
    pub format: Option<String>,
    /// The checksum asked for, or once ready the one of the bytes received.
    pub sha256: Option<String>,
    /// The bytes received (for `host` images, the size of the image's file).
    pub size_bytes: Option<i64>,
    /// The import's job.
    pub job_id: Option<String>,
    /// Why the import failed.
    pub error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ImageDetails {
    fn from_row(r: ImageRow) -> ImageDetails {
        ImageDetails {
            kind: ImageKind::parse(&r.kind).unwrap_or(ImageKind::Disk),
            name: r.name,
            status: r.status,
            source: r.source,
            url: r.url,
            format: r.format,
            sha256: r.sha256,
            size_bytes: r.size_bytes,
            job_id: r.job_id,
            error: r.error,
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }

    fn host(state: &AppState, name: &str, kind: ImageKind) -> ImageDetails {
        let file = state.images.images_dir().join(name).join(kind.file_name());
        let size = std::fs::metadata(file)
            .ok()
            .and_then(|m| i64::try_from(m.len()).ok());
        ImageDetails {
            name: name.to_string(),
            kind,
            status: ImageStatus::Ready,
            source: ImageSource::Host,
            url: None,
            format: None,
            sha256: None,
            size_bytes: size,
            job_id: None,
            error: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// An import accepted: the image (`importing`) and its job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportAccepted {
    #[serde(flatten)]
    pub image: ImageDetails,
    pub job: JobView,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewImage {
    /// Lowercase letters, digits, `.`, `-`, `_`; begins with a letter or digit; at most 63.
    #[schema(max_length = 63, pattern = "^[a-z0-9][a-z0-9._-]*$")]
    name: String,
    /// An `http` or `https` URL without credentials (it is recorded in the event log); not a
    /// private address unless the server allows them (`images.allow_private`).
    #[schema(
        max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[^/@#?\\s\\u0000]+([/?][^#\\s\\u0000]*)?$"
    )]
    url: String,
    /// `disk` (a base disk, converted to qcow2), `iso` (a CD-ROM) or `kernel` (a kernel booted
    /// directly, with the default command line and no initrd).
    kind: ImageKind,
    /// Disks only: `qcow2`, `raw`, `vmdk`, `vdi`, `vhdx` or `vpc`; `qemu-img` tells when absent.
    #[schema(pattern = "^(qcow2|raw|vmdk|vdi|vhdx|vpc)$")]
    format: Option<String>,
    /// The SHA-256 of the bytes served, 64 hexadecimal digits; the import fails if it differs.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// `disk`, `iso` or `kernel`.
    #[param(pattern = "^(disk|iso|kernel)$")]
    kind: String,
    /// Disks only: `qcow2`, `raw`, `vmdk`, `vdi`, `vhdx` or `vpc`.
    #[param(pattern = "^(qcow2|raw|vmdk|vdi|vhdx|vpc)$")]
    format: Option<String>,
    /// The SHA-256 of the body, 64 hexadecimal digits; the upload is refused if it differs.
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

fn name(raw: &str) -> Result<ImageName, ApiError> {
    ImageName::parse(raw).map_err(|m| ApiError::validation("name", m))
}

fn wanted(kind: &str, format: Option<&str>, sha256: Option<&str>) -> Result<Wanted, ApiError> {
    Wanted::parse(kind, format, sha256).map_err(|(field, m)| ApiError::validation(field, m))
}

pub(super) fn write_error(e: ImageWriteError) -> ApiError {
    let message = e.to_string();
    match e {
        ImageWriteError::Exists(_) => ApiError::Conflict {
            code: "IMAGE_EXISTS",
            message,
        },
        ImageWriteError::NotFound(name) => ApiError::ImageNotFound(name),
        ImageWriteError::InUse { .. } => ApiError::Conflict {
            code: "IMAGE_IN_USE",
            message,
        },
        ImageWriteError::Busy(_) => ApiError::Conflict {
            code: "IMAGE_BUSY",
            message,
        },
        ImageWriteError::ImportEnded(_) => ApiError::Conflict {
            code: "JOB_NOT_CANCELLABLE",
            message,
        },
        ImageWriteError::Refused(ImageError::TooLarge { .. }) => ApiError::PayloadTooLarge,
        ImageWriteError::Refused(ImageError::ChecksumMismatch { .. }) => {
            ApiError::validation("sha256", message)
        }
        ImageWriteError::Refused(ImageError::Io(e)) => ApiError::Unexpected(e),
        ImageWriteError::Refused(_) | ImageWriteError::Body(_) => {
            ApiError::validation("body", message)
        }
        ImageWriteError::Store(e) => e.into(),
    }
}

/// The image `name` as listed: its row unless deleted, else its files on disk.
async fn find(state: &AppState, name: &str) -> Result<Option<ImageDetails>, ApiError> {
    if let Some(row) = rows::get(&state.pool, name).await? {
        if row.status != ImageStatus::Deleted {
            return Ok(Some(ImageDetails::from_row(row)));
        }
    }
    Ok(state
        .images
        .kind(name)
        .map(|kind| ImageDetails::host(state, name, kind)))
}

#[utoipa::path(
    get,
    path = "/api/v1/images",
    operation_id = "list_images",
    tag = "images",
    responses(
        (status = 200, description = "Every image, by name: imported, uploaded and found on disk (`source: host`).", body = Envelope<Vec<ImageDetails>>),
        Unauthorized,
        Forbidden
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("image:read")))
)]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ImageRead)?;
    let mut items: Vec<ImageDetails> = rows::list(&state.pool)
        .await?
        .into_iter()
        .map(ImageDetails::from_row)
        .collect();
    for (name, kind) in state.images.entries() {
        if !items.iter().any(|i| i.name == name) {
            items.push(ImageDetails::host(&state, &name, kind));
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(envelope::ok(items, "Images."))
}

#[utoipa::path(
    get,
    path = "/api/v1/images/{name}",
    operation_id = "get_image",
    tag = "images",
    params(("name" = String, Path, description = "The image's name.")),
    responses(
        (status = 200, description = "The image.", body = Envelope<ImageDetails>),
        Unauthorized,
        Forbidden,
        (status = 404, description = "No such image (`IMAGE_NOT_FOUND`).", body = super::answers::ErrorEnvelope)
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("image:read")))
)]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ImageRead)?;
    let name = path.into_inner();
    let view = find(&state, &name)
        .await?
        .ok_or(ApiError::ImageNotFound(name))?;
    Ok(envelope::ok(view, "Image."))
}

#[utoipa::path(
    post,
    path = "/api/v1/images",
    operation_id = "import_image",
    tag = "images",
    params(KeyHeader),
    request_body = NewImage,
    responses(
        (status = 202, description = "Accepted; recorded as `ImageImportRequested`. A worker downloads the image (progress on the job and as `ImageImportProgressed` events), verifies its checksum, converts a disk to qcow2 and installs it; then `ImageImported`, or `ImageImportFailed` with nothing left behind.", body = Envelope<ImportAccepted>),
        Invalid,
        Unauthorized,
        Forbidden,
        (status = 409, description = "An image of that name exists (`IMAGE_EXISTS`).", body = super::answers::ErrorEnvelope)
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("image:create")))
)]
#[tracing::instrument(name = "import_image", skip_all, fields(user_id = %user.id))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<crate::api::strict_json::StrictValue>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ImageCreate)?;
    let retry = Retry::read_json(&req, &user, &body)?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let new: NewImage = body::typed(body.into_inner().0)?;
    let name = name(&new.name)?;
    let url = SourceUrl::parse(&new.url).map_err(|m| ApiError::validation("url", m))?;
    if let Some(ip) = state.image_service.fetcher().refuses(url.as_str()) {
        return Err(ApiError::validation(
            "url",
            format!("url names {ip}, a private address; this server downloads only from public ones (images.allow_private)."),
        ));
    }
    let wanted = wanted(
        new.kind.as_str(),
        new.format.as_deref(),
        new.sha256.as_deref(),
    )?;
    let job_id = new_job_id();
    let done = retry
        .transaction(&state, async |tx| {
            let (row, job) = state
                .image_service
                .request_import(tx, &user.meta(Via::Rest), &name, &url, &wanted, &job_id)
                .await
                .map_err(write_error)?;
            let data = ImportAccepted {
                image: ImageDetails::from_row(row),
                job: JobView::from(job),
            };
            Ok(envelope_answer(
                StatusCode::ACCEPTED,
                data,
                "Image import accepted.",
            )?)
        })
        .await;
    match done {
        Ok(response) => Ok(response),
        Err(e) => retry.or_earlier(&state, e).await,
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/images/{name}/upload",
    operation_id = "upload_image",
    tag = "images",
    params(("name" = String, Path, description = "The new image's name: lowercase letters, digits, `.`, `-`, `_`; begins with a letter or digit; at most 63.", pattern = "^[a-z0-9][a-z0-9._-]*$", max_length = 63), UploadQuery, KeyHeader),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image's bytes, streamed to disk (up to `images.max_bytes`)."),
    responses(
        (status = 201, description = "Installed; recorded as `ImageUploaded`.", body = Envelope<ImageDetails>),
        Invalid,
        Unauthorized,
        Forbidden,
        (status = 409, description = "An image of that name exists (`IMAGE_EXISTS`).", body = super::answers::ErrorEnvelope),
        (status = 413, description = "Larger than `images.max_bytes` (`PAYLOAD_TOO_LARGE`).", body = super::answers::ErrorEnvelope)
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("image:create")))
)]
#[tracing::instrument(name = "upload_image", skip_all, fields(user_id = %user.id))]
pub async fn upload(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ImageCreate)?;
    // The key covers the method, the path and the query (with `sha256`, the bytes' checksum),
    // not the streamed bytes themselves.
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let name = name(&path.into_inner())?;
    // A compressed body never gets here (`api::input`): the bytes are stored as they arrive.
    let q: UploadQuery = body::query(&req)?;
    let wanted = wanted(&q.kind, q.format.as_deref(), q.sha256.as_deref())?;
    let body = payload.map(|chunk| chunk.map_err(|e| e.to_string()));
    let answer = |row: &ImageRow| {
        envelope_answer(
            StatusCode::CREATED,
            ImageDetails::from_row(row.clone()),
            "Image uploaded.",
        )
    };
    let uploaded = state
        .image_service
        .upload(
            &user.meta(Via::Rest),
            &name,
            &wanted,
            body,
            retry.key(),
            &answer,
        )
        .await;
    match uploaded {
        Ok(answer) => Retry::respond(&answer),
        Err(e) => retry.or_earlier(&state, write_error(e)).await,
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/images/{name}",
    operation_id = "delete_image",
    tag = "images",
    params(("name" = String, Path, description = "The image's name."), KeyHeader),
    responses(
        (status = 204, description = "Deleted; recorded as `ImageDeleted`. Its files are removed."),
        Unauthorized,
        Forbidden,
        (status = 404, description = "No such image (`IMAGE_NOT_FOUND`).", body = super::answers::ErrorEnvelope),
        (status = 409, description = "A VM that is not deleted was made from it or has it in its CD-ROM (`IMAGE_IN_USE`, naming the VMs), or it is being imported (`IMAGE_BUSY`).", body = super::answers::ErrorEnvelope)
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("image:delete")))
)]
#[tracing::instrument(name = "delete_image", skip_all, fields(user_id = %user.id))]
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    _body: crate::api::body::NoBody,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::ImageDelete)?;
    let retry = Retry::read(&req, &user, &[])?;
    if let Some(response) = retry.earlier(&state).await? {
        return Ok(response);
    }
    let raw = path.into_inner();
    let name = ImageName::parse(&raw).map_err(|_| ApiError::ImageNotFound(raw.clone()))?;
    let answer = StoredAnswer {
        status: StatusCode::NO_CONTENT.as_u16(),
        body: Value::Null,
    };
    let deleted = state
        .image_service
        .delete(&user.meta(Via::Rest), &name, retry.key(), &answer)
        .await;
    match deleted {
        Ok(()) => Retry::respond(&answer),
        Err(e) => retry.or_earlier(&state, write_error(e)).await,
    }
}
