//! The audit log over HTTP: `GET /events` (filtered, keyset-paged, or streamed as NDJSON) and
//! `GET /logs` (the same log, paged for people, with levels).

use std::convert::Infallible;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::answers::errors::{Invalid, Unauthorized};
use super::answers::{CursorPage, Envelope, LogLine, Page, Pagination};
use super::envelope;
use super::error::ApiError;
use super::vms::page_and_limit;
use crate::app::AppState;
use crate::auth::{AuthUser, Permission};
use crate::store::audit::{self, AuditEntry, EventFilter, Level, StreamType};
use crate::vm::VmEvent;

const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;
pub const NDJSON: &str = "application/x-ndjson";

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this VM's events.
    vm_id: Option<String>,
    /// One event type or several, comma-separated, e.g. `VmStarted,VmStopped` (the key repeated,
    /// `type=VmStarted&type=VmStopped`, reads the same).
    #[serde(rename = "type")]
    #[param(schema_with = event_type_list, style = Form, explode = false)]
    types: Option<String>,
    /// Only events caused by this user (id or username).
    actor: Option<String>,
    /// Only events of this job.
    job_id: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Events after this global position: the cursor (`next` of the previous page).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Events before this global position.
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `ndjson` streams every matching entry as one JSON line each, without paging; `json` (the
    /// default unless `Accept` asks for `application/x-ndjson`) answers one page.
    #[param(pattern = "^(json|ndjson)$")]
    format: Option<String>,
    /// Only streams of this kind: `vm`, `user`, `role`, `config`, `webhook` or `image` (all but `vm`
    /// need `user:read`).
    #[param(pattern = "^(vm|user|role|config|webhook|image)$")]
    stream_type: Option<String>,
}

pub fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::validation(field, format!("'{value}' is not an RFC 3339 time.")))
}

/// A `[from, to)` window; either end may be open.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn time_range(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, ApiError> {
    let from = from.map(|v| parse_time("from", v)).transpose()?;
    let to = to.map(|v| parse_time("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::validation("to", "to must not be before from."));
        }
    }
    Ok((from, to))
}

fn filter_of(user: &AuthUser, q: &EventsQuery) -> Result<EventFilter, ApiError> {
    let types: Vec<String> = q
        .types
        .as_deref()
        .map(|t| t.split(',').map(str::trim).map(String::from).collect())
        .unwrap_or_default();
    if let Some(bad) = types.iter().find(|t| !known_type(t)) {
        return Err(ApiError::validation(
            "type",
            format!("'{bad}' is not an event type."),
        ));
    }
    for (field, value) in [("after", q.after), ("before", q.before)] {
        if value.is_some_and(|v| v < 0) {
            return Err(ApiError::validation(
                field,
                format!("{field} must not be negative."),
            ));
        }
    }
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    Ok(EventFilter {
        owner_id: user.owner_filter(),
        vm_id: q.vm_id.clone(),
        types,
        actor: q.actor.clone(),
        job_id: q.job_id.clone(),
        from,
        to,
        after: q.after,
        before: q.before,
        accounts: user.may(Permission::UserRead),
        stream_type: stream_type(user, q.stream_type.as_deref())?,
        ..EventFilter::default()
    })
}

/// The `streamType` filter, checked.
fn stream_type(user: &AuthUser, value: Option<&str>) -> Result<Option<StreamType>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let kind = StreamType::parse(value).ok_or_else(|| {
        ApiError::validation(
            "streamType",
            "streamType must be vm, user, role, config, webhook or image.",
        )
    })?;
    if kind != StreamType::Vm {
        user.require(Permission::UserRead)?;
    }
    Ok(Some(kind))
}

/// Every event type of every stream in the log.
fn all_type_names() -> impl Iterator<Item = &'static str> {
    use crate::accounts::{ConfigEvent, RoleEvent, UserEvent};
    VmEvent::TYPE_NAMES
        .iter()
        .chain(UserEvent::TYPE_NAMES.iter())
        .chain(RoleEvent::TYPE_NAMES.iter())
        .chain(ConfigEvent::TYPE_NAMES.iter())
        .chain(crate::webhooks::WebhookEvent::TYPE_NAMES.iter())
        .chain(crate::images::ImageEvent::TYPE_NAMES.iter())
        .copied()
}

/// `type` in the OpenAPI document: one or more event types, sent comma-separated (`style: form`,
/// `explode: false`).
fn event_type_list() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    // A schema given this way replaces the field's doc comment, so the description goes here.
    ArrayBuilder::new()
        .description(Some(
            "One event type or several, comma-separated, e.g. `VmStarted,VmStopped` (the key \
             repeated, `type=VmStarted&type=VmStopped`, reads the same).",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(all_type_names())),
        )
        .min_items(Some(1))
        .build()
}

/// An event type of any stream in the log.
fn known_type(t: &str) -> bool {
    all_type_names().any(|known| known == t)
}

fn wants_ndjson(req: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("ndjson") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::validation(
                "format",
                format!("'{other}' is not a format; use json or ndjson."),
            ))
        }
        None => {}
    }
    Ok(req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON)))
}

