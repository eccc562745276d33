//! Reading request bodies and query strings so that every failure is an envelope naming the
//! field: actix's own JSON and query errors are replaced, and typed parsing goes through
//! `serde_path_to_error` to know which field was wrong.

use std::future::Future;
use std::pin::Pin;

use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// Bodies are small JSON documents.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
                JsonPayloadError::Deserialize(e) => ApiError::BadJson(e.to_string()),
                JsonPayloadError::Payload(e) if super::body_deadline::timed_out(e) => {
                    ApiError::RequestTimeout(e.to_string())
                }
                _ => ApiError::BadJson(err.to_string()),
            };
            api.into()
        })
}

/// Raw bodies (`web::Bytes`, as `POST /vms/{id}/stop` reads) have the same limit as JSON ones.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

/// What a request that takes no body may carry: nothing, or an empty JSON object (`{}`, which
/// some clients send by default). Anything else is refused, naming what was sent: a field meant
/// for another request (`restart` with `{"force": true}`, which only `stop` reads) is not
/// silently ignored, and a NUL or malformed JSON is not accepted by a route that reads nothing.
pub struct NoBody;

impl FromRequest for NoBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<NoBody, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| payload_error(&e))?;
            no_body(&bytes)
        })
    }
}

/// A raw body's read error as the API's.
fn payload_error(e: &actix_web::Error) -> ApiError {
    match e.as_error::<PayloadError>() {
        Some(p) if super::body_deadline::timed_out(p) => ApiError::RequestTimeout(p.to_string()),
        Some(PayloadError::Overflow) => ApiError::PayloadTooLarge,
        _ if e.as_response_error().status_code()
            == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge
        }
        _ => ApiError::BadJson(e.to_string()),
    }
}

fn no_body(bytes: &[u8]) -> Result<NoBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(NoBody);
    }
    let value: Value =
        super::strict_json::from_slice(bytes).map_err(|e| ApiError::BadJson(e.to_string()))?;
    match value {
        Value::Object(map) => match map.keys().next() {
            None => Ok(NoBody),
            Some(key) => {
                super::input::check_text("body", key)?;
                Err(ApiError::validation(
                    key,
                    format!("This request takes no body: '{key}' is not a field of it."),
                ))
            }
        },
        _ => Err(ApiError::validation(
            "body",
            "This request takes no body: send none, or {}.",
        )),
    }
}

/// Parses a query string as `T`; a value that does not fit is a validation error naming its key
/// (`page=-1` names `page`), which actix's own query extractor cannot say.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = match path.as_str() {
            "" | "." => field_from_message(&message).unwrap_or_else(|| "query".to_string()),
            _ => path,
        };
        ApiError::validation(&field, message)
    })
}

/// Parses the query string as `T` (see [`parse_query`]), for a handler that must check
/// something (a permission) before the query is read.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    parse_query(req.query_string())
}

/// The query string as `T`, with the errors of [`parse_query`]: the extractor handlers take
/// instead of `web::Query`.
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Query<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

/// Parses the query string as `T`, reading each of `lists` (OpenAPI `style: form` lists) sent
/// either way: `type=A,B` as documented, or its key repeated, `type=A&type=B` (what most HTTP
/// clients send for a list), which is joined into the first form.
pub fn query_with_lists<T: DeserializeOwned>(
    req: &HttpRequest,
    lists: &[&str],
) -> Result<T, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        let earlier = lists
            .contains(&key.as_ref())
            .then(|| pairs.iter_mut().find(|(k, _)| *k == key))
            .flatten();
        match earlier {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => pairs.push((key.into_owned(), value.into_owned())),
        }
    }
    let joined = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    parse_query(&joined)
}

/// Reads an optional JSON body: empty or `null` means `T::default()`. Used by commands whose body may be
/// left out (`POST /vms/{id}/stop`).
pub fn optional<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    bytes: &web::Bytes,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let is_json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: Value =
        super::strict_json::from_slice(bytes).map_err(|e| ApiError::BadJson(e.to_string()))?;
    // `null` is the document's other way of sending nothing (`oneOf [T, null]`).
    if value.is_null() {
        return Ok(T::default());
    }
    typed(value)
}

