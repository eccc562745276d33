//! The one effect of webhooks: an HTTP POST to a receiver. Behind a trait so the dispatcher's
//! decisions (what counts as delivered, what is retried) are tested without a network.

use std::time::Duration;

use async_trait::async_trait;

/// One request to a receiver.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("the receiver did not answer within {0} ms")]
    Timeout(u64),
    #[error("the receiver could not be reached: {0}")]
    Connect(String),
    #[error("the request failed: {0}")]
    Other(String),
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `request`, answering the receiver's HTTP status.
    async fn post(&self, request: Request) -> Result<u16, TransportError>;
}

/// The real transport: reqwest, with a whole-request timeout and no redirects (a receiver that
/// moved must be changed with `PATCH /webhooks/{id}`; following one would send the signed body
/// somewhere no one chose).
pub struct HttpTransport {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpTransport {
    pub fn new(timeout: Duration) -> anyhow::Result<HttpTransport> {
        use anyhow::Context;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("VoidVM-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("the webhook HTTP client could not be built")?;
        Ok(HttpTransport { client, timeout })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(&self, request: Request) -> Result<u16, TransportError> {
        let mut builder = self
            .client
            .post(&request.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let response = builder.body(request.body).send().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX))
            } else if e.is_connect() {
                TransportError::Connect(crate::telemetry::chain(&e))
            } else {
                TransportError::Other(crate::telemetry::chain(&e))
            }
        })?;
        Ok(response.status().as_u16())
    }
}
