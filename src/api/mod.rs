//! The HTTP API: routes, and the answers for paths and methods it does not know.

pub mod answers;
pub mod audit;
pub mod auth;
pub mod body;
pub mod envelope;
pub mod error;
pub mod health;
pub mod jobs;
pub mod openapi;
pub mod request_id;
pub mod retry;
pub mod vm_input;
pub mod vms;

use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, HttpRequest, HttpResponse};

use error::ApiError;

/// The API version in the `X-API-Version` header and `/system/info`.
pub const API_VERSION: &str = "1.0.0";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/ws", web::get().to(crate::ws::connect))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi::json))
                .route("/docs", web::get().to(openapi::page))
                .route("/auth/login", web::post().to(auth::login))
                .route("/auth/me", web::get().to(auth::me))
                .route("/auth/logout", web::post().to(auth::logout))
                .route("/auth/password", web::post().to(auth::change_password))
                .service(
                    web::resource("/vms")
                        .route(web::get().to(vms::list))
                        .route(web::post().to(vms::create)),
                )
                .service(
                    web::resource("/vms/{id}")
                        .route(web::get().to(vms::get))
                        .route(web::patch().to(vms::patch))
                        .route(web::delete().to(vms::delete)),
                )
                .route("/vms/{id}/start", web::post().to(vms::start))
                .route("/vms/{id}/stop", web::post().to(vms::stop))
                .route("/vms/{id}/restart", web::post().to(vms::restart))
                .route("/vms/{id}/pause", web::post().to(vms::pause))
                .route("/vms/{id}/resume", web::post().to(vms::resume))
                .route("/vms/{id}/reset", web::post().to(vms::reset))
                .route("/vms/{id}/events", web::get().to(vms::events))
                .route("/vms/{id}/history", web::get().to(vms::history))
                .route("/events", web::get().to(audit::events))
                .route("/logs", web::get().to(audit::logs))
                .route("/jobs", web::get().to(jobs::list))
                .route("/jobs/{id}", web::get().to(jobs::get))
                .route("/jobs/{id}/wait", web::get().to(jobs::wait))
                .route("/jobs/{id}/cancel", web::post().to(jobs::cancel)),
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

/// Rewrites actix's own bare 405 answers into the envelope.
pub fn method_not_allowed<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let method = res.request().method().to_string();
    let (req, _) = res.into_parts();
    let api = ApiError::MethodNotAllowed(method);
    let mut response: HttpResponse = actix_web::ResponseError::error_response(&api);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res = ServiceResponse::new(req, response).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
