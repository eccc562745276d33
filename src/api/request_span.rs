//! The span every HTTP request runs in: what tracing-actix-web's default span holds, except that
//! a `token` in the query (WebSocket and console URLs carry `?token=`, as browsers cannot set
//! headers there) is written as `[redacted]`, and the request id is the one the response carries
//! (`X-Request-Id`, recorded by `super::request_id`). Every log line inside a request prints its
//! span's fields, and a bearer token in a log line lets whoever reads the logs act as its user.

use std::borrow::Cow;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use actix_web::Error;
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// The query parameter whose value never reaches a log.
const SECRET_PARAM: &str = "token";

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request.match_pattern();
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = route.as_deref().unwrap_or("default"),
            http.target = %redacted_target(request.uri()),
            http.client_ip = %request.connection_info().realip_remote_addr().unwrap_or(""),
            http.user_agent = user_agent,
            request_id = Empty,
            http.status_code = Empty,
            otel.status_code = Empty,
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The path and query of `uri`, with the value of every `token` parameter replaced.
fn redacted_target(uri: &Uri) -> Cow<'_, str> {
    let Some(pq) = uri.path_and_query() else {
        return Cow::Borrowed("");
    };
    let Some(query) = pq.query() else {
        return Cow::Borrowed(pq.as_str());
    };
    let secret = |pair: &str| pair.split('=').next() == Some(SECRET_PARAM);
    if !query.split('&').any(secret) {
        return Cow::Borrowed(pq.as_str());
    }
    let query: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            if secret(pair) {
                Cow::Owned(format!("{SECRET_PARAM}=[redacted]"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(format!("{}?{}", pq.path(), query.join("&")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    fn target(uri: &str) -> String {
        redacted_target(&uri.parse().unwrap()).into_owned()
    }

    #[test]
    fn a_token_in_the_query_is_redacted_wherever_it_stands() {
        assert_eq!(
            target("/api/v1/ws?token=eyJ.abc.def"),
            "/api/v1/ws?token=[redacted]"
        );
        assert_eq!(
            target("/api/v1/vms/vm-1/console?kind=serial&token=eyJ&x=1"),
            "/api/v1/vms/vm-1/console?kind=serial&token=[redacted]&x=1"
        );
        assert_eq!(target("/a?token="), "/a?token=[redacted]");
    }

    #[test]
    fn other_targets_are_kept_as_they_are() {
        assert_eq!(target("/api/v1/vms?limit=1"), "/api/v1/vms?limit=1");
        assert_eq!(target("/api/v1/vms?tokens=1"), "/api/v1/vms?tokens=1");
        assert_eq!(target("/api/v1/vms"), "/api/v1/vms");
    }

    /// Every field value of every span opened, as text.
    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<Vec<String>>>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if let Ok(mut all) = self.0.lock() {
                all.push(format!("{}={value:?}", field.name()));
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Fields {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: Context<'_, S>,
        ) {
            attrs.record(&mut self.clone());
        }
    }

    #[test]
    fn the_request_span_never_holds_the_token() {
        let fields = Fields::default();
        let subscriber = tracing_subscriber::registry().with(fields.clone());
        let request = actix_web::test::TestRequest::with_uri("/api/v1/ws?token=secret-value")
            .to_srv_request();
        tracing::subscriber::with_default(subscriber, || {
            let _span = RequestSpan::on_request_start(&request);
        });
        let all = fields.0.lock().unwrap().join(" ");
        assert!(
            all.contains("http.target=/api/v1/ws?token=[redacted]"),
            "{all}"
        );
        assert!(!all.contains("secret-value"), "{all}");
    }
}
