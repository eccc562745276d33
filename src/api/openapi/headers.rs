//! The headers every answer carries, declared in the document where they are sent, so that a
//! client (or a fuzzer checking answers against the document) can rely on them: `X-Request-Id`
//! and `X-API-Version` on every answer; `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` on every answer of a path that counts against a caller's budget
//! (`super::super::rate_limit`); `Retry-After` on its 429.
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

use super::operations;

pub const REQUEST_ID: &str = "X-Request-Id";
pub const API_VERSION: &str = "X-API-Version";
pub const LIMIT: &str = "X-RateLimit-Limit";
pub const REMAINING: &str = "X-RateLimit-Remaining";
pub const RESET: &str = "X-RateLimit-Reset";
pub const RETRY_AFTER: &str = "Retry-After";

/// The document's [`Modify`] that declares the headers.
pub struct Headers;

fn header(description: &str, schema: ObjectBuilder) -> Header {
    let mut header = Header::new(schema.build());
    header.description = Some(description.to_string());
    header.extensions = Some(Extensions::from_iter([("required", true)]));
    header
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
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item)
                .into_iter()
                .filter_map(|(_, op)| op.as_mut())
            {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
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
