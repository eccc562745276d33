//! Request rates: every `/api/v1` request and `/ws` upgrade counts against its caller's budget —
//! the user of a valid token, or the client address without one — per minute, as the user's own
//! rate, else their role's, else the configured default (`PUT /config` changes it live). Every
//! answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
//! until the budget is full again); past it, 429 `RATE_LIMITED` with `Retry-After`.
//!
//! The budget is a fixed one-minute window per key: the first request opens it, `limit` requests
//! pass in it, and it resets a minute after it opened (`X-RateLimit-Reset`). That is what "N
//! requests a minute" and a reset time say to a client. The `governor` crate's GCRA buckets were
//! tried first and dropped: a bucket of N refilling at N a minute lets close to 2N through in the
//! first minute, so "the 101st request in a minute" would pass. Budgets are per node: a shared
//! one would cost a database or NATS round trip on every request (README, "Rate limits").

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::user::{authenticate, bearer};
use crate::auth::AuthUser;
use crate::metrics::RateLimitKind;

/// One request's place in its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset: u64,
    /// `Some(seconds)` when the request is refused.
    pub retry_after: Option<u64>,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Independent locks, so concurrent requests of different callers rarely wait on each other.
const SHARDS: usize = 16;
/// Keys a shard holds before it sweeps closed windows.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    count: u32,
}

/// The budgets of this node.
pub struct RequestLimiter {
    shards: Vec<Mutex<HashMap<String, Window>>>,
    sweep_at: usize,
}

impl Default for RequestLimiter {
    fn default() -> Self {
        RequestLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            sweep_at: SWEEP_AT,
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RequestLimiter {
    /// Counts one request of `key` against `limit` a minute.
    pub fn check(&self, key: &str, limit: u32) -> Decision {
        self.check_at(key, limit.max(1), Instant::now())
    }

    fn check_at(&self, key: &str, limit: u32, now: Instant) -> Decision {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() % SHARDS as u64) as usize];
        let mut windows = shard.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= self.sweep_at {
            windows.retain(|_, w| now.duration_since(w.opened) < WINDOW);
        }
        let window = windows.entry(key.to_string()).or_insert(Window {
            opened: now,
            count: 0,
        });
        if now.duration_since(window.opened) >= WINDOW {
            *window = Window {
                opened: now,
                count: 0,
            };
        }
        let reset = ceil_secs((window.opened + WINDOW).saturating_duration_since(now)).max(1);
        if window.count >= limit {
            return Decision {
                limit,
                remaining: 0,
                reset,
                retry_after: Some(reset),
            };
        }
        window.count += 1;
        Decision {
            limit,
            remaining: limit - window.count,
            reset,
            retry_after: None,
        }
    }
}

/// The token of a request: the `Authorization` header, or `?token=` on the WebSockets (`/ws` and
/// the consoles, `/api/v1/vms/{id}/console` and `/vnc`).
fn token_of(req: &ServiceRequest) -> Option<String> {
    if let Some(token) = bearer(req.request()) {
        return Some(token.to_string());
    }
    let path = req.path();
    let console =
        path.starts_with("/api/v1/vms/") && (path.ends_with("/console") || path.ends_with("/vnc"));
    if path != "/ws" && !console {
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

/// Whether requests to `path` count against a caller's budget.
pub fn counted(path: &str) -> bool {
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
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let addr = req.peer_addr().map(|a| a.ip().to_string());
    let user = match token_of(&req) {
        Some(token) => {
            let request_id = super::request_id::of(req.request());
            authenticate(&state, &token, request_id, addr.clone())
                .await
                .ok()
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
            state.metrics.rate_limited(RateLimitKind::Request);
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
    fn a_window_passes_its_limit_then_refuses_until_it_resets() {
        let limiter = RequestLimiter::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let d = limiter.check_at("user:a", 5, t0 + Duration::from_secs(i));
            assert_eq!((d.remaining, d.retry_after), (4 - i as u32, None));
            assert_eq!(d.reset, 60 - i);
        }
        let refused = limiter.check_at("user:a", 5, t0 + Duration::from_secs(10));
        assert_eq!((refused.remaining, refused.retry_after), (0, Some(50)));
        // Another key has its own window.
        assert_eq!(limiter.check_at("user:b", 5, t0).retry_after, None);
        let next = limiter.check_at("user:a", 5, t0 + WINDOW);
        assert_eq!(
            (next.remaining, next.retry_after, next.reset),
            (4, None, 60)
        );
    }

    #[test]
    fn closed_windows_are_swept() {
        let limiter = RequestLimiter {
            sweep_at: 8,
            ..RequestLimiter::default()
        };
        let t0 = Instant::now();
        for i in 0..(8 * SHARDS * 2) {
            limiter.check_at(&format!("addr:{i}"), 1, t0);
        }
        let later = t0 + WINDOW * 2;
        for i in 0..(8 * SHARDS * 4) {
            limiter.check_at(&format!("user:{i}"), 1, later);
        }
        let stale: usize = limiter
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .values()
                    .filter(|w| w.opened == t0)
                    .count()
            })
            .sum();
        assert_eq!(stale, 0, "closed windows were kept");
    }
}
