//! The headers every answer carries, declared in the document where they are sent, so that a
//! client (or a fuzzer checking answers against the document) can rely on them: `X-Request-Id`
//! and `X-API-Version` on every answer; `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` on every answer of a path that counts against a caller's budget
//! (`super::super::rate_limit`); `Retry-After` on its 429. An operation that takes an
//! `Idempotency-Key` also declares `Idempotent-Replayed` (optional) on its 2xx answers and 422
//! `IDEMPOTENCY_KEY_REUSED` ([`KeyReused`]), which every such operation may answer.
//!
//! Two answers are left without the budget's headers: a `414`, which the connection's head
//! guard may write before the request is read at all, and `default`, which also stands for the
//! guard's other answers (431, 408 for a head that stops arriving, 400 for a malformed head).
//! Each header is a component; utoipa's `Header` has no `required` field, so it is written as the
//! specification's own keyword through the header's flattened extensions.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::Header;
use utoipa::openapi::{ObjectBuilder, OpenApi, RefOr, Type};
use utoipa::Modify;

use utoipa::IntoResponses;

use super::operations;
use crate::api::answers::errors::KeyReused;
use crate::api::retry::IDEMPOTENCY_KEY;

pub const REQUEST_ID: &str = "X-Request-Id";
pub const API_VERSION: &str = "X-API-Version";
pub const LIMIT: &str = "X-RateLimit-Limit";
pub const REMAINING: &str = "X-RateLimit-Remaining";
pub const RESET: &str = "X-RateLimit-Reset";
pub const RETRY_AFTER: &str = "Retry-After";
/// On the answer to a retry (`super::super::retry`); not required: a first answer lacks it.
pub const REPLAYED: &str = "Idempotent-Replayed";

/// The document's [`Modify`] that declares the headers.
pub struct Headers;

fn header(description: &str, schema: ObjectBuilder) -> Header {
    let mut header = Header::new(schema.build());
    header.description = Some(description.to_string());
    header.extensions = Some(Extensions::from_iter([("required", true)]));
    header
}

fn replayed() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::Boolean).build());
    header.description = Some(
        "`true` when this is the first answer to an earlier request with the same \
         `Idempotency-Key`, given again."
            .to_string(),
    );
    header
}

/// Whether `operation` takes an `Idempotency-Key`.
fn keyed(operation: &utoipa::openapi::path::Operation) -> bool {
    operation.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => {
            p.name.eq_ignore_ascii_case(IDEMPOTENCY_KEY.as_str())
                && p.parameter_in == utoipa::openapi::path::ParameterIn::Header
        }
        RefOr::Ref(_) => false,
    })
}

fn integer(minimum: i32) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
}

fn declared() -> [(&'static str, Header); 6] {
    [
        (
            REQUEST_ID,
            header(
                "The request's id: the client's own `X-Request-Id` when it is a sensible token \
                 (up to 128 letters, digits, `-`, `_`, `.`, `:`), otherwise one made here. Log \
                 lines and the events a request records carry it.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1)),
            ),
        ),
        (
            API_VERSION,
            header(
                "The version of the API this server speaks (also in `GET /system/info`).",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]+\.[0-9]+\.[0-9]+$")),
            ),
        ),
        (
            LIMIT,
            header("Requests the caller may make in a minute.", integer(1)),
        ),
        (
            REMAINING,
            header(
                "Requests the caller may still make in the current minute.",
                integer(0),
            ),
        ),
        (
            RESET,
            header(
                "Seconds until the caller's budget is full again.",
                integer(0),
            ),
        ),
        (
            RETRY_AFTER,
            header(
                "Seconds to wait before the next request can pass.",
                integer(0),
            ),
        ),
    ]
}

fn reference(name: &str) -> RefOr<Header> {
    RefOr::Ref(utoipa::openapi::Ref::new(format!(
        "#/components/headers/{name}"
    )))
}

/// The headers the `status` answer of an operation under `path` carries.
pub fn carried(path: &str, status: &str) -> Vec<&'static str> {
    let mut names = vec![REQUEST_ID, API_VERSION];
    if crate::api::rate_limit::counted(path) && status != "414" && status != "default" {
        names.extend([LIMIT, REMAINING, RESET]);
        if status == "429" {
            names.push(RETRY_AFTER);
        }
    }
    names
}

impl Modify for Headers {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, header) in declared() {
            components
                .headers
                .insert(name.to_string(), RefOr::T(header));
        }
        components
            .headers
            .insert(REPLAYED.to_string(), RefOr::T(replayed()));
        let reused = KeyReused::responses();
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item)
                .into_iter()
                .filter_map(|(_, op)| op.as_mut())
            {
                let keyed = keyed(operation);
                if keyed {
                    for (status, answer) in &reused {
                        operation
                            .responses
                            .responses
                            .entry(status.clone())
                            .or_insert_with(|| answer.clone());
                    }
                }
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if keyed && status.starts_with('2') {
                        response
                            .headers
                            .insert(REPLAYED.to_string(), reference(REPLAYED));
                    }
                    for name in carried(path, status) {
                        response
                            .headers
                            .entry(name.to_string())
                            .or_insert_with(|| reference(name));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_headers_are_declared_where_the_budget_is_counted() {
        assert_eq!(
            carried("/api/v1/vms", "200"),
            [REQUEST_ID, API_VERSION, LIMIT, REMAINING, RESET]
        );
        assert_eq!(
            carried("/api/v1/vms", "429"),
            [
                REQUEST_ID,
                API_VERSION,
                LIMIT,
                REMAINING,
                RESET,
                RETRY_AFTER
            ]
        );
        assert_eq!(carried("/api/v1/vms", "414"), [REQUEST_ID, API_VERSION]);
        assert_eq!(carried("/api/v1/vms", "default"), [REQUEST_ID, API_VERSION]);
        assert_eq!(carried("/metrics", "200"), [REQUEST_ID, API_VERSION]);
        assert_eq!(carried("/ws", "101"), carried("/api/v1/vms", "200"));
    }

    #[test]
    fn every_operation_taking_an_idempotency_key_says_how_a_retry_is_answered() {
        let doc: serde_json::Value =
            serde_json::from_str(super::super::document()).expect("the document");
        let (mut keyed, mut mutating) = (0, 0);
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("an item") {
                if ["post", "put", "patch", "delete"].contains(&method.as_str())
                    && !path.starts_with("/api/v1/auth/")
                {
                    mutating += 1;
                }
                let takes_key = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
                if !takes_key {
                    continue;
                }
                keyed += 1;
                let answers = op["responses"].as_object().expect("responses");
                assert!(answers.contains_key("422"), "{method} {path}");
                for (status, answer) in answers.iter().filter(|(s, _)| s.starts_with('2')) {
                    assert_eq!(
                        answer["headers"][REPLAYED]["$ref"],
                        format!("#/components/headers/{REPLAYED}"),
                        "{method} {path} {status}"
                    );
                }
            }
        }
        // The API's rule: every POST, PUT, PATCH and DELETE but logging in and out and changing
        // one's password.
        assert_eq!(keyed, mutating);
        assert!(doc["components"]["headers"][REPLAYED]["required"].is_null());
    }

    #[test]
    fn each_header_is_required_in_the_written_document() {
        let doc: serde_json::Value =
            serde_json::from_str(super::super::document()).expect("the document");
        for (name, _) in declared() {
            assert_eq!(
                doc["components"]["headers"][name]["required"],
                serde_json::Value::Bool(true),
                "{name}"
            );
        }
    }
}
