//! The people side of VoidVM, domain first: users, roles and the live configuration are
//! event-sourced like VMs, in the same log (aggregate types `user`, `role`, `config`), so `/events`
//! and `/logs` say who changed which account or setting. Each aggregate here is pure: it decides
//! the events a command produces from its state and applies them; `store::accounts` commits the
//! events with their read-model row in one transaction.
//!
//! Secrets never enter the log: a password change is recorded as having happened, by whom, and
//! nothing more; the hash lives only in the `users` table.

pub mod live;
pub mod quota;
pub mod role;
pub mod user;

pub use live::{ConfigEvent, ConfigOverrides, LiveConfig, LiveSettings};
pub use quota::{Quota, QuotaOverrides, QuotaResource, Usage};
pub use role::{Role, RoleCommand, RoleEvent};
pub use user::{User, UserCommand, UserEvent, UserStatus};

/// Reads a present field as `Some(value)` and `null` as `Some(None)`; with `#[serde(default)]`
/// an absent one is `None`. Changes use it to tell "clear this" from "leave it".
pub fn present_or_null<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Why an account command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("it does not exist")]
    NotFound,
    #[error("it already exists")]
    AlreadyExists,
    #[error("the change changes nothing")]
    NothingToChange,
    #[error("built-in role '{0}' keeps its permissions and scope; only its description and rate limit change")]
    BuiltIn(String),
}

#[cfg(test)]
mod tests;
