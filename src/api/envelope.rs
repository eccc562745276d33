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
            details: shown(details).into_owned(),
            field: field.map(|f| shown(f).into_owned()),
        },
        timestamp: timestamp(),
    }
}

/// `text` as an error may show it: a NUL, which a refused request may carry into a field name
/// or a message, is written `\u0000`, so that no answer holds the one character the document's
/// strings refuse (`^[^\u0000]*$`) and a client's own checks never fail on an error.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_never_shows_a_nul_it_was_sent() {
        let body = error_body("VALIDATION_ERROR", "m", "a\0b: bad", Some("a\0b"));
        assert_eq!(body.error.details, "a\\u0000b: bad");
        assert_eq!(body.error.field.as_deref(), Some("a\\u0000b"));
        assert!(matches!(
            shown("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }
}
