//! Links: which answer carries the id another operation takes.
//!
//! OpenAPI `links` say, for instance, that the `id` in `POST /vms`'s answer is the `{id}` of
//! `GET /vms/{id}` and of every lifecycle verb, and that a lifecycle verb's `jobId` is the `{id}`
//! of `GET /jobs/{id}`. Clients generated from the document and stateful API fuzzers follow them:
//! without, a fuzzer only ever asks about ids it made up, and never reaches a real VM's lifecycle.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

/// The answers that carry an id.
#[derive(Clone, Copy)]
enum Answers {
    /// One operation's (method, path) answer with this status.
    Of(&'static str, &'static str, &'static str),
    /// Every operation's answer with this status whose body is this component (the verbs'
    /// `Accepted`).
    Being(&'static str, &'static str),
}

/// Where an id is in some answers, and the operations under a path that take it.
struct Source {
    answers: Answers,
    /// Where the id is in the answer's body (a JSON pointer).
    pointer: &'static str,
    /// The operations taking it: this path and those below it; its last segment names the
    /// parameter (`{id}`).
    under: &'static str,
}

const fn link(answers: Answers, pointer: &'static str, under: &'static str) -> Source {
    Source {
        answers,
        pointer,
        under,
    }
}

const CREATED_VM: Answers = Answers::Of("post", "/api/v1/vms", "201");
const ACCEPTED: Answers = Answers::Being("202", "Envelope_Accepted");
const IMPORT: Answers = Answers::Of("post", "/api/v1/images", "202");

const SOURCES: &[Source] = &[
    link(CREATED_VM, "/data/id", "/api/v1/vms/{id}"),
    link(CREATED_VM, "/data/jobId", "/api/v1/jobs/{id}"),
    link(ACCEPTED, "/data/vmId", "/api/v1/vms/{id}"),
    link(ACCEPTED, "/data/jobId", "/api/v1/jobs/{id}"),
    link(IMPORT, "/data/name", "/api/v1/images/{name}"),
    link(IMPORT, "/data/job/id", "/api/v1/jobs/{id}"),
    link(
        Answers::Of("post", "/api/v1/webhooks", "201"),
        "/data/id",
        "/api/v1/webhooks/{id}",
    ),
    link(
        Answers::Of("post", "/api/v1/users", "201"),
        "/data/id",
        "/api/v1/users/{id}",
    ),
    link(
        Answers::Of("post", "/api/v1/roles", "201"),
        "/data/id",
        "/api/v1/roles/{id}",
    ),
];

impl Source {
    /// The path parameter taking the id.
    fn parameter(&self) -> &'static str {
        let last = self.under.rsplit('/').next().unwrap_or(self.under);
        last.trim_start_matches('{').trim_end_matches('}')
    }

    /// The status of the answers carrying the id.
    fn status(&self) -> &'static str {
        match self.answers {
            Answers::Of(_, _, status) | Answers::Being(status, _) => status,
        }
    }

    fn carries(&self, method: &str, path: &str, operation: &Operation) -> bool {
        match self.answers {
            Answers::Of(m, p, _) => m == method && p == path,
            Answers::Being(status, schema) => answers_with(operation, status, schema),
        }
    }
}

/// The document's [`Modify`](utoipa::Modify) that runs [`add`].
pub struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, doc: &mut OpenApi) {
        add(doc);
    }
}

/// Adds the links of [`SOURCES`] to `doc`'s answers. A source or target that is not in the
/// document adds nothing (a test checks that each adds something).
pub fn add(doc: &mut OpenApi) {
    let operations = operation_ids(doc);
    for source in SOURCES {
        let targets: Vec<&String> = operations
            .iter()
            .filter(|(path, _)| {
                path == source.under || path.starts_with(&format!("{}/", source.under))
            })
            .map(|(_, id)| id)
            .collect();
        let value = format!("$response.body#{}", source.pointer);
        let field = source.pointer.rsplit('/').next().unwrap_or("");
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in super::operations(item) {
                let Some(operation) = operation else { continue };
                if !source.carries(method, path, operation) {
                    continue;
                }
                let answer = operation.responses.responses.get_mut(source.status());
                let Some(RefOr::T(response)) = answer else {
                    continue;
                };
                for id in &targets {
                    let link = LinkBuilder::new()
                        .operation_id(id.as_str())
                        .parameter(source.parameter(), value.clone())
                        .build();
                    response
                        .links
                        .insert(format!("{id}.{field}"), RefOr::T(link));
                }
            }
        }
    }
}

/// Each operation's path and id.
fn operation_ids(doc: &mut OpenApi) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (_, operation) in super::operations(item) {
            if let Some(id) = operation.as_ref().and_then(|o| o.operation_id.clone()) {
                found.push((path.clone(), id));
            }
        }
    }
    found
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
        serde_json::to_value(super::super::ApiDoc::openapi()).expect("JSON")
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
                    status == source.status()
                        && link["parameters"][source.parameter()] == expression.as_str()
                        && match source.answers {
                            Answers::Of(m, p, _) => m == method && p == path,
                            Answers::Being(..) => true,
                        }
                })
                .collect();
            assert!(
                !made.is_empty(),
                "{} to {} links nothing",
                source.pointer,
                source.under
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
