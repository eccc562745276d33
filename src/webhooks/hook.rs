//! The webhook aggregate: what a webhook is (whose, where to, which events, active or not) as its
//! events leave it, and the pure decision of what a command records. The secret is not part of it:
//! the log records only that a secret was set or changed.

use serde::{Deserialize, Serialize};

/// A webhook as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhook {
    pub owner_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub exists: bool,
}

/// A change of some of a webhook's settings; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The secret was replaced (its value is never recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret_changed: bool,
}

impl WebhookChange {
    pub fn is_empty(&self) -> bool {
        *self == WebhookChange::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookCommand {
    Create {
        owner_id: String,
        url: String,
        events: Vec<String>,
        active: bool,
    },
    Change(WebhookChange),
    Delete,
    /// Send one of its deliveries again (one already delivered or failed: the store checks).
    Redeliver {
        delivery_id: i64,
        position: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename_all = "camelCase")]
    WebhookCreated {
        owner_id: String,
        url: String,
        events: Vec<String>,
        active: bool,
    },
    WebhookChanged(WebhookChange),
    WebhookDeleted {},
    /// Someone asked for a delivery (of the event at `position`) to be sent again.
    #[serde(rename_all = "camelCase")]
    WebhookDeliveryRequeued {
        delivery_id: i64,
        position: i64,
    },
}

impl WebhookEvent {
    pub const TYPE_NAMES: [&'static str; 4] = [
        "WebhookCreated",
        "WebhookChanged",
        "WebhookDeleted",
        "WebhookDeliveryRequeued",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            WebhookEvent::WebhookCreated { .. } => "WebhookCreated",
            WebhookEvent::WebhookChanged(_) => "WebhookChanged",
            WebhookEvent::WebhookDeleted {} => "WebhookDeleted",
            WebhookEvent::WebhookDeliveryRequeued { .. } => "WebhookDeliveryRequeued",
        }
    }

    pub fn version(&self) -> &'static str {
        "1"
    }
}

/// Why a webhook command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook does not exist")]
    NotFound,
    #[error("the webhook already exists")]
    AlreadyExists,
    #[error("the change changes nothing")]
    NothingToChange,
}

impl Webhook {
    /// The pure decision: the events `command` records in this state.
    pub fn decide(&self, command: WebhookCommand) -> Result<Vec<WebhookEvent>, WebhookError> {
        match (self.exists, command) {
            (
                false,
                WebhookCommand::Create {
                    owner_id,
                    url,
                    events,
                    active,
                },
            ) => Ok(vec![WebhookEvent::WebhookCreated {
                owner_id,
                url,
                events,
                active,
            }]),
            (true, WebhookCommand::Create { .. }) => Err(WebhookError::AlreadyExists),
            (
                false,
                WebhookCommand::Change(_)
                | WebhookCommand::Delete
                | WebhookCommand::Redeliver { .. },
            ) => Err(WebhookError::NotFound),
            (true, WebhookCommand::Change(change)) => {
                let change = WebhookChange {
                    url: change.url.filter(|u| *u != self.url),
                    events: change.events.filter(|e| *e != self.events),
                    active: change.active.filter(|a| *a != self.active),
                    secret_changed: change.secret_changed,
                };
                if change.is_empty() {
                    return Err(WebhookError::NothingToChange);
                }
                Ok(vec![WebhookEvent::WebhookChanged(change)])
            }
            (true, WebhookCommand::Delete) => Ok(vec![WebhookEvent::WebhookDeleted {}]),
            (
                true,
                WebhookCommand::Redeliver {
                    delivery_id,
                    position,
                },
            ) => Ok(vec![WebhookEvent::WebhookDeliveryRequeued {
                delivery_id,
                position,
            }]),
        }
    }

    pub fn apply(&mut self, event: WebhookEvent) {
        match event {
            WebhookEvent::WebhookCreated {
                owner_id,
                url,
                events,
                active,
            } => {
                *self = Webhook {
                    owner_id,
                    url,
                    events,
                    active,
                    exists: true,
                }
            }
            WebhookEvent::WebhookChanged(change) => {
                if let Some(url) = change.url {
                    self.url = url;
                }
                if let Some(events) = change.events {
                    self.events = events;
                }
                if let Some(active) = change.active {
                    self.active = active;
                }
            }
            WebhookEvent::WebhookDeleted {} => self.exists = false,
            // The outbox changed, not the webhook.
            WebhookEvent::WebhookDeliveryRequeued { .. } => {}
        }
    }
}
