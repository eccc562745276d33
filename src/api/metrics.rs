//! `GET /metrics`: the Prometheus scrape, outside the versioned API like `/health`. It needs no
//! token: scrapers rarely carry one, and it shows counts and timings, never ids, names or
//! contents (routes are patterns such as `/api/v1/vms/{id}`). Keep it off untrusted networks as
//! you would `/health`.

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

use super::error::ApiError;
use crate::app::AppState;
use crate::metrics::scrape::Figures;

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "The metrics in the Prometheus text format (0.0.4); the README lists the series.", content_type = "text/plain")
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let figures = Figures::read(&state).await;
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String does not fail.
    state
        .metrics
        .encode(&mut out)
        .and_then(|()| figures.encode(&mut out))
        .map_err(|e| {
            ApiError::Unexpected(anyhow::Error::new(e).context("rendering the metrics"))
        })?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(out))
}
