//! System events: things that happen to a node rather than to a VM (it started, it is stopping,
//! it took over the relay). They are not part of the event log; they go out on core NATS under
//! `<prefix>.system.<kind>` and to WebSocket `system-event` subscribers of every node.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Bus;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemEvent {
    /// `node-started`, `node-stopping`, `relay-leader`.
    pub kind: String,
    pub node: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Sends this node's system events.
#[derive(Clone)]
pub struct SystemEvents {
    bus: Bus,
    node: String,
}

impl SystemEvents {
    pub fn new(bus: Bus, node: String) -> SystemEvents {
        SystemEvents { bus, node }
    }

    /// Publishes without waiting; a system event lost while NATS is away is only logged.
    pub async fn emit(&self, kind: &str, message: impl Into<String>) {
        let event = SystemEvent {
            kind: kind.to_string(),
            node: self.node.clone(),
            message: message.into(),
            at: Utc::now(),
        };
        let payload = match serde_json::to_vec(&event) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "a system event could not be encoded");
                return;
            }
        };
        if let Err(e) = self
            .bus
            .client
            .publish(self.bus.subjects.system(kind), payload.into())
            .await
        {
            tracing::warn!(kind, error = %crate::telemetry::chain(&e), "a system event could not be published");
        }
    }
}
