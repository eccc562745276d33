//! How many WebSocket connections each user has open, so the one past the limit is refused.
//! Counted per node; a slot is given back when its guard drops, however the connection ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct ConnectionLimits {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open connection's place in the count.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    user_id: String,
}

impl ConnectionLimits {
    pub fn new(max: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `user_id`, or `None` when the user already has `max` connections.
    pub fn acquire(self: &Arc<Self>, user_id: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(user_id.to_string()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: self.clone(),
            user_id: user_id.to_string(),
        })
    }

    /// Every user's open connections together (`/metrics`).
    pub fn open_total(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().sum()
    }

    pub fn open_for(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(user_id).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_past_the_limit_is_refused() {
        let limits = ConnectionLimits::new(2);
        let a = limits.acquire("u1");
        let b = limits.acquire("u1");
        assert!(a.is_some() && b.is_some());
        assert!(limits.acquire("u1").is_none());
        assert!(limits.acquire("u2").is_some(), "limits are per user");
    }

    #[test]
    fn a_closed_connection_gives_its_slot_back() {
        let limits = ConnectionLimits::new(1);
        let a = limits.acquire("u1");
        assert!(limits.acquire("u1").is_none());
        assert_eq!(limits.open_total(), 1);
        drop(a);
        assert_eq!(limits.open_for("u1"), 0);
        assert_eq!(limits.open_total(), 0);
        assert!(limits.acquire("u1").is_some());
    }
}
