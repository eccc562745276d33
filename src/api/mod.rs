//! The HTTP API: routes, and the answers for paths and methods it does not know (404, and 405
//! with `Allow`), and for errors actix answers by itself.

pub mod answers;
pub mod audit;
pub mod auth;
pub mod body;
pub mod body_deadline;
pub mod cloud_init_input;
pub mod config;
pub mod config_update;
pub mod envelope;
pub mod error;
pub mod head_guard;
pub mod health;
pub mod images;
pub mod input;
pub mod jobs;
pub mod metrics;
pub mod network_input;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod request_span;
pub mod retry;
pub mod roles;
pub mod send_deadline;
pub mod server;
pub mod strict_json;
pub mod system;
pub mod user_input;
pub mod users;
pub mod vm_input;
pub mod vms;
pub mod webhooks;

use actix_web::dev::ServiceResponse;
use actix_web::http::header::{ALLOW, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, HttpRequest, HttpResponse};

use error::ApiError;

/// The API version in the `X-API-Version` header and `/system/info`.
pub const API_VERSION: &str = "1.0.0";

/// A path and the handler for each method it accepts. Any other method answers 405
/// `METHOD_NOT_ALLOWED` with an `Allow` header naming these (a path that is not here is a 404).
macro_rules! resource {
    ($path:expr, $($method:ident => $handler:expr),+ $(,)?) => {
        web::resource($path)
            $(.route(route!($method).to($handler)))+
            .default_service(web::to(|req: HttpRequest| async move {
                not_allowed(&req, &[$(stringify!($method)),+])
            }))
    };
}

/// The route of a method; `GET`'s also answers `HEAD` (RFC 9110 §9.3.2: the same answer, which
/// actix sends without its body), so monitors that probe with `HEAD` get what `GET` gets.
macro_rules! route {
    (GET) => {
        web::route()
            .guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
    };
    ($method:ident) => {
        web::method(Method::$method)
    };
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource!("/health", GET => health::health))
        .service(resource!("/ready", GET => health::ready))
        .service(resource!("/metrics", GET => metrics::metrics))
        .service(resource!("/ws", GET => crate::ws::connect))
        .service(
            web::scope("/api/v1")
                .service(resource!("/openapi.json", GET => openapi::json))
                .service(resource!("/docs", GET => openapi::page))
                .service(resource!("/auth/login", POST => auth::login))
                .service(resource!("/auth/me", GET => auth::me))
                .service(resource!("/auth/logout", POST => auth::logout))
                .service(resource!("/auth/password", POST => auth::change_password))
                .service(resource!("/vms", GET => vms::list, POST => vms::create))
                .service(resource!(
                    "/vms/{id}",
                    GET => vms::get,
                    PATCH => vms::patch,
                    DELETE => vms::delete,
                ))
                .service(resource!("/vms/{id}/start", POST => vms::start))
                .service(resource!("/vms/{id}/stop", POST => vms::stop))
                .service(resource!("/vms/{id}/restart", POST => vms::restart))
                .service(resource!("/vms/{id}/pause", POST => vms::pause))
                .service(resource!("/vms/{id}/resume", POST => vms::resume))
                .service(resource!("/vms/{id}/reset", POST => vms::reset))
                .service(resource!(
                    "/vms/{id}/iso",
                    POST => vms::attach_iso,
                    DELETE => vms::detach_iso,
                ))
                .service(resource!("/vms/{id}/console", GET => vms::serial_console))
                .service(resource!("/vms/{id}/vnc", GET => vms::vnc_console))
                .service(resource!(
                    "/vms/{id}/snapshots",
                    GET => vms::list_snapshots,
                    POST => vms::take_snapshot,
                ))
                .service(resource!(
                    "/vms/{id}/snapshots/{name}/restore",
                    POST => vms::restore_snapshot,
                ))
                .service(resource!(
                    "/vms/{id}/snapshots/{name}",
                    DELETE => vms::delete_snapshot,
                ))
                .service(resource!("/vms/{id}/events", GET => vms::events))
                .service(resource!("/vms/{id}/history", GET => vms::history))
                .service(resource!("/events", GET => audit::events))
                .service(resource!("/logs", GET => audit::logs))
                .service(resource!("/jobs", GET => jobs::list))
                .service(resource!("/jobs/{id}", GET => jobs::get))
                .service(resource!("/jobs/{id}/wait", GET => jobs::wait))
                .service(resource!("/jobs/{id}/cancel", POST => jobs::cancel))
                .service(resource!("/users", GET => users::list, POST => users::create))
                .service(resource!(
                    "/users/{id}",
                    GET => users::get,
                    PUT => users::update,
                    DELETE => users::delete,
                ))
                .service(resource!("/permissions", GET => roles::permissions))
                .service(resource!("/roles", GET => roles::list, POST => roles::create))
                .service(resource!("/roles/{id}", PUT => roles::update, DELETE => roles::delete))
                .service(resource!("/config", GET => config::get, PUT => config::put))
                .service(resource!("/system/info", GET => system::info))
                .service(resource!("/system/stats", GET => system::stats))
                .service(resource!("/webhooks", GET => webhooks::list, POST => webhooks::create))
                .service(resource!(
                    "/webhooks/{id}",
                    GET => webhooks::get,
                    PATCH => webhooks::update,
                    DELETE => webhooks::delete,
                ))
                .service(resource!("/webhooks/{id}/deliveries", GET => webhooks::deliveries))
                .service(resource!(
                    "/webhooks/{id}/deliveries/{deliveryId}/redeliver",
                    POST => webhooks::redeliver,
                ))
                .service(resource!("/images", GET => images::list, POST => images::create))
                .service(resource!(
                    "/images/{name}",
                    GET => images::get,
                    DELETE => images::delete,
                ))
                .service(resource!("/images/{name}/upload", PUT => images::upload)),
        )
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}

fn not_allowed(req: &HttpRequest, allow: &[&str]) -> Result<HttpResponse, ApiError> {
    let mut methods: Vec<&str> = allow.to_vec();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow: methods.join(", "),
    })
}

/// Puts the errors actix answers by itself (a body its extractors refuse, a payload error) into
/// the envelope; answers that already are JSON pass untouched.
pub fn bare_errors<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let allow = res
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let method = res.request().method().to_string();
    let path = res.request().path().to_string();
    let api = match status {
        StatusCode::NOT_FOUND => ApiError::RouteNotFound(format!("{method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed { method, allow },
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::REQUEST_TIMEOUT => {
            ApiError::RequestTimeout("The request body did not arrive in time.".into())
        }
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong(input::MAX_URI_BYTES),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable,
        s if s.is_server_error() => {
            ApiError::Unexpected(anyhow::anyhow!("actix answered {s} on its own"))
        }
        _ => ApiError::validation("request", "The request could not be read."),
    };
    let (req, _) = res.into_parts();
    let response: HttpResponse = actix_web::ResponseError::error_response(&api);
    let res = ServiceResponse::new(req, response).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
