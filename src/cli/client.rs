//! The CLI's HTTP client and its one error type.
//!
//! Every command talks to the API through [`Client`], which unwraps the envelope: a success gives
//! `data`, a failure gives a [`CliError`] carrying the envelope's `code`, `message` and `details`.
//! [`CliError::exit_code`] is the single place that decides what exit status a failure gets, so
//! scripts can tell "not logged in" from "no such VM" from "server down".

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// Requests that are not long polls end within this.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What can go wrong in a CLI command; each variant has one exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No token in the flags, the environment or the credentials file.
    #[error("not logged in: run `voidvm login`, or pass --token / set VOIDVM_TOKEN")]
    NotLoggedIn,
    /// The API answered with its error envelope (or a bare error status).
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<String>,
    },
    /// No answer at all: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// A job followed with `--wait` ended without succeeding, or did not end in time.
    #[error("job {id} {outcome}")]
    JobFailed { id: String, outcome: String },
    /// The command line makes no sense beyond what clap checks (e.g. an ambiguous VM name).
    #[error("{0}")]
    Usage(String),
    /// A successful answer that is not what the API documents (a proxy, another server).
    #[error("unexpected answer from the server: {0}")]
    BadAnswer(String),
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("neither XDG_CONFIG_HOME nor HOME is set, so there is nowhere to keep credentials")]
    NoConfigDir,
    /// Whoever read stdout stopped reading (`| head`): the command ends quietly.
    #[error("stdout was closed")]
    StdoutClosed,
    /// Anything else: the credentials file, a malformed answer, the terminal.
    #[error("{0:#}")]
    Unexpected(#[from] anyhow::Error),
}

/// The exit statuses, as `--help` and the README list them.
pub mod exit {
    pub const OK: u8 = 0;
    pub const REFUSED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAUTHORIZED: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const JOB_FAILED: u8 = 6;
    pub const UNAVAILABLE: u8 = 7;
    pub const LOCAL: u8 = 8;
}

impl CliError {
    /// The exit status of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotLoggedIn => exit::UNAUTHORIZED,
            CliError::Api { status, .. } => match *status {
                401 => exit::UNAUTHORIZED,
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                s if s >= 500 => exit::UNAVAILABLE,
                _ => exit::REFUSED,
            },
            CliError::Unreachable { .. } => exit::UNAVAILABLE,
            CliError::JobFailed { .. } => exit::JOB_FAILED,
            CliError::Usage(_) => exit::USAGE,
            CliError::BadAnswer(_) | CliError::NoConfigDir => exit::LOCAL,
            CliError::StdoutClosed => exit::OK,
            CliError::Unexpected(_) => exit::LOCAL,
        }
    }

    /// What goes to stderr: the summary, then the envelope's details on their own line.
    pub fn report(&self) -> String {
        match self {
            CliError::Api {
                details: Some(d), ..
            } if !d.is_empty() => format!("voidvm: {self}\n  {d}"),
            _ => format!("voidvm: {self}"),
        }
    }

    pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> CliError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        CliError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }

    /// An error from an answer's status and body (the envelope, if it is one).
    pub fn from_answer(status: StatusCode, body: &Value) -> CliError {
        let error = &body["error"];
        let text = |k: &str| error.get(k).and_then(Value::as_str).map(str::to_string);
        CliError::Api {
            status: status.as_u16(),
            code: text("code").unwrap_or_else(|| format!("HTTP_{}", status.as_u16())),
            message: text("message").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected answer")
                    .to_string()
            }),
            details: text("details"),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// The API at one base URL, with or without a token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The server's origin, e.g. `http://localhost:3000` (no trailing slash).
    origin: String,
    token: Option<String>,
}

