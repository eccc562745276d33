//! The OpenAPI document, generated from the handlers' annotations and the answer types they
//! really send (`answers.rs`), served at `GET /api/v1/openapi.json` with a browsable reference
//! at `GET /api/v1/docs`. `schemas/openapi.json` is a copy that a test keeps equal to this, and
//! the integration tests check every answer they get against it.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::Ref;
use utoipa::{Modify, OpenApi};
use utoipa_scalar::Scalar;

pub mod headers;
mod links;
mod storable;

use headers::Headers;
use links::Links;
use storable::Storable;

use super::answers::ErrorEnvelope;
use super::{
    audit, auth, config, health, images, jobs, metrics, roles, system, users, vms, webhooks,
    API_VERSION,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "VoidVM API",
        description = "Create, start, stop and watch QEMU virtual machines. Every mutating call \
                       answers at once with the id of the job that carries it out; every change \
                       is an event in an append-only, replayable log. The real-time feed is the \
                       WebSocket at `/ws`.",
        license(name = "MIT")
    ),
    paths(
        health::health,
        health::ready,
        crate::ws::connect,
        auth::login,
        auth::me,
        auth::logout,
        auth::change_password,
        vms::list,
        vms::create,
        vms::get,
        vms::patch,
        vms::delete,
        vms::start,
        vms::stop,
        vms::restart,
        vms::pause,
        vms::resume,
        vms::reset,
        vms::attach_iso,
        vms::detach_iso,
        vms::serial_console,
        vms::vnc_console,
        vms::list_snapshots,
        vms::take_snapshot,
        vms::restore_snapshot,
        vms::delete_snapshot,
        vms::events,
        vms::history,
        audit::events,
        audit::logs,
        jobs::list,
        jobs::get,
        jobs::wait,
        jobs::cancel,
        users::list,
        users::create,
        users::get,
        users::update,
        users::delete,
        roles::permissions,
        roles::list,
        roles::create,
        roles::update,
        roles::delete,
        config::get,
        config::put,
        system::info,
        system::stats,
        webhooks::list,
        webhooks::create,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::redeliver,
        images::list,
        images::get,
        images::create,
        images::upload,
        images::delete,
        metrics::metrics,
        json,
        page,
    ),
    // The shared error answers (`answers::errors`) refer to it without registering it.
    components(schemas(ErrorEnvelope)),
    // In this order: the rules, links and headers are added to every answer, the shared ones
    // included.
    modifiers(&Versioned, &BearerAuth, &DefaultError, &Storable, &Links, &Headers),
    tags(
        (name = "auth", description = "Logging in and out."),
        (name = "vms", description = "Virtual machines and their lifecycle."),
        (name = "jobs", description = "The work a command starts."),
        (name = "audit", description = "The event log: who did what to which VM, and when."),
        (name = "system", description = "Users, roles, permissions and the configuration (the system page); the host, this node, and what happened over a period."),
        (name = "webhooks", description = "The event log delivered to HTTP receivers, signed, in order per VM, at least once."),
        (name = "images", description = "The images VMs are made from: imported from a URL (a job), uploaded, or found on disk."),
        (name = "feed", description = "The real-time WebSocket feed."),
        (name = "consoles", description = "A VM's serial and graphical (VNC) consoles, as WebSockets of binary frames."),
        (name = "health", description = "Liveness and readiness, outside the versioned API."),
        (name = "metrics", description = "The Prometheus scrape, outside the versioned API."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

/// A path's operations, each with its method's name.
fn operations(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 8] {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
}

/// The API's own version, not the crate's.
struct Versioned;

impl Modify for Versioned {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.version = API_VERSION.to_string();
    }
}

/// `Authorization: Bearer <jwt>`, named `bearer` in each operation's `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("A token from `POST /api/v1/auth/login`."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every operation can also fail in ways not particular to it: a body too large (413
/// `PAYLOAD_TOO_LARGE`) and a URL too long (414 `URI_TOO_LONG`) are declared on each; `default`
/// covers the rest (bad JSON, a wrong content type, headers too large, the rate limit, an internal
/// error), all in the error envelope. A method a path does not declare answers 405
/// `METHOD_NOT_ALLOWED` with `Allow`.
struct DefaultError;

impl Modify for DefaultError {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let envelope = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build()
        };
        let common = [
            (
                "413",
                envelope("The body is larger than 64 KiB (`PAYLOAD_TOO_LARGE`)."),
            ),
            (
                "414",
                envelope("The URL is longer than 8 KiB (`URI_TOO_LONG`)."),
            ),
            (
                "default",
                envelope(
                    "Any other error, in the error envelope (e.g. `INVALID_JSON`, \
                     `UNSUPPORTED_MEDIA_TYPE`, `RATE_LIMITED`, `INTERNAL_ERROR`, 408 \
                     `REQUEST_TIMEOUT` for a body that stops arriving, or 431 \
                     `HEADERS_TOO_LARGE` for a request head over 128 KiB). A method this path \
                     does not declare answers 405 `METHOD_NOT_ALLOWED` with an `Allow` header.",
                ),
            ),
        ];
        let forbidden = envelope(
            "The caller's role lacks the permission in `x-permission` (`FORBIDDEN`; \
             `error.details` names it).",
        );
        let limited = envelope(
            "More requests than the caller's budget a minute (`RATE_LIMITED`); `Retry-After` says \
             when to try again. Every answer carries `X-RateLimit-Limit`, \
             `X-RateLimit-Remaining` and `X-RateLimit-Reset`.",
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let counted = path.starts_with("/api/v1/") || path == "/ws";
            for operation in operations(item)
                .into_iter()
                .filter_map(|(_, op)| op.as_mut())
            {
                for (status, response) in &common {
                    operation
                        .responses
                        .responses
                        .insert((*status).into(), response.clone().into());
                }
                let guarded = operation
                    .extensions
                    .as_ref()
                    .is_some_and(|e| e.contains_key("x-permission"));
                if guarded {
                    operation
                        .responses
                        .responses
                        .entry("403".into())
                        .or_insert_with(|| forbidden.clone().into());
                }
                if counted {
                    operation
                        .responses
                        .responses
                        .insert("429".into(), limited.clone().into());
                }
            }
        }
    }
}

/// An array schema that also takes `null`: for an optional array field of a request, which the
/// server reads `null` as absent (serde's `Option`), as utoipa marks its other optional fields.
pub fn or_null(array: utoipa::openapi::schema::ArrayBuilder) -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    array
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

/// The document as pretty JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        // Serialising plain data structures cannot fail; an empty document would be caught by
        // the test that compares it with `schemas/openapi.json`.
        ApiDoc::openapi().to_pretty_json().unwrap_or_default()
    })
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document.", content_type = "application/json"))
)]
pub async fn json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// `GET /api/v1/docs`: the reference page.
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "meta",
    responses((status = 200, description = "A browsable reference of this document.", content_type = "text/html"))
)]
pub async fn page() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let html = PAGE.get_or_init(|| Scalar::new(ApiDoc::openapi()).to_html());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html.as_str())
}
