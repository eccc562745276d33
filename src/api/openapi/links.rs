//! Links: which answer carries the id another operation takes.
//!
//! OpenAPI `links` say, for instance, that the `id` in `POST /vms`'s answer is the `{id}` of
//! `GET /vms/{id}` and of every lifecycle verb, and that a lifecycle verb's `jobId` is the `{id}`
//! of `GET /jobs/{id}`. Clients generated from the document and stateful API fuzzers follow them:
//! without, a fuzzer only ever asks about ids it made up, and never reaches a real VM's lifecycle.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

/// An answer that carries an id, and the operations under a path that take it.
struct Source {
    /// The operation whose answer carries the id; `None` for every operation whose `status`
    /// answer is `schema` (the lifecycle verbs' `Accepted`).
    operation: Option<(&'static str, &'static str)>,
    status: &'static str,
    schema: &'static str,
    /// Where the id is in the answer's body (a JSON pointer).
    pointer: &'static str,
    /// The operations taking it: this path and those below it.
    under: &'static str,
    /// The path parameter that takes it.
    parameter: &'static str,
}

const fn from(
    operation: Option<(&'static str, &'static str)>,
    status: &'static str,
    schema: &'static str,
    pointer: &'static str,
    under: &'static str,
    parameter: &'static str,
) -> Source {
    Source {
        operation,
        status,
        schema,
        pointer,
        under,
        parameter,
    }
}

const SOURCES: &[Source] = &[
    from(
        Some(("post", "/api/v1/vms")),
        "201",
        "",
        "/data/id",
        "/api/v1/vms/{id}",
        "id",
    ),
    from(
        Some(("post", "/api/v1/vms")),
        "201",
        "",
        "/data/jobId",
        "/api/v1/jobs/{id}",
        "id",
    ),
    from(
        None,
        "202",
        "Envelope_Accepted",
        "/data/jobId",
        "/api/v1/jobs/{id}",
        "id",
    ),
    from(
        None,
        "202",
        "Envelope_Accepted",
        "/data/vmId",
        "/api/v1/vms/{id}",
        "id",
    ),
    from(
        Some(("post", "/api/v1/images")),
        "202",
        "",
        "/data/name",
        "/api/v1/images/{name}",
        "name",
    ),
    from(
        Some(("post", "/api/v1/images")),
        "202",
        "",
        "/data/job/id",
        "/api/v1/jobs/{id}",
        "id",
    ),
    from(
        Some(("post", "/api/v1/webhooks")),
        "201",
        "",
        "/data/id",
        "/api/v1/webhooks/{id}",
        "id",
    ),
    from(
        Some(("post", "/api/v1/users")),
        "201",
        "",
        "/data/id",
        "/api/v1/users/{id}",
        "id",
    ),
    from(
        Some(("post", "/api/v1/roles")),
        "201",
        "",
        "/data/id",
        "/api/v1/roles/{id}",
        "id",
    ),
];

/// Adds the links of [`SOURCES`] to `doc`'s answers. A source or target that is not in the
/// document adds nothing (a test checks that each adds something).
pub fn add(doc: &mut OpenApi) {
    let operations = operation_ids(doc);
    for source in SOURCES {
        let targets: Vec<&(String, String)> = operations
            .iter()
            .filter(|(path, _)| {
                path == source.under || path.starts_with(&format!("{}/", source.under))
            })
            .collect();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in methods(item) {
                let Some(operation) = operation else { continue };
                let chosen = match source.operation {
                    Some(wanted) => wanted == (method, path.as_str()),
                    None => answers_with(operation, source.status, source.schema),
                };
                if !chosen {
                    continue;
                }
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut(source.status)
                else {
                    continue;
                };
                for (_, id) in &targets {
                    let link = LinkBuilder::new()
                        .operation_id(id.as_str())
                        .parameter(
                            source.parameter,
                            format!("$response.body#{}", source.pointer),
                        )
                        .build();
                    let name = format!("{id}.{}", source.pointer.rsplit('/').next().unwrap_or(""));
                    response.links.insert(name, RefOr::T(link));
                }
            }
        }
    }
}

/// Each operation's path and id.
fn operation_ids(doc: &mut OpenApi) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (_, operation) in methods(item) {
            if let Some(id) = operation.as_ref().and_then(|o| o.operation_id.clone()) {
                found.push((path.clone(), id));
            }
        }
    }
    found
}

fn methods(item: &mut utoipa::openapi::PathItem) -> [(&'static str, &mut Option<Operation>); 5] {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
}

/// Whether `operation`'s `status` answer is the component `schema`.
fn answers_with(operation: &Operation, status: &str, schema: &str) -> bool {
    let Some(RefOr::T(response)) = operation.responses.responses.get(status) else {
        return false;
    };
    let wanted = format!("#/components/schemas/{schema}");
    response.content.values().any(|content| match content {
        RefOr::T(c) => matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == wanted),
        RefOr::Ref(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    fn document() -> serde_json::Value {
        let mut doc = super::super::ApiDoc::openapi();
        add(&mut doc);
        serde_json::to_value(&doc).expect("JSON")
    }

    /// Every link of the document: (method, path, status, link).
    fn links(doc: &serde_json::Value) -> Vec<(String, String, String, serde_json::Value)> {
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("an item") {
                for (status, answer) in op["responses"].as_object().into_iter().flatten() {
                    for link in answer["links"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|l| l.1)
                    {
                        found.push((method.clone(), path.clone(), status.clone(), link.clone()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn each_source_links_its_answer_to_the_operations_under_its_path() {
        let doc = document();
        let all = links(&doc);
        for source in SOURCES {
            let expression = format!("$response.body#{}", source.pointer);
            let made: Vec<_> = all
                .iter()
                .filter(|(method, path, status, link)| {
                    status == source.status
                        && link["parameters"][source.parameter] == expression.as_str()
                        && source
                            .operation
                            .is_none_or(|(m, p)| m == method && p == path)
                })
                .collect();
            assert!(
                !made.is_empty(),
                "{} of {:?} links nothing",
                source.pointer,
                source.operation
            );
        }
    }

    #[test]
    fn every_link_names_an_operation_that_takes_the_parameter_it_sets() {
        let doc = document();
        let mut takes = std::collections::HashMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for op in item.as_object().expect("an item").values() {
                if let Some(id) = op["operationId"].as_str() {
                    takes.insert(id.to_string(), path.clone());
                }
            }
        }
        let all = links(&doc);
        assert!(all.len() > 50, "only {} links", all.len());
        for (method, path, _, link) in all {
            let target = link["operationId"].as_str().expect("an operationId");
            let target_path = takes
                .get(target)
                .unwrap_or_else(|| panic!("{method} {path} links to unknown {target}"));
            for parameter in link["parameters"].as_object().expect("parameters").keys() {
                assert!(
                    target_path.contains(&format!("{{{parameter}}}")),
                    "{method} {path} sets {parameter}, which {target_path} does not take"
                );
            }
        }
    }
}