impl Client {
    pub fn new(origin: &str, token: Option<String>) -> CliResult<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("voidvm-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::Error::new(e).context("building the HTTP client"))?;
        Ok(Client {
            http,
            origin: origin_of(origin),
            token,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The token, or [`CliError::NotLoggedIn`].
    pub fn require_token(&self) -> CliResult<&str> {
        self.token.as_deref().ok_or(CliError::NotLoggedIn)
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> CliResult<Value> {
        self.send(Method::GET, path, query, None, DEFAULT_TIMEOUT)
            .await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> CliResult<Value> {
        self.send(Method::POST, path, &[], body, DEFAULT_TIMEOUT)
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> CliResult<Value> {
        self.send(Method::PATCH, path, &[], Some(body), DEFAULT_TIMEOUT)
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> CliResult<Value> {
        self.send(Method::PUT, path, &[], Some(body), DEFAULT_TIMEOUT)
            .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> CliResult<Value> {
        self.send(Method::DELETE, path, query, None, DEFAULT_TIMEOUT)
            .await
    }

    /// A GET that may take up to `wait` on the server (a long poll).
    pub async fn get_long(
        &self,
        path: &str,
        query: &[(&str, String)],
        wait: Duration,
    ) -> CliResult<Value> {
        self.send(Method::GET, path, query, None, wait + DEFAULT_TIMEOUT)
            .await
    }

    /// One request to `/api/v1{path}`; answers the envelope's `data`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        timeout: Duration,
    ) -> CliResult<Value> {
        let mut request = self.request(method, path, query).timeout(timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request).await
    }

    /// A request to `/api/v1{path}?{query}` with the token, if any.
    fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> RequestBuilder {
        let url = format!("{}/api/v1{path}", self.origin);
        let mut request = self.http.request(method, &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Streams the file at `file` as the body of a `PUT` to `/api/v1{path}` (no time limit: an
    /// image may be large); answers the envelope's `data`.
    pub async fn put_file(
        &self,
        path: &str,
        query: &[(&str, String)],
        file: &std::path::Path,
    ) -> CliResult<Value> {
        use anyhow::Context;
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("could not open {}", file.display()))?;
        let size = handle
            .metadata()
            .await
            .with_context(|| format!("could not read the size of {}", file.display()))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(handle));
        let request = self
            .request(Method::PUT, path, query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        self.answer(request).await
    }

    async fn answer(&self, request: RequestBuilder) -> CliResult<Value> {
        let response = request
            .send()
            .await
            .map_err(|e| CliError::unreachable(&self.origin, &e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::unreachable(&self.origin, &e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        unwrap_envelope(status, body)
    }
}

/// The server's origin from what a user typed: `http://h:3000/`, `http://h:3000/api/v1` and
/// `http://h:3000` are all `http://h:3000`.
pub fn origin_of(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/api/v1").unwrap_or(url).to_string()
}

/// `data` of a successful envelope, or the error it (or the status) carries.
pub fn unwrap_envelope(status: StatusCode, mut body: Value) -> CliResult<Value> {
    // A delete that leaves nothing to show (`DELETE /images/{name}`) answers with no body.
    if status == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    if status.is_success() && body["success"] == Value::Bool(true) {
        return Ok(body.get_mut("data").map(Value::take).unwrap_or(Value::Null));
    }
    if status.is_success() {
        return Err(CliError::BadAnswer(format!(
            "not a VoidVM envelope: {body}"
        )));
    }
    Err(CliError::from_answer(status, &body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api {
            status,
            code: "X".into(),
            message: "m".into(),
            details: None,
        }
    }

    #[test]
    fn every_failure_has_its_exit_status() {
        assert_eq!(CliError::NotLoggedIn.exit_code(), 3);
        assert_eq!(api(401).exit_code(), 3);
        assert_eq!(api(404).exit_code(), 4);
        assert_eq!(api(409).exit_code(), 5);
        assert_eq!(api(400).exit_code(), 1);
        assert_eq!(api(403).exit_code(), 1);
        assert_eq!(api(429).exit_code(), 1);
        assert_eq!(api(500).exit_code(), 7);
        assert_eq!(api(503).exit_code(), 7);
        let job = CliError::JobFailed {
            id: "job-1".into(),
            outcome: "failed".into(),
        };
        assert_eq!(job.exit_code(), 6);
        let down = CliError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        };
        assert_eq!(down.exit_code(), 7);
        assert_eq!(CliError::Usage("u".into()).exit_code(), 2);
        assert_eq!(CliError::StdoutClosed.exit_code(), 0);
        assert_eq!(CliError::BadAnswer("x".into()).exit_code(), 8);
        assert_eq!(CliError::NoConfigDir.exit_code(), 8);
        let disk = std::io::Error::other("disk full");
        assert_eq!(
            CliError::from(anyhow::Error::new(disk).context("writing")).exit_code(),
            8
        );
    }

    #[test]
    fn a_url_with_the_api_prefix_is_the_same_server() {
        for url in [
            "http://h:3000",
            "http://h:3000/",
            "http://h:3000/api/v1",
            "http://h:3000/api/v1/",
        ] {
            assert_eq!(origin_of(url), "http://h:3000", "{url}");
        }
    }

    #[test]
    fn the_envelope_is_unwrapped() {
        let ok = json!({"success": true, "data": {"id": "vm-1"}, "message": "", "timestamp": ""});
        assert_eq!(
            unwrap_envelope(StatusCode::OK, ok).unwrap(),
            json!({"id": "vm-1"})
        );
    }

    #[test]
    fn a_204_is_nothing_to_show_and_another_bodiless_success_is_not_an_envelope() {
        assert_eq!(
            unwrap_envelope(StatusCode::NO_CONTENT, Value::Null).unwrap(),
            Value::Null
        );
        assert!(matches!(
            unwrap_envelope(StatusCode::OK, Value::Null),
            Err(CliError::BadAnswer(_))
        ));
    }

    #[test]
    fn an_error_envelope_keeps_code_message_and_details() {
        let body = json!({"success": false, "error": {"code": "VM_NOT_FOUND", "message": "Not found", "details": "Virtual machine with ID 'vm-x' was not found"}});
        let e = unwrap_envelope(StatusCode::NOT_FOUND, body).unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.report(),
            "voidvm: VM_NOT_FOUND: Not found\n  Virtual machine with ID 'vm-x' was not found"
        );
    }

    #[test]
    fn a_bare_error_status_still_maps() {
        let e = unwrap_envelope(StatusCode::BAD_GATEWAY, Value::Null).unwrap_err();
        assert_eq!(e.exit_code(), 7);
        assert!(e.to_string().starts_with("HTTP_502: Bad Gateway"), "{e}");
    }
}