/// Turns a JSON value into `T`, naming the field that does not fit (or that holds text the
/// database cannot store).
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::validation(
            "body",
            "The body must be a JSON object.",
        ));
    }
    super::input::check_json(&value)?;
    serde_path_to_error::deserialize(whole_numbers(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." {
            field_from_message(&inner).unwrap_or_else(|| "body".to_string())
        } else {
            path
        };
        ApiError::validation(&field, inner)
    })
}

/// JSON Schema counts `5.0` as an integer, so the document's integers accept it: whole numbers
/// written with a fraction become integers before the typed read (`"cpu": 2.0` is 2; `2.5` still
/// fails, naming its field).
fn whole_numbers(value: Value) -> Value {
    /// 2^64: the first whole number past `u64`.
    const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..PAST_U64).contains(&f) => Value::from(f as u64),
            Some(f) if f.fract() == 0.0 && (i64::MIN as f64..0.0).contains(&f) => {
                Value::from(f as i64)
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| (key, whole_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// serde names missing and unknown fields in backticks: "missing field `cpu`".
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_written_with_a_fraction_are_integers() {
        let got = whole_numbers(serde_json::json!({"cpu": 2.0, "n": [-3.0, 2.5], "t": "4.0"}));
        assert_eq!(
            got,
            serde_json::json!({"cpu": 2, "n": [-3, 2.5], "t": "4.0"})
        );
        assert!(got["cpu"].is_u64());
        assert_eq!(
            whole_numbers(serde_json::json!(1e300)),
            serde_json::json!(1e300)
        );
    }

    #[test]
    fn a_request_without_a_body_takes_nothing_or_an_empty_object() {
        for fine in [&b""[..], b"  \n", b"{}", b" { } "] {
            assert!(no_body(fine).is_ok(), "{:?}", String::from_utf8_lossy(fine));
        }
        let field = |bytes: &[u8]| match no_body(bytes) {
            Err(ApiError::Validation { field, .. }) => field,
            Err(other) => format!("{other:?}"),
            Ok(_) => "accepted".into(),
        };
        assert_eq!(field(br#"{"force": true}"#), "force");
        assert_eq!(field(b"[]"), "body");
        assert_eq!(field(b"null"), "body");
        assert_eq!(field(br#"{"a\u0000": 1}"#), "body");
        assert!(matches!(no_body(b"garbage"), Err(ApiError::BadJson(_))));
        assert!(matches!(no_body(&[0xff, 0xfe]), Err(ApiError::BadJson(_))));
    }
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        cpu: u32,
        name: String,
    }

    fn field_of(v: Value) -> String {
        match typed::<Body>(v) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        assert_eq!(
            field_of(serde_json::json!({"cpu": "two", "name": "x"})),
            "cpu"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(field_of(serde_json::json!({"cpu": 2})), "name");
    }

    #[test]
    fn an_unknown_field_is_named() {
        assert_eq!(
            field_of(serde_json::json!({"cpu": 2, "name": "x", "cpus": 3})),
            "cpus"
        );
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Filter {
        #[serde(rename = "type")]
        types: Option<String>,
        actor: Option<String>,
    }

    fn filter(query: &str) -> Result<Filter, ApiError> {
        let req = actix_web::test::TestRequest::with_uri(&format!("/x?{query}")).to_http_request();
        query_with_lists(&req, &["type"])
    }

    #[test]
    fn a_list_reads_the_same_comma_separated_or_with_its_key_repeated() {
        let joined = filter("type=A,B&actor=ann%20lee").expect("read");
        assert_eq!(joined.types.as_deref(), Some("A,B"));
        assert_eq!(joined.actor.as_deref(), Some("ann lee"));
        assert_eq!(filter("type=A&actor=ann+lee&type=B").expect("read"), joined);
    }

    #[test]
    fn only_the_lists_may_repeat_and_other_errors_still_name_the_field() {
        assert!(matches!(
            filter("actor=a&actor=b"),
            Err(ApiError::Validation { field, .. }) if field == "actor"
        ));
        assert!(matches!(
            filter("typo=A"),
            Err(ApiError::Validation { field, .. }) if field == "typo"
        ));
    }
}