/// `GET /events`: oldest first from `after`; `next` is the cursor for the following page (it
/// only moves forward, so polling with it sees each event exactly once).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "list_events",
    tag = "audit",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of the log, oldest first (or, with `format=ndjson` or `Accept: application/x-ndjson`, every matching entry, one JSON line each).", content((Envelope<CursorPage<AuditEntry>> = "application/json"), (AuditEntry = "application/x-ndjson"))),
        Invalid,
        Unauthorized
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("event:read")))
)]
#[tracing::instrument(name = "audit_events", skip_all, fields(user_id = %user.id))]
pub async fn events(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::EventRead)?;
    let q: EventsQuery = super::body::query_with_lists(&req, &["type"])?;
    let filter = filter_of(&user, &q)?;
    // Checked in both formats: an export ignores the page size, but a wrong one is still wrong.
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::validation(
            "limit",
            format!("limit must be between 1 and {PAGE_MAX}."),
        ));
    }
    if wants_ndjson(&req, q.format.as_deref())? {
        return Ok(export(state.pool.clone(), filter));
    }
    let rows = audit::page(&state.pool, &filter, limit).await?;
    let next = rows.last().map(|r| r.position).or(q.after).unwrap_or(0);
    let items: Vec<_> = rows.iter().map(audit::AuditRow::entry).collect();
    Ok(envelope::ok(
        CursorPage {
            has_more: items.len() == limit as usize,
            items,
            next,
        },
        "Events.",
    ))
}

/// Streams every matching event as one JSON line each. Rows go from one database connection
/// through a small channel to the client, so memory stays bounded whatever the range.
fn export(pool: sqlx::PgPool, filter: EventFilter) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<web::Bytes>(16);
    actix_web::rt::spawn(async move {
        let bound = match crate::store::visible::bound(&pool).await {
            Ok(bound) => bound,
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "the export could not read the log");
                let _ = tx.send(error_line()).await;
                return;
            }
        };
        let mut conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "the export could not get a connection");
                let _ = tx.send(error_line()).await;
                return;
            }
        };
        let mut query = audit::export_query(&filter, bound);
        let mut rows = audit::stream(&mut conn, &mut query);
        let mut chunk = Vec::with_capacity(64 * 1024);
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) => {
                    if serde_json::to_writer(&mut chunk, &row.to_json()).is_err() {
                        continue;
                    }
                    chunk.push(b'\n');
                    if chunk.len() >= 60 * 1024
                        && tx
                            .send(web::Bytes::from(std::mem::take(&mut chunk)))
                            .await
                            .is_err()
                    {
                        return; // The client went away.
                    }
                }
                Err(e) => {
                    tracing::error!(error = %crate::telemetry::chain(&e), "the export failed mid-stream");
                    chunk.extend_from_slice(&error_line());
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(web::Bytes::from(chunk)).await;
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    HttpResponse::Ok().content_type(NDJSON).streaming(body)
}

/// The last line of an export that could not finish, so a reader knows it is incomplete.
fn error_line() -> web::Bytes {
    web::Bytes::from(format!(
        "{}\n",
        json!({"error": {"code": "INTERNAL_ERROR", "message": "The export stopped early; it is incomplete."}})
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct LogsQuery {
    /// The least severe level to show: info, warn or error (default info).
    #[param(pattern = "^(info|warn|error)$")]
    level: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[param(format = DateTime)]
    to: Option<String>,
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// Lines per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only streams of this kind: `vm`, `user`, `role`, `config`, `webhook` or `image`.
    #[param(pattern = "^(vm|user|role|config|webhook|image)$")]
    stream_type: Option<String>,
}

/// `GET /logs`: the log for people, newest first, `level` being the least severe to show.
#[utoipa::path(
    get,
    path = "/api/v1/logs",
    tag = "audit",
    params(LogsQuery),
    responses(
        (status = 200, description = "A page of the log for people, newest first.", body = Envelope<Page<LogLine>>),
        Invalid,
        Unauthorized
    ),
    security(("bearer" = [])),
    extensions(("x-permission" = json!("event:read")))
)]
#[tracing::instrument(name = "logs", skip_all, fields(user_id = %user.id))]
pub async fn logs(
    state: web::Data<AppState>,
    user: AuthUser,
    query: crate::api::body::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Permission::EventRead)?;
    let q = query.into_inner();
    let (page, limit) = page_and_limit(q.page, q.limit)?;
    let min_level = q
        .level
        .as_deref()
        .map(|l| {
            Level::parse(l).ok_or_else(|| {
                ApiError::validation(
                    "level",
                    format!("'{l}' is not a level: info, warn or error."),
                )
            })
        })
        .transpose()?;
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let filter = EventFilter {
        owner_id: user.owner_filter(),
        from,
        to,
        min_level,
        accounts: user.may(Permission::UserRead),
        stream_type: stream_type(&user, q.stream_type.as_deref())?,
        ..EventFilter::default()
    };
    let (rows, total) = audit::page_by_offset(&state.pool, &filter, page, limit).await?;
    let items: Vec<_> = rows
        .iter()
        .map(|r| LogLine {
            id: r.position,
            timestamp: r.recorded_at,
            level: r.level.clone(),
            message: r.describe(),
            event_type: r.event_type.clone(),
            vm_id: (r.aggregate_type == "vm").then(|| r.aggregate_id.clone()),
            stream_type: r.aggregate_type.clone(),
            stream_id: r.aggregate_id.clone(),
            actor: r.metadata.actor_name.clone(),
            job_id: r.metadata.job_id.clone(),
        })
        .collect();
    Ok(envelope::ok(
        Page {
            items,
            pagination: Pagination::new(page, limit, total),
        },
        "Logs.",
    ))
}
