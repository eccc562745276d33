//! Safe retries over REST. A command sent with an `Idempotency-Key` is answered, when retried by
//! the same user with the same key and the same request (method, path and body) within 24 hours,
//! with its first answer and `Idempotent-Replayed: true`; the same key with another request is
//! refused (422 `IDEMPOTENCY_KEY_REUSED`). A command sent with `If-Match` applies only to the
//! versions of the VM it names (412 `PRECONDITION_FAILED` otherwise). Both are checked by the
//! VM's actor in the same decision as the command, and the key's record commits in the command's
//! transaction (see `store::conditions`).

use actix_web::http::header::{HeaderName, IF_MATCH};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::answers::Envelope;
use super::envelope;
use super::error::ApiError;
use crate::actors::ActorError;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::store::conditions::{Answer, Conditions, IfMatch, KeyedRequest, StoredAnswer, Viewer};
use crate::store::{idempotency, CommandMeta, StoreError};
use crate::vm::VmCommand;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `Idempotency-Key`, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyHeader {
    /// Makes the request safe to retry: the same user sending the same key with the same method,
    /// path and body within 24 hours gets the first answer again (with `Idempotent-Replayed:
    /// true`); the same key with another request gets 422 `IDEMPOTENCY_KEY_REUSED`. 1 to 255
    /// printable ASCII characters, e.g. a UUID.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )]
    pub idempotency_key: Option<String>,
}

/// `If-Match`, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// Apply only if the VM is still at one of these versions: one or more ETags of
    /// `GET /vms/{id}` (e.g. `"7"`), or `*`. Otherwise 412 `PRECONDITION_FAILED` and nothing
    /// changes.
    #[param(
        rename = "If-Match",
        nullable = false,
        pattern = r#"^[ ,]*(\*|(W/)?"[!#-+\--~]*"([ ,]*,[ ,]*(W/)?"[!#-+\--~]*")*)[ ,]*$"#
    )]
    pub if_match: Option<String>,
}

/// The longest key accepted.
const KEY_MAX: usize = 255;

/// A command's retry headers, read and checked.
#[derive(Debug, Clone)]
pub struct Retry {
    key: Option<KeyedRequest>,
    if_match: Option<IfMatch>,
    quota: Option<crate::accounts::Quota>,
    viewer: Option<Viewer>,
    secrets: Option<crate::vm::CloudInitSecrets>,
}

impl Retry {
    /// Reads `Idempotency-Key` and `If-Match`; `body` is the request body as hashed (the raw
    /// bytes, or the parsed JSON written out again).
    pub fn read(req: &HttpRequest, user: &AuthUser, body: &[u8]) -> Result<Retry, ApiError> {
        let key = read_key(req)?.map(|key| KeyedRequest {
            user_id: user.id.clone(),
            key,
            // The query too: it is part of what a command says (`?transferTo=`, an upload's kind).
            request_hash: request_hash(
                req.method(),
                req.uri()
                    .path_and_query()
                    .map_or(req.path(), |pq| pq.as_str()),
                body,
            ),
        });
        Ok(Retry {
            key,
            if_match: read_if_match(req)?,
            quota: None,
            viewer: None,
            secrets: None,
        })
    }

    /// The key the request was sent with, if any.
    pub fn key(&self) -> Option<&KeyedRequest> {
        self.key.as_ref()
    }

    /// `error`, unless a request with the same key was answered meanwhile (a concurrent twin that
    /// won the race): then that answer.
    pub async fn or_earlier(
        &self,
        state: &AppState,
        error: ApiError,
    ) -> Result<HttpResponse, ApiError> {
        if self.key.is_some() {
            if let Some(response) = self.earlier(state).await? {
                return Ok(response);
            }
        }
        Err(error)
    }

    /// The response carrying `answer` (first given, not replayed).
    pub fn respond(answer: &StoredAnswer) -> Result<HttpResponse, ApiError> {
        send(answer, false)
    }

