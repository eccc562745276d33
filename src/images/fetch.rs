//! Downloads an image over HTTP(S) into a [`Sink`], streaming (never the whole image in memory),
//! with progress, a bound on the size and on how long the server may send nothing. Unless
//! `images.allow_private`, the server must be on a public address: URLs naming a private one are
//! refused, host names are resolved by `outbound::PublicOnly`, and redirects are followed only
//! to public addresses (a literal address in a redirect never reaches the resolver).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::watch;

use super::install::Sink;
use super::ImageError;
use crate::config::ImageSettings;
use crate::outbound::{is_private, literal_address, PublicOnly};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// How far a download has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    /// What the server announced (`Content-Length`), if it did.
    pub total: Option<u64>,
}

/// The HTTP client imports download with.
pub struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
    /// A proxy named in the environment resolves host names itself: they are checked here first.
    proxied: bool,
    max_bytes: u64,
    stall: Duration,
}

impl Fetcher {
    pub fn new(settings: &ImageSettings) -> anyhow::Result<Fetcher> {
        let allow_private = settings.allow_private;
        let proxied = crate::outbound::proxied();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match literal_address(attempt.url().as_str()) {
                Some(ip) if !allow_private && is_private(ip) => {
                    return attempt.error(format!("a redirect to {ip}, a private address"));
                }
                _ => {}
            }
            if !allow_private && proxied {
                if let Err(e) = crate::outbound::private_target_blocking(attempt.url()) {
                    return attempt.error(format!("a redirect refused: {e}"));
                }
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .redirect(policy)
            .user_agent(concat!("VoidVM-Images/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Fetcher {
            client: builder
                .build()
                .context("the image download client could not be built")?,
            allow_private,
            proxied,
            max_bytes: settings.max_bytes,
            stall: Duration::from_secs(settings.stall_timeout_secs.max(1)),
        })
    }

    /// Whether `url` names a private address this server may not download from.
    pub fn refuses(&self, url: &str) -> Option<std::net::IpAddr> {
        literal_address(url).filter(|ip| !self.allow_private && is_private(*ip))
    }

    /// Downloads `url` into `sink`, publishing progress on `progress` as bytes arrive.
    pub async fn fetch(
        &self,
        url: &str,
        sink: &mut Sink,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), ImageError> {
        if let Some(ip) = self.refuses(url) {
            return Err(ImageError::Private(ip));
        }
        if !self.allow_private && self.proxied {
            crate::outbound::private_target(url).await?;
        }
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| ImageError::Download(crate::telemetry::chain(&e)))?;
        if !response.status().is_success() {
            return Err(ImageError::Status(response.status().as_u16()));
        }
        let total = response.content_length();
        if total.is_some_and(|t| t > self.max_bytes) {
            return Err(ImageError::TooLarge {
                max: self.max_bytes,
            });
        }
        progress.send_replace(Progress { done: 0, total });
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.stall, body.next())
                .await
                .map_err(|_| ImageError::Stalled(self.stall.as_secs()))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| {
                ImageError::Download(format!(
                    "the connection broke after {} bytes ({})",
                    sink.done(),
                    crate::telemetry::chain(&e)
                ))
            })?;
            sink.write(&chunk).await?;
            progress.send_replace(Progress {
                done: sink.done(),
                total,
            });
        }
        match total {
            Some(total) if sink.done() != total => Err(ImageError::Truncated {
                done: sink.done(),
                total,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn through_a_proxy_a_name_resolving_to_a_private_address_is_refused_before_any_request() {
        let mut fetcher = Fetcher::new(&ImageSettings::default()).unwrap();
        fetcher.proxied = true;
        let path = std::env::temp_dir().join(format!("voidvm-fetch-{}", uuid::Uuid::new_v4()));
        let mut sink = Sink::create(path.clone(), 1024).await.unwrap();
        let (progress, _) = watch::channel(Progress::default());
        assert!(matches!(
            fetcher
                .fetch("http://localhost:9/disk.qcow2", &mut sink, &progress)
                .await,
            Err(ImageError::Private(ip)) if ip.is_loopback()
        ));
        assert!(matches!(
            fetcher
                .fetch("http://voidvm-no-such-host.invalid/disk.qcow2", &mut sink, &progress)
                .await,
            Err(ImageError::Download(m)) if m.contains("does not resolve on this server")
        ));
        assert_eq!(sink.done(), 0);
        std::fs::remove_file(path).unwrap();
    }
}
