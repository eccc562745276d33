//! The one gate every request passes before a handler sees it: what the request line and headers
//! carry (path ids, query values, the body's announced size, the URL's length) is checked here,
//! once, instead of in each handler. Text PostgreSQL cannot store (a NUL character, in `text` or
//! `jsonb`) is refused as a validation error naming the field, so no handler ever sends it to the
//! database; JSON bodies and WebSocket frames get the same check through [`check_json`] and
//! [`check_document`].

use std::borrow::Cow;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde_json::Value;

use super::body::MAX_BODY_BYTES;
use super::error::ApiError;

/// The longest URL (path and query) the API reads. Longer ones are refused with 414 before any
/// routing; no request of the API needs more.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Characters PostgreSQL cannot keep in `text` or `jsonb` (UTF-8 databases refuse only NUL).
fn unstorable(c: char) -> bool {
    c == '\0'
}

/// Refuses `value` for `field` when PostgreSQL could not store it.
pub fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(unstorable) {
        return Err(ApiError::validation(
            field,
            "The value contains a NUL character (\\u0000), which cannot be stored.",
        ));
    }
    Ok(())
}

/// Refuses a JSON body holding a string (or a key) PostgreSQL could not store, naming it by its
/// path (`description`, `items[2].name`); a key of the body itself is named `body`.
pub fn check_json(value: &Value) -> Result<(), ApiError> {
    check_document("body", value)
}

/// [`check_json`] for a document called `root` (`frame` for a WebSocket frame).
pub fn check_document(root: &str, value: &Value) -> Result<(), ApiError> {
    check_at(root, "", value)
}

/// Checks `value`, found at `prefix` in the document called `root`.
fn check_at(root: &str, prefix: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(s) => check_text(field_or(prefix, root), s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_at(root, &format!("{prefix}[{i}]"), item)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            check_text(field_or(prefix, root), key)?;
            check_at(root, &path, item)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn field_or<'a>(path: &'a str, fallback: &'a str) -> &'a str {
    if path.is_empty() {
        fallback
    } else {
        path
    }
}

/// The route's parameters (`{id}`) and the query's values, each checked under its own name.
fn check_request(req: &ServiceRequest) -> Result<(), ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong(MAX_URI_BYTES));
    }
    // An image upload streams its body to disk, bounded by `images.max_bytes` instead.
    let streamed = req.match_pattern().as_deref() == Some(crate::api::images::UPLOAD_PATTERN);
    let too_large = !streamed
        && req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len > MAX_BODY_BYTES as u64);
    if too_large {
        return Err(ApiError::PayloadTooLarge);
    }
    // actix-web would inflate a compressed body whole before its size limit applies: a 62 KB
    // gzip body becomes 64 MB of memory, no token needed. Bodies are small; they come as sent.
    if let Some(coding) = req.headers().get(CONTENT_ENCODING) {
        if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(ApiError::validation(
                "Content-Encoding",
                "Request bodies are read as sent: send them without Content-Encoding.",
            ));
        }
    }
    if let Some(pattern) = req.match_pattern() {
        for (template, raw) in pattern.split('/').zip(req.path().split('/')) {
            if let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                check_text(name, &decode(raw))?;
            }
        }
    }
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_query(key);
        check_text("query", &key)?;
        check_text(&key, &decode_query(value))?;
    }
    Ok(())
}

fn decode(raw: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// A query component: `+` is a space there.
fn decode_query(raw: &str) -> String {
    decode(&raw.replace('+', " ")).into_owned()
}

/// The middleware: a request that fails [`check_request`] is answered at once, in the envelope.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Err(e) = check_request(&req) {
        let response: HttpResponse = e.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(r: Result<(), ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_nul_anywhere_in_a_document_is_named_by_its_path() {
        assert_eq!(
            field(check_json(&json!({"description": "a\u{0}b"}))),
            "description"
        );
        assert_eq!(
            field(check_json(&json!({"data": {"vmId": "\u{0}"}}))),
            "data.vmId"
        );
        assert_eq!(
            field(check_json(&json!({"tags": ["ok", "x\u{0}"]}))),
            "tags[1]"
        );
        assert_eq!(field(check_json(&json!({"a\u{0}": 1}))), "body");
        assert!(check_json(&json!({"name": "fine", "n": [1, null, true]})).is_ok());
    }

    #[test]
    fn percent_encoded_nul_is_decoded_before_the_check() {
        assert_eq!(decode("vm-%00x"), "vm-\u{0}x");
        assert_eq!(decode_query("a+b%2B"), "a b+");
        assert!(check_text("id", &decode("vm-%00")).is_err());
    }
}
