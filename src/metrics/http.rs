//! The middleware that counts every HTTP request for `/metrics`: by the route pattern it matched
//! (`/api/v1/vms/{id}`, never the path itself, so ids do not multiply the series; `unmatched` when
//! no route matched), its method (the standard ones, else `other`) and the status answered, with
//! the time until the response head.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use super::HttpLabels;
use crate::app::AppState;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_string());
    let method = method_label(req.method()).to_string();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let result = next.call(req).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    if let Some(state) = state {
        state.metrics.observe_request(
            HttpLabels {
                route,
                method,
                status: status.as_u16(),
            },
            started.elapsed().as_secs_f64(),
        );
    }
    result
}

/// The method as a label: a client may send any token as its method, so only the standard ones
/// are kept apart.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