    /// The same, with the owner's default quota to hold the command to (see `store::quota`).
    pub fn within(self, quota: Option<crate::accounts::Quota>) -> Retry {
        Retry { quota, ..self }
    }

    /// The same, for a command on an existing VM that must be `user`'s to act on (checked by the
    /// VM's actor: a VM that does not exist, is deleted or is another's is `VM_NOT_FOUND`).
    pub fn seen_by(self, user: &AuthUser) -> Retry {
        Retry {
            viewer: Some(user.viewer()),
            ..self
        }
    }

    /// The same, without `If-Match` (for a command that makes a new VM).
    /// These conditions carrying cloud-init secrets, written outside the log in the command's
    /// transaction.
    pub fn with_secrets(self, secrets: Option<crate::vm::CloudInitSecrets>) -> Retry {
        Retry { secrets, ..self }
    }

    pub fn without_if_match(self) -> Retry {
        Retry {
            if_match: None,
            ..self
        }
    }

    /// [`Retry::read`] for a JSON body.
    pub fn read_json(
        req: &HttpRequest,
        user: &AuthUser,
        body: &serde_json::Value,
    ) -> Result<Retry, ApiError> {
        let bytes = serde_json::to_vec(body)
            .context("a request body could not be written out to hash it")?;
        Retry::read(req, user, &bytes)
    }

    /// The answer to an earlier request with this key, given again; 422 when that request was
    /// another one. `None` when the key is new (or there is none).
    pub async fn earlier(&self, state: &AppState) -> Result<Option<HttpResponse>, ApiError> {
        let Some(keyed) = &self.key else {
            return Ok(None);
        };
        match idempotency::find(&state.pool, &keyed.user_id, &keyed.key).await? {
            None => Ok(None),
            Some(recorded) if recorded.request_hash == keyed.request_hash => {
                Ok(Some(send(&recorded.answer, true)?))
            }
            Some(_) => Err(ApiError::IdempotencyKeyReused),
        }
    }

    /// These conditions for a command whose answer `answer` builds in its transaction.
    pub fn conditions(&self, answer: Answer) -> Conditions {
        Conditions {
            if_match: self.if_match.clone(),
            key: self.key.clone(),
            answer: Some(answer),
            quota: self.quota,
            viewer: self.viewer.clone(),
            secrets: self.secrets.clone(),
        }
    }

    /// Sends `command` with these conditions to the VM's actor and answers with what `answer`
    /// built in its transaction. A key another request took meanwhile is answered as a retry.
    /// What the actor refused is returned for the handler to map.
    pub async fn execute(
        &self,
        state: &AppState,
        vm_id: &str,
        command: VmCommand,
        meta: CommandMeta,
        answer: Answer,
    ) -> Result<Result<HttpResponse, ActorError>, ApiError> {
        let committed = state
            .registry
            .execute_with(vm_id, command, meta, self.conditions(answer))
            .await;
        self.answered(state, committed.map(|c| c.answer)).await
    }

    /// The response to a command sent with [`Retry::conditions`]: the answer recorded in its
    /// transaction, or (when another request took the key meanwhile) the recorded one.
    pub async fn answered(
        &self,
        state: &AppState,
        recorded: Result<Option<StoredAnswer>, ActorError>,
    ) -> Result<Result<HttpResponse, ActorError>, ApiError> {
        match recorded {
            Ok(answer) => {
                let answer = answer.context("a command answered without recording anything")?;
                Ok(Ok(send(&answer, false)?))
            }
            Err(ActorError::Store(StoreError::KeyTaken)) => match self.earlier(state).await? {
                Some(response) => Ok(Ok(response)),
                None => Err(ApiError::IdempotencyKeyReused),
            },
            Err(e) => Ok(Err(e)),
        }
    }
}

