//! Request rates: every `/api/v1` request and `/ws` upgrade counts against its caller's budget —
//! the user of a valid token, or the client address without one — per minute, as the user's own
//! rate, else their role's, else the configured default (`PUT /config` changes it live). Every
//! answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
//! until the budget is full again); past it, 429 `RATE_LIMITED` with `Retry-After`.
//!
//! The budget is a GCRA bucket (the `governor` crate, MIT): a full minute's requests may come at
//! once, and one more is allowed every `60 s / limit` after. Budgets are per node: a shared one
//! would cost a database or NATS round trip on every request (see README, "Rate limits").

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::user::{authenticate, bearer};
use crate::auth::AuthUser;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Checks between sweeps of idle keys.
const SWEEP_EVERY: u64 = 10_000;

/// One request's place in its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is full again.
    pub reset: u64,
    /// `Some(seconds)` when the request is refused.
    pub retry_after: Option<u64>,
}

/// The budgets of this node, one bucket per key, one limiter per rate in use.
#[derive(Default)]
pub struct RequestLimiter {
    by_rate: Mutex<HashMap<u32, Arc<Keyed>>>,
    checks: AtomicU64,
}

fn ceil_secs(nanos: u128) -> u64 {
    u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

impl RequestLimiter {
    fn limiter(&self, per_minute: NonZeroU32) -> Arc<Keyed> {
        let mut by_rate = self.by_rate.lock().unwrap_or_else(|p| p.into_inner());
        by_rate
            .entry(per_minute.get())
            .or_insert_with(|| {
                Arc::new(
                    RateLimiter::keyed(Quota::per_minute(per_minute))
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }

    /// Counts one request of `key` against `per_minute`.
    pub fn check(&self, key: &str, per_minute: u32) -> Decision {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let limit = rate.get();
        let limiter = self.limiter(rate);
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let all: Vec<Arc<Keyed>> = self
                .by_rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            for limiter in all {
                limiter.retain_recent();
            }
        }
        let per_cell_nanos = 60_000_000_000u128 / u128::from(limit);
        match limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                Decision {
                    limit,
                    remaining,
                    reset: ceil_secs(u128::from(limit - remaining) * per_cell_nanos),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry = ceil_secs(wait.as_nanos()).max(1);
                Decision {
                    limit,
                    remaining: 0,
                    reset: ceil_secs(u128::from(limit) * per_cell_nanos),
                    retry_after: Some(retry),
                }
            }
        }
    }
}

/// The token of a request: the `Authorization` header, or `?token=` on `/ws`.
fn token_of(req: &ServiceRequest) -> Option<String> {
    if let Some(token) = bearer(req.request()) {
        return Some(token.to_string());
    }
    if req.path() != "/ws" {
        return None;
    }
    req.query_string().split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

fn counted(path: &str) -> bool {
    path.starts_with("/api/v1/") || path == "/ws"
}

/// The middleware: authenticates once (the `AuthUser` extractor reuses it), counts, and answers
/// 429 or passes on, adding the headers either way.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some(state) = state.filter(|_| counted(req.path())) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let addr = req.peer_addr().map(|a| a.ip().to_string());
    let user = match token_of(&req) {
        Some(token) => {
            let request_id = super::request_id::of(req.request());
            authenticate(&state, &token, request_id, addr.clone()).await.ok()
        }
        None => None,
    };
    let live = state.live.get();
    let (key, per_minute) = match &user {
        Some(user) => (
            format!("user:{}", user.id),
            user.rate_limit
                .or(user.role.rate_limit)
                .unwrap_or(live.requests_per_minute),
        ),
        None => (
            format!("addr:{}", addr.as_deref().unwrap_or("unknown")),
            live.requests_per_minute,
        ),
    };
    if let Some(user) = user {
        req.extensions_mut().insert::<AuthUser>(user);
    }
    let decision = state.limiter.check(&key, per_minute);
    let mut res = match decision.retry_after {
        Some(retry_after) => {
            let refused = ApiError::RateLimited {
                limit: decision.limit,
                retry_after,
            };
            tracing::debug!(key, limit = decision.limit, "rate limited");
            let (req, _) = req.into_parts();
            ServiceResponse::new(req, refused.error_response()).map_into_right_body()
        }
        None => next.call(req).await?.map_into_left_body(),
    };
    let headers = res.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", u64::from(decision.limit)),
        ("x-ratelimit-remaining", u64::from(decision.remaining)),
        ("x-ratelimit-reset", decision.reset),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_limit_then_refuses_with_a_wait() {
        let limiter = RequestLimiter::default();
        for i in 0..5 {
            let d = limiter.check("user:a", 5);
            assert_eq!((d.limit, d.remaining, d.retry_after), (5, 4 - i, None));
        }
        let refused = limiter.check("user:a", 5);
        assert_eq!(refused.remaining, 0);
        let wait = refused.retry_after.expect("refused");
        assert!((1..=12).contains(&wait), "{wait}");
        // Another key has its own budget.
        assert_eq!(limiter.check("user:b", 5).retry_after, None);
    }

    #[test]
    fn reset_is_the_time_until_the_budget_is_full() {
        let limiter = RequestLimiter::default();
        let first = limiter.check("addr:x", 60);
        assert_eq!(first.remaining, 59);
        assert_eq!(first.reset, 1, "one request a second comes back");
    }
}
