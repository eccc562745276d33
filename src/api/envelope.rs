//! The JSON envelope every answer travels in: `{success, data, message, timestamp}` on success,
//! `{success, error: {code, message, details}, timestamp}` on failure (see `shared/API.md`).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use super::answers::{Envelope, ErrorBody, ErrorEnvelope};

/// The message of a change that found the resource already as asked: the answer is a 200 with
/// the resource as it is, and nothing is recorded.
pub const NOTHING_TO_CHANGE: &str = "Nothing to change.";

pub fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A success envelope.
pub fn success<T: Serialize>(status: StatusCode, data: T, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(Envelope {
        success: true,
        data,
        message: message.to_string(),
        timestamp: timestamp(),
    })
}

pub fn ok<T: Serialize>(data: T, message: &str) -> HttpResponse {
    success(StatusCode::OK, data, message)
}

/// An error envelope body.
pub fn error_body(code: &str, message: &str, details: &str, field: Option<&str>) -> ErrorEnvelope {
    ErrorEnvelope {
        success: false,
        error: ErrorBody {
            code: code.to_string(),
            message: message.to_string(),
            details: details.to_string(),
            field: field.map(str::to_string),
        },
        timestamp: timestamp(),
    }
}
