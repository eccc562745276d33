//! The JSON envelope every answer travels in: `{success, data, message, timestamp}` on success,
//! `{success, error: {code, message, details}, timestamp}` on failure (see `shared/API.md`).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A success envelope.
pub fn success<T: Serialize>(status: StatusCode, data: T, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "success": true,
        "data": data,
        "message": message,
        "timestamp": timestamp(),
    }))
}

pub fn ok<T: Serialize>(data: T, message: &str) -> HttpResponse {
    success(StatusCode::OK, data, message)
}

/// A success envelope with extra top-level fields (the login answer carries `token` there too).
pub fn success_with(status: StatusCode, data: Value, message: &str, extra: Value) -> HttpResponse {
    let mut body = json!({
        "success": true,
        "data": data,
        "message": message,
        "timestamp": timestamp(),
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    HttpResponse::build(status).json(body)
}

/// An error envelope body.
pub fn error_body(code: &str, message: &str, details: &str, field: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message, "details": details });
    if let (Some(field), Some(obj)) = (field, error.as_object_mut()) {
        obj.insert("field".into(), Value::String(field.to_string()));
    }
    json!({ "success": false, "error": error, "timestamp": timestamp() })
}

/// The pagination block of list answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: i64,
    pub total_pages: i64,
}

impl Pagination {
    pub fn new(page: u32, limit: u32, total: i64) -> Self {
        let limit_i = i64::from(limit.max(1));
        Pagination {
            page,
            limit,
            total,
            total_pages: (total + limit_i - 1) / limit_i,
        }
    }
}
