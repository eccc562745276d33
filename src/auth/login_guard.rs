//! Brute-force protection for `POST /auth/login`: failed logins are counted per username and per
//! client address; after the configured number within the lockout period, logins for that name
//! (or from that address) are refused with 429 until the period has passed since the last
//! failure that counted. A success clears the username's count. Per node, in bounded memory.
//!
//! A login must be refused *before* the password is checked (else a locked name could still be
//! guessed), so this needs a "would it be allowed" question that a token bucket without peeking
//! cannot answer; the counting is small enough to keep here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Default)]
pub struct LoginGuard {
    failures: Mutex<HashMap<String, Failures>>,
}

/// The keys a login attempt is counted under.
pub fn keys(username: &str, addr: Option<&str>) -> Vec<String> {
    let mut keys = vec![format!("user:{}", username.to_lowercase())];
    if let Some(addr) = addr {
        keys.push(format!("addr:{addr}"));
    }
    keys
}

impl LoginGuard {
    /// `Err(wait)` while any of `keys` has `limit` failures within `period`.
    pub fn check(
        &self,
        keys: &[String],
        limit: u32,
        period: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|key| failures.get(key))
            .filter(|f| f.count >= limit)
            .filter_map(|f| (f.last + period).checked_duration_since(now))
            .max();
        match wait {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// Counts a failure under each key (a count older than `period` starts again).
    pub fn failed(&self, keys: &[String], period: Duration, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, f| now.duration_since(f.last) < period);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= period {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// A success clears the username's count (the address keeps its own).
    pub fn succeeded(&self, username: &str) {
        let key = keys(username, None).remove(0);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(300);

    #[test]
    fn the_limit_th_failure_locks_the_name_and_the_address_for_the_period() {
        let guard = LoginGuard::default();
        let t0 = Instant::now();
        let k = keys("Alice", Some("10.0.0.1"));
        for _ in 0..9 {
            guard.failed(&k, PERIOD, t0);
        }
        assert_eq!(guard.check(&k, 10, PERIOD, t0), Ok(()));
        guard.failed(&k, PERIOD, t0);
        assert_eq!(guard.check(&k, 10, PERIOD, t0), Err(PERIOD));
        // Another name from the same address is refused too; the same name from elsewhere too.
        assert!(guard
            .check(&keys("bob", Some("10.0.0.1")), 10, PERIOD, t0)
            .is_err());
        assert!(guard
            .check(&keys("alice", Some("10.0.0.2")), 10, PERIOD, t0)
            .is_err());
        assert_eq!(guard.check(&k, 10, PERIOD, t0 + PERIOD), Ok(()));
    }

    #[test]
    fn a_success_clears_the_name_but_not_the_address() {
        let guard = LoginGuard::default();
        let t0 = Instant::now();
        let k = keys("alice", Some("10.0.0.1"));
        for _ in 0..10 {
            guard.failed(&k, PERIOD, t0);
        }
        guard.succeeded("alice");
        assert!(guard.check(&keys("alice", None), 10, PERIOD, t0).is_ok());
        assert!(guard
            .check(&keys("carol", Some("10.0.0.1")), 10, PERIOD, t0)
            .is_err());
    }
}
