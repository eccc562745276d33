//! Liveness and readiness, outside the versioned API.

use super::answers::errors::Unavailable;
use super::answers::{Envelope, Health, Readiness};
use actix_web::{web, HttpResponse};

use super::envelope;
use super::error::ApiError;
use crate::app::AppState;

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "The process is up.", body = Envelope<Health>)
    )
)]
pub async fn health() -> HttpResponse {
    envelope::ok(
        Health {
            status: "ok".into(),
        },
        "VoidVM is up.",
    )
}

/// Ready when the database answers (start-up reconciliation finishes before the server binds) and
/// the NATS stream carries this database's event log (see `bus::ownership`).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "The database answers and the NATS stream carries this log.", body = Envelope<Readiness>),
        Unavailable
    )
)]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    if let Some(conflict) = state.stream_owner.conflict() {
        return Err(ApiError::NotRelaying(conflict.to_string()));
    }
    Ok(envelope::ok(
        Readiness {
            status: "ready".into(),
            database: "ok".into(),
            accel: state.hypervisor.accel(),
        },
        "VoidVM is ready.",
    ))
}