impl Retry {
    /// A command that is not a VM's (users, roles, the configuration, webhooks, images) in one
    /// transaction with its `Idempotency-Key`: the key is taken first, `work` records the command
    /// and builds the answer inside the same transaction, the answer is stored with the key, and
    /// all of it commits together. A refused command (an error from `work`) rolls everything
    /// back, the key included, so a retry is decided again. A key a concurrent request took is
    /// answered with that request's answer.
    pub async fn transaction<W>(&self, state: &AppState, work: W) -> Result<HttpResponse, ApiError>
    where
        W: AsyncFnOnce(&mut sqlx::PgConnection) -> Result<StoredAnswer, ApiError>,
    {
        if let Some(response) = self.earlier(state).await? {
            return Ok(response);
        }
        let mut tx = crate::store::begin(&state.pool).await?;
        if let Some(keyed) = &self.key {
            match idempotency::take(&mut tx, keyed).await {
                Ok(()) => {}
                Err(StoreError::KeyTaken) => {
                    drop(tx);
                    return self
                        .earlier(state)
                        .await?
                        .ok_or(ApiError::IdempotencyKeyReused);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let answer = work(&mut tx).await?;
        if let Some(keyed) = &self.key {
            idempotency::answer(&mut tx, keyed, &answer).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        send(&answer, false)
    }
}

/// A success envelope as a stored answer.
pub fn envelope_answer<T: Serialize>(
    status: StatusCode,
    data: T,
    message: &str,
) -> Result<StoredAnswer, StoreError> {
    let body = serde_json::to_value(Envelope {
        success: true,
        data,
        message: message.to_string(),
        timestamp: envelope::timestamp(),
    })
    .context("an answer could not be written out")?;
    Ok(StoredAnswer {
        status: status.as_u16(),
        body,
    })
}

/// The `ETag` of a VM at `version` (strong: the version of its stream).
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn send(answer: &StoredAnswer, replayed: bool) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(answer.status).context("a stored status is not one")?;
    let mut response = HttpResponse::build(status);
    if replayed {
        response.insert_header((REPLAYED, "true"));
    }
    if status == StatusCode::NO_CONTENT {
        return Ok(response.finish());
    }
    Ok(response.json(&answer.body))
}

fn read_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let invalid = |why: &str| ApiError::validation("Idempotency-Key", why);
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("Send the Idempotency-Key header once."));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > KEY_MAX || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(invalid(
            "An Idempotency-Key is 1 to 255 printable ASCII characters.",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn read_if_match(req: &HttpRequest) -> Result<Option<IfMatch>, ApiError> {
    let mut found = false;
    let mut tags = 0;
    let mut versions = Vec::new();
    for value in req.headers().get_all(IF_MATCH) {
        found = true;
        let text = value.to_str().map_err(|_| invalid_if_match())?;
        // Empty list elements are ignored (RFC 9110, 5.6.1.2); a field with no tag at all is
        // refused below, as the document's pattern says.
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            tags += 1;
            if tag == "*" {
                return Ok(Some(IfMatch::Any));
            }
            // A weak tag never matches in If-Match (RFC 9110, strong comparison).
            let weak = tag.strip_prefix("W/");
            let quoted = weak.unwrap_or(tag);
            let inner = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or_else(invalid_if_match)?;
            if weak.is_none() {
                if let Ok(version) = inner.parse::<usize>() {
                    versions.push(version);
                }
            }
        }
    }
    if found && tags == 0 {
        return Err(invalid_if_match());
    }
    Ok(found.then_some(IfMatch::Versions(versions)))
}

fn invalid_if_match() -> ApiError {
    ApiError::validation(
        "If-Match",
        "If-Match is `*` or a list of entity tags such as \"3\" (the ETag of GET /vms/{id}).",
    )
}

fn request_hash(method: &Method, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn if_match(value: &str) -> Result<Option<IfMatch>, ApiError> {
        read_if_match(
            &TestRequest::default()
                .insert_header((IF_MATCH, value))
                .to_http_request(),
        )
    }

    #[test]
    fn if_match_reads_lists_stars_and_ignores_weak_tags() {
        assert_eq!(if_match("*").ok().flatten(), Some(IfMatch::Any));
        assert_eq!(
            if_match("\"3\", W/\"4\", \"5\"").ok().flatten(),
            Some(IfMatch::Versions(vec![3, 5]))
        );
        assert!(if_match("3").is_err());
    }

    #[test]
    fn if_match_ignores_empty_list_elements_but_needs_a_tag() {
        assert_eq!(
            if_match("\"3\", , \"5\",").ok().flatten(),
            Some(IfMatch::Versions(vec![3, 5]))
        );
        assert!(if_match("").is_err());
        assert!(if_match(" , ,").is_err());
    }

    /// The `pattern` the document declares for `name` in `params`.
    fn declared_pattern(params: Vec<utoipa::openapi::path::Parameter>, name: &str) -> String {
        let param = params
            .into_iter()
            .find(|p| p.name == name)
            .expect("the header is declared");
        let schema = serde_json::to_value(param.schema).expect("a schema");
        schema["pattern"].as_str().expect("a pattern").to_string()
    }

    fn matches(pattern: &str, value: &str) -> bool {
        jsonschema::is_valid(
            &serde_json::json!({"type": "string", "pattern": pattern}),
            &serde_json::json!(value),
        )
    }

    #[test]
    fn what_the_document_declares_for_the_headers_is_what_the_server_reads() {
        use utoipa::IntoParams;
        let if_match_pattern = declared_pattern(IfMatchHeader::into_params(|| None), "If-Match");
        for value in [
            "*",
            "\"3\"",
            " \"3\" , W/\"4\",\"x-y\"",
            "W/\"\"",
            "3",
            "\"3",
            "\"a\"b\"",
            "W/3",
            "\"3\" \"4\"",
            "\"3\", , \"5\",",
            ", *",
            "",
            " , ",
        ] {
            if matches(&if_match_pattern, value) {
                assert!(
                    if_match(value).is_ok(),
                    "declared valid but refused: {value}"
                );
            } else {
                assert!(
                    if_match(value).is_err(),
                    "refused by the document but read: {value}"
                );
            }
        }
        let key_pattern = declared_pattern(KeyHeader::into_params(|| None), "Idempotency-Key");
        // As bytes: a client may send any octet but a control character but tab.
        let read = |v: &str| {
            let value = actix_web::http::header::HeaderValue::from_bytes(v.as_bytes())
                .expect("a header value");
            read_key(
                &TestRequest::default()
                    .insert_header((IDEMPOTENCY_KEY, value))
                    .to_http_request(),
            )
        };
        for value in ["a", "a b", "k-1_2.3", "!~", "é", "a\tb"] {
            assert_eq!(
                matches(&key_pattern, value),
                read(value).is_ok(),
                "the document and the server disagree on {value:?}"
            );
        }
    }

    #[test]
    fn a_key_must_be_printable_ascii_of_at_most_255() {
        let read = |v: &str| {
            read_key(
                &TestRequest::default()
                    .insert_header((IDEMPOTENCY_KEY, v))
                    .to_http_request(),
            )
        };
        assert_eq!(read("abc-1").ok().flatten().as_deref(), Some("abc-1"));
        assert!(read(&"k".repeat(256)).is_err());
        assert!(read("a\tb").is_err());
    }

    #[test]
    fn the_hash_covers_method_path_and_body() {
        let base = request_hash(&Method::POST, "/a", b"{}");
        assert_ne!(base, request_hash(&Method::PATCH, "/a", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/b", b"{}"));
        assert_ne!(base, request_hash(&Method::POST, "/a", b"{\"x\":1}"));
        assert_eq!(base, request_hash(&Method::POST, "/a", b"{}"));
    }
}
