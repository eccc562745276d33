//! Prometheus metrics, rendered by `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Two kinds of series: those this process counts as things happen ([`Metrics`]: HTTP requests
//! and their latency, by route pattern, method and status; requests refused by the rate limiter),
//! kept in a registry of this application (not a global one, so several servers in one process
//! keep their own counts); and those read at scrape time from the database and the node's own
//! state ([`scrape`]: VMs by status, jobs by kind and status with their durations, the queue, the
//! relay's lag, open WebSockets). The registry is rendered by the handler itself
//! (`api::metrics`); no other listener is opened.

pub mod http;
pub mod scrape;

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the HTTP latency buckets, in seconds (`/jobs/{id}/wait` may take 120 s).
pub const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The labels of the HTTP series: each takes few values (the route is the pattern the request
/// matched, never its path).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What the rate limiter refused: a request over a user's (or address's) rate, or a login while
/// logins are locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    Request,
    Login,
}

impl RateLimitKind {
    pub const ALL: [RateLimitKind; 2] = [RateLimitKind::Request, RateLimitKind::Login];

    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitKind::Request => "request",
            RateLimitKind::Login => "login",
        }
    }
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// The HTTP series, left out of a scrape until the first request was answered: a family with a
/// HELP and a TYPE but no sample is legal, but strict parsers refuse it.
#[derive(Debug)]
struct HttpSeries {
    requests: Family<HttpLabels, Counter>,
    duration: HistogramFamily,
}

impl Collector for HttpSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if !self.requests.is_empty() {
            let metric = encoder.encode_descriptor(
                "voidvm_http_requests",
                "HTTP requests answered, by route pattern, method and status.",
                None,
                self.requests.metric_type(),
            )?;
            self.requests.encode(metric)?;
        }
        if !self.duration.is_empty() {
            let metric = encoder.encode_descriptor(
                "voidvm_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by route pattern, method and status.",
                None,
                self.duration.metric_type(),
            )?;
            self.duration.encode(metric)?;
        }
        Ok(())
    }
}

/// The series this process counts itself.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily,
    rate_limited: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS));
        registry.register_collector(Box::new(HttpSeries {
            requests: http_requests.clone(),
            duration: http_duration.clone(),
        }));
        let rate_limited = Family::<KindLabel, Counter>::default();
        registry.register(
            "voidvm_rate_limited",
            "Requests refused by the rate limiter: kind=request (over the rate) or kind=login (logins locked out)",
            rate_limited.clone(),
        );
        // Both kinds are there from the start, at 0.
        for kind in RateLimitKind::ALL {
            let _ = rate_limited.get_or_create(&KindLabel {
                kind: kind.as_str(),
            });
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            rate_limited,
        }
    }

    /// Counts one answered request and how long it took.
    pub fn observe_request(&self, labels: HttpLabels, seconds: f64) {
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one request refused by the rate limiter (`voidvm_rate_limited_total{kind}`). The
    /// limiter calls this with `state.metrics` each time it refuses.
    pub fn rate_limited(&self, kind: RateLimitKind) {
        self.rate_limited
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Appends these series in the Prometheus text format.
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_their_labels_and_both_rate_limit_kinds_start_at_zero() {
        let metrics = Metrics::new();
        metrics.observe_request(
            HttpLabels {
                route: "/api/v1/vms/{id}".into(),
                method: "GET".into(),
                status: 200,
            },
            0.02,
        );
        metrics.rate_limited(RateLimitKind::Login);
        let mut out = String::new();
        metrics.encode(&mut out).unwrap();
        assert!(
            out.contains(
                r#"voidvm_http_requests_total{route="/api/v1/vms/{id}",method="GET",status="200"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"voidvm_http_request_duration_seconds_bucket{route="/api/v1/vms/{id}",method="GET",status="200",le="0.025"} 1"#), "{out}");
        assert!(
            out.contains(r#"voidvm_rate_limited_total{kind="request"} 0"#),
            "{out}"
        );
        assert!(
            out.contains(r#"voidvm_rate_limited_total{kind="login"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn no_http_family_is_rendered_before_the_first_request() {
        let mut out = String::new();
        Metrics::new().encode(&mut out).unwrap();
        assert!(!out.contains("voidvm_http_"), "{out}");
        assert!(out.contains("voidvm_rate_limited_total"), "{out}");
    }
}
