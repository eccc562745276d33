//! Liveness and readiness, outside the versioned API.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::envelope;
use super::error::ApiError;
use crate::startup::AppState;

pub async fn health() -> HttpResponse {
    envelope::ok(json!({ "status": "ok" }), "VoidVM is up.")
}

/// Ready when the database answers (start-up reconciliation finishes before the server binds).
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(envelope::ok(
        json!({ "status": "ready", "database": "ok", "accel": state.hypervisor.accel() }),
        "VoidVM is ready.",
    ))
}
