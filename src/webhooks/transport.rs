//! The one effect of webhooks: an HTTP POST to a receiver. Behind a trait so the dispatcher's
//! decisions (what counts as delivered, what is retried) are tested without a network.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::target::{is_private, TargetUrl};
use crate::outbound::{PrivateAddress, PublicOnly, Unreachable};

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
    #[error("{0} is a private address, and webhooks.allow_private is off")]
    Private(std::net::IpAddr),
}

/// What the check before a proxied request found.
impl From<Unreachable> for TransportError {
    fn from(e: Unreachable) -> Self {
        match e {
            Unreachable::Private(PrivateAddress(ip)) => TransportError::Private(ip),
            Unreachable::Unresolved(_) => TransportError::Connect(e.to_string()),
        }
    }
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `request`, answering the receiver's HTTP status.
    async fn post(&self, request: Request) -> Result<u16, TransportError>;
}

/// The real transport: reqwest, with a whole-request timeout and no redirects (a receiver that
/// moved must be changed with `PATCH /webhooks/{id}`; following one would send the signed body
/// somewhere no one chose).
///
/// Unless `allow_private`, it refuses receivers on private addresses: URLs naming one, and host
/// names that resolve to one (checked by its own resolver, on the addresses it then connects to,
/// so a name cannot resolve to a public address for a check and a private one for the request).
/// Through a proxy named in the environment, which resolves names itself, the receiver's host
/// is resolved and checked here first ([`crate::outbound::private_target`]).
pub struct HttpTransport {
    client: reqwest::Client,
    timeout: Duration,
    allow_private: bool,
    proxied: bool,
}

impl HttpTransport {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<HttpTransport> {
        use anyhow::Context;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("VoidVM-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder
            .build()
            .context("the webhook HTTP client could not be built")?;
        Ok(HttpTransport {
            client,
            timeout,
            allow_private,
            proxied: crate::outbound::proxied(),
        })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(&self, request: Request) -> Result<u16, TransportError> {
        if !self.allow_private {
            let literal = TargetUrl::parse(&request.url)
                .ok()
                .and_then(|u| u.literal_address());
            if let Some(ip) = literal.filter(|ip| is_private(*ip)) {
                return Err(TransportError::Private(ip));
            }
            if self.proxied {
                crate::outbound::private_target(&request.url).await?;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_naming_a_private_address_is_refused_before_any_request() {
        let transport = HttpTransport::new(Duration::from_millis(200), false).unwrap();
        let request = Request {
            url: "http://127.0.0.1:9/hook".into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            transport.post(request).await,
            Err(TransportError::Private("127.0.0.1".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn through_a_proxy_a_name_resolving_to_a_private_address_is_refused_before_any_request() {
        let mut transport = HttpTransport::new(Duration::from_millis(200), false).unwrap();
        transport.proxied = true;
        let request = |url: &str| Request {
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            transport.post(request("http://localhost:9/hook")).await,
            Err(TransportError::Private("127.0.0.1".parse().unwrap()))
        );
        assert!(matches!(
            transport
                .post(request("http://voidvm-no-such-host.invalid/hook"))
                .await,
            Err(TransportError::Connect(m)) if m.contains("does not resolve on this server")
        ));
    }
}
